//! MAX30205: human body temperature sensor (±0.1 °C from 37 °C to 39 °C),
//! I2C, 16-bit two's-complement temperature with 1/256 °C resolution
//! (datasheet 19-7548, "Register Map").
//!
//! | register | address | use here |
//! |---|---|---|
//! | Temperature | `0x00` | read, 2 bytes big-endian |
//! | Configuration | `0x01` | bit 0 SHUTDOWN, bit 5 DATA FORMAT (extended: +64 °C), bit 6 TIMEOUT, bit 7 ONE-SHOT |
//! | THYST / TOS | `0x02` / `0x03` | not used |
//!
//! ```
//! # use embedded_hal_mock::eh1::i2c::{Mock, Transaction as T};
//! use sensorchain_device::sensor::max30205::{Max30205, DEFAULT_ADDRESS};
//! let i2c = Mock::new(&[
//!     T::write(DEFAULT_ADDRESS, vec![0x01, 0x00]),
//!     T::write_read(DEFAULT_ADDRESS, vec![0x00], vec![0x25, 0x20]),
//! ]);
//! let mut t = Max30205::new(i2c, DEFAULT_ADDRESS);
//! t.init().unwrap();
//! assert_eq!(t.read_centi_celsius().unwrap(), 3712); // 37.125 °C, truncated to 0.01 °C
//! t.release().done();
//! ```

use embedded_hal::i2c::I2c;
use sensorchain_core::reading::Vital;

use super::{VitalSensor, Vitals};

/// Address with A0, A1, A2 tied to ground.
pub const DEFAULT_ADDRESS: u8 = 0x48;

/// Register addresses.
pub mod reg {
    /// Temperature (read-only, 2 bytes).
    pub const TEMPERATURE: u8 = 0x00;
    /// Configuration (1 byte).
    pub const CONFIG: u8 = 0x01;
    /// Hysteresis threshold (2 bytes).
    pub const THYST: u8 = 0x02;
    /// Overtemperature threshold (2 bytes).
    pub const TOS: u8 = 0x03;
}

/// Configuration bits.
pub mod config {
    /// Shut down (lowest power; a one-shot still converts).
    pub const SHUTDOWN: u8 = 0x01;
    /// Extended data format (adds 64 °C to the reading).
    pub const EXTENDED_FORMAT: u8 = 0x20;
    /// Disables the bus timeout.
    pub const TIMEOUT_DISABLE: u8 = 0x40;
    /// Starts one conversion in shutdown mode.
    pub const ONE_SHOT: u8 = 0x80;
}

/// Why a temperature could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error<E> {
    /// The I2C bus failed (NACK, arbitration loss...).
    I2c(E),
    /// The value is outside the plausible body-temperature range (the
    /// sensor is not on the skin, or broken).
    Implausible(i16),
}

/// A MAX30205 on an I2C bus.
#[derive(Debug)]
pub struct Max30205<I> {
    i2c: I,
    address: u8,
}

impl<I: I2c> Max30205<I> {
    /// A driver for the part at `address` (`0x48`..=`0x4F` or `0x40`..=`0x47`,
    /// `0x08`..=`0x0F`, `0x18`..=`0x1F`, `0x28`..=`0x2F` depending on the
    /// address pins).
    pub fn new(i2c: I, address: u8) -> Self {
        Max30205 { i2c, address }
    }

    /// Gives the bus back.
    pub fn release(self) -> I {
        self.i2c
    }

    /// Continuous conversion, normal data format, comparator mode.
    pub fn init(&mut self) -> Result<(), Error<I::Error>> {
        self.write_config(0x00)
    }

    /// Writes the configuration register.
    pub fn write_config(&mut self, value: u8) -> Result<(), Error<I::Error>> {
        self.i2c
            .write(self.address, &[reg::CONFIG, value])
            .map_err(Error::I2c)
    }

    /// Reads the configuration register.
    pub fn read_config(&mut self) -> Result<u8, Error<I::Error>> {
        let mut b = [0u8; 1];
        self.i2c
            .write_read(self.address, &[reg::CONFIG], &mut b)
            .map_err(Error::I2c)?;
        Ok(b[0])
    }

    /// Enters shutdown (about 3.5 µA).
    pub fn shutdown(&mut self) -> Result<(), Error<I::Error>> {
        self.write_config(config::SHUTDOWN)
    }

    /// Starts one conversion while shut down (ready after 50 ms).
    pub fn one_shot(&mut self) -> Result<(), Error<I::Error>> {
        self.write_config(config::SHUTDOWN | config::ONE_SHOT)
    }

    /// The raw temperature register (1/256 °C, two's complement, normal
    /// format).
    pub fn read_raw(&mut self) -> Result<i16, Error<I::Error>> {
        let mut b = [0u8; 2];
        self.i2c
            .write_read(self.address, &[reg::TEMPERATURE], &mut b)
            .map_err(Error::I2c)?;
        Ok(i16::from_be_bytes(b))
    }

    /// The temperature in 0.01 °C (truncated toward zero).
    pub fn read_centi_celsius(&mut self) -> Result<i16, Error<I::Error>> {
        Ok(raw_to_centi(self.read_raw()?))
    }
}

/// 1/256 °C to 0.01 °C, truncating toward zero (no overflow: |raw| ≤ 2^15
/// gives |result| ≤ 12800).
pub fn raw_to_centi(raw: i16) -> i16 {
    // i32 arithmetic; the result fits i16.
    let c = i32::from(raw) * 100 / 256;
    c as i16
}

impl<I: I2c> VitalSensor for Max30205<I> {
    type Error = Error<I::Error>;
    fn measure(&mut self) -> Result<Vitals, Self::Error> {
        let c = self.read_centi_celsius()?;
        let v = Vital::BodyTemperature { centi_celsius: c };
        if v.check().is_err() {
            return Err(Error::Implausible(c));
        }
        let mut out = Vitals::new();
        let _ = out.push(v);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use embedded_hal::i2c::ErrorKind;
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction as T};
    use std::vec;

    const A: u8 = DEFAULT_ADDRESS;

    #[test]
    fn conversion() {
        assert_eq!(raw_to_centi(0x2500), 3700);
        assert_eq!(raw_to_centi(0x2520), 3712);
        assert_eq!(raw_to_centi(0x0001), 0);
        assert_eq!(raw_to_centi(-256), -100);
        assert_eq!(raw_to_centi(i16::MIN), -12800);
        assert_eq!(raw_to_centi(i16::MAX), 12799);
    }

    #[test]
    fn init_reads_and_power_modes() {
        let mut t = Max30205::new(
            Mock::new(&[
                T::write(A, vec![0x01, 0x00]),
                T::write_read(A, vec![0x01], vec![0x00]),
                T::write_read(A, vec![0x00], vec![0x24, 0xC0]),
                T::write(A, vec![0x01, 0x01]),
                T::write(A, vec![0x01, 0x81]),
            ]),
            A,
        );
        t.init().unwrap();
        assert_eq!(t.read_config().unwrap(), 0);
        let v = t.measure().unwrap();
        assert_eq!(
            v[0],
            Vital::BodyTemperature {
                centi_celsius: 3675
            }
        );
        t.shutdown().unwrap();
        t.one_shot().unwrap();
        t.release().done();
    }

    #[test]
    fn implausible_and_bus_errors_are_typed() {
        let mut t = Max30205::new(
            Mock::new(&[
                T::write_read(0x49, vec![0x00], vec![0x14, 0x00]),
                T::write_read(0x49, vec![0x00], vec![0, 0]).with_error(ErrorKind::Other),
            ]),
            0x49,
        );
        assert_eq!(t.measure(), Err(Error::Implausible(2000)));
        assert_eq!(t.read_raw(), Err(Error::I2c(ErrorKind::Other)));
        t.release().done();
    }
}
