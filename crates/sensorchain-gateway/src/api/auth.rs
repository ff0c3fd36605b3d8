//! Login with the chain's identities and the sessions it opens
//! (docs/API.md, "Authentication").
//!
//! 1. `POST /auth/challenge`: the gateway draws a random 32-byte nonce and
//!    an expiry ([`CHALLENGE_TTL_MS`] ahead), keeps them (single use, at
//!    most [`MAX_CHALLENGES`]) and answers them with its chain id and key;
//! 2. the client signs the core's
//!    [`LoginChallenge`](sensorchain_core::login::LoginChallenge) (chain id,
//!    gateway key, its own key, nonce, expiry) with its identity's key;
//! 3. `POST /auth/login`: the gateway takes the nonce out of its table (a
//!    second use finds nothing), checks the signature with the core rule
//!    under the identity's registered key, and that the identity holds
//!    `CONNECT` now; it answers a random 32-byte token (also as the cookie
//!    [`COOKIE`], `HttpOnly; SameSite=Strict; Path=/`, `Secure` under TLS)
//!    valid for [`SESSION_TTL_MS`].
//!
//! A request presents the token as `Authorization: Bearer <hex>` or as the
//! cookie. On **every** request the identity is looked up in the world state
//! as it is then ([`Auth::resolve`]): one that lost `CONNECT` (or whose
//! token expired) is answered 401 and its token dropped, so a revocation
//! ends every session at the next request. Tokens are kept only as their
//! SHA-256 (a lookup's timing says nothing about a valid token), in a table
//! of at most [`MAX_SESSIONS`], at most [`MAX_SESSIONS_PER_IDENTITY`] per
//! identity (its oldest dropped first). The login routes are rate-limited
//! per client address and globally ([`super::ratelimit`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use sensorchain_core::hash::parse_hex;
use sensorchain_core::identity::{PublicKey, Signature};
use sensorchain_core::login::{LoginChallenge, LoginError};
use sensorchain_core::permissions::Permissions;
use sensorchain_core::state::WorldState;

use super::errors::{ApiError, ApiResult, clip};
use super::json::{key_hex, perm_names};
use super::{Api, ok_json};

/// How long a challenge may be answered, in ms.
pub const CHALLENGE_TTL_MS: u64 = 60_000;
/// How long a session token is valid, in ms (15 minutes).
pub const SESSION_TTL_MS: u64 = 15 * 60_000;
/// Most challenges outstanding; beyond, 503 `busy`.
pub const MAX_CHALLENGES: usize = 4096;
/// Most sessions open; beyond, 503 `busy`.
pub const MAX_SESSIONS: usize = 10_000;
/// Most sessions of one identity; a new one ends its oldest.
pub const MAX_SESSIONS_PER_IDENTITY: usize = 16;
/// The session cookie's name.
pub const COOKIE: &str = "sc_session";
/// The permission an identity needs to log in (and keep its session).
pub const LOGIN_PERMISSION: Permissions = Permissions::CONNECT;

/// The time the auth state reads (ms since the Unix epoch); tests inject one.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// An open session.
#[derive(Debug, Clone, Copy)]
struct Session {
    identity: PublicKey,
    issued_ms: u64,
    expires_ms: u64,
}

/// The auth state shared by every request of one API.
#[derive(Clone)]
pub(crate) struct Auth(Arc<Inner>);

struct Inner {
    clock: Clock,
    secure_cookies: bool,
    challenges: Mutex<HashMap<[u8; 32], u64>>,
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    limiter: super::ratelimit::RateLimiter,
}

/// Who a request comes from, as its token says now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Presented {
    /// No token.
    Anonymous,
    /// A token that opens no session now (the reason is answered).
    Invalid(&'static str),
    /// A session of this identity, which holds `CONNECT` now.
    Identity(PublicKey),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn token_hash(token: &[u8; 32]) -> [u8; 32] {
    sensorchain_core::hash::sha256(&[token]).0
}

/// 401 `unauthenticated`.
pub(crate) fn unauthenticated(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
}

/// 403 `forbidden`.
pub(crate) fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

fn busy(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        format!("too many {what} open: retry later"),
    )
}

/// The token a request presents: `Authorization: Bearer <hex>` first, else
/// the cookie. `Some(None)`: a token that is not 64 hex digits.
fn presented_token(headers: &HeaderMap) -> Option<Option<[u8; 32]>> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let v = v.to_str().unwrap_or("");
        let t = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .unwrap_or("");
        return Some(parse_hex::<32>(t.trim()));
    }
    for v in headers.get_all(header::COOKIE) {
        for c in v.to_str().unwrap_or("").split(';') {
            if let Some((k, val)) = c.trim().split_once('=')
                && k == COOKIE
            {
                return Some(parse_hex::<32>(val.trim()));
            }
        }
    }
    None
}

impl Auth {
    /// A fresh auth state reading time from `clock`; `secure_cookies` marks
    /// the cookie `Secure` (the API is served over TLS).
    pub(crate) fn new(clock: Clock, secure_cookies: bool) -> Self {
        let now = clock();
        Auth(Arc::new(Inner {
            clock,
            secure_cookies,
            challenges: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            limiter: super::ratelimit::RateLimiter::new(now),
        }))
    }

    /// The system clock.
    pub(crate) fn system_clock() -> Clock {
        Arc::new(crate::node::now_ms)
    }

    /// Now, by the auth state's clock.
    pub(crate) fn now(&self) -> u64 {
        (self.0.clock)()
    }

    /// True if the API is served over TLS.
    pub(crate) fn secure(&self) -> bool {
        self.0.secure_cookies
    }

    /// Takes a login token of `addr` (429 when its bucket or the global one
    /// is empty).
    pub(crate) fn rate_limit(&self, addr: Option<SocketAddr>) -> ApiResult<()> {
        if self.0.limiter.allow(addr.map(|a| a.ip()), self.now()) {
            Ok(())
        } else {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many login requests: wait a second and retry",
            );
            e.message
                .push_str(" (limit per client address and for all clients)");
            Err(e)
        }
    }

    /// A new challenge: (nonce, expiry).
    fn issue_challenge(&self) -> ApiResult<([u8; 32], u64)> {
        let now = self.now();
        let mut c = lock(&self.0.challenges);
        if c.len() >= MAX_CHALLENGES {
            c.retain(|_, exp| *exp >= now);
            if c.len() >= MAX_CHALLENGES {
                return Err(busy("login challenges"));
            }
        }
        let nonce: [u8; 32] = rand::random();
        let expires = now.saturating_add(CHALLENGE_TTL_MS);
        c.insert(nonce, expires);
        Ok((nonce, expires))
    }

    /// Checks a login and opens a session: (token, expiry).
    fn login(
        &self,
        state: &WorldState,
        gateway: PublicKey,
        req: &LoginRequest,
    ) -> ApiResult<([u8; 32], u64)> {
        let bad = |what: &str, s: &str| {
            ApiError::bad_request(
                "bad_login",
                format!("{what}: {:?} is not {}", clip(s), "valid hex"),
            )
        };
        let key = PublicKey(parse_hex::<32>(req.key.trim()).ok_or_else(|| bad("key", &req.key))?);
        let nonce = parse_hex::<32>(req.challenge.trim())
            .ok_or_else(|| bad("challenge", &req.challenge))?;
        let sig = Signature(
            parse_hex::<64>(req.signature.trim())
                .ok_or_else(|| bad("signature", &req.signature))?,
        );
        let now = self.now();
        // single use: the nonce leaves the table whatever follows
        let issued = lock(&self.0.challenges).remove(&nonce);
        let Some(expires) = issued else {
            return Err(unauthenticated(
                "unknown or already used challenge: ask POST /auth/challenge for a new one",
            ));
        };
        if expires != req.expires_ms {
            return Err(unauthenticated(
                "the signed expiry is not the challenge's: sign the expires_ms the challenge gave",
            ));
        }
        let Some(vk) = state.verifying_key(&key) else {
            return Err(unauthenticated(format!(
                "{key} is not registered on this chain: it cannot log in"
            )));
        };
        let c = LoginChallenge {
            chain_id: *state.chain_id(),
            gateway,
            identity: key,
            nonce,
            expires_ms: expires,
        };
        c.check(vk, &sig, now).map_err(|e| match e {
            LoginError::Expired => unauthenticated("the challenge has expired: ask for a new one"),
            e => unauthenticated(format!(
                "{e} (sign \"sensorchain/login/v1\" with this chain's id and this gateway's key; docs/PROTOCOL.md, \"API login\")"
            )),
        })?;
        if !state.has(&key, LOGIN_PERMISSION) {
            return Err(unauthenticated(format!(
                "{key} does not hold the connect permission: it may not log in"
            )));
        }
        let token: [u8; 32] = rand::random();
        let session = Session {
            identity: key,
            issued_ms: now,
            expires_ms: now.saturating_add(SESSION_TTL_MS),
        };
        let mut s = lock(&self.0.sessions);
        let mine: Vec<([u8; 32], u64)> = s
            .iter()
            .filter(|(_, v)| v.identity == key)
            .map(|(k, v)| (*k, v.issued_ms))
            .collect();
        if mine.len() >= MAX_SESSIONS_PER_IDENTITY
            && let Some((oldest, _)) = mine.iter().min_by_key(|(_, t)| *t)
        {
            s.remove(oldest);
        }
        if s.len() >= MAX_SESSIONS {
            s.retain(|_, v| v.expires_ms >= now);
            if s.len() >= MAX_SESSIONS {
                return Err(busy("sessions"));
            }
        }
        s.insert(token_hash(&token), session);
        Ok((token, session.expires_ms))
    }

    /// Who presents `headers` now: the token's session, checked against
    /// the world state `state` (the identity must still be registered and
    /// hold `CONNECT`; else the session is dropped).
    pub(crate) fn resolve(&self, headers: &HeaderMap, state: &WorldState) -> Presented {
        let token = match presented_token(headers) {
            None => return Presented::Anonymous,
            Some(None) => return Presented::Invalid("the token is not 64 hex digits"),
            Some(Some(t)) => t,
        };
        let h = token_hash(&token);
        let now = self.now();
        let mut s = lock(&self.0.sessions);
        let Some(sess) = s.get(&h).copied() else {
            return Presented::Invalid("unknown or ended session: log in again");
        };
        if now > sess.expires_ms {
            s.remove(&h);
            return Presented::Invalid("the session has expired: log in again");
        }
        if !state.has(&sess.identity, LOGIN_PERMISSION) {
            s.remove(&h);
            return Presented::Invalid(
                "the session has ended: the identity no longer holds the connect permission",
            );
        }
        Presented::Identity(sess.identity)
    }

    /// Ends the session of `headers`' token, if any.
    fn logout(&self, headers: &HeaderMap) {
        if let Some(Some(t)) = presented_token(headers) {
            lock(&self.0.sessions).remove(&token_hash(&t));
        }
    }

    fn cookie(&self, token: Option<&[u8; 32]>) -> HeaderValue {
        let secure = if self.secure() { "; Secure" } else { "" };
        let v = match token {
            Some(t) => format!(
                "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
                ::hex::encode(t),
                SESSION_TTL_MS / 1000
            ),
            None => format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{secure}"),
        };
        HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// The body of `POST /auth/login`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LoginRequest {
    /// The identity's key (64 hex digits).
    key: String,
    /// The challenge's nonce (64 hex digits).
    challenge: String,
    /// The challenge's expiry, as the challenge gave it.
    expires_ms: u64,
    /// The signature (128 hex digits).
    signature: String,
}

/// `POST /auth/challenge`.
pub(super) async fn challenge(State(api): State<Api>) -> ApiResult {
    let (nonce, expires) = api.auth.issue_challenge()?;
    let state = api.node.state();
    ok_json(json!({
        "challenge": ::hex::encode(nonce),
        "expires_ms": expires,
        "chain_id": state.chain_id().to_string(),
        "gateway": key_hex(&api.node.public()),
        "sign": "Ed25519 over 0x14 || \"sensorchain/login/v1\" || chain_id || gateway || key || challenge || expires_ms (u64 LE); docs/PROTOCOL.md, \"API login\"",
    }))
}

/// `POST /auth/login`.
pub(super) async fn login(
    State(api): State<Api>,
    body: Result<axum::Json<LoginRequest>, JsonRejection>,
) -> ApiResult {
    let axum::Json(req) = body.map_err(|e| {
        ApiError::bad_request(
            "bad_json",
            format!(
                "expected {{\"key\", \"challenge\", \"expires_ms\", \"signature\"}}: {}",
                clip(&e.body_text())
            ),
        )
    })?;
    let state = api.node.state();
    let (token, expires) = match api.auth.login(&state, api.node.public(), &req) {
        Ok(x) => x,
        Err(e) => {
            tracing::info!(key = %clip(&req.key), reason = %e.message, "API login refused");
            return Err(e);
        }
    };
    let key = PublicKey(parse_hex::<32>(req.key.trim()).unwrap_or([0; 32]));
    let rec = state.identity(&key);
    tracing::info!(key = %key, "API login");
    let mut r = axum::Json(json!({
        "token": ::hex::encode(token),
        "expires_ms": expires,
        "key": key_hex(&key),
        "address": key.address().to_string(),
        "role": rec.and_then(|r| r.role).map(|r| r.name()),
        "permissions": perm_names(state.permissions(&key)),
    }))
    .into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, api.auth.cookie(Some(&token)));
    Ok(r)
}

/// `POST /auth/logout`: ends the presented session (if any) and clears the
/// cookie; always 204.
pub(super) async fn logout(State(api): State<Api>, headers: HeaderMap) -> Response {
    api.auth.logout(&headers);
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, api.auth.cookie(None));
    r
}

/// `GET /auth/session`: who the session is, as the world state says now.
pub(super) async fn session(
    State(api): State<Api>,
    axum::Extension(caller): axum::Extension<super::access::Caller>,
) -> ApiResult {
    let Some(key) = caller.key else {
        return Err(unauthenticated("log in first"));
    };
    let rec = caller.state.identity(&key);
    ok_json(json!({
        "key": key_hex(&key),
        "address": key.address().to_string(),
        "role": rec.and_then(|r| r.role).map(|r| r.name()),
        "permissions": perm_names(caller.state.permissions(&key)),
        "gateway": key_hex(&api.node.public()),
    }))
}
