//! Raw link frames over a tokio byte stream, for tests and tools that speak
//! the link by hand (a fake device, an attacker sending crafted handshake
//! messages). The links themselves do not use it: their framing is in
//! core's connections ([`sensorchain_core::link`]).
//!
//! [`LinkCodec`] is a tokio-util codec over core's COBS framing
//! ([`sensorchain_core::frame`]): frames of at most [`LINK_MAX_FRAME`]
//! decoded bytes; an oversized or malformed frame is skipped.

use bytes::{BufMut, BytesMut};
use sensorchain_core::frame::{FrameAccumulator, cobs_encode, max_encoded_len};
use sensorchain_core::link::LINK_MAX_FRAME;
use tokio_util::codec::{Decoder, Encoder};

/// Why the codec gave up.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The underlying stream failed.
    #[error("link I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A frame to send is larger than [`LINK_MAX_FRAME`].
    #[error("frame of {0} bytes is larger than the link maximum")]
    FrameTooLarge(usize),
}

/// COBS framing of raw link frames (both directions).
pub struct LinkCodec {
    acc: Box<FrameAccumulator<LINK_MAX_FRAME>>,
}

impl std::fmt::Debug for LinkCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkCodec").finish_non_exhaustive()
    }
}

impl Default for LinkCodec {
    fn default() -> Self {
        LinkCodec {
            acc: Box::new(FrameAccumulator::new()),
        }
    }
}

impl Decoder for LinkCodec {
    type Item = BytesMut;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, CodecError> {
        while !src.is_empty() {
            let (used, event) = self.acc.feed(src);
            let frame = match event {
                Some(Ok(frame)) => Some(BytesMut::from(frame)),
                // a bad frame is skipped
                Some(Err(_)) | None => None,
            };
            let _ = src.split_to(used);
            if frame.is_some() {
                return Ok(frame);
            }
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
        let start = dst.len();
        dst.put_bytes(0, max_encoded_len(item.len()));
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
    fn roundtrip_in_pieces_skipping_bad_frames() {
        let mut c = LinkCodec::default();
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
        assert!(
            Encoder::<&[u8]>::encode(&mut c, &[1; LINK_MAX_FRAME + 1], &mut BytesMut::new())
                .is_err()
        );
    }
}
