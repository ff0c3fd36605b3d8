//! The COBS FrameAccumulator fed arbitrary bytes in arbitrary chunks: never
//! panics, never yields a frame longer than its capacity, and yields the same
//! frames however the stream is chunked. Every yielded frame round-trips
//! through cobs_encode / cobs_decode.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sensorchain_core::frame::{FrameAccumulator, cobs_decode, cobs_encode, max_encoded_len};

const N: usize = 64;

fn frames(data: &[u8], chunk: &[u8]) -> Vec<Result<Vec<u8>, ()>> {
    let mut acc = FrameAccumulator::<N>::new();
    let mut out = Vec::new();
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let n = (chunk.get(i).copied().unwrap_or(7) as usize % 17 + 1).min(rest.len());
        i += 1;
        let (mut piece, tail) = rest.split_at(n);
        rest = tail;
        while let Some(r) = acc.next_frame(&mut piece) {
            match r {
                Ok(f) => {
                    assert!(f.len() <= N);
                    out.push(Ok(f.to_vec()));
                }
                Err(_) => out.push(Err(())),
            }
        }
    }
    out
}

fuzz_target!(|input: (&[u8], &[u8])| {
    let (data, chunks) = input;
    let a = frames(data, chunks);
    let b = frames(data, &[255]);
    assert_eq!(a, b, "chunking changed the frames");
    for f in a.iter().flatten() {
        let mut enc = vec![0u8; max_encoded_len(f.len())];
        let n = cobs_encode(f, &mut enc).expect("encode");
        // the encoding ends with the one delimiter and holds no other zero
        assert_eq!(enc[n - 1], 0);
        assert!(!enc[..n - 1].contains(&0));
        let mut acc = FrameAccumulator::<N>::new();
        let mut input = &enc[..n];
        let got = acc.next_frame(&mut input).expect("a frame").expect("valid");
        assert_eq!(got, &f[..]);
        assert!(input.is_empty());
    }
    // one-shot decoding of arbitrary input is total
    let mut dst = [0u8; 256];
    let _ = cobs_decode(data, &mut dst);
});
