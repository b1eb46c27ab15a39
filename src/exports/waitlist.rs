//! `waitlist`: scoring documents with `selected = false` (index order),
//! minus the member ids of the campaign's scheduled SMS wave files in
//! VF_SCORING_BUCKET (`campaigns/{campaignId}/waves/`, written by
//! `codeWaves`): `memberId, locale, market, score`. `.csv`, EXPORTS_BUCKET.
//!
//! The wave files are streamed (CSV records straight from the GetObject
//! body) into a compact id set: numeric ids as `u64`, others as boxed
//! strings; a warning above 1,000,000 ids.

use std::collections::HashSet;

use async_compression::tokio::bufread::GzipDecoder;
use async_trait::async_trait;
use futures::StreamExt;
use mongodb::bson::doc;
use tokio::io::BufReader;

use super::scoring_rows::{scoring_filter, ScoringReader};
use super::{Body, CsvBody, ExportError, ExportType, FileFormat, Meta, Source};
use crate::encode::CsvOut;

pub struct Waitlist;

const COLUMNS: [&str; 4] = ["memberId", "locale", "market", "score"];

/// Above this many wave members the set is worth a look (memory).
const WARN_IDS: usize = 1_000_000;

/// Member ids, compactly.
#[derive(Default)]
struct MemberSet {
    nums: HashSet<u64>,
    other: HashSet<Box<str>>,
    warned: bool,
}

impl MemberSet {
    fn insert(&mut self, id: &str) {
        let id = id.trim();
        if id.is_empty() {
            return;
        }
        match id.parse::<u64>() {
            Ok(n) => {
                self.nums.insert(n);
            }
            Err(_) => {
                if !self.other.contains(id) {
                    self.other.insert(id.into());
                }
            }
        }
        if !self.warned && self.len() > WARN_IDS {
            self.warned = true;
            tracing::warn!(
                ids = self.len(),
                "waitlist: more than 1,000,000 wave member ids held in memory"
            );
        }
    }
    fn contains(&self, id: &str) -> bool {
        let id = id.trim();
        match id.parse::<u64>() {
            Ok(n) => self.nums.contains(&n),
            Err(_) => self.other.contains(id),
        }
    }
    fn len(&self) -> usize {
        self.nums.len() + self.other.len()
    }
}

/// Every member id of the campaign's wave files.
async fn wave_members(src: &Source) -> Result<MemberSet, ExportError> {
    let bucket = src.sinks.buckets().vf_scoring.clone();
    let prefix = format!("campaigns/{}/waves/", src.campaign.id);
    let mut set = MemberSet::default();
    let keys = src.sinks.list_keys(&bucket, &prefix).await?;
    for key in &keys {
        let body = src.sinks.read_object(&bucket, key).await?;
        let body = BufReader::new(body);
        // A wave requested with gzip compression ends in `.gz`; it is one
        // gzip member per part (a resumable export), read as one file.
        let reader: crate::sink::BoxRead = if key.ends_with(".gz") {
            let mut gz = GzipDecoder::new(body);
            gz.multiple_members(true);
            Box::pin(gz)
        } else {
            Box::pin(body)
        };
        let mut csv = csv_async::AsyncReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .create_reader(reader);
        let col = csv
            .headers()
            .await?
            .iter()
            .position(|h| h == "memberId")
            .unwrap_or(0);
        let mut records = csv.records();
        while let Some(r) = records.next().await {
            if let Some(id) = r?.get(col) {
                set.insert(id);
            }
        }
    }
    tracing::info!(
        files = keys.len(),
        ids = set.len(),
        "waitlist: wave members loaded"
    );
    Ok(set)
}

#[async_trait]
impl ExportType for Waitlist {
    fn name(&self) -> &'static str {
        "waitlist"
    }
    fn body(&self) -> Body<'_> {
        Body::Csv(self)
    }
    fn format(&self) -> FileFormat {
        FileFormat::CSV
    }
    fn columns(&self) -> Vec<&'static str> {
        COLUMNS.to_vec()
    }

    async fn expected_rows(&self, src: &Source) -> Result<Option<u64>, ExportError> {
        // Before the wave exclusion: a preliminary count.
        let f = scoring_filter(&src.campaign.id, doc! { "selected": false });
        Ok(Some(src.store.count("scoring", f).await?))
    }
}

#[async_trait]
impl CsvBody for Waitlist {
    async fn write(&self, src: &Source, out: &mut CsvOut) -> Result<Meta, ExportError> {
        let members = wave_members(src).await?;
        out.header(&COLUMNS).await?;
        let f = scoring_filter(&src.campaign.id, doc! { "selected": false });
        let mut reader = ScoringReader::open(src, f, None, false).resume(out.resume_from())?;
        while let Some(batch) = reader.next_batch().await? {
            for s in &batch {
                let member = s.field("memberId");
                if members.contains(&member) {
                    continue;
                }
                out.row(&[
                    member,
                    s.field("locale"),
                    s.field("market"),
                    s.field("score"),
                ])
                .await?;
            }
            out.boundary(|| reader.position()).await?;
        }
        Ok(Meta::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_set() {
        let mut s = MemberSet::default();
        s.insert("123");
        s.insert(" 456 ");
        s.insert("m-7");
        s.insert("");
        assert_eq!(s.len(), 3);
        assert!(s.contains("123") && s.contains("456") && s.contains("m-7"));
        assert!(!s.contains("12") && !s.contains(""));
    }
}
