//! Conformance against the shared corpora (`../shared/corpora` beside the
//! repository): JSONTestSuite's `test_parsing` with the local
//! `stream_classes.tsv`, and the CBOR test vectors (RFC 8949 Appendix A and
//! `fail.json` with the local `fail_framing.tsv`). Every input goes through
//! every fragmentation the harness knows.

mod support;

use anyframe_codecs::{CborCodec, ErrorKind, JsonCodec, RawCborCodec, RawJsonCodec};
use bytes::{Bytes, BytesMut};
use std::path::{Path, PathBuf};
use support::{Eof, Outcome, assert_split_invariant, run_chunks, run_sized};
use tokio_util::codec::{Decoder, Encoder};

/// Inputs up to this size get every two-way split (O(n²)); larger ones get
/// the whole input, one byte at a time and a few fixed chunkings.
const ALL_SPLITS_UP_TO: usize = 4096;

fn corpora() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpora");
    assert!(
        dir.is_dir(),
        "the shared corpora are missing: expected {} (the repository's parent holds shared/corpora; CI provides it)",
        dir.display()
    );
    dir
}

/// Lines of a tab-separated file, without its `#` header.
fn tsv(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Runs the decoder over every fragmentation of `input` that is affordable,
/// asserting they agree, and returns the outcome.
fn every_split<D, F>(make: F, input: &[u8]) -> Outcome<D::Item>
where
    D: Decoder<Error = anyframe_codecs::Error>,
    D::Item: PartialEq + std::fmt::Debug,
    F: Fn() -> D,
{
    if input.len() <= ALL_SPLITS_UP_TO {
        return assert_split_invariant(make, input);
    }
    let whole = run_chunks(make(), &[input]);
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(run_chunks(make(), &bytes), whole, "one byte at a time");
    for sizes in [&[4096usize][..], &[7, 1, 300], &[1000, 3]] {
        assert_eq!(run_sized(make(), input, sizes), whole, "chunks {sizes:?}");
    }
    whole
}

fn is_json_ws(b: &u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t')
}

/// What the typed codec must give: the raw outcome, each frame parsed by
/// serde_json, stopping at the first frame serde_json rejects.
fn raw_through_serde(raw: Outcome<Bytes>) -> Outcome<serde_json::Value> {
    let mut frames = Vec::new();
    for f in &raw.frames {
        match serde_json::from_slice(f) {
            Ok(v) => frames.push(v),
            Err(_) => {
                let error = Some((frames.len(), ErrorKind::BadMessage, false));
                return Outcome {
                    frames,
                    error,
                    eof: None,
                };
            }
        }
    }
    Outcome {
        frames,
        error: raw.error,
        eof: raw.eof,
    }
}

#[test]
fn json_test_suite_through_every_fragmentation() {
    let dir = corpora().join("json");
    let rows = tsv(&dir.join("stream_classes.tsv"));
    assert_eq!(rows.len(), 318, "one row per test_parsing file");
    let mut seen = [0usize; 3];
    for row in rows {
        let [file, upstream, class, values, consumed] = &row[..] else {
            panic!("bad row {row:?}");
        };
        let values: usize = values.parse().expect("count");
        let consumed: usize = consumed.parse().expect("offset");
        let input = std::fs::read(dir.join("test_parsing").join(file)).expect("corpus file");
        let ctx = format!("{file} ({class})");
        let lead = input.iter().take_while(|b| is_json_ws(b)).count();

        // The framer without a depth limit must follow the class exactly.
        let unlimited = || RawJsonCodec::builder().max_depth(usize::MAX).build_raw();
        let raw = every_split(unlimited, &input);
        let bad_at = |i| Some((i, ErrorKind::BadMessage, false));
        match class.as_str() {
            "single_value" => {
                let text = input[lead..]
                    .iter()
                    .rposition(|b| !is_json_ws(b))
                    .map_or(0, |e| e + 1);
                assert_eq!(
                    raw.frames,
                    vec![Bytes::copy_from_slice(&input[lead..lead + text])],
                    "{ctx}"
                );
                assert_eq!(
                    (raw.error, &raw.eof),
                    (None, &Some(Eof::Clean { leftover: vec![] })),
                    "{ctx}"
                );
            }
            "malformed" => {
                assert!(raw.frames.is_empty(), "{ctx}");
                assert_eq!(raw.error, bad_at(0), "{ctx}");
            }
            "truncated" => {
                assert!(raw.frames.is_empty() && raw.error.is_none(), "{ctx}");
                let eof = Eof::Error {
                    kind: ErrorKind::BrokenPipe,
                    leftover: input.len() - lead,
                };
                assert_eq!(raw.eof, Some(eof), "{ctx}");
            }
            "value_then_malformed" => {
                assert_eq!(raw.frames.len(), values, "{ctx}");
                assert_eq!(raw.error, bad_at(values), "{ctx}");
                let last = raw.frames.last().expect("a value");
                assert!(
                    input[..consumed].ends_with(last),
                    "{ctx}: the last value ends at {consumed}"
                );
            }
            "multiple_values" => {
                assert_eq!(raw.frames.len(), values, "{ctx}");
                assert_eq!(
                    (raw.error, &raw.eof),
                    (None, &Some(Eof::Clean { leftover: vec![] })),
                    "{ctx}"
                );
            }
            "empty" => {
                assert!(raw.frames.is_empty() && raw.error.is_none(), "{ctx}");
                assert_eq!(raw.eof, Some(Eof::Clean { leftover: vec![] }), "{ctx}");
            }
            other => panic!("unknown class {other} for {file}"),
        }

        // The typed codec, default limits: the default framer's outcome with
        // each text parsed once by serde_json.
        let framed = every_split(RawJsonCodec::new, &input);
        let typed = every_split(JsonCodec::<serde_json::Value>::new, &input);
        assert_eq!(typed, raw_through_serde(framed), "{ctx}");

        match upstream.as_str() {
            "y" => {
                let want: serde_json::Value = serde_json::from_slice(&input).expect("y_ parses");
                assert_eq!(typed.frames, vec![want], "{ctx}");
                seen[0] += 1;
            }
            "n" => {
                // Rejected, or a legitimate stream / truncated text by class.
                let rejected = typed
                    .error
                    .is_some_and(|(_, k, _)| k == ErrorKind::BadMessage);
                let by_class = matches!(class.as_str(), "multiple_values" | "truncated" | "empty");
                assert!(rejected || by_class, "{ctx}: {typed:?}");
                seen[1] += 1;
            }
            _ => seen[2] += 1,
        }
    }
    assert_eq!(seen, [95, 188, 35]);
}

#[test]
fn deep_corpus_files_stop_at_the_depth_limit() {
    let dir = corpora().join("json/test_parsing");
    for file in [
        "n_structure_100000_opening_arrays.json",
        "i_structure_500_nested_arrays.json",
    ] {
        let input = std::fs::read(dir.join(file)).expect("corpus file");
        let mut buf = BytesMut::from(&input[..]);
        let err = JsonCodec::<serde_json::Value>::new()
            .decode(&mut buf)
            .unwrap_err();
        assert!(err.is_limit(), "{file}: {err}");
        assert_eq!(buf.len(), input.len(), "{file}: nothing consumed");
    }
}

/// Compares a decoded CBOR value with Appendix A's JSON `decoded` field.
fn same_as_json(ours: &serde_cbor::Value, want: &serde_json::Value, hex: &str) -> bool {
    use serde_cbor::Value as C;
    use serde_json::Value as J;
    let close = |a: f64, b: f64| a == b || (a - b).abs() <= b.abs() * 1e-15;
    match (ours, want) {
        (C::Null, J::Null) => true,
        (C::Bool(a), J::Bool(b)) => a == b,
        (C::Text(a), J::String(b)) => a == b,
        (C::Integer(a), J::Number(b)) => match (b.as_i64(), b.as_u64()) {
            (Some(b), _) => *a == i128::from(b),
            (_, Some(b)) => *a == i128::from(b),
            _ => close(*a as f64, b.as_f64().unwrap_or(f64::NAN)),
        },
        (C::Float(a), J::Number(b)) => close(*a, b.as_f64().unwrap_or(f64::NAN)),
        // Bignums (tags 2 and 3): serde_cbor drops the tag, the magnitude
        // comes as bytes.
        (C::Bytes(m), J::Number(b)) if hex.starts_with("c2") || hex.starts_with("c3") => {
            let n = m.iter().fold(0u128, |n, &d| (n << 8) | u128::from(d)) as f64;
            let n = if hex.starts_with("c3") { -1.0 - n } else { n };
            close(n, b.as_f64().unwrap_or(f64::NAN))
        }
        (C::Array(a), J::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_as_json(x, y, ""))
        }
        (C::Map(a), J::Object(b)) => {
            a.len() == b.len()
                && a.iter().all(|(k, v)| match k {
                    C::Text(k) => b.get(k).is_some_and(|w| same_as_json(v, w, "")),
                    _ => false,
                })
        }
        _ => false,
    }
}

#[test]
fn rfc8949_appendix_a_vectors() {
    use serde_cbor::Value as C;
    let path = corpora().join("cbor/appendix_a.json");
    let text = std::fs::read(&path).expect("appendix_a.json");
    let vectors: Vec<serde_json::Value> = serde_json::from_slice(&text).expect("JSON");
    assert_eq!(vectors.len(), 82);
    let mut round_tripped = 0;
    let mut differ = Vec::new();
    for v in &vectors {
        let h = v["hex"].as_str().expect("hex");
        let bytes = hex(h);
        // Framing: exactly one item filling the vector, however split.
        let raw = every_split(RawCborCodec::new, &bytes);
        assert_eq!(raw.frames, vec![Bytes::copy_from_slice(&bytes)], "{h}");
        assert_eq!(raw.eof, Some(Eof::Clean { leftover: vec![] }), "{h}");

        let typed = every_split(CborCodec::<C>::new, &bytes);
        let diagnostic = v["diagnostic"].as_str();
        // serde_cbor refuses simple values other than false/true/null/undefined.
        if let Some(d) = diagnostic.filter(|d| d.starts_with("simple(")) {
            assert_eq!(
                typed.error.map(|(i, k, _)| (i, k)),
                Some((0, ErrorKind::BadMessage)),
                "{d}"
            );
            continue;
        }
        assert_eq!(typed.error, None, "{h}");
        let [item] = &typed.frames[..] else {
            panic!("{h}: {typed:?}")
        };
        if let Some(want) = v.get("decoded") {
            assert!(same_as_json(item, want, h), "{h}: {item:?} vs {want}");
        }
        match diagnostic {
            Some("Infinity") => assert_eq!(item, &C::Float(f64::INFINITY)),
            Some("-Infinity") => assert_eq!(item, &C::Float(f64::NEG_INFINITY)),
            Some("NaN") => assert!(matches!(item, C::Float(f) if f.is_nan())),
            Some("undefined") => assert_eq!(item, &C::Null),
            Some("h''") => assert_eq!(item, &C::Bytes(vec![])),
            Some("h'01020304'") => assert_eq!(item, &C::Bytes(vec![1, 2, 3, 4])),
            Some("(_ h'0102', h'030405')") => assert_eq!(item, &C::Bytes(vec![1, 2, 3, 4, 5])),
            Some("{1: 2, 3: 4}") => {
                let want = [
                    (C::Integer(1), C::Integer(2)),
                    (C::Integer(3), C::Integer(4)),
                ];
                assert_eq!(item, &C::Map(want.into_iter().collect()));
            }
            Some("1(1363896240)") => assert_eq!(item, &C::Integer(1363896240)),
            Some("32(\"http://www.example.com\")") => {
                assert_eq!(item, &C::Text("http://www.example.com".into()));
            }
            _ => {}
        }
        // Re-encoding gives the same bytes where a generic encoder would;
        // serde_cbor drops tags, so tagged vectors cannot round-trip.
        let tagged = matches!(bytes[0] >> 5, 6);
        if v["roundtrip"] == serde_json::Value::Bool(true) && !tagged {
            let mut out = BytesMut::new();
            CborCodec::<C>::new()
                .encode(item, &mut out)
                .expect("encode");
            if out[..] == bytes[..] {
                round_tripped += 1;
            } else {
                differ.push(h);
            }
        }
    }
    // serde_cbor::Value has no `undefined`: it decodes as null and so
    // re-encodes as f6.
    assert_eq!(
        differ,
        ["f7"],
        "vectors that do not re-encode to their bytes"
    );
    assert_eq!(round_tripped, 53);
}

#[test]
fn cbor_fail_vectors_per_framing_class() {
    let dir = corpora().join("cbor");
    let rows = tsv(&dir.join("fail_framing.tsv"));
    assert_eq!(rows.len(), 679);
    for row in rows {
        let (h, class) = (&row[1], &row[2]);
        let items: usize = row[3].parse().expect("count");
        let consumed: usize = row[4].parse().expect("offset");
        let bytes = hex(h);
        let ctx = format!("#{} {h} ({class})", row[0]);
        let unlimited = || RawCborCodec::with_limits(usize::MAX, usize::MAX);
        let raw = every_split(unlimited, &bytes);
        match class.as_str() {
            "malformed" => {
                assert!(raw.frames.is_empty(), "{ctx}");
                assert_eq!(raw.error, Some((0, ErrorKind::BadMessage, false)), "{ctx}");
            }
            "truncated" => {
                assert!(raw.frames.is_empty() && raw.error.is_none(), "{ctx}");
                let eof = Eof::Error {
                    kind: ErrorKind::BrokenPipe,
                    leftover: bytes.len(),
                };
                assert_eq!(raw.eof, Some(eof), "{ctx}");
            }
            "item_then_malformed" => {
                assert_eq!(
                    raw.frames,
                    vec![Bytes::copy_from_slice(&bytes[..consumed])],
                    "{ctx}"
                );
                assert_eq!(
                    raw.error,
                    Some((items, ErrorKind::BadMessage, false)),
                    "{ctx}"
                );
            }
            other => panic!("unknown class {other}"),
        }
        // Default limits: a truncated item whose declared length is over
        // the size limit fails at its head instead of waiting.
        let typed = every_split(CborCodec::<serde_cbor::Value>::new, &bytes);
        if class == "truncated" {
            let waits = typed.eof == raw.eof && typed.error.is_none();
            let over = typed.error == Some((0, ErrorKind::BadMessage, false));
            assert!(waits || over, "{ctx}: {typed:?}");
            if over {
                let mut buf = BytesMut::from(&bytes[..]);
                let err = CborCodec::<serde_cbor::Value>::new()
                    .decode(&mut buf)
                    .unwrap_err();
                assert!(err.is_limit(), "{ctx}: {err}");
            }
        } else {
            assert!(
                typed
                    .error
                    .is_some_and(|(_, k, _)| k == ErrorKind::BadMessage),
                "{ctx}"
            );
        }
    }
}
