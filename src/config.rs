//! Configuration: environment variables, each also a `--flag` (clap derive,
//! `env`) except the secrets (MONGODB_URI, JWT_SECRET: the environment or a
//! `*_FILE` only, held as `SecretString`, never printed). Parsed and validated once at start; every other module receives a
//! typed value and never reads the environment itself.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use secrecy::{ExposeSecret, SecretString};

/// `vf-export`: Verified Fan export service.
#[derive(Debug, Parser)]
#[command(name = "vf-export", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// HTTP API on PORT and the export worker in one process (production default).
    Serve(Settings),
    /// The export worker alone (HTTP only for /heartbeat and /metrics).
    Worker(Settings),
    /// Run one export now, straight from MongoDB, without the queue.
    Export(ExportCmd),
    /// Create or update the MongoDB indexes the service needs (idempotent).
    Indexes(Settings),
    /// Preflight: MongoDB, indexes, each bucket writable, each AssumeRole, CloudWatch.
    Doctor(Settings),
    /// Cutover from the Node service: fit the records it left active to the queue (idempotent).
    ///
    /// Gives the records the Node service left PENDING or TRIGGERED what
    /// the queue needs (activeKey; a lapsed lease on TRIGGERED ones);
    /// reports duplicates and unreadable records, never deletes. Exits
    /// non-zero when a write fails or an active record cannot be read.
    Migrate(MigrateCmd),
    /// Operator view of the queue: list, show and cancel exports.
    Exports(ExportsCmd),
}

#[derive(Debug, Args)]
pub struct MigrateCmd {
    /// Print the plan only; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Args)]
pub struct ExportsCmd {
    #[command(subcommand)]
    pub action: ExportsAction,
}

#[derive(Debug, Subcommand)]
pub enum ExportsAction {
    /// List exports: newest first, or oldest first with --older-than.
    List(ExportsList),
    /// One export in full, as stored (never the original's `token`).
    Show(ExportsOne),
    /// Cancel a PENDING or TRIGGERED export (the HTTP cancel's rule): it
    /// becomes FAILED (Cancelled), a running one stops, its upload is aborted.
    Cancel(ExportsOne),
}

impl ExportsAction {
    pub fn settings(&self) -> &Settings {
        match self {
            ExportsAction::List(l) => &l.settings,
            ExportsAction::Show(o) | ExportsAction::Cancel(o) => &o.settings,
        }
    }
}

#[derive(Debug, Args)]
pub struct ExportsList {
    /// Only these statuses (repeat, or separate with commas).
    #[arg(long, value_delimiter = ',', ignore_case = true,
          value_parser = ["PENDING", "TRIGGERED", "FINISHED", "FAILED", "EXPIRED"])]
    pub status: Vec<String>,
    /// Only this campaign.
    #[arg(long)]
    pub campaign: Option<String>,
    /// Only this export type.
    #[arg(long = "type")]
    pub export_type: Option<String>,
    /// Only exports created longer ago than this: 90s, 30m, 2h, 3d.
    #[arg(long, value_parser = parse_age)]
    pub older_than: Option<Duration>,
    /// Show at most this many.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Args)]
pub struct ExportsOne {
    /// The export id (24 hex characters).
    pub id: String,
    /// Only if it belongs to this campaign.
    #[arg(long)]
    pub campaign: Option<String>,
    #[command(flatten)]
    pub settings: Settings,
}

/// An age such as `90s`, `30m`, `2h` or `3d`.
pub fn parse_age(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not an age such as 90s, 30m, 2h or 3d");
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(secs).map(Duration::from_secs).ok_or_else(bad)
}

#[derive(Debug, Args)]
pub struct ExportCmd {
    /// Campaign id.
    #[arg(long)]
    pub campaign: String,
    /// Export type (e.g. entries).
    #[arg(long = "type")]
    pub export_type: String,
    /// Output: a local file (default `<type>-<campaign>.<ext>`) or
    /// `s3://bucket/key`; a folder or prefix for multi-object types.
    #[arg(long)]
    pub out: Option<String>,
    /// Gzip the output (single-CSV types).
    #[arg(long)]
    pub gzip: bool,
    /// Add rows for each entry's additional markets (entries).
    #[arg(long)]
    pub include_all_markets: bool,
    /// dateKey (codeWaves).
    #[arg(long)]
    pub date_key: Option<String>,
    #[command(flatten)]
    pub settings: Settings,
}

/// Every variable of `shared/spec/config.md`. Optional here; what a
/// subcommand needs is checked by [`Settings::validate`] so a missing value
/// is reported as one line naming the variable.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// HTTP port.
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,
    /// MongoDB connection string (required): from MONGODB_URI or
    /// MONGODB_URI_FILE only, never a flag (`ps` shows a process's flags).
    #[arg(skip = env_secret("MONGODB_URI"))]
    pub mongodb_uri: Option<SecretString>,
    /// MongoDB database name.
    #[arg(long, env = "MONGODB_DB", default_value = "titan")]
    pub mongodb_db: String,
    /// HS256 shared secret for JWTs: from JWT_SECRET or JWT_SECRET_FILE
    /// only, never a flag.
    #[arg(skip = env_secret("JWT_SECRET"))]
    pub jwt_secret: Option<SecretString>,
    /// RS256/ES256 public key (PEM) for JWTs.
    #[arg(long, env = "JWT_PUBLIC_KEY", hide_env_values = true)]
    pub jwt_public_key: Option<String>,
    /// AWS region.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub aws_region: String,
    /// AWS endpoint override (local stand-ins).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,
    /// Path-style S3 addressing (stand-ins need true).
    #[arg(long, env = "S3_FORCE_PATH_STYLE", default_value_t = false, action = clap::ArgAction::Set)]
    pub s3_force_path_style: bool,
    /// Bucket for most export types.
    #[arg(long, env = "EXPORTS_BUCKET")]
    pub exports_bucket: Option<String>,
    /// Bucket for `scoring`.
    #[arg(long, env = "SCORING_BUCKET")]
    pub scoring_bucket: Option<String>,
    /// Bucket for `verifiedEntries` and `codeWaves`.
    #[arg(long, env = "VF_SCORING_BUCKET")]
    pub vf_scoring_bucket: Option<String>,
    /// Partner bucket for `autoReminderEmail`.
    #[arg(long, env = "SFMC_BUCKET")]
    pub sfmc_bucket: Option<String>,
    /// Role assumed to write SFMC_BUCKET.
    #[arg(long, env = "SFMC_ROLE_ARN")]
    pub sfmc_role_arn: Option<String>,
    /// Partner bucket for the TMOL publish of codes.
    #[arg(long, env = "TMOL_BUCKET")]
    pub tmol_bucket: Option<String>,
    /// Role assumed to write TMOL_BUCKET.
    #[arg(long, env = "TMOL_ROLE_ARN")]
    pub tmol_role_arn: Option<String>,
    /// KMS key id for SSE-KMS (ours); SSE-S3 when unset.
    #[arg(long, env = "SSE_KMS_KEY_ID")]
    pub sse_kms_key_id: Option<String>,
    /// Exports run at once per process; 0 = no worker here.
    #[arg(long, env = "WORKER_CONCURRENCY", default_value_t = 2)]
    pub worker_concurrency: usize,
    /// How often an idle worker looks for PENDING exports (ms).
    #[arg(long, env = "POLL_INTERVAL_MS", default_value_t = 1000)]
    pub poll_interval_ms: u64,
    /// Claim lease (s), renewed while an export runs.
    #[arg(long, env = "LEASE_SECS", default_value_t = 60)]
    pub lease_secs: u64,
    /// Claims of one export before it is FAILED.
    #[arg(long, env = "MAX_ATTEMPTS", default_value_t = 3)]
    pub max_attempts: u32,
    /// TRIGGERED longer than this (s) becomes EXPIRED.
    #[arg(long, env = "EXPORT_TIMEOUT_SECS", default_value_t = 3600)]
    pub export_timeout_secs: u64,
    /// Rows per CSV segment inside the reminder-email ZIP.
    #[arg(long, env = "MAX_ROWS_PER_FILE", default_value_t = 250_000)]
    pub max_rows_per_file: u64,
    /// Expiry of the download URL (s).
    #[arg(long, env = "SIGNED_URL_TTL_SECS", default_value_t = 3600)]
    pub signed_url_ttl_secs: u64,
    /// On SIGTERM, how long in-flight exports may finish (s).
    #[arg(long, env = "DRAIN_TIMEOUT_SECS", default_value_t = 540)]
    pub drain_timeout_secs: u64,
    /// S3 multipart part size in MiB (ours; S3 minimum 5). Two part
    /// buffers per upload are most of an export's memory; 5 MiB parts still
    /// allow 48 GiB objects (10,000 parts).
    #[arg(long, env = "S3_PART_SIZE_MIB", default_value_t = 5)]
    pub s3_part_size_mib: usize,
    /// Enable /dev/* routes (never in production).
    #[arg(long, env = "DEV_ROUTES", default_value_t = false, action = clap::ArgAction::Set)]
    pub dev_routes: bool,
    /// Publish backlog metrics to CloudWatch under this namespace.
    #[arg(long, env = "CLOUDWATCH_NAMESPACE")]
    pub cloudwatch_namespace: Option<String>,
    /// AutoScalingGroupName dimension of the CloudWatch metrics (default:
    /// the instance's ASG tag from instance metadata), and the group whose
    /// lifecycle hook ASG_LIFECYCLE_HOOK names.
    #[arg(long, env = "ASG_NAME")]
    pub asg_name: Option<String>,
    /// Name of the group's EC2_INSTANCE_TERMINATING lifecycle hook (ours):
    /// on EC2, when this instance is being terminated, hand running exports
    /// back and complete the lifecycle action. Needs ASG_NAME.
    #[arg(long, env = "ASG_LIFECYCLE_HOOK")]
    pub asg_lifecycle_hook: Option<String>,
    /// Read MONGODB_URI from this file (ours; the file wins).
    #[arg(long, env = "MONGODB_URI_FILE")]
    pub mongodb_uri_file: Option<PathBuf>,
    /// Read JWT_SECRET from this file (ours; the file wins).
    #[arg(long, env = "JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,
    /// Read JWT_PUBLIC_KEY (a multi-line PEM, which docker --env-file
    /// cannot carry) from this file (ours; the file wins).
    #[arg(long, env = "JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// Seconds between CloudWatch publications (ours).
    #[arg(long, env = "CLOUDWATCH_INTERVAL_SECS", default_value_t = 60)]
    pub cloudwatch_interval_secs: u64,
    /// First delay (s) before an export that failed for a passing reason
    /// is claimed again; doubles per attempt, capped at 900 s, ±20 % jitter.
    #[arg(long, env = "RETRY_BACKOFF_SECS", default_value_t = 30)]
    pub retry_backoff_secs: u64,
    /// SFMC region of the rows whose locale has no region of its own.
    #[arg(long, env = "SFMC_DEFAULT_REGION", default_value = "NA")]
    pub sfmc_default_region: String,
}

/// A configuration problem: one line naming the variable, never its value.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {problem}")]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
}

fn err(var: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        problem: problem.into(),
    }
}

/// What a subcommand needs from the settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// HTTP API + worker: JWT key and buckets.
    Serve,
    /// Worker: buckets.
    Worker,
    /// MongoDB only.
    MongoOnly,
}

/// How the service verifies JWTs.
#[derive(Clone)]
pub enum JwtKey {
    Secret(SecretString),
    PublicKeyPem(String),
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        match self {
            JwtKey::Secret(_) => f.write_str("JwtKey::Secret(..)"),
            JwtKey::PublicKeyPem(_) => f.write_str("JwtKey::PublicKeyPem(..)"),
        }
    }
}

/// Buckets (and partner roles) the destinations resolve to.
#[derive(Debug, Clone, Default)]
pub struct Buckets {
    pub exports: String,
    pub scoring: String,
    pub vf_scoring: String,
    pub sfmc: Option<String>,
    pub sfmc_role_arn: Option<String>,
    pub tmol: Option<String>,
    pub tmol_role_arn: Option<String>,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub port: u16,
    pub mongodb_uri: SecretString,
    pub mongodb_db: String,
    pub jwt: Option<JwtKey>,
    pub aws_region: String,
    pub aws_endpoint_url: Option<String>,
    pub s3_force_path_style: bool,
    pub buckets: Buckets,
    pub sse_kms_key_id: Option<String>,
    pub worker_concurrency: usize,
    pub poll_interval: Duration,
    pub lease: Duration,
    pub max_attempts: u32,
    pub export_timeout: Duration,
    pub max_rows_per_file: u64,
    pub signed_url_ttl: Duration,
    pub drain_timeout: Duration,
    pub part_size: usize,
    pub dev_routes: bool,
    pub cloudwatch_namespace: Option<String>,
    pub asg_name: Option<String>,
    /// The termination lifecycle hook `serve` answers (with `asg_name`).
    pub asg_lifecycle_hook: Option<String>,
    pub cloudwatch_interval: Duration,
    pub retry_backoff: Duration,
    pub sfmc_default_region: &'static str,
}

fn required(var: &'static str, v: &Option<String>) -> Result<String, ConfigError> {
    match v.as_deref().map(str::trim) {
        Some(s) if !s.is_empty() => Ok(s.to_string()),
        _ => Err(err(var, "is required")),
    }
}

fn non_empty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// A secret variable of the environment (read when the command line is
/// parsed, as clap reads the others).
fn env_secret(var: &str) -> Option<SecretString> {
    std::env::var(var).ok().map(SecretString::from)
}

/// A secret from `VAR_FILE` (which wins) or `VAR`, trimmed like the
/// variable. The error names the file variable and the path, never the
/// content.
fn secret(
    file_var: &'static str,
    file: &Option<PathBuf>,
    value: Option<&str>,
) -> Result<Option<String>, ConfigError> {
    match file.as_deref().filter(|p| !p.as_os_str().is_empty()) {
        Some(path) => read_secret(file_var, path).map(Some),
        None => Ok(value
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)),
    }
}

fn exposed(v: &Option<SecretString>) -> Option<&str> {
    v.as_ref().map(|s| s.expose_secret())
}

fn read_secret(file_var: &'static str, path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| err(file_var, format!("cannot read {}: {e}", path.display())))?;
    match text.trim() {
        "" => Err(err(file_var, format!("{} is empty", path.display()))),
        s => Ok(s.to_string()),
    }
}

impl Settings {
    /// Check the settings for one subcommand and build the typed config.
    pub fn validate(&self, needs: Needs) -> Result<Config, ConfigError> {
        // In this order: the first problem named is the first a reader of
        // the variables' table would meet.
        let mongodb_uri = self.mongodb_uri()?;
        let jwt = self.jwt(needs)?;
        let buckets = self.buckets(needs)?;
        self.check_limits()?;
        let sfmc_default_region = self.sfmc_default_region()?;
        Ok(Config {
            port: self.port,
            mongodb_uri: mongodb_uri.into(),
            mongodb_db: self.mongodb_db.trim().to_string(),
            jwt,
            aws_region: self.aws_region.clone(),
            aws_endpoint_url: non_empty(&self.aws_endpoint_url),
            s3_force_path_style: self.s3_force_path_style,
            buckets,
            sse_kms_key_id: non_empty(&self.sse_kms_key_id),
            worker_concurrency: self.worker_concurrency,
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            lease: Duration::from_secs(self.lease_secs),
            max_attempts: self.max_attempts,
            export_timeout: Duration::from_secs(self.export_timeout_secs),
            max_rows_per_file: self.max_rows_per_file,
            signed_url_ttl: Duration::from_secs(self.signed_url_ttl_secs),
            drain_timeout: Duration::from_secs(self.drain_timeout_secs),
            part_size: self.s3_part_size_mib * 1024 * 1024,
            dev_routes: self.dev_routes,
            cloudwatch_namespace: non_empty(&self.cloudwatch_namespace),
            asg_name: non_empty(&self.asg_name),
            asg_lifecycle_hook: non_empty(&self.asg_lifecycle_hook),
            cloudwatch_interval: Duration::from_secs(self.cloudwatch_interval_secs),
            retry_backoff: Duration::from_secs(self.retry_backoff_secs),
            sfmc_default_region,
        })
    }

    fn mongodb_uri(&self) -> Result<String, ConfigError> {
        let mongodb_uri = required(
            "MONGODB_URI",
            &secret(
                "MONGODB_URI_FILE",
                &self.mongodb_uri_file,
                exposed(&self.mongodb_uri),
            )?,
        )?;
        if !mongodb_uri.starts_with("mongodb://") && !mongodb_uri.starts_with("mongodb+srv://") {
            return Err(err(
                "MONGODB_URI",
                "must start with mongodb:// or mongodb+srv://",
            ));
        }
        if self.mongodb_db.trim().is_empty() {
            return Err(err("MONGODB_DB", "must not be empty"));
        }
        Ok(mongodb_uri)
    }

    fn jwt(&self, needs: Needs) -> Result<Option<JwtKey>, ConfigError> {
        let jwt = match (
            secret(
                "JWT_SECRET_FILE",
                &self.jwt_secret_file,
                exposed(&self.jwt_secret),
            )?,
            secret(
                "JWT_PUBLIC_KEY_FILE",
                &self.jwt_public_key_file,
                self.jwt_public_key.as_deref(),
            )?,
        ) {
            (Some(_), Some(_)) => {
                return Err(err(
                    "JWT_SECRET",
                    "set either JWT_SECRET or JWT_PUBLIC_KEY, not both",
                ))
            }
            (Some(s), None) => Some(JwtKey::Secret(s.into())),
            (None, Some(p)) => {
                let ok = jsonwebtoken::DecodingKey::from_rsa_pem(p.as_bytes()).is_ok()
                    || jsonwebtoken::DecodingKey::from_ec_pem(p.as_bytes()).is_ok();
                if !ok {
                    let var = match self.jwt_public_key_file {
                        Some(_) => "JWT_PUBLIC_KEY_FILE",
                        None => "JWT_PUBLIC_KEY",
                    };
                    return Err(err(var, "is not an RSA or EC public key in PEM form"));
                }
                Some(JwtKey::PublicKeyPem(p))
            }
            (None, None) => None,
        };
        if needs == Needs::Serve && jwt.is_none() {
            return Err(err(
                "JWT_SECRET",
                "JWT_SECRET or JWT_PUBLIC_KEY is required for serve",
            ));
        }
        Ok(jwt)
    }

    fn buckets(&self, needs: Needs) -> Result<Buckets, ConfigError> {
        let buckets = if needs == Needs::MongoOnly {
            Buckets {
                exports: non_empty(&self.exports_bucket).unwrap_or_default(),
                scoring: non_empty(&self.scoring_bucket).unwrap_or_default(),
                vf_scoring: non_empty(&self.vf_scoring_bucket).unwrap_or_default(),
                ..Default::default()
            }
        } else {
            Buckets {
                exports: required("EXPORTS_BUCKET", &self.exports_bucket)?,
                scoring: required("SCORING_BUCKET", &self.scoring_bucket)?,
                vf_scoring: required("VF_SCORING_BUCKET", &self.vf_scoring_bucket)?,
                ..Default::default()
            }
        };
        let buckets = Buckets {
            sfmc: non_empty(&self.sfmc_bucket),
            sfmc_role_arn: non_empty(&self.sfmc_role_arn),
            tmol: non_empty(&self.tmol_bucket),
            tmol_role_arn: non_empty(&self.tmol_role_arn),
            ..buckets
        };
        if buckets.tmol.is_some() && buckets.tmol_role_arn.is_none() {
            return Err(err("TMOL_ROLE_ARN", "is required when TMOL_BUCKET is set"));
        }
        Ok(buckets)
    }

    /// Numbers and pairs of settings that only make sense together.
    fn check_limits(&self) -> Result<(), ConfigError> {
        if self.poll_interval_ms == 0 {
            return Err(err("POLL_INTERVAL_MS", "must be at least 1"));
        }
        if self.lease_secs < 3 {
            return Err(err("LEASE_SECS", "must be at least 3"));
        }
        if self.max_attempts == 0 {
            return Err(err("MAX_ATTEMPTS", "must be at least 1"));
        }
        if self.export_timeout_secs == 0 {
            return Err(err("EXPORT_TIMEOUT_SECS", "must be at least 1"));
        }
        if non_empty(&self.asg_lifecycle_hook).is_some() && non_empty(&self.asg_name).is_none() {
            return Err(err(
                "ASG_LIFECYCLE_HOOK",
                "needs ASG_NAME (the group the hook belongs to)",
            ));
        }
        if self.cloudwatch_interval_secs == 0 {
            return Err(err("CLOUDWATCH_INTERVAL_SECS", "must be at least 1"));
        }
        if self.max_rows_per_file == 0 {
            return Err(err("MAX_ROWS_PER_FILE", "must be at least 1"));
        }
        if !(1..=604_800).contains(&self.signed_url_ttl_secs) {
            return Err(err(
                "SIGNED_URL_TTL_SECS",
                "must be between 1 and 604800 (7 days, the SigV4 limit)",
            ));
        }
        if !(5..=512).contains(&self.s3_part_size_mib) {
            return Err(err(
                "S3_PART_SIZE_MIB",
                "must be between 5 (the S3 minimum) and 512",
            ));
        }
        if self.retry_backoff_secs > 900 {
            return Err(err("RETRY_BACKOFF_SECS", "must be at most 900 (the cap)"));
        }
        Ok(())
    }

    fn sfmc_default_region(&self) -> Result<&'static str, ConfigError> {
        let region = self.sfmc_default_region.trim().to_ascii_uppercase();
        crate::exports::sfmc::REGIONS
            .iter()
            .copied()
            .find(|r| *r == region)
            .ok_or_else(|| {
                err(
                    "SFMC_DEFAULT_REGION",
                    format!(
                        "must be one of {}",
                        crate::exports::sfmc::REGIONS.join(", ")
                    ),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Settings from flags; `--mongodb-uri` and `--jwt-secret` stand for
    /// the variables (no such flags exist: see the secret fields).
    fn settings(args: &[&str]) -> Settings {
        let mut argv = vec!["vf-export", "serve"];
        let (mut uri, mut jwt) = (None, None);
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match *a {
                "--mongodb-uri" => uri = it.next().map(|v| SecretString::from(*v)),
                "--jwt-secret" => jwt = it.next().map(|v| SecretString::from(*v)),
                _ => argv.push(a),
            }
        }
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Serve(mut s) => {
                s.mongodb_uri = uri;
                s.jwt_secret = jwt;
                s
            }
            _ => unreachable!(),
        }
    }

    #[test]
    fn secrets_are_no_flags_and_never_printed() {
        for flag in ["--mongodb-uri", "--jwt-secret"] {
            let argv = ["vf-export", "serve", flag, "x"];
            assert!(Cli::try_parse_from(argv).is_err(), "{flag} is a flag");
        }
        let s = settings(OK);
        let c = s.validate(Needs::Serve).unwrap();
        for shown in [format!("{s:?}"), format!("{c:?}")] {
            assert!(!shown.contains("mongodb://h/"), "{shown}");
        }
        assert_eq!(c.mongodb_uri.expose_secret(), "mongodb://h/");
    }

    const OK: &[&str] = &[
        "--mongodb-uri",
        "mongodb://h/",
        "--jwt-secret",
        "s",
        "--exports-bucket",
        "e",
        "--scoring-bucket",
        "s",
        "--vf-scoring-bucket",
        "v",
    ];

    #[test]
    fn defaults_match_the_spec() {
        let c = settings(OK).validate(Needs::Serve).unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.mongodb_db, "titan");
        assert_eq!(c.worker_concurrency, 2);
        assert_eq!(c.poll_interval, Duration::from_millis(1000));
        assert_eq!(c.lease, Duration::from_secs(60));
        assert_eq!(c.max_attempts, 3);
        assert_eq!(c.export_timeout, Duration::from_secs(3600));
        assert_eq!(c.max_rows_per_file, 250_000);
        assert_eq!(c.signed_url_ttl, Duration::from_secs(3600));
        assert_eq!(c.drain_timeout, Duration::from_secs(540));
        assert_eq!(c.retry_backoff, Duration::from_secs(30));
        assert_eq!(c.sfmc_default_region, "NA");
        assert!(!c.dev_routes);
        assert!(!c.s3_force_path_style);
    }

    #[test]
    fn ages_are_read_in_seconds_minutes_hours_and_days() {
        assert_eq!(parse_age("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_age("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_age("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_age("3d"), Ok(Duration::from_secs(259_200)));
        for bad in ["", "2", "h", "2w", "-2h", "1.5h", "99999999999999999999d"] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn missing_values_name_the_variable() {
        let e = settings(&[]).validate(Needs::Serve).unwrap_err();
        assert_eq!(e.to_string(), "MONGODB_URI: is required");
        let e = settings(&OK[..2]).validate(Needs::Serve).unwrap_err();
        assert_eq!(e.var, "JWT_SECRET");
        let e = settings(&OK[..4]).validate(Needs::Serve).unwrap_err();
        assert_eq!(e.to_string(), "EXPORTS_BUCKET: is required");
        // The worker needs no JWT key.
        let mut w = OK[..2].to_vec();
        w.extend_from_slice(&OK[4..]);
        assert!(settings(&w).validate(Needs::Worker).is_ok());
    }

    #[test]
    fn secret_files_win_over_the_variables() {
        let dir = tempfile::tempdir().unwrap();
        // An EC P-256 public key: multi-line, as docker --env-file cannot carry.
        let pem = "-----BEGIN PUBLIC KEY-----\n\
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEu+72gk8PLJRZfvfgUoNqa7omckUn\n\
y59KG7Zr+sWsN8HVgnT/HRU0goWfXHIZQ2PSCAMokeYefjRQILjJDKp9sA==\n\
-----END PUBLIC KEY-----\n";
        let key = dir.path().join("jwt.pem");
        std::fs::write(&key, pem).unwrap();
        let uri = dir.path().join("uri");
        std::fs::write(&uri, "mongodb://from-file/\n").unwrap();
        let mut a = OK.to_vec();
        a.drain(2..4); // no JWT_SECRET
        a.extend_from_slice(&[
            "--jwt-public-key-file",
            key.to_str().unwrap(),
            "--mongodb-uri-file",
            uri.to_str().unwrap(),
        ]);
        let c = settings(&a).validate(Needs::Serve).unwrap();
        assert_eq!(c.mongodb_uri.expose_secret(), "mongodb://from-file/");
        assert!(matches!(&c.jwt, Some(JwtKey::PublicKeyPem(p)) if p == pem.trim()));

        let secret = dir.path().join("secret");
        std::fs::write(&secret, "from-file\n").unwrap();
        let mut a = OK.to_vec();
        a.extend_from_slice(&["--jwt-secret-file", secret.to_str().unwrap()]);
        let c = settings(&a).validate(Needs::Serve).unwrap();
        assert!(matches!(&c.jwt, Some(JwtKey::Secret(s)) if s.expose_secret() == "from-file"));

        // A missing or empty file names the file variable and the path only.
        let mut a = OK.to_vec();
        a.extend_from_slice(&["--jwt-secret-file", "/nonexistent/secret"]);
        let e = settings(&a).validate(Needs::Serve).unwrap_err();
        assert_eq!(e.var, "JWT_SECRET_FILE");
        assert!(e.problem.contains("/nonexistent/secret"), "{e}");
        std::fs::write(&secret, "\n").unwrap();
        let mut a = OK.to_vec();
        a.extend_from_slice(&["--mongodb-uri-file", secret.to_str().unwrap()]);
        let e = settings(&a).validate(Needs::Serve).unwrap_err();
        assert_eq!(e.var, "MONGODB_URI_FILE");
        // A file that is no key names the file variable, not its content.
        std::fs::write(&secret, "not-a-pem-secret").unwrap();
        let mut a = OK.to_vec();
        a.drain(2..4);
        a.extend_from_slice(&["--jwt-public-key-file", secret.to_str().unwrap()]);
        let e = settings(&a).validate(Needs::Serve).unwrap_err();
        assert_eq!(e.var, "JWT_PUBLIC_KEY_FILE");
        assert!(!e.to_string().contains("not-a-pem-secret"));
    }

    #[test]
    fn the_lifecycle_hook_needs_the_group() {
        let mut a = OK.to_vec();
        a.extend_from_slice(&["--asg-lifecycle-hook", "vf-export-dev1-terminating"]);
        let e = settings(&a).validate(Needs::Serve).unwrap_err();
        assert_eq!(e.var, "ASG_LIFECYCLE_HOOK");
        a.extend_from_slice(&["--asg-name", "vf-export-dev1"]);
        let c = settings(&a).validate(Needs::Serve).unwrap();
        assert_eq!(
            c.asg_lifecycle_hook.as_deref(),
            Some("vf-export-dev1-terminating")
        );
        assert_eq!(c.asg_name.as_deref(), Some("vf-export-dev1"));
        assert_eq!(
            settings(OK)
                .validate(Needs::Serve)
                .unwrap()
                .asg_lifecycle_hook,
            None
        );
    }

    #[test]
    fn bad_values_are_rejected_without_echoing_secrets() {
        let mut a = OK.to_vec();
        a.extend_from_slice(&["--jwt-public-key", "not-a-pem-secret"]);
        a.drain(2..4);
        let e = settings(&a).validate(Needs::Serve).unwrap_err();
        assert_eq!(e.var, "JWT_PUBLIC_KEY");
        assert!(!e.to_string().contains("not-a-pem-secret"));
        let mut a = OK.to_vec();
        a.extend_from_slice(&["--s3-part-size-mib", "1"]);
        assert_eq!(
            settings(&a).validate(Needs::Serve).unwrap_err().var,
            "S3_PART_SIZE_MIB"
        );
    }
}
