//! `autoReminderEmail`: as `reminderEmail`, but one CSV object per SFMC
//! region present, in SFMC_BUCKET through the assumed role
//! (`bucket-owner-full-control`), key (orig)
//! `{prefix}_{normalizedArtistName}_{campaignId}_{YYYYMMDDHHmm}.csv`; the
//! export's `key` is the array of keys (no download `path`).

use async_trait::async_trait;

use super::reminder_email::count_selected;
use super::sfmc::{plan_regions, prefix, region_reader, SfmcRows, SFMC_COLUMNS};
use super::{ExportError, ExportType, FileFormat, Files, Shape, Source};
use crate::sink::DestKind;

pub struct AutoReminderEmail;

/// The artist name in a key (*ours*): ASCII letters and digits only, so
/// the `_`-separated key stays parseable (`"Beyoncé & Jay-Z"` →
/// `"BeyoncJayZ"`).
pub fn normalized_artist(name: &str) -> String {
    name.chars().filter(|c| c.is_ascii_alphanumeric()).collect()
}

#[async_trait]
impl ExportType for AutoReminderEmail {
    fn name(&self) -> &'static str {
        "autoReminderEmail"
    }
    fn format(&self) -> FileFormat {
        FileFormat::CSV
    }
    fn shape(&self) -> Shape {
        Shape::Objects
    }
    fn destination(&self) -> DestKind {
        DestKind::Sfmc
    }
    fn columns(&self) -> Vec<&'static str> {
        SFMC_COLUMNS.to_vec()
    }

    async fn expected_rows(&self, src: &Source) -> Result<Option<u64>, ExportError> {
        count_selected(src).await
    }

    async fn write_files(&self, src: &Source, files: &mut dyn Files) -> Result<(), ExportError> {
        let rows = SfmcRows::new(src);
        let artist = normalized_artist(&src.campaign.artist_name);
        let stamp = src.created.format("%Y%m%d%H%M");
        for (region, locales) in plan_regions(src).await? {
            let mut reader = region_reader(src, &locales, None).await?;
            let mut opened = false;
            while let Some(batch) = reader.next_batch().await? {
                for s in &batch {
                    let cells = rows.cells(s)?;
                    if !opened {
                        let key = format!(
                            "{}_{artist}_{}_{stamp}.csv",
                            prefix(region),
                            src.campaign.id
                        );
                        files.next(&key).await?.header(&SFMC_COLUMNS).await?;
                        opened = true;
                    }
                    files.current()?.row(&cells).await?;
                }
            }
        }
        Ok(())
    }
}
