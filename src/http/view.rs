//! The export document as the API returns it (spec: api.md "Export
//! document"): every field of the original's document with its original
//! type (whatever type a legacy record stored it as), dates as RFC 3339
//! strings, `path` (a presigned URL) on FINISHED single-object exports; no
//! internal fields (lease, activeKey, upload), and never what the original
//! stored beside them (the caller's `token`, `error.stack`). The handlers
//! return these types and the OpenAPI document describes these types: one
//! definition for both.

use mongodb::bson::{Bson, DateTime};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::AppState;
use crate::queue::{ExportRecord, Status};
use crate::store::iso;

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

/// Output compression (single-file types only offer gzip).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // described: the document carries the stored name as it is
pub enum Compression {
    None,
    Gzip,
}

/// The object key, or the keys of a multi-object export.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // described: the document carries the stored value as it is
pub enum ExportKey {
    One(String),
    Many(Vec<String>),
}

/// Lifecycle timestamps, RFC 3339 UTC, null until reached.
#[derive(Serialize, ToSchema)]
pub struct ExportDates {
    #[schema(required = true)]
    created: Option<String>,
    #[schema(required = true)]
    triggered: Option<String>,
    #[schema(required = true)]
    finished: Option<String>,
    #[schema(required = true)]
    failed: Option<String>,
    #[schema(required = true)]
    expired: Option<String>,
    /// Present on exports removed by a CCPA deletion.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    deleted: Option<Option<String>>,
}

/// Progress of a running export.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportProgress {
    rows_written: i64,
    bytes_written: i64,
    /// The preliminary count, when known.
    #[schema(required = true)]
    expected_rows: Option<i64>,
    /// Rows this attempt did not read again: it continued from a
    /// checkpoint holding them (0: from the start).
    resumed_from_row: i64,
}

/// Why an export failed (no stack trace).
#[derive(Serialize, ToSchema)]
pub struct ExportFailure {
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    payload: Option<Value>,
}

/// An export, as the API returns it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportDocument {
    #[schema(example = "65f0c1a2b3c4d5e6f7a8b9c0")]
    id: String,
    campaign_id: String,
    campaign_name: String,
    export_type: String,
    status: Status,
    #[schema(required = true)]
    requester_user_id: Option<String>,
    #[schema(required = true)]
    correlation: Option<String>,
    #[schema(required = true)]
    date_key: Option<String>,
    include_all_markets: bool,
    #[schema(value_type = Compression)]
    compression: String,
    date: ExportDates,
    #[schema(value_type = Option<ExportKey>, required = true)]
    key: Value,
    /// The preliminary count while TRIGGERED; rows written once FINISHED.
    #[schema(required = true)]
    count: Option<i64>,
    progress: ExportProgress,
    #[schema(required = true)]
    error: Option<ExportFailure>,
    /// Hex SHA-256 of a FINISHED single-object export's bytes (ours).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false, pattern = "^[0-9a-f]{64}$")]
    sha256: Option<String>,
    /// Size of a FINISHED single-object export (ours).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    bytes: Option<i64>,
    /// A PENDING export handed back after a retryable failure: when it may
    /// be claimed again (ours).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    retry_at: Option<String>,
    /// In the stored order of its keys (a map of its own would shuffle
    /// them from one response to the next).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false, value_type = Option<HashMap<String, Value>>)]
    meta: Option<serde_json::Map<String, Value>>,
    /// True once a CCPA deletion removed the export's files.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    deleted: Option<bool>,
    /// Presigned GET URL: FINISHED single-object exports in the service's own buckets.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    path: Option<String>,
}

fn date(d: Option<DateTime>) -> Option<String> {
    d.map(iso)
}

impl ExportDocument {
    /// The API view of one export. `path` is computed here (presigning is
    /// local).
    pub async fn of(state: &AppState, rec: &ExportRecord) -> Self {
        let progress = rec.progress.clone().unwrap_or_default();
        let d = &rec.date;
        Self {
            id: rec.id.to_hex(),
            campaign_id: rec.campaign_id.clone(),
            campaign_name: rec.campaign_name.clone(),
            export_type: rec.export_type.clone(),
            status: rec.status,
            requester_user_id: rec.requester_user_id.clone(),
            correlation: rec.correlation.clone(),
            date_key: rec.date_key.clone(),
            include_all_markets: rec.include_all_markets,
            compression: rec.compression.clone().unwrap_or_else(|| "none".into()),
            date: ExportDates {
                created: date(d.created),
                triggered: date(d.triggered),
                finished: date(d.finished),
                failed: date(d.failed),
                expired: date(d.expired),
                deleted: rec.deleted.then(|| date(d.deleted)),
            },
            key: rec.key.as_ref().map_or(Value::Null, bson_json),
            count: rec.count,
            progress: ExportProgress {
                rows_written: progress.rows_written,
                bytes_written: progress.bytes_written,
                expected_rows: progress.expected_rows,
                resumed_from_row: progress.resumed_from_row,
            },
            error: rec.error.as_ref().map(|e| ExportFailure {
                message: e.message.clone(),
                payload: e
                    .payload
                    .as_ref()
                    .filter(|p| !matches!(p, Bson::Null))
                    .map(bson_json),
            }),
            // Integrity (ours): a client can check its download.
            sha256: rec.bytes.and(rec.sha256.clone()),
            bytes: rec.sha256.as_ref().and(rec.bytes),
            retry_at: rec
                .retry_at_ms
                .filter(|_| rec.status == Status::Pending)
                .map(|ms| iso(DateTime::from_millis(ms))),
            meta: rec
                .meta
                .as_ref()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), bson_json(v))).collect()),
            deleted: rec.deleted.then_some(true),
            path: signed_path(state, rec).await,
        }
    }
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
