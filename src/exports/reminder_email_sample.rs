//! `reminderEmailSample`: the first 10 rows (*ours*: size undocumented) of
//! each region of `reminderEmail`, in the same order, as one CSV: SFMC row
//! + `region`. `.csv`, EXPORTS_BUCKET.

use std::borrow::Cow;

use async_trait::async_trait;
use mongodb::bson::{doc, Bson};

use super::reminder_email::{count_selected, default_region_meta};
use super::sfmc::{defaulted, plan_regions, region_reader, SfmcRows, REGIONS, SFMC_COLUMNS};
use super::{Body, CsvBody, ExportError, ExportType, FileFormat, Meta, Source};
use crate::encode::CsvOut;

pub struct ReminderEmailSample;

/// Rows per region.
const SAMPLE: u64 = 10;

#[async_trait]
impl ExportType for ReminderEmailSample {
    fn name(&self) -> &'static str {
        "reminderEmailSample"
    }
    fn body(&self) -> Body<'_> {
        Body::Csv(self)
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
}

#[async_trait]
impl CsvBody for ReminderEmailSample {
    async fn write(&self, src: &Source, out: &mut CsvOut) -> Result<Meta, ExportError> {
        out.header(&self.columns()).await?;
        let rows = SfmcRows::new(src);
        // A continued run: the region it stopped in, where in it, and the
        // default-region rows so far.
        let resume = match out.resume_from() {
            Some(Bson::Document(p)) => Some(p.clone()),
            _ => None,
        };
        let order = |r: &str| REGIONS.iter().position(|x| *x == r);
        let from = resume
            .as_ref()
            .and_then(|p| order(p.get_str("region").unwrap_or_default()));
        let mut default_rows = resume
            .as_ref()
            .and_then(|p| p.get_i64("defaultRows").ok())
            .unwrap_or(0) as u64;
        for plan in plan_regions(src, src.sfmc_default_region).await? {
            let mut reader = region_reader(src, &plan, Some(SAMPLE));
            match (from, order(plan.region)) {
                // Regions in REGIONS order: those before it are written.
                (Some(f), Some(o)) if o < f => continue,
                (Some(f), Some(o)) if o == f => {
                    let p = resume.as_ref().expect("a position");
                    reader = reader.resume(p.get("in"))?;
                }
                _ => {}
            }
            while let Some(batch) = reader.next_batch().await? {
                for s in &batch {
                    let mut cells: Vec<Cow<'_, str>> = rows.cells(s)?.into();
                    cells.push(Cow::Borrowed(plan.region));
                    default_rows += u64::from(defaulted(s, src.campaign.is_lnaa));
                    out.row(&cells).await?;
                }
                out.boundary(|| {
                    Bson::Document(doc! {
                        "region": plan.region,
                        "in": reader.position(),
                        "defaultRows": default_rows as i64,
                    })
                })
                .await?;
            }
        }
        Ok(default_region_meta(default_rows))
    }
}
