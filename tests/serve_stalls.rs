//! The server loop against peers that stall, read slowly or stop reading
//! (docs/semantics.md, LC-6, last paragraph), and `Requests::timeout_reset`
//! from a user's own hook.

#[path = "support/serving.rs"]
mod serving;
mod support;

use std::convert::Infallible;
use std::time::Duration;

use anyframe::QueuedFramed;
use anyframe::codecs::{LineCodec, Utf8Line, Utf8LineCodec};
use anyframe::service::serve;
use serving::{MS, SEC, answer_of, big_answers, slow_read, spawn_line_server, state};
use support::within;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------------------
// 1. A peer that never reads, and more answers than the high watermark
//    holds.
// ---------------------------------------------------------------------------

/// Ten requests with 10 KB answers each (100 KB, over the default 64 KB
/// high watermark), then the peer half-closes and never reads; only a read
/// timer (1 s). Above the high watermark the answers wait for the peer,
/// not the service: a read period in which the transport took nothing of
/// them is a stalled peer, and the loop ends with a fatal `ETIMEDOUT`.
#[tokio::test(start_paused = true)]
async fn read_timer_ends_the_loop_for_a_peer_that_never_reads_over_the_high_watermark() {
    let (server_io, client_io) = tokio::io::duplex(512);
    let mut builder = QueuedFramed::builder();
    builder.rtimeout(SEC);
    let server = spawn_line_server(server_io, builder, big_answers(10_000));
    let (_rd, mut wr) = tokio::io::split(client_io);
    for c in b'a'..b'k' {
        wr.write_all(&[c, b'\n']).await.unwrap();
    }
    wr.shutdown().await.unwrap();
    let t0 = tokio::time::Instant::now();
    let r = within("server", server).await.unwrap();
    assert!(
        r.as_ref().is_err_and(|e| e.is_timeout() && e.is_fatal()),
        "{r:?}"
    );
    assert!(t0.elapsed() <= 2 * SEC, "{:?}", t0.elapsed());
}

/// The same peer, not half-closed, and a shutdown signal after 2 s: the
/// graceful shutdown toward a peer that never reads ends too.
#[tokio::test(start_paused = true)]
async fn shutdown_completes_for_a_peer_that_never_reads_over_the_high_watermark() {
    let (server_io, client_io) = tokio::io::duplex(512);
    let mut builder = QueuedFramed::builder();
    builder.rtimeout(SEC);
    let server = tokio::spawn(
        serve(
            server_io,
            Utf8LineCodec::new(),
            LineCodec::new(),
            big_answers(10_000),
        )
        .with_shutdown(tokio::time::sleep(Duration::from_secs(2)))
        .connection(builder)
        .run(),
    );
    let (_rd, mut wr) = tokio::io::split(client_io);
    for c in b'a'..b'k' {
        wr.write_all(&[c, b'\n']).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    let s = state(server).await;
    assert!(
        s != "still running",
        "shutdown signal at 2 s, 60 read periods of a silent peer taking nothing; server: {s}"
    );
}

/// the same peer with two requests (20 KB, under the high
/// watermark): the read timer ends the loop (ETIMEDOUT), as documented.
#[tokio::test(start_paused = true)]
async fn read_timer_ends_loop_for_nonreading_peer_under_high_watermark() {
    let (server_io, client_io) = tokio::io::duplex(512);
    let mut builder = QueuedFramed::builder();
    builder.rtimeout(SEC);
    let server = spawn_line_server(server_io, builder, big_answers(10_000));
    let (_rd, mut wr) = tokio::io::split(client_io);
    wr.write_all(b"a\nb\n").await.unwrap();
    let r = within("server", server).await.unwrap();
    assert!(r.as_ref().is_err_and(|e| e.is_timeout()), "{r:?}");
}

// ---------------------------------------------------------------------------
// 2. The read timer counts from the take of the last byte, whatever the
//    watermarks.
// ---------------------------------------------------------------------------

/// One 40 KB answer read steadily (6.4 KB/s, about 6 s, read timer 1 s),
/// starting `lead` after the request (to vary the phase against the read
/// timer); the client sends its next request `gap` after reading the last
/// byte. The server's queue emptied at most ~100 ms before that last byte
/// (the 512-byte pipe), so the peer's silence since it took its answers
/// is under `gap + 100 ms`, less than the period. Returns a description
/// per case that failed.
async fn next_request_after_slow_take(high: usize, low: usize) -> Vec<String> {
    const LEN: usize = 40_000;
    let mut failures = Vec::new();
    let cases = [0u64, 250, 500, 750]
        .into_iter()
        .flat_map(|lead| [300u64, 700].map(|gap| (lead, gap)));
    for (lead, gap) in cases {
        let (server_io, client_io) = tokio::io::duplex(512);
        let mut builder = QueuedFramed::builder();
        builder.rtimeout(SEC);
        builder.watermarks(high, low);
        let server = spawn_line_server(server_io, builder, big_answers(LEN));
        let (mut rd, mut wr) = tokio::io::split(client_io);
        wr.write_all(b"a\n").await.unwrap();
        tokio::time::sleep(MS(lead)).await;
        let one = answer_of("a", LEN).len() + 1;
        let got = slow_read(&mut rd, one, 128, MS(20)).await;
        if got.len() != one {
            failures.push(format!(
                "lead {lead} gap {gap}: first answer cut at {} bytes",
                got.len()
            ));
            continue;
        }
        tokio::time::sleep(MS(gap)).await;
        let sent = wr.write_all(b"b\n").await;
        let mut second = vec![0u8; one];
        let read = within("b", rd.read_exact(&mut second)).await;
        if sent.is_err() || read.is_err() || !second.starts_with(b"b:") {
            failures.push(format!(
                "lead {lead} ms, gap {gap} ms: request b (sent {sent:?}) got {read:?} {:?}; server: {}",
                String::from_utf8_lossy(&second[..8]),
                state(server).await
            ));
        }
    }
    failures
}

/// Watermarks (32 KB, 16 KB): the low mark is reached with 16 KB still
/// queued. The peer's silence counts from when it has taken the last
/// byte, not from the low mark: a request sent under a period after is
/// answered.
#[tokio::test(start_paused = true)]
async fn read_timer_counts_from_the_take_with_a_nonzero_low_watermark() {
    let failures = next_request_after_slow_take(32 * 1024, 16 * 1024).await;
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Watermarks (64 KB, 64 KB): a 40 KB answer never goes above the low
/// mark (no drain edge at all); the same client is answered.
#[tokio::test(start_paused = true)]
async fn read_timer_counts_from_the_take_without_a_drain_edge() {
    let failures = next_request_after_slow_take(64 * 1024, 64 * 1024).await;
    assert!(failures.is_empty(), "{failures:#?}");
}

/// the same client with the default low mark (0): the
/// drain edge is the take, and every gap under a period is answered.
#[tokio::test(start_paused = true)]
async fn read_timer_counts_from_the_take_with_low_watermark_zero() {
    let failures = next_request_after_slow_take(32 * 1024, 0).await;
    assert!(failures.is_empty(), "{failures:#?}");
}

// ---------------------------------------------------------------------------
// 3. The final flush toward a stalled peer: "the last writes are bounded by
//    the same rules".
// ---------------------------------------------------------------------------

/// Two requests (20 KB of answers), a write timer (1 s), a peer that never
/// reads: a stalled peer, fatal ETIMEDOUT after one period, whether it
/// half-closed after its requests (the stall then meets the last flush) or
/// not.
#[tokio::test(start_paused = true)]
async fn a_stall_at_the_last_flush_is_fatal_like_the_loops_own() {
    let mut outcomes = Vec::new();
    for half_close in [false, true] {
        let (server_io, client_io) = tokio::io::duplex(512);
        let mut builder = QueuedFramed::builder();
        builder.wtimeout(SEC);
        let server = spawn_line_server(server_io, builder, big_answers(10_000));
        let (_rd, mut wr) = tokio::io::split(client_io);
        wr.write_all(b"a\nb\n").await.unwrap();
        if half_close {
            wr.shutdown().await.unwrap();
        }
        let t0 = tokio::time::Instant::now();
        let r = within("server", server).await.unwrap();
        outcomes.push((
            half_close,
            r.as_ref().err().map(|e| (e.is_timeout(), e.is_fatal())),
            t0.elapsed(),
        ));
    }
    for (half_close, outcome, took) in &outcomes {
        assert_eq!(
            *outcome,
            Some((true, true)),
            "half-closed {half_close}: {outcomes:?}"
        );
        assert!(
            *took <= SEC + MS(100),
            "half-closed {half_close}: {outcomes:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// 4. Slow readers, failing services and encoders, a user's own hooks.
// ---------------------------------------------------------------------------

/// A peer that takes one byte of its answer per 900 ms and sends nothing
/// keeps the loop (read and write timers 1 s) for as long as the answer
/// lasts: the transport takes some of it in every period, so the expiries
/// are the server's doing. It gets every byte.
#[tokio::test(start_paused = true)]
async fn one_byte_per_period_reader_keeps_the_loop_until_answer_taken() {
    const LEN: usize = 300;
    let (server_io, client_io) = tokio::io::duplex(64);
    let mut builder = QueuedFramed::builder();
    builder.rtimeout(SEC);
    builder.wtimeout(SEC);
    let server = spawn_line_server(server_io, builder, big_answers(LEN));
    let (mut rd, mut wr) = tokio::io::split(client_io);
    wr.write_all(b"a\n").await.unwrap();
    let want = answer_of("a", LEN).len() + 1;
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    let t0 = tokio::time::Instant::now();
    while got.len() < want {
        tokio::time::sleep(MS(900)).await;
        match within("byte", rd.read(&mut byte)).await {
            Ok(1) => got.push(byte[0]),
            other => panic!("read {other:?} after {} bytes", got.len()),
        }
    }
    assert_eq!(got.len(), want);
    // The queue held about LEN - 64 bytes: that many periods.
    assert!(
        t0.elapsed() > Duration::from_secs(200),
        "{:?}",
        t0.elapsed()
    );
    // Silent now, nothing owed: the read timer ends the loop.
    let r = within("server", server).await.unwrap();
    assert!(
        r.as_ref().is_err_and(|e| e.is_timeout() && !e.is_fatal()),
        "{r:?}"
    );
}

/// with an idle timer instead of a read timer, the peer of
/// the first test (more answers than the high watermark, never reads) is
/// a stalled peer: fatal ETIMEDOUT.
#[tokio::test(start_paused = true)]
async fn idle_timer_ends_loop_for_nonreading_peer_over_high_watermark() {
    let (server_io, client_io) = tokio::io::duplex(512);
    let mut builder = QueuedFramed::builder();
    builder.timeout(SEC);
    let server = spawn_line_server(server_io, builder, big_answers(10_000));
    let (_rd, mut wr) = tokio::io::split(client_io);
    for c in b'a'..b'k' {
        wr.write_all(&[c, b'\n']).await.unwrap();
    }
    let r = within("server", server).await.unwrap();
    assert!(
        r.as_ref().is_err_and(|e| e.is_timeout() && e.is_fatal()),
        "{r:?}"
    );
}

/// a service that panics on one request. The loop's task panics;
/// the peer must at least see the connection end (not wait for ever).
#[tokio::test(start_paused = true)]
async fn panicking_service_closes_the_connection() {
    let (server_io, client_io) = tokio::io::duplex(4096);
    let mut builder = QueuedFramed::builder();
    builder.rtimeout(SEC);
    let svc = tower::service_fn(|line: Utf8Line| async move {
        if line.line() == "boom" {
            panic!("service panicked (on purpose)");
        }
        Ok::<_, Infallible>(line.line().to_owned())
    });
    let server = spawn_line_server(server_io, builder, svc);
    let (mut rd, mut wr) = tokio::io::split(client_io);
    wr.write_all(b"a\n").await.unwrap();
    let mut buf = [0u8; 2];
    within("a", rd.read_exact(&mut buf)).await.unwrap();
    assert_eq!(&buf, b"a\n");
    wr.write_all(b"boom\nc\n").await.unwrap();
    let mut rest = Vec::new();
    let end = within("end of input after the panic", rd.read_to_end(&mut rest)).await;
    assert!(end.is_ok(), "{end:?} {rest:?}");
    let j = within("server", server).await;
    assert!(j.as_ref().is_err_and(|e| e.is_panic()), "{j:?}");
}

/// An encoder that refuses answers equal to "bad".
#[derive(Clone, Default)]
struct Picky;

impl tokio_util::codec::Encoder<String> for Picky {
    type Error = anyframe::Error;
    fn encode(&mut self, item: String, dst: &mut bytes::BytesMut) -> Result<(), Self::Error> {
        // Writes part of the answer before refusing: the refusal must not
        // leave it behind.
        dst.extend_from_slice(b"partial-");
        if item == "bad" {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "refused").into());
        }
        dst.extend_from_slice(item.as_bytes());
        dst.extend_from_slice(b"\n");
        Ok(())
    }
}

/// an encoder that refuses an answer after writing part of it: the
/// answers before it go out whole, nothing of the refused one, nothing
/// after it; the loop ends with a fatal error (not a timer's).
#[tokio::test(start_paused = true)]
async fn refused_answer_leaves_no_partial_bytes() {
    let (server_io, client_io) = tokio::io::duplex(4096);
    let mut builder = QueuedFramed::builder();
    builder.rtimeout(SEC);
    let svc = tower::service_fn(|line: Utf8Line| async move {
        tokio::time::sleep(MS(300)).await;
        Ok::<_, Infallible>(line.line().to_owned())
    });
    let server = tokio::spawn(
        serve(server_io, Utf8LineCodec::new(), Picky, svc)
            .connection(builder)
            .run(),
    );
    let (mut rd, mut wr) = tokio::io::split(client_io);
    wr.write_all(b"a\nbad\nc\n").await.unwrap();
    let mut out = Vec::new();
    within("output", rd.read_to_end(&mut out)).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out), "partial-a\n");
    let r = within("server", server).await.unwrap();
    assert!(
        r.as_ref().is_err_and(|e| e.is_fatal() && !e.is_timeout()),
        "{r:?}"
    );
}

/// `Requests::timeout_reset` from a user's own `on_drain` hook on a
/// spawned Handle (the loop's pattern): a 20 KB write taken slowly (about
/// 3 s) with a 1 s read timer and an `on_timeout` hook that only records;
/// the first read expiry after the drain comes a whole period after it.
#[tokio::test(start_paused = true)]
async fn timeout_reset_from_a_users_drain_hook() {
    use std::sync::{Arc, Mutex};
    use tokio::time::Instant;
    let (ours, peer) = tokio::io::duplex(512);
    let (handle, _driver) = QueuedFramed::builder().rtimeout(SEC).build(ours).spawn();
    let expiries: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let drains: Arc<Mutex<Vec<Instant>>> = Arc::default();
    {
        let expiries = expiries.clone();
        handle.on_timeout(move |which, _q| {
            if which == anyframe::Timeout::Read {
                expiries.lock().unwrap().push(Instant::now());
            }
        });
        let drains = drains.clone();
        handle.on_drain(move |q| {
            drains.lock().unwrap().push(Instant::now());
            q.timeout_reset(anyframe::Timeout::Read);
        });
    }
    handle.push_bytes(vec![b'x'; 20_000]).unwrap();
    let (mut rd, _wr) = tokio::io::split(peer);
    let got = slow_read(&mut rd, 20_000, 128, MS(20)).await;
    assert_eq!(got.len(), 20_000);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let drain = *drains.lock().unwrap().last().expect("a drain edge");
    let after: Vec<Duration> = expiries
        .lock()
        .unwrap()
        .iter()
        .filter(|&&t| t > drain)
        .map(|&t| t - drain)
        .collect();
    assert!(!after.is_empty(), "no read expiry after the drain");
    assert_eq!(after[0], SEC, "expiries after the drain: {after:?}");
}
