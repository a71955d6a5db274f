//! `TlsDetectCodec`: the corpus verdicts under both rules, fragmentation
//! invariance, the early decision, and AnyEvent::Handle's verified examples.

mod support;

use anyframe_codecs::{Error, ErrorKind, TlsDetect, TlsDetectCodec};
use bytes::BytesMut;
use proptest::prelude::*;
use std::path::{Path, PathBuf};
use support::{Eof, assert_sized_matches_whole, assert_split_invariant, run_chunks};
use tokio_util::codec::Decoder;

/// `TlsDetectCodec` repeats its verdict forever (it consumes nothing), which
/// the fragmentation harness, like `Framed`, would loop on. This wrapper is
/// the one-shot read request the codec is meant for: one verdict, then
/// nothing, so the harness can also check that the buffer is left whole.
struct OneShot {
    codec: TlsDetectCodec,
    done: bool,
}

fn one_shot(codec: TlsDetectCodec) -> impl Fn() -> OneShot {
    move || OneShot { codec, done: false }
}

impl Decoder for OneShot {
    type Item = TlsDetect;
    type Error = Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<TlsDetect>, Error> {
        if self.done {
            return Ok(None);
        }
        let v = self.codec.decode(buf)?;
        self.done = v.is_some();
        Ok(v)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<TlsDetect>, Error> {
        if self.done {
            return Ok(None);
        }
        let v = self.codec.decode_eof(buf)?;
        self.done = v.is_some();
        Ok(v)
    }
}

/// The ClientHello samples vendored with the tests (`tests/data/tls`, see
/// its README for how each was made).
fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tls")
}

fn read_hex(path: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(
        digits.len().is_multiple_of(2),
        "{}: odd hex length",
        path.display()
    );
    digits
        .chunks(2)
        .map(|p| {
            let s = std::str::from_utf8(p).expect("hex is ASCII");
            u8::from_str_radix(s, 16)
                .unwrap_or_else(|e| panic!("{}: bad hex {s:?}: {e}", path.display()))
        })
        .collect()
}

struct Sample {
    file: String,
    bytes: Vec<u8>,
    /// The expected verdict under AE's rule and under the strict rule.
    ae: TlsDetect,
    strict: TlsDetect,
}

/// Loads every sample with the verdicts `manifest.json` gives. The version
/// of a positive comes from the manifest's `record_version` (`0301` for the
/// SSLv2-compatible hello, whose `client_version` it is).
fn corpus() -> Vec<Sample> {
    let dir = corpus_dir();
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("manifest.json")).expect("read manifest.json"),
    )
    .expect("manifest.json is JSON");
    let entries = manifest.as_array().expect("manifest.json is an array");
    assert!(entries.len() >= 20, "expected the 20 samples of the corpus");
    entries
        .iter()
        .map(|e| {
            let field = |k: &str| e[k].as_str().unwrap_or_else(|| panic!("{k} in {e}"));
            let file = field("file").to_owned();
            let bytes = read_hex(&dir.join(&file));
            assert_eq!(
                e["length"].as_u64(),
                Some(bytes.len() as u64),
                "{file}: length"
            );
            let version = e["record_version"]
                .as_str()
                .or_else(|| e["client_version"].as_str())
                .map(|v| {
                    let n = u16::from_str_radix(v, 16).expect("hex version");
                    ((n >> 8) as u8, n as u8)
                });
            let verdict = |k: &str| match field(k) {
                "tls" => {
                    let (major, minor) = version.unwrap_or_else(|| {
                        // A negative the AE rule calls TLS: its header.
                        (bytes[1], bytes[2])
                    });
                    TlsDetect::Tls { major, minor }
                }
                "not_tls" => TlsDetect::NotTls,
                other => panic!("{file}: unknown verdict {other:?}"),
            };
            let (ae, strict) = (verdict("verdict_ae_rule"), verdict("verdict_strict_rule"));
            if field("expect") == "client_hello" {
                assert!(ae.is_tls() && strict.is_tls(), "{file}: positive");
            }
            Sample {
                file,
                bytes,
                ae,
                strict,
            }
        })
        .collect()
}

/// Runs every fragmentation and checks: one verdict, the expected one, and
/// the whole input still in the buffer at the end (nothing consumed).
fn check(codec: TlsDetectCodec, input: &[u8], expected: TlsDetect, what: &str) {
    let outcome = assert_split_invariant(one_shot(codec), input);
    assert_eq!(outcome.frames, vec![expected], "{what}");
    assert_eq!(outcome.error, None, "{what}");
    assert_eq!(
        outcome.eof,
        Some(Eof::Clean {
            leftover: input.to_vec()
        }),
        "{what}: the detector must consume nothing"
    );
}

#[test]
fn verdicts_and_codecs_report_what_they_are() {
    let tls = TlsDetect::Tls { major: 3, minor: 3 };
    assert!(tls.is_tls());
    assert_eq!(tls.version(), Some((3, 3)));
    assert!(!TlsDetect::NotTls.is_tls());
    assert_eq!(TlsDetect::NotTls.version(), None);

    let ae = TlsDetectCodec::new();
    assert!(!ae.is_strict() && ae.detects_sslv2());
    let strict = TlsDetectCodec::strict();
    assert!(strict.is_strict() && strict.detects_sslv2());
    assert!(!ae.sslv2(false).detects_sslv2());
    assert!(strict.sslv2(false).is_strict());
}

#[test]
fn every_corpus_sample_gives_the_manifest_verdict_under_both_rules() {
    for s in corpus() {
        check(
            TlsDetectCodec::new(),
            &s.bytes,
            s.ae,
            &format!("{} (AE)", s.file),
        );
        check(
            TlsDetectCodec::strict(),
            &s.bytes,
            s.strict,
            &format!("{} (strict)", s.file),
        );
    }
}

#[test]
fn sslv2_detection_off_changes_only_the_sslv2_sample() {
    for s in corpus() {
        for (codec, want) in [
            (TlsDetectCodec::new().sslv2(false), s.ae),
            (TlsDetectCodec::strict().sslv2(false), s.strict),
        ] {
            let want = if s.bytes[0] >= 0x80 {
                TlsDetect::NotTls
            } else {
                want
            };
            check(codec, &s.bytes, want, &format!("{} (no SSLv2)", s.file));
        }
    }
}

/// The number of bytes after which each rule decides, worked out by hand
/// from the first bytes of each sample (see `tests/data/tls/README.md`).
fn decision_len(file: &str, strict: bool) -> usize {
    match (file, strict) {
        ("client_hello_sslv2_compat_synthetic.hex", _) => 6,
        (f, false) if f.starts_with("client_hello_") => 4,
        (f, true) if f.starts_with("client_hello_") => 6,
        // ASCII first bytes contradict both patterns at once.
        ("neg_http_get.hex" | "neg_smtp_ehlo.hex" | "neg_json_text.hex", _) => 1,
        // a2 61 61: byte 0 could start an SSLv2 hello, byte 2 is not 0x01.
        ("neg_cbor_value.hex", _) => 3,
        // 16 02 / 16 7a / 16 fe: the major version is wrong.
        ("neg_0x16_bad_major.hex" | "neg_0x16_random.hex" | "neg_dtls12_client_hello.hex", _) => 2,
        // 16 03 0a: AE ignores the minor and decides on the header; strict
        // refuses minor 10 on byte 2.
        ("neg_0x16_bad_minor.hex", false) => 4,
        ("neg_0x16_bad_minor.hex", true) => 3,
        // A ServerHello: a good header, handshake type 2 at byte 5.
        ("neg_tls12_server_hello.hex", false) => 4,
        ("neg_tls12_server_hello.hex", true) => 6,
        (f, _) => panic!("no expected decision length for new sample {f}"),
    }
}

#[test]
fn decides_on_the_first_contradicting_byte() {
    for s in corpus() {
        for (codec, want, strict) in [
            (TlsDetectCodec::new(), s.ae, false),
            (TlsDetectCodec::strict(), s.strict, true),
        ] {
            let n = decision_len(&s.file, strict);
            for k in 0..n {
                let mut buf = BytesMut::from(&s.bytes[..k]);
                assert_eq!(
                    { codec }.decode(&mut buf).unwrap(),
                    None,
                    "{} strict={strict}: decided after only {k} bytes",
                    s.file
                );
            }
            let mut buf = BytesMut::from(&s.bytes[..n]);
            assert_eq!(
                { codec }.decode(&mut buf).unwrap(),
                Some(want),
                "{} strict={strict}: no verdict after {n} bytes",
                s.file
            );
            assert_eq!(&buf[..], &s.bytes[..n], "{}: buffer changed", s.file);
        }
    }
}

#[test]
fn eof_before_a_decision_is_epipe_for_every_sample_prefix() {
    for s in corpus() {
        for (codec, strict) in [
            (TlsDetectCodec::new(), false),
            (TlsDetectCodec::strict(), true),
        ] {
            for k in 0..decision_len(&s.file, strict) {
                let outcome = run_chunks(one_shot(codec)(), &[&s.bytes[..k]]);
                assert_eq!(outcome.frames, vec![], "{}", s.file);
                assert_eq!(
                    outcome.eof,
                    Some(Eof::Error {
                        kind: ErrorKind::BrokenPipe,
                        leftover: k
                    }),
                    "{} strict={strict} after {k} bytes",
                    s.file
                );
            }
        }
    }
}

/// RT-tlsdetect-3/4, each checked against AnyEvent::Handle 7.17.
#[test]
fn anyevent_verified_examples() {
    let tls = |major, minor| TlsDetect::Tls { major, minor };
    let cases: &[(&[u8], TlsDetect)] = &[
        (&[0x80, 0x2e, 0x01, 0x03, 0x01, 0x00], tls(3, 1)),
        (b"G", TlsDetect::NotTls),
        (b"GET ", TlsDetect::NotTls),
        (&[0x16, 0x02], TlsDetect::NotTls),
        (&[0x17], TlsDetect::NotTls),
        (&[0x16, 0x03, 0x01, 0x41], TlsDetect::NotTls),
        (&[0x80, 0x2e, 0x02], TlsDetect::NotTls),
        (&[0x16, 0x04, 0x09, 0x00], tls(4, 9)),
    ];
    for &(input, want) in cases {
        check(TlsDetectCodec::new(), input, want, &format!("{input:02x?}"));
    }
    // EOF while undecided: EPIPE, fatal, bytes left in the buffer.
    let undecided: &[&[u8]] = &[
        b"",
        &[0x16],
        &[0x16, 0x03, 0x01],
        &[0x80, 0x2e, 0x01, 0x03, 0x01],
    ];
    for &input in undecided {
        let mut buf = BytesMut::from(input);
        let mut codec = TlsDetectCodec::new();
        assert_eq!(codec.decode(&mut buf).unwrap(), None, "{input:02x?}");
        let err = codec.decode_eof(&mut buf).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BrokenPipe, "{input:02x?}");
        assert!(err.is_fatal() && err.is_incomplete(), "{input:02x?}");
        assert_eq!(err.codec(), "tls_detect");
        assert_eq!(&buf[..], input, "{input:02x?}: bytes must stay");
    }
}

#[test]
fn the_verdict_repeats_and_never_consumes() {
    let mut codec = TlsDetectCodec::new();
    let mut buf = BytesMut::from(&b"EHLO x\r\n"[..]);
    for _ in 0..3 {
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(TlsDetect::NotTls));
        assert_eq!(codec.decode_eof(&mut buf).unwrap(), Some(TlsDetect::NotTls));
    }
    assert_eq!(&buf[..], b"EHLO x\r\n");
}

proptest! {
    #[test]
    fn random_chunkings_of_corpus_samples_agree(
        pick in 0usize..20,
        sizes in proptest::collection::vec(1usize..8, 1..8),
        strict in any::<bool>(),
        sslv2 in any::<bool>(),
    ) {
        let samples = corpus();
        let s = &samples[pick % samples.len()];
        let codec = if strict { TlsDetectCodec::strict() } else { TlsDetectCodec::new() };
        assert_sized_matches_whole(one_shot(codec.sslv2(sslv2)), &s.bytes, &sizes);
    }

    #[test]
    fn any_input_is_split_invariant(
        input in proptest::collection::vec(
            prop_oneof![Just(0x16u8), Just(0x03), Just(0x80), Just(0x01), Just(0x40), any::<u8>()],
            0..10,
        ),
        strict in any::<bool>(),
    ) {
        let codec = if strict { TlsDetectCodec::strict() } else { TlsDetectCodec::new() };
        let outcome = assert_split_invariant(one_shot(codec), &input);
        // Decided: the whole input is left over. Undecided: EPIPE, all kept.
        match outcome.eof {
            Some(Eof::Clean { leftover }) => {
                prop_assert_eq!(outcome.frames.len(), 1);
                prop_assert_eq!(leftover, input);
            }
            Some(Eof::Error { kind, leftover }) => {
                prop_assert!(outcome.frames.is_empty());
                prop_assert_eq!(kind, ErrorKind::BrokenPipe);
                prop_assert_eq!(leftover, input.len());
                prop_assert!(input.len() < 6);
            }
            None => prop_assert!(false, "no error is possible before EOF"),
        }
    }
}
