//! `vf-export migrate [--dry-run]`: cutover from the original service
//! (spec: config.md; exports.md "Legacy records").
//!
//! The original left records PENDING or TRIGGERED without what our queue
//! rules read: no `activeKey` (so the unique index cannot dedupe a repeat
//! POST against them) and, when TRIGGERED, no `lease` (so no worker would
//! ever reclaim them). For each such record this:
//!
//! - backfills `activeKey` (`campaignId|exportType|dateKey`); when two
//!   active records share a key, the oldest keeps it (or the export that
//!   already holds it) and the others are reported, never deleted;
//! - gives a TRIGGERED record without a lease a lapsed one (and `attempts:
//!   1` when it has none), so a worker reclaims it, or the expiry sweep
//!   ends it when `date.triggered` is older than `EXPORT_TIMEOUT_SECS`;
//! - drops `activeKey` from a record in a final status that still holds
//!   it (after a rollback, the original finished an export vf-export had
//!   queued: a new POST would otherwise be answered with that old export);
//! - marks what it wrote with `migratedAt`.
//!
//! Only our fields are added or dropped: original fields keep their names,
//! values and types.
//! Every write is conditional on the record being as it was read, so
//! running it again (or beside a running service) changes nothing that is
//! already right. Records it cannot read are reported by `_id`. `--dry-run`
//! reads and reports the same plan and writes nothing. The exit status is
//! non-zero when something could not be done: a write failed, or an active
//! record cannot be read.

use std::collections::BTreeMap;
use std::fmt;

use futures::TryStreamExt;
use mongodb::bson::{doc, oid::ObjectId};

use crate::queue::{Adopted, ExportRecord, Queue, Status};
use crate::store::StoreError;

/// What one run found and did (or, in a dry run, would do).
#[derive(Debug, Default)]
pub struct Report {
    pub dry_run: bool,
    /// Records read.
    pub read: u64,
    /// One line per record acted on or reported, in the order done.
    pub lines: Vec<String>,
    pub active_keys: u64,
    pub leases: u64,
    /// Final records whose leftover `activeKey` was dropped.
    pub stale_keys: u64,
    pub duplicates: u64,
    pub unreadable: u64,
    /// Unreadable records whose stored status is PENDING or TRIGGERED.
    pub unreadable_active: u64,
    /// Records that changed between the read and the write: left alone.
    pub changed: u64,
    pub failed: u64,
}

impl Report {
    /// Everything that needed doing was done (or, dry, can be).
    pub fn ok(&self) -> bool {
        self.failed == 0 && self.unreadable_active == 0
    }

    fn line(&mut self, what: &str, id: &str, rest: impl fmt::Display) {
        self.lines.push(format!("{what:<20} {id:<24} {rest}"));
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for l in &self.lines {
            writeln!(f, "{l}")?;
        }
        let (set, dry) = if self.dry_run {
            ("would set", " (dry run: nothing was written)")
        } else {
            ("set", "")
        };
        write!(
            f,
            "migrate: {} export records read; {set} activeKey on {}, lapsed lease on {}; \
             {} stale activeKey released; {} duplicate active reported; {} unreadable ({} active); \
             {} changed meanwhile; {} failed{dry}",
            self.read,
            self.active_keys,
            self.leases,
            self.stale_keys,
            self.duplicates,
            self.unreadable,
            self.unreadable_active,
            self.changed,
            self.failed,
        )
    }
}

/// One write the plan calls for.
#[derive(Debug, Clone, PartialEq)]
struct Adopt {
    id: ObjectId,
    status: Status,
    /// Backfill this `activeKey`.
    key: Option<String>,
    lapse_lease: bool,
    set_attempts: bool,
}

/// A legacy active record left without the key another export holds.
#[derive(Debug, Clone, PartialEq)]
struct Duplicate {
    id: ObjectId,
    status: Status,
    key: String,
    holder: ObjectId,
}

/// Decide, for the active records read, what to write and what to report.
fn plan(active: &[ExportRecord]) -> (Vec<Adopt>, Vec<Duplicate>) {
    // The exports that already hold a key (ours, or migrated before).
    let mut holders: BTreeMap<String, ObjectId> = active
        .iter()
        .filter_map(|r| r.active_key.clone().map(|k| (k, r.id)))
        .collect();
    // Keyless records by the key they would take, oldest first.
    let mut keyless: Vec<&ExportRecord> =
        active.iter().filter(|r| r.active_key.is_none()).collect();
    keyless.sort_by_key(|r| (r.created(), r.id));
    let (mut adopt, mut dups) = (Vec::new(), Vec::new());
    for r in keyless {
        let key = r.active_key_value();
        let holder = *holders.entry(key.clone()).or_insert(r.id);
        let lapse_lease = needs_lease(r);
        if holder == r.id {
            adopt.push(Adopt {
                id: r.id,
                status: r.status,
                key: Some(key),
                lapse_lease,
                set_attempts: lapse_lease && r.attempts == 0,
            });
        } else {
            dups.push(Duplicate {
                id: r.id,
                status: r.status,
                key,
                holder,
            });
            if lapse_lease {
                adopt.push(Adopt {
                    id: r.id,
                    status: r.status,
                    key: None,
                    lapse_lease,
                    set_attempts: r.attempts == 0,
                });
            }
        }
    }
    // Keyed but leaseless TRIGGERED records (not ours: ours always hold a
    // lease while TRIGGERED) still need the lease.
    for r in active
        .iter()
        .filter(|r| r.active_key.is_some() && needs_lease(r))
    {
        adopt.push(Adopt {
            id: r.id,
            status: r.status,
            key: None,
            lapse_lease: true,
            set_attempts: r.attempts == 0,
        });
    }
    (adopt, dups)
}

fn needs_lease(r: &ExportRecord) -> bool {
    r.status == Status::Triggered && r.lease.is_none()
}

/// Run the migration over the `exports` collection.
pub async fn run(queue: &Queue, dry_run: bool) -> Result<Report, StoreError> {
    let mut report = Report {
        dry_run,
        ..Default::default()
    };
    // Only what the plan reads: never the original's `token`, and no
    // `meta` or `error` bulk.
    let projection = doc! {
        "_id": 1, "campaignId": 1, "exportType": 1, "status": 1, "dateKey": 1,
        "date": 1, "lease": 1, "attempts": 1, "activeKey": 1,
    };
    let mut cur = queue
        .raw_cursor(doc! {}, doc! { "_id": 1 }, Some(projection))
        .await?;
    let (mut active, mut stale) = (Vec::new(), Vec::new());
    while let Some(d) = cur.try_next().await? {
        report.read += 1;
        match ExportRecord::from_document(&d) {
            Ok(r) if r.status.is_active() => active.push(r),
            Ok(r) if r.active_key.is_some() => stale.push(r),
            Ok(_) => {}
            Err(e) => {
                let stored = d.get_str("status").unwrap_or("");
                let is_active = Status::parse(stored).is_some_and(Status::is_active);
                report.unreadable += 1;
                let note = if is_active {
                    report.unreadable_active += 1;
                    " (stored as active: it cannot take part in the queue; cancel it with `vf-export exports cancel ID` or fix it)"
                } else {
                    " (skipped by every reader)"
                };
                report.line("unreadable", &e.id, format_args!("{}{note}", e.why));
            }
        }
    }
    // First, so a key they hold is free for the record that should hold it.
    for r in stale {
        let key = r.active_key.clone().unwrap_or_default();
        let step = Step::Release {
            id: r.id,
            status: r.status,
            key,
        };
        apply(queue, step, &mut report).await;
    }
    let (adopt, dups) = plan(&active);
    for d in &dups {
        report.duplicates += 1;
        report.line(
            "duplicate active",
            &d.id.to_hex(),
            format_args!(
                "{} {}: {} holds this key; left as it is (never deleted): cancel it with `vf-export exports cancel {}` if it is not wanted",
                d.status.as_str(),
                d.key,
                d.holder,
                d.id
            ),
        );
    }
    for a in adopt {
        apply(queue, Step::Adopt(a), &mut report).await;
    }
    Ok(report)
}

/// One write: adopt an active record, or drop a final one's stale key.
enum Step {
    Adopt(Adopt),
    Release {
        id: ObjectId,
        status: Status,
        key: String,
    },
}

/// Write one planned change (or, dry, count it) and report it.
async fn apply(queue: &Queue, step: Step, report: &mut Report) {
    let result = if report.dry_run {
        Ok(Adopted::Done)
    } else {
        write(queue, &step).await
    };
    let id = step_id(&step).to_hex();
    let (set, drop) = if report.dry_run {
        ("would set", "would drop")
    } else {
        ("set", "dropped")
    };
    match (result, step) {
        (Ok(Adopted::Done), Step::Adopt(a)) => {
            if let Some(k) = &a.key {
                report.active_keys += 1;
                report.line(
                    "activeKey",
                    &id,
                    format_args!("{} {set} {k}", a.status.as_str()),
                );
            }
            if a.lapse_lease {
                report.leases += 1;
                report.line(
                    "lease",
                    &id,
                    format_args!("TRIGGERED without a lease: {set} a lapsed one (reclaimed, or EXPIRED by the timeout)"),
                );
            }
        }
        (Ok(Adopted::Done), Step::Release { status, key, .. }) => {
            report.stale_keys += 1;
            report.line(
                "stale activeKey",
                &id,
                format_args!("{} {drop} {key}", status.as_str()),
            );
        }
        (Ok(Adopted::KeyTaken), Step::Adopt(a)) => {
            // An export with the same key appeared since the read (a POST
            // to a running service): this one is a duplicate now.
            report.duplicates += 1;
            report.line(
                "duplicate active",
                &id,
                format_args!(
                    "{}: another active export took this key meanwhile; left as it is",
                    a.key.as_deref().unwrap_or("")
                ),
            );
            if a.lapse_lease {
                let retry = Adopt { key: None, ..a };
                Box::pin(apply(queue, Step::Adopt(retry), report)).await;
            }
        }
        (Ok(_), _) => {
            report.changed += 1;
            report.line(
                "changed meanwhile",
                &id,
                "left alone; run migrate again to re-check it",
            );
        }
        (Err(e), _) => {
            report.failed += 1;
            report.line("failed", &id, e);
        }
    }
}

/// One planned change, written only where the record is still as it was
/// read.
async fn write(queue: &Queue, step: &Step) -> Result<Adopted, StoreError> {
    match step {
        Step::Adopt(a) => {
            queue
                .adopt_legacy(
                    a.id,
                    a.status,
                    a.key.as_deref(),
                    a.lapse_lease,
                    a.set_attempts,
                )
                .await
        }
        Step::Release { id, status, key } => queue.release_stale_key(*id, *status, key).await,
    }
}

fn step_id(s: &Step) -> ObjectId {
    match s {
        Step::Adopt(a) => a.id,
        Step::Release { id, .. } => *id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::{DateTime, Document};

    fn rec(status: &str, created_ms: i64, extra: Document) -> ExportRecord {
        let mut d = doc! {
            "_id": ObjectId::new(), "campaignId": "c1", "exportType": "entries", "status": status,
            "date": { "created": DateTime::from_millis(created_ms) },
        };
        d.extend(extra);
        ExportRecord::from_document(&d).unwrap()
    }

    #[test]
    fn the_oldest_of_colliding_legacy_records_takes_the_key_and_the_rest_are_reported() {
        let newer = rec("PENDING", 2_000, doc! {});
        let older = rec("TRIGGERED", 1_000, doc! {});
        let other = rec("PENDING", 3_000, doc! { "dateKey": "7" });
        let (adopt, dups) = plan(&[newer.clone(), older.clone(), other.clone()]);
        assert_eq!(
            adopt,
            vec![
                Adopt {
                    id: older.id,
                    status: Status::Triggered,
                    key: Some("c1|entries|".into()),
                    lapse_lease: true,
                    set_attempts: true
                },
                Adopt {
                    id: other.id,
                    status: Status::Pending,
                    key: Some("c1|entries|7".into()),
                    lapse_lease: false,
                    set_attempts: false
                },
            ]
        );
        assert_eq!(
            dups,
            vec![Duplicate {
                id: newer.id,
                status: Status::Pending,
                key: "c1|entries|".into(),
                holder: older.id
            }]
        );
    }

    #[test]
    fn a_key_held_already_wins_and_a_keyed_leaseless_triggered_gets_its_lease() {
        let ours = rec(
            "PENDING",
            5_000,
            doc! { "activeKey": "c1|entries|", "attempts": 0 },
        );
        let legacy = rec("TRIGGERED", 1_000, doc! { "attempts": 2 });
        let half = rec("TRIGGERED", 1_000, doc! { "activeKey": "c1|codes|" });
        let (adopt, dups) = plan(&[ours.clone(), legacy.clone(), half.clone()]);
        assert_eq!(dups.len(), 1);
        assert_eq!((dups[0].id, dups[0].holder), (legacy.id, ours.id));
        assert_eq!(
            adopt,
            vec![
                Adopt {
                    id: legacy.id,
                    status: Status::Triggered,
                    key: None,
                    lapse_lease: true,
                    set_attempts: false
                },
                Adopt {
                    id: half.id,
                    status: Status::Triggered,
                    key: None,
                    lapse_lease: true,
                    set_attempts: true
                },
            ]
        );
    }

    #[test]
    fn nothing_to_do_for_records_that_are_already_ours() {
        let ours = rec(
            "TRIGGERED",
            1,
            doc! { "activeKey": "c1|entries|", "attempts": 1, "lease": { "owner": "w", "expiresAtMs": 5i64 } },
        );
        assert_eq!(plan(&[ours]), (vec![], vec![]));
    }
}
