//! Metrics move after an export, the CloudWatch backlog metric lands, and
//! `vf-export doctor` reports each check.

use std::time::{Duration, Instant};

use crate::common::{self, campaign_doc, insert, TestApp};
use mongodb::bson::{doc, DateTime};
use serde_json::{json, Value};

async fn seed(app: &TestApp, cid: &str, n: usize) {
    insert(&app.db, "campaigns", vec![campaign_doc(cid, "Metrics")]).await;
    insert(
        &app.db,
        "markets",
        vec![doc! { "_id": format!("{cid}-m"), "campaignId": cid, "city": "Austin", "state": "TX", "event": { "ids": [] } }],
    )
    .await;
    let entries = (0..n)
        .map(|i| doc! { "_id": { "campaign_id": cid, "user_id": format!("u{i}") }, "fields": { "market": format!("{cid}-m") },
                         "date": { "created": DateTime::from_millis(1_767_225_600_000) } })
        .collect();
    insert(&app.db, "entries", entries).await;
}

fn metric(text: &str, line_prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_move_after_an_export() {
    let app = TestApp::spawn().await;
    seed(&app, "c1", 25).await;
    let id = app
        .queue_export("c1", json!({ "exportType": "entries" }))
        .await;
    let done = app.wait_done("c1", &id, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "FINISHED");
    let text = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric(
            &text,
            r#"vf_export_exports_total{export_type="entries",status="FINISHED"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            r#"vf_export_exports_started_total{export_type="entries"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            r#"vf_export_rows_written_total{export_type="entries"}"#
        ),
        Some(25.0)
    );
    assert!(
        metric(
            &text,
            r#"vf_export_bytes_written_total{export_type="entries"}"#
        )
        .unwrap()
            > 0.0
    );
    assert_eq!(
        metric(
            &text,
            r#"vf_export_duration_seconds_count{export_type="entries"}"#
        ),
        Some(1.0)
    );
    assert_eq!(metric(&text, "vf_export_in_flight "), Some(0.0));
    // Route templates, never raw ids, in labels.
    assert!(
        metric(
            &text,
            r#"http_requests_total{method="POST",route="/campaigns/:campaignId/exports",status="201"}"#
        ) == Some(1.0),
        "{text}"
    );
    assert!(text.contains(r#"route="/campaigns/:campaignId/exports/:exportId""#));
    assert!(!text.contains(&id) && !text.contains("route=\"/campaigns/c1"));
    assert!(text.contains("http_request_duration_seconds_bucket"));
    assert!(text.contains("vf_export_queue_depth{status=\"PENDING\"}"));
    assert!(text.contains("process_resident_memory_bytes"));
    assert!(text.contains("process_open_fds"));
    // The cached MongoDB ping backs /ready.
    let t0 = Instant::now();
    loop {
        let r = app
            .http
            .get(format!("{}/ready", app.base))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["mongodb"]["ok"], true);
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "never ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn cloudwatch_backlog_metric_is_published() {
    if common::standins().aws_endpoint.is_none() {
        eprintln!("skipped against real AWS: would publish to a real namespace");
        return;
    }
    let ns = common::unique("VfExportTest");
    let app = TestApp::spawn_with(&[
        ("worker-concurrency", "0"),
        ("cloudwatch-namespace", &ns),
        ("asg-name", "vf-export-test-asg"),
        ("cloudwatch-interval-secs", "1"),
    ])
    .await;
    seed(&app, "c1", 1).await;
    seed(&app, "c2", 1).await;
    for c in ["c1", "c2"] {
        assert_eq!(
            app.post_export(c, json!({ "exportType": "entries" }))
                .await
                .status(),
            201
        );
    }
    let s = common::standins();
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(s.aws_endpoint.clone().unwrap())
        .load()
        .await;
    let cw = aws_sdk_cloudwatch::Client::new(&sdk);
    let t0 = Instant::now();
    let dim = aws_sdk_cloudwatch::types::Dimension::builder()
        .name("AutoScalingGroupName")
        .value("vf-export-test-asg")
        .build();
    loop {
        let stats = cw
            .get_metric_statistics()
            .namespace(&ns)
            .metric_name("ExportBacklog")
            .dimensions(dim.clone())
            .start_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
                chrono::Utc::now().timestamp() - 600,
            ))
            .end_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
                chrono::Utc::now().timestamp() + 60,
            ))
            .period(60)
            .statistics(aws_sdk_cloudwatch::types::Statistic::Maximum)
            .send()
            .await
            .unwrap();
        let max = stats
            .datapoints()
            .iter()
            .filter_map(|d| d.maximum())
            .fold(0.0, f64::max);
        if max >= 2.0 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no ExportBacklog datapoint of 2: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let listed = cw.list_metrics().namespace(&ns).send().await.unwrap();
    let names: Vec<_> = listed
        .metrics()
        .iter()
        .filter_map(|m| m.metric_name())
        .collect();
    assert!(
        names.contains(&"ExportBacklog") && names.contains(&"ExportsInFlight"),
        "{names:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn doctor_reports_each_check_and_fails_on_a_missing_bucket() {
    let app = TestApp::spawn_with(&[("worker-concurrency", "0")]).await;
    let s = common::standins();
    let run = |exports_bucket: String| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_vf-export"));
        cmd.arg("doctor")
            .env("MONGODB_URI", &s.mongodb_uri)
            .env("MONGODB_DB", &app.db_name)
            .env("EXPORTS_BUCKET", exports_bucket)
            .env("SCORING_BUCKET", &app.buckets.scoring)
            .env("VF_SCORING_BUCKET", &app.buckets.vf_scoring);
        if let Some(ep) = &s.aws_endpoint {
            cmd.env("AWS_ENDPOINT_URL", ep)
                .env("S3_FORCE_PATH_STYLE", "true");
        }
        cmd.output().unwrap()
    };
    // Indexes not created yet (serve ensured only the queue's): reported.
    let out = run(app.buckets.exports.clone());
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("✓ mongodb: reachable, version"), "{text}");
    assert!(
        text.contains("✗ indexes: missing entries.campaign_market"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "✓ bucket EXPORTS_BUCKET: {} writable",
            app.buckets.exports
        )),
        "{text}"
    );
    assert!(!out.status.success());
    // After `vf-export indexes`, all green.
    app.db.client(); // same database
    let st = vf_export::store::Store::connect(&s.mongodb_uri, &app.db_name)
        .await
        .unwrap();
    st.ensure_indexes(vf_export::store::IndexScope::All)
        .await
        .unwrap();
    let out = run(app.buckets.exports.clone());
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with('✓')).count(),
        5,
        "{text}"
    );
    // The probe object was deleted again.
    assert!(app.object_keys(&app.buckets.exports).await.is_empty());
    // A bucket that does not exist: ✗ naming it, non-zero exit.
    let out = run("vf-no-such-bucket-here".into());
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("✗ bucket EXPORTS_BUCKET: vf-no-such-bucket-here: put failed"),
        "{text}"
    );
    assert!(!out.status.success());
    app.stop().await;
}
