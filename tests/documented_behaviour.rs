//! Behaviour the reference docs promise, checked where a reader of the docs
//! would first rely on it: the `Stream` after a decoding error, `drained`,
//! single-use decoders, and the errors users match on.

use std::time::Duration;

use anyframe::codecs::{ChunkCodec, JsonCodec, LineCodec, OverflowPolicy};
use anyframe::{Error, ErrorKind, Parts, QueuedFramed};
use bytes::{Bytes, BytesMut};
use futures::{FutureExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_util::codec::Decoder;

/// The bound on every wait in this file: a hang fails the test.
const LIMIT: Duration = Duration::from_secs(10);

async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A JSON `Stream` over a pipe whose peer sent `bad`, polled once: it has
/// yielded a non-fatal error on bytes its decoder left in place, so it is
/// stuck on them.
async fn stuck_on(
    builder: &anyframe::Builder,
    bad: &[u8],
) -> (
    QueuedFramed<tokio::io::DuplexStream, JsonCodec<serde_json::Value>>,
    tokio::io::DuplexStream,
) {
    let (ours, mut peer) = tokio::io::duplex(1024);
    let mut conn = builder.build_with_codec(ours, JsonCodec::new());
    peer.write_all(bad).await.unwrap();
    let first = within("the error", conn.next()).await;
    assert!(matches!(&first, Some(Err(e)) if !e.is_fatal()), "{first:?}");
    (conn, peer)
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
    // Not the end of input (RQ-6): `is_eof` tells the two apart.
    assert!(!conn.is_eof());
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

/// `Handle::drained` is a level, not an edge: on a handle whose output was
/// never above the low watermark it resolves at once, and above it waits.
#[tokio::test]
async fn handle_drained_resolves_at_once_when_never_above_the_low_watermark() {
    let (io, _peer) = tokio::io::duplex(16); // never read
    let (handle, _driver) = QueuedFramed::builder()
        .watermarks(1000, 500)
        .build(io)
        .spawn();
    within("drained on a fresh handle", handle.drained())
        .await
        .unwrap();
    handle.push_bytes(vec![b'x'; 100]).unwrap();
    within("drained at 100 of low 500", handle.drained())
        .await
        .unwrap();
    handle.push_bytes(vec![b'x'; 1000]).unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(200), handle.drained()).await;
    assert!(waited.is_err(), "drained above the low watermark");
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

/// A read given up mid-line hands the dropped line's `ENOSPC` to the next
/// plain read, the Stream here (Cancellation): not the decoder's error on
/// bytes it left, so the Stream goes on with the next line.
#[tokio::test]
async fn stream_goes_on_after_a_carried_enospc() {
    within("the test", async {
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
    .await;
}

/// A rewrite in place through `read_buffer_mut` (same address, same
/// length) changes the bytes: the stuck stream decodes them.
#[tokio::test]
async fn stream_goes_on_after_the_buffer_is_rewritten_in_place() {
    within("the test", async {
        let (mut conn, _peer) = stuck_on(&QueuedFramed::builder(), b"[1,,]").await;
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
    .await;
}

/// RQ-1: bytes go to the queued reads first, and polling the Stream drives
/// them. A read queued after a stuck error to skip the bad bytes runs, and
/// the good frame behind it comes out.
#[tokio::test]
async fn a_stuck_stream_runs_a_read_queued_to_skip_the_bad_bytes() {
    within("the test", async {
        let (mut conn, _peer) = stuck_on(&QueuedFramed::builder(), b"[1,,]\n[2]\n").await;
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
    .await;
}

/// TO-3: an expired read timeout is a non-fatal `ETIMEDOUT`; it consumed
/// no bytes but is not the decoder's, so the Stream goes on and yields the
/// line that arrives next.
#[tokio::test]
async fn stream_goes_on_after_a_read_timeout() {
    within("the test", async {
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
    .await;
}

// ----- a stuck Stream goes on once the bytes or the decoder may have changed ---

struct Modal {
    upper: bool,
}

impl Decoder for Modal {
    type Item = Bytes;
    type Error = Error;
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
            return Ok(None);
        };
        let is_upper = buf[..nl].iter().all(|b| b.is_ascii_uppercase());
        if is_upper != self.upper {
            return Err(Error::custom(
                ErrorKind::BadMessage,
                false,
                "line does not fit the current mode",
            ));
        }
        let line = buf.split_to(nl + 1).freeze();
        Ok(Some(line.slice(..nl)))
    }
}

/// Changing the decoder through `codec_mut` means decoding again may not
/// repeat the error: the stuck stream decodes again.
#[tokio::test]
async fn stuck_stream_goes_on_after_codec_mut_changes_the_decoder() {
    within("the test", async {
        let (ours, mut peer) = tokio::io::duplex(1024);
        let mut conn = QueuedFramed::with_codec(ours, Modal { upper: false });
        peer.write_all(b"hello\nUPGRADED\n").await.unwrap();
        let first = conn.next().await;
        assert!(
            matches!(&first, Some(Ok(l)) if &l[..] == b"hello"),
            "{first:?}"
        );
        let second = conn.next().await;
        assert!(
            matches!(&second, Some(Err(e)) if !e.is_fatal()),
            "{second:?}"
        );
        // The application switches the decoder's mode and reads on.
        conn.codec_mut().upper = true;
        let third = conn.next().await;
        assert!(
            matches!(&third, Some(Ok(l)) if &l[..] == b"UPGRADED"),
            "the decoder was changed, so the frame decodes now; got {third:?} \
             (buffer still holds {:?})",
            String::from_utf8_lossy(conn.read_buffer())
        );
    })
    .await;
}

/// The same with the library's own codec: a single-use line decoder (its
/// second frame is a non-fatal EINVAL with nothing consumed, CHANGELOG)
/// replaced through `codec_mut()` by a fresh one.
#[tokio::test]
async fn stuck_stream_goes_on_after_codec_mut_replaces_a_spent_decoder() {
    within("the test", async {
        let once = || LineCodec::builder().build_once().unwrap();
        let (ours, mut peer) = tokio::io::duplex(1024);
        let mut conn = QueuedFramed::with_codec(ours, once());
        peer.write_all(b"one\ntwo\n").await.unwrap();
        let first = conn.next().await;
        assert!(
            matches!(&first, Some(Ok(l)) if l.line() == b"one"),
            "{first:?}"
        );
        let second = conn.next().await;
        assert!(
            matches!(&second, Some(Err(e)) if e.kind() == ErrorKind::InvalidInput && !e.is_fatal()),
            "{second:?}"
        );
        *conn.codec_mut() = once();
        let third = conn.next().await;
        assert!(
            matches!(&third, Some(Ok(l)) if l.line() == b"two"),
            "a fresh decoder would read the buffered line; got {third:?}"
        );
    })
    .await;
}

/// The bad bytes are skipped with an inline `read`, then a read that
/// times out brings new bytes of the same length into the same allocation:
/// the buffer changed, so the stuck stream decodes the valid text.
#[tokio::test]
async fn stuck_stream_mark_aliases_new_input_of_the_same_length() {
    within("the test", async {
        let mut builder = QueuedFramed::builder();
        builder.rtimeout(Duration::from_millis(300));
        let (mut conn, mut peer) = stuck_on(&builder, b"[1,,]\n").await;
        let stuck_at = (
            conn.read_buffer().as_ptr() as usize,
            conn.read_buffer().len(),
        );

        // Skip the bad line with an inline read.
        let skipped = conn.read(LineCodec::new()).await.unwrap();
        assert_eq!(skipped.line(), b"[1,,]");
        drop(skipped);
        // Six new bytes arrive; a read of a 7-byte chunk takes them into the
        // buffer (which the read reclaims from its front: same allocation,
        // same start), then times out (non-fatal, nothing consumed).
        peer.write_all(b"[2,3]\n").await.unwrap();
        let r = conn.read(ChunkCodec::new(7)).await;
        assert!(
            matches!(&r, Err(e) if e.is_timeout() && !e.is_fatal()),
            "{r:?}"
        );
        assert_eq!(conn.read_buffer(), b"[2,3]\n");
        assert_eq!(conn.queued_reads(), 0);
        let now = (
            conn.read_buffer().as_ptr() as usize,
            conn.read_buffer().len(),
        );
        eprintln!("stuck at {stuck_at:x?}, buffer now at {now:x?}");

        let next = conn.next().await;
        assert!(
            matches!(&next, Some(Ok(v)) if *v == serde_json::json!([2, 3])),
            "a valid text is buffered; got {next:?} (mark then {stuck_at:x?}, now {now:x?})"
        );
    })
    .await;
}

/// ERR-3: a stuck Stream does not repeat its error. A read given up by
/// its caller consumed nothing (Cancellation), so the bytes are the same
/// and the Stream still ends.
#[tokio::test]
async fn a_stuck_stream_does_not_repeat_its_error_after_a_read_given_up() {
    within("the test", async {
        let (mut conn, peer) = stuck_on(&QueuedFramed::builder(), b"[1,,]\n").await;
        let before = conn.read_buffer().to_vec();
        // The caller waits a moment for a 100-byte chunk, then gives up.
        let gave_up =
            tokio::time::timeout(Duration::from_millis(50), conn.read(ChunkCodec::new(100))).await;
        assert!(gave_up.is_err());
        assert_eq!(conn.read_buffer(), &before[..], "nothing was consumed");
        let second = conn.next().await;
        assert!(
            second.is_none(),
            "the bytes are unchanged: the stream must not repeat its error; got {second:?}"
        );
        drop(peer);
    })
    .await;
}

// ----- a restored codec, a timeout while stuck, a ticket dropped elsewhere -----

/// `from_parts` gives a handle the default options (it has no builder);
/// `Builder::build_from_parts` puts the parts back with the builder's.
#[tokio::test]
async fn build_from_parts_keeps_the_builders_options_from_parts_the_defaults() {
    let mut b = QueuedFramed::builder();
    b.rbuf_max(Some(4));
    let long_line = |parts_of: fn(
        &anyframe::Builder,
        anyframe::Parts<tokio::io::DuplexStream>,
    ) -> QueuedFramed<tokio::io::DuplexStream>| {
        let b = b.clone();
        async move {
            let (ours, mut peer) = tokio::io::duplex(1024);
            let conn = b.build(ours);
            peer.write_all(b"0123456789\n").await.unwrap();
            let mut conn = parts_of(&b, conn.into_parts());
            within("line", conn.read(LineCodec::new()))
                .await
                .map(|l| l.line().len())
        }
    };
    let e = long_line(|b, parts| b.build_from_parts(parts))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSpace, "{e:?}");
    assert!(
        long_line(|_, parts| QueuedFramed::from_parts(parts))
            .await
            .is_ok()
    );
}

/// `into_parts` keeps the codec with its read buffer and `from_parts` puts
/// them back: a codec in the middle of its input (state pointing into the
/// buffer) is not probed with an empty buffer, and its Stream goes on.
#[tokio::test]
async fn from_parts_stream_with_a_json_codec_mid_scan_does_not_panic() {
    within("the test", async {
        let (ours, mut peer) = tokio::io::duplex(1024);
        let mut conn = QueuedFramed::with_codec(ours, JsonCodec::<serde_json::Value>::new());
        peer.write_all(b"{\"a\":1}\n").await.unwrap();
        let first = conn.next().await;
        assert!(matches!(&first, Some(Ok(v)) if v["a"] == 1), "{first:?}");
        // Wait a moment for the next text: the codec looks at the "\n".
        assert!(
            tokio::time::timeout(Duration::from_millis(50), conn.next())
                .await
                .is_err()
        );
        let parts = conn.into_parts();
        assert_eq!(&parts.read_buf[..], b"\n");
        let mut conn = QueuedFramed::from_parts(parts);
        peer.write_all(b"{\"a\":2}\n").await.unwrap();
        let second = std::panic::AssertUnwindSafe(conn.next())
            .catch_unwind()
            .await;
        match second {
            Ok(Some(Ok(v))) => assert_eq!(v["a"], 2),
            Ok(other) => panic!("expected {{\"a\":2}}, got {other:?}"),
            Err(p) => panic!(
                "the Stream panicked on a restored codec: {:?}",
                p.downcast_ref::<String>()
            ),
        }
    })
    .await;
}

/// The same with tokio-util's `LinesCodec` mid-line, handed over from a
/// `FramedRead`.
#[tokio::test]
async fn from_parts_stream_with_a_tokio_lines_codec_mid_line_does_not_panic() {
    within("the test", async {
        let (ours, mut peer) = tokio::io::duplex(1024);
        let mut framed =
            tokio_util::codec::FramedRead::new(ours, tokio_util::codec::LinesCodec::new());
        peer.write_all(b"hel").await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(50), framed.next())
                .await
                .is_err()
        );
        let fp = framed.into_parts();
        let mut parts = Parts::new(fp.io, fp.codec);
        parts.read_buf = fp.read_buf;
        let mut conn = QueuedFramed::from_parts(parts);
        peer.write_all(b"lo\n").await.unwrap();
        let line = std::panic::AssertUnwindSafe(conn.next())
            .catch_unwind()
            .await;
        match line {
            Ok(Some(Ok(l))) => assert_eq!(l, "hello"),
            Ok(other) => panic!("expected \"hello\", got {other:?}"),
            Err(p) => panic!(
                "the Stream panicked on a restored codec: {:?}",
                p.downcast_ref::<String>()
            ),
        }
    })
    .await;
}

// ----- D2: a non-fatal timeout while stuck ends the Stream for good ---------

fn discard_line() -> LineCodec {
    LineCodec::builder()
        .max_length(2)
        .overflow(OverflowPolicy::Discard)
        .build()
        .unwrap()
}

/// Stuck on `[1,,]`; a read given up while dropping the over-long bytes
/// stays queued (Cancellation), and the read timeout expires while the
/// Stream drives it: a non-fatal `ETIMEDOUT` is yielded and the Stream
/// goes on.
#[tokio::test]
async fn a_timeout_while_stuck_does_not_end_the_stream_for_good() {
    within("the test", async {
        let mut builder = QueuedFramed::builder();
        builder.rtimeout(Duration::from_millis(300));
        let (mut conn, mut peer) = stuck_on(&builder, b"[1,,]").await;
        // Skip the bad bytes with a line read; give up on it after a moment.
        let gave_up =
            tokio::time::timeout(Duration::from_millis(50), conn.read(discard_line())).await;
        assert!(gave_up.is_err());
        assert_eq!(conn.read_buffer(), b"", "the read began dropping the line");

        timeout_then_the_next_text(&mut conn, &mut peer).await;
    })
    .await;
}

/// The Stream yields the read timeout, non-fatal; once the line being
/// dropped ends, the text after it comes out.
async fn timeout_then_the_next_text(
    conn: &mut QueuedFramed<tokio::io::DuplexStream, JsonCodec<serde_json::Value>>,
    peer: &mut tokio::io::DuplexStream,
) {
    let second = conn.next().await;
    assert!(
        matches!(&second, Some(Err(e)) if e.is_timeout() && !e.is_fatal()),
        "{second:?}"
    );
    peer.write_all(b"\n[2]\n").await.unwrap();
    let mut rest = Vec::new();
    for _ in 0..2 {
        match tokio::time::timeout(Duration::from_secs(2), conn.next()).await {
            Ok(item) => rest.push(item),
            Err(_) => break,
        }
    }
    assert!(
        rest.iter()
            .any(|i| matches!(i, Some(Ok(v)) if *v == serde_json::json!([2]))),
        "after a non-fatal timeout the stream goes on to [2]; got {rest:?} \
         (buffer {:?}, closed {})",
        String::from_utf8_lossy(conn.read_buffer()),
        conn.is_closed()
    );
}

/// The same steps with the Stream not stuck.
#[tokio::test]
async fn control_the_same_timeout_on_a_live_stream_goes_on() {
    within("the test", async {
        let (ours, mut peer) = tokio::io::duplex(1024);
        let mut conn = QueuedFramed::builder()
            .rtimeout(Duration::from_millis(300))
            .build_with_codec(ours, JsonCodec::<serde_json::Value>::new());
        peer.write_all(b"xxxxx").await.unwrap();
        let gave_up =
            tokio::time::timeout(Duration::from_millis(50), conn.read(discard_line())).await;
        assert!(gave_up.is_err());
        timeout_then_the_next_text(&mut conn, &mut peer).await;
    })
    .await;
}

// ----- a queued read given up in another task wakes the Stream ----------------

/// `Err(())` if `fut` is not ready by `limit`. The deadline is checked
/// before `fut` is polled, so the timer's own wake-up cannot complete it
/// (unlike `tokio::time::timeout`, which polls the inner future first).
async fn unless_woken_within<F: std::future::Future>(
    limit: Duration,
    fut: F,
) -> Result<F::Output, ()> {
    tokio::select! {
        biased;
        _ = tokio::time::sleep(limit) => Err(()),
        out = fut => Ok(out),
    }
}

/// Stuck; a read queued to look at the bytes is handed to another task,
/// which gives up on it: the Stream is woken, the read consumed nothing, and
/// the Stream ends.
#[tokio::test]
async fn a_stuck_stream_is_woken_when_its_queued_read_is_given_up() {
    within("the test", async {
        let (mut conn, peer) = stuck_on(&QueuedFramed::builder(), b"[1,,]\n").await;
        let ticket = conn.push_read(ChunkCodec::new(100));
        let other = tokio::spawn(async move {
            // Another task waits a moment for it, then gives up.
            let _ = tokio::time::timeout(Duration::from_millis(100), ticket).await;
        });
        let t0 = std::time::Instant::now();
        let second = unless_woken_within(Duration::from_secs(2), conn.next()).await;
        eprintln!("stuck next took {:?}", t0.elapsed());
        other.await.unwrap();
        assert!(
            matches!(&second, Ok(None)),
            "the queued read was given up having consumed nothing: the stream must \
             end, not hang; got {second:?} (queued {})",
            conn.queued_reads()
        );
        drop(peer);
    })
    .await;
}

/// The same on a live Stream: a good frame buffered behind a queued read
/// that another task gives up on comes out once the read is dropped.
#[tokio::test]
async fn a_live_stream_is_woken_when_the_queued_read_before_it_is_given_up() {
    within("the test", async {
        let (ours, mut peer) = tokio::io::duplex(1024);
        let mut conn = QueuedFramed::with_codec(ours, JsonCodec::<serde_json::Value>::new());
        peer.write_all(b"[2]\n").await.unwrap();
        let ticket = conn.push_read(ChunkCodec::new(100));
        let other = tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_millis(100), ticket).await;
        });
        let t0 = std::time::Instant::now();
        let next = unless_woken_within(Duration::from_secs(2), conn.next()).await;
        eprintln!("live next took {:?}", t0.elapsed());
        other.await.unwrap();
        assert!(
            matches!(&next, Ok(Some(Ok(v))) if *v == serde_json::json!([2])),
            "the read before the stream's frame was given up: expected [2], got {next:?}"
        );
        drop(peer);
    })
    .await;
}

/// `drained` returns once a write brings the queue down to the low mark,
/// though the transport then takes no more.
#[tokio::test]
async fn queued_framed_drained_resolves_when_a_write_reaches_the_low_watermark() {
    let (io, _peer) = tokio::io::duplex(16); // takes 16 bytes, then never reads
    let mut conn = QueuedFramed::builder().watermarks(1000, 500).build(io);
    conn.push_bytes(vec![b'x'; 510]).unwrap();
    within("drained after one 16-byte write", conn.drained())
        .await
        .unwrap();
    assert_eq!(conn.write_buffered(), 494);
}
