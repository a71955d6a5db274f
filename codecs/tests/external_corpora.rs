//! Conformance against external corpora that are not redistributed with
//! this crate: the `cbor/test-vectors` files (RFC 8949 Appendix A as JSON,
//! and `fail.json`, not-well-formed inputs, with a local
//! `fail_framing.tsv` giving each input's class for a stream framer), and
//! the upstream copies of the data vendored under `tests/data`.
//!
//! The folder is `$ANYFRAME_CORPORA`, or `shared/corpora` beside the
//! repository. Without it these tests pass with a note on stderr;
//! `ANYFRAME_REQUIRE_CORPORA=1` makes a missing folder a failure.

mod support;

use anyframe_codecs::{CborCodec, ErrorKind, RawCborCodec};
use bytes::{Bytes, BytesMut};
use std::path::Path;
use support::Eof;
use support::corpus::{data, every_split, external_corpora, hex, tsv};
use tokio_util::codec::{Decoder, Encoder};

/// Every file under `ours` has a byte-identical twin under `theirs`.
fn assert_same_files(ours: &Path, theirs: &Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(ours).expect("vendored folder") {
        let path = entry.expect("entry").path();
        let twin = theirs.join(path.file_name().expect("name"));
        if path.is_dir() {
            n += assert_same_files(&path, &twin);
        } else if path.file_name().is_some_and(|f| f != "README.md") {
            let a = std::fs::read(&path).expect("vendored file");
            let b = std::fs::read(&twin).unwrap_or_else(|e| panic!("{}: {e}", twin.display()));
            assert!(a == b, "{} differs from {}", path.display(), twin.display());
            n += 1;
        }
    }
    n
}

#[test]
fn vendored_data_is_the_upstream_data() {
    let Some(dir) = external_corpora() else {
        return;
    };
    // test_parsing (318), LICENSE, stream_classes.tsv.
    assert_eq!(assert_same_files(&data("json"), &dir.join("json")), 320);
    // 20 samples and the manifest.
    assert_eq!(assert_same_files(&data("tls"), &dir.join("tls")), 21);
}

#[test]
fn vendored_appendix_a_has_the_test_vectors_bytes() {
    let Some(dir) = external_corpora() else {
        return;
    };
    let text = std::fs::read(dir.join("cbor/appendix_a.json")).expect("appendix_a.json");
    let vectors: Vec<serde_json::Value> = serde_json::from_slice(&text).expect("JSON");
    let theirs: Vec<&str> = vectors
        .iter()
        .map(|v| v["hex"].as_str().expect("hex"))
        .collect();
    let rows = tsv(&data("cbor/rfc8949-appendix-a.tsv"));
    let ours: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(ours, theirs);
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
fn cbor_test_vectors_appendix_a_decode_as_their_json() {
    use serde_cbor::Value as C;
    let Some(dir) = external_corpora() else {
        return;
    };
    let path = dir.join("cbor/appendix_a.json");
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
            // Tags are kept on read; the vector's JSON has none.
            let item = &support::corpus::untagged(item);
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
            // Tags are kept, both ways.
            Some("1(1363896240)") => {
                assert_eq!(item, &C::Tag(1, Box::new(C::Integer(1363896240))));
            }
            Some("32(\"http://www.example.com\")") => {
                let url = C::Text("http://www.example.com".into());
                assert_eq!(item, &C::Tag(32, Box::new(url)));
            }
            _ => {}
        }
        // Re-encoding gives the same bytes where a generic encoder would,
        // tagged vectors included.
        if v["roundtrip"] == serde_json::Value::Bool(true) {
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
    assert_eq!(round_tripped, 61);
}

#[test]
fn cbor_fail_vectors_per_framing_class() {
    let Some(dir) = external_corpora() else {
        return;
    };
    let dir = dir.join("cbor");
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
