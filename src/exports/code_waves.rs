//! `codeWaves`: the campaign's codes with `waveDateKey = dateKey` (index
//! `{campaignId, waveDateKey, code}`), joined per batch to the assignee's
//! scoring document (member id, locale, market) and entry/user (phone):
//! `memberId, code, Mobile Phone, locale, market`. Unassigned codes are
//! left out (nobody to message, *ours*); market falls back to the code's
//! `marketId`. `.csv` at `campaigns/{campaignId}/waves/{dateKey}/{exportId}.csv`,
//! VF_SCORING_BUCKET, `bucket-owner-full-control`. `waitlist` reads these.

use std::borrow::Cow;
use std::collections::HashMap;

use async_trait::async_trait;
use mongodb::bson::{doc, oid::ObjectId, Bson, Document, RawDocumentBuf};

use super::codes::{assigned, codes_filter, codes_reader};
use super::entry_rows::{users_by_id, Person};
use super::raw::text_at;
use super::scoring_rows::{entries_by_user, SCORING_KEY};
use super::{
    Body, CcpaFiles, CsvBody, ExportError, ExportType, FileFormat, KeyParts, Meta, Source,
};
use crate::encode::CsvOut;
use crate::sink::DestKind;
use crate::store::{id_forms, id_match, id_text_at, lookup, Store, StoreError};

pub struct CodeWaves;

const COLUMNS: [&str; 5] = ["memberId", "code", "Mobile Phone", "locale", "market"];

/// This wave's assigned codes. The key is stored as a string; a numeric
/// form is matched too.
fn wave_filter(src: &Source) -> Document {
    let key = src.params.date_key.clone().unwrap_or_default();
    let mut forms = vec![Bson::String(key.clone())];
    if let Ok(n) = key.parse::<i64>() {
        forms.push(Bson::Int64(n));
    }
    let mut extra = doc! { "waveDateKey": { "$in": forms } };
    extra.extend(assigned());
    codes_filter(&src.campaign.id, extra)
}

/// The campaign's scoring documents of these users, by user id text
/// (index `{campaignId, userId}`).
async fn scoring_by_user(
    store: &Store,
    campaign_id: &str,
    user_ids: &[String],
) -> Result<HashMap<String, RawDocumentBuf>, StoreError> {
    lookup(
        store,
        "scoring",
        &doc! { "campaignId": id_match(campaign_id) },
        SCORING_KEY,
        user_ids,
        |id| id_forms(id),
        |d| id_text_at(d, &[SCORING_KEY]),
        None,
    )
    .await
}

#[async_trait]
impl ExportType for CodeWaves {
    fn name(&self) -> &'static str {
        "codeWaves"
    }
    fn body(&self) -> Body<'_> {
        Body::Csv(self)
    }
    fn needs_date_key(&self) -> bool {
        true
    }
    fn ccpa_files(&self) -> CcpaFiles {
        CcpaFiles::Rewrite
    }
    fn format(&self) -> FileFormat {
        FileFormat::CSV
    }
    fn destination(&self) -> DestKind {
        DestKind::VfScoring
    }
    fn key(&self, k: &KeyParts<'_>) -> String {
        format!(
            "campaigns/{}/waves/{}/{}.csv{}",
            k.campaign_id,
            k.date_key.unwrap_or_default(),
            k.export_id,
            if k.gzip { ".gz" } else { "" }
        )
    }
    fn columns(&self) -> Vec<&'static str> {
        COLUMNS.to_vec()
    }

    async fn expected_rows(&self, src: &Source) -> Result<Option<u64>, ExportError> {
        Ok(Some(src.store.count("codes", wave_filter(src)).await?))
    }
}

#[async_trait]
impl CsvBody for CodeWaves {
    async fn write(&self, src: &Source, out: &mut CsvOut) -> Result<Meta, ExportError> {
        out.header(&COLUMNS).await?;
        let mut reader = codes_reader(src, wave_filter(src)).resume(out.resume_from())?;
        while let Some(batch) = reader.next_batch().await? {
            let ids: Vec<String> = batch
                .iter()
                .map(|c| text_at(c, &["assignedTo"]).into_owned())
                .collect();
            let scoring = scoring_by_user(&src.store, &src.campaign.id, &ids).await?;
            let entries = entries_by_user(&src.store, &src.campaign.id, &ids).await?;
            let oids: Vec<ObjectId> = ids
                .iter()
                .filter_map(|i| ObjectId::parse_str(i).ok())
                .collect();
            let users = users_by_id(&src.store, &oids).await?;
            for (c, id) in batch.iter().zip(&ids) {
                let s = scoring.get(id);
                let field =
                    |name: &str| s.map(|s| text_at(s, &[name])).unwrap_or(Cow::Borrowed(""));
                let p = Person::new(
                    entries.get(id).map(|e| &**e),
                    ObjectId::parse_str(id)
                        .ok()
                        .and_then(|o| users.get(&o))
                        .map(|u| &**u),
                );
                let mut locale = field("locale");
                if locale.is_empty() {
                    locale = p.locale();
                }
                let mut market = field("market");
                if market.is_empty() {
                    market = text_at(c, &["marketId"]);
                }
                out.row(&[
                    field("memberId"),
                    text_at(c, &["code"]),
                    p.phone(),
                    locale,
                    market,
                ])
                .await?;
            }
            out.boundary(|| reader.position()).await?;
        }
        Ok(Meta::new())
    }
}
