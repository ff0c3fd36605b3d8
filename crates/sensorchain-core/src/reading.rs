//! Readings: typed vitals in fixed-point integers (units in the names) and a
//! bounded opaque reading for other sensors, with documented plausibility
//! ranges.
//!
//! | vital | field | unit | accepted range |
//! |---|---|---|---|
//! | body temperature | `centi_celsius` | 0.01 °C | 2500 ..= 4500 (25.00–45.00 °C) |
//! | SpO2 | `percent` | % saturation | 50 ..= 100 |
//! | blood pressure | `systolic_mmhg`, `diastolic_mmhg` | mmHg | systolic 50 ..= 260, diastolic 20 ..= 160, systolic > diastolic |
//! | heart rate | `bpm` | beats per minute | 20 ..= 250 |
//! | opaque | `kind`, `data` | sensor-defined | at most [`OPAQUE_MAX`] bytes |
//!
//! The ranges are wide enough for any live patient (deep hypothermia,
//! severe hypoxaemia, hypertensive crisis, infant tachycardia) and narrow
//! enough to refuse a broken sensor or a forged record: a heart rate of 60000
//! is an error, not a record.
//!
//! ```
//! use sensorchain_core::reading::{Vital, ReadingError};
//! assert!(Vital::HeartRate { bpm: 72 }.check().is_ok());
//! assert_eq!(Vital::HeartRate { bpm: 60000 }.check(), Err(ReadingError::OutOfRange));
//! ```

use core::fmt;
use serde::{Deserialize, Serialize};

/// Maximum bytes of an opaque reading.
pub const OPAQUE_MAX: usize = 64;

/// One measured value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Vital {
    /// Body temperature in hundredths of a degree Celsius (3712 = 37.12 °C).
    BodyTemperature {
        /// 0.01 °C units.
        centi_celsius: i16,
    },
    /// Peripheral oxygen saturation, percent.
    SpO2 {
        /// Whole percent.
        percent: u8,
    },
    /// Arterial blood pressure.
    BloodPressure {
        /// Systolic pressure, mmHg.
        systolic_mmhg: u16,
        /// Diastolic pressure, mmHg.
        diastolic_mmhg: u16,
    },
    /// Heart rate.
    HeartRate {
        /// Beats per minute.
        bpm: u16,
    },
    /// Any other sensor: a sensor-defined kind and at most [`OPAQUE_MAX`] bytes.
    Opaque {
        /// Sensor-defined kind (documented by the sensor's vendor).
        kind: u16,
        /// The value's bytes.
        data: heapless::Vec<u8, OPAQUE_MAX>,
    },
}

impl Vital {
    /// Writes its postcard encoding (the bytes `codec::encode_to_slice`
    /// writes; written out for a sensor's flash) into `buf`.
    pub fn encode_into<'b>(
        &self,
        buf: &'b mut [u8],
    ) -> Result<&'b mut [u8], crate::codec::EncodeError> {
        let mut w = crate::codec::Writer::new(buf);
        let n = self
            .write(&mut w)
            .map(|()| w.len())
            .ok_or(crate::codec::EncodeError::BufferFull)?;
        buf.get_mut(..n)
            .ok_or(crate::codec::EncodeError::BufferFull)
    }

    pub(crate) fn write(&self, w: &mut crate::codec::Writer<'_>) -> Option<()> {
        match self {
            Vital::BodyTemperature { centi_celsius } => {
                w.varint(0)?;
                // postcard zigzags signed integers
                let z = ((*centi_celsius << 1) ^ (*centi_celsius >> 15)) as u16;
                w.varint(u64::from(z))
            }
            Vital::SpO2 { percent } => {
                w.varint(1)?;
                w.bytes(&[*percent])
            }
            Vital::BloodPressure {
                systolic_mmhg,
                diastolic_mmhg,
            } => {
                w.varint(2)?;
                w.varint(u64::from(*systolic_mmhg))?;
                w.varint(u64::from(*diastolic_mmhg))
            }
            Vital::HeartRate { bpm } => {
                w.varint(3)?;
                w.varint(u64::from(*bpm))
            }
            Vital::Opaque { kind, data } => {
                w.varint(4)?;
                w.varint(u64::from(*kind))?;
                w.seq(data)
            }
        }
    }
}

/// Why a reading is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ReadingError {
    /// The value is outside the documented plausibility range.
    OutOfRange,
    /// Systolic pressure not above diastolic.
    Inconsistent,
}

impl fmt::Display for ReadingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReadingError::OutOfRange => "value outside the plausible range",
            ReadingError::Inconsistent => "systolic pressure must exceed diastolic",
        })
    }
}

impl core::error::Error for ReadingError {}

impl Vital {
    /// Checks the plausibility range of the table above.
    pub fn check(&self) -> Result<(), ReadingError> {
        let ok = match *self {
            Vital::BodyTemperature { centi_celsius } => (2500..=4500).contains(&centi_celsius),
            Vital::SpO2 { percent } => (50..=100).contains(&percent),
            Vital::BloodPressure {
                systolic_mmhg,
                diastolic_mmhg,
            } => {
                if !(50..=260).contains(&systolic_mmhg) || !(20..=160).contains(&diastolic_mmhg) {
                    false
                } else if systolic_mmhg <= diastolic_mmhg {
                    return Err(ReadingError::Inconsistent);
                } else {
                    true
                }
            }
            Vital::HeartRate { bpm } => (20..=250).contains(&bpm),
            Vital::Opaque { .. } => true,
        };
        if ok {
            Ok(())
        } else {
            Err(ReadingError::OutOfRange)
        }
    }

    /// A short name of the kind of value, for logs and indexes.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Vital::BodyTemperature { .. } => "body_temperature",
            Vital::SpO2 { .. } => "spo2",
            Vital::BloodPressure { .. } => "blood_pressure",
            Vital::HeartRate { .. } => "heart_rate",
            Vital::Opaque { .. } => "opaque",
        }
    }
}

impl fmt::Display for Vital {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Vital::BodyTemperature { centi_celsius: c } => {
                let sign = if *c < 0 { "-" } else { "" };
                let a = c.unsigned_abs();
                write!(f, "{sign}{}.{:02} °C", a / 100, a % 100)
            }
            Vital::SpO2 { percent } => write!(f, "SpO2 {percent} %"),
            Vital::BloodPressure {
                systolic_mmhg,
                diastolic_mmhg,
            } => write!(f, "{systolic_mmhg}/{diastolic_mmhg} mmHg"),
            Vital::HeartRate { bpm } => write!(f, "{bpm} bpm"),
            Vital::Opaque { kind, data } => write!(f, "opaque kind {kind}, {} bytes", data.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use Vital::*;
        assert!(
            BodyTemperature {
                centi_celsius: 3700
            }
            .check()
            .is_ok()
        );
        assert!(
            BodyTemperature {
                centi_celsius: 2499
            }
            .check()
            .is_err()
        );
        assert!(
            BodyTemperature {
                centi_celsius: 4501
            }
            .check()
            .is_err()
        );
        assert!(SpO2 { percent: 100 }.check().is_ok());
        assert!(SpO2 { percent: 101 }.check().is_err());
        assert!(SpO2 { percent: 49 }.check().is_err());
        let bp = |s, d| {
            BloodPressure {
                systolic_mmhg: s,
                diastolic_mmhg: d,
            }
            .check()
        };
        assert!(bp(120, 80).is_ok());
        assert_eq!(bp(80, 120), Err(ReadingError::Inconsistent));
        assert_eq!(bp(300, 80), Err(ReadingError::OutOfRange));
        assert!(HeartRate { bpm: 250 }.check().is_ok());
        assert_eq!(
            HeartRate { bpm: 60000 }.check(),
            Err(ReadingError::OutOfRange)
        );
        assert_eq!(HeartRate { bpm: 19 }.check(), Err(ReadingError::OutOfRange));
    }

    #[test]
    fn display() {
        assert_eq!(
            std::format!(
                "{}",
                Vital::BodyTemperature {
                    centi_celsius: 3705
                }
            ),
            "37.05 °C"
        );
    }
}
