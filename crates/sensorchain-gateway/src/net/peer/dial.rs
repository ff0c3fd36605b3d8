//! The dialling side of a peer link: one [`PeerLink`] per peer, owning one
//! task that connects when there is something to send, handshakes (the
//! peer must prove the key it is dialled as), sends requests as they come
//! (at most [`PeerConfig::max_inflight`] unanswered) and routes each
//! answer, by id, to its waiter.
//!
//! * **Lazily, with backoff.** Nothing is dialled until the first request.
//!   A failed dial (refused, unreachable, a handshake that fails) fails the
//!   requests waiting and starts a backoff (from
//!   [`PeerConfig::backoff_min`], doubling, up to
//!   [`PeerConfig::backoff_max`]); requests made during it fail at once
//!   ([`PeerError::Unreachable`]: openraft then backs off on its own).
//! * **No silent loss.** A request gets exactly one of: its answer,
//!   [`PeerError::Timeout`] (its own time ran out; a late answer is
//!   dropped), or [`PeerError::Unreachable`] (the link ended first: it may
//!   or may not have been served).
//! * **Dead links.** A link that owes answers and for
//!   [`PeerConfig::dead_after`] has neither received a byte nor had one
//!   taken by the peer is closed and dialled again.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sensorchain_core::handshake::{Initiator, MESSAGE1_LEN, MESSAGE3_LEN};
use sensorchain_core::identity::PublicKey;
use sensorchain_core::peer::{
    Answer, Kind, PEER_MAX_MESSAGE, PeerAnswer, PeerConnection, PeerEvent, PeerRequest, Request,
    Violation,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{PeerConfig, PeerError, blocking, stopped};
use crate::net::mono_ms;

/// Bytes read from the socket at once.
const READ_CHUNK: usize = 64 * 1024;

/// An answer, as received: the whole answer message, checked to decode
/// and to answer its request's kind.
#[derive(Clone, PartialEq, Eq)]
pub struct Answered(Vec<u8>);

impl std::fmt::Debug for Answered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Answered({} B)", self.0.len())
    }
}

impl Answered {
    /// The answer's body.
    pub fn body(&self) -> Answer<'_> {
        // Checked to decode when it arrived.
        PeerAnswer::decode(&self.0).map_or(Answer::Malformed, |a| a.body)
    }
}

type Reply = oneshot::Sender<Result<Answered, PeerError>>;

/// A request handed to the link's task.
struct Job {
    id: u64,
    kind: Kind,
    message: Vec<u8>,
    reply: Reply,
}

impl Job {
    fn fail(self, e: PeerError) {
        let _ = self.reply.send(Err(e));
    }
}

/// The link to one peer (cheap to clone; its task ends once every clone is
/// dropped or at shutdown).
#[derive(Clone)]
pub struct PeerLink {
    inner: Arc<LinkInner>,
}

struct LinkInner {
    tx: mpsc::Sender<Job>,
    next_id: AtomicU64,
    addr: String,
    key: PublicKey,
    metrics: Arc<super::metrics::PeerMetrics>,
}

impl std::fmt::Debug for PeerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerLink")
            .field("addr", &self.inner.addr)
            .field("key", &self.inner.key)
            .finish_non_exhaustive()
    }
}

impl PeerLink {
    /// The link to the peer at `addr` that must prove `key`; its task is
    /// spawned into `tasks` and ends when `shutdown` turns true (or its
    /// sender is dropped), or when every clone of the link is dropped.
    pub fn new(
        cfg: Arc<PeerConfig>,
        addr: String,
        key: PublicKey,
        shutdown: watch::Receiver<bool>,
        tasks: &mut JoinSet<()>,
    ) -> PeerLink {
        let (tx, rx) = mpsc::channel(cfg.queue.max(1));
        let metrics = cfg.metrics.clone();
        tasks.spawn(run(cfg, addr.clone(), key, rx, shutdown));
        PeerLink {
            inner: Arc::new(LinkInner {
                tx,
                next_id: AtomicU64::new(0),
                addr,
                key,
                metrics,
            }),
        }
    }

    /// The peer's address.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// The key the peer must prove.
    pub fn key(&self) -> &PublicKey {
        &self.inner.key
    }

    /// Sends `body` and waits for its answer, at most `timeout` in all
    /// (queueing, dialling and the answer). The answer's body matches the
    /// request's kind (or is [`Answer::Malformed`]).
    pub async fn request(
        &self,
        body: Request<'_>,
        timeout: Duration,
    ) -> Result<Answered, PeerError> {
        let sent = Instant::now();
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let kind = body.kind();
        let message = PeerRequest { id, body }.to_vec();
        let len = message.len();
        let r = self.send(id, kind, message, sent + timeout, timeout).await;
        let answered = r.as_ref().map(|a| a.0.len());
        self.inner
            .metrics
            .request(kind, len, answered, sent.elapsed().as_secs_f64());
        r
    }

    /// Queues request `id` and waits for its answer until `deadline`
    /// (`timeout` from the start, as the error reports it).
    async fn send(
        &self,
        id: u64,
        kind: Kind,
        message: Vec<u8>,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Answered, PeerError> {
        if message.len() > PEER_MAX_MESSAGE {
            return Err(PeerError::TooLarge(message.len()));
        }
        let (reply, answer) = oneshot::channel();
        let job = Job {
            id,
            kind,
            message,
            reply,
        };
        match tokio::time::timeout_at(deadline, self.inner.tx.send(job)).await {
            Err(_) => return Err(PeerError::Timeout(timeout)),
            Ok(Err(_)) => return Err(PeerError::Shutdown),
            Ok(Ok(())) => {}
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Err(_) => Err(PeerError::Timeout(timeout)),
            Ok(Err(_)) => Err(PeerError::Shutdown),
            Ok(Ok(r)) => r,
        }
    }
}

/// The link's task: waits for a request, dials, serves the session until
/// it ends, again.
async fn run(
    cfg: Arc<PeerConfig>,
    addr: String,
    key: PublicKey,
    mut rx: mpsc::Receiver<Job>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = cfg.backoff_min;
    let mut down: Option<(Instant, String)> = None;
    loop {
        let first = tokio::select! {
            biased;
            _ = stopped(&mut shutdown) => break,
            j = rx.recv() => match j {
                Some(j) => j,
                None => break,
            },
        };
        if first.reply.is_closed() {
            continue;
        }
        if let Some((until, why)) = &down
            && Instant::now() < *until
        {
            first.fail(PeerError::Unreachable(format!("{addr}: {why}")));
            continue;
        }
        let dialled = tokio::select! {
            biased;
            _ = stopped(&mut shutdown) => {
                first.fail(PeerError::Shutdown);
                break;
            }
            r = dial(&cfg, &addr, &key) => r,
        };
        cfg.metrics.dialled(dialled.is_ok());
        match dialled {
            Err(why) => {
                tracing::debug!(peer = %addr, error = %why, ?backoff, "peer link: dial failed");
                first.fail(PeerError::Unreachable(format!("{addr}: {why}")));
                while let Ok(j) = rx.try_recv() {
                    j.fail(PeerError::Unreachable(format!("{addr}: {why}")));
                }
                down = Some((Instant::now() + backoff, why));
                backoff = (backoff * 2).min(cfg.backoff_max);
            }
            Ok(open) => {
                tracing::debug!(peer = %addr, "peer link: session established");
                down = None;
                backoff = cfg.backoff_min;
                cfg.metrics.sessions_dialled.inc();
                let why = Session::new(&cfg, open, &addr)
                    .run(first, &mut rx, &mut shutdown)
                    .await;
                cfg.metrics.sessions_dialled.dec();
                tracing::debug!(peer = %addr, why = %why, "peer link: session ended");
            }
        }
    }
    rx.close();
    while let Some(j) = rx.recv().await {
        j.fail(PeerError::Shutdown);
    }
}

/// A dialled link whose session is open: the stream, the connection, and
/// the bytes read after the responder's Challenge (if any).
struct Open {
    stream: TcpStream,
    conn: PeerConnection,
    leftover: Vec<u8>,
}

/// TCP connect and handshake, each within its timeout.
async fn dial(cfg: &PeerConfig, addr: &str, key: &PublicKey) -> Result<Open, String> {
    let stream = match tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err("connect timed out".into()),
        Ok(Err(e)) => return Err(format!("connect: {e}")),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    match tokio::time::timeout(cfg.handshake_timeout, handshake(cfg, stream, *key)).await {
        Err(_) => Err("handshake timed out".into()),
        Ok(r) => r,
    }
}

/// The initiator's handshake: message 1, the responder's Challenge
/// verified against `key` (off the runtime), message 3.
async fn handshake(
    cfg: &PeerConfig,
    mut stream: TcpStream,
    key: PublicKey,
) -> Result<Open, String> {
    let hs = cfg.handshake();
    let identity = cfg.identity.clone();
    let started = blocking(move || {
        let mut m1 = [0u8; MESSAGE1_LEN];
        Initiator::start_peer(&hs, &identity, mono_ms(), &mut rand::rng(), &mut m1)
            .map(|(init, _)| (init, m1))
    })
    .await
    .map_err(|e| e.to_string())?;
    let (init, m1) = started.map_err(|e| format!("handshake: {e}"))?;
    let mut conn = PeerConnection::initiator(hs);
    conn.send_hello(&m1).map_err(|e| e.to_string())?;
    let mut init = Some(init);
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        while conn.has_transmit() {
            let out = conn.transmit();
            stream
                .write_all(out)
                .await
                .map_err(|e| format!("write: {e}"))?;
            let n = out.len();
            conn.advance(n);
        }
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed by the peer during the handshake".into());
        }
        let mut input = &buf[..n];
        loop {
            let used = conn.handle_input(input);
            input = &input[used..];
            match conn.poll_event() {
                Some(PeerEvent::Challenge(m2)) => {
                    let identity = cfg.identity.clone();
                    let Some(init) = init.take() else {
                        return Err("a second challenge".into());
                    };
                    let finished = blocking(move || {
                        let mut m3 = [0u8; MESSAGE3_LEN];
                        init.finish(&identity, &[key], &m2, mono_ms(), &mut m3)
                            .map(|(est, _)| (est, m3))
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                    let (est, m3) = finished.map_err(|e| format!("handshake: {e}"))?;
                    conn.send_proof(&m3, est.session)
                        .map_err(|e| e.to_string())?;
                    return Ok(Open {
                        stream,
                        conn,
                        leftover: input.to_vec(),
                    });
                }
                Some(PeerEvent::Ended(e)) => return Err(e.to_string()),
                Some(e) => return Err(format!("unexpected {e:?}")),
                None if input.is_empty() || used == 0 => break,
                None => {}
            }
        }
    }
}

/// A request sent and not yet answered.
struct Pending {
    kind: Kind,
    reply: Reply,
}

/// An open session of the link.
struct Session<'a> {
    cfg: &'a PeerConfig,
    addr: &'a str,
    conn: PeerConnection,
    rd: tokio::net::tcp::OwnedReadHalf,
    wr: OwnedWriteHalf,
    buf: Vec<u8>,
    /// Read and not yet taken: `buf[start..end]`.
    start: usize,
    end: usize,
    pending: HashMap<u64, Pending>,
}

impl<'a> Session<'a> {
    fn new(cfg: &'a PeerConfig, open: Open, addr: &'a str) -> Self {
        let (rd, wr) = open.stream.into_split();
        let mut buf = vec![0u8; READ_CHUNK.max(open.leftover.len())];
        buf[..open.leftover.len()].copy_from_slice(&open.leftover);
        Session {
            cfg,
            addr,
            conn: open.conn,
            rd,
            wr,
            buf,
            start: 0,
            end: open.leftover.len(),
            pending: HashMap::new(),
        }
    }

    /// Serves the session until it ends; every request still unanswered
    /// then fails. Returns why it ended.
    async fn run(
        mut self,
        first: Job,
        rx: &mut mpsc::Receiver<Job>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> String {
        self.queue(first);
        // The last sign of life of the peer: bytes read, or bytes it took
        // (TCP takes them only as far as the peer reads).
        let mut alive = Instant::now();
        let why = loop {
            if let Some(why) = self.take_input() {
                break why;
            }
            let dead = (!self.pending.is_empty()).then(|| alive + self.cfg.dead_after);
            let can_take = self.pending.len() < self.cfg.max_inflight.max(1);
            let reading = self.start >= self.end;
            let writing = self.conn.has_transmit();
            tokio::select! {
                biased;
                _ = stopped(&mut *shutdown) => {
                    self.conn.close();
                    self.flush_last().await;
                    break "shutting down".to_string();
                }
                n = self.rd.read(&mut self.buf), if reading => match n {
                    Ok(0) => {
                        self.conn.handle_eof();
                        let why = self.take_input();
                        break why.unwrap_or_else(|| "closed by the peer".into());
                    }
                    Ok(n) => {
                        self.start = 0;
                        self.end = n;
                        alive = Instant::now();
                    }
                    Err(e) => break format!("read: {e}"),
                },
                w = tokio::time::timeout(self.cfg.write_timeout, self.wr.write(self.conn.transmit())), if writing => match w {
                    Ok(Ok(n)) => {
                        self.conn.advance(n);
                        alive = Instant::now();
                    }
                    Ok(Err(e)) => break format!("write: {e}"),
                    Err(_) => break "write timed out".to_string(),
                },
                j = rx.recv(), if can_take => match j {
                    Some(job) => self.queue(job),
                    None => {
                        self.conn.close();
                        self.flush_last().await;
                        break "link dropped".to_string();
                    }
                },
                _ = tokio::time::sleep_until(dead.unwrap_or_else(Instant::now)), if dead.is_some() => {
                    break format!("no answer for {:?}", self.cfg.dead_after);
                }
            }
        };
        for (_, p) in self.pending.drain() {
            let _ = p
                .reply
                .send(Err(PeerError::Unreachable(format!("{}: {why}", self.addr))));
        }
        why
    }

    /// Puts a request on the session (a request whose waiter is gone is
    /// dropped unsent).
    fn queue(&mut self, job: Job) {
        if job.reply.is_closed() {
            return;
        }
        match self.conn.send(job.message) {
            Ok(()) => {
                self.pending.insert(
                    job.id,
                    Pending {
                        kind: job.kind,
                        reply: job.reply,
                    },
                );
            }
            Err(e) => {
                let _ = job
                    .reply
                    .send(Err(PeerError::Unreachable(format!("{}: {e}", self.addr))));
            }
        }
    }

    /// Feeds what was read to the connection and handles its events;
    /// `Some` once the link ended.
    fn take_input(&mut self) -> Option<String> {
        loop {
            let used = self.conn.handle_input(&self.buf[self.start..self.end]);
            self.start += used;
            let mut any = false;
            while let Some(ev) = self.conn.poll_event() {
                any = true;
                match ev {
                    PeerEvent::Message(m) => self.on_answer(m),
                    PeerEvent::Ended(e) => return Some(e.to_string()),
                    _ => self.conn.violation(Violation::Unexpected),
                }
            }
            if self.start >= self.end || (used == 0 && !any) {
                return None;
            }
        }
    }

    fn on_answer(&mut self, m: Vec<u8>) {
        let Ok(a) = PeerAnswer::decode(&m) else {
            return self.conn.violation(Violation::Malformed);
        };
        let Some(p) = self.pending.remove(&a.id) else {
            // The answer to a request whose time ran out.
            return;
        };
        if a.body.answers(p.kind) {
            let _ = p.reply.send(Ok(Answered(m)));
        } else {
            let _ = p.reply.send(Err(PeerError::Protocol(
                "the answer is of another kind than the request".into(),
            )));
            self.conn.violation(Violation::Malformed);
        }
    }

    /// Best effort for the last bytes (a close frame): at most a second.
    async fn flush_last(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while self.conn.has_transmit() {
                let out = self.conn.transmit();
                let n = out.len();
                if self.wr.write_all(out).await.is_err() {
                    return;
                }
                self.conn.advance(n);
            }
            let _ = self.wr.shutdown().await;
        })
        .await;
    }
}
