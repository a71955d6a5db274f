//! The server loop's timers against a peer that takes its answers slowly
//! (docs/semantics.md, LC-6): a peer taking output is not a silent one.

#[path = "support/serving.rs"]
mod serving;
mod support;

use std::convert::Infallible;
use std::time::Duration;

use anyframe::QueuedFramed;
use anyframe::codecs::{LineCodec, Utf8Line, Utf8LineCodec};
use anyframe::service::{BadRequest, serve};
use serving::{MS, answer_of, big_answers, slow_read, spawn_line_server};
use support::within;
use tokio::io::AsyncWriteExt;

/// Reads `n` lines (or up to end of input) from `rd`.
async fn read_lines(rd: impl tokio::io::AsyncRead + Unpin, n: usize) -> Vec<String> {
    use tokio::io::AsyncBufReadExt;
    let mut rd = tokio::io::BufReader::new(rd);
    let mut got = Vec::new();
    for _ in 0..n {
        let mut line = String::new();
        if within("line", rd.read_line(&mut line)).await.unwrap_or(0) == 0 {
            break;
        }
        got.push(line.trim_end().to_owned());
    }
    got
}

/// One request, one 40 KB answer, only a read timeout (1 s) set; the
/// client sends nothing more and reads the answer steadily at 6.4 KB/s
/// (about 6 s): a peer taking its answer is not silent, and gets all of
/// it.
#[tokio::test(start_paused = true)]
async fn serve_read_timer_spares_a_peer_taking_its_answer() {
    const LEN: usize = 40_000;
    let (server_io, client_io) = tokio::io::duplex(512);
    let mut builder = QueuedFramed::builder();
    builder.rtimeout(Duration::from_secs(1));
    let server = spawn_line_server(server_io, builder, big_answers(LEN));
    let (mut rd, mut wr) = tokio::io::split(client_io);
    wr.write_all(b"a\n").await.unwrap();
    let want = answer_of("a", LEN).len() + 1;
    let got = slow_read(&mut rd, want, 128, MS(20)).await;
    let server = within("server", server).await.unwrap();
    assert_eq!(
        got.len(),
        want,
        "the client read steadily and got {} of the {want} bytes of its answer; server: {server:?}",
        got.len()
    );
}

/// Backpressure and the read timer: the first answer (10 KB) is above the
/// high watermark (2 KB), so the loop stops reading; the client sends its
/// second request 100 ms later and reads the first answer steadily (about
/// 1.6 s, longer than the 1 s read timer). The quiet is the loop's own:
/// the second request is read and answered.
#[tokio::test(start_paused = true)]
async fn serve_reads_a_request_sent_during_backpressure() {
    const LEN: usize = 10_000;
    let (server_io, client_io) = tokio::io::duplex(512);
    let mut builder = QueuedFramed::builder();
    builder.rtimeout(Duration::from_secs(1));
    builder.watermarks(2048, 0);
    let server = spawn_line_server(server_io, builder, big_answers(LEN));
    let (mut rd, mut wr) = tokio::io::split(client_io);
    wr.write_all(b"a\n").await.unwrap();
    tokio::time::sleep(MS(100)).await;
    wr.write_all(b"b\n").await.unwrap();
    let one = answer_of("a", LEN).len() + 1;
    let got = slow_read(&mut rd, 2 * one, 128, MS(20)).await;
    let server_state = if server.is_finished() {
        format!("{:?}", server.await.unwrap())
    } else {
        "running".to_owned()
    };
    let text = String::from_utf8_lossy(&got);
    let answers: Vec<&str> = text
        .lines()
        .map(|l| l.split(':').next().unwrap_or(""))
        .collect();
    assert_eq!(
        answers,
        ["a", "b"],
        "got {} bytes; server: {server_state}",
        got.len()
    );
}

/// The final flush toward a peer that never reads, with only a read
/// timer set: the read timer bounds it (the loop ends, with ETIMEDOUT).
#[tokio::test(start_paused = true)]
async fn final_flush_to_a_peer_that_never_reads_is_bounded_by_the_read_timer() {
    let (server_io, client_io) = tokio::io::duplex(512);
    let mut builder = QueuedFramed::builder();
    builder.rtimeout(Duration::from_secs(1));
    let server = spawn_line_server(server_io, builder, big_answers(10_000));
    let (_rd, mut wr) = tokio::io::split(client_io);
    wr.write_all(b"a\nb\n").await.unwrap();
    wr.shutdown().await.unwrap();
    let r = within("server", server).await.unwrap();
    assert!(r.as_ref().is_err_and(|e| e.is_timeout()), "{r:?}");
}

/// on_bad_request answers, max_in_flight(1), a slow service and an
/// idle timer shorter than the service: answers in request order, then
/// the quiet ends the loop with the timer.
#[tokio::test(start_paused = true)]
async fn bad_request_replies_keep_order_under_max_in_flight_one() {
    let (server_io, client_io) = tokio::io::duplex(4096);
    let mut builder = QueuedFramed::builder();
    builder.timeout(Duration::from_secs(1));
    let svc = tower::service_fn(|line: Utf8Line| async move {
        tokio::time::sleep(MS(1500)).await;
        Ok::<_, Infallible>(line.line().to_owned())
    });
    let lines = LineCodec::builder()
        .max_length(4)
        .overflow(anyframe::codecs::OverflowPolicy::Discard)
        .build_utf8()
        .unwrap();
    let server = tokio::spawn(
        serve(server_io, lines, LineCodec::new(), svc)
            .max_in_flight(1)
            .on_bad_request(|_| BadRequest::Reply("ERR".to_owned()))
            .connection(builder)
            .run(),
    );
    let (rd, mut wr) = tokio::io::split(client_io);
    wr.write_all(b"a\nxxxxxxxxxx\nb\nyyyyyyyyy\nc\n")
        .await
        .unwrap();
    let got = read_lines(rd, 5).await;
    assert_eq!(got, ["a", "ERR", "b", "ERR", "c"]);
    let r = within("server", server).await.unwrap();
    assert!(r.as_ref().is_err_and(|e| e.is_timeout()), "{r:?}");
}

/// A shutdown signal while a read is half way through a request,
/// with a write timer: the whole requests before it are answered, and the
/// loop ends.
#[tokio::test(start_paused = true)]
async fn shutdown_with_a_half_request_buffered() {
    let (server_io, client_io) = tokio::io::duplex(4096);
    let mut builder = QueuedFramed::builder();
    builder.wtimeout(Duration::from_secs(1));
    let svc = tower::service_fn(|line: Utf8Line| async move {
        tokio::time::sleep(MS(300)).await;
        Ok::<_, Infallible>(line.line().to_owned())
    });
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        serve(server_io, Utf8LineCodec::new(), LineCodec::new(), svc)
            .with_shutdown(async move {
                let _ = rx.await;
            })
            .connection(builder)
            .run(),
    );
    let (rd, mut wr) = tokio::io::split(client_io);
    wr.write_all(b"a\nb\nhal").await.unwrap();
    tokio::time::sleep(MS(100)).await;
    tx.send(()).unwrap();
    assert_eq!(read_lines(rd, 2).await, ["a", "b"]);
    let r = within("server", server).await.unwrap();
    assert!(r.is_ok(), "{r:?}");
}
