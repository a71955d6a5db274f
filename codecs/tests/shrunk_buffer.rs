//! A decoder's state describes the buffer as its last call left it; a
//! caller that took bytes from the front meanwhile (a read of another
//! kind) should have used a fresh decoder (docs/semantics.md §4, *Decoders
//! you keep*). Misused so, a decoder may read garbage or report an error,
//! but never panics: every codec here, given a buffer shorter or different
//! than the one it was scanning, answers.

use std::panic::{AssertUnwindSafe, catch_unwind};

use anyframe_codecs::{
    CborCodec, ChunkCodec, JsonCodec, LineBatchCodec, LineCodec, NetstringCodec, PackFormat,
    PackstringCodec, RawCborCodec, RawJsonCodec, RegexCodec,
};
use bytes::BytesMut;
use proptest::prelude::*;
use tokio_util::codec::Decoder;

/// Feeds `first` (the decoder looks at it, taking frames), takes `take`
/// bytes from the front as another reader would, appends `more`, and
/// decodes again: it must not panic.
fn survives<D: Decoder>(mut d: D, first: &[u8], take: usize, more: &[u8]) -> bool {
    catch_unwind(AssertUnwindSafe(|| {
        let mut buf = BytesMut::from(first);
        while let Ok(Some(_)) = d.decode(&mut buf) {}
        let _ = buf.split_to(take.min(buf.len()));
        buf.extend_from_slice(more);
        while let Ok(Some(_)) = d.decode(&mut buf) {}
        let _ = d.decode_eof(&mut buf);
    }))
    .is_ok()
}

fn pieces() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop::sample::select(vec![
        &b"[1,[2,"[..],
        b"]",
        b"\"ab",
        b"\\u00",
        b"{\"k\":",
        b"12",
        b" ",
        b"\n",
        b"\r\n",
        b"3:ab",
        b",",
        b"x",
        b"\x9a\x00\x00\x00\x08",
        b"\x78\x20abc",
        b"\x82\x01",
        b"\x00\x05",
    ]);
    prop::collection::vec(piece, 0..12).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_codec_answers_a_buffer_shrunk_under_it(
        first in pieces(),
        take in 0usize..40,
        more in pieces(),
    ) {
        let (f, m) = (&first[..], &more[..]);
        prop_assert!(survives(JsonCodec::<serde_json::Value>::new(), f, take, m), "json");
        prop_assert!(survives(JsonCodec::<serde_json::Value>::ndjson(), f, take, m), "ndjson");
        prop_assert!(survives(RawJsonCodec::new(), f, take, m), "raw json");
        prop_assert!(survives(CborCodec::<serde_cbor::Value>::new(), f, take, m), "cbor");
        prop_assert!(survives(CborCodec::<Vec<u8>>::new(), f, take, m), "typed cbor");
        prop_assert!(survives(RawCborCodec::new(), f, take, m), "raw cbor");
        prop_assert!(survives(LineCodec::new(), f, take, m), "line");
        prop_assert!(survives(LineBatchCodec::new(), f, take, m), "line batch");
        prop_assert!(
            survives(LineCodec::with_eol("\r\n").unwrap(), f, take, m),
            "literal eol"
        );
        prop_assert!(survives(NetstringCodec::new(), f, take, m), "netstring");
        prop_assert!(survives(PackstringCodec::new(PackFormat::U16Be), f, take, m), "packstring");
        prop_assert!(survives(ChunkCodec::new(7), f, take, m), "chunk");
        let regex = RegexCodec::new(regex::bytes::Regex::new(r"\]\n").unwrap()).unwrap();
        prop_assert!(survives(regex, f, take, m), "regex");
    }
}
