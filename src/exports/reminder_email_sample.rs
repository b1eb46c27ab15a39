//! `reminderEmailSample`: the first 10 rows (*ours*: size undocumented) of
//! each region of `reminderEmail`, in the same order, as one CSV: SFMC row
//! + `region`. `.csv`, EXPORTS_BUCKET.

use std::borrow::Cow;

use async_trait::async_trait;

use super::reminder_email::{count_selected, default_region_meta};
use super::sfmc::{defaulted, plan_regions, region_reader, SfmcRows, SFMC_COLUMNS};
use super::{ExportError, ExportType, FileFormat, Meta, Source};
use crate::encode::CsvOut;

pub struct ReminderEmailSample;

/// Rows per region.
const SAMPLE: u64 = 10;

#[async_trait]
impl ExportType for ReminderEmailSample {
    fn name(&self) -> &'static str {
        "reminderEmailSample"
    }
    fn format(&self) -> FileFormat {
        FileFormat::CSV
    }
    fn columns(&self) -> Vec<&'static str> {
        let mut c = SFMC_COLUMNS.to_vec();
        c.push("region");
        c
    }

    async fn expected_rows(&self, src: &Source) -> Result<Option<u64>, ExportError> {
        // At most 10 per region: the selected rows bound it.
        Ok(count_selected(src).await?.map(|n| n.min(SAMPLE * 5)))
    }

    async fn write(&self, src: &Source, out: &mut CsvOut) -> Result<Meta, ExportError> {
        out.header(&self.columns()).await?;
        let rows = SfmcRows::new(src);
        let mut default_rows = 0u64;
        for plan in plan_regions(src, src.sfmc_default_region).await? {
            let mut reader = region_reader(src, &plan, Some(SAMPLE));
            while let Some(batch) = reader.next_batch().await? {
                for s in &batch {
                    let mut cells: Vec<Cow<'_, str>> = rows.cells(s)?.into();
                    cells.push(Cow::Borrowed(plan.region));
                    default_rows += u64::from(defaulted(s, src.campaign.is_lnaa));
                    out.row(&cells).await?;
                }
            }
        }
        Ok(default_region_meta(default_rows))
    }
}
