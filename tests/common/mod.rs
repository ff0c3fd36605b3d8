//! Shared helpers of the process-level integration tests: a network on disk
//! (keys, genesis, config) and a `sensorchain run` child process.

#![allow(dead_code)]

pub mod link;
pub mod stream;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use sensorchain_core::block::Block;
use sensorchain_core::hash::ChainId;
use sensorchain_core::identity::Keypair;
use sensorchain_gateway::config::GatewayConfig;
use sensorchain_gateway::keys::write_keypair;
use sensorchain_gateway::testkit;

/// The `sensorchain` binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sensorchain"))
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A network on disk.
pub struct Net {
    pub dir: tempfile::TempDir,
    pub admin: Keypair,
    pub gateway: Keypair,
    pub devices: Vec<Keypair>,
    pub genesis: Block,
    pub chain: ChainId,
    pub tcp: SocketAddr,
    pub api: SocketAddr,
    pub config: PathBuf,
}

impl Net {
    /// Keys, a genesis with `n` devices, and a gateway.toml with free ports.
    pub fn new(n: usize) -> Net {
        let dir = tempfile::tempdir().unwrap();
        let (admin, gateway) = (testkit::admin(), testkit::gateway());
        let devices: Vec<Keypair> = (0..n)
            .map(|i| Keypair::from_seed([10 + i as u8; 32]))
            .collect();
        let others = testkit::device_members(&devices);
        let genesis = testkit::genesis_block("it", &admin, &gateway, &others);
        std::fs::write(dir.path().join("genesis.block"), genesis.to_vec()).unwrap();
        write_keypair(&dir.path().join("gateway.key"), &gateway, false).unwrap();
        let tcp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut cfg =
            GatewayConfig::new("data".into(), "gateway.key".into(), "genesis.block".into());
        cfg.listen.tcp = Some(tcp.to_string());
        cfg.listen.api = Some(api.to_string());
        cfg.batch.timeout_ms = 5;
        let config = dir.path().join("gateway.toml");
        std::fs::write(&config, cfg.to_toml()).unwrap();
        Net {
            chain: genesis.header.chain_id,
            dir,
            admin,
            gateway,
            devices,
            genesis,
            tcp,
            api,
            config,
        }
    }

    /// The data directory.
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// [`Net::start`], with the admin's key written to `admin.key` in the
    /// directory (for `sensorchain tx`): the gateway and its API's URL.
    pub fn start_for_admin(&self) -> (Gateway, String) {
        let g = self.start();
        write_keypair(&self.dir.path().join("admin.key"), &self.admin, false).unwrap();
        (g, format!("http://{}", self.api))
    }

    /// Starts `sensorchain run` and waits until its sensor port accepts.
    pub fn start(&self) -> Gateway {
        spawn_gateway(&self.config, self.tcp, "gateway")
    }
}

/// `sensorchain run --config CONFIG`, logging at `warn`.
pub fn run_command(config: &Path) -> Command {
    let mut c = Command::new(bin());
    c.args(["run", "--config"])
        .arg(config)
        .env("SENSORCHAIN_LOG", "warn");
    c
}

/// Starts `sensorchain run --config CONFIG` (stdout discarded) and waits
/// until `addr` accepts; `what` names the gateway if it does not.
pub fn spawn_gateway(config: &Path, addr: SocketAddr, what: &str) -> Gateway {
    let child = run_command(config)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn sensorchain run");
    let mut g = Gateway { child };
    let t = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
        if let Ok(Some(status)) = g.child.try_wait() {
            panic!("{what} exited early: {status}");
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{what} did not start listening"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    g
}

/// Waits up to `bound` for `child` to exit: its status, or `None` if it is
/// still running then.
pub fn wait_exit(child: &mut Child, bound: Duration) -> Option<ExitStatus> {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if t.elapsed() > bound {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running gateway process (killed on drop).
pub struct Gateway {
    pub child: Child,
}

impl Gateway {
    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM (graceful), and wait up to `d`.
    pub fn terminate(&mut self, d: Duration) -> bool {
        unsafe_free_sigterm(self.child.id());
        wait_exit(&mut self.child, d).is_some()
    }
}

fn unsafe_free_sigterm(pid: u32) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `sensorchain ARGS` in `dir` (logging at `warn`, no
/// `SENSORCHAIN_API` from the environment): (exit code, stdout, stderr).
pub fn run(args: &[&str], dir: &Path) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(args)
        .current_dir(dir)
        .env("SENSORCHAIN_LOG", "warn")
        .env_remove("SENSORCHAIN_API")
        .output()
        .expect("run sensorchain");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`run`] with the arguments written as one line, split at whitespace
/// (for arguments that are words: no quoting).
pub fn run_line(line: &str, dir: &Path) -> (i32, String, String) {
    let args: Vec<&str> = line.split_whitespace().collect();
    run(&args, dir)
}

/// Runs a `sensorchain` subcommand and returns (exit code, stdout).
pub fn cli(args: &[&str], dir: &Path) -> (i32, String) {
    let (code, out, _) = run(args, dir);
    (code, out)
}

/// `GET base+path` logged in as `key` (the API's reads need a session:
/// docs/API.md, "Authentication"): (status, JSON body or `null`).
pub fn get_as(base: &str, key: &Keypair, path: &str) -> (u16, serde_json::Value) {
    let agent = sensorchain_gateway::login_client::agent(Duration::from_secs(60), None).unwrap();
    let s = sensorchain_gateway::login_client::ApiSession::new(agent, base, key.clone());
    s.get_json(path)
        .unwrap_or_else(|e| panic!("GET {base}{path} as {}: {e:#}", key.public()))
}

/// Registers a patient (seed 200×32) and assigns `device` to it, through
/// `POST /txs` signed by the admin (its sequence numbers 1 to 3: call it
/// before any other admin transaction). The patient may then read the
/// device's readings.
pub fn add_patient(net: &Net, device: &Keypair) -> Keypair {
    use sensorchain_core::permissions::Role;
    use sensorchain_core::tx::{Transaction, TxBody, TxKind};
    let patient = Keypair::from_seed([200; 32]);
    let kinds = [
        TxKind::Grant {
            target: patient.public(),
            permissions: Role::Patient.default_permissions(),
        },
        TxKind::SetRole {
            target: patient.public(),
            role: Role::Patient,
        },
        TxKind::AssignDevice {
            device: device.public(),
            patient: patient.public(),
        },
    ];
    let agent = sensorchain_gateway::login_client::agent(Duration::from_secs(60), None).unwrap();
    for (i, kind) in kinds.into_iter().enumerate() {
        let body = TxBody {
            signer: net.admin.public(),
            sequence: i as u64 + 1,
            timestamp_ms: sensorchain_gateway::node::now_ms(),
            kind,
        };
        let tx = Transaction::sign(body, &net.chain, &net.admin)
            .unwrap()
            .to_vec();
        let r = agent
            .post(format!("http://{}/txs", net.api))
            .content_type("application/octet-stream")
            .send(&tx[..])
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "admin transaction {}", i + 1);
    }
    patient
}

/// A session token of `key` at the API `base`.
pub fn token(base: &str, key: &Keypair) -> String {
    let agent = sensorchain_gateway::login_client::agent(Duration::from_secs(60), None).unwrap();
    sensorchain_gateway::login_client::login(&agent, base, key, None).unwrap()
}
