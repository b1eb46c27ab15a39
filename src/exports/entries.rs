//! `entries`: every entry of the campaign as an entry row plus one column per
//! campaign preference; with `includeAllMarkets`, one more row per
//! additional market. Tab-separated `.tsv` (orig).

use std::borrow::Cow;

use async_trait::async_trait;
use mongodb::bson::{doc, Document};

use super::entry_rows::{
    additional_markets, preference_cell, EntryReader, Markets, Person, ENTRY_COLUMNS, EVENT_ID,
    SELECT_SHOW,
};
use super::raw::pick_into;
use super::{Body, CsvBody, ExportError, ExportType, FileFormat, Meta, Source};
use crate::encode::CsvOut;
use crate::store::id_match;

pub struct Entries;

#[async_trait]
impl ExportType for Entries {
    fn name(&self) -> &'static str {
        "entries"
    }
    fn body(&self) -> Body<'_> {
        Body::Csv(self)
    }
    fn format(&self) -> FileFormat {
        FileFormat::TSV
    }
    fn needs_markets(&self) -> bool {
        true
    }
    fn columns(&self) -> Vec<&'static str> {
        ENTRY_COLUMNS.to_vec()
    }

    async fn expected_rows(&self, src: &Source) -> Result<Option<u64>, ExportError> {
        Ok(Some(count_entries(src, doc! {}).await?))
    }
}

#[async_trait]
impl CsvBody for Entries {
    async fn write(&self, src: &Source, out: &mut CsvOut) -> Result<Meta, ExportError> {
        let prefs = &src.campaign.preferences;
        let mut header: Vec<String> = ENTRY_COLUMNS.iter().map(|c| c.to_string()).collect();
        header.extend(prefs.iter().map(|p| format!("#{}.{}", p.kind, p.id)));
        out.header(&header).await?;

        let pref_ids: Vec<&str> = prefs.iter().map(|p| p.id.as_str()).collect();
        let markets = Markets::new(&src.markets);
        let mut reader = EntryReader::new(src, doc! {});
        if let Some(p) = out.resume_from() {
            reader.resume(p)?;
        }
        while let Some(batch) = reader.next_batch().await? {
            let market = &markets.views[batch.market];
            let mut row: Vec<Cow<'_, str>> = Vec::with_capacity(header.len());
            let mut pref_values = vec![None; pref_ids.len()];
            for j in &batch.items {
                let p = Person::new(Some(&j.entry), j.user.as_deref());
                row.clear();
                row.extend(p.entry_cells(&src.campaign, market));
                pref_values.fill(None);
                if let Some(fields) = p.fields {
                    pick_into(fields, &pref_ids, &mut pref_values);
                }
                row.extend(pref_values.iter().map(|v| preference_cell(*v)));
                out.row(&row).await?;
                if src.params.include_all_markets {
                    for id in additional_markets(&j.entry) {
                        // An id that names no market of the campaign has no
                        // show to describe: skipped.
                        if let Some(extra) = markets.get(&id) {
                            row[SELECT_SHOW] = Cow::Borrowed(extra.select_show.as_str());
                            row[EVENT_ID] = Cow::Borrowed(extra.event_ids.as_str());
                            out.row(&row).await?;
                        }
                    }
                }
            }
            out.boundary(|| reader.position()).await?;
        }
        Ok(Meta::new())
    }
}

/// Entries of the campaign matching `extra` (the preliminary count; the
/// `_id.campaign_id` index).
pub async fn count_entries(src: &Source, extra: Document) -> Result<u64, ExportError> {
    let mut m = doc! { "_id.campaign_id": id_match(&src.campaign.id) };
    m.extend(extra);
    Ok(src.store.count("entries", m).await?)
}
