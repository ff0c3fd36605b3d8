//! Shutdown joins what a gateway started: in this process, through
//! `app::start`, the node's threads are gone when `Running::shutdown`
//! returns (counted in /proc/self/task); as a process, `sensorchain run`
//! stops on SIGTERM with exit code 0, every session told, and nothing
//! reported as not stopped. Both listen on port 0 and use the addresses the
//! gateway reports (no port picked, released and bound again).
//!
//! Bounds are generous (a loaded machine); none is the thing tested.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sensorchain_core::link::{GatewayMsg, Refusal};
use sensorchain_core::reading::Vital;
use sensorchain_gateway::app::{self, AppConfig};
use sensorchain_gateway::config::GatewayConfig;
use sensorchain_gateway::net::client::{Client, ClientError};
use sensorchain_gateway::node::now_ms;

const BOUND: Duration = Duration::from_secs(60);

/// Threads of this process with one of `names` (their `comm`).
fn threads_named(names: &[&str]) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
        .filter(|c| names.iter().any(|n| c.trim().starts_with(n)))
        .count()
}

const NODE_THREADS: [&str; 3] = ["block-producer", "sc-follow", "sc-raft"];
/// The verification pool's threads (`sc-verify-N`), by prefix.
const VERIFY_THREADS: [&str; 1] = ["sc-verify"];

/// A link of device 0 of `net` to `addr` whose first reading (heart rate
/// `bpm`) was acknowledged.
async fn acked_client(net: &common::Net, addr: SocketAddr, bpm: u16) -> Client {
    let mut c = Client::connect(addr, &net.chain, &net.devices[0], &[net.gateway.public()])
        .await
        .unwrap();
    let tx = sensorchain_gateway::sim::reading_tx(
        &net.devices[0],
        &net.chain,
        1,
        now_ms(),
        3,
        Vital::HeartRate { bpm },
    );
    assert!(matches!(c.submit(&tx).await, Ok(GatewayMsg::Ack { .. })));
    c
}

#[test]
fn in_process_shutdown_joins_the_node_threads() {
    if !std::path::Path::new("/proc/self/task").exists() {
        eprintln!("no /proc/self/task: skipped");
        return;
    }
    let net = common::Net::new(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // the only gateway in this process (the other test runs a child)
        assert_eq!(threads_named(&NODE_THREADS), 0);
        let mut cfg = AppConfig::new(net.gateway.clone(), net.genesis.clone(), net.data());
        cfg.tcp = Some("127.0.0.1:0".into());
        cfg.api = Some("127.0.0.1:0".into());
        let running = app::start(cfg).await.unwrap();
        // A spawned thread takes its name when it first runs: on a loaded machine that can be after
        // `start` returned. Wait for them, bounded.
        let t = Instant::now();
        while threads_named(&NODE_THREADS[..2]) != 2
            || threads_named(&NODE_THREADS[2..]) == 0
            || threads_named(&VERIFY_THREADS) == 0
        {
            assert!(
                t.elapsed() < BOUND,
                "node threads {}, verification threads {}",
                threads_named(&NODE_THREADS),
                threads_named(&VERIFY_THREADS)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let link = running.link_addr().unwrap();
        let mut c = acked_client(&net, link, 61).await;
        let _idle_api = tokio::net::TcpStream::connect(running.api_addr().unwrap())
            .await
            .unwrap();
        let stopped = tokio::time::timeout(BOUND, running.shutdown())
            .await
            .unwrap();
        assert!(stopped.is_clean(), "{stopped:?}");
        assert_eq!(
            threads_named(&NODE_THREADS),
            0,
            "node threads left after shutdown returned: {stopped:?}"
        );
        assert_eq!(
            threads_named(&VERIFY_THREADS),
            0,
            "verification threads left after shutdown returned: {stopped:?}"
        );
        c.set_timeout(BOUND);
        assert!(matches!(
            c.recv().await,
            Err(ClientError::Refused(Refusal::ShuttingDown))
        ));
    });
}

/// The `sensorchain run` lines `sensors     tcp://ADDR` and `api
/// http://ADDR  (…)`.
fn listening(line: &str) -> Option<(&'static str, SocketAddr)> {
    let mut w = line.split_whitespace();
    let (label, url) = (w.next()?, w.next()?);
    match label {
        "sensors" => Some(("tcp", url.strip_prefix("tcp://")?.parse().ok()?)),
        "api" => Some(("api", url.strip_prefix("http://")?.parse().ok()?)),
        _ => None,
    }
}

#[test]
fn sigterm_stops_sensorchain_run_cleanly() {
    let net = common::Net::new(2);
    // port 0: the gateway reports what it bound
    let mut cfg = GatewayConfig::new("data".into(), "gateway.key".into(), "genesis.block".into());
    cfg.listen.tcp = Some("127.0.0.1:0".into());
    cfg.listen.api = Some("127.0.0.1:0".into());
    cfg.batch.timeout_ms = 5;
    std::fs::write(&net.config, cfg.to_toml()).unwrap();
    let mut child = common::run_command(&net.config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let (lines_tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(l);
        }
    });
    let (mut tcp, mut api, mut out) = (None, None, Vec::new());
    let t = Instant::now();
    while tcp.is_none() || api.is_none() {
        let left = BOUND.saturating_sub(t.elapsed());
        let Ok(l) = lines.recv_timeout(left) else {
            let _ = child.kill();
            panic!(
                "the gateway did not report its addresses: {out:?}, stderr: {}",
                err_reader.join().unwrap()
            );
        };
        match listening(&l) {
            Some(("tcp", a)) => tcp = Some(a),
            Some((_, a)) => api = Some(a),
            None => {}
        }
        out.push(l);
    }
    let (tcp, api) = (tcp.unwrap(), api.unwrap());
    assert_ne!(tcp.port(), 0);
    assert_ne!(api.port(), 0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut client, _idle_api) = rt.block_on(async {
        let c = acked_client(&net, tcp, 62).await;
        let idle = tokio::net::TcpStream::connect(api).await.unwrap();
        (c, idle)
    });
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let t = Instant::now();
    let Some(status) = common::wait_exit(&mut child, BOUND) else {
        let _ = child.kill();
        panic!("sensorchain run did not exit within {BOUND:?} of SIGTERM");
    };
    eprintln!(
        "sensorchain run exited {:.0} ms after SIGTERM",
        t.elapsed().as_secs_f64() * 1e3
    );
    let stderr = err_reader.join().unwrap();
    // the rest of stdout, to its end
    while let Ok(l) = lines.recv_timeout(BOUND) {
        out.push(l);
    }
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    assert!(!stderr.contains("did not stop"), "stderr: {stderr}");
    assert!(
        out.iter().any(|l| l.starts_with("stopped at height")),
        "{out:?}"
    );
    rt.block_on(async {
        client.set_timeout(BOUND);
        assert!(matches!(
            client.recv().await,
            Err(ClientError::Refused(Refusal::ShuttingDown))
        ));
    });
}
