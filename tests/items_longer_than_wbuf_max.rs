//! An item whose encoding alone is longer than `wbuf_max` can never be
//! queued, however much the peer reads: it is refused where it is pushed,
//! with a non-fatal `EINVAL`, nothing of it is queued, and the connection
//! goes on (OPT-9). Only an item that would fit on its own but crosses the
//! cap with the output already queued closes the connection (`ENOSPC`).
//! The rule holds on every path a write takes: the inline front end, a
//! spawned connection's handle (small and large buffers, encoded writes,
//! calls), a completion's `Requests`, and another connection's callback
//! (which posts without waiting for this engine).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyframe::codecs::LineCodec;
use anyframe::{Error, ErrorKind, Handle, QueuedFramed};
use futures::SinkExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream};

#[path = "support/watched.rs"]
mod watched;

const CAP: usize = 64;

fn refused_unwritten(r: Result<(), Error>) {
    let e = r.expect_err("an item longer than wbuf_max is refused");
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(!e.is_fatal(), "{e}");
}

/// The next line the peer reads, within a few seconds.
async fn next_line(peer: &mut BufReader<DuplexStream>) -> String {
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(5), peer.read_line(&mut line))
        .await
        .expect("a line within 5 s")
        .expect("the connection stays open");
    line
}

fn long_line() -> String {
    "x".repeat(CAP + 1)
}

#[tokio::test]
async fn inline_writes_longer_than_wbuf_max_are_refused_and_the_connection_goes_on() {
    let (io, peer) = tokio::io::duplex(1 << 16);
    let mut peer = BufReader::new(peer);
    let mut conn = QueuedFramed::builder()
        .wbuf_max(Some(CAP))
        .build_with_codec(io, LineCodec::new());
    refused_unwritten(conn.push_write(LineCodec::new(), long_line().as_str()));
    refused_unwritten(conn.push_bytes(vec![b'y'; CAP + 1]));
    refused_unwritten(conn.push_bytes(vec![b'z'; 4 * 1024]));
    // Through the `Sink` too: refused, and the sink stays usable.
    let e = conn.send(long_line()).await.expect_err("refused");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(!conn.is_closed());
    assert_eq!(conn.write_buffered(), 0);
    conn.send("ok".to_string()).await.unwrap();
    assert_eq!(next_line(&mut peer).await, "ok\n");
}

#[tokio::test]
async fn an_item_that_fits_alone_but_not_behind_the_queue_still_closes() {
    let (io, _peer) = tokio::io::duplex(16);
    let mut conn = QueuedFramed::builder().wbuf_max(Some(CAP)).build(io);
    // The peer reads nothing: the queue keeps all but what the pipe took.
    conn.push_bytes(vec![b'a'; CAP]).unwrap();
    let e = conn.push_bytes(vec![b'b'; CAP]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSpace);
    assert!(e.is_fatal());
    assert!(conn.is_closed());
}

fn spawned() -> (Handle, BufReader<DuplexStream>) {
    let (io, peer) = tokio::io::duplex(1 << 16);
    let (handle, _) = QueuedFramed::builder()
        .wbuf_max(Some(CAP))
        .build(io)
        .spawn();
    (handle, BufReader::new(peer))
}

#[tokio::test]
async fn handle_writes_and_calls_longer_than_wbuf_max_are_refused_and_the_connection_goes_on() {
    let (handle, mut peer) = spawned();
    refused_unwritten(handle.push_write(LineCodec::new(), long_line().as_str()));
    refused_unwritten(handle.push_bytes(vec![b'y'; CAP + 1]));
    refused_unwritten(handle.push_bytes(vec![b'z'; 4 * 1024]));
    let call = handle.call(LineCodec::new(), long_line().as_str(), LineCodec::new());
    let e = call.await.expect_err("refused");
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(!e.is_fatal());
    // The refused call left no read behind to take the next answer.
    assert_eq!(handle.queued_reads(), 0);
    assert!(!handle.is_closed());
    let call = handle.call(LineCodec::new(), "ping", LineCodec::new());
    assert_eq!(next_line(&mut peer).await, "ping\n");
    peer.get_mut().write_all(b"pong\n").await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("answered")
        .unwrap();
    assert_eq!(answer.line(), b"pong");
}

#[tokio::test]
async fn a_completion_pushing_an_item_longer_than_wbuf_max_is_refused_and_the_connection_goes_on() {
    let (handle, mut peer) = spawned();
    let read = handle.push_read_with(LineCodec::new(), |_, q| {
        let refused = q.push_write(LineCodec::new(), long_line().as_str());
        q.push_write(LineCodec::new(), "after")?;
        Ok(refused)
    });
    peer.get_mut().write_all(b"go\n").await.unwrap();
    let refused = tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("read")
        .expect("the completion ran");
    refused_unwritten(refused);
    assert_eq!(next_line(&mut peer).await, "after\n");
    assert!(!handle.is_closed());
}

/// From another connection's completion, while this connection's engine
/// is busy (its own completion runs), the write does not wait for the
/// engine: it goes to the inbox. An item too long for the cap is still
/// refused at the call, not found later by the engine, which would close.
#[test]
fn another_connections_callback_writing_an_item_longer_than_wbuf_max_is_refused_at_the_call() {
    let outcome = watched::on_two_workers(Duration::from_secs(15), || async {
        let (a, mut a_peer) = spawned();
        let (b, mut b_peer) = spawned();
        let stage = Arc::new(AtomicUsize::new(0));
        // B's completion holds B's engine until A's completion has acted.
        let s = stage.clone();
        let busy = b.push_read_with(LineCodec::new(), move |_, _| {
            s.store(1, Ordering::SeqCst);
            let t = Instant::now();
            while s.load(Ordering::SeqCst) < 2 && t.elapsed() < Duration::from_secs(3) {
                std::hint::spin_loop();
            }
            Ok(())
        });
        let (s, other) = (stage.clone(), b.clone());
        let acted = a.push_read_with(LineCodec::new(), move |_, _| {
            let t = Instant::now();
            while s.load(Ordering::SeqCst) < 1 && t.elapsed() < Duration::from_secs(3) {
                std::hint::spin_loop();
            }
            let results = [
                other.push_write(LineCodec::new(), long_line().as_str()),
                other.push_bytes(vec![b'z'; CAP + 1]),
                other.push_bytes(vec![b'z'; 4 * 1024]),
                other.push_write(LineCodec::new(), "after"),
            ];
            s.store(2, Ordering::SeqCst);
            Ok(results)
        });
        b_peer.get_mut().write_all(b"go\n").await.unwrap();
        a_peer.get_mut().write_all(b"go\n").await.unwrap();
        busy.await.unwrap();
        let results = acted.await.expect("A's completion ran");
        let line = next_line(&mut b_peer).await;
        (results, line, b.error())
    });
    let ([line, small, large, after], written, b_error) = outcome.expect("no hang");
    refused_unwritten(line);
    refused_unwritten(small);
    refused_unwritten(large);
    after.unwrap();
    assert_eq!(written, "after\n");
    assert!(b_error.is_none(), "{b_error:?}");
}
