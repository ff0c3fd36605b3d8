//! MAX30102: pulse oximeter and heart-rate sensor (red and IR LEDs, 18-bit
//! ADC, 32-sample FIFO), I2C address `0x57` (datasheet 19-7740).
//!
//! | register | address | use here |
//! |---|---|---|
//! | INT_STATUS_1/2, INT_ENABLE_1/2 | `0x00`–`0x03` | interrupts off |
//! | FIFO_WR_PTR, OVF_COUNTER, FIFO_RD_PTR | `0x04`–`0x06` | read together (3 bytes) to count samples |
//! | FIFO_DATA | `0x07` | burst read, 6 bytes per sample: red (3) then IR (3), 18 bits right-justified, MSB first |
//! | FIFO_CONFIG | `0x08` | `0x5F`: 4-sample averaging, roll-over, almost-full at 17 |
//! | MODE_CONFIG | `0x09` | `0x40` reset (self-clearing), `0x03` SpO2 mode |
//! | SPO2_CONFIG | `0x0A` | `0x27`: 4096 nA range, 100 samples/s, 411 µs pulses (18 bits) |
//! | LED1_PA, LED2_PA | `0x0C`, `0x0D` | `0x24` ≈ 7.2 mA each |
//! | REV_ID, PART_ID | `0xFE`, `0xFF` | part id must be `0x15` |
//!
//! With 100 samples/s averaged by 4 the FIFO fills at 25 samples/s
//! ([`SAMPLE_RATE_HZ`]). [`estimate`] turns a window of red/IR samples into
//! heart rate and SpO2 with the classic "ratio of ratios" method, in
//! integer arithmetic (no floats, no FPU needed):
//!
//! 1. DC of each channel = its mean over the window; AC = its peak-to-peak
//!    amplitude.
//! 2. Heart rate: the IR signal minus its mean, smoothed by a 4-point moving
//!    average; peaks are local maxima above half the largest value, at least
//!    `60 · fs / 250` samples apart (250 bpm at most);
//!    `bpm = 60 · fs · (peaks − 1) / (last peak − first peak)`.
//! 3. `R = (AC_red / DC_red) / (AC_ir / DC_ir)`,
//!    `SpO2 = 110 − 25 · R` (the linear calibration of Maxim's application
//!    note 6409 and most open implementations), clamped to 0..=100.
//!
//! This is a screening-grade estimate: a medical device calibrates the
//! R-to-SpO2 curve against a reference oximeter for its optics and
//! enclosure, and rejects windows with motion artefacts.

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;
use sensorchain_core::reading::Vital;

use super::{VitalSensor, Vitals};

/// The part's fixed I2C address.
pub const ADDRESS: u8 = 0x57;
/// The part id in register `0xFF`.
pub const PART_ID: u8 = 0x15;
/// Effective FIFO sample rate with the configuration of [`Max30102::init`].
pub const SAMPLE_RATE_HZ: u32 = 25;
/// Samples per estimate (4 s at 25 samples/s).
pub const WINDOW: usize = 100;
/// Most samples [`estimate`] takes.
pub const MAX_WINDOW: usize = 128;
/// IR DC level below which no finger is on the sensor.
pub const FINGER_THRESHOLD: u32 = 20_000;

/// Register addresses.
pub mod reg {
    /// Interrupt status 1.
    pub const INT_STATUS_1: u8 = 0x00;
    /// Interrupt enable 1.
    pub const INT_ENABLE_1: u8 = 0x02;
    /// Interrupt enable 2.
    pub const INT_ENABLE_2: u8 = 0x03;
    /// FIFO write pointer (5 bits).
    pub const FIFO_WR_PTR: u8 = 0x04;
    /// FIFO overflow counter.
    pub const OVF_COUNTER: u8 = 0x05;
    /// FIFO read pointer (5 bits).
    pub const FIFO_RD_PTR: u8 = 0x06;
    /// FIFO data.
    pub const FIFO_DATA: u8 = 0x07;
    /// FIFO configuration.
    pub const FIFO_CONFIG: u8 = 0x08;
    /// Mode configuration.
    pub const MODE_CONFIG: u8 = 0x09;
    /// SpO2 configuration.
    pub const SPO2_CONFIG: u8 = 0x0A;
    /// LED1 (red) pulse amplitude.
    pub const LED1_PA: u8 = 0x0C;
    /// LED2 (IR) pulse amplitude.
    pub const LED2_PA: u8 = 0x0D;
    /// Revision id.
    pub const REV_ID: u8 = 0xFE;
    /// Part id.
    pub const PART_ID: u8 = 0xFF;
}

/// MODE_CONFIG: reset (self-clearing).
pub const MODE_RESET: u8 = 0x40;
/// MODE_CONFIG: shutdown.
pub const MODE_SHUTDOWN: u8 = 0x80;
/// MODE_CONFIG: SpO2 mode (red and IR).
pub const MODE_SPO2: u8 = 0x03;
/// FIFO_CONFIG used by [`Max30102::init`].
pub const FIFO_CONFIG_VALUE: u8 = 0x5F;
/// SPO2_CONFIG used by [`Max30102::init`].
pub const SPO2_CONFIG_VALUE: u8 = 0x27;
/// LED amplitude used by [`Max30102::init`] (0.2 mA steps: 7.2 mA).
pub const LED_PA_VALUE: u8 = 0x24;

/// Why the oximeter failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error<E> {
    /// The I2C bus failed.
    I2c(E),
    /// Register `0xFF` is not `0x15`: not a MAX30102.
    WrongPartId(u8),
    /// The reset bit did not clear, or the FIFO did not fill in time.
    Timeout,
    /// No finger (IR level below [`FINGER_THRESHOLD`]).
    NoFinger,
    /// No usable pulse in the window (flat or noisy signal).
    NoPulse,
    /// The estimate is outside the plausible range.
    Implausible,
}

/// One FIFO sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sample {
    /// Red LED (LED1) count, 18 bits.
    pub red: u32,
    /// IR LED (LED2) count, 18 bits.
    pub ir: u32,
}

/// A MAX30102 on an I2C bus (register level).
#[derive(Debug)]
pub struct Max30102<I> {
    i2c: I,
}

impl<I: I2c> Max30102<I> {
    /// A driver for the part at [`ADDRESS`].
    pub fn new(i2c: I) -> Self {
        Max30102 { i2c }
    }

    /// Gives the bus back.
    pub fn release(self) -> I {
        self.i2c
    }

    /// Writes one register.
    pub fn write_reg(&mut self, reg: u8, value: u8) -> Result<(), Error<I::Error>> {
        self.i2c.write(ADDRESS, &[reg, value]).map_err(Error::I2c)
    }

    /// Reads one register.
    pub fn read_reg(&mut self, reg: u8) -> Result<u8, Error<I::Error>> {
        let mut b = [0u8; 1];
        self.i2c
            .write_read(ADDRESS, &[reg], &mut b)
            .map_err(Error::I2c)?;
        Ok(b[0])
    }

    /// Checks the part id, resets, and configures SpO2 mode at 25
    /// samples/s (see the module table). Polls the reset bit at most 10
    /// times.
    pub fn init(&mut self) -> Result<(), Error<I::Error>> {
        let id = self.read_reg(reg::PART_ID)?;
        if id != PART_ID {
            return Err(Error::WrongPartId(id));
        }
        self.write_reg(reg::MODE_CONFIG, MODE_RESET)?;
        let mut cleared = false;
        for _ in 0..10 {
            if self.read_reg(reg::MODE_CONFIG)? & MODE_RESET == 0 {
                cleared = true;
                break;
            }
        }
        if !cleared {
            return Err(Error::Timeout);
        }
        self.write_reg(reg::INT_ENABLE_1, 0)?;
        self.write_reg(reg::INT_ENABLE_2, 0)?;
        self.write_reg(reg::FIFO_WR_PTR, 0)?;
        self.write_reg(reg::OVF_COUNTER, 0)?;
        self.write_reg(reg::FIFO_RD_PTR, 0)?;
        self.write_reg(reg::FIFO_CONFIG, FIFO_CONFIG_VALUE)?;
        self.write_reg(reg::SPO2_CONFIG, SPO2_CONFIG_VALUE)?;
        self.write_reg(reg::LED1_PA, LED_PA_VALUE)?;
        self.write_reg(reg::LED2_PA, LED_PA_VALUE)?;
        self.write_reg(reg::MODE_CONFIG, MODE_SPO2)
    }

    /// Enters shutdown (LEDs off, about 0.7 µA).
    pub fn shutdown(&mut self) -> Result<(), Error<I::Error>> {
        self.write_reg(reg::MODE_CONFIG, MODE_SHUTDOWN)
    }

    /// Samples waiting in the FIFO (32 after an overflow).
    pub fn available(&mut self) -> Result<usize, Error<I::Error>> {
        let mut p = [0u8; 3];
        self.i2c
            .write_read(ADDRESS, &[reg::FIFO_WR_PTR], &mut p)
            .map_err(Error::I2c)?;
        let (wr, ovf, rd) = (p[0] & 0x1F, p[1] & 0x1F, p[2] & 0x1F);
        if ovf != 0 {
            return Ok(32);
        }
        Ok(usize::from(wr.wrapping_sub(rd) & 0x1F))
    }

    /// Reads up to `out.len()` samples from the FIFO (at most 8 per bus
    /// transaction); returns how many were read.
    pub fn read_fifo(&mut self, out: &mut [Sample]) -> Result<usize, Error<I::Error>> {
        let n = self.available()?.min(out.len());
        let mut done = 0;
        while done < n {
            let k = (n - done).min(8);
            let mut buf = [0u8; 8 * 6];
            let bytes = buf.get_mut(..k * 6).ok_or(Error::Timeout)?;
            self.i2c
                .write_read(ADDRESS, &[reg::FIFO_DATA], bytes)
                .map_err(Error::I2c)?;
            for (s, chunk) in out
                .get_mut(done..done + k)
                .unwrap_or(&mut [])
                .iter_mut()
                .zip(bytes.chunks_exact(6))
            {
                *s = Sample {
                    red: be18(chunk[0], chunk[1], chunk[2]),
                    ir: be18(chunk[3], chunk[4], chunk[5]),
                };
            }
            done += k;
        }
        Ok(n)
    }
}

fn be18(a: u8, b: u8, c: u8) -> u32 {
    (u32::from(a & 0x03) << 16) | (u32::from(b) << 8) | u32::from(c)
}

/// Heart rate (bpm) and SpO2 (%) from a window of samples taken at `fs_hz`
/// (see the module documentation). At least 2 s of samples and at most
/// [`MAX_WINDOW`] are used.
pub fn estimate<E>(samples: &[Sample], fs_hz: u32) -> Result<(u16, u8), Error<E>> {
    let samples = samples.get(..samples.len().min(MAX_WINDOW)).unwrap_or(&[]);
    let n = samples.len();
    if fs_hz == 0 || (n as u32) < 2 * fs_hz || n < 8 {
        return Err(Error::NoPulse);
    }
    let (mut sum_r, mut sum_i) = (0u64, 0u64);
    let (mut min_r, mut max_r, mut min_i, mut max_i) = (u32::MAX, 0u32, u32::MAX, 0u32);
    for s in samples {
        sum_r += u64::from(s.red);
        sum_i += u64::from(s.ir);
        min_r = min_r.min(s.red);
        max_r = max_r.max(s.red);
        min_i = min_i.min(s.ir);
        max_i = max_i.max(s.ir);
    }
    let dc_r = sum_r / n as u64;
    let dc_i = sum_i / n as u64;
    if dc_i < u64::from(FINGER_THRESHOLD) {
        return Err(Error::NoFinger);
    }
    let (ac_r, ac_i) = (u64::from(max_r - min_r), u64::from(max_i - min_i));
    if ac_i == 0 || ac_r == 0 || dc_r == 0 {
        return Err(Error::NoPulse);
    }

    // Smoothed AC of the IR channel.
    let mut smooth = [0i32; MAX_WINDOW];
    let mut peak_max = 0i32;
    for i in 0..n {
        let lo = i.saturating_sub(3);
        let mut acc = 0i64;
        for s in samples.get(lo..=i).unwrap_or(&[]) {
            acc += i64::from(s.ir) - dc_i as i64;
        }
        let v = (acc / (i - lo + 1) as i64) as i32;
        if let Some(x) = smooth.get_mut(i) {
            *x = v;
        }
        peak_max = peak_max.max(v);
    }
    if peak_max <= 0 {
        return Err(Error::NoPulse);
    }
    let threshold = peak_max / 2;
    let min_dist = (60 * fs_hz / 250).max(1) as usize;
    let (mut first, mut last, mut count) = (0usize, 0usize, 0u32);
    for i in 1..n.saturating_sub(1) {
        let (p, c, q) = (smooth[i - 1], smooth[i], smooth[i + 1]);
        if c > threshold && c >= p && c > q && (count == 0 || i - last >= min_dist) {
            if count == 0 {
                first = i;
            }
            last = i;
            count += 1;
        }
    }
    if count < 2 || last == first {
        return Err(Error::NoPulse);
    }
    let bpm = (60 * fs_hz * (count - 1)) as u64 * 10 / (last - first) as u64;
    let bpm = (bpm + 5) / 10;

    // R in thousandths; u128 avoids any overflow of the 18-bit products.
    let r_milli =
        (u128::from(ac_r) * u128::from(dc_i) * 1000) / (u128::from(ac_i) * u128::from(dc_r)).max(1);
    let spo2 = (110_000i128 - 25 * r_milli as i128).clamp(0, 100_000) / 1000;

    let bpm = u16::try_from(bpm).map_err(|_| Error::Implausible)?;
    let spo2 = spo2 as u8;
    if (Vital::HeartRate { bpm }).check().is_err()
        || (Vital::SpO2 { percent: spo2 }).check().is_err()
    {
        return Err(Error::Implausible);
    }
    Ok((bpm, spo2))
}

/// A MAX30102 as a [`VitalSensor`]: collects a [`WINDOW`] of samples
/// (polling the FIFO every 40 ms, at most 4× the window's duration) and
/// estimates heart rate and SpO2.
#[derive(Debug)]
pub struct PulseOximeter<I, D> {
    dev: Max30102<I>,
    delay: D,
}

impl<I: I2c, D: DelayNs> PulseOximeter<I, D> {
    /// Wraps an initialised driver.
    pub fn new(dev: Max30102<I>, delay: D) -> Self {
        PulseOximeter { dev, delay }
    }

    /// The driver.
    pub fn device(&mut self) -> &mut Max30102<I> {
        &mut self.dev
    }
}

impl<I: I2c, D: DelayNs> VitalSensor for PulseOximeter<I, D> {
    type Error = Error<I::Error>;
    fn measure(&mut self) -> Result<Vitals, Self::Error> {
        let mut window = [Sample::default(); WINDOW];
        let mut have = 0;
        let mut polls = 0;
        while have < WINDOW {
            if polls > 4 * WINDOW {
                return Err(Error::Timeout);
            }
            polls += 1;
            have += self
                .dev
                .read_fifo(window.get_mut(have..).unwrap_or(&mut []))?;
            if have < WINDOW {
                self.delay.delay_ms(40);
            }
        }
        let (bpm, percent) = estimate(&window, SAMPLE_RATE_HZ)?;
        let mut out = Vitals::new();
        let _ = out.push(Vital::HeartRate { bpm });
        let _ = out.push(Vital::SpO2 { percent });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::sensor::sim::ppg;
    use embedded_hal::i2c::ErrorKind;
    use embedded_hal_mock::eh1::delay::NoopDelay;
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction as T};
    use std::vec;
    use std::vec::Vec;

    const A: u8 = ADDRESS;

    fn init_transactions() -> Vec<T> {
        vec![
            T::write_read(A, vec![0xFF], vec![0x15]),
            T::write(A, vec![0x09, 0x40]),
            T::write_read(A, vec![0x09], vec![0x40]),
            T::write_read(A, vec![0x09], vec![0x00]),
            T::write(A, vec![0x02, 0x00]),
            T::write(A, vec![0x03, 0x00]),
            T::write(A, vec![0x04, 0x00]),
            T::write(A, vec![0x05, 0x00]),
            T::write(A, vec![0x06, 0x00]),
            T::write(A, vec![0x08, 0x5F]),
            T::write(A, vec![0x0A, 0x27]),
            T::write(A, vec![0x0C, 0x24]),
            T::write(A, vec![0x0D, 0x24]),
            T::write(A, vec![0x09, 0x03]),
        ]
    }

    #[test]
    fn init_sequence() {
        let mut d = Max30102::new(Mock::new(&init_transactions()));
        d.init().unwrap();
        d.release().done();
    }

    #[test]
    fn wrong_part_and_stuck_reset() {
        let mut d = Max30102::new(Mock::new(&[T::write_read(A, vec![0xFF], vec![0x11])]));
        assert_eq!(d.init(), Err(Error::WrongPartId(0x11)));
        d.release().done();

        let mut t = vec![
            T::write_read(A, vec![0xFF], vec![0x15]),
            T::write(A, vec![0x09, 0x40]),
        ];
        for _ in 0..10 {
            t.push(T::write_read(A, vec![0x09], vec![0x40]));
        }
        let mut d = Max30102::new(Mock::new(&t));
        assert_eq!(d.init(), Err(Error::Timeout));
        d.release().done();

        let mut d = Max30102::new(Mock::new(&[
            T::write_read(A, vec![0xFF], vec![0]).with_error(ErrorKind::Other)
        ]));
        assert_eq!(d.init(), Err(Error::I2c(ErrorKind::Other)));
        d.release().done();
    }

    #[test]
    fn fifo_pointers_and_data() {
        // wr 5, ovf 0, rd 2: three samples in one burst.
        let data = vec![
            0x01, 0x02, 0x03, 0xFF, 0x00, 0x01, // red 0x10203, ir 0x30001 (top bits masked)
            0x00, 0x00, 0x10, 0x00, 0x00, 0x20, //
            0x03, 0xFF, 0xFF, 0x03, 0xFF, 0xFF,
        ];
        let mut d = Max30102::new(Mock::new(&[
            T::write_read(A, vec![0x04], vec![5, 0, 2]),
            T::write_read(A, vec![0x07], data),
            // wrapped pointers: wr 1, rd 30 → 3 samples; out holds 2
            T::write_read(A, vec![0x04], vec![1, 0, 30]),
            T::write_read(A, vec![0x07], vec![0; 12]),
            // overflow: 32 samples, read as 8 + 2 for a buffer of 10
            T::write_read(A, vec![0x04], vec![3, 4, 3]),
            T::write_read(A, vec![0x07], vec![0; 48]),
            T::write_read(A, vec![0x07], vec![0; 12]),
        ]));
        let mut out = [Sample::default(); 10];
        assert_eq!(d.read_fifo(&mut out).unwrap(), 3);
        assert_eq!(
            out[0],
            Sample {
                red: 0x10203,
                ir: 0x30001
            }
        );
        assert_eq!(
            out[1],
            Sample {
                red: 0x10,
                ir: 0x20
            }
        );
        assert_eq!(
            out[2],
            Sample {
                red: 0x3FFFF,
                ir: 0x3FFFF
            }
        );
        assert_eq!(d.read_fifo(&mut out[..2]).unwrap(), 2);
        assert_eq!(d.read_fifo(&mut out).unwrap(), 10);
        d.release().done();
    }

    #[test]
    fn estimate_known_signal() {
        for (bpm, spo2) in [(60u16, 98u8), (72, 97), (110, 94), (45, 90)] {
            let mut s = [Sample::default(); WINDOW];
            for (k, x) in s.iter_mut().enumerate() {
                *x = ppg(k as u32, bpm, spo2);
            }
            let (b, o) = estimate::<()>(&s, SAMPLE_RATE_HZ).unwrap();
            assert!(b.abs_diff(bpm) <= bpm / 12 + 1, "bpm {b} for {bpm}");
            assert!(o.abs_diff(spo2) <= 1, "spo2 {o} for {spo2}");
        }
    }

    #[test]
    fn estimate_refuses_bad_windows() {
        let flat = [Sample {
            red: 80_000,
            ir: 100_000,
        }; WINDOW];
        assert_eq!(estimate::<()>(&flat, 25), Err(Error::NoPulse));
        let dark = [Sample { red: 10, ir: 10 }; WINDOW];
        assert_eq!(estimate::<()>(&dark, 25), Err(Error::NoFinger));
        assert_eq!(estimate::<()>(&flat[..10], 25), Err(Error::NoPulse));
        assert_eq!(estimate::<()>(&[], 0), Err(Error::NoPulse));
    }

    #[test]
    fn oximeter_over_mock_fifo() {
        let mut t = Vec::new();
        let mut k = 0u32;
        let mut remaining = WINDOW;
        while remaining > 0 {
            let n = remaining.min(16);
            t.push(T::write_read(A, vec![0x04], vec![n as u8, 0, 0]));
            let mut left = n;
            while left > 0 {
                let c = left.min(8);
                let mut bytes = Vec::new();
                for _ in 0..c {
                    let s = ppg(k, 75, 96);
                    k += 1;
                    for v in [s.red, s.ir] {
                        bytes.extend_from_slice(&[(v >> 16) as u8, (v >> 8) as u8, v as u8]);
                    }
                }
                t.push(T::write_read(A, vec![0x07], bytes));
                left -= c;
            }
            remaining -= n;
        }
        let mut ox = PulseOximeter::new(Max30102::new(Mock::new(&t)), NoopDelay::new());
        let v = ox.measure().unwrap();
        assert!(matches!(v[0], Vital::HeartRate { bpm } if (70..=80).contains(&bpm)));
        assert!(matches!(v[1], Vital::SpO2 { percent } if (95..=97).contains(&percent)));
        ox.device().i2c.done();
    }
}
