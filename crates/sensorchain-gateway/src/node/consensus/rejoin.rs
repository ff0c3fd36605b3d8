//! A member that starts with an empty Raft log — new, or one that lost its
//! data directory — asks the cluster whether it knew it before
//! ([`Request::Rejoin`](sensorchain_core::peer::Request::Rejoin)), before
//! it starts Raft.
//!
//! Raft's safety rests on every member keeping its vote and the entries it
//! acknowledged: a voter that forgot them could help elect a leader that
//! lacks a committed entry. So a member with an empty log does not vote
//! under its old membership:
//!
//! * the leader, asked ([`Consensus::rejoin`]), looks at what it had
//!   matched of the asker's log. Nothing beyond the initial membership
//!   (index 0): a new member, [`RejoinAnswer::Fresh`], which starts as
//!   configured. More: the member lost entries; the leader removes it from
//!   the membership (its replication state with it: openraft asserts that
//!   a follower's log never goes back), adds it again as a learner, answers
//!   [`RejoinAnswer::Learner`], and makes it a voter again once it has
//!   caught up (by the log, or by snapshot and back-fill);
//! * the asker ([`probe`]) asks every peer at once, follows their hints to
//!   the leader, and when no peer's log holds anything beyond the initial
//!   membership (a cluster starting for the first time, or no peer
//!   reachable) starts as configured. When the cluster has run but no
//!   leader answers within the bound, it refuses to start, saying why.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use openraft::ChangeMembers;
use sensorchain_core::identity::PublicKey;
use sensorchain_core::peer::{RejoinAnswer, reason_text};

use super::Consensus;
use crate::cluster::{NodeId, PeerNetwork};

/// How a member with an empty Raft log starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Start {
    /// As configured: initialise the membership (unless `join`).
    AsConfigured,
    /// As a learner the leader re-added: do not initialise, follow.
    Follow,
}

/// The wait between rounds of asking.
const ROUND: Duration = Duration::from_millis(500);

/// Asks `peers` whether the cluster knew this member (module docs); gives
/// up after `bound` when the cluster has run but no leader answers.
pub(super) async fn probe(
    net: &PeerNetwork,
    peers: &[NodeId],
    bound: Duration,
) -> anyhow::Result<Start> {
    let me = net.id();
    let t = Instant::now();
    loop {
        let answers = futures::future::join_all(
            peers
                .iter()
                .map(|&p| async move { (p, net.rejoin(p).await) }),
        )
        .await;
        let mut established = false;
        let mut leaders = BTreeSet::new();
        for (p, a) in answers {
            match a {
                Ok(RejoinAnswer::Fresh) => return Ok(Start::AsConfigured),
                Ok(RejoinAnswer::Learner) => {
                    tracing::warn!(
                        leader = p,
                        "this gateway's Raft log is empty but the cluster had entries of it: it \
                         lost its data; the leader re-added it as a learner, it becomes a voter \
                         once caught up"
                    );
                    return Ok(Start::Follow);
                }
                Ok(RejoinAnswer::Refused { message }) => {
                    anyhow::bail!("member {p} refused this gateway's rejoin: {message}")
                }
                Ok(RejoinAnswer::NotLeader {
                    leader,
                    established: e,
                }) => {
                    established |= e;
                    leaders.extend(leader.filter(|l| *l != me));
                }
                Err(e) => tracing::debug!(peer = p, "rejoin: {e}"),
            }
        }
        if !established && leaders.is_empty() {
            return Ok(Start::AsConfigured);
        }
        if t.elapsed() > bound {
            anyhow::bail!(
                "this gateway's Raft log is empty, but the cluster has run (a peer's log holds \
                 entries) and no leader answered within {bound:?}: it lost its data or is new to \
                 a running cluster. Start it again once the cluster has a leader (it then rejoins \
                 as a learner), or add it with `join = true` and `sensorchain cluster add` \
                 (docs/CLUSTER.md, \"Catch-up and snapshots\")"
            );
        }
        tokio::time::sleep(ROUND).await;
    }
}

impl Consensus {
    /// The leader's answer to the member with key `from`, which starts with
    /// an empty Raft log (module docs).
    pub(super) async fn rejoin(&self, from: PublicKey) -> RejoinAnswer {
        let m = self.raft.metrics().borrow().clone();
        if m.current_leader != Some(self.id) {
            return RejoinAnswer::NotLeader {
                leader: m.current_leader,
                established: m.last_log_index.unwrap_or(0) > 0,
            };
        }
        let membership = m.membership_config.membership().clone();
        let Some((id, node)) = membership
            .nodes()
            .find(|(_, n)| n.public_key == from.0)
            .map(|(i, n)| (*i, n.clone()))
        else {
            return refused(format!("key {from} is not a member of this cluster"));
        };
        let voter = membership.voter_ids().any(|v| v == id);
        let matched = m
            .replication
            .as_ref()
            .and_then(|r| r.get(&id).copied().flatten())
            .map_or(0, |l| l.index);
        if matched == 0 {
            return if voter {
                RejoinAnswer::Fresh
            } else {
                RejoinAnswer::Learner
            };
        }
        tracing::warn!(
            member = id,
            matched,
            "member {id} starts with an empty Raft log, but this leader had matched its log to \
             index {matched}: it lost its data; removing it and adding it again as a learner"
        );
        let raft = self.raft.clone();
        let change = if voter {
            ChangeMembers::RemoveVoters([id].into())
        } else {
            ChangeMembers::RemoveNodes([id].into())
        };
        let readd = node.clone();
        let r = self
            .handle
            .spawn(async move {
                raft.change_membership(change, false).await?;
                raft.add_learner(id, readd, false).await
            })
            .await;
        match r {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return refused(format!("re-adding member {id} failed: {e}")),
            Err(e) => return refused(format!("re-adding member {id} failed: {e}")),
        }
        if voter {
            // A voter again once caught up (add_learner blocks until then).
            let raft = self.raft.clone();
            self.handle.spawn(async move {
                let r = async {
                    raft.add_learner(id, node, true).await?;
                    raft.change_membership(ChangeMembers::AddVoterIds([id].into()), false)
                        .await
                }
                .await;
                match r {
                    Ok(_) => tracing::info!(member = id, "member {id} is a voter again"),
                    Err(e) => tracing::warn!(
                        member = id,
                        "member {id} stays a learner ({e}): `sensorchain cluster add` makes it a voter"
                    ),
                }
            });
        }
        RejoinAnswer::Learner
    }
}

fn refused(message: String) -> RejoinAnswer {
    RejoinAnswer::Refused {
        message: reason_text(&message),
    }
}
