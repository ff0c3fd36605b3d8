//! Micro-benchmarks of the core: signatures (sign, the strict ledger rule,
//! the device rule), the handshake (each step of both roles and the whole
//! exchange), session frames, sealed payloads, the Merkle tree, block
//! validation, the state transition and the state commitment.
//!
//! Run: `cargo bench -p sensorchain-core --features std --bench core`
//! (add `-- verify` to run only the benchmarks whose name contains
//! `verify`). Measurement times are short on purpose (the whole suite takes
//! a few minutes); figures and how to read them are in docs/PERFORMANCE.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use sensorchain_core::block::Block;
use sensorchain_core::chain::build_block;
use sensorchain_core::handshake::{
    Allowlist, HandshakeConfig, Initiator, MESSAGE1_LEN, MESSAGE2_LEN, MESSAGE3_LEN, Refusal,
    Responder, ResponderTable,
};
use sensorchain_core::hash::ChainId;
use sensorchain_core::identity::{KeyId, Keypair, PublicKey, VerifyingKey};
use sensorchain_core::merkle;
use sensorchain_core::permissions::{Permissions, Role};
use sensorchain_core::reading::Vital;
use sensorchain_core::sealed;
use sensorchain_core::session::{FRAME_DATA, FRAME_OVERHEAD, Session};
use sensorchain_core::state::{SigCheck, WorldState};
use sensorchain_core::tx::{GenesisConfig, Member, Params, Transaction, TxBody, TxKind};

/// A small deterministic RNG (benchmarks only: not for keys that matter).
struct BenchRng(u64);

impl rand_core::TryRng for BenchRng {
    type Error = core::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok((self.try_next_u64()? >> 32) as u32)
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Ok(z ^ (z >> 31))
    }
    fn try_fill_bytes(&mut self, d: &mut [u8]) -> Result<(), Self::Error> {
        for c in d.chunks_mut(8) {
            let v = self.try_next_u64()?.to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
        Ok(())
    }
}
impl rand_core::TryCryptoRng for BenchRng {}

const CHAIN: &str = "bench";
/// Devices registered at genesis (the genesis list holds at most 16 members).
const DEVICES: usize = 12;

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
}

fn device(i: usize) -> Keypair {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&(i as u64 + 100).to_le_bytes());
    Keypair::from_seed(seed)
}

fn admin() -> Keypair {
    Keypair::from_seed([1; 32])
}

/// A chain state after genesis: one admin (also the proposer) and
/// [`DEVICES`] devices.
fn genesis_state() -> (WorldState, Keypair, Vec<Keypair>) {
    let admin = admin();
    let devices: Vec<Keypair> = (0..DEVICES).map(device).collect();
    let mut members = vec![Member {
        key: admin.public(),
        permissions: Permissions::ALL,
        role: Role::Admin,
    }];
    for d in &devices {
        members.push(Member::of_role(d.public(), Role::Device));
    }
    let cfg = GenesisConfig::new(CHAIN, Params::default(), &members).unwrap();
    let g = sensorchain_core::chain::Chain::genesis_block(&admin, cfg, 1_000).unwrap();
    let mut st = WorldState::new(g.header.chain_id);
    st.apply_block(&g, None, SigCheck::Verify).unwrap();
    (st, admin, devices)
}

/// `n` signed plain readings spread over the devices, sequences from `first`.
fn readings(chain: &ChainId, devices: &[Keypair], n: usize, first: u64) -> Vec<Transaction> {
    (0..n)
        .map(|i| {
            let d = &devices[i % devices.len()];
            let seq = first + (i / devices.len()) as u64;
            let body = TxBody::reading(
                d.public(),
                seq,
                2_000,
                (i % 4) as u16,
                Vital::HeartRate {
                    bpm: 60 + (i % 40) as u16,
                },
            );
            Transaction::sign(body, chain, d).unwrap()
        })
        .collect()
}

fn signatures(c: &mut Criterion) {
    let kp = device(0);
    let vk = VerifyingKey::from_public(&kp.public()).unwrap();
    let msg = [0x5au8; 100];
    let sig = kp.sign(&msg);
    let chain = ChainId([0xbe; 32]);
    let mut g = c.benchmark_group("signature");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sign_100B", |b| b.iter(|| kp.sign(black_box(&msg))));
    g.bench_function("verify_strict_100B", |b| {
        b.iter(|| vk.verify(black_box(&msg), black_box(&sig)))
    });
    g.bench_function("verify_device_100B", |b| {
        b.iter(|| kp.public().verify_device(black_box(&msg), black_box(&sig)))
    });
    g.bench_function("register_key", |b| {
        b.iter(|| VerifyingKey::from_public(black_box(&kp.public())))
    });
    let body = TxBody::reading(kp.public(), 1, 2_000, 3, Vital::HeartRate { bpm: 70 });
    g.bench_function("sign_reading_tx", |b| {
        b.iter(|| Transaction::sign(black_box(body.clone()), &chain, &kp))
    });
    let tx = Transaction::sign(body, &chain, &kp).unwrap();
    let enc = tx.to_vec();
    g.bench_function("verify_reading_tx_encoded", |b| {
        b.iter(|| Transaction::verify_encoded(black_box(&enc), &chain, &vk, &tx.signature))
    });
    g.bench_function("decode_reading_tx", |b| {
        b.iter(|| Transaction::decode(black_box(&enc)))
    });
    g.finish();
}

struct One(VerifyingKey);
impl Allowlist for One {
    fn lookup(&self, id: &KeyId) -> Result<VerifyingKey, Refusal> {
        if *id == self.0.public().key_id() {
            Ok(self.0)
        } else {
            Err(Refusal::Unknown)
        }
    }
}

/// The two ends of the benchmarked handshakes, each step with a fresh seed
/// (the responder's replay cache never sees an ephemeral key twice).
struct Ends<'a> {
    cfg: &'a HandshakeConfig,
    dev: &'a Keypair,
    gw: &'a Keypair,
    allow: &'a One,
    /// The gateways the device trusts: `gw`.
    trusted: &'a [PublicKey],
}

/// The tables of the benchmarked responder.
type BenchTable = ResponderTable<64, 256>;

impl Ends<'_> {
    /// The device's message 1 of a new handshake.
    fn start(&self) -> (Initiator, [u8; MESSAGE1_LEN], usize) {
        let mut m1 = [0u8; MESSAGE1_LEN];
        let mut rng = BenchRng(rng_seed());
        let (init, n1) = Initiator::start(self.cfg, self.dev, 0, &mut rng, &mut m1).unwrap();
        (init, m1, n1)
    }

    /// The gateway's message 2 answering `m1`, and its half-open state.
    fn respond(&self, table: &mut BenchTable, m1: &[u8]) -> (Responder, [u8; MESSAGE2_LEN], usize) {
        let mut m2 = [0u8; MESSAGE2_LEN];
        let mut rng = BenchRng(rng_seed());
        let (r, n2) = Responder::respond(
            self.cfg, self.gw, table, self.allow, m1, 0, &mut rng, &mut m2,
        )
        .unwrap();
        (r, m2, n2)
    }

    /// The device's message 3 completing its side on `m2`.
    fn finish(&self, init: Initiator, m2: &[u8]) -> ([u8; MESSAGE3_LEN], usize) {
        let mut m3 = [0u8; MESSAGE3_LEN];
        let (_, n3) = init.finish(self.dev, self.trusted, m2, 1, &mut m3).unwrap();
        (m3, n3)
    }
}

fn handshake(c: &mut Criterion) {
    let dev = device(0);
    let gw = Keypair::from_seed([2; 32]);
    let cfg = HandshakeConfig::new(ChainId([0xbe; 32]));
    let allow = One(VerifyingKey::from_public(&dev.public()).unwrap());
    let trusted = [gw.public()];
    let mut table: Box<BenchTable> = Box::new(ResponderTable::new());
    let mut rng = BenchRng(7);
    let ends = Ends {
        cfg: &cfg,
        dev: &dev,
        gw: &gw,
        allow: &allow,
        trusted: &trusted,
    };
    let mut g = c.benchmark_group("handshake");
    g.bench_function("initiator_start", |b| {
        let mut m1 = [0u8; MESSAGE1_LEN];
        b.iter(|| Initiator::start(&cfg, &dev, 0, &mut rng, &mut m1).map(|_| ()))
    });
    g.bench_function("responder_respond", |b| {
        b.iter_batched(
            || {
                let mut m1 = [0u8; MESSAGE1_LEN];
                let (_, n) =
                    Initiator::start(&cfg, &dev, 0, &mut BenchRng(rng_seed()), &mut m1).unwrap();
                (m1, n)
            },
            |(m1, n)| {
                let mut m2 = [0u8; MESSAGE2_LEN];
                let (r, _) = Responder::respond(
                    &cfg,
                    &gw,
                    &mut *table,
                    &allow,
                    &m1[..n],
                    0,
                    &mut BenchRng(3),
                    &mut m2,
                )
                .unwrap();
                r.abort(&mut *table);
            },
            BatchSize::SmallInput,
        )
    });
    // A fresh message 2 for each run of the initiator's second step.
    let mut table2: Box<BenchTable> = Box::new(ResponderTable::new());
    g.bench_function("initiator_finish", |b| {
        b.iter_batched(
            || {
                let (init, m1, n1) = ends.start();
                let (r, m2, n2) = ends.respond(&mut table2, &m1[..n1]);
                r.abort(&mut *table2);
                (init, m2, n2)
            },
            |(init, m2, n2)| {
                let mut m3 = [0u8; MESSAGE3_LEN];
                init.finish(&dev, &trusted[..], &m2[..n2], 1, &mut m3)
                    .map(|_| ())
            },
            BatchSize::SmallInput,
        )
    });
    let table3: std::cell::RefCell<Box<BenchTable>> =
        std::cell::RefCell::new(Box::new(ResponderTable::new()));
    g.bench_function("responder_finish", |b| {
        b.iter_batched(
            || {
                let (init, m1, n1) = ends.start();
                let (r, m2, n2) = ends.respond(&mut table3.borrow_mut(), &m1[..n1]);
                let (m3, n3) = ends.finish(init, &m2[..n2]);
                (r, m3, n3)
            },
            |(r, m3, n3)| {
                r.finish(&mut **table3.borrow_mut(), &m3[..n3], 2)
                    .map(|_| ())
            },
            // one setup, one finish: a batch of set-up handshakes would hold
            // more half-open slots than the table has
            BatchSize::PerIteration,
        )
    });
    let mut table4: Box<BenchTable> = Box::new(ResponderTable::new());
    g.bench_function("full_exchange", |b| {
        b.iter(|| {
            let (init, m1, n1) = ends.start();
            let (r, m2, n2) = ends.respond(&mut table4, &m1[..n1]);
            let (m3, n3) = ends.finish(init, &m2[..n2]);
            r.finish(&mut *table4, &m3[..n3], 2).map(|_| ())
        })
    });
    g.finish();
}

/// A fresh seed per handshake, so the responder's replay cache never sees a
/// repeated ephemeral key.
fn rng_seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    N.fetch_add(1, Ordering::Relaxed)
        .wrapping_mul(0x2545_f491_4f6c_dd1d)
}

fn session(c: &mut Criterion) {
    let mut g = c.benchmark_group("session");
    let payload = [0x42u8; 64];
    g.throughput(Throughput::Bytes(payload.len() as u64));
    let mut tx = Session::from_keys([1; 32], [2; 32]);
    g.bench_function("seal_64B", |b| {
        let mut out = [0u8; 64 + FRAME_OVERHEAD];
        b.iter(|| {
            tx.seal(FRAME_DATA, black_box(&payload), &mut out)
                .map(|f| f.len())
        })
    });
    let mut sender = Session::from_keys([3; 32], [4; 32]);
    let mut receiver = Session::from_keys([4; 32], [3; 32]);
    g.bench_function("open_64B", |b| {
        b.iter_batched(
            || {
                let mut out = [0u8; 64 + FRAME_OVERHEAD];
                let n = sender.seal(FRAME_DATA, &payload, &mut out).unwrap().len();
                (out, n)
            },
            |(mut f, n)| receiver.open_in_place(&mut f[..n]).map(|o| o.payload.len()),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn sealed_payloads(c: &mut Criterion) {
    let mut g = c.benchmark_group("sealed");
    let patient = Keypair::from_seed([8; 32]);
    let doctor = Keypair::from_seed([9; 32]);
    let readers = [patient.public(), doctor.public()];
    let plain = [7u8; 8];
    let binding = [3u8; 32];
    let mut rng = BenchRng(11);
    g.bench_function("seal_2_readers", |b| {
        b.iter(|| sealed::seal(black_box(&plain), &readers, &binding, &mut rng).map(|_| ()))
    });
    let p = sealed::seal(&plain, &readers, &binding, &mut rng).unwrap();
    g.bench_function("open_as_reader", |b| {
        let mut out = [0u8; 128];
        b.iter(|| p.open(&doctor, &binding, &mut out).map(|o| o.len()))
    });
    g.finish();
}

fn merkle_tree(c: &mut Criterion) {
    let mut g = c.benchmark_group("merkle");
    for n in [1_000usize, 10_000] {
        let leaves: Vec<_> = (0..n)
            .map(|i| merkle::leaf_hash(&(i as u64).to_le_bytes()))
            .collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("root_{n}_leaves"), |b| {
            b.iter(|| merkle::root_from_leaf_hashes(black_box(&leaves)))
        });
        g.throughput(Throughput::Elements(1));
        let idx = (n / 2 + 1) as u64;
        g.bench_function(format!("inclusion_proof_make_{n}"), |b| {
            b.iter(|| merkle::inclusion_proof(black_box(&leaves), idx).map(|p| p.len()))
        });
        let proof = merkle::inclusion_proof(&leaves, idx).unwrap();
        let root = merkle::root_from_leaf_hashes(&leaves);
        g.bench_function(format!("inclusion_proof_verify_{n}"), |b| {
            b.iter(|| merkle::verify_inclusion(&leaves[idx as usize], idx, n as u64, &proof, &root))
        });
    }
    g.finish();
}

fn blocks(c: &mut Criterion) {
    let (st, admin, devices) = genesis_state();
    let chain = *st.chain_id();
    let mut g = c.benchmark_group("block");
    for n in [100usize, 1_000] {
        let txs = readings(&chain, &devices, n, 1);
        let block: Block = build_block(&st, &admin, txs, 3_000, SigCheck::Verify).unwrap();
        let encoded = block.encoded_txs();
        g.throughput(Throughput::Elements(n as u64));
        // The auditor's and a follower's path: every signature checked.
        g.bench_function(format!("apply_block_verify_{n}_readings"), |b| {
            b.iter_batched_ref(
                || st.clone(),
                |s| s.apply_block_encoded(&block, &encoded, None, SigCheck::Verify),
                BatchSize::SmallInput,
            )
        });
        // The gateway's path: signatures verified once at ingest.
        g.bench_function(format!("apply_block_already_verified_{n}_readings"), |b| {
            b.iter_batched_ref(
                || st.clone(),
                |s| s.apply_block_encoded(&block, &encoded, None, SigCheck::AlreadyVerified),
                BatchSize::SmallInput,
            )
        });
        g.bench_function(format!("encode_txs_{n}"), |b| {
            b.iter(|| black_box(&block).encoded_txs())
        });
        g.bench_function(format!("decode_block_{n}"), |b| {
            let bytes = block.to_vec();
            b.iter(|| Block::decode(black_box(&bytes)).map(|b| b.txs.len()))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("state");
    // One reading through the state transition (no signature).
    let txs = readings(&chain, &devices, 1, 1);
    let enc = txs[0].to_vec();
    g.bench_function("apply_tx_reading_already_verified", |b| {
        b.iter_batched_ref(
            || st.clone(),
            |s| s.apply_tx(&txs[0], &enc, 3_000, SigCheck::AlreadyVerified),
            BatchSize::SmallInput,
        )
    });
    g.bench_function(format!("commitment_{}_identities", DEVICES + 1), |b| {
        b.iter(|| black_box(&st).commitment())
    });
    // A larger state: 1,000 more identities granted by the admin.
    let big = {
        let mut s = st.clone();
        let grants: Vec<Transaction> = (0..1_000u64)
            .map(|i| {
                let body = TxBody {
                    signer: admin.public(),
                    sequence: i + 1,
                    timestamp_ms: 2_000,
                    kind: TxKind::Grant {
                        target: device(10_000 + i as usize).public(),
                        permissions: Role::Device.default_permissions(),
                    },
                };
                Transaction::sign(body, &chain, &admin).unwrap()
            })
            .collect();
        let b = build_block(&s, &admin, grants, 3_000, SigCheck::Verify).unwrap();
        s.apply_block(&b, None, SigCheck::Verify).unwrap();
        s
    };
    g.bench_function("commitment_1013_identities", |b| {
        b.iter(|| black_box(&big).commitment())
    });
    g.bench_function("clone_1013_identities", |b| {
        b.iter(|| black_box(&big).clone())
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = signatures, handshake, session, sealed_payloads, merkle_tree, blocks
}
criterion_main!(benches);
