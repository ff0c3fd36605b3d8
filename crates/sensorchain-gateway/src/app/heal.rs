//! Healing in place after a storage failure (a full disk, an I/O error).
//!
//! openraft treats a storage error as fatal: Raft stops, and the node
//! refuses every submission `storage_failed` from then on (nothing it
//! acknowledged is lost: an acknowledgement comes only after the block and
//! its certificate are durably stored). [`run_healing`] is the supervisor
//! at the composition root that brings such a gateway back by itself:
//!
//! 1. it runs the gateway ([`start`]) until a signal, a lost
//!    `VALIDATE` (as [`Running::run_until`](super::Running::run_until)),
//!    or [`Node::storage_failure`](crate::node::Node::storage_failure);
//! 2. on a storage failure the failed gateway keeps running as it is: its
//!    listeners and API stay up and every submission is refused
//!    `storage_failed` (a sensor resends later); `storage_failed` is 1 in
//!    the metrics;
//! 3. every [`HealSettings::probe_every`] it probes the disk
//!    ([`probe_disk`]: a file of [`HealSettings::probe_bytes`] written,
//!    fsynced and removed next to the store);
//! 4. once the probe succeeds the failed gateway is shut down completely
//!    ([`Running::shutdown`](super::Running::shutdown): every thread
//!    joined, every handle dropped, so redb's files are closed), and a new
//!    one is started on the same configuration, bound to the same
//!    addresses: the stores are re-opened with the same checks as at any
//!    start (redb's page checksums, the chain's integrity, the replay of
//!    the blocks after the last snapshot), Raft starts on its
//!    stored log and vote, and a cluster member catches up from the leader
//!    as after a restart. Sensors reconnect and resume;
//! 5. a start that fails (the disk full again, the store still held) is
//!    logged and tried again after the next successful probe, waiting
//!    twice as long each time (at most [`MAX_RETRY_WAIT`]).
//!
//! Between the shutdown and the new start (a replay of the blocks since the
//! last snapshot, usually well under a second) nothing listens: sensors'
//! connections are refused and they dial again. Every transition is logged
//! (`error` on the failure, `warn` on the restart, `info` once healed) and
//! counted (`storage_failures`, `storage_heals`).

use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use super::{AppConfig, LOST_VALIDATE_GRACE, Running, StartError, Stopped, start};

/// The probe file's name, in the data directory (removed after each probe).
pub const PROBE_FILE: &str = "space-probe.tmp";

/// The longest wait between two attempts to start the gateway again.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);

/// How a healing gateway probes its disk ([`run_healing`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealSettings {
    /// Time between two probes while the store has failed.
    pub probe_every: Duration,
    /// Bytes the probe writes and fsyncs: the room the store is given to
    /// grow again before the gateway is restarted on it.
    pub probe_bytes: u64,
}

impl Default for HealSettings {
    /// A 4 MiB probe every second.
    fn default() -> Self {
        HealSettings {
            probe_every: Duration::from_secs(1),
            probe_bytes: 4 << 20,
        }
    }
}

/// Writes `bytes` zero bytes to [`PROBE_FILE`] in `dir`, fsyncs it and
/// removes it: `Ok` if the disk took them all.
pub fn probe_disk(dir: &Path, bytes: u64) -> std::io::Result<()> {
    let path = dir.join(PROBE_FILE);
    let written = (|| {
        let mut f = std::fs::File::create(&path)?;
        let chunk = vec![0u8; 64 * 1024];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            f.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        f.sync_all()
    })();
    let removed = std::fs::remove_file(&path);
    written?;
    // a probe file left behind would take the room it proved free
    match removed {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// What ended a gateway's run.
enum Ended {
    Signal,
    LostValidate(String),
    Storage(String),
}

/// Starts the gateway `cfg` describes and runs it until `signal`, healing
/// it in place after each storage failure (see the [module](self));
/// `started` is called with each gateway started (the first, then each
/// one started after a failure). A failure of the first start is returned
/// as it is; later ones are tried again. The [`Stopped`] is the last
/// gateway's, with [`Stopped::heals`] set.
pub async fn run_healing(
    cfg: AppConfig,
    signal: impl Future<Output = ()>,
    mut started: impl FnMut(&Running),
) -> Result<Stopped, StartError> {
    let heal = cfg.heal.clone();
    let metrics = cfg.metrics.clone();
    let dir = cfg.data_dir.clone();
    let mut again = cfg.clone();
    let mut running = start(cfg).await?;
    same_addresses(&mut again, &running);
    started(&running);
    tokio::pin!(signal);
    let mut heals = 0u64;
    loop {
        let ended = {
            let node = running.node().clone();
            let ended = tokio::select! {
                _ = &mut signal => Ended::Signal,
                why = node.lost_validate() => Ended::LostValidate(why),
                why = node.storage_failure() => Ended::Storage(why),
            };
            ended
        };
        let why = match ended {
            Ended::Signal => return Ok(stopped(running.shutdown().await, heals)),
            Ended::LostValidate(why) => {
                // as run_until: the answers already decided reach their senders
                tokio::time::sleep(LOST_VALIDATE_GRACE).await;
                let mut s = running.shutdown().await;
                s.lost_validate = Some(why);
                return Ok(stopped(s, heals));
            }
            Ended::Storage(why) => why,
        };
        metrics.storage_failures.inc();
        metrics.storage_failed.set(1);
        tracing::error!(
            data_dir = %dir.display(),
            "storage failed: the gateway commits nothing and refuses every submission with storage_failed; it restarts by itself once the disk takes a {} byte probe again (every {} ms): {why}",
            heal.probe_bytes,
            heal.probe_every.as_millis()
        );
        let mut failed = Some(running);
        let mut height = 0;
        let mut wait = heal.probe_every;
        let mut probes = 0u64;
        running = loop {
            if wait_or_signal(&mut signal, wait).await {
                // stopped while failed
                let s = match failed.take() {
                    Some(r) => r.shutdown().await,
                    None => Stopped {
                        height,
                        joined: Vec::new(),
                        not_stopped: Vec::new(),
                        lost_validate: None,
                        heals,
                    },
                };
                return Ok(stopped(s, heals));
            }
            let (d, n) = (dir.clone(), heal.probe_bytes);
            match tokio::task::spawn_blocking(move || probe_disk(&d, n)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    probes += 1;
                    // a line a minute while the disk stays full
                    if probes % 60 == 1 {
                        tracing::warn!(
                            data_dir = %dir.display(),
                            "the disk still refuses writes ({probes} probes): {e}"
                        );
                    }
                    continue;
                }
                Err(e) => {
                    tracing::error!("the disk probe failed: {e}");
                    continue;
                }
            }
            if let Some(r) = failed.take() {
                tracing::warn!(
                    data_dir = %dir.display(),
                    "the disk takes writes again: the failed gateway stops and starts again on its store"
                );
                let s = r.shutdown().await;
                height = s.height;
                for what in &s.not_stopped {
                    tracing::warn!("did not stop in time: {what}");
                }
            }
            match start(again.clone()).await {
                Ok(r) => break r,
                Err(e) => {
                    wait = (wait * 2).min(MAX_RETRY_WAIT);
                    tracing::error!(
                        "the gateway did not start again after the storage failure, tried again in {} ms: {e}",
                        wait.as_millis()
                    );
                }
            }
        };
        heals += 1;
        metrics.storage_heals.inc();
        metrics.storage_failed.set(0);
        tracing::info!(
            heals,
            height = running.node().state().next_height().saturating_sub(1),
            "healed after the storage failure: the gateway runs again on its store"
        );
        started(&running);
    }
}

/// Binds a restarted gateway to the addresses the first one holds (a port
/// 0 resolved), so that sensors, API clients and peers find it again.
fn same_addresses(cfg: &mut AppConfig, r: &Running) {
    if let Some(a) = r.link_addr() {
        cfg.tcp = Some(a.to_string());
    }
    if let Some(a) = r.api_addr() {
        cfg.api = Some(a.to_string());
    }
    if let Some(a) = r.node().peer_addr() {
        cfg.node.cluster.listen = Some(a.to_string());
    }
}

/// Waits `wait`; true if `signal` came first.
async fn wait_or_signal(
    signal: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    wait: Duration,
) -> bool {
    tokio::select! {
        _ = signal.as_mut() => true,
        _ = tokio::time::sleep(wait) => false,
    }
}

fn stopped(mut s: Stopped, heals: u64) -> Stopped {
    s.heals = heals;
    s
}

#[cfg(test)]
mod tests;
