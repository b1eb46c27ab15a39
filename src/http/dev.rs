//! Development routes, mounted only when `DEV_ROUTES=true`.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Claims, Identity};
use super::openapi::{DevIdentity, DevOk, DevToken, DevTokenRequest, ErrorBody};
use super::{parse_json, AppState};
use crate::error::ApiError;

/// Lifetime of a minted dev token.
const DEV_TOKEN_SECS: u64 = 3600;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(token))
        .routes(routes!(whoami))
        .routes(routes!(boom))
        .routes(routes!(supremes))
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
        (status = 404, description = "DEV_ROUTES is not true", body = ErrorBody),
        (status = 413, description = "Body larger than 64 KiB", body = ErrorBody),
    )
)]
async fn token(State(state): State<AppState>, body: Bytes) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(json!({ "token": token })))
}

#[utoipa::path(
    get,
    operation_id = "dev_auth",
    path = "/dev/auth",
    tag = "dev",
    summary = "Echo the decoded identity (404 unless DEV_ROUTES=true)",
    responses(
        (status = 200, description = "The caller", body = DevIdentity),
        (status = 404, description = "DEV_ROUTES is not true", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn whoami(identity: Identity) -> Json<Value> {
    Json(json!({
        "userId": identity.user_id,
        "isSupreme": identity.is_supreme,
        "campaigns": identity.campaigns,
    }))
}

#[utoipa::path(
    get,
    operation_id = "dev_internal_server_error",
    path = "/dev/internalServerError",
    tag = "dev",
    summary = "Raise an internal error on purpose (404 unless DEV_ROUTES=true)",
    responses(
        (status = 404, description = "DEV_ROUTES is not true", body = ErrorBody),
        (status = 500, description = "Always, when mounted: the error shape, no stack", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn boom(_identity: Identity) -> Result<Json<Value>, ApiError> {
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
        (status = 404, description = "DEV_ROUTES is not true", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn supremes(identity: Identity) -> Result<Json<Value>, ApiError> {
    identity.require_supreme()?;
    Ok(Json(json!({ "ok": true })))
}
