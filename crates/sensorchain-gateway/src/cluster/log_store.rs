//! [`LogStore`]: the Raft log of the cluster on redb, to openraft 0.9's
//! `storage-v2` contract ([`RaftLogStorage`] and [`RaftLogReader`]).
//!
//! # The file
//!
//! Its own redb file, [`FILE_NAME`] (`raft.redb`) in the gateway's data
//! directory, beside the chain store's `chain.redb`: redb has one writer per
//! file, and the log's fsyncs must not queue behind the chain's (nor the
//! other way round). The file is created with mode 0600. Three tables:
//!
//! - `vote`: one record (key `"vote"`), the last saved [`Vote`].
//! - `log`: log index (`u64`) → one encoded [`Entry`].
//! - `meta`: `"format"` ([`FORMAT_VERSION`], a little-endian `u32`),
//!   `"last_purged"` and `"committed"` (each an encoded [`LogId`]).
//!
//! Records are [postcard](https://docs.rs/postcard): the encoding the core
//! already uses on the wire and for blocks, compact (varints, no field
//! names: a block's bytes are stored with a few bytes of framing, where
//! JSON would write every byte as a decimal number) and decoded strictly
//! here (trailing bytes are an error). Postcard writes a struct's fields in
//! order without framing, so the [`LogId`] of an entry is the prefix of its
//! record: [`get_log_state`](RaftLogStorage::get_log_state) and the append
//! checks read the last entry's id without decoding its block.
//!
//! # Durability and ordering
//!
//! Every write (append, vote, truncate, purge, committed) goes, in the order
//! openraft issues it, through one channel to one writer thread
//! (`sc-raftlog`), which runs each as its own redb write transaction: redb
//! commits are atomic and durable in order (a durable commit persists the
//! non-durable ones before it), so after a crash the file holds the state
//! after some prefix of the writes, each of which leaves the log without
//! holes. The writer thread does the blocking work (encoding, redb, fsync);
//! the async methods only wait for its answer, so no tokio worker thread
//! blocks on a disk. Reads run on tokio's blocking pool against redb
//! snapshots.
//!
//! - `append`: one transaction committed with [`Durability::None`]: the
//!   entries are readable when `append` returns, which is before they are
//!   on disk. Its `LogFlushed` callback fires only after a later commit
//!   with [`Durability::Immediate`] returned: the next vote, truncate or
//!   purge, or a flush (an empty durable commit) that the writer makes as
//!   soon as no write is waiting, or when [`FLUSH_MAX_APPENDS`] appends
//!   wait. So openraft's core does not wait for fsyncs, and appends that
//!   arrive while one is running share the next (group commit). If that
//!   durable commit fails, the callbacks get the error.
//! - `save_vote`, `truncate`, `purge`: [`Durability::Immediate`], durable
//!   when the call returns (with every append before them). `purge` writes
//!   `last_purged` and deletes the entries up to it in one transaction.
//! - `save_committed`: [`Durability::None`] (visible at once, made durable
//!   by the next durable commit; openraft allows losing it).
//!
//! An append that would leave a hole (its first index is not the last
//! entry's + 1, or the last purged + 1 when the log is empty) is refused
//! whole with a defensive error, as is a batch that is not consecutive.
//! Entries at or below the last purged index are skipped: they are purged
//! already (openraft ignores them; openraft's storage suite appends such
//! entries after a purge).
//!
//! # Damaged records
//!
//! A record that does not decode, or an entry stored under an index that is
//! not its own, is a [`StorageError`] naming its index (subject
//! `LogIndex`), the vote (`Vote`) or the metadata key (`Store`); never a
//! panic, never a made-up value. (redb itself may panic on pages damaged
//! outside it: such a panic on a read stays in its blocking task and
//! becomes an error; on the writer thread it stops the thread, and every
//! later write fails.)

// openraft's `StorageError` (224 bytes) is the error type its storage traits
// require; every helper here returns it as is rather than boxing and
// unboxing it on each call.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, DefensiveError, ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, StorageIOError,
    Violation,
};
use redb::{
    Database, Durability, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable, Table,
    TableDefinition, WriteTransaction,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use super::types::{Entry, LogId, NodeId, StorageError, TypeConfig, Vote};

#[cfg(test)]
mod engine_tests;
#[cfg(test)]
mod tests;

/// The log store's file name inside the gateway's data directory.
pub const FILE_NAME: &str = "raft.redb";

/// redb's page cache for the log: entries are read back soon after they
/// are written (replication, apply) and rarely later, so a small cache
/// serves them. With redb's default, 1 GiB, a gateway's RSS reached
/// 1,127 MiB after 10M readings in `bench scale` (323 MiB at 1M; the log
/// file was 1.6 GB), the likely cause; a Pi has 1–8 GiB.
pub const CACHE_BYTES: usize = 32 * 1024 * 1024;

fn builder() -> redb::Builder {
    let mut b = redb::Builder::new();
    b.set_cache_size(CACHE_BYTES);
    b
}

/// The layout version written in `meta/format`.
pub const FORMAT_VERSION: u32 = 1;

/// At most this many entries per [`limited_get_log_entries`] answer
/// (replication batches).
///
/// [`limited_get_log_entries`]: RaftLogReader::limited_get_log_entries
pub const READ_MAX_ENTRIES: usize = 256;

/// An answer of [`limited_get_log_entries`] stops after the entry that
/// reaches this many record bytes (it always holds at least one entry).
///
/// [`limited_get_log_entries`]: RaftLogReader::limited_get_log_entries
pub const READ_MAX_BYTES: usize = 8 << 20;

/// At most this many appends wait for one durable commit (group commit):
/// their callbacks fire together after it.
pub const FLUSH_MAX_APPENDS: usize = 64;

const VOTE: TableDefinition<&str, &[u8]> = TableDefinition::new("vote");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const VOTE_KEY: &str = "vote";
const META_FORMAT: &str = "format";
const META_PURGED: &str = "last_purged";
const META_COMMITTED: &str = "committed";

/// The Raft log store (see the module docs). Cheap to clone: clones share
/// the file and the writer thread ([`RaftLogStorage::get_log_reader`]
/// hands out clones). The file is closed when the last clone is dropped:
/// the drop waits for the writer thread to finish the writes already sent
/// and to make its last appends durable.
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("path", &self.shared.path)
            .finish()
    }
}

struct Shared {
    db: Arc<Database>,
    path: PathBuf,
    /// `None` only while dropping.
    tx: Option<mpsc::Sender<Op>>,
    writer: Option<JoinHandle<()>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Closing the channel ends the writer's loop once it has done the
        // writes already sent and flushed them; joining it releases its
        // handle of the file.
        drop(self.tx.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// Where the writer thread answers a write.
type Done = oneshot::Sender<Result<(), StorageError>>;

/// A write, for the writer thread.
enum Op {
    Append {
        entries: Vec<Entry>,
        callback: LogFlushed<TypeConfig>,
        done: Done,
    },
    SaveVote {
        vote: Vote,
        done: Done,
    },
    SaveCommitted {
        committed: Option<LogId>,
        done: Done,
    },
    Truncate {
        log_id: LogId,
        done: Done,
    },
    Purge {
        log_id: LogId,
        done: Done,
    },
}

impl LogStore {
    /// Opens the log store in the file `path`, creating it (mode 0600) if
    /// it does not exist; an existing file's mode is set to 0600. A file
    /// left by a crash is recovered by redb (to its last durable commit).
    /// Every page is then checked against its checksum (redb's
    /// `check_integrity`): a damaged file is refused, not repaired, since a
    /// repair may go back to an earlier commit and lose entries (or a
    /// vote) this member acknowledged — under Raft, a member that forgot
    /// them must rejoin as a new one (docs/CLUSTER.md, "Catch-up").
    pub fn open(path: &Path) -> Result<LogStore, StorageError> {
        create_private(path).map_err(|e| open_err(path, "creating the file", &e))?;
        let mut db = std::panic::catch_unwind(|| builder().create(path))
            .map_err(|_| {
                open_err(
                    path,
                    "redb",
                    &"panicked reading the file (damaged outside redb?)",
                )
            })?
            .map_err(|e| open_err(path, "redb", &e))?;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| db.check_integrity())) {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => {
                return Err(open_err(
                    path,
                    "damaged pages",
                    &"redb had to repair the file, which may have lost entries or a vote this member acknowledged; remove this member from the cluster and add it again with an empty data directory (docs/CLUSTER.md, \"Catch-up and snapshots\")",
                ));
            }
            Ok(Err(e)) => return Err(open_err(path, "checking every page", &e)),
            Err(_) => {
                return Err(open_err(
                    path,
                    "checking every page",
                    &"redb panicked (damaged outside redb?)",
                ));
            }
        }
        Self::start(db, path)
    }

    /// Opens the log store on a redb storage backend (the tests' simulated
    /// disk).
    #[cfg(test)]
    fn open_backend(backend: impl redb::StorageBackend) -> Result<LogStore, StorageError> {
        let path = Path::new("<backend>");
        let db = builder()
            .create_with_backend(backend)
            .map_err(|e| open_err(path, "redb", &e))?;
        Self::start(db, path)
    }

    /// Creates the tables (checks the format) and starts the writer thread.
    fn start(db: Database, path: &Path) -> Result<LogStore, StorageError> {
        init(&db)?;
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel();
        let writer_db = Arc::clone(&db);
        let writer = std::thread::Builder::new()
            .name("sc-raftlog".into())
            .spawn(move || writer_loop(&writer_db, &rx))
            .map_err(|e| open_err(path, "starting its writer thread", &e))?;
        Ok(LogStore {
            shared: Arc::new(Shared {
                db,
                path: path.to_owned(),
                tx: Some(tx),
                writer: Some(writer),
            }),
        })
    }

    /// [`open`](Self::open) of [`FILE_NAME`] in the directory `dir`
    /// (created if needed): the gateway's data directory.
    pub fn open_in_dir(dir: &Path) -> Result<LogStore, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            store_err(
                ErrorVerb::Write,
                format!("creating the data directory {}: {e}", dir.display()),
            )
        })?;
        Self::open(&dir.join(FILE_NAME))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Sends a write to the writer thread and waits for its answer.
    async fn write(
        &self,
        subject: ErrorSubject<NodeId>,
        op: impl FnOnce(Done) -> Op,
    ) -> Result<(), StorageError> {
        let (done, answer) = oneshot::channel();
        let gone = || {
            StorageError::from(StorageIOError::new(
                subject.clone(),
                ErrorVerb::Write,
                AnyError::error("the Raft log's writer thread has stopped"),
            ))
        };
        let tx = self.shared.tx.as_ref().ok_or_else(gone)?;
        tx.send(op(done)).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Runs a read on tokio's blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || f(&shared.db))
            .await
            .map_err(|e| {
                store_err(
                    ErrorVerb::Read,
                    format!("a read of the Raft log failed: {e}"),
                )
            })?
    }
}

/// Creates `path` with mode 0600 if it does not exist; sets 0600 otherwise.
fn create_private(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// Creates the tables and checks (or writes) the format version.
fn init(db: &Database) -> Result<(), StorageError> {
    write_txn(db, Durability::Immediate, ErrorSubject::Store, |txn| {
        let subject = || ErrorSubject::Store;
        write_table(txn, VOTE, subject())?;
        write_table(txn, LOG, subject())?;
        let mut meta = write_table(txn, META, subject())?;
        let stored = meta
            .get(META_FORMAT)
            .map_err(io(subject(), ErrorVerb::Read))?
            .map(|v| v.value().to_vec());
        match stored {
            None => {
                meta.insert(META_FORMAT, FORMAT_VERSION.to_le_bytes().as_slice())
                    .map_err(io(subject(), ErrorVerb::Write))?;
            }
            Some(v) if v == FORMAT_VERSION.to_le_bytes() => {}
            Some(v) => {
                return Err(store_err(
                    ErrorVerb::Read,
                    format!(
                        "the Raft log's format is {v:02x?}, this gateway reads version {FORMAT_VERSION}"
                    ),
                ));
            }
        }
        Ok(())
    })
}

// ---------------------------------------------------------------- errors

/// Maps an error of redb (or another) to a storage error on `subject`.
fn io<E: std::error::Error + 'static>(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
) -> impl FnOnce(E) -> StorageError {
    move |e| StorageIOError::new(subject, verb, AnyError::new(&e)).into()
}

/// Opening the file at `path` failed.
fn open_err(path: &Path, what: &str, e: &dyn std::fmt::Display) -> StorageError {
    store_err(
        ErrorVerb::Read,
        format!("opening the Raft log {}: {what}: {e}", path.display()),
    )
}

/// A storage error on the store as a whole.
fn store_err(verb: ErrorVerb, msg: String) -> StorageError {
    StorageIOError::new(ErrorSubject::Store, verb, AnyError::error(msg)).into()
}

/// A damaged log record at `index`.
fn bad_entry(index: u64, what: impl std::fmt::Display) -> StorageError {
    StorageIOError::read_log_at_index(
        index,
        AnyError::error(format!("log record {index}: {what}")),
    )
    .into()
}

// -------------------------------------------------------------- encoding

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_allocvec(value)
}

/// Decodes a whole record: trailing bytes are an error.
fn decode_exact<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let (value, rest) = postcard::take_from_bytes::<T>(bytes).map_err(|e| e.to_string())?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(format!("{} trailing bytes", rest.len()))
    }
}

/// Decodes the entry stored under `index`.
fn decode_entry(index: u64, bytes: &[u8]) -> Result<Entry, StorageError> {
    let entry: Entry =
        decode_exact(bytes).map_err(|e| bad_entry(index, format_args!("does not decode: {e}")))?;
    if entry.log_id.index != index {
        return Err(bad_entry(
            index,
            format_args!("holds the entry of log id {}", entry.log_id),
        ));
    }
    Ok(entry)
}

/// The log id of the entry stored under `index`: the record's prefix.
fn decode_entry_log_id(index: u64, bytes: &[u8]) -> Result<LogId, StorageError> {
    let (log_id, _payload) = postcard::take_from_bytes::<LogId>(bytes)
        .map_err(|e| bad_entry(index, format_args!("its log id does not decode: {e}")))?;
    if log_id.index != index {
        return Err(bad_entry(
            index,
            format_args!("holds the entry of log id {log_id}"),
        ));
    }
    Ok(log_id)
}

/// Decodes the log id stored in `meta/key`.
fn decode_meta_log_id(key: &str, bytes: &[u8]) -> Result<LogId, StorageError> {
    decode_exact(bytes).map_err(|e| {
        store_err(
            ErrorVerb::Read,
            format!("meta record `{key}` does not decode: {e}"),
        )
    })
}

// ----------------------------------------------------------------- reads

/// Reads `meta/key` as a log id, in any table handle.
fn meta_log_id(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<LogId>, StorageError> {
    let record = meta
        .get(key)
        .map_err(io(ErrorSubject::Store, ErrorVerb::Read))?;
    record
        .map(|v| decode_meta_log_id(key, v.value()))
        .transpose()
}

/// The log id of the last entry present, in any table handle.
fn last_entry_log_id(
    log: &impl ReadableTable<u64, &'static [u8]>,
) -> Result<Option<LogId>, StorageError> {
    let last = log
        .last()
        .map_err(io(ErrorSubject::Logs, ErrorVerb::Read))?;
    last.map(|(k, v)| decode_entry_log_id(k.value(), v.value()))
        .transpose()
}

/// Starts a read transaction: one consistent snapshot of the file.
fn begin_read(
    db: &Database,
    subject: ErrorSubject<NodeId>,
) -> Result<ReadTransaction, StorageError> {
    db.begin_read().map_err(io(subject, ErrorVerb::Read))
}

/// Opens `def` in a read transaction.
fn read_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &ReadTransaction,
    def: TableDefinition<K, V>,
    subject: ErrorSubject<NodeId>,
) -> Result<ReadOnlyTable<K, V>, StorageError> {
    txn.open_table(def).map_err(io(subject, ErrorVerb::Read))
}

/// Opens `def` in a write transaction.
fn write_table<'t, K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &'t WriteTransaction,
    def: TableDefinition<K, V>,
    subject: ErrorSubject<NodeId>,
) -> Result<Table<'t, K, V>, StorageError> {
    txn.open_table(def).map_err(io(subject, ErrorVerb::Write))
}

fn read_log_state(db: &Database) -> Result<LogState<TypeConfig>, StorageError> {
    let txn = begin_read(db, ErrorSubject::Logs)?;
    let log = read_table(&txn, LOG, ErrorSubject::Logs)?;
    let meta = read_table(&txn, META, ErrorSubject::Store)?;
    let last_purged_log_id = meta_log_id(&meta, META_PURGED)?;
    // The last entry, or the last purged if there is none (the appends and
    // purges keep every entry above the last purged).
    let last_log_id = match (last_entry_log_id(&log)?, last_purged_log_id) {
        (Some(last), Some(purged)) if last.index <= purged.index => Some(purged),
        (last, purged) => last.or(purged),
    };
    Ok(LogState {
        last_purged_log_id,
        last_log_id,
    })
}

fn read_meta(db: &Database, key: &'static str) -> Result<Option<LogId>, StorageError> {
    let txn = begin_read(db, ErrorSubject::Store)?;
    let meta = read_table(&txn, META, ErrorSubject::Store)?;
    meta_log_id(&meta, key)
}

fn read_vote(db: &Database) -> Result<Option<Vote>, StorageError> {
    let txn = begin_read(db, ErrorSubject::Vote)?;
    let table = read_table(&txn, VOTE, ErrorSubject::Vote)?;
    let record = table
        .get(VOTE_KEY)
        .map_err(io(ErrorSubject::Vote, ErrorVerb::Read))?;
    record
        .map(|v| {
            decode_exact::<Vote>(v.value()).map_err(|e| {
                StorageIOError::read_vote(AnyError::error(format!(
                    "the vote record does not decode: {e}"
                )))
                .into()
            })
        })
        .transpose()
}

/// Whether no index lies between the bounds.
fn range_is_empty(start: Bound<u64>, end: Bound<u64>) -> bool {
    let first = match start {
        Bound::Included(s) => s,
        Bound::Excluded(s) => match s.checked_add(1) {
            Some(s) => s,
            None => return true,
        },
        Bound::Unbounded => 0,
    };
    match end {
        Bound::Included(e) => first > e,
        Bound::Excluded(e) => first >= e,
        Bound::Unbounded => false,
    }
}

/// The entries present in the range, in index order; with `limited`, at
/// most [`READ_MAX_ENTRIES`] and up to the first reaching
/// [`READ_MAX_BYTES`] of records.
fn read_entries(
    db: &Database,
    start: Bound<u64>,
    end: Bound<u64>,
    limited: bool,
) -> Result<Vec<Entry>, StorageError> {
    if range_is_empty(start, end) {
        return Ok(Vec::new());
    }
    let txn = begin_read(db, ErrorSubject::Logs)?;
    let log = read_table(&txn, LOG, ErrorSubject::Logs)?;
    let mut entries = Vec::new();
    let mut bytes = 0usize;
    for record in log
        .range::<u64>((start, end))
        .map_err(io(ErrorSubject::Logs, ErrorVerb::Read))?
    {
        let (k, v) = record.map_err(io(ErrorSubject::Logs, ErrorVerb::Read))?;
        entries.push(decode_entry(k.value(), v.value())?);
        bytes = bytes.saturating_add(v.value().len());
        if limited && (entries.len() >= READ_MAX_ENTRIES || bytes >= READ_MAX_BYTES) {
            break;
        }
    }
    Ok(entries)
}

// ---------------------------------------------------------------- writes

/// Runs `f` in one write transaction committed with `durability`; an error
/// from `f` aborts it (nothing of it is written).
fn write_txn(
    db: &Database,
    durability: Durability,
    subject: ErrorSubject<NodeId>,
    f: impl FnOnce(&WriteTransaction) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    let mut txn = db
        .begin_write()
        .map_err(io(subject.clone(), ErrorVerb::Write))?;
    txn.set_durability(durability)
        .map_err(io(subject.clone(), ErrorVerb::Write))?;
    f(&txn)?;
    txn.commit().map_err(io(subject, ErrorVerb::Write))
}

/// The writer thread: runs the writes in the order they were sent. An
/// append commits without durability (readable at once) and answers; its
/// callback waits in `unflushed` for the next durable commit: a vote, a
/// truncate or a purge (each durable, and durable commits persist the
/// commits before them), or else a flush (an empty durable commit) as soon
/// as no write is waiting or [`FLUSH_MAX_APPENDS`] appends wait for one.
fn writer_loop(db: &Database, rx: &mpsc::Receiver<Op>) {
    let mut unflushed: Vec<LogFlushed<TypeConfig>> = Vec::new();
    loop {
        let op = if unflushed.is_empty() {
            match rx.recv() {
                Ok(op) => op,
                Err(mpsc::RecvError) => return,
            }
        } else if unflushed.len() >= FLUSH_MAX_APPENDS {
            flushed(&mut unflushed, &flush_now(db));
            continue;
        } else {
            match rx.try_recv() {
                Ok(op) => op,
                Err(closed) => {
                    flushed(&mut unflushed, &flush_now(db));
                    if closed == mpsc::TryRecvError::Disconnected {
                        return;
                    }
                    continue;
                }
            }
        };
        match op {
            Op::Append {
                entries,
                callback,
                done,
            } => {
                let result = append_now(db, &entries);
                match &result {
                    Ok(()) => {
                        crate::crash_point::reached(crate::crash_point::Point::LogAppend);
                        unflushed.push(callback)
                    }
                    Err(e) => callback.log_io_completed(Err(io::Error::other(e.to_string()))),
                }
                let _ = done.send(result);
            }
            Op::SaveVote { vote, done } => {
                let result = save_vote_now(db, &vote);
                flushed(&mut unflushed, &result);
                let _ = done.send(result);
            }
            Op::SaveCommitted { committed, done } => {
                let _ = done.send(save_committed_now(db, committed));
            }
            Op::Truncate { log_id, done } => {
                let result = truncate_now(db, log_id);
                flushed(&mut unflushed, &result);
                let _ = done.send(result);
            }
            Op::Purge { log_id, done } => {
                let result = purge_now(db, log_id);
                flushed(&mut unflushed, &result);
                let _ = done.send(result);
            }
        }
    }
}

/// Fires the callbacks of the appends a durable commit made durable (in
/// their order), or, if that commit failed, tells them so.
fn flushed(unflushed: &mut Vec<LogFlushed<TypeConfig>>, durable: &Result<(), StorageError>) {
    for callback in unflushed.drain(..) {
        callback.log_io_completed(match durable {
            Ok(()) => Ok(()),
            Err(e) => Err(io::Error::other(e.to_string())),
        });
    }
}

/// An empty durable commit: makes the commits before it durable (redb
/// persists non-durable commits with the next durable one).
fn flush_now(db: &Database) -> Result<(), StorageError> {
    write_txn(db, Durability::Immediate, ErrorSubject::Logs, |_| Ok(()))
}

fn non_consecutive(prev: Option<LogId>, next: LogId) -> StorageError {
    DefensiveError::new(
        ErrorSubject::Logs,
        Violation::LogsNonConsecutive { prev, next },
    )
    .into()
}

fn append_now(db: &Database, entries: &[Entry]) -> Result<(), StorageError> {
    for pair in entries.windows(2) {
        if pair[1].log_id.index != pair[0].log_id.index.wrapping_add(1) {
            return Err(non_consecutive(Some(pair[0].log_id), pair[1].log_id));
        }
    }
    let mut records = Vec::with_capacity(entries.len());
    for entry in entries {
        let record = encode(entry).map_err(|e| {
            StorageError::from(StorageIOError::write_log_entry(
                entry.log_id,
                AnyError::new(&e),
            ))
        })?;
        records.push((entry.log_id, record));
    }
    write_txn(db, Durability::None, ErrorSubject::Logs, |txn| {
        let mut log = write_table(txn, LOG, ErrorSubject::Logs)?;
        let meta = write_table(txn, META, ErrorSubject::Store)?;
        let purged = meta_log_id(&meta, META_PURGED)?;
        // Entries at or below the last purged one are purged already:
        // skipped (openraft ignores them; storing them would put entries
        // behind `last_purged`).
        let purged_index = purged.map(|p| p.index);
        let records = records
            .iter()
            .skip_while(|(id, _)| purged_index.is_some_and(|p| id.index <= p));
        let mut records = records.peekable();
        let Some((first, _)) = records.peek() else {
            return Ok(());
        };
        let prev = match last_entry_log_id(&log)? {
            Some(last) if purged_index.is_none_or(|p| last.index > p) => Some(last),
            _ => purged,
        };
        if let Some(prev) = prev
            && first.index != prev.index.wrapping_add(1)
        {
            return Err(non_consecutive(Some(prev), *first));
        }
        for (log_id, record) in records {
            log.insert(log_id.index, record.as_slice())
                .map_err(io(ErrorSubject::Log(*log_id), ErrorVerb::Write))?;
        }
        Ok(())
    })
}

fn save_vote_now(db: &Database, vote: &Vote) -> Result<(), StorageError> {
    let record = encode(vote).map_err(|e| StorageIOError::write_vote(AnyError::new(&e)))?;
    write_txn(db, Durability::Immediate, ErrorSubject::Vote, |txn| {
        let mut table = write_table(txn, VOTE, ErrorSubject::Vote)?;
        table
            .insert(VOTE_KEY, record.as_slice())
            .map_err(io(ErrorSubject::Vote, ErrorVerb::Write))?;
        Ok(())
    })
}

fn save_committed_now(db: &Database, committed: Option<LogId>) -> Result<(), StorageError> {
    write_txn(db, Durability::None, ErrorSubject::Store, |txn| {
        let mut meta = write_table(txn, META, ErrorSubject::Store)?;
        match committed {
            Some(log_id) => {
                let record = encode(&log_id).map_err(io(ErrorSubject::Store, ErrorVerb::Write))?;
                meta.insert(META_COMMITTED, record.as_slice())
                    .map_err(io(ErrorSubject::Store, ErrorVerb::Write))?;
            }
            None => {
                meta.remove(META_COMMITTED)
                    .map_err(io(ErrorSubject::Store, ErrorVerb::Delete))?;
            }
        }
        Ok(())
    })
}

/// Deletes the entries from `log_id.index` on (the end of the log: no
/// hole).
fn truncate_now(db: &Database, log_id: LogId) -> Result<(), StorageError> {
    write_txn(db, Durability::Immediate, ErrorSubject::Logs, |txn| {
        let mut log = write_table(txn, LOG, ErrorSubject::Logs)?;
        log.retain_in(log_id.index.., |_, _| false)
            .map_err(io(ErrorSubject::Logs, ErrorVerb::Delete))
    })
}

/// Records `log_id` as the last purged and deletes the entries up to it
/// (the start of the log: no hole), in one transaction. A purge behind the
/// last one keeps the last one (and deletes up to it again).
fn purge_now(db: &Database, log_id: LogId) -> Result<(), StorageError> {
    let record = encode(&log_id).map_err(io(ErrorSubject::Store, ErrorVerb::Write))?;
    write_txn(db, Durability::Immediate, ErrorSubject::Logs, |txn| {
        let mut meta = write_table(txn, META, ErrorSubject::Store)?;
        let upto = match meta_log_id(&meta, META_PURGED)? {
            Some(prev) if prev.index >= log_id.index => prev.index,
            _ => {
                meta.insert(META_PURGED, record.as_slice())
                    .map_err(io(ErrorSubject::Store, ErrorVerb::Write))?;
                log_id.index
            }
        };
        let mut log = write_table(txn, LOG, ErrorSubject::Logs)?;
        log.retain_in(..=upto, |_, _| false)
            .map_err(io(ErrorSubject::Logs, ErrorVerb::Delete))
    })
}

// ------------------------------------------------------- openraft traits

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = (range.start_bound().cloned(), range.end_bound().cloned());
        self.read(move |db| read_entries(db, start, end, false))
            .await
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        self.read(move |db| read_entries(db, Bound::Included(start), Bound::Excluded(end), true))
            .await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        self.read(read_log_state).await
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let vote = *vote;
        self.write(ErrorSubject::Vote, |done| Op::SaveVote { vote, done })
            .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.read(read_vote).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.write(ErrorSubject::Store, |done| Op::SaveCommitted {
            committed,
            done,
        })
        .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.read(|db| read_meta(db, META_COMMITTED)).await
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        self.write(ErrorSubject::Logs, |done| Op::Append {
            entries,
            callback,
            done,
        })
        .await
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.write(ErrorSubject::Logs, |done| Op::Truncate { log_id, done })
            .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.write(ErrorSubject::Logs, |done| Op::Purge { log_id, done })
            .await
    }
}
