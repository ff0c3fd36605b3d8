//! The device loop: handshake, signed readings, answers, retry and resume.
//!
//! A blocking loop over a [`Transport`] and a [`Clock`] (the caller lends both,
//! and a [`rand_core::CryptoRng`], to each call), with all buffers of fixed
//! size on the stack: no `alloc`.
//!
//! ```text
//! Device::new            load PersistentState, boot_count += 1, save
//! Device::submit(vital)  reserve sequence (save first if above the ceiling)
//!                        sign (seal first if readers are configured)
//!                        loop: connect if no session  (Hello → Challenge → Proof)
//!                              Submit(tx) in a session frame
//!                              wait: Ack → Committed · Reject → Rejected
//!                                    Busy → back off, resend · Refused/timeout/link error →
//!                                    drop the session, reconnect, resend the same bytes
//! ```
//!
//! **Retransmission.** After a link drop the device cannot know whether the
//! gateway committed its transaction, so it resends *the same signed bytes*
//! (never a new transaction under the same sequence number). If the first
//! copy was committed the gateway answers `Reject { reason: Replay }`, which
//! the loop reports as [`Outcome::Duplicate`]: committed by an earlier
//! attempt. If every attempt fails, [`Device::submit`] returns the error and
//! keeps the transaction; the next [`Device::submit`] or
//! [`Device::flush`] sends it first. After a reboot the transaction is gone
//! but its sequence number stays reserved: the next one is higher.
//!
//! **Nonces.** Each connection is a fresh handshake (fresh ephemeral key
//! from the RNG, fresh directional keys, frame counters from 0), so no
//! (key, nonce) pair of the session AEAD repeats; a sealed payload draws a
//! fresh content key and ephemeral key. With [`crate::rng::Drbg`] the random
//! stream itself never repeats across boots.
//!
//! **The protocol.** Framing, the handshake, the session and the matching
//! of answers are core's [`InitiatorConnection`]: the loop only moves its
//! bytes between the link and the connection, runs the handshake's two
//! computations when the connection asks, and turns its events into
//! [`Outcome`]s.
//!
//! **Stack.** A device with 16 KiB of RAM has little to spare, so the loop
//! keeps one copy of everything: the pending transaction is signed straight
//! into its slot ([`Transaction::sign_reading_into`]); a submitted frame is
//! sealed and COBS-framed in place in the connection's transmit queue and
//! written to the link from there. The handshake and signing steps run in
//! their own (not inlined) frames so that their buffers are not held while
//! the next step runs. [`Device::set_probe`] lets a board time or measure
//! the steps.

use core::fmt;

use sensorchain_core::handshake::{HandshakeConfig, HandshakeError};
use sensorchain_core::hash::{ChainId, Hash32};
use sensorchain_core::identity::{Keypair, PublicKey};
use sensorchain_core::link::{
    ConnError, End, GatewayMsg, InitiatorConfig, InitiatorConnection, InitiatorEvent, Refusal,
    RejectReason,
};
use sensorchain_core::reading::Vital;
use sensorchain_core::sealed::{self, MAX_SEALED_PLAINTEXT, SealError};
use sensorchain_core::session::SessionError;
use sensorchain_core::tx::{Payload, Transaction, TxBody, TxError, TxKind, sealed_binding};

use crate::storage::{PersistentState, Storage};
use crate::transport::{Clock, Transport};

/// Largest encoded transaction the device produces (a sealed reading for 4
/// readers is about 480 bytes).
pub const TX_BUF: usize = 512;
/// Largest link frame the device accepts (gateway answers are below 100
/// bytes, message 2 is 106).
pub const RX_FRAME: usize = 256;
/// The connection's transmit queue: one submitted frame.
const TX_QUEUE: usize = TX_BUF + 40;
/// The device's connection: one submission in flight.
type Conn = InitiatorConnection<RX_FRAME, TX_QUEUE, 1>;
const _: () = assert!(TX_BUF + Conn::FRAME_COST <= TX_QUEUE);

/// A step of the loop, reported to the board's probe ([`Device::set_probe`])
/// as it happens: a board reads a cycle counter or the stack there to
/// measure the handshake and the signing on their own (without the waits for
/// the gateway).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Probe {
    /// A handshake starts: next, the ephemeral key is drawn and message 1
    /// computed.
    HandshakeStart,
    /// Message 1 is computed (it is sent next).
    Message1Ready,
    /// Message 2 arrived (the gateway's answer): next, it is checked and
    /// message 3 and the session keys are computed.
    Message2Received,
    /// Message 3 and the session keys are computed (it is sent next).
    Message3Ready,
    /// A new reading is about to be sealed (if readers are configured) and
    /// signed.
    SignStart,
    /// The reading's transaction is signed and stored as pending.
    Signed,
}

/// How the device talks to its gateways.
#[derive(Debug, Clone, Copy)]
pub struct DeviceConfig<'a> {
    /// The chain the device belongs to.
    pub chain: ChainId,
    /// The gateways it trusts (any other is refused as a rogue gateway).
    pub gateways: &'a [PublicKey],
    /// Readers to seal readings for (1..=4); empty: readings go in clear.
    pub seal_for: &'a [PublicKey],
    /// The stream number of this device's readings.
    pub stream: u16,
    /// Longest wait for message 2 of the handshake, ms.
    pub handshake_timeout_ms: u32,
    /// Longest wait for the answer to a submitted transaction, ms (the
    /// gateway answers after a durable commit).
    pub answer_timeout_ms: u32,
    /// Attempts (connections or resends) per transaction before
    /// [`Device::submit`] gives up and returns the last error.
    pub max_attempts: u32,
    /// Wait before resending after `Busy` or a failed attempt, ms (doubled
    /// per attempt, at most 16 times).
    pub backoff_ms: u32,
    /// Sequence numbers reserved per storage write (1: one write per
    /// reading; 64: one flash write per 64 readings, at most 63 numbers
    /// skipped by a reboot).
    pub sequence_block: u64,
}

impl<'a> DeviceConfig<'a> {
    /// Defaults: readings in clear on stream 0, 10 s handshake timeout, 10 s
    /// answer timeout, 8 attempts, 100 ms backoff, one storage write per
    /// reading.
    pub fn new(chain: ChainId, gateways: &'a [PublicKey]) -> Self {
        DeviceConfig {
            chain,
            gateways,
            seal_for: &[],
            stream: 0,
            handshake_timeout_ms: 10_000,
            answer_timeout_ms: 10_000,
            max_attempts: 8,
            backoff_ms: 100,
            sequence_block: 1,
        }
    }
}

/// The result of a submitted reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Durably committed in block `height`.
    Committed {
        /// The reading's sequence number.
        sequence: u64,
        /// Its transaction id.
        tx_id: Hash32,
        /// The block holding it.
        height: u64,
    },
    /// A resent copy was refused as a replay: an earlier attempt was
    /// committed but its acknowledgement was lost.
    Duplicate {
        /// The reading's sequence number.
        sequence: u64,
    },
    /// Refused for good (resending will not help).
    Rejected {
        /// The reading's sequence number.
        sequence: u64,
        /// The gateway's reason.
        reason: RejectReason,
    },
}

/// Why the device loop failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DeviceError<LE, SE> {
    /// The byte transport failed.
    Transport(LE),
    /// Storage failed: nothing was sent under an unsaved sequence number.
    Storage(SE),
    /// The gateway refused the link (in clear).
    Refused(Refusal),
    /// The handshake failed on this side (e.g. an untrusted gateway).
    Handshake(HandshakeError),
    /// No answer in time.
    Timeout,
    /// The gateway sent something the protocol does not allow.
    Protocol,
    /// The session could not seal a frame (exhausted counters: reconnect).
    Session(SessionError),
    /// The reading could not be sealed for the configured readers.
    Seal(SealError),
    /// The transaction could not be encoded.
    Tx(TxError),
    /// Sequence numbers exhausted (2^64 − 1 reached).
    SequenceExhausted,
}

impl<LE: fmt::Debug, SE: fmt::Debug> fmt::Display for DeviceError<LE, SE> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceError::Transport(e) => write!(f, "transport: {e:?}"),
            DeviceError::Storage(e) => write!(f, "storage: {e:?}"),
            DeviceError::Refused(r) => write!(f, "refused by the gateway: {r}"),
            DeviceError::Handshake(e) => write!(f, "handshake: {e}"),
            DeviceError::Timeout => f.write_str("no answer in time"),
            DeviceError::Protocol => f.write_str("protocol violation by the gateway"),
            DeviceError::Session(e) => write!(f, "session: {e}"),
            DeviceError::Seal(e) => write!(f, "seal: {e}"),
            DeviceError::Tx(e) => write!(f, "transaction: {e}"),
            DeviceError::SequenceExhausted => f.write_str("sequence numbers exhausted"),
        }
    }
}

impl<LE, SE> DeviceError<LE, SE> {
    /// Whether another attempt (reconnect, resend) may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            DeviceError::Transport(_)
            | DeviceError::Timeout
            | DeviceError::Protocol
            | DeviceError::Session(_) => true,
            DeviceError::Refused(r) => matches!(
                r,
                Refusal::Busy | Refusal::ShuttingDown | Refusal::HandshakeFailed
            ),
            DeviceError::Handshake(e) => matches!(e, HandshakeError::Timeout),
            _ => false,
        }
    }
}

/// The result type of the loop's operations.
pub type Result<T, L, S> =
    core::result::Result<T, DeviceError<<L as Transport>::Error, <S as Storage>::Error>>;

/// The slot of the signed transaction waiting for its answer (kept in
/// place: the transaction is signed straight into `bytes`).
struct Pending {
    /// A transaction is waiting.
    active: bool,
    sequence: u64,
    len: usize,
    bytes: [u8; TX_BUF],
    /// Copies sent: after more than one, a `Replay` answer means an
    /// earlier copy was committed.
    sends: u32,
}

/// Counters of what the loop did (for logs and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Handshakes completed.
    pub handshakes: u32,
    /// Handshakes or links that failed.
    pub link_failures: u32,
    /// Transactions resent (after a failure or `Busy`).
    pub resends: u32,
    /// `Busy` answers.
    pub busy: u32,
}

/// A provisioned device: identity, configuration, storage, and the live
/// session (if any).
pub struct Device<'a, S: Storage> {
    identity: Keypair,
    config: DeviceConfig<'a>,
    storage: S,
    state: PersistentState,
    next_sequence: u64,
    conn: Conn,
    rx: [u8; 64],
    rx_start: usize,
    rx_len: usize,
    pending: Pending,
    stats: Stats,
    probe: Option<fn(Probe)>,
}

impl<S: Storage> fmt::Debug for Device<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device")
            .field("identity", &self.identity.public())
            .field("state", &self.state)
            .field("next_sequence", &self.next_sequence)
            .field("connected", &self.conn.is_established())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<'a, S: Storage> Device<'a, S> {
    /// Boots a device: loads its persisted state, increments the boot
    /// counter and saves it (before any randomness is drawn: seed a
    /// [`crate::rng::Drbg`] with [`Device::boot_count`] afterwards). The
    /// next sequence number is above every one reserved before.
    pub fn new(
        identity: Keypair,
        config: DeviceConfig<'a>,
        mut storage: S,
    ) -> core::result::Result<Self, S::Error> {
        let mut state = storage.load()?;
        state.boot_count = state.boot_count.wrapping_add(1);
        storage.save(&state)?;
        dlog!(
            "device boot {=u64}, sequence ceiling {=u64}",
            state.boot_count,
            state.sequence_ceiling
        );
        let mut conn_cfg = InitiatorConfig::new(HandshakeConfig {
            chain: config.chain,
            timeout_ms: u64::from(config.handshake_timeout_ms),
        });
        conn_cfg.answer_timeout_ms = u64::from(config.answer_timeout_ms);
        Ok(Device {
            identity,
            config,
            storage,
            next_sequence: state.sequence_ceiling.saturating_add(1),
            state,
            conn: Conn::new(conn_cfg),
            rx: [0; 64],
            rx_start: 0,
            rx_len: 0,
            pending: Pending {
                active: false,
                sequence: 0,
                len: 0,
                bytes: [0; TX_BUF],
                sends: 0,
            },
            stats: Stats::default(),
            probe: None,
        })
    }

    /// This boot's number (1 for the first boot).
    pub fn boot_count(&self) -> u64 {
        self.state.boot_count
    }

    /// The device's public key.
    pub fn public(&self) -> PublicKey {
        self.identity.public()
    }

    /// The sequence number the next new reading will carry.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// The persisted state as last saved.
    pub fn persisted(&self) -> PersistentState {
        self.state
    }

    /// Whether a session is established.
    pub fn is_connected(&self) -> bool {
        self.conn.is_established()
    }

    /// Whether a signed transaction still waits for its answer.
    pub fn has_pending(&self) -> bool {
        self.pending.active
    }

    /// What the loop did so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Calls `probe` at each [`Probe`] step of the loop (a board's timer or
    /// stack measurement; it should return quickly and must not fail).
    pub fn set_probe(&mut self, probe: fn(Probe)) {
        self.probe = Some(probe);
    }

    fn probe(&self, step: Probe) {
        if let Some(p) = self.probe {
            p(step);
        }
    }

    /// The storage (e.g. to hand it to the next boot in a test).
    pub fn into_storage(self) -> S {
        self.storage
    }

    /// Forgets the session (the next operation handshakes again).
    pub fn disconnect(&mut self) {
        self.conn.abort();
        while self.conn.poll_event().is_some() {}
        self.rx_start = 0;
        self.rx_len = 0;
    }

    /// Runs the handshake as initiator over `link`, replacing any session.
    pub fn connect<L: Transport, C: Clock, R: rand_core::CryptoRng + ?Sized>(
        &mut self,
        link: &mut L,
        clock: &mut C,
        rng: &mut R,
    ) -> Result<(), L, S> {
        self.disconnect();
        self.probe(Probe::HandshakeStart);
        self.start_handshake::<L, C, R>(clock, rng)?;
        self.probe(Probe::Message1Ready);
        self.transmit(link)?;
        let deadline = clock
            .now_ms()
            .saturating_add(u64::from(self.config.handshake_timeout_ms));
        loop {
            match self.next_event(link, clock, deadline)? {
                InitiatorEvent::ChallengeReceived => {
                    self.probe(Probe::Message2Received);
                    self.finish_handshake::<L, C>(clock)?;
                    self.probe(Probe::Message3Ready);
                    self.transmit(link)?;
                }
                InitiatorEvent::Established { peer, .. } => {
                    self.stats.handshakes += 1;
                    dlog!("handshake done with gateway {}", peer.key_id());
                    let _ = peer;
                    return Ok(());
                }
                InitiatorEvent::Ended(end) => return Err(end_error(end)),
                _ => {}
            }
        }
    }

    /// Draws the ephemeral key and queues message 1.
    #[inline(never)]
    fn start_handshake<L: Transport, C: Clock, R: rand_core::CryptoRng + ?Sized>(
        &mut self,
        clock: &mut C,
        rng: &mut R,
    ) -> Result<(), L, S> {
        let now = clock.now_ms();
        self.conn
            .start(&self.identity, rng, now)
            .map_err(conn_error)
    }

    /// Checks message 2, computes message 3 and the session.
    #[inline(never)]
    fn finish_handshake<L: Transport, C: Clock>(&mut self, clock: &mut C) -> Result<(), L, S> {
        let now = clock.now_ms();
        self.conn
            .finish_handshake(&self.identity, self.config.gateways, now)
            .map_err(DeviceError::Handshake)
    }

    /// Reserves the next sequence number, saving a new ceiling first when
    /// it is above the saved one.
    fn reserve_sequence<L: Transport>(&mut self) -> Result<u64, L, S> {
        let seq = self.next_sequence;
        if seq == u64::MAX {
            return Err(DeviceError::SequenceExhausted);
        }
        if seq > self.state.sequence_ceiling {
            let block = self.config.sequence_block.max(1);
            let mut next = self.state;
            next.sequence_ceiling = seq.saturating_add(block - 1);
            self.storage.save(&next).map_err(DeviceError::Storage)?;
            self.state = next;
        }
        self.next_sequence = seq + 1;
        Ok(seq)
    }

    /// Signs (and seals, if readers are configured) `vital` under the next
    /// sequence number and keeps it as the pending transaction (signed
    /// straight into the pending slot).
    #[inline(never)]
    fn prepare<L: Transport, C: Clock, R: rand_core::CryptoRng + ?Sized>(
        &mut self,
        clock: &mut C,
        rng: &mut R,
        vital: Vital,
    ) -> Result<(), L, S> {
        let sequence = self.reserve_sequence::<L>()?;
        self.probe(Probe::SignStart);
        let me = self.identity.public();
        let stream = self.config.stream;
        let payload = if self.config.seal_for.is_empty() {
            Payload::Plain(vital)
        } else {
            let binding = sealed_binding(&self.config.chain, &me, stream, sequence);
            seal_vital(&vital, self.config.seal_for, &binding, rng).map_err(DeviceError::Seal)?
        };
        let body = TxBody {
            signer: me,
            sequence,
            timestamp_ms: clock.unix_ms(),
            kind: TxKind::Reading { stream, payload },
        };
        let p = &mut self.pending;
        p.len =
            Transaction::sign_reading_into(&body, &self.config.chain, &self.identity, &mut p.bytes)
                .map_err(DeviceError::Tx)?
                .len();
        p.sequence = sequence;
        p.sends = 0;
        p.active = true;
        self.probe(Probe::Signed);
        Ok(())
    }

    /// Submits one reading and waits for its answer, reconnecting and
    /// resending as needed (see the module documentation). A transaction
    /// left pending by an earlier failed call is sent first; if that fails
    /// again, `vital` is not signed and the error is returned.
    pub fn submit<L: Transport, C: Clock, R: rand_core::CryptoRng + ?Sized>(
        &mut self,
        link: &mut L,
        clock: &mut C,
        rng: &mut R,
        vital: Vital,
    ) -> Result<Outcome, L, S> {
        if self.pending.active {
            self.flush(link, clock, rng)?;
        }
        self.prepare::<L, C, R>(clock, rng, vital)?;
        match self.flush(link, clock, rng)? {
            Some(o) => Ok(o),
            None => Err(DeviceError::Protocol),
        }
    }

    /// Sends the pending transaction, if any, until it is answered or
    /// [`DeviceConfig::max_attempts`] attempts failed.
    pub fn flush<L: Transport, C: Clock, R: rand_core::CryptoRng + ?Sized>(
        &mut self,
        link: &mut L,
        clock: &mut C,
        rng: &mut R,
    ) -> Result<Option<Outcome>, L, S> {
        let mut attempt: u32 = 0;
        loop {
            if !self.pending.active {
                return Ok(None);
            }
            let err = match self.attempt(link, clock, rng) {
                Ok(Some(outcome)) => {
                    self.pending.active = false;
                    return Ok(Some(outcome));
                }
                Ok(None) => {
                    // Busy: resend in the same session after a pause.
                    self.stats.busy += 1;
                    None
                }
                Err(e) if e.is_transient() => {
                    self.stats.link_failures += 1;
                    self.disconnect();
                    Some(e)
                }
                Err(e) => {
                    self.disconnect();
                    return Err(e);
                }
            };
            attempt += 1;
            if attempt >= self.config.max_attempts.max(1) {
                return Err(err.unwrap_or(DeviceError::Refused(Refusal::Busy)));
            }
            self.stats.resends += 1;
            let pause = u64::from(self.config.backoff_ms) << (attempt - 1).min(16);
            self.pause(link, clock, pause.min(u64::from(u32::MAX)) as u32);
            if err.is_some() {
                dlog!("link down; reconnecting (attempt {=u32})", attempt);
                // A failed reconnect shows up as a link error of the next
                // attempt, which counts against max_attempts.
                let _ = link.reconnect();
            }
        }
    }

    /// Waits `ms` (reading and discarding what arrives), for backoff.
    #[inline(never)]
    fn pause<L: Transport, C: Clock>(&mut self, link: &mut L, clock: &mut C, ms: u32) {
        if ms == 0 {
            return;
        }
        let deadline = clock.now_ms().saturating_add(u64::from(ms));
        // Stale answers in the pause are dropped: the resend gets a new one.
        while self.next_event(link, clock, deadline).is_ok() {}
    }

    /// One attempt: connect if needed, send the pending transaction, wait
    /// for its answer. `Ok(None)` means `Busy`.
    fn attempt<L: Transport, C: Clock, R: rand_core::CryptoRng + ?Sized>(
        &mut self,
        link: &mut L,
        clock: &mut C,
        rng: &mut R,
    ) -> Result<Option<Outcome>, L, S> {
        if !self.conn.is_established() {
            self.connect(link, clock, rng)?;
        }
        let (sequence, sends) = {
            let p = &mut self.pending;
            if !p.active {
                return Err(DeviceError::Protocol);
            }
            let tx = p.bytes.get(..p.len).ok_or(DeviceError::Protocol)?;
            p.sends = p.sends.saturating_add(1);
            let now = clock.now_ms();
            self.conn.submit(tx, now).map_err(conn_error)?;
            (p.sequence, p.sends)
        };
        self.transmit(link)?;
        let deadline = clock
            .now_ms()
            .saturating_add(u64::from(self.config.answer_timeout_ms));
        loop {
            let answer = match self.next_event(link, clock, deadline)? {
                InitiatorEvent::Answer { answer, .. } => answer,
                InitiatorEvent::Ended(end) => return Err(end_error(end)),
                // Pongs, `Confirmed`, `Unanswered` (an `Ended` follows).
                _ => continue,
            };
            // The connection matched the answer to this submission (the
            // only one in flight) by its sequence number.
            return match answer {
                GatewayMsg::Ack { tx_id, height, .. } => {
                    dlog!(
                        "sequence {=u64} committed at height {=u64}",
                        sequence,
                        height
                    );
                    Ok(Some(Outcome::Committed {
                        sequence,
                        tx_id,
                        height,
                    }))
                }
                GatewayMsg::Reject {
                    reason: RejectReason::Replay,
                    ..
                } if sends > 1 => Ok(Some(Outcome::Duplicate { sequence })),
                GatewayMsg::Reject { reason, .. } => {
                    Ok(Some(Outcome::Rejected { sequence, reason }))
                }
                GatewayMsg::Busy { .. } => Ok(None),
                GatewayMsg::Pong(_) => continue,
            };
        }
    }

    /// Writes what the connection has queued to the link.
    #[inline(never)]
    fn transmit<L: Transport>(&mut self, link: &mut L) -> Result<(), L, S> {
        loop {
            let bytes = self.conn.transmit_slice();
            if bytes.is_empty() {
                return Ok(());
            }
            link.write_all(bytes).map_err(DeviceError::Transport)?;
            let n = bytes.len();
            self.conn.advance_transmit(n);
        }
    }

    /// The connection's next event, reading the link (and firing its
    /// timers) until one comes or `deadline` passes.
    #[inline(never)]
    fn next_event<L: Transport, C: Clock>(
        &mut self,
        link: &mut L,
        clock: &mut C,
        deadline: u64,
    ) -> Result<InitiatorEvent, L, S> {
        loop {
            if let Some(ev) = self.conn.poll_event() {
                return Ok(ev);
            }
            let now = clock.now_ms();
            if self.rx_start < self.rx_len {
                let input = self.rx.get(self.rx_start..self.rx_len).unwrap_or(&[]);
                let used = self.conn.handle_input(input, now);
                self.rx_start += used;
                if used == 0 {
                    // It takes input again once its events are handled.
                    return self.conn.poll_event().ok_or(DeviceError::Protocol);
                }
                continue;
            }
            self.conn.handle_timeout(now);
            if let Some(ev) = self.conn.poll_event() {
                return Ok(ev);
            }
            if now >= deadline {
                return Err(DeviceError::Timeout);
            }
            let until = self
                .conn
                .poll_timeout()
                .map_or(deadline, |t| t.min(deadline));
            let wait = until.saturating_sub(now).clamp(1, u64::from(u32::MAX)) as u32;
            let n = link
                .read(&mut self.rx, wait)
                .map_err(DeviceError::Transport)?;
            self.rx_start = 0;
            self.rx_len = n.min(self.rx.len());
        }
    }
}

/// The loop's error for how a session or handshake ended.
fn end_error<LE, SE>(end: End) -> DeviceError<LE, SE> {
    match end {
        End::Refused(r) => DeviceError::Refused(r),
        // A close frame ends the session.
        End::PeerClosed => DeviceError::Refused(Refusal::ShuttingDown),
        End::HandshakeFailed(e) => DeviceError::Handshake(e),
        End::HandshakeTimeout | End::AnswerTimeout => DeviceError::Timeout,
        End::Rekey => DeviceError::Session(SessionError::Exhausted),
        _ => DeviceError::Protocol,
    }
}

/// The loop's error for a refused connection command.
fn conn_error<LE, SE>(e: ConnError) -> DeviceError<LE, SE> {
    match e {
        ConnError::Exhausted => DeviceError::Session(SessionError::Exhausted),
        ConnError::TooLarge | ConnError::OutboxFull => DeviceError::Tx(TxError::TooLarge),
        ConnError::Handshake(e) => DeviceError::Handshake(e),
        _ => DeviceError::Protocol,
    }
}

/// Seals a reading for `readers`.
fn seal_vital<R: rand_core::CryptoRng + ?Sized>(
    vital: &Vital,
    readers: &[PublicKey],
    binding: &[u8; 32],
    rng: &mut R,
) -> core::result::Result<Payload, SealError> {
    let mut plain = [0u8; MAX_SEALED_PLAINTEXT];
    let p = vital
        .encode_into(&mut plain)
        .map_err(|_| SealError::PlaintextTooLong)?;
    Ok(Payload::Sealed(sealed::seal(p, readers, binding, rng)?))
}
