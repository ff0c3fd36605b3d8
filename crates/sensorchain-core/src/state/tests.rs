use super::*;
use crate::block::{FinalityCert, quorum};
use crate::chain::{Chain, build_block};
use crate::identity::Keypair;
use crate::reading::{ReadingError, Vital};
use crate::tx::{GenesisConfig, Member, Params, Payload, TxBody};
use alloc::vec;

pub(crate) struct World {
    pub admins: Vec<Keypair>,
    pub gateways: Vec<Keypair>,
    pub device: Keypair,
    pub patient: Keypair,
    pub doctor: Keypair,
    pub insurer: Keypair,
    pub chain: Chain,
    pub seq: BTreeMap<PublicKey, u64>,
}

fn kp(n: u8) -> Keypair {
    Keypair::from_seed([n; 32])
}

impl World {
    pub fn new(params: Params) -> World {
        let admins: Vec<Keypair> = (1..=3).map(kp).collect();
        let gateways: Vec<Keypair> = (10..15).map(kp).collect();
        let (device, patient, doctor, insurer) = (kp(20), kp(21), kp(22), kp(23));
        let mut members = Vec::new();
        for a in &admins {
            members.push(Member::of_role(a.public(), Role::Admin));
        }
        for g in &gateways {
            members.push(Member::of_role(g.public(), Role::Gateway));
        }
        for (k, r) in [
            (&device, Role::Device),
            (&patient, Role::Patient),
            (&doctor, Role::Doctor),
            (&insurer, Role::Insurer),
        ] {
            members.push(Member::of_role(k.public(), r));
        }
        let cfg = GenesisConfig::new("ward-7", params, &members).unwrap();
        let chain = Chain::genesis(&admins[0], cfg, 1_000).unwrap();
        World {
            admins,
            gateways,
            device,
            patient,
            doctor,
            insurer,
            chain,
            seq: BTreeMap::new(),
        }
    }

    pub fn tx(&mut self, who: &Keypair, kind: TxKind) -> Transaction {
        let s = self.seq.entry(who.public()).or_insert(0);
        *s += 1;
        let body = TxBody {
            signer: who.public(),
            sequence: *s,
            timestamp_ms: 2_000,
            kind,
        };
        Transaction::sign(body, self.chain.chain_id(), who).unwrap()
    }

    pub fn reading(&mut self, v: Vital) -> Transaction {
        let d = self.device.clone();
        self.tx(
            &d,
            TxKind::Reading {
                stream: 0,
                payload: Payload::Plain(v),
            },
        )
    }

    pub fn commit(&mut self, txs: Vec<Transaction>) -> Result<(), BlockError> {
        let ts = self.chain.state().last_timestamp_ms() + 1000;
        let b = build_block(
            self.chain.state(),
            &self.gateways[0],
            txs,
            ts,
            SigCheck::AlreadyVerified,
        )?;
        self.chain.add_block(b, None)
    }
}

fn hr(bpm: u16) -> Vital {
    Vital::HeartRate { bpm }
}

#[test]
fn readings_replays_and_gaps() {
    let mut w = World::new(Params::default());
    let t1 = w.reading(hr(70));
    w.commit(vec![t1.clone()]).unwrap();
    // replay of the same transaction
    let e = w.commit(vec![t1]).unwrap_err();
    assert_eq!(
        e.kind,
        BlockErrorKind::Tx(TxRuleError::Replay { last: 1, got: 1 })
    );
    assert_eq!(e.tx_index, Some(0));
    // a gap is accepted
    w.seq.insert(w.device.public(), 10);
    let t = w.reading(hr(71));
    w.commit(vec![t]).unwrap();
    assert_eq!(
        w.chain
            .state()
            .identity(&w.device.public())
            .unwrap()
            .last_sequence,
        Some(11)
    );
}

#[test]
fn implausible_reading_refused_with_index() {
    let mut w = World::new(Params::default());
    let a = w.reading(hr(70));
    let b = w.reading(hr(60000));
    let before = w.chain.state().commitment();
    let e = w.commit(vec![a, b]).unwrap_err();
    assert_eq!(
        e.kind,
        BlockErrorKind::Tx(TxRuleError::Reading(ReadingError::OutOfRange))
    );
    assert_eq!(e.tx_index, Some(1));
    assert_eq!(e.height, 1);
    assert_eq!(w.chain.state().commitment(), before);
}

#[test]
fn block_with_one_bad_tx_leaves_state_unchanged() {
    let mut w = World::new(Params::default());
    let good = w.reading(hr(70));
    let mut bad = w.reading(hr(72));
    // build a valid block, then corrupt one signature and re-root it so
    // only the signature is wrong
    let ts = 5_000;
    let mut block = build_block(
        w.chain.state(),
        &w.gateways[0],
        vec![good, bad.clone()],
        ts,
        SigCheck::Verify,
    )
    .unwrap();
    bad.signature.0[0] ^= 1;
    block.txs[1] = bad;
    block.header.tx_root = block.compute_tx_root();
    block.proposer_sig = block.header.sign_proposal(&w.gateways[0]);
    let mut st = w.chain.state().clone();
    let before = (st.commitment(), st.next_height(), st.last_hash());
    let e = st.apply_block(&block, None, SigCheck::Verify).unwrap_err();
    assert!(
        matches!(e.kind, BlockErrorKind::Tx(TxRuleError::BadSignature(_))),
        "{e}"
    );
    assert_eq!(e.tx_index, Some(1));
    assert_eq!((st.commitment(), st.next_height(), st.last_hash()), before);
    assert_eq!(st.identity(&w.device.public()).unwrap().last_sequence, None);
}

#[test]
fn permissions_enforced_and_revocation_keeps_sequence() {
    let mut w = World::new(Params::default());
    let t = w.reading(hr(70));
    w.commit(vec![t]).unwrap();
    let a = w.admins[0].clone();
    let dev = w.device.public();
    let rv = w.tx(
        &a,
        TxKind::Revoke {
            target: dev,
            permissions: Permissions::WRITE,
        },
    );
    w.commit(vec![rv]).unwrap();
    let t = w.reading(hr(70));
    let e = w.commit(vec![t]).unwrap_err();
    assert_eq!(
        e.kind,
        BlockErrorKind::Tx(TxRuleError::NotPermitted {
            needed: Permissions::WRITE
        })
    );
    let g = w.tx(
        &a,
        TxKind::Grant {
            target: dev,
            permissions: Permissions::WRITE,
        },
    );
    w.commit(vec![g]).unwrap();
    // the counter was kept: sequence 1 is still a replay
    w.seq.insert(dev, 0);
    let t = w.reading(hr(70));
    assert!(matches!(
        w.commit(vec![t]).unwrap_err().kind,
        BlockErrorKind::Tx(TxRuleError::Replay { .. })
    ));
    // a non-admin cannot grant
    let d = w.doctor.clone();
    let g = w.tx(
        &d,
        TxKind::Grant {
            target: d.public(),
            permissions: Permissions::WRITE,
        },
    );
    assert_eq!(
        w.commit(vec![g]).unwrap_err().kind,
        BlockErrorKind::Tx(TxRuleError::NotPermitted {
            needed: Permissions::ADMIN
        })
    );
}

#[test]
fn admin_consensus_records_votes() {
    // 3 admins, consensus 1/2 → 2 votes needed to grant ADMIN
    let mut w = World::new(Params::default());
    assert_eq!(w.chain.state().votes_needed(), 2);
    let newbie = kp(40).public();
    let (a0, a1) = (w.admins[0].clone(), w.admins[1].clone());
    let g = w.tx(
        &a0,
        TxKind::Grant {
            target: newbie,
            permissions: Permissions::ADMIN.union(Permissions::CONNECT),
        },
    );
    w.commit(vec![g]).unwrap();
    let st = w.chain.state();
    // CONNECT applied at once, ADMIN pending with one vote
    assert_eq!(st.permissions(&newbie), Permissions::CONNECT);
    let votes: Vec<_> = st.pending_votes().collect();
    assert_eq!(votes.len(), 1);
    assert_eq!(votes[0].1.len(), 1);
    // the same admin voting again is refused, not committed as a no-op
    let g = w.tx(
        &a0,
        TxKind::Grant {
            target: newbie,
            permissions: Permissions::ADMIN,
        },
    );
    assert_eq!(
        w.commit(vec![g]).unwrap_err().kind,
        BlockErrorKind::Tx(TxRuleError::AlreadyVoted)
    );
    assert!(!w.chain.state().has(&newbie, Permissions::ADMIN));
    let g = w.tx(
        &a1,
        TxKind::Grant {
            target: newbie,
            permissions: Permissions::ADMIN,
        },
    );
    w.commit(vec![g]).unwrap();
    assert!(w.chain.state().has(&newbie, Permissions::ADMIN));
    assert_eq!(w.chain.state().pending_votes().count(), 0);
    assert_eq!(w.chain.state().admin_count(), 4);
}

#[test]
fn last_admin_cannot_be_revoked() {
    // one vote suffices
    let mut w = World::new(Params {
        admin_consensus_num: 0,
        ..Default::default()
    });
    let a: Vec<Keypair> = w.admins.clone();
    for victim in &a[1..] {
        let r = w.tx(
            &a[0],
            TxKind::Revoke {
                target: victim.public(),
                permissions: Permissions::ADMIN,
            },
        );
        w.commit(vec![r]).unwrap();
    }
    assert_eq!(w.chain.state().admin_count(), 1);
    let r = w.tx(
        &a[0],
        TxKind::Revoke {
            target: a[0].public(),
            permissions: Permissions::ADMIN,
        },
    );
    assert_eq!(
        w.commit(vec![r]).unwrap_err().kind,
        BlockErrorKind::Tx(TxRuleError::LastAdmin)
    );
}

#[test]
fn consent_and_access_rules() {
    let mut w = World::new(Params::default());
    let (dev, pat, doc, ins) = (
        w.device.public(),
        w.patient.public(),
        w.doctor.public(),
        w.insurer.public(),
    );
    let a = w.admins[0].clone();
    assert!(
        !w.chain.state().may_read(&dev, &pat),
        "unassigned device has no readers"
    );
    let t = w.tx(
        &a,
        TxKind::AssignDevice {
            device: dev,
            patient: pat,
        },
    );
    w.commit(vec![t]).unwrap();
    let st = w.chain.state();
    assert!(st.may_read(&dev, &pat));
    assert!(!st.may_read(&dev, &doc));
    assert!(
        !st.may_read(&dev, &ins),
        "insurer reads nothing without consent"
    );
    let p = w.patient.clone();
    let c = w.tx(
        &p,
        TxKind::Consent {
            reader: doc,
            granted: true,
        },
    );
    w.commit(vec![c]).unwrap();
    assert!(w.chain.state().may_read(&dev, &doc));
    assert_eq!(w.chain.state().authorised_readers(&dev), vec![pat, doc]);
    let c = w.tx(
        &p,
        TxKind::Consent {
            reader: doc,
            granted: false,
        },
    );
    w.commit(vec![c]).unwrap();
    assert!(!w.chain.state().may_read(&dev, &doc));
    let c = w.tx(
        &p,
        TxKind::Consent {
            reader: doc,
            granted: false,
        },
    );
    assert_eq!(
        w.commit(vec![c]).unwrap_err().kind,
        BlockErrorKind::Tx(TxRuleError::NothingToRevoke)
    );
    // only a patient consents, and only to a reader role
    let d = w.doctor.clone();
    let c = w.tx(
        &d,
        TxKind::Consent {
            reader: ins,
            granted: true,
        },
    );
    assert!(w.commit(vec![c]).is_err());
    let c = w.tx(
        &p,
        TxKind::Consent {
            reader: dev,
            granted: true,
        },
    );
    assert_eq!(
        w.commit(vec![c]).unwrap_err().kind,
        BlockErrorKind::Tx(TxRuleError::WrongRole)
    );
    // assigning needs the right roles
    let t = w.tx(
        &a,
        TxKind::AssignDevice {
            device: doc,
            patient: pat,
        },
    );
    assert_eq!(
        w.commit(vec![t]).unwrap_err().kind,
        BlockErrorKind::Tx(TxRuleError::WrongRole)
    );
}

#[test]
fn header_rules() {
    let w = World::new(Params::default());
    let st = w.chain.state().clone();
    let g = &w.gateways[0];
    let base = build_block(&st, g, vec![], 9_000, SigCheck::Verify).unwrap();
    let check = |f: &dyn Fn(&mut Block), resign: bool| {
        let mut b = base.clone();
        f(&mut b);
        if resign {
            b.proposer_sig = b.header.sign_proposal(g);
        }
        let mut s = st.clone();
        s.apply_block(&b, None, SigCheck::Verify).unwrap_err().kind
    };
    assert_eq!(
        check(&|b| b.header.version = 2, true),
        BlockErrorKind::Version
    );
    assert_eq!(
        check(&|b| b.header.chain_id = ChainId([0x78; 32]), true),
        BlockErrorKind::WrongChain
    );
    assert_eq!(
        check(&|b| b.header.height = 5, true),
        BlockErrorKind::Height { expected: 1 }
    );
    assert_eq!(
        check(&|b| b.header.prev_hash = Hash32([1; 32]), true),
        BlockErrorKind::PrevHash
    );
    assert_eq!(
        check(&|b| b.header.timestamp_ms = 1, true),
        BlockErrorKind::Timestamp
    );
    assert_eq!(
        check(&|b| b.header.state_root = Hash32([1; 32]), true),
        BlockErrorKind::StateRoot
    );
    assert_eq!(
        check(&|b| b.header.tx_root = Hash32([1; 32]), true),
        BlockErrorKind::TxRoot
    );
    assert_eq!(
        check(&|b| b.header.nonce = 7, false),
        BlockErrorKind::ProposerSignature
    );
    assert_eq!(
        check(&|b| b.header.difficulty = 3, true),
        BlockErrorKind::Difficulty
    );
    // a non-validator proposer
    let mut b = base.clone();
    b.header.proposer = w.doctor.public();
    b.proposer_sig = b.header.sign_proposal(&w.doctor);
    let mut s = st.clone();
    assert_eq!(
        s.apply_block(&b, None, SigCheck::Verify).unwrap_err().kind,
        BlockErrorKind::ProposerNotValidator
    );
    // and the untouched block applies
    let mut s = st.clone();
    s.apply_block(&base, None, SigCheck::Verify).unwrap();
}

#[test]
fn proof_of_work() {
    let mut w = World::new(Params {
        pow_difficulty: 10,
        ..Default::default()
    });
    assert!(w.chain.blocks()[0].hash().leading_zero_bits() >= 10);
    let t = w.reading(hr(70));
    w.commit(vec![t]).unwrap();
    let b = &w.chain.blocks()[1];
    assert!(b.hash().leading_zero_bits() >= 10);
    // a block whose nonce is changed (and re-signed) fails the work check
    // unless the new hash happens to qualify
    let mut b2 = b.clone();
    let g = w.gateways[0].clone();
    let mut st = validate_prefix(&w.chain, 1);
    loop {
        b2.header.nonce += 1;
        if !b2.header.meets_difficulty() {
            break;
        }
    }
    b2.proposer_sig = b2.header.sign_proposal(&g);
    assert_eq!(
        st.apply_block(&b2, None, SigCheck::Verify)
            .unwrap_err()
            .kind,
        BlockErrorKind::ProofOfWork
    );
}

fn validate_prefix(c: &Chain, n: usize) -> WorldState {
    crate::chain::validate_blocks(&c.blocks()[..n], &[]).unwrap()
}

#[test]
fn finality_certificates() {
    let mut w = World::new(Params::default());
    let t = w.reading(hr(70));
    let st = w.chain.state().clone();
    let b = build_block(&st, &w.gateways[0], vec![t], 5_000, SigCheck::Verify).unwrap();
    let vals = st.validators();
    assert_eq!(vals.len(), 5);
    assert_eq!(quorum(5), 3);
    let mut cert = FinalityCert::new(&b.header);
    for g in &w.gateways[..2] {
        cert.add(FinalityCert::vote(&b.header, g)).unwrap();
    }
    assert_eq!(
        cert.verify(&b.header, &vals),
        Err(crate::block::CertError::NoQuorum {
            votes: 2,
            quorum: 3
        })
    );
    assert_eq!(
        cert.add(FinalityCert::vote(&b.header, &w.gateways[0])),
        Err(crate::block::CertError::DuplicateVote)
    );
    cert.add(FinalityCert::vote(&b.header, &w.gateways[2]))
        .unwrap();
    assert_eq!(cert.verify(&b.header, &vals), Ok(()));
    // a vote by a non-validator
    let mut c2 = cert.clone();
    c2.add(FinalityCert::vote(&b.header, &w.doctor)).unwrap();
    assert_eq!(
        c2.verify(&b.header, &vals),
        Err(crate::block::CertError::UnknownValidator)
    );
    // a forged vote
    let mut c3 = cert.clone();
    c3.votes[0].signature.0[5] ^= 1;
    assert_eq!(
        c3.verify(&b.header, &vals),
        Err(crate::block::CertError::BadSignature)
    );
    // certificate for another block
    let mut other = b.header.clone();
    other.nonce += 1;
    assert_eq!(
        cert.verify(&other, &vals),
        Err(crate::block::CertError::WrongBlock)
    );
    w.chain.add_block(b, Some(cert)).unwrap();
    assert!(w.chain.validate().is_ok());
}

#[test]
fn apply_is_deterministic() {
    let mut w = World::new(Params::default());
    for i in 0..5 {
        let t = w.reading(hr(60 + i));
        let u = w.reading(Vital::SpO2 { percent: 95 });
        w.commit(vec![t, u]).unwrap();
    }
    let a = crate::chain::validate_blocks(w.chain.blocks(), &[]).unwrap();
    let b = crate::chain::validate_blocks(w.chain.blocks(), &[]).unwrap();
    assert_eq!(a.commitment(), b.commitment());
    assert_eq!(a.commitment(), w.chain.state().commitment());
    assert_eq!(a.last_hash(), w.chain.head_hash());
}

#[test]
fn tampering_is_located() {
    let mut w = World::new(Params::default());
    for i in 0..3 {
        let t = w.reading(hr(60 + i));
        w.commit(vec![t]).unwrap();
    }
    assert!(w.chain.validate().is_ok());
    let mut c = w.chain.clone();
    if let TxKind::Reading {
        payload: Payload::Plain(v),
        ..
    } = &mut c.blocks_mut()[2].txs[0].body.kind
    {
        *v = hr(150);
    }
    let e = c.validate().unwrap_err();
    assert_eq!((e.height, e.kind), (2, BlockErrorKind::TxRoot));
    // re-rooting does not help: the header hash changes, the link to block 3 breaks
    let mut c = w.chain.clone();
    let b = &mut c.blocks_mut()[2];
    if let TxKind::Reading {
        payload: Payload::Plain(v),
        ..
    } = &mut b.txs[0].body.kind
    {
        *v = hr(150);
    }
    b.header.tx_root = b.compute_tx_root();
    let e = c.validate().unwrap_err();
    assert_eq!(e.height, 2);
    assert_eq!(e.kind, BlockErrorKind::ProposerSignature);
}

#[test]
fn genesis_rules() {
    let a = kp(1);
    let m = [Member {
        key: a.public(),
        permissions: Permissions::CONNECT,
        role: Role::Admin,
    }];
    // the creator must be an admin member
    let cfg = GenesisConfig::new("g", Params::default(), &m).unwrap();
    assert_eq!(
        Chain::genesis(&a, cfg, 0).unwrap_err().kind,
        BlockErrorKind::Tx(TxRuleError::InvalidGenesis)
    );
    // a small-order member key is refused
    let m = [
        Member {
            key: a.public(),
            permissions: Permissions::ALL,
            role: Role::Admin,
        },
        Member {
            key: PublicKey([0; 32]),
            permissions: Permissions::CONNECT,
            role: Role::Device,
        },
    ];
    let cfg = GenesisConfig::new("g", Params::default(), &m).unwrap();
    assert!(matches!(
        Chain::genesis(&a, cfg, 0).unwrap_err().kind,
        BlockErrorKind::Tx(TxRuleError::BadKey(_))
    ));
    // a second genesis transaction later is refused
    let mut w = World::new(Params::default());
    let a0 = w.admins[0].clone();
    let cfg = GenesisConfig::new("ward-7", Params::default(), &[]).unwrap();
    let t = w.tx(&a0, TxKind::Genesis(cfg));
    assert_eq!(
        w.commit(vec![t]).unwrap_err().kind,
        BlockErrorKind::Tx(TxRuleError::GenesisMisplaced)
    );
}

#[test]
fn unknown_signer_and_future_timestamp() {
    let mut w = World::new(Params::default());
    let stranger = kp(99);
    let t = w.tx(
        &stranger,
        TxKind::Reading {
            stream: 0,
            payload: Payload::Plain(hr(70)),
        },
    );
    assert_eq!(
        w.commit(vec![t]).unwrap_err().kind,
        BlockErrorKind::Tx(TxRuleError::UnknownSigner)
    );
    let d = w.device.clone();
    let body = TxBody {
        signer: d.public(),
        sequence: 1,
        timestamp_ms: 10_000_000_000,
        kind: TxKind::Reading {
            stream: 0,
            payload: Payload::Plain(hr(70)),
        },
    };
    let t = Transaction::sign(body, w.chain.chain_id(), &d).unwrap();
    assert_eq!(
        w.commit(vec![t]).unwrap_err().kind,
        BlockErrorKind::Tx(TxRuleError::TimestampTooFarAhead)
    );
}

#[test]
fn snapshot_roundtrip_and_filtered_build() {
    let mut w = World::new(Params::default());
    let a = w.admins[0].clone();
    let (dev, pat) = (w.device.public(), w.patient.public());
    let t = w.tx(
        &a,
        TxKind::AssignDevice {
            device: dev,
            patient: pat,
        },
    );
    w.commit(vec![t]).unwrap();
    let st = w.chain.state();
    let back = WorldState::from_snapshot(&st.snapshot()).unwrap();
    assert!(back == *st);
    assert_eq!(back.authorised_readers(&dev), vec![pat]);
    // filtered build drops the bad candidate and keeps the good ones
    let good = w.reading(hr(70));
    let bad = w.reading(hr(9000));
    let good2 = w.reading(hr(71));
    let (b, rejected) = crate::chain::build_block_filtered(
        w.chain.state(),
        &w.gateways[0],
        vec![good, bad, good2],
        9_000,
        SigCheck::Verify,
    );
    assert_eq!(b.txs.len(), 2);
    assert_eq!(
        rejected,
        vec![(1, TxRuleError::Reading(ReadingError::OutOfRange))]
    );
    // the same pool with its bytes: the same block, the kept indexes, and
    // the state after it, equal to the state validation arrives at
    let pool = vec![w.reading(hr(72)), w.reading(hr(9001)), w.reading(hr(73))];
    let pool: Vec<_> = pool
        .into_iter()
        .map(|t| {
            let b = t.to_vec();
            (t, b)
        })
        .collect();
    let built = crate::chain::build_block_from_pool(
        w.chain.state(),
        &w.gateways[0],
        pool.clone(),
        9_000,
        SigCheck::Verify,
    );
    assert_eq!(built.kept, vec![0, 2]);
    assert_eq!(built.encoded, vec![pool[0].1.clone(), pool[2].1.clone()]);
    assert_eq!(built.rejected.len(), 1);
    w.chain.add_block(b, None).unwrap();
    let mut validated = w.chain.state().clone();
    assert!(
        validated
            .apply_block(&built.block, None, SigCheck::Verify)
            .is_err()
    ); // stale: built before b
    let mut w2 = w.chain.state().clone();
    let built =
        crate::chain::build_block_from_pool(&w2, &w.gateways[0], pool, 10_000, SigCheck::Verify);
    w2.apply_block_encoded(&built.block, &built.encoded, None, SigCheck::Verify)
        .unwrap();
    assert!(w2 == built.state);
    assert_eq!(w2.next_height(), built.state.next_height());
    assert_eq!(w2.last_hash(), built.block.header.hash());
}

/// Issue 11, finding 12: a grant or revocation that would change nothing is
/// refused, not committed as a no-op transaction.
#[test]
fn no_op_grants_and_revocations_are_refused() {
    let mut w = World::new(Params::default());
    let a0 = w.admins[0].clone();
    let dev = w.device.public();
    let held = w.chain.state().permissions(&dev);
    assert!(held.contains(Permissions::WRITE) && !held.contains(Permissions::RECEIVE));
    let stranger = kp(41).public();
    let refused = |w: &mut World, kind: TxKind, want: TxRuleError| {
        let before = w.chain.state().clone();
        let t = w.tx(&a0, kind.clone());
        assert_eq!(
            w.commit(vec![t]).unwrap_err().kind,
            BlockErrorKind::Tx(want),
            "{kind:?}"
        );
        assert!(*w.chain.state() == before, "{kind:?} changed the state");
        // the refused transaction's sequence was not consumed
        *w.seq.get_mut(&a0.public()).unwrap() -= 1;
    };
    // granting a bit already held; also mixed with one not held
    for p in [
        Permissions::WRITE,
        Permissions::WRITE.union(Permissions::RECEIVE),
    ] {
        refused(
            &mut w,
            TxKind::Grant {
                target: dev,
                permissions: p,
            },
            TxRuleError::NothingToGrant,
        );
    }
    // revoking a bit not held; also mixed with one held; from a stranger
    for (target, p) in [
        (dev, Permissions::RECEIVE),
        (dev, Permissions::WRITE.union(Permissions::RECEIVE)),
        (stranger, Permissions::CONNECT),
    ] {
        refused(
            &mut w,
            TxKind::Revoke {
                target,
                permissions: p,
            },
            TxRuleError::NothingToRevoke,
        );
    }
    assert!(w.chain.state().identity(&stranger).is_none());
    // votes: granting ADMIN to an admin, revoking VALIDATE from a non-validator
    let a1 = w.admins[1].public();
    refused(
        &mut w,
        TxKind::Grant {
            target: a1,
            permissions: Permissions::ADMIN,
        },
        TxRuleError::NothingToGrant,
    );
    refused(
        &mut w,
        TxKind::Revoke {
            target: dev,
            permissions: Permissions::VALIDATE,
        },
        TxRuleError::NothingToRevoke,
    );
    // setting the role already held
    refused(
        &mut w,
        TxKind::SetRole {
            target: dev,
            role: Role::Device,
        },
        TxRuleError::NothingToChange,
    );
    // assigning a device to the patient it already measures
    let pat = w.patient.public();
    let t = w.tx(
        &a0,
        TxKind::AssignDevice {
            device: dev,
            patient: pat,
        },
    );
    w.commit(vec![t]).unwrap();
    refused(
        &mut w,
        TxKind::AssignDevice {
            device: dev,
            patient: pat,
        },
        TxRuleError::NothingToChange,
    );
    // the real changes still go through
    for kind in [
        TxKind::Grant {
            target: dev,
            permissions: Permissions::RECEIVE,
        },
        TxKind::Revoke {
            target: dev,
            permissions: Permissions::RECEIVE.union(Permissions::WRITE),
        },
        TxKind::SetRole {
            target: dev,
            role: Role::Patient,
        },
    ] {
        let t = w.tx(&a0, kind);
        w.commit(vec![t]).unwrap();
    }
    assert_eq!(
        w.chain.state().permissions(&dev),
        held.without(Permissions::WRITE)
    );
}

/// A consent given twice is refused like a grant of a held permission.
#[test]
fn consent_given_twice_is_refused() {
    let mut w = World::new(Params::default());
    let p = w.patient.clone();
    let doc = w.doctor.public();
    let t = w.tx(
        &p,
        TxKind::Consent {
            reader: doc,
            granted: true,
        },
    );
    w.commit(vec![t]).unwrap();
    let t = w.tx(
        &p,
        TxKind::Consent {
            reader: doc,
            granted: true,
        },
    );
    assert_eq!(
        w.commit(vec![t]).unwrap_err().kind,
        BlockErrorKind::Tx(TxRuleError::NothingToGrant)
    );
}

/// The effect-dependent refusals come after the signature check: a forged
/// no-op grant is a bad signature, not `nothing_to_grant`.
#[test]
fn no_op_refusals_come_after_the_signature() {
    let mut w = World::new(Params::default());
    let a0 = w.admins[0].clone();
    let dev = w.device.public();
    let mut t = w.tx(
        &a0,
        TxKind::Grant {
            target: dev,
            permissions: Permissions::WRITE,
        },
    );
    t.signature.0[0] ^= 1;
    let mut st = w.chain.state().clone();
    assert!(matches!(
        st.apply_tx(&t, &t.to_vec(), 2_000, SigCheck::Verify),
        Err(TxRuleError::BadSignature(_))
    ));
}

fn one_admin(name: &str) -> (Keypair, GenesisConfig) {
    let a = kp(1);
    let m = [Member {
        key: a.public(),
        permissions: Permissions::ALL,
        role: Role::Admin,
    }];
    (a, GenesisConfig::new(name, Params::default(), &m).unwrap())
}

/// Issue 11, finding 1: the chain id is derived from the genesis body, not
/// from the name: two chains of one name and one creator differ, and a
/// transaction signed for one is refused by the other.
#[test]
fn chain_id_is_derived_from_the_genesis_body() {
    let (a, cfg) = one_admin("ward-7");
    let c1 = Chain::genesis(&a, cfg.clone(), 1_000).unwrap();
    let c2 = Chain::genesis(&a, cfg.clone(), 1_001).unwrap();
    assert_ne!(c1.chain_id(), c2.chain_id(), "another timestamp");
    let mut more = cfg.clone();
    more.members
        .push(Member {
            key: kp(2).public(),
            permissions: Permissions::CONNECT,
            role: Role::Device,
        })
        .unwrap();
    let c3 = Chain::genesis(&a, more, 1_000).unwrap();
    assert_ne!(c1.chain_id(), c3.chain_id(), "another member");
    // the same genesis, byte for byte, is the same chain
    let again = Chain::genesis(&a, cfg.clone(), 1_000).unwrap();
    assert_eq!(c1.chain_id(), again.chain_id());
    // the id is the tagged hash of the genesis body's exact bytes
    let g = &c1.blocks()[0];
    let enc = g.txs[0].to_vec();
    assert_eq!(
        c1.chain_id().0,
        crate::hash::tagged_hash("sensorchain/chain-id/v2", &[&enc[..enc.len() - 64]]).0
    );
    assert_eq!(crate::chain::genesis_chain_id(g).unwrap(), *c1.chain_id());

    // a grant signed for chain 1 is refused by chain 2's state
    let target = kp(3).public();
    let body = TxBody {
        signer: a.public(),
        sequence: 1,
        timestamp_ms: 2_000,
        kind: TxKind::Grant {
            target,
            permissions: Permissions::CONNECT.union(Permissions::SEND),
        },
    };
    let t = Transaction::sign(body, c1.chain_id(), &a).unwrap();
    let mut st2 = c2.state().clone();
    assert!(matches!(
        st2.apply_tx(&t, &t.to_vec(), 2_000, SigCheck::Verify),
        Err(TxRuleError::BadSignature(_))
    ));
    assert!(st2.identity(&target).is_none());
    let mut st1 = c1.state().clone();
    st1.apply_tx(&t, &t.to_vec(), 2_000, SigCheck::Verify)
        .unwrap();
}

/// A genesis block whose header (and so its signatures) names an id other
/// than the one derived from its body is refused, and so is one with a
/// sequence other than 0.
#[test]
fn genesis_must_carry_its_derived_chain_id() {
    let (a, cfg) = one_admin("ward-7");
    // signed and proposed consistently, but under a chosen id
    let body = TxBody::genesis(a.public(), 1_000, cfg.clone());
    let chosen = crate::hash::ChainId([0x42; 32]);
    let t = Transaction::sign(body, &chosen, &a).unwrap();
    let e = build_block(
        &WorldState::new(chosen),
        &a,
        vec![t],
        1_000,
        SigCheck::Verify,
    )
    .unwrap_err();
    assert_eq!(e.kind, BlockErrorKind::Tx(TxRuleError::InvalidGenesis));
    // a genesis transaction with sequence 5
    let mut body = TxBody::genesis(a.public(), 1_000, cfg);
    body.sequence = 5;
    let id = body.genesis_chain_id().unwrap();
    let t = Transaction::sign(body, &id, &a).unwrap();
    let e = build_block(&WorldState::new(id), &a, vec![t], 1_000, SigCheck::Verify).unwrap_err();
    assert_eq!(e.kind, BlockErrorKind::Tx(TxRuleError::InvalidGenesis));
    // a valid genesis leaves the creator at sequence 0
    let (a, cfg) = one_admin("ward-7");
    let c = Chain::genesis(&a, cfg, 1_000).unwrap();
    assert_eq!(
        c.state().identity(&a.public()).unwrap().last_sequence,
        Some(0)
    );
}

/// The commitment once fell back to `Hash32::ZERO` if serializing failed.
/// Now it has no fallback: with every committed field populated (identities
/// with a patient, a pending vote, a consent) it is the tagged hash of the
/// exact postcard bytes of those fields, and each of them moves it.
#[test]
fn commitment_covers_every_field() {
    let mut w = World::new(Params::default());
    let (dev, pat, doc) = (w.device.public(), w.patient.public(), w.doctor.public());
    let (a0, p) = (w.admins[0].clone(), w.patient.clone());
    let mut roots = vec![w.chain.state().commitment()];
    let t = w.tx(
        &a0,
        TxKind::AssignDevice {
            device: dev,
            patient: pat,
        },
    );
    w.commit(vec![t]).unwrap();
    roots.push(w.chain.state().commitment());
    let g = w.tx(
        &a0,
        TxKind::Grant {
            target: kp(40).public(),
            permissions: Permissions::ADMIN,
        },
    );
    w.commit(vec![g]).unwrap();
    assert_eq!(w.chain.state().pending_votes().count(), 1);
    roots.push(w.chain.state().commitment());
    let c = w.tx(
        &p,
        TxKind::Consent {
            reader: doc,
            granted: true,
        },
    );
    w.commit(vec![c]).unwrap();
    roots.push(w.chain.state().commitment());

    let st = w.chain.state();
    let committed = Committed {
        chain_id: &st.chain_id,
        params: &st.params,
        identities: &st.identities,
        votes: &st.votes,
        consents: &st.consents,
    };
    let bytes = crate::codec::encode_to_vec(&committed);
    assert!(!bytes.is_empty());
    let mut h = crate::hash::TaggedHasher::new(ctx::STATE);
    h.update(&bytes);
    assert_eq!(st.commitment(), h.finalize());
    assert_eq!(
        st.commitment(),
        w.chain.blocks().last().unwrap().header.state_root
    );
    for (i, r) in roots.iter().enumerate() {
        assert_ne!(*r, Hash32::ZERO);
        assert!(!roots[..i].contains(r), "every change moves the commitment");
    }
}

/// The precheck is the part of `apply_tx` before the signature: for every
/// transaction it refuses, `apply_tx` refuses with the same error whether
/// the signature is valid or not (the precheck comes first), and a
/// transaction it passes is refused by `apply_tx` only after it.
#[test]
fn precheck_is_apply_before_the_signature() {
    let mut w = World::new(Params::default());
    let a0 = w.admins[0].clone();
    let (dev, pat, doc) = (w.device.public(), w.patient.public(), w.doctor.public());
    let p = w.patient.clone();
    let d = w.device.clone();
    let stranger = kp(99);
    let mut cases: Vec<(Transaction, Option<TxRuleError>)> = Vec::new();
    // refused before the signature
    let replayed = {
        let t = w.reading(hr(70));
        w.commit(vec![t.clone()]).unwrap();
        t
    };
    cases.push((replayed, Some(TxRuleError::Replay { last: 1, got: 1 })));
    let implausible = TxRuleError::Reading(hr(60_000).check().unwrap_err());
    cases.push((w.reading(hr(60_000)), Some(implausible)));
    let t = w.tx(
        &stranger,
        TxKind::SetRole {
            target: dev,
            role: Role::Device,
        },
    );
    cases.push((t, Some(TxRuleError::UnknownSigner)));
    let t = w.tx(
        &d,
        TxKind::Grant {
            target: dev,
            permissions: Permissions::ADMIN,
        },
    );
    cases.push((
        t,
        Some(TxRuleError::NotPermitted {
            needed: Permissions::ADMIN,
        }),
    ));
    let t = w.tx(
        &a0,
        TxKind::Grant {
            target: dev,
            permissions: Permissions::NONE,
        },
    );
    cases.push((t, Some(TxRuleError::InvalidPermissions)));
    let t = w.tx(
        &a0,
        TxKind::AssignDevice {
            device: doc,
            patient: pat,
        },
    );
    cases.push((t, Some(TxRuleError::WrongRole)));
    let t = w.tx(
        &p,
        TxKind::Consent {
            reader: stranger.public(),
            granted: true,
        },
    );
    cases.push((t, Some(TxRuleError::UnknownRecipient)));
    // passed by the precheck, refused after the signature (effect)
    let t = w.tx(
        &a0,
        TxKind::Grant {
            target: dev,
            permissions: Permissions::WRITE,
        },
    );
    cases.push((t, None));
    let st = w.chain.state().clone();
    let ts = st.last_timestamp_ms() + 1;
    for (t, expected) in cases {
        let at = Precheck::InBlock { timestamp_ms: ts };
        let pre = st.precheck(&t, at);
        let mut forged = t.clone();
        forged.signature.0[0] ^= 1;
        let applied = st.clone().apply_tx(&t, &t.to_vec(), ts, SigCheck::Verify);
        let applied_forged = st
            .clone()
            .apply_tx(&forged, &forged.to_vec(), ts, SigCheck::Verify);
        match pre {
            Err(e) => {
                if let Some(x) = expected {
                    assert_eq!(e, x, "{:?}", t.body.kind);
                }
                assert_eq!(applied, Err(e), "{:?}", t.body.kind);
                assert_eq!(applied_forged, Err(e), "{:?}", t.body.kind);
            }
            Ok(()) => {
                assert_eq!(expected, None, "{:?}", t.body.kind);
                assert!(
                    matches!(applied_forged, Err(TxRuleError::BadSignature(_))),
                    "{:?}: {applied_forged:?}",
                    t.body.kind
                );
                // the effect's verdict (here: a no-op grant)
                assert_eq!(applied, Err(TxRuleError::NothingToGrant));
            }
        }
    }
}

/// Admission checks what the signer's record and the transaction decide,
/// in the same order, and leaves to the block what other identities'
/// records (which pending transactions may change) or the block's
/// timestamp decide.
#[test]
fn admission_precheck_leaves_others_records_to_the_block() {
    let mut w = World::new(Params::default());
    let a0 = w.admins[0].clone();
    let doc = w.doctor.public();
    let p = w.patient.clone();
    let newcomer = kp(98).public();
    let st = w.chain.state().clone();
    let ts = st.last_timestamp_ms() + 1;
    // a device assignment naming a key a pending grant will register
    let t = w.tx(
        &a0,
        TxKind::AssignDevice {
            device: newcomer,
            patient: p.public(),
        },
    );
    assert_eq!(st.precheck(&t, Precheck::Admission), Ok(()));
    assert_eq!(
        st.precheck(&t, Precheck::InBlock { timestamp_ms: ts }),
        Err(TxRuleError::UnknownRecipient)
    );
    // a consent to a reader not registered yet
    let t = w.tx(
        &p,
        TxKind::Consent {
            reader: newcomer,
            granted: true,
        },
    );
    assert_eq!(st.precheck(&t, Precheck::Admission), Ok(()));
    // a timestamp far ahead: only a block knows its timestamp
    let mut t = w.reading(hr(70));
    t.body.timestamp_ms = ts + st.params().max_future_skew_ms + 1;
    assert_eq!(st.precheck(&t, Precheck::Admission), Ok(()));
    assert_eq!(
        st.precheck(&t, Precheck::InBlock { timestamp_ms: ts }),
        Err(TxRuleError::TimestampTooFarAhead)
    );
    // the signer's own record and the transaction's content: refused
    let t = w.reading(hr(60_000));
    assert!(matches!(
        st.precheck(&t, Precheck::Admission),
        Err(TxRuleError::Reading(_))
    ));
    let t = w.tx(
        &p,
        TxKind::Grant {
            target: doc,
            permissions: Permissions::WRITE,
        },
    );
    assert_eq!(
        st.precheck(&t, Precheck::Admission),
        Err(TxRuleError::NotPermitted {
            needed: Permissions::ADMIN
        })
    );
    let mut t = w.reading(hr(70));
    t.body.sequence = 0;
    let applied = w.reading(hr(70));
    let mut later = st.clone();
    later
        .apply_tx(&applied, &[], ts, SigCheck::AlreadyVerified)
        .unwrap();
    assert_eq!(
        later.precheck(&t, Precheck::Admission),
        Err(TxRuleError::Replay {
            last: applied.body.sequence,
            got: 0
        })
    );
}

/// A signature check taken ahead of the state is the one the state runs
/// once the signer is registered, and a key that cannot be registered has
/// none.
#[test]
fn signature_check_ahead_is_the_registered_one() {
    let mut w = World::new(Params::default());
    let t = w.reading(hr(70));
    let st = w.chain.state();
    let ahead = SignatureCheck::ahead(*st.chain_id(), &t.body.signer).unwrap();
    let registered = st.signature_check(&t.body.signer).unwrap();
    let bytes = t.to_vec();
    assert_eq!(ahead.run(&t, &bytes), Ok(()));
    assert_eq!(registered.run(&t, &bytes), Ok(()));
    let mut forged = t.clone();
    forged.signature.0[5] ^= 1;
    let fb = forged.to_vec();
    assert_eq!(ahead.run(&forged, &fb), registered.run(&forged, &fb));
    assert!(ahead.run(&forged, &fb).is_err());
    assert_eq!(
        st.signature_check(&kp(97).public()).err(),
        Some(TxRuleError::UnknownSigner)
    );
    // the identity point is small-order: never registrable
    let mut small = [0u8; 32];
    small[0] = 1;
    assert!(matches!(
        SignatureCheck::ahead(*st.chain_id(), &PublicKey(small)),
        Err(TxRuleError::BadKey(_))
    ));
}

/// Issue 14: `AUDIT` (0x40, formerly reserved) is a valid bit now, voted
/// like `ADMIN` and `VALIDATE`; bit 0x80 is still refused.
#[test]
fn audit_is_a_voted_permission_and_0x80_stays_reserved() {
    let mut w = World::new(Params::default());
    assert_eq!(w.chain.state().votes_needed(), 2);
    let auditor = kp(41).public();
    let (a0, a1) = (w.admins[0].clone(), w.admins[1].clone());
    let g = w.tx(
        &a0,
        TxKind::Grant {
            target: auditor,
            permissions: Permissions::AUDIT.union(Permissions::CONNECT),
        },
    );
    w.commit(vec![g]).unwrap();
    assert_eq!(w.chain.state().permissions(&auditor), Permissions::CONNECT);
    let g = w.tx(
        &a1,
        TxKind::Grant {
            target: auditor,
            permissions: Permissions::AUDIT,
        },
    );
    w.commit(vec![g]).unwrap();
    assert_eq!(
        w.chain.state().permissions(&auditor),
        Permissions::CONNECT.union(Permissions::AUDIT)
    );
    assert_eq!(alloc::format!("{}", Permissions::AUDIT), "audit");
    assert_eq!("audit".parse::<Permissions>(), Ok(Permissions::AUDIT));
    let g = w.tx(
        &a0,
        TxKind::Grant {
            target: auditor,
            permissions: Permissions(0x80),
        },
    );
    assert_eq!(
        w.commit(vec![g]).unwrap_err().kind,
        BlockErrorKind::Tx(TxRuleError::InvalidPermissions)
    );
}

/// Issue 14: a gateway anchors its access log's head on the chain
/// (`AccessAnchor`): `VALIDATE` is needed, a count of 0 anchors nothing,
/// and nothing but the signer's sequence changes.
#[test]
fn access_anchor_needs_validate_and_changes_no_state() {
    let mut w = World::new(Params::default());
    let gw = w.gateways[0].clone();
    let anchor = |count| TxKind::AccessAnchor {
        count,
        hash: crate::hash::Hash32([7; 32]),
    };
    let before = w.chain.state().commitment();
    let t = w.tx(&gw, anchor(3));
    w.commit(vec![t]).unwrap();
    let after = w.chain.state().clone();
    assert_eq!(after.identity(&gw.public()).unwrap().last_sequence, Some(1));
    assert_ne!(after.commitment(), before, "the sequence moved");
    let t = w.tx(&gw, anchor(0));
    assert_eq!(
        w.commit(vec![t]).unwrap_err().kind,
        BlockErrorKind::Tx(TxRuleError::NothingToChange)
    );
    let d = w.device.clone();
    let t = w.tx(&d, anchor(1));
    assert_eq!(
        w.commit(vec![t]).unwrap_err().kind,
        BlockErrorKind::Tx(TxRuleError::NotPermitted {
            needed: Permissions::VALIDATE
        })
    );
}
