//! `reminderEmail`: selected scoring rows joined to entry/user, as SFMC
//! rows, grouped by SFMC region — a ZIP (orig) `Combined - {campaignName}
//! ASU - Reminder Email Data.zip` with a folder per region and CSVs of at
//! most MAX_ROWS_PER_FILE rows, `{region}/{campaignName} - {n}.csv`
//! (`meta.files` = entry names). Streamed: each region is one index scan,
//! each entry is written once, straight into the multipart upload.

use async_trait::async_trait;
use mongodb::bson::doc;

use super::scoring_rows::scoring_filter;
use super::sfmc::{plan_regions, region_reader, SfmcRows, SFMC_COLUMNS};
use super::{
    default_key, file_part, ExportError, ExportType, FileFormat, Files, KeyParts, Shape, Source,
};

pub struct ReminderEmail;

/// The preliminary count of the SFMC types: the selected rows.
pub async fn count_selected(src: &Source) -> Result<Option<u64>, ExportError> {
    let f = scoring_filter(&src.campaign.id, doc! { "selected": true });
    Ok(Some(src.store.count("scoring", f).await?))
}

#[async_trait]
impl ExportType for ReminderEmail {
    fn name(&self) -> &'static str {
        "reminderEmail"
    }
    fn format(&self) -> FileFormat {
        FileFormat::ZIP
    }
    fn shape(&self) -> Shape {
        Shape::Zip
    }
    /// The usual unique prefix, then the original's file name, so a
    /// download is named as the campaign tools expect.
    fn key(&self, k: &KeyParts<'_>) -> String {
        let base = default_key(k, self.name(), "zip");
        let dir = base.trim_end_matches(".zip");
        format!(
            "{dir}/Combined - {} ASU - Reminder Email Data.zip",
            file_part(k.campaign_name)
        )
    }
    fn columns(&self) -> Vec<&'static str> {
        SFMC_COLUMNS.to_vec()
    }

    async fn expected_rows(&self, src: &Source) -> Result<Option<u64>, ExportError> {
        count_selected(src).await
    }

    async fn write_files(&self, src: &Source, files: &mut dyn Files) -> Result<(), ExportError> {
        let rows = SfmcRows::new(src);
        let name = file_part(&src.campaign.name);
        let max = src.max_rows_per_file.max(1);
        for (region, locales) in plan_regions(src).await? {
            let mut reader = region_reader(src, &locales, None).await?;
            let (mut segment, mut in_segment) = (0u64, 0u64);
            while let Some(batch) = reader.next_batch().await? {
                for s in &batch {
                    let cells = rows.cells(s)?;
                    if segment == 0 || in_segment == max {
                        segment += 1;
                        in_segment = 0;
                        files
                            .next(&format!("{region}/{name} - {segment}.csv"))
                            .await?
                            .header(&SFMC_COLUMNS)
                            .await?;
                    }
                    files.current()?.row(&cells).await?;
                    in_segment += 1;
                }
            }
        }
        Ok(())
    }
}
