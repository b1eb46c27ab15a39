//! `/campaigns/:campaignId/exports` — request, read and list exports.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use mongodb::bson::oid::ObjectId;
use serde_json::{json, Value};

use super::auth::Identity;
use super::view::export_json;
use super::{parse_json, AppState, CorrelationId};
use crate::error::{ApiError, Code};
use crate::exports::{require_markets, Params};
use crate::queue::{ListQuery, NewExport};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/campaigns/{campaignId}/exports", get(list).post(create))
        .route("/campaigns/{campaignId}/exports/{exportId}", get(read))
}

/// Campaign ids are ObjectId hex or short slugs: anything else (`..`,
/// operators, control characters) is refused before it reaches a query.
pub fn check_campaign_id(id: &str) -> Result<(), ApiError> {
    super::check_id("campaignId", id)
}

const DATE_KEY_TYPES: [&str; 1] = ["codeWaves"];

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
    let valid = state.registry.names();
    let invalid_type = |msg: &str| {
        ApiError::coded(StatusCode::BAD_REQUEST, Code::InvalidExportType, msg)
            .with_payload(json!({ "field": "exportType", "validTypes": valid }))
    };
    let export_type = match obj.get("exportType") {
        None | Some(Value::Null) => return Err(invalid_type("exportType is required")),
        Some(Value::String(s)) if state.registry.get(s).is_some() => s.clone(),
        Some(Value::String(_)) => {
            return Err(invalid_type("exportType is not a valid export type"))
        }
        Some(_) => return Err(invalid_type("exportType must be a string")),
    };
    let needs_date_key = DATE_KEY_TYPES.contains(&export_type.as_str());
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

fn date_key_error(code: Code, msg: &str) -> ApiError {
    ApiError::coded(StatusCode::BAD_REQUEST, code, msg).with_payload(json!({ "field": "dateKey" }))
}

async fn create(
    identity: Identity,
    State(state): State<AppState>,
    Path(campaign_id): Path<String>,
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
    let campaign = state.store.campaign(&campaign_id).await?.ok_or_else(|| {
        ApiError::coded(
            StatusCode::NOT_FOUND,
            Code::CampaignNotFound,
            "campaign not found",
        )
    })?;
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
    Ok((status, Json(export_json(&state, &rec).await)).into_response())
}

async fn read(
    identity: Identity,
    State(state): State<AppState>,
    Path((campaign_id, export_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    identity.require_report(&campaign_id)?;
    check_campaign_id(&campaign_id)?;
    let id = ObjectId::parse_str(&export_id)
        .map_err(|_| ApiError::field("exportId", "exportId is not a valid ObjectId"))?;
    // Scoped by campaign: another campaign's export id is a 404, never its data.
    let rec = state
        .queue
        .get(&campaign_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("export not found"))?;
    Ok(Json(export_json(&state, &rec).await))
}

const SORT_FIELDS: [&str; 4] = ["date.created", "date.finished", "status", "exportType"];
const MAX_PAGE: u64 = 1_000_000;

fn parse_list(state: &AppState, q: &HashMap<String, String>) -> Result<ListQuery, ApiError> {
    // Unknown parameters are ignored (as unknown body fields are), but
    // operator-looking ones (`exportType[$ne]=x`) are refused outright.
    for k in q.keys() {
        if k.contains(['[', ']', '$']) {
            return Err(ApiError::bad_request(format!(
                "query parameter {} is not accepted",
                truncate(k)
            )));
        }
    }
    let export_type = match q.get("exportType") {
        None => None,
        Some(t) if state.registry.get(t).is_some() => Some(t.clone()),
        Some(_) => {
            return Err(ApiError::coded(
                StatusCode::BAD_REQUEST,
                Code::InvalidExportType,
                "exportType is not a valid export type",
            )
            .with_payload(json!({ "field": "exportType", "validTypes": state.registry.names() })))
        }
    };
    let sort_field = match q.get("sort") {
        None => SORT_FIELDS[0],
        Some(s) => *SORT_FIELDS.iter().find(|f| *f == s).ok_or_else(|| {
            ApiError::field(
                "sort",
                "sort must be one of date.created, date.finished, status, exportType",
            )
        })?,
    };
    let ascending = match q.get("sortOrder").map(String::as_str) {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(_) => {
            return Err(ApiError::field(
                "sortOrder",
                "sortOrder must be asc or desc",
            ))
        }
    };
    let int = |name: &str, default: u64, max: u64| -> Result<u64, ApiError> {
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
    };
    Ok(ListQuery {
        export_type,
        sort_field,
        ascending,
        page: int("page", 1, MAX_PAGE)?,
        limit: int("limit", 20, 100)?,
    })
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

async fn list(
    identity: Identity,
    State(state): State<AppState>,
    Path(campaign_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    identity.require_report(&campaign_id)?;
    check_campaign_id(&campaign_id)?;
    let lq = parse_list(&state, &q)?;
    let (records, total) = state.queue.list(&campaign_id, &lq).await?;
    let mut items = Vec::with_capacity(records.len());
    for r in &records {
        items.push(export_json(&state, r).await);
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
    Ok((headers, Json(Value::Array(items))).into_response())
}
