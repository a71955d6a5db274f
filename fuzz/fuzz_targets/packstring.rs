//! Packstring codec, every prefix format: fragmentation invariance, bounded
//! buffering (a declared length is checked before the body is awaited),
//! round trip.
//!
//! config: bits 0-2 format, bits 3-5 max length.
#![no_main]

use anyframe_codecs::{PackFormat, PackstringCodec};
use anyframe_fuzz::{Checks, Input, assert_invariant, assert_round_trip};
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Encoder;

const MAX_LENGTHS: [usize; 8] = [
    0,
    1,
    3,
    255,
    256,
    1000,
    65536,
    anyframe_codecs::DEFAULT_PACKSTRING_MAX_LENGTH,
];

fuzz_target!(|raw: &[u8]| {
    let Some(input) = Input::parse(raw) else {
        return;
    };
    let format = PackFormat::ALL[usize::from(input.config & 7)];
    let max = MAX_LENGTHS[usize::from((input.config >> 3) & 7)];
    // The longest prefix is a 10-byte BER integer (an 11th byte proves
    // overflow).
    let checks = Checks {
        bound: Some(11 + max),
        progress: true,
    };
    assert_invariant(
        || PackstringCodec::with_max_length(format, max),
        &input,
        checks,
    );
    let mut wire = BytesMut::new();
    let encoded = PackstringCodec::with_max_length(format, max).encode(input.data, &mut wire);
    let fits = input.data.len() <= max && input.data.len() as u64 <= format.max_value();
    assert_eq!(encoded.is_ok(), fits, "{encoded:?}");
    if encoded.is_ok() {
        assert_eq!(
            wire.len(),
            format.prefix_len(input.data.len() as u64) + input.data.len()
        );
        assert_round_trip(
            PackstringCodec::with_max_length(format, max),
            &wire,
            &Bytes::copy_from_slice(input.data),
        );
    }
});
