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
use axum::Json;
use serde::Serialize;
use serde_json::json;
use tracing::Instrument;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Identity;
use super::{check_id, timeout, AppState, CorrelationId, REQUEST_TIMEOUT};
use crate::ccpa::{self, audit, Deletion, Outcome};
use crate::error::{ApiError, ErrorBody};

/// How long the deletion route waits for the deletion before answering.
pub const CCPA_TIMEOUT: Duration = Duration::from_secs(120);

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_requests))
        // A layer wraps the routes added before it: the deletion route,
        // added after, times itself out (see `delete_user`).
        .layer(timeout(REQUEST_TIMEOUT))
        .routes(routes!(delete_user))
}

/// CCPA deletion result: the original's message and what was done. A
/// failure (500 `DeleteFailed`) carries `deletedCount`, `rewritten` and
/// `requestId` of what was done in its payload; repeating the request
/// completes the rest.
#[derive(Serialize, ToSchema)]
pub struct CcpaDeleted {
    #[schema(example = "User exports deleted successfully")]
    message: &'static str,
    #[serde(flatten)]
    outcome: Outcome,
}

#[utoipa::path(
    delete,
    operation_id = "ccpa_delete_user",
    path = "/ccpa/users/{userId}",
    tag = "ccpa",
    summary = "Delete a user's personal data from the service's exports (supreme only)",
    params(("userId" = String, Path, pattern = "^[A-Za-z0-9_-]{1,128}$", example = "u1")),
    responses(
        (status = 200, description = "Deleted (idempotent: a repeat reports zero)", body = CcpaDeleted),
        (status = 400, description = "userId is not a valid id", body = ErrorBody),
        (status = 403, description = "Not a supreme user", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 408, description = "Still running after 120 s (it goes on; payload.requestId): repeat the request to complete it", body = ErrorBody),
        (status = 500, description = "Objects could not be deleted or rewritten, or the database failed (payload.code DeleteFailed, with deletedCount, rewritten and requestId of what was done): repeat the request", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn delete_user(
    identity: Identity,
    State(state): State<AppState>,
    CorrelationId(correlation): CorrelationId,
    Path(user_id): Path<String>,
) -> Result<Json<CcpaDeleted>, ApiError> {
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
    Ok(Json(CcpaDeleted {
        message: "User exports deleted successfully",
        outcome,
    }))
}

#[utoipa::path(
    get,
    operation_id = "ccpa_requests",
    path = "/ccpa/requests",
    tag = "ccpa",
    summary = "The audit records of a user's CCPA requests, oldest first (supreme only)",
    params(("userId" = String, Query, pattern = "^[A-Za-z0-9_-]{1,128}$", example = "u1",
        description = "Matched by its SHA-256: the records keep no user id")),
    responses(
        (status = 200, description = "The user's requests (empty when none)", body = Vec<audit::Record>),
        (status = 400, description = "userId missing or not a valid id", body = ErrorBody),
        (status = 403, description = "Not a supreme user", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn list_requests(
    identity: Identity,
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Vec<audit::Record>>, ApiError> {
    identity.require_supreme()?;
    let user_id = q
        .get("userId")
        .ok_or_else(|| ApiError::field("userId", "userId is required"))?;
    check_id("userId", user_id)?;
    let records = audit::requests_of(&state.store, &ccpa::user_id_sha256(user_id)).await?;
    Ok(Json(records))
}
