//! `Pipelined` and the protocol clients against user code that fails in
//! the middle of a call, and scripted peers that misbehave.

mod support;

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use anyframe::codecs::LineCodec;
use anyframe::{Handle, QueuedFramed, Result, Ticket};
use anyframe_protocols::pipeline::{Pipelined, Protocol, Slot, Step};
use anyframe_protocols::redis::{Cmd, Resp, Value};
use bytes::{BufMut, Bytes, BytesMut};
use support::{LIMIT, pipe, take_commands};
use tokio::io::AsyncWriteExt;
use tower::Service;
use tower::ServiceExt;

/// One line out, one line back; `read_reply` panics for the request
/// `"boom"` (a bug in the protocol's own code).
struct Lines;

impl Protocol for Lines {
    type Request = &'static str;
    type Reply = Bytes;

    fn encode(&self, req: &&'static str, dst: &mut BytesMut) -> Result<()> {
        dst.put_slice(req.as_bytes());
        dst.put_slice(b"\n");
        Ok(())
    }

    fn read_reply(&self, req: &&'static str, handle: &Handle, slot: Slot) -> Ticket<Step<Bytes>> {
        assert_ne!(*req, "boom", "read_reply panics for boom");
        handle.push_response_with(LineCodec::new(), move |line, _| {
            drop(slot);
            Ok(Step::Done(line.into_line()))
        })
    }
}

/// A request whose reply read was never queued (its `read_reply`
/// panicked after the request was written) must not leave its answer for
/// the next request to take: that request gets its own answer, or an
/// error, never the other one's.
#[tokio::test]
async fn a_read_reply_that_panics_never_hands_its_answer_to_the_next_request() {
    let (handle, mut peer) = pipe();
    let c = Pipelined::new(handle, Lines, 16);
    let panicked = std::panic::catch_unwind(AssertUnwindSafe(|| c.send("boom")));
    assert!(panicked.is_err(), "read_reply panicked");
    let next = c.send("next");
    take_commands(&mut peer).await;
    // The peer answers both requests it may have got, in order.
    let _ = peer.write_all(b"answer to boom\nanswer to next\n").await;
    let got = tokio::time::timeout(LIMIT, next)
        .await
        .expect("the next request's reply never resolved");
    if let Ok(line) = got {
        assert_eq!(
            &line[..],
            b"answer to next",
            "the next request took another's answer"
        );
    }
}

/// A Redis client with one slot and a read timeout, on a peer that never
/// answers.
fn silent_redis(max_in_flight: usize) -> (Pipelined<Resp>, tokio::io::DuplexStream) {
    let (io, peer) = tokio::io::duplex(1 << 16);
    let (handle, _driver) = QueuedFramed::builder()
        .rtimeout(Duration::from_secs(1))
        .build(io)
        .spawn();
    (Pipelined::new(handle, Resp::new(), max_in_flight), peer)
}

/// Every slot held by a reply whose future was dropped (never polled), on
/// a server that never answers: with a read timeout set, `ready()` ends
/// with the connection's fatal timeout instead of waiting for ever.
#[tokio::test(start_paused = true)]
async fn ready_does_not_hang_when_every_slot_is_held_by_a_dropped_reply() {
    let (mut c, _peer) = silent_redis(1);
    drop(c.ready().await.unwrap().call(Cmd::new("GET").arg("k")));
    let r = tokio::time::timeout(LIMIT, c.ready()).await;
    let e = r.expect("ready() hung").map(|_| ()).unwrap_err();
    assert!(e.is_fatal(), "{e}");
}

/// The same with the reply dropped half way through its reads (an array
/// whose second element never comes).
#[tokio::test(start_paused = true)]
async fn ready_does_not_hang_when_the_slot_is_held_by_a_reply_dropped_mid_chain() {
    let (mut c, mut peer) = silent_redis(1);
    let reply = c
        .ready()
        .await
        .unwrap()
        .call(Cmd::new("MGET").arg("a").arg("b"));
    take_commands(&mut peer).await;
    peer.write_all(b"*2\r\n$1\r\na\r\n").await.unwrap();
    let mut reply = reply;
    assert!(
        futures::FutureExt::now_or_never(&mut reply).is_none(),
        "half a reply is no reply"
    );
    drop(reply);
    let r = tokio::time::timeout(LIMIT, c.ready()).await;
    let e = r.expect("ready() hung").map(|_| ()).unwrap_err();
    assert!(e.is_fatal(), "{e}");
}

/// A reply awaited behind one whose future was dropped, on a server that
/// answers neither: the awaited one resolves (a timeout), it does not hang.
#[tokio::test(start_paused = true)]
async fn a_reply_behind_a_dropped_one_is_told_the_timeout() {
    let (c, _peer) = silent_redis(4);
    drop(c.send(Cmd::new("GET").arg("a")));
    let second = c.send(Cmd::new("GET").arg("b"));
    let r = tokio::time::timeout(LIMIT, second).await;
    let e = r.expect("the second reply hung").unwrap_err();
    assert!(e.is_timeout(), "{e}");
}

/// A read timeout counts from the last input, and runs while the client
/// idles (TO-2): a request made after a pause shorter than the period
/// must still have the whole period for its reply, as anyframe's
/// `service::Client` gives its calls.
#[tokio::test(start_paused = true)]
async fn a_pause_between_requests_does_not_use_up_the_read_timeout() {
    let (mut c, mut peer) = silent_redis(4);
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(900)).await;
        let reply = c.ready().await.unwrap().call(Cmd::new("PING"));
        take_commands(&mut peer).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        peer.write_all(b"+PONG\r\n").await.unwrap();
        let got = tokio::time::timeout(LIMIT, reply).await.expect("hung");
        assert_eq!(
            got.unwrap_or_else(|e| panic!("round {round}: {e}")),
            anyframe_protocols::redis::Value::Simple("PONG".into())
        );
    }
}

/// A small deterministic generator for the randomised schedules below.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// A Redis-speaking peer: answers each `ECHO x` with the bulk string `x`,
/// in order, written in pieces with pseudo-random pauses between them
/// (now and then past the client's read timeout).
fn slow_echo_redis(mut io: tokio::io::DuplexStream, seed: u64) {
    use tokio::io::AsyncReadExt;
    tokio::spawn(async move {
        let mut rng = Lcg(seed);
        let mut buf = BytesMut::new();
        loop {
            // `*2\r\n$4\r\nECHO\r\n$<n>\r\n<x>\r\n`: the argument is the
            // fifth line.
            let lines: Vec<&[u8]> = buf[..].split(|&b| b == b'\n').collect();
            if lines.len() > 5 {
                let arg = lines[4].strip_suffix(b"\r").unwrap().to_vec();
                let used: usize = lines[..5].iter().map(|l| l.len() + 1).sum();
                let _ = buf.split_to(used);
                let mut answer = format!("${}\r\n", arg.len()).into_bytes();
                answer.extend_from_slice(&arg);
                answer.extend_from_slice(b"\r\n");
                let mut rest = &answer[..];
                while !rest.is_empty() {
                    let n = (1 + rng.below(rest.len() as u64)) as usize;
                    let pause = if rng.below(40) == 0 {
                        1_500
                    } else {
                        rng.below(200)
                    };
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                    if io.write_all(&rest[..n]).await.is_err() {
                        return;
                    }
                    rest = &rest[n..];
                }
                continue;
            }
            let mut chunk = [0u8; 4096];
            match io.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    });
}

/// Requests from several tasks on clones of one Redis client with a read
/// timeout, some given up early, replies cut into pieces with pauses:
/// every reply a request gets is its own.
#[tokio::test(start_paused = true)]
async fn replies_reach_their_own_requests_through_timeouts_and_drops() {
    let mut answered = 0;
    for seed in 1..=8u64 {
        let (io, peer) = tokio::io::duplex(1 << 12);
        slow_echo_redis(peer, seed);
        let (handle, _driver) = QueuedFramed::builder()
            .rtimeout(Duration::from_secs(1))
            .build(io)
            .spawn();
        let client = Pipelined::new(handle, Resp::new(), 4);
        let mut tasks = Vec::new();
        for t in 0..4u64 {
            let mut c = client.clone();
            tasks.push(tokio::spawn(async move {
                let mut rng = Lcg(seed * 31 + t);
                let mut answered = 0;
                for i in 0..30 {
                    let arg = format!("s{seed}-t{t}-{i}");
                    let Ok(c) = c.ready().await else { break };
                    let reply = c.call(Cmd::new("ECHO").arg(&arg));
                    let give_up = Duration::from_millis(rng.below(2_000));
                    match tokio::time::timeout(give_up, reply).await {
                        Ok(Ok(v)) => {
                            assert_eq!(v, Value::Bulk(arg.into()));
                            answered += 1;
                        }
                        Ok(Err(e)) if e.is_fatal() => break,
                        Ok(Err(_)) | Err(_) => {}
                    }
                }
                answered
            }));
        }
        drop(client);
        for t in tasks {
            // Virtual time: an hour of it passes at once if nothing moves.
            answered += tokio::time::timeout(Duration::from_secs(3_600), t)
                .await
                .expect("a caller hung")
                .unwrap();
        }
    }
    assert!(answered > 60, "only {answered} requests answered");
}
