//! The server loop's timers (docs/semantics.md, LC-6) and a tower client's
//! timeouts (TO-3, TO-6): a service at work is not a quiet peer, an answer
//! that lands on a timer's expiry is delivered, and a stalled peer still
//! ends the loop.

#[path = "support/serving.rs"]
mod serving;
mod support;

use std::convert::Infallible;
use std::time::Duration;

use anyframe::codecs::{LineCodec, Utf8Line, Utf8LineCodec};
use anyframe::service::serve;
use anyframe::{Error, QueuedFramed, Timeout};
use bytes::BytesMut;
use serving::{builder_with, spawn_line_server};
use support::within;
use tokio_util::codec::Decoder;

/// A service that takes `delay` per request and echoes it.
fn slow_echo(
    delay: Duration,
) -> impl tower::Service<
    Utf8Line,
    Response = String,
    Error = Infallible,
    Future = impl Future<Output = Result<String, Infallible>> + Send,
> + Send
+ Clone {
    tower::service_fn(move |line: Utf8Line| async move {
        tokio::time::sleep(delay).await;
        Ok::<_, Infallible>(line.line().to_owned())
    })
}

/// The service answers at the very instant the connection's write or idle
/// timer expires (it took exactly one period). The peer reads every
/// answer at once: no answer waited unwritten when the timer expired, so
/// the answer is delivered (not taken for a stalled peer's).
#[tokio::test(start_paused = true)]
async fn serve_answer_queued_at_a_write_or_idle_expiry_is_not_a_stalled_peer() {
    let mut outcomes = Vec::new();
    for which in [Timeout::Idle, Timeout::Write] {
        let (server_io, client_io) = tokio::io::duplex(4096);
        let period = Duration::from_secs(1);
        let server = tokio::spawn(
            serve(
                server_io,
                Utf8LineCodec::new(),
                LineCodec::new(),
                slow_echo(period),
            )
            .connection(builder_with(which, period))
            .run(),
        );
        let mut client = QueuedFramed::new(client_io);
        client.write(LineCodec::new(), "a").await.unwrap();
        let answer = within("a", client.read(Utf8LineCodec::new())).await;
        let server_state = if server.is_finished() {
            format!("{:?}", server.await.unwrap())
        } else {
            "running".to_owned()
        };
        if answer.as_ref().map(|l| l.line()).ok() != Some("a") {
            outcomes.push(format!(
                "{which:?}: the answer was {answer:?}; server: {server_state}"
            ));
        }
    }
    assert!(outcomes.is_empty(), "{outcomes:#?}");
}

/// The same instant for the read timer: the service answers as the read
/// timer expires. The read timeout counts the peer's silence from the
/// last answer, so the next request, 300 ms after it, is answered.
#[tokio::test(start_paused = true)]
async fn serve_answer_queued_at_a_read_expiry_keeps_the_loop() {
    let (server_io, client_io) = tokio::io::duplex(4096);
    let period = Duration::from_secs(1);
    let server = tokio::spawn(
        serve(
            server_io,
            Utf8LineCodec::new(),
            LineCodec::new(),
            slow_echo(period),
        )
        .connection(builder_with(Timeout::Read, period))
        .run(),
    );
    let mut client = QueuedFramed::new(client_io);
    client.write(LineCodec::new(), "a").await.unwrap();
    let a = within("a", client.read(Utf8LineCodec::new())).await;
    assert_eq!(a.as_ref().map(|l| l.line()).ok(), Some("a"), "{a:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = match client.write(LineCodec::new(), "b").await {
        Ok(()) => within("b", client.read(Utf8LineCodec::new()))
            .await
            .map(|l| l.line().to_owned()),
        Err(e) => Err(e),
    };
    let server_state = if server.is_finished() {
        format!("{:?}", server.await.unwrap())
    } else {
        "running".to_owned()
    };
    assert_eq!(
        b.as_deref().ok(),
        Some("b"),
        "the next request got {b:?}; server: {server_state}"
    );
}

/// A line decoder that skips blank lines before a request (as HTTP/1.1
/// servers ignore a CRLF before a request-line, RFC 9112 §2.2): it
/// consumes them and asks for more.
#[derive(Clone, Default)]
struct SkipsBlankLines;

impl Decoder for SkipsBlankLines {
    type Item = String;
    type Error = Error;
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<String>, Error> {
        while src.first() == Some(&b'\n') {
            let _ = src.split_to(1);
        }
        match src.iter().position(|&b| b == b'\n') {
            Some(i) => {
                let line = src.split_to(i + 1);
                Ok(Some(String::from_utf8_lossy(&line[..i]).into_owned()))
            }
            None => Ok(None),
        }
    }
}

/// A client sends a request, then (in a later segment) a blank line (a
/// separator the decoder skips, so its read has consumed input), the
/// service takes 1.8 periods, then the client sends its next request
/// 300 ms after the answer: a timer that expires while the service owes
/// answers ends nothing, whatever the loop's read has consumed.
#[tokio::test(start_paused = true)]
async fn serve_timer_during_service_work_after_a_skipped_separator_keeps_the_loop() {
    let (ok, outcomes) =
        separator_then_slow_service(1800, &[Timeout::Read, Timeout::Idle, Timeout::Write]).await;
    assert!(ok, "{outcomes:#?}");
}

/// As above with a service that takes 2.5 periods (two expiries while it
/// works): the answer to the request already read is delivered; the
/// connection is not closed under the service (TO-6 has no say: no read
/// is told a timeout).
#[tokio::test(start_paused = true)]
async fn serve_answers_a_request_read_however_many_periods_the_service_takes() {
    let (ok, outcomes) = separator_then_slow_service(2500, &[Timeout::Read, Timeout::Idle]).await;
    assert!(ok, "{outcomes:#?}");
}

async fn separator_then_slow_service(service_ms: u64, timers: &[Timeout]) -> (bool, Vec<String>) {
    let mut outcomes = Vec::new();
    let mut all_good = true;
    for &which in timers {
        let (server_io, client_io) = tokio::io::duplex(4096);
        let period = Duration::from_secs(1);
        let slow = tower::service_fn(move |line: String| async move {
            tokio::time::sleep(Duration::from_millis(service_ms)).await;
            Ok::<_, Infallible>(line)
        });
        let server = tokio::spawn(
            serve(server_io, SkipsBlankLines, LineCodec::new(), slow)
                .connection(builder_with(which, period))
                .run(),
        );
        let mut client = QueuedFramed::new(client_io);
        let mut got = Vec::new();
        for req in ["a", "b"] {
            // The request, then its separator a moment later (its own
            // segment).
            let mut sent = client.write(LineCodec::new(), req).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            if sent.is_ok() {
                sent = client.push_bytes(&b"\n"[..]);
            }
            let flushed = client.flush().await;
            let answer = match (sent, flushed) {
                (Ok(()), Ok(())) => within(req, client.read(Utf8LineCodec::new()))
                    .await
                    .map(|l| l.line().to_owned()),
                (Err(e), _) | (_, Err(e)) => Err(e),
            };
            got.push(answer.map_err(|e| e.to_string()));
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let server_state = if server.is_finished() {
            format!("{:?}", server.await.unwrap())
        } else {
            "running".to_owned()
        };
        outcomes.push(format!(
            "{which:?}: answers {got:?}; server: {server_state}"
        ));
        all_good &= got == vec![Ok("a".to_owned()), Ok("b".to_owned())];
    }
    (all_good, outcomes)
}

/// A tower client whose call is still awaited: the call hears the timeout (non-fatal), poll_ready hears nothing, the
/// late answer is read and dropped, and the connection goes on.
#[tokio::test(start_paused = true)]
async fn client_awaited_call_hears_the_timeout_and_connection_goes_on() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tower::{Service, ServiceExt};
    let (ours, mut peer) = tokio::io::duplex(1 << 16);
    let (handle, _driver) = QueuedFramed::builder()
        .rtimeout(Duration::from_secs(1))
        .build(ours)
        .spawn();
    let mut client = anyframe::service::ClientBuilder::default()
        .max_in_flight(1)
        .build(handle.clone(), LineCodec::new(), |_: &String| {
            LineCodec::new()
        });
    let call = within("ready", client.ready())
        .await
        .unwrap()
        .call("q1".into());
    let mut buf = [0u8; 64];
    let _ = peer.read(&mut buf).await.unwrap();
    let waiter = tokio::spawn(async move {
        let r = client.ready().await.map(|_| ());
        (client, r)
    });
    let e = within("call", call).await.unwrap_err();
    assert!(!e.is_fatal(), "{e:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    peer.write_all(b"late\n").await.unwrap();
    let (mut client, r) = within("waiter", waiter).await.unwrap();
    assert!(r.is_ok(), "{r:?}");
    let next = client.call("q2".into());
    let _ = peer.read(&mut buf).await.unwrap();
    peer.write_all(b"a2\n").await.unwrap();
    assert_eq!(within("q2", next).await.unwrap().line(), b"a2");
    assert!(!handle.is_closed());
}

/// max_in_flight 1, two requests pipelined in one segment, a
/// service of 2.5 periods each: both answered, then the quiet ends the
/// loop with the non-fatal timer.
#[tokio::test(start_paused = true)]
async fn serve_max_in_flight_one_slow_service_pipelined() {
    for which in [Timeout::Read, Timeout::Idle, Timeout::Write] {
        let (server_io, client_io) = tokio::io::duplex(4096);
        let period = Duration::from_secs(1);
        let server = tokio::spawn(
            serve(
                server_io,
                Utf8LineCodec::new(),
                LineCodec::new(),
                slow_echo(Duration::from_millis(2500)),
            )
            .max_in_flight(1)
            .connection(builder_with(which, period))
            .run(),
        );
        let mut client = QueuedFramed::new(client_io);
        client.push_bytes(&b"a\nb\n"[..]).unwrap();
        client.flush().await.unwrap();
        for req in ["a", "b"] {
            let got = within(req, client.read(Utf8LineCodec::new())).await;
            assert_eq!(
                got.as_ref().map(|l| l.line()).ok(),
                Some(req),
                "{which:?}: {got:?}"
            );
        }
        let e = within("server", server).await.unwrap().unwrap_err();
        assert!(e.is_timeout() && !e.is_fatal(), "{which:?}: {e:?}");
    }
}

/// A shutdown signal while a slow service works, with a timer
/// shorter than the service: the answer still goes out, the loop ends Ok.
#[tokio::test(start_paused = true)]
async fn serve_shutdown_during_slow_service() {
    for which in [Timeout::Read, Timeout::Idle, Timeout::Write] {
        let (server_io, client_io) = tokio::io::duplex(4096);
        let period = Duration::from_secs(1);
        let server = tokio::spawn(
            serve(
                server_io,
                Utf8LineCodec::new(),
                LineCodec::new(),
                slow_echo(Duration::from_millis(2500)),
            )
            .with_shutdown(tokio::time::sleep(Duration::from_millis(1500)))
            .connection(builder_with(which, period))
            .run(),
        );
        let mut client = QueuedFramed::new(client_io);
        client.write(LineCodec::new(), "a").await.unwrap();
        let got = within("a", client.read(Utf8LineCodec::new())).await;
        assert_eq!(
            got.as_ref().map(|l| l.line()).ok(),
            Some("a"),
            "{which:?}: {got:?}"
        );
        let r = within("server", server).await.unwrap();
        assert!(r.is_ok(), "{which:?}: {r:?}");
    }
}

/// Big answers above the high watermark, a peer that reads them
/// slowly but steadily, and a slow service: every answer arrives.
#[tokio::test(start_paused = true)]
async fn serve_backpressure_slow_reader_slow_service() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    for which in [Timeout::Read, Timeout::Idle, Timeout::Write] {
        let (server_io, client_io) = tokio::io::duplex(512);
        let mut builder = builder_with(which, Duration::from_secs(1));
        builder.watermarks(2048, 0);
        let svc = tower::service_fn(|line: Utf8Line| async move {
            if line.line().starts_with('s') {
                tokio::time::sleep(Duration::from_millis(2500)).await;
            }
            Ok::<_, Infallible>(format!("{}:{}", line.line(), "y".repeat(3000)))
        });
        let server = spawn_line_server(server_io, builder, svc);
        let (rd, mut wr) = tokio::io::split(client_io);
        wr.write_all(b"f1\nf2\ns3\nf4\ns5\n").await.unwrap();
        let mut rd = tokio::io::BufReader::with_capacity(128, rd);
        let mut got = Vec::new();
        for _ in 0..5 {
            let mut line = String::new();
            // Slow: 128 bytes at a time, with pauses.
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let buf = within("read", rd.fill_buf()).await.unwrap();
                if buf.is_empty() {
                    break;
                }
                let n = buf
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(buf.len(), |i| i + 1);
                line.push_str(std::str::from_utf8(&buf[..n]).unwrap());
                rd.consume(n);
                if line.ends_with('\n') {
                    break;
                }
            }
            got.push(line.split(':').next().unwrap().to_owned());
        }
        assert_eq!(got, ["f1", "f2", "s3", "f4", "s5"], "{which:?}");
        let r = within("server", server).await.unwrap();
        assert!(
            r.as_ref().is_err_and(|e| e.is_timeout()),
            "{which:?}: {r:?}"
        );
    }
}

/// The server loop's own advice: "Bound a service that may never answer
/// with a timeout layer (`tower::timeout::Timeout`), whose error
/// `map_errors` can turn into an answer." With the layer's bound equal to
/// the connection's timer (both count from the request's arrival), the
/// error answer lands on the timer's expiry: it is delivered, and the next
/// request answered, under each of the three timers.
#[tokio::test(start_paused = true)]
async fn serve_timeout_layer_equal_to_the_connection_timer_delivers_its_answer() {
    let mut failures = Vec::new();
    for which in [Timeout::Read, Timeout::Idle, Timeout::Write] {
        let (server_io, client_io) = tokio::io::duplex(4096);
        let period = Duration::from_secs(1);
        let never = tower::service_fn(|_: Utf8Line| async move {
            std::future::pending::<()>().await;
            Ok::<String, Infallible>(String::new())
        });
        let bounded = tower::timeout::Timeout::new(never, period);
        let server = tokio::spawn(
            serve(server_io, Utf8LineCodec::new(), LineCodec::new(), bounded)
                .map_errors(|_| Ok("ERR busy".to_owned()))
                .connection(builder_with(which, period))
                .run(),
        );
        let mut client = QueuedFramed::new(client_io);
        let mut got = Vec::new();
        for req in ["a", "b"] {
            let answer = match client.write(LineCodec::new(), req).await {
                Ok(()) => within(req, client.read(Utf8LineCodec::new()))
                    .await
                    .map(|l| l.line().to_owned()),
                Err(e) => Err(e),
            };
            got.push(answer.map_err(|e| e.to_string()));
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        if got != [Ok("ERR busy".to_owned()), Ok("ERR busy".to_owned())] {
            let server_state = if server.is_finished() {
                format!("{:?}", server.await.unwrap())
            } else {
                "running".to_owned()
            };
            failures.push(format!("{which:?}: {got:?}; server: {server_state}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
