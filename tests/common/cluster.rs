//! A cluster of `sensorchain run` processes on loopback for the fault
//! tests (tests/cluster.rs): keys, genesis and one `gwN.toml` per member in
//! a temporary directory; start, SIGKILL, SIGTERM, SIGSTOP/SIGCONT,
//! restart and wipe-and-restart of any member; `GET /cluster` polling; a
//! load of in-process sensor clients spread over the members that records
//! every answer; and the safety check over the stored chains.
//!
//! **Ports.** Every gateway listens on port 0 (sensor links, API and peer
//! links) and prints the addresses it bound; the members' peer addresses in
//! the configurations are ports of the test's own [`Proxy`], bound to port
//! 0 and held for the whole test, which forwards to wherever the member
//! listens now. No port is picked and released, so no start can collide
//! with another process, and partitions come for free.
//!
//! Compiled by tests/cluster.rs only (as its modules `fixture` and
//! `proxy`, next to `common`), not by every test that uses `common`.
//!
//! **Logs.** Each member's stderr goes to `gwN.log` in the cluster's
//! directory (level `warn`, or `SENSORCHAIN_TEST_LOG`); when a test fails
//! (or with `SENSORCHAIN_TEST_KEEP=1`) the directory is kept and the end of
//! every log printed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sensorchain_core::block::Block;
use sensorchain_core::hash::{ChainId, Hash32};
use sensorchain_core::identity::{Keypair, PublicKey, VerifyingKey};
use sensorchain_core::link::GatewayMsg;
use sensorchain_core::permissions::Role;
use sensorchain_core::reading::Vital;
use sensorchain_core::tx::{Member as ChainMember, Transaction};
use sensorchain_gateway::config::{ClusterSection, GatewayConfig, Peer};
use sensorchain_gateway::keys::write_keypair;
use sensorchain_gateway::net::client::Client;
use sensorchain_gateway::node::ClusterStatus;
use sensorchain_gateway::store::Store;
use sensorchain_gateway::testkit;
use tokio::runtime::Runtime;

use crate::common::{bin, wait_exit};
use crate::proxy::Proxy;

/// The bound on anything a test waits for (an election, progress,
/// convergence, a start): generous, for a shared, busy 2-core machine.
/// Never the thing tested.
pub const BOUND: Duration = Duration::from_secs(120);

/// How long a graceful stop (SIGTERM) may take.
pub const STOP_BOUND: Duration = Duration::from_secs(90);

/// How long one `GET /cluster` may take: the route asks every peer for
/// its report (each up to 2 s, at once), so an isolated member answers
/// after about 2 s; a 2 s bound made the partition test miss it once.
pub const STATUS_WAIT: Duration = Duration::from_secs(15);

/// How long a stopped load waits for the answers in flight.
pub const LOAD_GRACE: Duration = Duration::from_secs(3);

/// Raft timing of the test clusters. openraft 0.9 bounds each
/// AppendEntries by the heartbeat interval: at 100 ms, a CI machine loaded
/// by a release build beside the suite timed out every AppendEntries of a
/// healed old leader for two minutes, so it never heard the new term (the
/// partition test failed once that way); 250 ms is the gateway's default.
pub const HEARTBEAT_MS: u64 = 250;
pub const ELECTION_MS: (u64, u64) = (1_000, 2_000);

/// The addresses a running member bound.
#[derive(Debug, Clone, Copy)]
pub struct Addrs {
    pub tcp: SocketAddr,
    pub api: SocketAddr,
    pub peer: SocketAddr,
}

/// One member: its files and, while it runs, its process.
pub struct Member {
    /// Its member id (index + 1).
    pub id: u64,
    pub config: PathBuf,
    pub data: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    pub addrs: Option<Addrs>,
    paused: bool,
}

impl Member {
    /// True while its process runs (paused or not).
    pub fn is_up(&self) -> bool {
        self.child.is_some()
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

/// Where sensors find each member's sensor listener (none while down).
pub struct AddressBook(Mutex<Vec<Option<SocketAddr>>>);

impl AddressBook {
    fn set(&self, m: usize, a: Option<SocketAddr>) {
        self.0.lock().unwrap()[m] = a;
    }
    fn get(&self, m: usize) -> Option<SocketAddr> {
        self.0.lock().unwrap()[m]
    }
}

/// What a test may change of its cluster.
#[derive(Debug, Clone)]
pub struct Options {
    /// `[cluster] snapshot_every`.
    pub snapshot_every: u64,
    /// `[cluster] snapshot_keep`.
    pub snapshot_keep: u64,
    /// Environment of every member process.
    pub env: Vec<(String, String)>,
    /// The last `joiners` members are new gateways: their keys are not in
    /// the genesis, they run with `join = true` and the others' peer lists
    /// leave them out, so they wait to be added (`sensorchain cluster
    /// add`, which grants their keys `validate,connect` first).
    pub joiners: usize,
    /// `[batch] timeout_ms`: how long a proposer waits to fill a block.
    pub batch_timeout_ms: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            snapshot_every: 8_192,
            snapshot_keep: 8_192,
            env: Vec::new(),
            joiners: 0,
            batch_timeout_ms: 5,
        }
    }
}

/// A cluster of `n` gateway processes on one genesis.
pub struct Cluster {
    dir: Option<tempfile::TempDir>,
    pub root: PathBuf,
    pub keys: Vec<Keypair>,
    pub devices: Vec<Keypair>,
    /// Each device's next sequence number (kept across loads).
    next_seq: Vec<Arc<AtomicU64>>,
    pub genesis: Block,
    pub chain: ChainId,
    pub members: Vec<Member>,
    book: Arc<AddressBook>,
    pub proxy: Proxy,
    pub rt: Runtime,
    env: Vec<(String, String)>,
}

impl Cluster {
    /// Writes the keys, the genesis (an admin, `n` gateways — all
    /// validators — and `devices` devices) and every member's
    /// configuration; starts nothing.
    pub fn new(n: usize, devices: usize) -> Cluster {
        Cluster::new_with(n, devices, Options::default())
    }

    /// [`Cluster::new`] with `opts`.
    pub fn new_with(n: usize, devices: usize, opts: Options) -> Cluster {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::Builder::new()
            .prefix("sensorchain-cluster-")
            .tempdir()
            .unwrap();
        let root = dir.path().to_path_buf();
        let admin = testkit::admin();
        let keys: Vec<Keypair> = (0..n)
            .map(|i| Keypair::from_seed([60 + i as u8; 32]))
            .collect();
        let devices: Vec<Keypair> = (0..devices)
            .map(|i| Keypair::from_seed([120 + i as u8; 32]))
            .collect();
        let founders = n - opts.joiners;
        assert!(founders >= 1, "a cluster needs a founding member");
        let mut others = testkit::device_members(&devices);
        others.extend(
            keys[1..founders]
                .iter()
                .map(|k| ChainMember::of_role(k.public(), Role::Gateway)),
        );
        let genesis = testkit::genesis_block("cluster-faults", &admin, &keys[0], &others);
        std::fs::write(root.join("genesis.block"), genesis.to_vec()).unwrap();
        let proxy = Proxy::new(n, rt.handle());
        let mut members = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let id = i as u64 + 1;
            write_keypair(&root.join(format!("gw{id}.key")), key, false).unwrap();
            let mut cfg = GatewayConfig::new(
                format!("data{id}").into(),
                format!("gw{id}.key").into(),
                "genesis.block".into(),
            );
            cfg.listen.tcp = Some("127.0.0.1:0".into());
            cfg.listen.api = Some("127.0.0.1:0".into());
            cfg.batch.timeout_ms = opts.batch_timeout_ms;
            cfg.cluster = Some(ClusterSection {
                node_id: id,
                listen: Some("127.0.0.1:0".into()),
                heartbeat_ms: HEARTBEAT_MS,
                election_min_ms: ELECTION_MS.0,
                election_max_ms: ELECTION_MS.1,
                snapshot_every: opts.snapshot_every,
                snapshot_keep: opts.snapshot_keep,
                // founders know founders; a joiner knows everyone
                peers: (0..n)
                    .filter(|&j| j != i && (i >= founders || j < founders))
                    .map(|j| Peer {
                        id: j as u64 + 1,
                        addr: proxy.addr(i, j).to_string(),
                        key: keys[j].public().to_string(),
                    })
                    .collect(),
                join: i >= founders,
            });
            let config = root.join(format!("gw{id}.toml"));
            std::fs::write(&config, cfg.to_toml()).unwrap();
            members.push(Member {
                id,
                config,
                data: root.join(format!("data{id}")),
                log: root.join(format!("gw{id}.log")),
                child: None,
                addrs: None,
                paused: false,
            });
        }
        Cluster {
            chain: genesis.header.chain_id,
            dir: Some(dir),
            root,
            next_seq: (0..devices.len())
                .map(|_| Arc::new(AtomicU64::new(1)))
                .collect(),
            keys,
            devices,
            genesis,
            members,
            book: Arc::new(AddressBook(Mutex::new(vec![None; n]))),
            proxy,
            rt,
            env: opts.env,
        }
    }

    /// [`Cluster::new`] and every member started.
    pub fn start(n: usize, devices: usize) -> Cluster {
        let t = Instant::now();
        let mut c = Cluster::new(n, devices);
        c.start_all();
        eprintln!("{n} members started in {:.1?}", t.elapsed());
        c
    }

    /// The number of members.
    pub fn n(&self) -> usize {
        self.members.len()
    }

    /// Starts every member that is down, all at once.
    pub fn start_all(&mut self) {
        let down: Vec<usize> = (0..self.n())
            .filter(|&m| !self.members[m].is_up())
            .collect();
        let spawned: Vec<_> = down.iter().map(|&m| (m, self.spawn(m))).collect();
        for (m, rx) in spawned {
            self.started(m, rx);
        }
    }

    /// Starts member `m` (down) and waits until it listens.
    pub fn start_member(&mut self, m: usize) {
        let rx = self.spawn(m);
        self.started(m, rx);
    }

    /// Spawns `sensorchain run` for member `m`: the addresses it prints
    /// arrive on the returned channel.
    fn spawn(&mut self, m: usize) -> std::sync::mpsc::Receiver<Addrs> {
        self.spawn_with(m, &[])
    }

    /// [`spawn`](Self::spawn) with `extra` added to the environment.
    fn spawn_with(
        &mut self,
        m: usize,
        extra: &[(String, String)],
    ) -> std::sync::mpsc::Receiver<Addrs> {
        let member = &mut self.members[m];
        assert!(member.child.is_none(), "member {} is running", member.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.log)
            .unwrap();
        let level = std::env::var("SENSORCHAIN_TEST_LOG").unwrap_or_else(|_| "warn".into());
        let mut child = Command::new(bin())
            .args(["run", "--config"])
            .arg(&member.config)
            .env("SENSORCHAIN_LOG", level)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn sensorchain run");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || read_start_lines(stdout, tx));
        member.child = Some(child);
        member.paused = false;
        rx
    }

    /// Waits for member `m`'s addresses, then points the proxy and the
    /// sensors at it.
    fn started(&mut self, m: usize, rx: std::sync::mpsc::Receiver<Addrs>) {
        let t = Instant::now();
        let addrs = loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(a) => break a,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) if t.elapsed() < BOUND => {}
                Err(_) => {
                    let status = self.members[m]
                        .child
                        .as_mut()
                        .and_then(|c| c.try_wait().ok().flatten());
                    panic!(
                        "member {} did not start within {BOUND:?} (exit: {status:?})",
                        self.members[m].id
                    );
                }
            }
        };
        self.listening(m, addrs);
    }

    fn listening(&mut self, m: usize, addrs: Addrs) {
        self.members[m].addrs = Some(addrs);
        self.proxy.set_target(m, Some(addrs.peer));
        self.book.set(m, Some(addrs.tcp));
    }

    /// Starts member `m` (down) with `extra` in its environment (a fault
    /// hook such as `SENSORCHAIN_TEST_KILL_AT`): true once it listens,
    /// false if it exited before (the hook fired during its start).
    pub fn start_member_with(&mut self, m: usize, extra: &[(String, String)]) -> bool {
        let rx = self.spawn_with(m, extra);
        let t = Instant::now();
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(a) => {
                    self.listening(m, a);
                    return true;
                }
                Err(e) => {
                    let exited = self.members[m]
                        .child
                        .as_mut()
                        .is_some_and(|c| c.try_wait().ok().flatten().is_some());
                    if exited {
                        self.went_down(m);
                        return false;
                    }
                    let closed = e == std::sync::mpsc::RecvTimeoutError::Disconnected;
                    assert!(
                        t.elapsed() < BOUND,
                        "member {} neither started nor exited within {BOUND:?} (stdout closed: {closed})",
                        self.members[m].id
                    );
                    if closed {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
        }
    }

    /// Waits up to `bound` for member `m` to exit by itself (reaped); true
    /// if it did, false if it still runs.
    pub fn wait_exited(&mut self, m: usize, bound: Duration) -> bool {
        let exited = match self.members[m].child.as_mut() {
            Some(c) => wait_exit(c, bound).is_some(),
            None => true,
        };
        if exited {
            self.went_down(m);
        }
        exited
    }

    fn went_down(&mut self, m: usize) {
        self.members[m].child = None;
        self.members[m].addrs = None;
        self.members[m].paused = false;
        self.proxy.set_target(m, None);
        self.book.set(m, None);
    }

    /// SIGKILL of member `m`, reaped.
    pub fn kill(&mut self, m: usize) {
        self.kill_many(&[m]);
    }

    /// SIGKILL of all of `ms` at once (every signal sent before any is
    /// reaped).
    pub fn kill_many(&mut self, ms: &[usize]) {
        for &m in ms {
            if let Some(c) = self.members[m].child.as_mut() {
                let _ = c.kill();
            }
        }
        for &m in ms {
            if let Some(c) = self.members[m].child.as_mut() {
                let _ = c.wait();
            }
            self.went_down(m);
        }
    }

    /// SIGTERM of member `m`; true if it exited (cleanly: status 0)
    /// within [`STOP_BOUND`]. One that did not is killed.
    pub fn stop(&mut self, m: usize) -> bool {
        self.stop_many(&[m])
    }

    /// SIGTERM of every member that runs, at once; true if all exited
    /// cleanly within [`STOP_BOUND`].
    pub fn stop_all(&mut self) -> bool {
        let up: Vec<usize> = (0..self.n()).filter(|&m| self.members[m].is_up()).collect();
        self.stop_many(&up)
    }

    fn stop_many(&mut self, ms: &[usize]) -> bool {
        for &m in ms {
            if self.members[m].paused {
                self.resume(m);
            }
            if let Some(pid) = self.members[m].pid() {
                signal("TERM", pid);
            }
        }
        let mut clean = true;
        for &m in ms {
            let id = self.members[m].id;
            if let Some(c) = self.members[m].child.as_mut() {
                match wait_exit(c, STOP_BOUND) {
                    Some(s) if s.success() => {}
                    Some(s) => {
                        eprintln!("member {id} exited with {s} on SIGTERM");
                        clean = false;
                    }
                    None => {
                        eprintln!("member {id} did not stop within {STOP_BOUND:?}: killed");
                        let _ = c.kill();
                        let _ = c.wait();
                        clean = false;
                    }
                }
            }
            self.went_down(m);
        }
        clean
    }

    /// SIGSTOP of member `m`.
    pub fn pause(&mut self, m: usize) {
        signal("STOP", self.members[m].pid().expect("member runs"));
        self.members[m].paused = true;
    }

    /// SIGCONT of member `m`.
    pub fn resume(&mut self, m: usize) {
        signal("CONT", self.members[m].pid().expect("member runs"));
        self.members[m].paused = false;
    }

    /// SIGKILL of member `m`, then started again on its directory.
    pub fn restart(&mut self, m: usize) {
        self.kill(m);
        self.start_member(m);
    }

    /// Member `m` (down) loses its data directory (chain and Raft log);
    /// its key and configuration stay.
    pub fn wipe(&mut self, m: usize) {
        assert!(!self.members[m].is_up());
        std::fs::remove_dir_all(&self.members[m].data).unwrap();
    }

    /// `GET /cluster` of member `m` (none: down, paused or no answer
    /// within 2 s).
    pub fn status(&self, m: usize) -> Option<ClusterStatus> {
        let member = &self.members[m];
        if member.paused {
            return None;
        }
        let api = member.addrs?.api;
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(STATUS_WAIT))
            .build()
            .new_agent();
        let mut r = agent.get(format!("http://{api}/cluster")).call().ok()?;
        r.body_mut().read_json::<ClusterStatus>().ok()
    }

    /// The statuses of the members in `ms` that answer.
    pub fn statuses(&self, ms: &[usize]) -> Vec<(usize, ClusterStatus)> {
        ms.iter()
            .filter_map(|&m| self.status(m).map(|s| (m, s)))
            .collect()
    }

    /// Every member index.
    pub fn all(&self) -> Vec<usize> {
        (0..self.n()).collect()
    }

    /// The members up and not paused.
    pub fn running(&self) -> Vec<usize> {
        (0..self.n())
            .filter(|&m| self.members[m].is_up() && !self.members[m].paused)
            .collect()
    }

    /// Waits until one of `among` leads and every other of them that
    /// answers follows it; returns it (index). `not` is excluded as the
    /// leader, and the term must be above `above_term`.
    pub fn wait_leader(&self, among: &[usize], not: Option<usize>, above_term: u64) -> usize {
        let t = Instant::now();
        loop {
            let st = self.statuses(among);
            let leader = st.iter().find(|(m, s)| {
                s.role == "leader"
                    && s.leader == Some(s.node_id)
                    && Some(*m) != not
                    && s.term > above_term
            });
            if let Some((m, s)) = leader
                && st.len() * 2 > among.len()
                && st
                    .iter()
                    .all(|(_, o)| o.leader == Some(s.node_id) && o.term == s.term)
            {
                return *m;
            }
            assert!(
                t.elapsed() < BOUND,
                "no leader among {among:?} within {BOUND:?}: {st:#?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until member `m` knows a leader and has applied what the
    /// other running members had applied when this was called.
    pub fn wait_caught_up(&self, m: usize) {
        let others: Vec<usize> = self.running().into_iter().filter(|&o| o != m).collect();
        let target = self
            .statuses(&others)
            .iter()
            .filter_map(|(_, s)| s.applied_index)
            .max();
        let t = Instant::now();
        loop {
            let s = self.status(m);
            if s.as_ref()
                .is_some_and(|s| s.leader.is_some() && s.applied_index >= target)
            {
                return;
            }
            assert!(
                t.elapsed() < BOUND,
                "member {} did not catch up to {target:?} within {BOUND:?}: {s:#?}",
                m + 1
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The highest chain height the running members other than `m` report.
    pub fn others_height(&self, m: usize) -> u64 {
        self.statuses(&self.running())
            .iter()
            .filter(|(o, _)| *o != m)
            .map(|(_, s)| s.height)
            .max()
            .unwrap_or(0)
    }

    /// Waits until member `m` has a chain at height `target` or above,
    /// final there.
    pub fn wait_reached(&self, m: usize, target: u64) {
        let t = Instant::now();
        loop {
            let s = self.status(m);
            if s.as_ref()
                .is_some_and(|s| s.height >= target && s.finalized_height >= Some(target))
            {
                return;
            }
            assert!(
                t.elapsed() < BOUND,
                "member {} did not reach height {target}: {s:?}",
                m + 1
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the leader lists member `m` as a voter.
    pub fn wait_voter(&self, m: usize) {
        let t = Instant::now();
        loop {
            let l = self.wait_leader(&self.all(), None, 0);
            let voter = self
                .status(l)
                .is_some_and(|s| s.members.iter().any(|x| x.id == m as u64 + 1 && x.voter));
            if voter {
                return;
            }
            assert!(t.elapsed() < BOUND, "member {} is not a voter again", m + 1);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every running member agrees: one leader, one term, the
    /// same Raft log and applied positions, the same chain height, every
    /// block final. Returns the height.
    pub fn wait_converged(&self) -> u64 {
        let t = Instant::now();
        let ms = self.running();
        loop {
            let st = self.statuses(&ms);
            let agreed = st.len() == ms.len()
                && st.iter().filter(|(_, s)| s.role == "leader").count() == 1
                && st.iter().all(|(_, s)| {
                    let f = &st[0].1;
                    s.leader == f.leader
                        && s.term == f.term
                        && s.last_log_index == f.last_log_index
                        && s.applied_index == f.applied_index
                        && s.height == f.height
                        && s.finalized_height == Some(s.height)
                        && s.health == "ok"
                });
            if agreed {
                return st[0].1.height;
            }
            assert!(
                t.elapsed() < BOUND,
                "members did not converge within {BOUND:?}: {st:#?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts `per_member` sensors on each member (they fail over to the
    /// next member when theirs is unreachable), each sending `window`
    /// readings at a time.
    pub fn load(&self, per_member: usize, window: usize) -> Load {
        let n = self.n();
        let sensors = (per_member * n).min(self.devices.len());
        assert!(sensors > 0, "no devices for a load");
        let log = Arc::new(LoadLog::default());
        let stop = Arc::new(AtomicBool::new(false));
        let gateways: Vec<PublicKey> = self.keys.iter().map(|k| k.public()).collect();
        let tasks = (0..sensors)
            .map(|d| {
                let s = Sensor {
                    device: d,
                    key: self.devices[d].clone(),
                    chain: self.chain,
                    gateways: gateways.clone(),
                    next_seq: self.next_seq[d].clone(),
                    member: d % n,
                    n,
                    window,
                    book: self.book.clone(),
                    log: log.clone(),
                    stop: stop.clone(),
                };
                self.rt.spawn(s.run())
            })
            .collect();
        Load { log, stop, tasks }
    }

    /// Stops the load and returns everything it recorded: each sensor
    /// finishes the readings it has in flight if they are answered within
    /// [`LOAD_GRACE`], else it is dropped with them unanswered (a reading
    /// in limbo — forwarded to a leader that lost it — is answered busy
    /// only after 30 s).
    pub fn stop_load(&self, mut load: Load) -> Vec<Sent> {
        load.stop.store(true, Ordering::Release);
        let t = Instant::now();
        for h in std::mem::take(&mut load.tasks) {
            let left = LOAD_GRACE.saturating_sub(t.elapsed());
            self.rt.block_on(async {
                let abort = h.abort_handle();
                if tokio::time::timeout(left, h).await.is_err() {
                    abort.abort();
                }
            });
        }
        eprintln!("load: {}", load.summary());
        load.log.take()
    }

    /// Stops every member gracefully (a member that does not stop cleanly
    /// fails the test, after the check) and runs the safety check over
    /// their stored chains with `acked` (every reading acknowledged).
    pub fn stop_and_check(&mut self, sent: &[Sent]) -> Report {
        let t = Instant::now();
        let clean = self.stop_all();
        eprintln!("stopped in {:.1?}", t.elapsed());
        let report = check_safety(self, sent);
        assert!(clean, "a member did not stop cleanly on SIGTERM");
        report
    }

    /// Keeps the directory (called on failure).
    fn keep(&mut self) {
        if let Some(d) = self.dir.take() {
            let p = d.keep();
            eprintln!("cluster directory kept: {}", p.display());
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(c) = m.child.as_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let keep = std::env::var_os("SENSORCHAIN_TEST_KEEP").is_some();
        if std::thread::panicking() || keep {
            for m in &self.members {
                let text = std::fs::read_to_string(&m.log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(40)..];
                eprintln!("---- end of member {}'s log ----", m.id);
                for l in tail {
                    eprintln!("{l}");
                }
            }
            self.keep();
        }
    }
}

/// `kill -SIG PID`.
fn signal(sig: &str, pid: u32) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} {pid} failed");
}

/// Reads `sensorchain run`'s start lines (`sensors tcp://A`, `api
/// http://A`, `cluster … peer links on A`) and sends the addresses; then
/// drains the rest of its stdout.
fn read_start_lines(stdout: std::process::ChildStdout, tx: std::sync::mpsc::Sender<Addrs>) {
    let (mut tcp, mut api) = (None, None);
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let Ok(line) = line else { return };
        let word = |prefix: &str| -> Option<SocketAddr> {
            let rest = line.split_once(prefix)?.1;
            rest.split_whitespace().next()?.parse().ok()
        };
        if line.starts_with("sensors") {
            tcp = word("tcp://");
        } else if line.starts_with("api") {
            api = word("http://");
        } else if line.starts_with("cluster") {
            if let (Some(tcp), Some(api), Some(peer)) = (tcp, api, word("peer links on ")) {
                let _ = tx.send(Addrs { tcp, api, peer });
            }
            break;
        }
    }
    for _ in lines {}
}

/// What became of one reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Acknowledged final, at this height.
    Ack(u64),
    Busy,
    Reject(String),
}

/// One reading sent, and its answer.
#[derive(Debug, Clone)]
pub struct Sent {
    pub tx_id: Hash32,
    pub device: usize,
    pub seq: u64,
    /// The member it was sent to.
    pub member: usize,
    /// When its batch was sent (at or before the reading).
    pub sent: Instant,
    /// When its batch was answered (at or after the reading's answer).
    pub answered: Instant,
    pub answer: Answer,
}

impl Sent {
    pub fn acked(&self) -> bool {
        matches!(self.answer, Answer::Ack(_))
    }
}

/// Everything a load recorded, and counts of its failures.
#[derive(Default)]
pub struct LoadLog {
    sent: Mutex<Vec<Sent>>,
    /// Batches whose link broke (answers unknown) or that timed out.
    broken: AtomicU64,
    connects_failed: AtomicU64,
}

impl LoadLog {
    fn take(&self) -> Vec<Sent> {
        std::mem::take(&mut *self.sent.lock().unwrap())
    }
}

/// A running load.
pub struct Load {
    log: Arc<LoadLog>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Acknowledged readings whose batch was sent at or after `since` to
    /// one of `members` (every member: `None`).
    pub fn acked_since(&self, since: Instant, members: Option<&[usize]>) -> usize {
        self.log
            .sent
            .lock()
            .unwrap()
            .iter()
            .filter(|s| {
                s.acked() && s.sent >= since && members.is_none_or(|ms| ms.contains(&s.member))
            })
            .count()
    }

    /// Waits until at least `n` readings sent at or after `since` (to one
    /// of `members`) are acknowledged.
    pub fn wait_acked_since(&self, since: Instant, members: Option<&[usize]>, n: usize) {
        let t = Instant::now();
        loop {
            let got = self.acked_since(since, members);
            if got >= n {
                return;
            }
            assert!(
                t.elapsed() < BOUND,
                "only {got} of {n} readings sent since {:?} ago acknowledged within {BOUND:?} ({})",
                since.elapsed(),
                self.summary()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What was recorded so far (a copy).
    pub fn snapshot(&self) -> Vec<Sent> {
        self.log.sent.lock().unwrap().clone()
    }

    /// Counts of answers, for the test's output.
    pub fn summary(&self) -> String {
        summary(
            &self.log.sent.lock().unwrap(),
            self.log.broken.load(Ordering::Relaxed),
            self.log.connects_failed.load(Ordering::Relaxed),
        )
    }
}

/// `acks, busy, rejects` of `sent` (with the reasons of rejects).
pub fn summary(sent: &[Sent], broken: u64, connects_failed: u64) -> String {
    let acks = sent.iter().filter(|s| s.acked()).count();
    let busy = sent.iter().filter(|s| s.answer == Answer::Busy).count();
    let mut rejects: BTreeMap<&str, usize> = BTreeMap::new();
    for s in sent {
        if let Answer::Reject(r) = &s.answer {
            *rejects.entry(r.as_str()).or_default() += 1;
        }
    }
    format!(
        "{acks} acked, {busy} busy, rejected {rejects:?}, {broken} batches unanswered, {connects_failed} connects failed"
    )
}

/// One simulated sensor of a [`Load`].
struct Sensor {
    device: usize,
    key: Keypair,
    chain: ChainId,
    gateways: Vec<PublicKey>,
    next_seq: Arc<AtomicU64>,
    member: usize,
    n: usize,
    window: usize,
    book: Arc<AddressBook>,
    log: Arc<LoadLog>,
    stop: Arc<AtomicBool>,
}

/// How long a sensor waits for a connection.
const CONNECT_WAIT: Duration = Duration::from_secs(5);
/// How long a sensor waits for an answer before it takes the link for
/// dead (a forwarded reading is answered busy after 30 s at the latest).
const ANSWER_WAIT: Duration = Duration::from_secs(40);

impl Sensor {
    async fn run(mut self) {
        let pause = |ms| tokio::time::sleep(Duration::from_millis(ms));
        while !self.stop.load(Ordering::Acquire) {
            let Some(addr) = self.book.get(self.member) else {
                self.member = (self.member + 1) % self.n;
                pause(20).await;
                continue;
            };
            let connect = Client::connect(addr, &self.chain, &self.key, &self.gateways);
            let mut c = match tokio::time::timeout(CONNECT_WAIT, connect).await {
                Ok(Ok(c)) => c,
                _ => {
                    self.log.connects_failed.fetch_add(1, Ordering::Relaxed);
                    self.member = (self.member + 1) % self.n;
                    pause(50).await;
                    continue;
                }
            };
            c.set_timeout(ANSWER_WAIT);
            while !self.stop.load(Ordering::Acquire) {
                let first = self
                    .next_seq
                    .fetch_add(self.window as u64, Ordering::AcqRel);
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as u64;
                let txs: Vec<Vec<u8>> = (0..self.window as u64)
                    .map(|k| {
                        sensorchain_gateway::sim::reading_tx(
                            &self.key,
                            &self.chain,
                            first + k,
                            now_ms,
                            3,
                            Vital::HeartRate {
                                bpm: 60 + ((first + k) % 40) as u16,
                            },
                        )
                    })
                    .collect();
                let sent = Instant::now();
                match c.submit_pipelined(&txs, self.window).await {
                    Ok(answers) => {
                        let answered = Instant::now();
                        let mut busy = 0;
                        let mut records = Vec::with_capacity(txs.len());
                        for (k, (tx, m)) in txs.iter().zip(answers).enumerate() {
                            let answer = match m {
                                GatewayMsg::Ack { height, .. } => Answer::Ack(height),
                                GatewayMsg::Reject { reason, .. } => {
                                    Answer::Reject(format!("{reason:?}"))
                                }
                                _ => {
                                    busy += 1;
                                    Answer::Busy
                                }
                            };
                            records.push(Sent {
                                tx_id: Transaction::id_of_encoded(tx),
                                device: self.device,
                                seq: first + k as u64,
                                member: self.member,
                                sent,
                                answered,
                                answer,
                            });
                        }
                        self.log.sent.lock().unwrap().extend(records);
                        if busy == txs.len() {
                            // an election: resend later
                            pause(100).await;
                        }
                    }
                    Err(_) => {
                        // the link broke (a member killed or paused): the
                        // answers are unknown; try the next member
                        self.log.broken.fetch_add(1, Ordering::Relaxed);
                        self.member = (self.member + 1) % self.n;
                        break;
                    }
                }
            }
        }
    }
}

/// What the safety check found.
#[derive(Debug)]
pub struct Report {
    /// Each member's head height.
    pub heads: Vec<u64>,
    /// Certificates checked (all members).
    pub certs: usize,
    /// Acknowledged readings found (on every member).
    pub acked: usize,
}

/// The safety check over the stored chains of the stopped members (not
/// their logs): identical prefixes and head states; at most one block
/// certified per height across all members; every stored certificate a
/// quorum of valid votes of its height's validator set; every acknowledged
/// reading in every member's chain exactly once, in a final block; no
/// transaction twice; and `sensorchain audit --data-dir` passes for each.
pub fn check_safety(c: &Cluster, sent: &[Sent]) -> Report {
    assert!(
        c.members.iter().all(|m| !m.is_up()),
        "the check reads stopped members' stores"
    );
    let audits: Vec<_> = c
        .members
        .iter()
        .map(|m| {
            let (dir, root) = (m.data.clone(), c.root.clone());
            std::thread::spawn(move || {
                crate::common::run(
                    &["audit", "--data-dir", dir.to_str().unwrap(), "--json"],
                    &root,
                )
            })
        })
        .collect();
    struct Chain {
        id: u64,
        hashes: Vec<Hash32>,
        state_roots: Vec<Hash32>,
        /// Height of the highest stored certificate.
        final_height: Option<u64>,
        /// Transaction id -> heights it is stored at.
        txs: HashMap<Hash32, Vec<u64>>,
    }
    let mut chains = Vec::new();
    let mut certified: BTreeMap<u64, (Hash32, u64)> = BTreeMap::new();
    let mut certs = 0;
    for m in &c.members {
        let store = Store::open_read_only(&m.data)
            .unwrap_or_else(|e| panic!("member {}: cannot open its store: {e}", m.id));
        let head = store.head().unwrap().expect("a stored chain").height;
        let mut chain = Chain {
            id: m.id,
            hashes: Vec::new(),
            state_roots: Vec::new(),
            final_height: None,
            txs: HashMap::new(),
        };
        for h in 0..=head {
            let block = store
                .block(h)
                .unwrap()
                .unwrap_or_else(|| panic!("member {}: no block at {h} below head {head}", m.id));
            let header = &block.header;
            let hash = header.hash();
            if h > 0 {
                assert_eq!(
                    header.prev_hash,
                    chain.hashes[h as usize - 1],
                    "member {}: block {h} does not link to block {}",
                    m.id,
                    h - 1
                );
            }
            chain.hashes.push(hash);
            chain.state_roots.push(header.state_root);
            for tx in block.txs.iter() {
                let id = Transaction::id_of_encoded(&tx.to_vec());
                chain.txs.entry(id).or_default().push(h);
            }
            if let Some(cert) = store.cert(h).unwrap() {
                certs += 1;
                assert_eq!(
                    (cert.height, cert.block_hash),
                    (h, hash),
                    "member {}: the certificate stored at {h} names another block",
                    m.id
                );
                let set = store
                    .validator_set_at(h)
                    .unwrap()
                    .unwrap_or_else(|| panic!("member {}: no validator set at {h}", m.id));
                let keys: Vec<VerifyingKey> = set
                    .iter()
                    .map(|k| VerifyingKey::from_public(k).unwrap())
                    .collect();
                if let Err(e) = cert.verify(header, &keys) {
                    panic!(
                        "member {}: the certificate at {h} does not verify: {e:?}",
                        m.id
                    );
                }
                match certified.get(&h) {
                    Some((other, by)) => assert_eq!(
                        *other, hash,
                        "two blocks certified at height {h}: member {by} and member {}",
                        m.id
                    ),
                    None => {
                        certified.insert(h, (hash, m.id));
                    }
                }
                chain.final_height = Some(h);
            }
        }
        chains.push(chain);
    }
    // identical prefixes, the same state at the same head height
    for a in &chains {
        for b in &chains {
            let common = a.hashes.len().min(b.hashes.len());
            if let Some(h) = (0..common).find(|&h| a.hashes[h] != b.hashes[h]) {
                panic!(
                    "fork: members {} and {} hold different blocks at height {h}",
                    a.id, b.id
                );
            }
            if a.hashes.len() == b.hashes.len() {
                assert_eq!(a.state_roots.last(), b.state_roots.last());
            }
        }
    }
    // no transaction twice; every acknowledged reading on every member,
    // once, final
    let acked: Vec<&Sent> = sent.iter().filter(|s| s.acked()).collect();
    for chain in &chains {
        if let Some((id, hs)) = chain.txs.iter().find(|(_, hs)| hs.len() > 1) {
            panic!(
                "member {}: transaction {id} stored at heights {hs:?}",
                chain.id
            );
        }
        let fin = chain.final_height;
        for s in &acked {
            let Some(hs) = chain.txs.get(&s.tx_id) else {
                panic!(
                    "member {}: acknowledged reading {} (device {}, seq {}, sent to member {}, {:?}) is not in its chain",
                    chain.id,
                    s.tx_id,
                    s.device,
                    s.seq,
                    s.member + 1,
                    s.answer
                );
            };
            assert!(
                fin.is_some_and(|f| hs[0] <= f),
                "member {}: acknowledged reading {} at height {} is above its last certificate ({fin:?})",
                chain.id,
                s.tx_id,
                hs[0]
            );
            if let Answer::Ack(h) = s.answer {
                assert_eq!(
                    h, hs[0],
                    "member {}: reading {} acknowledged at height {h} is stored at {}",
                    chain.id, s.tx_id, hs[0]
                );
            }
        }
    }
    for (m, a) in c.members.iter().zip(audits) {
        let (code, out, err) = a.join().unwrap();
        assert_eq!(
            code, 0,
            "member {}: sensorchain audit failed: {out} {err}",
            m.id
        );
    }
    let ids: HashSet<Hash32> = acked.iter().map(|s| s.tx_id).collect();
    Report {
        heads: chains.iter().map(|c| c.hashes.len() as u64 - 1).collect(),
        certs,
        acked: ids.len(),
    }
}
