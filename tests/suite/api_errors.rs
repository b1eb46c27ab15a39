//! Auth, validation, error shape on every error path, list pagination, and
//! an S3 failure mid-upload.

use std::time::Duration;

use crate::common::{self, campaign_doc, insert, token_with, TestApp};
use mongodb::bson::{doc, DateTime};
use serde_json::{json, Value};

async fn seed(app: &TestApp, cid: &str, markets: bool) {
    insert(&app.db, "campaigns", vec![campaign_doc(cid, "Shapes")]).await;
    if markets {
        insert(
            &app.db,
            "markets",
            vec![doc! { "_id": format!("{cid}-m"), "campaignId": cid, "city": "Austin", "state": "TX",
                        "event": { "date": DateTime::from_millis(1_767_225_600_000), "ids": [] } }],
        )
        .await;
        insert(
            &app.db,
            "entries",
            vec![doc! { "_id": { "campaign_id": cid, "user_id": "u1" }, "fields": { "market": format!("{cid}-m") },
                        "date": { "created": DateTime::from_millis(1_767_225_600_000) } }],
        )
        .await;
    }
}

/// The error shape, and its status matching the response's.
fn assert_shape(status: u16, body: &Value) {
    let e = &body["error"];
    assert_eq!(e["status"], status, "{body}");
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    let s = body.to_string();
    assert!(
        !s.contains("panicked") && !s.contains("backtrace") && !s.contains("src/"),
        "{s}"
    );
}

async fn send(
    app: &TestApp,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let mut req = app
        .http
        .request(method.parse().unwrap(), format!("{}{path}", app.base));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn authentication_and_permissions() {
    let app = TestApp::spawn_with(&[("worker-concurrency", "0")]).await;
    seed(&app, "c1", true).await;
    let path = "/campaigns/c1/exports";
    let good = app.reporter("c1");
    let wrong_key = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "u", "campaigns": {"c1": ["REPORT"]}, "exp": chrono::Utc::now().timestamp() + 60}),
        &jsonwebtoken::EncodingKey::from_secret(b"another-secret"),
    )
    .unwrap();
    let expired = token_with("u", &[("c1", &["REPORT"])], false, -3600);
    for (token, want) in [
        (None, 401),
        (Some("not-a-jwt"), 401),
        (Some(wrong_key.as_str()), 401),
        (Some(expired.as_str()), 401),
        (Some(&app.reporter("c2")), 403),
        (Some(&app.token("u", &[("c1", &["VIEW"])], false)), 403),
        (Some(good.as_str()), 200),
        (Some(&app.token("boss", &[], true)), 200),
    ] {
        let (status, body) = send(&app, "GET", path, token, None).await;
        assert_eq!(status, want, "token {token:?}: {body}");
        if want >= 400 {
            assert_shape(status, &body);
        }
    }
    // Heartbeat and metrics need no token.
    let (s, b) = send(&app, "GET", "/heartbeat", None, None).await;
    assert_eq!((s, b), (200, json!({"status": "OK"})));
    let (s, _) = send(&app, "GET", "/metrics", None, None).await;
    assert_eq!(s, 200);
    // Dev routes: auth echo and supremes.
    let (s, b) = send(&app, "GET", "/dev/auth", Some(&good), None).await;
    assert_eq!((s, b["userId"].clone()), (200, json!("u42")));
    let (s, _) = send(&app, "GET", "/dev/supremes", Some(&good), None).await;
    assert_eq!(s, 403);
    let (s, _) = send(
        &app,
        "GET",
        "/dev/supremes",
        Some(&app.token("boss", &[], true)),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let (s, b) = send(&app, "GET", "/dev/internalServerError", Some(&good), None).await;
    assert_eq!(s, 500);
    assert_shape(500, &b);
    let (s, b) = send(
        &app,
        "POST",
        "/dev/token",
        None,
        Some(r#"{"userId":"me","campaigns":{"c1":["REPORT"]}}"#),
    )
    .await;
    assert_eq!(s, 200);
    let minted = b["token"].as_str().unwrap();
    let (s, _) = send(&app, "GET", path, Some(minted), None).await;
    assert_eq!(s, 200);
    app.stop().await;

    // Dev routes are off by default: 404 in the error shape.
    let app = TestApp::spawn_with(&[("worker-concurrency", "0"), ("dev-routes", "false")]).await;
    let (s, b) = send(&app, "GET", "/dev/auth", Some(&good), None).await;
    assert_eq!(s, 404);
    assert_shape(404, &b);
    app.stop().await;
}

#[tokio::test]
async fn bad_requests_get_clear_4xx_in_the_error_shape() {
    let app = TestApp::spawn_with(&[("worker-concurrency", "0")]).await;
    seed(&app, "c1", true).await;
    seed(&app, "nomarkets", false).await;
    let t = app.token("u", &[], true);
    let post = "/campaigns/c1/exports";
    // (method, path, body, status, payload.code)
    type Case<'a> = (&'a str, &'a str, Option<String>, u16, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (
            "POST",
            post,
            Some("{}".into()),
            400,
            Some("InvalidExportType"),
        ),
        (
            "POST",
            post,
            Some(r#"{"exportType":"nope"}"#.into()),
            400,
            Some("InvalidExportType"),
        ),
        (
            "POST",
            post,
            Some(r#"{"exportType":{"$gt":""}}"#.into()),
            400,
            Some("InvalidExportType"),
        ),
        (
            "POST",
            post,
            Some(r#"{"exportType":"entries","includeAllMarkets":"yes"}"#.into()),
            400,
            None,
        ),
        (
            "POST",
            post,
            Some(r#"{"exportType":"entries","compression":"zip"}"#.into()),
            400,
            None,
        ),
        (
            "POST",
            post,
            Some(r#"{"exportType":"entries","dateKey":5}"#.into()),
            400,
            None,
        ),
        ("POST", post, Some("[1,2]".into()), 400, None),
        ("POST", post, Some("{not json".into()), 400, None),
        (
            "POST",
            post,
            Some(format!("{}1{}", "[".repeat(200), "]".repeat(200))),
            400,
            None,
        ),
        (
            "POST",
            "/campaigns/missing/exports",
            Some(r#"{"exportType":"entries"}"#.into()),
            404,
            Some("CampaignNotFound"),
        ),
        (
            "POST",
            "/campaigns/nomarkets/exports",
            Some(r#"{"exportType":"entries"}"#.into()),
            400,
            Some("NoMarketsFound"),
        ),
        (
            "POST",
            "/campaigns/..%2F..%2Fetc/exports",
            Some(r#"{"exportType":"entries"}"#.into()),
            400,
            None,
        ),
        ("GET", "/campaigns/c1/exports/not-an-id", None, 400, None),
        (
            "GET",
            "/campaigns/c1/exports/65f000000000000000000099",
            None,
            404,
            None,
        ),
        ("GET", "/campaigns/c1/exports?limit=0", None, 400, None),
        ("GET", "/campaigns/c1/exports?limit=-1", None, 400, None),
        ("GET", "/campaigns/c1/exports?limit=101", None, 400, None),
        ("GET", "/campaigns/c1/exports?page=1e9", None, 400, None),
        ("GET", "/campaigns/c1/exports?page=0", None, 400, None),
        (
            "GET",
            "/campaigns/c1/exports?sort=requesterUserId",
            None,
            400,
            None,
        ),
        ("GET", "/campaigns/c1/exports?sortOrder=up", None, 400, None),
        (
            "GET",
            "/campaigns/c1/exports?exportType=nope",
            None,
            400,
            Some("InvalidExportType"),
        ),
        (
            "GET",
            "/campaigns/c1/exports?exportType[$ne]=x",
            None,
            400,
            None,
        ),
        ("GET", "/no/such/route", None, 404, None),
        ("DELETE", "/campaigns/c1/exports", None, 405, None),
        ("PUT", "/heartbeat", None, 405, None),
        (
            "POST",
            post,
            Some(format!(
                r#"{{"exportType":"entries","pad":"{}"}}"#,
                "x".repeat(100_000)
            )),
            413,
            None,
        ),
    ];
    for (method, path, body, want, code) in cases {
        let (status, v) = send(&app, method, path, Some(&t), body.as_deref()).await;
        assert_eq!(status, want, "{method} {path}: {v}");
        assert_shape(status, &v);
        if let Some(code) = code {
            assert_eq!(v["error"]["payload"]["code"], code, "{method} {path}: {v}");
        }
    }
    // The valid types are listed for a bad exportType.
    let (_, v) = send(&app, "POST", post, Some(&t), Some("{}")).await;
    assert!(v["error"]["payload"]["validTypes"]
        .as_array()
        .unwrap()
        .contains(&json!("entries")));
    // Non-UTF-8 body.
    let r = app
        .http
        .post(format!("{}{post}", app.base))
        .bearer_auth(&t)
        .body(vec![0xff, 0xfe, b'{'])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_shape(400, &r.json().await.unwrap());
    // An export of one campaign is not visible under another (BOLA): 404.
    let id = app
        .queue_export("c1", json!({"exportType": "entries"}))
        .await;
    seed(&app, "c9", true).await;
    let (s, _) = send(
        &app,
        "GET",
        &format!("/campaigns/c9/exports/{id}"),
        Some(&t),
        None,
    )
    .await;
    assert_eq!(s, 404);
    // Correlation ids: echoed when plain, replaced when hostile.
    let r = app
        .http
        .get(format!("{}/heartbeat", app.base))
        .header("x-titan-correlation-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-titan-correlation-id"], "abc-123");
    let r = app
        .http
        .get(format!("{}/heartbeat", app.base))
        .header("x-titan-correlation-id", "a b\"<script>")
        .send()
        .await
        .unwrap();
    let echoed = r.headers()["x-titan-correlation-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(!echoed.contains('<') && !echoed.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn list_paginates_filters_and_sorts() {
    let app = TestApp::spawn_with(&[("worker-concurrency", "0")]).await;
    seed(&app, "c1", true).await;
    // Five exports of distinct dateKeys (dedupe keeps them apart), created in order.
    for k in 1..=5 {
        let r = app
            .post_export(
                "c1",
                json!({"exportType": "entries", "dateKey": format!("{k}")}),
            )
            .await;
        assert_eq!(r.status(), 201);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let t = app.reporter("c1");
    let get = |q: &'static str| {
        let (http, base, t) = (app.http.clone(), app.base.clone(), t.clone());
        async move {
            let r = http
                .get(format!("{base}/campaigns/c1/exports{q}"))
                .bearer_auth(t)
                .send()
                .await
                .unwrap();
            let total = r.headers()["x-total-count"].to_str().unwrap().to_string();
            let link = r
                .headers()
                .get("link")
                .map(|l| l.to_str().unwrap().to_string());
            let v: Value = r.json().await.unwrap();
            (total, link, v)
        }
    };
    let (total, link, v) = get("?limit=2").await;
    assert_eq!(total, "5");
    let keys: Vec<_> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["dateKey"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys, ["5", "4"], "newest first by default");
    let link = link.unwrap();
    assert!(
        link.contains("page=2") && link.contains("rel=\"next\"") && !link.contains("prev"),
        "{link}"
    );
    let (_, link, v) = get("?limit=2&page=3&sortOrder=asc").await;
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["dateKey"], "5");
    let link = link.unwrap();
    assert!(
        link.contains("rel=\"prev\"") && !link.contains("next"),
        "{link}"
    );
    let (total, _, v) = get("?exportType=entries&sort=status").await;
    assert_eq!((total.as_str(), v.as_array().unwrap().len()), ("5", 5));
    let (_, _, v) = get("?page=1000").await;
    assert_eq!(v, json!([]));
    app.stop().await;
}

#[tokio::test]
async fn an_s3_failure_mid_upload_fails_the_export_and_leaves_nothing() {
    let Some(upstream) = common::faults::proxy_upstream() else {
        eprintln!("skipped: needs a plain-HTTP S3 endpoint to put the fault proxy in front of");
        return;
    };
    let proxy = common::faults::proxy(
        upstream,
        vec![common::faults::Rule {
            when: |pq, _| pq.contains("partNumber="),
            status: 500,
            body: common::faults::S3_INTERNAL_ERROR,
        }],
    )
    .await;
    let app = TestApp::spawn_with(&[("aws-endpoint-url", &proxy), ("max-attempts", "1")]).await;
    seed(&app, "c1", true).await;
    let id = app
        .queue_export("c1", json!({"exportType": "entries"}))
        .await;
    let v = app.wait_done("c1", &id, Duration::from_secs(120)).await;
    assert_eq!(v["status"], "FAILED", "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("upload part 1") && msg.contains(&app.buckets.exports),
        "{msg}"
    );
    assert!(v.get("path").is_none());
    // Checked straight against S3, not through the proxy.
    assert!(app.object_keys(&app.buckets.exports).await.is_empty());
    assert_eq!(app.open_uploads(&app.buckets.exports).await, 0);
    app.stop().await;
}
