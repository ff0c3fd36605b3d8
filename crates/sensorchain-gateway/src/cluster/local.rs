//! A cluster on this machine: N gateways, each its own `sensorchain run`
//! process, on free loopback ports — for `sensorchain demo`, `sensorchain
//! bench cluster` and tests.
//!
//! [`LocalCluster::create`] writes everything into one directory (keys, a
//! genesis block with the admin, every gateway as a validator and the
//! members given, one `gateway.toml` per gateway naming the others as
//! peers); nothing runs yet:
//!
//! ```text
//! DIR/genesis.block
//! DIR/admin.key
//! DIR/gw1/gateway.toml  gateway.key  data/ (chain.redb, raft.redb)  gateway.log (its stdout and stderr)
//! DIR/gw2/…
//! ```
//!
//! Then [`start`](LocalCluster::start), [`kill`](LocalCluster::kill)
//! (SIGKILL), [`terminate`](LocalCluster::terminate) (SIGTERM, a graceful
//! stop) and start again a member's process; read what each says of the
//! cluster (`GET /cluster`: [`status`](LocalCluster::status),
//! [`wait_leader`](LocalCluster::wait_leader),
//! [`wait_converged`](LocalCluster::wait_converged)); and, once every
//! member has stopped, compare their stored chains block by block
//! ([`compare_chains`](LocalCluster::compare_chains), each store opened
//! read-only).
//!
//! Every call blocks (it waits on processes or HTTP): from async code, call
//! it from a blocking thread. A [`LocalCluster`] dropped with members still
//! running kills them (SIGKILL) and reaps them; the directory stays.
//!
//! ```no_run
//! # fn f() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use sensorchain_gateway::cluster::local::{LocalCluster, LocalClusterConfig};
//! let bin = std::path::PathBuf::from("target/release/sensorchain");
//! let mut c = LocalCluster::create(LocalClusterConfig::new(5, "/tmp/five", bin))?;
//! c.start_all(Duration::from_secs(30))?;
//! let leader = c.wait_leader(Duration::from_secs(10))?;
//! c.kill(leader.id)?;
//! let next = c.wait_leader(Duration::from_secs(10))?;
//! c.start(leader.id, Duration::from_secs(30))?;
//! c.wait_converged(Duration::from_secs(30))?;
//! c.terminate_all(Duration::from_secs(30))?;
//! let chains = c.compare_chains()?;
//! assert!(chains.identical() && chains.head_certified);
//! # let _ = next; Ok(()) }
//! ```

use std::fs::OpenOptions;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sensorchain_core::block::Block;
use sensorchain_core::chain::Chain;
use sensorchain_core::hash::ChainId;
use sensorchain_core::identity::{Keypair, PublicKey};
use sensorchain_core::permissions::Role;
use sensorchain_core::tx::{GENESIS_MAX_MEMBERS, GenesisConfig, Member, Params};

use super::NodeId;
use crate::config::{Batch, ClusterSection, GatewayConfig, Limits, Peer};
use crate::keys::write_keypair;
use crate::node::{ClusterStatus, now_ms};
use crate::store::Store;

/// How often a wait polls the members' `GET /cluster`.
const POLL: Duration = Duration::from_millis(50);

/// How long one `GET /cluster` or `GET /health` may take. `/cluster` asks
/// every peer for its report (each up to 2 s, at once), so a member cut
/// off from its peers answers after about 2 s: the bound is well above it.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long nothing may be appended before [`LocalCluster::wait_converged`]
/// takes members at one head as settled.
pub const QUIET: Duration = Duration::from_secs(3);

/// Most differences [`LocalCluster::compare_chains`] lists.
pub const MAX_DIFFERENCES: usize = 16;

/// What [`LocalCluster::create`] makes.
#[derive(Debug, Clone)]
pub struct LocalClusterConfig {
    /// How many gateways (1: a cluster of one, without a `[cluster]` table).
    pub gateways: usize,
    /// Where everything is written (created; must be empty if it exists).
    pub dir: PathBuf,
    /// The `sensorchain` binary each member runs (`run --config …`).
    pub binary: PathBuf,
    /// A command the binary is run under, e.g. `["taskset", "-c", "1"]`, or
    /// `["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"]` for a binary of
    /// another architecture (empty: run it directly).
    pub runner: Vec<String>,
    /// The chain's name (a label in the genesis block).
    pub name: String,
    /// The chain's parameters.
    pub params: Params,
    /// Genesis members besides the admin and the gateways (devices,
    /// doctors, …): at most [`GENESIS_MAX_MEMBERS`] in all.
    pub members: Vec<Member>,
    /// Every member's `[batch]`.
    pub batch: Batch,
    /// Every member's `[limits]`.
    pub limits: Limits,
    /// Raft's heartbeat, in ms.
    pub heartbeat_ms: u64,
    /// Raft's election timeouts, in ms (shortest, longest).
    pub election_ms: (u64, u64),
    /// The members' log filter (`--log`); `None`: their default.
    pub log: Option<String>,
}

impl LocalClusterConfig {
    /// `gateways` gateways in `dir` running `binary`, with the default
    /// settings of a gateway except Raft's elections: after 1–2 s instead
    /// of 3–6 s (loopback, not a busy Pi). The heartbeat stays 250 ms: it
    /// is also how long openraft gives one AppendEntries, and on a loaded
    /// machine running five gateways 100 ms was measured too short (the new
    /// leader's appends timed out again and again after a failover).
    pub fn new(gateways: usize, dir: impl Into<PathBuf>, binary: impl Into<PathBuf>) -> Self {
        LocalClusterConfig {
            gateways,
            dir: dir.into(),
            binary: binary.into(),
            runner: Vec::new(),
            name: "sensorchain-local".into(),
            params: Params::default(),
            members: Vec::new(),
            batch: Batch::default(),
            limits: Limits::default(),
            heartbeat_ms: crate::cluster::settings::HEARTBEAT_MS,
            election_ms: (1000, 2000),
            log: None,
        }
    }
}

/// One gateway of a [`LocalCluster`].
#[derive(Debug)]
pub struct LocalMember {
    id: NodeId,
    key: Keypair,
    dir: PathBuf,
    sensor_addr: SocketAddr,
    api_addr: SocketAddr,
    peer_addr: SocketAddr,
    child: Option<Child>,
    starts: u32,
}

impl LocalMember {
    /// Its member id (1..=N).
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Its key.
    pub fn key(&self) -> &Keypair {
        &self.key
    }

    /// Its directory (configuration, key, `data/`, `gateway.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its configuration file.
    pub fn config_file(&self) -> PathBuf {
        self.dir.join("gateway.toml")
    }

    /// Its data directory (the chain store and the Raft log).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The file its process writes its stdout and stderr to.
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("gateway.log")
    }

    /// Where it accepts sensor links (TCP).
    pub fn sensor_addr(&self) -> SocketAddr {
        self.sensor_addr
    }

    /// Its HTTP API's address.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// Its API's base URL, `http://127.0.0.1:PORT`.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    /// Where its peer links listen.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// Its process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// How many times its process was started.
    pub fn starts(&self) -> u32 {
        self.starts
    }
}

/// The leader the members agree on ([`LocalCluster::wait_leader`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leader {
    /// Its member id.
    pub id: NodeId,
    /// Its term.
    pub term: u64,
    /// How long the wait took.
    pub after: Duration,
}

/// What [`LocalCluster::compare_chains`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainComparison {
    /// Each member's head height (`None`: an empty store).
    pub heads: Vec<(NodeId, Option<u64>)>,
    /// Each member's readings in blocks up to its head.
    pub readings: Vec<(NodeId, u64)>,
    /// Each member's number of stored finality certificates.
    pub certificates: Vec<(NodeId, u64)>,
    /// Heights compared on every member (those all of them hold).
    pub heights_compared: u64,
    /// Every member stores a finality certificate for its head (so every
    /// block of its chain is final: a certificate covers the ancestors).
    pub head_certified: bool,
    /// What differs (a block hash or certificate at a height, a head), at
    /// most [`MAX_DIFFERENCES`] lines.
    pub differences: Vec<String>,
}

impl ChainComparison {
    /// True if every member holds the same head, the same block hash at
    /// every height and the same certificate (or none) at every height.
    pub fn identical(&self) -> bool {
        self.differences.is_empty()
    }
}

/// N gateways as processes on this machine (see the [module](self)).
#[derive(Debug)]
pub struct LocalCluster {
    dir: PathBuf,
    binary: PathBuf,
    runner: Vec<String>,
    log: Option<String>,
    genesis: Block,
    admin: Keypair,
    members: Vec<LocalMember>,
}

/// `n` distinct free loopback ports (each bound, then released together:
/// another process may still take one before the gateway binds it).
fn free_ports(n: usize) -> anyhow::Result<Vec<SocketAddr>> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .context("cannot find a free loopback port")?;
    held.iter()
        .map(|l| l.local_addr().context("a bound port without an address"))
        .collect()
}

impl LocalCluster {
    /// Writes a new cluster into `cfg.dir` (see the [module](self)):
    /// keys, the genesis block, each member's configuration with free
    /// loopback ports. Starts nothing.
    pub fn create(cfg: LocalClusterConfig) -> anyhow::Result<LocalCluster> {
        let n = cfg.gateways;
        anyhow::ensure!(n >= 1, "a cluster needs at least one gateway");
        let in_genesis = 1 + n + cfg.members.len();
        anyhow::ensure!(
            in_genesis <= GENESIS_MAX_MEMBERS,
            "{in_genesis} genesis members (the admin, {n} gateways, {} more): at most {GENESIS_MAX_MEMBERS}",
            cfg.members.len()
        );
        let dir = cfg.dir.clone();
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        anyhow::ensure!(
            std::fs::read_dir(&dir)?.next().is_none(),
            "{} is not empty: a local cluster is made in an empty or new directory",
            dir.display()
        );
        let mut rng = rand::rng();
        let admin = Keypair::generate(&mut rng);
        let keys: Vec<Keypair> = (0..n).map(|_| Keypair::generate(&mut rng)).collect();
        write_keypair(&dir.join("admin.key"), &admin, false)?;

        let mut members = vec![Member::of_role(admin.public(), Role::Admin)];
        members.extend(
            keys.iter()
                .map(|k| Member::of_role(k.public(), Role::Gateway)),
        );
        members.extend(cfg.members.iter().cloned());
        let genesis_cfg = GenesisConfig::new(&cfg.name, cfg.params, &members)
            .context("the chain's name is too long or there are too many genesis members")?;
        let genesis = Chain::genesis_block(&admin, genesis_cfg, now_ms())
            .map_err(|e| anyhow::anyhow!("cannot make the genesis block: {e}"))?;
        std::fs::write(dir.join("genesis.block"), genesis.to_vec())?;

        let ports = free_ports(3 * n)?;
        let mut out = Vec::with_capacity(n);
        for (i, key) in keys.into_iter().enumerate() {
            let member_dir = dir.join(format!("gw{}", i + 1));
            std::fs::create_dir_all(&member_dir)?;
            write_keypair(&member_dir.join("gateway.key"), &key, false)?;
            out.push(LocalMember {
                id: i as NodeId + 1,
                key,
                dir: member_dir,
                sensor_addr: ports[3 * i],
                api_addr: ports[3 * i + 1],
                peer_addr: ports[3 * i + 2],
                child: None,
                starts: 0,
            });
        }
        for m in &out {
            let mut gw = GatewayConfig::new(
                "data".into(),
                "gateway.key".into(),
                "../genesis.block".into(),
            );
            gw.listen.tcp = Some(m.sensor_addr.to_string());
            gw.listen.api = Some(m.api_addr.to_string());
            gw.batch = cfg.batch.clone();
            gw.limits = cfg.limits.clone();
            if n > 1 {
                gw.cluster = Some(ClusterSection {
                    node_id: m.id,
                    listen: Some(m.peer_addr.to_string()),
                    heartbeat_ms: cfg.heartbeat_ms,
                    election_min_ms: cfg.election_ms.0,
                    election_max_ms: cfg.election_ms.1,
                    snapshot_every: crate::cluster::settings::SNAPSHOT_EVERY_ENTRIES,
                    snapshot_keep: crate::cluster::settings::KEEP_BELOW_SNAPSHOT,
                    peers: out
                        .iter()
                        .filter(|o| o.id != m.id)
                        .map(|o| Peer {
                            id: o.id,
                            addr: o.peer_addr.to_string(),
                            key: o.key.public().to_string(),
                        })
                        .collect(),
                    join: false,
                });
            }
            gw.check(&m.config_file())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            std::fs::write(m.config_file(), gw.to_toml())?;
        }
        Ok(LocalCluster {
            dir,
            binary: cfg.binary,
            runner: cfg.runner,
            log: cfg.log,
            genesis,
            admin,
            members: out,
        })
    }

    /// The cluster's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The genesis block.
    pub fn genesis(&self) -> &Block {
        &self.genesis
    }

    /// The chain's id.
    pub fn chain_id(&self) -> ChainId {
        self.genesis.header.chain_id
    }

    /// The admin of the chain (also in `DIR/admin.key`).
    pub fn admin(&self) -> &Keypair {
        &self.admin
    }

    /// The members, by id (1..=N).
    pub fn members(&self) -> &[LocalMember] {
        &self.members
    }

    /// The gateways' public keys (what a sensor trusts).
    pub fn gateway_keys(&self) -> Vec<PublicKey> {
        self.members.iter().map(|m| m.key.public()).collect()
    }

    /// Member `id`.
    pub fn member(&self, id: NodeId) -> anyhow::Result<&LocalMember> {
        self.members
            .iter()
            .find(|m| m.id == id)
            .with_context(|| format!("no member {id} (1..={})", self.members.len()))
    }

    fn member_mut(&mut self, id: NodeId) -> anyhow::Result<&mut LocalMember> {
        let n = self.members.len();
        self.members
            .iter_mut()
            .find(|m| m.id == id)
            .with_context(|| format!("no member {id} (1..={n})"))
    }

    /// The members whose process runs (reaping any that has exited).
    pub fn running(&mut self) -> Vec<NodeId> {
        let mut ids = Vec::new();
        for m in &mut self.members {
            if let Some(c) = &mut m.child {
                match c.try_wait() {
                    Ok(None) => ids.push(m.id),
                    _ => m.child = None,
                }
            }
        }
        ids
    }

    /// Starts member `id`'s process (`BINARY run --config DIR/gwID/gateway.toml`,
    /// output appended to its `gateway.log`) and waits up to `ready` until
    /// its API answers `GET /health`. An error if it runs already, exits,
    /// or does not answer in time (then it is killed; the error quotes the
    /// end of its log).
    pub fn start(&mut self, id: NodeId, ready: Duration) -> anyhow::Result<()> {
        self.spawn(id)?;
        self.wait_ready(id, ready)
    }

    /// Starts every member that is not running, then waits (up to `ready`
    /// in all) until each answers.
    pub fn start_all(&mut self, ready: Duration) -> anyhow::Result<()> {
        let running = self.running();
        let ids: Vec<NodeId> = self
            .members
            .iter()
            .map(|m| m.id)
            .filter(|id| !running.contains(id))
            .collect();
        for &id in &ids {
            self.spawn(id)?;
        }
        let deadline = Instant::now() + ready;
        for id in ids {
            self.wait_ready(id, deadline.saturating_duration_since(Instant::now()))?;
        }
        Ok(())
    }

    fn spawn(&mut self, id: NodeId) -> anyhow::Result<()> {
        let (binary, log) = (self.binary.clone(), self.log.clone());
        let runner = self.runner.clone();
        let m = self.member_mut(id)?;
        if let Some(c) = &mut m.child
            && c.try_wait()?.is_none()
        {
            bail!("member {id} runs already (pid {})", c.id());
        }
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(m.log_file())
            .with_context(|| format!("cannot open {}", m.log_file().display()))?;
        let err = out.try_clone()?;
        let mut cmd = match runner.split_first() {
            Some((run, args)) => {
                let mut c = Command::new(run);
                c.args(args).arg(&binary);
                c
            }
            None => Command::new(&binary),
        };
        if let Some(f) = log {
            cmd.arg("--log").arg(f);
        }
        cmd.arg("run")
            .arg("--config")
            .arg(m.config_file())
            .current_dir(&m.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = cmd.spawn().with_context(|| {
            format!(
                "cannot start {}{}",
                runner.join(" ") + if runner.is_empty() { "" } else { " " },
                binary.display()
            )
        })?;
        m.child = Some(child);
        m.starts += 1;
        Ok(())
    }

    fn wait_ready(&mut self, id: NodeId, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let m = self.member_mut(id)?;
            let exited = match &mut m.child {
                Some(c) => c.try_wait()?,
                None => bail!("member {id} is not running"),
            };
            if let Some(status) = exited {
                m.child = None;
                let log = m.log_file();
                bail!(
                    "member {id} exited ({status}) before it served; end of {}:\n{}",
                    log.display(),
                    self.log_tail(id, 20)
                );
            }
            if health(&m.api_url()).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = self.kill(id);
                bail!(
                    "member {id} did not answer GET /health within {:.1} s; end of its log:\n{}",
                    within.as_secs_f64(),
                    self.log_tail(id, 20)
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Kills member `id`'s process with SIGKILL (a crash: nothing is
    /// flushed or drained) and reaps it.
    pub fn kill(&mut self, id: NodeId) -> anyhow::Result<ExitStatus> {
        let m = self.member_mut(id)?;
        let mut c = m
            .child
            .take()
            .with_context(|| format!("member {id} is not running"))?;
        // std's kill is SIGKILL on Unix; an exited process is only reaped
        let _ = c.kill();
        Ok(c.wait()?)
    }

    /// Stops member `id` with SIGTERM (a graceful stop: sessions drained,
    /// the last block stored) and waits up to `within` for it to exit;
    /// then kills it (SIGKILL) and says so in the error.
    pub fn terminate(&mut self, id: NodeId, within: Duration) -> anyhow::Result<ExitStatus> {
        self.signal_term(id)?;
        self.reap(id, within)
    }

    /// [`terminate`](Self::terminate)s every running member at once.
    pub fn terminate_all(&mut self, within: Duration) -> anyhow::Result<()> {
        let ids = self.running();
        for &id in &ids {
            self.signal_term(id)?;
        }
        let deadline = Instant::now() + within;
        let mut errors = Vec::new();
        for id in ids {
            if let Err(e) = self.reap(id, deadline.saturating_duration_since(Instant::now())) {
                errors.push(format!("{e:#}"));
            }
        }
        anyhow::ensure!(errors.is_empty(), "{}", errors.join("; "));
        Ok(())
    }

    fn signal_term(&mut self, id: NodeId) -> anyhow::Result<()> {
        let m = self.member_mut(id)?;
        let c = m
            .child
            .as_ref()
            .with_context(|| format!("member {id} is not running"))?;
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
            .with_context(|| format!("cannot signal member {id}"))
    }

    fn reap(&mut self, id: NodeId, within: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            let m = self.member_mut(id)?;
            let Some(c) = &mut m.child else {
                bail!("member {id} is not running");
            };
            if let Some(status) = c.try_wait()? {
                m.child = None;
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = self.kill(id);
                bail!(
                    "member {id} did not exit within {:.1} s of SIGTERM: killed",
                    within.as_secs_f64()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last `lines` lines of member `id`'s log (empty if none).
    pub fn log_tail(&self, id: NodeId, lines: usize) -> String {
        let Ok(m) = self.member(id) else {
            return String::new();
        };
        let text = std::fs::read_to_string(m.log_file()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// What member `id` says of the cluster (`GET /cluster`).
    pub fn status(&self, id: NodeId) -> anyhow::Result<ClusterStatus> {
        cluster_status(&self.member(id)?.api_url())
    }

    /// What each running member says of the cluster, by id.
    pub fn statuses(&mut self) -> Vec<(NodeId, anyhow::Result<ClusterStatus>)> {
        self.running()
            .into_iter()
            .map(|id| (id, self.status(id)))
            .collect()
    }

    /// Waits up to `within` until a running member says it leads and no
    /// running member knows a later term.
    pub fn wait_leader(&mut self, within: Duration) -> anyhow::Result<Leader> {
        let t0 = Instant::now();
        loop {
            let statuses = self.statuses();
            let max_term = statuses
                .iter()
                .filter_map(|(_, s)| s.as_ref().ok().map(|s| s.term))
                .max();
            if let Some((id, s)) = statuses.iter().find_map(|(id, s)| match s {
                Ok(s) if s.role == "leader" && Some(s.term) == max_term => Some((*id, s)),
                _ => None,
            }) {
                return Ok(Leader {
                    id,
                    term: s.term,
                    after: t0.elapsed(),
                });
            }
            let last: Vec<String> = statuses
                .into_iter()
                .map(|(id, s)| match s {
                    Ok(s) => format!("{id}: {} in term {}", s.role, s.term),
                    Err(e) => format!("{id}: {e:#}"),
                })
                .collect();
            if t0.elapsed() >= within {
                bail!(
                    "no leader within {:.1} s ({})",
                    within.as_secs_f64(),
                    last.join("; ")
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits up to `within` until every running member has applied the
    /// same log index and holds the same chain head, and either each says
    /// that head is final or nothing has been appended for [`QUIET`] (a
    /// gateway's `finalized_height` can lag behind, see docs/CLUSTER.md,
    /// and a certificate still due would be appended within that time: the
    /// members give their votes for blocks not yet final every 2 s). Returns
    /// their (common) status as the leader gives it. Whether the head is
    /// certified is for [`compare_chains`](Self::compare_chains) to say,
    /// from the stores.
    pub fn wait_converged(&mut self, within: Duration) -> anyhow::Result<ClusterStatus> {
        let t0 = Instant::now();
        let mut last: Option<((Option<u64>, u64), Instant)> = None;
        loop {
            let statuses = self.statuses();
            let ok: Vec<&ClusterStatus> = statuses
                .iter()
                .filter_map(|(_, s)| s.as_ref().ok())
                .collect();
            if ok.len() == statuses.len()
                && let Some(first) = ok.first()
                && ok
                    .iter()
                    .all(|s| s.applied_index == first.applied_index && s.height == first.height)
            {
                let now = (first.applied_index, first.height);
                let since = match last {
                    Some((seen, since)) if seen == now => since,
                    _ => Instant::now(),
                };
                last = Some((now, since));
                if ok.iter().all(|s| s.finalized_height == Some(s.height))
                    || since.elapsed() >= QUIET
                {
                    let leader = ok.iter().find(|s| s.role == "leader").unwrap_or(first);
                    return Ok((*leader).clone());
                }
            } else {
                last = None;
            }
            if t0.elapsed() >= within {
                let seen: Vec<String> = statuses
                    .iter()
                    .map(|(id, s)| match s {
                        Ok(s) => format!(
                            "{id}: {} height {} final {:?} applied {:?}",
                            s.role, s.height, s.finalized_height, s.applied_index
                        ),
                        Err(e) => format!("{id}: {e:#}"),
                    })
                    .collect();
                bail!(
                    "the members did not converge within {:.1} s ({})",
                    within.as_secs_f64(),
                    seen.join("; ")
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Compares the members' stored chains: every store opened read-only,
    /// the block hash and the finality certificate at every height, the
    /// heads. Every member must have stopped (a running gateway holds its
    /// store).
    pub fn compare_chains(&mut self) -> anyhow::Result<ChainComparison> {
        let running = self.running();
        anyhow::ensure!(
            running.is_empty(),
            "members {running:?} still run: stop them before comparing their stores"
        );
        let mut stores = Vec::new();
        for m in &self.members {
            let s = Store::open_read_only(&m.data_dir())
                .with_context(|| format!("member {}: cannot open its store", m.id))?;
            stores.push((m.id, s));
        }
        let mut heads = Vec::new();
        let mut readings = Vec::new();
        for (id, s) in &stores {
            let h = s.head()?;
            heads.push((*id, h.as_ref().map(|h| h.height)));
            readings.push((*id, h.map_or(0, |h| h.reading_count_total)));
        }
        let mut differences = Vec::new();
        let mut note = |d: String| {
            if differences.len() < MAX_DIFFERENCES {
                differences.push(d);
            }
        };
        let first_head = heads.first().and_then(|h| h.1);
        for (id, h) in &heads {
            if *h != first_head {
                note(format!(
                    "member {id} has its head at {h:?}, member {} at {first_head:?}",
                    heads[0].0
                ));
            }
        }
        let common = heads.iter().map(|(_, h)| *h).min().flatten();
        let max = heads.iter().filter_map(|(_, h)| *h).max();
        let mut certificates = vec![0u64; stores.len()];
        if let Some(max) = max {
            for height in 0..=max {
                let mut hashes = Vec::new();
                let mut certs = Vec::new();
                for (i, (_, s)) in stores.iter().enumerate() {
                    hashes.push(s.header(height)?.map(|h| h.hash()));
                    let c = s
                        .cert(height)?
                        .map(|c| sensorchain_core::codec::encode_to_vec(&c));
                    certificates[i] += u64::from(c.is_some());
                    certs.push(c);
                }
                if common.is_some_and(|c| height > c) {
                    continue; // the heads' difference is noted above
                }
                for i in 1..stores.len() {
                    if hashes[i] != hashes[0] {
                        note(format!(
                            "height {height}: member {} holds block {:?}, member {} block {:?}",
                            stores[i].0, hashes[i], stores[0].0, hashes[0]
                        ));
                    }
                    if certs[i] != certs[0] {
                        note(format!(
                            "height {height}: members {} and {} hold different certificates ({} / {})",
                            stores[i].0,
                            stores[0].0,
                            if certs[i].is_some() { "one" } else { "none" },
                            if certs[0].is_some() { "one" } else { "none" },
                        ));
                    }
                }
            }
        }
        let mut head_certified = true;
        for ((_, s), (_, h)) in stores.iter().zip(&heads) {
            head_certified &= match h {
                Some(h) => s.cert(*h)?.is_some(),
                None => false,
            };
        }
        Ok(ChainComparison {
            head_certified,
            heads,
            readings,
            certificates: stores
                .iter()
                .zip(certificates)
                .map(|((id, _), n)| (*id, n))
                .collect(),
            heights_compared: common.map_or(0, |c| c + 1),
            differences,
        })
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(HTTP_TIMEOUT))
        .build()
        .new_agent()
}

fn get_json(url: &str) -> anyhow::Result<serde_json::Value> {
    let mut r = agent()
        .get(url)
        .call()
        .with_context(|| format!("GET {url}"))?;
    let status = r.status().as_u16();
    let body: serde_json::Value = r
        .body_mut()
        .read_json()
        .with_context(|| format!("GET {url}: not JSON"))?;
    anyhow::ensure!(status == 200, "GET {url}: HTTP {status}: {body}");
    Ok(body)
}

/// `GET /health` of the API at `base` (`http://HOST:PORT`): its answer.
pub fn health(base: &str) -> anyhow::Result<serde_json::Value> {
    get_json(&format!("{base}/health"))
}

/// `GET /cluster` of the API at `base` (`http://HOST:PORT`).
pub fn cluster_status(base: &str) -> anyhow::Result<ClusterStatus> {
    let v = get_json(&format!("{base}/cluster"))?;
    serde_json::from_value(v).with_context(|| format!("GET {base}/cluster: unexpected answer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn made(n: usize) -> (tempfile::TempDir, LocalCluster) {
        let t = tempfile::tempdir().unwrap();
        let c = LocalCluster::create(LocalClusterConfig::new(
            n,
            t.path().join("c"),
            "sensorchain",
        ))
        .unwrap();
        (t, c)
    }

    #[test]
    fn create_writes_a_cluster_every_member_config_accepts() {
        let (_t, c) = made(5);
        assert_eq!(c.members().len(), 5);
        let genesis =
            Block::decode(&std::fs::read(c.dir().join("genesis.block")).unwrap()).unwrap();
        assert_eq!(genesis.hash(), c.genesis().hash());
        let state = crate::node::genesis_state(&genesis).unwrap();
        let mut ports = std::collections::HashSet::new();
        for m in c.members() {
            // loads and passes every check; the paths resolve in its directory
            let cfg = GatewayConfig::load(&m.config_file()).unwrap();
            assert_eq!(cfg.data_dir, m.data_dir());
            assert!(crate::app::preflight(&cfg, &m.config_file()).is_ok());
            assert!(state.has(
                &m.key().public(),
                sensorchain_core::permissions::Permissions::VALIDATE
            ));
            let cl = cfg.cluster.unwrap();
            assert_eq!(cl.node_id, m.id());
            assert_eq!(cl.peers.len(), 4);
            assert!(cl.peers.iter().all(|p| p.id != m.id()));
            for a in [m.sensor_addr(), m.api_addr(), m.peer_addr()] {
                assert!(a.ip().is_loopback());
                assert!(ports.insert(a.port()), "port {} twice", a.port());
            }
            assert!(m.pid().is_none());
        }
        assert!(state.has(
            &c.admin().public(),
            sensorchain_core::permissions::Permissions::ADMIN
        ));
    }

    #[test]
    fn one_gateway_is_a_cluster_of_one_without_a_cluster_table() {
        let (_t, c) = made(1);
        let cfg = GatewayConfig::load(&c.members()[0].config_file()).unwrap();
        assert!(cfg.cluster.is_none());
    }

    #[test]
    fn create_refuses_a_used_directory_and_too_many_members() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("x"), b"x").unwrap();
        let e = LocalCluster::create(LocalClusterConfig::new(3, t.path(), "sensorchain"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not empty"), "{e}");
        let mut cfg = LocalClusterConfig::new(5, t.path().join("new"), "sensorchain");
        let mut rng = rand::rng();
        cfg.members = (0..11)
            .map(|_| Member::of_role(Keypair::generate(&mut rng).public(), Role::Device))
            .collect();
        let e = LocalCluster::create(cfg).unwrap_err().to_string();
        assert!(e.contains("at most 16"), "{e}");
    }

    #[test]
    fn members_not_started_are_not_running_and_chains_need_stopped_members() {
        let (_t, mut c) = made(3);
        assert!(c.running().is_empty());
        assert!(c.kill(1).is_err());
        assert!(c.status(9).is_err());
        // no stores yet: the comparison says which member it could not open
        let e = c.compare_chains().unwrap_err().to_string();
        assert!(e.contains("member 1"), "{e}");
    }
}
