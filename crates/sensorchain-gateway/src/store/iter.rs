//! Streaming the stored chain from one read snapshot: [`BlockIter`] (the
//! blocks' exact bytes) and [`ChainIter`] (with their certificates).

use redb::ReadOnlyTable;

use super::schema::{BLOCKS, CERTS, open_ro};
use super::{Store, StoreError, guard};

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

impl Store {
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
}

/// Iterator of [`Store::blocks`]. It ends after the first error.
pub struct BlockIter {
    range: Option<redb::Range<'static, u64, &'static [u8]>>,
    err: Option<StoreError>,
    /// The height expected next (to name it if reading fails).
    next_height: u64,
}

impl BlockIter {
    pub(super) fn failed(e: StoreError) -> Self {
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
