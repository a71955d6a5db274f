//! A read a hook queues while an inline read with a decoder of its own is
//! running (`read_with`, `read_many`, the `Stream`): an `on_drain` hook run
//! by the call's write, an `on_timeout` hook run while it waits. Queued
//! requests get the bytes first (RQ-1), also those queued during the call:
//! the call's own decoder gets what comes after them. Every wait is
//! bounded.

#[path = "support/mock_io.rs"]
mod mock_io;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyframe::codecs::LineCodec;
use anyframe::{Builder, Ticket};
use futures::StreamExt;

const MS: fn(u64) -> Duration = Duration::from_millis;

async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(5), f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: hung"),
    }
}

/// Where a hook leaves the ticket of the read it queued.
type Slot = Arc<Mutex<Option<Ticket<Vec<u8>>>>>;

/// A drain hook that queues one read (once) and keeps its ticket.
fn queue_a_read_on_drain(slot: &Slot) -> impl FnMut(&mut anyframe::Requests<'_>) + Send + 'static {
    let slot = slot.clone();
    move |q| {
        let mut s = slot.lock().unwrap();
        if s.is_none() {
            *s = Some(q.push_read_with(LineCodec::new(), |l, _| Ok(l.line().to_vec())));
        }
    }
}

/// `read_with` writes queued output before decoding (autocork off, WQ-1);
/// that write drains the queue and the `on_drain` hook queues a read. The
/// bytes already buffered ("pong\nreal\n") go to that queued read first
/// (RQ-1): the hook's read gets "pong" and `read_with` gets "real".
#[tokio::test]
async fn a_read_the_drain_hook_queues_during_read_with_goes_first() {
    let (io, peer) = mock_io::pair();
    peer.accept(1 << 20);
    let mut conn = Builder::new().build(io);
    peer.send(b"first\npong\nreal\n");
    let mut d = LineCodec::new();
    assert_eq!(
        within("first", conn.read_with(&mut d))
            .await
            .unwrap()
            .line(),
        b"first"
    );
    let slot: Slot = Arc::default();
    conn.on_drain(queue_a_read_on_drain(&slot));
    conn.push_bytes(&b"ping\n"[..]).unwrap();
    let got = within("read_with", conn.read_with(&mut d)).await.unwrap();
    let t = slot.lock().unwrap().take().expect("the drain hook ran");
    let hooked = within("ticket", conn.wait(t)).await.unwrap();
    assert_eq!(
        (hooked, got.line().to_vec()),
        (b"pong".to_vec(), b"real".to_vec()),
        "(queued read, read_with)"
    );
}

/// The same through the `Stream` (default codec): `poll_next` writes the
/// output the caller queued, the drain hook queues a read, and the
/// `Stream` yields what comes after that read's frame: ticket "pong",
/// `next()` "real" (RQ-1; the default codec's frames come "once no
/// request is queued").
#[tokio::test]
async fn a_read_the_drain_hook_queues_during_stream_next_goes_first() {
    let (io, peer) = mock_io::pair();
    peer.accept(1 << 20);
    let mut conn = Builder::new().build_with_codec(io, LineCodec::new());
    peer.send(b"first\npong\nreal\n");
    assert_eq!(
        within("first", conn.next()).await.unwrap().unwrap().line(),
        b"first"
    );
    let slot: Slot = Arc::default();
    conn.on_drain(queue_a_read_on_drain(&slot));
    conn.push_bytes(&b"ping\n"[..]).unwrap();
    let got = within("next", conn.next()).await.unwrap().unwrap();
    let t = slot.lock().unwrap().take().expect("the drain hook ran");
    let hooked = within("ticket", conn.wait(t)).await.unwrap();
    assert_eq!(
        (hooked, got.line().to_vec()),
        (b"pong".to_vec(), b"real".to_vec()),
        "(queued read, Stream)"
    );
}

/// `rtimeout` with an `on_timeout` keepalive hook that pushes a ping and
/// queues the read of its pong (AE's usual keepalive). The peer's answer
/// ("pong\nreal\n") is already there when `poll_fill` reads again after the
/// hook in the same poll (here the hook's peer answers at once, as a fast
/// peer on another thread can). The queued read gets "pong", `read_with`
/// gets "real" (RQ-1, TO-3: the hook "can queue reads").
#[tokio::test(start_paused = true)]
async fn a_read_the_timeout_hook_queues_during_read_with_goes_first() {
    let (io, peer) = mock_io::pair();
    peer.accept(1 << 20);
    let mut conn = Builder::new().rtimeout(MS(100)).build(io);
    let slot: Slot = Arc::default();
    conn.on_timeout({
        let slot = slot.clone();
        let peer = peer.clone();
        move |_, q| {
            let mut s = slot.lock().unwrap();
            if s.is_none() {
                q.push_bytes(&b"ping\n"[..]).unwrap();
                *s = Some(q.push_read_with(LineCodec::new(), |l, _| Ok(l.line().to_vec())));
                // The peer answers at once.
                peer.send(b"pong\nreal\n");
            }
        }
    });
    let mut d = LineCodec::new();
    let got = within("read_with", conn.read_with(&mut d)).await.unwrap();
    let t = slot.lock().unwrap().take().expect("the timeout hook ran");
    let hooked = within("ticket", conn.wait(t)).await.unwrap();
    assert_eq!(
        (hooked, got.line().to_vec()),
        (b"pong".to_vec(), b"real".to_vec()),
        "(keepalive read, read_with)"
    );
}

/// `read_many` (the batch form of `read_with`, "after every queued
/// request"): its write of the queued output drains the queue, the drain
/// hook queues a read, and the batch then takes every buffered frame.
/// The queued read gets "pong", the batch gets ["real"] (RQ-1).
#[tokio::test]
async fn a_read_the_drain_hook_queues_during_read_many_goes_first() {
    let (io, peer) = mock_io::pair();
    peer.accept(1 << 20);
    let mut conn = Builder::new().build(io);
    peer.send(b"first\npong\nreal\n");
    let mut d = LineCodec::new();
    let mut v = Vec::new();
    assert_eq!(
        within("first", conn.read_many(&mut d, &mut v, 1))
            .await
            .unwrap(),
        1
    );
    let slot: Slot = Arc::default();
    conn.on_drain(queue_a_read_on_drain(&slot));
    conn.push_bytes(&b"ping\n"[..]).unwrap();
    let mut v = Vec::new();
    within("read_many", conn.read_many(&mut d, &mut v, 10))
        .await
        .unwrap();
    assert!(slot.lock().unwrap().is_some(), "the drain hook ran");
    let lines: Vec<Vec<u8>> = v.iter().map(|l| l.line().to_vec()).collect();
    assert_eq!(
        lines,
        vec![b"real".to_vec()],
        "the batch took the queued read's frame"
    );
}
