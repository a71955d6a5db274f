//! JSON and CBOR framing (anyframe-codecs) against serde's own parsers.
//!
//! * `json-small` / `cbor-small`: 200,000 objects of about 100 bytes back to
//!   back in one buffer, through our decoder into `Value`, against the
//!   library's `StreamDeserializer` over the same bytes. Each repetition of
//!   either side reads its own copy of the input, made before the clock
//!   starts and freed inside it, so neither side finds the input in cache
//!   from an earlier repetition or skips the free.
//! * `json-8MiB-4KiB` / `cbor-8MiB-4KiB`: one 8 MiB array fed to our decoder
//!   in 4 KiB pieces, as a socket would deliver it, against one `from_slice`
//!   of the whole value. A retried `StreamDeserializer` is quadratic here
//!   (about 1000x); the target is at most 1.3x (ratio >= 0.77).
//!
//! Items are values for the small scenarios and bytes for the large ones.

use std::hint::black_box;

use anyframe_codecs::{CborCodec, JsonCodec};
use bytes::BytesMut;
use tokio_util::codec::Decoder;

use crate::harness::{Harness, Measured};

/// Values in the small-object scenarios.
const SMALL_COUNT: usize = 200_000;
/// Size of the large value.
const LARGE_SIZE: usize = 8 * 1024 * 1024;
/// Read size for the large value.
const PIECE: usize = 4 * 1024;

pub fn run(h: &Harness) {
    if h.wants("json-small") {
        json_small(h);
    }
    if h.wants("json-8MiB-4KiB") {
        json_large(h);
    }
    if h.wants("cbor-small") {
        cbor_small(h);
    }
    if h.wants("cbor-8MiB-4KiB") {
        cbor_large(h);
    }
}

/// One object of about 100 bytes, varied a little by `i`.
fn object(i: usize) -> serde_json::Value {
    serde_json::json!({
        "id": i,
        "name": format!("user-{i:06}"),
        "tags": ["alpha", if i.is_multiple_of(3) { "beta" } else { "gamma" }],
        "score": (i % 1000) as f64 / 8.0,
        "active": i.is_multiple_of(2),
        "note": null,
    })
}

/// The small values, one per line.
fn small_json() -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..SMALL_COUNT {
        serde_json::to_writer(&mut out, &object(i)).expect("serialize");
        out.push(b'\n');
    }
    out
}

/// One array of objects, just over `LARGE_SIZE` bytes when each object
/// takes `size_of` bytes.
fn large_value(size_of: impl Fn(&serde_json::Value) -> usize) -> serde_json::Value {
    let mut items = Vec::new();
    let mut size = 2;
    let mut i = 0;
    while size < LARGE_SIZE {
        let o = object(i);
        size += size_of(&o) + 1;
        items.push(o);
        i += 1;
    }
    serde_json::Value::Array(items)
}

/// Times `ours` and `anchor` in alternation, one repetition each in turn,
/// so both see the same machine (this bench shares its cores), and returns
/// the median of each.
fn paired<A, B>(
    h: &Harness,
    items: u64,
    mut ours: impl FnMut() -> A,
    mut anchor: impl FnMut() -> B,
) -> (Measured, Measured) {
    let mut o = Vec::new();
    let mut a = Vec::new();
    for _ in 0..h.reps() {
        o.push(h.time_n(1, items, &mut ours).median);
        a.push(h.time_n(1, items, &mut anchor).median);
    }
    (
        Measured::median_of(&o, items),
        Measured::median_of(&a, items),
    )
}

/// Fresh copies of `bytes` for each repetition, made before timing starts.
fn copies(h: &Harness, bytes: &[u8]) -> Vec<BytesMut> {
    (0..h.reps()).map(|_| BytesMut::from(bytes)).collect()
}

/// Runs `codec` over `buf` in one piece, returning how many values came out.
fn drain<D: Decoder>(mut codec: D, buf: &mut BytesMut) -> usize
where
    D::Error: std::fmt::Debug,
{
    let mut n = 0;
    while let Some(v) = codec.decode(buf).expect("decode") {
        black_box(v);
        n += 1;
    }
    while let Some(v) = codec.decode_eof(buf).expect("decode_eof") {
        black_box(v);
        n += 1;
    }
    n
}

/// Feeds `bytes` to `codec` in `PIECE`-sized reads.
fn feed<D: Decoder>(mut codec: D, bytes: &[u8]) -> usize
where
    D::Error: std::fmt::Debug,
{
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut n = 0;
    for piece in bytes.chunks(PIECE) {
        buf.extend_from_slice(piece);
        while let Some(v) = codec.decode(&mut buf).expect("decode") {
            black_box(v);
            n += 1;
        }
    }
    while let Some(v) = codec.decode_eof(&mut buf).expect("decode_eof") {
        black_box(v);
        n += 1;
    }
    n
}

fn json_small(h: &Harness) {
    let bytes = small_json();
    let mut bufs = copies(h, &bytes);
    let mut anchor_bufs = copies(h, &bytes);
    let (ours, anchor) = paired(
        h,
        SMALL_COUNT as u64,
        || {
            let mut buf = bufs.pop().unwrap_or_else(|| BytesMut::from(&bytes[..]));
            let n = drain(JsonCodec::<serde_json::Value>::new(), &mut buf);
            assert_eq!(n, SMALL_COUNT);
        },
        || {
            let input = anchor_bufs
                .pop()
                .unwrap_or_else(|| BytesMut::from(&bytes[..]));
            let stream =
                serde_json::Deserializer::from_slice(&input).into_iter::<serde_json::Value>();
            let n = stream
                .inspect(|v| assert!(v.is_ok()))
                .map(black_box)
                .count();
            assert_eq!(n, SMALL_COUNT);
        },
    );
    h.report("json-small", ours, anchor);
}

fn json_large(h: &Harness) {
    let bytes = serde_json::to_vec(&large_value(|o| {
        serde_json::to_vec(o).map_or(0, |v| v.len())
    }))
    .expect("serialize");
    let len = bytes.len() as u64;
    let (ours, anchor) = paired(
        h,
        len,
        || {
            assert_eq!(feed(JsonCodec::<serde_json::Value>::new(), &bytes), 1);
        },
        || {
            black_box(serde_json::from_slice::<serde_json::Value>(&bytes).expect("parse"));
        },
    );
    h.report("json-8MiB-4KiB", ours, anchor);
}

fn cbor_small(h: &Harness) {
    let mut bytes = Vec::new();
    for i in 0..SMALL_COUNT {
        serde_cbor::to_writer(&mut bytes, &object(i)).expect("serialize");
    }
    let mut bufs = copies(h, &bytes);
    let mut anchor_bufs = copies(h, &bytes);
    let (ours, anchor) = paired(
        h,
        SMALL_COUNT as u64,
        || {
            let mut buf = bufs.pop().unwrap_or_else(|| BytesMut::from(&bytes[..]));
            let n = drain(CborCodec::<serde_cbor::Value>::new(), &mut buf);
            assert_eq!(n, SMALL_COUNT);
        },
        || {
            let input = anchor_bufs
                .pop()
                .unwrap_or_else(|| BytesMut::from(&bytes[..]));
            let stream =
                serde_cbor::Deserializer::from_slice(&input).into_iter::<serde_cbor::Value>();
            let n = stream
                .inspect(|v| assert!(v.is_ok()))
                .map(black_box)
                .count();
            assert_eq!(n, SMALL_COUNT);
        },
    );
    h.report("cbor-small", ours, anchor);
}

fn cbor_large(h: &Harness) {
    let bytes = serde_cbor::to_vec(&large_value(|o| {
        serde_cbor::to_vec(o).map_or(0, |v| v.len())
    }))
    .expect("serialize");
    let len = bytes.len() as u64;
    let (ours, anchor) = paired(
        h,
        len,
        || {
            assert_eq!(feed(CborCodec::<serde_cbor::Value>::new(), &bytes), 1);
        },
        || {
            black_box(serde_cbor::from_slice::<serde_cbor::Value>(&bytes).expect("parse"));
        },
    );
    h.report("cbor-8MiB-4KiB", ours, anchor);
}
