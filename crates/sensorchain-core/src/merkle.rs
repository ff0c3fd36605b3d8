//! RFC 6962 (Certificate Transparency) Merkle trees: the tree over a block's
//! transactions, inclusion proofs ("this reading is in that block") and
//! consistency proofs ("this tree extends that one").
//!
//! Hashing is exactly RFC 6962 §2.1 (RFC 9162 §2.1.1), so any outside
//! verifier built on a CT library gives the same roots and proof verdicts:
//!
//! * the empty tree's root is `SHA-256("")` ([`EMPTY_ROOT`]);
//! * a leaf hash is `SHA-256(0x00 || leaf bytes)` ([`leaf_hash`]);
//! * an inner node is `SHA-256(0x01 || left || right)` ([`node_hash`]);
//! * a tree of `n > 1` leaves splits at `k`, the largest power of two
//!   smaller than `n`: the left subtree holds leaves `0..k`, the right one
//!   `k..n`.
//!
//! Without `alloc` this module computes roots ([`root_from_leaf_hashes`],
//! [`RootBuilder`] for leaves that arrive one by one) and verifies proofs
//! ([`verify_inclusion`], [`verify_consistency`]) with a few hashes on the
//! stack — enough for a sensor to check that its reading is in a final block.
//! With `alloc`, `inclusion_proof`, `consistency_proof` and `MerkleTree`
//! produce proofs.
//!
//! ```
//! use sensorchain_core::merkle::{leaf_hash, root_from_leaf_hashes, verify_inclusion};
//! # #[cfg(feature = "alloc")] {
//! use sensorchain_core::merkle::inclusion_proof;
//!
//! let leaves = [leaf_hash(b"tx0"), leaf_hash(b"tx1"), leaf_hash(b"tx2")];
//! let root = root_from_leaf_hashes(&leaves);
//! let proof = inclusion_proof(&leaves, 2).unwrap();
//! assert!(verify_inclusion(&leaves[2], 2, 3, &proof, &root).is_ok());
//! assert!(verify_inclusion(&leaves[1], 2, 3, &proof, &root).is_err());
//! # }
//! ```
//!
//! **What a proof binds.** An inclusion proof binds the leaf, its index and
//! the root. The tree size only selects the shape of the path: two sizes that
//! give the same path shape for an index verify the same proof. Take the
//! size and the root from the same authenticated source (a block header with
//! a finality certificate), as RFC 9162 does with its signed tree heads.

use core::fmt;

use crate::hash::{Hash32, sha256};

#[cfg(feature = "alloc")]
use alloc::vec::Vec;

/// The root of the empty tree: `SHA-256("")`.
///
/// ```
/// # use sensorchain_core::{hash::sha256, merkle::{EMPTY_ROOT, root_from_leaf_hashes}};
/// assert_eq!(EMPTY_ROOT, sha256(&[]));
/// assert_eq!(root_from_leaf_hashes(&[]), EMPTY_ROOT);
/// ```
pub const EMPTY_ROOT: Hash32 = Hash32([
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
]);

/// The most levels a tree can have: sizes are `u64`, so at most 64 levels
/// above the leaves, and at most 64 complete subtrees in a
/// [`RootBuilder`]'s stack.
pub const MAX_LEVELS: usize = 64;

/// Why a Merkle operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum MerkleError {
    /// The leaf index is not smaller than the tree size.
    IndexOutOfRange,
    /// The sizes are impossible: an old tree larger than the new one, or a
    /// size larger than the number of leaves available.
    InvalidSizes,
    /// The proof does not have the number of hashes that the index and
    /// sizes call for (including a non-empty proof where none is needed).
    BadProofLength,
    /// The proof is well-formed, but the root it leads to is not the
    /// expected one: the leaf is not in the tree, or the trees are not
    /// consistent, or a hash was altered.
    RootMismatch,
    /// A [`RootBuilder`] already holds `u64::MAX` leaves.
    TreeFull,
}

impl fmt::Display for MerkleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MerkleError::IndexOutOfRange => "leaf index out of range for the tree size",
            MerkleError::InvalidSizes => "invalid tree sizes",
            MerkleError::BadProofLength => "wrong number of hashes in the proof",
            MerkleError::RootMismatch => "proof does not lead to the expected root",
            MerkleError::TreeFull => "tree holds the maximum number of leaves",
        })
    }
}

impl core::error::Error for MerkleError {}

/// The RFC 6962 leaf hash: `SHA-256(0x00 || data)`.
///
/// ```
/// # use sensorchain_core::merkle::leaf_hash;
/// // RFC 6962 leaf hash of the empty string.
/// assert_eq!(
///     leaf_hash(b"").to_string(),
///     "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
/// );
/// ```
pub fn leaf_hash(data: &[u8]) -> Hash32 {
    sha256(&[&[0x00], data])
}

/// The RFC 6962 inner node hash: `SHA-256(0x01 || left || right)`.
///
/// ```
/// # use sensorchain_core::merkle::{leaf_hash, node_hash, root_from_leaf_hashes};
/// let (a, b) = (leaf_hash(b"a"), leaf_hash(b"b"));
/// assert_eq!(root_from_leaf_hashes(&[a, b]), node_hash(&a, &b));
/// ```
pub fn node_hash(left: &Hash32, right: &Hash32) -> Hash32 {
    sha256(&[&[0x01], &left.0, &right.0])
}

/// Computes a root from leaf hashes that arrive one at a time, without
/// storing them: it keeps the roots of the complete subtrees seen so far
/// (one per set bit of the leaf count, at most [`MAX_LEVELS`], 2 KiB).
///
/// ```
/// # use sensorchain_core::merkle::{leaf_hash, root_from_leaf_hashes, RootBuilder};
/// let leaves: Vec<_> = (0u8..5).map(|i| leaf_hash(&[i])).collect();
/// let mut b = RootBuilder::new();
/// for h in &leaves {
///     b.push(*h).unwrap();
/// }
/// assert_eq!(b.len(), 5);
/// assert_eq!(b.root(), root_from_leaf_hashes(&leaves));
/// ```
#[derive(Clone)]
pub struct RootBuilder {
    /// Roots of complete subtrees, largest (leftmost) first.
    stack: [Hash32; MAX_LEVELS],
    /// Number of valid entries in `stack` (= popcount of `count`).
    depth: usize,
    /// Leaves pushed so far.
    count: u64,
}

impl Default for RootBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for RootBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootBuilder")
            .field("count", &self.count)
            .field("root", &self.root())
            .finish()
    }
}

impl RootBuilder {
    /// An empty tree.
    pub const fn new() -> Self {
        RootBuilder {
            stack: [Hash32::ZERO; MAX_LEVELS],
            depth: 0,
            count: 0,
        }
    }

    /// Appends the next leaf hash (see [`leaf_hash`]).
    ///
    /// Fails with [`MerkleError::TreeFull`] once `u64::MAX` leaves are in.
    pub fn push(&mut self, leaf_hash: Hash32) -> Result<(), MerkleError> {
        if self.count == u64::MAX {
            return Err(MerkleError::TreeFull);
        }
        self.push_unchecked(leaf_hash);
        Ok(())
    }

    /// [`push`](Self::push) for a count known to be below `u64::MAX`.
    fn push_unchecked(&mut self, leaf_hash: Hash32) {
        // With count < u64::MAX, depth = popcount(count) <= 63 < MAX_LEVELS,
        // so the slot exists. Indexed, not skipped: a leaf silently left out
        // would be a wrong root.
        self.stack[self.depth] = leaf_hash;
        self.depth += 1;
        // Merge equal-sized complete subtrees: one merge per trailing one bit
        // of the old count (each has its subtree on the stack, so depth >= 2).
        let mut c = self.count;
        while c & 1 == 1 && self.depth >= 2 {
            let parent = node_hash(&self.stack[self.depth - 2], &self.stack[self.depth - 1]);
            self.depth -= 1;
            self.stack[self.depth - 1] = parent;
            c >>= 1;
        }
        self.count += 1;
    }

    /// Number of leaves pushed.
    pub const fn len(&self) -> u64 {
        self.count
    }

    /// True when no leaf was pushed.
    pub const fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The root of the tree of all leaves pushed so far ([`EMPTY_ROOT`] for
    /// none). The builder can keep growing afterwards.
    pub fn root(&self) -> Hash32 {
        // depth <= MAX_LEVELS always (see push_unchecked); never the empty
        // root in place of a broken builder's.
        let subtrees = &self.stack[..self.depth];
        let mut iter = subtrees.iter().rev();
        let Some(mut acc) = iter.next().copied() else {
            return EMPTY_ROOT;
        };
        for left in iter {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

/// The RFC 6962 root (`MTH`) of a tree whose leaf hashes are given, without
/// allocating (a [`RootBuilder`] on the stack).
///
/// ```
/// # use sensorchain_core::merkle::{leaf_hash, node_hash, root_from_leaf_hashes, EMPTY_ROOT};
/// let l: Vec<_> = [b"a", b"b", b"c"].iter().map(|d| leaf_hash(*d)).collect();
/// // Three leaves split 2 + 1.
/// assert_eq!(root_from_leaf_hashes(&l), node_hash(&node_hash(&l[0], &l[1]), &l[2]));
/// assert_eq!(root_from_leaf_hashes(&l[..1]), l[0]);
/// assert_eq!(root_from_leaf_hashes(&[]), EMPTY_ROOT);
/// ```
pub fn root_from_leaf_hashes(leaf_hashes: &[Hash32]) -> Hash32 {
    let mut b = RootBuilder::new();
    for h in leaf_hashes {
        // A slice of 32-byte values has far fewer than u64::MAX elements.
        b.push_unchecked(*h);
    }
    b.root()
}

/// Number of bits needed to write `x` (0 for 0).
const fn bit_len(x: u64) -> u32 {
    u64::BITS - x.leading_zeros()
}

/// Splits the inclusion path of leaf `index` in a tree of `size` leaves
/// (`index < size`) into `(inner, border)`: `inner` hashes from the levels
/// where the path to `index` and the path to the last leaf differ (the
/// sibling is left or right as the bits of `index` say), then `border`
/// hashes, all to the left, from the levels above.
fn decompose(index: u64, size: u64) -> (usize, usize) {
    let inner = bit_len(index ^ (size - 1));
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    (inner as usize, border as usize)
}

/// Bit `i` of `x` (false for `i >= 64`).
fn bit(x: u64, i: usize) -> bool {
    u32::try_from(i)
        .ok()
        .and_then(|i| x.checked_shr(i))
        .is_some_and(|v| v & 1 == 1)
}

/// Hashes `seed` up through `proof`, taking each sibling from the right when
/// the matching bit of `index` is 0, from the left when it is 1.
fn chain_inner(mut seed: Hash32, proof: &[Hash32], index: u64) -> Hash32 {
    for (i, h) in proof.iter().enumerate() {
        seed = if bit(index, i) {
            node_hash(h, &seed)
        } else {
            node_hash(&seed, h)
        };
    }
    seed
}

/// Like [`chain_inner`], but only the left siblings (bit 1): how the root of
/// the *old* tree is rebuilt from a consistency proof.
fn chain_inner_right(mut seed: Hash32, proof: &[Hash32], index: u64) -> Hash32 {
    for (i, h) in proof.iter().enumerate() {
        if bit(index, i) {
            seed = node_hash(h, &seed);
        }
    }
    seed
}

/// Hashes `seed` up through `proof`, every sibling on the left.
fn chain_border_right(mut seed: Hash32, proof: &[Hash32]) -> Hash32 {
    for h in proof {
        seed = node_hash(h, &seed);
    }
    seed
}

/// The root that an inclusion proof leads to, with the same checks as
/// [`verify_inclusion`] except the final comparison.
///
/// ```
/// # use sensorchain_core::merkle::{leaf_hash, root_from_inclusion_proof, MerkleError};
/// let l = leaf_hash(b"only");
/// assert_eq!(root_from_inclusion_proof(&l, 0, 1, &[]), Ok(l));
/// assert_eq!(root_from_inclusion_proof(&l, 1, 1, &[]), Err(MerkleError::IndexOutOfRange));
/// ```
pub fn root_from_inclusion_proof(
    leaf_hash: &Hash32,
    index: u64,
    tree_size: u64,
    proof: &[Hash32],
) -> Result<Hash32, MerkleError> {
    if index >= tree_size {
        return Err(MerkleError::IndexOutOfRange);
    }
    let (inner, border) = decompose(index, tree_size);
    if proof.len() != inner + border {
        return Err(MerkleError::BadProofLength);
    }
    let (inner_part, border_part) = proof
        .split_at_checked(inner)
        .ok_or(MerkleError::BadProofLength)?;
    let r = chain_inner(*leaf_hash, inner_part, index);
    Ok(chain_border_right(r, border_part))
}

/// Verifies that `leaf_hash` is leaf number `index` (from 0) of the tree of
/// `tree_size` leaves whose root is `root` (RFC 9162 §2.1.3.2; the proof is
/// RFC 6962's `PATH`, bottom to top). Needs no allocation.
///
/// ```
/// # use sensorchain_core::merkle::{leaf_hash, node_hash, verify_inclusion, MerkleError};
/// let (a, b) = (leaf_hash(b"a"), leaf_hash(b"b"));
/// let root = node_hash(&a, &b);
/// assert_eq!(verify_inclusion(&b, 1, 2, &[a], &root), Ok(()));
/// assert_eq!(verify_inclusion(&b, 0, 2, &[a], &root), Err(MerkleError::RootMismatch));
/// assert_eq!(verify_inclusion(&b, 1, 2, &[], &root), Err(MerkleError::BadProofLength));
/// ```
pub fn verify_inclusion(
    leaf_hash: &Hash32,
    index: u64,
    tree_size: u64,
    proof: &[Hash32],
    root: &Hash32,
) -> Result<(), MerkleError> {
    let computed = root_from_inclusion_proof(leaf_hash, index, tree_size, proof)?;
    if computed == *root {
        Ok(())
    } else {
        Err(MerkleError::RootMismatch)
    }
}

/// Verifies that the tree of `new_size` leaves with root `new_root` extends
/// (keeps as its first `old_size` leaves) the tree of `old_size` leaves with
/// root `old_root` (RFC 9162 §2.1.4.2; the proof is RFC 6962's `PROOF`).
/// Needs no allocation.
///
/// Edge cases: equal sizes need an empty proof and equal roots; an old size
/// of 0 needs an empty proof and `old_root == EMPTY_ROOT` (every tree extends
/// the empty one); a new size of 0 also needs `new_root == EMPTY_ROOT`.
///
/// ```
/// # use sensorchain_core::merkle::{leaf_hash, node_hash, root_from_leaf_hashes, verify_consistency, MerkleError};
/// let l: Vec<_> = (0u8..3).map(|i| leaf_hash(&[i])).collect();
/// let old = root_from_leaf_hashes(&l[..2]);
/// let new = root_from_leaf_hashes(&l);
/// // Old size 2 is a power of two: the proof is just the new leaf.
/// assert_eq!(verify_consistency(2, 3, &old, &new, &[l[2]]), Ok(()));
/// assert_eq!(verify_consistency(2, 3, &new, &new, &[l[2]]), Err(MerkleError::RootMismatch));
/// assert_eq!(verify_consistency(3, 2, &new, &old, &[]), Err(MerkleError::InvalidSizes));
/// ```
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash32,
    new_root: &Hash32,
    proof: &[Hash32],
) -> Result<(), MerkleError> {
    if old_size > new_size {
        return Err(MerkleError::InvalidSizes);
    }
    if old_size == new_size || old_size == 0 {
        if !proof.is_empty() {
            return Err(MerkleError::BadProofLength);
        }
        let ok = if old_size == 0 {
            *old_root == EMPTY_ROOT && (new_size != 0 || *new_root == EMPTY_ROOT)
        } else {
            old_root == new_root
        };
        return if ok {
            Ok(())
        } else {
            Err(MerkleError::RootMismatch)
        };
    }

    // 0 < old_size < new_size. The proof is, after an optional first hash
    // (the root of the largest complete subtree the old tree ends with,
    // omitted when that subtree is the whole old tree), a suffix of the
    // inclusion path of leaf `old_size - 1` in the new tree, starting at
    // level `shift`.
    let (inner, border) = decompose(old_size - 1, new_size);
    let shift = old_size.trailing_zeros() as usize;
    // Since old_size < new_size, the paths to old_size - 1 and new_size - 1
    // diverge above level `shift`, so inner > shift.
    let inner = inner.checked_sub(shift).ok_or(MerkleError::InvalidSizes)?;
    let (seed, rest) = if old_size.is_power_of_two() {
        (*old_root, proof)
    } else {
        match proof.split_first() {
            Some((first, rest)) => (*first, rest),
            None => return Err(MerkleError::BadProofLength),
        }
    };
    if rest.len() != inner + border {
        return Err(MerkleError::BadProofLength);
    }
    let (inner_part, border_part) = rest
        .split_at_checked(inner)
        .ok_or(MerkleError::BadProofLength)?;
    let mask = (old_size - 1) >> shift;

    let old = chain_border_right(chain_inner_right(seed, inner_part, mask), border_part);
    if old != *old_root {
        return Err(MerkleError::RootMismatch);
    }
    let new = chain_border_right(chain_inner(seed, inner_part, mask), border_part);
    if new != *new_root {
        return Err(MerkleError::RootMismatch);
    }
    Ok(())
}

/// The largest power of two smaller than `n` (`n >= 2`): RFC 6962's split.
#[cfg(feature = "alloc")]
fn split_point(n: usize) -> usize {
    // n >= 2, so n - 1 >= 1 and the shift is < usize::BITS.
    1usize << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// RFC 6962 §2.1.1 `PATH(m, D[n])`, appended bottom to top to `out`.
/// Requires `m < leaves.len()`. Recursion depth is at most the tree height.
#[cfg(feature = "alloc")]
fn path(m: usize, leaves: &[Hash32], out: &mut Vec<Hash32>) {
    let n = leaves.len();
    if n <= 1 {
        return;
    }
    let k = split_point(n);
    let (left, right) = leaves.split_at(k.min(n));
    if m < k {
        path(m, left, out);
        out.push(root_from_leaf_hashes(right));
    } else {
        path(m - k, right, out);
        out.push(root_from_leaf_hashes(left));
    }
}

/// RFC 6962 §2.1.2 `SUBPROOF(m, D[n], b)`, appended bottom to top to `out`.
/// Requires `0 < m <= leaves.len()`.
#[cfg(feature = "alloc")]
fn subproof(m: usize, leaves: &[Hash32], b: bool, out: &mut Vec<Hash32>) {
    let n = leaves.len();
    if m >= n {
        if !b {
            out.push(root_from_leaf_hashes(leaves));
        }
        return;
    }
    let k = split_point(n);
    let (left, right) = leaves.split_at(k.min(n));
    if m <= k {
        subproof(m, left, b, out);
        out.push(root_from_leaf_hashes(right));
    } else {
        subproof(m - k, right, false, out);
        out.push(root_from_leaf_hashes(left));
    }
}

/// The inclusion proof (RFC 6962 §2.1.1 `PATH`) of leaf `index` in the tree
/// of all of `leaf_hashes`, for [`verify_inclusion`]. For an older tree,
/// pass the prefix `&leaf_hashes[..size]`.
///
/// ```
/// # use sensorchain_core::merkle::{inclusion_proof, leaf_hash, MerkleError};
/// let l: Vec<_> = (0u8..4).map(|i| leaf_hash(&[i])).collect();
/// assert_eq!(inclusion_proof(&l, 3).unwrap().len(), 2);
/// assert_eq!(inclusion_proof(&l, 4), Err(MerkleError::IndexOutOfRange));
/// ```
#[cfg(feature = "alloc")]
pub fn inclusion_proof(leaf_hashes: &[Hash32], index: u64) -> Result<Vec<Hash32>, MerkleError> {
    let m = usize::try_from(index).map_err(|_| MerkleError::IndexOutOfRange)?;
    if m >= leaf_hashes.len() {
        return Err(MerkleError::IndexOutOfRange);
    }
    let mut out = Vec::new();
    path(m, leaf_hashes, &mut out);
    Ok(out)
}

/// The consistency proof (RFC 6962 §2.1.2 `PROOF`) from the tree of the
/// first `old_size` leaves to the tree of all of `leaf_hashes`, for
/// [`verify_consistency`]. Empty when `old_size` is 0 or all the leaves.
///
/// ```
/// # use sensorchain_core::merkle::{consistency_proof, leaf_hash, MerkleError};
/// let l: Vec<_> = (0u8..4).map(|i| leaf_hash(&[i])).collect();
/// assert_eq!(consistency_proof(&l, 3).unwrap().len(), 3);
/// assert_eq!(consistency_proof(&l, 4).unwrap(), vec![]);
/// assert_eq!(consistency_proof(&l, 5), Err(MerkleError::InvalidSizes));
/// ```
#[cfg(feature = "alloc")]
pub fn consistency_proof(
    leaf_hashes: &[Hash32],
    old_size: u64,
) -> Result<Vec<Hash32>, MerkleError> {
    let m = usize::try_from(old_size).map_err(|_| MerkleError::InvalidSizes)?;
    if m > leaf_hashes.len() {
        return Err(MerkleError::InvalidSizes);
    }
    let mut out = Vec::new();
    if m > 0 && m < leaf_hashes.len() {
        subproof(m, leaf_hashes, true, &mut out);
    }
    Ok(out)
}

/// An append-only Merkle tree that keeps its leaf hashes, for gateways that
/// serve proofs. Roots and proofs are recomputed on demand (`O(n)` hashes);
/// use [`RootBuilder`] when only the root is needed.
///
/// ```
/// # use sensorchain_core::merkle::{verify_consistency, verify_inclusion, MerkleTree};
/// let mut t = MerkleTree::new();
/// for i in 0u8..5 {
///     t.push(&[i]);
/// }
/// let proof = t.inclusion_proof(3, 5).unwrap();
/// assert!(verify_inclusion(&t.leaf_hashes()[3], 3, 5, &proof, &t.root()).is_ok());
///
/// let old = t.root_at(2).unwrap();
/// let proof = t.consistency_proof(2, 5).unwrap();
/// assert!(verify_consistency(2, 5, &old, &t.root(), &proof).is_ok());
/// ```
#[cfg(feature = "alloc")]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MerkleTree {
    leaves: Vec<Hash32>,
}

#[cfg(feature = "alloc")]
impl MerkleTree {
    /// An empty tree.
    pub const fn new() -> Self {
        MerkleTree { leaves: Vec::new() }
    }

    /// A tree over the given leaf hashes.
    pub fn from_leaf_hashes(leaf_hashes: Vec<Hash32>) -> Self {
        MerkleTree {
            leaves: leaf_hashes,
        }
    }

    /// Appends a leaf given by its data (hashed with [`leaf_hash`]).
    pub fn push(&mut self, data: &[u8]) {
        self.leaves.push(leaf_hash(data));
    }

    /// Appends a leaf given by its leaf hash.
    pub fn push_leaf_hash(&mut self, leaf_hash: Hash32) {
        self.leaves.push(leaf_hash);
    }

    /// Number of leaves.
    pub fn len(&self) -> u64 {
        self.leaves.len() as u64
    }

    /// True when the tree has no leaves.
    pub fn is_empty(&self) -> bool {
        self.leaves.is_empty()
    }

    /// The leaf hashes, in order.
    pub fn leaf_hashes(&self) -> &[Hash32] {
        &self.leaves
    }

    /// The current root.
    pub fn root(&self) -> Hash32 {
        root_from_leaf_hashes(&self.leaves)
    }

    /// The first `size` leaves, or [`MerkleError::InvalidSizes`].
    fn prefix(&self, size: u64) -> Result<&[Hash32], MerkleError> {
        usize::try_from(size)
            .ok()
            .and_then(|s| self.leaves.get(..s))
            .ok_or(MerkleError::InvalidSizes)
    }

    /// The root of the tree of the first `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Hash32, MerkleError> {
        self.prefix(size).map(root_from_leaf_hashes)
    }

    /// The inclusion proof of leaf `index` in the tree of the first
    /// `tree_size` leaves.
    pub fn inclusion_proof(&self, index: u64, tree_size: u64) -> Result<Vec<Hash32>, MerkleError> {
        inclusion_proof(self.prefix(tree_size)?, index)
    }

    /// The consistency proof from the tree of the first `old_size` leaves to
    /// the tree of the first `new_size` leaves.
    pub fn consistency_proof(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> Result<Vec<Hash32>, MerkleError> {
        consistency_proof(self.prefix(new_size)?, old_size)
    }
}

#[cfg(test)]
mod tests;
