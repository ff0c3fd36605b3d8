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
//! | `tx_offsets` | height `u64` | `u32 LE` header length, then `n + 1` `u32 LE` byte offsets into the block bytes: the start of each of its `n` transactions and the end of the last |
//! | `certs` | height `u64` | postcard of the block's `FinalityCert` |
//! | `meta` | `"format"` | `u32 BE` store format version ([`FORMAT_VERSION`]) |
//! | `meta` | `"head"` | height `u64 BE` ‖ hash (32) ‖ timestamp_ms `u64 BE` ‖ tx_count_total `u64 BE` ‖ reading_count_total `u64 BE` (64 bytes) |
//! | `tx_index` | tx id (32 bytes, the RFC 6962 leaf hash of the transaction's exact bytes) | `(height u64, index u32)` |
//! | `by_device` | device key (32) ‖ timestamp_ms `u64 BE` ‖ sequence `u64 BE` | `(height u64, index u32, stream u16)` |
//! | `by_stream` | device key (32) ‖ stream `u16 BE` ‖ timestamp_ms `u64 BE` ‖ sequence `u64 BE` | `(height u64, index u32, stream u16)` |
//! | `by_time` | timestamp_ms `u64 BE` ‖ device key (32) ‖ sequence `u64 BE` | `(height u64, index u32, stream u16)` |
//! | `snapshots` | height `u64` | `WorldState::snapshot()` bytes taken after that block; only the latest [`SNAPSHOTS_KEPT`] are kept |
//!
//! Only `TxKind::Reading` transactions enter the three reading indexes; the
//! timestamp is the device's (`TxBody::timestamp_ms`). A device's
//! `(signer, sequence)` pair is unique on a valid chain (replay protection),
//! so index keys never collide.
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

use std::fmt;
use std::path::{Path, PathBuf};

use redb::{
    Database, Durability, ReadOnlyDatabase, ReadOnlyTable, ReadTransaction, ReadableDatabase,
    ReadableTable, ReadableTableMetadata, TableDefinition, TableError, WriteTransaction,
};
use sensorchain_core::block::{Block, BlockHeader, FinalityCert};
use sensorchain_core::codec::{self, DecodeError};
use sensorchain_core::hash::Hash32;
use sensorchain_core::identity::PublicKey;
use sensorchain_core::merkle;
use sensorchain_core::tx::{Transaction, TxKind};

mod guard;
pub mod integrity;
#[cfg(test)]
pub(crate) mod tests;

pub use integrity::{IntegrityDepth, IntegrityReport};

/// The store's file name inside its directory.
pub const FILE_NAME: &str = "chain.redb";

/// The layout version written in `meta/format`.
pub const FORMAT_VERSION: u32 = 1;

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

const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
const TX_OFFSETS: TableDefinition<u64, &[u8]> = TableDefinition::new("tx_offsets");
const CERTS: TableDefinition<u64, &[u8]> = TableDefinition::new("certs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const TX_INDEX: TableDefinition<&[u8], (u64, u32)> = TableDefinition::new("tx_index");
const BY_DEVICE: TableDefinition<&[u8], (u64, u32, u16)> = TableDefinition::new("by_device");
const BY_STREAM: TableDefinition<&[u8], (u64, u32, u16)> = TableDefinition::new("by_stream");
const BY_TIME: TableDefinition<&[u8], (u64, u32, u16)> = TableDefinition::new("by_time");
const SNAPSHOTS: TableDefinition<u64, &[u8]> = TableDefinition::new("snapshots");

/// A reading index opened for reading.
type ReadingTable = ReadOnlyTable<&'static [u8], (u64, u32, u16)>;

const META_HEAD: &str = "head";
const META_FORMAT: &str = "format";
const HEAD_LEN: usize = 64;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The disk (or the user's quota) is full: nothing of the failed write
    /// was committed.
    #[error("disk full: no space left on the device holding the chain store ({0})")]
    DiskFull(#[source] std::io::Error),
    /// Another I/O error.
    #[error("I/O error in the chain store: {0}")]
    Io(#[source] std::io::Error),
    /// Stored data is damaged.
    #[error("chain store is corrupt{}{}: {what}", fmt_height(.height), fmt_table(.table))]
    Corrupt {
        /// The block concerned, if one is.
        height: Option<u64>,
        /// The table concerned (`blocks`, `meta`, ...), if known.
        table: Option<&'static str>,
        /// What is wrong.
        what: String,
    },
    /// Bytes from outside the store do not decode.
    #[error("cannot decode {what}: {error}")]
    Decode {
        /// What was being decoded.
        what: String,
        /// Why it failed.
        error: DecodeError,
    },
    /// Something the operation needs does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The write does not fit the stored chain (e.g. a height that is not
    /// head + 1).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The caller's arguments are inconsistent (e.g. encodings that are not
    /// the block's transactions).
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// The database is open elsewhere (a running gateway holds it
    /// exclusively).
    #[error("the chain store is in use by another process (is a gateway running on it?)")]
    Busy,
    /// The store was opened read-only.
    #[error("the chain store is open read-only")]
    ReadOnly,
    /// Another database error.
    #[error("database error: {0}")]
    Database(String),
}

fn fmt_height(h: &Option<u64>) -> String {
    match h {
        Some(h) => format!(" at height {h}"),
        None => String::new(),
    }
}

fn fmt_table(t: &Option<&'static str>) -> String {
    match t {
        Some(t) => format!(" (table {t})"),
        None => String::new(),
    }
}

impl StoreError {
    /// True if the error is a full disk.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::DiskFull(_))
    }

    fn corrupt(height: u64, what: impl Into<String>) -> Self {
        StoreError::Corrupt {
            height: Some(height),
            table: Some("blocks"),
            what: what.into(),
        }
    }

    /// A [`StoreError::Corrupt`] naming `table`.
    pub(crate) fn corrupt_in(
        table: &'static str,
        height: Option<u64>,
        what: impl Into<String>,
    ) -> Self {
        StoreError::Corrupt {
            height,
            table: Some(table),
            what: what.into(),
        }
    }

    /// True if stored data is damaged ([`StoreError::Corrupt`]).
    pub fn is_corrupt(&self) -> bool {
        matches!(self, StoreError::Corrupt { .. })
    }
}

fn is_disk_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
        || matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

fn io_error(e: std::io::Error) -> StoreError {
    if is_disk_full(&e) {
        StoreError::DiskFull(e)
    } else {
        StoreError::Io(e)
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        io_error(e)
    }
}

impl From<redb::StorageError> for StoreError {
    fn from(e: redb::StorageError) -> Self {
        use redb::StorageError as S;
        match e {
            // redb reports a file it cannot read as a database (a damaged
            // header: "Not a redb database: magic number mismatch", ...) as
            // an I/O error of kind InvalidData, and a damaged page pointer
            // past the end of the file as UnexpectedEof: damage, not I/O
            // (the table is filled in by the guard of the read)
            S::Io(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                StoreError::Corrupt {
                    height: None,
                    table: None,
                    what: format!("the database file is damaged ({e})"),
                }
            }
            S::Io(e) => io_error(e),
            S::Corrupted(what) => StoreError::Corrupt {
                height: None,
                table: None,
                what,
            },
            S::PreviousIo => StoreError::Io(std::io::Error::other(
                "an earlier write failed (disk full?); the store refuses writes until it is opened again",
            )),
            S::Backend(b) => match b.downcast::<std::io::Error>() {
                Ok(io) => io_error(*io),
                Err(b) => StoreError::Database(b.to_string()),
            },
            other => StoreError::Database(other.to_string()),
        }
    }
}

impl From<redb::TransactionError> for StoreError {
    fn from(e: redb::TransactionError) -> Self {
        match e {
            redb::TransactionError::Storage(s) => s.into(),
            other => StoreError::Database(other.to_string()),
        }
    }
}

impl From<redb::CommitError> for StoreError {
    fn from(e: redb::CommitError) -> Self {
        match e {
            redb::CommitError::Storage(s) => s.into(),
            other => StoreError::Database(other.to_string()),
        }
    }
}

impl From<TableError> for StoreError {
    fn from(e: TableError) -> Self {
        match e {
            TableError::Storage(s) => s.into(),
            other => StoreError::Database(other.to_string()),
        }
    }
}

impl From<redb::DatabaseError> for StoreError {
    fn from(e: redb::DatabaseError) -> Self {
        match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Busy,
            redb::DatabaseError::Storage(s) => s.into(),
            other => StoreError::Database(other.to_string()),
        }
    }
}

impl From<redb::SetDurabilityError> for StoreError {
    fn from(e: redb::SetDurabilityError) -> Self {
        StoreError::Database(e.to_string())
    }
}

/// The last stored block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Its height.
    pub height: u64,
    /// Its hash.
    pub hash: Hash32,
    /// Its header's timestamp.
    pub timestamp_ms: u64,
    /// Transactions in blocks `0..=height`.
    pub tx_count_total: u64,
    /// Readings (`TxKind::Reading` transactions) in blocks `0..=height`.
    pub reading_count_total: u64,
}

impl Head {
    fn encode(&self) -> [u8; HEAD_LEN] {
        let mut b = [0u8; HEAD_LEN];
        b[..8].copy_from_slice(&self.height.to_be_bytes());
        b[8..40].copy_from_slice(&self.hash.0);
        b[40..48].copy_from_slice(&self.timestamp_ms.to_be_bytes());
        b[48..56].copy_from_slice(&self.tx_count_total.to_be_bytes());
        b[56..64].copy_from_slice(&self.reading_count_total.to_be_bytes());
        b
    }

    fn decode(b: &[u8]) -> Result<Head, StoreError> {
        let b: &[u8; HEAD_LEN] = b.try_into().map_err(|_| {
            StoreError::corrupt_in(
                "meta",
                None,
                format!("head record is {} bytes, expected {HEAD_LEN}", b.len()),
            )
        })?;
        let u = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().unwrap_or_default());
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&b[8..40]);
        Ok(Head {
            height: u(0),
            hash: Hash32(hash),
            timestamp_ms: u(40),
            tx_count_total: u(48),
            reading_count_total: u(56),
        })
    }
}

/// Where a transaction is: block height and index in the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxLocation {
    /// The block's height.
    pub height: u64,
    /// The transaction's index in the block, from 0.
    pub index: u32,
}

/// A reading found by an index query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadingRef {
    /// Where the reading's transaction is.
    pub loc: TxLocation,
    /// The device (the transaction's signer).
    pub device: PublicKey,
    /// The device's stream.
    pub stream: u16,
    /// The device's sequence number.
    pub sequence: u64,
    /// The device's timestamp.
    pub timestamp_ms: u64,
}

/// A Merkle inclusion proof of a transaction in its block (RFC 6962 `PATH`,
/// bottom to top), for `sensorchain_core::merkle::verify_inclusion(
/// &leaf_hash, index, tree_size, &path, &tx_root)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    /// Where the transaction is.
    pub loc: TxLocation,
    /// The transaction id: the RFC 6962 leaf hash of its exact bytes.
    pub leaf_hash: Hash32,
    /// Number of transactions in the block.
    pub tree_size: u64,
    /// The sibling hashes, bottom to top.
    pub path: Vec<Hash32>,
    /// The block header's `tx_root`.
    pub tx_root: Hash32,
    /// The block's hash.
    pub block_hash: Hash32,
}

/// One stored block with its certificate, as [`Store::chain_entries`] yields it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlock {
    /// The key it is stored under.
    pub height: u64,
    /// The block's exact bytes.
    pub bytes: Vec<u8>,
    /// The certificate's exact bytes, if one is stored.
    pub cert: Option<Vec<u8>>,
}

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

/// Opens a table of a read transaction; `None` if it does not exist (a store
/// written by an older layout, or never written).
fn open_ro<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &ReadTransaction,
    def: TableDefinition<K, V>,
) -> Result<Option<ReadOnlyTable<K, V>>, StoreError> {
    match txn.open_table(def) {
        Ok(t) => Ok(Some(t)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn loc_of(v: (u64, u32)) -> TxLocation {
    TxLocation {
        height: v.0,
        index: v.1,
    }
}

fn key_device(device: &PublicKey, ts: u64, seq: u64) -> [u8; 48] {
    let mut k = [0u8; 48];
    k[..32].copy_from_slice(&device.0);
    k[32..40].copy_from_slice(&ts.to_be_bytes());
    k[40..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn key_stream(device: &PublicKey, stream: u16, ts: u64, seq: u64) -> [u8; 50] {
    let mut k = [0u8; 50];
    k[..32].copy_from_slice(&device.0);
    k[32..34].copy_from_slice(&stream.to_be_bytes());
    k[34..42].copy_from_slice(&ts.to_be_bytes());
    k[42..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn key_time(device: &PublicKey, ts: u64, seq: u64) -> [u8; 48] {
    let mut k = [0u8; 48];
    k[..8].copy_from_slice(&ts.to_be_bytes());
    k[8..40].copy_from_slice(&device.0);
    k[40..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

fn pk_of(b: &[u8]) -> PublicKey {
    let mut a = [0u8; 32];
    a.copy_from_slice(&b[..32]);
    PublicKey(a)
}

/// The layout of a block's bytes: header length and transaction offsets.
struct TxOffsets {
    header_len: usize,
    /// `n + 1` offsets.
    offsets: Vec<usize>,
}

impl TxOffsets {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(4 * (self.offsets.len() + 1));
        v.extend_from_slice(&(self.header_len as u32).to_le_bytes());
        for o in &self.offsets {
            v.extend_from_slice(&(*o as u32).to_le_bytes());
        }
        v
    }

    /// Decodes and checks against the block bytes' length.
    fn decode(height: u64, b: &[u8], block_len: usize) -> Result<TxOffsets, StoreError> {
        let bad = |what: &str| StoreError::corrupt(height, format!("transaction offsets: {what}"));
        if b.len() < 8 || !b.len().is_multiple_of(4) {
            return Err(bad("bad length"));
        }
        let mut it = b
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize);
        let header_len = it.next().ok_or_else(|| bad("empty"))?;
        let offsets: Vec<usize> = it.collect();
        let ordered = offsets.windows(2).all(|w| w[0] <= w[1]);
        if !ordered
            || offsets.last() != Some(&block_len)
            || offsets[0] < header_len
            || header_len > block_len
        {
            return Err(bad("do not fit the block bytes"));
        }
        Ok(TxOffsets {
            header_len,
            offsets,
        })
    }

    fn count(&self) -> usize {
        self.offsets.len() - 1
    }

    fn tx<'b>(&self, bytes: &'b [u8], i: usize) -> Option<&'b [u8]> {
        let (s, e) = (*self.offsets.get(i)?, *self.offsets.get(i + 1)?);
        bytes.get(s..e)
    }
}

/// What a write transaction needs to index one transaction.
struct TxEntry {
    id: Hash32,
    reading: Option<(PublicKey, u16, u64, u64)>,
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
                path: path.clone(),
            };
            store.check_format()?;
            Ok(store)
        })
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
        let mut w = self.writer()?.begin_write()?;
        w.set_durability(Durability::Immediate)?;
        Ok(w)
    }

    /// Creates every table and the format record.
    fn init(&self) -> Result<(), StoreError> {
        let w = self.begin_write()?;
        {
            let mut meta = w.open_table(META)?;
            let existing = meta.get(META_FORMAT)?.map(|g| g.value().to_vec());
            match existing {
                Some(v) => check_format_bytes(&v)?,
                None => {
                    meta.insert(META_FORMAT, FORMAT_VERSION.to_be_bytes().as_slice())?;
                }
            }
            w.open_table(BLOCKS)?;
            w.open_table(TX_OFFSETS)?;
            w.open_table(CERTS)?;
            w.open_table(TX_INDEX)?;
            w.open_table(BY_DEVICE)?;
            w.open_table(BY_STREAM)?;
            w.open_table(BY_TIME)?;
            w.open_table(SNAPSHOTS)?;
        }
        w.commit()?;
        Ok(())
    }

    fn check_format(&self) -> Result<(), StoreError> {
        let r = self.begin_read()?;
        let Some(meta) = open_ro(&r, META)? else {
            return Ok(());
        };
        match meta.get(META_FORMAT)? {
            Some(g) => check_format_bytes(g.value()),
            None => Ok(()),
        }
    }

    /// Stores the next block in one durable write transaction: its bytes,
    /// the index entries of its transactions (`encoded_txs`: their exact
    /// encodings, in order, as the block's `encoded_txs()`), the new head,
    /// and optionally its finality certificate and a snapshot of the world
    /// state after it. The height must be head + 1 (0 for the first block)
    /// and `prev_hash` the head's hash, else [`StoreError::Conflict`].
    ///
    /// The block is not validated here (that is the core's
    /// `WorldState::apply_block`, which the caller runs first).
    pub fn commit_block(
        &self,
        block: &Block,
        encoded_txs: &[Vec<u8>],
        cert: Option<&FinalityCert>,
        snapshot: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        guard::guarded("blocks", Some(block.header.height), || {
            let h = &block.header;
            let height = h.height;
            if encoded_txs.len() != block.txs.len() {
                return Err(StoreError::Invalid(format!(
                    "{} encodings for {} transactions",
                    encoded_txs.len(),
                    block.txs.len()
                )));
            }
            let hash = h.hash();
            if let Some(c) = cert
                && (c.height != height || c.block_hash != hash)
            {
                return Err(StoreError::Invalid(
                    "the certificate is for another block".into(),
                ));
            }
            let bytes = block.to_vec();
            let offsets = layout_of(block, &bytes, encoded_txs)?;
            let cert_bytes = cert.map(codec::encode_to_vec);
            let mut entries = Vec::with_capacity(block.txs.len());
            let mut readings = 0u64;
            for (tx, enc) in block.txs.iter().zip(encoded_txs) {
                let reading = match &tx.body.kind {
                    TxKind::Reading { stream, .. } => {
                        readings += 1;
                        Some((
                            tx.body.signer,
                            *stream,
                            tx.body.timestamp_ms,
                            tx.body.sequence,
                        ))
                    }
                    _ => None,
                };
                entries.push(TxEntry {
                    id: Transaction::id_of_encoded(enc),
                    reading,
                });
            }

            let w = self.begin_write()?;
            {
                let mut meta = w.open_table(META)?;
                let head = match meta.get(META_HEAD)? {
                    Some(g) => Some(Head::decode(g.value())?),
                    None => None,
                };
                let (expected, prev, txs_before, readings_before) = match head {
                    Some(hd) => (
                        hd.height + 1,
                        hd.hash,
                        hd.tx_count_total,
                        hd.reading_count_total,
                    ),
                    None => (0, Hash32::ZERO, 0, 0),
                };
                if height != expected {
                    return Err(StoreError::Conflict(format!(
                        "block height {height}, but the next height is {expected}"
                    )));
                }
                if h.prev_hash != prev {
                    return Err(StoreError::Conflict(format!(
                        "block {height} does not link to the stored head (previous hash differs)"
                    )));
                }
                let new_head = Head {
                    height,
                    hash,
                    timestamp_ms: h.timestamp_ms,
                    tx_count_total: txs_before + block.txs.len() as u64,
                    reading_count_total: readings_before + readings,
                };
                meta.insert(META_HEAD, new_head.encode().as_slice())?;

                w.open_table(BLOCKS)?.insert(height, bytes.as_slice())?;
                w.open_table(TX_OFFSETS)?
                    .insert(height, offsets.encode().as_slice())?;
                if let Some(c) = &cert_bytes {
                    w.open_table(CERTS)?.insert(height, c.as_slice())?;
                }
                let mut tx_index = w.open_table(TX_INDEX)?;
                let mut by_device = w.open_table(BY_DEVICE)?;
                let mut by_stream = w.open_table(BY_STREAM)?;
                let mut by_time = w.open_table(BY_TIME)?;
                // Transaction ids are uniformly random keys: inserting them in
                // key order walks the B-tree's leaves once, left to right,
                // instead of jumping between them (same pages written, fewer
                // page-cache misses).
                let mut by_id: Vec<(&[u8; 32], u32)> = entries
                    .iter()
                    .enumerate()
                    .map(|(i, e)| (&e.id.0, i as u32))
                    .collect();
                by_id.sort_unstable();
                for (id, i) in by_id {
                    tx_index.insert(id.as_slice(), (height, i))?;
                }
                for (i, e) in entries.iter().enumerate() {
                    let i = i as u32;
                    if let Some((dev, stream, ts, seq)) = e.reading {
                        let v = (height, i, stream);
                        by_device.insert(key_device(&dev, ts, seq).as_slice(), v)?;
                        by_stream.insert(key_stream(&dev, stream, ts, seq).as_slice(), v)?;
                        by_time.insert(key_time(&dev, ts, seq).as_slice(), v)?;
                    }
                }
                if let Some(s) = snapshot {
                    put_snapshot(&w, height, s)?;
                }
            }
            w.commit()?;
            Ok(())
        })
    }

    /// Stores (or replaces) the finality certificate of the stored block at
    /// `height`.
    pub fn put_cert(&self, height: u64, cert: &FinalityCert) -> Result<(), StoreError> {
        guard::guarded("certs", Some(height), || {
            if cert.height != height {
                return Err(StoreError::Invalid(format!(
                    "certificate for height {}, stored at {height}",
                    cert.height
                )));
            }
            let bytes = codec::encode_to_vec(cert);
            let w = self.begin_write()?;
            {
                let blocks = w.open_table(BLOCKS)?;
                let Some(b) = blocks.get(height)? else {
                    return Err(StoreError::NotFound(format!("no block at height {height}")));
                };
                let hash = header_of(height, b.value(), None)?.hash();
                if hash != cert.block_hash {
                    return Err(StoreError::Invalid(format!(
                        "the certificate is not for the stored block {height}"
                    )));
                }
                drop(b);
                w.open_table(CERTS)?.insert(height, bytes.as_slice())?;
            }
            w.commit()?;
            Ok(())
        })
    }

    /// Stores a world-state snapshot taken after block `height` (keeping the
    /// latest [`SNAPSHOTS_KEPT`]).
    pub fn put_snapshot(&self, height: u64, snapshot: &[u8]) -> Result<(), StoreError> {
        guard::guarded("snapshots", Some(height), || {
            let w = self.begin_write()?;
            put_snapshot(&w, height, snapshot)?;
            w.commit()?;
            Ok(())
        })
    }

    /// The last stored block, if any.
    pub fn head(&self) -> Result<Option<Head>, StoreError> {
        guard::guarded("meta", None, || {
            let r = self.begin_read()?;
            let Some(meta) = open_ro(&r, META)? else {
                return Ok(None);
            };
            meta.get(META_HEAD)?
                .map(|g| Head::decode(g.value()))
                .transpose()
        })
    }

    /// The exact stored bytes of the block at `height`.
    pub fn block_bytes(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        guard::guarded("blocks", Some(height), || {
            let r = self.begin_read()?;
            let Some(t) = open_ro(&r, BLOCKS)? else {
                return Ok(None);
            };
            Ok(t.get(height)?.map(|g| g.value().to_vec()))
        })
    }

    /// The block at `height`, strictly decoded; [`StoreError::Corrupt`]
    /// naming the height if its bytes do not decode or claim another height.
    pub fn block(&self, height: u64) -> Result<Option<Block>, StoreError> {
        self.block_bytes(height)?
            .map(|b| decode_block(height, &b))
            .transpose()
    }

    /// The header of the block at `height` (decodes only the header).
    pub fn header(&self, height: u64) -> Result<Option<BlockHeader>, StoreError> {
        guard::guarded("blocks", Some(height), || {
            let r = self.begin_read()?;
            let (Some(blocks), Some(offs)) = (open_ro(&r, BLOCKS)?, open_ro(&r, TX_OFFSETS)?)
            else {
                return Ok(None);
            };
            let Some(b) = blocks.get(height)? else {
                return Ok(None);
            };
            let o = offs.get(height)?;
            let layout = o
                .map(|o| TxOffsets::decode(height, o.value(), b.value().len()))
                .transpose()?;
            header_of(height, b.value(), layout.as_ref()).map(Some)
        })
    }

    /// The finality certificate stored for `height`.
    pub fn cert(&self, height: u64) -> Result<Option<FinalityCert>, StoreError> {
        guard::guarded("certs", Some(height), || {
            let r = self.begin_read()?;
            let Some(t) = open_ro(&r, CERTS)? else {
                return Ok(None);
            };
            t.get(height)?
                .map(|g| decode_cert(height, g.value()))
                .transpose()
        })
    }

    /// The latest world-state snapshot: (the height after which it was
    /// taken, the bytes of `WorldState::snapshot`).
    pub fn latest_snapshot(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        guard::guarded("snapshots", None, || {
            let r = self.begin_read()?;
            let Some(t) = open_ro(&r, SNAPSHOTS)? else {
                return Ok(None);
            };
            Ok(t.last()?.map(|(k, v)| (k.value(), v.value().to_vec())))
        })
    }

    /// Where the transaction with id `tx_id` (the leaf hash of its exact
    /// bytes, `Transaction::id_of_encoded`) is.
    pub fn tx_location(&self, tx_id: &Hash32) -> Result<Option<TxLocation>, StoreError> {
        guard::guarded("tx_index", None, || {
            let r = self.begin_read()?;
            let Some(t) = open_ro(&r, TX_INDEX)? else {
                return Ok(None);
            };
            Ok(t.get(tx_id.0.as_slice())?.map(|g| loc_of(g.value())))
        })
    }

    /// The transaction at `loc`, decoded, with its exact bytes.
    pub fn tx(&self, loc: TxLocation) -> Result<Option<(Transaction, Vec<u8>)>, StoreError> {
        self.with_block_layout(loc.height, |bytes, layout| {
            let Some(enc) = layout.tx(bytes, loc.index as usize) else {
                return Ok(None);
            };
            let tx = Transaction::decode(enc).map_err(|e| {
                StoreError::corrupt(
                    loc.height,
                    format!("transaction {} does not decode: {e}", loc.index),
                )
            })?;
            Ok(Some((tx, enc.to_vec())))
        })
        .map(Option::flatten)
    }

    /// The Merkle inclusion proof of the transaction at `loc` against its
    /// block's `tx_root`. [`StoreError::Corrupt`] if the stored transactions
    /// do not hash to the header's root.
    pub fn inclusion_proof(&self, loc: TxLocation) -> Result<Option<InclusionProof>, StoreError> {
        self.with_block_layout(loc.height, |bytes, layout| {
            let n = layout.count();
            if loc.index as usize >= n {
                return Ok(None);
            }
            let header = header_of(loc.height, bytes, Some(layout))?;
            let leaves: Vec<Hash32> = (0..n)
                .map(|i| merkle::leaf_hash(layout.tx(bytes, i).unwrap_or_default()))
                .collect();
            if merkle::root_from_leaf_hashes(&leaves) != header.tx_root {
                return Err(StoreError::corrupt(
                    loc.height,
                    "stored transactions do not match the header's Merkle root",
                ));
            }
            let path = merkle::inclusion_proof(&leaves, loc.index as u64)
                .map_err(|e| StoreError::corrupt(loc.height, format!("inclusion proof: {e:?}")))?;
            Ok(Some(InclusionProof {
                loc,
                leaf_hash: leaves[loc.index as usize],
                tree_size: n as u64,
                path,
                tx_root: header.tx_root,
                block_hash: header.hash(),
            }))
        })
        .map(Option::flatten)
    }

    /// Runs `f` on the stored bytes and layout of block `height`.
    fn with_block_layout<T>(
        &self,
        height: u64,
        f: impl FnOnce(&[u8], &TxOffsets) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        guard::guarded("blocks", Some(height), || {
            let r = self.begin_read()?;
            let (Some(blocks), Some(offs)) = (open_ro(&r, BLOCKS)?, open_ro(&r, TX_OFFSETS)?)
            else {
                return Ok(None);
            };
            let Some(b) = blocks.get(height)? else {
                return Ok(None);
            };
            let bytes = b.value();
            let Some(o) = offs.get(height)? else {
                return Err(StoreError::corrupt(height, "transaction offsets missing"));
            };
            let layout = TxOffsets::decode(height, o.value(), bytes.len())?;
            f(bytes, &layout).map(Some)
        })
    }

    /// Readings of `device` with device timestamps in `from_ms..=to_ms`,
    /// oldest first, at most `limit` (the oldest ones of the window; to page
    /// on, query again from the last timestamp returned and skip what was
    /// seen).
    pub fn readings_by_device(
        &self,
        device: &PublicKey,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> Result<Vec<ReadingRef>, StoreError> {
        let lo = key_device(device, from_ms, 0);
        let hi = key_device(device, to_ms, u64::MAX);
        self.scan(BY_DEVICE, "by_device", &lo, &hi, limit, |k, v| ReadingRef {
            loc: loc_of((v.0, v.1)),
            device: pk_of(k),
            stream: v.2,
            timestamp_ms: be64(&k[32..]),
            sequence: be64(&k[40..]),
        })
    }

    /// Readings of one stream of `device` with timestamps in
    /// `from_ms..=to_ms`, oldest first, at most `limit`.
    pub fn readings_by_stream(
        &self,
        device: &PublicKey,
        stream: u16,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> Result<Vec<ReadingRef>, StoreError> {
        let lo = key_stream(device, stream, from_ms, 0);
        let hi = key_stream(device, stream, to_ms, u64::MAX);
        self.scan(BY_STREAM, "by_stream", &lo, &hi, limit, |k, v| ReadingRef {
            loc: loc_of((v.0, v.1)),
            device: pk_of(k),
            stream: v.2,
            timestamp_ms: be64(&k[34..]),
            sequence: be64(&k[42..]),
        })
    }

    /// Readings of every device with timestamps in `from_ms..=to_ms`, oldest
    /// first, at most `limit`.
    pub fn readings_by_time(
        &self,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> Result<Vec<ReadingRef>, StoreError> {
        let lo = key_time(&PublicKey([0; 32]), from_ms, 0);
        let hi = key_time(&PublicKey([0xff; 32]), to_ms, u64::MAX);
        self.scan(BY_TIME, "by_time", &lo, &hi, limit, |k, v| ReadingRef {
            loc: loc_of((v.0, v.1)),
            device: pk_of(&k[8..]),
            stream: v.2,
            timestamp_ms: be64(k),
            sequence: be64(&k[40..]),
        })
    }

    fn scan(
        &self,
        def: TableDefinition<&[u8], (u64, u32, u16)>,
        name: &'static str,
        lo: &[u8],
        hi: &[u8],
        limit: usize,
        f: impl Fn(&[u8], (u64, u32, u16)) -> ReadingRef,
    ) -> Result<Vec<ReadingRef>, StoreError> {
        guard::guarded(name, None, || {
            let mut out = Vec::new();
            if limit == 0 || lo > hi {
                return Ok(out);
            }
            let r = self.begin_read()?;
            let Some(t) = open_ro(&r, def)? else {
                return Ok(out);
            };
            for item in t.range::<&[u8]>(lo..=hi)? {
                let (k, v) = item?;
                let k = k.value();
                if k.len() != lo.len() {
                    return Err(StoreError::corrupt_in(
                        name,
                        None,
                        "reading index key of the wrong length",
                    ));
                }
                out.push(f(k, v.value()));
                if out.len() >= limit {
                    break;
                }
            }
            Ok(out)
        })
    }

    /// The stored blocks from height `from` on, in order, as (key, exact
    /// bytes), streamed from one read snapshot (memory: one block at a
    /// time). The snapshot stays pinned while the iterator lives.
    pub fn blocks(&self, from: u64) -> BlockIter {
        let open = guard::guarded("blocks", Some(from), || {
            let range = match open_ro(&self.begin_read()?, BLOCKS)? {
                Some(t) => Some(t.range(from..)?),
                None => None,
            };
            Ok(BlockIter {
                range,
                err: None,
                next_height: from,
            })
        });
        open.unwrap_or_else(BlockIter::failed)
    }

    /// Like [`blocks`](Self::blocks), with each block's stored certificate,
    /// from one read snapshot.
    pub fn chain_entries(&self, from: u64) -> ChainIter {
        let open = guard::guarded("blocks", Some(from), || {
            let r = self.begin_read()?;
            let certs = open_ro(&r, CERTS)?;
            let range = match open_ro(&r, BLOCKS)? {
                Some(t) => Some(t.range(from..)?),
                None => None,
            };
            Ok(ChainIter {
                blocks: BlockIter {
                    range,
                    err: None,
                    next_height: from,
                },
                certs,
            })
        });
        open.unwrap_or_else(|e| ChainIter {
            blocks: BlockIter::failed(e),
            certs: None,
        })
    }

    /// Checks the index entries of the stored block at `height` against its
    /// exact stored bytes `bytes`, their strict decoding `block` and its
    /// transactions' exact encodings `encoded`: the offsets table locates
    /// exactly these transactions, every transaction id maps to its location
    /// (unless an identical transaction at a later height replaced it) and
    /// every reading is in the three reading indexes. Returns the first
    /// disagreement found.
    pub fn check_block_index(
        &self,
        height: u64,
        bytes: &[u8],
        block: &Block,
        encoded: &[Vec<u8>],
    ) -> Result<Option<String>, StoreError> {
        guard::guarded("index tables", Some(height), || {
            let r = self.begin_read()?;
            let tx_index = open_ro(&r, TX_INDEX)?;
            let by_device = open_ro(&r, BY_DEVICE)?;
            let by_stream = open_ro(&r, BY_STREAM)?;
            let by_time = open_ro(&r, BY_TIME)?;
            let offsets = open_ro(&r, TX_OFFSETS)?;
            let (Some(tx_index), Some(by_device), Some(by_stream), Some(by_time), Some(offsets)) =
                (tx_index, by_device, by_stream, by_time, offsets)
            else {
                return Ok(Some("index tables missing".into()));
            };
            let o = guard::guarded("tx_offsets", Some(height), || {
                Ok(offsets.get(height)?.map(|g| g.value().to_vec()))
            })?;
            let Some(o) = o else {
                return Ok(Some("transaction offsets missing".into()));
            };
            let layout = match TxOffsets::decode(height, &o, bytes.len()) {
                Ok(l) => l,
                Err(e) => return Ok(Some(e.to_string())),
            };
            if layout.count() != encoded.len()
                || (0..encoded.len()).any(|i| layout.tx(bytes, i) != Some(encoded[i].as_slice()))
            {
                return Ok(Some(
                    "transaction offsets do not locate the block's transactions".into(),
                ));
            }
            for (i, (tx, enc)) in block.txs.iter().zip(encoded).enumerate() {
                let id = Transaction::id_of_encoded(enc);
                let found = guard::guarded("tx_index", Some(height), || {
                    Ok(tx_index.get(id.0.as_slice())?.map(|g| g.value()))
                })?;
                match found {
                    None => {
                        return Ok(Some(format!(
                            "transaction {i} missing from the transaction index"
                        )));
                    }
                    Some((h, j)) => {
                        if (h, j as usize) != (height, i) && h < height {
                            return Ok(Some(format!(
                                "transaction {i} indexed at height {h} index {j}"
                            )));
                        }
                    }
                }
                if let TxKind::Reading { stream, .. } = tx.body.kind {
                    let (dev, ts, seq) = (tx.body.signer, tx.body.timestamp_ms, tx.body.sequence);
                    let want = (height, i as u32, stream);
                    let keys: [(&ReadingTable, Vec<u8>, &str); 3] = [
                        (&by_device, key_device(&dev, ts, seq).to_vec(), "by_device"),
                        (
                            &by_stream,
                            key_stream(&dev, stream, ts, seq).to_vec(),
                            "by_stream",
                        ),
                        (&by_time, key_time(&dev, ts, seq).to_vec(), "by_time"),
                    ];
                    for (t, k, name) in keys {
                        let got = guard::guarded(name, Some(height), || {
                            Ok(t.get(k.as_slice())?.map(|g| g.value()))
                        })?;
                        if got != Some(want) {
                            return Ok(Some(format!(
                                "reading {i} missing or wrong in the {name} index"
                            )));
                        }
                    }
                }
            }
            Ok(None)
        })
    }

    /// Replaces the stored bytes of block `height` **without any check or
    /// index update**: for tests and tamper demonstrations only (an audit
    /// must then catch the change).
    pub fn overwrite_block_bytes_unchecked(
        &self,
        height: u64,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        guard::guarded("blocks", Some(height), || {
            let w = self.begin_write()?;
            w.open_table(BLOCKS)?.insert(height, bytes)?;
            w.commit()?;
            Ok(())
        })
    }
}

fn check_format_bytes(v: &[u8]) -> Result<(), StoreError> {
    let version = <[u8; 4]>::try_from(v)
        .map(u32::from_be_bytes)
        .map_err(|_| StoreError::corrupt_in("meta", None, "format record damaged"))?;
    if version != FORMAT_VERSION {
        return Err(StoreError::Database(format!(
            "store format {version}, this build reads format {FORMAT_VERSION}"
        )));
    }
    Ok(())
}

fn put_snapshot(w: &WriteTransaction, height: u64, snapshot: &[u8]) -> Result<(), StoreError> {
    let mut t = w.open_table(SNAPSHOTS)?;
    t.insert(height, snapshot)?;
    let len = t.len()? as usize;
    if len > SNAPSHOTS_KEPT {
        let old: Vec<u64> = t
            .iter()?
            .take(len - SNAPSHOTS_KEPT)
            .map(|r| r.map(|(k, _)| k.value()))
            .collect::<Result<_, _>>()?;
        for k in old {
            t.remove(k)?;
        }
    }
    Ok(())
}

/// Computes the layout of `bytes` (the block's encoding) and checks that
/// its transactions are exactly `encoded` (they are the tail of the
/// encoding, in order).
fn layout_of(block: &Block, bytes: &[u8], encoded: &[Vec<u8>]) -> Result<TxOffsets, StoreError> {
    let mismatch = || StoreError::Invalid("the encodings are not the block's transactions".into());
    let total: usize = encoded.iter().map(Vec::len).sum();
    let start = bytes.len().checked_sub(total).ok_or_else(mismatch)?;
    let header_len = codec::encoded_len(&block.header);
    if bytes.len() > u32::MAX as usize || header_len > start {
        return Err(StoreError::Invalid("block too large".into()));
    }
    let mut offsets = Vec::with_capacity(encoded.len() + 1);
    let mut at = start;
    for e in encoded {
        if bytes.get(at..at + e.len()) != Some(e.as_slice()) {
            return Err(mismatch());
        }
        offsets.push(at);
        at += e.len();
    }
    offsets.push(at);
    Ok(TxOffsets {
        header_len,
        offsets,
    })
}

/// Strictly decodes a stored block, checking that it claims `height`.
pub fn decode_block(height: u64, bytes: &[u8]) -> Result<Block, StoreError> {
    let b = Block::decode(bytes)
        .map_err(|e| StoreError::corrupt(height, format!("block does not decode: {e}")))?;
    if b.header.height != height {
        return Err(StoreError::corrupt(
            height,
            format!(
                "block stored at height {height} claims height {}",
                b.header.height
            ),
        ));
    }
    Ok(b)
}

/// Strictly decodes a stored certificate.
pub fn decode_cert(height: u64, bytes: &[u8]) -> Result<FinalityCert, StoreError> {
    codec::decode_exact(bytes, CERT_MAX_LEN).map_err(|e| {
        StoreError::corrupt(height, format!("finality certificate does not decode: {e}"))
    })
}

/// The header of stored block bytes: from the layout if known, else by
/// decoding the whole block.
fn header_of(
    height: u64,
    bytes: &[u8],
    layout: Option<&TxOffsets>,
) -> Result<BlockHeader, StoreError> {
    let h = match layout {
        Some(l) => {
            BlockHeader::decode(bytes.get(..l.header_len).unwrap_or_default()).map_err(|e| {
                StoreError::corrupt(height, format!("block header does not decode: {e}"))
            })?
        }
        None => decode_block(height, bytes)?.header,
    };
    if h.height != height {
        return Err(StoreError::corrupt(
            height,
            format!("block stored at height {height} claims height {}", h.height),
        ));
    }
    Ok(h)
}

/// Iterator of [`Store::blocks`]. It ends after the first error.
pub struct BlockIter {
    range: Option<redb::Range<'static, u64, &'static [u8]>>,
    err: Option<StoreError>,
    /// The height expected next (to name it if reading fails).
    next_height: u64,
}

impl BlockIter {
    fn failed(e: StoreError) -> Self {
        BlockIter {
            range: None,
            err: Some(e),
            next_height: 0,
        }
    }
}

impl Iterator for BlockIter {
    type Item = Result<(u64, Vec<u8>), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.err.take() {
            return Some(Err(e));
        }
        let range = self.range.as_mut()?;
        let item = guard::guarded("blocks", Some(self.next_height), || {
            range
                .next()
                .map(|item| {
                    item.map(|(k, v)| (k.value(), v.value().to_vec()))
                        .map_err(StoreError::from)
                })
                .transpose()
        });
        match item {
            Ok(Some((h, bytes))) => {
                self.next_height = h.saturating_add(1);
                Some(Ok((h, bytes)))
            }
            Ok(None) => {
                self.range = None;
                None
            }
            Err(e) => {
                self.range = None;
                Some(Err(e))
            }
        }
    }
}

/// Iterator of [`Store::chain_entries`]. It ends after the first error.
pub struct ChainIter {
    blocks: BlockIter,
    certs: Option<ReadOnlyTable<u64, &'static [u8]>>,
}

impl Iterator for ChainIter {
    type Item = Result<StoredBlock, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (height, bytes) = match self.blocks.next()? {
            Ok(x) => x,
            Err(e) => return Some(Err(e)),
        };
        let cert = match &self.certs {
            Some(t) => match guard::guarded("certs", Some(height), || {
                Ok(t.get(height)?.map(|g| g.value().to_vec()))
            }) {
                Ok(c) => c,
                Err(e) => {
                    self.blocks.range = None;
                    return Some(Err(e));
                }
            },
            None => None,
        };
        Some(Ok(StoredBlock {
            height,
            bytes,
            cert,
        }))
    }
}
