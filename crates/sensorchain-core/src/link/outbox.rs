//! The transmit queue of a connection: link frames in one fixed buffer,
//! each COBS-encoded in place when it is queued (where it will be sent
//! from), so that draining is a copy.

use super::conn::ConnError;
use super::msg::{self, DeviceMsg, LINK_SESSION, LinkFrame, put_varint};
use crate::frame::DELIMITER;
use crate::session::{HEADER_LEN, Session, SessionError};

/// Bytes of a queued frame's prefix in the outbox: its COBS-encoded length
/// (2, little endian).
pub(crate) const LEN_PREFIX: usize = 2;
/// Room in front of a session frame for its link header (the variant and
/// the length varint of `LinkFrame::Session`; 1 + 3 bytes cover any frame
/// up to 2^21 bytes).
pub(crate) const SESSION_HEADER_ROOM: usize = 4;

/// Bytes of room a queue of `n` bytes keeps in front of a frame for its
/// COBS encoding in place (one code byte, and one per 254 bytes).
pub(crate) const fn cobs_room(n: usize) -> usize {
    1 + n / 254
}

/// Queued link frames, drained COBS-framed by [`Outbox::drain`].
pub(crate) struct Outbox<const N: usize> {
    buf: [u8; N],
    /// Start of the head frame's length prefix.
    head: usize,
    /// End of the queued bytes.
    tail: usize,
    /// Bytes of the head frame already drained.
    pos: usize,
}

impl<const N: usize> Outbox<N> {
    const ROOM: usize = cobs_room(N);

    pub(crate) const fn new() -> Self {
        Outbox {
            buf: [0; N],
            head: 0,
            tail: 0,
            pos: 0,
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
    }

    /// Whether a frame of up to `max` bytes can be queued now.
    pub(crate) fn has_room(&self, max: usize) -> bool {
        N.saturating_sub(self.tail) >= max.saturating_add(LEN_PREFIX + Self::ROOM)
    }

    /// A slot for one frame of at most `max` bytes at the tail;
    /// [`commit`](Self::commit) queues what was written into it. The space
    /// of sent frames is reused once the queue is empty (no bytes are
    /// moved: a queue that never drains fills up, [`ConnError::OutboxFull`]).
    fn slot(&mut self, max: usize) -> Result<&mut [u8], ConnError> {
        let start = self.tail + LEN_PREFIX + Self::ROOM;
        self.buf
            .get_mut(start..start.saturating_add(max))
            .ok_or(ConnError::OutboxFull)
    }

    /// Queues the `len` bytes written at `skip` bytes into the slot:
    /// COBS-encodes them in place, in front of where they are.
    fn commit(&mut self, skip: usize, len: usize) -> Result<(), ConnError> {
        let at = self.tail;
        let out = at + LEN_PREFIX;
        let enc = cobs_in_place(&mut self.buf, out, out + Self::ROOM + skip, len)
            .ok_or(ConnError::TooLarge)?;
        let l = u16::try_from(enc).map_err(|_| ConnError::TooLarge)?;
        self.buf
            .get_mut(at..out)
            .ok_or(ConnError::OutboxFull)?
            .copy_from_slice(&l.to_le_bytes());
        self.tail = out + enc;
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

    /// A slot for the body of a link frame of up to `max` bytes (what
    /// follows its variant and length); [`commit_link`](Self::commit_link)
    /// queues it.
    pub(crate) fn body_slot(&mut self, max: usize) -> Result<&mut [u8], ConnError> {
        self.slot(SESSION_HEADER_ROOM + max)?
            .get_mut(SESSION_HEADER_ROOM..)
            .ok_or(ConnError::TooLarge)
    }

    /// Queues the `len` bytes written into [`body_slot`](Self::body_slot)
    /// as the link frame of variant `tag` (its header written in front).
    pub(crate) fn commit_link(&mut self, tag: u8, len: usize) -> Result<(), ConnError> {
        let (hdr, h) = link_header(tag, len)?;
        let skip = SESSION_HEADER_ROOM - h;
        let at = self.tail + LEN_PREFIX + Self::ROOM + skip;
        self.buf
            .get_mut(at..at + h)
            .ok_or(ConnError::TooLarge)?
            .copy_from_slice(hdr.get(..h).ok_or(ConnError::TooLarge)?);
        self.commit(skip, h + len)
    }

    /// Seals the `p` plaintext bytes written into [`plain_slot`](Self::plain_slot)
    /// as a session frame of `kind` and queues it as a `LinkFrame::Session`.
    pub(crate) fn seal(
        &mut self,
        session: &mut Session,
        kind: u8,
        p: usize,
    ) -> Result<(), ConnError> {
        let frame = self.body_slot(crate::session::FRAME_OVERHEAD + p)?;
        let s = session.seal_in_place(kind, frame, p).map_err(|e| match e {
            SessionError::Exhausted => ConnError::Exhausted,
            _ => ConnError::TooLarge,
        })?;
        self.commit_link(LINK_SESSION, s)
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

    /// The head frame's bytes still to be sent (COBS-framed, up to and
    /// including its delimiter); empty when nothing is queued.
    pub(crate) fn pending(&self) -> &[u8] {
        let start = self.head + LEN_PREFIX;
        match self.buf.get(self.head..start) {
            Some(&[l0, l1]) if !self.is_empty() => {
                let end = start + usize::from(u16::from_le_bytes([l0, l1]));
                self.buf.get(start + self.pos..end).unwrap_or(&[])
            }
            _ => &[],
        }
    }

    /// Marks `n` bytes of [`pending`](Self::pending) as sent.
    pub(crate) fn advance(&mut self, n: usize) {
        let left = self.pending().len();
        if n < left {
            self.pos += n;
        } else if left > 0 {
            self.head += LEN_PREFIX + self.pos + left;
            self.pos = 0;
            if self.head >= self.tail {
                self.clear();
            }
        }
    }

    /// Writes COBS-framed bytes of the queued frames into `out` (as many as
    /// fit; a frame may be split across calls). Returns the bytes written.
    /// The bytes are exactly [`crate::frame::cobs_encode`]'s, each frame
    /// followed by the delimiter.
    pub(crate) fn drain(&mut self, out: &mut [u8]) -> usize {
        let mut w = 0;
        loop {
            let p = self.pending();
            let n = p.len().min(out.len() - w);
            if n == 0 {
                return w;
            }
            if let (Some(dst), Some(src)) = (out.get_mut(w..w + n), p.get(..n)) {
                dst.copy_from_slice(src);
            }
            w += n;
            self.advance(n);
        }
    }
}

/// COBS-encodes the `len` bytes at `buf[from..]` to `buf[to..]` followed by
/// the delimiter, in place (`to + 1 + len / 254 <= from`: each byte is
/// written at or before where it was read), and returns the encoded length.
/// The bytes are exactly [`crate::frame::cobs_encode`]'s.
fn cobs_in_place(buf: &mut [u8], to: usize, from: usize, len: usize) -> Option<usize> {
    if to + cobs_room(len) > from {
        return None;
    }
    let end = from.checked_add(len)?;
    // The open block's code byte goes at `code_at` once its length is known.
    let (mut code_at, mut w, mut run) = (to, to + 1, 1u8);
    for r in from..end {
        let b = *buf.get(r)?;
        if b != 0 {
            *buf.get_mut(w)? = b;
            w += 1;
            run += 1;
        }
        // A zero ends the block; so do 254 non-zero bytes if more follow.
        if b == 0 || (run == 0xFF && r + 1 < end) {
            *buf.get_mut(code_at)? = run;
            code_at = w;
            w += 1;
            run = 1;
        }
    }
    *buf.get_mut(code_at)? = run;
    *buf.get_mut(w)? = DELIMITER;
    Some(w + 1 - to)
}

/// The bytes `msg::encode` puts before the body of a link frame of variant
/// `tag` with `len` bytes (the variant, then the length varint), and how
/// many there are.
pub(crate) fn link_header(
    tag: u8,
    len: usize,
) -> Result<([u8; SESSION_HEADER_ROOM], usize), ConnError> {
    let mut out = [tag; SESSION_HEADER_ROOM];
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
    fn link_header_equals_link_encoding() {
        for len in [0usize, 1, 23, 127, 128, 300, 1280, 16_383, 16_384] {
            let body: Vec<u8> = (0..len).map(|i| i as u8).collect();
            for (tag, frame) in [
                (msg::LINK_HELLO, LinkFrame::Hello(&body)),
                (msg::LINK_PROOF, LinkFrame::Proof(&body)),
                (LINK_SESSION, LinkFrame::Session(&body)),
            ] {
                let mut want = vec![0u8; len + 8];
                let want = msg::encode(&frame, &mut want).unwrap();
                let (h, n) = link_header(tag, len).unwrap();
                assert_eq!(&h[..n], &want[..want.len() - len], "len {len}");
            }
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
