//! The transmit queue of a connection: link frames (before COBS) in one
//! fixed buffer, COBS-encoded as they are drained, so that a frame is
//! stored once and sealed in place where it will be sent from.

use super::conn::ConnError;
use super::msg::{self, DeviceMsg, LINK_SESSION, LinkFrame, put_varint};
use crate::frame::DELIMITER;
use crate::session::{HEADER_LEN, Session, SessionError};

/// Bytes of a queued frame's prefix in the outbox: its length (2, little
/// endian) and how many bytes of room precede it (1).
pub(crate) const LEN_PREFIX: usize = 3;
/// Room in front of a session frame for its link header (the variant and
/// the length varint of `LinkFrame::Session`; 1 + 3 bytes cover any frame
/// up to 2^21 bytes).
pub(crate) const SESSION_HEADER_ROOM: usize = 4;

/// Where the COBS encoder is inside the head frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Next: a block's code byte.
    Code,
    /// Writing a block's data bytes (`run` left; `full`: code 0xFF).
    Data { run: usize, full: bool },
    /// Next: the delimiter.
    Delimiter,
}

/// Queued link frames, drained COBS-framed by [`Outbox::drain`].
pub(crate) struct Outbox<const N: usize> {
    buf: [u8; N],
    /// Start of the head frame's length prefix.
    head: usize,
    /// End of the queued bytes.
    tail: usize,
    /// Data bytes of the head frame already encoded.
    pos: usize,
    phase: Phase,
}

impl<const N: usize> Outbox<N> {
    pub(crate) const fn new() -> Self {
        Outbox {
            buf: [0; N],
            head: 0,
            tail: 0,
            pos: 0,
            phase: Phase::Code,
        }
    }

    /// Whether bytes wait to be drained.
    pub(crate) fn is_empty(&self) -> bool {
        self.head == self.tail
    }

    /// Drops everything queued (a link that is gone).
    pub(crate) fn clear(&mut self) {
        self.head = 0;
        self.tail = 0;
        self.pos = 0;
        self.phase = Phase::Code;
    }

    /// Whether a frame of up to `max` bytes can be queued now.
    pub(crate) fn has_room(&self, max: usize) -> bool {
        N.saturating_sub(self.tail) >= max.saturating_add(LEN_PREFIX)
    }

    /// A slot for one frame of at most `max` bytes at the tail;
    /// [`commit`](Self::commit) queues what was written into it. The space
    /// of sent frames is reused once the queue is empty (no bytes are
    /// moved: a queue that never drains fills up, [`ConnError::OutboxFull`]).
    fn slot(&mut self, max: usize) -> Result<&mut [u8], ConnError> {
        let start = self.tail + LEN_PREFIX;
        self.buf
            .get_mut(start..start.saturating_add(max))
            .ok_or(ConnError::OutboxFull)
    }

    /// Queues the `len` bytes written at `skip` bytes into the slot.
    fn commit(&mut self, skip: usize, len: usize) -> Result<(), ConnError> {
        let l = u16::try_from(len).map_err(|_| ConnError::TooLarge)?;
        let k = u8::try_from(skip).map_err(|_| ConnError::TooLarge)?;
        let at = self.tail;
        let [l0, l1] = l.to_le_bytes();
        self.buf
            .get_mut(at..at + LEN_PREFIX)
            .ok_or(ConnError::OutboxFull)?
            .copy_from_slice(&[l0, l1, k]);
        self.tail = at + LEN_PREFIX + skip + len;
        Ok(())
    }

    /// Queues a link frame sent in clear (a handshake message, a refusal).
    pub(crate) fn push_clear(
        &mut self,
        frame: &LinkFrame<'_>,
        max: usize,
    ) -> Result<(), ConnError> {
        let slot = self.slot(max)?;
        let n = frame.write(slot).ok_or(ConnError::TooLarge)?;
        self.commit(0, n)
    }

    /// The plaintext area of a session frame with up to `max_payload`
    /// bytes; write the payload there, then [`seal`](Self::seal) it.
    pub(crate) fn plain_slot(&mut self, max_payload: usize) -> Result<&mut [u8], ConnError> {
        let room = SESSION_HEADER_ROOM + HEADER_LEN;
        let slot = self.slot(room + max_payload + crate::crypto::TAG_LEN)?;
        slot.get_mut(room..room + max_payload)
            .ok_or(ConnError::TooLarge)
    }

    /// Seals the `p` plaintext bytes written into [`plain_slot`](Self::plain_slot)
    /// as a session frame of `kind` and queues it as a `LinkFrame::Session`.
    pub(crate) fn seal(
        &mut self,
        session: &mut Session,
        kind: u8,
        p: usize,
    ) -> Result<(), ConnError> {
        let max = SESSION_HEADER_ROOM + crate::session::FRAME_OVERHEAD + p;
        let slot = self.slot(max)?;
        let frame = slot
            .get_mut(SESSION_HEADER_ROOM..)
            .ok_or(ConnError::TooLarge)?;
        let s = session.seal_in_place(kind, frame, p).map_err(|e| match e {
            SessionError::Exhausted => ConnError::Exhausted,
            _ => ConnError::TooLarge,
        })?;
        let (hdr, h) = session_header(s)?;
        let start = SESSION_HEADER_ROOM - h;
        slot.get_mut(start..SESSION_HEADER_ROOM)
            .ok_or(ConnError::TooLarge)?
            .copy_from_slice(hdr.get(..h).ok_or(ConnError::TooLarge)?);
        self.commit(start, h + s)
    }

    /// Encodes `m` and queues it sealed in a data frame.
    pub(crate) fn push_msg<T: serde::Serialize>(
        &mut self,
        session: &mut Session,
        m: &T,
        max_payload: usize,
    ) -> Result<(), ConnError> {
        let plain = self.plain_slot(max_payload)?;
        let p = msg::encode(m, plain)
            .map_err(|_| ConnError::TooLarge)?
            .len();
        self.seal(session, crate::session::FRAME_DATA, p)
    }

    /// Queues `m` sealed in a data frame (the initiator's messages).
    pub(crate) fn push_device(
        &mut self,
        session: &mut Session,
        m: &DeviceMsg<'_>,
        max_payload: usize,
    ) -> Result<(), ConnError> {
        let plain = self.plain_slot(max_payload)?;
        let p = m.write(plain).ok_or(ConnError::TooLarge)?;
        self.seal(session, crate::session::FRAME_DATA, p)
    }

    /// Queues a session close frame (empty payload).
    pub(crate) fn push_close(&mut self, session: &mut Session) -> Result<(), ConnError> {
        self.seal(session, crate::session::FRAME_CLOSE, 0)
    }

    /// Where the head frame's bytes start, and their length.
    fn head_span(&self) -> (usize, usize) {
        match self.buf.get(self.head..self.head + LEN_PREFIX) {
            Some(&[l0, l1, k]) => (
                self.head + LEN_PREFIX + usize::from(k),
                usize::from(u16::from_le_bytes([l0, l1])),
            ),
            _ => (self.head, 0),
        }
    }

    fn head_frame(&self) -> &[u8] {
        let (start, len) = self.head_span();
        self.buf.get(start..start + len).unwrap_or(&[])
    }

    /// Writes COBS-framed bytes of the queued frames into `out` (as many as
    /// fit; a frame may be split across calls). Returns the bytes written.
    /// The bytes are exactly [`crate::frame::cobs_encode`]'s.
    pub(crate) fn drain(&mut self, out: &mut [u8]) -> usize {
        let mut w = 0;
        while w < out.len() && !self.is_empty() {
            match self.phase {
                Phase::Code => {
                    let frame = self.head_frame();
                    let rest = frame.get(self.pos..).unwrap_or(&[]);
                    let limit = rest.len().min(254);
                    let head = rest.get(..limit).unwrap_or(&[]);
                    let run = head.iter().position(|&b| b == 0).unwrap_or(limit);
                    if let Some(o) = out.get_mut(w) {
                        *o = run as u8 + 1;
                    }
                    w += 1;
                    self.phase = Phase::Data {
                        run,
                        full: run == 254,
                    };
                }
                Phase::Data { run, full } => {
                    let n = run.min(out.len() - w);
                    let start = self.head_span().0 + self.pos;
                    if let (Some(dst), Some(src)) =
                        (out.get_mut(w..w + n), self.buf.get(start..start + n))
                    {
                        dst.copy_from_slice(src);
                    }
                    w += n;
                    self.pos += n;
                    let run = run - n;
                    if run > 0 {
                        self.phase = Phase::Data { run, full };
                        continue;
                    }
                    let len = self.head_frame().len();
                    self.phase = if self.pos < len {
                        if !full {
                            // the zero that ended this block
                            self.pos += 1;
                        }
                        Phase::Code
                    } else {
                        Phase::Delimiter
                    };
                }
                Phase::Delimiter => {
                    if let Some(o) = out.get_mut(w) {
                        *o = DELIMITER;
                    }
                    w += 1;
                    let (start, len) = self.head_span();
                    self.head = start + len;
                    self.pos = 0;
                    self.phase = Phase::Code;
                    if self.head == self.tail {
                        self.head = 0;
                        self.tail = 0;
                    }
                }
            }
        }
        w
    }
}

/// The bytes `msg::encode` puts before the payload of a
/// `LinkFrame::Session` of `len` bytes (its variant, then the length
/// varint), and how many there are.
pub(crate) fn session_header(len: usize) -> Result<([u8; SESSION_HEADER_ROOM], usize), ConnError> {
    let mut out = [LINK_SESSION; SESSION_HEADER_ROOM];
    let n = out
        .get_mut(1..)
        .and_then(|rest| put_varint(rest, len as u64))
        .ok_or(ConnError::TooLarge)?;
    Ok((out, 1 + n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{cobs_encode, max_encoded_len};
    use std::vec;
    use std::vec::Vec;

    #[test]
    fn session_header_equals_link_encoding() {
        for len in [0usize, 1, 23, 127, 128, 300, 1280, 16_383, 16_384] {
            let body: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut want = vec![0u8; len + 8];
            let want = msg::encode(&LinkFrame::Session(&body), &mut want).unwrap();
            let (h, n) = session_header(len).unwrap();
            assert_eq!(&h[..n], &want[..want.len() - len], "len {len}");
        }
    }

    fn cases() -> Vec<Vec<u8>> {
        let mut cases: Vec<Vec<u8>> = vec![vec![], vec![0], vec![0, 0], vec![1], vec![1, 0]];
        for len in [253usize, 254, 255, 508, 509, 600] {
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
        let mut x = 0x1234_5678u32;
        for len in 0..700 {
            cases.push(
                (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        if x.is_multiple_of(7) { 0 } else { x as u8 }
                    })
                    .collect(),
            );
        }
        cases
    }

    /// The streamed encoder writes exactly `cobs_encode`'s bytes, in any
    /// chunk size.
    #[test]
    fn drained_bytes_equal_cobs_encode() {
        for (i, src) in cases().into_iter().enumerate() {
            let mut want = vec![0u8; max_encoded_len(src.len())];
            let n = cobs_encode(&src, &mut want).unwrap();
            want.truncate(n);
            let mut ob = Outbox::<1024>::new();
            let slot = ob.slot(src.len()).unwrap();
            slot.copy_from_slice(&src);
            ob.commit(0, src.len()).unwrap();
            let chunk = 1 + i % 300;
            let mut got = Vec::new();
            let mut buf = vec![0u8; chunk];
            loop {
                let n = ob.drain(&mut buf);
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            assert_eq!(got, want, "len {} chunk {chunk}", src.len());
            assert!(ob.is_empty());
        }
    }

    #[test]
    fn full_outbox_is_an_error_and_reused_once_drained() {
        let mut ob = Outbox::<16>::new();
        ob.push_clear(&LinkFrame::Hello(&[1; 5]), 10).unwrap();
        assert_eq!(
            ob.push_clear(&LinkFrame::Hello(&[1; 5]), 10),
            Err(ConnError::OutboxFull)
        );
        let mut out = [0u8; 64];
        let n = ob.drain(&mut out);
        assert!(n > 0 && ob.is_empty());
        ob.push_clear(&LinkFrame::Hello(&[2; 5]), 10).unwrap();
    }
}
