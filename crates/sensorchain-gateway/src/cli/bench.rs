//! `sensorchain bench`: end-to-end measurements against the physical limit
//! of the machine, the raw strict Ed25519 verification rate of all cores
//! (threads × `VerifyingKey::verify` in a tight loop), measured in the same
//! process and run as the figure it is compared with.
//!
//! * `ingest`: one in-process gateway (node, redb store, TCP links on
//!   loopback, as `demo` runs it) and many simulated sensors with readings
//!   signed *before* the measurement, each keeping a window of submissions
//!   in flight: readings verified, ordered and durably committed per second
//!   (counted from the store's head record), next to the raw rate.
//! * `latency`: paced sensors at several fractions of the measured maximum;
//!   p50/p99/max from a reading's send to its `Ack` (durable commit).
//! * `audit`: builds a large chain on disk (or reuses `--data-dir`) and runs
//!   the offline audit over it: readings/s against the raw rate.
//! * `scale`: ingest in segments as the chain grows; the rate of each
//!   segment, the process's resident memory (VmRSS), the store file and the
//!   µs of CPU per reading by thread group at each checkpoint.
//! * `cluster`: five gateways as processes on this machine
//!   (`bench_cluster.rs`): finalized readings/s against cores × raw ÷ 5,
//!   send-to-final latency at several loads, CPU by thread group of each.
//!
//! Every subcommand prints one JSON object with `--json`. No figure here is
//! asserted anywhere: they are measurements, recorded in docs/PERFORMANCE.md.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use sensorchain_core::block::Block;
use sensorchain_core::chain::{Chain, build_block};
use sensorchain_core::hash::ChainId;
use sensorchain_core::identity::{Keypair, VerifyingKey};
use sensorchain_core::link::{DeviceMsg, GatewayMsg};
use sensorchain_core::permissions::Role;
use sensorchain_core::state::{SigCheck, WorldState};
use sensorchain_core::tx::{GenesisConfig, Member, Params, Transaction, TxBody, TxKind};
use serde_json::{Value, json};

use sensorchain_gateway::app::{self, AppConfig, Running};
use sensorchain_gateway::net::NetConfig;
use sensorchain_gateway::net::client::Client;
use sensorchain_gateway::node::{Node, NodeConfig, now_ms};
use sensorchain_gateway::procfs::{proc_number, stat_cpu, threads_cpu};
use sensorchain_gateway::sim::SimSensor;
use sensorchain_gateway::store::Store;

use super::dir_or_temp;

/// `sensorchain bench`
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to measure.
    #[command(subcommand)]
    pub what: BenchCommand,
}

/// The measurements.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Gateway ingest (verify, order, commit durably) vs the raw strict verification rate of all cores.
    Ingest(IngestArgs),
    /// p50/p99 send-to-acknowledgement latency at several offered loads.
    Latency(LatencyArgs),
    /// Offline audit speed of a large stored chain vs the raw verification rate.
    Audit(BenchAuditArgs),
    /// Ingest rate and resident memory as the chain grows.
    Scale(ScaleArgs),
    /// Five gateways as processes on this machine: finalized readings/s, send-to-final latency at several loads, CPU by thread group of each gateway.
    Cluster(super::bench_cluster::ClusterBenchArgs),
}

/// Options shared by the gateway measurements.
#[derive(Debug, Clone, Args)]
pub struct GatewayOpts {
    /// Simulated sensors (one TCP session each).
    #[arg(long, default_value_t = 16)]
    pub sensors: usize,
    /// Submissions each sensor keeps in flight (at most the gateway's 256).
    #[arg(long, default_value_t = 128)]
    pub window: usize,
    /// Most transactions per block.
    #[arg(long, default_value_t = 2000)]
    pub batch_max_txs: usize,
    /// Longest wait from the first pending transaction to the cut, ms.
    #[arg(long, default_value_t = 20)]
    pub batch_timeout_ms: u64,
    /// Shortest wait from the first pending transaction to the cut, ms.
    #[arg(long, default_value_t = 0)]
    pub batch_linger_ms: u64,
    /// Keep the chain in this directory (default: a temporary one).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `sensorchain bench ingest`
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Gateway and sensors.
    #[command(flatten)]
    pub gw: GatewayOpts,
    /// Measured seconds (after one second of warm-up).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
}

/// `sensorchain bench latency`
#[derive(Debug, Args)]
pub struct LatencyArgs {
    /// Gateway and sensors.
    #[command(flatten)]
    pub gw: GatewayOpts,
    /// Seconds per load level.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Offered loads as fractions of the maximum ingest rate.
    #[arg(long, value_delimiter = ',', default_value = "0.1,0.25,0.5,0.75")]
    pub loads: Vec<f64>,
    /// The maximum ingest rate (readings/s); measured first if not given.
    #[arg(long)]
    pub max_rate: Option<f64>,
}

/// `sensorchain bench audit`
#[derive(Debug, Args)]
pub struct BenchAuditArgs {
    /// Readings in the chain to build (ignored when --data-dir holds a chain).
    #[arg(long, default_value_t = 200_000)]
    pub readings: u64,
    /// Readings per block.
    #[arg(long, default_value_t = 2000)]
    pub block_txs: usize,
    /// Devices signing them.
    #[arg(long, default_value_t = 16)]
    pub devices: usize,
    /// Audit the chain in this directory (built there first if empty).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `sensorchain bench scale`
#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// Gateway and sensors.
    #[command(flatten)]
    pub gw: GatewayOpts,
    /// Chain sizes (readings) at which to report.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    pub checkpoints: Vec<u64>,
    /// Also go to 10 million readings (long: about 10M / ingest rate seconds, and ~4 GB of disk).
    #[arg(long)]
    pub ten_million: bool,
    /// Readings signed ahead per segment (bounded memory on the sensor side).
    #[arg(long, default_value_t = 100_000)]
    pub segment: u64,
}

/// Runs `sensorchain bench …`.
pub fn bench(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let (json, v) = match &args.what {
        // its gateways are processes of their own: no gateway runtime here
        BenchCommand::Cluster(a) => super::bench_cluster::cluster(a)?,
        BenchCommand::Audit(a) => audit(a)?,
        BenchCommand::Ingest(_) | BenchCommand::Latency(_) | BenchCommand::Scale(_) => {
            in_process(&args.what)?
        }
    };
    if json {
        println!("{v}");
    } else {
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// The measurements of a gateway in this process.
fn in_process(what: &BenchCommand) -> anyhow::Result<(bool, Value)> {
    // The gateway and the simulated sensors run on separate runtimes (as
    // they would in separate processes), so the CPU each uses can be told
    // apart: threads named `sc-sensor` are the sensors', the rest the
    // gateway's.
    let gw = tokio::runtime::Builder::new_multi_thread()
        .thread_name("sc-gateway")
        .enable_all()
        .build()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name(SENSOR_THREAD)
        .enable_all()
        .build()?;
    let h = gw.handle().clone();
    let out = match what {
        BenchCommand::Ingest(a) => rt.block_on(ingest(a, h)),
        BenchCommand::Latency(a) => rt.block_on(latency(a, h)),
        BenchCommand::Scale(a) => rt.block_on(scale(a, h)),
        BenchCommand::Audit(a) => audit(a),
        BenchCommand::Cluster(a) => super::bench_cluster::cluster(a),
    };
    drop(rt);
    drop(gw);
    out
}

// ---------------------------------------------------------------------------
// The physical limit.

/// Cores available to this process.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Strict verifications per second of `threads` threads, each verifying a
/// signed reading (its exact signing input, as ingest does) with
/// `VerifyingKey::verify` in a tight loop for `dur`.
pub fn raw_verify_rate(threads: usize, dur: Duration) -> f64 {
    let chain = ChainId([0x5a; 32]); // any id: only the signature is measured
    let kp = Keypair::from_seed([42; 32]);
    let mut sim = SimSensor::new(kp.clone(), chain, 1, 1);
    let enc = match sim.next_tx(now_ms()) {
        Ok((_, t)) => t,
        Err(_) => return 0.0,
    };
    let Ok(tx) = Transaction::decode(&enc) else {
        return 0.0;
    };
    let Ok(vk) = VerifyingKey::from_public(&kp.public()) else {
        return 0.0;
    };
    let start = Instant::now();
    let total = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                let mut n = 0u64;
                while start.elapsed() < dur {
                    for _ in 0..64 {
                        let ok =
                            Transaction::verify_encoded(&enc, &chain, &vk, &tx.signature).is_ok();
                        n += u64::from(std::hint::black_box(ok));
                    }
                }
                total.fetch_add(n, Ordering::Relaxed);
            });
        }
    });
    total.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// The raw rate of all cores, measured over `dur`.
pub(super) fn raw_all_cores(dur: Duration) -> f64 {
    raw_verify_rate(cores(), dur)
}

/// Resident memory of this process, bytes (Linux `/proc/self/status`).
pub fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Name of the simulated sensors' runtime threads.
pub(super) const SENSOR_THREAD: &str = "sc-sensor";

/// Thread groups whose CPU time the gateway benchmarks report (by thread
/// name prefix; Linux truncates names to 15 bytes).
const THREAD_GROUPS: [(&str, &str); 6] = [
    (SENSOR_THREAD, "sensors"),
    ("sc-gateway", "links"),
    (sensorchain_gateway::node::VERIFY_THREAD, "verification"),
    ("block-producer", "proposer"),
    // Raft's runtime: its workers (the log, replication) and its blocking
    // threads (apply: validation and the chain store's commit).
    (sensorchain_gateway::node::RAFT_THREAD, "raft+apply"),
    (sensorchain_gateway::node::FOLLOW_THREAD, "follower"),
];

/// CPU seconds (user + system) of this process's threads so far, by
/// [`THREAD_GROUPS`] (the last entry: every other thread). Threads that
/// have exited are not counted, so take both readings while the same
/// threads run.
fn thread_cpu_seconds() -> [f64; THREAD_GROUPS.len() + 1] {
    let mut out = [0.0; THREAD_GROUPS.len() + 1];
    for t in threads_cpu("self") {
        let (comm, secs) = (t.name, t.seconds);
        let g = THREAD_GROUPS
            .iter()
            .position(|(prefix, _)| comm.starts_with(prefix))
            .unwrap_or(THREAD_GROUPS.len());
        out[g] += secs;
    }
    out
}

/// CPU seconds (user + system) this process has used.
fn cpu_seconds() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    stat_cpu(&s).map_or(0.0, |(_, secs)| secs)
}

/// The machine: CPU model, cores, memory.
pub(super) fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let mem = proc_number("/proc/meminfo", "MemTotal:", 1).unwrap_or(0);
    json!({ "cpu": model, "cores": cores(), "memory_gib": (mem as f64 / 1048576.0 * 10.0).round() / 10.0 })
}

// ---------------------------------------------------------------------------
// An in-process gateway with registered sensors.

struct Net {
    /// The gateway (before `_tmp`: it stops before its directory goes).
    running: Running,
    _tmp: Option<tempfile::TempDir>,
    addr: std::net::SocketAddr,
    chain: ChainId,
    gateway: Keypair,
    sensors: Vec<Keypair>,
}

fn node_config(o: &GatewayOpts) -> NodeConfig {
    NodeConfig {
        batch_max_txs: o.batch_max_txs.max(1),
        batch_timeout: Duration::from_millis(o.batch_timeout_ms),
        batch_linger: Duration::from_millis(o.batch_linger_ms),
        ..NodeConfig::default()
    }
}

fn data_dir(d: &Option<PathBuf>) -> anyhow::Result<(Option<tempfile::TempDir>, PathBuf)> {
    let (tmp, dir) = dir_or_temp(d.as_ref(), "sensorchain-bench-")?;
    anyhow::ensure!(
        tmp.is_some() || std::fs::read_dir(&dir)?.next().is_none(),
        "{} is not empty (the benchmark creates a new chain)",
        dir.display()
    );
    Ok((tmp, dir))
}

/// Starts a gateway on a new chain in `dir` and registers `n` sensors with
/// signed admin transactions.
/// Starts the gateway on the runtime `gw` (its links' tasks run there).
async fn start_net(o: &GatewayOpts, gw: &tokio::runtime::Handle) -> anyhow::Result<Net> {
    let o = o.clone();
    gw.spawn(async move { start_net_here(&o).await }).await?
}

async fn start_net_here(o: &GatewayOpts) -> anyhow::Result<Net> {
    let (tmp, dir) = data_dir(&o.data_dir)?;
    let (admin, gateway, sensors) = {
        let mut rng = rand::rng();
        let admin = Keypair::generate(&mut rng);
        let gateway = Keypair::generate(&mut rng);
        let sensors: Vec<Keypair> = (0..o.sensors.max(1))
            .map(|_| Keypair::generate(&mut rng))
            .collect();
        (admin, gateway, sensors)
    };
    let members = [
        Member::of_role(admin.public(), Role::Admin),
        Member::of_role(gateway.public(), Role::Gateway),
    ];
    let cfg =
        GenesisConfig::new("sensorchain-bench", Params::default(), &members).context("genesis")?;
    let genesis =
        Chain::genesis_block(&admin, cfg, now_ms()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let chain = genesis.header.chain_id;
    let mut app_cfg = AppConfig::new(gateway.clone(), genesis, &dir);
    app_cfg.node = node_config(o);
    app_cfg.net = NetConfig {
        max_inflight: 1024,
        ..NetConfig::default()
    };
    app_cfg.tcp = Some("127.0.0.1:0".into());
    app_cfg.shutdown_grace = Duration::from_secs(5);
    let running = app::start(app_cfg).await?;
    let node = running.node();
    let mut tickets = Vec::new();
    for (i, s) in sensors.iter().enumerate() {
        let body = TxBody {
            signer: admin.public(),
            sequence: i as u64 + 1,
            timestamp_ms: now_ms(),
            kind: TxKind::Grant {
                target: s.public(),
                permissions: Role::Device.default_permissions(),
            },
        };
        let tx = Transaction::sign(body, &chain, &admin).map_err(|e| anyhow::anyhow!("{e}"))?;
        tickets.push(
            node.enqueue(tx.to_vec(), None)
                .map_err(|e| anyhow::anyhow!("registration refused: {e}"))?,
        );
    }
    for t in tickets {
        t.wait()
            .await
            .map_err(|e| anyhow::anyhow!("registration refused: {e}"))?;
    }
    let addr = running
        .link_addr()
        .context("the gateway does not listen for sensors")?;
    Ok(Net {
        running,
        _tmp: tmp,
        addr,
        chain,
        gateway,
        sensors,
    })
}

impl Net {
    /// Readings committed durably so far (the store's head record).
    fn committed(&self) -> u64 {
        self.node()
            .store()
            .head()
            .ok()
            .flatten()
            .map(|h| h.reading_count_total)
            .unwrap_or(0)
    }

    fn blocks(&self) -> u64 {
        self.node()
            .store()
            .head()
            .ok()
            .flatten()
            .map(|h| h.height + 1)
            .unwrap_or(0)
    }

    /// The node.
    fn node(&self) -> &Node {
        self.running.node()
    }

    /// Closes the sensors' links, then stops the gateway.
    async fn stop_with(self, clients: Vec<Client>) {
        for c in clients {
            c.close().await;
        }
        self.stop().await;
    }

    /// Stops the gateway, joining every thread and task.
    async fn stop(self) {
        let stopped = self.running.shutdown().await;
        for what in &stopped.not_stopped {
            tracing::warn!("did not stop in time: {what}");
        }
    }
}

/// Signs `per_sensor` readings for each sensor, sequences from `first`, on
/// all cores (before any measurement).
fn presign(net: &Net, per_sensor: u64, first: u64) -> Vec<Vec<Vec<u8>>> {
    let chain = net.chain;
    let n = net.sensors.len();
    let threads = cores().min(n).max(1);
    let mut out: Vec<Vec<Vec<u8>>> = vec![Vec::new(); n];
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for t in 0..threads {
            let keys: Vec<(usize, Keypair)> = (t..n)
                .step_by(threads)
                .map(|i| (i, net.sensors[i].clone()))
                .collect();
            handles.push(s.spawn(move || {
                keys.into_iter()
                    .map(|(i, k)| {
                        let mut sim = SimSensor::new(k, chain, i as u64 + 1, first);
                        let now = now_ms();
                        let txs: Vec<Vec<u8>> = (0..per_sensor)
                            .filter_map(|_| sim.next_tx(now).ok().map(|(_, t)| t))
                            .collect();
                        (i, txs)
                    })
                    .collect::<Vec<_>>()
            }));
        }
        for h in handles {
            if let Ok(v) = h.join() {
                for (i, txs) in v {
                    out[i] = txs;
                }
            }
        }
    });
    out
}

/// What one sensor saw.
#[derive(Default)]
struct SensorStats {
    acked: u64,
    rejected: u64,
    busy: u64,
    latencies_us: Vec<u32>,
}

/// Drives one sensor session: submits `txs` (sequences `first..`) keeping at
/// most `window` in flight, paced at `rate` readings/s if given, until the
/// readings run out or `stop` is set; then waits for what is in flight.
/// Latency: from writing a reading's frame to reading its answer.
#[allow(clippy::too_many_arguments)]
async fn drive(
    client: &mut Client,
    txs: Vec<Vec<u8>>,
    first: u64,
    window: usize,
    rate: Option<f64>,
    stop: Arc<AtomicBool>,
    record_from: Instant,
) -> anyhow::Result<SensorStats> {
    let window = window.max(1);
    let cap = window * 2;
    let mut sent_at: Vec<Option<Instant>> = vec![None; cap];
    let mut st = SensorStats::default();
    let (mut next, mut inflight) = (0usize, 0usize);
    let t0 = Instant::now();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        if (stopping || next >= txs.len()) && inflight == 0 {
            break;
        }
        let allowed = match rate {
            Some(r) => ((t0.elapsed().as_secs_f64() * r) as usize).min(txs.len()),
            None => txs.len(),
        };
        let mut wire = Vec::new();
        let now = Instant::now();
        while !stopping && next < allowed && inflight < window {
            wire.extend(client.seal(&DeviceMsg::Submit(&txs[next]))?);
            sent_at[(first as usize + next) % cap] = Some(now);
            next += 1;
            inflight += 1;
        }
        if !wire.is_empty() {
            client.send_wire(&wire).await?;
        }
        let msg = if rate.is_some() || inflight == 0 {
            // wake up at least every millisecond to send what is due
            match tokio::time::timeout(Duration::from_millis(1), client.recv()).await {
                Ok(m) => m?,
                Err(_) => continue,
            }
        } else {
            client.recv().await?
        };
        let (seq, ok) = match msg {
            GatewayMsg::Ack { sequence, .. } => (sequence, Some(true)),
            GatewayMsg::Reject { sequence, .. } => (sequence, Some(false)),
            GatewayMsg::Busy { sequence } => (sequence, None),
            GatewayMsg::Pong(_) => continue,
        };
        inflight = inflight.saturating_sub(1);
        let sent = sent_at[(seq as usize) % cap].take();
        match ok {
            Some(true) => {
                st.acked += 1;
                if let Some(t) = sent
                    && t >= record_from
                {
                    st.latencies_us
                        .push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                }
            }
            Some(false) => st.rejected += 1,
            None => st.busy += 1,
        }
    }
    Ok(st)
}

/// Connects every sensor (handshakes before the clock starts).
async fn connect_all(net: &Net) -> anyhow::Result<Vec<Client>> {
    let mut clients = Vec::new();
    for s in &net.sensors {
        let c = Client::connect(net.addr, &net.chain, s, &[net.gateway.public()])
            .await
            .map_err(|e| anyhow::anyhow!("sensor connect: {e}"))?;
        clients.push(c);
    }
    Ok(clients)
}

/// Sensors connected to a bench gateway, and the sequence number their next
/// readings take.
struct Sensors {
    clients: Vec<Client>,
    next_seq: u64,
}

impl Sensors {
    /// Every sensor of `net` connected, none of its readings sent yet.
    async fn connect(net: &Net) -> anyhow::Result<Sensors> {
        Ok(Sensors {
            clients: connect_all(net).await?,
            next_seq: 1,
        })
    }

    /// Signs `per` more readings of every sensor, then streams them as
    /// [`stream`] does; the links come back here.
    async fn stream(
        &mut self,
        net: &Net,
        per: u64,
        window: usize,
        rate: Option<f64>,
        warmup: Duration,
        seconds: Duration,
    ) -> anyhow::Result<Run> {
        let feeds = presign(net, per, self.next_seq);
        let clients = std::mem::take(&mut self.clients);
        let first = self.next_seq;
        let mut run = stream(net, clients, feeds, first, window, rate, warmup, seconds).await?;
        self.next_seq += per;
        self.clients = std::mem::take(&mut run.clients);
        Ok(run)
    }
}

struct Run {
    /// Readings committed per second in the measured interval.
    rate: f64,
    committed: u64,
    seconds: f64,
    cpu_utilisation: f64,
    /// Cores' worth of CPU the gateway used over the interval.
    gateway_cores: f64,
    /// Cores' worth of CPU the simulated sensors used over the interval.
    sensor_cores: f64,
    /// Cores' worth of CPU by thread group ([`THREAD_GROUPS`], then "other").
    cores_by_group: Value,
    /// CPU seconds by thread group over the interval (as `cores_by_group`).
    cpu_by_group: [f64; THREAD_GROUPS.len() + 1],
    acked: u64,
    rejected: u64,
    busy: u64,
    latencies_us: Vec<u32>,
    clients: Vec<Client>,
}

/// Streams the given readings through `clients` for `warmup + seconds`
/// (or until they run out), at `rate` readings/s in total if given; the rate
/// is measured over the interval after the warm-up from the store's head.
#[allow(clippy::too_many_arguments)]
async fn stream(
    net: &Net,
    clients: Vec<Client>,
    feeds: Vec<Vec<Vec<u8>>>,
    first: u64,
    window: usize,
    rate: Option<f64>,
    warmup: Duration,
    seconds: Duration,
) -> anyhow::Result<Run> {
    let stop = Arc::new(AtomicBool::new(false));
    let per = rate.map(|r| r / clients.len().max(1) as f64);
    let record_from = Instant::now() + warmup;
    let mut tasks = Vec::new();
    for (mut c, txs) in clients.into_iter().zip(feeds) {
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let r = drive(&mut c, txs, first, window, per, stop, record_from).await;
            (c, r)
        }));
    }
    tokio::time::sleep(warmup).await;
    let (c0, t0, cpu0, th0) = (
        net.committed(),
        Instant::now(),
        cpu_seconds(),
        thread_cpu_seconds(),
    );
    // stop early if every sensor has finished its feed
    let deadline = t0 + seconds;
    while Instant::now() < deadline && tasks.iter().any(|t| !t.is_finished()) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (c1, el, cpu1, th1) = (
        net.committed(),
        t0.elapsed().as_secs_f64(),
        cpu_seconds(),
        thread_cpu_seconds(),
    );
    stop.store(true, Ordering::Relaxed);
    let mut run = Run {
        rate: (c1 - c0) as f64 / el.max(1e-9),
        committed: c1 - c0,
        seconds: el,
        cpu_utilisation: (cpu1 - cpu0) / (el.max(1e-9) * cores() as f64),
        sensor_cores: (th1[0] - th0[0]) / el.max(1e-9),
        gateway_cores: (th1.iter().sum::<f64>() - th1[0] - th0.iter().sum::<f64>() + th0[0])
            / el.max(1e-9),
        cores_by_group: {
            let mut m = serde_json::Map::new();
            let names = THREAD_GROUPS.iter().map(|g| g.1).chain(["other"]);
            for (i, name) in names.enumerate() {
                let c = (th1[i] - th0[i]) / el.max(1e-9);
                m.insert(name.into(), json!((c * 100.0).round() / 100.0));
            }
            Value::Object(m)
        },
        cpu_by_group: std::array::from_fn(|i| th1[i] - th0[i]),
        acked: 0,
        rejected: 0,
        busy: 0,
        latencies_us: Vec::new(),
        clients: Vec::new(),
    };
    for t in tasks {
        let (c, r) = t.await?;
        let s = r?;
        run.acked += s.acked;
        run.rejected += s.rejected;
        run.busy += s.busy;
        run.latencies_us.extend(s.latencies_us);
        run.clients.push(c);
    }
    Ok(run)
}

/// p50, p90, p99 and the maximum of latencies in µs, as ms; and the count.
pub(super) fn percentiles(v: &mut [u32]) -> Value {
    v.sort_unstable();
    let p = |q: f64| {
        v.get(((v.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    json!({ "p50_ms": p(0.5), "p90_ms": p(0.9), "p99_ms": p(0.99), "max_ms": p(1.0), "samples": v.len() })
}

// ---------------------------------------------------------------------------
// ingest

async fn ingest(a: &IngestArgs, gw: tokio::runtime::Handle) -> anyhow::Result<(bool, Value)> {
    let o = &a.gw;
    let raw_before = raw_all_cores(Duration::from_secs(2));
    let raw_one = raw_verify_rate(1, Duration::from_secs(1));
    let net = start_net(o, &gw).await?;
    // enough readings for the whole run at the raw rate (the gateway cannot
    // go faster than that), signed before the clock starts
    let per_sensor = ((raw_before * (a.seconds as f64 + 1.5)) / net.sensors.len() as f64) as u64;
    let feeds = presign(&net, per_sensor.max(1), 1);
    let clients = connect_all(&net).await?;
    let blocks0 = net.blocks();
    let mut run = stream(
        &net,
        clients,
        feeds,
        1,
        o.window,
        None,
        Duration::from_secs(1),
        Duration::from_secs(a.seconds),
    )
    .await?;
    let blocks = net.blocks() - blocks0;
    let raw_after = raw_all_cores(Duration::from_secs(2));
    let raw = (raw_before + raw_after) / 2.0;
    let lat = percentiles(&mut run.latencies_us);
    net.stop_with(std::mem::take(&mut run.clients)).await;
    let ratio = run.rate / raw;
    // Readings per second of gateway CPU against verifications per second
    // of one core: what the gateway would reach if the sensors ran
    // elsewhere and it had every core to itself.
    let per_gw_cpu = (run.rate / run.gateway_cores.max(1e-9)) / (raw / cores() as f64);
    let v = json!({
        "bench": "ingest",
        "sensors": o.sensors,
        "window": o.window,
        "batch_max_txs": o.batch_max_txs,
        "batch_timeout_ms": o.batch_timeout_ms,
        "batch_linger_ms": o.batch_linger_ms,
        "seconds": run.seconds,
        "readings_committed": run.committed,
        "readings_per_second": run.rate.round(),
        "raw_verify_per_second": raw.round(),
        "raw_verify_per_second_before": raw_before.round(),
        "raw_verify_per_second_after": raw_after.round(),
        "raw_verify_per_second_one_core": raw_one.round(),
        "verify_threads": cores(),
        "ratio": (ratio * 1000.0).round() / 1000.0,
        "target_ratio": 0.8,
        "cpu_utilisation": (run.cpu_utilisation * 100.0).round() / 100.0,
        "gateway_cpu_cores": (run.gateway_cores * 100.0).round() / 100.0,
        "sensor_cpu_cores": (run.sensor_cores * 100.0).round() / 100.0,
        "cpu_cores_by_thread": run.cores_by_group,
        "ratio_per_gateway_cpu": (per_gw_cpu * 1000.0).round() / 1000.0,
        "blocks": blocks,
        "acked": run.acked,
        "rejected": run.rejected,
        "busy": run.busy,
        "ack_latency_under_full_load": lat,
        "machine": machine(),
    });
    if !o.json {
        eprintln!(
            "ingest: {:.0} readings/s committed; raw strict verify {:.0}/s on {} cores; ratio {:.3} (target 0.8)",
            run.rate,
            raw,
            cores(),
            ratio
        );
    }
    Ok((o.json, v))
}

// ---------------------------------------------------------------------------
// latency

async fn latency(a: &LatencyArgs, gw: tokio::runtime::Handle) -> anyhow::Result<(bool, Value)> {
    let o = &a.gw;
    let raw = raw_all_cores(Duration::from_secs(2));
    let net = start_net(o, &gw).await?;
    let mut sensors = Sensors::connect(&net).await?;
    let n = net.sensors.len() as u64;
    // the maximum: a short unpaced run unless given
    let max = match a.max_rate {
        Some(m) => m,
        None => {
            let per = ((raw * 4.5) / n as f64) as u64;
            let (warmup, seconds) = (Duration::from_secs(1), Duration::from_secs(3));
            let run = sensors
                .stream(&net, per.max(1), o.window, None, warmup, seconds)
                .await?;
            run.rate
        }
    };
    let mut levels = Vec::new();
    for &load in &a.loads {
        let offered = max * load;
        let per = ((offered * (a.seconds as f64 + 1.5)) / n as f64).ceil() as u64 + 1;
        let (warmup, seconds) = (Duration::from_secs(1), Duration::from_secs(a.seconds));
        let run = sensors
            .stream(&net, per, 1024, Some(offered), warmup, seconds)
            .await?;
        let mut lat = run.latencies_us;
        let p = percentiles(&mut lat);
        if !o.json {
            eprintln!(
                "latency: load {:.0} % ({:.0}/s offered, {:.0}/s committed): p50 {} ms, p99 {} ms",
                load * 100.0,
                offered,
                run.rate,
                p["p50_ms"],
                p["p99_ms"]
            );
        }
        levels.push(json!({
            "load": load,
            "offered_per_second": offered.round(),
            "committed_per_second": run.rate.round(),
            "latency": p,
            "busy": run.busy,
            "rejected": run.rejected,
        }));
    }
    net.stop_with(sensors.clients).await;
    Ok((
        o.json,
        json!({
            "bench": "latency",
            "sensors": o.sensors,
            "batch_max_txs": o.batch_max_txs,
            "batch_timeout_ms": o.batch_timeout_ms,
            "batch_linger_ms": o.batch_linger_ms,
            "max_readings_per_second": max.round(),
            "raw_verify_per_second": raw.round(),
            "levels": levels,
            "target": "p99 <= 50 ms at 50 % load",
            "machine": machine(),
        }),
    ))
}

// ---------------------------------------------------------------------------
// audit

/// Builds a chain of `readings` readings straight into a store (signed on
/// all cores, blocks built and applied without re-verifying what was just
/// signed, one durable commit per block, as a gateway stores them).
fn build_chain(dir: &Path, a: &BenchAuditArgs) -> anyhow::Result<()> {
    let mut rng = rand::rng();
    let admin = Keypair::generate(&mut rng);
    let devices: Vec<Keypair> = (0..a.devices.clamp(1, 15))
        .map(|_| Keypair::generate(&mut rng))
        .collect();
    let mut members = vec![Member {
        key: admin.public(),
        permissions: sensorchain_core::permissions::Permissions::ALL,
        role: Role::Admin,
    }];
    for d in &devices {
        members.push(Member::of_role(d.public(), Role::Device));
    }
    let cfg = GenesisConfig::new("sensorchain-bench-audit", Params::default(), &members)
        .context("genesis")?;
    let genesis =
        Chain::genesis_block(&admin, cfg, now_ms()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let chain = genesis.header.chain_id;
    let store = Store::open(dir)?;
    let mut state = WorldState::new(chain);
    state
        .apply_block(&genesis, None, SigCheck::Verify)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    store.commit_block(
        &genesis,
        &genesis.encoded_txs(),
        None,
        Some(&state.snapshot()),
    )?;
    let per_block = a.block_txs.max(1);
    let mut seqs = vec![1u64; devices.len()];
    let mut sims: Vec<SimSensor> = devices
        .iter()
        .enumerate()
        .map(|(i, d)| SimSensor::new(d.clone(), chain, i as u64 + 1, 1))
        .collect();
    let mut done = 0u64;
    while done < a.readings {
        let n = (a.readings - done).min(per_block as u64) as usize;
        // sign in parallel: sensors split across cores
        let now = now_ms();
        let threads = cores();
        let per_dev = n.div_ceil(devices.len());
        let mut chunks: Vec<Vec<Vec<u8>>> = Vec::new();
        std::thread::scope(|s| {
            let hs: Vec<_> = sims
                .chunks_mut(devices.len().div_ceil(threads))
                .map(|group| {
                    s.spawn(move || {
                        group
                            .iter_mut()
                            .map(|sim| {
                                (0..per_dev)
                                    .filter_map(|_| sim.next_tx(now).ok().map(|(_, t)| t))
                                    .collect::<Vec<_>>()
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for h in hs {
                if let Ok(v) = h.join() {
                    chunks.extend(v);
                }
            }
        });
        for (s, c) in seqs.iter_mut().zip(&chunks) {
            *s += c.len() as u64;
        }
        let txs: Vec<Transaction> = chunks
            .into_iter()
            .flatten()
            .filter_map(|b| Transaction::decode(&b).ok())
            .collect();
        let count = txs.len() as u64;
        let block: Block = build_block(&state, &admin, txs, now_ms(), SigCheck::AlreadyVerified)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let enc = block.encoded_txs();
        state
            .apply_block_encoded(&block, &enc, None, SigCheck::AlreadyVerified)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let snap = block
            .header
            .height
            .is_multiple_of(64)
            .then(|| state.snapshot());
        store.commit_block(&block, &enc, None, snap.as_deref())?;
        done += count;
    }
    Ok(())
}

fn audit(a: &BenchAuditArgs) -> anyhow::Result<(bool, Value)> {
    let (_tmp, dir) = dir_or_temp(a.data_dir.as_ref(), "sensorchain-bench-audit-")?;
    let mut built = None;
    if !dir.join(sensorchain_gateway::store::FILE_NAME).exists() {
        let t = Instant::now();
        build_chain(&dir, a)?;
        built = Some(t.elapsed().as_secs_f64());
    }
    let raw_before = raw_all_cores(Duration::from_secs(2));
    let raw_one = raw_verify_rate(1, Duration::from_secs(1));
    let report = sensorchain_gateway::audit::audit_dir(&dir, false)?;
    let raw_after = raw_all_cores(Duration::from_secs(2));
    let raw = (raw_before + raw_after) / 2.0;
    let rate = report.readings as f64 / report.seconds.max(1e-9);
    if !a.json {
        eprintln!(
            "audit: {} readings in {:.2} s = {:.0} readings/s; raw strict verify {:.0}/s on {} cores; ratio {:.3} (target 0.8)",
            report.readings,
            report.seconds,
            rate,
            raw,
            cores(),
            rate / raw
        );
    }
    Ok((
        a.json,
        json!({
            "bench": "audit",
            "valid": report.valid,
            "blocks": report.blocks,
            "readings": report.readings,
            "seconds": report.seconds,
            "readings_per_second": rate.round(),
            "raw_verify_per_second": raw.round(),
            "raw_verify_per_second_one_core": raw_one.round(),
            "verify_threads": cores(),
            "ratio": ((rate / raw) * 1000.0).round() / 1000.0,
            "target_ratio": 0.8,
            "chain_built_seconds": built,
            "machine": machine(),
        }),
    ))
}

// ---------------------------------------------------------------------------
// scale

/// µs of CPU per committed reading by thread group ([`THREAD_GROUPS`], then
/// "other"; `raft+apply` holds the chain store's commit), from CPU seconds
/// by group over an interval that committed `readings`.
fn us_per_reading(cpu: &[f64; THREAD_GROUPS.len() + 1], readings: u64) -> Value {
    let mut m = serde_json::Map::new();
    let names = THREAD_GROUPS.iter().map(|g| g.1).chain(["other"]);
    for (name, secs) in names.zip(cpu) {
        let us = secs * 1e6 / readings.max(1) as f64;
        m.insert(name.into(), json!((us * 100.0).round() / 100.0));
    }
    Value::Object(m)
}

async fn scale(a: &ScaleArgs, gw: tokio::runtime::Handle) -> anyhow::Result<(bool, Value)> {
    let o = &a.gw;
    let mut checkpoints = a.checkpoints.clone();
    if a.ten_million && !checkpoints.contains(&10_000_000) {
        checkpoints.push(10_000_000);
    }
    checkpoints.sort_unstable();
    let target = checkpoints.last().copied().unwrap_or(0);
    let raw = raw_all_cores(Duration::from_secs(2));
    let net = start_net(o, &gw).await?;
    let rss_start = rss_bytes().unwrap_or(0);
    let mut sensors = Sensors::connect(&net).await?;
    let n = net.sensors.len() as u64;
    let mut pending: VecDeque<u64> = checkpoints.iter().copied().collect();
    let mut rows = Vec::new();
    let (mut seg_committed, mut seg_seconds) = (0u64, 0.0f64);
    let mut seg_cpu = [0.0f64; THREAD_GROUPS.len() + 1];
    let started = Instant::now();
    while net.committed() < target {
        let left = target - net.committed();
        let next_cp = pending.front().copied().unwrap_or(target);
        let to_cp = next_cp.saturating_sub(net.committed()).max(1);
        let seg = a.segment.min(left).min(to_cp).max(n);
        let per = seg.div_ceil(n);
        let run = sensors
            .stream(
                &net,
                per,
                o.window,
                None,
                Duration::ZERO,
                Duration::from_secs(3600),
            )
            .await?;
        seg_committed += run.committed;
        seg_seconds += run.seconds;
        for (acc, c) in seg_cpu.iter_mut().zip(run.cpu_by_group) {
            *acc += c;
        }
        let now = net.committed();
        while let Some(&cp) = pending.front() {
            if now < cp {
                break;
            }
            pending.pop_front();
            let rss = rss_bytes().unwrap_or(0);
            let rate = seg_committed as f64 / seg_seconds.max(1e-9);
            if !o.json {
                eprintln!(
                    "scale: {now} readings (checkpoint {cp}): {rate:.0} readings/s since the last checkpoint, RSS {:.1} MiB",
                    rss as f64 / 1048576.0
                );
            }
            rows.push(json!({
                "checkpoint": cp,
                "readings": now,
                "readings_per_second": rate.round(),
                "rss_mib": (rss as f64 / 1048576.0 * 10.0).round() / 10.0,
                "store_mib": (std::fs::metadata(net.node().store().path()).map(|m| m.len()).unwrap_or(0) as f64 / 1048576.0).round(),
                "elapsed_seconds": started.elapsed().as_secs_f64().round(),
                "cpu_us_per_reading_by_thread": us_per_reading(&seg_cpu, seg_committed),
            }));
            seg_committed = 0;
            seg_seconds = 0.0;
            seg_cpu = [0.0; THREAD_GROUPS.len() + 1];
        }
    }
    net.stop_with(sensors.clients).await;
    Ok((
        o.json,
        json!({
            "bench": "scale",
            "sensors": o.sensors,
            "window": o.window,
            "segment": a.segment,
            "raw_verify_per_second": raw.round(),
            "rss_mib_at_start": (rss_start as f64 / 1048576.0 * 10.0).round() / 10.0,
            "checkpoints": rows,
            "machine": machine(),
        }),
    ))
}
