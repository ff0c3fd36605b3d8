//! A sensor that streams signed readings to a gateway until the gateway
//! goes away, recording every acknowledgement: the load of the crash tests.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sensorchain_core::hash::{ChainId, Hash32};
use sensorchain_core::identity::{Keypair, PublicKey};
use sensorchain_core::link::GatewayMsg;
use sensorchain_core::reading::Vital;
use sensorchain_gateway::net::client::Client;

/// How long a sensor keeps trying to connect to a gateway still starting.
const CONNECT_BOUND: Duration = Duration::from_secs(120);

/// Streams readings of `d` from sequence `first` in pipelined batches of
/// 16 to the gateway at `addr` until its link fails and `gone` is set (the
/// test set it once the gateway's process was reaped; until then a failed
/// connect is tried again, the gateway may still be starting). Every `Ack`
/// is recorded in `acked`. Returns the next sequence number it would have
/// used: a killed gateway may have stored what it never acknowledged, so
/// the next run goes on above it.
pub async fn stream(
    d: Keypair,
    chain: ChainId,
    addr: SocketAddr,
    gwk: PublicKey,
    acked: Arc<Mutex<HashSet<Hash32>>>,
    first: u64,
    gone: Arc<AtomicBool>,
) -> u64 {
    let mut seq = first;
    let t = Instant::now();
    let mut c = loop {
        match Client::connect(addr, &chain, &d, &[gwk]).await {
            Ok(c) => break c,
            Err(_) if !gone.load(Ordering::Acquire) && t.elapsed() < CONNECT_BOUND => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(_) => return seq,
        }
    };
    loop {
        let batch: Vec<Vec<u8>> = (0..16)
            .map(|k| {
                sensorchain_gateway::sim::reading_tx(
                    &d,
                    &chain,
                    seq + k,
                    2_000,
                    3,
                    Vital::HeartRate { bpm: 70 },
                )
            })
            .collect();
        seq += 16;
        match c.submit_pipelined(&batch, 16).await {
            Ok(answers) => {
                let mut a = acked.lock().unwrap();
                for m in answers {
                    if let GatewayMsg::Ack { tx_id, .. } = m {
                        a.insert(tx_id);
                    }
                }
            }
            Err(_) => return seq,
        }
    }
}
