//! The few peripherals of QEMU's mps2-an386 this firmware uses, polled, no
//! interrupts: CMSDK APB UART0 (`0x4000_4000`), CMSDK APB timer 0
//! (`0x4000_0000`, 25 MHz), semihosting for storage and the console, and
//! stack painting. The only `unsafe` of the firmware is here (MMIO and
//! linker symbols); the device loop crate forbids it.

use core::convert::Infallible;
use core::sync::atomic::{AtomicU32, Ordering};

use sensorchain_device::storage::{PersistentState, STATE_LEN};

/// System clock of the MPS2 FPGA images (and of QEMU's model).
pub const SYSCLK_HZ: u32 = 25_000_000;

const UART0: usize = 0x4000_4000;
const UART_DATA: usize = 0x00;
const UART_STATE: usize = 0x04;
const UART_CTRL: usize = 0x08;
const UART_BAUDDIV: usize = 0x10;
const STATE_TX_FULL: u32 = 1 << 0;
const STATE_RX_FULL: u32 = 1 << 1;
const CTRL_TX_EN: u32 = 1 << 0;
const CTRL_RX_EN: u32 = 1 << 1;

const TIMER0: usize = 0x4000_0000;
const TIMER_CTRL: usize = 0x00;
const TIMER_VALUE: usize = 0x04;
const TIMER_RELOAD: usize = 0x08;

fn read(addr: usize) -> u32 {
    // SAFETY: a 4-byte aligned MMIO register of the mps2-an386 memory map.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

fn write(addr: usize, v: u32) {
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(addr as *mut u32, v) }
}

// ---------------------------------------------------------------------------
// Time: timer 0 counts down from 0xFFFF_FFFF at 25 MHz (wraps every 171 s);
// `ticks` extends it to 64 bits (polled far more often than it wraps).

static LAST: AtomicU32 = AtomicU32::new(u32::MAX);
static HIGH: AtomicU32 = AtomicU32::new(0);
static STARTED: AtomicU32 = AtomicU32::new(0);

/// 25 MHz ticks since the clock started.
pub fn ticks() -> u64 {
    let now = u32::MAX - read(TIMER0 + TIMER_VALUE);
    let last = LAST.swap(now, Ordering::Relaxed);
    if now < last && STARTED.load(Ordering::Relaxed) == 1 {
        HIGH.fetch_add(1, Ordering::Relaxed);
    }
    (u64::from(HIGH.load(Ordering::Relaxed)) << 32) | u64::from(now)
}

/// The device's clock (uptime plus the provisioned epoch).
pub struct Clock;

impl Clock {
    /// Starts timer 0.
    pub fn new() -> Self {
        write(TIMER0 + TIMER_CTRL, 0);
        write(TIMER0 + TIMER_RELOAD, u32::MAX);
        write(TIMER0 + TIMER_VALUE, u32::MAX);
        write(TIMER0 + TIMER_CTRL, 1);
        LAST.store(0, Ordering::Relaxed);
        STARTED.store(1, Ordering::Relaxed);
        Clock
    }

    /// 25 MHz ticks.
    pub fn ticks(&mut self) -> u64 {
        ticks()
    }
}

impl sensorchain_device::Clock for Clock {
    fn now_ms(&mut self) -> u64 {
        // ticks / 25_000 as (ticks >> 3) / 3125 in 32-bit halves: no 64-bit
        // division routine (about 900 bytes) in the image.
        let t = ticks() >> 3;
        let (hi, lo) = ((t >> 32) as u32, t as u32);
        let q_hi = hi / 3125;
        let r = u64::from(hi % 3125) << 32 | u64::from(lo);
        // r < 3125 · 2^32: split once more.
        let q_lo = (r >> 16) as u32 / 3125;
        let r2 = ((r >> 16) as u32 % 3125) << 16 | (r as u32 & 0xFFFF);
        (u64::from(q_hi) << 32) + (u64::from(q_lo) << 16) + u64::from(r2 / 3125)
    }
    fn unix_ms(&mut self) -> u64 {
        crate::provision::EPOCH_MS + self.now_ms()
    }
}

/// Busy-wait delay for the sensor drivers.
#[allow(dead_code)]
pub struct Delay;

impl embedded_hal::delay::DelayNs for Delay {
    fn delay_ns(&mut self, ns: u32) {
        let end = ticks() + u64::from(ns) / 40 + 1;
        while ticks() < end {}
    }
}

// ---------------------------------------------------------------------------
// UART0: the gateway link (QEMU `-serial tcp:HOST:PORT`).

/// CMSDK APB UART 0, polled.
pub struct Uart0;

impl Uart0 {
    /// Enables TX and RX at 115200 baud (QEMU ignores the rate but wants a
    /// divider of at least 16).
    pub fn new() -> Self {
        write(UART0 + UART_BAUDDIV, SYSCLK_HZ / 115_200);
        write(UART0 + UART_CTRL, CTRL_TX_EN | CTRL_RX_EN);
        Uart0
    }
}

impl sensorchain_device::Link for Uart0 {
    type Error = Infallible;

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), Infallible> {
        for &b in bytes {
            while read(UART0 + UART_STATE) & STATE_TX_FULL != 0 {}
            write(UART0 + UART_DATA, u32::from(b));
        }
        Ok(())
    }

    fn read(&mut self, buf: &mut [u8], timeout_ms: u32) -> Result<usize, Infallible> {
        let end = ticks() + u64::from(timeout_ms) * u64::from(SYSCLK_HZ / 1000);
        let mut n = 0;
        while n < buf.len() {
            if read(UART0 + UART_STATE) & STATE_RX_FULL != 0 {
                buf[n] = read(UART0 + UART_DATA) as u8;
                n += 1;
                continue;
            }
            if n > 0 {
                // Give the next byte of a burst a moment (QEMU delivers the
                // TCP stream one byte at a time).
                let gap = ticks() + 2_500;
                while ticks() < gap && read(UART0 + UART_STATE) & STATE_RX_FULL == 0 {}
                if read(UART0 + UART_STATE) & STATE_RX_FULL == 0 {
                    break;
                }
                continue;
            }
            if ticks() >= end {
                break;
            }
        }
        Ok(n)
    }
}

// ---------------------------------------------------------------------------
// Storage: the 16-byte persistent state in a host file through semihosting
// (QEMU's stand-in for a flash page; a board writes flash instead).

const STATE_FILE: &[u8] = b"sensorchain-device.state\0";

/// Persistent state in `sensorchain-device.state` in QEMU's working
/// directory.
pub struct HostFileStorage;

impl HostFileStorage {
    /// The storage (nothing is opened until load or save).
    pub fn open() -> Self {
        HostFileStorage
    }

    fn open_file(mode: usize) -> Option<usize> {
        let args = [STATE_FILE.as_ptr() as usize, mode, STATE_FILE.len() - 1];
        // SAFETY: SYS_OPEN with a NUL-terminated name and its length.
        let fd = unsafe { cortex_m_semihosting::syscall(cortex_m_semihosting::nr::OPEN, &args) };
        (fd != usize::MAX).then_some(fd)
    }

    fn close(fd: usize) {
        // SAFETY: SYS_CLOSE of a descriptor SYS_OPEN returned.
        unsafe { cortex_m_semihosting::syscall(cortex_m_semihosting::nr::CLOSE, &[fd]) };
    }
}

/// The host refused the file.
#[derive(Debug)]
pub struct StorageError;

impl sensorchain_device::Storage for HostFileStorage {
    type Error = StorageError;

    fn load(&mut self) -> Result<PersistentState, StorageError> {
        let Some(fd) = Self::open_file(cortex_m_semihosting::nr::open::R_BINARY) else {
            return Ok(PersistentState::default());
        };
        let mut b = [0xFFu8; STATE_LEN];
        let args = [fd, b.as_mut_ptr() as usize, STATE_LEN];
        // SAFETY: SYS_READ into a buffer of STATE_LEN bytes.
        let left = unsafe { cortex_m_semihosting::syscall(cortex_m_semihosting::nr::READ, &args) };
        Self::close(fd);
        if left != 0 {
            return Ok(PersistentState::default());
        }
        Ok(PersistentState::from_bytes(&b))
    }

    fn save(&mut self, state: &PersistentState) -> Result<(), StorageError> {
        let fd =
            Self::open_file(cortex_m_semihosting::nr::open::W_TRUNC_BINARY).ok_or(StorageError)?;
        let b = state.to_bytes();
        let args = [fd, b.as_ptr() as usize, STATE_LEN];
        // SAFETY: SYS_WRITE of STATE_LEN bytes.
        let left = unsafe { cortex_m_semihosting::syscall(cortex_m_semihosting::nr::WRITE, &args) };
        Self::close(fd);
        if left != 0 {
            return Err(StorageError);
        }
        Ok(())
    }
}

/// Extra DRBG input: the host's time through semihosting (SYS_TIME seconds,
/// SYS_CLOCK centiseconds). Not secret; it only adds to the provisioned
/// entropy and the boot counter.
pub fn boot_noise() -> [u8; 8] {
    // SAFETY: SYS_TIME and SYS_CLOCK take no argument block.
    let (t, c) = unsafe {
        (
            cortex_m_semihosting::syscall1(cortex_m_semihosting::nr::TIME, 0),
            cortex_m_semihosting::syscall1(cortex_m_semihosting::nr::CLOCK, 0),
        )
    };
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&(t as u32).to_le_bytes());
    b[4..].copy_from_slice(&(c as u32).to_le_bytes());
    b
}

// ---------------------------------------------------------------------------
// Stack painting: fill the 64 KiB below the current stack pointer with a
// pattern (at boot, and again at the start of each measured phase); the
// peak is the deepest word no longer holding it.

const PAINT: u32 = 0xC0FF_EE55;
const PAINT_BYTES: usize = 64 * 1024;

fn sp() -> usize {
    cortex_m::register::msp::read() as usize
}

fn stack_top() -> usize {
    unsafe extern "C" {
        static _stack_start: u32;
    }
    // Only the address of the linker symbol is taken.
    core::ptr::addr_of!(_stack_start) as usize
}

/// Paints the stack below the current frame.
#[inline(never)]
pub fn paint_stack() {
    let low = stack_top() - PAINT_BYTES;
    let high = sp() - 256;
    let mut a = low;
    while a < high {
        // SAFETY: unused stack memory inside RAM, below the live frames.
        unsafe { core::ptr::write_volatile(a as *mut u32, PAINT) };
        a += 4;
    }
}

/// Bytes of stack in use at the caller (from the top to the stack pointer).
#[inline(never)]
pub fn stack_depth() -> usize {
    stack_top() - sp()
}

/// The deepest stack use since [`paint_stack`], in bytes.
pub fn stack_peak() -> usize {
    let top = stack_top();
    let mut a = top - PAINT_BYTES;
    // SAFETY: reads of painted RAM.
    while a < top && unsafe { core::ptr::read_volatile(a as *const u32) } == PAINT {
        a += 4;
    }
    top - a
}
