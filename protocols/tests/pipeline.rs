//! The pipelined client's failure paths on a scripted peer: a reply that
//! times out, or whose future is dropped where no runtime runs, must never
//! let a later request read it.

use std::time::Duration;

use anyframe::{ErrorKind, QueuedFramed};
use anyframe_protocols::pipeline::Pipelined;
use anyframe_protocols::redis::{Cmd, Resp, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

const MS: fn(u64) -> Duration = Duration::from_millis;

/// A Redis client on one end of a pipe whose driver has `rtimeout`, and
/// the pipe's other end (the scripted server).
fn client(rtimeout: Duration) -> (Pipelined<Resp>, DuplexStream) {
    let (io, peer) = tokio::io::duplex(1 << 16);
    let (handle, _driver) = QueuedFramed::builder().rtimeout(rtimeout).build(io).spawn();
    (Pipelined::new(handle, Resp::new(), 16), peer)
}

/// Reads what the client wrote so far (the commands), so the pipe never
/// fills.
async fn take_commands(peer: &mut DuplexStream) {
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(MS(10), peer.read(&mut buf)).await;
}

/// One reply per read, the first one late: the first request times out,
/// and its late reply is read and dropped, not handed to the next request.
#[tokio::test(start_paused = true)]
async fn a_timed_out_reply_is_never_the_next_requests() {
    let (c, mut peer) = client(MS(300));
    let first = c.send(Cmd::new("GET").arg("alice"));
    take_commands(&mut peer).await;
    let e = first.await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    let second = c.send(Cmd::new("GET").arg("bob"));
    take_commands(&mut peer).await;
    peer.write_all(b"+alice\r\n+bob\r\n").await.unwrap();
    let got = tokio::time::timeout(MS(1000), second).await.unwrap();
    assert_eq!(got.unwrap(), Value::Simple("bob".into()));
}

/// A reply of several reads (a bulk string: its length line, then its
/// bytes) that times out between them: the rest of it is still read and
/// dropped.
#[tokio::test(start_paused = true)]
async fn a_reply_timed_out_between_its_reads_is_read_to_its_end() {
    let (c, mut peer) = client(MS(300));
    let first = c.send(Cmd::new("GET").arg("alice"));
    take_commands(&mut peer).await;
    peer.write_all(b"*2\r\n$5\r\n").await.unwrap();
    let e = first.await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    let second = c.send(Cmd::new("GET").arg("bob"));
    take_commands(&mut peer).await;
    peer.write_all(b"alice\r\n:7\r\n+bob\r\n").await.unwrap();
    let got = tokio::time::timeout(MS(1000), second).await.unwrap();
    assert_eq!(got.unwrap(), Value::Simple("bob".into()));
}

/// A reply future dropped on a thread with no runtime (another executor's
/// `select!`, say) before its reply came: the reply is still read to its
/// end and dropped.
#[tokio::test]
async fn a_reply_dropped_outside_a_runtime_keeps_the_stream_in_step() {
    let (c, mut peer) = client(Duration::ZERO);
    let first = c.send(Cmd::new("GET").arg("alice"));
    std::thread::spawn(move || drop(first)).join().unwrap();
    let second = c.send(Cmd::new("GET").arg("bob"));
    take_commands(&mut peer).await;
    peer.write_all(b"*1\r\n$5\r\nalice\r\n+bob\r\n")
        .await
        .unwrap();
    let got = tokio::time::timeout(MS(5000), second).await.unwrap();
    assert_eq!(got.unwrap(), Value::Simple("bob".into()));
}

/// A bulk string longer than the connection's `rbuf_max`: the reply
/// cannot be read, and skipping it would hand its bytes to the next
/// request, so the connection closes (fatal) and both requests fail.
#[tokio::test]
async fn a_reply_over_rbuf_max_closes_instead_of_desynchronising() {
    let (io, mut peer) = tokio::io::duplex(1 << 16);
    let (handle, _driver) = QueuedFramed::builder()
        .rbuf_max(Some(1024))
        .build(io)
        .spawn();
    let c = Pipelined::new(handle, Resp::new(), 16);
    let first = c.send(Cmd::new("GET").arg("big"));
    let second = c.send(Cmd::new("GET").arg("small"));
    take_commands(&mut peer).await;
    let mut reply = b"$5000\r\n".to_vec();
    reply.extend_from_slice(&[b'+'; 5000]);
    reply.extend_from_slice(b"\r\n+small\r\n");
    peer.write_all(&reply).await.unwrap();
    let e = tokio::time::timeout(MS(5000), first)
        .await
        .unwrap()
        .unwrap_err();
    assert!(e.is_fatal(), "{e}");
    let got = tokio::time::timeout(MS(5000), second).await.unwrap();
    assert!(
        got.is_err(),
        "the next request read the big reply's bytes: {got:?}"
    );
}
