//! Records the Node service wrote, read by every route and command: the
//! list, GET, CCPA and the operator CLI over a collection holding 29
//! shapes built from the original's documented fields (exports.md "Export
//! document", "Legacy records"), broken ones included. No 5xx; every
//! readable record comes back with its original fields; the unreadable
//! ones are skipped with a warning naming their `_id`.

use std::collections::BTreeSet;
use std::process::Output;
use std::sync::{Arc, Mutex};

use crate::common::procs::env_for;
use crate::common::{campaign_doc, insert, TestApp};
use mongodb::bson::{doc, oid::ObjectId, Bson, DateTime, Document};
use serde_json::Value;

/// One legacy shape: its name, the stored document, and whether the
/// service can read it (see `ExportRecord::from_document`).
pub struct Fixture {
    pub name: &'static str,
    pub doc: Document,
    pub readable: bool,
}

/// A JWT as the original stored it beside the record (`token`): it must
/// never come back out.
pub const LEGACY_TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJsZWdhY3kifQ.c2VjcmV0LXNpZ25hdHVyZQ";
/// An `error.stack` the original stored: never served.
pub const LEGACY_STACK: &str = "Error: legacy boom\n    at exportWorker (/app/lib/worker.js:42:11)";

fn at(s: &str) -> DateTime {
    DateTime::parse_rfc3339_str(s).unwrap()
}

/// The shapes, for campaign `cid` (24 hex digits, so its records may hold
/// it as a string or as an ObjectId, as the original's did).
pub fn fixtures(cid: &str) -> Vec<Fixture> {
    let coid = ObjectId::parse_str(cid).unwrap();
    let created = at("2024-03-01T10:00:00Z");
    let full = |ty: &str, status: &str| {
        doc! {
            "_id": ObjectId::new(), "campaignId": cid, "campaignName": "Legacy Tour", "exportType": ty,
            "status": status, "requesterUserId": "u-legacy", "correlation": "corr-legacy",
            "dateKey": null, "includeAllMarkets": false,
            "date": { "created": created, "triggered": at("2024-03-01T10:00:01Z"),
                      "finished": at("2024-03-01T10:02:00Z"), "failed": null, "expired": null },
            "key": format!("exports/{cid}/{ty}/legacy.csv"), "count": 1200, "meta": {}, "error": null,
        }
    };
    let with = |mut d: Document, extra: Document| {
        d.extend(extra);
        d
    };
    let without = |mut d: Document, keys: &[&str]| {
        for k in keys {
            d.remove(*k);
        }
        d
    };
    let ok = |name, doc| Fixture {
        name,
        doc,
        readable: true,
    };
    let broken = |name, doc| Fixture {
        name,
        doc,
        readable: false,
    };
    let f = || full("entries", "FINISHED");
    vec![
        ok("finished, every original field", f()),
        ok(
            "the caller's JWT as token",
            with(f(), doc! { "token": LEGACY_TOKEN }),
        ),
        ok(
            "failed, error with stack and payload",
            with(
                full("fanlist", "FAILED"),
                doc! { "key": null, "count": null,
                "date": { "created": created, "triggered": created, "finished": null, "failed": at("2024-03-01T10:05:00Z"), "expired": null },
                "error": { "message": "Campaign has no markets", "stack": LEGACY_STACK, "payload": { "code": "NoMarketsFound" } } },
            ),
        ),
        ok(
            "failed, error as a string",
            with(
                full("codes", "FAILED"),
                doc! { "key": null, "error": "Request failed with status code 500" },
            ),
        ),
        ok("error as a number", with(f(), doc! { "error": 500 })),
        ok(
            "campaignId as an ObjectId",
            with(f(), doc! { "campaignId": coid }),
        ),
        ok("count as a string", with(f(), doc! { "count": "1234" })),
        ok("count as a double", with(f(), doc! { "count": 12.0 })),
        ok(
            "dates as strings",
            with(
                f(),
                doc! { "date": { "created": "2024-02-01T09:00:00.000Z", "finished": "2024-02-01T09:03:00.000Z" } },
            ),
        ),
        ok(
            "dates as epoch milliseconds",
            with(f(), doc! { "date": { "created": 1_706_778_000_000i64 } }),
        ),
        ok("no date at all", without(f(), &["date"])),
        ok(
            "no campaignName",
            without(f(), &["campaignName", "requesterUserId", "correlation"]),
        ),
        ok(
            "unknown fields (mongoose __v, others)",
            with(
                f(),
                doc! { "__v": 0, "legacyFlag": true, "createdBy": { "name": "tool" } },
            ),
        ),
        ok(
            "multi-object key array",
            with(
                full("autoReminderEmail", "FINISHED"),
                doc! { "key": ["Ticketmaster/7222895/a.csv", "TMInternational/1314420/b.csv"] },
            ),
        ),
        ok(
            "ZIP with meta.files",
            with(
                full("reminderEmail", "FINISHED"),
                doc! { "key": format!("exports/{cid}/reminder.zip"), "meta": { "files": ["NA/Legacy Tour - 1.csv"] } },
            ),
        ),
        ok(
            "includeAllMarkets as a string",
            with(f(), doc! { "includeAllMarkets": "true" }),
        ),
        ok(
            "requesterUserId as an ObjectId",
            with(f(), doc! { "requesterUserId": ObjectId::new() }),
        ),
        ok(
            "codeWaves, dateKey as a number",
            with(full("codeWaves", "FINISHED"), doc! { "dateKey": 20240101 }),
        ),
        ok(
            "expired",
            with(
                full("scoring", "EXPIRED"),
                doc! { "key": null, "count": null,
                "date": { "created": created, "triggered": created, "finished": null, "failed": null, "expired": at("2024-03-01T11:00:01Z") } },
            ),
        ),
        ok(
            "pending, no activeKey",
            with(
                full("artistOptIn", "PENDING"),
                doc! { "key": null, "count": null,
                "date": { "created": created, "triggered": null, "finished": null, "failed": null, "expired": null } },
            ),
        ),
        ok(
            "triggered, no lease, preliminary count",
            with(
                full("livenationOptIn", "TRIGGERED"),
                doc! { "key": null, "count": 5000,
                "date": { "created": created, "triggered": at("2024-03-01T10:00:01Z"), "finished": null, "failed": null, "expired": null } },
            ),
        ),
        ok(
            "progress that is not ours",
            with(f(), doc! { "progress": "n/a" }),
        ),
        ok(
            "key null on a finished export",
            with(f(), doc! { "key": null }),
        ),
        broken("no exportType", without(f(), &["exportType"])),
        broken("exportType null", with(f(), doc! { "exportType": null })),
        broken("an unknown status", with(f(), doc! { "status": "RUNNING" })),
        broken(
            "a lower-case status",
            with(f(), doc! { "status": "finished" }),
        ),
        broken("a string _id", with(f(), doc! { "_id": "legacy-export-1" })),
        broken("no campaignId", without(f(), &["campaignId"])),
    ]
}

/// The `_id` as the service names it in logs and output.
pub fn id_text(d: &Document) -> String {
    match d.get("_id") {
        Some(Bson::ObjectId(o)) => o.to_hex(),
        Some(Bson::String(s)) => s.clone(),
        other => format!("{other:?}"),
    }
}

/// A campaign with one market (what a POST of an entry-based type needs).
pub async fn campaign_with_market(app: &TestApp, cid: &str) {
    insert(&app.db, "campaigns", vec![campaign_doc(cid, "Cutover")]).await;
    insert(
        &app.db,
        "markets",
        vec![doc! { "_id": format!("{cid}-m1"), "campaignId": cid, "city": "Austin", "state": "TX", "event": { "ids": [] } }],
    )
    .await;
}

/// `vf-export <args>` on `app`'s database and buckets.
pub fn vf(app: &TestApp, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_vf-export"))
        .args(args)
        .envs(env_for(app, &[]))
        .output()
        .unwrap()
}

pub fn out(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The log lines of this test's app. `#[tokio::test]` runs every task of
/// the in-process app on the test's one thread, so a thread-local
/// subscriber sees all of them.
pub struct Logs(Arc<Mutex<Vec<u8>>>);

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    pub fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .with_writer(move || LogWriter(w.clone()))
            .finish();
        (Self(buf), tracing::subscriber::set_default(sub))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

async fn get(app: &TestApp, token: &str, path: &str) -> (u16, Option<String>, Value) {
    let r = app
        .http
        .get(format!("{}{path}", app.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let total = r
        .headers()
        .get("x-total-count")
        .map(|v| v.to_str().unwrap().to_string());
    (status, total, r.json().await.unwrap())
}

/// What the API returns of a record must be what the original stored
/// (read as its documented type), and never its `token` or `error.stack`.
fn check_view(fx: &Fixture, cid: &str, v: &Value) {
    let d = &fx.doc;
    let name = fx.name;
    assert_eq!(v["id"], id_text(d), "{name}");
    assert_eq!(v["campaignId"], cid, "{name}");
    assert_eq!(v["exportType"], d.get_str("exportType").unwrap(), "{name}");
    assert_eq!(v["status"], d.get_str("status").unwrap(), "{name}");
    assert!(v["campaignName"].is_string(), "{name}: {v}");
    assert!(v["includeAllMarkets"].is_boolean(), "{name}: {v}");
    for k in ["created", "triggered", "finished", "failed", "expired"] {
        assert!(
            v["date"][k].is_null() || v["date"][k].is_string(),
            "{name}: date.{k} {v}"
        );
    }
    match d.get("count") {
        Some(Bson::Int32(n)) => assert_eq!(v["count"], *n, "{name}"),
        Some(Bson::String(s)) => assert_eq!(v["count"], s.parse::<i64>().unwrap(), "{name}"),
        Some(Bson::Double(x)) => assert_eq!(v["count"], *x as i64, "{name}"),
        _ => assert!(v["count"].is_null(), "{name}: {v}"),
    }
    match d.get("key") {
        Some(Bson::String(k)) => assert_eq!(v["key"], k.as_str(), "{name}"),
        Some(Bson::Array(a)) => assert_eq!(v["key"].as_array().unwrap().len(), a.len(), "{name}"),
        _ => assert!(v["key"].is_null(), "{name}: {v}"),
    }
    match d.get("error") {
        Some(Bson::String(m)) => assert_eq!(v["error"]["message"], m.as_str(), "{name}"),
        Some(Bson::Document(e)) => {
            assert_eq!(
                v["error"]["message"],
                e.get_str("message").unwrap(),
                "{name}"
            );
            assert_eq!(v["error"]["payload"]["code"], "NoMarketsFound", "{name}");
        }
        _ => assert!(v["error"].is_null(), "{name}: {v}"),
    }
    match d.get_str("campaignName") {
        Ok(n) => assert_eq!(v["campaignName"], n, "{name}"),
        Err(_) => assert_eq!(v["campaignName"], "", "{name}"),
    }
    if let Ok(Bson::String(s)) = d
        .get_document("date")
        .map(|x| x.get("created").cloned().unwrap_or(Bson::Null))
    {
        assert_eq!(v["date"]["created"], s.as_str(), "{name}");
    }
    if let Ok(m) = d.get_document("meta") {
        if m.contains_key("files") {
            assert_eq!(v["meta"]["files"][0], "NA/Legacy Tour - 1.csv", "{name}");
        }
    }
    let text = v.to_string();
    assert!(
        !text.contains(LEGACY_TOKEN) && !text.contains("exportWorker"),
        "{name}: {text}"
    );
    assert!(
        v.get("token").is_none() && v["error"].get("stack").is_none(),
        "{name}"
    );
}

/// Seed the campaign (ObjectId `_id`, as a campaign service may store
/// it), one entrant, and the fixtures; two FINISHED records get their
/// object in the exports bucket (CCPA deletes them).
async fn seed(app: &TestApp, cid: &str) -> Vec<Fixture> {
    let coid = ObjectId::parse_str(cid).unwrap();
    insert(
        &app.db,
        "campaigns",
        vec![doc! { "_id": coid, "name": "Legacy Tour", "preferences": [], "promoters": [] }],
    )
    .await;
    insert(
        &app.db,
        "entries",
        vec![doc! { "_id": { "campaign_id": cid, "user_id": "legacy-user-1" }, "fields": { "market": "m" },
                    "date": { "created": DateTime::now() } }],
    )
    .await;
    let fx = fixtures(cid);
    insert(
        &app.db,
        "exports",
        fx.iter().map(|f| f.doc.clone()).collect(),
    )
    .await;
    for f in &fx[..2] {
        app.s3
            .put_object()
            .bucket(&app.buckets.exports)
            .key(f.doc.get_str("key").unwrap())
            .body(aws_sdk_s3::primitives::ByteStream::from_static(b"id\n1\n"))
            .send()
            .await
            .unwrap();
    }
    fx
}

#[tokio::test]
async fn legacy_records_are_read_by_the_list_get_ccpa_and_the_cli() {
    let (logs, _guard) = Logs::capture();
    // No worker: the legacy PENDING/TRIGGERED records stay as they are.
    let app = TestApp::spawn_with(&[("worker-concurrency", "0")]).await;
    let cid = ObjectId::new().to_hex();
    let fx = seed(&app, &cid).await;
    assert!(fx.len() >= 20 && fx.iter().filter(|f| !f.readable).count() >= 5);
    let token = app.reporter(&cid);
    // Stored under this campaign (either form of its id): what the list sees.
    let in_campaign = |f: &&Fixture| {
        matches!(f.doc.get("campaignId"), Some(Bson::String(c)) if *c == cid)
            || matches!(f.doc.get("campaignId"), Some(Bson::ObjectId(_)))
    };
    let readable: Vec<&Fixture> = fx.iter().filter(|f| f.readable).collect();
    let unreadable_listed: Vec<&Fixture> = fx
        .iter()
        .filter(|f| !f.readable)
        .filter(in_campaign)
        .collect();

    // The list: every readable record, each with its original fields.
    let (status, total, v) =
        get(&app, &token, &format!("/campaigns/{cid}/exports?limit=100")).await;
    assert_eq!(status, 200, "{v}");
    let items = v.as_array().unwrap();
    let got: BTreeSet<String> = items
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    let want: BTreeSet<String> = readable.iter().map(|f| id_text(&f.doc)).collect();
    assert_eq!(got, want);
    for f in &readable {
        let item = items.iter().find(|i| i["id"] == id_text(&f.doc)).unwrap();
        check_view(f, &cid, item);
    }
    // The total counts what is stored under the campaign, unreadable included.
    let stored = fx.iter().filter(in_campaign).count();
    assert_eq!(total.as_deref(), Some(stored.to_string().as_str()));
    // Paging, every sort and a type filter over the mixed shapes: no 5xx,
    // and the pages together hold each readable record once.
    for sort in ["date.created", "date.finished", "status", "exportType"] {
        for order in ["asc", "desc"] {
            let mut seen = Vec::new();
            for page in 1..=8 {
                let q = format!(
                    "/campaigns/{cid}/exports?limit=4&page={page}&sort={sort}&sortOrder={order}"
                );
                let (status, _, v) = get(&app, &token, &q).await;
                assert_eq!(status, 200, "{q}: {v}");
                seen.extend(
                    v.as_array()
                        .unwrap()
                        .iter()
                        .map(|i| i["id"].as_str().unwrap().to_string()),
                );
            }
            let unique: BTreeSet<String> = seen.iter().cloned().collect();
            assert_eq!(
                (unique.len(), &unique),
                (seen.len(), &want),
                "{sort} {order}"
            );
        }
    }
    let (status, _, v) = get(
        &app,
        &token,
        &format!("/campaigns/{cid}/exports?exportType=entries&limit=100"),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert!(!v.as_array().unwrap().is_empty());

    // GET: each readable record; an unreadable one is a 404, never a 500.
    for f in &readable {
        let (status, _, v) = get(
            &app,
            &token,
            &format!("/campaigns/{cid}/exports/{}", id_text(&f.doc)),
        )
        .await;
        assert_eq!(status, 200, "{}: {v}", f.name);
        check_view(f, &cid, &v);
    }
    for f in fx.iter().filter(|f| !f.readable) {
        if let Some(Bson::ObjectId(id)) = f.doc.get("_id") {
            let (status, _, v) = get(&app, &token, &format!("/campaigns/{cid}/exports/{id}")).await;
            assert_eq!(status, 404, "{}: {v}", f.name);
        }
    }
    // Every unreadable record the list met was named in a warning.
    let text = logs.text();
    for f in &unreadable_listed {
        let line = text.lines().find(|l| {
            l.contains("unreadable export record skipped") && l.contains(&id_text(&f.doc))
        });
        assert!(
            line.is_some(),
            "{}: no warning naming {} in:\n{text}",
            f.name,
            id_text(&f.doc)
        );
    }

    // CCPA: the legacy exports' objects go (the ObjectId-campaignId record
    // too), the partner types and in-flight ones are left, nothing fails.
    let ccpa = async || {
        let r = app
            .http
            .delete(format!("{}/ccpa/users/legacy-user-1", app.base))
            .bearer_auth(app.token("admin", &[], true))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()
    };
    let v = ccpa().await;
    assert_eq!(v["inFlight"], 2, "{v}");
    assert!(v["deletedCount"]["exports"].as_u64().unwrap() >= 2, "{v}");
    assert!(app.object_keys(&app.buckets.exports).await.is_empty());
    let oid_record = fx
        .iter()
        .find(|f| f.name == "campaignId as an ObjectId")
        .unwrap();
    let (_, _, v) = get(
        &app,
        &token,
        &format!("/campaigns/{cid}/exports/{}", id_text(&oid_record.doc)),
    )
    .await;
    assert_eq!(v["deleted"], true, "{v}");
    // A repeat deletes nothing more.
    let v = ccpa().await;
    assert_eq!(
        v["deletedCount"],
        serde_json::json!({ "exports": 0, "files": 0 })
    );

    // The operator CLI lists every readable record and names every
    // unreadable one (those without a campaign too).
    let o = vf(&app, &["exports", "list", "--limit", "100"]);
    let (stdout, stderr) = out(&o);
    assert!(o.status.success(), "{stderr}");
    for f in &fx {
        let id = id_text(&f.doc);
        if f.readable {
            assert!(stdout.contains(&id), "{}: not listed:\n{stdout}", f.name);
        } else {
            assert!(
                stderr.contains(&format!("unreadable export record {id}")),
                "{}:\n{stderr}",
                f.name
            );
        }
    }
    assert!(!stdout.contains(LEGACY_TOKEN) && !stderr.contains(LEGACY_TOKEN));
    // Filters: status, campaign (either stored form), type, age.
    let o = vf(
        &app,
        &[
            "exports",
            "list",
            "--status",
            "pending,TRIGGERED",
            "--campaign",
            &cid,
            "--json",
        ],
    );
    let (stdout, stderr) = out(&o);
    assert!(o.status.success(), "{stderr}");
    let rows: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let statuses: BTreeSet<&str> = rows.iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, BTreeSet::from(["PENDING", "TRIGGERED"]));
    let o = vf(
        &app,
        &[
            "exports",
            "list",
            "--type",
            "codeWaves",
            "--older-than",
            "30d",
            "--json",
        ],
    );
    let (stdout, _) = out(&o);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.contains("\"dateKey\":\"20240101\""), "{stdout}");
    let o = vf(
        &app,
        &[
            "exports",
            "list",
            "--campaign",
            &cid,
            "--older-than",
            "36500d",
        ],
    );
    let (stdout, _) = out(&o);
    assert_eq!(stdout.lines().count(), 1, "only the header: {stdout}");
    // show: the record in full, without the token or the stack.
    for name in [
        "the caller's JWT as token",
        "failed, error with stack and payload",
        "no exportType",
    ] {
        let f = fx.iter().find(|f| f.name == name).unwrap();
        let o = vf(&app, &["exports", "show", &id_text(&f.doc)]);
        let (stdout, stderr) = out(&o);
        assert!(o.status.success(), "{name}: {stderr}");
        assert!(stdout.contains(&id_text(&f.doc)), "{name}: {stdout}");
        assert!(
            !stdout.contains(LEGACY_TOKEN) && !stdout.contains("exportWorker"),
            "{name}: {stdout}"
        );
        assert_eq!(
            stdout.contains("unreadable:"),
            !f.readable,
            "{name}: {stdout}"
        );
    }
    let o = vf(&app, &["exports", "show", &ObjectId::new().to_hex()]);
    assert!(!o.status.success());
    assert!(out(&o).1.contains("not found"));
    app.stop().await;
}
