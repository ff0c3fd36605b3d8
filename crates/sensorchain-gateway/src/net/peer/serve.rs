//! The listening side of peer links: [`PeerServer::run`] accepts TCP
//! connections on the cluster's own address and serves each as the
//! responder of a peer link.
//!
//! 1. **Handshake** (within [`PeerConfig::handshake_timeout`] of the
//!    connection): message 1 must carry the peer link's byte (a device's
//!    is refused `VersionMismatch`); its key id must be admitted by the
//!    [`PeerService`] — a gateway's key holding `VALIDATE` and `CONNECT`
//!    ([`crate::cluster::network::admit_validator`], [`crate::cluster::network::admit_member`]) — before any cryptography;
//!    then a session slot ([`PeerConfig::max_sessions`], else `Busy`) and a
//!    half-open slot in the server's table ([`PeerConfig::max_half_open`],
//!    else `Busy`), both under a lock held for a few comparisons; message
//!    2 and the check of message 3 run on tokio's blocking pool; the key
//!    is admitted once more after message 3. A refusal goes in clear and
//!    the link is closed.
//! 2. **One session per key**: a newer session of the same key ends the
//!    older one (a close frame).
//! 3. **Requests**: each is served in its own task
//!    ([`PeerService::serve`]), at most [`PeerConfig::max_inflight`] at
//!    once per link (beyond, the link stops reading); answers go out as
//!    they are ready, in any order. Before each request, and every
//!    [`PeerConfig::recheck_every`], and at [`PeerServer::recheck`], the
//!    key's admission is checked again: a key that lost it (its `VALIDATE`
//!    revoked) gets `Refused(Revoked)` in clear and its link is closed; its
//!    requests in flight are abandoned.
//! 4. **Shutdown**: the listener stops; every session sends
//!    `Refused(ShuttingDown)` and closes; [`PeerServer::run`] returns once
//!    all its links are joined (those that do not end within a second are
//!    aborted).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use sensorchain_core::handshake::{
    Allowlist, Denial, HandshakeError, MESSAGE2_LEN, Responder, ResponderTable,
};
use sensorchain_core::identity::{KeyId, PublicKey, VerifyingKey};
use sensorchain_core::link::{Refusal, refusal_for};
use sensorchain_core::peer::{PeerConnection, PeerEvent, Violation, message_id};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{PeerConfig, blocking, stopped};
use crate::net::mono_ms;

/// Bytes read from the socket at once.
const READ_CHUNK: usize = 64 * 1024;
/// Capacity of the server's half-open table (the configured
/// `max_half_open` is clamped to it).
const HALF_OPEN_CAPACITY: usize = 64;
/// Initiator ephemeral keys remembered against replayed message 1s.
const REPLAY_CACHE: usize = 1024;

type Table = ResponderTable<HALF_OPEN_CAPACITY, REPLAY_CACHE>;

/// What a peer listener serves: who may hold a session, and the answer to
/// each request.
pub trait PeerService: Send + Sync + 'static {
    /// The registered key of `id` if that identity may hold a peer session
    /// now, else why not. Called for every message 1 (before any
    /// cryptography), after message 3, before every request and at every
    /// recheck: it should be a few map lookups.
    fn admit(&self, id: &KeyId) -> Result<VerifyingKey, Denial>;

    /// Serves one request message (a whole [`PeerRequest`] with its id,
    /// undecoded) from the authenticated peer `from`; resolves to the
    /// encoded [`Answer`] body (the server puts the request's id in front
    /// of it). A request that does not decode is answered
    /// [`Answer::Malformed`].
    ///
    /// [`PeerRequest`]: sensorchain_core::peer::PeerRequest
    /// [`Answer`]: sensorchain_core::peer::Answer
    /// [`Answer::Malformed`]: sensorchain_core::peer::Answer::Malformed
    fn serve(&self, from: PublicKey, request: Vec<u8>) -> BoxFuture<'static, Vec<u8>>;
}

/// A [`PeerService`]'s admission as core's [`Allowlist`].
struct Admission<'a>(&'a dyn PeerService);

impl Allowlist for Admission<'_> {
    fn lookup(&self, id: &KeyId) -> Result<VerifyingKey, Denial> {
        self.0.admit(id)
    }
}

/// The responder side of a gateway's peer links (cheap to clone).
#[derive(Clone)]
pub struct PeerServer {
    inner: Arc<Server>,
}

struct Server {
    cfg: Arc<PeerConfig>,
    service: Arc<dyn PeerService>,
    table: Mutex<Box<Table>>,
    sessions: Arc<Semaphore>,
    /// The live session of each key: its number and the signal that ends
    /// it.
    live: Mutex<HashMap<PublicKey, (u64, oneshot::Sender<()>)>>,
    next_session: AtomicU64,
    recheck: watch::Sender<u64>,
}

impl std::fmt::Debug for PeerServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerServer")
            .field("sessions", &self.sessions())
            .finish_non_exhaustive()
    }
}

impl PeerServer {
    /// A server of `service` (start it with [`run`](Self::run)).
    pub fn new(cfg: Arc<PeerConfig>, service: Arc<dyn PeerService>) -> PeerServer {
        let (recheck, _) = watch::channel(0);
        PeerServer {
            inner: Arc::new(Server {
                sessions: Arc::new(Semaphore::new(cfg.max_sessions.max(1))),
                cfg,
                service,
                table: Mutex::new(Box::new(Table::new())),
                live: Mutex::new(HashMap::new()),
                next_session: AtomicU64::new(0),
                recheck,
            }),
        }
    }

    /// Peer sessions established now.
    pub fn sessions(&self) -> usize {
        lock(&self.inner.live).len()
    }

    /// Whether `key` holds a session now.
    pub fn has_session(&self, key: &PublicKey) -> bool {
        lock(&self.inner.live).contains_key(key)
    }

    /// Checks every live session's admission now (call it when
    /// permissions change): a key no longer admitted is refused
    /// `Revoked` and its link closed.
    pub fn recheck(&self) {
        self.inner.recheck.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Accepts and serves links on `listener` until `shutdown` turns true
    /// (or its sender is dropped); then ends every session
    /// (`Refused(ShuttingDown)`) and joins every link (aborting those
    /// still running after a second).
    pub async fn run(self, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
        let mut links = JoinSet::new();
        loop {
            tokio::select! {
                biased;
                _ = stopped(&mut shutdown) => break,
                Some(_) = links.join_next(), if !links.is_empty() => {}
                r = listener.accept() => match r {
                    Ok((stream, addr)) => {
                        let _ = stream.set_nodelay(true);
                        let server = self.inner.clone();
                        links.spawn(serve_link(server, stream, addr, shutdown.clone()));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "peer listener: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
        drop(listener);
        let joined = tokio::time::timeout(Duration::from_secs(1), async {
            while links.join_next().await.is_some() {}
        })
        .await;
        if joined.is_err() {
            links.abort_all();
            while links.join_next().await.is_some() {}
        }
    }
}

/// Starts a peer server of `service` on `listener`, its task spawned into
/// `tasks`; returns its handle.
pub fn serve_peers(
    listener: TcpListener,
    cfg: Arc<PeerConfig>,
    service: Arc<dyn PeerService>,
    shutdown: watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) -> PeerServer {
    let server = PeerServer::new(cfg, service);
    tasks.spawn(server.clone().run(listener, shutdown));
    server
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A handshake's half-open slot, released however the link ends.
struct HalfOpen<'s> {
    server: &'s Server,
    responder: Option<Responder>,
}

impl Drop for HalfOpen<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.responder.take() {
            lock(&self.server.table).release(r.into_slot());
        }
    }
}

/// One link: handshake, then its session.
async fn serve_link(
    server: Arc<Server>,
    stream: TcpStream,
    addr: SocketAddr,
    shutdown: watch::Receiver<bool>,
) {
    let mut link = Link {
        server: &server,
        conn: PeerConnection::responder(server.cfg.handshake()),
        stream,
        buf: vec![0u8; READ_CHUNK],
        start: 0,
        end: 0,
        shutdown,
    };
    let deadline = Instant::now() + server.cfg.handshake_timeout;
    let opened = tokio::time::timeout_at(deadline, link.handshake()).await;
    let (peer, permit) = match opened {
        Ok(Some(open)) => open,
        Ok(None) => {
            link.flush_last().await;
            return;
        }
        Err(_) => {
            tracing::debug!(%addr, "peer listener: handshake timed out");
            link.conn.refuse(Refusal::HandshakeFailed);
            link.flush_last().await;
            return;
        }
    };
    tracing::debug!(%addr, %peer, "peer listener: session established");
    let why = link.session(peer).await;
    tracing::debug!(%addr, %peer, why = %why, "peer listener: session ended");
    drop(permit);
}

struct Link<'s> {
    server: &'s Server,
    conn: PeerConnection,
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    shutdown: watch::Receiver<bool>,
}

impl Link<'_> {
    /// Writes what the connection queued (bounded by the write timeout).
    async fn flush(&mut self) -> Result<(), ()> {
        while self.conn.has_transmit() {
            let out = self.conn.transmit();
            let n = out.len();
            match tokio::time::timeout(self.server.cfg.write_timeout, self.stream.write_all(out))
                .await
            {
                Ok(Ok(())) => self.conn.advance(n),
                _ => return Err(()),
            }
        }
        Ok(())
    }

    /// Best effort for the last bytes (a refusal, a close frame): at most
    /// a second.
    async fn flush_last(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = self.flush().await;
            let _ = self.stream.shutdown().await;
        })
        .await;
    }

    /// Reads more when everything read was taken; false at EOF or error.
    async fn fill(&mut self) -> bool {
        if self.start < self.end {
            return true;
        }
        match self.stream.read(&mut self.buf).await {
            Ok(0) | Err(_) => {
                self.conn.handle_eof();
                false
            }
            Ok(n) => {
                self.start = 0;
                self.end = n;
                true
            }
        }
    }

    /// Feeds what was read until the connection has an event.
    fn next_event(&mut self) -> Option<PeerEvent> {
        loop {
            if let Some(ev) = self.conn.poll_event() {
                return Some(ev);
            }
            if self.start >= self.end {
                return None;
            }
            let used = self.conn.handle_input(&self.buf[self.start..self.end]);
            self.start += used;
            if used == 0 {
                return self.conn.poll_event();
            }
        }
    }

    /// The handshake; `Some` with the peer's key and its session slot once
    /// the session is open (the connection is then ready for messages).
    async fn handshake(&mut self) -> Option<(PublicKey, OwnedSemaphorePermit)> {
        let server = self.server;
        let hs = server.cfg.handshake();
        let mut half_open = HalfOpen {
            server,
            responder: None,
        };
        let mut permit = None;
        loop {
            while let Some(ev) = self.next_event() {
                match ev {
                    PeerEvent::Hello(hello) => {
                        if *self.shutdown.borrow() {
                            self.conn.refuse(Refusal::ShuttingDown);
                            continue;
                        }
                        let candidate = match hello.check(&Admission(&*server.service)) {
                            Ok(c) => c,
                            Err(e) => {
                                tracing::debug!(error = %e, "peer listener: refused");
                                self.conn.refuse(refusal_for(e));
                                continue;
                            }
                        };
                        let Ok(p) = server.sessions.clone().try_acquire_owned() else {
                            self.conn.refuse(Refusal::Busy);
                            continue;
                        };
                        let admitted = {
                            let mut t = lock(&server.table);
                            let now = mono_ms();
                            t.reclaim_expired(now, hs.timeout_ms);
                            if t.half_open()
                                >= server.cfg.max_half_open.clamp(1, HALF_OPEN_CAPACITY)
                            {
                                Err(HandshakeError::TooManyHalfOpen)
                            } else {
                                t.admit(candidate, now, hs.timeout_ms)
                            }
                        };
                        let admitted = match admitted {
                            Ok(a) => a,
                            Err(e) => {
                                self.conn.refuse(refusal_for(e));
                                continue;
                            }
                        };
                        permit = Some(p);
                        let identity = server.cfg.identity.clone();
                        let responded = blocking(move || {
                            let mut m2 = [0u8; MESSAGE2_LEN];
                            admitted
                                .respond(&hs, &identity, &mut rand::rng(), &mut m2)
                                .map(|(r, _)| (r, m2))
                        })
                        .await
                        .ok()?;
                        match responded {
                            Ok((r, m2)) => {
                                half_open.responder = Some(r);
                                let _ = self.conn.send_challenge(&m2);
                            }
                            Err(failed) => {
                                lock(&server.table).release(failed.slot);
                                self.conn.refuse(refusal_for(failed.error));
                            }
                        }
                    }
                    PeerEvent::Proof(m3) => {
                        let r = half_open.responder.take()?;
                        let (slot, verified) =
                            blocking(move || r.verify(&m3, mono_ms())).await.ok()?;
                        lock(&server.table).release(slot);
                        match verified {
                            Ok(est) if admitted(&*server.service, &est.peer) => {
                                let _ = self.conn.establish(est.session);
                                return Some((est.peer, permit?));
                            }
                            Ok(_) => self.conn.refuse(Refusal::NotPermitted),
                            Err(e) => self.conn.refuse(refusal_for(e)),
                        }
                    }
                    PeerEvent::Ended(end) => {
                        tracing::debug!(%end, "peer listener: handshake ended");
                        return None;
                    }
                    _ => self.conn.violation(Violation::Unexpected),
                }
            }
            if self.flush().await.is_err() {
                return None;
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// Serves the open session of `peer` until it ends; returns why.
    async fn session(&mut self, peer: PublicKey) -> String {
        let server = self.server;
        let ticket = server.next_session.fetch_add(1, Ordering::Relaxed);
        let (end_tx, mut replaced) = oneshot::channel();
        if let Some((_, older)) = lock(&server.live).insert(peer, (ticket, end_tx)) {
            let _ = older.send(());
        }
        let why = self.serve(peer, &mut replaced).await;
        {
            let mut live = lock(&server.live);
            if live.get(&peer).is_some_and(|(t, _)| *t == ticket) {
                live.remove(&peer);
            }
        }
        self.flush_last().await;
        why
    }

    async fn serve(&mut self, peer: PublicKey, replaced: &mut oneshot::Receiver<()>) -> String {
        let server = self.server;
        let mut inflight: JoinSet<(u64, Vec<u8>)> = JoinSet::new();
        let mut recheck = server.recheck.subscribe();
        let mut tick =
            tokio::time::interval(server.cfg.recheck_every.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut replaced_open = true;
        let max = server.cfg.max_inflight.max(1);
        let (rd, wr) = self.stream.split();
        let mut rd = rd;
        let mut wr = wr;
        loop {
            if self.conn.is_closed() {
                let mut why = String::from("closed");
                while let Some(ev) = self.conn.poll_event() {
                    if let PeerEvent::Ended(end) = ev {
                        why = end.to_string();
                    }
                }
                return why;
            }
            // what was read: requests into tasks
            while inflight.len() < max && !self.conn.is_closed() {
                let Some(ev) = next_event(&mut self.conn, &self.buf, &mut self.start, self.end)
                else {
                    break;
                };
                match ev {
                    PeerEvent::Message(m) => {
                        if !admitted(&*server.service, &peer) {
                            self.conn.refuse(Refusal::Revoked);
                            continue;
                        }
                        let Some(id) = message_id(&m) else {
                            self.conn.violation(Violation::Malformed);
                            continue;
                        };
                        let fut = server.service.serve(peer, m);
                        inflight.spawn(async move { (id, fut.await) });
                    }
                    PeerEvent::Ended(end) => return end.to_string(),
                    _ => self.conn.violation(Violation::Unexpected),
                }
            }
            if self.conn.is_closed() {
                continue;
            }
            let reading = self.start >= self.end && inflight.len() < max;
            let writing = self.conn.has_transmit();
            tokio::select! {
                biased;
                _ = stopped(&mut self.shutdown) => {
                    self.conn.refuse(Refusal::ShuttingDown);
                }
                r = &mut *replaced, if replaced_open => {
                    replaced_open = false;
                    if r.is_ok() {
                        self.conn.close();
                        return "a newer session of this key".into();
                    }
                }
                _ = recheck.changed() => {
                    if !admitted(&*server.service, &peer) {
                        self.conn.refuse(Refusal::Revoked);
                    }
                }
                _ = tick.tick() => {
                    if !admitted(&*server.service, &peer) {
                        self.conn.refuse(Refusal::Revoked);
                    }
                }
                Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                    if let Ok((id, body)) = done {
                        let mut answer = sensorchain_core::codec::encode_to_vec(&id);
                        answer.extend_from_slice(&body);
                        let _ = self.conn.send(answer);
                    }
                }
                n = rd.read(&mut self.buf), if reading => match n {
                    Ok(0) | Err(_) => self.conn.handle_eof(),
                    Ok(n) => {
                        self.start = 0;
                        self.end = n;
                    }
                },
                w = tokio::time::timeout(server.cfg.write_timeout, wr.write(self.conn.transmit())), if writing => match w {
                    Ok(Ok(n)) => self.conn.advance(n),
                    _ => return "write failed".into(),
                },
            }
        }
    }
}

/// Feeds what was read until the connection has an event (free function:
/// the session borrows the stream's halves).
fn next_event(
    conn: &mut PeerConnection,
    buf: &[u8],
    start: &mut usize,
    end: usize,
) -> Option<PeerEvent> {
    loop {
        if let Some(ev) = conn.poll_event() {
            return Some(ev);
        }
        if *start >= end {
            return None;
        }
        let used = conn.handle_input(&buf[*start..end]);
        *start += used;
        if used == 0 {
            return conn.poll_event();
        }
    }
}

/// Whether `peer` is admitted now (its key id maps to it).
fn admitted(service: &dyn PeerService, peer: &PublicKey) -> bool {
    service
        .admit(&peer.key_id())
        .is_ok_and(|vk| vk.public() == peer)
}
