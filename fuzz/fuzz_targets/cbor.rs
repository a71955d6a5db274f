//! CBOR codec. Checks, for the typed (`serde_cbor::Value`) and the raw codec
//! alike: no panic, fragmentation invariance (frames, errors past non-fatal
//! ones, end of input), bounded buffering (declared lengths never make us
//! wait for more than the size limit). Then the typed and raw codecs agree
//! (each raw frame is a typed frame equal to serde_cbor's decoding of it,
//! or a non-fatal EBADMSG where serde_cbor rejects it), raw frames tile the
//! input, and every decoded value encodes and decodes back to itself.
//!
//! config: bits 0-2 max size, bits 3-5 max depth.
#![no_main]

use anyframe_codecs::{CborCodec, RawCborCodec};
use anyframe_fuzz::{Checks, Event, Input, assert_invariant};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use serde_cbor::Value;
use tokio_util::codec::{Decoder, Encoder};

const SIZES: [usize; 8] = [
    1,
    2,
    9,
    64,
    1000,
    4096,
    1 << 20,
    anyframe_codecs::DEFAULT_CBOR_MAX_SIZE,
];
const DEPTHS: [usize; 8] = [
    0,
    1,
    2,
    5,
    64,
    127,
    200,
    anyframe_codecs::DEFAULT_CBOR_MAX_DEPTH,
];

fuzz_target!(|raw: &[u8]| {
    let Some(input) = Input::parse(raw) else {
        return;
    };
    let max = SIZES[usize::from(input.config & 7)];
    let depth = DEPTHS[usize::from((input.config >> 3) & 7)];
    let checks = Checks {
        bound: Some(max),
        progress: true,
    };
    // serde_cbor::Value holds floats: compare through Debug, where NaN is NaN.
    let typed = assert_invariant(
        || CborCodec::<Value>::with_limits(max, depth),
        &input,
        checks,
    )
    .map(|v| format!("{v:?}"));
    let rawc = assert_invariant(|| RawCborCodec::with_limits(max, depth), &input, checks);

    // Event by event, a repeated malformed-input error counted once (the
    // typed and raw paths may take the whitespace before it in different
    // calls, so retries see it a different number of times).
    let (t_events, r_events) = (typed.squeezed(), rawc.squeezed());
    assert_eq!(t_events.len(), r_events.len(), "{typed:?}\n{rawc:?}");
    let mut tiled = Vec::new();
    for (t, r) in t_events.into_iter().zip(r_events) {
        match (t, r) {
            (Event::Frame(v), Event::Frame(item)) => {
                tiled.extend_from_slice(item);
                let parsed: Value = serde_cbor::from_slice(item).expect("raw frame decodes");
                assert_eq!(*v, format!("{parsed:?}"), "from {item:?}");
            }
            (Event::Error(e), Event::Frame(item)) => {
                tiled.extend_from_slice(item);
                assert!(
                    serde_cbor::from_slice::<Value>(item).is_err(),
                    "typed failed {e:?} on {item:?}"
                );
                assert!(!e.fatal);
            }
            (Event::Error(a), Event::Error(b)) => assert_eq!(a, b),
            (t, r) => panic!("typed {t:?} vs raw {r:?}"),
        }
    }
    // No error: the frames are the input, in order.
    if rawc.events.iter().all(|e| matches!(e, Event::Frame(_))) {
        assert_eq!(tiled, input.data[..tiled.len()]);
    }
    assert_eq!(
        std::mem::discriminant(&typed.end),
        std::mem::discriminant(&rawc.end)
    );

    // Round trip every value we decoded.
    let whole = anyframe_fuzz::run(
        CborCodec::<Value>::with_limits(max, depth),
        &[input.data],
        checks,
    );
    for v in whole.frames() {
        let mut codec = CborCodec::<Value>::new();
        let mut wire = BytesMut::new();
        codec.encode(v, &mut wire).expect("a decoded value encodes");
        let back = codec
            .decode_eof(&mut wire)
            .expect("re-decodes")
            .expect("a value");
        assert_eq!(format!("{v:?}"), format!("{back:?}"));
        assert!(wire.is_empty());
    }
});
