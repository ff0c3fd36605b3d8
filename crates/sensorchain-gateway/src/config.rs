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
//! tls_cert = "api.crt"         # the API over HTTPS (PEM; with tls_key)
//! tls_key = "api.key"
//! allow_plaintext = false      # a non-loopback api without TLS is refused unless true
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
//!
//! [cluster]                    # optional: without it, a cluster of one (config/cluster.rs)
//! node_id = 1
//! listen = "0.0.0.0:7500"
//! [[cluster.peers]]
//! id = 2
//! addr = "10.0.0.12:7500"
//! key = "9f0c…"                # 64 hex digits
//! ```
//!
//! Every value is checked when the file is loaded, before anything is
//! created ([`GatewayConfig::check`]: the ranges are [`BATCH_RANGES`],
//! [`LIMIT_RANGES`] and [`BAUD_RANGE`]); every problem is reported at once,
//! naming the file, the key, the value and what is accepted
//! ([`ConfigError`]). A section with its own check adds it with
//! [`Problems::section`].

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

mod cluster;
pub use cluster::{CLUSTER_RANGES, ClusterSection, MAX_MEMBERS, Peer};

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
    /// The cluster this gateway is a member of (`[cluster]`; none: a
    /// cluster of one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterSection>,
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
    /// The API's TLS certificate chain (PEM); with `tls_key`, the API is
    /// served over HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// The API's TLS private key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Serve the API without TLS on a non-loopback address anyway.
    #[serde(default)]
    pub allow_plaintext: bool,
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
            tls_cert: None,
            tls_key: None,
            allow_plaintext: false,
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
            cluster: None,
        }
    }

    /// Reads a TOML file; relative paths are taken relative to its
    /// directory. Every value is checked ([`check`](Self::check)) before
    /// anything else happens: an error names the file, each bad key, its
    /// value and the accepted range.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let mut cfg: GatewayConfig =
            toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let tls = [cfg.listen.tls_cert.as_mut(), cfg.listen.tls_key.as_mut()];
        for p in [&mut cfg.data_dir, &mut cfg.key_file, &mut cfg.genesis_file]
            .into_iter()
            .chain(tls.into_iter().flatten())
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        cfg.check(path)?;
        Ok(cfg)
    }

    /// Checks every value without side effects (nothing is read but the
    /// configuration itself): each numeric key of `[batch]` and `[limits]`
    /// against its range ([`BATCH_RANGES`], [`LIMIT_RANGES`]), the relations
    /// between keys (`idle_timeout_ms` ≥ `handshake_timeout_ms`, `linger_ms`
    /// ≤ `timeout_ms`), the listening addresses (`IP:port`) and the serial
    /// ports (a path, a baud rate in [`BAUD_RANGE`], no port twice).
    /// Collects every problem; `file` names the configuration in the error.
    pub fn check(&self, file: &Path) -> Result<(), ConfigError> {
        let mut p = Problems::default();
        for (key, path) in [
            ("data_dir", &self.data_dir),
            ("key_file", &self.key_file),
            ("genesis_file", &self.genesis_file),
        ] {
            if path.as_os_str().is_empty() {
                p.push(key, "\"\"", "a path is required");
            }
        }
        let b = &self.batch;
        let l = &self.limits;
        for (r, v) in BATCH_RANGES
            .iter()
            .zip([b.max_txs as u64, b.timeout_ms, b.linger_ms])
        {
            r.check(&mut p, v);
        }
        let limits = [
            l.max_sessions as u64,
            l.max_half_open as u64,
            l.handshake_timeout_ms,
            l.idle_timeout_ms,
            l.max_pending as u64,
            l.snapshot_every,
        ];
        for (r, v) in LIMIT_RANGES.iter().zip(limits) {
            r.check(&mut p, v);
        }
        // relations only between values that are each in range
        let n = p.0.len();
        let bad = |key: &str, p: &Problems| p.0[..n].iter().any(|x| x.key == key);
        if b.linger_ms > b.timeout_ms && !bad("batch.timeout_ms", &p) && !bad("batch.linger_ms", &p)
        {
            p.push(
                "batch.linger_ms",
                b.linger_ms,
                format!(
                    "must not exceed batch.timeout_ms ({}): a block is cut at timeout_ms at the latest",
                    b.timeout_ms
                ),
            );
        }
        if l.idle_timeout_ms < l.handshake_timeout_ms
            && !bad("limits.handshake_timeout_ms", &p)
            && !bad("limits.idle_timeout_ms", &p)
        {
            p.push(
                "limits.idle_timeout_ms",
                l.idle_timeout_ms,
                format!(
                    "must be at least limits.handshake_timeout_ms ({}): a session may not be closed as idle sooner than a handshake may take",
                    l.handshake_timeout_ms
                ),
            );
        }
        let tcp = check_addr(&mut p, "listen.tcp", self.listen.tcp.as_deref(), 7400);
        let api = check_addr(&mut p, "listen.api", self.listen.api.as_deref(), 7480);
        if let (Some(t), Some(a)) = (tcp, api)
            && t == a
            && t.port() != 0
        {
            p.push(
                "listen.api",
                format!("{a:?}", a = a.to_string()),
                "is also listen.tcp: give the API and the sensor links different ports",
            );
        }
        for (i, s) in self.listen.serial.iter().enumerate() {
            let key = format!("listen.serial[{i}]");
            if s.path.trim().is_empty() {
                p.push(
                    format!("{key}.path"),
                    "\"\"",
                    "a device path is required, e.g. \"/dev/ttyUSB0\"",
                );
            } else if self.listen.serial[..i].iter().any(|o| o.path == s.path) {
                p.push(
                    format!("{key}.path"),
                    format!("{:?}", s.path),
                    "the same port is listed twice",
                );
            }
            BAUD_RANGE.check_key(&mut p, &format!("{key}.baud"), u64::from(s.baud));
        }
        p.section("api", self.api.check());
        if let Some(c) = &self.cluster {
            c.check(&mut p);
        }
        if self.listen.tls_cert.is_some() != self.listen.tls_key.is_some() {
            p.push(
                "listen.tls_cert",
                "",
                "listen.tls_cert and listen.tls_key go together: give both (PEM files) or neither",
            );
        }
        if let Some(a) = api
            && !a.ip().is_loopback()
            && self.listen.tls_cert.is_none()
            && !(self.listen.allow_plaintext || self.api.allow_non_loopback)
        {
            p.push(
                "listen.api",
                a,
                "not a loopback address and no TLS: session tokens and readings would cross the network in clear; set listen.tls_cert and listen.tls_key, keep it on 127.0.0.1, or set allow_plaintext = true in [listen]",
            );
        }
        p.into_result(file)
    }

    /// The configuration as TOML text.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

/// The accepted range of one numeric key, with a hint for the operator.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    /// The key, as written in the file (`section.key`).
    pub key: &'static str,
    /// The least accepted value.
    pub min: u64,
    /// The greatest accepted value.
    pub max: u64,
    /// The unit of the value (empty for a count).
    pub unit: &'static str,
    /// What the value means and a usual value.
    pub hint: &'static str,
}

impl Range {
    fn check(&self, p: &mut Problems, v: u64) {
        self.check_key(p, self.key, v);
    }

    fn check_key(&self, p: &mut Problems, key: &str, v: u64) {
        if v < self.min || v > self.max {
            p.push(
                key,
                v,
                format!(
                    "out of range {}..={}{}: {}",
                    self.min, self.max, self.unit, self.hint
                ),
            );
        }
    }
}

/// The ranges of `[batch]`: `max_txs`, `timeout_ms`, `linger_ms` (in this
/// order). `max_txs` is also bounded by the chain's `max_block_txs`
/// parameter (checked against the genesis block at start).
pub const BATCH_RANGES: [Range; 3] = [
    Range {
        key: "batch.max_txs",
        min: 1,
        max: 1_000_000,
        unit: "",
        hint: "most transactions per block (default 2000; at most the chain's max_block_txs)",
    },
    Range {
        key: "batch.timeout_ms",
        min: 1,
        max: 60_000,
        unit: " ms",
        hint: "longest wait for a block while the store is busy (default 20)",
    },
    Range {
        key: "batch.linger_ms",
        min: 0,
        max: 60_000,
        unit: " ms",
        hint: "shortest wait before a block is cut (default 0: at once)",
    },
];

/// The ranges of `[limits]`: `max_sessions`, `max_half_open`,
/// `handshake_timeout_ms`, `idle_timeout_ms`, `max_pending`,
/// `snapshot_every` (in this order).
pub const LIMIT_RANGES: [Range; 6] = [
    Range {
        key: "limits.max_sessions",
        min: 1,
        max: 1_000_000,
        unit: "",
        hint: "most concurrent sensor sessions (default 4096)",
    },
    Range {
        key: "limits.max_half_open",
        min: 1,
        max: crate::net::HALF_OPEN_CAPACITY as u64,
        unit: "",
        hint: "most handshakes in progress at once (default 256)",
    },
    Range {
        key: "limits.handshake_timeout_ms",
        min: 100,
        max: 600_000,
        unit: " ms",
        hint: "a handshake must finish in this time; it bounds what a slow or silent peer can hold (default 5000)",
    },
    Range {
        key: "limits.idle_timeout_ms",
        min: 100,
        max: 86_400_000,
        unit: " ms",
        hint: "a session with no frame for this long is closed (default 120000)",
    },
    Range {
        key: "limits.max_pending",
        min: 1,
        max: 10_000_000,
        unit: "",
        hint: "most readings waiting for a block before the gateway answers busy (default 100000)",
    },
    Range {
        key: "limits.snapshot_every",
        min: 1,
        max: 1_000_000,
        unit: "",
        hint: "blocks between state snapshots (default 64)",
    },
];

/// The accepted baud rates of a serial port (`listen.serial[i].baud`).
pub const BAUD_RANGE: Range = Range {
    key: "listen.serial.baud",
    min: 50,
    max: 4_000_000,
    unit: " baud",
    hint: "a rate the port supports, e.g. 9600, 115200 (default), 230400, 460800, 921600",
};

/// Checks a listening address: `IP:port`. Returns it if it parses.
fn check_addr(
    p: &mut Problems,
    key: &str,
    value: Option<&str>,
    usual_port: u16,
) -> Option<SocketAddr> {
    let v = value?;
    match v.trim().parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            p.push(
                key,
                format!("{v:?}"),
                format!(
                    "not an address: write an IP address and a port, e.g. \"127.0.0.1:{usual_port}\" or \"[::1]:{usual_port}\" (omit the key to disable it)"
                ),
            );
            None
        }
    }
}

/// One bad value of a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The key, as written in the file (`limits.max_pending`).
    pub key: String,
    /// The value found, as written.
    pub value: String,
    /// What is accepted, and why.
    pub hint: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}: {}", self.key, self.hint)
        } else {
            write!(f, "{} = {}: {}", self.key, self.value, self.hint)
        }
    }
}

/// Every bad value of one configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The configuration file.
    pub file: PathBuf,
    /// The problems, in the order of the file's sections.
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "{}: {n} invalid setting{}",
            self.file.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for pr in &self.problems {
            write!(f, "\n  {pr}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Collects the problems of a configuration.
#[derive(Debug, Default)]
pub struct Problems(Vec<ConfigProblem>);

impl Problems {
    /// Records a bad value of `key`.
    pub fn push(
        &mut self,
        key: impl Into<String>,
        value: impl fmt::Display,
        hint: impl Into<String>,
    ) {
        self.0.push(ConfigProblem {
            key: key.into(),
            value: value.to_string(),
            hint: hint.into(),
        });
    }

    /// Records the outcome of a section's own check (e.g. `[api]`'s): an
    /// `Err(message)` becomes a problem of `section`.
    pub fn section(&mut self, section: &str, r: Result<(), String>) {
        if let Err(hint) = r {
            self.push(section, "", hint);
        }
    }

    /// `Ok` if nothing was recorded, else the [`ConfigError`] of `file`.
    pub fn into_result(self, file: &Path) -> Result<(), ConfigError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                file: file.to_path_buf(),
                problems: self.0,
            })
        }
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
/// allow_non_loopback = false   # older name of listen.allow_plaintext
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
    /// The older name of `listen.allow_plaintext` (from before the API had
    /// logins and TLS): serve the API without TLS on a non-loopback
    /// `listen.api`.
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

    fn problems(extra: &str) -> Vec<ConfigProblem> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("gw.toml");
        std::fs::write(
            &p,
            format!("data_dir = \"d\"\nkey_file = \"k\"\ngenesis_file = \"g\"\n{extra}"),
        )
        .unwrap();
        let cfg: GatewayConfig = toml::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        match cfg.check(&p) {
            Ok(()) => Vec::new(),
            Err(e) => {
                assert_eq!(e.file, p);
                e.problems
            }
        }
    }

    #[test]
    fn defaults_pass_and_every_range_is_checked() {
        assert!(problems("").is_empty());
        assert!(
            GatewayConfig::new("d".into(), "k".into(), "g".into())
                .check(Path::new("x"))
                .is_ok()
        );
        // each bound, and one past it
        for r in BATCH_RANGES.iter().chain(&LIMIT_RANGES) {
            let (section, key) = r.key.split_once('.').unwrap();
            // keep the relations satisfied while one value moves
            let ctx = match r.key {
                "batch.timeout_ms" => "linger_ms = 0\n",
                "batch.linger_ms" => "timeout_ms = 60000\n",
                "limits.handshake_timeout_ms" => "idle_timeout_ms = 86400000\n",
                "limits.idle_timeout_ms" => "handshake_timeout_ms = 100\n",
                _ => "",
            };
            for (v, ok) in [
                (r.min, true),
                (r.max, true),
                (r.max + 1, false),
                (r.min.wrapping_sub(1), r.min == 0),
            ] {
                if r.min == 0 && v == u64::MAX {
                    continue;
                }
                let got = problems(&format!("[{section}]\n{ctx}{key} = {v}\n"));
                assert_eq!(got.is_empty(), ok, "{} = {v}: {got:?}", r.key);
                if !ok {
                    assert_eq!(got[0].key, r.key);
                    assert_eq!(got[0].value, v.to_string());
                    assert!(got[0].hint.contains("out of range"), "{}", got[0]);
                }
            }
        }
    }

    #[test]
    fn relations_addresses_and_serial_ports() {
        let p = problems("[limits]\nhandshake_timeout_ms = 5000\nidle_timeout_ms = 4000\n");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].key, "limits.idle_timeout_ms");
        // no relation noise about a value that is out of range itself
        let p = problems("[limits]\nhandshake_timeout_ms = 18446744073709551615\n");
        assert_eq!(p.len(), 1, "{p:?}");
        let p = problems("[batch]\ntimeout_ms = 10\nlinger_ms = 11\n");
        assert_eq!(p[0].key, "batch.linger_ms");
        let p = problems("[listen]\ntcp = \"0.0.0.0:7400\"\napi = \"localhost:7480\"\n");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].key, "listen.api");
        assert_eq!(p[0].value, "\"localhost:7480\"");
        let p = problems("[listen]\ntcp = \"127.0.0.1:7400\"\napi = \"127.0.0.1:7400\"\n");
        assert_eq!(p[0].key, "listen.api");
        assert!(problems("[listen]\ntcp = \"127.0.0.1:0\"\napi = \"127.0.0.1:0\"\n").is_empty());
        let p = problems(
            "[listen]\nserial = [{ path = \"/dev/a\", baud = 0 }, { path = \"/dev/a\" }, { path = \"\" }]\n",
        );
        let keys: Vec<&str> = p.iter().map(|x| x.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "listen.serial[0].baud",
                "listen.serial[1].path",
                "listen.serial[2].path"
            ]
        );
        let mut s = Problems::default();
        s.section("api", Err("bad".into()));
        s.section("other", Ok(()));
        let e = s.into_result(Path::new("f.toml")).unwrap_err();
        assert_eq!(e.to_string(), "f.toml: 1 invalid setting\n  api: bad");
    }
}
