//! The core slice over HTTP: request an `entries` export, dedupe, run it,
//! download it through the signed URL and compare byte for byte.

use std::time::Duration;

use crate::common::{self, campaign_doc, insert, TestApp};
use mongodb::bson::{doc, oid::ObjectId, DateTime};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

fn uid(n: u8) -> ObjectId {
    ObjectId::parse_str(format!("65f0000000000000000000{n:02x}")).unwrap()
}

/// A campaign covering the entry row's edge cases.
async fn seed_edge_campaign(app: &TestApp, cid: &str) {
    let mut c = campaign_doc(cid, "Tour 2026");
    c.insert(
        "preferences",
        vec![
            doc! { "id": "fav_song", "type": "text" },
            doc! { "id": "vip", "type": "checkbox" },
        ],
    );
    insert(&app.db, "campaigns", vec![c]).await;
    insert(
        &app.db,
        "markets",
        vec![
            doc! { "_id": format!("{cid}-m1"), "campaignId": cid, "name": "NYC", "city": "New York", "state": "NY",
                   "event": { "date": DateTime::from_millis(1_780_000_000_000), "ids": ["E1", "E2"] } },
            doc! { "_id": format!("{cid}-m2"), "campaignId": cid, "name": "LA", "city": "Los Angeles", "state": "CA",
                   "event": { "date": DateTime::from_millis(1_767_225_600_000), "ids": ["E3"] } },
        ],
    )
    .await;
    let created = DateTime::from_millis(1_767_225_600_123);
    insert(
        &app.db,
        "entries",
        vec![
            // Entry fields win for email/phone; user name wins; commas, quotes.
            doc! { "_id": { "campaign_id": cid, "user_id": uid(1).to_hex() },
                   "fields": { "market": format!("{cid}-m1"), "email": "a@x.io", "phone": "+15551234567",
                               "first_name": "Ann", "fav_song": "Song, \"Live\"", "vip": true,
                               "additionalMarkets": [format!("{cid}-m2"), "nope"] },
                   "origin": { "ip": { "address": "10.0.0.1", "postalCode": "10001" } },
                   "locale": "en-us", "date": { "created": created, "phoneConfirmed": created } },
            // Falls back to the user's ticketmaster fields; formula cells; newline; non-ASCII.
            doc! { "_id": { "campaign_id": cid, "user_id": uid(2).to_hex() },
                   "fields": { "market": format!("{cid}-m1"), "first_name": "=HYPERLINK(\"x\")", "fav_song": "line1\nline2" },
                   "origin": { "ip": { "address": "10.0.0.2" } },
                   "locale": "fr-ca", "date": { "created": created } },
            // No user document at all; `-2+3` and `@` cells.
            doc! { "_id": { "campaign_id": cid, "user_id": uid(3).to_hex() },
                   "fields": { "market": format!("{cid}-m2"), "email": "@me", "last_name": "-2+3", "fav_song": "Ünïcødé ✓" },
                   "locale": "de-de", "date": { "created": created } },
            // Another campaign's entry must not appear.
            doc! { "_id": { "campaign_id": format!("other-{cid}"), "user_id": uid(4).to_hex() },
                   "fields": { "market": "m1" }, "date": { "created": created } },
        ],
    )
    .await;
    // Users are shared by campaigns: replace rather than duplicate.
    app.db
        .collection::<mongodb::bson::Document>("users")
        .delete_many(doc! { "_id": { "$in": [uid(1), uid(2)] } })
        .await
        .unwrap();
    insert(
        &app.db,
        "users",
        vec![
            doc! { "_id": uid(1), "integrations": { "ticketmaster": {
                "id": "tm1", "member_id": "h1", "globalUserId": "g1", "email": "tm1@x.io",
                "phone": "+1999", "name": { "first": "Annie", "last": "Smith" }, "postalCode": "99999" } } },
            doc! { "_id": uid(2), "integrations": { "ticketmaster": {
                "id": 12345, "member_id": "h2", "globalUserId": "g2", "email": "tm2@x.io",
                "phone": "+1 (555) 000-1111", "name": { "last": "O'Brien, Jr." }, "postalCode": "H2X" } } },
        ],
    )
    .await;
}

const HEADER: &str = "id\tcontest_title\tentry_date\ttm_id\tglobalUserId\tip_address\temail\tfirst_name\tlast_name\tZip Code\tMobile Phone\tHbase_ID\tSelect Show\tEvent_ID\tlocale\tcampaign_id\tPhone confirmed\t#text.fav_song\t#checkbox.vip\n";

fn expected(cid: &str, all_markets: bool) -> String {
    let u1 = uid(1).to_hex();
    let u2 = uid(2).to_hex();
    let u3 = uid(3).to_hex();
    let d = "2026-01-01T00:00:00.123Z";
    let mut s = HEADER.to_string();
    s += &format!("{u1}\tTour 2026\t{d}\ttm1\tg1\t10.0.0.1\ta@x.io\tAnnie\tSmith\t10001\t+15551234567\th1\t5/28 - New York, NY\tE1,E2\ten-us\t{cid}\ttrue\t\"Song, \"\"Live\"\"\"\ttrue\n");
    if all_markets {
        s += &format!("{u1}\tTour 2026\t{d}\ttm1\tg1\t10.0.0.1\ta@x.io\tAnnie\tSmith\t10001\t+15551234567\th1\t1/01 - Los Angeles, CA\tE3\ten-us\t{cid}\ttrue\t\"Song, \"\"Live\"\"\"\ttrue\n");
    }
    s += &format!("{u2}\tTour 2026\t{d}\t12345\tg2\t10.0.0.2\ttm2@x.io\t\"'=HYPERLINK(\"\"x\"\")\"\tO'Brien, Jr.\tH2X\t+1 (555) 000-1111\th2\t5/28 - New York, NY\tE1,E2\tfr-ca\t{cid}\tfalse\t\"line1\nline2\"\tfalse\n");
    s += &format!("{u3}\tTour 2026\t{d}\t\t\t\t'@me\t\t'-2+3\t\t\t\t1/01 - Los Angeles, CA\tE3\tde-de\t{cid}\tfalse\tÜnïcødé ✓\tfalse\n");
    s
}

#[tokio::test]
async fn entries_export_end_to_end() {
    let app = TestApp::spawn().await;
    let cid = "c123";
    seed_edge_campaign(&app, cid).await;

    let r = app
        .post_export(cid, json!({ "exportType": "entries", "extra": 1 }))
        .await;
    assert_eq!(r.status(), 201);
    let corr = r.headers()["x-titan-correlation-id"]
        .to_str()
        .unwrap()
        .to_string();
    let created: serde_json::Value = r.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["status"], "PENDING");
    assert_eq!(created["campaignName"], "Tour 2026");
    assert_eq!(created["requesterUserId"], "u42");
    assert_eq!(created["correlation"], corr.as_str());

    let done = app.wait_done(cid, &id, WAIT).await;
    assert_eq!(done["status"], "FINISHED", "{done}");
    assert_eq!(done["count"], 3);
    assert_eq!(done["progress"]["rowsWritten"], 3);
    assert_eq!(done["progress"]["expectedRows"], 3);
    let key = done["key"].as_str().unwrap();
    assert!(
        key.starts_with("campaigns/tour-2026-c123/entries/2")
            && key.ends_with(&format!("-{id}.tsv")),
        "{key}"
    );
    assert!(done["date"]["finished"].is_string());
    let body = app.download(done["path"].as_str().unwrap()).await;
    assert_eq!(String::from_utf8(body).unwrap(), expected(cid, false));

    // The object carries the right metadata.
    let head = app
        .s3
        .head_object()
        .bucket(&app.buckets.exports)
        .key(key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.server_side_encryption().map(|s| s.as_str()),
        Some("AES256")
    );
    assert!(head
        .content_type()
        .unwrap()
        .starts_with("text/tab-separated-values"));

    // After it finished, a new request queues a new export; with
    // includeAllMarkets the additional market adds a row (unknown ids skip).
    let id2 = app
        .queue_export(
            cid,
            json!({ "exportType": "entries", "includeAllMarkets": true }),
        )
        .await;
    assert_ne!(id2, id);
    let done = app.wait_done(cid, &id2, WAIT).await;
    assert_eq!(done["count"], 4);
    let body = app.download(done["path"].as_str().unwrap()).await;
    assert_eq!(String::from_utf8(body).unwrap(), expected(cid, true));
    assert_eq!(app.open_uploads(&app.buckets.exports).await, 0);
    app.stop().await;
}

#[tokio::test]
async fn dedupe_returns_the_active_export_even_under_concurrency() {
    // No worker: exports stay PENDING.
    let app = TestApp::spawn_with(&[("worker-concurrency", "0")]).await;
    seed_edge_campaign(&app, "c1").await;
    let posts = (0..8).map(|_| app.post_export("c1", json!({ "exportType": "entries" })));
    let results = futures::future::join_all(posts).await;
    let mut created = 0;
    let mut ids = std::collections::HashSet::new();
    for r in results {
        match r.status().as_u16() {
            201 => created += 1,
            200 => {}
            s => panic!("unexpected status {s}"),
        }
        ids.insert(
            r.json::<serde_json::Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1);
    let n = app
        .db
        .collection::<mongodb::bson::Document>("exports")
        .find(doc! {})
        .await
        .unwrap();
    use futures::TryStreamExt;
    assert_eq!(n.try_collect::<Vec<_>>().await.unwrap().len(), 1);
    // A different dateKey is a different export.
    let r = app
        .post_export(
            "c1",
            json!({ "exportType": "entries", "dateKey": "20260101" }),
        )
        .await;
    assert_eq!(r.status(), 201);
    app.stop().await;
}

/// Insert an export as a dead worker would leave it.
async fn insert_stuck(
    app: &TestApp,
    cid: &str,
    attempts: i32,
    triggered: DateTime,
    lease_ms: i64,
    upload: Option<mongodb::bson::Document>,
) -> ObjectId {
    let id = ObjectId::new();
    let mut d = doc! {
        "_id": id, "campaignId": cid, "campaignName": "Tour 2026", "exportType": "entries",
        "status": "TRIGGERED", "requesterUserId": "u42", "correlation": "corr-stuck",
        "dateKey": null, "includeAllMarkets": false, "compression": "none",
        "date": { "created": DateTime::from_millis(1_767_225_600_000), "triggered": triggered },
        "activeKey": format!("{cid}|entries|"), "attempts": attempts,
        "lease": { "owner": "dead-worker", "expiresAtMs": lease_ms },
        "progress": { "rowsWritten": 5i64, "bytesWritten": 100i64, "expectedRows": null },
    };
    if let Some(u) = upload {
        d.insert("upload", u);
    }
    insert(&app.db, "exports", vec![d]).await;
    id
}

/// The worker polls every ten minutes here: the export can only finish
/// within the wait because the POST woke this process's idle worker.
#[tokio::test]
async fn a_post_wakes_the_idle_worker_without_waiting_for_the_poll() {
    let app = TestApp::spawn_with(&[("poll-interval-ms", "600000")]).await;
    let cid = "c9";
    seed_edge_campaign(&app, cid).await;
    // Let the worker's first (empty) claim pass, so it is asleep in its poll.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = app
        .post_export(cid, json!({ "exportType": "entries" }))
        .await;
    assert_eq!(r.status(), 201);
    let v: serde_json::Value = r.json().await.unwrap();
    let done = app.wait_done(cid, v["id"].as_str().unwrap(), WAIT).await;
    assert_eq!(done["status"], "FINISHED", "{done}");
    assert_eq!(done["count"], 3);
    app.stop().await;
}

#[tokio::test]
async fn a_lapsed_lease_is_reclaimed_and_finished_once() {
    reclaim_after_a_dead_owner(true).await;
}

/// The owner was killed after S3 created its upload but before it recorded
/// the upload's id: only the key is on the export.
#[tokio::test]
async fn an_upload_whose_id_was_never_recorded_is_aborted_on_reclaim() {
    reclaim_after_a_dead_owner(false).await;
}

async fn reclaim_after_a_dead_owner(id_recorded: bool) {
    let app = TestApp::spawn().await;
    let cid = "c2";
    seed_edge_campaign(&app, cid).await;
    // The dead worker left a multipart upload open under the final key.
    let key = "campaigns/tour-2026-c2/entries/orphan.tsv";
    let up = app
        .s3
        .create_multipart_upload()
        .bucket(&app.buckets.exports)
        .key(key)
        .send()
        .await
        .unwrap();
    assert_eq!(app.open_uploads(&app.buckets.exports).await, 1);
    // An upload at another key is not this export's: it stays open.
    let other = app
        .s3
        .create_multipart_upload()
        .bucket(&app.buckets.exports)
        .key(format!("{key}.other"))
        .send()
        .await
        .unwrap();
    let mut upload = doc! { "bucket": &app.buckets.exports, "key": key };
    if id_recorded {
        upload.insert("uploadId", up.upload_id().unwrap());
    }
    let id = insert_stuck(&app, cid, 1, DateTime::now(), 1, Some(upload)).await;

    let done = app.wait_done(cid, &id.to_hex(), WAIT).await;
    assert_eq!(done["status"], "FINISHED", "{done}");
    assert_eq!(done["count"], 3);
    let raw = app
        .db
        .collection::<mongodb::bson::Document>("exports")
        .find_one(doc! { "_id": id })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(raw.get_i32("attempts").unwrap(), 2);
    assert!(
        raw.get("activeKey").is_none() && raw.get("lease").is_none() && raw.get("upload").is_none()
    );
    assert_eq!(app.open_uploads(&app.buckets.exports).await, 1);
    app.s3
        .abort_multipart_upload()
        .bucket(&app.buckets.exports)
        .key(format!("{key}.other"))
        .upload_id(other.upload_id().unwrap())
        .send()
        .await
        .unwrap();
    // Exactly one object: the export's own.
    assert_eq!(
        app.object_keys(&app.buckets.exports).await,
        vec![done["key"].as_str().unwrap().to_string()]
    );
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
        metrics.contains("vf_export_lease_reclaims_total 1"),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn overdue_exports_expire_and_exhausted_ones_fail() {
    let app = TestApp::spawn_with(&[("export-timeout-secs", "60"), ("max-attempts", "3")]).await;
    seed_edge_campaign(&app, "c3").await;
    seed_edge_campaign(&app, "c4").await;
    let now = mongodb::bson::DateTime::now().timestamp_millis();
    // Triggered two minutes ago, lease still held (its worker is stuck).
    let overdue = insert_stuck(
        &app,
        "c3",
        1,
        DateTime::from_millis(now - 120_000),
        now + 600_000,
        None,
    )
    .await;
    // Out of attempts, lease lapsed.
    let exhausted = insert_stuck(&app, "c4", 3, DateTime::now(), 1, None).await;

    let v = app.wait_done("c3", &overdue.to_hex(), WAIT).await;
    assert_eq!(v["status"], "EXPIRED", "{v}");
    assert!(v["date"]["expired"].is_string());
    let v = app.wait_done("c4", &exhausted.to_hex(), WAIT).await;
    assert_eq!(v["status"], "FAILED", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("gave up after 3 attempts"),
        "{v}"
    );
    // A stopped export frees its slot: a new POST creates a new export.
    let r = app
        .post_export("c3", json!({ "exportType": "entries" }))
        .await;
    assert_eq!(r.status(), 201);
    app.stop().await;
}

/// The multipart sink over several parts: the object holds exactly the
/// bytes written, in order, whatever the write sizes (part buffers are
/// swapped and reused, so a reuse bug would show as stale or lost bytes).
#[tokio::test]
async fn a_multipart_object_holds_exactly_the_bytes_written() {
    use tokio::io::AsyncWriteExt;
    use vf_export::config::Needs;
    use vf_export::sink::{sdk_config, DestKind, ObjectSpec, Sinks};

    let app = TestApp::spawn().await;
    let cfg = common::settings(&app.db_name, &app.buckets, &[("s3-part-size-mib", "5")])
        .validate(Needs::Worker)
        .unwrap();
    let sinks = Sinks::new(&cfg, sdk_config(&cfg).await);
    let dest = sinks.destination(DestKind::Exports).await.unwrap();
    let spec = ObjectSpec {
        key: "parts/three.bin".into(),
        content_type: "application/octet-stream",
    };
    let (mut w, upload) = sinks.open_s3(&dest, &spec).await.unwrap();
    // 12 MiB + a bit: parts of 5, 5 and ~2 MiB. Bytes depend on position;
    // writes of odd, varying sizes straddle the part boundaries.
    let total = 12 * 1024 * 1024 + 12_345;
    let want: Vec<u8> = (0..total as u64)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut at = 0;
    for n in (1..).map(|k: usize| 1 + (k * 7_919) % 300_000) {
        let end = (at + n).min(total);
        w.write_all(&want[at..end]).await.unwrap();
        at = end;
        if at == total {
            break;
        }
    }
    w.shutdown().await.unwrap();
    let up = upload.commit().await.unwrap();
    assert_eq!(up.bytes, total as u64);
    let got = common::seed::get_object(&app, &app.buckets.exports, &spec.key).await;
    assert_eq!(got.len(), want.len());
    assert!(got == want, "object differs from the bytes written");
    let parts = app
        .s3
        .get_object_attributes()
        .bucket(&app.buckets.exports)
        .key(&spec.key)
        .object_attributes(aws_sdk_s3::types::ObjectAttributes::ObjectParts)
        .send()
        .await
        .ok()
        .and_then(|a| a.object_parts().and_then(|p| p.total_parts_count()));
    // Not every S3 implementation reports parts; when it does, three.
    if let Some(n) = parts {
        assert_eq!(n, 3);
    }
    app.stop().await;
}
