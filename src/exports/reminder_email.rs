//! `reminderEmail`: selected scoring rows joined to entry/user, as SFMC
//! rows, grouped by SFMC region — a ZIP (orig) `Combined - {campaignName}
//! ASU - Reminder Email Data.zip` with a folder per region and CSVs of at
//! most MAX_ROWS_PER_FILE rows, `{region}/{campaignName} - {n}.csv`
//! (`meta.files` = entry names). Streamed: each region is one index scan,
//! each entry is written once, straight into the multipart upload.

use async_trait::async_trait;
use mongodb::bson::doc;

use super::scoring_rows::scoring_filter;
use super::sfmc::{defaulted, plan_regions, region_reader, SfmcRows, SFMC_COLUMNS};
use super::{
    default_key, file_part, Body, ExportError, ExportType, FileFormat, Files, FilesBody, KeyParts,
    Meta, Source,
};

pub struct ReminderEmail;

/// The preliminary count of the SFMC types: the selected rows.
pub async fn count_selected(src: &Source) -> Result<Option<u64>, ExportError> {
    let f = scoring_filter(&src.campaign.id, doc! { "selected": true });
    Ok(Some(src.store.count("scoring", f).await?))
}

/// `meta.defaultRegionRows`: rows in the default region only because
/// their locale has no region of its own.
pub fn default_region_meta(rows: u64) -> Meta {
    mongodb::bson::doc! { "defaultRegionRows": rows as i64 }
}

#[async_trait]
impl ExportType for ReminderEmail {
    fn name(&self) -> &'static str {
        "reminderEmail"
    }
    fn body(&self) -> Body<'_> {
        Body::Zip(self)
    }
    fn format(&self) -> FileFormat {
        FileFormat::ZIP
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
}

#[async_trait]
impl FilesBody for ReminderEmail {
    async fn write_files(&self, src: &Source, files: &mut dyn Files) -> Result<Meta, ExportError> {
        let rows = SfmcRows::new(src);
        let name = file_part(&src.campaign.name);
        let max = src.max_rows_per_file.max(1);
        let mut default_rows = 0u64;
        for plan in plan_regions(src, src.sfmc_default_region).await? {
            let region = plan.region;
            let mut reader = region_reader(src, &plan, None);
            let (mut segment, mut in_segment) = (0u64, 0u64);
            while let Some(batch) = reader.next_batch().await? {
                for s in &batch {
                    let cells = rows.cells(s)?;
                    default_rows += u64::from(defaulted(s, src.campaign.is_lnaa));
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
        Ok(default_region_meta(default_rows))
    }
}
