//! `DELETE /ccpa/users/:userId` — privacy deletion (spec: exports.md
//! "CCPA deletion"; the work itself is `crate::ccpa`) — and
//! `GET /ccpa/requests?userId=` — its audit records. Supreme users only.
//!
//! The deletion runs as its own task: a client that goes away, or the
//! route's timeout (120 s, not the router's 30 s), does not stop it midway
//! (objects gone, records unmarked). A timed-out request answers 408 with
//! the audit record's id; repeating the request completes what is left.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use mongodb::bson::Bson;
use serde_json::{json, Value};
use tracing::Instrument;

use super::auth::Identity;
use super::view::bson_json;
use super::{check_id, timeout, AppState, CorrelationId, REQUEST_TIMEOUT};
use crate::ccpa::{self, audit, Deletion};
use crate::error::ApiError;

/// How long the deletion route waits for the deletion before answering.
pub const CCPA_TIMEOUT: Duration = Duration::from_secs(120);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ccpa/requests", get(list_requests))
        // A layer wraps the routes added before it: the deletion route,
        // added after, times itself out (see `delete_user`).
        .layer(timeout(REQUEST_TIMEOUT))
        .route("/ccpa/users/{userId}", delete(delete_user))
}

async fn delete_user(
    identity: Identity,
    State(state): State<AppState>,
    CorrelationId(correlation): CorrelationId,
    Path(user_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    identity.require_supreme()?;
    check_id("userId", &user_id)?;
    let deletion = Deletion::new(
        state.store.clone(),
        state.queue.clone(),
        state.sinks.clone(),
        state.registry.clone(),
    );
    let req = ccpa::Request {
        user_id,
        requested_by: identity.user_id,
        correlation,
    };
    // The audit record is opened inside the task too: a client gone at any
    // point leaves no record RUNNING that nothing runs.
    let (opened, request_id) = tokio::sync::oneshot::channel::<String>();
    let task = tokio::spawn(
        async move {
            let job = deletion.begin(req).await?;
            let _ = opened.send(job.request_id().to_string());
            job.run().await
        }
        .instrument(tracing::Span::current()),
    );
    let outcome = match tokio::time::timeout(CCPA_TIMEOUT, task).await {
        Ok(Ok(r)) => r?,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "CCPA deletion task failed");
            return Err(ApiError::internal());
        }
        Err(_) => {
            let mut request_id = request_id;
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "the deletion is still running; repeat the request to complete it and see the counts",
            )
            .with_payload(json!({ "requestId": request_id.try_recv().ok() })));
        }
    };
    let mut body = serde_json::to_value(&outcome).unwrap_or_default();
    body["message"] = json!("User exports deleted successfully");
    Ok(Json(body))
}

async fn list_requests(
    identity: Identity,
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    identity.require_supreme()?;
    let user_id = q
        .get("userId")
        .ok_or_else(|| ApiError::field("userId", "userId is required"))?;
    check_id("userId", user_id)?;
    let records = audit::requests_of(&state.store, &ccpa::user_id_sha256(user_id)).await?;
    let items = records
        .into_iter()
        .map(|mut d| {
            let id = d.remove("_id");
            let mut v = bson_json(&Bson::Document(d));
            if let Some(Bson::ObjectId(id)) = id {
                v["id"] = Value::String(id.to_hex());
            }
            v
        })
        .collect();
    Ok(Json(Value::Array(items)))
}
