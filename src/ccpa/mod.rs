//! CCPA deletion (spec: exports.md "CCPA deletion", "Nothing left
//! behind"), without HTTP: the route (`src/http/ccpa.rs`) only checks the
//! caller and reports.
//!
//! For every campaign the user entered:
//! - every object an export of the campaign wrote is deleted (partner
//!   types aside): the main object(s), also of an export whose TMOL
//!   publish failed, and the TMOL copies (through the TMOL role); the
//!   record is then marked `deleted`, and only then, so nothing is marked
//!   that was not deleted;
//! - every wave file of the campaign is rewritten without the user's rows
//!   (`waves`), because `waitlist` reads them.
//!
//! Idempotent: a missing object counts as deleted, a record already marked
//! is not counted again, a wave file without the user's rows is left as it
//! is; so a retry after any failure completes the rest and a repeat
//! reports zeros. One audit record per request (`audit`).

pub mod audit;
mod lock;
pub mod waves;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use mongodb::bson::{doc, oid::ObjectId, Bson, Document};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use crate::exports::raw::text_at;
use crate::exports::{CcpaFiles, Registry};
use crate::queue::{ExportRecord, Queue, Status};
use crate::sink::Sinks;
use crate::store::{id_match, Reader, Store, StoreError};
use audit::{AuditLog, Rewrote};
use lock::ObjectLock;
use waves::{RewriteError, Rewritten, UserRows};

/// How long a request waits for a wave file another request is rewriting.
pub const LOCK_WAIT: Duration = Duration::from_secs(30);

/// Hex SHA-256 of a user id: what the audit record keeps instead of the id
/// (the same digest as the SFMC `SubscriberKey`).
pub fn user_id_sha256(user_id: &str) -> String {
    hex::encode(Sha256::digest(user_id.as_bytes()))
}

/// Who asks to delete whom.
#[derive(Debug, Clone)]
pub struct Request {
    pub user_id: String,
    /// The caller's `sub`.
    pub requested_by: String,
    pub correlation: String,
}

/// Export records marked `deleted` by one request, and their objects.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, ToSchema,
)]
#[schema(as = DeletedCount)]
pub struct Deleted {
    pub exports: u64,
    pub files: u64,
}

/// Wave files written back without the user's rows, and those rows.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, ToSchema,
)]
#[schema(as = RewrittenCount)]
pub struct Rewrites {
    pub files: u64,
    pub rows: u64,
}

/// What one request did (the route's response, in its field names).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = CcpaOutcome)]
pub struct Outcome {
    /// The audit record of this request (ours): `GET /ccpa/requests`.
    #[schema(pattern = "^[0-9a-f]{24}$")]
    pub request_id: String,
    /// Export records marked deleted by this request and their objects
    /// (zeros on a repeat).
    pub deleted_count: Deleted,
    /// Wave files rewritten without the user's rows (ours).
    pub rewritten: Rewrites,
    /// Exports of partner types (or of an unknown type) left alone.
    pub skipped: u64,
    /// PENDING/TRIGGERED exports left alone: repeat after they finish.
    pub in_flight: u64,
}

/// The deletion stopped short: `done` is what it did before (a retry
/// completes the rest). The message names buckets and keys, never the user.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CcpaError {
    pub message: String,
    pub done: Box<Outcome>,
}

/// Everything a deletion needs. Cheap to clone.
#[derive(Clone)]
pub struct Deletion {
    store: Store,
    queue: Queue,
    sinks: Sinks,
    registry: Registry,
    lock_wait: Duration,
}

impl Deletion {
    pub fn new(store: Store, queue: Queue, sinks: Sinks, registry: Registry) -> Self {
        Self {
            store,
            queue,
            sinks,
            registry,
            lock_wait: LOCK_WAIT,
        }
    }

    /// Wait at most `d` for a wave file another request holds.
    pub fn lock_wait(mut self, d: Duration) -> Self {
        self.lock_wait = d;
        self
    }

    /// Open the request's audit record: from here on it has an id.
    pub async fn begin(&self, req: Request) -> Result<Job, CcpaError> {
        match AuditLog::open(
            &self.store,
            &user_id_sha256(&req.user_id),
            &req.requested_by,
            &req.correlation,
        )
        .await
        {
            Ok(audit) => Ok(Job {
                d: self.clone(),
                req,
                outcome: Outcome {
                    request_id: audit.id().to_hex(),
                    ..Outcome::default()
                },
                audit,
                failures: Vec::new(),
            }),
            Err(e) => {
                tracing::error!(error = %e, "CCPA deletion: the audit record could not be written");
                Err(CcpaError {
                    message: DB_FAILED.into(),
                    done: Box::default(),
                })
            }
        }
    }
}

const DB_FAILED: &str =
    "the database failed during the deletion; repeat the request to complete it";

/// One object to delete.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Target {
    bucket: String,
    key: String,
}

/// One request's deletion, from its audit record to its outcome.
pub struct Job {
    d: Deletion,
    req: Request,
    outcome: Outcome,
    audit: AuditLog,
    /// S3 failures met so far; the work goes on, and the request fails.
    failures: Vec<String>,
}

impl Job {
    pub fn request_id(&self) -> &str {
        &self.outcome.request_id
    }

    /// Run to the end (or the first database failure), then close the
    /// audit record.
    pub async fn run(mut self) -> Result<Outcome, CcpaError> {
        let message = match self.work().await {
            Err(e) => {
                tracing::error!(error = %e, request_id = %self.outcome.request_id, "CCPA deletion: database failure");
                Some(DB_FAILED.to_string())
            }
            Ok(()) if !self.failures.is_empty() => Some(self.failures.join("; ")),
            Ok(()) => None,
        };
        let closed = self.audit.finish(&self.outcome, message.as_deref()).await;
        let message = match (message, closed) {
            (Some(m), _) => Some(m),
            (None, Ok(())) => None,
            (None, Err(e)) => {
                tracing::error!(error = %e, request_id = %self.outcome.request_id, "CCPA deletion: the audit record could not be completed");
                Some("the audit record could not be completed; repeat the request".into())
            }
        };
        let o = &self.outcome;
        tracing::info!(
            request_id = %o.request_id,
            campaigns = self.audit.campaigns.len(),
            exports = o.deleted_count.exports,
            files = o.deleted_count.files,
            rewritten_files = o.rewritten.files,
            rewritten_rows = o.rewritten.rows,
            skipped = o.skipped,
            in_flight = o.in_flight,
            failed = message.is_some(),
            "CCPA deletion"
        );
        match message {
            None => Ok(self.outcome),
            Some(message) => Err(CcpaError {
                message,
                done: Box::new(self.outcome),
            }),
        }
    }

    async fn work(&mut self) -> Result<(), StoreError> {
        let campaigns = self.d.store.campaigns_entered_by(&self.req.user_id).await?;
        self.audit.campaigns = campaigns.clone();
        self.audit.save(&self.outcome).await?;
        for cid in &campaigns {
            let records = self.d.queue.of_campaigns(std::slice::from_ref(cid)).await?;
            self.delete_exports(cid, &records).await?;
            self.rewrite_waves(cid, &records).await?;
            self.audit.save(&self.outcome).await?;
        }
        Ok(())
    }

    /// Delete the objects of the campaign's exports (one DeleteObjects
    /// batch per bucket), then mark each export whose objects are all gone.
    async fn delete_exports(
        &mut self,
        cid: &str,
        records: &[ExportRecord],
    ) -> Result<(), StoreError> {
        let plan = self.plan(records);
        let gone = self
            .delete_objects(plan.iter().flat_map(|(_, ts)| ts))
            .await;
        for (rec, targets) in plan {
            for t in targets.iter().filter(|t| gone.contains(t)) {
                self.audit.deleted(&audit::Removed {
                    bucket: &t.bucket,
                    key: &t.key,
                    campaign_id: cid,
                    export_id: rec.id,
                    export_type: &rec.export_type,
                });
            }
            // Marked only once every object is gone; counted by whoever
            // marks it: a concurrent repeat of the same request never
            // counts an export twice.
            if targets.iter().all(|t| gone.contains(t))
                && self.d.queue.mark_deleted(&[rec.id]).await? == 1
            {
                self.audit.marked(rec.id);
                self.outcome.deleted_count.exports += 1;
                self.outcome.deleted_count.files += targets.len() as u64;
            }
        }
        Ok(())
    }

    /// The records whose objects this request deletes, with those objects;
    /// the others are counted as skipped or in flight (or left to the wave
    /// rewrite).
    fn plan<'r>(&mut self, records: &'r [ExportRecord]) -> Vec<(&'r ExportRecord, Vec<Target>)> {
        let mut plan = Vec::new();
        for rec in records.iter().filter(|r| !r.deleted) {
            let files = self.d.registry.ccpa_files(&rec.export_type);
            if files == CcpaFiles::Keep {
                self.outcome.skipped += 1;
            } else if matches!(rec.status, Status::Pending | Status::Triggered) {
                self.outcome.in_flight += 1;
            } else if files == CcpaFiles::Rewrite {
                // Its file is rewritten with the campaign's other wave files.
            } else {
                match self.targets(rec) {
                    Some(t) => plan.push((rec, t)),
                    // An unknown type's objects cannot be located: left unmarked.
                    None => self.outcome.skipped += 1,
                }
            }
        }
        plan
    }

    /// Delete the objects, one batch per bucket: the ones now gone (a
    /// refusal or a failed batch is recorded in `failures`).
    async fn delete_objects(&mut self, targets: impl Iterator<Item = &Target>) -> HashSet<Target> {
        let mut by_bucket: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for t in targets {
            by_bucket.entry(&t.bucket).or_default().push(t.key.clone());
        }
        let mut gone = HashSet::new();
        for (bucket, keys) in by_bucket {
            match self.d.sinks.delete_keys(bucket, &keys).await {
                Ok(refused) => {
                    if !refused.is_empty() {
                        self.failures.push(format!(
                            "{} objects in bucket {bucket} could not be deleted",
                            refused.len()
                        ));
                    }
                    let refused: HashSet<String> = refused.into_iter().collect();
                    gone.extend(
                        keys.into_iter()
                            .filter(|k| !refused.contains(k))
                            .map(|key| Target {
                                bucket: bucket.to_string(),
                                key,
                            }),
                    );
                }
                Err(e) => {
                    tracing::error!(error = %e, bucket = %bucket, "CCPA delete failed");
                    self.failures.push(format!(
                        "objects in bucket {bucket} could not be deleted: {e}"
                    ));
                }
            }
        }
        gone
    }

    /// Every object the export wrote, from its record: its key(s) in its
    /// type's bucket, the object a failed TMOL publish left (recorded as
    /// `key`; older records name it only in `error.payload.object`), and
    /// its TMOL copies (`meta.published`). `None` for an unknown type
    /// that names keys.
    fn targets(&self, rec: &ExportRecord) -> Option<Vec<Target>> {
        let keys: Vec<String> = match &rec.key {
            Some(Bson::String(k)) => vec![k.clone()],
            Some(Bson::Array(a)) => a
                .iter()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        let mut out = Vec::new();
        if !keys.is_empty() {
            let ty = self.d.registry.get(&rec.export_type)?;
            let bucket = self.d.sinks.own_bucket(ty.destination())?;
            out.extend(keys.into_iter().map(|key| Target {
                bucket: bucket.clone(),
                key,
            }));
        } else if rec.status == Status::Failed {
            let payload = rec.error.as_ref().and_then(|e| e.payload.as_ref());
            if let Some(Bson::Document(p)) = payload {
                out.extend(p.get_document("object").ok().and_then(target_of));
            }
        }
        let published = rec
            .meta
            .as_ref()
            .and_then(|m| m.get_array("published").ok());
        out.extend(
            published
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_document().and_then(target_of)),
        );
        out.sort();
        out.dedup();
        Some(out)
    }

    /// Rewrite the campaign's wave files (VF_SCORING_BUCKET,
    /// `campaigns/{id}/waves/`: what `waitlist` reads) without the user's
    /// rows.
    async fn rewrite_waves(
        &mut self,
        cid: &str,
        records: &[ExportRecord],
    ) -> Result<(), StoreError> {
        let user = self.user_rows(cid).await?;
        if user.is_empty() {
            return Ok(());
        }
        let bucket = self.d.sinks.buckets().vf_scoring.clone();
        let keys = match self
            .d
            .sinks
            .list_keys(&bucket, &format!("campaigns/{cid}/waves/"))
            .await
        {
            Ok(k) => k,
            Err(e) => {
                tracing::error!(error = %e, bucket = %bucket, "CCPA: wave files could not be listed");
                self.failures.push(format!(
                    "wave files in bucket {bucket} could not be listed: {e}"
                ));
                return Ok(());
            }
        };
        // The codeWaves export whose record names each file.
        let named: HashMap<&str, ObjectId> = records
            .iter()
            .filter(|r| r.status == Status::Finished && !r.deleted)
            .filter(|r| self.d.registry.ccpa_files(&r.export_type) == CcpaFiles::Rewrite)
            .filter_map(|r| r.key.as_ref().and_then(Bson::as_str).map(|k| (k, r.id)))
            .collect();
        for key in &keys {
            let export_id = named.get(key.as_str()).copied();
            match self.rewrite_wave(&bucket, key, &user, export_id).await {
                Ok(None) => {}
                Ok(Some(r)) => {
                    self.outcome.rewritten.files += 1;
                    self.outcome.rewritten.rows += r.rows.removed;
                    self.audit.rewrote(&Rewrote {
                        bucket: &bucket,
                        key,
                        campaign_id: cid,
                        export_id,
                        rows_removed: r.rows.removed,
                        sha256: &r.sha256,
                        bytes: r.bytes,
                    });
                }
                Err(RewriteError::Store(e)) => return Err(e),
                Err(e) => {
                    tracing::error!(error = %e, bucket = %bucket, key = %key, "CCPA: wave file not rewritten");
                    self.failures.push(format!(
                        "wave file {key} in bucket {bucket} could not be rewritten: {e}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Rewrite one wave file if it holds any of the user's rows: a read-only
    /// pass first (most files of a campaign do not), then under the file's
    /// lock the rewrite and the record of the export that wrote it.
    async fn rewrite_wave(
        &self,
        bucket: &str,
        key: &str,
        user: &UserRows,
        export_id: Option<ObjectId>,
    ) -> Result<Option<Rewritten>, RewriteError> {
        if waves::scan(&self.d.sinks, bucket, key, user).await?.removed == 0 {
            return Ok(None);
        }
        let lock = ObjectLock::acquire(
            &self.d.store,
            bucket,
            key,
            &self.outcome.request_id,
            self.d.lock_wait,
        )
        .await?;
        let lost = CancellationToken::new();
        let renewal = lock.keep(lost.clone());
        let result = async {
            let done = waves::rewrite(&self.d.sinks, bucket, key, user, &lost).await?;
            if let (Some(r), Some(id)) = (&done, export_id) {
                self.d
                    .queue
                    .record_rewrite(id, key, &r.sha256, r.bytes, r.rows.kept)
                    .await?;
            }
            Ok::<_, RewriteError>(done)
        }
        .await;
        renewal.stop().await;
        lock.release().await;
        result
    }

    /// The user's member ids (scoring) and assigned codes in the campaign,
    /// each read to its confirmed end.
    async fn user_rows(&self, cid: &str) -> Result<UserRows, StoreError> {
        let user = id_match(&self.req.user_id);
        let members = self
            .texts(
                "scoring",
                doc! { "campaignId": id_match(cid), "userId": user.clone() },
                "memberId",
            )
            .await?;
        let codes = self
            .texts(
                "codes",
                doc! { "campaignId": id_match(cid), "assignedTo": user },
                "code",
            )
            .await?;
        Ok(UserRows::new(members, codes))
    }

    /// `field` of every document of `coll` matching `filter`.
    async fn texts(
        &self,
        coll: &str,
        filter: Document,
        field: &str,
    ) -> Result<Vec<String>, StoreError> {
        let mut reader =
            Reader::new(&self.d.store, coll, filter, "_id").projection(doc! { field: 1 });
        let mut out = Vec::new();
        while let Some(batch) = reader.next_batch().await? {
            out.extend(batch.iter().map(|d| text_at(d, &[field]).into_owned()));
        }
        Ok(out)
    }
}

/// `{bucket, key}` as a target.
fn target_of(d: &Document) -> Option<Target> {
    let (bucket, key) = (d.get_str("bucket").ok()?, d.get_str("key").ok()?);
    (!bucket.is_empty() && !key.is_empty()).then(|| Target {
        bucket: bucket.to_string(),
        key: key.to_string(),
    })
}
