//! The `sensorchain` command line.

pub mod api_client;
pub mod audit;
pub mod bench;
pub mod export;

pub mod demo;
pub mod genesis;
pub mod image;
pub mod keygen;
pub mod provision;
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
    /// Log filter (tracing env-filter syntax), e.g. `info` or `sensorchain_gateway=debug`.
    #[arg(long, global = true, env = "SENSORCHAIN_LOG", default_value = "info")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate an Ed25519 identity and write its secret to a key file readable only by its owner.
    Keygen(KeygenArgs),
    /// Create a chain: write its genesis block (chain id, first admins, validators, parameters).
    Genesis(GenesisArgs),
    /// Run a gateway.
    Run(RunArgs),
    /// Run simulated medical sensors against a gateway.
    SensorSim(SensorSimArgs),
    /// Run a complete demo network in a temporary directory and summarise it.
    Demo(DemoArgs),
    /// Validate a stored chain offline with the core rules.
    Audit(AuditArgs),
    /// Export a stored chain in the exact wire bytes of docs/PROTOCOL.md.
    Export(ExportArgs),
    /// Write a device's key page (seed, entropy, chain id, trusted gateways) for flashing, and optionally grant the device on the chain.
    Provision(provision::ProvisionArgs),
    /// Sign and submit an operator's transaction (grant, revoke, role, assign, consent) through a gateway's API and wait until it is committed.
    Tx(tx::TxArgs),
    /// Measure ingest, latency, audit and scaling against the raw strict Ed25519 verification rate of all cores.
    Bench(bench::BenchArgs),
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
    /// Where to write the genesis block.
    #[arg(long, short)]
    pub out: PathBuf,
}

/// `sensorchain run`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The gateway's TOML configuration file.
    #[arg(long, short)]
    pub config: PathBuf,
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
    /// How long the sensors stream.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// How many simulated sensors.
    #[arg(long, default_value_t = 8)]
    pub sensors: usize,
    /// Keep everything in this directory instead of a temporary one.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Print only a one-object JSON summary.
    #[arg(long)]
    pub json: bool,
}

/// `sensorchain audit`
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The gateway's data directory.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `sensorchain export`
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The gateway's data directory.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The output file.
    #[arg(long, short)]
    pub out: PathBuf,
}

/// Runs a parsed command line; the exit code says success (0), a finding
/// such as an invalid chain (1), or an error (2, via `Err`).
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // the demo speaks for itself: only warnings unless asked for more
    let filter = if matches!(cli.command, Command::Demo(_)) && cli.log == "info" {
        "warn"
    } else {
        &cli.log
    };
    init_tracing(filter);
    match &cli.command {
        Command::Keygen(a) => keygen::keygen(a),
        Command::Genesis(a) => genesis::genesis(a),
        Command::Audit(a) => audit::audit(a),
        Command::Export(a) => export::export(a),
        Command::Demo(a) => demo::demo(a),
        Command::Run(a) => run::run(a),
        Command::SensorSim(a) => sensor_sim::sensor_sim(a),
        Command::Bench(a) => bench::bench(a),
        Command::Provision(a) => provision::provision(a),
        Command::Tx(a) => tx::tx(a),
    }
}

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
