//! NetstringCodec: AE's verified examples, the strict header, limits,
//! errors and what they consume, fragmentation invariance, the encoder.

mod support;

use anyframe_codecs::{DEFAULT_NETSTRING_MAX_LENGTH, ErrorKind, NetstringCodec};
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use support::{
    Eof, Event, assert_continuing_invariant, assert_sized_matches_whole, assert_split_invariant,
    run_continuing,
};
use tokio_util::codec::{Decoder, Encoder};

#[test]
fn netstrings_decode_however_split() {
    let out = assert_split_invariant(NetstringCodec::new, b"5:hello,0:,6:0:xx,,,");
    assert_eq!(out.frames, vec!["hello", "", "0:xx,,"]);
    assert_eq!(out.eof, Some(Eof::Clean { leftover: vec![] }));
}

#[test]
fn bad_headers_are_non_fatal_and_consume_nothing_as_in_ae() {
    for (input, offset, says) in [
        (&b"01:x,"[..], 1, "leading zero"),
        (b"x", 0, "not `<digits>:`"),
        (b"-1:", 0, "not `<digits>:`"),
        (b":x,", 0, "empty netstring length"),
        (b"12x", 2, "not `<digits>:`"),
        (b" 1:x,", 0, "not `<digits>:`"),
    ] {
        let mut codec = NetstringCodec::new();
        let mut buf = BytesMut::from(input);
        let err = codec.decode(&mut buf).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadMessage, "{input:?}");
        assert!(err.to_string().contains(says), "{input:?}: {err}");
        assert!(!err.is_fatal());
        assert_eq!(err.offset(), Some(offset), "{input:?}");
        assert_eq!(&buf[..], input, "nothing consumed");
        // The same error comes back on the next call.
        assert_eq!(
            codec.decode(&mut buf).unwrap_err().kind(),
            ErrorKind::BadMessage
        );
    }
}

#[test]
fn a_bad_header_is_reported_at_the_same_frame_however_split() {
    let out = assert_split_invariant(NetstringCodec::new, b"1:a,01:x,");
    assert_eq!(out.frames, vec!["a"]);
    assert_eq!(out.error, Some((1, ErrorKind::BadMessage, false)));
}

#[test]
fn digits_only_header_waits() {
    let mut codec = NetstringCodec::new();
    let mut buf = BytesMut::from("12");
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    let err = codec.decode_eof(&mut buf).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrokenPipe);
    assert_eq!(err.seen(), Some(2));
    assert_eq!(buf, "12");
}

#[test]
fn bad_trailer_drops_payload_and_odd_byte_then_goes_on() {
    let events = assert_continuing_invariant(NetstringCodec::new, b"3:abcX3:def,");
    assert_eq!(
        events,
        vec![
            Event::Error(ErrorKind::BadMessage, false),
            Event::Frame(Bytes::from_static(b"def")),
            Event::End(Ok(vec![])),
        ]
    );
    let mut codec = NetstringCodec::new();
    let mut buf = BytesMut::from("3:abcX3:def,");
    let err = codec.decode(&mut buf).unwrap_err();
    assert_eq!(err.bytes(), b"X");
    assert_eq!(buf, "3:def,");
}

#[test]
fn length_over_the_limit_is_fatal_as_soon_as_the_digits_show_it() {
    let make = || NetstringCodec::with_max_length(100);
    // 101 > 100: known at the third digit, before any ':'.
    let mut codec = make();
    let mut buf = BytesMut::from("101");
    let err = codec.decode(&mut buf).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoSpace);
    assert!(err.is_fatal() && err.is_limit());
    assert_eq!((err.limit(), err.seen()), (Some(100), Some(101)));
    assert_eq!(buf, "101", "nothing consumed");
    // More digits than the limit has.
    let out = assert_split_invariant(make, b"100:");
    assert_eq!(out.error, None);
    let out = assert_split_invariant(make, b"1000");
    assert_eq!(out.error, Some((0, ErrorKind::NoSpace, true)));
    let out = assert_split_invariant(make, b"2:ab,999999999999999999999999");
    assert_eq!(out.frames, vec!["ab"]);
    assert_eq!(out.error, Some((1, ErrorKind::NoSpace, true)));
    // The size reported is past the limit, not the value before the digit
    // that took it there.
    let err = NetstringCodec::with_max_length(99)
        .decode(&mut BytesMut::from("100:"))
        .unwrap_err();
    assert_eq!((err.limit(), err.seen()), (Some(99), Some(100)));
}

#[test]
fn the_unbounded_limit_does_not_overflow() {
    let mut codec = NetstringCodec::with_max_length(usize::MAX);
    let mut buf = BytesMut::from("99999999999999999999999:");
    assert_eq!(
        codec.decode(&mut buf).unwrap_err().kind(),
        ErrorKind::NoSpace
    );
}

#[test]
fn a_large_declared_length_reserves_only_a_capped_amount() {
    let mut codec = NetstringCodec::new();
    let mut buf = BytesMut::from("16000000:ab");
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert!(buf.capacity() <= 128 * 1024, "{}", buf.capacity());
}

#[test]
fn partial_netstring_at_eof_keeps_header_and_payload() {
    let out = assert_split_invariant(NetstringCodec::new, b"1:a,5:hel");
    assert_eq!(out.frames, vec!["a"]);
    assert_eq!(
        out.eof,
        Some(Eof::Error {
            kind: ErrorKind::BrokenPipe,
            leftover: 5
        })
    );
    let mut codec = NetstringCodec::new();
    let mut buf = BytesMut::from("5:hello");
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert!(codec.decode_eof(&mut buf).unwrap_err().is_incomplete());
    assert_eq!(buf, "5:hello");
}

#[test]
fn encoder_writes_length_colon_payload_comma() {
    let mut codec = NetstringCodec::new();
    let mut out = BytesMut::new();
    codec.encode("", &mut out).unwrap();
    codec.encode("0:xx,,", &mut out).unwrap();
    codec.encode(vec![b'a'; 12], &mut out).unwrap();
    assert_eq!(out, "0:,6:0:xx,,,12:aaaaaaaaaaaa,");
}

#[test]
fn encoder_refuses_payloads_over_the_limit() {
    let mut codec = NetstringCodec::with_max_length(3);
    let mut out = BytesMut::new();
    let err = codec.encode("abcd", &mut out).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(out.is_empty());
    codec.encode("abc", &mut out).unwrap();
    assert_eq!(out, "3:abc,");
}

#[test]
fn codec_reports_its_limit() {
    assert_eq!(
        NetstringCodec::new().max_length(),
        DEFAULT_NETSTRING_MAX_LENGTH
    );
    assert_eq!(NetstringCodec::with_max_length(1234).max_length(), 1234);
}

proptest! {
    #[test]
    fn round_trip(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..8)) {
        let mut codec = NetstringCodec::new();
        let mut buf = BytesMut::new();
        for p in &payloads {
            codec.encode(p, &mut buf).unwrap();
        }
        let mut got = Vec::new();
        while let Some(f) = codec.decode_eof(&mut buf).unwrap() {
            got.push(f.to_vec());
        }
        prop_assert_eq!(got, payloads);
    }

    #[test]
    fn random_chunkings_match_the_whole_input(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..30), 0..6),
        tail in "[0-9:,x]{0,6}",
        max in 0usize..40,
        sizes in proptest::collection::vec(1usize..16, 1..8),
    ) {
        let mut input = Vec::new();
        for p in &payloads {
            input.extend(format!("{}:", p.len()).as_bytes());
            input.extend(p);
            input.push(b',');
        }
        input.extend(tail.as_bytes());
        let make = || NetstringCodec::with_max_length(max);
        assert_sized_matches_whole(make, &input, &sizes);
        let chunks: Vec<&[u8]> = input.chunks(sizes[0]).collect();
        prop_assert_eq!(run_continuing(make(), &chunks), run_continuing(make(), &[&input[..]]));
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        input in proptest::collection::vec(any::<u8>(), 0..64),
        sizes in proptest::collection::vec(1usize..16, 1..8),
    ) {
        assert_sized_matches_whole(|| NetstringCodec::with_max_length(20), &input, &sizes);
    }
}
