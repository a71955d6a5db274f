//! ChunkCodec: exact sizes, fragmentation invariance, end of input, the
//! zero-size one-shot form and the encoder.

mod support;

use anyframe_codecs::{ChunkCodec, ErrorKind};
use bytes::BytesMut;
use proptest::prelude::*;
use support::{Eof, assert_sized_matches_whole, assert_split_invariant};
use tokio_util::codec::{Decoder, Encoder};

fn chunk(n: usize) -> ChunkCodec {
    ChunkCodec::for_stream(n).expect("non-zero size")
}

#[test]
fn chunks_are_exactly_n_bytes_however_split() {
    let out = assert_split_invariant(|| chunk(3), b"abcdefgh");
    assert_eq!(out.frames, vec!["abc", "def"]);
    assert_eq!(
        out.eof,
        Some(Eof::Error {
            kind: ErrorKind::BrokenPipe,
            leftover: 2
        })
    );
}

#[test]
fn clean_eof_on_a_chunk_boundary() {
    let out = assert_split_invariant(|| chunk(2), b"abcd");
    assert_eq!(out.frames, vec!["ab", "cd"]);
    assert_eq!(out.eof, Some(Eof::Clean { leftover: vec![] }));
}

#[test]
fn partial_chunk_at_eof_is_broken_pipe_with_the_bytes_kept() {
    let mut codec = chunk(10);
    let mut buf = BytesMut::from("abcd");
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    let err = codec.decode_eof(&mut buf).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrokenPipe);
    assert!(err.is_fatal());
    assert_eq!(err.seen(), Some(4));
    assert_eq!(err.limit(), Some(10));
    assert_eq!(buf, "abcd");
}

#[test]
fn a_huge_chunk_does_not_reserve_its_size_up_front() {
    let mut codec = chunk(1 << 40);
    let mut buf = BytesMut::from("x");
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert!(buf.capacity() <= 128 * 1024, "{}", buf.capacity());
}

#[test]
fn zero_size_completes_at_once_as_a_one_shot_request() {
    let mut codec = ChunkCodec::new(0);
    let mut buf = BytesMut::new();
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), "");
    // AE's chunk => 0 also completes after EOF (RT-chunk-2).
    assert_eq!(codec.decode_eof(&mut buf).unwrap().unwrap(), "");
    let mut buf = BytesMut::from("rest");
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), "");
    assert_eq!(buf, "rest");
}

#[test]
fn zero_size_is_refused_as_a_stream_decoder() {
    let err = ChunkCodec::for_stream(0).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(chunk(7).size(), 7);
}

#[test]
fn frames_are_split_off_without_copying() {
    let mut codec = chunk(4);
    let mut buf = BytesMut::from("abcdefgh");
    let base = buf.as_ptr() as usize;
    let f = codec.decode(&mut buf).unwrap().unwrap();
    assert_eq!(f.as_ptr() as usize, base);
}

#[test]
fn encoder_requires_exactly_one_chunk() {
    let mut codec = chunk(3);
    let mut out = BytesMut::new();
    codec.encode("abc", &mut out).unwrap();
    for bad in ["ab", "abcd", ""] {
        let err = codec.encode(bad, &mut out).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(!err.is_fatal());
    }
    assert_eq!(out, "abc");
}

proptest! {
    #[test]
    fn random_chunkings_match_the_whole_input(
        input in proptest::collection::vec(any::<u8>(), 0..200),
        n in 1usize..20,
        sizes in proptest::collection::vec(1usize..30, 1..8),
    ) {
        assert_sized_matches_whole(|| chunk(n), &input, &sizes);
    }

    #[test]
    fn round_trip(items in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 5), 0..20)) {
        let mut codec = chunk(5);
        let mut buf = BytesMut::new();
        for item in &items {
            codec.encode(item, &mut buf).unwrap();
        }
        let mut got = Vec::new();
        while let Some(f) = codec.decode_eof(&mut buf).unwrap() {
            got.push(f.to_vec());
        }
        prop_assert_eq!(got, items);
    }
}
