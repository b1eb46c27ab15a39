//! `codes`: the campaign's codes (`codes {campaignId, code}`, in code
//! order) as `code, assignedTo, assignedAt, status` (orig usage doc).
//! `.csv`, EXPORTS_BUCKET, then published to TMOL_BUCKET when configured.

use async_trait::async_trait;
use mongodb::bson::{doc, Document};

use super::raw::text_at;
use super::{Body, CsvBody, ExportError, ExportType, FileFormat, Meta, Source};
use crate::encode::CsvOut;
use crate::store::{id_match, Reader};

pub struct Codes;

const COLUMNS: [&str; 4] = ["code", "assignedTo", "assignedAt", "status"];

/// The campaign's codes matching `extra` (index `{campaignId, code}`).
pub fn codes_filter(campaign_id: &str, extra: Document) -> Document {
    let mut f = doc! { "campaignId": id_match(campaign_id) };
    f.extend(extra);
    f
}

/// The code family's stream: codes matching `filter` in code order (a
/// code need not be unique: the reader tells ties apart by `_id`).
pub fn codes_reader(src: &Source, filter: Document) -> Reader {
    Reader::new(&src.store, "codes", filter, "code")
}

/// Codes assigned to somebody.
pub fn assigned() -> Document {
    doc! { "assignedTo": { "$exists": true, "$nin": [null, ""] } }
}

#[async_trait]
impl ExportType for Codes {
    fn name(&self) -> &'static str {
        "codes"
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
                .count("codes", codes_filter(&src.campaign.id, doc! {}))
                .await?,
        ))
    }
}

#[async_trait]
impl CsvBody for Codes {
    async fn write(&self, src: &Source, out: &mut CsvOut) -> Result<Meta, ExportError> {
        out.header(&COLUMNS).await?;
        let mut reader =
            codes_reader(src, codes_filter(&src.campaign.id, doc! {})).resume(out.resume_from())?;
        while let Some(batch) = reader.next_batch().await? {
            for c in &batch {
                out.row(&[
                    text_at(c, &["code"]),
                    text_at(c, &["assignedTo"]),
                    text_at(c, &["assignedAt"]),
                    text_at(c, &["status"]),
                ])
                .await?;
            }
            out.boundary(|| reader.position()).await?;
        }
        Ok(Meta::new())
    }
}
