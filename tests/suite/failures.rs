//! Failure semantics (spec: exports.md, Failures): a permanent S3 refusal
//! fails at once with its named code; a passing one hands the export back
//! with `retryAt`, and no claim comes before it; a panic fails its export
//! with `InternalError` and leaves the process and its gauges right;
//! markets removed after the POST fail the export (`NoMarketsFound`);
//! `count` holds the preliminary count while TRIGGERED.

use std::sync::Arc;
use std::time::Duration;

use mongodb::bson::{doc, oid::ObjectId, Document};
use serde_json::json;
use vf_export::worker::{Hooks, Stage};

use crate::common::faults::{proxy, proxy_upstream, Rule};
use crate::common::seed::{run, seed, CID, WAIT};
use crate::common::TestApp;

async fn raw(app: &TestApp, id: &str) -> Document {
    app.db
        .collection::<Document>("exports")
        .find_one(doc! { "_id": ObjectId::parse_str(id).unwrap() })
        .await
        .unwrap()
        .unwrap()
}

fn attempts(d: &Document) -> i64 {
    d.get_i32("attempts")
        .map(i64::from)
        .or_else(|_| d.get_i64("attempts"))
        .unwrap()
}

/// CreateMultipartUpload: `POST /bucket/key?uploads`.
fn is_create_upload(pq: &str, _: &[u8]) -> bool {
    pq.ends_with("?uploads") || pq.contains("?uploads&") || pq.contains("&uploads")
}

const S3_ACCESS_DENIED: &str =
    "<Error><Code>AccessDenied</Code><Message>Access Denied (injected)</Message></Error>";
const S3_SLOW_DOWN: &str =
    "<Error><Code>SlowDown</Code><Message>Please reduce your request rate (injected)</Message></Error>";

#[tokio::test]
async fn a_missing_bucket_fails_at_once_as_destination_missing() {
    let app = TestApp::spawn_with(&[("max-attempts", "3")]).await;
    seed(&app).await;
    app.s3
        .delete_bucket()
        .bucket(&app.buckets.exports)
        .send()
        .await
        .unwrap();
    let done = run(&app, CID, json!({ "exportType": "codes" })).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    assert_eq!(done["error"]["payload"]["code"], "DestinationMissing");
    assert_eq!(
        done["error"]["payload"]["bucket"],
        json!(app.buckets.exports)
    );
    let msg = done["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("NoSuchBucket") && msg.contains(&app.buckets.exports),
        "{msg}"
    );
    // Not retried: one attempt.
    assert_eq!(attempts(&raw(&app, done["id"].as_str().unwrap()).await), 1);
    app.stop().await;
}

#[tokio::test]
async fn access_denied_fails_at_once_as_destination_denied() {
    let Some(upstream) = proxy_upstream() else {
        println!("skipped: needs a plain-HTTP S3 endpoint to put the fault proxy in front of");
        return;
    };
    let endpoint = proxy(
        upstream,
        vec![Rule {
            when: is_create_upload,
            status: 403,
            body: S3_ACCESS_DENIED,
        }],
    )
    .await;
    let app = TestApp::spawn_with(&[("aws-endpoint-url", &endpoint), ("max-attempts", "3")]).await;
    seed(&app).await;
    let done = run(&app, CID, json!({ "exportType": "codes" })).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    assert_eq!(done["error"]["payload"]["code"], "DestinationDenied");
    assert_eq!(done["error"]["payload"]["s3Code"], "AccessDenied");
    assert_eq!(
        done["error"]["payload"]["bucket"],
        json!(app.buckets.exports)
    );
    assert_eq!(attempts(&raw(&app, done["id"].as_str().unwrap()).await), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_passing_failure_is_retried_after_its_backoff_and_not_before() {
    let Some(upstream) = proxy_upstream() else {
        println!("skipped: needs a plain-HTTP S3 endpoint to put the fault proxy in front of");
        return;
    };
    let endpoint = proxy(
        upstream,
        vec![Rule {
            when: is_create_upload,
            status: 503,
            body: S3_SLOW_DOWN,
        }],
    )
    .await;
    let app = TestApp::spawn_with(&[
        ("aws-endpoint-url", &endpoint),
        ("max-attempts", "2"),
        ("retry-backoff-secs", "2"),
    ])
    .await;
    seed(&app).await;
    let id = app
        .queue_export(CID, json!({ "exportType": "codes" }))
        .await;
    // Handed back: PENDING, the error so far, and when it may run again.
    let t0 = std::time::Instant::now();
    let (pending, retry_at) = loop {
        let v = app.get_export(CID, &id).await;
        if let Some(at) = v["retryAt"].as_str() {
            let at = chrono::DateTime::parse_from_rfc3339(at).unwrap();
            break (v, at.timestamp_millis());
        }
        assert_ne!(v["status"], "FAILED", "failed at once: {v}");
        assert!(t0.elapsed() < WAIT, "never handed back: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(pending["status"], "PENDING", "{pending}");
    assert!(
        pending["error"]["message"]
            .as_str()
            .unwrap()
            .contains("SlowDown"),
        "{pending}"
    );
    let handed_back_at = chrono::Utc::now().timestamp_millis();
    assert!(
        retry_at > handed_back_at,
        "retryAt {retry_at} is not in the future"
    );
    // No claim before retryAt: while it has not come, the record stays
    // PENDING after its one attempt.
    while chrono::Utc::now().timestamp_millis() < retry_at - 100 {
        let d = raw(&app, &id).await;
        assert_eq!(
            d.get_str("status").unwrap(),
            "PENDING",
            "claimed early: {d}"
        );
        assert_eq!(attempts(&d), 1, "claimed early: {d}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Then the second (and last) attempt runs, no earlier than retryAt.
    let done = app.wait_done(CID, &id, WAIT).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    let d = raw(&app, &id).await;
    assert_eq!(attempts(&d), 2);
    let triggered =
        chrono::DateTime::parse_from_rfc3339(done["date"]["triggered"].as_str().unwrap())
            .unwrap()
            .timestamp_millis();
    assert!(
        triggered >= retry_at,
        "claimed at {triggered}, before {retry_at}"
    );
    assert!(done.get("retryAt").is_none(), "{done}");
    app.stop().await;
}

#[tokio::test]
async fn a_panicking_export_fails_with_internal_error_and_the_process_carries_on() {
    let base = TestApp::spawn_with(&[("worker-concurrency", "0")]).await;
    seed(&base).await;
    let hooks = Hooks {
        at: Some(Arc::new(|stage, rec| {
            if stage == Stage::Claimed && rec.export_type == "fanlist" {
                panic!("injected by the test");
            }
            Box::pin(async {})
        })),
    };
    let app = base.sibling_with_hooks(&[], hooks).await;
    let done = run(&app, CID, json!({ "exportType": "fanlist" })).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    assert_eq!(done["error"]["payload"]["code"], "InternalError");
    // The process is up and still exports.
    let ok = run(&app, CID, json!({ "exportType": "codes" })).await;
    assert_eq!(ok["status"], "FINISHED", "{ok}");
    let metrics = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.lines().any(|l| l == "vf_export_in_flight 0"),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l
            .starts_with("vf_export_exports_total{export_type=\"fanlist\",status=\"FAILED\"} 1")),
        "{metrics}"
    );
    app.stop().await;
    base.stop().await;
}

#[tokio::test]
async fn markets_removed_after_the_post_fail_the_export() {
    // No worker: the export waits while its campaign loses its markets.
    let app = TestApp::spawn_with(&[("worker-concurrency", "0")]).await;
    seed(&app).await;
    let id = app
        .queue_export(CID, json!({ "exportType": "entries" }))
        .await;
    app.db
        .collection::<Document>("markets")
        .delete_many(doc! { "campaignId": CID })
        .await
        .unwrap();
    let worker = app.sibling(&[]).await;
    let done = worker.wait_done(CID, &id, WAIT).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    assert_eq!(done["error"]["payload"]["code"], "NoMarketsFound");
    assert!(worker.object_keys(&worker.buckets.exports).await.is_empty());
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn count_holds_the_preliminary_count_while_triggered() {
    let base = TestApp::spawn_with(&[("worker-concurrency", "0")]).await;
    seed(&base).await;
    // The export is held after its count until the test has looked.
    let go = Arc::new(tokio::sync::Notify::new());
    let held = Arc::new(tokio::sync::Notify::new());
    let (g, h) = (go.clone(), held.clone());
    let hooks = Hooks {
        at: Some(Arc::new(move |stage, _| {
            let (g, h) = (g.clone(), h.clone());
            Box::pin(async move {
                if stage == Stage::Counted {
                    h.notify_one();
                    g.notified().await;
                }
            })
        })),
    };
    let id = base
        .queue_export(CID, json!({ "exportType": "entries" }))
        .await;
    let app = base.sibling_with_hooks(&[], hooks).await;
    tokio::time::timeout(WAIT, held.notified())
        .await
        .expect("never counted");
    let v = app.get_export(CID, &id).await;
    assert_eq!(v["status"], "TRIGGERED", "{v}");
    // As the original: `count` is the preliminary count while TRIGGERED.
    assert_eq!(v["progress"]["expectedRows"], 5, "{v}");
    assert_eq!(v["count"], 5, "{v}");
    go.notify_one();
    let done = app.wait_done(CID, &id, WAIT).await;
    assert_eq!(done["status"], "FINISHED", "{done}");
    assert_eq!(done["count"], done["progress"]["rowsWritten"], "{done}");
    app.stop().await;
    base.stop().await;
}

#[tokio::test]
async fn the_lease_is_renewed_while_the_export_is_still_counting() {
    let base = TestApp::spawn_with(&[("worker-concurrency", "0")]).await;
    seed(&base).await;
    let id = base
        .queue_export(CID, json!({ "exportType": "entries" }))
        .await;
    // The first attempt is held after its count for more than two leases,
    // as a slow count of a large campaign would hold it.
    let held = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let h = held.clone();
    let hooks = Hooks {
        at: Some(Arc::new(move |stage, _| {
            let first =
                stage == Stage::Counted && !h.swap(true, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move {
                if first {
                    tokio::time::sleep(Duration::from_secs(7)).await;
                }
            })
        })),
    };
    let slow = base.sibling_with_hooks(&[("lease-secs", "3")], hooks).await;
    // Held, then a second worker that would reclaim a lapsed lease.
    let t0 = std::time::Instant::now();
    while !held.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(t0.elapsed() < WAIT, "never counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let other = base.sibling(&[("lease-secs", "3")]).await;
    let done = slow.wait_done(CID, &id, WAIT).await;
    assert_eq!(done["status"], "FINISHED", "{done}");
    let d = raw(&base, &id).await;
    assert_eq!(
        attempts(&d),
        1,
        "the export was reclaimed while counting: {d}"
    );
    other.stop().await;
    slow.stop().await;
    base.stop().await;
}
