//! Cancel an export: the one rule the HTTP route
//! (`DELETE /campaigns/:campaignId/exports/:exportId`) and the operator CLI
//! (`vf-export exports cancel`) share (spec: api.md, cancel).
//!
//! A PENDING or TRIGGERED export becomes FAILED with `error.payload.code`
//! `Cancelled` ([`Queue::cancel`]). A running one stops on its own: its
//! worker's next lease renewal no longer matches, its run ends as for a
//! lost lease and aborts its upload. The upload recorded on the export is
//! aborted here too, and an object already completed at its key deleted,
//! so nothing is left even when the worker is dead or was between
//! completing the object and recording the result. A final export is left
//! alone; a cancelled one again is a no-op that retries a cleanup that
//! failed before.

use mongodb::bson::{oid::ObjectId, Bson, Document};

use crate::queue::{Queue, Status};
use crate::sink::UploadRef;
use crate::sink::{SinkError, Sinks};
use crate::store::StoreError;

/// What a cancel found and did.
#[derive(Debug)]
pub enum Outcome {
    /// It was PENDING or TRIGGERED; it is FAILED (`Cancelled`) now.
    Cancelled(Document),
    /// It had been cancelled before: unchanged.
    AlreadyCancelled(Document),
    /// It had reached a final status: unchanged.
    NotActive(Document),
    NotFound,
}

/// The outcome, and the upload cleanup's failure if it failed (the
/// cancel itself stands; the upload stays recorded and a repeat retries).
#[derive(Debug)]
pub struct Cancel {
    pub outcome: Outcome,
    pub cleanup_error: Option<SinkError>,
}

/// Cancel export `id` (within `campaign_id` when given) on behalf of `by`
/// (a user id, or the CLI).
pub async fn cancel(
    queue: &Queue,
    sinks: &Sinks,
    id: ObjectId,
    campaign_id: Option<&str>,
    by: &str,
) -> Result<Cancel, StoreError> {
    let (cancelled_now, before) = match queue.cancel(id, campaign_id, by).await? {
        Some(before) => (true, before),
        None => match queue.raw(id, campaign_id).await? {
            Some(d) => (false, d),
            None => {
                return Ok(Cancel {
                    outcome: Outcome::NotFound,
                    cleanup_error: None,
                })
            }
        },
    };
    if !cancelled_now && !is_cancelled(&before) {
        return Ok(Cancel {
            outcome: Outcome::NotActive(before),
            cleanup_error: None,
        });
    }
    let upload = before
        .get_document("upload")
        .ok()
        .and_then(crate::queue::upload_ref);
    let cleanup_error = match upload {
        Some(up) => match remove_upload(sinks, &up).await {
            Ok(()) => {
                queue.forget_upload(id).await?;
                None
            }
            Err(e) => {
                tracing::warn!(export_id = %id, bucket = %up.bucket, error = %e, "cancelled export: its upload could not be aborted; a repeated cancel retries");
                Some(e)
            }
        },
        None => None,
    };
    let after = queue.raw(id, campaign_id).await?.unwrap_or(before);
    tracing::info!(export_id = %id, cancelled_now, "export cancelled");
    let outcome = if cancelled_now {
        Outcome::Cancelled(after)
    } else {
        Outcome::AlreadyCancelled(after)
    };
    Ok(Cancel {
        outcome,
        cleanup_error,
    })
}

/// Abort every open upload at the export's key, then delete an object a
/// completed upload may have left there. The key is this export's alone
/// (keys are unique per export) and no record will name it now.
async fn remove_upload(sinks: &Sinks, up: &UploadRef) -> Result<(), SinkError> {
    sinks.abort_orphan(up).await?;
    let refused = sinks
        .delete_keys(&up.bucket, std::slice::from_ref(&up.key))
        .await?;
    if refused.is_empty() {
        Ok(())
    } else {
        Err(SinkError::other(format!(
            "delete the cancelled export's object in bucket {}",
            up.bucket
        )))
    }
}

/// FAILED by a cancel (`error.payload.code` = `Cancelled`).
pub fn is_cancelled(d: &Document) -> bool {
    let code = d
        .get_document("error")
        .ok()
        .and_then(|e| e.get_document("payload").ok())
        .and_then(|p| p.get("code"));
    d.get_str("status").ok() == Some(Status::Failed.as_str())
        && matches!(code, Some(Bson::String(c)) if c == crate::error::Code::Cancelled.as_str())
}
