//! sensorchain sensor firmware for the Nordic nRF52840 (pins of the
//! nRF52840-DK, PCA10056).
//!
//! - Identity: the key page at `0x000F_E000`, written by `sensorchain
//!   provision`. Blank, torn or corrupted: the firmware logs why and blinks
//!   LED1 slowly, never runs.
//! - Persistent state (sequence ceiling, boot counter): the state log in
//!   the two pages below it (`0x000F_C000`) through the HAL's NVMC driver.
//! - Randomness: the RNG peripheral (a true RNG, bias correction on).
//! - Gateway link: UARTE0, TX P0.06 / RX P0.08, 115200 8N1 (on the DK these
//!   are wired to the on-board J-Link's virtual COM port).
//! - Sensor: a MAX30205 on TWIM0, SDA P0.26 / SCL P0.27 (the DK's Arduino
//!   header I2C pins), 100 kHz.
//! - Log: defmt over RTT (`probe-rs run`). LED1 (P0.13): slow blink = not
//!   provisioned or storage failure, fast blink = stopped on a final error
//!   (identity refused by the gateway, untrusted gateway).
#![no_std]
#![no_main]

mod board;

use cortex_m_rt::entry;
use defmt::{error, info, warn};
use defmt_rtt as _;
use nrf52840_hal::clocks::Clocks;
use nrf52840_hal::gpio::{Level, p0};
use nrf52840_hal::nvmc::Nvmc;
use nrf52840_hal::twim::{self, Twim};
use nrf52840_hal::uarte::{self, Baudrate, Parity, Uarte};
use nrf52840_hal::{Rng, pac};
use panic_probe as _;
use sensorchain_board::app::{self, Schedule};
use sensorchain_board::storage::FlashStorage;
use sensorchain_device::Device;
use sensorchain_device::sensor::max30205::{self, Max30205};

include!(concat!(env!("OUT_DIR"), "/build_epoch.rs"));

/// LED blink half-periods, ms.
const BLINK_NOT_PROVISIONED: u32 = 1_000;
const BLINK_STOPPED: u32 = 150;

#[entry]
fn main() -> ! {
    info!(
        "sensorchain nrf52840 firmware {=str}",
        env!("CARGO_PKG_VERSION")
    );
    let Some(p) = pac::Peripherals::take() else {
        panic!("peripherals taken twice");
    };
    // The crystal: the UART's baud rate wants the accurate 64 MHz clock.
    let _clocks = Clocks::new(p.CLOCK).enable_ext_hfosc();
    let port0 = p0::Parts::new(p.P0);
    let mut led = port0.p0_13.into_push_pull_output(Level::High);
    let mut clock = board::Clock::new(p.TIMER1);

    // The identity: refuse to run without a valid key page.
    let key_page = board::read_key_page();
    let Some(page) = app::key_page(&key_page, board::key_page_address()) else {
        board::halt(&mut led, &mut clock, BLINK_NOT_PROVISIONED);
    };

    // Persistent state; Device::new counts this boot and saves it.
    let nvmc = Nvmc::new(p.NVMC, board::state_pages());
    let storage = match FlashStorage::open(nvmc) {
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

    let mut rng = board::HwRng(Rng::new(p.RNG));

    // The gateway link: UARTE0, P0.06 = TX, P0.08 = RX.
    let uart = Uarte::new(
        p.UARTE0,
        uarte::Pins {
            txd: port0.p0_06.into_push_pull_output(Level::High).degrade(),
            rxd: port0.p0_08.into_floating_input().degrade(),
            cts: None,
            rts: None,
        },
        Parity::EXCLUDED,
        Baudrate::BAUD115200,
    );
    let (Some(tx_buf), Some(rx_buf)) = (
        cortex_m::singleton!(: [u8; 64] = [0; 64]),
        cortex_m::singleton!(: [u8; 1] = [0; 1]),
    ) else {
        panic!("UART buffers taken twice");
    };
    let Ok((tx, rx)) = uart.split(tx_buf, rx_buf) else {
        panic!("UART buffers refused");
    };
    let mut link = board::UarteLink::new(tx, rx, clock);

    // The thermometer: MAX30205 on TWIM0, P0.26 = SDA, P0.27 = SCL (the
    // driver turns the internal pull-ups on; breakout boards usually add
    // 4.7 kΩ ones).
    let i2c = Twim::new(
        p.TWIM0,
        twim::Pins {
            sda: port0.p0_26.into_floating_input().degrade(),
            scl: port0.p0_27.into_floating_input().degrade(),
        },
        twim::Frequency::K100,
    );
    let mut thermometer = Max30205::new(board::I2cBus(i2c), max30205::DEFAULT_ADDRESS);
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
