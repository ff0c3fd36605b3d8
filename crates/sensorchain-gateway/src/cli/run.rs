//! `sensorchain run --config gateway.toml`: one gateway.
//!
//! Loads the configuration, the gateway's key and the genesis block, opens
//! the store (recovering and validating what is there), starts the node, the
//! sensor listeners (TCP, serial) and the HTTP API, prints where it listens,
//! and runs until SIGINT or SIGTERM. Shutdown is graceful: listeners stop
//! accepting, sessions stop reading new submissions, every submission in
//! flight is committed and answered, then the node finishes its last block
//! and releases the store.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sensorchain_core::block::Block;

use super::RunArgs;
use crate::config::GatewayConfig;
use crate::metrics::Metrics;
use crate::net::{Gateway, NetConfig, serial, tcp};
use crate::node::{Node, NodeConfig};
use crate::store::Store;

/// How long shutdown waits for sessions to drain.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

/// Runs `sensorchain run`.
pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let cfg = GatewayConfig::load(&args.config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(async {
        let running = start(&cfg).await?;
        wait_for_signal().await;
        tracing::info!("shutting down");
        running.stop().await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// A started gateway: node, links, API.
pub struct Running {
    /// The node.
    pub node: Node,
    /// The links' shared state.
    pub gateway: Arc<Gateway>,
    /// The TCP sensor address, if listening.
    pub tcp: Option<SocketAddr>,
    /// The HTTP API address, if serving.
    pub api: Option<SocketAddr>,
    api_task: Option<tokio::task::JoinHandle<()>>,
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

/// Starts everything a configuration describes (in the current tokio
/// runtime) and prints the listening addresses.
pub async fn start(cfg: &GatewayConfig) -> anyhow::Result<Running> {
    let key = crate::keys::read_keypair(&cfg.key_file)?;
    let bytes = std::fs::read(&cfg.genesis_file)
        .with_context(|| format!("cannot read genesis block {}", cfg.genesis_file.display()))?;
    let genesis = Block::decode(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a genesis block: {e}", cfg.genesis_file.display()))?;
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("cannot create data directory {}", cfg.data_dir.display()))?;
    // redb's page checksums, then the chain-level check in Node::start
    let store = Store::open_checked(&cfg.data_dir).map_err(|e| match e {
        e if e.is_corrupt() => anyhow::anyhow!(crate::store::integrity::refusal(&cfg.data_dir, &e)),
        e => anyhow::anyhow!("cannot open store in {}: {e}", cfg.data_dir.display()),
    })?;
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
    let gateway = Gateway::new(node.clone(), NetConfig::from_limits(&cfg.limits));
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
    if let Some(addr) = &cfg.listen.api {
        let a: SocketAddr = addr
            .parse()
            .with_context(|| format!("listen.api: {addr:?} is not an address"))?;
        // Bind here so that a busy port is an error at start, not later.
        let probe = std::net::TcpListener::bind(a)
            .with_context(|| format!("cannot listen for the API on {a}"))?;
        let a = probe.local_addr()?;
        drop(probe);
        let n = node.clone();
        api_task = Some(tokio::spawn(async move {
            if let Err(e) = start_api(n, a).await {
                tracing::error!(error = %format!("{e:#}"), "HTTP API stopped");
            }
        }));
        println!("api         http://{a}  (metrics: http://{a}/metrics)");
        api = Some(a);
    }
    Ok(Running {
        node,
        gateway,
        tcp: tcp_addr,
        api,
        api_task,
    })
}

/// The HTTP API's entry point (src/api.rs, owned by the API's author).
async fn start_api(node: Node, addr: SocketAddr) -> anyhow::Result<()> {
    crate::api::serve(node, addr).await
}

impl Running {
    /// Graceful stop: links drain (every submission in flight is committed
    /// and answered), the API stops, the node finishes its last block.
    pub async fn stop(self) {
        if !self.gateway.shutdown(SHUTDOWN_GRACE).await {
            tracing::warn!(
                sessions = self.gateway.sessions(),
                "sessions still open after the grace period"
            );
        }
        if let Some(t) = self.api_task {
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
