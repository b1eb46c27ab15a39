//! `GET /openapi.json`: the OpenAPI 3 description of the HTTP API (spec:
//! api.md), generated with utoipa from the types below so clients and the
//! contract run (`scripts/contract`, schemathesis) share one truth. The
//! `exportType` enums come from the live `Registry`. The types here only
//! describe responses; the handlers build them with `serde_json`, and the
//! contract run checks the two agree.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::Json;
use serde::Serialize;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use crate::exports::Registry;

/// The document, built once.
pub async fn document() -> Json<serde_json::Value> {
    static DOC: OnceLock<serde_json::Value> = OnceLock::new();
    Json(
        DOC.get_or_init(|| serde_json::to_value(ApiDoc::openapi()).unwrap_or_default())
            .clone(),
    )
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "vf-export",
        description = "Verified Fan export service: streams campaign data from MongoDB to CSV in S3. \
Every error, from every route and from the framework (unknown route 404, wrong method 405, \
body too large 413, bad JSON 400, timeout 408), has the body `{\"error\": {\"status\", \"message\", \"payload\"?}}`. \
Requests may carry `x-titan-correlation-id`; it is echoed in the response header of the same name."
    ),
    paths(
        create_export,
        list_exports,
        read_export,
        cancel_export,
        ccpa_delete_user,
        ccpa_requests,
        heartbeat,
        ready,
        metrics,
        openapi_json,
        dev_token,
        dev_auth,
        dev_internal_server_error,
        dev_supremes,
    ),
    components(schemas(
        ExportDocument,
        ExportStatus,
        Compression,
        ExportDates,
        ExportKey,
        ExportProgress,
        ExportFailure,
        ErrorBody,
        ErrorDetail,
        CreateExportBody,
        ExportTypeName,
        SortField,
        SortOrder,
        CcpaDeleted,
        DeletedCount,
        RewrittenCount,
        CcpaRequest,
        CcpaRequestDates,
        CcpaObject,
        CcpaAction,
        CcpaStatus,
        Heartbeat,
        Ready,
        MongoCheck,
        DevTokenRequest,
        DevToken,
        DevIdentity,
        DevOk,
    )),
    modifiers(&BearerJwt, &CommonErrors),
    tags(
        (name = "exports", description = "Request, read, list and cancel exports"),
        (name = "ccpa", description = "Privacy deletion"),
        (name = "health", description = "Liveness, readiness, metrics (no auth)"),
        (name = "dev", description = "Development routes: 404 unless DEV_ROUTES=true"),
    )
)]
pub struct ApiDoc;

struct BearerJwt;

impl Modify for BearerJwt {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "HS256 (JWT_SECRET) or RS256/ES256 (JWT_PUBLIC_KEY); claims sub, \
                         isSupreme, campaigns {id: [\"REPORT\"]}",
                    ))
                    .build(),
            ),
        );
    }
}

/// The errors every route can answer, declared once: the framework's 405
/// and 408 and the 500 of a failure (a route that says more of one keeps
/// its own row).
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::HttpMethod;
        use utoipa::openapi::{ContentBuilder, ResponseBuilder};
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(utoipa::openapi::Ref::from_schema_name(
                            ErrorBody::name(),
                        )))
                        .build(),
                )
                .build()
        };
        for item in openapi.paths.paths.values_mut() {
            for method in [HttpMethod::Get, HttpMethod::Post, HttpMethod::Delete] {
                let op = match method {
                    HttpMethod::Get => item.get.as_mut(),
                    HttpMethod::Post => item.post.as_mut(),
                    _ => item.delete.as_mut(),
                };
                let Some(op) = op else { continue };
                for (status, description) in [
                    ("405", "Method not allowed"),
                    ("408", "Request timed out"),
                    ("500", "Internal error"),
                ] {
                    op.responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| error(description).into());
                }
            }
        }
    }
}

/// A valid `exportType`: the registry's names.
#[derive(Serialize)]
pub struct ExportTypeName(String);

impl PartialSchema for ExportTypeName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(Registry::new().names()))
            .description(Some("An export type known to this service"))
            .into()
    }
}

impl ToSchema for ExportTypeName {}

/// Export status.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
#[allow(dead_code)] // variants are described, never built
pub enum ExportStatus {
    Pending,
    Triggered,
    Finished,
    Failed,
    Expired,
}

/// List sort fields.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // variants are described, never built
pub enum SortField {
    #[serde(rename = "date.created")]
    Created,
    #[serde(rename = "date.finished")]
    Finished,
    #[serde(rename = "status")]
    Status,
    #[serde(rename = "exportType")]
    ExportType,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // variants are described, never built
pub enum SortOrder {
    Asc,
    Desc,
}

/// Output compression (single-file types only offer gzip).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // variants are described, never built
pub enum Compression {
    None,
    Gzip,
}

/// Lifecycle timestamps, RFC 3339 UTC, null until reached.
#[derive(Serialize, ToSchema)]
pub struct ExportDates {
    #[schema(required = true)]
    created: Option<String>,
    #[schema(required = true)]
    triggered: Option<String>,
    #[schema(required = true)]
    finished: Option<String>,
    #[schema(required = true)]
    failed: Option<String>,
    #[schema(required = true)]
    expired: Option<String>,
    /// Present on exports removed by a CCPA deletion.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    deleted: Option<String>,
}

/// The object key, or the keys of a multi-object export.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // variants are described, never built
pub enum ExportKey {
    One(String),
    Many(Vec<String>),
}

/// Progress of a running export.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportProgress {
    rows_written: i64,
    bytes_written: i64,
    /// The preliminary count, when known.
    #[schema(required = true)]
    expected_rows: Option<i64>,
}

/// Why an export failed (no stack trace).
#[derive(Serialize, ToSchema)]
pub struct ExportFailure {
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    payload: Option<serde_json::Value>,
}

/// An export, as the API returns it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportDocument {
    #[schema(example = "65f0c1a2b3c4d5e6f7a8b9c0")]
    id: String,
    campaign_id: String,
    campaign_name: String,
    export_type: String,
    status: ExportStatus,
    #[schema(required = true)]
    requester_user_id: Option<String>,
    #[schema(required = true)]
    correlation: Option<String>,
    #[schema(required = true)]
    date_key: Option<String>,
    include_all_markets: bool,
    compression: Compression,
    date: ExportDates,
    #[schema(required = true)]
    key: Option<ExportKey>,
    /// Rows written, once FINISHED.
    #[schema(required = true)]
    count: Option<i64>,
    /// Presigned GET URL: FINISHED single-object exports in the service's own buckets.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    path: Option<String>,
    progress: ExportProgress,
    #[schema(required = true)]
    error: Option<ExportFailure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    meta: Option<HashMap<String, serde_json::Value>>,
    /// True once a CCPA deletion removed the export's files.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    deleted: Option<bool>,
}

/// The error shape of every 4xx/5xx response.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    #[schema(minimum = 400, maximum = 599)]
    status: u16,
    message: String,
    /// Extra detail (`field`, `code`, `validTypes`, ...), never PII.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    payload: Option<HashMap<String, serde_json::Value>>,
}

/// POST body. Unknown fields are ignored.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateExportBody {
    export_type: ExportTypeName,
    /// Required (all digits) for codeWaves.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, max_length = 64)]
    date_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, default = false)]
    include_all_markets: Option<bool>,
    /// gzip for single-file CSV types only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, default = "none")]
    compression: Option<Compression>,
}

#[derive(Serialize, ToSchema)]
pub struct DeletedCount {
    exports: u64,
    files: u64,
}

/// Wave files written back without the user's rows, and those rows.
#[derive(Serialize, ToSchema)]
pub struct RewrittenCount {
    files: u64,
    rows: u64,
}

/// CCPA deletion result. A failure (500 `DeleteFailed`) carries
/// `deletedCount`, `rewritten` and `requestId` of what was done in its
/// payload; repeating the request completes the rest.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CcpaDeleted {
    #[schema(example = "User exports deleted successfully")]
    message: String,
    /// Export records marked deleted by this request and their objects
    /// (zeros on a repeat).
    deleted_count: DeletedCount,
    /// Exports of partner types left alone.
    skipped: u64,
    /// PENDING/TRIGGERED exports left alone: repeat after they finish.
    in_flight: u64,
    /// Wave files rewritten without the user's rows (ours).
    rewritten: RewrittenCount,
    /// The audit record of this request (ours): `GET /ccpa/requests`.
    #[schema(pattern = "^[0-9a-f]{24}$")]
    request_id: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // variants are described, never built
pub enum CcpaAction {
    Deleted,
    Rewritten,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
#[allow(dead_code)] // variants are described, never built
pub enum CcpaStatus {
    Running,
    Done,
    Failed,
}

/// An object a CCPA request deleted, or rewrote without the user's rows.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CcpaObject {
    action: CcpaAction,
    bucket: String,
    key: String,
    campaign_id: String,
    /// The export whose record names the object (always for a deletion).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    export_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    export_type: Option<String>,
    /// Rewritten files: the user's rows left out, and the new object's
    /// digest and size.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    rows_removed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    bytes: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct CcpaRequestDates {
    started: String,
    /// Null while RUNNING.
    #[schema(required = true)]
    finished: Option<String>,
}

/// The audit record of one CCPA request (`ccpaRequests`). The user id is
/// kept only as its SHA-256; no file content.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CcpaRequest {
    id: String,
    #[schema(pattern = "^[0-9a-f]{64}$")]
    user_id_sha256: String,
    /// `sub` of the caller.
    requested_by: String,
    correlation: String,
    /// RUNNING until the request ends (a request whose process died stays
    /// RUNNING: its objects list is what it did).
    status: CcpaStatus,
    date: CcpaRequestDates,
    campaigns: Vec<String>,
    objects: Vec<CcpaObject>,
    /// Export records this request marked deleted.
    exports: Vec<String>,
    deleted_count: DeletedCount,
    rewritten: RewrittenCount,
    skipped: u64,
    in_flight: u64,
    /// Why a FAILED request stopped short.
    #[schema(required = true)]
    error: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Heartbeat {
    #[schema(example = "OK")]
    status: String,
}

/// The cached background MongoDB ping.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MongoCheck {
    ok: bool,
    #[schema(required = true)]
    error: Option<String>,
    latency_ms: u64,
    checked_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct Ready {
    #[schema(example = "OK")]
    status: String,
    mongodb: MongoCheck,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DevTokenRequest {
    user_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    campaigns: Option<HashMap<String, Vec<String>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    is_supreme: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct DevToken {
    token: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DevIdentity {
    user_id: String,
    is_supreme: bool,
    campaigns: HashMap<String, Vec<String>>,
}

#[derive(Serialize, ToSchema)]
pub struct DevOk {
    ok: bool,
}

// Operations. The handlers live in exports.rs, ccpa.rs, health.rs and
// dev.rs; these bodiless functions carry their descriptions (the handlers
// parse bodies by hand, so utoipa's argument inference would mislead).

#[utoipa::path(
    post,
    path = "/campaigns/{campaignId}/exports",
    tag = "exports",
    summary = "Request an export",
    params(
        ("campaignId" = String, Path, pattern = "^[A-Za-z0-9_-]{1,128}$", example = "c1"),
        ("x-titan-correlation-id" = Option<String>, Header, description = "Correlation id (kept if at most 128 chars of [A-Za-z0-9-_.:])"),
    ),
    request_body(content = CreateExportBody, content_type = "application/json",
        description = "Parsed as JSON whatever the content type; unknown fields are ignored"),
    responses(
        (status = 201, description = "Queued: the new export, PENDING", body = ExportDocument),
        (status = 200, description = "An export of the same campaign, type (and dateKey) is already PENDING or TRIGGERED", body = ExportDocument),
        (status = 400, description = "Bad body or id (payload.code: InvalidExportType, MissingDateKey, InvalidDateKeyType, InvalidDateKey, NoMarketsFound, PromotersNotFound, MissingCodeFromMarket)", body = ErrorBody),
        (status = 401, description = "Missing, malformed, expired or badly signed token", body = ErrorBody),
        (status = 403, description = "No REPORT permission on the campaign", body = ErrorBody),
        (status = 404, description = "Campaign not found (payload.code CampaignNotFound)", body = ErrorBody),
        (status = 413, description = "Body larger than 64 KiB", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)]
fn create_export() {}

#[utoipa::path(
    get,
    path = "/campaigns/{campaignId}/exports",
    tag = "exports",
    summary = "List a campaign's exports",
    params(
        ("campaignId" = String, Path, pattern = "^[A-Za-z0-9_-]{1,128}$", example = "c1"),
        ("exportType" = Option<ExportTypeName>, Query, description = "Only this type"),
        ("sort" = Option<SortField>, Query, description = "Sort field (default date.created)"),
        ("sortOrder" = Option<SortOrder>, Query, description = "Default desc"),
        ("page" = Option<u64>, Query, minimum = 1, maximum = 1000000),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 100),
        ("sortBy" = Option<SortField>, Query, description = "The original's name for sort. Names of one setting that disagree are a 400"),
        ("sortDir" = Option<SortOrder>, Query, description = "The original's name for sortOrder"),
        ("sortDesc" = Option<bool>, Query, description = "The original's: true = sortOrder desc, false = asc"),
        ("offset" = Option<u64>, Query, minimum = 0, description = "The original's: the page starting at this row; a multiple of limit, else 400"),
    ),
    responses(
        (status = 200, description = "A page of exports; pagination in headers", body = Vec<ExportDocument>,
            headers(
                ("X-Total-Count" = u64, description = "Number of matching exports"),
                ("Link" = String, description = "rel=\"next\" / rel=\"prev\" links, where they exist"),
            )),
        (status = 400, description = "Invalid query parameter or id, an offset that is not a multiple of limit, or two names of one setting that disagree", body = ErrorBody),
        (status = 401, description = "Missing, malformed, expired or badly signed token", body = ErrorBody),
        (status = 403, description = "No REPORT permission on the campaign", body = ErrorBody),
        (status = 404, description = "Campaign not found (payload.code CampaignNotFound)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)]
fn list_exports() {}

#[utoipa::path(
    get,
    path = "/campaigns/{campaignId}/exports/{exportId}",
    tag = "exports",
    summary = "Read one export",
    params(
        ("campaignId" = String, Path, pattern = "^[A-Za-z0-9_-]{1,128}$", example = "c1"),
        ("exportId" = String, Path, pattern = "^[0-9a-fA-F]{24}$", example = "65f0c1a2b3c4d5e6f7a8b9c0"),
    ),
    responses(
        (status = 200, description = "The export", body = ExportDocument),
        (status = 400, description = "exportId is not an ObjectId, or campaignId is not a valid id", body = ErrorBody),
        (status = 401, description = "Missing, malformed, expired or badly signed token", body = ErrorBody),
        (status = 403, description = "No REPORT permission on the campaign", body = ErrorBody),
        (status = 404, description = "No such export in this campaign", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)]
fn read_export() {}

#[utoipa::path(
    delete,
    path = "/campaigns/{campaignId}/exports/{exportId}",
    tag = "exports",
    summary = "Cancel an export",
    description = "A PENDING or TRIGGERED export becomes FAILED with error.payload.code Cancelled; \
a running one stops and its upload is aborted. Idempotent on a cancelled export.",
    params(
        ("campaignId" = String, Path, pattern = "^[A-Za-z0-9_-]{1,128}$", example = "c1"),
        ("exportId" = String, Path, pattern = "^[0-9a-fA-F]{24}$", example = "65f0c1a2b3c4d5e6f7a8b9c0"),
    ),
    responses(
        (status = 200, description = "Cancelled (now, or before): the export, FAILED", body = ExportDocument),
        (status = 400, description = "exportId is not an ObjectId, or campaignId is not a valid id", body = ErrorBody),
        (status = 401, description = "Missing, malformed, expired or badly signed token", body = ErrorBody),
        (status = 403, description = "No REPORT permission on the campaign", body = ErrorBody),
        (status = 404, description = "No such export in this campaign", body = ErrorBody),
        (status = 409, description = "The export is FINISHED, FAILED or EXPIRED (payload.code ExportNotActive, payload.status)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)]
fn cancel_export() {}

#[utoipa::path(
    delete,
    path = "/ccpa/users/{userId}",
    tag = "ccpa",
    summary = "Delete a user's personal data from the service's exports (supreme only)",
    params(("userId" = String, Path, pattern = "^[A-Za-z0-9_-]{1,128}$", example = "u1")),
    responses(
        (status = 200, description = "Deleted (idempotent: a repeat reports zero)", body = CcpaDeleted),
        (status = 400, description = "userId is not a valid id", body = ErrorBody),
        (status = 401, description = "Missing, malformed, expired or badly signed token", body = ErrorBody),
        (status = 403, description = "Not a supreme user", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 408, description = "Still running after 120 s (it goes on; payload.requestId): repeat the request to complete it", body = ErrorBody),
        (status = 500, description = "Objects could not be deleted or rewritten, or the database failed (payload.code DeleteFailed, with deletedCount, rewritten and requestId of what was done): repeat the request", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)]
fn ccpa_delete_user() {}

#[utoipa::path(
    get,
    path = "/ccpa/requests",
    tag = "ccpa",
    summary = "The audit records of a user's CCPA requests, oldest first (supreme only)",
    params(("userId" = String, Query, pattern = "^[A-Za-z0-9_-]{1,128}$", example = "u1",
        description = "Matched by its SHA-256: the records keep no user id")),
    responses(
        (status = 200, description = "The user's requests (empty when none)", body = Vec<CcpaRequest>),
        (status = 400, description = "userId missing or not a valid id", body = ErrorBody),
        (status = 401, description = "Missing, malformed, expired or badly signed token", body = ErrorBody),
        (status = 403, description = "Not a supreme user", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)]
fn ccpa_requests() {}

#[utoipa::path(
    get,
    path = "/heartbeat",
    tag = "health",
    summary = "Liveness (ELB health check; no database round trip)",
    responses(
        (status = 200, description = "Serving", body = Heartbeat),
        (status = 503, description = "Draining for shutdown", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn heartbeat() {}

#[utoipa::path(
    get,
    path = "/ready",
    tag = "health",
    summary = "Readiness: the cached background MongoDB ping",
    responses(
        (status = 200, description = "Ready", body = Ready),
        (status = 503, description = "MongoDB check failing, not run yet, or draining", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn ready() {}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    summary = "Prometheus metrics",
    responses(
        (status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain"),
    )
)]
#[allow(dead_code)]
fn metrics() {}

#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "health",
    summary = "This document",
    responses(
        (status = 200, description = "OpenAPI document", body = Object),
    )
)]
#[allow(dead_code)]
fn openapi_json() {}

#[utoipa::path(
    post,
    path = "/dev/token",
    tag = "dev",
    summary = "Mint a token for local use (HS256 only; 404 unless DEV_ROUTES=true)",
    request_body(content = DevTokenRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "A token valid for one hour", body = DevToken),
        (status = 400, description = "Bad body, or the key cannot sign", body = ErrorBody),
        (status = 404, description = "DEV_ROUTES is not true", body = ErrorBody),
        (status = 413, description = "Body larger than 64 KiB", body = ErrorBody),
    )
)]
#[allow(dead_code)]
fn dev_token() {}

#[utoipa::path(
    get,
    path = "/dev/auth",
    tag = "dev",
    summary = "Echo the decoded identity (404 unless DEV_ROUTES=true)",
    responses(
        (status = 200, description = "The caller", body = DevIdentity),
        (status = 401, description = "Missing, malformed, expired or badly signed token", body = ErrorBody),
        (status = 404, description = "DEV_ROUTES is not true", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)]
fn dev_auth() {}

#[utoipa::path(
    get,
    path = "/dev/internalServerError",
    tag = "dev",
    summary = "Raise an internal error on purpose (404 unless DEV_ROUTES=true)",
    responses(
        (status = 401, description = "Missing, malformed, expired or badly signed token", body = ErrorBody),
        (status = 404, description = "DEV_ROUTES is not true", body = ErrorBody),
        (status = 500, description = "Always, when mounted: the error shape, no stack", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)]
fn dev_internal_server_error() {}

#[utoipa::path(
    get,
    path = "/dev/supremes",
    tag = "dev",
    summary = "200 for a supreme user (404 unless DEV_ROUTES=true)",
    responses(
        (status = 200, description = "Supreme", body = DevOk),
        (status = 401, description = "Missing, malformed, expired or badly signed token", body = ErrorBody),
        (status = 403, description = "Not a supreme user", body = ErrorBody),
        (status = 404, description = "DEV_ROUTES is not true", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)]
fn dev_supremes() {}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(method, path)` of every `.route(...)` in the router's sources.
    /// The router exposes no route table, and building one needs a live
    /// `AppState`, so the sources are the list.
    fn served_routes() -> Vec<(String, String)> {
        let sources = [
            include_str!("mod.rs"),
            include_str!("exports.rs"),
            include_str!("ccpa.rs"),
            include_str!("health.rs"),
            include_str!("dev.rs"),
        ];
        let mut out = Vec::new();
        for src in sources {
            // rustfmt may break a long `.route(` call after the parenthesis.
            for chunk in src.split(".route(").skip(1) {
                let Some(chunk) = chunk.trim_start().strip_prefix('"') else {
                    continue;
                };
                let (path, rest) = chunk.split_once('"').expect("route path");
                // The method routers up to the end of the `.route(...)` call.
                let call = &rest[..rest.find("))").map_or(rest.len(), |i| i + 1)];
                for m in ["get", "post", "put", "patch", "delete"] {
                    if [" ", ".", ":"]
                        .iter()
                        .any(|before| call.contains(&format!("{before}{m}(")))
                    {
                        out.push((m.to_string(), path.to_string()));
                    }
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn documents_every_route_the_router_serves() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let mut documented: Vec<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .map(move |m| (m.clone(), path.clone()))
            })
            .collect();
        documented.sort();
        let served = served_routes();
        assert!(
            served.len() >= 12,
            "route scan found too little: {served:?}"
        );
        assert_eq!(documented, served);
    }

    #[test]
    fn protected_routes_need_a_bearer_token_and_every_error_is_the_shape() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let public = [
            "/heartbeat",
            "/ready",
            "/metrics",
            "/openapi.json",
            "/dev/token",
        ];
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let secured = op.get("security").is_some();
                assert_eq!(secured, !public.contains(&path.as_str()), "{method} {path}");
                for (status, resp) in op["responses"].as_object().unwrap() {
                    if status.as_str() >= "400" {
                        assert_eq!(
                            resp["content"]["application/json"]["schema"]["$ref"],
                            "#/components/schemas/ErrorBody",
                            "{method} {path} {status}"
                        );
                    }
                }
            }
        }
        let types = &doc["components"]["schemas"]["ExportTypeName"]["enum"];
        assert_eq!(
            types.as_array().unwrap().len(),
            Registry::new().names().len()
        );
    }
}
