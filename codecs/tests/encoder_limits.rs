//! An encoder that refuses an item over a configured limit says so as
//! every limit error does: `is_limit()`, with the limit and what was seen.

use anyframe_codecs::{LineCodec, NetstringCodec, PackFormat, PackstringCodec};
use bytes::BytesMut;
use tokio_util::codec::Encoder;

fn assert_limit(e: &anyframe_codecs::Error, limit: u64, seen: u64) {
    assert!(e.is_limit(), "{e:?}");
    assert_eq!(e.limit(), Some(limit), "{e:?}");
    assert_eq!(e.seen(), Some(seen), "{e:?}");
    assert!(!e.is_fatal(), "{e:?}");
}

#[test]
fn netstring_encoder_over_max_length_is_a_limit_error() {
    let mut dst = BytesMut::new();
    let e = NetstringCodec::with_max_length(3)
        .encode(&b"four"[..], &mut dst)
        .unwrap_err();
    assert_limit(&e, 3, 4);
    assert!(dst.is_empty());
}

#[test]
fn packstring_encoder_over_max_length_is_a_limit_error() {
    let mut dst = BytesMut::new();
    let e = PackstringCodec::with_max_length(PackFormat::U32Be, 3)
        .encode(&b"four"[..], &mut dst)
        .unwrap_err();
    assert_limit(&e, 3, 4);
    assert!(dst.is_empty());
}

#[test]
fn line_encoder_over_write_max_length_is_a_limit_error() {
    let mut dst = BytesMut::new();
    let mut codec = LineCodec::builder()
        .write_max_length(Some(3))
        .build()
        .unwrap();
    let e = codec.encode("four", &mut dst).unwrap_err();
    assert_limit(&e, 3, 4);
    assert!(dst.is_empty());
}

#[test]
fn an_encoder_limit_error_says_what_it_saw_exactly() {
    let mut dst = BytesMut::new();
    let e = NetstringCodec::with_max_length(3)
        .encode(&b"four"[..], &mut dst)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "netstring: payload longer than max_length, limit 3, seen 4"
    );
}
