//! A 16-byte state kept in two NOR flash pages, safe against power loss
//! in the middle of a write or an erase.
//!
//! The device's `PersistentState` (`sensorchain_device::storage`: the
//! sequence ceiling and the boot counter) must never go back: a lost save
//! could make a board reuse a sequence number or, worse, replay its random
//! stream (the RP2040 seeds its DRBG from the boot counter). So a save
//! never overwrites the last good copy:
//!
//! - Each save *appends* a 32-byte record to the active page:
//!
//!   | offset | len | field |
//!   |---|---|---|
//!   | 0 | 16 | payload (the state) |
//!   | 16 | 8 | generation, u64 LE (+1 per record written) |
//!   | 24 | 4 | magic `"SCS1"` |
//!   | 28 | 4 | CRC-32 (IEEE) of bytes 0..28, LE |
//!
//! - The valid record with the highest generation wins. A torn record
//!   (power lost while programming) fails its CRC and is skipped; its slot
//!   counts as used and is never programmed again (a flash word is
//!   programmed at most once between erases, as the nRF52840's NVMC
//!   requires).
//! - When the active page is full, the *other* page is erased and the
//!   record goes to its first slot. The full page keeps the newest state
//!   until the new page holds a valid record: an erase torn by a power cut
//!   loses nothing. A single page erased when full could not promise that.
//! - Every write is read back; a mismatch burns the slot and retries in the
//!   next one (three attempts), then the save fails.
//!
//! 128 records per 4 KiB page: with the firmware reserving 16 sequence
//! numbers per save, a page switch (one erase) every 2,048 readings plus
//! one per 128 boots.

use embedded_storage::nor_flash::NorFlash;

/// Bytes of state a record holds.
pub const PAYLOAD_LEN: usize = 16;
/// Bytes of one record.
pub const RECORD_LEN: usize = 32;
/// The record's magic (format version 1).
pub const MAGIC: [u8; 4] = *b"SCS1";
/// Write attempts per save before it fails.
pub const ATTEMPTS: u32 = 3;

/// Why the state log failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error<E> {
    /// The flash driver failed.
    Flash(E),
    /// The flash is not two erase pages of whole records (or its write or
    /// read granularity does not divide a record).
    Geometry,
    /// Written records did not read back ([`ATTEMPTS`] times).
    Verify,
    /// Writes kept failing until a page switch would have erased the page
    /// holding the newest valid state: refused.
    WornOut,
}

/// CRC-32 (IEEE 802.3, reflected, the one of zlib), bitwise: no table in
/// flash.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            let mask = (c & 1).wrapping_neg();
            c = (c >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !c
}

/// The record of `payload` under `generation`.
pub fn encode(payload: &[u8; PAYLOAD_LEN], generation: u64) -> [u8; RECORD_LEN] {
    let mut r = [0u8; RECORD_LEN];
    r[..16].copy_from_slice(payload);
    r[16..24].copy_from_slice(&generation.to_le_bytes());
    r[24..28].copy_from_slice(&MAGIC);
    let crc = crc32(&r[..28]);
    r[28..].copy_from_slice(&crc.to_le_bytes());
    r
}

/// What a record slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Erased (all `0xFF`): free.
    Blank,
    /// A valid record.
    Valid {
        /// Its generation.
        generation: u64,
        /// Its payload.
        payload: [u8; PAYLOAD_LEN],
    },
    /// Programmed but not a valid record (a torn write, bit rot, leftovers
    /// of another image): used, ignored.
    Garbage,
}

/// Classifies a slot's bytes.
pub fn decode(r: &[u8; RECORD_LEN]) -> Slot {
    if r.iter().all(|&b| b == 0xFF) {
        return Slot::Blank;
    }
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&r[28..]);
    if r[24..28] != MAGIC || crc32(&r[..28]) != u32::from_le_bytes(crc) {
        return Slot::Garbage;
    }
    let mut payload = [0u8; PAYLOAD_LEN];
    payload.copy_from_slice(&r[..16]);
    let mut g = [0u8; 8];
    g.copy_from_slice(&r[16..24]);
    Slot::Valid {
        generation: u64::from_le_bytes(g),
        payload,
    }
}

/// The state log over the first two erase pages of `F` (offsets
/// `0..2 * F::ERASE_SIZE` of the driver: give it a driver whose range is
/// the state pages).
#[derive(Debug)]
pub struct StateLog<F> {
    flash: F,
    /// Bytes per page (`F::ERASE_SIZE`).
    page: u32,
    /// The page new records go to (0 or 1).
    active: u32,
    /// Next free slot of the active page (`slots()` when full).
    next: u32,
    /// Generation of the last record written or found (0: none).
    generation: u64,
    /// The newest valid payload and the page that holds it.
    latest: Option<([u8; PAYLOAD_LEN], u32)>,
    /// Page erases done by this instance.
    erases: u32,
}

impl<F: NorFlash> StateLog<F> {
    /// Scans both pages: the newest valid record is the state, and new
    /// records go after the last used slot of its page.
    pub fn open(mut flash: F) -> Result<Self, Error<F::Error>> {
        let page = F::ERASE_SIZE;
        if page == 0
            || !page.is_multiple_of(RECORD_LEN)
            || F::WRITE_SIZE == 0
            || !RECORD_LEN.is_multiple_of(F::WRITE_SIZE)
            || F::READ_SIZE == 0
            || !RECORD_LEN.is_multiple_of(F::READ_SIZE)
            || flash.capacity() < 2 * page
            || page > u32::MAX as usize / 2
        {
            return Err(Error::Geometry);
        }
        let page = page as u32;
        let slots = page / RECORD_LEN as u32;
        let mut fill = [0u32; 2];
        let mut best: Option<(u64, u32, [u8; PAYLOAD_LEN])> = None;
        let mut top = 0u64;
        for p in 0..2u32 {
            for s in 0..slots {
                let mut r = [0u8; RECORD_LEN];
                flash
                    .read(p * page + s * RECORD_LEN as u32, &mut r)
                    .map_err(Error::Flash)?;
                match decode(&r) {
                    Slot::Blank => {}
                    Slot::Garbage => fill[p as usize] = s + 1,
                    Slot::Valid {
                        generation,
                        payload,
                    } => {
                        fill[p as usize] = s + 1;
                        top = top.max(generation);
                        if best.is_none_or(|(g, _, _)| generation >= g) {
                            best = Some((generation, p, payload));
                        }
                    }
                }
            }
        }
        let (active, latest) = match best {
            Some((_, p, payload)) => (p, Some((payload, p))),
            None => (0, None),
        };
        Ok(StateLog {
            flash,
            page,
            active,
            next: fill[active as usize],
            generation: top,
            latest,
            erases: 0,
        })
    }

    fn slots(&self) -> u32 {
        self.page / RECORD_LEN as u32
    }

    /// The newest valid state, `None` if none was ever saved (or none
    /// survived).
    pub fn latest(&self) -> Option<[u8; PAYLOAD_LEN]> {
        self.latest.map(|(p, _)| p)
    }

    /// The generation of the newest record written or found.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Page erases this instance did.
    pub fn erases(&self) -> u32 {
        self.erases
    }

    /// Appends `payload` as the new state (durable when this returns `Ok`:
    /// it was read back).
    pub fn save(&mut self, payload: &[u8; PAYLOAD_LEN]) -> Result<(), Error<F::Error>> {
        for _ in 0..ATTEMPTS {
            if self.next >= self.slots() {
                let other = 1 - self.active;
                if self.latest.is_some_and(|(_, p)| p == other) {
                    return Err(Error::WornOut);
                }
                let from = other * self.page;
                self.erases = self.erases.saturating_add(1);
                self.flash
                    .erase(from, from + self.page)
                    .map_err(Error::Flash)?;
                self.active = other;
                self.next = 0;
            }
            // Every record gets a new generation, even after a failed
            // attempt: whatever landed in a burnt slot is older.
            self.generation = self.generation.saturating_add(1);
            let rec = encode(payload, self.generation);
            let off = self.active * self.page + self.next * RECORD_LEN as u32;
            // The slot is used from now on, whatever happens.
            self.next += 1;
            self.flash.write(off, &rec).map_err(Error::Flash)?;
            let mut back = [0u8; RECORD_LEN];
            self.flash.read(off, &mut back).map_err(Error::Flash)?;
            if back == rec {
                self.latest = Some((*payload, self.active));
                return Ok(());
            }
        }
        Err(Error::Verify)
    }

    /// The flash driver back.
    pub fn into_inner(self) -> F {
        self.flash
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use embedded_storage::nor_flash::{ErrorType, NorFlashError, NorFlashErrorKind, ReadNorFlash};
    use std::vec;
    use std::vec::Vec;

    const PAGE: usize = 4096;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum SimError {
        PowerLoss,
        Bounds,
    }

    impl NorFlashError for SimError {
        fn kind(&self) -> NorFlashErrorKind {
            match self {
                SimError::PowerLoss => NorFlashErrorKind::Other,
                SimError::Bounds => NorFlashErrorKind::OutOfBounds,
            }
        }
    }

    /// NOR flash in memory: programming clears bits only; each 4-byte word
    /// is programmed at most once between erases (asserted, like the
    /// nRF52840 NVMC's limit); `budget` byte operations before a power cut
    /// (the byte being written then is left half-programmed or
    /// half-erased); `stuck` bytes that never program (a worn cell).
    #[derive(Clone)]
    struct Sim {
        mem: Vec<u8>,
        written: Vec<bool>,
        budget: Option<usize>,
        stuck: Option<core::ops::Range<usize>>,
        erases: usize,
    }

    impl Sim {
        fn new() -> Self {
            Sim {
                mem: vec![0xFF; 2 * PAGE],
                written: vec![false; 2 * PAGE / 4],
                budget: None,
                stuck: None,
                erases: 0,
            }
        }

        fn tick(&mut self) -> bool {
            match self.budget.as_mut() {
                None => true,
                Some(0) => false,
                Some(n) => {
                    *n -= 1;
                    true
                }
            }
        }
    }

    impl ErrorType for Sim {
        type Error = SimError;
    }

    impl ReadNorFlash for Sim {
        const READ_SIZE: usize = 1;
        fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), SimError> {
            let o = offset as usize;
            let src = self.mem.get(o..o + bytes.len()).ok_or(SimError::Bounds)?;
            bytes.copy_from_slice(src);
            Ok(())
        }
        fn capacity(&self) -> usize {
            self.mem.len()
        }
    }

    impl NorFlash for Sim {
        const WRITE_SIZE: usize = 4;
        const ERASE_SIZE: usize = PAGE;
        fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), SimError> {
            let o = offset as usize;
            assert_eq!(o % 4, 0);
            assert_eq!(bytes.len() % 4, 0);
            for w in o / 4..(o + bytes.len()) / 4 {
                assert!(!self.written[w], "word {w} programmed twice");
                self.written[w] = true;
            }
            for (i, &b) in bytes.iter().enumerate() {
                let a = o + i;
                if self.stuck.as_ref().is_some_and(|r| r.contains(&a)) {
                    continue;
                }
                if !self.tick() {
                    self.mem[a] &= b | 0x5A; // half-programmed
                    return Err(SimError::PowerLoss);
                }
                self.mem[a] &= b;
            }
            Ok(())
        }
        fn erase(&mut self, from: u32, to: u32) -> Result<(), SimError> {
            assert_eq!(from as usize % PAGE, 0);
            assert_eq!(to - from, PAGE as u32);
            self.erases += 1;
            for a in from as usize..to as usize {
                if !self.tick() {
                    self.mem[a] |= 0xA5; // half-erased
                    return Err(SimError::PowerLoss);
                }
                self.mem[a] = 0xFF;
            }
            for w in from as usize / 4..to as usize / 4 {
                self.written[w] = false;
            }
            Ok(())
        }
    }

    fn state(n: u64) -> [u8; PAYLOAD_LEN] {
        let mut b = [0u8; PAYLOAD_LEN];
        b[..8].copy_from_slice(&(n * 16).to_le_bytes());
        b[8..].copy_from_slice(&(n + 1).to_le_bytes());
        b
    }

    fn latest(sim: &Sim) -> Option<[u8; PAYLOAD_LEN]> {
        let mut s = sim.clone();
        s.budget = None;
        StateLog::open(s).unwrap().latest()
    }

    /// A flash after `n` saves of state(1..=n), reopened before each.
    fn history(n: u64) -> Sim {
        let mut sim = Sim::new();
        for i in 1..=n {
            let mut log = StateLog::open(sim).unwrap();
            log.save(&state(i)).unwrap();
            sim = log.into_inner();
        }
        sim
    }

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn record_round_trip_and_any_bit_flip_refused() {
        let r = encode(&state(7), 42);
        assert_eq!(
            decode(&r),
            Slot::Valid {
                generation: 42,
                payload: state(7)
            }
        );
        assert_eq!(decode(&[0xFF; RECORD_LEN]), Slot::Blank);
        assert_eq!(decode(&[0; RECORD_LEN]), Slot::Garbage);
        for i in 0..RECORD_LEN {
            for bit in 0..8 {
                let mut m = r;
                m[i] ^= 1 << bit;
                assert_eq!(decode(&m), Slot::Garbage, "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn blank_flash_then_save_and_reopen() {
        let log = StateLog::open(Sim::new()).unwrap();
        assert_eq!(log.latest(), None);
        assert_eq!(log.generation(), 0);
        let mut log = log;
        log.save(&state(1)).unwrap();
        assert_eq!(log.latest(), Some(state(1)));
        let sim = log.into_inner();
        let log = StateLog::open(sim).unwrap();
        assert_eq!(log.latest(), Some(state(1)));
        assert_eq!(log.generation(), 1);
    }

    #[test]
    fn thousands_of_saves_wrap_the_pages_and_newest_wins() {
        let slots = (PAGE / RECORD_LEN) as u64;
        let mut sim = Sim::new();
        let mut log = StateLog::open(sim).unwrap();
        for i in 1..=3000u64 {
            log.save(&state(i)).unwrap();
            assert_eq!(log.latest(), Some(state(i)));
            if i % 37 == 0 {
                sim = log.into_inner();
                assert_eq!(latest(&sim), Some(state(i)));
                log = StateLog::open(sim).unwrap();
            }
        }
        sim = log.into_inner();
        // One erase per page switch: (3000 - 128) / 128 rounded up.
        assert_eq!(sim.erases as u64, (3000 - slots).div_ceil(slots));
        assert_eq!(latest(&sim), Some(state(3000)));
        assert_eq!(StateLog::open(sim).unwrap().generation(), 3000);
    }

    /// Cuts the power after every possible number of byte operations of
    /// one save and checks that the state is then the old or the new one,
    /// never anything else, and that the next save and load work.
    fn torn_save_at_every_point(before: u64) {
        let base = history(before);
        let old = latest(&base);
        let new = state(before + 1);
        let newer = state(before + 2);
        let mut cut = 0usize;
        loop {
            let mut sim = base.clone();
            sim.budget = Some(cut);
            let mut log = StateLog::open(sim).unwrap();
            let r = log.save(&new);
            let mut sim = log.into_inner();
            let done = r.is_ok();
            sim.budget = None;
            let now = latest(&sim);
            if done {
                assert_eq!(now, Some(new), "cut {cut}: completed save lost");
            } else {
                assert_eq!(r, Err(Error::Flash(SimError::PowerLoss)));
                assert!(
                    now == old || now == Some(new),
                    "cut {cut}: state is neither old nor new"
                );
            }
            // The board reboots and goes on.
            let mut log = StateLog::open(sim).unwrap();
            log.save(&newer).unwrap();
            assert_eq!(latest(&log.into_inner()), Some(newer), "cut {cut}");
            if done {
                break;
            }
            cut += 1;
        }
        assert!(cut >= RECORD_LEN, "the save was never torn");
    }

    #[test]
    fn torn_first_save() {
        torn_save_at_every_point(0);
    }

    #[test]
    fn torn_save_in_the_middle_of_a_page() {
        torn_save_at_every_point(50);
    }

    #[test]
    fn torn_save_that_erases_the_other_page() {
        // 128 records fill page 0: save 129 erases page 1 (4096 byte
        // operations) and writes its first slot.
        torn_save_at_every_point(128);
    }

    #[test]
    fn torn_save_after_a_second_switch() {
        // Page 1 full, page 0 (old records) is erased by save 257.
        torn_save_at_every_point(256);
    }

    #[test]
    fn garbage_pages_hold_no_state_and_are_reclaimed() {
        let mut sim = Sim::new();
        let mut x = 0x1234_5678u32;
        for b in sim.mem.iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        sim.written.iter_mut().for_each(|w| *w = true);
        let mut log = StateLog::open(sim).unwrap();
        assert_eq!(log.latest(), None);
        log.save(&state(1)).unwrap();
        assert_eq!(latest(&log.into_inner()), Some(state(1)));
    }

    #[test]
    fn corrupted_newest_record_falls_back_to_the_previous_one() {
        let mut sim = history(5);
        // Slot 4 of page 0 holds state(5).
        sim.mem[4 * RECORD_LEN + 3] ^= 0x10;
        assert_eq!(latest(&sim), Some(state(4)));
        let mut log = StateLog::open(sim).unwrap();
        assert_eq!(log.generation(), 4);
        log.save(&state(6)).unwrap();
        let sim = log.into_inner();
        assert_eq!(latest(&sim), Some(state(6)));
        // The corrupted slot was not reused: the new record is in slot 5.
        assert_eq!(
            decode(sim.mem[5 * RECORD_LEN..6 * RECORD_LEN].try_into().unwrap()),
            Slot::Valid {
                generation: 5,
                payload: state(6)
            }
        );
    }

    #[test]
    fn write_that_does_not_read_back_burns_the_slot_and_retries() {
        let mut sim = history(3);
        // Slot 3 never programs: the save goes to slot 4.
        sim.stuck = Some(3 * RECORD_LEN..4 * RECORD_LEN);
        let mut log = StateLog::open(sim).unwrap();
        log.save(&state(4)).unwrap();
        let mut sim = log.into_inner();
        assert_eq!(latest(&sim), Some(state(4)));
        // Three bad slots in a row: the save fails, the old state stays.
        sim.stuck = Some(5 * RECORD_LEN..8 * RECORD_LEN);
        let mut log = StateLog::open(sim).unwrap();
        assert_eq!(log.save(&state(5)), Err(Error::Verify));
        assert_eq!(log.latest(), Some(state(4)));
        assert_eq!(latest(&log.into_inner()), Some(state(4)));
    }

    #[test]
    fn never_erases_the_page_with_the_newest_state() {
        // Page 0 full, then every write to page 1 fails to read back.
        let mut sim = history(128);
        sim.stuck = Some(PAGE..2 * PAGE);
        let mut log = StateLog::open(sim).unwrap();
        let mut worn = false;
        for _ in 0..200 {
            match log.save(&state(500)) {
                Err(Error::Verify) => {}
                Err(Error::WornOut) => {
                    worn = true;
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(worn);
        assert_eq!(latest(&log.into_inner()), Some(state(128)));
    }

    #[test]
    fn geometry_is_checked() {
        let mut sim = Sim::new();
        sim.mem.truncate(PAGE);
        assert!(matches!(StateLog::open(sim), Err(Error::Geometry)));
    }
}
