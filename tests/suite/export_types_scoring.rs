//! scoring (tab-separated, SCORING_BUCKET) and verifiedEntries
//! (VF_SCORING_BUCKET, own key) over HTTP against the stand-ins.

use crate::common::seed::*;
use crate::common::TestApp;

#[tokio::test]
async fn scoring_rows_joined_to_entries_and_users() {
    let app = TestApp::spawn().await;
    seed(&app).await;
    let (done, body) = run_ok(&app, "scoring").await;
    assert_eq!(done["count"], 8);
    let key = done["key"].as_str().unwrap();
    assert!(
        key.starts_with("campaigns/tour-2026-c1/scoring/") && key.ends_with(".txt"),
        "{key}"
    );
    let head = app
        .s3
        .head_object()
        .bucket(&app.buckets.scoring)
        .key(key)
        .send()
        .await
        .unwrap();
    assert!(head.content_type().unwrap().starts_with("text/plain"));
    let t = "\t";
    let nyc = "5/28 - New York, NY\tE1,E2";
    let la = "1/01 - Los Angeles, CA\tE3";
    let no_entry = |n: u8, show: &str, locale: &str| {
        // A scoring document without entry or user: id, show, locale.
        format!(
            "{}\tTour 2026\t\t\t\t\t\t\t\t\t\t\t{show}\t{locale}\tc1\tfalse\t\t\t\t\t",
            u(n)
        )
    };
    let want = csv(&[
        [
            "id", "contest_title", "entry_date", "tm_id", "globalUserId", "ip_address", "email",
            "first_name", "last_name", "Zip Code", "Mobile Phone", "Hbase_ID", "Select Show",
            "Event_ID", "locale", "campaign_id", "Phone confirmed", "nudetect_score",
            "nudetect_score_band", "account_fanscore", "latitude", "longitude",
        ]
        .join(t),
        // In user order (index `{campaignId, userId}`).
        format!("{}\tTour 2026\t{D}\ttm1\tg1\t10.0.0.1\ta@x.io\tAnnie\tSmith\t10001\t+15551234567\th1\t{nyc}\ten-us\tc1\ttrue\t12\tlow\t77\t40.7\t-74", u(1)),
        format!("{}\tTour 2026\t{D}\t12345\tg2\t\ttm2@x.io\t\"'=HYPERLINK(\"\"x\"\")\"\tO'Brien, Jr.\tH2X\t+1 (555) 000-1111\th2\t{nyc}\tfr-ca\tc1\tfalse\t\t\t\t\t", u(2)),
        format!("{}\tTour 2026\t{D}\t\t\t\t'@me\t\t'-2+3\t\t\t\t{la}\tde-de\tc1\tfalse\t\t\t\t\t", u(3)),
        format!("{}\tTour 2026\t{D}\ttm4\t\t\tzoë@x.io\tZoë\tÜnïcødé\t\t\th4\t{la}\ten-uk\tc1\tfalse\t\t\t\t\t", u(4)),
        format!("{}\tTour 2026\t{D}\ttm5\t\t\ttm5@x.io\tEve\tFr\t\t\th5\t{nyc}\tfr-fr\tc1\tfalse\t\t\t\t\t", u(5)),
        no_entry(6, nyc, "en-us"),
        no_entry(7, la, "en-us"),
        no_entry(8, "\t", "en-au"),
    ]);
    assert_eq!(text(body), want);
    app.stop().await;
}

#[tokio::test]
async fn verified_entries_selected_rows() {
    let app = TestApp::spawn().await;
    seed(&app).await;
    let (done, body) = run_ok(&app, "verifiedEntries").await;
    let id = done["id"].as_str().unwrap();
    assert_eq!(
        done["key"],
        format!("campaigns/c1/verified-entries/{id}.csv").as_str()
    );
    assert_eq!(
        text(body),
        csv(&[
            "memberId,email,first_name,last_name,Mobile Phone,locale,market,score".into(),
            "1001,a@x.io,Annie,Smith,+15551234567,en-us,c1-m1,0.9".into(),
            format!("1002,tm2@x.io,{FORMULA},\"O'Brien, Jr.\",+1 (555) 000-1111,fr-ca,c1-m1,0.8"),
            "1003,'@me,,'-2+3,,de-de,c1-m2,0.7".into(),
            "1004,zoë@x.io,Zoë,Ünïcødé,,en-uk,c1-m2,0.6".into(),
            "1005,tm5@x.io,Eve,Fr,,fr-fr,c1-m1,0.55".into(),
        ])
    );
    // bucket-owner-full-control on the partner pipeline's bucket.
    let acl = app
        .s3
        .get_object_acl()
        .bucket(&app.buckets.vf_scoring)
        .key(done["key"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert!(
        acl.grants()
            .iter()
            .any(|g| g.permission().map(|p| p.as_str()) == Some("FULL_CONTROL")),
        "{acl:?}"
    );
    app.stop().await;
}
