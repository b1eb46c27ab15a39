//! `vf-seed`: seed a demo or benchmark campaign into MongoDB — markets,
//! entries in the shape other Titan services write, and their users. Data
//! is deterministic and realistic enough to exercise the encoder: long
//! names, quotes, commas, non-ASCII, formula-looking cells, additional
//! markets, preference answers. Not part of the service.

use std::time::Instant;

use clap::Parser;
use mongodb::bson::{doc, oid::ObjectId, DateTime, Document};

#[derive(Parser)]
#[command(about = "Seed a demo/benchmark campaign into MongoDB")]
struct Args {
    #[arg(long, env = "MONGODB_URI")]
    mongodb_uri: String,
    #[arg(long, env = "MONGODB_DB", default_value = "titan")]
    mongodb_db: String,
    /// Campaign id to create (replaced if it exists).
    #[arg(long)]
    campaign: String,
    /// Number of entries.
    #[arg(long, default_value_t = 10_000)]
    entries: u64,
    /// Number of markets.
    #[arg(long, default_value_t = 8)]
    markets: u64,
    /// Keep existing data for this campaign when its entry count already matches.
    #[arg(long)]
    reuse: bool,
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

const FIRST: &[&str] = &[
    "Ann",
    "José",
    "Zoë",
    "Mohammed",
    "李",
    "O'Neil",
    "Anne-Marie",
    "=SUM(A1)",
    "Björk",
    "Kai",
];
const LAST: &[&str] = &[
    "Smith",
    "García",
    "Müller",
    "Nguyễn",
    "O'Brien, Jr.",
    "\"The Rock\"",
    "-2+3",
    "Van der Berg",
    "Øster",
    "Ito",
];
const CITIES: &[(&str, &str, &str)] = &[
    ("New York", "NY", "US"),
    ("Los Angeles", "CA", "US"),
    ("Toronto", "ON", "CA"),
    ("London", "ENG", "GB"),
    ("Dublin", "D", "IE"),
    ("Berlin", "BE", "DE"),
    ("Sydney", "NSW", "AU"),
    ("Mexico City", "CDMX", "MX"),
];
const LOCALES: &[&str] = &[
    "en-us", "en-ca", "fr-ca", "en-gb", "en-ie", "de-de", "en-au", "es-mx",
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    // One client for the reuse count and the writes.
    let store = vf_export::store::Store::connect(&a.mongodb_uri, &a.mongodb_db).await?;
    let db = store.db().clone();
    let entries = db.collection::<Document>("entries");
    let cid = a.campaign.as_str();
    if a.reuse {
        let n = store
            .count("entries", doc! { "_id.campaign_id": cid })
            .await?;
        if n == a.entries {
            eprintln!("vf-seed: campaign {cid} already has {n} entries; reusing");
            return Ok(());
        }
    }
    db.collection::<Document>("campaigns")
        .delete_many(doc! { "_id": cid })
        .await?;
    db.collection::<Document>("markets")
        .delete_many(doc! { "campaignId": cid })
        .await?;
    entries.delete_many(doc! { "_id.campaign_id": cid }).await?;
    db.collection::<Document>("campaigns")
        .insert_one(doc! {
            "_id": cid, "name": format!("Demo Tour 2026 ({cid})"),
            "preferences": [ { "id": "fav_song", "type": "text" }, { "id": "vip", "type": "checkbox" } ],
            "options": { "isLNAA": false }, "artist": { "name": "The Demo Band" }, "tour": { "name": "World Tour" },
            "promoters": [],
        })
        .await?;
    let market_ids: Vec<String> = (0..a.markets).map(|i| format!("{cid}-m{i}")).collect();
    let markets: Vec<Document> = market_ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let (city, state, cc) = CITIES[i % CITIES.len()];
            doc! { "_id": id, "campaignId": cid, "name": format!("{city} night {i}"), "city": city, "state": state,
                   "countryCode": cc, "event": { "date": DateTime::from_millis(1_780_000_000_000 + i as i64 * 86_400_000),
                   "ids": [format!("EV{i:04}A"), format!("EV{i:04}B")], "venue": { "name": format!("{city} Arena") },
                   "link": format!("https://example.com/e/{i}") } }
        })
        .collect();
    if !markets.is_empty() {
        db.collection::<Document>("markets")
            .insert_many(markets)
            .await?;
    }
    let users = db.collection::<Document>("users");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15
        ^ cid
            .bytes()
            .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64)));
    let t0 = Instant::now();
    let batch = 1000u64;
    eprintln!(
        "vf-seed: seeding {} entries into campaign {cid} (the nx-27017 stand-in takes ~5k docs/s: about 3½ minutes per million)",
        a.entries
    );
    let mut done = 0u64;
    while done < a.entries {
        let n = batch.min(a.entries - done);
        let mut es = Vec::with_capacity(n as usize);
        let mut us = Vec::with_capacity(n as usize);
        for i in done..done + n {
            let uid = ObjectId::new();
            let m = (rng.next() % a.markets.max(1)) as usize;
            let (first, last) = (rng.pick(FIRST), rng.pick(LAST));
            let locale = LOCALES[m % LOCALES.len()];
            let mut fields = doc! {
                "market": &market_ids[m],
                "email": format!("fan{i}@example.com"),
                "phone": format!("+1555{:07}", i % 10_000_000),
                "first_name": first, "last_name": last,
                "allowMarketing": rng.next().is_multiple_of(2), "allowLiveNation": rng.next().is_multiple_of(3),
                "allowSms": rng.next().is_multiple_of(4), "promoterOptIns": [],
                "fav_song": rng.pick(&["Song, \"Live\"", "Ünïcødé ✓", "plain", "line1\nline2", "a very long answer that goes on and on about why this song matters so much to this particular fan"]),
                "vip": rng.next().is_multiple_of(2),
            };
            if m + 1 < market_ids.len() && rng.next().is_multiple_of(5) {
                fields.insert("additionalMarkets", vec![market_ids[m + 1].clone()]);
            }
            es.push(doc! {
                "_id": { "campaign_id": cid, "user_id": uid.to_hex() },
                "fields": fields,
                "origin": { "ip": { "address": format!("10.{}.{}.{}", i % 256, (i / 256) % 256, rng.next() % 256),
                                    "postalCode": format!("{:05}", rng.next() % 100_000),
                                    "latitude": 40.7, "longitude": -74.0 } },
                "locale": locale,
                "date": { "created": DateTime::from_millis(1_767_225_600_000 + i as i64 * 1000),
                          "phoneConfirmed": if i.is_multiple_of(3) { mongodb::bson::Bson::DateTime(DateTime::from_millis(1_767_225_600_000)) } else { mongodb::bson::Bson::Null } },
            });
            us.push(doc! { "_id": uid, "integrations": { "ticketmaster": {
                "id": format!("tm{i}"), "member_id": format!("{}", 10_000_000 + i), "globalUserId": format!("g{i}"),
                "email": format!("tm{i}@example.com"), "phone": format!("+1666{:07}", i % 10_000_000),
                "name": { "first": first, "last": last }, "postalCode": "10001" } } });
        }
        entries.insert_many(es).await?;
        users.insert_many(us).await?;
        done += n;
        if done.is_multiple_of(50_000) || done == a.entries {
            eprintln!(
                "vf-seed: {done}/{} entries ({:.0}/s)",
                a.entries,
                done as f64 / t0.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}
