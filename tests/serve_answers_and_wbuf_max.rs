//! The server loop's answers against the connection's `wbuf_max` (an
//! answer that does not fit yet waits for room, and one that can never fit
//! ends the loop after the answers before it, never closing the connection
//! under them), and a write timer with nothing to write. Paused time;
//! every wait is bounded.

mod support;

use std::convert::Infallible;
use std::future::IntoFuture;
use std::time::Duration;

use anyframe::QueuedFramed;
use anyframe::codecs::{LineCodec, Utf8Line, Utf8LineCodec};
use anyframe::service::serve;
use tokio::io::AsyncWriteExt;

use support::{read_all, within};

/// `wbuf_max` = 1000 (so the high watermark is at most 500); the service
/// answers `s` with 400 bytes and `l` with 700 bytes, both well under the
/// cap. The peer sends `s\nl\n`, half-closes, and starts reading 100 ms
/// later (the transport, a 16-byte duplex, takes almost nothing before).
///
/// The 700-byte answer waits until the queue has room for it under the
/// cap ("a batch of large answers waits ... instead of crossing
/// `wbuf_max`"): both answers arrive, `Ok`.
#[tokio::test(start_paused = true)]
async fn an_answer_under_wbuf_max_waits_for_room_behind_another() {
    let (sio, cio) = tokio::io::duplex(16);
    let mut b = QueuedFramed::builder();
    b.wbuf_max(Some(1000));
    let svc = tower::service_fn(|l: Utf8Line| {
        let n = if l.line() == "s" { 400 } else { 700 };
        std::future::ready(Ok::<_, Infallible>("x".repeat(n)))
    });
    let server = tokio::spawn(
        serve(sio, Utf8LineCodec::new(), LineCodec::new(), svc)
            .connection(b)
            .into_future(),
    );
    let (mut rd, mut wr) = tokio::io::split(cio);
    wr.write_all(b"s\nl\n").await.unwrap();
    wr.shutdown().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let got = within("peer reads to the end", read_all(&mut rd)).await;
    let r = within("server", server).await.unwrap();
    assert_eq!(got.len(), 401 + 701, "bytes the peer got; loop: {r:?}");
    assert!(r.is_ok(), "{r:?}");
}

/// `wbuf_max` = 1000; requests `a`, `b`, `big`, `c` in one batch; the
/// service answers `big` with 2000 bytes (more than the cap, so it can
/// never be queued) and the others with one short line each.
///
/// As an answer the encoder refuses ("made fatal ..., after the answers
/// before it"): the peer gets `A\nB\n`, then the connection closes and
/// the loop returns an error.
#[tokio::test(start_paused = true)]
async fn an_answer_over_wbuf_max_ends_the_loop_after_the_answers_before_it() {
    let (sio, cio) = tokio::io::duplex(1 << 16);
    let mut b = QueuedFramed::builder();
    b.wbuf_max(Some(1000));
    let svc = tower::service_fn(|l: Utf8Line| {
        let s = if l.line() == "big" {
            "x".repeat(2000)
        } else {
            l.line().to_uppercase()
        };
        std::future::ready(Ok::<_, Infallible>(s))
    });
    let server = tokio::spawn(
        serve(sio, Utf8LineCodec::new(), LineCodec::new(), svc)
            .connection(b)
            .into_future(),
    );
    let (rd, mut wr) = tokio::io::split(cio);
    wr.write_all(b"a\nb\nbig\nc\n").await.unwrap();
    let got = within("peer reads to the end", read_all(rd)).await;
    let r = within("server", server).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&got), "A\nB\n", "loop: {r:?}");
    assert!(r.is_err());
}

/// A server with only a write timer (1 s). The peer sends one request,
/// `hello\n`, a byte every 300 ms (1.8 s in all: never silent for more
/// than 300 ms), then half-closes.
///
/// A write timer says nothing of the peer while nothing waits to be
/// written: the request is read and answered, `HELLO\n`, and the loop
/// ends `Ok` at the end of input, as with an idle or read timer (LC-6).
#[tokio::test(start_paused = true)]
async fn a_write_timer_does_not_end_a_peer_still_sending_its_request() {
    let (sio, cio) = tokio::io::duplex(1024);
    let mut b = QueuedFramed::builder();
    b.wtimeout(Duration::from_secs(1));
    let server = tokio::spawn(
        serve(
            sio,
            Utf8LineCodec::new(),
            LineCodec::new(),
            tower::service_fn(|l: Utf8Line| {
                std::future::ready(Ok::<_, Infallible>(l.line().to_uppercase()))
            }),
        )
        .connection(b)
        .into_future(),
    );
    let (rd, mut wr) = tokio::io::split(cio);
    for &c in b"hello\n" {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = wr.write_all(&[c]).await;
    }
    let _ = wr.shutdown().await;
    let got = within("peer reads to the end", read_all(rd)).await;
    let r = within("server", server).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&got), "HELLO\n", "loop: {r:?}");
    assert!(r.is_ok(), "{r:?}");
}
