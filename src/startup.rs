//! Builds the application from a validated config: state, router, worker,
//! background tasks and shutdown wiring. Returns a value bound to a port, so
//! tests bind port 0 and run it in-process.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::exports::Registry;
use crate::http::{self, auth::Auth, AppState};
use crate::lifecycle::{Termination, Watcher};
use crate::queue::{Queue, Status};
use crate::shutdown::Shutdown;
use crate::sink::{sdk_config, Sinks};
use crate::store::{IndexScope, Store, StoreError};
use crate::telemetry::{Metrics, QueueReading};
use crate::worker::{Hooks, Worker, WorkerSettings};
use secrecy::ExposeSecret;

/// Which process role to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// API + worker.
    Serve,
    /// Worker, with only /heartbeat and /metrics.
    Worker,
}

/// How often the queue is read for its gauges (at most).
const DEPTH_EVERY: Duration = Duration::from_secs(15);
/// How often the background MongoDB ping runs (read by `/ready`).
const PING_EVERY: Duration = Duration::from_secs(10);

pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    worker: Option<Arc<Worker>>,
    state: AppState,
    cloudwatch: Option<crate::telemetry::cloudwatch::Publisher>,
    /// Where the queue sampler sends its readings, and how often it reads.
    readings: watch::Sender<Option<QueueReading>>,
    sample_every: Duration,
    /// The termination lifecycle hook watcher (on EC2 with ASG_LIFECYCLE_HOOK).
    lifecycle: Option<Watcher>,
}

/// The token checker: the configured key; a worker, which serves no
/// authenticated route, may run without one.
fn auth(cfg: &Config, role: Role) -> anyhow::Result<Arc<Auth>> {
    Ok(Arc::new(match (&cfg.jwt, role) {
        (Some(k), _) => Auth::new(k)?,
        (None, Role::Worker) => Auth::new(&crate::config::JwtKey::Secret(
            uuid::Uuid::new_v4().to_string().into(),
        ))?,
        (None, Role::Serve) => {
            anyhow::bail!("JWT_SECRET: JWT_SECRET or JWT_PUBLIC_KEY is required for serve")
        }
    }))
}

/// This worker's lease owner name: host, process and a random suffix (a
/// restarted process with the same pid is another owner).
fn owner() -> String {
    format!(
        "{}-{}-{}",
        hostname(),
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

impl Application {
    pub async fn build(cfg: &Config, role: Role) -> anyhow::Result<Self> {
        Self::build_with(cfg, role, Hooks::default()).await
    }

    /// [`Application::build`] with test seams in the worker.
    pub async fn build_with(cfg: &Config, role: Role, hooks: Hooks) -> anyhow::Result<Self> {
        let store = Store::connect(cfg.mongodb_uri.expose_secret(), &cfg.mongodb_db).await?;
        // The dedupe rule relies on the unique activeKey index: ensure the
        // queue's (small, cheap) indexes; source indexes are the pre-deploy
        // job's (`vf-export indexes`). A database that is down at start is
        // not fatal: the worker retries, /heartbeat still answers.
        if let Err(e) = store.ensure_indexes(IndexScope::Queue).await {
            tracing::warn!(error = %e, "could not ensure queue indexes at start");
        }
        let sinks = Sinks::new(cfg, sdk_config(cfg).await);
        let metrics = Metrics::new();
        let queue = Queue::new(store.clone());
        let registry = Registry::new();
        metrics.preinit(&registry.names(), &Status::FINAL.map(Status::as_str));
        let auth = auth(cfg, role)?;
        let state = AppState {
            store: store.clone(),
            queue: queue.clone(),
            registry: registry.clone(),
            sinks: sinks.clone(),
            metrics: metrics.clone(),
            auth,
            shutdown: Shutdown::new(),
            signed_url_ttl: cfg.signed_url_ttl,
            mongo_health: Default::default(),
        };
        let (readings, readings_rx) = watch::channel(None);
        let cloudwatch =
            cfg.cloudwatch_namespace
                .as_ref()
                .map(|ns| crate::telemetry::cloudwatch::Publisher {
                    client: aws_sdk_cloudwatch::Client::new(sinks.sdk()),
                    namespace: ns.clone(),
                    asg_name: cfg.asg_name.clone(),
                    every: cfg.cloudwatch_interval,
                    readings: readings_rx.clone(),
                    metrics: metrics.clone(),
                });
        let router = match role {
            Role::Serve => http::router(state.clone(), cfg.dev_routes),
            Role::Worker => http::health_router(state.clone()),
        };
        let worker = (cfg.worker_concurrency > 0).then(|| {
            Arc::new(Worker {
                queue,
                store,
                registry,
                sinks,
                metrics,
                settings: WorkerSettings::from_config(cfg),
                owner: owner(),
                hooks,
            })
        });
        let lifecycle = Watcher::detect(cfg, state.sinks.sdk()).await;
        let listener = TcpListener::bind(("0.0.0.0", cfg.port)).await?;
        Ok(Self {
            listener,
            router,
            worker,
            state,
            // CloudWatch gets a fresh reading at each of its intervals.
            sample_every: match &cloudwatch {
                Some(cw) => DEPTH_EVERY.min(cw.every),
                None => DEPTH_EVERY,
            },
            cloudwatch,
            readings,
            lifecycle,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The handle that starts draining (SIGTERM in production, tests call it).
    pub fn shutdown(&self) -> Shutdown {
        self.state.shutdown.clone()
    }

    /// Serve until shutdown: drain → the worker finishes or hands back →
    /// (on a termination, the lifecycle action is answered) → the HTTP
    /// server stops → return.
    pub async fn run(mut self) -> anyhow::Result<()> {
        let shutdown = self.state.shutdown.clone();
        let depth = tokio::spawn(sample_queue(
            self.state.clone(),
            self.sample_every,
            self.readings.clone(),
        ));
        let ping = tokio::spawn(ping_mongo(self.state.clone()));
        if let Some(cw) = self.cloudwatch.take() {
            tokio::spawn(cw.run(shutdown.clone()));
        }
        let worker_done = tokio_util::sync::CancellationToken::new();
        let termination = Termination::default();
        // Before the worker: an instance already terminating claims nothing.
        let lifecycle = self
            .lifecycle
            .take()
            .map(|w| w.start(shutdown.clone(), worker_done.clone(), termination.clone()));
        match self.worker.clone() {
            Some(w) => {
                let (s, done) = (shutdown.clone(), worker_done.clone());
                tokio::spawn(async move {
                    w.run(s).await;
                    done.cancel();
                });
            }
            None => worker_done.cancel(),
        }
        let stop = {
            let (s, done) = (shutdown.clone(), worker_done.clone());
            async move {
                s.draining().await;
                done.cancelled().await;
                // /heartbeat keeps answering 503 until the group is told.
                termination.settled().await;
            }
        };
        tracing::info!(port = self.port(), "listening");
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(stop)
            .await?;
        depth.abort();
        ping.abort();
        if let Some(l) = lifecycle {
            l.abort();
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Read the queue in the background (never on a request): its depth and
/// the oldest PENDING export's age, for the gauges and for the CloudWatch
/// publisher.
async fn sample_queue(
    state: AppState,
    every: Duration,
    readings: watch::Sender<Option<QueueReading>>,
) {
    loop {
        match read_queue(&state.queue).await {
            Ok(r) => {
                state.metrics.observe_queue(&r);
                readings.send_replace(Some(r));
            }
            Err(e) => tracing::debug!(error = %e, "queue reading failed"),
        }
        tokio::time::sleep(every).await;
    }
}

async fn read_queue(queue: &Queue) -> Result<QueueReading, StoreError> {
    let depth = queue.depth().await?;
    let of = |s: Status| depth.iter().find(|(k, _)| *k == s).map_or(0, |(_, n)| *n);
    Ok(QueueReading {
        pending: of(Status::Pending),
        in_flight: of(Status::Triggered),
        oldest_pending_age: queue.oldest_pending_age().await?,
    })
}

/// Keep the last MongoDB ping result for `/ready` and operators, so no
/// request (least of all the ELB's `/heartbeat`) waits on the database.
async fn ping_mongo(state: AppState) {
    loop {
        let t0 = std::time::Instant::now();
        let result = state.store.ping().await;
        let status = http::MongoHealth {
            ok: result.is_ok(),
            error: result.err().map(|e| e.to_string()),
            latency_ms: t0.elapsed().as_millis() as u64,
            checked_at: chrono::Utc::now(),
        };
        if let Ok(mut slot) = state.mongo_health.write() {
            *slot = Some(status);
        }
        tokio::time::sleep(PING_EVERY).await;
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "host".into())
}
