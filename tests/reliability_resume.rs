//! Resumable exports (spec: exports.md, Resumable), with real processes:
//! a single-CSV export of 150,000 rows (several 5 MiB parts) whose worker
//! is `kill -9`ed twice continues from its checkpoints and ends
//! byte-identical to an uninterrupted export (plain and gzip); SIGTERM
//! hands two running exports back at their next part boundary and the
//! process exits at once; a checkpoint whose upload was aborted behind its
//! back starts again and still ends exact.

mod common;

use std::time::{Duration, Instant};

use common::procs::{env_for, seed_into, Proc};
use common::{standins, token_with, TestApp};
use mongodb::bson::{doc, oid::ObjectId, Bson, Document};
use serde_json::{json, Value};
use sha2::Digest;

const ROWS: u64 = 150_000;
const CID: &str = "resume1";
/// One seeded campaign for every test of this binary (seeding 150,000
/// entries into the stand-in takes a while): exports of different tests
/// differ by `dateKey` (ignored by `entries`, but part of the dedupe key).
const DB: &str = "resume_shared";
const GUARD: Duration = Duration::from_secs(120);

/// One test at a time: each moves 150,000 rows through the single-threaded
/// stand-in, and three at once make every wait a matter of luck.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
static SEEDED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
static REFERENCE: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();

async fn seeded() {
    SEEDED
        .get_or_init(|| async {
            seed_into(&standins().mongodb_uri, DB, CID, ROWS, 4).await;
        })
        .await;
}

async fn db() -> mongodb::Database {
    mongodb::Client::with_uri_str(&standins().mongodb_uri)
        .await
        .unwrap()
        .database(DB)
}

/// SHA-256 of the plain `entries` export of the campaign, made by the
/// one-shot `vf-export export` (no parts, no checkpoints): the bytes any
/// interrupted plain export must end with.
async fn reference(app: &TestApp, dir: &std::path::Path) -> String {
    REFERENCE
        .get_or_init(|| async {
            let out = dir.join("reference.tsv");
            let env = env(app, &[]);
            let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_vf-export"))
                .args(["export", "--campaign", CID, "--type", "entries", "--out"])
                .arg(&out)
                .env_clear()
                .envs(env.iter().map(|(k, v)| (k, v)))
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .await
                .unwrap();
            assert!(status.success(), "one-shot reference export failed");
            hex::encode(sha2::Sha256::digest(std::fs::read(&out).unwrap()))
        })
        .await
        .clone()
}

fn env(app: &TestApp, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut e = vec![
        ("MONGODB_DB", DB),
        ("LEASE_SECS", "3"),
        ("S3_PART_SIZE_MIB", "5"),
        ("RETRY_BACKOFF_SECS", "1"),
        ("MAX_ATTEMPTS", "5"),
    ];
    e.extend_from_slice(extra);
    env_for(app, &e)
}

async fn record(id: &str) -> Document {
    db().await
        .collection::<Document>("exports")
        .find_one(doc! { "_id": ObjectId::parse_str(id).unwrap() })
        .await
        .unwrap()
        .unwrap()
}

fn int(d: &Document, path: &[&str]) -> i64 {
    let mut cur = d;
    for p in &path[..path.len() - 1] {
        match cur.get_document(p) {
            Ok(c) => cur = c,
            Err(_) => return 0,
        }
    }
    match cur.get(path[path.len() - 1]) {
        Some(Bson::Int32(n)) => *n as i64,
        Some(Bson::Int64(n)) => *n,
        _ => 0,
    }
}

/// The API process (no worker of its own).
async fn api(app: &TestApp, dir: &std::path::Path) -> (Proc, String) {
    let mut p = Proc::spawn(
        "serve",
        &env(app, &[("WORKER_CONCURRENCY", "0")]),
        dir,
        "api",
    );
    let base = p.base().await;
    (p, base)
}

async fn post(base: &str, body: Value) -> String {
    let tok = token_with("u42", &[(CID, &["REPORT"])], false, 3600);
    let r = reqwest::Client::new()
        .post(format!("{base}/campaigns/{CID}/exports"))
        .bearer_auth(tok)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn get(base: &str, id: &str) -> Value {
    let tok = token_with("u42", &[(CID, &["REPORT"])], false, 3600);
    reqwest::Client::new()
        .get(format!("{base}/campaigns/{CID}/exports/{id}"))
        .bearer_auth(tok)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn worker(app: &TestApp, dir: &std::path::Path, name: &str, concurrency: &str) -> Proc {
    Proc::spawn(
        "worker",
        &env(app, &[("WORKER_CONCURRENCY", concurrency)]),
        dir,
        name,
    )
}

/// Wait until the export's checkpoint holds at least `parts` parts.
async fn wait_parts(id: &str, parts: i64) -> Document {
    let t0 = Instant::now();
    loop {
        let d = record(id).await;
        if int(&d, &["checkpoint", "partNumber"]) >= parts {
            return d;
        }
        assert_ne!(
            d.get_str("status"),
            Ok("FINISHED"),
            "finished before {parts} parts"
        );
        assert!(t0.elapsed() < GUARD, "never reached {parts} parts: {d}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn wait_done(base: &str, id: &str) -> Value {
    let t0 = Instant::now();
    loop {
        let v = get(base, id).await;
        if v["status"] != "PENDING" && v["status"] != "TRIGGERED" {
            return v;
        }
        assert!(t0.elapsed() < GUARD, "export never ended: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The rows of the checkpoint each log line of `p` says it continued from.
fn continued_from(p: &Proc, id: &str) -> Vec<i64> {
    p.log_lines()
        .iter()
        .filter(|l| {
            l["message"] == "continuing the export from its last checkpoint" && l["export_id"] == id
        })
        .filter_map(|l| l["rows"].as_i64())
        .collect()
}

async fn download(app: &TestApp, v: &Value) -> Vec<u8> {
    app.download(v["path"].as_str().unwrap()).await
}

/// Kill the worker running `id` twice (once `first` parts are committed,
/// then, after it continued, once `second` are), finish with a third:
/// returns the finished export and the checkpoint rows each restart began
/// at.
async fn interrupted_twice(
    app: &TestApp,
    dir: &std::path::Path,
    base: &str,
    id: &str,
    (first, second): (i64, i64),
) -> (Value, Vec<i64>) {
    let mut w1 = worker(app, dir, &format!("{id}-w1"), "1");
    wait_parts(id, first).await;
    w1.kill9();
    let r1 = int(&record(id).await, &["checkpoint", "rows"]);
    assert!(r1 > 0);
    let mut w2 = worker(app, dir, &format!("{id}-w2"), "1");
    // The second attempt began at the first checkpoint and went on.
    let t0 = Instant::now();
    loop {
        let d = record(id).await;
        if int(&d, &["progress", "resumedFromRow"]) == r1
            && int(&d, &["checkpoint", "partNumber"]) >= second
        {
            break;
        }
        assert!(
            t0.elapsed() < GUARD,
            "second attempt never reached {second} parts: {d}\n{}",
            w2.stdout_text()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    w2.kill9();
    let r2 = int(&record(id).await, &["checkpoint", "rows"]);
    assert!(r2 >= r1, "{r2} after {r1}");
    let w3 = worker(app, dir, &format!("{id}-w3"), "1");
    let v = wait_done(base, id).await;
    assert_eq!(v["status"], "FINISHED", "{v}");
    assert_eq!(
        continued_from(&w2, id),
        vec![r1],
        "the second attempt's start"
    );
    assert_eq!(
        continued_from(&w3, id),
        vec![r2],
        "the third attempt's start"
    );
    assert_eq!(v["progress"]["resumedFromRow"].as_i64(), Some(r2), "{v}");
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", w3_port(&w3).await))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == format!("vf_export_resumed_rows_total {r2}")),
        "{metrics}"
    );
    drop(w3);
    (v, vec![r1, r2])
}

async fn w3_port(p: &Proc) -> u16 {
    // `Proc::port` needs `&mut`; read the listening line directly.
    for l in p.log_lines() {
        if l["message"] == "listening" {
            return l["port"].as_u64().unwrap() as u16;
        }
    }
    panic!("no listening line");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_killed_twice_ends_byte_identical_plain_and_gzip() {
    let _one = ONE_AT_A_TIME.lock().await;
    let app = TestApp::spawn_with(&[("worker-concurrency", "0")]).await;
    seeded().await;
    let dir = tempfile::tempdir().unwrap();
    let reference = reference(&app, dir.path()).await;
    let (_api, base) = api(&app, dir.path()).await;

    // Plain: killed twice, the object is the reference, byte for byte.
    let id = post(
        &base,
        json!({ "exportType": "entries", "dateKey": "kill-plain" }),
    )
    .await;
    let (v, starts) = interrupted_twice(&app, dir.path(), &base, &id, (2, 4)).await;
    assert_eq!(v["count"], ROWS);
    let plain = download(&app, &v).await;
    assert_eq!(hex::encode(sha2::Sha256::digest(&plain)), reference);
    assert_eq!(
        v["sha256"],
        json!(reference),
        "the recorded digest survived the hand-backs"
    );
    println!("plain: killed at checkpoints of {starts:?} rows; {} bytes, sha256 = the uninterrupted export's", plain.len());

    // gzip: an uninterrupted gzip export, then one killed twice: the same
    // bytes (each part a whole gzip member), and gunzip gives the plain export.
    let ref_id = post(
        &base,
        json!({ "exportType": "entries", "dateKey": "ref-gzip", "compression": "gzip" }),
    )
    .await;
    let w = worker(&app, dir.path(), "gz-ref", "1");
    let gz_ref = wait_done(&base, &ref_id).await;
    assert_eq!(gz_ref["status"], "FINISHED", "{gz_ref}");
    drop(w);
    let id = post(
        &base,
        json!({ "exportType": "entries", "dateKey": "kill-gzip", "compression": "gzip" }),
    )
    .await;
    // Gzip shrinks the 150,000 rows to about 1.3 parts of 5 MiB: the first
    // worker dies after the first part, the second just after it took the
    // export up from there.
    let (v, starts) = interrupted_twice(&app, dir.path(), &base, &id, (1, 1)).await;
    let gz = download(&app, &v).await;
    assert_eq!(
        v["sha256"], gz_ref["sha256"],
        "byte-identical to the uninterrupted gzip export"
    );
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&gz)),
        gz_ref["sha256"].as_str().unwrap()
    );
    let mut text = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&gz[..]), &mut text).unwrap();
    assert_eq!(text, plain, "gunzip of the object = the plain export");
    println!(
        "gzip: killed at checkpoints of {starts:?} rows; {} bytes",
        gz.len()
    );
    assert_eq!(app.open_uploads(&app.buckets.exports).await, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_two_running_exports_back_at_their_next_part_boundary() {
    let _one = ONE_AT_A_TIME.lock().await;
    let app = TestApp::spawn_with(&[("worker-concurrency", "0")]).await;
    seeded().await;
    let dir = tempfile::tempdir().unwrap();
    let reference = reference(&app, dir.path()).await;
    let (_api, base) = api(&app, dir.path()).await;
    let a = post(
        &base,
        json!({ "exportType": "entries", "dateKey": "term-a" }),
    )
    .await;
    let b = post(
        &base,
        json!({ "exportType": "entries", "dateKey": "term-b" }),
    )
    .await;
    let mut busy = worker(&app, dir.path(), "busy", "2");
    wait_parts(&a, 1).await;
    wait_parts(&b, 1).await;
    busy.term();
    let t0 = Instant::now();
    // A guard, not a measurement: the drain waits for one part at most.
    let status = busy.wait_exit(Duration::from_secs(15)).await;
    let drain = t0.elapsed();
    assert_eq!(status.code(), Some(0), "{}", busy.stderr_text());
    for id in [&a, &b] {
        let d = record(id).await;
        assert_eq!(d.get_str("status"), Ok("PENDING"), "{d}");
        assert_eq!(int(&d, &["attempts"]), 0, "a drain does not count: {d}");
        assert!(
            d.get("checkpoint").is_some() && d.get("upload").is_some(),
            "kept for the next attempt: {d}"
        );
        assert!(d.get("lease").is_none(), "{d}");
    }
    let next = worker(&app, dir.path(), "next", "2");
    for id in [&a, &b] {
        let v = wait_done(&base, id).await;
        assert_eq!(v["status"], "FINISHED", "{v}");
        assert_eq!(v["sha256"], json!(reference), "byte-identical: {v}");
        assert!(
            v["progress"]["resumedFromRow"].as_i64().unwrap_or(0) > 0,
            "{v}"
        );
        assert_eq!(continued_from(&next, id).len(), 1);
    }
    println!("SIGTERM with two exports running: exit 0 after {drain:?}");
    assert_eq!(app.open_uploads(&app.buckets.exports).await, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_whose_upload_was_aborted_starts_again_and_ends_exact() {
    let _one = ONE_AT_A_TIME.lock().await;
    let app = TestApp::spawn_with(&[("worker-concurrency", "0")]).await;
    seeded().await;
    let dir = tempfile::tempdir().unwrap();
    let reference = reference(&app, dir.path()).await;
    let (_api, base) = api(&app, dir.path()).await;
    let id = post(
        &base,
        json!({ "exportType": "entries", "dateKey": "lost-upload" }),
    )
    .await;
    let mut w1 = worker(&app, dir.path(), "lost-w1", "1");
    wait_parts(&id, 2).await;
    w1.kill9();
    // The bucket's lifecycle rule (or an operator) aborts the upload.
    let d = record(&id).await;
    let up = d.get_document("upload").unwrap();
    app.s3
        .abort_multipart_upload()
        .bucket(up.get_str("bucket").unwrap())
        .key(up.get_str("key").unwrap())
        .upload_id(up.get_str("uploadId").unwrap())
        .send()
        .await
        .unwrap();
    let w2 = worker(&app, dir.path(), "lost-w2", "1");
    let v = wait_done(&base, &id).await;
    assert_eq!(v["status"], "FINISHED", "{v}");
    assert_eq!(v["count"], ROWS);
    assert_eq!(v["sha256"], json!(reference), "{v}");
    assert_eq!(v["progress"]["resumedFromRow"], 0, "started again: {v}");
    assert!(
        w2.log_lines().iter().any(
            |l| l["message"] == "the checkpoint cannot be continued: starting the export again"
        ),
        "{}",
        w2.stdout_text()
    );
    assert_eq!(app.open_uploads(&app.buckets.exports).await, 0);
    app.stop().await;
}
