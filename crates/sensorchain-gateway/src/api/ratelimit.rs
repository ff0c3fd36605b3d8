//! Token buckets for the login routes: one per client address (bounded
//! table) and one for all clients, so a brute-forcer from one address is
//! answered 429 while others are still served, and a flood from many
//! addresses cannot take more than the global rate of signature checks.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Burst of login requests one address may make (a login is two: the
/// challenge and the login; a script running 30 `sensorchain tx` at once
/// fits).
pub const PER_ADDRESS_BURST: f64 = 60.0;
/// Login requests per second one address gets back.
pub const PER_ADDRESS_PER_SEC: f64 = 5.0;
/// Burst of login requests of all addresses together.
pub const GLOBAL_BURST: f64 = 400.0;
/// Login requests per second of all addresses together.
pub const GLOBAL_PER_SEC: f64 = 100.0;
/// Most addresses tracked at once (full buckets are dropped first).
pub const MAX_ADDRESSES: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: u64,
}

impl Bucket {
    fn full(burst: f64, now_ms: u64) -> Self {
        Bucket {
            tokens: burst,
            at_ms: now_ms,
        }
    }

    fn refill(&mut self, burst: f64, per_sec: f64, now_ms: u64) {
        let dt = now_ms.saturating_sub(self.at_ms) as f64 / 1000.0;
        self.tokens = (self.tokens + dt * per_sec).min(burst);
        self.at_ms = now_ms.max(self.at_ms);
    }
}

/// The login rate limiter (see the [module](self)).
#[derive(Debug)]
pub struct RateLimiter {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    global: Bucket,
    by_addr: HashMap<IpAddr, Bucket>,
}

impl RateLimiter {
    /// Full buckets at `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        RateLimiter {
            inner: Mutex::new(Inner {
                global: Bucket::full(GLOBAL_BURST, now_ms),
                by_addr: HashMap::new(),
            }),
        }
    }

    /// Takes one token of `addr`'s bucket and one of the global bucket;
    /// `false` (nothing taken) if either is empty. Requests without a known
    /// address (in-process tests) share the address `0.0.0.0`.
    pub fn allow(&self, addr: Option<IpAddr>, now_ms: u64) -> bool {
        let addr = addr.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Inner { global, by_addr } = &mut *g;
        global.refill(GLOBAL_BURST, GLOBAL_PER_SEC, now_ms);
        if by_addr.len() >= MAX_ADDRESSES && !by_addr.contains_key(&addr) {
            by_addr.retain(|_, b| {
                b.refill(PER_ADDRESS_BURST, PER_ADDRESS_PER_SEC, now_ms);
                b.tokens < PER_ADDRESS_BURST
            });
            if by_addr.len() >= MAX_ADDRESSES {
                // every tracked address is active: only the global bucket
                // decides for a new one (it is not remembered)
                if global.tokens >= 1.0 {
                    global.tokens -= 1.0;
                    return true;
                }
                return false;
            }
        }
        let b = by_addr
            .entry(addr)
            .or_insert_with(|| Bucket::full(PER_ADDRESS_BURST, now_ms));
        b.refill(PER_ADDRESS_BURST, PER_ADDRESS_PER_SEC, now_ms);
        if b.tokens >= 1.0 && global.tokens >= 1.0 {
            b.tokens -= 1.0;
            global.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_is_limited_others_are_served_and_refill() {
        let r = RateLimiter::new(0);
        let a = Some(IpAddr::from([127, 0, 0, 2]));
        let b = Some(IpAddr::from([127, 0, 0, 3]));
        let n = (0..100).filter(|_| r.allow(a, 0)).count();
        assert_eq!(n, PER_ADDRESS_BURST as usize);
        assert!(r.allow(b, 0));
        assert!(!r.allow(a, 100));
        assert!(r.allow(a, 200));
        // the global bound
        let many = (0..1000u32)
            .filter(|i| r.allow(Some(IpAddr::from(i.to_be_bytes())), 1000))
            .count();
        // at most the global burst (the bucket refilled to it by then)
        assert!(many <= GLOBAL_BURST as usize, "{many}");
        assert!(many < 1000, "{many}");
    }
}
