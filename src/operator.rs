//! `vf-export exports list|show|cancel`: the operator's view of the queue
//! without a MongoDB shell (spec: config.md), for support staff stopping a
//! runaway export and on-call checking what is stuck.
//!
//! Records are read raw and decoded leniently, each on its own: one the
//! service cannot read (the original's, say, without an `exportType`) is
//! listed as unreadable with its `_id`, shown raw, and can still be
//! cancelled, never a crash. Nothing printed carries the original's
//! `token` (a caller's JWT) or `error.stack`.

use std::time::Duration;

use futures::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId, Bson, Document};
use serde_json::{json, Value};

use crate::cancel::{cancel, Outcome};
use crate::config::{Config, ExportsAction, ExportsList, ExportsOne};
use crate::http::view::bson_json;
use crate::queue::{now_ms, ExportRecord, Queue};
use crate::sink::{sdk_config, Sinks};
use crate::store::iso;
use crate::store::{id_match, Store};
use secrecy::ExposeSecret;

/// Run one `exports` action; an `Err` is the one line the binary prints
/// before exiting non-zero.
pub async fn run(cfg: &Config, action: ExportsAction) -> anyhow::Result<()> {
    let store = Store::connect(cfg.mongodb_uri.expose_secret(), &cfg.mongodb_db).await?;
    let queue = Queue::new(store);
    match action {
        ExportsAction::List(l) => list(&queue, &l).await,
        ExportsAction::Show(o) => show(&queue, &o).await,
        ExportsAction::Cancel(o) => {
            let sinks = Sinks::new(cfg, sdk_config(cfg).await);
            cancel_one(&queue, &sinks, &o).await
        }
    }
}

fn filter_of(l: &ExportsList) -> Document {
    let mut f = Document::new();
    let statuses: Vec<String> = l.status.iter().map(|s| s.to_uppercase()).collect();
    match statuses.as_slice() {
        [] => {}
        [one] => {
            f.insert("status", one);
        }
        many => {
            f.insert("status", doc! { "$in": many });
        }
    }
    if let Some(c) = &l.campaign {
        f.insert("campaignId", id_match(c));
    }
    if let Some(t) = &l.export_type {
        f.insert("exportType", t);
    }
    f
}

async fn list(queue: &Queue, l: &ExportsList) -> anyhow::Result<()> {
    // With --older-than the oldest come first, and the scan stops at the
    // first record (with a real date) created after the cutoff.
    let cutoff = l
        .older_than
        .map(|d| now_ms().saturating_sub(d.as_millis() as i64));
    let dir = if cutoff.is_some() { 1 } else { -1 };
    let mut cur = queue
        .raw_cursor(filter_of(l), doc! { "date.created": dir, "_id": dir }, None)
        .await?;
    let (mut shown, mut unreadable) = (0usize, 0usize);
    if !l.json {
        println!("{}", row(&HEADER.map(String::from)));
    }
    while shown < l.limit {
        let Some(d) = cur.try_next().await? else {
            break;
        };
        let rec = match ExportRecord::from_document(&d) {
            Ok(r) => r,
            Err(e) => {
                unreadable += 1;
                eprintln!("unreadable export record {}: {}", e.id, e.why);
                continue;
            }
        };
        let created = rec.created().timestamp_millis();
        if let Some(cutoff) = cutoff {
            if created >= cutoff {
                // Sorted by date.created: every later record with a BSON
                // date is newer still. Other stored forms sort before.
                if matches!(
                    d.get_document("date").map(|x| x.get("created")),
                    Ok(Some(Bson::DateTime(_)))
                ) {
                    break;
                }
                continue;
            }
        }
        shown += 1;
        if l.json {
            println!("{}", summary_json(&rec));
        } else {
            println!("{}", row(&columns(&rec)));
        }
    }
    if unreadable > 0 {
        eprintln!("{unreadable} unreadable record(s) skipped: `vf-export exports show ID` shows one as stored");
    }
    Ok(())
}

const HEADER: [&str; 8] = [
    "ID", "STATUS", "TYPE", "CAMPAIGN", "CREATED", "AGE", "ATTEMPTS", "NOTE",
];

fn row(cols: &[String; 8]) -> String {
    format!(
        "{:<24}  {:<9}  {:<20}  {:<24}  {:<24}  {:>7}  {:>8}  {}",
        cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], cols[6], cols[7]
    )
}

fn columns(r: &ExportRecord) -> [String; 8] {
    let created = r.created();
    [
        r.id.to_hex(),
        r.status.as_str().to_string(),
        r.export_type.clone(),
        r.campaign_id.clone(),
        iso(created),
        age(Duration::from_millis(
            now_ms().saturating_sub(created.timestamp_millis()).max(0) as u64,
        )),
        r.attempts.to_string(),
        note(r),
    ]
}

/// What an operator looks at next: who runs it and how far it got, or why
/// it failed.
fn note(r: &ExportRecord) -> String {
    let mut parts = Vec::new();
    if let Some(l) = &r.lease {
        let lapsed = if l.expires_at_ms < now_ms() {
            " (lapsed)"
        } else {
            ""
        };
        parts.push(format!("lease {}{lapsed}", l.owner));
    }
    if let Some(p) = &r.progress {
        if p.rows_written > 0 || p.expected_rows.is_some() {
            let of = p
                .expected_rows
                .map(|n| format!(" of {n}"))
                .unwrap_or_default();
            parts.push(format!("{} rows{of}", p.rows_written));
        }
    }
    if let Some(e) = &r.error {
        let code = e
            .payload
            .as_ref()
            .and_then(|p| p.as_document())
            .and_then(|p| p.get_str("code").ok())
            .map(|c| format!("{c}: "))
            .unwrap_or_default();
        parts.push(format!(
            "{code}{}",
            e.message.chars().take(80).collect::<String>()
        ));
    }
    if r.deleted {
        parts.push("deleted (CCPA)".into());
    }
    parts.join("; ")
}

fn summary_json(r: &ExportRecord) -> Value {
    json!({
        "id": r.id.to_hex(),
        "status": r.status.as_str(),
        "exportType": r.export_type,
        "campaignId": r.campaign_id,
        "dateKey": r.date_key,
        "created": iso(r.created()),
        "attempts": r.attempts,
        "leaseOwner": r.lease.as_ref().map(|l| l.owner.clone()),
        "leaseExpiresAtMs": r.lease.as_ref().map(|l| l.expires_at_ms),
        "rowsWritten": r.progress.as_ref().map(|p| p.rows_written),
        "expectedRows": r.progress.as_ref().and_then(|p| p.expected_rows),
        "count": r.count,
        "error": r.error.as_ref().map(|e| e.message.clone()),
    })
}

/// `3d04h`, `2h05m`, `4m09s`, `45s`.
fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn parse_id(s: &str) -> anyhow::Result<ObjectId> {
    ObjectId::parse_str(s.trim())
        .map_err(|_| anyhow::anyhow!("{s:?} is not an export id (24 hex characters)"))
}

/// The stored record without what must never be printed: the caller's
/// JWT the original kept as `token`, and `error.stack`.
fn printable(mut d: Document) -> Document {
    d.remove("token");
    if let Ok(e) = d.get_document_mut("error") {
        e.remove("stack");
    }
    d
}

async fn show(queue: &Queue, o: &ExportsOne) -> anyhow::Result<()> {
    let id = parse_id(&o.id)?;
    let d = queue
        .raw(id, o.campaign.as_deref())
        .await?
        .ok_or_else(|| not_found(&o.id))?;
    let readable = ExportRecord::from_document(&d);
    println!(
        "{}",
        serde_json::to_string_pretty(&bson_json(&Bson::Document(printable(d))))?
    );
    if let Err(e) = readable {
        println!("unreadable: {} (every route and the worker skip it)", e.why);
    }
    Ok(())
}

fn not_found(id: &str) -> anyhow::Error {
    anyhow::anyhow!("export {id} not found")
}

async fn cancel_one(queue: &Queue, sinks: &Sinks, o: &ExportsOne) -> anyhow::Result<()> {
    let id = parse_id(&o.id)?;
    let done = cancel(queue, sinks, id, o.campaign.as_deref(), "cli").await?;
    match done.outcome {
        Outcome::Cancelled(_) => println!("cancelled {id}: now FAILED (Cancelled)"),
        Outcome::AlreadyCancelled(_) => println!("{id} was already cancelled"),
        Outcome::NotActive(d) => anyhow::bail!(
            "export {id} is {}: only PENDING or TRIGGERED exports can be cancelled",
            d.get_str("status").unwrap_or("in no known status")
        ),
        Outcome::NotFound => return Err(not_found(&o.id)),
    }
    if let Some(e) = done.cleanup_error {
        anyhow::bail!(
            "{id} is cancelled, but its upload could not be aborted ({e}): run the command again"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_at_a_glance() {
        assert_eq!(age(Duration::from_secs(45)), "45s");
        assert_eq!(age(Duration::from_secs(249)), "4m09s");
        assert_eq!(age(Duration::from_secs(7_500)), "2h05m");
        assert_eq!(age(Duration::from_secs(273_600)), "3d04h");
    }

    #[test]
    fn the_originals_token_and_stack_are_never_printed() {
        let d =
            doc! { "_id": 1, "token": "eyJ.secret", "error": { "message": "m", "stack": "at x" } };
        let p = printable(d);
        assert!(p.get("token").is_none());
        assert_eq!(p.get_document("error").unwrap(), &doc! { "message": "m" });
    }
}
