//! `DELETE /ccpa/users/:userId` — privacy deletion (spec: exports.md
//! "CCPA deletion"). Supreme users only. For every campaign the user
//! entered: delete the objects of its exports (except the partner types)
//! and mark the records `deleted` (an audit trail without the data).
//! Idempotent; an S3 failure is a 500 `DeleteFailed` with nothing marked
//! that was not deleted.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::delete;
use axum::{Json, Router};
use mongodb::bson::{oid::ObjectId, Bson};
use serde_json::{json, Value};

use super::auth::Identity;
use super::AppState;
use crate::error::{ApiError, Code};
use crate::queue::Status;

/// Types whose files belong to partner pipelines: never deleted here.
pub const SKIPPED_TYPES: [&str; 3] = ["verifiedEntries", "scoring", "autoReminderEmail"];

pub fn routes() -> Router<AppState> {
    Router::new().route("/ccpa/users/{userId}", delete(delete_user))
}

async fn delete_user(
    identity: Identity,
    State(state): State<AppState>,
    Path(user_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    identity.require_supreme()?;
    let ok = !user_id.is_empty()
        && user_id.len() <= 128
        && user_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        return Err(ApiError::field("userId", "userId is not a valid id"));
    }
    let campaigns = state.store.campaigns_entered_by(&user_id).await?;
    let exports = state.queue.of_campaigns(&campaigns).await?;
    let (mut skipped, mut in_flight) = (0u64, 0u64);
    // bucket → (keys, export ids whose keys are all in that bucket)
    let mut by_bucket: BTreeMap<String, Vec<(ObjectId, Vec<String>)>> = BTreeMap::new();
    let mut keyless: Vec<ObjectId> = Vec::new();
    for rec in exports.iter().filter(|r| !r.deleted) {
        if SKIPPED_TYPES.contains(&rec.export_type.as_str()) {
            skipped += 1;
            continue;
        }
        if matches!(rec.status, Status::Pending | Status::Triggered) {
            in_flight += 1;
            continue;
        }
        let keys: Vec<String> = match &rec.key {
            Some(Bson::String(k)) => vec![k.clone()],
            Some(Bson::Array(a)) => a
                .iter()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        let bucket = state
            .registry
            .get(&rec.export_type)
            .and_then(|t| state.sinks.own_bucket(t.destination()));
        match (bucket, keys.is_empty()) {
            (_, true) => keyless.push(rec.id),
            (Some(b), false) => by_bucket.entry(b).or_default().push((rec.id, keys)),
            // An unknown type's files cannot be located: leave it unmarked.
            (None, false) => skipped += 1,
        }
    }
    let mut deleted_ids = keyless;
    let mut files = 0u64;
    let mut failure: Option<String> = None;
    for (bucket, items) in &by_bucket {
        let keys: Vec<String> = items.iter().flat_map(|(_, k)| k.iter().cloned()).collect();
        match state.sinks.delete_keys(bucket, &keys).await {
            Ok(refused) => {
                for (id, ks) in items {
                    if ks.iter().all(|k| !refused.contains(k)) {
                        deleted_ids.push(*id);
                        files += ks.len() as u64;
                    }
                }
                if !refused.is_empty() {
                    failure = Some(format!(
                        "{} objects in bucket {bucket} could not be deleted",
                        refused.len()
                    ));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, bucket = %bucket, "CCPA delete failed");
                failure = Some(format!("objects in bucket {bucket} could not be deleted"));
            }
        }
    }
    let marked = state.queue.mark_deleted(&deleted_ids).await?;
    tracing::info!(
        campaigns = campaigns.len(),
        exports = marked,
        files,
        skipped,
        in_flight,
        "CCPA deletion"
    );
    if let Some(msg) = failure {
        return Err(
            ApiError::coded(StatusCode::INTERNAL_SERVER_ERROR, Code::DeleteFailed, msg)
                .with_payload(json!({ "deletedCount": { "exports": marked, "files": files } })),
        );
    }
    Ok(Json(json!({
        "message": "User exports deleted successfully",
        "deletedCount": { "exports": marked, "files": files },
        "skipped": skipped,
        "inFlight": in_flight,
    })))
}
