//! CCPA deletion: supreme only, deletes the objects of the user's
//! campaigns' exports (not the partner types), marks the records,
//! idempotent; the audit record and its route; an S3 failure midway and
//! the retry that finishes; wave files rewritten under a lock by
//! concurrent requests; a request whose client went away still finishes.
//! The whole-bucket sweep over every export type is `ccpa_everything.rs`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::faults::{forward, proxy_upstream, Answer};
use crate::common::seed::{bucket, get_object};
use crate::common::{campaign_doc, insert, settings, TestApp};
use futures::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId, DateTime, Document};
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use vf_export::ccpa::{Deletion, Request};

pub async fn seed(app: &TestApp, cid: &str, user: &str) {
    insert(&app.db, "campaigns", vec![campaign_doc(cid, "Privacy")]).await;
    insert(
        &app.db,
        "markets",
        vec![doc! { "_id": format!("{cid}-m"), "campaignId": cid, "city": "Austin", "state": "TX", "event": { "ids": [] } }],
    )
    .await;
    insert(&app.db, "entries", vec![entry(cid, user)]).await;
}

/// `user`'s entry in `cid` (market `{cid}-m`).
fn entry(cid: &str, user: &str) -> Document {
    doc! { "_id": { "campaign_id": cid, "user_id": user }, "fields": { "market": format!("{cid}-m"), "email": "private@example.com" },
    "date": { "created": DateTime::from_millis(1_767_225_600_000) } }
}

/// A finished export record of `ty` whose object exists in `bucket`.
async fn finished_record(app: &TestApp, cid: &str, ty: &str, bucket: &str) -> (ObjectId, String) {
    let id = ObjectId::new();
    let key = format!("campaigns/{cid}/{ty}/{}.csv", id.to_hex());
    app.s3
        .put_object()
        .bucket(bucket)
        .key(&key)
        .body(aws_sdk_s3::primitives::ByteStream::from_static(
            b"email\nprivate@example.com\n",
        ))
        .send()
        .await
        .unwrap();
    insert(
        &app.db,
        "exports",
        vec![doc! { "_id": id, "campaignId": cid, "campaignName": "Privacy", "exportType": ty, "status": "FINISHED",
                    "date": { "created": DateTime::now(), "finished": DateTime::now() }, "key": &key, "count": 1, "attempts": 1 }],
    )
    .await;
    (id, key)
}

/// The response's `requestId` (an ObjectId hex), removed from `v`.
fn take_request_id(v: &mut Value) -> String {
    let id = v
        .as_object_mut()
        .and_then(|o| o.remove("requestId"))
        .and_then(|id| id.as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no requestId: {v}"));
    assert!(ObjectId::parse_str(&id).is_ok(), "{id}");
    id
}

pub fn user_sha(user: &str) -> String {
    hex::encode(Sha256::digest(user.as_bytes()))
}

/// `GET /ccpa/requests?userId=` as the supreme `admin`.
pub async fn audit_records(app: &TestApp, user: &str) -> Vec<Value> {
    let (s, v) = get_requests(app, &format!("?userId={user}"), true).await;
    assert_eq!(s, 200, "{v}");
    v.as_array().cloned().unwrap_or_else(|| panic!("{v}"))
}

async fn get_requests(app: &TestApp, query: &str, supreme: bool) -> (u16, Value) {
    call(
        app,
        reqwest::Method::GET,
        &format!("requests{query}"),
        supreme,
    )
    .await
}

/// `method /ccpa/{path}` as `admin`, supreme or a reporter of c1.
async fn call(app: &TestApp, method: reqwest::Method, path: &str, supreme: bool) -> (u16, Value) {
    let r = app
        .http
        .request(method, format!("{}/ccpa/{path}", app.base))
        .bearer_auth(app.token("admin", &[("c1", &["REPORT"])], supreme))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// The `(action, bucket, key)` of an audit record's objects, sorted.
pub fn audit_objects(record: &Value) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = record["objects"]
        .as_array()
        .unwrap_or_else(|| panic!("{record}"))
        .iter()
        .map(|o| {
            let s = |k: &str| o[k].as_str().unwrap_or_else(|| panic!("{o}")).to_string();
            (s("action"), s("bucket"), s("key"))
        })
        .collect();
    v.sort();
    v
}

/// The export record's `deleted` flag (nx-27017 stores `true` as 1).
pub fn is_deleted(d: &Document) -> bool {
    d.get_bool("deleted").unwrap_or(false)
        || d.get_i32("deleted") == Ok(1)
        || d.get_i64("deleted") == Ok(1)
}

async fn put(app: &TestApp, bucket: &str, key: &str, body: &[u8]) {
    app.s3
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(body.to_vec().into())
        .send()
        .await
        .unwrap();
}

pub async fn delete_user(app: &TestApp, user: &str, supreme: bool) -> (u16, Value) {
    call(
        app,
        reqwest::Method::DELETE,
        &format!("users/{user}"),
        supreme,
    )
    .await
}

#[tokio::test]
async fn ccpa_deletes_the_users_campaign_exports_once() {
    // No worker: the queued export below stays in flight.
    let app = TestApp::spawn_with(&[("worker-concurrency", "0")]).await;
    seed(&app, "c1", "user-1").await;
    seed(&app, "c2", "someone-else").await;
    let exports = app.buckets.exports.clone();
    let (entries_id, entries_key) = finished_record(&app, "c1", "entries", &exports).await;
    let (codes_id, codes_key) = finished_record(&app, "c1", "codes", &exports).await;
    // Partner pipeline types are skipped: their files stay.
    let (_, scoring_key) =
        finished_record(&app, "c1", "scoring", &app.buckets.scoring.clone()).await;
    // Another campaign's export is untouched.
    let (other_id, other_key) = finished_record(&app, "c2", "entries", &exports).await;
    // A failed export without a file is marked too; a queued one is in flight.
    insert(
        &app.db,
        "exports",
        vec![doc! { "_id": ObjectId::new(), "campaignId": "c1", "exportType": "fanlist", "status": "FAILED",
                    "date": { "created": DateTime::now() }, "key": null, "attempts": 3 }],
    )
    .await;
    // A publish-failed codes export recorded before its object was kept
    // as `key`: the object is named only in the error payload.
    let (legacy_id, legacy_key) = finished_record(&app, "c1", "codes", &exports).await;
    app.db
        .collection::<Document>("exports")
        .update_one(
            doc! { "_id": legacy_id },
            doc! { "$set": { "status": "FAILED", "key": null, "error": { "message": "publishing to TMOL_BUCKET failed",
                   "payload": { "code": "PublishFailed", "object": { "bucket": &exports, "key": &legacy_key } } } } },
        )
        .await
        .unwrap();
    assert_eq!(
        app.post_export("c1", json!({"exportType": "artistOptIn"}))
            .await
            .status(),
        201
    );
    // The object already vanished for one export: counts as deleted.
    app.s3
        .delete_object()
        .bucket(&exports)
        .key(&codes_key)
        .send()
        .await
        .unwrap();

    let (s, v) = delete_user(&app, "user-1", false).await;
    assert_eq!(s, 403, "{v}");
    let (s, v) = delete_user(&app, "bad$id", true).await;
    assert_eq!(s, 400, "{v}");

    let (s, mut v) = delete_user(&app, "user-1", true).await;
    assert_eq!(s, 200, "{v}");
    let request_id = take_request_id(&mut v);
    assert_eq!(
        v,
        json!({"message": "User exports deleted successfully", "deletedCount": {"exports": 4, "files": 3}, "skipped": 1, "inFlight": 1,
               "rewritten": {"files": 0, "rows": 0}})
    );
    let keys = app.object_keys(&exports).await;
    assert_eq!(keys, vec![other_key.clone()]);
    assert!(!keys.contains(&legacy_key) && !keys.contains(&entries_key));
    assert_eq!(
        app.object_keys(&app.buckets.scoring).await,
        vec![scoring_key]
    );
    // The records stay, marked, without a download path.
    let v = app.get_export("c1", &entries_id.to_hex()).await;
    assert_eq!(v["deleted"], true, "{v}");
    assert!(v["date"]["deleted"].is_string());
    assert!(v.get("path").is_none());
    let v = app.get_export("c1", &codes_id.to_hex()).await;
    assert_eq!(v["deleted"], true);
    let v = app.get_export("c2", &other_id.to_hex()).await;
    assert!(v.get("deleted").is_none() && v["path"].is_string(), "{v}");

    // Idempotent: a repeat deletes nothing and reports zero changes.
    let (s, v) = delete_user(&app, "user-1", true).await;
    assert_eq!(s, 200);
    assert_eq!(v["deletedCount"], json!({"exports": 0, "files": 0}));
    // A user who entered nothing: zeros.
    let (s, v) = delete_user(&app, "nobody", true).await;
    assert_eq!(
        (s, v["deletedCount"].clone()),
        (200, json!({"exports": 0, "files": 0}))
    );
    let n = app
        .db
        .collection::<Document>("exports")
        // 1 as well as true: the nx-27017 stand-in stores the flag as 1.
        .count_documents(doc! { "deleted": { "$in": [true, 1] } })
        .await
        .unwrap();
    assert_eq!(n, 4);

    // The audit records: one per request, the user id only as its digest.
    let records = audit_records(&app, "user-1").await;
    assert_eq!(records.len(), 2, "{records:?}");
    let (first, repeat) = (&records[0], &records[1]);
    assert_eq!(first["id"], json!(request_id));
    assert_eq!(first["userIdSha256"], json!(user_sha("user-1")));
    assert_eq!(first["requestedBy"], "admin");
    assert_eq!(first["status"], "DONE", "{first}");
    assert!(first["error"].is_null() && first["date"]["finished"].is_string());
    assert_eq!(first["campaigns"], json!(["c1"]));
    // The vanished object counts as deleted.
    let mut want_objects = vec![
        ("deleted".to_string(), exports.clone(), codes_key.clone()),
        ("deleted".into(), exports.clone(), entries_key.clone()),
        ("deleted".into(), exports.clone(), legacy_key.clone()),
    ];
    want_objects.sort();
    assert_eq!(audit_objects(first), want_objects);
    let mut marked: Vec<String> = first["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    marked.sort();
    let mut want: Vec<String> = app
        .db
        .collection::<Document>("exports")
        .find(doc! { "deleted": { "$in": [true, 1] } })
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .iter()
        .map(|d| d.get_object_id("_id").unwrap().to_hex())
        .collect();
    want.sort();
    assert_eq!(marked, want);
    assert_eq!(first["deletedCount"], json!({"exports": 4, "files": 3}));
    assert_eq!(
        (&first["skipped"], &first["inFlight"]),
        (&json!(1), &json!(1))
    );
    assert_eq!(repeat["status"], "DONE");
    assert_eq!(repeat["objects"], json!([]));
    assert_eq!(repeat["exports"], json!([]));
    assert_eq!(repeat["deletedCount"], json!({"exports": 0, "files": 0}));
    for r in &records {
        assert!(!r.to_string().contains("user-1"), "{r}");
    }
    // Another user's requests are not this user's; unknown users have none.
    assert_eq!(audit_records(&app, "nobody").await.len(), 1);
    assert_eq!(
        audit_records(&app, "never-asked").await,
        Vec::<Value>::new()
    );
    // Supreme only, and a valid userId is required.
    for (query, supreme, want) in [
        ("?userId=user-1", false, 403),
        ("", true, 400),
        ("?userId=bad$id", true, 400),
        ("?userId=", true, 400),
    ] {
        let (s, v) = get_requests(&app, query, supreme).await;
        assert_eq!(s, want, "{query}: {v}");
        assert_eq!(v["error"]["status"], want, "{v}");
    }
    app.stop().await;
}

/// The fault proxy's hook: while `on`, S3 refuses deleting objects in
/// `refuse_delete_in` and completing uploads to the bucket named in
/// `refuse_complete_in` (set once the app has made its buckets).
fn refusing(
    on: Arc<AtomicBool>,
    refuse_delete_in: String,
    refuse_complete_in: Arc<Mutex<String>>,
) -> impl Fn(&crate::common::faults::Request<'_>) -> Option<Answer> + Send + Sync + 'static {
    const DENIED: &str =
        "<Error><Code>AccessDenied</Code><Message>Access Denied (injected)</Message></Error>";
    move |r| {
        let post = r.method.as_str() == "POST";
        let delete_objects = post && r.pq.starts_with(&format!("/{refuse_delete_in}/?delete"));
        let complete_in = refuse_complete_in.lock().unwrap().clone();
        let complete = post
            && !complete_in.is_empty()
            && r.pq.starts_with(&format!("/{complete_in}/"))
            && r.pq.contains("uploadId=");
        (on.load(Ordering::SeqCst) && (delete_objects || complete)).then_some((403, DENIED))
    }
}

#[tokio::test]
async fn an_s3_failure_midway_is_delete_failed_and_the_retry_finishes_with_the_right_totals() {
    let Some(upstream) = proxy_upstream() else {
        println!("skipped: needs a plain-HTTP S3 endpoint to put the fault proxy in front of");
        return;
    };
    let tmol = bucket("vf-tmol-").await;
    let faults = Arc::new(AtomicBool::new(true));
    let wave_bucket = Arc::new(Mutex::new(String::new()));
    let endpoint = forward(
        upstream,
        refusing(faults.clone(), tmol.clone(), wave_bucket.clone()),
    )
    .await;
    let app = TestApp::spawn_with(&[
        ("worker-concurrency", "0"),
        ("aws-endpoint-url", &endpoint),
        ("tmol-bucket", &tmol),
        ("tmol-role-arn", "arn:aws:iam::123456789012:role/tmol"),
    ])
    .await;
    let vf_scoring = app.buckets.vf_scoring.clone();
    *wave_bucket.lock().unwrap() = vf_scoring.clone();
    seed(&app, "c1", "user-1").await;
    let exports = app.buckets.exports.clone();
    let (entries_id, entries_key) = finished_record(&app, "c1", "entries", &exports).await;
    // A codes export published to TMOL: its main object and the copy.
    let (codes_id, codes_key) = finished_record(&app, "c1", "codes", &exports).await;
    let copy = format!("verifiedfan/c1/codes-{}.csv", codes_id.to_hex());
    put(
        &app,
        &tmol,
        &copy,
        b"code,assignedTo
U1CODE,user-1
",
    )
    .await;
    app.db
        .collection::<Document>("exports")
        .update_one(
            doc! { "_id": codes_id },
            doc! { "$set": { "meta": { "published": [{ "bucket": &tmol, "key": &copy, "sha256": "x", "bytes": 1 }] } } },
        )
        .await
        .unwrap();
    // A wave file holding the user's row (member 777) and another fan's.
    insert(
        &app.db,
        "scoring",
        vec![doc! { "campaignId": "c1", "userId": "user-1", "memberId": "777", "selected": true }],
    )
    .await;
    let wave = "campaigns/c1/waves/20260301/w.csv";
    let wave_body = b"memberId,code,Mobile Phone,locale,market
777,U1CODE,+1555,en-us,m
778,X,,en-us,m
";
    put(&app, &vf_scoring, wave, wave_body).await;

    // S3 refuses the TMOL delete and the wave file's upload.
    let (s, v) = delete_user(&app, "user-1", true).await;
    assert_eq!(s, 500, "{v}");
    let e = &v["error"];
    assert_eq!(e["payload"]["code"], "DeleteFailed", "{v}");
    assert_eq!(
        e["payload"]["deletedCount"],
        json!({"exports": 1, "files": 1})
    );
    assert_eq!(e["payload"]["rewritten"], json!({"files": 0, "rows": 0}));
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains(&tmol) && msg.contains(wave), "{msg}");
    assert!(
        !msg.contains("user-1") && !v.to_string().contains("+1555"),
        "{v}"
    );
    let first_id = e["payload"]["requestId"].as_str().unwrap().to_string();
    // Nothing marked that was not deleted: the codes export keeps its
    // TMOL copy, so it is not marked; the entries export is.
    let raw = |id: ObjectId| {
        let db = app.db.clone();
        async move {
            db.collection::<Document>("exports")
                .find_one(doc! { "_id": id })
                .await
                .unwrap()
                .unwrap()
        }
    };
    assert!(is_deleted(&raw(entries_id).await));
    assert!(!is_deleted(&raw(codes_id).await));
    assert_eq!(app.object_keys(&tmol).await, vec![copy.clone()]);
    assert!(!app.object_keys(&exports).await.contains(&entries_key));
    // The wave file is as it was, and no upload is left open.
    assert_eq!(get_object(&app, &vf_scoring, wave).await, wave_body);
    assert_eq!(app.open_uploads(&vf_scoring).await, 0);
    let failed = &audit_records(&app, "user-1").await[0];
    assert_eq!(failed["id"], json!(first_id));
    assert_eq!(failed["status"], "FAILED");
    assert_eq!(failed["error"], json!(msg));
    // What S3 confirmed deleted, even for the export left unmarked.
    assert_eq!(
        audit_objects(failed),
        vec![
            ("deleted".into(), exports.clone(), codes_key.clone()),
            ("deleted".into(), exports.clone(), entries_key.clone()),
        ]
    );

    // S3 is well again: the retry finishes the rest, counting only it.
    faults.store(false, Ordering::SeqCst);
    let (s, mut v) = delete_user(&app, "user-1", true).await;
    assert_eq!(s, 200, "{v}");
    take_request_id(&mut v);
    assert_eq!(v["deletedCount"], json!({"exports": 1, "files": 2}));
    assert_eq!(v["rewritten"], json!({"files": 1, "rows": 1}));
    // Together: what one clean run reports (2 exports, 1 + 2 objects).
    assert!(is_deleted(&raw(codes_id).await));
    assert_eq!(app.object_keys(&tmol).await, Vec::<String>::new());
    assert_eq!(
        get_object(&app, &vf_scoring, wave).await,
        b"memberId,code,Mobile Phone,locale,market
778,X,,en-us,m
"
    );
    let retry = &audit_records(&app, "user-1").await[1];
    assert_eq!(retry["status"], "DONE");
    assert_eq!(
        audit_objects(retry),
        vec![
            ("deleted".into(), exports.clone(), codes_key),
            ("deleted".into(), tmol.clone(), copy),
            ("rewritten".into(), vf_scoring.clone(), wave.to_string()),
        ]
    );
    // And a repeat: zeros.
    let (s, v) = delete_user(&app, "user-1", true).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["deletedCount"], json!({"exports": 0, "files": 0}));
    assert_eq!(v["rewritten"], json!({"files": 0, "rows": 0}));
    app.stop().await;
}

/// Users 1..=3 in campaign c1, members 11, 22, 33, one wave file with a
/// row each; returns the wave file's key.
async fn three_fans_one_wave(app: &TestApp) -> String {
    seed(app, "c1", "user-1").await;
    insert(
        &app.db,
        "entries",
        vec![entry("c1", "user-2"), entry("c1", "user-3")],
    )
    .await;
    let scoring = (1..=3)
        .map(|n| doc! { "campaignId": "c1", "userId": format!("user-{n}"), "memberId": format!("{n}{n}"), "selected": true })
        .collect();
    insert(&app.db, "scoring", scoring).await;
    let key = "campaigns/c1/waves/20260301/w.csv".to_string();
    put(
        app,
        &app.buckets.vf_scoring,
        &key,
        b"memberId,code
11,A
22,B
33,C
",
    )
    .await;
    key
}

/// Hang guard for waits on the app's own progress; no assertion depends
/// on how fast anything runs.
const GUARD: Duration = Duration::from_secs(90);

#[tokio::test]
async fn concurrent_requests_rewrite_one_wave_file_in_turn_and_a_dropped_request_finishes() {
    let app = TestApp::spawn_with(&[("worker-concurrency", "0")]).await;
    let key = three_fans_one_wave(&app).await;
    let vf = app.buckets.vf_scoring.clone();

    // Two users at once: each request removes only its user's row, so
    // without the lock the second writer would put the first's row back.
    let ((s1, v1), (s2, v2)) = tokio::join!(
        delete_user(&app, "user-1", true),
        delete_user(&app, "user-2", true)
    );
    assert_eq!((s1, s2), (200, 200), "{v1} {v2}");
    assert_eq!(v1["rewritten"], json!({"files": 1, "rows": 1}), "{v1}");
    assert_eq!(v2["rewritten"], json!({"files": 1, "rows": 1}), "{v2}");
    assert_eq!(
        get_object(&app, &vf, &key).await,
        b"memberId,code
33,C
"
    );

    // A lock left by a request whose process died (it lapses in 3 s), and
    // a client that goes away as soon as its deletion has started: the
    // deletion waits for the lock, takes it over and finishes anyway.
    let locks = app.db.collection::<Document>("ccpaLocks");
    let lapsing = chrono::Utc::now().timestamp_millis() + 3_000;
    locks
        .insert_one(doc! { "_id": format!("{vf}/{key}"), "owner": "died", "expiresAtMs": lapsing })
        .await
        .unwrap();
    let audits = app.db.collection::<Document>("ccpaRequests");
    let mine = doc! { "userIdSha256": user_sha("user-3") };
    let t0 = Instant::now();
    tokio::select! {
        r = delete_user(&app, "user-3", true) => panic!("the request was to be dropped first: {r:?}"),
        _ = async {
            while audits.find_one(mine.clone()).await.unwrap().is_none() {
                assert!(t0.elapsed() < GUARD, "the deletion did not start");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        } => {}
    }
    // The request is dropped here; the deletion goes on.
    let done = loop {
        let d = audits.find_one(mine.clone()).await.unwrap().unwrap();
        if d.get_str("status") != Ok("RUNNING") {
            break d;
        }
        assert!(t0.elapsed() < GUARD, "the deletion did not finish: {d}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(done.get_str("status"), Ok("DONE"), "{done}");
    assert_eq!(
        get_object(&app, &vf, &key).await,
        b"memberId,code
"
    );
    assert_eq!(locks.count_documents(doc! {}).await.unwrap(), 0);
    assert_eq!(app.open_uploads(&vf).await, 0);
    app.stop().await;
}

/// The deletion without HTTP, on the app's database and buckets.
async fn deletion(app: &TestApp) -> Deletion {
    use vf_export::config::Needs;
    let cfg = settings(&app.db_name, &app.buckets, &[])
        .validate(Needs::Serve)
        .unwrap();
    let store = vf_export::store::Store::connect(cfg.mongodb_uri.expose_secret(), &cfg.mongodb_db)
        .await
        .unwrap();
    let sinks = vf_export::sink::Sinks::new(&cfg, vf_export::sink::sdk_config(&cfg).await);
    Deletion::new(
        store.clone(),
        vf_export::queue::Queue::new(store),
        sinks,
        vf_export::exports::Registry::new(),
    )
}

#[tokio::test]
async fn a_wave_file_another_live_request_holds_fails_the_request_and_the_retry_completes() {
    let app = TestApp::spawn_with(&[("worker-concurrency", "0")]).await;
    let key = three_fans_one_wave(&app).await;
    let vf = app.buckets.vf_scoring.clone();
    let locks = app.db.collection::<Document>("ccpaLocks");
    let held = chrono::Utc::now().timestamp_millis() + 600_000;
    locks
        .insert_one(doc! { "_id": format!("{vf}/{key}"), "owner": "alive", "expiresAtMs": held })
        .await
        .unwrap();
    let d = deletion(&app).await.lock_wait(Duration::ZERO);
    let req = Request {
        user_id: "user-1".into(),
        requested_by: "privacy-desk".into(),
        correlation: "c-1".into(),
    };
    let e = d.begin(req.clone()).await.unwrap().run().await.unwrap_err();
    assert!(
        e.message.contains(&key) && e.message.contains("another CCPA request"),
        "{}",
        e.message
    );
    assert_eq!(e.done.rewritten.files, 0);
    assert_eq!(
        get_object(&app, &vf, &key).await,
        b"memberId,code
11,A
22,B
33,C
"
    );
    // The other request is done: the retry rewrites the file.
    locks.delete_many(doc! {}).await.unwrap();
    let done = d.begin(req).await.unwrap().run().await.unwrap();
    assert_eq!((done.rewritten.files, done.rewritten.rows), (1, 1));
    assert_eq!(
        get_object(&app, &vf, &key).await,
        b"memberId,code
22,B
33,C
"
    );
    let records = audit_records(&app, "user-1").await;
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["status"], "FAILED");
    assert_eq!(records[0]["requestedBy"], "privacy-desk");
    assert_eq!(records[1]["status"], "DONE");
    app.stop().await;
}
