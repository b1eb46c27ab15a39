//! Running one export type into its outputs, independent of the queue: the
//! worker calls [`produce`] with an [`Outputs`] that records each upload on
//! the export and checks the lease; a one-shot CLI can call it with plain
//! [`super::S3Outputs`].
//!
//! Shapes (see [`super::Shape`]): one CSV object; one ZIP object whose CSV
//! entries are streamed (`encode::zip`) straight into the multipart upload;
//! or several CSV objects written one after another. Whatever fails, the
//! object being written is aborted and, for several objects, the ones
//! already completed are deleted — nothing half-done is left. The TMOL
//! publish is the exception: its failure leaves the main object (named in
//! the error).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use mongodb::bson::{doc, Bson, Document};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::output::no_file;
use super::{Body, CsvBody, ExportError, ExportType, Files, FilesBody, Outputs, Source};
use crate::encode::zip::ZipOut;
use crate::encode::{maybe_gzip, Counting, CsvOut, ResumeFrom};
use crate::sink::{BoxWrite, DestKind, ObjectSpec, PartWriter, SinkError, Upload, Uploaded};

/// Live counters of a run: data rows and bytes handed to the sinks.
#[derive(Clone, Default)]
pub struct Progress {
    pub rows: Arc<AtomicU64>,
    pub bytes: Arc<AtomicU64>,
    /// The run stopped leaving its upload open at a checkpoint (the
    /// export's next attempt continues it).
    pub kept_upload: Arc<std::sync::atomic::AtomicBool>,
}

/// What a finished run wrote.
#[derive(Debug, Clone)]
pub struct Produced {
    /// The object key, or the array of keys of a multi-object export.
    pub key: Bson,
    pub rows: u64,
    pub bytes: u64,
    /// Hex SHA-256 of the single object (multi-object exports: per file in
    /// `meta.files`).
    pub sha256: Option<String>,
    /// `files` (ZIP entries, or each object's key, digest and size),
    /// `published` (TMOL copy), and what the type adds.
    pub meta: Document,
}

/// Run `ty` over `src` into `outputs`.
pub async fn produce(
    ty: &dyn ExportType,
    src: &Source,
    outputs: &dyn Outputs,
    progress: &Progress,
) -> Result<Produced, ExportError> {
    let mut ledger = Ledger {
        outputs,
        progress: progress.clone(),
        open: None,
        parted: false,
        done: Vec::new(),
    };
    let result = {
        let body = run(ty, src, &mut ledger);
        tokio::select! {
            r = body => r,
            e = outputs.stopped() => Err(e),
        }
    };
    match result {
        Ok(p) => Ok(p),
        Err(e) => {
            // Not the export's fault: a resumable upload stays open at its
            // last checkpoint for the next attempt.
            let keep = matches!(e, ExportError::Drained | ExportError::LeaseLost) || e.retryable();
            let cause = ledger.cleanup(keep).await;
            Err(cause_of(e, cause))
        }
    }
}

/// The encoder usually sees only a closed pipe when the sink failed: the
/// sink's own error is then the cause.
fn cause_of(e: ExportError, sink: Option<SinkError>) -> ExportError {
    match (e, sink) {
        (
            e @ (ExportError::LeaseLost
            | ExportError::Drained
            | ExportError::Data { .. }
            | ExportError::Store(_)
            | ExportError::Panicked(_)
            | ExportError::Published { .. }),
            _,
        ) => e,
        // The checkpoint was refused: the export is not this attempt's.
        (_, Some(SinkError::Suspended)) => ExportError::LeaseLost,
        (_, Some(s)) => s.into(),
        (e, None) => e,
    }
}

async fn run(
    ty: &dyn ExportType,
    src: &Source,
    ledger: &mut Ledger<'_>,
) -> Result<Produced, ExportError> {
    let fmt = ty.format();
    let dest = ty.destination();
    // Only plain CSV types compress; the POST refuses gzip for the others.
    let gzip = src.params.gzip && ty.supports_gzip();
    let mut parts = src.key_parts();
    parts.gzip = gzip;
    let out = Out {
        fmt,
        dest,
        gzip,
        parts,
    };
    match ty.body() {
        Body::Csv(body) => run_csv(ty, body, src, ledger, &out).await,
        Body::Zip(body) => run_zip(ty, body, src, ledger, &out).await,
        Body::Objects(body) => run_objects(body, src, ledger, &out).await,
    }
}

/// Where and how a run writes: the type's format, destination, whether it
/// compresses, and what its keys are made of.
struct Out<'a> {
    fmt: super::FileFormat,
    dest: DestKind,
    gzip: bool,
    parts: super::KeyParts<'a>,
}

/// One CSV object (resumable where the outputs offer parts), then the TMOL
/// copy of a type that publishes one.
async fn run_csv(
    ty: &dyn ExportType,
    body: &dyn CsvBody,
    src: &Source,
    ledger: &mut Ledger<'_>,
    out: &Out<'_>,
) -> Result<Produced, ExportError> {
    let spec = ObjectSpec {
        key: ty.key(&out.parts),
        content_type: out.fmt.content_type(out.gzip),
    };
    let mut csv = open_csv(ledger, out, &spec).await?;
    let mut meta = body.write(src, &mut csv).await?;
    let rows = csv.finish().await?;
    let main = ledger.commit(false).await?;
    if ty.publish_to_tmol() && ledger.outputs.configured(DestKind::Tmol) {
        let published = tmol_copy(ledger, &main, src, ty.name(), out.gzip).await?;
        meta.insert("published", vec![Bson::Document(published)]);
    }
    Ok(Produced {
        key: Bson::String(main.key),
        rows,
        bytes: main.bytes,
        sha256: Some(main.sha256),
        meta,
    })
}

/// The CSV writer of the object: in parts that can continue a checkpoint
/// where the outputs offer them, else one stream.
async fn open_csv(
    ledger: &mut Ledger<'_>,
    out: &Out<'_>,
    spec: &ObjectSpec,
) -> Result<CsvOut, ExportError> {
    let rows = ledger.progress.rows.clone();
    Ok(match ledger.open_parts(out.dest, spec).await? {
        Some((writer, resume, stop)) => CsvOut::parted(
            Box::new(writer),
            out.gzip,
            out.fmt.delimiter,
            rows,
            stop,
            resume,
        ),
        None => {
            let w = ledger.open(out.dest, spec, true).await?;
            CsvOut::with_progress(maybe_gzip(w, out.gzip), out.fmt.delimiter, rows)
        }
    })
}

/// The TMOL copy of the committed main object, as `meta.published`
/// records it. A copy that fails is aborted and fails the export as
/// `Published`, naming the main object (complete and kept).
async fn tmol_copy(
    ledger: &mut Ledger<'_>,
    main: &Uploaded,
    src: &Source,
    export_type: &str,
    gzip: bool,
) -> Result<Document, ExportError> {
    match publish_tmol(ledger, main, src, export_type, gzip).await {
        Ok(copy) => Ok(doc! {
            "bucket": copy.bucket.unwrap_or_default(),
            "key": copy.key,
            "sha256": copy.sha256,
            "bytes": copy.bytes as i64,
        }),
        Err(e) => {
            let cause = ledger.abort_open().await;
            Err(publish_failed(cause_of(e, cause), main.clone()))
        }
    }
}

/// One ZIP object of CSV entries.
async fn run_zip(
    ty: &dyn ExportType,
    body: &dyn FilesBody,
    src: &Source,
    ledger: &mut Ledger<'_>,
    out: &Out<'_>,
) -> Result<Produced, ExportError> {
    let (fmt, dest, parts) = (out.fmt, out.dest, &out.parts);
    let spec = ObjectSpec {
        key: ty.key(parts),
        content_type: fmt.content_type(false),
    };
    let w = ledger.open(dest, &spec, true).await?;
    let mut zip = ZipOut::start(w, ledger.progress.rows.clone());
    let mut meta = body.write_files(src, &mut zip).await?;
    let (names, rows) = zip.finish().await?;
    let main = ledger.commit(false).await?;
    meta.insert("files", names);
    Ok(Produced {
        key: Bson::String(main.key),
        rows,
        bytes: main.bytes,
        sha256: Some(main.sha256),
        meta,
    })
}

/// Several CSV objects, one after another.
async fn run_objects(
    body: &dyn FilesBody,
    src: &Source,
    ledger: &mut Ledger<'_>,
    out: &Out<'_>,
) -> Result<Produced, ExportError> {
    let (fmt, dest) = (out.fmt, out.dest);
    let mut objects = ObjectFiles {
        ledger,
        dest,
        content_type: fmt.content_type(false),
        delimiter: fmt.delimiter,
        cur: None,
        done: Vec::new(),
    };
    let mut meta = body.write_files(src, &mut objects).await?;
    objects.close_current().await?;
    let done = std::mem::take(&mut objects.done);
    let rows = done.iter().map(|(_, r)| r).sum();
    let bytes = done.iter().map(|(o, _)| o.bytes).sum();
    let keys = done
        .iter()
        .map(|(o, _)| Bson::String(o.key.clone()))
        .collect();
    let files: Vec<Bson> = done
        .into_iter()
        .map(|(o, rows)| {
            Bson::Document(doc! {
                "key": o.key,
                "sha256": o.sha256,
                "bytes": o.bytes as i64,
                "rows": rows as i64,
            })
        })
        .collect();
    meta.insert("files", files);
    Ok(Produced {
        key: Bson::Array(keys),
        rows,
        bytes,
        sha256: None,
        meta,
    })
}

/// The objects of one run: the one open, and the committed ones to delete
/// if a later one fails.
struct Ledger<'o> {
    outputs: &'o dyn Outputs,
    progress: Progress,
    open: Option<Upload>,
    /// The open object is a resumable one (kept, not aborted, when the run
    /// stops for a reason that is not the export's fault).
    parted: bool,
    done: Vec<Uploaded>,
}

impl Ledger<'_> {
    /// Open a resumable object, when the outputs offer one.
    async fn open_parts(
        &mut self,
        dest: DestKind,
        spec: &ObjectSpec,
    ) -> Result<Option<(PartWriter, Option<ResumeFrom>, CancellationToken)>, ExportError> {
        let Some(mut p) = self.outputs.open_parts(dest, spec).await? else {
            return Ok(None);
        };
        if let Some(r) = &p.resume {
            self.progress
                .bytes
                .store(p.upload.bytes(), Ordering::Relaxed);
            tracing::info!(
                rows = r.rows,
                "continuing the export from its last checkpoint"
            );
        }
        p.writer.count_bytes(self.progress.bytes.clone());
        self.open = Some(p.upload);
        self.parted = true;
        Ok(Some((p.writer, p.resume, p.stop)))
    }

    /// Open an object; `count` adds its bytes to the export's progress.
    async fn open(
        &mut self,
        dest: DestKind,
        spec: &ObjectSpec,
        count: bool,
    ) -> Result<BoxWrite, ExportError> {
        let (w, up) = self.outputs.open(dest, spec).await?;
        self.open = Some(up);
        Ok(if count {
            Box::new(Counting::new(w, self.progress.bytes.clone()))
        } else {
            w
        })
    }

    /// Commit the open object (its writer must be shut down). `track`: the
    /// object is one of several and goes if a later one fails.
    async fn commit(&mut self, track: bool) -> Result<Uploaded, ExportError> {
        self.outputs.before_commit().await?;
        let up = self
            .open
            .take()
            .ok_or_else(|| ExportError::Sink(SinkError::Aborted))?;
        let done = up.commit().await?;
        if track {
            self.done.push(done.clone());
        }
        Ok(done)
    }

    /// Abort the open object, waiting for the abort; returns the sink's own
    /// failure if it failed first.
    async fn abort_open(&mut self) -> Option<SinkError> {
        match self.open.take() {
            Some(up) => up.abort().await,
            None => None,
        }
    }

    /// Abort the open object and delete the committed ones: only what this
    /// attempt wrote, and only while it still holds its lease.
    async fn cleanup(&mut self, keep: bool) -> Option<SinkError> {
        if keep && self.parted {
            if let Some(up) = self.open.take() {
                // Stop at the last checkpoint, leaving the upload for the
                // export's next attempt.
                return match up.suspend().await {
                    Ok(()) => {
                        self.progress.kept_upload.store(true, Ordering::Relaxed);
                        None
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not stop the upload at its checkpoint");
                        Some(e)
                    }
                };
            }
        }
        if self.parted {
            // Aborted: no checkpoint is left for a next attempt.
            self.progress.kept_upload.store(false, Ordering::Relaxed);
        }
        let cause = self.abort_open().await;
        if !self.done.is_empty() && !self.outputs.still_owner().await {
            tracing::warn!(
                objects = self.done.len(),
                "the export is no longer this attempt's: its objects are left to the new owner"
            );
            self.done.clear();
        }
        for obj in self.done.drain(..) {
            match self.outputs.delete(&obj).await {
                Ok(()) => tracing::info!(key = %obj.key, "deleted an object of the failed export"),
                Err(e) => {
                    tracing::warn!(key = %obj.key, error = %e, "could not delete an object of the failed export")
                }
            }
        }
        cause
    }
}

/// Stream the committed main object into TMOL_BUCKET (GetObject body →
/// multipart upload: memory is the part buffers, never the object).
async fn publish_tmol(
    ledger: &mut Ledger<'_>,
    main: &Uploaded,
    src: &Source,
    export_type: &str,
    gzip: bool,
) -> Result<Uploaded, ExportError> {
    let spec = ObjectSpec {
        key: format!(
            "verifiedfan/{}/{export_type}-{}.csv{}",
            src.campaign.id,
            src.export_id,
            if gzip { ".gz" } else { "" }
        ),
        content_type: super::FileFormat::CSV.content_type(gzip),
    };
    let mut body = ledger.outputs.read(main).await?;
    let mut w = ledger.open(DestKind::Tmol, &spec, false).await?;
    tokio::io::copy(&mut body, &mut w).await?;
    w.shutdown().await?;
    ledger.commit(false).await
}

fn publish_failed(e: ExportError, main: Uploaded) -> ExportError {
    if matches!(e, ExportError::LeaseLost | ExportError::Drained) {
        return e;
    }
    // Permanent: the export's own object is complete (and recorded); the
    // caller decides whether to request it again.
    ExportError::Published {
        cause: Box::new(e),
        main: Box::new(main),
    }
}

/// Several objects, one after another: each is committed when the next one
/// starts (or at the end) and deleted again if a later one fails.
struct ObjectFiles<'l, 'o> {
    ledger: &'l mut Ledger<'o>,
    dest: DestKind,
    content_type: &'static str,
    delimiter: u8,
    cur: Option<CsvOut>,
    /// The committed objects and their rows.
    done: Vec<(Uploaded, u64)>,
}

impl ObjectFiles<'_, '_> {
    async fn close_current(&mut self) -> Result<(), ExportError> {
        if let Some(out) = self.cur.take() {
            let rows = out.finish().await?;
            let done = self.ledger.commit(true).await?;
            self.done.push((done, rows));
        }
        Ok(())
    }
}

#[async_trait]
impl Files for ObjectFiles<'_, '_> {
    async fn next(&mut self, name: &str) -> Result<&mut CsvOut, ExportError> {
        self.close_current().await?;
        let spec = ObjectSpec {
            key: name.to_string(),
            content_type: self.content_type,
        };
        let w = self.ledger.open(self.dest, &spec, true).await?;
        Ok(self.cur.insert(CsvOut::with_progress(
            w,
            self.delimiter,
            self.ledger.progress.rows.clone(),
        )))
    }
    #[allow(clippy::result_large_err)]
    fn current(&mut self) -> Result<&mut CsvOut, ExportError> {
        self.cur.as_mut().ok_or_else(no_file)
    }
}
