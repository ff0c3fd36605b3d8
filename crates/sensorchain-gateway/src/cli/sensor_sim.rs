//! `sensorchain sensor-sim`: simulated medical sensors streaming signed
//! readings to a gateway over TCP.
//!
//! Each `--sensor-key` is one sensor: it connects, handshakes (refusing any
//! gateway but `--gateway-key`), and sends one reading every `1/--rate`
//! seconds, cycling through body temperature, SpO2, blood pressure and heart
//! rate ([`crate::sim`]), sealed for the `--seal-for` readers if any. A
//! progress line every 5 s gives sent / acknowledged / busy / rejected by
//! reason.
//!
//! **Sequence numbers.** A sensor must use a sequence number above the last
//! one the chain accepted from it, also across restarts of this command.
//! Each sensor starts at the current time in milliseconds (monotonic across
//! restarts as long as it sends fewer than 1,000 readings per second on
//! average and the clock does not go back) and counts up by one; after a
//! reconnect it resumes at `max(now_ms, last sent + 1)`, and a `Replay`
//! refusal moves it past the current time again.

use std::collections::BTreeMap;
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
use crate::net::client::{Client, ClientError};
use crate::node::now_ms;
use crate::sim::SimSensor;

/// Most readings a sensor leaves unanswered before it skips a tick.
const MAX_UNANSWERED: u64 = 256;

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
    let gateway = crate::keys::parse_public(&args.gateway_key).context("--gateway-key")?;
    let bytes = std::fs::read(&args.genesis)
        .with_context(|| format!("cannot read {}", args.genesis.display()))?;
    let genesis = Block::decode(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a block: {e}", args.genesis.display()))?;
    let chain = genesis.header.chain_id;
    let keys = args
        .sensor_keys
        .iter()
        .map(|p| crate::keys::read_keypair(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let readers = args
        .seal_for
        .iter()
        .map(|r| crate::keys::parse_public(r))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let stats = Arc::new(SimStats::default());
    rt.block_on(async {
        let period = Duration::from_secs_f64(1.0 / args.rate);
        for (i, kp) in keys.into_iter().enumerate() {
            let sensor = SimSensor::new(kp, chain, i as u64 + now_ms(), now_ms()).seal_for(readers.clone());
            tokio::spawn(run_sensor(args.gateway.clone(), chain, gateway, sensor, period, stats.clone()));
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
                _ = tick.tick() => println!("[{:>5.0}s] {}", started.elapsed().as_secs_f64(), stats.line()),
            }
        }
        // let answers in flight arrive
        tokio::time::sleep(Duration::from_millis(500)).await;
        println!("final: {}", stats.line());
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(if stats.acked.load(Ordering::Relaxed) > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// One sensor: connect, stream, reconnect with backoff; gives up on a
/// refusal that will not change by retrying (unknown or not permitted
/// identity, revoked, wrong chain, untrusted gateway).
pub async fn run_sensor(
    addr: String,
    chain: ChainId,
    gateway: PublicKey,
    mut sensor: SimSensor,
    period: Duration,
    stats: Arc<SimStats>,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let kp: Keypair = sensor.key().clone();
        match Client::connect(addr.as_str(), &chain, &kp, &[gateway]).await {
            Ok(mut c) => {
                backoff = Duration::from_millis(200);
                sensor.resume_from(now_ms());
                let e = stream(&mut c, &mut sensor, period, &stats).await;
                stats.link_error(&e);
                if permanent(&e) {
                    tracing::warn!(sensor = %kp.public(), error = %e, "sensor stops");
                    return;
                }
            }
            Err(e) => {
                stats.link_error(&e);
                if permanent(&e) {
                    tracing::warn!(sensor = %kp.public(), error = %e, "sensor stops");
                    return;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
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

async fn stream(
    c: &mut Client,
    sensor: &mut SimSensor,
    period: Duration,
    stats: &SimStats,
) -> ClientError {
    c.set_timeout(Duration::from_secs(3600));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut sent, mut answered) = (0u64, 0u64);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if sent - answered >= MAX_UNANSWERED {
                    stats.skipped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let tx = match sensor.next_tx(now_ms()) {
                    Ok((_, tx)) => tx,
                    Err(e) => return ClientError::BadTransaction(e.to_string()),
                };
                if let Err(e) = c.send(&DeviceMsg::Submit(&tx)).await {
                    return e;
                }
                sent += 1;
                stats.sent.fetch_add(1, Ordering::Relaxed);
            }
            m = c.recv() => match m {
                Err(e) => return e,
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
    }
}
