//! `Pipelined` and the protocol clients against user code that fails in
//! the middle of a call, and scripted peers that misbehave.

mod support;

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use anyframe::codecs::LineCodec;
use anyframe::{Handle, QueuedFramed, Result, Ticket};
use anyframe_protocols::pipeline::{Pipelined, Protocol, Slot, Step};
use anyframe_protocols::redis::{Cmd, Resp};
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
