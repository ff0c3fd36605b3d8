//! Flash image formats for `sensorchain provision`: the key page as raw
//! bytes, as Intel HEX, or as UF2 blocks for the RP2040's boot ROM.
//!
//! Both encoders are small and written here (no well-kept crate covers UF2,
//! and Intel HEX output is a few lines); the tests check them record by
//! record against the published formats:
//!
//! - **Intel HEX** (the format `probe-rs download --binary-format hex`,
//!   nrfjprog and most programmers read): text records
//!   `:LLAAAATT<data>CC` with `LL` data bytes at 16-bit address `AAAA`,
//!   record type `TT` (00 data, 01 end of file, 04 extended linear address:
//!   the upper 16 bits of the following addresses) and checksum `CC`, the
//!   two's complement of the sum of the other bytes. 16 data bytes a record,
//!   a type-04 record before the first data record and at every 64 KiB
//!   boundary, `:00000001FF` at the end.
//! - **UF2** (Microsoft's USB flashing format, what the RP2040 boot ROM's
//!   `RPI-RP2` drive accepts): 512-byte blocks, each
//!   `magic0 (0x0A324655 "UF2\n") ‖ magic1 (0x9E5D5157) ‖ flags ‖ target
//!   address ‖ payload size ‖ block number ‖ block count ‖ family id ‖
//!   476 bytes of data (payload first, zero after) ‖ magic end (0x0AB16F30)`,
//!   every word little-endian. The RP2040 boot ROM takes only blocks with
//!   the family-id flag (`0x00002000`) and family `0xe48bff56`, a 256-byte
//!   payload at a 256-byte-aligned flash address (`0x10000000..0x11000000`,
//!   the XIP window), and erases each 4 KiB sector it writes to: the key page
//!   needs a sector of its own. A payload's bytes past the end of the page
//!   are `0xFF`, the value of erased flash.

use std::fmt::Write as _;

use anyhow::{bail, ensure};

/// Bytes of data per Intel HEX data record.
pub const IHEX_RECORD_LEN: usize = 16;

/// First magic word of a UF2 block (`"UF2\n"`).
pub const UF2_MAGIC_START0: u32 = 0x0A32_4655;
/// Second magic word of a UF2 block.
pub const UF2_MAGIC_START1: u32 = 0x9E5D_5157;
/// Last word of a UF2 block.
pub const UF2_MAGIC_END: u32 = 0x0AB1_6F30;
/// UF2 flag: the family id field is present.
pub const UF2_FLAG_FAMILY_ID: u32 = 0x0000_2000;
/// UF2 family id of the RP2040.
pub const RP2040_FAMILY_ID: u32 = 0xE48B_FF56;
/// Length of a UF2 block.
pub const UF2_BLOCK_LEN: usize = 512;
/// Payload bytes per UF2 block (the only size the RP2040 boot ROM takes).
pub const UF2_PAYLOAD_LEN: usize = 256;
/// Start of the RP2040's XIP flash window (the only flash range its UF2
/// boot ROM writes).
pub const RP2040_FLASH_START: u32 = 0x1000_0000;
/// End (exclusive) of the RP2040's XIP flash window.
pub const RP2040_FLASH_END: u32 = 0x1100_0000;
/// An RP2040 flash sector: the unit its boot ROM erases.
pub const RP2040_SECTOR: u32 = 4096;

/// Suggested key page address on an RP2040 with 2 MiB of flash (the Pico):
/// the last 4 KiB sector, `0x10000000 + 2 MiB - 4 KiB`.
pub const RP2040_KEY_PAGE_ADDRESS: u32 = 0x101F_F000;
/// Suggested key page address on an nRF52840 (1 MiB flash, 4 KiB pages)
/// flashed with a probe and no bootloader: the second-to-last page. (Nordic's
/// secure bootloader uses the top pages; see `docs/PROVISIONING.md`.)
pub const NRF52840_KEY_PAGE_ADDRESS: u32 = 0x000F_E000;

/// Parses an address written in hex (`0x101FF000`, `0X…`, `_` separators
/// allowed) or decimal.
pub fn parse_address(s: &str) -> anyhow::Result<u32> {
    let t = s.trim().replace('_', "");
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16),
        None => t.parse::<u32>(),
    };
    parsed.map_err(|_| {
        anyhow::anyhow!("{s:?} is not a 32-bit address (hex such as 0x101FF000, or decimal)")
    })
}

/// Checks that `len` bytes fit at `base` in a 32-bit address space and
/// returns the end address (exclusive, as u64).
fn end_of(base: u32, len: usize) -> anyhow::Result<u64> {
    let end = u64::from(base) + len as u64;
    ensure!(
        end <= 1 << 32,
        "{len} bytes at 0x{base:08X} run past the 32-bit address space"
    );
    Ok(end)
}

fn ihex_record(out: &mut String, addr: u16, kind: u8, data: &[u8]) {
    let mut sum = data.len() as u8;
    sum = sum.wrapping_add((addr >> 8) as u8);
    sum = sum.wrapping_add(addr as u8);
    sum = sum.wrapping_add(kind);
    let _ = write!(out, ":{:02X}{addr:04X}{kind:02X}", data.len());
    for b in data {
        sum = sum.wrapping_add(*b);
        let _ = write!(out, "{b:02X}");
    }
    let _ = writeln!(out, "{:02X}", sum.wrapping_neg());
}

/// Encodes `data` at `base` as Intel HEX (extended linear addressing,
/// 16-byte data records, end-of-file record, `\n` line ends).
pub fn intel_hex(data: &[u8], base: u32) -> anyhow::Result<String> {
    end_of(base, data.len())?;
    let mut out = String::new();
    let mut upper: Option<u16> = None;
    let mut offset = 0usize;
    while offset < data.len() {
        let addr = base + offset as u32;
        let (hi, lo) = ((addr >> 16) as u16, addr as u16);
        if upper != Some(hi) {
            ihex_record(&mut out, 0, 0x04, &hi.to_be_bytes());
            upper = Some(hi);
        }
        // a record never crosses a 64 KiB boundary
        let room = 0x1_0000 - usize::from(lo);
        let n = IHEX_RECORD_LEN.min(data.len() - offset).min(room);
        ihex_record(&mut out, lo, 0x00, &data[offset..offset + n]);
        offset += n;
    }
    ihex_record(&mut out, 0, 0x01, &[]);
    Ok(out)
}

/// Encodes `data` at `base` as UF2 blocks for the RP2040 (family
/// [`RP2040_FAMILY_ID`], 256-byte payloads padded with `0xFF`). `base` must
/// be a 4 KiB-aligned address in the XIP flash window and the data must end
/// inside it. (The boot ROM needs 256-byte alignment; a sector-aligned start
/// also avoids erratum RP2040-E14, where a partly written first sector may be
/// written wrongly.)
pub fn uf2_rp2040(data: &[u8], base: u32) -> anyhow::Result<Vec<u8>> {
    ensure!(!data.is_empty(), "nothing to write");
    let end = end_of(base, data.len())?;
    if !(RP2040_FLASH_START..RP2040_FLASH_END).contains(&base) || end > u64::from(RP2040_FLASH_END)
    {
        bail!(
            "RP2040 UF2: 0x{base:08X}..0x{end:08X} is not inside the XIP flash window \
             0x{RP2040_FLASH_START:08X}..0x{RP2040_FLASH_END:08X} (flash offset 0x1FF000 is \
             address 0x{RP2040_KEY_PAGE_ADDRESS:08X})"
        );
    }
    ensure!(
        base.is_multiple_of(RP2040_SECTOR),
        "RP2040 UF2: the base address 0x{base:08X} must be 4 KiB (sector) aligned: the boot \
         ROM erases whole sectors, so the key page needs one of its own"
    );
    let blocks = data.len().div_ceil(UF2_PAYLOAD_LEN);
    let mut out = Vec::with_capacity(blocks * UF2_BLOCK_LEN);
    for (i, chunk) in data.chunks(UF2_PAYLOAD_LEN).enumerate() {
        let mut block = [0u8; UF2_BLOCK_LEN];
        let words = [
            UF2_MAGIC_START0,
            UF2_MAGIC_START1,
            UF2_FLAG_FAMILY_ID,
            base + (i * UF2_PAYLOAD_LEN) as u32,
            UF2_PAYLOAD_LEN as u32,
            i as u32,
            blocks as u32,
            RP2040_FAMILY_ID,
        ];
        for (j, w) in words.iter().enumerate() {
            block[4 * j..4 * j + 4].copy_from_slice(&w.to_le_bytes());
        }
        block[32..32 + UF2_PAYLOAD_LEN].fill(0xFF);
        block[32..32 + chunk.len()].copy_from_slice(chunk);
        block[UF2_BLOCK_LEN - 4..].copy_from_slice(&UF2_MAGIC_END.to_le_bytes());
        out.extend_from_slice(&block);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A strict Intel HEX reader for the tests: checks every checksum and
    /// returns (address, byte) pairs and the record types seen.
    fn read_ihex(text: &str) -> (Vec<(u32, u8)>, Vec<u8>) {
        let mut bytes = Vec::new();
        let mut kinds = Vec::new();
        let mut upper = 0u32;
        for line in text.lines() {
            let hex = line.strip_prefix(':').expect("record starts with ':'");
            let raw = ::hex::decode(hex).expect("hex digits");
            assert_eq!(
                raw.iter().fold(0u8, |s, b| s.wrapping_add(*b)),
                0,
                "checksum of {line}"
            );
            let n = raw[0] as usize;
            assert_eq!(raw.len(), 5 + n, "length of {line}");
            let addr = u32::from(u16::from_be_bytes([raw[1], raw[2]]));
            let data = &raw[4..4 + n];
            kinds.push(raw[3]);
            match raw[3] {
                0x00 => {
                    for (i, b) in data.iter().enumerate() {
                        bytes.push(((upper << 16) + addr + i as u32, *b));
                    }
                }
                0x01 => assert_eq!(line, ":00000001FF"),
                0x04 => upper = u32::from(u16::from_be_bytes([data[0], data[1]])),
                k => panic!("unexpected record type {k}"),
            }
        }
        (bytes, kinds)
    }

    #[test]
    fn addresses_parse() {
        assert_eq!(parse_address("0x101FF000").unwrap(), 0x101F_F000);
        assert_eq!(parse_address("0X000fe000").unwrap(), 0xFE000);
        assert_eq!(parse_address("0x101F_F000").unwrap(), 0x101F_F000);
        assert_eq!(parse_address("1040384").unwrap(), 0xFE000);
        assert!(parse_address("0x1_0000_0000").is_err());
        assert!(parse_address("fe000").is_err(), "hex needs its 0x");
        assert!(parse_address("").is_err());
    }

    #[test]
    fn ihex_known_records() {
        // the classic example record: 11 bytes "address gap" at 0x0010
        let text = intel_hex(b"address gap", 0x0010).unwrap();
        assert_eq!(
            text,
            ":020000040000FA\n:0B0010006164647265737320676170A7\n:00000001FF\n"
        );
        // the upper half of the RP2040 key page address
        let text = intel_hex(&[0xAB], RP2040_KEY_PAGE_ADDRESS).unwrap();
        assert_eq!(text.lines().next(), Some(":02000004101FCB"));
        assert_eq!(text.lines().nth(1), Some(":01F00000AB64"));
    }

    #[test]
    fn ihex_key_page_layout_and_round_trip() {
        let page: Vec<u8> = (0..332u32).map(|i| (i * 7 + 3) as u8).collect();
        let text = intel_hex(&page, NRF52840_KEY_PAGE_ADDRESS).unwrap();
        let (bytes, kinds) = read_ihex(&text);
        // one type-04 record, 21 data records (20 x 16 + 12), end of file
        assert_eq!(kinds.len(), 1 + 21 + 1);
        assert_eq!(kinds[0], 0x04);
        assert!(kinds[1..22].iter().all(|&k| k == 0));
        assert_eq!(kinds[22], 0x01);
        assert_eq!(bytes.len(), 332);
        for (i, (addr, b)) in bytes.iter().enumerate() {
            assert_eq!(*addr, NRF52840_KEY_PAGE_ADDRESS + i as u32);
            assert_eq!(*b, page[i]);
        }
        assert!(text.lines().all(|l| l.len() <= 1 + 2 * (5 + 16)));
    }

    #[test]
    fn ihex_crosses_a_64k_boundary_with_a_new_upper_address() {
        let data: Vec<u8> = (0..40u8).collect();
        let base = 0x0001_FFF8; // 8 bytes below 0x20000
        let text = intel_hex(&data, base).unwrap();
        let (bytes, kinds) = read_ihex(&text);
        assert_eq!(kinds.iter().filter(|&&k| k == 0x04).count(), 2);
        assert!(text.contains(":020000040002F8\n"), "{text}");
        for (i, (addr, b)) in bytes.iter().enumerate() {
            assert_eq!(*addr, base + i as u32);
            assert_eq!(*b, data[i]);
        }
        assert!(intel_hex(&data, 0xFFFF_FFF0).is_err());
    }

    #[test]
    fn uf2_blocks_magic_and_payload_placement() {
        let page: Vec<u8> = (0..332u32).map(|i| (i % 251) as u8).collect();
        let uf2 = uf2_rp2040(&page, RP2040_KEY_PAGE_ADDRESS).unwrap();
        assert_eq!(uf2.len(), 2 * UF2_BLOCK_LEN);
        let word = |b: &[u8], i: usize| u32::from_le_bytes(b[4 * i..4 * i + 4].try_into().unwrap());
        for (n, block) in uf2.chunks(UF2_BLOCK_LEN).enumerate() {
            assert_eq!(word(block, 0), 0x0A32_4655);
            assert_eq!(&block[..4], b"UF2\n");
            assert_eq!(word(block, 1), 0x9E5D_5157);
            assert_eq!(word(block, 2), 0x0000_2000);
            assert_eq!(word(block, 3), 0x101F_F000 + 256 * n as u32);
            assert_eq!(word(block, 4), 256);
            assert_eq!(word(block, 5), n as u32);
            assert_eq!(word(block, 6), 2);
            assert_eq!(word(block, 7), 0xE48B_FF56);
            assert_eq!(word(block, 127), 0x0AB1_6F30);
            // data after the 256-byte payload is zero
            assert!(block[32 + 256..508].iter().all(|&b| b == 0));
        }
        assert_eq!(&uf2[32..288], &page[..256]);
        let second = &uf2[UF2_BLOCK_LEN..];
        assert_eq!(&second[32..32 + 76], &page[256..]);
        assert!(second[32 + 76..288].iter().all(|&b| b == 0xFF));
    }

    #[test]
    fn uf2_refuses_addresses_the_boot_rom_would_not_take() {
        let page = [1u8; 332];
        // a flash offset instead of an XIP address
        assert!(uf2_rp2040(&page, 0x001F_F000).is_err());
        // not sector aligned
        assert!(uf2_rp2040(&page, 0x101F_F100).is_err());
        // runs past the end of the window
        assert!(uf2_rp2040(&[1u8; 8192], 0x10FF_F000).is_err());
        assert!(uf2_rp2040(&page, 0x10FF_F000).is_ok());
        assert!(uf2_rp2040(&[], 0x1000_0000).is_err());
    }
}
