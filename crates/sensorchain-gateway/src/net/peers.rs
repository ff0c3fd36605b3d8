//! What a gateway keeps per device identity: its handshake rate (a token
//! bucket) and its one live session.
//!
//! * **Handshake rate**: every handshake of an identity that passed the
//!   allowlist takes a token; an identity has [`HANDSHAKE_BURST`] tokens and
//!   gets one back every [`HANDSHAKE_REFILL_MS`] ms. Without a token the
//!   handshake is refused `Busy` (metric label `rate_limited`) before any
//!   session slot, half-open slot or cryptography is spent. A handshake
//!   refused `Busy` because the gateway's tables are full gives its token
//!   back (the identity did nothing wrong).
//! * **One live session per identity**: when a handshake of identity X
//!   completes, X's previous session (if any) is told to end: it stops
//!   reading, answers the submissions it has in flight once they are
//!   committed or refused, sends a session close frame and closes
//!   ([`LinkEnd::Replaced`](super::responder::LinkEnd::Replaced)). A duplicated
//!   key therefore holds one session slot, not `max_sessions`.
//!
//! Memory: an entry exists only for an identity that passed the allowlist
//! (a registered identity with `CONNECT`), so the table is bounded by the
//! registered identities; entries that are back to the default (no session,
//! a full bucket) are dropped once the table holds more than
//! [`PRUNE_ABOVE`] entries.

use std::collections::HashMap;
use std::sync::Mutex;

use sensorchain_core::identity::PublicKey;
use tokio::sync::oneshot;

/// Handshakes an identity may start at once.
pub const HANDSHAKE_BURST: u64 = 4;
/// One more handshake per this many ms (1 per second).
pub const HANDSHAKE_REFILL_MS: u64 = 1_000;
/// Entries back to the default are pruned above this many.
pub const PRUNE_ABOVE: usize = 1_024;

const FULL: u64 = HANDSHAKE_BURST * HANDSHAKE_REFILL_MS;

struct Entry {
    /// Tokens × `HANDSHAKE_REFILL_MS` (one unit per ms of refill).
    credit: u64,
    at_ms: u64,
    live: Option<(u64, oneshot::Sender<()>)>,
}

impl Entry {
    fn refill(&mut self, now_ms: u64) {
        let dt = now_ms.saturating_sub(self.at_ms);
        self.credit = self.credit.saturating_add(dt).min(FULL);
        self.at_ms = now_ms;
    }
}

/// Per-identity handshake rates and live sessions of one gateway.
#[derive(Default)]
pub struct Peers {
    inner: Mutex<(HashMap<PublicKey, Entry>, u64)>,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers")
            .field("identities", &self.lock().0.len())
            .finish()
    }
}

/// A live session's registration: ends with [`Peers::end_session`].
#[derive(Debug)]
pub struct SessionTicket {
    id: u64,
}

impl Peers {
    fn lock(&self) -> std::sync::MutexGuard<'_, (HashMap<PublicKey, Entry>, u64)> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a handshake token of `peer` (an allowlisted identity); false
    /// when its rate is exhausted.
    pub fn take_token(&self, peer: &PublicKey, now_ms: u64) -> bool {
        let mut g = self.lock();
        let map = &mut g.0;
        if map.len() > PRUNE_ABOVE {
            map.retain(|_, e| {
                e.refill(now_ms);
                e.live.is_some() || e.credit < FULL
            });
        }
        let e = map.entry(*peer).or_insert(Entry {
            credit: FULL,
            at_ms: now_ms,
            live: None,
        });
        e.refill(now_ms);
        if e.credit >= HANDSHAKE_REFILL_MS {
            e.credit -= HANDSHAKE_REFILL_MS;
            true
        } else {
            false
        }
    }

    /// Gives a token back (the handshake was refused for the gateway's own
    /// limits, not the identity's).
    pub fn refund(&self, peer: &PublicKey) {
        if let Some(e) = self.lock().0.get_mut(peer) {
            e.credit = e.credit.saturating_add(HANDSHAKE_REFILL_MS).min(FULL);
        }
    }

    /// Registers the new live session of `peer`; tells its previous one,
    /// if any, to end. The receiver fires when a newer session of `peer`
    /// replaces this one.
    pub fn start_session(
        &self,
        peer: &PublicKey,
        now_ms: u64,
    ) -> (SessionTicket, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let mut g = self.lock();
        g.1 += 1;
        let id = g.1;
        let e = g.0.entry(*peer).or_insert(Entry {
            credit: FULL,
            at_ms: now_ms,
            live: None,
        });
        if let Some((_, old)) = e.live.replace((id, tx)) {
            let _ = old.send(());
        }
        (SessionTicket { id }, rx)
    }

    /// Unregisters a session that ended (a no-op if a newer one replaced
    /// it).
    pub fn end_session(&self, peer: &PublicKey, ticket: &SessionTicket) {
        if let Some(e) = self.lock().0.get_mut(peer)
            && matches!(e.live, Some((id, _)) if id == ticket.id)
        {
            e.live = None;
        }
    }

    /// Live sessions registered for `peer` (0 or 1).
    pub fn live_sessions(&self, peer: &PublicKey) -> usize {
        self.lock()
            .0
            .get(peer)
            .map_or(0, |e| usize::from(e.live.is_some()))
    }

    /// Identities tracked now.
    pub fn tracked(&self) -> usize {
        self.lock().0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sensorchain_core::identity::Keypair;

    #[test]
    fn bucket_burst_refill_and_refund() {
        let p = Peers::default();
        let k = Keypair::from_seed([1; 32]).public();
        for _ in 0..HANDSHAKE_BURST {
            assert!(p.take_token(&k, 0));
        }
        assert!(!p.take_token(&k, 0));
        assert!(!p.take_token(&k, HANDSHAKE_REFILL_MS - 1));
        assert!(p.take_token(&k, HANDSHAKE_REFILL_MS));
        assert!(!p.take_token(&k, HANDSHAKE_REFILL_MS));
        p.refund(&k);
        assert!(p.take_token(&k, HANDSHAKE_REFILL_MS));
        // another identity has its own bucket
        let other = Keypair::from_seed([2; 32]).public();
        assert!(p.take_token(&other, HANDSHAKE_REFILL_MS));
        // a long pause refills to the burst, never beyond
        for _ in 0..HANDSHAKE_BURST {
            assert!(p.take_token(&k, 1_000_000));
        }
        assert!(!p.take_token(&k, 1_000_000));
    }

    #[test]
    fn a_new_session_replaces_the_old_one() {
        let p = Peers::default();
        let k = Keypair::from_seed([1; 32]).public();
        let (a, mut ra) = p.start_session(&k, 0);
        assert!(ra.try_recv().is_err());
        let (b, mut rb) = p.start_session(&k, 0);
        assert!(ra.try_recv().is_ok(), "the old session is told to end");
        assert_eq!(p.live_sessions(&k), 1);
        // the old one ending does not unregister the new one
        p.end_session(&k, &a);
        assert_eq!(p.live_sessions(&k), 1);
        assert!(rb.try_recv().is_err());
        p.end_session(&k, &b);
        assert_eq!(p.live_sessions(&k), 0);
    }

    #[test]
    fn idle_entries_are_pruned() {
        let p = Peers::default();
        for i in 0..(PRUNE_ABOVE as u32 + 10) {
            let mut s = [7u8; 32];
            s[..4].copy_from_slice(&i.to_le_bytes());
            assert!(p.take_token(&Keypair::from_seed(s).public(), 0));
        }
        // long after, all buckets are full again: one more take prunes them
        assert!(p.take_token(&Keypair::from_seed([0xee; 32]).public(), 60_000));
        assert!(p.tracked() <= 2, "{}", p.tracked());
    }
}
