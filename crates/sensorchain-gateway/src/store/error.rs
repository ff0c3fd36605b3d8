//! [`StoreError`]: why a store operation failed, and the conversions from
//! redb's and the OS's errors (a full disk, a damaged file).

use redb::TableError;
use sensorchain_core::codec::DecodeError;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// The store was written in an older layout of its indexes: its blocks
    /// are kept, its indexes must be rebuilt from them (`sensorchain
    /// reindex`, [`Store::reindex`](super::Store::reindex)) before this
    /// build reads it; nothing was read or changed.
    #[error(
        "the chain store in {dir} has index format {version}, this build reads format {current}: \
         stop the gateway and run `sensorchain reindex --data-dir {dir}` (rebuilds every index \
         from the stored blocks, then checks them)",
        dir = .dir.display(),
        current = super::FORMAT_VERSION
    )]
    OldFormat {
        /// The format the file records.
        version: u32,
        /// The store's directory (what `--data-dir` takes).
        dir: std::path::PathBuf,
    },
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

    pub(super) fn corrupt(height: u64, what: impl Into<String>) -> Self {
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

pub(super) fn io_error(e: std::io::Error) -> StoreError {
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
