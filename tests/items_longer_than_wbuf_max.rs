//! An item whose encoding alone is longer than `wbuf_max` can never be
//! queued, however much the peer reads: it is refused where it is pushed,
//! with a non-fatal `EINVAL`, nothing of it is queued, and the connection
//! goes on (OPT-9). Only an item that would fit on its own but crosses the
//! cap with the output already queued closes the connection (`ENOSPC`).
//! The rule holds on every path a write takes: the inline front end and
//! its `Sink`, a spawned connection's handle (small and large buffers,
//! encoded writes, calls), a completion's or a hook's `Requests`, another
//! connection's callback (which posts without waiting for this engine),
//! and the tower client, whose other calls keep their own answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyframe::codecs::LineCodec;
use anyframe::service::Client;
use anyframe::{Error, ErrorKind, Handle, QueuedFramed};
use futures::SinkExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tower::{Service, ServiceExt};

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

fn spawned(cap: Option<usize>) -> (Handle, BufReader<DuplexStream>) {
    let (io, peer) = tokio::io::duplex(1 << 16);
    let (handle, _driver) = QueuedFramed::builder().wbuf_max(cap).build(io).spawn();
    (handle, BufReader::new(peer))
}

#[tokio::test]
async fn handle_writes_and_calls_longer_than_wbuf_max_are_refused_and_the_connection_goes_on() {
    let (handle, mut peer) = spawned(Some(CAP));
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
    let (handle, mut peer) = spawned(Some(CAP));
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
        let (a, mut a_peer) = spawned(Some(CAP));
        let (b, mut b_peer) = spawned(Some(CAP));
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

/// A connection with `wbuf_max` `cap` whose peer echoes every line.
fn echo_client(cap: usize) -> (Handle, tokio::task::JoinHandle<()>) {
    let (handle, mut peer) = spawned(Some(cap));
    let echo = tokio::spawn(async move {
        let mut line = String::new();
        while peer.read_line(&mut line).await.is_ok_and(|n| n > 0) {
            if peer.get_mut().write_all(line.as_bytes()).await.is_err() {
                break;
            }
            line.clear();
        }
    });
    (handle, echo)
}

#[tokio::test]
async fn client_request_over_cap_between_normal_ones_keeps_answers_with_their_callers() {
    let (handle, _echo) = echo_client(CAP);
    let mut client = Client::new(handle.clone(), LineCodec::new(), |_: &String| {
        LineCodec::new()
    });
    let mut futs = Vec::new();
    for i in 0..6 {
        let req = if i % 2 == 1 {
            "L".repeat(CAP + i)
        } else {
            format!("req{i}")
        };
        let f = client.ready().await.unwrap().call(req);
        futs.push(f);
    }
    for (i, f) in futs.into_iter().enumerate() {
        let r = tokio::time::timeout(Duration::from_secs(5), f)
            .await
            .expect("an answer within 5 s");
        if i % 2 == 1 {
            let e = r.expect_err("over-cap request refused");
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
            assert!(!e.is_fatal());
        } else {
            assert_eq!(r.unwrap().line(), format!("req{i}").as_bytes());
        }
    }
    assert!(!handle.is_closed());
}

#[tokio::test]
async fn client_with_wbuf_max_lowered_after_build_refuses_then_answers_in_order() {
    let (handle, _echo) = echo_client(1 << 20);
    let mut client = Client::new(handle.clone(), LineCodec::new(), |_: &String| {
        LineCodec::new()
    });
    handle.set_wbuf_max(Some(CAP));
    let a = client.ready().await.unwrap().call("a".to_string());
    let big = client.ready().await.unwrap().call("B".repeat(CAP));
    let c = client.ready().await.unwrap().call("c".to_string());
    let t = Duration::from_secs(5);
    assert_eq!(
        tokio::time::timeout(t, a).await.unwrap().unwrap().line(),
        b"a"
    );
    let e = tokio::time::timeout(t, big).await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert_eq!(
        tokio::time::timeout(t, c).await.unwrap().unwrap().line(),
        b"c"
    );
}

/// With one call in flight at most, a refused call must give its slot
/// back: the next call gets ready and its answer.
#[tokio::test]
async fn client_with_one_slot_gets_ready_again_after_a_refused_call() {
    let (handle, _echo) = echo_client(CAP);
    let mut client =
        Client::builder()
            .max_in_flight(1)
            .build(handle.clone(), LineCodec::new(), |_: &String| {
                LineCodec::new()
            });
    let t = Duration::from_secs(3);
    for i in 0..3 {
        let big = tokio::time::timeout(t, client.ready())
            .await
            .expect("ready")
            .unwrap()
            .call("B".repeat(CAP + i));
        let e = tokio::time::timeout(t, big).await.unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        let small = tokio::time::timeout(t, client.ready())
            .await
            .expect("ready after a refused call")
            .unwrap()
            .call(format!("s{i}"));
        assert_eq!(
            tokio::time::timeout(t, small)
                .await
                .unwrap()
                .unwrap()
                .line(),
            format!("s{i}").as_bytes()
        );
    }
}

#[tokio::test]
async fn wbuf_max_zero_refuses_every_non_empty_item_without_closing() {
    let (handle, _peer) = spawned(Some(0));
    refused_unwritten(handle.push_bytes(&b"a"[..]));
    refused_unwritten(handle.push_write(LineCodec::new(), ""));
    handle.push_bytes(&b""[..]).unwrap();
    let e = handle
        .call(LineCodec::new(), "q", LineCodec::new())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(!handle.is_closed());
    // Ready to write: nothing is queued, so nothing is above the mark.
    tokio::time::timeout(Duration::from_secs(2), handle.ready_to_write())
        .await
        .expect("ready within 2 s")
        .unwrap();
}

#[tokio::test]
async fn wbuf_max_zero_client_poll_ready_does_not_hang() {
    let (handle, _echo) = echo_client(0);
    let mut client = Client::new(handle.clone(), LineCodec::new(), |_: &String| {
        LineCodec::new()
    });
    let svc = tokio::time::timeout(Duration::from_secs(2), client.ready())
        .await
        .expect("poll_ready within 2 s")
        .unwrap();
    let e = svc.call("q".to_string()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn on_drain_hook_pushing_over_cap_is_refused_and_the_connection_goes_on() {
    let (handle, mut peer) = spawned(Some(CAP));
    handle.set_watermarks(8, 0);
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let once = Arc::new(AtomicUsize::new(0));
    let o = once.clone();
    handle.on_drain(move |rq| {
        if o.fetch_add(1, Ordering::SeqCst) == 0 {
            s.lock().unwrap().push(rq.push_bytes(vec![b'q'; CAP + 1]));
            s.lock().unwrap().push(rq.push_bytes(&b"after-drain\n"[..]));
        }
    });
    handle.push_write(LineCodec::new(), "x".repeat(20)).unwrap();
    assert_eq!(next_line(&mut peer).await.len(), 21);
    assert_eq!(next_line(&mut peer).await, "after-drain\n");
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let mut it = seen.into_iter();
    refused_unwritten(it.next().unwrap());
    it.next().unwrap().unwrap();
    assert!(!handle.is_closed());
}

#[tokio::test(start_paused = true)]
async fn on_timeout_hook_pushing_over_cap_is_refused_and_the_connection_goes_on() {
    let (handle, mut peer) = spawned(Some(CAP));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    handle.on_timeout(move |_, rq| {
        let mut s = s.lock().unwrap();
        if s.is_empty() {
            s.push(rq.push_bytes(vec![b'q'; CAP + 1]));
            s.push(rq.push_write(LineCodec::new(), "after-timeout"));
        }
    });
    handle.set_timeout(Duration::from_millis(50));
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(next_line(&mut peer).await, "after-timeout\n");
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let mut it = seen.into_iter();
    refused_unwritten(it.next().unwrap());
    it.next().unwrap().unwrap();
    assert!(!handle.is_closed());
}

/// A refused item leaves nothing behind, even when it was encoded into the
/// tail that holds the item before it.
#[tokio::test]
async fn a_refused_item_leaves_the_queued_bytes_exactly_as_they_were() {
    let (io, peer) = tokio::io::duplex(1 << 16);
    let mut conn = QueuedFramed::builder()
        .wbuf_max(Some(CAP))
        .autocork(true)
        .build(io);
    conn.push_write(LineCodec::new(), "a").unwrap();
    conn.push_write(LineCodec::new(), "bb").unwrap();
    refused_unwritten(conn.push_write(LineCodec::new(), "c".repeat(CAP)));
    refused_unwritten(conn.push_bytes(vec![b'd'; CAP + 1]));
    assert_eq!(conn.write_buffered(), 5);
    conn.push_write(LineCodec::new(), "e".repeat(CAP - 7))
        .unwrap();
    assert_eq!(conn.write_buffered(), CAP - 1);
    // One byte more than fits behind the queue: ENOSPC, fatal.
    let e = conn.push_bytes(&b"fg"[..]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSpace);
    assert!(e.is_fatal());
    drop(peer);
}
