//! `vf-floor`: the benchmark's floor — the cost of only reading what the
//! `entries` export reads. It drives the library's own [`EntryReader`] (the
//! campaign, its markets, per market the same entries cursor and the same
//! batched `users` lookups, same batch sizes) so it cannot drift from the
//! export, walks every element of every document, and writes nothing.
//! Prints the number of rows read. Not part of the service.

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use mongodb::bson::{doc, RawBsonRef, RawDocument};
use vf_export::config::{Needs, Settings};
use vf_export::exports::entry_rows::EntryReader;
use vf_export::exports::Params;
use vf_export::oneshot::load_source;

#[derive(Parser)]
#[command(about = "Read an entries export's documents and discard them (benchmark floor)")]
struct Args {
    /// Campaign id.
    #[arg(long)]
    campaign: String,
    #[command(flatten)]
    settings: Settings,
}

/// Visit every element (recursively), so each document is fully decoded.
fn walk(doc: &RawDocument, acc: &mut u64) -> Result<(), mongodb::bson::raw::Error> {
    for el in doc {
        let (key, value) = el?;
        *acc = acc.wrapping_add(key.len() as u64);
        match value {
            RawBsonRef::Document(d) => walk(d, acc)?,
            RawBsonRef::Array(a) => {
                for v in a {
                    if let RawBsonRef::Document(d) = v? {
                        walk(d, acc)?;
                    } else {
                        *acc = acc.wrapping_add(1);
                    }
                }
            }
            RawBsonRef::String(s) => *acc = acc.wrapping_add(s.len() as u64),
            _ => *acc = acc.wrapping_add(1),
        }
    }
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<()> {
    let cfg = args.settings.validate(Needs::MongoOnly)?;
    let src = load_source(&cfg, &args.campaign, Params::default()).await?;
    let t0 = Instant::now();
    let (mut rows, mut users, mut acc) = (0u64, 0u64, 0u64);
    let mut reader = EntryReader::new(&src, doc! {});
    while let Some(batch) = reader.next_batch().await? {
        for j in &batch.items {
            walk(&j.entry, &mut acc)?;
            if let Some(u) = &j.user {
                walk(u, &mut acc)?;
                users += 1;
            }
            rows += 1;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "vf-floor: {rows} rows ({users} with a user) in {secs:.1}s ({:.0} rows/s; checksum {acc})",
        rows as f64 / secs.max(1e-9)
    );
    println!("{rows}");
    Ok(())
}

// One thread, as the one-shot export it is the floor of.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vf-floor: {e}");
            ExitCode::FAILURE
        }
    }
}
