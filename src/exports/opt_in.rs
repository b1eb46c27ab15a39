//! The opt-in lists, one type registered three times (spec: exports.md):
//! the entries whose opt-in field is true, market by market, `.csv` in
//! EXPORTS_BUCKET. Columns `email, first_name, last_name, Zip Code, locale,
//! Select Show, entry_date` (*ours*); the SMS list has `Mobile Phone` (the
//! entry's phone, else the user's) in place of the email.
//!
//! - `artistOptIn`: `fields.allowMarketing`
//! - `artistSmsOptIn`: `fields.allowSms`
//! - `livenationOptIn`: `fields.allowLiveNation`

use async_trait::async_trait;
use mongodb::bson::{doc, Document};

use super::entries::count_entries;
use super::entry_rows::{write_opt_ins, OPT_IN_COLUMNS, SMS_OPT_IN_COLUMNS};
use super::{Body, CsvBody, ExportError, ExportType, FileFormat, Meta, Source};
use crate::encode::CsvOut;

pub struct OptIn {
    name: &'static str,
    /// The entry field that is `true` for a fan who opted in.
    field: &'static str,
    /// A phone list (`Mobile Phone`) rather than an email list.
    sms: bool,
}

pub const ARTIST: OptIn = OptIn {
    name: "artistOptIn",
    field: "fields.allowMarketing",
    sms: false,
};
pub const ARTIST_SMS: OptIn = OptIn {
    name: "artistSmsOptIn",
    field: "fields.allowSms",
    sms: true,
};
pub const LIVENATION: OptIn = OptIn {
    name: "livenationOptIn",
    field: "fields.allowLiveNation",
    sms: false,
};

impl OptIn {
    /// The one filter the count and the export share.
    fn filter(&self) -> Document {
        doc! { self.field: true }
    }
}

#[async_trait]
impl ExportType for OptIn {
    fn name(&self) -> &'static str {
        self.name
    }
    fn body(&self) -> Body<'_> {
        Body::Csv(self)
    }
    fn format(&self) -> FileFormat {
        FileFormat::CSV
    }
    fn needs_markets(&self) -> bool {
        true
    }
    fn columns(&self) -> Vec<&'static str> {
        if self.sms {
            SMS_OPT_IN_COLUMNS.to_vec()
        } else {
            OPT_IN_COLUMNS.to_vec()
        }
    }

    async fn expected_rows(&self, src: &Source) -> Result<Option<u64>, ExportError> {
        Ok(Some(count_entries(src, self.filter()).await?))
    }
}

#[async_trait]
impl CsvBody for OptIn {
    async fn write(&self, src: &Source, out: &mut CsvOut) -> Result<Meta, ExportError> {
        write_opt_ins(src, self.filter(), out, self.sms).await?;
        Ok(Meta::new())
    }
}
