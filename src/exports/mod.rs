//! Export types: one file per type behind [`ExportType`], listed once in
//! [`Registry::new`]. Adding a type is adding a file and one line there.
//!
//! A type says what it reads and how a row looks; the worker owns the
//! queue, the sink and the encoder, so no type touches S3 or leases.

mod auto_reminder_email;
mod code_assignments;
mod code_waves;
mod codes;
mod entries;
pub mod entry_rows;
mod fanlist;
mod opt_in;
pub mod output;
pub mod pipeline;
mod promoter_email_opt_in;
pub mod raw;
mod reminder_email;
mod reminder_email_sample;
mod scoring;
pub mod scoring_rows;
pub mod sfmc;
mod verified_entries;
mod waitlist;

pub use output::{Files, Outputs, Parted, S3Outputs};
pub use pipeline::{produce, Produced, Progress};

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use mongodb::bson::{Bson, Document};

use crate::encode::CsvOut;
use crate::error::Code;
use crate::sink::{DestKind, RemoteClass, SinkError, Sinks, Uploaded};
use crate::store::{Campaign, Market, Store, StoreError};

/// How a type's output is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileFormat {
    /// File extension without the dot (`tsv`, `txt`, `csv`).
    pub ext: &'static str,
    /// Field delimiter.
    pub delimiter: u8,
}

impl FileFormat {
    pub const TSV: FileFormat = FileFormat {
        ext: "tsv",
        delimiter: b'\t',
    };
    pub const TXT: FileFormat = FileFormat {
        ext: "txt",
        delimiter: b'\t',
    };
    pub const CSV: FileFormat = FileFormat {
        ext: "csv",
        delimiter: b',',
    };
    /// A ZIP of comma-separated CSV entries.
    pub const ZIP: FileFormat = FileFormat {
        ext: "zip",
        delimiter: b',',
    };

    pub fn content_type(&self, gzip: bool) -> &'static str {
        if gzip {
            return "application/gzip";
        }
        match self.ext {
            "tsv" => "text/tab-separated-values; charset=utf-8",
            "txt" => "text/plain; charset=utf-8",
            "zip" => "application/zip",
            _ => "text/csv; charset=utf-8",
        }
    }
}

/// What the request asked for (validated at POST time, stored on the
/// export, read back by the worker).
#[derive(Debug, Clone, Default)]
pub struct Params {
    pub date_key: Option<String>,
    pub include_all_markets: bool,
    pub gzip: bool,
}

/// Everything a type reads from: the store, the campaign and its markets,
/// the request's parameters.
pub struct Source {
    pub store: Store,
    pub campaign: Campaign,
    pub markets: Vec<Market>,
    pub params: Params,
    pub export_id: String,
    /// When the export was requested: key timestamps (stable across attempts).
    pub created: chrono::DateTime<chrono::Utc>,
    /// Rows per CSV segment in a ZIP (`MAX_ROWS_PER_FILE`).
    pub max_rows_per_file: u64,
    /// S3 access for inputs (the `waitlist` wave files).
    pub sinks: Sinks,
    /// SFMC region of the rows whose locale has none (`SFMC_DEFAULT_REGION`).
    pub sfmc_default_region: &'static str,
}

impl Source {
    pub fn key_parts(&self) -> KeyParts<'_> {
        KeyParts {
            campaign_id: &self.campaign.id,
            campaign_name: &self.campaign.name,
            export_id: &self.export_id,
            created: self.created,
            date_key: self.params.date_key.as_deref(),
            gzip: self.params.gzip,
        }
    }
}

/// How a type's output is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One CSV object.
    Csv,
    /// One ZIP object of CSV entries.
    Zip,
    /// Several CSV objects.
    Objects,
}

/// A type's body and its writer, so the compiler rejects a shape without
/// the writer it needs.
pub enum Body<'a> {
    /// One CSV object.
    Csv(&'a dyn CsvBody),
    /// One ZIP object; the writer names its CSV entries.
    Zip(&'a dyn FilesBody),
    /// Several CSV objects; the writer names their keys.
    Objects(&'a dyn FilesBody),
}

impl Body<'_> {
    pub fn shape(&self) -> Shape {
        match self {
            Body::Csv(_) => Shape::Csv,
            Body::Zip(_) => Shape::Zip,
            Body::Objects(_) => Shape::Objects,
        }
    }
}

/// The writer of a single-CSV type.
#[async_trait]
pub trait CsvBody: Send + Sync {
    /// Stream the rows into `out` (header included); returns what it adds
    /// to `meta`.
    async fn write(&self, src: &Source, out: &mut CsvOut) -> Result<Meta, ExportError>;
}

/// The writer of a ZIP or multi-object type.
#[async_trait]
pub trait FilesBody: Send + Sync {
    /// Open each file in turn with [`Files::next`] and stream its rows
    /// (header included); returns what it adds to `meta`.
    async fn write_files(&self, src: &Source, files: &mut dyn Files) -> Result<Meta, ExportError>;
}

/// Why an export failed. [`ExportError::retryable`] failures hand the
/// export back to the queue with a backoff (up to MAX_ATTEMPTS); the others
/// fail it at once with a named `error.payload.code` (spec: exports.md,
/// Failures).
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Sink(#[from] SinkError),
    #[error("writing CSV: {0}")]
    Csv(#[from] csv_async::Error),
    #[error("writing output: {0}")]
    Io(#[from] std::io::Error),
    /// The data cannot be exported as asked (e.g. a missing code); permanent.
    #[error("{message}")]
    Data {
        message: String,
        payload: Option<Bson>,
    },
    /// The export's object is complete in its bucket but its TMOL copy
    /// failed: permanent, and the object is recorded on the export (CCPA
    /// finds it there).
    #[error("publishing to TMOL_BUCKET failed: {cause}")]
    Published {
        cause: Box<ExportError>,
        main: Box<Uploaded>,
    },
    /// The export's code panicked: a bug, never retried.
    #[error("internal error: {0}")]
    Panicked(String),
    /// The export's lease was lost (expired, reclaimed, cancelled): stop
    /// quietly.
    #[error("lease lost")]
    LeaseLost,
    /// The process is shutting down: hand the export back.
    #[error("handed back on shutdown")]
    Drained,
}

impl From<crate::encode::EncodeError> for ExportError {
    fn from(e: crate::encode::EncodeError) -> Self {
        use crate::encode::EncodeError;
        match e {
            EncodeError::Csv(e) => ExportError::Csv(e),
            EncodeError::Io(e) => ExportError::Io(e),
            // Stopped at a part boundary: handed back at its checkpoint.
            EncodeError::Suspended => ExportError::Drained,
        }
    }
}

impl ExportError {
    pub fn data(code: Code, message: impl Into<String>) -> Self {
        ExportError::Data {
            message: message.into(),
            payload: Some(Bson::Document(
                mongodb::bson::doc! { "code": code.as_str() },
            )),
        }
    }

    /// May a later attempt succeed? The database or the network was
    /// unavailable, S3 answered 5xx or throttled, a stream broke.
    pub fn retryable(&self) -> bool {
        match self {
            ExportError::Store(e) => e.is_transient(),
            ExportError::Sink(SinkError::NotConfigured(_)) => false,
            ExportError::Sink(e) => {
                !matches!(e.class(), Some(RemoteClass::Denied | RemoteClass::Missing))
            }
            ExportError::Io(_) | ExportError::Csv(_) => true,
            ExportError::Data { .. }
            | ExportError::Published { .. }
            | ExportError::Panicked(_)
            | ExportError::LeaseLost
            | ExportError::Drained => false,
        }
    }

    /// `error.payload` of a failed export: the named code and what it is
    /// about (bucket, role, market; never personal data).
    pub fn payload(&self) -> Document {
        let mut p = Document::new();
        let code = match self {
            ExportError::Data { payload, .. } => {
                if let Some(Bson::Document(d)) = payload {
                    p.extend(d.clone());
                }
                return p;
            }
            ExportError::Published { cause, main } => {
                p = cause.payload();
                p.insert(
                    "object",
                    mongodb::bson::doc! {
                        "bucket": main.bucket.clone().unwrap_or_default(),
                        "key": main.key.clone(),
                    },
                );
                if !p.contains_key("code") {
                    p.insert("code", Code::PublishFailed.as_str());
                }
                return p;
            }
            ExportError::Store(StoreError::Incomplete(_)) => {
                Some(crate::store::reader::READ_INCOMPLETE)
            }
            ExportError::Store(e) if !e.is_transient() => Some(Code::DatabaseError.as_str()),
            ExportError::Sink(SinkError::NotConfigured(_)) => {
                Some(Code::DestinationNotConfigured.as_str())
            }
            ExportError::Sink(SinkError::Remote(r)) => {
                if let Some(b) = &r.bucket {
                    p.insert("bucket", b);
                }
                if let Some(role) = &r.role {
                    p.insert("role", role);
                }
                if let Some(c) = &r.code {
                    p.insert("s3Code", c);
                }
                match r.class {
                    RemoteClass::Denied => Some(Code::DestinationDenied.as_str()),
                    RemoteClass::Missing => Some(Code::DestinationMissing.as_str()),
                    _ => None,
                }
            }
            ExportError::Panicked(_) => Some(Code::InternalError.as_str()),
            _ => None,
        };
        if let Some(c) = code {
            p.insert("code", c);
        }
        p
    }
}

/// What a CCPA deletion does with a type's files (spec: api.md, CCPA).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CcpaFiles {
    /// Deleted with the exports of the user's campaigns.
    Delete,
    /// Partner pipelines' files: never deleted here (counted `skipped`).
    Keep,
    /// Rewritten without the user's rows (the campaign's wave files).
    Rewrite,
}

/// What a type adds to the export's `meta` (e.g. `defaultRegionRows`).
pub type Meta = Document;

/// One export type.
#[async_trait]
pub trait ExportType: Send + Sync + 'static {
    /// The `exportType` value.
    fn name(&self) -> &'static str;
    /// File format of the single object.
    fn format(&self) -> FileFormat;
    /// Where the object goes.
    fn destination(&self) -> DestKind {
        DestKind::Exports
    }
    /// Does this type read entries per market (needs ≥ 1 market)?
    fn needs_markets(&self) -> bool {
        false
    }
    /// Must the request carry a `dateKey` (digits only)?
    fn needs_date_key(&self) -> bool {
        false
    }
    /// What a CCPA deletion does with this type's files.
    fn ccpa_files(&self) -> CcpaFiles {
        CcpaFiles::Delete
    }
    /// Object key (spec: exports.md "Keys").
    fn key(&self, k: &KeyParts<'_>) -> String {
        default_key(k, self.name(), self.format().ext)
    }
    /// Its body: a single CSV, a ZIP or several objects, with the writer.
    fn body(&self) -> Body<'_>;
    /// Single CSV, ZIP or several objects.
    fn shape(&self) -> Shape {
        self.body().shape()
    }
    /// May the request ask for `"compression": "gzip"`? Single-file CSV
    /// types only: a ZIP is already compressed and partner objects have
    /// fixed names.
    fn supports_gzip(&self) -> bool {
        self.shape() == Shape::Csv
    }
    /// Copy the finished object into TMOL_BUCKET when it is configured.
    fn publish_to_tmol(&self) -> bool {
        false
    }
    /// The header of each file (for `entries`: before the per-campaign
    /// preference columns). The docs table is checked against this.
    fn columns(&self) -> Vec<&'static str>;
    /// Type-specific checks at POST time (after the campaign is found).
    async fn validate(
        &self,
        _store: &Store,
        _campaign: &Campaign,
        _params: &Params,
    ) -> Result<(), Invalid> {
        Ok(())
    }
    /// The preliminary count (`progress.expectedRows`); `None` where the
    /// type disables it.
    async fn expected_rows(&self, src: &Source) -> Result<Option<u64>, ExportError>;
}

/// A file or ZIP-entry name part from free text: path separators and
/// control characters become `-` so a name cannot add folders.
pub fn file_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() {
                '-'
            } else {
                c
            }
        })
        .collect()
}

/// What a key is made of.
pub struct KeyParts<'a> {
    pub campaign_id: &'a str,
    pub campaign_name: &'a str,
    pub export_id: &'a str,
    pub created: chrono::DateTime<chrono::Utc>,
    pub date_key: Option<&'a str>,
    pub gzip: bool,
}

/// `campaigns/{slug(campaignName)}-{campaignId}/{exportType}/{yyyymmddHHMMss}-{exportId}.{ext}[.gz]`
pub fn default_key(k: &KeyParts<'_>, export_type: &str, ext: &str) -> String {
    let slug = slug(k.campaign_name);
    let prefix = if slug.is_empty() {
        k.campaign_id.to_string()
    } else {
        format!("{slug}-{}", k.campaign_id)
    };
    format!(
        "campaigns/{prefix}/{export_type}/{}-{}.{ext}{}",
        k.created.format("%Y%m%d%H%M%S"),
        k.export_id,
        if k.gzip { ".gz" } else { "" }
    )
}

/// Lower-case ASCII letters and digits, other runs become one `-`.
pub fn slug(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// Why a type refuses an export at POST time; the HTTP layer answers it
/// (error.rs: a refusal is a 400 with its code, a store error a 500).
#[derive(Debug, thiserror::Error)]
pub enum Invalid {
    #[error("{message}")]
    Refused {
        code: Code,
        message: &'static str,
        payload: Option<serde_json::Value>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Invalid {
    pub fn refused(code: Code, message: &'static str) -> Self {
        Invalid::Refused {
            code,
            message,
            payload: None,
        }
    }
}

/// POST-time check shared by the entry-based types.
pub fn require_markets(needs: bool, markets_found: usize) -> Result<(), Invalid> {
    if needs && markets_found == 0 {
        return Err(Invalid::refused(
            Code::NoMarketsFound,
            "the campaign has no markets",
        ));
    }
    Ok(())
}

/// Every export type, by name.
#[derive(Clone)]
pub struct Registry {
    types: Arc<BTreeMap<&'static str, Arc<dyn ExportType>>>,
}

impl Registry {
    pub fn new() -> Self {
        let all: Vec<Arc<dyn ExportType>> = vec![
            Arc::new(entries::Entries),
            Arc::new(codes::Codes),
            Arc::new(code_assignments::CodeAssignments),
            Arc::new(opt_in::ARTIST),
            Arc::new(opt_in::ARTIST_SMS),
            Arc::new(opt_in::LIVENATION),
            Arc::new(promoter_email_opt_in::PromoterEmailOptIn),
            Arc::new(fanlist::Fanlist),
            Arc::new(waitlist::Waitlist),
            Arc::new(reminder_email::ReminderEmail),
            Arc::new(reminder_email_sample::ReminderEmailSample),
            Arc::new(scoring::Scoring),
            Arc::new(verified_entries::VerifiedEntries),
            Arc::new(code_waves::CodeWaves),
            Arc::new(auto_reminder_email::AutoReminderEmail),
        ];
        Self {
            types: Arc::new(all.into_iter().map(|t| (t.name(), t)).collect()),
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn ExportType>> {
        self.types.get(name).cloned()
    }

    /// What a CCPA deletion does with the files of a stored type name (one
    /// this build does not know, say a retired type's, is deleted).
    pub fn ccpa_files(&self, name: &str) -> CcpaFiles {
        self.get(name).map_or(CcpaFiles::Delete, |t| t.ccpa_files())
    }

    /// Every type, by name.
    pub fn all(&self) -> Vec<Arc<dyn ExportType>> {
        self.types.values().cloned().collect()
    }

    /// Valid `exportType` values, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.types.keys().copied().collect()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_and_keys() {
        assert_eq!(slug("Tour 2026: Ünïcode / Live!"), "tour-2026-n-code-live");
        assert_eq!(slug("---"), "");
        let k = KeyParts {
            campaign_id: "c1",
            campaign_name: "Tour 2026",
            export_id: "65f0",
            created: chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap(),
            date_key: None,
            gzip: false,
        };
        assert_eq!(
            default_key(&k, "entries", "tsv"),
            "campaigns/tour-2026-c1/entries/20260101000000-65f0.tsv"
        );
    }
}
