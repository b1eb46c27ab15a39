//! The export worker: claims exports from the queue, runs up to
//! `WORKER_CONCURRENCY` at once, keeps each one's lease alive, and records
//! the outcome. Data flows one way: queue → type (rows) → encoder → sink.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mongodb::bson::Bson;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::encode::{maybe_gzip, CsvOut};
use crate::exports::{ExportError, KeyParts, Params, Registry, Source};
use crate::queue::{ExportRecord, Queue, Status};
use crate::shutdown::Shutdown;
use crate::sink::{ObjectSpec, Sinks};
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
            while tasks.try_join_next().is_some() {}
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
                _ = shutdown.draining() => break,
            }
        }
        if !tasks.is_empty() {
            tracing::info!(
                in_flight = tasks.len(),
                drain_timeout_secs = s.drain_timeout.as_secs(),
                "draining"
            );
            let all = async { while tasks.join_next().await.is_some() {} };
            if tokio::time::timeout(s.drain_timeout, all).await.is_err() {
                tracing::warn!(
                    in_flight = tasks.len(),
                    "drain timeout: handing exports back to the queue"
                );
                shutdown.hand_back();
                while tasks.join_next().await.is_some() {}
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
            m.in_flight.inc();
            m.exports_started.with_label_values(&[rec.export_type.as_str()]).inc();
            tracing::info!("export started");
            let t0 = Instant::now();
            let outcome = self.execute(&rec, &shutdown).await;
            let (id, owner) = (rec.id, self.owner.as_str());
            let ty = rec.export_type.as_str();
            match outcome {
                Ok(done) => {
                    m.exports.with_label_values(&[ty, Status::Finished.as_str()]).inc();
                    m.rows_written.with_label_values(&[ty]).inc_by(done.rows);
                    m.bytes_written.with_label_values(&[ty]).inc_by(done.bytes);
                    m.export_duration.with_label_values(&[ty]).observe(t0.elapsed().as_secs_f64());
                    tracing::info!(rows = done.rows, bytes = done.bytes, duration = t0.elapsed().as_millis() as u64, "export finished");
                }
                Err(ExportError::LeaseLost) => {
                    tracing::warn!("lease lost: the export expired or another worker owns it now");
                }
                Err(ExportError::Drained) => {
                    let r = self.queue.release(id, owner, false).await;
                    tracing::info!(released = r.unwrap_or(false), "export handed back to the queue on shutdown");
                }
                Err(e) if e.retryable() && (rec.attempts as u32) < self.settings.max_attempts => {
                    let r = self.queue.release(id, owner, true).await;
                    tracing::warn!(error = %e, released = r.unwrap_or(false), "export attempt failed; it will be retried");
                }
                Err(e) => {
                    let (message, payload) = match &e {
                        ExportError::Data { message, payload } => (message.clone(), payload.clone()),
                        other => (other.to_string(), Some(Bson::Document(mongodb::bson::doc! { "attempts": rec.attempts }))),
                    };
                    if let Err(db) = self.queue.fail(id, owner, &message, payload).await {
                        tracing::error!(error = %db, "could not mark the export FAILED; its lease will lapse and the sweep will");
                    }
                    m.exports.with_label_values(&[ty, Status::Failed.as_str()]).inc();
                    tracing::error!(error = %e, "export failed");
                }
            }
            m.in_flight.dec();
        }
        .instrument(span)
        .await
    }

    async fn execute(&self, rec: &ExportRecord, shutdown: &Shutdown) -> Result<Done, ExportError> {
        let (id, owner, lease) = (rec.id, self.owner.as_str(), self.settings.lease);
        // A previous attempt's owner died with an upload open: abort it.
        if let Some(up) = &rec.upload {
            self.sinks.abort_orphan(up).await?;
            self.queue.record_upload(id, owner, None).await?;
        }
        let ty = self
            .registry
            .get(&rec.export_type)
            .ok_or_else(|| ExportError::Data {
                message: format!("unknown export type {}", rec.export_type),
                payload: None,
            })?;
        let campaign = self
            .store
            .campaign(&rec.campaign_id)
            .await?
            .ok_or_else(|| {
                ExportError::data(crate::error::Code::CampaignNotFound, "campaign not found")
            })?;
        let markets = self.store.markets_of(&rec.campaign_id).await?;
        let params = Params {
            date_key: rec.date_key.clone(),
            include_all_markets: rec.include_all_markets,
            gzip: rec.gzip(),
        };
        let src = Source {
            store: self.store.clone(),
            campaign,
            markets,
            params,
            export_id: rec.id.to_hex(),
        };
        let expected = ty.expected_rows(&src).await?;
        if !self.queue.set_expected_rows(id, owner, expected).await? {
            return Err(ExportError::LeaseLost);
        }
        let dest = self.sinks.destination(ty.destination()).await?;
        let created = chrono::DateTime::from_timestamp_millis(rec.created().timestamp_millis())
            .unwrap_or_default();
        let key = ty.key(&KeyParts {
            campaign_id: &rec.campaign_id,
            campaign_name: &src.campaign.name,
            export_id: &src.export_id,
            created,
            date_key: rec.date_key.as_deref(),
            gzip: src.params.gzip,
        });
        let fmt = ty.format();
        let spec = ObjectSpec {
            key: key.clone(),
            content_type: fmt.content_type(src.params.gzip),
        };
        let (w, upload) = self.sinks.open_s3(&dest, &spec).await?;
        if !self.queue.record_upload(id, owner, upload.info()).await? {
            upload.abort().await;
            return Err(ExportError::LeaseLost);
        }
        let out = CsvOut::new(maybe_gzip(w, src.params.gzip), fmt.delimiter);

        // Lease renewal and progress, beside the export.
        let (rows, bytes) = (out.row_counter(), upload.byte_counter());
        let lost = CancellationToken::new();
        let hb = {
            let (queue, owner, lost) = (self.queue.clone(), self.owner.clone(), lost.clone());
            let (rows, bytes, every) =
                (rows.clone(), bytes.clone(), self.settings.heartbeat_every());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let (r, b) = (rows.load(Ordering::Relaxed), bytes.load(Ordering::Relaxed));
                    match queue.heartbeat(id, &owner, lease, r, b).await {
                        Ok(true) => {}
                        Ok(false) => {
                            lost.cancel();
                            return;
                        }
                        // MongoDB unreachable: keep trying; if the lease
                        // lapses meanwhile, another worker reclaims.
                        Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
                    }
                }
            })
        };
        let src = &src;
        let work = async move {
            let mut out = out;
            ty.write(src, &mut out).await?;
            Ok::<u64, ExportError>(out.finish().await?)
        };
        let result = tokio::select! {
            r = work => r,
            _ = lost.cancelled() => Err(ExportError::LeaseLost),
            _ = shutdown.handing_back() => Err(ExportError::Drained),
        };
        hb.abort();
        let count = match result {
            Ok(n) => n,
            Err(e) => {
                // The sink's own failure is the cause when the encoder only
                // saw a closed pipe.
                let cause = upload.abort().await;
                return Err(match (e, cause) {
                    (e @ (ExportError::LeaseLost | ExportError::Drained), _) => e,
                    (_, Some(sink)) => sink.into(),
                    (e, None) => e,
                });
            }
        };
        // Last check before publishing: still ours?
        let b = bytes.load(Ordering::Relaxed);
        if !self.queue.heartbeat(id, owner, lease, count, b).await? {
            upload.abort().await;
            return Err(ExportError::LeaseLost);
        }
        let done = upload.commit().await?;
        if !self
            .queue
            .finish(id, owner, Bson::String(key), count, done.bytes, None)
            .await?
        {
            return Err(ExportError::LeaseLost);
        }
        Ok(Done {
            rows: count,
            bytes: done.bytes,
        })
    }
}
