//! The RP2040's link, clock and randomness for the device loop.

use embedded_hal::digital::OutputPin;
use rp2040_hal::Timer;
use rp2040_hal::rosc::{Enabled, RingOscillator};
use rp2040_hal::uart::{
    Enabled as UartEnabled, ReadErrorType, UartDevice, UartPeripheral, ValidUartPinout,
};

/// Monotonic time from the 64-bit 1 MHz TIMER (never wraps in practice);
/// wall-clock time is the build time plus the uptime.
#[derive(Clone, Copy)]
pub struct Clock(pub Timer);

impl Clock {
    /// Microseconds since boot.
    pub fn micros(&self) -> u64 {
        self.0.get_counter().ticks()
    }
}

impl sensorchain_device::Clock for Clock {
    fn now_ms(&mut self) -> u64 {
        self.micros() / 1000
    }

    /// A lower bound of the real time (the board has no battery-backed
    /// clock): the build time plus the uptime. The ledger accepts
    /// timestamps in the past and refuses them only when ahead of it.
    fn unix_ms(&mut self) -> u64 {
        crate::BUILD_EPOCH_MS + self.now_ms()
    }
}

/// Why the UART link failed: a receive error. The device loop drops the
/// session, reconnects (a new handshake) and resends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, defmt::Format)]
pub enum LinkError {
    /// The 32-byte receive FIFO overflowed: bytes were lost.
    Overrun,
    /// A break condition (RX held low: the gateway's adapter unplugged?).
    Break,
    /// A parity error.
    Parity,
    /// A framing error (wrong baud rate, noise).
    Framing,
}

/// Longest silence inside a burst before `read` returns what it has, µs
/// (about 11 characters at 115200 baud).
const GAP_US: u64 = 1_000;

/// The gateway link: a UART, 115200 8N1, polled.
pub struct UartLink<D: UartDevice, P: ValidUartPinout<D>> {
    uart: UartPeripheral<UartEnabled, D, P>,
    clock: Clock,
}

impl<D: UartDevice, P: ValidUartPinout<D>> UartLink<D, P> {
    /// The link over an enabled UART.
    pub fn new(uart: UartPeripheral<UartEnabled, D, P>, clock: Clock) -> Self {
        UartLink { uart, clock }
    }
}

impl<D: UartDevice, P: ValidUartPinout<D>> sensorchain_device::Link for UartLink<D, P> {
    type Error = LinkError;

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), LinkError> {
        self.uart.write_full_blocking(bytes);
        Ok(())
    }

    fn read(&mut self, buf: &mut [u8], timeout_ms: u32) -> Result<usize, LinkError> {
        let start = self.clock.micros();
        let deadline = start + u64::from(timeout_ms) * 1000;
        let mut n = 0;
        let mut last = start;
        while n < buf.len() {
            match self.uart.read_raw(&mut buf[n..]) {
                Ok(k) => {
                    n += k;
                    last = self.clock.micros();
                }
                Err(nb::Error::WouldBlock) => {
                    let now = self.clock.micros();
                    if (n > 0 && now - last >= GAP_US) || (n == 0 && now >= deadline) {
                        break;
                    }
                }
                Err(nb::Error::Other(e)) => {
                    return Err(match e.err_type {
                        ReadErrorType::Overrun => LinkError::Overrun,
                        ReadErrorType::Break => LinkError::Break,
                        ReadErrorType::Parity => LinkError::Parity,
                        ReadErrorType::Framing => LinkError::Framing,
                    });
                }
            }
        }
        Ok(n)
    }

    /// Drops whatever waits in the receive FIFO (the rest of a frame of
    /// the failed session).
    fn reconnect(&mut self) -> Result<(), LinkError> {
        let mut junk = [0u8; 32];
        while let Ok(k) = self.uart.read_raw(&mut junk) {
            if k == 0 {
                break;
            }
        }
        Ok(())
    }
}

/// 32 bytes of the ring oscillator's RANDOMBIT, sampled 8 times per output
/// bit and XOR-folded. Only *extra* input to the DRBG (see main.rs): the
/// RP2040 has no vetted entropy source, and the ROSC bit is biased and
/// correlated with the system clock.
pub fn rosc_noise(rosc: &RingOscillator<Enabled>, clock: &Clock) -> [u8; 40] {
    let mut out = [0u8; 40];
    for byte in out[..32].iter_mut() {
        for bit in 0..8 {
            let mut v = false;
            for _ in 0..8 {
                v ^= rosc.get_random_bit();
                cortex_m::asm::delay(7);
            }
            *byte |= u8::from(v) << bit;
        }
    }
    // The microsecond count after sampling (varies with the ROSC's speed).
    out[32..].copy_from_slice(&clock.micros().to_le_bytes());
    out
}

/// Blinks the LED forever: `period_ms` on, `period_ms` off. What a board
/// without a debug probe shows when it refuses to run.
pub fn halt<P: OutputPin>(led: &mut P, clock: &mut Clock, period_ms: u32) -> ! {
    loop {
        let _ = led.set_high();
        sensorchain_board::app::pause(clock, period_ms);
        let _ = led.set_low();
        sensorchain_board::app::pause(clock, period_ms);
    }
}
