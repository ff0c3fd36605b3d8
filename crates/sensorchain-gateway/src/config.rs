//! The gateway's TOML configuration.
//!
//! ```toml
//! # paths are relative to this file's directory
//! data_dir = "data"            # redb database and snapshots
//! key_file = "gateway.key"     # this gateway's identity (sensorchain keygen)
//! genesis_file = "genesis.block"
//!
//! [listen]
//! tcp = "0.0.0.0:7400"         # sensor links (omit to disable)
//! api = "127.0.0.1:7480"       # HTTP API and /metrics (loopback by default)
//! serial = [{ path = "/dev/ttyUSB0", baud = 115200 }]
//!
//! [batch]                      # cut when the store is idle (group commit),
//! max_txs = 2000               # or at max_txs, or timeout_ms after the first
//! timeout_ms = 20
//! linger_ms = 0                # wait at least this long even when idle
//!
//! [limits]
//! max_sessions = 4096
//! max_half_open = 256          # handshakes in progress
//! handshake_timeout_ms = 5000
//! idle_timeout_ms = 120000     # a session with no frame for this long is closed
//! max_pending = 100000         # readings waiting for a block; above it: busy
//! snapshot_every = 64          # blocks between state snapshots (restart speed)
//! ```

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Where the database lives.
    pub data_dir: PathBuf,
    /// The gateway's key file.
    pub key_file: PathBuf,
    /// The chain's genesis block file.
    pub genesis_file: PathBuf,
    /// Listening addresses.
    #[serde(default)]
    pub listen: Listen,
    /// Block cutting.
    #[serde(default)]
    pub batch: Batch,
    /// Resource limits.
    #[serde(default)]
    pub limits: Limits,
    /// The HTTP API's limits and exposure (`[api]`).
    #[serde(default)]
    pub api: ApiSettings,
}

/// Listening addresses.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// TCP address for sensor links; `None` disables TCP.
    #[serde(default = "default_tcp")]
    pub tcp: Option<String>,
    /// HTTP API address; `None` disables the API.
    #[serde(default = "default_api")]
    pub api: Option<String>,
    /// Serial ports carrying sensor links.
    #[serde(default)]
    pub serial: Vec<SerialPort>,
}

/// A serial port.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialPort {
    /// Device path, e.g. `/dev/ttyUSB0`.
    pub path: String,
    /// Baud rate.
    #[serde(default = "default_baud")]
    pub baud: u32,
}

/// When blocks are cut. Group commit: a block is cut as soon as the store is
/// idle, holding whatever arrived while the previous block was being stored;
/// `max_txs` and `timeout_ms` bound the batch while the store is busy (like
/// Fabric's batch size and batch timeout).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// Most transactions per block.
    #[serde(default = "default_max_txs")]
    pub max_txs: usize,
    /// Longest wait from the first pending transaction to the cut while the
    /// previous block is still being stored, in ms.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Shortest wait from the first pending transaction to the cut even
    /// when the store is idle, in ms (0: cut at once).
    #[serde(default)]
    pub linger_ms: u64,
}

/// Resource limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Most concurrent sessions.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// Most concurrent half-open handshakes.
    #[serde(default = "default_max_half_open")]
    pub max_half_open: usize,
    /// A handshake must finish within this many ms.
    #[serde(default = "default_handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
    /// A session idle for this many ms is closed.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Most transactions waiting for a block.
    #[serde(default = "default_max_pending")]
    pub max_pending: usize,
    /// Blocks between state snapshots.
    #[serde(default = "default_snapshot_every")]
    pub snapshot_every: u64,
}

fn default_tcp() -> Option<String> {
    Some("127.0.0.1:7400".into())
}
fn default_api() -> Option<String> {
    Some("127.0.0.1:7480".into())
}
fn default_baud() -> u32 {
    115_200
}
fn default_max_txs() -> usize {
    2000
}
fn default_timeout_ms() -> u64 {
    20
}
fn default_max_sessions() -> usize {
    4096
}
fn default_max_half_open() -> usize {
    256
}
fn default_handshake_timeout_ms() -> u64 {
    5000
}
fn default_idle_timeout_ms() -> u64 {
    120_000
}
fn default_max_pending() -> usize {
    100_000
}
fn default_snapshot_every() -> u64 {
    64
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            tcp: default_tcp(),
            api: default_api(),
            serial: Vec::new(),
        }
    }
}
impl Default for Batch {
    fn default() -> Self {
        Batch {
            max_txs: default_max_txs(),
            timeout_ms: default_timeout_ms(),
            linger_ms: 0,
        }
    }
}
impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sessions: default_max_sessions(),
            max_half_open: default_max_half_open(),
            handshake_timeout_ms: default_handshake_timeout_ms(),
            idle_timeout_ms: default_idle_timeout_ms(),
            max_pending: default_max_pending(),
            snapshot_every: default_snapshot_every(),
        }
    }
}

impl GatewayConfig {
    /// A configuration with defaults for everything but the three paths.
    pub fn new(data_dir: PathBuf, key_file: PathBuf, genesis_file: PathBuf) -> Self {
        GatewayConfig {
            data_dir,
            key_file,
            genesis_file,
            listen: Listen::default(),
            batch: Batch::default(),
            limits: Limits::default(),
            api: ApiSettings::default(),
        }
    }

    /// Reads a TOML file; relative paths are taken relative to its directory.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let mut cfg: GatewayConfig =
            toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut cfg.data_dir, &mut cfg.key_file, &mut cfg.genesis_file] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the values are usable.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.batch.max_txs > 0, "batch.max_txs must be at least 1");
        anyhow::ensure!(
            self.batch.timeout_ms > 0,
            "batch.timeout_ms must be at least 1"
        );
        anyhow::ensure!(
            self.limits.max_half_open > 0,
            "limits.max_half_open must be at least 1"
        );
        anyhow::ensure!(
            self.limits.max_sessions > 0,
            "limits.max_sessions must be at least 1"
        );
        anyhow::ensure!(
            self.limits.snapshot_every > 0,
            "limits.snapshot_every must be at least 1"
        );
        Ok(())
    }

    /// The configuration as TOML text.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

/// The HTTP API's limits and exposure: the `[api]` table (docs/API.md,
/// "Limits"). Every value is bounded so that a flood of requests or
/// connections cannot take the machine's memory, threads or descriptors,
/// nor the sensors' ingest latency.
///
/// ```toml
/// [api]
/// max_connections = 1024       # open HTTP connections; more wait in the kernel's backlog
/// max_in_flight = 64           # requests being handled at once; more wait (within request_timeout_ms)
/// header_timeout_ms = 10000    # a request head (also after an idle keep-alive) must arrive within this
/// request_timeout_ms = 30000   # a request must be answered within this (waiting included); else 408
/// read_threads = 1             # threads reading the store for the API (default: half the cores, at least 1)
/// read_queue = 64              # store reads waiting for a thread; more: 503 busy
/// max_response_bytes = 1048576 # a reading list stops here (truncated, next_from)
/// allowed_hosts = []           # Host names accepted besides loopback names and the bound address
/// allow_non_loopback = false   # serve the API (no authentication!) on a non-loopback address
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    /// Most open HTTP connections; when reached, the API stops accepting
    /// (further connections wait in the kernel's backlog) until one closes.
    #[serde(default = "default_api_max_connections")]
    pub max_connections: usize,
    /// Most requests handled at once; a request beyond waits (first come,
    /// first served, holding only its connection) within its
    /// `request_timeout_ms`.
    #[serde(default = "default_api_max_in_flight")]
    pub max_in_flight: usize,
    /// A connection must deliver a complete request head within this many
    /// ms of the server waiting for one (a new connection, or a keep-alive
    /// connection after its last answer: this is also the idle timeout);
    /// else it is closed.
    #[serde(default = "default_api_header_timeout_ms")]
    pub header_timeout_ms: u64,
    /// A request (its body included) must be answered within this many ms;
    /// else 408 `request_timeout`. Also bounds how long shutdown waits for
    /// requests in flight.
    #[serde(default = "default_api_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Threads that read the store for the API (the API never uses more).
    #[serde(default = "default_api_read_threads")]
    pub read_threads: usize,
    /// Store reads that may wait for one of those threads; beyond, 503 `busy`.
    #[serde(default = "default_api_read_queue")]
    pub read_queue: usize,
    /// Most bytes of a reading list's answer: the list stops before it
    /// (`truncated: true`, `next_from` to continue).
    #[serde(default = "default_api_max_response_bytes")]
    pub max_response_bytes: usize,
    /// Host names (without port) accepted in the `Host` header besides
    /// `localhost`, `127.0.0.1`, `[::1]` and the bound address; `"*"`
    /// accepts any (and gives up the DNS-rebinding protection).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Serve the API on a non-loopback `listen.api`. The API has no
    /// authentication: without this, such an address is refused at start.
    #[serde(default)]
    pub allow_non_loopback: bool,
}

fn default_api_max_connections() -> usize {
    1024
}
fn default_api_max_in_flight() -> usize {
    64
}
fn default_api_header_timeout_ms() -> u64 {
    10_000
}
fn default_api_request_timeout_ms() -> u64 {
    30_000
}
fn default_api_read_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get() / 2)
        .unwrap_or(1)
        .max(1)
}
fn default_api_read_queue() -> usize {
    64
}
fn default_api_max_response_bytes() -> usize {
    1024 * 1024
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            max_connections: default_api_max_connections(),
            max_in_flight: default_api_max_in_flight(),
            header_timeout_ms: default_api_header_timeout_ms(),
            request_timeout_ms: default_api_request_timeout_ms(),
            read_threads: default_api_read_threads(),
            read_queue: default_api_read_queue(),
            max_response_bytes: default_api_max_response_bytes(),
            allowed_hosts: Vec::new(),
            allow_non_loopback: false,
        }
    }
}

impl ApiSettings {
    /// Checks every value is in its range; the message names the key.
    pub fn check(&self) -> Result<(), String> {
        fn range<T: PartialOrd + std::fmt::Display>(
            key: &str,
            v: T,
            lo: T,
            hi: T,
            hint: &str,
        ) -> Result<(), String> {
            if v < lo || v > hi {
                return Err(format!(
                    "api.{key} = {v} is out of range: it must be between {lo} and {hi} ({hint})"
                ));
            }
            Ok(())
        }
        range(
            "max_connections",
            self.max_connections,
            1,
            1_000_000,
            "open HTTP connections; keep it below the process's file-descriptor limit",
        )?;
        range(
            "max_in_flight",
            self.max_in_flight,
            1,
            100_000,
            "requests handled at once",
        )?;
        range(
            "header_timeout_ms",
            self.header_timeout_ms,
            100,
            3_600_000,
            "ms to receive a request head",
        )?;
        range(
            "request_timeout_ms",
            self.request_timeout_ms,
            100,
            3_600_000,
            "ms to answer a request",
        )?;
        range(
            "read_threads",
            self.read_threads,
            1,
            1024,
            "threads reading the store for the API",
        )?;
        range(
            "read_queue",
            self.read_queue,
            0,
            1_000_000,
            "store reads waiting for a thread",
        )?;
        range(
            "max_response_bytes",
            self.max_response_bytes,
            4096,
            1 << 30,
            "bytes of a reading list's answer",
        )?;
        for h in &self.allowed_hosts {
            let ok = h == "*"
                || (!h.is_empty()
                    && h.len() <= 253
                    && h.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
                    }));
            if !ok {
                return Err(format!(
                    "api.allowed_hosts: {h:?} is not a host name (letters, digits, '.', '-', an IPv6 address in brackets, or \"*\")"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("gw.toml");
        std::fs::write(
            &p,
            "data_dir = \"d\"\nkey_file = \"k\"\ngenesis_file = \"g\"\n[batch]\nmax_txs = 5\n",
        )
        .unwrap();
        let c = GatewayConfig::load(&p).unwrap();
        assert_eq!(c.data_dir, dir.path().join("d"));
        assert_eq!(c.batch.max_txs, 5);
        assert_eq!(c.batch.timeout_ms, 20);
        assert_eq!(c.listen.api.as_deref(), Some("127.0.0.1:7480"));
        std::fs::write(
            &p,
            "data_dir = \"d\"\nkey_file = \"k\"\ngenesis_file = \"g\"\nbogus = 1\n",
        )
        .unwrap();
        let e = GatewayConfig::load(&p).unwrap_err();
        assert!(format!("{e:#}").contains("bogus"), "{e:#}");
        let round: GatewayConfig = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(round.batch.max_txs, 5);
    }
}
