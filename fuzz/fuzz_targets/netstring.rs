//! Netstring codec: fragmentation invariance (past non-fatal errors too),
//! bounded buffering, round trip.
//!
//! config: bits 0-2 pick the max length.
#![no_main]

use anyframe_codecs::NetstringCodec;
use anyframe_fuzz::{Checks, Input, assert_invariant, assert_round_trip};
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Encoder;

const MAX_LENGTHS: [usize; 8] = [
    0,
    1,
    5,
    9,
    10,
    99,
    1000,
    anyframe_codecs::DEFAULT_NETSTRING_MAX_LENGTH,
];

fuzz_target!(|raw: &[u8]| {
    let Some(input) = Input::parse(raw) else {
        return;
    };
    let max = MAX_LENGTHS[usize::from(input.config & 7)];
    // Header: the digits of `max` and a colon; then the payload and a comma.
    let digits = max.to_string().len();
    let checks = Checks {
        bound: Some(digits + 1 + max + 1),
        progress: true,
    };
    assert_invariant(|| NetstringCodec::with_max_length(max), &input, checks);
    let mut wire = BytesMut::new();
    let encoded = NetstringCodec::with_max_length(max).encode(input.data, &mut wire);
    assert_eq!(encoded.is_ok(), input.data.len() <= max, "{encoded:?}");
    if encoded.is_ok() {
        assert_round_trip(
            NetstringCodec::with_max_length(max),
            &wire,
            &Bytes::copy_from_slice(input.data),
        );
    }
});
