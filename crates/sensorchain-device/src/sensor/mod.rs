//! Sensors: the [`VitalSensor`] trait, embedded-hal 1.0 I2C drivers for
//! real parts, and a simulated I2C bus that emulates them.
//!
//! | part | what | driver |
//! |---|---|---|
//! | MAX30205 | clinical body temperature, ±0.1 °C, I2C `0x48`–`0x4F` | [`max30205::Max30205`] |
//! | MAX30102 | pulse oximeter (red + IR LEDs, 18-bit ADC, 32-sample FIFO), I2C `0x57` | [`max30102::Max30102`], [`max30102::PulseOximeter`] |
//!
//! [`sim::SimBus`] implements `embedded_hal::i2c::I2c` and answers like both
//! parts (a temperature that drifts, a synthetic photoplethysmogram at a
//! chosen heart rate and saturation), so the same drivers run on a board
//! with no sensor attached (the QEMU firmware) and in tests.

pub mod max30102;
pub mod max30205;
pub mod sim;

use sensorchain_core::reading::Vital;

/// Readings one measurement produced (an oximeter gives two).
pub type Vitals = heapless::Vec<Vital, 2>;

/// A sensor that measures vitals.
pub trait VitalSensor {
    /// Why a measurement failed.
    type Error: core::fmt::Debug;
    /// Takes one measurement.
    fn measure(&mut self) -> Result<Vitals, Self::Error>;
}

impl<T: VitalSensor + ?Sized> VitalSensor for &mut T {
    type Error = T::Error;
    fn measure(&mut self) -> Result<Vitals, Self::Error> {
        (**self).measure()
    }
}
