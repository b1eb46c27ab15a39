//! `vf-export migrate [--dry-run]`: the records the original left active
//! get what our queue needs (activeKey, a lapsed lease) and nothing else;
//! the oldest of colliding ones keeps the key, the rest are reported, none
//! deleted; a dry run and a second run change nothing; afterwards a repeat
//! POST returns the legacy export, and a legacy TRIGGERED export is
//! reclaimed and finished, or expired, never stuck.

use std::time::Duration;

use crate::common::{insert, procs, TestApp};
use crate::cutover_api::original_shape;
use crate::legacy_records::{campaign_with_market, fixtures, id_text, out, vf};
use futures::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId, Bson, DateTime, Document};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(120);

/// Fields migrate may add; every other field stays exactly as stored.
const OURS: [&str; 4] = ["activeKey", "lease", "attempts", "migratedAt"];

async fn snapshot(app: &TestApp) -> Vec<Document> {
    app.db
        .collection::<Document>("exports")
        .find(doc! {})
        .sort(doc! { "_id": 1 })
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

/// A record as the original left it: no activeKey, lease or attempts.
fn legacy(
    cid: &str,
    ty: &str,
    status: &str,
    created: DateTime,
    triggered: Option<DateTime>,
) -> Document {
    doc! {
        "_id": ObjectId::new(), "campaignId": cid, "campaignName": "Migrated", "exportType": ty,
        "status": status, "requesterUserId": "u-legacy", "correlation": "corr-legacy", "dateKey": null,
        "includeAllMarkets": false,
        "date": { "created": created, "triggered": triggered.map(Bson::DateTime).unwrap_or(Bson::Null),
                  "finished": null, "failed": null, "expired": null },
        "key": null, "count": null, "error": null, "token": "eyJ.legacy.jwt",
    }
}

fn days_ago(d: i64) -> DateTime {
    DateTime::from_millis(DateTime::now().timestamp_millis() - d * 86_400_000)
}

/// Only our fields came or went: every other stored field keeps its value.
fn assert_additive(before: &Document, after: &Document) {
    for (k, v) in before.iter().filter(|(k, _)| !OURS.contains(&k.as_str())) {
        assert_eq!(
            after.get(k),
            Some(v),
            "{} changed {k}: {after}",
            id_text(before)
        );
    }
    for k in after.keys().filter(|k| !before.contains_key(*k)) {
        assert!(OURS.contains(&k.as_str()), "{} gained {k}", id_text(before));
    }
}

#[tokio::test]
async fn migrate_adopts_legacy_active_records_and_a_dry_run_or_a_repeat_changes_nothing() {
    // No worker: nothing but migrate touches the records.
    let app = TestApp::spawn_with(&[("worker-concurrency", "0")]).await;
    let cid = "mig-c1";
    campaign_with_market(&app, cid).await;
    let oldest = legacy(cid, "entries", "PENDING", days_ago(30), None);
    let newer = legacy(cid, "entries", "PENDING", days_ago(20), None);
    let running = legacy(
        cid,
        "fanlist",
        "TRIGGERED",
        days_ago(30),
        Some(days_ago(30)),
    );
    let mut dated = legacy(cid, "codeWaves", "PENDING", days_ago(10), None);
    dated.insert("dateKey", 20240101);
    let mut broken = legacy(cid, "entries", "PENDING", days_ago(5), None);
    broken.remove("exportType");
    // Finished by the original after a rollback, still holding the key
    // vf-export gave it when it queued it.
    let mut stale = legacy(
        cid,
        "artistOptIn",
        "FINISHED",
        days_ago(3),
        Some(days_ago(3)),
    );
    stale.extend(
        doc! { "activeKey": "mig-c1|artistOptIn|", "attempts": 1, "key": "k.csv", "count": 3 },
    );
    let ids: Vec<ObjectId> = [&oldest, &newer, &running, &dated, &broken, &stale]
        .iter()
        .map(|d| d.get_object_id("_id").unwrap())
        .collect();
    let (oldest_id, newer_id, running_id, dated_id, broken_id, stale_id) =
        (ids[0], ids[1], ids[2], ids[3], ids[4], ids[5]);
    insert(
        &app.db,
        "exports",
        vec![oldest, newer, running, dated, broken, stale],
    )
    .await;
    // And every legacy shape of another campaign.
    let other = ObjectId::new().to_hex();
    let fx = fixtures(&other);
    insert(
        &app.db,
        "exports",
        fx.iter().map(|f| f.doc.clone()).collect(),
    )
    .await;
    let before = snapshot(&app).await;

    // Dry run: the plan, nothing written; non-zero for the unreadable
    // active record it could not adopt.
    let o = vf(&app, &["migrate", "--dry-run"]);
    let (stdout, stderr) = out(&o);
    assert!(!o.status.success(), "{stdout}");
    assert!(stderr.contains("1 active record(s) unreadable"), "{stderr}");
    assert!(
        stdout.contains("would set activeKey on 5, lapsed lease on 2; 1 stale activeKey released"),
        "{stdout}"
    );
    assert!(
        stdout.contains("(dry run: nothing was written)"),
        "{stdout}"
    );
    assert_eq!(snapshot(&app).await, before, "a dry run wrote");

    let o = vf(&app, &["migrate"]);
    let (stdout, stderr) = out(&o);
    assert!(!o.status.success(), "{stdout}");
    assert!(stderr.contains("1 active record(s) unreadable"), "{stderr}");
    println!("{stdout}");
    assert!(
        stdout.contains("set activeKey on 5, lapsed lease on 2; 1 stale activeKey released; 1 duplicate active reported; 7 unreadable (1 active); 0 changed meanwhile; 0 failed"),
        "{stdout}"
    );
    let line = |id: ObjectId, what: &str| {
        stdout
            .lines()
            .any(|l| l.starts_with(what) && l.contains(&id.to_hex()))
    };
    assert!(
        line(newer_id, "duplicate active")
            && stdout.contains(&format!("{oldest_id} holds this key")),
        "{stdout}"
    );
    assert!(
        line(broken_id, "unreadable") && line(running_id, "lease"),
        "{stdout}"
    );
    assert!(!stdout.contains("eyJ"), "{stdout}");

    let after = snapshot(&app).await;
    for (b, a) in before.iter().zip(&after) {
        assert_additive(b, a);
    }
    let d = app.export_doc(oldest_id).await;
    assert_eq!(d.get_str("activeKey").unwrap(), "mig-c1|entries|");
    assert!(
        matches!(d.get("migratedAt"), Some(Bson::DateTime(_))),
        "{d}"
    );
    assert!(d.get("lease").is_none());
    let d = app.export_doc(newer_id).await;
    assert!(
        d.get("activeKey").is_none() && d.get("migratedAt").is_none(),
        "{d}"
    );
    let d = app.export_doc(running_id).await;
    assert_eq!(d.get_str("activeKey").unwrap(), "mig-c1|fanlist|");
    let lease = d.get_document("lease").unwrap();
    assert_eq!(lease.get_str("owner").unwrap(), "vf-export-migrate");
    assert!(lease.get_i64("expiresAtMs").unwrap() <= DateTime::now().timestamp_millis());
    assert_eq!(d.get_i32("attempts").unwrap(), 1);
    let d = app.export_doc(dated_id).await;
    assert_eq!(d.get_str("activeKey").unwrap(), "mig-c1|codeWaves|20240101");
    assert_eq!(app.export_doc(broken_id).await.get("activeKey"), None);
    let d = app.export_doc(stale_id).await;
    assert!(
        d.get("activeKey").is_none() && d.get("migratedAt").is_some(),
        "{d}"
    );
    // The adopted records are still ones the original reads (the fourth
    // keeps the number dateKey the original stored).
    for id in &ids[..3] {
        let problems = original_shape(&app.export_doc(*id).await);
        assert!(problems.is_empty(), "{id}: {problems:?}");
    }

    // A repeat POST of the legacy PENDING export's campaign and type gets
    // it back (200), and one of the running legacy one gets that.
    let r = app
        .post_export(cid, json!({ "exportType": "entries" }))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["id"], oldest_id.to_hex());
    let r = app
        .post_export(cid, json!({ "exportType": "fanlist" }))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["id"], running_id.to_hex());
    // The finished one no longer answers for its campaign and type.
    let r = app
        .post_export(cid, json!({ "exportType": "artistOptIn" }))
        .await;
    assert_eq!(r.status(), 201);
    assert_ne!(r.json::<Value>().await.unwrap()["id"], stale_id.to_hex());

    // The operator cancels the unreadable active record; then migrate has
    // nothing left it cannot do, and changes nothing.
    let o = vf(&app, &["exports", "cancel", &broken_id.to_hex()]);
    assert!(o.status.success(), "{:?}", out(&o));
    let settled = snapshot(&app).await;
    for args in [&["migrate"][..], &["migrate", "--dry-run"][..]] {
        let o = vf(&app, args);
        let (stdout, stderr) = out(&o);
        assert!(o.status.success(), "{args:?}: {stdout}{stderr}");
        assert!(
            stdout.contains("activeKey on 0, lapsed lease on 0; 0 stale"),
            "{args:?}: {stdout}"
        );
        assert_eq!(snapshot(&app).await, settled, "{args:?} changed something");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_legacy_triggered_export_is_reclaimed_or_expired_after_migrate_never_stuck() {
    // Migrate before any worker sees the records, as at the cutover.
    let app = TestApp::spawn_with(&[("worker-concurrency", "0")]).await;
    let cid = "mig-run";
    procs::seed(&app, cid, 40, 2).await;
    let now = DateTime::now().timestamp_millis();
    // Triggered two hours ago (past EXPORT_TIMEOUT_SECS, 3600): expired by
    // the timeout rule, or reclaimed and finished if a worker gets it first.
    let overdue = legacy(
        cid,
        "fanlist",
        "TRIGGERED",
        DateTime::from_millis(now - 7_300_000),
        Some(DateTime::from_millis(now - 7_200_000)),
    );
    // Triggered five minutes ago by a Node worker that is gone: reclaimed.
    let recent = legacy(
        cid,
        "entries",
        "TRIGGERED",
        DateTime::from_millis(now - 400_000),
        Some(DateTime::from_millis(now - 300_000)),
    );
    let (overdue_id, recent_id) = (
        overdue.get_object_id("_id").unwrap(),
        recent.get_object_id("_id").unwrap(),
    );
    insert(&app.db, "exports", vec![overdue, recent]).await;

    let o = vf(&app, &["migrate"]);
    let (stdout, stderr) = out(&o);
    assert!(o.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("set activeKey on 2, lapsed lease on 2"),
        "{stdout}"
    );

    let worker = app.sibling(&[]).await;
    let v = worker.wait_done(cid, &recent_id.to_hex(), WAIT).await;
    assert_eq!(v["status"], "FINISHED", "{v}");
    assert_eq!(v["count"], 40, "{v}");
    assert_eq!(
        app.export_doc(recent_id).await.get_i32("attempts").unwrap(),
        2
    );
    let body = worker.download(v["path"].as_str().unwrap()).await;
    assert_eq!(procs::csv_records(&body), 41);
    let v = worker.wait_done(cid, &overdue_id.to_hex(), WAIT).await;
    let st = v["status"].as_str().unwrap();
    assert!(st == "EXPIRED" || st == "FINISHED", "{v}");
    println!("the overdue legacy export ended {st}");
    // Both end as records the original reads.
    for id in [recent_id, overdue_id] {
        let problems = original_shape(&app.export_doc(id).await);
        assert!(problems.is_empty(), "{id}: {problems:?}");
    }
    worker.stop().await;
    app.stop().await;
}
