//! COBS framing for byte streams: TCP and serial links carry the same frames.
//!
//! A frame on the wire is the [Consistent Overhead Byte Stuffing][cobs]
//! encoding of one message (a postcard-encoded wire structure), which has no
//! zero byte, followed by one `0x00` delimiter. The overhead is one byte per
//! 254 bytes of message, at least one, plus the delimiter
//! ([`max_encoded_len`]). A receiver that joins mid-stream or loses bytes
//! resynchronises at the next `0x00`.
//!
//! * [`cobs_encode`] writes a frame (encoding and delimiter) into a buffer;
//! * [`cobs_decode`] and [`cobs_decode_in_place`] decode one frame;
//! * [`FrameAccumulator`] takes arbitrary chunks of a byte stream and hands
//!   out complete decoded frames, with a fixed capacity and no `alloc`.
//!
//! ```
//! use sensorchain_core::frame::{cobs_encode, max_encoded_len, FrameAccumulator};
//!
//! let mut wire = [0u8; 2 * max_encoded_len(4)];
//! let a = cobs_encode(&[1, 0, 2, 3], &mut wire).unwrap();
//! let b = cobs_encode(&[4, 5], &mut wire[a..]).unwrap();
//!
//! let mut acc = FrameAccumulator::<64>::new();
//! let mut frames = Vec::new();
//! // The bytes may arrive in any chunks; here, one byte at a time.
//! for chunk in wire[..a + b].chunks(1) {
//!     let mut input = chunk;
//!     while let Some(result) = acc.next_frame(&mut input) {
//!         frames.push(result.unwrap().to_vec());
//!     }
//! }
//! assert_eq!(frames, [vec![1, 0, 2, 3], vec![4, 5]]);
//! ```
//!
//! **Why not the `cobs` crate.** COBS is about 80 lines here, shared by the
//! encoder, both decoders and the accumulator through one small streaming
//! state machine ([`FrameAccumulator`] decodes as bytes arrive, so it never
//! needs room for the encoded form). The exact behaviour that both ends rely
//! on — the minimal encoding, which frames are errors, how an oversized or
//! malformed frame is skipped — is pinned by tests in this module, and the
//! sensor's flash holds no code it does not use. A dependency would still
//! need that accumulator and those tests around it.
//!
//! **Encoding.** The encoder emits the minimal form of the Wikipedia
//! examples: after a full block (code `0xFF`) that ends the message, no empty
//! block follows. The decoders also accept the form of the reference code in
//! Cheshire and Baker's paper, which appends that empty block (`01`): both
//! decode to the same message. Framing bytes are never signed or hashed, so
//! this one tolerated variant does not weaken the rule that signed bytes are
//! exact; the message inside is decoded strictly by [`crate::codec`].
//!
//! [cobs]: https://en.wikipedia.org/wiki/Consistent_Overhead_Byte_Stuffing

use core::fmt;

/// The frame delimiter.
pub const DELIMITER: u8 = 0x00;

/// Why a frame could not be encoded or decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum FrameError {
    /// The caller's output buffer is too small.
    BufferFull,
    /// A frame in the stream decodes to more bytes than the accumulator
    /// holds. The rest of it, up to the next delimiter, is discarded.
    Oversized,
    /// The bytes are not a COBS encoding: a block runs past the end of the
    /// frame, a zero byte appears inside an encoded frame, or the frame is
    /// empty (for the slice decoders; the accumulator skips empty frames).
    Malformed,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FrameError::BufferFull => "output buffer too small",
            FrameError::Oversized => "frame larger than the receive buffer",
            FrameError::Malformed => "malformed COBS frame",
        })
    }
}

impl core::error::Error for FrameError {}

/// The largest frame (encoding plus delimiter) of a message of `n` bytes:
/// `n + n / 254 + 2` (saturating at `usize::MAX`).
///
/// ```
/// # use sensorchain_core::frame::max_encoded_len;
/// assert_eq!(max_encoded_len(0), 2);   // 01 00
/// assert_eq!(max_encoded_len(254), 257);
/// let buf = [0u8; max_encoded_len(100)]; // usable in array lengths
/// # let _ = buf;
/// ```
pub const fn max_encoded_len(n: usize) -> usize {
    n.saturating_add(n / 254).saturating_add(2)
}

/// Writes `byte` at `dst[i]`, or fails with [`FrameError::BufferFull`].
fn put(dst: &mut [u8], i: usize, byte: u8) -> Result<(), FrameError> {
    match dst.get_mut(i) {
        Some(slot) => {
            *slot = byte;
            Ok(())
        }
        None => Err(FrameError::BufferFull),
    }
}

/// Writes the COBS encoding of `src` followed by the `0x00` delimiter into
/// `dst`, and returns the number of bytes written. `dst` needs at most
/// [`max_encoded_len`]`(src.len())` bytes; if it is too small, the result is
/// [`FrameError::BufferFull`] (and `dst` holds a partial frame).
///
/// ```
/// # use sensorchain_core::frame::{cobs_encode, FrameError};
/// let mut buf = [0u8; 8];
/// let n = cobs_encode(&[0x11, 0x22, 0x00, 0x33], &mut buf).unwrap();
/// assert_eq!(&buf[..n], &[0x03, 0x11, 0x22, 0x02, 0x33, 0x00]);
/// assert_eq!(cobs_encode(&[1, 2, 3], &mut buf[..4]), Err(FrameError::BufferFull));
/// ```
pub fn cobs_encode(src: &[u8], dst: &mut [u8]) -> Result<usize, FrameError> {
    // `code_at` is where the open block's code byte goes, `code` its value
    // so far (1 + data bytes), `out` the next free position. A block closed
    // by reaching 254 data bytes (code 0xFF) is followed by a new block only
    // if more input follows.
    let mut code_at = 0;
    let mut code: u8 = 1;
    let mut open = true;
    let mut out = 1;
    for &b in src {
        if !open {
            code_at = out;
            code = 1;
            out += 1;
            open = true;
        }
        if b == 0 {
            put(dst, code_at, code)?;
            code_at = out;
            code = 1;
            out += 1;
        } else {
            put(dst, out, b)?;
            out += 1;
            code += 1;
            if code == 0xFF {
                put(dst, code_at, code)?;
                open = false;
            }
        }
    }
    if open {
        put(dst, code_at, code)?;
    }
    put(dst, out, DELIMITER)?;
    Ok(out + 1)
}

/// Incremental COBS decoding of the bytes of one frame (no delimiter).
#[derive(Debug, Clone, Copy, Default)]
struct Decoder {
    /// Data bytes left in the current block; 0 at a block boundary.
    remaining: u8,
    /// The current block's code is below 0xFF, so a zero is due if another
    /// block follows.
    zero_due: bool,
    /// At least one byte of this frame was seen.
    started: bool,
}

/// What [`Decoder::finish`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// A complete frame.
    Complete,
    /// No byte between two delimiters.
    Empty,
    /// The last block is cut short.
    Truncated,
}

impl Decoder {
    const fn new() -> Self {
        Decoder {
            remaining: 0,
            zero_due: false,
            started: false,
        }
    }

    /// Takes one non-zero encoded byte; returns the decoded byte it yields,
    /// if any. Every input byte yields at most one output byte, and the first
    /// yields none, which is what makes in-place decoding safe.
    fn step(&mut self, b: u8) -> Option<u8> {
        if self.remaining == 0 {
            let out = if self.zero_due { Some(0) } else { None };
            self.remaining = b.wrapping_sub(1);
            self.zero_due = b != 0xFF;
            self.started = true;
            out
        } else {
            self.remaining -= 1;
            Some(b)
        }
    }

    /// Ends the frame (a delimiter or the end of the input) and resets.
    fn finish(&mut self) -> End {
        let end = if !self.started {
            End::Empty
        } else if self.remaining != 0 {
            End::Truncated
        } else {
            End::Complete
        };
        *self = Decoder::new();
        end
    }
}

/// Decodes one COBS frame `src` into `dst` and returns the decoded length.
/// `src` may end with the `0x00` delimiter or not; any other zero byte, an
/// empty frame and a truncated block are [`FrameError::Malformed`].
///
/// ```
/// # use sensorchain_core::frame::{cobs_decode, FrameError};
/// let mut out = [0u8; 8];
/// let n = cobs_decode(&[0x03, 0x11, 0x22, 0x02, 0x33, 0x00], &mut out).unwrap();
/// assert_eq!(&out[..n], &[0x11, 0x22, 0x00, 0x33]);
/// assert_eq!(cobs_decode(&[0x03, 0x11], &mut out), Err(FrameError::Malformed));
/// ```
pub fn cobs_decode(src: &[u8], dst: &mut [u8]) -> Result<usize, FrameError> {
    let body = match src.split_last() {
        Some((&DELIMITER, body)) => body,
        _ => src,
    };
    let mut dec = Decoder::new();
    let mut out = 0;
    for &b in body {
        if b == DELIMITER {
            return Err(FrameError::Malformed);
        }
        if let Some(o) = dec.step(b) {
            put(dst, out, o)?;
            out += 1;
        }
    }
    match dec.finish() {
        End::Complete => Ok(out),
        End::Empty | End::Truncated => Err(FrameError::Malformed),
    }
}

/// Decodes one COBS frame in place: the decoded message ends up at the start
/// of `buf`, and its length is returned. Same rules as [`cobs_decode`]; on
/// an error, `buf` holds partly decoded bytes.
///
/// ```
/// # use sensorchain_core::frame::cobs_decode_in_place;
/// let mut buf = [0x01, 0x01, 0x00];
/// let n = cobs_decode_in_place(&mut buf).unwrap();
/// assert_eq!(&buf[..n], &[0x00]);
/// ```
pub fn cobs_decode_in_place(buf: &mut [u8]) -> Result<usize, FrameError> {
    let len = match buf.split_last() {
        Some((&DELIMITER, body)) => body.len(),
        _ => buf.len(),
    };
    let mut dec = Decoder::new();
    let mut out = 0;
    for i in 0..len {
        let b = buf.get(i).copied().ok_or(FrameError::Malformed)?;
        if b == DELIMITER {
            return Err(FrameError::Malformed);
        }
        // `out < i` whenever a byte comes out (the first input byte yields
        // none, later ones at most one each): the write never overtakes the
        // read.
        if let Some(o) = dec.step(b) {
            put(buf, out, o)?;
            out += 1;
        }
    }
    match dec.finish() {
        End::Complete => Ok(out),
        End::Empty | End::Truncated => Err(FrameError::Malformed),
    }
}

/// Reassembles COBS frames from a byte stream in chunks of any size, without
/// `alloc`: it decodes as bytes arrive into a buffer of `N` bytes, the
/// largest decoded frame it accepts.
///
/// * A complete frame is lent out (`&[u8]` borrowed from the accumulator)
///   until the next call.
/// * A frame that would decode to more than `N` bytes is reported once as
///   [`FrameError::Oversized`] as soon as it overflows; the rest of it, up to
///   the next `0x00`, is discarded (never taken for a new frame).
/// * A malformed frame (a block cut short by the delimiter) is reported as
///   [`FrameError::Malformed`]; the next frame is decoded normally.
/// * Empty frames (consecutive `0x00`) are skipped silently. The encoding of
///   an empty message (`01 00`) is a frame and comes out as `Ok(&[])`.
///
/// The first frame after joining a serial line mid-transmission may be
/// garbage that happens to be valid COBS: call [`resync`](Self::resync) to
/// skip to the first delimiter, and rely on the strict decoding of the
/// message inside to reject anything else.
///
/// Memory: `N` bytes plus a few bytes of state.
///
/// ```
/// use sensorchain_core::frame::{FrameAccumulator, FrameError};
///
/// let mut acc = FrameAccumulator::<4>::new();
/// // An oversized frame, an empty one, a malformed one, then a good one.
/// let mut input: &[u8] = &[0x07, 1, 2, 3, 4, 5, 6, 0, 0, 0x03, 1, 0, 0x03, 9, 9, 0];
/// assert_eq!(acc.next_frame(&mut input), Some(Err(FrameError::Oversized)));
/// assert_eq!(acc.next_frame(&mut input), Some(Err(FrameError::Malformed)));
/// assert_eq!(acc.next_frame(&mut input), Some(Ok(&[9u8, 9][..])));
/// assert_eq!(acc.next_frame(&mut input), None);
/// assert!(input.is_empty());
/// ```
#[derive(Clone)]
pub struct FrameAccumulator<const N: usize> {
    buf: [u8; N],
    len: usize,
    dec: Decoder,
    /// Skipping to the next delimiter (after an oversized frame, or on
    /// request).
    discarding: bool,
}

impl<const N: usize> Default for FrameAccumulator<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Debug for FrameAccumulator<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameAccumulator")
            .field("capacity", &N)
            .field("buffered", &self.len)
            .field("discarding", &self.discarding)
            .finish()
    }
}

impl<const N: usize> FrameAccumulator<N> {
    /// The largest decoded frame accepted.
    pub const MAX_FRAME: usize = N;

    /// An accumulator at a frame boundary (the start of a TCP stream).
    pub const fn new() -> Self {
        FrameAccumulator {
            buf: [0; N],
            len: 0,
            dec: Decoder::new(),
            discarding: false,
        }
    }

    /// Drops any partial frame and skips input up to and including the next
    /// `0x00` (after joining a serial line, or after a link error).
    pub fn resync(&mut self) {
        self.len = 0;
        self.dec = Decoder::new();
        self.discarding = true;
    }

    /// Back at a frame boundary (a new stream): drops any partial frame.
    pub(crate) fn reset(&mut self) {
        self.len = 0;
        self.dec = Decoder::new();
        self.discarding = false;
    }

    /// True while bytes of an unfinished frame are held or being skipped.
    pub fn in_frame(&self) -> bool {
        self.discarding || self.dec.started
    }

    /// Consumes bytes from the front of `input` up to the first event: a
    /// complete frame or an error. Returns how many bytes were consumed and
    /// the event, or `(input.len(), None)` when the input ran out first
    /// (partial frames are kept for the next call).
    ///
    /// ```
    /// # use sensorchain_core::frame::FrameAccumulator;
    /// let mut acc = FrameAccumulator::<16>::new();
    /// assert_eq!(acc.feed(&[0x03, 0x11]), (2, None));
    /// let (used, ev) = acc.feed(&[0x22, 0x00, 0x02, 0x33]);
    /// assert_eq!((used, ev), (2, Some(Ok(&[0x11, 0x22][..]))));
    /// ```
    pub fn feed(&mut self, input: &[u8]) -> (usize, Option<Result<&[u8], FrameError>>) {
        let (used, ev) = self.feed_len(input);
        let ev = ev.map(|r| r.map(|len| self.buf.get(..len).unwrap_or(&[])));
        (used, ev)
    }

    /// [`feed`](Self::feed), lending the decoded frame mutably (to open a
    /// session frame in place). The frame stays in the accumulator's buffer
    /// until the next call.
    pub fn feed_mut(&mut self, input: &[u8]) -> (usize, Option<Result<&mut [u8], FrameError>>) {
        let (used, ev) = self.feed_len(input);
        let ev = ev.map(|r| r.map(|len| self.buf.get_mut(..len).unwrap_or(&mut [])));
        (used, ev)
    }

    /// The whole receive buffer (the last frame lent out is at its start
    /// until the next call that feeds bytes).
    pub(crate) fn buffer(&self) -> &[u8] {
        &self.buf
    }

    /// [`feed`](Self::feed) returning the decoded frame's length.
    fn feed_len(&mut self, input: &[u8]) -> (usize, Option<Result<usize, FrameError>>) {
        for (i, &b) in input.iter().enumerate() {
            let used = i + 1;
            if b == DELIMITER {
                let was_discarding = core::mem::replace(&mut self.discarding, false);
                let end = self.dec.finish();
                let len = core::mem::take(&mut self.len);
                if was_discarding {
                    continue;
                }
                match end {
                    End::Empty => continue,
                    End::Truncated => return (used, Some(Err(FrameError::Malformed))),
                    End::Complete => return (used, Some(Ok(len.min(N)))),
                }
            }
            if self.discarding {
                continue;
            }
            if let Some(o) = self.dec.step(b) {
                match self.buf.get_mut(self.len) {
                    Some(slot) => {
                        *slot = o;
                        self.len += 1;
                    }
                    None => {
                        self.resync();
                        return (used, Some(Err(FrameError::Oversized)));
                    }
                }
            }
        }
        (input.len(), None)
    }

    /// [`feed`](Self::feed) for a loop: advances `input` past the consumed
    /// bytes and returns the event, or `None` once `input` is used up.
    ///
    /// ```
    /// # use sensorchain_core::frame::FrameAccumulator;
    /// let mut acc = FrameAccumulator::<16>::new();
    /// let mut input: &[u8] = &[0x02, 0x0a, 0x00, 0x02, 0x0b, 0x00, 0x02];
    /// let mut n = 0;
    /// while let Some(frame) = acc.next_frame(&mut input) {
    ///     assert_eq!(frame.unwrap().len(), 1);
    ///     n += 1;
    /// }
    /// assert_eq!(n, 2);
    /// assert!(acc.in_frame()); // the third frame is not complete yet
    /// ```
    pub fn next_frame(&mut self, input: &mut &[u8]) -> Option<Result<&[u8], FrameError>> {
        let (used, event) = self.feed(input);
        *input = input.get(used..).unwrap_or(&[]);
        event
    }
}

#[cfg(test)]
mod tests;
