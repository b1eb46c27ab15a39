//! The scoring family's shared reading: the campaign's `scoring`
//! documents in `userId` order (a [`Reader`]; indexes `{campaignId,
//! userId}`, `{campaignId, selected, userId}`, and `{campaignId, selected,
//! locale, userId}` for a region's locales), joined per batch to the
//! campaign's entries and their users — two lookups per batch, never one
//! query per row.

use std::borrow::Cow;
use std::collections::HashMap;

use mongodb::bson::{doc, oid::ObjectId, Document, RawDocument, RawDocumentBuf};

use super::entry_rows::{oid_of, users_by_id, Person};
use super::raw::{get, text, text_at};
use super::Source;
use crate::store::{id_forms, id_match, id_text_at, lookup, Reader, Store, StoreError};

/// The key the scoring family streams in. Not unique (a user may have
/// more than one scoring document): the reader tells ties apart.
pub const SCORING_KEY: &str = "userId";

/// `{campaignId}` in either stored form, plus `extra`.
pub fn scoring_filter(campaign_id: &str, extra: Document) -> Document {
    let mut f = doc! { "campaignId": id_match(campaign_id) };
    f.extend(extra);
    f
}

/// A scoring document with the campaign entry and user of its `userId`.
pub struct Scored {
    pub scoring: RawDocumentBuf,
    pub entry: Option<RawDocumentBuf>,
    pub user: Option<RawDocumentBuf>,
}

impl Scored {
    pub fn person(&self) -> Person<'_> {
        Person::new(self.entry.as_deref(), self.user.as_deref())
    }
    /// The scoring document's field as text.
    pub fn field(&self, name: &str) -> Cow<'_, str> {
        text_at(&self.scoring, &[name])
    }
    /// The user id (scoring `userId`, else the entry's).
    pub fn user_id(&self) -> Cow<'_, str> {
        let s = self.field("userId");
        if !s.is_empty() {
            return s;
        }
        self.entry
            .as_deref()
            .map(|e| text_at(e, &["_id", "user_id"]))
            .unwrap_or(Cow::Borrowed(""))
    }
    /// The entry's market id, else the scoring document's `market`.
    pub fn market_id(&self) -> Cow<'_, str> {
        let m = self
            .entry
            .as_deref()
            .map(|e| text_at(e, &["fields", "market"]))
            .unwrap_or(Cow::Borrowed(""));
        if m.is_empty() {
            self.field("market")
        } else {
            m
        }
    }
}

/// Streams scoring documents matching a filter, optionally joined.
pub struct ScoringReader {
    store: Store,
    campaign_id: String,
    reader: Reader,
    join: bool,
}

impl ScoringReader {
    /// `filter` as built by [`scoring_filter`]; `limit` caps the rows;
    /// `join` fetches entries and users.
    pub fn open(src: &Source, filter: Document, limit: Option<u64>, join: bool) -> Self {
        let mut reader = Reader::new(&src.store, "scoring", filter, SCORING_KEY);
        if let Some(n) = limit {
            reader = reader.limit(n);
        }
        Self {
            store: src.store.clone(),
            campaign_id: src.campaign.id.clone(),
            reader,
            join,
        }
    }

    /// Where the reading stands (see [`Reader::position`]).
    pub fn position(&self) -> mongodb::bson::Bson {
        self.reader.position()
    }

    /// Continue after `position`, when there is one (a continued export).
    pub fn resume(mut self, position: Option<&mongodb::bson::Bson>) -> Result<Self, StoreError> {
        self.reader = self.reader.resume(position)?;
        Ok(self)
    }

    pub async fn next_batch(&mut self) -> Result<Option<Vec<Scored>>, StoreError> {
        let Some(docs) = self.reader.next_batch().await? else {
            return Ok(None);
        };
        if !self.join {
            return Ok(Some(
                docs.into_iter()
                    .map(|scoring| Scored {
                        scoring,
                        entry: None,
                        user: None,
                    })
                    .collect(),
            ));
        }
        let ids: Vec<String> = docs
            .iter()
            .map(|d| text_at(d, &["userId"]).into_owned())
            .collect();
        let (entries, users) = join_by_user(&self.store, &self.campaign_id, &ids).await?;
        Ok(Some(attach(docs, ids, entries, users)))
    }
}

/// Give each scoring document its entry and user. A user id that appears
/// more than once in the batch gets its entry and user every time (a copy
/// for all but the last occurrence, which takes the original).
fn attach(
    docs: Vec<RawDocumentBuf>,
    ids: Vec<String>,
    mut entries: HashMap<String, RawDocumentBuf>,
    mut users: HashMap<ObjectId, RawDocumentBuf>,
) -> Vec<Scored> {
    let mut last_use: HashMap<&str, usize> = HashMap::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        last_use.insert(id.as_str(), i);
    }
    fn take<K: std::hash::Hash + Eq>(
        map: &mut HashMap<K, RawDocumentBuf>,
        key: &K,
        last: bool,
    ) -> Option<RawDocumentBuf> {
        if last {
            map.remove(key)
        } else {
            map.get(key).cloned()
        }
    }
    let user_key = |id: &str| ObjectId::parse_str(id).ok();
    let mut out = Vec::with_capacity(docs.len());
    for (i, scoring) in docs.into_iter().enumerate() {
        let id = ids[i].as_str();
        let last = last_use.get(id) == Some(&i);
        out.push(Scored {
            scoring,
            entry: take(&mut entries, &ids[i], last),
            user: user_key(id).and_then(|k| take(&mut users, &k, last)),
        });
    }
    out
}

/// The campaign's entries of these user ids (by user id text) and the users
/// (by ObjectId hex): two lookups, on the `{_id.campaign_id, _id.user_id}`
/// and `_id` indexes.
pub async fn join_by_user(
    store: &Store,
    campaign_id: &str,
    user_ids: &[String],
) -> Result<
    (
        HashMap<String, RawDocumentBuf>,
        HashMap<ObjectId, RawDocumentBuf>,
    ),
    StoreError,
> {
    let entries = entries_by_user(store, campaign_id, user_ids).await?;
    let oids: Vec<ObjectId> = user_ids
        .iter()
        .filter_map(|s| ObjectId::parse_str(s).ok())
        .collect();
    let users = users_by_id(store, &oids).await?;
    Ok((entries, users))
}

/// The campaign's entries of these user ids, by user id text.
pub async fn entries_by_user(
    store: &Store,
    campaign_id: &str,
    user_ids: &[String],
) -> Result<HashMap<String, RawDocumentBuf>, StoreError> {
    lookup(
        store,
        "entries",
        &doc! { "_id.campaign_id": id_match(campaign_id) },
        "_id.user_id",
        user_ids,
        |id| id_forms(id),
        |d| id_text_at(d, &["_id", "user_id"]),
        None,
    )
    .await
}

/// A user id field as an ObjectId, when it is one (or its hex).
pub fn user_oid_at(doc: &RawDocument, path: &[&str]) -> Option<ObjectId> {
    get(doc, path).and_then(oid_of)
}

/// Text of an optional field path.
pub fn text_opt<'a>(doc: Option<&'a RawDocument>, path: &[&str]) -> Cow<'a, str> {
    doc.map(|d| text(get(d, path))).unwrap_or(Cow::Borrowed(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_id_twice_in_a_batch_keeps_its_join_both_times() {
        let d = |n: i32| RawDocumentBuf::from_document(&doc! { "n": n }).unwrap();
        let uid = "65f000000000000000000001".to_string();
        let other = "65f000000000000000000002".to_string();
        let entries: HashMap<String, RawDocumentBuf> =
            [(uid.clone(), d(10)), (other.clone(), d(20))].into();
        let users: HashMap<ObjectId, RawDocumentBuf> =
            [(ObjectId::parse_str(&uid).unwrap(), d(11))].into();
        let got = attach(
            vec![d(1), d(2), d(3)],
            vec![uid.clone(), other.clone(), uid.clone()],
            entries,
            users,
        );
        let n = |o: &Option<RawDocumentBuf>| o.as_ref().map(|d| d.get_i32("n").unwrap());
        assert_eq!((n(&got[0].entry), n(&got[0].user)), (Some(10), Some(11)));
        assert_eq!((n(&got[1].entry), n(&got[1].user)), (Some(20), None));
        assert_eq!((n(&got[2].entry), n(&got[2].user)), (Some(10), Some(11)));
    }
}
