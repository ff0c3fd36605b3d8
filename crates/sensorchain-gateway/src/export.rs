//! The export container: a stored chain in the
//! exact wire bytes (`docs/PROTOCOL.md`, section "Export container").
//!
//! ```text
//! "SCCHAIN1"                                   8 bytes, ASCII magic
//! per block, heights 0, 1, 2, … in order:
//!   block_len   u32 LE (1 ..= 16 MiB)
//!   block       block_len bytes: postcard of the core `Block`, as stored
//!   cert_len    u32 LE (0 ..= 4096; 0 = no finality certificate)
//!   cert        cert_len bytes: postcard of the core `FinalityCert`
//! end marker:
//!   0x00000000  u32 LE (a block_len of 0)
//!   count       u64 LE, the number of blocks
//! (end of file)
//! ```

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use anyhow::{Context, bail};
use sensorchain_core::block::{Block, FinalityCert};

use crate::chain_source::ChainSource;
use crate::store::{self, BLOCK_MAX_LEN, CERT_MAX_LEN, Store};

/// The container's first 8 bytes.
pub const MAGIC: &[u8; 8] = b"SCCHAIN1";

/// What an export wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportSummary {
    /// Blocks written.
    pub blocks: u64,
    /// Certificates written.
    pub certs: u64,
    /// Size of the container in bytes.
    pub bytes: u64,
}

/// Writes the container of `store`'s chain to `out` atomically: a
/// temporary file in the same directory, synced, then renamed over `out`.
pub fn export_store(store: &Store, out: &Path) -> anyhow::Result<ExportSummary> {
    export_source(&ChainSource::Store(store), out)
}

/// [`export_store`] of any [`ChainSource`] (a store, or a gateway's API).
pub fn export_source(source: &ChainSource<'_>, out: &Path) -> anyhow::Result<ExportSummary> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".sensorchain-export-")
        .tempfile_in(parent)
        .with_context(|| format!("cannot create a temporary file in {}", parent.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file());
    let summary = write_entries(source.entries(), &mut w)?;
    w.flush()?;
    drop(w);
    tmp.as_file().sync_all()?;
    tmp.persist(out)
        .with_context(|| format!("cannot rename the export to {}", out.display()))?;
    // Make the rename itself durable.
    if let Ok(d) = File::open(parent) {
        let _ = d.sync_all();
    }
    Ok(summary)
}

fn len_u32(n: usize, what: &str) -> anyhow::Result<[u8; 4]> {
    let n = u32::try_from(n).with_context(|| format!("{what} too large"))?;
    Ok(n.to_le_bytes())
}

/// Writes the container of `store`'s chain to `w`, streaming from one read
/// snapshot (one block in memory at a time).
pub fn write_container(store: &Store, w: &mut impl Write) -> anyhow::Result<ExportSummary> {
    write_entries(store.chain_entries(0), w)
}

/// Writes the container of the stored records `entries` (heights 0, 1, …)
/// to `w`, one block in memory at a time.
pub fn write_entries(
    entries: impl Iterator<Item = Result<store::StoredBlock, store::StoreError>>,
    w: &mut impl Write,
) -> anyhow::Result<ExportSummary> {
    let mut s = ExportSummary {
        blocks: 0,
        certs: 0,
        bytes: 0,
    };
    w.write_all(MAGIC)?;
    s.bytes += MAGIC.len() as u64;
    for entry in entries {
        let e = entry?;
        if e.height != s.blocks {
            bail!(
                "block {} is missing from the store (next stored is {})",
                s.blocks,
                e.height
            );
        }
        if e.bytes.is_empty() || e.bytes.len() > BLOCK_MAX_LEN {
            bail!(
                "block {} has an impossible size of {} bytes",
                e.height,
                e.bytes.len()
            );
        }
        w.write_all(&len_u32(e.bytes.len(), "block")?)?;
        w.write_all(&e.bytes)?;
        let cert = e.cert.as_deref().unwrap_or_default();
        if cert.len() > CERT_MAX_LEN {
            bail!("the certificate of block {} is too large", e.height);
        }
        w.write_all(&len_u32(cert.len(), "certificate")?)?;
        w.write_all(cert)?;
        s.blocks += 1;
        s.certs += u64::from(!cert.is_empty());
        s.bytes += 8 + e.bytes.len() as u64 + cert.len() as u64;
    }
    if s.blocks == 0 {
        bail!("the chain store holds no blocks");
    }
    w.write_all(&0u32.to_le_bytes())?;
    w.write_all(&s.blocks.to_le_bytes())?;
    s.bytes += 12;
    Ok(s)
}

/// One record of a container: the exact bytes and their strict decodings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRecord {
    /// The block.
    pub block: Block,
    /// Its exact bytes.
    pub block_bytes: Vec<u8>,
    /// Its finality certificate, if one was exported.
    pub cert: Option<FinalityCert>,
}

/// A streaming reader of a container: yields the records in order, then
/// checks the end marker, the block count and the end of input. Blocks
/// and certificates are decoded strictly; a block whose height is not its
/// position is refused. (Validation is the core's: feed the blocks to
/// `WorldState::apply_block` or `chain::validate_blocks`.)
pub struct ExportReader<R: Read> {
    r: R,
    next: u64,
    done: bool,
}

impl<R: Read> ExportReader<R> {
    /// Checks the magic and returns the reader.
    pub fn new(mut r: R) -> anyhow::Result<Self> {
        let mut m = [0u8; 8];
        r.read_exact(&mut m)
            .context("not an export container (too short)")?;
        if &m != MAGIC {
            bail!("not an export container (bad magic)");
        }
        Ok(ExportReader {
            r,
            next: 0,
            done: false,
        })
    }

    fn u32(&mut self, what: &str) -> anyhow::Result<usize> {
        let mut b = [0u8; 4];
        self.r
            .read_exact(&mut b)
            .with_context(|| format!("container truncated ({what} of block {})", self.next))?;
        Ok(u32::from_le_bytes(b) as usize)
    }

    fn bytes(&mut self, n: usize, what: &str) -> anyhow::Result<Vec<u8>> {
        let mut v = vec![0u8; n];
        self.r
            .read_exact(&mut v)
            .with_context(|| format!("container truncated ({what} of block {})", self.next))?;
        Ok(v)
    }

    fn read_record(&mut self) -> anyhow::Result<Option<ExportRecord>> {
        let h = self.next;
        let len = self.u32("block length")?;
        if len == 0 {
            let mut c = [0u8; 8];
            self.r
                .read_exact(&mut c)
                .context("container truncated (block count)")?;
            let count = u64::from_le_bytes(c);
            if count != h {
                bail!("the container's end marker counts {count} blocks, it holds {h}");
            }
            let mut extra = [0u8; 1];
            if self.r.read(&mut extra)? != 0 {
                bail!("bytes after the container's end marker");
            }
            return Ok(None);
        }
        if len > BLOCK_MAX_LEN {
            bail!("block {h}: length {len} over the bound {BLOCK_MAX_LEN}");
        }
        let block_bytes = self.bytes(len, "block")?;
        let block = store::decode_block(h, &block_bytes)
            .with_context(|| format!("block {h} in the container"))?;
        let cert_len = self.u32("certificate length")?;
        if cert_len > CERT_MAX_LEN {
            bail!("block {h}: certificate length {cert_len} over the bound {CERT_MAX_LEN}");
        }
        let cert = if cert_len == 0 {
            None
        } else {
            let c = self.bytes(cert_len, "certificate")?;
            Some(
                store::decode_cert(h, &c)
                    .with_context(|| format!("certificate of block {h} in the container"))?,
            )
        };
        self.next += 1;
        Ok(Some(ExportRecord {
            block,
            block_bytes,
            cert,
        }))
    }
}

impl<R: Read> Iterator for ExportReader<R> {
    type Item = anyhow::Result<ExportRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.read_record() {
            Ok(Some(r)) => Some(Ok(r)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Opens a container file for streaming.
pub fn open_export(path: &Path) -> anyhow::Result<ExportReader<BufReader<File>>> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    ExportReader::new(BufReader::with_capacity(1 << 20, f))
}

/// Reads a whole container into memory (blocks with their certificates).
pub fn read_export(path: &Path) -> anyhow::Result<Vec<(Block, Option<FinalityCert>)>> {
    open_export(path)?
        .map(|r| r.map(|r| (r.block, r.cert)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::World;
    use sensorchain_core::chain::validate_blocks;

    /// A stored chain of `blocks` blocks (of 7 readings) exported to `name` in its
    /// directory: the directory, the world and the container's path.
    fn exported(blocks: usize, name: &str) -> (tempfile::TempDir, World, std::path::PathBuf) {
        let (dir, w) = World::stored(3, blocks, 7);
        let out = dir.path().join(name);
        let store = Store::open_read_only(dir.path()).unwrap();
        export_store(&store, &out).unwrap();
        (dir, w, out)
    }

    #[test]
    fn export_read_validate() {
        let (dir, w, out) = exported(5, "chain.scchain");
        let records = read_export(&out).unwrap();
        assert_eq!(records.len(), 6);
        let (blocks, certs): (Vec<Block>, Vec<Option<FinalityCert>>) = records.into_iter().unzip();
        assert_eq!(blocks.as_slice(), w.chain.blocks());
        assert_eq!(certs.iter().filter(|c| c.is_some()).count(), 2);
        let state = validate_blocks(&blocks, &certs).unwrap();
        assert_eq!(state.last_hash(), w.chain.head_hash());
        // byte-exact: the container is the stored bytes framed as documented
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(&bytes[..8], b"SCCHAIN1");
        let b0 = w.chain.blocks()[0].to_vec();
        assert_eq!(&bytes[8..12], &(b0.len() as u32).to_le_bytes());
        assert_eq!(&bytes[12..12 + b0.len()], b0.as_slice());
        assert_eq!(&bytes[12 + b0.len()..16 + b0.len()], &[0, 0, 0, 0]);
        assert_eq!(
            &bytes[bytes.len() - 12..],
            &[0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0]
        );
        // no temporary files left behind
        let leftovers = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".sensorchain-export-")
            })
            .count();
        assert_eq!(leftovers, 0);
    }

    #[test]
    fn damaged_containers_refused() {
        let (_dir, _w, out) = exported(2, "c.bin");
        let good = std::fs::read(&out).unwrap();
        let read = |bytes: &[u8]| -> anyhow::Result<usize> {
            ExportReader::new(bytes)?
                .collect::<anyhow::Result<Vec<_>>>()
                .map(|v| v.len())
        };
        assert_eq!(read(&good).unwrap(), 3);
        // truncated anywhere
        for cut in [0, 7, 8, 11, 50, good.len() - 12, good.len() - 1] {
            assert!(read(&good[..cut]).is_err(), "cut at {cut}");
        }
        // trailing garbage, wrong count, bad magic, a flipped byte in a block
        let mut v = good.clone();
        v.push(0);
        assert!(read(&v).is_err());
        let mut v = good.clone();
        let n = v.len();
        v[n - 8] = 9;
        assert!(read(&v).is_err());
        let mut v = good.clone();
        v[0] = b'X';
        assert!(read(&v).is_err());
        let mut v = good.clone();
        v[12] ^= 0xff; // the first byte of the genesis header (version varint)
        let r: anyhow::Result<Vec<_>> = ExportReader::new(v.as_slice()).unwrap().collect();
        let blocks_ok = r.map(|v| {
            let (b, c): (Vec<Block>, Vec<Option<FinalityCert>>) =
                v.into_iter().map(|r| (r.block, r.cert)).unzip();
            validate_blocks(&b, &c).is_ok()
        });
        assert!(!matches!(blocks_ok, Ok(true)));
    }

    #[test]
    fn refuses_empty_store_and_keeps_old_file() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let store = Store::open_read_only(dir.path()).unwrap();
        let out = dir.path().join("x");
        std::fs::write(&out, b"previous").unwrap();
        assert!(export_store(&store, &out).is_err());
        assert_eq!(std::fs::read(&out).unwrap(), b"previous");
    }
}
