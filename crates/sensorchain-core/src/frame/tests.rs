//! COBS vectors and stream properties.
//!
//! Vectors: the encoding examples of the Wikipedia article "Consistent
//! Overhead Byte Stuffing" (as also checked by charlesnicholson/nanocobs,
//! `tests/test_wikipedia.cc`) and Figure 3 of Cheshire and Baker, "Consistent
//! Overhead Byte Stuffing", IEEE/ACM ToN 1999 (nanocobs,
//! `tests/test_paper_figures.cc`), plus the paper's Figure 2 shape (679
//! non-zero bytes and a zero).

use super::*;
use proptest::prelude::*;
use std::string::ToString;
use std::vec;
use std::vec::Vec;

/// (message, frame including the delimiter).
fn vectors() -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut v = vec![
        // Wikipedia examples 1–6.
        (vec![0x00], vec![0x01, 0x01, 0x00]),
        (vec![0x00, 0x00], vec![0x01, 0x01, 0x01, 0x00]),
        (vec![0x00, 0x11, 0x00], vec![0x01, 0x02, 0x11, 0x01, 0x00]),
        (
            vec![0x11, 0x22, 0x00, 0x33],
            vec![0x03, 0x11, 0x22, 0x02, 0x33, 0x00],
        ),
        (
            vec![0x11, 0x22, 0x33, 0x44],
            vec![0x05, 0x11, 0x22, 0x33, 0x44, 0x00],
        ),
        (
            vec![0x11, 0x00, 0x00, 0x00],
            vec![0x02, 0x11, 0x01, 0x01, 0x01, 0x00],
        ),
        // The empty message.
        (vec![], vec![0x01, 0x00]),
        // Paper, Figure 3 (an IP header fragment).
        (
            vec![
                0x45, 0x00, 0x00, 0x2C, 0x4C, 0x79, 0x00, 0x00, 0x40, 0x06, 0x4F, 0x37,
            ],
            vec![
                0x02, 0x45, 0x01, 0x04, 0x2C, 0x4C, 0x79, 0x01, 0x05, 0x40, 0x06, 0x4F, 0x37, 0x00,
            ],
        ),
    ];
    // Example 7: 01..=FE (254 non-zero bytes) -> FF 01..=FE 00.
    let m: Vec<u8> = (0x01..=0xFE).collect();
    let mut f = vec![0xFF];
    f.extend(0x01..=0xFEu8);
    f.push(0x00);
    v.push((m, f));
    // Example 8: 00..=FE -> 01 FF 01..=FE 00.
    let m: Vec<u8> = (0x00..=0xFE).collect();
    let mut f = vec![0x01, 0xFF];
    f.extend(0x01..=0xFEu8);
    f.push(0x00);
    v.push((m, f));
    // Example 9: 01..=FF (255 non-zero bytes) -> FF 01..=FE 02 FF 00.
    let m: Vec<u8> = (0x01..=0xFF).collect();
    let mut f = vec![0xFF];
    f.extend(0x01..=0xFEu8);
    f.extend([0x02, 0xFF, 0x00]);
    v.push((m, f));
    // Example 10: 02..=FF 00 -> FF 02..=FF 01 01 00.
    let mut m: Vec<u8> = (0x02..=0xFF).collect();
    m.push(0x00);
    let mut f = vec![0xFF];
    f.extend(0x02..=0xFFu8);
    f.extend([0x01, 0x01, 0x00]);
    v.push((m, f));
    // Example 11: 03..=FF 00 01 -> FE 03..=FF 02 01 00.
    let mut m: Vec<u8> = (0x03..=0xFF).collect();
    m.extend([0x00, 0x01]);
    let mut f = vec![0xFE];
    f.extend(0x03..=0xFFu8);
    f.extend([0x02, 0x01, 0x00]);
    v.push((m, f));
    // Paper, Figure 2 shape: 679 x 01 then 00 -> FF [254] FF [254] AC [171] 01 00.
    let mut m = vec![0x01; 679];
    m.push(0x00);
    let mut f = vec![0xFF];
    f.extend([0x01; 254]);
    f.push(0xFF);
    f.extend([0x01; 254]);
    f.push(0xAC);
    f.extend([0x01; 171]);
    f.extend([0x01, 0x00]);
    v.push((m, f));
    v
}

#[test]
fn known_vectors_encode() {
    for (m, f) in vectors() {
        let mut buf = vec![0u8; max_encoded_len(m.len())];
        let n = cobs_encode(&m, &mut buf).unwrap();
        assert_eq!(&buf[..n], &f[..], "encode {m:02x?}");
        // Exactly enough room works; one byte less is BufferFull.
        let mut exact = vec![0u8; f.len()];
        assert_eq!(cobs_encode(&m, &mut exact), Ok(f.len()));
        let mut short = vec![0u8; f.len() - 1];
        assert_eq!(cobs_encode(&m, &mut short), Err(FrameError::BufferFull));
    }
}

#[test]
fn known_vectors_decode() {
    for (m, f) in vectors() {
        let mut out = vec![0u8; f.len()];
        assert_eq!(cobs_decode(&f, &mut out), Ok(m.len()));
        assert_eq!(&out[..m.len()], &m[..]);
        // Without the delimiter too.
        assert_eq!(cobs_decode(&f[..f.len() - 1], &mut out), Ok(m.len()));
        // Into an exact buffer; one byte less is BufferFull.
        let mut exact = vec![0u8; m.len()];
        assert_eq!(cobs_decode(&f, &mut exact), Ok(m.len()));
        if !m.is_empty() {
            let mut short = vec![0u8; m.len() - 1];
            assert_eq!(cobs_decode(&f, &mut short), Err(FrameError::BufferFull));
        }
        // In place.
        let mut inplace = f.clone();
        let n = cobs_decode_in_place(&mut inplace).unwrap();
        assert_eq!(&inplace[..n], &m[..]);
        // Through the accumulator.
        let mut acc = FrameAccumulator::<1024>::new();
        let mut input = &f[..];
        assert_eq!(acc.next_frame(&mut input), Some(Ok(&m[..])));
        assert!(input.is_empty());
    }
}

#[test]
fn max_encoded_len_is_tight() {
    assert_eq!(max_encoded_len(0), 2);
    assert_eq!(max_encoded_len(253), 255);
    assert_eq!(max_encoded_len(254), 257);
    let mut buf = [0u8; 600];
    for n in [1usize, 253, 254, 255, 507, 508, 509] {
        let m = vec![0x5a; n];
        let got = cobs_encode(&m, &mut buf).unwrap();
        assert!(got <= max_encoded_len(n), "{n}: {got}");
    }
    // 253 non-zero bytes reach the bound exactly (one code byte + delimiter).
    assert_eq!(cobs_encode(&[7; 253], &mut buf), Ok(max_encoded_len(253)));
}

#[test]
fn paper_form_with_trailing_empty_block_is_accepted() {
    // The paper's reference encoder appends `01` after a final 0xFF block.
    let mut f = vec![0xFF];
    f.extend(0x01..=0xFEu8);
    f.extend([0x01, 0x00]);
    let mut out = [0u8; 300];
    let n = cobs_decode(&f, &mut out).unwrap();
    assert_eq!(&out[..n], &(0x01..=0xFEu8).collect::<Vec<_>>()[..]);
}

#[test]
fn malformed_frames() {
    let mut out = [0u8; 16];
    for bad in [
        &[][..],
        &[0x00][..],
        &[0x03, 0x11][..],
        &[0x03, 0x11, 0x00][..],
        &[0x02, 0x11, 0x05, 0x01][..],
        &[0x03, 0x00, 0x11][..],
        &[0x02, 0x11, 0x00, 0x00][..],
        &[0xFF, 0x01][..],
    ] {
        assert_eq!(
            cobs_decode(bad, &mut out),
            Err(FrameError::Malformed),
            "{bad:02x?}"
        );
        let mut b = bad.to_vec();
        assert_eq!(
            cobs_decode_in_place(&mut b),
            Err(FrameError::Malformed),
            "{bad:02x?}"
        );
    }
    assert_eq!(FrameError::Malformed.to_string(), "malformed COBS frame");
}

#[test]
fn accumulator_skips_empty_frames_and_reports_errors() {
    let mut acc = FrameAccumulator::<4>::new();
    assert!(!acc.in_frame());
    let mut input: &[u8] = &[
        0, 0, 0, // empty frames
        0x03, 0x11, 0, // malformed (block cut short)
        0x06, 1, 2, 3, 4, 5, 0x02, 7, 0, // oversized; the 0x02 is not a new frame
        0x05, 1, 2, 3, 4, 0, // exactly N bytes
        0x01, 0, // the empty message
    ];
    assert_eq!(acc.next_frame(&mut input), Some(Err(FrameError::Malformed)));
    assert_eq!(acc.next_frame(&mut input), Some(Err(FrameError::Oversized)));
    assert!(acc.in_frame());
    assert_eq!(acc.next_frame(&mut input), Some(Ok(&[1u8, 2, 3, 4][..])));
    assert_eq!(acc.next_frame(&mut input), Some(Ok(&[][..])));
    assert_eq!(acc.next_frame(&mut input), None);
    assert!(!acc.in_frame());
}

#[test]
fn oversized_detected_on_an_implied_zero() {
    // 4 data bytes then a block boundary whose implied zero is byte 5.
    let mut acc = FrameAccumulator::<4>::new();
    let mut input: &[u8] = &[0x05, 1, 2, 3, 4, 0x02, 9, 0, 0x02, 8, 0];
    assert_eq!(acc.next_frame(&mut input), Some(Err(FrameError::Oversized)));
    assert_eq!(acc.next_frame(&mut input), Some(Ok(&[8u8][..])));
}

#[test]
fn resync_skips_to_the_next_delimiter() {
    let mut acc = FrameAccumulator::<8>::default();
    acc.resync();
    // Joined mid-frame: "02 33" would be a valid frame, but is skipped.
    let mut input: &[u8] = &[0x33, 0x02, 0x33, 0x00, 0x02, 0x44, 0x00];
    assert_eq!(acc.next_frame(&mut input), Some(Ok(&[0x44u8][..])));
    assert_eq!(FrameAccumulator::<8>::MAX_FRAME, 8);
    let _ = std::format!("{acc:?}");
}

#[test]
fn feed_reports_consumed_bytes() {
    let mut acc = FrameAccumulator::<8>::new();
    assert_eq!(acc.feed(&[]), (0, None));
    // Stops right after the delimiter: the last byte is left for the caller.
    assert_eq!(acc.feed(&[0x02, 0x01, 0x00, 0x02]).0, 3);
    assert_eq!(acc.feed(&[0x02]), (1, None));
    assert_eq!(acc.feed(&[0x05]), (1, None));
    assert_eq!(acc.feed(&[0x00]), (1, Some(Ok(&[0x05u8][..]))));
}

/// Splits `bytes` at the given cut points (taken modulo the length).
fn chunks<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.push(0);
    points.push(bytes.len());
    points.sort_unstable();
    points.windows(2).map(|w| &bytes[w[0]..w[1]]).collect()
}

/// Feeds all chunks, collecting every event as owned data.
fn run<const N: usize>(
    acc: &mut FrameAccumulator<N>,
    parts: &[&[u8]],
) -> Vec<Result<Vec<u8>, FrameError>> {
    let mut events = Vec::new();
    for part in parts {
        let mut input = *part;
        while let Some(ev) = acc.next_frame(&mut input) {
            events.push(ev.map(|f| f.to_vec()));
        }
        assert!(input.is_empty());
    }
    events
}

fn frame(m: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; max_encoded_len(m.len())];
    let n = cobs_encode(m, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

proptest! {
    #[test]
    fn encode_decode_round_trip(m in prop::collection::vec(any::<u8>(), 0..1200)) {
        let f = frame(&m);
        prop_assert!(f.len() <= max_encoded_len(m.len()));
        prop_assert_eq!(f.last(), Some(&0));
        prop_assert!(!f[..f.len() - 1].contains(&0));
        let mut out = vec![0u8; m.len()];
        prop_assert_eq!(cobs_decode(&f, &mut out), Ok(m.len()));
        prop_assert_eq!(&out, &m);
        let mut g = f.clone();
        let n = cobs_decode_in_place(&mut g).unwrap();
        prop_assert_eq!(&g[..n], &m[..]);
    }

    #[test]
    fn accumulator_round_trip_any_chunking(
        msgs in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..8),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
        extra_zeros in prop::collection::vec(0usize..3, 8),
    ) {
        let mut stream = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            stream.extend(frame(m));
            // Empty frames between messages are ignored.
            stream.extend(std::iter::repeat_n(0u8, extra_zeros[i % extra_zeros.len()]));
        }
        let mut acc = FrameAccumulator::<300>::new();
        let events = run(&mut acc, &chunks(&stream, &cuts));
        let want: Vec<Result<Vec<u8>, FrameError>> = msgs.into_iter().map(Ok).collect();
        prop_assert_eq!(events, want);
        prop_assert!(!acc.in_frame());
    }

    #[test]
    fn garbage_and_oversized_then_valid_frame_is_delivered(
        garbage in prop::collection::vec(any::<u8>(), 0..400),
        big in prop::collection::vec(any::<u8>(), 65..200),
        good in prop::collection::vec(any::<u8>(), 0..64),
        cuts in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        let mut stream = garbage.clone();
        stream.push(0); // whatever the garbage was, it ends here
        stream.extend(frame(&big));
        stream.extend(frame(&good));
        let mut acc = FrameAccumulator::<64>::new();
        let events = run(&mut acc, &chunks(&stream, &cuts));
        // The oversized frame is reported once, and the good frame comes last.
        prop_assert_eq!(events.last(), Some(&Ok(good.clone())));
        let n = events.len();
        prop_assert!(n >= 2);
        prop_assert_eq!(&events[n - 2], &Err(FrameError::Oversized));
    }

    #[test]
    fn never_panics_on_arbitrary_input(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        cuts in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        let mut out = [0u8; 64];
        let _ = cobs_decode(&bytes, &mut out);
        let mut big = vec![0u8; bytes.len()];
        if let Ok(n) = cobs_decode(&bytes, &mut big) {
            // Anything that decodes re-encodes to a frame that decodes the same.
            let f = frame(&big[..n]);
            let mut again = vec![0u8; n];
            prop_assert_eq!(cobs_decode(&f, &mut again), Ok(n));
            prop_assert_eq!(&again[..], &big[..n]);
        }
        let mut inplace = bytes.clone();
        let a = cobs_decode_in_place(&mut inplace);
        let b = cobs_decode(&bytes, &mut big);
        prop_assert_eq!(a.is_ok(), b.is_ok());
        let _ = cobs_encode(&bytes, &mut out);
        let mut small = FrameAccumulator::<8>::new();
        let _ = run(&mut small, &chunks(&bytes, &cuts));
        let mut zero = FrameAccumulator::<0>::new();
        let _ = run(&mut zero, &chunks(&bytes, &cuts));
    }

    #[test]
    fn accumulator_agrees_with_slice_decoder(
        bytes in prop::collection::vec(1u8..=255, 0..400),
        cuts in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        // One frame of arbitrary non-zero bytes: the accumulator and
        // cobs_decode give the same verdict and the same message.
        let mut stream = bytes.clone();
        stream.push(0);
        let mut acc = FrameAccumulator::<400>::new();
        let events = run(&mut acc, &chunks(&stream, &cuts));
        let mut out = vec![0u8; 400];
        match cobs_decode(&bytes, &mut out) {
            Ok(n) => prop_assert_eq!(events, vec![Ok(out[..n].to_vec())]),
            Err(e) if bytes.is_empty() => {
                prop_assert_eq!(e, FrameError::Malformed);
                prop_assert!(events.is_empty());
            }
            Err(e) => prop_assert_eq!(events, vec![Err(e)]),
        }
    }
}

/// The edge cases docs/PROTOCOL.md ("Framing edge cases") states, in exact
/// bytes, through the stream decoder the gateway's link codec uses.
#[test]
fn link_edge_cases_exact_bytes() {
    const LINK: usize = crate::link::LINK_MAX_FRAME;
    // a run of 254 non-zero bytes ending the message: FF, the run, 00 (no
    // trailing empty block); the paper's form with `01` decodes the same
    let run: Vec<u8> = vec![0x5a; 254];
    let mut minimal = vec![0xFF];
    minimal.extend(&run);
    minimal.push(0x00);
    let mut buf = vec![0u8; max_encoded_len(255)];
    let n = cobs_encode(&run, &mut buf).unwrap();
    assert_eq!(&buf[..n], &minimal[..]);
    let mut paper = minimal[..minimal.len() - 1].to_vec();
    paper.extend([0x01, 0x00]);
    // a zero after the run: FF, the run, 01, 01, 00
    let mut run_zero = run.clone();
    run_zero.push(0);
    let mut run_zero_frame = minimal[..minimal.len() - 1].to_vec();
    run_zero_frame.extend([0x01, 0x01, 0x00]);
    let n = cobs_encode(&run_zero, &mut buf).unwrap();
    assert_eq!(&buf[..n], &run_zero_frame[..]);
    let mut acc = FrameAccumulator::<LINK>::new();
    let mut wire = Vec::new();
    wire.extend([0x00, 0x00]); // empty frames: skipped, no event
    wire.extend(&minimal);
    wire.extend(&paper);
    wire.extend(&run_zero_frame);
    wire.extend([0x01, 0x00]); // the empty message: a frame of 0 bytes
    let mut input = &wire[..];
    assert_eq!(acc.next_frame(&mut input), Some(Ok(&run[..])));
    assert_eq!(acc.next_frame(&mut input), Some(Ok(&run[..])));
    assert_eq!(acc.next_frame(&mut input), Some(Ok(&run_zero[..])));
    assert_eq!(acc.next_frame(&mut input), Some(Ok(&[][..])));
    assert_eq!(acc.next_frame(&mut input), None);
    // exactly LINK_MAX_FRAME decoded bytes pass, one more is Oversized
    for (len, ok) in [(LINK, true), (LINK + 1, false)] {
        let m = vec![0x11u8; len];
        let mut f = vec![0u8; max_encoded_len(len)];
        let n = cobs_encode(&m, &mut f).unwrap();
        let mut input = &f[..n];
        let got = acc.next_frame(&mut input).map(|r| r.map(<[u8]>::len));
        assert_eq!(
            got,
            Some(if ok {
                Ok(len)
            } else {
                Err(FrameError::Oversized)
            })
        );
    }
}
