//! An encoder that refuses its item: nothing of it is queued, the error is
//! non-fatal whatever the encoder said (tokio-util's encoders speak
//! `io::Error`, which reads as a fatal I/O error), and the connection goes
//! on, on both front ends, for a write and for a call (WQ-1).

use std::time::Duration;

use anyframe::codecs::LineCodec;
use anyframe::{ErrorKind, QueuedFramed};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::LengthDelimitedCodec;

/// tokio-util's length-delimited encoder, refusing frames over 4 bytes
/// with an `io::Error` of kind `InvalidInput`.
fn tiny() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(4)
        .new_codec()
}

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(5), f)
        .await
        .expect("resolves")
}

#[tokio::test]
async fn an_encoder_error_is_non_fatal_and_the_connection_goes_on_inline() {
    let (io, mut peer) = tokio::io::duplex(1024);
    let mut conn = QueuedFramed::new(io);
    let e = conn
        .push_write(tiny(), Bytes::from_static(b"too long"))
        .unwrap_err();
    assert!(!e.is_fatal(), "{e}");
    assert_eq!(e.kind(), ErrorKind::Io, "the kind stays");
    assert!(e.to_string().contains("frame size too big"), "{e}");
    assert!(!conn.is_closed());
    conn.push_write(LineCodec::new(), "next").unwrap();
    within(conn.flush()).await.unwrap();
    let mut got = [0u8; 5];
    within(peer.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, b"next\n");
}

#[tokio::test]
async fn an_encoder_error_is_non_fatal_and_the_connection_goes_on_spawned() {
    let (io, mut peer) = tokio::io::duplex(1024);
    let (handle, _driver) = QueuedFramed::new(io).spawn();
    let e = handle
        .push_write(tiny(), Bytes::from_static(b"too long"))
        .unwrap_err();
    assert!(!e.is_fatal(), "{e}");
    // A call whose request the encoder refuses queues no read.
    let call = handle.call(tiny(), Bytes::from_static(b"too long"), LineCodec::new());
    let e = within(call).await.unwrap_err();
    assert!(!e.is_fatal(), "{e}");
    assert_eq!(handle.queued_reads(), 0);
    assert!(!handle.is_closed());
    let answer = handle.call(LineCodec::new(), "next", LineCodec::new());
    let mut got = [0u8; 5];
    within(peer.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, b"next\n");
    peer.write_all(b"ok\n").await.unwrap();
    assert_eq!(within(answer).await.unwrap().line(), b"ok");
}
