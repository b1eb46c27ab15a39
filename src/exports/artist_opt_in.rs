//! `artistOptIn`: entries with `fields.allowMarketing = true`: `email, first_name, last_name, Zip Code, locale, Select Show, entry_date` (*ours*), market by market. `.csv`, EXPORTS_BUCKET.

use async_trait::async_trait;
use mongodb::bson::doc;

use super::entries::count_entries;
use super::entry_rows::{write_opt_ins, OPT_IN_COLUMNS};
use super::{ExportError, ExportType, FileFormat, Meta, Source};
use crate::encode::CsvOut;

pub struct ArtistOptIn;

#[async_trait]
impl ExportType for ArtistOptIn {
    fn name(&self) -> &'static str {
        "artistOptIn"
    }
    fn format(&self) -> FileFormat {
        FileFormat::CSV
    }
    fn needs_markets(&self) -> bool {
        true
    }
    fn columns(&self) -> Vec<&'static str> {
        OPT_IN_COLUMNS.to_vec()
    }

    async fn expected_rows(&self, src: &Source) -> Result<Option<u64>, ExportError> {
        Ok(Some(
            count_entries(src, doc! { "fields.allowMarketing": true }).await?,
        ))
    }

    async fn write(&self, src: &Source, out: &mut CsvOut) -> Result<Meta, ExportError> {
        write_opt_ins(src, doc! { "fields.allowMarketing": true }, out, false).await?;
        Ok(Meta::new())
    }
}
