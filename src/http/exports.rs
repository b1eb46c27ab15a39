//! `/campaigns/:campaignId/exports` — request, read, list and cancel
//! exports.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use mongodb::bson::oid::ObjectId;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Identity;
use super::openapi::{CreateExportBody, ExportTypeName, SortField, SortOrder};
use super::view::ExportDocument;
use super::{parse_json, AppState, CorrelationId};
use crate::error::{ApiError, Code, ErrorBody};
use crate::exports::Registry;
use crate::exports::{require_markets, Params};
use crate::queue::{ExportRecord, ListQuery, NewExport};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(read, cancel))
}

/// `/campaigns/{campaignId}/exports`: the path's parameter as the handlers
/// extract it and as the OpenAPI document describes it (one declaration).
#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Path, rename_all = "camelCase")]
struct CampaignPath {
    #[param(pattern = "^[A-Za-z0-9_-]{1,128}$", example = "c1")]
    campaign_id: String,
}

/// `/campaigns/{campaignId}/exports/{exportId}`.
#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Path, rename_all = "camelCase")]
struct ExportPath {
    #[param(pattern = "^[A-Za-z0-9_-]{1,128}$", example = "c1")]
    campaign_id: String,
    #[param(pattern = "^[0-9a-fA-F]{24}$", example = "65f0c1a2b3c4d5e6f7a8b9c0")]
    export_id: String,
}

/// Campaign ids are ObjectId hex or short slugs: anything else (`..`,
/// operators, control characters) is refused before it reaches a query.
pub fn check_campaign_id(id: &str) -> Result<(), ApiError> {
    super::check_id("campaignId", id)
}

/// The validated POST body.
struct CreateBody {
    export_type: String,
    date_key: Option<String>,
    include_all_markets: bool,
    gzip: bool,
}

fn parse_create(state: &AppState, v: &Value) -> Result<CreateBody, ApiError> {
    let obj = v
        .as_object()
        .ok_or_else(|| ApiError::bad_request("body must be a JSON object"))?;
    let invalid_type = |msg: &str| invalid_export_type(&state.registry, msg);
    let (export_type, ty) = match obj.get("exportType") {
        None | Some(Value::Null) => return Err(invalid_type("exportType is required")),
        Some(Value::String(s)) if state.registry.get(s).is_some() => {
            (s.clone(), state.registry.get(s).expect("checked"))
        }
        Some(Value::String(_)) => {
            return Err(invalid_type("exportType is not a valid export type"))
        }
        Some(_) => return Err(invalid_type("exportType must be a string")),
    };
    let needs_date_key = ty.needs_date_key();
    let date_key = match obj.get("dateKey") {
        None | Some(Value::Null) if needs_date_key => {
            return Err(date_key_error(
                Code::MissingDateKey,
                "dateKey is required for this export type",
            ))
        }
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            if needs_date_key && (s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit())) {
                return Err(date_key_error(
                    Code::InvalidDateKey,
                    "dateKey must be all digits",
                ));
            }
            if s.len() > 64 {
                return Err(ApiError::field("dateKey", "dateKey is too long"));
            }
            Some(s.clone())
        }
        Some(_) if needs_date_key => {
            return Err(date_key_error(
                Code::InvalidDateKeyType,
                "dateKey must be a string",
            ))
        }
        Some(_) => return Err(ApiError::field("dateKey", "dateKey must be a string")),
    };
    let include_all_markets = match obj.get("includeAllMarkets") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::field(
                "includeAllMarkets",
                "includeAllMarkets must be a boolean",
            ))
        }
    };
    let gzip = match obj.get("compression") {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) if s == "none" => false,
        Some(Value::String(s)) if s == "gzip" => true,
        Some(_) => {
            return Err(ApiError::field(
                "compression",
                "compression must be \"none\" or \"gzip\"",
            ))
        }
    };
    Ok(CreateBody {
        export_type,
        date_key,
        include_all_markets,
        gzip,
    })
}

fn campaign_not_found() -> ApiError {
    ApiError::coded(
        StatusCode::NOT_FOUND,
        Code::CampaignNotFound,
        "campaign not found",
    )
}

fn date_key_error(code: Code, msg: &str) -> ApiError {
    ApiError::coded(StatusCode::BAD_REQUEST, code, msg).with_payload(json!({ "field": "dateKey" }))
}

#[utoipa::path(
    post,
    operation_id = "create_export",
    path = "/campaigns/{campaignId}/exports",
    tag = "exports",
    summary = "Request an export",
    params(
        CampaignPath,
        ("x-titan-correlation-id" = Option<String>, Header, description = "Correlation id (kept if at most 128 chars of [A-Za-z0-9-_.:])"),
    ),
    request_body(content = CreateExportBody, content_type = "application/json",
        description = "Parsed as JSON whatever the content type; unknown fields are ignored"),
    responses(
        (status = 201, description = "Queued: the new export, PENDING", body = ExportDocument),
        (status = 200, description = "An export of the same campaign, type (and dateKey) is already PENDING or TRIGGERED", body = ExportDocument),
        (status = 400, description = "Bad body or id (payload.code: InvalidExportType, MissingDateKey, InvalidDateKeyType, InvalidDateKey, NoMarketsFound, PromotersNotFound, MissingCodeFromMarket)", body = ErrorBody),
        (status = 404, description = "Campaign not found (payload.code CampaignNotFound)", body = ErrorBody),
        (status = 413, description = "Body larger than 64 KiB", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn create(
    identity: Identity,
    State(state): State<AppState>,
    Path(CampaignPath { campaign_id }): Path<CampaignPath>,
    CorrelationId(correlation): CorrelationId,
    body: Bytes,
) -> Result<Response, ApiError> {
    identity.require_report(&campaign_id)?;
    check_campaign_id(&campaign_id)?;
    let body = parse_create(&state, &parse_json(&body)?)?;
    let ty = state
        .registry
        .get(&body.export_type)
        .ok_or_else(ApiError::internal)?;
    if body.gzip && !ty.supports_gzip() {
        return Err(ApiError::field(
            "compression",
            "gzip is offered for single-file CSV types only",
        ));
    }
    let campaign = state
        .store
        .campaign(&campaign_id)
        .await?
        .ok_or_else(campaign_not_found)?;
    if ty.needs_markets() {
        let markets = state.store.markets_of(&campaign_id).await?;
        require_markets(true, markets.len())?;
    }
    let params = Params {
        date_key: body.date_key.clone(),
        include_all_markets: body.include_all_markets,
        gzip: body.gzip,
    };
    ty.validate(&state.store, &campaign, &params).await?;
    let (rec, created) = state
        .queue
        .enqueue(&NewExport {
            campaign_id: campaign_id.clone(),
            campaign_name: campaign.name.clone(),
            export_type: body.export_type,
            requester_user_id: identity.user_id,
            correlation,
            date_key: body.date_key,
            include_all_markets: body.include_all_markets,
            compression: Some(if body.gzip { "gzip" } else { "none" }.to_string()),
        })
        .await?;
    if created {
        tracing::info!(export_id = %rec.id, export_type = %rec.export_type, "export queued");
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(ExportDocument::of(&state, &rec).await)).into_response())
}

#[utoipa::path(
    get,
    operation_id = "read_export",
    path = "/campaigns/{campaignId}/exports/{exportId}",
    tag = "exports",
    summary = "Read one export",
    params(ExportPath),
    responses(
        (status = 200, description = "The export", body = ExportDocument),
        (status = 400, description = "exportId is not an ObjectId, or campaignId is not a valid id", body = ErrorBody),
        (status = 404, description = "No such export in this campaign", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn read(
    identity: Identity,
    State(state): State<AppState>,
    Path(ExportPath {
        campaign_id,
        export_id,
    }): Path<ExportPath>,
) -> Result<Json<ExportDocument>, ApiError> {
    let rec = visible(&state, &identity, &campaign_id, &export_id).await?;
    Ok(Json(ExportDocument::of(&state, &rec).await))
}

/// The export at `/campaigns/:campaignId/exports/:exportId`, if the caller
/// may see the campaign. Scoped by campaign: another campaign's export id
/// is a 404, never its data; so is a record the service cannot read.
async fn visible(
    state: &AppState,
    identity: &Identity,
    campaign_id: &str,
    export_id: &str,
) -> Result<ExportRecord, ApiError> {
    identity.require_report(campaign_id)?;
    check_campaign_id(campaign_id)?;
    let id = ObjectId::parse_str(export_id)
        .map_err(|_| ApiError::field("exportId", "exportId is not a valid ObjectId"))?;
    state
        .queue
        .get(campaign_id, id)
        .await?
        .ok_or_else(export_not_found)
}

fn export_not_found() -> ApiError {
    ApiError::not_found("export not found")
}

/// `DELETE /campaigns/:campaignId/exports/:exportId`: cancel (see
/// [`crate::cancel`]). 200 with the export (also when it was cancelled
/// before), 409 `ExportNotActive` for a final one, 404 for what GET would
/// not show.
#[utoipa::path(
    delete,
    operation_id = "cancel_export",
    path = "/campaigns/{campaignId}/exports/{exportId}",
    tag = "exports",
    summary = "Cancel an export",
    description = "A PENDING or TRIGGERED export becomes FAILED with error.payload.code Cancelled; \
a running one stops and its upload is aborted. Idempotent on a cancelled export.",
    params(ExportPath),
    responses(
        (status = 200, description = "Cancelled (now, or before): the export, FAILED", body = ExportDocument),
        (status = 400, description = "exportId is not an ObjectId, or campaignId is not a valid id", body = ErrorBody),
        (status = 404, description = "No such export in this campaign", body = ErrorBody),
        (status = 409, description = "The export is FINISHED, FAILED or EXPIRED (payload.code ExportNotActive, payload.status)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn cancel(
    identity: Identity,
    State(state): State<AppState>,
    Path(ExportPath {
        campaign_id,
        export_id,
    }): Path<ExportPath>,
) -> Result<Json<ExportDocument>, ApiError> {
    // What GET would not show is a 404 here too: never changed through a
    // route that cannot show it.
    let id = visible(&state, &identity, &campaign_id, &export_id)
        .await?
        .id;
    let done = crate::cancel::cancel(
        &state.queue,
        &state.sinks,
        id,
        Some(&campaign_id),
        &identity.user_id,
    )
    .await?;
    use crate::cancel::Outcome;
    match done.outcome {
        Outcome::Cancelled(d) | Outcome::AlreadyCancelled(d) => {
            let rec = ExportRecord::from_document(&d).map_err(|e| {
                tracing::error!(error = %e, "cancelled export no longer readable");
                ApiError::internal()
            })?;
            Ok(Json(ExportDocument::of(&state, &rec).await))
        }
        Outcome::NotActive(d) => {
            let status = d.get_str("status").unwrap_or_default().to_string();
            Err(ApiError::coded(
                StatusCode::CONFLICT,
                Code::ExportNotActive,
                format!(
                    "the export is {status}: only PENDING or TRIGGERED exports can be cancelled"
                ),
            )
            .with_payload(json!({ "status": status })))
        }
        Outcome::NotFound => Err(export_not_found()),
    }
}

const SORT_FIELDS: [&str; 4] = ["date.created", "date.finished", "status", "exportType"];
const MAX_PAGE: u64 = 1_000_000;

/// The list query. The original's documents name some parameters
/// differently (api.md): `sortBy` = `sort`, `sortDir` = `sortOrder`,
/// `sortDesc` (true/false) = `sortOrder=desc/asc`, `offset` = the page that
/// starts there (a multiple of `limit`). Each name is read; two names of
/// one setting that ask for different things are a 400, so a client never
/// gets a page other than the one it asked for.
fn parse_list(registry: &Registry, q: &HashMap<String, String>) -> Result<ListQuery, ApiError> {
    // Unknown parameters are ignored (as unknown body fields are), but
    // operator-looking ones (`exportType[$ne]=x`) are refused outright.
    if let Some(k) = q.keys().find(|k| k.contains(['[', ']', '$'])) {
        return Err(ApiError::bad_request(format!(
            "query parameter {} is not accepted",
            truncate(k)
        )));
    }
    let export_type = match q.get("exportType") {
        None => None,
        Some(t) if registry.get(t).is_some() => Some(t.clone()),
        Some(_) => {
            return Err(invalid_export_type(
                registry,
                "exportType is not a valid export type",
            ))
        }
    };
    // In this order, as before: a request with several bad parameters
    // hears of the same one.
    let sort_field = sort_field(q)?;
    let ascending = ascending(q)?;
    let limit = whole(q, "limit", 20, 100)?;
    Ok(ListQuery {
        export_type,
        sort_field,
        ascending,
        page: page(q, limit)?,
        limit,
    })
}

/// `sort`, or the original's `sortBy`.
fn sort_field(q: &HashMap<String, String>) -> Result<&'static str, ApiError> {
    let mut sorts = Vec::new();
    for name in ["sort", "sortBy"] {
        if let Some(s) = q.get(name) {
            let f = SORT_FIELDS.iter().find(|f| *f == s).ok_or_else(|| {
                ApiError::field(
                    name,
                    format!(
                        "{name} must be one of date.created, date.finished, status, exportType"
                    ),
                )
            })?;
            sorts.push((name, *f));
        }
    }
    Ok(agree(sorts)?.unwrap_or(SORT_FIELDS[0]))
}

/// `sortOrder`, or the original's `sortDir` / `sortDesc`; descending by
/// default.
fn ascending(q: &HashMap<String, String>) -> Result<bool, ApiError> {
    let mut orders = Vec::new();
    for name in ["sortOrder", "sortDir"] {
        match q.get(name).map(String::as_str) {
            None => {}
            Some("asc") => orders.push((name, true)),
            Some("desc") => orders.push((name, false)),
            Some(_) => return Err(ApiError::field(name, format!("{name} must be asc or desc"))),
        }
    }
    match q.get("sortDesc").map(String::as_str) {
        None => {}
        Some("true" | "1") => orders.push(("sortDesc", false)),
        Some("false" | "0") => orders.push(("sortDesc", true)),
        Some(_) => {
            return Err(ApiError::field(
                "sortDesc",
                "sortDesc must be true or false",
            ))
        }
    }
    Ok(agree(orders)?.unwrap_or(false))
}

/// `page`, or the original's `offset` (a multiple of `limit`).
fn page(q: &HashMap<String, String>, limit: u64) -> Result<u64, ApiError> {
    let mut pages = Vec::new();
    if q.contains_key("page") {
        pages.push(("page", whole(q, "page", 1, MAX_PAGE)?));
    }
    if let Some(s) = q.get("offset") {
        let bad = || {
            ApiError::field(
                "offset",
                format!(
                    "offset must be a multiple of limit ({limit}) from 0 to {}",
                    (MAX_PAGE - 1) * limit
                ),
            )
        };
        let offset = s.parse::<u64>().map_err(|_| bad())?;
        let page = offset / limit + 1;
        if offset % limit != 0 || page > MAX_PAGE {
            return Err(bad());
        }
        pages.push(("offset", page));
    }
    Ok(agree(pages)?.unwrap_or(1))
}

/// A whole number from 1 to `max`, `default` when absent.
fn whole(q: &HashMap<String, String>, name: &str, default: u64, max: u64) -> Result<u64, ApiError> {
    match q.get(name) {
        None => Ok(default),
        Some(s) => s
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::field(name, format!("{name} must be an integer from 1 to {max}"))
            }),
    }
}

/// 400 `InvalidExportType`, naming the valid ones.
fn invalid_export_type(registry: &Registry, message: &str) -> ApiError {
    ApiError::coded(StatusCode::BAD_REQUEST, Code::InvalidExportType, message)
        .with_payload(json!({ "field": "exportType", "validTypes": registry.names() }))
}

/// The one value several names of a setting give, if any; a 400 naming
/// both when two of them disagree.
fn agree<T: PartialEq + Copy>(given: Vec<(&str, T)>) -> Result<Option<T>, ApiError> {
    let Some(&(first, v)) = given.first() else {
        return Ok(None);
    };
    match given.iter().find(|(_, w)| *w != v) {
        Some((other, _)) => Err(ApiError::field(
            other,
            format!("{first} and {other} ask for different things: send one of them"),
        )),
        None => Ok(Some(v)),
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

#[utoipa::path(
    get,
    operation_id = "list_exports",
    path = "/campaigns/{campaignId}/exports",
    tag = "exports",
    summary = "List a campaign's exports",
    params(
        CampaignPath,
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
        (status = 404, description = "Campaign not found (payload.code CampaignNotFound)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn list(
    identity: Identity,
    State(state): State<AppState>,
    Path(CampaignPath { campaign_id }): Path<CampaignPath>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    identity.require_report(&campaign_id)?;
    check_campaign_id(&campaign_id)?;
    let lq = parse_list(&state.registry, &q)?;
    // As the original: the campaign must exist (its exports alone do not
    // make it one).
    if state.store.campaign(&campaign_id).await?.is_none() {
        return Err(campaign_not_found());
    }
    let (records, total) = state.queue.list(&campaign_id, &lq).await?;
    let mut items = Vec::with_capacity(records.len());
    for r in &records {
        items.push(ExportDocument::of(&state, r).await);
    }
    let mut headers = HeaderMap::new();
    headers.insert("x-total-count", HeaderValue::from(total));
    let link = |page: u64, rel: &str| {
        let mut qs = vec![format!("page={page}"), format!("limit={}", lq.limit)];
        if let Some(t) = &lq.export_type {
            qs.push(format!("exportType={t}"));
        }
        qs.push(format!("sort={}", lq.sort_field));
        qs.push(format!(
            "sortOrder={}",
            if lq.ascending { "asc" } else { "desc" }
        ));
        format!(
            "</campaigns/{campaign_id}/exports?{}>; rel=\"{rel}\"",
            qs.join("&")
        )
    };
    let mut links = Vec::new();
    if lq.page * lq.limit < total {
        links.push(link(lq.page + 1, "next"));
    }
    if lq.page > 1 {
        links.push(link(lq.page - 1, "prev"));
    }
    if !links.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&links.join(", ")) {
            headers.insert("link", v);
        }
    }
    Ok((headers, Json(items)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &str) -> Result<(&'static str, bool, u64, u64), ApiError> {
        let q: HashMap<String, String> = q
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect();
        parse_list(&Registry::new(), &q).map(|l| (l.sort_field, l.ascending, l.page, l.limit))
    }

    #[test]
    fn every_alias_asks_for_what_our_name_asks_for() {
        let cases = [
            ("sortBy=status", "sort=status"),
            ("sortDir=asc", "sortOrder=asc"),
            ("sortDir=desc", "sortOrder=desc"),
            ("sortDesc=false", "sortOrder=asc"),
            ("sortDesc=true", "sortOrder=desc"),
            ("sortDesc=0", "sortOrder=asc"),
            ("offset=0&limit=10", "page=1&limit=10"),
            ("offset=20&limit=10", "page=3&limit=10"),
            ("offset=40", "page=3"),
            (
                "sortBy=exportType&sortDesc=false&offset=4&limit=2",
                "sort=exportType&sortOrder=asc&page=3&limit=2",
            ),
            // Two names that agree are fine.
            (
                "sort=status&sortBy=status&page=2&offset=20",
                "sort=status&page=2",
            ),
        ];
        for (alias, ours) in cases {
            assert_eq!(parse(alias).unwrap(), parse(ours).unwrap(), "{alias}");
        }
        assert_ne!(parse("sortDir=asc").unwrap(), parse("").unwrap());
    }

    #[test]
    fn aliases_that_cannot_be_honoured_are_a_400() {
        for q in [
            "offset=15&limit=10",
            "offset=-10",
            "offset=x",
            "offset=20000000",
            "sortDir=up",
            "sortDesc=yes",
            "sortBy=requesterUserId",
            "sortOrder=asc&sortDir=desc",
            "sortOrder=desc&sortDesc=false",
            "sort=status&sortBy=exportType",
            "page=2&offset=0",
        ] {
            let e = parse(q).expect_err(q);
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{q}");
            assert!(e.payload.unwrap()["field"].is_string(), "{q}");
        }
    }
}
