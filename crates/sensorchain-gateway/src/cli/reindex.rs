//! `sensorchain reindex`: rebuilds a stopped gateway's store indexes from
//! its blocks ([`Store::reindex`]), after an upgrade of the store's format
//! or damage to an index, and checks them.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use sensorchain_gateway::store::Store;

/// `sensorchain reindex`
#[derive(Debug, Args)]
pub struct ReindexArgs {
    /// The data directory of a stopped gateway (its `chain.redb`).
    #[arg(long)]
    pub data_dir: PathBuf,
}

/// `sensorchain reindex --data-dir DIR`: exit 0 when the indexes are rebuilt
/// and the whole chain's integrity check (every block's index entries among
/// it) passed.
pub fn reindex(args: &ReindexArgs) -> anyhow::Result<ExitCode> {
    let dir = &args.data_dir;
    let started = Instant::now();
    let mut shown = Instant::now();
    let (store, r) = Store::reindex(dir, |height, head| {
        if shown.elapsed() >= Duration::from_secs(2) {
            shown = Instant::now();
            eprintln!("reindex: block {height} of {head}");
        }
    })
    .map_err(|e| sensorchain_gateway::audit::open_error(dir, e))?;
    drop(store);
    println!(
        "reindexed {} (format {} → {}): {} blocks, {} transactions, {} readings in {:.1} s; \
         integrity check of the whole chain passed",
        dir.display(),
        r.from_format,
        sensorchain_gateway::store::FORMAT_VERSION,
        r.blocks,
        r.transactions,
        r.readings,
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
