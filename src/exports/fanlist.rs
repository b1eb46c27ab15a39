//! `fanlist`: one row per user of the campaign — `id, email, first_name,
//! last_name, Zip Code, locale, markets` (`markets` = `|`-joined names of
//! the entry's market and additional markets) (*ours*). `.csv`,
//! EXPORTS_BUCKET.
//!
//! The campaign's entries are read in user order (index `{_id.campaign_id,
//! _id.user_id}`) and adjacent entries of the same user are merged as they
//! pass: memory is one batch and one group, never the campaign.

use async_trait::async_trait;
use mongodb::bson::{doc, RawDocumentBuf};

use super::entries::count_entries;
use super::entry_rows::{additional_markets, join_users, Joined, Markets, Person, ENTRY_KEY};
use super::raw::text_at;
use super::{Body, CsvBody, ExportError, ExportType, FileFormat, Meta, Source};
use crate::encode::CsvOut;
use crate::store::{id_match, Reader};

pub struct Fanlist;

const COLUMNS: [&str; 7] = [
    "id",
    "email",
    "first_name",
    "last_name",
    "Zip Code",
    "locale",
    "markets",
];

/// One user's entries seen so far: the first entry describes the person,
/// every entry adds its markets.
struct Group {
    id: String,
    first: Joined,
    markets: Vec<usize>,
}

/// Add the entry's market and additional markets (known ones, once each).
fn add_markets(list: &mut Vec<usize>, entry: &RawDocumentBuf, markets: &Markets) {
    let own = text_at(entry, &["fields", "market"]);
    for id in std::iter::once(own).chain(additional_markets(entry)) {
        if let Some(i) = markets.index(&id) {
            if !list.contains(&i) {
                list.push(i);
            }
        }
    }
}

impl Group {
    async fn write(self, out: &mut CsvOut, markets: &Markets) -> Result<(), ExportError> {
        let p = Person::new(Some(&self.first.entry), self.first.user.as_deref());
        let names: Vec<&str> = self
            .markets
            .iter()
            .map(|&i| markets.views[i].name.as_str())
            .collect();
        out.row(&[
            self.id.as_str(),
            &p.email(),
            &p.first_name(),
            &p.last_name(),
            &p.zip(),
            &text_at(&self.first.entry, &["locale"]),
            &names.join("|"),
        ])
        .await?;
        Ok(())
    }
}

#[async_trait]
impl ExportType for Fanlist {
    fn name(&self) -> &'static str {
        "fanlist"
    }
    fn body(&self) -> Body<'_> {
        Body::Csv(self)
    }
    fn format(&self) -> FileFormat {
        FileFormat::CSV
    }
    fn needs_markets(&self) -> bool {
        true
    }
    fn columns(&self) -> Vec<&'static str> {
        COLUMNS.to_vec()
    }

    async fn expected_rows(&self, src: &Source) -> Result<Option<u64>, ExportError> {
        Ok(Some(count_entries(src, doc! {}).await?))
    }
}

#[async_trait]
impl CsvBody for Fanlist {
    async fn write(&self, src: &Source, out: &mut CsvOut) -> Result<Meta, ExportError> {
        out.header(&COLUMNS).await?;
        let markets = Markets::new(&src.markets);
        let mut reader = Reader::new(
            &src.store,
            "entries",
            doc! { "_id.campaign_id": id_match(&src.campaign.id) },
            ENTRY_KEY,
        )
        .resume(out.resume_from())?;
        let mut group: Option<Group> = None;
        while let Some(entries) = reader.next_batch().await? {
            for j in join_users(&src.store, entries).await? {
                let id = text_at(&j.entry, &["_id", "user_id"]).into_owned();
                match &mut group {
                    Some(g) if g.id == id => {
                        add_markets(&mut g.markets, &j.entry, &markets);
                        continue;
                    }
                    _ => {}
                }
                if let Some(done) = group.take() {
                    done.write(out, &markets).await?;
                }
                let mut list = Vec::new();
                add_markets(&mut list, &j.entry, &markets);
                group = Some(Group {
                    id,
                    first: j,
                    markets: list,
                });
            }
            // A row boundary: the batch's last user is written too (an
            // entry's `_id` holds its user, so a user's entries of one
            // campaign never continue into the next batch).
            if let Some(done) = group.take() {
                done.write(out, &markets).await?;
            }
            out.boundary(|| reader.position()).await?;
        }
        if let Some(done) = group.take() {
            done.write(out, &markets).await?;
        }
        Ok(Meta::new())
    }
}
