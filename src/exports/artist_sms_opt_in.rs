//! `artistSmsOptIn`: entries with `fields.allowSms = true` and a phone (entry's, else the user's): `Mobile Phone, first_name, last_name, Zip Code, locale, Select Show, entry_date` (*ours*), market by market. `.csv`, EXPORTS_BUCKET.

use async_trait::async_trait;
use mongodb::bson::doc;

use super::entries::count_entries;
use super::entry_rows::{write_opt_ins, SMS_OPT_IN_COLUMNS};
use super::{ExportError, ExportType, FileFormat, Meta, Source};
use crate::encode::CsvOut;

pub struct ArtistSmsOptIn;

#[async_trait]
impl ExportType for ArtistSmsOptIn {
    fn name(&self) -> &'static str {
        "artistSmsOptIn"
    }
    fn format(&self) -> FileFormat {
        FileFormat::CSV
    }
    fn needs_markets(&self) -> bool {
        true
    }
    fn columns(&self) -> Vec<&'static str> {
        SMS_OPT_IN_COLUMNS.to_vec()
    }

    async fn expected_rows(&self, src: &Source) -> Result<Option<u64>, ExportError> {
        Ok(Some(
            count_entries(src, doc! { "fields.allowSms": true }).await?,
        ))
    }

    async fn write(&self, src: &Source, out: &mut CsvOut) -> Result<Meta, ExportError> {
        write_opt_ins(src, doc! { "fields.allowSms": true }, out, true).await?;
        Ok(Meta::new())
    }
}
