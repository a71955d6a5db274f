//! TLS detection: the verdict (or the end-of-input error) does not depend
//! on how the greeting was split, the codec consumes nothing, and it decides
//! no later than the pattern's length (6 bytes).
//!
//! config: bit 0 strict rule, bit 1 SSLv2 hellos off.
#![no_main]

use anyframe_codecs::{TlsDetect, TlsDetectCodec};
use anyframe_fuzz::{ErrorSig, Input};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fn codec(config: u8) -> TlsDetectCodec {
    let c = if config & 1 != 0 {
        TlsDetectCodec::strict()
    } else {
        TlsDetectCodec::new()
    };
    c.sslv2(config & 2 == 0)
}

/// One-shot use, as a read request: decode after each chunk until a verdict.
fn detect(config: u8, chunks: &[&[u8]]) -> Result<TlsDetect, ErrorSig> {
    let mut c = codec(config);
    let mut buf = BytesMut::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        let before = buf.clone();
        let v = c.decode(&mut buf).expect("decode never fails");
        assert_eq!(buf, before, "consumed bytes");
        if let Some(v) = v {
            return Ok(v);
        }
        assert!(buf.len() < 6, "undecided after {} bytes", buf.len());
    }
    let before = buf.clone();
    let r = c.decode_eof(&mut buf);
    assert_eq!(buf, before, "consumed bytes at eof");
    match r {
        Ok(Some(v)) => Ok(v),
        Ok(None) => panic!("decode_eof returned no verdict"),
        Err(e) => Err(ErrorSig::of(&e)),
    }
}

fuzz_target!(|raw: &[u8]| {
    let Some(input) = Input::parse(raw) else {
        return;
    };
    let whole = detect(input.config, &[input.data]);
    assert_eq!(
        detect(input.config, &input.chunks()),
        whole,
        "{:?}",
        input.sizes
    );
    let bytes: Vec<&[u8]> = input
        .data
        .iter()
        .take(64)
        .map(std::slice::from_ref)
        .collect();
    if input.data.len() <= 64 {
        assert_eq!(detect(input.config, &bytes), whole);
    }
    // The strict rule only ever says TLS where AE's rule does.
    if let Ok(TlsDetect::Tls { .. }) = detect(input.config | 1, &[input.data]) {
        assert!(matches!(
            detect(input.config & !1, &[input.data]),
            Ok(TlsDetect::Tls { .. })
        ));
    }
});
