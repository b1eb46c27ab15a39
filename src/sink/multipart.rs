//! S3 multipart upload fed by a [`PartWriter`]: the writer decides where
//! parts end (a fixed size, or — for a resumable export — a row boundary
//! the encoder marks with [`PartWriter::cut`]); the upload task uploads each
//! part while the next one fills (one part in flight), writes the
//! checkpoint of a marked part after its ETag is known, and completes on
//! commit, aborts on abort, or stops leaving the upload open on suspend
//! (the export continues from its last checkpoint elsewhere).
//!
//! Memory: two part buffers per upload, allocated once and swapped (no
//! allocator churn of multi-MiB blocks, which glibc keeps resident once its
//! mmap threshold has grown).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption};
use bytes::{Bytes, BytesMut};
use mongodb::bson::Bson;
use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWrite;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, PollSender};

use super::UploadRef;
use super::{
    Checkpoint, Destination, End, ObjectSpec, OnPart, PartRef, SinkError, Upload, Uploaded,
};
use crate::encode::{CutDue, PartSink};

/// Bytes the writer gathers before handing them to the upload task.
const CHUNK: usize = 64 * 1024;
/// Chunks in flight between writer and task (backpressure beyond that).
const CHANNEL: usize = 4;

/// What flows from the writer to the upload task, in order.
enum Chunk {
    Data(Bytes),
    /// End the part here (a fixed-size split, no checkpoint).
    Split,
    /// End the part here, at a row boundary: checkpoint it.
    Cut {
        rows: u64,
        position: Bson,
    },
}

/// The encoder's end of a multipart upload.
pub struct PartWriter {
    tx: PollSender<Chunk>,
    buf: BytesMut,
    part_size: usize,
    /// Bytes since the last part ended (shared with [`CutDue`]).
    since_cut: Arc<AtomicU64>,
    /// Also counts every byte here (the export's progress).
    counted: Option<Arc<AtomicU64>>,
    /// Only [`PartWriter::cut`] ends a part (up to twice the part size,
    /// then a split keeps memory bounded); else every `part_size` bytes.
    marked: bool,
}

impl PartWriter {
    /// Add every byte written to `n` too.
    pub fn count_bytes(&mut self, n: Arc<AtomicU64>) {
        self.counted = Some(n);
    }

    fn since(&self) -> u64 {
        self.since_cut.load(Ordering::Relaxed)
    }

    async fn send(&mut self, c: Chunk) -> std::io::Result<()> {
        std::future::poll_fn(|cx| self.tx.poll_reserve(cx))
            .await
            .map_err(|_| closed())?;
        self.tx.send_item(c).map_err(|_| closed())
    }

    /// Hand the gathered bytes to the task (and a split after them when a
    /// part is due).
    fn poll_send_buf(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if !self.buf.is_empty() {
            ready!(self.tx.poll_reserve(cx)).map_err(|_| closed())?;
            let data = self.buf.split().freeze();
            self.tx.send_item(Chunk::Data(data)).map_err(|_| closed())?;
        }
        let limit = if self.marked {
            2 * self.part_size as u64
        } else {
            self.part_size as u64
        };
        if self.since() >= limit {
            ready!(self.tx.poll_reserve(cx)).map_err(|_| closed())?;
            self.tx.send_item(Chunk::Split).map_err(|_| closed())?;
            self.since_cut.store(0, Ordering::Relaxed);
        }
        Poll::Ready(Ok(()))
    }
}

fn closed() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the upload stopped")
}

#[async_trait::async_trait]
impl PartSink for PartWriter {
    fn cut_due(&self) -> CutDue {
        CutDue::new(self.since_cut.clone(), self.part_size as u64)
    }

    /// The upload task checkpoints the part once S3 has it.
    async fn cut(&mut self, rows: u64, position: Bson) -> std::io::Result<()> {
        std::future::poll_fn(|cx| self.poll_send_buf(cx)).await?;
        self.send(Chunk::Cut { rows, position }).await?;
        self.since_cut.store(0, Ordering::Relaxed);
        Ok(())
    }
}

impl AsyncWrite for PartWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let limit = if self.marked {
            2 * self.part_size as u64
        } else {
            self.part_size as u64
        };
        // A full chunk goes first, and a due split before any more byte:
        // parts of a fixed size are exactly that size.
        if self.buf.len() >= CHUNK || self.since() >= limit {
            ready!(self.poll_send_buf(cx))?;
        }
        let room = (limit - self.since()) as usize;
        let n = data.len().min(room).min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        self.since_cut.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(c) = &self.counted {
            c.fetch_add(n as u64, Ordering::Relaxed);
        }
        Poll::Ready(Ok(n))
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_send_buf(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_send_buf(cx))?;
        self.tx.close();
        Poll::Ready(Ok(()))
    }
}

/// How an upload starts: a new one, or one continued from a checkpoint.
pub(super) enum Start<'a> {
    New,
    Resume(&'a UploadRef, &'a Checkpoint),
}

pub(super) async fn open(
    dest: &Destination,
    spec: &ObjectSpec,
    part_size: usize,
    kms_key: Option<&str>,
    on_part: Option<OnPart>,
    start: Start<'_>,
) -> Result<(PartWriter, Upload), SinkError> {
    let (info, parts) = match start {
        Start::New => (create(dest, spec, kms_key).await?, Resumed::default()),
        Start::Resume(up, cp) => (up.clone(), verify(dest, up, cp).await?),
    };
    let (tx, rx) = mpsc::channel(CHANNEL);
    let (end_tx, end_rx) = oneshot::channel();
    let cancel = CancellationToken::new();
    let bytes = Arc::new(AtomicU64::new(parts.bytes));
    let marked = on_part.is_some();
    let state = Parts {
        client: dest.client.clone(),
        info: info.clone(),
        next: parts.done.len() as i32 + 1,
        done: parts.done,
        sizes: parts.sizes,
        in_flight: None,
        spare: None,
        on_part,
    };
    let task = tokio::spawn(run(
        state,
        part_size,
        parts.hash,
        rx,
        end_rx,
        cancel.clone(),
        bytes.clone(),
    ));
    let writer = PartWriter {
        tx: PollSender::new(tx),
        buf: BytesMut::with_capacity(CHUNK),
        part_size,
        since_cut: Arc::new(AtomicU64::new(0)),
        counted: None,
        marked,
    };
    Ok((writer, Upload::new(end_tx, cancel, task, bytes, Some(info))))
}

async fn create(
    dest: &Destination,
    spec: &ObjectSpec,
    kms_key: Option<&str>,
) -> Result<UploadRef, SinkError> {
    let mut req = dest
        .client
        .create_multipart_upload()
        .bucket(&dest.bucket)
        .key(&spec.key)
        .acl(dest.acl.clone())
        .content_type(spec.content_type);
    req = match kms_key {
        Some(k) => req
            .server_side_encryption(ServerSideEncryption::AwsKms)
            .ssekms_key_id(k),
        None => req.server_side_encryption(ServerSideEncryption::Aes256),
    };
    let out = req.send().await.map_err(|e| {
        SinkError::remote(
            &format!("start upload to bucket {}", dest.bucket),
            &dest.bucket,
            &e,
        )
    })?;
    let upload_id = out
        .upload_id()
        .ok_or_else(|| SinkError::other("S3 returned no upload id"))?
        .to_string();
    Ok(UploadRef {
        bucket: dest.bucket.clone(),
        key: spec.key.clone(),
        upload_id: Some(upload_id),
    })
}

/// What a continued upload starts from.
#[derive(Default)]
struct Resumed {
    done: Vec<CompletedPart>,
    sizes: Vec<i64>,
    bytes: u64,
    hash: Sha256,
}

/// The parts S3 holds for the upload must be the checkpoint's, each with
/// its ETag and size; anything else (the upload gone, a part missing or
/// different) is [`SinkError::Resume`]: the export starts again cleanly.
async fn verify(dest: &Destination, up: &UploadRef, cp: &Checkpoint) -> Result<Resumed, SinkError> {
    let inconsistent = |why: String| SinkError::Resume(why);
    let upload_id = up
        .upload_id
        .clone()
        .ok_or_else(|| inconsistent("no upload id recorded".into()))?;
    let mut held: std::collections::HashMap<i32, (String, i64)> = Default::default();
    let mut marker: Option<String> = None;
    loop {
        let out = dest
            .client
            .list_parts()
            .bucket(&up.bucket)
            .key(&up.key)
            .upload_id(&upload_id)
            .set_part_number_marker(marker.take())
            .send()
            .await
            .map_err(|e| match SinkError::remote("list parts", &up.bucket, &e) {
                SinkError::Remote(r) if r.code.as_deref() == Some("NoSuchUpload") => {
                    inconsistent("the upload is gone".into())
                }
                // A passing failure: try again later, the upload kept.
                e @ SinkError::Remote(_) if e.class() == Some(super::RemoteClass::Transient) => e,
                // Anything else (refused, unreadable): start again cleanly
                // rather than retry a check that cannot pass.
                other => inconsistent(format!("its parts cannot be listed: {other}")),
            })?;
        for p in out.parts() {
            if let (Some(n), Some(e)) = (p.part_number(), p.e_tag()) {
                held.insert(n, (e.to_string(), p.size().unwrap_or(-1)));
            }
        }
        match out.next_part_number_marker() {
            Some(m) if out.is_truncated() == Some(true) => marker = Some(m.to_string()),
            _ => break,
        }
    }
    let numbers: Vec<i32> = cp.parts.iter().map(|p| p.number).collect();
    if numbers != (1..=cp.part_number).collect::<Vec<_>>() {
        return Err(inconsistent("the checkpoint's parts are not 1..n".into()));
    }
    let mut done = Vec::with_capacity(cp.parts.len());
    for p in &cp.parts {
        match held.get(&p.number) {
            Some((etag, size)) if *etag == p.etag && *size == p.size => {}
            Some(_) => return Err(inconsistent(format!("part {} differs", p.number))),
            None => return Err(inconsistent(format!("part {} is missing", p.number))),
        }
        done.push(
            CompletedPart::builder()
                .part_number(p.number)
                .e_tag(&p.etag)
                .build(),
        );
    }
    let state: Option<SerializedState<Sha256>> = cp.sha256_state.bytes.as_slice().try_into().ok();
    let hash = state
        .and_then(|s| Sha256::deserialize(&s).ok())
        .ok_or_else(|| inconsistent("the digest state cannot be read".into()))?;
    Ok(Resumed {
        done,
        sizes: cp.parts.iter().map(|p| p.size).collect(),
        bytes: cp.bytes as u64,
        hash,
    })
}

/// A part uploaded: its number, ETag and size.
type Sent = (CompletedPart, i64, Bytes);

struct Parts {
    client: aws_sdk_s3::Client,
    info: UploadRef,
    done: Vec<CompletedPart>,
    /// The next part's number.
    next: i32,
    /// The part being uploaded (and, after it, its checkpoint written);
    /// hands its buffer back when done.
    in_flight: Option<JoinHandle<Result<Sent, SinkError>>>,
    /// A buffer handed back by the last finished part, for the next fill.
    spare: Option<BytesMut>,
    on_part: Option<OnPart>,
    /// Sizes of the done parts, for the checkpoints.
    sizes: Vec<i64>,
}

impl Parts {
    /// Wait for the part in flight, if any.
    async fn settle(&mut self) -> Result<(), SinkError> {
        if let Some(h) = self.in_flight.take() {
            let (part, size, data) = h
                .await
                .map_err(|e| SinkError::other(format!("part upload task: {e}")))??;
            self.done.push(part);
            self.sizes.push(size);
            // The SDK has dropped its copies of the body by now.
            self.spare = data.try_into_mut().ok();
        }
        Ok(())
    }

    /// An empty buffer for the next part: the one handed back by the part
    /// before last if there is one, else a new one.
    fn buffer(&mut self, part_size: usize) -> BytesMut {
        match self.spare.take() {
            Some(mut b) => {
                b.clear();
                b
            }
            None => BytesMut::with_capacity(part_size),
        }
    }

    /// The full buffer, swapped for an empty one. The part in flight is
    /// waited for first: its buffer is the next one.
    async fn swap(&mut self, buf: &mut BytesMut, part_size: usize) -> Result<Bytes, SinkError> {
        self.settle().await?;
        let next = self.buffer(part_size);
        Ok(std::mem::replace(buf, next).freeze())
    }

    /// Start uploading `data` as the next part (after the previous one is
    /// done: one part in flight bounds memory); then, for a marked part,
    /// write its checkpoint.
    async fn send(&mut self, data: Bytes, checkpoint: Option<Checkpoint>) -> Result<(), SinkError> {
        self.settle().await?;
        let n = self.next;
        self.next += 1;
        let client = self.client.clone();
        let info = self.info.clone();
        let on_part = self.on_part.clone();
        // The parts before this one, for the checkpoint.
        let before: Vec<PartRef> = self
            .done
            .iter()
            .zip(&self.sizes)
            .map(|(p, size)| PartRef {
                number: p.part_number().unwrap_or_default(),
                etag: p.e_tag().unwrap_or_default().to_string(),
                size: *size,
            })
            .collect();
        self.in_flight = Some(tokio::spawn(async move {
            let size = data.len() as i64;
            let out = client
                .upload_part()
                .bucket(&info.bucket)
                .key(&info.key)
                .set_upload_id(info.upload_id.clone())
                .part_number(n)
                .body(ByteStream::from(data.clone()))
                // No SHA-256 of every part for SigV4: it was an eighth of an
                // export's CPU. Integrity still holds: TLS to S3, and the
                // SDK's default CRC32 checksum, which S3 verifies per part.
                .customize()
                .disable_payload_signing()
                .send()
                .await
                .map_err(|e| {
                    SinkError::remote(
                        &format!("upload part {n} to bucket {}", info.bucket),
                        &info.bucket,
                        &e,
                    )
                })?;
            let etag = out.e_tag().map(str::to_string);
            if let (Some(mut cp), Some(on_part)) = (checkpoint, on_part) {
                cp.parts = before;
                cp.parts.push(PartRef {
                    number: n,
                    etag: etag.clone().unwrap_or_default(),
                    size,
                });
                cp.part_number = n;
                on_part(cp).await?;
            }
            let part = CompletedPart::builder()
                .part_number(n)
                .set_e_tag(etag)
                .build();
            Ok((part, size, data))
        }));
        Ok(())
    }

    async fn complete(&mut self) -> Result<(), SinkError> {
        self.settle().await?;
        self.client
            .complete_multipart_upload()
            .bucket(&self.info.bucket)
            .key(&self.info.key)
            .set_upload_id(self.info.upload_id.clone())
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(std::mem::take(&mut self.done)))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| {
                SinkError::remote(
                    &format!("complete upload to bucket {}", self.info.bucket),
                    &self.info.bucket,
                    &e,
                )
            })?;
        Ok(())
    }

    async fn abort(&mut self) {
        if let Some(h) = self.in_flight.take() {
            h.abort();
            let _ = h.await;
        }
        let r = self
            .client
            .abort_multipart_upload()
            .bucket(&self.info.bucket)
            .key(&self.info.key)
            .set_upload_id(self.info.upload_id.clone())
            .send()
            .await;
        if let Err(e) = r {
            // The export record keeps the upload id; the next claim or the
            // bucket's lifecycle rule cleans up.
            tracing::warn!(error = %SinkError::remote("abort upload", &self.info.bucket, &e), bucket = %self.info.bucket, "abort failed");
        }
    }
}

async fn run(
    mut parts: Parts,
    part_size: usize,
    mut hash: Sha256,
    mut rx: mpsc::Receiver<Chunk>,
    end: oneshot::Receiver<End>,
    cancel: CancellationToken,
    bytes: Arc<AtomicU64>,
) -> Result<Uploaded, SinkError> {
    let result = async {
        let mut buf = BytesMut::with_capacity(part_size);
        loop {
            let chunk = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(SinkError::Aborted),
                c = rx.recv() => c,
            };
            match chunk {
                Some(Chunk::Data(d)) => {
                    hash.update(&d);
                    bytes.fetch_add(d.len() as u64, Ordering::Relaxed);
                    buf.extend_from_slice(&d);
                }
                Some(Chunk::Split) => {
                    let full = parts.swap(&mut buf, part_size).await?;
                    parts.send(full, None).await?;
                }
                Some(Chunk::Cut { rows, position }) => {
                    let full = parts.swap(&mut buf, part_size).await?;
                    let cp = Checkpoint {
                        part_number: 0,
                        rows: rows as i64,
                        bytes: bytes.load(Ordering::Relaxed) as i64,
                        last_key: position,
                        sha256_state: mongodb::bson::Binary {
                            subtype: mongodb::bson::spec::BinarySubtype::Generic,
                            bytes: hash.serialize().to_vec(),
                        },
                        parts: Vec::new(),
                    };
                    parts.send(full, Some(cp)).await?;
                }
                None => break,
            }
        }
        // End of data: publish only on an explicit commit.
        let how = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(SinkError::Aborted),
            c = end => c.map_err(|_| SinkError::Aborted)?,
        };
        if how == End::Suspend {
            // Keep the upload: the checkpointed parts are the next
            // attempt's; what came after the last cut is dropped.
            parts.settle().await?;
            return Ok(false);
        }
        // The last part may be small (or the only, empty one).
        if !buf.is_empty() || (parts.done.is_empty() && parts.in_flight.is_none()) {
            parts.send(buf.freeze(), None).await?;
        }
        Ok(true)
    }
    .await;
    match result {
        Ok(true) => {
            if let Err(e) = parts.complete().await {
                parts.abort().await;
                return Err(e);
            }
            Ok(Uploaded {
                bucket: Some(parts.info.bucket),
                key: parts.info.key,
                bytes: bytes.load(Ordering::Relaxed),
                sha256: hex::encode(hash.finalize()),
            })
        }
        Ok(false) => Err(SinkError::Suspended),
        // A checkpoint refused (the export is another attempt's now): the
        // upload is theirs, never aborted here.
        Err(SinkError::Suspended) => Err(SinkError::Suspended),
        Err(e) => {
            parts.abort().await;
            Err(e)
        }
    }
}
