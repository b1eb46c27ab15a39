//! The real `vf-export` binary as a child process, for tests of what only a
//! process shows: `kill -9`, SIGTERM, its stdout logs. Every child is
//! killed (by its own PID) when its handle drops, so a failing test leaves
//! nothing running.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{standins, TestApp, SECRET};

/// Environment for a `vf-export` process on `app`'s database and buckets;
/// `extra` (variable, value) pairs replace or add.
pub fn env_for(app: &TestApp, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let s = standins();
    let mut env: Vec<(String, String)> = vec![
        ("PORT".into(), "0".into()),
        ("MONGODB_URI".into(), s.mongodb_uri.clone()),
        ("MONGODB_DB".into(), app.db_name.clone()),
        ("JWT_SECRET".into(), SECRET.into()),
        ("EXPORTS_BUCKET".into(), app.buckets.exports.clone()),
        ("SCORING_BUCKET".into(), app.buckets.scoring.clone()),
        ("VF_SCORING_BUCKET".into(), app.buckets.vf_scoring.clone()),
        ("POLL_INTERVAL_MS".into(), "100".into()),
        ("RUST_LOG".into(), "info".into()),
    ];
    if let Some(ep) = &s.aws_endpoint {
        env.push(("AWS_ENDPOINT_URL".into(), ep.clone()));
        env.push(("S3_FORCE_PATH_STYLE".into(), "true".into()));
    }
    for (k, v) in extra {
        env.retain(|(name, _)| name != k);
        env.push((k.to_string(), v.to_string()));
    }
    env
}

/// A running `vf-export` process with its stdout and stderr in files.
pub struct Proc {
    child: Child,
    pub pid: u32,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Proc {
    /// Start `vf-export <sub>` with exactly `env` (plus PATH/HOME and the
    /// AWS credentials of this process) writing its output under `dir`.
    pub fn spawn(sub: &str, env: &[(String, String)], dir: &Path, name: &str) -> Proc {
        let stdout = dir.join(format!("{name}.stdout"));
        let stderr = dir.join(format!("{name}.stderr"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vf-export"));
        cmd.arg(sub)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap());
        for k in [
            "PATH",
            "HOME",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
        ] {
            if let Ok(v) = std::env::var(k) {
                cmd.env(k, v);
            }
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let child = cmd.spawn().expect("spawn vf-export");
        Proc {
            pid: child.id(),
            child,
            stdout,
            stderr,
        }
    }

    /// The lease-owner id of a worker contains `-<pid>-`.
    pub fn owns(&self, lease_owner: &str) -> bool {
        lease_owner.contains(&format!("-{}-", self.pid))
    }

    /// SIGKILL (std's `Child::kill`) and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, by PID.
    pub fn term(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -TERM {} failed", self.pid);
    }

    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Wait for the process to exit (`within` guards against a hang).
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let t0 = Instant::now();
        loop {
            if let Some(s) = self.exited() {
                return s;
            }
            assert!(
                t0.elapsed() < within,
                "vf-export (pid {}) did not exit; stdout:\n{}",
                self.pid,
                self.stdout_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn stdout_text(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Parsed stdout lines (the JSON logs); non-JSON lines are `Value::String`.
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        self.stdout_text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or(serde_json::Value::String(l.into())))
            .collect()
    }

    /// The HTTP port, from the `listening` log line.
    pub async fn port(&mut self) -> u16 {
        let t0 = Instant::now();
        loop {
            for l in self.log_lines() {
                if l["message"] == "listening" {
                    return l["port"].as_u64().expect("port field") as u16;
                }
            }
            if let Some(s) = self.exited() {
                panic!(
                    "vf-export exited ({s}) before listening:\n{}\n{}",
                    self.stdout_text(),
                    self.stderr_text()
                );
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "no listening line");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub async fn base(&mut self) -> String {
        format!("http://127.0.0.1:{}", self.port().await)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill9();
        }
    }
}

/// Seed a campaign with `vf-seed` (realistic entries, users and markets).
pub async fn seed(app: &TestApp, campaign: &str, entries: u64, markets: u64) {
    seed_into(
        &standins().mongodb_uri,
        &app.db_name,
        campaign,
        entries,
        markets,
    )
    .await
}

/// [`seed`] into any MongoDB.
pub async fn seed_into(uri: &str, db: &str, campaign: &str, entries: u64, markets: u64) {
    // Built only with the dev-tools feature (scripts/test passes it).
    let Some(seed) = option_env!("CARGO_BIN_EXE_vf-seed") else {
        panic!("vf-seed is not built: run the tests with `--features dev-tools`")
    };
    let status = tokio::process::Command::new(seed)
        .args([
            "--mongodb-uri",
            uri,
            "--mongodb-db",
            db,
            "--campaign",
            campaign,
            "--entries",
            &entries.to_string(),
            "--markets",
            &markets.to_string(),
        ])
        .env_remove("MONGODB_URI")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .expect("run vf-seed");
    assert!(status.success(), "vf-seed failed: {status}");
}

/// Records in a CSV/TSV body: newlines outside quoted fields.
pub fn csv_records(body: &[u8]) -> usize {
    let mut quoted = false;
    let mut n = 0;
    for &b in body {
        match b {
            b'"' => quoted = !quoted,
            b'\n' if !quoted => n += 1,
            _ => {}
        }
    }
    n
}

/// "export finished" log lines per export id, over all `procs`.
pub fn finished_lines(procs: &[&Proc]) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for p in procs {
        for l in p.log_lines() {
            if l["message"] == "export finished" {
                if let Some(id) = l["export_id"].as_str() {
                    *out.entry(id.to_string()).or_default() += 1;
                }
            }
        }
    }
    out
}

/// A private nx-27017 on a data file, for tests that stop and restart the
/// database (the shared stand-in must stay up for the other tests).
pub struct Nx {
    child: Option<Child>,
    pub port: u16,
    pub file: PathBuf,
}

impl Nx {
    pub fn start(file: &Path) -> Nx {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut nx = Nx {
            child: None,
            port,
            file: file.to_path_buf(),
        };
        nx.restart();
        nx
    }

    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }

    /// Start (again) on the same port and data file.
    pub fn restart(&mut self) {
        let bin = format!("{}/.venv/bin/nx-27017", env!("CARGO_MANIFEST_DIR"));
        // Its own pid and log files: the defaults are shared by every
        // nx-27017 on the machine, and a stale pid file blocks a restart.
        let pid_file = self.file.with_extension("pid");
        let _ = std::fs::remove_file(&pid_file);
        let child = Command::new(bin)
            .args([
                "--db",
                self.file.to_str().unwrap(),
                "-p",
                &self.port.to_string(),
                "--pid-file",
                pid_file.to_str().unwrap(),
                "--log-file",
                self.file.with_extension("log").to_str().unwrap(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nx-27017");
        self.child = Some(child);
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "nx-27017 did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL, by PID.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Nx {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The export's document as stored (status, attempts, lease, upload,
/// progress): what the reliability tests check after a kill or a drain.
pub async fn export_doc(app: &TestApp, id: &str) -> mongodb::bson::Document {
    app.db
        .collection::<mongodb::bson::Document>("exports")
        .find_one(
            mongodb::bson::doc! { "_id": mongodb::bson::oid::ObjectId::parse_str(id).unwrap() },
        )
        .await
        .unwrap()
        .unwrap()
}

/// `progress.rowsWritten` of an export document (0 before any progress).
pub fn rows_written(d: &mongodb::bson::Document) -> i64 {
    use mongodb::bson::Bson;
    // Int32 or Int64: the stand-in does not keep the width.
    match d
        .get_document("progress")
        .ok()
        .and_then(|p| p.get("rowsWritten"))
    {
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Int32(n)) => *n as i64,
        _ => 0,
    }
}

/// POST an export to the process at `base` as a reporter of `cid`; the new
/// export's id (201 expected).
pub async fn post_export(
    http: &reqwest::Client,
    base: &str,
    cid: &str,
    body: serde_json::Value,
) -> String {
    let tok = super::token_with("u42", &[(cid, &["REPORT"])], false, 3600);
    let r = http
        .post(format!("{base}/campaigns/{cid}/exports"))
        .bearer_auth(tok)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// An export handed back to the queue (on a drain timeout or a
/// termination): PENDING, the attempt not counted, no lease or upload left,
/// still active for dedupe, its multipart upload aborted and nothing under
/// `upload_key`.
pub async fn assert_handed_back(app: &TestApp, d: &mongodb::bson::Document, upload_key: &str) {
    assert_eq!(d.get_str("status"), Ok("PENDING"), "{d}");
    assert_eq!(
        d.get_i32("attempts"),
        Ok(0),
        "a hand-back must not count: {d}"
    );
    for f in ["lease", "upload"] {
        assert!(d.get(f).is_none(), "{f} left on the export: {d}");
    }
    assert!(d.get("activeKey").is_some(), "still active (dedupe): {d}");
    assert_eq!(app.open_uploads(&app.buckets.exports).await, 0);
    assert!(!app
        .object_keys(&app.buckets.exports)
        .await
        .iter()
        .any(|k| k == upload_key));
}
