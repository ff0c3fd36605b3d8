//! What the consensus layer records with the chain, in the same durable
//! write transactions as the blocks and certificates it applies:
//!
//! * the **applied mark** (`meta/applied`): the consensus layer's own record
//!   of the last log entry applied (opaque to the store), written with the
//!   block, certificate or rejection that entry caused, so that after a
//!   crash the two never disagree: an entry is applied exactly once;
//! * **rejections**: a log entry the ledger rule refused, by log index, with
//!   the reason — the same record on every gateway;
//! * **validator sets**: the `VALIDATE` holders that validate and certify
//!   blocks from a height on, written when the set changes (the
//!   certificate of block H is checked against the set in force at H);
//! * **own votes**: the hash this gateway signed a finality vote for at each
//!   height, recorded before the vote leaves, so that it never signs two
//!   hashes for one height;
//! * **evidence**: two valid votes by one validator at one height for
//!   different hashes ([`Equivocation`]).

use redb::{ReadableTable, WriteTransaction};
use sensorchain_core::block::{Block, FinalityCert, FinalityVote};
use sensorchain_core::codec;
use sensorchain_core::hash::Hash32;
use sensorchain_core::identity::PublicKey;

use super::schema::{
    EVIDENCE, META, META_APPLIED, META_PENDING_SNAPSHOT, OWN_VOTES, REJECTIONS, VALIDATOR_SETS,
    open_ro,
};
use super::{Store, StoreError, guard};

/// Largest applied mark the store keeps (the consensus layer's record: a
/// log id and a membership of a few members).
pub const APPLIED_MARK_MAX_LEN: usize = 64 << 10;

/// What a consensus write records besides its block or certificate.
#[derive(Debug, Clone, Copy)]
pub struct Applied<'a> {
    /// The consensus layer's record of the log entry applied (at most
    /// [`APPLIED_MARK_MAX_LEN`] bytes).
    pub mark: &'a [u8],
    /// The validator set in force from the block after this one, when this
    /// block changed it (sorted public keys).
    pub validators_next: Option<&'a [PublicKey]>,
    /// This gateway signs a finality vote for the block: its hash is
    /// recorded as this gateway's vote at the block's height (refused with
    /// [`StoreError::Conflict`], nothing written, if another hash is).
    pub own_vote: bool,
    /// Commit durably (else: visible at once, on disk with the next durable
    /// commit — for entries that a durable log can apply again).
    pub durable: bool,
}

/// Equivocation: one validator's two valid finality votes at one height,
/// for different block hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Equivocation {
    /// The height.
    pub height: u64,
    /// The validator.
    pub validator: PublicKey,
    /// The first vote seen and the hash it signs.
    pub first: (Hash32, FinalityVote),
    /// The second, for another hash.
    pub second: (Hash32, FinalityVote),
}

/// Largest stored evidence record.
const EVIDENCE_MAX_LEN: usize = 512;

impl Store {
    /// Stores equivocation evidence (the first pair recorded for a
    /// validator at a height is kept).
    pub fn record_evidence(&self, e: &Equivocation) -> Result<(), StoreError> {
        guard::guarded("evidence", Some(e.height), || {
            let mut key = [0u8; 40];
            key[..8].copy_from_slice(&e.height.to_be_bytes());
            key[8..].copy_from_slice(&e.validator.0);
            let w = self.begin_write()?;
            {
                let mut t = w.open_table(EVIDENCE)?;
                if t.get(key.as_slice())?.is_none() {
                    t.insert(key.as_slice(), codec::encode_to_vec(e).as_slice())?;
                }
            }
            w.commit()?;
            Ok(())
        })
    }

    /// The equivocation evidence stored, by height, at most `limit`.
    pub fn evidence(&self, limit: usize) -> Result<Vec<Equivocation>, StoreError> {
        guard::guarded("evidence", None, || {
            let r = self.begin_read()?;
            let Some(t) = open_ro(&r, EVIDENCE)? else {
                return Ok(Vec::new());
            };
            t.iter()?
                .take(limit)
                .map(|e| {
                    let (_, v) = e?;
                    codec::decode_exact(v.value(), EVIDENCE_MAX_LEN).map_err(|e| {
                        StoreError::corrupt_in("evidence", None, format!("does not decode: {e}"))
                    })
                })
                .collect()
        })
    }

    /// Stores the next block ([`Store::commit_block`]) with the applied mark
    /// and, if the block changed it, the next validator set — one durable
    /// write. `bytes` are the exact bytes `block` was strictly decoded from
    /// (stored as they are, not re-encoded).
    pub fn commit_block_applied(
        &self,
        block: &Block,
        bytes: &[u8],
        encoded_txs: &[Vec<u8>],
        snapshot: Option<&[u8]>,
        applied: Applied<'_>,
    ) -> Result<(), StoreError> {
        self.injected_failure()?;
        let height = block.header.height;
        let hash = block.header.hash();
        let with = super::chain::With {
            exact: Some(bytes),
            cert: None,
            snapshot,
            relaxed: !applied.durable,
        };
        self.commit_block_and(block, encoded_txs, with, |w| {
            put_mark(w, applied.mark)?;
            if let Some(set) = applied.validators_next {
                put_validator_set(w, height.saturating_add(1), set)?;
            }
            if applied.own_vote {
                put_own_vote(w, height, &hash)?;
            }
            Ok(())
        })
    }

    /// Records `set` as the validator set in force from `height` on (for a
    /// chain stored before validator sets were recorded).
    pub fn record_validator_set(&self, height: u64, set: &[PublicKey]) -> Result<(), StoreError> {
        guard::guarded("validator_sets", Some(height), || {
            let w = self.begin_write()?;
            put_validator_set(&w, height, set)?;
            w.commit()?;
            Ok(())
        })
    }

    /// Stores the certificate of the stored block at `height`
    /// ([`Store::put_cert`]) with the applied mark — one write, durable if
    /// `durable`.
    pub fn put_cert_applied(
        &self,
        height: u64,
        cert: &FinalityCert,
        mark: &[u8],
        durable: bool,
    ) -> Result<(), StoreError> {
        self.put_cert_and(height, cert, durable, |w| put_mark(w, mark))
    }

    /// Records the applied mark of a log entry that changed nothing in the
    /// chain, with the ledger rule's reason when it refused the entry (at
    /// log index `index`) — one write, durable if `durable`.
    pub fn record_applied(
        &self,
        mark: &[u8],
        rejection: Option<(u64, &str)>,
        durable: bool,
    ) -> Result<(), StoreError> {
        guard::guarded("meta", None, || {
            let w = self.begin_write_with(durable)?;
            put_mark(&w, mark)?;
            if let Some((index, why)) = rejection {
                w.open_table(REJECTIONS)?.insert(index, why.as_bytes())?;
            }
            w.commit()?;
            Ok(())
        })
    }

    /// Records (durably) the Raft snapshot being installed — its meta and
    /// data as one postcard blob — so that an install cut short by a crash
    /// is resumed at the next start; `None` clears it.
    pub fn set_pending_snapshot(&self, blob: Option<&[u8]>) -> Result<(), StoreError> {
        guard::guarded("meta", None, || {
            let w = self.begin_write()?;
            {
                let mut meta = w.open_table(META)?;
                match blob {
                    Some(b) => {
                        meta.insert(META_PENDING_SNAPSHOT, b)?;
                    }
                    None => {
                        meta.remove(META_PENDING_SNAPSHOT)?;
                    }
                }
            }
            w.commit()?;
            Ok(())
        })
    }

    /// The Raft snapshot whose install was not finished, if any.
    pub fn pending_snapshot(&self) -> Result<Option<Vec<u8>>, StoreError> {
        guard::guarded("meta", None, || {
            let r = self.begin_read()?;
            let Some(meta) = open_ro(&r, META)? else {
                return Ok(None);
            };
            Ok(meta.get(META_PENDING_SNAPSHOT)?.map(|g| g.value().to_vec()))
        })
    }

    /// The applied mark last written, if any.
    pub fn applied_mark(&self) -> Result<Option<Vec<u8>>, StoreError> {
        guard::guarded("meta", None, || {
            let r = self.begin_read()?;
            let Some(meta) = open_ro(&r, META)? else {
                return Ok(None);
            };
            Ok(meta.get(META_APPLIED)?.map(|g| g.value().to_vec()))
        })
    }

    /// The recorded rejections from log index `from` on, at most `limit`, in
    /// index order.
    pub fn rejections(&self, from: u64, limit: usize) -> Result<Vec<(u64, String)>, StoreError> {
        guard::guarded("rejections", None, || {
            let r = self.begin_read()?;
            let Some(t) = open_ro(&r, REJECTIONS)? else {
                return Ok(Vec::new());
            };
            t.range(from..)?
                .take(limit)
                .map(|e| {
                    let (k, v) = e?;
                    Ok((k.value(), String::from_utf8_lossy(v.value()).into_owned()))
                })
                .collect()
        })
    }

    /// The validator set in force at `height` as recorded by
    /// [`Store::commit_block_applied`] (the latest set recorded at or below
    /// it); `None` if none is recorded.
    pub fn validator_set_at(&self, height: u64) -> Result<Option<Vec<PublicKey>>, StoreError> {
        guard::guarded("validator_sets", Some(height), || {
            let r = self.begin_read()?;
            let Some(t) = open_ro(&r, VALIDATOR_SETS)? else {
                return Ok(None);
            };
            let Some(e) = t.range(..=height)?.next_back() else {
                return Ok(None);
            };
            let (k, v) = e?;
            decode_set(k.value(), v.value()).map(Some)
        })
    }

    /// Records that this gateway signs a finality vote for `hash` at
    /// `height`, durably, before the vote is sent. Voting again for the same
    /// hash is allowed (a resend); another hash at a height already voted is
    /// refused with [`StoreError::Conflict`] and nothing is written.
    pub fn record_own_vote(&self, height: u64, hash: &Hash32) -> Result<(), StoreError> {
        guard::guarded("own_votes", Some(height), || {
            let w = self.begin_write()?;
            put_own_vote(&w, height, hash)?;
            w.commit()?;
            Ok(())
        })
    }

    /// The hash this gateway voted for at `height`, if it voted.
    pub fn own_vote(&self, height: u64) -> Result<Option<Hash32>, StoreError> {
        guard::guarded("own_votes", Some(height), || {
            let r = self.begin_read()?;
            let Some(t) = open_ro(&r, OWN_VOTES)? else {
                return Ok(None);
            };
            t.get(height)?
                .map(|g| {
                    <[u8; 32]>::try_from(g.value()).map(Hash32).map_err(|_| {
                        StoreError::corrupt_in("own_votes", Some(height), "not a 32-byte hash")
                    })
                })
                .transpose()
        })
    }
}

fn put_mark(w: &WriteTransaction, mark: &[u8]) -> Result<(), StoreError> {
    if mark.len() > APPLIED_MARK_MAX_LEN {
        return Err(StoreError::Invalid(format!(
            "applied mark of {} bytes, at most {APPLIED_MARK_MAX_LEN}",
            mark.len()
        )));
    }
    w.open_table(META)?.insert(META_APPLIED, mark)?;
    Ok(())
}

fn put_own_vote(w: &WriteTransaction, height: u64, hash: &Hash32) -> Result<(), StoreError> {
    let mut t = w.open_table(OWN_VOTES)?;
    if let Some(old) = t.get(height)? {
        if old.value() == hash.0.as_slice() {
            return Ok(());
        }
        return Err(StoreError::Conflict(format!(
            "this gateway already signed another block hash at height {height}: it never signs two"
        )));
    }
    t.insert(height, hash.0.as_slice())?;
    Ok(())
}

fn put_validator_set(
    w: &WriteTransaction,
    from_height: u64,
    set: &[PublicKey],
) -> Result<(), StoreError> {
    let mut keys: Vec<[u8; 32]> = set.iter().map(|k| k.0).collect();
    keys.sort_unstable();
    keys.dedup();
    w.open_table(VALIDATOR_SETS)?
        .insert(from_height, keys.concat().as_slice())?;
    Ok(())
}

fn decode_set(height: u64, bytes: &[u8]) -> Result<Vec<PublicKey>, StoreError> {
    if !bytes.len().is_multiple_of(32) {
        return Err(StoreError::corrupt_in(
            "validator_sets",
            Some(height),
            format!("{} bytes is not a list of 32-byte keys", bytes.len()),
        ));
    }
    Ok(bytes
        .chunks_exact(32)
        .map(|c| {
            let mut k = [0u8; 32];
            k.copy_from_slice(c);
            PublicKey(k)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        (dir, s)
    }

    #[test]
    fn own_vote_once_per_height() {
        let (_d, s) = store();
        let (a, b) = (Hash32([1; 32]), Hash32([2; 32]));
        assert_eq!(s.own_vote(5).unwrap(), None);
        s.record_own_vote(5, &a).unwrap();
        s.record_own_vote(5, &a).unwrap();
        assert!(matches!(
            s.record_own_vote(5, &b),
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(s.own_vote(5).unwrap(), Some(a), "the first vote stays");
        s.record_own_vote(6, &b).unwrap();
    }

    #[test]
    fn validator_set_in_force_is_the_latest_at_or_below() {
        let (_d, s) = store();
        let (k1, k2) = (PublicKey([1; 32]), PublicKey([2; 32]));
        assert_eq!(s.validator_set_at(3).unwrap(), None);
        s.record_validator_set(1, &[k2, k1]).unwrap();
        s.record_validator_set(10, &[k2]).unwrap();
        assert_eq!(s.validator_set_at(0).unwrap(), None);
        assert_eq!(s.validator_set_at(1).unwrap(), Some(vec![k1, k2]), "sorted");
        assert_eq!(s.validator_set_at(9).unwrap(), Some(vec![k1, k2]));
        assert_eq!(s.validator_set_at(10).unwrap(), Some(vec![k2]));
        assert_eq!(s.validator_set_at(u64::MAX).unwrap(), Some(vec![k2]));
    }

    #[test]
    fn applied_mark_and_rejections() {
        let (_d, s) = store();
        assert_eq!(s.applied_mark().unwrap(), None);
        s.record_applied(b"one", None, false).unwrap();
        s.record_applied(b"two", Some((7, "bad block")), true)
            .unwrap();
        s.record_applied(b"three", Some((9, "bad certificate")), true)
            .unwrap();
        assert_eq!(s.applied_mark().unwrap().as_deref(), Some(&b"three"[..]));
        assert_eq!(
            s.rejections(0, 10).unwrap(),
            vec![(7, "bad block".into()), (9, "bad certificate".into())]
        );
        assert_eq!(s.rejections(8, 10).unwrap().len(), 1);
        assert_eq!(s.rejections(0, 1).unwrap().len(), 1);
        let huge = vec![0u8; APPLIED_MARK_MAX_LEN + 1];
        assert!(matches!(
            s.record_applied(&huge, None, true),
            Err(StoreError::Invalid(_))
        ));
        assert_eq!(s.applied_mark().unwrap().as_deref(), Some(&b"three"[..]));
    }

    #[test]
    fn a_damaged_validator_set_is_an_error() {
        assert!(matches!(
            decode_set(4, &[0; 33]),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
