//! # sensorchain-wasm
//!
//! The dashboard's verifier and signer: `sensorchain-core`'s own rules
//! compiled to WebAssembly (`wasm32-unknown-unknown`, `no_std`, no `alloc`),
//! so that the page checks what the gateway shows with the same code every
//! gateway, auditor and firmware runs — there is no second implementation in
//! JavaScript (docs/DASHBOARD.md).
//!
//! The ABI is plain `extern "C"` functions over two static buffers of the
//! module's linear memory: the page writes a call's input at [`sc_in`] (at
//! most [`IN_CAP`] bytes), calls `sc_<name>(input_len)`, and reads the answer
//! at [`sc_out`]. Every call returns the number of answer bytes (`>= 0`) or a
//! negative error code ([`err`]). Integers are little-endian; keys, hashes
//! and chain ids 32 bytes, signatures 64, key ids 8. The layouts are in each
//! function's doc and in `assets/sc.js`, which packs them.
//!
//! Each export is a thin wrapper around a safe function over slices
//! (`fn(&[u8], &mut [u8]) -> i32`), which the host tests call directly.
//! Secret keys (a viewer's seed) pass through the input buffer only for the
//! call that needs them and are wiped from it before the call returns.
#![cfg_attr(target_arch = "wasm32", no_std)]
#![warn(missing_docs)]

use core::cell::UnsafeCell;

use sensorchain_core::block::{BlockHeader, CertError, FinalityCert, FinalityVote};
use sensorchain_core::codec::decode_exact;
use sensorchain_core::hash::{ChainId, Hash32};
use sensorchain_core::identity::{KeyId, Keypair, PublicKey, Signature, VerifyingKey};
use sensorchain_core::login::LoginChallenge;
use sensorchain_core::merkle::{MerkleError, verify_inclusion};
use sensorchain_core::permissions::Permissions;
use sensorchain_core::reading::Vital;
use sensorchain_core::sealed::OpenError;
use sensorchain_core::tx::{Payload, Transaction, TxBody, TxKind, sealed_binding};

/// Size of the input buffer: the largest call is a chain of headers or an
/// inclusion proof (64 levels) with its header, far below this.
pub const IN_CAP: usize = 16 * 1024;
/// Size of the answer buffer (a transaction is at most 1,024 bytes).
pub const OUT_CAP: usize = 2048;
/// Most Merkle proof levels accepted.
pub const MAX_PATH: usize = 64;
/// Most validators a certificate is checked against.
pub const MAX_VALIDATORS: usize = 32;

/// The error codes (negative return values).
pub mod err {
    /// The input is shorter than its layout, or has bytes left over.
    pub const INPUT: i32 = -1;
    /// Bytes that do not strictly decode (a transaction, a header).
    pub const MALFORMED: i32 = -2;
    /// A key that may not be registered (not a canonical prime-order point).
    pub const BAD_KEY: i32 = -3;
    /// A signature that does not verify under the strict rule.
    pub const BAD_SIGNATURE: i32 = -4;
    /// The transaction's signer is not the key it was checked against.
    pub const WRONG_SIGNER: i32 = -5;
    /// The proof's length does not fit its index and tree size.
    pub const PROOF_SHAPE: i32 = -10;
    /// The proof leads to another root than the header's `tx_root`.
    pub const ROOT_MISMATCH: i32 = -11;
    /// The header's hash is not the block hash it was checked against.
    pub const HASH_MISMATCH: i32 = -12;
    /// Two headers that do not link (chain id, height or `prev_hash`).
    pub const BROKEN_LINK: i32 = -13;
    /// A certificate for another block.
    pub const CERT_WRONG_BLOCK: i32 = -20;
    /// A vote from a key that is not in the validator set.
    pub const CERT_UNKNOWN_VALIDATOR: i32 = -21;
    /// Two votes from one validator.
    pub const CERT_DUPLICATE: i32 = -22;
    /// A vote whose signature does not verify.
    pub const CERT_BAD_SIGNATURE: i32 = -23;
    /// Fewer valid votes than the quorum.
    pub const CERT_NO_QUORUM: i32 = -24;
    /// Not a sealed reading.
    pub const NOT_SEALED: i32 = -30;
    /// The key is not one of the sealed reading's readers.
    pub const NOT_A_RECIPIENT: i32 = -31;
    /// The sealed reading does not open (tampered, or another binding).
    pub const OPEN_FAILED: i32 = -32;
    /// The opened plaintext is not a vital sign.
    pub const NOT_A_VITAL: i32 = -33;
    /// A transaction kind this module does not sign.
    pub const UNKNOWN_KIND: i32 = -40;
}

/// A buffer of linear memory shared with the page.
struct Buf<const N: usize>(UnsafeCell<[u8; N]>);

// SAFETY: WebAssembly modules of this page run on one thread, and the
// exports never hold a reference to a buffer across calls. On the host
// (tests) the exports are not called; the safe functions are.
unsafe impl<const N: usize> Sync for Buf<N> {}

static IN: Buf<IN_CAP> = Buf(UnsafeCell::new([0; IN_CAP]));
static OUT: Buf<OUT_CAP> = Buf(UnsafeCell::new([0; OUT_CAP]));

/// Where the page writes a call's input.
#[unsafe(no_mangle)]
pub extern "C" fn sc_in() -> *mut u8 {
    IN.0.get().cast()
}

/// Where the page reads a call's answer.
#[unsafe(no_mangle)]
pub extern "C" fn sc_out() -> *const u8 {
    OUT.0.get().cast_const().cast()
}

/// Capacity of the input buffer ([`IN_CAP`]).
#[unsafe(no_mangle)]
pub extern "C" fn sc_in_cap() -> u32 {
    IN_CAP as u32
}

/// Runs `f` over the first `len` input bytes and the answer buffer, then
/// wipes the input (it may have held a secret key).
fn call(len: u32, f: fn(&[u8], &mut [u8]) -> i32) -> i32 {
    // SAFETY: single-threaded (see `Buf`); the two buffers are distinct
    // statics, and both references end before this function returns.
    let (input, out) = unsafe { (&mut *IN.0.get(), &mut *OUT.0.get()) };
    let len = (len as usize).min(IN_CAP);
    let r = f(&input[..len], out);
    input[..len].fill(0);
    r
}

macro_rules! export {
    ($($(#[$m:meta])* $name:ident => $f:path;)*) => {$(
        $(#[$m])*
        #[unsafe(no_mangle)]
        pub extern "C" fn $name(len: u32) -> i32 {
            call(len, $f)
        }
    )*};
}

export! {
    /// [`public_key`].
    sc_public_key => public_key;
    /// [`sign_login`].
    sc_sign_login => sign_login;
    /// [`sign_tx`].
    sc_sign_tx => sign_tx;
    /// [`verify_tx`].
    sc_verify_tx => verify_tx;
    /// [`decode_header`].
    sc_decode_header => decode_header;
    /// [`verify_link`].
    sc_verify_link => verify_link;
    /// [`verify_proposal`].
    sc_verify_proposal => verify_proposal;
    /// [`verify_proof`].
    sc_verify_proof => verify_proof;
    /// [`verify_cert`].
    sc_verify_cert => verify_cert;
    /// [`open_sealed`].
    sc_open_sealed => open_sealed;
}

/// A reader of a call's input.
struct In<'a>(&'a [u8]);

impl<'a> In<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (a, b) = self.0.split_at_checked(n)?;
        self.0 = b;
        Some(a)
    }
    fn arr<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.arr::<1>()?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.arr()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.arr()?))
    }
    /// A `u16` length, then that many bytes.
    fn sized(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.0)
    }
    fn end(&self) -> Option<()> {
        self.0.is_empty().then_some(())
    }
}

/// A writer of a call's answer; returns the length written, or
/// [`err::INPUT`] if it does not fit (it always does: the layouts are
/// bounded).
struct Out<'a> {
    buf: &'a mut [u8],
    n: usize,
}

impl<'a> Out<'a> {
    fn new(buf: &'a mut [u8]) -> Self {
        Out { buf, n: 0 }
    }
    fn put(&mut self, b: &[u8]) -> &mut Self {
        if let Some(d) = self.buf.get_mut(self.n..self.n + b.len()) {
            d.copy_from_slice(b);
        }
        self.n += b.len();
        self
    }
    fn done(&self) -> i32 {
        if self.n <= self.buf.len() {
            self.n as i32
        } else {
            err::INPUT
        }
    }
}

/// Runs `f`, mapping a short or over-long input (`None`) to [`err::INPUT`].
fn or_input(r: Option<i32>) -> i32 {
    r.unwrap_or(err::INPUT)
}

fn vk(pk: [u8; 32]) -> Result<VerifyingKey, i32> {
    VerifyingKey::from_public(&PublicKey(pk)).map_err(|_| err::BAD_KEY)
}

/// `seed (32)` → `public key (32)`: who a key file is.
pub fn public_key(input: &[u8], out: &mut [u8]) -> i32 {
    or_input((|| {
        let mut i = In(input);
        let kp = Keypair::from_seed(i.arr()?);
        i.end()?;
        Some(Out::new(out).put(&kp.public().0).done())
    })())
}

/// `seed (32) | chain id (32) | gateway (32) | nonce (32) | expires_ms (u64)`
/// → `signature (64)`: the API login signature
/// ([`LoginChallenge::sign`], docs/PROTOCOL.md "API login") of the seed's
/// identity.
pub fn sign_login(input: &[u8], out: &mut [u8]) -> i32 {
    or_input((|| {
        let mut i = In(input);
        let kp = Keypair::from_seed(i.arr()?);
        let c = LoginChallenge {
            chain_id: ChainId(i.arr()?),
            identity: kp.public(),
            gateway: PublicKey(i.arr()?),
            nonce: i.arr()?,
            expires_ms: i.u64()?,
        };
        i.end()?;
        Some(Out::new(out).put(&c.sign(&kp).0).done())
    })())
}

/// Kinds [`sign_tx`] signs.
pub mod kind {
    /// `Grant { target: a, permissions: b[0] }`.
    pub const GRANT: u8 = 1;
    /// `Revoke { target: a, permissions: b[0] }`.
    pub const REVOKE: u8 = 2;
    /// `AssignDevice { device: a, patient: b }`.
    pub const ASSIGN: u8 = 3;
    /// `Consent { reader: a, granted: b[0] != 0 }`.
    pub const CONSENT: u8 = 4;
}

/// `seed (32) | chain id (32) | sequence (u64) | timestamp_ms (u64) | kind
/// (u8) | a (32) | b (32)` → the signed transaction's exact bytes, ready for
/// `POST /txs`. `kind` and the meaning of `a` and `b` are in [`kind`]; the
/// signer is the seed's identity.
pub fn sign_tx(input: &[u8], out: &mut [u8]) -> i32 {
    or_input((|| {
        let mut i = In(input);
        let kp = Keypair::from_seed(i.arr()?);
        let chain = ChainId(i.arr()?);
        let sequence = i.u64()?;
        let timestamp_ms = i.u64()?;
        let k = i.u8()?;
        let a = PublicKey(i.arr()?);
        let b: [u8; 32] = i.arr()?;
        i.end()?;
        let kind = match k {
            kind::GRANT => TxKind::Grant {
                target: a,
                permissions: Permissions(b[0]),
            },
            kind::REVOKE => TxKind::Revoke {
                target: a,
                permissions: Permissions(b[0]),
            },
            kind::ASSIGN => TxKind::AssignDevice {
                device: a,
                patient: PublicKey(b),
            },
            kind::CONSENT => TxKind::Consent {
                reader: a,
                granted: b[0] != 0,
            },
            _ => return Some(err::UNKNOWN_KIND),
        };
        let body = TxBody {
            signer: kp.public(),
            sequence,
            timestamp_ms,
            kind,
        };
        Some(match Transaction::sign_into(&body, &chain, &kp, out) {
            Ok(bytes) => bytes.len() as i32,
            Err(_) => err::INPUT,
        })
    })())
}

/// A vital sign as `code (u8) | a (i32) | b (i32)`: 1 body temperature
/// (a = centi-°C), 2 SpO2 (a = %), 3 blood pressure (a = systolic, b =
/// diastolic, mmHg), 4 heart rate (a = bpm), 5 another kind (a = its kind).
fn put_vital(o: &mut Out, v: &Vital) {
    let (code, a, b): (u8, i32, i32) = match v {
        Vital::BodyTemperature { centi_celsius } => (1, (*centi_celsius).into(), 0),
        Vital::SpO2 { percent } => (2, (*percent).into(), 0),
        Vital::BloodPressure {
            systolic_mmhg,
            diastolic_mmhg,
        } => (3, (*systolic_mmhg).into(), (*diastolic_mmhg).into()),
        Vital::HeartRate { bpm } => (4, (*bpm).into(), 0),
        Vital::Opaque { kind, .. } => (5, (*kind).into(), 0),
    };
    o.put(&[code]).put(&a.to_le_bytes()).put(&b.to_le_bytes());
}

/// `chain id (32) | signer (32) | transaction bytes` → `id (32) | sequence
/// (u64) | timestamp_ms (u64) | reading (u8: 0 not a reading, 1 plain, 2
/// sealed) | stream (u16) | vital (9, see below; zeros unless plain)`.
///
/// Strictly decodes the transaction, checks that `signer` signed it (the
/// ledger's strict rule, [`Transaction::verify_encoded`]) for this chain;
/// the id is the RFC 6962 leaf hash of the exact bytes. The vital is
/// `code (u8) | a (i32) | b (i32)`: 1 temperature (centi-°C), 2 SpO2 (%),
/// 3 blood pressure (systolic, diastolic), 4 heart rate (bpm), 5 other.
pub fn verify_tx(input: &[u8], out: &mut [u8]) -> i32 {
    or_input((|| {
        let mut i = In(input);
        let chain = ChainId(i.arr()?);
        let signer: [u8; 32] = i.arr()?;
        let bytes = i.rest();
        let Ok(tx) = Transaction::decode(bytes) else {
            return Some(err::MALFORMED);
        };
        if tx.body.signer.0 != signer {
            return Some(err::WRONG_SIGNER);
        }
        let key = match vk(signer) {
            Ok(k) => k,
            Err(e) => return Some(e),
        };
        if Transaction::verify_encoded(bytes, &chain, &key, &tx.signature).is_err() {
            return Some(err::BAD_SIGNATURE);
        }
        let mut o = Out::new(out);
        o.put(&Transaction::id_of_encoded(bytes).0)
            .put(&tx.body.sequence.to_le_bytes())
            .put(&tx.body.timestamp_ms.to_le_bytes());
        match &tx.body.kind {
            TxKind::Reading { stream, payload } => {
                let (enc, v) = match payload {
                    Payload::Plain(v) => (1u8, Some(v)),
                    Payload::Sealed(_) => (2, None),
                };
                o.put(&[enc]).put(&stream.to_le_bytes());
                match v {
                    Some(v) => put_vital(&mut o, v),
                    None => {
                        o.put(&[0; 9]);
                    }
                }
            }
            _ => {
                o.put(&[0; 12]);
            }
        }
        Some(o.done())
    })())
}

fn header(bytes: &[u8]) -> Result<BlockHeader, i32> {
    BlockHeader::decode(bytes).map_err(|_| err::MALFORMED)
}

/// `header bytes` → `hash (32) | height (u64) | prev_hash (32) | tx_root
/// (32) | state_root (32) | timestamp_ms (u64) | proposer (32) | chain id
/// (32)`: a block header strictly decoded, and its hash
/// (`SHA-256(0x14 ‖ "sensorchain/block/v1" ‖ header bytes)`) computed here.
pub fn decode_header(input: &[u8], out: &mut [u8]) -> i32 {
    let h = match header(input) {
        Ok(h) => h,
        Err(e) => return e,
    };
    Out::new(out)
        .put(&h.hash().0)
        .put(&h.height.to_le_bytes())
        .put(&h.prev_hash.0)
        .put(&h.tx_root.0)
        .put(&h.state_root.0)
        .put(&h.timestamp_ms.to_le_bytes())
        .put(&h.proposer.0)
        .put(&h.chain_id.0)
        .done()
}

/// `header (u16 len, bytes) | signature (64)` → `proposer (32)`: the
/// header's proposer signed its hash ([`BlockHeader::verify_proposal`],
/// under the key the header names).
pub fn verify_proposal(input: &[u8], out: &mut [u8]) -> i32 {
    or_input((|| {
        let mut i = In(input);
        let h = match header(i.sized()?) {
            Ok(h) => h,
            Err(e) => return Some(e),
        };
        let sig = Signature(i.arr()?);
        i.end()?;
        let key = match vk(h.proposer.0) {
            Ok(k) => k,
            Err(e) => return Some(e),
        };
        if h.verify_proposal(&key, &sig).is_err() {
            return Some(err::BAD_SIGNATURE);
        }
        Some(Out::new(out).put(&h.proposer.0).done())
    })())
}

/// `count (u16) | count × (len (u16) | header bytes)` → `hash of the last
/// (32)`: the headers form one hash chain (each is the next height of the
/// same chain, its `prev_hash` the hash of the one before).
pub fn verify_link(input: &[u8], out: &mut [u8]) -> i32 {
    or_input((|| {
        let mut i = In(input);
        let n = i.u16()?;
        let mut prev: Option<BlockHeader> = None;
        for _ in 0..n {
            let h = match header(i.sized()?) {
                Ok(h) => h,
                Err(e) => return Some(e),
            };
            if let Some(p) = &prev
                && (h.chain_id != p.chain_id
                    || Some(h.height) != p.height.checked_add(1)
                    || h.prev_hash != p.hash())
            {
                return Some(err::BROKEN_LINK);
            }
            prev = Some(h);
        }
        i.end()?;
        let last = prev?;
        Some(Out::new(out).put(&last.hash().0).done())
    })())
}

/// `leaf hash (32) | index (u64) | tree size (u64) | block hash (32) |
/// header (u16 len, bytes) | path count (u16) | path (count × 32)` →
/// `tx root (32) | height (u64)`: an RFC 6962 inclusion proof
/// ([`verify_inclusion`]) against the `tx_root` of the header, whose hash
/// must be `block hash`.
pub fn verify_proof(input: &[u8], out: &mut [u8]) -> i32 {
    or_input((|| {
        let mut i = In(input);
        let leaf = Hash32(i.arr()?);
        let index = i.u64()?;
        let size = i.u64()?;
        let block_hash = Hash32(i.arr()?);
        let hb = i.sized()?;
        let n = i.u16()? as usize;
        if n > MAX_PATH {
            return Some(err::PROOF_SHAPE);
        }
        let mut path = [Hash32([0; 32]); MAX_PATH];
        for p in path.iter_mut().take(n) {
            *p = Hash32(i.arr()?);
        }
        i.end()?;
        let h = match header(hb) {
            Ok(h) => h,
            Err(e) => return Some(e),
        };
        if h.hash() != block_hash {
            return Some(err::HASH_MISMATCH);
        }
        match verify_inclusion(&leaf, index, size, &path[..n], &h.tx_root) {
            Ok(()) => {}
            Err(MerkleError::RootMismatch) => return Some(err::ROOT_MISMATCH),
            Err(_) => return Some(err::PROOF_SHAPE),
        }
        Some(
            Out::new(out)
                .put(&h.tx_root.0)
                .put(&h.height.to_le_bytes())
                .done(),
        )
    })())
}

/// `header (u16 len, bytes) | cert height (u64) | cert block hash (32) |
/// votes (u8) | votes × (key id (8) | signature (64)) | validators (u8) |
/// validators × key (32)` → `valid votes (u8) | quorum (u8)`: the finality
/// certificate proves the header final under that validator set
/// ([`FinalityCert::verify`]).
pub fn verify_cert(input: &[u8], out: &mut [u8]) -> i32 {
    or_input((|| {
        let mut i = In(input);
        let h = match header(i.sized()?) {
            Ok(h) => h,
            Err(e) => return Some(e),
        };
        let mut cert = FinalityCert {
            height: i.u64()?,
            block_hash: Hash32(i.arr()?),
            votes: Default::default(),
        };
        for _ in 0..i.u8()? {
            let v = FinalityVote {
                validator: KeyId(i.arr()?),
                signature: Signature(i.arr()?),
            };
            if cert.votes.push(v).is_err() {
                return Some(err::INPUT);
            }
        }
        let nv = i.u8()? as usize;
        let mut set: heapless::Vec<VerifyingKey, MAX_VALIDATORS> = heapless::Vec::new();
        for _ in 0..nv {
            let k = match vk(i.arr()?) {
                Ok(k) => k,
                Err(e) => return Some(e),
            };
            if set.push(k).is_err() {
                return Some(err::INPUT);
            }
        }
        i.end()?;
        let r = cert.verify(&h, &set);
        Some(match r {
            Ok(()) => Out::new(out)
                .put(&[
                    cert.votes.len() as u8,
                    sensorchain_core::block::quorum(nv) as u8,
                ])
                .done(),
            Err(CertError::WrongBlock) => err::CERT_WRONG_BLOCK,
            Err(CertError::UnknownValidator) => err::CERT_UNKNOWN_VALIDATOR,
            Err(CertError::DuplicateVote) => err::CERT_DUPLICATE,
            Err(CertError::BadSignature) => err::CERT_BAD_SIGNATURE,
            Err(CertError::NoQuorum { .. }) => err::CERT_NO_QUORUM,
            Err(_) => err::INPUT,
        })
    })())
}

/// `seed (32) | chain id (32) | transaction bytes` → `reader key id (8) |
/// vital (9)`: opens a sealed reading with the viewer's key, here in the
/// page (the key never leaves it). The binding is the transaction's own
/// chain, device, stream and sequence ([`sealed_binding`]), so a payload
/// moved to another transaction does not open.
pub fn open_sealed(input: &[u8], out: &mut [u8]) -> i32 {
    or_input((|| {
        let mut i = In(input);
        let kp = Keypair::from_seed(i.arr()?);
        let chain = ChainId(i.arr()?);
        let Ok(tx) = Transaction::decode(i.rest()) else {
            return Some(err::MALFORMED);
        };
        let TxKind::Reading {
            stream,
            payload: Payload::Sealed(p),
        } = &tx.body.kind
        else {
            return Some(err::NOT_SEALED);
        };
        let binding = sealed_binding(&chain, &tx.body.signer, *stream, tx.body.sequence);
        let mut buf = [0u8; sensorchain_core::sealed::MAX_SEALED_PLAINTEXT];
        let plain = match p.open(&kp, &binding, &mut buf) {
            Ok(b) => b,
            Err(OpenError::NotARecipient) => return Some(err::NOT_A_RECIPIENT),
            Err(_) => return Some(err::OPEN_FAILED),
        };
        let Ok(v) = decode_exact::<Vital>(plain, sensorchain_core::sealed::MAX_SEALED_PLAINTEXT)
        else {
            return Some(err::NOT_A_VITAL);
        };
        let mut o = Out::new(out);
        o.put(&kp.public().key_id().0);
        put_vital(&mut o, &v);
        Some(o.done())
    })())
}

#[cfg(all(target_arch = "wasm32", not(test)))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

#[cfg(test)]
mod tests;
