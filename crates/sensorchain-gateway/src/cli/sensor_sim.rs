//! `sensorchain sensor-sim`: simulated medical sensors streaming signed
//! readings to a gateway over TCP.
//!
//! Each `--sensor-key` is one sensor: it connects, handshakes (refusing any
//! gateway but `--gateway-key`), and sends one reading every `1/--rate`
//! seconds, cycling through body temperature, SpO2, blood pressure and heart
//! rate ([`sensorchain_gateway::sim`]), sealed for the `--seal-for` readers if any. A
//! progress line every 5 s gives sent / acknowledged / busy / rejected by
//! reason.
//!
//! **Sequence numbers.** A sensor must use a sequence number above the last
//! one the chain accepted from it, also across restarts of this command.
//! Each sensor starts at the current time in milliseconds (monotonic across
//! restarts as long as it sends fewer than 1,000 readings per second on
//! average and the clock does not go back) and counts up by one; after a
//! reconnect it resumes at `max(now_ms, last sent + 1)`, and a `Replay`
//! refusal moves it past the current time again. Two `--sensor-key`s of the
//! same identity are refused (their sequence numbers would collide).
//!
//! **Stopping.** After `--seconds` (or on a signal) the sensors stop
//! sending and wait for the answer to every reading sent (up to
//! [`DRAIN_TIMEOUT`]), so the final line's `acked` is every reading the
//! gateway acknowledged; a reading whose answer never came (the link broke)
//! is counted `unanswered`.
//!
//! **Exit code:** 0 if readings were acknowledged and none was rejected and
//! no sensor was refused; 1 if a sensor was refused or revoked (it stops),
//! a reading was rejected, or nothing was acknowledged; 2 on an error.

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use sensorchain_core::block::Block;
use sensorchain_core::hash::ChainId;
use sensorchain_core::identity::{Keypair, PublicKey};
use sensorchain_core::link::{DeviceMsg, GatewayMsg, Refusal, RejectReason};

use super::SensorSimArgs;
use sensorchain_gateway::net::client::{Client, ClientError};
use sensorchain_gateway::node::now_ms;
use sensorchain_gateway::sim::SimSensor;

/// Most readings a sensor leaves unanswered before it skips a tick.
const MAX_UNANSWERED: u64 = 256;

/// Longest wait, after the sensors stop sending, for the answers to what
/// they sent.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Counters shared by the simulated sensors.
#[derive(Debug, Default)]
pub struct SimStats {
    /// Readings sent.
    pub sent: AtomicU64,
    /// Acknowledged (durably committed).
    pub acked: AtomicU64,
    /// Answered busy.
    pub busy: AtomicU64,
    /// Ticks skipped because too many readings were unanswered.
    pub skipped: AtomicU64,
    /// Readings sent whose answer never came (the link ended first).
    pub unanswered: AtomicU64,
    /// Sensors that stopped on a refusal that retrying does not change.
    pub gave_up: AtomicU64,
    /// Refusals by reason.
    pub rejected: Mutex<BTreeMap<&'static str, u64>>,
    /// Connection failures and refusals by kind.
    pub link_errors: Mutex<BTreeMap<String, u64>>,
}

impl SimStats {
    fn reject(&self, r: RejectReason) {
        *self
            .rejected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(r.as_str())
            .or_default() += 1;
    }
    fn link_error(&self, e: &ClientError) {
        let k = match e {
            ClientError::Refused(r) => format!("refused: {r}"),
            ClientError::Handshake(h) => format!("handshake: {h}"),
            ClientError::Io(_) => "io".into(),
            ClientError::Closed => "closed".into(),
            ClientError::Timeout => "timeout".into(),
            other => other.to_string(),
        };
        *self
            .link_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(k)
            .or_default() += 1;
    }

    /// One progress line.
    pub fn line(&self) -> String {
        let rej = self.rejected.lock().unwrap_or_else(|p| p.into_inner());
        let rej_total: u64 = rej.values().sum();
        let mut s = format!(
            "sent {}  acked {}  busy {}  rejected {}",
            self.sent.load(Ordering::Relaxed),
            self.acked.load(Ordering::Relaxed),
            self.busy.load(Ordering::Relaxed),
            rej_total
        );
        let unanswered = self.unanswered.load(Ordering::Relaxed);
        if unanswered > 0 {
            s.push_str(&format!("  unanswered {unanswered}"));
        }
        let gave_up = self.gave_up.load(Ordering::Relaxed);
        if gave_up > 0 {
            s.push_str(&format!("  sensors stopped {gave_up}"));
        }
        if !rej.is_empty() {
            let parts: Vec<String> = rej.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!(" ({})", parts.join(", ")));
        }
        let le = self.link_errors.lock().unwrap_or_else(|p| p.into_inner());
        if !le.is_empty() {
            let parts: Vec<String> = le.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!("  link errors: {}", parts.join(", ")));
        }
        s
    }
}

/// Runs `sensorchain sensor-sim`.
pub fn sensor_sim(args: &SensorSimArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.rate > 0.0 && args.rate.is_finite(),
        "--rate must be a positive number"
    );
    let gateway =
        sensorchain_gateway::keys::parse_public(&args.gateway_key).context("--gateway-key")?;
    let bytes = std::fs::read(&args.genesis)
        .with_context(|| format!("cannot read {}", args.genesis.display()))?;
    let genesis = Block::decode(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a block: {e}", args.genesis.display()))?;
    let chain = genesis.header.chain_id;
    let keys = args
        .sensor_keys
        .iter()
        .map(|p| sensorchain_gateway::keys::read_keypair(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut seen: HashMap<PublicKey, usize> = HashMap::new();
    for (i, kp) in keys.iter().enumerate() {
        if let Some(&j) = seen.get(&kp.public()) {
            anyhow::bail!(
                "--sensor-key {} is the same identity ({}) as --sensor-key {}: each simulated sensor needs its own key (two sensors of one identity refuse each other's readings as replays)",
                args.sensor_keys[i].display(),
                kp.public(),
                args.sensor_keys[j].display()
            );
        }
        seen.insert(kp.public(), i);
    }
    let readers = args
        .seal_for
        .iter()
        .map(|r| sensorchain_gateway::keys::parse_public(r))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let stats = Arc::new(SimStats::default());
    rt.block_on(async {
        let period = Duration::from_secs_f64(1.0 / args.rate);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut sensors = tokio::task::JoinSet::new();
        for (i, kp) in keys.into_iter().enumerate() {
            let sensor = SimSensor::new(kp, chain, i as u64 + now_ms(), now_ms()).seal_for(readers.clone());
            sensors.spawn(run_sensor(args.gateway.clone(), chain, gateway, sensor, period, stats.clone(), stop_rx.clone()));
        }
        println!("{} sensors -> {} at {}/s each", args.sensor_keys.len(), args.gateway, args.rate);
        let started = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.tick().await;
        let stop = async {
            match args.seconds {
                Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
                None => super::run::wait_for_signal().await,
            }
        };
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                // a sensor stopped (refused, revoked): when all have, stop
                _ = sensors.join_next(), if !sensors.is_empty() => if sensors.is_empty() { break },
                _ = tick.tick() => println!("[{:>5.0}s] {}", started.elapsed().as_secs_f64(), stats.line()),
            }
        }
        // stop sending; every sensor waits for the answers to what it sent
        let _ = stop_tx.send(true);
        let all_done = async { while sensors.join_next().await.is_some() {} };
        if tokio::time::timeout(DRAIN_TIMEOUT + Duration::from_secs(5), all_done).await.is_err() {
            sensors.abort_all();
        }
        println!("final: {}", stats.line());
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    let rejected: u64 = stats
        .rejected
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .sum();
    let ok = stats.acked.load(Ordering::Relaxed) > 0
        && rejected == 0
        && stats.gave_up.load(Ordering::Relaxed) == 0;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// One sensor: connect, stream, reconnect with backoff, until `stop` turns
/// true (then it waits for the answers to what it sent); gives up on a
/// refusal that will not change by retrying (unknown or not permitted
/// identity, revoked, wrong chain, untrusted gateway), counted in
/// [`SimStats::gave_up`].
pub async fn run_sensor(
    addr: String,
    chain: ChainId,
    gateway: PublicKey,
    mut sensor: SimSensor,
    period: Duration,
    stats: Arc<SimStats>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(200);
    while !*stop.borrow() {
        let kp: Keypair = sensor.key().clone();
        let e = match Client::connect(addr.as_str(), &chain, &kp, &[gateway]).await {
            Ok(mut c) => {
                backoff = Duration::from_millis(200);
                sensor.resume_from(now_ms());
                match stream(&mut c, &mut sensor, period, &stats, &mut stop).await {
                    Some(e) => e,
                    None => return,
                }
            }
            Err(e) => e,
        };
        stats.link_error(&e);
        if permanent(&e) {
            stats.gave_up.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(sensor = %kp.public(), error = %e, "sensor stops");
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stopped(&mut stop) => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

fn permanent(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Refused(
            Refusal::UnknownIdentity
                | Refusal::NotPermitted
                | Refusal::Revoked
                | Refusal::WrongChain
                | Refusal::VersionMismatch
        ) | ClientError::Handshake(_)
    )
}

/// Streams readings until the link fails (`Some(error)`) or `stop` turns
/// true and every reading sent is answered (`None`, at most
/// [`DRAIN_TIMEOUT`] later). Readings left unanswered are counted.
async fn stream(
    c: &mut Client,
    sensor: &mut SimSensor,
    period: Duration,
    stats: &SimStats,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Option<ClientError> {
    c.set_timeout(Duration::from_secs(3600));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut sent, mut answered) = (0u64, 0u64);
    let mut draining: Option<tokio::time::Instant> = None;
    let end = loop {
        if let Some(deadline) = draining {
            if answered >= sent {
                break None;
            }
            if tokio::time::Instant::now() >= deadline {
                break None;
            }
        }
        let sending = draining.is_none();
        let drain_deadline =
            draining.unwrap_or_else(|| tokio::time::Instant::now() + DRAIN_TIMEOUT);
        tokio::select! {
            _ = stopped(stop), if sending => {
                draining = Some(tokio::time::Instant::now() + DRAIN_TIMEOUT);
            }
            _ = tokio::time::sleep_until(drain_deadline), if !sending => {}
            _ = tick.tick(), if sending => {
                if sent - answered >= MAX_UNANSWERED {
                    stats.skipped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let tx = match sensor.next_tx(now_ms()) {
                    Ok((_, tx)) => tx,
                    Err(e) => break Some(ClientError::BadTransaction(e.to_string())),
                };
                if let Err(e) = c.send(&DeviceMsg::Submit(&tx)).await {
                    break Some(e);
                }
                sent += 1;
                stats.sent.fetch_add(1, Ordering::Relaxed);
            }
            m = c.recv() => match m {
                Err(e) => break Some(e),
                Ok(GatewayMsg::Ack { .. }) => { answered += 1; stats.acked.fetch_add(1, Ordering::Relaxed); }
                Ok(GatewayMsg::Busy { .. }) => { answered += 1; stats.busy.fetch_add(1, Ordering::Relaxed); }
                Ok(GatewayMsg::Reject { reason, .. }) => {
                    answered += 1;
                    stats.reject(reason);
                    if reason == RejectReason::Replay {
                        sensor.resume_from(now_ms().max(sensor.next_sequence()));
                    }
                }
                Ok(GatewayMsg::Pong(_)) => {}
            }
        }
    };
    stats
        .unanswered
        .fetch_add(sent.saturating_sub(answered), Ordering::Relaxed);
    end
}
