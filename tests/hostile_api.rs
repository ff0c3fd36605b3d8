//! The HTTP API under hostile load, against a real `sensorchain run`
//! process (issue 11, findings 2 and 8):
//! - a flood of parallel heavy reads while a sensor streams: the gateway's
//!   memory and threads stay bounded, the sensor's ack rate stays within a
//!   fraction of its rate without the flood, SIGTERM still stops it;
//! - thousands of idle connections do not stop a normal request, and a
//!   partial request head is closed after the header timeout;
//! - a non-loopback `listen.api` needs TLS or `listen.allow_plaintext`
//!   (which warns); with TLS a real HTTPS client logs in and reads (issue
//!   14), and a brute-forcer of the login is limited while another address
//!   logs in.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sensorchain_core::identity::Keypair;
use sensorchain_core::link::GatewayMsg;
use sensorchain_core::reading::Vital;
use sensorchain_gateway::config::GatewayConfig;
use sensorchain_gateway::net::client::Client;

/// Rewrites the network's gateway.toml through `f`.
fn configure(net: &common::Net, f: impl FnOnce(&mut GatewayConfig)) {
    let text = std::fs::read_to_string(&net.config).unwrap();
    let mut cfg: GatewayConfig = toml::from_str(&text).unwrap();
    f(&mut cfg);
    std::fs::write(&net.config, cfg.to_toml()).unwrap();
}

/// VmRSS (bytes) and Threads of a process, from /proc/PID/status.
fn rss_threads(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")? * 1024, field("Threads:")?))
}

/// Open file descriptors of a process.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A signed reading of `device` (sequence `seq`).
fn reading(net: &common::Net, device: &Keypair, seq: u64) -> Vec<u8> {
    sensorchain_gateway::sim::reading_tx(
        device,
        &net.chain,
        seq,
        2_000 + seq,
        (seq % 4) as u16,
        Vital::HeartRate {
            bpm: 60 + (seq % 40) as u16,
        },
    )
}

/// Streams readings for `d` and returns acks per second; `next` is the
/// next sequence number.
async fn stream_for(
    net: &common::Net,
    c: &mut Client<tokio::net::TcpStream>,
    device: &Keypair,
    next: &mut u64,
    d: Duration,
) -> f64 {
    let t = Instant::now();
    let mut acks = 0u64;
    while t.elapsed() < d {
        let txs: Vec<Vec<u8>> = (0..20).map(|i| reading(net, device, *next + i)).collect();
        *next += 20;
        for m in c.submit_pipelined(&txs, 8).await.expect("submit") {
            if matches!(m, GatewayMsg::Ack { .. }) {
                acks += 1;
            }
        }
    }
    acks as f64 / t.elapsed().as_secs_f64()
}

/// A plain HTTP/1.1 GET on a new connection; the status, or None.
fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    http_get_as(addr, path, None)
}

/// [`http_get`] with a session token.
fn http_get_as(
    addr: std::net::SocketAddr,
    path: &str,
    token: Option<&str>,
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(30)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.get(9..12)?.parse().ok()?;
    Some((status, text))
}

/// Counts of a flood's answers.
#[derive(Default)]
struct FloodCounts {
    ok: AtomicU64,
    busy: AtomicU64,
    other: AtomicU64,
}

/// `n` clients that each send `GET url` again and again (keep-alive, each
/// answer read to its end, none waiting longer than 5 s for an answer)
/// until stopped.
struct Flood {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Flood {
    fn start(n: usize, url: &str, token: &str, counts: &Arc<FloodCounts>) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let auth = format!("Bearer {token}");
        let threads = (0..n)
            .map(|_| {
                let (stop, counts, url) = (stop.clone(), counts.clone(), url.to_string());
                let auth = auth.clone();
                std::thread::spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .timeout_global(Some(Duration::from_secs(5)))
                        .build()
                        .into();
                    let t = Instant::now();
                    while !stop.load(Ordering::Relaxed) && t.elapsed() < Duration::from_secs(300) {
                        match agent.get(&url).header("Authorization", &auth).call() {
                            Ok(mut r) => {
                                let status = r.status().as_u16();
                                let _ = std::io::copy(
                                    &mut r.body_mut().as_reader(),
                                    &mut std::io::sink(),
                                );
                                match status {
                                    200 => &counts.ok,
                                    503 => &counts.busy,
                                    _ => &counts.other,
                                }
                                .fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                if counts.other.fetch_add(1, Ordering::Relaxed) % 1000 == 0 {
                                    eprintln!("flood client: {e}");
                                }
                                std::thread::sleep(Duration::from_millis(50));
                            }
                        }
                    }
                })
            })
            .collect();
        Flood { stop, threads }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Finding 2: 300 parallel `GET /readings?limit=10000` on a chain of 4,000
/// readings while a sensor streams. The sensor's rate is measured in
/// quiet and flooded windows in turn (the machine is shared: the mean of
/// the quiet windows is the reference).
#[test]
fn read_flood_keeps_memory_threads_ingest_and_shutdown_bounded() {
    /// The bound on the gateway's resident memory during the flood.
    const RSS_BOUND: u64 = 1 << 30;
    /// The bound on its threads during the flood.
    const THREAD_BOUND: u64 = 64;
    /// The sensor's ack rate under the flood, at least this fraction of
    /// its rate without it.
    const ACK_FRACTION: f64 = 0.3;
    const FLOODERS: usize = 300;
    const WINDOW: Duration = Duration::from_secs(5);

    let net = common::Net::new(2);
    let mut gw = net.start();
    let pid = gw.child.id();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (writer, sensor) = (net.devices[0].clone(), net.devices[1].clone());

    // a chain of 4,000 readings
    rt.block_on(async {
        let mut c = Client::connect(net.tcp, &net.chain, &writer, &[net.gateway.public()])
            .await
            .expect("handshake");
        let txs: Vec<Vec<u8>> = (1..=4000).map(|s| reading(&net, &writer, s)).collect();
        for chunk in txs.chunks(500) {
            for m in c.submit_pipelined(chunk, 64).await.expect("submit") {
                assert!(matches!(m, GatewayMsg::Ack { .. }), "{m:?}");
            }
        }
    });
    // the flooders are logged in as the writer's patient (readings need a
    // session, and every read is written to the access log)
    let patient = common::add_patient(&net, &writer);
    let token = common::token(&format!("http://{}", net.api), &patient);
    let t = Instant::now();
    let (code, text) =
        http_get_as(net.api, "/readings?limit=10000", Some(&token)).expect("GET /readings");
    let one_read = t.elapsed();
    assert_eq!(code, 200);
    let (rss0, threads0) = rss_threads(pid).unwrap();
    eprintln!(
        "one GET /readings?limit=10000 alone: {:.3} s, {} bytes",
        one_read.as_secs_f64(),
        text.len()
    );

    let mut c = rt
        .block_on(Client::connect(
            net.tcp,
            &net.chain,
            &sensor,
            &[net.gateway.public()],
        ))
        .expect("handshake");
    let mut next = 1u64;
    let mut stream = |c: &mut Client<tokio::net::TcpStream>| {
        rt.block_on(stream_for(&net, c, &sensor, &mut next, WINDOW))
    };
    let url = format!("http://{}/readings?limit=10000", net.api);
    let counts = Arc::new(FloodCounts::default());
    // sample the gateway's memory and threads throughout
    let sampling = Arc::new(AtomicBool::new(true));
    let peak = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let sampler = {
        let (sampling, peak) = (sampling.clone(), peak.clone());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                if let Some((rss, threads)) = rss_threads(pid) {
                    peak.0.fetch_max(rss, Ordering::Relaxed);
                    peak.1.fetch_max(threads, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };

    // quiet and flooded windows in turn (the machine is shared: the means
    // over windows before, between and after are compared)
    let mut quiet_rates = vec![stream(&mut c)];
    let mut flood_rates = Vec::new();
    let mut served = 0;
    for _ in 0..2 {
        let before = counts.ok.load(Ordering::Relaxed);
        let flood = Flood::start(FLOODERS, &url, &token, &counts);
        std::thread::sleep(Duration::from_secs(2));
        flood_rates.push(stream(&mut c));
        served += counts.ok.load(Ordering::Relaxed) - before;
        flood.stop();
        std::thread::sleep(Duration::from_secs(1));
        quiet_rates.push(stream(&mut c));
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (quiet, flooded) = (mean(&quiet_rates), mean(&flood_rates));

    // SIGTERM during a flood
    let flood = Flood::start(FLOODERS, &url, &token, &counts);
    std::thread::sleep(Duration::from_secs(3));
    let t = Instant::now();
    let stopped = gw.terminate(Duration::from_secs(30));
    let stop_time = t.elapsed();
    flood.stop();
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.join();
    let (peak_rss, peak_threads) = (
        peak.0.load(Ordering::Relaxed),
        peak.1.load(Ordering::Relaxed),
    );
    eprintln!(
        "read flood: {FLOODERS} clients; sensor acks/s without {quiet_rates:.0?}, with \
         {flood_rates:.0?}: ratio of the means {:.2}; reads served in the flooded windows \
         {served}; gateway RSS {} MiB before, peak {} MiB; threads {threads0} before, peak \
         {peak_threads}; answers 200: {}, 503: {}, other: {}; SIGTERM to exit {:.2} s",
        flooded / quiet,
        rss0 >> 20,
        peak_rss >> 20,
        counts.ok.load(Ordering::Relaxed),
        counts.busy.load(Ordering::Relaxed),
        counts.other.load(Ordering::Relaxed),
        stop_time.as_secs_f64(),
    );
    assert!(stopped, "the gateway did not stop within 30 s of SIGTERM");
    assert!(served > 0, "no read was served during the flood");
    assert!(
        peak_rss < RSS_BOUND,
        "gateway RSS peaked at {} MiB",
        peak_rss >> 20
    );
    assert!(
        peak_threads <= THREAD_BOUND,
        "gateway threads peaked at {peak_threads}"
    );
    assert!(
        flooded >= ACK_FRACTION * quiet,
        "sensor acks/s fell from {quiet:.0} to {flooded:.0} under the flood"
    );
}

/// Finding 2: 3,000 idle connections (under `api.max_connections`) do not
/// stop a normal request; a partial request head is closed after
/// `api.header_timeout_ms`.
#[test]
fn idle_connections_and_partial_heads() {
    let net = common::Net::new(1);
    // the idle connections, bounded by this process's descriptors
    let limit = sensorchain_gateway::procfs::open_files_limit().unwrap_or(1024);
    let idle_n = 3000.min(limit.saturating_sub(200) / 2).max(100);
    configure(&net, |c| {
        c.api.max_connections = idle_n + 100;
        c.api.header_timeout_ms = 120_000;
    });
    let gw = net.start();
    let pid = gw.child.id();
    let mut idle = Vec::with_capacity(idle_n);
    for _ in 0..idle_n {
        idle.push(TcpStream::connect_timeout(&net.api, Duration::from_secs(30)).expect("connect"));
    }
    // wait until the gateway holds them (accepted, not just queued)
    let t = Instant::now();
    while fds(pid) < idle_n {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the gateway holds {} descriptors, expected {idle_n} idle connections",
            fds(pid)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = Instant::now();
    let (code, text) = http_get(net.api, "/health").expect("GET /health beside idle connections");
    eprintln!(
        "{idle_n} idle connections: GET /health answered {code} in {:.3} s; gateway descriptors {}",
        t.elapsed().as_secs_f64(),
        fds(pid)
    );
    assert_eq!(code, 200, "{text}");
    drop(idle);
    drop(gw);

    // a small header timeout: a partial head is closed
    configure(&net, |c| {
        c.api.header_timeout_ms = 1000;
    });
    let _gw = net.start();
    let mut s = TcpStream::connect_timeout(&net.api, Duration::from_secs(30)).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 512];
    let n = s
        .read(&mut buf)
        .expect("a partial head was not closed within 30 s");
    eprintln!(
        "partial head closed after {:.2} s (api.header_timeout_ms = 1000)",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(n, 0, "{:?}", String::from_utf8_lossy(&buf[..n]));
    // and a normal request still works
    let (code, _) = http_get(net.api, "/health").unwrap();
    assert_eq!(code, 200);
}

/// Finding 8: `listen.api` on a non-loopback address: refused without
/// `api.allow_non_loopback` (exit non-zero, the message names both keys),
/// served with a WARN with it.
#[test]
fn non_loopback_api_needs_opt_in_and_warns() {
    let net = common::Net::new(1);
    let port = common::free_port();
    configure(&net, |c| c.listen.api = Some(format!("0.0.0.0:{port}")));
    let out = Command::new(common::bin())
        .args(["run", "--config"])
        .arg(&net.config)
        .env("SENSORCHAIN_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started: {err}");
    assert!(
        err.contains("listen.api") && err.contains("allow_plaintext") && err.contains("tls_cert"),
        "{err}"
    );

    configure(&net, |c| c.listen.allow_plaintext = true);
    let child = Command::new(common::bin())
        .args(["run", "--config"])
        .arg(&net.config)
        .env("SENSORCHAIN_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = common::Gateway { child };
    let api: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let t = Instant::now();
    loop {
        if let Some((200, _)) = http_get(api, "/health") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the API did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(guard.terminate(Duration::from_secs(30)));
    let mut err = String::new();
    guard
        .child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("WARN") && err.contains("WITHOUT TLS"), "{err}");
}

/// Issue 14: TLS end to end. With `[listen] tls_cert`/`tls_key` a public
/// `listen.api` starts without `allow_plaintext`; a real HTTPS client that
/// trusts the certificate logs in and reads a block body; the cookie is
/// `Secure`, HSTS is sent; a plain-HTTP request to the TLS port gets no
/// answer; a client that does not trust the certificate is refused.
#[test]
fn tls_end_to_end_with_a_real_client() {
    let net = common::Net::new(1);
    let port = common::free_port();
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert, key) = (
        net.dir.path().join("api.crt"),
        net.dir.path().join("api.key"),
    );
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    configure(&net, |c| {
        c.listen.api = Some(format!("0.0.0.0:{port}"));
        c.listen.tls_cert = Some("api.crt".into());
        c.listen.tls_key = Some("api.key".into());
    });
    let mut gw = net.start();
    let base = format!("https://localhost:{port}");
    let agent =
        sensorchain_gateway::login_client::agent(Duration::from_secs(30), Some(&cert)).unwrap();
    // the API may come up a moment after the sensor port
    let t = Instant::now();
    let token = loop {
        match sensorchain_gateway::login_client::login(
            &agent,
            &base,
            &net.gateway,
            Some(&net.chain),
        ) {
            Ok(t) => break t,
            Err(e) if t.elapsed() < Duration::from_secs(30) => {
                eprintln!("not yet: {e:#}");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("{e:#}"),
        }
    };
    let mut r = agent
        .get(format!("{base}/blocks/0"))
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers()["strict-transport-security"].to_str().unwrap(),
        "max-age=31536000"
    );
    let v: serde_json::Value = r.body_mut().read_json().unwrap();
    assert_eq!(v["height"], 0);
    // the login's cookie is Secure under TLS
    let mut c = agent
        .post(format!("{base}/auth/challenge"))
        .send_empty()
        .unwrap();
    let ch: serde_json::Value = c.body_mut().read_json().unwrap();
    let login = sensorchain_core::login::LoginChallenge {
        chain_id: net.chain,
        gateway: net.gateway.public(),
        identity: net.admin.public(),
        nonce: sensorchain_core::hash::parse_hex(ch["challenge"].as_str().unwrap()).unwrap(),
        expires_ms: ch["expires_ms"].as_u64().unwrap(),
    };
    let r = agent
        .post(format!("{base}/auth/login"))
        .send_json(serde_json::json!({
            "key": net.admin.public().to_string(),
            "challenge": ch["challenge"],
            "expires_ms": login.expires_ms,
            "signature": hex::encode(login.sign(&net.admin).0),
        }))
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("; Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    // plain HTTP on the TLS port: no HTTP answer
    let plain = http_get(format!("127.0.0.1:{port}").parse().unwrap(), "/health");
    assert!(!matches!(plain, Some((200, _))), "{plain:?}");
    // a client that trusts only the web's roots refuses the certificate
    let strict = sensorchain_gateway::login_client::agent(Duration::from_secs(10), None).unwrap();
    assert!(strict.get(format!("{base}/health")).call().is_err());
    assert!(gw.terminate(Duration::from_secs(30)));
}

/// `POST path` with `body` from the local address `from` (127/8 is all
/// loopback on Linux): (status, JSON body).
fn post_from(
    from: &str,
    api: std::net::SocketAddr,
    path: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
        let mut s = sock.connect(api).await.unwrap();
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        let text = String::from_utf8_lossy(&out).to_string();
        let status = text[9..12].parse().unwrap();
        let json = text
            .split_once("\r\n\r\n")
            .and_then(|(_, b)| serde_json::from_str(b).ok())
            .unwrap_or(serde_json::Value::Null);
        (status, json)
    })
}

/// Issue 14: a brute-forcer of the login from 127.0.0.2 is answered 429
/// while an honest user from 127.0.0.3 logs in, over real sockets (the
/// gateway keys its rate limit on the peer address).
#[test]
fn login_brute_force_from_one_address_is_limited_while_another_logs_in() {
    let net = common::Net::new(1);
    let mut gw = net.start();
    let mut limited = 0;
    for _ in 0..150 {
        let (status, v) = post_from("127.0.0.2", net.api, "/auth/challenge", "");
        match status {
            429 => {
                assert_eq!(v["error"]["code"], "rate_limited");
                limited += 1;
            }
            200 => {
                let bad = serde_json::json!({
                    "key": net.admin.public().to_string(),
                    "challenge": v["challenge"],
                    "expires_ms": v["expires_ms"],
                    "signature": "07".repeat(64),
                });
                let (s, _) = post_from("127.0.0.2", net.api, "/auth/login", &bad.to_string());
                assert!(s == 401 || s == 429, "{s}");
                limited += usize::from(s == 429);
            }
            s => panic!("{s}: {v}"),
        }
    }
    // past the burst of 60 requests (30 tries), nearly every try is refused
    // (the bucket refills 5 a second of real time while the test runs)
    assert!(limited >= 40, "only {limited} refusals");
    // the honest user, from another address
    let (status, c) = post_from("127.0.0.3", net.api, "/auth/challenge", "");
    assert_eq!(status, 200, "{c}");
    let ch = sensorchain_core::login::LoginChallenge {
        chain_id: net.chain,
        gateway: net.gateway.public(),
        identity: net.admin.public(),
        nonce: sensorchain_core::hash::parse_hex(c["challenge"].as_str().unwrap()).unwrap(),
        expires_ms: c["expires_ms"].as_u64().unwrap(),
    };
    let body = serde_json::json!({
        "key": net.admin.public().to_string(),
        "challenge": c["challenge"],
        "expires_ms": ch.expires_ms,
        "signature": hex::encode(ch.sign(&net.admin).0),
    });
    let (status, v) = post_from("127.0.0.3", net.api, "/auth/login", &body.to_string());
    assert_eq!(status, 200, "{v}");
    assert!(v["token"].is_string());
    assert!(gw.terminate(Duration::from_secs(30)));
}
