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

use crate::sink::UploadRef;
use crate::store::{id_forms, id_match, id_string, Store, StoreError};

/// Export status, stored and returned as the original's upper-case names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
#[schema(as = ExportStatus)]
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

    /// The status of a stored name; anything but the original five is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Status::Pending,
            Status::Triggered,
            Status::Finished,
            Status::Failed,
            Status::Expired,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    /// Where an export's life ends.
    pub const FINAL: [Status; 3] = [Status::Finished, Status::Failed, Status::Expired];

    /// PENDING or TRIGGERED.
    pub fn is_active(self) -> bool {
        matches!(self, Status::Pending | Status::Triggered)
    }
}

/// The dates of an export's life: BSON dates in MongoDB. Records the
/// original service (or a hand import) left with RFC 3339 strings or epoch
/// milliseconds are read as the same instants.
#[derive(Debug, Clone, Default)]
pub struct Dates {
    pub created: Option<DateTime>,
    pub triggered: Option<DateTime>,
    pub finished: Option<DateTime>,
    pub failed: Option<DateTime>,
    pub expired: Option<DateTime>,
    pub deleted: Option<DateTime>,
}

#[derive(Debug, Clone)]
pub struct Lease {
    pub owner: String,
    pub expires_at_ms: i64,
}

#[derive(Debug, Clone, Default)]
pub struct Progress {
    pub rows_written: i64,
    pub bytes_written: i64,
    pub expected_rows: Option<i64>,
    /// Rows the current attempt did not read again: it continued a
    /// checkpoint holding them (0: from the start).
    pub resumed_from_row: i64,
}

/// Why an export failed. The original stored `error` as a document (with
/// a `stack`, which is never read) or, in places, as a bare string.
#[derive(Debug, Clone)]
pub struct ErrorInfo {
    pub message: String,
    pub payload: Option<Bson>,
}

/// One export document (spec: exports.md "Export document"), decoded by
/// [`ExportRecord::from_document`].
#[derive(Debug, Clone)]
pub struct ExportRecord {
    pub id: ObjectId,
    pub campaign_id: String,
    pub campaign_name: String,
    pub export_type: String,
    pub status: Status,
    pub requester_user_id: Option<String>,
    pub correlation: Option<String>,
    pub date_key: Option<String>,
    pub include_all_markets: bool,
    pub compression: Option<String>,
    pub date: Dates,
    /// The object key (a string), or the keys of a multi-object export.
    pub key: Option<Bson>,
    pub count: Option<i64>,
    pub meta: Option<Document>,
    pub error: Option<ErrorInfo>,
    pub lease: Option<Lease>,
    pub active_key: Option<String>,
    pub attempts: i32,
    pub upload: Option<UploadRef>,
    pub progress: Option<Progress>,
    pub deleted: bool,
    /// A handed-back export's earliest next claim (epoch ms).
    pub retry_at_ms: Option<i64>,
    /// Hex SHA-256 and size of a FINISHED single-object export.
    pub sha256: Option<String>,
    pub bytes: Option<i64>,
    /// The last checkpoint of a resumable export's open upload.
    pub checkpoint: Option<crate::sink::Checkpoint>,
}

/// A stored export record that cannot be used at all: no `_id` (or not an
/// ObjectId, so no route can address it), or no usable `campaignId`,
/// `exportType` or `status`. Readers skip it with a warning naming its
/// `_id`; it never fails a route or a command.
#[derive(Debug, Clone, thiserror::Error)]
#[error("export record {id} is unreadable: {why}")]
pub struct Unreadable {
    /// The `_id` as stored, as text.
    pub id: String,
    pub why: &'static str,
}

/// Tolerant reads of one document's fields: records written by the
/// original service carry other types than ours (numbers as strings,
/// ObjectId ids, dates as strings). A value that cannot be read as the
/// wanted type reads as absent.
#[derive(Clone, Copy)]
struct Lenient<'a>(&'a Document);

impl<'a> Lenient<'a> {
    /// Text from a string, an ObjectId (hex) or an integral number.
    fn text(self, k: &str) -> Option<String> {
        match self.0.get(k)? {
            Bson::String(s) => Some(s.clone()),
            Bson::ObjectId(o) => Some(o.to_hex()),
            Bson::Int32(n) => Some(n.to_string()),
            Bson::Int64(n) => Some(n.to_string()),
            Bson::Double(x) if x.is_finite() && x.fract() == 0.0 => Some((*x as i64).to_string()),
            _ => None,
        }
    }

    /// A number from any numeric type or a numeric string.
    fn int(self, k: &str) -> Option<i64> {
        match self.0.get(k)? {
            Bson::Int32(n) => Some(i64::from(*n)),
            Bson::Int64(n) => Some(*n),
            Bson::Double(x) if x.is_finite() => Some(*x as i64),
            Bson::String(s) => {
                let s = s.trim();
                s.parse::<i64>().ok().or_else(|| {
                    s.parse::<f64>()
                        .ok()
                        .filter(|x| x.is_finite())
                        .map(|x| x as i64)
                })
            }
            _ => None,
        }
    }

    /// A flag from a boolean, a number (non-zero) or `"true"`/`"1"`; some
    /// writers (and the nx-27017 stand-in) store `true` as 1.
    fn flag(self, k: &str) -> bool {
        match self.0.get(k) {
            Some(Bson::Boolean(b)) => *b,
            Some(Bson::Int32(n)) => *n != 0,
            Some(Bson::Int64(n)) => *n != 0,
            Some(Bson::String(s)) => s.eq_ignore_ascii_case("true") || s == "1",
            _ => false,
        }
    }

    /// A date from a BSON date, an RFC 3339 string or epoch milliseconds.
    fn date(self, k: &str) -> Option<DateTime> {
        match self.0.get(k)? {
            Bson::DateTime(d) => Some(*d),
            Bson::String(s) => DateTime::parse_rfc3339_str(s.trim()).ok(),
            Bson::Int64(n) => Some(DateTime::from_millis(*n)),
            Bson::Int32(n) => Some(DateTime::from_millis(i64::from(*n))),
            Bson::Double(x) if x.is_finite() => Some(DateTime::from_millis(*x as i64)),
            _ => None,
        }
    }

    fn doc(self, k: &str) -> Option<&'a Document> {
        self.0.get_document(k).ok()
    }
}

impl Dates {
    fn from_document(d: &Document) -> Self {
        let f = Lenient(d);
        Self {
            created: f.date("created"),
            triggered: f.date("triggered"),
            finished: f.date("finished"),
            failed: f.date("failed"),
            expired: f.date("expired"),
            deleted: f.date("deleted"),
        }
    }
}

impl Lease {
    fn from_document(d: &Document) -> Option<Self> {
        let f = Lenient(d);
        Some(Self {
            owner: f.text("owner")?,
            expires_at_ms: f.int("expiresAtMs")?,
        })
    }
}

impl Progress {
    fn from_document(d: &Document) -> Self {
        let f = Lenient(d);
        Self {
            rows_written: f.int("rowsWritten").unwrap_or(0),
            bytes_written: f.int("bytesWritten").unwrap_or(0),
            expected_rows: f.int("expectedRows"),
            resumed_from_row: f.int("resumedFromRow").unwrap_or(0),
        }
    }
}

/// The upload recorded on an export; `None` without a bucket and a key:
/// nothing could be aborted.
pub fn upload_ref(d: &Document) -> Option<UploadRef> {
    let f = Lenient(d);
    Some(UploadRef {
        bucket: f.text("bucket").filter(|s| !s.is_empty())?,
        key: f.text("key").filter(|s| !s.is_empty())?,
        upload_id: f.text("uploadId"),
    })
}

impl ErrorInfo {
    fn from_bson(b: &Bson) -> Option<Self> {
        match b {
            Bson::String(s) => Some(Self {
                message: s.clone(),
                payload: None,
            }),
            Bson::Document(d) => Some(Self {
                message: Lenient(d).text("message").unwrap_or_default(),
                payload: d
                    .get("payload")
                    .filter(|p| !matches!(p, Bson::Null))
                    .cloned(),
            }),
            _ => None,
        }
    }
}

impl ExportRecord {
    /// Decode a stored record, ours or the original service's. Only what
    /// no route could work without is required (see [`Unreadable`]);
    /// every other field is read tolerantly or defaults. One line per
    /// field: a new field is one line here.
    pub fn from_document(d: &Document) -> Result<Self, Unreadable> {
        let f = Lenient(d);
        let unreadable = |why| Unreadable {
            id: match d.get("_id") {
                Some(b) => id_string(Some(b)),
                None => "(no _id)".into(),
            },
            why,
        };
        let id = match d.get("_id") {
            Some(Bson::ObjectId(o)) => *o,
            None => return Err(unreadable("it has no _id")),
            Some(_) => return Err(unreadable("its _id is not an ObjectId")),
        };
        let required = |k, why| {
            f.text(k)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| unreadable(why))
        };
        let campaign_id = required("campaignId", "it has no usable campaignId")?;
        let export_type = required("exportType", "it has no usable exportType")?;
        let status = d
            .get_str("status")
            .ok()
            .and_then(Status::parse)
            .ok_or_else(|| {
                unreadable("its status is not PENDING, TRIGGERED, FINISHED, FAILED or EXPIRED")
            })?;
        Ok(Self {
            id,
            campaign_id,
            export_type,
            status,
            campaign_name: f.text("campaignName").unwrap_or_default(),
            requester_user_id: f.text("requesterUserId"),
            correlation: f.text("correlation"),
            date_key: f.text("dateKey"),
            include_all_markets: f.flag("includeAllMarkets"),
            compression: f.text("compression"),
            date: f.doc("date").map(Dates::from_document).unwrap_or_default(),
            key: match d.get("key") {
                Some(Bson::String(k)) => Some(Bson::String(k.clone())),
                Some(Bson::Array(a)) => Some(Bson::Array(
                    a.iter()
                        .filter(|k| matches!(k, Bson::String(_)))
                        .cloned()
                        .collect(),
                )),
                _ => None,
            },
            count: f.int("count"),
            meta: f.doc("meta").cloned(),
            error: d.get("error").and_then(ErrorInfo::from_bson),
            lease: f.doc("lease").and_then(Lease::from_document),
            active_key: f.text("activeKey"),
            attempts: f.int("attempts").unwrap_or(0).clamp(0, i64::from(i32::MAX)) as i32,
            upload: f.doc("upload").and_then(upload_ref),
            progress: f.doc("progress").map(Progress::from_document),
            deleted: f.flag("deleted"),
            retry_at_ms: f.int("retryAtMs"),
            sha256: f.text("sha256"),
            bytes: f.int("bytes"),
            // Ours and written whole; one that does not decode is no
            // checkpoint (the export starts again).
            checkpoint: f
                .doc("checkpoint")
                .and_then(|c| bson::from_document(c.clone()).ok()),
        })
    }

    /// Creation time, for key naming (stable across attempts); the `_id`'s
    /// own time when a record has no readable `date.created`.
    pub fn created(&self) -> DateTime {
        self.date.created.unwrap_or_else(|| self.id.timestamp())
    }
    pub fn gzip(&self) -> bool {
        self.compression.as_deref() == Some("gzip")
    }
    /// `campaignId|exportType|dateKey`: the dedupe key of an active export.
    pub fn active_key_value(&self) -> String {
        active_key(
            &self.campaign_id,
            &self.export_type,
            self.date_key.as_deref(),
        )
    }
}

/// The dedupe key of an active export (see the module doc).
pub fn active_key(campaign_id: &str, export_type: &str, date_key: Option<&str>) -> String {
    format!("{campaign_id}|{export_type}|{}", date_key.unwrap_or(""))
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
    ExportRecord::from_document(&d).map_err(|e| StoreError::custom(e.to_string()))
}

/// Decode `d`, or log a warning naming its `_id` and skip it: a reader of
/// many records never fails on one it cannot understand.
fn readable(d: Document) -> Option<ExportRecord> {
    match ExportRecord::from_document(&d) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(export_id = %e.id, reason = e.why, "unreadable export record skipped");
            None
        }
    }
}

/// Fields an export leaves behind when it stops being active.
fn inactive_unset() -> Document {
    doc! { "activeKey": "", "lease": "", "upload": "", "checkpoint": "" }
}

/// What a hand-back removes: the lease, and the upload with its
/// checkpoint unless the next attempt continues them.
fn released_unset(keep_upload: bool) -> Document {
    if keep_upload {
        doc! { "lease": "" }
    } else {
        doc! { "lease": "", "upload": "", "checkpoint": "" }
    }
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
        let active_key = active_key(&n.campaign_id, &n.export_type, n.date_key.as_deref());
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
        // Either stored form of the campaign id: the original's records
        // may hold an ObjectId. An unreadable record reads as absent.
        let filter = doc! { "_id": id, "campaignId": id_match(campaign_id) };
        Ok(self.coll().find_one(filter).await?.and_then(readable))
    }

    pub async fn by_id(&self, id: ObjectId) -> Result<Option<ExportRecord>, StoreError> {
        Ok(self
            .coll()
            .find_one(doc! { "_id": id })
            .await?
            .and_then(readable))
    }

    /// One page of a campaign's exports and the total matching.
    pub async fn list(
        &self,
        campaign_id: &str,
        q: &ListQuery,
    ) -> Result<(Vec<ExportRecord>, u64), StoreError> {
        let mut filter = doc! { "campaignId": id_match(campaign_id) };
        if let Some(t) = &q.export_type {
            filter.insert("exportType", t);
        }
        // `$match` + `$group`, not `count_documents`, which nx-27017 gets
        // wrong for some filters; the same count on MongoDB. It counts the
        // stored records, unreadable ones included (they are skipped from
        // the page), so pages stay where `page`/`limit` put them.
        let total = self.store.count("exports", filter.clone()).await?;
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
        Ok((docs.into_iter().filter_map(readable).collect(), total))
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
                    "progress.resumedFromRow": 0i64,
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
        let mut set = doc! { "lease.expiresAtMs": now_ms() + lease.as_millis() as i64 };
        // Nothing written yet (the attempt is still counting): the progress
        // a continued export shows stays its checkpoint's.
        if rows > 0 || bytes > 0 {
            set.insert("progress.rowsWritten", rows as i64);
            set.insert("progress.bytesWritten", bytes as i64);
        }
        self.owned_update(id, owner, doc! { "$set": set }).await
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
        keep_upload: bool,
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
                "$unset": released_unset(keep_upload),
            },
        )
        .await
    }

    /// Record a resumable export's checkpoint (the part's ETag with it),
    /// while `owner` holds the lease.
    pub async fn checkpoint(
        &self,
        id: ObjectId,
        owner: &str,
        cp: &crate::sink::Checkpoint,
    ) -> Result<bool, StoreError> {
        let cp_bson = bson::to_bson(cp).map_err(|e| StoreError::custom(e.to_string()))?;
        self.owned_update(id, owner, doc! { "$set": { "checkpoint": cp_bson } })
            .await
    }

    /// This attempt continues a checkpoint holding `rows` rows.
    pub async fn resumed_from(
        &self,
        id: ObjectId,
        owner: &str,
        rows: u64,
    ) -> Result<bool, StoreError> {
        self.owned_update(
            id,
            owner,
            doc! { "$set": {
                "progress.resumedFromRow": rows as i64,
                "progress.rowsWritten": rows as i64,
            } },
        )
        .await
    }

    /// Forget a checkpoint that cannot be continued (its upload is gone or
    /// differs): the export starts again.
    pub async fn drop_checkpoint(&self, id: ObjectId, owner: &str) -> Result<bool, StoreError> {
        self.owned_update(
            id,
            owner,
            doc! { "$unset": { "checkpoint": "", "upload": "" } },
        )
        .await
    }

    /// Hand the export back to the queue (status PENDING). `count_attempt =
    /// false` for a drain, which is not the export's fault. `keep_upload`:
    /// the upload stays open at the recorded checkpoint, and the next
    /// attempt continues it.
    pub async fn release(
        &self,
        id: ObjectId,
        owner: &str,
        count_attempt: bool,
        keep_upload: bool,
    ) -> Result<bool, StoreError> {
        let mut update = doc! {
            "$set": { "status": Status::Pending.as_str() },
            "$unset": released_unset(keep_upload),
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
                // Moved all the same; only its report is skipped.
                Some(d) => out.extend(readable(d)),
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
        // Every stored form of each id (the original's records may hold
        // ObjectId campaign ids, and their objects must go too), read to
        // its confirmed end (their `_id`s may be of any type: a count
        // confirms it, not a keyset); one form is an equality, what an index serves
        // on the stand-in as on MongoDB.
        let mut forms: Vec<Bson> = campaign_ids.iter().flat_map(|c| id_forms(c)).collect();
        let filter = if forms.len() == 1 {
            doc! { "campaignId": forms.remove(0) }
        } else {
            doc! { "campaignId": { "$in": forms } }
        };
        let docs = self.store.read_all("exports", filter, None).await?;
        Ok(docs
            .iter()
            .filter_map(|d| readable(crate::store::lossy_document(d)))
            .collect())
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
    pub async fn depth(&self) -> Result<Vec<(Status, i64)>, StoreError> {
        let mut cur = self
            .coll()
            .aggregate([
                doc! { "$match": { "status": { "$in": [Status::Pending.as_str(), Status::Triggered.as_str()] } } },
                doc! { "$group": { "_id": "$status", "n": { "$sum": 1 } } },
            ])
            .await?;
        let mut out = vec![(Status::Pending, 0), (Status::Triggered, 0)];
        while let Some(d) = cur.try_next().await? {
            let status = d.get_str("_id").ok().and_then(Status::parse);
            let n = match d.get("n") {
                Some(Bson::Int32(n)) => *n as i64,
                Some(Bson::Int64(n)) => *n,
                Some(Bson::Double(n)) => *n as i64,
                _ => 0,
            };
            if let Some(slot) = out.iter_mut().find(|(s, _)| Some(*s) == status) {
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
        // An unreadable record still waits: its `_id`'s time.
        let created = match ExportRecord::from_document(&d) {
            Ok(r) => r.created(),
            Err(_) => match d.get("_id") {
                Some(Bson::ObjectId(o)) => o.timestamp(),
                _ => return Ok(0),
            },
        }
        .timestamp_millis();
        // A clock ahead of ours is not a negative wait.
        Ok((now_ms() - created).max(0) / 1000)
    }

    // Cutover and operator functions (issue #16): raw reads for callers
    // that report unreadable records themselves, cancel, and `migrate`.

    /// Stored records matching `filter` in `sort` order, undecoded: the
    /// operator CLI and `migrate` decode each one and report (not just
    /// log) the ones they cannot read.
    pub async fn raw_cursor(
        &self,
        filter: Document,
        sort: Document,
        projection: Option<Document>,
    ) -> Result<mongodb::Cursor<Document>, StoreError> {
        let coll = self.coll();
        // An operator's unfiltered listing sorts the whole collection:
        // let MongoDB before 6.0 spill past its 100 MB in-memory sort limit.
        let mut find = coll.find(filter).sort(sort).allow_disk_use(true);
        if let Some(p) = projection {
            find = find.projection(p);
        }
        Ok(find.await?)
    }

    /// One stored record, undecoded; within `campaign_id` when given.
    pub async fn raw(
        &self,
        id: ObjectId,
        campaign_id: Option<&str>,
    ) -> Result<Option<Document>, StoreError> {
        Ok(self.coll().find_one(scoped(id, campaign_id)).await?)
    }

    /// Cancel an active export: PENDING or TRIGGERED becomes FAILED with
    /// `error.payload.code = Cancelled` (a status the original knows, so a
    /// rollback reads it). The lease goes, so a running worker's next
    /// renewal (conditional on TRIGGERED and its own lease) fails and its
    /// run stops as for a lost lease. `upload` stays until
    /// [`Queue::forget_upload`]: the caller aborts it, and a repeated
    /// cancel retries that. Returns the record as it was; `None` when it
    /// was not active (or does not exist).
    pub async fn cancel(
        &self,
        id: ObjectId,
        campaign_id: Option<&str>,
        by: &str,
    ) -> Result<Option<Document>, StoreError> {
        let mut filter = scoped(id, campaign_id);
        filter.insert(
            "status",
            doc! { "$in": [Status::Pending.as_str(), Status::Triggered.as_str()] },
        );
        let update = doc! {
            "$set": {
                "status": Status::Failed.as_str(),
                "error": {
                    "message": "export cancelled",
                    "payload": { "code": crate::error::Code::Cancelled.as_str(), "cancelledBy": by },
                },
            },
            "$currentDate": { "date.failed": true },
            "$unset": { "activeKey": "", "lease": "" },
        };
        Ok(self
            .coll()
            .find_one_and_update(filter, update)
            .return_document(ReturnDocument::Before)
            .await?)
    }

    /// The upload of a cancelled export was aborted: forget it.
    pub async fn forget_upload(&self, id: ObjectId) -> Result<(), StoreError> {
        self.coll()
            .update_one(
                doc! { "_id": id, "status": Status::Failed.as_str() },
                doc! { "$unset": { "upload": "", "checkpoint": "" } },
            )
            .await?;
        Ok(())
    }

    /// `migrate`: make a record the original left active one our queue
    /// rules cover, only if it is still as it was read (`status`, and
    /// without what is about to be set). `active_key` backfills the dedupe
    /// key. `lapse_lease` gives a TRIGGERED record without a lease a lapsed
    /// one, so a worker reclaims it (or the expiry sweep ends it), and
    /// `attempts: 1` (the original ran it once) when it has none.
    /// `migratedAt` marks what was written.
    pub async fn adopt_legacy(
        &self,
        id: ObjectId,
        status: Status,
        active_key: Option<&str>,
        lapse_lease: bool,
        set_attempts: bool,
    ) -> Result<Adopted, StoreError> {
        let mut filter = doc! { "_id": id, "status": status.as_str() };
        let mut set = Document::new();
        if let Some(k) = active_key {
            filter.insert("activeKey", doc! { "$exists": false });
            set.insert("activeKey", k);
        }
        if lapse_lease {
            filter.insert("lease.expiresAtMs", doc! { "$exists": false });
            set.insert(
                "lease",
                doc! { "owner": MIGRATE_LEASE_OWNER, "expiresAtMs": now_ms() },
            );
            if set_attempts {
                set.insert("attempts", 1);
            }
        }
        let update = doc! { "$set": set, "$currentDate": { "migratedAt": true } };
        match self.coll().update_one(filter, update).await {
            Ok(r) if r.matched_count == 1 => Ok(Adopted::Done),
            Ok(_) => Ok(Adopted::Changed),
            Err(e) if is_duplicate_key(&e) => Ok(Adopted::KeyTaken),
            Err(e) => Err(e.into()),
        }
    }
    /// `migrate`: a record in a final status still holding `activeKey`
    /// (after a rollback, the original finished an export vf-export had
    /// queued, and it does not know the field) would make a new POST of
    /// the same campaign/type return it: drop the key (and any lease).
    pub async fn release_stale_key(
        &self,
        id: ObjectId,
        status: Status,
        key: &str,
    ) -> Result<Adopted, StoreError> {
        let r = self
            .coll()
            .update_one(
                doc! { "_id": id, "status": status.as_str(), "activeKey": key },
                doc! { "$unset": { "activeKey": "", "lease": "" }, "$currentDate": { "migratedAt": true } },
            )
            .await?;
        Ok(if r.matched_count == 1 {
            Adopted::Done
        } else {
            Adopted::Changed
        })
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

/// The lease owner `migrate` writes on the original's TRIGGERED records.
pub const MIGRATE_LEASE_OWNER: &str = "vf-export-migrate";

/// What [`Queue::adopt_legacy`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adopted {
    Done,
    /// The record changed since it was read (a worker claimed it, it
    /// finished, or it was migrated meanwhile): nothing written.
    Changed,
    /// Another active export holds the same `activeKey`.
    KeyTaken,
}

/// `{_id}`, within a campaign (either stored form of its id) when given.
fn scoped(id: ObjectId, campaign_id: Option<&str>) -> Document {
    let mut filter = doc! { "_id": id };
    if let Some(c) = campaign_id {
        filter.insert("campaignId", id_match(c));
    }
    filter
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Document {
        doc! { "_id": ObjectId::new(), "campaignId": "c1", "exportType": "entries", "status": "FINISHED" }
    }

    fn with(extra: Document) -> Result<ExportRecord, Unreadable> {
        let mut d = base();
        d.extend(extra);
        ExportRecord::from_document(&d)
    }

    #[test]
    fn the_originals_other_types_are_read_as_ours() {
        let oid = ObjectId::new();
        let r = with(doc! {
            "campaignId": oid, "requesterUserId": oid, "count": "42", "dateKey": 20260101,
            "includeAllMarkets": "true", "attempts": 2.0, "key": ["a.csv", 5, "b.csv"],
            "date": { "created": "2026-01-02T03:04:05.678Z", "triggered": 1_767_225_600_000i64, "finished": "not a date" },
            "error": "it broke", "token": "eyJhbGciOi.secret", "unknown": { "x": 1 },
            "progress": { "rowsWritten": "7", "expectedRows": 9.0 },
            "lease": { "owner": "w1" }, "upload": { "bucket": "b" },
        })
        .unwrap();
        assert_eq!(r.campaign_id, oid.to_hex());
        assert_eq!(r.requester_user_id, Some(oid.to_hex()));
        assert_eq!(r.count, Some(42));
        assert_eq!(r.date_key.as_deref(), Some("20260101"));
        assert!(r.include_all_markets);
        assert_eq!(r.attempts, 2);
        assert_eq!(
            r.key,
            Some(Bson::Array(vec!["a.csv".into(), "b.csv".into()]))
        );
        assert_eq!(
            r.date.created.map(|d| d.timestamp_millis()),
            Some(1_767_323_045_678)
        );
        assert_eq!(
            r.date.triggered.map(|d| d.timestamp_millis()),
            Some(1_767_225_600_000)
        );
        assert!(r.date.finished.is_none());
        let e = r.error.as_ref().unwrap();
        assert_eq!((e.message.as_str(), &e.payload), ("it broke", &None));
        let p = r.progress.as_ref().unwrap();
        assert_eq!(
            (p.rows_written, p.bytes_written, p.expected_rows),
            (7, 0, Some(9))
        );
        // Half a lease or half an upload is none at all.
        assert!(r.lease.is_none() && r.upload.is_none());
        assert_eq!(
            r.active_key_value(),
            format!("{}|entries|20260101", oid.to_hex())
        );
    }

    #[test]
    fn an_error_document_keeps_message_and_payload_and_drops_the_stack() {
        let r = with(doc! { "error": { "message": "boom", "stack": "Error: boom\n at x.js:1", "payload": { "code": "X" } } })
            .unwrap();
        let e = r.error.unwrap();
        assert_eq!(e.message, "boom");
        assert_eq!(e.payload, Some(Bson::Document(doc! { "code": "X" })));
        assert!(with(doc! { "error": null }).unwrap().error.is_none());
    }

    #[test]
    fn a_record_without_what_every_route_needs_is_unreadable_naming_its_id() {
        let cases = [
            (doc! { "campaignId": null }, "campaignId"),
            (doc! { "campaignId": "" }, "campaignId"),
            (doc! { "campaignId": { "a": 1 } }, "campaignId"),
            (doc! { "exportType": null }, "exportType"),
            (doc! { "status": "RUNNING" }, "status"),
            (doc! { "status": "finished" }, "status"),
            (doc! { "status": 3 }, "status"),
        ];
        for (extra, what) in cases {
            let mut d = base();
            let id = d.get_object_id("_id").unwrap();
            d.extend(extra.clone());
            let e = ExportRecord::from_document(&d).unwrap_err();
            assert_eq!(e.id, id.to_hex(), "{extra}");
            assert!(e.why.contains(what), "{extra}: {}", e.why);
        }
        let mut d = base();
        d.remove("exportType");
        assert!(ExportRecord::from_document(&d).is_err());
        d = base();
        d.insert("_id", "legacy-1");
        let e = ExportRecord::from_document(&d).unwrap_err();
        assert_eq!(e.id, "legacy-1");
        d.remove("_id");
        assert!(ExportRecord::from_document(&d).is_err());
    }

    #[test]
    fn a_record_we_write_reads_back_whole() {
        let r = with(doc! {
            "campaignName": "Tour", "requesterUserId": "u1", "correlation": "c", "dateKey": null,
            "includeAllMarkets": false, "compression": "gzip", "count": 3i64,
            "date": { "created": DateTime::from_millis(5), "triggered": null },
            "key": "k.csv", "error": null, "activeKey": "c1|entries|", "attempts": 1,
            "lease": { "owner": "w", "expiresAtMs": 9i64 },
            "upload": { "bucket": "b", "key": "k", "uploadId": "u" },
            "deleted": 1,
        })
        .unwrap();
        assert_eq!(r.campaign_name, "Tour");
        assert!(r.gzip());
        assert_eq!(r.count, Some(3));
        assert_eq!(r.created(), DateTime::from_millis(5));
        assert!(r.date.triggered.is_none());
        assert_eq!(r.key, Some(Bson::String("k.csv".into())));
        assert_eq!(r.lease.unwrap().expires_at_ms, 9);
        assert_eq!(r.upload.unwrap().upload_id.as_deref(), Some("u"));
        assert!(r.deleted);
        assert_eq!(r.status, Status::Finished);
        // No date.created: the _id's own time.
        let r = with(doc! {}).unwrap();
        assert_eq!(r.created(), r.id.timestamp());
    }
}
