//! Development routes, mounted only when `DEV_ROUTES=true`.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::Json;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Claims, Identity};
use super::{parse_json, AppState};
use crate::error::{ApiError, ErrorBody};

/// Lifetime of a minted dev token.
const DEV_TOKEN_SECS: u64 = 3600;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(token))
        .routes(routes!(whoami))
        .routes(routes!(boom))
        .routes(routes!(supremes))
}

/// `POST /dev/token`'s body, as the document describes it (the handler
/// reads it field by field, to name the field that is wrong).
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

#[utoipa::path(
    post,
    operation_id = "dev_token",
    path = "/dev/token",
    tag = "dev",
    summary = "Mint a token for local use (HS256 only; 404 unless DEV_ROUTES=true)",
    request_body(content = DevTokenRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "A token valid for one hour", body = DevToken),
        (status = 400, description = "Bad body, or the key cannot sign", body = ErrorBody),
        (status = 413, description = "Body larger than 64 KiB", body = ErrorBody),
    )
)]
async fn token(State(state): State<AppState>, body: Bytes) -> Result<Json<DevToken>, ApiError> {
    let v = parse_json(&body)?;
    let user_id = match v.get("userId") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(ApiError::field("userId", "userId is required")),
    };
    let campaigns: HashMap<String, Vec<String>> = match v.get("campaigns") {
        None | Some(Value::Null) => HashMap::new(),
        Some(c) => serde_json::from_value(c.clone()).map_err(|_| {
            ApiError::field(
                "campaigns",
                "campaigns must map campaign ids to permission lists",
            )
        })?,
    };
    let is_supreme = match v.get("isSupreme") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::field("isSupreme", "isSupreme must be a boolean")),
    };
    let now = chrono::Utc::now().timestamp() as u64;
    let claims = Claims {
        sub: user_id,
        is_supreme,
        campaigns,
        exp: now + DEV_TOKEN_SECS,
        nbf: None,
    };
    let token = state.auth.mint(&claims).ok_or_else(|| {
        ApiError::bad_request("token minting needs JWT_SECRET (a public key cannot sign)")
    })?;
    Ok(Json(DevToken { token }))
}

#[utoipa::path(
    get,
    operation_id = "dev_auth",
    path = "/dev/auth",
    tag = "dev",
    summary = "Echo the decoded identity (404 unless DEV_ROUTES=true)",
    responses(
        (status = 200, description = "The caller", body = DevIdentity),
    ),
    security(("bearer" = []))
)]
async fn whoami(identity: Identity) -> Json<DevIdentity> {
    Json(DevIdentity {
        user_id: identity.user_id,
        is_supreme: identity.is_supreme,
        campaigns: identity.campaigns,
    })
}

#[utoipa::path(
    get,
    operation_id = "dev_internal_server_error",
    path = "/dev/internalServerError",
    tag = "dev",
    summary = "Raise an internal error on purpose (404 unless DEV_ROUTES=true)",
    responses(
        (status = 500, description = "Always, when mounted: the error shape, no stack", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn boom(_identity: Identity) -> Result<Json<DevOk>, ApiError> {
    tracing::error!("dev route raised an internal error on purpose");
    Err(ApiError::internal())
}

#[utoipa::path(
    get,
    operation_id = "dev_supremes",
    path = "/dev/supremes",
    tag = "dev",
    summary = "200 for a supreme user (404 unless DEV_ROUTES=true)",
    responses(
        (status = 200, description = "Supreme", body = DevOk),
        (status = 403, description = "Not a supreme user", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn supremes(identity: Identity) -> Result<Json<DevOk>, ApiError> {
    identity.require_supreme()?;
    Ok(Json(DevOk { ok: true }))
}
