//! A decoder keeps state about the bytes it has looked at (how far it has
//! scanned, how deep a JSON text is nested). These tests pin what happens
//! to the `Stream`'s decoder (the default reader, RQ-1) when a queued read
//! takes bytes from under the part of a frame it has begun: its state no
//! longer matches the buffer, and it says so instead of decoding garbage
//! (docs/semantics.md §4, *Decoders you keep*).

mod support;

use std::time::Duration;

use anyframe::codecs::{ChunkCodec, LineCodec, OverflowPolicy};
use anyframe::{ErrorKind, QueuedFramed};
use futures::StreamExt;
use support::within;
use tokio::io::AsyncWriteExt;

/// `next()` given up while the line decoder has scanned `abc`; a queued
/// 4-byte read then takes `abcd`. Resumed, the decoder would start past the
/// `\n` now at the front and yield `\nxy` as one line: it is refused
/// (`EINVAL`, non-fatal) and the stream ends until the decoder is replaced;
/// a fresh one reads the lines in step.
#[tokio::test]
async fn a_queued_read_taking_bytes_from_a_begun_stream_frame_makes_it_stale() {
    let (ours, mut peer) = tokio::io::duplex(1024);
    let mut conn = QueuedFramed::with_codec(ours, LineCodec::new());
    peer.write_all(b"abc").await.unwrap();
    let r = tokio::time::timeout(Duration::from_millis(30), conn.next()).await;
    assert!(r.is_err(), "no line yet: {r:?}");
    peer.write_all(b"d\nxy\nzz\n").await.unwrap();
    let four = within("chunk", conn.read(ChunkCodec::new(4)))
        .await
        .unwrap();
    assert_eq!(&four[..], b"abcd");

    let e = within("stale", conn.next()).await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(!e.is_fatal());
    assert!(within("ended", conn.next()).await.is_none());
    assert!(
        !conn.is_eof(),
        "ended on the stale decoder, not at end of input"
    );

    *conn.codec_mut() = LineCodec::new();
    let mut lines = Vec::new();
    for _ in 0..3 {
        lines.push(within("line", conn.next()).await.unwrap().unwrap());
    }
    let lines: Vec<&[u8]> = lines.iter().map(|l| l.line()).collect();
    assert_eq!(lines, [&b""[..], b"xy", b"zz"]);
}

/// The JSON twin: the scanner has seen `[1,[2,` (two levels open); a
/// queued read takes `[1,`. Resumed, it would wait for ever for a second
/// `]` inside `[2,3]`: refused the same way, and a fresh decoder reads
/// `[2,3]`.
#[cfg(feature = "json")]
#[tokio::test]
async fn a_stale_json_stream_decoder_is_refused_not_left_waiting() {
    use anyframe::codecs::JsonCodec;
    let (ours, mut peer) = tokio::io::duplex(1024);
    let mut conn = QueuedFramed::with_codec(ours, JsonCodec::<serde_json::Value>::new());
    peer.write_all(b"[1,[2,").await.unwrap();
    let r = tokio::time::timeout(Duration::from_millis(30), conn.next()).await;
    assert!(r.is_err(), "no text yet: {r:?}");
    let three = within("chunk", conn.read(ChunkCodec::new(3)))
        .await
        .unwrap();
    assert_eq!(&three[..], b"[1,");
    peer.write_all(b"3]] {\"k\":1}\n").await.unwrap();

    let e = within("stale", conn.next()).await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    *conn.codec_mut() = JsonCodec::new();
    let v = within("text", conn.next()).await.unwrap().unwrap();
    assert_eq!(v, serde_json::json!([2, 3]));
}

/// A line being dropped under the discard policy, its `next()` given up:
/// the stream is inside that line, and a queued read takes the bytes at the
/// front (RQ-1), the rest of the line included. The `Stream`'s decoder is
/// then refused as stale rather than resumed on bytes it has not seen.
#[tokio::test]
async fn a_stream_decoder_dropping_a_line_is_stale_once_a_queued_read_took_bytes() {
    let (ours, mut peer) = tokio::io::duplex(1 << 16);
    let discarding = LineCodec::builder()
        .max_length(8)
        .overflow(OverflowPolicy::Discard)
        .build()
        .unwrap();
    let mut conn = QueuedFramed::with_codec(ours, discarding);
    peer.write_all(&[b'x'; 64]).await.unwrap();
    let r = tokio::time::timeout(Duration::from_millis(50), conn.next()).await;
    assert!(r.is_err(), "the long line has not ended: {r:?}");
    peer.write_all(b"TAIL\nnext\n").await.unwrap();
    let taken = within("read", conn.read(LineCodec::new())).await.unwrap();
    assert_eq!(taken.line(), b"TAIL");
    let e = within("stale", conn.next()).await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

/// No false alarms: a decoder that has not begun a frame (it yielded one,
/// or looked only at an empty buffer) is untouched by queued reads, and a
/// `next()` given up and polled again with nothing taken in between
/// finishes its frame.
#[tokio::test]
async fn queued_reads_between_whole_stream_frames_change_nothing() {
    let (ours, mut peer) = tokio::io::duplex(1024);
    let mut conn = QueuedFramed::with_codec(ours, LineCodec::new());
    // Looked at an empty buffer only.
    let r = tokio::time::timeout(Duration::from_millis(20), conn.next()).await;
    assert!(r.is_err());
    peer.write_all(b"1234one\n").await.unwrap();
    let four = within("chunk", conn.read(ChunkCodec::new(4)))
        .await
        .unwrap();
    assert_eq!(&four[..], b"1234");
    assert_eq!(
        within("one", conn.next()).await.unwrap().unwrap().line(),
        b"one"
    );
    // Just yielded a frame.
    peer.write_all(b"5678two\nthr").await.unwrap();
    let four = within("chunk", conn.read(ChunkCodec::new(4)))
        .await
        .unwrap();
    assert_eq!(&four[..], b"5678");
    assert_eq!(
        within("two", conn.next()).await.unwrap().unwrap().line(),
        b"two"
    );
    // Begun (`thr`), given up, resumed with nothing taken in between.
    let r = tokio::time::timeout(Duration::from_millis(20), conn.next()).await;
    assert!(r.is_err());
    peer.write_all(b"ee\n").await.unwrap();
    assert_eq!(
        within("three", conn.next()).await.unwrap().unwrap().line(),
        b"three"
    );
}

/// `Handle::read` is cancel-safe until its frame is decoded; a loop that
/// races reads against something else keeps one ticket across rounds (as
/// `Handle::read` says) and loses no frame, however often the other branch
/// wins.
#[tokio::test]
async fn a_ticket_raced_in_select_across_rounds_loses_no_frame() {
    let (ours, mut peer) = tokio::io::duplex(1024);
    let (h, _driver) = QueuedFramed::new(ours).spawn();
    let mut ticket = h.push_read(LineCodec::new());
    let mut got = Vec::new();
    let mut other_won = 0;
    let feeder = tokio::spawn(async move {
        for line in ["first\n", "second\n", "third\n"] {
            tokio::time::sleep(Duration::from_millis(15)).await;
            peer.write_all(line.as_bytes()).await.unwrap();
        }
        peer
    });
    while got.len() < 3 {
        tokio::select! {
            line = &mut ticket => {
                got.push(line.unwrap().line().to_vec());
                ticket = h.push_read(LineCodec::new());
            }
            () = tokio::time::sleep(Duration::from_millis(2)) => other_won += 1,
        }
    }
    assert!(other_won > 0, "the race never went the other way");
    assert_eq!(got, [&b"first"[..], b"second", b"third"]);
    drop(feeder.await.unwrap());
}

/// `consume(0)` takes nothing: the `Stream`'s decoder, holding part of a
/// frame, is not stale after it.
#[tokio::test]
async fn consuming_nothing_leaves_a_begun_stream_frame_alone() {
    let (ours, mut peer) = tokio::io::duplex(1024);
    let mut conn = QueuedFramed::with_codec(ours, LineCodec::new());
    peer.write_all(b"abc").await.unwrap();
    let r = tokio::time::timeout(Duration::from_millis(20), conn.next()).await;
    assert!(r.is_err());
    conn.consume(0);
    peer.write_all(b"def\n").await.unwrap();
    let line = within("line", conn.next()).await.unwrap().unwrap();
    assert_eq!(line.line(), b"abcdef");
}

/// Sets up a `Stream` whose line decoder has begun `abc` (its `next()`
/// given up), with `d\nxy\n` arrived after.
async fn begun_stream() -> (
    QueuedFramed<tokio::io::DuplexStream, LineCodec>,
    tokio::io::DuplexStream,
) {
    let (ours, mut peer) = tokio::io::duplex(1024);
    let mut conn = QueuedFramed::with_codec(ours, LineCodec::new());
    peer.write_all(b"abc").await.unwrap();
    let r = tokio::time::timeout(Duration::from_millis(20), conn.next()).await;
    assert!(r.is_err());
    peer.write_all(b"d\nxy\n").await.unwrap();
    (conn, peer)
}

/// Every way bytes leave the front under a begun frame makes the decoder
/// stale: `consume`, `read_buffer_mut` (the caller may do anything with
/// it), `read_many` and `read_with` with decoders of their own. A stale
/// stream stays ended through `consume` until `codec_mut`.
#[tokio::test]
async fn every_way_of_taking_bytes_under_a_begun_frame_makes_it_stale() {
    async fn stale_after(
        what: &str,
        take: impl AsyncFnOnce(&mut QueuedFramed<tokio::io::DuplexStream, LineCodec>),
    ) {
        let (mut conn, _peer) = begun_stream().await;
        take(&mut conn).await;
        let e = within(what, conn.next()).await.unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{what}");
        conn.consume(1);
        assert!(
            within(what, conn.next()).await.is_none(),
            "{what}: stays ended"
        );
        *conn.codec_mut() = LineCodec::new();
        assert!(within(what, conn.next()).await.is_some(), "{what}: goes on");
    }
    stale_after("consume", async |c| c.consume(2)).await;
    stale_after("read_buffer_mut", async |c| {
        let _ = c.read_buffer_mut().len();
    })
    .await;
    stale_after("read_many", async |c| {
        let (mut d, mut out) = (ChunkCodec::new(2), Vec::new());
        within("batch", c.read_many(&mut d, &mut out, 1))
            .await
            .unwrap();
    })
    .await;
    stale_after("read_with", async |c| {
        within("read_with", c.read_with(&mut ChunkCodec::new(2)))
            .await
            .unwrap();
    })
    .await;
}

/// A read timeout the `Stream` yields while its decoder holds part of a
/// frame takes nothing: polled again, the decoder finishes the frame.
#[tokio::test(start_paused = true)]
async fn a_timeout_yielded_under_a_begun_frame_leaves_it_whole() {
    let (ours, mut peer) = tokio::io::duplex(1024);
    let mut conn = QueuedFramed::builder()
        .rtimeout(Duration::from_secs(1))
        .build_with_codec(ours, LineCodec::new());
    peer.write_all(b"abc").await.unwrap();
    let e = within("timeout", conn.next()).await.unwrap().unwrap_err();
    assert!(e.is_timeout() && !e.is_fatal(), "{e:?}");
    peer.write_all(b"def\n").await.unwrap();
    assert_eq!(
        within("line", conn.next()).await.unwrap().unwrap().line(),
        b"abcdef"
    );
}

/// `codec_mut` before the next poll cannot tell a fresh decoder from the
/// old one: the verdict stands (docs/semantics.md §4), once.
#[tokio::test]
async fn codec_mut_before_the_next_poll_does_not_clear_the_verdict() {
    let (mut conn, _peer) = begun_stream().await;
    let four = within("chunk", conn.read(ChunkCodec::new(4)))
        .await
        .unwrap();
    assert_eq!(&four[..], b"abcd");
    *conn.codec_mut() = LineCodec::new();
    let e = within("stale", conn.next()).await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    *conn.codec_mut() = LineCodec::new();
    assert_eq!(
        within("line", conn.next()).await.unwrap().unwrap().line(),
        b""
    );
}
