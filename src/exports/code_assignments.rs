//! `codeAssignments`: the campaign's assigned codes (in code order), joined
//! per batch to the assignee's entry for the market: `code, userId,
//! campaignId, assignmentDate, market, Event_ID`. `market` is the entry's
//! market id (else the code's `marketId`), `Event_ID` that market's event
//! ids (*ours*). A code whose assignee has no entry keeps its row. `.csv`,
//! EXPORTS_BUCKET, then published to TMOL_BUCKET when configured.

use std::borrow::Cow;

use async_trait::async_trait;

use super::codes::{assigned, codes_filter, codes_reader};
use super::entry_rows::Markets;
use super::raw::text_at;
use super::scoring_rows::entries_by_user;
use super::{Body, CsvBody, ExportError, ExportType, FileFormat, Meta, Source};
use crate::encode::CsvOut;

pub struct CodeAssignments;

const COLUMNS: [&str; 6] = [
    "code",
    "userId",
    "campaignId",
    "assignmentDate",
    "market",
    "Event_ID",
];

#[async_trait]
impl ExportType for CodeAssignments {
    fn name(&self) -> &'static str {
        "codeAssignments"
    }
    fn body(&self) -> Body<'_> {
        Body::Csv(self)
    }
    fn format(&self) -> FileFormat {
        FileFormat::CSV
    }
    fn publish_to_tmol(&self) -> bool {
        true
    }
    fn columns(&self) -> Vec<&'static str> {
        COLUMNS.to_vec()
    }

    async fn expected_rows(&self, src: &Source) -> Result<Option<u64>, ExportError> {
        Ok(Some(
            src.store
                .count("codes", codes_filter(&src.campaign.id, assigned()))
                .await?,
        ))
    }
}

#[async_trait]
impl CsvBody for CodeAssignments {
    async fn write(&self, src: &Source, out: &mut CsvOut) -> Result<Meta, ExportError> {
        out.header(&COLUMNS).await?;
        let markets = Markets::new(&src.markets);
        let mut reader = codes_reader(src, codes_filter(&src.campaign.id, assigned()))
            .resume(out.resume_from())?;
        while let Some(batch) = reader.next_batch().await? {
            let ids: Vec<String> = batch
                .iter()
                .map(|c| text_at(c, &["assignedTo"]).into_owned())
                .collect();
            let entries = entries_by_user(&src.store, &src.campaign.id, &ids).await?;
            for (c, id) in batch.iter().zip(&ids) {
                let mut market = entries
                    .get(id)
                    .map(|e| text_at(e, &["fields", "market"]))
                    .unwrap_or(Cow::Borrowed(""));
                if market.is_empty() {
                    market = text_at(c, &["marketId"]);
                }
                let event_ids = markets
                    .get(&market)
                    .map(|m| m.event_ids.as_str())
                    .unwrap_or("");
                out.row(&[
                    text_at(c, &["code"]).as_ref(),
                    id,
                    src.campaign.id.as_str(),
                    text_at(c, &["assignedAt"]).as_ref(),
                    market.as_ref(),
                    event_ids,
                ])
                .await?;
            }
            out.boundary(|| reader.position()).await?;
        }
        Ok(Meta::new())
    }
}
