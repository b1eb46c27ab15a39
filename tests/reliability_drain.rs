//! Graceful drain of exports that cannot be continued from a checkpoint
//! (a ZIP, here `promoterEmailOptIn`), through the real signal path:
//! SIGTERM to a spawned `vf-export serve`. Either the in-flight export
//! finishes within DRAIN_TIMEOUT_SECS, or it is handed back to the queue
//! (PENDING, attempt not counted, upload aborted) for another worker to
//! start again. Exit 0 both ways. (Single-CSV exports are handed back at
//! their next part boundary instead: `tests/reliability_resume.rs`.)

mod common;

use std::time::{Duration, Instant};

use common::procs::{
    assert_handed_back, csv_records, env_for, export_doc, post_export, rows_written, seed, Proc,
};
use common::TestApp;
use mongodb::bson::{doc, Document};
use serde_json::{json, Value};

const ENTRIES: u64 = 30_000;
const GUARD: Duration = Duration::from_secs(90);

/// Wait until the export is TRIGGERED, its upload open and rows flowing.
async fn wait_running(app: &TestApp, id: &str) -> Document {
    let t0 = Instant::now();
    loop {
        let d = export_doc(app, id).await;
        if d.get_str("status") == Ok("TRIGGERED")
            && d.get("upload").is_some()
            && rows_written(&d) > 0
        {
            return d;
        }
        assert!(
            d.get_str("status") != Ok("FINISHED"),
            "finished too soon: {d}"
        );
        assert!(t0.elapsed() < GUARD, "export never ran: {d}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Open the test's own connection before the stand-in gets busy.
async fn warm_up(app: &TestApp) {
    app.db
        .collection::<Document>("exports")
        .find_one(doc! {})
        .await
        .unwrap();
}

/// Every entry of the campaign opted in to one promoter: the ZIP export
/// then holds every entry, as one CSV.
async fn opt_in_everyone(app: &TestApp, cid: &str) {
    let db = &app.db;
    db.collection::<Document>("promoters")
        .insert_one(doc! { "_id": "p1", "name": "Promoter One" })
        .await
        .unwrap();
    db.collection::<Document>("campaigns")
        .update_one(
            doc! { "_id": cid },
            doc! { "$set": { "promoters": ["p1"] } },
        )
        .await
        .unwrap();
    db.collection::<Document>("entries")
        .update_many(
            doc! { "_id.campaign_id": cid },
            doc! { "$set": { "fields.promoterOptIns": ["p1"] } },
        )
        .await
        .unwrap();
}

/// Data rows of the single CSV in a ZIP.
fn zip_rows(body: &[u8]) -> u64 {
    let mut zip = zip_reader(body);
    let mut text = Vec::new();
    std::io::Read::read_to_end(&mut zip, &mut text).unwrap();
    csv_records(&text) as u64 - 1
}

/// The first entry of a ZIP (stored or deflated), read with flate2.
fn zip_reader(body: &[u8]) -> impl std::io::Read + '_ {
    // Local file header: signature, then fixed fields; sizes may be in a
    // data descriptor (streamed), so read the deflate stream to its end.
    assert_eq!(&body[..4], b"PK\x03\x04", "a ZIP");
    let name_len = u16::from_le_bytes([body[26], body[27]]) as usize;
    let extra_len = u16::from_le_bytes([body[28], body[29]]) as usize;
    let method = u16::from_le_bytes([body[8], body[9]]);
    assert_eq!(method, 8, "deflated");
    flate2::read::DeflateDecoder::new(&body[30 + name_len + extra_len..])
}

/// SIGTERM while an export runs: /heartbeat turns 503 (error shape), the
/// queued export is not claimed, the running one finishes, exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_running_export_finish() {
    let app = TestApp::spawn_with(&[("worker-concurrency", "0")]).await;
    let cid = "drain1";
    seed(&app, cid, ENTRIES, 4).await;
    opt_in_everyone(&app, cid).await;
    warm_up(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let env = env_for(
        &app,
        &[
            ("WORKER_CONCURRENCY", "1"),
            ("DRAIN_TIMEOUT_SECS", "120"),
            ("S3_PART_SIZE_MIB", "5"),
        ],
    );
    let mut serve = Proc::spawn("serve", &env, dir.path(), "serve");
    let base = serve.base().await;
    let http = reqwest::Client::new();
    let hb = format!("{base}/heartbeat");
    assert_eq!(http.get(&hb).send().await.unwrap().status(), 200);

    let running = post_export(
        &http,
        &base,
        cid,
        json!({ "exportType": "promoterEmailOptIn" }),
    )
    .await;
    wait_running(&app, &running).await;
    // Queued behind the running one (one slot): must stay queued.
    let queued = post_export(
        &http,
        &base,
        cid,
        json!({ "exportType": "entries", "dateKey": "1" }),
    )
    .await;

    serve.term();
    let t0 = Instant::now();
    loop {
        let r = http.get(&hb).send().await.unwrap();
        if r.status() == 503 {
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["error"]["status"], 503, "{v}");
            assert!(v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()));
            break;
        }
        assert!(t0.elapsed() < GUARD, "heartbeat never answered 503");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The export is still running while the heartbeat says 503.
    assert_eq!(
        export_doc(&app, &running).await.get_str("status"),
        Ok("TRIGGERED")
    );

    let status = serve.wait_exit(Duration::from_secs(150)).await;
    assert_eq!(status.code(), Some(0), "{}", serve.stderr_text());
    let v = app.get_export(cid, &running).await;
    assert_eq!(v["status"], "FINISHED", "{v}");
    assert_eq!(v["count"], ENTRIES);
    let body = app.download(v["path"].as_str().unwrap()).await;
    assert_eq!(zip_rows(&body), ENTRIES);
    // No new claim during the drain.
    let q = export_doc(&app, &queued).await;
    assert_eq!(q.get_str("status"), Ok("PENDING"), "{q}");
    assert_eq!(q.get_i32("attempts"), Ok(0));
    assert_eq!(app.open_uploads(&app.buckets.exports).await, 0);
    let logs = serve.stdout_text();
    assert!(logs.contains("\"draining\""), "{logs}");
    app.stop().await;
}

/// DRAIN_TIMEOUT_SECS=1 and a long export: it is handed back (PENDING,
/// attempt not counted, upload aborted, nothing under the key), exit 0;
/// another worker then finishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_after_the_drain_timeout_hands_the_export_back() {
    let app = TestApp::spawn_with(&[("worker-concurrency", "0")]).await;
    let cid = "drain2";
    seed(&app, cid, ENTRIES, 4).await;
    opt_in_everyone(&app, cid).await;
    warm_up(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let env = env_for(
        &app,
        &[
            ("WORKER_CONCURRENCY", "1"),
            ("DRAIN_TIMEOUT_SECS", "1"),
            ("S3_PART_SIZE_MIB", "5"),
        ],
    );
    let mut serve = Proc::spawn("serve", &env, dir.path(), "serve");
    let base = serve.base().await;
    let http = reqwest::Client::new();
    let id = post_export(
        &http,
        &base,
        cid,
        json!({ "exportType": "promoterEmailOptIn" }),
    )
    .await;
    let before = wait_running(&app, &id).await;
    assert_eq!(before.get_i32("attempts"), Ok(1));
    let upload_key = before
        .get_document("upload")
        .unwrap()
        .get_str("key")
        .unwrap()
        .to_string();

    serve.term();
    let status = serve.wait_exit(Duration::from_secs(60)).await;
    assert_eq!(status.code(), Some(0), "{}", serve.stderr_text());
    let d = export_doc(&app, &id).await;
    assert!(
        rows_written(&d) < ENTRIES as i64,
        "the export finished before the drain timeout: make it longer"
    );
    assert_handed_back(&app, &d, &upload_key).await;
    let logs = serve.stdout_text();
    assert!(logs.contains("handed back to the queue"), "{logs}");

    // Another worker resumes and finishes it.
    let next = app.sibling(&[("worker-concurrency", "1")]).await;
    let v = next.wait_done(cid, &id, GUARD).await;
    assert_eq!(v["status"], "FINISHED", "{v}");
    assert_eq!(v["count"], ENTRIES);
    assert_eq!(export_doc(&app, &id).await.get_i32("attempts"), Ok(1));
    let body = app.download(v["path"].as_str().unwrap()).await;
    assert_eq!(zip_rows(&body), ENTRIES);
    assert_eq!(app.open_uploads(&app.buckets.exports).await, 0);
    next.stop().await;
    app.stop().await;
}
