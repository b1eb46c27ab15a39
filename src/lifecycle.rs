//! The Auto Scaling group's termination lifecycle hook, answered by the
//! service itself.
//!
//! The ELB's connection draining protects HTTP requests only; exports run in
//! the background. So on scale-in or replacement the group holds the
//! instance in `Terminating:Wait` (an `EC2_INSTANCE_TERMINATING` hook,
//! `ASG_LIFECYCLE_HOOK`) and this watcher, seeing the instance's target
//! lifecycle state turn to `Terminated` in instance metadata (IMDSv2):
//!
//! 1. marks the termination seen, then calls [`Shutdown::terminating`]:
//!    `/heartbeat` answers 503, the worker stops claiming and hands its
//!    running exports back to the queue (PENDING, attempt not counted): a
//!    single CSV at its next part boundary, continued elsewhere from that
//!    checkpoint; a ZIP or multi-object export at once, started again
//!    elsewhere;
//! 2. waits for the worker to stop;
//! 3. completes the lifecycle action with `CONTINUE` (retrying transient
//!    failures), after which the process exits 0 and EC2 terminates it.
//!
//! Off EC2 (no instance metadata) or outside a group it turns itself off
//! with one log line. SIGTERM keeps its meaning (drain up to
//! `DRAIN_TIMEOUT_SECS`, then hand back); a termination seen during that
//! drain hands the exports that cannot resume back at once.

use std::time::{Duration, Instant};

use aws_config::imds::client::error::ImdsError;
use aws_sdk_autoscaling::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::shutdown::Shutdown;

/// How often the target lifecycle state is read: a local, unthrottled
/// metadata call, and the upper bound on how late a hand-back starts.
const POLL: Duration = Duration::from_secs(2);
/// Pause between CompleteLifecycleAction attempts after a transient failure.
const RETRY: Duration = Duration::from_secs(5);
/// Give up completing after this long: by then the hook's heartbeat timeout
/// (drain timeout + margin, terraform) has let the termination go on anyway.
const RETRY_FOR: Duration = Duration::from_secs(15 * 60);

const INSTANCE_ID: &str = "/latest/meta-data/instance-id";
const TARGET_STATE: &str = "/latest/meta-data/autoscaling/target-lifecycle-state";
/// The target state of an instance the group is terminating.
const TERMINATED: &str = "Terminated";

/// Seen by `Application::run`: once a termination is seen, the process may
/// stop only after the lifecycle action has been answered.
#[derive(Clone, Default, Debug)]
pub struct Termination {
    seen: CancellationToken,
    answered: CancellationToken,
}

impl Termination {
    /// Resolves at once when no termination was seen, else once the
    /// lifecycle action has been answered (or given up on).
    pub async fn settled(&self) {
        if self.seen.is_cancelled() {
            self.answered.cancelled().await;
        }
    }
}

/// The watcher for this instance and its group's hook.
pub struct Watcher {
    imds: aws_config::imds::Client,
    autoscaling: aws_sdk_autoscaling::Client,
    group: String,
    hook: String,
    instance_id: String,
    /// The state read at start: a process restarted on an instance that is
    /// already terminating must not claim anything.
    first: Option<String>,
}

impl Watcher {
    /// The watcher when `ASG_LIFECYCLE_HOOK` is set and this is an EC2
    /// instance in an Auto Scaling group; `None` (one log line) otherwise.
    pub async fn detect(cfg: &Config, sdk: &aws_config::SdkConfig) -> Option<Watcher> {
        let hook = cfg.asg_lifecycle_hook.clone()?;
        // Validated with the hook (config.rs).
        let group = cfg.asg_name.clone()?;
        // Short timeouts, two attempts: off EC2 this must not hold up start.
        let imds = aws_config::imds::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .read_timeout(Duration::from_secs(1))
            .max_attempts(2)
            .build();
        let instance_id = match imds.get(INSTANCE_ID).await {
            Ok(id) => String::from(id),
            Err(e) => {
                tracing::info!(error = %e, hook = %hook, "no instance metadata (not on EC2): the lifecycle hook watcher is off");
                return None;
            }
        };
        let first = match imds.get(TARGET_STATE).await {
            Ok(state) => Some(String::from(state)),
            Err(e) if not_found(&e) => {
                tracing::warn!(instance_id = %instance_id, group = %group, "this instance is not in an Auto Scaling group (no target lifecycle state): the lifecycle hook watcher is off");
                return None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read the target lifecycle state; watching anyway");
                None
            }
        };
        let watcher = Watcher {
            imds,
            autoscaling: aws_sdk_autoscaling::Client::new(sdk),
            group,
            hook,
            instance_id,
            first,
        };
        watcher.check_hook(cfg.drain_timeout).await;
        Some(watcher)
    }

    /// Say at start whether the hook exists as configured, so a wrong name
    /// or a short heartbeat shows now and not at the first scale-in. Never
    /// fatal: completing is what matters, and it is retried.
    async fn check_hook(&self, drain_timeout: Duration) {
        let out = self
            .autoscaling
            .describe_lifecycle_hooks()
            .auto_scaling_group_name(&self.group)
            .lifecycle_hook_names(&self.hook)
            .send()
            .await;
        let (group, hook) = (&self.group, &self.hook);
        match out {
            Ok(out) => match out.lifecycle_hooks().first() {
                Some(h) => {
                    let heartbeat = h.heartbeat_timeout().unwrap_or(0);
                    tracing::info!(
                        instance_id = %self.instance_id,
                        group = %group,
                        hook = %hook,
                        transition = h.lifecycle_transition().unwrap_or(""),
                        heartbeat_timeout_secs = heartbeat,
                        default_result = h.default_result().unwrap_or(""),
                        "lifecycle hook watcher on"
                    );
                    if (heartbeat as u64) < drain_timeout.as_secs() {
                        tracing::warn!(group = %group, hook = %hook, heartbeat_timeout_secs = heartbeat, drain_timeout_secs = drain_timeout.as_secs(), "the hook's heartbeat timeout is below DRAIN_TIMEOUT_SECS");
                    }
                }
                None => {
                    tracing::warn!(group = %group, hook = %hook, "lifecycle hook not found on the group: a scale-in will not wait for running exports to be handed back")
                }
            },
            Err(e) => {
                tracing::warn!(group = %group, hook = %hook, error = %DisplayErrorContext(&e), "could not describe the lifecycle hook; watching anyway")
            }
        }
    }

    /// Start watching. A process started on an instance already being
    /// terminated (a restart after the hand-back) hands back before the
    /// worker can claim anything: call this before the worker starts.
    pub fn start(
        self,
        shutdown: Shutdown,
        worker_stopped: CancellationToken,
        termination: Termination,
    ) -> tokio::task::JoinHandle<()> {
        let already = self.first.as_deref() == Some(TERMINATED);
        if already {
            termination.seen.cancel();
            shutdown.terminating();
        }
        tokio::spawn(async move {
            if !already {
                self.wait_for_termination().await;
                termination.seen.cancel();
                shutdown.terminating();
            }
            tracing::info!(instance_id = %self.instance_id, group = %self.group, "instance terminating: exports handed back to the queue, no new claims");
            worker_stopped.cancelled().await;
            self.complete(already).await;
            termination.answered.cancel();
        })
    }

    /// Poll the target lifecycle state until it is `Terminated`. Metadata
    /// errors are logged once per outage and polling goes on.
    async fn wait_for_termination(&self) {
        let mut failing = false;
        loop {
            tokio::time::sleep(POLL).await;
            match self.imds.get(TARGET_STATE).await {
                Ok(state) if state.as_ref() == TERMINATED => return,
                Ok(_) => {
                    if failing {
                        tracing::info!("instance metadata answers again");
                        failing = false;
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "cannot read the target lifecycle state; retrying");
                        failing = true;
                    }
                }
            }
        }
    }

    /// CompleteLifecycleAction with CONTINUE: the instance may go. Transient
    /// failures (throttling, 5xx, network) are retried; a refusal (the
    /// action is already answered, or not allowed) is logged and left to the
    /// hook's heartbeat timeout. `restarted`: this process started on an
    /// instance already terminating, whose action an earlier process most
    /// likely answered, so a refusal is expected.
    async fn complete(&self, restarted: bool) {
        let t0 = Instant::now();
        loop {
            let out = self
                .autoscaling
                .complete_lifecycle_action()
                .auto_scaling_group_name(&self.group)
                .lifecycle_hook_name(&self.hook)
                .instance_id(&self.instance_id)
                .lifecycle_action_result("CONTINUE")
                .send()
                .await;
            match out {
                Ok(_) => {
                    tracing::info!(instance_id = %self.instance_id, group = %self.group, hook = %self.hook, "lifecycle action completed: CONTINUE");
                    return;
                }
                Err(e) if transient(&e) && t0.elapsed() < RETRY_FOR => {
                    tracing::warn!(error = %DisplayErrorContext(&e), retry_in_secs = RETRY.as_secs(), "CompleteLifecycleAction failed; retrying");
                    tokio::time::sleep(RETRY).await;
                }
                Err(e) if restarted => {
                    tracing::info!(error = %DisplayErrorContext(&e), "CompleteLifecycleAction refused: most likely answered before this process started");
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %DisplayErrorContext(&e), group = %self.group, hook = %self.hook, "CompleteLifecycleAction refused: the termination goes on when the hook's heartbeat timeout passes");
                    return;
                }
            }
        }
    }
}

fn not_found(e: &ImdsError) -> bool {
    matches!(e, ImdsError::ErrorResponse(r) if r.response().status().as_u16() == 404)
}

/// Worth another try: no answer, a throttle, or the service's own failure.
fn transient<E: ProvideErrorMetadata>(
    e: &SdkError<E, aws_sdk_autoscaling::config::http::HttpResponse>,
) -> bool {
    match e {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(s) => {
            s.raw().status().is_server_error()
                || matches!(
                    s.err().code(),
                    Some("Throttling" | "ThrottlingException" | "RequestLimitExceeded")
                )
        }
        _ => false,
    }
}
