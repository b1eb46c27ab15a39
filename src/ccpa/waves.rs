//! Wave files without one user's rows. `waitlist` reads every wave file of
//! a campaign to exclude the fans who already had a code, so a CCPA
//! deletion cannot delete them (those fans would be sent codes again): it
//! rewrites them, streamed, under the same key and in the same format
//! (gzip stays gzip). GetObject → csv-async reader → filter → writer →
//! multipart upload; S3 replaces the object only when the upload
//! completes, so a reader sees the old or the new file, each whole.
//!
//! The user's rows: `memberId` one of the user's scoring member ids in the
//! campaign, or `code` one of the codes assigned to the user. Columns are
//! found by header name, as `waitlist` finds them (`memberId`, else the
//! first column).

use std::borrow::Cow;
use std::collections::HashSet;

use async_compression::tokio::bufread::GzipDecoder;
use csv_async::{AsyncReaderBuilder, AsyncWriterBuilder, ByteRecord, QuoteStyle, Terminator};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

use super::lock::LockError;
use crate::encode::{maybe_gzip, neutralise};
use crate::exports::FileFormat;
use crate::sink::{BoxRead, DestKind, ObjectSpec, SinkError, Sinks};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error("{0}")]
    Sink(#[from] SinkError),
    #[error("reading or writing CSV: {0}")]
    Csv(#[from] csv_async::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Lock(#[from] LockError),
    #[error("another CCPA request took the wave file over during the rewrite")]
    LockLost,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The cell values that make a row the user's.
#[derive(Debug, Default)]
pub struct UserRows {
    members: HashSet<String>,
    codes: HashSet<String>,
}

impl UserRows {
    pub fn new(
        members: impl IntoIterator<Item = String>,
        codes: impl IntoIterator<Item = String>,
    ) -> Self {
        Self {
            members: members
                .into_iter()
                .map(|m| member_form(&m))
                .filter(|m| !m.is_empty())
                .collect(),
            codes: codes
                .into_iter()
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty())
                .collect(),
        }
    }

    /// Nothing can be the user's (no member id, no code in the campaign).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.codes.is_empty()
    }

    fn matches(&self, row: &ByteRecord, member_col: usize, code_col: Option<usize>) -> bool {
        let member = row.get(member_col).map(cell).unwrap_or_default();
        if !member.is_empty() && self.members.contains(&member_form(&member)) {
            return true;
        }
        let code = code_col.and_then(|c| row.get(c)).map(cell);
        code.is_some_and(|c| !c.is_empty() && self.codes.contains(c.as_ref()))
    }
}

/// A cell as the value it was written from: trimmed, and without the `'`
/// the encoder puts before a formula-looking value (`'=AAA4` is `=AAA4`).
fn cell(raw: &[u8]) -> Cow<'_, str> {
    let s = String::from_utf8_lossy(raw);
    let t = s.trim();
    let unquoted = match t.strip_prefix('\'') {
        Some(rest) if neutralise(rest).as_ref() == t => rest,
        _ => t,
    };
    if unquoted.len() == s.len() {
        s
    } else {
        Cow::Owned(unquoted.to_string())
    }
}

/// Member ids compare as `waitlist` compares them: numbers by value.
fn member_form(id: &str) -> String {
    let id = id.trim();
    match id.parse::<u64>() {
        Ok(n) => n.to_string(),
        Err(_) => id.to_string(),
    }
}

/// Rows of one pass over a wave file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Filtered {
    /// The user's rows, left out.
    pub removed: u64,
    /// Everyone else's rows, copied.
    pub kept: u64,
}

/// Copy the CSV in `r` to `w` without the user's rows, then shut `w` down.
/// The header and every other row are written back as the export wrote
/// them (same quoting, `\n` line ends).
pub async fn filter_csv<R, W>(r: R, w: W, user: &UserRows) -> Result<Filtered, RewriteError>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let mut rdr = AsyncReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .create_reader(r);
    let mut wtr = AsyncWriterBuilder::new()
        .terminator(Terminator::Any(b'\n'))
        .quote_style(QuoteStyle::Necessary)
        .has_headers(false)
        .flexible(true)
        .create_writer(w);
    let header = rdr.byte_headers().await?.clone();
    let position = |name: &[u8]| header.iter().position(|h| h == name);
    let member_col = position(b"memberId").unwrap_or(0);
    let code_col = position(b"code");
    if !header.is_empty() {
        wtr.write_byte_record(&header).await?;
    }
    let mut out = Filtered::default();
    let mut row = ByteRecord::new();
    while rdr.read_byte_record(&mut row).await? {
        if user.matches(&row, member_col, code_col) {
            out.removed += 1;
        } else {
            wtr.write_byte_record(&row).await?;
            out.kept += 1;
        }
    }
    let mut w = wtr
        .into_inner()
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    w.shutdown().await?;
    Ok(out)
}

/// Is the object gzip? Wave files requested with gzip end in `.gz`.
fn is_gzip(key: &str) -> bool {
    key.ends_with(".gz")
}

/// The object's CSV, decompressed when it is gzip (every member: a file
/// written in parts may hold several).
async fn open_csv(sinks: &Sinks, bucket: &str, key: &str) -> Result<BoxRead, RewriteError> {
    let body = BufReader::new(sinks.read_object(bucket, key).await?);
    Ok(if is_gzip(key) {
        let mut d = GzipDecoder::new(body);
        d.multiple_members(true);
        Box::pin(d)
    } else {
        Box::pin(body)
    })
}

/// How many of the user's rows the object holds (read only).
pub async fn scan(
    sinks: &Sinks,
    bucket: &str,
    key: &str,
    user: &UserRows,
) -> Result<Filtered, RewriteError> {
    let body = open_csv(sinks, bucket, key).await?;
    filter_csv(body, tokio::io::sink(), user).await
}

/// The object written back.
#[derive(Debug, Clone)]
pub struct Rewritten {
    pub rows: Filtered,
    pub sha256: String,
    pub bytes: u64,
}

/// Rewrite the wave file at `bucket/key` (VF_SCORING_BUCKET) without the
/// user's rows. The caller holds the object's lock; `lost` fires if it is
/// taken over, and the upload is then aborted. `None` when the file holds
/// none of the user's rows (nothing is written). Any failure aborts the
/// upload: the object stays as it was.
pub async fn rewrite(
    sinks: &Sinks,
    bucket: &str,
    key: &str,
    user: &UserRows,
    lost: &CancellationToken,
) -> Result<Option<Rewritten>, RewriteError> {
    let dest = sinks.destination(DestKind::VfScoring).await?;
    if dest.bucket != bucket {
        return Err(SinkError::other(format!(
            "wave file bucket {bucket} is not VF_SCORING_BUCKET"
        ))
        .into());
    }
    let body = open_csv(sinks, bucket, key).await?;
    let gzip = is_gzip(key);
    let spec = ObjectSpec {
        key: key.to_string(),
        content_type: FileFormat::CSV.content_type(gzip),
    };
    let (w, upload) = sinks.open_s3(&dest, &spec).await?;
    let filtered = tokio::select! {
        r = filter_csv(body, maybe_gzip(w, gzip), user) => r,
        _ = lost.cancelled() => Err(RewriteError::LockLost),
    };
    match filtered {
        Ok(rows) if rows.removed > 0 && !lost.is_cancelled() => {
            let done = upload.commit().await?;
            Ok(Some(Rewritten {
                rows,
                sha256: done.sha256,
                bytes: done.bytes,
            }))
        }
        // Another request removed them meanwhile: leave the object be.
        Ok(_) if !lost.is_cancelled() => {
            upload.abort().await;
            Ok(None)
        }
        Ok(_) => {
            upload.abort().await;
            Err(RewriteError::LockLost)
        }
        Err(e) => Err(upload.abort().await.map(Into::into).unwrap_or(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn run(input: &[u8], user: &UserRows) -> (Filtered, String) {
        let (w, mut r) = tokio::io::duplex(1 << 16);
        let f = filter_csv(input, w, user).await.unwrap();
        let mut s = String::new();
        r.read_to_string(&mut s).await.unwrap();
        (f, s)
    }

    fn user() -> UserRows {
        UserRows::new(["1001".to_string()], ["AAA1".into(), "=AAA4".into()])
    }

    #[tokio::test]
    async fn drops_the_users_rows_by_member_id_or_code_and_keeps_the_rest_byte_for_byte() {
        let input = "memberId,code,Mobile Phone,locale,market\n\
                     1001,BBB1,+15551234567,en-us,c1-m1\n\
                     1006,AAA2,,en-us,\"New York, NY\"\n\
                     2002,AAA1,+1999,en-us,c1-m1\n\
                     1002,'=AAA4,,fr-ca,c1-m1\n\
                     01001,X,,,\n\
                     m-8,\"say \"\"hi\"\"\",,en-au,\n";
        let (f, out) = run(input.as_bytes(), &user()).await;
        assert_eq!(
            f,
            Filtered {
                removed: 4,
                kept: 2
            }
        );
        assert_eq!(
            out,
            "memberId,code,Mobile Phone,locale,market\n\
             1006,AAA2,,en-us,\"New York, NY\"\n\
             m-8,\"say \"\"hi\"\"\",,en-au,\n"
        );
    }

    #[tokio::test]
    async fn nothing_of_the_user_copies_the_file_unchanged() {
        let input = "memberId,code\n1006,AAA2\n1007,\n";
        let (f, out) = run(input.as_bytes(), &user()).await;
        assert_eq!(
            f,
            Filtered {
                removed: 0,
                kept: 2
            }
        );
        assert_eq!(out, input);
        let (f, out) = run(b"", &user()).await;
        assert_eq!((f, out.as_str()), (Filtered::default(), ""));
    }

    #[tokio::test]
    async fn columns_are_found_by_name_and_member_id_defaults_to_the_first() {
        // Columns in another order, and a file without a `code` column.
        let (f, out) = run(b"code,memberId\nAAA1,5\nZ,1001\nY,6\n", &user()).await;
        assert_eq!((f.removed, out.as_str()), (2, "code,memberId\nY,6\n"));
        let (f, out) = run(b"id\n1001\n1002\n", &user()).await;
        assert_eq!((f.removed, out.as_str()), (1, "id\n1002\n"));
    }

    #[tokio::test]
    async fn gzip_in_and_out() {
        use async_compression::tokio::write::GzipEncoder;
        // Two gzip members, as a file written in parts may be.
        let mut gz = Vec::new();
        for part in ["memberId,code\n1001,Q\n", "1006,AAA2\n"] {
            let mut e = GzipEncoder::new(Vec::new());
            e.write_all(part.as_bytes()).await.unwrap();
            e.shutdown().await.unwrap();
            gz.extend(e.into_inner());
        }
        let mut d = GzipDecoder::new(&gz[..]);
        d.multiple_members(true);
        let (w, mut r) = tokio::io::duplex(1 << 16);
        let f = filter_csv(d, maybe_gzip(Box::new(w), true), &user())
            .await
            .unwrap();
        assert_eq!(
            f,
            Filtered {
                removed: 1,
                kept: 1
            }
        );
        let mut packed = Vec::new();
        r.read_to_end(&mut packed).await.unwrap();
        let mut s = String::new();
        GzipDecoder::new(&packed[..])
            .read_to_string(&mut s)
            .await
            .unwrap();
        assert_eq!(s, "memberId,code\n1006,AAA2\n");
    }

    #[test]
    fn cells_compare_as_written_values() {
        assert_eq!(cell(b" 1001 "), "1001");
        assert_eq!(cell(b"'=AAA4"), "=AAA4");
        // A leading quote the encoder did not add stays.
        assert_eq!(cell(b"'plain"), "'plain");
        assert_eq!(member_form("0042"), "42");
        assert!(UserRows::new(Vec::new(), vec![" ".to_string()]).is_empty());
    }
}
