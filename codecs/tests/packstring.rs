//! PackstringCodec and PackFormat: every format, BER edge cases, limits
//! before the body, fragmentation invariance and the encoder's refusals.

mod support;

use anyframe_codecs::{DEFAULT_PACKSTRING_MAX_LENGTH, ErrorKind, PackFormat, PackstringCodec};
use bytes::BytesMut;
use proptest::prelude::*;
use support::{Eof, assert_sized_matches_whole, assert_split_invariant};
use tokio_util::codec::{Decoder, Encoder};

fn encode(fmt: PackFormat, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    PackstringCodec::new(fmt)
        .encode(payload, &mut out)
        .expect("fits");
    out.to_vec()
}

#[test]
fn perl_letters_parse_to_formats_and_back() {
    for (letter, fmt) in [
        ("C", PackFormat::U8),
        ("n", PackFormat::U16Be),
        ("v", PackFormat::U16Le),
        ("N", PackFormat::U32Be),
        ("V", PackFormat::U32Le),
        ("w", PackFormat::Ber),
        ("Q>", PackFormat::U64Be),
        ("Q<", PackFormat::U64Le),
    ] {
        assert_eq!(letter.parse::<PackFormat>().unwrap(), fmt);
        assert_eq!(PackFormat::try_from(letter).unwrap(), fmt);
        assert_eq!(fmt.to_string(), letter);
    }
}

#[test]
fn unsupported_letters_are_a_typed_error() {
    for bad in ["", "c", "Q", "L", "s<", "NN", "n!", "j", "W"] {
        let err = bad.parse::<PackFormat>().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad:?}");
        assert_eq!(err.codec(), "packstring");
    }
}

#[test]
fn prefixes_are_what_perl_pack_writes() {
    assert_eq!(encode(PackFormat::U8, b"hi"), b"\x02hi");
    assert_eq!(encode(PackFormat::U16Be, b"hello"), b"\x00\x05hello");
    assert_eq!(encode(PackFormat::U16Le, b"hello"), b"\x05\x00hello");
    assert_eq!(encode(PackFormat::U32Be, b"abc"), b"\x00\x00\x00\x03abc");
    assert_eq!(encode(PackFormat::U32Le, b"abc"), b"\x03\x00\x00\x00abc");
    assert_eq!(encode(PackFormat::U64Be, b"a"), b"\0\0\0\0\0\0\0\x01a");
    assert_eq!(encode(PackFormat::U64Le, b"a"), b"\x01\0\0\0\0\0\0\0a");
    assert_eq!(encode(PackFormat::Ber, b""), b"\x00");
}

#[test]
fn ber_lengths_are_big_endian_base_128() {
    for (len, prefix) in [
        (0usize, &b"\x00"[..]),
        (1, b"\x01"),
        (127, b"\x7f"),
        (128, b"\x81\x00"),
        (300, b"\x82\x2c"),
        (16383, b"\xff\x7f"),
        (16384, b"\x81\x80\x00"),
    ] {
        let payload = vec![b'x'; len];
        let frame = encode(PackFormat::Ber, &payload);
        assert_eq!(&frame[..prefix.len()], prefix, "{len}");
        assert_eq!(PackFormat::Ber.prefix_len(len as u64), prefix.len());
        let mut codec = PackstringCodec::new(PackFormat::Ber);
        let mut buf = BytesMut::from(&frame[..]);
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap().len(), len);
        assert!(buf.is_empty());
    }
}

#[test]
fn over_long_ber_is_a_fatal_bad_message() {
    let mut codec = PackstringCodec::new(PackFormat::Ber);
    let mut buf = BytesMut::from(&b"\x80\x01x"[..]);
    let err = codec.decode(&mut buf).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadMessage);
    assert!(err.is_fatal());
    assert_eq!(buf.len(), 3, "nothing consumed");
}

#[test]
fn ber_past_u64_is_a_fatal_bad_message() {
    let mut input = vec![0x82];
    input.extend([0xff; 8]);
    input.push(0x7f); // 2 * 2^63 + ...: 65 bits
    let out = assert_split_invariant(|| PackstringCodec::new(PackFormat::Ber), &input);
    assert_eq!(out.error, Some((0, ErrorKind::BadMessage, true)));
    // And a run of continuation bytes fails after ten bytes at most
    // instead of waiting forever.
    let out = assert_split_invariant(|| PackstringCodec::new(PackFormat::Ber), &[0x81; 10]);
    assert_eq!(out.error, Some((0, ErrorKind::BadMessage, true)));
}

#[test]
fn ber_u64_max_is_read_and_refused_by_the_limit() {
    let mut input = vec![0x81];
    input.extend([0xff; 8]);
    input.push(0x7f);
    let mut codec = PackstringCodec::new(PackFormat::Ber);
    let mut buf = BytesMut::from(&input[..]);
    let err = codec.decode(&mut buf).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoSpace);
    assert_eq!(err.seen(), Some(u64::MAX));
}

#[test]
fn incomplete_ber_waits_and_fails_at_eof() {
    let out = assert_split_invariant(|| PackstringCodec::new(PackFormat::Ber), b"\x81\x80");
    assert_eq!(out.frames, Vec::<bytes::Bytes>::new());
    assert_eq!(
        out.eof,
        Some(Eof::Error {
            kind: ErrorKind::BrokenPipe,
            leftover: 2
        })
    );
}

#[test]
fn declared_length_is_checked_before_the_body_arrives() {
    let mut codec = PackstringCodec::with_max_length(PackFormat::U32Be, 10);
    let mut buf = BytesMut::from(&b"\x00\x00\x00\x0b"[..]);
    let err = codec.decode(&mut buf).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoSpace);
    assert!(err.is_fatal() && err.is_limit());
    assert_eq!((err.limit(), err.seen()), (Some(10), Some(11)));
    assert_eq!(buf.len(), 4, "nothing consumed");
    let out = assert_split_invariant(
        || PackstringCodec::with_max_length(PackFormat::U16Be, 3),
        b"\x00\x03abc\x00\x04abcd",
    );
    assert_eq!(out.frames, vec!["abc"]);
    assert_eq!(out.error, Some((1, ErrorKind::NoSpace, true)));
}

#[test]
fn a_large_declared_length_reserves_only_a_capped_amount() {
    let mut codec = PackstringCodec::new(PackFormat::U32Be);
    let mut buf = BytesMut::from(&b"\x00\xff\xff\xffab"[..]);
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert!(buf.capacity() <= 128 * 1024, "{}", buf.capacity());
}

#[test]
fn partial_frame_at_eof_keeps_prefix_and_payload() {
    let mut codec = PackstringCodec::new(PackFormat::U16Be);
    let mut buf = BytesMut::from(&b"\x00\x05hel"[..]);
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    let err = codec.decode_eof(&mut buf).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrokenPipe);
    assert_eq!(err.seen(), Some(5));
    assert_eq!(buf, &b"\x00\x05hel"[..]);
    // Completing the frame later still works.
    buf.extend_from_slice(b"lo");
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), "hello");
}

#[test]
fn every_format_is_split_invariant() {
    for fmt in PackFormat::ALL {
        let mut input = encode(fmt, b"");
        input.extend(encode(fmt, b"one"));
        input.extend(encode(fmt, &[7u8; 130]));
        input.extend(&encode(fmt, b"cut")[..2]);
        let out = assert_split_invariant(|| PackstringCodec::new(fmt), &input);
        assert_eq!(out.frames.len(), 3, "{fmt}");
        assert_eq!(out.frames[1], "one");
        assert!(matches!(
            out.eof,
            Some(Eof::Error {
                kind: ErrorKind::BrokenPipe,
                ..
            })
        ));
    }
}

#[test]
fn encoder_refuses_payloads_that_do_not_fit_the_field() {
    let mut out = BytesMut::new();
    for (fmt, len) in [
        (PackFormat::U8, 256usize),
        (PackFormat::U16Be, 65_536),
        (PackFormat::U16Le, 70_000),
    ] {
        let err = PackstringCodec::with_max_length(fmt, usize::MAX)
            .encode(vec![0u8; len], &mut out)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{fmt}");
        assert!(!err.is_fatal());
    }
    assert!(out.is_empty(), "nothing written");
    PackstringCodec::new(PackFormat::U8)
        .encode(vec![0u8; 255], &mut out)
        .unwrap();
    assert_eq!(out.len(), 256);
}

#[test]
fn encoder_refuses_payloads_over_max_length() {
    let mut out = BytesMut::new();
    let mut codec = PackstringCodec::with_max_length(PackFormat::U32Be, 4);
    let err = codec.encode("hello", &mut out).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(out.is_empty());
    codec.encode("hell", &mut out).unwrap();
    assert_eq!(out, &b"\0\0\0\x04hell"[..]);
}

#[test]
fn codec_reports_its_format_and_limit() {
    let codec = PackstringCodec::new(PackFormat::U16Le);
    assert_eq!(codec.format(), PackFormat::U16Le);
    assert_eq!(codec.max_length(), DEFAULT_PACKSTRING_MAX_LENGTH);
    let codec = PackstringCodec::with_max_length(PackFormat::Ber, 1234);
    assert_eq!(codec.format(), PackFormat::Ber);
    assert_eq!(codec.max_length(), 1234);
}

#[test]
fn frames_are_split_off_without_copying() {
    let mut codec = PackstringCodec::new(PackFormat::U8);
    let mut buf = BytesMut::from(&b"\x03abc"[..]);
    let base = buf.as_ptr() as usize;
    let f = codec.decode(&mut buf).unwrap().unwrap();
    assert_eq!(f.as_ptr() as usize, base + 1);
}

fn any_format() -> impl Strategy<Value = PackFormat> {
    proptest::sample::select(PackFormat::ALL.to_vec())
}

proptest! {
    #[test]
    fn round_trip(
        fmt in any_format(),
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..6),
    ) {
        let mut codec = PackstringCodec::new(fmt);
        let mut buf = BytesMut::new();
        let mut expect = Vec::new();
        for p in &payloads {
            match codec.encode(p, &mut buf) {
                Ok(()) => expect.push(p.clone()),
                Err(e) => {
                    prop_assert_eq!(fmt, PackFormat::U8);
                    prop_assert!(p.len() > 255);
                    prop_assert_eq!(e.kind(), ErrorKind::InvalidInput);
                }
            }
        }
        let mut got = Vec::new();
        while let Some(f) = codec.decode_eof(&mut buf).unwrap() {
            got.push(f.to_vec());
        }
        prop_assert_eq!(got, expect);
    }

    #[test]
    fn random_chunkings_match_the_whole_input(
        fmt in any_format(),
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..6),
        junk in proptest::collection::vec(any::<u8>(), 0..12),
        max in 0usize..50,
        sizes in proptest::collection::vec(1usize..16, 1..8),
    ) {
        let mut input = Vec::new();
        for p in &payloads {
            input.extend(encode(fmt, p));
        }
        input.extend(junk);
        assert_sized_matches_whole(|| PackstringCodec::with_max_length(fmt, max), &input, &sizes);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        fmt in any_format(),
        input in proptest::collection::vec(any::<u8>(), 0..64),
        sizes in proptest::collection::vec(1usize..16, 1..8),
    ) {
        assert_sized_matches_whole(|| PackstringCodec::with_max_length(fmt, 64), &input, &sizes);
    }
}

/// RT-packstring-1: an overflowing BER length is `EBADMSG`, fatal, as soon
/// as the overflow is certain: after `82 80 .. 80` (the value is already
/// 2^57 and another group must follow) no byte can make it fit in a `u64`,
/// so the input need not go on, and its end there is no `EPIPE`.
#[test]
fn ber_overflow_is_a_bad_message_as_soon_as_it_is_certain() {
    let prefix = [0x82, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80];
    for decode_eof in [false, true] {
        let mut buf = BytesMut::from(&prefix[..]);
        let mut codec = PackstringCodec::new(PackFormat::Ber);
        let r = if decode_eof {
            codec.decode_eof(&mut buf)
        } else {
            codec.decode(&mut buf)
        };
        let e = r.expect_err("the overflow is certain");
        assert_eq!(
            (e.kind(), e.is_fatal()),
            (ErrorKind::BadMessage, true),
            "{e:?}"
        );
        assert_eq!(e.bytes(), &prefix[..], "the bytes that decided it");
        assert_eq!(buf.len(), prefix.len(), "nothing consumed");
    }
}
