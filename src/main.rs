//! The `vf-export` binary: parse the command line, validate configuration
//! (one clear line and exit 2 on a problem), run the subcommand.

use std::process::ExitCode;

use clap::Parser;
use secrecy::ExposeSecret;
use vf_export::config::{Cli, Command, Needs};
use vf_export::startup::{Application, Role};
use vf_export::store::{IndexScope, Store};
use vf_export::{shutdown, telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The one-shot runs one export: one thread holds less memory (one
    // malloc arena, one stack) and needs no cross-thread wake-ups. The
    // service runs several exports beside its HTTP server on all cores.
    let rt = match &cli.command {
        Command::Export(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        _ => tokio::runtime::Runtime::new(),
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vf-export: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    let (settings, needs) = match &cli.command {
        Command::Serve(s) => (s, Needs::Serve),
        Command::Worker(s) => (s, Needs::Worker),
        Command::Indexes(s) => (s, Needs::MongoOnly),
        // Buckets are optional for a local file; a missing one fails when used.
        Command::Export(e) => (&e.settings, Needs::MongoOnly),
        Command::Doctor(s) => (s, Needs::Worker),
        Command::Migrate(m) => (&m.settings, Needs::MongoOnly),
        // Buckets only matter to a cancel's upload abort, through the
        // records' own bucket names.
        Command::Exports(e) => (e.action.settings(), Needs::MongoOnly),
    };
    let cfg = match settings.validate(needs) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vf-export: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    // The doctor, the one-shot, migrate and the queue view talk to a
    // person: plain lines, no JSON logs.
    if !matches!(
        cli.command,
        Command::Doctor(_) | Command::Export(_) | Command::Migrate(_) | Command::Exports(_)
    ) {
        telemetry::init_logging();
    }
    let result = match cli.command {
        Command::Serve(_) => serve(&cfg, Role::Serve).await,
        Command::Worker(_) => serve(&cfg, Role::Worker).await,
        Command::Indexes(_) => indexes(&cfg).await,
        Command::Export(e) => {
            let req = vf_export::oneshot::Request {
                campaign: e.campaign,
                export_type: e.export_type,
                out: e.out,
                params: vf_export::exports::Params {
                    date_key: e.date_key,
                    include_all_markets: e.include_all_markets,
                    gzip: e.gzip,
                },
            };
            vf_export::oneshot::run(&cfg, req).await
        }
        Command::Doctor(_) => {
            let checks = vf_export::doctor::run(&cfg).await;
            let failed = checks.iter().filter(|c| c.result.is_err()).count();
            if failed > 0 {
                eprintln!(
                    "vf-export doctor: {failed} of {} checks failed",
                    checks.len()
                );
                return ExitCode::FAILURE;
            }
            Ok(())
        }
        Command::Migrate(m) => migrate(&cfg, m.dry_run).await,
        Command::Exports(e) => vf_export::operator::run(&cfg, e.action).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "vf-export stopped with an error");
            eprintln!("vf-export: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(cfg: &vf_export::config::Config, role: Role) -> anyhow::Result<()> {
    let app = Application::build(cfg, role).await?;
    let sd = app.shutdown();
    tokio::spawn(async move {
        shutdown::signal().await;
        tracing::info!("shutdown signal: draining");
        sd.drain();
    });
    app.run().await
}

async fn indexes(cfg: &vf_export::config::Config) -> anyhow::Result<()> {
    let store = Store::connect(cfg.mongodb_uri.expose_secret(), &cfg.mongodb_db).await?;
    let missing = store.missing_indexes().await?;
    let ensured = store.ensure_indexes(IndexScope::All).await?;
    for name in &ensured {
        let what = if missing.contains(name) {
            "created"
        } else {
            "present"
        };
        println!("{what:8} {name}");
    }
    Ok(())
}

async fn migrate(cfg: &vf_export::config::Config, dry_run: bool) -> anyhow::Result<()> {
    let store = Store::connect(cfg.mongodb_uri.expose_secret(), &cfg.mongodb_db).await?;
    // The dedupe the backfilled keys are for is the unique index's.
    if store
        .missing_indexes()
        .await?
        .iter()
        .any(|i| i == "exports.active_key_unique")
    {
        if !dry_run {
            anyhow::bail!(
                "the exports.active_key_unique index is missing: run `vf-export indexes` first"
            );
        }
        println!("note: the exports.active_key_unique index is missing: run `vf-export indexes` before migrate");
    }
    let report = vf_export::migrate::run(&vf_export::queue::Queue::new(store), dry_run).await?;
    println!("{report}");
    if !report.ok() {
        anyhow::bail!(
            "migrate could not do everything: {} write(s) failed, {} active record(s) unreadable (listed above)",
            report.failed,
            report.unreadable_active
        );
    }
    Ok(())
}
