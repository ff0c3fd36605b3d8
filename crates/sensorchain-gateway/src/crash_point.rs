//! Fault injection for the crash soak (tests/crash_soak.rs): with
//! `SENSORCHAIN_TEST_KILL_AT=POINT:N` in its environment, the gateway
//! process sends itself SIGKILL the `N`th time it reaches `POINT` — a kill
//! at an exact place of the write path, which a kill from outside at a
//! random time hits only by chance. Read once; absent (as in any
//! deployment), each point costs one relaxed atomic load.
//!
//! The points, in the order a block passes them:
//!
//! | point | where |
//! |---|---|
//! | `log_append` | the Raft log's writer, after an append was written without durability and before the fsync that fires its callback |
//! | `apply_validated` | the state machine, after a block passed validation and before the chain store commits it |
//! | `apply_stored` | the state machine, after the chain store committed a block (durably or not) and before Raft hears it was applied |
//! | `state_snapshot` | the state machine, before committing a block that carries a world-state snapshot (every `snapshot_every` blocks) |
//! | `raft_snapshot` | the state machine, after it built a Raft snapshot (the chain flushed) and before openraft stores it and purges the log |
//! | `cert_stored` | the state machine, after a finality certificate was stored and before Raft hears it |

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// A place on the write path where the soak may kill the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// See the module's table.
    LogAppend,
    /// See the module's table.
    ApplyValidated,
    /// See the module's table.
    ApplyStored,
    /// See the module's table.
    StateSnapshot,
    /// See the module's table.
    RaftSnapshot,
    /// See the module's table.
    CertStored,
}

impl Point {
    /// Every point, in the module table's order.
    pub const ALL: [Point; 6] = [
        Point::LogAppend,
        Point::ApplyValidated,
        Point::ApplyStored,
        Point::StateSnapshot,
        Point::RaftSnapshot,
        Point::CertStored,
    ];

    /// Its name in `SENSORCHAIN_TEST_KILL_AT`.
    pub fn name(self) -> &'static str {
        match self {
            Point::LogAppend => "log_append",
            Point::ApplyValidated => "apply_validated",
            Point::ApplyStored => "apply_stored",
            Point::StateSnapshot => "state_snapshot",
            Point::RaftSnapshot => "raft_snapshot",
            Point::CertStored => "cert_stored",
        }
    }

    fn parse(s: &str) -> Option<Point> {
        Point::ALL.into_iter().find(|p| p.name() == s)
    }
}

/// The point armed and how many times it was reached.
struct Armed {
    point: Point,
    nth: u64,
    reached: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let v = std::env::var("SENSORCHAIN_TEST_KILL_AT").ok()?;
            let (name, nth) = v.split_once(':')?;
            let point = Point::parse(name)?;
            let nth = nth.parse::<u64>().ok().filter(|n| *n > 0)?;
            tracing::warn!(
                point = name,
                nth,
                "SENSORCHAIN_TEST_KILL_AT: this process kills itself there (a test hook)"
            );
            Some(Armed {
                point,
                nth,
                reached: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// Marks that the write path reached `point`: the armed point's `N`th time
/// sends this process SIGKILL (nothing returns from it).
pub fn reached(point: Point) {
    let Some(a) = armed() else {
        return;
    };
    if a.point == point && a.reached.fetch_add(1, Ordering::Relaxed) + 1 == a.nth {
        eprintln!("SENSORCHAIN_TEST_KILL_AT: SIGKILL at {}", point.name());
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
        // SIGKILL cannot be caught; should it not be delivered at once
        loop {
            std::thread::park();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_point_parses_from_its_name() {
        for p in Point::ALL {
            assert_eq!(Point::parse(p.name()), Some(p));
        }
        assert_eq!(Point::parse("nowhere"), None);
    }

    #[test]
    fn unarmed_points_do_nothing() {
        // this test process has no SENSORCHAIN_TEST_KILL_AT
        for p in Point::ALL {
            reached(p);
        }
    }
}
