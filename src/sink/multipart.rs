//! S3 multipart upload fed from the pipe: fill a part buffer, upload it
//! while the next one fills (one part in flight), complete on commit, abort
//! on anything else. Memory: two part buffers per upload, allocated once
//! and swapped (no allocator churn of multi-MiB blocks, which glibc keeps
//! resident once its mmap threshold has grown).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption};
use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, DuplexStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{pipe, BoxWrite, Destination, ObjectSpec, SinkError, Upload, Uploaded};
use crate::queue::UploadRef;

pub(super) async fn open(
    dest: &Destination,
    spec: &ObjectSpec,
    part_size: usize,
    kms_key: Option<&str>,
) -> Result<(BoxWrite, Upload), SinkError> {
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
    let info = UploadRef {
        bucket: dest.bucket.clone(),
        key: spec.key.clone(),
        upload_id: Some(upload_id),
    };
    let (writer, reader) = pipe();
    let (commit_tx, commit_rx) = oneshot::channel();
    let cancel = CancellationToken::new();
    let bytes = Arc::new(AtomicU64::new(0));
    let task = tokio::spawn(run(
        dest.client.clone(),
        info.clone(),
        part_size,
        reader,
        commit_rx,
        cancel.clone(),
        bytes.clone(),
    ));
    Ok((
        Box::new(writer),
        Upload::new(commit_tx, cancel, task, bytes, Some(info)),
    ))
}

struct Parts {
    client: aws_sdk_s3::Client,
    info: UploadRef,
    done: Vec<CompletedPart>,
    /// The part being uploaded; hands its buffer back when done.
    in_flight: Option<JoinHandle<Result<(CompletedPart, Bytes), SinkError>>>,
    /// A buffer handed back by the last finished part, for the next fill.
    spare: Option<BytesMut>,
}

impl Parts {
    /// Wait for the part in flight, if any.
    async fn settle(&mut self) -> Result<(), SinkError> {
        if let Some(h) = self.in_flight.take() {
            let (part, data) = h
                .await
                .map_err(|e| SinkError::other(format!("part upload task: {e}")))??;
            self.done.push(part);
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

    /// Start uploading `data` as the next part (after the previous one is
    /// done: one part in flight bounds memory).
    async fn send(&mut self, data: Bytes) -> Result<(), SinkError> {
        self.settle().await?;
        let n = (self.done.len() + 1) as i32;
        let client = self.client.clone();
        let info = self.info.clone();
        self.in_flight = Some(tokio::spawn(async move {
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
            let part = CompletedPart::builder()
                .part_number(n)
                .set_e_tag(out.e_tag().map(str::to_string))
                .build();
            Ok((part, data))
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
    client: aws_sdk_s3::Client,
    info: UploadRef,
    part_size: usize,
    mut reader: DuplexStream,
    commit: oneshot::Receiver<()>,
    cancel: CancellationToken,
    bytes: Arc<AtomicU64>,
) -> Result<Uploaded, SinkError> {
    let mut parts = Parts {
        client,
        info: info.clone(),
        done: Vec::new(),
        in_flight: None,
        spare: None,
    };
    // The object's digest, over the bytes as they arrive (spec: exports.md,
    // Integrity): on this task, beside the encoder's.
    let mut hash = Sha256::new();
    let result = async {
        let mut buf = BytesMut::with_capacity(part_size);
        loop {
            let n = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(SinkError::Aborted),
                r = reader.read_buf(&mut buf) => r?,
            };
            if n == 0 {
                break;
            }
            hash.update(&buf[buf.len() - n..]);
            bytes.fetch_add(n as u64, Ordering::Relaxed);
            if buf.len() >= part_size {
                // Wait for the part in flight first: its buffer is the next one.
                parts.settle().await?;
                let next = parts.buffer(part_size);
                let full = std::mem::replace(&mut buf, next);
                parts.send(full.freeze()).await?;
            }
        }
        // End of data: publish only on an explicit commit.
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(SinkError::Aborted),
            c = commit => c.map_err(|_| SinkError::Aborted)?,
        }
        // The last part may be small (or the only, empty one).
        if !buf.is_empty() || (parts.done.is_empty() && parts.in_flight.is_none()) {
            parts.send(buf.freeze()).await?;
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => {
            if let Err(e) = parts.complete().await {
                parts.abort().await;
                return Err(e);
            }
            Ok(Uploaded {
                bucket: Some(info.bucket),
                key: info.key,
                bytes: bytes.load(Ordering::Relaxed),
                sha256: hex::encode(hash.finalize()),
            })
        }
        Err(e) => {
            parts.abort().await;
            Err(e)
        }
    }
}
