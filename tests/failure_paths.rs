//! The engine's failure paths: every test here pins how a timeout, a cap,
//! a panicking callback or a misconfiguration is met without hanging,
//! desynchronising, or killing a connection that should survive.

mod support;
#[path = "support/watched.rs"]
mod watched;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyframe::codecs::{ChunkCodec, LineCodec, OverflowPolicy};
use anyframe::service::{Client, serve};
use anyframe::{ErrorKind, FnDecoder, QueuedFramed, Timeout};
use bytes::BytesMut;
use futures::{FutureExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::{Service, ServiceExt};

/// Bounds an await so that a regression shows up as a failure, not a hang.
async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(10), f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: still pending after 10 s"),
    }
}

fn panicked(e: &anyframe::Error) -> bool {
    e.is_fatal() && e.kind() == ErrorKind::Panicked && e.to_string().contains("panicked")
}

// ----- 1. a timed-out pipelined call never hands its answer to the next ----------

/// An in-order line server whose first answer is `delay` late.
async fn late_first_answer_server(io: tokio::io::DuplexStream, delay: Duration) {
    let mut conn = QueuedFramed::new(io);
    let mut first = true;
    while let Ok(line) = conn.read(LineCodec::new()).await {
        if first {
            tokio::time::sleep(delay).await;
            first = false;
        }
        if conn.write(LineCodec::new(), line.line()).await.is_err() {
            break;
        }
    }
}

/// The first answer comes 450 ms late under a 300 ms timeout: after the
/// call's timeout, before the timer's next expiry (which, with nobody left
/// waiting, would close the connection: docs/semantics.md TO-6).
async fn timed_out_call_then_next(build: impl FnOnce(&mut anyframe::Builder)) {
    let (ours, theirs) = tokio::io::duplex(4096);
    tokio::spawn(late_first_answer_server(theirs, Duration::from_millis(450)));
    let mut builder = QueuedFramed::builder();
    build(&mut builder);
    let (handle, _driver) = builder.build(ours).spawn();
    let mut client = Client::new(handle, LineCodec::new(), |_: &&str| LineCodec::new());
    let alice = client.ready().await.unwrap().call("alice").await;
    assert!(alice.unwrap_err().is_timeout());
    // The late "alice" must be consumed by the timed-out call, not handed on.
    tokio::time::sleep(Duration::from_millis(400)).await;
    for name in ["bob", "carol", "dave"] {
        let got = within("call", client.ready().await.unwrap().call(name))
            .await
            .unwrap();
        assert_eq!(got.line(), name.as_bytes(), "answers are off by one");
    }
}

#[tokio::test]
async fn client_rtimeout_never_hands_the_next_caller_a_late_answer() {
    timed_out_call_then_next(|b| {
        b.rtimeout(Duration::from_millis(300));
    })
    .await;
}

/// An answer later than the timer's next expiry: nobody waits any more and
/// the answer is still owed, so the connection closes with a fatal
/// `ETIMEDOUT` (TO-6); the next caller gets that error, never the late
/// answer.
#[tokio::test(start_paused = true)]
async fn client_call_answered_after_the_next_timeout_closes_instead_of_desynchronising() {
    let (ours, theirs) = tokio::io::duplex(4096);
    tokio::spawn(late_first_answer_server(theirs, Duration::from_millis(750)));
    let mut builder = QueuedFramed::builder();
    builder.rtimeout(Duration::from_millis(300));
    let (handle, _driver) = builder.build(ours).spawn();
    let mut client = Client::new(handle, LineCodec::new(), |_: &&str| LineCodec::new());
    let alice = client.ready().await.unwrap().call("alice").await;
    assert!(alice.unwrap_err().is_timeout());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let next = match client.ready().await {
        Ok(svc) => within("call", svc.call("bob")).await,
        Err(e) => Err(e),
    };
    let e = next.expect_err("the late answer was handed on, or the connection hung on");
    assert!(e.is_timeout() && e.is_fatal(), "{e:?}");
}

#[tokio::test]
async fn client_idle_timeout_never_hands_the_next_caller_a_late_answer() {
    timed_out_call_then_next(|b| {
        b.timeout(Duration::from_millis(300));
    })
    .await;
}

/// A response of two reads: a length line, then (unshifted by the line's
/// completion) that many bytes.
fn length_then_body(
    len: anyframe::codecs::Line,
    q: &mut anyframe::Requests<'_>,
) -> anyframe::Result<anyframe::Ticket<bytes::Bytes>> {
    let n = std::str::from_utf8(len.line()).unwrap().parse().unwrap();
    Ok(q.unshift_read(ChunkCodec::new(n)))
}

/// After a `5\n` response given up before its body: the body arrives
/// with the next response, and the next call gets only its own.
async fn the_rest_is_dropped_and_the_next_response_is_its_own(
    handle: &anyframe::Handle,
    peer: &mut tokio::io::DuplexStream,
) {
    let second = handle.call_with(LineCodec::new(), "b", LineCodec::new(), length_then_body);
    peer.write_all(b"first3\ntwo").await.unwrap();
    let body = within("second", second).await.unwrap();
    assert_eq!(&within("body", body).await.unwrap()[..], b"two");
}

/// The reads a response's completion unshifts are the rest of that
/// response: told the read timeout half way through (the body late), the
/// response is still read to its end, and the next call gets its own.
#[tokio::test(start_paused = true)]
async fn a_response_timed_out_between_its_reads_is_read_to_its_end() {
    let (ours, mut peer) = tokio::io::duplex(4096);
    let (handle, _driver) = QueuedFramed::builder()
        .rtimeout(Duration::from_millis(300))
        .build(ours)
        .spawn();
    let first = handle.call_with(LineCodec::new(), "a", LineCodec::new(), length_then_body);
    peer.write_all(b"5\n").await.unwrap();
    let body = within("first", first).await.unwrap();
    assert!(within("body", body).await.unwrap_err().is_timeout());
    the_rest_is_dropped_and_the_next_response_is_its_own(&handle, &mut peer).await;
}

/// The same with the tickets dropped half way through.
#[tokio::test]
async fn a_response_dropped_between_its_reads_is_read_to_its_end() {
    let (ours, mut peer) = tokio::io::duplex(4096);
    let (handle, _driver) = QueuedFramed::new(ours).spawn();
    let first = handle.push_response_with(LineCodec::new(), length_then_body);
    peer.write_all(b"5\n").await.unwrap();
    drop(within("first", first).await.unwrap());
    the_rest_is_dropped_and_the_next_response_is_its_own(&handle, &mut peer).await;
}

/// A plain read's follow-up stays a plain read: dropping its ticket
/// cancels it, and the bytes are the next read's (RQ-2).
#[tokio::test]
async fn a_plain_reads_follow_up_is_cancelled_when_dropped() {
    let (ours, mut peer) = tokio::io::duplex(4096);
    let (handle, _driver) = QueuedFramed::new(ours).spawn();
    let first = handle.push_read_with(LineCodec::new(), length_then_body);
    peer.write_all(b"5\n").await.unwrap();
    drop(within("first", first).await.unwrap());
    let next = handle.push_read(LineCodec::new());
    peer.write_all(b"first\n").await.unwrap();
    assert_eq!(within("next", next).await.unwrap().line(), b"first");
}

/// `Requests::unshift_response_with` makes a response read from a plain
/// read's completion: given up after the length line, the body is still
/// read and dropped, and the next read starts after it.
#[tokio::test]
async fn a_plain_reads_response_follow_up_is_read_to_its_end_when_dropped() {
    let (ours, mut peer) = tokio::io::duplex(4096);
    let (handle, _driver) = QueuedFramed::new(ours).spawn();
    let first = handle.push_read_with(LineCodec::new(), |len, q| {
        let n = std::str::from_utf8(len.line()).unwrap().parse().unwrap();
        Ok(q.unshift_response_with(ChunkCodec::new(n), |body, _| Ok(body)))
    });
    peer.write_all(b"5\n").await.unwrap();
    drop(within("first", first).await.unwrap());
    let next = handle.push_read(LineCodec::new());
    peer.write_all(b"first").await.unwrap();
    peer.write_all(b"next\n").await.unwrap();
    assert_eq!(within("next", next).await.unwrap().line(), b"next");
}

// ----- 2. a panicking user callback resolves everyone ----------------------------

#[tokio::test]
async fn a_panicking_completion_fails_every_ticket_and_reaches_the_driver() {
    let (ours, mut peer) = tokio::io::duplex(1024);
    let (handle, driver) = QueuedFramed::new(ours).spawn();
    let boom = handle.push_read_with(LineCodec::new(), |_, _| -> anyframe::Result<()> {
        panic!("completion exploded")
    });
    let later = handle.push_read(LineCodec::new());
    let flushed = {
        let h = handle.clone();
        tokio::spawn(async move { h.flush().await })
    };
    peer.write_all(b"one\ntwo\n").await.unwrap();
    assert!(panicked(&within("boom", boom).await.unwrap_err()));
    assert!(panicked(&within("later", later).await.unwrap_err()));
    let f = within("flush", flushed).await.unwrap();
    assert!(f.is_ok() || panicked(&f.unwrap_err()));
    let e = handle.read(LineCodec::new()).await.unwrap_err();
    assert!(panicked(&e));
    // Like a JoinHandle: the panic reaches whoever awaits the driver.
    let outcome = AssertUnwindSafe(driver).catch_unwind().await;
    let payload = outcome.expect_err("the driver must resume the panic");
    assert_eq!(
        payload.downcast_ref::<&str>().copied(),
        Some("completion exploded")
    );
}

#[tokio::test]
async fn a_panicking_decoder_fails_every_ticket() {
    let (ours, mut peer) = tokio::io::duplex(1024);
    let (handle, _driver) = QueuedFramed::new(ours).spawn();
    let boom = handle.push_read(FnDecoder::new(
        |_: &mut BytesMut| -> anyframe::Result<Option<()>> { panic!("decoder exploded") },
    ));
    let later = handle.push_read(LineCodec::new());
    peer.write_all(b"x\n").await.unwrap();
    assert!(panicked(&within("boom", boom).await.unwrap_err()));
    assert!(panicked(&within("later", later).await.unwrap_err()));
    assert!(handle.is_closed());
}

#[tokio::test(start_paused = true)]
async fn a_panicking_timeout_hook_fails_every_ticket() {
    let (ours, _peer) = tokio::io::duplex(1024);
    let (handle, _driver) = QueuedFramed::builder()
        .timeout(Duration::from_secs(1))
        .build(ours)
        .spawn();
    handle.on_timeout(|_, _| panic!("hook exploded"));
    let waiting = handle.push_read(LineCodec::new());
    assert!(panicked(&within("waiting", waiting).await.unwrap_err()));
}

#[tokio::test]
async fn a_panicking_encoder_leaves_the_spawned_handle_closed_not_hung() {
    struct Bad;
    impl tokio_util::codec::Encoder<u8> for Bad {
        type Error = anyframe::Error;
        fn encode(&mut self, _: u8, dst: &mut BytesMut) -> anyframe::Result<()> {
            dst.extend_from_slice(b"half");
            panic!("encoder exploded")
        }
    }
    let (ours, _peer) = tokio::io::duplex(1024);
    let (handle, _driver) = QueuedFramed::new(ours).spawn();
    let waiting = handle.push_read(LineCodec::new());
    let h = handle.clone();
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| h.push_write(Bad, 1)));
    assert!(r.is_err(), "the encoder's panic reaches its caller");
    assert!(panicked(&within("waiting", waiting).await.unwrap_err()));
    assert_eq!(handle.write_buffered(), 0, "no half-encoded item is queued");
}

#[tokio::test]
async fn the_inline_front_end_is_closed_after_a_callback_panics() {
    let (ours, mut peer) = tokio::io::duplex(1024);
    let mut conn = QueuedFramed::new(ours);
    peer.write_all(b"one\ntwo\n").await.unwrap();
    let boom = conn.push_read_with(LineCodec::new(), |_, _| -> anyframe::Result<()> {
        panic!("inline completion exploded")
    });
    let later = conn.push_read(LineCodec::new());
    let r = AssertUnwindSafe(conn.wait(boom)).catch_unwind().await;
    assert!(r.is_err(), "the panic reaches the caller of wait");
    assert!(conn.is_closed());
    assert!(panicked(conn.error().unwrap()));
    assert!(panicked(&conn.wait(later).await.unwrap_err()));
    assert!(panicked(&conn.read(LineCodec::new()).await.unwrap_err()));
}

// ----- 3. a Handle used from inside its own engine fails fast -------------------

#[tokio::test]
async fn a_handle_used_inside_its_own_completion_fails_fast_instead_of_deadlocking() {
    let (ours, mut peer) = tokio::io::duplex(1024);
    let (handle, _driver) = QueuedFramed::new(ours).spawn();
    let inner = handle.clone();
    let t = handle.push_read_with(LineCodec::new(), move |_, _| {
        inner.push_bytes(&b"reentrant"[..])?;
        Ok(())
    });
    peer.write_all(b"go\n").await.unwrap();
    let e = within("reentrant completion", t).await.unwrap_err();
    assert!(panicked(&e), "{e}");
    assert!(
        e.to_string().contains("Requests"),
        "the message says what to use: {e}"
    );
}

// ----- 4. nothing is read while no request waits --------------------------------

#[tokio::test(start_paused = true)]
async fn a_timer_firing_with_no_request_waiting_reads_nothing() {
    let (ours, mut peer) = tokio::io::duplex(1024);
    let (handle, _driver) = QueuedFramed::builder()
        .timeout(Duration::from_millis(100))
        .build(ours)
        .spawn();
    let fired = Arc::new(AtomicUsize::new(0));
    let f = fired.clone();
    handle.on_timeout(move |_, _| {
        f.fetch_add(1, Ordering::SeqCst);
    });
    peer.write_all(&[b'u'; 18]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(550)).await;
    assert!(fired.load(Ordering::SeqCst) >= 3);
    assert_eq!(handle.with_read_buffer(|b| b.len()), 0);
}

// ----- 5. rbuf_max never kills a well-behaved fast peer -----------------------------

const LINES: usize = 10_000;

fn hundred_byte_lines() -> Vec<u8> {
    let mut out = Vec::with_capacity(LINES * 100);
    for i in 0..LINES {
        out.extend_from_slice(format!("{i:099}\n").as_bytes());
    }
    out
}

#[tokio::test]
async fn rbuf_max_does_not_count_frames_nobody_asked_for_yet() {
    let (ours, mut peer) = tokio::io::duplex(256 * 1024);
    let (handle, _driver) = QueuedFramed::builder()
        .rbuf_max(Some(16 * 1024))
        .max_read_size(128 * 1024)
        .build(ours)
        .spawn();
    tokio::spawn(async move {
        peer.write_all(&hundred_byte_lines()).await.unwrap();
        let mut sink = Vec::new();
        let _ = peer.read_to_end(&mut sink).await;
    });
    for i in 0..LINES {
        let line = within("line", handle.read(LineCodec::new())).await;
        assert_eq!(line.unwrap().line(), format!("{i:099}").as_bytes());
    }
}

#[tokio::test]
async fn rbuf_max_lets_serve_echo_a_fast_pipelining_client() {
    let (server_io, client_io) = tokio::io::duplex(256 * 1024);
    let mut builder = QueuedFramed::builder();
    builder.rbuf_max(Some(16 * 1024)).max_read_size(128 * 1024);
    let echo = tower::service_fn(|line: anyframe::codecs::Line| async move {
        Ok::<_, std::convert::Infallible>(line.into_line())
    });
    let server = tokio::spawn(
        serve(server_io, LineCodec::new(), LineCodec::new(), echo)
            .connection(builder)
            .run(),
    );
    let (mut rd, mut wr) = tokio::io::split(client_io);
    tokio::spawn(async move {
        wr.write_all(&hundred_byte_lines()).await.unwrap();
        wr.shutdown().await.unwrap();
    });
    let mut got = Vec::new();
    within("echoes", rd.read_to_end(&mut got)).await.unwrap();
    assert_eq!(got.len(), LINES * 100);
    within("server", server).await.unwrap().unwrap();
}

#[tokio::test]
async fn rbuf_max_is_enospc_only_when_the_head_request_needs_more_than_the_cap() {
    let (ours, mut peer) = tokio::io::duplex(64 * 1024);
    let mut conn = QueuedFramed::builder().rbuf_max(Some(1024)).build(ours);
    peer.write_all(&[b'a'; 4096]).await.unwrap();
    let first = conn.read(ChunkCodec::new(1000)).await.unwrap();
    assert_eq!(first.len(), 1000);
    let e = conn.read(ChunkCodec::new(2000)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSpace);
    assert!(e.is_fatal());
    assert!(conn.read_buffer().len() <= 1024);
}

// ----- 6. a stalled flush times out ------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_stalled_spawned_flush_resolves_with_etimedout_under_wtimeout() {
    let (ours, _peer) = tokio::io::duplex(1024);
    let (handle, _driver) = QueuedFramed::builder()
        .wtimeout(Duration::from_secs(5))
        .build(ours)
        .spawn();
    handle.push_bytes(vec![0u8; 64 * 1024]).unwrap();
    let e = tokio::time::timeout(Duration::from_secs(3600), handle.flush())
        .await
        .expect("flush must not hang")
        .unwrap_err();
    assert!(e.is_timeout() && !e.is_fatal());
    let e = tokio::time::timeout(Duration::from_secs(3600), handle.drained())
        .await
        .expect("drained must not hang")
        .unwrap_err();
    assert!(e.is_timeout());
}

#[tokio::test(start_paused = true)]
async fn a_stalled_inline_flush_resolves_with_etimedout_under_wtimeout() {
    let (ours, _peer) = tokio::io::duplex(1024);
    let mut conn = QueuedFramed::builder()
        .wtimeout(Duration::from_secs(5))
        .build(ours);
    conn.push_bytes(vec![0u8; 64 * 1024]).unwrap();
    let e = tokio::time::timeout(Duration::from_secs(3600), conn.flush())
        .await
        .expect("flush must not hang")
        .unwrap_err();
    assert!(e.is_timeout() && !e.is_fatal());
    assert!(!conn.is_closed());
}

/// An idle and a write timeout of the same period expire in the same
/// turn: the waiter told of the first must still be there to take the
/// latest, not be forgotten as gone before it could look.
#[tokio::test(start_paused = true)]
async fn poll_write_ready_hears_two_timeouts_that_expire_together() {
    let (handle, _driver, _peer) = blocked_with(|b| {
        b.timeout(Duration::from_secs(1))
            .wtimeout(Duration::from_secs(1));
    });
    let ready = std::future::poll_fn(|cx| handle.poll_write_ready(cx));
    let e = within("poll_write_ready", ready).await.unwrap_err();
    assert_eq!(e.timeout(), Some(Timeout::Write), "{e:?}");
}

/// A spawned connection with a 1 s write timeout and a high watermark of
/// 1 KiB over a 64-byte pipe whose other end (returned) never reads.
fn one_second_wtimeout_over_a_full_pipe() -> (
    anyframe::Handle,
    anyframe::Driver<tokio::io::DuplexStream>,
    tokio::io::DuplexStream,
) {
    let (ours, peer) = tokio::io::duplex(64);
    let (handle, driver) = QueuedFramed::builder()
        .wtimeout(Duration::from_secs(1))
        .watermarks(1024, 0)
        .build(ours)
        .spawn();
    (handle, driver, peer)
}

/// The poll form has no state between polls: a write timeout that comes
/// while it is parked must still reach it (TO-3), or a tower `poll_ready`
/// built on it waits for ever against a peer that never reads.
#[tokio::test(start_paused = true)]
async fn poll_write_ready_gets_a_write_timeout_that_comes_while_it_waits() {
    let (handle, _driver, _peer) = one_second_wtimeout_over_a_full_pipe();
    handle.push_bytes(vec![b'x'; 8192]).unwrap();
    let ready = std::future::poll_fn(|cx| handle.poll_write_ready(cx));
    let e = within("poll_write_ready", ready).await.unwrap_err();
    assert!(e.is_timeout() && !e.is_fatal(), "{e:?}");
    // Told once: the next wait starts afresh and times out again.
    let ready = std::future::poll_fn(|cx| handle.poll_write_ready(cx));
    let e = within("again", ready).await.unwrap_err();
    assert!(e.is_timeout(), "{e:?}");
}

#[tokio::test(start_paused = true)]
async fn a_client_is_not_ready_for_ever_against_a_peer_that_never_reads() {
    let (handle, _driver, _peer) = one_second_wtimeout_over_a_full_pipe();
    let mut client = anyframe::service::ClientBuilder::default()
        .max_in_flight(16)
        .build(handle, LineCodec::new(), |_: &String| LineCodec::new());
    let _first = within("first ready", client.ready())
        .await
        .unwrap()
        .call("x".repeat(8192));
    let e = within("second ready", client.ready()).await.err();
    assert!(e.is_some_and(|e| e.is_timeout()));
}

/// A `serve` loop over `io` that answers each line with 1,000 bytes and
/// the line, with at most `max_in_flight` requests at once: a client that
/// does not read fills its output fast.
fn spawn_big_answer_server(
    io: tokio::io::DuplexStream,
    builder: anyframe::Builder,
    max_in_flight: usize,
) -> tokio::task::JoinHandle<anyframe::Result<()>> {
    let echo = tower::service_fn(|line: anyframe::codecs::Utf8Line| async move {
        Ok::<_, std::convert::Infallible>("y".repeat(1000) + line.line())
    });
    tokio::spawn(
        serve(
            io,
            anyframe::codecs::Utf8LineCodec::new(),
            LineCodec::new(),
            echo,
        )
        .max_in_flight(max_in_flight)
        .connection(builder)
        .run(),
    )
}

#[tokio::test(start_paused = true)]
async fn serve_ends_when_its_answers_are_not_taken_for_a_write_timeout() {
    // Each alone, and each beside a read timeout of the same period,
    // which expires in the same turn and must not hide it.
    for (which, with_read) in [
        (Timeout::Write, false),
        (Timeout::Idle, false),
        (Timeout::Write, true),
        (Timeout::Idle, true),
    ] {
        let (server_io, client_io) = tokio::io::duplex(256);
        let mut builder = QueuedFramed::builder();
        builder.autocork(true).watermarks(4096, 0);
        match which {
            Timeout::Write => builder.wtimeout(Duration::from_secs(1)),
            _ => builder.timeout(Duration::from_secs(1)),
        };
        if with_read {
            builder.rtimeout(Duration::from_secs(1));
        }
        let server = spawn_big_answer_server(
            server_io,
            builder,
            anyframe::service::DEFAULT_SERVE_IN_FLIGHT,
        );
        // Requests, and never a read of the answers.
        let (_rd, mut wr) = tokio::io::split(client_io);
        let writer = tokio::spawn(async move { while wr.write_all(b"req\n").await.is_ok() {} });
        let e = within("serve", server).await.unwrap().unwrap_err();
        assert!(
            e.is_timeout() && e.is_fatal(),
            "{which:?} {with_read}: {e:?}"
        );
        writer.abort();
    }
}

/// A spawned connection over a 64-byte pipe whose peer never reads, above
/// its high watermark.
fn blocked_with(
    build: impl FnOnce(&mut anyframe::Builder),
) -> (
    anyframe::Handle,
    anyframe::Driver<tokio::io::DuplexStream>,
    tokio::io::DuplexStream,
) {
    let (ours, peer) = tokio::io::duplex(64);
    let mut builder = QueuedFramed::builder();
    builder.watermarks(1024, 0);
    build(&mut builder);
    let (handle, driver) = builder.build(ours).spawn();
    handle.push_bytes(vec![b'x'; 8192]).unwrap();
    (handle, driver, peer)
}

/// A task that waits for room on the write side, gives up after 100 ms
/// (the peer takes nothing) and ends.
async fn give_up_on_the_write_side(handle: &anyframe::Handle) {
    let h = handle.clone();
    tokio::spawn(async move {
        let r = tokio::time::timeout(Duration::from_millis(100), h.ready_to_write()).await;
        assert!(r.is_err(), "still blocked");
    })
    .await
    .unwrap();
}

/// A task that gave up on `ready_to_write` (a `timeout` around it) and
/// ended. TO-6: with nobody waiting at all and a pipelined answer still
/// owed, a read timeout closes the connection (fatal `ETIMEDOUT`). The
/// dead task's waker must not count as "somebody waiting" for ever.
#[tokio::test(start_paused = true)]
async fn a_dead_tasks_write_waiter_does_not_keep_to6_from_closing() {
    let (handle, _driver, _peer) = blocked_with(|b| {
        b.rtimeout(Duration::from_secs(1));
    });
    tokio::task::yield_now().await;
    give_up_on_the_write_side(&handle).await;
    // A pipelined call whose caller gave up: its answer is still owed.
    drop(handle.call(LineCodec::new(), "q", LineCodec::new()));
    // Many read-timeout periods with nobody waiting.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let e = handle.error();
    assert!(
        handle.is_closed(),
        "TO-6: still open after 20 read-timeout periods with nobody waiting ({e:?})"
    );
}

/// A `Handle::flush` given up (its future dropped: a `select!` that went
/// the other way) is nobody waiting: with a pipelined answer owed, the
/// first read timeout closes the connection (TO-6), not a period later
/// after the dropped flush's waiter took that timeout.
#[tokio::test(start_paused = true)]
async fn a_dropped_flush_does_not_hear_timeouts_for_nobody() {
    let (handle, _driver, _peer) = blocked_with(|b| {
        b.rtimeout(Duration::from_secs(1));
    });
    tokio::task::yield_now().await;
    for _ in 0..3 {
        let r = tokio::time::timeout(Duration::from_millis(10), handle.flush()).await;
        assert!(r.is_err(), "the peer takes nothing");
    }
    drop(handle.call(LineCodec::new(), "q", LineCodec::new()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        handle.is_closed(),
        "TO-6: still open one read-timeout period later ({:?})",
        handle.error()
    );
}

/// The same through the tower client: its slot is held by a dropped call;
/// TO-6 promises `poll_ready` "reports the connection's error instead of
/// waiting for ever". A task elsewhere once gave up on `ready_to_write`.
#[tokio::test(start_paused = true)]
async fn client_poll_ready_is_not_stuck_for_ever_by_a_dead_write_waiter() {
    let (ours, _peer) = tokio::io::duplex(64);
    let (handle, _driver) = QueuedFramed::builder()
        .watermarks(1024, 0)
        .rtimeout(Duration::from_secs(1))
        .build(ours)
        .spawn();
    let mut client = anyframe::service::ClientBuilder::default()
        .max_in_flight(1)
        .build(handle.clone(), LineCodec::new(), |_: &String| {
            LineCodec::new()
        });
    // The only slot: a call whose caller gave up; the peer never answers.
    let call = within("ready", client.ready())
        .await
        .unwrap()
        .call("x".repeat(8192));
    drop(call);
    // Elsewhere, a task gave up on the write side and ended.
    give_up_on_the_write_side(&handle).await;
    let r = within("client ready", client.ready()).await.map(|_| ());
    assert!(r.is_err(), "{r:?}");
}

/// A waker that counts how many clones of it are alive elsewhere.
struct Counted(AtomicUsize);
impl futures::task::ArcWake for Counted {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Every write-side waiter, future or poll form, hears the write timeout
/// when a read or idle timeout of the same period expires in the same
/// turn; a read with nothing to write still hears its read timeout.
#[tokio::test(start_paused = true)]
async fn the_write_side_hears_the_write_timeout_beside_another() {
    for other in [Timeout::Read, Timeout::Idle] {
        let both = |b: &mut anyframe::Builder| {
            b.wtimeout(Duration::from_secs(1));
            match other {
                Timeout::Read => b.rtimeout(Duration::from_secs(1)),
                _ => b.timeout(Duration::from_secs(1)),
            };
        };
        let (handle, _driver, _peer) = blocked_with(both);
        let e = within("ready_to_write", handle.ready_to_write())
            .await
            .unwrap_err();
        assert_eq!(e.timeout(), Some(Timeout::Write), "beside {other:?}: {e:?}");
        let (handle, _driver, _peer) = blocked_with(both);
        let e = within("drained", handle.drained()).await.unwrap_err();
        assert_eq!(e.timeout(), Some(Timeout::Write), "beside {other:?}: {e:?}");
    }
    let (ours, _peer) = tokio::io::duplex(64);
    let (handle, _driver) = QueuedFramed::builder()
        .rtimeout(Duration::from_secs(1))
        .wtimeout(Duration::from_secs(1))
        .build(ours)
        .spawn();
    let e = within("read", handle.read(LineCodec::new()))
        .await
        .unwrap_err();
    assert_eq!(e.timeout(), Some(Timeout::Read), "{e:?}");
}

/// Two producers in their own tasks (so with their own wakers), parked in
/// the poll form when a write timeout expires: each is told, and each
/// gets its own error, whichever looks first; one that parks afterwards is
/// not told.
#[tokio::test(start_paused = true)]
async fn every_parked_producer_gets_its_own_timeout() {
    let (handle, _driver, _peer) = blocked_with(|b| {
        b.wtimeout(Duration::from_secs(1));
    });
    tokio::task::yield_now().await;
    let counters: Vec<_> = (0..2)
        .map(|_| Arc::new(Counted(AtomicUsize::new(0))))
        .collect();
    let wakers: Vec<_> = counters
        .iter()
        .map(|c| futures::task::waker(c.clone()))
        .collect();
    for w in &wakers {
        let mut cx = std::task::Context::from_waker(w);
        assert!(handle.poll_write_ready(&mut cx).is_pending());
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // A third that was not waiting then is not told, even looking first.
    let late = futures::task::waker(Arc::new(Counted(AtomicUsize::new(0))));
    assert!(
        handle
            .poll_write_ready(&mut std::task::Context::from_waker(&late))
            .is_pending()
    );
    // The second looks before the first.
    for w in wakers.iter().rev() {
        let mut cx = std::task::Context::from_waker(w);
        match handle.poll_write_ready(&mut cx) {
            std::task::Poll::Ready(Err(e)) => assert!(e.is_timeout(), "{e:?}"),
            other => panic!("a parked producer was not told: {other:?}"),
        }
    }
}

/// A `ready_to_write` that returns the timeout lets go of its waker at
/// once, without waiting for the next error to find it gone.
#[tokio::test(start_paused = true)]
async fn a_ready_to_write_that_returns_an_error_lets_go_of_its_waker() {
    let (handle, _driver, _peer) = blocked_with(|b| {
        b.wtimeout(Duration::from_secs(1));
    });
    tokio::task::yield_now().await;
    let counter = Arc::new(Counted(AtomicUsize::new(0)));
    let waker = futures::task::waker(counter.clone());
    let mut cx = std::task::Context::from_waker(&waker);
    let mut ready = std::pin::pin!(handle.ready_to_write());
    assert!(ready.as_mut().poll(&mut cx).is_pending());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        counter.0.load(Ordering::Relaxed) > 0,
        "woken by the timeout"
    );
    match ready.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(Err(e)) => assert!(e.is_timeout(), "{e:?}"),
        other => panic!("{other:?}"),
    }
    drop(waker);
    assert_eq!(
        Arc::strong_count(&counter),
        1,
        "the connection still holds the waker"
    );
}

/// Many producers (each its own task, so its own waker) poll
/// `poll_write_ready` once and go away; write timeouts then fire again and
/// again while the peer never reads. Each is woken, and none of their
/// wakers is kept past the next timeout.
#[tokio::test(start_paused = true)]
async fn gone_producers_wakers_are_released_after_a_write_timeout() {
    const N: usize = 1000;
    let (handle, _driver, _peer) = blocked_with(|b| {
        b.wtimeout(Duration::from_secs(1));
    });
    tokio::task::yield_now().await;
    let mut counters = Vec::new();
    for _ in 0..N {
        let c = Arc::new(Counted(AtomicUsize::new(0)));
        let waker = futures::task::waker(c.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(handle.poll_write_ready(&mut cx).is_pending());
        drop(waker);
        counters.push(c);
    }
    // Several write timeouts.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!handle.is_closed());
    let woken = counters
        .iter()
        .filter(|c| c.0.load(Ordering::Relaxed) > 0)
        .count();
    let kept = counters.iter().filter(|c| Arc::strong_count(c) > 1).count();
    assert_eq!(woken, N, "each parked producer is woken by the timeout");
    assert_eq!(
        kept, 0,
        "{kept} of {N} wakers of producers that are gone are still held"
    );
}

// ----- 7. serve stops reading while its output is above the high watermark ------

#[tokio::test]
async fn serve_stops_reading_requests_while_output_is_above_the_high_watermark() {
    const REQUESTS: usize = 5_000;
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    let mut builder = QueuedFramed::builder();
    builder.wbuf_max(Some(1024 * 1024));
    // Each 2-byte request is answered by 1,000 bytes.
    let amplify = tower::service_fn(|_: anyframe::codecs::Line| async move {
        Ok::<_, std::convert::Infallible>(vec![b'r'; 999])
    });
    let server = tokio::spawn(
        serve(server_io, LineCodec::new(), LineCodec::new(), amplify)
            .connection(builder)
            .run(),
    );
    let (mut rd, mut wr) = tokio::io::split(client_io);
    tokio::spawn(async move {
        wr.write_all(&b"x\n".repeat(REQUESTS)).await.unwrap();
        // Let the server queue as much as it wants before anyone reads.
        tokio::time::sleep(Duration::from_millis(200)).await;
        wr.shutdown().await.unwrap();
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut got = Vec::new();
    within("answers", rd.read_to_end(&mut got)).await.unwrap();
    assert_eq!(
        got.len(),
        REQUESTS * 1000,
        "every request answered, none lost"
    );
    within("server", server).await.unwrap().unwrap();
}

/// A server with only a read timeout. The client pipelines 40 requests,
/// then reads every answer slowly but steadily (512 bytes every 100 ms):
/// the loop stops reading above the high watermark, so its read timer
/// fires, but that is the loop's own doing, not a stuck peer.
#[tokio::test(start_paused = true)]
async fn a_read_timeout_while_serve_holds_back_does_not_end_it() {
    const N: usize = 40;
    let (server_io, client_io) = tokio::io::duplex(512);
    let mut builder = QueuedFramed::builder();
    builder.rtimeout(Duration::from_secs(1)).watermarks(4096, 0);
    let server = spawn_big_answer_server(
        server_io,
        builder,
        anyframe::service::DEFAULT_SERVE_IN_FLIGHT,
    );
    let mut reqs = Vec::new();
    for i in 0..N {
        reqs.extend_from_slice(format!("r{i}\n").as_bytes());
    }
    let (mut rd, mut wr) = tokio::io::split(client_io);
    let writer = tokio::spawn(async move {
        wr.write_all(&reqs).await.unwrap();
        wr // keep the write side open
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    let lines = within("answers", async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if got.iter().filter(|&&b| b == b'\n').count() == N {
                break;
            }
        }
        got.iter().filter(|&&b| b == b'\n').count()
    })
    .await;
    let _wr = writer.await.unwrap();
    let outcome = if server.is_finished() {
        Some(server.await.unwrap())
    } else {
        None
    };
    assert_eq!(
        lines, N,
        "a client reading steadily got {lines} of {N} answers; serve ended with {outcome:?}"
    );
}

/// More requests wait unread than serve may have in flight, and its read
/// timer fires again and again while it holds back and the client takes
/// its answers slowly: the expiries are the server's doing (its answers
/// still leave), and once the client takes them faster serve reads and
/// answers the rest (it stays parked on the write side after ignoring
/// each read timeout).
#[tokio::test(start_paused = true)]
async fn serve_resumes_after_ignoring_read_timeouts_while_holding_back() {
    const N: usize = 200;
    let (server_io, client_io) = tokio::io::duplex(512);
    let mut builder = QueuedFramed::builder();
    builder.watermarks(4096, 0).rtimeout(Duration::from_secs(1));
    let server = spawn_big_answer_server(server_io, builder, 4);
    let requests: String = (0..N).map(|i| format!("r{i}\n")).collect();
    let (mut rd, mut wr) = tokio::io::split(client_io);
    let writer = tokio::spawn(async move {
        wr.write_all(requests.as_bytes()).await.unwrap();
        wr
    });
    // Several read-timeout periods while serve holds back, the client
    // taking a little of its answers twice a period.
    let mut lines = 0;
    let mut buf = [0u8; 4096];
    for _ in 0..7 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let n = within("answers", rd.read(&mut buf[..64])).await.unwrap();
        assert!(n > 0, "serve ended while holding back");
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count();
    }
    while lines < N {
        let n = within("answers", rd.read(&mut buf)).await.unwrap();
        assert!(n > 0, "serve ended after {lines} of {N} answers");
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count();
    }
    drop(writer.await.unwrap());
    // Every answer taken, the client then sends nothing: serve ends on its
    // read timeout, as a server with one does.
    let e = within("serve", server).await.unwrap().unwrap_err();
    assert_eq!(e.timeout(), Some(Timeout::Read), "{e:?}");
}

/// Two requests and an over-long line (fatal ENOSPC under the default
/// policy) that arrive in one read: serve answers both before it ends with
/// the error (LC-5, LC-6), as it does when they arrive apart.
async fn two_requests_then_a_fatal_line() -> (Vec<u8>, anyframe::Result<()>) {
    let (server_io, client_io) = tokio::io::duplex(1 << 16);
    let echo = tower::service_fn(|line: anyframe::codecs::Utf8Line| async move {
        Ok::<_, std::convert::Infallible>(format!("echo {}", line.line()))
    });
    let decoder = anyframe::codecs::Utf8LineCodec::builder()
        .max_length(8)
        .build_utf8()
        .unwrap();
    let (mut rd, mut wr) = tokio::io::split(client_io);
    let mut input = b"a\nb\n".to_vec();
    input.extend_from_slice(&[b'x'; 100]);
    // Written before the server starts: its first read gets all of it.
    wr.write_all(&input).await.unwrap();
    let server = tokio::spawn(serve(server_io, decoder, LineCodec::new(), echo).run());
    let out = within("server", server).await.unwrap();
    let mut got = Vec::new();
    let _ = within("read", rd.read_to_end(&mut got)).await;
    drop(wr);
    (got, out)
}

#[tokio::test]
async fn serve_answers_the_requests_read_with_a_fatal_line_before_it_ends() {
    let (got, out) = two_requests_then_a_fatal_line().await;
    assert!(out.is_err());
    assert_eq!(
        String::from_utf8_lossy(&got),
        "echo a\necho b\n",
        "serve ended with {out:?}"
    );
}

// ----- 8. after a fatal write-side error, output is not kept for the linger -----

#[tokio::test]
async fn a_fatal_write_error_drops_queued_output_instead_of_lingering() {
    let (ours, _peer) = tokio::io::duplex(1024);
    let (handle, driver) = QueuedFramed::builder()
        .wbuf_max(Some(1024 * 1024))
        .linger(Duration::from_secs(3600))
        .build(ours)
        .spawn();
    let mut err = None;
    for _ in 0..100 {
        if let Err(e) = handle.push_bytes(vec![1u8; 64 * 1024]) {
            err = Some(e);
            break;
        }
    }
    assert_eq!(err.unwrap().kind(), ErrorKind::NoSpace);
    drop(handle);
    let parts = within("driver after ENOSPC", driver).await.unwrap();
    assert!(parts.write_buf.len() <= 1024 * 1024);
}

/// `linger(0)` discards queued output whichever way the connection closes
/// cleanly: `destroy`, or the last handle dropped before the driver wrote
/// it (the driver's next turn must not write it first).
#[tokio::test]
async fn linger_zero_discards_queued_output_on_destroy_and_on_the_last_handle_dropped() {
    async fn peer_reads(destroy: bool) -> Vec<u8> {
        let (io, mut peer) = tokio::io::duplex(1024);
        let (h, driver) = QueuedFramed::builder()
            .linger(Duration::ZERO)
            .build(io)
            .spawn();
        h.push_bytes(&b"hello"[..]).unwrap();
        assert_eq!(h.write_buffered(), 5, "queued, not written yet");
        if destroy {
            h.destroy();
        }
        drop(h);
        let _ = within("driver", driver).await;
        let mut got = Vec::new();
        within("peer", peer.read_to_end(&mut got)).await.unwrap();
        got
    }
    assert_eq!(peer_reads(true).await, b"", "destroy");
    assert_eq!(peer_reads(false).await, b"", "last handle dropped");
}

#[test]
fn the_default_linger_is_documented_and_short() {
    assert!(anyframe::DEFAULT_LINGER <= Duration::from_secs(60));
}

// ----- 9. wbuf_max counts output set aside for a STARTTLS -------------------------

#[cfg(feature = "tls")]
#[tokio::test]
async fn wbuf_max_counts_output_queued_before_a_pending_starttls() {
    let (ours, _peer) = tokio::io::duplex(1024);
    let mut conn = QueuedFramed::builder()
        .wbuf_max(Some(4 * 1024 * 1024))
        .build(ours);
    conn.push_bytes(vec![0u8; 3 * 1024 * 1024]).unwrap();
    let client = anyframe::tls::TlsClient::new("localhost").unwrap();
    // Queue the switch without driving it.
    let _pending = conn.push_starttls(client);
    let e = conn.push_bytes(vec![0u8; 2 * 1024 * 1024]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSpace);
}

// ----- 11. absurd configuration is clamped, never a panic or an abort -------------

#[tokio::test]
async fn absurd_configuration_is_clamped_not_a_panic() {
    for read_size in [usize::MAX, 1 << 40] {
        let (ours, mut peer) = tokio::io::duplex(1024);
        let mut conn = QueuedFramed::builder()
            .timeout(Duration::MAX)
            .rtimeout(Duration::MAX)
            .wtimeout(Duration::MAX)
            .read_size(read_size)
            .max_read_size(usize::MAX)
            .build(ours);
        peer.write_all(b"fine\n").await.unwrap();
        assert_eq!(conn.read(LineCodec::new()).await.unwrap().line(), b"fine");
        conn.set_timeout(Duration::MAX);
        peer.write_all(b"still\n").await.unwrap();
        assert_eq!(conn.read(LineCodec::new()).await.unwrap().line(), b"still");
    }
}

// ----- 12. OverflowPolicy::Discard makes progress with a decoder per request ------

fn discarding() -> LineCodec {
    LineCodec::builder()
        .max_length(8)
        .overflow(OverflowPolicy::Discard)
        .build()
        .unwrap()
}

/// The line, or `None` for the non-fatal ENOSPC of a discarded line (the
/// caller reads again); anything else fails the test.
fn line_or_discarded(
    r: anyframe::Result<anyframe::codecs::Line>,
) -> Option<anyframe::codecs::Line> {
    match r {
        Ok(line) => Some(line),
        Err(e) if e.kind() == ErrorKind::NoSpace && !e.is_fatal() => None,
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn discard_policy_makes_progress_through_read_by_value() {
    let (ours, mut peer) = tokio::io::duplex(1024);
    let mut conn = QueuedFramed::new(ours);
    tokio::spawn(async move {
        for piece in [&b"aaaaaaaaaaaa"[..], b"aaaaaaaa", b"aa\nok\n"] {
            peer.write_all(piece).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        std::future::pending::<()>().await;
    });
    let line = 'read: {
        for _ in 0..10 {
            if let Some(line) = line_or_discarded(within("read", conn.read(discarding())).await) {
                break 'read line;
            }
        }
        panic!("no progress");
    };
    assert_eq!(line.line(), b"ok");
}

#[tokio::test]
async fn discard_policy_makes_progress_through_a_spawned_handle() {
    let (ours, mut peer) = tokio::io::duplex(1024);
    let (handle, _driver) = QueuedFramed::new(ours).spawn();
    peer.write_all(b"aaaaaaaaaaaaaaaaaaaa\nok\n").await.unwrap();
    let line = 'read: {
        for _ in 0..10 {
            if let Some(line) = line_or_discarded(within("read", handle.read(discarding())).await) {
                break 'read line;
            }
        }
        panic!("no progress");
    };
    assert_eq!(line.line(), b"ok");
}

// ----- 13. a default decoder that completes on no input is refused ----------------

#[tokio::test]
async fn a_default_codec_that_completes_on_no_input_is_refused() {
    let (ours, _peer) = tokio::io::duplex(1024);
    let mut conn = QueuedFramed::with_codec(ours, ChunkCodec::new(0));
    let first = within("stream", conn.next()).await;
    let e = first.expect("an error, not the end").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(within("stream end", conn.next()).await.is_none());
}

// ----- 14. is_eof means end of input, not any EPIPE -------------------------------

#[test]
fn is_eof_is_false_for_a_write_to_a_closed_socket() {
    let e = anyframe::Error::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
    assert_eq!(e.kind(), ErrorKind::BrokenPipe);
    assert!(!e.is_eof());
}

#[tokio::test]
async fn is_eof_is_true_for_end_of_input_inside_a_request() {
    let (ours, peer) = tokio::io::duplex(1024);
    drop(peer);
    let mut conn = QueuedFramed::new(ours);
    assert!(conn.read(LineCodec::new()).await.unwrap_err().is_eof());
}

#[tokio::test(start_paused = true)]
async fn an_on_timeout_hook_can_close_an_idle_connection() {
    let (ours, _peer) = tokio::io::duplex(1024);
    let (handle, driver) = QueuedFramed::builder()
        .timeout(Duration::from_secs(3))
        .build(ours)
        .spawn();
    handle.on_timeout(|which, q| {
        assert_eq!(which, Timeout::Idle);
        q.destroy();
    });
    let waiting = handle.push_read(LineCodec::new());
    let e = within("waiting", waiting).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed);
    within("driver", driver).await.unwrap();
}

#[tokio::test]
async fn client_wtimeout_never_hands_the_next_caller_a_late_answer() {
    // A server that reads nothing for 600 ms, then answers in order.
    let (ours, theirs) = tokio::io::duplex(64);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let mut conn = QueuedFramed::new(theirs);
        while let Ok(line) = conn.read(LineCodec::new()).await {
            if conn.write(LineCodec::new(), line.line()).await.is_err() {
                break;
            }
        }
    });
    let (handle, _driver) = QueuedFramed::builder()
        .wtimeout(Duration::from_millis(300))
        .build(ours)
        .spawn();
    let mut client = Client::new(handle, LineCodec::new(), |_: &String| LineCodec::new());
    // More than the pipe holds, so the write stalls.
    let alice = "a".repeat(200);
    let first = client.ready().await.unwrap().call(alice).await;
    assert!(first.unwrap_err().is_timeout());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut clone = client.clone();
    let got = within("call", clone.ready().await.unwrap().call("bob".to_string()))
        .await
        .unwrap();
    assert_eq!(got.line(), b"bob", "answers are off by one");
}

#[tokio::test]
async fn replies_queued_before_an_input_side_error_are_still_written() {
    let (ours, peer) = tokio::io::duplex(1024);
    let (mut peer_rd, mut peer_wr) = tokio::io::split(peer);
    let (handle, driver) = QueuedFramed::new(ours).spawn();
    let reply = vec![b'r'; 100_000];
    handle.push_bytes(reply.clone()).unwrap();
    let waiting = handle.push_read(LineCodec::new());
    // The peer half-closes inside a line: EPIPE, fatal, input side.
    peer_wr.write_all(b"half a li").await.unwrap();
    peer_wr.shutdown().await.unwrap();
    let mut got = Vec::new();
    within("reply", peer_rd.read_to_end(&mut got))
        .await
        .unwrap();
    assert_eq!(got, reply, "the reply queued before the error is delivered");
    assert!(within("waiting", waiting).await.unwrap_err().is_eof());
    drop(handle);
    within("driver", driver).await.unwrap();
}

// ----- Handle::read_many ------------------------------------------------------------

#[tokio::test]
async fn handle_read_many_takes_every_buffered_frame_then_a_clean_end() {
    let (ours, mut peer) = tokio::io::duplex(1024);
    let (handle, _driver) = QueuedFramed::new(ours).spawn();
    peer.write_all(b"a\nb\nc\n").await.unwrap();
    let (codec, lines) = within("batch", handle.read_many(LineCodec::new(), 10))
        .await
        .unwrap();
    let got: Vec<&[u8]> = lines.iter().map(|l| l.line()).collect();
    assert_eq!(got, [&b"a"[..], b"b", b"c"]);
    drop(peer);
    let (_, rest) = within("end", handle.read_many(codec, 10)).await.unwrap();
    assert!(rest.is_empty(), "a clean end of input is an empty batch");
}

/// The error after a batch's frames is for the batch that goes on with its
/// decoder. A plain read next (another kind of request) does not get it,
/// and then no later batch does either: it would not be theirs.
#[tokio::test]
async fn the_error_after_a_batch_is_never_handed_to_a_later_unrelated_batch() {
    let (ours, mut peer) = tokio::io::duplex(1024);
    let (handle, _driver) = QueuedFramed::new(ours).spawn();
    let codec = || {
        LineCodec::builder()
            .max_length(4)
            .overflow(OverflowPolicy::Discard)
            .build()
            .unwrap()
    };
    peer.write_all(b"ok\nmuch too long\nnext\n").await.unwrap();
    let (_, first) = within("batch", handle.read_many(codec(), 10))
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    let next = within("plain", handle.read(codec())).await.unwrap();
    assert_eq!(next.line(), b"next");
    peer.write_all(b"fine\n").await.unwrap();
    let (_, later) = within("later batch", handle.read_many(codec(), 10))
        .await
        .unwrap();
    assert_eq!(later[0].line(), b"fine");
}

#[tokio::test]
async fn handle_read_many_gives_an_error_after_its_frames_to_the_next_batch() {
    let (ours, mut peer) = tokio::io::duplex(1024);
    let (handle, _driver) = QueuedFramed::new(ours).spawn();
    let codec = LineCodec::builder()
        .max_length(3)
        .overflow(OverflowPolicy::Discard)
        .build()
        .unwrap();
    peer.write_all(b"ab\ncd\nmuch too long\nok\n")
        .await
        .unwrap();
    let (codec, first) = within("batch", handle.read_many(codec, 10)).await.unwrap();
    assert_eq!(first.len(), 2, "the frames before the error come first");
    let e = within("error", handle.read_many(codec.clone(), 10))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSpace);
    assert!(!e.is_fatal());
    let (_, last) = within("after", handle.read_many(codec, 10)).await.unwrap();
    assert_eq!(last[0].line(), b"ok");
}

/// A frame with a 4-byte big-endian length header, as
/// `LengthDelimitedCodec` reads it; that decoder consumes the header before
/// its body has arrived, so a read of it has begun its frame.
fn length_delimited(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// A `read_many` that began a frame (header consumed) and is then given up
/// by `abandon`, after which the rest of that frame and two more arrive:
/// the next read must get the first of those two.
async fn read_many_abandoned_mid_frame<F, Fut>(abandon: F)
where
    F: FnOnce(anyframe::Handle) -> Fut,
    Fut: std::future::Future<Output = anyframe::Handle>,
{
    use tokio_util::codec::LengthDelimitedCodec;
    let (ours, mut peer) = tokio::io::duplex(1 << 16);
    let (handle, _driver) = QueuedFramed::new(ours).spawn();
    let mut first = length_delimited(b"AAAA");
    let body = first.split_off(6);
    peer.write_all(&first).await.unwrap();
    let handle = abandon(handle).await;
    let mut rest = body;
    rest.extend(length_delimited(b"BBBB"));
    rest.extend(length_delimited(b"CCCC"));
    peer.write_all(&rest).await.unwrap();
    let next = within("next", handle.read(LengthDelimitedCodec::new())).await;
    assert_eq!(&next.unwrap()[..], b"BBBB");
    let last = within("last", handle.read(LengthDelimitedCodec::new())).await;
    assert_eq!(&last.unwrap()[..], b"CCCC");
}

#[tokio::test]
async fn a_cancelled_read_many_finishes_its_begun_frame_and_no_more() {
    read_many_abandoned_mid_frame(|handle| async move {
        let batch = handle.read_many(tokio_util::codec::LengthDelimitedCodec::new(), 16);
        let waited = tokio::time::timeout(Duration::from_millis(50), batch).await;
        assert!(waited.is_err(), "the body has not arrived");
        handle
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_read_many_finishes_its_begun_frame_and_no_more() {
    read_many_abandoned_mid_frame(|handle| async move {
        handle.set_rtimeout(Duration::from_secs(1));
        let batch = handle.read_many(tokio_util::codec::LengthDelimitedCodec::new(), 16);
        let e = within("timeout", batch).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TimedOut);
        handle.set_rtimeout(Duration::ZERO);
        handle
    })
    .await;
}

#[tokio::test]
async fn a_fatal_error_after_a_handle_batch_closes_the_connection() {
    let (ours, mut peer) = tokio::io::duplex(1024);
    let (handle, _driver) = QueuedFramed::new(ours).spawn();
    // Over the limit under the default policy: ENOSPC, fatal.
    let codec = LineCodec::builder().max_length(4).build().unwrap();
    peer.write_all(b"ok\nmuch too long\n").await.unwrap();
    let (_, first) = within("batch", handle.read_many(codec, 10)).await.unwrap();
    assert_eq!(first.len(), 1, "the frame before the error is delivered");
    assert!(handle.is_closed(), "a fatal error ends the connection");
    let e = within("after", handle.read(ChunkCodec::new(4)))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSpace);
    assert!(e.is_fatal());
}

// ----- the driver shares its thread ------------------------------------------------

/// A minimal `block_on` that parks the thread, as `futures::executor` does.
fn park_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

/// AnyEvent's usual reader: each line's completion queues the read of the
/// next one (the tickets are never awaited, as callbacks' results).
fn read_every_line(q: &mut anyframe::Requests<'_>, echo: bool) {
    std::mem::forget(q.push_read_with(LineCodec::new(), move |line, q| {
        if echo {
            let _ = q.push_write(LineCodec::new(), line.line().to_vec());
        }
        read_every_line(q, echo);
        Ok(())
    }));
}

/// Such a reader over a transport that always has input: the driver must
/// still give the other tasks on its thread their turn, reading and
/// answering alike.
#[test]
fn a_reader_over_endless_input_does_not_starve_the_thread() {
    for echo in [false, true] {
        other_tasks_still_run(move || {
            let (handle, driver) = QueuedFramed::new(support::EndlessLines).spawn();
            std::mem::forget(handle.push_read_with(LineCodec::new(), move |_, q| {
                read_every_line(q, echo);
                Ok(())
            }));
            (handle, driver)
        });
    }
}

/// An inline connection is polled by its caller's executor, which may not
/// be tokio's even on a tokio thread: tokio's task budget must not be what
/// lets its writes go on, as it never refills there.
#[test]
fn an_inline_flush_under_another_executor_on_a_tokio_thread_finishes() {
    watched::on_one_thread(Duration::from_secs(10), async {
        tokio::spawn(async {
            // One byte per write: 4096 writes for this flush.
            let mut conn = QueuedFramed::new(support::FixedWrites::new(|_| Ok(1)));
            conn.push_bytes(vec![b'x'; 4096]).unwrap();
            park_on(conn.flush()).unwrap();
        })
        .await
        .unwrap();
    })
    .expect("the flush never finished");
}

/// A drain hook that always queues more (AnyEvent's way to stream a file),
/// over a transport that takes everything at once: the driver must still
/// give the other tasks on its thread their turn.
#[test]
fn a_drain_hook_that_never_stops_refilling_does_not_starve_the_thread() {
    other_tasks_still_run(|| {
        // Takes every write at once.
        let mut conn = QueuedFramed::new(support::FixedWrites::new(|buf| Ok(buf.len())));
        conn.on_drain(|q| {
            let _ = q.push_write(LineCodec::new(), "more");
        });
        conn.push_write(LineCodec::new(), "first").unwrap();
        conn.spawn()
    });
}

/// Runs `start` (which spawns a driver) on a current-thread runtime of
/// its own thread, then another task there: fails unless that task runs
/// within 10 s, that is unless the driver yields its thread.
fn other_tasks_still_run<G: 'static>(start: impl FnOnce() -> G + Send + 'static) {
    watched::on_one_thread_with(Duration::from_secs(10), || async move {
        let _driver = start();
        tokio::task::yield_now().await;
        tokio::spawn(async {}).await.unwrap();
    })
    .expect("the driver never yielded its thread");
}

/// TO-6 on a spawned connection: a read timeout that no read is waiting
/// to hear, with an answer still owed, closes the connection even while a
/// task waits on the write side (the peer neither takes output nor
/// answers; the write side cannot make it answer). Every write-side
/// waiter hears the fatal `ETIMEDOUT`, which still names the read timer.
#[tokio::test(start_paused = true)]
async fn a_read_timeout_only_the_write_side_hears_with_an_answer_owed_is_fatal() {
    for waiter in ["flush", "ready_to_write", "drained"] {
        let (handle, _driver, _peer) = blocked_with(|b| {
            b.rtimeout(Duration::from_secs(1));
        });
        drop(handle.call(LineCodec::new(), "q", LineCodec::new()));
        let e = match waiter {
            "flush" => within(waiter, handle.flush()).await,
            "ready_to_write" => within(waiter, handle.ready_to_write()).await,
            _ => within(waiter, handle.drained()).await,
        }
        .unwrap_err();
        assert!(e.is_fatal(), "{waiter}: {e:?}");
        assert_eq!(e.timeout(), Some(Timeout::Read), "{waiter}: {e:?}");
        assert!(handle.is_closed(), "{waiter}");
    }
}

/// With nothing owed, the same read timeout stays non-fatal for the write
/// side (TO-3): the connection is idle, not stuck.
#[tokio::test(start_paused = true)]
async fn a_read_timeout_the_write_side_hears_with_nothing_owed_stays_non_fatal() {
    let (handle, _driver, _peer) = blocked_with(|b| {
        b.rtimeout(Duration::from_secs(1));
    });
    let e = within("flush", handle.flush()).await.unwrap_err();
    assert!(!e.is_fatal(), "{e:?}");
    assert_eq!(e.timeout(), Some(Timeout::Read), "{e:?}");
    assert!(!handle.is_closed());
}

/// tower's `Client` waiting for room in `poll_ready` while its calls were
/// given up: a peer that neither reads nor answers for a read-timeout
/// period is a dead service, and `poll_ready` says so with the fatal error
/// that closed the connection, not a non-fatal one that tower's
/// middleware would take for the end of a live connection.
#[tokio::test(start_paused = true)]
async fn client_poll_ready_waiting_for_room_hears_a_stuck_peer_as_a_closed_connection() {
    let (ours, _peer) = tokio::io::duplex(64);
    let (handle, _driver) = QueuedFramed::builder()
        .watermarks(1024, 0)
        .rtimeout(Duration::from_secs(1))
        .build(ours)
        .spawn();
    let mut client = anyframe::service::ClientBuilder::default()
        .max_in_flight(2)
        .build(handle.clone(), LineCodec::new(), |_: &String| {
            LineCodec::new()
        });
    let call = within("ready", client.ready())
        .await
        .unwrap()
        .call("x".repeat(8192));
    drop(call);
    let e = within("client ready", client.ready())
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(e.is_fatal(), "{e:?}");
    assert!(handle.is_closed());
}

/// tower's `Client` with one slot, held by a clone that called `ready()`
/// and not `call()` yet: when the connection closes, another clone's
/// `poll_ready` returns the error that closed it instead of waiting for
/// the slot for ever.
#[tokio::test(start_paused = true)]
async fn client_poll_ready_sees_the_close_while_a_clone_holds_the_slot() {
    let (ours, _peer) = tokio::io::duplex(64);
    let (handle, _driver) = QueuedFramed::new(ours).spawn();
    let mut a = anyframe::service::ClientBuilder::default()
        .max_in_flight(1)
        .build(handle.clone(), LineCodec::new(), |_: &String| {
            LineCodec::new()
        });
    let mut b = a.clone();
    within("a ready", a.ready()).await.unwrap();
    let waiting = tokio::spawn(async move { b.ready().await.map(|_| ()) });
    tokio::task::yield_now().await;
    handle.destroy();
    let e = within("b ready", waiting).await.unwrap().unwrap_err();
    assert!(e.is_fatal(), "{e:?}");
}
