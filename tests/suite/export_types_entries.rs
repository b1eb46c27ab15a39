//! The entry-family types over HTTP against the stand-ins: artistOptIn,
//! artistSmsOptIn, livenationOptIn, fanlist, promoterEmailOptIn (ZIP), with
//! their POST-time checks and gzip.

use crate::common::seed::*;
use crate::common::TestApp;
use serde_json::json;

const OPT_IN: &str = "email,first_name,last_name,Zip Code,locale,Select Show,entry_date";

fn u1_opt_in() -> String {
    format!("a@x.io,Annie,Smith,10001,en-us,{NYC},{D}")
}
fn u2_opt_in() -> String {
    format!("tm2@x.io,{FORMULA},\"O'Brien, Jr.\",H2X,fr-ca,{NYC},{D}")
}

#[tokio::test]
async fn opt_in_lists() {
    let app = TestApp::spawn().await;
    seed(&app).await;

    // allowMarketing: false (user 2) and missing (user 5) are left out.
    let (done, body) = run_ok(&app, "artistOptIn").await;
    assert_eq!(done["count"], 3);
    let key = done["key"].as_str().unwrap();
    assert!(
        key.starts_with("campaigns/tour-2026-c1/artistOptIn/") && key.ends_with(".csv"),
        "{key}"
    );
    assert_eq!(
        text(body),
        csv(&[
            OPT_IN.into(),
            u1_opt_in(),
            format!("'@me,,'-2+3,,de-de,{LA},{D}"),
            format!("zoë@x.io,Zoë,Ünïcødé,,en-uk,{LA},{D}"),
        ])
    );

    // Users 1 and 5 (email from the user); user 4's false is left out.
    let (_, body) = run_ok(&app, "livenationOptIn").await;
    assert_eq!(
        text(body),
        csv(&[
            OPT_IN.into(),
            u1_opt_in(),
            format!("tm5@x.io,Eve,Fr,,fr-fr,{NYC},{D}"),
        ])
    );

    // allowSms and a phone: user 2's comes from the user; user 3 has none.
    let (done, body) = run_ok(&app, "artistSmsOptIn").await;
    assert_eq!(done["count"], 2);
    assert_eq!(
        text(body),
        csv(&[
            "Mobile Phone,first_name,last_name,Zip Code,locale,Select Show,entry_date".into(),
            format!("+15551234567,Annie,Smith,10001,en-us,{NYC},{D}"),
            format!("+1 (555) 000-1111,{FORMULA},\"O'Brien, Jr.\",H2X,fr-ca,{NYC},{D}"),
        ])
    );
    assert_eq!(app.open_uploads(&app.buckets.exports).await, 0);
    app.stop().await;
}

#[tokio::test]
async fn fanlist_one_row_per_user_with_market_names() {
    let app = TestApp::spawn().await;
    seed(&app).await;
    let (done, body) = run_ok(&app, "fanlist").await;
    assert_eq!(done["count"], 5);
    assert_eq!(
        text(body),
        csv(&[
            "id,email,first_name,last_name,Zip Code,locale,markets".into(),
            // Own market, then the additional one; the unknown id is skipped.
            format!("{},a@x.io,Annie,Smith,10001,en-us,NYC|LA", u(1)),
            format!("{},tm2@x.io,{FORMULA},\"O'Brien, Jr.\",H2X,fr-ca,NYC", u(2)),
            format!("{},'@me,,'-2+3,,de-de,LA", u(3)),
            format!("{},zoë@x.io,Zoë,Ünïcødé,,en-uk,LA", u(4)),
            format!("{},tm5@x.io,Eve,Fr,,fr-fr,NYC", u(5)),
        ])
    );
    app.stop().await;
}

#[tokio::test]
async fn promoter_opt_ins_zip_one_csv_per_promoter() {
    let app = TestApp::spawn().await;
    seed(&app).await;
    let (done, body) = run_ok(&app, "promoterEmailOptIn").await;
    assert!(
        done["key"].as_str().unwrap().ends_with(".zip"),
        "{}",
        done["key"]
    );
    assert_eq!(done["count"], 3);
    // A `/` in a promoter name cannot make a folder.
    assert_eq!(
        done["meta"]["files"],
        json!(["Live Nation.csv", "AEG-Presents.csv"])
    );
    let files = unzip(body).await;
    assert_eq!(
        files,
        vec![
            (
                "Live Nation.csv".to_string(),
                csv(&[OPT_IN.into(), u1_opt_in()])
            ),
            (
                "AEG-Presents.csv".to_string(),
                csv(&[OPT_IN.into(), u1_opt_in(), u2_opt_in()])
            ),
        ]
    );
    let head = app
        .s3
        .head_object()
        .bucket(&app.buckets.exports)
        .key(done["key"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("application/zip"));
    assert_eq!(
        head.server_side_encryption().map(|s| s.as_str()),
        Some("AES256")
    );
    app.stop().await;
}

#[tokio::test]
async fn post_time_checks() {
    let app = TestApp::spawn_with(&[("worker-concurrency", "0")]).await;
    seed(&app).await;
    seed_marketless(&app, "empty1").await;
    for t in [
        "entries",
        "artistOptIn",
        "artistSmsOptIn",
        "livenationOptIn",
        "promoterEmailOptIn",
        "fanlist",
    ] {
        let r = app.post_export("empty1", json!({ "exportType": t })).await;
        assert_eq!(r.status(), 400, "{t}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["payload"]["code"], "NoMarketsFound", "{t}: {v}");
    }
    // A promoter id with no promoter document.
    app.db
        .collection::<mongodb::bson::Document>("campaigns")
        .update_one(
            mongodb::bson::doc! { "_id": CID },
            mongodb::bson::doc! { "$set": { "promoters": ["p1", "p404"] } },
        )
        .await
        .unwrap();
    let r = app
        .post_export(CID, json!({ "exportType": "promoterEmailOptIn" }))
        .await;
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["payload"]["code"], "PromotersNotFound", "{v}");
    assert_eq!(v["error"]["payload"]["promoterIds"], json!(["p404"]));
    // gzip is for single-file CSV types only.
    for t in ["promoterEmailOptIn", "reminderEmail", "autoReminderEmail"] {
        let r = app
            .post_export(CID, json!({ "exportType": t, "compression": "gzip" }))
            .await;
        assert_eq!(r.status(), 400, "{t}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["payload"]["field"], "compression", "{t}: {v}");
    }
    app.stop().await;
}

#[tokio::test]
async fn gzip_decompresses_to_the_same_csv() {
    let app = TestApp::spawn().await;
    seed(&app).await;
    let (_, plain) = run_ok(&app, "fanlist").await;
    let (done, gz) = run_ok_with(
        &app,
        json!({ "exportType": "fanlist", "compression": "gzip" }),
    )
    .await;
    let key = done["key"].as_str().unwrap();
    assert!(key.ends_with(".csv.gz"), "{key}");
    assert_eq!(done["compression"], "gzip");
    assert_eq!(&gz[..2], &[0x1f, 0x8b], "gzip magic");
    assert_eq!(gunzip(&gz).await, text(plain));
    app.stop().await;
}
