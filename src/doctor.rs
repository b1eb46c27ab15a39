//! `vf-export doctor`: preflight checks an operator runs from an SSH
//! session. One line per check, ✓ or ✗ with the reason; the caller exits
//! non-zero if any failed.

use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use mongodb::bson::doc;

use crate::config::Config;
use crate::sink::{sdk_config, DestKind, Sinks};
use crate::store::Store;
use secrecy::ExposeSecret;

/// One check's outcome.
pub struct Check {
    pub name: String,
    pub result: Result<String, String>,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.result {
            Ok(detail) => write!(f, "✓ {}: {detail}", self.name),
            Err(reason) => write!(f, "✗ {}: {reason}", self.name),
        }
    }
}

fn check(name: impl Into<String>, result: Result<String, String>) -> Check {
    Check {
        name: name.into(),
        result,
    }
}

/// Where each check's line goes as it completes.
type Emit<'a> = &'a mut (dyn FnMut(Check) + Send);

/// Run every check; prints each line as it completes.
pub async fn run(cfg: &Config) -> Vec<Check> {
    let mut out = Vec::new();
    let mut emit = |c: Check| {
        println!("{c}");
        out.push(c);
    };
    check_mongodb(cfg, &mut emit).await;
    let sdk = sdk_config(cfg).await;
    check_buckets(cfg, &sdk, &mut emit).await;
    check_cloudwatch(cfg, &sdk, &mut emit).await;
    out
}

/// MongoDB: reachable, its version, the indexes.
async fn check_mongodb(cfg: &Config, emit: Emit<'_>) {
    let store = match Store::connect(cfg.mongodb_uri.expose_secret(), &cfg.mongodb_db).await {
        Ok(s) => Some(s),
        Err(e) => {
            emit(check("mongodb", Err(e.to_string())));
            None
        }
    };
    if let Some(store) = &store {
        let info = tokio::time::timeout(
            Duration::from_secs(15),
            store.db().run_command(doc! { "buildInfo": 1 }),
        )
        .await;
        match info {
            Ok(Ok(d)) => {
                let v = d.get_str("version").unwrap_or("unknown").to_string();
                emit(check(
                    "mongodb",
                    Ok(format!(
                        "reachable, version {v}, database {}",
                        cfg.mongodb_db
                    )),
                ));
                match store.missing_indexes().await {
                    Ok(missing) => {
                        emit(check(
                            "indexes",
                            if missing.is_empty() {
                                Ok("all present".into())
                            } else {
                                Err(format!(
                                    "missing {} (run `vf-export indexes`)",
                                    missing.join(", ")
                                ))
                            },
                        ));
                    }
                    Err(e) => emit(check("indexes", Err(e.to_string()))),
                }
            }
            Ok(Err(e)) => emit(check("mongodb", Err(crate::store::redact_mongo(&e)))),
            Err(_) => emit(check("mongodb", Err("no answer within 15 s".into()))),
        }
    }
}

/// Buckets: a probe object put and deleted with the credentials each
/// destination uses (AssumeRole for partner buckets).
async fn check_buckets(cfg: &Config, sdk: &aws_config::SdkConfig, emit: Emit<'_>) {
    let sinks = Sinks::new(cfg, sdk.clone());
    let mut dests = vec![
        ("bucket EXPORTS_BUCKET", DestKind::Exports),
        ("bucket SCORING_BUCKET", DestKind::Scoring),
        ("bucket VF_SCORING_BUCKET", DestKind::VfScoring),
    ];
    if cfg.buckets.sfmc.is_some() || cfg.buckets.sfmc_role_arn.is_some() {
        dests.push(("bucket SFMC_BUCKET via AssumeRole", DestKind::Sfmc));
    }
    if cfg.buckets.tmol.is_some() {
        dests.push(("bucket TMOL_BUCKET via AssumeRole", DestKind::Tmol));
    }
    for (name, kind) in dests {
        emit(check(name, probe_bucket(&sinks, kind).await));
    }
}

/// CloudWatch, when metrics are published there.
async fn check_cloudwatch(cfg: &Config, sdk: &aws_config::SdkConfig, emit: Emit<'_>) {
    if let Some(ns) = &cfg.cloudwatch_namespace {
        let cw = aws_sdk_cloudwatch::Client::new(sdk);
        let r = cw.list_metrics().namespace(ns).send().await;
        emit(check(
            "cloudwatch",
            r.map(|_| format!("reachable, namespace {ns}"))
                .map_err(|e| aws_sdk_cloudwatch::error::DisplayErrorContext(e).to_string()),
        ));
    }
}

async fn probe_bucket(sinks: &Sinks, kind: DestKind) -> Result<String, String> {
    let dest = sinks.destination(kind).await.map_err(|e| e.to_string())?;
    let key = format!("vf-export-doctor/probe-{}", uuid::Uuid::new_v4().simple());
    dest.client
        .put_object()
        .bucket(&dest.bucket)
        .key(&key)
        .acl(dest.acl.clone())
        .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::Aes256)
        .body(ByteStream::from_static(b"vf-export doctor probe"))
        .send()
        .await
        .map_err(|e| {
            format!(
                "{}: put failed: {}",
                dest.bucket,
                aws_sdk_s3::error::DisplayErrorContext(e)
            )
        })?;
    dest.client
        .delete_object()
        .bucket(&dest.bucket)
        .key(&key)
        .send()
        .await
        .map_err(|e| {
            format!(
                "{}: delete failed: {}",
                dest.bucket,
                aws_sdk_s3::error::DisplayErrorContext(e)
            )
        })?;
    Ok(format!("{} writable (probe put and deleted)", dest.bucket))
}
