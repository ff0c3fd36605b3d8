//! What this gateway saw of each registered device's links: its live
//! sessions and its refused submissions by reason ([`DeviceStats`]), for
//! the API's identity views and the dashboard.
//!
//! Bounded: only identities registered in the world state are counted
//! (the caller checks), and at most [`MAX_DEVICES`] of them; past that a
//! new identity is not counted (the gateway-wide counters in `/metrics`
//! still are). Counts are this gateway's since it started, kept in memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use sensorchain_core::identity::PublicKey;

/// The most identities counted.
pub const MAX_DEVICES: usize = 65_536;

/// One device's counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceLinks {
    /// Its sessions open on this gateway now (one, unless a newer one is
    /// replacing an older one).
    pub live_sessions: u32,
    /// Its submissions this gateway refused, by reason (the metric labels
    /// of `sensorchain_rejects_total`).
    pub rejected: BTreeMap<&'static str, u64>,
}

/// Per-device link counts of one gateway (module docs).
#[derive(Debug, Default)]
pub struct DeviceStats {
    inner: Mutex<HashMap<PublicKey, DeviceLinks>>,
}

impl DeviceStats {
    fn with(&self, pk: &PublicKey, f: impl FnOnce(&mut DeviceLinks)) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = m.get_mut(pk) {
            f(e);
        } else if m.len() < MAX_DEVICES {
            f(m.entry(*pk).or_default());
        }
    }

    /// A session of `pk` opened.
    pub fn session_opened(&self, pk: &PublicKey) {
        self.with(pk, |e| e.live_sessions = e.live_sessions.saturating_add(1));
    }

    /// A session of `pk` ended.
    pub fn session_closed(&self, pk: &PublicKey) {
        self.with(pk, |e| e.live_sessions = e.live_sessions.saturating_sub(1));
    }

    /// A submission signed by `pk` was refused for `reason`.
    pub fn refused(&self, pk: &PublicKey, reason: &'static str) {
        self.with(pk, |e| *e.rejected.entry(reason).or_insert(0) += 1);
    }

    /// What was counted of `pk` (zeros when nothing was).
    pub fn of(&self, pk: &PublicKey) -> DeviceLinks {
        let m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        m.get(pk).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_sessions_and_refusals_per_device_bounded() {
        let s = DeviceStats::default();
        let a = PublicKey([1; 32]);
        s.session_opened(&a);
        s.session_opened(&a);
        s.session_closed(&a);
        s.refused(&a, "replay");
        s.refused(&a, "replay");
        s.refused(&a, "not_permitted");
        let v = s.of(&a);
        assert_eq!(v.live_sessions, 1);
        assert_eq!(v.rejected.get("replay"), Some(&2));
        assert_eq!(v.rejected.get("not_permitted"), Some(&1));
        s.session_closed(&a);
        s.session_closed(&a);
        assert_eq!(s.of(&a).live_sessions, 0, "never below zero");
        assert_eq!(s.of(&PublicKey([2; 32])), DeviceLinks::default());
        for i in 0..MAX_DEVICES as u32 + 10 {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_le_bytes());
            k[31] = 9;
            s.refused(&PublicKey(k), "replay");
        }
        assert!(s.inner.lock().unwrap().len() <= MAX_DEVICES);
    }
}
