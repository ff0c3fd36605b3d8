//! Operator-facing failures of `sensorchain run` and `sensorchain
//! sensor-sim` (issue 11, findings 6, 7, 9, 13, 14), on real processes:
//! bad configuration values refused before anything is created, `run
//! --check`, a gateway key that is not a validator, data at rest private
//! under any umask, key files open to others refused, log filters and
//! formats, refusals logged, and the simulator's exit code and counts.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Gateway, Net, bin};
use sensorchain_core::identity::Keypair;
use sensorchain_core::link::{GatewayMsg, RejectReason};
use sensorchain_core::reading::Vital;
use sensorchain_gateway::keys::write_keypair;
use sensorchain_gateway::net::client::Client;

/// Generous bound on a command that should end by itself.
const BOUND: Duration = Duration::from_secs(60);

/// What a finished (or killed) command left.
struct Out {
    /// Exit code; `None` if it was still running after [`BOUND`] (killed).
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` to its end (killed after [`BOUND`]), its output in files so
/// that nothing blocks on a full pipe.
fn run_bounded(mut cmd: Command, dir: &Path) -> Out {
    let (o, e) = (dir.join("cmd.out"), dir.join("cmd.err"));
    cmd.stdout(std::fs::File::create(&o).unwrap())
        .stderr(std::fs::File::create(&e).unwrap())
        .stdin(Stdio::null());
    let mut child = cmd.spawn().expect("spawn sensorchain");
    let code = match common::wait_exit(&mut child, BOUND) {
        Some(s) => s.code(),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            None
        }
    };
    Out {
        code,
        stdout: std::fs::read_to_string(&o).unwrap_or_default(),
        stderr: std::fs::read_to_string(&e).unwrap_or_default(),
    }
}

fn sensorchain(args: &[&str], dir: &Path) -> Out {
    let mut c = Command::new(bin());
    c.args(args).current_dir(dir).env_remove("RUST_LOG");
    run_bounded(c, dir)
}

/// `sensorchain run --config` (plus `extra` arguments) on `net`.
fn run_gateway(net: &Net, extra: &[&str]) -> Out {
    let mut args = vec!["run", "--config", net.config.to_str().unwrap()];
    args.extend_from_slice(extra);
    sensorchain(&args, net.dir.path())
}

/// The config file with `key = old` in section `[section]` replaced by
/// `line` (the file is `GatewayConfig::to_toml`'s).
fn set_line(net: &Net, section: &str, key: &str, line: &str) {
    let text = std::fs::read_to_string(&net.config).unwrap();
    let mut out = String::new();
    let mut in_section = section.is_empty();
    let mut done = false;
    for l in text.lines() {
        if l.starts_with('[') {
            if in_section && !done {
                out.push_str(line);
                out.push('\n');
                done = true;
            }
            in_section = l.trim() == format!("[{section}]");
        }
        if in_section && !done && l.split('=').next().map(str::trim) == Some(key) {
            out.push_str(line);
            out.push('\n');
            done = true;
            continue;
        }
        out.push_str(l);
        out.push('\n');
    }
    if !done {
        if !in_section {
            out.push_str(&format!("[{section}]\n"));
        }
        out.push_str(line);
        out.push('\n');
    }
    std::fs::write(&net.config, out).unwrap();
}

/// A gateway process with its stderr in a file.
struct Logged {
    gw: Gateway,
    stderr: PathBuf,
}

impl Logged {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

/// Starts `sensorchain [global] run --config` through `sh -c 'umask U;
/// exec …'`, with `env`, stderr to a file, and waits until the sensor port
/// accepts.
fn start_logged(net: &Net, global: &[&str], env: &[(&str, &str)], umask: &str) -> Logged {
    let stderr = net
        .dir
        .path()
        .join(format!("gateway-{}.err", common::free_port()));
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!("umask {umask}; exec \"$0\" \"$@\""))
        .arg(bin())
        .args(global)
        .args(["run", "--config"])
        .arg(&net.config)
        .env_remove("RUST_LOG")
        .env_remove("SENSORCHAIN_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap());
    for (k, v) in env {
        c.env(k, v);
    }
    let child = c.spawn().expect("spawn sensorchain run");
    let mut gw = Gateway { child };
    let t = Instant::now();
    while std::net::TcpStream::connect_timeout(&net.tcp, Duration::from_millis(100)).is_err() {
        if let Ok(Some(status)) = gw.child.try_wait() {
            panic!(
                "gateway exited early: {status}\n{}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
        }
        assert!(t.elapsed() < BOUND, "gateway did not start listening");
        std::thread::sleep(Duration::from_millis(20));
    }
    Logged { gw, stderr }
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
fn chmod(p: &Path, m: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

fn get_json(url: &str) -> serde_json::Value {
    let mut r = ureq::get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    r.body_mut().read_json().unwrap()
}

/// Finding 9: each out-of-range or malformed value is refused with the
/// file, the key and the value named, and the data directory is not
/// created.
#[test]
fn bad_config_values_are_refused_before_anything_is_created() {
    let cases: &[(&str, &str, &str, &str)] = &[
        // (section, key, line, what the message must name besides the file)
        (
            "limits",
            "handshake_timeout_ms",
            "handshake_timeout_ms = 9223372036854775807",
            "limits.handshake_timeout_ms = 9223372036854775807",
        ),
        (
            "limits",
            "handshake_timeout_ms",
            "handshake_timeout_ms = 0",
            "limits.handshake_timeout_ms = 0",
        ),
        (
            "limits",
            "idle_timeout_ms",
            "idle_timeout_ms = 0",
            "limits.idle_timeout_ms = 0",
        ),
        (
            "limits",
            "idle_timeout_ms",
            "idle_timeout_ms = 1000",
            "limits.idle_timeout_ms = 1000",
        ),
        (
            "limits",
            "max_pending",
            "max_pending = 0",
            "limits.max_pending = 0",
        ),
        (
            "limits",
            "max_half_open",
            "max_half_open = 100000",
            "limits.max_half_open = 100000",
        ),
        (
            "batch",
            "max_txs",
            "max_txs = 100000000",
            "batch.max_txs = 100000000",
        ),
        // within the static range but above the chain's max_block_txs
        (
            "batch",
            "max_txs",
            "max_txs = 20000",
            "batch.max_txs = 20000",
        ),
        (
            "batch",
            "linger_ms",
            "linger_ms = 50",
            "batch.linger_ms = 50",
        ),
        (
            "listen",
            "serial",
            "serial = [{ path = \"/dev/null\", baud = 0 }]",
            "listen.serial[0].baud = 0",
        ),
        (
            "listen",
            "api",
            "api = \"localhost-7480\"",
            "listen.api = \"localhost-7480\"",
        ),
        (
            "listen",
            "tcp",
            "tcp = \"127.0.0.1:99999\"",
            "listen.tcp = \"127.0.0.1:99999\"",
        ),
        // the toml layer's own refusal still names the key and the value
        (
            "limits",
            "handshake_timeout_ms",
            "handshake_timeout_ms = 18446744073709551615",
            "18446744073709551615",
        ),
    ];
    for (section, key, line, named) in cases {
        let net = Net::new(0);
        set_line(&net, section, key, line);
        let out = run_gateway(&net, &[]);
        let cfg = net.config.display().to_string();
        assert!(
            out.code.is_some_and(|c| c != 0),
            "{line}: must be refused, got {:?}\n{}",
            out.code,
            out.stderr
        );
        assert!(
            out.stderr.contains(&cfg) && out.stderr.contains(named),
            "{line}: the message names the file and {named}:\n{}",
            out.stderr
        );
        assert!(
            !net.data().exists(),
            "{line}: the data directory must not be created"
        );
        // --check says the same and exits 1
        let chk = run_gateway(&net, &["--check"]);
        assert_eq!(chk.code, Some(1), "{line}: --check\n{}", chk.stderr);
        assert!(chk.stderr.contains(named), "{}", chk.stderr);
        assert!(!net.data().exists());
    }
}

/// Finding 9: `run --check` prints ok for a good configuration (fresh and
/// with a stored chain), lists every problem of a bad one, and creates
/// nothing.
#[test]
fn run_check_validates_without_starting() {
    let net = Net::new(1);
    let out = run_gateway(&net, &["--check"]);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.starts_with("ok"), "{}", out.stdout);
    assert!(out.stdout.contains(&net.gateway.public().to_string()));
    assert!(!net.data().exists(), "--check creates nothing");

    // with a stored chain (gateway stopped): the replayed state is checked
    let mut gw = net.start();
    assert!(gw.terminate(BOUND));
    let out = run_gateway(&net, &["--check"]);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("stored chain at height 0"),
        "{}",
        out.stdout
    );

    // several problems at once: all listed
    set_line(&net, "limits", "max_pending", "max_pending = 0");
    set_line(&net, "batch", "timeout_ms", "timeout_ms = 0");
    let out = run_gateway(&net, &["--check"]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("2 invalid settings")
            && out.stderr.contains("limits.max_pending = 0")
            && out.stderr.contains("batch.timeout_ms = 0"),
        "{}",
        out.stderr
    );
    // a missing genesis file and a bad key file are problems too
    let net = Net::new(0);
    std::fs::remove_file(net.dir.path().join("genesis.block")).unwrap();
    std::fs::write(net.dir.path().join("gateway.key"), "not a key\n").unwrap();
    let out = run_gateway(&net, &["--check"]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("genesis_file") && out.stderr.contains("key_file"),
        "{}",
        out.stderr
    );
    assert!(!net.data().exists());
}

/// Finding 6: a gateway whose key is not a validator refuses to start (a
/// fresh store: before anything is created; a stored chain: after the
/// replay), with the key, the permission and how to grant it.
#[test]
fn non_validator_gateway_key_refuses_to_start() {
    let net = Net::new(1);
    let device = net.devices[0].clone();
    let key_file = net.dir.path().join("gateway.key");
    write_keypair(&key_file, &device, true).unwrap();
    let pk = device.public().to_string();
    for extra in [&[][..], &["--check"][..]] {
        let out = run_gateway(&net, extra);
        assert!(
            out.code.is_some_and(|c| c != 0),
            "{extra:?}: must refuse, got {:?}\n{}",
            out.code,
            out.stderr
        );
        for needle in [
            pk.as_str(),
            "may not propose",
            "validate permission",
            "sensorchain tx grant",
        ] {
            assert!(out.stderr.contains(needle), "{needle}:\n{}", out.stderr);
        }
        assert!(
            out.stderr.contains(&net.gateway.public().to_string()),
            "names the chain's validators:\n{}",
            out.stderr
        );
        assert!(!net.data().exists(), "nothing created");
    }
    // a stored chain, then the key file swapped for a device's
    write_keypair(&key_file, &net.gateway, true).unwrap();
    let mut gw = net.start();
    assert!(gw.terminate(BOUND));
    write_keypair(&key_file, &device, true).unwrap();
    let out = run_gateway(&net, &[]);
    assert!(out.code.is_some_and(|c| c != 0), "{}", out.stderr);
    assert!(
        out.stderr.contains("may not propose") && out.stderr.contains(&pk),
        "{}",
        out.stderr
    );
}

/// Finding 6: when a committed block takes `validate` from the running
/// gateway, it stops with the reason instead of refusing every later
/// reading as `storage_failed`.
#[test]
fn revoking_the_gateways_validate_stops_it_with_the_reason() {
    let net = Net::new(0);
    let dir = net.dir.path();
    write_keypair(&dir.join("admin.key"), &net.admin, false).unwrap();
    let mut g = start_logged(&net, &[], &[("SENSORCHAIN_LOG", "warn")], "077");
    let api = format!("http://{}", net.api);
    let out = sensorchain(
        &[
            "tx",
            "revoke",
            &net.gateway.public().to_string(),
            "validate",
            "--key",
            "admin.key",
            "--api",
            &api,
        ],
        dir,
    );
    // (the CLI's own follow-up queries may or may not be answered before
    // the gateway stops; the revocation itself is committed either way)
    eprintln!("tx revoke: {:?}\n{}{}", out.code, out.stdout, out.stderr);
    let status = common::wait_exit(&mut g.gw.child, BOUND).expect("the gateway must stop");
    assert!(!status.success());
    let log = g.log();
    assert!(
        log.contains("took the validate permission") && log.contains("sensorchain tx grant"),
        "{log}"
    );
    assert!(!log.contains("storage_failed"), "{log}");
}

/// Finding 7: under `umask 000` the data directory is 0700 and the store
/// 0600; a looser existing directory and store are tightened, with a
/// warning.
#[cfg(unix)]
#[test]
fn data_at_rest_is_private_under_umask_000() {
    let net = Net::new(0);
    let mut g = start_logged(&net, &[], &[("SENSORCHAIN_LOG", "warn")], "000");
    let store = net.data().join("chain.redb");
    assert_eq!(mode(&net.data()), 0o700, "data directory");
    assert_eq!(mode(&store), 0o600, "store file");
    assert!(g.gw.terminate(BOUND));
    chmod(&net.data(), 0o755);
    chmod(&store, 0o644);
    let mut g = start_logged(&net, &[], &[("SENSORCHAIN_LOG", "warn")], "000");
    assert_eq!(mode(&net.data()), 0o700);
    assert_eq!(mode(&store), 0o600);
    let log = g.log();
    assert!(
        log.contains("had mode 0755") && log.contains("had mode 0644"),
        "{log}"
    );
    assert!(g.gw.terminate(BOUND));
}

/// Finding 7: a key file readable by group or others is refused, like ssh
/// does, with the chmod that fixes it; nothing is created.
#[cfg(unix)]
#[test]
fn key_file_open_to_others_is_refused() {
    let net = Net::new(0);
    let key = net.dir.path().join("gateway.key");
    for m in [0o640, 0o644, 0o606] {
        chmod(&key, m);
        let out = run_gateway(&net, &[]);
        assert!(out.code.is_some_and(|c| c != 0), "{m:o}: {}", out.stderr);
        assert!(
            out.stderr.contains(&format!("{m:04o}"))
                && out.stderr.contains("too open")
                && out.stderr.contains(&format!("chmod 600 {}", key.display())),
            "{}",
            out.stderr
        );
        assert!(!net.data().exists());
    }
    chmod(&key, 0o600);
    let out = run_gateway(&net, &["--check"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
}

/// Finding 14: an invalid log filter is an error with the parser's message
/// (from `--log`, SENSORCHAIN_LOG or RUST_LOG).
#[test]
fn invalid_log_filter_is_an_error() {
    let net = Net::new(0);
    let cfg = net.config.to_str().unwrap();
    let out = sensorchain(
        &["--log", "nonsense[", "run", "--check", "--config", cfg],
        net.dir.path(),
    );
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("invalid log filter") && out.stderr.contains("nonsense["),
        "{}",
        out.stderr
    );
    for var in ["SENSORCHAIN_LOG", "RUST_LOG"] {
        let mut c = Command::new(bin());
        c.args(["run", "--check", "--config", cfg])
            .env_remove("RUST_LOG")
            .env_remove("SENSORCHAIN_LOG")
            .env(var, "x=nope[");
        let out = run_bounded(c, net.dir.path());
        assert_eq!(out.code, Some(2), "{var}: {}", out.stderr);
        assert!(out.stderr.contains("invalid log filter"), "{}", out.stderr);
        assert!(out.stderr.contains(var), "names its source: {}", out.stderr);
    }
}

/// Submits reading `seq` twice on one link: the second is a replay.
fn replay_a_reading(net: &Net) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let d = net.devices[0].clone();
    rt.block_on(async {
        let mut c = Client::connect(net.tcp, &net.chain, &d, &[net.gateway.public()])
            .await
            .expect("handshake");
        let tx = sensorchain_gateway::sim::reading_tx(
            &d,
            &net.chain,
            5,
            sensorchain_gateway::node::now_ms(),
            3,
            Vital::HeartRate { bpm: 70 },
        );
        assert!(matches!(
            c.submit(&tx).await.unwrap(),
            GatewayMsg::Ack { .. }
        ));
        assert!(matches!(
            c.submit(&tx).await.unwrap(),
            GatewayMsg::Reject {
                reason: RejectReason::Replay,
                ..
            }
        ));
    });
}

/// Waits until `f(log)` holds (the log is written asynchronously).
fn wait_log(g: &Logged, f: impl Fn(&str) -> bool) -> String {
    let t = Instant::now();
    loop {
        let log = g.log();
        if f(&log) || t.elapsed() > BOUND {
            return log;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Finding 14: a refused reading is logged with its reason and identity
/// (default level), and a log that is not a terminal has no ANSI escape.
#[test]
fn refusal_logged_with_reason_and_identity_without_ansi() {
    let net = Net::new(1);
    let g = start_logged(&net, &[], &[], "077");
    replay_a_reading(&net);
    let pk = net.devices[0].public().to_string();
    let log = wait_log(&g, |l| l.contains("submission refused"));
    let line = log
        .lines()
        .find(|l| l.contains("submission refused"))
        .unwrap_or_else(|| panic!("no refusal logged:\n{log}"));
    assert!(line.contains("replay") && line.contains(&pk), "{line}");
    assert!(
        !log.contains('\u{1b}'),
        "no ANSI escape in a log file:\n{log:?}"
    );
}

/// Finding 14: `--log-format json` writes one JSON object per line; the
/// refusal carries its reason and signer as fields.
#[test]
fn json_log_format_lines_parse() {
    let net = Net::new(1);
    let mut g = start_logged(&net, &["--log-format", "json"], &[], "077");
    replay_a_reading(&net);
    let pk = net.devices[0].public().to_string();
    wait_log(&g, |l| l.contains("submission refused"));
    assert!(g.gw.terminate(BOUND));
    let log = g.log();
    let mut refusal = None;
    let mut n = 0;
    for l in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        n += 1;
        if v["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("submission refused"))
        {
            refusal = Some(v);
        }
    }
    assert!(n >= 2, "{log}");
    let v = refusal.unwrap_or_else(|| panic!("no refusal logged:\n{log}"));
    assert_eq!(v["fields"]["reason"], "replay", "{v}");
    assert_eq!(v["fields"]["signer"], pk.as_str(), "{v}");
}

fn write_key(net: &Net, name: &str, kp: &Keypair) -> String {
    let p = net.dir.path().join(name);
    write_keypair(&p, kp, true).unwrap();
    p.to_str().unwrap().to_string()
}

/// `sensorchain sensor-sim` in `net`'s directory against its gateway, at
/// `rate` for `seconds`, with the sensor key files `keys`.
fn sim_command(net: &Net, keys: &[&str], seconds: u64, rate: &str) -> Command {
    let mut c = Command::new(bin());
    c.args(["sensor-sim", "--gateway", &net.tcp.to_string()])
        .args(["--gateway-key", &net.gateway.public().to_string()])
        .arg("--genesis")
        .arg(net.dir.path().join("genesis.block"))
        .args(["--rate", rate, "--seconds", &seconds.to_string()])
        .current_dir(net.dir.path());
    for k in keys {
        c.args(["--sensor-key", k]);
    }
    c
}

fn sim(net: &Net, keys: &[&str], seconds: u64, rate: &str) -> Out {
    let mut c = sim_command(net, keys, seconds, rate);
    c.env_remove("RUST_LOG");
    run_bounded(c, net.dir.path())
}

/// Finding 13: the same identity twice is refused (a file given twice, or
/// two files of one key), before anything is sent.
#[test]
fn sensor_sim_refuses_duplicate_sensor_keys() {
    let net = Net::new(1);
    let a = write_key(&net, "a.key", &net.devices[0]);
    let b = write_key(&net, "b.key", &net.devices[0]);
    for keys in [[a.as_str(), a.as_str()], [a.as_str(), b.as_str()]] {
        let out = sim(&net, &keys, 1, "1");
        assert_eq!(out.code, Some(2), "{}\n{}", out.stdout, out.stderr);
        assert!(out.stderr.contains("same identity"), "{}", out.stderr);
    }
}

/// Finding 13: a sensor refused (not on the chain) or revoked mid-run makes
/// the exit code non-zero even when the others' readings were acknowledged.
#[test]
fn sensor_sim_exits_non_zero_when_refused_or_revoked() {
    let net = Net::new(2);
    let _gw = net.start();
    let ok = write_key(&net, "dev0.key", &net.devices[0]);
    let stranger = write_key(&net, "stranger.key", &Keypair::from_seed([99; 32]));
    let out = sim(&net, &[&ok, &stranger], 5, "10");
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("sensors stopped 1"), "{}", out.stdout);
    assert!(
        !out.stdout.contains("final: sent 0"),
        "the other sensor ran"
    );

    // revoked while streaming (once 3 of its own readings are committed: the
    // first run's readings count in the head's total, and a revocation
    // before the sensor connected would be refused as "not permitted")
    let dev1 = write_key(&net, "dev1.key", &net.devices[1]);
    write_key(&net, "admin.key", &net.admin);
    let api = format!("http://{}", net.api);
    let readings = || {
        get_json(&format!("{api}/chain/head"))["reading_count_total"]
            .as_u64()
            .unwrap_or(0)
    };
    let before = readings();
    let mut c = sim_command(&net, &[&dev1], 120, "10");
    c.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    let t = Instant::now();
    while readings() < before + 3 {
        assert!(t.elapsed() < BOUND, "readings must arrive");
        std::thread::sleep(Duration::from_millis(50));
    }
    let rev = sensorchain(
        &[
            "tx",
            "revoke",
            &net.devices[1].public().to_string(),
            "connect,write",
            "--key",
            "admin.key",
            "--api",
            &api,
        ],
        net.dir.path(),
    );
    assert_eq!(rev.code, Some(0), "{}", rev.stderr);
    let Some(status) = common::wait_exit(&mut child, BOUND) else {
        let _ = child.kill();
        panic!("sensor-sim must stop once its only sensor is revoked");
    };
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("revoked"), "{stdout}");
}

/// Finding 13: the final line counts every acknowledged reading: with a
/// gateway that lingers 1.5 s per block, the readings of the last 1.5 s are
/// still in flight at the stop, and are waited for.
#[test]
fn sensor_sim_final_counts_match_the_chain() {
    let net = Net::new(1);
    set_line(&net, "batch", "timeout_ms", "timeout_ms = 2000");
    set_line(&net, "batch", "linger_ms", "linger_ms = 1500");
    let _gw = net.start();
    let key = write_key(&net, "dev0.key", &net.devices[0]);
    let out = sim(&net, &[&key], 3, "20");
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let last = out
        .stdout
        .lines()
        .find(|l| l.starts_with("final:"))
        .unwrap_or_else(|| panic!("no final line:\n{}", out.stdout));
    let num = |what: &str| -> u64 {
        let w: Vec<&str> = last.split_whitespace().collect();
        let i = w.iter().position(|x| *x == what).unwrap();
        w[i + 1].parse().unwrap()
    };
    let (sent, acked) = (num("sent"), num("acked"));
    assert!(sent > 0, "{last}");
    assert_eq!(sent, acked, "{last}");
    let head = get_json(&format!("http://{}/chain/head", net.api));
    assert_eq!(head["reading_count_total"].as_u64(), Some(acked), "{last}");
}
