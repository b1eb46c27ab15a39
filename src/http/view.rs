//! The export document as the API returns it (spec: api.md "Export
//! document"): every field of the original's document with its original
//! type (whatever type a legacy record stored it as), dates as RFC 3339
//! strings, `path` (a presigned URL) on FINISHED single-object exports; no
//! internal fields (lease, activeKey, upload), and never what the original
//! stored beside them (the caller's `token`, `error.stack`).

use mongodb::bson::{Bson, DateTime};
use serde_json::{json, Value};

use super::AppState;
use crate::queue::{ExportRecord, Status};
use crate::store::iso;

fn date(d: &Option<DateTime>) -> Value {
    d.map_or(Value::Null, |d| Value::String(iso(d)))
}

/// BSON as JSON: dates as RFC 3339 strings, the rest as relaxed extended JSON.
pub fn bson_json(b: &Bson) -> Value {
    match b {
        Bson::DateTime(d) => Value::String(iso(*d)),
        Bson::Array(a) => Value::Array(a.iter().map(bson_json).collect()),
        Bson::Document(d) => {
            Value::Object(d.iter().map(|(k, v)| (k.clone(), bson_json(v))).collect())
        }
        other => other.clone().into_relaxed_extjson(),
    }
}

/// The API view of one export. `path` is computed here (presigning is local).
pub async fn export_json(state: &AppState, rec: &ExportRecord) -> Value {
    let progress = rec.progress.clone().unwrap_or_default();
    let mut v = json!({
        "id": rec.id.to_hex(),
        "campaignId": rec.campaign_id,
        "campaignName": rec.campaign_name,
        "exportType": rec.export_type,
        "status": rec.status.as_str(),
        "requesterUserId": rec.requester_user_id,
        "correlation": rec.correlation,
        "dateKey": rec.date_key,
        "includeAllMarkets": rec.include_all_markets,
        "compression": rec.compression.clone().unwrap_or_else(|| "none".into()),
        "date": {
            "created": date(&rec.date.created),
            "triggered": date(&rec.date.triggered),
            "finished": date(&rec.date.finished),
            "failed": date(&rec.date.failed),
            "expired": date(&rec.date.expired),
        },
        "key": rec.key.as_ref().map(bson_json).unwrap_or(Value::Null),
        "count": rec.count,
        "progress": {
            "rowsWritten": progress.rows_written,
            "bytesWritten": progress.bytes_written,
            "expectedRows": progress.expected_rows,
            "resumedFromRow": progress.resumed_from_row,
        },
        "error": rec.error.as_ref().map(|e| {
            let mut err = json!({ "message": e.message });
            if let Some(p) = e.payload.as_ref().filter(|p| !matches!(p, Bson::Null)) {
                err["payload"] = bson_json(p);
            }
            err
        }),
    });
    // Integrity (ours): a client can check its download.
    if let (Some(h), Some(n)) = (&rec.sha256, rec.bytes) {
        v["sha256"] = Value::String(h.clone());
        v["bytes"] = Value::from(n);
    }
    // A handed-back export: when it may be claimed again.
    if let Some(ms) = rec.retry_at_ms.filter(|_| rec.status == Status::Pending) {
        v["retryAt"] = Value::String(iso(mongodb::bson::DateTime::from_millis(ms)));
    }
    if let Some(meta) = &rec.meta {
        v["meta"] = bson_json(&Bson::Document(meta.clone()));
    }
    if rec.deleted {
        v["deleted"] = Value::Bool(true);
        v["date"]["deleted"] = date(&rec.date.deleted);
    }
    if let Some(path) = signed_path(state, rec).await {
        v["path"] = Value::String(path);
    }
    v
}

/// A presigned GET for a FINISHED single-object export in one of the
/// service's own buckets.
async fn signed_path(state: &AppState, rec: &ExportRecord) -> Option<String> {
    if rec.status != Status::Finished || rec.deleted {
        return None;
    }
    let Some(Bson::String(key)) = &rec.key else {
        return None;
    };
    let ty = state.registry.get(&rec.export_type)?;
    let bucket = state.sinks.own_bucket(ty.destination())?;
    match state
        .sinks
        .presign(&bucket, key, state.signed_url_ttl)
        .await
    {
        Ok(url) => Some(url),
        Err(e) => {
            tracing::warn!(export_id = %rec.id, error = %e, "could not sign the download URL");
            None
        }
    }
}
