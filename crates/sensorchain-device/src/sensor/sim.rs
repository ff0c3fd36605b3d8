//! A simulated I2C bus with a MAX30205 at `0x48` and a MAX30102 at `0x57`,
//! for boards without sensors (QEMU) and tests. The real drivers run over
//! it unchanged: it keeps a register file per part, honours the register
//! pointer and auto-increment, and refuses other addresses with a NACK.
//!
//! - MAX30205: the temperature drifts in a slow triangle around
//!   `base_centi` (±0.3 °C over 64 reads).
//! - MAX30102: part id `0x15`; the reset bit clears on the next read; the
//!   FIFO always reports 16 samples waiting and serves a synthetic
//!   photoplethysmogram ([`ppg`]) at the configured heart rate and SpO2.

use embedded_hal::i2c::{ErrorKind, ErrorType, I2c, NoAcknowledgeSource, Operation};

use super::max30102::{self, Sample};
use super::max30205;

/// One sample of a synthetic photoplethysmogram at 25 samples/s: a
/// triangular pulse (fast rise over a third of the beat, slow fall), IR DC
/// 100 000 counts with 2 % modulation, red DC 80 000 counts with the
/// modulation that gives ratio `R = (110 − spo2) / 25`.
pub fn ppg(k: u32, bpm: u16, spo2: u8) -> Sample {
    // 32-bit arithmetic only (no 64-bit division routine in a firmware).
    // The phase wraps every 2^32 / 1000 samples (48 h at 25 samples/s).
    let bpm = u32::from(bpm.max(1));
    // Beat period in 1/1000 samples.
    let period = (60 * max30102::SAMPLE_RATE_HZ * 1000 / bpm).max(3);
    let phase = k.wrapping_mul(1000) % period;
    let rise = period / 3;
    // Pulse shape in 0..=1000.
    let shape = if phase < rise {
        phase / (rise / 1000).max(1)
    } else {
        (period - phase) / ((period - rise) / 1000).max(1)
    }
    .min(1000);
    let (dc_ir, dc_red) = (100_000u32, 80_000u32);
    let ac_ir = dc_ir * 2 / 100;
    // R = (ac_red/dc_red) / (ac_ir/dc_ir), R·1000 = (110 − spo2) · 40.
    let r_milli = u32::from(110u8.saturating_sub(spo2)) * 40;
    let ac_red = ac_ir * r_milli / 1000 * dc_red / dc_ir;
    Sample {
        red: dc_red + ac_red * shape / 1000,
        ir: dc_ir + ac_ir * shape / 1000,
    }
}

/// The simulated bus.
#[derive(Debug, Clone)]
pub struct SimBus {
    /// Body temperature the MAX30205 reports around, 0.01 °C.
    pub base_centi: i16,
    /// Heart rate of the synthetic pulse.
    pub bpm: u16,
    /// SpO2 of the synthetic pulse.
    pub spo2: u8,
    temp_reads: u32,
    temp_regs: [u8; 4],
    temp_ptr: u8,
    ox_regs: [u8; 256],
    ox_ptr: u8,
    ppg_k: u32,
    fifo_byte: u8,
    /// Transactions served (for tests).
    pub transactions: u32,
}

impl SimBus {
    /// A bus whose parts report 36.80 °C, 72 bpm and 97 %.
    pub fn new() -> Self {
        SimBus::with_vitals(3680, 72, 97)
    }

    /// A bus with chosen vitals.
    pub fn with_vitals(base_centi: i16, bpm: u16, spo2: u8) -> Self {
        let mut ox_regs = [0u8; 256];
        ox_regs[usize::from(max30102::reg::PART_ID)] = max30102::PART_ID;
        ox_regs[usize::from(max30102::reg::REV_ID)] = 0x03;
        SimBus {
            base_centi,
            bpm,
            spo2,
            temp_reads: 0,
            temp_regs: [0; 4],
            temp_ptr: 0,
            ox_regs,
            ox_ptr: 0,
            ppg_k: 0,
            fifo_byte: 0,
            transactions: 0,
        }
    }

    fn temperature_raw(&mut self) -> i16 {
        // Triangle of ±30 centi-degrees over 64 reads.
        let t = (self.temp_reads % 64) as i32;
        let off = if t < 32 { t - 16 } else { 48 - t } * 30 / 16;
        self.temp_reads = self.temp_reads.wrapping_add(1);
        let centi = i32::from(self.base_centi) + off;
        (centi * 256 / 100) as i16
    }

    fn temp_read(&mut self, buf: &mut [u8]) {
        let mut word = [0u8; 2];
        if self.temp_ptr == max30205::reg::TEMPERATURE {
            word = self.temperature_raw().to_be_bytes();
        }
        for (i, b) in buf.iter_mut().enumerate() {
            *b = match self.temp_ptr {
                max30205::reg::TEMPERATURE => word.get(i).copied().unwrap_or(0),
                r => self.temp_regs.get(usize::from(r)).copied().unwrap_or(0),
            };
        }
    }

    fn ox_write(&mut self, bytes: &[u8]) {
        let Some((&reg, data)) = bytes.split_first() else {
            return;
        };
        self.ox_ptr = reg;
        for &v in data {
            let r = self.ox_ptr;
            if r != max30102::reg::PART_ID && r != max30102::reg::REV_ID {
                self.ox_regs[usize::from(r)] = v;
            }
            self.ox_ptr = r.wrapping_add(1);
        }
    }

    fn ox_read(&mut self, buf: &mut [u8]) {
        for b in buf.iter_mut() {
            let r = self.ox_ptr;
            *b = match r {
                max30102::reg::MODE_CONFIG => {
                    // The reset bit reads back once, then clears.
                    let v = self.ox_regs[usize::from(r)];
                    self.ox_regs[usize::from(r)] = v & !max30102::MODE_RESET;
                    v
                }
                max30102::reg::FIFO_WR_PTR => 16,
                max30102::reg::OVF_COUNTER | max30102::reg::FIFO_RD_PTR => 0,
                max30102::reg::FIFO_DATA => self.fifo_next(),
                _ => self.ox_regs[usize::from(r)],
            };
            if r != max30102::reg::FIFO_DATA {
                self.ox_ptr = r.wrapping_add(1);
            }
        }
    }

    fn fifo_next(&mut self) -> u8 {
        let s = ppg(self.ppg_k, self.bpm, self.spo2);
        let v = if self.fifo_byte < 3 { s.red } else { s.ir };
        let shift = 8 * (2 - u32::from(self.fifo_byte % 3));
        let b = (v >> shift) as u8;
        self.fifo_byte += 1;
        if self.fifo_byte == 6 {
            self.fifo_byte = 0;
            self.ppg_k = self.ppg_k.wrapping_add(1);
        }
        b
    }
}

impl Default for SimBus {
    fn default() -> Self {
        Self::new()
    }
}

impl ErrorType for SimBus {
    type Error = ErrorKind;
}

impl I2c for SimBus {
    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
    ) -> Result<(), Self::Error> {
        self.transactions = self.transactions.wrapping_add(1);
        let temp = address == max30205::DEFAULT_ADDRESS;
        if !temp && address != max30102::ADDRESS {
            return Err(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address));
        }
        for op in operations {
            match op {
                Operation::Write(bytes) => {
                    if temp {
                        if let Some((&reg, data)) = bytes.split_first() {
                            self.temp_ptr = reg & 0x03;
                            if self.temp_ptr == max30205::reg::CONFIG
                                && let Some(&v) = data.first()
                            {
                                self.temp_regs[1] = v;
                            }
                        }
                    } else {
                        self.ox_write(bytes);
                    }
                }
                Operation::Read(buf) => {
                    if temp {
                        self.temp_read(buf);
                    } else {
                        self.ox_read(buf);
                    }
                }
            }
        }
        Ok(())
    }
}

/// A simulated bus with only the MAX30205 (same temperature model as
/// [`SimBus`]): a smaller image for firmware that reads temperature only.
#[derive(Debug, Clone)]
pub struct SimThermometer {
    /// Body temperature reported around, 0.01 °C.
    pub base_centi: i16,
    reads: u32,
    config: u8,
    ptr: u8,
}

impl SimThermometer {
    /// A thermometer reporting about `base_centi` (±0.3 °C).
    pub fn new(base_centi: i16) -> Self {
        SimThermometer {
            base_centi,
            reads: 0,
            config: 0,
            ptr: 0,
        }
    }
}

impl ErrorType for SimThermometer {
    type Error = ErrorKind;
}

impl I2c for SimThermometer {
    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
    ) -> Result<(), Self::Error> {
        if address != max30205::DEFAULT_ADDRESS {
            return Err(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address));
        }
        for op in operations {
            match op {
                Operation::Write(bytes) => {
                    if let Some((&reg, data)) = bytes.split_first() {
                        self.ptr = reg & 0x03;
                        if self.ptr == max30205::reg::CONFIG
                            && let Some(&v) = data.first()
                        {
                            self.config = v;
                        }
                    }
                }
                Operation::Read(buf) => {
                    let word = if self.ptr == max30205::reg::TEMPERATURE {
                        let t = (self.reads % 64) as i32;
                        self.reads = self.reads.wrapping_add(1);
                        let off = if t < 32 { t - 16 } else { 48 - t } * 30 / 16;
                        (((i32::from(self.base_centi) + off) * 256 / 100) as i16).to_be_bytes()
                    } else {
                        [self.config, 0]
                    };
                    for (b, w) in buf.iter_mut().zip(word.iter().chain([0u8; 8].iter())) {
                        *b = *w;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensor::VitalSensor;
    use crate::sensor::max30102::{Max30102, PulseOximeter};
    use crate::sensor::max30205::Max30205;
    use embedded_hal_mock::eh1::delay::NoopDelay;
    use sensorchain_core::reading::Vital;

    #[test]
    fn drivers_run_over_the_simulated_bus() {
        let mut t = Max30205::new(SimBus::new(), max30205::DEFAULT_ADDRESS);
        t.init().unwrap();
        for _ in 0..100 {
            let v = t.measure().unwrap();
            let Vital::BodyTemperature { centi_celsius } = v[0] else {
                panic!()
            };
            assert!((3640..=3720).contains(&centi_celsius), "{centi_celsius}");
        }
        let mut d = Max30102::new(SimBus::with_vitals(3700, 80, 95));
        d.init().unwrap();
        let mut ox = PulseOximeter::new(d, NoopDelay::new());
        for _ in 0..3 {
            let v = ox.measure().unwrap();
            assert!(matches!(v[0], Vital::HeartRate { bpm } if (75..=85).contains(&bpm)));
            assert!(matches!(v[1], Vital::SpO2 { percent } if (94..=96).contains(&percent)));
        }
        let mut wrong = Max30205::new(SimBus::new(), 0x4A);
        assert!(wrong.read_raw().is_err());
        let mut t = Max30205::new(SimThermometer::new(3680), max30205::DEFAULT_ADDRESS);
        t.init().unwrap();
        assert_eq!(t.read_config().unwrap(), 0);
        for _ in 0..70 {
            let c = t.read_centi_celsius().unwrap();
            assert!((3640..=3720).contains(&c), "{c}");
        }
        let mut wrong = Max30205::new(SimThermometer::new(3680), 0x49);
        assert!(wrong.read_raw().is_err());
    }
}
