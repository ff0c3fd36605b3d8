//! The gateway side of one link, over any byte stream (TCP or serial): a
//! tokio driver around core's sans-I/O
//! [`ResponderConnection`],
//! which owns the framing, the handshake messages, the session, in-order
//! answers and back-pressure. This driver owns what is the gateway's: the
//! shared handshake table and its lock, the crypto lanes, the allowlist,
//! per-identity rates and sessions, the node, revocation, shutdown,
//! timers and metrics.
//!
//! 1. **Handshake** (gateway as responder), within
//!    `limits.handshake_timeout_ms` of the connection:
//!    * message 1 arrives in a `Hello` frame; it is parsed and the allowlist
//!      ([`StateAllowlist`], over the node's world state: key id →
//!      registered key → `CONNECT`) checked before any Diffie–Hellman or
//!      signature work;
//!    * the identity's handshake rate ([`peers`](super::peers): burst 4,
//!      1/s; spent → `Refused(Busy)`, label `rate_limited`), then a session
//!      slot (the `max_sessions` semaphore; full → `Refused(Busy)`);
//!    * admission to the shared responder table, under its lock and with no
//!      cryptography (replay cache; half-open handshakes bounded across all
//!      links, full → `Refused(Busy)`); then, without the lock, message 2's
//!      X25519 and signature (in one of the
//!      [`crypto_lanes`](super::crypto_lanes), half the cores);
//!    * message 2 goes out in a `Challenge` frame, message 3 comes back in a
//!      `Proof` frame, verified without the lock; the slot is given back;
//!      `CONNECT` is checked once more.
//!
//!    Any failure is answered with `Refused(reason)` in clear and the link
//!    is closed; the half-open slot is released. The initiator learns that
//!    its session exists from the first session frame it receives (the
//!    reference client pings and waits for the pong).
//! 2. **One session per identity**: the session registers with
//!    [`peers`](super::peers); a previous session of the same identity is
//!    told to end: it stops reading, answers its in-flight submissions once
//!    committed or refused, sends a session close frame and closes
//!    ([`LinkEnd::Replaced`]).
//! 3. **Session**: every frame is a `Session` frame, opened with the session
//!    keys and its replay window, holding one strictly decoded
//!    [`DeviceMsg`](sensorchain_core::link::DeviceMsg). `Submit(tx)` goes to the node ([`Node::enqueue`](crate::node::Node::enqueue)) with the session's
//!    identity; the answer (`Ack` once durably committed, `Reject`, or `Busy`)
//!    comes back through the session. At most `max_inflight` submissions are
//!    in flight per link; beyond, the link stops reading (back-pressure).
//!    Submissions of one link are queued at the node in the order they
//!    arrived ([`Node::enqueue`](crate::node::Node::enqueue)), so a sensor may pipeline increasing
//!    sequence numbers.
//! 4. **Ends**: the peer closes (EOF or a close frame); too many bad frames
//!    (oversized, malformed, undecryptable, replayed: each counted in
//!    `bad_frames`); no frame for `idle_timeout_ms`; the identity loses
//!    `CONNECT` (checked on every permission change: `Refused(Revoked)` in
//!    clear, closed at once); a newer session of the same identity (step
//!    2); shutdown (in-flight submissions are answered first, then
//!    `Refused(ShuttingDown)`); an authenticated frame of a kind a device
//!    link does not carry, a peer link's chunk included (closed at once,
//!    [`LinkEnd::Protocol`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use sensorchain_core::handshake::{self, Allowlist, HandshakeError, Hello, SlotTicket};
use sensorchain_core::identity::{KeyId, PublicKey, VerifyingKey};
use sensorchain_core::link::{
    self, BadFrame, End, GatewayMsg, LINK_MAX_FRAME, Refusal, RejectReason, ResponderConfig,
    ResponderConnection, ResponderEvent, SubmitId,
};
use sensorchain_core::permissions::Permissions;
use sensorchain_core::session::FRAME_OVERHEAD;
use sensorchain_core::state::WorldState;
use sensorchain_core::tx::Transaction;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::broadcast::error::RecvError;

use super::{LinkHub, mono_ms};
use crate::node::{Committed, NodeEvent, Rejected};

/// Most submissions a link may hold in flight (the configured
/// `max_inflight` is clamped to it).
pub const INFLIGHT_CAPACITY: usize = 256;
/// Bytes of a link's transmit queue (answers wait there in order).
const TX_QUEUE: usize = 16 * 1024;
/// Bytes read from the stream at once.
const READ_CHUNK: usize = 4096;

/// The core connection a link runs.
type Conn = ResponderConnection<LINK_MAX_FRAME, TX_QUEUE, INFLIGHT_CAPACITY>;

/// The allowlist of a gateway: the world state's registered identities that
/// hold `CONNECT`. Lookups are map reads (the key was validated once, at
/// registration).
pub struct StateAllowlist<'a>(pub &'a WorldState);

impl Allowlist for StateAllowlist<'_> {
    fn lookup(&self, id: &KeyId) -> Result<VerifyingKey, handshake::Refusal> {
        let pk = self.0.by_key_id(id).ok_or(handshake::Refusal::Unknown)?;
        let vk = self
            .0
            .verifying_key(pk)
            .ok_or(handshake::Refusal::Unknown)?;
        if !self.0.has(pk, Permissions::CONNECT) {
            return Err(handshake::Refusal::NotPermitted);
        }
        Ok(*vk)
    }
}

/// How a link ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkEnd {
    /// The handshake was refused or failed (the refusal was sent in clear).
    Refused(Refusal),
    /// The handshake did not complete in time.
    HandshakeTimeout,
    /// The peer closed the link (EOF or a close frame).
    PeerClosed,
    /// No frame for the idle timeout.
    Idle,
    /// Too many bad frames.
    BadFrames,
    /// The identity lost `CONNECT`.
    Revoked,
    /// The gateway is shutting down.
    ShuttingDown,
    /// The byte stream failed or a write timed out.
    Io,
    /// A `Hello` arrived in the session: the device restarted on a line
    /// that outlives it (a UART). The session ends and the new handshake is
    /// served on the same link.
    Rehandshake,
    /// A newer session of the same identity completed its handshake (one
    /// live session per identity): the submissions in flight were answered,
    /// then a session close frame was sent.
    Replaced,
    /// The session's send budget ran out: it was closed with a close frame
    /// and a new handshake is served on the same link.
    Rekey,
    /// The initiator sent an authenticated frame of a kind a device link
    /// does not carry (a peer link's chunk, say): closed at once.
    Protocol,
}

impl LinkEnd {
    /// A snake_case label (the `links_closed` metric).
    pub fn label(&self) -> &'static str {
        match self {
            LinkEnd::Refused(_) => "refused",
            LinkEnd::HandshakeTimeout => "handshake_timeout",
            LinkEnd::PeerClosed => "peer_closed",
            LinkEnd::Idle => "idle",
            LinkEnd::BadFrames => "bad_frames",
            LinkEnd::Revoked => "revoked",
            LinkEnd::ShuttingDown => "shutting_down",
            LinkEnd::Io => "io",
            LinkEnd::Rehandshake => "rehandshake",
            LinkEnd::Replaced => "replaced",
            LinkEnd::Rekey => "rekey",
            LinkEnd::Protocol => "protocol",
        }
    }

    /// Whether the link stays open for a new handshake after this end.
    fn continues(&self) -> bool {
        matches!(self, LinkEnd::Rehandshake | LinkEnd::Rekey)
    }
}

/// The link refusal for a handshake error ([`link::refusal_for`]), and a
/// metric label.
pub fn refusal_of(e: HandshakeError) -> (Refusal, &'static str) {
    let label = match e {
        HandshakeError::UnknownIdentity => "unknown_identity",
        HandshakeError::NotPermitted => "not_permitted",
        HandshakeError::WrongChain => "wrong_chain",
        HandshakeError::VersionMismatch => "version_mismatch",
        HandshakeError::TooManyHalfOpen => "busy",
        HandshakeError::BadSignature => "bad_signature",
        HandshakeError::Replayed => "replayed",
        HandshakeError::Timeout => "timeout",
        HandshakeError::Malformed => "malformed",
        _ => "failed",
    };
    (link::refusal_for(e), label)
}

/// The metric label of a bad frame.
fn bad_label(b: BadFrame) -> &'static str {
    match b {
        BadFrame::Oversized => "oversized",
        BadFrame::Malformed => "malformed_frame",
        BadFrame::Unexpected => "unexpected_frame",
        BadFrame::Undecryptable => "undecryptable",
        BadFrame::Replayed => "replayed_frame",
        BadFrame::MalformedMessage => "malformed_message",
        _ => "bad_frame",
    }
}

/// Gives a half-open slot back (the table's lock, for a few comparisons).
fn release(hub: &LinkHub, slot: SlotTicket) {
    hub.table
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .release(slot);
}

/// Keeps an admitted handshake's slot while it waits for a crypto lane.
struct PendingAdmitted<'h> {
    hub: &'h LinkHub,
    admitted: Option<handshake::Admitted>,
}

impl Drop for PendingAdmitted<'_> {
    fn drop(&mut self) {
        if let Some(a) = self.admitted.take() {
            let mut t = self.hub.table.lock().unwrap_or_else(|p| p.into_inner());
            a.abort(&mut **t);
        }
    }
}

/// The core connection of one link; a half-open slot it still holds (or
/// hands back in an event not yet polled) is released when it is dropped,
/// however the link ended.
struct Guarded<'h> {
    hub: &'h LinkHub,
    conn: Box<Conn>,
}

impl Drop for Guarded<'_> {
    fn drop(&mut self) {
        while let Some(ev) = self.conn.poll_event() {
            if let ResponderEvent::SlotFreed(slot) = ev {
                release(self.hub, slot);
            }
        }
        if let Some(slot) = self.conn.take_slot() {
            release(self.hub, slot);
        }
    }
}

/// What the driver does with one connection event (owned: the connection
/// is borrowed while an event is).
enum Step {
    Hello(Hello),
    ProofReceived,
    Established(PublicKey),
    Submit(SubmitId, Vec<u8>),
    Bad(BadFrame),
    Ended(End),
}

/// The live session of a link.
struct Live {
    peer: PublicKey,
    ticket: super::peers::SessionTicket,
    replaced: tokio::sync::oneshot::Receiver<()>,
    replaced_open: bool,
    _permit: OwnedSemaphorePermit,
}

/// Serves one link until it ends; counts sessions and closes in the
/// metrics. `peer` names the link in logs (an address or a device path).
pub async fn serve_link<S>(hub: Arc<LinkHub>, stream: S, peer: &str) -> LinkEnd
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut d = Driver {
        hub: &hub,
        metrics: hub.node.metrics().clone(),
        conn: Guarded {
            hub: &hub,
            conn: Box::new(Conn::new(responder_config(&hub), mono_ms())),
        },
        stream,
        peer,
        rbuf: vec![0u8; READ_CHUNK],
        rpos: 0,
        rlen: 0,
        mid_frame: false,
        tbuf: vec![0u8; 2048],
        bad: 0,
        permit: None,
        live: None,
        closing: None,
        hs_label: None,
        refused_after_proof: false,
        inflight: FuturesUnordered::new(),
        // Subscribe before any handshake so no revocation is missed.
        events: hub.node.subscribe(),
        events_open: true,
        shutdown: hub.shutdown_signal(),
        draining: false,
    };
    loop {
        let end = d.run().await;
        d.metrics.link_closed(end.label());
        d.end_session();
        if end.continues() {
            tracing::debug!(%peer, end = end.label(), "a new handshake on the same link");
            continue;
        }
        tracing::debug!(%peer, end = end.label(), "link closed");
        return end;
    }
}

fn responder_config(hub: &LinkHub) -> ResponderConfig {
    let mut c = ResponderConfig::new(hub.hs);
    c.idle_timeout_ms = (hub.cfg.idle_timeout.as_millis() as u64).max(1);
    c
}

struct Driver<'h, S> {
    hub: &'h LinkHub,
    metrics: Arc<crate::metrics::Metrics>,
    conn: Guarded<'h>,
    stream: S,
    peer: &'h str,
    /// Bytes read and not yet taken by the connection: `rbuf[rpos..rlen]`.
    rbuf: Vec<u8>,
    rpos: usize,
    rlen: usize,
    /// The last byte taken was inside a frame (not a delimiter).
    mid_frame: bool,
    tbuf: Vec<u8>,
    bad: u32,
    /// The session slot taken for the handshake in progress.
    permit: Option<OwnedSemaphorePermit>,
    live: Option<Live>,
    /// Why this side is closing the session gracefully.
    closing: Option<LinkEnd>,
    /// The handshake-failure label of a refusal this driver gave.
    hs_label: Option<&'static str>,
    /// The proof verified but the identity lost `CONNECT` meanwhile: the
    /// `Established` event that follows is not a session.
    refused_after_proof: bool,
    inflight: FuturesUnordered<BoxFuture<'static, Answer>>,
    events: tokio::sync::broadcast::Receiver<NodeEvent>,
    events_open: bool,
    shutdown: tokio::sync::watch::Receiver<bool>,
    draining: bool,
}

/// The wait for one submission's commit.
type Answer = (SubmitId, GatewayMsg);

impl<'h, S> Driver<'h, S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    /// Unregisters the session that ended (if any).
    fn end_session(&mut self) {
        if let Some(live) = self.live.take() {
            self.hub.peers.end_session(&live.peer, &live.ticket);
            self.hub.node().device_stats().session_closed(&live.peer);
            self.metrics.sessions_active.dec();
        }
        self.permit = None;
        self.closing = None;
        self.hs_label = None;
        self.refused_after_proof = false;
        self.inflight.clear();
    }

    /// Writes what the connection queued (bounded by the write timeout).
    async fn transmit(&mut self) -> Result<(), ()> {
        let wt = self.hub.cfg.write_timeout;
        let mut wrote = false;
        while let Some(n) = self.conn.conn.poll_transmit(&mut self.tbuf) {
            let buf = &self.tbuf[..n];
            match tokio::time::timeout(wt, self.stream.write_all(buf)).await {
                Ok(Ok(())) => wrote = true,
                _ => return Err(()),
            }
        }
        if wrote {
            match tokio::time::timeout(wt, self.stream.flush()).await {
                Ok(Ok(())) => {}
                _ => return Err(()),
            }
        }
        Ok(())
    }

    /// Best effort for the last bytes of a link that ends (a refusal in
    /// clear, a close frame): at most a second.
    async fn transmit_last(&mut self) {
        let limit = Duration::from_secs(1).min(self.hub.cfg.write_timeout);
        let _ = tokio::time::timeout(limit, self.transmit()).await;
    }

    /// Refuses the handshake in progress with `r`, counted as `label`.
    fn refuse(&mut self, r: Refusal, label: &'static str) {
        self.hs_label = Some(label);
        self.conn.conn.refuse(r);
    }

    /// One handshake and the session that follows, until it ends.
    async fn run(&mut self) -> LinkEnd {
        loop {
            // 1. what the connection has to say
            while let Some(step) = self.next_step() {
                if let Some(end) = self.on_step(step).await {
                    if !end.continues() {
                        self.transmit_last().await;
                    }
                    return end;
                }
            }
            // 2. what it has to send
            if self.transmit().await.is_err() {
                return LinkEnd::Io;
            }
            // 3. what was read and not yet taken
            if self.rpos < self.rlen && self.conn.conn.in_flight() < self.max_inflight() {
                let now = mono_ms();
                let used = self
                    .conn
                    .conn
                    .handle_input(&self.rbuf[self.rpos..self.rlen], now);
                if used > 0 {
                    self.mid_frame = self.rbuf[self.rpos + used - 1] != 0;
                    self.rpos += used;
                    continue;
                }
            }
            // 4. wait for the next thing to happen
            let read = self.rpos >= self.rlen;
            let session = self.live.is_some();
            let timer = self.conn.conn.poll_timeout().map(|t| {
                tokio::time::Instant::now() + Duration::from_millis(t.saturating_sub(mono_ms()))
            });
            let replaced_open = self.live.as_ref().is_some_and(|l| l.replaced_open);
            tokio::select! {
                biased;
                ev = self.events.recv(), if session && self.events_open => self.on_node_event(ev),
                _ = self.shutdown.changed(), if !self.draining => {
                    self.draining = true;
                    self.begin_shutdown();
                }
                r = async {
                    match self.live.as_mut() {
                        Some(l) => (&mut l.replaced).await,
                        None => std::future::pending().await,
                    }
                }, if replaced_open => {
                    if let Some(l) = self.live.as_mut() {
                        l.replaced_open = false;
                    }
                    if r.is_ok() {
                        tracing::info!(peer = %self.peer, "a newer session of this identity replaces this one");
                        self.closing = Some(LinkEnd::Replaced);
                        self.conn.conn.close();
                    }
                }
                Some((id, answer)) = self.inflight.next(), if !self.inflight.is_empty() => {
                    let _ = self.conn.conn.answer(id, answer);
                    while let Some(Some((id, answer))) = self.inflight.next().now_or_never() {
                        let _ = self.conn.conn.answer(id, answer);
                    }
                }
                n = self.stream.read(&mut self.rbuf), if read => match n {
                    Ok(0) => return self.eof(),
                    Ok(n) => {
                        self.rpos = 0;
                        self.rlen = n;
                    }
                    Err(_) => return LinkEnd::Io,
                },
                _ = tokio::time::sleep_until(timer.unwrap_or_else(tokio::time::Instant::now)), if timer.is_some() => {
                    self.conn.conn.handle_timeout(mono_ms());
                }
            }
        }
    }

    fn max_inflight(&self) -> usize {
        self.hub.cfg.max_inflight.clamp(1, INFLIGHT_CAPACITY)
    }

    /// The stream ended.
    fn eof(&mut self) -> LinkEnd {
        if self.mid_frame {
            self.mid_frame = false;
            self.bad_frame("truncated");
        }
        if self.live.is_none() {
            self.metrics.handshake_failed("closed");
        }
        LinkEnd::PeerClosed
    }

    fn bad_frame(&mut self, label: &str) -> bool {
        self.metrics.bad_frame(label);
        self.bad += 1;
        self.bad > self.hub.cfg.max_bad_frames
    }

    fn next_step(&mut self) -> Option<Step> {
        Some(match self.conn.conn.poll_event()? {
            ResponderEvent::Hello(h) => Step::Hello(h),
            ResponderEvent::ProofReceived => Step::ProofReceived,
            ResponderEvent::Established { peer, .. } => Step::Established(peer),
            ResponderEvent::Submit { id, tx } => Step::Submit(id, tx.to_vec()),
            ResponderEvent::BadFrame(b) => Step::Bad(b),
            ResponderEvent::SlotFreed(slot) => {
                release(self.hub, slot);
                return self.next_step();
            }
            ResponderEvent::Ended(e) => Step::Ended(e),
            _ => return self.next_step(),
        })
    }

    /// Acts on one step; `Some` when the session (or handshake) ended.
    async fn on_step(&mut self, step: Step) -> Option<LinkEnd> {
        match step {
            Step::Hello(h) => return self.on_hello(h).await,
            Step::ProofReceived => return self.on_proof().await,
            Step::Established(_) if self.refused_after_proof => {
                self.refused_after_proof = false;
            }
            Step::Established(device) => {
                // one live session per identity: this one replaces the last
                let (ticket, replaced) = self.hub.peers.start_session(&device, mono_ms());
                self.hub.node().device_stats().session_opened(&device);
                self.metrics.sessions_total.inc();
                self.metrics.sessions_active.inc();
                tracing::debug!(peer = %self.peer, %device, "session established");
                let permit = self.permit.take()?;
                self.live = Some(Live {
                    peer: device,
                    ticket,
                    replaced,
                    replaced_open: true,
                    _permit: permit,
                });
                if self.draining {
                    self.begin_shutdown();
                }
            }
            Step::Submit(id, bytes) => {
                let peer = self.live.as_ref().map(|l| l.peer)?;
                match Transaction::decode(&bytes) {
                    Ok(tx) => self
                        .inflight
                        .push(submit_future(&self.hub.node, id, tx, bytes, peer).boxed()),
                    Err(_) => {
                        self.metrics.reject(RejectReason::Malformed.as_str());
                        let m = GatewayMsg::Reject {
                            sequence: 0,
                            reason: RejectReason::Malformed,
                        };
                        let _ = self.conn.conn.answer(id, m);
                    }
                }
            }
            Step::Bad(b) => {
                let too_many = self.bad_frame(bad_label(b));
                if self.live.is_none() {
                    if too_many {
                        self.refuse(Refusal::HandshakeFailed, "bad_frames");
                    } else if b == BadFrame::Malformed && !self.conn.conn.is_closed() {
                        // a frame that is not a link frame instead of a
                        // handshake message
                        self.refuse(Refusal::HandshakeFailed, "malformed");
                    }
                } else if too_many {
                    return Some(LinkEnd::BadFrames);
                }
            }
            Step::Ended(e) => return Some(self.on_end(e)),
        }
        None
    }

    fn on_end(&mut self, e: End) -> LinkEnd {
        if self.live.is_none() {
            let (end, label) = match e {
                End::Refused(r) => (LinkEnd::Refused(r), self.hs_label.unwrap_or("failed")),
                End::HandshakeFailed(e) => {
                    let (r, label) = refusal_of(e);
                    (LinkEnd::Refused(r), label)
                }
                End::HandshakeTimeout => (LinkEnd::HandshakeTimeout, "timeout"),
                End::Closed if self.draining => {
                    (LinkEnd::Refused(Refusal::ShuttingDown), "shutting_down")
                }
                _ => (LinkEnd::Refused(Refusal::HandshakeFailed), "failed"),
            };
            self.metrics.handshake_failed(label);
            if let LinkEnd::Refused(r) = end {
                tracing::debug!(peer = %self.peer, refusal = %r, "handshake refused");
            }
            return end;
        }
        match e {
            End::Refused(Refusal::Revoked) => LinkEnd::Revoked,
            End::Refused(Refusal::ShuttingDown) => LinkEnd::ShuttingDown,
            End::Refused(r) => LinkEnd::Refused(r),
            End::Closed => self.closing.unwrap_or(LinkEnd::ShuttingDown),
            End::PeerClosed => LinkEnd::PeerClosed,
            End::Rehandshake => LinkEnd::Rehandshake,
            End::Rekey => LinkEnd::Rekey,
            End::Idle => LinkEnd::Idle,
            End::Protocol => LinkEnd::Protocol,
            _ => LinkEnd::Io,
        }
    }

    /// Shutdown began: a session answers what is in flight, then
    /// `Refused(ShuttingDown)`; a handshake is refused at once.
    fn begin_shutdown(&mut self) {
        if self.live.is_some() {
            self.closing = Some(LinkEnd::ShuttingDown);
        } else {
            self.hs_label = Some("shutting_down");
        }
        self.conn.conn.shutdown(Refusal::ShuttingDown);
    }

    fn on_node_event(&mut self, ev: Result<NodeEvent, RecvError>) {
        let Some(peer) = self.live.as_ref().map(|l| l.peer) else {
            return;
        };
        let recheck = match ev {
            Ok(NodeEvent::PermissionsChanged(keys)) => keys.contains(&peer),
            Ok(_) => false,
            Err(RecvError::Lagged(_)) => true,
            Err(RecvError::Closed) => {
                self.events_open = false;
                self.draining = true;
                self.begin_shutdown();
                false
            }
        };
        if recheck && !self.hub.node.state().has(&peer, Permissions::CONNECT) {
            tracing::info!(device = %peer, "identity lost CONNECT: closing its session");
            self.conn.conn.refuse(Refusal::Revoked);
        }
    }

    /// Message 1 parsed: the allowlist, the identity's rate, a session
    /// slot and admission to the shared table (its lock held for a few
    /// comparisons), then message 2's cryptography without the lock.
    async fn on_hello(&mut self, hello: Hello) -> Option<LinkEnd> {
        let hub = self.hub;
        if hub.is_shutting_down() {
            self.refuse(Refusal::ShuttingDown, "shutting_down");
            return None;
        }
        let candidate = match hello.check(&StateAllowlist(&hub.node.state())) {
            Ok(c) => c,
            Err(e) => {
                let (r, label) = refusal_of(e);
                self.refuse(r, label);
                return None;
            }
        };
        let device = *candidate.initiator();
        if !hub.peers.take_token(&device, mono_ms()) {
            self.refuse(Refusal::Busy, "rate_limited");
            return None;
        }
        let Ok(permit) = hub.sessions.clone().try_acquire_owned() else {
            hub.peers.refund(&device);
            self.refuse(Refusal::Busy, "busy");
            return None;
        };
        let admitted = {
            let mut t = hub.table.lock().unwrap_or_else(|p| p.into_inner());
            let now = mono_ms();
            t.reclaim_expired(now, hub.hs.timeout_ms);
            if t.half_open() >= hub.cfg.max_half_open {
                Err(HandshakeError::TooManyHalfOpen)
            } else {
                t.admit(candidate, now, hub.hs.timeout_ms)
            }
        };
        let admitted = match admitted {
            Ok(a) => a,
            Err(e) => {
                if e == HandshakeError::TooManyHalfOpen {
                    hub.peers.refund(&device);
                }
                let (r, label) = refusal_of(e);
                self.refuse(r, label);
                return None;
            }
        };
        self.permit = Some(permit);
        // message 2's cryptography, no lock (a crypto lane: see
        // `crypto_lanes`; cancelled while waiting, the slot comes back)
        let mut pending = PendingAdmitted {
            hub,
            admitted: Some(admitted),
        };
        let lane = hub.crypto_lanes.acquire().await;
        let admitted = pending.admitted.take()?;
        let r = self
            .conn
            .conn
            .accept(admitted, hub.node.keypair(), &mut rand::rng(), mono_ms());
        drop(lane);
        if r.is_err() {
            // the connection queued the refusal; its end says which
            self.permit = None;
        }
        None
    }

    /// Message 3 arrived: its verification without the lock; `CONNECT`
    /// once more (permissions may have changed meanwhile).
    async fn on_proof(&mut self) -> Option<LinkEnd> {
        let lane = self.hub.crypto_lanes.acquire().await;
        let r = self.conn.conn.verify_proof(mono_ms());
        drop(lane);
        match r {
            Ok(peer) if !self.hub.node.state().has(&peer, Permissions::CONNECT) => {
                self.refused_after_proof = true;
                self.refuse(Refusal::NotPermitted, "not_permitted");
            }
            Ok(_) => {}
            Err(_) => self.permit = None,
        }
        None
    }
}

/// Enqueues a submission now (so a link's transactions reach the node in
/// arrival order: a sensor may pipeline increasing sequence numbers) and
/// returns the wait for its answer.
fn submit_future(
    node: &crate::node::Node,
    id: SubmitId,
    tx: Transaction,
    bytes: Vec<u8>,
    peer: PublicKey,
) -> impl Future<Output = Answer> + Send + use<> {
    let sequence = tx.body.sequence;
    let queued = node.enqueue_decoded(tx, bytes, Some(peer));
    async move {
        let r = match queued {
            Ok(ticket) => ticket.wait().await,
            Err(e) => Err(e),
        };
        (id, answer(sequence, r))
    }
}

fn answer(sequence: u64, r: Result<Committed, Rejected>) -> GatewayMsg {
    match r {
        Ok(c) => GatewayMsg::Ack {
            sequence,
            tx_id: c.tx_id,
            height: c.height,
        },
        Err(e) => match e.reason() {
            Some(reason) => GatewayMsg::Reject { sequence, reason },
            None => GatewayMsg::Busy { sequence },
        },
    }
}

/// The largest transaction a `Submit` can carry inside one link frame.
pub const MAX_SUBMIT: usize = LINK_MAX_FRAME - FRAME_OVERHEAD - 8;
