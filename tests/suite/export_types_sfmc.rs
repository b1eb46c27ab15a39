//! The SFMC family over HTTP against the stand-ins: reminderEmail (streamed
//! ZIP, regions, segments), reminderEmailSample, autoReminderEmail (one
//! object per region in the SFMC bucket through sts:AssumeRole), an
//! unconfigured destination, and MissingCodeFromMarket (nothing left
//! behind).

use crate::common::seed::*;
use crate::common::TestApp;
use mongodb::bson::doc;
use serde_json::json;

const SFMC_ROLE: &str = "arn:aws:iam::123456789012:role/sfmc";
const HEADER: &str = "SubscriberKey,EmailAddress,FirstName,Locale,ArtistName,TourName,VenueName,EventDate,CityState,Link,Passcode,ThemeColor";
const NYC_EVENT: &str =
    "Muse,Drones,MSG,2026-05-28T20:26:40.000Z,\"New York, NY\",https://tm.example/e1";
const LA_EVENT: &str =
    "Muse,Drones,Forum,2026-01-01T00:00:00.000Z,\"Los Angeles, CA\",https://tm.example/e3";

/// NA: users 1 (en-us), 2 (fr-ca) and 5 (fr-fr: no region of its own, so
/// the default region; counted in `meta.defaultRegionRows`); UK: user 4
/// (en-uk → en-gb); DE: user 3. In user order within a region. Passcodes:
/// the lowest code id of the entry's market.
fn na() -> Vec<String> {
    vec![
        format!("{},a@x.io,Annie,en-us,{NYC_EVENT},A1,#ff0000", sha(1)),
        format!(
            "{},tm2@x.io,{FORMULA},fr-ca,{NYC_EVENT},'=C1,#ff0000",
            sha(2)
        ),
        format!("{},tm5@x.io,Eve,fr-fr,{NYC_EVENT},F5,#ff0000", sha(5)),
    ]
}
fn uk() -> Vec<String> {
    vec![format!(
        "{},zoë@x.io,Zoë,en-gb,{LA_EVENT},U1,#ff0000",
        sha(4)
    )]
}
fn de() -> Vec<String> {
    vec![format!("{},'@me,,de-de,{LA_EVENT},D5,#ff0000", sha(3))]
}
fn with_header(rows: &[String]) -> String {
    let mut v = vec![HEADER.to_string()];
    v.extend_from_slice(rows);
    csv(&v)
}

#[tokio::test]
async fn reminder_email_zip_by_region() {
    let app = TestApp::spawn().await;
    seed(&app).await;
    let (done, body) = run_ok(&app, "reminderEmail").await;
    // Every selected row is in the ZIP, the default region's one counted.
    assert_eq!(done["count"], 5);
    assert_eq!(done["meta"]["defaultRegionRows"], 1);
    let key = done["key"].as_str().unwrap();
    assert!(
        key.starts_with("campaigns/tour-2026-c1/reminderEmail/")
            && key.ends_with("/Combined - Tour 2026 ASU - Reminder Email Data.zip"),
        "{key}"
    );
    let want = vec![
        ("NA/Tour 2026 - 1.csv".to_string(), with_header(&na())),
        ("UK/Tour 2026 - 1.csv".to_string(), with_header(&uk())),
        ("DE/Tour 2026 - 1.csv".to_string(), with_header(&de())),
    ];
    assert_eq!(
        done["meta"]["files"],
        json!(want.iter().map(|(n, _)| n).collect::<Vec<_>>())
    );
    assert_eq!(unzip(body).await, want);
    // No personal data in the worker's view of the export.
    assert!(!done.to_string().contains("a@x.io"));
    app.stop().await;
}

#[tokio::test]
async fn reminder_email_segments_at_max_rows_per_file() {
    let app = TestApp::spawn_with(&[("max-rows-per-file", "1")]).await;
    seed(&app).await;
    let (done, body) = run_ok(&app, "reminderEmail").await;
    let na = na();
    let want = vec![
        ("NA/Tour 2026 - 1.csv".to_string(), with_header(&na[..1])),
        ("NA/Tour 2026 - 2.csv".to_string(), with_header(&na[1..2])),
        ("NA/Tour 2026 - 3.csv".to_string(), with_header(&na[2..])),
        ("UK/Tour 2026 - 1.csv".to_string(), with_header(&uk())),
        ("DE/Tour 2026 - 1.csv".to_string(), with_header(&de())),
    ];
    assert_eq!(
        done["meta"]["files"],
        json!(want.iter().map(|(n, _)| n).collect::<Vec<_>>())
    );
    assert_eq!(unzip(body).await, want);
    app.stop().await;
}

#[tokio::test]
async fn reminder_email_sample_has_the_region() {
    let app = TestApp::spawn().await;
    seed(&app).await;
    let (done, body) = run_ok(&app, "reminderEmailSample").await;
    assert_eq!(done["meta"]["defaultRegionRows"], 1);
    let mut rows = vec![format!("{HEADER},region")];
    rows.extend(na().into_iter().map(|r| format!("{r},NA")));
    rows.extend(uk().into_iter().map(|r| format!("{r},UK")));
    rows.extend(de().into_iter().map(|r| format!("{r},DE")));
    assert_eq!(text(body), csv(&rows));
    app.stop().await;
}

#[tokio::test]
async fn auto_reminder_email_one_object_per_region_with_the_assumed_role() {
    let sfmc = bucket("vf-sfmc-").await;
    // Route the app's AWS calls through a recorder, to see which
    // credentials signed what.
    let proxy = match crate::common::faults::proxy_upstream() {
        Some(ep) => Some(recording_proxy(ep).await),
        None => None,
    };
    let mut extra = vec![("sfmc-bucket", sfmc.as_str()), ("sfmc-role-arn", SFMC_ROLE)];
    if let Some((url, _)) = &proxy {
        extra.push(("aws-endpoint-url", url.as_str()));
    }
    let app = TestApp::spawn_with(&extra).await;
    seed(&app).await;
    let done = run(&app, CID, json!({ "exportType": "autoReminderEmail" })).await;
    assert_eq!(done["status"], "FINISHED", "{done}");
    assert!(done.get("path").is_none(), "{done}");
    let created = chrono::DateTime::parse_from_rfc3339(done["date"]["created"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    let stamp = created.format("%Y%m%d%H%M");
    let keys = [
        format!("Ticketmaster/7222895/TMDemandMgmt/DM_ArtistPresale_V03_Muse_c1_{stamp}.csv"),
        format!(
            "TMInternational/1314420/DM_ArtistPresale/DM_ArtistPresale_V03_Muse_c1_{stamp}.csv"
        ),
        format!(
            "TMInternational/1347780/DM_ArtistPresale/DM_ArtistPresale_V03_Muse_c1_{stamp}.csv"
        ),
    ];
    assert_eq!(done["key"], json!(keys));
    assert_eq!(done["count"], 5);
    assert_eq!(done["meta"]["defaultRegionRows"], 1);
    let files = done["meta"]["files"].as_array().unwrap();
    assert_eq!(files.len(), 3, "{done}");
    for (i, (k, rows)) in keys.iter().zip([na(), uk(), de()]).enumerate() {
        let body = get_object(&app, &sfmc, k).await;
        // Integrity per object: key, digest, size and rows in meta.files.
        assert_eq!(files[i]["key"], json!(k));
        assert_integrity(&files[i], &body);
        assert_eq!(files[i]["rows"].as_u64(), Some(rows.len() as u64));
        assert_eq!(text(body), with_header(&rows));
        let acl = app
            .s3
            .get_object_acl()
            .bucket(&sfmc)
            .key(k)
            .send()
            .await
            .unwrap();
        assert!(!acl.grants().is_empty());
    }
    assert_eq!(app.open_uploads(&sfmc).await, 0);

    // The proof of AssumeRole: the STS call was made, and every request to
    // the SFMC bucket was signed with the access key it returned (which
    // moto records against the configured role), never the instance's.
    if let Some((_, seen)) = &proxy {
        let seen = seen.lock().unwrap().clone();
        assert!(
            seen.iter().any(|s| s.body_has_assume_role),
            "no sts:AssumeRole call"
        );
        let to_sfmc: Vec<_> = seen
            .iter()
            .filter(|s| s.path.starts_with(&format!("/{sfmc}")))
            .collect();
        assert!(
            to_sfmc.len() >= 3 * 3,
            "create/part/complete per object: {to_sfmc:?}"
        );
        let key_ids: std::collections::HashSet<&str> =
            to_sfmc.iter().map(|s| s.access_key.as_str()).collect();
        assert_eq!(key_ids.len(), 1, "{key_ids:?}");
        let assumed = *key_ids.iter().next().unwrap();
        let to_exports = seen
            .iter()
            .find(|s| !s.body_has_assume_role && !s.path.starts_with(&format!("/{sfmc}")))
            .map(|s| s.access_key.clone());
        assert_ne!(Some(assumed.to_string()), to_exports, "instance key used");
        if let Some(roles) = moto_assumed_roles(&aws_endpoint().unwrap()).await {
            assert!(
                roles
                    .iter()
                    .any(|(arn, key)| arn == SFMC_ROLE && key == assumed),
                "{assumed} not issued for {SFMC_ROLE}: {roles:?}"
            );
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn unconfigured_destination_fails_naming_it() {
    let app = TestApp::spawn().await;
    seed(&app).await;
    let done = run(&app, CID, json!({ "exportType": "autoReminderEmail" })).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    assert_eq!(done["error"]["message"], "SFMC_BUCKET is not configured");
    app.stop().await;
}

#[tokio::test]
async fn missing_code_fails_naming_the_market_and_leaves_nothing() {
    let sfmc = bucket("vf-sfmc-").await;
    let app = TestApp::spawn_with(&[("sfmc-bucket", &sfmc), ("sfmc-role-arn", SFMC_ROLE)]).await;
    seed(&app).await;
    // User 3 (DE, the last region) loses its code: the NA and UK objects
    // are complete by then and must be removed again.
    app.db
        .collection::<mongodb::bson::Document>("scoring")
        .update_one(
            doc! { "campaignId": CID, "memberId": "1003" },
            doc! { "$set": { "codes": [ { "id": 1, "marketId": "c1-m1", "code": "X" } ] } },
        )
        .await
        .unwrap();
    for t in ["autoReminderEmail", "reminderEmail", "reminderEmailSample"] {
        let done = run(&app, CID, json!({ "exportType": t })).await;
        assert_eq!(done["status"], "FAILED", "{t}: {done}");
        assert_eq!(done["error"]["message"], "no code for market c1-m2", "{t}");
        assert_eq!(
            done["error"]["payload"],
            json!({ "code": "MissingCodeFromMarket", "marketId": "c1-m2" })
        );
        let s = done.to_string();
        assert!(!s.contains(&u(3)) && !s.contains("@me"), "{s}");
    }
    assert!(app.object_keys(&sfmc).await.is_empty());
    assert_eq!(app.open_uploads(&sfmc).await, 0);
    assert!(app.object_keys(&app.buckets.exports).await.is_empty());
    assert_eq!(app.open_uploads(&app.buckets.exports).await, 0);
    app.stop().await;
}

#[tokio::test]
async fn every_selected_row_is_in_the_zip_unknown_and_missing_locales_included() {
    let app = TestApp::spawn().await;
    seed(&app).await;
    // Two more selected rows: a locale without a country, and no locale.
    let scoring = app.db.collection::<mongodb::bson::Document>("scoring");
    for (member, locale) in [("2001", Some("en")), ("2002", None)] {
        let mut d = doc! { "campaignId": CID, "userId": format!("{member:0>24}"), "memberId": member,
        "selected": true, "market": "c1-m1",
        "codes": [ { "id": 1, "marketId": "c1-m1", "code": format!("P{member}") } ] };
        if let Some(l) = locale {
            d.insert("locale", l);
        }
        scoring.insert_one(d).await.unwrap();
    }
    let selected = scoring
        .count_documents(doc! { "campaignId": CID, "selected": true })
        .await
        .unwrap();
    let (done, body) = run_ok(&app, "reminderEmail").await;
    let files = unzip(body).await;
    let rows: usize = files.iter().map(|(_, t)| t.lines().count() - 1).sum();
    assert_eq!(rows as u64, selected, "rows in the ZIP = selected rows");
    assert_eq!(done["count"].as_u64(), Some(selected));
    // fr-fr, en and no locale: the default region (NA).
    assert_eq!(done["meta"]["defaultRegionRows"], 3);
    let na = &files.iter().find(|(n, _)| n.starts_with("NA/")).unwrap().1;
    assert!(na.contains(",P2001,") && na.contains(",P2002,"), "{na}");
    app.stop().await;
}

#[tokio::test]
async fn a_failing_same_minute_export_leaves_the_finished_ones_objects_alone() {
    let sfmc = bucket("vf-sfmc-").await;
    let app = TestApp::spawn_with(&[("sfmc-bucket", &sfmc), ("sfmc-role-arn", SFMC_ROLE)]).await;
    seed(&app).await;
    // Both exports in one minute, so the original's keys are the same.
    while chrono::Utc::now().timestamp() % 60 > 40 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let first = run(&app, CID, json!({ "exportType": "autoReminderEmail" })).await;
    assert_eq!(first["status"], "FINISHED", "{first}");
    let keys: Vec<String> = first["key"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    let mut before = Vec::new();
    for k in &keys {
        before.push(get_object(&app, &sfmc, k).await);
    }
    // The second fails in its last region (DE), after writing NA and UK.
    app.db
        .collection::<mongodb::bson::Document>("scoring")
        .update_one(
            doc! { "campaignId": CID, "memberId": "1003" },
            doc! { "$set": { "codes": [] } },
        )
        .await
        .unwrap();
    let second = run(&app, CID, json!({ "exportType": "autoReminderEmail" })).await;
    assert_eq!(second["status"], "FAILED", "{second}");
    let minute = |v: &serde_json::Value| v["date"]["created"].as_str().unwrap()[..16].to_string();
    assert_eq!(minute(&first), minute(&second), "not the same minute");
    // The first export's objects are all there, unchanged; nothing else.
    for (k, b) in keys.iter().zip(before) {
        assert_eq!(get_object(&app, &sfmc, k).await, b, "{k}");
    }
    let mut left = app.object_keys(&sfmc).await;
    left.sort();
    let mut want = keys.clone();
    want.sort();
    assert_eq!(left, want);
    assert_eq!(app.open_uploads(&sfmc).await, 0);
    app.stop().await;
}
