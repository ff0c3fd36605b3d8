//! The device loop: handshake, signed readings, answers, retry and resume.
//!
//! A blocking loop over a [`Link`] and a [`Clock`] (the caller lends both,
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

use core::fmt;

use sensorchain_core::frame::{FrameAccumulator, cobs_encode, max_encoded_len};
use sensorchain_core::handshake::{
    HandshakeConfig, HandshakeError, Initiator, MESSAGE1_LEN, MESSAGE2_LEN, MESSAGE3_LEN,
};
use sensorchain_core::hash::{ChainId, Hash32};
use sensorchain_core::identity::{Keypair, PublicKey};
use sensorchain_core::link::{self, DeviceMsg, GatewayMsg, LinkFrame, Refusal, RejectReason};
use sensorchain_core::reading::Vital;
use sensorchain_core::sealed::{self, MAX_SEALED_PLAINTEXT, SealError};
use sensorchain_core::session::{FRAME_DATA, FRAME_OVERHEAD, Session, SessionError};
use sensorchain_core::tx::{Payload, Transaction, TxBody, TxError, TxKind, sealed_binding};

use crate::link::{Clock, Link};
use crate::storage::{PersistentState, Storage};

/// Largest encoded transaction the device produces (a sealed reading for 4
/// readers is about 480 bytes).
pub const TX_BUF: usize = 512;
/// Largest link frame the device accepts (gateway answers are below 100
/// bytes, message 2 is 106).
pub const RX_FRAME: usize = 256;
/// Plaintext of one session frame: `DeviceMsg::Submit` header and the tx.
const PLAIN_BUF: usize = TX_BUF + 8;
/// A link frame carrying a session frame.
const LINK_BUF: usize = PLAIN_BUF + FRAME_OVERHEAD + 8;
/// Its COBS encoding with the delimiter.
const WIRE_BUF: usize = max_encoded_len(LINK_BUF);

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
    /// The byte link failed.
    Link(LE),
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
            DeviceError::Link(e) => write!(f, "link: {e:?}"),
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
            DeviceError::Link(_)
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
    core::result::Result<T, DeviceError<<L as Link>::Error, <S as Storage>::Error>>;

/// A signed transaction waiting for its answer.
struct Pending {
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
    pending: Option<Pending>,
    stats: Stats,
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
            pending: None,
            stats: Stats::default(),
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
        self.pending.is_some()
    }

    /// What the loop did so far.
    pub fn stats(&self) -> Stats {
        self.stats
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
    pub fn connect<L: Link, C: Clock, R: rand_core::CryptoRng + ?Sized>(
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
        let (init, n1) = Initiator::start(&cfg, &self.identity, clock.now_ms(), rng, &mut m1)
            .map_err(DeviceError::Handshake)?;
        send_link_frame(link, &LinkFrame::Hello(&m1[..n1]))?;
        let mut f = [0u8; RX_FRAME];
        let n = self.recv_frame(link, clock, self.config.handshake_timeout_ms, &mut f)?;
        let frame = f.get(..n).ok_or(DeviceError::Protocol)?;
        let m2 = match link::decode::<LinkFrame>(frame) {
            Ok(LinkFrame::Challenge(m2)) if m2.len() == MESSAGE2_LEN => m2,
            Ok(LinkFrame::Refused(r)) => return Err(DeviceError::Refused(r)),
            _ => return Err(DeviceError::Protocol),
        };
        let mut m3 = [0u8; MESSAGE3_LEN];
        let (est, n3) = init
            .finish(
                &self.identity,
                self.config.gateways,
                m2,
                clock.now_ms(),
                &mut m3,
            )
            .map_err(DeviceError::Handshake)?;
        send_link_frame(link, &LinkFrame::Proof(&m3[..n3]))?;
        self.session = Some(est.session);
        self.stats.handshakes += 1;
        dlog!("handshake done with gateway {}", est.peer_id);
        Ok(())
    }

    /// Reserves the next sequence number, saving a new ceiling first when
    /// it is above the saved one.
    fn reserve_sequence<L: Link>(&mut self) -> Result<u64, L, S> {
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
    /// sequence number and keeps it as the pending transaction.
    fn prepare<L: Link, C: Clock, R: rand_core::CryptoRng + ?Sized>(
        &mut self,
        clock: &mut C,
        rng: &mut R,
        vital: Vital,
    ) -> Result<(), L, S> {
        let sequence = self.reserve_sequence::<L>()?;
        let me = self.identity.public();
        let stream = self.config.stream;
        let payload = if self.config.seal_for.is_empty() {
            Payload::Plain(vital)
        } else {
            let mut plain = [0u8; MAX_SEALED_PLAINTEXT];
            let p = postcard::to_slice(&vital, &mut plain)
                .map_err(|_| DeviceError::Seal(SealError::PlaintextTooLong))?;
            let binding = sealed_binding(&self.config.chain, &me, stream, sequence);
            let sealed =
                sealed::seal(p, self.config.seal_for, &binding, rng).map_err(DeviceError::Seal)?;
            Payload::Sealed(sealed)
        };
        let body = TxBody {
            signer: me,
            sequence,
            timestamp_ms: clock.unix_ms(),
            kind: TxKind::Reading { stream, payload },
        };
        let tx =
            Transaction::sign(body, &self.config.chain, &self.identity).map_err(DeviceError::Tx)?;
        let mut p = Pending {
            sequence,
            len: 0,
            bytes: [0; TX_BUF],
            sends: 0,
        };
        p.len = tx.encode(&mut p.bytes).map_err(DeviceError::Tx)?.len();
        self.pending = Some(p);
        Ok(())
    }

    /// Submits one reading and waits for its answer, reconnecting and
    /// resending as needed (see the module documentation). A transaction
    /// left pending by an earlier failed call is sent first; if that fails
    /// again, `vital` is not signed and the error is returned.
    pub fn submit<L: Link, C: Clock, R: rand_core::CryptoRng + ?Sized>(
        &mut self,
        link: &mut L,
        clock: &mut C,
        rng: &mut R,
        vital: Vital,
    ) -> Result<Outcome, L, S> {
        if self.pending.is_some() {
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
    pub fn flush<L: Link, C: Clock, R: rand_core::CryptoRng + ?Sized>(
        &mut self,
        link: &mut L,
        clock: &mut C,
        rng: &mut R,
    ) -> Result<Option<Outcome>, L, S> {
        let mut attempt: u32 = 0;
        loop {
            if self.pending.is_none() {
                return Ok(None);
            }
            let err = match self.attempt(link, clock, rng) {
                Ok(Some(outcome)) => {
                    self.pending = None;
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
    fn pause<L: Link, C: Clock>(&mut self, link: &mut L, clock: &mut C, ms: u32) {
        if ms == 0 {
            return;
        }
        let mut f = [0u8; RX_FRAME];
        // Stale answers in the pause are dropped: the resend gets a new one.
        while self.recv_frame(link, clock, ms, &mut f).is_ok() {}
    }

    /// One attempt: connect if needed, send the pending transaction, wait
    /// for its answer. `Ok(None)` means `Busy`.
    fn attempt<L: Link, C: Clock, R: rand_core::CryptoRng + ?Sized>(
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
            let p = self.pending.as_mut().ok_or(DeviceError::Protocol)?;
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
    fn recv_gateway_msg<L: Link, C: Clock>(
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
    fn recv_frame<L: Link, C: Clock>(
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
            let n = link.read(&mut self.rx, wait).map_err(DeviceError::Link)?;
            self.rx_start = 0;
            self.rx_len = n.min(self.rx.len());
        }
    }
}

/// Encodes `frame`, COBS-frames it and writes it.
fn send_link_frame<L: Link, SE>(
    link: &mut L,
    frame: &LinkFrame<'_>,
) -> core::result::Result<(), DeviceError<L::Error, SE>> {
    let mut buf = [0u8; LINK_BUF];
    let enc = link::encode(frame, &mut buf).map_err(|_| DeviceError::Tx(TxError::TooLarge))?;
    let mut wire = [0u8; WIRE_BUF];
    let n = cobs_encode(enc, &mut wire).map_err(|_| DeviceError::Tx(TxError::TooLarge))?;
    link.write_all(wire.get(..n).unwrap_or(&[]))
        .map_err(DeviceError::Link)
}

/// Seals `msg` in a data frame of `session` and sends it.
fn send_session_msg<L: Link, SE>(
    link: &mut L,
    session: &mut Session,
    msg: &DeviceMsg<'_>,
) -> core::result::Result<(), DeviceError<L::Error, SE>> {
    let mut plain = [0u8; PLAIN_BUF];
    let p = link::encode(msg, &mut plain).map_err(|_| DeviceError::Tx(TxError::TooLarge))?;
    let mut sealed = [0u8; PLAIN_BUF + FRAME_OVERHEAD];
    let s = session
        .seal(FRAME_DATA, p, &mut sealed)
        .map_err(DeviceError::Session)?;
    send_link_frame(link, &LinkFrame::Session(s))
}
