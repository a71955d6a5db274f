//! Chunk codec: fragmentation invariance, bounded buffering, round trip.
//!
//! config: the chunk size is `config + 1` (1..=256).
#![no_main]

use anyframe_codecs::ChunkCodec;
use anyframe_fuzz::{Checks, Input, assert_invariant, assert_round_trip};
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Encoder;

fuzz_target!(|raw: &[u8]| {
    let Some(input) = Input::parse(raw) else {
        return;
    };
    let n = usize::from(input.config) + 1;
    let checks = Checks {
        bound: Some(n),
        progress: true,
    };
    let out = assert_invariant(|| ChunkCodec::for_stream(n).unwrap(), &input, checks);
    // Every frame is exactly n bytes, and they tile the input in order.
    let mut joined = Vec::new();
    for f in out.frames() {
        assert_eq!(f.len(), n);
        joined.extend_from_slice(f);
    }
    assert_eq!(joined, input.data[..joined.len()]);
    // The one-shot form of n = 0 completes at once on any buffer.
    let mut buf = BytesMut::from(input.data);
    let zero = tokio_util::codec::Decoder::decode(&mut ChunkCodec::new(0), &mut buf).unwrap();
    assert_eq!(zero.as_deref(), Some(&b""[..]));
    assert_eq!(buf.len(), input.data.len());
    // Round trip of the first n bytes, when there are that many.
    if input.data.len() >= n {
        let mut wire = BytesMut::new();
        ChunkCodec::for_stream(n)
            .unwrap()
            .encode(&input.data[..n], &mut wire)
            .unwrap();
        assert_round_trip(
            ChunkCodec::for_stream(n).unwrap(),
            &wire,
            &Bytes::copy_from_slice(&input.data[..n]),
        );
    }
});
