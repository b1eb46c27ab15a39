//! Dependency faults and idempotent completion:
//! - MongoDB dies mid-export (during the first batch, mid-stream, during
//!   the last market) and comes back: the process stays up, `/heartbeat`
//!   keeps answering, and the export ends FINISHED with exactly the seeded
//!   rows, each once, or FAILED with a reason; never a short FINISHED.
//! - `sts:AssumeRole` denied for a partner bucket: FAILED with a reason
//!   naming the role, never the credentials.
//! - A worker whose lease was taken over cannot overwrite the new owner's
//!   result (every owner write is conditional on the lease).

mod common;

use std::time::{Duration, Instant};

use common::faults::{proxy, proxy_upstream, DENY_ASSUME_ROLE};
use common::procs::{env_for, seed_into, Nx, Proc};
use common::{campaign_doc, insert, standins, token_with, unique, TestApp};
use mongodb::bson::{doc, oid::ObjectId, Bson, DateTime, Document};
use serde_json::{json, Value};
use vf_export::queue::{Finished, NewExport, Queue};
use vf_export::store::Store;

#[tokio::test]
async fn a_taken_over_lease_cannot_overwrite_the_new_owners_result() {
    let store = Store::connect(&standins().mongodb_uri, &unique("t_"))
        .await
        .unwrap();
    let q = Queue::new(store.clone());
    let (rec, created) = q
        .enqueue(&NewExport {
            campaign_id: "c1".into(),
            campaign_name: "Tour".into(),
            export_type: "entries".into(),
            requester_user_id: "u1".into(),
            correlation: "corr-1".into(),
            date_key: None,
            include_all_markets: false,
            compression: None,
        })
        .await
        .unwrap();
    assert!(created);
    let id = rec.id;
    // A claims with a lease that lapses at once (A "stalls").
    let (a_rec, reclaim) = q
        .claim("owner-a", Duration::from_millis(1), 5)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((a_rec.id, reclaim, a_rec.attempts), (id, false, 1));
    tokio::time::sleep(Duration::from_millis(50)).await;
    // B takes it over.
    let (b_rec, reclaim) = q
        .claim("owner-b", Duration::from_secs(60), 5)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((b_rec.id, reclaim, b_rec.attempts), (id, true, 2));

    // Every write of A is now refused.
    let lease = Duration::from_secs(60);
    assert!(!q.heartbeat(id, "owner-a", lease, 10, 10).await.unwrap());
    assert!(!q.set_expected_rows(id, "owner-a", Some(9)).await.unwrap());
    assert!(!q.record_upload(id, "owner-a", None).await.unwrap());
    assert!(!q.release(id, "owner-a", false, false).await.unwrap());
    assert!(!q
        .finish(id, "owner-a", &finished("a-key", 1, 1))
        .await
        .unwrap());
    assert!(!q.fail(id, "owner-a", "A failed", None, None).await.unwrap());
    // B's are not.
    assert!(q.heartbeat(id, "owner-b", lease, 5, 50).await.unwrap());
    assert!(q
        .finish(id, "owner-b", &finished("b-key", 7, 70))
        .await
        .unwrap());
    // After B finished, A still cannot touch it, nor can B fail it.
    assert!(!q
        .finish(id, "owner-a", &finished("a-key", 1, 1))
        .await
        .unwrap());
    assert!(!q.fail(id, "owner-a", "A failed", None, None).await.unwrap());
    assert!(!q.fail(id, "owner-b", "late", None, None).await.unwrap());
    assert!(!q.release(id, "owner-b", true, false).await.unwrap());
    let d = q.by_id(id).await.unwrap().unwrap();
    assert_eq!(d.status.as_str(), "FINISHED");
    assert_eq!(d.key, Some(Bson::String("b-key".into())));
    assert_eq!(d.count, Some(7));
    assert_eq!(d.attempts, 2);
    assert!(d.error.is_none() && d.lease.is_none() && d.active_key.is_none());
    // Nothing is left to claim.
    assert!(q
        .claim("owner-c", Duration::from_secs(60), 5)
        .await
        .unwrap()
        .is_none());
    let _ = store.db().drop().await;
}

fn finished(key: &str, rows: u64, bytes: u64) -> Finished {
    Finished {
        key: Bson::String(key.into()),
        rows,
        bytes,
        sha256: None,
        meta: Document::new(),
    }
}

async fn export_doc(db: &mongodb::Database, id: &str) -> Document {
    db.collection::<Document>("exports")
        .find_one(doc! { "_id": ObjectId::parse_str(id).unwrap() })
        .await
        .unwrap()
        .unwrap()
}

/// When, in an `entries` export over four markets, MongoDB is killed.
#[derive(Debug, Clone, Copy)]
enum Moment {
    /// As soon as the export is TRIGGERED: the count, or the first batch.
    FirstBatch,
    /// Rows flowing, in the first half of the markets.
    MidStream,
    /// Past three quarters of the rows: the last market.
    LastMarket,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_dies_during_the_first_batch() {
    mongodb_dies_and_comes_back(Moment::FirstBatch).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_dies_mid_stream() {
    mongodb_dies_and_comes_back(Moment::MidStream).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_dies_during_the_last_market() {
    mongodb_dies_and_comes_back(Moment::LastMarket).await
}

/// The first cell of every data row of a CSV/TSV body.
async fn first_column(body: &[u8], delimiter: u8) -> Vec<String> {
    use futures::StreamExt;
    let mut rdr = csv_async::AsyncReaderBuilder::new()
        .delimiter(delimiter)
        .create_reader(body);
    let mut out = Vec::new();
    let mut records = rdr.records();
    while let Some(r) = records.next().await {
        out.push(r.unwrap().get(0).unwrap_or_default().to_string());
    }
    out
}

fn rows_written(d: &Document) -> u64 {
    // Int32 or Int64: the stand-in does not keep the width.
    match d
        .get_document("progress")
        .ok()
        .and_then(|p| p.get("rowsWritten"))
    {
        Some(Bson::Int64(n)) => *n as u64,
        Some(Bson::Int32(n)) => *n as u64,
        _ => 0,
    }
}

/// MongoDB dies mid-export and comes back: the process stays up,
/// `/heartbeat` keeps answering, and the export ends FINISHED with exactly
/// the seeded rows, each once (the readers resume after their last key and
/// confirm every end), or FAILED with a reason. Never a short FINISHED.
async fn mongodb_dies_and_comes_back(moment: Moment) {
    if std::env::var("MONGODB_URI").is_ok_and(|u| !u.is_empty()) {
        println!("skipped: this test stops and restarts its own nx-27017; MONGODB_URI is set");
        return;
    }
    const ENTRIES: u64 = 20_000;
    let app = TestApp::spawn_with(&[("worker-concurrency", "0")]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut nx = Nx::start(&dir.path().join("mongo.sqlite"));
    let db_name = "faults";
    let cid = "mdown";
    seed_into(&nx.uri(), db_name, cid, ENTRIES, 4).await;
    let env = env_for(
        &app,
        &[
            ("MONGODB_URI", nx.uri().as_str()),
            ("MONGODB_DB", db_name),
            ("WORKER_CONCURRENCY", "1"),
            ("LEASE_SECS", "3"),
            ("S3_PART_SIZE_MIB", "5"),
            ("RETRY_BACKOFF_SECS", "1"),
        ],
    );
    let mut serve = Proc::spawn("serve", &env, dir.path(), "serve");
    let base = serve.base().await;
    let http = reqwest::Client::new();
    let tok = token_with("u1", &[(cid, &["REPORT"])], false, 3600);
    let r = http
        .post(format!("{base}/campaigns/{cid}/exports"))
        .bearer_auth(&tok)
        .json(&json!({ "exportType": "entries" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let db = mongodb::Client::with_uri_str(nx.uri())
        .await
        .unwrap()
        .database(db_name);
    // Wait for the moment.
    let t0 = Instant::now();
    let rows_at_kill = loop {
        let d = export_doc(&db, &id).await;
        let rows = rows_written(&d);
        let running = d.get_str("status") == Ok("TRIGGERED");
        let now = match moment {
            Moment::FirstBatch => running,
            Moment::MidStream => running && rows > 0 && rows < ENTRIES / 2,
            Moment::LastMarket => running && rows > ENTRIES * 3 / 4,
        };
        if now {
            break rows;
        }
        assert_ne!(
            d.get_str("status"),
            Ok("FINISHED"),
            "finished before the moment {moment:?}"
        );
        assert!(t0.elapsed() < Duration::from_secs(120), "never ran: {d}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    nx.kill9();
    // Down for longer than the lease: heartbeats answer all along.
    let hb = format!("{base}/heartbeat");
    let down = Instant::now();
    let mut beats = 0;
    while down.elapsed() < Duration::from_secs(5) {
        let r = http.get(&hb).send().await.unwrap();
        assert_eq!(r.status(), 200, "heartbeat while MongoDB is down");
        beats += 1;
        assert!(serve.exited().is_none(), "the process died with MongoDB");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    nx.restart();

    let t0 = Instant::now();
    let v = loop {
        let r = http
            .get(format!("{base}/campaigns/{cid}/exports/{id}"))
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            let v: Value = r.json().await.unwrap();
            if v["status"] != "PENDING" && v["status"] != "TRIGGERED" {
                break v;
            }
        }
        assert!(serve.exited().is_none(), "the process died");
        assert!(
            t0.elapsed() < Duration::from_secs(180),
            "export never ended after MongoDB came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    match v["status"].as_str().unwrap() {
        "FINISHED" => {
            let body = app.download(v["path"].as_str().unwrap()).await;
            // Exactly the seeded entries, each once.
            assert_eq!(v["count"].as_u64(), Some(ENTRIES), "{v}");
            let ids = first_column(&body, b'\t').await;
            assert_eq!(ids.len() as u64, ENTRIES, "rows in the file");
            let unique: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
            assert_eq!(unique.len(), ids.len(), "a row was written twice");
            let seeded: std::collections::HashSet<String> = db
                .collection::<Document>("entries")
                .distinct("_id.user_id", doc! { "_id.campaign_id": cid })
                .await
                .unwrap()
                .iter()
                .map(|b| match b {
                    Bson::String(s) => s.clone(),
                    Bson::ObjectId(o) => o.to_hex(),
                    other => other.to_string(),
                })
                .collect();
            assert_eq!(seeded.len() as u64, ENTRIES);
            assert!(
                unique.iter().all(|i| seeded.contains(*i)),
                "a row that is not an entry"
            );
        }
        "FAILED" => {
            let m = v["error"]["message"].as_str().unwrap_or("");
            assert!(!m.is_empty(), "FAILED without a reason: {v}");
        }
        other => panic!("unexpected status {other}: {v}"),
    }
    // On-call sees the outage in the service's own log.
    assert!(
        serve
            .log_lines()
            .iter()
            .any(|l| l["message"] == "MongoDB connection pool cleared" && l["level"] == "warn"),
        "no pool-cleared warning logged:\n{}",
        serve.stdout_text()
    );
    let resumes = serve
        .log_lines()
        .iter()
        .filter(|l| {
            l["message"] == "reading failed; resuming after the last key"
                || l["message"]
                    == "a cursor ended before its last document; reading on after the last key"
        })
        .count();
    let attempts = export_doc(&db, &id).await.get_i32("attempts").unwrap();
    println!(
        "{moment:?}: killed at {rows_at_kill} rows, MongoDB down {:?} ({beats} heartbeats answered 200); export {} after {attempts} attempt(s), {resumes} read resume(s)",
        Duration::from_secs(5),
        v["status"]
    );
    assert_eq!(
        http.get(&hb).send().await.unwrap().status(),
        200,
        "heartbeat after recovery"
    );
    assert_eq!(app.open_uploads(&app.buckets.exports).await, 0);
    serve.term();
    let status = serve.wait_exit(Duration::from_secs(60)).await;
    assert_eq!(status.code(), Some(0));
    app.stop().await;
}

const SFMC_ROLE: &str = "arn:aws:iam::123456789012:role/sfmc-writer-vf";

#[tokio::test]
async fn assume_role_denied_fails_naming_the_role() {
    let Some(upstream) = proxy_upstream() else {
        println!(
            "skipped: the AssumeRole denial is injected in front of a plain-HTTP endpoint; none in use"
        );
        return;
    };
    let endpoint = proxy(upstream, vec![DENY_ASSUME_ROLE]).await;
    let seed_app = TestApp::spawn_with(&[("worker-concurrency", "0")]).await;
    let sfmc = format!("{}-sfmc", seed_app.buckets.exports);
    seed_app
        .s3
        .create_bucket()
        .bucket(&sfmc)
        .send()
        .await
        .unwrap();
    let app = seed_app
        .sibling(&[
            ("aws-endpoint-url", endpoint.as_str()),
            ("sfmc-bucket", sfmc.as_str()),
            ("sfmc-role-arn", SFMC_ROLE),
            ("max-attempts", "2"),
        ])
        .await;
    let cid = "sfmc1";
    let mut c = campaign_doc(cid, "Tour 2026");
    c.insert("artist", doc! { "name": "Muse" });
    c.insert("tour", doc! { "name": "Drones" });
    insert(&app.db, "campaigns", vec![c]).await;
    let market = format!("{cid}-m1");
    insert(
        &app.db,
        "markets",
        vec![doc! { "_id": &market, "campaignId": cid, "name": "NYC", "city": "New York", "state": "NY",
                    "event": { "date": DateTime::from_millis(1_780_000_000_000), "ids": ["E1"] } }],
    )
    .await;
    let user = ObjectId::new().to_hex();
    insert(
        &app.db,
        "entries",
        vec![doc! { "_id": { "campaign_id": cid, "user_id": &user },
        "fields": { "market": &market, "email": "x@example.com", "first_name": "X" },
        "locale": "en-us", "date": { "created": DateTime::now() } }],
    )
    .await;
    insert(
        &app.db,
        "scoring",
        vec![
            doc! { "campaignId": cid, "userId": &user, "memberId": "1001", "selected": true,
            "locale": "en-us", "market": &market, "score": 0.9,
            "codes": [{ "id": 1, "marketId": &market, "code": "A1" }] },
        ],
    )
    .await;
    let id = app
        .queue_export(cid, json!({ "exportType": "autoReminderEmail" }))
        .await;
    let v = app.wait_done(cid, &id, Duration::from_secs(90)).await;
    assert_eq!(v["status"], "FAILED", "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains(SFMC_ROLE),
        "the reason must name the role: {msg}"
    );
    let text = v.to_string();
    for secret_ish in ["SecretAccessKey", "SessionToken", "aws_secret_access_key"] {
        assert!(!text.contains(secret_ish), "{text}");
    }
    for var in ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"] {
        if let Ok(s) = std::env::var(var) {
            if s.len() >= 8 {
                assert!(!text.contains(&s), "{var} leaked into the export");
            }
        }
    }
    println!("AssumeRole denied → FAILED: {msg}");
    // Nothing was written to the partner bucket, no upload left open.
    assert!(app.object_keys(&sfmc).await.is_empty());
    assert_eq!(app.open_uploads(&sfmc).await, 0);
    app.stop().await;
    seed_app.stop().await;
}
