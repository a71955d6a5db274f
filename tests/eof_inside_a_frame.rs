//! End of input after a decoder has taken part of a frame (tokio-util's
//! `LengthDelimitedCodec` takes a frame's header first, then waits for
//! its body): the buffer is empty, but the input ended inside a frame.
//! That is `EPIPE` on every read path, never a clean end, whatever the
//! codec's `decode_eof` says (RQ-6; `Framed` ends cleanly here and the
//! truncated frame goes unreported).

use std::time::Duration;

use anyframe::{ErrorKind, OrEof, QueuedFramed};
use futures::StreamExt;
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio_util::codec::LengthDelimitedCodec;

/// The header of a 10-byte frame.
const HEADER: [u8; 4] = [0, 0, 0, 10];

/// How long a peer waits after the header before it closes, so the
/// decoder has taken the header by then.
const PAUSE: Duration = Duration::from_millis(50);

/// Sends the header, waits, closes.
fn header_then_eof(mut peer: DuplexStream) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        peer.write_all(&HEADER).await.unwrap();
        tokio::time::sleep(PAUSE).await;
        peer.shutdown().await.unwrap();
        // Keep the peer until the reader is done with it.
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
}

async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(5), f)
        .await
        .expect("resolves")
}

#[tokio::test]
async fn or_eof_read_is_epipe_after_a_frame_header() {
    let (io, peer) = tokio::io::duplex(64);
    let _peer = header_then_eof(peer);
    let mut conn = QueuedFramed::new(io);
    let got = within(conn.read(OrEof::new(LengthDelimitedCodec::new()))).await;
    assert_eq!(got.unwrap_err().kind(), ErrorKind::BrokenPipe);
}

#[tokio::test]
async fn or_eof_read_with_is_epipe_after_a_frame_header() {
    let (io, peer) = tokio::io::duplex(64);
    let _peer = header_then_eof(peer);
    let mut conn = QueuedFramed::new(io);
    let mut codec = OrEof::new(LengthDelimitedCodec::new());
    let got = within(conn.read_with(&mut codec)).await;
    assert_eq!(got.unwrap_err().kind(), ErrorKind::BrokenPipe);
}

#[tokio::test]
async fn or_eof_on_a_handle_is_epipe_after_a_frame_header() {
    let (io, peer) = tokio::io::duplex(64);
    let (handle, _driver) = QueuedFramed::new(io).spawn();
    let ticket = handle.push_read(OrEof::new(LengthDelimitedCodec::new()));
    let _peer = header_then_eof(peer);
    assert_eq!(
        within(ticket).await.unwrap_err().kind(),
        ErrorKind::BrokenPipe
    );
}

/// RQ-6 keeps the record per connection: an `OrEof` read of another kind
/// after a read that took a frame's header and was given up (a
/// `read_with`, a `Stream::next`, a `Handle::read_many` that ended having
/// taken the next header) sees the end of input inside that frame, not a
/// clean end. Its own decoder took nothing, so only the engine knows.
#[tokio::test(start_paused = true)]
async fn or_eof_of_another_decoder_is_epipe_after_a_given_up_header() {
    use anyframe::codecs::LineCodec;
    let epipe = |r: &anyframe::Result<Option<anyframe::codecs::Line>>| matches!(r, Err(e) if e.kind() == ErrorKind::BrokenPipe && e.is_fatal());
    for how in [
        "read_with then read",
        "read_with then read_with",
        "next then read",
    ] {
        let (io, mut peer) = tokio::io::duplex(1024);
        peer.write_all(&HEADER).await.unwrap();
        let mut conn = QueuedFramed::with_codec(io, LengthDelimitedCodec::new());
        let given_up = if how.starts_with("next") {
            tokio::time::timeout(PAUSE, conn.next()).await.is_err()
        } else {
            let mut ld = LengthDelimitedCodec::new();
            tokio::time::timeout(PAUSE, conn.read_with(&mut ld))
                .await
                .is_err()
        };
        assert!(given_up, "{how}: no frame yet");
        peer.shutdown().await.unwrap();
        let r = if how.ends_with("read_with") {
            within(conn.read_with(&mut OrEof::new(LineCodec::new()))).await
        } else {
            within(conn.read(OrEof::new(LineCodec::new()))).await
        };
        assert!(epipe(&r), "{how}: {:?}", r.map(|f| f.is_some()));
    }
    // Spawned: a batch that ended having taken the next frame's header.
    let (io, mut peer) = tokio::io::duplex(1024);
    let (handle, _driver) = QueuedFramed::new(io).spawn();
    peer.write_all(&[0, 0, 0, 2, b'h', b'i']).await.unwrap();
    peer.write_all(&HEADER).await.unwrap();
    let (_ld, frames) = within(handle.read_many(LengthDelimitedCodec::new(), 10))
        .await
        .unwrap();
    assert_eq!(frames.len(), 1);
    peer.shutdown().await.unwrap();
    let r = within(handle.read(OrEof::new(LineCodec::new()))).await;
    assert!(epipe(&r), "after a batch: {:?}", r.map(|f| f.is_some()));
}

#[tokio::test]
async fn or_eof_still_ends_cleanly_between_frames() {
    let (io, mut peer) = tokio::io::duplex(64);
    peer.write_all(&[0, 0, 0, 2, b'h', b'i']).await.unwrap();
    peer.shutdown().await.unwrap();
    let mut conn = QueuedFramed::new(io);
    let mut codec = OrEof::new(LengthDelimitedCodec::new());
    let first = within(conn.read_with(&mut codec)).await.unwrap();
    assert_eq!(&first.unwrap()[..], b"hi");
    assert!(within(conn.read_with(&mut codec)).await.unwrap().is_none());
    assert!(!conn.is_closed());
}

#[tokio::test]
async fn stream_ends_with_epipe_after_a_frame_header() {
    let (io, peer) = tokio::io::duplex(64);
    let _peer = header_then_eof(peer);
    let mut conn = QueuedFramed::with_codec(io, LengthDelimitedCodec::new());
    let end = within(conn.next()).await;
    assert!(
        matches!(&end, Some(Err(e)) if e.kind() == ErrorKind::BrokenPipe),
        "{end:?}"
    );
}

#[tokio::test]
async fn read_many_is_epipe_after_a_frame_header() {
    let (io, peer) = tokio::io::duplex(64);
    let _peer = header_then_eof(peer);
    let mut conn = QueuedFramed::new(io);
    let mut codec = LengthDelimitedCodec::new();
    let mut frames = Vec::new();
    let got = within(conn.read_many(&mut codec, &mut frames, 8)).await;
    assert_eq!(got.unwrap_err().kind(), ErrorKind::BrokenPipe);
}

#[tokio::test]
async fn handle_read_many_is_epipe_after_a_frame_header() {
    let (io, peer) = tokio::io::duplex(64);
    let (handle, _driver) = QueuedFramed::new(io).spawn();
    let batch = handle.read_many(LengthDelimitedCodec::new(), 8);
    let _peer = header_then_eof(peer);
    assert_eq!(
        within(batch).await.map(|_| ()).unwrap_err().kind(),
        ErrorKind::BrokenPipe
    );
}

#[cfg(feature = "tower")]
#[tokio::test]
async fn the_server_loop_ends_with_epipe_after_a_request_header() {
    use anyframe::service::serve;
    use bytes::{Bytes, BytesMut};
    let (io, peer) = tokio::io::duplex(1024);
    let echo = tower::service_fn(|b: BytesMut| async move {
        Ok::<_, std::convert::Infallible>(Bytes::from(b))
    });
    let server = tokio::spawn(
        serve(
            io,
            LengthDelimitedCodec::new(),
            LengthDelimitedCodec::new(),
            echo,
        )
        .into_future(),
    );
    let _peer = header_then_eof(peer);
    let ended = within(server).await.unwrap();
    assert_eq!(ended.unwrap_err().kind(), ErrorKind::BrokenPipe);
}

/// A frame another read finishes without taking a byte (a zero-length
/// chunk) does not end the frame the Stream's decoder has begun.
#[tokio::test]
async fn an_empty_frame_of_another_read_does_not_end_a_begun_frame() {
    use anyframe::codecs::ChunkCodec;
    let (io, mut peer) = tokio::io::duplex(64);
    let mut conn = QueuedFramed::with_codec(io, LengthDelimitedCodec::new());
    peer.write_all(&HEADER).await.unwrap();
    // The Stream's decoder takes the header; its caller gives up.
    assert!(
        tokio::time::timeout(PAUSE, conn.next()).await.is_err(),
        "no frame yet"
    );
    let empty = within(conn.read(ChunkCodec::new(0))).await.unwrap();
    assert!(empty.is_empty());
    peer.shutdown().await.unwrap();
    let end = within(conn.next()).await;
    assert!(
        matches!(&end, Some(Err(e)) if e.kind() == ErrorKind::BrokenPipe),
        "{end:?}"
    );
}

/// A Handle's batch that ended having taken the next frame's header
/// hands its decoder, holding that header, to the next batch: an end of
/// input then is inside that frame, as on the inline front end.
#[tokio::test]
async fn a_handle_batch_after_one_that_took_a_header_is_epipe_at_the_end() {
    let (io, mut peer) = tokio::io::duplex(64);
    let (handle, _driver) = QueuedFramed::new(io).spawn();
    peer.write_all(&[0, 0, 0, 2, b'h', b'i', 0, 0, 0, 10])
        .await
        .unwrap();
    let (codec, frames) = within(handle.read_many(LengthDelimitedCodec::new(), 8))
        .await
        .unwrap();
    assert_eq!(frames.len(), 1);
    assert_eq!(&frames[0][..], b"hi");
    tokio::time::sleep(PAUSE).await;
    peer.shutdown().await.unwrap();
    let end = within(handle.read_many(codec, 8)).await;
    assert_eq!(
        end.map(|(_, f)| f.len()).unwrap_err().kind(),
        ErrorKind::BrokenPipe
    );
}
