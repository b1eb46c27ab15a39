//! Development routes, mounted only when `DEV_ROUTES=true`.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::auth::{Claims, Identity};
use super::{parse_json, AppState};
use crate::error::ApiError;

/// Lifetime of a minted dev token.
const DEV_TOKEN_SECS: u64 = 3600;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/dev/token", post(token))
        .route("/dev/auth", get(whoami))
        .route("/dev/internalServerError", get(boom))
        .route("/dev/supremes", get(supremes))
}

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

async fn whoami(identity: Identity) -> Json<Value> {
    Json(json!({
        "userId": identity.user_id,
        "isSupreme": identity.is_supreme,
        "campaigns": identity.campaigns,
    }))
}

async fn boom(_identity: Identity) -> Result<Json<Value>, ApiError> {
    tracing::error!("dev route raised an internal error on purpose");
    Err(ApiError::internal())
}

async fn supremes(identity: Identity) -> Result<Json<Value>, ApiError> {
    identity.require_supreme()?;
    Ok(Json(json!({ "ok": true })))
}
