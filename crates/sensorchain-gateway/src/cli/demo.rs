//! `sensorchain demo`: a whole network on this machine, for a newcomer.
//!
//! Makes a cluster of `--gateways` gateways (default 5) in a directory
//! ([`LocalCluster`]: keys, a genesis block with the admin, the gateways as
//! validators, a doctor and an insurer, one `gateway.toml` per gateway) and
//! runs each gateway as its own process (this binary, `run --config`).
//! Registers the sensors and patients with signed admin transactions over
//! an encrypted link to the leader, and the patients' consents to the
//! doctor; then streams readings from simulated sensors (in this process,
//! each over its own link, spread over the gateways; half of them sealed for
//! the patient and the doctor). While they stream it plays the scenes: a
//! stranger refused, a replay and an implausible value rejected, the admin
//! revoking a sensor whose live session is dropped, and — with three
//! gateways or more — the leader killed with SIGKILL, a new one elected,
//! the killed gateway restarted and catching up, the sensors that were on
//! it moving to the others. Then it waits until every gateway holds the
//! same final head, stops them (SIGTERM), compares their stored chains
//! block by block, checks that every acknowledged reading is in the chain,
//! shows the doctor opening a sealed reading the insurer cannot, audits a
//! chain, tampers with a copy and shows the audit catching it, and prints a
//! summary (or one JSON object with `--json`).
//!
//! The demo's own steps run on this thread; the sensors and the links of
//! the scenes on a tokio runtime.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use sensorchain_core::block::Block;
use sensorchain_core::hash::ChainId;
use sensorchain_core::identity::{Keypair, PublicKey};
use sensorchain_core::link::{DeviceMsg, GatewayMsg, Refusal};
use sensorchain_core::permissions::{Permissions, Role};
use sensorchain_core::reading::Vital;
use sensorchain_core::tx::{Member, Payload, Transaction, TxBody, TxKind, sealed_binding};
use serde_json::json;

use super::DemoArgs;
use sensorchain_gateway::cluster::NodeId;
use sensorchain_gateway::cluster::local::{LocalCluster, LocalClusterConfig};
use sensorchain_gateway::keys::write_keypair;
use sensorchain_gateway::net::client::{Client, ClientError};
use sensorchain_gateway::node::now_ms;
use sensorchain_gateway::sim::SimSensor;
use sensorchain_gateway::store::Store;

/// The people and devices of the demo (the gateways and the admin are the
/// cluster's).
struct Cast {
    doctor: Keypair,
    insurer: Keypair,
    stranger: Keypair,
    sensors: Vec<Keypair>,
    patients: Vec<Keypair>,
}

fn cast(n: usize) -> Cast {
    let mut rng = rand::rng();
    let mut k = || Keypair::generate(&mut rng);
    Cast {
        doctor: k(),
        insurer: k(),
        stranger: k(),
        sensors: (0..n).map(|_| k()).collect(),
        patients: (0..n).map(|_| k()).collect(),
    }
}

struct Out {
    json: bool,
}

impl Out {
    fn say(&self, s: impl AsRef<str>) {
        if !self.json {
            println!("{}", s.as_ref());
        }
    }
}

/// How long a member may take to start and answer.
const READY: Duration = Duration::from_secs(60);

/// How long the demo waits for a leader.
const ELECTION: Duration = Duration::from_secs(30);

/// How long the members may take to agree on the final head at the end, or
/// to stop.
const SETTLE: Duration = Duration::from_secs(60);

/// Readings each simulated sensor keeps in flight.
const WINDOW: usize = 64;

/// A session whose oldest reading has had no answer for this long, with no
/// answer at all meanwhile, is given up: the sensor connects again (to the
/// next gateway) and resends what is unanswered.
const STALL: Duration = Duration::from_secs(4);

/// How long sensors wait for their last answers after the stream stops.
const DRAIN: Duration = Duration::from_secs(15);

/// Runs the demo.
pub fn demo(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.sensors >= 1, "--sensors must be at least 1");
    anyhow::ensure!(args.seconds >= 1, "--seconds must be at least 1");
    anyhow::ensure!(
        (1..=9).contains(&args.gateways),
        "--gateways must be 1 to 9 (the genesis block holds at most 16 members: the admin, the gateways, a doctor and an insurer)"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    run_demo(args, &rt)
}

/// What one simulated sensor saw (shared with the demo's thread).
#[derive(Default)]
struct Board {
    sent: AtomicU64,
    acked: AtomicU64,
    busy: AtomicU64,
    /// Sessions opened again after a link was lost or stalled.
    reconnects: AtomicU64,
    /// Readings sent again on a new session (their first answer was lost).
    resent: AtomicU64,
    /// The gateway (index) the sensor's session is on.
    gateway: AtomicUsize,
    /// Sequences acknowledged.
    acked_seqs: Mutex<Vec<u64>>,
    /// Sequences sent again after a lost answer and then answered replay:
    /// already in the chain (or overtaken by a later reading).
    resent_replays: Mutex<Vec<u64>>,
    rejects: Mutex<BTreeMap<String, u64>>,
    refusals: Mutex<BTreeMap<String, u64>>,
    latency_us: Mutex<Vec<u32>>,
    /// The exact bytes of its first acknowledged reading.
    first_acked: Mutex<Option<Vec<u8>>>,
    /// When its live session ended before a reconnect was refused (revoked),
    /// how it ended, and how the reconnect was answered.
    revoked: Mutex<Option<(Instant, String, String)>>,
}

fn bump(m: &Mutex<BTreeMap<String, u64>>, key: &str) {
    if let Ok(mut m) = m.lock() {
        *m.entry(key.to_string()).or_insert(0) += 1;
    }
}

fn refusal_name(r: Refusal) -> &'static str {
    match r {
        Refusal::UnknownIdentity => "unknown_identity",
        Refusal::NotPermitted => "not_permitted",
        Refusal::WrongChain => "wrong_chain",
        Refusal::VersionMismatch => "version_mismatch",
        Refusal::Busy => "busy",
        Refusal::HandshakeFailed => "handshake_failed",
        Refusal::Revoked => "revoked",
        Refusal::ShuttingDown => "shutting_down",
    }
}

/// Where every link of the demo goes: the gateways' sensor ports and keys.
#[derive(Clone)]
struct Links {
    chain: ChainId,
    addrs: Arc<Vec<SocketAddr>>,
    trusted: Arc<Vec<PublicKey>>,
}

impl Links {
    async fn connect(&self, gw: usize, key: &Keypair) -> Result<Client, ClientError> {
        Client::connect(self.addrs[gw], &self.chain, key, &self.trusted).await
    }
}

fn run_demo(args: &DemoArgs, rt: &tokio::runtime::Runtime) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let out = Out { json: args.json };
    let (tmp, dir) = super::dir_or_temp(args.data_dir.as_ref(), "sensorchain-demo-")?;
    anyhow::ensure!(
        tmp.is_some() || std::fs::read_dir(&dir)?.next().is_none(),
        "{} is not empty: the demo creates a new network (choose an empty or new directory)",
        dir.display()
    );
    let n = args.gateways;
    let failover = n >= 3;
    let s = args.seconds;
    let kill_at = s.saturating_mul(3).div_ceil(10).max(4);
    let restart_at = kill_at + s.div_ceil(4).max(3);
    let stream_for = if failover { s.max(restart_at + 2) } else { s };
    out.say(format!(
        "sensorchain demo: {n} gateway{} (one process each), {} sensors for {stream_for} s, files in {}",
        if n == 1 { "" } else { "s" },
        args.sensors,
        dir.display()
    ));

    // 1. the cluster, the people and the devices
    let c = cast(args.sensors);
    let binary = std::env::current_exe().context("cannot find this program's path")?;
    let mut cfg = LocalClusterConfig::new(n, dir.join("cluster"), binary);
    cfg.name = "sensorchain-demo".into();
    cfg.runner = runner(args.gateway_runner.as_deref());
    cfg.members = vec![
        Member::of_role(c.doctor.public(), Role::Doctor),
        Member::of_role(c.insurer.public(), Role::Insurer),
    ];
    let mut cluster = LocalCluster::create(cfg)?;
    let chain = cluster.chain_id();
    let admin = cluster.admin().clone();
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys)?;
    for (name, k) in [
        ("doctor", &c.doctor),
        ("insurer", &c.insurer),
        ("stranger", &c.stranger),
    ] {
        write_keypair(&keys.join(format!("{name}.key")), k, false)?;
    }
    for (i, (s, p)) in c.sensors.iter().zip(&c.patients).enumerate() {
        write_keypair(&keys.join(format!("sensor-{i}.key")), s, false)?;
        write_keypair(&keys.join(format!("patient-{i}.key")), p, false)?;
    }
    out.say(format!(
        "  chain {}…, genesis {}…: the admin, {n} gateways (validators), a doctor and an insurer",
        &chain.to_string()[..16],
        &cluster.genesis().hash().to_string()[..16]
    ));

    // 2. the gateways, each its own process
    let t_start = Instant::now();
    cluster.start_all(READY)?;
    for m in cluster.members() {
        out.say(format!(
            "  gateway {} (pid {}): sensors on {}, API {}, peers on {}",
            m.id(),
            m.pid().unwrap_or(0),
            m.sensor_addr(),
            m.api_url(),
            m.peer_addr()
        ));
    }
    // the dashboard is served by every gateway, on its API's address
    out.say(format!(
        "  dashboard: {}/dashboard (also on every gateway's API; log in with a key file of {} or {})",
        cluster.members()[0].api_url(),
        keys.display(),
        dir.join("cluster").join("admin.key").display()
    ));
    let leader = cluster.wait_leader(ELECTION)?;
    out.say(format!(
        "  gateway {} leads (term {}), {} ms after the processes started",
        leader.id,
        leader.term,
        t_start.elapsed().as_millis()
    ));
    let links = Links {
        chain,
        addrs: Arc::new(cluster.members().iter().map(|m| m.sensor_addr()).collect()),
        trusted: Arc::new(cluster.gateway_keys()),
    };
    let index_of = |id: NodeId| (id - 1) as usize;

    // 3. sensors and patients registered, assigned; consents
    let (admin_txs, consents) = setup_transactions(&c, &admin, &chain)?;
    let n_setup = admin_txs.len() + consents.len();
    // the admin's next sequence number, after its setup transactions
    let admin_seq = admin_txs.len() as u64 + 1;
    let to_leader = index_of(leader.id);
    rt.block_on(async {
        let mut a = Client::connect_retrying(
            links.addrs[to_leader],
            &chain,
            &admin,
            &links.trusted,
            Duration::from_secs(30),
        )
        .await
        .map_err(|e| anyhow::anyhow!("the admin cannot connect to the leader: {e}"))?;
        let answers = a.submit_pipelined(&admin_txs, 64).await?;
        a.close().await;
        all_acked("admin", &answers)
    })?;
    // every gateway must know the patients before they connect to it
    cluster.wait_converged(SETTLE)?;
    rt.block_on(async {
        let mut tasks = Vec::new();
        for (i, (p, tx)) in c.patients.iter().zip(consents).enumerate() {
            let (links, p) = (links.clone(), p.clone());
            tasks.push(tokio::spawn(async move {
                let mut cl = links.connect(i % links.addrs.len(), &p).await?;
                let a = cl.submit(&tx).await?;
                cl.close().await;
                anyhow::Ok(a)
            }));
        }
        for t in tasks {
            all_acked("consent", &[t.await??])?;
        }
        anyhow::Ok(())
    })?;
    cluster.wait_converged(SETTLE)?;
    out.say(format!(
        "  {n_setup} admin and consent transactions final: {} sensors registered and assigned to patients (over a link to the leader), each patient consented to the doctor",
        c.sensors.len()
    ));

    // 4. stream
    let stop = Arc::new(AtomicBool::new(false));
    let boards: Vec<Arc<Board>> = (0..c.sensors.len())
        .map(|_| Arc::new(Board::default()))
        .collect();
    let mut tasks = Vec::new();
    for (i, s) in c.sensors.iter().enumerate() {
        let readers = if i % 2 == 0 {
            vec![c.patients[i].public(), c.doctor.public()]
        } else {
            vec![]
        };
        let sim = SimSensor::new(s.clone(), chain, i as u64 + 1, 1).seal_for(readers);
        tasks.push(rt.spawn(stream_sensor(
            links.clone(),
            i % n,
            sim,
            stop.clone(),
            boards[i].clone(),
        )));
    }
    out.say(format!(
        "  streaming ({} sealed for patient and doctor, {} in clear), spread over {}…",
        c.sensors.len().div_ceil(2),
        c.sensors.len() / 2,
        gateways(n)
    ));

    let mut scenes = Scenes::default();
    let mut fo = Failover::default();
    let t0 = Instant::now();
    let mut last = (0u64, Instant::now());
    while t0.elapsed() < Duration::from_secs(stream_for) {
        // the next whole second (a scene that blocked skips the ones missed)
        let next = t0 + Duration::from_secs(t0.elapsed().as_secs() + 1);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        let el = t0.elapsed().as_secs();
        if el >= 1 && scenes.stranger.is_none() {
            let r = rt.block_on(stranger_scene(&links, &c, &out));
            if let Err(ClientError::Refused(why)) = &r {
                *scenes
                    .refusals
                    .entry(refusal_name(*why).into())
                    .or_insert(0) += 1;
            }
            scenes.stranger = Some(matches!(
                r,
                Err(ClientError::Refused(Refusal::UnknownIdentity))
            ));
        }
        if el >= 2 && scenes.replay.is_none() {
            let answers = rt.block_on(replay_scene(&links, &c, &boards, &out));
            for a in &answers {
                if let Ok(GatewayMsg::Reject { reason, .. }) = a {
                    *scenes.rejects.entry(reason.as_str().into()).or_insert(0) += 1;
                }
            }
            scenes.replay = Some(matches!(
                answers.first(),
                Some(Ok(GatewayMsg::Reject {
                    reason: sensorchain_core::link::RejectReason::Replay,
                    ..
                }))
            ));
        }
        if el >= 3 && scenes.revoked.is_none() && c.sensors.len() > 1 {
            scenes.revoked = Some(revoke_scene(
                rt,
                &mut cluster,
                &links,
                (&admin, admin_seq),
                &c,
                &boards,
                &out,
            ));
        }
        if failover && el >= kill_at && fo.killed.is_none() {
            kill_leader(&mut cluster, &mut fo, &boards, &out)?;
        }
        if el >= restart_at {
            restart_killed(&mut cluster, &mut fo, &out)?;
        }
        check_caught_up(&mut cluster, &mut fo, &out);
        let acked: u64 = boards.iter().map(|b| b.acked.load(Ordering::Relaxed)).sum();
        let rate = (acked - last.0) as f64 / last.1.elapsed().as_secs_f64();
        last = (acked, Instant::now());
        out.say(format!(
            "  t={:>3}s  readings final {:>8} ({:>6.0}/s)  {}  busy {}  reconnects {}",
            el,
            acked,
            rate,
            cluster_line(&mut cluster),
            boards
                .iter()
                .map(|b| b.busy.load(Ordering::Relaxed))
                .sum::<u64>(),
            boards
                .iter()
                .map(|b| b.reconnects.load(Ordering::Relaxed))
                .sum::<u64>(),
        ));
    }
    // the scenes may have taken the run's time (a loaded machine): the
    // killed gateway comes back now, and catches up before the chains are
    // compared
    restart_killed(&mut cluster, &mut fo, &out)?;
    if scenes.revoked.is_none() && c.sensors.len() > 1 {
        // the earlier scenes took the whole run (a loaded machine)
        scenes.revoked = Some(revoke_scene(
            rt,
            &mut cluster,
            &links,
            (&admin, admin_seq),
            &c,
            &boards,
            &out,
        ));
    }
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for t in tasks {
            let _ = t.await;
        }
    });
    let streaming_seconds = t0.elapsed().as_secs_f64();

    // 5. every gateway at the same final head, then stopped; their chains
    let settled = cluster.wait_converged(SETTLE)?;
    check_caught_up(&mut cluster, &mut fo, &out);
    out.say(format!(
        "\n{} at height {}; stopping {} (SIGTERM)",
        if n == 1 {
            "the gateway".to_string()
        } else {
            format!("all {n} gateways")
        },
        settled.height,
        if n == 1 { "it" } else { "them" }
    ));
    cluster.terminate_all(SETTLE)?;
    let cmp = cluster.compare_chains()?;
    let blocks = cmp.heads.first().and_then(|h| h.1).map_or(0, |h| h + 1);
    if cmp.identical() {
        out.say(format!(
            "chains: {} {blocks} blocks, the same hash and certificate at every height ({} certificates){}",
            if n == 1 { "one gateway, one chain:".to_string() } else { format!("the {n} stored chains are identical:") },
            cmp.certificates.first().map_or(0, |c| c.1),
            if cmp.head_certified {
                "; the head is certified: every block is final"
            } else {
                "; the head has NO certificate (not final)"
            }
        ));
    } else {
        out.say(format!(
            "chains: the stored chains DIFFER (bug):\n  {}",
            cmp.differences.join("\n  ")
        ));
    }
    // the chain the audit reads: the gateway that was killed, if one was
    let audited = fo.killed.unwrap_or(1);
    let data = cluster.member(audited)?.data_dir();
    let in_chain = acknowledged_in_chain(&data, &c, &boards)?;
    out.say(in_chain.line());

    // 6. who can read a sealed reading
    let reading_scene = read_scene(&data, &c, &chain, &out)?;

    // 7. audit a stored chain offline, then a tampered copy
    let report = sensorchain_gateway::audit::audit_dir(&data, false)?;
    out.say(format!(
        "audit of gateway {audited}'s chain: {} blocks, {} readings re-validated in {:.2} s: chain {}",
        report.blocks,
        report.readings,
        report.seconds,
        if report.valid { "VALID" } else { "INVALID" }
    ));
    let tamper = tamper_scene(&dir, &data, &out)?;

    // 8. summary
    let lat = {
        let mut v: Vec<u32> = boards
            .iter()
            .flat_map(|b| b.latency_us.lock().map(|v| v.clone()).unwrap_or_default())
            .collect();
        v.sort_unstable();
        let p = |q: f64| {
            v.get(((v.len() as f64 - 1.0) * q) as usize)
                .copied()
                .unwrap_or(0) as f64
                / 1000.0
        };
        (p(0.5), p(0.99))
    };
    let sum = |f: fn(&Board) -> &Mutex<BTreeMap<String, u64>>| {
        let mut all = BTreeMap::new();
        for b in &boards {
            if let Ok(m) = f(b).lock() {
                for (k, v) in m.iter() {
                    *all.entry(k.clone()).or_insert(0u64) += v;
                }
            }
        }
        all
    };
    let mut rejects = sum(|b| &b.rejects);
    for (k, v) in &scenes.rejects {
        *rejects.entry(k.clone()).or_insert(0) += v;
    }
    let mut refused = sum(|b| &b.refusals);
    for (k, v) in &scenes.refusals {
        *refused.entry(k.clone()).or_insert(0) += v;
    }
    let count = |f: fn(&Board) -> &AtomicU64| -> u64 {
        boards.iter().map(|b| f(b).load(Ordering::Relaxed)).sum()
    };
    let acked = count(|b| &b.acked);
    let tamper_detected = tamper
        .get("detected")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let summary = json!({
        "gateways": n,
        "readings_committed": report.readings,
        "readings_sent": count(|b| &b.sent),
        "readings_acknowledged": acked,
        "acknowledged_in_chain": in_chain.all_found(),
        "transactions_committed": report.transactions,
        "blocks": report.blocks,
        "head_height": settled.height,
        "chains_identical": cmp.identical(),
        "head_final": cmp.head_certified,
        "chain_differences": cmp.differences,
        "readings_per_second": report.readings as f64 / streaming_seconds,
        "ack_latency_ms": { "p50": lat.0, "p99": lat.1 },
        "busy": count(|b| &b.busy),
        "reconnects": count(|b| &b.reconnects),
        "resent": count(|b| &b.resent),
        "failover": fo.to_json(),
        "rejects": rejects,
        "handshakes_refused": refused,
        "stranger_refused": scenes.stranger.unwrap_or(false),
        "replay_rejected": scenes.replay.unwrap_or(false),
        "revoked_sensor_cut_off": scenes.revoked,
        "doctor_decrypted": reading_scene.0,
        "insurer_refused": reading_scene.1,
        "chain_valid": report.valid,
        "tamper_detected": tamper,
        "wall_seconds": started.elapsed().as_secs_f64(),
        "sensors": args.sensors,
        "data_dir": args.data_dir.as_ref().map(|d| d.display().to_string()),
    });
    if args.json {
        println!("{summary}");
    } else {
        println!("\nsummary");
        println!("  gateways             {n}, one process each");
        println!(
            "  readings finalized   {} in {} blocks ({:.0} readings/s while streaming), {}",
            report.readings,
            report.blocks,
            report.readings as f64 / streaming_seconds,
            if cmp.head_certified {
                "every block certified by a quorum"
            } else {
                "the last blocks NOT certified"
            }
        );
        println!(
            "  acknowledged         {acked}, {}",
            if in_chain.all_found() {
                "every one of them in the chain"
            } else {
                "SOME MISSING from the chain (bug)"
            }
        );
        println!(
            "  ack latency          p50 {:.1} ms, p99 {:.1} ms (send to final)",
            lat.0, lat.1
        );
        if let Some(line) = fo.summary_line() {
            println!("  failover             {line}");
        }
        println!(
            "  chains identical     {}",
            if cmp.identical() {
                if n == 1 {
                    "yes (one gateway)".to_string()
                } else {
                    format!("yes, all {n}")
                }
            } else {
                "NO (bug)".into()
            }
        );
        println!("  rejects              {}", counts_or_none(&rejects));
        println!("  handshakes refused   {}", counts_or_none(&refused));
        println!(
            "  busy (resent)        {}; links lost or stalled, reconnected: {}",
            count(|b| &b.busy),
            count(|b| &b.reconnects)
        );
        println!("  chain valid          {}", report.valid);
        println!("  tamper detected      {tamper_detected}");
        println!(
            "  wall time            {:.1} s",
            started.elapsed().as_secs_f64()
        );
        if let Some(d) = &args.data_dir {
            println!(
                "  files kept in        {} (try: sensorchain audit --data-dir {}/cluster/gw1/data)",
                d.display(),
                d.display()
            );
        }
    }
    let ok = report.valid
        && tamper_detected
        && cmp.identical()
        && cmp.head_certified
        && in_chain.all_found();
    if args.keep_running {
        cluster.start_all(READY)?;
        // the sensors stream again, so the dashboard has live vitals to
        // show (new sequence numbers: the clock's milliseconds, above any
        // sent before; the revoked sensor stays refused)
        let stop_again = Arc::new(AtomicBool::new(false));
        for (i, s) in c.sensors.iter().enumerate() {
            let readers = if i % 2 == 0 {
                vec![c.patients[i].public(), c.doctor.public()]
            } else {
                vec![]
            };
            let sim = SimSensor::new(s.clone(), chain, i as u64 + 1, now_ms()).seal_for(readers);
            rt.spawn(stream_sensor(
                links.clone(),
                i % n,
                sim,
                stop_again.clone(),
                Arc::new(Board::default()),
            ));
        }
        let apis: Vec<String> = cluster.members().iter().map(|m| m.api_url()).collect();
        eprintln!(
            "\ndashboard: {}/dashboard (keys in {})",
            apis[0],
            dir.join("keys").display()
        );
        eprintln!(
            "\n{} again, the sensors streaming (Ctrl-C stops {}): sensorchain cluster status --api {}",
            if n == 1 {
                "the gateway runs".to_string()
            } else {
                format!("the {n} gateways run")
            },
            if n == 1 { "it" } else { "them" },
            apis.join(" --api ")
        );
        rt.block_on(async {
            let _ = tokio::signal::ctrl_c().await;
        });
        stop_again.store(true, Ordering::Relaxed);
        cluster.terminate_all(SETTLE)?;
    }
    drop(cluster);
    drop(tmp);
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `--gateway-runner`'s command, split at spaces.
pub(super) fn runner(cmd: Option<&str>) -> Vec<String> {
    cmd.map(|c| c.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// "1 gateway", "5 gateways".
fn gateways(n: usize) -> String {
    if n == 1 {
        "1 gateway".into()
    } else {
        format!("{n} gateways")
    }
}

/// Counts by reason for the summary: `none` when there are none.
fn counts_or_none(counts: &BTreeMap<String, u64>) -> String {
    if counts.is_empty() {
        "none".to_string()
    } else {
        format!("{counts:?}")
    }
}

/// An error unless every answer is an `Ack`.
fn all_acked(what: &str, answers: &[GatewayMsg]) -> anyhow::Result<()> {
    for a in answers {
        if !matches!(a, GatewayMsg::Ack { .. }) {
            anyhow::bail!(
                "a {what} transaction was not committed: {}",
                answer(&Ok(*a))
            );
        }
    }
    Ok(())
}

type Txs = Vec<Vec<u8>>;

/// The admin's registrations (each sensor a device, each patient a
/// patient, the sensor assigned to its patient) and the patients' consents
/// to the doctor.
fn setup_transactions(c: &Cast, admin: &Keypair, chain: &ChainId) -> anyhow::Result<(Txs, Txs)> {
    let mut admin_seq = 0u64;
    let ts = now_ms();
    let mut by_admin = |kind: TxKind| -> anyhow::Result<Vec<u8>> {
        admin_seq += 1;
        let body = TxBody {
            signer: admin.public(),
            sequence: admin_seq,
            timestamp_ms: ts,
            kind,
        };
        Ok(Transaction::sign(body, chain, admin)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .to_vec())
    };
    let mut txs = Vec::new();
    for (s, p) in c.sensors.iter().zip(&c.patients) {
        for (k, role) in [(s, Role::Device), (p, Role::Patient)] {
            txs.push(by_admin(TxKind::Grant {
                target: k.public(),
                permissions: role.default_permissions(),
            })?);
            txs.push(by_admin(TxKind::SetRole {
                target: k.public(),
                role,
            })?);
        }
        txs.push(by_admin(TxKind::AssignDevice {
            device: s.public(),
            patient: p.public(),
        })?);
    }
    let mut consents = Vec::new();
    for p in &c.patients {
        let body = TxBody {
            signer: p.public(),
            sequence: 1,
            timestamp_ms: ts,
            kind: TxKind::Consent {
                reader: c.doctor.public(),
                granted: true,
            },
        };
        consents.push(
            Transaction::sign(body, chain, p)
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .to_vec(),
        );
    }
    Ok((txs, consents))
}

/// A reading on its way: its bytes, when it was first sent, and whether it
/// went out on an earlier session too.
struct InFlight {
    tx: Vec<u8>,
    first_sent: Instant,
    resent: bool,
}

/// One simulated sensor: streams readings with up to [`WINDOW`] in flight
/// to its gateway (index `gw`), until `stop`. A `Busy` answer is resent; a
/// lost link (the gateway killed) or a stalled one ([`STALL`]) makes it
/// connect to the next gateway and resend what had no answer. A session
/// closed as revoked ends it (after one reconnect, to show it refused).
async fn stream_sensor(
    links: Links,
    mut gw: usize,
    mut sim: SimSensor,
    stop: Arc<AtomicBool>,
    board: Arc<Board>,
) {
    let n = links.addrs.len();
    let key = sim.key().clone();
    // readings to send before new ones: busy answers, lost answers
    let mut again: VecDeque<(u64, InFlight)> = VecDeque::new();
    let mut drain_until: Option<Instant> = None;
    // when and how the last session ended
    let mut last_end: Option<(Instant, String)> = None;
    loop {
        if stop.load(Ordering::Relaxed) {
            let until = *drain_until.get_or_insert_with(|| Instant::now() + DRAIN);
            if again.is_empty() || Instant::now() >= until {
                return;
            }
        }
        let mut client = match links.connect(gw, &key).await {
            Ok(cl) => cl,
            Err(ClientError::Refused(r)) if !r_retryable(r) => {
                // refused for good (its permission revoked): say how its
                // last session ended
                bump(&board.refusals, refusal_name(r));
                if let (Some((at, how)), Ok(mut v)) = (last_end, board.revoked.lock()) {
                    *v = Some((at, how, format!("refused ({r})")));
                }
                return;
            }
            Err(e) => {
                if let ClientError::Refused(r) = e {
                    bump(&board.refusals, refusal_name(r));
                }
                // that gateway is down or busy: the next one
                gw = (gw + 1) % n;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if last_end.is_some() {
            board.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        board.gateway.store(gw, Ordering::Relaxed);
        let ended = session(
            &mut client,
            &mut sim,
            &mut again,
            &stop,
            &board,
            &mut drain_until,
        )
        .await;
        let at = Instant::now();
        match ended {
            SessionEnd::Done => {
                client.close().await;
                return;
            }
            SessionEnd::Revoked => {
                let again = links.connect(gw, &key).await;
                let how = match again {
                    Err(ClientError::Refused(r)) => {
                        bump(&board.refusals, refusal_name(r));
                        format!("refused ({r})")
                    }
                    Err(e) => format!("failed ({e})"),
                    Ok(cl) => {
                        cl.close().await;
                        "accepted (bug)".into()
                    }
                };
                if let Ok(mut r) = board.revoked.lock() {
                    *r = Some((at, "closed as revoked".into(), how));
                }
                return;
            }
            SessionEnd::Lost(why) => {
                last_end = Some((at, format!("closed ({why})")));
                gw = (gw + 1) % n;
            }
            SessionEnd::Replaced => {
                // another session of this sensor (a scene) took its place,
                // or the gateway closed it (a revocation whose reason the
                // sensor did not read before the close)
                last_end = Some((at, "closed by the gateway".into()));
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

fn r_retryable(r: Refusal) -> bool {
    matches!(
        r,
        Refusal::Busy | Refusal::HandshakeFailed | Refusal::ShuttingDown
    )
}

enum SessionEnd {
    /// Stopped, everything answered (or the drain time is over).
    Done,
    /// The gateway closed the session as revoked.
    Revoked,
    /// The link broke or stalled (why): go elsewhere.
    Lost(String),
    /// The link was closed without a reason while the gateway is up.
    Replaced,
}

/// One session of [`stream_sensor`]; what it could not get answered is
/// left in `again`.
async fn session(
    client: &mut Client,
    sim: &mut SimSensor,
    again: &mut VecDeque<(u64, InFlight)>,
    stop: &AtomicBool,
    board: &Board,
    drain_until: &mut Option<Instant>,
) -> SessionEnd {
    let mut inflight: BTreeMap<u64, InFlight> = BTreeMap::new();
    let mut last_answer = Instant::now();
    let mut backoff_until: Option<Instant> = None;
    let end = loop {
        let stopping = stop.load(Ordering::Relaxed);
        if stopping {
            let until = *drain_until.get_or_insert_with(|| Instant::now() + DRAIN);
            if (inflight.is_empty() && again.is_empty()) || Instant::now() >= until {
                break SessionEnd::Done;
            }
        }
        let mut wire = Vec::new();
        let may_send = backoff_until.is_none_or(|t| Instant::now() >= t);
        while may_send && inflight.len() < WINDOW {
            let (seq, f) = if let Some((seq, f)) = again.pop_front() {
                (seq, f)
            } else if stopping {
                break;
            } else {
                match sim.next_tx(now_ms()) {
                    Ok((seq, tx)) => (
                        seq,
                        InFlight {
                            tx,
                            first_sent: Instant::now(),
                            resent: false,
                        },
                    ),
                    Err(_) => break,
                }
            };
            match client.seal(&DeviceMsg::Submit(&f.tx)) {
                Ok(w) => wire.extend(w),
                Err(_) => {
                    again.push_front((seq, f));
                    break;
                }
            }
            if f.resent {
                board.resent.fetch_add(1, Ordering::Relaxed);
            } else {
                board.sent.fetch_add(1, Ordering::Relaxed);
            }
            inflight.insert(seq, f);
        }
        if !wire.is_empty()
            && let Err(e) = client.send_wire(&wire).await
        {
            break SessionEnd::Lost(e.to_string());
        }
        let msg = match tokio::time::timeout(Duration::from_millis(200), client.recv()).await {
            Err(_) => {
                if !inflight.is_empty() && last_answer.elapsed() >= STALL {
                    break SessionEnd::Lost("stalled: no answer".into());
                }
                continue;
            }
            Ok(Err(ClientError::Refused(Refusal::Revoked))) => {
                bump(&board.refusals, "revoked");
                break SessionEnd::Revoked;
            }
            Ok(Err(ClientError::Refused(r))) => {
                bump(&board.refusals, refusal_name(r));
                break SessionEnd::Lost(format!("refused ({r})"));
            }
            Ok(Err(ClientError::Closed)) => break SessionEnd::Replaced,
            Ok(Err(e)) => break SessionEnd::Lost(e.to_string()),
            Ok(Ok(m)) => m,
        };
        last_answer = Instant::now();
        let (seq, what) = match msg {
            GatewayMsg::Ack { sequence, .. } => (sequence, Ok(())),
            GatewayMsg::Reject { sequence, reason } => (sequence, Err(Some(reason))),
            GatewayMsg::Busy { sequence } => (sequence, Err(None)),
            GatewayMsg::Pong(_) => continue,
        };
        let Some(f) = inflight.remove(&seq) else {
            continue;
        };
        match what {
            Ok(()) => {
                board.acked.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut v) = board.acked_seqs.lock() {
                    v.push(seq);
                }
                if let Ok(mut v) = board.latency_us.lock() {
                    v.push(f.first_sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
                }
                if let Ok(mut a) = board.first_acked.lock()
                    && a.is_none()
                {
                    *a = Some(f.tx);
                }
            }
            Err(Some(sensorchain_core::link::RejectReason::Replay)) if f.resent => {
                if let Ok(mut v) = board.resent_replays.lock() {
                    v.push(seq);
                }
            }
            Err(Some(reason)) => bump(&board.rejects, reason.as_str()),
            Err(None) => {
                // busy (an election, or a full intake): resend it later
                board.busy.fetch_add(1, Ordering::Relaxed);
                again.push_back((seq, f));
                backoff_until = Some(Instant::now() + Duration::from_millis(100));
            }
        }
    };
    // what had no answer goes out again on the next session, in order
    let mut left: Vec<(u64, InFlight)> = inflight
        .into_iter()
        .map(|(s, mut f)| {
            f.resent = true;
            (s, f)
        })
        .collect();
    left.extend(again.drain(..));
    left.sort_by_key(|(s, _)| *s);
    again.extend(left);
    end
}

#[derive(Default)]
struct Scenes {
    stranger: Option<bool>,
    replay: Option<bool>,
    revoked: Option<bool>,
    rejects: BTreeMap<String, u64>,
    refusals: BTreeMap<String, u64>,
}

/// A stranger (not on the chain) tries to connect: its handshake's answer.
async fn stranger_scene(links: &Links, c: &Cast, out: &Out) -> Result<(), ClientError> {
    let gw = links.addrs.len() - 1;
    let r = links.connect(gw, &c.stranger).await;
    match &r {
        Err(e) => out.say(format!(
            "  scene: a stranger ({}…) tries to connect to gateway {}: refused ({e})",
            &c.stranger.public().address().to_string()[..10],
            gw + 1
        )),
        Ok(_) => out.say("  scene: a stranger connected (this is a bug)"),
    }
    match r {
        Ok(cl) => {
            cl.close().await;
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The answers to the replayed reading and to the implausible one (none if
/// there was nothing to replay or no session).
async fn replay_scene(
    links: &Links,
    c: &Cast,
    boards: &[Arc<Board>],
    out: &Out,
) -> Vec<Result<GatewayMsg, ClientError>> {
    // an acknowledged reading of the last sensor, sent again over a new
    // session of that sensor (on another gateway than its stream's, if
    // there is one); then an implausible value
    let i = c.sensors.len() - 1;
    let s = &c.sensors[i];
    let Some(old) = boards[i].first_acked.lock().ok().and_then(|a| a.clone()) else {
        out.say("  scene: no reading of the last sensor acknowledged yet: no replay to show");
        return Vec::new();
    };
    let Ok(old_tx) = Transaction::decode(&old) else {
        return Vec::new();
    };
    let n = links.addrs.len();
    let gw = (boards[i].gateway.load(Ordering::Relaxed) + 1) % n;
    let mut client = match links.connect(gw, s).await {
        Ok(cl) => cl,
        Err(e) => {
            out.say(format!(
                "  scene: sensor {i} cannot connect to gateway {}: {e}",
                gw + 1
            ));
            return Vec::new();
        }
    };
    let again = client.submit(&old).await;
    // far above the stream's numbers, and refused before it is committed
    let silly = sensorchain_gateway::sim::reading_tx(
        s,
        &links.chain,
        u64::MAX / 2,
        now_ms(),
        3,
        Vital::HeartRate { bpm: 60000 },
    );
    let silly = client.submit(&silly).await;
    client.close().await;
    out.say(format!(
        "  scene: sensor {i} resends its acknowledged reading {} to gateway {}: {}; sends a heart rate of 60000 bpm: {}",
        old_tx.body.sequence,
        gw + 1,
        answer(&again),
        answer(&silly)
    ));
    vec![again, silly]
}

fn answer(r: &Result<GatewayMsg, ClientError>) -> String {
    match r {
        Ok(GatewayMsg::Ack { height, .. }) => format!("acknowledged (block {height})"),
        Ok(GatewayMsg::Reject { reason, .. }) => format!("rejected ({reason})"),
        Ok(GatewayMsg::Busy { .. }) => "busy".into(),
        Ok(GatewayMsg::Pong(_)) => "pong".into(),
        Err(e) => format!("error ({e})"),
    }
}

/// The admin revokes sensor 1's `CONNECT` and `WRITE` (a transaction over
/// its own link to a running gateway, answered once final); the sensor's
/// live streaming session must be closed and its reconnect refused.
fn revoke_scene(
    rt: &tokio::runtime::Runtime,
    cluster: &mut LocalCluster,
    links: &Links,
    (admin, admin_seq): (&Keypair, u64),
    c: &Cast,
    boards: &[Arc<Board>],
    out: &Out,
) -> bool {
    let s = &c.sensors[1];
    let running = cluster.running();
    let Some(&via) = running.first() else {
        return false;
    };
    let body = TxBody {
        signer: admin.public(),
        sequence: admin_seq,
        timestamp_ms: now_ms(),
        kind: TxKind::Revoke {
            target: s.public(),
            permissions: Permissions::CONNECT.union(Permissions::WRITE),
        },
    };
    let Ok(tx) = Transaction::sign(body, &links.chain, admin) else {
        return false;
    };
    let tx = tx.to_vec();
    let sent = Instant::now();
    let answer = rt.block_on(async {
        let mut cl = links.connect((via - 1) as usize, admin).await?;
        // busy (an election): the same transaction again
        let mut a = cl.submit(&tx).await;
        for _ in 0..10 {
            if !matches!(a, Ok(GatewayMsg::Busy { .. })) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            a = cl.submit(&tx).await;
        }
        cl.close().await;
        a
    });
    let final_after = sent.elapsed();
    if !matches!(answer, Ok(GatewayMsg::Ack { .. })) {
        out.say(format!(
            "  scene: the admin's revocation was not committed: {}",
            self::answer(&answer)
        ));
        return false;
    }
    // the live session must be closed with Refused(Revoked); the bound is
    // generous (a loaded machine), the time taken is shown
    let deadline = Instant::now() + Duration::from_secs(30);
    let seen = loop {
        if let Some(r) = boards[1].revoked.lock().ok().and_then(|r| r.clone()) {
            break Some(r);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let gw = boards[1].gateway.load(Ordering::Relaxed) + 1;
    match &seen {
        Some((at, how, again)) => out.say(format!(
            "  scene: the admin revokes sensor 1 over a link to gateway {via} (final after {} ms): its live session on gateway {gw} was {how} {} ms after the revoke was sent; reconnecting: {again}",
            final_after.as_millis(),
            at.saturating_duration_since(sent).as_millis(),
        )),
        None => out.say(format!(
            "  scene: the admin revokes sensor 1: its live session on gateway {gw} was NOT dropped (bug)"
        )),
    }
    seen.is_some_and(|(_, _, again)| again.starts_with("refused"))
}

/// What the failover scene did.
#[derive(Default)]
struct Failover {
    killed: Option<NodeId>,
    sensors_moved: usize,
    new_leader: Option<(NodeId, u64, Duration)>,
    restarted: Option<Instant>,
    caught_up: Option<(u64, Duration)>,
}

impl Failover {
    fn to_json(&self) -> serde_json::Value {
        json!({
            "killed": self.killed,
            "new_leader": self.new_leader.map(|l| l.0),
            "elected_after_ms": self.new_leader.map(|l| l.2.as_millis() as u64),
            "sensors_moved": self.sensors_moved,
            "restarted": self.restarted.is_some(),
            "caught_up_height": self.caught_up.map(|c| c.0),
            "caught_up_after_ms": self.caught_up.map(|c| c.1.as_millis() as u64),
        })
    }

    fn summary_line(&self) -> Option<String> {
        let k = self.killed?;
        let mut s = format!("leader gateway {k} killed (SIGKILL)");
        if let Some((id, term, after)) = self.new_leader {
            s += &format!(
                "; gateway {id} elected (term {term}) {} ms later",
                after.as_millis()
            );
        }
        if let Some((h, after)) = self.caught_up {
            s += &format!(
                "; gateway {k} restarted, caught up to height {h} in {} ms",
                after.as_millis()
            );
        }
        Some(s)
    }
}

/// Starts the killed gateway again (once; nothing if none was killed).
fn restart_killed(cluster: &mut LocalCluster, fo: &mut Failover, out: &Out) -> anyhow::Result<()> {
    let (Some(k), None) = (fo.killed, fo.restarted) else {
        return Ok(());
    };
    cluster.start(k, READY)?;
    fo.restarted = Some(Instant::now());
    out.say(format!(
        "  gateway {k} restarted (pid {}): it replays its log and catches up from the leader",
        cluster.member(k)?.pid().unwrap_or(0)
    ));
    Ok(())
}

/// Kills the leader with SIGKILL and waits for the next one.
fn kill_leader(
    cluster: &mut LocalCluster,
    fo: &mut Failover,
    boards: &[Arc<Board>],
    out: &Out,
) -> anyhow::Result<()> {
    let leader = cluster.wait_leader(ELECTION)?;
    let pid = cluster.member(leader.id)?.pid().unwrap_or(0);
    let on_it = boards
        .iter()
        .filter(|b| b.gateway.load(Ordering::Relaxed) + 1 == leader.id as usize)
        .count();
    cluster.kill(leader.id)?;
    let at = Instant::now();
    fo.killed = Some(leader.id);
    fo.sensors_moved = on_it;
    out.say(format!(
        "  scene: SIGKILL to gateway {} (the leader, pid {pid}); its {on_it} sensors move to the others, the followers' sensors get busy until a new leader is elected…",
        leader.id
    ));
    let next = cluster.wait_leader(ELECTION)?;
    let after = at.elapsed();
    fo.new_leader = Some((next.id, next.term, after));
    out.say(format!(
        "  scene: gateway {} elected leader (term {}) {} ms after the kill; readings flow again",
        next.id,
        next.term,
        after.as_millis()
    ));
    Ok(())
}

/// Notes (once) when the restarted gateway has applied the leader's head
/// (or is within two blocks of it).
fn check_caught_up(cluster: &mut LocalCluster, fo: &mut Failover, out: &Out) {
    let (Some(k), Some(at), None) = (fo.killed, fo.restarted, fo.caught_up) else {
        return;
    };
    let Some(target) = fo.new_leader.and_then(|(l, _, _)| cluster.status(l).ok()) else {
        return;
    };
    let Ok(s) = cluster.status(k) else { return };
    // within a block or two of the leader's head (its finalized height may
    // lag: docs/CLUSTER.md)
    if s.height + 2 >= target.height {
        let after = at.elapsed();
        fo.caught_up = Some((s.height, after));
        out.say(format!(
            "  scene: gateway {k} caught up: height {}, the leader's {} — {} ms after its restart",
            s.height,
            target.height,
            after.as_millis()
        ));
    }
}

/// One line on the cluster: who leads, the leader's final height, the
/// members down.
fn cluster_line(cluster: &mut LocalCluster) -> String {
    let statuses = cluster.statuses();
    let down: Vec<String> = cluster
        .members()
        .iter()
        .map(|m| m.id())
        .filter(|id| !statuses.iter().any(|(s, _)| s == id))
        .map(|id| id.to_string())
        .collect();
    // a restarted leader says it leads its old term until it hears of the
    // new one: the leader is the one of the latest term
    let leader = statuses
        .iter()
        .filter_map(|(_, s)| s.as_ref().ok().filter(|s| s.role == "leader"))
        .max_by_key(|s| s.term);
    let mut line = match leader {
        Some(l) => format!(
            "leader gw{}  height {:>5} (final {:>5})",
            l.node_id,
            l.height,
            l.finalized_height.map_or("-".into(), |f| f.to_string())
        ),
        None => "no leader                        ".into(),
    };
    if !down.is_empty() {
        line += &format!("  down: gw{}", down.join(", gw"));
    }
    line
}

/// Whether every acknowledged reading is in a stored chain.
struct InChain {
    acked: usize,
    missing: Vec<(usize, u64)>,
    resent_replays: usize,
    resent_replays_found: usize,
}

impl InChain {
    fn all_found(&self) -> bool {
        self.missing.is_empty()
    }

    fn line(&self) -> String {
        let mut s = if self.missing.is_empty() {
            format!(
                "acknowledged means final: all {} acknowledged readings are in the chain",
                self.acked
            )
        } else {
            format!(
                "acknowledged readings MISSING from the chain (bug): {} of {}, e.g. sensor {} sequence {}",
                self.missing.len(),
                self.acked,
                self.missing[0].0,
                self.missing[0].1
            )
        };
        if self.resent_replays > 0 {
            s += &format!(
                "; {} readings sent again because their answer did not come were answered replay: {} of them are in the chain (committed the first time), {} are not (overtaken by a later reading of the same sensor: never acknowledged, lost)",
                self.resent_replays,
                self.resent_replays_found,
                self.resent_replays - self.resent_replays_found
            );
        }
        s
    }
}

fn acknowledged_in_chain(data: &Path, c: &Cast, boards: &[Arc<Board>]) -> anyhow::Result<InChain> {
    let store = Store::open_read_only(data)?;
    let mut r = InChain {
        acked: 0,
        missing: Vec::new(),
        resent_replays: 0,
        resent_replays_found: 0,
    };
    for (i, (s, b)) in c.sensors.iter().zip(boards).enumerate() {
        let stored: HashSet<u64> = store
            .readings_by_device(&s.public(), 0, u64::MAX, usize::MAX)?
            .into_iter()
            .map(|r| r.sequence)
            .collect();
        let acked = b.acked_seqs.lock().map(|v| v.clone()).unwrap_or_default();
        r.acked += acked.len();
        r.missing.extend(
            acked
                .iter()
                .filter(|q| !stored.contains(q))
                .map(|q| (i, *q)),
        );
        let replays = b
            .resent_replays
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default();
        r.resent_replays += replays.len();
        r.resent_replays_found += replays.iter().filter(|q| stored.contains(q)).count();
    }
    Ok(r)
}

fn read_scene(data: &Path, c: &Cast, chain: &ChainId, out: &Out) -> anyhow::Result<(bool, bool)> {
    // find a sealed reading of sensor 0 (sealed for patient 0 and the doctor)
    let store = Store::open_read_only(data)?;
    let refs = store.readings_by_device(&c.sensors[0].public(), 0, u64::MAX, 1)?;
    let Some(r) = refs.first() else {
        out.say("  no sealed reading was committed");
        return Ok((false, false));
    };
    let Some((tx, _)) = store.tx(r.loc)? else {
        return Ok((false, false));
    };
    let TxKind::Reading {
        stream,
        payload: Payload::Sealed(p),
    } = &tx.body.kind
    else {
        return Ok((false, false));
    };
    let binding = sealed_binding(chain, &tx.body.signer, *stream, tx.body.sequence);
    let mut buf = [0u8; 128];
    let doctor = p
        .open(&c.doctor, &binding, &mut buf)
        .ok()
        .and_then(|b| sensorchain_core::codec::decode_exact::<Vital>(b, 128).ok());
    let insurer = p.open(&c.insurer, &binding, &mut buf);
    out.say(format!(
        "sealed reading {} (block {}): the doctor reads {}; the insurer: {}",
        tx.body.sequence,
        r.loc.height,
        doctor
            .as_ref()
            .map(|v| v.to_string())
            .unwrap_or_else(|| "nothing (bug)".into()),
        match &insurer {
            Err(e) => format!("cannot ({e})"),
            Ok(_) => "reads it (bug)".into(),
        }
    ));
    Ok((doctor.is_some(), insurer.is_err()))
}

fn tamper_scene(dir: &Path, data: &Path, out: &Out) -> anyhow::Result<serde_json::Value> {
    // tamper with a copy: change one reading's value inside a stored block
    let copy = dir.join("tampered");
    std::fs::create_dir_all(&copy)?;
    for e in std::fs::read_dir(data)? {
        let e = e?;
        if e.file_type()?.is_file() {
            std::fs::copy(e.path(), copy.join(e.file_name()))?;
        }
    }
    let store = Store::open(&copy)?;
    let head = store.head()?.context("empty")?;
    let height = (head.height / 2).max(1).min(head.height);
    let bytes = store.block_bytes(height)?.context("block missing")?;
    let mut block = Block::decode(&bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut changed = false;
    for tx in &mut block.txs {
        if let TxKind::Reading {
            payload: Payload::Plain(v),
            ..
        } = &mut tx.body.kind
        {
            *v = Vital::HeartRate { bpm: 180 };
            changed = true;
            break;
        }
    }
    if !changed {
        // no plain reading there: flip one byte of a signature instead
        if let Some(tx) = block.txs.first_mut() {
            tx.signature.0[10] ^= 0x40;
        }
    }
    drop(store);
    sensorchain_gateway::store::tamper_block_bytes(&copy, height, &block.to_vec())?;
    let report = sensorchain_gateway::audit::audit_dir(&copy, false)?;
    let detected = !report.valid;
    let what = report
        .error
        .as_ref()
        .map(|e| e.message.clone())
        .unwrap_or_default();
    out.say(format!(
        "tamper: one reading changed in block {height} of a copy: audit says {}",
        if detected {
            format!("INVALID — {what}")
        } else {
            "valid (bug)".into()
        }
    ));
    Ok(json!({ "detected": detected, "block": height, "finding": what }))
}
