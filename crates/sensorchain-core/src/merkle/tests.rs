//! Known-answer vectors and properties of the RFC 6962 tree.
//!
//! The vectors are the public RFC 6962 test data of transparency-dev/merkle
//! (the successor of certificate-transparency-go's `merkle` package):
//! - leaves, node hashes and roots for sizes 0..=8:
//!   `transparency-dev/merkle`, `testonly/constants.go`
//!   (`LeafInputs`, `NodeHashes`, `RootHashes`, `EmptyRootHash`);
//! - inclusion and consistency proofs:
//!   `transparency-dev/merkle`, `proof/verify_test.go`
//!   (`inclusionProofs`, `consistencyProofs`; their inclusion vectors number
//!   leaves from 1, ours from 0).

use super::*;
use std::string::ToString;
use std::vec;
use std::vec::Vec;

fn h(s: &str) -> Hash32 {
    Hash32(crate::hash::parse_hex::<32>(s).expect("test vector hex"))
}

/// `testonly.LeafInputs()`.
fn leaf_inputs() -> Vec<Vec<u8>> {
    [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
    .iter()
    .map(|s| hex::decode(s).expect("hex"))
    .collect()
}

fn leaves() -> Vec<Hash32> {
    leaf_inputs().iter().map(|d| leaf_hash(d)).collect()
}

/// `testonly.NodeHashes()[0]`: the leaf hashes.
const LEAF_HASHES: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
    "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
    "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
];

/// `testonly.NodeHashes()[1]`: the level-1 nodes.
const LEVEL1: [&str; 4] = [
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
];

/// `testonly.RootHashes()`: roots of the trees of the first 0..=8 leaves.
const ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

fn root(size: usize) -> Hash32 {
    h(ROOTS[size])
}

/// `inclusionProofs` of `proof/verify_test.go`: (index from 0, size, proof).
fn inclusion_vectors() -> Vec<(u64, u64, Vec<Hash32>)> {
    vec![
        (0, 1, vec![]),
        (
            0,
            8,
            vec![
                h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
            ],
        ),
        (
            5,
            8,
            vec![
                h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
                h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ],
        ),
        (
            2,
            3,
            vec![h(
                "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            )],
        ),
        (
            1,
            5,
            vec![
                h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            ],
        ),
    ]
}

/// `consistencyProofs` of `proof/verify_test.go`: (old size, new size, proof).
fn consistency_vectors() -> Vec<(u64, u64, Vec<Hash32>)> {
    vec![
        (1, 1, vec![]),
        (
            1,
            8,
            vec![
                h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
            ],
        ),
        (
            6,
            8,
            vec![
                h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
                h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ],
        ),
        (
            2,
            5,
            vec![
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            ],
        ),
        (
            6,
            7,
            vec![
                h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
                h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
                h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ],
        ),
    ]
}

/// `abacaba…` from `proof/verify_test.go`: a hash that is in no tree.
fn some_hash() -> Hash32 {
    h("abacaba000000000000000000000000000000000000000000060061e00123456")
}

#[test]
fn empty_root_and_hash_prefixes() {
    assert_eq!(EMPTY_ROOT, sha256(&[]));
    assert_eq!(EMPTY_ROOT, root(0));
    assert_eq!(root_from_leaf_hashes(&[]), EMPTY_ROOT);
    assert_eq!(RootBuilder::new().root(), EMPTY_ROOT);
    assert_eq!(leaf_hash(b"x"), sha256(&[&[0], b"x"]));
    let (a, b) = (leaf_hash(b"a"), leaf_hash(b"b"));
    assert_eq!(node_hash(&a, &b), sha256(&[&[1], &a.0, &b.0]));
}

#[test]
fn leaf_and_node_hash_vectors() {
    let l = leaves();
    for (i, want) in LEAF_HASHES.iter().enumerate() {
        assert_eq!(l[i], h(want), "leaf {i}");
    }
    for (i, want) in LEVEL1.iter().enumerate() {
        assert_eq!(
            node_hash(&l[2 * i], &l[2 * i + 1]),
            h(want),
            "level-1 node {i}"
        );
    }
}

#[test]
fn root_vectors_sizes_0_to_8() {
    let l = leaves();
    for size in 0..=8 {
        assert_eq!(root_from_leaf_hashes(&l[..size]), root(size), "size {size}");
        let mut b = RootBuilder::new();
        for x in &l[..size] {
            b.push(*x).unwrap();
        }
        assert_eq!(b.len(), size as u64);
        assert_eq!(b.root(), root(size), "builder size {size}");
    }
}

#[test]
fn builder_root_is_available_while_growing() {
    let l = leaves();
    let mut b = RootBuilder::default();
    assert!(b.is_empty());
    for (i, x) in l.iter().enumerate() {
        b.push(*x).unwrap();
        assert_eq!(b.root(), root(i + 1));
    }
}

#[test]
fn inclusion_vectors_verify() {
    let l = leaves();
    for (index, size, proof) in inclusion_vectors() {
        let leaf = l[index as usize];
        let r = root(size as usize);
        assert_eq!(root_from_inclusion_proof(&leaf, index, size, &proof), Ok(r));
        assert_eq!(
            verify_inclusion(&leaf, index, size, &proof, &r),
            Ok(()),
            "{index}/{size}"
        );
    }
}

/// The corruptions of `corruptInclusionProof` in `proof/verify_test.go`.
#[test]
fn inclusion_vectors_corrupted_fail() {
    let l = leaves();
    for (index, size, proof) in inclusion_vectors() {
        let leaf = l[index as usize];
        let r = root(size as usize);
        let fails = |i: u64, s: u64, leaf: &Hash32, p: &[Hash32], r: &Hash32| {
            assert!(verify_inclusion(leaf, i, s, p, r).is_err(), "{i}/{s} {p:?}");
        };
        fails(index.wrapping_sub(1), size, &leaf, &proof, &r);
        fails(index + 1, size, &leaf, &proof, &r);
        fails(index ^ 2, size, &leaf, &proof, &r);
        fails(index, size * 2, &leaf, &proof, &r);
        fails(index, size / 2, &leaf, &proof, &r);
        fails(index, size, &some_hash(), &proof, &r);
        fails(index, size, &leaf, &proof, &EMPTY_ROOT);
        fails(index, size, &leaf, &proof, &some_hash());
        let mut longer = proof.clone();
        longer.push(r);
        fails(index, size, &leaf, &longer, &r);
        let mut longer = vec![r];
        longer.extend_from_slice(&proof);
        fails(index, size, &leaf, &longer, &r);
        for i in 0..proof.len() {
            let mut p = proof.clone();
            p[i].0[0] ^= 8;
            fails(index, size, &leaf, &p, &r);
        }
        if !proof.is_empty() {
            fails(index, size, &leaf, &proof[..proof.len() - 1], &r);
        }
    }
}

#[test]
fn inclusion_error_kinds() {
    let l = leaves();
    let r = root(8);
    let p = inclusion_vectors()[1].2.clone();
    assert_eq!(
        verify_inclusion(&l[0], 8, 8, &p, &r),
        Err(MerkleError::IndexOutOfRange)
    );
    assert_eq!(
        verify_inclusion(&l[0], 0, 0, &[], &EMPTY_ROOT),
        Err(MerkleError::IndexOutOfRange)
    );
    assert_eq!(
        verify_inclusion(&l[0], 0, 8, &p[..2], &r),
        Err(MerkleError::BadProofLength)
    );
    assert_eq!(
        verify_inclusion(&l[1], 0, 8, &p, &r),
        Err(MerkleError::RootMismatch)
    );
    // A one-leaf tree: the root is the leaf hash and the proof is empty.
    assert_eq!(verify_inclusion(&l[3], 0, 1, &[], &l[3]), Ok(()));
    assert_eq!(
        verify_inclusion(&l[3], 0, 1, &[], &l[2]),
        Err(MerkleError::RootMismatch)
    );
}

#[test]
fn consistency_vectors_verify() {
    for (old, new, proof) in consistency_vectors() {
        let (r1, r2) = (root(old as usize), root(new as usize));
        assert_eq!(
            verify_consistency(old, new, &r1, &r2, &proof),
            Ok(()),
            "{old}->{new}"
        );
    }
}

/// The corruptions of `corruptConsistencyProof` in `proof/verify_test.go`.
#[test]
fn consistency_vectors_corrupted_fail() {
    for (old, new, proof) in consistency_vectors() {
        if proof.is_empty() {
            continue;
        }
        let (r1, r2) = (root(old as usize), root(new as usize));
        let fails = |o: u64, n: u64, r1: &Hash32, r2: &Hash32, p: &[Hash32]| {
            assert!(
                verify_consistency(o, n, r1, r2, p).is_err(),
                "{o}->{n} {p:?}"
            );
        };
        fails(old - 1, new, &r1, &r2, &proof);
        fails(old + 1, new, &r1, &r2, &proof);
        fails(old ^ 2, new, &r1, &r2, &proof);
        fails(old, new * 2, &r1, &r2, &proof);
        fails(old, new / 2, &r1, &r2, &proof);
        fails(old, new, &some_hash(), &r2, &proof);
        fails(old, new, &r1, &some_hash(), &proof);
        fails(old, new, &r2, &r1, &proof);
        fails(old, new, &r1, &r2, &[]);
        for extra in [EMPTY_ROOT, r1, r2] {
            let mut p = proof.clone();
            p.push(extra);
            fails(old, new, &r1, &r2, &p);
            let mut p = vec![extra];
            p.extend_from_slice(&proof);
            fails(old, new, &r1, &r2, &p);
        }
        let mut p = vec![proof[0]];
        p.extend_from_slice(&proof);
        fails(old, new, &r1, &r2, &p);
        fails(old, new, &r1, &r2, &proof[..proof.len() - 1]);
        for i in 0..proof.len() {
            let mut p = proof.clone();
            p[i].0[0] ^= 16;
            fails(old, new, &r1, &r2, &p);
        }
    }
}

/// The edge cases of `TestVerifyConsistency` in `proof/verify_test.go`,
/// with one deliberate difference: an old size of 0 must come with the
/// empty tree's root (transparency-dev ignores that root).
#[test]
fn consistency_edge_cases() {
    let (a, b) = (some_hash(), leaf_hash(b"b"));
    assert_eq!(
        verify_consistency(0, 0, &EMPTY_ROOT, &EMPTY_ROOT, &[]),
        Ok(())
    );
    assert_eq!(
        verify_consistency(0, 0, &EMPTY_ROOT, &a, &[]),
        Err(MerkleError::RootMismatch)
    );
    assert_eq!(verify_consistency(0, 1, &EMPTY_ROOT, &a, &[]), Ok(()));
    assert_eq!(
        verify_consistency(0, 1, &a, &b, &[]),
        Err(MerkleError::RootMismatch)
    );
    assert_eq!(verify_consistency(1, 1, &a, &a, &[]), Ok(()));
    assert_eq!(
        verify_consistency(1, 1, &a, &b, &[]),
        Err(MerkleError::RootMismatch)
    );
    assert_eq!(
        verify_consistency(1, 0, &a, &b, &[]),
        Err(MerkleError::InvalidSizes)
    );
    assert_eq!(
        verify_consistency(2, 1, &a, &b, &[]),
        Err(MerkleError::InvalidSizes)
    );
    assert_eq!(
        verify_consistency(1, 2, &a, &b, &[]),
        Err(MerkleError::BadProofLength)
    );
    // Roots match but the proof is not empty.
    let e = [EMPTY_ROOT];
    for (o, n) in [(0, 0), (0, 1), (1, 1)] {
        assert_eq!(
            verify_consistency(o, n, &EMPTY_ROOT, &EMPTY_ROOT, &e),
            Err(MerkleError::BadProofLength)
        );
    }
}

#[test]
fn verifiers_survive_extreme_sizes() {
    let x = some_hash();
    let p = [x; 70];
    for (i, s) in [
        (u64::MAX - 1, u64::MAX),
        (0, u64::MAX),
        (1 << 63, u64::MAX),
        (0, 1 << 63),
    ] {
        for n in [0, 1, 63, 64, 65, 70] {
            assert!(verify_inclusion(&x, i, s, &p[..n], &x).is_err());
        }
    }
    for (o, n) in [
        (1, u64::MAX),
        (u64::MAX - 1, u64::MAX),
        (1 << 63, u64::MAX),
        (3, 1 << 63),
    ] {
        for k in [0, 1, 63, 64, 65, 70] {
            assert!(verify_consistency(o, n, &x, &x, &p[..k]).is_err());
        }
    }
}

#[test]
fn builder_reports_full() {
    // Only the count matters for the check; build a builder at the limit.
    let mut b = RootBuilder::new();
    b.count = u64::MAX;
    assert_eq!(b.push(EMPTY_ROOT), Err(MerkleError::TreeFull));
    assert_eq!(
        MerkleError::TreeFull.to_string(),
        "tree holds the maximum number of leaves"
    );
}

#[cfg(feature = "alloc")]
mod proofs {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_proofs_match_vectors() {
        let l = leaves();
        for (index, size, proof) in inclusion_vectors() {
            assert_eq!(inclusion_proof(&l[..size as usize], index), Ok(proof));
        }
        for (old, new, proof) in consistency_vectors() {
            assert_eq!(consistency_proof(&l[..new as usize], old), Ok(proof));
        }
    }

    #[test]
    fn every_proof_of_the_8_leaf_vectors_verifies() {
        let l = leaves();
        for size in 1..=8u64 {
            let r = root(size as usize);
            for index in 0..size {
                let p = inclusion_proof(&l[..size as usize], index).unwrap();
                assert_eq!(
                    verify_inclusion(&l[index as usize], index, size, &p, &r),
                    Ok(())
                );
            }
            for old in 0..=size {
                let p = consistency_proof(&l[..size as usize], old).unwrap();
                let r1 = root(old as usize);
                assert_eq!(
                    verify_consistency(old, size, &r1, &r, &p),
                    Ok(()),
                    "{old}->{size}"
                );
            }
        }
    }

    #[test]
    fn proof_generation_errors() {
        let l = leaves();
        assert_eq!(inclusion_proof(&[], 0), Err(MerkleError::IndexOutOfRange));
        assert_eq!(inclusion_proof(&l, 8), Err(MerkleError::IndexOutOfRange));
        assert_eq!(
            inclusion_proof(&l, u64::MAX),
            Err(MerkleError::IndexOutOfRange)
        );
        assert_eq!(consistency_proof(&l, 9), Err(MerkleError::InvalidSizes));
        assert_eq!(
            consistency_proof(&l, u64::MAX),
            Err(MerkleError::InvalidSizes)
        );
        assert_eq!(consistency_proof(&[], 0), Ok(vec![]));
    }

    #[test]
    fn merkle_tree_api() {
        let mut t = MerkleTree::new();
        assert!(t.is_empty());
        assert_eq!(t.root(), EMPTY_ROOT);
        for d in leaf_inputs() {
            t.push(&d);
        }
        assert_eq!(t.len(), 8);
        assert_eq!(t.root(), root(8));
        assert_eq!(t.leaf_hashes(), &leaves()[..]);
        for size in 0..=8 {
            assert_eq!(t.root_at(size), Ok(root(size as usize)));
        }
        assert_eq!(t.root_at(9), Err(MerkleError::InvalidSizes));
        assert_eq!(
            t.inclusion_proof(5, 8),
            Ok(inclusion_vectors()[2].2.clone())
        );
        assert_eq!(t.inclusion_proof(5, 5), Err(MerkleError::IndexOutOfRange));
        assert_eq!(t.inclusion_proof(0, 9), Err(MerkleError::InvalidSizes));
        assert_eq!(
            t.consistency_proof(6, 7),
            Ok(consistency_vectors()[4].2.clone())
        );
        assert_eq!(t.consistency_proof(7, 6), Err(MerkleError::InvalidSizes));
        let mut u = MerkleTree::from_leaf_hashes(leaves()[..7].to_vec());
        u.push_leaf_hash(leaves()[7]);
        assert_eq!(u, t);
    }

    /// Distinct leaf hashes for a tree of `n` leaves (distinct, so that a
    /// wrong index cannot verify by accident of two equal leaves).
    fn tree(n: usize, salt: u64) -> Vec<Hash32> {
        (0..n as u64)
            .map(|i| {
                let mut d = [0u8; 16];
                d[..8].copy_from_slice(&i.to_le_bytes());
                d[8..].copy_from_slice(&salt.to_le_bytes());
                leaf_hash(&d)
            })
            .collect()
    }

    /// Reference `MTH` straight from RFC 6962 §2.1 (recursive).
    fn mth(d: &[Hash32]) -> Hash32 {
        match d.len() {
            0 => EMPTY_ROOT,
            1 => d[0],
            n => {
                let k = split_point(n);
                node_hash(&mth(&d[..k]), &mth(&d[k..]))
            }
        }
    }

    proptest! {
        #[test]
        fn streaming_root_matches_recursive_definition(n in 0usize..300, salt: u64) {
            let l = tree(n, salt);
            prop_assert_eq!(root_from_leaf_hashes(&l), mth(&l));
        }

        #[test]
        fn inclusion_proofs_verify_and_resist_tampering(
            n in 1usize..200, salt: u64, idx: prop::sample::Index,
            flip: prop::sample::Index, bit in 0usize..256,
            other: prop::sample::Index, wrong_size in 1u64..400,
        ) {
            let l = tree(n, salt);
            let r = root_from_leaf_hashes(&l);
            let i = idx.index(n);
            let (iu, nu) = (i as u64, n as u64);
            let p = inclusion_proof(&l, iu).unwrap();
            prop_assert_eq!(verify_inclusion(&l[i], iu, nu, &p, &r), Ok(()));

            // Any single flipped bit in the proof, the leaf or the root fails.
            if !p.is_empty() {
                let mut q = p.clone();
                let k = flip.index(q.len());
                q[k].0[bit / 8] ^= 1 << (bit % 8);
                prop_assert!(verify_inclusion(&l[i], iu, nu, &q, &r).is_err());
            }
            let mut leaf = l[i];
            leaf.0[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(verify_inclusion(&leaf, iu, nu, &p, &r).is_err());
            let mut r2 = r;
            r2.0[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(verify_inclusion(&l[i], iu, nu, &p, &r2).is_err());

            // A wrong index fails, with the right leaf or the other one.
            let j = other.index(n);
            if j != i {
                prop_assert!(verify_inclusion(&l[i], j as u64, nu, &p, &r).is_err());
                prop_assert!(verify_inclusion(&l[j], iu, nu, &p, &r).is_err());
            }
            // A wrong size fails, unless it gives the index the same path
            // shape (the root, not the proof, binds the size; see the
            // module docs).
            if wrong_size != nu {
                let res = verify_inclusion(&l[i], iu, wrong_size, &p, &r);
                let same_shape = iu < wrong_size && decompose(iu, wrong_size) == decompose(iu, nu);
                prop_assert!(res.is_err() || same_shape);
            }
            prop_assert!(verify_inclusion(&l[i], iu, nu * 2, &p, &r).is_err());
            prop_assert!(verify_inclusion(&l[i], iu, nu / 2, &p, &r).is_err());
        }

        #[test]
        fn consistency_proofs_verify_and_resist_tampering(
            n in 1usize..200, salt: u64, old: prop::sample::Index,
            flip: prop::sample::Index, bit in 0usize..256,
            wrong_old in 0u64..400, wrong_new in 0u64..400,
        ) {
            let l = tree(n, salt);
            let m = old.index(n + 1);
            let (mu, nu) = (m as u64, n as u64);
            let (r1, r2) = (root_from_leaf_hashes(&l[..m]), root_from_leaf_hashes(&l));
            let p = consistency_proof(&l, mu).unwrap();
            prop_assert_eq!(verify_consistency(mu, nu, &r1, &r2, &p), Ok(()));

            if !p.is_empty() {
                let mut q = p.clone();
                let k = flip.index(q.len());
                q[k].0[bit / 8] ^= 1 << (bit % 8);
                prop_assert!(verify_consistency(mu, nu, &r1, &r2, &q).is_err());
            }
            if m > 0 {
                let mut x = r1;
                x.0[bit / 8] ^= 1 << (bit % 8);
                prop_assert!(verify_consistency(mu, nu, &x, &r2, &p).is_err());
            }
            let mut y = r2;
            y.0[bit / 8] ^= 1 << (bit % 8);
            if m > 0 {
                prop_assert!(verify_consistency(mu, nu, &r1, &y, &p).is_err());
            }
            // Wrong sizes fail when the proof is non-trivial.
            if !p.is_empty() {
                if wrong_old != mu {
                    prop_assert!(verify_consistency(wrong_old, nu, &r1, &r2, &p).is_err());
                }
                if wrong_new != nu {
                    let res = verify_consistency(mu, wrong_new, &r1, &r2, &p);
                    // As for inclusion, only a size with the same proof
                    // shape can pass.
                    let same_shape = mu < wrong_new
                        && decompose(mu - 1, wrong_new) == decompose(mu - 1, nu);
                    prop_assert!(res.is_err() || same_shape);
                }
            }
        }

        #[test]
        fn verifiers_never_panic(
            leaf: [u8; 32], root: [u8; 32], index: u64, size: u64,
            old: u64, new: u64,
            proof in prop::collection::vec(any::<[u8; 32]>(), 0..70),
        ) {
            let p: Vec<Hash32> = proof.into_iter().map(Hash32).collect();
            let _ = verify_inclusion(&Hash32(leaf), index, size, &p, &Hash32(root));
            let _ = verify_inclusion(&Hash32(leaf), index % 1024, size % 1024, &p, &Hash32(root));
            let _ = verify_consistency(old, new, &Hash32(leaf), &Hash32(root), &p);
            let _ = verify_consistency(old % 1024, new % 1024, &Hash32(leaf), &Hash32(root), &p);
            let _ = verify_consistency(old.min(new), old.max(new), &Hash32(leaf), &Hash32(root), &p);
        }
    }
}

/// `RootBuilder::root` once answered [`EMPTY_ROOT`] for a builder whose
/// subtree count was out of range (and `push` silently dropped a leaf with
/// no slot). Both index the stack now: a broken invariant is a loud error,
/// never a made-up root. (Unreachable through the public API: depth is the
/// popcount of a `u64` count.)
#[test]
#[should_panic]
fn broken_builder_never_answers_the_empty_root() {
    let b = RootBuilder {
        stack: [Hash32([1; 32]); MAX_LEVELS],
        depth: MAX_LEVELS + 1,
        count: 1,
    };
    let _ = b.root();
}

/// The largest stack a builder reaches, 63 complete subtrees (the count
/// `u64::MAX - 1`, whose popcount is 63), then one more push at the last
/// slot: no leaf is dropped, the root is over all 64 subtrees.
#[test]
fn builder_uses_every_stack_slot() {
    let mut b = RootBuilder {
        stack: [Hash32::ZERO; MAX_LEVELS],
        depth: 63,
        count: u64::MAX - 1,
    };
    for (i, s) in b.stack.iter_mut().take(63).enumerate() {
        *s = leaf_hash(&[i as u8]);
    }
    let before = b.root();
    b.push(leaf_hash(b"last")).unwrap();
    assert_eq!(b.len(), u64::MAX);
    assert_eq!(b.depth, 64);
    assert_ne!(b.root(), before);
    let mut acc = leaf_hash(b"last");
    for left in b.stack[..63].iter().rev() {
        acc = node_hash(left, &acc);
    }
    assert_eq!(b.root(), acc);
    assert_eq!(b.push(leaf_hash(b"one more")), Err(MerkleError::TreeFull));
}
