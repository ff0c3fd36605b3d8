//! The nRF52840's pages, clock, link, I2C bus and RNG for the device loop.

use core::convert::Infallible;
use core::ptr::read_volatile;
use core::sync::atomic::{AtomicU32, Ordering};

use embedded_hal::digital::OutputPin;
use embedded_hal::i2c::{ErrorKind, ErrorType, I2c, NoAcknowledgeSource, Operation};
use nrf52840_hal::pac;
use nrf52840_hal::twim::{self, Twim};
use nrf52840_hal::uarte::{UarteRx, UarteTx};
use sensorchain_device::provision::KEY_PAGE_LEN;

unsafe extern "C" {
    // memory.x
    static __sensorchain_state_start: u8;
    static __sensorchain_state_end: u8;
    static __sensorchain_key_page: u8;
}

/// Address of the key page (from memory.x).
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

/// The two state pages (STATE in memory.x), for the HAL's NVMC driver.
pub fn state_pages() -> &'static mut [u8] {
    let start = core::ptr::addr_of!(__sensorchain_state_start) as usize;
    let end = core::ptr::addr_of!(__sensorchain_state_end) as usize;
    // SAFETY: the STATE region is reserved for this in memory.x (no code or
    // data is linked there), page aligned, and this is called once: the
    // slice is the NVMC driver's only handle on it.
    unsafe { core::slice::from_raw_parts_mut(start as *mut u8, end - start) }
}

// ---------------------------------------------------------------------------
// Clock: TIMER1 counts microseconds (16 MHz / 2^4) in 32 bits; `micros`
// extends it to 64 bits, which needs a call at least every 71 minutes (the
// loop calls it all the time: every reading, every byte wait).

static HIGH: AtomicU32 = AtomicU32::new(0);
static LAST: AtomicU32 = AtomicU32::new(0);

fn timer1() -> &'static pac::timer0::RegisterBlock {
    // SAFETY: TIMER1 is owned by `Clock` (taken in `Clock::new`); after
    // that only the capture task and CC[1] are touched, here.
    unsafe { &*pac::TIMER1::ptr() }
}

/// Monotonic time from TIMER1; wall-clock time is the build time plus the
/// uptime.
#[derive(Clone, Copy)]
pub struct Clock(());

impl Clock {
    /// Starts TIMER1 as a free-running 1 MHz, 32-bit counter.
    pub fn new(timer: pac::TIMER1) -> Self {
        timer.tasks_stop.write(|w| unsafe { w.bits(1) });
        timer.mode.write(|w| w.mode().timer());
        timer.bitmode.write(|w| w.bitmode()._32bit());
        // SAFETY: 4 is a valid prescaler (0..=9): 16 MHz / 16 = 1 MHz.
        timer.prescaler.write(|w| unsafe { w.prescaler().bits(4) });
        timer.shorts.reset();
        timer.tasks_clear.write(|w| unsafe { w.bits(1) });
        timer.tasks_start.write(|w| unsafe { w.bits(1) });
        Clock(())
    }

    /// Microseconds since `new`.
    pub fn micros(&self) -> u64 {
        cortex_m::interrupt::free(|_| {
            let t = timer1();
            // SAFETY: 1 triggers the capture task.
            t.tasks_capture[1].write(|w| unsafe { w.bits(1) });
            let now = t.cc[1].read().bits();
            let mut high = HIGH.load(Ordering::Relaxed);
            if now < LAST.load(Ordering::Relaxed) {
                high = high.wrapping_add(1);
                HIGH.store(high, Ordering::Relaxed);
            }
            LAST.store(now, Ordering::Relaxed);
            (u64::from(high) << 32) | u64::from(now)
        })
    }
}

impl sensorchain_device::Clock for Clock {
    fn now_ms(&mut self) -> u64 {
        self.micros() / 1000
    }

    /// A lower bound of the real time (no battery-backed clock): the build
    /// time plus the uptime. The ledger accepts timestamps in the past and
    /// refuses them only when ahead of it.
    fn unix_ms(&mut self) -> u64 {
        crate::BUILD_EPOCH_MS + self.now_ms()
    }
}

// ---------------------------------------------------------------------------
// The gateway link: UARTE0, 115200 8N1. Transmit through the HAL's
// buffered half (EasyDMA from a RAM buffer); receive one byte per EasyDMA
// transfer, polled. Between transfers the UARTE keeps receiving into its
// FIFO; the loop polls far faster than a byte time (87 µs) while it waits
// for an answer, and the gateway sends nothing while the device computes
// (request/response).

/// Why the UART link failed. The device loop drops the session,
/// reconnects (a new handshake) and resends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, defmt::Format)]
pub enum LinkError {
    /// A transmit DMA transfer failed.
    Transmit,
    /// A receive error (framing, break, overrun).
    Receive,
}

/// Longest silence inside a burst before `read` returns what it has, µs.
const GAP_US: u64 = 1_000;

/// The gateway link over UARTE0's two halves.
pub struct UarteLink {
    tx: UarteTx<pac::UARTE0>,
    rx: UarteRx<pac::UARTE0>,
    clock: Clock,
}

impl UarteLink {
    /// The link over the split UARTE.
    pub fn new(tx: UarteTx<pac::UARTE0>, rx: UarteRx<pac::UARTE0>, clock: Clock) -> Self {
        UarteLink { tx, rx, clock }
    }
}

impl sensorchain_device::Link for UarteLink {
    type Error = LinkError;

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), LinkError> {
        use embedded_io::Write;
        self.tx.write_all(bytes).map_err(|_| LinkError::Transmit)?;
        self.tx.flush().map_err(|_| LinkError::Transmit)
    }

    fn read(&mut self, buf: &mut [u8], timeout_ms: u32) -> Result<usize, LinkError> {
        use embedded_io::{Read, ReadReady};
        let start = self.clock.micros();
        let deadline = start + u64::from(timeout_ms) * 1000;
        let mut n = 0;
        let mut last = start;
        while n < buf.len() {
            // Starts a one-byte reception if none is running.
            if self.rx.read_ready().map_err(|_| LinkError::Receive)? {
                n += self
                    .rx
                    .read(&mut buf[n..n + 1])
                    .map_err(|_| LinkError::Receive)?;
                last = self.clock.micros();
                continue;
            }
            let now = self.clock.micros();
            if (n > 0 && now - last >= GAP_US) || (n == 0 && now >= deadline) {
                break;
            }
        }
        Ok(n)
    }
}

// ---------------------------------------------------------------------------
// I2C: TWIM0 through embedded-hal 1.0, with an error type defmt can print
// (the HAL's has no defmt::Format).

/// Why an I2C transaction failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, defmt::Format)]
pub enum I2cError {
    /// No device answered its address (wiring, power, address pins).
    AddressNack,
    /// The device refused a data byte.
    DataNack,
    /// Receive overrun.
    Overrun,
    /// A transfer was cut short, or a buffer did not fit EasyDMA.
    Transfer,
}

impl embedded_hal::i2c::Error for I2cError {
    fn kind(&self) -> ErrorKind {
        match self {
            I2cError::AddressNack => ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address),
            I2cError::DataNack => ErrorKind::NoAcknowledge(NoAcknowledgeSource::Data),
            I2cError::Overrun => ErrorKind::Overrun,
            I2cError::Transfer => ErrorKind::Other,
        }
    }
}

/// TWIM0 as an embedded-hal 1.0 bus.
pub struct I2cBus(pub Twim<pac::TWIM0>);

impl ErrorType for I2cBus {
    type Error = I2cError;
}

impl I2c for I2cBus {
    fn transaction(&mut self, address: u8, ops: &mut [Operation<'_>]) -> Result<(), I2cError> {
        self.0.transaction(address, ops).map_err(|e| match e {
            twim::Error::AddressNack => I2cError::AddressNack,
            twim::Error::DataNack => I2cError::DataNack,
            twim::Error::Overrun => I2cError::Overrun,
            _ => I2cError::Transfer,
        })
    }
}

// ---------------------------------------------------------------------------
// Randomness: the RNG peripheral (bias correction on) behind rand_core
// 0.10's traits, which the device crate takes.

/// The hardware RNG as a `rand_core::CryptoRng`.
pub struct HwRng(pub nrf52840_hal::Rng);

impl rand_core::TryRng for HwRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(self.0.random_u32())
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.0.random_u64())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.0.random(dst);
        Ok(())
    }
}

/// The RNG peripheral is a true RNG (thermal noise) and `Rng::new` turns
/// its bias correction on.
impl rand_core::TryCryptoRng for HwRng {}

/// Blinks an active-low LED forever: `period_ms` on, `period_ms` off.
/// What a board without a debug probe shows when it refuses to run.
pub fn halt<P: OutputPin>(led: &mut P, clock: &mut Clock, period_ms: u32) -> ! {
    loop {
        let _ = led.set_low();
        sensorchain_board::app::pause(clock, period_ms);
        let _ = led.set_high();
        sensorchain_board::app::pause(clock, period_ms);
    }
}
