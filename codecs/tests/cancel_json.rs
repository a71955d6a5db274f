//! Cancellation for the self-delimiting codecs: a decoder that has not
//! produced a frame has consumed nothing. Any prefix of valid input, decoded
//! by a fresh decoder that is then dropped, leaves the buffer byte for byte
//! as it was, so the next read request (of any type) sees every byte.

use anyframe_codecs::{CborCodec, JsonCodec, RawCborCodec, RawJsonCodec};
use bytes::BytesMut;
use proptest::prelude::*;
use tokio_util::codec::Decoder;

/// Decodes `prefix` with a fresh decoder, repeatedly (as a cancelled and
/// re-issued read would), and checks that it asked for more and kept every
/// byte.
#[track_caller]
fn assert_keeps<D: Decoder<Error = anyframe_codecs::Error>>(make: impl Fn() -> D, prefix: &[u8])
where
    D::Item: std::fmt::Debug,
{
    let mut buf = BytesMut::from(prefix);
    for attempt in 0..4 {
        let mut decoder = make();
        match decoder.decode(&mut buf) {
            Ok(None) => {}
            other => panic!("attempt {attempt} on {prefix:?}: want Ok(None), got {other:?}"),
        }
        assert_eq!(&buf[..], prefix, "attempt {attempt} consumed bytes");
    }
}

#[test]
fn a_cancelled_json_read_keeps_the_whitespace_before_a_partial_text() {
    let input = b"   \r\n\t  {\"a\": [1, 2";
    assert_keeps(JsonCodec::<serde_json::Value>::new, input);
    assert_keeps(JsonCodec::<serde_json::Value>::ndjson, input);
    assert_keeps(RawJsonCodec::new, input);
    // Whitespace alone too: it may be the end of a line a line read wants.
    assert_keeps(JsonCodec::<serde_json::Value>::new, b" \r\n");
    assert_keeps(RawJsonCodec::new, b"\n");
}

#[test]
fn an_ndjson_text_waiting_for_its_newline_keeps_everything() {
    assert_keeps(JsonCodec::<serde_json::Value>::ndjson, b"\n{\"a\":1}");
    assert_keeps(JsonCodec::<serde_json::Value>::ndjson, b"{\"a\":1} \r");
    let raw = || {
        RawJsonCodec::builder()
            .separate_every_text(true)
            .build_raw()
    };
    assert_keeps(raw, b"  [1] ");
}

/// Random JSON texts separated by random whitespace, written NDJSON-style.
fn json_stream() -> impl Strategy<Value = Vec<u8>> {
    let text = prop_oneof![
        Just(&b"{\"a\": [1, 2.5e3, \"x\\\"y\\u00e9\"], \"b\": {}}"[..]),
        Just(&b"[true, false, null]"[..]),
        Just(&b"\"\xc3\xa9t\xc3\xa9\""[..]),
        Just(&b"-12.5e-3"[..]),
        Just(&b"0"[..]),
        Just(&b"{}"[..]),
    ];
    let ws = prop::collection::vec(prop::sample::select(&b" \t\r\n"[..]), 0..4);
    prop::collection::vec((ws, text), 1..4).prop_map(|parts| {
        let mut out = Vec::new();
        for (ws, text) in parts {
            out.extend_from_slice(&ws);
            out.extend_from_slice(text);
            out.push(b'\n');
        }
        out
    })
}

/// Random CBOR items, back to back.
fn cbor_stream() -> impl Strategy<Value = Vec<u8>> {
    let item = prop_oneof![
        Just(&[0x83, 0x01, 0x62, b'h', b'i', 0xa1, 0x61, b'k', 0xf6][..]),
        Just(&[0x9f, 0x01, 0x5f, 0x41, 0x00, 0xff, 0xff][..]),
        Just(&[0xc1, 0x1a, 0x5f, 0x00, 0x00, 0x00][..]),
        Just(&[0xfb, 0x40, 0x09, 0x21, 0xf9, 0xf0, 0x1b, 0x86, 0x6e][..]),
        Just(&[0x00][..]),
        Just(&[0x7f, 0x61, b'a', 0x62, b'b', b'c', 0xff][..]),
    ];
    prop::collection::vec(item, 1..4).prop_map(|items| items.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every prefix of a JSON stream that ends before the first frame is
    /// complete is kept whole by every JSON decoder.
    #[test]
    fn every_prefix_before_the_first_json_frame_is_kept(stream in json_stream()) {
        for n in 0..stream.len() {
            let prefix = &stream[..n];
            for which in 0..3 {
                let mut buf = BytesMut::from(prefix);
                let produced = match which {
                    0 => JsonCodec::<serde_json::Value>::new().decode(&mut buf).map(|f| f.is_some()),
                    1 => JsonCodec::<serde_json::Value>::ndjson().decode(&mut buf).map(|f| f.is_some()),
                    _ => RawJsonCodec::new().decode(&mut buf).map(|f| f.is_some()),
                };
                if !produced.unwrap() {
                    prop_assert_eq!(&buf[..], prefix, "codec {} consumed bytes", which);
                }
            }
        }
    }

    /// The same for CBOR.
    #[test]
    fn every_prefix_before_the_first_cbor_frame_is_kept(stream in cbor_stream()) {
        for n in 0..stream.len() {
            let prefix = &stream[..n];
            let mut buf = BytesMut::from(prefix);
            if CborCodec::<serde_cbor::Value>::new().decode(&mut buf).unwrap().is_none() {
                prop_assert_eq!(&buf[..], prefix);
            }
            let mut buf = BytesMut::from(prefix);
            if RawCborCodec::new().decode(&mut buf).unwrap().is_none() {
                prop_assert_eq!(&buf[..], prefix);
            }
        }
    }
}
