//! MongoDB handles, the index definitions, and the small reads every export
//! shares (campaign, markets). Source documents are written by other Titan
//! services, so parsing is lenient: a missing field is an empty cell, never
//! a failed export.

use std::time::Duration;

use mongodb::bson::{doc, oid::ObjectId, Bson, DateTime, Document, RawDocumentBuf};
use mongodb::event::cmap::{CmapEvent, ConnectionClosedReason};
use mongodb::event::EventHandler;
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};

pub mod reader;

pub use reader::{id_text_at, lookup, Reader, BATCH};

/// A database failure, described without server-echoed values.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}", redact_mongo(.0))]
    Mongo(#[from] mongodb::error::Error),
    /// A read that cannot be proven complete (the export fails with
    /// [`reader::READ_INCOMPLETE`] rather than finish short).
    #[error("{0}")]
    Incomplete(String),
    /// A stored document of ours without the shape this version writes.
    #[error("a stored document does not decode: {0}")]
    Decode(#[from] mongodb::bson::de::Error),
}

/// A MongoDB error described without server-echoed values (a duplicate-key
/// message quotes the key; a validation message may quote a document).
pub fn redact_mongo(e: &mongodb::error::Error) -> String {
    use mongodb::error::{ErrorKind, WriteFailure};
    match e.kind.as_ref() {
        ErrorKind::Command(c) => format!("command error {} ({})", c.code, c.code_name),
        ErrorKind::Write(WriteFailure::WriteError(w)) => format!("write error {}", w.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => {
            format!("write concern error {}", w.code)
        }
        ErrorKind::InsertMany(_) | ErrorKind::BulkWrite(_) => "bulk write error".to_string(),
        _ => e.to_string(),
    }
}

/// A stored date as the original wrote it out: RFC 3339 UTC with
/// milliseconds (`toISOString()`), in CSV cells and in API responses alike.
/// (`to_rfc3339_opts`, not a `format` string: no pattern parsed per cell.)
pub fn iso(d: mongodb::bson::DateTime) -> String {
    chrono::DateTime::from_timestamp_millis(d.timestamp_millis())
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// MongoDB error codes after which the same read succeeds again once the
/// cluster has recovered: the driver's retryable-read codes (a node
/// stepping down or shutting down, network timeouts) plus a cursor the
/// server lost or killed (`CursorNotFound` 43, `QueryPlanKilled` 175,
/// `CursorKilled` 237).
const TRANSIENT_CODES: [i32; 16] = [
    6, 7, 43, 89, 91, 134, 175, 189, 237, 262, 9001, 10107, 11600, 11602, 13435, 13436,
];

impl StoreError {
    pub fn incomplete(message: impl Into<String>) -> Self {
        StoreError::Incomplete(message.into())
    }

    /// An error of our own making (a document that cannot be decoded).
    pub fn custom(message: impl Into<String>) -> Self {
        StoreError::Mongo(mongodb::error::Error::custom(message.into()))
    }

    /// Would the same operation succeed later (the database or the network
    /// was unavailable)? Anything else is a fault to report, not to retry.
    pub fn is_transient(&self) -> bool {
        use mongodb::error::ErrorKind;
        let StoreError::Mongo(e) = self else {
            return false;
        };
        match e.kind.as_ref() {
            ErrorKind::Io(_)
            | ErrorKind::ConnectionPoolCleared { .. }
            | ErrorKind::ServerSelection { .. }
            | ErrorKind::DnsResolve { .. } => true,
            ErrorKind::Command(c) => TRANSIENT_CODES.contains(&c.code),
            _ => {
                e.contains_label("RetryableReadError")
                    || e.contains_label("RetryableWriteError")
                    || e.contains_label("TransientTransactionError")
            }
        }
    }
}

/// Handles to the database the service reads and the queue it owns.
#[derive(Clone, Debug)]
pub struct Store {
    client: Client,
    db: Database,
}

impl Store {
    pub async fn connect(uri: &str, db: &str) -> Result<Self, StoreError> {
        let mut opts = ClientOptions::parse(uri).await?;
        opts.app_name = Some("vf-export".into());
        if opts.server_selection_timeout.is_none() {
            // Fail a request in seconds, not the driver's 30 s, when MongoDB
            // is down; the worker retries on its own schedule.
            opts.server_selection_timeout = Some(Duration::from_secs(10));
        }
        // A pool clear closes every connection to a server (after a network
        // error or a missed heartbeat): rare, and the first thing on-call
        // wants to see beside retried exports. Address only; no data.
        // A connection closed because its command was abandoned mid-flight
        // (a cancelled request or export) is cheap to miss and costly in
        // bulk: each one is a new TCP/TLS handshake.
        opts.cmap_event_handler = Some(EventHandler::callback(|ev| match ev {
            CmapEvent::PoolCleared(e) => tracing::warn!(
                address = %e.address,
                interrupted_in_use = e.interrupt_in_use_connections,
                "MongoDB connection pool cleared"
            ),
            CmapEvent::ConnectionClosed(e) if e.reason == ConnectionClosedReason::Dropped => {
                tracing::info!(
                    address = %e.address,
                    connection_id = e.connection_id,
                    "MongoDB connection closed: its command was abandoned mid-flight"
                )
            }
            _ => {}
        }));
        let client = Client::with_options(opts)?;
        let db = client.database(db);
        Ok(Self { client, db })
    }

    pub fn db(&self) -> &Database {
        &self.db
    }
    pub fn client(&self) -> &Client {
        &self.client
    }
    pub fn exports(&self) -> Collection<Document> {
        self.db.collection("exports")
    }
    pub fn campaigns(&self) -> Collection<Document> {
        self.db.collection("campaigns")
    }
    pub fn markets(&self) -> Collection<Document> {
        self.db.collection("markets")
    }
    /// Raw documents: the hot path reads fields in place, no `Document` tree.
    pub fn raw(&self, name: &str) -> Collection<RawDocumentBuf> {
        self.db.collection(name)
    }

    /// Documents of `coll` matching `filter`: the preliminary counts. An
    /// aggregation `$match` + `$group`, which an index on the filter's
    /// equality prefix serves.
    pub async fn count(&self, coll: &str, filter: Document) -> Result<u64, StoreError> {
        use futures::TryStreamExt;
        let mut cur = self
            .raw(coll)
            .aggregate([
                doc! { "$match": filter },
                doc! { "$group": { "_id": null, "n": { "$sum": 1 } } },
            ])
            .await?;
        let n = match cur.try_next().await? {
            Some(d) => d
                .get_i64("n")
                .or_else(|_| d.get_i32("n").map(i64::from))
                .unwrap_or(0),
            None => 0,
        };
        Ok(n.max(0) as u64)
    }

    /// Every document of `coll` matching `filter`, for the small reads of
    /// the service's own records (a campaign's exports), whose `_id`s may
    /// be of any type (the original's records): no keyset order to rely
    /// on, so the read is confirmed by a count of the same filter instead,
    /// and read again until the two agree.
    pub async fn read_all(
        &self,
        coll: &str,
        filter: Document,
        projection: Option<Document>,
    ) -> Result<Vec<RawDocumentBuf>, StoreError> {
        use futures::TryStreamExt;
        let collection = self.raw(coll);
        for _ in 0..5 {
            let mut find = collection.find(filter.clone()).batch_size(10_000);
            if let Some(p) = &projection {
                find = find.projection(p.clone());
            }
            let mut docs: Vec<RawDocumentBuf> = find.await?.try_collect().await?;
            // A resumed cursor could repeat one: each `_id` once.
            let mut seen = std::collections::HashSet::new();
            docs.retain(|d| {
                // The `_id`'s BSON bytes: any type, compared exactly.
                let mut k = RawDocumentBuf::new();
                if let Ok(Some(v)) = d.get("_id") {
                    k.append("i", v.to_raw_bson());
                }
                seen.insert(k.into_bytes())
            });
            if docs.len() as u64 == self.count(coll, filter.clone()).await? {
                return Ok(docs);
            }
        }
        Err(StoreError::incomplete(format!(
            "the {coll} read and its count kept disagreeing"
        )))
    }

    /// A cheap liveness round trip.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.run_command(doc! { "ping": 1 }).await?;
        Ok(())
    }

    /// Create the indexes (idempotent: an existing identical index is kept).
    /// Returns `collection.index_name` for each index ensured.
    pub async fn ensure_indexes(&self, scope: IndexScope) -> Result<Vec<String>, StoreError> {
        let mut done = Vec::new();
        for (coll, model) in index_models(scope) {
            let name = model
                .options
                .as_ref()
                .and_then(|o| o.name.clone())
                .unwrap_or_default();
            self.db
                .collection::<Document>(coll)
                .create_index(model)
                .await?;
            done.push(format!("{coll}.{name}"));
        }
        Ok(done)
    }

    /// The needed indexes (as `collection.index_name`) that do not exist
    /// yet. Compared by key pattern, not name: an index an operator made by
    /// hand with the same keys serves as well.
    pub async fn missing_indexes(&self) -> Result<Vec<String>, StoreError> {
        use futures::TryStreamExt;
        let mut missing = Vec::new();
        let mut have: std::collections::HashMap<&str, Vec<Document>> = Default::default();
        for (coll, model) in index_models(IndexScope::All) {
            if !have.contains_key(coll) {
                // A collection that does not exist yet has no indexes.
                let keys = match self.db.collection::<Document>(coll).list_indexes().await {
                    Ok(cur) => cur.try_collect::<Vec<_>>().await.unwrap_or_default(),
                    Err(_) => Vec::new(),
                };
                have.insert(coll, keys.into_iter().map(|m| m.keys).collect());
            }
            let wanted = key_fields(&model.keys);
            if !have[coll].iter().any(|k| key_fields(k) == wanted) {
                let name = model.options.and_then(|o| o.name).unwrap_or_default();
                missing.push(format!("{coll}.{name}"));
            }
        }
        Ok(missing)
    }

    /// The campaign by id: `_id` may be a string or an ObjectId.
    pub async fn campaign(&self, id: &str) -> Result<Option<Campaign>, StoreError> {
        let found = self
            .campaigns()
            .find_one(doc! { "_id": id_match(id) })
            .await?;
        Ok(found.map(|d| Campaign::from_doc(id, &d)))
    }

    /// Ids of the campaigns a user entered (CCPA), from `entries`, read to
    /// the confirmed end (index `{_id.user_id}`): a campaign missed here
    /// would keep the user's rows in its exports. Keyed on the campaign id,
    /// a plain string the stand-in compares as MongoDB does (it cannot
    /// compare a whole `_id` document in a range).
    pub async fn campaigns_entered_by(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        let filter = doc! { "_id.user_id": id_match(user_id) };
        let mut reader =
            Reader::new(self, "entries", filter, "_id.campaign_id").projection(doc! { "_id": 1 });
        let mut ids: Vec<String> = Vec::new();
        while let Some(batch) = reader.next_batch().await? {
            for d in &batch {
                let id = d
                    .get_document("_id")
                    .ok()
                    .map(|k| id_text(k.get("campaign_id").ok().flatten()))
                    .unwrap_or_default();
                ids.push(id);
            }
        }
        // A campaign id stored both as a string and as an ObjectId reads
        // the same here.
        ids.retain(|i| !i.is_empty());
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// The campaign's markets, ordered by `_id` (a stable export order),
    /// read to their confirmed end: a market missed here would silently
    /// leave its entries out of every entry-family export.
    pub async fn markets_of(&self, campaign_id: &str) -> Result<Vec<Market>, StoreError> {
        let mut reader = Reader::new(
            self,
            "markets",
            doc! { "campaignId": id_match(campaign_id) },
            "_id",
        );
        let mut markets = Vec::new();
        while let Some(batch) = reader.next_batch().await? {
            markets.extend(batch.iter().map(|d| Market::from_doc(&lossy_document(d))));
        }
        Ok(markets)
    }
}

impl Store {
    /// Every object key named by the records of other exports of this
    /// campaign and type (an export's `key` is a string or an array).
    pub async fn keys_named_by_exports(
        &self,
        campaign_id: &str,
        export_type: &str,
        except_id: &str,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let filter = doc! { "campaignId": campaign_id, "exportType": export_type };
        let docs = self
            .read_all("exports", filter, Some(doc! { "key": 1 }))
            .await?;
        let mut keys = std::collections::HashSet::new();
        for d in &docs {
            if id_text(d.get("_id").ok().flatten()) == except_id {
                continue;
            }
            match d.get("key").ok().flatten() {
                Some(mongodb::bson::RawBsonRef::String(k)) => {
                    keys.insert(k.to_string());
                }
                Some(mongodb::bson::RawBsonRef::Array(a)) => {
                    keys.extend(
                        a.into_iter()
                            .flatten()
                            .filter_map(|k| k.as_str().map(str::to_string)),
                    );
                }
                _ => {}
            }
        }
        Ok(keys)
    }
}

/// A raw document as a `Document`; a string that is not valid UTF-8 gets
/// U+FFFD in place of its bad bytes instead of failing the whole document.
pub fn lossy_document(d: &mongodb::bson::RawDocument) -> Document {
    Document::try_from(d)
        .or_else(|_| mongodb::bson::from_slice_utf8_lossy(d.as_bytes()))
        .unwrap_or_default()
}

/// An index's fields in order (directions aside: either serves our scans).
fn key_fields(keys: &Document) -> Vec<&str> {
    keys.keys().map(String::as_str).collect()
}

/// Which indexes to ensure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexScope {
    /// The service's own collections (`exports`, `ccpaRequests`): small and
    /// cheap, so `serve` ensures these at start (the dedupe rule depends on
    /// the unique `activeKey`).
    Queue,
    /// Queue plus the source collections (the pre-deploy job).
    All,
}

fn named(keys: Document, name: &str) -> IndexModel {
    IndexModel::builder()
        .keys(keys)
        .options(IndexOptions::builder().name(name.to_string()).build())
        .build()
}

/// Every index the service needs, with stable names so `doctor` can check them.
pub fn index_models(scope: IndexScope) -> Vec<(&'static str, IndexModel)> {
    let mut v = vec![
        (
            "exports",
            named(
                doc! { "campaignId": 1, "exportType": 1, "status": 1 },
                "campaign_type_status",
            ),
        ),
        (
            "exports",
            named(doc! { "status": 1, "lease.expiresAtMs": 1 }, "status_lease"),
        ),
        (
            "exports",
            IndexModel::builder()
                .keys(doc! { "activeKey": 1 })
                .options(
                    IndexOptions::builder()
                        .name("active_key_unique".to_string())
                        .unique(true)
                        // Sparse, not partial: the key exists only while an
                        // export is PENDING/TRIGGERED, so uniqueness holds
                        // exactly for active exports.
                        .sparse(true)
                        .build(),
                )
                .build(),
        ),
        (
            "exports",
            named(
                doc! { "campaignId": 1, "date.created": -1 },
                "campaign_created",
            ),
        ),
    ];
    // CCPA audit records, read by the user id's digest (ours, small).
    v.push((
        "ccpaRequests",
        named(doc! { "userIdSha256": 1 }, "user_id_sha256"),
    ));
    if scope == IndexScope::All {
        v.extend([
            // The entry family reads a market at a time in user order. A
            // new name: MongoDB refuses new keys under an existing name.
            (
                "entries",
                named(
                    doc! { "_id.campaign_id": 1, "fields.market": 1, "_id.user_id": 1 },
                    "campaign_market_user",
                ),
            ),
            // fanlist (user order across markets) and the joins by user.
            (
                "entries",
                named(
                    doc! { "_id.campaign_id": 1, "_id.user_id": 1 },
                    "campaign_user",
                ),
            ),
            ("entries", named(doc! { "_id.user_id": 1 }, "user")),
            // The scoring family streams in userId order: selected or not
            // (waitlist, verifiedEntries; its prefix is the spec's
            // {campaignId, selected}) ...
            (
                "scoring",
                named(
                    doc! { "campaignId": 1, "selected": 1, "userId": 1 },
                    "campaign_selected_user",
                ),
            ),
            // ... and one SFMC region's locales (MongoDB merges the
            // locales' index ranges in userId order).
            (
                "scoring",
                named(
                    doc! { "campaignId": 1, "selected": 1, "locale": 1, "userId": 1 },
                    "campaign_selected_locale_user",
                ),
            ),
            // The whole campaign (scoring), and codeWaves' join of codes
            // to scoring by assignee.
            (
                "scoring",
                named(doc! { "campaignId": 1, "userId": 1 }, "campaign_user"),
            ),
            // Codes in code order; they replace the spec's {campaignId} and
            // {campaignId, waveDateKey}, their prefixes.
            (
                "codes",
                named(doc! { "campaignId": 1, "code": 1 }, "campaign_code"),
            ),
            (
                "codes",
                named(
                    doc! { "campaignId": 1, "waveDateKey": 1, "code": 1 },
                    "campaign_wave_code",
                ),
            ),
            ("markets", named(doc! { "campaignId": 1 }, "campaign")),
            // CCPA: the codes assigned to a user (removed from wave files).
            (
                "codes",
                named(
                    doc! { "campaignId": 1, "assignedTo": 1 },
                    "campaign_assignee",
                ),
            ),
        ]);
    }
    v
}

/// The forms an id may be stored in: the string, and the ObjectId when the
/// string is one.
pub fn id_forms(id: &str) -> Vec<Bson> {
    let mut v = vec![Bson::String(id.to_string())];
    if let Ok(oid) = ObjectId::parse_str(id) {
        v.push(Bson::ObjectId(oid));
    }
    v
}

/// A filter value matching `id` in any of its [`id_forms`]: the id itself
/// when it has one form, `{$in: forms}` when it has two. The same query on
/// MongoDB (its planner treats a one-element `$in` as an equality), but
/// plain equality is what every index serves: the nx-27017 stand-in uses an
/// index for an equality and scans the collection for any `$in`.
pub fn id_match(id: &str) -> Bson {
    let mut forms = id_forms(id);
    if forms.len() == 1 {
        forms.remove(0)
    } else {
        Bson::Document(doc! { "$in": forms })
    }
}

/// An id read from a raw document as text (see [`id_string`]).
pub fn id_text(v: Option<mongodb::bson::RawBsonRef<'_>>) -> String {
    use mongodb::bson::RawBsonRef as B;
    match v {
        Some(B::String(s)) => s.to_string(),
        Some(B::ObjectId(o)) => o.to_hex(),
        Some(B::Int32(i)) => i.to_string(),
        Some(B::Int64(i)) => i.to_string(),
        _ => String::new(),
    }
}

/// An id as a string, whatever BSON type it was stored as.
pub fn id_string(b: Option<&Bson>) -> String {
    match b {
        Some(Bson::String(s)) => s.clone(),
        Some(Bson::ObjectId(o)) => o.to_hex(),
        Some(Bson::Int32(i)) => i.to_string(),
        Some(Bson::Int64(i)) => i.to_string(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

fn str_at<'a>(d: &'a Document, path: &[&str]) -> Option<&'a str> {
    let (last, parents) = path.split_last()?;
    let mut cur = d;
    for p in parents {
        cur = cur.get_document(p).ok()?;
    }
    cur.get_str(last).ok()
}

/// A per-campaign extra question; entries carry one value per `id`.
#[derive(Debug, Clone, PartialEq)]
pub struct Preference {
    pub id: String,
    pub kind: String,
}

/// The campaign fields the exports use.
#[derive(Debug, Clone, Default)]
pub struct Campaign {
    /// The id as given in the URL (either stored form matches it).
    pub id: String,
    pub name: String,
    pub preferences: Vec<Preference>,
    pub is_lnaa: bool,
    pub artist_name: String,
    pub tour_name: String,
    pub fan_club_name: String,
    pub theme_primary: String,
    pub promoters: Vec<String>,
}

impl Campaign {
    pub fn from_doc(id: &str, d: &Document) -> Self {
        let preferences = d
            .get_array("preferences")
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_document())
                    .map(|p| Preference {
                        id: id_string(p.get("id")),
                        kind: p.get_str("type").unwrap_or_default().to_string(),
                    })
                    .filter(|p| !p.id.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let promoters = d
            .get_array("promoters")
            .map(|a| a.iter().map(|p| id_string(Some(p))).collect())
            .unwrap_or_default();
        Self {
            id: id.to_string(),
            name: d.get_str("name").unwrap_or_default().to_string(),
            preferences,
            is_lnaa: d
                .get_document("options")
                .ok()
                .and_then(|o| o.get_bool("isLNAA").ok())
                .unwrap_or(false),
            artist_name: str_at(d, &["artist", "name"]).unwrap_or_default().into(),
            tour_name: str_at(d, &["tour", "name"]).unwrap_or_default().into(),
            fan_club_name: d.get_str("fanClubName").unwrap_or_default().into(),
            theme_primary: str_at(d, &["style", "theme", "primary"])
                .unwrap_or_default()
                .into(),
            promoters,
        }
    }
}

/// The market fields the exports use.
#[derive(Debug, Clone, Default)]
pub struct Market {
    pub id: String,
    pub name: String,
    pub city: String,
    pub state: String,
    pub country_code: String,
    pub event_date: Option<DateTime>,
    pub event_ids: Vec<String>,
    pub venue_name: String,
    pub link: String,
}

impl Market {
    pub fn from_doc(d: &Document) -> Self {
        let event = d.get_document("event").ok();
        let event_date = event.and_then(|e| match e.get("date") {
            Some(Bson::DateTime(dt)) => Some(*dt),
            Some(Bson::String(s)) => DateTime::parse_rfc3339_str(s).ok(),
            _ => None,
        });
        let event_ids = event
            .and_then(|e| e.get_array("ids").ok())
            .map(|a| a.iter().map(|b| id_string(Some(b))).collect())
            .unwrap_or_default();
        Self {
            id: id_string(d.get("_id")),
            name: d.get_str("name").unwrap_or_default().into(),
            city: d.get_str("city").unwrap_or_default().into(),
            state: d.get_str("state").unwrap_or_default().into(),
            country_code: d.get_str("countryCode").unwrap_or_default().into(),
            event_date,
            event_ids,
            venue_name: event
                .and_then(|e| e.get_document("venue").ok())
                .and_then(|v| v.get_str("name").ok())
                .unwrap_or_default()
                .into(),
            link: event
                .and_then(|e| e.get_str("link").ok())
                .unwrap_or_default()
                .into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_with_one_form_is_matched_by_equality_two_forms_by_in() {
        assert_eq!(id_match("bench-50k"), Bson::String("bench-50k".into()));
        let hex = "65a1b2c3d4e5f60718293a4b";
        let oid = ObjectId::parse_str(hex).unwrap();
        assert_eq!(
            id_match(hex),
            Bson::Document(doc! { "$in": [Bson::String(hex.into()), Bson::ObjectId(oid)] })
        );
    }
}
