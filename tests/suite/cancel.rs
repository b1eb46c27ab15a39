//! Cancel, through `DELETE /campaigns/:campaignId/exports/:exportId` and
//! `vf-export exports cancel`: a PENDING export becomes FAILED
//! (`Cancelled`); a running one stops, its upload aborted, no object left;
//! a final one is a 409 and stays as it was; a repeat is a no-op.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::common::{faults, procs, TestApp};
use crate::legacy_records::{out, vf};
use mongodb::bson::{doc, oid::ObjectId, DateTime, Document};
use serde_json::{json, Value};

/// Hang guard for waits; no assertion depends on how fast anything runs.
const GUARD: Duration = Duration::from_secs(120);

/// `DELETE` the export as a reporter of its campaign.
pub async fn cancel(app: &TestApp, cid: &str, id: &str) -> (u16, Value) {
    let r = app
        .http
        .delete(format!("{}/campaigns/{cid}/exports/{id}", app.base))
        .bearer_auth(app.reporter(cid))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn assert_cancelled(v: &Value) {
    assert_eq!(v["status"], "FAILED", "{v}");
    assert_eq!(v["error"]["payload"]["code"], "Cancelled", "{v}");
    assert!(v["date"]["failed"].is_string(), "{v}");
    assert!(v.get("path").is_none(), "{v}");
}

/// The cancelled record keeps nothing of an active export.
fn assert_inactive(d: &Document) {
    for k in ["activeKey", "lease", "upload"] {
        assert!(d.get(k).is_none(), "{k} left: {d}");
    }
}

#[tokio::test]
async fn a_pending_export_is_cancelled_over_http_and_the_cli_and_a_repeat_changes_nothing() {
    let app = TestApp::spawn_with(&[("worker-concurrency", "0")]).await;
    let cid = "cx-c1";
    procs::seed(&app, cid, 5, 1).await;
    let id_of = |v: Value| v["id"].as_str().unwrap().to_string();

    let r = app
        .post_export(cid, json!({ "exportType": "entries" }))
        .await;
    let id = id_of(r.json().await.unwrap());
    let (status, v) = cancel(&app, cid, &id).await;
    assert_eq!(status, 200, "{v}");
    assert_cancelled(&v);
    assert_eq!(v["error"]["payload"]["cancelledBy"], "u42", "{v}");
    assert_inactive(&app.export_doc(ObjectId::parse_str(&id).unwrap()).await);
    assert_eq!(app.get_export(cid, &id).await, v);
    // Idempotent: the same answer, nothing changed.
    let before = app.export_doc(ObjectId::parse_str(&id).unwrap()).await;
    let (status, again) = cancel(&app, cid, &id).await;
    assert_eq!((status, &again), (200, &v));
    assert_eq!(
        app.export_doc(ObjectId::parse_str(&id).unwrap()).await,
        before
    );
    // Its dedupe key is free: the same request queues a new export.
    let r = app
        .post_export(cid, json!({ "exportType": "entries" }))
        .await;
    assert_eq!(r.status(), 201);

    // The CLI, on another one.
    let r = app
        .post_export(cid, json!({ "exportType": "fanlist" }))
        .await;
    let id2 = id_of(r.json().await.unwrap());
    let o = vf(&app, &["exports", "cancel", &id2]);
    let (stdout, stderr) = out(&o);
    assert!(o.status.success(), "{stderr}");
    assert!(stdout.contains(&format!("cancelled {id2}")), "{stdout}");
    let v = app.get_export(cid, &id2).await;
    assert_cancelled(&v);
    assert_eq!(v["error"]["payload"]["cancelledBy"], "cli", "{v}");
    let o = vf(&app, &["exports", "cancel", &id2, "--campaign", cid]);
    assert!(o.status.success());
    assert!(out(&o).0.contains("already cancelled"));

    // Unknown, another campaign's, not an id.
    let unknown = ObjectId::new().to_hex();
    assert_eq!(cancel(&app, cid, &unknown).await.0, 404);
    procs::seed(&app, "cx-other", 1, 1).await;
    let (status, v) = cancel(&app, "cx-other", &id2).await;
    assert_eq!(status, 404, "{v}");
    let (status, v) = cancel(&app, cid, "not-an-id").await;
    assert_eq!(
        (status, v["error"]["payload"]["field"].as_str()),
        (400, Some("exportId"))
    );
    for args in [
        &["exports", "cancel", &unknown][..],
        &["exports", "cancel", &id2, "--campaign", "cx-other"][..],
    ] {
        let o = vf(&app, args);
        assert!(!o.status.success(), "{args:?}");
        assert!(out(&o).1.contains("not found"), "{args:?}: {:?}", out(&o));
    }
    app.stop().await;
}

#[tokio::test]
async fn a_final_export_is_a_409_and_stays_as_it_was() {
    let app = TestApp::spawn_with(&[("worker-concurrency", "0")]).await;
    let cid = "cx-c2";
    procs::seed(&app, cid, 1, 1).await;
    let coll = app.db.collection::<Document>("exports");
    for status in ["FINISHED", "FAILED", "EXPIRED"] {
        let id = ObjectId::new();
        coll.insert_one(doc! {
            "_id": id, "campaignId": cid, "campaignName": "x", "exportType": "entries", "status": status,
            "date": { "created": DateTime::now() }, "key": "k.csv", "count": 1,
            "error": if status == "FAILED" { doc! { "message": "boom", "payload": null } } else { Document::new() },
        })
        .await
        .unwrap();
        let before = app.export_doc(id).await;
        let (code, v) = cancel(&app, cid, &id.to_hex()).await;
        assert_eq!(code, 409, "{status}: {v}");
        assert_eq!(v["error"]["payload"]["code"], "ExportNotActive", "{v}");
        assert_eq!(v["error"]["payload"]["status"], status, "{v}");
        let o = vf(&app, &["exports", "cancel", &id.to_hex()]);
        assert!(!o.status.success());
        assert!(out(&o).1.contains(&format!("is {status}")), "{:?}", out(&o));
        assert_eq!(app.export_doc(id).await, before, "{status} changed");
    }
    app.stop().await;
}

/// A TRIGGERED export whose worker (elsewhere, alive) holds the lease, with
/// an open multipart upload and one part written; `completed` also puts an
/// object at its key, as a worker that completed the upload but had not
/// recorded the result yet would leave.
async fn running_elsewhere(
    app: &TestApp,
    cid: &str,
    ty: &str,
    completed: bool,
) -> (ObjectId, String) {
    let id = ObjectId::new();
    let key = format!("campaigns/{cid}/{ty}/{}.csv", id.to_hex());
    let bucket = app.buckets.exports.clone();
    let up = app
        .s3
        .create_multipart_upload()
        .bucket(&bucket)
        .key(&key)
        .send()
        .await
        .unwrap();
    let upload_id = up.upload_id().unwrap().to_string();
    app.s3
        .upload_part()
        .bucket(&bucket)
        .key(&key)
        .upload_id(&upload_id)
        .part_number(1)
        .body(aws_sdk_s3::primitives::ByteStream::from_static(b"id\n1\n"))
        .send()
        .await
        .unwrap();
    if completed {
        app.s3
            .put_object()
            .bucket(&bucket)
            .key(&key)
            .body(aws_sdk_s3::primitives::ByteStream::from_static(b"id\n1\n"))
            .send()
            .await
            .unwrap();
    }
    let now = DateTime::now().timestamp_millis();
    app.db
        .collection::<Document>("exports")
        .insert_one(doc! {
            "_id": id, "campaignId": cid, "campaignName": "x", "exportType": ty, "status": "TRIGGERED",
            "requesterUserId": "u42", "correlation": "c", "dateKey": null, "includeAllMarkets": false,
            "date": { "created": DateTime::now(), "triggered": DateTime::now(), "finished": null, "failed": null, "expired": null },
            "key": null, "count": null, "error": null, "activeKey": format!("{cid}|{ty}|"), "attempts": 1,
            "lease": { "owner": "worker-elsewhere", "expiresAtMs": now + 600_000 },
            "upload": { "bucket": &bucket, "key": &key, "uploadId": upload_id },
            "progress": { "rowsWritten": 1i64, "bytesWritten": 5i64, "expectedRows": null },
        })
        .await
        .unwrap();
    (id, key)
}

#[tokio::test]
async fn a_running_export_is_cancelled_its_upload_aborted_and_no_object_left() {
    let app = TestApp::spawn_with(&[("worker-concurrency", "0")]).await;
    let cid = "cx-c3";
    procs::seed(&app, cid, 1, 1).await;
    let (http_id, _) = running_elsewhere(&app, cid, "entries", false).await;
    let (cli_id, _) = running_elsewhere(&app, cid, "fanlist", true).await;
    assert_eq!(app.open_uploads(&app.buckets.exports).await, 2);

    let (status, v) = cancel(&app, cid, &http_id.to_hex()).await;
    assert_eq!(status, 200, "{v}");
    assert_cancelled(&v);
    let o = vf(&app, &["exports", "cancel", &cli_id.to_hex()]);
    assert!(o.status.success(), "{:?}", out(&o));

    // Nothing left in S3: no open upload, no object (not even the one the
    // completed upload left).
    assert_eq!(app.open_uploads(&app.buckets.exports).await, 0);
    assert!(app.object_keys(&app.buckets.exports).await.is_empty());
    let coll = app.db.collection::<Document>("exports");
    for id in [http_id, cli_id] {
        let d = app.export_doc(id).await;
        assert_eq!(d.get_str("status").unwrap(), "FAILED");
        assert_inactive(&d);
        // The owner's renewal (conditional on TRIGGERED and its lease) no
        // longer matches: its run stops as for a lost lease.
        let renewal = doc! { "_id": id, "status": "TRIGGERED", "lease.owner": "worker-elsewhere" };
        assert!(coll.find_one(renewal).await.unwrap().is_none());
    }
    app.stop().await;
}

/// Holds requests at S3 until opened (on a multi-thread runtime, the held
/// proxy task gives its thread up to the others).
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
    arrived: AtomicBool,
    /// Requests seen after the gate opened: (method, path and query).
    after: Mutex<Vec<String>>,
}

impl Gate {
    fn hold(&self) {
        self.arrived.store(true, Ordering::SeqCst);
        tokio::task::block_in_place(|| {
            let mut open = self.open.lock().unwrap();
            while !*open {
                open = self.opened.wait(open).unwrap();
            }
        });
    }
    fn release(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

async fn until(what: &str, mut ok: impl AsyncFnMut() -> bool) {
    let t0 = Instant::now();
    while !ok().await {
        assert!(t0.elapsed() < GUARD, "still waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_export_stops_its_worker_and_leaves_no_upload_and_no_object() {
    let Some(upstream) = faults::proxy_upstream() else {
        eprintln!("skipped: needs a plain-HTTP S3 endpoint to put the holding proxy in front of");
        return;
    };
    let gate = Arc::new(Gate::default());
    let g = gate.clone();
    let proxy = faults::forward(upstream, move |r| {
        if *g.open.lock().unwrap() {
            g.after
                .lock()
                .unwrap()
                .push(format!("{} {}", r.method, r.pq));
        } else if r.method == axum::http::Method::PUT && r.pq.contains("partNumber=") {
            g.hold();
        }
        None
    })
    .await;
    let app = TestApp::spawn_with(&[("aws-endpoint-url", &proxy)]).await;
    let cid = "cx-c4";
    procs::seed(&app, cid, 30, 1).await;
    let id = app
        .queue_export(cid, json!({ "exportType": "entries" }))
        .await;
    // The worker is writing its object: its part is held at S3.
    until("the export's part upload", async || {
        gate.arrived.load(Ordering::SeqCst)
    })
    .await;
    let d = app.export_doc(ObjectId::parse_str(&id).unwrap()).await;
    assert_eq!(d.get_str("status").unwrap(), "TRIGGERED", "{d}");
    assert!(d.get_document("upload").is_ok(), "{d}");

    let (status, v) = cancel(&app, cid, &id).await;
    assert_eq!(status, 200, "{v}");
    assert_cancelled(&v);
    // The worker notices at its next renewal and its run ends.
    let metric = async || {
        let m = app
            .http
            .get(format!("{}/metrics", app.base))
            .send()
            .await
            .unwrap();
        m.text()
            .await
            .unwrap()
            .contains("\nvf_export_in_flight 0\n")
    };
    until("the worker to stop", metric).await;
    gate.release();
    // The held part reaches S3 after the cancel aborted the upload; the
    // stopped run's upload task then ends, completing (POST) or aborting
    // (DELETE) the upload: after that nothing may be left.
    until("the held upload to end", async || {
        gate.after
            .lock()
            .unwrap()
            .iter()
            .any(|r| (r.starts_with("DELETE") || r.starts_with("POST")) && r.contains("uploadId="))
    })
    .await;
    assert_eq!(app.open_uploads(&app.buckets.exports).await, 0);
    assert!(app.object_keys(&app.buckets.exports).await.is_empty());
    let v = app.get_export(cid, &id).await;
    assert_cancelled(&v);
    // No object named; `count` keeps the preliminary count it held while
    // TRIGGERED (as a failed export's does).
    assert!(v["key"].is_null(), "{v}");
    assert_eq!(v["count"], v["progress"]["expectedRows"], "{v}");
    app.stop().await;
}
