//! Reads of a damaged redb file that fail as errors, not panics.
//!
//! redb 4 trusts the pages of a file it opens: bytes changed outside redb
//! (a bad disk, an edited or truncated copy) can make its B-tree code panic
//! (`btree_cursor.rs: entered unreachable code`, index out of range, ...)
//! instead of returning `StorageError::Corrupted`. That is redb's own
//! limitation (its documentation says a plain open "may panic if it was
//! corrupted outside redb"); its `Database::check_integrity` verifies every
//! page's checksum, but only on a read-write handle and by reading the whole
//! file ([`Store::verify_file`](super::Store::verify_file) runs it when a
//! gateway starts). Every other store call runs inside [`guarded`], which
//! turns such a panic into [`StoreError::Corrupt`] naming the table read,
//! and keeps the panic's message off stderr (it names redb's source lines,
//! not the problem).

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

use super::StoreError;

thread_local! {
    /// How many [`guarded`] calls are running on this thread.
    static GUARDS: Cell<u32> = const { Cell::new(0) };
}

static QUIET_HOOK: Once = Once::new();

/// Installs (once per process) a panic hook that stays silent for panics
/// inside [`guarded`] on the panicking thread and hands every other panic
/// to the hook that was installed before.
fn install_quiet_hook() {
    QUIET_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if GUARDS.with(Cell::get) == 0 {
                previous(info);
            }
        }));
    });
}

struct Entered;

impl Entered {
    fn new() -> Entered {
        GUARDS.with(|g| g.set(g.get() + 1));
        Entered
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        GUARDS.with(|g| g.set(g.get().saturating_sub(1)));
    }
}

/// Runs `f` (store code calling redb); a panic inside becomes
/// [`StoreError::Corrupt`] naming `table` and `height`, and so does a
/// `Corrupt` error that names no table (redb's own `Corrupted`). The panic's own
/// text is logged at debug level only: it is redb's internals, never shown
/// to an API client.
pub(crate) fn guarded<T>(
    table: &'static str,
    height: Option<u64>,
    f: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    install_quiet_hook();
    let entered = Entered::new();
    let result = catch_unwind(AssertUnwindSafe(f));
    drop(entered);
    let result = result.map(|r| {
        // a damaged page redb reported itself: name what was being read
        r.map_err(|e| match e {
            StoreError::Corrupt {
                height: h,
                table: None,
                what,
            } => StoreError::Corrupt {
                height: h.or(height),
                table: Some(table),
                what,
            },
            other => other,
        })
    });
    result.unwrap_or_else(|payload| {
        let text = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::debug!(table, ?height, panic = %text, "redb panicked reading a damaged file");
        Err(StoreError::Corrupt {
            height,
            table: Some(table),
            what: "the database file is damaged (redb cannot read its pages)".into(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_a_corrupt_error_and_the_guard_unwinds() {
        let e =
            guarded::<()>("blocks", Some(7), || panic!("entered unreachable code")).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("height 7") && text.contains("blocks"),
            "{text}"
        );
        assert!(!text.contains("unreachable"), "{text}");
        assert_eq!(GUARDS.with(Cell::get), 0);
        assert_eq!(guarded("meta", None, || Ok(3)).unwrap(), 3);
        // nested guards keep counting
        let r = guarded("meta", None, || {
            guarded::<u8>("blocks", None, || panic!("x"))
        });
        assert!(matches!(r, Err(StoreError::Corrupt { .. })));
        assert_eq!(GUARDS.with(Cell::get), 0);
    }
}
