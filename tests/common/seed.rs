//! One small campaign covering the export types' edge cases, and helpers
//! to run an export and read what it wrote (CSV, gzip, ZIP, partner
//! buckets, and the S3 requests the app made).
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mongodb::bson::{doc, oid::ObjectId, DateTime, Document};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{insert, standins, unique, TestApp};

pub const WAIT: Duration = Duration::from_secs(90);
pub const CID: &str = "c1";
/// Entry `date.created` as the exports write it.
pub const D: &str = "2026-01-01T00:00:00.123Z";
/// Code `assignedAt`.
pub const A: &str = "2026-01-02T00:00:00.000Z";
pub const NYC: &str = "\"5/28 - New York, NY\"";
pub const LA: &str = "\"1/01 - Los Angeles, CA\"";
/// A user name that must be neutralised and quoted.
pub const FORMULA: &str = "\"'=HYPERLINK(\"\"x\"\")\"";

pub fn uid(n: u8) -> ObjectId {
    ObjectId::parse_str(format!("65f0000000000000000000{n:02x}")).unwrap()
}
pub fn u(n: u8) -> String {
    uid(n).to_hex()
}
pub fn sha(n: u8) -> String {
    hex::encode(Sha256::digest(u(n).as_bytes()))
}

/// The fixture (campaign `c1`, markets `c1-m1` NYC and `c1-m2` LA):
///
/// | user | market | entry | opt-ins | scoring |
/// |---|---|---|---|---|
/// | 1 | m1 (+m2, +unknown) | full, en-us | marketing, LN, SMS, p1+p2 | selected, en-us, codes A1 (+B2, Z0) |
/// | 2 | m1 | formula first name, fr-ca | SMS (phone from user), p2 | selected, fr-ca, code `=C1` |
/// | 3 | m2 | `@me`, `-2+3`, de-de, no user | marketing, SMS without phone | selected, de-de, D5 |
/// | 4 | m2 | non-ASCII, en-uk | marketing | selected, en-uk, U1 |
/// | 5 | m1 | no email (user's), fr-fr | LN | selected, fr-fr (no SFMC region of its own: the default, NA), F5 |
/// | 6, 7, 8 | — | no entry, no user | — | not selected (8: non-numeric member id) |
pub async fn seed(app: &TestApp) {
    let db = &app.db;
    insert(
        db,
        "campaigns",
        vec![doc! {
            "_id": CID, "name": "Tour 2026", "preferences": [], "promoters": ["p1", "p2"],
            "artist": { "name": "Muse" }, "tour": { "name": "Drones" }, "fanClubName": "",
            "style": { "theme": { "primary": "#ff0000" } }, "options": { "isLNAA": false },
        }],
    )
    .await;
    insert(
        db,
        "promoters",
        vec![
            doc! { "_id": "p1", "name": "Live Nation" },
            doc! { "_id": "p2", "name": "AEG/Presents" },
        ],
    )
    .await;
    insert(
        db,
        "markets",
        vec![
            doc! { "_id": "c1-m1", "campaignId": CID, "name": "NYC", "city": "New York", "state": "NY",
                   "event": { "date": DateTime::from_millis(1_780_000_000_000), "ids": ["E1", "E2"],
                              "venue": { "name": "MSG" }, "link": "https://tm.example/e1" } },
            doc! { "_id": "c1-m2", "campaignId": CID, "name": "LA", "city": "Los Angeles", "state": "CA",
                   "event": { "date": DateTime::from_millis(1_767_225_600_000), "ids": ["E3"],
                              "venue": { "name": "Forum" }, "link": "https://tm.example/e3" } },
        ],
    )
    .await;
    let created = DateTime::from_millis(1_767_225_600_123);
    let entry = |n: u8, market: &str, fields: Document, locale: &str| {
        let mut f = doc! { "market": market };
        f.extend(fields);
        doc! { "_id": { "campaign_id": CID, "user_id": u(n) }, "fields": f,
        "locale": locale, "date": { "created": created } }
    };
    let mut e1 = entry(
        1,
        "c1-m1",
        doc! { "email": "a@x.io", "phone": "+15551234567", "first_name": "Ann",
        "allowMarketing": true, "allowLiveNation": true, "allowSms": true,
        "promoterOptIns": ["p1", "p2"], "additionalMarkets": ["c1-m2", "nope"] },
        "en-us",
    );
    e1.insert(
        "origin",
        doc! { "ip": { "address": "10.0.0.1", "postalCode": "10001", "latitude": 40.7, "longitude": -74.0 } },
    );
    e1.insert(
        "date",
        doc! { "created": created, "phoneConfirmed": created },
    );
    insert(
        db,
        "entries",
        vec![
            e1,
            entry(
                2,
                "c1-m1",
                doc! { "first_name": "=HYPERLINK(\"x\")", "allowMarketing": false, "allowSms": true,
                       "promoterOptIns": ["p2"] },
                "fr-ca",
            ),
            entry(
                3,
                "c1-m2",
                doc! { "email": "@me", "last_name": "-2+3", "allowMarketing": true, "allowSms": true,
                       "promoterOptIns": [] },
                "de-de",
            ),
            entry(
                4,
                "c1-m2",
                doc! { "email": "zoë@x.io", "last_name": "Ünïcødé", "allowMarketing": true,
                       "allowLiveNation": false },
                "en-uk",
            ),
            entry(5, "c1-m1", doc! { "allowLiveNation": true }, "fr-fr"),
            // Another campaign's entry of user 1.
            doc! { "_id": { "campaign_id": "c2", "user_id": u(1) },
                   "fields": { "market": "c1-m1", "allowMarketing": true }, "date": { "created": created } },
        ],
    )
    .await;
    let tm = |d: Document| doc! { "integrations": { "ticketmaster": d } };
    let mut users = vec![
        tm(
            doc! { "id": "tm1", "member_id": "h1", "globalUserId": "g1", "email": "tm1@x.io",
            "phone": "+1999", "name": { "first": "Annie", "last": "Smith" }, "postalCode": "99999" },
        ),
        tm(
            doc! { "id": 12345, "member_id": "h2", "globalUserId": "g2", "email": "tm2@x.io",
            "phone": "+1 (555) 000-1111", "name": { "last": "O'Brien, Jr." }, "postalCode": "H2X" },
        ),
        tm(
            doc! { "id": "tm4", "member_id": "h4", "email": "tm4@x.io", "name": { "first": "Zoë" } },
        ),
        tm(
            doc! { "id": "tm5", "member_id": "h5", "email": "tm5@x.io", "name": { "first": "Eve", "last": "Fr" } },
        ),
    ];
    for (d, n) in users.iter_mut().zip([1u8, 2, 4, 5]) {
        d.insert("_id", uid(n));
    }
    insert(db, "users", users).await;
    let code =
        |id: i32, market: &str, code: &str| doc! { "id": id, "marketId": market, "code": code };
    let scoring = |n: u8, member: &str, selected: bool, locale: &str, market: &str, score: f64| {
        doc! { "campaignId": CID, "userId": u(n), "memberId": member, "selected": selected,
        "locale": locale, "market": market, "score": score }
    };
    let mut s1 = scoring(1, "1001", true, "en-us", "c1-m1", 0.9);
    s1.insert(
        "codes",
        vec![
            code(2, "c1-m1", "B2"),
            code(1, "c1-m1", "A1"),
            code(0, "c1-m2", "Z0"),
        ],
    );
    s1.insert("nudetect", doc! { "score": 12, "scoreBand": "low" });
    s1.insert("accountFanscore", 77);
    let mut s2 = scoring(2, "1002", true, "fr-ca", "c1-m1", 0.8);
    s2.insert("codes", vec![code(1, "c1-m1", "=C1")]);
    let mut s3 = scoring(3, "1003", true, "de-de", "c1-m2", 0.7);
    s3.insert("codes", vec![code(5, "c1-m2", "D5")]);
    let mut s4 = scoring(4, "1004", true, "en-uk", "c1-m2", 0.6);
    s4.insert("codes", vec![code(1, "c1-m2", "U1")]);
    let mut s5 = scoring(5, "1005", true, "fr-fr", "c1-m1", 0.55);
    s5.insert("codes", vec![code(3, "c1-m1", "F5")]);
    let s6 = scoring(6, "1006", false, "en-us", "c1-m1", 0.5);
    let s7 = scoring(7, "1007", false, "en-us", "c1-m2", 0.4);
    let s8 = scoring(8, "m-8", false, "en-au", "", 0.3);
    let mut other = scoring(1, "1001", true, "en-us", "c1-m1", 0.9);
    other.insert("campaignId", "c2");
    insert(db, "scoring", vec![s1, s2, s3, s4, s5, s6, s7, s8, other]).await;
    let at = DateTime::from_millis(1_767_312_000_000);
    insert(
        db,
        "codes",
        vec![
            doc! { "campaignId": CID, "code": "AAA1", "status": "assigned", "assignedTo": u(1),
            "assignedAt": at, "marketId": "c1-m1", "waveDateKey": "20260301" },
            doc! { "campaignId": CID, "code": "AAA2", "status": "assigned", "assignedTo": u(6),
            "assignedAt": at, "marketId": "c1-m2", "waveDateKey": "20260301" },
            doc! { "campaignId": CID, "code": "AAA3", "status": "available" },
            doc! { "campaignId": CID, "code": "=AAA4", "status": "assigned", "assignedTo": u(2),
            "assignedAt": at, "waveDateKey": "20260302" },
            doc! { "campaignId": "c2", "code": "ZZZ", "status": "available" },
        ],
    )
    .await;
}

/// A campaign with no markets (entry types refuse it).
pub async fn seed_marketless(app: &TestApp, cid: &str) {
    insert(
        &app.db,
        "campaigns",
        vec![doc! { "_id": cid, "name": "Empty", "promoters": [] }],
    )
    .await;
}

/// POST an export (expect 201) and wait until it is done.
pub async fn run(app: &TestApp, cid: &str, body: Value) -> Value {
    let r = app.post_export(cid, body.clone()).await;
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "POST {body}: {v}");
    app.wait_done(cid, v["id"].as_str().unwrap(), WAIT).await
}

/// Run an export that must finish; returns (export, downloaded bytes).
pub async fn run_ok(app: &TestApp, export_type: &str) -> (Value, Vec<u8>) {
    run_ok_with(app, json!({ "exportType": export_type })).await
}

pub async fn run_ok_with(app: &TestApp, body: Value) -> (Value, Vec<u8>) {
    let done = run(app, CID, body).await;
    assert_eq!(done["status"], "FINISHED", "{done}");
    let bytes = app.download(done["path"].as_str().expect("path")).await;
    assert_integrity(&done, &bytes);
    (done, bytes)
}

/// The downloaded object is the one the export recorded: its SHA-256 and
/// size (spec: api.md, `sha256`/`bytes`).
pub fn assert_integrity(done: &Value, bytes: &[u8]) {
    use sha2::Digest;
    assert_eq!(
        done["sha256"].as_str(),
        Some(hex::encode(sha2::Sha256::digest(bytes)).as_str()),
        "sha256 of the download: {done}"
    );
    assert_eq!(done["bytes"].as_u64(), Some(bytes.len() as u64), "{done}");
}

pub fn text(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap()
}

/// Lines joined with `\n` plus the final newline.
pub fn csv(lines: &[String]) -> String {
    let mut s = lines.join("\n");
    s.push('\n');
    s
}

/// Decompress gzip (async-compression, already a dependency).
pub async fn gunzip(b: &[u8]) -> String {
    use tokio::io::AsyncReadExt;
    let mut d = async_compression::tokio::bufread::GzipDecoder::new(b);
    let mut s = String::new();
    d.read_to_string(&mut s).await.unwrap();
    s
}

/// The entries of a ZIP: (name, content), in archive order.
pub async fn unzip(b: Vec<u8>) -> Vec<(String, String)> {
    let z = async_zip::base::read::mem::ZipFileReader::new(b)
        .await
        .expect("a valid ZIP");
    let mut out = Vec::new();
    for i in 0..z.file().entries().len() {
        let name = z.file().entries()[i]
            .filename()
            .as_str()
            .unwrap()
            .to_string();
        let mut r = z.reader_with_entry(i).await.unwrap();
        let mut s = String::new();
        r.read_to_string_checked(&mut s).await.unwrap();
        out.push((name, s));
    }
    out
}

/// An object straight from S3 (partner buckets have no download path).
pub async fn get_object(app: &TestApp, bucket: &str, key: &str) -> Vec<u8> {
    let out = app
        .s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("get {bucket}/{key}: {e:?}"));
    out.body.collect().await.unwrap().into_bytes().to_vec()
}

/// A fresh bucket (partner destinations).
pub async fn bucket(prefix: &str) -> String {
    let name = format!("{}{}", prefix, unique(""));
    super::s3_client()
        .await
        .create_bucket()
        .bucket(&name)
        .send()
        .await
        .expect("create bucket");
    name
}

/// An S3/STS request the app made through [`recording_proxy`].
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub access_key: String,
    pub body_has_assume_role: bool,
}

/// A proxy in front of the AWS endpoint that records each request's
/// method, path and signing access key id, and forwards it unchanged.
pub async fn recording_proxy(upstream: String) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let url = super::faults::forward(upstream, move |r| {
        let auth = r
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let access_key = auth
            .split("Credential=")
            .nth(1)
            .and_then(|c| c.split('/').next())
            .unwrap_or("")
            .to_string();
        log.lock().unwrap().push(Seen {
            method: r.method.to_string(),
            path: r.pq.split('?').next().unwrap_or("").to_string(),
            access_key,
            body_has_assume_role: super::faults::is_assume_role("", r.body),
        });
        None
    })
    .await;
    (url, seen)
}

/// The stand-in AWS endpoint, when the tests run against one.
pub fn aws_endpoint() -> Option<String> {
    standins().aws_endpoint.clone()
}

/// moto's record of `sts:AssumeRole` calls: (role ARN, access key id).
/// `None` when the endpoint is not moto.
pub async fn moto_assumed_roles(endpoint: &str) -> Option<Vec<(String, String)>> {
    let r = reqwest::get(format!("{endpoint}/moto-api/data.json"))
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    let v: Value = r.json().await.ok()?;
    let list = v["sts"]["AssumedRole"].as_array()?;
    Some(
        list.iter()
            .map(|a| {
                (
                    a["role_arn"].as_str().unwrap_or("").to_string(),
                    a["access_key_id"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect(),
    )
}
