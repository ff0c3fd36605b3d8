//! Healing in place: a gateway whose disk fills (twice over) refuses
//! `storage_failed`, and once space is freed it is back by itself (no
//! restart by hand) on the same address, with every acknowledged reading
//! stored exactly once and a chain that passes the store's checks. Verdicts
//! are read from what was answered and stored, never from how long anything
//! took (the bounds are only there so that a broken build fails instead of
//! hanging).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sensorchain_core::hash::Hash32;
use sensorchain_core::identity::Keypair;
use sensorchain_core::link::{GatewayMsg, RejectReason};
use sensorchain_core::reading::Vital;
use sensorchain_core::tx::Transaction;
use tokio::net::TcpStream;

use super::*;
use crate::net::client::Client;
use crate::node::now_ms;
use crate::store::Store;
use crate::store::integrity::IntegrityDepth;
use crate::testkit::{self, Tmpfs};

/// A generous bound on anything waited for (a loaded machine).
const BOUND: Duration = Duration::from_secs(180);

/// A sensor that dials again whenever its link is gone.
struct Sensor {
    key: Keypair,
    gateway: Keypair,
    chain: sensorchain_core::hash::ChainId,
    addr: SocketAddr,
    link: Option<Client<TcpStream>>,
}

impl Sensor {
    /// Reading `seq` (its exact bytes).
    fn reading(&self, seq: u64) -> Vec<u8> {
        crate::sim::reading_tx(
            &self.key,
            &self.chain,
            seq,
            now_ms(),
            0,
            Vital::HeartRate {
                bpm: 60 + (seq % 40) as u16,
            },
        )
    }

    /// The gateway's answer to `tx`, or `None` if the link failed (it is
    /// dialled again on the next call).
    async fn send(&mut self, tx: &[u8]) -> Option<GatewayMsg> {
        if self.link.is_none() {
            let trusted = [self.gateway.public()];
            let c = Client::connect(self.addr, &self.chain, &self.key, &trusted);
            self.link = Some(c.await.ok()?);
        }
        let link = self.link.as_mut()?;
        match link.submit(tx).await {
            Ok(m) => Some(m),
            Err(_) => {
                self.link = None;
                None
            }
        }
    }
}

/// `GET /health` on a new connection: the whole response.
async fn health(addr: SocketAddr) -> String {
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect_timeout(&addr, BOUND).unwrap();
        s.set_read_timeout(Some(BOUND)).unwrap();
        write!(
            s,
            "GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text
    })
    .await
    .unwrap()
}

/// How many times each transaction id is in the stored chain.
fn stored_ids(store: &Store) -> std::collections::HashMap<Hash32, usize> {
    let mut seen = std::collections::HashMap::new();
    for entry in store.blocks(0) {
        let (h, bytes) = entry.unwrap();
        let block = crate::store::decode_block(h, &bytes).unwrap();
        for tx in block.encoded_txs() {
            *seen.entry(Transaction::id_of_encoded(&tx)).or_insert(0) += 1;
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_heals_in_place() {
    let Some(disk) = Tmpfs::mount("8m", "a_full_disk_heals_in_place") else {
        return;
    };
    let gateway = testkit::gateway();
    let device = Keypair::from_seed([3; 32]);
    let genesis = testkit::genesis_block(
        "heal",
        &testkit::admin(),
        &gateway,
        &testkit::device_members(std::slice::from_ref(&device)),
    );
    let data = disk.path().join("data");
    let mut cfg = testkit::app_config(&gateway, genesis.clone(), &data);
    cfg.api = Some("127.0.0.1:0".into());
    cfg.node.batch_timeout = Duration::from_millis(2);
    // more than is left once full, less than is freed
    cfg.heal = HealSettings {
        probe_every: Duration::from_millis(100),
        probe_bytes: 1 << 20,
    };
    let metrics = cfg.metrics.clone();
    let (addrs, mut started) = tokio::sync::watch::channel(Vec::<(SocketAddr, SocketAddr)>::new());
    let (stop, stopping) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(run_healing(
        cfg,
        async {
            let _ = stopping.await;
        },
        move |r| addrs.send_modify(|a| a.push((r.link_addr().unwrap(), r.api_addr().unwrap()))),
    ));
    let first = tokio::time::timeout(BOUND, started.wait_for(|a| !a.is_empty()))
        .await
        .expect("started")
        .expect("running")[0];
    let mut sensor = Sensor {
        key: device,
        gateway,
        chain: genesis.header.chain_id,
        addr: first.0,
        link: None,
    };

    // twice: the disk fills, the gateway heals, the disk fills again
    let mut acked: Vec<(u64, Hash32)> = Vec::new();
    let mut replayed = Vec::new();
    let mut seq = 1;
    for round in 1..=2u64 {
        // 1. the disk fills under ingest: refused storage_failed, never lost
        disk.fill(256 * 1024);
        let t = Instant::now();
        let before = acked.len();
        let mut refused: Vec<Vec<u8>> = Vec::new();
        while refused.len() < 3 {
            assert!(t.elapsed() < BOUND, "the disk never filled");
            let tx = sensor.reading(seq);
            match sensor.send(&tx).await {
                Some(GatewayMsg::Ack { tx_id, .. }) => acked.push((seq, tx_id)),
                Some(GatewayMsg::Reject {
                    reason: RejectReason::StorageFailed,
                    ..
                }) => refused.push(tx),
                Some(GatewayMsg::Busy { .. }) | None => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                Some(other) => panic!("reading {seq}: unexpected answer {other:?}"),
            }
            seq += 1;
        }
        assert!(
            acked.len() > before,
            "nothing was acknowledged before the disk filled"
        );
        let t = Instant::now();
        while metrics.storage_failed.get() != 1 {
            assert!(t.elapsed() < BOUND, "the failure was not seen");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(metrics.storage_failures.get(), round);
        // the API still answers, and says why
        let h = health(first.1).await;
        assert!(h.contains("\"status\":\"storage_failed\""), "{h}");
        // still full: still refused, nothing restarted
        let tx = sensor.reading(seq);
        assert!(matches!(
            sensor.send(&tx).await,
            Some(GatewayMsg::Reject {
                reason: RejectReason::StorageFailed,
                ..
            })
        ));
        refused.push(tx);
        seq += 1;
        assert_eq!(metrics.storage_heals.get(), round - 1);

        // 2. space is freed: the gateway is back by itself, on the same
        // address; the refused readings are resent (each acknowledged, or a
        // replay if its block was stored after all), then new ones
        disk.empty();
        let t = Instant::now();
        let mut resends = refused.into_iter();
        let mut next = resends.next();
        let mut new_acks = 0;
        while new_acks < 20 {
            assert!(
                t.elapsed() < BOUND,
                "not back within {BOUND:?} after space was freed"
            );
            let (tx, resent) = match &next {
                Some(tx) => (tx.clone(), true),
                None => (sensor.reading(seq), false),
            };
            let id = Transaction::id_of_encoded(&tx);
            let s = Transaction::decode(&tx).unwrap().body.sequence;
            match sensor.send(&tx).await {
                Some(GatewayMsg::Ack { tx_id, .. }) => {
                    assert_eq!(tx_id, id);
                    acked.push((s, tx_id));
                    if resent {
                        next = resends.next();
                    } else {
                        seq += 1;
                        new_acks += 1;
                    }
                }
                Some(GatewayMsg::Reject {
                    reason: RejectReason::Replay,
                    ..
                }) if resent => {
                    replayed.push(id);
                    next = resends.next();
                }
                Some(GatewayMsg::Reject {
                    reason: RejectReason::StorageFailed,
                    ..
                })
                | Some(GatewayMsg::Busy { .. })
                | None => tokio::time::sleep(Duration::from_millis(20)).await,
                Some(other) => panic!("reading {s}: unexpected answer {other:?}"),
            }
        }
        assert_eq!(metrics.storage_heals.get(), round);
        assert_eq!(metrics.storage_failed.get(), 0);
        // the same addresses: the new gateway answers on the old API address
        assert_eq!(started.borrow().as_slice(), vec![first; round as usize + 1]);
        let h = health(first.1).await;
        assert!(h.contains("\"status\":\"ok\""), "{h}");
    }
    // an acknowledged reading sent again is not acknowledged twice
    let (old_seq, _) = acked[0];
    let again = sensor.reading(old_seq);
    assert!(matches!(
        sensor.send(&again).await,
        Some(GatewayMsg::Reject {
            reason: RejectReason::Replay,
            ..
        })
    ));
    eprintln!(
        "full disk healed: {} acknowledged, {} refused readings found stored on resend",
        acked.len(),
        replayed.len()
    );

    // 3. stopped: every acknowledged reading stored exactly once, the
    // chain passes the store's checks and replays
    drop(sensor);
    let _ = stop.send(());
    let stopped = tokio::time::timeout(BOUND, run)
        .await
        .expect("stopped")
        .unwrap()
        .unwrap();
    assert_eq!(stopped.heals, 2);
    assert!(stopped.is_clean(), "{stopped:?}");
    let store = Store::open(&data).unwrap();
    store.check_integrity(IntegrityDepth::Full).unwrap();
    let state = crate::node::replay(&store, &genesis).unwrap().unwrap();
    let ids = stored_ids(&store);
    for (s, id) in &acked {
        assert_eq!(ids.get(id), Some(&1), "acknowledged reading {s}");
    }
    for id in &replayed {
        assert_eq!(ids.get(id), Some(&1), "a refused reading found stored");
    }
    let last = acked.iter().map(|(s, _)| *s).max().unwrap();
    let dev = state
        .identity(&Keypair::from_seed([3; 32]).public())
        .unwrap();
    assert_eq!(dev.last_sequence, Some(last));
}

#[test]
fn the_probe_takes_the_room_it_asks_for_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    probe_disk(dir.path(), 300_000).unwrap();
    assert!(!dir.path().join(PROBE_FILE).exists());
    let Some(disk) = Tmpfs::mount("1m", "the_probe_takes_the_room_it_asks_for") else {
        return;
    };
    assert!(
        probe_disk(disk.path(), 2 << 20).is_err(),
        "more than the disk holds"
    );
    assert!(!disk.path().join(PROBE_FILE).exists());
    probe_disk(disk.path(), 256 * 1024).unwrap();
}
