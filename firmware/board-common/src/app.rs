//! The firmware's application: check the key page, configure the device,
//! stream readings forever.

use defmt::{Format, error, info, warn};
use rand_core::CryptoRng;
use sensorchain_device::provision::{KEY_PAGE_LEN, KeyPage};
use sensorchain_device::sensor::VitalSensor;
use sensorchain_device::storage::Storage;
use sensorchain_device::{Clock, Device, DeviceConfig, DeviceError, Link, Outcome};

/// Sequence numbers reserved per flash save: one record per 16 readings
/// (a reboot skips at most 15 numbers; the ledger allows gaps).
pub const SEQUENCE_BLOCK: u64 = 16;

/// When to measure and how to back off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Format)]
pub struct Schedule {
    /// Time between the starts of two measurements, ms.
    pub interval_ms: u32,
    /// First wait after a transient failure, ms (doubled per failure).
    pub backoff_min_ms: u32,
    /// Longest wait between retries, ms.
    pub backoff_max_ms: u32,
}

impl Default for Schedule {
    /// A reading every 10 s; retries after 1 s, 2 s, … up to 60 s.
    fn default() -> Self {
        Schedule {
            interval_ms: 10_000,
            backoff_min_ms: 1_000,
            backoff_max_ms: 60_000,
        }
    }
}

/// Decodes the key page read from flash at `address`, logging what it
/// holds (never the secrets) or why it was refused. `None`: the board must
/// not run (blank, torn or corrupted page).
pub fn key_page(bytes: &[u8; KEY_PAGE_LEN], address: u32) -> Option<KeyPage> {
    match KeyPage::decode(bytes) {
        Ok(page) => {
            info!(
                "key page at {=u32:#010x}: device {}, chain {}, {=usize} gateway(s), {=usize} sealed-for reader(s)",
                address,
                page.keypair().public(),
                page.chain,
                page.gateways().len(),
                page.readers().len()
            );
            Some(page)
        }
        Err(e) => {
            error!(
                "key page at {=u32:#010x} refused: {}. Write one with `sensorchain provision` (see the firmware README); refusing to run.",
                address, e
            );
            None
        }
    }
}

/// Longest wait for the gateway's handshake answer over a serial line, ms.
/// The answer takes milliseconds; a short timeout matters because the
/// gateway's serial listener keeps one link per line: after a board reset
/// it still holds the old session and counts each new `Hello` as a bad
/// frame until it drops the link (after 8 by default), so recovery takes
/// about nine handshake timeouts plus the loop's backoff.
pub const SERIAL_HANDSHAKE_TIMEOUT_MS: u32 = 3_000;

/// The device loop's configuration from the key page: its chain, the
/// gateways it trusts, the readers it seals for, sequence numbers reserved
/// [`SEQUENCE_BLOCK`] at a time, and [`SERIAL_HANDSHAKE_TIMEOUT_MS`].
pub fn device_config(page: &KeyPage) -> DeviceConfig<'_> {
    let mut config = DeviceConfig::new(page.chain, page.gateways());
    config.seal_for = page.readers();
    config.sequence_block = SEQUENCE_BLOCK;
    config.handshake_timeout_ms = SERIAL_HANDSHAKE_TIMEOUT_MS;
    config
}

/// Busy-waits `ms` on `clock`.
pub fn pause<C: Clock>(clock: &mut C, ms: u32) {
    let end = clock.now_ms().saturating_add(u64::from(ms));
    while clock.now_ms() < end {
        core::hint::spin_loop();
    }
}

fn double(ms: u32, max: u32) -> u32 {
    ms.saturating_mul(2).min(max)
}

/// Streams readings of `sensor` forever: one measurement per
/// `schedule.interval_ms`, each reading submitted until it is committed,
/// found committed (a lost acknowledgement) or rejected by the gateway.
/// A transient error (link down, timeout, gateway busy or restarting) is
/// retried after a growing pause, resending the same signed transaction;
/// a sensor error is retried the same way. Returns only with a final
/// error (refused identity, untrusted gateway, storage failure): the
/// board logs it and halts.
pub fn stream<S, L, C, R, V>(
    device: &mut Device<'_, S>,
    link: &mut L,
    clock: &mut C,
    rng: &mut R,
    sensor: &mut V,
    schedule: &Schedule,
) -> DeviceError<L::Error, S::Error>
where
    S: Storage,
    S::Error: Format,
    L: Link,
    L::Error: Format,
    C: Clock,
    R: CryptoRng + ?Sized,
    V: VitalSensor,
    V::Error: Format,
{
    let min = schedule.backoff_min_ms.max(1);
    let max = schedule.backoff_max_ms.max(min);
    let mut sensor_backoff = min;
    let mut next = clock.now_ms();
    let mut delivered: u32 = 0;
    loop {
        let now = clock.now_ms();
        if now < next {
            pause(clock, (next - now).min(u64::from(u32::MAX)) as u32);
        }
        let start = clock.now_ms();
        let vitals = match sensor.measure() {
            Ok(v) => {
                sensor_backoff = min;
                v
            }
            Err(e) => {
                warn!("sensor: {}; retrying in {=u32} ms", e, sensor_backoff);
                next = start.saturating_add(u64::from(sensor_backoff));
                sensor_backoff = double(sensor_backoff, max);
                continue;
            }
        };
        next = start.saturating_add(u64::from(schedule.interval_ms));
        for vital in vitals {
            if let Err(e) = deliver(device, link, clock, rng, vital, min, max) {
                return e;
            }
            delivered = delivered.wrapping_add(1);
            if delivered.is_multiple_of(64) {
                let s = device.stats();
                info!(
                    "{=u32} readings; handshakes {=u32}, link failures {=u32}, resends {=u32}, busy {=u32}",
                    delivered, s.handshakes, s.link_failures, s.resends, s.busy
                );
            }
        }
    }
}

/// Submits `vital` and retries transient failures (with the same signed
/// bytes: `flush`) until the gateway answers.
fn deliver<S, L, C, R>(
    device: &mut Device<'_, S>,
    link: &mut L,
    clock: &mut C,
    rng: &mut R,
    vital: sensorchain_core::reading::Vital,
    min: u32,
    max: u32,
) -> Result<(), DeviceError<L::Error, S::Error>>
where
    S: Storage,
    S::Error: Format,
    L: Link,
    L::Error: Format,
    C: Clock,
    R: CryptoRng + ?Sized,
{
    let mut backoff = min;
    let mut result = device.submit(link, clock, rng, vital.clone()).map(Some);
    loop {
        match result {
            Ok(Some(Outcome::Committed {
                sequence, height, ..
            })) => {
                info!(
                    "seq {=u64} {} committed at height {=u64}",
                    sequence, vital, height
                );
                return Ok(());
            }
            Ok(Some(Outcome::Duplicate { sequence })) => {
                info!(
                    "seq {=u64} {} committed (acknowledgement lost, resend refused as a replay)",
                    sequence, vital
                );
                return Ok(());
            }
            Ok(Some(Outcome::Rejected { sequence, reason })) => {
                warn!("seq {=u64} {} rejected: {}", sequence, vital, reason);
                return Ok(());
            }
            Ok(None) => return Ok(()),
            Err(e) if e.is_transient() => {
                warn!(
                    "{} not delivered: {}; retrying in {=u32} ms",
                    vital, e, backoff
                );
                pause(clock, backoff);
                backoff = double(backoff, max);
                result = if device.has_pending() {
                    device.flush(link, clock, rng)
                } else {
                    device.submit(link, clock, rng, vital.clone()).map(Some)
                };
            }
            Err(e) => {
                error!("{}: {} (final)", vital, e);
                return Err(e);
            }
        }
    }
}
