//! Where the audit and the export (`sensorchain audit`, `sensorchain
//! export`) read a chain from: a
//! stopped gateway's data directory (read-only), or a running gateway's HTTP
//! API (the gateway holds its store exclusively). Both give the same records, the exact stored bytes of
//! each block and certificate, to one validation path
//! ([`audit_source`](crate::audit::audit_source)) and one container writer
//! ([`write_container`](crate::export::write_container)).
//!
//! Through the API, logged in with a key that holds `audit` or `validate`
//! (block bodies need one: docs/API.md, "Access control"):
//! `GET /chain/head` for the head record, then per block
//! `GET /blocks/{h}/raw` (the exact stored bytes) and `GET /blocks/{h}` (its
//! finality certificate, whose strict postcard encoding is the stored bytes:
//! the store decodes certificates strictly, so a stored certificate that
//! decodes re-encodes to itself). The store's own indexes are not reachable
//! through the API: an audit through it checks every block, certificate and
//! the head record, not the indexes (the report says so).

use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use sensorchain_core::block::{Block, FinalityCert, FinalityVote};
use sensorchain_core::codec;
use sensorchain_core::hash::{Hash32, parse_hex};
use sensorchain_core::identity::{KeyId, Keypair, Signature};
use serde_json::Value;

use crate::store::{BLOCK_MAX_LEN, Head, Store, StoreError, StoredBlock};

/// A chain to read.
pub enum ChainSource<'a> {
    /// A store opened read-only.
    Store(&'a Store),
    /// A running gateway's API.
    Api(ApiChain),
}

/// A gateway's API, read as a chain (see the [module](self)).
pub struct ApiChain {
    base: String,
    session: Box<crate::login_client::ApiSession>,
    head: Option<Head>,
}

fn api_error(what: String) -> StoreError {
    StoreError::Io(std::io::Error::other(what))
}

fn hex_field<const N: usize>(v: &Value, key: &str, what: &str) -> Result<[u8; N], StoreError> {
    v[key].as_str().and_then(parse_hex::<N>).ok_or_else(|| {
        api_error(format!(
            "{what}: field {key:?} missing or not {N} bytes of hex"
        ))
    })
}

impl ApiChain {
    /// Connects to the API at `url` (`http(s)://HOST:PORT` or `HOST:PORT`),
    /// logs in as `key` (it needs `audit` or `validate` to read block
    /// bodies; `ca`: a PEM file of certificates to trust for `https`) and
    /// reads its head record.
    pub fn connect(url: &str, key: &Keypair, ca: Option<&Path>) -> anyhow::Result<ApiChain> {
        let base = normalise_url(url)?;
        let agent = crate::login_client::agent(Duration::from_secs(60), ca)?;
        let session = Box::new(crate::login_client::ApiSession::new(
            agent,
            base.clone(),
            key.clone(),
        ));
        session.login()?;
        let mut chain = ApiChain {
            base,
            session,
            head: None,
        };
        let (status, v) = chain.get_json("/chain/head")?;
        chain.head = match status {
            200 => {
                let u = |k: &str| {
                    v[k].as_u64().ok_or_else(|| {
                        anyhow::anyhow!("GET /chain/head: field {k:?} missing ({v})")
                    })
                };
                Some(Head {
                    height: u("height")?,
                    hash: Hash32(hex_field(&v, "hash", "GET /chain/head")?),
                    timestamp_ms: u("timestamp_ms")?,
                    tx_count_total: u("tx_count_total")?,
                    reading_count_total: u("reading_count_total")?,
                })
            }
            // the gateway has no block yet
            503 => None,
            s => anyhow::bail!("GET {}/chain/head answered {s}: {v}", chain.base),
        };
        Ok(chain)
    }

    /// The API's base address.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn call(&self, path: &str) -> Result<ureq::http::Response<ureq::Body>, StoreError> {
        self.session.get(path).map_err(|e| {
            api_error(format!(
                "{e:#} (is `sensorchain run` up, and does the key hold audit or validate?)"
            ))
        })
    }

    fn get_json(&self, path: &str) -> Result<(u16, Value), StoreError> {
        let mut r = self.call(path)?;
        let status = r.status().as_u16();
        let v = r
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_json::<Value>()
            .map_err(|e| api_error(format!("GET {path}: not JSON: {e}")))?;
        Ok((status, v))
    }

    /// The stored record of block `h`: its exact bytes and certificate.
    pub fn entry(&self, h: u64) -> Result<StoredBlock, StoreError> {
        let path = format!("/blocks/{h}/raw");
        let mut r = self.call(&path)?;
        if r.status() != 200 {
            let status = r.status().as_u16();
            let body = r.body_mut().read_to_string().unwrap_or_default();
            return Err(api_error(format!("GET {path} answered {status}: {body}")));
        }
        let bytes = r
            .body_mut()
            .with_config()
            .limit(BLOCK_MAX_LEN as u64 + 1)
            .read_to_vec()
            .map_err(|e| api_error(format!("GET {path}: {e}")))?;
        let (status, v) = self.get_json(&format!("/blocks/{h}"))?;
        if status != 200 {
            return Err(api_error(format!("GET /blocks/{h} answered {status}: {v}")));
        }
        let cert = match &v["finality_cert"] {
            Value::Null => None,
            c => Some(codec::encode_to_vec(&cert_of_json(h, c)?)),
        };
        Ok(StoredBlock {
            height: h,
            bytes,
            cert,
        })
    }
}

/// A certificate from the API's JSON (`GET /blocks/{h}`'s `finality_cert`).
fn cert_of_json(h: u64, c: &Value) -> Result<FinalityCert, StoreError> {
    let what = format!("the certificate of block {h}");
    let mut cert = FinalityCert {
        height: c["height"]
            .as_u64()
            .ok_or_else(|| api_error(format!("{what}: no height")))?,
        block_hash: Hash32(hex_field(c, "block_hash", &what)?),
        votes: Default::default(),
    };
    for v in c["votes"].as_array().into_iter().flatten() {
        let vote = FinalityVote {
            validator: KeyId(hex_field(v, "validator_key_id", &what)?),
            signature: Signature(hex_field(v, "signature", &what)?),
        };
        cert.votes
            .push(vote)
            .map_err(|_| api_error(format!("{what}: too many votes")))?;
    }
    Ok(cert)
}

impl ChainSource<'_> {
    /// The head record.
    pub fn head(&self) -> Result<Option<Head>, StoreError> {
        match self {
            ChainSource::Store(s) => s.head(),
            ChainSource::Api(a) => Ok(a.head),
        }
    }

    /// The stored blocks from genesis on, with their certificates: from one
    /// read snapshot of a store; through the API, heights `0..=head` as of
    /// [`ApiChain::connect`].
    pub fn entries(&self) -> Box<dyn Iterator<Item = Result<StoredBlock, StoreError>> + '_> {
        match self {
            ChainSource::Store(s) => Box::new(s.chain_entries(0)),
            ChainSource::Api(a) => {
                let end = a.head.map_or(0, |h| h.height + 1);
                let mut failed = false;
                Box::new((0..end).map_while(move |h| {
                    if failed {
                        return None;
                    }
                    let e = a.entry(h);
                    failed = e.is_err();
                    Some(e)
                }))
            }
        }
    }

    /// [`Store::check_block_index`] on a store; nothing through the API
    /// (its indexes are not reachable there).
    pub fn check_block_index(
        &self,
        height: u64,
        bytes: &[u8],
        block: &Block,
        encoded: &[Vec<u8>],
    ) -> Result<Option<String>, StoreError> {
        match self {
            ChainSource::Store(s) => s.check_block_index(height, bytes, block, encoded),
            ChainSource::Api(_) => Ok(None),
        }
    }

    /// Checks that every table of a store exists (nothing through the API).
    pub fn check_tables_exist(&self) -> Result<(), StoreError> {
        match self {
            ChainSource::Store(s) => s.check_tables_exist(),
            ChainSource::Api(_) => Ok(()),
        }
    }

    /// What is read, for reports: the store's file or the API's address.
    pub fn describe(&self) -> String {
        match self {
            ChainSource::Store(s) => s.path().display().to_string(),
            ChainSource::Api(a) => format!(
                "{} (through the API; the store's indexes are not checked)",
                a.base
            ),
        }
    }
}

/// Normalises an API address: `HOST:PORT` gets `http://`, a trailing `/`
/// goes; `http://` and `https://` are accepted.
pub fn normalise_url(url: &str) -> anyhow::Result<String> {
    let url = url.trim().trim_end_matches('/');
    if url.is_empty() {
        bail!("empty API address (expected http://HOST:PORT or https://HOST:PORT)");
    }
    for scheme in ["http://", "https://"] {
        if let Some(rest) = url.strip_prefix(scheme) {
            if rest.is_empty() || rest.contains('/') {
                bail!("{url}: expected {scheme}HOST:PORT (no path)");
            }
            return Ok(url.to_string());
        }
    }
    if url.contains("://") {
        bail!("{url}: only http:// and https:// API addresses are supported");
    }
    normalise_url(&format!("http://{url}"))
}
