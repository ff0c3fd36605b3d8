//! The client side of the API's login (docs/API.md, "Authentication"), for
//! every command that reads through a gateway's API (`sensorchain tx`,
//! `provision --grant`, `audit --api`, `export --api`) and for the tests.
//!
//! [`ApiSession::login`] asks `POST /auth/challenge`, signs the core's
//! [`LoginChallenge`] with the identity's key and sends it to `POST
//! /auth/login`; the token then goes with every request as `Authorization:
//! Bearer`. A `401` (the token expired) logs in again once. [`agent`] builds
//! a blocking HTTP client that speaks `http://` and `https://`, trusting
//! the public web roots or, with a CA file, only that file's certificates
//! (a gateway's own self-signed certificate).

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use sensorchain_core::hash::{ChainId, parse_hex};
use sensorchain_core::identity::{Keypair, PublicKey};
use sensorchain_core::login::LoginChallenge;

/// A blocking HTTP client for the API: `timeout` bounds each request;
/// `ca`, a PEM file of certificates to trust instead of the web's roots.
pub fn agent(timeout: Duration, ca: Option<&Path>) -> anyhow::Result<ureq::Agent> {
    let mut b = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(5)))
        .timeout_global(Some(timeout));
    if let Some(ca) = ca {
        let pem =
            std::fs::read(ca).with_context(|| format!("cannot read --ca {}", ca.display()))?;
        let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if certs.is_empty() {
            bail!("--ca {} holds no PEM certificate", ca.display());
        }
        b = b.tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                .build(),
        );
    }
    Ok(b.build().new_agent())
}

/// A logged-in client of one gateway's API.
pub struct ApiSession {
    base: String,
    agent: ureq::Agent,
    key: Keypair,
    token: Mutex<Option<String>>,
}

impl std::fmt::Debug for ApiSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiSession")
            .field("base", &self.base)
            .field("identity", &self.key.public())
            .finish()
    }
}

fn json_of(
    r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> anyhow::Result<(u16, Value)> {
    let mut r = r?;
    let status = r.status().as_u16();
    let v = r.body_mut().read_json::<Value>().unwrap_or(Value::Null);
    Ok((status, v))
}

/// Logs `key` in at the API at `base` (`http(s)://host:port`): the session
/// token (64 hex digits). `expect_chain`, if given, must be the chain the
/// gateway says it serves.
pub fn login(
    agent: &ureq::Agent,
    base: &str,
    key: &Keypair,
    expect_chain: Option<&ChainId>,
) -> anyhow::Result<String> {
    let (status, c) = json_of(agent.post(format!("{base}/auth/challenge")).send_empty())
        .with_context(|| format!("cannot reach the gateway API at {base}"))?;
    if status != 200 {
        bail!("POST {base}/auth/challenge answered {status}: {c}");
    }
    let field = |k: &str| c[k].as_str().and_then(parse_hex::<32>);
    let (Some(nonce), Some(chain), Some(gateway), Some(expires_ms)) = (
        field("challenge"),
        field("chain_id"),
        field("gateway"),
        c["expires_ms"].as_u64(),
    ) else {
        bail!("POST {base}/auth/challenge: not a challenge: {c}");
    };
    if let Some(want) = expect_chain
        && want.0 != chain
    {
        bail!(
            "the gateway at {base} serves chain {}, not {want}",
            ::hex::encode(chain)
        );
    }
    let ch = LoginChallenge {
        chain_id: ChainId(chain),
        gateway: PublicKey(gateway),
        identity: key.public(),
        nonce,
        expires_ms,
    };
    let sig = ch.sign(key);
    let (status, v) = json_of(agent.post(format!("{base}/auth/login")).send_json(json!({
        "key": key.public().to_string(),
        "challenge": ::hex::encode(nonce),
        "expires_ms": expires_ms,
        "signature": ::hex::encode(sig.0),
    })))
    .with_context(|| format!("cannot reach the gateway API at {base}"))?;
    if status != 200 {
        let e = &v["error"];
        bail!(
            "the gateway at {base} refused the login of {}: {} ({}, HTTP {status})",
            key.public().address(),
            e["message"].as_str().unwrap_or("no message"),
            e["code"].as_str().unwrap_or("?"),
        );
    }
    v["token"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("POST {base}/auth/login: no token in {v}"))
}

impl ApiSession {
    /// A client of `base` logging in as `key` (at the first request).
    pub fn new(agent: ureq::Agent, base: impl Into<String>, key: Keypair) -> Self {
        ApiSession {
            base: base.into(),
            agent,
            key,
            token: Mutex::new(None),
        }
    }

    /// The base address.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The identity it logs in as.
    pub fn identity(&self) -> PublicKey {
        self.key.public()
    }

    /// The HTTP client.
    pub fn agent(&self) -> &ureq::Agent {
        &self.agent
    }

    /// Logs in (again): a fresh token.
    pub fn login(&self) -> anyhow::Result<()> {
        let t = login(&self.agent, &self.base, &self.key, None)?;
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = Some(t);
        Ok(())
    }

    fn token(&self) -> anyhow::Result<String> {
        if let Some(t) = self.token.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(t);
        }
        self.login()?;
        self.token
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .context("no session token")
    }

    /// `GET path` with the session (logs in first, and again once on a
    /// 401). A transport error is an `Err`; any HTTP status is an answer.
    pub fn get(&self, path: &str) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
        let url = format!("{}{path}", self.base);
        for attempt in 0..2 {
            let token = self.token()?;
            let r = self
                .agent
                .get(&url)
                .header("Authorization", &format!("Bearer {token}"))
                .call()
                .with_context(|| format!("cannot reach the gateway API at {}", self.base))?;
            if r.status() == 401 && attempt == 0 {
                *self.token.lock().unwrap_or_else(|p| p.into_inner()) = None;
                continue;
            }
            return Ok(r);
        }
        unreachable!("the loop returns on its second pass")
    }

    /// `POST path` with a JSON `body` and the session (logs in first, and
    /// again once on a 401): (status, JSON answer; `null` if not JSON).
    pub fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let url = format!("{}{path}", self.base);
        for attempt in 0..2 {
            let token = self.token()?;
            let r = self
                .agent
                .post(&url)
                .header("Authorization", &format!("Bearer {token}"))
                .send_json(body)
                .with_context(|| format!("cannot reach the gateway API at {}", self.base))?;
            if r.status() == 401 && attempt == 0 {
                *self.token.lock().unwrap_or_else(|p| p.into_inner()) = None;
                continue;
            }
            return json_of(Ok(r));
        }
        unreachable!("the loop returns on its second pass")
    }

    /// `GET path` as (status, JSON body; `null` if the body is not JSON).
    pub fn get_json(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        json_of(Ok(self.get(path)?))
    }
}
