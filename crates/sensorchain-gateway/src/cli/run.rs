//! `sensorchain run --config gateway.toml`: one gateway.
//!
//! Loads the configuration, the gateway's key and the genesis block, opens
//! the store (recovering and validating what is there), starts the node, the
//! sensor listeners (TCP, serial) and the HTTP API, prints where it listens,
//! and runs until SIGINT or SIGTERM. Shutdown is graceful: listeners stop
//! accepting, sessions stop reading new submissions, every submission in
//! flight is committed and answered, then the node finishes its last block
//! and releases the store.
//!
//! **Before anything is created** every value of the configuration is
//! checked ([`GatewayConfig::check`]), the key file is read (refused if its
//! group or others may access it), the genesis block is decoded and
//! validated, `batch.max_txs` is compared with the chain's
//! `max_block_txs`, and for an empty data directory the key must be a
//! validator of the genesis state ([`preflight`]); for a stored chain the
//! node checks the key against the replayed state. `sensorchain run
//! --check` does all of it without side effects ([`check`]) and prints `ok`
//! or the problems. The gateway itself is started and stopped by
//! [`app::start`] and [`Running::shutdown`] (the order of both is in
//! [`sensorchain_gateway::app`]).
//!
//! **Data at rest is private:** the process's umask is 0o077, the data
//! directory is created 0700 and the store file 0600; an existing data
//! directory or store file open to group or others is tightened (0700,
//! 0600) with a warning.
//!
//! If a committed block takes `VALIDATE` from the gateway's key, the gateway
//! stops (exit code 2) with the reason. After a storage failure (a full
//! disk) it refuses submissions `storage_failed` and restarts itself on its
//! store once the disk takes writes again ([`app::run_healing`]).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use sensorchain_gateway::app::{self, AppConfig, Running, preflight};
use sensorchain_gateway::config::GatewayConfig;
use sensorchain_gateway::node::{check_may_propose, replay};
use sensorchain_gateway::store::{FILE_NAME, Store, StoreError};

use super::RunArgs;

/// Name of the threads of the gateway's main runtime (the sensor links,
/// the HTTP API and its store reads); Raft, the verification pool and the
/// proposer have their own (`bench cluster` groups CPU by these names).
pub const GATEWAY_THREAD: &str = "sc-gateway";

/// Runs `sensorchain run`: [`app::run_healing`] until a signal (the
/// gateway [`app::start`]ed, restarted in place after a storage failure).
/// Prints where it listens, and on stop the height, the heals and anything
/// that did not stop in time.
pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    if args.check {
        return Ok(check(&args.config));
    }
    restrict_umask();
    let cfg = GatewayConfig::load(&args.config)?;
    // the key file and genesis block are read before the runtime starts
    let app_cfg = AppConfig::from_config(&cfg, &args.config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name(GATEWAY_THREAD)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let stopped = rt.block_on(async {
        let mut first = true;
        let stopped = app::run_healing(app_cfg, wait_for_signal(), |running| {
            // a gateway started again after a storage failure is logged
            if std::mem::take(&mut first) {
                print_started(running);
            }
        })
        .await?;
        anyhow::Ok(stopped)
    })?;
    drop(rt);
    for what in &stopped.not_stopped {
        tracing::warn!("did not stop in time: {what}");
    }
    if stopped.heals > 0 {
        println!("healed {} times after a storage failure", stopped.heals);
    }
    println!("stopped at height {}", stopped.height);
    match stopped.lost_validate {
        Some(why) => Err(anyhow::anyhow!(why)),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Prints who the gateway is and where it listens.
fn print_started(r: &Running) {
    let node = r.node();
    let state = node.state();
    println!("gateway     {}", node.public());
    println!("chain id    {}", state.chain_id());
    println!("height      {}", state.next_height().saturating_sub(1));
    if let Some(a) = r.link_addr() {
        println!("sensors     tcp://{a}");
    }
    for p in r.serial_ports() {
        println!("sensors     serial://{p}");
    }
    if let Some(a) = r.api_addr() {
        println!("api         http://{a}  (metrics: http://{a}/metrics)");
    }
    let c = node.cluster_status();
    match node.peer_addr() {
        Some(a) => println!(
            "cluster     member {} of {}, peer links on {a}",
            c.node_id,
            c.members.len()
        ),
        None => println!("cluster     a cluster of one (no [cluster] section)"),
    }
}

/// Sets the process's file mode creation mask to 0o077, so that every file
/// and directory the gateway creates (the store, its snapshots, anything in
/// the data directory) is its owner's only, whatever the caller's umask.
pub fn restrict_umask() {
    #[cfg(unix)]
    // SAFETY: umask(2) only replaces the process's file mode creation mask;
    // it has no failure mode and touches no memory.
    unsafe {
        libc::umask(0o077);
    }
}

/// `sensorchain run --check`: the configuration ([`GatewayConfig::load`]),
/// then [`preflight`], then for a stored chain the key against the replayed
/// state (the store opened read-only; skipped while a gateway has it open).
/// Prints `ok` and a summary on stdout, or every problem on stderr; exit
/// code 0 or 1. Creates nothing.
pub fn check(file: &Path) -> ExitCode {
    let cfg = match GatewayConfig::load(file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(1);
        }
    };
    let pre = match preflight(&cfg, file) {
        Ok(p) => p,
        Err(problems) => {
            for p in problems {
                eprintln!("error: {p}");
            }
            return ExitCode::from(1);
        }
    };
    let gw = pre.key.public();
    let stored = if cfg.data_dir.join(FILE_NAME).exists() {
        match Store::open_read_only(&cfg.data_dir) {
            Ok(store) => match replay(&store, &pre.genesis) {
                Ok(Some(state)) => match check_may_propose(&state, &gw) {
                    Ok(()) => format!(
                        "stored chain at height {}, the key is a validator",
                        state.next_height().saturating_sub(1)
                    ),
                    Err(e) => {
                        eprintln!("error: key_file {}: {e}", cfg.key_file.display());
                        return ExitCode::from(1);
                    }
                },
                Ok(None) => "empty store, the key is a validator of the genesis".into(),
                Err(e) => {
                    eprintln!("error: data_dir {}: {e:#}", cfg.data_dir.display());
                    return ExitCode::from(1);
                }
            },
            Err(StoreError::Busy) => {
                "store in use by a running gateway: the stored chain was not checked".into()
            }
            Err(e) => {
                eprintln!("error: data_dir {}: {e}", cfg.data_dir.display());
                return ExitCode::from(1);
            }
        }
    } else {
        "no chain stored yet, the key is a validator of the genesis".into()
    };
    println!("ok          {}", file.display());
    println!("gateway     {gw}");
    println!("chain id    {}", pre.genesis.header.chain_id);
    println!("store       {stored}");
    ExitCode::SUCCESS
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
