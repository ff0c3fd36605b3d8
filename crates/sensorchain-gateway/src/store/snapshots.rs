//! World-state snapshots: the latest [`SNAPSHOTS_KEPT`] are kept, each
//! under the height of the block after which it was taken.

use redb::{ReadableTable, ReadableTableMetadata, WriteTransaction};

use super::schema::{SNAPSHOTS, open_ro};
use super::{SNAPSHOTS_KEPT, Store, StoreError, guard};

impl Store {
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
}

pub(super) fn put_snapshot(
    w: &WriteTransaction,
    height: u64,
    snapshot: &[u8],
) -> Result<(), StoreError> {
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
