//! Keyset reading: every export reads MongoDB through [`Reader`] (a stream
//! in the order of one key) or [`lookup`] (the documents of a batch of ids).
//!
//! The server's word that a cursor ended is never taken alone (spec:
//! exports.md, Queue rules, Completeness). A [`Reader`] remembers the last
//! key it handed out; a cursor that fails (network error, failover,
//! `CursorNotFound`) or ends early (a lost cursor answered with an empty
//! last batch, as the local stand-in does after a restart) is resumed after
//! that key within the same attempt, and the end is confirmed by asking
//! again for anything at or after the last key. Documents that share the
//! last key are told apart by `_id`, so a key need not be unique: nothing
//! is read twice and nothing is skipped.
//!
//! MongoDB compares a range (`$gte`) only within one BSON type bracket, so
//! after a resume the reader also looks for keys of later brackets (a
//! campaign whose user ids are partly strings and partly ObjectIds).

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document, RawBson, RawBsonRef, RawDocument, RawDocumentBuf};
use mongodb::options::FindOptions;
use mongodb::{Collection, Cursor};

use super::{Store, StoreError};

/// Documents per batch handed to the row builders, and per lookup.
pub const BATCH: usize = 1000;

/// Transient failures retried inside one read before the export attempt
/// gives up (and the queue retries it later with backoff).
const MAX_RETRIES: u32 = 8;

/// The named code of a read that cannot be proven complete.
pub const READ_INCOMPLETE: &str = "ReadIncomplete";

/// A stream of the documents of `coll` matching a filter, in ascending
/// order of one key (which an index serves after the filter's equality
/// prefix).
pub struct Reader {
    coll: Collection<RawDocumentBuf>,
    filter: Document,
    key: &'static str,
    path: Vec<&'static str>,
    projection: Option<Document>,
    limit: Option<u64>,
    emitted: u64,
    cursor: Option<Cursor<RawDocumentBuf>>,
    phase: Phase,
    /// The open cursor was opened to confirm an end: anything it yields
    /// means the previous cursor ended early.
    confirming: bool,
    /// The key of the document the open cursor gave last (kept or
    /// skipped): the order check, without reading that document again.
    prev: KeyBuf,
    last: Option<Last>,
    /// A cursor failed or ended early at least once: later type brackets
    /// must be checked before the end.
    resumed: bool,
    retries: u32,
}

/// What the next cursor asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The whole filter (nothing handed out yet).
    Start,
    /// Keys at or after the last one handed out (its type bracket).
    After,
    /// Keys of the brackets after this one.
    Later(u8),
    Done,
}

/// The last key handed out and the `_id`s of the documents with that key.
#[derive(Debug, Clone)]
struct Last {
    key: Option<RawBson>,
    ids: Vec<Option<RawBson>>,
}

impl Reader {
    /// `filter` must not mention `key` (the reader adds its own range).
    pub fn new(store: &Store, coll: &str, filter: Document, key: &'static str) -> Self {
        debug_assert!(!filter.contains_key(key));
        Self {
            coll: store.raw(coll),
            filter,
            key,
            path: key.split('.').collect(),
            projection: None,
            limit: None,
            emitted: 0,
            cursor: None,
            phase: Phase::Start,
            confirming: false,
            prev: KeyBuf::default(),
            last: None,
            resumed: false,
            retries: 0,
        }
    }

    /// Only these fields (the key and `_id` are always kept).
    pub fn projection(mut self, p: Document) -> Self {
        self.projection = Some(p);
        self
    }

    /// At most `n` documents.
    pub fn limit(mut self, n: u64) -> Self {
        self.limit = Some(n);
        if n == 0 {
            self.phase = Phase::Done;
        }
        self
    }

    /// Documents handed out so far.
    pub fn emitted(&self) -> u64 {
        self.emitted
    }

    /// Where the stream stands after the documents handed out so far: a
    /// reader given it with [`Reader::resume`] continues exactly after them
    /// (an export continued from its checkpoint). The last key and the
    /// `_id`s at it are kept as raw BSON, so any key survives unchanged.
    pub fn position(&self) -> Bson {
        let Some(last) = &self.last else {
            return Bson::Null;
        };
        let mut d = RawDocumentBuf::new();
        match &last.key {
            Some(k) => d.append("k", k.clone()),
            None => d.append("k", RawBson::Null),
        }
        let mut ids = mongodb::bson::RawArrayBuf::new();
        for id in &last.ids {
            ids.push(id.clone().unwrap_or(RawBson::Null));
        }
        d.append("ids", ids);
        d.append("n", self.emitted as i64);
        Bson::Binary(mongodb::bson::Binary {
            subtype: mongodb::bson::spec::BinarySubtype::Generic,
            bytes: d.into_bytes(),
        })
    }

    /// Continue after `position` (from [`Reader::position`]; none or
    /// `Null`: from the start). Later key types are checked at the end, as after any
    /// resume.
    pub fn resume(mut self, position: Option<&Bson>) -> Result<Self, StoreError> {
        let bytes = match position {
            None | Some(Bson::Null) => return Ok(self),
            Some(Bson::Binary(b)) => b.bytes.clone(),
            _ => {
                return Err(StoreError::incomplete(
                    "a reader position of an unknown form",
                ))
            }
        };
        let d = RawDocumentBuf::from_bytes(bytes).map_err(|e| {
            StoreError::incomplete(format!("a reader position cannot be read: {e}"))
        })?;
        let key = match d.get("k") {
            Ok(Some(RawBsonRef::Null)) | Ok(None) => None,
            Ok(Some(k)) => Some(k.to_raw_bson()),
            Err(e) => return Err(StoreError::incomplete(format!("a reader position: {e}"))),
        };
        let ids = match d.get("ids") {
            Ok(Some(RawBsonRef::Array(a))) => a
                .into_iter()
                .map(|v| v.map(|v| Some(v.to_raw_bson())))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| StoreError::incomplete(format!("a reader position: {e}")))?,
            _ => Vec::new(),
        };
        self.emitted = d.get_i64("n").unwrap_or(0).max(0) as u64;
        self.last = Some(Last { key, ids });
        self.phase = if self.limit.is_some_and(|n| self.emitted >= n) {
            Phase::Done
        } else {
            Phase::After
        };
        self.resumed = true;
        Ok(self)
    }

    /// The next documents (at most [`BATCH`], never none); `None` at the
    /// confirmed end of the stream.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<RawDocumentBuf>>, StoreError> {
        let out = self.fill().await?;
        Ok((!out.is_empty()).then_some(out))
    }

    /// Up to [`BATCH`] documents; empty only at the confirmed end.
    async fn fill(&mut self) -> Result<Vec<RawDocumentBuf>, StoreError> {
        let mut out = Vec::with_capacity(BATCH);
        // Index in `out` where the open cursor's documents begin.
        let mut base = 0;
        while out.len() < BATCH && self.phase != Phase::Done {
            if self.cursor.is_none() {
                let opened = match self.request() {
                    Ok((filter, opts)) => self.coll.clone().find(filter).with_options(opts).await,
                    Err(e) => Err(e),
                };
                match opened {
                    Ok(c) => {
                        self.cursor = Some(c);
                        self.prev.clear();
                    }
                    Err(e) => {
                        self.failed(e, &out, &mut base).await?;
                        continue;
                    }
                }
            }
            let cursor = self.cursor.as_mut().expect("opened above");
            match cursor.try_next().await {
                Ok(Some(doc)) => self.accept(doc, &mut out)?,
                Ok(None) => {
                    self.cursor = None;
                    self.settle(&out, &mut base);
                    self.ended();
                }
                Err(e) => {
                    self.cursor = None;
                    self.failed(e, &out, &mut base).await?;
                }
            }
        }
        self.settle(&out, &mut base);
        Ok(out)
    }

    /// The filter and options of the next cursor (owned: the reader holds
    /// a cursor, which is not `Sync`, so no `&self` across an await).
    fn request(&self) -> Result<(Document, FindOptions), mongodb::error::Error> {
        let mut filter = self.filter.clone();
        let mut extra_limit = 0;
        match self.phase {
            Phase::Start | Phase::Done => {}
            Phase::After => {
                let last = self.last.as_ref().expect("After has a last key");
                filter.insert(self.key, doc! { "$gte": bson_of(&last.key)? });
                // The documents at the last key are read again and skipped.
                extra_limit = last.ids.len() as u64;
            }
            Phase::Later(b) => {
                let alts: Vec<Bson> = later_type_aliases(b)
                    .into_iter()
                    .map(|t| Bson::Document(doc! { self.key: { "$type": t } }))
                    .collect();
                filter = if filter.contains_key("$or") {
                    doc! { "$and": [filter, { "$or": alts }] }
                } else {
                    filter.insert("$or", alts);
                    filter
                };
            }
        }
        let opts = FindOptions::builder()
            .sort(doc! { self.key: 1 })
            .batch_size(BATCH as u32)
            .projection(self.projection.clone())
            .limit(self.limit.map(|n| (n - self.emitted + extra_limit) as i64))
            .build();
        Ok((filter, opts))
    }

    /// Hand out `doc` unless it was handed out before; fail when the server
    /// returns keys out of order (the resume rule depends on the order).
    fn accept(
        &mut self,
        doc: RawDocumentBuf,
        out: &mut Vec<RawDocumentBuf>,
    ) -> Result<(), StoreError> {
        let key = key_at(&doc, &self.path);
        // Order within this cursor: against the previous document it gave.
        if let Some(prev) = self.prev.get() {
            if cmp_keys(key, prev) == Ordering::Less {
                return Err(StoreError::incomplete(format!(
                    "{} returned documents out of {} order: the read cannot be resumed exactly",
                    self.coll.name(),
                    self.key
                )));
            }
        }
        self.prev.set(key);
        let seen = match &self.last {
            None => false,
            Some(last) => match cmp_keys(key, last.key.as_ref().map(RawBson::as_raw_bson_ref)) {
                Ordering::Less => true,
                Ordering::Equal => {
                    let id = doc.get("_id").ok().flatten().map(|v| v.to_raw_bson());
                    last.ids.contains(&id)
                }
                Ordering::Greater => false,
            },
        };
        if seen {
            // Read again by a resumed or confirming cursor: skip it.
            return Ok(());
        }
        if self.confirming {
            // The cursor before this one ended early.
            self.confirming = false;
            self.resumed = true;
            tracing::warn!(
                collection = self.coll.name(),
                rows = self.emitted,
                "a cursor ended before its last document; reading on after the last key"
            );
        }
        out.push(doc);
        self.emitted += 1;
        if self.limit.is_some_and(|n| self.emitted >= n) {
            self.cursor = None;
            self.phase = Phase::Done;
        }
        Ok(())
    }

    /// Remember the last key handed out (and the ids that share it).
    fn settle(&mut self, out: &[RawDocumentBuf], base: &mut usize) {
        if out.len() > *base {
            let key = key_at(&out[out.len() - 1], &self.path);
            let mut ids: Vec<Option<RawBson>> = Vec::new();
            if let Some(last) = &self.last {
                if cmp_keys(key, last.key.as_ref().map(RawBson::as_raw_bson_ref)) == Ordering::Equal
                {
                    ids = last.ids.clone();
                }
            }
            for d in out[*base..].iter().rev() {
                if cmp_keys(key_at(d, &self.path), key) != Ordering::Equal {
                    break;
                }
                ids.push(d.get("_id").ok().flatten().map(|v| v.to_raw_bson()));
            }
            self.last = Some(Last {
                key: key.map(|k| k.to_raw_bson()),
                ids,
            });
        }
        *base = out.len();
    }

    /// A cursor ended: confirm it, or move on once confirmed.
    fn ended(&mut self) {
        if self.phase == Phase::Done {
            return;
        }
        if !self.confirming {
            // Ended on its own: ask again for anything after the last key.
            self.confirming = true;
            self.phase = if self.last.is_some() {
                Phase::After
            } else {
                Phase::Start
            };
            return;
        }
        // A confirming cursor found nothing new.
        self.phase = match (self.phase, &self.last) {
            (Phase::Start | Phase::After, Some(last)) if self.resumed => {
                let b = bracket(last.key.as_ref().map(RawBson::as_raw_bson_ref));
                if later_type_aliases(b).is_empty() {
                    Phase::Done
                } else {
                    Phase::Later(b)
                }
            }
            _ => Phase::Done,
        };
    }

    /// A cursor (or its opening) failed: resume after the last key if the
    /// failure is transient and retries are left.
    async fn failed(
        &mut self,
        e: mongodb::error::Error,
        out: &[RawDocumentBuf],
        base: &mut usize,
    ) -> Result<(), StoreError> {
        let e = StoreError::from(e);
        if !e.is_transient() || self.retries >= MAX_RETRIES {
            return Err(e);
        }
        self.settle(out, base);
        self.retries += 1;
        let wait = Duration::from_millis(250 << self.retries.min(5));
        tracing::warn!(
            collection = self.coll.name(),
            rows = self.emitted,
            retry = self.retries,
            error = %e,
            "reading failed; resuming after the last key"
        );
        tokio::time::sleep(wait).await;
        self.resumed = true;
        self.confirming = false;
        self.phase = if self.last.is_some() {
            Phase::After
        } else {
            Phase::Start
        };
        Ok(())
    }
}

/// A key kept between documents without an allocation per document: a
/// string key's buffer is reused; other keys are small values.
#[derive(Default)]
struct KeyBuf {
    kind: KeyKind,
    text: String,
}

#[derive(Default)]
enum KeyKind {
    /// Nothing yet (a new cursor).
    #[default]
    Empty,
    /// A string key (in `text`).
    Text,
    /// Any other key (or a missing one: `None`).
    Other(Option<RawBson>),
}

impl KeyBuf {
    fn clear(&mut self) {
        self.kind = KeyKind::Empty;
    }
    fn set(&mut self, k: Option<RawBsonRef<'_>>) {
        match k {
            Some(RawBsonRef::String(s)) => {
                self.text.clear();
                self.text.push_str(s);
                self.kind = KeyKind::Text;
            }
            other => self.kind = KeyKind::Other(other.map(|v| v.to_raw_bson())),
        }
    }
    /// The key kept, if any (`Some(None)`: a missing key).
    fn get(&self) -> Option<Option<RawBsonRef<'_>>> {
        match &self.kind {
            KeyKind::Empty => None,
            KeyKind::Text => Some(Some(RawBsonRef::String(&self.text))),
            KeyKind::Other(v) => Some(v.as_ref().map(RawBson::as_raw_bson_ref)),
        }
    }
}

/// The key of a document (missing → `None`, which sorts as null).
fn key_at<'a>(doc: &'a RawDocument, path: &[&str]) -> Option<RawBsonRef<'a>> {
    let (last, parents) = path.split_last()?;
    let mut cur = doc;
    for p in parents {
        cur = match element(cur, p)? {
            RawBsonRef::Document(d) => d,
            _ => return None,
        };
    }
    element(cur, last)
}

/// The value of `key` in `doc`, reading no other element's value.
fn element<'a>(doc: &'a RawDocument, key: &str) -> Option<RawBsonRef<'a>> {
    doc.iter_elements()
        .map_while(Result::ok)
        .find(|e| e.key() == key)
        .and_then(|e| e.value().ok())
}

/// The key as a filter value.
fn bson_of(k: &Option<RawBson>) -> Result<Bson, mongodb::error::Error> {
    match k {
        None => Ok(Bson::Null),
        Some(k) => k
            .clone()
            .try_into()
            .map_err(|e: mongodb::bson::raw::Error| {
                mongodb::error::Error::custom(format!("a key cannot be used in a filter: {e}"))
            }),
    }
}

/// MongoDB's BSON type brackets, in sort order (missing sorts as null).
pub fn bracket(v: Option<RawBsonRef<'_>>) -> u8 {
    use RawBsonRef as B;
    match v {
        Some(B::MinKey) => 1,
        None | Some(B::Null) | Some(B::Undefined) => 2,
        Some(B::Int32(_) | B::Int64(_) | B::Double(_) | B::Decimal128(_)) => 3,
        Some(B::String(_) | B::Symbol(_)) => 4,
        Some(B::Document(_)) => 5,
        Some(B::Array(_)) => 6,
        Some(B::Binary(_)) => 7,
        Some(B::ObjectId(_)) => 8,
        Some(B::Boolean(_)) => 9,
        Some(B::DateTime(_)) => 10,
        Some(B::Timestamp(_)) => 11,
        Some(B::RegularExpression(_)) => 12,
        Some(B::DbPointer(_) | B::JavaScriptCode(_) | B::JavaScriptCodeWithScope(_)) => 13,
        Some(B::MaxKey) => 14,
    }
}

/// `$type` aliases of the brackets after `b` that a key can hold.
fn later_type_aliases(b: u8) -> Vec<&'static str> {
    const BRACKETS: [(u8, &[&str]); 12] = [
        (3, &["int", "long", "double", "decimal"]),
        (4, &["string", "symbol"]),
        (5, &["object"]),
        (6, &["array"]),
        (7, &["binData"]),
        (8, &["objectId"]),
        (9, &["bool"]),
        (10, &["date"]),
        (11, &["timestamp"]),
        (12, &["regex"]),
        (13, &["dbPointer", "javascript", "javascriptWithScope"]),
        (14, &["maxKey"]),
    ];
    BRACKETS
        .iter()
        .filter(|(n, _)| *n > b)
        .flat_map(|(_, a)| a.iter().copied())
        .collect()
}

/// MongoDB's sort order of two keys (strings by bytes, the default
/// collation). Documents, arrays and the rarest types compare by their
/// bytes: keys of those types are not expected.
pub fn cmp_keys(a: Option<RawBsonRef<'_>>, b: Option<RawBsonRef<'_>>) -> Ordering {
    use RawBsonRef as B;
    let (ba, bb) = (bracket(a), bracket(b));
    if ba != bb {
        return ba.cmp(&bb);
    }
    let (Some(a), Some(b)) = (a, b) else {
        return Ordering::Equal;
    };
    match (a, b) {
        (B::String(x) | B::Symbol(x), B::String(y) | B::Symbol(y)) => {
            x.as_bytes().cmp(y.as_bytes())
        }
        (B::ObjectId(x), B::ObjectId(y)) => x.bytes().cmp(&y.bytes()),
        (B::Boolean(x), B::Boolean(y)) => x.cmp(&y),
        (B::DateTime(x), B::DateTime(y)) => x.timestamp_millis().cmp(&y.timestamp_millis()),
        (B::Timestamp(x), B::Timestamp(y)) => (x.time, x.increment).cmp(&(y.time, y.increment)),
        (B::Binary(x), B::Binary(y)) => (x.bytes.len(), u8::from(x.subtype), x.bytes).cmp(&(
            y.bytes.len(),
            u8::from(y.subtype),
            y.bytes,
        )),
        (B::Document(x), B::Document(y)) => x.as_bytes().cmp(y.as_bytes()),
        (B::Array(x), B::Array(y)) => x.as_bytes().cmp(y.as_bytes()),
        (B::RegularExpression(x), B::RegularExpression(y)) => {
            (x.pattern, x.options).cmp(&(y.pattern, y.options))
        }
        (x, y) if ba == 3 => cmp_numbers(x, y),
        _ => Ordering::Equal,
    }
}

fn cmp_numbers(a: RawBsonRef<'_>, b: RawBsonRef<'_>) -> Ordering {
    use RawBsonRef as B;
    let int = |v: RawBsonRef<'_>| match v {
        B::Int32(n) => Some(n as i64),
        B::Int64(n) => Some(n),
        _ => None,
    };
    if let (Some(x), Some(y)) = (int(a), int(b)) {
        return x.cmp(&y);
    }
    let float = |v: RawBsonRef<'_>| match v {
        B::Int32(n) => n as f64,
        B::Int64(n) => n as f64,
        B::Double(d) => d,
        // Decimal128 has no conversion here; it sorts with the NaNs.
        _ => f64::NAN,
    };
    let (x, y) = (float(a), float(b));
    // MongoDB sorts NaN below every other number.
    match (x.is_nan(), y.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        _ => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
    }
}

/// The documents of `coll` matching `base` whose `field` is one of `ids`
/// (each matched in every stored form `forms` gives), by id (`key_of`
/// reads a document's); the first document found per id. The ids still
/// missing after a query are asked for again until a query finds none of
/// them: a cursor that ended early cannot pass for an id without a
/// document.
#[allow(clippy::too_many_arguments)] // one call shape, three callers
pub async fn lookup<K, F, G>(
    store: &Store,
    coll: &str,
    base: &Document,
    field: &'static str,
    ids: &[K],
    forms: F,
    key_of: G,
    projection: Option<&Document>,
) -> Result<HashMap<K, RawDocumentBuf>, StoreError>
where
    K: std::hash::Hash + Eq + Clone,
    F: Fn(&K) -> Vec<Bson>,
    G: Fn(&RawDocument) -> Option<K>,
{
    let mut found: HashMap<K, RawDocumentBuf> = HashMap::with_capacity(ids.len());
    let mut missing: Vec<&K> = {
        let mut seen = HashSet::with_capacity(ids.len());
        ids.iter().filter(|i| seen.insert(*i)).collect()
    };
    let collection = store.raw(coll);
    let mut retries = 0;
    while !missing.is_empty() {
        let values: Vec<Bson> = missing.iter().flat_map(|i| forms(i)).collect();
        let mut filter = base.clone();
        filter.insert(field, doc! { "$in": values });
        let round = async {
            let mut find = collection
                .find(filter)
                .batch_size(BATCH.max(missing.len()) as u32);
            if let Some(p) = projection {
                find = find.projection(p.clone());
            }
            let mut cur = find.await?;
            let mut docs = Vec::new();
            while let Some(d) = cur.try_next().await? {
                docs.push(d);
            }
            Ok::<_, mongodb::error::Error>(docs)
        };
        let docs = match round.await {
            Ok(docs) => docs,
            Err(e) => {
                let e = StoreError::from(e);
                if !e.is_transient() || retries >= MAX_RETRIES {
                    return Err(e);
                }
                retries += 1;
                tracing::warn!(collection = coll, retry = retries, error = %e, "lookup failed; asking again");
                tokio::time::sleep(Duration::from_millis(250 << retries.min(5))).await;
                continue;
            }
        };
        let before = found.len();
        for d in docs {
            if let Some(k) = key_of(&d) {
                found.entry(k).or_insert(d);
            }
        }
        if found.len() == before {
            // Asked again and nothing new: they have no document.
            break;
        }
        missing.retain(|i| !found.contains_key(*i));
    }
    Ok(found)
}

/// A document's id at `path` as text (see [`super::id_text`]).
pub fn id_text_at(doc: &RawDocument, path: &[&str]) -> Option<String> {
    Some(super::id_text(key_at(doc, path))).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::oid::ObjectId;

    fn raw(b: Bson) -> RawBson {
        RawBson::try_from(b).unwrap()
    }

    #[test]
    fn keys_sort_as_mongodb_sorts_them() {
        let oid = ObjectId::parse_str("000000000000000000000001").unwrap();
        let ordered = [
            None,
            Some(raw(Bson::Int32(-3))),
            Some(raw(Bson::Double(2.5))),
            Some(raw(Bson::Int64(3))),
            Some(raw(Bson::String(String::new()))),
            Some(raw(Bson::String("a".into()))),
            Some(raw(Bson::String("ab".into()))),
            Some(raw(Bson::String("b".into()))),
            Some(raw(Bson::ObjectId(oid))),
            Some(raw(Bson::Boolean(false))),
            Some(raw(Bson::DateTime(mongodb::bson::DateTime::from_millis(0)))),
        ];
        for (i, a) in ordered.iter().enumerate() {
            for (j, b) in ordered.iter().enumerate() {
                let got = cmp_keys(
                    a.as_ref().map(RawBson::as_raw_bson_ref),
                    b.as_ref().map(RawBson::as_raw_bson_ref),
                );
                assert_eq!(got, i.cmp(&j), "{a:?} vs {b:?}");
            }
        }
        // Numbers compare across their types; NaN sorts first.
        let n = |b: Bson| Some(raw(b));
        let cmp = |a: &Option<RawBson>, b: &Option<RawBson>| {
            cmp_keys(
                a.as_ref().map(RawBson::as_raw_bson_ref),
                b.as_ref().map(RawBson::as_raw_bson_ref),
            )
        };
        assert_eq!(
            cmp(&n(Bson::Int32(3)), &n(Bson::Double(3.0))),
            Ordering::Equal
        );
        assert_eq!(
            cmp(&n(Bson::Double(f64::NAN)), &n(Bson::Int32(i32::MIN))),
            Ordering::Less
        );
        assert_eq!(
            cmp(&n(Bson::Int64(i64::MAX)), &n(Bson::Int64(i64::MAX - 1))),
            Ordering::Greater
        );
    }

    #[test]
    fn later_brackets_follow_the_last_keys_bracket() {
        assert_eq!(later_type_aliases(8)[0], "bool");
        assert!(later_type_aliases(4).contains(&"objectId"));
        assert!(!later_type_aliases(4).contains(&"string"));
        assert!(later_type_aliases(14).is_empty());
        assert_eq!(bracket(None), bracket(Some(RawBsonRef::Null)));
    }
}
