//! RawCodec: a pass-through that never fails.

mod support;

use anyframe_codecs::RawCodec;
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use support::{Eof, run_chunks, run_sized};
use tokio_util::codec::{Decoder, Encoder};

#[test]
fn decoder_yields_what_is_buffered() {
    let mut codec = RawCodec::new();
    let mut buf = BytesMut::from("abc");
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), "abc");
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
}

#[test]
fn frames_follow_the_reads_and_end_cleanly() {
    let out = run_chunks(RawCodec::new(), &[b"ab", b"", b"cde"]);
    assert_eq!(out.frames, vec!["ab", "cde"]);
    assert_eq!(out.error, None);
    assert_eq!(out.eof, Some(Eof::Clean { leftover: vec![] }));
}

#[test]
fn encoder_accepts_every_byte_container() {
    let mut codec = RawCodec::new();
    let mut out = BytesMut::new();
    codec.encode("str ", &mut out).unwrap();
    codec.encode(String::from("string "), &mut out).unwrap();
    codec.encode(&b"slice "[..], &mut out).unwrap();
    codec.encode(b"vec ".to_vec(), &mut out).unwrap();
    codec
        .encode(Bytes::from_static(b"bytes"), &mut out)
        .unwrap();
    assert_eq!(out, "str string slice vec bytes");
}

proptest! {
    #[test]
    fn concatenation_is_split_invariant(
        input in proptest::collection::vec(any::<u8>(), 0..200),
        sizes in proptest::collection::vec(1usize..30, 1..8),
    ) {
        let out = run_sized(RawCodec::new(), &input, &sizes);
        let joined: Vec<u8> = out.frames.iter().flat_map(|f| f.iter().copied()).collect();
        prop_assert_eq!(joined, input);
        prop_assert!(out.frames.iter().all(|f| !f.is_empty()));
        prop_assert_eq!(out.eof, Some(Eof::Clean { leftover: vec![] }));
    }

    #[test]
    fn round_trip(items in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 0..10)) {
        let mut codec = RawCodec::new();
        let mut buf = BytesMut::new();
        for item in &items {
            codec.encode(item, &mut buf).unwrap();
        }
        let got = codec.decode(&mut buf).unwrap().unwrap_or_default();
        prop_assert_eq!(got.to_vec(), items.concat());
    }
}
