//! WorldState::from_snapshot is total; an accepted snapshot re-snapshots to
//! the same bytes and the same commitment.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sensorchain_core::state::WorldState;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = WorldState::from_snapshot(data) {
        let again = s.snapshot();
        assert_eq!(again, data);
        let t = WorldState::from_snapshot(&again).expect("re-decode");
        assert_eq!(t.commitment(), s.commitment());
    }
});
