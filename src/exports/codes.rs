//! `codes`: the campaign's codes (`codes {campaignId}`, in code order) as
//! `code, assignedTo, assignedAt, status` (orig usage doc). `.csv`,
//! EXPORTS_BUCKET, then published to TMOL_BUCKET when configured.

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{doc, Document};

use super::raw::text_at;
use super::{ExportError, ExportType, FileFormat, Source};
use crate::encode::CsvOut;
use crate::store::id_match;

pub struct Codes;

const COLUMNS: [&str; 4] = ["code", "assignedTo", "assignedAt", "status"];

/// The campaign's codes matching `extra` (index `{campaignId, code}`).
pub fn codes_filter(campaign_id: &str, extra: Document) -> Document {
    let mut f = doc! { "campaignId": id_match(campaign_id) };
    f.extend(extra);
    f
}

#[async_trait]
impl ExportType for Codes {
    fn name(&self) -> &'static str {
        "codes"
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
                .count("codes", codes_filter(&src.campaign.id, doc! {}))
                .await?,
        ))
    }

    async fn write(&self, src: &Source, out: &mut CsvOut) -> Result<(), ExportError> {
        out.header(&COLUMNS).await?;
        let mut cur = src
            .store
            .raw("codes")
            .find(codes_filter(&src.campaign.id, doc! {}))
            .sort(doc! { "code": 1 })
            .batch_size(1000)
            .await
            .map_err(crate::store::StoreError)?;
        while let Some(c) = cur.try_next().await.map_err(crate::store::StoreError)? {
            out.row(&[
                text_at(&c, &["code"]),
                text_at(&c, &["assignedTo"]),
                text_at(&c, &["assignedAt"]),
                text_at(&c, &["status"]),
            ])
            .await?;
        }
        Ok(())
    }
}
