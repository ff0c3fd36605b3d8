//! The access log's records and hash chain: every read of a patient's data
//! through a gateway's API is one [`AccessEntry`] (who read whose readings,
//! which range, when, allowed or refused), chained by hash and its head
//! signed by the gateway (docs/PROTOCOL.md, "Access log").
//!
//! ```text
//! entry   = seq (u64 LE) || time_ms (u64 LE) || reader (32) || patient (32) || device (32)
//!           || kind (u8) || outcome (u8) || stream (u32 LE) || from (u64 LE) || to (u64 LE)
//!           || subject (32)                                                   (166 bytes)
//! hash_n  = SHA-256(0x19 || "sensorchain/access-log/v1" || chain_id || gateway || hash_{n-1} || entry_n)
//!           with hash_{-1} = 32 zero bytes
//! head    = count (u64 LE) || hash_{count-1} (32) || time_ms (u64 LE)
//! head signature: Ed25519 over 0x1a || "sensorchain/access-head/v1" || chain_id || gateway || head
//! ```
//!
//! Changing, removing, reordering or inserting an entry changes every later
//! hash, so a verifier holding any signed head (a patient who fetched it, an
//! auditor) detects it ([`ChainVerifier`]); a head itself cannot be made
//! without the gateway's key.
//!
//! ```
//! use sensorchain_core::access_log::*;
//! use sensorchain_core::hash::{ChainId, Hash32};
//! use sensorchain_core::identity::{Keypair, PublicKey};
//! let gw = Keypair::from_seed([2; 32]);
//! let chain = ChainId([7; 32]);
//! let e = AccessEntry {
//!     seq: 0, time_ms: 5, reader: PublicKey([1; 32]), patient: PublicKey([4; 32]),
//!     device: PublicKey([3; 32]), kind: AccessKind::Readings, outcome: Outcome::Allowed,
//!     stream: None, from: 0, to: u64::MAX, subject: Hash32::ZERO,
//! };
//! let bytes = e.encode();
//! assert_eq!(AccessEntry::decode(&bytes), Ok(e));
//! let mut v = ChainVerifier::new(chain, gw.public());
//! v.push(&bytes).unwrap();
//! let head = AccessHead { count: 1, hash: v.hash(), time_ms: 6 };
//! let sig = head.sign(&chain, &gw);
//! let vk = sensorchain_core::identity::VerifyingKey::from_public(&gw.public()).unwrap();
//! assert!(head.verify(&chain, &vk, &sig).is_ok());
//! ```

use core::fmt;

use crate::hash::{ChainId, Hash32, TaggedHasher, ctx};
use crate::identity::{Keypair, PublicKey, Signature, SignatureError, VerifyingKey};
use crate::tx::{SigningCtx, sign_tagged_fixed, verify_tagged};

/// The head signature's context (its length checked at compile time).
const HEAD_CTX: SigningCtx = SigningCtx::new(ctx::ACCESS_HEAD);

/// Length of an encoded [`AccessEntry`].
pub const ENTRY_LEN: usize = 8 + 8 + 32 * 3 + 1 + 1 + 4 + 8 + 8 + 32;

/// Length of an encoded [`AccessHead`] (the signed message after the prefix
/// and the gateway key).
pub const HEAD_LEN: usize = 8 + 32 + 8;

/// `stream` on the wire when the read covered every stream.
const ALL_STREAMS: u32 = u32::MAX;

/// What was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum AccessKind {
    /// A device's readings in a time window (`from`, `to` in ms; `stream`
    /// if one stream was asked for).
    Readings = 1,
    /// One transaction (`subject` is its id; `from` its height, `to` its
    /// index).
    Transaction = 2,
    /// Whole block bodies (`from`..=`to` are heights; `patient` is zero:
    /// every patient whose readings are in those blocks).
    BlockBody = 3,
    /// The patient's access log itself (`from`, `to`: entry numbers).
    AccessLog = 4,
}

impl AccessKind {
    /// The lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            AccessKind::Readings => "readings",
            AccessKind::Transaction => "transaction",
            AccessKind::BlockBody => "block_body",
            AccessKind::AccessLog => "access_log",
        }
    }
}

/// Whether the read was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum Outcome {
    /// Served.
    Allowed = 0,
    /// Refused by the access rules.
    Refused = 1,
}

impl Outcome {
    /// The lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Refused => "refused",
        }
    }
}

/// One read of a patient's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessEntry {
    /// Its position in the log, from 0.
    pub seq: u64,
    /// When the gateway answered (ms since the Unix epoch).
    pub time_ms: u64,
    /// Who read (all zero: an anonymous request).
    pub reader: PublicKey,
    /// Whose data (all zero: every patient, for block bodies).
    pub patient: PublicKey,
    /// Which device (all zero: not one device).
    pub device: PublicKey,
    /// What was read.
    pub kind: AccessKind,
    /// Served or refused.
    pub outcome: Outcome,
    /// The one stream asked for, if any.
    pub stream: Option<u16>,
    /// Start of the range (see [`AccessKind`]).
    pub from: u64,
    /// End of the range, inclusive.
    pub to: u64,
    /// A transaction's id (zero otherwise).
    pub subject: Hash32,
}

/// Why bytes are not an access-log entry, or a chain does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum AccessLogError {
    /// Not [`ENTRY_LEN`] bytes.
    Length,
    /// An undefined kind, outcome or stream value.
    BadField,
    /// The entry's `seq` is not the next number.
    Sequence,
    /// The chain's hash is not the head's.
    HeadMismatch,
    /// The head's signature does not verify.
    BadSignature(SignatureError),
}

impl fmt::Display for AccessLogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccessLogError::Length => write!(f, "an access-log entry is {ENTRY_LEN} bytes"),
            AccessLogError::BadField => f.write_str("undefined kind, outcome or stream"),
            AccessLogError::Sequence => f.write_str("entry number out of order"),
            AccessLogError::HeadMismatch => {
                f.write_str("the entries do not hash to the signed head")
            }
            AccessLogError::BadSignature(e) => write!(f, "head signature refused: {e}"),
        }
    }
}

impl core::error::Error for AccessLogError {}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn key_at(b: &[u8], at: usize) -> [u8; 32] {
    let mut x = [0u8; 32];
    x.copy_from_slice(&b[at..at + 32]);
    x
}

impl AccessEntry {
    /// The entry's exact bytes (layout in the [module](self)).
    pub fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut b = [0u8; ENTRY_LEN];
        b[0..8].copy_from_slice(&self.seq.to_le_bytes());
        b[8..16].copy_from_slice(&self.time_ms.to_le_bytes());
        b[16..48].copy_from_slice(&self.reader.0);
        b[48..80].copy_from_slice(&self.patient.0);
        b[80..112].copy_from_slice(&self.device.0);
        b[112] = self.kind as u8;
        b[113] = self.outcome as u8;
        let stream = self.stream.map_or(ALL_STREAMS, u32::from);
        b[114..118].copy_from_slice(&stream.to_le_bytes());
        b[118..126].copy_from_slice(&self.from.to_le_bytes());
        b[126..134].copy_from_slice(&self.to.to_le_bytes());
        b[134..166].copy_from_slice(&self.subject.0);
        b
    }

    /// Decodes exactly [`ENTRY_LEN`] bytes; total: any input gives an entry
    /// whose encoding is the input, or an error.
    pub fn decode(b: &[u8]) -> Result<AccessEntry, AccessLogError> {
        if b.len() != ENTRY_LEN {
            return Err(AccessLogError::Length);
        }
        let kind = match b[112] {
            1 => AccessKind::Readings,
            2 => AccessKind::Transaction,
            3 => AccessKind::BlockBody,
            4 => AccessKind::AccessLog,
            _ => return Err(AccessLogError::BadField),
        };
        let outcome = match b[113] {
            0 => Outcome::Allowed,
            1 => Outcome::Refused,
            _ => return Err(AccessLogError::BadField),
        };
        let mut s = [0u8; 4];
        s.copy_from_slice(&b[114..118]);
        let stream = match u32::from_le_bytes(s) {
            ALL_STREAMS => None,
            x => Some(u16::try_from(x).map_err(|_| AccessLogError::BadField)?),
        };
        Ok(AccessEntry {
            seq: u64_at(b, 0),
            time_ms: u64_at(b, 8),
            reader: PublicKey(key_at(b, 16)),
            patient: PublicKey(key_at(b, 48)),
            device: PublicKey(key_at(b, 80)),
            kind,
            outcome,
            stream,
            from: u64_at(b, 118),
            to: u64_at(b, 126),
            subject: Hash32(key_at(b, 134)),
        })
    }
}

/// The chain hash after `entry`: `tagged_hash("sensorchain/access-log/v1",
/// chain_id || gateway || prev || entry)`.
pub fn chain_hash(chain: &ChainId, gateway: &PublicKey, prev: &Hash32, entry: &[u8]) -> Hash32 {
    let mut h = TaggedHasher::new(ctx::ACCESS_LOG);
    h.update(&chain.0)
        .update(&gateway.0)
        .update(&prev.0)
        .update(entry);
    h.finalize()
}

/// Checks a run of entries from the first (entry 0): each decodes, has the
/// next number, and extends the hash chain.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    chain: ChainId,
    gateway: PublicKey,
    count: u64,
    hash: Hash32,
}

impl ChainVerifier {
    /// A verifier of `gateway`'s log on `chain`, before entry 0.
    pub fn new(chain: ChainId, gateway: PublicKey) -> Self {
        ChainVerifier {
            chain,
            gateway,
            count: 0,
            hash: Hash32::ZERO,
        }
    }

    /// Adds the next entry's exact bytes.
    pub fn push(&mut self, entry: &[u8]) -> Result<AccessEntry, AccessLogError> {
        let e = AccessEntry::decode(entry)?;
        if e.seq != self.count {
            return Err(AccessLogError::Sequence);
        }
        self.hash = chain_hash(&self.chain, &self.gateway, &self.hash, entry);
        self.count += 1;
        Ok(e)
    }

    /// Entries pushed so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The hash after the last entry pushed (zero before any).
    pub fn hash(&self) -> Hash32 {
        self.hash
    }

    /// Checks that the entries pushed so far are exactly the `head.count`
    /// first ones of the log whose head is `head`.
    pub fn matches(&self, head: &AccessHead) -> Result<(), AccessLogError> {
        if self.count == head.count && self.hash == head.hash {
            Ok(())
        } else {
            Err(AccessLogError::HeadMismatch)
        }
    }
}

/// The head of an access log: how many entries, the hash after the last,
/// and when the gateway signed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessHead {
    /// Number of entries.
    pub count: u64,
    /// The chain hash after entry `count - 1` (zero for an empty log).
    pub hash: Hash32,
    /// When it was signed (ms since the Unix epoch).
    pub time_ms: u64,
}

impl AccessHead {
    fn message(&self, gateway: &PublicKey) -> [u8; 32 + HEAD_LEN] {
        let mut m = [0u8; 32 + HEAD_LEN];
        m[..32].copy_from_slice(&gateway.0);
        m[32..40].copy_from_slice(&self.count.to_le_bytes());
        m[40..72].copy_from_slice(&self.hash.0);
        m[72..80].copy_from_slice(&self.time_ms.to_le_bytes());
        m
    }

    /// The gateway's signature over the head.
    pub fn sign(&self, chain: &ChainId, gateway: &Keypair) -> Signature {
        sign_tagged_fixed(gateway, HEAD_CTX, chain, &self.message(&gateway.public()))
    }

    /// Checks the gateway's signature with the one strict rule.
    pub fn verify(
        &self,
        chain: &ChainId,
        gateway: &VerifyingKey,
        sig: &Signature,
    ) -> Result<(), AccessLogError> {
        verify_tagged(
            gateway,
            ctx::ACCESS_HEAD,
            chain,
            &self.message(gateway.public()),
            sig,
        )
        .map_err(AccessLogError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64) -> AccessEntry {
        AccessEntry {
            seq,
            time_ms: 77,
            reader: PublicKey([1; 32]),
            patient: PublicKey([4; 32]),
            device: PublicKey([3; 32]),
            kind: AccessKind::Readings,
            outcome: Outcome::Refused,
            stream: Some(5),
            from: 10,
            to: 20,
            subject: Hash32::ZERO,
        }
    }

    #[test]
    fn decode_is_total_and_exact() {
        let b = entry(3).encode();
        assert_eq!(AccessEntry::decode(&b).unwrap().encode(), b);
        assert_eq!(AccessEntry::decode(&b[1..]), Err(AccessLogError::Length));
        for (at, v) in [(112, 0u8), (112, 5), (113, 2), (116, 1)] {
            let mut x = b;
            x[at] = v;
            assert_eq!(
                AccessEntry::decode(&x),
                Err(AccessLogError::BadField),
                "{at}"
            );
        }
        let mut all = b;
        all[114..118].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(AccessEntry::decode(&all).unwrap().stream, None);
    }

    #[test]
    fn every_byte_flip_is_detected() {
        let chain = ChainId([7; 32]);
        let gw = Keypair::from_seed([2; 32]);
        let entries: [[u8; ENTRY_LEN]; 3] = [0, 1, 2].map(|i| entry(i).encode());
        let mut v = ChainVerifier::new(chain, gw.public());
        for e in &entries {
            v.push(e).unwrap();
        }
        let head = AccessHead {
            count: 3,
            hash: v.hash(),
            time_ms: 1,
        };
        let sig = head.sign(&chain, &gw);
        let vk = VerifyingKey::from_public(&gw.public()).unwrap();
        head.verify(&chain, &vk, &sig).unwrap();
        v.matches(&head).unwrap();
        for i in 0..3 {
            for at in 0..ENTRY_LEN {
                let mut es = entries;
                es[i][at] ^= 1;
                let mut v = ChainVerifier::new(chain, gw.public());
                let ok = es.iter().all(|e| v.push(e).is_ok()) && v.matches(&head).is_ok();
                assert!(!ok, "flip of byte {at} of entry {i} undetected");
            }
        }
        // a dropped last entry, a forged head
        let mut short = ChainVerifier::new(chain, gw.public());
        short.push(&entries[0]).unwrap();
        short.push(&entries[1]).unwrap();
        assert_eq!(short.matches(&head), Err(AccessLogError::HeadMismatch));
        let forged = AccessHead { count: 2, ..head };
        assert!(forged.verify(&chain, &vk, &sig).is_err());
    }
}
