//! Simulated medical sensors, after the Medical-IoT paper's experiment: body
//! temperature, SpO2, blood pressure and heart rate, random but
//! physiologically plausible and drifting.
//!
//! Each [`Patient`] has a personal baseline drawn from its seed; every step
//! each vital takes a bounded random walk that is pulled back towards the
//! baseline (an Ornstein–Uhlenbeck-like drift), and now and then an
//! *episode* (fever, tachycardia, desaturation, hypertension) moves the
//! target for a while and then fades. Every value is clamped well inside the
//! core's plausibility ranges ([`Vital::check`]), so a simulated reading is
//! never refused as implausible. Everything is deterministic from the seed.
//!
//! [`SimSensor`] turns the values into signed reading transactions (plain,
//! or sealed for a list of readers with [`sealed_binding`]).
//!
//! This is the simulated sensor of `sensorchain sensor-sim`, the demo, the
//! benchmark and the tests: it is in the library (not the CLI) because all
//! of them, the process-level tests included, use the one simulation.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use sensorchain_core::hash::ChainId;
use sensorchain_core::identity::{Keypair, PublicKey};
use sensorchain_core::reading::Vital;
use sensorchain_core::sealed;
pub use sensorchain_core::tx::sealed_binding;
use sensorchain_core::tx::{Payload, Transaction, TxBody, TxKind};

/// Stream numbers of the four vitals.
pub mod stream {
    /// Body temperature.
    pub const TEMPERATURE: u16 = 0;
    /// SpO2.
    pub const SPO2: u16 = 1;
    /// Blood pressure.
    pub const BLOOD_PRESSURE: u16 = 2;
    /// Heart rate.
    pub const HEART_RATE: u16 = 3;
}

/// A transient condition that shifts some vitals for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Episode {
    /// Temperature up to about 39 °C, heart rate up.
    Fever,
    /// Heart rate 120–150 bpm.
    Tachycardia,
    /// SpO2 down to about 88–91 %.
    Desaturation,
    /// Systolic and diastolic pressure up.
    Hypertension,
}

#[derive(Debug, Clone, Copy)]
struct Baseline {
    temp: f64,
    spo2: f64,
    sys: f64,
    dia: f64,
    hr: f64,
}

/// One simulated patient's vitals.
#[derive(Debug)]
pub struct Patient {
    rng: StdRng,
    base: Baseline,
    cur: Baseline,
    episode: Option<(Episode, u32, u32)>,
    next_stream: u16,
}

/// Clamping bands, inside the core's plausibility ranges
/// (temperature 25–45 °C, SpO2 50–100 %, systolic 50–260, diastolic 20–160,
/// heart rate 20–250).
const TEMP: (f64, f64) = (3400.0, 4150.0);
const SPO2: (f64, f64) = (80.0, 100.0);
const SYS: (f64, f64) = (80.0, 210.0);
const DIA: (f64, f64) = (45.0, 125.0);
const HR: (f64, f64) = (35.0, 190.0);

impl Patient {
    /// A patient with a baseline drawn from `seed`.
    pub fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let base = Baseline {
            temp: rng.random_range(3630.0..3730.0),
            spo2: rng.random_range(95.0..99.5),
            sys: rng.random_range(105.0..135.0),
            dia: rng.random_range(65.0..85.0),
            hr: rng.random_range(58.0..88.0),
        };
        Patient {
            rng,
            base,
            cur: base,
            episode: None,
            next_stream: 0,
        }
    }

    /// The episode in progress, if any.
    pub fn episode(&self) -> Option<Episode> {
        self.episode.map(|(e, _, _)| e)
    }

    /// Where the vitals drift to now: the baseline, shifted by an episode
    /// (ramping up over its first steps and down over its last).
    fn target(&self) -> Baseline {
        let mut t = self.base;
        if let Some((e, left, total)) = self.episode {
            let ramp = 10.0_f64;
            let done = f64::from(total - left);
            let k = (done / ramp).min(f64::from(left) / ramp).min(1.0);
            match e {
                Episode::Fever => {
                    t.temp += 180.0 * k;
                    t.hr += 18.0 * k;
                }
                Episode::Tachycardia => t.hr = t.hr + (135.0 - t.hr) * k,
                Episode::Desaturation => t.spo2 -= 7.0 * k,
                Episode::Hypertension => {
                    t.sys += 35.0 * k;
                    t.dia += 15.0 * k;
                }
            }
        }
        t
    }

    fn walk(rng: &mut StdRng, x: f64, target: f64, step: f64, band: (f64, f64)) -> f64 {
        let noise: f64 = rng.random_range(-step..=step);
        (x + 0.15 * (target - x) + noise).clamp(band.0, band.1)
    }

    /// Advances the patient by one step and returns all four vitals.
    pub fn step(&mut self) -> [Vital; 4] {
        match &mut self.episode {
            Some((_, left, _)) if *left > 1 => *left -= 1,
            Some(_) => self.episode = None,
            None => {
                if self.rng.random_bool(0.01) {
                    let e = match self.rng.random_range(0..4u8) {
                        0 => Episode::Fever,
                        1 => Episode::Tachycardia,
                        2 => Episode::Desaturation,
                        _ => Episode::Hypertension,
                    };
                    let len = self.rng.random_range(30..120u32);
                    self.episode = Some((e, len, len));
                }
            }
        }
        let t = self.target();
        let r = &mut self.rng;
        let c = &mut self.cur;
        c.temp = Self::walk(r, c.temp, t.temp, 4.0, TEMP);
        c.spo2 = Self::walk(r, c.spo2, t.spo2, 0.6, SPO2);
        c.sys = Self::walk(r, c.sys, t.sys, 2.0, SYS);
        c.dia = Self::walk(r, c.dia, t.dia, 1.5, DIA);
        c.dia = c.dia.min(c.sys - 20.0);
        c.hr = Self::walk(r, c.hr, t.hr, 2.0, HR);
        [
            Vital::BodyTemperature {
                centi_celsius: c.temp.round() as i16,
            },
            Vital::SpO2 {
                percent: c.spo2.round() as u8,
            },
            Vital::BloodPressure {
                systolic_mmhg: c.sys.round() as u16,
                diastolic_mmhg: c.dia.round() as u16,
            },
            Vital::HeartRate {
                bpm: c.hr.round() as u16,
            },
        ]
    }

    /// The next reading, the four streams in turn (a step every four).
    pub fn next_reading(&mut self) -> (u16, Vital) {
        let s = self.next_stream;
        self.next_stream = (s + 1) % 4;
        if s == 0 {
            self.step();
        }
        let c = &self.cur;
        let v = match s {
            stream::TEMPERATURE => Vital::BodyTemperature {
                centi_celsius: c.temp.round() as i16,
            },
            stream::SPO2 => Vital::SpO2 {
                percent: c.spo2.round() as u8,
            },
            stream::BLOOD_PRESSURE => Vital::BloodPressure {
                systolic_mmhg: c.sys.round() as u16,
                diastolic_mmhg: c.dia.round() as u16,
            },
            _ => Vital::HeartRate {
                bpm: c.hr.round() as u16,
            },
        };
        (s, v)
    }
}

/// A signed plain reading transaction (its exact bytes).
pub fn reading_tx(
    kp: &Keypair,
    chain: &ChainId,
    sequence: u64,
    timestamp_ms: u64,
    stream: u16,
    v: Vital,
) -> Vec<u8> {
    let body = TxBody::reading(kp.public(), sequence, timestamp_ms, stream, v);
    Transaction::sign(body, chain, kp)
        .map(|t| t.to_vec())
        .unwrap_or_default()
}

/// A signed reading transaction whose value is sealed for `readers`: the
/// postcard encoding of the [`Vital`], sealed with
/// [`sealed_binding`]`(chain, device, stream, sequence)` as binding.
#[allow(clippy::too_many_arguments)]
pub fn sealed_reading_tx<R: rand::CryptoRng + ?Sized>(
    kp: &Keypair,
    chain: &ChainId,
    sequence: u64,
    timestamp_ms: u64,
    stream: u16,
    v: &Vital,
    readers: &[PublicKey],
    rng: &mut R,
) -> anyhow::Result<Vec<u8>> {
    let mut plain = [0u8; sealed::MAX_SEALED_PLAINTEXT];
    let p = sensorchain_core::codec::encode_to_slice(v, &mut plain)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let binding = sealed_binding(chain, &kp.public(), stream, sequence);
    let payload =
        sealed::seal(p, readers, &binding, rng).map_err(|e| anyhow::anyhow!("seal: {e:?}"))?;
    let body = TxBody {
        signer: kp.public(),
        sequence,
        timestamp_ms,
        kind: TxKind::Reading {
            stream,
            payload: Payload::Sealed(payload),
        },
    };
    Ok(Transaction::sign(body, chain, kp)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .to_vec())
}

/// A simulated sensor: a patient's vitals as signed transactions with
/// increasing sequence numbers.
#[derive(Debug)]
pub struct SimSensor {
    key: Keypair,
    chain: ChainId,
    patient: Patient,
    next_sequence: u64,
    readers: Vec<PublicKey>,
    rng: StdRng,
}

impl SimSensor {
    /// A sensor signing as `key` on `chain`, its vitals drawn from `seed`,
    /// numbering its transactions from `first_sequence`.
    pub fn new(key: Keypair, chain: ChainId, seed: u64, first_sequence: u64) -> Self {
        SimSensor {
            key,
            chain,
            patient: Patient::new(seed),
            next_sequence: first_sequence.max(1),
            readers: Vec::new(),
            rng: StdRng::seed_from_u64(seed ^ 0x5ea1_u64),
        }
    }

    /// Seals every reading for these readers (none: readings in clear).
    pub fn seal_for(mut self, readers: Vec<PublicKey>) -> Self {
        self.readers = readers;
        self
    }

    /// The sensor's identity.
    pub fn key(&self) -> &Keypair {
        &self.key
    }

    /// The sequence number the next transaction will carry.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// Moves the next sequence number forward to at least `seq` (to resume
    /// above the last one the chain accepted).
    pub fn resume_from(&mut self, seq: u64) {
        self.next_sequence = self.next_sequence.max(seq);
    }

    /// The patient.
    pub fn patient(&self) -> &Patient {
        &self.patient
    }

    /// The next reading as a signed transaction (exact bytes), timestamped
    /// `now_ms`, and its sequence number.
    pub fn next_tx(&mut self, now_ms: u64) -> anyhow::Result<(u64, Vec<u8>)> {
        let (stream, v) = self.patient.next_reading();
        let seq = self.next_sequence;
        self.next_sequence += 1;
        let tx = if self.readers.is_empty() {
            reading_tx(&self.key, &self.chain, seq, now_ms, stream, v)
        } else {
            sealed_reading_tx(
                &self.key,
                &self.chain,
                seq,
                now_ms,
                stream,
                &v,
                &self.readers,
                &mut self.rng,
            )?
        };
        Ok((seq, tx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plausible_drifting_and_deterministic() {
        for seed in 0..20 {
            let mut p = Patient::new(seed);
            let mut q = Patient::new(seed);
            let mut episodes = 0;
            let mut hr = std::collections::BTreeSet::new();
            for _ in 0..5000 {
                let a = p.step();
                assert_eq!(a, q.step());
                for v in &a {
                    v.check().unwrap_or_else(|e| panic!("{v:?}: {e}"));
                }
                if let Vital::HeartRate { bpm } = a[3] {
                    hr.insert(bpm);
                }
                episodes += usize::from(p.episode().is_some());
            }
            assert!(hr.len() > 10, "heart rate drifts");
            assert!(episodes > 0, "episodes happen");
        }
    }

    #[test]
    fn sealed_reading_opens_for_its_reader() {
        let dev = Keypair::from_seed([1; 32]);
        let doc = Keypair::from_seed([2; 32]);
        let chain = ChainId([7; 32]);
        let mut s = SimSensor::new(dev.clone(), chain, 7, 100).seal_for(vec![doc.public()]);
        let (seq, tx) = s.next_tx(1_000).unwrap();
        assert_eq!(seq, 100);
        let t = Transaction::decode(&tx).unwrap();
        let TxKind::Reading {
            stream,
            payload: Payload::Sealed(sp),
        } = t.body.kind
        else {
            panic!()
        };
        let mut out = [0u8; 128];
        let b = sealed_binding(&chain, &dev.public(), stream, seq);
        let p = sp.open(&doc, &b, &mut out).unwrap();
        let v: Vital = sensorchain_core::codec::decode_exact(p, 128).unwrap();
        v.check().unwrap();
        assert_eq!(s.next_tx(1_001).unwrap().0, 101);
    }
}
