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
//! **Stack.** A device with 16 KiB of RAM has little to spare, so the loop
//! keeps one copy of everything: the pending transaction is signed straight
//! into its slot ([`Transaction::sign_into`]); a submitted frame is built in
//! one buffer (link header, session header, `Submit` message, tag) and
//! sealed in place; COBS framing is written to the link as it is computed,
//! without a second buffer. The handshake and signing steps run in their own
//! (not inlined) frames so that their buffers are not held while the next
//! step runs. [`Device::set_probe`] lets a board time or measure the steps.

use core::fmt;

use sensorchain_core::frame::{DELIMITER, FrameAccumulator};
use sensorchain_core::handshake::{
    Established, HandshakeConfig, HandshakeError, Initiator, MESSAGE1_LEN, MESSAGE2_LEN,
    MESSAGE3_LEN,
};
use sensorchain_core::hash::{ChainId, Hash32};
use sensorchain_core::identity::{Keypair, PublicKey};
use sensorchain_core::link::{self, DeviceMsg, GatewayMsg, LinkFrame, Refusal, RejectReason};
use sensorchain_core::reading::Vital;
use sensorchain_core::sealed::{self, MAX_SEALED_PLAINTEXT, SealError};
use sensorchain_core::session::{FRAME_DATA, FRAME_OVERHEAD, HEADER_LEN, Session, SessionError};
use sensorchain_core::tx::{Payload, Transaction, TxBody, TxError, TxKind, sealed_binding};

use crate::storage::{PersistentState, Storage};
use crate::transport::{Clock, Transport};

/// Largest encoded transaction the device produces (a sealed reading for 4
/// readers is about 480 bytes).
pub const TX_BUF: usize = 512;
/// Largest link frame the device accepts (gateway answers are below 100
/// bytes, message 2 is 106).
pub const RX_FRAME: usize = 256;
/// Plaintext of one session frame: `DeviceMsg::Submit` header and the tx.
const PLAIN_BUF: usize = TX_BUF + 8;
/// Room for a link frame's header (variant and length varints) in front of
/// the session frame.
const LINK_HEADER_ROOM: usize = 8;
/// A link frame carrying a session frame.
const LINK_BUF: usize = LINK_HEADER_ROOM + PLAIN_BUF + FRAME_OVERHEAD;
/// A link frame carrying a handshake message (message 3 is the longest).
const HS_LINK_BUF: usize = MESSAGE3_LEN + 8;

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
    session: Option<Session>,
    acc: FrameAccumulator<RX_FRAME>,
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
            .field("connected", &self.session.is_some())
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
        Ok(Device {
            identity,
            config,
            storage,
            next_sequence: state.sequence_ceiling.saturating_add(1),
            state,
            session: None,
            acc: FrameAccumulator::new(),
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
        self.session.is_some()
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
        self.session = None;
        self.acc = FrameAccumulator::new();
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
        let cfg = HandshakeConfig {
            chain: self.config.chain,
            timeout_ms: u64::from(self.config.handshake_timeout_ms),
        };
        let mut m1 = [0u8; MESSAGE1_LEN];
        let now = clock.now_ms();
        self.probe(Probe::HandshakeStart);
        let (init, n1) = start_handshake(&cfg, &self.identity, now, rng, &mut m1)
            .map_err(DeviceError::Handshake)?;
        self.probe(Probe::Message1Ready);
        send_link_frame(link, &LinkFrame::Hello(&m1[..n1]))?;
        let m2 = self.recv_challenge(link, clock)?;
        let now = clock.now_ms();
        self.probe(Probe::Message2Received);
        let mut m3 = [0u8; MESSAGE3_LEN];
        let (est, n3) = finish_handshake(
            init,
            &self.identity,
            self.config.gateways,
            &m2,
            now,
            &mut m3,
        )
        .map_err(DeviceError::Handshake)?;
        self.probe(Probe::Message3Ready);
        send_link_frame(link, &LinkFrame::Proof(&m3[..n3]))?;
        self.session = Some(est.session);
        self.stats.handshakes += 1;
        dlog!("handshake done with gateway {}", est.peer_id);
        Ok(())
    }

    /// Waits for message 2 and returns a copy of it (the receive buffer is
    /// gone before message 2 is processed).
    #[inline(never)]
    fn recv_challenge<L: Transport, C: Clock>(
        &mut self,
        link: &mut L,
        clock: &mut C,
    ) -> Result<[u8; MESSAGE2_LEN], L, S> {
        let mut f = [0u8; RX_FRAME];
        let n = self.recv_frame(link, clock, self.config.handshake_timeout_ms, &mut f)?;
        let frame = f.get(..n).ok_or(DeviceError::Protocol)?;
        match link::decode::<LinkFrame>(frame) {
            Ok(LinkFrame::Challenge(m2)) => {
                let mut out = [0u8; MESSAGE2_LEN];
                if m2.len() != MESSAGE2_LEN {
                    return Err(DeviceError::Protocol);
                }
                out.copy_from_slice(m2);
                Ok(out)
            }
            Ok(LinkFrame::Refused(r)) => Err(DeviceError::Refused(r)),
            _ => Err(DeviceError::Protocol),
        }
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
        p.len = Transaction::sign_into(&body, &self.config.chain, &self.identity, &mut p.bytes)
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
        let mut f = [0u8; RX_FRAME];
        // Stale answers in the pause are dropped: the resend gets a new one.
        while self.recv_frame(link, clock, ms, &mut f).is_ok() {}
    }

    /// One attempt: connect if needed, send the pending transaction, wait
    /// for its answer. `Ok(None)` means `Busy`.
    fn attempt<L: Transport, C: Clock, R: rand_core::CryptoRng + ?Sized>(
        &mut self,
        link: &mut L,
        clock: &mut C,
        rng: &mut R,
    ) -> Result<Option<Outcome>, L, S> {
        if self.session.is_none() {
            self.connect(link, clock, rng)?;
        }
        let (sequence, sends) = {
            let session = self.session.as_mut().ok_or(DeviceError::Protocol)?;
            let p = &mut self.pending;
            if !p.active {
                return Err(DeviceError::Protocol);
            }
            let tx = p.bytes.get(..p.len).ok_or(DeviceError::Protocol)?;
            p.sends = p.sends.saturating_add(1);
            send_session_msg(link, session, &DeviceMsg::Submit(tx))?;
            (p.sequence, p.sends)
        };
        let deadline = clock
            .now_ms()
            .saturating_add(u64::from(self.config.answer_timeout_ms));
        loop {
            let msg = self.recv_gateway_msg(link, clock, deadline)?;
            match msg {
                GatewayMsg::Ack {
                    sequence: s,
                    tx_id,
                    height,
                } if s == sequence => {
                    dlog!("sequence {=u64} committed at height {=u64}", s, height);
                    return Ok(Some(Outcome::Committed {
                        sequence,
                        tx_id,
                        height,
                    }));
                }
                GatewayMsg::Reject {
                    sequence: s,
                    reason,
                } if s == sequence => {
                    if reason == RejectReason::Replay && sends > 1 {
                        return Ok(Some(Outcome::Duplicate { sequence }));
                    }
                    return Ok(Some(Outcome::Rejected { sequence, reason }));
                }
                GatewayMsg::Busy { sequence: s } if s == sequence => return Ok(None),
                // Answers to earlier copies, pongs: not ours now.
                _ => continue,
            }
        }
    }

    /// Waits for the next message of the session.
    #[inline(never)]
    fn recv_gateway_msg<L: Transport, C: Clock>(
        &mut self,
        link: &mut L,
        clock: &mut C,
        deadline: u64,
    ) -> Result<GatewayMsg, L, S> {
        let mut f = [0u8; RX_FRAME];
        let left = deadline.saturating_sub(clock.now_ms());
        if left == 0 {
            return Err(DeviceError::Timeout);
        }
        let n = self.recv_frame(link, clock, left.min(u64::from(u32::MAX)) as u32, &mut f)?;
        let frame = f.get_mut(..n).ok_or(DeviceError::Protocol)?;
        let range = match link::decode::<LinkFrame>(frame) {
            Ok(LinkFrame::Session(ct)) => {
                // `ct` borrows `frame`; find its offset (the payload is
                // the tail of the frame).
                let len = ct.len();
                (n - len)..n
            }
            Ok(LinkFrame::Refused(r)) => return Err(DeviceError::Refused(r)),
            _ => return Err(DeviceError::Protocol),
        };
        let session = self.session.as_mut().ok_or(DeviceError::Protocol)?;
        let ct = f.get_mut(range).ok_or(DeviceError::Protocol)?;
        let opened = session
            .open_in_place(ct)
            .map_err(|_| DeviceError::Protocol)?;
        if opened.kind != FRAME_DATA {
            // A close frame ends the session.
            return Err(DeviceError::Refused(Refusal::ShuttingDown));
        }
        link::decode::<GatewayMsg>(opened.payload).map_err(|_| DeviceError::Protocol)
    }

    /// Reads until one complete link frame is in `out` (returns its length)
    /// or `timeout_ms` passed. Malformed or oversized frames are skipped.
    fn recv_frame<L: Transport, C: Clock>(
        &mut self,
        link: &mut L,
        clock: &mut C,
        timeout_ms: u32,
        out: &mut [u8],
    ) -> Result<usize, L, S> {
        let deadline = clock.now_ms().saturating_add(u64::from(timeout_ms));
        loop {
            while self.rx_start < self.rx_len {
                let mut input = self.rx.get(self.rx_start..self.rx_len).unwrap_or(&[]);
                let before = input.len();
                let ev = self.acc.next_frame(&mut input);
                self.rx_start += before - input.len();
                // Malformed or oversized frames (`Some(Err)`) are skipped.
                if let Some(Ok(frame)) = ev {
                    let dst = out.get_mut(..frame.len()).ok_or(DeviceError::Protocol)?;
                    dst.copy_from_slice(frame);
                    return Ok(frame.len());
                }
            }
            let now = clock.now_ms();
            if now >= deadline {
                return Err(DeviceError::Timeout);
            }
            let wait = (deadline - now).min(u64::from(u32::MAX)) as u32;
            let n = link
                .read(&mut self.rx, wait)
                .map_err(DeviceError::Transport)?;
            self.rx_start = 0;
            self.rx_len = n.min(self.rx.len());
        }
    }
}

/// Draws the ephemeral key and computes message 1.
fn start_handshake<R: rand_core::CryptoRng + ?Sized>(
    cfg: &HandshakeConfig,
    identity: &Keypair,
    now_ms: u64,
    rng: &mut R,
    m1: &mut [u8],
) -> core::result::Result<(Initiator, usize), HandshakeError> {
    Initiator::start(cfg, identity, now_ms, rng, m1)
}

/// Checks message 2, computes message 3 and the session.
fn finish_handshake(
    init: Initiator,
    identity: &Keypair,
    gateways: &[PublicKey],
    m2: &[u8],
    now_ms: u64,
    m3: &mut [u8],
) -> core::result::Result<(Established, usize), HandshakeError> {
    init.finish(identity, gateways, m2, now_ms, m3)
}

/// Seals a reading for `readers`.
fn seal_vital<R: rand_core::CryptoRng + ?Sized>(
    vital: &Vital,
    readers: &[PublicKey],
    binding: &[u8; 32],
    rng: &mut R,
) -> core::result::Result<Payload, SealError> {
    let mut plain = [0u8; MAX_SEALED_PLAINTEXT];
    let p = postcard::to_slice(vital, &mut plain).map_err(|_| SealError::PlaintextTooLong)?;
    Ok(Payload::Sealed(sealed::seal(p, readers, binding, rng)?))
}

/// Writes the COBS encoding of `src` and the delimiter to `link` as it is
/// computed: each block's code byte, then its run of non-zero bytes straight
/// from `src`. The bytes are exactly those of
/// [`sensorchain_core::frame::cobs_encode`], without its output buffer.
fn write_cobs<L: Transport>(link: &mut L, src: &[u8]) -> core::result::Result<(), L::Error> {
    let mut rest = src;
    loop {
        // A block: up to 254 non-zero bytes, ended by a zero (consumed),
        // the end of the input, or the 254-byte limit.
        let limit = rest.len().min(254);
        let head = rest.get(..limit).unwrap_or(&[]);
        let run = head.iter().position(|&b| b == 0).unwrap_or(limit);
        link.write_all(&[run as u8 + 1])?;
        if run > 0 {
            link.write_all(head.get(..run).unwrap_or(&[]))?;
        }
        if run < 254 && rest.get(run) == Some(&0) {
            // The zero ends this block; another one follows (empty if the
            // zero was the last byte). A full block (code 0xFF) ends no zero.
            rest = rest.get(run + 1..).unwrap_or(&[]);
        } else if run == 254 && rest.len() > 254 {
            // A full block and more input: a new block.
            rest = rest.get(254..).unwrap_or(&[]);
        } else {
            break;
        }
    }
    link.write_all(&[DELIMITER])
}

/// Encodes `frame` and writes it COBS-framed. For the handshake messages
/// (small: one 72-byte buffer).
fn send_link_frame<L: Transport, SE>(
    link: &mut L,
    frame: &LinkFrame<'_>,
) -> core::result::Result<(), DeviceError<L::Error, SE>> {
    let mut buf = [0u8; HS_LINK_BUF];
    let enc = link::encode(frame, &mut buf).map_err(|_| DeviceError::Tx(TxError::TooLarge))?;
    write_cobs(link, enc).map_err(DeviceError::Transport)
}

/// Writes the header of a `LinkFrame::Session` of `len` bytes (its variant
/// and the length varint: the bytes `link::encode` puts before the frame)
/// right before `buf[at..]`, returning where it starts.
fn put_session_header(buf: &mut [u8], at: usize, len: usize) -> Option<usize> {
    // The variant: the encoding of an empty session frame without its
    // length byte (0).
    let mut empty = [0u8; 4];
    let tag = link::encode(&LinkFrame::Session(&[]), &mut empty).ok()?;
    let tag_len = tag.len().checked_sub(1)?;
    // The length: an unsigned LEB128 varint, as postcard writes it.
    let mut varint = [0u8; 5];
    let mut n = 0;
    let mut v = len;
    loop {
        let byte = (v & 0x7F) as u8;
        v >>= 7;
        *varint.get_mut(n)? = if v == 0 { byte } else { byte | 0x80 };
        n += 1;
        if v == 0 {
            break;
        }
    }
    let start = at.checked_sub(tag_len + n)?;
    buf.get_mut(start..start + tag_len)?
        .copy_from_slice(empty.get(..tag_len)?);
    buf.get_mut(start + tag_len..at)?
        .copy_from_slice(varint.get(..n)?);
    Some(start)
}

/// Seals `msg` in a data frame of `session` and sends it as a
/// `LinkFrame::Session`. One buffer: the message is encoded behind room for
/// the link and session headers, sealed in place, the link header written
/// in front, and the whole COBS-framed straight to the link.
#[inline(never)]
fn send_session_msg<L: Transport, SE>(
    link: &mut L,
    session: &mut Session,
    msg: &DeviceMsg<'_>,
) -> core::result::Result<(), DeviceError<L::Error, SE>> {
    let too_large = || DeviceError::Tx(TxError::TooLarge);
    let mut buf = [0u8; LINK_BUF];
    let frame = buf.get_mut(LINK_HEADER_ROOM..).ok_or_else(too_large)?;
    let payload = frame.get_mut(HEADER_LEN..).ok_or_else(too_large)?;
    let p = link::encode(msg, payload).map_err(|_| too_large())?.len();
    let s = session
        .seal_in_place(FRAME_DATA, frame, p)
        .map_err(DeviceError::Session)?;
    let start = put_session_header(&mut buf, LINK_HEADER_ROOM, s).ok_or_else(too_large)?;
    let wire = buf.get(start..LINK_HEADER_ROOM + s).ok_or_else(too_large)?;
    write_cobs(link, wire).map_err(DeviceError::Transport)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec;
    use std::vec::Vec;

    use sensorchain_core::frame::{cobs_encode, max_encoded_len};

    use super::*;

    /// A link that keeps what is written.
    struct Sink(Vec<u8>);

    impl Transport for Sink {
        type Error = ();
        fn write_all(&mut self, bytes: &[u8]) -> core::result::Result<(), ()> {
            self.0.extend_from_slice(bytes);
            Ok(())
        }
        fn read(&mut self, _: &mut [u8], _: u32) -> core::result::Result<usize, ()> {
            Ok(0)
        }
    }

    fn reference(src: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; max_encoded_len(src.len())];
        let n = cobs_encode(src, &mut out).unwrap();
        out.truncate(n);
        out
    }

    #[test]
    fn streamed_cobs_equals_cobs_encode() {
        let mut cases: Vec<Vec<u8>> = vec![vec![], vec![0], vec![0, 0], vec![1], vec![1, 0]];
        for len in [253, 254, 255, 508, 509, 600] {
            // no zero, a zero at the block edges, zeros everywhere
            cases.push((0..len).map(|i| (i % 255 + 1) as u8).collect());
            for z in [0, 252, 253, 254, 255, len - 1] {
                let mut v: Vec<u8> = (0..len).map(|i| (i % 200 + 1) as u8).collect();
                if z < len {
                    v[z] = 0;
                }
                cases.push(v);
            }
            cases.push((0..len).map(|i| (i % 3) as u8).collect());
        }
        // a pseudo-random mix
        let mut x = 0x1234_5678u32;
        for len in 0..700 {
            let v: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    if x.is_multiple_of(7) { 0 } else { x as u8 }
                })
                .collect();
            cases.push(v);
        }
        for src in cases {
            let mut sink = Sink(Vec::new());
            write_cobs(&mut sink, &src).unwrap();
            assert_eq!(sink.0, reference(&src), "len {}", src.len());
        }
    }

    #[test]
    fn session_header_equals_link_encoding() {
        for len in [0usize, 1, 23, 127, 128, 300, 16_383, 16_384] {
            let body: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut want = vec![0u8; len + 8];
            let want = link::encode(&LinkFrame::Session(&body), &mut want).unwrap();
            let mut buf = vec![0u8; LINK_HEADER_ROOM + len];
            buf[LINK_HEADER_ROOM..].copy_from_slice(&body);
            let start = put_session_header(&mut buf, LINK_HEADER_ROOM, len).unwrap();
            assert_eq!(&buf[start..], &*want, "len {len}");
        }
    }

    #[test]
    fn sent_session_frame_opens_at_the_gateway() {
        let (mut dev, mut gw) = (
            Session::from_keys([1; 32], [2; 32]),
            Session::from_keys([2; 32], [1; 32]),
        );
        for len in [0usize, 40, 255, TX_BUF] {
            let tx: Vec<u8> = (0..len).map(|i| (i % 7) as u8).collect();
            let mut sink = Sink(Vec::new());
            send_session_msg::<_, ()>(&mut sink, &mut dev, &DeviceMsg::Submit(&tx)).unwrap();
            let wire = sink.0;
            assert_eq!(wire.last(), Some(&0));
            let mut frame = vec![0u8; wire.len()];
            let n =
                sensorchain_core::frame::cobs_decode(&wire[..wire.len() - 1], &mut frame).unwrap();
            let LinkFrame::Session(ct) = link::decode::<LinkFrame>(&frame[..n]).unwrap() else {
                panic!("not a session frame");
            };
            let mut ct = ct.to_vec();
            let opened = gw.open_in_place(&mut ct).unwrap();
            assert_eq!(opened.kind, FRAME_DATA);
            assert_eq!(
                link::decode::<DeviceMsg>(opened.payload).unwrap(),
                DeviceMsg::Submit(&tx)
            );
        }
    }
}
