//! Finality votes into certificates: the leader's [`Collector`].
//!
//! Every member signs a vote for each block it stores
//! ([`Outcome::Block`](super::Outcome::Block)); the votes reach the leader,
//! whose collector counts them by height. When the valid votes for the
//! *stored* block at a height reach the quorum of the validator set in force
//! there ([`Store::validator_set_at`]), the collector hands out the
//! certificate, which the leader appends to the log
//! ([`ClusterRequest::Finality`](super::ClusterRequest::Finality)); every
//! member then checks and stores the same certificate.
//!
//! A vote counts only once it verifies (core's `FinalityVote::verify`) under
//! a validator in force at its height. Two valid votes by one validator at
//! one height for different hashes are **equivocation**: the pair is stored
//! as evidence ([`Store::evidence`]) and the second vote is refused. A vote
//! for a height the store has not reached yet waits (bounded) until the
//! leader's chain gets there ([`Collector::on_block`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use sensorchain_core::block::{CERT_MAX_VOTES, CertError, FinalityCert, FinalityVote, quorum};
use sensorchain_core::hash::Hash32;
use sensorchain_core::identity::{KeyId, VerifyingKey};

use crate::store::{Equivocation, Store, StoreError};

/// Heights a collector keeps votes for, at most (beyond: refused).
pub const MAX_PENDING_HEIGHTS: usize = 4096;

/// What became of a vote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Counted for the stored block; not yet a quorum.
    Counted {
        /// Valid distinct votes for the stored block at that height.
        votes: usize,
        /// Votes needed.
        quorum: usize,
    },
    /// This vote completed a quorum: the certificate to append to the log
    /// (given once per height; boxed: it holds up to 32 votes).
    Quorum(Box<FinalityCert>),
    /// Kept until the leader's chain reaches its height.
    Early,
    /// Nothing new: the same vote again, a vote for a hash that is not the
    /// stored block's (kept: a second hash by the same validator is
    /// evidence), or a height already certified.
    Known,
    /// Refused: not a validator in force at that height, or the signature
    /// does not verify, or too far ahead.
    Refused(String),
    /// The validator signed another hash at this height before: evidence
    /// stored, this vote refused.
    Equivocation(Box<Equivocation>),
}

/// Votes of one height.
#[derive(Default)]
struct Height {
    /// The first valid vote of each validator: the hash it signed.
    first: BTreeMap<KeyId, (Hash32, FinalityVote)>,
    /// The certificate was handed out.
    done: bool,
}

/// Counts finality votes into certificates (see the module docs).
pub struct Collector {
    store: Arc<Store>,
    heights: BTreeMap<u64, Height>,
    early: BTreeMap<u64, Vec<(Hash32, FinalityVote)>>,
}

impl Collector {
    /// A collector over the leader's chain store.
    pub fn new(store: Arc<Store>) -> Collector {
        Collector {
            store,
            heights: BTreeMap::new(),
            early: BTreeMap::new(),
        }
    }

    /// Takes `vote` for the block at `height` with hash `hash`.
    pub fn add(
        &mut self,
        height: u64,
        hash: Hash32,
        vote: FinalityVote,
    ) -> Result<Verdict, StoreError> {
        let head = self.store.head()?.map(|h| h.height);
        if head.is_none_or(|h| height > h) {
            if self.heights.len() + self.early.len() >= MAX_PENDING_HEIGHTS
                && !self.early.contains_key(&height)
            {
                return Ok(Verdict::Refused(format!(
                    "height {height} is too far ahead of this chain"
                )));
            }
            let early = self.early.entry(height).or_default();
            if early.len() < CERT_MAX_VOTES * 2 && !early.contains(&(hash, vote)) {
                early.push((hash, vote));
            }
            return Ok(Verdict::Early);
        }
        if self.store.cert(height)?.is_some() {
            self.heights.remove(&height);
            return Ok(Verdict::Known);
        }
        let Some(header) = self.store.header(height)? else {
            return Ok(Verdict::Refused(format!("no block at height {height}")));
        };
        let set = self.store.validator_set_at(height)?.unwrap_or_default();
        let Some(key) = set
            .iter()
            .filter(|k| k.key_id() == vote.validator)
            .find_map(|k| VerifyingKey::from_public(k).ok())
        else {
            return Ok(Verdict::Refused(CertError::UnknownValidator.to_string()));
        };
        if let Err(e) = vote.verify(&header.chain_id, height, &hash, &key) {
            return Ok(Verdict::Refused(e.to_string()));
        }
        if !self.heights.contains_key(&height) && self.heights.len() >= MAX_PENDING_HEIGHTS {
            return Ok(Verdict::Refused(format!(
                "votes of {MAX_PENDING_HEIGHTS} heights are pending already"
            )));
        }
        let stored = header.hash();
        let h = self.heights.entry(height).or_default();
        if let Some((first_hash, first)) = h.first.get(&vote.validator) {
            if *first_hash == hash {
                return Ok(Verdict::Known);
            }
            let e = Equivocation {
                height,
                validator: *key.public(),
                first: (*first_hash, *first),
                second: (hash, vote),
            };
            self.store.record_evidence(&e)?;
            tracing::error!(
                height,
                validator = %key.public(),
                "equivocation: the validator signed two block hashes at one height (evidence stored)"
            );
            return Ok(Verdict::Equivocation(Box::new(e)));
        }
        h.first.insert(vote.validator, (hash, vote));
        if hash != stored || h.done {
            return Ok(Verdict::Known);
        }
        let q = quorum(set.len());
        let votes: Vec<FinalityVote> = h
            .first
            .values()
            .filter(|(x, _)| *x == stored)
            .map(|(_, v)| *v)
            .collect();
        if votes.len() < q {
            return Ok(Verdict::Counted {
                votes: votes.len(),
                quorum: q,
            });
        }
        let mut cert = FinalityCert::new(&header);
        for v in votes.into_iter().take(CERT_MAX_VOTES) {
            // distinct validators by construction; the capacity is checked
            // by `take`
            if cert.add(v).is_err() {
                break;
            }
        }
        h.done = true;
        Ok(Verdict::Quorum(Box::new(cert)))
    }

    /// The leader's chain reached `height`: the votes that waited for it
    /// are taken now; returns their verdicts.
    pub fn on_block(&mut self, height: u64) -> Result<Vec<Verdict>, StoreError> {
        let ready: Vec<u64> = self.early.range(..=height).map(|(h, _)| *h).collect();
        let mut out = Vec::new();
        for h in ready {
            for (hash, vote) in self.early.remove(&h).unwrap_or_default() {
                out.push(self.add(h, hash, vote)?);
            }
        }
        Ok(out)
    }

    /// The block at `height` is certified (its certificate applied): its
    /// votes are dropped.
    pub fn on_final(&mut self, height: u64) {
        self.heights.remove(&height);
        self.early.remove(&height);
    }

    /// Heights with votes kept (counted or early).
    pub fn pending(&self) -> usize {
        self.heights.len() + self.early.len()
    }
}
