//! Crash safety: the gateway process is killed with SIGKILL at random points
//! during ingest, many times, and restarted; every reading that was ever
//! acknowledged must be in the chain, and the chain must validate.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::RngExt;
use sensorchain_core::hash::Hash32;
use sensorchain_gateway::store::Store;

const ROUNDS: usize = 16;

#[test]
fn sigkill_during_ingest_loses_no_acknowledged_reading() {
    let net = common::Net::new(4);
    let acked: Arc<Mutex<HashSet<Hash32>>> = Arc::default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut rng = rand::rng();
    let mut next_seq = vec![1u64; net.devices.len()];
    let mut total_acks = 0;
    for round in 0..ROUNDS {
        let mut gw = net.start();
        let kill_after = Duration::from_millis(rng.random_range(150..1200));
        let stop = Instant::now() + kill_after;
        let gone = Arc::new(AtomicBool::new(false));
        // sensors stream until the gateway dies under them
        let handles: Vec<_> = net
            .devices
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let (d, chain, addr, gwk, acked) = (
                    d.clone(),
                    net.chain,
                    net.tcp,
                    net.gateway.public(),
                    acked.clone(),
                );
                let first = next_seq[i];
                rt.spawn(common::stream::stream(
                    d,
                    chain,
                    addr,
                    gwk,
                    acked,
                    first,
                    gone.clone(),
                ))
            })
            .collect();
        while Instant::now() < stop {
            std::thread::sleep(Duration::from_millis(10));
        }
        gw.kill();
        gone.store(true, Ordering::Release);
        for (i, h) in handles.into_iter().enumerate() {
            // a killed gateway may have committed what it never acknowledged:
            // resume above everything sent
            next_seq[i] = rt.block_on(h).unwrap_or(next_seq[i]) + 1;
        }
        let n = acked.lock().unwrap().len();
        eprintln!("round {round}: killed after {kill_after:?}, {n} acknowledged so far");
        total_acks = n;
    }
    assert!(total_acks > 0, "no reading was ever acknowledged");
    // every acknowledged reading is in the store, and the chain validates
    let (code, out) = common::cli(
        &[
            "audit",
            "--data-dir",
            net.data().to_str().unwrap(),
            "--json",
        ],
        net.dir.path(),
    );
    if code != 0 {
        let keep = net.dir.path().to_path_buf();
        std::mem::forget(net);
        panic!(
            "audit failed ({code}): {out}; data kept in {}",
            keep.display()
        );
    }
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["valid"], true);
    let store = Store::open_read_only(&net.data()).unwrap();
    let acked = acked.lock().unwrap();
    let missing = acked
        .iter()
        .filter(|id| store.tx_location(id).unwrap().is_none())
        .count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} acknowledged readings missing",
        acked.len()
    );
    // and the gateway restarts on the crashed store
    drop(store);
    let mut gw = net.start();
    gw.kill();
}
