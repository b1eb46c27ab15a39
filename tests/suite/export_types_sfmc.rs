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
    for (k, rows) in keys.iter().zip([na(), uk(), de()]) {
        assert_eq!(text(get_object(&app, &sfmc, k).await), with_header(&rows));
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
