//! No PII in logs: the real `vf-export serve` binary exports a campaign full
//! of emails, phone numbers and names, fails another export over the same
//! people, and answers a series of bad requests. Its whole stdout/stderr
//! must hold none of that PII and no full signed URL; every stdout line is
//! a JSON log object with the fields fluentd expects, and the export's
//! worker lines carry the caller's correlation id.

use std::time::{Duration, Instant};

use crate::common::procs::{env_for, Proc};
use crate::common::{campaign_doc, insert, token_with, TestApp};
use mongodb::bson::{doc, oid::ObjectId, DateTime, Document};
use serde_json::{json, Value};

const PEOPLE: usize = 300;
const CORRELATION: &str = "corr-privacy-7f3a9c";

struct Person {
    user: ObjectId,
    email: String,
    phone: String,
    first: String,
    last: String,
    tm_email: String,
    tm_phone: String,
}

fn people() -> Vec<Person> {
    (0..PEOPLE)
        .map(|i| Person {
            user: ObjectId::new(),
            email: format!("priv.person{i:03}@pii-mail.example"),
            phone: format!("+1702555{i:04}"),
            first: format!("Zebedeus{i:03}"),
            last: format!("Quillfeather{i:03}"),
            tm_email: format!("tm.person{i:03}@pii-mail.example"),
            tm_phone: format!("+1415666{i:04}"),
        })
        .collect()
}

async fn seed(app: &TestApp, cid: &str, ps: &[Person]) {
    insert(
        &app.db,
        "campaigns",
        vec![campaign_doc(cid, "Privacy Tour")],
    )
    .await;
    let market = format!("{cid}-m1");
    insert(
        &app.db,
        "markets",
        vec![doc! { "_id": &market, "campaignId": cid, "name": "NYC", "city": "New York", "state": "NY",
                    "event": { "date": DateTime::from_millis(1_780_000_000_000), "ids": ["E1"] } }],
    )
    .await;
    let entries: Vec<Document> = ps
        .iter()
        .map(|p| {
            doc! { "_id": { "campaign_id": cid, "user_id": p.user.to_hex() },
            "fields": { "market": &market, "email": &p.email, "phone": &p.phone,
                        "first_name": &p.first, "last_name": &p.last },
            "origin": { "ip": { "address": "10.1.2.3", "postalCode": "10001" } },
            "locale": "en-us", "date": { "created": DateTime::now() } }
        })
        .collect();
    insert(&app.db, "entries", entries).await;
    let users: Vec<Document> = ps
        .iter()
        .map(|p| {
            doc! { "_id": p.user, "integrations": { "ticketmaster": {
            "id": format!("tm-{}", p.user.to_hex()), "email": &p.tm_email, "phone": &p.tm_phone,
            "name": { "first": &p.first, "last": &p.last }, "postalCode": "10001" } } }
        })
        .collect();
    insert(&app.db, "users", users).await;
    let scoring: Vec<Document> = ps
        .iter()
        .map(|p| {
            doc! { "campaignId": cid, "userId": p.user.to_hex(), "memberId": "1001", "selected": true,
            "locale": "en-us", "market": &market, "score": 0.5 }
        })
        .collect();
    insert(&app.db, "scoring", scoring).await;
}

/// Every stdout line: one JSON object with the fields of operations.md.
fn check_line(line: &str) -> Value {
    let v: Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
    assert!(v.is_object(), "not an object: {line}");
    for f in ["time", "level", "message"] {
        assert!(
            v[f].as_str().is_some_and(|s| !s.is_empty()),
            "{f} missing: {line}"
        );
    }
    assert_eq!(v["product_code"], "PRD1541", "{line}");
    assert_eq!(v["service"], "vf-export", "{line}");
    v
}

async fn wait_status(http: &reqwest::Client, url: &str, tok: &str) -> Value {
    let t0 = Instant::now();
    loop {
        let v: Value = http
            .get(url)
            .bearer_auth(tok)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["status"] != "PENDING" && v["status"] != "TRIGGERED" {
            return v;
        }
        assert!(t0.elapsed() < Duration::from_secs(90), "{v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_hold_no_pii_and_no_signed_url() {
    let app = TestApp::spawn_with(&[("worker-concurrency", "0")]).await;
    let cid = "priv1";
    let ps = people();
    seed(&app, cid, &ps).await;
    let dir = tempfile::tempdir().unwrap();
    // The scoring bucket does not exist: the scoring export (reading the
    // same people) fails.
    let missing_bucket = format!("{}-missing", app.buckets.scoring);
    let env = env_for(
        &app,
        &[
            ("WORKER_CONCURRENCY", "1"),
            ("DEV_ROUTES", "true"),
            ("MAX_ATTEMPTS", "1"),
            ("SCORING_BUCKET", missing_bucket.as_str()),
        ],
    );
    let mut serve = Proc::spawn("serve", &env, dir.path(), "serve");
    let base = serve.base().await;
    let http = reqwest::Client::new();
    let tok = token_with("u1", &[(cid, &["REPORT"])], false, 3600);
    let exports = format!("{base}/campaigns/{cid}/exports");

    // The export, with the caller's correlation id.
    let r = http
        .post(&exports)
        .bearer_auth(&tok)
        .header("x-titan-correlation-id", CORRELATION)
        .json(&json!({ "exportType": "entries" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let v = wait_status(&http, &format!("{exports}/{id}"), &tok).await;
    assert_eq!(v["status"], "FINISHED", "{v}");
    assert_eq!(v["count"], PEOPLE);
    let url = v["path"].as_str().unwrap().to_string();
    let signature = url
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("X-Amz-Signature="))
        .expect("a SigV4 presigned URL")
        .to_string();
    // The download holds the PII: the test data is real enough.
    let body = String::from_utf8(app.download(&url).await).unwrap();
    assert!(body.contains(&ps[0].email) && body.contains(&ps[0].first));
    // The list shows the URL too.
    let r = http.get(&exports).bearer_auth(&tok).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // A failing export over the same people.
    let r = http
        .post(&exports)
        .bearer_auth(&tok)
        .json(&json!({ "exportType": "scoring" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let failed_id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let v = wait_status(&http, &format!("{exports}/{failed_id}"), &tok).await;
    assert_eq!(v["status"], "FAILED", "{v}");

    // A CCPA deletion of one of them: its log lines name no user id.
    let ccpa_user = ps[0].user.to_hex();
    let boss = token_with("privacy-desk", &[], true, 3600);
    let r = http
        .delete(format!("{base}/ccpa/users/{ccpa_user}"))
        .bearer_auth(&boss)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // Bad requests, some carrying PII where it does not belong.
    let pii = &ps[1];
    let bad: Vec<(reqwest::RequestBuilder, u16)> = vec![
        (
            http.post(&exports)
                .bearer_auth(&tok)
                .json(&json!({ "exportType": pii.email })),
            400,
        ),
        (
            http.post(&exports)
                .bearer_auth(&tok)
                .json(&json!({ "exportType": "entries", "includeAllMarkets": pii.phone })),
            400,
        ),
        (
            http.get(format!(
                "{exports}?exportType={}&sort={}",
                pii.email, pii.last
            ))
            .bearer_auth(&tok),
            400,
        ),
        (
            http.post(&exports)
                .bearer_auth(&tok)
                .header("content-type", "application/json")
                .body(format!("{{\"exportType\": \"{}\"", pii.first)),
            400,
        ),
        (
            http.get(format!("{exports}/{}", pii.first))
                .bearer_auth(&tok),
            400,
        ),
        (
            http.get(format!("{base}/campaigns/{}/exports", pii.email))
                .bearer_auth(&tok),
            403,
        ),
        (http.get(&exports).bearer_auth(&pii.email), 401),
        (
            http.get(format!("{base}/dev/internalServerError"))
                .bearer_auth(&tok),
            500,
        ),
        (http.get(format!("{base}/{}", pii.tm_email)), 404),
    ];
    for (req, want) in bad {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), want);
        let text = r.text().await.unwrap();
        for s in [&pii.email, &pii.phone, &pii.first, &pii.last, &pii.tm_email] {
            assert!(!text.contains(s.as_str()), "error body echoes PII: {text}");
        }
    }

    serve.term();
    let status = serve.wait_exit(Duration::from_secs(60)).await;
    assert_eq!(status.code(), Some(0));

    let stdout = serve.stdout_text();
    let stderr = serve.stderr_text();
    let mut leaks = Vec::new();
    for p in &ps {
        for s in [
            &p.email,
            &p.phone,
            &p.first,
            &p.last,
            &p.tm_email,
            &p.tm_phone,
        ] {
            if stdout.contains(s.as_str()) || stderr.contains(s.as_str()) {
                leaks.push(s.clone());
            }
        }
    }
    assert!(leaks.is_empty(), "PII in the logs: {leaks:?}");
    assert!(stdout.contains("\"message\":\"CCPA deletion\""), "{stdout}");
    assert!(
        !stdout.contains(&ccpa_user) && !stderr.contains(&ccpa_user),
        "the CCPA user id was logged"
    );
    for out in [&stdout, &stderr] {
        assert!(!out.contains(&signature), "a signed URL was logged");
        assert!(!out.contains("X-Amz-Signature="), "a signed URL was logged");
    }
    let lines: Vec<Value> = stdout.lines().map(check_line).collect();
    assert!(lines.len() > 10, "too few log lines: {stdout}");
    // The export's worker lines carry the correlation id of the POST.
    let of_export: Vec<&Value> = lines.iter().filter(|l| l["export_id"] == id).collect();
    for m in ["export started", "export finished"] {
        assert!(
            of_export.iter().any(|l| l["message"] == m),
            "no '{m}' line for {id}"
        );
    }
    for l in &of_export {
        assert_eq!(l["correlation_id"], CORRELATION, "{l}");
    }
    // The request that created it, too.
    assert!(lines
        .iter()
        .any(|l| l["correlation_id"] == CORRELATION && l["export_id"].is_null()));
    println!(
        "privacy: {} log lines, {} PII values checked, none logged; {} lines of export {id} carry {CORRELATION}",
        lines.len(),
        ps.len() * 6,
        of_export.len()
    );
    app.stop().await;
}
