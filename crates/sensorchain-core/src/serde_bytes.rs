//! serde helpers for fixed-size byte arrays: raw bytes in binary formats
//! (postcard: no length prefix), lowercase hex in human-readable formats when
//! the `serde` feature is on.

use core::fmt;
use serde::de::{Error as _, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserializer, Serializer};

/// Serializes `N` bytes as a tuple of bytes (postcard writes them raw).
pub fn serialize<S: Serializer, const N: usize>(bytes: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
    #[cfg(feature = "serde")]
    if s.is_human_readable() {
        return s.collect_str(&HexDisplay(bytes));
    }
    let mut t = s.serialize_tuple(N)?;
    for b in bytes {
        t.serialize_element(b)?;
    }
    t.end()
}

/// Deserializes what [`serialize`] wrote.
pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(d: D) -> Result<[u8; N], D::Error> {
    #[cfg(feature = "serde")]
    if d.is_human_readable() {
        return d.deserialize_str(HexVisitor::<N>);
    }
    d.deserialize_tuple(N, TupleVisitor::<N>)
}

struct TupleVisitor<const N: usize>;

impl<'de, const N: usize> Visitor<'de> for TupleVisitor<N> {
    type Value = [u8; N];
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{N} bytes")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; N], A::Error> {
        let mut out = [0u8; N];
        for (i, o) in out.iter_mut().enumerate() {
            *o = seq
                .next_element()?
                .ok_or_else(|| A::Error::invalid_length(i, &self))?;
        }
        Ok(out)
    }
}

#[cfg(feature = "serde")]
struct HexDisplay<'a>(&'a [u8]);

#[cfg(feature = "serde")]
impl fmt::Display for HexDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::hash::write_hex(f, self.0)
    }
}

#[cfg(feature = "serde")]
struct HexVisitor<const N: usize>;

#[cfg(feature = "serde")]
impl<const N: usize> Visitor<'_> for HexVisitor<N> {
    type Value = [u8; N];
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} hex digits", 2 * N)
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<[u8; N], E> {
        crate::hash::parse_hex::<N>(v)
            .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(v), &self))
    }
}

/// Implements `Serialize`/`Deserialize` for a newtype over `[u8; N]` through
/// this module.
macro_rules! bytes_newtype_serde {
    ($t:ident, $n:expr) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                $crate::serde_bytes::serialize::<S, $n>(&self.0, s)
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $crate::serde_bytes::deserialize::<D, $n>(d).map($t)
            }
        }
    };
}
pub(crate) use bytes_newtype_serde;
