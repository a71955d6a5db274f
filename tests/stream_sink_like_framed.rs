//! `QueuedFramed` with a default codec as a `Stream` / `Sink`, against
//! tokio-util's `Framed` on the same input as the oracle: where the docs
//! name no deliberate difference, the two agree.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

#[path = "support/len1.rs"]
mod len1;

use anyframe::{ErrorKind, QueuedFramed};
use bytes::{BufMut, BytesMut};
use futures::{Sink, SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;
use tokio_util::codec::{Decoder, Encoder, Framed};

async fn t<F: Future>(what: &str, f: F) -> F::Output {
    match timeout(Duration::from_secs(5), f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// `\n`-terminated lines, io::Error; `decode_eof` is tokio-util's default.
#[derive(Default, Debug)]
struct Nl;

impl Decoder for Nl {
    type Item = BytesMut;
    type Error = io::Error;
    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<BytesMut>> {
        match src.iter().position(|&b| b == b'\n') {
            Some(i) => {
                let mut l = src.split_to(i + 1);
                l.truncate(i);
                Ok(Some(l))
            }
            None => Ok(None),
        }
    }
}

impl Encoder<&'static [u8]> for Nl {
    type Error = io::Error;
    fn encode(&mut self, item: &'static [u8], dst: &mut BytesMut) -> io::Result<()> {
        dst.put_slice(item);
        dst.put_u8(b'\n');
        Ok(())
    }
}

impl Encoder<BytesMut> for Nl {
    type Error = io::Error;
    fn encode(&mut self, item: BytesMut, dst: &mut BytesMut) -> io::Result<()> {
        dst.put_slice(&item);
        dst.put_u8(b'\n');
        Ok(())
    }
}

/// As `Nl`, but its `decode_eof` says "no more frames" and ignores an
/// unterminated tail (a protocol where trailing garbage is fine).
#[derive(Default, Debug)]
struct NlLenientEof;

impl Decoder for NlLenientEof {
    type Item = BytesMut;
    type Error = io::Error;
    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<BytesMut>> {
        Nl.decode(src)
    }
    fn decode_eof(&mut self, src: &mut BytesMut) -> io::Result<Option<BytesMut>> {
        self.decode(src)
    }
}

async fn framed_collect<C: Decoder>(input: &[u8], codec: C) -> Vec<Result<C::Item, String>>
where
    C::Error: std::fmt::Display,
{
    let (ours, mut peer) = tokio::io::duplex(1 << 16);
    peer.write_all(input).await.unwrap();
    peer.shutdown().await.unwrap();
    let mut f = Framed::new(ours, codec);
    let mut out = Vec::new();
    for _ in 0..8 {
        match t("framed next", f.next()).await {
            None => break,
            Some(r) => out.push(r.map_err(|e| e.to_string())),
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Stream: end of input
// ---------------------------------------------------------------------------

/// A codec whose `decode_eof` returns `Ok(None)` with bytes left: `Framed`
/// ends with `None` and drops the bytes. Here nothing is dropped in
/// silence (RQ-6): the end is `EPIPE` and the bytes stay reachable.
#[tokio::test]
async fn decode_eof_none_with_bytes_left_is_epipe_and_keeps_them() {
    let oracle = framed_collect(b"a\nb\ntail", NlLenientEof).await;
    assert_eq!(oracle.len(), 2, "Framed: two lines then None: {oracle:?}");
    assert!(oracle.iter().all(|r| r.is_ok()));

    let (ours, mut peer) = tokio::io::duplex(1 << 16);
    peer.write_all(b"a\nb\ntail").await.unwrap();
    peer.shutdown().await.unwrap();
    let mut conn = QueuedFramed::with_codec(ours, NlLenientEof);
    assert_eq!(&t("a", conn.next()).await.unwrap().unwrap()[..], b"a");
    assert_eq!(&t("b", conn.next()).await.unwrap().unwrap()[..], b"b");
    let e = t("end", conn.next()).await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BrokenPipe, "{e}");
    assert!(t("after", conn.next()).await.is_none());
    assert_eq!(&conn.into_parts().read_buf[..], b"tail");
}

/// The default `decode_eof` with a partial frame: `Framed` yields an
/// error then `None`; the partial bytes stay reachable.
#[tokio::test]
async fn partial_frame_at_eof_is_one_error_then_none_and_bytes_kept() {
    let oracle = framed_collect(b"a\ntail", Nl).await;
    assert_eq!(oracle.len(), 2);
    assert!(oracle[1].is_err());

    let (ours, mut peer) = tokio::io::duplex(1 << 16);
    peer.write_all(b"a\ntail").await.unwrap();
    peer.shutdown().await.unwrap();
    let mut conn = QueuedFramed::with_codec(ours, Nl);
    assert_eq!(&t("a", conn.next()).await.unwrap().unwrap()[..], b"a");
    let e = t("err", conn.next()).await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BrokenPipe);
    for _ in 0..3 {
        assert!(t("after", conn.next()).await.is_none());
    }
    let parts = conn.into_parts();
    assert_eq!(&parts.read_buf[..], b"tail");
}

/// `decode_eof` that turns the unterminated tail into a last frame.
#[tokio::test]
async fn decode_eof_yielding_last_frame_then_none() {
    #[derive(Default)]
    struct Tail;
    impl Decoder for Tail {
        type Item = BytesMut;
        type Error = io::Error;
        fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<BytesMut>> {
            Nl.decode(src)
        }
        fn decode_eof(&mut self, src: &mut BytesMut) -> io::Result<Option<BytesMut>> {
            if let Some(f) = Nl.decode(src)? {
                return Ok(Some(f));
            }
            if src.is_empty() {
                Ok(None)
            } else {
                Ok(Some(src.split()))
            }
        }
    }
    let oracle = framed_collect(b"a\ntail", Tail).await;
    assert_eq!(oracle.len(), 2);
    let (ours, mut peer) = tokio::io::duplex(1 << 16);
    peer.write_all(b"a\ntail").await.unwrap();
    peer.shutdown().await.unwrap();
    let mut conn = QueuedFramed::with_codec(ours, Tail);
    assert_eq!(&t("a", conn.next()).await.unwrap().unwrap()[..], b"a");
    assert_eq!(&t("tail", conn.next()).await.unwrap().unwrap()[..], b"tail");
    assert!(t("end", conn.next()).await.is_none());
    assert!(t("end2", conn.next()).await.is_none());
    assert!(!conn.is_closed());
}

/// After a clean `None`, polling again stays `None` and is quick.
#[tokio::test]
async fn poll_next_after_clean_end_stays_none() {
    let (ours, mut peer) = tokio::io::duplex(64);
    peer.write_all(b"x\n").await.unwrap();
    drop(peer);
    let mut conn = QueuedFramed::with_codec(ours, Nl);
    assert!(t("x", conn.next()).await.unwrap().is_ok());
    for _ in 0..5 {
        assert!(t("none", conn.next()).await.is_none());
    }
    // The write side still works after a clean read EOF? The peer is gone,
    // so only check that nothing hangs.
    let _ = t("send", conn.send(&b"late"[..])).await;
}

// ---------------------------------------------------------------------------
// Stream: decoder errors
// ---------------------------------------------------------------------------

/// tokio-util's `LinesCodec` with a max length says `MaxLineLengthExceeded`
/// without consuming anything and skips the line only at its next call.
/// `Framed`, which keeps its codec, goes on; here a read may take its
/// decoder by value (`read`, a Handle's reads), where a non-fatal error
/// would come back on every retry without end. So it is a deliberate
/// difference: fatal `ENOSPC`, and a retry loop ends at once.
#[tokio::test]
async fn tokio_lines_codec_long_line_is_fatal_so_no_retry_spins() {
    use tokio_util::codec::LinesCodec;
    let (ours, mut peer) = tokio::io::duplex(1 << 16);
    peer.write_all(b"waytoolongline\nok\n").await.unwrap();
    let mut conn = QueuedFramed::new(ours);
    let mut errors = 0;
    loop {
        match t("read", conn.read(LinesCodec::new_with_max_length(4))).await {
            Err(e) if !e.is_fatal() && errors < 5 => errors += 1,
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::NoSpace, "{e}");
                assert!(e.is_fatal(), "{e}");
                break;
            }
            Ok(line) => panic!("read {line:?} past the long line"),
        }
    }
    assert_eq!(
        errors, 0,
        "the same non-fatal error came back {errors} times"
    );
    assert!(conn.is_closed());
}

/// A decoder that consumes the bad line and returns a non-fatal error:
/// the next poll resumes with the next line.
#[tokio::test]
async fn non_fatal_error_that_consumed_resumes_with_next_frame() {
    #[derive(Default)]
    struct Picky;
    impl Decoder for Picky {
        type Item = BytesMut;
        type Error = io::Error;
        fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<BytesMut>> {
            match Nl.decode(src)? {
                Some(l) if l.starts_with(b"bad") => {
                    Err(io::Error::new(io::ErrorKind::InvalidData, "bad"))
                }
                other => Ok(other),
            }
        }
    }
    let (ours, mut peer) = tokio::io::duplex(1 << 16);
    peer.write_all(b"one\nbad\ntwo\n").await.unwrap();
    let mut conn = QueuedFramed::with_codec(ours, Picky);
    assert_eq!(&t("1", conn.next()).await.unwrap().unwrap()[..], b"one");
    let e = t("bad", conn.next()).await.unwrap().unwrap_err();
    assert!(!e.is_fatal());
    assert_eq!(&t("2", conn.next()).await.unwrap().unwrap()[..], b"two");
    drop(peer);
    assert!(t("end", conn.next()).await.is_none());
}

/// A decoder that returns Ok(None) without consuming while input arrives
/// is asked again only when input arrives (no busy loop).
#[tokio::test]
async fn never_completing_decoder_is_not_polled_in_a_busy_loop() {
    struct Never(Arc<AtomicUsize>);
    impl Decoder for Never {
        type Item = BytesMut;
        type Error = io::Error;
        fn decode(&mut self, _src: &mut BytesMut) -> io::Result<Option<BytesMut>> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Ok(None)
        }
    }
    let calls = Arc::new(AtomicUsize::new(0));
    let (ours, mut peer) = tokio::io::duplex(1 << 16);
    let mut conn = QueuedFramed::with_codec(ours, Never(calls.clone()));
    let reader = tokio::spawn(async move {
        let r = timeout(Duration::from_millis(400), conn.next()).await;
        assert!(
            r.is_err(),
            "no frame ever: {:?}",
            r.map(|o| o.map(|r| r.is_ok()))
        );
        conn
    });
    for _ in 0..10 {
        peer.write_all(b"0123456789").await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let conn = t("reader", reader).await.unwrap();
    let n = calls.load(Ordering::Relaxed);
    assert!(n < 100, "decode called {n} times for ~11 reads");
    let parts = conn.into_parts();
    assert_eq!(parts.read_buf.len(), 100, "every byte kept");
}

/// A frame longer than `rbuf_max`: a fatal `ENOSPC`, no hang.
#[tokio::test]
async fn frame_larger_than_rbuf_max_is_enospc_not_hang() {
    let (ours, mut peer) = tokio::io::duplex(1 << 16);
    let mut conn = anyframe::QueuedFramed::builder()
        .rbuf_max(Some(1024))
        .build_with_codec(ours, Nl);
    let w = tokio::spawn(async move {
        let _ = peer.write_all(&vec![b'x'; 10_000]).await;
        peer
    });
    let e = t("next", conn.next()).await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSpace);
    assert!(t("after", conn.next()).await.is_none());
    let parts = conn.into_parts();
    assert_eq!(parts.read_buf.len(), 1024);
    drop(w);
}

/// A frame of exactly `rbuf_max` bytes (newline included) fits.
#[tokio::test]
async fn frame_of_exactly_rbuf_max_is_decoded() {
    let (ours, mut peer) = tokio::io::duplex(1 << 16);
    let mut conn = anyframe::QueuedFramed::builder()
        .rbuf_max(Some(1024))
        .build_with_codec(ours, Nl);
    let mut line = vec![b'x'; 1023];
    line.push(b'\n');
    line.extend_from_slice(b"next\n");
    peer.write_all(&line).await.unwrap();
    let f = t("big", conn.next()).await.unwrap().unwrap();
    assert_eq!(f.len(), 1023);
    assert_eq!(&t("next", conn.next()).await.unwrap().unwrap()[..], b"next");
}

// ---------------------------------------------------------------------------
// Stream mixed with queued reads; into_parts
// ---------------------------------------------------------------------------

#[tokio::test]
async fn queued_read_runs_before_stream_and_bytes_are_not_lost() {
    let (ours, mut peer) = tokio::io::duplex(1 << 16);
    peer.write_all(b"HDR4abcdline1\nline2\nrest").await.unwrap();
    let mut conn = QueuedFramed::with_codec(ours, Nl);
    let hdr = conn.push_read(anyframe::codecs::ChunkCodec::new(3));
    let n = conn.push_read(anyframe::codecs::ChunkCodec::new(1));
    let body = conn.push_read(anyframe::codecs::ChunkCodec::new(4));
    assert_eq!(&t("l1", conn.next()).await.unwrap().unwrap()[..], b"line1");
    assert_eq!(&t("hdr", conn.wait(hdr)).await.unwrap()[..], b"HDR");
    assert_eq!(&t("n", conn.wait(n)).await.unwrap()[..], b"4");
    assert_eq!(&t("body", conn.wait(body)).await.unwrap()[..], b"abcd");
    assert_eq!(&t("l2", conn.next()).await.unwrap().unwrap()[..], b"line2");
    let parts = conn.into_parts();
    assert_eq!(&parts.read_buf[..], b"rest");
}

#[tokio::test]
async fn into_parts_after_stuck_error_keeps_the_rejected_bytes() {
    #[derive(Default)]
    struct Strict;
    impl Decoder for Strict {
        type Item = BytesMut;
        type Error = io::Error;
        fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<BytesMut>> {
            if src.first() == Some(&b'!') {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "bang"));
            }
            Nl.decode(src)
        }
    }
    let (ours, mut peer) = tokio::io::duplex(1 << 16);
    peer.write_all(b"ok\n!bad\nmore\n").await.unwrap();
    let mut conn = QueuedFramed::with_codec(ours, Strict);
    assert_eq!(&t("ok", conn.next()).await.unwrap().unwrap()[..], b"ok");
    assert!(t("bad", conn.next()).await.unwrap().is_err());
    assert!(t("stuck", conn.next()).await.is_none());
    conn.consume(5);
    assert_eq!(&t("more", conn.next()).await.unwrap().unwrap()[..], b"more");
    peer.write_all(b"!x").await.unwrap();
    assert!(t("bad2", conn.next()).await.unwrap().is_err());
    let parts = conn.into_parts();
    assert_eq!(&parts.read_buf[..], b"!x");
}

// ---------------------------------------------------------------------------
// Sink
// ---------------------------------------------------------------------------

#[tokio::test]
async fn close_twice_then_start_send_is_an_error_not_a_hang() {
    let (ours, mut peer) = tokio::io::duplex(1 << 16);
    let mut conn = QueuedFramed::with_codec(ours, Nl);
    t("send", conn.send(&b"one"[..])).await.unwrap();
    t("close", SinkExt::<&[u8]>::close(&mut conn))
        .await
        .unwrap();
    t("close2", SinkExt::<&[u8]>::close(&mut conn))
        .await
        .unwrap();
    let mut all = Vec::new();
    t("peer", peer.read_to_end(&mut all)).await.unwrap();
    assert_eq!(all, b"one\n");
    let r = Pin::new(&mut conn).start_send(&b"late"[..]);
    assert!(r.is_err());
    let r = t(
        "ready",
        futures::future::poll_fn(|cx| Sink::<&[u8]>::poll_ready(Pin::new(&mut conn), cx)),
    )
    .await;
    assert!(r.is_err());
    // Reading still works after our half-close.
    peer.write_all(b"in\n").await.unwrap();
    assert_eq!(&t("in", conn.next()).await.unwrap().unwrap()[..], b"in");
}

#[tokio::test]
async fn poll_flush_after_io_error_returns_error_every_time() {
    let (ours, peer) = tokio::io::duplex(16);
    drop(peer);
    let mut conn = QueuedFramed::with_codec(ours, Nl);
    let e1 = t("send", conn.send(&b"hello"[..])).await.unwrap_err();
    assert!(e1.is_fatal());
    let e2 = t("flush", SinkExt::<&[u8]>::flush(&mut conn))
        .await
        .unwrap_err();
    assert!(e2.is_fatal());
    let e3 = t("close", SinkExt::<&[u8]>::close(&mut conn))
        .await
        .unwrap_err();
    assert!(e3.is_fatal());
    assert!(t("next", conn.next()).await.is_none_or(|r| r.is_err()));
}

/// An encoder that fails after writing part of the item: nothing of it is
/// queued, the following item goes out intact.
#[tokio::test]
async fn encoder_error_half_way_leaves_no_partial_bytes() {
    struct Half;
    impl Encoder<&'static [u8]> for Half {
        type Error = io::Error;
        fn encode(&mut self, item: &'static [u8], dst: &mut BytesMut) -> io::Result<()> {
            dst.put_slice(item);
            if item == b"bad" {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "no"));
            }
            dst.put_u8(b'\n');
            Ok(())
        }
    }
    impl Decoder for Half {
        type Item = BytesMut;
        type Error = io::Error;
        fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<BytesMut>> {
            Nl.decode(src)
        }
    }
    let (ours, mut peer) = tokio::io::duplex(1 << 16);
    let mut conn = QueuedFramed::with_codec(ours, Half);
    Pin::new(&mut conn).start_send(&b"a"[..]).unwrap();
    assert!(Pin::new(&mut conn).start_send(&b"bad"[..]).is_err());
    Pin::new(&mut conn).start_send(&b"b"[..]).unwrap();
    t("close", SinkExt::<&[u8]>::close(&mut conn))
        .await
        .unwrap();
    let mut all = Vec::new();
    t("peer", peer.read_to_end(&mut all)).await.unwrap();
    assert_eq!(all, b"a\nb\n");
}

/// An encoder that panics half way: the panic reaches the caller, the
/// connection closes, and the partial bytes are not in the write queue.
#[tokio::test]
async fn encoder_panic_half_way_leaves_no_partial_bytes() {
    struct Boom;
    impl Encoder<&'static [u8]> for Boom {
        type Error = io::Error;
        fn encode(&mut self, item: &'static [u8], dst: &mut BytesMut) -> io::Result<()> {
            dst.put_slice(item);
            if item == b"boom" {
                panic!("encoder boom");
            }
            dst.put_u8(b'\n');
            Ok(())
        }
    }
    let (ours, _peer) = tokio::io::duplex(4);
    let mut conn = QueuedFramed::with_codec(ours, Boom);
    Pin::new(&mut conn).start_send(&b"abcdefgh"[..]).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Pin::new(&mut conn).start_send(&b"boom"[..])
    }));
    assert!(r.is_err());
    assert!(conn.is_closed());
    let r = Pin::new(&mut conn).start_send(&b"x"[..]);
    assert!(r.is_err());
    let parts = conn.into_parts();
    assert_eq!(&parts.write_buf[..], b"abcdefgh\n");
}

// ---------------------------------------------------------------------------
// split halves, echo with forward
// ---------------------------------------------------------------------------

/// Echo over split halves with `forward`, a small transport (backpressure
/// both ways), a peer that writes everything, half-closes, then reads.
#[tokio::test]
async fn split_forward_echo_with_backpressure_and_half_close() {
    let (ours, peer) = tokio::io::duplex(512);
    let conn = anyframe::QueuedFramed::builder()
        .watermarks(1024, 0)
        .build_with_codec(ours, Nl);
    let (sink, stream) = conn.split::<BytesMut>();
    let echo = tokio::spawn(async move { stream.forward(sink).await });
    let (mut rd, mut wr) = tokio::io::split(peer);
    let mut expect = Vec::new();
    for i in 0..5000u32 {
        expect.extend_from_slice(format!("line number {i}\n").as_bytes());
    }
    let input = expect.clone();
    let writer = tokio::spawn(async move {
        wr.write_all(&input).await.unwrap();
        wr.shutdown().await.unwrap();
        wr
    });
    // Read slowly at first.
    let mut got = Vec::new();
    let mut buf = [0u8; 100];
    for _ in 0..20 {
        let n = t("slow read", rd.read(&mut buf)).await.unwrap();
        got.extend_from_slice(&buf[..n]);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    t("read rest", rd.read_to_end(&mut got)).await.unwrap();
    assert_eq!(got.len(), expect.len());
    assert!(got == expect);
    t("echo", echo).await.unwrap().unwrap();
    let _ = t("writer", writer).await.unwrap();
}

/// Split halves in two tasks: one reads frames, the other sends on a
/// timer; the peer echoes. Each half hears its own I/O.
#[tokio::test]
async fn split_halves_in_two_tasks_each_make_progress() {
    let (ours, mut peer) = tokio::io::duplex(64);
    let conn = QueuedFramed::with_codec(ours, Nl);
    let (mut sink, mut stream) = conn.split::<&'static [u8]>();
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while let Some(r) = stream.next().await {
            let l = r.unwrap();
            assert_eq!(&l[..], b"ping");
            n += 1;
        }
        n
    });
    let writer = tokio::spawn(async move {
        for _ in 0..50 {
            sink.send(&b"ping"[..]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        sink.close().await.unwrap();
    });
    // The peer echoes until our write side closes, then closes.
    let mut buf = [0u8; 7];
    let mut all = Vec::new();
    loop {
        let n = t("peer read", peer.read(&mut buf)).await.unwrap();
        if n == 0 {
            break;
        }
        all.extend_from_slice(&buf[..n]);
        t("peer write", peer.write_all(&buf[..n])).await.unwrap();
    }
    drop(peer);
    t("writer", writer).await.unwrap();
    assert_eq!(t("reader", reader).await.unwrap(), 50);
    assert_eq!(all.len(), 250);
}

/// `Framed` semantics for `poll_ready` without `start_send`, repeatedly.
#[tokio::test]
async fn poll_ready_repeated_without_start_send_is_fine() {
    let (ours, _peer) = tokio::io::duplex(64);
    let mut conn = QueuedFramed::with_codec(ours, Nl);
    for _ in 0..10 {
        t(
            "ready",
            futures::future::poll_fn(|cx| Sink::<&[u8]>::poll_ready(Pin::new(&mut conn), cx)),
        )
        .await
        .unwrap();
    }
    assert_eq!(conn.write_buffered(), 0);
}

// ---------------------------------------------------------------------------
// more
// ---------------------------------------------------------------------------

/// A codec's own error from `decode_eof` (a truncated frame it detects
/// itself, `io::ErrorKind::Other`) reaches the caller as `Framed` passes
/// it: the codec's message is not replaced by a generic end-of-input error.
#[tokio::test]
async fn decode_eof_error_from_codec_is_passed_through_like_framed() {
    #[derive(Default)]
    struct Checked;
    impl Decoder for Checked {
        type Item = BytesMut;
        type Error = io::Error;
        fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<BytesMut>> {
            Nl.decode(src)
        }
        fn decode_eof(&mut self, src: &mut BytesMut) -> io::Result<Option<BytesMut>> {
            match self.decode(src)? {
                Some(f) => Ok(Some(f)),
                None if src.is_empty() => Ok(None),
                None => Err(io::Error::other("checksum trailer missing")),
            }
        }
    }
    let oracle = framed_collect(b"a\ntail", Checked).await;
    assert_eq!(oracle.len(), 2);
    assert!(
        oracle[1]
            .as_ref()
            .unwrap_err()
            .contains("checksum trailer missing")
    );

    let (ours, mut peer) = tokio::io::duplex(1 << 16);
    peer.write_all(b"a\ntail").await.unwrap();
    peer.shutdown().await.unwrap();
    let mut conn = QueuedFramed::with_codec(ours, Checked);
    assert_eq!(&t("a", conn.next()).await.unwrap().unwrap()[..], b"a");
    let e = t("err", conn.next()).await.unwrap().unwrap_err();
    let shown = format!("{e:?} / {e}");
    assert!(
        shown.contains("checksum trailer missing"),
        "the codec's error was replaced: {shown}"
    );
}

/// A decoder that panics: the connection closes, the bytes stay.
#[tokio::test]
async fn decoder_panic_closes_and_keeps_bytes() {
    #[derive(Default)]
    struct Bomb;
    impl Decoder for Bomb {
        type Item = BytesMut;
        type Error = io::Error;
        fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<BytesMut>> {
            if src.starts_with(b"boom") {
                panic!("decoder boom");
            }
            Nl.decode(src)
        }
    }
    let (ours, mut peer) = tokio::io::duplex(1 << 16);
    peer.write_all(b"ok\nboom\n").await.unwrap();
    let mut conn = QueuedFramed::with_codec(ours, Bomb);
    assert_eq!(&t("ok", conn.next()).await.unwrap().unwrap()[..], b"ok");
    let fut = std::panic::AssertUnwindSafe(conn.next());
    let r = t("boom", futures::FutureExt::catch_unwind(fut)).await;
    assert!(r.is_err());
    assert!(conn.is_closed());
    let after = t("after", conn.next()).await;
    assert!(after.is_none_or(|r| r.is_err()));
    assert!(t("after2", conn.next()).await.is_none());
    let parts = conn.into_parts();
    assert_eq!(&parts.read_buf[..], b"boom\n");
}

/// Counts polls of the transport.
struct Counting<IO> {
    io: IO,
    reads: Arc<AtomicUsize>,
    writes: Arc<AtomicUsize>,
}

impl<IO: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counting<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Counting<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Split halves in two tasks, both waiting on a silent peer that reads
/// nothing: neither spins.
#[tokio::test]
async fn split_halves_waiting_on_silent_peer_do_not_spin() {
    let (ours, _peer) = tokio::io::duplex(256);
    let reads = Arc::new(AtomicUsize::new(0));
    let writes = Arc::new(AtomicUsize::new(0));
    let io = Counting {
        io: ours,
        reads: reads.clone(),
        writes: writes.clone(),
    };
    let conn = anyframe::QueuedFramed::builder()
        .watermarks(512, 0)
        .build_with_codec(io, Nl);
    let (mut sink, mut stream) = conn.split::<BytesMut>();
    let r = tokio::spawn(async move {
        timeout(Duration::from_millis(300), stream.next())
            .await
            .is_err()
    });
    let w = tokio::spawn(async move {
        timeout(Duration::from_millis(300), async {
            loop {
                sink.send(BytesMut::from(&[b'x'; 200][..])).await.unwrap();
            }
        })
        .await
        .is_err()
    });
    assert!(t("r", r).await.unwrap());
    assert!(t("w", w).await.unwrap());
    let (r, w) = (
        reads.load(Ordering::Relaxed),
        writes.load(Ordering::Relaxed),
    );
    assert!(
        r < 50 && w < 50,
        "reads polled {r}, writes polled {w} in 300 ms"
    );
}

/// An echo through `forward` where the peer half-closes before reading:
/// once its input ends, `forward` closes our write side and the peer sees
/// every line and then EOF.
#[tokio::test]
async fn forward_echo_ends_with_half_close_after_peer_eof() {
    let (ours, peer) = tokio::io::duplex(1 << 16);
    let conn = QueuedFramed::with_codec(ours, Nl);
    let (sink, stream) = conn.split::<BytesMut>();
    let echo = tokio::spawn(async move { stream.forward(sink).await });
    let (mut rd, mut wr) = tokio::io::split(peer);
    wr.write_all(b"a\nb\nc\n").await.unwrap();
    wr.shutdown().await.unwrap();
    let mut got = Vec::new();
    t("read", rd.read_to_end(&mut got)).await.unwrap();
    assert_eq!(got, b"a\nb\nc\n");
    t("echo", echo).await.unwrap().unwrap();
}

/// `into_parts` with a `next()` given up half way: the codec's state and
/// the bytes come back together, and `from_parts` goes on where it was.
#[tokio::test]
async fn into_parts_mid_frame_and_from_parts_resumes() {
    use tokio_util::codec::LengthDelimitedCodec;
    let (ours, mut peer) = tokio::io::duplex(1 << 16);
    let mut conn = QueuedFramed::with_codec(ours, LengthDelimitedCodec::new());
    peer.write_all(&[0, 0, 0, 5, b'h', b'e']).await.unwrap();
    assert!(
        timeout(Duration::from_millis(50), conn.next())
            .await
            .is_err()
    );
    let parts = conn.into_parts();
    let mut again = QueuedFramed::from_parts(parts);
    peer.write_all(b"llo").await.unwrap();
    assert_eq!(
        &t("frame", again.next()).await.unwrap().unwrap()[..],
        b"hello"
    );
}

/// A codec that has consumed a frame's header and, at end of input,
/// reports the truncated frame itself (`UnexpectedEof`) with its buffer
/// empty: `Framed` yields that error; it must not become a clean end.
#[tokio::test]
async fn truncated_frame_reported_by_decode_eof_is_an_error_not_a_clean_end() {
    use len1::Len1;
    // Header says 5, nothing of the payload arrives.
    let input = [2u8, b'h', b'i', 5];
    let oracle = framed_collect(&input, Len1::default()).await;
    assert_eq!(oracle.len(), 2, "{oracle:?}");
    assert!(
        oracle[1].is_err(),
        "Framed reports the truncation: {oracle:?}"
    );

    let (ours, mut peer) = tokio::io::duplex(1 << 16);
    peer.write_all(&input).await.unwrap();
    peer.shutdown().await.unwrap();
    let mut conn = QueuedFramed::with_codec(ours, Len1::default());
    assert_eq!(&t("hi", conn.next()).await.unwrap().unwrap()[..], b"hi");
    let end = t("end", conn.next()).await;
    assert!(
        matches!(end, Some(Err(_))),
        "the codec said the last frame was truncated; got {end:?}"
    );
}

/// An encoder that clears `dst` (drops what it did not write): no panic
/// inside the library; the connection reports an error or goes on.
#[tokio::test]
async fn encoder_that_clears_dst_does_not_panic_the_library() {
    struct Clear;
    impl Encoder<&'static [u8]> for Clear {
        type Error = io::Error;
        fn encode(&mut self, item: &'static [u8], dst: &mut BytesMut) -> io::Result<()> {
            dst.clear();
            dst.put_slice(item);
            Ok(())
        }
    }
    let (ours, _peer) = tokio::io::duplex(4);
    let mut conn = QueuedFramed::with_codec(ours, Clear);
    Pin::new(&mut conn).start_send(&b"abcdefgh"[..]).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Pin::new(&mut conn).start_send(&b"x"[..])
    }));
    assert!(
        r.is_ok(),
        "the library panicked on an encoder that cleared dst"
    );
}
