//! The scoring family's shared reading: a cursor over the campaign's
//! `scoring` documents in index order (`{campaignId, selected, locale,
//! userId}`), joined per batch to the campaign's entries and their users —
//! two queries per batch, never one per row.

use std::borrow::Cow;
use std::collections::HashMap;

use futures::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId, Bson, Document, RawDocument, RawDocumentBuf};
use mongodb::Cursor;

use super::entry_rows::{oid_of, users_by_id, Person};
use super::raw::{get, text, text_at, BATCH};
use super::Source;
use crate::store::{id_forms, id_match, Store, StoreError};

/// The index order of the scoring family.
pub fn scoring_sort() -> Document {
    doc! { "locale": 1, "userId": 1 }
}

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
    cursor: Cursor<RawDocumentBuf>,
    join: bool,
}

impl ScoringReader {
    /// `filter`/`sort` as built by [`scoring_filter`]/[`scoring_sort`];
    /// `limit` caps the rows; `join` fetches entries and users.
    pub async fn open(
        src: &Source,
        filter: Document,
        limit: Option<i64>,
        join: bool,
    ) -> Result<Self, StoreError> {
        Self::open_with(src, filter, scoring_sort(), limit, join).await
    }

    /// As [`ScoringReader::open`] with another index-backed sort.
    pub async fn open_sorted(
        src: &Source,
        filter: Document,
        sort: Document,
        join: bool,
    ) -> Result<Self, StoreError> {
        Self::open_with(src, filter, sort, None, join).await
    }

    async fn open_with(
        src: &Source,
        filter: Document,
        sort: Document,
        limit: Option<i64>,
        join: bool,
    ) -> Result<Self, StoreError> {
        let coll = src.store.raw("scoring");
        let mut find = coll.find(filter).sort(sort).batch_size(BATCH as u32);
        if let Some(n) = limit {
            find = find.limit(n);
        }
        Ok(Self {
            store: src.store.clone(),
            campaign_id: src.campaign.id.clone(),
            cursor: find.await?,
            join,
        })
    }

    pub async fn next_batch(&mut self) -> Result<Option<Vec<Scored>>, StoreError> {
        let mut docs = Vec::with_capacity(BATCH);
        while docs.len() < BATCH {
            match self.cursor.try_next().await? {
                Some(d) => docs.push(d),
                None => break,
            }
        }
        if docs.is_empty() {
            return Ok(None);
        }
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
        let ids: Vec<Cow<'_, str>> = docs.iter().map(|d| text_at(d, &["userId"])).collect();
        let ids: Vec<String> = ids.into_iter().map(Cow::into_owned).collect();
        let (mut entries, mut users) = join_by_user(&self.store, &self.campaign_id, &ids).await?;
        Ok(Some(
            docs.into_iter()
                .zip(ids)
                .map(|(scoring, id)| Scored {
                    scoring,
                    entry: entries.remove(&id),
                    user: ObjectId::parse_str(&id).ok().and_then(|o| users.remove(&o)),
                })
                .collect(),
        ))
    }
}

/// The campaign's entries of these user ids (by user id text) and the users
/// (by ObjectId): two queries, on the `{_id.campaign_id, _id.user_id}` and
/// `_id` indexes.
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
    let users = users_by_id(store, oids).await?;
    Ok((entries, users))
}

/// The campaign's entries of these user ids, by user id text (one query).
pub async fn entries_by_user(
    store: &Store,
    campaign_id: &str,
    user_ids: &[String],
) -> Result<HashMap<String, RawDocumentBuf>, StoreError> {
    let mut forms: Vec<Bson> = Vec::with_capacity(user_ids.len() * 2);
    for id in user_ids.iter().filter(|s| !s.is_empty()) {
        forms.extend(id_forms(id));
    }
    let mut entries = HashMap::with_capacity(user_ids.len());
    if !forms.is_empty() {
        let mut cur = store
            .raw("entries")
            .find(doc! {
                "_id.campaign_id": id_match(campaign_id),
                "_id.user_id": { "$in": forms },
            })
            .batch_size(BATCH as u32)
            .await?;
        while let Some(e) = cur.try_next().await? {
            let id = text_at(&e, &["_id", "user_id"]).into_owned();
            entries.insert(id, e);
        }
    }
    Ok(entries)
}

/// A user id field as an ObjectId, when it is one (or its hex).
pub fn user_oid_at(doc: &RawDocument, path: &[&str]) -> Option<ObjectId> {
    get(doc, path).and_then(oid_of)
}

/// Text of an optional field path.
pub fn text_opt<'a>(doc: Option<&'a RawDocument>, path: &[&str]) -> Cow<'a, str> {
    doc.map(|d| text(get(d, path))).unwrap_or(Cow::Borrowed(""))
}
