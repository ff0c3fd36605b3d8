//! `sensorchain demo`: a whole network in one process, for a newcomer.
//!
//! Creates keys (admin, gateway, one simulated sensor per patient, a doctor,
//! an insurer, a stranger), a genesis block and a gateway configuration in a
//! directory; starts the gateway (`app::start`: node, TCP links); registers the sensors
//! and patients with signed admin transactions and the patients' consents to
//! the doctor; streams readings from the sensors over real TCP sessions (half
//! of them sealed for the patient and the doctor); plays the scenes (a
//! stranger refused, a replay, an implausible value, a revoked sensor cut
//! off); then stops it (every thread joined), shows the doctor decrypting a reading the insurer
//! cannot, audits the stored chain, tampers with a copy and shows the audit
//! catching it, and prints a summary (or one JSON object with `--json`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use sensorchain_core::block::Block;
use sensorchain_core::chain::Chain;
use sensorchain_core::hash::ChainId;
use sensorchain_core::identity::{Keypair, PublicKey};
use sensorchain_core::link::{GatewayMsg, Refusal};
use sensorchain_core::permissions::{Permissions, Role};
use sensorchain_core::reading::Vital;
use sensorchain_core::tx::{
    GenesisConfig, Member, Params, Payload, Transaction, TxBody, TxKind, sealed_binding,
};
use serde_json::json;

use super::{DemoArgs, dir_or_temp};
use sensorchain_gateway::app::{self, AppConfig};
use sensorchain_gateway::config::GatewayConfig;
use sensorchain_gateway::keys::write_keypair;
use sensorchain_gateway::metrics::Metrics;
use sensorchain_gateway::net::client::{Client, ClientError};
use sensorchain_gateway::node::{Node, now_ms};
use sensorchain_gateway::sim::SimSensor;
use sensorchain_gateway::store::Store;

/// Everything the demo created.
struct Cast {
    admin: Keypair,
    gateway: Keypair,
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
        admin: k(),
        gateway: k(),
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

/// Runs the demo.
pub fn demo(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.sensors >= 1, "--sensors must be at least 1");
    anyhow::ensure!(args.seconds >= 1, "--seconds must be at least 1");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_demo(args))
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    acked: AtomicU64,
    rejected: AtomicU64,
    busy: AtomicU64,
    latency_us: std::sync::Mutex<Vec<u64>>,
}

async fn run_demo(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let out = Out { json: args.json };
    let (tmp, dir) = dir_or_temp(args.data_dir.as_ref(), "sensorchain-demo-")?;
    anyhow::ensure!(
        tmp.is_some() || std::fs::read_dir(&dir)?.next().is_none(),
        "{} is not empty: the demo creates a new network (choose an empty or new directory)",
        dir.display()
    );
    out.say(format!(
        "sensorchain demo: {} sensors for {} s, files in {}",
        args.sensors,
        args.seconds,
        dir.display()
    ));

    // 1. identities and the chain
    let c = cast(args.sensors);
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys)?;
    for (name, k) in [
        ("admin", &c.admin),
        ("gateway", &c.gateway),
        ("doctor", &c.doctor),
        ("insurer", &c.insurer),
    ] {
        write_keypair(&keys.join(format!("{name}.key")), k, false)?;
    }
    for (i, (s, p)) in c.sensors.iter().zip(&c.patients).enumerate() {
        write_keypair(&keys.join(format!("sensor-{i}.key")), s, false)?;
        write_keypair(&keys.join(format!("patient-{i}.key")), p, false)?;
    }
    let members = [
        Member::of_role(c.admin.public(), Role::Admin),
        Member::of_role(c.gateway.public(), Role::Gateway),
        Member::of_role(c.doctor.public(), Role::Doctor),
        Member::of_role(c.insurer.public(), Role::Insurer),
    ];
    let cfg =
        GenesisConfig::new("sensorchain-demo", Params::default(), &members).context("genesis")?;
    let genesis =
        Chain::genesis_block(&c.admin, cfg, now_ms()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let chain_id = genesis.header.chain_id;
    super::genesis::write_atomic(&dir.join("genesis.block"), &genesis.to_vec())?;
    let mut gw_cfg = GatewayConfig::new(
        "data".into(),
        "keys/gateway.key".into(),
        "genesis.block".into(),
    );
    gw_cfg.listen.tcp = Some("127.0.0.1:0".into());
    std::fs::write(dir.join("gateway.toml"), gw_cfg.to_toml())?;
    out.say(format!(
        "  chain {}…, genesis {}…",
        &chain_id.to_string()[..16],
        &genesis.hash().to_string()[..16]
    ));

    // 2. the gateway
    let mut app_cfg = AppConfig::new(c.gateway.clone(), genesis.clone(), dir.join("data"));
    app_cfg.tcp = Some("127.0.0.1:0".into());
    app_cfg.shutdown_grace = Duration::from_secs(5);
    let running = app::start(app_cfg).await?;
    let node = running.node();
    let metrics = node.metrics().clone();
    let addr = running
        .link_addr()
        .context("the gateway does not listen for sensors")?;
    out.say(format!(
        "  gateway {}… listening on {addr}",
        &c.gateway.public().to_string()[..16]
    ));

    // 3. register sensors and patients, assign, consent (signed transactions)
    // registrations first (the patients must exist before they can consent)
    let (admin_txs, consents) = setup_transactions(&c, &chain_id)?;
    let n_setup = admin_txs.len() + consents.len();
    for phase in [admin_txs, consents] {
        let tickets: Vec<_> = phase
            .into_iter()
            .map(|t| node.enqueue(t, None))
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("setup transaction refused: {e}"))?;
        for t in tickets {
            t.wait()
                .await
                .map_err(|e| anyhow::anyhow!("setup transaction refused: {e}"))?;
        }
    }
    out.say(format!(
        "  {n_setup} admin and consent transactions committed: {} sensors assigned to patients, each patient consented to the doctor",
        c.sensors.len()
    ));

    // 4. stream
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let trusted = vec![c.gateway.public()];
    let mut tasks = Vec::new();
    for (i, s) in c.sensors.iter().enumerate() {
        let sealed = i % 2 == 0;
        let readers = if sealed {
            vec![c.patients[i].public(), c.doctor.public()]
        } else {
            vec![]
        };
        let sim = SimSensor::new(s.clone(), chain_id, i as u64 + 1, 1).seal_for(readers);
        tasks.push(tokio::spawn(stream_sensor(
            addr,
            chain_id,
            trusted.clone(),
            sim,
            stop.clone(),
            counters.clone(),
        )));
    }
    out.say(format!(
        "  streaming ({} sealed for patient and doctor, {} in clear)…",
        c.sensors.len().div_ceil(2),
        c.sensors.len() / 2
    ));

    let mut scenes = Scenes::default();
    let stage = Stage {
        addr,
        chain: &chain_id,
        c: &c,
        node,
        out: &out,
    };
    let run_for = Duration::from_secs(args.seconds);
    let t0 = Instant::now();
    let mut last = (0u64, Instant::now());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    while t0.elapsed() < run_for {
        tick.tick().await;
        let el = t0.elapsed().as_secs();
        if el == 2 && scenes.stranger.is_none() {
            scenes.stranger = Some(stranger_scene(addr, &chain_id, &c, &out).await);
        }
        if el == 3 && scenes.replay.is_none() {
            scenes.replay = Some(replay_scene(stage).await);
        }
        // `>=`: on a loaded machine a tick may skip a second
        if el >= 4 && scenes.revoked.is_none() && c.sensors.len() > 1 {
            scenes.revoked = Some(revoke_scene(stage).await);
        }
        let acked = counters.acked.load(Ordering::Relaxed);
        let rate = (acked - last.0) as f64 / last.1.elapsed().as_secs_f64();
        last = (acked, Instant::now());
        let head = node.store().head()?.map(|h| h.height).unwrap_or(0);
        out.say(format!(
            "  t={:>3}s  readings acknowledged {:>8}  ({:>6.0}/s)  blocks {:>5}  rejects {}",
            el,
            acked,
            rate,
            head + 1,
            rejects_line(&metrics)
        ));
    }
    if scenes.revoked.is_none() && c.sensors.len() > 1 {
        // the earlier scenes took the whole run (a loaded machine)
        scenes.revoked = Some(revoke_scene(stage).await);
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let streaming_seconds = t0.elapsed().as_secs_f64();

    // 5. who can read a sealed reading
    let reading_scene = read_scene(node, &c, &chain_id, &out)?;

    // 6. stop the gateway (every thread and task joined: the store is
    // released) and audit the chain offline
    let head = node.store().head()?.context("empty store")?;
    let stopped = running.shutdown().await;
    anyhow::ensure!(
        stopped.is_clean(),
        "the gateway did not stop cleanly: {}",
        stopped.not_stopped.join("; ")
    );
    let data = dir.join("data");
    let report = sensorchain_gateway::audit::audit_dir(&data, false)?;
    out.say(format!(
        "\naudit: {} blocks, {} readings re-validated in {:.2} s: chain {}",
        report.blocks,
        report.readings,
        report.seconds,
        if report.valid { "VALID" } else { "INVALID" }
    ));
    let tamper = tamper_scene(&dir, &data, &out)?;

    // 7. summary
    let lat = {
        let mut v = counters
            .latency_us
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default();
        v.sort_unstable();
        let p = |q: f64| {
            v.get(((v.len() as f64 - 1.0) * q) as usize)
                .copied()
                .unwrap_or(0) as f64
                / 1000.0
        };
        (p(0.5), p(0.99))
    };
    let mut rejects = BTreeMap::new();
    for r in [
        "malformed",
        "wrong_signer",
        "bad_signature",
        "not_permitted",
        "replay",
        "out_of_range",
        "not_authorised",
        "invalid",
        "storage_failed",
        "busy",
    ] {
        let n = metrics.reject_count(r);
        if n > 0 {
            rejects.insert(r.to_string(), n);
        }
    }
    let mut refused = BTreeMap::new();
    for r in ["unknown_identity", "not_permitted", "revoked"] {
        let n = metrics
            .handshake_failures
            .get_or_create(&sensorchain_gateway::metrics::Reason { reason: r.into() })
            .get();
        if n > 0 {
            refused.insert(r.to_string(), n);
        }
    }
    let tamper_detected = tamper
        .get("detected")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let summary = json!({
        "readings_committed": report.readings,
        "transactions_committed": report.transactions,
        "blocks": report.blocks,
        "head_height": head.height,
        "readings_per_second": report.readings as f64 / streaming_seconds,
        "ack_latency_ms": { "p50": lat.0, "p99": lat.1 },
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
        println!(
            "  readings committed   {} in {} blocks ({:.0} readings/s while streaming)",
            report.readings,
            report.blocks,
            report.readings as f64 / streaming_seconds
        );
        println!(
            "  ack latency          p50 {:.1} ms, p99 {:.1} ms (send to durable commit)",
            lat.0, lat.1
        );
        println!("  rejects              {}", counts_or_none(&rejects));
        println!("  handshakes refused   {}", counts_or_none(&refused));
        println!("  chain valid          {}", report.valid);
        println!("  tamper detected      {tamper_detected}");
        println!(
            "  wall time            {:.1} s",
            started.elapsed().as_secs_f64()
        );
        if let Some(d) = &args.data_dir {
            println!(
                "  files kept in        {} (try: sensorchain audit --data-dir {}/data)",
                d.display(),
                d.display()
            );
        }
    }
    let ok = report.valid && tamper_detected;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Counts by reason for the summary: `none` when there are none.
fn counts_or_none(counts: &BTreeMap<String, u64>) -> String {
    if counts.is_empty() {
        "none".to_string()
    } else {
        format!("{counts:?}")
    }
}

type Txs = Vec<Vec<u8>>;

fn setup_transactions(c: &Cast, chain: &ChainId) -> anyhow::Result<(Txs, Txs)> {
    let mut admin_seq = 0u64;
    let ts = now_ms();
    let mut admin = |kind: TxKind| -> anyhow::Result<Vec<u8>> {
        admin_seq += 1;
        let body = TxBody {
            signer: c.admin.public(),
            sequence: admin_seq,
            timestamp_ms: ts,
            kind,
        };
        Ok(Transaction::sign(body, chain, &c.admin)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .to_vec())
    };
    let mut txs = Vec::new();
    for (s, p) in c.sensors.iter().zip(&c.patients) {
        for (k, role) in [(s, Role::Device), (p, Role::Patient)] {
            txs.push(admin(TxKind::Grant {
                target: k.public(),
                permissions: role.default_permissions(),
            })?);
            txs.push(admin(TxKind::SetRole {
                target: k.public(),
                role,
            })?);
        }
        txs.push(admin(TxKind::AssignDevice {
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

/// How long a demo sensor retries a busy gateway or a dropped handshake.
const CONNECT_PATIENCE: Duration = Duration::from_secs(60);

/// Readings each simulated sensor keeps in flight.
const WINDOW: usize = 128;

async fn stream_sensor(
    addr: std::net::SocketAddr,
    chain: ChainId,
    trusted: Vec<PublicKey>,
    mut sim: SimSensor,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
) {
    // a busy gateway may drop a handshake or refuse it busy: retry
    let Ok(mut client) =
        Client::connect_retrying(addr, &chain, sim.key(), &trusted, CONNECT_PATIENCE).await
    else {
        return;
    };
    let mut lat = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let mut batch = Vec::with_capacity(WINDOW);
        for _ in 0..WINDOW {
            match sim.next_tx(now_ms()) {
                Ok((_, tx)) => batch.push(tx),
                Err(_) => return,
            }
        }
        let sent = Instant::now();
        counters
            .sent
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let Ok(answers) = client.submit_pipelined(&batch, WINDOW).await else {
            break;
        };
        let us = sent.elapsed().as_micros() as u64;
        for a in answers {
            match a {
                GatewayMsg::Ack { .. } => {
                    counters.acked.fetch_add(1, Ordering::Relaxed);
                    lat.push(us);
                }
                GatewayMsg::Reject { .. } => {
                    counters.rejected.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    counters.busy.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    if let Ok(mut l) = counters.latency_us.lock() {
        l.extend(lat);
    }
    client.close().await;
}

#[derive(Default)]
struct Scenes {
    stranger: Option<bool>,
    replay: Option<bool>,
    revoked: Option<bool>,
}

async fn stranger_scene(addr: std::net::SocketAddr, chain: &ChainId, c: &Cast, out: &Out) -> bool {
    let r = Client::connect(addr, chain, &c.stranger, &[c.gateway.public()]).await;
    let refused = matches!(r, Err(ClientError::Refused(Refusal::UnknownIdentity)));
    match r {
        Err(e) => out.say(format!(
            "  scene: a stranger ({}…) tries to connect: refused ({e})",
            &c.stranger.public().address().to_string()[..10]
        )),
        Ok(_) => out.say("  scene: a stranger connected (this is a bug)"),
    }
    refused
}

/// What the live scenes act on: the gateway's sensor address, its chain,
/// node and cast, and where they report.
#[derive(Clone, Copy)]
struct Stage<'a> {
    addr: std::net::SocketAddr,
    chain: &'a ChainId,
    c: &'a Cast,
    node: &'a Node,
    out: &'a Out,
}

async fn replay_scene(stage: Stage<'_>) -> bool {
    // an acknowledged reading of the last sensor, sent again over a new
    // session of that sensor; then an implausible value
    let s = &stage.c.sensors[stage.c.sensors.len() - 1];
    let old = stage
        .node
        .store()
        .readings_by_device(&s.public(), 0, u64::MAX, 1)
        .ok()
        .and_then(|r| r.first().copied())
        .and_then(|r| stage.node.store().tx(r.loc).ok().flatten());
    let Some((old_tx, old_bytes)) = old else {
        return false;
    };
    let Ok(mut client) =
        Client::connect(stage.addr, stage.chain, s, &[stage.c.gateway.public()]).await
    else {
        return false;
    };
    let again = client.submit(&old_bytes).await;
    // far above the stream's numbers, and refused before it is committed
    let silly = sensorchain_gateway::sim::reading_tx(
        s,
        stage.chain,
        u64::MAX / 2,
        now_ms(),
        3,
        Vital::HeartRate { bpm: 60000 },
    );
    let silly = client.submit(&silly).await;
    client.close().await;
    let replayed = matches!(
        again,
        Ok(GatewayMsg::Reject {
            reason: sensorchain_core::link::RejectReason::Replay,
            ..
        })
    );
    stage.out.say(format!(
        "  scene: sensor {} resends its acknowledged reading {}: {}; sends a heart rate of 60000 bpm: {}",
        stage.c.sensors.len() - 1,
        old_tx.body.sequence,
        answer(&again),
        answer(&silly)
    ));
    replayed
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

async fn revoke_scene(stage: Stage<'_>) -> bool {
    // A dedicated session for sensor 1 (it replaces the sensor's streaming
    // session: one live session per identity), then its CONNECT is revoked.
    // `connect` returns once the gateway holds the session, so the revoke
    // meets a live session. (It used to return right after the Proof: on a
    // loaded machine the revoke then landed before the gateway finished the
    // handshake, whose CONNECT re-check refused it `not permitted`, and this
    // scene misread that as a live session not dropped.)
    let s = &stage.c.sensors[1];
    let Ok(mut client) = Client::connect_retrying(
        stage.addr,
        stage.chain,
        s,
        &[stage.c.gateway.public()],
        CONNECT_PATIENCE,
    )
    .await
    else {
        return false;
    };
    let admin_seq = stage
        .node
        .state()
        .identity(&stage.c.admin.public())
        .and_then(|r| r.last_sequence)
        .unwrap_or(0)
        + 1;
    let body = TxBody {
        signer: stage.c.admin.public(),
        sequence: admin_seq,
        timestamp_ms: now_ms(),
        kind: TxKind::Revoke {
            target: s.public(),
            permissions: Permissions::CONNECT.union(Permissions::WRITE),
        },
    };
    let Ok(tx) = Transaction::sign(body, stage.chain, &stage.c.admin) else {
        return false;
    };
    if stage.node.submit(tx.to_vec(), None).await.is_err() {
        return false;
    }
    let committed = Instant::now();
    // the live session must be closed with Refused(Revoked); the bound is
    // generous (a loaded machine), the time taken is shown
    client.set_timeout(Duration::from_secs(30));
    let seen = loop {
        match client.recv().await {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    let closed = matches!(seen, ClientError::Refused(Refusal::Revoked));
    let again = Client::connect(stage.addr, stage.chain, s, &[stage.c.gateway.public()]).await;
    stage.out.say(format!(
        "  scene: the admin revokes sensor 1: its live session {}; reconnecting: {}",
        if closed {
            format!(
                "was dropped at once ({:.0} ms after the revoke was committed)",
                committed.elapsed().as_secs_f64() * 1e3
            )
        } else {
            format!("was NOT dropped (bug: the session saw {seen})")
        },
        match &again {
            Err(e) => format!("refused ({e})"),
            Ok(_) => "accepted (bug)".into(),
        }
    ));
    closed && again.is_err()
}

fn read_scene(node: &Node, c: &Cast, chain: &ChainId, out: &Out) -> anyhow::Result<(bool, bool)> {
    // find a sealed reading of sensor 0 (sealed for patient 0 and the doctor)
    let refs = node
        .store()
        .readings_by_device(&c.sensors[0].public(), 0, u64::MAX, 1)?;
    let Some(r) = refs.first() else {
        out.say("  no sealed reading was committed");
        return Ok((false, false));
    };
    let Some((tx, _)) = node.store().tx(r.loc)? else {
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
        "\nsealed reading {} (block {}): the doctor reads {}; the insurer: {}",
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

fn rejects_line(m: &Metrics) -> String {
    let mut parts = Vec::new();
    for r in [
        "replay",
        "out_of_range",
        "not_permitted",
        "bad_signature",
        "malformed",
        "not_authorised",
        "busy",
    ] {
        let n = m.reject_count(r);
        if n > 0 {
            parts.push(format!("{r} {n}"));
        }
    }
    if parts.is_empty() {
        "0".into()
    } else {
        parts.join(", ")
    }
}
