//! JSON codec. Checks, for the typed (`serde_json::Value`) and the raw
//! codec alike: no panic, fragmentation invariance (frames, errors past
//! non-fatal ones, end of input), bounded buffering. Then:
//!
//! * the typed and raw codecs agree: each raw frame is a typed frame equal
//!   to serde_json's parse of it, or a non-fatal EBADMSG where serde_json
//!   rejects it (this pits the parse-first fast path against the scanner);
//! * with the default options, a single text is accepted exactly when
//!   serde_json accepts it;
//! * every decoded value encodes and decodes back to itself.
//!
//! config: bits 0-2 max size, bits 3-5 max depth, bit 6 objects only,
//! bit 7 NDJSON writer.
#![no_main]

use anyframe_codecs::{JsonCodec, JsonCodecBuilder};
use anyframe_fuzz::{Checks, End, Event, Input, assert_invariant};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tokio_util::codec::{Decoder, Encoder};

const SIZES: [usize; 8] = [
    1,
    2,
    8,
    64,
    1000,
    4096,
    1 << 20,
    anyframe_codecs::DEFAULT_JSON_MAX_SIZE,
];
const DEPTHS: [usize; 8] = [
    0,
    1,
    2,
    5,
    64,
    127,
    128,
    anyframe_codecs::DEFAULT_JSON_MAX_DEPTH,
];

fn builder(config: u8) -> JsonCodecBuilder<Value> {
    let mut b = JsonCodec::<Value>::builder();
    b.max_size(SIZES[usize::from(config & 7)])
        .max_depth(DEPTHS[usize::from((config >> 3) & 7)])
        .objects_only(config & 0x40 != 0)
        .separate_every_text(config & 0x80 != 0);
    b
}

/// Equality that allows the last-digit float difference of serde_json's
/// default (not `float_roundtrip`) number parser.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => x == y || ((x - y) / x).abs() < 1e-15,
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((ka, va), (kb, vb))| ka == kb && same(va, vb))
        }
        _ => a == b,
    }
}

fuzz_target!(|raw: &[u8]| {
    let Some(input) = Input::parse(raw) else {
        return;
    };
    let b = builder(input.config);
    let max = SIZES[usize::from(input.config & 7)];
    // Waiting, the decoder holds a run of whitespace and a partial text,
    // each at most `max`; in NDJSON mode also the whitespace after a text
    // that waits for its newline.
    let held = if input.config & 0x80 != 0 { 3 } else { 2 };
    let checks = Checks {
        bound: Some(max.saturating_mul(held)),
        progress: true,
    };
    let typed = assert_invariant(|| b.build(), &input, checks);
    let rawc = assert_invariant(|| b.build_raw(), &input, checks);

    // Typed and raw agree event by event.
    // Event by event, a repeated malformed-input error counted once (the
    // typed and raw paths may take the whitespace before it in different
    // calls, so retries see it a different number of times).
    let (t_events, r_events) = (typed.squeezed(), rawc.squeezed());
    assert_eq!(t_events.len(), r_events.len(), "{typed:?}\n{rawc:?}");
    for (t, r) in t_events.into_iter().zip(r_events) {
        match (t, r) {
            (Event::Frame(v), Event::Frame(text)) => {
                let parsed: Value = serde_json::from_slice(text).expect("raw frame parses");
                assert!(same(v, &parsed), "{v:?} != {parsed:?} from {text:?}");
            }
            (Event::Error(e), Event::Frame(text)) => {
                assert!(
                    serde_json::from_slice::<Value>(text).is_err(),
                    "typed failed {e:?} on {text:?}"
                );
                assert!(!e.fatal);
            }
            (Event::Error(a), Event::Error(b)) => assert_eq!(a, b),
            (t, r) => panic!("typed {t:?} vs raw {r:?}"),
        }
    }
    let typed_end_ok = matches!(typed.end, End::Clean(ref rest) if rest.is_empty());
    assert_eq!(
        std::mem::discriminant(&typed.end),
        std::mem::discriminant(&rawc.end)
    );

    // Default options: one text is accepted exactly when serde_json says so.
    if input.config & 0x7f == 0x3f && input.data.len() < 1 << 20 {
        let single = serde_json::from_slice::<Value>(input.data);
        let ours_single =
            typed.events.len() == 1 && matches!(typed.events[0], Event::Frame(_)) && typed_end_ok;
        if let Ok(v) = &single
            && depth(v) < 128
        {
            assert!(ours_single, "serde_json accepts, we gave {typed:?}");
        }
        if ours_single && let Event::Frame(v) = &typed.events[0] {
            assert!(same(single.as_ref().expect("we accept, serde_json not"), v));
        }
    }

    // Round trip every value we decoded.
    for v in typed.frames() {
        // Default limits: a re-encoded number may be longer than the input.
        let mut codec = JsonCodec::<Value>::builder()
            .separate_every_text(input.config & 0x80 != 0)
            .build();
        let mut wire = BytesMut::new();
        codec.encode(v, &mut wire).expect("a decoded value encodes");
        let back = codec
            .decode_eof(&mut wire)
            .expect("re-decodes")
            .expect("a value");
        assert!(same(v, &back), "{v:?} -> {back:?}");
        assert!(codec.decode_eof(&mut wire).unwrap().is_none());
    }
});

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}
