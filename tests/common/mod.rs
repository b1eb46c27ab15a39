//! Test harness: stand-ins (or real services), a fresh database and fresh
//! buckets per test, and the app in-process on a random port.
//!
//! `MONGODB_URI` set → that MongoDB is used; otherwise this test binary
//! starts its own nx-27017. `AWS_ENDPOINT_URL` set → that endpoint (or
//! `VF_TEST_REAL_AWS=1` for real AWS); otherwise its own moto. Servers it
//! starts die with the test binary: each runs under a small shell that
//! kills it, by PID, when our end of its stdin closes.
#![allow(dead_code)]

pub mod faults;
pub mod mongo_faults;
pub mod procs;
pub mod seed;

use clap::Parser;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mongodb::bson::{doc, Document};
use serde_json::{json, Value};
use vf_export::config::{Cli, Command as Sub, Needs, Settings};
use vf_export::shutdown::Shutdown;
use vf_export::startup::{Application, Role};
use vf_export::worker::Hooks;

pub const SECRET: &str = "test-secret-not-for-production";

pub struct StandIns {
    pub mongodb_uri: String,
    pub aws_endpoint: Option<String>,
    _children: Vec<Child>,
}

fn venv_bin(name: &str) -> String {
    let p = format!("{}/.venv/bin/{name}", env!("CARGO_MANIFEST_DIR"));
    assert!(
        std::path::Path::new(&p).exists(),
        "{p} is missing: run `scripts/standins install` (scripts/test does)"
    );
    p
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Start `cmd` under a watchdog shell: it is stopped by PID when the pipe
/// on the shell's stdin closes (this process exiting, however it exits):
/// SIGTERM, then SIGKILL after 5 s, since nx-27017 sometimes hangs in its
/// SIGTERM handler and would otherwise outlive the tests.
fn spawn_guarded(cmd: &[String]) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg(
            r#""$@" >/dev/null 2>&1 & pid=$!
read _ignored
kill $pid 2>/dev/null
i=0
while kill -0 $pid 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
kill -9 $pid 2>/dev/null
wait $pid 2>/dev/null"#,
        )
        .arg("sh")
        .args(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn stand-in")
}

fn wait_port(port: u16, what: &str) {
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{what} did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn standins() -> &'static StandIns {
    static S: OnceLock<StandIns> = OnceLock::new();
    S.get_or_init(|| {
        let mut children = Vec::new();
        let mongodb_uri = match std::env::var("MONGODB_URI") {
            Ok(u) if !u.is_empty() => u,
            _ => {
                let port = free_port();
                // Its own pid and log files: nx-27017's defaults are shared
                // by every instance on the machine, and a stale pid file
                // stops a new one from starting.
                let run = std::env::temp_dir().join(format!("vf-nx-{}-{port}", std::process::id()));
                std::fs::create_dir_all(&run).unwrap();
                children.push(spawn_guarded(&[
                    venv_bin("nx-27017"),
                    "--db".into(),
                    "memory".into(),
                    "-p".into(),
                    port.to_string(),
                    "--pid-file".into(),
                    run.join("nx.pid").display().to_string(),
                    "--log-file".into(),
                    run.join("nx.log").display().to_string(),
                ]));
                wait_port(port, "nx-27017");
                format!("mongodb://127.0.0.1:{port}/?directConnection=true")
            }
        };
        let aws_endpoint = match std::env::var("AWS_ENDPOINT_URL") {
            Ok(u) if !u.is_empty() => Some(u),
            _ if std::env::var("VF_TEST_REAL_AWS").is_ok() => None,
            _ => {
                let port = free_port();
                children.push(spawn_guarded(&[
                    venv_bin("moto_server"),
                    "-H".into(),
                    "127.0.0.1".into(),
                    "-p".into(),
                    port.to_string(),
                ]));
                wait_port(port, "moto");
                // Stand-ins accept any credentials; the SDK needs some.
                if std::env::var("AWS_ACCESS_KEY_ID").is_err() {
                    std::env::set_var("AWS_ACCESS_KEY_ID", "test");
                    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
                }
                Some(format!("http://127.0.0.1:{port}"))
            }
        };
        StandIns {
            mongodb_uri,
            aws_endpoint,
            _children: children,
        }
    })
}

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// Settings as the binary would parse them, for this test's db and buckets.
pub fn settings(db: &str, buckets: &Buckets, extra: &[(&str, &str)]) -> Settings {
    let s = standins();
    let mut opts: Vec<(String, String)> = vec![
        ("port".into(), "0".into()),
        ("mongodb-db".into(), db.into()),
        ("exports-bucket".into(), buckets.exports.clone()),
        ("scoring-bucket".into(), buckets.scoring.clone()),
        ("vf-scoring-bucket".into(), buckets.vf_scoring.clone()),
        ("poll-interval-ms".into(), "100".into()),
        ("dev-routes".into(), "true".into()),
    ];
    if let Some(ep) = &s.aws_endpoint {
        opts.push(("aws-endpoint-url".into(), ep.clone()));
        opts.push(("s3-force-path-style".into(), "true".into()));
    }
    // Later values replace defaults of the same name.
    for (k, v) in extra {
        opts.retain(|(name, _)| name != k);
        opts.push((k.to_string(), v.to_string()));
    }
    let mut args: Vec<String> = vec!["vf-export".into(), "serve".into()];
    for (k, v) in opts {
        args.push(format!("--{k}"));
        args.push(v);
    }
    match Cli::try_parse_from(args)
        .expect("test settings parse")
        .command
    {
        // The secrets are no flags: set as the environment would.
        Sub::Serve(mut settings) => {
            settings.mongodb_uri = Some(s.mongodb_uri.as_str().into());
            settings.jwt_secret = Some(SECRET.into());
            settings
        }
        _ => unreachable!(),
    }
}

#[derive(Clone, Debug)]
pub struct Buckets {
    pub exports: String,
    pub scoring: String,
    pub vf_scoring: String,
}

pub async fn s3_client() -> aws_sdk_s3::Client {
    let s = standins();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"));
    if let Some(ep) = &s.aws_endpoint {
        loader = loader.endpoint_url(ep);
    }
    let sdk = loader.load().await;
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(s.aws_endpoint.is_some())
            .build(),
    )
}

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub db: mongodb::Database,
    pub db_name: String,
    pub s3: aws_sdk_s3::Client,
    pub buckets: Buckets,
    pub shutdown: Shutdown,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(&[]).await
    }

    /// A fresh database and buckets, then the app with `extra` settings.
    pub async fn spawn_with(extra: &[(&str, &str)]) -> Self {
        let db_name = unique("t_");
        let s3 = s3_client().await;
        let id = unique("");
        let buckets = Buckets {
            exports: format!("vf-{id}-exports"),
            scoring: format!("vf-{id}-scoring"),
            vf_scoring: format!("vf-{id}-vfscoring"),
        };
        for b in [&buckets.exports, &buckets.scoring, &buckets.vf_scoring] {
            s3.create_bucket()
                .bucket(b)
                .send()
                .await
                .expect("create bucket");
        }
        Self::start(db_name, buckets, s3, extra, Hooks::default()).await
    }

    /// Start another app on the same database and buckets (a second process).
    pub async fn sibling(&self, extra: &[(&str, &str)]) -> Self {
        self.sibling_with_hooks(extra, Hooks::default()).await
    }

    /// [`TestApp::sibling`] with test seams in its worker.
    pub async fn sibling_with_hooks(&self, extra: &[(&str, &str)], hooks: Hooks) -> Self {
        Self::start(
            self.db_name.clone(),
            self.buckets.clone(),
            self.s3.clone(),
            extra,
            hooks,
        )
        .await
    }

    async fn start(
        db_name: String,
        buckets: Buckets,
        s3: aws_sdk_s3::Client,
        extra: &[(&str, &str)],
        hooks: Hooks,
    ) -> Self {
        let cfg = settings(&db_name, &buckets, extra)
            .validate(Needs::Serve)
            .expect("valid test config");
        let app = Application::build_with(&cfg, Role::Serve, hooks)
            .await
            .expect("app builds");
        let base = format!("http://127.0.0.1:{}", app.port());
        let shutdown = app.shutdown();
        let task = tokio::spawn(app.run());
        let client = mongodb::Client::with_uri_str(&standins().mongodb_uri)
            .await
            .unwrap();
        Self {
            base,
            http: reqwest::Client::new(),
            db: client.database(&db_name),
            db_name,
            s3,
            buckets,
            shutdown,
            task,
        }
    }

    pub fn token(&self, user: &str, campaigns: &[(&str, &[&str])], supreme: bool) -> String {
        token_with(user, campaigns, supreme, 3600)
    }

    /// A token with REPORT on `campaign`.
    pub fn reporter(&self, campaign: &str) -> String {
        self.token("u42", &[(campaign, &["REPORT"])], false)
    }

    pub async fn post_export(&self, campaign: &str, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}/campaigns/{campaign}/exports", self.base))
            .bearer_auth(self.reporter(campaign))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// POST an export that must be queued anew (201); its id.
    pub async fn queue_export(&self, campaign: &str, body: Value) -> String {
        let r = self.post_export(campaign, body).await;
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert_eq!(status, 201, "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    pub async fn get_export(&self, campaign: &str, id: &str) -> Value {
        let r = self
            .http
            .get(format!("{}/campaigns/{campaign}/exports/{id}", self.base))
            .bearer_auth(self.reporter(campaign))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// Poll until the export leaves PENDING/TRIGGERED (or `within` passes).
    pub async fn wait_done(&self, campaign: &str, id: &str, within: Duration) -> Value {
        let t0 = Instant::now();
        loop {
            let v = self.get_export(campaign, id).await;
            let st = v["status"].as_str().unwrap().to_string();
            if st != "PENDING" && st != "TRIGGERED" {
                return v;
            }
            assert!(t0.elapsed() < within, "export {id} still {st}: {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Download through the signed URL.
    pub async fn download(&self, url: &str) -> Vec<u8> {
        let r = self.http.get(url).send().await.unwrap();
        assert_eq!(r.status(), 200, "download {url}");
        r.bytes().await.unwrap().to_vec()
    }

    pub async fn object_keys(&self, bucket: &str) -> Vec<String> {
        let out = self
            .s3
            .list_objects_v2()
            .bucket(bucket)
            .send()
            .await
            .unwrap();
        out.contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect()
    }

    pub async fn open_uploads(&self, bucket: &str) -> usize {
        let out = self
            .s3
            .list_multipart_uploads()
            .bucket(bucket)
            .send()
            .await
            .unwrap();
        out.uploads().len()
    }

    pub async fn stop(self) {
        self.shutdown.drain();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.task).await;
    }

    /// The export record as stored.
    pub async fn export_doc(&self, id: mongodb::bson::oid::ObjectId) -> Document {
        self.db
            .collection::<Document>("exports")
            .find_one(doc! { "_id": id })
            .await
            .unwrap()
            .expect("export record")
    }
}

pub fn token_with(user: &str, campaigns: &[(&str, &[&str])], supreme: bool, ttl: i64) -> String {
    let c: serde_json::Map<String, Value> = campaigns
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let exp = chrono::Utc::now().timestamp() + ttl;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({ "sub": user, "campaigns": c, "isSupreme": supreme, "exp": exp }),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// Seed data helpers.
pub async fn insert(db: &mongodb::Database, coll: &str, docs: Vec<Document>) {
    if docs.is_empty() {
        return;
    }
    for chunk in docs.chunks(1000) {
        db.collection::<Document>(coll)
            .insert_many(chunk.to_vec())
            .await
            .unwrap();
    }
}

pub fn campaign_doc(id: &str, name: &str) -> Document {
    doc! { "_id": id, "name": name, "preferences": [], "promoters": [] }
}
