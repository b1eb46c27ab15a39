//! The entry family's shared reading and row building: for each market of
//! the campaign in turn, a cursor over its entries (index order) plus one
//! batched `users` lookup per batch — never one query per entry.

use std::borrow::Cow;
use std::collections::HashMap;

use mongodb::bson::{doc, oid::ObjectId, Bson, Document, RawDocument, RawDocumentBuf};

use super::raw::{array_of, doc_of, get, or_else, pick, set, text, Value};
use super::Source;
use crate::store::{id_match, lookup, Campaign, Market, Reader, Store, StoreError};

/// The entry-row header (spec: exports.md "Entry row", order exact).
pub const ENTRY_COLUMNS: [&str; 17] = [
    "id",
    "contest_title",
    "entry_date",
    "tm_id",
    "globalUserId",
    "ip_address",
    "email",
    "first_name",
    "last_name",
    "Zip Code",
    "Mobile Phone",
    "Hbase_ID",
    "Select Show",
    "Event_ID",
    "locale",
    "campaign_id",
    "Phone confirmed",
];

/// Index of `Select Show` / `Event_ID` in an entry row.
pub const SELECT_SHOW: usize = 12;
pub const EVENT_ID: usize = 13;

/// A market's derived cells, computed once per export.
#[derive(Debug, Clone)]
pub struct MarketView {
    pub id: String,
    pub name: String,
    pub select_show: String,
    pub event_ids: String,
}

impl MarketView {
    /// The cells of an entry whose market is not one of the campaign's.
    pub fn unknown() -> Self {
        Self {
            id: String::new(),
            name: String::new(),
            select_show: String::new(),
            event_ids: String::new(),
        }
    }

    pub fn new(m: &Market) -> Self {
        Self {
            id: m.id.clone(),
            name: m.name.clone(),
            select_show: select_show(m),
            event_ids: m.event_ids.join(","),
        }
    }
}

/// `M/DD - City, State` (UTC; month not padded, day padded). Without an
/// event date: `City, State`.
pub fn select_show(m: &Market) -> String {
    let place = format!("{}, {}", m.city, m.state);
    match m
        .event_date
        .and_then(|d| chrono::DateTime::from_timestamp_millis(d.timestamp_millis()))
    {
        Some(t) => format!("{} - {place}", t.format("%-m/%d")),
        None => place,
    }
}

/// Markets by id, for additional-market rows.
pub struct Markets {
    pub views: Vec<MarketView>,
    by_id: HashMap<String, usize>,
}

impl Markets {
    pub fn new(markets: &[Market]) -> Self {
        let views: Vec<MarketView> = markets.iter().map(MarketView::new).collect();
        let by_id = views
            .iter()
            .enumerate()
            .map(|(i, v)| (v.id.clone(), i))
            .collect();
        Self { views, by_id }
    }
    pub fn get(&self, id: &str) -> Option<&MarketView> {
        self.by_id.get(id).map(|&i| &self.views[i])
    }
    /// Index of the market in the campaign's list.
    pub fn index(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }
}

/// An entry and its user (absent when the user document is missing).
pub struct Joined {
    pub entry: RawDocumentBuf,
    pub user: Option<RawDocumentBuf>,
}

/// One batch of joined entries of one market.
pub struct Batch {
    /// Index into the campaign's markets.
    pub market: usize,
    pub items: Vec<Joined>,
}

/// The entry key every entry-family reader streams in: unique within a
/// campaign (an entry's `_id` is `{campaign_id, user_id}`).
pub const ENTRY_KEY: &str = "_id.user_id";

/// Streams the campaign's entries market by market, joined to users.
pub struct EntryReader<'s> {
    src: &'s Source,
    extra: Document,
    market: usize,
    reader: Option<Reader>,
}

impl<'s> EntryReader<'s> {
    /// `extra`: more filter conditions (e.g. an opt-in flag).
    pub fn new(src: &'s Source, extra: Document) -> Self {
        Self {
            src,
            extra,
            market: 0,
            reader: None,
        }
    }

    /// The filter for one market (index `{_id.campaign_id, fields.market,
    /// _id.user_id}`: equality prefix, then the key's order).
    pub fn filter(campaign_id: &str, market_id: &str, extra: &Document) -> Document {
        let mut f = doc! {
            "_id.campaign_id": id_match(campaign_id),
            "fields.market": id_match(market_id),
        };
        f.extend(extra.clone());
        f
    }

    /// Where the reading stands (see [`Reader::position`]): the market and
    /// the position in it.
    pub fn position(&self) -> Bson {
        let market = self
            .src
            .markets
            .get(self.market)
            .map(|m| m.id.clone())
            .unwrap_or_default();
        let within = self
            .reader
            .as_ref()
            .map(Reader::position)
            .unwrap_or(Bson::Null);
        Bson::Document(doc! { "market": market, "in": within })
    }

    /// Continue after `position` (from [`EntryReader::position`]).
    pub fn resume(&mut self, position: &Bson) -> Result<(), StoreError> {
        let Bson::Document(p) = position else {
            return Ok(());
        };
        let market = p.get_str("market").unwrap_or_default();
        // Markets are read in `_id` order; one removed since the
        // checkpoint continues with the next.
        self.market = self
            .src
            .markets
            .iter()
            .position(|m| m.id.as_str() >= market)
            .unwrap_or(self.src.markets.len());
        if let Some(m) = self.src.markets.get(self.market).filter(|m| m.id == market) {
            let filter = Self::filter(&self.src.campaign.id, &m.id, &self.extra);
            let reader = Reader::new(&self.src.store, "entries", filter, ENTRY_KEY);
            self.reader = Some(reader.resume(p.get("in"))?);
        }
        Ok(())
    }

    pub async fn next_batch(&mut self) -> Result<Option<Batch>, StoreError> {
        loop {
            let Some(m) = self.src.markets.get(self.market) else {
                return Ok(None);
            };
            let reader = self.reader.get_or_insert_with(|| {
                let filter = Self::filter(&self.src.campaign.id, &m.id, &self.extra);
                Reader::new(&self.src.store, "entries", filter, ENTRY_KEY)
            });
            let Some(entries) = reader.next_batch().await? else {
                self.reader = None;
                self.market += 1;
                continue;
            };
            let items = join_users(&self.src.store, entries).await?;
            return Ok(Some(Batch {
                market: self.market,
                items,
            }));
        }
    }
}

/// One `users` lookup for a batch of entries.
pub async fn join_users(
    store: &Store,
    entries: Vec<RawDocumentBuf>,
) -> Result<Vec<Joined>, StoreError> {
    let oids: Vec<Option<ObjectId>> = entries.iter().map(|e| user_oid(e)).collect();
    let ids: Vec<ObjectId> = oids.iter().flatten().copied().collect();
    let mut users = users_by_id(store, &ids).await?;
    Ok(entries
        .into_iter()
        .zip(oids)
        .map(|(entry, oid)| {
            // One entry per user per campaign: each user is taken once.
            let user = oid.and_then(|o| users.remove(&o));
            Joined { entry, user }
        })
        .collect())
}

/// The users of these ids, by id: one `_id` lookup.
pub async fn users_by_id(
    store: &Store,
    ids: &[ObjectId],
) -> Result<HashMap<ObjectId, RawDocumentBuf>, StoreError> {
    // Top-level projection: a dotted one is right on MongoDB too, but the
    // nx-27017 stand-in returns it as one flattened key.
    let projection = doc! { "integrations": 1 };
    lookup(
        store,
        "users",
        &doc! {},
        "_id",
        ids,
        |o| vec![Bson::ObjectId(*o)],
        |d| d.get_object_id("_id").ok(),
        Some(&projection),
    )
    .await
}

/// The entry's user id as an ObjectId (stored as a string or an ObjectId).
pub fn user_oid(entry: &RawDocument) -> Option<ObjectId> {
    oid_of(get(entry, &["_id", "user_id"])?)
}

/// A user id value as an ObjectId (stored as a string or an ObjectId).
pub fn oid_of(v: Value<'_>) -> Option<ObjectId> {
    match v {
        Value::Bson(mongodb::bson::RawBsonRef::ObjectId(o)) => Some(o),
        Value::Bson(mongodb::bson::RawBsonRef::String(s)) => ObjectId::parse_str(s).ok(),
        _ => None,
    }
}

/// The fields of an entry and its user that rows read, for types with or
/// without a market (entry absent → the user's values only). Built in one
/// pass per sub-document ([`pick`]); each accessor is then a lookup-free
/// choice between the picked values.
pub struct Person<'a> {
    user_id: Option<Value<'a>>,
    created: Option<Value<'a>>,
    phone_confirmed: Option<Value<'a>>,
    ip_address: Option<Value<'a>>,
    ip_postal_code: Option<Value<'a>>,
    locale: Option<Value<'a>>,
    email: Option<Value<'a>>,
    first_name: Option<Value<'a>>,
    last_name: Option<Value<'a>>,
    phone: Option<Value<'a>>,
    /// The entry's `fields` (preferences, additional markets).
    pub fields: Option<&'a RawDocument>,
    tm: Ticketmaster<'a>,
}

/// The user's `integrations.ticketmaster` values.
struct Ticketmaster<'a> {
    id: Option<Value<'a>>,
    global_user_id: Option<Value<'a>>,
    member_id: Option<Value<'a>>,
    email: Option<Value<'a>>,
    phone: Option<Value<'a>>,
    postal_code: Option<Value<'a>>,
    first: Option<Value<'a>>,
    last: Option<Value<'a>>,
}

impl<'a> Ticketmaster<'a> {
    fn of(user: Option<&'a RawDocument>) -> Self {
        let [integrations] = pick(user, ["integrations"]);
        let [tm] = pick(doc_of(integrations), ["ticketmaster"]);
        let [id, global_user_id, member_id, email, phone, postal_code, name] = pick(
            doc_of(tm),
            [
                "id",
                "globalUserId",
                "member_id",
                "email",
                "phone",
                "postalCode",
                "name",
            ],
        );
        let [first, last] = pick(doc_of(name), ["first", "last"]);
        Self {
            id,
            global_user_id,
            member_id,
            email,
            phone,
            postal_code,
            first,
            last,
        }
    }
}

impl<'a> Person<'a> {
    pub fn new(entry: Option<&'a RawDocument>, user: Option<&'a RawDocument>) -> Self {
        let [id, fields, origin, date, locale] =
            pick(entry, ["_id", "fields", "origin", "date", "locale"]);
        let [user_id] = pick(doc_of(id), ["user_id"]);
        let fields = doc_of(fields);
        let [email, first_name, last_name, phone] =
            pick(fields, ["email", "first_name", "last_name", "phone"]);
        let [ip] = pick(doc_of(origin), ["ip"]);
        let [ip_address, ip_postal_code] = pick(doc_of(ip), ["address", "postalCode"]);
        let [created, phone_confirmed] = pick(doc_of(date), ["created", "phoneConfirmed"]);
        Self {
            user_id,
            created,
            phone_confirmed,
            ip_address,
            ip_postal_code,
            locale,
            email,
            first_name,
            last_name,
            phone,
            fields,
            tm: Ticketmaster::of(user),
        }
    }
    /// The entry's `locale`.
    pub fn locale(&self) -> Cow<'a, str> {
        text(self.locale)
    }
    /// Entry `fields.email`, else the user's ticketmaster email.
    pub fn email(&self) -> Cow<'a, str> {
        or_else(text(self.email), || text(self.tm.email))
    }
    /// The user's ticketmaster first name, else the entry's.
    pub fn first_name(&self) -> Cow<'a, str> {
        or_else(text(self.tm.first), || text(self.first_name))
    }
    pub fn last_name(&self) -> Cow<'a, str> {
        or_else(text(self.tm.last), || text(self.last_name))
    }
    /// Entry `fields.phone`, else the user's ticketmaster phone.
    pub fn phone(&self) -> Cow<'a, str> {
        or_else(text(self.phone), || text(self.tm.phone))
    }
    /// Entry `origin.ip.postalCode`, else the user's ticketmaster one.
    pub fn zip(&self) -> Cow<'a, str> {
        or_else(text(self.ip_postal_code), || text(self.tm.postal_code))
    }

    /// The 17 entry-row cells (spec: exports.md "Entry row").
    pub fn entry_cells(
        &self,
        campaign: &'a Campaign,
        market: &'a MarketView,
    ) -> [Cow<'a, str>; 17] {
        [
            text(self.user_id),
            Cow::Borrowed(campaign.name.as_str()),
            text(self.created),
            text(self.tm.id),
            text(self.tm.global_user_id),
            text(self.ip_address),
            self.email(),
            self.first_name(),
            self.last_name(),
            self.zip(),
            self.phone(),
            text(self.tm.member_id),
            Cow::Borrowed(market.select_show.as_str()),
            Cow::Borrowed(market.event_ids.as_str()),
            self.locale(),
            Cow::Borrowed(campaign.id.as_str()),
            Cow::Borrowed(if set(self.phone_confirmed) {
                "true"
            } else {
                "false"
            }),
        ]
    }
}

/// Ids in the entry's `fields.additionalMarkets`.
pub fn additional_markets(entry: &RawDocument) -> Vec<Cow<'_, str>> {
    array_of(get(entry, &["fields", "additionalMarkets"]))
        .into_iter()
        .map(|v| text(Some(v)))
        .collect()
}

/// Column indexes of the entry row used by the narrower types.
pub const ENTRY_DATE: usize = 2;
pub const EMAIL: usize = 6;
pub const FIRST_NAME: usize = 7;
pub const LAST_NAME: usize = 8;
pub const ZIP_CODE: usize = 9;
pub const MOBILE_PHONE: usize = 10;
pub const LOCALE: usize = 14;

/// The 17 entry-row cells of an entry and its user.
pub fn entry_cells<'a>(
    campaign: &'a Campaign,
    market: &'a MarketView,
    entry: &'a RawDocument,
    user: Option<&'a RawDocument>,
) -> [Cow<'a, str>; 17] {
    Person::new(Some(entry), user).entry_cells(campaign, market)
}

/// A preference cell from the picked value of `fields[pref.id]`: `false`
/// when missing.
pub fn preference_cell(v: Option<Value<'_>>) -> Cow<'_, str> {
    match v {
        None | Some(Value::Bson(mongodb::bson::RawBsonRef::Null)) => Cow::Borrowed("false"),
        v => text(v),
    }
}

/// The opt-in lists' header (*ours*): `artistOptIn`, `livenationOptIn`,
/// each file of `promoterEmailOptIn`.
pub const OPT_IN_COLUMNS: [&str; 7] = [
    "email",
    "first_name",
    "last_name",
    "Zip Code",
    "locale",
    "Select Show",
    "entry_date",
];

/// `artistSmsOptIn`: the phone instead of the email.
pub const SMS_OPT_IN_COLUMNS: [&str; 7] = [
    "Mobile Phone",
    "first_name",
    "last_name",
    "Zip Code",
    "locale",
    "Select Show",
    "entry_date",
];

/// Header plus one row per entry matching `extra`, market by market. With
/// `sms`, the first column is the phone and entries without one are left
/// out (the phone may come from the user, so this is checked after the
/// join).
pub async fn write_opt_ins(
    src: &Source,
    extra: Document,
    out: &mut crate::encode::CsvOut,
    sms: bool,
) -> Result<(), super::ExportError> {
    out.header(if sms {
        &SMS_OPT_IN_COLUMNS
    } else {
        &OPT_IN_COLUMNS
    })
    .await?;
    let markets = Markets::new(&src.markets);
    let mut reader = EntryReader::new(src, extra);
    if let Some(p) = out.resume_from() {
        reader.resume(p)?;
    }
    while let Some(batch) = reader.next_batch().await? {
        let market = &markets.views[batch.market];
        for j in &batch.items {
            let c = entry_cells(&src.campaign, market, &j.entry, j.user.as_deref());
            let first = if sms { MOBILE_PHONE } else { EMAIL };
            if sms && c[first].is_empty() {
                continue;
            }
            out.row(&[
                &c[first],
                &c[FIRST_NAME],
                &c[LAST_NAME],
                &c[ZIP_CODE],
                &c[LOCALE],
                &c[SELECT_SHOW],
                &c[ENTRY_DATE],
            ])
            .await?;
        }
        out.boundary(|| reader.position()).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::DateTime;

    /// A raw document whose `marker` string bytes are replaced by the same
    /// number of bytes that are not UTF-8 (no BSON library writes those).
    fn with_bad_bytes(d: &Document, marker: &str, bad: &[u8]) -> RawDocumentBuf {
        assert_eq!(marker.len(), bad.len());
        let mut bytes = RawDocumentBuf::from_document(d).unwrap().into_bytes();
        let at = bytes
            .windows(marker.len())
            .position(|w| w == marker.as_bytes())
            .unwrap();
        bytes[at..at + bad.len()].copy_from_slice(bad);
        RawDocumentBuf::from_bytes(bytes).unwrap()
    }

    #[test]
    fn a_string_that_is_not_utf8_gets_u_fffd_in_its_own_cell_only() {
        let entry = doc! {
            "_id": { "campaign_id": "c1", "user_id": "65f000000000000000000001" },
            // The bad field comes before the others: they must still be read.
            "fields": { "email": "an~~@x.io", "first_name": "Ann", "phone": "+1555" },
            "origin": { "ip": { "address": "10.0.0.1", "postalCode": "10001" } },
            "locale": "en-us",
            "date": { "created": DateTime::from_millis(0) },
        };
        let entry = with_bad_bytes(&entry, "an~~@x.io", b"an\xff\xfe@x.io");
        // The user has an email: it must not stand in for the entry's.
        let user = RawDocumentBuf::from_document(&doc! {
            "integrations": { "ticketmaster": { "email": "user@x.io", "id": "tm1" } }
        })
        .unwrap();
        let campaign = Campaign {
            id: "c1".into(),
            name: "Tour".into(),
            ..Default::default()
        };
        let market = MarketView::unknown();
        let cells = entry_cells(&campaign, &market, &entry, Some(&user));
        assert_eq!(cells[EMAIL], "an\u{fffd}\u{fffd}@x.io");
        assert_eq!(cells[FIRST_NAME], "Ann");
        assert_eq!(cells[MOBILE_PHONE], "+1555");
        assert_eq!(cells[ZIP_CODE], "10001");
        assert_eq!(cells[LOCALE], "en-us");
        assert_eq!(cells[0], "65f000000000000000000001");
        assert_eq!(cells[3], "tm1");
        assert_eq!(cells[ENTRY_DATE], "1970-01-01T00:00:00.000Z");
    }
}
