//! CCPA leaves nothing behind (spec: exports.md "Nothing left behind"):
//! a user who entered two campaigns, every export type present (a
//! TMOL-published `codes` export and one whose publish failed among them);
//! after the deletion every bucket is listed and every remaining object
//! read. And `waitlist` after a deletion: the other fans of earlier waves
//! stay excluded, the deleted user is in no wave file.

use std::collections::{BTreeMap, BTreeSet};

use mongodb::bson::{doc, oid::ObjectId, DateTime, Document};
use serde_json::{json, Value};
use vf_export::exports::{CcpaFiles, Registry};

use crate::ccpa::{audit_objects, audit_records, delete_user, is_deleted, user_sha};
use crate::common::seed::*;
use crate::common::{insert, unique, TestApp};

const TMOL_ROLE: &str = "arn:aws:iam::123456789012:role/tmol";
const SFMC_ROLE: &str = "arn:aws:iam::123456789012:role/sfmc";

/// What of user 1 could be in a file: ids, contact data, member id, codes
/// (`sha(1)` is the SFMC `SubscriberKey`).
fn markers() -> Vec<String> {
    [
        u(1),
        sha(1),
        "a@x.io".into(),
        "tm1@x.io".into(),
        "+15551234567".into(),
        "+1999".into(),
        "Annie".into(),
        "1001".into(),
        "AAA1".into(),
        "C2U1".into(),
    ]
    .into()
}

/// An object's text: gunzipped, or its ZIP entries one after another.
async fn readable(key: &str, bytes: Vec<u8>) -> String {
    if key.ends_with(".gz") {
        gunzip(&bytes).await
    } else if key.ends_with(".zip") {
        unzip(bytes)
            .await
            .into_iter()
            .map(|(name, text)| format!("{name}\n{text}"))
            .collect()
    } else {
        text(bytes)
    }
}

/// Every object of every bucket: (bucket, key) → bytes.
async fn everything(app: &TestApp, buckets: &[&str]) -> BTreeMap<(String, String), Vec<u8>> {
    let mut all = BTreeMap::new();
    for b in buckets {
        for k in app.object_keys(b).await {
            let bytes = get_object(app, b, &k).await;
            all.insert((b.to_string(), k), bytes);
        }
    }
    all
}

/// Campaign c2 (user 1 and user 9; user 1's entry is in the fixture) and
/// campaign c9 (user 9 only).
async fn seed_more(app: &TestApp) {
    let db = &app.db;
    insert(
        db,
        "campaigns",
        vec![
            doc! { "_id": "c2", "name": "Tour 2027", "preferences": [], "promoters": [] },
            doc! { "_id": "c9", "name": "Elsewhere", "preferences": [], "promoters": [] },
        ],
    )
    .await;
    insert(
        db,
        "markets",
        vec![
            doc! { "_id": "c2-m1", "campaignId": "c2", "name": "Austin", "city": "Austin", "state": "TX", "event": { "ids": ["E9"] } },
            doc! { "_id": "c9-m1", "campaignId": "c9", "name": "Reno", "city": "Reno", "state": "NV", "event": { "ids": [] } },
        ],
    )
    .await;
    db.collection::<Document>("entries")
        .update_one(
            // Dotted: nx-27017 refuses a whole `_id` document as a filter.
            doc! { "_id.campaign_id": "c2", "_id.user_id": u(1) },
            doc! { "$set": { "fields.market": "c2-m1" } },
        )
        .await
        .unwrap();
    let created = DateTime::from_millis(1_767_225_600_123);
    let nine = |cid: &str| {
        doc! { "_id": { "campaign_id": cid, "user_id": u(9) },
        "fields": { "market": format!("{cid}-m1"), "email": "nine@x.io" }, "locale": "en-us", "date": { "created": created } }
    };
    insert(db, "entries", vec![nine("c2"), nine("c9")]).await;
    insert(
        db,
        "scoring",
        vec![
            doc! { "campaignId": "c2", "userId": u(9), "memberId": "2009", "selected": false, "locale": "en-us", "market": "c2-m1", "score": 0.2 },
        ],
    )
    .await;
    let at = DateTime::from_millis(1_767_312_000_000);
    insert(
        db,
        "codes",
        vec![
            doc! { "campaignId": "c2", "code": "C2U1", "status": "assigned", "assignedTo": u(1),
            "assignedAt": at, "marketId": "c2-m1", "waveDateKey": "20260401" },
            doc! { "campaignId": "c2", "code": "C2F9", "status": "assigned", "assignedTo": u(9),
            "assignedAt": at, "marketId": "c2-m1", "waveDateKey": "20260401" },
        ],
    )
    .await;
}

/// The raw export records of a campaign.
async fn records(app: &TestApp, cid: &str) -> Vec<Document> {
    use futures::TryStreamExt;
    app.db
        .collection::<Document>("exports")
        .find(doc! { "campaignId": cid })
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

fn keys_of(d: &Document) -> Vec<String> {
    match d.get("key") {
        Some(mongodb::bson::Bson::String(k)) => vec![k.clone()],
        Some(mongodb::bson::Bson::Array(a)) => a
            .iter()
            .filter_map(|k| k.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

#[tokio::test]
async fn after_ccpa_no_object_in_any_bucket_holds_the_users_rows() {
    // The TMOL bucket does not exist yet: the first `codes` export's
    // publish fails and leaves its main object.
    let tmol = format!("vf-tmol-{}", unique(""));
    let sfmc = bucket("vf-sfmc-").await;
    let app = TestApp::spawn_with(&[
        ("tmol-bucket", &tmol),
        ("tmol-role-arn", TMOL_ROLE),
        ("sfmc-bucket", &sfmc),
        ("sfmc-role-arn", SFMC_ROLE),
    ])
    .await;
    seed(&app).await;
    seed_more(&app).await;
    let failed = run(&app, CID, json!({ "exportType": "codes" })).await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    let failed_key = failed["key"].as_str().expect("the kept object's key");
    app.s3.create_bucket().bucket(&tmol).send().await.unwrap();

    // Every type in c1 (both wave files: 20260301 holds user 1's row,
    // 20260302 does not); five in c2; one in c9, which user 1 never entered.
    let mut runs: Vec<(&str, Value)> = vec![];
    for t in vf_export::exports::Registry::new().names() {
        if t != "codeWaves" {
            runs.push((CID, json!({ "exportType": t })));
        }
    }
    runs.push((
        CID,
        json!({ "exportType": "codeWaves", "dateKey": "20260301" }),
    ));
    runs.push((
        CID,
        json!({ "exportType": "codeWaves", "dateKey": "20260302", "compression": "gzip" }),
    ));
    for t in ["entries", "fanlist", "codes", "codeAssignments", "scoring"] {
        runs.push(("c2", json!({ "exportType": t })));
    }
    runs.push((
        "c2",
        json!({ "exportType": "codeWaves", "dateKey": "20260401", "compression": "gzip" }),
    ));
    runs.push(("c2", json!({ "exportType": "waitlist" })));
    runs.push(("c9", json!({ "exportType": "entries" })));
    for (cid, body) in &runs {
        let done = run(&app, cid, body.clone()).await;
        assert_eq!(done["status"], "FINISHED", "{cid} {body}: {done}");
    }

    // What a deletion must remove, from the records: every object of the
    // user's campaigns' exports but the partner types' and the wave files.
    let (mut exports, mut files) = (0, 0);
    let mut kept_whole: BTreeSet<(String, String)> = BTreeSet::new();
    let mut waves: BTreeMap<String, ObjectId> = BTreeMap::new();
    let bucket_of = |t: &str| match t {
        "scoring" => app.buckets.scoring.clone(),
        "verifiedEntries" | "codeWaves" => app.buckets.vf_scoring.clone(),
        "autoReminderEmail" => sfmc.clone(),
        _ => app.buckets.exports.clone(),
    };
    for cid in [CID, "c2", "c9"] {
        for d in records(&app, cid).await {
            let t = d.get_str("exportType").unwrap();
            let keys = keys_of(&d);
            assert!(!keys.is_empty(), "{d}");
            if cid == "c9" || Registry::new().ccpa_files(t) == CcpaFiles::Keep {
                kept_whole.extend(keys.into_iter().map(|k| (bucket_of(t), k)));
            } else if t == "codeWaves" {
                waves.insert(keys[0].clone(), d.get_object_id("_id").unwrap());
            } else {
                let published = d
                    .get_document("meta")
                    .and_then(|m| m.get_array("published"))
                    .map_or(0, |p| p.len());
                exports += 1;
                files += keys.len() + published;
            }
        }
    }
    // c1: 11 types + the failed codes export; c2: 5; TMOL copies: 4.
    assert_eq!((exports, files), (17, 21));
    let buckets = [
        app.buckets.exports.clone(),
        app.buckets.scoring.clone(),
        app.buckets.vf_scoring.clone(),
        tmol.clone(),
        sfmc.clone(),
    ];
    let bucket_refs: Vec<&str> = buckets.iter().map(String::as_str).collect();
    let before = everything(&app, &bucket_refs).await;
    assert!(before.contains_key(&(app.buckets.exports.clone(), failed_key.to_string())));
    assert_eq!(app.object_keys(&tmol).await.len(), 4);

    let (s, v) = delete_user(&app, &u(1), true).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["deletedCount"],
        json!({ "exports": exports, "files": files })
    );
    // The c1 wave of 20260301 and the c2 wave lose user 1's row each.
    assert_eq!(v["rewritten"], json!({ "files": 2, "rows": 2 }));
    assert_eq!((&v["skipped"], &v["inFlight"]), (&json!(4), &json!(0)));

    // Every bucket, every remaining object.
    let after = everything(&app, &bucket_refs).await;
    let remaining: BTreeSet<(String, String)> = after.keys().cloned().collect();
    let mut want = kept_whole.clone();
    want.extend(
        waves
            .keys()
            .map(|k| (app.buckets.vf_scoring.clone(), k.clone())),
    );
    assert_eq!(remaining, want);
    for ((b, k), bytes) in &after {
        if kept_whole.contains(&(b.clone(), k.clone())) {
            // The partner types' objects (and another campaign's) untouched.
            assert_eq!(Some(bytes), before.get(&(b.clone(), k.clone())), "{b}/{k}");
            continue;
        }
        let text = readable(k, bytes.clone()).await;
        for m in markers() {
            assert!(!text.contains(&m), "{m} left in {b}/{k}:\n{text}");
        }
    }
    for b in &buckets {
        assert_eq!(app.open_uploads(b).await, 0, "{b}");
    }
    // The wave files hold everyone else; the one without user 1 is as it was.
    let wave_text = |cid: &str, date: &str| {
        let (k, _) = waves
            .iter()
            .find(|(k, _)| k.starts_with(&format!("campaigns/{cid}/waves/{date}/")))
            .unwrap();
        let k = k.clone();
        let after = &after;
        let vf = app.buckets.vf_scoring.clone();
        async move { readable(&k, after[&(vf, k.clone())].clone()).await }
    };
    assert_eq!(
        wave_text(CID, "20260301").await,
        csv(&[
            "memberId,code,Mobile Phone,locale,market".into(),
            "1006,AAA2,,en-us,c1-m1".into()
        ])
    );
    assert_eq!(
        wave_text("c2", "20260401").await,
        csv(&[
            "memberId,code,Mobile Phone,locale,market".into(),
            "2009,C2F9,,en-us,c2-m1".into()
        ])
    );
    let untouched = waves
        .keys()
        .find(|k| k.contains("/20260302/"))
        .map(|k| (app.buckets.vf_scoring.clone(), k.clone()))
        .unwrap();
    assert_eq!(after.get(&untouched), before.get(&untouched));

    // The records: marked, without a path; the wave exports keep theirs,
    // and their digest, size and count follow the rewritten object.
    for cid in [CID, "c2"] {
        for d in records(&app, cid).await {
            let t = d.get_str("exportType").unwrap();
            let gone = is_deleted(&d);
            assert_eq!(
                gone,
                Registry::new().ccpa_files(t) == CcpaFiles::Delete,
                "{cid} {t}: {d}"
            );
        }
    }
    for (key, id) in &waves {
        let cid = key.split('/').nth(1).unwrap();
        let v = app.get_export(cid, &id.to_hex()).await;
        let bytes = app.download(v["path"].as_str().expect("path")).await;
        assert_integrity(&v, &bytes);
        let rows = readable(key, bytes).await.lines().count() - 1;
        assert_eq!(v["count"], json!(rows), "{v}");
    }

    // The audit record lists exactly what was deleted and rewritten.
    let audits = audit_records(&app, &u(1)).await;
    assert_eq!(audits.len(), 1);
    let a = &audits[0];
    assert_eq!(a["userIdSha256"], json!(user_sha(&u(1))));
    assert_eq!(a["requestedBy"], "admin");
    assert_eq!(a["status"], "DONE");
    assert_eq!(a["campaigns"], json!([CID, "c2"]));
    let mut listed = BTreeSet::new();
    for k in before.keys().filter(|k| !after.contains_key(*k)) {
        listed.insert(("deleted".to_string(), k.0.clone(), k.1.clone()));
    }
    for k in waves.keys().filter(|k| !k.contains("/20260302/")) {
        listed.insert((
            "rewritten".to_string(),
            app.buckets.vf_scoring.clone(),
            k.clone(),
        ));
    }
    assert_eq!(
        audit_objects(a).into_iter().collect::<BTreeSet<_>>(),
        listed
    );
    assert_eq!(audit_objects(a).len(), listed.len(), "listed twice: {a}");
    assert_eq!(a["exports"].as_array().unwrap().len(), exports);
    for o in a["objects"].as_array().unwrap() {
        if o["action"] == "rewritten" {
            assert_eq!(o["rowsRemoved"], 1, "{o}");
            assert_eq!(o["exportType"], "codeWaves", "{o}");
        }
    }
    // No personal data (the digits-only markers could occur by chance
    // in the record's hex digests and ids, so they are not looked for).
    let audit_text = a.to_string();
    for m in [
        u(1),
        "a@x.io".into(),
        "tm1@x.io".into(),
        "+15551234567".into(),
        "Annie".into(),
    ] {
        assert!(!audit_text.contains(m.as_str()), "{m} in the audit record");
    }

    // A repeat: zeros, and nothing changes.
    let (s, v) = delete_user(&app, &u(1), true).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["deletedCount"], json!({ "exports": 0, "files": 0 }));
    assert_eq!(v["rewritten"], json!({ "files": 0, "rows": 0 }));
    assert_eq!(everything(&app, &bucket_refs).await, after);
    app.stop().await;
}

#[tokio::test]
async fn waitlist_after_ccpa_still_excludes_the_other_fans_of_earlier_waves() {
    let app = TestApp::spawn().await;
    seed(&app).await;
    // User 1's second code, in the gzip wave of 20260302 (user 2's there).
    insert(
        &app.db,
        "codes",
        vec![
            doc! { "campaignId": CID, "code": "BBB1", "status": "assigned", "assignedTo": u(1),
            "assignedAt": DateTime::now(), "marketId": "c1-m1", "waveDateKey": "20260302" },
        ],
    )
    .await;
    for body in [
        json!({ "exportType": "codeWaves", "dateKey": "20260301" }),
        json!({ "exportType": "codeWaves", "dateKey": "20260302", "compression": "gzip" }),
    ] {
        assert_eq!(run(&app, CID, body).await["status"], "FINISHED");
    }
    // A wave file written by hand: user 1's code under another member id,
    // and fan 1007's row.
    let vf = app.buckets.vf_scoring.clone();
    let manual = "campaigns/c1/waves/20260303/manual.csv";
    app.s3
        .put_object()
        .bucket(&vf)
        .key(manual)
        .body(b"memberId,code\n5555,AAA1\n1007,Q\n".to_vec().into())
        .send()
        .await
        .unwrap();
    let waves_before = wave_files(&app).await;
    assert!(waves_before["20260302"].contains("BBB1"));
    let (_, before) = run_ok(&app, "waitlist").await;
    // 1006 (wave of 20260301) and 1007 (the hand-written file) excluded.
    let want = csv(&[
        "memberId,locale,market,score".into(),
        "m-8,en-au,,0.3".into(),
    ]);
    assert_eq!(text(before), want);

    let (s, v) = delete_user(&app, &u(1), true).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["rewritten"], json!({ "files": 3, "rows": 3 }));

    // The other fans of earlier waves are still excluded.
    let (_, after) = run_ok(&app, "waitlist").await;
    assert_eq!(text(after), want);
    // The deleted user is in no wave file; everyone else's rows are.
    let files = wave_files(&app).await;
    for (date, text) in &files {
        for m in markers().iter().chain(&["BBB1".to_string()]) {
            assert!(!text.contains(m.as_str()), "{m} left in {date}:\n{text}");
        }
    }
    assert_eq!(
        files["20260301"],
        csv(&[
            "memberId,code,Mobile Phone,locale,market".into(),
            "1006,AAA2,,en-us,c1-m1".into()
        ])
    );
    // User 2's row as it was written (its code still neutralised).
    let kept: Vec<String> = waves_before["20260302"]
        .lines()
        .filter(|l| !l.contains("BBB1"))
        .map(str::to_string)
        .collect();
    assert_eq!(kept.len(), 2);
    assert_eq!(files["20260302"], csv(&kept));
    assert_eq!(files["20260303"], "memberId,code\n1007,Q\n");
    app.stop().await;
}

/// The campaign's wave files by date key, as text.
async fn wave_files(app: &TestApp) -> BTreeMap<String, String> {
    let vf = &app.buckets.vf_scoring;
    let mut files = BTreeMap::new();
    for k in app.object_keys(vf).await {
        let text = readable(&k, get_object(app, vf, &k).await).await;
        files.insert(k.split('/').nth(3).unwrap().to_string(), text);
    }
    files
}
