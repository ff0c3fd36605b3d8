//! Session frames: round trips, tampering, the replay window, the counter
//! limit, buffers.
use proptest::prelude::*;
use sensorchain_core::session::*;

fn pair() -> (Session, Session) {
    let a = Session::from_keys([1; 32], [2; 32]);
    let b = Session::from_keys([2; 32], [1; 32]);
    (a, b)
}

fn frame(s: &mut Session, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; payload.len() + FRAME_OVERHEAD];
    s.seal(FRAME_DATA, payload, &mut buf).unwrap().to_vec()
}

#[test]
fn frames_round_trip_in_place() {
    let (mut a, mut b) = pair();
    for i in 0..10u8 {
        let payload = vec![i; i as usize];
        let mut f = frame(&mut a, &payload);
        assert_eq!(f.len(), payload.len() + FRAME_OVERHEAD);
        assert_eq!(f[0], FRAME_DATA);
        assert_eq!(&f[1..7], &header(FRAME_DATA, i as u64)[1..]);
        let o = b.open_in_place(&mut f).unwrap();
        assert_eq!((o.kind, o.counter), (FRAME_DATA, i as u64));
        assert_eq!(o.payload, &payload[..]);
    }
    // in place, caller-written payload
    let mut buf = [0u8; 64];
    buf[HEADER_LEN..HEADER_LEN + 5].copy_from_slice(b"hello");
    let n = b.seal_in_place(FRAME_CLOSE, &mut buf, 5).unwrap();
    let o = a.open_in_place(&mut buf[..n]).unwrap();
    assert_eq!((o.kind, &o.payload[..]), (FRAME_CLOSE, &b"hello"[..]));
}

#[test]
fn nonce_layout() {
    assert_eq!(nonce(0x0102), [0, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        header(7, 0x0000_0a0b_0c0d_0e0f),
        [7, 0x0f, 0x0e, 0x0d, 0x0c, 0x0b, 0x0a]
    );
}

#[test]
fn tampered_frames_are_rejected_and_do_not_move_the_window() {
    let (mut a, mut b) = pair();
    let f = frame(&mut a, b"blood pressure 120/80");
    for i in 0..f.len() {
        for bit in 0..8 {
            let mut t = f.clone();
            t[i] ^= 1 << bit;
            assert!(b.open_in_place(&mut t).is_err(), "byte {i} bit {bit}");
        }
    }
    // the genuine frame still opens afterwards
    let mut g = f.clone();
    assert!(b.open_in_place(&mut g).is_ok());
    // truncated frames
    for n in 0..FRAME_OVERHEAD {
        assert_eq!(
            b.open_in_place(&mut f.clone()[..n]).unwrap_err(),
            SessionError::Malformed
        );
    }
    // a frame of the wrong direction (own frame) does not open
    let mut own = frame(&mut a, b"x");
    assert_eq!(
        a.open_in_place(&mut own).unwrap_err(),
        SessionError::Decrypt
    );
}

#[test]
fn replay_window() {
    let (mut a, mut b) = pair();
    let frames: Vec<Vec<u8>> = (0..200).map(|_| frame(&mut a, b"r")).collect();
    // frame `i` offered to `b`: the error, if it is refused
    let mut open = |i: usize| b.open_in_place(&mut frames[i].clone()).err();
    // in order
    assert_eq!(open(0), None);
    assert_eq!(open(0), Some(SessionError::Replayed));
    // out of order within the window
    assert_eq!(open(10), None);
    assert_eq!(open(5), None);
    assert_eq!(open(5), Some(SessionError::Replayed));
    assert_eq!(open(3), None);
    // jump ahead: 100; 100-63 = 37 is the oldest still acceptable
    assert_eq!(open(100), None);
    assert_eq!(open(36), Some(SessionError::Replayed));
    assert_eq!(open(37), None);
    assert_eq!(open(37), Some(SessionError::Replayed));
    assert_eq!(open(10), Some(SessionError::Replayed));
    // a jump beyond the window clears it
    assert_eq!(open(199), None);
    assert_eq!(open(136), None);
    assert_eq!(open(135), Some(SessionError::Replayed));
    assert_eq!(REPLAY_WINDOW, 64);
}

#[test]
fn counter_limit_asks_for_a_rekey() {
    let (mut a, mut b) = pair();
    a.set_send_limit(3);
    assert_eq!(a.frames_left(), 3);
    for _ in 0..3 {
        let mut f = frame(&mut a, b"ok");
        b.open_in_place(&mut f).unwrap();
    }
    assert_eq!(a.frames_left(), 0);
    let mut buf = [0u8; 64];
    assert_eq!(
        a.seal(FRAME_DATA, b"no", &mut buf).unwrap_err(),
        SessionError::Exhausted
    );
    a.set_send_limit(u64::MAX);
    assert_eq!(a.frames_left(), MAX_FRAMES - 3);
    assert_eq!(MAX_FRAMES, (1 << 48) - 1);
}

#[test]
fn small_buffers_are_errors() {
    let (mut a, _) = pair();
    let mut buf = [0u8; FRAME_OVERHEAD + 3];
    assert_eq!(
        a.seal(FRAME_DATA, b"four", &mut buf).unwrap_err(),
        SessionError::BufferTooSmall
    );
    assert_eq!(
        a.seal_in_place(FRAME_DATA, &mut buf, 4).unwrap_err(),
        SessionError::BufferTooSmall
    );
    assert_eq!(
        a.seal_in_place(FRAME_DATA, &mut buf, usize::MAX)
            .unwrap_err(),
        SessionError::BufferTooSmall
    );
    assert_eq!(a.next_send_counter(), 0, "failed seals consume no counter");
    assert!(a.seal(FRAME_DATA, b"thr", &mut buf).is_ok());
}

proptest! {
    #[test]
    fn arbitrary_frames_never_panic_or_open(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
        let (_, mut b) = pair();
        let mut f = bytes;
        prop_assert!(b.open_in_place(&mut f).is_err());
    }

    #[test]
    fn any_payload_round_trips(payload in proptest::collection::vec(any::<u8>(), 0..200), kind in any::<u8>()) {
        let (mut a, mut b) = pair();
        let mut buf = vec![0u8; payload.len() + FRAME_OVERHEAD];
        let n = a.seal(kind, &payload, &mut buf).unwrap().len();
        let o = b.open_in_place(&mut buf[..n]).unwrap();
        prop_assert_eq!(o.kind, kind);
        prop_assert_eq!(&o.payload[..], &payload[..]);
    }
}

/// State sizes (no pointers inside, so the same on a 32-bit MCU): what a
/// sensor keeps in RAM for a handshake and a session.
#[test]
fn state_sizes_are_small() {
    use sensorchain_core::handshake::{Initiator, Responder};
    let (i, r, s) = (
        core::mem::size_of::<Initiator>(),
        core::mem::size_of::<Responder>(),
        core::mem::size_of::<Session>(),
    );
    println!("Initiator {i} B, Responder {r} B, Session {s} B");
    assert!(i <= 160 && s <= 112 && r <= 320, "{i} {r} {s}");
}
