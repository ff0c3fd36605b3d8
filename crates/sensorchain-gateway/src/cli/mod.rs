//! The `sensorchain` command line: the binary's, not the library's API.
//! Each subcommand parses, calls the library (a gateway is started by
//! `sensorchain_gateway::app::start`, a chain validated by
//! `sensorchain_gateway::audit`) and prints.

pub mod api_client;
pub mod audit;
pub mod backup;
pub mod bench;
pub mod bench_cluster;
pub mod cluster;
pub mod export;

pub mod demo;
pub mod genesis;
pub mod image;
pub mod init;
pub mod keygen;
pub mod provision;
pub mod reindex;
pub mod resync;
pub mod run;
pub mod sensor_sim;
pub mod tx;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// sensorchain: a permissioned, hash-chained ledger for signed sensor readings.
#[derive(Debug, Parser)]
#[command(name = "sensorchain", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Log filter (tracing env-filter syntax), e.g. `info` or
    /// `sensorchain_gateway=debug` (default: SENSORCHAIN_LOG, else RUST_LOG,
    /// else `info`; the demo: `warn`). An invalid filter is an error.
    #[arg(long, global = true, env = "SENSORCHAIN_LOG")]
    pub log: Option<String>,
    /// Log format on stderr: `text` (coloured only when stderr is a
    /// terminal) or `json` (one JSON object per line).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines; ANSI colours only when stderr is a terminal.
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields`, `target`).
    Json,
}

impl Cli {
    /// The log filter in force and where it came from: `--log` (or
    /// SENSORCHAIN_LOG), else RUST_LOG, else `info` (`warn` for the demo,
    /// which speaks for itself).
    pub fn log_filter(&self) -> (String, &'static str) {
        if let Some(f) = &self.log {
            return (f.clone(), "--log / SENSORCHAIN_LOG");
        }
        if let Ok(f) = std::env::var("RUST_LOG") {
            return (f, "RUST_LOG");
        }
        let default = if matches!(self.command, Command::Demo(_)) {
            "warn"
        } else {
            "info"
        };
        (default.to_string(), "default")
    }
}

/// Installs the global log subscriber: the filter of [`Cli::log_filter`]
/// (an invalid one is an error with the parser's message), lines to stderr
/// in `format`, ANSI colours only if stderr is a terminal.
pub fn init_tracing(cli: &Cli) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let (filter, source) = cli.log_filter();
    let env_filter = tracing_subscriber::EnvFilter::builder()
        .parse(&filter)
        .map_err(|e| anyhow::anyhow!("invalid log filter {filter:?} (from {source}): {e}; e.g. --log info or --log sensorchain_gateway=debug"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr);
    let installed = match cli.log_format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate an Ed25519 identity and write its secret to a key file readable only by its owner.
    Keygen(KeygenArgs),
    /// Create a chain: write its genesis block (chain id, first admins, validators, parameters).
    Genesis(GenesisArgs),
    /// Run a gateway.
    ///
    /// Before it serves or extends its store it checks it: redb's page
    /// checksums of the whole file, the tables' agreement with the head
    /// record, the latest snapshot against its block, the hash chain of the
    /// last 1,024 blocks, and the state replayed after the snapshot against
    /// the head's state_root (cost: docs/PERFORMANCE.md). A store that fails
    /// is refused (exit 2) naming the table and height; run `sensorchain
    /// audit --data-dir DIR`, then rebuild it: `sensorchain resync` (a
    /// cluster member, from its peers) or `sensorchain restore` (from a
    /// backup).
    Run(RunArgs),
    /// Run simulated medical sensors against a gateway.
    SensorSim(SensorSimArgs),
    /// Run a complete demo network (five gateway processes, simulated sensors, a leader killed and restarted) in a temporary directory and summarise it.
    Demo(DemoArgs),
    /// Validate a stored chain with the core rules (of a stopped gateway, or a running one through its API).
    ///
    /// Replays every block from genesis with the core's rules (links, Merkle
    /// roots, every signature, permissions, sequences, state roots,
    /// certificates) and checks the store's indexes and head record. Exit 0:
    /// valid; 1: invalid, naming the block (or the damaged table and
    /// height); 2: the audit could not run.
    ///
    /// --data-dir DIR reads a stopped gateway's store (a running gateway
    /// holds its store exclusively: the audit then says so). --api URL reads
    /// the exact stored bytes through a running gateway's API instead (`GET
    /// /chain/head`, `/blocks/{h}/raw`, `/blocks/{h}`: the chain up to the
    /// head when the audit starts), logged in with --key (an auditor's or a
    /// gateway's), and runs the same checks, except the store's indexes.
    Audit(AuditArgs),
    /// Export a stored chain in the exact wire bytes of docs/PROTOCOL.md (of a stopped gateway, or a running one through its API).
    ///
    /// --data-dir DIR reads a stopped gateway's store; --api URL reads the
    /// same exact bytes through a running gateway's API (the chain up to the
    /// head when the export starts), logged in with --key (an auditor's or a
    /// gateway's). An existing output file is refused unless --force.
    Export(ExportArgs),
    /// Back a chain up to a file: every block and certificate (of a stopped gateway, or of a running one through its API).
    Backup(backup::BackupArgs),
    /// Rebuild a gateway's data directory from a backup file, validating every block and certificate.
    Restore(backup::RestoreArgs),
    /// Rebuild a cluster member whose store fails its check from its peers, validating every block; the damaged data directory is moved aside.
    Resync(resync::ResyncArgs),
    /// Write a device's key page (seed, entropy, chain id, trusted gateways) for flashing, and optionally grant the device on the chain.
    Provision(provision::ProvisionArgs),
    /// Sign and submit an operator's transaction (grant, revoke, role, assign, consent) through a gateway's API and wait until it is committed.
    Tx(tx::TxArgs),
    /// Measure ingest, latency, audit and scaling against the raw strict Ed25519 verification rate of all cores.
    Bench(bench::BenchArgs),
    /// Show the state of a cluster of gateways (role, term, height, finalized height, lag, health).
    Cluster(cluster::ClusterArgs),
    /// Make a gateway's directory (or /etc/sensorchain + /var/lib/sensorchain with --system): its key, a commented gateway.toml and, with --genesis, the chain it joins; never overwrites.
    Init(init::InitArgs),
    /// Rebuild a stopped gateway's store indexes from its blocks (after an upgrade of the store format), then check the whole chain.
    Reindex(reindex::ReindexArgs),
}

/// `sensorchain keygen`
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the key file (mode 0600).
    #[arg(long, short)]
    pub out: PathBuf,
    /// Overwrite an existing file.
    #[arg(long)]
    pub force: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `sensorchain genesis`
#[derive(Debug, Args)]
pub struct GenesisArgs {
    /// The network's name, a label. The chain id (printed) is derived from
    /// the whole genesis: creator, time, name, parameters and members, so
    /// two chains of one name have different ids.
    #[arg(long)]
    pub name: String,
    /// Key file of the creator: an admin who signs the genesis block.
    #[arg(long)]
    pub creator: PathBuf,
    /// A member: `ROLE:KEY[:PERMISSIONS]`, KEY a public key in hex or a key
    /// file, PERMISSIONS a comma list (default: the role's usual set), e.g.
    /// `gateway:gw1.key` or `device:3b6a…:connect,write`. Repeatable.
    #[arg(long = "member", value_name = "ROLE:KEY[:PERMS]")]
    pub members: Vec<String>,
    /// Admin consensus for admin/validate changes, as a fraction `NUM/DEN`.
    #[arg(long, default_value = "1/2")]
    pub admin_consensus: String,
    /// Proof-of-work difficulty in leading zero bits (0: off).
    #[arg(long, default_value_t = 0)]
    pub pow_difficulty: u8,
    /// Most transactions per block.
    #[arg(long, default_value_t = 10_000)]
    pub max_block_txs: u32,
    /// Where to write the genesis block (refused if the file exists, unless --force).
    #[arg(long, short)]
    pub out: PathBuf,
    /// Overwrite an existing file.
    #[arg(long)]
    pub force: bool,
}

/// `sensorchain run`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The gateway's TOML configuration file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Check everything that can be checked without side effects (the
    /// configuration, the key file, the genesis block, whether the key may
    /// propose blocks), print `ok` or the problems, and exit 0 or 1 without
    /// starting (nothing is created).
    #[arg(long)]
    pub check: bool,
}

/// `sensorchain sensor-sim`
#[derive(Debug, Args)]
pub struct SensorSimArgs {
    /// The gateway's sensor port.
    #[arg(long, default_value = "127.0.0.1:7400")]
    pub gateway: String,
    /// The gateway's public key (hex) or key file: sensors refuse any other.
    #[arg(long)]
    pub gateway_key: String,
    /// The genesis block file (for the chain id).
    #[arg(long)]
    pub genesis: PathBuf,
    /// Key files of the sensors to simulate (each must be allowed on the chain).
    #[arg(long = "sensor-key", required = true)]
    pub sensor_keys: Vec<PathBuf>,
    /// Readers to seal readings for (public key hex or key file); readings go in clear if none.
    #[arg(long = "seal-for")]
    pub seal_for: Vec<String>,
    /// Readings per second per sensor.
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// Stop after this many seconds (default: run until interrupted).
    #[arg(long)]
    pub seconds: Option<u64>,
}

/// `sensorchain demo`
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How long the sensors stream (with three gateways or more, at least
    /// until two seconds after the killed leader is restarted).
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// How many gateways, each its own process (1: a single gateway, a
    /// cluster of one; from 3 on, the leader is killed and restarted).
    #[arg(long, default_value_t = 5)]
    pub gateways: usize,
    /// How many simulated sensors.
    #[arg(long, default_value_t = 8)]
    pub sensors: usize,
    /// Keep everything in this directory instead of a temporary one.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Print only a one-object JSON summary.
    #[arg(long)]
    pub json: bool,
    /// After the summary, start the gateways again, with the sensors
    /// streaming again, and keep them running (their APIs and the
    /// dashboard's URL printed) until Ctrl-C.
    #[arg(long)]
    pub keep_running: bool,
    /// A command to run each gateway process under, e.g. `taskset -c 1` or
    /// `qemu-aarch64 -L /usr/aarch64-linux-gnu` (split at spaces).
    #[arg(long, value_name = "CMD")]
    pub gateway_runner: Option<String>,
}

/// Where `audit` and `export` read the chain: a stopped gateway's data
/// directory, or a running gateway's API.
#[derive(Debug, Args)]
pub struct ChainSourceArgs {
    /// The data directory of a stopped gateway.
    #[arg(long, required_unless_present = "api", conflicts_with = "api")]
    pub data_dir: Option<PathBuf>,
    /// A running gateway's API address (`http(s)://HOST:PORT`), instead of --data-dir.
    #[arg(long, value_name = "URL", requires = "key")]
    pub api: Option<String>,
    /// With --api: the key file to log in with; it must hold `audit` or
    /// `validate` (block bodies hold readings: docs/API.md, "Access control").
    #[arg(long, value_name = "FILE", requires = "api")]
    pub key: Option<PathBuf>,
    /// With --api: a PEM file of the certificates to trust for `https`.
    #[arg(long, value_name = "FILE", requires = "api")]
    pub ca: Option<PathBuf>,
}

/// `sensorchain audit` (see [`Command::Audit`]).
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Where the chain is read.
    #[command(flatten)]
    pub source: ChainSourceArgs,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `sensorchain export` (see [`Command::Export`]).
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Where the chain is read.
    #[command(flatten)]
    pub source: ChainSourceArgs,
    /// The output file (refused if it exists, unless --force).
    #[arg(long, short)]
    pub out: PathBuf,
    /// Overwrite an existing file.
    #[arg(long)]
    pub force: bool,
}

/// `dir` (created if missing) when given, else a new temporary directory
/// named `prefix…`, removed when the returned guard drops.
pub fn dir_or_temp(
    dir: Option<&PathBuf>,
    prefix: &str,
) -> anyhow::Result<(Option<tempfile::TempDir>, PathBuf)> {
    Ok(match dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            (None, d.clone())
        }
        None => {
            let t = tempfile::Builder::new().prefix(prefix).tempdir()?;
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    })
}

/// Refuses to replace an existing `path` unless `force`: the one rule of
/// every command that writes a file (keygen, provision, genesis, export).
pub fn refuse_overwrite(path: &std::path::Path, force: bool) -> anyhow::Result<()> {
    if !force && path.exists() {
        return Err(exists_error(path));
    }
    Ok(())
}

/// The error of [`refuse_overwrite`]: `PATH exists (use --force to overwrite)`.
pub fn exists_error(path: &std::path::Path) -> anyhow::Error {
    anyhow::anyhow!("{} exists (use --force to overwrite)", path.display())
}

/// Writes `bytes` to `path` atomically (temp file in the same directory,
/// `mode` on unix, fsync, rename); an existing file is replaced only if
/// `force`, else refused with [`exists_error`] (also when it appears while
/// writing: the rename does not clobber).
pub fn write_file_atomic(
    path: &std::path::Path,
    bytes: &[u8],
    mode: u32,
    force: bool,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    // NamedTempFile creates its file with mode 0600
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    tmp.as_file().sync_all()?;
    let persisted = if force {
        tmp.persist(path).map(|_| ())
    } else {
        tmp.persist_noclobber(path).map(|_| ())
    };
    persisted.map_err(|e| {
        if !force && path.exists() {
            exists_error(path)
        } else {
            anyhow::anyhow!("cannot write {}: {}", path.display(), e.error)
        }
    })
}

/// Runs a parsed command line (after [`init_tracing`]); the exit code says
/// success (0), a finding such as an invalid chain (1), or an error (2, via
/// `Err`).
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Keygen(a) => keygen::keygen(a),
        Command::Genesis(a) => genesis::genesis(a),
        Command::Audit(a) => audit::audit(a),
        Command::Export(a) => export::export(a),
        Command::Backup(a) => backup::backup(a),
        Command::Restore(a) => backup::restore_cmd(a),
        Command::Resync(a) => resync::resync(a),
        Command::Demo(a) => demo::demo(a),
        Command::Run(a) => run::run(a),
        Command::SensorSim(a) => sensor_sim::sensor_sim(a),
        Command::Bench(a) => bench::bench(a),
        Command::Provision(a) => provision::provision(a),
        Command::Tx(a) => tx::tx(a),
        Command::Init(a) => init::init(a),
        Command::Cluster(a) => cluster::cluster(a),
        Command::Reindex(a) => reindex::reindex(a),
    }
}

/// The key file `--key` names (required with `--api`).
fn read_keypair_arg(
    path: Option<&std::path::Path>,
) -> anyhow::Result<sensorchain_core::identity::Keypair> {
    let p = path.ok_or_else(|| {
        anyhow::anyhow!("--api needs --key FILE: the key of an auditor or a gateway to log in with")
    })?;
    sensorchain_gateway::keys::read_keypair(p)
}
