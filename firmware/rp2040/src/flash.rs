//! The RP2040's QSPI flash: reading the key page, and erasing and
//! programming the two state sectors through the boot ROM.
//!
//! The flash is executed in place (XIP). While the ROM erases or programs
//! it, XIP is off: the code that drives the ROM runs from RAM (the
//! `.data.ram_func` section, copied to RAM by cortex-m-rt at boot), with
//! interrupts disabled, and core 1 is never started (it waits in the boot
//! ROM). The ROM call sequence and the RAM trampoline follow the
//! `rp2040-flash` crate (MIT OR Apache-2.0), which links an older
//! rp2040-hal than ours: connect the flash, leave XIP, erase and/or
//! program, flush the XIP cache, and re-enter XIP with a RAM copy of the
//! second-stage boot loader (the fast QSPI mode, not the ROM's slow one).

use core::ptr::read_volatile;

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};
use rp2040_hal::rom_data;
use sensorchain_device::provision::KEY_PAGE_LEN;

/// Where the flash appears in the address space (XIP, cached).
pub const XIP_BASE: u32 = 0x1000_0000;
/// Erase granularity of the QSPI flash (4 KiB sectors).
pub const SECTOR: usize = 4096;
/// Program granularity of the ROM's `flash_range_program`.
pub const PAGE: usize = 256;

unsafe extern "C" {
    // memory.x
    static __sensorchain_state_start: u8;
    static __sensorchain_state_end: u8;
    static __sensorchain_key_page: u8;
}

/// Address of the key page (the last 4 KiB sector, from memory.x).
pub fn key_page_address() -> u32 {
    // Only the linker symbol's address is taken.
    core::ptr::addr_of!(__sensorchain_key_page) as u32
}

/// The key page's bytes as they are in flash.
pub fn read_key_page() -> [u8; KEY_PAGE_LEN] {
    let base = key_page_address() as usize;
    let mut b = [0u8; KEY_PAGE_LEN];
    for (i, x) in b.iter_mut().enumerate() {
        // SAFETY: inside the KEYPAGE region of memory.x, memory-mapped flash.
        *x = unsafe { read_volatile((base + i) as *const u8) };
    }
    b
}

/// The flash driver failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, defmt::Format)]
pub enum FlashError {
    /// Offset or length not aligned to the driver's granularity.
    NotAligned,
    /// Outside the state sectors.
    OutOfBounds,
}

impl NorFlashError for FlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            FlashError::NotAligned => NorFlashErrorKind::NotAligned,
            FlashError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
        }
    }
}

/// The two state sectors (STATE in memory.x) as a NOR flash: offsets are
/// relative to their start.
pub struct StateFlash {
    /// First byte, as an offset into the flash chip.
    start: u32,
    len: u32,
}

impl StateFlash {
    /// The STATE region of memory.x.
    pub fn new() -> Self {
        let start = core::ptr::addr_of!(__sensorchain_state_start) as u32;
        let end = core::ptr::addr_of!(__sensorchain_state_end) as u32;
        StateFlash {
            start: start - XIP_BASE,
            len: end - start,
        }
    }

    fn check(&self, offset: u32, len: usize, align: usize) -> Result<(), FlashError> {
        if !(offset as usize).is_multiple_of(align) || !len.is_multiple_of(align) {
            return Err(FlashError::NotAligned);
        }
        if len > self.len as usize || offset > self.len - len as u32 {
            return Err(FlashError::OutOfBounds);
        }
        Ok(())
    }
}

impl ErrorType for StateFlash {
    type Error = FlashError;
}

impl ReadNorFlash for StateFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
        self.check(offset, bytes.len(), 1)?;
        let base = (XIP_BASE + self.start + offset) as usize;
        for (i, x) in bytes.iter_mut().enumerate() {
            // SAFETY: inside the STATE region (checked), memory-mapped flash.
            *x = unsafe { read_volatile((base + i) as *const u8) };
        }
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.len as usize
    }
}

impl NorFlash for StateFlash {
    /// Any word-aligned range: a partial 256-byte page is programmed with
    /// `0xFF` around the data, which leaves those bytes as they are.
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = SECTOR;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashError> {
        if to < from {
            return Err(FlashError::OutOfBounds);
        }
        self.check(from, (to - from) as usize, SECTOR)?;
        // SAFETY: whole sectors inside STATE; see `rom_flash_op`.
        unsafe { rom_flash_op(self.start + from, to - from, None) };
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        self.check(offset, bytes.len(), Self::WRITE_SIZE)?;
        let mut done = 0usize;
        while done < bytes.len() {
            let at = offset as usize + done;
            let page_start = at - at % PAGE;
            let in_page = at - page_start;
            let n = (PAGE - in_page).min(bytes.len() - done);
            // The ROM reads the data while XIP is off: it must be in RAM
            // (this buffer is on the stack).
            let mut buf = [0xFFu8; PAGE];
            buf[in_page..in_page + n].copy_from_slice(&bytes[done..done + n]);
            // SAFETY: one 256-byte page inside STATE; see `rom_flash_op`.
            unsafe { rom_flash_op(self.start + page_start as u32, PAGE as u32, Some(&buf)) };
            done += n;
        }
        Ok(())
    }
}

/// The ROM functions the RAM trampoline calls, resolved beforehand (the
/// lookup code is in flash).
#[repr(C)]
struct RomFns {
    connect_internal_flash: unsafe extern "C" fn(),
    flash_exit_xip: unsafe extern "C" fn(),
    flash_range_erase: Option<unsafe extern "C" fn(u32, usize, u32, u8)>,
    flash_range_program: Option<unsafe extern "C" fn(u32, *const u8, usize)>,
    flash_flush_cache: unsafe extern "C" fn(),
    flash_enter_cmd_xip: unsafe extern "C" fn(),
}

/// Erases `len` bytes at flash offset `addr` (`data` = `None`, whole
/// sectors) or programs `data` there (whole 256-byte pages, already
/// erased or only clearing bits).
///
/// # Safety
///
/// `addr` and `len` must be aligned as above and inside the flash, and
/// not hold code or data in use. Nothing else may touch the flash
/// meanwhile: interrupts are disabled here, core 1 must not run code from
/// flash (this firmware never starts it), and no DMA may read flash.
unsafe fn rom_flash_op(addr: u32, len: u32, data: Option<&[u8; PAGE]>) {
    cortex_m::interrupt::free(|_| {
        // The boot loader in RAM, to re-enter fast XIP afterwards.
        let mut boot2 = [0u32; 64];
        // SAFETY: copies the 256-byte BOOT2 region (word aligned) to RAM.
        unsafe { rom_data::memcpy44(boot2.as_mut_ptr(), XIP_BASE as *const u32, 256) };
        // SAFETY: boot2's code starts at its first byte; +1 is the Thumb bit.
        let enter_xip: unsafe extern "C" fn() =
            unsafe { core::mem::transmute((boot2.as_ptr() as *const u8).wrapping_add(1)) };
        let fns = RomFns {
            connect_internal_flash: rom_data::connect_internal_flash::ptr(),
            flash_exit_xip: rom_data::flash_exit_xip::ptr(),
            flash_range_erase: data.is_none().then(rom_data::flash_range_erase::ptr),
            flash_range_program: data.is_some().then(rom_data::flash_range_program::ptr),
            flash_flush_cache: rom_data::flash_flush_cache::ptr(),
            flash_enter_cmd_xip: enter_xip,
        };
        let ptr = data.map_or(core::ptr::null(), |d| d.as_ptr());
        // SAFETY: the caller's contract; the trampoline is in RAM and calls
        // only ROM functions and the RAM copy of boot2.
        unsafe { ram_trampoline(addr, len, ptr, &fns) };
        core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
    });
}

/// Runs from RAM: connect, exit XIP, erase (if any), program (if any),
/// flush the cache, enter XIP. Assembly so that nothing (a bounds check,
/// an intrinsic) can call into flash while XIP is off.
#[inline(never)]
#[unsafe(link_section = ".data.ram_func")]
unsafe extern "C" fn ram_trampoline(addr: u32, len: u32, data: *const u8, fns: *const RomFns) {
    // SAFETY: see `rom_flash_op`.
    unsafe {
        core::arch::asm!(
            "mov r8, r0",
            "mov r9, r2",
            "mov r10, r1",
            "ldr r4, [{fns}, #0]",
            "blx r4",               // connect_internal_flash()
            "ldr r4, [{fns}, #4]",
            "blx r4",               // flash_exit_xip()
            "mov r0, r8",           // addr
            "mov r1, r10",          // len
            "movs r2, #1",
            "lsls r2, r2, #31",     // block size 1 << 31: 4 KiB sector erases only
            "movs r3, #0",          // block command (unused)
            "ldr r4, [{fns}, #8]",
            "cmp r4, #0",
            "beq 1f",
            "blx r4",               // flash_range_erase(addr, len, 1 << 31, 0)
            "1:",
            "mov r0, r8",           // addr
            "mov r1, r9",           // data
            "mov r2, r10",          // len
            "ldr r4, [{fns}, #12]",
            "cmp r4, #0",
            "beq 1f",
            "blx r4",               // flash_range_program(addr, data, len)
            "1:",
            "ldr r4, [{fns}, #16]",
            "blx r4",               // flash_flush_cache()
            "ldr r4, [{fns}, #20]",
            "blx r4",               // enter XIP (boot2 copy)
            fns = in(reg) fns,
            in("r0") addr,
            in("r1") len,
            in("r2") data,
            out("r3") _,
            out("r4") _,
            // r8-r10 keep r0-r2 across the calls (callee-saved in the C ABI
            // the ROM follows); they cannot be inputs directly
            // (rust-lang/rust#99071).
            out("r8") _,
            out("r9") _,
            out("r10") _,
            clobber_abi("C"),
        );
    }
}
