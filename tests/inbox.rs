//! The spawned handle's inbox under contention (src/queued/handle.rs:
//! `Inbox`, `Published`, `Shared::post_*`, `take_posted`) and the seal the
//! engine puts on it (`Core::seal_inbox`, `Core::write_room`,
//! `Core::needs_seal`): work a handle queues while a completion holds the
//! engine keeps `wbuf_max` exact, never lands inside the completion's own
//! sequence, and is never accepted and then lost. Each test holds the
//! engine with a completion that waits on a channel; waits are bounded.

use std::io;
use std::pin::Pin;
use std::sync::mpsc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyframe::codecs::LineCodec;
use anyframe::{ErrorKind, QueuedFramed};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};

const WAIT: Duration = Duration::from_secs(10);

/// A transport whose input is a duplex and whose output never takes a
/// byte (the peer has stopped reading): every byte queued stays queued,
/// so `write_buffered` counts exactly what was accepted.
struct StuckWriter(DuplexStream);

impl AsyncRead for StuckWriter {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for StuckWriter {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Pending
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Pending
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Pending
    }
}

/// Posts into the inbox (the engine being held by a completion) are
/// checked against `Published::room`, the room under `wbuf_max` that the
/// engine published. The next lock moves the inbox in
/// (`Locked::take_posted`); if it did not publish the room left then, the
/// emptied inbox would take that room a second time while the lock is held
/// (up to `W + 2 * room` bytes under the cap).
///
/// Scenario, `wbuf_max = 10`, the peer reads nothing:
///   * 5 bytes queued through the lock; released: room = min(5, 5) = 5.
///   * completion 1 holds the engine; another thread posts 5 bytes
///     (inbox 5 <= 5) and a read with completion 2.
///   * the next turn takes both in (queued: 10) and runs completion 2
///     (its line is already buffered); while it holds the engine, the
///     other thread posts 5 more bytes.
///
/// The third push is refused with `ENOSPC` (10 + 5 > 10), and no more than
/// 10 bytes are ever queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_refilled_in_the_turn_that_took_it_in_goes_past_wbuf_max() {
    let (io, mut peer) = tokio::io::duplex(1 << 16);
    let (handle, _driver) = QueuedFramed::builder()
        .wbuf_max(Some(10))
        .build(StuckWriter(io))
        .spawn();
    handle.push_bytes(&b"1234\n"[..]).unwrap();
    // A locked call: takes in anything posted and publishes room = 5.
    assert_eq!(handle.write_buffered(), 5);

    let (entered1_tx, entered1_rx) = mpsc::channel::<()>();
    let (release1_tx, release1_rx) = mpsc::channel::<()>();
    let (entered2_tx, entered2_rx) = mpsc::channel::<()>();
    let (release2_tx, release2_rx) = mpsc::channel::<()>();
    let first = handle.push_read_with(LineCodec::new(), move |line, _q| {
        let _ = entered1_tx.send(());
        let _ = release1_rx.recv_timeout(WAIT);
        Ok(line)
    });
    let h2 = handle.clone();
    let other = std::thread::spawn(move || {
        entered1_rx.recv_timeout(WAIT).expect("completion 1 runs");
        // The engine is held by completion 1: these go to the inbox.
        let a = h2.push_bytes(&b"abcd\n"[..]);
        let second = h2.push_read_with(LineCodec::new(), move |line, _q| {
            let _ = entered2_tx.send(());
            // A moment: a push that waits for the engine cannot tell us.
            let _ = release2_rx.recv_timeout(Duration::from_millis(300));
            Ok(line)
        });
        let _ = release1_tx.send(());
        entered2_rx.recv_timeout(WAIT).expect("completion 2 runs");
        // The engine is held by completion 2, in the turn that took in
        // `abcd\n`: 10 bytes are queued now.
        let b = h2.push_bytes(&b"efgh\n"[..]);
        let _ = release2_tx.send(());
        (a, b, second)
    });
    // Both lines at once: the second stays buffered until its read comes in.
    peer.write_all(b"a\nb\n").await.unwrap();
    tokio::time::timeout(WAIT, first)
        .await
        .expect("completion 1 returns")
        .unwrap();
    let (a, b, second) = tokio::task::spawn_blocking(move || other.join().unwrap())
        .await
        .unwrap();
    tokio::time::timeout(WAIT, second)
        .await
        .expect("completion 2 returns")
        .unwrap();
    a.expect("5 + 5 fits under 10");
    let queued = handle.write_buffered();
    assert!(
        b.is_err() && queued <= 10,
        "third push: {b:?}; {queued} bytes queued under wbuf_max = 10 (closed: {})",
        handle.is_closed()
    );
    assert_eq!(b.unwrap_err().kind(), ErrorKind::NoSpace);
}

/// One end of a channel and the other.
type Channel = (mpsc::Sender<()>, mpsc::Receiver<()>);

/// A spawned connection over `io` with `wbuf_max` 100, and two channels for
/// a completion to say it runs and to be told to go on.
fn capped(
    io: DuplexStream,
) -> (
    anyframe::Handle,
    anyframe::Driver<DuplexStream>,
    Channel,
    Channel,
) {
    let (handle, driver) = QueuedFramed::builder()
        .wbuf_max(Some(100))
        .build(io)
        .spawn();
    (handle, driver, mpsc::channel(), mpsc::channel())
}

/// A peer that echoes every line it reads, until its input ends.
fn echo(peer: DuplexStream) {
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let (rd, mut wr) = tokio::io::split(peer);
        let mut lines = tokio::io::BufReader::new(rd).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            if wr.write_all(format!("{l}\n").as_bytes()).await.is_err() {
                break;
            }
        }
    });
}

/// A completion queues the read for its reply and then its request
/// (`q.push_read`, then `q.push_write`: the order AnyEvent code often
/// uses) while a `call` from another thread sits in the inbox, and the
/// completion's write crosses half of `wbuf_max`, so it seals the inbox.
/// Were the seal to move the inbox in there, the queues would be
///   write queue: [call's request, completion's request]
///   read queue:  [completion's read, call's read]
/// and each would get the other's answer. The inbox's work comes in after
/// the completion's, as it does without a seal: each gets its own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_posted_while_a_completion_seals_gets_its_own_answer() {
    let (io, peer) = tokio::io::duplex(1 << 16);
    echo(peer);
    let (handle, _driver, (entered_tx, entered_rx), (release_tx, release_rx)) = capped(io);
    let big = "x".repeat(60);
    let request = big.clone();
    // The completion's own exchange: its reply's read, then its request
    // (61 bytes: past half of wbuf_max, so the push seals the inbox).
    let own = handle.push_read_with(LineCodec::new(), move |_go, q| {
        let reply = q.push_read(LineCodec::new());
        let _ = entered_tx.send(());
        let _ = release_rx.recv_timeout(Duration::from_millis(500));
        q.push_write(LineCodec::new(), request)?;
        Ok(reply)
    });
    let h2 = handle.clone();
    let other = std::thread::spawn(move || {
        entered_rx.recv_timeout(WAIT).expect("the completion runs");
        // The engine is held: the call goes to the inbox.
        let t = h2.call(LineCodec::new(), "hello", LineCodec::new());
        let _ = release_tx.send(());
        t
    });
    // Start: the peer's echo of `go` triggers the completion.
    handle.push_write(LineCodec::new(), "go").unwrap();
    let reply = tokio::time::timeout(WAIT, own)
        .await
        .expect("the completion returns")
        .unwrap();
    let call = tokio::task::spawn_blocking(move || other.join().unwrap())
        .await
        .unwrap();
    let call = tokio::time::timeout(WAIT, call)
        .await
        .expect("the call resolves")
        .unwrap();
    let reply = tokio::time::timeout(WAIT, reply)
        .await
        .expect("the completion's reply resolves")
        .unwrap();
    assert_eq!(
        (
            String::from_utf8_lossy(call.line()).into_owned(),
            String::from_utf8_lossy(reply.line()).into_owned()
        ),
        ("hello".to_owned(), big),
        "(the call's answer, the completion's answer)"
    );
}

/// Blocks in its drop until told to go on, or a moment (a write that
/// waits for the engine cannot tell it): dropped by the engine while it
/// holds its lock, it keeps the engine held.
struct HoldOnDrop(mpsc::Receiver<()>);

impl Drop for HoldOnDrop {
    fn drop(&mut self) {
        let _ = self.0.recv_timeout(Duration::from_millis(300));
    }
}

/// `detach` ends in `Core::take_buffers`, which closes the engine and
/// takes the buffers under one lock; the close fails the queued reads,
/// which runs user code (tickets are told, completions dropped). A write
/// another thread queues meanwhile, even from a task just told `Closed`,
/// must either come back in `Parts::write_buf` or be refused with
/// `Closed`; it is never accepted (`Ok`) and then lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_accepted_while_detach_takes_the_buffers_is_not_lost() {
    let (io, _peer) = tokio::io::duplex(1 << 16);
    let (handle, driver) = QueuedFramed::new(StuckWriter(io)).spawn();
    handle.push_bytes(&b"early\n"[..]).unwrap();
    let first = handle.push_read(LineCodec::new());
    let (ack_tx, ack_rx) = mpsc::channel::<()>();
    let hold = HoldOnDrop(ack_rx);
    // Failed second by the close: its completion (dropped then) holds the
    // engine until the other thread has pushed.
    let second = handle.push_read_with(LineCodec::new(), move |line, _q| {
        let _keep = &hold;
        Ok(line)
    });
    let rt = tokio::runtime::Handle::current();
    let h2 = handle.clone();
    let other = std::thread::spawn(move || {
        let told = rt.block_on(async { tokio::time::timeout(WAIT, first).await });
        let pushed = h2.push_bytes(&b"late\n"[..]);
        let _ = ack_tx.send(());
        (told, pushed)
    });
    assert_eq!(handle.write_buffered(), 6);
    handle.detach();
    let parts = tokio::time::timeout(WAIT, driver)
        .await
        .expect("the driver ends")
        .expect("detached");
    let (told, pushed) = tokio::task::spawn_blocking(move || other.join().unwrap())
        .await
        .unwrap();
    drop(second);
    let told = told.expect("the first read is told");
    assert_eq!(told.unwrap_err().kind(), ErrorKind::Closed);
    match pushed {
        Ok(()) => assert_eq!(
            &parts.write_buf[..],
            b"early\nlate\n",
            "`late` was accepted (Ok) after the read was told Closed, but is not in the parts"
        ),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
            assert_eq!(&parts.write_buf[..], b"early\n");
        }
    }
}

/// The same on writes alone: a completion's two consecutive pushes (a
/// small header, then a body past half of `wbuf_max`, which seals the
/// inbox) never get another thread's write, posted while the completion
/// held the engine, put between them: the peer sees `HDR` and the body
/// together, the posted `hello` before or after both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_posted_while_a_completion_pushes_never_lands_between_its_pushes() {
    use tokio::io::AsyncBufReadExt;
    let (io, peer) = tokio::io::duplex(1 << 16);
    let (handle, _driver, (entered_tx, entered_rx), (release_tx, release_rx)) = capped(io);
    let body = "x".repeat(60);
    let pushed = body.clone();
    let read = handle.push_read_with(LineCodec::new(), move |line, q| {
        q.push_write(LineCodec::new(), "HDR")?;
        let _ = entered_tx.send(());
        let _ = release_rx.recv_timeout(Duration::from_millis(500));
        // 61 bytes: past half of wbuf_max, so this push seals the inbox.
        q.push_write(LineCodec::new(), pushed)?;
        Ok(line)
    });
    let h2 = handle.clone();
    let other = std::thread::spawn(move || {
        entered_rx.recv_timeout(WAIT).expect("the completion runs");
        let r = h2.push_write(LineCodec::new(), "hello");
        let _ = release_tx.send(());
        r
    });
    let (rd, mut wr) = tokio::io::split(peer);
    wr.write_all(b"go\n").await.unwrap();
    tokio::time::timeout(WAIT, read)
        .await
        .expect("the completion returns")
        .unwrap();
    tokio::task::spawn_blocking(move || other.join().unwrap())
        .await
        .unwrap()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(rd).lines();
    let mut got = Vec::new();
    for _ in 0..3 {
        let l = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("three lines arrive")
            .unwrap()
            .unwrap();
        got.push(l);
    }
    let together = got == ["HDR", body.as_str(), "hello"] || got == ["hello", "HDR", body.as_str()];
    assert!(together, "the completion's two pushes were split: {got:?}");
}
