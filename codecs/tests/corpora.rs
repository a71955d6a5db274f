//! Conformance against the test data vendored under `tests/data`:
//! JSONTestSuite's `test_parsing` with our `stream_classes.tsv`, and the
//! examples of RFC 8949 Appendix A. Every input goes through every
//! fragmentation the harness knows. (`cbor_malformed.rs` generates
//! not-well-formed CBOR; `external_corpora.rs` runs further corpora when
//! they are present.)

mod support;

use anyframe_codecs::{CborCodec, ErrorKind, JsonCodec, RawCborCodec, RawJsonCodec};
use bytes::{Bytes, BytesMut};
use support::corpus::{data, every_split, hex, tsv};
use support::{Eof, Outcome};
use tokio_util::codec::{Decoder, Encoder};

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
    let dir = data("json");
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
    let dir = data("json/test_parsing");
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

/// A data item as RFC 8949's diagnostic notation (section 8) writes it, for
/// the subset Appendix A uses.
#[derive(Debug, Clone)]
enum Diag {
    Int(i128),
    Float(f64),
    Bool(bool),
    Null,
    Undefined,
    /// `simple(n)` other than false, true, null and undefined.
    Simple,
    Text(String),
    Bytes(Vec<u8>),
    Array(Vec<Diag>),
    Map(Vec<(Diag, Diag)>),
    /// A tagged item (the tag number is not kept: serde_cbor drops it).
    Tag(Box<Diag>),
}

/// A recursive-descent reader of diagnostic notation.
struct DiagParser<'a> {
    s: &'a [u8],
    at: usize,
}

impl DiagParser<'_> {
    fn parse(text: &str) -> Diag {
        let mut p = DiagParser {
            s: text.as_bytes(),
            at: 0,
        };
        let d = p.item();
        p.ws();
        assert_eq!(p.at, p.s.len(), "trailing text in {text}");
        d
    }

    fn ws(&mut self) {
        while self.s.get(self.at) == Some(&b' ') {
            self.at += 1;
        }
    }

    fn eat(&mut self, t: &str) -> bool {
        self.ws();
        let hit = self.s[self.at..].starts_with(t.as_bytes());
        if hit {
            self.at += t.len();
        }
        hit
    }

    fn expect(&mut self, t: &str) {
        assert!(self.eat(t), "expected {t:?} at {}", self.at);
    }

    /// Items up to `close`, separated by commas; `_` (indefinite length) is
    /// accepted and ignored, as the decoded value does not show it.
    fn list<T>(&mut self, close: &str, mut one: impl FnMut(&mut Self) -> T) -> Vec<T> {
        self.eat("_");
        let mut out = Vec::new();
        while !self.eat(close) {
            if !out.is_empty() {
                self.expect(",");
            }
            out.push(one(self));
        }
        out
    }

    fn item(&mut self) -> Diag {
        self.ws();
        if self.eat("[") {
            return Diag::Array(self.list("]", Self::item));
        }
        if self.eat("{") {
            return Diag::Map(self.list("}", |p| {
                let k = p.item();
                p.expect(":");
                (k, p.item())
            }));
        }
        if self.eat("(") {
            // A string in chunks: the value is the concatenation.
            let chunks = self.list(")", Self::item);
            return match &chunks[0] {
                Diag::Bytes(_) => Diag::Bytes(
                    chunks
                        .iter()
                        .flat_map(|c| match c {
                            Diag::Bytes(b) => b.clone(),
                            other => panic!("mixed chunks: {other:?}"),
                        })
                        .collect(),
                ),
                _ => Diag::Text(
                    chunks
                        .iter()
                        .map(|c| match c {
                            Diag::Text(t) => t.as_str(),
                            other => panic!("mixed chunks: {other:?}"),
                        })
                        .collect(),
                ),
            };
        }
        if self.eat("h'") {
            let end = self.at
                + self.s[self.at..]
                    .iter()
                    .position(|&b| b == b'\'')
                    .expect("'");
            let bytes = hex(std::str::from_utf8(&self.s[self.at..end]).expect("ASCII"));
            self.at = end + 1;
            return Diag::Bytes(bytes);
        }
        if self.eat("\"") {
            return Diag::Text(self.string());
        }
        for (word, d) in [
            ("false", Diag::Bool(false)),
            ("true", Diag::Bool(true)),
            ("null", Diag::Null),
            ("undefined", Diag::Undefined),
            ("NaN", Diag::Float(f64::NAN)),
            ("Infinity", Diag::Float(f64::INFINITY)),
            ("-Infinity", Diag::Float(f64::NEG_INFINITY)),
        ] {
            if self.eat(word) {
                return d;
            }
        }
        if self.eat("simple(") {
            let n = self.number();
            self.expect(")");
            assert!(u8::try_from(n).is_ok(), "simple({n})");
            return Diag::Simple;
        }
        let start = self.at;
        let n = self.number();
        if self.eat("(") {
            let inner = self.item();
            self.expect(")");
            assert!(u64::try_from(n).is_ok(), "tag {n}");
            return Diag::Tag(Box::new(inner));
        }
        let text = std::str::from_utf8(&self.s[start..self.at]).expect("ASCII");
        if text.contains(['.', 'e']) {
            Diag::Float(text.parse().expect("float"))
        } else {
            Diag::Int(n)
        }
    }

    /// A number token; its integer value (0 for a float, which the caller
    /// parses from the text).
    fn number(&mut self) -> i128 {
        let start = self.at;
        while self
            .s
            .get(self.at)
            .is_some_and(|b| b"-+.e0123456789".contains(b))
        {
            self.at += 1;
        }
        let text = std::str::from_utf8(&self.s[start..self.at]).expect("ASCII");
        assert!(!text.is_empty(), "a number at {start}");
        text.parse().unwrap_or(0)
    }

    /// The rest of a JSON-style string literal (`\"`, `\\`, `\uXXXX` with
    /// surrogate pairs).
    fn string(&mut self) -> String {
        let mut units: Vec<u16> = Vec::new();
        let mut out = String::new();
        let flush = |units: &mut Vec<u16>, out: &mut String| {
            out.extend(char::decode_utf16(units.drain(..)).map(|c| c.expect("UTF-16")));
        };
        loop {
            let b = self.s[self.at];
            self.at += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    let e = self.s[self.at];
                    self.at += 1;
                    if e == b'u' {
                        let h = std::str::from_utf8(&self.s[self.at..self.at + 4]).expect("ASCII");
                        units.push(u16::from_str_radix(h, 16).expect("\\u"));
                        self.at += 4;
                        continue;
                    }
                    flush(&mut units, &mut out);
                    out.push(char::from(e));
                }
                _ => {
                    flush(&mut units, &mut out);
                    out.push(char::from(b));
                }
            }
        }
        flush(&mut units, &mut out);
        out
    }
}

/// What `serde_cbor::Value` gives for an item: tags are dropped (a bignum,
/// tag 2 or 3, comes out as its magnitude's bytes), `undefined` reads as
/// null, and simple values other than false/true/null/undefined are refused
/// (`None`).
fn as_serde_cbor(d: &Diag) -> Option<serde_cbor::Value> {
    use serde_cbor::Value as C;
    let magnitude = |m: u128| {
        let bytes = m.to_be_bytes();
        let first = bytes.iter().position(|&b| b != 0).unwrap_or(15);
        C::Bytes(bytes[first..].to_vec())
    };
    Some(match d {
        Diag::Int(n) if *n > i128::from(u64::MAX) => magnitude(*n as u128),
        Diag::Int(n) if *n < -(1i128 << 64) => magnitude((-1 - n) as u128),
        Diag::Int(n) => C::Integer(*n),
        Diag::Float(f) => C::Float(*f),
        Diag::Bool(b) => C::Bool(*b),
        Diag::Null | Diag::Undefined => C::Null,
        Diag::Simple => return None,
        Diag::Text(t) => C::Text(t.clone()),
        Diag::Bytes(b) => C::Bytes(b.clone()),
        Diag::Array(a) => C::Array(a.iter().map(as_serde_cbor).collect::<Option<_>>()?),
        Diag::Map(m) => C::Map(
            m.iter()
                .map(|(k, v)| Some((as_serde_cbor(k)?, as_serde_cbor(v)?)))
                .collect::<Option<_>>()?,
        ),
        Diag::Tag(inner) => as_serde_cbor(inner)?,
    })
}

fn same_value(a: &serde_cbor::Value, b: &serde_cbor::Value) -> bool {
    match (a, b) {
        (serde_cbor::Value::Float(x), serde_cbor::Value::Float(y)) if x.is_nan() => y.is_nan(),
        _ => a == b,
    }
}

/// RFC 8949 Appendix A: `(hex, bytes, diagnostic)` of each example.
fn appendix_a() -> Vec<(String, Vec<u8>, String)> {
    let rows = tsv(&data("cbor/rfc8949-appendix-a.tsv"));
    assert_eq!(rows.len(), 82, "Table 6 has 82 examples");
    rows.into_iter()
        .map(|r| {
            let [h, diag] = &r[..] else {
                panic!("bad row {r:?}")
            };
            (h.clone(), hex(h), diag.clone())
        })
        .collect()
}

#[test]
fn rfc8949_appendix_a_examples() {
    use serde_cbor::Value as C;
    let mut round_tripped = 0;
    for (h, bytes, diag) in appendix_a() {
        // Framing: exactly one item filling the example, however split.
        let raw = every_split(RawCborCodec::new, &bytes);
        assert_eq!(raw.frames, vec![Bytes::copy_from_slice(&bytes)], "{h}");
        assert_eq!(raw.eof, Some(Eof::Clean { leftover: vec![] }), "{h}");

        // Decoding: the value the diagnostic notation gives.
        let parsed = DiagParser::parse(&diag);
        let typed = every_split(CborCodec::<C>::new, &bytes);
        let Some(want) = as_serde_cbor(&parsed) else {
            assert_eq!(
                typed.error.map(|(i, k, _)| (i, k)),
                Some((0, ErrorKind::BadMessage)),
                "{diag}: serde_cbor has no simple values"
            );
            continue;
        };
        assert_eq!(typed.error, None, "{h}");
        let [item] = &typed.frames[..] else {
            panic!("{h}: {typed:?}")
        };
        // Tags are kept on read; the diagnostic value is compared without.
        let plain = support::corpus::untagged(item);
        assert!(same_value(&plain, &want), "{h}: {item:?}, want {diag}");

        // Re-encoding gives the example's bytes whenever they are the
        // preferred encoding of a value serde_cbor keeps whole (tags
        // included): not indefinite length, not `undefined` (read as null),
        // not a non-preferred float (Infinity and NaN in 32 or 64 bits).
        let indefinite = diag.contains('_');
        let long_special_float =
            matches!(bytes[0], 0xfa | 0xfb) && matches!(parsed, Diag::Float(f) if !f.is_finite());
        let mut out = BytesMut::new();
        CborCodec::<C>::new()
            .encode(item, &mut out)
            .expect("encode");
        if indefinite || long_special_float || diag == "undefined" {
            assert_ne!(out[..], bytes[..], "{h} re-encodes to itself after all");
        } else {
            assert_eq!(out[..], bytes[..], "{h} ({diag}) does not re-encode");
            round_tripped += 1;
        }
    }
    assert_eq!(round_tripped, 61);
}

#[test]
fn rfc8949_appendix_a_examples_back_to_back_are_82_frames() {
    let examples = appendix_a();
    let stream: Vec<u8> = examples.iter().flat_map(|(_, b, _)| b.clone()).collect();
    let raw = every_split(RawCborCodec::new, &stream);
    let want: Vec<Bytes> = examples
        .iter()
        .map(|(_, b, _)| Bytes::copy_from_slice(b))
        .collect();
    assert_eq!(raw.frames, want);
    assert_eq!(raw.eof, Some(Eof::Clean { leftover: vec![] }));
}
