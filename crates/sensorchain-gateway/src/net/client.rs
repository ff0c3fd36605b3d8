//! The initiator side of a link, for simulated sensors, the demo and tests:
//! connect, handshake (refusing any gateway not in the trusted set), then
//! submit signed transactions through the session and read the gateway's
//! answers.
//!
//! A [`Client`] is one task's state (no background task, no thread): many
//! thousands fit in one process.
//!
//! ```no_run
//! # async fn f(chain: sensorchain_core::hash::ChainId, kp: sensorchain_core::identity::Keypair,
//! #            gw: sensorchain_core::identity::PublicKey, tx: Vec<u8>) -> Result<(), sensorchain_gateway::net::client::ClientError> {
//! use sensorchain_gateway::net::client::Client;
//! let mut c = Client::connect("127.0.0.1:7400", &chain, &kp, &[gw]).await?;
//! let answer = c.submit(&tx).await?; // Ack { sequence, tx_id, height } once committed
//! # let _ = answer; Ok(()) }
//! ```

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use sensorchain_core::handshake::{HandshakeConfig, HandshakeError};
use sensorchain_core::hash::{ChainId, Hash32};
use sensorchain_core::identity::{Keypair, PublicKey};
use sensorchain_core::link::{
    ConnError, DeviceMsg, End, GatewayMsg, InitiatorConfig, InitiatorConnection, InitiatorEvent,
    LINK_MAX_FRAME, Refusal, RejectReason,
};
use sensorchain_core::tx::Transaction;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};

use super::mono_ms;

/// Most submissions one client may have in flight (a larger pipelining
/// window is clamped to it).
pub const MAX_WINDOW: usize = 256;
/// Bytes of the connection's transmit queue (frames are drained as soon as
/// they are queued).
const TX_QUEUE: usize = 4096;
/// Bytes read from the stream at once.
const READ_CHUNK: usize = 4096;

/// The core connection a client runs.
type Conn = InitiatorConnection<LINK_MAX_FRAME, TX_QUEUE, MAX_WINDOW>;

/// Default time a connect (TCP and handshake) or one answer may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The gateway refused the link or closed it with a reason (in clear).
    #[error("refused by the gateway: {0}")]
    Refused(Refusal),
    /// The handshake failed on this side (e.g. an untrusted, rogue gateway).
    #[error("handshake: {0}")]
    Handshake(HandshakeError),
    /// The byte stream failed.
    #[error("link I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The gateway closed the link without a reason.
    #[error("link closed by the gateway")]
    Closed,
    /// No answer in time.
    #[error("timed out")]
    Timeout,
    /// The gateway sent something this protocol does not allow.
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// The transaction to submit does not decode or does not fit a frame.
    #[error("bad transaction: {0}")]
    BadTransaction(String),
}

impl ClientError {
    /// True for a failure that leaves the caller *not connected* and that a
    /// new attempt may cure: the gateway was busy (its tables full, or this
    /// identity's handshake rate spent), shutting down, dropped the
    /// handshake (e.g. its handshake timeout passed on a loaded gateway),
    /// closed the link, the byte stream failed, or no answer came in time.
    /// Refusals that name the caller (unknown, not permitted, revoked, wrong
    /// chain, version) and a rogue gateway are not retryable.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Refused(r) => matches!(
                r,
                Refusal::Busy | Refusal::HandshakeFailed | Refusal::ShuttingDown
            ),
            ClientError::Io(_) | ClientError::Closed | ClientError::Timeout => true,
            _ => false,
        }
    }
}

impl From<ConnError> for ClientError {
    fn from(e: ConnError) -> Self {
        match e {
            ConnError::TooLarge => ClientError::BadTransaction("too large for a link frame".into()),
            ConnError::InFlightFull => ClientError::Protocol("too many submissions in flight"),
            ConnError::NotEstablished => ClientError::Closed,
            ConnError::Exhausted => ClientError::Protocol("session exhausted"),
            ConnError::Handshake(e) => ClientError::Handshake(e),
            _ => ClientError::Protocol("link connection refused the command"),
        }
    }
}

impl ClientError {
    /// The error for how a session (or handshake) ended.
    fn of_end(e: End) -> ClientError {
        match e {
            End::Refused(r) => ClientError::Refused(r),
            End::HandshakeFailed(e) => ClientError::Handshake(e),
            End::HandshakeTimeout | End::AnswerTimeout => ClientError::Timeout,
            End::Protocol => {
                ClientError::Protocol("the gateway sent a message this protocol does not allow")
            }
            _ => ClientError::Closed,
        }
    }
}

/// What became of one transaction given to [`Client::deliver`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Acknowledged: durably committed (the `Ack`).
    Committed(GatewayMsg),
    /// Resent after a broken link and refused as a replay, and it has the
    /// highest sequence delivered: the chain's last sequence of this
    /// identity is exactly this one, so this transaction was committed
    /// (through the link that broke).
    CommittedEarlier,
    /// Resent after a broken link and refused as a replay while a later
    /// sequence was delivered too: the chain holds this sequence or a later
    /// one; whether this very transaction is committed cannot be told from
    /// the link.
    Unconfirmed,
    /// Refused (`Reject` or `Busy`), with the answer.
    Refused(GatewayMsg),
}

impl Delivery {
    fn of(m: GatewayMsg, resent: bool, top: bool) -> Delivery {
        match m {
            GatewayMsg::Ack { .. } => Delivery::Committed(m),
            GatewayMsg::Reject {
                reason: RejectReason::Replay,
                ..
            } if resent => {
                if top {
                    Delivery::CommittedEarlier
                } else {
                    Delivery::Unconfirmed
                }
            }
            m => Delivery::Refused(m),
        }
    }

    /// True when the transaction is known to be committed.
    pub fn is_committed(&self) -> bool {
        matches!(self, Delivery::Committed(_) | Delivery::CommittedEarlier)
    }
}

fn sequences(txs: &[Vec<u8>]) -> Result<Vec<u64>, ClientError> {
    txs.iter()
        .map(|t| {
            Transaction::decode(t)
                .map(|tx| tx.body.sequence)
                .map_err(|e| ClientError::BadTransaction(e.to_string()))
        })
        .collect()
}

/// An established link to a gateway: a tokio driver around core's
/// [`InitiatorConnection`] (which owns the framing, the handshake messages,
/// the session and the matching of answers).
pub struct Client<S = TcpStream> {
    io: S,
    conn: Box<Conn>,
    /// Bytes read and not yet taken by the connection: `rbuf[rpos..rlen]`.
    rbuf: Vec<u8>,
    rpos: usize,
    rlen: usize,
    /// What the gateway said, in order, until the session ended.
    inbox: VecDeque<Result<GatewayMsg, End>>,
    gateway: PublicKey,
    transcript: Hash32,
    timeout: Duration,
}

impl<S> std::fmt::Debug for Client<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("gateway", &self.gateway)
            .finish_non_exhaustive()
    }
}

impl Client<TcpStream> {
    /// Connects over TCP and handshakes as `identity` for `chain`, trusting
    /// only `trusted_gateways`. Bounded by [`DEFAULT_TIMEOUT`].
    pub async fn connect(
        addr: impl ToSocketAddrs,
        chain: &ChainId,
        identity: &Keypair,
        trusted_gateways: &[PublicKey],
    ) -> Result<Self, ClientError> {
        tokio::time::timeout(DEFAULT_TIMEOUT, async {
            let s = TcpStream::connect(addr).await?;
            let _ = s.set_nodelay(true);
            Client::handshake(s, chain, identity, trusted_gateways).await
        })
        .await
        .map_err(|_| ClientError::Timeout)?
    }

    /// [`connect`](Client::connect), retried with backoff while the failure
    /// [`is_retryable`](ClientError::is_retryable) (busy, a handshake the
    /// gateway dropped, a closed link) for at most `patience`. The result is
    /// a session the gateway has confirmed, or the last error.
    pub async fn connect_retrying(
        addr: std::net::SocketAddr,
        chain: &ChainId,
        identity: &Keypair,
        trusted_gateways: &[PublicKey],
        patience: Duration,
    ) -> Result<Self, ClientError> {
        Client::handshake_retrying(
            || async move {
                let s = TcpStream::connect(addr).await?;
                let _ = s.set_nodelay(true);
                Ok(s)
            },
            chain,
            identity,
            trusted_gateways,
            patience,
        )
        .await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Handshakes as initiator over an open byte stream (TCP, serial, an
    /// in-memory duplex).
    pub async fn handshake(
        stream: S,
        chain: &ChainId,
        identity: &Keypair,
        trusted_gateways: &[PublicKey],
    ) -> Result<Self, ClientError> {
        let mut config = InitiatorConfig::new(HandshakeConfig::new(*chain));
        // answers are waited for by `recv`'s own timeout
        config.answer_timeout_ms = u64::MAX / 4;
        let mut client = Client {
            io: stream,
            conn: Box::new(Conn::new(config)),
            rbuf: vec![0u8; READ_CHUNK],
            rpos: 0,
            rlen: 0,
            inbox: VecDeque::new(),
            gateway: PublicKey([0; 32]),
            transcript: Hash32::ZERO,
            timeout: DEFAULT_TIMEOUT,
        };
        client.conn.start(identity, &mut rand::rng(), mono_ms())?;
        client.transmit().await?;
        loop {
            if let Some(ev) = client.conn.poll_event() {
                match ev {
                    InitiatorEvent::ChallengeReceived => {
                        client
                            .conn
                            .finish_handshake(identity, trusted_gateways, mono_ms())
                            .map_err(ClientError::Handshake)?;
                    }
                    InitiatorEvent::Established { peer, transcript } => {
                        client.gateway = peer;
                        client.transcript = transcript;
                        break;
                    }
                    InitiatorEvent::Ended(e) => return Err(ClientError::of_end(e)),
                    _ => {}
                }
                continue;
            }
            if !client.feed() && !client.read().await? {
                return Err(ClientError::Closed);
            }
        }
        client.transmit().await?;
        client.confirm().await?;
        Ok(client)
    }

    /// Writes what the connection queued.
    async fn transmit(&mut self) -> Result<(), ClientError> {
        let mut buf = [0u8; 2048];
        let mut wrote = false;
        while let Some(n) = self.conn.poll_transmit(&mut buf) {
            self.io.write_all(&buf[..n]).await?;
            wrote = true;
        }
        if wrote {
            self.io.flush().await?;
        }
        Ok(())
    }

    /// The bytes the connection queued, drained (COBS frames with their
    /// delimiters).
    fn drain(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        while let Some(n) = self.conn.poll_transmit(&mut buf) {
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    /// Feeds bytes already read to the connection; false if there were
    /// none.
    fn feed(&mut self) -> bool {
        if self.rpos >= self.rlen {
            return false;
        }
        let used = self
            .conn
            .handle_input(&self.rbuf[self.rpos..self.rlen], mono_ms());
        self.rpos += used;
        true
    }

    /// Reads more bytes (cancel-safe); false at the end of the stream.
    async fn read(&mut self) -> Result<bool, ClientError> {
        let n = self.io.read(&mut self.rbuf).await?;
        self.rpos = 0;
        self.rlen = n;
        Ok(n > 0)
    }

    /// Waits until the gateway confirms the session. After its Proof an
    /// initiator knows nothing: the gateway may still refuse (its handshake
    /// timeout passed, the identity was revoked meanwhile) and close. The
    /// first authenticated frame from the gateway is the confirmation, so
    /// the client sends a ping and waits for its pong (at most the
    /// timeout); a clear `Refused`, the end of the link or an I/O error
    /// before it mean *not connected*, with nothing of this session
    /// processed by the gateway.
    async fn confirm(&mut self) -> Result<(), ClientError> {
        let nonce: u32 = rand::random();
        self.send(&DeviceMsg::Ping(nonce)).await?;
        match self.recv().await? {
            GatewayMsg::Pong(n) if n == nonce => Ok(()),
            _ => Err(ClientError::Protocol("expected the confirming pong")),
        }
    }

    /// Dials with `dial` and handshakes, again with backoff (50 ms doubling
    /// to 1 s, with jitter) while the failure
    /// [`is_retryable`](ClientError::is_retryable), for at most `patience`.
    pub async fn handshake_retrying<D, F>(
        mut dial: D,
        chain: &ChainId,
        identity: &Keypair,
        trusted_gateways: &[PublicKey],
        patience: Duration,
    ) -> Result<Self, ClientError>
    where
        D: FnMut() -> F,
        F: std::future::Future<Output = std::io::Result<S>>,
    {
        let deadline = tokio::time::Instant::now() + patience;
        let mut backoff = Duration::from_millis(50);
        loop {
            let attempt = async {
                let s = dial().await?;
                Client::handshake(s, chain, identity, trusted_gateways).await
            };
            let err = match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok(c)) => return Ok(c),
                Ok(Err(e)) => e,
                Err(_) => ClientError::Timeout,
            };
            let now = tokio::time::Instant::now();
            if !err.is_retryable() || now >= deadline {
                return Err(err);
            }
            let jitter = Duration::from_millis(u64::from(rand::random::<u8>()));
            tokio::time::sleep_until((now + backoff + jitter).min(deadline)).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// Gives the byte stream back without closing the session (what a
    /// device that restarts leaves behind on a serial line); bytes read
    /// but not yet consumed are dropped.
    pub fn into_stream(self) -> S {
        self.io
    }

    /// The gateway's authenticated key.
    pub fn gateway(&self) -> PublicKey {
        self.gateway
    }

    /// The handshake's transcript hash (a session id).
    pub fn transcript(&self) -> Hash32 {
        self.transcript
    }

    /// Sets how long [`recv`](Self::recv) waits for one answer.
    pub fn set_timeout(&mut self, t: Duration) {
        self.timeout = t;
    }

    /// Seals `msg` and returns the complete wire bytes (COBS frame with its
    /// delimiter) without sending them; the session counter advances (a
    /// `Submit` counts as in flight until its answer).
    pub fn seal(&mut self, msg: &DeviceMsg<'_>) -> Result<Vec<u8>, ClientError> {
        let queued = self.drain();
        match msg {
            DeviceMsg::Submit(tx) => self.conn.submit(tx, mono_ms()).map(|_| ())?,
            DeviceMsg::Ping(n) => self.conn.ping(*n)?,
        }
        let mut wire = queued;
        wire.extend(self.drain());
        Ok(wire)
    }

    /// Writes raw bytes to the stream (after anything buffered): for tests
    /// of what a gateway does with garbage, replays and partial frames.
    pub async fn send_wire(&mut self, wire: &[u8]) -> Result<(), ClientError> {
        self.transmit().await?;
        self.io.write_all(wire).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// Sends one message through the session.
    pub async fn send(&mut self, msg: &DeviceMsg<'_>) -> Result<(), ClientError> {
        let wire = self.seal(msg)?;
        self.send_wire(&wire).await
    }

    /// Waits for the next message from the gateway (at most the timeout). A
    /// `Refused` frame (revocation, shutdown) is
    /// [`ClientError::Refused`]; the end of the stream [`ClientError::Closed`].
    /// Cancel-safe.
    pub async fn recv(&mut self) -> Result<GatewayMsg, ClientError> {
        let t = self.timeout;
        tokio::time::timeout(t, self.recv_inner())
            .await
            .map_err(|_| ClientError::Timeout)?
    }

    async fn recv_inner(&mut self) -> Result<GatewayMsg, ClientError> {
        loop {
            while let Some(ev) = self.conn.poll_event() {
                match ev {
                    InitiatorEvent::Answer { answer, .. } => self.inbox.push_back(Ok(answer)),
                    InitiatorEvent::Pong(n) => self.inbox.push_back(Ok(GatewayMsg::Pong(n))),
                    InitiatorEvent::Ended(e) => self.inbox.push_back(Err(e)),
                    _ => {}
                }
            }
            match self.inbox.front() {
                Some(Ok(_)) => {
                    if let Some(Ok(m)) = self.inbox.pop_front() {
                        return Ok(m);
                    }
                }
                // the end stays: every later call sees it too
                Some(Err(e)) => return Err(ClientError::of_end(*e)),
                None => {}
            }
            if self.feed() {
                continue;
            }
            if !self.read().await? {
                // the stream ended: the session with it (what is in flight
                // is reported unanswered, then the end)
                self.conn.abort();
                self.inbox.push_back(Err(End::Closed));
            }
        }
    }

    /// Submits one transaction (its exact encoding) and waits for its answer:
    /// `Ack` once durably committed, `Reject` with a reason, or `Busy`.
    pub async fn submit(&mut self, encoded_tx: &[u8]) -> Result<GatewayMsg, ClientError> {
        let mut v = self.submit_pipelined(&[encoded_tx.to_vec()], 1).await?;
        v.pop().ok_or(ClientError::Closed)
    }

    /// Submits many transactions with up to `window` in flight, answers
    /// matched by sequence number; returns the answers in the order of
    /// `txs`. Sequence numbers should increase along `txs` (a gateway
    /// refuses a lower one after a higher one as a replay). If the link
    /// breaks, what was answered so far is lost to the caller: use
    /// [`deliver`](Client::deliver) to resend on a new session.
    pub async fn submit_pipelined(
        &mut self,
        txs: &[Vec<u8>],
        window: usize,
    ) -> Result<Vec<GatewayMsg>, ClientError> {
        let seqs = sequences(txs)?;
        let all: Vec<usize> = (0..txs.len()).collect();
        let mut written = vec![false; txs.len()];
        let mut answers: Vec<Option<GatewayMsg>> = vec![None; txs.len()];
        self.pipeline(txs, &seqs, &all, window, &mut written, &mut answers)
            .await?;
        Ok(answers
            .into_iter()
            .map(|a| a.unwrap_or(GatewayMsg::Busy { sequence: 0 }))
            .collect())
    }

    /// Sends `txs[i]` for every `i` in `which` (up to `window` in flight)
    /// and records each answer in `answers[i]`, and in `written[i]` that
    /// the transaction went out. Returns early with the error if the link
    /// breaks; what was recorded stays.
    async fn pipeline(
        &mut self,
        txs: &[Vec<u8>],
        seqs: &[u64],
        which: &[usize],
        window: usize,
        written: &mut [bool],
        answers: &mut [Option<GatewayMsg>],
    ) -> Result<(), ClientError> {
        let window = window.clamp(1, MAX_WINDOW);
        let mut waiting: HashMap<u64, VecDeque<usize>> = HashMap::new();
        let (mut sent, mut done) = (0, 0);
        while done < which.len() {
            while sent < which.len() && sent - done < window {
                let i = which[sent];
                let wire = self.seal(&DeviceMsg::Submit(&txs[i]))?;
                written[i] = true;
                self.io.write_all(&wire).await?;
                waiting.entry(seqs[i]).or_default().push_back(i);
                sent += 1;
            }
            self.io.flush().await?;
            let m = self.recv().await?;
            let seq = match m {
                GatewayMsg::Ack { sequence, .. }
                | GatewayMsg::Reject { sequence, .. }
                | GatewayMsg::Busy { sequence } => sequence,
                GatewayMsg::Pong(_) => continue,
            };
            if let Some(i) = waiting.get_mut(&seq).and_then(|q| q.pop_front()) {
                answers[i] = Some(m);
                done += 1;
            } else if matches!(m, GatewayMsg::Reject { sequence: 0, .. }) {
                return Err(ClientError::Protocol(
                    "gateway could not decode a transaction",
                ));
            }
        }
        Ok(())
    }

    /// Delivers `txs` (increasing sequence numbers, all above any this
    /// identity signed before) through sessions opened with `dial`: when a
    /// link breaks, a new session is opened
    /// ([`handshake_retrying`](Client::handshake_retrying)) and every
    /// transaction without an answer is sent again, for at most `patience`
    /// in all. The chain's replay rule by (signer, sequence) makes a resend
    /// harmless: nothing is committed twice. Returns the last session and
    /// one [`Delivery`] per transaction.
    ///
    /// A resent transaction refused as a replay is ambiguous: the chain holds
    /// a transaction of this identity with this sequence *or a later one*.
    /// It counts as committed ([`Delivery::CommittedEarlier`]) only when it
    /// has the highest sequence of `txs`: nothing of this identity above it
    /// was ever signed, so the committed one is this very transaction.
    /// Otherwise it is [`Delivery::Unconfirmed`] (the earlier copy may have
    /// been refused, e.g. `Busy`, while a later one was committed; look its
    /// id up through the API to know).
    pub async fn deliver<D, F>(
        mut dial: D,
        chain: &ChainId,
        identity: &Keypair,
        trusted_gateways: &[PublicKey],
        txs: &[Vec<u8>],
        window: usize,
        patience: Duration,
    ) -> Result<(Self, Vec<Delivery>), ClientError>
    where
        D: FnMut() -> F,
        F: std::future::Future<Output = std::io::Result<S>>,
    {
        let seqs = sequences(txs)?;
        let top = seqs.iter().copied().max();
        let deadline = tokio::time::Instant::now() + patience;
        let mut written = vec![false; txs.len()];
        let mut answers: Vec<Option<GatewayMsg>> = vec![None; txs.len()];
        // transactions written on a link that broke before their answer
        let mut resent = vec![false; txs.len()];
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let mut c =
                Client::handshake_retrying(&mut dial, chain, identity, trusted_gateways, left)
                    .await?;
            let which: Vec<usize> = (0..txs.len()).filter(|&i| answers[i].is_none()).collect();
            for &i in &which {
                resent[i] |= written[i];
            }
            match c
                .pipeline(txs, &seqs, &which, window, &mut written, &mut answers)
                .await
            {
                Ok(()) => {
                    let out = answers
                        .into_iter()
                        .zip(&seqs)
                        .zip(resent)
                        .map(|((a, &seq), resent)| {
                            Delivery::of(
                                a.unwrap_or(GatewayMsg::Busy { sequence: seq }),
                                resent,
                                Some(seq) == top,
                            )
                        })
                        .collect();
                    return Ok((c, out));
                }
                Err(e) if e.is_retryable() && tokio::time::Instant::now() < deadline => {
                    tracing::debug!(
                        "link broke during delivery ({e}): resending what has no answer"
                    );
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends a ping and waits for its pong.
    pub async fn ping(&mut self, n: u32) -> Result<(), ClientError> {
        self.send(&DeviceMsg::Ping(n)).await?;
        loop {
            if self.recv().await? == GatewayMsg::Pong(n) {
                return Ok(());
            }
        }
    }

    /// Sends a session close frame and shuts the stream down.
    pub async fn close(mut self) {
        self.conn.close();
        let _ = self.transmit().await;
        let _ = self.io.shutdown().await;
    }
}
