//! Behaviour the reference docs promise, checked where a reader of the docs
//! would first rely on it: the `Stream` after a decoding error, `drained`,
//! `tls_autostart` on a `Handle`, and the kinds of the errors users match.

use std::time::Duration;

use anyframe::codecs::{JsonCodec, LineCodec, OverflowPolicy};
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

// ----- the Stream after errors that are not its decoder's ---------------------

#[tokio::test]
async fn stream_goes_on_after_a_carried_enospc() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let (ours, mut peer) = tokio::io::duplex(1024);
        let mut conn = QueuedFramed::with_codec(ours, LineCodec::new());
        let discard = LineCodec::builder()
            .max_length(4)
            .overflow(OverflowPolicy::Discard)
            .build()
            .unwrap();
        peer.write_all(b"toolong").await.unwrap();
        // The read begins dropping the over-long line, then is given up.
        let gave_up = tokio::time::timeout(Duration::from_millis(100), conn.read(discard)).await;
        assert!(gave_up.is_err(), "the line has no end yet");
        peer.write_all(b"line\nnext\n").await.unwrap();

        let first = conn.next().await;
        match &first {
            Some(Err(e)) => assert_eq!(e.kind(), anyframe::ErrorKind::NoSpace, "{e}"),
            other => panic!("expected the dropped line's ENOSPC, got {other:?}"),
        }
        // The bytes of the next line are buffered and the decoder is fine.
        assert_eq!(conn.read_buffer(), b"next\n");
        let second = conn.next().await;
        assert!(
            matches!(&second, Some(Ok(l)) if l.line() == b"next"),
            "the stream ended (or failed) instead of yielding the next line: {second:?}"
        );
    })
    .await
    .expect("test hung");
}

/// Rustdoc of `poll_next`: after a non-fatal error whose bytes were left,
/// "it goes on if polled again after the caller changed the read buffer".
/// Rewriting the rejected bytes through `read_buffer_mut` (same length)
/// changes the buffer, but not its (address, length) mark.
#[cfg(feature = "json")]
#[tokio::test]
async fn stream_goes_on_after_the_buffer_is_rewritten_in_place() {
    use anyframe::codecs::JsonCodec;
    tokio::time::timeout(Duration::from_secs(10), async {
        let (ours, mut peer) = tokio::io::duplex(1024);
        let mut conn = QueuedFramed::with_codec(ours, JsonCodec::<serde_json::Value>::new());
        peer.write_all(b"[1,,]").await.unwrap();
        let first = conn.next().await;
        assert!(matches!(&first, Some(Err(e)) if !e.is_fatal()), "{first:?}");
        assert_eq!(conn.read_buffer(), b"[1,,]");
        // The caller repairs the bad text (same length): the buffer changed.
        {
            let buf = conn.read_buffer_mut();
            buf.clear();
            buf.extend_from_slice(b"[1,2]");
        }
        assert_eq!(conn.read_buffer(), b"[1,2]");
        let second = conn.next().await;
        assert!(
            matches!(&second, Some(Ok(v)) if *v == serde_json::json!([1, 2])),
            "after the buffer was changed the stream must decode it, got {second:?}"
        );
    })
    .await
    .expect("test hung");
}

/// RQ-1: bytes go to the queued read requests first; the Stream yields the
/// default codec's frames once no request is queued (`poll_next` docs), and
/// polling it drives the queue. After a stuck error, a read queued to skip
/// the bad bytes is never run: the stream ends at once, the skip's ticket
/// stays pending, and the good frame behind it is never yielded.
#[cfg(feature = "json")]
#[tokio::test]
async fn stuck_stream_ignores_a_read_queued_to_skip_the_bad_bytes() {
    use anyframe::codecs::JsonCodec;
    tokio::time::timeout(Duration::from_secs(10), async {
        let (ours, mut peer) = tokio::io::duplex(1024);
        let mut conn = QueuedFramed::with_codec(ours, JsonCodec::<serde_json::Value>::new());
        peer.write_all(b"[1,,]\n[2]\n").await.unwrap();
        let first = conn.next().await;
        assert!(matches!(&first, Some(Err(e)) if !e.is_fatal()), "{first:?}");
        // Skip the bad line with a queued read, then go on with the stream.
        let mut skip = conn.push_read(LineCodec::new());
        let second = conn.next().await;
        let skipped = futures::FutureExt::now_or_never(&mut skip);
        assert!(
            matches!(&second, Some(Ok(v)) if *v == serde_json::json!([2])),
            "expected [2] after the queued skip ran; got {second:?} (skip ticket: {:?})",
            skipped.map(|r| r.map(|l| l.line().to_vec()))
        );
    })
    .await
    .expect("test hung");
}

/// TO-3: an expired read timeout is a non-fatal ETIMEDOUT for the waiter
/// (here the Stream), and fires again after every further period; RQ-6:
/// `None` from the Stream is the end of input. A read timeout consumed no
/// bytes, so the Stream now marks itself stuck and ends with `None` at the
/// next poll: the line that arrives afterwards is never yielded, and the
/// caller is told the input ended when it did not.
#[tokio::test]
async fn stream_goes_on_after_a_read_timeout() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let (ours, mut peer) = tokio::io::duplex(1024);
        let mut conn = QueuedFramed::builder()
            .rtimeout(Duration::from_millis(200))
            .build_with_codec(ours, LineCodec::new());
        let first = conn.next().await;
        assert!(
            matches!(&first, Some(Err(e)) if e.is_timeout() && !e.is_fatal()),
            "{first:?}"
        );
        peer.write_all(b"hello\n").await.unwrap();
        let second = conn.next().await;
        assert!(
            matches!(&second, Some(Ok(l)) if l.line() == b"hello"),
            "after a non-fatal read timeout the stream must go on; got {second:?}"
        );
    })
    .await
    .expect("test hung");
}
