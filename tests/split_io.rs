//! A `QueuedFramed` split into `Sink` and `Stream` halves polled by two
//! tasks over one socket. The socket keeps one wake-up per direction, for
//! the task that polled that direction last, and the `Stream` half writes
//! queued output while it waits for input (docs/semantics.md, WQ-1): its
//! attempt moves the write wake-up away from a `Sink` half that waits to
//! write. The `Sink` half must still finish once the peer reads, whether
//! the `Stream` half goes on polling or not, and no half may be woken
//! over and over while nothing can move.

#[path = "support/split.rs"]
mod split;

use split::{counted, pair};
use std::time::Duration;

use anyframe::QueuedFramed;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::BytesCodec;

/// Frames the `Sink` half sends, each far over the high watermark and,
/// together, far over what the socket buffers hold.
const FRAMES: usize = 32;
const FRAME: usize = 256 * 1024;

/// How the `Sink` half sends: `send` (each frame flushed) or `feed`
/// (backpressure only, at the high watermark) and one flush at the end.
#[derive(Clone, Copy, Debug)]
enum Sending {
    Send,
    Feed,
}

/// What the `Stream` half's task does once it has polled the stream while
/// the `Sink` half waited to write.
#[derive(Clone, Copy, Debug)]
enum Reading {
    /// Goes on waiting for a frame.
    KeepsPolling,
    /// Gives the wait up (a `select!` branch or a timeout won) and parks
    /// elsewhere, as a task doing other work does.
    GivesUp,
}

async fn sink_finishes_while_the_stream_half_waits(sending: Sending, reading: Reading) {
    let (ours, mut peer) = pair().await;
    let conn = QueuedFramed::with_codec(ours, BytesCodec::new());
    let (mut sink, mut stream) = conn.split();
    let sender = tokio::spawn(async move {
        for _ in 0..FRAMES {
            let frame = Bytes::from(vec![b'x'; FRAME]);
            match sending {
                Sending::Send => sink.send(frame).await?,
                Sending::Feed => sink.feed(frame).await?,
            }
        }
        sink.flush().await?;
        Ok::<_, anyframe::Error>(sink)
    });
    // The sender fills the socket's buffers and waits to write.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!sender.is_finished(), "the peer reads nothing yet");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        match reading {
            Reading::KeepsPolling => {
                let frame = stream.next().await;
                let _ = stop_rx.await;
                (frame.map(|f| f.map(|b| b.len())), stream)
            }
            Reading::GivesUp => {
                let gave_up = tokio::time::timeout(Duration::from_millis(50), stream.next()).await;
                assert!(gave_up.is_err(), "nothing to read yet: {gave_up:?}");
                let _ = stop_rx.await;
                (None, stream)
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Now the peer reads everything.
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    let read_all = async {
        while total < FRAMES * FRAME {
            let n = peer.read(&mut buf).await.expect("peer read");
            assert!(n > 0, "ended after {total} bytes");
            total += n;
        }
    };
    let timed = tokio::time::timeout(Duration::from_secs(10), read_all).await;
    assert!(
        timed.is_ok(),
        "{sending:?}/{reading:?}: the peer got {total} of {} bytes: the Sink half was never \
         woken to write the rest",
        FRAMES * FRAME
    );
    let sink = tokio::time::timeout(Duration::from_secs(5), sender)
        .await
        .expect("the sender finished")
        .expect("sender task")
        .expect("sent");
    // The stream half still works: a line from the peer reaches it.
    peer.write_all(b"hello").await.expect("peer write");
    let _ = stop_tx.send(());
    let (first, stream) = reader.await.expect("reader task");
    let mut stream = stream;
    let frame = match first {
        Some(frame) => Some(frame),
        None => tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("the stream half reads")
            .map(|f| f.map(|b| b.len())),
    };
    assert_eq!(frame.map(|f| f.expect("frame")), Some(5));
    drop((sink, stream));
}

#[tokio::test]
async fn split_sink_send_finishes_while_the_stream_half_keeps_polling() {
    sink_finishes_while_the_stream_half_waits(Sending::Send, Reading::KeepsPolling).await;
}

#[tokio::test]
async fn split_sink_send_finishes_after_the_stream_half_gave_up_its_wait() {
    sink_finishes_while_the_stream_half_waits(Sending::Send, Reading::GivesUp).await;
}

#[tokio::test]
async fn split_sink_feed_finishes_while_the_stream_half_keeps_polling() {
    sink_finishes_while_the_stream_half_waits(Sending::Feed, Reading::KeepsPolling).await;
}

#[tokio::test]
async fn split_sink_feed_finishes_after_the_stream_half_gave_up_its_wait() {
    sink_finishes_while_the_stream_half_waits(Sending::Feed, Reading::GivesUp).await;
}

/// The transport's wake-ups, which reach both halves, do not become a
/// loop: with the peer neither reading nor writing, both halves wait
/// quietly.
#[tokio::test]
async fn split_halves_blocked_on_a_silent_peer_are_not_busy_polled() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (ours, _peer) = pair().await;
    let conn = QueuedFramed::with_codec(ours, BytesCodec::new());
    let (mut sink, mut stream) = conn.split::<Bytes>();
    let (sink_polls, stream_polls) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let sp = sink_polls.clone();
    let writer = tokio::spawn(async move {
        let send = async {
            for _ in 0..FRAMES {
                sink.feed(Bytes::from(vec![b'x'; FRAME])).await?;
            }
            sink.flush().await
        };
        counted(Box::pin(send), sp).await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let rp = stream_polls.clone();
    let reader = tokio::spawn(async move { counted(stream.next(), rp).await.is_some() });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (s, r) = (
        sink_polls.load(Ordering::SeqCst),
        stream_polls.load(Ordering::SeqCst),
    );
    assert!(!writer.is_finished() && !reader.is_finished());
    assert!(
        s <= 20 && r <= 10,
        "{s} polls of the Sink half, {r} of the Stream half"
    );
    writer.abort();
    reader.abort();
}

/// One task polling both halves (`join!`) is not woken over and over when
/// its read writes in its flush's place: with a silent peer, it waits
/// quietly.
#[tokio::test]
async fn one_task_polling_both_halves_is_not_busy_polled() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (ours, _peer) = pair().await;
    let conn = QueuedFramed::with_codec(ours, BytesCodec::new());
    let (mut sink, mut stream) = conn.split::<Bytes>();
    let polls = Arc::new(AtomicUsize::new(0));
    let p = polls.clone();
    let both = tokio::spawn(async move {
        let send = async {
            for _ in 0..FRAMES {
                sink.feed(Bytes::from(vec![b'x'; FRAME])).await?;
            }
            sink.flush().await
        };
        let both = async { tokio::join!(send, stream.next()) };
        let _ = counted(Box::pin(both), p).await;
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n = polls.load(Ordering::SeqCst);
    assert!(!both.is_finished());
    assert!(n <= 20, "{n} polls of the task");
    both.abort();
}
