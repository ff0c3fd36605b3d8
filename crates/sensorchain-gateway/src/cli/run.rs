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
//! or the problems.
//!
//! **Data at rest is private:** the process's umask is 0o077, the data
//! directory is created 0700 and the store file 0600; an existing data
//! directory or store file open to group or others is tightened (0700,
//! 0600) with a warning.
//!
//! If a committed block takes `VALIDATE` from the gateway's key, the gateway
//! stops (exit code 2) with the reason ([`Node::lost_validate`]).

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sensorchain_core::block::Block;
use sensorchain_core::identity::Keypair;

use super::RunArgs;
use crate::config::GatewayConfig;
use crate::metrics::Metrics;
use crate::net::{LinkHub, NetConfig, serial, tcp};
use crate::node::{Node, NodeConfig, check_may_propose, genesis_state, replay};
use crate::store::{FILE_NAME, Store, StoreError};

/// How long shutdown waits for sessions to drain.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

/// How long a gateway that lost `VALIDATE` keeps answering (every new
/// submission refused as shutting down) before it stops.
const LOST_VALIDATE_GRACE: Duration = Duration::from_secs(2);

/// Runs `sensorchain run`.
pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    if args.check {
        return Ok(check(&args.config));
    }
    restrict_umask();
    let cfg = GatewayConfig::load(&args.config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(async {
        let running = start(&cfg, &args.config).await?;
        let lost = tokio::select! {
            _ = wait_for_signal() => None,
            why = running.node.lost_validate() => Some(why),
        };
        if lost.is_some() {
            // let the answers already decided (the block that took the
            // permission, e.g. its submitter's) reach their senders
            tokio::time::sleep(LOST_VALIDATE_GRACE).await;
        }
        tracing::info!("shutting down");
        running.stop().await;
        match lost {
            Some(why) => Err(anyhow::anyhow!(why)),
            None => anyhow::Ok(()),
        }
    })?;
    Ok(ExitCode::SUCCESS)
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

/// What [`start`] needs that is read without side effects.
pub struct Preflight {
    /// The gateway's key.
    pub key: Keypair,
    /// The genesis block (decoded and validated).
    pub genesis: Block,
}

/// The checks that need no side effect, after the configuration's own
/// ([`GatewayConfig::check`]): the key file (readable, well-formed, not
/// accessible by group or others), the genesis block (decodes, valid),
/// `batch.max_txs` within the chain's `max_block_txs`, the data directory
/// (a directory if it exists) and, if no chain is stored yet, the key a
/// validator of the genesis state. Every problem is collected; `file` is the
/// configuration's path (named in the messages).
pub fn preflight(cfg: &GatewayConfig, file: &Path) -> Result<Preflight, Vec<String>> {
    let mut problems = Vec::new();
    let key = crate::keys::read_keypair(&cfg.key_file)
        .map_err(|e| problems.push(format!("key_file: {e:#}")))
        .ok();
    let genesis = std::fs::read(&cfg.genesis_file)
        .with_context(|| format!("cannot read genesis block {}", cfg.genesis_file.display()))
        .and_then(|bytes| {
            Block::decode(&bytes).map_err(|e| {
                anyhow::anyhow!("{}: not a genesis block: {e}", cfg.genesis_file.display())
            })
        })
        .and_then(|g| genesis_state(&g).map(|s| (g, s)))
        .map_err(|e| problems.push(format!("genesis_file: {e:#}")))
        .ok();
    if let Some((_, state)) = &genesis {
        let max = state.params().max_block_txs;
        if cfg.batch.max_txs as u64 > u64::from(max) {
            problems.push(format!(
                "{}: batch.max_txs = {}: more than the chain's max_block_txs ({max}, set in the genesis block): a block holds at most that many",
                file.display(),
                cfg.batch.max_txs
            ));
        }
    }
    if cfg.data_dir.exists() && !cfg.data_dir.is_dir() {
        problems.push(format!(
            "data_dir: {} exists and is not a directory",
            cfg.data_dir.display()
        ));
    }
    let fresh = !cfg.data_dir.join(FILE_NAME).exists();
    if let (Some(k), Some((_, state)), true) = (&key, &genesis, fresh)
        && let Err(e) = check_may_propose(state, &k.public())
    {
        problems.push(format!("key_file {}: {e}", cfg.key_file.display()));
    }
    match (key, genesis) {
        (Some(key), Some((genesis, _))) if problems.is_empty() => Ok(Preflight { key, genesis }),
        _ => Err(problems),
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

/// Creates the data directory 0700, or tightens an existing one that group
/// or others may access to 0700 (with a warning).
pub fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            b.mode(0o700);
        }
        b.create(dir)
            .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    }
    tighten(dir, 0o700, "data directory")
}

/// Sets `path`'s mode to `mode` if group or others may access it, with a
/// warning (Unix; elsewhere a no-op).
fn tighten(path: &Path, mode: u32, what: &str) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path)
            .with_context(|| format!("cannot read {what} {}", path.display()))?;
        let had = meta.permissions().mode() & 0o777;
        if had & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).with_context(
                || format!("cannot restrict {what} {} to {mode:04o}", path.display()),
            )?;
            tracing::warn!(
                path = %path.display(),
                "{what} had mode {had:04o}, open to group or others: set to {mode:04o}"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = (path, mode, what);
    Ok(())
}

/// A started gateway: node, links, API.
pub struct Running {
    /// The node.
    pub node: Node,
    /// The links' shared state.
    pub gateway: Arc<LinkHub>,
    /// The TCP sensor address, if listening.
    pub tcp: Option<SocketAddr>,
    /// The HTTP API address, if serving.
    pub api: Option<SocketAddr>,
    api_task: Option<tokio::task::JoinHandle<()>>,
    api_stop: Option<tokio::sync::oneshot::Sender<()>>,
    api_grace: Duration,
}

/// The node settings of a configuration.
pub fn node_config(cfg: &GatewayConfig) -> NodeConfig {
    NodeConfig {
        batch_max_txs: cfg.batch.max_txs,
        batch_timeout: Duration::from_millis(cfg.batch.timeout_ms),
        batch_linger: Duration::from_millis(cfg.batch.linger_ms),
        max_pending: cfg.limits.max_pending,
        snapshot_every: cfg.limits.snapshot_every,
    }
}

/// Starts everything a configuration (read from `file`) describes, in the
/// current tokio runtime, and prints the listening addresses. Nothing is
/// created before [`preflight`] has passed.
pub async fn start(cfg: &GatewayConfig, file: &Path) -> anyhow::Result<Running> {
    let Preflight { key, genesis } = preflight(cfg, file).map_err(|problems| {
        anyhow::anyhow!(
            "{}: cannot start:\n  {}",
            file.display(),
            problems.join("\n  ")
        )
    })?;
    prepare_data_dir(&cfg.data_dir)?;
    // redb's page checksums, then the chain-level check in Node::start
    let store = Store::open_checked(&cfg.data_dir).map_err(|e| match e {
        e if e.is_corrupt() => anyhow::anyhow!(crate::store::integrity::refusal(&cfg.data_dir, &e)),
        e => anyhow::anyhow!("cannot open store in {}: {e}", cfg.data_dir.display()),
    })?;
    tighten(store.path(), 0o600, "store file")?;
    let node = Node::start(
        store,
        key,
        &genesis,
        node_config(cfg),
        Arc::new(Metrics::new()),
    )?;
    let state = node.state();
    println!("gateway     {}", node.public());
    println!("chain id    {}", state.chain_id());
    println!("height      {}", state.next_height().saturating_sub(1));
    let gateway = LinkHub::new(node.clone(), NetConfig::from_limits(&cfg.limits));
    let mut tcp_addr = None;
    if let Some(addr) = &cfg.listen.tcp {
        let a = tcp::spawn_tcp(gateway.clone(), addr)
            .await
            .with_context(|| format!("cannot listen for sensors on {addr}"))?;
        println!("sensors     tcp://{a}");
        tcp_addr = Some(a);
    }
    for p in &cfg.listen.serial {
        tokio::spawn(serial::serve_serial(
            gateway.clone(),
            p.path.clone(),
            p.baud,
        ));
        println!("sensors     serial://{} ({} baud)", p.path, p.baud);
    }
    let mut api = None;
    let mut api_task = None;
    let mut api_stop = None;
    if let Some(addr) = &cfg.listen.api {
        // Bound once, here, so that a busy port or a refused address is an
        // error at start; a non-loopback address needs api.allow_non_loopback.
        let listener = crate::api::bind(addr, &cfg.api).await?;
        let a = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (n, settings) = (node.clone(), cfg.api.clone());
        api_task = Some(tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            if let Err(e) = crate::api::serve_with_shutdown(n, listener, settings, shutdown).await {
                tracing::error!(error = %format!("{e:#}"), "HTTP API stopped");
            }
        }));
        api_stop = Some(stop);
        println!("api         http://{a}  (metrics: http://{a}/metrics)");
        api = Some(a);
    }
    Ok(Running {
        node,
        gateway,
        tcp: tcp_addr,
        api,
        api_task,
        api_stop,
        api_grace: Duration::from_millis(cfg.api.request_timeout_ms) + Duration::from_secs(2),
    })
}

impl Running {
    /// Graceful stop: links drain (every submission in flight is committed
    /// and answered), the API stops, the node finishes its last block.
    pub async fn stop(self) {
        // the API stops accepting at once and finishes within its grace
        if let Some(s) = self.api_stop {
            let _ = s.send(());
        }
        if !self.gateway.shutdown(SHUTDOWN_GRACE).await {
            tracing::warn!(
                sessions = self.gateway.sessions(),
                "sessions still open after the grace period"
            );
        }
        if let Some(mut t) = self.api_task
            && tokio::time::timeout(self.api_grace, &mut t).await.is_err()
        {
            t.abort();
            let _ = t.await;
        }
        let height = self.node.state().next_height().saturating_sub(1);
        drop(self.gateway);
        drop(self.node);
        // the block producer closes when the last node handle is gone; give
        // it a moment to release the store
        tokio::time::sleep(Duration::from_millis(100)).await;
        println!("stopped at height {height}");
    }
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
