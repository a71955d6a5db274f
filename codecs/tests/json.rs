//! JsonCodec and RawJsonCodec: framing, every value delivered, top-level
//! numbers, end of input, limits and attacks, what an error consumes, the
//! encoder, and fragmentation invariance and round trips with random values.

mod support;

use anyframe_codecs::{
    DEFAULT_JSON_MAX_DEPTH, DEFAULT_JSON_MAX_SIZE, ErrorKind, JsonCodec, JsonSeparator,
    RawJsonCodec,
};
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use support::{Eof, assert_sized_matches_whole, assert_split_invariant, run_chunks};
use tokio_util::codec::{Decoder, Encoder};

fn value_codec() -> JsonCodec<Value> {
    JsonCodec::new()
}

fn clean() -> Option<Eof> {
    Some(Eof::Clean { leftover: vec![] })
}

fn epipe(leftover: usize) -> Option<Eof> {
    Some(Eof::Error {
        kind: ErrorKind::BrokenPipe,
        leftover,
    })
}

#[test]
fn every_value_is_delivered_falsy_ones_too() {
    let input = b"0 false null \"\" \"0\" 0.0 [] {} [0] true\n";
    let out = assert_split_invariant(value_codec, input);
    let want = vec![
        json!(0),
        json!(false),
        json!(null),
        json!(""),
        json!("0"),
        json!(0.0),
        json!([]),
        json!({}),
        json!([0]),
        json!(true),
    ];
    assert_eq!(out.frames, want);
    assert_eq!(out.error, None);
    assert_eq!(out.eof, clean());
}

#[test]
fn texts_back_to_back_without_separators() {
    let input = r#"[1,"a\nb"]{"k":"☺"}"scalar"null[]"#.as_bytes();
    let out = assert_split_invariant(value_codec, input);
    let want = vec![
        json!([1, "a\nb"]),
        json!({"k": "☺"}),
        json!("scalar"),
        json!(null),
        json!([]),
    ];
    assert_eq!(out.frames, want);
    assert_eq!(out.eof, clean());
}

#[test]
fn four_then_two_is_forty_two() {
    let out = run_chunks(value_codec(), &[b"4", b"2"]);
    assert_eq!(out.frames, vec![json!(42)]);
    assert_eq!(out.eof, clean());
    // With a delimiter the number ends there, however it is split.
    let out = assert_split_invariant(value_codec, b"4 2\n-1.5e3,");
    assert_eq!(out.frames, vec![json!(4), json!(2), json!(-1500.0)]);
    assert_eq!(
        out.error.map(|(at, kind, _)| (at, kind)),
        Some((3, ErrorKind::BadMessage))
    );
}

#[test]
fn a_number_at_eof_is_complete_a_cut_one_is_not() {
    let out = assert_split_invariant(value_codec, b"  12.5e1");
    assert_eq!(out.frames, vec![json!(125.0)]);
    assert_eq!(out.eof, clean());
    let out = assert_split_invariant(value_codec, b"12.");
    assert_eq!(out.frames, Vec::<Value>::new());
    assert_eq!(out.eof, epipe(3));
    let out = assert_split_invariant(value_codec, b"-");
    assert_eq!(out.eof, epipe(1));
}

// The fast path parses a window sized from the last text (twice its
// length, at least 256 bytes). These texts outgrow that window; each must
// come out whole, however the input is split.

#[test]
fn a_long_number_after_a_short_text_is_not_cut_at_the_window() {
    let mut input = b"[1] 0.".to_vec();
    input.extend(std::iter::repeat_n(b'1', 600));
    input.extend_from_slice(b" [2]");
    let out = assert_split_invariant(value_codec, &input);
    assert_eq!(
        out.frames,
        vec![json!([1]), json!(0.111_111_111_111_111_1), json!([2])]
    );
    assert_eq!(out.eof, clean());
}

#[test]
fn texts_that_outgrow_the_last_one_come_out_whole() {
    let long = "x".repeat(1000);
    let input = format!(r#"{{"a":1}} ["{long}"] {{"b":2}} ["{long}{long}"]"#);
    let out = assert_split_invariant(value_codec, input.as_bytes());
    assert_eq!(
        out.frames,
        vec![
            json!({"a": 1}),
            json!([long]),
            json!({"b": 2}),
            json!([format!("{long}{long}")]),
        ]
    );
}

#[test]
fn a_window_that_ends_inside_a_character_takes_the_whole_text() {
    // After `[1]` the window is 256 bytes; from the quote on, its last byte
    // is the first of a two-byte `é`.
    let text = "é".repeat(300);
    let input = format!(r#"[1]"{text}" [2]"#);
    let out = assert_split_invariant(value_codec, input.as_bytes());
    assert_eq!(out.frames, vec![json!([1]), json!(text), json!([2])]);
    assert_eq!(out.eof, clean());
}

#[test]
fn a_byte_that_is_not_utf8_after_a_text_does_not_spoil_the_text() {
    let mut codec = value_codec();
    let mut buf = BytesMut::from(&b"{\"a\":1}\xff"[..]);
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(json!({"a": 1})));
    let err = codec.decode(&mut buf).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadMessage);
    assert_eq!(err.offset(), Some(0));
}

#[test]
fn literals_split_anywhere_are_fine() {
    // JSON::XS fails on `tr`|`ue` (docs/semantics.md §11); we must not.
    let out = run_chunks(value_codec(), &[b"tr", b"ue", b"fa", b"lse", b"n", b"ull"]);
    assert_eq!(out.frames, vec![json!(true), json!(false), json!(null)]);
    assert_eq!(out.eof, clean());
}

#[test]
fn whitespace_goes_with_the_next_text_and_eof_is_clean() {
    let mut codec = value_codec();
    let mut buf = BytesMut::from(&b"\n\n  {\"a\":1}\r\n\t \n"[..]);
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(json!({"a": 1})));
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert_eq!(&buf[..], b"\r\n\t \n", "kept until a text completes");
    assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
    assert!(buf.is_empty(), "consumed at end of input");
    // Whitespace alone never becomes data or a false EPIPE (RT-json-6).
    let out = assert_split_invariant(value_codec, b" \n\r\t\n");
    assert!(out.frames.is_empty());
    assert_eq!(out.eof, clean());
}

#[test]
fn partial_text_at_eof_is_broken_pipe_with_the_bytes_kept() {
    let mut codec = value_codec();
    let mut buf = BytesMut::from(&b" [1, {\"a\": "[..]);
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    let err = codec.decode_eof(&mut buf).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrokenPipe);
    assert!(err.is_fatal() && err.is_incomplete());
    assert_eq!(&buf[..], b" [1, {\"a\": ", "nothing was consumed");
    assert_eq!(err.seen(), Some(11));
}

#[test]
fn objects_only_refuses_top_level_scalars() {
    let make = || JsonCodec::<Value>::builder().objects_only(true).build();
    let out = assert_split_invariant(make, b"[1] {} 2");
    assert_eq!(out.frames, vec![json!([1]), json!({})]);
    assert_eq!(out.error, Some((2, ErrorKind::BadMessage, false)));
    let mut codec = make();
    let mut buf = BytesMut::from(&b"\"x\""[..]);
    let err = codec.decode(&mut buf).unwrap_err();
    assert_eq!(err.reason(), "top-level value is not an array or object");
    assert_eq!(err.offset(), Some(0));
}

#[test]
fn malformed_input_fails_at_the_first_bad_byte_and_consumes_nothing() {
    let mut codec = value_codec();
    let mut buf = BytesMut::from(&b"  [1, 2}"[..]);
    let err = codec.decode(&mut buf).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadMessage);
    assert!(!err.is_fatal());
    assert_eq!(err.codec(), "json");
    assert_eq!(err.offset(), Some(7), "from the start of the buffer");
    assert_eq!(err.bytes(), b"}");
    assert_eq!(&buf[..], b"  [1, 2}", "the bad text is left for the caller");
    // Decoding again reports the same error: nothing loops inside the codec.
    let again = codec.decode(&mut buf).unwrap_err();
    assert_eq!(
        (again.offset(), again.reason()),
        (err.offset(), err.reason())
    );
    // The caller may skip the bad bytes and go on.
    let _ = buf.split_to(8);
    buf.extend_from_slice(b" [3]");
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(json!([3])));
}

#[test]
fn errors_come_early_not_after_waiting_for_more() {
    for bad in [
        &b"}"[..],
        b"]",
        b"[1,]",
        b"{\"a\" 1",
        b"[tru ",
        b"\"\\x",
        b"[01",
        b"nul!",
    ] {
        let mut buf = BytesMut::from(bad);
        let err = value_codec().decode(&mut buf).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadMessage, "{bad:?}");
    }
}

#[test]
fn invalid_utf8_is_a_bad_message() {
    let mut codec = value_codec();
    let mut buf = BytesMut::from(&b"[\"ab\xc3(\"]"[..]);
    let err = codec.decode(&mut buf).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadMessage);
    assert!(err.is_utf8());
    assert_eq!(err.offset(), Some(5));
    // Overlong forms and surrogates, however split.
    for bad in [
        &b"\"\xc0\xaf\""[..],
        b"\"\xed\xa0\x80\"",
        b"\"\xf4\x90\x80\x80\"",
        b"\xff",
    ] {
        let out = assert_split_invariant(value_codec, bad);
        assert_eq!(
            out.error.map(|(i, k, _)| (i, k)),
            Some((0, ErrorKind::BadMessage)),
            "{bad:?}"
        );
    }
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Point {
    x: i32,
    y: i32,
}

#[test]
fn a_text_the_type_rejects_is_consumed_and_decoding_goes_on() {
    let mut codec = JsonCodec::<Point>::new();
    let mut buf = BytesMut::from(&b"{\"x\":1} {\"x\":2,\"y\":3}"[..]);
    let err = codec.decode(&mut buf).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadMessage);
    assert!(!err.is_fatal() && !err.is_limit());
    assert!(
        std::error::Error::source(&err).is_some(),
        "the serde error is kept"
    );
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(Point { x: 2, y: 3 }));
    // The same whether the text arrived whole or in pieces.
    let out = assert_split_invariant(JsonCodec::<Point>::new, b"{\"x\":1}");
    assert_eq!(
        out.error.map(|(i, k, _)| (i, k)),
        Some((0, ErrorKind::BadMessage))
    );
}

#[derive(Debug, PartialEq, Deserialize)]
struct OnlyX {
    x: i32,
}

#[test]
fn ignored_fields_are_held_to_the_same_rules_however_split() {
    // serde_json skips unknown fields without checking UTF-8 or depth; the
    // codec must still give the scanner's verdict, whole or split.
    let bad_utf8 = b"{\"x\":1,\"junk\":\"\xff\"}";
    let out = assert_split_invariant(JsonCodec::<OnlyX>::new, bad_utf8);
    assert_eq!(
        out.error.map(|(i, k, _)| (i, k)),
        Some((0, ErrorKind::BadMessage))
    );
    let deep = format!(
        "{{\"x\":1,\"junk\":{}{}}}",
        "[".repeat(200),
        "]".repeat(200)
    );
    let out = assert_split_invariant(JsonCodec::<OnlyX>::new, deep.as_bytes());
    assert_eq!(
        out.error.map(|(i, k, _)| (i, k)),
        Some((0, ErrorKind::BadMessage))
    );
    let mut buf = BytesMut::from(deep.as_bytes());
    assert!(
        JsonCodec::<OnlyX>::new()
            .decode(&mut buf)
            .unwrap_err()
            .is_limit()
    );
    // Within the limits, ignored fields are fine.
    let ok = format!(
        "{{\"junk\":{}{},\"x\":7}}",
        "[".repeat(100),
        "]".repeat(100)
    );
    let out = assert_split_invariant(JsonCodec::<OnlyX>::new, ok.as_bytes());
    assert_eq!(out.frames, vec![OnlyX { x: 7 }]);
}

#[test]
fn size_limit_counts_the_text_not_the_whitespace() {
    let make = || JsonCodec::<Value>::builder().max_size(8).build();
    let out = assert_split_invariant(make, b"        [1,2,3] 12345678 [1,2,3,4]");
    assert_eq!(out.frames, vec![json!([1, 2, 3]), json!(12345678)]);
    assert_eq!(
        out.error.map(|(i, k, _)| (i, k)),
        Some((2, ErrorKind::BadMessage))
    );
    let mut buf = BytesMut::from(&b"[1,2,3,4]"[..]);
    let err = make().decode(&mut buf).unwrap_err();
    assert!(err.is_limit());
    assert_eq!((err.limit(), err.offset()), (Some(8), Some(8)));
    // A number of exactly the limit, ended by end of input.
    let out = assert_split_invariant(make, b"12345678");
    assert_eq!(out.frames, vec![json!(12345678)]);
}

#[test]
fn depth_limit() {
    let make = || JsonCodec::<Value>::builder().max_depth(3).build();
    let out = assert_split_invariant(make, b"[[[1]]] [{\"a\":[[2]]}]");
    assert_eq!(out.frames, vec![json!([[[1]]])]);
    assert_eq!(
        out.error.map(|(i, k, _)| (i, k)),
        Some((1, ErrorKind::BadMessage))
    );
    let mut buf = BytesMut::from(&b"[{\"a\":[["[..]);
    let err = make().decode(&mut buf).unwrap_err();
    assert!(err.is_limit());
    assert_eq!(err.offset(), Some(7));
}

#[test]
fn a_million_open_brackets_fail_cleanly() {
    let deep = vec![b'['; 1_000_000];
    for mut buf in [BytesMut::from(&deep[..]), BytesMut::from(&deep[..])] {
        let err = value_codec().decode(&mut buf).unwrap_err();
        assert!(err.is_limit(), "{err}");
        assert_eq!(err.offset(), Some(DEFAULT_JSON_MAX_DEPTH as u64));
    }
    let raw = RawJsonCodec::builder().max_depth(usize::MAX).build_raw();
    let out = run_chunks(raw, &deep.chunks(4096).collect::<Vec<_>>());
    assert_eq!(
        out.eof,
        epipe(1_000_000),
        "no depth limit: a truncated text, no overflow"
    );
    let deep_objects = b"{\"a\":".repeat(200_000);
    let mut buf = BytesMut::from(&deep_objects[..]);
    assert!(value_codec().decode(&mut buf).unwrap_err().is_limit());
}

#[test]
fn an_endless_string_stops_at_the_size_limit() {
    let mut codec = JsonCodec::<Value>::builder().max_size(1 << 20).build();
    let mut buf = BytesMut::new();
    buf.extend_from_slice(b"\"");
    let piece = vec![b'a'; 64 * 1024];
    let mut fed = 1;
    let err = loop {
        buf.extend_from_slice(&piece);
        fed += piece.len();
        match codec.decode(&mut buf) {
            Ok(None) => assert!(fed <= (1 << 20) + 1, "no error past the limit"),
            Ok(Some(v)) => panic!("a value out of an unterminated string: {v}"),
            Err(e) => break e,
        }
    };
    assert!(err.is_limit());
    assert_eq!(err.limit(), Some(1 << 20));
    assert_eq!(err.offset(), Some(1 << 20));
}

#[test]
fn a_run_of_whitespace_is_bounded_by_the_size_limit() {
    let mut codec = JsonCodec::<Value>::builder().max_size(1024).build();
    let mut buf = BytesMut::new();
    let piece = vec![b' '; 256];
    for _ in 0..4 {
        buf.extend_from_slice(&piece);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
    }
    assert_eq!(buf.len(), 1024, "kept, as a cancelled read must keep it");
    buf.extend_from_slice(b"\n");
    let err = codec.decode(&mut buf).unwrap_err();
    assert!(err.is_limit(), "{err}");
    assert_eq!((err.limit(), err.offset()), (Some(1024), Some(1024)));
    assert_eq!(buf.len(), 1025, "nothing consumed by the error either");
    buf.truncate(1024);
    assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
    assert!(buf.is_empty());
    // In NDJSON mode, the same for the wait for a text's newline.
    let mut ndjson = JsonCodec::<Value>::builder()
        .max_size(8)
        .separate_every_text(true)
        .build();
    let mut buf = BytesMut::from(&b"[1]        "[..]);
    assert_eq!(ndjson.decode(&mut buf).unwrap(), None);
    buf.extend_from_slice(b" ");
    assert!(ndjson.decode(&mut buf).unwrap_err().is_limit());
    // Whitespace inside a text counts towards the limit.
    let mut buf = BytesMut::from(&b"["[..]);
    buf.extend_from_slice(&[b' '; 2048]);
    assert!(codec.decode(&mut buf).unwrap_err().is_limit());
}

/// Whitespace runs around the size limit fail (or not) at the same frame
/// however they are split, before a text and, in NDJSON mode, between a
/// text and its newline.
#[test]
fn whitespace_limits_are_split_invariant() {
    let make = || JsonCodec::<Value>::builder().max_size(4).build();
    let out = assert_split_invariant(make, b"    [1]     [2]");
    assert_eq!(out.frames, vec![json!([1])]);
    assert_eq!(
        out.error.map(|(i, k, _)| (i, k)),
        Some((1, ErrorKind::BadMessage))
    );
    let ndjson = || {
        JsonCodec::<Value>::builder()
            .max_size(4)
            .separate_every_text(true)
            .build()
    };
    let out = assert_split_invariant(ndjson, b"[1]    \n[2]     \n");
    assert_eq!(out.frames, vec![json!([1])]);
    assert_eq!(
        out.error.map(|(i, k, _)| (i, k)),
        Some((1, ErrorKind::BadMessage))
    );
}

#[test]
fn default_limits_are_documented_values() {
    let codec = value_codec();
    assert_eq!(codec.max_size(), DEFAULT_JSON_MAX_SIZE);
    assert_eq!(DEFAULT_JSON_MAX_SIZE, 16 * 1024 * 1024);
    assert_eq!(codec.max_depth(), 128);
    assert!(!codec.is_objects_only());
    assert_eq!(codec.separator(), JsonSeparator::Newline);
}

#[test]
fn encoder_is_compact_and_separates_numbers() {
    let mut codec = value_codec();
    let mut out = BytesMut::new();
    codec
        .encode(json!({"b": [1, "x y\n"], "a": null}), &mut out)
        .unwrap();
    codec.encode(json!(-3), &mut out).unwrap();
    codec.encode(json!(4), &mut out).unwrap();
    codec.encode(&json!("s"), &mut out).unwrap();
    codec.encode(json!(1.5), &mut out).unwrap();
    assert_eq!(
        &out[..],
        b"{\"a\":null,\"b\":[1,\"x y\\n\"]}-3\n4\n\"s\"1.5\n"
    );
    let back = run_chunks(value_codec(), &[&out[..]]);
    assert_eq!(
        back.frames,
        vec![
            json!({"b": [1, "x y\n"], "a": null}),
            json!(-3),
            json!(4),
            json!("s"),
            json!(1.5)
        ]
    );
}

#[test]
fn ndjson_and_other_separators() {
    let mut out = BytesMut::new();
    let mut nd = JsonCodec::<Value>::ndjson();
    nd.encode(json!([1]), &mut out).unwrap();
    nd.encode(json!(2), &mut out).unwrap();
    assert_eq!(&out[..], b"[1]\n2\n");
    let mut tab = JsonCodec::<Value>::builder()
        .separator(JsonSeparator::Tab)
        .separate_every_text(true)
        .build();
    out.clear();
    tab.encode(json!("a"), &mut out).unwrap();
    assert_eq!(&out[..], b"\"a\"\t");
    assert!(tab.is_separating_every_text());
}

/// Two peers configured alike understand each other without more input:
/// with a space or tab after every text, a text is complete at its last
/// byte (a reader waiting for a newline its peer never sends would stall a
/// request/response exchange); with a newline, the frame takes the line's
/// end too.
#[test]
fn every_separator_reads_back_what_it_writes_at_once() {
    for sep in [
        JsonSeparator::Space,
        JsonSeparator::Tab,
        JsonSeparator::Newline,
        JsonSeparator::CrLf,
    ] {
        for raw in [false, true] {
            let mut builder = JsonCodec::<Value>::builder();
            builder.separator(sep).separate_every_text(true);
            let mut wire = BytesMut::new();
            if raw {
                let mut c = builder.build_raw();
                c.encode(Bytes::from_static(b"{}"), &mut wire).unwrap();
                let text = c.decode(&mut wire).unwrap();
                assert_eq!(text.as_deref(), Some(&b"{}"[..]), "{sep:?} raw");
            } else {
                let mut c = builder.build();
                c.encode(json!({}), &mut wire).unwrap();
                assert_eq!(c.decode(&mut wire).unwrap(), Some(json!({})), "{sep:?}");
            }
            let newline = matches!(sep, JsonSeparator::Newline | JsonSeparator::CrLf);
            assert_eq!(wire.is_empty(), newline, "{sep:?}: left {wire:?}");
        }
    }
}

#[test]
fn encoding_error_writes_nothing() {
    let mut codec = JsonCodec::<BTreeMap<Vec<u8>, u8>>::new();
    let mut out = BytesMut::from(&b"before"[..]);
    let mut bad = BTreeMap::new();
    bad.insert(vec![1, 2], 3);
    let err = codec.encode(bad, &mut out).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(&out[..], b"before");
}

/// A byte string read through `deserialize_byte_buf`, as `serde_bytes`
/// does (serde_json then reads the string without checking for control
/// characters).
#[derive(Debug, PartialEq)]
struct ByteBuf(Vec<u8>);

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ByteBuf;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.to_vec()))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.as_bytes().to_vec()))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// A raw control character inside a string is malformed, also in a string
/// the type takes as bytes: refused whole as it is split (the scanner's
/// verdict), in plain and NDJSON mode.
#[test]
fn a_control_character_in_a_bytes_string_is_refused_however_split() {
    for input in [&b"\"a\x01b\""[..], b"\"x\ny\"\n", b"[\"\t\"]"] {
        for make in [JsonCodec::<ByteBuf>::new, JsonCodec::<ByteBuf>::ndjson] {
            let out = assert_split_invariant(make, input);
            assert_eq!(
                out.error.map(|(i, k, _)| (i, k)),
                Some((0, ErrorKind::BadMessage)),
                "{input:?}"
            );
        }
    }
    // Whitespace between the tokens is not inside a string.
    let out = assert_split_invariant(JsonCodec::<Vec<ByteBuf>>::new, b"[\n\t\"ab\",\r\n\"c\"\n]");
    assert_eq!(
        out.frames,
        vec![vec![ByteBuf(b"ab".to_vec()), ByteBuf(b"c".to_vec())]]
    );
}

/// An untagged `Tagged` (what an untagged CBOR item reads into) writes as
/// its value: only a tag has no JSON form.
#[cfg(feature = "cbor")]
#[test]
fn an_untagged_cbor_tagged_value_is_written() {
    use serde_cbor::tags::Tagged;
    let mut codec: JsonCodec<Tagged<u32>> = JsonCodec::new();
    let mut wire = BytesMut::new();
    codec.encode(Tagged::new(None, 5u32), &mut wire).unwrap();
    assert_eq!(&wire[..], b"5\n");
    let e = codec
        .encode(Tagged::new(Some(1), 5u32), &mut wire)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert_eq!(&wire[..], b"5\n");
}

/// JSON has no tags: a CBOR value with one cannot be written exactly, so
/// it is refused rather than written as its bare content.
#[cfg(feature = "cbor")]
#[test]
fn a_cbor_tag_is_refused_not_dropped() {
    use anyframe_codecs::CborValue;
    let mut codec = JsonCodec::<CborValue>::new();
    let mut out = BytesMut::from(&b"before"[..]);
    let tagged = CborValue::Array(vec![
        CborValue::Integer(1),
        CborValue::Tag(1, Box::new(CborValue::Integer(5))),
    ]);
    let err = codec.encode(tagged, &mut out).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(&out[..], b"before");
    // Untagged, the same value goes out.
    codec.encode(CborValue::Integer(5), &mut out).unwrap();
    assert_eq!(&out[..], b"before5\n");
}

#[test]
fn raw_codec_hands_out_the_text_bytes() {
    let input = b" {\"a\" : [1, 2]}\n\"\\u00e9\" 17 ";
    let out = assert_split_invariant(RawJsonCodec::new, input);
    let want: Vec<Bytes> = vec![
        Bytes::from_static(b"{\"a\" : [1, 2]}"),
        Bytes::from_static(b"\"\\u00e9\""),
        Bytes::from_static(b"17"),
    ];
    assert_eq!(out.frames, want);
    assert_eq!(out.eof, clean());
    // The raw encoder forwards texts, separating numbers.
    let mut enc = RawJsonCodec::new();
    let mut wire = BytesMut::new();
    for text in want {
        enc.encode(text, &mut wire).unwrap();
    }
    assert_eq!(&wire[..], b"{\"a\" : [1, 2]}\"\\u00e9\"17\n");
}

#[test]
fn works_in_a_plain_framed_over_a_small_pipe() {
    use futures::{SinkExt, StreamExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let (a, b) = tokio::io::duplex(5);
        let mut tx = tokio_util::codec::FramedWrite::new(a, JsonCodec::<Point>::new());
        let mut rx = tokio_util::codec::FramedRead::new(b, JsonCodec::<Point>::new());
        let send = async {
            for i in 0..20 {
                tx.send(Point { x: i, y: -i }).await.unwrap();
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
            (0..20).map(|i| Point { x: i, y: -i }).collect::<Vec<_>>()
        );
    });
}

/// Random JSON values whose numbers survive a text round trip exactly.
fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        (-1_000_000i32..1_000_000).prop_map(|n| json!(f64::from(n) / 8.0)),
        "\\PC{0,12}".prop_map(Value::String),
        prop::collection::vec(any::<char>(), 0..6)
            .prop_map(|c| Value::String(c.into_iter().collect())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z\"\\\\ ]{0,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn round_trip_of_random_values(values in prop::collection::vec(arb_value(), 1..8), ndjson: bool) {
        let mut codec = if ndjson { JsonCodec::<Value>::ndjson() } else { value_codec() };
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
            serde_json::to_writer(&mut wire, v).unwrap();
            wire.extend_from_slice(b" \n");
        }
        assert_sized_matches_whole(value_codec, &wire, &sizes);
        assert_sized_matches_whole(RawJsonCodec::new, &wire, &sizes);
        assert_sized_matches_whole(JsonCodec::<Value>::ndjson, &wire, &sizes);
        let raw_ndjson = || RawJsonCodec::builder().separate_every_text(true).build_raw();
        assert_sized_matches_whole(raw_ndjson, &wire, &sizes);
        // A cut-off or damaged stream too: same frames, same error, same end.
        let cut = cut.min(wire.len());
        assert_sized_matches_whole(value_codec, &wire[..wire.len() - cut], &sizes);
        if let Some(b) = wire.get_mut(cut) {
            *b ^= 0x5a;
        }
        assert_sized_matches_whole(value_codec, &wire, &sizes);
        assert_sized_matches_whole(JsonCodec::<Value>::ndjson, &wire, &sizes);
        assert_sized_matches_whole(JsonCodec::<Point>::new, &wire, &sizes);
    }
}

#[test]
fn serde_json_refuses_128_levels_itself_and_the_text_is_consumed() {
    let nest = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let ok = assert_split_invariant(value_codec, nest(127).as_bytes());
    assert_eq!(ok.frames.len(), 1);
    let mut buf = BytesMut::from(format!("{} 1", nest(128)).as_bytes());
    let err = value_codec().decode(&mut buf).unwrap_err();
    assert!(!err.is_limit(), "serde_json's own limit, not the scanner's");
    assert_eq!(
        value_codec().decode(&mut buf).unwrap(),
        None,
        "the text was consumed"
    );
    assert_eq!(value_codec().decode_eof(&mut buf).unwrap(), Some(json!(1)));
    // The raw framer has no such limit of its own.
    let raw = assert_split_invariant(RawJsonCodec::new, nest(128).as_bytes());
    assert_eq!(raw.frames.len(), 1);
}

/// RT-json-6: in NDJSON mode the `\n` written after a text is consumed with
/// it when it has arrived, so a line read after a JSON read sees the next
/// line, not an empty one. Without NDJSON mode the bytes after a text are
/// left alone: they may be the next frame's (here a length prefix 0x0a).
#[test]
fn the_ndjson_separator_that_arrived_with_a_text_is_consumed_with_it() {
    use anyframe_codecs::LineCodec;
    let mut buf = BytesMut::from(&b"{\"a\":1}\nnext line\n"[..]);
    let v: serde_json::Value = JsonCodec::ndjson().decode(&mut buf).unwrap().unwrap();
    assert_eq!(v["a"], 1);
    assert_eq!(
        LineCodec::new().decode(&mut buf).unwrap().unwrap().line(),
        b"next line"
    );
    // Raw mode and CRLF too; spaces without a newline are left alone.
    let mut buf = BytesMut::from(&b"[1] \r\n2\n  x"[..]);
    let mut raw = anyframe_codecs::RawJsonCodec::builder()
        .separate_every_text(true)
        .build_raw();
    assert_eq!(&raw.decode(&mut buf).unwrap().unwrap()[..], b"[1]");
    assert_eq!(&buf[..], b"2\n  x");
    assert_eq!(&raw.decode(&mut buf).unwrap().unwrap()[..], b"2");
    assert_eq!(&buf[..], b"  x");
    // Not NDJSON: a following binary frame that starts with 0x0a is intact.
    let mut buf = BytesMut::from(&b"{}\n\x00rest"[..]);
    let _: serde_json::Value = JsonCodec::new().decode(&mut buf).unwrap().unwrap();
    assert_eq!(&buf[..], b"\n\x00rest");
}

/// In NDJSON mode a frame is a text and the `\n` that ends its line, so a
/// line read that follows sees the next line whether the `\n` came with the
/// text or in a later read (AnyEvent writes the text and the `\n` in two
/// writes). The issue's minimal case, then every split of it.
#[test]
fn an_ndjson_newline_that_arrives_late_is_still_part_of_the_frame() {
    use anyframe_codecs::LineCodec;
    let mut codec = JsonCodec::<Value>::ndjson();
    let mut buf = BytesMut::from(&b"{\"a\":1}"[..]);
    assert_eq!(
        codec.decode(&mut buf).unwrap(),
        None,
        "waits for the newline"
    );
    buf.extend_from_slice(b"\nnext\n");
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(json!({"a": 1})));
    assert_eq!(
        LineCodec::new().decode(&mut buf).unwrap().unwrap().line(),
        b"next"
    );
    let out = assert_split_invariant(JsonCodec::<Value>::ndjson, b"{\"a\":1}\r\n 7\n\"x\" \t\n");
    assert_eq!(out.frames, vec![json!({"a": 1}), json!(7), json!("x")]);
    assert_eq!(out.eof, clean());
}

/// The accepted NDJSON line ends: `\n`, with spaces, tabs and `\r` allowed
/// before it (so `\r\n` too). A text followed on its line by anything else
/// is a frame by itself and the rest is left; at end of input a text needs
/// no newline.
#[test]
fn ndjson_line_ends_and_what_is_left_without_one() {
    let raw = || {
        RawJsonCodec::builder()
            .separate_every_text(true)
            .build_raw()
    };
    for (input, text, left) in [
        (&b"[1]\n"[..], &b"[1]"[..], &b""[..]),
        (b"[1]\r\n", b"[1]", b""),
        (b"[1] \t\r\n\n", b"[1]", b"\n"),
        (b"[1] [2]\n", b"[1]", b" [2]\n"),
        (b"[1]x", b"[1]", b"x"),
        (b" 12,", b"12", b","),
    ] {
        let mut buf = BytesMut::from(input);
        assert_eq!(
            raw().decode(&mut buf).unwrap().as_deref(),
            Some(text),
            "{input:?}"
        );
        assert_eq!(&buf[..], left, "{input:?}");
    }
    let mut buf = BytesMut::from(&b"[1]  "[..]);
    assert_eq!(raw().decode(&mut buf).unwrap(), None);
    assert_eq!(
        raw().decode_eof(&mut buf).unwrap().as_deref(),
        Some(&b"[1]"[..])
    );
    assert!(
        buf.is_empty(),
        "trailing whitespace at end of input is consumed"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// NDJSON then a line read, over random splits: the line read always
    /// gets `next`, never the empty rest of the JSON text's line.
    #[test]
    fn ndjson_then_a_line_read_is_split_invariant(
        values in prop::collection::vec(arb_value(), 1..4),
        crlf: bool,
        sizes in prop::collection::vec(1usize..9, 1..6),
    ) {
        use anyframe_codecs::LineCodec;
        let mut wire = BytesMut::new();
        let mut codec = JsonCodec::<Value>::ndjson();
        for v in &values {
            codec.encode(v, &mut wire).unwrap();
            if crlf {
                let lf = wire.split_off(wire.len() - 1);
                wire.extend_from_slice(b"\r");
                wire.unsplit(lf);
            }
        }
        wire.extend_from_slice(b"next\n");
        let (mut json, mut lines) = (JsonCodec::<Value>::ndjson(), LineCodec::new());
        let (mut buf, mut got, mut line) = (BytesMut::new(), Vec::new(), None);
        let mut rest = &wire[..];
        let mut i = 0;
        while line.is_none() && !rest.is_empty() {
            let (chunk, tail) = rest.split_at(sizes[i % sizes.len()].min(rest.len()));
            (rest, i) = (tail, i + 1);
            buf.extend_from_slice(chunk);
            while got.len() < values.len() {
                match json.decode(&mut buf).unwrap() {
                    Some(v) => got.push(v),
                    None => break,
                }
            }
            if got.len() == values.len() {
                line = lines.decode(&mut buf).unwrap().map(|l| l.line().to_vec());
            }
        }
        prop_assert_eq!(got, values);
        prop_assert_eq!(line.as_deref(), Some(&b"next"[..]));
    }
}

/// An integer beyond 64 bits (an `i128`, a CBOR value's `Integer`) has no
/// exact JSON form here: serde_json writes its digits but reads them back
/// as a float, another value. The encoder refuses it (EINVAL, nothing
/// written); the 64-bit extremes are written and read back exactly.
#[test]
fn integers_beyond_64_bits_are_refused_not_read_back_as_floats() {
    let mut codec = JsonCodec::<i128>::new();
    for n in [1i128 << 64, -(1i128 << 64) - 1, 1i128 << 100, i128::MIN] {
        let mut wire = BytesMut::from(&b"before"[..]);
        let err = codec.encode(n, &mut wire).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{n}");
        assert_eq!(&wire[..], b"before", "nothing written for {n}");
    }
    let mut codec = JsonCodec::<u128>::new();
    assert!(codec.encode(1u128 << 64, &mut BytesMut::new()).is_err());
    for n in [i128::from(i64::MIN), i128::from(u64::MAX)] {
        let mut codec = JsonCodec::<i128>::new();
        let mut wire = BytesMut::new();
        codec.encode(n, &mut wire).unwrap();
        assert_eq!(codec.decode_eof(&mut wire).unwrap(), Some(n));
    }
}

/// NaN and the infinities have no JSON form. serde_json writes them as
/// `null`; the encoder refuses them instead (EINVAL, nothing written),
/// wherever they sit in the value.
#[test]
fn nan_and_infinities_are_refused_not_written_as_null() {
    #[derive(Serialize)]
    struct Reading {
        name: &'static str,
        values: Vec<f32>,
        extra: BTreeMap<String, Option<f64>>,
    }
    let mut codec = JsonCodec::<f64>::new();
    for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let mut wire = BytesMut::from(&b"before"[..]);
        let err = codec.encode(x, &mut wire).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{x}");
        assert_eq!(&wire[..], b"before", "nothing written for {x}");
    }
    let mut codec = JsonCodec::<Reading>::new();
    let nested = Reading {
        name: "r",
        values: vec![1.0, f32::NAN],
        extra: BTreeMap::new(),
    };
    assert!(codec.encode(&nested, &mut BytesMut::new()).is_err());
    let in_map = Reading {
        name: "r",
        values: vec![],
        extra: BTreeMap::from([("x".to_owned(), Some(f64::INFINITY))]),
    };
    assert!(codec.encode(&in_map, &mut BytesMut::new()).is_err());
    // Finite values, including the extremes, are written as before.
    let fine = Reading {
        name: "r",
        values: vec![f32::MAX, -0.0],
        extra: BTreeMap::from([("x".to_owned(), None)]),
    };
    let mut wire = BytesMut::new();
    codec.encode(&fine, &mut wire).unwrap();
    assert_eq!(
        &wire[..],
        &b"{\"name\":\"r\",\"values\":[3.4028235e+38,-0.0],\"extra\":{\"x\":null}}"[..]
    );
}

/// With `float-roundtrip`, floats are read correctly rounded, as JSON::XS
/// reads them: the shortest text of `f32::MAX` widened to `f64` comes back
/// as exactly that `f64` (serde_json's default parser is one unit in the
/// last place off here).
#[cfg(feature = "float-roundtrip")]
#[test]
fn float_roundtrip_reads_floats_correctly_rounded() {
    let want = f64::from(f32::MAX);
    let out = assert_split_invariant(JsonCodec::<f64>::new, b"3.4028234663852886e+38\n");
    assert_eq!(out.frames.len(), 1);
    assert_eq!(out.frames[0].to_bits(), want.to_bits());
    let out = assert_split_invariant(value_codec, b"[3.4028234663852886e+38]");
    assert_eq!(out.frames, vec![json!([want])]);
    // Every f64 written is read back bit for bit.
    for x in [
        0.1,
        1.0 / 3.0,
        2.2250738585072014e-308,
        f64::MAX,
        5e-324,
        1.7976931348623157e308,
    ] {
        let mut wire = BytesMut::new();
        JsonCodec::<f64>::new().encode(x, &mut wire).unwrap();
        let back = JsonCodec::<f64>::new().decode(&mut wire).unwrap().unwrap();
        assert_eq!(back.to_bits(), x.to_bits(), "{x}");
    }
}
