//! sensorchain sensor firmware for QEMU's `mps2-an386` (Cortex-M4F).
//!
//! Boots, reads a simulated MAX30205 (body temperature) and MAX30102 (heart
//! rate, SpO2) through the real drivers over a simulated I2C bus, connects
//! to a `sensorchain run` gateway through CMSDK UART0 (QEMU `-serial
//! tcp:HOST:PORT`), handshakes, streams `READINGS` signed readings and waits
//! for each acknowledgement, then exits through semihosting: status 0 when
//! every reading was committed, 1 otherwise. It also reports timer ticks
//! (under `-icount shift=0`, one tick of the 25 MHz timer is 40
//! instructions) and stack peaks (the stack is painted at boot and again at
//! the start of each phase):
//!
//! ```text
//! ticks sign S sealed R              one signature, one sealed reading (seal + sign)
//! handshake ticks start A finish B wall W stack P depth D
//!                                    the initiator's own computation (message 1;
//!                                    message 2 -> message 3 and session keys), the
//!                                    whole exchange, the stack peak during it and
//!                                    the depth at which the device loop starts it
//! reading ticks T n N                signing (and sealing) in the loop, total of N readings
//! stack boot B handshake H stream S  peak of each phase (bytes from the top)
//! stack peak P bytes                 the whole run
//! ```
#![no_std]
#![no_main]

mod hw;

use core::sync::atomic::{AtomicU32, Ordering::Relaxed};
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

use sensorchain_device::device::Probe;
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

// What the device loop's probe measured (timer ticks, stack bytes).
static T_MARK: AtomicU32 = AtomicU32::new(0);
static HS_START: AtomicU32 = AtomicU32::new(0);
static HS_FINISH: AtomicU32 = AtomicU32::new(0);
static HS_STACK: AtomicU32 = AtomicU32::new(0);
static HS_DEPTH: AtomicU32 = AtomicU32::new(0);
static BOOT_STACK: AtomicU32 = AtomicU32::new(0);
static SIGN_TICKS: AtomicU32 = AtomicU32::new(0);
static SIGN_COUNT: AtomicU32 = AtomicU32::new(0);

/// The device loop's probe: times the initiator's two computations and the
/// signing of each reading, and measures the handshake's stack (painted
/// afresh when it starts). The first handshake is kept.
fn probe(step: Probe) {
    let now = hw::ticks() as u32;
    let first = HS_FINISH.load(Relaxed) == 0;
    let since = now.wrapping_sub(T_MARK.load(Relaxed));
    match step {
        Probe::HandshakeStart if first => {
            BOOT_STACK.store(hw::stack_peak() as u32, Relaxed);
            hw::paint_stack();
            HS_DEPTH.store(hw::stack_depth() as u32, Relaxed);
            T_MARK.store(hw::ticks() as u32, Relaxed);
        }
        Probe::Message1Ready if first => HS_START.store(since, Relaxed),
        Probe::Message3Ready if first => {
            HS_FINISH.store(since, Relaxed);
            HS_STACK.store(hw::stack_peak() as u32, Relaxed);
        }
        Probe::Message2Received | Probe::SignStart => T_MARK.store(now, Relaxed),
        Probe::Signed => {
            SIGN_TICKS.fetch_add(since, Relaxed);
            SIGN_COUNT.fetch_add(1, Relaxed);
        }
        _ => {}
    }
}

#[entry]
fn main() -> ! {
    hw::paint_stack();
    let mut out = Out(hio::hstdout().ok());
    let mut clock = hw::Clock::new();
    let mut uart = hw::Uart0::new();
    let ok = run(&mut out, &mut clock, &mut uart);
    // The stream phase was painted after the handshake.
    let stream = hw::stack_peak() as u32;
    let (boot, hs) = (BOOT_STACK.load(Relaxed), HS_STACK.load(Relaxed));
    out.s("reading ticks ")
        .n(SIGN_TICKS.load(Relaxed).into())
        .s(" n ")
        .n(SIGN_COUNT.load(Relaxed).into())
        .s("\nstack boot ")
        .n(boot.into())
        .s(" handshake ")
        .n(hs.into())
        .s(" stream ")
        .n(stream.into())
        .s("\nstack peak ")
        .n(boot.max(hs).max(stream).into())
        .s(" bytes\n");
    exit(ok)
}

fn run(out: &mut Out, clock: &mut hw::Clock, uart: &mut hw::Uart0) -> bool {
    let chain = ChainId(provision::CHAIN_ID);
    let gateways = [PublicKey(provision::GATEWAY_KEY)];
    let readers: [PublicKey; 1] = [PublicKey(provision::SEAL_FOR.unwrap_or([0; 32]))];
    let identity = Keypair::from_seed(provision::DEVICE_SEED);
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
    device.set_probe(probe);
    let mut rng = Drbg::new(&provision::ENTROPY, device.boot_count(), &hw::boot_noise());
    out.s("sensorchain device boot ")
        .n(device.boot_count())
        .s(" next sequence ")
        .n(device.next_sequence())
        .s("\n");

    // Instruction counts (meaningful under -icount shift=0).
    let t0 = clock.ticks();
    const MSG: &[u8] = b"sensorchain instruction count";
    let sig = identity.sign(MSG);
    let sign_ticks = clock.ticks() - t0;
    // A self-test of the key, and the cost of the check the handshake
    // makes of the gateway's signature.
    let t0 = clock.ticks();
    if identity.public().verify_device(MSG, &sig).is_err() {
        out.s("self-test failed\n");
        return false;
    }
    let verify_ticks = clock.ticks() - t0;
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

    out.s("ticks sign ")
        .n(sign_ticks)
        .s(" verify ")
        .n(verify_ticks)
        .s(" sealed ")
        .n(sealed_ticks)
        .s("\n");
    let t0 = clock.ticks();
    if let Err(e) = device.connect(uart, clock, &mut rng) {
        out.s("handshake failed: ").s(error_name(&e)).s("\n");
        return false;
    }
    let hs_ticks = clock.ticks() - t0;
    out.s("handshake ticks start ")
        .n(HS_START.load(Relaxed).into())
        .s(" finish ")
        .n(HS_FINISH.load(Relaxed).into())
        .s(" wall ")
        .n(hs_ticks)
        .s(" stack ")
        .n(HS_STACK.load(Relaxed).into())
        .s(" depth ")
        .n(HS_DEPTH.load(Relaxed).into())
        .s("\n");
    // The stream phase's stack, from here to the end.
    hw::paint_stack();

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
/// of a sealed reading). Not inlined: its buffers are gone before the loop
/// runs.
#[inline(never)]
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
    let mut tx = [0u8; sensorchain_device::device::TX_BUF];
    Transaction::sign_reading_into(&body, chain, id, &mut tx)
        .ok()
        .map(|_| ())
}
