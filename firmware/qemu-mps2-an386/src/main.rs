//! sensorchain sensor firmware for QEMU's `mps2-an386` (Cortex-M4F).
//!
//! Boots, reads a simulated MAX30205 (body temperature) and MAX30102 (heart
//! rate, SpO2) through the real drivers over a simulated I2C bus, connects
//! to a `sensorchain run` gateway through CMSDK UART0 (QEMU `-serial
//! tcp:HOST:PORT`), handshakes, streams `READINGS` signed readings and waits
//! for each acknowledgement, then exits through semihosting: status 0 when
//! every reading was committed, 1 otherwise. It also reports the timer ticks
//! of one signature, the handshake and one sealed reading (under `-icount
//! shift=0`, one tick of the 25 MHz timer is 40 instructions) and the peak
//! stack (the stack is painted at boot).
#![no_std]
#![no_main]

mod hw;

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hio};
use sensorchain_core::hash::ChainId;
use sensorchain_core::identity::{Keypair, PublicKey};
use sensorchain_core::reading::Vital;
use sensorchain_core::sealed;
use sensorchain_core::tx::{Payload, Transaction, TxBody, TxKind, sealed_binding};
use sensorchain_device::sensor::VitalSensor;
#[cfg(feature = "oximeter")]
use sensorchain_device::sensor::max30102::{Max30102, PulseOximeter};
use sensorchain_device::sensor::max30205::{self, Max30205};
#[cfg(feature = "oximeter")]
use sensorchain_device::sensor::sim::SimBus;
use sensorchain_device::sensor::sim::SimThermometer;
use sensorchain_device::{Device, DeviceConfig, DeviceError, Drbg, Outcome};

mod provision {
    include!(concat!(env!("OUT_DIR"), "/provision.rs"));
}

/// A small printer on the semihosting console: strings and decimal
/// numbers only, so `core::fmt` (several KiB) stays out of the image.
struct Out(Option<hio::HostStream>);

impl Out {
    fn s(&mut self, s: &str) -> &mut Self {
        if let Some(h) = self.0.as_mut() {
            let _ = h.write_all(s.as_bytes());
        }
        self
    }

    fn n(&mut self, v: u64) -> &mut Self {
        // u32 arithmetic: no 64-bit division routine in the image.
        let mut v = v.min(u64::from(u32::MAX)) as u32;
        let mut b = [0u8; 10];
        let mut i = b.len();
        loop {
            i -= 1;
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        if let Some(h) = self.0.as_mut() {
            let _ = h.write_all(&b[i..]);
        }
        self
    }

    fn vital(&mut self, v: &Vital) -> &mut Self {
        match *v {
            Vital::BodyTemperature { centi_celsius } => self
                .s("temperature ")
                .n(u64::from(centi_celsius.unsigned_abs()))
                .s(" centi-degC"),
            Vital::HeartRate { bpm } => self.s("heart rate ").n(u64::from(bpm)).s(" bpm"),
            Vital::SpO2 { percent } => self.s("SpO2 ").n(u64::from(percent)).s(" %"),
            _ => self.s(v.kind_name()),
        }
    }
}

fn exit(ok: bool) -> ! {
    debug::exit(if ok {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    #[allow(clippy::empty_loop)]
    loop {}
}

/// The 32 device interrupts of AN385/AN386, none used: all go to the
/// default handler (saves 832 bytes over cortex-m-rt's generic 240).
#[unsafe(link_section = ".vector_table.interrupts")]
#[unsafe(no_mangle)]
static __INTERRUPTS: [unsafe extern "C" fn(); 32] = [unused_irq; 32];

unsafe extern "C" fn unused_irq() {
    exit(false)
}

/// A panic ends the run with a failure status (no message: keeps core::fmt's
/// panic machinery out of the image).
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    exit(false)
}

#[entry]
fn main() -> ! {
    hw::paint_stack();
    let mut out = Out(hio::hstdout().ok());
    let mut clock = hw::Clock::new();
    let mut uart = hw::Uart0::new();
    let ok = run(&mut out, &mut clock, &mut uart);
    out.s("stack peak ")
        .n(hw::stack_peak() as u64)
        .s(" bytes\n");
    exit(ok)
}

fn run(out: &mut Out, clock: &mut hw::Clock, uart: &mut hw::Uart0) -> bool {
    let chain = ChainId(provision::CHAIN_ID);
    let gateways = [PublicKey(provision::GATEWAY_KEY)];
    let readers: [PublicKey; 1] = [PublicKey(provision::SEAL_FOR.unwrap_or([0; 32]))];
    let identity = Keypair::from_seed(provision::DEVICE_SEED);
    let me = identity.public();
    let mut config = DeviceConfig::new(chain, &gateways);
    if provision::SEAL_FOR.is_some() {
        config.seal_for = &readers;
    }
    config.max_attempts = 5;
    config.answer_timeout_ms = 20_000;

    let storage = hw::HostFileStorage::open();
    let mut device = match Device::new(identity.clone(), config, storage) {
        Ok(d) => d,
        Err(_) => {
            out.s("storage failed\n");
            return false;
        }
    };
    let mut rng = Drbg::new(&provision::ENTROPY, device.boot_count(), &hw::boot_noise());
    let _ = me;
    out.s("sensorchain device boot ")
        .n(device.boot_count())
        .s(" next sequence ")
        .n(device.next_sequence())
        .s("\n");

    // Instruction counts (meaningful under -icount shift=0).
    let t0 = clock.ticks();
    let _ = identity.sign(b"sensorchain instruction count");
    let sign_ticks = clock.ticks() - t0;
    let t0 = clock.ticks();
    let sealed_ticks = match sealed_reading(&identity, &chain, &mut rng) {
        Some(()) => clock.ticks() - t0,
        None => 0,
    };

    let mut temp = Max30205::new(SimThermometer::new(3680), max30205::DEFAULT_ADDRESS);
    if temp.init().is_err() {
        out.s("sensor init failed\n");
        return false;
    }
    #[cfg(feature = "oximeter")]
    let mut ox = {
        let mut d = Max30102::new(SimBus::with_vitals(3680, 72, 97));
        if d.init().is_err() {
            out.s("oximeter init failed\n");
            return false;
        }
        PulseOximeter::new(d, hw::Delay)
    };

    let t0 = clock.ticks();
    if let Err(e) = device.connect(uart, clock, &mut rng) {
        out.s("handshake failed: ").s(error_name(&e)).s("\n");
        return false;
    }
    let hs_ticks = clock.ticks() - t0;
    out.s("timer ticks (x40 = instructions under -icount shift=0): sign ")
        .n(sign_ticks)
        .s(" handshake ")
        .n(hs_ticks)
        .s(" sealed-reading ")
        .n(sealed_ticks)
        .s("\n");

    let mut committed = 0u32;
    let mut sent = 0u32;
    while sent < provision::READINGS {
        #[cfg(feature = "oximeter")]
        let vitals = if sent % 3 == 0 {
            temp.measure().map_err(|_| ())
        } else {
            ox.measure().map_err(|_| ())
        };
        #[cfg(not(feature = "oximeter"))]
        let vitals = temp.measure().map_err(|_| ());
        let Ok(vitals) = vitals else {
            out.s("sensor read failed\n");
            return false;
        };
        for v in vitals {
            if sent >= provision::READINGS {
                break;
            }
            sent += 1;
            match device.submit(uart, clock, &mut rng, v.clone()) {
                Ok(Outcome::Committed {
                    sequence, height, ..
                }) => {
                    committed += 1;
                    out.s("seq ")
                        .n(sequence)
                        .s(" ")
                        .vital(&v)
                        .s(" committed at height ")
                        .n(height)
                        .s("\n");
                }
                Ok(Outcome::Duplicate { sequence }) => {
                    committed += 1;
                    out.s("seq ").n(sequence).s(" committed (ack lost)\n");
                }
                Ok(Outcome::Rejected { sequence, reason }) => {
                    out.s("seq ")
                        .n(sequence)
                        .s(" rejected: ")
                        .s(reason.as_str())
                        .s("\n");
                }
                Err(e) => {
                    out.s("submit failed: ").s(error_name(&e)).s("\n");
                    return false;
                }
            }
        }
    }
    let s = device.stats();
    out.s("committed ")
        .n(u64::from(committed))
        .s("/")
        .n(u64::from(provision::READINGS))
        .s(" readings; handshakes ")
        .n(u64::from(s.handshakes))
        .s(" link failures ")
        .n(u64::from(s.link_failures))
        .s(" resends ")
        .n(u64::from(s.resends))
        .s("\n");
    committed == provision::READINGS
}

fn error_name<L, S>(e: &DeviceError<L, S>) -> &'static str {
    match e {
        DeviceError::Refused(_) => "refused by the gateway",
        DeviceError::Handshake(_) => "handshake (untrusted gateway?)",
        DeviceError::Timeout => "timeout",
        _ => "link, storage or protocol",
    }
}

/// Seals and signs one reading for a reader without sending it (the cost
/// of a sealed reading).
fn sealed_reading(id: &Keypair, chain: &ChainId, rng: &mut Drbg) -> Option<()> {
    let reader = PublicKey(provision::SEAL_FOR.unwrap_or(provision::GATEWAY_KEY));
    let binding = sealed_binding(chain, &id.public(), 0, u64::MAX);
    let plain = [0x03, 0x48]; // HeartRate { bpm: 72 }
    let sp = sealed::seal(&plain, &[reader], &binding, rng).ok()?;
    let body = TxBody {
        signer: id.public(),
        sequence: u64::MAX,
        timestamp_ms: 0,
        kind: TxKind::Reading {
            stream: 0,
            payload: Payload::Sealed(sp),
        },
    };
    let _ = Vital::HeartRate { bpm: 72 };
    Transaction::sign(body, chain, id).ok().map(|_| ())
}
