//! Links over a real serial line: a pseudo-terminal pair, the gateway
//! opening the slave by its path as it opens a UART, the test driving the
//! master as the device.

use std::sync::Arc;
use std::time::Duration;

use sensorchain_core::block::Block;
use sensorchain_core::chain::Chain;
use sensorchain_core::identity::Keypair;
use sensorchain_core::link::GatewayMsg;
use sensorchain_core::permissions::Role;
use sensorchain_core::reading::Vital;
use sensorchain_core::tx::{GenesisConfig, Member, Params, Transaction, TxBody};
use tokio_serial::{SerialPort, SerialStream};

use super::client::Client;
use super::{Gateway, NetConfig, serial};
use crate::metrics::Metrics;
use crate::node::{Node, NodeConfig, now_ms};
use crate::store::Store;

fn genesis(admin: &Keypair, gateway: &Keypair, device: &Keypair) -> Block {
    let m = |k: &Keypair, role: Role| Member {
        key: k.public(),
        permissions: role.default_permissions(),
        role,
    };
    let members = [
        m(admin, Role::Admin),
        m(gateway, Role::Gateway),
        m(device, Role::Device),
    ];
    let cfg = GenesisConfig::new("serial-test", Params::default(), &members).unwrap();
    Chain::genesis_block(admin, cfg, now_ms()).unwrap()
}

fn reading(device: &Keypair, chain: &sensorchain_core::hash::ChainId, seq: u64) -> Vec<u8> {
    let body = TxBody::reading(
        device.public(),
        seq,
        now_ms(),
        0,
        Vital::HeartRate { bpm: 70 },
    );
    Transaction::sign(body, chain, device).unwrap().to_vec()
}

/// A device streams over a serial line, restarts without the line closing
/// (its next bytes are a new `Hello`), handshakes again on the same line and
/// goes on; every reading is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_line_serves_a_device_that_restarts_mid_session() {
    let (admin, gw_key, device) = (
        Keypair::from_seed([1; 32]),
        Keypair::from_seed([2; 32]),
        Keypair::from_seed([3; 32]),
    );
    let genesis = genesis(&admin, &gw_key, &device);
    let chain = genesis.header.chain_id;
    let dir = tempfile::tempdir().unwrap();
    let cfg = NodeConfig {
        batch_timeout: Duration::from_millis(2),
        ..Default::default()
    };
    let metrics = Arc::new(Metrics::new());
    let node = Node::start(
        Store::open(dir.path()).unwrap(),
        gw_key.clone(),
        &genesis,
        cfg,
        metrics.clone(),
    )
    .unwrap();
    let gw = Gateway::new(node.clone(), NetConfig::default());
    let (master, slave) = SerialStream::pair().expect("a pseudo-terminal pair");
    let path = slave.name().expect("the slave's path");
    tokio::spawn(serial::serve_serial(gw.clone(), path.clone(), 115_200));
    // let the gateway open and configure the line before the device talks
    tokio::time::sleep(Duration::from_millis(300)).await;

    let trusted = [gw_key.public()];
    let mut c = Client::handshake(master, &chain, &device, &trusted)
        .await
        .expect("first handshake over the serial line");
    for seq in 1..=3 {
        let ack = c.submit(&reading(&device, &chain, seq)).await.unwrap();
        assert!(
            matches!(ack, GatewayMsg::Ack { sequence, .. } if sequence == seq),
            "{ack:?}"
        );
    }
    // the device restarts: no close frame, the line stays open, a new Hello
    let master = c.into_stream();
    let mut c = Client::handshake(master, &chain, &device, &trusted)
        .await
        .expect("a new handshake on the same line");
    let ack = c.submit(&reading(&device, &chain, 10)).await.unwrap();
    assert!(
        matches!(ack, GatewayMsg::Ack { sequence: 10, .. }),
        "{ack:?}"
    );
    c.close().await;
    let head = node.store().head().unwrap().unwrap();
    assert_eq!(head.reading_count_total, 4);
    let text = metrics.encode();
    assert!(
        text.contains("rehandshake"),
        "the restart is counted: {text}"
    );
    gw.shutdown(Duration::from_secs(2)).await;
    drop(slave);
}
