//! Provisioning and operator transactions against a real `sensorchain run`
//! process: a fresh device is refused at the handshake; `sensorchain
//! provision --grant` (a process) writes a key page that decodes to the
//! device's seed, the gateway key and the chain id, and grants the device,
//! which then handshakes and gets a reading committed; `sensorchain tx`
//! (processes) revokes it, sets roles, assigns a device to a patient and
//! gives and withdraws a patient's consent, each visible in the HTTP API;
//! refusals are reported with the gateway's reason.

mod common;

use std::path::Path;

use sensorchain_core::hash::ChainId;
use sensorchain_core::identity::{Keypair, PublicKey};
use sensorchain_core::link::{GatewayMsg, Refusal};
use sensorchain_core::reading::Vital;
use sensorchain_device::provision::{KEY_PAGE_LEN, KeyPage};
use sensorchain_gateway::keys::{read_keypair, write_keypair};
use sensorchain_gateway::net::client::{Client, ClientError};
use sensorchain_gateway::node::now_ms;
use serde_json::Value;

use common::{run, run_line};

/// Runs a command that must succeed with `--json` output.
fn run_json(args: &[&str], dir: &Path) -> Value {
    let (code, out, err) = run(args, dir);
    assert_eq!(
        code, 0,
        "sensorchain {args:?}\nstdout: {out}\nstderr: {err}"
    );
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// `sensorchain provision ARGS --grant --admin admin.key --api API --json`
/// (`ARGS` written as one line), which must succeed: its output.
fn provision_granting(args: &str, api: &str, dir: &Path) -> Value {
    let tail = ["--grant", "--admin", "admin.key", "--api", api, "--json"];
    let args: Vec<&str> = args.split_whitespace().collect();
    run_json(&[&["provision"], &args[..], &tail].concat(), dir)
}

/// Runs `sensorchain LINE` ([`run_line`]), which must be refused (exit
/// code 2): its stderr.
fn refused_line(line: &str, dir: &Path) -> String {
    let (code, _, err) = run_line(line, dir);
    assert_eq!(code, 2, "sensorchain {line}\nstderr: {err}");
    err
}

/// `GET url` logged in as the network's gateway (it sees the identity
/// directory and every transaction): the JSON of a 200.
fn get(url: &str) -> Value {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let (status, v) = common::get_as(
        &format!("http://{host}"),
        &sensorchain_gateway::testkit::gateway(),
        path,
    );
    assert_eq!(status, 200, "GET {url}: {v}");
    v
}

/// One handshake as `kp`; `Ok` if the gateway admitted it.
fn connect(
    rt: &tokio::runtime::Runtime,
    net: &common::Net,
    kp: &Keypair,
) -> Result<Client, ClientError> {
    rt.block_on(Client::connect(
        net.tcp,
        &net.chain,
        kp,
        &[net.gateway.public()],
    ))
}

/// A handshake as `kp` (`who`) is refused with `want`.
fn assert_refused(
    rt: &tokio::runtime::Runtime,
    net: &common::Net,
    kp: &Keypair,
    want: Refusal,
    who: &str,
) {
    match connect(rt, net, kp) {
        Err(ClientError::Refused(r)) if r == want => {}
        other => panic!("{who} was not refused {want:?}: {other:?}"),
    }
}

/// Sends one heart rate reading and returns its acknowledgement's height.
fn send_reading(
    rt: &tokio::runtime::Runtime,
    client: &mut Client,
    kp: &Keypair,
    chain: &ChainId,
    sequence: u64,
) -> (u64, String) {
    let tx = sensorchain_gateway::sim::reading_tx(
        kp,
        chain,
        sequence,
        now_ms(),
        0,
        Vital::HeartRate { bpm: 71 },
    );
    match rt.block_on(client.submit(&tx)).expect("an answer") {
        GatewayMsg::Ack { height, tx_id, .. } => (height, tx_id.to_string()),
        other => panic!("reading not acknowledged: {other:?}"),
    }
}

fn write_key(dir: &Path, name: &str, kp: &Keypair) -> String {
    let p = dir.join(name);
    write_keypair(&p, kp, false).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn provision_grants_a_fresh_device_which_then_connects_until_revoked() {
    let net = common::Net::new(0);
    let dir = net.dir.path();
    let (_gw, api) = net.start_for_admin();
    let rt = tokio::runtime::Runtime::new().unwrap();

    // a fresh identity from keygen is not on the allow-list
    let (code, out, err) = run(&["keygen", "-o", "dev.key"], dir);
    assert_eq!(code, 0, "{out}{err}");
    let device = read_keypair(&dir.join("dev.key")).unwrap();
    assert_refused(
        &rt,
        &net,
        &device,
        Refusal::UnknownIdentity,
        "a fresh device",
    );

    // provision it, granting it through the API
    let v = provision_granting(
        "--device-key dev.key --genesis genesis.block --gateway-key gateway.key --out dev.bin",
        &api,
        dir,
    );
    assert_eq!(v["device"]["public_key"], device.public().to_string());
    assert_eq!(
        v["device"]["address"],
        device.public().address().to_string()
    );
    assert_eq!(v["chain_id"], net.chain.to_string());
    assert_eq!(v["format"], "bin");
    assert_eq!(v["bytes"], KEY_PAGE_LEN);
    let txs = v["grant"]["txs"].as_array().unwrap();
    let kinds: Vec<&str> = txs.iter().map(|t| t["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["grant", "set_role"]);
    // the admin's sequence numbers were read from the API: 1 and 2
    let seqs: Vec<u64> = txs
        .iter()
        .map(|t| t["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2]);
    let height = v["grant"]["height"].as_u64().unwrap();
    assert!(height >= 1);
    for t in txs {
        let got = get(&format!("{api}/txs/{}", t["tx_id"].as_str().unwrap()));
        assert_eq!(got["location"]["height"], t["height"]);
    }

    // the page is what the firmware will read
    let bytes = std::fs::read(dir.join("dev.bin")).unwrap();
    let page = KeyPage::decode(&bytes).expect("the written page decodes");
    assert_eq!(page.seed, device.seed());
    assert_eq!(page.chain, net.chain);
    assert_eq!(page.gateways(), &[net.gateway.public()]);
    assert!(page.readers().is_empty());
    assert_ne!(page.entropy, [0; 32]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("dev.bin"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // the identity on the chain is what genesis gives a device
    let id = get(&format!("{api}/identities/{}", device.public()));
    assert_eq!(id["role"], "device");
    assert_eq!(id["permissions"], serde_json::json!(["connect", "write"]));

    // the device, with the key pair from its page, connects and writes
    let mut client = connect(&rt, &net, &page.keypair()).expect("granted device handshakes");
    let (h, tx_id) = send_reading(&rt, &mut client, &page.keypair(), &net.chain, 1);
    assert!(h > height);
    let got = get(&format!("{api}/txs/{tx_id}"));
    assert_eq!(got["kind"], "reading");
    assert_eq!(got["signer"], device.public().to_string());
    rt.block_on(client.close());

    // provisioning again is idempotent on the chain: nothing to grant
    let v = provision_granting(
        &format!(
            "--device-key dev.key --chain-id {} --gateway-key {} --format uf2 --base-address 0x101FF000 --out dev.uf2",
            net.chain,
            net.gateway.public()
        ),
        &api,
        dir,
    );
    assert_eq!(v["grant"]["txs"].as_array().unwrap().len(), 0);
    let uf2 = std::fs::read(dir.join("dev.uf2")).unwrap();
    assert_eq!(uf2.len(), 1024);
    let mut payload = uf2[32..288].to_vec();
    payload.extend_from_slice(&uf2[512 + 32..512 + 32 + (KEY_PAGE_LEN - 256)]);
    let page2 = KeyPage::decode(&payload).expect("UF2 payload decodes");
    assert_eq!(page2.seed, device.seed());
    assert_eq!(page2.chain, net.chain);
    assert_ne!(page2.entropy, page.entropy, "fresh entropy every time");

    // an operator revokes the device: it is refused from then on
    let v = run_json(
        &[
            "tx",
            "revoke",
            &device.public().to_string(),
            "connect,write",
            "--key",
            "admin.key",
            "--api",
            &api,
            "--genesis",
            "genesis.block",
            "--json",
        ],
        dir,
    );
    assert_eq!(v["kind"], "revoke");
    assert_eq!(v["sequence"], 3);
    assert_eq!(v["identity"]["permissions"], serde_json::json!([]));
    assert_eq!(v["pending_vote"], false);
    assert_refused(
        &rt,
        &net,
        &device,
        Refusal::NotPermitted,
        "a revoked device",
    );

    // and granted again, by address this time
    let v = run_json(
        &[
            "tx",
            "grant",
            &device.public().address().to_string(),
            "connect,write",
            "--key",
            "admin.key",
            "--api",
            &api,
            "--json",
        ],
        dir,
    );
    assert_eq!(v["kind"], "grant");
    let mut client = connect(&rt, &net, &device).expect("re-granted device handshakes");
    send_reading(&rt, &mut client, &device, &net.chain, 2);
    rt.block_on(client.close());
}

#[test]
fn tx_roles_assign_and_consent_show_up_in_the_api() {
    let net = common::Net::new(1);
    let dir = net.dir.path();
    let (_gw, api) = net.start_for_admin();
    let patient = Keypair::from_seed([40; 32]);
    let doctor = Keypair::from_seed([41; 32]);
    let patient_file = write_key(dir, "patient.key", &patient);
    let doctor_file = write_key(dir, "doctor.key", &doctor);
    let device: PublicKey = net.devices[0].public();
    let admin = |args: &[&str]| {
        let mut a: Vec<&str> = vec!["tx"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--key", "admin.key", "--api", &api, "--json"]);
        run_json(&a, dir)
    };

    let v = admin(&["grant", &patient_file, "connect,send,receive"]);
    let summary = v["summary"].as_str().unwrap();
    assert!(
        summary.contains(" grants connect,send,receive to "),
        "{summary}"
    );
    admin(&["role", &patient_file, "patient"]);
    admin(&["grant", &doctor_file, "connect,receive"]);
    // a registered identity may be named by its address
    let v = admin(&["role", &doctor.public().address().to_string(), "doctor"]);
    assert_eq!(v["identity"]["role"], "doctor");
    let v = admin(&["assign", &device.to_string(), &patient_file]);
    assert_eq!(v["kind"], "assign_device");
    assert_eq!(v["identity"]["patient"], patient.public().to_string());

    // the patient consents to the doctor
    let consent = |extra: &[&str]| {
        let mut a = vec![
            "tx",
            "consent",
            doctor_file.as_str(),
            "--key",
            patient_file.as_str(),
            "--api",
            &api,
            "--json",
        ];
        a.extend_from_slice(extra);
        run_json(&a, dir)
    };
    let v = consent(&[]);
    assert_eq!(v["kind"], "consent");
    assert_eq!(v["signer"], patient.public().to_string());
    assert_eq!(v["sequence"], 1);
    let consents = get(&format!("{api}/consents"));
    assert_eq!(consents["count"], 1);
    assert_eq!(
        consents["consents"][0]["patient"],
        patient.public().to_string()
    );
    assert_eq!(
        consents["consents"][0]["reader"],
        doctor.public().to_string()
    );
    assert_eq!(consents["consents"][0]["reader_role"], "doctor");
    let p = get(&format!("{api}/identities/{}", patient.public()));
    assert_eq!(p["devices"], serde_json::json!([device.to_string()]));
    assert_eq!(
        p["consented_readers"],
        serde_json::json!([doctor.public().to_string()])
    );
    let readers = get(&format!("{api}/identities/{device}/readers"));
    assert_eq!(readers["readers"].as_array().unwrap().len(), 2);

    // and withdraws it
    let v = consent(&["--withdraw"]);
    assert_eq!(v["sequence"], 2);
    assert_eq!(get(&format!("{api}/consents"))["count"], 0);

    // the text output names the commit
    let (code, out, err) = run_line(
        &format!("tx grant {doctor_file} send --key admin.key --api {api}"),
        dir,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("committed   grant at height"), "{out}");
}

#[test]
fn refusals_are_reported_with_the_gateways_reason() {
    let net = common::Net::new(1);
    let dir = net.dir.path();
    let (_gw, api) = net.start_for_admin();
    // a registered device that is no admin
    write_key(dir, "dev0.key", &net.devices[0]);
    let stranger = Keypair::from_seed([77; 32]);
    let stranger_file = write_key(dir, "stranger.key", &stranger);

    // a device may not grant
    let err = refused_line(
        &format!("tx grant {stranger_file} connect --key dev0.key --api {api}"),
        dir,
    );
    assert!(err.contains("not_permitted"), "{err}");
    assert!(err.contains("lacks the admin permission"), "{err}");

    // provision --grant with a non-admin: refused before anything is written
    let err = refused_line(
        &format!(
            "provision --device-key new.key --generate --genesis genesis.block --gateway-key gateway.key --out new.bin --grant --admin dev0.key --api {api}"
        ),
        dir,
    );
    assert!(err.contains("lacks the admin permission"), "{err}");
    assert!(!dir.join("new.key").exists() && !dir.join("new.bin").exists());

    // a grant that goes through but an assignment the gateway refuses (the
    // "patient" is a device): the page is written, the error says what is left
    let err = refused_line(
        &format!(
            "provision --device-key new.key --generate --genesis genesis.block --gateway-key gateway.key --out new.bin --grant --admin admin.key --patient dev0.key --api {api}"
        ),
        dir,
    );
    assert!(err.contains("wrong_role"), "{err}");
    assert!(err.contains("the key page was written"), "{err}");
    assert!(err.contains("sensorchain tx assign"), "{err}");
    let page = KeyPage::decode(&std::fs::read(dir.join("new.bin")).unwrap()).unwrap();
    let new_device = read_keypair(&dir.join("new.key")).unwrap();
    assert_eq!(page.seed, new_device.seed());
    let id = get(&format!("{api}/identities/{}", new_device.public()));
    assert_eq!(id["role"], "device");
    assert_eq!(id["patient"], Value::Null);

    // an unregistered signer is caught before anything is signed
    let err = refused_line(
        &format!("tx role dev0.key doctor --key {stranger_file} --api {api}"),
        dir,
    );
    assert!(err.contains("is not registered"), "{err}");

    // a consent by someone who is not a patient
    let err = refused_line(
        &format!("tx consent {stranger_file} --key admin.key --api {api}"),
        dir,
    );
    assert!(err.contains("refused the consent"), "{err}");

    // the wrong chain, before anything is written
    let other_chain = "ab".repeat(32);
    let err = refused_line(
        &format!(
            "provision --device-key dev0.key --chain-id {other_chain} --gateway-key gateway.key --out x.bin --grant --admin admin.key --api {api}"
        ),
        dir,
    );
    assert!(err.contains("serves chain"), "{err}");
    assert!(!dir.join("x.bin").exists());

    // no gateway there
    let nowhere = format!("127.0.0.1:{}", common::free_port());
    let err = refused_line(
        &format!("tx grant {stranger_file} connect --key admin.key --api {nowhere}"),
        dir,
    );
    assert!(err.contains("cannot reach the gateway API"), "{err}");

    // hex and uf2 need an address; an existing page is not overwritten
    let err = refused_line(
        "provision --device-key dev0.key --genesis genesis.block --gateway-key gateway.key --format hex --out d.hex",
        dir,
    );
    assert!(err.contains("needs --base-address"), "{err}");
    let err = refused_line(
        "provision --device-key dev0.key --genesis genesis.block --gateway-key gateway.key --out new.bin",
        dir,
    );
    assert!(err.contains("exists"), "{err}");
}
