//! `scoring`: every scoring document of the campaign (in `userId` order,
//! index `{campaignId, userId}`), joined per batch to the
//! entry and user: the entry row (no preference columns, no additional
//! rows) + `nudetect_score, nudetect_score_band, account_fanscore,
//! latitude, longitude`. Tab-separated `.txt` (orig), SCORING_BUCKET,
//! `bucket-owner-full-control`. A scoring document without an entry still
//! gets its row: id, locale and market from the scoring document.

use std::borrow::Cow;

use async_trait::async_trait;
use mongodb::bson::{doc, RawDocumentBuf};

use super::entry_rows::{entry_cells, MarketView, Markets, ENTRY_COLUMNS};
use super::raw::text_at;
use super::scoring_rows::{scoring_filter, Scored, ScoringReader};
use super::{Body, CcpaFiles, CsvBody, ExportError, ExportType, FileFormat, Meta, Source};
use crate::encode::CsvOut;
use crate::sink::DestKind;

pub struct Scoring;

const EXTRA: [&str; 5] = [
    "nudetect_score",
    "nudetect_score_band",
    "account_fanscore",
    "latitude",
    "longitude",
];

/// The entry to describe a scoring row with: its own, or one made of the
/// scoring document's id, locale and market.
fn entry_or_stub(s: &Scored) -> Cow<'_, RawDocumentBuf> {
    match &s.entry {
        Some(e) => Cow::Borrowed(e),
        None => Cow::Owned(
            RawDocumentBuf::from_document(&doc! {
                "_id": { "user_id": s.field("userId").as_ref() },
                "locale": s.field("locale").as_ref(),
                "fields": { "market": s.field("market").as_ref() },
            })
            .unwrap_or_default(),
        ),
    }
}

#[async_trait]
impl ExportType for Scoring {
    fn name(&self) -> &'static str {
        "scoring"
    }
    fn body(&self) -> Body<'_> {
        Body::Csv(self)
    }
    /// A partner pipeline's file.
    fn ccpa_files(&self) -> CcpaFiles {
        CcpaFiles::Keep
    }
    fn format(&self) -> FileFormat {
        FileFormat::TXT
    }
    fn destination(&self) -> DestKind {
        DestKind::Scoring
    }
    fn columns(&self) -> Vec<&'static str> {
        let mut c = ENTRY_COLUMNS.to_vec();
        c.extend(EXTRA);
        c
    }

    async fn expected_rows(&self, src: &Source) -> Result<Option<u64>, ExportError> {
        let f = scoring_filter(&src.campaign.id, doc! {});
        Ok(Some(src.store.count("scoring", f).await?))
    }
}

#[async_trait]
impl CsvBody for Scoring {
    async fn write(&self, src: &Source, out: &mut CsvOut) -> Result<Meta, ExportError> {
        out.header(&self.columns()).await?;
        let markets = Markets::new(&src.markets);
        let unknown = MarketView::unknown();
        // In user order (index `{campaignId, userId}`).
        let f = scoring_filter(&src.campaign.id, doc! {});
        let mut reader = ScoringReader::open(src, f, None, true).resume(out.resume_from())?;
        while let Some(batch) = reader.next_batch().await? {
            for s in &batch {
                let entry = entry_or_stub(s);
                let market = markets.get(&s.market_id()).unwrap_or(&unknown);
                let mut row: Vec<Cow<'_, str>> = Vec::with_capacity(22);
                row.extend(entry_cells(
                    &src.campaign,
                    market,
                    &entry,
                    s.user.as_deref(),
                ));
                row.extend([
                    text_at(&s.scoring, &["nudetect", "score"]),
                    text_at(&s.scoring, &["nudetect", "scoreBand"]),
                    s.field("accountFanscore"),
                    text_at(&entry, &["origin", "ip", "latitude"]),
                    text_at(&entry, &["origin", "ip", "longitude"]),
                ]);
                out.row(&row).await?;
            }
            out.boundary(|| reader.position()).await?;
        }
        Ok(Meta::new())
    }
}
