//! The composition root: the addresses a started gateway reports are the
//! ones it holds, shutdown joins everything it started (with links and API
//! clients connected), and a failed start stops what it had started.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use sensorchain_core::block::Block;
use sensorchain_core::identity::Keypair;
use sensorchain_core::link::{GatewayMsg, Refusal};
use sensorchain_core::reading::Vital;

use super::*;
use crate::net::client::{Client, ClientError};
use crate::node::now_ms;
use crate::testkit;

/// A generous bound for anything here (a loaded machine), never the thing
/// tested.
const BOUND: Duration = Duration::from_secs(60);

struct World {
    gateway: Keypair,
    devices: Vec<Keypair>,
    genesis: Block,
}

fn world(n: u8) -> World {
    let gateway = testkit::gateway();
    let devices: Vec<Keypair> = (0..n).map(|i| Keypair::from_seed([40 + i; 32])).collect();
    let genesis = testkit::genesis_block(
        "app",
        &testkit::admin(),
        &gateway,
        &testkit::device_members(&devices),
    );
    World {
        gateway,
        devices,
        genesis,
    }
}

/// A gateway on loopback port 0 for links and the API.
fn config(w: &World, dir: &std::path::Path) -> AppConfig {
    let mut c = testkit::app_config(&w.gateway, w.genesis.clone(), dir.join("data"));
    c.api = Some("127.0.0.1:0".into());
    c
}

/// `GET /health` on a new connection: the status line.
fn http_health(addr: SocketAddr) -> String {
    let mut s = std::net::TcpStream::connect_timeout(&addr, BOUND).unwrap();
    s.set_read_timeout(Some(BOUND)).unwrap();
    write!(
        s,
        "GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines().next().unwrap_or_default().to_string()
}

/// The API port race: the addresses reported are the ones the listeners
/// hold (bound once, port 0 resolved), and they are released on shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_the_addresses_it_holds() {
    let w = world(1);
    let dir = tempfile::tempdir().unwrap();
    let running = start(config(&w, dir.path())).await.unwrap();
    let api = running.api_addr().expect("api address");
    let link = running.link_addr().expect("link address");
    assert_ne!(api.port(), 0);
    assert_ne!(link.port(), 0);
    // held: nobody else can bind them
    for a in [api, link] {
        let e = std::net::TcpListener::bind(a).expect_err("the address is held");
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{a}: {e}");
    }
    // and served: by the API and the link listener of this gateway
    let status = tokio::task::spawn_blocking(move || http_health(api))
        .await
        .unwrap();
    assert!(status.contains("200"), "{status}");
    let chain = w.genesis.header.chain_id;
    let c = Client::connect(link, &chain, &w.devices[0], &[w.gateway.public()])
        .await
        .unwrap();
    c.close().await;
    let stopped = tokio::time::timeout(BOUND, running.shutdown())
        .await
        .unwrap();
    assert!(stopped.is_clean(), "{stopped:?}");
    // released: both can be bound again
    std::net::TcpListener::bind(api).expect("the API address is released");
    std::net::TcpListener::bind(link).expect("the link address is released");
}

/// Shutdown with sessions streaming, a link still handshaking (silent) and
/// an idle API connection: every submission in flight is answered, each
/// session is closed with `Refused(ShuttingDown)`, and every task and
/// thread is joined — the store can be opened again the moment
/// `shutdown` returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_joins_every_thread_and_task() {
    let w = world(3);
    let dir = tempfile::tempdir().unwrap();
    let running = start(config(&w, dir.path())).await.unwrap();
    let (link, api) = (running.link_addr().unwrap(), running.api_addr().unwrap());
    let chain = w.genesis.header.chain_id;
    let mut clients = Vec::new();
    for d in &w.devices {
        let c = Client::connect(link, &chain, d, &[w.gateway.public()])
            .await
            .unwrap();
        clients.push(c);
    }
    // one reading acknowledged on each session, then some left in flight
    for (i, c) in clients.iter_mut().enumerate() {
        let tx = crate::sim::reading_tx(
            &w.devices[i],
            &chain,
            1,
            now_ms(),
            3,
            Vital::HeartRate { bpm: 70 },
        );
        assert!(matches!(c.submit(&tx).await, Ok(GatewayMsg::Ack { .. })));
    }
    for (i, c) in clients.iter_mut().enumerate() {
        for seq in 2..6 {
            let tx = crate::sim::reading_tx(
                &w.devices[i],
                &chain,
                seq,
                now_ms(),
                3,
                Vital::HeartRate { bpm: 70 },
            );
            let frame = c
                .seal(&sensorchain_core::link::DeviceMsg::Submit(&tx))
                .unwrap();
            c.send_wire(&frame).await.unwrap();
        }
    }
    // a link that never says Hello, and an idle keep-alive API connection
    let silent = tokio::net::TcpStream::connect(link).await.unwrap();
    let idle_api = tokio::net::TcpStream::connect(api).await.unwrap();
    let data = dir.path().join("data");

    let t = Instant::now();
    let stopped = tokio::time::timeout(BOUND, running.shutdown())
        .await
        .expect("shutdown within its bound");
    assert!(stopped.is_clean(), "{stopped:?}");
    for want in ["tcp listener", "api", "block producer"] {
        assert!(
            stopped.joined.iter().any(|j| j.starts_with(want)),
            "{want} not joined: {stopped:?}"
        );
    }
    // the node has released the store: no thread of it holds it any more
    crate::store::Store::open(&data).expect("the store is released when shutdown returns");
    eprintln!("shutdown took {:.0} ms", t.elapsed().as_secs_f64() * 1e3);
    // every session was answered, then told the gateway is stopping
    for mut c in clients {
        c.set_timeout(BOUND);
        let mut acks = 0;
        let end = loop {
            match c.recv().await {
                Ok(GatewayMsg::Ack { .. }) => acks += 1,
                Ok(other) => panic!("unexpected answer in flight: {other:?}"),
                Err(e) => break e,
            }
        };
        assert_eq!(acks, 4, "every submission in flight is acknowledged");
        assert!(
            matches!(end, ClientError::Refused(Refusal::ShuttingDown)),
            "{end}"
        );
    }
    drop((silent, idle_api));
}

/// A start that fails at its listeners (the TCP port is taken) stops the
/// node it had started: the store is released when the error returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_start_stops_what_it_started() {
    let w = world(1);
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut c = config(&w, dir.path());
    c.tcp = Some(taken.local_addr().unwrap().to_string());
    let e = match tokio::time::timeout(BOUND, start(c)).await.unwrap() {
        Err(e) => e,
        Ok(_) => panic!("started on a taken port"),
    };
    assert!(matches!(e, StartError::Links { .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with("cannot listen for sensors on 127.0.0.1:"),
        "{e}"
    );
    crate::store::Store::open(&dir.path().join("data")).expect("the store is released");
}
