//! Adversarial checks of the codecs' contract: split invariance with the
//! options the other suites leave at their defaults (overflow discard,
//! NDJSON framing, small limits), limits at exactly the bound and one past,
//! and encode-then-decode round trips for every codec and format.

mod support;

use std::fmt::Debug;

use anyframe_codecs::{
    CborCodec, CborValue, Error, ErrorKind, JsonCodec, JsonSeparator, JsonValue, Line,
    LineBatchCodec, LineCodec, LineCodecBuilder, NetstringCodec, OverflowPolicy, PackFormat,
    PackstringCodec, RawCborCodec, RawJsonCodec, TlsDetect, TlsDetectCodec,
};
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use support::split_at_sizes;
use tokio_util::codec::{Decoder, Encoder};

/// One observable event: a frame (Debug form) and the bytes consumed so
/// far; an error with its kind, fatality, limit flag and consumed bytes;
/// the end of input.
#[derive(Debug, Clone, PartialEq)]
enum Ev {
    Frame(String, usize),
    Err(ErrorKind, bool, bool, usize, Option<u64>),
    EofErr(ErrorKind, usize),
    EofClean(usize),
}

/// Feeds `chunks`, decoding after each until the decoder waits. A
/// non-fatal error that consumed bytes is recorded and decoding goes on; a
/// fatal one, or one that consumed nothing, ends the run. Then
/// `decode_eof` until it is done. (As `codec_fidelity.rs`'s runner, but
/// recording each error's limit flag and offset too: here runs are only
/// compared with each other, never with a model that cannot know them.)
fn run<D>(mut dec: D, chunks: &[&[u8]]) -> Vec<Ev>
where
    D: Decoder<Error = Error>,
    D::Item: Debug,
{
    let mut buf = BytesMut::new();
    let mut fed = 0usize;
    let mut evs = Vec::new();
    for c in chunks {
        buf.extend_from_slice(c);
        fed += c.len();
        for guard in 0.. {
            assert!(guard < 100_000, "decoder loops");
            let before = buf.len();
            match dec.decode(&mut buf) {
                Ok(Some(f)) => evs.push(Ev::Frame(format!("{f:?}"), fed - buf.len())),
                Ok(None) => break,
                Err(e) => {
                    evs.push(Ev::Err(
                        e.kind(),
                        e.is_fatal(),
                        e.is_limit(),
                        fed - buf.len(),
                        e.offset(),
                    ));
                    if e.is_fatal() || buf.len() == before {
                        return evs;
                    }
                }
            }
        }
    }
    for guard in 0.. {
        assert!(guard < 100_000, "decode_eof loops");
        let before = buf.len();
        match dec.decode_eof(&mut buf) {
            Ok(Some(f)) => evs.push(Ev::Frame(format!("{f:?}"), fed - buf.len())),
            Ok(None) => {
                evs.push(Ev::EofClean(buf.len()));
                break;
            }
            Err(e) if !e.is_fatal() && buf.len() != before => {
                evs.push(Ev::Err(
                    e.kind(),
                    e.is_fatal(),
                    e.is_limit(),
                    fed - buf.len(),
                    e.offset(),
                ));
            }
            Err(e) => {
                evs.push(Ev::EofErr(e.kind(), buf.len()));
                break;
            }
        }
    }
    evs
}

/// A line codec builder with `max` as its limit (none if `None`), the
/// discard policy if `discard`, and `eol` as its end of line if given.
fn line_builder(max: Option<usize>, discard: bool, eol: Option<&[u8]>) -> LineCodecBuilder {
    let mut b = LineCodec::builder();
    if let Some(max) = max {
        b.max_length(max);
    }
    if discard {
        b.overflow(OverflowPolicy::Discard);
    }
    if let Some(e) = eol {
        b.eol(e);
    }
    b
}

/// Whole vs a byte at a time vs the given sizes.
fn check<D, F>(make: F, input: &[u8], sizes: &[usize]) -> Result<(), TestCaseError>
where
    D: Decoder<Error = Error>,
    D::Item: Debug,
    F: Fn() -> D,
{
    let whole = run(make(), &[input]);
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    prop_assert_eq!(&run(make(), &bytes), &whole, "bytewise on {:?}", input);
    let sized = run(make(), &split_at_sizes(input, sizes));
    prop_assert_eq!(&sized, &whole, "sizes {:?} on {:?}", sizes, input);
    Ok(())
}

fn from_alphabet(alpha: &'static [&'static [u8]], max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(alpha.to_vec()), 0..max).prop_map(|v| v.concat())
}

fn sizes() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..7, 1..6)
}

const LINE_BYTES: &[&[u8]] = &[
    b"a", b"b", b"\r", b"\n", b"\r\n", b"<E", b"ND>", b"\xc3", b"\xa9",
];
const JSON_TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b",",
    b"\"a\"",
    b"\"\xc3\xa9\"",
    b"\"",
    b"\\",
    b"1",
    b"0",
    b"-",
    b".",
    b"e",
    b"true",
    b"null",
    b" ",
    b"\t",
    b"\r",
    b"\n",
    b"x",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn line_discard_policy_is_split_invariant(
        input in from_alphabet(LINE_BYTES, 24),
        max in 0usize..6,
        eol in prop::sample::select(vec![None, Some(&b"\r\n"[..]), Some(&b"<END>"[..]), Some(&b"\n\n"[..])]),
        sz in sizes(),
    ) {
        let make = || line_builder(Some(max), true, eol).build().unwrap();
        check(make, &input, &sz)?;
        let make_utf8 = || line_builder(Some(max), true, eol).build_utf8().unwrap();
        check(make_utf8, &input, &sz)?;
    }

    #[test]
    fn line_fatal_policy_small_limits_split_invariant(
        input in from_alphabet(LINE_BYTES, 24),
        max in 0usize..6,
        eol in prop::sample::select(vec![None, Some(&b"\r\n"[..]), Some(&b"<END>"[..]), Some(&b"\n\n"[..])]),
        sz in sizes(),
    ) {
        let make = || line_builder(Some(max), false, eol).build().unwrap();
        check(make, &input, &sz)?;
    }

    #[test]
    fn line_batch_discard_split_invariant(
        input in from_alphabet(LINE_BYTES, 24),
        max in 0usize..6,
        sz in sizes(),
    ) {
        let make = || {
            let lc = LineCodec::builder().max_length(max).overflow(OverflowPolicy::Discard).build().unwrap();
            Flat(LineBatchCodec::from(lc).with_max_lines(2), Default::default())
        };
        // Batches group lines by what is buffered: compare the lines.
        let whole = run(make(), &[&input]);
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        let one = run(make(), &bytes);
        prop_assert_eq!(lines_of(&whole), lines_of(&one), "{:?}", input);
        let sized = run(make(), &split_at_sizes(&input, &sz));
        prop_assert_eq!(lines_of(&whole), lines_of(&sized), "{:?}", input);
    }

    #[test]
    fn json_ndjson_and_limits_split_invariant(
        input in from_alphabet(JSON_TOKENS, 14),
        max_size in 1usize..16,
        max_depth in 0usize..4,
        ndjson in any::<bool>(),
        objects_only in any::<bool>(),
        sz in sizes(),
    ) {
        let make = || {
            let mut b = JsonCodec::<JsonValue>::builder();
            b.max_size(max_size).max_depth(max_depth).objects_only(objects_only).separate_every_text(ndjson);
            b.build()
        };
        check(make, &input, &sz)?;
        let make_raw = || {
            let mut b = JsonCodec::<JsonValue>::builder();
            b.max_size(max_size).max_depth(max_depth).objects_only(objects_only).separate_every_text(ndjson);
            b.build_raw()
        };
        check(make_raw, &input, &sz)?;
    }

    #[test]
    fn json_default_limits_ndjson_split_invariant(
        input in from_alphabet(JSON_TOKENS, 16),
        ndjson in any::<bool>(),
        sz in sizes(),
    ) {
        let make = || if ndjson { JsonCodec::<JsonValue>::ndjson() } else { JsonCodec::<JsonValue>::new() };
        check(make, &input, &sz)?;
    }
}

/// A batch decoder that hands out its lines one at a time.
struct Flat(LineBatchCodec, std::collections::VecDeque<Line>);

impl Flat {
    fn next(&mut self, got: Option<anyframe_codecs::LineBatch>) -> Option<Line> {
        if let Some(batch) = got {
            self.1
                .extend((0..batch.len()).filter_map(|i| batch.to_line(i)));
        }
        self.1.pop_front()
    }
}

impl Decoder for Flat {
    type Item = Line;
    type Error = Error;
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Error> {
        if let Some(l) = self.1.pop_front() {
            return Ok(Some(l));
        }
        let got = self.0.decode(buf)?;
        Ok(self.next(got))
    }
    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Error> {
        if let Some(l) = self.1.pop_front() {
            return Ok(Some(l));
        }
        let got = self.0.decode_eof(buf)?;
        Ok(self.next(got))
    }
}

/// The frames and errors of a run, without the consumed counts (a batch
/// consumes several lines at once).
fn lines_of(evs: &[Ev]) -> Vec<String> {
    evs.iter()
        .map(|e| match e {
            Ev::Frame(f, _) => f.clone(),
            Ev::Err(k, f, l, ..) => format!("err {k:?} {f} {l}"),
            Ev::EofErr(k, _) => format!("eof err {k:?}"),
            Ev::EofClean(n) => format!("eof {n}"),
        })
        .collect()
}

// ------------------------------------------------------------ round trips

fn json_value() -> impl Strategy<Value = JsonValue> {
    let leaf = prop_oneof![
        Just(JsonValue::Null),
        any::<bool>().prop_map(JsonValue::Bool),
        any::<i64>().prop_map(JsonValue::from),
        any::<u64>().prop_map(JsonValue::from),
        (-1e6f64..1e6).prop_map(JsonValue::from),
        "\\PC{0,8}".prop_map(JsonValue::from),
        "[\\x00-\\x1f\"\\\\/]{0,4}".prop_map(JsonValue::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(JsonValue::Array),
            prop::collection::btree_map("\\PC{0,4}", inner, 0..4)
                .prop_map(|m| JsonValue::Object(m.into_iter().collect())),
        ]
    })
}

/// Every encoder's output, split anywhere, decodes to what was encoded.
fn round_trip<D, F>(make: F, wire: &[u8], sz: &[usize]) -> Vec<D::Item>
where
    D: Decoder<Error = Error>,
    F: Fn() -> D,
{
    let mut dec = make();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for c in split_at_sizes(wire, sz) {
        buf.extend_from_slice(c);
        while let Some(f) = dec.decode(&mut buf).expect("decodes what was encoded") {
            out.push(f);
        }
    }
    while let Some(f) = dec.decode_eof(&mut buf).expect("ends cleanly") {
        out.push(f);
    }
    assert!(buf.is_empty(), "left over: {buf:?}");
    out
}

const SEPARATORS: [JsonSeparator; 4] = [
    JsonSeparator::Newline,
    JsonSeparator::CrLf,
    JsonSeparator::Space,
    JsonSeparator::Tab,
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn json_encode_then_decode_every_separator(
        values in prop::collection::vec(json_value(), 0..5),
        sep in prop::sample::select(SEPARATORS.to_vec()),
        every in any::<bool>(),
        sz in sizes(),
    ) {
        let build = || {
            let mut b = JsonCodec::<JsonValue>::builder();
            b.separator(sep).separate_every_text(every);
            b
        };
        let mut enc = build().build();
        let mut wire = BytesMut::new();
        for v in &values {
            enc.encode(v, &mut wire).unwrap();
        }
        let got = round_trip(|| build().build(), &wire, &sz);
        prop_assert_eq!(&got, &values);
        // The raw codec frames the same texts, and writes them back alike.
        let raw = round_trip(|| build().build_raw(), &wire, &sz);
        prop_assert_eq!(raw.len(), values.len());
        let mut again = BytesMut::new();
        let mut raw_enc = build().build_raw();
        for t in raw {
            raw_enc.encode(t, &mut again).unwrap();
        }
        prop_assert_eq!(&again[..], &wire[..]);
    }

    #[test]
    fn cbor_encode_then_decode(
        values in prop::collection::vec(json_value(), 0..5),
        sz in sizes(),
    ) {
        let mut enc = CborCodec::<JsonValue>::new();
        let mut wire = BytesMut::new();
        for v in &values {
            enc.encode(v, &mut wire).unwrap();
        }
        let got = round_trip(CborCodec::<JsonValue>::new, &wire, &sz);
        prop_assert_eq!(&got, &values);
        let vals = round_trip(CborCodec::<CborValue>::new, &wire, &sz);
        prop_assert_eq!(vals.len(), values.len());
        let raw = round_trip(RawCborCodec::new, &wire, &sz);
        prop_assert_eq!(raw.concat(), wire.to_vec());
    }

    #[test]
    fn length_prefixed_encode_then_decode(
        payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..4),
        format in prop::sample::select(PackFormat::ALL.to_vec()),
        sz in sizes(),
    ) {
        let mut wire = BytesMut::new();
        let mut sent = Vec::new();
        let mut enc = PackstringCodec::new(format);
        for p in &payloads {
            if enc.encode(p, &mut wire).is_ok() {
                sent.push(Bytes::copy_from_slice(p));
            } else {
                prop_assert!(p.len() as u64 > format.max_value());
            }
        }
        let got = round_trip(|| PackstringCodec::new(format), &wire, &sz);
        prop_assert_eq!(got, sent);

        let mut wire = BytesMut::new();
        for p in &payloads {
            NetstringCodec::new().encode(p, &mut wire).unwrap();
        }
        let got = round_trip(NetstringCodec::new, &wire, &sz);
        prop_assert_eq!(got, payloads.iter().map(|p| Bytes::copy_from_slice(p)).collect::<Vec<_>>());
    }

    #[test]
    fn line_encode_then_decode(
        lines in prop::collection::vec(from_alphabet(LINE_BYTES, 6), 0..5),
        eol in prop::sample::select(vec![None, Some(&b"\r\n"[..]), Some(&b"<END>"[..]), Some(&b"\n\n"[..]), Some(&b"\r"[..])]),
        sz in sizes(),
    ) {
        let build = || line_builder(None, false, eol).build().unwrap();
        let mut enc = build();
        let mut wire = BytesMut::new();
        let mut sent = Vec::new();
        for l in &lines {
            if enc.encode(&l[..], &mut wire).is_ok() {
                sent.push(l.clone());
            }
        }
        let got: Vec<Vec<u8>> = round_trip(build, &wire, &sz).into_iter().map(|l| l.line().to_vec()).collect();
        prop_assert_eq!(got, sent);
    }
}

#[test]
fn ber_round_trips_edge_values() {
    for v in [
        0u64,
        1,
        127,
        128,
        255,
        16383,
        16384,
        1 << 21,
        (1 << 56) - 1,
        1 << 56,
        1 << 63,
        u64::MAX,
    ] {
        let mut codec = PackstringCodec::with_max_length(PackFormat::Ber, 0);
        let mut buf = BytesMut::new();
        // The minimal BER encoding of `v`, built by hand.
        let mut prefix = Vec::new();
        let mut rest = v;
        let mut groups = vec![(rest & 0x7f) as u8];
        rest >>= 7;
        while rest > 0 {
            groups.push((rest & 0x7f) as u8 | 0x80);
            rest >>= 7;
        }
        groups.reverse();
        prefix.extend(groups);
        assert_eq!(prefix.len(), PackFormat::Ber.prefix_len(v), "{v}");
        buf.extend_from_slice(&prefix);
        if v == 0 {
            assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), "");
        } else {
            let e = codec.decode(&mut buf).unwrap_err();
            assert_eq!(
                (e.kind(), e.seen(), e.is_limit()),
                (ErrorKind::NoSpace, Some(v), true),
                "{v}"
            );
        }
        // The encoder writes the same prefix.
        if v < 1000 {
            let mut out = BytesMut::new();
            PackstringCodec::new(PackFormat::Ber)
                .encode(vec![0u8; v as usize], &mut out)
                .unwrap();
            assert_eq!(&out[..prefix.len()], &prefix[..], "{v}");
        }
    }
}

const NETSTRING_BYTES: &[&[u8]] = &[
    b"0", b"1", b"2", b"9", b":", b",", b"a", b"3:abc,", b"x", b"-",
];

fn cbor_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        any::<u8>().prop_map(|b| vec![b]),
        prop::sample::select(vec![
            vec![0x9f],
            vec![0xbf],
            vec![0xff],
            vec![0x5f],
            vec![0x7f],
            vec![0x41, 0x00],
            vec![0x61, 0xc3],
            vec![0x62, 0xc3, 0xa9],
            vec![0xc2],
            vec![0xd8, 0x20],
            vec![0x18],
            vec![0x19, 0x01],
            vec![0xf8, 0x10],
            vec![0xf8, 0x20],
            vec![0xf9, 0x7e, 0x00],
            vec![0x81],
            vec![0xa1],
            vec![0x01],
            vec![0x60],
            vec![0x40],
            vec![0x1c],
        ]),
    ];
    prop::collection::vec(piece, 0..10).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn netstring_small_limits_split_invariant(
        input in from_alphabet(NETSTRING_BYTES, 12),
        max in 0usize..25,
        sz in sizes(),
    ) {
        check(|| NetstringCodec::with_max_length(max), &input, &sz)?;
    }

    #[test]
    fn packstring_small_limits_split_invariant(
        input in prop::collection::vec(prop::sample::select(vec![0u8, 1, 2, 3, 0x7f, 0x80, 0x81, 0xff]), 0..16),
        format in prop::sample::select(PackFormat::ALL.to_vec()),
        max in 0usize..5,
        sz in sizes(),
    ) {
        check(|| PackstringCodec::with_max_length(format, max), &input, &sz)?;
    }

    #[test]
    fn cbor_small_limits_split_invariant(
        input in cbor_bytes(),
        max_size in 1usize..12,
        max_depth in prop::sample::select(vec![0usize, 1, 2, 63, 64, 65, 128]),
        sz in sizes(),
    ) {
        check(|| CborCodec::<CborValue>::with_limits(max_size, max_depth), &input, &sz)?;
        check(|| CborCodec::<JsonValue>::with_limits(max_size, max_depth), &input, &sz)?;
        check(|| RawCborCodec::with_limits(max_size, max_depth), &input, &sz)?;
    }

    #[test]
    fn cbor_default_limits_split_invariant(input in cbor_bytes(), sz in sizes()) {
        check(CborCodec::<CborValue>::new, &input, &sz)?;
    }

    #[test]
    fn tls_detect_split_invariant(
        input in prop::collection::vec(prop::sample::select(vec![0x16u8, 3, 4, 1, 0x40, 0x41, 0x80, 0xff, 0, 5, b'G']), 0..8),
        strict in any::<bool>(),
        sslv2 in any::<bool>(),
        sz in sizes(),
    ) {
        // Consumes nothing: compare the verdict after every piece with the
        // verdict on that prefix.
        let make = || if strict { TlsDetectCodec::strict() } else { TlsDetectCodec::new() }.sslv2(sslv2);
        let whole = make().decode_eof(&mut BytesMut::from(&input[..])).map_err(|e| e.kind());
        let mut buf = BytesMut::new();
        let mut dec = make();
        let mut first: Option<TlsDetect> = None;
        for c in split_at_sizes(&input, &sz) {
            buf.extend_from_slice(c);
            if let Some(v) = dec.decode(&mut buf).unwrap() {
                first.get_or_insert(v);
                prop_assert_eq!(Ok(Some(v)), whole);
            }
            prop_assert_eq!(buf.len(), input.len().min(buf.len()));
        }
        let end = dec.decode_eof(&mut buf).map_err(|e| e.kind());
        prop_assert_eq!(&end, &whole);
        if let Some(v) = first {
            prop_assert_eq!(end, Ok(Some(v)));
        }
    }
}

const JSON_HOSTILE: &[&[u8]] = &[
    b"\"",
    b"\xc3",
    b"\xa9",
    b"\xe2\x82",
    b"\xac",
    b"\xf0\x9f",
    b"\x98\x80",
    b"\xed\xa0\x80",
    b"\xc0\xaf",
    b"\xff",
    b"\\u",
    b"d83d",
    b"00e9",
    b"\\n",
    b"\\",
    b"1",
    b"0",
    b"-",
    b".",
    b"E",
    b"+",
    b"e",
    b" ",
    b"\n",
    b"[",
    b"]",
    b"{",
    b"}",
    b":",
    b",",
    b"\x01",
    b"tr",
    b"ue",
    b"n",
    b"ull",
    b"fals",
    b"\xef\xbb\xbf",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn json_split_inside_characters_and_numbers(
        input in from_alphabet(JSON_HOSTILE, 12),
        ndjson in any::<bool>(),
        sz in sizes(),
    ) {
        let make = || if ndjson { JsonCodec::<JsonValue>::ndjson() } else { JsonCodec::<JsonValue>::new() };
        check(make, &input, &sz)?;
        check(JsonCodec::<String>::new, &input, &sz)?;
        check(RawJsonCodec::new, &input, &sz)?;
    }
}

// ------------------------------------------------------------ CBOR depth

fn cbor_first(max_depth: usize, item: &[u8]) -> Result<bool, (ErrorKind, bool, usize)> {
    let mut buf = BytesMut::from(item);
    RawCborCodec::with_limits(1024, max_depth)
        .decode(&mut buf)
        .map(|f| f.is_some())
        .map_err(|e| (e.kind(), e.is_limit(), buf.len()))
}

/// An empty array or map is a level of nesting like any other: the limit
/// does not depend on whether it has items or on its length encoding, as
/// for JSON, where `[]` is one level.
#[test]
fn cbor_depth_limit_counts_empty_definite_containers() {
    let too_deep = Err((ErrorKind::BadMessage, true, 0));
    for empty in [
        &[0x80][..],
        &[0xa0],
        &[0x98, 0x00],
        &[0xb9, 0x00, 0x00],
        &[0x9f, 0xff],
        &[0xbf, 0xff],
    ] {
        assert_eq!(cbor_first(1, empty), Ok(true), "{empty:02x?}");
        let mut nested = vec![0x81];
        nested.extend_from_slice(empty);
        assert_eq!(cbor_first(2, &nested), Ok(true), "{nested:02x?}");
        assert_eq!(
            cbor_first(1, &nested).map_err(|(k, l, _)| (k, l)),
            Err((ErrorKind::BadMessage, true)),
            "{nested:02x?}"
        );
        assert_eq!(
            cbor_first(0, empty).map_err(|(k, l, n)| (k, l, n - empty.len())),
            too_deep,
            "{empty:02x?}"
        );
    }
    // A tag over an empty array: two levels.
    assert_eq!(cbor_first(2, &[0xc1, 0x80]), Ok(true));
    assert!(cbor_first(1, &[0xc1, 0x80]).is_err());
    // The typed decoder agrees, on the fast path and off it.
    let mut buf = BytesMut::from(&[0x81, 0x80][..]);
    let e = CborCodec::<CborValue>::with_limits(1024, 1)
        .decode(&mut buf)
        .unwrap_err();
    assert!(e.is_limit() && buf.len() == 2, "{e:?}");
    // The JSON codec counts the same way.
    let mut buf = BytesMut::from(&b"[[]]"[..]);
    let e = JsonCodec::<JsonValue>::builder()
        .max_depth(1)
        .build()
        .decode(&mut buf)
        .unwrap_err();
    assert!(e.is_limit() && buf.len() == 4, "{e:?}");
}

// ------------------------------------------------------------ line batches

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn line_batch_gives_line_codec_lines_for_every_eol(
        input in from_alphabet(LINE_BYTES, 24),
        max in 0usize..6,
        discard in any::<bool>(),
        eol in 0usize..7,
        max_lines in 1usize..4,
        sz in sizes(),
    ) {
        let build = || {
            let mut b = LineCodec::builder();
            b.max_length(max);
            if discard {
                b.overflow(OverflowPolicy::Discard);
            }
            match eol {
                0 => {}
                1 => { b.eol("\r\n"); }
                2 => { b.eol("<END>"); }
                3 => { b.eol("\n\n"); }
                4 => { b.eol_regex(regex::bytes::Regex::new(r"\r\n|\n").unwrap()); }
                5 => { b.eol_regex(regex::bytes::Regex::new(r"(?:<END>)+").unwrap()); }
                _ => { b.eol_regex(regex::bytes::Regex::new(r"\n\b").unwrap()); }
            }
            b.build().unwrap()
        };
        let chunks = split_at_sizes(&input, &sz);
        let one = run(build(), &chunks);
        let batched = run(Flat(LineBatchCodec::from(build()).with_max_lines(max_lines), Default::default()), &chunks);
        prop_assert_eq!(lines_of(&one), lines_of(&batched), "{:?}", input);
    }
}

// ------------------------------------------------------------ CBOR values

fn cbor_value() -> impl Strategy<Value = CborValue> {
    let leaf = prop_oneof![
        Just(CborValue::Null),
        any::<bool>().prop_map(CborValue::Bool),
        (-(1i128 << 64)..(1i128 << 64)).prop_map(CborValue::Integer),
        any::<u64>().prop_map(|n| CborValue::Integer(n.into())),
        any::<u64>().prop_map(|n| CborValue::Integer(-1 - i128::from(n))),
        any::<f64>().prop_map(CborValue::Float),
        prop::sample::select(vec![0.0, -0.0, f64::NAN, f64::INFINITY, 65504.0, 1e-7])
            .prop_map(CborValue::Float),
        prop::collection::vec(any::<u8>(), 0..30).prop_map(CborValue::Bytes),
        "\\PC{0,10}".prop_map(CborValue::Text),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(CborValue::Array),
            prop::collection::btree_map(inner.clone(), inner.clone(), 0..4)
                .prop_map(CborValue::Map),
            (any::<u64>(), inner).prop_map(|(t, v)| CborValue::Tag(t, Box::new(v))),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn cbor_values_encode_then_decode(
        values in prop::collection::vec(cbor_value(), 0..4),
        sz in sizes(),
    ) {
        let mut enc = CborCodec::<CborValue>::new();
        let mut wire = BytesMut::new();
        let mut sent = Vec::new();
        for v in &values {
            let before = wire.len();
            match enc.encode(v, &mut wire) {
                Ok(()) => sent.push(v.clone()),
                Err(e) => {
                    prop_assert_eq!(e.kind(), ErrorKind::InvalidInput);
                    prop_assert_eq!(wire.len(), before, "nothing written");
                }
            }
        }
        let got = round_trip(CborCodec::<CborValue>::new, &wire, &sz);
        prop_assert_eq!(format!("{got:?}"), format!("{sent:?}"));
        let raw = round_trip(RawCborCodec::new, &wire, &sz);
        prop_assert_eq!(raw.concat(), wire.to_vec());
    }
}

// ------------------------------------------------------------ after an error

/// Feeds `chunks`; on an error that consumed nothing, drops `skip` bytes
/// (at least one) as a caller resynchronising would, and goes on, with the
/// same decoder or (`fresh`) a new one. The events must not differ: after
/// such an error the codec keeps nothing of the bytes it looked at.
fn run_skipping<D, F>(make: F, chunks: &[&[u8]], skip: usize, fresh: bool) -> Vec<String>
where
    D: Decoder<Error = Error>,
    D::Item: Debug,
    F: Fn() -> D,
{
    let mut dec = make();
    let mut buf = BytesMut::new();
    let mut evs = Vec::new();
    for c in chunks {
        buf.extend_from_slice(c);
        for guard in 0.. {
            assert!(guard < 10_000, "loops");
            let before = buf.len();
            match dec.decode(&mut buf) {
                Ok(Some(f)) => evs.push(format!("{f:?}")),
                Ok(None) => break,
                Err(e) => {
                    evs.push(format!("err {:?} {:?}", e.kind(), e.offset()));
                    if e.is_fatal() {
                        return evs;
                    }
                    if buf.len() == before {
                        let n = skip.clamp(1, buf.len().max(1)).min(buf.len());
                        let _ = buf.split_to(n);
                        if buf.is_empty() {
                            break;
                        }
                    }
                    if fresh {
                        dec = make();
                    }
                }
            }
        }
    }
    match dec.decode_eof(&mut buf) {
        Ok(f) => evs.push(format!("eof {f:?}")),
        Err(e) => evs.push(format!("eof err {:?}", e.kind())),
    }
    evs
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn after_an_error_a_codec_reads_like_a_fresh_one(
        json in from_alphabet(JSON_HOSTILE, 12),
        cbor in cbor_bytes(),
        net in from_alphabet(NETSTRING_BYTES, 12),
        ndjson in any::<bool>(),
        skip in 1usize..4,
        sz in sizes(),
    ) {
        let chunks = split_at_sizes(&json, &sz);
        let mk = || {
            let mut b = JsonCodec::<JsonValue>::builder();
            b.max_size(8).max_depth(2).separate_every_text(ndjson);
            b.build()
        };
        prop_assert_eq!(run_skipping(mk, &chunks, skip, false), run_skipping(mk, &chunks, skip, true));
        let mk = || {
            let mut b = JsonCodec::<JsonValue>::builder();
            b.max_size(8).max_depth(2).separate_every_text(ndjson);
            b.build_raw()
        };
        prop_assert_eq!(run_skipping(mk, &chunks, skip, false), run_skipping(mk, &chunks, skip, true));
        let chunks = split_at_sizes(&cbor, &sz);
        let mk = || CborCodec::<CborValue>::with_limits(8, 2);
        prop_assert_eq!(run_skipping(mk, &chunks, skip, false), run_skipping(mk, &chunks, skip, true));
        let mk = || RawCborCodec::with_limits(8, 2);
        prop_assert_eq!(run_skipping(mk, &chunks, skip, false), run_skipping(mk, &chunks, skip, true));
        let chunks = split_at_sizes(&net, &sz);
        let mk = || NetstringCodec::with_max_length(20);
        prop_assert_eq!(run_skipping(mk, &chunks, skip, false), run_skipping(mk, &chunks, skip, true));
        let mk = || anyframe_codecs::RegexCodec::builder(regex::bytes::Regex::new(";|,,").unwrap())
            .reject(regex::bytes::Regex::new("x").unwrap())
            .skip(regex::bytes::Regex::new("^[0-9]+").unwrap())
            .max_length(6)
            .build()
            .unwrap();
        prop_assert_eq!(run_skipping(mk, &chunks, skip, false), run_skipping(mk, &chunks, skip, true));
    }
}
