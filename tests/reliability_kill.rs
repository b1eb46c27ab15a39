//! Kill test: two `vf-export worker` processes share one queue; one of them
//! is `kill -9`ed at three moments of an export (before the first part,
//! between parts, just before completion). Every export must still end
//! FINISHED exactly once with all its rows, the objects must be complete,
//! and no multipart upload may be left open.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::procs::{csv_records, env_for, finished_lines, seed, Proc};
use common::TestApp;
use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use serde_json::json;

/// Entries in the campaign: ~7.4 MB of TSV, so two 5 MiB parts, and several
/// seconds per export on the stand-in MongoDB.
const ENTRIES: u64 = 30_000;
/// Exports queued at first (same campaign, distinct dateKey so they do not
/// dedupe).
const EXPORTS: usize = 4;
const PART: i64 = 5 * 1024 * 1024;

/// Exports queued at most, should moments be missed (see the loop below).
const MAX_EXPORTS: usize = 16;

/// Queue one more export of the campaign; its dateKey is its index, so
/// none dedupes.
async fn queue_one(app: &TestApp, cid: &str, ids: &mut Vec<String>) {
    let body = json!({ "exportType": "entries", "dateKey": ids.len().to_string() });
    ids.push(app.queue_export(cid, body).await);
}

/// A moment of an export's life, read from its record (progress, upload,
/// checkpoint).
struct Moment {
    name: &'static str,
    at: fn(&Document) -> bool,
}

/// A number of a subdocument (0 when absent), Int32 or Int64 as stored.
fn int(d: &Document, sub: &str, k: &str) -> i64 {
    match d.get_document(sub).ok().and_then(|p| p.get(k)) {
        Some(mongodb::bson::Bson::Int64(v)) => *v,
        Some(mongodb::bson::Bson::Int32(v)) => *v as i64,
        _ => 0,
    }
}

fn progress(d: &Document) -> (i64, i64, i64) {
    let n = |k: &str| int(d, "progress", k);
    (n("rowsWritten"), n("bytesWritten"), n("expectedRows"))
}

const MOMENTS: [Moment; 3] = [
    Moment {
        // The upload is open (and recorded), no part sent yet.
        name: "before the first part",
        at: |d| d.get("upload").is_some() && progress(d).1 < PART / 2,
    },
    Moment {
        // Part 1 uploaded (its checkpoint is recorded), the last part not
        // yet (the export is still TRIGGERED). Read from the checkpoint,
        // written as the part lands, not from the two-second progress
        // report: on a loaded machine exports passed a narrower window
        // between two reports.
        name: "between parts",
        at: |d| int(d, "checkpoint", "bytes") >= PART,
    },
    Moment {
        name: "just before completion",
        at: |d| {
            let (rows, _, expected) = progress(d);
            expected > 0 && rows * 100 >= expected * 88
        },
    },
];

async fn exports(app: &TestApp) -> Vec<Document> {
    app.db
        .collection::<Document>("exports")
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

fn owner(d: &Document) -> &str {
    d.get_document("lease")
        .ok()
        .and_then(|l| l.get_str("owner").ok())
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_at_three_moments_loses_nothing() {
    let t_start = Instant::now();
    // The in-process app only accepts the POSTs: it runs no worker.
    let app = TestApp::spawn_with(&[("worker-concurrency", "0")]).await;
    let cid = "kill1";
    seed(&app, cid, ENTRIES, 4).await;
    let env = env_for(
        &app,
        &[
            // Not shorter: four exports' cursors share one single-threaded
            // stand-in, and on a loaded 2-core CI machine a renewal queued
            // behind them took over 3 s, so every attempt after a kill
            // lost its lease after its first batch (the export then FAILED
            // after MAX_ATTEMPTS, as it should).
            ("LEASE_SECS", "6"),
            ("WORKER_CONCURRENCY", "2"),
            ("S3_PART_SIZE_MIB", "5"),
            // Kills are not the export's fault; never run out of attempts.
            ("MAX_ATTEMPTS", "20"),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let mut spawned = 0;
    let mut spawn = || {
        spawned += 1;
        Proc::spawn("worker", &env, dir.path(), &format!("worker{spawned}"))
    };
    let mut live = vec![spawn(), spawn()];
    let mut dead: Vec<Proc> = Vec::new();

    let mut ids = Vec::new();
    for _ in 0..EXPORTS {
        queue_one(&app, cid, &mut ids).await;
    }

    // Each moment: wait until a live worker's export is there, kill -9 that
    // worker, start a replacement (two workers share the queue throughout).
    let mut interrupted: HashMap<String, i32> = HashMap::new();
    let mut kills = Vec::new();
    for m in &MOMENTS {
        let t0 = Instant::now();
        loop {
            assert!(
                t0.elapsed() < Duration::from_secs(90),
                "no export reached the moment '{}'",
                m.name
            );
            let docs = exports(&app).await;
            if docs.iter().all(|d| d.get_str("status") == Ok("FINISHED")) {
                // Progress is published every two seconds, and an export
                // can pass a moment between two reports: give the moment
                // more exports to be seen in, as many as at the start (run
                // side by side they are slower, so each moment lasts longer).
                assert!(
                    ids.len() < MAX_EXPORTS,
                    "{} exports finished without the moment '{}' being seen",
                    ids.len(),
                    m.name
                );
                println!("moment '{}' not seen yet: {EXPORTS} more exports", m.name);
                for _ in 0..EXPORTS {
                    queue_one(&app, cid, &mut ids).await;
                }
                continue;
            }
            let target = docs.iter().find_map(|d| {
                let w = live.iter().position(|p| p.owns(owner(d)))?;
                (d.get_str("status") == Ok("TRIGGERED") && (m.at)(d))
                    .then(|| (w, d.get_object_id("_id").unwrap().to_hex()))
            });
            let Some((w, target)) = target else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let mut victim = live.swap_remove(w);
            victim.kill9();
            // The dead worker can no longer write: whatever it held now is
            // what it left behind.
            let held: Vec<(String, (i64, i64, i64))> = exports(&app)
                .await
                .iter()
                .filter(|d| d.get_str("status") == Ok("TRIGGERED") && victim.owns(owner(d)))
                .map(|d| (d.get_object_id("_id").unwrap().to_hex(), progress(d)))
                .collect();
            for (id, _) in &held {
                *interrupted.entry(id.clone()).or_default() += 1;
            }
            dead.push(victim);
            live.push(spawn());
            if let Some((_, (rows, bytes, expected))) = held.iter().find(|(id, _)| *id == target) {
                println!(
                    "kill -9 {}: export {target} at {rows}/{expected} rows, {bytes} bytes; {} export(s) interrupted",
                    m.name,
                    held.len()
                );
                kills.push(m.name);
                break;
            }
            // It finished between our read and the kill: try again.
            println!("kill -9 {}: missed (export {target} had finished)", m.name);
        }
    }

    // Every worker that ever ran, killed ones included: no more spawns.
    let all: Vec<&Proc> = live.iter().chain(dead.iter()).collect();
    // Everything ends FINISHED once the reclaims are done.
    let mut done = Vec::new();
    for id in &ids {
        let v = app.wait_done(cid, id, Duration::from_secs(150)).await;
        assert_eq!(v["status"], "FINISHED", "{v}\n{}", lines_about(&all, id));
        // A short count: the workers' own account of their MongoDB
        // connections is the first thing to read.
        assert_eq!(v["count"], ENTRIES, "{v}\n{:#?}", mongodb_events(&all));
        done.push(v);
    }
    // Each object is complete: header + one record per entry.
    let mut keys = Vec::new();
    for v in &done {
        let body = app.download(v["path"].as_str().unwrap()).await;
        assert_eq!(csv_records(&body) as u64, ENTRIES + 1, "{}", v["key"]);
        assert_eq!(
            body.len() as u64,
            v["progress"]["bytesWritten"].as_u64().unwrap()
        );
        keys.push(v["key"].as_str().unwrap().to_string());
    }
    // Only the final objects exist, and no upload is left open.
    let mut listed = app.object_keys(&app.buckets.exports).await;
    listed.sort();
    keys.sort();
    assert_eq!(listed, keys);
    assert_eq!(app.open_uploads(&app.buckets.exports).await, 0);
    // `attempts` shows every reclaim; the queue state is clean.
    for d in exports(&app).await {
        let id = d.get_object_id("_id").unwrap().to_hex();
        let extra = interrupted.get(&id).copied().unwrap_or(0);
        let attempts = d.get_i32("attempts").unwrap();
        assert!(
            attempts > extra,
            "{id}: attempts {attempts}, killed {extra} times"
        );
        for f in ["lease", "upload", "activeKey"] {
            assert!(d.get(f).is_none(), "{id} still has {f}: {d}");
        }
    }
    assert!(interrupted.values().sum::<i32>() >= MOMENTS.len() as i32);
    // FINISHED exactly once: one "export finished" line per export across
    // every worker that ever ran, killed ones included.
    let finished = finished_lines(&all);
    for id in &ids {
        assert_eq!(finished.get(id), Some(&1), "finish lines: {finished:?}");
    }
    assert_eq!(finished.len(), ids.len());
    println!(
        "kill test: {} kill -9 ({}) interrupting {} export runs; {} exports of {ENTRIES} rows all FINISHED once, in {:?}; MongoDB connection events: {:?}",
        kills.len(),
        kills.join(", "),
        interrupted.values().sum::<i32>(),
        ids.len(),
        t_start.elapsed(),
        mongodb_events(&all)
    );
    drop(live);
    app.stop().await;
}

/// Every worker's log lines that name the export, in order per worker: what
/// each attempt did.
fn lines_about(procs: &[&Proc], id: &str) -> String {
    let mut out = String::new();
    for (n, p) in procs.iter().enumerate() {
        for l in p.log_lines() {
            let text = l.to_string();
            if text.contains(id) {
                out.push_str(&format!("worker{} {text}\n", n + 1));
            }
        }
    }
    out
}

/// The workers' log lines about their MongoDB connections (pool clears,
/// connections closed mid-command).
fn mongodb_events(procs: &[&Proc]) -> Vec<serde_json::Value> {
    procs
        .iter()
        .flat_map(|p| p.log_lines())
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("MongoDB connection"))
        })
        .collect()
}
