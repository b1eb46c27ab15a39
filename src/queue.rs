//! The export queue in MongoDB (`exports` collection).
//!
//! Rules (spec, exports.md "Queue rules"):
//! - dedupe: an active export (PENDING/TRIGGERED) carries `activeKey`
//!   (`campaignId|exportType|dateKey`) under a sparse unique index, so two
//!   concurrent POSTs cannot both insert; the loser returns the winner.
//! - claims are atomic `findOneAndUpdate`s that set a lease (owner + expiry
//!   in epoch ms); the owner renews it while running; a lapsed lease means
//!   the owner died and the export may be claimed again, up to
//!   `MAX_ATTEMPTS` claims.
//! - every state change made by a worker is conditional on it still owning
//!   the lease, so a worker that lost its export cannot overwrite the new
//!   owner's result.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::TryStreamExt;
use mongodb::bson::{self, doc, oid::ObjectId, Bson, DateTime, Document};
use mongodb::options::ReturnDocument;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::store::{Store, StoreError};

/// Export status, stored and returned as the original's upper-case names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Pending,
    Triggered,
    Finished,
    Failed,
    Expired,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Triggered => "TRIGGERED",
            Status::Finished => "FINISHED",
            Status::Failed => "FAILED",
            Status::Expired => "EXPIRED",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Dates {
    // Kept as raw BSON: BSON dates in MongoDB, but tolerate strings written
    // by older tools.
    pub created: Option<Bson>,
    pub triggered: Option<Bson>,
    pub finished: Option<Bson>,
    pub failed: Option<Bson>,
    pub expired: Option<Bson>,
    pub deleted: Option<Bson>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    pub owner: String,
    pub expires_at_ms: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    #[serde(default)]
    pub rows_written: i64,
    #[serde(default)]
    pub bytes_written: i64,
    #[serde(default)]
    pub expected_rows: Option<i64>,
}

/// A multipart upload, recorded so whoever reclaims the export can abort it
/// if its owner died. The bucket and key are recorded before the upload is
/// started (no id yet): an owner killed between S3 creating the upload and
/// recording its id still leaves the key to find it by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadRef {
    pub bucket: String,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub message: String,
    #[serde(default)]
    pub payload: Option<Bson>,
}

/// One export document (spec: exports.md "Export document").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportRecord {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub campaign_id: String,
    #[serde(default)]
    pub campaign_name: String,
    pub export_type: String,
    pub status: Status,
    #[serde(default)]
    pub requester_user_id: Option<String>,
    #[serde(default)]
    pub correlation: Option<String>,
    #[serde(default)]
    pub date_key: Option<String>,
    #[serde(default)]
    pub include_all_markets: bool,
    #[serde(default)]
    pub compression: Option<String>,
    #[serde(default)]
    pub date: Dates,
    #[serde(default)]
    pub key: Option<Bson>,
    #[serde(default)]
    pub count: Option<i64>,
    #[serde(default)]
    pub meta: Option<Document>,
    #[serde(default)]
    pub error: Option<ErrorInfo>,
    #[serde(default)]
    pub lease: Option<Lease>,
    #[serde(default)]
    pub active_key: Option<String>,
    #[serde(default)]
    pub attempts: i32,
    #[serde(default)]
    pub upload: Option<UploadRef>,
    #[serde(default)]
    pub progress: Option<Progress>,
    #[serde(default, deserialize_with = "truthy")]
    pub deleted: bool,
    /// A handed-back export's earliest next claim (epoch ms).
    #[serde(default)]
    pub retry_at_ms: Option<i64>,
    /// Hex SHA-256 and size of a FINISHED single-object export.
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub bytes: Option<i64>,
}

/// A flag stored as a boolean, read leniently: some writers (and the
/// nx-27017 stand-in) store `true` as 1.
fn truthy<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(match Bson::deserialize(d)? {
        Bson::Boolean(b) => b,
        Bson::Int32(n) => n != 0,
        Bson::Int64(n) => n != 0,
        _ => false,
    })
}

impl ExportRecord {
    /// Creation time, for key naming (stable across attempts).
    pub fn created(&self) -> DateTime {
        match &self.date.created {
            Some(Bson::DateTime(d)) => *d,
            Some(Bson::String(s)) => DateTime::parse_rfc3339_str(s).unwrap_or(DateTime::MIN),
            _ => self.id.timestamp(),
        }
    }
    pub fn gzip(&self) -> bool {
        self.compression.as_deref() == Some("gzip")
    }
}

/// What a finished export wrote.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The object key, or the array of keys of a multi-object export.
    pub key: Bson,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: Option<String>,
    pub meta: Document,
}

/// What a POST asks for.
#[derive(Debug, Clone)]
pub struct NewExport {
    pub campaign_id: String,
    pub campaign_name: String,
    pub export_type: String,
    pub requester_user_id: String,
    pub correlation: String,
    pub date_key: Option<String>,
    pub include_all_markets: bool,
    pub compression: Option<String>,
}

/// List query (validated by the HTTP layer).
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub export_type: Option<String>,
    pub sort_field: &'static str,
    pub ascending: bool,
    pub page: u64,
    pub limit: u64,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == 11000,
        ErrorKind::Command(c) => c.code == 11000,
        _ => false,
    }
}

fn decode(d: Document) -> Result<ExportRecord, StoreError> {
    bson::from_document(d).map_err(|e| StoreError::custom(e.to_string()))
}

/// Fields an export leaves behind when it stops being active.
fn inactive_unset() -> Document {
    doc! { "activeKey": "", "lease": "", "upload": "" }
}

/// The queue: every read and write of the `exports` collection.
#[derive(Clone, Debug)]
pub struct Queue {
    store: Store,
    /// Wakes this process's idle worker when this process enqueues: an
    /// export requested here starts at once, not at the next poll (other
    /// processes find it by polling).
    enqueued: Arc<Notify>,
}

impl Queue {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            enqueued: Arc::new(Notify::new()),
        }
    }

    /// Resolves when this handle (or a clone) has enqueued an export since
    /// the last call.
    pub async fn enqueued(&self) {
        self.enqueued.notified().await
    }

    fn coll(&self) -> mongodb::Collection<Document> {
        self.store.exports()
    }

    /// Insert a PENDING export, or return the active one of the same
    /// campaign/type/dateKey. `bool` = created.
    pub async fn enqueue(&self, n: &NewExport) -> Result<(ExportRecord, bool), StoreError> {
        let active_key = format!(
            "{}|{}|{}",
            n.campaign_id,
            n.export_type,
            n.date_key.as_deref().unwrap_or("")
        );
        // A few rounds: the active export we collided with may finish between
        // our insert and our read.
        for _ in 0..5 {
            let id = ObjectId::new();
            let d = doc! {
                "_id": id,
                "campaignId": &n.campaign_id,
                "campaignName": &n.campaign_name,
                "exportType": &n.export_type,
                "status": Status::Pending.as_str(),
                "requesterUserId": &n.requester_user_id,
                "correlation": &n.correlation,
                "dateKey": n.date_key.clone().map(Bson::String).unwrap_or(Bson::Null),
                "includeAllMarkets": n.include_all_markets,
                "compression": n.compression.clone().unwrap_or_else(|| "none".into()),
                "date": {
                    "created": DateTime::now(),
                    "triggered": Bson::Null, "finished": Bson::Null,
                    "failed": Bson::Null, "expired": Bson::Null,
                },
                "key": Bson::Null,
                "count": Bson::Null,
                "error": Bson::Null,
                "activeKey": &active_key,
                "attempts": 0,
                "progress": { "rowsWritten": 0i64, "bytesWritten": 0i64, "expectedRows": Bson::Null },
            };
            match self.coll().insert_one(d.clone()).await {
                Ok(_) => {
                    self.enqueued.notify_one();
                    return Ok((decode(d)?, true));
                }
                Err(e) if is_duplicate_key(&e) => {
                    if let Some(existing) = self
                        .coll()
                        .find_one(doc! { "activeKey": &active_key })
                        .await?
                    {
                        return Ok((decode(existing)?, false));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::custom("enqueue: active export kept changing"))
    }

    pub async fn get(
        &self,
        campaign_id: &str,
        id: ObjectId,
    ) -> Result<Option<ExportRecord>, StoreError> {
        match self
            .coll()
            .find_one(doc! { "_id": id, "campaignId": campaign_id })
            .await?
        {
            Some(d) => Ok(Some(decode(d)?)),
            None => Ok(None),
        }
    }

    pub async fn by_id(&self, id: ObjectId) -> Result<Option<ExportRecord>, StoreError> {
        match self.coll().find_one(doc! { "_id": id }).await? {
            Some(d) => Ok(Some(decode(d)?)),
            None => Ok(None),
        }
    }

    /// One page of a campaign's exports and the total matching.
    pub async fn list(
        &self,
        campaign_id: &str,
        q: &ListQuery,
    ) -> Result<(Vec<ExportRecord>, u64), StoreError> {
        let mut filter = doc! { "campaignId": campaign_id };
        if let Some(t) = &q.export_type {
            filter.insert("exportType", t);
        }
        let total = self.coll().count_documents(filter.clone()).await?;
        let dir = if q.ascending { 1 } else { -1 };
        let docs: Vec<Document> = self
            .coll()
            .find(filter)
            // `_id` breaks ties so pages never overlap.
            .sort(doc! { q.sort_field: dir, "_id": dir })
            .skip((q.page - 1) * q.limit)
            .limit(q.limit as i64)
            .await?
            .try_collect()
            .await?;
        let list = docs.into_iter().map(decode).collect::<Result<_, _>>()?;
        Ok((list, total))
    }

    /// Claim the oldest claimable export: first one whose lease lapsed (its
    /// owner died), else the oldest PENDING. `bool` = it was a reclaim.
    pub async fn claim(
        &self,
        owner: &str,
        lease: Duration,
        max_attempts: u32,
    ) -> Result<Option<(ExportRecord, bool)>, StoreError> {
        let now = now_ms();
        let lapsed = doc! {
            "status": Status::Triggered.as_str(),
            "lease.expiresAtMs": { "$lt": now },
            "attempts": { "$lt": max_attempts as i32 },
        };
        // A handed-back export waits until its `retryAtMs` (fresh and
        // legacy records have none). Two filters rather than one `$or`: the
        // nx-27017 stand-in drops the other conditions of a
        // findOneAndUpdate filter holding an `$or`.
        let due = doc! { "status": Status::Pending.as_str(), "retryAtMs": { "$lte": now } };
        let fresh = doc! { "status": Status::Pending.as_str(), "retryAtMs": { "$exists": false } };
        for (filter, reclaim) in [(lapsed, true), (due, false), (fresh, false)] {
            let update = doc! {
                "$set": {
                    "status": Status::Triggered.as_str(),
                    "lease": { "owner": owner, "expiresAtMs": now + lease.as_millis() as i64 },
                    "progress.rowsWritten": 0i64,
                    "progress.bytesWritten": 0i64,
                },
                "$unset": { "retryAtMs": "", "retryAt": "" },
                "$inc": { "attempts": 1 },
                "$currentDate": { "date.triggered": true },
            };
            let got = self
                .coll()
                .find_one_and_update(filter, update)
                .sort(doc! { "date.created": 1 })
                .return_document(ReturnDocument::After)
                .await?;
            if let Some(d) = got {
                return Ok(Some((decode(d)?, reclaim)));
            }
        }
        Ok(None)
    }

    /// Apply `update` only while `owner` holds the export's lease. `false`
    /// means the lease was lost (expired, reclaimed, or finished elsewhere).
    async fn owned_update(
        &self,
        id: ObjectId,
        owner: &str,
        update: Document,
    ) -> Result<bool, StoreError> {
        let got = self
            .coll()
            .find_one_and_update(
                doc! { "_id": id, "status": Status::Triggered.as_str(), "lease.owner": owner },
                update,
            )
            .projection(doc! { "_id": 1 })
            .await?;
        Ok(got.is_some())
    }

    /// Renew the lease and publish progress.
    pub async fn heartbeat(
        &self,
        id: ObjectId,
        owner: &str,
        lease: Duration,
        rows: u64,
        bytes: u64,
    ) -> Result<bool, StoreError> {
        self.owned_update(
            id,
            owner,
            doc! { "$set": {
                "lease.expiresAtMs": now_ms() + lease.as_millis() as i64,
                "progress.rowsWritten": rows as i64,
                "progress.bytesWritten": bytes as i64,
            }},
        )
        .await
    }

    pub async fn set_expected_rows(
        &self,
        id: ObjectId,
        owner: &str,
        n: Option<u64>,
    ) -> Result<bool, StoreError> {
        let v = n.map(|n| Bson::Int64(n as i64)).unwrap_or(Bson::Null);
        // `count` holds the preliminary count while TRIGGERED, as the
        // original stored it; `finish` replaces it with the rows written.
        self.owned_update(
            id,
            owner,
            doc! { "$set": { "progress.expectedRows": v.clone(), "count": v } },
        )
        .await
    }

    pub async fn record_upload(
        &self,
        id: ObjectId,
        owner: &str,
        up: Option<&UploadRef>,
    ) -> Result<bool, StoreError> {
        let update = match up {
            Some(u) => doc! { "$set": { "upload": bson::to_bson(u).unwrap_or(Bson::Null) } },
            None => doc! { "$unset": { "upload": "" } },
        };
        self.owned_update(id, owner, update).await
    }

    /// Mark FINISHED with the object key(s), the row count, and the
    /// object's digest and size (single-object exports; per file in
    /// `meta.files` otherwise).
    pub async fn finish(
        &self,
        id: ObjectId,
        owner: &str,
        done: &Finished,
    ) -> Result<bool, StoreError> {
        let mut set = doc! {
            "status": Status::Finished.as_str(),
            "key": done.key.clone(),
            "count": done.rows as i64,
            "progress.rowsWritten": done.rows as i64,
            "progress.bytesWritten": done.bytes as i64,
            "error": Bson::Null,
        };
        if let Some(h) = &done.sha256 {
            set.insert("sha256", h);
            set.insert("bytes", done.bytes as i64);
        }
        if !done.meta.is_empty() {
            set.insert("meta", done.meta.clone());
        }
        self.owned_update(
            id,
            owner,
            doc! { "$set": set, "$currentDate": { "date.finished": true }, "$unset": inactive_unset() },
        )
        .await
    }

    /// Mark FAILED with a reason (no stack trace, no PII). `key`: an
    /// object the export did commit (a failed TMOL publish leaves its main
    /// object): recorded so CCPA and operators find it.
    pub async fn fail(
        &self,
        id: ObjectId,
        owner: &str,
        message: &str,
        payload: Option<Bson>,
        key: Option<Bson>,
    ) -> Result<bool, StoreError> {
        let mut set = doc! {
            "status": Status::Failed.as_str(),
            "error": { "message": message, "payload": payload.unwrap_or(Bson::Null) },
        };
        if let Some(k) = key {
            set.insert("key", k);
        }
        self.owned_update(
            id,
            owner,
            doc! {
                "$set": set,
                "$currentDate": { "date.failed": true },
                "$unset": inactive_unset(),
            },
        )
        .await
    }

    /// Hand the export back after a failure that may pass (spec:
    /// exports.md, Failures): PENDING, not claimable before `retry_at_ms`,
    /// with the error so far. The attempt counts.
    pub async fn retry_later(
        &self,
        id: ObjectId,
        owner: &str,
        retry_at_ms: i64,
        message: &str,
        payload: Document,
    ) -> Result<bool, StoreError> {
        self.owned_update(
            id,
            owner,
            doc! {
                "$set": {
                    "status": Status::Pending.as_str(),
                    // Epoch ms for the claim filter (a future BSON date
                    // cannot be `$set` portably: local-stand-ins.md).
                    "retryAtMs": retry_at_ms,
                    // For people reading the record (the spec's `retryAt`).
                    "retryAt": DateTime::from_millis(retry_at_ms),
                    "error": { "message": message, "payload": payload },
                },
                "$unset": { "lease": "", "upload": "" },
            },
        )
        .await
    }

    /// Hand the export back to the queue (status PENDING). `count_attempt =
    /// false` for a drain, which is not the export's fault.
    pub async fn release(
        &self,
        id: ObjectId,
        owner: &str,
        count_attempt: bool,
    ) -> Result<bool, StoreError> {
        let mut update = doc! {
            "$set": { "status": Status::Pending.as_str() },
            "$unset": { "lease": "", "upload": "" },
        };
        if !count_attempt {
            update.insert("$inc", doc! { "attempts": -1 });
        }
        self.owned_update(id, owner, update).await
    }

    /// Exports TRIGGERED for longer than `timeout` become EXPIRED. Returns
    /// them as they were (their open uploads need aborting).
    pub async fn expire_overdue(&self, timeout: Duration) -> Result<Vec<ExportRecord>, StoreError> {
        let cutoff = DateTime::from_millis(now_ms() - timeout.as_millis() as i64);
        let overdue =
            doc! { "status": Status::Triggered.as_str(), "date.triggered": { "$lt": cutoff } };
        self.sweep(
            overdue,
            doc! {
                "$set": { "status": Status::Expired.as_str() },
                "$currentDate": { "date.expired": true },
                "$unset": inactive_unset(),
            },
        )
        .await
    }

    /// Exports whose lease lapsed after their last allowed claim become
    /// FAILED with the reason.
    pub async fn fail_exhausted(&self, max_attempts: u32) -> Result<Vec<ExportRecord>, StoreError> {
        let filter = doc! {
            "status": Status::Triggered.as_str(),
            "lease.expiresAtMs": { "$lt": now_ms() },
            "attempts": { "$gte": max_attempts as i32 },
        };
        let msg = format!(
            "gave up after {max_attempts} attempts: the worker running the export stopped without finishing it"
        );
        self.sweep(
            filter,
            doc! {
                "$set": { "status": Status::Failed.as_str(), "error": { "message": msg, "payload": { "attempts": max_attempts as i32 } } },
                "$currentDate": { "date.failed": true },
                "$unset": inactive_unset(),
            },
        )
        .await
    }

    /// Move every document matching `filter` with `update`, one atomic
    /// `findOneAndUpdate` each, returning the documents as they were.
    async fn sweep(
        &self,
        filter: Document,
        update: Document,
    ) -> Result<Vec<ExportRecord>, StoreError> {
        let mut out = Vec::new();
        // Bounded: a sweep runs every poll, so a backlog drains over polls.
        for _ in 0..100 {
            let got = self
                .coll()
                .find_one_and_update(filter.clone(), update.clone())
                .return_document(ReturnDocument::Before)
                .await?;
            match got {
                Some(d) => out.push(decode(d)?),
                None => break,
            }
        }
        Ok(out)
    }

    /// Every export of the given campaigns (CCPA), read to its confirmed
    /// end: an export missed here would keep a deleted user's rows.
    pub async fn of_campaigns(
        &self,
        campaign_ids: &[String],
    ) -> Result<Vec<ExportRecord>, StoreError> {
        if campaign_ids.is_empty() {
            return Ok(Vec::new());
        }
        // One campaign (CCPA asks per campaign) is an equality: what an
        // index serves on the stand-in as on MongoDB.
        let filter = match campaign_ids {
            [one] => doc! { "campaignId": one },
            many => doc! { "campaignId": { "$in": many } },
        };
        let mut reader = crate::store::Reader::new(&self.store, "exports", filter, "_id");
        let mut out = Vec::new();
        loop {
            let batch = reader.next_batch().await?;
            if batch.is_empty() {
                return Ok(out);
            }
            for d in &batch {
                out.push(decode(crate::store::lossy_document(d))?);
            }
        }
    }

    /// Mark exports `deleted` (their objects are gone; the record stays as
    /// an audit trail). Only those not already marked count.
    pub async fn mark_deleted(&self, ids: &[ObjectId]) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let r = self
            .coll()
            .update_many(
                doc! { "_id": { "$in": ids }, "deleted": { "$ne": true } },
                doc! { "$set": { "deleted": true }, "$currentDate": { "date.deleted": true } },
            )
            .await?;
        Ok(r.modified_count)
    }

    /// Counts by status for the queue-depth gauge.
    pub async fn depth(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let mut cur = self
            .coll()
            .aggregate([
                doc! { "$match": { "status": { "$in": [Status::Pending.as_str(), Status::Triggered.as_str()] } } },
                doc! { "$group": { "_id": "$status", "n": { "$sum": 1 } } },
            ])
            .await?;
        let mut out = vec![
            (Status::Pending.as_str().to_string(), 0),
            (Status::Triggered.as_str().to_string(), 0),
        ];
        while let Some(d) = cur.try_next().await? {
            let status = d.get_str("_id").unwrap_or_default();
            let n = match d.get("n") {
                Some(Bson::Int32(n)) => *n as i64,
                Some(Bson::Int64(n)) => *n,
                Some(Bson::Double(n)) => *n as i64,
                _ => 0,
            };
            if let Some(slot) = out.iter_mut().find(|(s, _)| s == status) {
                slot.1 = n;
            }
        }
        Ok(out)
    }

    /// Seconds the oldest PENDING export has waited since it was created (0
    /// when none waits): the backlog-age gauge and CloudWatch datum. A
    /// handed-back or retried export keeps its creation time, so this is how
    /// long a campaign tool has been waiting, not how long since the last try.
    pub async fn oldest_pending_age(&self) -> Result<i64, StoreError> {
        let oldest = self
            .coll()
            .find_one(doc! { "status": Status::Pending.as_str() })
            .sort(doc! { "date.created": 1 })
            .await?;
        let Some(d) = oldest else { return Ok(0) };
        let created = decode(d)?.created().timestamp_millis();
        // A clock ahead of ours is not a negative wait.
        Ok((now_ms() - created).max(0) / 1000)
    }

    /// A CCPA deletion rewrote the export's object (a wave file without one
    /// user's rows): its digest, size and row count follow the object, so
    /// a download still checks out. Only while the record names `key`.
    pub async fn record_rewrite(
        &self,
        id: ObjectId,
        key: &str,
        sha256: &str,
        bytes: u64,
        rows: u64,
    ) -> Result<bool, StoreError> {
        let r = self
            .coll()
            .update_one(
                doc! { "_id": id, "key": key },
                doc! { "$set": { "sha256": sha256, "bytes": bytes as i64, "count": rows as i64 } },
            )
            .await?;
        Ok(r.matched_count == 1)
    }
}
