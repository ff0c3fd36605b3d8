//! The session channel: ChaCha20-Poly1305 frames under the directional keys a
//! [`handshake`](crate::handshake) derived.
//!
//! A frame is
//!
//! ```text
//! kind (1) || counter (6, little-endian) || ciphertext (n) || tag (16)
//! ```
//!
//! - `kind` is a caller-chosen frame type ([`FRAME_DATA`], [`FRAME_CLOSE`], or
//!   any other byte the application defines); it is authenticated.
//! - `counter` counts the frames sent in this direction, from 0. It is the
//!   nonce: `nonce = 0x00000000 || counter as u64 little-endian` (12 bytes).
//!   Each direction has its own key, so the two directions never share a
//!   (key, nonce) pair.
//! - The 7 header bytes are the associated data.
//!
//! The receiver keeps a sliding window of the last [`REPLAY_WINDOW`]
//! counters and refuses a frame it has already accepted or one older than
//! the window. The window moves only for frames that authenticate, so forged
//! frames cannot disturb it.
//!
//! A sender refuses to go past [`MAX_FRAMES`] frames (2^48 − 1 counter
//! values, far below ChaCha20-Poly1305's limits) with
//! [`SessionError::Exhausted`]. Rekeying is a new handshake (fresh ephemeral
//! keys, fresh session keys); there is no in-band key update. A sender should
//! watch [`Session::frames_left`], send a [`FRAME_CLOSE`] frame while one
//! frame is left, drop the session and handshake again; the receiver drops
//! its session on a `FRAME_CLOSE` frame.
//!
//! Encryption and decryption work in place in caller buffers; nothing is
//! allocated. Keys are wiped on drop.

use core::fmt;

use crate::crypto::{self, SecretKey, TAG_LEN};

/// Frame type of application data.
pub const FRAME_DATA: u8 = 0x01;
/// Frame type announcing that the sender closes the session (the payload may
/// carry a reason; the receiver should drop its session after it).
pub const FRAME_CLOSE: u8 = 0x02;
/// Length of the frame header (kind and 6-byte counter), the associated data.
pub const HEADER_LEN: usize = 7;
/// Bytes a frame adds to its payload: header and tag.
pub const FRAME_OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// Frames one direction may send under one key: counters `0 ..= 2^48 − 2`.
/// A new handshake is needed afterwards.
pub const MAX_FRAMES: u64 = (1 << 48) - 1;
/// Width of the receive replay window, in frames.
pub const REPLAY_WINDOW: u64 = 64;

/// Why a frame could not be sealed or opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum SessionError {
    /// The caller's buffer cannot hold the frame (payload plus
    /// [`FRAME_OVERHEAD`] bytes).
    BufferTooSmall,
    /// The send counter reached its limit: close the session and run a new
    /// handshake (rekey).
    Exhausted,
    /// The frame is shorter than a header and a tag.
    Malformed,
    /// The frame does not authenticate (wrong key, modified header or
    /// ciphertext, or a frame of another session or direction).
    Decrypt,
    /// The frame's counter was already accepted, or is older than the replay
    /// window.
    Replayed,
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SessionError::BufferTooSmall => "buffer too small for the frame",
            SessionError::Exhausted => "send counter exhausted: close and re-handshake",
            SessionError::Malformed => "frame shorter than header and tag",
            SessionError::Decrypt => "frame does not authenticate",
            SessionError::Replayed => "frame replayed or older than the replay window",
        })
    }
}

impl core::error::Error for SessionError {}

/// A frame that opened: its type and its plaintext (inside the caller's
/// buffer).
#[derive(Debug, PartialEq, Eq)]
pub struct OpenedFrame<'b> {
    /// The frame type byte.
    pub kind: u8,
    /// The frame's counter.
    pub counter: u64,
    /// The decrypted payload.
    pub payload: &'b mut [u8],
}

/// The 12-byte nonce of a counter: 4 zero bytes, then the counter as u64
/// little-endian.
pub fn nonce(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n
}

/// The frame header for `kind` and `counter` (which must be below 2^48).
pub fn header(kind: u8, counter: u64) -> [u8; HEADER_LEN] {
    let c = counter.to_le_bytes();
    [kind, c[0], c[1], c[2], c[3], c[4], c[5]]
}

/// An established, encrypted, authenticated channel: one key and counter
/// per direction, and a receive replay window.
pub struct Session {
    send_key: SecretKey,
    recv_key: SecretKey,
    send_counter: u64,
    send_limit: u64,
    /// Highest counter accepted so far plus one (0: none yet).
    recv_next: u64,
    /// Bit `i` set: counter `recv_next − 1 − i` was accepted.
    recv_window: u64,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("send_counter", &self.send_counter)
            .field("recv_next", &self.recv_next)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session from its two directional keys. The handshake builds
    /// sessions; this constructor is for test vectors and for peers that
    /// agreed keys in another way.
    pub fn from_keys(send_key: [u8; 32], recv_key: [u8; 32]) -> Self {
        Session {
            send_key: SecretKey::from_bytes(send_key),
            recv_key: SecretKey::from_bytes(recv_key),
            send_counter: 0,
            send_limit: MAX_FRAMES,
            recv_next: 0,
            recv_window: 0,
        }
    }

    pub(crate) fn from_secret_keys(send_key: SecretKey, recv_key: SecretKey) -> Self {
        Session {
            send_key,
            recv_key,
            send_counter: 0,
            send_limit: MAX_FRAMES,
            recv_next: 0,
            recv_window: 0,
        }
    }

    /// Lowers the number of frames this side may send before
    /// [`SessionError::Exhausted`] (a policy to rekey sooner, e.g. every
    /// 2^20 frames). Values above [`MAX_FRAMES`] are capped.
    pub fn set_send_limit(&mut self, frames: u64) {
        self.send_limit = frames.min(MAX_FRAMES);
    }

    /// Frames this side can still send under the current keys.
    pub fn frames_left(&self) -> u64 {
        self.send_limit.saturating_sub(self.send_counter)
    }

    /// The counter the next sealed frame will carry.
    pub fn next_send_counter(&self) -> u64 {
        self.send_counter
    }

    /// Seals a frame in place. The caller has written the payload at
    /// `buf[HEADER_LEN .. HEADER_LEN + payload_len]`; this writes the header
    /// before it, encrypts it and appends the tag. Returns the frame length
    /// (`payload_len + FRAME_OVERHEAD`).
    pub fn seal_in_place(
        &mut self,
        kind: u8,
        buf: &mut [u8],
        payload_len: usize,
    ) -> Result<usize, SessionError> {
        let total = payload_len
            .checked_add(FRAME_OVERHEAD)
            .ok_or(SessionError::BufferTooSmall)?;
        if buf.len() < total {
            return Err(SessionError::BufferTooSmall);
        }
        if self.send_counter >= self.send_limit {
            return Err(SessionError::Exhausted);
        }
        let counter = self.send_counter;
        let hdr = header(kind, counter);
        let (h, rest) = buf.split_at_mut(HEADER_LEN);
        h.copy_from_slice(&hdr);
        let (body, rest) = rest.split_at_mut(payload_len);
        let tag = crypto::seal_in_place(&self.send_key, &nonce(counter), &hdr, body)
            .map_err(|_| SessionError::BufferTooSmall)?;
        if let Some(t) = rest.get_mut(..TAG_LEN) {
            t.copy_from_slice(&tag);
        }
        self.send_counter = counter + 1;
        Ok(total)
    }

    /// Seals `payload` into `out` (copying it first). Returns the frame.
    pub fn seal<'b>(
        &mut self,
        kind: u8,
        payload: &[u8],
        out: &'b mut [u8],
    ) -> Result<&'b [u8], SessionError> {
        let end = HEADER_LEN
            .checked_add(payload.len())
            .ok_or(SessionError::BufferTooSmall)?;
        out.get_mut(HEADER_LEN..end)
            .ok_or(SessionError::BufferTooSmall)?
            .copy_from_slice(payload);
        let n = self.seal_in_place(kind, out, payload.len())?;
        out.get(..n).ok_or(SessionError::BufferTooSmall)
    }

    /// Opens a received frame in place: checks the replay window, verifies
    /// and decrypts, then marks the counter as seen. On any error the
    /// session state is unchanged (the buffer may be overwritten).
    pub fn open_in_place<'b>(
        &mut self,
        frame: &'b mut [u8],
    ) -> Result<OpenedFrame<'b>, SessionError> {
        if frame.len() < FRAME_OVERHEAD {
            return Err(SessionError::Malformed);
        }
        let (hdr, rest) = frame.split_at_mut(HEADER_LEN);
        let body_len = rest.len() - TAG_LEN;
        let (body, tag) = rest.split_at_mut(body_len);
        let mut c = [0u8; 8];
        c[..6].copy_from_slice(&hdr[1..]);
        let counter = u64::from_le_bytes(c);
        let kind = hdr[0];
        self.check_window(counter)?;
        let mut t = [0u8; TAG_LEN];
        t.copy_from_slice(tag);
        crypto::open_in_place(&self.recv_key, &nonce(counter), hdr, body, &t)
            .map_err(|_| SessionError::Decrypt)?;
        self.mark_seen(counter);
        Ok(OpenedFrame {
            kind,
            counter,
            payload: body,
        })
    }

    fn check_window(&self, counter: u64) -> Result<(), SessionError> {
        if counter >= self.recv_next {
            return Ok(());
        }
        let age = self.recv_next - 1 - counter;
        if age >= REPLAY_WINDOW || self.recv_window & (1u64 << age) != 0 {
            return Err(SessionError::Replayed);
        }
        Ok(())
    }

    fn mark_seen(&mut self, counter: u64) {
        if counter >= self.recv_next {
            let shift = counter - self.recv_next + 1;
            self.recv_window = if shift >= 64 {
                0
            } else {
                self.recv_window << shift
            };
            self.recv_window |= 1;
            self.recv_next = counter + 1;
        } else {
            let age = self.recv_next - 1 - counter;
            self.recv_window |= 1u64 << age;
        }
    }
}
