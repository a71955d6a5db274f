//! The server loop's expiries against the write timer's stamp (LC-6, last
//! paragraph): an expiry of the write timer moves its stamp as a write
//! does, and must not pass for one.

#[path = "support/serving.rs"]
mod serving;
mod support;

use std::convert::Infallible;
use std::time::Duration;

use anyframe::QueuedFramed;
use anyframe::codecs::{LineCodec, Utf8Line};
use bytes::BytesMut;
use serving::{MS, SEC, spawn_line_server};
use tokio::io::AsyncWriteExt;
use tokio_util::codec::Encoder;

/// The bytes `LineCodec` writes for `line` (its end of line included).
fn wire_len(line: &str) -> usize {
    let mut dst = BytesMut::new();
    LineCodec::new().encode(line, &mut dst).unwrap();
    dst.len()
}

/// `a`: answered at once; `b`: after `b_after`; anything else: after 100 s.
/// Answers of `b` and later are 200 bytes.
fn staged(
    a_len: usize,
    b_after: Duration,
) -> impl tower::Service<
    Utf8Line,
    Response = String,
    Error = Infallible,
    Future = impl Future<Output = Result<String, Infallible>> + Send,
> + Send
+ Clone {
    tower::service_fn(move |line: Utf8Line| {
        let line = line.line().to_owned();
        async move {
            match line.as_str() {
                "a" => Ok("a".repeat(a_len)),
                "b" => {
                    tokio::time::sleep(b_after).await;
                    Ok("b".repeat(200))
                }
                _ => {
                    tokio::time::sleep(Duration::from_secs(100)).await;
                    Ok("c".repeat(200))
                }
            }
        }
    })
}

/// Read timer 1 s, write timer 2.5 s, watermarks 16/8, a 64-byte pipe.
/// The peer sends `a`, `b`, `c` and never reads; `a`'s answer fills the
/// pipe at t=0 (the last write). At 2.5 s the write timer expires while the
/// service works with nothing unwritten: dropped, and its stamp moves. At
/// 2.7 s `b`'s 200-byte answer is queued and the pipe takes none of it. At
/// 3.0 s the read timer expires: nothing was written for three read
/// periods, so it is a stalled peer, and the loop ends then.
#[tokio::test(start_paused = true)]
async fn a_dropped_write_expiry_does_not_pass_for_a_write() {
    const PIPE: usize = 64;
    // `a`'s answer on the wire is exactly the pipe's size.
    let a_len = PIPE - wire_len("");
    assert_eq!(wire_len(&"a".repeat(a_len)), PIPE);
    let (server_io, client_io) = tokio::io::duplex(PIPE);
    let mut builder = QueuedFramed::builder();
    builder.rtimeout(SEC).wtimeout(MS(2500)).watermarks(16, 8);
    let server = spawn_line_server(server_io, builder, staged(a_len, MS(2700)));
    let (_rd, mut wr) = tokio::io::split(client_io);
    wr.write_all(b"a\nb\nc\n").await.unwrap();
    let (ended, r) = end_of(server).await;
    assert!(
        ended < MS(3500) && r.as_ref().is_err_and(|e| e.is_timeout() && e.is_fatal()),
        "no write since t=0, `b`'s answer unwritten since 2.7 s and above the high \
         watermark: the read expiry at 3.0 s must end the loop with a fatal ETIMEDOUT; \
         it ended at {ended:?} with {r:?}"
    );
}

/// When the server task ended (seen within 100 ms, from now), and its outcome.
async fn end_of(
    server: tokio::task::JoinHandle<anyframe::Result<()>>,
) -> (Duration, anyframe::Result<()>) {
    let t0 = tokio::time::Instant::now();
    while !server.is_finished() {
        assert!(t0.elapsed() < Duration::from_secs(60), "never ended");
        tokio::time::sleep(MS(100)).await;
    }
    (t0.elapsed(), server.await.unwrap())
}

/// The same peer with a
/// write timer of 10 s, which does not expire before 3.0 s: the read
/// expiry at 3.0 s ends the loop with a fatal `ETIMEDOUT`.
#[tokio::test(start_paused = true)]
async fn a_write_timer_that_has_not_expired_changes_nothing() {
    const PIPE: usize = 64;
    let a_len = PIPE - wire_len("");
    let (server_io, client_io) = tokio::io::duplex(PIPE);
    let mut builder = QueuedFramed::builder();
    builder.rtimeout(SEC).wtimeout(MS(10_000)).watermarks(16, 8);
    let server = spawn_line_server(server_io, builder, staged(a_len, MS(2700)));
    let (_rd, mut wr) = tokio::io::split(client_io);
    wr.write_all(b"a\nb\nc\n").await.unwrap();
    let (ended, r) = end_of(server).await;
    assert!(
        ended < MS(3500) && r.as_ref().is_err_and(|e| e.is_timeout() && e.is_fatal()),
        "ended at {ended:?} with {r:?}"
    );
}

/// the same setup without the write timer. Nothing moves
/// the write stamp but writes, and the read expiry at 3.0 s ends the loop
/// with a fatal `ETIMEDOUT`: the rule holds when only a read timer is set.
#[tokio::test(start_paused = true)]
async fn without_a_write_timer_the_read_expiry_ends_the_stall_at_once() {
    const PIPE: usize = 64;
    let a_len = PIPE - wire_len("");
    let (server_io, client_io) = tokio::io::duplex(PIPE);
    let mut builder = QueuedFramed::builder();
    builder.rtimeout(SEC).watermarks(16, 8);
    let server = spawn_line_server(server_io, builder, staged(a_len, MS(2700)));
    let (_rd, mut wr) = tokio::io::split(client_io);
    wr.write_all(b"a\nb\nc\n").await.unwrap();
    tokio::time::sleep(MS(3200)).await;
    assert!(server.is_finished(), "still running at 3.2 s");
    let r = server.await.unwrap();
    assert!(
        r.as_ref().is_err_and(|e| e.is_timeout() && e.is_fatal()),
        "{r:?}"
    );
}

/// a peer silent with nothing owed gets at least one read
/// period and less than two after the last byte of its answer was taken,
/// also with a write timer longer than the read period (its expiries are
/// not dropped: nothing is owed, so it is the peer's).
#[tokio::test(start_paused = true)]
async fn silent_peer_gets_one_to_two_periods_after_its_answer() {
    let (server_io, client_io) = tokio::io::duplex(1 << 16);
    let mut builder = QueuedFramed::builder();
    builder.rtimeout(SEC).wtimeout(MS(5000));
    let server = spawn_line_server(server_io, builder, staged(10, MS(0)));
    let (_rd, mut wr) = tokio::io::split(client_io);
    wr.write_all(b"a\n").await.unwrap();
    let t0 = tokio::time::Instant::now();
    let r = support::within("server", server).await.unwrap();
    let took = t0.elapsed();
    assert!(
        r.as_ref().is_err_and(|e| e.is_timeout() && !e.is_fatal()),
        "{r:?}"
    );
    assert!(took >= SEC && took < 2 * SEC, "{took:?}");
}

/// a peer that never reads its answers but keeps sending a byte of a
/// request that never ends (no newline), every half period; only a read
/// timer. LC-6: "a read timer alone bounds a peer that never reads".
#[tokio::test(start_paused = true)]
async fn a_peer_that_never_reads_but_drips_request_bytes_is_bounded_by_the_read_timer() {
    let (server_io, client_io) = tokio::io::duplex(512);
    let mut builder = QueuedFramed::builder();
    builder.rtimeout(SEC);
    let server = spawn_line_server(server_io, builder, serving::big_answers(10_000));
    let (_rd, mut wr) = tokio::io::split(client_io);
    for c in b'a'..b'k' {
        wr.write_all(&[c, b'\n']).await.unwrap();
    }
    let t0 = tokio::time::Instant::now();
    while !server.is_finished() && t0.elapsed() < Duration::from_secs(30) {
        let _ = wr.write_all(b"x").await;
        tokio::time::sleep(MS(500)).await;
    }
    let took = t0.elapsed();
    let done = server.is_finished();
    let r = if done {
        format!("{:?}", server.await.unwrap())
    } else {
        server.abort();
        "still running".into()
    };
    assert!(
        done && took <= 3 * SEC,
        "100 KB of answers never taken (over the 64 KB high watermark); the peer only \
         sends a byte of an unfinished line every 500 ms; after {took:?}: {r}"
    );
}
