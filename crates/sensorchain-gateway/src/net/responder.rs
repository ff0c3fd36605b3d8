//! The gateway side of one link, over any byte stream (TCP or serial).
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
//!    [`DeviceMsg`]. `Submit(tx)` goes to the node ([`Node::enqueue`](crate::node::Node::enqueue)) with the session's
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
//!    `Refused(ShuttingDown)`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, SinkExt, StreamExt};
use sensorchain_core::handshake::{
    self, Allowlist, Established, HandshakeError, Hello, MESSAGE2_LEN, Responder, SlotTicket,
};
use sensorchain_core::identity::{KeyId, PublicKey, VerifyingKey};
use sensorchain_core::link::{
    self, DeviceMsg, GatewayMsg, LINK_MAX_FRAME, LinkFrame, Refusal, RejectReason,
};
use sensorchain_core::permissions::Permissions;
use sensorchain_core::session::{FRAME_CLOSE, FRAME_DATA, FRAME_OVERHEAD, Session, SessionError};
use sensorchain_core::state::WorldState;
use sensorchain_core::tx::Transaction;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::codec::Framed;

use super::codec::{CodecError, LinkCodec};
use super::{LinkHub, mono_ms};
use crate::node::{Committed, NodeEvent, Rejected};

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
        }
    }
}

/// The link refusal for a handshake error, and a metric label.
pub fn refusal_of(e: HandshakeError) -> (Refusal, &'static str) {
    match e {
        HandshakeError::UnknownIdentity => (Refusal::UnknownIdentity, "unknown_identity"),
        HandshakeError::NotPermitted => (Refusal::NotPermitted, "not_permitted"),
        HandshakeError::WrongChain => (Refusal::WrongChain, "wrong_chain"),
        HandshakeError::VersionMismatch => (Refusal::VersionMismatch, "version_mismatch"),
        HandshakeError::TooManyHalfOpen => (Refusal::Busy, "busy"),
        HandshakeError::BadSignature => (Refusal::HandshakeFailed, "bad_signature"),
        HandshakeError::Replayed => (Refusal::HandshakeFailed, "replayed"),
        HandshakeError::Timeout => (Refusal::HandshakeFailed, "timeout"),
        HandshakeError::Malformed => (Refusal::HandshakeFailed, "malformed"),
        _ => (Refusal::HandshakeFailed, "failed"),
    }
}

type LinkFramed<S> = Framed<S, LinkCodec>;

/// Why the handshake phase ended without a session.
enum HsFail {
    /// Answer this refusal in clear, count this label.
    Refuse(Refusal, &'static str),
    /// The peer went away or the stream failed.
    Gone(LinkEnd, &'static str),
}

/// Keeps a half-open slot until the handshake finishes; releases it if the
/// handshake is abandoned (timeout, I/O error, bad message).
struct HalfOpen<'g> {
    gw: &'g LinkHub,
    resp: Option<Responder>,
}

impl Drop for HalfOpen<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.resp.take() {
            gw_release(self.gw, r.into_slot());
        }
    }
}

/// Keeps an admitted handshake's slot while it waits for a crypto lane.
struct PendingAdmitted<'g> {
    gw: &'g LinkHub,
    admitted: Option<handshake::Admitted>,
}

impl Drop for PendingAdmitted<'_> {
    fn drop(&mut self) {
        if let Some(a) = self.admitted.take() {
            let mut t = self.gw.table.lock().unwrap_or_else(|p| p.into_inner());
            a.abort(&mut **t);
        }
    }
}

/// Gives a half-open slot back (the table's lock, for a few comparisons).
fn gw_release(gw: &LinkHub, slot: SlotTicket) {
    gw.table
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .release(slot);
}

fn refuse(e: HandshakeError) -> HsFail {
    let (r, l) = refusal_of(e);
    HsFail::Refuse(r, l)
}

/// Serves one link until it ends; counts sessions and closes in the
/// metrics. `peer` names the link in logs (an address or a device path).
pub async fn serve_link<S>(gw: Arc<LinkHub>, stream: S, peer: &str) -> LinkEnd
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let metrics = gw.node.metrics().clone();
    let codec = LinkCodec::new(Some(metrics.clone())).with_max_bad(gw.cfg.max_bad_frames);
    let mut framed = Framed::with_capacity(stream, codec, 2048);
    // A Hello inside a session starts a new handshake on the same link.
    let mut hello = None;
    loop {
        let end = serve_session(&gw, &mut framed, peer, &mut hello).await;
        metrics.link_closed(end.label());
        if end == LinkEnd::Rehandshake && hello.is_some() {
            tracing::debug!(%peer, "device restarted its handshake on the same link");
            continue;
        }
        tracing::debug!(%peer, end = end.label(), "link closed");
        return end;
    }
}

/// One handshake (starting from `hello` if a session already read it) and
/// the session that follows.
async fn serve_session<S>(
    gw: &LinkHub,
    framed: &mut LinkFramed<S>,
    peer: &str,
    hello: &mut Option<BytesMut>,
) -> LinkEnd
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let metrics = gw.node.metrics().clone();
    // Subscribe before the handshake so no revocation is missed in between.
    let events = gw.node.subscribe();
    let first = hello.take();
    let hs = tokio::time::timeout(gw.cfg.handshake_timeout, handshake(gw, framed, first)).await;
    match hs {
        Err(_) => {
            metrics.handshake_failed("timeout");
            send_clear(gw, framed, Refusal::HandshakeFailed).await;
            LinkEnd::HandshakeTimeout
        }
        Ok(Err(HsFail::Refuse(r, label))) => {
            metrics.handshake_failed(label);
            tracing::debug!(%peer, refusal = %r, "handshake refused");
            send_clear(gw, framed, r).await;
            LinkEnd::Refused(r)
        }
        Ok(Err(HsFail::Gone(end, label))) => {
            metrics.handshake_failed(label);
            end
        }
        Ok(Ok((est, permit))) => {
            let device = est.peer;
            // one live session per identity: this one replaces the last
            let (ticket, replaced) = gw.peers.start_session(&device, mono_ms());
            metrics.sessions_total.inc();
            metrics.sessions_active.inc();
            tracing::debug!(%peer, %device, "session established");
            let end = session(gw, framed, est, events, hello, replaced).await;
            gw.peers.end_session(&device, &ticket);
            metrics.sessions_active.dec();
            drop(permit);
            end
        }
    }
}

async fn send_clear<S>(gw: &LinkHub, framed: &mut LinkFramed<S>, r: Refusal)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = [0u8; 8];
    if let Ok(b) = link::encode(&LinkFrame::Refused(r), &mut buf) {
        let b: &[u8] = b;
        let _ = tokio::time::timeout(
            Duration::from_secs(1).min(gw.cfg.write_timeout),
            framed.send(b),
        )
        .await;
    }
}

async fn next_link_frame<S>(framed: &mut LinkFramed<S>) -> Result<bytes::BytesMut, HsFail>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match framed.next().await {
        Some(Ok(f)) => Ok(f),
        Some(Err(CodecError::TooManyBadFrames(_))) => {
            Err(HsFail::Refuse(Refusal::HandshakeFailed, "bad_frames"))
        }
        Some(Err(_)) => Err(HsFail::Gone(LinkEnd::Io, "io")),
        None => Err(HsFail::Gone(LinkEnd::PeerClosed, "closed")),
    }
}

/// The responder's side of one handshake. The shared table's lock is held
/// twice, each time for a few comparisons and no cryptography: to admit
/// message 1 (replay cache, half-open slot) and to give the slot back. The
/// parse, the allowlist, the per-identity rate, X25519, HKDF and both
/// signatures run without it, so handshakes on different links overlap.
async fn handshake<S>(
    gw: &LinkHub,
    framed: &mut LinkFramed<S>,
    first: Option<BytesMut>,
) -> Result<(Established, OwnedSemaphorePermit), HsFail>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let f1 = match first {
        Some(f) => f,
        None => next_link_frame(framed).await?,
    };
    let Ok(LinkFrame::Hello(m1)) = link::decode::<LinkFrame>(&f1) else {
        let _ = framed.codec_mut().count_bad("unexpected_frame");
        return Err(HsFail::Refuse(Refusal::HandshakeFailed, "malformed"));
    };
    if gw.is_shutting_down() {
        return Err(HsFail::Refuse(Refusal::ShuttingDown, "shutting_down"));
    }
    // 1. cheap checks, no lock: version, encoding, chain, allowlist
    let candidate = Hello::parse(&gw.hs, m1)
        .and_then(|h| h.check(&StateAllowlist(&gw.node.state())))
        .map_err(refuse)?;
    let device = *candidate.initiator();
    // 2. the identity's handshake rate, then a session slot
    if !gw.peers.take_token(&device, mono_ms()) {
        return Err(HsFail::Refuse(Refusal::Busy, "rate_limited"));
    }
    let Ok(permit) = gw.sessions.clone().try_acquire_owned() else {
        gw.peers.refund(&device);
        return Err(HsFail::Refuse(Refusal::Busy, "busy"));
    };
    // 3. admission under the table's lock: replay cache, half-open slot
    let admitted = {
        let mut t = gw.table.lock().unwrap_or_else(|p| p.into_inner());
        let now = mono_ms();
        t.reclaim_expired(now, gw.hs.timeout_ms);
        if t.half_open() >= gw.cfg.max_half_open {
            Err(HandshakeError::TooManyHalfOpen)
        } else {
            t.admit(candidate, now, gw.hs.timeout_ms)
        }
    };
    let admitted = admitted.map_err(|e| {
        if e == HandshakeError::TooManyHalfOpen {
            gw.peers.refund(&device);
        }
        refuse(e)
    })?;
    // 4. message 2's cryptography, no lock (a crypto lane: see
    //    `crypto_lanes`; cancelled while waiting, the slot comes back)
    let mut m2 = [0u8; MESSAGE2_LEN];
    let mut pending = PendingAdmitted {
        gw,
        admitted: Some(admitted),
    };
    let lane = gw.crypto_lanes.acquire().await;
    let Some(admitted) = pending.admitted.take() else {
        return Err(HsFail::Refuse(Refusal::HandshakeFailed, "failed"));
    };
    let (resp, n2) = admitted
        .respond(&gw.hs, gw.node.keypair(), &mut rand::rng(), &mut m2)
        .map_err(|f| {
            gw_release(gw, f.slot);
            refuse(f.error)
        })?;
    drop(lane);
    let mut half = HalfOpen {
        gw,
        resp: Some(resp),
    };
    let mut buf = [0u8; MESSAGE2_LEN + 8];
    let frame = link::encode(&LinkFrame::Challenge(&m2[..n2]), &mut buf)
        .map_err(|_| HsFail::Refuse(Refusal::HandshakeFailed, "failed"))?;
    let frame: &[u8] = frame;
    framed
        .send(frame)
        .await
        .map_err(|_| HsFail::Gone(LinkEnd::Io, "io"))?;

    let f3 = next_link_frame(framed).await?;
    let Ok(LinkFrame::Proof(m3)) = link::decode::<LinkFrame>(&f3) else {
        let _ = framed.codec_mut().count_bad("unexpected_frame");
        return Err(HsFail::Refuse(Refusal::HandshakeFailed, "malformed"));
    };
    // 5. message 3's verification, no lock; then the slot goes back
    let lane = gw.crypto_lanes.acquire().await;
    let resp = half
        .resp
        .take()
        .ok_or(HsFail::Refuse(Refusal::HandshakeFailed, "failed"))?;
    let (slot, est) = resp.verify(m3, mono_ms());
    drop(lane);
    gw_release(gw, slot);
    let est = est.map_err(refuse)?;
    // Permissions may have changed while the handshake ran.
    if !gw.node.state().has(&est.peer, Permissions::CONNECT) {
        return Err(HsFail::Refuse(Refusal::NotPermitted, "not_permitted"));
    }
    Ok((est, permit))
}

/// Seals one gateway message into a link frame (before COBS).
pub(crate) fn seal_msg(session: &mut Session, msg: &GatewayMsg) -> Option<Vec<u8>> {
    let mut plain = [0u8; 96];
    let p = link::encode(msg, &mut plain).ok()?;
    let mut sealed = vec![0u8; p.len() + FRAME_OVERHEAD];
    let s = session.seal(FRAME_DATA, p, &mut sealed).ok()?;
    let mut frame = vec![0u8; s.len() + 8];
    let n = link::encode(&LinkFrame::Session(s), &mut frame).ok()?.len();
    frame.truncate(n);
    Some(frame)
}

/// A sealed session close frame (empty payload) in a link frame.
fn seal_close(session: &mut Session) -> Option<Vec<u8>> {
    let mut sealed = [0u8; FRAME_OVERHEAD];
    let s = session.seal(FRAME_CLOSE, &[], &mut sealed).ok()?;
    let mut frame = vec![0u8; s.len() + 8];
    let n = link::encode(&LinkFrame::Session(s), &mut frame).ok()?.len();
    frame.truncate(n);
    Some(frame)
}

/// Enqueues a submission now (so a link's transactions reach the node in
/// arrival order: a sensor may pipeline increasing sequence numbers) and
/// returns the wait for its commit.
fn submit_future(
    node: &crate::node::Node,
    tx: Transaction,
    bytes: Vec<u8>,
    peer: PublicKey,
) -> impl Future<Output = (u64, Result<Committed, Rejected>)> + Send + use<> {
    let sequence = tx.body.sequence;
    let queued = node.enqueue_decoded(tx, bytes, Some(peer));
    async move {
        let r = match queued {
            Ok(ticket) => ticket.wait().await,
            Err(e) => Err(e),
        };
        (sequence, r)
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

async fn session<S>(
    gw: &LinkHub,
    framed: &mut LinkFramed<S>,
    est: Established,
    mut events: tokio::sync::broadcast::Receiver<NodeEvent>,
    hello: &mut Option<BytesMut>,
    mut replaced: tokio::sync::oneshot::Receiver<()>,
) -> LinkEnd
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Established {
        peer, mut session, ..
    } = est;
    let cfg = &gw.cfg;
    let metrics = gw.node.metrics().clone();
    let mut inflight = FuturesUnordered::new();
    let mut shutdown = gw.shutdown_signal();
    let mut draining = *shutdown.borrow();
    // A newer session of this identity completed its handshake: drain the
    // submissions in flight, then a close frame.
    let mut superseded = false;
    let mut replaced_open = true;
    let mut events_open = true;
    let idle = tokio::time::sleep(cfg.idle_timeout);
    tokio::pin!(idle);
    let wt = cfg.write_timeout;

    macro_rules! write_or_end {
        ($fut:expr) => {
            match tokio::time::timeout(wt, $fut).await {
                Ok(Ok(())) => {}
                _ => return LinkEnd::Io,
            }
        };
    }
    macro_rules! bad {
        ($reason:expr) => {
            if framed.codec_mut().count_bad($reason).is_err() {
                return LinkEnd::BadFrames;
            }
        };
    }

    loop {
        if superseded && inflight.is_empty() {
            if let Some(frame) = seal_close(&mut session) {
                let _ = tokio::time::timeout(wt, framed.send(&frame[..])).await;
            }
            return LinkEnd::Replaced;
        }
        if draining && inflight.is_empty() {
            send_clear(gw, framed, Refusal::ShuttingDown).await;
            return LinkEnd::ShuttingDown;
        }
        let can_read = !draining && !superseded && inflight.len() < cfg.max_inflight;
        tokio::select! {
            biased;
            ev = events.recv(), if events_open => {
                let recheck = match ev {
                    Ok(NodeEvent::PermissionsChanged(keys)) => keys.contains(&peer),
                    Ok(_) => false,
                    Err(RecvError::Lagged(_)) => true,
                    Err(RecvError::Closed) => {
                        events_open = false;
                        draining = true;
                        false
                    }
                };
                if recheck && !gw.node.state().has(&peer, Permissions::CONNECT) {
                    tracing::info!(device = %peer, "identity lost CONNECT: closing its session");
                    send_clear(gw, framed, Refusal::Revoked).await;
                    return LinkEnd::Revoked;
                }
            }
            _ = shutdown.changed(), if !draining => {
                draining = true;
            }
            r = &mut replaced, if replaced_open => {
                replaced_open = false;
                if r.is_ok() {
                    tracing::info!(device = %peer, "a newer session of this identity replaces this one");
                    superseded = true;
                }
            }
            Some((seq, res)) = inflight.next(), if !inflight.is_empty() => {
                let mut replies = vec![answer(seq, res)];
                while let Some(Some((seq, res))) = inflight.next().now_or_never() {
                    replies.push(answer(seq, res));
                }
                for m in &replies {
                    let Some(frame) = seal_msg(&mut session, m) else { return LinkEnd::Io };
                    write_or_end!(framed.feed(&frame[..]));
                }
                write_or_end!(SinkExt::<&[u8]>::flush(framed));
                idle.as_mut().reset(tokio::time::Instant::now() + cfg.idle_timeout);
            }
            frame = framed.next(), if can_read => {
                idle.as_mut().reset(tokio::time::Instant::now() + cfg.idle_timeout);
                let mut bytes = match frame {
                    None => return LinkEnd::PeerClosed,
                    Some(Err(CodecError::TooManyBadFrames(_))) => return LinkEnd::BadFrames,
                    Some(Err(_)) => return LinkEnd::Io,
                    Some(Ok(b)) => b,
                };
                let ct_range = match link::decode::<LinkFrame>(&bytes) {
                    Ok(LinkFrame::Session(ct)) => {
                        let start = ct.as_ptr() as usize - bytes.as_ptr() as usize;
                        Some(start..start + ct.len())
                    }
                    // the device restarted: a new handshake on this link
                    Ok(LinkFrame::Hello(_)) => None,
                    Ok(_) => { bad!("unexpected_frame"); continue; }
                    Err(_) => { bad!("malformed_frame"); continue; }
                };
                let Some(ct_range) = ct_range else {
                    *hello = Some(bytes);
                    return LinkEnd::Rehandshake;
                };
                let opened = match session.open_in_place(&mut bytes[ct_range]) {
                    Ok(o) => o,
                    Err(e) => {
                        bad!(match e {
                            SessionError::Replayed => "replayed_frame",
                            SessionError::Decrypt => "undecryptable",
                            _ => "malformed_session_frame",
                        });
                        continue;
                    }
                };
                match opened.kind {
                    FRAME_DATA => {}
                    FRAME_CLOSE => return LinkEnd::PeerClosed,
                    _ => { bad!("unknown_kind"); continue; }
                }
                match link::decode::<DeviceMsg>(opened.payload) {
                    Ok(DeviceMsg::Submit(tx)) => match Transaction::decode(tx) {
                        Ok(t) => inflight.push(submit_future(&gw.node, t, tx.to_vec(), peer)),
                        Err(_) => {
                            metrics.reject(RejectReason::Malformed.as_str());
                            let m = GatewayMsg::Reject { sequence: 0, reason: RejectReason::Malformed };
                            let Some(frame) = seal_msg(&mut session, &m) else { return LinkEnd::Io };
                            write_or_end!(framed.send(&frame[..]));
                        }
                    },
                    Ok(DeviceMsg::Ping(n)) => {
                        let Some(frame) = seal_msg(&mut session, &GatewayMsg::Pong(n)) else { return LinkEnd::Io };
                        write_or_end!(framed.send(&frame[..]));
                    }
                    Err(_) => { bad!("malformed_message"); }
                }
            }
            _ = &mut idle, if inflight.is_empty() && !draining && !superseded => {
                return LinkEnd::Idle;
            }
        }
    }
}

/// The largest transaction a `Submit` can carry inside one link frame.
pub const MAX_SUBMIT: usize = LINK_MAX_FRAME - FRAME_OVERHEAD - 8;
