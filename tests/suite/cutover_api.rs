//! The original's behaviour, restored for the cutover: the list under
//! every parameter name the original's documents used, 404
//! `CampaignNotFound` for an unknown campaign; and the way back: a record
//! vf-export writes is one the original reads, every original field
//! present with its original type.

use std::time::Duration;

use crate::cancel::cancel;
use crate::common::{campaign_doc, insert, procs, TestApp};
use crate::legacy_records::campaign_with_market;
use mongodb::bson::{oid::ObjectId, Bson, Document};
use serde_json::{json, Value};

/// What in `d` the original service could not read as it wrote it: each
/// field of its export document (exports.md) must be there with its type.
/// Fields vf-export adds are not looked at.
pub fn original_shape(d: &Document) -> Vec<String> {
    let mut problems = Vec::new();
    let mut want = |what: &str, ok: bool| {
        if !ok {
            problems.push(format!("{what}: {d}"));
        }
    };
    let is = |k: &str, f: fn(&Bson) -> bool| d.get(k).is_some_and(f);
    fn text(b: &Bson) -> bool {
        matches!(b, Bson::String(_))
    }
    fn text_or_null(b: &Bson) -> bool {
        matches!(b, Bson::String(_) | Bson::Null)
    }
    fn number(b: &Bson) -> bool {
        matches!(b, Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_))
    }
    want(
        "_id is an ObjectId",
        is("_id", |b| matches!(b, Bson::ObjectId(_))),
    );
    for k in [
        "campaignId",
        "campaignName",
        "exportType",
        "requesterUserId",
        "correlation",
    ] {
        want(&format!("{k} is a string"), is(k, text));
    }
    let status = d.get_str("status").unwrap_or("");
    want(
        "status is one of the original five",
        ["PENDING", "TRIGGERED", "FINISHED", "FAILED", "EXPIRED"].contains(&status),
    );
    want("dateKey is a string or null", is("dateKey", text_or_null));
    want(
        "includeAllMarkets is a boolean",
        is("includeAllMarkets", |b| matches!(b, Bson::Boolean(_))),
    );
    want(
        "key is a string, an array of strings or null",
        is("key", |b| match b {
            Bson::Array(a) => a.iter().all(|k| matches!(k, Bson::String(_))),
            b => text_or_null(b),
        }),
    );
    want(
        "count is a number or null",
        is("count", |b| number(b) || matches!(b, Bson::Null)),
    );
    want(
        "meta, when present, is a document",
        d.get("meta").is_none_or(|b| matches!(b, Bson::Document(_))),
    );
    want(
        "error is null or {message: string, payload}",
        is("error", |b| match b {
            Bson::Null => true,
            Bson::Document(e) => e.get_str("message").is_ok() && e.contains_key("payload"),
            _ => false,
        }),
    );
    let date = d.get_document("date").ok();
    want("date is a document", date.is_some());
    let date_is = |k: &str, set: bool| {
        date.and_then(|x| x.get(k))
            .is_some_and(|b| matches!(b, Bson::DateTime(_)) || (!set && matches!(b, Bson::Null)))
    };
    for k in ["created", "triggered", "finished", "failed", "expired"] {
        let set = k == "created"
            || (k == "triggered" && ["TRIGGERED", "FINISHED", "EXPIRED"].contains(&status))
            || (k == "finished" && status == "FINISHED")
            || (k == "failed" && status == "FAILED")
            || (k == "expired" && status == "EXPIRED");
        want(
            &format!(
                "date.{k} is a BSON date{}",
                if set { "" } else { " or null" }
            ),
            date_is(k, set),
        );
    }
    if status == "FINISHED" {
        want(
            "a FINISHED export has its key",
            !is("key", |b| matches!(b, Bson::Null)),
        );
        want("a FINISHED export has its count", is("count", number));
    }
    if status == "FAILED" {
        want(
            "a FAILED export has its error",
            is("error", |b| matches!(b, Bson::Document(_))),
        );
    }
    problems
}

fn oid(id: &str) -> ObjectId {
    ObjectId::parse_str(id).unwrap()
}

fn assert_original(d: &Document) {
    let problems = original_shape(d);
    assert!(problems.is_empty(), "{problems:#?}");
}

#[tokio::test]
async fn a_record_vf_export_writes_reads_back_with_the_originals_fields_and_types() {
    let app = TestApp::spawn_with(&[("worker-concurrency", "0")]).await;
    let cid = "rb-c1";
    procs::seed(&app, cid, 20, 2).await;
    let id_of = |v: Value| v["id"].as_str().unwrap().to_string();
    // PENDING, as queued.
    let r = app
        .post_export(cid, json!({ "exportType": "entries" }))
        .await;
    assert_eq!(r.status(), 201);
    let pending = id_of(r.json().await.unwrap());
    assert_original(&app.export_doc(oid(&pending)).await);
    // FAILED, by a cancel.
    assert_eq!(cancel(&app, cid, &pending).await.0, 200);
    assert_original(&app.export_doc(oid(&pending)).await);
    // FINISHED, single-object and gzip, run by a worker.
    let mut finished = Vec::new();
    for body in [
        json!({ "exportType": "entries" }),
        json!({ "exportType": "fanlist", "compression": "gzip" }),
    ] {
        let r = app.post_export(cid, body).await;
        assert_eq!(r.status(), 201);
        finished.push(id_of(r.json().await.unwrap()));
    }
    let worker = app.sibling(&[]).await;
    for id in &finished {
        let v = worker.wait_done(cid, id, Duration::from_secs(120)).await;
        assert_eq!(v["status"], "FINISHED", "{v}");
        let d = app.export_doc(oid(id)).await;
        assert_original(&d);
        // Statuses stay the original five, and none of our queue fields
        // is left on a final record but the additive ones documented.
        for gone in ["activeKey", "lease", "upload"] {
            assert!(d.get(gone).is_none(), "{gone} left on {d}");
        }
    }
    worker.stop().await;
    app.stop().await;
}

async fn list(app: &TestApp, cid: &str, q: &str) -> (u16, Option<String>, Option<String>, Value) {
    let r = app
        .http
        .get(format!("{}/campaigns/{cid}/exports?{q}", app.base))
        .bearer_auth(app.reporter(cid))
        .send()
        .await
        .unwrap();
    let h = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_string());
    let (status, total, link) = (r.status().as_u16(), h("x-total-count"), h("link"));
    (status, total, link, r.json().await.unwrap())
}

#[tokio::test]
async fn the_list_under_each_of_the_originals_names_is_the_same_page_as_under_ours() {
    let app = TestApp::spawn_with(&[("worker-concurrency", "0")]).await;
    let cid = "al-c1";
    campaign_with_market(&app, cid).await;
    for k in 1..=7 {
        let ty = if k % 2 == 0 { "entries" } else { "fanlist" };
        let r = app
            .post_export(cid, json!({ "exportType": ty, "dateKey": k.to_string() }))
            .await;
        assert_eq!(r.status(), 201);
    }
    let pairs = [
        ("offset=2&limit=2", "page=2&limit=2"),
        ("offset=6&limit=2", "page=4&limit=2"),
        ("offset=0&limit=3", "page=1&limit=3"),
        ("sortBy=exportType&limit=3", "sort=exportType&limit=3"),
        ("sortDir=asc&limit=3", "sortOrder=asc&limit=3"),
        ("sortDesc=false&limit=3", "sortOrder=asc&limit=3"),
        ("sortDesc=true&limit=3", "sortOrder=desc&limit=3"),
        (
            "sortBy=exportType&sortDir=asc&offset=3&limit=3",
            "sort=exportType&sortOrder=asc&page=2&limit=3",
        ),
        (
            "sortBy=date.created&sortDesc=false&offset=4&limit=2&exportType=entries",
            "sort=date.created&sortOrder=asc&page=3&limit=2&exportType=entries",
        ),
    ];
    for (alias, ours) in pairs {
        let a = list(&app, cid, alias).await;
        let o = list(&app, cid, ours).await;
        assert_eq!(a.0, 200, "{alias}: {}", a.3);
        assert_eq!(a, o, "{alias} vs {ours}");
        assert!(
            !a.3.as_array().unwrap().is_empty() || alias.contains("entries"),
            "{alias}"
        );
    }
    // The alias changes the page: it is not ignored.
    let first = list(&app, cid, "limit=2").await;
    let second = list(&app, cid, "offset=2&limit=2").await;
    assert_ne!(first.3, second.3);
    // What cannot be honoured exactly is a 400 in the error shape.
    for q in [
        "offset=3&limit=2",
        "sortOrder=asc&sortDir=desc",
        "sortDesc=maybe",
        "page=1&offset=2&limit=2",
    ] {
        let (status, _, _, v) = list(&app, cid, q).await;
        assert_eq!(status, 400, "{q}: {v}");
        assert_eq!(v["error"]["status"], 400, "{q}: {v}");
        assert!(v["error"]["payload"]["field"].is_string(), "{q}: {v}");
    }
    // An unknown campaign: 404 CampaignNotFound, as the original answered;
    // a known one without exports: an empty page.
    let (status, _, _, v) = list(&app, "no-such-campaign", "").await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["error"]["payload"]["code"], "CampaignNotFound", "{v}");
    insert(
        &app.db,
        "campaigns",
        vec![campaign_doc("al-empty", "Empty")],
    )
    .await;
    let (status, total, _, v) = list(&app, "al-empty", "").await;
    assert_eq!((status, total.as_deref(), v), (200, Some("0"), json!([])));
    app.stop().await;
}
