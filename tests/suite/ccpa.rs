//! CCPA deletion: supreme only, deletes the objects of the user's
//! campaigns' exports (not the partner types), marks the records, idempotent.

use crate::common::{campaign_doc, insert, TestApp};
use mongodb::bson::{doc, oid::ObjectId, DateTime, Document};
use serde_json::{json, Value};

async fn seed(app: &TestApp, cid: &str, user: &str) {
    insert(&app.db, "campaigns", vec![campaign_doc(cid, "Privacy")]).await;
    insert(
        &app.db,
        "markets",
        vec![doc! { "_id": format!("{cid}-m"), "campaignId": cid, "city": "Austin", "state": "TX", "event": { "ids": [] } }],
    )
    .await;
    insert(
        &app.db,
        "entries",
        vec![doc! { "_id": { "campaign_id": cid, "user_id": user }, "fields": { "market": format!("{cid}-m"), "email": "private@example.com" },
                    "date": { "created": DateTime::from_millis(1_767_225_600_000) } }],
    )
    .await;
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

async fn delete_user(app: &TestApp, user: &str, supreme: bool) -> (u16, Value) {
    let r = app
        .http
        .delete(format!("{}/ccpa/users/{user}", app.base))
        .bearer_auth(app.token("admin", &[("c1", &["REPORT"])], supreme))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
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

    let (s, v) = delete_user(&app, "user-1", true).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v,
        json!({"message": "User exports deleted successfully", "deletedCount": {"exports": 3, "files": 2}, "skipped": 1, "inFlight": 1})
    );
    let keys = app.object_keys(&exports).await;
    assert!(
        !keys.contains(&entries_key) && keys.contains(&other_key),
        "{keys:?}"
    );
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
    assert_eq!(n, 3);
    app.stop().await;
}
