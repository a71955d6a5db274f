//! The codecs' contract (docs/semantics.md §2, §2a and each codec's
//! rustdoc) checked across codecs: the same frames, errors and consumed
//! bytes however the input is split, against serde_json, serde_cbor and a
//! full-window model of AnyEvent's regex read; bounded memory for declared
//! lengths; linear time fed a byte at a time.

mod support;

use std::fmt::Debug;

use anyframe_codecs::{
    CborCodec, CborValue, ChunkCodec, Error, ErrorKind, JsonCodec, JsonValue, LineBatchCodec,
    LineCodec, NetstringCodec, OverflowPolicy, PackFormat, PackstringCodec, RawCborCodec,
    RegexCodec, TlsDetect, TlsDetectCodec, Utf8LineCodec,
};
use bytes::BytesMut;
use proptest::prelude::*;
use regex::bytes::Regex;
use support::split_at_sizes;
use tokio_util::codec::{Decoder, Encoder};

/// One observable event of a run: a frame (its Debug form), or an error
/// with its kind, fatality, and the total consumed so far after it.
#[derive(Debug, Clone, PartialEq)]
enum Ev {
    Frame(String, usize),
    Err(ErrorKind, bool, usize),
    EofErr(ErrorKind, usize),
    EofClean(usize),
}

/// Feeds `chunks` to `dec`; after each chunk decodes until it waits. A
/// non-fatal error that consumed bytes is recorded and decoding goes on
/// (the codec documents that it stays usable); a fatal error, or one that
/// consumed nothing (it would repeat), ends the run. Then `decode_eof`.
fn run<D>(mut dec: D, chunks: &[&[u8]]) -> Vec<Ev>
where
    D: Decoder<Error = Error>,
    D::Item: Debug,
{
    let mut buf = BytesMut::new();
    let mut fed = 0usize;
    let mut evs = Vec::new();
    let consumed = |buf: &BytesMut, fed: usize| fed - buf.len();
    for c in chunks {
        buf.extend_from_slice(c);
        fed += c.len();
        let mut guard = 0;
        loop {
            guard += 1;
            assert!(guard < 100_000, "decoder loops");
            let before = buf.len();
            match dec.decode(&mut buf) {
                Ok(Some(f)) => evs.push(Ev::Frame(format!("{f:?}"), consumed(&buf, fed))),
                Ok(None) => {
                    break;
                }
                Err(e) => {
                    evs.push(Ev::Err(e.kind(), e.is_fatal(), consumed(&buf, fed)));
                    if e.is_fatal() || buf.len() == before {
                        return evs;
                    }
                }
            }
        }
    }
    let mut guard = 0;
    loop {
        guard += 1;
        assert!(guard < 100_000, "decode_eof loops");
        let before = buf.len();
        match dec.decode_eof(&mut buf) {
            Ok(Some(f)) => evs.push(Ev::Frame(format!("{f:?}"), consumed(&buf, fed))),
            Ok(None) => {
                evs.push(Ev::EofClean(buf.len()));
                return evs;
            }
            Err(e) if !e.is_fatal() && buf.len() != before => {
                evs.push(Ev::Err(e.kind(), e.is_fatal(), consumed(&buf, fed)));
            }
            Err(e) => {
                evs.push(Ev::EofErr(e.kind(), buf.len()));
                return evs;
            }
        }
    }
}

/// Whole vs one byte at a time vs the given sizes.
fn check_invariant<D, F>(make: F, input: &[u8], sizes: &[usize]) -> Result<(), TestCaseError>
where
    D: Decoder<Error = Error>,
    D::Item: Debug,
    F: Fn() -> D,
{
    let whole = run(make(), &[input]);
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    let bytewise = run(make(), &bytes);
    prop_assert_eq!(&bytewise, &whole, "bytewise vs whole on {:?}", input);
    let sized = run(make(), &split_at_sizes(input, sizes));
    prop_assert_eq!(&sized, &whole, "sizes {:?} vs whole on {:?}", sizes, input);
    Ok(())
}

fn from_alphabet(alpha: &'static [&'static [u8]], max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(alpha.to_vec()), 0..max).prop_map(|v| v.concat())
}

fn sizes() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..7, 1..6)
}

// ---------------------------------------------------------------- line

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn line_default_split_invariant(
        input in from_alphabet(&[b"a", b"\r", b"\n", b"\r\n", b"bb"], 24),
        max in 0usize..6,
        discard in any::<bool>(),
        sz in sizes(),
    ) {
        let policy = if discard { OverflowPolicy::Discard } else { OverflowPolicy::Fatal };
        check_invariant(
            || LineCodec::builder().max_length(max).overflow(policy).build().unwrap(),
            &input,
            &sz,
        )?;
    }

    #[test]
    fn line_literal_split_invariant(
        input in from_alphabet(&[b"a", b"b", b"\r", b"\n", b"ab", b"aab"], 24),
        eol in prop::sample::select(vec![&b"\r\n"[..], b"aab", b"ab", b"aa", b"aba"]),
        max in 0usize..6,
        discard in any::<bool>(),
        sz in sizes(),
    ) {
        let policy = if discard { OverflowPolicy::Discard } else { OverflowPolicy::Fatal };
        check_invariant(
            || LineCodec::builder().eol(eol).max_length(max).overflow(policy).build().unwrap(),
            &input,
            &sz,
        )?;
    }

    /// LineBatchCodec gives the same lines and errors as LineCodec.
    #[test]
    fn line_batch_matches_line(
        input in from_alphabet(&[b"a", b"\r", b"\n", b"\r\n", b"bb"], 24),
        max in 0usize..6,
        discard in any::<bool>(),
        sz in sizes(),
    ) {
        let policy = if discard { OverflowPolicy::Discard } else { OverflowPolicy::Fatal };
        let mk = || LineCodec::builder().max_length(max).overflow(policy).build().unwrap();
        let chunks = split_at_sizes(&input, &sz);
        let a = flatten_lines(run(mk(), &chunks));
        let b = flatten_lines(run(LineBatchCodec::from(mk()).with_max_lines(3), &chunks));
        prop_assert_eq!(a, b);
    }

    #[test]
    fn utf8_line_split_invariant(
        input in from_alphabet(UTF8_TOKENS, 20),
        max in 0usize..8,
        sz in sizes(),
    ) {
        check_invariant(
            || LineCodec::builder().max_length(max).overflow(OverflowPolicy::Discard).build_utf8().unwrap(),
            &input,
            &sz,
        )?;
    }
}

const UTF8_TOKENS: &[&[u8]] = &[
    b"a",
    b"\n",
    b"\r",
    b"\xc3",
    b"\xa9",
    b"\xc3\xa9",
    b"\xf0\x9f\x98\x80",
    b"\xf0\x9f",
];

/// Reduces line events to the line texts and errors (batches flattened).
fn flatten_lines(evs: Vec<Ev>) -> Vec<String> {
    let mut out = Vec::new();
    for e in evs {
        match e {
            Ev::Frame(s, _) => {
                // A LineBatch's Debug lists its lines; a Line's is one. Keep
                // only the quoted byte strings.
                let mut rest = s.as_str();
                while let Some(i) = rest.find("b\"") {
                    let tail = &rest[i + 2..];
                    let mut end = 0;
                    let bytes = tail.as_bytes();
                    while end < bytes.len() {
                        if bytes[end] == b'\\' {
                            end += 2;
                            continue;
                        }
                        if bytes[end] == b'"' {
                            break;
                        }
                        end += 1;
                    }
                    out.push(tail[..end].to_string());
                    rest = &tail[(end + 1).min(tail.len())..];
                }
            }
            other => out.push(format!("{other:?}").replace("Frame", "")),
        }
    }
    out
}

// ---------------------------------------------------------------- netstring

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn netstring_split_invariant(
        input in from_alphabet(&[b"0", b"1", b"2", b"3", b":", b",", b"a", b"3:abc,", b"0:,", b"1:x"], 16),
        max in 0usize..25,
        sz in sizes(),
    ) {
        check_invariant(|| NetstringCodec::with_max_length(max), &input, &sz)?;
    }

    #[test]
    fn packstring_split_invariant(
        input in prop::collection::vec(prop::sample::select(vec![0u8, 1, 2, 3, 0x7f, 0x80, 0x81, 0xff, b'a']), 0..24),
        fmt in prop::sample::select(PackFormat::ALL.to_vec()),
        max in 0usize..6,
        sz in sizes(),
    ) {
        check_invariant(|| PackstringCodec::with_max_length(fmt, max), &input, &sz)?;
    }

    #[test]
    fn packstring_roundtrip(
        payload in prop::collection::vec(any::<u8>(), 0..300),
        fmt in prop::sample::select(PackFormat::ALL.to_vec()),
    ) {
        let mut c = PackstringCodec::new(fmt);
        let mut buf = BytesMut::new();
        match c.encode(&payload, &mut buf) {
            Ok(()) => {
                prop_assert_eq!(buf.len(), fmt.prefix_len(payload.len() as u64) + payload.len());
                let got = c.decode(&mut buf).unwrap().unwrap();
                prop_assert_eq!(&got[..], &payload[..]);
                prop_assert!(buf.is_empty());
            }
            Err(e) => {
                prop_assert!(payload.len() as u64 > fmt.max_value());
                prop_assert_eq!(e.kind(), ErrorKind::InvalidInput);
                prop_assert!(buf.is_empty());
            }
        }
    }

    #[test]
    fn chunk_split_invariant(
        input in prop::collection::vec(any::<u8>(), 0..20),
        n in 1usize..6,
        sz in sizes(),
    ) {
        check_invariant(|| ChunkCodec::for_stream(n).unwrap(), &input, &sz)?;
    }

    #[test]
    fn tls_detect_split_invariant(
        input in prop::collection::vec(prop::sample::select(vec![0x16u8, 3, 4, 1, 0, 0x40, 0x41, 0x80, 0xff, b'G']), 0..8),
        strict in any::<bool>(),
        v2 in any::<bool>(),
    ) {
        let mk = || {
            let c = if strict { TlsDetectCodec::strict() } else { TlsDetectCodec::new() };
            c.sslv2(v2)
        };
        // TlsDetect repeats its verdict forever: compare the first verdict only.
        let first = |chunks: &[&[u8]]| {
            let mut c = mk();
            let mut buf = BytesMut::new();
            for ch in chunks {
                buf.extend_from_slice(ch);
                if let Some(v) = c.decode(&mut buf).unwrap() {
                    assert_eq!(buf.len(), { let mut n = 0; for x in chunks { n += x.len(); if std::ptr::eq(*x, *ch) { break; } } n });
                    return Ok::<_, ErrorKind>(Some(v));
                }
            }
            c.decode_eof(&mut buf).map_err(|e| e.kind())
        };
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        prop_assert_eq!(first(&[&input]), first(&bytes));
    }
}

// ---------------------------------------------------------------- json

const JSON_TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\"a\"",
    b"\"",
    b"1",
    b"0",
    b"-",
    b".",
    b"e",
    b"2",
    b"true",
    b"tr",
    b"ue",
    b"null",
    b" ",
    b"\n",
    b"\r",
    b"\t",
    b"\\",
    b"u",
    b"\\ud800",
    b"\\udc00",
    b"\xc3\xa9",
    b"\xc3",
    b"\xff",
    b"x",
    b"1e400",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn json_value_split_invariant(
        input in from_alphabet(JSON_TOKENS, 14),
        max_size in 1usize..20,
        max_depth in 0usize..4,
        nd in any::<bool>(),
        sz in sizes(),
    ) {
        let mk = || {
            let mut b = JsonCodec::<JsonValue>::builder();
            b.max_size(max_size).max_depth(max_depth);
            if nd { b.separate_every_text(true); }
            b.build()
        };
        check_invariant(mk, &input, &sz)?;
    }

    #[test]
    fn json_raw_split_invariant(
        input in from_alphabet(JSON_TOKENS, 14),
        max_size in 1usize..20,
        max_depth in 0usize..4,
        sz in sizes(),
    ) {
        let mk = || {
            let mut b = JsonCodec::<JsonValue>::builder();
            b.max_size(max_size).max_depth(max_depth);
            b.build_raw()
        };
        check_invariant(mk, &input, &sz)?;
    }

    /// Well-formed single texts: the codec agrees with serde_json.
    #[test]
    fn json_agrees_with_serde_json(input in from_alphabet(JSON_TOKENS, 10)) {
        let mut buf = BytesMut::from(&input[..]);
        buf.extend_from_slice(b"\n");
        let ours = JsonCodec::<JsonValue>::new().decode(&mut buf);
        let theirs: Result<JsonValue, _> = serde_json::from_slice(&input);
        if let Ok(v) = &theirs {
            let ours = ours.as_ref().map_err(|e| format!("{e}"));
            prop_assert_eq!(ours, Ok(&Some(v.clone())), "input {:?}", String::from_utf8_lossy(&input));
        }
    }

    /// The fast path (window sized by the last text) and the scanner
    /// path must give the same results: a big first text, then small ones.
    #[test]
    fn json_fast_path_matches_scanner(
        input in from_alphabet(JSON_TOKENS, 14),
        sz in sizes(),
    ) {
        let mut full = Vec::new();
        full.extend_from_slice(b"[");
        full.extend(std::iter::repeat_n(b"1,", 200).flatten());
        full.extend_from_slice(b"1]\n");
        full.extend_from_slice(&input);
        check_invariant(JsonCodec::<JsonValue>::new, &full, &sz)?;
    }
}

// ---------------------------------------------------------------- cbor

fn cbor_bytes() -> impl Strategy<Value = Vec<u8>> {
    let tokens: Vec<Vec<u8>> = vec![
        vec![0x00],
        vec![0x17],
        vec![0x18, 0x18],
        vec![0x18],
        vec![0x19, 0x01, 0x00],
        vec![0x20],
        vec![0x38, 0xff],
        vec![0x3b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        vec![0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        vec![0x40],
        vec![0x41, 0x61],
        vec![0x42],
        vec![0x5f],
        vec![0x60],
        vec![0x61, 0x61],
        vec![0x62, 0xc3, 0xa9],
        vec![0x62, 0xc3, 0x28],
        vec![0x7f],
        vec![0x80],
        vec![0x81],
        vec![0x82],
        vec![0x9f],
        vec![0xa0],
        vec![0xa1],
        vec![0xbf],
        vec![0xc0],
        vec![0xc1],
        vec![0xd8, 0x20],
        vec![0xf4],
        vec![0xf5],
        vec![0xf6],
        vec![0xf7],
        vec![0xf0],
        vec![0xf8, 0x10],
        vec![0xf8, 0x20],
        vec![0xf9, 0x3c, 0x00],
        vec![0xf9, 0x7e, 0x00],
        vec![0xf9, 0x7c, 0x01],
        vec![0xf9, 0x80, 0x00],
        vec![0xfa, 0x7f, 0xc0, 0x00, 0x01],
        vec![0xfb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0],
        vec![0xff],
        vec![0x1c],
        vec![0x5b, 0, 0, 0, 1, 0, 0, 0, 0],
        vec![0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        vec![0xbb, 0x80, 0, 0, 0, 0, 0, 0, 0],
    ];
    prop::collection::vec(prop::sample::select(tokens), 0..10).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn cbor_value_split_invariant(
        input in cbor_bytes(),
        max_size in 1usize..40,
        max_depth in prop::sample::select(vec![0usize, 1, 2, 64, 65, 128]),
        sz in sizes(),
    ) {
        check_invariant(|| CborCodec::<CborValue>::with_limits(max_size, max_depth), &input, &sz)?;
        check_invariant(|| RawCborCodec::with_limits(max_size, max_depth), &input, &sz)?;
    }

    /// Whole input (fast path) vs serde_cbor on the same single item.
    #[test]
    fn cbor_value_agrees_with_serde_cbor(input in cbor_bytes()) {
        let mut buf = BytesMut::from(&input[..]);
        let ours = CborCodec::<CborValue>::new().decode(&mut buf);
        let mut de = serde_cbor::Deserializer::from_slice(&input);
        let theirs: Result<CborValue, _> = serde::Deserialize::deserialize(&mut de);
        if let (Ok(Some(o)), Ok(t)) = (&ours, &theirs) {
            prop_assert_eq!(format!("{o:?}"), format!("{t:?}"));
            prop_assert_eq!(input.len() - buf.len(), de.byte_offset());
        }
        if let (Ok(Some(o)), Err(t)) = (&ours, &theirs) {
            prop_assert!(false, "ours {:?}, serde_cbor {}", o, t);
        }
    }
}

// ---------------------------------------------------------------- regex

/// AE's regex read type on every arrival: the full-window model the codec
/// promises to equal ("the same result as a search of the whole window").
fn regex_model(
    accept: &Regex,
    reject: Option<&Regex>,
    skip: Option<&Regex>,
    max: usize,
    chunks: &[&[u8]],
) -> Vec<Ev> {
    let mut buf: Vec<u8> = Vec::new();
    let mut skipped = 0usize;
    let mut fed = 0;
    let mut evs = Vec::new();
    let mut consumed = 0;
    let step =
        |buf: &mut Vec<u8>, skipped: &mut usize, eof: bool| -> Result<Option<Vec<u8>>, ErrorKind> {
            let len = buf.len();
            let wend = len.min(max);
            let from = (*skipped).min(wend);
            let w = &buf[from..wend];
            // first non-empty-frame accept match
            let mut acc = None;
            let mut at = 0;
            while at <= w.len() {
                match accept.find_at(w, at) {
                    Some(m) if from + m.end() == 0 => at = m.end() + 1,
                    Some(m) => {
                        acc = Some(m.end());
                        break;
                    }
                    None => break,
                }
            }
            let _ = eof;
            if let Some(end) = acc {
                let f: Vec<u8> = buf.drain(..from + end).collect();
                *skipped = 0;
                return Ok(Some(f));
            }
            if len > max {
                return Err(ErrorKind::NoSpace);
            }
            if let Some(r) = reject
                && r.find(w).is_some()
            {
                *skipped = 0;
                return Err(ErrorKind::BadMessage);
            }
            if let Some(s) = skip
                && let Some(m) = s.find(w)
            {
                *skipped = from + m.end();
            }
            Ok(None)
        };
    for c in chunks {
        buf.extend_from_slice(c);
        fed += c.len();
        loop {
            match step(&mut buf, &mut skipped, false) {
                Ok(Some(f)) => {
                    consumed += f.len();
                    evs.push(Ev::Frame(format!("{:?}", bytes::Bytes::from(f)), consumed));
                }
                Ok(None) => break,
                Err(k) => {
                    evs.push(Ev::Err(k, k == ErrorKind::NoSpace, consumed));
                    return evs;
                }
            }
        }
    }
    let _ = fed;
    loop {
        match step(&mut buf, &mut skipped, true) {
            Ok(Some(f)) => {
                consumed += f.len();
                evs.push(Ev::Frame(format!("{:?}", bytes::Bytes::from(f)), consumed));
            }
            Ok(None) if buf.is_empty() => {
                evs.push(Ev::EofClean(0));
                return evs;
            }
            Ok(None) => {
                evs.push(Ev::EofErr(ErrorKind::BrokenPipe, buf.len()));
                return evs;
            }
            Err(k) => {
                evs.push(Ev::EofErr(k, buf.len()));
                return evs;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn regex_codec_equals_full_window_model(
        input in from_alphabet(&[b"a", b"b", b";", b" ", b"\n", b"E", b"N", b"D", b"\xc3\xa9"], 20),
        acc in prop::sample::select(vec![r"END", r"a;|ab;", r"\bb;", r";\n", r"(?m)^a$", r"b{2,3};", r"\w\b;", r"(?-u)\xc3"]),
        rej in prop::sample::select(vec![None, Some(r"NN"), Some(r"\n\n")]),
        skp in prop::sample::select(vec![None, Some(r"^a+"), Some(r"(?m)^[^;]*\n"), Some(r"^ ")]),
        max in prop::sample::select(vec![4usize, 7, 1000]),
        sz in sizes(),
    ) {
        let a = Regex::new(acc).unwrap();
        let r = rej.map(|p| Regex::new(p).unwrap());
        let s = skp.map(|p| Regex::new(p).unwrap());
        let mut b = RegexCodec::builder(a.clone());
        if let Some(r) = &r { b.reject(r.clone()); }
        if let Some(s) = &s { b.skip(s.clone()); }
        b.max_length(max);
        let codec = match b.build() { Ok(c) => c, Err(_) => return Ok(()) };
        let chunks = split_at_sizes(&input, &sz);
        let got = run(codec, &chunks);
        let want = regex_model(&a, r.as_ref(), s.as_ref(), max, &chunks);
        // The codec's run stops at a non-fatal reject (nothing consumed);
        // the model stops at every error.
        prop_assert_eq!(got, want, "chunks {:?}", chunks);
    }
}

// ---------------------------------------------------------------- targeted

/// A 4-byte prefix declaring 4 GiB (and a `w` declaring 2^63) allocates
/// nothing near the declared size.
#[test]
fn declared_lengths_do_not_allocate() {
    for (fmt, prefix) in [
        (PackFormat::U32Be, vec![0xff, 0xff, 0xff, 0xff]),
        (PackFormat::U64Le, vec![0xff; 8]),
        (PackFormat::Ber, vec![0x8f, 0xff, 0xff, 0xff, 0x7f]),
    ] {
        let mut c = PackstringCodec::with_max_length(fmt, usize::MAX);
        let mut buf = BytesMut::from(&prefix[..]);
        assert!(c.decode(&mut buf).unwrap().is_none());
        assert!(
            buf.capacity() <= 128 * 1024,
            "{fmt}: capacity {}",
            buf.capacity()
        );
        buf.extend_from_slice(b"abc");
        assert!(c.decode(&mut buf).unwrap().is_none());
        assert!(
            buf.capacity() <= 256 * 1024,
            "{fmt}: capacity {}",
            buf.capacity()
        );
    }
    let mut c = NetstringCodec::with_max_length(usize::MAX);
    let mut buf = BytesMut::from(&b"99999999999999:"[..]);
    assert!(c.decode(&mut buf).unwrap().is_none());
    assert!(buf.capacity() <= 128 * 1024);
    let mut c = ChunkCodec::new(1 << 40);
    let mut buf = BytesMut::from(&b"x"[..]);
    assert!(c.decode(&mut buf).unwrap().is_none());
    assert!(buf.capacity() <= 128 * 1024);
    let mut c = RawCborCodec::with_limits(usize::MAX, 128);
    let mut buf = BytesMut::from(&[0x5b, 0, 0, 1, 0, 0, 0, 0, 0, 0][..]);
    assert!(c.decode(&mut buf).unwrap().is_none());
    assert!(buf.capacity() <= 128 * 1024);
}

/// A netstring with max_length usize::MAX and a 25-digit length: the
/// value overflows u64; must be ENOSPC (fatal), not a panic or wrap.
#[test]
fn netstring_huge_digits_with_unbounded_limit() {
    let mut c = NetstringCodec::with_max_length(usize::MAX);
    let mut buf = BytesMut::from(&b"99999999999999999999999:"[..]);
    let e = c.decode(&mut buf).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSpace);
    assert!(e.is_fatal());
    assert_eq!(buf.len(), 24);
}

/// Netstring: a payload of exactly max_length, and one over.
#[test]
fn netstring_limit_boundary() {
    let mut c = NetstringCodec::with_max_length(10);
    let mut buf = BytesMut::from(&b"10:0123456789,"[..]);
    assert_eq!(&c.decode(&mut buf).unwrap().unwrap()[..], b"0123456789");
    let mut buf = BytesMut::from(&b"11:"[..]);
    assert!(c.decode(&mut buf).unwrap_err().is_limit());
    // A fresh codec per byte of "10:" arrives split: 1 then 0.
    let mut c = NetstringCodec::with_max_length(1);
    let mut buf = BytesMut::from(&b"1"[..]);
    assert!(c.decode(&mut buf).unwrap().is_none());
    buf.extend_from_slice(b"0");
    assert!(c.decode(&mut buf).unwrap_err().is_limit());
}

/// Packstring `w`: a non-minimal encoding with a leading 0x80 is refused
/// fatally, without consuming; the maximum u64 is accepted as a length
/// (then over the limit).
#[test]
fn packstring_ber_edges() {
    let mut c = PackstringCodec::new(PackFormat::Ber);
    let mut buf = BytesMut::from(&[0x80, 0x01, b'x'][..]);
    let e = c.decode(&mut buf).unwrap_err();
    assert_eq!(
        (e.kind(), e.is_fatal(), buf.len()),
        (ErrorKind::BadMessage, true, 3)
    );
    let mut buf = BytesMut::from(&[0x81, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f][..]);
    let e = c.decode(&mut buf).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSpace);
    let mut buf = BytesMut::from(&[0x82, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00][..]);
    let e = c.decode(&mut buf).unwrap_err();
    assert_eq!((e.kind(), e.is_fatal()), (ErrorKind::BadMessage, true));
}

/// Linear time: a 1 MiB line fed one byte per call should not rescan.
#[test]
fn line_bytewise_is_linear() {
    for mk in [
        || LineCodec::new(),
        || LineCodec::with_eol("\r\n").unwrap(),
        || {
            LineCodec::builder()
                .eol_regex(Regex::new(r"\r\n|\n").unwrap())
                .build()
                .unwrap()
        },
    ] {
        let mut c = mk();
        let mut buf = BytesMut::new();
        let t = std::time::Instant::now();
        for _ in 0..400_000 {
            buf.extend_from_slice(b"x");
            assert!(c.decode(&mut buf).unwrap().is_none());
        }
        buf.extend_from_slice(b"\r\n");
        assert!(c.decode(&mut buf).unwrap().is_some());
        assert!(t.elapsed().as_secs() < 5, "{:?}", t.elapsed());
    }
}

/// JSON, CBOR, netstring: bytewise feeding of a big frame is linear.
#[test]
fn self_delimited_bytewise_is_linear() {
    let mut text = b"[".to_vec();
    for _ in 0..100_000 {
        text.extend_from_slice(b"\"abc\",");
    }
    text.extend_from_slice(b"1]");
    let t = std::time::Instant::now();
    let mut c = JsonCodec::<JsonValue>::new();
    let mut buf = BytesMut::new();
    let mut got = None;
    for b in &text {
        buf.extend_from_slice(&[*b]);
        if let Some(v) = c.decode(&mut buf).unwrap() {
            got = Some(v);
        }
    }
    assert!(got.is_some());
    assert!(t.elapsed().as_secs() < 10, "json {:?}", t.elapsed());

    let mut item = vec![0x9a, 0, 1, 0x86, 0xa0];
    for _ in 0..100_000 {
        item.extend_from_slice(&[0x63, b'a', b'b', b'c']);
    }
    let t = std::time::Instant::now();
    let mut c = CborCodec::<CborValue>::new();
    let mut buf = BytesMut::new();
    let mut got = None;
    for b in &item {
        buf.extend_from_slice(&[*b]);
        if let Some(v) = c.decode(&mut buf).unwrap() {
            got = Some(v);
        }
    }
    assert!(got.is_some());
    assert!(t.elapsed().as_secs() < 10, "cbor {:?}", t.elapsed());
}

/// JSON depth bomb is stopped by the counter without recursion, and the
/// error consumes nothing.
#[test]
fn json_depth_bomb() {
    let mut buf = BytesMut::from(&vec![b'['; 5_000_000][..]);
    let e = JsonCodec::<JsonValue>::new().decode(&mut buf).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadMessage);
    assert!(e.is_limit());
    assert_eq!(buf.len(), 5_000_000);
    let mut buf = BytesMut::from(&vec![0x81u8; 5_000_000][..]);
    let e = CborCodec::<CborValue>::new().decode(&mut buf).unwrap_err();
    assert!(e.is_limit());
    assert_eq!(buf.len(), 5_000_000);
    // Tags nest too.
    let mut buf = BytesMut::from(&vec![0xc1u8; 5_000_000][..]);
    let e = CborCodec::<CborValue>::new().decode(&mut buf).unwrap_err();
    assert!(e.is_limit());
}

/// CBOR nested exactly at the default depth (128): the docs say
/// max_depth levels are allowed; serde_cbor allows 127. What happens?
#[test]
fn cbor_depth_exactly_at_limit() {
    let mut item = vec![0x81u8; 128];
    item.push(0x00);
    let mut buf = BytesMut::from(&item[..]);
    let r = CborCodec::<CborValue>::new().decode(&mut buf);
    eprintln!("128 deep: {:?}, left {}", r.as_ref().map(|_| ()), buf.len());
    let mut buf = BytesMut::from(&item[..]);
    let raw = RawCborCodec::new().decode(&mut buf);
    assert!(raw.unwrap().is_some());
}

/// JSON top-level number followed by garbage: `12x` is the number 12, then
/// `x` is an error consuming nothing.
#[test]
fn json_number_then_garbage() {
    let mut c = JsonCodec::<JsonValue>::new();
    let mut buf = BytesMut::from(&b"12x"[..]);
    assert_eq!(c.decode(&mut buf).unwrap(), Some(serde_json::json!(12)));
    let e = c.decode(&mut buf).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadMessage);
    assert_eq!(&buf[..], b"x");
}

/// JSON decode_eof with a lone `-`: EPIPE, left in place.
#[test]
fn json_eof_partial_number() {
    for t in [&b"-"[..], b"1.", b"1e", b"1e+", b"tr", b"\"ab", b"[1,"] {
        let mut c = JsonCodec::<JsonValue>::new();
        let mut buf = BytesMut::from(t);
        assert_eq!(c.decode(&mut buf).unwrap(), None);
        let e = c.decode_eof(&mut buf).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BrokenPipe, "{t:?}");
        assert_eq!(buf.len(), t.len());
    }
}

/// Chunk: n bytes exactly; decode_eof with partial data is EPIPE; zero
/// chunks complete on empty input.
#[test]
fn chunk_edges() {
    let mut c = ChunkCodec::new(0);
    let mut buf = BytesMut::new();
    assert_eq!(c.decode_eof(&mut buf).unwrap().unwrap().len(), 0);
    let mut c = ChunkCodec::new(3);
    let mut buf = BytesMut::from(&b"ab"[..]);
    let e = c.decode_eof(&mut buf).unwrap_err();
    assert!(e.is_fatal());
    assert_eq!(e.kind(), ErrorKind::BrokenPipe);
    assert_eq!(buf.len(), 2);
}

/// Encoders refuse what their decoder cannot read back.
#[test]
fn encoders_refuse_what_cannot_be_read_back() {
    // Netstring beyond max_length.
    let mut c = NetstringCodec::with_max_length(3);
    let mut out = BytesMut::new();
    assert!(c.encode(b"abcd", &mut out).is_err());
    assert!(out.is_empty());
    // Packstring over max_length.
    let mut c = PackstringCodec::with_max_length(PackFormat::U8, 3);
    assert!(c.encode(b"abcd", &mut out).is_err());
    assert!(out.is_empty());
    // Line with an embedded LF, and a trailing CR.
    let mut c = LineCodec::new();
    assert!(c.encode("a\nb", &mut out).is_err());
    assert!(c.encode("a\r", &mut out).is_err());
    assert!(out.is_empty());
    // The encoded line must decode back.
    for (eol, line) in [
        ("\r\n", "x\r"),
        ("aba", "ab"),
        ("aba", "b"),
        ("\n\n", "x\n"),
    ] {
        let mut c = LineCodec::with_eol(eol).unwrap();
        let mut out = BytesMut::new();
        if c.encode(line, &mut out).is_ok() {
            let got = c.decode(&mut out).unwrap().unwrap();
            assert_eq!(got.line(), line.as_bytes(), "eol {eol:?} line {line:?}");
        }
    }
}

/// Regex line EOL that can match longer with more input (`;+`): with
/// hold_open the result is split-invariant.
#[test]
fn line_regex_hold_open_split_invariant() {
    let mk = || {
        LineCodec::builder()
            .eol_regex(Regex::new(r"[;,]+").unwrap())
            .hold_open_match(true)
            .max_length(4)
            .build()
            .unwrap()
    };
    for input in [
        &b"a;;b,;,c;"[..],
        b"abcd;;;;e;",
        b"abcd;;;;;e;",
        b";;;;;",
        b"abcde",
    ] {
        let whole = run(mk(), &[input]);
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(run(mk(), &bytes), whole, "{input:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn line_regex_hold_open_prop(
        input in from_alphabet(&[b"a", b";", b",", b"\r", b"\n"], 16),
        pat in prop::sample::select(vec![r"[;,]+", r"\r\n|\n|\r", r";\n*", r"[;,]{1,3}"]),
        max in 0usize..6,
        discard in any::<bool>(),
        sz in sizes(),
    ) {
        let policy = if discard { OverflowPolicy::Discard } else { OverflowPolicy::Fatal };
        let mk = || {
            LineCodec::builder()
                .eol_regex(Regex::new(pat).unwrap())
                .hold_open_match(true)
                .max_length(max)
                .overflow(policy)
                .build()
                .unwrap()
        };
        check_invariant(mk, &input, &sz)?;
    }
}

/// tls_detect: every vendored ClientHello detected when fed one byte at a
/// time; plaintext starting with `0x16` but then `GET` is NotTls.
#[test]
fn tls_detect_edges() {
    let mut c = TlsDetectCodec::new();
    let mut buf = BytesMut::from(&[0x16, b'G'][..]);
    assert_eq!(c.decode(&mut buf).unwrap(), Some(TlsDetect::NotTls));
    let mut buf = BytesMut::from(&[0x80, 0x2e, 0x01, 0x03, 0x01][..]);
    assert_eq!(c.decode(&mut buf).unwrap(), None);
    buf.extend_from_slice(&[0]);
    assert_eq!(
        c.decode(&mut buf).unwrap(),
        Some(TlsDetect::Tls { major: 3, minor: 1 })
    );
    assert_eq!(buf.len(), 6);
}

/// Utf8 line decode_eof with a partial multi-byte char is EPIPE, kept.
#[test]
fn utf8_line_partial_char_at_eof() {
    let mut c = Utf8LineCodec::new();
    let mut buf = BytesMut::from(&b"ab\xc3"[..]);
    assert!(c.decode(&mut buf).unwrap().is_none());
    let e = c.decode_eof(&mut buf).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BrokenPipe);
    assert_eq!(buf.len(), 3);
}

// ---------------------------------------------------------------- more

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// A regex EOL that is a plain literal (`\r\n`, `aab`) has matches of
    /// one fixed length, so a match found is the leftmost in any longer
    /// buffer: it must frame exactly as the literal EOL does, however split.
    #[test]
    fn regex_literal_eol_equals_literal_eol(
        input in from_alphabet(&[b"a", b"b", b"\r", b"\n", b"ab", b"aab", b"\r\n"], 24),
        eol in prop::sample::select(vec![("\r\n", r"\r\n"), ("aab", "aab"), ("ab", "ab"), ("aba", "aba"), ("\n", r"\n")]),
        max in 3usize..7,
        discard in any::<bool>(),
        hold in any::<bool>(),
        sz in sizes(),
    ) {
        let policy = if discard { OverflowPolicy::Discard } else { OverflowPolicy::Fatal };
        let chunks = split_at_sizes(&input, &sz);
        let lit = run(LineCodec::builder().eol(eol.0).max_length(max).overflow(policy).build().unwrap(), &chunks);
        let re = run(
            LineCodec::builder()
                .eol_regex(Regex::new(eol.1).unwrap())
                .hold_open_match(hold)
                .max_length(max)
                .overflow(policy)
                .build()
                .unwrap(),
            &chunks,
        );
        // The EOF kind differs on a tail in (max, max + eol_len - 1]: that
        // is pinned by `regex_eol_eof_kind_differs_from_literal`; compare
        // everything else.
        let norm = |v: Vec<Ev>| -> Vec<Ev> {
            v.into_iter()
                .map(|e| match e {
                    Ev::EofErr(_, _) | Ev::Err(ErrorKind::NoSpace, true, _) => Ev::EofErr(ErrorKind::BrokenPipe, 0),
                    e => e,
                })
                .collect()
        };
        // The line cut off by the end of input: the literal EOL knows which
        // trailing bytes cannot begin an EOL and may find it over the
        // limit (discarded under the discard policy) where the regex, which
        // allows its longest match at the tail, calls it unfinished. Both
        // end there; compare everything before it.
        let tail = |mut v: Vec<Ev>| -> Vec<Ev> {
            if let [.., Ev::Err(ErrorKind::NoSpace, false, _), Ev::EofClean(0)] = v[..] {
                v.truncate(v.len() - 2);
                v.push(Ev::EofErr(ErrorKind::BrokenPipe, 0));
            }
            v
        };
        let (re, lit) = (tail(norm(re)), tail(norm(lit)));
        prop_assert_eq!(re, lit, "chunks {:?}", chunks);
    }

    #[test]
    fn regex_codec_unicode_equals_full_window_model(
        input in from_alphabet(UNI_TOKENS, 16),
        acc in prop::sample::select(vec![r"(?i)k;", r"\b\u{e9}", r"\u{e9}\b", r"a$", r"(?m)a$", r"\Bb", r"[^a];", r"(?-u:\b)k", r"(?i)kk?;", r"\w{2}\b"]),
        skp in prop::sample::select(vec![None, Some(r"^a"), Some(r"^[^;]{0,2}"), Some(r"(?-u)^.")]),
        max in prop::sample::select(vec![3usize, 5, 9, 1000]),
        sz in sizes(),
    ) {
        let a = Regex::new(acc).unwrap();
        let s = skp.map(|p| Regex::new(p).unwrap());
        let mut b = RegexCodec::builder(a.clone());
        if let Some(s) = &s { b.skip(s.clone()); }
        b.max_length(max);
        let codec = match b.build() { Ok(c) => c, Err(_) => return Ok(()) };
        let chunks = split_at_sizes(&input, &sz);
        let got = run(codec, &chunks);
        let want = regex_model(&a, None, s.as_ref(), max, &chunks);
        prop_assert_eq!(got, want, "chunks {:?}", chunks);
    }
}

const UNI_TOKENS: &[&[u8]] = &[
    b"a",
    b"k",
    b"K",
    b"\xe2\x84\xaa",
    b";",
    b" ",
    b"\xc3\xa9",
    b"\xff",
    b"\xc3",
    b"b",
];

/// The same bytes at end of input, `a\raa` with the EOL `aab` and a limit
/// of 3: the literal EOL says EPIPE (an unfinished line at end of input,
/// RT-line-5), the regex EOL `aab` says ENOSPC. The default EOL says EPIPE
/// on `abc\r` (max 3) where the regex `\r\n` says ENOSPC.
#[test]
fn regex_eol_eof_kind_differs_from_literal() {
    let eof_kind = |mut c: LineCodec, input: &[u8]| {
        let mut buf = BytesMut::from(input);
        assert!(c.decode(&mut buf).unwrap().is_none());
        c.decode_eof(&mut buf).unwrap_err().kind()
    };
    let lit = LineCodec::builder()
        .eol("aab")
        .max_length(3)
        .build()
        .unwrap();
    let re = LineCodec::builder()
        .eol_regex(Regex::new("aab").unwrap())
        .max_length(3)
        .build()
        .unwrap();
    let def = LineCodec::builder().max_length(3).build().unwrap();
    let crlf = LineCodec::builder()
        .eol_regex(Regex::new(r"\r\n").unwrap())
        .max_length(3)
        .build()
        .unwrap();
    let got = (
        eof_kind(lit, b"a\raa"),
        eof_kind(re, b"a\raa"),
        eof_kind(def, b"abc\r"),
        eof_kind(crlf, b"abc\r"),
    );
    assert_eq!(
        got,
        (
            ErrorKind::BrokenPipe,
            ErrorKind::BrokenPipe,
            ErrorKind::BrokenPipe,
            ErrorKind::BrokenPipe
        ),
        "literal / regex / default / regex-crlf at EOF"
    );
}

/// RegexCodec with a bounded skip moving the window a byte per arrival
/// and a bounded accept: linear however the record is split.
#[test]
fn regex_codec_skip_bytewise_is_linear() {
    let mut c = RegexCodec::builder(Regex::new("END").unwrap())
        .skip(Regex::new("^a").unwrap())
        .reject(Regex::new("NUL").unwrap())
        .build()
        .unwrap();
    let mut buf = BytesMut::new();
    let t = std::time::Instant::now();
    for _ in 0..300_000 {
        buf.extend_from_slice(b"a");
        assert!(c.decode(&mut buf).unwrap().is_none());
    }
    buf.extend_from_slice(b"EN");
    assert!(c.decode(&mut buf).unwrap().is_none());
    buf.extend_from_slice(b"D");
    assert_eq!(c.decode(&mut buf).unwrap().unwrap().len(), 300_003);
    assert!(t.elapsed().as_secs() < 5, "{:?}", t.elapsed());
}

/// After a reject the codec is usable once the caller drops the bad bytes.
#[test]
fn regex_codec_after_reject() {
    let mut c = RegexCodec::builder(Regex::new(";").unwrap())
        .reject(Regex::new("X").unwrap())
        .skip(Regex::new("^a").unwrap())
        .build()
        .unwrap();
    let mut buf = BytesMut::from(&b"aaX"[..]);
    let e = c.decode(&mut buf).unwrap_err();
    assert!(!e.is_fatal());
    assert_eq!(buf.len(), 3);
    assert_eq!(
        c.decode(&mut buf).unwrap_err().kind(),
        ErrorKind::BadMessage
    );
    let _ = buf.split_to(3);
    buf.extend_from_slice(b"b;");
    assert_eq!(&c.decode(&mut buf).unwrap().unwrap()[..], b"b;");
}

/// Under the discard policy the same bytes at end of input diverge in
/// consumption and fatality too: the literal EOL leaves `a\raa` with a
/// fatal EPIPE, the regex EOL drops it and reports a non-fatal ENOSPC,
/// then a clean end.
#[test]
fn regex_eol_eof_discard_differs_from_literal() {
    let mk = |re: bool| {
        let mut b = LineCodec::builder();
        if re {
            b.eol_regex(Regex::new("aab").unwrap());
        } else {
            b.eol("aab");
        }
        b.max_length(3)
            .overflow(OverflowPolicy::Discard)
            .build()
            .unwrap()
    };
    let lit = run(mk(false), &[b"a\raa"]);
    let re = run(mk(true), &[b"a\raa"]);
    assert_eq!(lit, vec![Ev::EofErr(ErrorKind::BrokenPipe, 4)]);
    assert_eq!(re, lit, "regex EOL `aab` vs literal `aab`");
}
