//! `vf-export export`: one export now, straight from MongoDB, without the
//! queue — the same export types, encoders and sinks as the service
//! ([`produce`]), written to a local file (default) or an `s3://` URL, with a
//! progress bar on a terminal and plain periodic lines otherwise.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_s3::types::ObjectCannedAcl;

use crate::config::Config;
use crate::exports::{
    produce, ExportError, Outputs, Params, Progress, Registry, S3Outputs, Shape, Source,
};
use crate::sink::{
    sdk_config, BoxRead, BoxWrite, DestKind, Destination, ObjectSpec, Sinks, Upload, Uploaded,
};
use crate::store::Store;
use secrecy::ExposeSecret;

/// What the command asks for.
#[derive(Debug, Clone)]
pub struct Request {
    pub campaign: String,
    pub export_type: String,
    pub out: Option<String>,
    pub params: Params,
}

/// Where the objects go.
#[derive(Debug, Clone)]
enum Target {
    File(PathBuf),
    S3 { bucket: String, key: String },
}

impl Target {
    fn parse(out: &str) -> anyhow::Result<Self> {
        match out.strip_prefix("s3://") {
            Some(rest) => {
                let (bucket, key) = rest
                    .split_once('/')
                    .filter(|(b, k)| !b.is_empty() && !k.is_empty())
                    .ok_or_else(|| {
                        anyhow::anyhow!("--out s3:// URL needs a bucket and a key: s3://bucket/key")
                    })?;
                Ok(Target::S3 {
                    bucket: bucket.into(),
                    key: key.into(),
                })
            }
            None => Ok(Target::File(PathBuf::from(out))),
        }
    }

    /// The location of one object. A single-object export goes exactly to
    /// `--out`; a multi-object one treats `--out` as a folder/prefix and
    /// keeps each object's own file name.
    fn place(&self, spec_key: &str, many: bool) -> Target {
        let name = spec_key.rsplit('/').next().unwrap_or(spec_key);
        match (self, many) {
            (t, false) => t.clone(),
            (Target::File(dir), true) => Target::File(dir.join(name)),
            (Target::S3 { bucket, key }, true) => Target::S3 {
                bucket: bucket.clone(),
                key: format!("{}/{name}", key.trim_end_matches('/')),
            },
        }
    }
}

/// Outputs of the one-shot: the chosen target instead of the type's bucket.
struct OneShotOutputs {
    target: Target,
    many: bool,
    sinks: Sinks,
    s3: S3Outputs,
}

#[async_trait]
impl Outputs for OneShotOutputs {
    async fn open(
        &self,
        _dest: DestKind,
        spec: &ObjectSpec,
    ) -> Result<(BoxWrite, Upload), ExportError> {
        match self.target.place(&spec.key, self.many) {
            Target::File(path) => Ok(Sinks::open_file(&path).await?),
            Target::S3 { bucket, key } => {
                let dest = Destination {
                    bucket,
                    acl: ObjectCannedAcl::Private,
                    client: self.sinks.client().clone(),
                };
                let spec = ObjectSpec {
                    key,
                    content_type: spec.content_type,
                };
                Ok(self.sinks.open_s3(&dest, &spec).await?)
            }
        }
    }
    async fn read(&self, obj: &Uploaded) -> Result<BoxRead, ExportError> {
        match &obj.bucket {
            Some(_) => self.s3.read(obj).await,
            None => Ok(Box::pin(tokio::fs::File::open(&obj.key).await?)),
        }
    }
    async fn delete(&self, obj: &Uploaded) -> Result<(), ExportError> {
        match &obj.bucket {
            Some(_) => self.s3.delete(obj).await,
            None => Ok(tokio::fs::remove_file(&obj.key).await?),
        }
    }
    /// Partner publishes are the service's job, not an operator's one-shot.
    fn configured(&self, dest: DestKind) -> bool {
        !matches!(dest, DestKind::Tmol | DestKind::Sfmc)
    }
}

/// The source of an export outside the queue: the campaign and its markets,
/// a fresh export id, created now. Also the benchmark floor's (`vf-floor`),
/// so the floor reads exactly what the one-shot reads.
pub async fn load_source(
    cfg: &Config,
    campaign_id: &str,
    params: Params,
) -> anyhow::Result<Source> {
    let store = Store::connect(cfg.mongodb_uri.expose_secret(), &cfg.mongodb_db).await?;
    let campaign = store
        .campaign(campaign_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("campaign {campaign_id} not found"))?;
    let markets = store.markets_of(campaign_id).await?;
    Ok(Source {
        store,
        campaign,
        markets,
        params,
        export_id: mongodb::bson::oid::ObjectId::new().to_hex(),
        created: chrono::Utc::now(),
        max_rows_per_file: cfg.max_rows_per_file,
        sinks: Sinks::new(cfg, sdk_config(cfg).await),
        sfmc_default_region: cfg.sfmc_default_region,
    })
}

/// Run one export; prints where it went and the row count.
pub async fn run(cfg: &Config, req: Request) -> anyhow::Result<()> {
    let registry = Registry::new();
    let ty = registry.get(&req.export_type).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown export type {:?}; valid types: {}",
            req.export_type,
            registry.names().join(", ")
        )
    })?;
    if req.params.gzip && ty.shape() != Shape::Csv {
        anyhow::bail!("--gzip applies to single-CSV export types only");
    }
    let src = load_source(cfg, &req.campaign, req.params.clone()).await?;
    if ty.needs_markets() && src.markets.is_empty() {
        anyhow::bail!("campaign {} has no markets", req.campaign);
    }
    let sinks = src.sinks.clone();
    let many = ty.shape() == Shape::Objects;
    let out = req.out.clone().unwrap_or_else(|| {
        let ext = if ty.shape() == Shape::Zip {
            "zip"
        } else {
            ty.format().ext
        };
        let gz = if req.params.gzip { ".gz" } else { "" };
        if many {
            format!("{}-{}", req.export_type, req.campaign)
        } else {
            format!("{}-{}.{ext}{gz}", req.export_type, req.campaign)
        }
    });
    let target = Target::parse(&out)?;
    if let (Target::File(dir), true) = (&target, many) {
        tokio::fs::create_dir_all(dir).await?;
    }
    let expected = ty.expected_rows(&src).await?;
    let outputs = OneShotOutputs {
        target,
        many,
        s3: S3Outputs {
            sinks: sinks.clone(),
        },
        sinks,
    };
    let progress = Progress::default();
    let reporter = tokio::spawn(report(progress.clone(), expected));
    let t0 = Instant::now();
    let result = produce(ty.as_ref(), &src, &outputs, &progress).await;
    reporter.abort();
    let done = result.map_err(|e| anyhow::anyhow!("export failed: {e}"))?;
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "vf-export: {} rows, {} bytes in {:.1}s ({:.0} rows/s)",
        done.rows,
        done.bytes,
        secs,
        done.rows as f64 / secs.max(1e-9)
    );
    let key = match &done.key {
        mongodb::bson::Bson::String(k) => k.clone(),
        other => other.to_string(),
    };
    println!("{key}");
    Ok(())
}

/// Progress on stderr: a bar on a terminal, a line every 5 s otherwise.
async fn report(p: Progress, expected: Option<u64>) {
    let t0 = Instant::now();
    if std::io::stderr().is_terminal() {
        let bar = match expected {
            Some(n) => indicatif::ProgressBar::new(n),
            None => indicatif::ProgressBar::new_spinner(),
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} rows ({per_sec}, ETA {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        loop {
            bar.set_position(p.rows.load(Ordering::Relaxed));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    } else {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let rows = p.rows.load(Ordering::Relaxed);
            let rate = rows as f64 / t0.elapsed().as_secs_f64();
            let of = expected.map(|n| format!("/{n}")).unwrap_or_default();
            eprintln!("vf-export: {rows}{of} rows ({rate:.0} rows/s)");
        }
    }
}
