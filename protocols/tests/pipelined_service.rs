//! The pipelined clients as tower Services around a connection that ends
//! (HTTP `Connection: close` either way, TO-6), and the Redis `Subscriber`
//! after its fatal error.

mod support;

use anyframe::{ErrorKind, QueuedFramed};
use anyframe_protocols::http::{Http, Request};
use anyframe_protocols::pipeline::Pipelined;
use anyframe_protocols::redis::{Cmd, Resp, Subscriber, Value};
use support::{LIMIT, MS, body, pipe, pipe_rtimeout, take_commands};
use tokio::io::AsyncWriteExt;
use tower::{Service, ServiceExt};

const OK_CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx";
const OK_A: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na";

fn http(max_in_flight: usize) -> (Pipelined<Http>, tokio::io::DuplexStream) {
    let (handle, peer) = pipe();
    (Pipelined::new(handle, Http::new("h"), max_in_flight), peer)
}

fn close_req() -> Request {
    Request::get("/last").header("Connection", "close")
}

/// A clone that reserved the only slot with `ready()` (tower allows
/// holding a reservation before `call`) keeps it after the connection is
/// closed by a `Connection: close` response; another clone's `poll_ready`
/// still reports the closed connection instead of waiting for ever.
#[tokio::test(start_paused = true)]
async fn poll_ready_of_a_clone_sees_a_closed_connection_while_another_holds_the_slot() {
    let (mut a, mut peer) = http(1);
    let mut b = a.clone();
    // `a` reserves the only slot and has not called yet.
    a.ready().await.unwrap();
    // A request outside the slots ends the connection.
    let r = a.send(Request::get("/"));
    take_commands(&mut peer).await;
    peer.write_all(OK_CLOSE).await.unwrap();
    assert_eq!(body(&r.await).as_deref(), Some(&b"x"[..]));
    assert!(a.handle().is_closed(), "Connection: close closed it");
    let got = tokio::time::timeout(LIMIT, b.ready()).await;
    assert!(
        matches!(&got, Ok(Err(e)) if e.is_fatal()),
        "poll_ready on a closed connection: {:?} (Err(Elapsed): it waits for ever)",
        got.map(|r| r.map(|_| ()))
    );
}

/// The same through TO-6: a clone holds a `ready()` reservation, a reply
/// was given up and the peer stalls, so the connection closes fatally;
/// another clone's `poll_ready` reports the fatal `ETIMEDOUT`.
#[tokio::test(start_paused = true)]
async fn poll_ready_of_a_clone_hears_to6_while_another_holds_the_slot() {
    let (handle, mut peer) = pipe_rtimeout(MS(200));
    let mut a = Pipelined::new(handle, Resp::new(), 1);
    let mut b = a.clone();
    // `a` reserves the only slot and has not called yet.
    a.ready().await.unwrap();
    // A request outside the slots, given up (its reply dropped): a read
    // owed that nobody hears.
    drop(a.send(Cmd::new("GET").arg("k")));
    take_commands(&mut peer).await;
    let got = tokio::time::timeout(LIMIT, b.ready()).await;
    assert!(a.handle().is_closed(), "TO-6 closed the connection");
    assert!(
        matches!(&got, Ok(Err(e)) if e.is_fatal() && e.kind() == ErrorKind::TimedOut),
        "poll_ready after TO-6: {:?} (Err(Elapsed): it waits for ever)",
        got.map(|r| r.map(|_| ()))
    );
}

/// After a request that says `Connection: close` was written (its
/// response still owed), `poll_ready` refuses: the Service can take no
/// other request on this connection.
#[tokio::test(start_paused = true)]
async fn after_a_connection_close_request_poll_ready_refuses() {
    let (mut c, mut peer) = http(4);
    c.ready().await.unwrap();
    let last = c.call(close_req());
    take_commands(&mut peer).await;
    let mut outcome = Vec::new();
    for _ in 0..3 {
        match tokio::time::timeout(MS(100), c.ready()).await {
            Ok(Ok(_)) => {
                let e = c.call(Request::get("/next")).await.unwrap_err();
                outcome.push(format!(
                    "ready, call: {:?} fatal={}",
                    e.kind(),
                    e.is_fatal()
                ));
            }
            other => {
                outcome.push(format!("{:?}", other.map(|r| r.map(|_| ()))));
                break;
            }
        }
    }
    peer.write_all(OK_CLOSE).await.unwrap();
    assert_eq!(body(&last.await).as_deref(), Some(&b"x"[..]));
    assert!(
        !outcome[0].starts_with("ready, call"),
        "poll_ready said Ready while the connection can take no request: {outcome:?}"
    );
}

/// A `Connection: close` response with two calls in
/// flight: the one behind fails `Closed`, both slots come back, and every
/// clone's `poll_ready` (a fresh clone's too) reports the fatal close.
#[tokio::test(start_paused = true)]
async fn close_response_frees_slots_and_clones_see_it() {
    let (mut c, mut peer) = http(2);
    let mut c2 = c.clone();
    c.ready().await.unwrap();
    let r1 = c.call(Request::get("/1"));
    c2.ready().await.unwrap();
    let r2 = c2.call(Request::get("/2"));
    take_commands(&mut peer).await;
    peer.write_all(OK_CLOSE).await.unwrap();
    peer.write_all(OK_A).await.unwrap();
    let (g1, g2) = tokio::time::timeout(LIMIT, futures::future::join(r1, r2))
        .await
        .unwrap();
    assert_eq!(body(&g1).as_deref(), Some(&b"x"[..]));
    assert_eq!(g2.unwrap_err().kind(), ErrorKind::Closed);
    for svc in [&mut c, &mut c2] {
        let e = tokio::time::timeout(LIMIT, svc.ready())
            .await
            .unwrap()
            .unwrap_err();
        assert!(e.is_fatal() && e.kind() == ErrorKind::Closed, "{e}");
    }
    // `c` and `c2` each kept a slot from their failed poll_ready; a fresh
    // clone with max_in_flight 2 has none left, so this only shows the
    // outcome with a third slot.
    let (mut d, mut peer) = http(3);
    let mut d2 = d.clone();
    let r = d.send(Request::get("/"));
    take_commands(&mut peer).await;
    peer.write_all(OK_CLOSE).await.unwrap();
    r.await.unwrap();
    assert!(d.ready().await.is_err());
    assert!(d2.ready().await.is_err());
}

/// The request's own `Connection: close`: after its response the
/// connection is closed and `poll_ready` reports it fatally.
#[tokio::test(start_paused = true)]
async fn close_request_then_poll_ready_is_fatal_once_answered() {
    let (mut c, mut peer) = http(4);
    c.ready().await.unwrap();
    let last = c.call(close_req());
    take_commands(&mut peer).await;
    peer.write_all(OK_A).await.unwrap();
    assert_eq!(body(&last.await).as_deref(), Some(&b"a"[..]));
    let e = tokio::time::timeout(LIMIT, c.ready())
        .await
        .unwrap()
        .unwrap_err();
    assert!(e.is_fatal() && e.kind() == ErrorKind::Closed, "{e}");
}

/// `oneshot` (the client dropped after `call`) on a `Connection:
/// close` response, the reply polled only afterwards.
#[tokio::test(start_paused = true)]
async fn oneshot_close_response() {
    let (c, mut peer) = http(1);
    let fut = tokio::spawn(c.oneshot(Request::get("/")));
    take_commands(&mut peer).await;
    peer.write_all(OK_CLOSE).await.unwrap();
    let got = tokio::time::timeout(LIMIT, fut).await.unwrap().unwrap();
    assert_eq!(body(&got).as_deref(), Some(&b"x"[..]));
}

/// A `Reply` dropped in the middle of a `Connection: close`
/// chunked response: the rest is read and dropped, the connection then
/// closes, and the request behind fails `Closed` rather than reading a
/// piece of it.
#[tokio::test(start_paused = true)]
async fn reply_dropped_mid_close_response() {
    let (c, mut peer) = http(4);
    let mut first = c.send(Request::get("/1"));
    let second = c.send(Request::get("/2"));
    take_commands(&mut peer).await;
    peer.write_all(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab",
    )
    .await
    .unwrap();
    assert!(futures::poll!(&mut first).is_pending());
    drop(first);
    peer.write_all(b"c\r\n0\r\n\r\n").await.unwrap();
    peer.write_all(OK_A).await.unwrap();
    let got = tokio::time::timeout(LIMIT, second).await.unwrap();
    assert_eq!(got.unwrap_err().kind(), ErrorKind::Closed);
}

/// TO-6 with a given-up reply in front of one still awaited: the
/// awaited one hears the read timeout (TO-3, non-fatal), or its reply.
#[tokio::test(start_paused = true)]
async fn to6_given_up_reply_in_front_of_an_awaited_one() {
    let (handle, mut peer) = pipe_rtimeout(MS(200));
    let c = Pipelined::new(handle.clone(), Resp::new(), 4);
    drop(c.send(Cmd::new("GET").arg("gone")));
    let kept = c.send(Cmd::new("GET").arg("kept"));
    take_commands(&mut peer).await;
    let got = tokio::time::timeout(LIMIT, kept).await.unwrap();
    let e = got.unwrap_err();
    eprintln!(
        "awaited reply behind a given-up one: {e} fatal={} closed={}",
        e.is_fatal(),
        handle.is_closed()
    );
    assert_eq!(e.kind(), ErrorKind::TimedOut);
}

/// Every slot held by calls whose replies nobody polls, the peer
/// silent: `poll_ready` waiting for a slot resolves (fatal) in time, not
/// never.
#[tokio::test(start_paused = true)]
async fn poll_ready_waiting_for_a_slot_behind_unpolled_replies() {
    let (handle, mut peer) = pipe_rtimeout(MS(200));
    let mut c = Pipelined::new(handle, Resp::new(), 2);
    c.ready().await.unwrap();
    let r1 = c.call(Cmd::new("GET").arg("1"));
    c.ready().await.unwrap();
    let r2 = c.call(Cmd::new("GET").arg("2"));
    take_commands(&mut peer).await;
    let got = tokio::time::timeout(LIMIT, c.ready()).await;
    eprintln!(
        "poll_ready behind unpolled replies: {:?}",
        got.as_ref().map(|r| r.as_ref().map(|_| ()))
    );
    let e = got.expect("poll_ready never resolved").unwrap_err();
    assert!(e.is_fatal(), "{e}");
    drop((r1, r2));
}

/// `Subscriber::command` after the connection's fatal error
/// returns that error (`EBADMSG`), as its doc says.
#[tokio::test(start_paused = true)]
async fn subscriber_command_after_fatal_error() {
    let (io, mut peer) = tokio::io::duplex(1 << 16);
    let (handle, _driver) = QueuedFramed::new(io).spawn();
    let mut sub = Subscriber::new(handle);
    peer.write_all(b"?garbage\r\n").await.unwrap();
    let e = tokio::time::timeout(LIMIT, sub.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(e.is_fatal());
    let after = sub.command(&Cmd::new("PING")).unwrap_err();
    assert_eq!(after.kind(), e.kind(), "{after} vs {e}");
    assert!(after.is_fatal());
    assert!(
        tokio::time::timeout(LIMIT, sub.next())
            .await
            .unwrap()
            .is_none()
    );
}

/// The user sets `Handle::on_timeout` after `Subscriber::new`
/// (excluded by `new`'s doc): the subscriber hears no more timeouts;
/// does a message stalled across a read timeout still arrive whole?
#[tokio::test(start_paused = true)]
async fn subscriber_user_hook_afterwards() {
    let (io, mut peer) = tokio::io::duplex(1 << 16);
    let (handle, _driver) = QueuedFramed::builder().rtimeout(MS(200)).build(io).spawn();
    let mut sub = Subscriber::new(handle.clone());
    let fired = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let f2 = fired.clone();
    handle.on_timeout(move |_, _| {
        f2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    });
    peer.write_all(b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhe")
        .await
        .unwrap();
    tokio::time::sleep(MS(700)).await;
    peer.write_all(b"llo\r\n").await.unwrap();
    let msg = tokio::time::timeout(LIMIT, sub.next()).await.unwrap();
    eprintln!(
        "user hook fired {} times; got {msg:?}",
        fired.load(std::sync::atomic::Ordering::SeqCst)
    );
    assert!(matches!(msg, Some(Ok(Value::Array(_)))), "{msg:?}");
}

/// `Connection: close` response whose body runs until close, with
/// a request pipelined behind: the docs say requests behind fail `Closed`.
#[tokio::test(start_paused = true)]
async fn until_close_body_then_request_behind() {
    let (c, mut peer) = http(4);
    let first = c.send(Request::get("/1"));
    let second = c.send(Request::get("/2"));
    take_commands(&mut peer).await;
    peer.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nbody")
        .await
        .unwrap();
    drop(peer);
    let (g1, g2) = tokio::time::timeout(LIMIT, futures::future::join(first, second))
        .await
        .unwrap();
    assert_eq!(body(&g1).as_deref(), Some(&b"body"[..]));
    let e = g2.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
}

/// HTTP/1.0 response without keep-alive to a `ready`/`call`: the
/// next `poll_ready` reports the close.
#[tokio::test(start_paused = true)]
async fn http10_response_closes_and_poll_ready_says_so() {
    let (mut c, mut peer) = http(1);
    c.ready().await.unwrap();
    let r = c.call(Request::get("/"));
    take_commands(&mut peer).await;
    peer.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nz")
        .await
        .unwrap();
    assert_eq!(body(&r.await).as_deref(), Some(&b"z"[..]));
    let e = tokio::time::timeout(LIMIT, c.ready())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed);
}

/// As anyframe's `Client`: on a runtime with one thread the window goes
/// out in two halves, the first written while the caller queues the
/// second (the peer works on one half while the caller handles the
/// other), instead of the whole window at the caller's first wait.
#[tokio::test(flavor = "current_thread")]
async fn pipelined_writes_its_window_in_halves_on_one_thread() {
    let (handle, _peer) = pipe();
    let mut client = Pipelined::new(handle.clone(), Resp::new(), 8);
    let mut unwritten = Vec::new();
    let mut replies = Vec::new();
    for i in 0..8 {
        client.ready().await.unwrap();
        unwritten.push(handle.write_buffered());
        replies.push(client.call(Cmd::new("GET").arg(format!("k{i}"))));
    }
    assert_eq!(unwritten[4], 0, "unwritten before each call: {unwritten:?}");
    assert!(
        unwritten[3] > 0,
        "unwritten before each call: {unwritten:?}"
    );
}
