//! `sensorchain init` as a process: a fresh directory (its key 0600, a
//! commented gateway.toml that the gateway's own config code loads, and
//! what to do next), then the admin's genesis naming the printed key, after
//! which `run --check` accepts it and `run` serves; an existing directory
//! refused with nothing written; a joined chain (`--key`, `--genesis`); a
//! genesis that does not name the key, and one that is not a block.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::run;
use sensorchain_gateway::config::GatewayConfig;
use sensorchain_gateway::keys::read_keypair;

fn ok(args: &[&str], dir: &Path) -> String {
    let (code, out, err) = run(args, dir);
    assert_eq!(
        code, 0,
        "sensorchain {args:?}\nstdout: {out}\nstderr: {err}"
    );
    out
}

/// The `public key  HEX` line of init's or keygen's output.
fn public_key(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("public key"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| panic!("no public key in {out}"))
}

/// A genesis block (admin `admin.key` in `dir`) naming `gateway` (a public
/// key or key file) as a gateway, written to `dir/out`.
fn genesis(dir: &Path, gateway: &str, out: &str) {
    if !dir.join("admin.key").exists() {
        ok(&["keygen", "--out", "admin.key"], dir);
    }
    ok(
        &[
            "genesis",
            "--name",
            "ward",
            "--creator",
            "admin.key",
            "--member",
            &format!("gateway:{gateway}"),
            "--out",
            out,
        ],
        dir,
    );
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn fresh_directory_then_genesis_passes_check_and_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (tcp, api) = (common::free_port(), common::free_port());
    let out = ok(
        &[
            "init",
            "--dir",
            "gw",
            "--tcp",
            &format!("127.0.0.1:{tcp}"),
            "--api",
            &format!("127.0.0.1:{api}"),
        ],
        t,
    );
    let gw = t.join("gw");
    let pk = public_key(&out);
    // the key: 0600, the printed identity
    assert_eq!(mode(&gw.join("gateway.key")), 0o600);
    let kp = read_keypair(&gw.join("gateway.key")).unwrap();
    assert_eq!(kp.public().to_string(), pk);
    // what to do next: a genesis naming this key, copied to genesis.block
    assert!(out.contains(&format!("--member gateway:{pk}")), "{out}");
    assert!(out.contains("genesis.block"), "{out}");
    assert!(out.contains("run --check --config"), "{out}");
    assert!(!gw.join("genesis.block").exists());

    // the same config code as `run` reads it, with init's values and the
    // defaults for everything commented
    let cfg = GatewayConfig::load(&gw.join("gateway.toml")).unwrap();
    assert_eq!(cfg.data_dir, gw.join("data"));
    assert_eq!(cfg.key_file, gw.join("gateway.key"));
    assert_eq!(cfg.genesis_file, gw.join("genesis.block"));
    assert_eq!(cfg.listen.tcp, Some(format!("127.0.0.1:{tcp}")));
    assert_eq!(cfg.listen.api, Some(format!("127.0.0.1:{api}")));
    let d = GatewayConfig::new("d".into(), "k".into(), "g".into());
    assert_eq!(cfg.batch.max_txs, d.batch.max_txs);
    assert_eq!(cfg.limits.max_pending, d.limits.max_pending);
    assert_eq!(cfg.api.max_in_flight, d.api.max_in_flight);
    let text = std::fs::read_to_string(gw.join("gateway.toml")).unwrap();
    assert!(text.lines().filter(|l| l.starts_with('#')).count() > 40);

    // before the genesis is there, the check says what is missing
    let (code, _, err) = run(&["run", "--check", "--config", "gw/gateway.toml"], t);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("genesis_file"), "{err}");

    // the admin makes the genesis naming the printed key
    genesis(t, &pk, "gw/genesis.block");
    let out = ok(&["run", "--check", "--config", "gw/gateway.toml"], t);
    assert!(out.starts_with("ok"), "{out}");
    assert!(out.contains(&pk), "{out}");
    assert!(!gw.join("data").exists(), "--check creates nothing");

    // and the gateway runs on it: sensor port and API answer
    let mut child = Command::new(common::bin())
        .args(["run", "--config", "gw/gateway.toml"])
        .current_dir(t)
        .env("SENSORCHAIN_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{tcp}").parse().unwrap();
    let started = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "gateway exited early");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "gateway did not start listening"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut head = ureq::get(&format!("http://127.0.0.1:{api}/chain/head"))
        .call()
        .unwrap();
    let head: serde_json::Value = head.body_mut().read_json().unwrap();
    assert_eq!(head["height"], 0, "{head}");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(mode(&gw.join("data")), 0o700);
}

#[test]
fn existing_directory_is_refused_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    ok(&["init", "--dir", "gw"], t);
    let gw = t.join("gw");
    let key = std::fs::read(gw.join("gateway.key")).unwrap();
    let toml = std::fs::read(gw.join("gateway.toml")).unwrap();
    let (code, out, err) = run(&["init", "--dir", "gw"], t);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("gateway.toml exists"), "{err}");
    assert_eq!(std::fs::read(gw.join("gateway.key")).unwrap(), key);
    assert_eq!(std::fs::read(gw.join("gateway.toml")).unwrap(), toml);

    // any one file of the layout is enough to refuse, before anything is
    // written
    for name in ["gateway.key", "genesis.block"] {
        let d = t.join(format!("only-{name}"));
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join(name), "x").unwrap();
        let (code, _, err) = run(&["init", "--dir", d.to_str().unwrap()], t);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(&format!("{name} exists")), "{err}");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1, "{name}");
    }
    // a store left in the data directory: refused too
    let d = t.join("old");
    std::fs::create_dir_all(d.join("data")).unwrap();
    std::fs::write(d.join("data").join("chain.redb"), "x").unwrap();
    let (code, _, err) = run(&["init", "--dir", "old"], t);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("holds a store"), "{err}");
    assert!(!d.join("gateway.toml").exists());
}

#[test]
fn joins_a_chain_with_key_and_genesis() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // the admin made this gateway's key and the chain's genesis beforehand
    ok(&["keygen", "--out", "pi2.key"], t);
    genesis(t, "pi2.key", "chain.block");
    let out = ok(
        &[
            "init",
            "--dir",
            "pi2",
            "--key",
            "pi2.key",
            "--genesis",
            "chain.block",
        ],
        t,
    );
    assert!(out.contains("is a validator"), "{out}");
    let pi2 = t.join("pi2");
    assert_eq!(
        std::fs::read(pi2.join("genesis.block")).unwrap(),
        std::fs::read(t.join("chain.block")).unwrap()
    );
    assert_eq!(mode(&pi2.join("gateway.key")), 0o600);
    assert_eq!(
        read_keypair(&pi2.join("gateway.key")).unwrap().public(),
        read_keypair(&t.join("pi2.key")).unwrap().public()
    );
    let out = ok(&["run", "--check", "--config", "pi2/gateway.toml"], t);
    assert!(out.starts_with("ok"), "{out}");

    // a genesis that does not name the new key: written, with the advice;
    // the check refuses to start a store with it
    let out = ok(&["init", "--dir", "pi3", "--genesis", "chain.block"], t);
    assert!(out.contains("not a validator"), "{out}");
    let (code, _, err) = run(&["run", "--check", "--config", "pi3/gateway.toml"], t);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("key_file"), "{err}");
}

#[test]
fn bad_genesis_or_key_is_refused_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    std::fs::write(t.join("junk.block"), b"not a block").unwrap();
    let (code, _, err) = run(&["init", "--dir", "gw", "--genesis", "junk.block"], t);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("junk.block: not a genesis block"), "{err}");
    assert!(!t.join("gw").exists(), "nothing written");

    ok(&["keygen", "--out", "open.key"], t);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(t.join("open.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, err) = run(&["init", "--dir", "gw", "--key", "open.key"], t);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("chmod 600"), "{err}");
    assert!(!t.join("gw").exists(), "nothing written");

    let (code, _, err) = run(&["init", "--dir", "gw", "--api", "0.0.0.0:7480"], t);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("listen.api"), "{err}");
    assert!(!t.join("gw").exists(), "nothing written");
}
