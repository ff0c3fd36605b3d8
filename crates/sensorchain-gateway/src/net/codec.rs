//! The link codec: COBS frames ([`sensorchain_core::frame`]) of at most
//! [`LINK_MAX_FRAME`] decoded bytes, over any byte stream (TCP or serial).
//!
//! Decoding goes through the core's streaming [`FrameAccumulator`], so a
//! frame is never buffered in its encoded form and an oversized frame is
//! dropped as soon as it overflows (the rest of it, up to the next `0x00`, is
//! skipped unread). Every bad frame (oversized, malformed COBS, cut short by
//! the end of the stream) is counted in the `bad_frames` metric and skipped;
//! after [`LinkCodec::max_bad`] of them on one link the decoder returns
//! [`CodecError::TooManyBadFrames`] and the link is closed.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use sensorchain_core::frame::{FrameAccumulator, FrameError, cobs_encode, max_encoded_len};
use sensorchain_core::link::LINK_MAX_FRAME;
use tokio_util::codec::{Decoder, Encoder};

use crate::metrics::Metrics;

/// Bad frames tolerated on one link before it is closed (default).
pub const DEFAULT_MAX_BAD_FRAMES: u32 = 8;

/// The largest frame on the wire: encoding of [`LINK_MAX_FRAME`] bytes plus
/// the delimiter.
pub const MAX_WIRE_FRAME: usize = max_encoded_len(LINK_MAX_FRAME);

/// Why the codec gave up.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The underlying stream failed.
    #[error("link I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Too many oversized or malformed frames on this link.
    #[error("too many bad frames ({0})")]
    TooManyBadFrames(u32),
    /// A frame to send is larger than [`LINK_MAX_FRAME`].
    #[error("frame of {0} bytes is larger than the link maximum")]
    FrameTooLarge(usize),
}

/// COBS framing for one link (both directions).
pub struct LinkCodec {
    acc: Box<FrameAccumulator<LINK_MAX_FRAME>>,
    metrics: Option<Arc<Metrics>>,
    bad: u32,
    max_bad: u32,
}

impl std::fmt::Debug for LinkCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkCodec")
            .field("bad", &self.bad)
            .field("max_bad", &self.max_bad)
            .finish()
    }
}

impl Default for LinkCodec {
    fn default() -> Self {
        Self::new(None)
    }
}

impl LinkCodec {
    /// A codec counting bad frames in `metrics` (if any), closing after
    /// [`DEFAULT_MAX_BAD_FRAMES`].
    pub fn new(metrics: Option<Arc<Metrics>>) -> Self {
        LinkCodec {
            acc: Box::new(FrameAccumulator::new()),
            metrics,
            bad: 0,
            max_bad: DEFAULT_MAX_BAD_FRAMES,
        }
    }

    /// Sets how many bad frames are tolerated before the link is closed.
    pub fn with_max_bad(mut self, max_bad: u32) -> Self {
        self.max_bad = max_bad;
        self
    }

    /// The number of bad frames tolerated.
    pub fn max_bad(&self) -> u32 {
        self.max_bad
    }

    /// Bad frames seen so far on this link.
    pub fn bad_frames(&self) -> u32 {
        self.bad
    }

    /// Drops any partial frame and skips to the next delimiter (after
    /// joining a serial line mid-transmission).
    pub fn resync(&mut self) {
        self.acc.resync();
    }

    /// Counts one bad frame of the link layer (an undecodable or
    /// undecryptable frame found above the codec); `Err` once the link has
    /// had too many.
    pub fn count_bad(&mut self, reason: &str) -> Result<(), CodecError> {
        if let Some(m) = &self.metrics {
            m.bad_frame(reason);
        }
        self.bad += 1;
        if self.bad > self.max_bad {
            Err(CodecError::TooManyBadFrames(self.bad))
        } else {
            Ok(())
        }
    }
}

impl Decoder for LinkCodec {
    type Item = BytesMut;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, CodecError> {
        loop {
            if src.is_empty() {
                return Ok(None);
            }
            let (used, event) = self.acc.feed(src);
            let frame = match event {
                None => None,
                Some(Ok(frame)) => Some(BytesMut::from(frame)),
                Some(Err(e)) => {
                    let _ = src.split_to(used);
                    let reason = match e {
                        FrameError::Oversized => "oversized",
                        // FrameError is non-exhaustive: anything else is malformed too.
                        FrameError::Malformed | FrameError::BufferFull | _ => "malformed_cobs",
                    };
                    self.count_bad(reason)?;
                    continue;
                }
            };
            let _ = src.split_to(used);
            return Ok(frame);
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, CodecError> {
        if let Some(frame) = self.decode(src)? {
            return Ok(Some(frame));
        }
        if self.acc.in_frame() {
            // the stream ended inside a frame
            self.acc.resync();
            self.count_bad("truncated")?;
        }
        Ok(None)
    }
}

impl Encoder<&[u8]> for LinkCodec {
    type Error = CodecError;

    fn encode(&mut self, item: &[u8], dst: &mut BytesMut) -> Result<(), CodecError> {
        if item.len() > LINK_MAX_FRAME {
            return Err(CodecError::FrameTooLarge(item.len()));
        }
        let need = max_encoded_len(item.len());
        let start = dst.len();
        dst.put_bytes(0, need);
        let n = cobs_encode(item, &mut dst[start..])
            .map_err(|_| CodecError::FrameTooLarge(item.len()))?;
        dst.truncate(start + n);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(msg: &[u8]) -> Vec<u8> {
        let mut b = BytesMut::new();
        Encoder::<&[u8]>::encode(&mut LinkCodec::default(), msg, &mut b).unwrap();
        b.to_vec()
    }

    #[test]
    fn roundtrip_in_pieces_and_bad_frames() {
        let m = Arc::new(Metrics::new());
        let mut c = LinkCodec::new(Some(m.clone())).with_max_bad(2);
        let mut wire = enc(&[1, 0, 2]);
        wire.extend(std::iter::repeat_n(7u8, LINK_MAX_FRAME + 10));
        wire.push(0); // oversized
        wire.extend([5, 1, 0]); // malformed (block cut short)
        wire.extend(enc(&[9; 300]));
        let mut src = BytesMut::new();
        let mut out = Vec::new();
        for chunk in wire.chunks(7) {
            src.extend_from_slice(chunk);
            while let Some(f) = c.decode(&mut src).unwrap() {
                out.push(f.to_vec());
            }
        }
        assert_eq!(out, vec![vec![1, 0, 2], vec![9; 300]]);
        assert_eq!(c.bad_frames(), 2);
        let t = m.encode();
        assert!(
            t.contains("reason=\"oversized\"") && t.contains("reason=\"malformed_cobs\""),
            "{t}"
        );
        // one more bad frame is one too many
        src.extend_from_slice(&[3, 1, 0]);
        assert!(matches!(
            c.decode(&mut src),
            Err(CodecError::TooManyBadFrames(3))
        ));
        // truncated at EOF
        let mut c = LinkCodec::default();
        let mut src = BytesMut::from(&[4u8, 1, 2][..]);
        assert!(c.decode_eof(&mut src).unwrap().is_none());
        assert_eq!(c.bad_frames(), 1);
        assert!(
            Encoder::<&[u8]>::encode(&mut c, &[1; LINK_MAX_FRAME + 1], &mut BytesMut::new())
                .is_err()
        );
    }
}
