//! `EncoderRef`: one configured encoder reused by reference.

use anyframe_codecs::{EncoderRef, LineCodec, NetstringCodec};
use bytes::BytesMut;
use tokio_util::codec::Encoder;

/// Takes an encoder by value, as `FramedWrite` and write queues do.
fn write_with<E: Encoder<&'static str>>(mut encoder: E, item: &'static str, out: &mut BytesMut)
where
    E::Error: std::fmt::Debug,
{
    encoder.encode(item, out).expect("encodable");
}

#[test]
fn one_encoder_serves_many_writes_by_reference() {
    let mut codec = LineCodec::builder().eol("\r\n").build().unwrap();
    let mut out = BytesMut::new();
    for item in ["a", "b"] {
        write_with(EncoderRef::new(&mut codec), item, &mut out);
    }
    write_with(EncoderRef::from(&mut codec), "c", &mut out);
    assert_eq!(out, "a\r\nb\r\nc\r\n");
}

#[test]
fn errors_come_through_unchanged() {
    let mut codec = NetstringCodec::with_max_length(2);
    let mut out = BytesMut::new();
    let err = EncoderRef::new(&mut codec)
        .encode("abc", &mut out)
        .unwrap_err();
    assert_eq!(err.kind(), anyframe_codecs::ErrorKind::InvalidInput);
    assert!(out.is_empty());
}

/// What users must name is reachable through this crate alone.
#[test]
fn reexports_name_what_users_need() {
    use anyframe_codecs::{Decoder as _, Encoder as _};
    let mut codec = LineCodec::new();
    let mut buf = BytesMut::new();
    codec.encode("x", &mut buf).unwrap();
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap().line(), b"x");
    #[cfg(feature = "regex")]
    {
        let re = anyframe_codecs::regex::bytes::Regex::new(";").unwrap();
        LineCodec::builder().eol_regex(re).build().unwrap();
    }
    #[cfg(feature = "json")]
    let _: Option<anyframe_codecs::JsonValue> = None;
    #[cfg(feature = "cbor")]
    let _: Option<anyframe_codecs::CborValue> = None;
}
