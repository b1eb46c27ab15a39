//! `verifiedEntries`: scoring documents with `selected = true` (index order)
//! joined per batch to entry/user (the original queried Athena):
//! `memberId, email, first_name, last_name, Mobile Phone, locale, market,
//! score`. `.csv` at `campaigns/{campaignId}/verified-entries/{exportId}.csv`,
//! VF_SCORING_BUCKET, `bucket-owner-full-control`.

use async_trait::async_trait;
use mongodb::bson::doc;

use super::scoring_rows::{scoring_filter, ScoringReader};
use super::{
    Body, CcpaFiles, CsvBody, ExportError, ExportType, FileFormat, KeyParts, Meta, Source,
};
use crate::encode::CsvOut;
use crate::sink::DestKind;

pub struct VerifiedEntries;

const COLUMNS: [&str; 8] = [
    "memberId",
    "email",
    "first_name",
    "last_name",
    "Mobile Phone",
    "locale",
    "market",
    "score",
];

#[async_trait]
impl ExportType for VerifiedEntries {
    fn name(&self) -> &'static str {
        "verifiedEntries"
    }
    fn body(&self) -> Body<'_> {
        Body::Csv(self)
    }
    /// A partner pipeline's file.
    fn ccpa_files(&self) -> CcpaFiles {
        CcpaFiles::Keep
    }
    fn format(&self) -> FileFormat {
        FileFormat::CSV
    }
    fn destination(&self) -> DestKind {
        DestKind::VfScoring
    }
    fn key(&self, k: &KeyParts<'_>) -> String {
        format!(
            "campaigns/{}/verified-entries/{}.csv{}",
            k.campaign_id,
            k.export_id,
            if k.gzip { ".gz" } else { "" }
        )
    }
    fn columns(&self) -> Vec<&'static str> {
        COLUMNS.to_vec()
    }

    async fn expected_rows(&self, src: &Source) -> Result<Option<u64>, ExportError> {
        let f = scoring_filter(&src.campaign.id, doc! { "selected": true });
        Ok(Some(src.store.count("scoring", f).await?))
    }
}

#[async_trait]
impl CsvBody for VerifiedEntries {
    async fn write(&self, src: &Source, out: &mut CsvOut) -> Result<Meta, ExportError> {
        out.header(&COLUMNS).await?;
        let f = scoring_filter(&src.campaign.id, doc! { "selected": true });
        let mut reader = ScoringReader::open(src, f, None, true).resume(out.resume_from())?;
        while let Some(batch) = reader.next_batch().await? {
            for s in &batch {
                let p = s.person();
                out.row(&[
                    s.field("memberId"),
                    p.email(),
                    p.first_name(),
                    p.last_name(),
                    p.phone(),
                    s.field("locale"),
                    s.field("market"),
                    s.field("score"),
                ])
                .await?;
            }
            out.boundary(|| reader.position()).await?;
        }
        Ok(Meta::new())
    }
}
