//! `GET /openapi.json`: the OpenAPI 3 description of the HTTP API (spec:
//! api.md), so clients and the contract run (`scripts/contract`,
//! schemathesis) share one truth. Each path is its handler's own
//! `#[utoipa::path]`, registered with its route (`utoipa-axum`); this
//! module holds the document's frame (info, security, the errors every
//! route can answer) and the response types. The `exportType` enums come
//! from the live `Registry`. The handlers build their bodies with
//! `serde_json`; the contract run checks the two agree.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Extension;
use serde::Serialize;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use crate::exports::Registry;

/// The document of the routes the router serves (see `http::api`): the
/// paths come from the handlers' own `#[utoipa::path]`, registered with
/// the routes themselves, so the two cannot drift apart. Serialized once,
/// at start-up: every request is handed the same bytes.
#[derive(Clone)]
pub struct Document(Bytes);

impl Document {
    pub fn new(mut api: utoipa::openapi::OpenApi) -> Self {
        // Added to every path, so after the routes are in.
        CommonErrors.modify(&mut api);
        Self(Bytes::from(serde_json::to_vec(&api).unwrap_or_default()))
    }

    #[cfg(test)]
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_slice(&self.0).expect("the document is JSON")
    }
}

#[utoipa::path(
    get,
    operation_id = "openapi_json",
    path = "/openapi.json",
    tag = "health",
    summary = "This document",
    responses(
        (status = 200, description = "OpenAPI document", body = Object),
    )
)]
pub async fn document(Extension(doc): Extension<Document>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], doc.0)
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
    modifiers(&BearerJwt),
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
/// and 408, the 500 of a failure, and the 401 of a route behind the bearer
/// token (a route that says more of one keeps its own row).
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
                // A route behind the bearer token answers 401 without one.
                let token = op
                    .security
                    .as_ref()
                    .is_some_and(|s| !s.is_empty())
                    .then_some(("401", "Missing, malformed, expired or badly signed token"));
                for (status, description) in [
                    ("405", "Method not allowed"),
                    ("408", "Request timed out"),
                    ("500", "Internal error"),
                ]
                .into_iter()
                .chain(token)
                {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(dev_routes: bool) -> serde_json::Value {
        Document::new(super::super::api(dev_routes).split_for_parts().1).value()
    }

    fn operations(doc: &serde_json::Value) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = doc["paths"]
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
        out.sort();
        out
    }

    #[test]
    fn documents_the_routes_that_are_mounted() {
        let with_dev = operations(&doc(true));
        let without = operations(&doc(false));
        assert_eq!(with_dev.len(), 14, "{with_dev:?}");
        // The development routes are documented only where they are served.
        assert!(without.iter().all(|(_, p)| !p.starts_with("/dev/")));
        assert_eq!(without.len(), 10, "{without:?}");
    }

    #[test]
    fn protected_routes_need_a_bearer_token_and_every_error_is_the_shape() {
        let doc = doc(true);
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
                let responses = op["responses"].as_object().unwrap();
                for shared in ["405", "408", "500"] {
                    assert!(responses.contains_key(shared), "{method} {path} {shared}");
                }
                for (status, resp) in responses {
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
