//! Cancellation: a read request that has not produced a frame has consumed
//! nothing. For every byte codec: give a fresh decoder any prefix of a valid
//! input; when `decode` answers `Ok(None)` the buffer is byte-identical to
//! the prefix, also after several such cancelled reads in a row.

use std::fmt::Debug;

use anyframe_codecs::{
    ChunkCodec, LineBatchCodec, LineCodec, NetstringCodec, PackFormat, PackstringCodec, RawCodec,
    TlsDetectCodec, Utf8LineCodec,
};
use bytes::BytesMut;
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

/// Cancelled reads per prefix: each one a fresh decoder on the same buffer.
const CANCELLED_READS: usize = 4;

/// Checks the property for every prefix of `input`.
fn assert_cancel_leaves_buffer<D>(make: impl Fn() -> D, input: &[u8]) -> Result<(), TestCaseError>
where
    D: Decoder,
    D::Error: Debug,
{
    for cut in 0..=input.len() {
        let mut buf = BytesMut::from(&input[..cut]);
        for read in 0..CANCELLED_READS {
            match make().decode(&mut buf) {
                Ok(None) => prop_assert_eq!(
                    &buf[..],
                    &input[..cut],
                    "prefix of {} bytes changed by cancelled read {}",
                    cut,
                    read
                ),
                // A frame or an error ends the request: nothing to check.
                _ => break,
            }
        }
    }
    Ok(())
}

/// Encodes `items` with `codec` one after another.
fn encoded<E: Encoder<Vec<u8>>>(mut codec: E, items: &[Vec<u8>]) -> Vec<u8>
where
    E::Error: Debug,
{
    let mut out = BytesMut::new();
    for item in items {
        codec.encode(item.clone(), &mut out).expect("encodable");
    }
    out.to_vec()
}

/// Lines without an end of line in them, from a small alphabet with CR.
fn lines() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(
        prop::collection::vec(prop::sample::select(vec![b'a', b'\r', b' ', 0xff]), 0..12)
            .prop_filter("no trailing CR before the LF", |l| l.last() != Some(&b'\r')),
        1..5,
    )
}

fn payloads() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..4)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn line_codecs_consume_nothing_until_a_line(lines in lines()) {
        let input = encoded(LineCodec::new(), &lines);
        assert_cancel_leaves_buffer(LineCodec::new, &input)?;
        assert_cancel_leaves_buffer(LineBatchCodec::new, &input)?;
        assert_cancel_leaves_buffer(Utf8LineCodec::new, &input)?;
        assert_cancel_leaves_buffer(|| LineCodec::builder().max_length(8).build().unwrap(), &input)?;
        let literal = || LineCodec::with_eol("<END>").unwrap();
        assert_cancel_leaves_buffer(literal, &encoded(literal(), &lines))?;
    }

    #[test]
    fn length_prefixed_codecs_consume_nothing_until_a_frame(payloads in payloads()) {
        for format in [
            PackFormat::U8,
            PackFormat::U16Be,
            PackFormat::U16Le,
            PackFormat::U32Be,
            PackFormat::U32Le,
            PackFormat::Ber,
            PackFormat::U64Be,
            PackFormat::U64Le,
        ] {
            let make = || PackstringCodec::new(format);
            assert_cancel_leaves_buffer(make, &encoded(make(), &payloads))?;
        }
        assert_cancel_leaves_buffer(NetstringCodec::new, &encoded(NetstringCodec::new(), &payloads))?;
        let input = payloads.concat();
        for n in [1, 7, 64] {
            assert_cancel_leaves_buffer(|| ChunkCodec::new(n), &input)?;
        }
        assert_cancel_leaves_buffer(RawCodec::new, &input)?;
        assert_cancel_leaves_buffer(TlsDetectCodec::new, &input)?;
    }
}

#[cfg(feature = "regex")]
mod regex_codecs {
    use super::*;
    use anyframe_codecs::RegexCodec;
    use regex::bytes::Regex;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn regex_codecs_consume_nothing_until_a_frame(lines in lines()) {
            let eol = || {
                LineCodec::builder()
                    .eol_regex(Regex::new(r"\r\n|\n|\r").unwrap())
                    .hold_open_match(true)
                    .build()
                    .unwrap()
            };
            assert_cancel_leaves_buffer(eol, &encoded(LineCodec::new(), &lines))?;
            // Records end with ";" after "#" comments that skip moves past.
            let mut input = Vec::new();
            for l in &lines {
                input.extend_from_slice(b"#c\n");
                input.extend(l.iter().filter(|&&b| b != b';'));
                input.push(b';');
            }
            let regex = || {
                RegexCodec::builder(Regex::new(";").unwrap())
                    .skip(Regex::new(r"^(?:#[^\n]*\n)+").unwrap())
                    .reject(Regex::new(r"\x00").unwrap())
                    .build()
                    .unwrap()
            };
            assert_cancel_leaves_buffer(regex, &input)?;
        }
    }
}
