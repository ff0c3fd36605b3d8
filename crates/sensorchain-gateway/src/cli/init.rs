//! `sensorchain init`: make a gateway's directory in one command.
//!
//! Writes, into `--dir D` (or, with `--system`, into `/etc/sensorchain`
//! with the store in `/var/lib/sensorchain`: the layout of the Debian
//! package's service, docs/DEPLOY.md):
//!
//! - `gateway.key`: a new identity (mode 0600, [`sensorchain_gateway::keys`]), or a copy
//!   of `--key FILE`;
//! - `gateway.toml`: a configuration with every option written out and
//!   explained ([`config_text`]), which [`GatewayConfig::load`] accepts;
//! - `genesis.block`: with `--genesis FILE`, a copy of the chain's genesis
//!   block (checked first: it decodes and is valid), which joins this
//!   gateway to that chain.
//!
//! Nothing is overwritten: if any of these files (or a store in the data
//! directory) exists, init refuses before it writes anything. Without
//! `--genesis` it prints the public key and what to do next: the chain's
//! admin makes a genesis block naming that key as a gateway
//! (`sensorchain genesis --member gateway:KEY`) and the block is copied to
//! `D/genesis.block`; then `sensorchain run --check --config D/gateway.toml`
//! says whether the gateway can start.
//!
//! With `--system`, run as root, the key file and the data directory are
//! given to the service's user ([`SERVICE_USER`], created by the package)
//! so that the service, which runs as that user, can read its key.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use sensorchain_core::block::Block;
use sensorchain_core::identity::Keypair;

use super::{refuse_overwrite, write_file_atomic};
use sensorchain_gateway::config::{GatewayConfig, LIMIT_RANGES};
use sensorchain_gateway::keys::{read_keypair, write_keypair};
use sensorchain_gateway::node::{check_may_propose, genesis_state};
use sensorchain_gateway::store::FILE_NAME;

/// The configuration directory of `--system`.
pub const SYSTEM_CONFIG_DIR: &str = "/etc/sensorchain";
/// The data directory of `--system` (the service's `StateDirectory`).
pub const SYSTEM_STATE_DIR: &str = "/var/lib/sensorchain";
/// The user the packaged service runs as (packaging/sensorchain.sysusers).
pub const SERVICE_USER: &str = "sensorchain";
/// The default `--tcp`: every interface (sessions are authenticated).
pub const DEFAULT_TCP: &str = "0.0.0.0:7400";
/// The default `--api`: loopback (the API has no authentication).
pub const DEFAULT_API: &str = "127.0.0.1:7480";

/// `sensorchain init`
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The gateway's directory: gateway.toml, gateway.key, genesis.block
    /// and the store in DIR/data. Created if missing; it may exist, but
    /// none of those files may.
    #[arg(long, required_unless_present = "system", conflicts_with = "system")]
    pub dir: Option<PathBuf>,
    /// The layout of the packaged service: /etc/sensorchain for the
    /// configuration, key and genesis, /var/lib/sensorchain for the store;
    /// run as root, the key and the store are given to the `sensorchain`
    /// user.
    #[arg(long)]
    pub system: bool,
    /// Join this chain: copy its genesis block (checked first) to
    /// genesis.block. Without it, init prints what to do next.
    #[arg(long, value_name = "FILE")]
    pub genesis: Option<PathBuf>,
    /// Use this existing key file (mode 0600) instead of generating a new
    /// identity; it is copied to gateway.key.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// The address for sensor links (`listen.tcp`). Sessions are
    /// authenticated and encrypted, so the default listens on every
    /// interface.
    #[arg(long, default_value = DEFAULT_TCP, value_name = "IP:PORT")]
    pub tcp: String,
    /// The address of the HTTP API and /metrics (`listen.api`); reads need
    /// a login, and a non-loopback address needs TLS (`listen.tls_cert`,
    /// `tls_key`) or `listen.allow_plaintext`.
    #[arg(long, default_value = DEFAULT_API, value_name = "IP:PORT")]
    pub api: String,
}

/// Where init writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// gateway.toml, gateway.key and genesis.block live here.
    pub config_dir: PathBuf,
    /// The store's directory (`data_dir`).
    pub data_dir: PathBuf,
    /// `data_dir` as written in gateway.toml (relative to `config_dir` for
    /// `--dir`, absolute for `--system`).
    pub data_dir_value: String,
}

impl Layout {
    /// The layout of `--dir` or `--system`.
    pub fn of(args: &InitArgs) -> Layout {
        match &args.dir {
            Some(d) => Layout {
                config_dir: d.clone(),
                data_dir: d.join("data"),
                data_dir_value: "data".into(),
            },
            None => Layout {
                config_dir: SYSTEM_CONFIG_DIR.into(),
                data_dir: SYSTEM_STATE_DIR.into(),
                data_dir_value: SYSTEM_STATE_DIR.into(),
            },
        }
    }

    /// The configuration file.
    pub fn config(&self) -> PathBuf {
        self.config_dir.join("gateway.toml")
    }
    /// The key file.
    pub fn key(&self) -> PathBuf {
        self.config_dir.join("gateway.key")
    }
    /// The genesis block file.
    pub fn genesis(&self) -> PathBuf {
        self.config_dir.join("genesis.block")
    }
}

/// Runs `sensorchain init`.
pub fn init(args: &InitArgs) -> anyhow::Result<ExitCode> {
    let layout = Layout::of(args);
    // everything is read and checked before anything is written
    for p in [layout.config(), layout.key(), layout.genesis()] {
        refuse_overwrite(&p, false).map_err(|_| {
            anyhow::anyhow!(
                "{} exists: init makes a new gateway and never overwrites (move the file away, or choose another --dir)",
                p.display()
            )
        })?;
    }
    let store = layout.data_dir.join(FILE_NAME);
    if store.exists() {
        bail!(
            "{} holds a store already: init writes a new gateway only (run it with `sensorchain run --config {}`, or choose another directory)",
            store.display(),
            layout.config().display()
        );
    }
    let kp = match &args.key {
        Some(k) => read_keypair(k)?,
        None => Keypair::generate(&mut rand::rng()),
    };
    let genesis = match &args.genesis {
        Some(g) => Some(read_genesis(g)?),
        None => None,
    };
    let owner = if args.system { service_owner()? } else { None };
    let text = config_text(&layout.data_dir_value, &args.tcp, &args.api);
    // the written text must be a configuration `run` accepts
    let parsed: GatewayConfig = toml::from_str(&text).context("the generated configuration")?;
    parsed
        .check(&layout.config())
        .map_err(|e| anyhow::anyhow!("{e} (check --tcp and --api)"))?;

    std::fs::create_dir_all(&layout.config_dir)
        .with_context(|| format!("cannot create {}", layout.config_dir.display()))?;
    write_keypair(&layout.key(), &kp, false)?;
    write_file_atomic(&layout.config(), text.as_bytes(), 0o644, false)?;
    if let Some((bytes, _)) = &genesis {
        write_file_atomic(&layout.genesis(), bytes, 0o644, false)?;
    }
    if let Some(o) = owner {
        give_to(&layout, o)?;
    }

    let pk = kp.public();
    println!("wrote {}", layout.config().display());
    println!("wrote {} (mode 0600)", layout.key().display());
    if owner.is_some() {
        println!(
            "      owned by {SERVICE_USER} (the service's user), as is {}",
            layout.data_dir.display()
        );
    }
    println!("public key  {pk}");
    let check = format!(
        "sensorchain run --check --config {}",
        layout.config().display()
    );
    match &genesis {
        Some((_, block)) => {
            println!("wrote {}", layout.genesis().display());
            println!("chain id    {}", block.header.chain_id);
            match genesis_state(block).map(|s| check_may_propose(&s, &pk)) {
                Ok(Ok(())) => {
                    println!("\nthis gateway is a validator of the chain; next:");
                    println!("  {check}");
                    println!("  {}", start_hint(args.system, &layout));
                }
                _ => {
                    println!(
                        "\nthis key is not a validator of that genesis block: `run` refuses to start \
                         a new store with it. The chain's admin must make a genesis block naming\n  \
                         gateway:{pk}\nand copy it to {} (replacing this one), then:\n  {check}",
                        layout.genesis().display()
                    );
                }
            }
        }
        None => {
            println!("\nnext: the chain's admin makes the genesis block naming this gateway, e.g.");
            println!(
                "  sensorchain genesis --name NAME --creator admin.key --member gateway:{pk} --out genesis.block"
            );
            println!(
                "copies it to {} (every gateway of the chain gets the same file), then:",
                layout.genesis().display()
            );
            println!("  {check}");
            println!("  {}", start_hint(args.system, &layout));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn start_hint(system: bool, layout: &Layout) -> String {
    if system {
        "systemctl enable --now sensorchain".into()
    } else {
        format!("sensorchain run --config {}", layout.config().display())
    }
}

/// Reads and checks a genesis block: its bytes and the decoded block.
fn read_genesis(path: &Path) -> anyhow::Result<(Vec<u8>, Block)> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read genesis block {}", path.display()))?;
    let block = Block::decode(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a genesis block: {e}", path.display()))?;
    genesis_state(&block).with_context(|| format!("{}", path.display()))?;
    Ok((bytes, block))
}

/// The uid and gid of [`SERVICE_USER`] for `--system` run as root (the
/// package creates the user; its absence is an error, found before
/// anything is written); `None` when not root: the files stay the
/// caller's, fine for a service run as the caller.
#[cfg(unix)]
fn service_owner() -> anyhow::Result<Option<(u32, u32)>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let user = nix::unistd::User::from_name(SERVICE_USER)
        .with_context(|| format!("cannot look up the user {SERVICE_USER}"))?
        .with_context(|| {
            format!(
                "no user {SERVICE_USER}: install the sensorchain package (it creates the user), \
                 or use --dir for a gateway run by hand"
            )
        })?;
    Ok(Some((user.uid.as_raw(), user.gid.as_raw())))
}

#[cfg(not(unix))]
fn service_owner() -> anyhow::Result<Option<(u32, u32)>> {
    Ok(None)
}

/// Gives the key file and the data directory (created 0700 if missing) to
/// `owner`, so that the service running as it can read its key and write
/// its store.
#[cfg(unix)]
fn give_to(layout: &Layout, (uid, gid): (u32, u32)) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, chown};
    if !layout.data_dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&layout.data_dir)
            .with_context(|| format!("cannot create {}", layout.data_dir.display()))?;
    }
    for p in [layout.key(), layout.data_dir.clone()] {
        chown(&p, Some(uid), Some(gid))
            .with_context(|| format!("cannot give {} to {SERVICE_USER}", p.display()))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn give_to(_layout: &Layout, _owner: (u32, u32)) -> anyhow::Result<()> {
    Ok(())
}

/// The commented gateway.toml that init writes: the three paths and the
/// listening addresses set, every other option written out (commented) at
/// its default with what it means. [`GatewayConfig::load`] reads it;
/// `data_dir` is as given (relative paths are taken from the file's
/// directory).
pub fn config_text(data_dir: &str, tcp: &str, api: &str) -> String {
    let d = GatewayConfig::new("".into(), "".into(), "".into());
    let limit = |key: &str| {
        LIMIT_RANGES
            .iter()
            .find(|r| r.key == key)
            .map(|r| format!("{}..={}", r.min, r.max))
            .unwrap_or_default()
    };
    format!(
        r#"# sensorchain gateway configuration, written by `sensorchain init`.
# Check it with: sensorchain run --check --config THIS_FILE
# Every option is listed; a commented one (#) has its default value.
# Relative paths are taken from this file's directory.

# The store (redb database and state snapshots); created 0700 at start.
data_dir = {data_dir:?}
# This gateway's identity: its secret key (mode 0600; refused if group or
# others may read it). Its public key must be a validator of the chain.
key_file = "gateway.key"
# The chain's genesis block: the same file on every gateway of the chain.
genesis_file = "genesis.block"

[listen]
# Sensor links (authenticated, encrypted sessions). Remove the line to
# disable TCP.
tcp = {tcp:?}
# The HTTP API and /metrics. Reads need a login with a chain identity
# (docs/API.md); a non-loopback address needs TLS (tls_cert and tls_key
# below) or allow_plaintext. Remove the line to disable the API.
api = {api:?}
# Serial ports carrying sensor links (path, baud rate), e.g.
# serial = [{{ path = "/dev/ttyUSB0", baud = 115200 }}]
# Ports are named by their device path (no port enumeration).
serial = []
# The API over HTTPS: a PEM certificate chain (leaf first) and its key,
# relative to this file.
# tls_cert = "api.crt"
# tls_key = "api.key"
# Serve plain HTTP on a non-loopback api anyway (logins, tokens and
# readings cross the network in clear).
# allow_plaintext = false

[batch]
# A block is cut as soon as the store is idle (group commit); while it is
# busy, at most max_txs transactions (at most the chain's max_block_txs)
# or timeout_ms after the first pending one.
# max_txs = {max_txs}
# timeout_ms = {timeout_ms}
# Wait at least this long before a cut even when the store is idle (ms).
# linger_ms = {linger_ms}

[limits]
# Most concurrent sensor sessions ({r_sessions}).
# max_sessions = {max_sessions}
# Most handshakes in progress at once ({r_half_open}).
# max_half_open = {max_half_open}
# A handshake must finish within this many ms.
# handshake_timeout_ms = {handshake_timeout_ms}
# A session with no frame for this many ms is closed (at least
# handshake_timeout_ms).
# idle_timeout_ms = {idle_timeout_ms}
# Most readings waiting for a block; above it the gateway answers busy.
# max_pending = {max_pending}
# Blocks between state snapshots (restart speed against disk use).
# snapshot_every = {snapshot_every}

[api]
# Open HTTP connections; more wait in the kernel's backlog.
# max_connections = {max_connections}
# Requests handled at once; more wait (within request_timeout_ms).
# max_in_flight = {max_in_flight}
# A request head (also after an idle keep-alive) must arrive within this
# many ms.
# header_timeout_ms = {header_timeout_ms}
# A request must be answered within this many ms; else 408.
# request_timeout_ms = {request_timeout_ms}
# Threads reading the store for the API (default: half the cores, at
# least 1).
# read_threads = 1
# Store reads waiting for a thread; more: 503 busy.
# read_queue = {read_queue}
# A reading list's answer stops at this many bytes (truncated, next_from).
# max_response_bytes = {max_response_bytes}
# Host names accepted besides loopback names and the bound address ("*":
# any, which gives up the DNS-rebinding protection).
# allowed_hosts = []
# The older name of listen.allow_plaintext.
# allow_non_loopback = false

## [cluster]: this gateway as one member of a cluster of gateways that keep
## one chain under Raft (docs/CLUSTER.md). Without it, the gateway is a
## cluster of one. Every member lists every other member, with the same
## ids; remove the two leading hashes of each line to use it.
## [cluster]
## node_id = 1                  # this gateway's member id, unique
## listen = "0.0.0.0:7500"      # peer links (encrypted; peers admitted by key)
## heartbeat_ms = 250           # Raft's heartbeat
## election_min_ms = 3000       # election timeouts: many heartbeats, for a busy Pi
## election_max_ms = 6000
## snapshot_every = 8192        # Raft log entries between snapshots
## snapshot_keep = 8192         # entries kept below one (a member less behind catches up by the log)
## join = false                 # true: wait to be added (sensorchain cluster add)
## [[cluster.peers]]
## id = 2
## addr = "10.0.0.12:7500"
## key = "<its public key, 64 hex digits>"
"#,
        max_txs = d.batch.max_txs,
        timeout_ms = d.batch.timeout_ms,
        linger_ms = d.batch.linger_ms,
        max_sessions = d.limits.max_sessions,
        max_half_open = d.limits.max_half_open,
        handshake_timeout_ms = d.limits.handshake_timeout_ms,
        idle_timeout_ms = d.limits.idle_timeout_ms,
        max_pending = d.limits.max_pending,
        snapshot_every = d.limits.snapshot_every,
        r_sessions = limit("limits.max_sessions"),
        r_half_open = limit("limits.max_half_open"),
        max_connections = d.api.max_connections,
        max_in_flight = d.api.max_in_flight,
        header_timeout_ms = d.api.header_timeout_ms,
        request_timeout_ms = d.api.request_timeout_ms,
        read_queue = d.api.read_queue,
        max_response_bytes = d.api.max_response_bytes,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key of the configuration (as serialised) appears in the
    /// template, set or commented, so that a new option cannot be left
    /// unexplained; uncommented, the template still parses and checks.
    #[test]
    fn template_names_every_option_and_parses() {
        let text = config_text("data", DEFAULT_TCP, DEFAULT_API);
        let all = GatewayConfig::new("d".into(), "k".into(), "g".into());
        let table: toml::Table = toml::from_str(&all.to_toml()).unwrap();
        let mut keys = Vec::new();
        for (k, v) in &table {
            match v.as_table() {
                Some(t) => keys.extend(t.keys().map(|s| (Some(k.clone()), s.clone()))),
                None => keys.push((None, k.clone())),
            }
        }
        assert!(keys.len() > 20, "{keys:?}");
        for (section, key) in &keys {
            let set = format!("\n{key} = ");
            let commented = format!("\n# {key} = ");
            assert!(
                text.contains(&set) || text.contains(&commented),
                "{section:?}.{key} is not in the template"
            );
        }
        // every commented default, uncommented, is still a valid config
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if rest.contains(" = ") && !rest.starts_with("serial") => rest,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let cfg: GatewayConfig = toml::from_str(&uncommented).unwrap();
        cfg.check(Path::new("gateway.toml")).unwrap();
        assert_eq!(cfg.listen.tcp.as_deref(), Some("0.0.0.0:7400"));
        assert_eq!(cfg.batch.max_txs, all.batch.max_txs);
        assert_eq!(cfg.api.read_threads, 1);
    }

    /// The package's example (packaging/gateway.toml) is what `init
    /// --system` writes with its defaults.
    #[test]
    fn packaged_example_is_the_system_template() {
        let packaged = include_str!("../../../../packaging/gateway.toml");
        assert_eq!(
            packaged,
            config_text(SYSTEM_STATE_DIR, DEFAULT_TCP, DEFAULT_API),
            "regenerate packaging/gateway.toml: sensorchain init --system writes it"
        );
    }
}
