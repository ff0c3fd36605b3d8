//! The reading queries: by stream and by time from their indexes
//! (`by_stream`, `by_time`), and by device as a merge of the device's
//! streams in `by_stream` (format 2 keeps no `by_device` table: one index
//! entry fewer per reading).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use redb::TableDefinition;
use sensorchain_core::identity::PublicKey;

use super::keys::{be64, key_stream, key_time, loc_of, pk_of};
use super::schema::{BY_STREAM, BY_TIME, open_ro};
use super::{ReadingRef, Store, StoreError, TxLocation, guard};

/// A `by_stream` entry as a [`ReadingRef`] (`k` is 50 bytes, checked by the
/// caller).
fn stream_ref(k: &[u8], v: (u64, u32, u16)) -> ReadingRef {
    ReadingRef {
        loc: loc_of((v.0, v.1)),
        device: pk_of(k),
        stream: v.2,
        timestamp_ms: be64(&k[34..]),
        sequence: be64(&k[42..]),
    }
}

/// The heap of [`Store::readings_by_device`]'s merge: the next entry of each
/// run, smallest (timestamp, sequence) first.
type Merge = BinaryHeap<Reverse<((u64, u64), usize, TxLocation, u16)>>;

/// Moves run `i`'s next entry into the merge.
fn pull(
    run: &mut redb::Range<'static, &'static [u8], (u64, u32, u16)>,
    i: usize,
    heap: &mut Merge,
) -> Result<(), StoreError> {
    if let Some(item) = run.next() {
        let (k, v) = item?;
        let k = k.value();
        if k.len() != 50 {
            return Err(wrong_length("by_stream"));
        }
        let x = stream_ref(k, v.value());
        heap.push(Reverse(((x.timestamp_ms, x.sequence), i, x.loc, x.stream)));
    }
    Ok(())
}

fn wrong_length(name: &'static str) -> StoreError {
    StoreError::corrupt_in(name, None, "reading index key of the wrong length")
}

impl Store {
    /// Readings of `device` with device timestamps in `from_ms..=to_ms`,
    /// oldest first (by timestamp, then sequence), at most `limit` (the
    /// oldest ones of the window; to page on, query again from the last
    /// timestamp returned and skip what was seen).
    ///
    /// Cost: one seek per stream the device has, then `limit` entries read
    /// in a merge of those streams' ranges (memory: one entry per stream).
    pub fn readings_by_device(
        &self,
        device: &PublicKey,
        from_ms: u64,
        to_ms: u64,
        limit: usize,
    ) -> Result<Vec<ReadingRef>, StoreError> {
        guard::guarded("by_stream", None, || {
            let mut out = Vec::new();
            if limit == 0 || from_ms > to_ms {
                return Ok(out);
            }
            let r = self.begin_read()?;
            let Some(t) = open_ro(&r, BY_STREAM)? else {
                return Ok(out);
            };
            let end = key_stream(device, u16::MAX, u64::MAX, u64::MAX);
            // the device's streams, each a range of the window; found by
            // seeking from one stream to the next
            let mut runs = Vec::new();
            let mut next = Some(0u16);
            while let Some(s) = next {
                let lo = key_stream(device, s, 0, 0);
                let Some(first) = t.range::<&[u8]>(lo.as_slice()..=end.as_slice())?.next() else {
                    break;
                };
                let k = first?.0;
                let k = k.value();
                if k.len() != end.len() {
                    return Err(wrong_length("by_stream"));
                }
                let stream = u16::from_be_bytes([k[32], k[33]]);
                let (lo, hi) = (
                    key_stream(device, stream, from_ms, 0),
                    key_stream(device, stream, to_ms, u64::MAX),
                );
                runs.push(t.range::<&[u8]>(lo.as_slice()..=hi.as_slice())?);
                next = stream.checked_add(1);
            }
            // k-way merge of the runs by (timestamp, sequence): a device's
            // sequence numbers are unique, so the order is total
            let mut heap = BinaryHeap::new();
            for (i, run) in runs.iter_mut().enumerate() {
                pull(run, i, &mut heap)?;
            }
            while let Some(Reverse(((ts, seq), i, loc, stream))) = heap.pop() {
                out.push(ReadingRef {
                    loc,
                    device: *device,
                    stream,
                    sequence: seq,
                    timestamp_ms: ts,
                });
                if out.len() >= limit {
                    break;
                }
                pull(&mut runs[i], i, &mut heap)?;
            }
            Ok(out)
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
        self.scan(BY_STREAM, "by_stream", &lo, &hi, limit, stream_ref)
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
                    return Err(wrong_length(name));
                }
                out.push(f(k, v.value()));
                if out.len() >= limit {
                    break;
                }
            }
            Ok(out)
        })
    }
}
