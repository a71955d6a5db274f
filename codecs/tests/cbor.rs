//! CborCodec and RawCborCodec: framing, declared lengths, depth, end of
//! input, what an error consumes, the encoder, CBOR::XS-style byte-string
//! keys, and fragmentation invariance and round trips with random values.

mod support;

use anyframe_codecs::{
    CborCodec, DEFAULT_CBOR_MAX_DEPTH, DEFAULT_CBOR_MAX_SIZE, ErrorKind, RawCborCodec,
};
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use serde_cbor::Value;
use std::collections::{BTreeMap, HashMap};
use support::{Eof, assert_sized_matches_whole, assert_split_invariant, run_chunks};
use tokio_util::codec::{Decoder, Encoder};

fn value_codec() -> CborCodec<Value> {
    CborCodec::new()
}

fn clean() -> Option<Eof> {
    Some(Eof::Clean { leftover: vec![] })
}

#[test]
fn every_item_is_delivered_falsy_ones_too() {
    // 0, false, null, "", [], {}, -1, undefined
    let input = [0x00, 0xf4, 0xf6, 0x60, 0x80, 0xa0, 0x20, 0xf7];
    let out = assert_split_invariant(value_codec, &input);
    let want = vec![
        Value::Integer(0),
        Value::Bool(false),
        Value::Null,
        Value::Text(String::new()),
        Value::Array(vec![]),
        Value::Map(BTreeMap::new()),
        Value::Integer(-1),
        Value::Null,
    ];
    assert_eq!(out.frames, want);
    assert_eq!(out.eof, clean());
}

#[test]
fn indefinite_items_and_tags_frame_correctly() {
    // [_ 1, [2, 3], {_ "a": h'01' }], then 1(1363896240), then (_ "ab", "c")
    let input = [
        0x9f, 0x01, 0x82, 0x02, 0x03, 0xbf, 0x61, b'a', 0x41, 0x01, 0xff, 0xff, //
        0xc1, 0x1a, 0x51, 0x4b, 0x67, 0xb0, //
        0x7f, 0x62, b'a', b'b', 0x61, b'c', 0xff,
    ];
    let out = assert_split_invariant(RawCborCodec::new, &input);
    let lens: Vec<usize> = out.frames.iter().map(Bytes::len).collect();
    assert_eq!(lens, vec![12, 6, 7]);
    let out = assert_split_invariant(value_codec, &input);
    assert_eq!(
        out.frames[1],
        Value::Tag(1, Box::new(Value::Integer(1363896240))),
        "the tag is kept"
    );
    assert_eq!(out.frames[2], Value::Text("abc".into()));
}

#[test]
fn huge_declared_lengths_fail_at_the_head() {
    let heads: [&[u8]; 5] = [
        &[0x5b, 0x80, 0, 0, 0, 0, 0, 0, 0], // bytes, 2^63
        &[0x7b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], // text, 2^64 - 1
        &[0x9b, 0x80, 0, 0, 0, 0, 0, 0, 0], // array, 2^63 items
        &[0xbb, 0x80, 0, 0, 0, 0, 0, 0, 0], // map, 2^63 pairs
        &[0x5a, 0x01, 0x00, 0x00, 0x01],    // bytes, just over 16 MiB
    ];
    for head in heads {
        let mut codec = value_codec();
        let mut buf = BytesMut::from(head);
        let err = codec.decode(&mut buf).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadMessage, "{head:02x?}");
        assert!(err.is_limit() && !err.is_fatal());
        assert_eq!(err.limit(), Some(DEFAULT_CBOR_MAX_SIZE as u64));
        assert_eq!(err.offset(), Some(0));
        assert_eq!(buf.len(), head.len(), "nothing consumed");
        assert!(
            buf.capacity() < 1024,
            "nothing reserved for the declared length"
        );
        // However the head is split, the error comes with its last byte.
        let out = assert_split_invariant(value_codec, head);
        assert_eq!(
            out.error.map(|(i, k, _)| (i, k)),
            Some((0, ErrorKind::BadMessage))
        );
    }
    // Nested inside an array the same holds, at the inner head's offset.
    let mut buf = BytesMut::from(&[0x82, 0x01, 0x5b, 0x80, 0, 0, 0, 0, 0, 0, 0][..]);
    assert_eq!(
        RawCborCodec::new().decode(&mut buf).unwrap_err().offset(),
        Some(2)
    );
}

#[test]
fn a_declared_length_within_the_limit_waits_without_reserving() {
    let mut codec = CborCodec::<Value>::with_limits(1 << 20, 8);
    let mut buf = BytesMut::from(&[0x5a, 0x00, 0x0f, 0x00, 0x00][..]); // 960 KiB of bytes
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert!(buf.capacity() < 1024);
    let err = codec.decode_eof(&mut buf).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrokenPipe);
    assert_eq!(buf.len(), 5);
}

#[test]
fn a_million_nested_arrays_fail_cleanly() {
    for byte in [0x81u8, 0x9f, 0xc1, 0xa1] {
        let deep = vec![byte; 1_000_000];
        let mut buf = BytesMut::from(&deep[..]);
        let err = value_codec().decode(&mut buf).unwrap_err();
        assert!(err.is_limit(), "{byte:02x}: {err}");
        assert_eq!(err.offset(), Some(DEFAULT_CBOR_MAX_DEPTH as u64));
        let raw = RawCborCodec::with_limits(usize::MAX, usize::MAX);
        let out = run_chunks(raw, &deep.chunks(4096).collect::<Vec<_>>());
        assert!(out.frames.is_empty());
        assert_eq!(
            out.eof,
            Some(Eof::Error {
                kind: ErrorKind::BrokenPipe,
                leftover: 1_000_000
            })
        );
    }
}

#[test]
fn depth_limit_counts_arrays_maps_and_tags() {
    let make = || CborCodec::<Value>::with_limits(1024, 3);
    let out = assert_split_invariant(
        make,
        &[0x81, 0xa1, 0x00, 0xc1, 0x00, 0x81, 0x81, 0x81, 0x81, 0x00],
    );
    assert_eq!(out.frames.len(), 1);
    assert_eq!(
        out.error.map(|(i, k, _)| (i, k)),
        Some((1, ErrorKind::BadMessage))
    );
}

#[test]
fn size_limit_covers_heads_bodies_and_items() {
    let make = || RawCborCodec::with_limits(4, 128);
    // Exactly 4 bytes: fine. A fifth needed: refused as soon as it is known.
    let out = assert_split_invariant(make, &[0x83, 0x01, 0x02, 0x03, 0x43, 1, 2, 3]);
    assert_eq!(out.frames.len(), 2);
    let out = assert_split_invariant(make, &[0x84, 0x01, 0x02, 0x03, 0x04]);
    assert_eq!(
        out.error.map(|(i, k, _)| (i, k)),
        Some((0, ErrorKind::BadMessage))
    );
    let out = assert_split_invariant(make, &[0x9f, 0x01, 0x02, 0x03]);
    assert_eq!(
        out.error.map(|(i, k, _)| (i, k)),
        Some((0, ErrorKind::BadMessage))
    );
    let out = assert_split_invariant(make, &[0x1b, 0, 0, 0, 0, 0, 0, 0, 1]);
    assert_eq!(
        out.error.map(|(i, k, _)| (i, k)),
        Some((0, ErrorKind::BadMessage))
    );
}

#[test]
fn malformed_items_fail_at_the_offending_byte_and_consume_nothing() {
    let mut codec = value_codec();
    let mut buf = BytesMut::from(&[0x82, 0x01, 0xff][..]);
    let err = codec.decode(&mut buf).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadMessage);
    assert!(!err.is_fatal());
    assert_eq!(err.codec(), "cbor");
    assert_eq!(err.offset(), Some(2));
    assert_eq!(err.bytes(), [0xff]);
    assert_eq!(buf.len(), 3);
    let again = codec.decode(&mut buf).unwrap_err();
    assert_eq!(again.reason(), err.reason());
    for bad in [
        &[0x1c][..],
        &[0xff],
        &[0x5f, 0x61, 0x00],
        &[0xf8, 0x10],
        &[0x3f],
        &[0xbf, 0x00, 0xff],
    ] {
        let out = assert_split_invariant(value_codec, bad);
        assert_eq!(
            out.error.map(|(i, k, _)| (i, k)),
            Some((0, ErrorKind::BadMessage)),
            "{bad:02x?}"
        );
    }
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Point {
    x: i32,
    y: i32,
}

#[test]
fn an_item_the_type_rejects_is_consumed_and_decoding_goes_on() {
    let mut wire = BytesMut::new();
    CborCodec::<String>::new()
        .encode("not a point".to_string(), &mut wire)
        .unwrap();
    CborCodec::<Point>::new()
        .encode(Point { x: 1, y: 2 }, &mut wire)
        .unwrap();
    let mut codec = CborCodec::<Point>::new();
    let err = codec.decode(&mut wire).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadMessage);
    assert!(!err.is_limit());
    assert_eq!(codec.decode(&mut wire).unwrap(), Some(Point { x: 1, y: 2 }));
    // Invalid UTF-8 in a text string is well-formed: framed, then refused.
    let bad_text = [0x62, 0xc3, 0x28, 0x00];
    let out = assert_split_invariant(value_codec, &bad_text);
    assert_eq!(
        out.error.map(|(i, k, _)| (i, k)),
        Some((0, ErrorKind::BadMessage))
    );
    let out = assert_split_invariant(RawCborCodec::new, &bad_text);
    assert_eq!(out.frames.len(), 2, "raw mode does not look inside strings");
}

#[test]
fn partial_item_at_eof_is_broken_pipe_with_the_bytes_kept() {
    let out = assert_split_invariant(value_codec, &[0x01, 0x83, 0x01, 0x02]);
    assert_eq!(out.frames, vec![Value::Integer(1)]);
    assert_eq!(
        out.eof,
        Some(Eof::Error {
            kind: ErrorKind::BrokenPipe,
            leftover: 3
        })
    );
}

#[test]
fn encoder_writes_plain_cbor() {
    let mut codec = CborCodec::<Point>::new();
    let mut out = BytesMut::new();
    codec.encode(&Point { x: 1, y: -2 }, &mut out).unwrap();
    // {"x": 1, "y": -2}: a map with text keys, no self-describe tag.
    assert_eq!(&out[..], [0xa2, 0x61, b'x', 0x01, 0x61, b'y', 0x21]);
    let mut out = BytesMut::new();
    CborCodec::<f64>::new().encode(1.5, &mut out).unwrap();
    assert_eq!(&out[..], [0xf9, 0x3e, 0x00], "shortest exact float");
    let mut raw = RawCborCodec::new();
    raw.encode(Bytes::from_static(&[0xf5]), &mut out).unwrap();
    assert_eq!(out.last(), Some(&0xf5));
}

#[test]
fn encoding_error_writes_nothing() {
    struct Fails;
    impl Serialize for Fails {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::{Error, SerializeSeq};
            let mut seq = s.serialize_seq(Some(2))?;
            seq.serialize_element(&1u8)?;
            Err(S::Error::custom("refused halfway"))
        }
    }
    let mut out = BytesMut::from(&b"x"[..]);
    let err = CborCodec::<Fails>::new()
        .encode(Fails, &mut out)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(&out[..], b"x");
}

#[test]
fn cbor_xs_byte_string_keys_decode_into_structs_and_string_maps() {
    // CBOR::XS writes ASCII keys as byte strings: {h'78': 1, h'79': 2}.
    let wire = [0xa2, 0x41, b'x', 0x01, 0x41, b'y', 0x02];
    let out = assert_split_invariant(CborCodec::<Point>::new, &wire);
    assert_eq!(out.frames, vec![Point { x: 1, y: 2 }]);
    let out = assert_split_invariant(CborCodec::<HashMap<String, i32>>::new, &wire);
    assert_eq!(out.frames[0].get("y"), Some(&2));
}

/// CBOR::XS writes a Latin-1 Perl key (not flagged UTF-8) as a byte string
/// of its Latin-1 bytes: not UTF-8. It cannot become a `String` key, matches
/// no struct field, and comes through as bytes into `Value`.
#[test]
fn cbor_xs_latin1_byte_string_keys_are_not_utf8() {
    // {h'636166e9': 1}: "café" in Latin-1.
    let wire = [0xa1, 0x44, b'c', b'a', b'f', 0xe9, 0x01];
    let mut buf = BytesMut::from(&wire[..]);
    let err = CborCodec::<HashMap<String, i32>>::new()
        .decode(&mut buf)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadMessage);
    assert!(buf.is_empty(), "the item is consumed");
    #[derive(Debug, Deserialize)]
    struct Cafe {
        #[serde(rename = "café")]
        _cafe: Option<i32>,
    }
    let mut buf = BytesMut::from(&wire[..]);
    let got = CborCodec::<Cafe>::new().decode(&mut buf).unwrap().unwrap();
    assert_eq!(
        got._cafe, None,
        "the Latin-1 key is not the UTF-8 field name"
    );
    let mut buf = BytesMut::from(&wire[..]);
    let got = value_codec().decode(&mut buf).unwrap().unwrap();
    let key = Value::Bytes(b"caf\xe9".to_vec());
    assert_eq!(got, Value::Map([(key, Value::Integer(1))].into()));
}

#[test]
fn works_in_a_plain_framed_over_a_small_pipe() {
    use futures::{SinkExt, StreamExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let (a, b) = tokio::io::duplex(3);
        let mut tx = tokio_util::codec::FramedWrite::new(a, CborCodec::<Point>::new());
        let mut rx = tokio_util::codec::FramedRead::new(b, CborCodec::<Point>::new());
        let send = async {
            for i in 0..20 {
                tx.send(Point { x: i * 1000, y: -i }).await.unwrap();
            }
            drop(tx);
        };
        let recv = async {
            let mut got = Vec::new();
            while let Some(p) = rx.next().await {
                got.push(p.unwrap());
            }
            got
        };
        let ((), got) = tokio::join!(send, recv);
        assert_eq!(
            got,
            (0..20)
                .map(|i| Point { x: i * 1000, y: -i })
                .collect::<Vec<_>>()
        );
    });
}

/// Random CBOR values that survive serde_cbor's encoder and decoder.
fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Integer(n.into())),
        any::<u64>().prop_map(|n| Value::Integer(n.into())),
        any::<f64>()
            .prop_filter("NaN != NaN", |f| !f.is_nan())
            .prop_map(Value::Float),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(Value::Bytes),
        "\\PC{0,30}".prop_map(Value::Text),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(inner.clone(), inner, 0..5).prop_map(Value::Map),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn round_trip_of_random_values(values in prop::collection::vec(arb_value(), 1..8)) {
        let mut codec = value_codec();
        let mut wire = BytesMut::new();
        for v in &values {
            codec.encode(v, &mut wire).unwrap();
        }
        let out = run_chunks(value_codec(), &[&wire[..]]);
        prop_assert_eq!(out.frames, values);
        prop_assert_eq!(out.eof, clean());
    }

    #[test]
    fn random_chunkings_match_the_whole_input(
        values in prop::collection::vec(arb_value(), 1..6),
        sizes in prop::collection::vec(1usize..17, 1..8),
        cut in 0usize..64,
    ) {
        let mut wire = Vec::new();
        for v in &values {
            serde_cbor::to_writer(&mut wire, v).unwrap();
        }
        assert_sized_matches_whole(value_codec, &wire, &sizes);
        assert_sized_matches_whole(RawCborCodec::new, &wire, &sizes);
        let cut = cut.min(wire.len());
        assert_sized_matches_whole(value_codec, &wire[..wire.len() - cut], &sizes);
        if let Some(b) = wire.get_mut(cut) {
            *b ^= 0x5a;
        }
        assert_sized_matches_whole(value_codec, &wire, &sizes);
        assert_sized_matches_whole(|| RawCborCodec::with_limits(64, 4), &wire, &sizes);
    }
}

#[test]
fn serde_cbor_refuses_128_levels_itself_and_the_item_is_consumed() {
    let nest = |n: usize| {
        let mut v = vec![0x81; n - 1];
        v.push(0x80);
        v
    };
    let ok = assert_split_invariant(value_codec, &nest(127));
    assert_eq!(ok.frames.len(), 1);
    let mut item = nest(128);
    item.push(0x01);
    let mut buf = BytesMut::from(&item[..]);
    let err = value_codec().decode(&mut buf).unwrap_err();
    assert!(!err.is_limit(), "serde_cbor's own limit, not the scanner's");
    assert_eq!(
        value_codec().decode(&mut buf).unwrap(),
        Some(Value::Integer(1))
    );
    let raw = assert_split_invariant(RawCborCodec::new, &nest(128));
    assert_eq!(raw.frames.len(), 1);
}

/// Tags round-trip through `serde_cbor::Value`: decoded as `Value::Tag`
/// and written back byte for byte (tag 0 date string, tag 1 epoch time,
/// tag 24 embedded CBOR, and an unassigned tag), never dropped.
#[test]
fn tags_round_trip_through_value() {
    let cases: [(&[u8], Value); 4] = [
        (
            b"\xc0\x74\x32\x30\x31\x33\x2d\x30\x33\x2d\x32\x31\x54\x32\x30\x3a\x30\x34\x3a\x30\x30\x5a",
            Value::Tag(0, Box::new(Value::Text("2013-03-21T20:04:00Z".into()))),
        ),
        (
            b"\xc1\x1a\x51\x4b\x67\xb0",
            Value::Tag(1, Box::new(Value::Integer(1_363_896_240))),
        ),
        (
            b"\xd8\x18\x45\x64\x49\x45\x54\x46",
            Value::Tag(24, Box::new(Value::Bytes(b"dIETF".to_vec()))),
        ),
        (
            b"\xd9\x03\xe8\x82\x01\xc1\x00",
            Value::Tag(
                1000,
                Box::new(Value::Array(vec![
                    Value::Integer(1),
                    Value::Tag(1, Box::new(Value::Integer(0))),
                ])),
            ),
        ),
    ];
    for (wire, value) in cases {
        let out = assert_split_invariant(value_codec, wire);
        assert_eq!(out.frames, vec![value.clone()], "decoding {wire:02x?}");
        let mut written = BytesMut::new();
        value_codec().encode(&value, &mut written).unwrap();
        assert_eq!(&written[..], wire, "encoding {value:?}");
    }
}

/// A tagged item decoded into a type that cannot hold the tag is refused
/// (non-fatal, consumed), not silently stripped; `Tagged` takes either.
#[test]
fn a_tag_the_type_cannot_hold_is_an_error_not_dropped() {
    use serde_cbor::tags::Tagged;
    let wire = [0xc1, 0x1a, 0x51, 0x4b, 0x67, 0xb0, 0x07];
    let mut buf = BytesMut::from(&wire[..]);
    let err = CborCodec::<u64>::new().decode(&mut buf).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadMessage);
    assert_eq!(CborCodec::<u64>::new().decode(&mut buf).unwrap(), Some(7));
    let mut buf = BytesMut::from(&wire[..]);
    let mut codec = CborCodec::<Tagged<u64>>::new();
    let got = codec.decode(&mut buf).unwrap().unwrap();
    assert_eq!((got.tag, got.value), (Some(1), 1_363_896_240));
    let got = codec.decode(&mut buf).unwrap().unwrap();
    assert_eq!((got.tag, got.value), (None, 7));
    let mut written = BytesMut::new();
    codec
        .encode(Tagged::new(Some(1), 1_363_896_240), &mut written)
        .unwrap();
    assert_eq!(&written[..], &wire[..6]);
}

/// The documented exception: serde buffers an untagged enum's input in
/// its own generic form, which takes a tag for a newtype wrapper and drops
/// it, so a tag reaches a newtype inside one stripped, and `Tagged` inside
/// one sees no tag either. (If serde ever keeps tags there, the
/// `CborCodec` docs change.)
#[test]
fn an_untagged_enum_drops_a_tag() {
    use serde_cbor::tags::Tagged;
    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Wrapper(u64);
    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(untagged)]
    enum Plain {
        W(Wrapper),
    }
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Holding {
        T(Tagged<u64>),
    }
    let tagged = [0xc1, 0x01];
    let mut buf = BytesMut::from(&tagged[..]);
    assert!(CborCodec::<Wrapper>::new().decode(&mut buf).is_err());
    let mut buf = BytesMut::from(&tagged[..]);
    let got = CborCodec::<Plain>::new().decode(&mut buf).unwrap();
    assert_eq!(got, Some(Plain::W(Wrapper(1))), "the tag is dropped");
    let mut buf = BytesMut::from(&tagged[..]);
    let Ok(Some(Holding::T(t))) = CborCodec::<Holding>::new().decode(&mut buf) else {
        panic!("one item")
    };
    assert_eq!((t.tag, t.value), (None, 1), "Tagged inside sees no tag");
}

/// Integers beyond CBOR's range (-2^64 ..= 2^64-1) cannot be written
/// exactly: an error, nothing written.
#[test]
fn an_integer_cbor_cannot_hold_is_refused() {
    for n in [i128::from(u64::MAX) + 1, -i128::from(u64::MAX) - 2] {
        let mut wire = BytesMut::new();
        let err = value_codec()
            .encode(Value::Integer(n), &mut wire)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(wire.is_empty());
    }
    let mut wire = BytesMut::new();
    value_codec()
        .encode(Value::Integer(-i128::from(u64::MAX) - 1), &mut wire)
        .unwrap();
    assert_eq!(&wire[..], b"\x3b\xff\xff\xff\xff\xff\xff\xff\xff");
}

/// `undefined` (simple value 23, `f7`) has no serde form; it is written as
/// raw bytes through `RawCborCodec`, and read back as `Value::Null`
/// (serde_cbor's value type has no undefined).
#[test]
fn undefined_is_written_through_the_raw_codec() {
    let mut wire = BytesMut::new();
    RawCborCodec::new()
        .encode(RawCborCodec::UNDEFINED, &mut wire)
        .unwrap();
    assert_eq!(&wire[..], [0xf7]);
    assert_eq!(value_codec().decode(&mut wire).unwrap(), Some(Value::Null));
}

/// serde_cbor writes every NaN as the one canonical NaN (`f9 7e00`), which
/// drops a NaN's sign and payload: such a NaN is refused (EINVAL, nothing
/// written) instead of silently changed. The canonical NaN goes through.
#[test]
fn a_nan_that_would_lose_its_sign_or_payload_is_refused() {
    for bits in [
        0xfff8_0000_0000_0000u64,
        0x7ff8_0000_0000_0001,
        0x7ff0_0000_0000_0001,
    ] {
        let x = f64::from_bits(bits);
        let mut dst = BytesMut::from(&b"kept"[..]);
        let e = CborCodec::<f64>::new().encode(x, &mut dst).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bits:016x}");
        assert_eq!(dst, "kept", "nothing written for {bits:016x}");
        let e = value_codec()
            .encode(Value::Array(vec![Value::Float(x)]), &mut dst)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }
    let e = CborCodec::<f32>::new()
        .encode(f32::from_bits(0xffc0_0000), &mut BytesMut::new())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    for (x, y) in [(f64::NAN, f64::NAN), (f64::from(f32::NAN), f64::NAN)] {
        let mut c = CborCodec::<f64>::new();
        let mut wire = BytesMut::new();
        c.encode(x, &mut wire).unwrap();
        assert_eq!(c.decode(&mut wire).unwrap().unwrap().to_bits(), y.to_bits());
    }
    let mut c = CborCodec::<f32>::new();
    let mut wire = BytesMut::new();
    c.encode(f32::NAN, &mut wire).unwrap();
    assert_eq!(
        c.decode(&mut wire).unwrap().unwrap().to_bits(),
        f32::NAN.to_bits()
    );
}

/// A declared length is checked together with what the enclosing
/// containers still need: under a 10-byte limit, an array of two whose
/// first element announces 8 more bytes (`82 88`, `82 48`), a map whose key
/// does (`a1 48`), and an indefinite array or string whose first element or
/// chunk does (`9f 48`, `5f 48`) all need 11 bytes at least, and fail
/// (`EBADMSG`, a limit) once the two heads are read, before any byte of the
/// body is awaited. One byte more of limit, and they wait for the body.
#[test]
fn nested_declared_lengths_count_what_the_enclosing_items_still_need() {
    use anyframe_codecs::RawCborCodec;
    for item in [
        &[0x82u8, 0x88][..],
        &[0x82, 0x48],
        &[0xa1, 0x48],
        &[0x9f, 0x48],
        &[0x5f, 0x48],
    ] {
        for max in [10, 11] {
            let raw = RawCborCodec::with_limits(max, 128).decode(&mut BytesMut::from(item));
            let value = CborCodec::<Value>::with_limits(max, 128).decode(&mut BytesMut::from(item));
            for (what, r) in [
                ("raw", raw.map(|f| f.is_some())),
                ("value", value.map(|f| f.is_some())),
            ] {
                match (max, r) {
                    (10, Err(e)) => assert!(e.is_limit(), "{what} {item:02x?}: {e}"),
                    (11, Ok(false)) => {}
                    (max, other) => panic!("{what} {item:02x?} under {max}: {other:?}"),
                }
            }
        }
    }
}

/// The same verdict however the bytes arrive, for a short string that the
/// whole-buffer path takes in one step: an indefinite map whose first key
/// (`62 c3 a9`, 3 bytes) fits, but not with the value and break it still
/// owes, under a 5-byte limit.
#[test]
fn a_short_string_at_hand_is_checked_with_what_its_containers_owe() {
    use anyframe_codecs::RawCborCodec;
    let item = [0xbf, 0x62, 0xc3, 0xa9];
    let whole = RawCborCodec::with_limits(5, 1).decode(&mut BytesMut::from(&item[..]));
    assert!(whole.as_ref().is_err_and(|e| e.is_limit()), "{whole:?}");
    let mut codec = RawCborCodec::with_limits(5, 1);
    let mut buf = BytesMut::new();
    let mut bytewise = Ok(None);
    for &b in &item {
        buf.extend_from_slice(&[b]);
        bytewise = codec.decode(&mut buf);
        if bytewise.is_err() {
            break;
        }
    }
    assert!(
        bytewise.as_ref().is_err_and(|e| e.is_limit()),
        "{bytewise:?}"
    );
}
