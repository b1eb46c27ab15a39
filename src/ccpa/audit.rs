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
use serde::{Deserialize, Serialize, Serializer};
use utoipa::ToSchema;

use super::{Deleted, Outcome, Rewrites};
use crate::store::{iso, Reader, Store, StoreError};

pub const COLLECTION: &str = "ccpaRequests";

/// The audit record of one request, as it is being written.
pub struct AuditLog {
    coll: Collection<Document>,
    id: ObjectId,
    pub campaigns: Vec<String>,
    objects: Vec<AuditObject>,
    exports: Vec<String>,
}

/// What a request did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = CcpaAction)]
pub enum Action {
    Deleted,
    Rewritten,
}

/// An object a CCPA request deleted, or rewrote without the user's rows:
/// as stored in the record and as `GET /ccpa/requests` returns it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = CcpaObject)]
pub struct AuditObject {
    pub action: Action,
    pub bucket: String,
    pub key: String,
    pub campaign_id: String,
    /// The export whose record names the object (always for a deletion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    pub export_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    pub export_type: Option<String>,
    /// Rewritten files: the user's rows left out, and the new object's
    /// digest and size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(required = false, minimum = 0)]
    pub rows_removed: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(required = false, minimum = 0)]
    pub bytes: Option<i64>,
}

/// A request's status: RUNNING until it ends (a request whose process
/// died stays RUNNING: its objects list is what it did).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
#[schema(as = CcpaStatus)]
pub enum RequestStatus {
    Running,
    Done,
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = CcpaRequestDates)]
pub struct RecordDates {
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String)]
    pub started: DateTime,
    /// Null while RUNNING.
    #[serde(default, serialize_with = "rfc3339_or_null")]
    #[schema(value_type = Option<String>, required = true)]
    pub finished: Option<DateTime>,
}

/// The audit record of one CCPA request, as read back (`GET
/// /ccpa/requests`). The user id is kept only as its SHA-256; no file
/// content. Dates answer as RFC 3339, the id as hex.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = CcpaRequest)]
pub struct Record {
    #[serde(rename(deserialize = "_id"), serialize_with = "hex")]
    #[schema(value_type = String, pattern = "^[0-9a-f]{24}$")]
    pub id: ObjectId,
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub user_id_sha256: String,
    /// `sub` of the caller.
    pub requested_by: String,
    pub correlation: String,
    pub status: RequestStatus,
    pub date: RecordDates,
    pub campaigns: Vec<String>,
    pub objects: Vec<AuditObject>,
    /// Export records this request marked deleted.
    pub exports: Vec<String>,
    pub deleted_count: Deleted,
    pub rewritten: Rewrites,
    pub skipped: u64,
    pub in_flight: u64,
    /// Why a FAILED request stopped short.
    #[serde(default)]
    #[schema(required = true)]
    pub error: Option<String>,
}

/// Stored as its name, the one `Record` decodes.
impl From<RequestStatus> for Bson {
    fn from(s: RequestStatus) -> Self {
        mongodb::bson::to_bson(&s).expect("a unit variant serializes as its name")
    }
}

fn hex<S: Serializer>(id: &ObjectId, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&id.to_hex())
}

fn rfc3339<S: Serializer>(d: &DateTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&iso(*d))
}

fn rfc3339_or_null<S: Serializer>(d: &Option<DateTime>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => rfc3339(d, s),
        None => s.serialize_none(),
    }
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
            "status": RequestStatus::Running,
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
        self.objects.push(AuditObject {
            action: Action::Deleted,
            bucket: d.bucket.into(),
            key: d.key.into(),
            campaign_id: d.campaign_id.into(),
            export_id: Some(d.export_id.to_hex()),
            export_type: Some(d.export_type.into()),
            rows_removed: None,
            sha256: None,
            bytes: None,
        });
    }

    pub fn rewrote(&mut self, r: &Rewrote<'_>) {
        self.objects.push(AuditObject {
            action: Action::Rewritten,
            bucket: r.bucket.into(),
            key: r.key.into(),
            campaign_id: r.campaign_id.into(),
            export_id: r.export_id.map(|id| id.to_hex()),
            export_type: r.export_id.map(|_| "codeWaves".into()),
            rows_removed: Some(n(r.rows_removed)),
            sha256: Some(r.sha256.into()),
            bytes: Some(n(r.bytes)),
        });
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
            "objects": self.objects.iter().map(AuditObject::document).collect::<Vec<_>>(),
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
        set.insert(
            "status",
            if error.is_some() {
                RequestStatus::Failed
            } else {
                RequestStatus::Done
            },
        );
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

impl AuditObject {
    fn document(&self) -> Document {
        // Strings, integers and an enum of names: nothing that can fail.
        mongodb::bson::to_document(self).expect("an audit object serializes")
    }
}

/// Every audit record of the user whose id hashes to `user_id_sha256`,
/// oldest first, read to the confirmed end.
pub async fn requests_of(store: &Store, user_id_sha256: &str) -> Result<Vec<Record>, StoreError> {
    let filter = doc! { "userIdSha256": user_id_sha256 };
    let mut reader = Reader::new(store, COLLECTION, filter, "_id");
    let mut out = Vec::new();
    while let Some(batch) = reader.next_batch().await? {
        for d in &batch {
            out.push(mongodb::bson::from_slice(d.as_bytes())?);
        }
    }
    Ok(out)
}
