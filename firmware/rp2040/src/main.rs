//! sensorchain sensor firmware for the Raspberry Pi RP2040 (Pico and
//! compatible boards with 2 MiB of flash).
//!
//! - Identity: the key page in the last flash sector (`0x101F_F000`),
//!   written by `sensorchain provision`. Blank, torn or corrupted: the
//!   firmware logs why and blinks the LED slowly, never runs.
//! - Persistent state (sequence ceiling, boot counter): the state log in
//!   the two sectors below it (`0x101F_D000`), erased and programmed
//!   through the boot ROM from RAM (src/flash.rs).
//! - Randomness: the device crate's `Drbg` (the RP2040 has no hardware
//!   TRNG), seeded with the key page's secret entropy, the boot counter
//!   (saved before anything is drawn) and ring-oscillator noise as extra
//!   input.
//! - Gateway link: UART0 on GP0 (TX) / GP1 (RX), 115200 8N1.
//! - Sensor: a MAX30205 on I2C0, GP4 (SDA) / GP5 (SCL), 100 kHz.
//! - Log: defmt over RTT (`probe-rs run`). LED (GP25): slow blink = not
//!   provisioned or storage failure, fast blink = stopped on a final
//!   error (identity refused by the gateway, untrusted gateway).
#![no_std]
#![no_main]

mod board;
mod flash;

use defmt::{error, info, warn};
use defmt_rtt as _;
use panic_probe as _;
use rp2040_hal::clocks::{Clock as _, init_clocks_and_plls};
use rp2040_hal::fugit::RateExtU32;
use rp2040_hal::gpio::{FunctionI2C, FunctionUart, Pin, PullNone, PullUp};
use rp2040_hal::uart::{DataBits, StopBits, UartConfig, UartPeripheral};
use rp2040_hal::{I2C, Sio, Timer, Watchdog, pac};
use sensorchain_board::app::{self, Schedule};
use sensorchain_board::storage::FlashStorage;
use sensorchain_device::sensor::max30205::{self, Max30205};
use sensorchain_device::{Device, Drbg};

include!(concat!(env!("OUT_DIR"), "/build_epoch.rs"));

/// The second-stage boot loader for the W25Q080-class flash of the Pico,
/// first 256 bytes of flash.
#[unsafe(link_section = ".boot2")]
#[used]
pub static BOOT2: [u8; 256] = rp2040_boot2::BOOT_LOADER_W25Q080;

/// The Pico's crystal.
const XTAL_FREQ_HZ: u32 = 12_000_000;

/// LED blink half-periods, ms.
const BLINK_NOT_PROVISIONED: u32 = 1_000;
const BLINK_STOPPED: u32 = 150;

#[rp2040_hal::entry]
fn main() -> ! {
    info!(
        "sensorchain rp2040 firmware {=str}",
        env!("CARGO_PKG_VERSION")
    );
    let Some(mut pac) = pac::Peripherals::take() else {
        panic!("peripherals taken twice");
    };
    let mut watchdog = Watchdog::new(pac.WATCHDOG);
    let Ok(clocks) = init_clocks_and_plls(
        XTAL_FREQ_HZ,
        pac.XOSC,
        pac.CLOCKS,
        pac.PLL_SYS,
        pac.PLL_USB,
        &mut pac.RESETS,
        &mut watchdog,
    ) else {
        panic!("clock initialisation failed");
    };
    let sio = Sio::new(pac.SIO);
    let pins = rp2040_hal::gpio::Pins::new(
        pac.IO_BANK0,
        pac.PADS_BANK0,
        sio.gpio_bank0,
        &mut pac.RESETS,
    );
    let mut led = pins.gpio25.into_push_pull_output();
    let mut clock = board::Clock(Timer::new(pac.TIMER, &mut pac.RESETS, &clocks));

    // The identity: refuse to run without a valid key page.
    let key_page = flash::read_key_page();
    let Some(page) = app::key_page(&key_page, flash::key_page_address()) else {
        board::halt(&mut led, &mut clock, BLINK_NOT_PROVISIONED);
    };

    // Persistent state; Device::new counts this boot and saves it before
    // any randomness is drawn.
    let storage = match FlashStorage::open(flash::StateFlash::new()) {
        Ok(s) => s,
        Err(e) => {
            error!("state flash: {}", e);
            board::halt(&mut led, &mut clock, BLINK_NOT_PROVISIONED);
        }
    };
    let mut device = match Device::new(page.keypair(), app::device_config(&page), storage) {
        Ok(d) => d,
        Err(e) => {
            error!("saving the boot counter failed: {}", e);
            board::halt(&mut led, &mut clock, BLINK_NOT_PROVISIONED);
        }
    };
    info!(
        "boot {=u64}, next sequence {=u64}",
        device.boot_count(),
        device.next_sequence()
    );

    // Randomness: no hardware TRNG on the RP2040. The DRBG's security rests
    // on the key page's secret entropy and on the boot counter never
    // repeating (saved above, before this); the ring oscillator adds
    // unpredictable bits on top, so even a state page rolled back by an
    // attacker with flash access does not replay an earlier boot's stream.
    let rosc = rp2040_hal::rosc::RingOscillator::new(pac.ROSC).initialize();
    let noise = board::rosc_noise(&rosc, &clock);
    let mut rng = Drbg::new(&page.entropy, device.boot_count(), &noise);

    // The gateway link: UART0, GP0 = TX, GP1 = RX (pulled up: idle high
    // when nothing is connected).
    let uart_pins = (
        pins.gpio0.reconfigure::<FunctionUart, PullNone>(),
        pins.gpio1.reconfigure::<FunctionUart, PullUp>(),
    );
    let uart = match UartPeripheral::new(pac.UART0, uart_pins, &mut pac.RESETS).enable(
        UartConfig::new(115_200.Hz(), DataBits::Eight, None, StopBits::One),
        clocks.peripheral_clock.freq(),
    ) {
        Ok(u) => u,
        Err(_) => panic!("UART0 configuration refused"),
    };
    let mut link = board::UartLink::new(uart, clock);

    // The thermometer: MAX30205 on I2C0, GP4 = SDA, GP5 = SCL (internal
    // pull-ups on; breakout boards usually add 4.7 kΩ ones).
    let sda: Pin<_, FunctionI2C, PullUp> = pins.gpio4.reconfigure();
    let scl: Pin<_, FunctionI2C, PullUp> = pins.gpio5.reconfigure();
    let i2c = I2C::i2c0(
        pac.I2C0,
        sda,
        scl,
        100.kHz(),
        &mut pac.RESETS,
        &clocks.system_clock,
    );
    let mut thermometer = Max30205::new(i2c, max30205::DEFAULT_ADDRESS);
    if let Err(e) = thermometer.init() {
        // Measurements retry (with backoff) until the sensor answers.
        warn!("MAX30205 init: {}", e);
    }

    let stopped = app::stream(
        &mut device,
        &mut link,
        &mut clock,
        &mut rng,
        &mut thermometer,
        &Schedule::default(),
    );
    error!("stopped: {}", stopped);
    board::halt(&mut led, &mut clock, BLINK_STOPPED)
}
