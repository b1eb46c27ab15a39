//! Scale-in never kills a running export: the termination lifecycle hook,
//! answered by a spawned `vf-export serve` itself.
//!
//! The instance metadata service is a fake written here (IMDSv2: a token
//! PUT, then GETs that must carry it); Auto Scaling is moto (the group and
//! its hook, which the service describes at start), behind the tests' proxy
//! that answers `CompleteLifecycleAction` (moto does not implement it) and
//! records what was asked. The answer is held at 503 until the test has
//! seen the drain, so the 503 window cannot be missed, and the service's
//! retry of a transient failure is exercised on the way.

mod common;

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use common::procs::{csv_records, env_for, export_doc, post_export, rows_written, seed, Proc};
use common::{faults, unique, TestApp};

use mongodb::bson::Bson;
use serde_json::{json, Value};

// Several 5 MiB parts: the hand-back waits for the next part boundary.
const ENTRIES: u64 = 80_000;
const GUARD: Duration = Duration::from_secs(120);
const INSTANCE_ID: &str = "i-0123456789abcdef0";

/// The fake instance metadata service: this instance's id and its target
/// lifecycle state, which the test turns to `Terminated`.
struct Imds {
    base: String,
    state: Arc<Mutex<String>>,
    /// Metadata GETs without the session token (IMDSv2 refuses them).
    tokenless: Arc<AtomicUsize>,
}

impl Imds {
    async fn start(state: &str) -> Imds {
        const TOKEN: &str = "test-imds-token";
        let state = Arc::new(Mutex::new(state.to_string()));
        let tokenless = Arc::new(AtomicUsize::new(0));
        let (st, tl) = (state.clone(), tokenless.clone());
        let get = move |path: &str, headers: &HeaderMap| {
            if headers
                .get("x-aws-ec2-metadata-token")
                .is_none_or(|t| t != TOKEN)
            {
                tl.fetch_add(1, Ordering::SeqCst);
                return (StatusCode::UNAUTHORIZED, HeaderMap::new(), String::new());
            }
            let body = match path {
                "/latest/meta-data/instance-id" => INSTANCE_ID.to_string(),
                "/latest/meta-data/autoscaling/target-lifecycle-state" => {
                    st.lock().unwrap().clone()
                }
                _ => return (StatusCode::NOT_FOUND, HeaderMap::new(), String::new()),
            };
            (StatusCode::OK, HeaderMap::new(), body)
        };
        let app = axum::Router::new()
            .route(
                "/latest/api/token",
                axum::routing::put(|| async {
                    let mut h = HeaderMap::new();
                    h.insert(
                        "x-aws-ec2-metadata-token-ttl-seconds",
                        "21600".parse().unwrap(),
                    );
                    (h, TOKEN)
                }),
            )
            .fallback(move |uri: axum::http::Uri, headers: HeaderMap| {
                let answer = get(uri.path(), &headers);
                async move { answer }
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Imds {
            base,
            state,
            tokenless,
        }
    }

    fn set(&self, state: &str) {
        *self.state.lock().unwrap() = state.to_string();
    }
}

/// How the proxy answers `CompleteLifecycleAction`.
const UNAVAILABLE: u8 = 0;
const COMPLETE: u8 = 1;
const NO_ACTIVE_ACTION: u8 = 2;

const COMPLETE_OK: &str = r#"<CompleteLifecycleActionResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/"><CompleteLifecycleActionResult/><ResponseMetadata><RequestId>00000000-0000-0000-0000-000000000001</RequestId></ResponseMetadata></CompleteLifecycleActionResponse>"#;
const SERVICE_UNAVAILABLE: &str = r#"<ErrorResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/"><Error><Type>Receiver</Type><Code>ServiceUnavailable</Code><Message>injected</Message></Error><RequestId>00000000-0000-0000-0000-000000000002</RequestId></ErrorResponse>"#;
const VALIDATION_ERROR: &str = r#"<ErrorResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/"><Error><Type>Sender</Type><Code>ValidationError</Code><Message>No active Lifecycle Action found with instance ID i-0123456789abcdef0</Message></Error><RequestId>00000000-0000-0000-0000-000000000003</RequestId></ErrorResponse>"#;

/// The AWS endpoint the service gets: moto, except `CompleteLifecycleAction`,
/// answered here as `mode` says and recorded (form-encoded bodies).
struct AutoScaling {
    endpoint: String,
    mode: Arc<AtomicU8>,
    completions: Arc<Mutex<Vec<String>>>,
}

impl AutoScaling {
    async fn start(upstream: String, mode: u8) -> AutoScaling {
        let mode = Arc::new(AtomicU8::new(mode));
        let completions = Arc::new(Mutex::new(Vec::new()));
        let (m, seen) = (mode.clone(), completions.clone());
        let endpoint = faults::forward(upstream, move |r| {
            let body = String::from_utf8_lossy(r.body);
            if !body.contains("Action=CompleteLifecycleAction") {
                return None;
            }
            seen.lock().unwrap().push(body.to_string());
            Some(match m.load(Ordering::SeqCst) {
                COMPLETE => (200, COMPLETE_OK),
                NO_ACTIVE_ACTION => (400, VALIDATION_ERROR),
                _ => (503, SERVICE_UNAVAILABLE),
            })
        })
        .await;
        AutoScaling {
            endpoint,
            mode,
            completions,
        }
    }

    fn completions(&self) -> Vec<String> {
        self.completions.lock().unwrap().clone()
    }
}

/// The fields of a form-encoded Query request (our values need no decoding).
fn form(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A group and its EC2_INSTANCE_TERMINATING hook in moto (the shape
/// terraform gives them), through the SDK the service uses.
async fn create_group(endpoint: &str, group: &str, hook: &str) {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .load()
        .await;
    let asg = aws_sdk_autoscaling::Client::new(&sdk);
    let lc = format!("{group}-lc");
    asg.create_launch_configuration()
        .launch_configuration_name(&lc)
        .image_id("ami-12c6146b")
        .instance_type("t2.medium")
        .send()
        .await
        .expect("CreateLaunchConfiguration");
    asg.create_auto_scaling_group()
        .auto_scaling_group_name(group)
        .launch_configuration_name(&lc)
        .min_size(0)
        .max_size(1)
        .desired_capacity(0)
        .availability_zones("us-east-1a")
        .send()
        .await
        .expect("CreateAutoScalingGroup");
    asg.put_lifecycle_hook()
        .auto_scaling_group_name(group)
        .lifecycle_hook_name(hook)
        .lifecycle_transition("autoscaling:EC2_INSTANCE_TERMINATING")
        .heartbeat_timeout(660)
        .default_result("CONTINUE")
        .send()
        .await
        .expect("PutLifecycleHook");
}

/// Poll `f` every 50 ms until it holds; `what` names it when GUARD passes.
async fn until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = Instant::now();
    while !f().await {
        assert!(t0.elapsed() < GUARD, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn logged(p: &Proc, message: &str) -> Vec<Value> {
    p.log_lines()
        .into_iter()
        .filter(|l| l["message"] == message)
        .collect()
}

/// Everything the lifecycle tests share: stand-ins through the proxy, a
/// group with its hook, the fake metadata service, the serve environment.
struct Instance {
    app: TestApp,
    imds: Imds,
    autoscaling: AutoScaling,
    group: String,
    hook: String,
    env: Vec<(String, String)>,
}

impl Instance {
    /// `None` (the test skips) when the AWS endpoint cannot take a proxy.
    async fn new(state: &str, mode: u8) -> Option<Instance> {
        let Some(upstream) = faults::proxy_upstream() else {
            eprintln!("skipped: the lifecycle tests need moto or a plain-HTTP AWS_ENDPOINT_URL (Auto Scaling cannot hold a real instance here)");
            return None;
        };
        let app = TestApp::spawn_with(&[("worker-concurrency", "0")]).await;
        let autoscaling = AutoScaling::start(upstream, mode).await;
        let group = unique("vf-export-t-");
        let hook = format!("{group}-terminating");
        create_group(&autoscaling.endpoint, &group, &hook).await;
        let imds = Imds::start(state).await;
        let env = env_for(
            &app,
            &[
                ("AWS_ENDPOINT_URL", autoscaling.endpoint.as_str()),
                ("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.base.as_str()),
                ("ASG_NAME", group.as_str()),
                ("ASG_LIFECYCLE_HOOK", hook.as_str()),
                ("WORKER_CONCURRENCY", "1"),
                // Far beyond the test: the hand-back on termination is at
                // once, never the drain timeout's.
                ("DRAIN_TIMEOUT_SECS", "600"),
                ("S3_PART_SIZE_MIB", "5"),
            ],
        );
        Some(Instance {
            app,
            imds,
            autoscaling,
            group,
            hook,
            env,
        })
    }

    /// The one CompleteLifecycleAction the service must send, in full.
    fn assert_completion(&self, body: &str) {
        let mut fields = form(body);
        fields.retain(|(k, _)| k != "Version");
        fields.sort();
        let mut want = vec![
            ("Action", "CompleteLifecycleAction"),
            ("AutoScalingGroupName", self.group.as_str()),
            ("InstanceId", INSTANCE_ID),
            ("LifecycleActionResult", "CONTINUE"),
            ("LifecycleHookName", self.hook.as_str()),
        ];
        want.sort();
        let want: Vec<(String, String)> = want
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(fields, want, "{body}");
    }
}

/// The instance turns Terminated mid-export: /heartbeat 503, the export (a
/// single CSV) is handed back at its next part boundary (PENDING, attempt
/// not counted, its upload kept open at that checkpoint), the lifecycle
/// action is completed with CONTINUE (after transient 503s, which are
/// retried), exit 0; another worker then continues the export from the
/// checkpoint and finishes it, exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_instance_hands_exports_back_and_completes_the_lifecycle_action() {
    let Some(i) = Instance::new("InService", UNAVAILABLE).await else {
        return;
    };
    let app = &i.app;
    let cid = "lifecycle1";
    seed(app, cid, ENTRIES, 4).await;
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Proc::spawn("serve", &i.env, dir.path(), "serve");
    let base = serve.base().await;
    // At start the service found the hook in moto (DescribeLifecycleHooks).
    let on = logged(&serve, "lifecycle hook watcher on");
    assert_eq!(on.len(), 1, "{}", serve.stdout_text());
    assert_eq!(on[0]["instance_id"], INSTANCE_ID);
    assert_eq!(on[0]["heartbeat_timeout_secs"], 660);
    assert_eq!(on[0]["transition"], "autoscaling:EC2_INSTANCE_TERMINATING");

    let http = reqwest::Client::new();
    let hb = format!("{base}/heartbeat");
    assert_eq!(http.get(&hb).send().await.unwrap().status(), 200);
    let id = post_export(&http, &base, cid, json!({ "exportType": "entries" })).await;
    let t0 = Instant::now();
    // Before the first part is cut, so the hand-back waits for one.
    let upload_key = loop {
        let d = export_doc(app, &id).await;
        assert_ne!(
            d.get_str("status"),
            Ok("FINISHED"),
            "finished too soon: {d}"
        );
        if let Ok(k) = d.get_document("upload").and_then(|u| u.get_str("key")) {
            if d.get_str("status") == Ok("TRIGGERED") && rows_written(&d) > 0 {
                break k.to_string();
            }
        }
        assert!(t0.elapsed() < GUARD, "export never ran: {d}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(export_doc(app, &id).await.get_i32("attempts"), Ok(1));

    i.imds.set("Terminated");
    until("/heartbeat answers 503", || async {
        http.get(&hb).send().await.unwrap().status() == 503
    })
    .await;
    until("the export is back in the queue", || async {
        export_doc(app, &id).await.get_str("status") == Ok("PENDING")
    })
    .await;
    let d = export_doc(app, &id).await;
    eprintln!("handed back after {} of {ENTRIES} rows", rows_written(&d));
    assert!(
        rows_written(&d) < ENTRIES as i64,
        "the export finished before the hand-back: make it longer"
    );
    assert_eq!(d.get_str("status"), Ok("PENDING"), "{d}");
    assert_eq!(
        d.get_i32("attempts"),
        Ok(0),
        "a hand-back must not count: {d}"
    );
    assert!(d.get("lease").is_none(), "{d}");
    let checkpoint_rows = d
        .get_document("checkpoint")
        .ok()
        .and_then(|c| match c.get("rows") {
            Some(Bson::Int32(n)) => Some(*n as i64),
            Some(Bson::Int64(n)) => Some(*n),
            _ => None,
        })
        .unwrap_or_else(|| panic!("handed back at a checkpoint: {d}\n{}", serve.stdout_text()));
    assert!(checkpoint_rows > 0, "{d}");
    assert!(
        d.get("upload").is_some(),
        "the upload is kept for the next attempt: {d}"
    );
    assert_eq!(app.open_uploads(&app.buckets.exports).await, 1);
    assert!(!app
        .object_keys(&app.buckets.exports)
        .await
        .contains(&upload_key));

    // The group was asked and refused with a transient error: the process
    // keeps /heartbeat at 503 and retries (the SDK's retries, then its own).
    until("CompleteLifecycleAction is asked", || async {
        !i.autoscaling.completions().is_empty()
    })
    .await;
    assert!(serve.exited().is_none(), "exited before the group was told");
    assert_eq!(http.get(&hb).send().await.unwrap().status(), 503);

    i.autoscaling.mode.store(COMPLETE, Ordering::SeqCst);
    let status = serve.wait_exit(GUARD).await;
    assert_eq!(status.code(), Some(0), "{}", serve.stderr_text());
    let asked = i.autoscaling.completions();
    assert!(
        asked.len() >= 2,
        "refused at least once, then completed: {asked:?}"
    );
    for body in &asked {
        i.assert_completion(body);
    }
    assert_eq!(
        logged(&serve, "lifecycle action completed: CONTINUE").len(),
        1
    );
    assert_eq!(
        logged(&serve, "export handed back to the queue on shutdown").len(),
        1
    );
    assert!(
        logged(&serve, "drain timeout: handing exports back to the queue").is_empty(),
        "the hand-back must not wait for the drain timeout"
    );
    assert_eq!(i.imds.tokenless.load(Ordering::SeqCst), 0, "IMDSv1 request");

    // Another worker continues it from the checkpoint and finishes it exactly.
    let next = app.sibling(&[("worker-concurrency", "1")]).await;
    let v = next.wait_done(cid, &id, GUARD).await;
    assert_eq!(v["status"], "FINISHED", "{v}");
    assert_eq!(v["count"], ENTRIES);
    assert_eq!(
        v["progress"]["resumedFromRow"].as_i64(),
        Some(checkpoint_rows),
        "{v}"
    );
    assert_eq!(export_doc(app, &id).await.get_i32("attempts"), Ok(1));
    let body = app.download(v["path"].as_str().unwrap()).await;
    assert_eq!(csv_records(&body) as u64, ENTRIES + 1);
    assert_eq!(app.open_uploads(&app.buckets.exports).await, 0);
    next.stop().await;
    i.app.stop().await;
}

/// A process (re)started on an instance already terminating (systemd's
/// Restart=always after the hand-back) claims nothing, answers 503, and
/// exits 0 when the group says the action was already answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_on_a_terminating_instance_claims_nothing() {
    let Some(i) = Instance::new("Terminated", NO_ACTIVE_ACTION).await else {
        return;
    };
    let app = &i.app;
    let cid = "lifecycle2";
    seed(app, cid, 10, 1).await;
    // Queued before the process starts: it must stay queued.
    let id = post_export(
        &app.http,
        &app.base,
        cid,
        json!({ "exportType": "entries" }),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Proc::spawn("serve", &i.env, dir.path(), "serve");
    let status = serve.wait_exit(GUARD).await;
    assert_eq!(status.code(), Some(0), "{}", serve.stderr_text());
    let asked = i.autoscaling.completions();
    assert_eq!(asked.len(), 1, "{asked:?}");
    i.assert_completion(&asked[0]);
    assert_eq!(
        logged(
            &serve,
            "CompleteLifecycleAction refused: most likely answered before this process started"
        )
        .len(),
        1,
        "{}",
        serve.stdout_text()
    );
    let d = export_doc(app, &id).await;
    assert_eq!(d.get_str("status"), Ok("PENDING"), "{d}");
    assert_eq!(d.get_i32("attempts"), Ok(0), "claimed: {d}");
    assert!(logged(&serve, "export started").is_empty());
    i.app.stop().await;
}

/// Off EC2 (no metadata service answers) the watcher turns itself off with
/// one log line; the service runs as usual and SIGTERM still drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_ec2_the_watcher_turns_itself_off() {
    let app = TestApp::spawn_with(&[("worker-concurrency", "0")]).await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let imds = format!("http://127.0.0.1:{closed}");
    let env = env_for(
        &app,
        &[
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.as_str()),
            ("ASG_NAME", "vf-export-t"),
            ("ASG_LIFECYCLE_HOOK", "vf-export-t-terminating"),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Proc::spawn("serve", &env, dir.path(), "serve");
    let base = serve.base().await;
    let r = reqwest::get(format!("{base}/heartbeat")).await.unwrap();
    assert_eq!(r.status(), 200);
    let off = logged(
        &serve,
        "no instance metadata (not on EC2): the lifecycle hook watcher is off",
    );
    assert_eq!(off.len(), 1, "{}", serve.stdout_text());
    assert_eq!(off[0]["level"], "info");
    serve.term();
    let status = serve.wait_exit(GUARD).await;
    assert_eq!(status.code(), Some(0), "{}", serve.stderr_text());
    app.stop().await;
}
