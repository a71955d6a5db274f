//! `RawCborCodec` and `CborCodec` on CBOR that is not well-formed, generated
//! from the error categories of RFC 8949 Appendix F, in every position an
//! item can take (top level, array element, map key and value, tag content,
//! inside indefinite-length items), after a complete item, and split in
//! every way.
//!
//! Two classes, as a stream framer sees them:
//!
//! * **truncated**: a valid prefix of a data item. The framer waits for more
//!   bytes and fails only at end of input, with every byte still buffered.
//! * **malformed**: no bytes that follow can make it well-formed. The framer
//!   fails with `EBADMSG` as soon as the offending byte has arrived, and not
//!   one byte earlier.

mod support;

use anyframe_codecs::{CborCodec, ErrorKind, RawCborCodec};
use bytes::{Bytes, BytesMut};
use support::corpus::{data, every_split, hex, tsv};
use support::{Eof, Outcome, run_chunks};
use tokio_util::codec::Decoder;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Class {
    Truncated,
    /// The index of the first byte that cannot be part of a well-formed
    /// item.
    Malformed {
        at: usize,
    },
}

/// One generated input.
#[derive(Debug, Clone)]
struct Case {
    category: &'static str,
    bytes: Vec<u8>,
    class: Class,
}

/// A malformation or truncation before it is placed somewhere.
struct Kernel {
    category: &'static str,
    bytes: Vec<u8>,
    class: Class,
    /// A lone break (`ff`): directly inside an indefinite-length array, or
    /// in key position of an indefinite-length map, it is well-formed (it
    /// closes the container), so it is not placed there.
    lone_break: bool,
}

fn head(major: u8, ai: u8) -> u8 {
    (major << 5) | ai
}

/// The head of major type `major` with argument `n`, in preferred
/// (shortest) form.
fn head_with(major: u8, n: u64) -> Vec<u8> {
    match n {
        0..=23 => vec![head(major, n as u8)],
        24..=0xff => vec![head(major, 24), n as u8],
        0x100..=0xffff => [&[head(major, 25)][..], &(n as u16).to_be_bytes()].concat(),
        0x1_0000..=0xffff_ffff => [&[head(major, 26)][..], &(n as u32).to_be_bytes()].concat(),
        _ => [&[head(major, 27)][..], &n.to_be_bytes()].concat(),
    }
}

fn truncated(category: &'static str, bytes: Vec<u8>) -> Kernel {
    Kernel {
        category,
        bytes,
        class: Class::Truncated,
        lone_break: false,
    }
}

fn malformed(category: &'static str, bytes: Vec<u8>, at: usize) -> Kernel {
    assert!(at < bytes.len());
    Kernel {
        category,
        bytes,
        class: Class::Malformed { at },
        lone_break: false,
    }
}

/// Appendix F.1's categories, spelled out over every major type and every
/// argument width where the category allows.
fn kernels() -> Vec<Kernel> {
    let mut k = Vec::new();

    // --- Too little data ---------------------------------------------------
    // End of input in a head: an argument of 1, 2, 4 or 8 bytes cut short.
    for major in 0..8 {
        for ai in 24..=27u8 {
            let width = 1usize << (ai - 24);
            for have in 0..width {
                let mut b = vec![head(major, ai)];
                b.extend(std::iter::repeat_n(0x01, have));
                k.push(truncated("end of input in a head", b));
            }
        }
    }
    // Definite-length strings with short data, for each argument width.
    for major in [2, 3] {
        for (len, have) in [
            (1u64, 0usize),
            (5, 3),
            (24, 23),
            (300, 1),
            (70_000, 2),
            (0xffff_ffff, 1),
            (0x7fff_ffff_ffff_ffff, 3),
        ] {
            let mut b = head_with(major, len);
            b.extend(std::iter::repeat_n(b'a', have));
            k.push(truncated("definite-length string with short data", b));
        }
    }
    // Definite-length arrays and maps not closed with enough items.
    for (major, per_item) in [(4u8, 1usize), (5, 2)] {
        for (len, have) in [(1u64, 0usize), (2, 1), (24, 5), (300, 0), (70_000, 3)] {
            let mut b = head_with(major, len);
            b.extend(std::iter::repeat_n(0x00, have * per_item));
            k.push(truncated("definite-length container short of items", b));
        }
    }
    k.push(truncated("map with a key and no value", hex("a100")));
    k.push(truncated("map with a key and no value", hex("a2000000")));
    k.push(truncated(
        "definite-length container short of items",
        hex("818181818181818181"),
    ));
    // A tag number not followed by its content, for each argument width.
    for n in [0u64, 24, 256, 65_536, 1 << 32] {
        k.push(truncated("tag without content", head_with(6, n)));
    }
    // Indefinite-length strings, arrays and maps not closed by a break.
    for b in [
        "5f",
        "5f4100",
        "5f40",
        "7f",
        "7f6161",
        "7f60",
        "9f",
        "9f0102",
        "bf",
        "bf01020102",
        "bf01",
        "819f",
        "9f8000",
        "9f9f9f9f9fffffffff",
        "9f819f819f9fffffff",
    ] {
        k.push(truncated("indefinite-length item not closed", hex(b)));
    }

    // --- Malformed -----------------------------------------------------------
    // Reserved additional information values 28 to 30, in every major type.
    for major in 0..8 {
        for ai in 28..=30 {
            k.push(malformed(
                "reserved additional information",
                vec![head(major, ai)],
                0,
            ));
        }
    }
    // Additional information 31 (indefinite length) on major types 0, 1, 6.
    for major in [0, 1, 6] {
        k.push(malformed(
            "indefinite length on a major type without one",
            vec![head(major, 31)],
            0,
        ));
    }
    // Two-byte encodings of simple values below 32.
    for v in 0..32 {
        k.push(malformed(
            "reserved two-byte simple value",
            vec![0xf8, v],
            1,
        ));
    }
    // Chunks of an indefinite-length string that are not definite-length
    // strings of the same major type.
    for outer in [2u8, 3] {
        let wrong = [
            vec![0x00],
            vec![0x21],
            head_with(5 - outer, 1).into_iter().chain([b'a']).collect(),
            vec![0x80],
            vec![0xa0],
            vec![0xc0, 0x00],
            vec![0xf4],
            vec![0xe0],
            vec![0xf9, 0x3c, 0x00],
        ];
        for chunk in wrong {
            let b = [&[head(outer, 31)][..], &chunk, &[0xff]].concat();
            k.push(malformed(
                "indefinite-length string chunk of the wrong type",
                b,
                1,
            ));
        }
        let nested = [
            head(outer, 31),
            head(outer, 31),
            head(outer, 1),
            b'a',
            0xff,
            0xff,
        ];
        k.push(malformed(
            "indefinite-length string chunk of indefinite length",
            nested.to_vec(),
            1,
        ));
    }
    // A break on its own, outside any indefinite-length item.
    k.push(Kernel {
        lone_break: true,
        ..malformed("break outside an indefinite-length item", vec![0xff], 0)
    });
    // A break inside a definite-length array or map, or as tag content.
    for (b, at) in [
        ("81ff", 1),
        ("8200ff", 2),
        ("a1ff", 1),
        ("a100ff", 2),
        ("a20000ff", 3),
        ("c0ff", 1),
        ("d820ff", 2),
        ("9f81ff", 2),
        ("9f829f819f9fffffffff", 9),
    ] {
        k.push(malformed(
            "break in a definite-length item or a tag",
            hex(b),
            at,
        ));
    }
    // A break in the value position of an indefinite-length map (an odd
    // number of items).
    for (b, at) in [("bf00ff", 2), ("bf000000ff", 4), ("bf6161ff", 3)] {
        k.push(malformed(
            "break in an indefinite-length map's value position",
            hex(b),
            at,
        ));
    }
    k
}

/// Where a kernel is placed: the bytes before it, and whether the slot is
/// directly inside an indefinite-length array or in key position of an
/// indefinite-length map (where a lone break is a legitimate end).
const SLOTS: [(&str, bool); 10] = [
    ("", false),
    ("81", false),
    ("8200", false),
    ("a1", false),
    ("a100", false),
    ("c6", false),
    ("9f", true),
    ("bf", true),
    ("bf00", false),
    ("9f81a100", false),
];

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for k in kernels() {
        for (before, break_closes) in SLOTS {
            if k.lone_break && break_closes {
                continue;
            }
            let before = hex(before);
            let class = match k.class {
                Class::Truncated => Class::Truncated,
                Class::Malformed { at } => Class::Malformed {
                    at: before.len() + at,
                },
            };
            out.push(Case {
                category: k.category,
                bytes: [&before[..], &k.bytes].concat(),
                class,
            });
        }
    }
    // Every strict prefix of every example of RFC 8949 Appendix A.
    for row in tsv(&data("cbor/rfc8949-appendix-a.tsv")) {
        let item = hex(&row[0]);
        for end in 1..item.len() {
            out.push(Case {
                category: "strict prefix of an Appendix A example",
                bytes: item[..end].to_vec(),
                class: Class::Truncated,
            });
        }
    }
    out
}

fn unlimited() -> RawCborCodec {
    RawCborCodec::with_limits(usize::MAX, usize::MAX)
}

/// What the framer must do with `bytes`, after `frames` complete items.
fn expected(frames: Vec<Bytes>, bytes: &[u8], class: Class) -> Outcome<Bytes> {
    let n = frames.len();
    match class {
        Class::Truncated => Outcome {
            frames,
            error: None,
            eof: Some(Eof::Error {
                kind: ErrorKind::BrokenPipe,
                leftover: bytes.len(),
            }),
        },
        Class::Malformed { .. } => Outcome {
            frames,
            error: Some((n, ErrorKind::BadMessage, false)),
            eof: None,
        },
    }
}

#[test]
fn the_generator_covers_every_category() {
    let cases = cases();
    let count = |c: &str| cases.iter().filter(|x| x.category == c).count();
    for category in [
        "end of input in a head",
        "definite-length string with short data",
        "definite-length container short of items",
        "map with a key and no value",
        "tag without content",
        "indefinite-length item not closed",
        "reserved additional information",
        "indefinite length on a major type without one",
        "reserved two-byte simple value",
        "indefinite-length string chunk of the wrong type",
        "indefinite-length string chunk of indefinite length",
        "break outside an indefinite-length item",
        "break in a definite-length item or a tag",
        "break in an indefinite-length map's value position",
        "strict prefix of an Appendix A example",
    ] {
        assert!(count(category) > 0, "{category}");
    }
    let malformed = cases
        .iter()
        .filter(|c| matches!(c.class, Class::Malformed { .. }))
        .count();
    assert_eq!((cases.len(), malformed), (3015, 918));
}

#[test]
fn raw_framer_classifies_every_generated_input_however_split() {
    for case in cases() {
        let ctx = format!("{} {:02x?}", case.category, case.bytes);
        let got = every_split(unlimited, &case.bytes);
        assert_eq!(got, expected(vec![], &case.bytes, case.class), "{ctx}");
    }
}

#[test]
fn malformed_input_fails_at_the_offending_byte_and_not_before() {
    for case in cases() {
        let Class::Malformed { at } = case.class else {
            continue;
        };
        let ctx = format!("{} {:02x?}", case.category, case.bytes);
        // Everything before the offending byte is a valid prefix: it waits.
        let mut buf = BytesMut::from(&case.bytes[..at]);
        assert!(
            matches!(unlimited().decode(&mut buf), Ok(None)),
            "{ctx}: before byte {at}"
        );
        assert_eq!(buf.len(), at, "{ctx}: nothing consumed while waiting");
        // With the offending byte the error comes without waiting for more.
        let mut buf = BytesMut::from(&case.bytes[..=at]);
        let err = unlimited().decode(&mut buf).expect_err(&ctx);
        assert_eq!(err.kind(), ErrorKind::BadMessage, "{ctx}");
        assert!(!err.is_limit(), "{ctx}: a limit, not a malformation");
    }
}

#[test]
fn a_complete_item_before_the_bad_bytes_is_still_delivered() {
    let items = ["00", "80", "a0", "9fff", "c600", "5f41614161ff"].map(hex);
    for case in cases()
        .iter()
        .filter(|c| c.category != "strict prefix of an Appendix A example")
    {
        for item in &items {
            let input = [&item[..], &case.bytes].concat();
            let ctx = format!("{} {:02x?}", case.category, input);
            let got = every_split(unlimited, &input);
            let frame = Bytes::copy_from_slice(item);
            let mut want = expected(vec![frame], &case.bytes, case.class);
            if let Some(Eof::Error { leftover, .. }) = &mut want.eof {
                *leftover = case.bytes.len();
            }
            assert_eq!(got, want, "{ctx}");
        }
    }
}

#[test]
fn typed_codec_rejects_or_waits_like_the_framer() {
    for case in cases() {
        let ctx = format!("{} {:02x?}", case.category, case.bytes);
        let whole = run_chunks(CborCodec::<serde_cbor::Value>::new(), &[&case.bytes]);
        let bad = whole.error == Some((0, ErrorKind::BadMessage, false));
        match case.class {
            Class::Malformed { .. } => {
                assert!(whole.frames.is_empty() && bad, "{ctx}: {whole:?}");
            }
            // With the default limits, a declared length over the size limit
            // fails at its head instead of waiting for bytes that would be
            // refused anyway.
            Class::Truncated => {
                let waits = whole == expected(vec![], &case.bytes, case.class).map_frames();
                assert!(waits || bad, "{ctx}: {whole:?}");
                if bad {
                    let mut buf = BytesMut::from(&case.bytes[..]);
                    let err = CborCodec::<serde_cbor::Value>::new()
                        .decode(&mut buf)
                        .expect_err(&ctx);
                    assert!(err.is_limit(), "{ctx}: {err}");
                    assert_eq!(buf.len(), case.bytes.len(), "{ctx}: nothing consumed");
                }
            }
        }
    }
}

trait MapFrames {
    fn map_frames(self) -> Outcome<serde_cbor::Value>;
}

impl MapFrames for Outcome<Bytes> {
    /// The same outcome for a decoder of values (only for outcomes with no
    /// frames).
    fn map_frames(self) -> Outcome<serde_cbor::Value> {
        assert!(self.frames.is_empty());
        Outcome {
            frames: vec![],
            error: self.error,
            eof: self.eof,
        }
    }
}
