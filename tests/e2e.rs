//! End to end over real TCP sockets and real processes: simulated sensors →
//! a `sensorchain run` gateway → blocks → HTTP API → offline audit and
//! export of the stored chain.

mod common;

use std::time::Duration;

use sensorchain_core::chain::validate_blocks;
use sensorchain_core::link::GatewayMsg;
use sensorchain_core::reading::Vital;
use sensorchain_gateway::net::client::Client;

fn get(url: &str) -> (u16, serde_json::Value) {
    match ureq::get(url).call() {
        Ok(mut r) => (
            r.status().as_u16(),
            r.body_mut().read_json().unwrap_or(serde_json::Value::Null),
        ),
        Err(ureq::Error::StatusCode(c)) => (c, serde_json::Value::Null),
        Err(e) => panic!("GET {url}: {e}"),
    }
}

#[test]
fn sensors_gateway_blocks_api_audit_export() {
    let net = common::Net::new(3);
    let mut gw = net.start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let per_device = 200u64;
    let handles: Vec<_> = net
        .devices
        .iter()
        .map(|d| {
            let (d, chain, addr, gwk) = (d.clone(), net.chain, net.tcp, net.gateway.public());
            rt.spawn(async move {
                let mut c = Client::connect(addr, &chain, &d, &[gwk])
                    .await
                    .expect("handshake");
                let txs: Vec<Vec<u8>> = (1..=per_device)
                    .map(|s| {
                        sensorchain_gateway::sim::reading_tx(
                            &d,
                            &chain,
                            s,
                            2_000,
                            3,
                            Vital::HeartRate {
                                bpm: 60 + (s % 40) as u16,
                            },
                        )
                    })
                    .collect();
                c.submit_pipelined(&txs, 32).await.expect("submit")
            })
        })
        .collect();
    let mut ids = Vec::new();
    for h in handles {
        for m in rt.block_on(h).unwrap() {
            match m {
                GatewayMsg::Ack { tx_id, .. } => ids.push(tx_id),
                other => panic!("not acknowledged: {other:?}"),
            }
        }
    }
    assert_eq!(ids.len() as u64, 3 * per_device);

    // the API serves the head and each transaction with its proof
    let base = format!("http://{}", net.api);
    let (code, health) = get(&format!("{base}/health"));
    assert_eq!(code, 200, "{health}");
    let (code, head) = get(&format!("{base}/chain/head"));
    assert_eq!(code, 200, "{head}");
    for id in ids.iter().step_by(97) {
        // a reading's transaction: for its readers, and for the gateways
        let (code, tx) = common::get_as(&base, &net.gateway, &format!("/txs/{id}"));
        assert_eq!(code, 200, "{tx}");
        let (code, proof) = get(&format!("{base}/txs/{id}/proof"));
        assert_eq!(code, 200, "{proof}");
    }
    let (code, _) = get(&format!("{base}/txs/{}", "00".repeat(32)));
    assert_eq!(code, 401, "anonymous: no session");
    let (code, _) = common::get_as(&base, &net.gateway, &format!("/txs/{}", "00".repeat(32)));
    assert_eq!(code, 404);

    // stop gracefully, then audit and export offline
    assert!(
        gw.terminate(Duration::from_secs(20)),
        "gateway did not stop on SIGTERM"
    );
    let data = net.data();
    let (code, out) = common::cli(
        &["audit", "--data-dir", data.to_str().unwrap(), "--json"],
        net.dir.path(),
    );
    assert_eq!(code, 0, "{out}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["valid"], true);
    assert_eq!(report["readings"], 3 * per_device);
    let export = net.dir.path().join("chain.export");
    let (code, out) = common::cli(
        &[
            "export",
            "--data-dir",
            data.to_str().unwrap(),
            "--out",
            export.to_str().unwrap(),
        ],
        net.dir.path(),
    );
    assert_eq!(code, 0, "{out}");
    let entries = sensorchain_gateway::export::read_export(&export).unwrap();
    let (blocks, certs): (Vec<_>, Vec<_>) = entries.into_iter().unzip();
    let state = validate_blocks(&blocks, &certs).unwrap();
    for d in &net.devices {
        assert_eq!(
            state.identity(&d.public()).unwrap().last_sequence,
            Some(per_device)
        );
    }
}
