//! `vf-export export`: the one-shot CLI writes the same bytes as the
//! service, to a local file or an s3:// URL, gzip on request.

use std::process::Command;
use std::time::Duration;

use crate::common::{self, campaign_doc, insert, TestApp};
use mongodb::bson::{doc, DateTime};
use serde_json::json;

async fn seed(app: &TestApp, cid: &str) {
    insert(&app.db, "campaigns", vec![campaign_doc(cid, "One Shot")]).await;
    insert(
        &app.db,
        "markets",
        vec![
            doc! { "_id": format!("{cid}-m"), "campaignId": cid, "city": "Austin", "state": "TX",
            "event": { "date": DateTime::from_millis(1_767_225_600_000), "ids": ["E1"] } },
        ],
    )
    .await;
    let entries = (0..40)
        .map(|i| doc! { "_id": { "campaign_id": cid, "user_id": format!("u{i:03}") },
                         "fields": { "market": format!("{cid}-m"), "email": format!("f{i}@x.io"), "first_name": "=cmd" },
                         "date": { "created": DateTime::from_millis(1_767_225_600_000 + i) } })
        .collect();
    insert(&app.db, "entries", entries).await;
}

fn cli(app: &TestApp, args: &[&str]) -> std::process::Output {
    let s = common::standins();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vf-export"));
    cmd.arg("export")
        .args(args)
        .env("MONGODB_URI", &s.mongodb_uri)
        .env("MONGODB_DB", &app.db_name)
        .env_remove("RUST_LOG");
    if let Some(ep) = &s.aws_endpoint {
        cmd.env("AWS_ENDPOINT_URL", ep)
            .env("S3_FORCE_PATH_STYLE", "true");
    }
    cmd.output().unwrap()
}

#[tokio::test]
async fn one_shot_writes_what_the_service_writes() {
    let app = TestApp::spawn().await;
    seed(&app, "c1").await;
    let id = app
        .queue_export("c1", json!({"exportType": "entries"}))
        .await;
    let v = app.wait_done("c1", &id, Duration::from_secs(60)).await;
    let service = app.download(v["path"].as_str().unwrap()).await;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("entries.tsv");
    let out = cli(
        &app,
        &[
            "--campaign",
            "c1",
            "--type",
            "entries",
            "--out",
            file.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&file).unwrap(), service);
    // No partial file is left beside it; progress went to stderr as plain lines.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("40 rows"));

    // gzip
    let gz = dir.path().join("entries.tsv.gz");
    let out = cli(
        &app,
        &[
            "--campaign",
            "c1",
            "--type",
            "entries",
            "--gzip",
            "--out",
            gz.to_str().unwrap(),
        ],
    );
    assert!(out.status.success());
    let mut text = Vec::new();
    let raw = std::fs::read(&gz).unwrap();
    tokio::io::AsyncReadExt::read_to_end(
        &mut async_compression::tokio::bufread::GzipDecoder::new(&raw[..]),
        &mut text,
    )
    .await
    .unwrap();
    assert_eq!(text, service);

    // s3://
    if common::standins().aws_endpoint.is_some() {
        let url = format!("s3://{}/adhoc/c1.tsv", app.buckets.exports);
        let out = cli(
            &app,
            &["--campaign", "c1", "--type", "entries", "--out", &url],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let obj = app
            .s3
            .get_object()
            .bucket(&app.buckets.exports)
            .key("adhoc/c1.tsv")
            .send()
            .await
            .unwrap();
        assert_eq!(
            obj.body.collect().await.unwrap().into_bytes().to_vec(),
            service
        );
    }

    // Bad input: one clear line, non-zero exit.
    let out = cli(&app, &["--campaign", "c1", "--type", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown export type"));
    let out = cli(
        &app,
        &[
            "--campaign",
            "missing",
            "--type",
            "entries",
            "--out",
            file.to_str().unwrap(),
        ],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("campaign missing not found"));
    app.stop().await;
}
