//! `ccpaRequests` (ours): one record per CCPA request, so a compliance
//! question ("what did we remove for this person, when, at whose request?")
//! is answered from data, not logs. It holds the SHA-256 of the user id,
//! never the id; who asked (`sub`); when; the campaigns; every object
//! deleted or rewritten; the export records marked; the counts. No file
//! content.
//!
//! The record is written when the request starts (`RUNNING`) and saved
//! after every step, so a request that died midway still shows what it
//! did; it ends `DONE` or `FAILED` (with the reason).

use mongodb::bson::{doc, oid::ObjectId, Bson, DateTime, Document};
use mongodb::Collection;

use super::Outcome;
use crate::store::{lossy_document, Reader, Store, StoreError};

pub const COLLECTION: &str = "ccpaRequests";

/// The audit record of one request, as it is being written.
pub struct AuditLog {
    coll: Collection<Document>,
    id: ObjectId,
    pub campaigns: Vec<String>,
    objects: Vec<Document>,
    exports: Vec<String>,
}

/// An object removed from a bucket.
pub struct Removed<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    pub campaign_id: &'a str,
    pub export_id: ObjectId,
    pub export_type: &'a str,
}

/// A wave file written back without the user's rows.
pub struct Rewrote<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    pub campaign_id: &'a str,
    /// The `codeWaves` export whose record names the file, if one does.
    pub export_id: Option<ObjectId>,
    pub rows_removed: u64,
    pub sha256: &'a str,
    pub bytes: u64,
}

fn n(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl AuditLog {
    /// Insert the record (`RUNNING`).
    pub async fn open(
        store: &Store,
        user_id_sha256: &str,
        requested_by: &str,
        correlation: &str,
    ) -> Result<Self, StoreError> {
        let log = Self {
            coll: store.db().collection(COLLECTION),
            id: ObjectId::new(),
            campaigns: Vec::new(),
            objects: Vec::new(),
            exports: Vec::new(),
        };
        let mut d = doc! {
            "_id": log.id,
            "userIdSha256": user_id_sha256,
            "requestedBy": requested_by,
            "correlation": correlation,
            "status": "RUNNING",
            "date": { "started": DateTime::now(), "finished": Bson::Null },
            "error": Bson::Null,
        };
        d.extend(log.progress(&Outcome::default()));
        log.coll.insert_one(d).await?;
        Ok(log)
    }

    pub fn id(&self) -> ObjectId {
        self.id
    }

    pub fn deleted(&mut self, d: &Removed<'_>) {
        self.objects.push(doc! {
            "action": "deleted",
            "bucket": d.bucket,
            "key": d.key,
            "campaignId": d.campaign_id,
            "exportId": d.export_id.to_hex(),
            "exportType": d.export_type,
        });
    }

    pub fn rewrote(&mut self, r: &Rewrote<'_>) {
        let mut d = doc! {
            "action": "rewritten",
            "bucket": r.bucket,
            "key": r.key,
            "campaignId": r.campaign_id,
            "rowsRemoved": n(r.rows_removed),
            "sha256": r.sha256,
            "bytes": n(r.bytes),
        };
        if let Some(id) = r.export_id {
            d.insert("exportId", id.to_hex());
            d.insert("exportType", "codeWaves");
        }
        self.objects.push(d);
    }

    /// An export record this request marked `deleted`.
    pub fn marked(&mut self, id: ObjectId) {
        self.exports.push(id.to_hex());
    }

    /// Arrays are written whole (`$set`): the nx-27017 stand-in stores a
    /// document `$push`ed into an array as a JSON string.
    fn progress(&self, o: &Outcome) -> Document {
        doc! {
            "campaigns": &self.campaigns,
            "objects": self.objects.clone(),
            "exports": &self.exports,
            "deletedCount": { "exports": n(o.deleted_count.exports), "files": n(o.deleted_count.files) },
            "rewritten": { "files": n(o.rewritten.files), "rows": n(o.rewritten.rows) },
            "skipped": n(o.skipped),
            "inFlight": n(o.in_flight),
        }
    }

    /// Save what was done so far.
    pub async fn save(&self, o: &Outcome) -> Result<(), StoreError> {
        self.coll
            .update_one(doc! { "_id": self.id }, doc! { "$set": self.progress(o) })
            .await?;
        Ok(())
    }

    /// The final state: `DONE`, or `FAILED` with the reason.
    pub async fn finish(&self, o: &Outcome, error: Option<&str>) -> Result<(), StoreError> {
        let mut set = self.progress(o);
        set.insert("status", if error.is_some() { "FAILED" } else { "DONE" });
        set.insert(
            "error",
            error.map_or(Bson::Null, |e| Bson::String(e.into())),
        );
        self.coll
            .update_one(
                doc! { "_id": self.id },
                doc! { "$set": set, "$currentDate": { "date.finished": true } },
            )
            .await?;
        Ok(())
    }
}

/// Every audit record of the user whose id hashes to `user_id_sha256`,
/// oldest first, read to the confirmed end.
pub async fn requests_of(store: &Store, user_id_sha256: &str) -> Result<Vec<Document>, StoreError> {
    let filter = doc! { "userIdSha256": user_id_sha256 };
    let mut reader = Reader::new(store, COLLECTION, filter, "_id");
    let mut out = Vec::new();
    loop {
        let batch = reader.next_batch().await?;
        if batch.is_empty() {
            return Ok(out);
        }
        out.extend(batch.iter().map(|d| lossy_document(d)));
    }
}
