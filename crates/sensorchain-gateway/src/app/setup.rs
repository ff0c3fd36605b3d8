//! What [`start`](super::start) is given ([`AppConfig`]), how a
//! configuration file becomes one ([`AppConfig::from_config`], after
//! [`preflight`]), the private data directory, and the errors of a start
//! ([`StartError`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sensorchain_core::block::Block;
use sensorchain_core::identity::Keypair;

use crate::config::{ApiSettings, GatewayConfig, SerialPort};
use crate::metrics::Metrics;
use crate::net::NetConfig;
use crate::node::{NodeConfig, check_may_propose, genesis_state};
use crate::store::FILE_NAME;

/// How long shutdown waits for sessions to drain, by default.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

/// Everything a gateway is started from: its identity and chain, where it
/// stores, its settings and what it listens on. Read from a configuration
/// file with [`AppConfig::from_config`], or built in memory
/// ([`AppConfig::new`]: the demo, the benchmark, tests). A listening
/// address may give port 0: the port bound is reported by
/// [`Running::link_addr`](super::Running::link_addr) and
/// [`Running::api_addr`](super::Running::api_addr).
#[derive(Clone)]
pub struct AppConfig {
    /// The gateway's key (it must hold `VALIDATE` on the chain).
    pub key: Keypair,
    /// The chain's genesis block.
    pub genesis: Block,
    /// The data directory (created 0700 if missing; the store is in it).
    pub data_dir: PathBuf,
    /// Block production settings.
    pub node: NodeConfig,
    /// Link limits.
    pub net: NetConfig,
    /// Where to accept TCP sensor links (`IP:port`), if anywhere.
    pub tcp: Option<String>,
    /// Serial devices carrying sensor links.
    pub serial: Vec<SerialPort>,
    /// Where to serve the HTTP API (`IP:port`), if anywhere.
    pub api: Option<String>,
    /// The API's bounds.
    pub api_settings: ApiSettings,
    /// The API's TLS and exposure (`[listen] tls_cert`, `tls_key`,
    /// `allow_plaintext`).
    pub api_tls: crate::api::ApiTls,
    /// The metrics the node, links and API count in.
    pub metrics: Arc<Metrics>,
    /// How long [`Running::shutdown`](super::Running::shutdown) waits for
    /// sessions to drain.
    pub shutdown_grace: Duration,
    /// How [`run_healing`](super::run_healing) probes the disk after a
    /// storage failure.
    pub heal: super::HealSettings,
}

impl AppConfig {
    /// A gateway of `key` on `genesis`'s chain storing in `data_dir`, with
    /// default settings and no listener.
    pub fn new(key: Keypair, genesis: Block, data_dir: impl Into<PathBuf>) -> Self {
        AppConfig {
            key,
            genesis,
            data_dir: data_dir.into(),
            node: NodeConfig::default(),
            net: NetConfig::default(),
            tcp: None,
            serial: Vec::new(),
            api: None,
            api_settings: ApiSettings::default(),
            api_tls: crate::api::ApiTls::default(),
            metrics: Arc::new(Metrics::new()),
            shutdown_grace: SHUTDOWN_GRACE,
            heal: super::HealSettings::default(),
        }
    }

    /// The gateway a checked configuration (read from `file`, named in the
    /// messages) describes: [`preflight`] reads its key file and genesis
    /// block and checks them; nothing is created.
    pub fn from_config(cfg: &GatewayConfig, file: &Path) -> Result<Self, StartError> {
        let Preflight { key, genesis } =
            preflight(cfg, file).map_err(|problems| StartError::Preflight {
                file: file.to_path_buf(),
                problems,
            })?;
        let node = node_config(cfg).map_err(|e| StartError::Preflight {
            file: file.to_path_buf(),
            problems: vec![format!("{e:#}")],
        })?;
        Ok(AppConfig {
            key,
            genesis,
            data_dir: cfg.data_dir.clone(),
            node,
            net: NetConfig::from_limits(&cfg.limits),
            tcp: cfg.listen.tcp.clone(),
            serial: cfg.listen.serial.clone(),
            api: cfg.listen.api.clone(),
            api_settings: cfg.api.clone(),
            api_tls: crate::api::ApiTls {
                cert: cfg.listen.tls_cert.clone(),
                key: cfg.listen.tls_key.clone(),
                allow_plaintext: cfg.listen.allow_plaintext,
            },
            metrics: Arc::new(Metrics::new()),
            shutdown_grace: SHUTDOWN_GRACE,
            heal: super::HealSettings::default(),
        })
    }
}

/// Why a gateway did not start. Nothing listens and every thread started
/// has been stopped when this is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration's key file, genesis block or data directory failed
    /// [`preflight`] (every problem is listed; nothing was created).
    #[error("{}: cannot start:\n  {}", file.display(), problems.join("\n  "))]
    Preflight {
        /// The configuration file.
        file: PathBuf,
        /// Each problem, naming its key.
        problems: Vec<String>,
    },
    /// The data directory cannot be created or made private.
    #[error("{0:#}")]
    DataDir(anyhow::Error),
    /// The store cannot be opened, or failed its checks (the message says
    /// which table and height, and what to do).
    #[error("{0}")]
    Store(String),
    /// The node refused the stored chain or the key (e.g. another chain, a
    /// block breaking the rules, a key without `VALIDATE`).
    #[error("{0:#}")]
    Node(anyhow::Error),
    /// The TCP sensor address cannot be bound.
    #[error("cannot listen for sensors on {addr}: {error}")]
    Links {
        /// The address (`listen.tcp`).
        addr: String,
        /// Why.
        error: std::io::Error,
    },
    /// The API address is refused or cannot be bound.
    #[error("{0:#}")]
    Api(anyhow::Error),
    /// The store's recovery task failed (a panic: a bug).
    #[error("internal: the store recovery task failed: {0}")]
    Internal(String),
}

/// What [`AppConfig::from_config`] reads without side effects.
pub struct Preflight {
    /// The gateway's key.
    pub key: Keypair,
    /// The genesis block (decoded and validated).
    pub genesis: Block,
}

/// The node settings of a configuration (an error only for a `[cluster]`
/// table that did not pass [`GatewayConfig::check`]).
pub fn node_config(cfg: &GatewayConfig) -> anyhow::Result<NodeConfig> {
    Ok(NodeConfig {
        batch_max_txs: cfg.batch.max_txs,
        batch_timeout: Duration::from_millis(cfg.batch.timeout_ms),
        batch_linger: Duration::from_millis(cfg.batch.linger_ms),
        max_pending: cfg.limits.max_pending,
        snapshot_every: cfg.limits.snapshot_every,
        cluster: match &cfg.cluster {
            Some(c) => crate::cluster::ClusterSettings::from_section(c)?,
            None => Default::default(),
        },
    })
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
    // A gateway that waits to be added to a cluster learns its grant of
    // validate from the chain it is replicated; the leader adds only a key
    // that holds it.
    let joining = cfg.cluster.as_ref().is_some_and(|c| c.join);
    if let (Some(k), Some((_, state)), true) = (&key, &genesis, fresh && !joining)
        && let Err(e) = check_may_propose(state, &k.public())
    {
        problems.push(format!("key_file {}: {e}", cfg.key_file.display()));
    }
    match (key, genesis) {
        (Some(key), Some((genesis, _))) if problems.is_empty() => Ok(Preflight { key, genesis }),
        _ => Err(problems),
    }
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
pub(super) fn tighten(path: &Path, mode: u32, what: &str) -> anyhow::Result<()> {
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

/// Sets the mode of a file the gateway has just created to `mode` (Unix;
/// elsewhere a no-op), silently: unlike [`tighten`]'s case, nobody had it
/// open to group or others before.
pub(super) fn set_private(path: &Path, mode: u32) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot restrict {} to {mode:04o}", path.display()))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}
