//! Encoders: CSV rows (RFC 4180 via csv-async, formula neutralising) over
//! any byte sink, optionally gzip-compressed. Encoders know nothing of where
//! the bytes go.

pub mod zip;

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use std::pin::Pin;
use std::task::{Context, Poll};

use async_compression::tokio::write::GzipEncoder;
use async_compression::Level;
use csv_async::{AsyncWriter, AsyncWriterBuilder, ByteRecord, QuoteStyle, Terminator};
use mongodb::bson::Bson;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// A boxed byte sink the encoders write to.
pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// The byte sink of a resumable CSV (spec: exports.md, Resumable): parts
/// that end where the encoder cuts them. The sinks implement it; the
/// encoder knows nothing of where the parts go.
#[async_trait::async_trait]
pub trait PartSink: AsyncWrite + Send + Unpin {
    /// A shared view of the bytes since the last cut (the sink is buried
    /// under the CSV writer and the gzip member while rows are written).
    fn cut_due(&self) -> CutDue;
    /// End the part here: everything written so far is `rows` data rows,
    /// and a reader continues after `position`.
    async fn cut(&mut self, rows: u64, position: Bson) -> std::io::Result<()>;
}

/// Whether a part's worth of bytes went into a [`PartSink`] since its last
/// cut.
#[derive(Clone)]
pub struct CutDue {
    since_cut: Arc<AtomicU64>,
    part_size: u64,
}

impl CutDue {
    /// `since_cut`: the sink's count of bytes since its last cut.
    pub fn new(since_cut: Arc<AtomicU64>, part_size: u64) -> Self {
        Self {
            since_cut,
            part_size,
        }
    }

    pub fn is_due(&self) -> bool {
        self.since_cut.load(Ordering::Relaxed) >= self.part_size
    }
}

/// OWASP CSV injection: a cell a spreadsheet would run as a formula gets a
/// leading `'`. `+`/`-` followed by a plain number or phone number
/// (`^[+-]?[0-9][0-9 ().-]*$`) is data, not a formula, and passes unchanged.
pub fn neutralise(cell: &str) -> Cow<'_, str> {
    let b = cell.as_bytes();
    let risky = match b.first() {
        Some(b'=' | b'@' | b'\t' | b'\r') => true,
        Some(b'+' | b'-') => !is_plain_number(&b[1..]),
        _ => false,
    };
    if risky {
        let mut s = String::with_capacity(cell.len() + 1);
        s.push('\'');
        s.push_str(cell);
        Cow::Owned(s)
    } else {
        Cow::Borrowed(cell)
    }
}

/// `[0-9][0-9 ().-]*` (after the sign).
fn is_plain_number(rest: &[u8]) -> bool {
    match rest.split_first() {
        Some((first, tail)) if first.is_ascii_digit() => tail
            .iter()
            .all(|c| c.is_ascii_digit() || matches!(c, b' ' | b'(' | b')' | b'.' | b'-')),
        _ => false,
    }
}

/// Wrap a sink in gzip when asked, at deflate level 1: on export CSV it
/// compresses about 5.6:1 against level 6's 6.9:1, for a third of the CPU
/// (level 6 cost more per row than reading the row from MongoDB).
pub fn maybe_gzip(w: BoxWrite, gzip: bool) -> BoxWrite {
    if gzip {
        Box::new(gzip_encoder(w))
    } else {
        w
    }
}

fn gzip_encoder<W: AsyncWrite>(w: W) -> GzipEncoder<W> {
    GzipEncoder::with_quality(w, Level::Fastest)
}

/// Counts bytes on their way to the sink.
pub struct Counting {
    inner: BoxWrite,
    n: Arc<AtomicU64>,
}

impl Counting {
    /// `inner`, adding every byte written through it to `n`.
    pub fn new(inner: BoxWrite, n: Arc<AtomicU64>) -> Self {
        Self { inner, n }
    }
}

impl AsyncWrite for Counting {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(k)) = &r {
            self.n.fetch_add(*k as u64, Ordering::Relaxed);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Why an encoder stopped.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("writing CSV: {0}")]
    Csv(#[from] csv_async::Error),
    #[error("writing output: {0}")]
    Io(#[from] std::io::Error),
    /// Asked to stop: the last part is cut and checkpointed (a hand-back).
    #[error("stopped at a part boundary")]
    Suspended,
}

/// What a CSV writer writes into: any byte sink, or the parts of a
/// resumable upload (whose shutdown only flushes: a gzip member ends at
/// every cut, not the upload).
enum Sink {
    Boxed(BoxWrite),
    Parts(Box<dyn PartSink>),
}

/// The bytes under the CSV writer: plain, or one gzip member.
enum Stage {
    Plain(Sink),
    // Boxed: the encoder's state is large, and one per writer.
    Gzip(Box<GzipEncoder<Sink>>),
}

impl AsyncWrite for Sink {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Sink::Boxed(w) => Pin::new(w).poll_write(cx, buf),
            Sink::Parts(w) => Pin::new(w).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Sink::Boxed(w) => Pin::new(w).poll_flush(cx),
            Sink::Parts(w) => Pin::new(w).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Sink::Boxed(w) => Pin::new(w).poll_shutdown(cx),
            // The parts outlive a member: only `CsvOut::finish` closes them.
            Sink::Parts(w) => Pin::new(w).poll_flush(cx),
        }
    }
}

impl AsyncWrite for Stage {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stage::Plain(w) => Pin::new(w).poll_write(cx, buf),
            Stage::Gzip(w) => Pin::new(w).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stage::Plain(w) => Pin::new(w).poll_flush(cx),
            Stage::Gzip(w) => Pin::new(w).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stage::Plain(w) => Pin::new(w).poll_shutdown(cx),
            Stage::Gzip(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}

impl Stage {
    fn new(sink: Sink, gzip: bool) -> Self {
        if gzip {
            Stage::Gzip(Box::new(gzip_encoder(sink)))
        } else {
            Stage::Plain(sink)
        }
    }
    /// End the gzip member (if any) and give the sink back.
    async fn into_sink(self) -> std::io::Result<Sink> {
        match self {
            Stage::Plain(s) => Ok(s),
            Stage::Gzip(mut g) => {
                g.shutdown().await?;
                Ok(g.into_inner())
            }
        }
    }
}

/// A resumable CSV's parts: where it may be cut, when it must stop.
struct Parting {
    due: CutDue,
    stop: CancellationToken,
    gzip: bool,
    /// Where a continued run's readers start (None: from the beginning).
    resume_from: Option<Bson>,
}

/// Where a resumable CSV continues from its last checkpoint.
#[derive(Debug, Clone)]
pub struct ResumeFrom {
    /// Data rows already in the committed parts.
    pub rows: u64,
    /// The readers' position after them.
    pub position: Bson,
}

/// A CSV writer that neutralises formulas and counts data rows.
pub struct CsvOut {
    /// `None` only while a part is being cut.
    w: Option<AsyncWriter<Stage>>,
    delimiter: u8,
    rec: ByteRecord,
    rows: u64,
    progress: Arc<AtomicU64>,
    parts: Option<Parting>,
}

fn csv_writer(stage: Stage, delimiter: u8) -> AsyncWriter<Stage> {
    AsyncWriterBuilder::new()
        .delimiter(delimiter)
        .terminator(Terminator::Any(b'\n'))
        .quote_style(QuoteStyle::Necessary)
        .has_headers(false)
        .create_writer(stage)
}

impl CsvOut {
    /// `delimiter`: b',' or b'\t'. Lines end with `\n`; fields are quoted
    /// only when needed.
    pub fn new(w: BoxWrite, delimiter: u8) -> Self {
        Self::with_progress(w, delimiter, Arc::new(AtomicU64::new(0)))
    }

    /// As [`CsvOut::new`], adding each row to a shared counter: the several
    /// files of one export (ZIP entries, objects) report one total.
    pub fn with_progress(w: BoxWrite, delimiter: u8, progress: Arc<AtomicU64>) -> Self {
        Self {
            w: Some(csv_writer(Stage::Plain(Sink::Boxed(w)), delimiter)),
            delimiter,
            rec: ByteRecord::new(),
            rows: 0,
            progress,
            parts: None,
        }
    }

    /// A resumable CSV (spec: exports.md, Resumable): the type marks row
    /// boundaries with [`CsvOut::boundary`]; at the first one after a
    /// part's worth of bytes the part is cut (a whole gzip member when
    /// `gzip`) and checkpointed, and when `stop` is cancelled the run stops
    /// at the next boundary with [`EncodeError::Suspended`]. `resume`: the
    /// run continues a checkpoint (its header is in the first part).
    pub fn parted(
        w: Box<dyn PartSink>,
        gzip: bool,
        delimiter: u8,
        progress: Arc<AtomicU64>,
        stop: CancellationToken,
        resume: Option<ResumeFrom>,
    ) -> Self {
        let due = w.cut_due();
        let rows = resume.as_ref().map_or(0, |r| r.rows);
        progress.fetch_add(rows, Ordering::Relaxed);
        Self {
            w: Some(csv_writer(Stage::new(Sink::Parts(w), gzip), delimiter)),
            delimiter,
            rec: ByteRecord::new(),
            rows,
            progress,
            parts: Some(Parting {
                due,
                stop,
                gzip,
                resume_from: resume.map(|r| r.position),
            }),
        }
    }

    /// Where this run's readers start: after this position when it
    /// continues a checkpoint.
    pub fn resume_from(&self) -> Option<&Bson> {
        self.parts.as_ref().and_then(|p| p.resume_from.as_ref())
    }

    fn writer(&mut self) -> &mut AsyncWriter<Stage> {
        self.w.as_mut().expect("a writer between cuts")
    }

    /// A shared view of the row count, for progress reporting.
    pub fn row_counter(&self) -> Arc<AtomicU64> {
        self.progress.clone()
    }

    /// Data rows written so far (the header is not a row).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The header line (not counted, not neutralised: our own names). A
    /// continued run has it already.
    pub async fn header<S: AsRef<str>>(&mut self, cells: &[S]) -> Result<(), csv_async::Error> {
        if self.resume_from().is_some() {
            return Ok(());
        }
        self.rec.clear();
        for c in cells {
            self.rec.push_field(c.as_ref().as_bytes());
        }
        let rec = std::mem::take(&mut self.rec);
        let r = self.writer().write_byte_record(&rec).await;
        self.rec = rec;
        r
    }

    /// One data row. Cells are copied into one reused record buffer (no
    /// per-row allocation once warm); a cell needing neutralising is the
    /// only one that allocates.
    pub async fn row<S: AsRef<str>>(&mut self, cells: &[S]) -> Result<(), csv_async::Error> {
        self.rec.clear();
        for c in cells {
            match neutralise(c.as_ref()) {
                Cow::Borrowed(s) => self.rec.push_field(s.as_bytes()),
                Cow::Owned(s) => self.rec.push_field(s.as_bytes()),
            }
        }
        let rec = std::mem::take(&mut self.rec);
        let r = self.writer().write_byte_record(&rec).await;
        self.rec = rec;
        r?;
        self.rows += 1;
        self.progress.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// A row boundary: every row so far is written, and the readers would
    /// continue after `position()`. A resumable CSV cuts its part here when
    /// a part's worth of bytes is written, and stops after the cut when it
    /// was asked to; anything else ignores it. `position` is asked for only when a part is cut, and
    /// before the returned future runs (so it may borrow a reader that is
    /// not `Sync`).
    pub fn boundary(
        &mut self,
        position: impl FnOnce() -> Bson,
    ) -> impl std::future::Future<Output = Result<(), EncodeError>> + Send + '_ {
        // Only a full part is cut (S3 wants every part but the last to be
        // at least 5 MiB): a run asked to stop goes on to its next cut.
        let cut = match &self.parts {
            Some(p) if p.due.is_due() => Some((position(), p.stop.is_cancelled())),
            _ => None,
        };
        async move {
            match cut {
                Some((position, stop)) => self.cut(position, stop).await,
                None => Ok(()),
            }
        }
    }

    /// End the part here (a whole gzip member), checkpointed at `position`;
    /// `stop`: end the run too.
    async fn cut(&mut self, position: Bson, stop: bool) -> Result<(), EncodeError> {
        let gzip = self.parts.as_ref().is_some_and(|p| p.gzip);
        let w = self.w.take().expect("a writer between cuts");
        let stage = w
            .into_inner()
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let Sink::Parts(mut parts) = stage.into_sink().await? else {
            unreachable!("a parted CSV writes into parts");
        };
        parts.cut(self.rows, position).await?;
        if stop {
            // The writer is dropped: the upload task sees the end of data.
            return Err(EncodeError::Suspended);
        }
        self.w = Some(csv_writer(
            Stage::new(Sink::Parts(parts), gzip),
            self.delimiter,
        ));
        Ok(())
    }

    /// Flush and close the byte sink (writes the gzip trailer, signals end
    /// of data to the uploader). Returns the row count.
    pub async fn finish(mut self) -> Result<u64, std::io::Error> {
        let rows = self.rows;
        let w = self.w.take().expect("a writer between cuts");
        let stage = w
            .into_inner()
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        match stage.into_sink().await? {
            Sink::Boxed(mut b) => b.shutdown().await?,
            Sink::Parts(mut p) => p.shutdown().await?,
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neutralises_formulas_only() {
        for (input, want) in [
            ("=HYPERLINK(\"x\")", "'=HYPERLINK(\"x\")"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tx", "'\tx"),
            ("\rx", "'\rx"),
            ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
            ("-2+3", "'-2+3"),
            ("-", "'-"),
            ("+", "'+"),
            ("+15551234567", "+15551234567"),
            ("+1 (555) 123-4567", "+1 (555) 123-4567"),
            ("-5", "-5"),
            ("-3.25", "-3.25"),
            ("plain", "plain"),
            ("", ""),
            ("a=b", "a=b"),
        ] {
            assert_eq!(neutralise(input), want, "input {input:?}");
        }
    }

    #[tokio::test]
    async fn csv_quoting_and_counting() {
        let (w, mut r) = tokio::io::duplex(1 << 16);
        let mut out = CsvOut::new(Box::new(w), b',');
        out.header(&["a", "b"]).await.unwrap();
        out.row(&["x,y", "say \"hi\""]).await.unwrap();
        out.row(&["line\nbreak", "=1+1"]).await.unwrap();
        out.row(&["ünï", ""]).await.unwrap();
        assert_eq!(out.finish().await.unwrap(), 3);
        let mut s = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut r, &mut s)
            .await
            .unwrap();
        assert_eq!(
            s,
            "a,b\n\"x,y\",\"say \"\"hi\"\"\"\n\"line\nbreak\",'=1+1\nünï,\n"
        );
    }
}
