//! A small blocking client of a gateway's HTTP API (`docs/API.md`) for the
//! commands that sign and submit transactions: `sensorchain provision
//! --grant` and `sensorchain tx`.
//!
//! Submitting one transaction ([`Api::submit`]):
//! 1. the signer's next sequence number is its `last_sequence + 1` from
//!    `GET /identities/{key}` (1 if it has none yet); an unregistered signer
//!    is an error before anything is signed;
//! 2. the transaction is signed for the chain and sent with `POST /txs`,
//!    which answers once it is durably committed or refused;
//! 3. its id is looked up with `GET /txs/{id}` (polled until the deadline if
//!    the `POST` was cut off after sending) for its height and summary.
//!
//! A `409 replay` (another transaction of the same signer got in first) is
//! retried with a fresh sequence number, a `503 busy` after a second; every
//! other refusal is reported with the gateway's code and message.
//!
//! Reads go with a session: the client logs in as the signing key
//! ([`login_client`]); `POST /txs` needs none (the transaction's signature
//! authenticates it). `http://` and `https://` (with `--ca FILE` for a
//! gateway's own certificate).

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use sensorchain_core::hash::{ChainId, Hash32, parse_hex};
use sensorchain_core::identity::{Keypair, PublicKey};
use sensorchain_core::permissions::Permissions;
use sensorchain_core::tx::{Transaction, TxBody, TxKind};

use sensorchain_gateway::api::kind_name;
pub use sensorchain_gateway::chain_source::normalise_url;
use sensorchain_gateway::login_client::{self, ApiSession};
use sensorchain_gateway::node::now_ms;

/// The API address `sensorchain run` listens on by default.
pub const DEFAULT_API: &str = "http://127.0.0.1:7480";

/// How many times a `409 replay` is retried with a fresh sequence number.
const REPLAY_RETRIES: u32 = 3;

/// An error answer of the API: `{"error": {"code", "message"}}` and its
/// status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status.
    pub status: u16,
    /// The snake_case code (`not_permitted`, `replay`, …).
    pub code: String,
    /// The gateway's sentence.
    pub message: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, HTTP {})", self.message, self.code, self.status)
    }
}

impl std::error::Error for Refusal {}

impl Refusal {
    fn from_answer(status: u16, body: &Value) -> Refusal {
        let e = &body["error"];
        Refusal {
            status,
            code: e["code"].as_str().unwrap_or("unknown").to_string(),
            message: e["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("HTTP {status} without an error body")),
        }
    }
}

/// A committed transaction, as `sensorchain tx` and `provision` report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Kind name, as in the API (`grant`, `set_role`, …).
    pub kind: String,
    /// The transaction id.
    pub tx_id: Hash32,
    /// The signer.
    pub signer: PublicKey,
    /// The sequence number it was signed with.
    pub sequence: u64,
    /// The block's height.
    pub height: u64,
    /// The index in the block.
    pub index: u64,
    /// The block's hash, if the API gave it.
    pub block_hash: Option<String>,
    /// The API's one-line description.
    pub summary: String,
}

impl Receipt {
    /// The receipt as a JSON object.
    pub fn to_json(&self) -> Value {
        json!({
            "kind": self.kind,
            "tx_id": self.tx_id.to_string(),
            "signer": self.signer.to_string(),
            "signer_address": self.signer.address().to_string(),
            "sequence": self.sequence,
            "height": self.height,
            "index": self.index,
            "block_hash": self.block_hash,
            "summary": self.summary,
        })
    }
}

/// How a `POST /txs` ended.
enum Posted {
    /// `201 Created`.
    Committed,
    /// An error answer.
    Refused(Refusal),
    /// The request was sent (or may have been) but no answer came back.
    Unanswered(String),
}

/// A gateway's HTTP API, logged in as one identity.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    agent: ureq::Agent,
    session: std::sync::Arc<ApiSession>,
    wait: Duration,
}

impl Api {
    /// A client of the API at `url` (`http(s)://HOST:PORT` or `HOST:PORT`)
    /// that logs in as `key` for its reads (docs/API.md,
    /// "Authentication"); `ca`, a PEM file of certificates to trust for
    /// `https`; `wait` bounds how long one submission may take until it is
    /// committed.
    pub fn new(url: &str, wait: Duration, key: &Keypair, ca: Option<&Path>) -> anyhow::Result<Api> {
        let base = normalise_url(url)?;
        let agent = login_client::agent(wait.max(Duration::from_secs(1)), ca)?;
        let session = ApiSession::new(agent.clone(), base.clone(), key.clone());
        Ok(Api {
            base,
            agent,
            session: std::sync::Arc::new(session),
            wait,
        })
    }

    /// The logged-in session (for requests this client has no method for).
    pub fn session(&self) -> &ApiSession {
        &self.session
    }

    /// The base address, e.g. `http://127.0.0.1:7480`.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn unreachable(&self, e: &ureq::Error) -> anyhow::Error {
        anyhow::anyhow!(
            "cannot reach the gateway API at {}: {e} (is `sensorchain run` up, and is this its \
             [listen] api address?)",
            self.base
        )
    }

    fn read(
        &self,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut r = r.map_err(|e| self.unreachable(&e))?;
        let status = r.status().as_u16();
        let body = r.body_mut().read_json::<Value>().unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// `GET path`: `/health` without a session, anything else logged in.
    fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        if path == "/health" {
            return self.read(self.agent.get(format!("{}{path}", self.base)).call());
        }
        self.session.get_json(path)
    }

    /// `GET path`: the body of a 200, `None` on a 404, an error naming the
    /// request and the refusal otherwise.
    fn get_found(&self, path: &str) -> anyhow::Result<Option<Value>> {
        let (status, body) = self.get(path)?;
        match status {
            200 => Ok(Some(body)),
            404 => Ok(None),
            _ => {
                let r = Refusal::from_answer(status, &body);
                bail!("GET {}{path}: {r}", self.base)
            }
        }
    }

    /// The chain id the gateway serves (`GET /health`).
    pub fn chain_id(&self) -> anyhow::Result<ChainId> {
        let (status, body) = self.get("/health")?;
        if status != 200 {
            let r = Refusal::from_answer(status, &body);
            bail!("GET {}/health: {r}", self.base);
        }
        body["chain_id"]
            .as_str()
            .and_then(parse_hex::<32>)
            .map(ChainId)
            .with_context(|| format!("GET {}/health: no chain_id in {body}", self.base))
    }

    /// An identity's record (`GET /identities/{key}`), `None` if the chain
    /// does not know the key.
    pub fn identity(&self, key: &PublicKey) -> anyhow::Result<Option<Value>> {
        self.get_found(&format!("/identities/{key}"))
    }

    /// The key of a registered identity named by its base58 address.
    pub fn key_of_address(&self, address: &str) -> anyhow::Result<PublicKey> {
        let (status, body) = self.get(&format!("/identities/{address}"))?;
        if status != 200 {
            let r = Refusal::from_answer(status, &body);
            bail!("{address:?}: {r}");
        }
        body["key"]
            .as_str()
            .and_then(|k| k.parse::<PublicKey>().ok())
            .with_context(|| format!("{address:?}: the API gave no key"))
    }

    /// The sequence number `signer`'s next transaction must carry: one above
    /// its last accepted one (1 if none). An unregistered signer is an error.
    pub fn next_sequence(&self, signer: &PublicKey) -> anyhow::Result<u64> {
        let Some(rec) = self.identity(signer)? else {
            bail!(
                "the signer {} ({signer}) is not registered on the chain served at {}: it cannot \
                 sign transactions there",
                signer.address(),
                self.base
            );
        };
        match rec["last_sequence"].as_u64() {
            None => Ok(1),
            Some(last) => last
                .checked_add(1)
                .context("the signer's sequence numbers are exhausted"),
        }
    }

    fn post(&self, encoded: &[u8]) -> anyhow::Result<Posted> {
        let r = self
            .agent
            .post(format!("{}/txs", self.base))
            .content_type("application/octet-stream")
            .send(encoded);
        match r {
            Ok(mut r) => {
                let status = r.status().as_u16();
                let body = r.body_mut().read_json::<Value>().unwrap_or(Value::Null);
                if status == 201 {
                    Ok(Posted::Committed)
                } else {
                    Ok(Posted::Refused(Refusal::from_answer(status, &body)))
                }
            }
            // nothing was sent: the gateway is not there
            Err(
                e @ (ureq::Error::ConnectionFailed
                | ureq::Error::HostNotFound
                | ureq::Error::BadUri(_)
                | ureq::Error::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve)),
            ) => Err(self.unreachable(&e)),
            Err(ureq::Error::Io(io)) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                Err(self.unreachable(&ureq::Error::Io(io)))
            }
            Err(e) => Ok(Posted::Unanswered(e.to_string())),
        }
    }

    /// A committed transaction (`GET /txs/{id}`), `None` if not (yet) known.
    pub fn tx(&self, id: &Hash32) -> anyhow::Result<Option<Value>> {
        self.get_found(&format!("/txs/{id}"))
    }

    /// Polls `GET /txs/{id}` until it answers or `deadline` passes.
    fn wait_for(&self, id: &Hash32, deadline: Instant) -> anyhow::Result<Option<Value>> {
        loop {
            match self.tx(id) {
                Ok(Some(v)) => return Ok(Some(v)),
                Ok(None) => {}
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => {}
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Signs `kind` as `signer` for `chain` with the signer's next sequence
    /// number, submits it and waits until it is committed (see the module
    /// docs). A refusal is an error naming the gateway's reason.
    pub fn submit(
        &self,
        signer: &Keypair,
        chain: &ChainId,
        kind: TxKind,
    ) -> anyhow::Result<Receipt> {
        let deadline = Instant::now() + self.wait;
        let name = kind_name(&kind);
        let mut replays = 0;
        loop {
            let sequence = self.next_sequence(&signer.public())?;
            let body = TxBody {
                signer: signer.public(),
                sequence,
                timestamp_ms: now_ms(),
                kind: kind.clone(),
            };
            let tx = Transaction::sign(body, chain, signer)
                .map_err(|e| anyhow::anyhow!("cannot sign the {name} transaction: {e}"))?;
            let encoded = tx.to_vec();
            let id = Transaction::id_of_encoded(&encoded);
            let committed = match self.post(&encoded)? {
                Posted::Committed => self.wait_for(&id, deadline)?,
                Posted::Refused(r) if r.code == "replay" && replays < REPLAY_RETRIES => {
                    // another transaction of this signer got in first
                    replays += 1;
                    continue;
                }
                Posted::Refused(r) if r.status == 503 && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
                Posted::Refused(r) => {
                    bail!(
                        "the gateway at {} refused the {name} transaction signed by {}: {r}{}",
                        self.base,
                        signer.public().address(),
                        hint(&r.code)
                    );
                }
                Posted::Unanswered(why) => match self.wait_for(&id, deadline)? {
                    Some(v) => Some(v),
                    None => bail!(
                        "the {name} transaction {id} got no answer ({why}) and is not committed \
                         after {} s; look for it later with GET {}/txs/{id}",
                        self.wait.as_secs(),
                        self.base
                    ),
                },
            };
            let Some(v) = committed else {
                bail!(
                    "the gateway acknowledged the {name} transaction {id} but GET {}/txs/{id} \
                     does not find it",
                    self.base
                );
            };
            let loc = &v["location"];
            return Ok(Receipt {
                kind: name.to_string(),
                tx_id: id,
                signer: signer.public(),
                sequence,
                height: loc["height"].as_u64().context("no height in GET /txs")?,
                index: loc["index"].as_u64().unwrap_or(0),
                block_hash: loc["block_hash"].as_str().map(str::to_string),
                summary: v["summary"].as_str().unwrap_or_default().to_string(),
            });
        }
    }
}

/// A hint for an operator after a refusal code, starting with `"\nhint: "`
/// (or empty when the gateway's message says it all).
fn hint(code: &str) -> &'static str {
    match code {
        "not_permitted" => {
            "\nhint: grants, revocations, roles and assignments need `admin`; a consent needs \
             `send` (see GET /identities/{signer})"
        }
        "bad_signature" => "\nhint: signed for another chain? (check --genesis / --chain-id)",
        "nothing_to_grant" | "nothing_to_revoke" | "nothing_to_change" => {
            "\nhint: the transaction would change nothing; see the target's current record with \
             GET /identities/{target} and name only what changes"
        }
        "already_voted" => {
            "\nhint: your vote on this change is pending; other admins must vote (see GET /votes)"
        }
        "wrong_role" => {
            "\nhint: assign needs a `device` and a `patient`; a consent is signed by a `patient` \
             for a `doctor`, `nurse` or `insurer` (set roles with `sensorchain tx role`)"
        }
        "replay" => "\nhint: another transaction of this signer keeps taking its sequence number",
        _ => "",
    }
}

/// The permissions of an identity record from the API (its `permissions`
/// list of names); none if absent.
pub fn permissions_of(rec: &Value) -> Permissions {
    rec["permissions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .filter_map(Permissions::parse_list)
                .fold(Permissions::NONE, Permissions::union)
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_normalise() {
        assert_eq!(
            normalise_url("127.0.0.1:7480").unwrap(),
            "http://127.0.0.1:7480"
        );
        assert_eq!(
            normalise_url("http://gw.local:7480/").unwrap(),
            "http://gw.local:7480"
        );
        assert_eq!(normalise_url("https://gw:7480").unwrap(), "https://gw:7480");
        assert!(normalise_url("ftp://gw").is_err());
        assert!(normalise_url("http://gw:7480/txs").is_err());
        assert!(normalise_url("").is_err());
    }

    #[test]
    fn refusals_read_the_error_body() {
        let body = json!({"error": {"code": "not_permitted", "message": "signer lacks the admin permission"}});
        let r = Refusal::from_answer(403, &body);
        assert_eq!(r.code, "not_permitted");
        assert_eq!(
            r.to_string(),
            "signer lacks the admin permission (not_permitted, HTTP 403)"
        );
        let r = Refusal::from_answer(502, &Value::Null);
        assert_eq!(
            permissions_of(&json!({"permissions": ["connect", "write"]})),
            Permissions::CONNECT.union(Permissions::WRITE)
        );
        assert_eq!(permissions_of(&Value::Null), Permissions::NONE);
        assert_eq!(r.code, "unknown");
        assert!(r.message.contains("502"));
    }

    #[test]
    fn an_absent_gateway_is_reported_as_unreachable() {
        // a port nothing listens on (bound, then released)
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let kp = Keypair::from_seed([3; 32]);
        let api = Api::new(
            &format!("127.0.0.1:{port}"),
            Duration::from_secs(2),
            &kp,
            None,
        )
        .unwrap();
        let e = api.chain_id().unwrap_err().to_string();
        assert!(e.contains("cannot reach the gateway API"), "{e}");
        let e = api
            .submit(
                &kp,
                &ChainId([7; 32]),
                TxKind::Consent {
                    reader: kp.public(),
                    granted: true,
                },
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot reach the gateway API"), "{e}");
    }
}
