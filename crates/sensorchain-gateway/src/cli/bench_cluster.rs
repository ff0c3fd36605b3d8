//! `sensorchain bench cluster`: N gateways (default 5) as processes on this
//! machine ([`LocalCluster`], this binary's `run --config`), simulated
//! sensors in this process spread over their sensor ports, readings signed
//! before the clock starts.
//!
//! * **Finalized readings per second**: every sensor keeps `--window`
//!   readings in flight for `--seconds` (after a second of warm-up); the rate
//!   is the acknowledgements received per second (a gateway acknowledges a
//!   reading once its block is final: certified by a quorum).
//! * **Latency** from a reading's send to its acknowledgement (finality),
//!   p50/p90/p99, with the sensors paced at fractions (`--loads`) of that
//!   maximum.
//! * **The limit**: the raw strict verification rate of all cores, measured
//!   in this process before the cluster starts and after it stops; every
//!   gateway verifies every signature once, so N gateways on one machine
//!   can at best finalize `cores × rate ÷ N` readings per second. The
//!   target (docs/DESIGN.md): 0.8 of that, and p99 ≤ 50 ms at half load.
//! * **Where the CPU goes**: each gateway process's threads
//!   (`/proc/PID/task/*/stat`) grouped by name, in µs per finalized
//!   reading, and the process's whole CPU (`/proc/PID/stat`, which also
//!   counts threads that exited: `exited_threads` is the difference, mostly
//!   the short-lived threads on which apply checks a block's signatures,
//!   which inherit the name `sc-raft` and end with each block).
//!
//! A session whose oldest reading has had no answer for [`STALL`] is given
//! up: the sensor connects to the next gateway and resends what had no
//! answer (counted as `stalls`; a resend answered `replay` was already in
//! the chain, or was overtaken by a later reading). At the end the gateways
//! are stopped and their stored chains compared.
//!
//! Figures, not assertions: docs/PERFORMANCE.md, "Cluster", records them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use sensorchain_core::hash::ChainId;
use sensorchain_core::identity::{Keypair, PublicKey};
use sensorchain_core::link::{DeviceMsg, GatewayMsg, RejectReason};
use sensorchain_core::permissions::Role;
use sensorchain_core::tx::{Transaction, TxBody, TxKind};
use serde_json::{Value, json};

use super::bench::{SENSOR_THREAD, cores, machine, percentiles, raw_all_cores, raw_verify_rate};
use sensorchain_gateway::cluster::NodeId;
use sensorchain_gateway::cluster::local::{LocalCluster, LocalClusterConfig};
use sensorchain_gateway::cluster::settings::{ELECTION_MAX_MS, ELECTION_MIN_MS};
use sensorchain_gateway::net::client::Client;
use sensorchain_gateway::node::now_ms;
use sensorchain_gateway::procfs::{stat_cpu, threads_cpu};
use sensorchain_gateway::sim::SimSensor;

/// `sensorchain bench cluster`
#[derive(Debug, Args)]
pub struct ClusterBenchArgs {
    /// Gateways, each its own process.
    #[arg(long, default_value_t = 5)]
    pub gateways: usize,
    /// Simulated sensors (one TCP session each), spread over the gateways.
    #[arg(long, default_value_t = 20)]
    pub sensors: usize,
    /// Readings each sensor keeps in flight (at most 256).
    #[arg(long, default_value_t = 128)]
    pub window: usize,
    /// Measured seconds at the maximum rate (after one second of warm-up).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Measured seconds per load level.
    #[arg(long, default_value_t = 5)]
    pub level_seconds: u64,
    /// Offered loads as fractions of the measured maximum.
    #[arg(long, value_delimiter = ',', default_value = "0.1,0.25,0.5,0.75")]
    pub loads: Vec<f64>,
    /// The maximum rate (readings/s) instead of measuring it.
    #[arg(long)]
    pub max_rate: Option<f64>,
    /// Most transactions per block.
    #[arg(long, default_value_t = 2000)]
    pub batch_max_txs: usize,
    /// Longest wait from the first pending transaction to the cut, ms.
    #[arg(long, default_value_t = 20)]
    pub batch_timeout_ms: u64,
    /// Connect every sensor to the leader instead of spreading them over
    /// the gateways: nothing is forwarded between gateways (what forwarding
    /// costs, and what it loses, is the difference).
    #[arg(long)]
    pub to_leader: bool,
    /// A command to run each gateway process under, e.g. `taskset -c 1`
    /// (split at spaces).
    #[arg(long, value_name = "CMD")]
    pub gateway_runner: Option<String>,
    /// Keep the cluster's files in this directory (default: a temporary one).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// A session whose oldest reading has had no answer for this long (and no
/// answer came meanwhile) is given up for the next gateway.
const STALL: Duration = Duration::from_secs(3);

/// How long sensors wait for their last answers after a run.
const DRAIN: Duration = Duration::from_secs(10);

/// Thread groups of a gateway process, by name prefix (in this order: the
/// first that matches; Linux keeps 15 bytes of a name).
const GROUPS: [(&str, &str); 6] = [
    (sensorchain_gateway::node::VERIFY_THREAD, "verification"),
    ("sc-raftlog", "raft_log"),
    (sensorchain_gateway::node::RAFT_THREAD, "raft_apply_peers"),
    (sensorchain_gateway::node::FOLLOW_THREAD, "follower"),
    ("block-producer", "proposer"),
    (super::run::GATEWAY_THREAD, "links_api"),
];

/// One gateway process's CPU seconds: the whole process, and each live
/// thread's (by id: its name's group, its seconds).
#[derive(Debug, Clone, Default)]
struct ProcCpu {
    total: f64,
    threads: HashMap<u32, (Option<usize>, f64)>,
}

fn proc_cpu(pid: u32) -> ProcCpu {
    let total = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| stat_cpu(&s).map(|(_, t)| t))
        .unwrap_or(0.0);
    let threads = threads_cpu(&pid.to_string())
        .into_iter()
        .map(|t| {
            let g = GROUPS.iter().position(|(p, _)| t.name.starts_with(p));
            (t.tid, (g, t.seconds))
        })
        .collect();
    ProcCpu { total, threads }
}

/// A process's CPU over an interval: the whole, and by [`GROUPS`] the
/// threads alive at its end (a thread born meanwhile counts whole); what
/// threads that ended meanwhile used is the whole minus the groups and the
/// ungrouped threads.
#[derive(Debug, Clone, Default)]
struct CpuDelta {
    total: f64,
    groups: [f64; GROUPS.len()],
    ungrouped: f64,
}

fn cpu_delta(before: &ProcCpu, after: &ProcCpu) -> CpuDelta {
    let mut d = CpuDelta {
        total: after.total - before.total,
        ..Default::default()
    };
    for (tid, (g, secs)) in &after.threads {
        let was = before.threads.get(tid).map_or(0.0, |(_, s)| *s);
        let used = (secs - was).max(0.0);
        match g {
            Some(g) => d.groups[*g] += used,
            None => d.ungrouped += used,
        }
    }
    d
}

/// The sensors' CPU seconds in this process (threads named [`SENSOR_THREAD`]).
fn sensor_cpu() -> f64 {
    threads_cpu("self")
        .into_iter()
        .filter(|t| t.name.starts_with(SENSOR_THREAD))
        .map(|t| t.seconds)
        .sum()
}

/// Where the sensors connect.
#[derive(Clone)]
struct Links {
    chain: ChainId,
    addrs: Arc<Vec<SocketAddr>>,
    trusted: Arc<Vec<PublicKey>>,
}

impl Links {
    /// Connects to gateway `gw`, or the next ones in turn, for up to 30 s.
    async fn connect_from(&self, mut gw: usize, key: &Keypair) -> anyhow::Result<(Client, usize)> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match Client::connect(self.addrs[gw], &self.chain, key, &self.trusted).await {
                Ok(c) => return Ok((c, gw)),
                Err(e) if Instant::now() >= deadline => {
                    return Err(anyhow::anyhow!("sensor cannot connect: {e}"));
                }
                Err(_) => {
                    gw = (gw + 1) % self.addrs.len();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// A sensor between runs: its key, its link (if up), and the next
/// sequence its readings take.
struct Sensor {
    key: Keypair,
    device: u64,
    client: Option<Client>,
    gw: usize,
    next_seq: u64,
}

/// What every sensor of a run counts together.
#[derive(Default)]
struct Tally {
    acked: AtomicU64,
}

/// What one sensor saw in a run.
#[derive(Default)]
struct Seen {
    acked: u64,
    busy: u64,
    stalls: u64,
    resent: u64,
    resent_replays: u64,
    rejected: BTreeMap<String, u64>,
    latencies_us: Vec<u32>,
}

/// One sensor's run: `txs` (sequences `first..`) with up to `window` in
/// flight, paced to `rate` readings/s if given, until they run out or
/// `stop`; busy answers resent; a lost or stalled link replaced by one to
/// the next gateway, what had no answer resent. Latency: from a reading's
/// first send to its acknowledgement (readings first sent after
/// `record_from`).
#[allow(clippy::too_many_arguments)]
async fn drive(
    links: Links,
    mut s: Sensor,
    txs: Vec<Vec<u8>>,
    window: usize,
    rate: Option<f64>,
    stop: Arc<AtomicBool>,
    record_from: Instant,
    tally: Arc<Tally>,
) -> (Sensor, anyhow::Result<Seen>) {
    let r = drive_inner(
        &links,
        &mut s,
        &txs,
        window,
        rate,
        &stop,
        record_from,
        &tally,
    )
    .await;
    s.next_seq += txs.len() as u64;
    (s, r)
}

#[allow(clippy::too_many_arguments)]
async fn drive_inner(
    links: &Links,
    s: &mut Sensor,
    txs: &[Vec<u8>],
    window: usize,
    rate: Option<f64>,
    stop: &AtomicBool,
    record_from: Instant,
    tally: &Tally,
) -> anyhow::Result<Seen> {
    let first = s.next_seq;
    let window = window.clamp(1, 256);
    let mut seen = Seen::default();
    // sequence → (first send, sent on an earlier session too)
    let mut inflight: HashMap<u64, (Instant, bool)> = HashMap::new();
    let mut again: VecDeque<(u64, Instant, bool)> = VecDeque::new();
    let mut next = 0usize;
    let t0 = Instant::now();
    let mut last_answer = Instant::now();
    let mut drain_until: Option<Instant> = None;
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        if stopping {
            let until = *drain_until.get_or_insert_with(|| Instant::now() + DRAIN);
            if inflight.is_empty() || Instant::now() >= until {
                break;
            }
        } else if next >= txs.len() && inflight.is_empty() && again.is_empty() {
            break;
        }
        if s.client.is_none() {
            let (c, gw) = links.connect_from(s.gw, &s.key).await?;
            s.client = Some(c);
            s.gw = gw;
            last_answer = Instant::now();
        }
        let Some(client) = s.client.as_mut() else {
            continue;
        };
        let allowed = match rate {
            Some(r) => ((t0.elapsed().as_secs_f64() * r) as usize).min(txs.len()),
            None => txs.len(),
        };
        let mut wire = Vec::new();
        let now = Instant::now();
        while !stopping && inflight.len() < window {
            let (seq, sent, resent) = if let Some(a) = again.pop_front() {
                a
            } else if next < allowed {
                next += 1;
                (first + next as u64 - 1, now, false)
            } else {
                break;
            };
            let Some(tx) = txs.get((seq - first) as usize) else {
                continue;
            };
            wire.extend(client.seal(&DeviceMsg::Submit(tx))?);
            seen.resent += u64::from(resent);
            inflight.insert(seq, (sent, resent));
        }
        let mut lost = !wire.is_empty() && client.send_wire(&wire).await.is_err();
        if !lost {
            let wait = if rate.is_some() || inflight.is_empty() {
                Duration::from_millis(1)
            } else {
                Duration::from_millis(100)
            };
            match tokio::time::timeout(wait, client.recv()).await {
                Err(_) => lost = !inflight.is_empty() && last_answer.elapsed() >= STALL,
                Ok(Err(_)) => lost = true,
                Ok(Ok(m)) => {
                    last_answer = Instant::now();
                    let (seq, what) = match m {
                        GatewayMsg::Ack { sequence, .. } => (sequence, Ok(())),
                        GatewayMsg::Reject { sequence, reason } => (sequence, Err(Some(reason))),
                        GatewayMsg::Busy { sequence } => (sequence, Err(None)),
                        GatewayMsg::Pong(_) => continue,
                    };
                    if let Some((sent, resent)) = inflight.remove(&seq) {
                        match what {
                            Ok(()) => {
                                seen.acked += 1;
                                tally.acked.fetch_add(1, Ordering::Relaxed);
                                if sent >= record_from {
                                    seen.latencies_us.push(
                                        sent.elapsed().as_micros().min(u32::MAX as u128) as u32,
                                    );
                                }
                            }
                            Err(Some(RejectReason::Replay)) if resent => seen.resent_replays += 1,
                            Err(Some(r)) => {
                                *seen.rejected.entry(r.as_str().to_string()).or_insert(0) += 1
                            }
                            Err(None) => {
                                seen.busy += 1;
                                again.push_back((seq, sent, resent));
                            }
                        }
                    }
                }
            }
        }
        if lost {
            // the gateway went away or the session stalled: the next one,
            // and what had no answer again, in sequence order
            seen.stalls += 1;
            if let Some(c) = s.client.take() {
                c.close().await;
            }
            s.gw = (s.gw + 1) % links.addrs.len();
            let mut left: Vec<(u64, Instant, bool)> =
                inflight.drain().map(|(q, (t, _))| (q, t, true)).collect();
            left.extend(again.drain(..));
            left.sort_by_key(|a| a.0);
            again.extend(left);
        }
    }
    Ok(seen)
}

/// `per` readings of each sensor, signed on all cores before a run.
fn presign(chain: ChainId, sensors: &[Sensor], per: u64) -> Vec<Vec<Vec<u8>>> {
    let n = sensors.len();
    let threads = cores().min(n).max(1);
    let mut out: Vec<Vec<Vec<u8>>> = vec![Vec::new(); n];
    std::thread::scope(|sc| {
        let mut handles = Vec::new();
        for t in 0..threads {
            let jobs: Vec<(usize, Keypair, u64, u64)> = (t..n)
                .step_by(threads)
                .map(|i| {
                    (
                        i,
                        sensors[i].key.clone(),
                        sensors[i].device,
                        sensors[i].next_seq,
                    )
                })
                .collect();
            handles.push(sc.spawn(move || {
                jobs.into_iter()
                    .map(|(i, k, device, first)| {
                        let mut sim = SimSensor::new(k, chain, device, first);
                        let now = now_ms();
                        let txs: Vec<Vec<u8>> = (0..per)
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

/// A run's figures.
struct Run {
    /// Acknowledged (final) readings per second over the measured interval.
    rate: f64,
    finalized: u64,
    seconds: f64,
    /// Blocks appended over the interval (the highest head among the members).
    blocks: u64,
    seen: Seen,
    /// By member: its id, its role at the end, its CPU over the interval.
    cpu: Vec<(NodeId, String, CpuDelta)>,
    sensor_cpu: f64,
}

/// Streams `per` new readings of every sensor (at `rate` in all, if
/// given) for one second of warm-up and `seconds` measured.
#[allow(clippy::too_many_arguments)]
fn run(
    rt: &tokio::runtime::Runtime,
    cluster: &mut LocalCluster,
    links: &Links,
    sensors: &mut Vec<Sensor>,
    per: u64,
    window: usize,
    rate: Option<f64>,
    seconds: u64,
) -> anyhow::Result<Run> {
    let feeds = presign(links.chain, sensors, per);
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let warmup = Duration::from_secs(1);
    let record_from = Instant::now() + warmup;
    let per_rate = rate.map(|r| r / sensors.len().max(1) as f64);
    let mut tasks = Vec::new();
    for (s, txs) in std::mem::take(sensors).into_iter().zip(feeds) {
        tasks.push(rt.spawn(drive(
            links.clone(),
            s,
            txs,
            window,
            per_rate,
            stop.clone(),
            record_from,
            tally.clone(),
        )));
    }
    std::thread::sleep(warmup);
    let pids: Vec<(NodeId, u32)> = cluster
        .members()
        .iter()
        .filter_map(|m| m.pid().map(|p| (m.id(), p)))
        .collect();
    let h0 = head_height(cluster);
    let cpu0: Vec<ProcCpu> = pids.iter().map(|(_, p)| proc_cpu(*p)).collect();
    let (a0, t0, s0) = (
        tally.acked.load(Ordering::Relaxed),
        Instant::now(),
        sensor_cpu(),
    );
    let deadline = t0 + Duration::from_secs(seconds);
    while Instant::now() < deadline && tasks.iter().any(|t| !t.is_finished()) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (a1, el, s1) = (
        tally.acked.load(Ordering::Relaxed),
        t0.elapsed().as_secs_f64(),
        sensor_cpu(),
    );
    let cpu1: Vec<ProcCpu> = pids.iter().map(|(_, p)| proc_cpu(*p)).collect();
    let h1 = head_height(cluster);
    stop.store(true, Ordering::Relaxed);
    let mut seen = Seen::default();
    for t in tasks {
        let (s, r) = rt.block_on(t)?;
        sensors.push(s);
        let s = r?;
        seen.acked += s.acked;
        seen.busy += s.busy;
        seen.stalls += s.stalls;
        seen.resent += s.resent;
        seen.resent_replays += s.resent_replays;
        for (k, v) in s.rejected {
            *seen.rejected.entry(k).or_insert(0) += v;
        }
        seen.latencies_us.extend(s.latencies_us);
    }
    let roles: HashMap<NodeId, String> = cluster
        .statuses()
        .into_iter()
        .filter_map(|(id, s)| s.ok().map(|s| (id, s.role)))
        .collect();
    let cpu = pids
        .iter()
        .zip(cpu0.iter().zip(&cpu1))
        .map(|((id, _), (c0, c1))| {
            (
                *id,
                roles.get(id).cloned().unwrap_or_default(),
                cpu_delta(c0, c1),
            )
        })
        .collect();
    Ok(Run {
        blocks: h1.saturating_sub(h0),
        rate: (a1 - a0) as f64 / el.max(1e-9),
        finalized: a1 - a0,
        seconds: el,
        seen,
        cpu,
        sensor_cpu: s1 - s0,
    })
}

/// The highest head among the running members (0 if none answers).
fn head_height(cluster: &mut LocalCluster) -> u64 {
    cluster
        .statuses()
        .into_iter()
        .filter_map(|(_, s)| s.ok().map(|s| s.height))
        .max()
        .unwrap_or(0)
}

/// The CPU of a run per finalized reading, by member and group, in µs.
fn cpu_json(r: &Run) -> Value {
    let blocks = r.blocks.max(1) as f64;
    let per = |secs: f64| ((secs * 1e6 / r.finalized.max(1) as f64) * 10.0).round() / 10.0;
    let mut all = [0.0f64; GROUPS.len()];
    let mut all_total = 0.0;
    let mut all_other = 0.0;
    let members: Vec<Value> = r
        .cpu
        .iter()
        .map(|(id, role, c)| {
            let mut g = serde_json::Map::new();
            let mut named = c.ungrouped;
            for (i, (_, name)) in GROUPS.iter().enumerate() {
                g.insert((*name).into(), json!(per(c.groups[i])));
                all[i] += c.groups[i];
                named += c.groups[i];
            }
            all_other += c.ungrouped;
            g.insert("other_threads".into(), json!(per(c.ungrouped)));
            g.insert(
                "exited_threads".into(),
                json!(per((c.total - named).max(0.0))),
            );
            all_total += c.total;
            json!({
                "id": id,
                "role": role,
                "cores": ((c.total / r.seconds.max(1e-9)) * 100.0).round() / 100.0,
                "us_per_reading": per(c.total),
                "us_per_reading_by_group": Value::Object(g),
            })
        })
        .collect();
    let mut g = serde_json::Map::new();
    for (i, (_, name)) in GROUPS.iter().enumerate() {
        g.insert((*name).into(), json!(per(all[i])));
    }
    g.insert("other_threads".into(), json!(per(all_other)));
    g.insert(
        "exited_threads".into(),
        json!(per(
            (all_total - all.iter().sum::<f64>() - all_other).max(0.0)
        )),
    );
    json!({
        "members": members,
        "all_gateways_us_per_reading": per(all_total),
        "all_gateways_by_group": Value::Object(g),
        "all_gateways_cores": ((all_total / r.seconds.max(1e-9)) * 100.0).round() / 100.0,
        "blocks_per_second": ((r.blocks as f64 / r.seconds.max(1e-9)) * 10.0).round() / 10.0,
        "readings_per_block": ((r.finalized as f64 / blocks) * 10.0).round() / 10.0,
        "sensors_us_per_reading": per(r.sensor_cpu),
        "sensors_cores": ((r.sensor_cpu / r.seconds.max(1e-9)) * 100.0).round() / 100.0,
    })
}

fn seen_json(s: &Seen) -> Value {
    json!({
        "busy": s.busy,
        "stalls": s.stalls,
        "resent": s.resent,
        "resent_answered_replay": s.resent_replays,
        "rejected": s.rejected,
    })
}

/// Runs `sensorchain bench cluster`.
pub fn cluster(a: &ClusterBenchArgs) -> anyhow::Result<(bool, Value)> {
    anyhow::ensure!(a.gateways >= 1, "--gateways must be at least 1");
    anyhow::ensure!(a.sensors >= 1, "--sensors must be at least 1");
    let n = a.gateways;
    let say = |s: String| {
        if !a.json {
            eprintln!("{s}");
        }
    };
    // the limit, before anything else runs
    let raw_before = raw_all_cores(Duration::from_secs(2));
    let raw_one = raw_verify_rate(1, Duration::from_secs(1));
    say(format!(
        "raw strict verify: {raw_before:.0}/s on {} cores ({raw_one:.0}/s on one)",
        cores()
    ));

    let (tmp, dir) = super::dir_or_temp(a.data_dir.as_ref(), "sensorchain-bench-cluster-")?;
    anyhow::ensure!(
        tmp.is_some() || std::fs::read_dir(&dir)?.next().is_none(),
        "{} is not empty (the benchmark creates a new cluster)",
        dir.display()
    );
    let binary = std::env::current_exe().context("cannot find this program's path")?;
    let mut cfg = LocalClusterConfig::new(n, dir.join("cluster"), binary);
    cfg.name = "sensorchain-bench-cluster".into();
    cfg.runner = super::demo::runner(a.gateway_runner.as_deref());
    cfg.batch.max_txs = a.batch_max_txs.max(1);
    cfg.batch.timeout_ms = a.batch_timeout_ms.max(1);
    // a gateway's own election timeouts: the machine is saturated
    cfg.election_ms = (ELECTION_MIN_MS, ELECTION_MAX_MS);
    let mut cluster = LocalCluster::create(cfg)?;
    cluster.start_all(Duration::from_secs(60))?;
    let leader = cluster.wait_leader(Duration::from_secs(60))?;
    say(format!(
        "{n} gateways started (pids {:?}); gateway {} leads",
        cluster
            .members()
            .iter()
            .filter_map(|m| m.pid())
            .collect::<Vec<_>>(),
        leader.id
    ));
    let chain = cluster.chain_id();
    let links = Links {
        chain,
        addrs: Arc::new(cluster.members().iter().map(|m| m.sensor_addr()).collect()),
        trusted: Arc::new(cluster.gateway_keys()),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name(SENSOR_THREAD)
        .enable_all()
        .build()?;

    // sensors registered by the admin over a link to the leader
    let keys: Vec<Keypair> = {
        let mut rng = rand::rng();
        (0..a.sensors)
            .map(|_| Keypair::generate(&mut rng))
            .collect()
    };
    let admin = cluster.admin().clone();
    let grants: Vec<Vec<u8>> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let body = TxBody {
                signer: admin.public(),
                sequence: i as u64 + 1,
                timestamp_ms: now_ms(),
                kind: TxKind::Grant {
                    target: k.public(),
                    permissions: Role::Device.default_permissions(),
                },
            };
            Transaction::sign(body, &chain, &admin)
                .map(|t| t.to_vec())
                .map_err(|e| anyhow::anyhow!("{e}"))
        })
        .collect::<anyhow::Result<_>>()?;
    let to_leader = (leader.id - 1) as usize;
    rt.block_on(async {
        let (mut c, _) = links.connect_from(to_leader, &admin).await?;
        let answers = c.submit_pipelined(&grants, 64).await?;
        c.close().await;
        anyhow::ensure!(
            answers.iter().all(|m| matches!(m, GatewayMsg::Ack { .. })),
            "a sensor's registration was not committed: {answers:?}"
        );
        anyhow::Ok(())
    })?;
    cluster.wait_converged(Duration::from_secs(60))?;
    let mut sensors: Vec<Sensor> = keys
        .into_iter()
        .enumerate()
        .map(|(i, key)| Sensor {
            key,
            device: i as u64 + 1,
            client: None,
            gw: if a.to_leader { to_leader } else { i % n },
            next_seq: 1,
        })
        .collect();
    // connect before the clock starts
    for s in &mut sensors {
        let (c, gw) = rt.block_on(links.connect_from(s.gw, &s.key))?;
        s.client = Some(c);
        s.gw = gw;
    }
    let count = sensors.len() as f64;

    // the maximum
    let limit = raw_before / n as f64;
    let (max, max_run) = match a.max_rate {
        Some(m) => (m, None),
        None => {
            // enough readings for the whole run at 1.5 × the limit
            let per = ((limit * 1.5 * (a.seconds as f64 + 1.5)) / count).ceil() as u64 + 1;
            let r = run(
                &rt,
                &mut cluster,
                &links,
                &mut sensors,
                per,
                a.window,
                None,
                a.seconds,
            )?;
            say(format!(
                "maximum: {:.0} finalized readings/s over {:.1} s ({} stalls, {} busy)",
                r.rate, r.seconds, r.seen.stalls, r.seen.busy
            ));
            (r.rate, Some(r))
        }
    };

    // latency at fractions of it
    let mut levels = Vec::new();
    for &load in &a.loads {
        let offered = max * load;
        let per = ((offered * (a.level_seconds as f64 + 1.5)) / count).ceil() as u64 + 1;
        let mut r = run(
            &rt,
            &mut cluster,
            &links,
            &mut sensors,
            per,
            256,
            Some(offered),
            a.level_seconds,
        )?;
        let p = percentiles(&mut r.seen.latencies_us);
        say(format!(
            "latency at {:.0} % ({offered:.0}/s offered, {:.0}/s finalized): p50 {} ms, p99 {} ms ({} stalls)",
            load * 100.0,
            r.rate,
            p["p50_ms"],
            p["p99_ms"],
            r.seen.stalls
        ));
        levels.push(json!({
            "load": load,
            "offered_per_second": offered.round(),
            "finalized_per_second": r.rate.round(),
            "latency": p,
            "sensors": seen_json(&r.seen),
            "cpu": cpu_json(&r),
        }));
    }

    // the sensors' links closed, the gateways stopped, their chains compared
    rt.block_on(async {
        for s in &mut sensors {
            if let Some(c) = s.client.take() {
                c.close().await;
            }
        }
    });
    let settled = cluster.wait_converged(Duration::from_secs(120));
    cluster.terminate_all(Duration::from_secs(60))?;
    let cmp = cluster.compare_chains()?;
    let raw_after = raw_all_cores(Duration::from_secs(2));
    let raw = (raw_before + raw_after) / 2.0;
    let limit = raw / n as f64;
    let ratio = max / limit;
    let half = levels
        .iter()
        .find(|l| (l["load"].as_f64().unwrap_or(0.0) - 0.5).abs() < 1e-9)
        .map(|l| l["latency"]["p99_ms"].clone());
    say(format!(
        "cluster: {max:.0} finalized readings/s; limit cores × raw ÷ gateways = {:.0} ÷ {n} = {limit:.0}/s; ratio {ratio:.3} (target 0.8); p99 at half load {} ms (target 50); chains identical: {}",
        raw,
        half.as_ref().map_or("-".to_string(), |v| v.to_string()),
        cmp.identical()
    ));
    drop(cluster);
    drop(tmp);
    Ok((
        a.json,
        json!({
            "bench": "cluster",
            "gateways": n,
            "sensors": a.sensors,
            "sensors_to": if a.to_leader { "leader" } else { "all gateways" },
            "window": a.window,
            "batch_max_txs": a.batch_max_txs,
            "batch_timeout_ms": a.batch_timeout_ms,
            "seconds": max_run.as_ref().map(|r| r.seconds),
            "finalized_per_second": max.round(),
            "finalized_readings": max_run.as_ref().map(|r| r.finalized),
            "max_run_sensors": max_run.as_ref().map(|r| seen_json(&r.seen)),
            "max_run_ack_latency": run_latency(max_run.as_ref()),
            "cpu_at_max": max_run.as_ref().map(cpu_json),
            "raw_verify_per_second": raw.round(),
            "raw_verify_per_second_before": raw_before.round(),
            "raw_verify_per_second_after": raw_after.round(),
            "raw_verify_per_second_one_core": raw_one.round(),
            "limit_per_second": limit.round(),
            "ratio": (ratio * 1000.0).round() / 1000.0,
            "target_ratio": 0.8,
            "target": "finalized ≥ 0.8 × cores × raw ÷ gateways; p99 ≤ 50 ms at 50 % load",
            "p99_ms_at_half_load": half,
            "levels": levels,
            "converged_height": settled.as_ref().ok().map(|s| s.height),
            "chains_identical": cmp.identical(),
            "head_final": cmp.head_certified,
            "chain_differences": cmp.differences,
            "machine": machine(),
        }),
    ))
}

/// The latency percentiles of a run (none: not measured).
fn run_latency(r: Option<&Run>) -> Value {
    r.map_or(Value::Null, |r| {
        let mut v = r.seen.latencies_us.clone();
        percentiles(&mut v)
    })
}
