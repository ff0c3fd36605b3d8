//! Writes that bypass every check, for demonstrations and tests of tamper
//! detection (an audit must then catch the change):
//!
//! - [`tamper_block_bytes`] works on a store *directory* nobody holds: it
//!   opens the store itself, exclusively, so it cannot touch the store of a
//!   running gateway or any other open [`Store`] ([`StoreError::Busy`]).
//!   The demo's tamper scene uses it on a copy of the chain.
//! - [`Store::overwrite_block_bytes_unchecked`] does the same on an open
//!   store: a test hook, compiled only under `cfg(test)` or the
//!   `test-hooks` feature (which only the tests enable), so that a
//!   gateway's `Store` has no unchecked write.

use std::path::Path;

use super::schema::BLOCKS;
use super::{Store, StoreError, guard};

/// Replaces the stored bytes of block `height` of the store in `dir`
/// **without any check or index update**, opening the store exclusively
/// for the write ([`StoreError::Busy`] if a gateway or another handle has
/// it open). For tamper demonstrations on a copy of a chain only.
pub fn tamper_block_bytes(dir: &Path, height: u64, bytes: &[u8]) -> Result<(), StoreError> {
    Store::open(dir)?.put_block_bytes_unchecked(height, bytes)
}

impl Store {
    /// Replaces the stored bytes of block `height` **without any check or
    /// index update**: for tests and tamper demonstrations only (an audit
    /// must then catch the change).
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn overwrite_block_bytes_unchecked(
        &self,
        height: u64,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        self.put_block_bytes_unchecked(height, bytes)
    }

    fn put_block_bytes_unchecked(&self, height: u64, bytes: &[u8]) -> Result<(), StoreError> {
        guard::guarded("blocks", Some(height), || {
            let w = self.begin_write()?;
            w.open_table(BLOCKS)?.insert(height, bytes)?;
            w.commit()?;
            Ok(())
        })
    }
}
