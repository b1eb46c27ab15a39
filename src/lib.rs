//! vf-export: the Verified Fan export service. Campaign tools request an
//! export over HTTP; a worker streams the rows out of MongoDB into CSV in S3
//! and the API hands back a signed download URL.
//!
//! Data flows one way: `http` → `queue` → `worker` → `exports` (rows) →
//! `encode` (bytes) → `sink` (S3).

pub mod cancel;
pub mod ccpa;
pub mod config;
pub mod doctor;
pub mod encode;
pub mod error;
pub mod exports;
pub mod http;
pub mod lifecycle;
pub mod migrate;
pub mod oneshot;
pub mod operator;
pub mod queue;
pub mod shutdown;
pub mod sink;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod worker;
