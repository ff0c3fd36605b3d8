//! The dashboard end to end in a real headless browser: Debian's chromium
//! driven through chromedriver (W3C WebDriver, spoken here over HTTP with
//! the gateway's own HTTP client) against a running `sensorchain demo`.
//!
//! The page loads without console errors; a doctor logs in (the challenge
//! signed in the page) and the charts receive live points; a reading's
//! signature and inclusion proof verify in the page, and the same answer
//! with one byte flipped — by a proxy between browser and gateway, and by
//! the page's own "tampered answer" button — is marked failed; the block list verifies (hash,
//! link, finality certificate), and so does the header chain from genesis
//! to the last final block; a sealed reading opens for its patient's key
//! and not for the insurer's; an insurer sees no vitals; an admin revokes a
//! sensor from the page and the sensor is cut off (its readings stop); a
//! patient consents to the insurer from the page, who then sees the device
//! but cannot open its sealed readings.
//!
//! Runs when chromium and chromedriver are installed; with
//! `SENSORCHAIN_BROWSER_TESTS=1` (CI: `.ci/wasm.sh`) a missing browser is a
//! failure, not a skip. `SENSORCHAIN_SCREENSHOTS=1` writes the ward
//! overview and a verified block to docs/ (committed, shown in README.md).
//! Timeouts are generous bounds for a slow shared machine, not what is
//! tested.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use sensorchain_core::identity::Keypair;

mod common;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

/// A child process killed (with its process group) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        // the demo's gateways are in its process group
        let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A minimal W3C WebDriver client.
struct Driver {
    agent: ureq::Agent,
    base: String,
}

impl Driver {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// The answer's value, or the WebDriver error.
    fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let mut res = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            (_, b) => self.agent.post(&url).send_json(b.unwrap_or(json!({}))),
        }
        .map_err(|e| e.to_string())?;
        let status = res.status();
        let v: Value = res.body_mut().read_json().unwrap_or(Value::Null);
        if status.is_success() {
            Ok(v["value"].clone())
        } else {
            Err(format!("{status} {v}"))
        }
    }

    fn js(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    fn find(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        );
        v[ELEMENT].as_str().unwrap().to_string()
    }

    /// Clicks the element `css` selects; found again if the page redrew it
    /// in between (the ward and the block list are redrawn as data comes).
    fn click(&self, css: &str) {
        for _ in 0..20 {
            let e = self.find(css);
            match self.try_call("POST", &format!("/element/{e}/click"), None) {
                Ok(_) => return,
                Err(m) if m.contains("stale element") => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(m) => panic!("click {css}: {m}"),
            }
        }
        panic!("click {css}: the element went stale 20 times");
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.call("POST", &format!("/element/{e}/clear"), None);
        self.call(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// Waits until `script` (an expression) is truthy; returns its value.
    fn wait(&self, what: &str, script: &str, bound: Duration) -> Value {
        let t = Instant::now();
        loop {
            let v = self.js(&format!("return ({script});"));
            if !(v.is_null() || v == json!(false) || v == json!(0) || v == json!("")) {
                return v;
            }
            assert!(t.elapsed() < bound, "waited {bound:?} for {what}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Browser console entries of level SEVERE since the last call.
    fn console_errors(&self) -> Vec<String> {
        let v = self.call("POST", "/se/log", Some(json!({ "type": "browser" })));
        v.as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or("").to_string())
            .collect()
    }

    fn screenshot(&self, to: &Path) {
        let v = self.call("GET", "/screenshot", None);
        let b64 = v.as_str().unwrap();
        std::fs::write(to, base64_decode(b64)).unwrap();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let bytes: Vec<u8> = s
        .bytes()
        .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= u32::from(val(*c)) << (18 - 6 * i);
        }
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    out
}

/// A loopback HTTP proxy in front of the gateway at `upstream` that flips
/// one byte of every `GET /txs/{id}/proof` answer (one hex digit of the
/// proof's first path hash, or of the header when the path is empty) and
/// passes everything else through, the event stream included. One request
/// per connection (it asks the gateway to close after each). Returns its
/// address and the count of answers it changed.
fn tampering_proxy(upstream: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let flips = Arc::new(AtomicUsize::new(0));
    let f = flips.clone();
    std::thread::spawn(move || {
        for c in l.incoming().map_while(Result::ok) {
            let f = f.clone();
            std::thread::spawn(move || {
                let _ = relay(c, upstream, &f);
            });
        }
    });
    (addr, flips)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn relay(mut client: TcpStream, upstream: SocketAddr, flips: &AtomicUsize) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = client.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = find(&buf, b"\r\n\r\n") {
            break p + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut body_len = 0usize;
    let mut lines = Vec::new();
    for l in head.split("\r\n").filter(|l| !l.is_empty()) {
        let lower = l.to_ascii_lowercase();
        if let Some(n) = lower.strip_prefix("content-length:") {
            body_len = n.trim().parse().unwrap_or(0);
        }
        if !lower.starts_with("connection:") && !lower.starts_with("keep-alive:") {
            lines.push(l.to_string());
        }
    }
    while buf.len() < head_end + body_len {
        let n = client.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let path = lines[0].split(' ').nth(1).unwrap_or("").to_string();
    let mut up = TcpStream::connect(upstream)?;
    up.write_all(format!("{}\r\nConnection: close\r\n\r\n", lines.join("\r\n")).as_bytes())?;
    up.write_all(&buf[head_end..])?;
    if path.starts_with("/txs/") && path.ends_with("/proof") {
        let mut res = Vec::new();
        up.read_to_end(&mut res)?;
        let at = find(&res, b"\"path\":[\"")
            .map(|p| p + 9)
            .or_else(|| find(&res, b"\"header_hex\":\"").map(|p| p + 20));
        if let Some(i) = at {
            let v = (res[i] as char).to_digit(16).unwrap() ^ 1;
            res[i] = char::from_digit(v, 16).unwrap() as u8;
            flips.fetch_add(1, Ordering::SeqCst);
        }
        client.write_all(&res)?;
    } else {
        std::io::copy(&mut up, &mut client)?;
    }
    Ok(())
}

fn key_hex(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap()
        .to_string()
}

fn public_of(path: &Path) -> String {
    let seed = sensorchain_core::hash::parse_hex::<32>(&key_hex(path)).unwrap();
    Keypair::from_seed(seed).public().to_string()
}

/// Logs the page in with the key file `key` (typed into the key field).
fn login(d: &Driver, url: &str, key: &Path) {
    d.call("POST", "/url", Some(json!({ "url": url })));
    d.wait(
        "the core (WebAssembly) to load",
        "document.getElementById('core-status').dataset.ready === '1'",
        Duration::from_secs(60),
    );
    d.type_into("#key", &key_hex(key));
    d.click("#login");
    d.wait(
        "the login",
        "!document.getElementById('whoami').hidden || document.getElementById('msg').className === 'error' && document.getElementById('msg').textContent",
        Duration::from_secs(60),
    );
    let msg = d.js("return document.getElementById('msg').textContent;");
    assert!(
        !d.js("return document.getElementById('whoami').hidden;")
            .as_bool()
            .unwrap(),
        "login refused: {msg}"
    );
}

/// The sum of the live charts' points.
const POINTS: &str =
    "[...document.querySelectorAll('.chart')].reduce((n, c) => n + Number(c.dataset.points), 0)";

#[test]
fn dashboard_in_a_browser() {
    let forced = std::env::var_os("SENSORCHAIN_BROWSER_TESTS").is_some();
    let (chromium, chromedriver) = (which("chromium"), which("chromedriver"));
    let (Some(chromium), Some(chromedriver)) = (chromium, chromedriver) else {
        assert!(
            !forced,
            "SENSORCHAIN_BROWSER_TESTS is set but chromium or chromedriver is not installed (apt-get install chromium chromium-driver)"
        );
        eprintln!(
            "skipped: chromium and chromedriver are not installed (SENSORCHAIN_BROWSER_TESTS=1 makes this a failure)"
        );
        return;
    };
    let shots = std::env::var_os("SENSORCHAIN_SCREENSHOTS")
        .is_some()
        .then(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs"));

    // the demo as a person runs it: five gateway processes in one cluster,
    // four sensors (two sealed), streaming long enough for the whole test
    // (its leader is killed only after 180 s); its files kept for the keys
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("demo");
    let mut cmd = Command::new(common::bin());
    cmd.args([
        "demo",
        "--gateways",
        "5",
        "--sensors",
        "4",
        "--seconds",
        "600",
    ])
    .arg("--data-dir")
    .arg(&data)
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut demo = Proc(cmd.spawn().unwrap());
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    {
        let out = demo.0.stdout.take().unwrap();
        let lines = lines.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(l);
            }
        });
    }
    let wait_line = |what: &str, bound: Duration| -> String {
        let t = Instant::now();
        loop {
            if let Some(l) = lines.lock().unwrap().iter().find(|l| l.contains(what)) {
                return l.clone();
            }
            assert!(
                t.elapsed() < bound,
                "the demo printed no {what:?} in {bound:?}: {:?}",
                lines.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let line = wait_line("dashboard: ", Duration::from_secs(120));
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http"))
        .unwrap()
        .to_string();
    let keys = data.join("keys");
    let admin_key = data.join("cluster").join("admin.key");
    // the patients are registered and streaming once the sensors' line is out
    wait_line(
        "scene: the admin revokes sensor 1",
        Duration::from_secs(180),
    );

    // chromedriver and a headless chromium
    let port = common::free_port();
    let _driver = Proc(
        Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // the browser's window: a desktop by default; e.g. 820,1180 for a tablet
    let window = std::env::var("SENSORCHAIN_BROWSER_WINDOW").unwrap_or_else(|_| "1280,1200".into());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into();
    let base = format!("http://127.0.0.1:{port}");
    let t = Instant::now();
    while agent.get(&format!("{base}/status")).call().is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "chromedriver did not start"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut res = agent
        .post(&format!("{base}/session"))
        .send_json(json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", format!("--window-size={window}")],
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        }}}))
        .unwrap();
    let s: Value = res.body_mut().read_json().unwrap();
    let sid = s["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no WebDriver session: {s}"))
        .to_string();
    let d = Driver {
        agent,
        base: format!("{base}/session/{sid}"),
    };

    // 1. the page loads without console errors; a doctor logs in
    login(&d, &url, &keys.join("doctor.key"));
    let errors = d.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:?}");
    d.wait(
        "the ward to list the doctor's patients' devices",
        "document.querySelectorAll('#ward-rows tr').length >= 4",
        Duration::from_secs(60),
    );
    // sealed readings open in the page with the doctor's key
    d.wait(
        "a sealed reading opened in the browser",
        "[...document.querySelectorAll('#ward-rows .opened')].some(e => e.textContent.includes('opened in your browser with key'))",
        Duration::from_secs(60),
    );

    // the cluster: each of the five gateways reports its own role and
    // height (asked by this gateway over the peer links); one leads
    d.click("nav button[data-tab=cluster]");
    d.wait(
        "every gateway's own report in the cluster view",
        "(() => { const rows = [...document.querySelectorAll('#cluster-view tbody tr')]; const ok = rows.length === 5 && rows.every(r => /^\\d+$/.test(r.querySelector('.height').textContent)) && rows.filter(r => r.querySelector('.role').textContent === 'leader').length === 1; if (!ok) document.querySelector('nav button[data-tab=cluster]').click(); return ok; })()",
        Duration::from_secs(90),
    );

    // 2. live points: the charts grow while the page stays open
    d.click("nav button[data-tab=vitals]");
    let before = d
        .wait("charts with points", POINTS, Duration::from_secs(60))
        .as_u64()
        .unwrap();
    d.wait(
        "live points",
        &format!("{POINTS} > {before}"),
        Duration::from_secs(60),
    );
    if let Some(docs) = &shots {
        // some seconds of points for the picture
        std::thread::sleep(Duration::from_secs(15));
        d.screenshot(&docs.join("dashboard-vitals.png"));
    }
    d.click("nav button[data-tab=ward]");
    if let Some(docs) = &shots {
        std::thread::sleep(Duration::from_secs(2));
        d.screenshot(&docs.join("dashboard-ward.png"));
    }

    // 3. a reading's inclusion proof and signature verify in the page
    d.click("#ward-rows tr");
    d.wait(
        "the reading's checks",
        "document.querySelector('#reading-checks .proof')",
        Duration::from_secs(60),
    );
    assert_eq!(
        d.js("return document.querySelector('#reading-checks .proof').dataset.ok;"),
        json!("1"),
        "{}",
        d.js("return document.getElementById('reading-checks').textContent;")
    );
    let tx = d
        .js("return document.getElementById('reading-detail').dataset.tx;")
        .as_str()
        .unwrap()
        .to_string();
    d.click("nav button[data-tab=chain]");
    d.type_into("#tx-id", &tx);
    d.click("#verify-tx");
    let ok = d.wait(
        "the proof's verdict",
        "document.querySelector('#proof-result .proof') && document.querySelector('#proof-result .proof').dataset.ok",
        Duration::from_secs(60),
    );
    assert_eq!(ok, json!("1"));
    // one flipped byte of the gateway's answer: marked failed
    d.click("#tamper-tx");
    let bad = d.wait(
        "the tampered proof's verdict",
        "document.querySelector('#proof-result .proof') && document.querySelector('#proof-result .proof').dataset.ok === '0' && document.querySelector('#proof-result').textContent",
        Duration::from_secs(60),
    );
    assert!(bad.as_str().unwrap().contains("FAILED"), "{bad}");

    // the same proof served through a proxy that flips one byte of it:
    // the page, loaded through the proxy, marks it failed
    let upstream: SocketAddr = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let (proxy, flips) = tampering_proxy(upstream);
    let proxied = format!("http://{proxy}/dashboard");
    login(&d, &proxied, &keys.join("doctor.key"));
    d.click("nav button[data-tab=chain]");
    d.type_into("#tx-id", &tx);
    d.click("#verify-tx");
    let bad = d.wait(
        "the proxied proof's verdict",
        "document.querySelector('#proof-result .proof') && document.getElementById('proof-result').textContent",
        Duration::from_secs(60),
    );
    assert_eq!(
        d.js("return document.querySelector('#proof-result .proof').dataset.ok;"),
        json!("0"),
        "{bad}"
    );
    assert!(bad.as_str().unwrap().contains("FAILED"), "{bad}");
    assert_eq!(
        flips.load(Ordering::SeqCst),
        1,
        "the proxy changed one answer"
    );
    login(&d, &url, &keys.join("doctor.key"));
    d.click("nav button[data-tab=chain]");

    // 4. the blocks verify in the page (hash, link, certificate)
    d.wait(
        "verified blocks",
        "document.querySelectorAll('#blocks tr').length >= 3 && [...document.querySelectorAll('#blocks .mark')].every(m => m.classList.contains('ok'))",
        Duration::from_secs(60),
    );
    d.click("#blocks tr:nth-child(3)");
    let detail = d.wait(
        "a block's detail",
        "!document.getElementById('block-detail').hidden && document.getElementById('block-detail').textContent",
        Duration::from_secs(30),
    );
    let detail = detail.as_str().unwrap();
    assert!(detail.contains("verified in your browser"), "{detail}");
    assert!(detail.contains("finality certificate"), "{detail}");
    if let Some(docs) = &shots {
        d.screenshot(&docs.join("dashboard-block.png"));
    }
    // the chain from genesis to the last final block, audited in the page
    d.click("#audit");
    let audit = d.wait(
        "the audit",
        "document.querySelector('#audit-result .audit') && document.getElementById('audit-result').textContent",
        Duration::from_secs(120),
    );
    assert_eq!(
        d.js("return document.querySelector('#audit-result .audit').dataset.ok;"),
        json!("1"),
        "{audit}"
    );
    eprintln!("audit: {audit}");
    let errors = d.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:?}");

    // 5. a sealed reading opens for its patient's key, not the insurer's
    let insurer = key_hex(&keys.join("insurer.key"));
    // (the demo seals the even sensors' readings for their patient and the
    // doctor: patient 0's)
    let sealed_patient = 0;
    login(&d, &url, &keys.join("patient-0.key"));
    d.wait(
        "the patient's sealed reading to open",
        "[...document.querySelectorAll('#ward-rows .opened')].some(e => e.textContent.includes('opened in your browser with key'))",
        Duration::from_secs(60),
    );
    assert_eq!(
        d.js("return document.querySelectorAll('#ward-rows tr').length === document.querySelectorAll('#ward-rows .opened, #ward-rows .sealed').length;"),
        json!(true),
        "every value of patient 0's device is sealed (opened here)"
    );
    d.click("#ward-rows tr");
    d.type_into("#open-with", &insurer);
    d.click("#open-try");
    let r = d.wait(
        "the insurer's key to be tried",
        "document.getElementById('open-result').textContent",
        Duration::from_secs(30),
    );
    assert!(
        r.as_str().unwrap().contains("not one of its readers"),
        "{r}"
    );

    // 6. an insurer (no patient's consent) sees no vitals
    login(&d, &url, &keys.join("insurer.key"));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        d.js("return document.querySelectorAll('#ward-rows tr').length + document.querySelectorAll('.chart').length;"),
        json!(0)
    );
    let note = d.js("return document.getElementById('ward-note').textContent;");
    assert!(note.as_str().unwrap().contains("No patient"), "{note}");

    // 7. the admin revokes sensor 2 from the page; it is cut off
    login(&d, &url, &admin_key);
    d.click("nav button[data-tab=devices]");
    d.wait(
        "the simulated sensors in the device list",
        "document.querySelectorAll('#device-rows tr[data-role=device]').length >= 4",
        Duration::from_secs(60),
    );
    // the sensors linked to this gateway show their live session here
    // (the list is read again until one does)
    d.wait(
        "a sensor's live session on this gateway",
        "(() => { const live = [...document.querySelectorAll('#device-rows tr[data-role=device] .session')].some(e => e.textContent === 'live'); if (!live) document.querySelector('nav button[data-tab=devices]').click(); return live; })()",
        Duration::from_secs(60),
    );
    let sensor2 = public_of(&keys.join("sensor-2.key"));
    d.click(&format!(
        "#device-rows tr[data-key='{sensor2}'] button.revoke"
    ));
    let r = d.wait(
        "the revocation",
        "document.getElementById('tx-result').textContent.match(/committed|refused/) && document.getElementById('tx-result').textContent",
        Duration::from_secs(60),
    );
    assert!(r.as_str().unwrap().contains("committed"), "{r}");
    let perms = d.wait(
        "the sensor's permissions",
        &format!(
            "document.querySelector(\"#device-rows tr[data-key='{sensor2}'] .perms\").textContent"
        ),
        Duration::from_secs(30),
    );
    assert!(!perms.as_str().unwrap().contains("connect"), "{perms}");
    // its readings stop: the doctor's ward calls it silent
    login(&d, &url, &keys.join("doctor.key"));
    d.wait(
        "sensor 2 silent in the doctor's ward",
        &format!("[...document.querySelectorAll(\"#ward-rows tr[data-device='{sensor2}'] .state\")].some(e => e.textContent === 'silent')"),
        Duration::from_secs(90),
    );
    // 8. that patient consents to the insurer, a transaction signed in the
    // page: the insurer now sees the device, but its sealed readings stay
    // sealed for the insurer's key (they were sealed for the patient and
    // the doctor)
    login(
        &d,
        &url,
        &keys.join(format!("patient-{sealed_patient}.key")),
    );
    d.click("nav button[data-tab=devices]");
    d.type_into("#consent-reader", &public_of(&keys.join("insurer.key")));
    d.click("#consent-form button");
    let r = d.wait(
        "the consent",
        "document.getElementById('tx-result').textContent.match(/committed|refused/) && document.getElementById('tx-result').textContent",
        Duration::from_secs(60),
    );
    assert!(r.as_str().unwrap().contains("committed"), "{r}");
    login(&d, &url, &keys.join("insurer.key"));
    let sealed = d.wait(
        "the insurer's view of the consenting patient's sealed device",
        "[...document.querySelectorAll('#ward-rows .sealed')].map(e => e.textContent).find(t => t.includes('not one of its readers'))",
        Duration::from_secs(60),
    );
    assert!(sealed.as_str().unwrap().starts_with("sealed"), "{sealed}");
    assert_eq!(
        d.js("return document.querySelectorAll('#ward-rows .opened').length;"),
        json!(0)
    );

    let errors = d.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:?}");
    d.call("DELETE", "", None);
}
