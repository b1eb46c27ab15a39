//! The export worker: claims exports from the queue, runs up to
//! `WORKER_CONCURRENCY` at once, keeps each one's lease alive, and records
//! the outcome. Data flows one way: queue → type (rows) → encoder → sink.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use mongodb::bson::{oid::ObjectId, Bson};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::encode::ResumeFrom;
use crate::error::Code;
use crate::exports::{
    produce, ExportError, ExportType, Outputs, Params, Parted, Produced, Progress, Registry,
    S3Outputs, Shape, Source,
};
use crate::queue::{ExportRecord, Finished, Queue, Status};
use crate::shutdown::Shutdown;
use crate::sink::UploadRef;
use crate::sink::{
    BoxRead, BoxWrite, Checkpoint, DestKind, Destination, ObjectSpec, OnPart, SinkError, Sinks,
    Upload, Uploaded,
};
use crate::store::Store;
use crate::telemetry::Metrics;

/// Worker settings (from [`crate::config::Config`]).
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub concurrency: usize,
    pub poll: Duration,
    pub lease: Duration,
    pub max_attempts: u32,
    pub export_timeout: Duration,
    pub drain_timeout: Duration,
    /// Rows per CSV segment inside a ZIP.
    pub max_rows_per_file: u64,
    /// First retry delay after a failure that may pass.
    pub retry_backoff: Duration,
    pub sfmc_default_region: &'static str,
}

impl WorkerSettings {
    pub fn from_config(c: &crate::config::Config) -> Self {
        Self {
            concurrency: c.worker_concurrency,
            poll: c.poll_interval,
            lease: c.lease,
            max_attempts: c.max_attempts,
            export_timeout: c.export_timeout,
            drain_timeout: c.drain_timeout,
            max_rows_per_file: c.max_rows_per_file,
            retry_backoff: c.retry_backoff,
            sfmc_default_region: c.sfmc_default_region,
        }
    }

    /// How often a running export renews its lease and publishes progress.
    fn heartbeat_every(&self) -> Duration {
        (self.lease / 3).min(Duration::from_secs(2))
    }
}

/// Everything a worker needs; shared by its export tasks.
pub struct Worker {
    pub queue: Queue,
    pub store: Store,
    pub registry: Registry,
    pub sinks: Sinks,
    pub metrics: Metrics,
    pub settings: WorkerSettings,
    /// Lease owner id: unique per process.
    pub owner: String,
    pub hooks: Hooks,
}

/// Test seams: code the tests inject into a running worker (none in
/// production).
#[derive(Clone, Default)]
pub struct Hooks {
    /// Awaited at each [`Stage`] of every export attempt (a test makes it
    /// panic, or holds the export there while it looks).
    pub at: Option<ExportHook>,
}

/// Where in an attempt a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Claimed, nothing read yet.
    Claimed,
    /// The preliminary count is recorded; no row read yet.
    Counted,
}

/// A hook run with the export at a stage.
pub type ExportHook =
    Arc<dyn Fn(Stage, &ExportRecord) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("at", &self.at.is_some())
            .finish()
    }
}

impl Hooks {
    async fn run(&self, stage: Stage, rec: &ExportRecord) {
        if let Some(h) = &self.at {
            h(stage, rec).await;
        }
    }
}

/// The retry delay after `attempt` attempts: `base` doubled per attempt,
/// capped at 900 s, ±20 % jitter (so exports that failed together do not
/// come back together).
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    const CAP: Duration = Duration::from_secs(900);
    let doubled = base
        .checked_mul(1u32 << attempt.saturating_sub(1).min(20))
        .unwrap_or(CAP)
        .min(CAP);
    // uuid v4's random bits: no RNG crate for one number.
    let r = (uuid::Uuid::new_v4().as_u128() % 10_001) as f64 / 10_000.0;
    doubled.mul_f64(0.8 + 0.4 * r)
}

/// Keeps `vf_export_in_flight` right whatever way an export task ends
/// (a panic unwinding included).
struct InFlight(prometheus::IntGauge);

impl InFlight {
    fn start(g: &prometheus::IntGauge) -> Self {
        g.inc();
        Self(g.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A finished export.
struct Done {
    rows: u64,
    bytes: u64,
}

impl Worker {
    /// Claim and run exports until `shutdown` drains, then wait for the
    /// in-flight ones (up to the drain timeout) or hand them back.
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        let s = &self.settings;
        tracing::info!(owner = %self.owner, concurrency = s.concurrency, "worker started");
        let slots = Arc::new(Semaphore::new(s.concurrency));
        let mut tasks = JoinSet::new();
        let mut last_sweep: Option<Instant> = None;
        loop {
            while let Some(r) = tasks.try_join_next() {
                log_task_end(r);
            }
            if last_sweep.is_none_or(|t| t.elapsed() >= s.poll) {
                self.sweep().await;
                last_sweep = Some(Instant::now());
            }
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => p.expect("semaphore never closed"),
                _ = shutdown.draining() => break,
            };
            if shutdown.is_draining() {
                break;
            }
            match self.queue.claim(&self.owner, s.lease, s.max_attempts).await {
                Ok(Some((rec, reclaim))) => {
                    if reclaim {
                        self.metrics.lease_reclaims.inc();
                    }
                    tasks.spawn(self.clone().run_one(rec, permit, shutdown.clone()));
                    continue;
                }
                Ok(None) => drop(permit),
                Err(e) => {
                    drop(permit);
                    tracing::warn!(error = %e, "claim failed; retrying after the poll interval");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(s.poll) => {},
                _ = self.queue.enqueued() => {},
                _ = shutdown.draining() => break,
            }
        }
        if !tasks.is_empty() {
            tracing::info!(
                in_flight = tasks.len(),
                drain_timeout_secs = s.drain_timeout.as_secs(),
                "draining"
            );
            let all = async {
                while let Some(r) = tasks.join_next().await {
                    log_task_end(r);
                }
            };
            if tokio::time::timeout(s.drain_timeout, all).await.is_err() {
                tracing::warn!(
                    in_flight = tasks.len(),
                    "drain timeout: handing exports back to the queue"
                );
                shutdown.hand_back();
                while let Some(r) = tasks.join_next().await {
                    log_task_end(r);
                }
            }
        }
        tracing::info!("worker stopped");
    }

    /// Expire overdue exports and fail those out of attempts; abort the
    /// uploads their dead owners left open.
    async fn sweep(&self) {
        let s = &self.settings;
        let moved = [
            (
                self.queue.expire_overdue(s.export_timeout).await,
                Status::Expired,
            ),
            (
                self.queue.fail_exhausted(s.max_attempts).await,
                Status::Failed,
            ),
        ];
        for (result, status) in moved {
            match result {
                Ok(list) => {
                    for rec in list {
                        tracing::warn!(export_id = %rec.id, correlation_id = rec.correlation.as_deref().unwrap_or(""), status = status.as_str(), "export stopped by the queue sweep");
                        self.metrics
                            .exports
                            .with_label_values(&[rec.export_type.as_str(), status.as_str()])
                            .inc();
                        if let Some(up) = &rec.upload {
                            if let Err(e) = self.sinks.abort_orphan(up).await {
                                tracing::warn!(export_id = %rec.id, error = %e, "could not abort orphaned upload");
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "queue sweep failed"),
            }
        }
    }

    async fn run_one(
        self: Arc<Self>,
        rec: ExportRecord,
        permit: OwnedSemaphorePermit,
        shutdown: Shutdown,
    ) {
        let span = tracing::info_span!(
            "export",
            export_id = %rec.id,
            correlation_id = rec.correlation.as_deref().unwrap_or(""),
            export_type = %rec.export_type,
            attempt = rec.attempts,
        );
        async move {
            let _permit = permit;
            let m = &self.metrics;
            let _in_flight = InFlight::start(&m.in_flight);
            m.exports_started
                .with_label_values(&[rec.export_type.as_str()])
                .inc();
            tracing::info!("export started");
            let t0 = Instant::now();
            // A panic in an export's code fails that export, never the
            // process (spec: exports.md, Failures).
            let progress = Progress::default();
            let outcome =
                match std::panic::AssertUnwindSafe(self.execute(&rec, &shutdown, &progress))
                    .catch_unwind()
                    .await
                {
                    Ok(r) => r,
                    Err(p) => Err(ExportError::Panicked(panic_message(p.as_ref()))),
                };
            // A resumable run that stopped at a checkpoint leaves its upload
            // for the next attempt.
            let kept = progress.kept_upload.load(Ordering::Relaxed);
            self.conclude(&rec, outcome, kept, t0).await;
        }
        .instrument(span)
        .await
    }

    /// Record how the attempt ended: the metrics, and the record's next
    /// status (FINISHED was written by the attempt itself; handed back,
    /// retried later, or FAILED with its reason).
    async fn conclude(
        &self,
        rec: &ExportRecord,
        outcome: Result<Done, ExportError>,
        kept: bool,
        t0: Instant,
    ) {
        let m = &self.metrics;
        let (id, owner) = (rec.id, self.owner.as_str());
        let ty = rec.export_type.as_str();
        match outcome {
            Ok(done) => {
                m.exports
                    .with_label_values(&[ty, Status::Finished.as_str()])
                    .inc();
                m.rows_written.with_label_values(&[ty]).inc_by(done.rows);
                m.bytes_written.with_label_values(&[ty]).inc_by(done.bytes);
                m.export_duration
                    .with_label_values(&[ty])
                    .observe(t0.elapsed().as_secs_f64());
                tracing::info!(
                    rows = done.rows,
                    bytes = done.bytes,
                    duration = t0.elapsed().as_millis() as u64,
                    "export finished"
                );
            }
            Err(ExportError::LeaseLost) => {
                tracing::warn!(
                    "lease lost: the export expired, was cancelled, or another worker owns it now"
                );
            }
            Err(ExportError::Drained) => {
                let r = self.queue.release(id, owner, false, kept).await;
                tracing::info!(
                    released = r.unwrap_or(false),
                    at_checkpoint = kept,
                    "export handed back to the queue on shutdown"
                );
            }
            Err(e) if e.retryable() && (rec.attempts as u32) < self.settings.max_attempts => {
                let wait = backoff(self.settings.retry_backoff, rec.attempts.max(1) as u32);
                let at = crate::queue::now_ms() + wait.as_millis() as i64;
                let mut payload = e.payload();
                payload.insert("attempts", rec.attempts);
                let r = self
                    .queue
                    .retry_later(id, owner, at, &e.to_string(), payload, kept)
                    .await;
                tracing::warn!(error = %e, released = r.unwrap_or(false), retry_in_secs = wait.as_secs(), "export attempt failed; it will be retried");
            }
            Err(e) => {
                let (message, mut payload) = (e.to_string(), e.payload());
                if !matches!(e, ExportError::Data { .. }) {
                    payload.insert("attempts", rec.attempts);
                }
                // A failed TMOL publish leaves the export's own object:
                // recorded as its key.
                let key = match &e {
                    ExportError::Published { main, .. } => Some(Bson::String(main.key.clone())),
                    _ => None,
                };
                if let Err(db) = self
                    .queue
                    .fail(id, owner, &message, Some(Bson::Document(payload)), key)
                    .await
                {
                    tracing::error!(error = %db, "could not mark the export FAILED; its lease will lapse and the sweep will");
                }
                m.exports
                    .with_label_values(&[ty, Status::Failed.as_str()])
                    .inc();
                tracing::error!(error = %e, "export failed");
            }
        }
    }

    async fn execute(
        &self,
        rec: &ExportRecord,
        shutdown: &Shutdown,
        progress: &Progress,
    ) -> Result<Done, ExportError> {
        let (id, owner) = (rec.id, self.owner.as_str());
        self.hooks.run(Stage::Claimed, rec).await;
        // The lease is renewed from the claim on, not from the first row:
        // the count of a large campaign (or a slow database) can outlast
        // it, and a lease that lapses there is reclaimed by another worker
        // again and again.
        let lost = CancellationToken::new();
        let renewal = self.renew_lease(id, progress, &lost);
        let result = self.attempt(rec, shutdown, progress, &lost).await;
        renewal.stop().await;
        let done = result?;
        let finished = Finished {
            key: done.key,
            rows: done.rows,
            bytes: done.bytes,
            sha256: done.sha256,
            meta: done.meta,
        };
        if !self.queue.finish(id, owner, &finished).await? {
            return Err(ExportError::LeaseLost);
        }
        Ok(Done {
            rows: done.rows,
            bytes: done.bytes,
        })
    }

    /// One attempt at the export, up to its written objects.
    async fn attempt(
        &self,
        rec: &ExportRecord,
        shutdown: &Shutdown,
        progress: &Progress,
        lost: &CancellationToken,
    ) -> Result<Produced, ExportError> {
        let (id, owner, lease) = (rec.id, self.owner.as_str(), self.settings.lease);
        let ty = self
            .registry
            .get(&rec.export_type)
            .ok_or_else(|| ExportError::Data {
                message: format!("unknown export type {}", rec.export_type),
                payload: None,
            })?;
        let resume = self.take_upload(rec, ty.as_ref(), progress).await?;
        let src = self.source(rec, ty.as_ref()).await?;
        let expected = ty.expected_rows(&src).await?;
        if !self.queue.set_expected_rows(id, owner, expected).await? {
            return Err(ExportError::LeaseLost);
        }
        self.hooks.run(Stage::Counted, rec).await;
        // An unconfigured destination fails before any work.
        self.sinks.destination(ty.destination()).await?;
        let outputs = QueuedOutputs {
            s3: S3Outputs {
                sinks: self.sinks.clone(),
            },
            queue: &self.queue,
            id,
            owner,
            lease,
            progress,
            lost,
            shutdown,
            resume: std::sync::Mutex::new(resume),
            metrics: &self.metrics,
            parted: Default::default(),
        };
        produce(ty.as_ref(), &src, &outputs, progress).await
    }

    /// The upload a previous attempt left open: continued from its
    /// checkpoint (a single CSV that has one), else aborted.
    async fn take_upload(
        &self,
        rec: &ExportRecord,
        ty: &dyn ExportType,
        progress: &Progress,
    ) -> Result<Option<(UploadRef, Checkpoint)>, ExportError> {
        let (id, owner) = (rec.id, self.owner.as_str());
        let resume = match (&rec.upload, &rec.checkpoint) {
            (Some(up), Some(cp)) if ty.shape() == Shape::Csv => Some((up.clone(), cp.clone())),
            (Some(up), _) => {
                self.sinks.abort_orphan(up).await?;
                self.queue.record_upload(id, owner, None).await?;
                None
            }
            (None, _) => None,
        };
        // Until this attempt opens its object, a checkpoint it was handed
        // stays the next attempt's.
        progress
            .kept_upload
            .store(resume.is_some(), Ordering::Relaxed);
        Ok(resume)
    }

    /// What the type reads: the campaign, its markets, the request.
    async fn source(&self, rec: &ExportRecord, ty: &dyn ExportType) -> Result<Source, ExportError> {
        let campaign = self
            .store
            .campaign(&rec.campaign_id)
            .await?
            .ok_or_else(|| {
                ExportError::data(crate::error::Code::CampaignNotFound, "campaign not found")
            })?;
        let markets = self.store.markets_of(&rec.campaign_id).await?;
        // The POST checked; markets removed since then would make a
        // header-only file pass for the export.
        if ty.needs_markets() && markets.is_empty() {
            return Err(ExportError::data(
                Code::NoMarketsFound,
                "the campaign has no markets (removed after the export was requested)",
            ));
        }
        let params = Params {
            date_key: rec.date_key.clone(),
            include_all_markets: rec.include_all_markets,
            gzip: rec.gzip(),
        };
        let created = chrono::DateTime::from_timestamp_millis(rec.created().timestamp_millis())
            .unwrap_or_default();
        let src = Source {
            store: self.store.clone(),
            campaign,
            markets,
            params,
            export_id: rec.id.to_hex(),
            created,
            max_rows_per_file: self.settings.max_rows_per_file,
            sinks: self.sinks.clone(),
            sfmc_default_region: self.settings.sfmc_default_region,
        };
        Ok(src)
    }

    /// Renew the lease and publish progress every few seconds, beside the
    /// attempt; `lost` is cancelled when the lease is another's.
    fn renew_lease(&self, id: ObjectId, progress: &Progress, lost: &CancellationToken) -> Periodic {
        let lease = self.settings.lease;
        let (queue, owner, lost) = (self.queue.clone(), self.owner.clone(), lost.clone());
        let p = progress.clone();
        Periodic::spawn(self.settings.heartbeat_every(), move || {
            let (queue, owner, lost, p) = (queue.clone(), owner.clone(), lost.clone(), p.clone());
            async move {
                let (r, b) = (
                    p.rows.load(Ordering::Relaxed),
                    p.bytes.load(Ordering::Relaxed),
                );
                match queue.heartbeat(id, &owner, lease, r, b).await {
                    Ok(true) => true,
                    Ok(false) => {
                        lost.cancel();
                        false
                    }
                    // MongoDB unreachable: keep trying; if the lease
                    // lapses meanwhile, another worker reclaims.
                    Err(e) => {
                        tracing::warn!(error = %e, "lease renewal failed");
                        true
                    }
                }
            }
        })
    }
}

/// The worker's outputs: S3, with every upload recorded on the export (a
/// reclaiming worker aborts it), the lease checked before each commit, and
/// the run stopped when the lease is lost or the process hands work back.
struct QueuedOutputs<'a> {
    s3: S3Outputs,
    queue: &'a Queue,
    id: mongodb::bson::oid::ObjectId,
    owner: &'a str,
    lease: Duration,
    progress: &'a Progress,
    lost: &'a CancellationToken,
    shutdown: &'a Shutdown,
    /// The upload and checkpoint a previous attempt left (taken by the
    /// first resumable object opened).
    resume: std::sync::Mutex<Option<(UploadRef, Checkpoint)>>,
    metrics: &'a Metrics,
    /// A resumable object is open.
    parted: std::sync::atomic::AtomicBool,
}

impl QueuedOutputs<'_> {
    /// The checkpoint writer a resumable upload calls after each cut part:
    /// on the export, while this attempt holds its lease.
    fn on_part(&self) -> OnPart {
        let (queue, id, owner) = (self.queue.clone(), self.id, self.owner.to_string());
        Arc::new(move |cp: Checkpoint| {
            let (queue, owner) = (queue.clone(), owner.clone());
            Box::pin(async move {
                match queue.checkpoint(id, &owner, &cp).await {
                    Ok(true) => Ok(()),
                    // Not this attempt's any more: stop, keep the upload.
                    Ok(false) => Err(SinkError::Suspended),
                    // Not recorded: stop here and keep the upload; the
                    // lease lapses and the next attempt continues from the
                    // checkpoint before.
                    Err(e) => {
                        tracing::warn!(error = %e, "could not record a checkpoint");
                        Err(SinkError::Suspended)
                    }
                }
            })
        })
    }

    /// Continue `up` from `cp`, or `None` when it cannot be (then it is
    /// aborted and forgotten: the export starts again).
    async fn continue_upload(
        &self,
        dest: &Destination,
        spec: &ObjectSpec,
        up: UploadRef,
        cp: Checkpoint,
    ) -> Result<Option<Parted>, ExportError> {
        let opened = if up.key == spec.key && up.bucket == dest.bucket {
            self.s3
                .sinks
                .open_s3_parts(dest, spec, self.on_part(), Some((&up, &cp)))
                .await
        } else {
            Err(SinkError::Resume("the object's key changed".into()))
        };
        match opened {
            Ok((writer, upload)) => {
                let rows = cp.rows.max(0) as u64;
                if !self.queue.resumed_from(self.id, self.owner, rows).await? {
                    return Err(ExportError::LeaseLost);
                }
                self.metrics.resumed_rows.inc_by(rows);
                Ok(Some(Parted {
                    writer,
                    upload,
                    resume: Some(ResumeFrom {
                        rows,
                        position: cp.last_key,
                    }),
                    stop: self.shutdown.draining_token(),
                }))
            }
            Err(SinkError::Resume(why)) => {
                tracing::warn!(reason = %why, "the checkpoint cannot be continued: starting the export again");
                self.progress.kept_upload.store(false, Ordering::Relaxed);
                self.s3.sinks.abort_orphan(&up).await?;
                if !self.queue.drop_checkpoint(self.id, self.owner).await? {
                    return Err(ExportError::LeaseLost);
                }
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Record where an upload will be, before starting it: if this process
    /// dies before the id is recorded, whoever reclaims the export still
    /// finds the upload by its key.
    async fn record_intent(&self, dest: DestKind, spec: &ObjectSpec) -> Result<(), ExportError> {
        let intent = UploadRef {
            bucket: self.s3.sinks.destination(dest).await?.bucket,
            key: spec.key.clone(),
            upload_id: None,
        };
        if !self
            .queue
            .record_upload(self.id, self.owner, Some(&intent))
            .await?
        {
            return Err(ExportError::LeaseLost);
        }
        Ok(())
    }

    /// Record the started upload's id (aborting it if the lease is gone).
    async fn record_started(&self, upload: &Upload) -> Result<(), ExportError> {
        if !self
            .queue
            .record_upload(self.id, self.owner, upload.info())
            .await?
        {
            return Err(ExportError::LeaseLost);
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Outputs for QueuedOutputs<'_> {
    async fn open(
        &self,
        dest: DestKind,
        spec: &ObjectSpec,
    ) -> Result<(BoxWrite, Upload), ExportError> {
        self.record_intent(dest, spec).await?;
        let (w, upload) = self.s3.open(dest, spec).await?;
        if let Err(e) = self.record_started(&upload).await {
            upload.abort().await;
            return Err(e);
        }
        Ok((w, upload))
    }
    async fn open_parts(
        &self,
        dest: DestKind,
        spec: &ObjectSpec,
    ) -> Result<Option<Parted>, ExportError> {
        let role = self.s3.sinks.role_arn_for(dest);
        let d = self
            .s3
            .sinks
            .destination(dest)
            .await
            .map_err(|e| e.with_role(role))?;
        self.parted.store(true, Ordering::Relaxed);
        let left = self.resume.lock().expect("not poisoned").take();
        if let Some((up, cp)) = left {
            if let Some(p) = self.continue_upload(&d, spec, up, cp).await? {
                return Ok(Some(p));
            }
        }
        self.record_intent(dest, spec).await?;
        let (writer, upload) = self
            .s3
            .sinks
            .open_s3_parts(&d, spec, self.on_part(), None)
            .await
            .map_err(|e| e.with_role(role))?;
        if let Err(e) = self.record_started(&upload).await {
            upload.abort().await;
            return Err(e);
        }
        Ok(Some(Parted {
            writer,
            upload,
            resume: None,
            stop: self.shutdown.draining_token(),
        }))
    }
    async fn before_commit(&self) -> Result<(), ExportError> {
        let p = self.progress;
        let (r, b) = (
            p.rows.load(Ordering::Relaxed),
            p.bytes.load(Ordering::Relaxed),
        );
        if self
            .queue
            .heartbeat(self.id, self.owner, self.lease, r, b)
            .await?
        {
            Ok(())
        } else {
            Err(ExportError::LeaseLost)
        }
    }
    async fn still_owner(&self) -> bool {
        let p = self.progress;
        let (r, b) = (
            p.rows.load(Ordering::Relaxed),
            p.bytes.load(Ordering::Relaxed),
        );
        // A database error counts as "not sure": nothing is deleted.
        matches!(
            self.queue
                .heartbeat(self.id, self.owner, self.lease, r, b)
                .await,
            Ok(true)
        )
    }
    async fn stopped(&self) -> ExportError {
        // A run that cannot resume is handed back as soon as the instance
        // is going away; a resumable one stops at its next part boundary
        // (its CSV writer watches the drain), or now after the drain timeout.
        let restartable = async {
            self.shutdown.releasing_restartable().await;
            if self.parted.load(Ordering::Relaxed) {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = self.lost.cancelled() => ExportError::LeaseLost,
            _ = self.shutdown.handing_back() => ExportError::Drained,
            _ = restartable => ExportError::Drained,
        }
    }
    async fn read(&self, obj: &Uploaded) -> Result<BoxRead, ExportError> {
        self.s3.read(obj).await
    }
    async fn delete(&self, obj: &Uploaded) -> Result<(), ExportError> {
        self.s3.delete(obj).await
    }
    fn configured(&self, dest: DestKind) -> bool {
        self.s3.configured(dest)
    }
}

/// The message of a panic's payload (a `&str` or a `String`).
fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_string())
}

/// An export task ended: a panic that escaped its own guard is logged
/// (the task's guards have already put the gauges right).
fn log_task_end(r: Result<(), tokio::task::JoinError>) {
    if let Err(e) = r {
        if e.is_panic() {
            tracing::error!(error = %e, "an export task panicked");
        }
    }
}

/// A task that runs `tick` every `every` until `tick` returns false or
/// [`Periodic::stop`] is called (or the handle is dropped).
///
/// Stopping waits for a tick in flight instead of aborting it: a MongoDB
/// command dropped mid-flight makes the driver close that pooled connection,
/// which costs a reconnect and, on a server that ties cursors to the
/// connection that opened them, would end another export's cursor early.
pub(crate) struct Periodic {
    stop: tokio_util::sync::DropGuard,
    task: tokio::task::JoinHandle<()>,
}

impl Periodic {
    pub(crate) fn spawn<F, Fut>(every: Duration, mut tick: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = bool> + Send,
    {
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    biased;
                    _ = stopped.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                if !tick().await {
                    return;
                }
            }
        });
        Self {
            stop: stop.drop_guard(),
            task,
        }
    }

    /// Stop after the tick in flight, if any, has finished.
    pub(crate) async fn stop(self) {
        drop(self.stop);
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use tokio::sync::{mpsc, Notify};

    // Hang guard only: no assertion below depends on how fast this runs.
    const GUARD: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn stop_lets_a_tick_in_flight_finish() {
        let (started_tx, mut started) = mpsc::unbounded_channel();
        let (gate, finished) = (Arc::new(Notify::new()), Arc::new(AtomicU32::new(0)));
        let (g, f) = (gate.clone(), finished.clone());
        let p = Periodic::spawn(Duration::from_millis(1), move || {
            let (tx, g, f) = (started_tx.clone(), g.clone(), f.clone());
            async move {
                tx.send(()).unwrap();
                g.notified().await;
                f.fetch_add(1, Ordering::SeqCst);
                true
            }
        });
        tokio::time::timeout(GUARD, started.recv()).await.unwrap();
        let stopping = tokio::spawn(p.stop());
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The tick is held at its gate: stop waits for it instead of cutting it off.
        assert!(!stopping.is_finished());
        assert_eq!(finished.load(Ordering::SeqCst), 0);
        gate.notify_one();
        tokio::time::timeout(GUARD, stopping)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(finished.load(Ordering::SeqCst), 1);
        // No tick started after the stop.
        assert!(started.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_tick_returning_false_ends_the_loop() {
        let n = Arc::new(AtomicU32::new(0));
        let c = n.clone();
        let p = Periodic::spawn(Duration::from_millis(1), move || {
            let c = c.clone();
            async move { c.fetch_add(1, Ordering::SeqCst) < 2 }
        });
        tokio::time::timeout(GUARD, p.task).await.unwrap().unwrap();
        assert_eq!(n.load(Ordering::SeqCst), 3);
    }
}
