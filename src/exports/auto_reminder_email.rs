//! `autoReminderEmail`: as `reminderEmail`, but one CSV object per SFMC
//! region present, in SFMC_BUCKET through the assumed role
//! (`bucket-owner-full-control`), key (orig)
//! `{prefix}_{normalizedArtistName}_{campaignId}_{YYYYMMDDHHmm}.csv`; the
//! export's `key` is the array of keys (no download `path`).

use async_trait::async_trait;

use std::collections::HashSet;

use super::reminder_email::{count_selected, default_region_meta};
use super::sfmc::{defaulted, plan_regions, prefix, region_reader, SfmcRows, SFMC_COLUMNS};
use super::{Body, CcpaFiles, ExportError, ExportType, FileFormat, Files, FilesBody, Meta, Source};
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
    fn body(&self) -> Body<'_> {
        Body::Objects(self)
    }
    /// A partner pipeline's file.
    fn ccpa_files(&self) -> CcpaFiles {
        CcpaFiles::Keep
    }
    fn format(&self) -> FileFormat {
        FileFormat::CSV
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
}

#[async_trait]
impl FilesBody for AutoReminderEmail {
    async fn write_files(&self, src: &Source, files: &mut dyn Files) -> Result<Meta, ExportError> {
        let rows = SfmcRows::new(src);
        let artist = normalized_artist(&src.campaign.artist_name);
        let stamp = src.created.format("%Y%m%d%H%M");
        // Another export of this campaign in the same minute has the same
        // keys: its objects are never overwritten (spec: exports.md, Object
        // ownership). Stable across attempts: while this export is active
        // no other of its campaign and type can start.
        let taken = src
            .store
            .keys_named_by_exports(&src.campaign.id, self.name(), &src.export_id)
            .await?;
        let mut default_rows = 0u64;
        for plan in plan_regions(src, src.sfmc_default_region).await? {
            let mut reader = region_reader(src, &plan, None);
            let mut opened = false;
            while let Some(batch) = reader.next_batch().await? {
                for s in &batch {
                    let cells = rows.cells(s)?;
                    if !opened {
                        let orig = format!(
                            "{}_{artist}_{}_{stamp}",
                            prefix(plan.region),
                            src.campaign.id
                        );
                        let key = unique_key(&orig, &src.export_id, &taken);
                        files.next(&key).await?.header(&SFMC_COLUMNS).await?;
                        opened = true;
                    }
                    default_rows += u64::from(defaulted(s, src.campaign.is_lnaa));
                    files.current()?.row(&cells).await?;
                }
            }
        }
        Ok(default_region_meta(default_rows))
    }
}

/// The original's key (`{orig}.csv`), or, when another export's record
/// already names it, the same with this export's id (`{orig}_{id}.csv`).
fn unique_key(orig: &str, export_id: &str, taken: &HashSet<String>) -> String {
    let key = format!("{orig}.csv");
    if taken.contains(&key) {
        format!("{orig}_{export_id}.csv")
    } else {
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_another_export_names_gets_this_exports_id() {
        let taken: HashSet<String> = ["p_A_c1_202601010000.csv".to_string()].into();
        assert_eq!(
            unique_key("p_A_c1_202601010000", "e2", &taken),
            "p_A_c1_202601010000_e2.csv"
        );
        assert_eq!(
            unique_key("p_A_c1_202601010001", "e2", &taken),
            "p_A_c1_202601010001.csv"
        );
    }
}
