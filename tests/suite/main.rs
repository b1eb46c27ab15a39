//! The integration tests that share one set of stand-ins, as one test
//! binary: one link and one stand-in start-up instead of thirteen (each
//! test still gets a fresh database and fresh buckets). The reliability
//! tests (kill, drain, faults) stay separate binaries, each with its own
//! stand-ins: they kill workers and servers, and time their waits.

#[path = "../common/mod.rs"]
mod common;

mod api_errors;
mod api_exports;
mod auth_matrix;
mod cancel;
mod ccpa;
mod ccpa_everything;
mod cutover_api;
mod export_types_codes;
mod export_types_docs;
mod export_types_entries;
mod export_types_scoring;
mod export_types_sfmc;
mod failures;
mod infra_terraform;
mod legacy_records;
mod migrate;
mod monitoring;
mod observability;
mod oneshot;
mod privacy_logs;
mod reader_faults;
