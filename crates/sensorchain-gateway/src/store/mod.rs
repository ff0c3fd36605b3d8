//! Durable storage of the chain in [redb](https://docs.rs/redb) 4.x.
//!
//! One file, `DIR/chain.redb`. Every block is written in **one** redb write
//! transaction with [`Durability::Immediate`]: its exact bytes, its
//! transactions' index entries, the new head, and optionally its finality
//! certificate and a world-state snapshot. When [`Store::commit_block`]
//! returns `Ok`, all of it is on disk (one fsync per block, none per
//! reading); after a crash either all of it or none of it is visible.
//!
//! # Tables
//!
//! Integers in keys are **big-endian** so that redb's byte order (keys of
//! type `&[u8]` compare lexicographically) is numeric order and range scans
//! come out sorted.
//!
//! | table | key | value |
//! |---|---|---|
//! | `blocks` | height `u64` | the block's exact postcard bytes (as the core's `Block::to_vec`) |
//! | `tx_offsets` | height `u64` | `u64 LE` txs_before (transactions in the blocks below: the block's position, which fixes its `tx_index` epoch), `u32 LE` header length, then `n + 1` `u32 LE` byte offsets into the block bytes: the start of each of its `n` transactions and the end of the last |
//! | `certs` | height `u64` | postcard of the block's `FinalityCert` |
//! | `meta` | `"format"` | `u32 BE` store format version ([`FORMAT_VERSION`]) |
//! | `meta` | `"head"` | height `u64 BE` ‖ hash (32) ‖ timestamp_ms `u64 BE` ‖ tx_count_total `u64 BE` ‖ reading_count_total `u64 BE` (64 bytes) |
//! | `tx_index` | epoch `u32 BE` ‖ tx id (32 bytes, the RFC 6962 leaf hash of the transaction's exact bytes); epoch = the block's txs_before `>> 15` | `(height u64, index u32)` |
//! | `by_stream` | device key (32) ‖ stream `u16 BE` ‖ timestamp_ms `u64 BE` ‖ sequence `u64 BE` | `(height u64, index u32, stream u16)` |
//! | `by_time` | timestamp_ms `u64 BE` ‖ device key (32) ‖ sequence `u64 BE` | `(height u64, index u32, stream u16)` |
//! | `snapshots` | height `u64` | `WorldState::snapshot()` bytes taken after that block; only the latest [`SNAPSHOTS_KEPT`] are kept |
//! | `meta` | `"applied"` | the consensus layer's record of the last log entry applied (opaque here: `cluster::state_machine` encodes it), written in the same transaction as what that entry did |
//! | `rejections` | Raft log index `u64` | UTF-8 reason a log entry was refused by the ledger rule (recorded identically on every gateway) |
//! | `validator_sets` | height `u64` | the `VALIDATE` holders (32-byte public keys, concatenated, sorted) that validate and certify blocks from this height on, written when the set changes |
//! | `own_votes` | height `u64` | the block hash (32) this gateway signed a finality vote for at that height (it never signs another) |
//! | `evidence` | height `u64 BE` ‖ validator key (32) | equivocation: postcard of the two hashes and the two valid votes that validator signed at that height ([`Equivocation`]) |
//!
//! Only `TxKind::Reading` transactions enter the two reading indexes; the
//! timestamp is the device's (`TxBody::timestamp_ms`). A device's
//! `(signer, sequence)` pair is unique on a valid chain (replay protection),
//! so index keys never collide. Readings by device are a merge of the
//! device's streams in `by_stream` (one seek per stream).
//!
//! # Why the indexes look like this (format 2, issue 17)
//!
//! Every index entry is written in the block's own write transaction, so
//! the indexes never lag the blocks (no gap to close after a crash). The
//! cost of a B-tree insert is the pages it dirties: the reading indexes
//! append at a few hot points (per device and stream; at the present
//! time), but transaction ids are random, and an index keyed by them alone
//! (format 1) dirtied about one random leaf per transaction of a tree
//! growing with the chain (the ingest rate fell by 37 % from the 1M to the
//! 10M segment). Keyed by epoch first, a block's entries land in the
//! current epoch's subtree of at most 2^15 entries, whatever the chain's
//! size; lookups by id probe the epochs newest first, the closed ones
//! behind in-memory Bloom filters (`filters.rs`). Within a block each
//! table's entries are inserted in key order. Format 1 also kept a
//! `by_device` table (device ‖ timestamp ‖ sequence), one insert per reading
//! that `by_stream` answers as well. A store of format 1 is refused
//! ([`StoreError::OldFormat`], naming the command) until `sensorchain
//! reindex` ([`Store::reindex`]) rebuilds its indexes from its blocks.
//!
//! # Memory
//!
//! Nothing holds the chain in memory: reads go through redb's page cache,
//! bounded by [`DEFAULT_CACHE_BYTES`] (redb's own default is 1 GiB, too much
//! for a Raspberry Pi). [`Store::blocks`] streams from one read snapshot.
//!
//! # Errors
//!
//! A full disk (ENOSPC, EDQUOT) is reported as [`StoreError::DiskFull`]. redb
//! refuses further writes after a failed write (until the store is opened
//! again); that is reported as [`StoreError::Io`] saying so. A block whose
//! stored bytes no longer decode is [`StoreError::Corrupt`] with its height.
//! A file damaged outside redb makes redb panic in some reads: every store
//! call runs inside a guard (`guard.rs`) that turns such a panic into
//! [`StoreError::Corrupt`] naming the table and height read, without the
//! panic's text. [`Store::check_integrity`] (`integrity.rs`) and
//! [`Store::verify_file`] are what a gateway checks before it starts.
//!
//! # Sharing the file
//!
//! A gateway holds the file exclusively (redb's default mode; why not its
//! `SingleWriter` mode: see `builder`). [`Store::open_read_only`] (audit,
//! export) works on a stopped gateway's store; a running gateway's chain is
//! read through its API.
//!
//! # Files
//!
//! This file opens the store ([`Store`], the constants); the rest is split
//! by concern: `error.rs` ([`StoreError`]), `consensus.rs` (what the
//! consensus layer records with the chain: the applied mark, rejections,
//! validator sets, this gateway's own votes, equivocation evidence), `schema.rs` (the tables above,
//! the head and offsets records, the format check), `keys.rs` (the
//! indexes' key codecs, the epochs), `chain.rs` (the write path:
//! [`Store::commit_block`], certificates; block, header, certificate and
//! head reads), `indexes.rs` (the transaction index, inclusion proofs and
//! the check of one block's entries), `readings.rs` (the reading queries), `filters.rs` (the epochs' Bloom filters),
//! `reindex.rs` ([`Store::reindex`]), `snapshots.rs`, `iter.rs` (streaming
//! the chain), `integrity.rs`, `guard.rs` (panics to errors) and `tamper.rs`
//! (writes that bypass every check: [`tamper_block_bytes`] for the demo,
//! `Store::overwrite_block_bytes_unchecked` for tests only, under
//! `cfg(test)` or the `test-hooks` feature).

use std::fmt;
use std::path::{Path, PathBuf};

use redb::{
    Database, Durability, ReadOnlyDatabase, ReadTransaction, ReadableDatabase, WriteTransaction,
};

mod chain;
mod consensus;
mod error;
mod filters;
mod guard;
#[cfg(test)]
mod index_tests;
mod indexes;
pub mod integrity;
mod iter;
mod keys;
mod readings;
mod reindex;
mod schema;
mod snapshots;
mod tamper;
#[cfg(test)]
pub(crate) mod tests;

pub use chain::{decode_block, decode_cert};
pub use consensus::{APPLIED_MARK_MAX_LEN, Applied, Equivocation};
pub use error::StoreError;
pub use indexes::{InclusionProof, ReadingRef, TxLocation};
pub use integrity::{IntegrityDepth, IntegrityReport};
pub use iter::{BlockIter, ChainIter, StoredBlock};
pub use reindex::ReindexReport;
pub use schema::Head;
pub use tamper::tamper_block_bytes;

/// The store's file name inside its directory.
pub const FILE_NAME: &str = "chain.redb";

/// The layout version written in `meta/format`. Format 1 (until issue 17)
/// keyed `tx_index` by the bare id, had a `by_device` table and no
/// `txs_before` in `tx_offsets`; [`Store::reindex`] rebuilds its indexes.
pub const FORMAT_VERSION: u32 = 2;

/// The oldest format whose indexes [`Store::reindex`] rebuilds (its blocks
/// table is the same).
pub const REINDEXABLE_FROM: u32 = 1;

/// How many world-state snapshots are kept (the latest ones).
pub const SNAPSHOTS_KEPT: usize = 3;

/// redb page cache used by [`Store::open`] and [`Store::open_read_only`].
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

/// Upper bound of an encoded block: the core's bound for `Block::decode`
/// (16 MiB; the core does not re-export its constant).
pub const BLOCK_MAX_LEN: usize = 16 << 20;

/// Upper bound of an encoded finality certificate (32 votes of 72 bytes
/// plus height and hash).
pub const CERT_MAX_LEN: usize = 4096;

enum Db {
    Rw(Database),
    Ro(ReadOnlyDatabase),
}

/// The chain store. `Send + Sync`; share it in an `Arc`. Writes are
/// serialised by redb (one write transaction at a time); reads run
/// concurrently on snapshots.
pub struct Store {
    db: Db,
    path: PathBuf,
    /// Bloom filters of the transaction index's closed epochs.
    filters: filters::EpochFilters,
    /// The next this-many block writes fail (tests' injected fault).
    #[cfg(any(test, feature = "test-hooks"))]
    fail_writes: std::sync::atomic::AtomicU32,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("read_only", &matches!(self.db, Db::Ro(_)))
            .finish()
    }
}

/// The redb settings of every open: a page cache of `cache_bytes`, and
/// redb's default `ConcurrencyMode::ExclusiveWriter` (the gateway locks the
/// file whole; read-only opens from other processes are refused while it
/// runs, [`StoreError::Busy`]). redb 4.5's `SingleWriter` mode would let
/// `audit` and `export` read the file beside a running gateway, but in that
/// mode one failed write (a full disk) also fails every read of the writer
/// until it reopens the file, and a gateway must keep answering reads while
/// its disk is full (`node::tests::full_disk_refuses_and_loses_nothing`).
/// Live audits and exports go through the API (`--api URL`).
fn builder(cache_bytes: usize) -> redb::Builder {
    let mut b = redb::Builder::new();
    b.set_cache_size(cache_bytes);
    b
}

impl Store {
    /// Opens (creating if needed) the store in `dir` (`dir/chain.redb`),
    /// with a [`DEFAULT_CACHE_BYTES`] page cache.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Self::open_with_cache(dir, DEFAULT_CACHE_BYTES)
    }

    /// [`open`](Self::open) with a page cache of `cache_bytes`.
    pub fn open_with_cache(dir: &Path, cache_bytes: usize) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(FILE_NAME);
        guard::guarded("redb file", None, || {
            let db = builder(cache_bytes).create(&path)?;
            let store = Store {
                db: Db::Rw(db),
                path: path.clone(),
                filters: Default::default(),
                #[cfg(any(test, feature = "test-hooks"))]
                fail_writes: Default::default(),
            };
            store.init()?;
            Ok(store)
        })
    }

    /// [`open`](Self::open), then [`verify_file`](Self::verify_file): what a
    /// gateway opens at start. A file redb had to repair is logged as a
    /// warning (the chain-level [`check_integrity`](Self::check_integrity)
    /// then judges what it holds).
    pub fn open_checked(dir: &Path) -> Result<Store, StoreError> {
        let mut store = Self::open(dir)?;
        if !store.verify_file()? {
            tracing::warn!(
                path = %store.path.display(),
                "the chain store's file had damaged pages and redb repaired it; it may have gone \
                 back to an earlier commit: compare its head with another gateway's"
            );
        }
        Ok(store)
    }

    /// Verifies every page of the database file against its checksum
    /// (redb's [`Database::check_integrity`]: it reads the whole file, about
    /// as fast as the disk reads; see docs/PERFORMANCE.md). `Ok(true)`: the
    /// file is intact. `Ok(false)`: redb found damage and repaired the file
    /// (it may have gone back to the commit before the last). A file redb
    /// cannot repair is [`StoreError::Corrupt`]. Needs the store open
    /// read-write and no other handle of it in this process.
    pub fn verify_file(&mut self) -> Result<bool, StoreError> {
        let Db::Rw(db) = &mut self.db else {
            return Err(StoreError::ReadOnly);
        };
        guard::guarded("redb file", None, || {
            db.check_integrity().map_err(|e| match StoreError::from(e) {
                StoreError::Corrupt { what, .. } => StoreError::corrupt_in("redb file", None, what),
                other => other,
            })
        })
    }

    /// Opens an existing store read-only (for audit and export). Fails with
    /// [`StoreError::NotFound`] if there is none and [`StoreError::Busy`] if
    /// a gateway has it open (read a running gateway's chain through its
    /// API instead).
    pub fn open_read_only(dir: &Path) -> Result<Store, StoreError> {
        let path = dir.join(FILE_NAME);
        if !path.is_file() {
            return Err(StoreError::NotFound(format!(
                "no chain store at {}",
                path.display()
            )));
        }
        guard::guarded("redb file", None, || {
            let open = || builder(DEFAULT_CACHE_BYTES).open_read_only(&path);
            let db = match open() {
                Ok(db) => db,
                // A store left by a crash (a killed gateway) needs redb's
                // recovery, which must write: run it once through a
                // read-write open (it rebuilds allocator state; committed
                // data is unchanged), then open read-only.
                Err(redb::DatabaseError::RepairAborted) => {
                    tracing::info!(path = %path.display(), "store was not closed cleanly: recovering it first");
                    drop(builder(DEFAULT_CACHE_BYTES).create(&path)?);
                    open()?
                }
                Err(e) => return Err(e.into()),
            };
            let store = Store {
                db: Db::Ro(db),
                filters: Default::default(),
                #[cfg(any(test, feature = "test-hooks"))]
                fail_writes: Default::default(),
                path: path.clone(),
            };
            store.check_format()?;
            Ok(store)
        })
    }

    /// TEST HOOK: the next `n` block writes fail with a storage error, as
    /// a full disk would fail them.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn fail_next_writes(&self, n: u32) {
        self.fail_writes
            .store(n, std::sync::atomic::Ordering::Release);
    }

    /// An injected failure, if one is due (tests).
    fn injected_failure(&self) -> Result<(), StoreError> {
        #[cfg(any(test, feature = "test-hooks"))]
        if self
            .fail_writes
            .fetch_update(
                std::sync::atomic::Ordering::AcqRel,
                std::sync::atomic::Ordering::Acquire,
                |n| n.checked_sub(1),
            )
            .is_ok()
        {
            return Err(StoreError::Invalid("injected store failure (test)".into()));
        }
        Ok(())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn writer(&self) -> Result<&Database, StoreError> {
        match &self.db {
            Db::Rw(d) => Ok(d),
            Db::Ro(_) => Err(StoreError::ReadOnly),
        }
    }

    fn begin_read(&self) -> Result<ReadTransaction, StoreError> {
        Ok(match &self.db {
            Db::Rw(d) => d.begin_read()?,
            Db::Ro(d) => d.begin_read()?,
        })
    }

    fn begin_write(&self) -> Result<WriteTransaction, StoreError> {
        self.begin_write_with(true)
    }

    /// A write transaction, durable when it commits ([`Durability::Immediate`])
    /// or not ([`Durability::None`]: visible at once, on disk with the next
    /// durable commit; a crash before it loses it, never part of it).
    fn begin_write_with(&self, durable: bool) -> Result<WriteTransaction, StoreError> {
        let mut w = self.writer()?.begin_write()?;
        w.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })?;
        Ok(w)
    }
}
