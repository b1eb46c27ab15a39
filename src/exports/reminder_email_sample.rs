//! `reminderEmailSample`: the first 10 rows (*ours*: size undocumented) of
//! each region of `reminderEmail`, in the same order, as one CSV: SFMC row
//! + `region`. `.csv`, EXPORTS_BUCKET.

use std::borrow::Cow;

use async_trait::async_trait;

use super::reminder_email::count_selected;
use super::sfmc::{plan_regions, region_reader, SfmcRows, SFMC_COLUMNS};
use super::{ExportError, ExportType, FileFormat, Source};
use crate::encode::CsvOut;

pub struct ReminderEmailSample;

/// Rows per region.
const SAMPLE: i64 = 10;

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
        Ok(count_selected(src).await?.map(|n| n.min(SAMPLE as u64 * 5)))
    }

    async fn write(&self, src: &Source, out: &mut CsvOut) -> Result<(), ExportError> {
        out.header(&self.columns()).await?;
        let rows = SfmcRows::new(src);
        for (region, locales) in plan_regions(src).await? {
            let mut reader = region_reader(src, &locales, Some(SAMPLE)).await?;
            while let Some(batch) = reader.next_batch().await? {
                for s in &batch {
                    let mut cells: Vec<Cow<'_, str>> = rows.cells(s)?.into();
                    cells.push(Cow::Borrowed(region));
                    out.row(&cells).await?;
                }
            }
        }
        Ok(())
    }
}
