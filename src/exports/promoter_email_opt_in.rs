//! `promoterEmailOptIn`: for each campaign promoter, the entries whose
//! `fields.promoterOptIns` contains it — a ZIP with one CSV per promoter,
//! `{promoterName}.csv` (orig). Unknown promoter ids → 400
//! `PromotersNotFound` at POST time.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use serde_json::json;

use super::entries::count_entries;
use super::entry_rows::{write_opt_ins, OPT_IN_COLUMNS};
use super::{
    file_part, Body, ExportError, ExportType, FileFormat, Files, FilesBody, Invalid, Meta, Params,
    Source,
};
use crate::error::Code;
use crate::store::{id_forms, id_match, id_string, Campaign, Store, StoreError};

pub struct PromoterEmailOptIn;

/// Names of the promoters found, by id (one `_id` query).
async fn promoter_names(
    store: &Store,
    ids: &[String],
) -> Result<HashMap<String, String>, StoreError> {
    let forms: Vec<Bson> = ids.iter().flat_map(|i| id_forms(i)).collect();
    let mut cur = store
        .db()
        .collection::<Document>("promoters")
        .find(doc! { "_id": { "$in": forms } })
        .projection(doc! { "name": 1 })
        .await?;
    let mut names = HashMap::new();
    while let Some(d) = cur.try_next().await? {
        names.insert(
            id_string(d.get("_id")),
            d.get_str("name").unwrap_or_default().to_string(),
        );
    }
    Ok(names)
}

fn opted_in(promoter_id: &str) -> Document {
    doc! { "fields.promoterOptIns": id_match(promoter_id) }
}

#[async_trait]
impl ExportType for PromoterEmailOptIn {
    fn name(&self) -> &'static str {
        "promoterEmailOptIn"
    }
    fn body(&self) -> Body<'_> {
        Body::Zip(self)
    }
    fn format(&self) -> FileFormat {
        FileFormat::ZIP
    }
    fn needs_markets(&self) -> bool {
        true
    }
    fn columns(&self) -> Vec<&'static str> {
        OPT_IN_COLUMNS.to_vec()
    }

    async fn validate(
        &self,
        store: &Store,
        campaign: &Campaign,
        _params: &Params,
    ) -> Result<(), Invalid> {
        let names = promoter_names(store, &campaign.promoters).await?;
        let missing: Vec<&String> = campaign
            .promoters
            .iter()
            .filter(|p| !names.contains_key(*p))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(Invalid::Refused {
            code: Code::PromotersNotFound,
            message: "some of the campaign's promoters do not exist",
            payload: Some(json!({ "promoterIds": missing })),
        })
    }

    async fn expected_rows(&self, src: &Source) -> Result<Option<u64>, ExportError> {
        let mut n = 0;
        for p in &src.campaign.promoters {
            n += count_entries(src, opted_in(p)).await?;
        }
        Ok(Some(n))
    }
}

#[async_trait]
impl FilesBody for PromoterEmailOptIn {
    async fn write_files(&self, src: &Source, files: &mut dyn Files) -> Result<Meta, ExportError> {
        let names = promoter_names(&src.store, &src.campaign.promoters).await?;
        let mut used = HashSet::new();
        for id in &src.campaign.promoters {
            let Some(name) = names.get(id) else {
                // Deleted after the POST validated it.
                return Err(ExportError::Data {
                    message: format!("promoter {id} not found"),
                    payload: Some(Bson::Document(doc! {
                        "code": Code::PromotersNotFound.as_str(), "promoterIds": [id.as_str()]
                    })),
                });
            };
            let mut file = format!("{}.csv", file_part(name));
            if !used.insert(file.clone()) {
                // Two promoters of the same name: the id tells them apart.
                file = format!("{} ({id}).csv", file_part(name));
                used.insert(file.clone());
            }
            let out = files.next(&file).await?;
            write_opt_ins(src, opted_in(id), out, false).await?;
        }
        Ok(Meta::new())
    }
}
