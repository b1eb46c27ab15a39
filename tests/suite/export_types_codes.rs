//! codes, codeAssignments (with the TMOL publish), codeWaves and waitlist
//! (excluding exactly the wave members) over HTTP against the stand-ins.

use crate::common::seed::*;
use crate::common::TestApp;
use crate::common::{self};
use serde_json::json;

const TMOL_ROLE: &str = "arn:aws:iam::123456789012:role/tmol";

fn codes_csv() -> String {
    csv(&[
        "code,assignedTo,assignedAt,status".into(),
        // `=AAA4` sorts first and is neutralised.
        format!("'=AAA4,{},{A},assigned", u(2)),
        format!("AAA1,{},{A},assigned", u(1)),
        format!("AAA2,{},{A},assigned", u(6)),
        "AAA3,,,available".into(),
    ])
}

fn assignments_csv() -> String {
    csv(&[
        "code,userId,campaignId,assignmentDate,market,Event_ID".into(),
        format!("'=AAA4,{},c1,{A},c1-m1,\"E1,E2\"", u(2)),
        format!("AAA1,{},c1,{A},c1-m1,\"E1,E2\"", u(1)),
        // No entry for user 6: the code's market.
        format!("AAA2,{},c1,{A},c1-m2,E3", u(6)),
    ])
}

#[tokio::test]
async fn codes_without_tmol() {
    let app = TestApp::spawn().await;
    seed(&app).await;
    let (done, body) = run_ok(&app, "codes").await;
    assert_eq!(done["count"], 4);
    assert_eq!(text(body), codes_csv());
    // TMOL_BUCKET unset: nothing published.
    assert!(done["meta"].get("published").is_none(), "{done}");
    let (_, body) = run_ok(&app, "codeAssignments").await;
    assert_eq!(text(body), assignments_csv());
    app.stop().await;
}

#[tokio::test]
async fn codes_are_published_to_tmol() {
    let tmol = bucket("vf-tmol-").await;
    let app = TestApp::spawn_with(&[("tmol-bucket", &tmol), ("tmol-role-arn", TMOL_ROLE)]).await;
    seed(&app).await;
    for (t, want) in [
        ("codes", codes_csv()),
        ("codeAssignments", assignments_csv()),
    ] {
        let (done, body) = run_ok(&app, t).await;
        assert_eq!(text(body), want);
        let id = done["id"].as_str().unwrap();
        let key = format!("verifiedfan/c1/{t}-{id}.csv");
        let published = &done["meta"]["published"];
        assert_eq!(published.as_array().map(Vec::len), Some(1), "{done}");
        assert_eq!(published[0]["bucket"], json!(tmol));
        assert_eq!(published[0]["key"], json!(key));
        // The copy is byte for byte the export's object.
        assert_eq!(published[0]["sha256"], done["sha256"]);
        assert_eq!(published[0]["bytes"], done["bytes"]);
        assert_eq!(text(get_object(&app, &tmol, &key).await), want);
        let head = app
            .s3
            .head_object()
            .bucket(&tmol)
            .key(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(
            head.server_side_encryption().map(|s| s.as_str()),
            Some("AES256")
        );
    }
    assert_eq!(app.open_uploads(&tmol).await, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_failed_publish_fails_the_export_and_keeps_the_main_object() {
    // The TMOL bucket does not exist: the publish fails after the main
    // object completed.
    let missing = format!("vf-tmol-missing-{}", common::unique(""));
    let app = TestApp::spawn_with(&[("tmol-bucket", &missing), ("tmol-role-arn", TMOL_ROLE)]).await;
    seed(&app).await;
    let done = run(&app, CID, json!({ "exportType": "codes" })).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    let msg = done["error"]["message"].as_str().unwrap();
    assert!(msg.contains("TMOL_BUCKET"), "{msg}");
    let obj = &done["error"]["payload"]["object"];
    assert_eq!(obj["bucket"], app.buckets.exports.as_str());
    let key = obj["key"].as_str().unwrap();
    let kept = get_object(&app, &app.buckets.exports, key).await;
    assert_eq!(text(kept), codes_csv());
    app.stop().await;
}

#[tokio::test]
async fn code_waves_then_waitlist_excludes_exactly_the_wave_members() {
    let app = TestApp::spawn().await;
    seed(&app).await;

    // Before any wave: every unselected row, in user order.
    let (_, body) = run_ok(&app, "waitlist").await;
    let all = [
        "memberId,locale,market,score".to_string(),
        "1006,en-us,c1-m1,0.5".into(),
        "1007,en-us,c1-m2,0.4".into(),
        "m-8,en-au,,0.3".into(),
    ];
    assert_eq!(text(body), csv(&all));

    // The wave of 20260301: codes AAA1 (user 1) and AAA2 (user 6, no
    // entry: no phone); the unassigned and other-wave codes are not in it.
    let done = run(
        &app,
        CID,
        json!({ "exportType": "codeWaves", "dateKey": "20260301" }),
    )
    .await;
    assert_eq!(done["status"], "FINISHED", "{done}");
    let id = done["id"].as_str().unwrap();
    let key = done["key"].as_str().unwrap();
    assert_eq!(key, format!("campaigns/c1/waves/20260301/{id}.csv"));
    let wave = text(get_object(&app, &app.buckets.vf_scoring, key).await);
    assert_eq!(
        wave,
        csv(&[
            "memberId,code,Mobile Phone,locale,market".into(),
            "1001,AAA1,+15551234567,en-us,c1-m1".into(),
            "1006,AAA2,,en-us,c1-m1".into(),
        ])
    );
    let head = app
        .s3
        .head_object()
        .bucket(&app.buckets.vf_scoring)
        .key(key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.server_side_encryption().map(|s| s.as_str()),
        Some("AES256")
    );

    // Another (hand-written, gzip) wave file with a non-numeric member id.
    let gz = {
        use tokio::io::AsyncWriteExt;
        let mut e = async_compression::tokio::write::GzipEncoder::new(Vec::new());
        e.write_all(b"memberId,code\nm-8,X\n9999,Y\n")
            .await
            .unwrap();
        e.shutdown().await.unwrap();
        e.into_inner()
    };
    app.s3
        .put_object()
        .bucket(&app.buckets.vf_scoring)
        .key("campaigns/c1/waves/20260302/manual.csv.gz")
        .body(gz.into())
        .send()
        .await
        .unwrap();
    // Another campaign's wave does not count.
    app.s3
        .put_object()
        .bucket(&app.buckets.vf_scoring)
        .key("campaigns/c10/waves/1/x.csv")
        .body(b"memberId\n1007\n".to_vec().into())
        .send()
        .await
        .unwrap();

    let (done, body) = run_ok(&app, "waitlist").await;
    assert_eq!(done["count"], 1);
    assert_eq!(text(body), csv(&[all[0].clone(), all[2].clone()]));
    app.stop().await;
}
