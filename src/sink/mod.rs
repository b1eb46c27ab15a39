//! Where bytes go. A sink is an owned `AsyncWrite` (what encoders write to)
//! plus an [`Upload`] handle that commits or aborts the object. The two
//! halves are joined by a bounded in-memory pipe, so a slow S3 stalls the
//! encoder, which stalls the MongoDB cursor: backpressure end to end with
//! flat memory.
//!
//! Nothing is visible under the final key until commit: S3 completes the
//! multipart upload atomically; a local file is renamed into place.

mod file;
mod multipart;
mod objects;

pub use multipart::PartWriter;
pub use objects::BoxRead;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::types::ObjectCannedAcl;
use tokio::io::DuplexStream;
use tokio::sync::{oneshot, OnceCell};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Buckets, Config};

/// Size of the pipe between encoder and uploader. Small: the part buffer is
/// where bytes accumulate.
const PIPE_BYTES: usize = 256 * 1024;

pub use crate::encode::BoxWrite;

/// A multipart upload, recorded so whoever reclaims the export can abort it
/// if its owner died. The bucket and key are recorded before the upload is
/// started (no id yet): an owner killed between S3 creating the upload and
/// recording its id still leaves the key to find it by.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadRef {
    pub bucket: String,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A destination the export needs is not configured.
    #[error("{0}")]
    NotConfigured(String),
    /// S3 (or STS) refused or failed.
    #[error("{0}")]
    Remote(Box<RemoteError>),
    #[error("local file: {0}")]
    Io(#[from] std::io::Error),
    #[error("upload aborted")]
    Aborted,
    /// The upload was left open at its last checkpoint (a hand-back).
    #[error("upload suspended at its last checkpoint")]
    Suspended,
    /// A checkpointed upload cannot be continued (gone, parts missing or
    /// different): the export starts again.
    #[error("cannot continue the upload: {0}")]
    Resume(String),
}

/// What kind of refusal or failure a remote error is: it decides between
/// retrying later and failing at once (spec: exports.md, Failures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteClass {
    /// Access denied to the bucket, or the role could not be assumed.
    Denied,
    /// The bucket does not exist.
    Missing,
    /// 5xx, throttling, timeouts, a connection that failed: try again later.
    Transient,
    /// Anything else (retried: it may be the server's passing trouble).
    Other,
}

/// An S3/STS failure, kept with its cause: the service's error code, the
/// bucket, and the role for a partner destination. Never credentials.
#[derive(Debug, Clone)]
pub struct RemoteError {
    /// What was being done (`start upload to bucket X`).
    pub what: String,
    /// The service's error code (`AccessDenied`, `NoSuchBucket`, …).
    pub code: Option<String>,
    pub detail: String,
    pub class: RemoteClass,
    pub bucket: Option<String>,
    /// The role assumed to reach the bucket (partner destinations).
    pub role: Option<String>,
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.what, self.detail)?;
        if let Some(role) = &self.role {
            write!(f, " (with credentials of role {role})")?;
        }
        Ok(())
    }
}

/// S3 error codes that a later attempt may not see.
const TRANSIENT_CODES: [&str; 11] = [
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "RequestTimeout",
    "Throttling",
    "ThrottlingException",
    "RequestTimeTooSkewed",
    "ExpiredToken",
    "TokenRefreshRequired",
    "OperationAborted",
    // The upload vanished (a lifecycle rule, an operator): start again.
    "NoSuchUpload",
];

impl SinkError {
    /// A failed SDK call `what` on `bucket`, classified by its cause.
    pub fn remote<E>(what: &str, bucket: &str, e: &aws_sdk_s3::error::SdkError<E>) -> Self
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    {
        use aws_sdk_s3::error::SdkError;
        let (code, detail, class) = match e {
            SdkError::ServiceError(se) => {
                let code = se.err().code().map(str::to_string);
                let status = se.raw().status().as_u16();
                let detail = format!(
                    "{}: {}",
                    code.as_deref().unwrap_or("error"),
                    se.err().message().unwrap_or("no message")
                );
                let class = classify(code.as_deref(), Some(status));
                (code, detail, class)
            }
            // Credentials (an AssumeRole refused), connection, timeout: the
            // chain says which.
            other => {
                let chain = error_chain(other);
                let class = if chain.contains("AccessDenied") || chain.contains("not authorized") {
                    RemoteClass::Denied
                } else {
                    RemoteClass::Transient
                };
                let code = (class == RemoteClass::Denied).then(|| "AccessDenied".to_string());
                (code, chain, class)
            }
        };
        SinkError::Remote(Box::new(RemoteError {
            what: what.to_string(),
            code,
            detail,
            class,
            bucket: Some(bucket.to_string()).filter(|b| !b.is_empty()),
            role: None,
        }))
    }

    /// A remote failure of our own description (no SDK error behind it).
    pub fn other(what: impl Into<String>) -> Self {
        SinkError::Remote(Box::new(RemoteError {
            what: what.into(),
            code: None,
            detail: "failed".into(),
            class: RemoteClass::Other,
            bucket: None,
            role: None,
        }))
    }

    /// The remote failure's class (`None` for local ones).
    pub fn class(&self) -> Option<RemoteClass> {
        match self {
            SinkError::Remote(r) => Some(r.class),
            _ => None,
        }
    }

    /// Name the role whose credentials were used (partner destinations).
    pub fn with_role(self, role: Option<&str>) -> Self {
        match (self, role) {
            (SinkError::Remote(mut r), Some(role)) => {
                r.role = Some(role.to_string());
                SinkError::Remote(r)
            }
            (e, _) => e,
        }
    }
}

fn classify(code: Option<&str>, status: Option<u16>) -> RemoteClass {
    match code {
        Some("AccessDenied" | "AllAccessDisabled" | "InvalidAccessKeyId" | "AccountProblem") => {
            return RemoteClass::Denied
        }
        Some("NoSuchBucket") => return RemoteClass::Missing,
        Some(c) if TRANSIENT_CODES.contains(&c) => return RemoteClass::Transient,
        _ => {}
    }
    match status {
        Some(403) => RemoteClass::Denied,
        Some(408 | 429) | Some(500..=599) => RemoteClass::Transient,
        _ => RemoteClass::Other,
    }
}

/// An error and its sources as one short line. Not the SDK's debug
/// context: for a credentials failure that holds the raw STS response.
fn error_chain(e: &dyn std::error::Error) -> String {
    const MAX: usize = 400;
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let part = c.to_string();
        if !s.contains(&part) {
            s.push_str(": ");
            s.push_str(&part);
        }
        cur = c.source();
    }
    if s.len() > MAX {
        let cut = (0..=MAX)
            .rev()
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(0);
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// The named destinations of the spec (exports.md "Destinations and ACLs").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestKind {
    Exports,
    Scoring,
    VfScoring,
    Sfmc,
    Tmol,
}

impl DestKind {
    /// The variable that names the bucket (docs and error messages).
    pub fn bucket_variable(self) -> &'static str {
        match self {
            DestKind::Exports => "EXPORTS_BUCKET",
            DestKind::Scoring => "SCORING_BUCKET",
            DestKind::VfScoring => "VF_SCORING_BUCKET",
            DestKind::Sfmc => "SFMC_BUCKET",
            DestKind::Tmol => "TMOL_BUCKET",
        }
    }

    /// The variable of the role a partner destination is written through.
    pub fn role_variable(self) -> Option<&'static str> {
        match self {
            DestKind::Sfmc => Some("SFMC_ROLE_ARN"),
            DestKind::Tmol => Some("TMOL_ROLE_ARN"),
            _ => None,
        }
    }
}

/// A resolved destination: bucket, canned ACL and a client carrying the
/// right credentials.
#[derive(Clone, Debug)]
pub struct Destination {
    pub bucket: String,
    pub acl: ObjectCannedAcl,
    pub client: aws_sdk_s3::Client,
}

/// What to write: key and content type.
#[derive(Debug, Clone)]
pub struct ObjectSpec {
    pub key: String,
    pub content_type: &'static str,
}

/// Builds destinations and uploads. Cheap to clone.
#[derive(Clone)]
pub struct Sinks {
    inner: Arc<SinksInner>,
}

struct SinksInner {
    sdk: aws_config::SdkConfig,
    force_path_style: bool,
    base: aws_sdk_s3::Client,
    buckets: Buckets,
    sse_kms_key_id: Option<String>,
    part_size: usize,
    sfmc: OnceCell<aws_sdk_s3::Client>,
    tmol: OnceCell<aws_sdk_s3::Client>,
}

/// The AWS SDK configuration from the service's settings (region, optional
/// endpoint override for stand-ins) and the default credential chain.
pub async fn sdk_config(cfg: &Config) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(cfg.aws_region.clone()));
    if let Some(ep) = &cfg.aws_endpoint_url {
        loader = loader.endpoint_url(ep);
    }
    loader.load().await
}

fn s3_client(sdk: &aws_config::SdkConfig, path_style: bool) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(path_style)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

impl Sinks {
    pub fn new(cfg: &Config, sdk: aws_config::SdkConfig) -> Self {
        let base = s3_client(&sdk, cfg.s3_force_path_style);
        Self {
            inner: Arc::new(SinksInner {
                sdk,
                force_path_style: cfg.s3_force_path_style,
                base,
                buckets: cfg.buckets.clone(),
                sse_kms_key_id: cfg.sse_kms_key_id.clone(),
                part_size: cfg.part_size,
                sfmc: OnceCell::new(),
                tmol: OnceCell::new(),
            }),
        }
    }

    pub fn sdk(&self) -> &aws_config::SdkConfig {
        &self.inner.sdk
    }

    /// The instance-credential client (the service's own buckets).
    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.inner.base
    }

    pub fn buckets(&self) -> &Buckets {
        &self.inner.buckets
    }

    /// A client with credentials from `sts:AssumeRole` on `role_arn`. The
    /// provider caches the credentials and refreshes them before they expire,
    /// so a long export keeps writing.
    async fn assumed(
        &self,
        cell: &OnceCell<aws_sdk_s3::Client>,
        role_arn: &str,
    ) -> aws_sdk_s3::Client {
        cell.get_or_init(|| async {
            let provider = aws_config::sts::AssumeRoleProvider::builder(role_arn)
                .session_name("vf-export")
                .configure(&self.inner.sdk)
                .build()
                .await;
            let sdk = self
                .inner
                .sdk
                .to_builder()
                .credentials_provider(aws_sdk_s3::config::SharedCredentialsProvider::new(provider))
                .build();
            s3_client(&sdk, self.inner.force_path_style)
        })
        .await
        .clone()
    }

    /// Resolve a destination; an unconfigured partner destination is an
    /// error naming what is missing.
    pub async fn destination(&self, kind: DestKind) -> Result<Destination, SinkError> {
        let b = &self.inner.buckets;
        let own = |bucket: &str, acl| Destination {
            bucket: bucket.to_string(),
            acl,
            client: self.inner.base.clone(),
        };
        Ok(match kind {
            DestKind::Exports => own(&b.exports, ObjectCannedAcl::Private),
            DestKind::Scoring => own(&b.scoring, ObjectCannedAcl::BucketOwnerFullControl),
            DestKind::VfScoring => own(&b.vf_scoring, ObjectCannedAcl::BucketOwnerFullControl),
            DestKind::Sfmc | DestKind::Tmol => {
                let (bucket, role, cell) = if kind == DestKind::Sfmc {
                    (&b.sfmc, &b.sfmc_role_arn, &self.inner.sfmc)
                } else {
                    (&b.tmol, &b.tmol_role_arn, &self.inner.tmol)
                };
                let missing =
                    |var: &str| SinkError::NotConfigured(format!("{var} is not configured"));
                let bucket = bucket
                    .as_deref()
                    .ok_or_else(|| missing(kind.bucket_variable()))?;
                let role = role
                    .as_deref()
                    .ok_or_else(|| missing(kind.role_variable().unwrap_or_default()))?;
                Destination {
                    bucket: bucket.to_string(),
                    acl: ObjectCannedAcl::BucketOwnerFullControl,
                    client: self.assumed(cell, role).await,
                }
            }
        })
    }

    /// Start a multipart upload to `dest`; returns the writer to encode into
    /// and the handle that commits or aborts.
    pub async fn open_s3(
        &self,
        dest: &Destination,
        spec: &ObjectSpec,
    ) -> Result<(BoxWrite, Upload), SinkError> {
        let (w, up) = multipart::open(
            dest,
            spec,
            self.inner.part_size,
            self.inner.sse_kms_key_id.as_deref(),
            None,
            multipart::Start::New,
        )
        .await?;
        Ok((Box::new(w), up))
    }

    /// Start a resumable multipart upload to `dest` (or continue the one
    /// `resume` names from its checkpoint): parts end where the writer
    /// cuts them, and `on_part` records each cut part's checkpoint.
    pub async fn open_s3_parts(
        &self,
        dest: &Destination,
        spec: &ObjectSpec,
        on_part: OnPart,
        resume: Option<(&UploadRef, &Checkpoint)>,
    ) -> Result<(PartWriter, Upload), SinkError> {
        let start = match resume {
            Some((up, cp)) => multipart::Start::Resume(up, cp),
            None => multipart::Start::New,
        };
        multipart::open(
            dest,
            spec,
            self.inner.part_size,
            self.inner.sse_kms_key_id.as_deref(),
            Some(on_part),
            start,
        )
        .await
    }

    /// Write to a local file (the one-shot CLI's default).
    pub async fn open_file(path: &std::path::Path) -> Result<(BoxWrite, Upload), SinkError> {
        file::open(path).await
    }

    /// A presigned GET URL: a local computation, no network call.
    pub async fn presign(
        &self,
        bucket: &str,
        key: &str,
        ttl: Duration,
    ) -> Result<String, SinkError> {
        let conf = PresigningConfig::expires_in(ttl)
            .map_err(|e| SinkError::other(format!("presign: {e}")))?;
        let req = self
            .inner
            .base
            .get_object()
            .bucket(bucket)
            .key(key)
            .presigned(conf)
            .await
            .map_err(|e| SinkError::remote("presign", bucket, &e))?;
        Ok(req.uri().to_string())
    }

    /// Abort what a worker that died left open at `up.key`: the recorded
    /// upload, and any other open upload at exactly that key (the owner
    /// records the key before starting the upload, and may have died before
    /// recording the id). Keys are one per export, so every upload at the
    /// key is this export's. A missing upload counts as aborted.
    pub async fn abort_orphan(&self, up: &UploadRef) -> Result<(), SinkError> {
        let client = self.client_for_bucket(&up.bucket).await;
        let mut ids: Vec<String> = up.upload_id.iter().cloned().collect();
        match open_uploads_at(&client, &up.bucket, &up.key).await {
            Ok(found) => ids.extend(
                found
                    .into_iter()
                    .filter(|id| up.upload_id.as_ref() != Some(id)),
            ),
            // A partner bucket may not grant listing: the recorded upload is
            // still aborted, and the bucket's lifecycle rule ends the rest.
            Err(e) => {
                tracing::warn!(error = %e, bucket = %up.bucket, "could not list open uploads")
            }
        }
        for id in ids {
            match client
                .abort_multipart_upload()
                .bucket(&up.bucket)
                .key(&up.key)
                .upload_id(&id)
                .send()
                .await
            {
                Ok(_) => {}
                Err(e) if is_no_such_upload(&e) => {}
                Err(e) => {
                    return Err(SinkError::remote(
                        &format!("abort upload in {}", up.bucket),
                        &up.bucket,
                        &e,
                    ))
                }
            }
        }
        Ok(())
    }

    /// The client whose credentials can write `bucket`.
    pub async fn client_for_bucket(&self, bucket: &str) -> aws_sdk_s3::Client {
        let b = &self.inner.buckets;
        for (partner, kind) in [(&b.sfmc, DestKind::Sfmc), (&b.tmol, DestKind::Tmol)] {
            if partner.as_deref() == Some(bucket) {
                if let Ok(d) = self.destination(kind).await {
                    return d.client;
                }
            }
        }
        self.inner.base.clone()
    }
}

/// Ids of the multipart uploads open at exactly `key`.
async fn open_uploads_at(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<Vec<String>, SinkError> {
    let (mut ids, mut markers) = (Vec::new(), (None, None));
    loop {
        let out = client
            .list_multipart_uploads()
            .bucket(bucket)
            .prefix(key)
            .set_key_marker(markers.0)
            .set_upload_id_marker(markers.1)
            .send()
            .await
            .map_err(|e| SinkError::remote(&format!("list uploads in {bucket}"), bucket, &e))?;
        ids.extend(
            out.uploads()
                .iter()
                .filter(|u| u.key() == Some(key))
                .filter_map(|u| u.upload_id().map(str::to_string)),
        );
        if out.is_truncated() != Some(true) {
            return Ok(ids);
        }
        markers = (
            out.next_key_marker().map(str::to_string),
            out.next_upload_id_marker().map(str::to_string),
        );
    }
}

fn is_no_such_upload<E: aws_sdk_s3::error::ProvideErrorMetadata>(
    e: &aws_sdk_s3::error::SdkError<E>,
) -> bool {
    e.as_service_error()
        .and_then(|s| s.code())
        .map(|c| c == "NoSuchUpload")
        .unwrap_or(false)
}

/// The committing half of a sink. Dropping it without [`Upload::commit`]
/// aborts: an export that fails halfway never publishes a partial object.
pub struct Upload {
    commit: Option<oneshot::Sender<End>>,
    cancel: CancellationToken,
    task: Option<JoinHandle<Result<Uploaded, SinkError>>>,
    bytes: Arc<AtomicU64>,
    info: Option<UploadRef>,
}

/// Where a committed object landed.
#[derive(Debug, Clone)]
pub struct Uploaded {
    pub bucket: Option<String>,
    pub key: String,
    pub bytes: u64,
    /// Hex SHA-256 of the object's bytes, computed as they streamed past.
    pub sha256: String,
}

impl Upload {
    fn new(
        commit: oneshot::Sender<End>,
        cancel: CancellationToken,
        task: JoinHandle<Result<Uploaded, SinkError>>,
        bytes: Arc<AtomicU64>,
        info: Option<UploadRef>,
    ) -> Self {
        Self {
            commit: Some(commit),
            cancel,
            task: Some(task),
            bytes,
            info,
        }
    }

    /// The S3 upload to record on the export (None for local files).
    pub fn info(&self) -> Option<&UploadRef> {
        self.info.as_ref()
    }

    /// Bytes received from the encoder so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// A shared counter of bytes written, for progress reporting.
    pub fn byte_counter(&self) -> Arc<AtomicU64> {
        self.bytes.clone()
    }

    /// Publish the object. The writer must have been shut down first (that
    /// is the end-of-data signal).
    pub async fn commit(mut self) -> Result<Uploaded, SinkError> {
        if let Some(tx) = self.commit.take() {
            let _ = tx.send(End::Commit);
        }
        self.join().await
    }

    /// Stop, leaving the upload open with its checkpointed parts for the
    /// export's next attempt (waits for the part in flight and its
    /// checkpoint). The writer must have been shut down first.
    pub async fn suspend(mut self) -> Result<(), SinkError> {
        if let Some(tx) = self.commit.take() {
            let _ = tx.send(End::Suspend);
        }
        match self.join().await {
            Err(SinkError::Suspended) => Ok(()),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Abort and wait until the abort is done (multipart upload removed,
    /// partial file deleted). Returns the sink's own failure, if it failed
    /// first: the encoder then only saw a closed pipe, this is the cause.
    pub async fn abort(mut self) -> Option<SinkError> {
        self.commit.take();
        self.cancel.cancel();
        match self.join().await {
            Err(SinkError::Aborted) | Ok(_) => None,
            Err(e) => Some(e),
        }
    }

    async fn join(&mut self) -> Result<Uploaded, SinkError> {
        match self.task.take() {
            Some(t) => t
                .await
                .unwrap_or_else(|e| Err(SinkError::other(format!("upload task failed: {e}")))),
            None => Err(SinkError::Aborted),
        }
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        // Not committed: make the task abort rather than publish.
        if self.task.is_some() {
            self.cancel.cancel();
        }
    }
}

/// How an upload ends once its writer is shut down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Publish the object.
    Commit,
    /// Keep the upload open at its last checkpoint.
    Suspend,
}

/// One uploaded part of a resumable upload.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PartRef {
    pub number: i32,
    pub etag: String,
    pub size: i64,
}

/// Where a resumable export stands after a cut part is stored (spec:
/// exports.md, Resumable): the parts so far, the rows and bytes they hold,
/// where the readers continue, and the object digest's state.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    pub part_number: i32,
    pub rows: i64,
    pub bytes: i64,
    /// The readers' position after the last row of the part.
    pub last_key: mongodb::bson::Bson,
    /// SHA-256 state after the part's last byte.
    pub sha256_state: mongodb::bson::Binary,
    pub parts: Vec<PartRef>,
}

/// Records a cut part's checkpoint (the worker: on the export, with the
/// lease checked); an error stops the upload.
pub type OnPart = Arc<
    dyn Fn(Checkpoint) -> futures::future::BoxFuture<'static, Result<(), SinkError>> + Send + Sync,
>;

/// The pipe between encoder and uploader.
fn pipe() -> (DuplexStream, DuplexStream) {
    tokio::io::duplex(PIPE_BYTES)
}

impl Sinks {
    /// The bucket of one of the service's own destinations (None for
    /// partner buckets: their objects are not offered for download).
    pub fn own_bucket(&self, kind: DestKind) -> Option<String> {
        let b = &self.inner.buckets;
        match kind {
            DestKind::Exports => Some(b.exports.clone()),
            DestKind::Scoring => Some(b.scoring.clone()),
            DestKind::VfScoring => Some(b.vf_scoring.clone()),
            DestKind::Sfmc | DestKind::Tmol => None,
        }
    }
}

impl Sinks {
    /// Delete `keys` from `bucket` in batches of 1,000 (DeleteObjects). A key
    /// that does not exist counts as deleted. Returns the keys S3 refused.
    pub async fn delete_keys(
        &self,
        bucket: &str,
        keys: &[String],
    ) -> Result<Vec<String>, SinkError> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        let client = self.client_for_bucket(bucket).await;
        let mut refused = Vec::new();
        for chunk in keys.chunks(1000) {
            let objects = chunk
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| SinkError::other(format!("delete request: {e}")))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| SinkError::other(format!("delete request: {e}")))?;
            let out = client
                .delete_objects()
                .bucket(bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| {
                    SinkError::remote(&format!("delete objects in bucket {bucket}"), bucket, &e)
                })?;
            for e in out.errors() {
                if e.code() != Some("NoSuchKey") {
                    refused.extend(e.key().map(str::to_string));
                }
            }
        }
        Ok(refused)
    }
}
