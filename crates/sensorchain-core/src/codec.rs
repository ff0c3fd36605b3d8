//! Strict encoding and decoding of every wire and chain structure.
//!
//! The encoding is [postcard](https://docs.rs/postcard) (LEB128 varints for
//! integers wider than a byte, a varint length before sequences, a varint
//! discriminant before enum variants; `docs/PROTOCOL.md` spells it out).
//! postcard itself accepts over-long varints, so a decoder here is *strict*:
//! it rejects trailing bytes and any input whose canonical re-encoding differs
//! from what was received. Re-encoding is compared byte by byte as it is
//! produced, without a buffer, so strict decoding needs no `alloc`.
//!
//! Signatures and hashes are always computed over the exact bytes received or
//! produced, never over a re-encoding of a decoded value.

use core::fmt;
use serde::{Deserialize, Serialize};

/// Why bytes could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes are not an encoding of the expected type (truncated, an
    /// unknown variant, a length over a capacity, an invalid value).
    Malformed,
    /// A valid value was followed by extra bytes.
    TrailingBytes,
    /// The bytes decode, but are not the canonical encoding of the value
    /// (for example an over-long varint).
    NonCanonical,
    /// The input is longer than the stated bound for this type.
    TooLong,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DecodeError::Malformed => "malformed encoding",
            DecodeError::TrailingBytes => "trailing bytes after the value",
            DecodeError::NonCanonical => "non-canonical encoding",
            DecodeError::TooLong => "input longer than the bound for this type",
        })
    }
}

impl core::error::Error for DecodeError {}

/// Why a value could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum EncodeError {
    /// The caller's buffer is too small for the encoding.
    BufferFull,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("output buffer too small")
    }
}

impl core::error::Error for EncodeError {}

/// A postcard flavor that compares the serializer's output with an expected
/// byte string instead of storing it.
struct Compare<'a> {
    expected: &'a [u8],
    pos: usize,
}

impl postcard::ser_flavors::Flavor for Compare<'_> {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        let end = self.pos.checked_add(data.len());
        match end.and_then(|end| self.expected.get(self.pos..end)) {
            Some(slice) if slice == data => {
                self.pos += data.len();
                Ok(())
            }
            _ => Err(postcard::Error::SerializeBufferFull),
        }
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        match self.expected.get(self.pos) {
            Some(&b) if b == data => {
                self.pos += 1;
                Ok(())
            }
            _ => Err(postcard::Error::SerializeBufferFull),
        }
    }

    fn finalize(self) -> postcard::Result<()> {
        if self.pos == self.expected.len() {
            Ok(())
        } else {
            Err(postcard::Error::SerializeBufferFull)
        }
    }
}

/// True when `value` encodes to exactly `bytes`.
pub fn encodes_to<T: Serialize + ?Sized>(value: &T, bytes: &[u8]) -> bool {
    postcard::serialize_with_flavor(
        value,
        Compare {
            expected: bytes,
            pos: 0,
        },
    )
    .is_ok()
}

/// Writes `v` as a postcard varint (unsigned LEB128) at the start of
/// `out`; returns its length.
pub(crate) fn put_varint(out: &mut [u8], mut v: u64) -> Option<usize> {
    let mut n = 0;
    loop {
        let low = (v & 0x7F) as u8;
        v >>= 7;
        *out.get_mut(n)? = if v == 0 { low } else { low | 0x80 };
        n += 1;
        if v == 0 {
            return Some(n);
        }
    }
}

/// Writes postcard's encoding by hand, for the few values a sensor signs
/// or sends (tests compare every such writer with `encode_to_slice`): an
/// integer as a varint (`u8` as its byte, `i16` zigzagged), an enum as its
/// variant index, a sequence as its length then its items, a fixed array
/// as its raw bytes.
pub(crate) struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        Writer { buf, pos: 0 }
    }

    /// Bytes written so far.
    pub(crate) fn len(&self) -> usize {
        self.pos
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) -> Option<()> {
        let end = self.pos.checked_add(b.len())?;
        self.buf.get_mut(self.pos..end)?.copy_from_slice(b);
        self.pos = end;
        Some(())
    }

    pub(crate) fn varint(&mut self, v: u64) -> Option<()> {
        self.pos += put_varint(self.buf.get_mut(self.pos..)?, v)?;
        Some(())
    }

    /// A length-prefixed sequence of bytes.
    pub(crate) fn seq(&mut self, b: &[u8]) -> Option<()> {
        self.varint(b.len() as u64)?;
        self.bytes(b)
    }
}

/// Takes a canonical (shortest) postcard varint of at most `max` from the
/// front of `bytes`: the value `decode_exact` would accept there.
pub(crate) fn take_varint(bytes: &mut &[u8], max: u64) -> Option<u64> {
    let mut v = 0u64;
    let mut shift = 0u32;
    loop {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        let part = u64::from(b & 0x7F);
        if shift == 63 && part > 1 {
            return None;
        }
        v |= part << shift;
        if b & 0x80 == 0 {
            // A last group of 0 after others is an over-long encoding.
            return (v <= max && (b != 0 || shift == 0)).then_some(v);
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
}

/// Decodes one value from exactly `bytes`: no trailing bytes, canonical
/// encoding only, at most `max_len` bytes.
///
/// ```
/// use sensorchain_core::codec::{decode_exact, DecodeError};
/// assert_eq!(decode_exact::<u32>(&[0x05], 16), Ok(5));
/// // 5 as an over-long varint decodes in postcard, but is not canonical:
/// assert_eq!(decode_exact::<u32>(&[0x85, 0x00], 16), Err(DecodeError::NonCanonical));
/// assert_eq!(decode_exact::<u32>(&[0x05, 0x00], 16), Err(DecodeError::TrailingBytes));
/// ```
pub fn decode_exact<'a, T>(bytes: &'a [u8], max_len: usize) -> Result<T, DecodeError>
where
    T: Deserialize<'a> + Serialize,
{
    if bytes.len() > max_len {
        return Err(DecodeError::TooLong);
    }
    let (value, rest): (T, _) =
        postcard::take_from_bytes(bytes).map_err(|_| DecodeError::Malformed)?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes);
    }
    if !encodes_to(&value, bytes) {
        return Err(DecodeError::NonCanonical);
    }
    Ok(value)
}

/// Encodes `value` into `buf`, returning the written prefix.
pub fn encode_to_slice<'b, T: Serialize + ?Sized>(
    value: &T,
    buf: &'b mut [u8],
) -> Result<&'b mut [u8], EncodeError> {
    postcard::to_slice(value, buf).map_err(|_| EncodeError::BufferFull)
}

/// Encodes `value` into a fixed-capacity vector.
pub fn encode_to_heapless<T: Serialize + ?Sized, const N: usize>(
    value: &T,
) -> Result<heapless::Vec<u8, N>, EncodeError> {
    let mut v = heapless::Vec::new();
    v.resize_default(N).map_err(|_| EncodeError::BufferFull)?;
    let len = encode_to_slice(value, &mut v)?.len();
    v.truncate(len);
    Ok(v)
}

/// Encodes `value` into a new vector.
///
/// # Panics
/// If `T`'s `Serialize` impl cannot be encoded by postcard at all (a
/// sequence or map of unknown length, or an impl that reports an error):
/// never for this crate's types, which hold fixed-size values, heapless
/// strings and vectors and B-tree maps and sets. A vector grows as needed
/// (allocation failure aborts), so no other failure exists. An empty vector
/// in place of the value, the former fallback, would be a wrong encoding.
#[cfg(feature = "alloc")]
pub fn encode_to_vec<T: Serialize + ?Sized>(value: &T) -> alloc::vec::Vec<u8> {
    match postcard::to_allocvec(value) {
        Ok(bytes) => bytes,
        Err(e) => panic!(
            "{} has no postcard encoding: {e}",
            core::any::type_name::<T>()
        ),
    }
}

/// The length of the encoding of `value`.
pub fn encoded_len<T: Serialize + ?Sized>(value: &T) -> usize {
    postcard::experimental::serialized_size(value).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_overlong_and_trailing() {
        assert_eq!(decode_exact::<u64>(&[0x80, 0x01], 16), Ok(128));
        assert_eq!(
            decode_exact::<u64>(&[0x80, 0x81, 0x00], 16),
            Err(DecodeError::NonCanonical)
        );
        assert_eq!(decode_exact::<u64>(&[], 16), Err(DecodeError::Malformed));
        assert_eq!(
            decode_exact::<u8>(&[1, 2], 16),
            Err(DecodeError::TrailingBytes)
        );
        assert_eq!(decode_exact::<u8>(&[1, 2], 1), Err(DecodeError::TooLong));
        // bool must be 0 or 1
        assert_eq!(decode_exact::<bool>(&[2], 1), Err(DecodeError::Malformed));
    }

    /// A value postcard cannot encode (a sequence of unknown length) once
    /// encoded to an empty vector; now it is an error, never wrong bytes.
    #[cfg(feature = "alloc")]
    #[test]
    #[should_panic(expected = "has no postcard encoding")]
    fn encode_to_vec_never_returns_made_up_bytes() {
        struct UnknownLength;
        impl Serialize for UnknownLength {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeSeq;
                s.serialize_seq(None)?.end()
            }
        }
        let _ = encode_to_vec(&UnknownLength);
    }

    #[test]
    fn heapless_encode_reports_full() {
        let v: Result<heapless::Vec<u8, 1>, _> = encode_to_heapless(&300u32);
        assert_eq!(v, Err(EncodeError::BufferFull));
        let v: heapless::Vec<u8, 4> = encode_to_heapless(&300u32).unwrap();
        assert_eq!(&v[..], &[0xac, 0x02]);
    }
}
