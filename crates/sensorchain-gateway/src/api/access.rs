//! Who may read what: every route's [`Rule`], decided per request against
//! the world state as it is then (docs/API.md, "Access control", holds the
//! route × role table; `api::tests::route_role_matrix` checks every route
//! of the router against it).
//!
//! The rules reuse the ledger's own: "may read a device's readings" is
//! [`WorldState::may_read`], the rule that decides who may be a recipient
//! of a sealed reading (the device's patient, or a reader that patient
//! consented to, each holding `RECEIVE`). Permissions decide the rest:
//! `ADMIN` manages identities and sees the directory (identities, votes,
//! consents) but no readings; `VALIDATE` (gateways) and `AUDIT` (auditors)
//! read block bodies; headers, finality certificates and proofs are public.
//!
//! [`enforce`] runs before each route's handler: it resolves the session
//! ([`Auth::resolve`](super::auth::Auth::resolve)), applies the route's
//! rule, hands the handler a [`Caller`], and records every read of a
//! patient's data (allowed, or refused by a rule) in the access log
//! ([`super::access_log`]) **before** the answer leaves.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{ConnectInfo, Query, RawPathParams, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use sensorchain_core::access_log::{AccessKind, Outcome};
use sensorchain_core::hash::Hash32;
use sensorchain_core::identity::PublicKey;
use sensorchain_core::permissions::Permissions;
use sensorchain_core::state::WorldState;

use super::Api;
use super::auth::{Presented, forbidden, unauthenticated};
use super::errors::ApiError;
use super::params::parse_key;

/// The all-zero key: "every patient" / "no device" / "anonymous" in a
/// log entry.
pub(crate) const NOBODY: PublicKey = PublicKey([0; 32]);

/// Who asks, handed to handlers: the session's identity (`None`:
/// anonymous) and the world state the decision was made on.
#[derive(Clone)]
pub(crate) struct Caller {
    /// The identity, if the request carries a live session.
    pub(crate) key: Option<PublicKey>,
    /// The world state at the time of the check.
    pub(crate) state: Arc<WorldState>,
}

impl Caller {
    fn perms(&self) -> Permissions {
        self.key
            .map(|k| self.state.permissions(&k))
            .unwrap_or_default()
    }

    fn any(&self, p: Permissions) -> bool {
        !self.perms().intersect(p).is_empty()
    }

    /// Holds `ADMIN`, `VALIDATE` or `AUDIT`: sees the identity directory.
    pub(crate) fn sees_directory(&self) -> bool {
        self.any(
            Permissions::ADMIN
                .union(Permissions::VALIDATE)
                .union(Permissions::AUDIT),
        )
    }

    /// Holds `VALIDATE` or `AUDIT`: reads whole block bodies.
    pub(crate) fn reads_bodies(&self) -> bool {
        self.any(Permissions::VALIDATE.union(Permissions::AUDIT))
    }

    /// Holds `AUDIT`.
    pub(crate) fn audits(&self) -> bool {
        self.any(Permissions::AUDIT)
    }

    /// May read `device`'s readings: the ledger's recipient rule
    /// ([`WorldState::may_read`]).
    pub(crate) fn may_read(&self, device: &PublicKey) -> bool {
        self.key.is_some_and(|k| self.state.may_read(device, &k))
    }

    /// The devices whose readings this caller may read, ordered by key.
    pub(crate) fn readable_devices(&self) -> Vec<PublicKey> {
        let Some(k) = self.key else { return Vec::new() };
        self.state
            .identities()
            .filter(|(_, r)| r.patient.is_some())
            .map(|(d, _)| *d)
            .filter(|d| self.state.may_read(d, &k))
            .collect()
    }

    /// The patient `device` is assigned to (zero if none).
    pub(crate) fn patient_of(&self, device: &PublicKey) -> PublicKey {
        self.state
            .identity(device)
            .and_then(|r| r.patient)
            .unwrap_or(NOBODY)
    }
}

/// The access rule of a route (docs/API.md, "Access control").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Anyone, no session needed: says nothing about a reading's content.
    Public,
    /// Anyone, rate-limited per client address and globally (login).
    Login,
    /// Anyone: a signed transaction authenticates itself.
    SignedTx,
    /// Any live session.
    Session,
    /// `ADMIN`, `VALIDATE` or `AUDIT`: the identity directory.
    Directory,
    /// The identity itself, anyone who may read its readings (a device's
    /// patient and consented readers), or [`Rule::Directory`].
    Identity,
    /// Whoever may read the device's readings ([`WorldState::may_read`]).
    /// Logged.
    Readings,
    /// The readings of every device the caller may read (refused if none).
    /// Logged per device.
    AllReadings,
    /// A reading transaction: [`Rule::Readings`] or [`Rule::BlockBody`];
    /// another transaction: [`Rule::Directory`] or an identity it names.
    /// Decided by the handler, which reads the transaction. Reads of
    /// readings logged.
    Tx,
    /// `VALIDATE` or `AUDIT`: whole block bodies. Logged.
    BlockBody,
    /// A patient's own access log, or `AUDIT` holders'.
    AccessLog,
    /// `AUDIT` only: the raw access log of every patient.
    Audit,
    /// `ADMIN` only: operating the cluster (its membership).
    Admin,
}

impl Rule {
    /// The rule's name in docs/API.md.
    pub fn name(self) -> &'static str {
        match self {
            Rule::Public => "public",
            Rule::Login => "login",
            Rule::SignedTx => "signed-tx",
            Rule::Session => "session",
            Rule::Directory => "directory",
            Rule::Identity => "identity",
            Rule::Readings => "readings",
            Rule::AllReadings => "all-readings",
            Rule::Tx => "tx",
            Rule::BlockBody => "block-body",
            Rule::AccessLog => "access-log",
            Rule::Audit => "audit",
            Rule::Admin => "admin",
        }
    }
}

/// One route of the router and its rule (the router is built from these:
/// a route cannot be added without one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRow {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// The path as registered, with `{params}`.
    pub path: &'static str,
    /// Its access rule.
    pub rule: Rule,
}

/// What a read of a patient's data is recorded as (the entry's number,
/// time, reader and outcome are added when it is written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Note {
    pub(crate) patient: PublicKey,
    pub(crate) device: PublicKey,
    pub(crate) kind: AccessKind,
    pub(crate) stream: Option<u16>,
    pub(crate) from: u64,
    pub(crate) to: u64,
    pub(crate) subject: Hash32,
}

impl Note {
    pub(crate) fn readings(
        c: &Caller,
        device: PublicKey,
        stream: Option<u16>,
        from: u64,
        to: u64,
    ) -> Note {
        Note {
            patient: c.patient_of(&device),
            device,
            kind: AccessKind::Readings,
            stream,
            from,
            to,
            subject: Hash32::ZERO,
        }
    }
}

/// Notes a handler attaches to its answer (a response extension), to be
/// logged with the outcome its status says (2xx allowed, 403 refused).
#[derive(Debug, Clone, Default)]
pub(crate) struct Notes(pub(crate) Vec<Note>);

/// A decision: the notes to log, or the refusal and its notes.
type Decision = Result<Vec<Note>, (ApiError, Vec<Note>)>;

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// How a `{key}` parameter resolves.
enum KeyParam {
    /// Not a key or address at all: the handler answers 400.
    Malformed,
    /// Parses, but names no registered identity.
    Unknown,
    /// A registered identity.
    Known(PublicKey),
}

fn key_param(state: &WorldState, s: Option<&str>) -> KeyParam {
    match s.map(|s| parse_key(state, s)) {
        None => KeyParam::Malformed,
        Some(Err(e)) if e.code == "bad_key" => KeyParam::Malformed,
        Some(Err(_)) => KeyParam::Unknown,
        Some(Ok(pk)) if state.identity(&pk).is_some() => KeyParam::Known(pk),
        Some(Ok(_)) => KeyParam::Unknown,
    }
}

fn query_u64(q: &HashMap<String, String>, k: &str) -> Option<u64> {
    q.get(k).and_then(|v| v.parse().ok())
}

/// The rule `rule` for the live session `c` (its key is set), with the
/// route's path parameters and query.
fn decide(
    rule: Rule,
    c: &Caller,
    params: &[(String, String)],
    q: &HashMap<String, String>,
) -> Decision {
    let me = c.key.unwrap_or(NOBODY);
    let no = |what: &str| (forbidden(format!("{me} may not read {what}")), Vec::new());
    match rule {
        Rule::Public | Rule::Login | Rule::SignedTx | Rule::Session | Rule::Tx => Ok(Vec::new()),
        Rule::Directory => {
            if c.sees_directory() {
                Ok(Vec::new())
            } else {
                Err(no(
                    "the identity directory (admin, validate or audit is needed)",
                ))
            }
        }
        Rule::Identity => {
            if c.sees_directory() {
                return Ok(Vec::new());
            }
            match key_param(&c.state, param(params, "key")) {
                KeyParam::Malformed => Ok(Vec::new()),
                KeyParam::Known(k) if k == me || c.may_read(&k) => Ok(Vec::new()),
                _ => Err(no("this identity")),
            }
        }
        Rule::Readings => match key_param(&c.state, param(params, "key")) {
            KeyParam::Malformed => Ok(Vec::new()),
            KeyParam::Unknown => Err(no("this device's readings")),
            KeyParam::Known(d) => {
                let stream = param(params, "stream").and_then(|s| s.parse::<u16>().ok());
                let from = query_u64(q, "from").unwrap_or(0);
                let to = query_u64(q, "to").unwrap_or(u64::MAX);
                let note = Note::readings(c, d, stream, from, to);
                if c.may_read(&d) {
                    Ok(vec![note])
                } else {
                    Err((
                        forbidden(format!(
                            "{me} may not read {d}'s readings: only its patient and the readers \
                             the patient consented to (holding receive) may"
                        )),
                        vec![note],
                    ))
                }
            }
        },
        Rule::AllReadings => {
            if c.readable_devices().is_empty() {
                Err(no("any device's readings"))
            } else {
                Ok(Vec::new())
            }
        }
        Rule::BlockBody => {
            let h = param(params, "height").and_then(|s| s.parse::<u64>().ok());
            let note = h.map(|h| Note {
                patient: NOBODY,
                device: NOBODY,
                kind: AccessKind::BlockBody,
                stream: None,
                from: h,
                to: h,
                subject: Hash32::ZERO,
            });
            if c.reads_bodies() {
                Ok(note.into_iter().collect())
            } else {
                Err((
                    forbidden(format!(
                        "{me} may not read block bodies (they hold readings): validate or audit is needed"
                    )),
                    note.into_iter().collect(),
                ))
            }
        }
        Rule::AccessLog => {
            let patient = q
                .get("patient")
                .and_then(|s| sensorchain_core::hash::parse_hex::<32>(s))
                .map(PublicKey);
            match patient {
                Some(p) if p == me => Ok(Vec::new()),
                Some(p) if c.audits() => Ok(vec![Note {
                    patient: p,
                    device: NOBODY,
                    kind: AccessKind::AccessLog,
                    stream: None,
                    from: 0,
                    to: u64::MAX,
                    subject: Hash32::ZERO,
                }]),
                None if c.audits() => Ok(Vec::new()),
                _ => Err(no(
                    "this access log (only the patient's own, or with audit)",
                )),
            }
        }
        Rule::Audit => {
            if c.audits() {
                Ok(Vec::new())
            } else {
                Err(no("the whole access log (audit is needed)"))
            }
        }
        Rule::Admin => {
            if c.any(Permissions::ADMIN) {
                Ok(Vec::new())
            } else {
                Err(no("the cluster's operation (admin is needed)"))
            }
        }
    }
}

/// The middleware before every route (see the [module](self)).
pub(super) async fn enforce(
    State((api, rule)): State<(Api, Rule)>,
    params: Result<RawPathParams, RawPathParamsRejection>,
    mut req: Request,
    next: Next,
) -> Response {
    let state = api.node.state();
    let presented = api.auth.resolve(req.headers(), &state);
    let key = match presented {
        Presented::Identity(k) => Some(k),
        _ => None,
    };
    let caller = Caller { key, state };
    req.extensions_mut().insert(caller.clone());
    match rule {
        Rule::Public | Rule::SignedTx => return next.run(req).await,
        Rule::Login => {
            let peer = req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(a)| *a);
            if let Err(e) = api.auth.rate_limit(peer) {
                return e.into_response();
            }
            return next.run(req).await;
        }
        _ => {}
    }
    let Some(me) = key else {
        let why = match presented {
            Presented::Invalid(r) => r,
            _ => {
                "this route needs a session: log in with POST /auth/challenge and POST /auth/login \
                 (docs/API.md, \"Authentication\")"
            }
        };
        return unauthenticated(why).into_response();
    };
    let params: Vec<(String, String)> = params
        .map(|p| {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default();
    let q: HashMap<String, String> = Query::try_from_uri(req.uri())
        .map(|Query(q)| q)
        .unwrap_or_default();
    match decide(rule, &caller, &params, &q) {
        Err((e, notes)) => {
            if let Err(le) = api.log.record(me, &notes, Outcome::Refused).await {
                return le.into_response();
            }
            e.into_response()
        }
        Ok(mut notes) => {
            let res = next.run(req).await;
            let status = res.status();
            if let Some(Notes(more)) = res.extensions().get::<Notes>() {
                notes.extend_from_slice(more);
            }
            let outcome = if status.is_success() {
                Outcome::Allowed
            } else if status == StatusCode::FORBIDDEN {
                Outcome::Refused
            } else {
                // nothing was read (a bad parameter, an unknown block, …)
                return res;
            };
            if let Err(le) = api.log.record(me, &notes, outcome).await {
                return le.into_response();
            }
            res
        }
    }
}

/// The Content-Security-Policy of every answer (strict: the dashboard to
/// come loads its own scripts, styles and WebAssembly only).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Security headers on every answer: CSP, `nosniff`, no referrer, no
/// framing, `no-store` (answers may hold vitals; the dashboard's static
/// assets alone set their own `Cache-Control`), HSTS under TLS. No CORS
/// header is ever sent, so browsers keep other origins out.
pub(super) async fn security_headers(State(secure): State<bool>, mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // `no-store` unless the handler chose otherwise (only the dashboard's
    // embedded assets do: they hold nothing of a patient)
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if secure {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    for name in [
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        header::ACCESS_CONTROL_ALLOW_METHODS,
        header::ACCESS_CONTROL_ALLOW_HEADERS,
    ] {
        h.remove(name);
    }
    res
}

/// The [`Rule::Tx`] decision on one transaction `tx` (id `id`, at `loc`):
/// whether `c` may read it, and what the access log records (a reading's
/// read, allowed or refused).
pub(crate) fn tx_decision(
    c: &Caller,
    tx: &sensorchain_core::tx::Transaction,
    id: Hash32,
    loc: crate::store::TxLocation,
) -> (bool, Vec<Note>) {
    use sensorchain_core::tx::TxKind;
    let me = c.key.unwrap_or(NOBODY);
    let signer = tx.body.signer;
    let named = |keys: &[PublicKey]| c.key.is_some() && (me == signer || keys.contains(&me));
    match &tx.body.kind {
        TxKind::Reading { stream, .. } => {
            let note = Note {
                patient: c.patient_of(&signer),
                device: signer,
                kind: AccessKind::Transaction,
                stream: Some(*stream),
                from: loc.height,
                to: u64::from(loc.index),
                subject: id,
            };
            (c.may_read(&signer) || c.reads_bodies(), vec![note])
        }
        TxKind::Grant { target, .. }
        | TxKind::Revoke { target, .. }
        | TxKind::SetRole { target, .. } => (c.sees_directory() || named(&[*target]), Vec::new()),
        TxKind::AssignDevice { device, patient } => (
            c.sees_directory() || named(&[*device, *patient]),
            Vec::new(),
        ),
        TxKind::Consent { reader, .. } => (c.sees_directory() || named(&[*reader]), Vec::new()),
        _ => (c.sees_directory(), Vec::new()),
    }
}

/// A 403 answer carrying `notes` for the access log.
pub(crate) fn refused_with(e: ApiError, notes: Vec<Note>) -> Response {
    let mut r = e.into_response();
    r.extensions_mut().insert(Notes(notes));
    r
}

/// Attaches `notes` (reads that were served) to an answer.
pub(crate) fn with_notes(mut r: Response, notes: Vec<Note>) -> Response {
    r.extensions_mut().insert(Notes(notes));
    r
}
