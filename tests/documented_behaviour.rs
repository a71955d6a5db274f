//! Behaviour the reference docs promise, checked where a reader of the docs
//! would first rely on it: the `Stream` after a decoding error, `drained`,
//! `tls_autostart` on a `Handle`, and the kinds of the errors users match.

use std::time::Duration;

use anyframe::codecs::{JsonCodec, LineCodec};
use anyframe::{ErrorKind, QueuedFramed};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

/// The bound on every wait in this file: a hang fails the test.
const LIMIT: Duration = Duration::from_secs(10);

async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

#[derive(Debug, serde::Deserialize, PartialEq)]
struct Point {
    a: u32,
}

/// ERR-3: a non-fatal error is not repeated. When the decoder left the
/// rejected bytes in place, decoding again would only repeat it, so the
/// stream ends; the connection stays usable.
#[tokio::test]
async fn stream_ends_after_a_non_fatal_error_that_consumed_nothing() {
    let (io, mut peer) = tokio::io::duplex(1024);
    peer.write_all(b"}{\"a\":1}").await.unwrap();
    let mut conn = QueuedFramed::with_codec(io, JsonCodec::<Point>::new());
    let err = within("first item", conn.next())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadMessage);
    assert!(!err.is_fatal());
    assert!(within("end", conn.next()).await.is_none());
    assert!(!conn.is_closed());
    assert_eq!(conn.read_buffer(), b"}{\"a\":1}");
}

/// The caller may skip the rejected bytes and poll again: the stream goes
/// on from there.
#[tokio::test]
async fn stream_goes_on_after_the_caller_skips_the_rejected_bytes() {
    let (io, mut peer) = tokio::io::duplex(1024);
    peer.write_all(b"}{\"a\":1}").await.unwrap();
    let mut conn = QueuedFramed::with_codec(io, JsonCodec::<Point>::new());
    assert!(within("error", conn.next()).await.unwrap().is_err());
    conn.consume(1);
    let p = within("after the skip", conn.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p, Point { a: 1 });
}

/// A well-formed text that `T` rejects is consumed: the stream is in step
/// and goes on with the next text.
#[tokio::test]
async fn stream_goes_on_after_an_error_whose_bytes_were_consumed() {
    let (io, mut peer) = tokio::io::duplex(1024);
    peer.write_all(b"{\"a\":\"x\"}{\"a\":2}").await.unwrap();
    let mut conn = QueuedFramed::with_codec(io, JsonCodec::<Point>::new());
    let err = within("rejected", conn.next()).await.unwrap().unwrap_err();
    assert!(!err.is_fatal());
    let p = within("next", conn.next()).await.unwrap().unwrap();
    assert_eq!(p, Point { a: 2 });
}

/// `QueuedFramed::drained` resolves at or below the low watermark, as
/// `Handle::drained` does, without waiting for the queue to empty.
#[tokio::test]
async fn queued_framed_drained_resolves_at_the_low_watermark() {
    let (io, _peer) = tokio::io::duplex(16); // never read
    let mut conn = QueuedFramed::builder().watermarks(1000, 500).build(io);
    conn.push_bytes(vec![b'x'; 100]).unwrap();
    within("drained at 100 of low 500", conn.drained())
        .await
        .unwrap();
    // Above the low mark it waits: 16 bytes fit in the pipe, the rest not.
    conn.push_bytes(vec![b'x'; 1000]).unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(200), conn.drained()).await;
    assert!(waited.is_err(), "drained above the low watermark");
    assert!(conn.write_buffered() > 500);
}

/// ERR-5: `InvalidInput` is never fatal; a single-use decoder asked for a
/// second frame has consumed nothing and the connection goes on.
#[tokio::test]
async fn a_spent_single_use_decoder_is_a_non_fatal_einval() {
    let (io, mut peer) = tokio::io::duplex(1024);
    peer.write_all(b"one\ntwo\n").await.unwrap();
    let mut conn = QueuedFramed::new(io);
    let mut once = LineCodec::builder().build_once().unwrap();
    let first = within("first", conn.read_with(&mut once)).await.unwrap();
    assert_eq!(first.line(), b"one");
    let err = within("second", conn.read_with(&mut once))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(!err.is_fatal());
    let next = within("fresh", conn.read(LineCodec::new())).await.unwrap();
    assert_eq!(next.line(), b"two");
}

/// A pipelined response that cannot be decoded closes the connection with
/// an error that names its kind once and still leads to the codec's error
/// (`Error::codec_error`: "the codec error behind this error").
#[tokio::test]
async fn an_out_of_step_client_error_keeps_its_codec_error_and_names_its_kind_once() {
    use anyframe::service::Client;
    use tower::{Service, ServiceExt};
    let (io, mut peer) = tokio::io::duplex(1024);
    let (handle, _driver) = QueuedFramed::new(io).spawn();
    let mut client = Client::new(handle, LineCodec::new(), |_: &String| {
        JsonCodec::<serde_json::Value>::new()
    });
    peer.write_all(b"}}}\n").await.unwrap();
    let call = client.ready().await.unwrap().call("q".to_string());
    let e = within("call", call).await.unwrap_err();
    assert!(e.is_fatal());
    assert_eq!(e.kind(), ErrorKind::BadMessage);
    assert!(e.codec_error().is_some(), "{e:?}");
    assert_eq!(e.to_string().matches("EBADMSG").count(), 1, "{e}");
}

/// The server loop ends with the service's error as the source, said to be
/// the service's (not a codec's), also when `map_errors` declines to
/// answer it.
#[tokio::test]
async fn serve_ends_with_the_service_error_as_its_cause() {
    use anyframe::codecs::Utf8LineCodec;
    use anyframe::service::serve;
    use std::future::IntoFuture;
    for map in [false, true] {
        let (a, mut peer) = tokio::io::duplex(1024);
        let svc = tower::service_fn(|_l: anyframe::codecs::Utf8Line| async move {
            Err::<String, _>(std::io::Error::other("database unavailable"))
        });
        let mut s = serve(a, Utf8LineCodec::new(), LineCodec::new(), svc);
        if map {
            s = s.map_errors(Err);
        }
        let server = tokio::spawn(s.into_future());
        peer.write_all(b"q\n").await.unwrap();
        let e = within("serve", server).await.unwrap().unwrap_err();
        assert!(e.is_fatal());
        let text = e.to_string();
        assert!(text.contains("database unavailable"), "{text}");
        assert!(text.contains("service"), "{text}");
        assert!(!text.contains("codec"), "{text}");
        let source = std::error::Error::source(&e).expect("a source");
        assert_eq!(source.to_string(), "database unavailable");
    }
}
