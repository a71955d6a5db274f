//! Handles writing while their engine is busy (the encoder runs with no
//! lock held, into a buffer of the calling thread's, and the bytes are
//! copied into the inbox), and inline calls that yield to the executor
//! after a round of writes or completions. Every wait is bounded.

mod support;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::time::Duration;

use anyframe::codecs::LineCodec;
use anyframe::{Error, Handle, QueuedFramed, Result};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_util::codec::Encoder;

#[path = "support/watched.rs"]
mod watched;

const WAIT: Duration = Duration::from_secs(10);

/// A peer that echoes every line it reads, until its input ends.
fn echo(peer: DuplexStream) {
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let (rd, mut wr) = tokio::io::split(peer);
        let mut lines = tokio::io::BufReader::with_capacity(1 << 20, rd).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            if wr.write_all(format!("{l}\n").as_bytes()).await.is_err() {
                break;
            }
        }
    });
}

/// Holds `handle`'s engine with a read completion until `release` says
/// so: returns once the completion runs. The peer must send a line.
fn hold_engine(
    handle: &Handle,
    release: mpsc::Receiver<()>,
) -> (mpsc::Receiver<()>, anyframe::Ticket<()>) {
    let (entered_tx, entered_rx) = mpsc::channel();
    let held = handle.push_read_with(LineCodec::new(), move |_, _| {
        let _ = entered_tx.send(());
        let _ = release.recv_timeout(WAIT);
        Ok(())
    });
    (entered_rx, held)
}

/// A spawned connection whose driver runs on a runtime on a thread of its
/// own (it ends when the connection does).
fn on_its_own_thread(io: tokio::io::DuplexStream) -> Handle {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (handle, driver) = QueuedFramed::new(io).spawn();
            tx.send(handle).unwrap();
            let _ = driver.await;
        });
    });
    rx.recv_timeout(WAIT).unwrap()
}

/// A line encoder that takes its time (so the engine's holder changes
/// while it runs) and writes some lines in many small pieces.
struct SlowLine(u64);

impl Encoder<String> for SlowLine {
    type Error = Error;
    fn encode(&mut self, item: String, dst: &mut BytesMut) -> Result<()> {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1);
        std::thread::sleep(Duration::from_micros(self.0 >> 56));
        for piece in item.as_bytes().chunks(4096) {
            dst.extend_from_slice(piece);
        }
        dst.extend_from_slice(b"\n");
        Ok(())
    }
}

/// Calls from several threads at once, some of them large, while the driver keeps taking the engine for the replies: every call
/// gets its own reply, whole.
#[test]
fn calls_from_many_threads_while_the_engine_is_busy_each_get_their_own_reply() {
    let out = watched::on_two_workers(Duration::from_secs(60), || async {
        let (io, peer) = tokio::io::duplex(1 << 16);
        echo(peer);
        let (handle, _driver) = QueuedFramed::builder()
            .wbuf_max(Some(16 << 20))
            .build(io)
            .spawn();
        let mut threads = Vec::new();
        for t in 0..4u64 {
            let h = handle.clone();
            threads.push(std::thread::spawn(move || {
                let mut tickets = Vec::new();
                for n in 0..60u64 {
                    let len = match (t + n) % 7 {
                        0 => 100_000,
                        1 => 70_000,
                        _ => ((n * 37) % 300) as usize,
                    };
                    let line = format!("{t}-{n}-{}", "x".repeat(len));
                    let ticket = h.call(SlowLine(t * 1000 + n), line.clone(), LineCodec::new());
                    tickets.push((line, ticket));
                }
                tickets
            }));
        }
        let mut bad = Vec::new();
        for th in threads {
            let tickets = tokio::task::spawn_blocking(move || th.join().unwrap())
                .await
                .unwrap();
            for (sent, ticket) in tickets {
                match tokio::time::timeout(WAIT, ticket).await {
                    Ok(Ok(reply)) if reply.line() == sent.as_bytes() => {}
                    Ok(Ok(reply)) => bad.push(format!(
                        "{}: got {}",
                        &sent[..sent.len().min(12)],
                        String::from_utf8_lossy(&reply.line()[..reply.line().len().min(12)])
                    )),
                    Ok(Err(e)) => bad.push(format!("{}: {e}", &sent[..sent.len().min(12)])),
                    Err(_) => bad.push(format!("{}: no reply", &sent[..sent.len().min(12)])),
                }
            }
        }
        bad
    });
    let bad = out.expect("the calls finish");
    assert!(bad.is_empty(), "{} calls went wrong: {bad:?}", bad.len());
}

/// An encoder that calls the same handle: its call goes in ahead of the
/// item being encoded, and each keeps its own reply.
struct CallsFirst(
    Handle,
    mpsc::Sender<anyframe::Ticket<anyframe::codecs::Line>>,
);

impl Encoder<&'static str> for CallsFirst {
    type Error = Error;
    fn encode(&mut self, item: &'static str, dst: &mut BytesMut) -> Result<()> {
        let inner = self.0.call(LineCodec::new(), "inner", LineCodec::new());
        let _ = self.1.send(inner);
        dst.extend_from_slice(item.as_bytes());
        dst.extend_from_slice(b"\n");
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encoder_that_calls_its_own_busy_handle_keeps_both_calls_paired() {
    let (io, mut peer) = tokio::io::duplex(1 << 16);
    let (handle, _driver) = QueuedFramed::builder().build(io).spawn();
    let (release_tx, release_rx) = mpsc::channel();
    let (entered, held) = hold_engine(&handle, release_rx);
    peer.write_all(b"go\n").await.unwrap();
    let h = handle.clone();
    let outer = tokio::task::spawn_blocking(move || {
        entered
            .recv_timeout(WAIT)
            .expect("the completion holds the engine");
        let (tx, rx) = mpsc::channel();
        let outer = h.call(CallsFirst(h.clone(), tx), "outer", LineCodec::new());
        let inner = rx.recv_timeout(WAIT).unwrap();
        let _ = release_tx.send(());
        (inner, outer)
    })
    .await
    .unwrap();
    let (inner, outer) = outer;
    tokio::time::timeout(WAIT, held).await.unwrap().unwrap();
    let mut got = [0u8; 12];
    tokio::time::timeout(WAIT, peer.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got, b"inner\nouter\n");
    peer.write_all(b"A\nB\n").await.unwrap();
    let inner = tokio::time::timeout(WAIT, inner).await.unwrap().unwrap();
    let outer = tokio::time::timeout(WAIT, outer).await.unwrap().unwrap();
    assert_eq!((inner.line(), outer.line()), (&b"A"[..], &b"B"[..]));
}

/// Writes half its item, then panics.
struct PanicsHalfWay;

impl Encoder<&'static str> for PanicsHalfWay {
    type Error = Error;
    fn encode(&mut self, item: &'static str, dst: &mut BytesMut) -> Result<()> {
        dst.extend_from_slice(&item.as_bytes()[..item.len() / 2]);
        panic!("encoder gave up");
    }
}

/// An encoder that panics for a busy engine closes that connection and
/// its panic reaches the caller; nothing it wrote reaches any peer, and
/// the next write this thread makes for a busy engine (another
/// connection's) carries only its own bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encoder_panicking_for_a_busy_engine_leaves_no_bytes_behind() {
    let (a_io, mut a_peer) = tokio::io::duplex(1 << 16);
    let (b_io, mut b_peer) = tokio::io::duplex(1 << 16);
    // Each driver on a thread of its own: both hold their engine (block
    // their thread) at once, which two workers of one runtime do not
    // guarantee (a task woken into a busy worker's next slot waits for it).
    let (a, b) = (on_its_own_thread(a_io), on_its_own_thread(b_io));
    let (a_release_tx, a_release_rx) = mpsc::channel();
    let (b_release_tx, b_release_rx) = mpsc::channel();
    let (a_entered, a_held) = hold_engine(&a, a_release_rx);
    let (b_entered, b_held) = hold_engine(&b, b_release_rx);
    a_peer.write_all(b"go\n").await.unwrap();
    b_peer.write_all(b"go\n").await.unwrap();
    let (a2, b2) = (a.clone(), b.clone());
    let (panicked, wrote) = tokio::task::spawn_blocking(move || {
        a_entered.recv_timeout(WAIT).unwrap();
        b_entered.recv_timeout(WAIT).unwrap();
        // The panic path closes `a`, which waits for its engine: let it go
        // after a moment.
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let _ = a_release_tx.send(());
        });
        let panicked = catch_unwind(AssertUnwindSafe(|| {
            a2.push_write(PanicsHalfWay, "poisonous-item")
        }))
        .is_err();
        release.join().unwrap();
        let wrote = b2.push_write(LineCodec::new(), "clean");
        let _ = b_release_tx.send(());
        (panicked, wrote)
    })
    .await
    .unwrap();
    assert!(panicked, "the encoder's panic reaches the caller");
    wrote.unwrap();
    let _ = tokio::time::timeout(WAIT, a_held).await.unwrap();
    tokio::time::timeout(WAIT, b_held).await.unwrap().unwrap();
    tokio::time::timeout(WAIT, b.flush())
        .await
        .unwrap()
        .unwrap();
    let mut got = [0u8; 6];
    tokio::time::timeout(WAIT, b_peer.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got, b"clean\n");
    assert!(a.is_closed(), "the panic closed the connection");
    let mut rest = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_millis(300), a_peer.read(&mut rest)).await;
    assert!(
        matches!(read, Err(_) | Ok(Ok(0))),
        "{read:?}: {:?}",
        String::from_utf8_lossy(&rest)
    );
}

/// Inline, a flush yields after a round of writes and is woken again:
/// over a transport that takes a byte at a time it still writes all, in
/// order, and so does `shutdown_write`.
#[test]
fn an_inline_flush_and_shutdown_over_a_byte_at_a_time_transport_write_everything() {
    let out = watched::on_one_thread(Duration::from_secs(30), async {
        // Takes one byte per write, at once.
        let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let taken = out.clone();
        let mut conn = QueuedFramed::new(support::FixedWrites::new(move |buf: &[u8]| {
            taken.lock().unwrap().push(buf[0]);
            Ok(1)
        }));
        let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        for piece in data.chunks(1000) {
            conn.push_bytes(piece.to_vec()).unwrap();
        }
        support::within("flush", conn.flush()).await.unwrap();
        conn.push_bytes(&b"tail"[..]).unwrap();
        support::within("shutdown", conn.shutdown_write())
            .await
            .unwrap();
        let mut want = data;
        want.extend_from_slice(b"tail");
        drop(conn);
        *out.lock().unwrap() == want
    });
    assert_eq!(out, Some(true));
}

/// A's read completion marks B's read timer active while B's own callback
/// asks A for its state (which may wait for A's engine): marking a timer
/// queues work, it never waits for B's engine (RQ-7), so both callbacks
/// complete.
#[test]
fn timeout_reset_from_another_connections_callback_does_not_wait_for_its_engine() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    let out = watched::on_two_workers(Duration::from_secs(20), || async {
        let (a_io, mut a_peer) = tokio::io::duplex(1 << 16);
        let (b_io, mut b_peer) = tokio::io::duplex(1 << 16);
        let (a, _a_driver) = QueuedFramed::builder().build(a_io).spawn();
        let (b, _b_driver) = QueuedFramed::builder().build(b_io).spawn();
        let arrived = Arc::new(AtomicUsize::new(0));
        let (arrived_a, b2) = (arrived.clone(), b.clone());
        let a_read = a.push_read_with(LineCodec::new(), move |_, _| {
            watched::meet(&arrived_a, 2);
            b2.timeout_reset(anyframe::Timeout::Read);
            Ok(())
        });
        let a2 = a.clone();
        let b_read = b.push_read_with(LineCodec::new(), move |_, _| {
            watched::meet(&arrived, 2);
            let _ = a2.write_buffered();
            Ok(())
        });
        a_peer.write_all(b"go\n").await.unwrap();
        b_peer.write_all(b"go\n").await.unwrap();
        let told = |r: std::result::Result<Result<()>, _>| match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".to_owned()),
        };
        (
            told(tokio::time::timeout(WAIT, a_read).await),
            told(tokio::time::timeout(WAIT, b_read).await),
        )
    });
    let out = out.expect("both callbacks finish (a deadlock leaves the runtime stuck)");
    assert_eq!(out, (Ok(()), Ok(())), "(A's completion, B's completion)");
}

/// A timer marked active while the engine is busy is marked when the
/// engine is next taken, not lost: the read waiting behind the busy
/// completion gets the whole period from then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_reset_while_the_engine_is_busy_is_not_lost() {
    let (io, mut peer) = tokio::io::duplex(1 << 16);
    let (handle, _driver) = QueuedFramed::builder()
        .rtimeout(Duration::from_millis(1000))
        .build(io)
        .spawn();
    let (release_tx, release_rx) = mpsc::channel();
    let (entered, held) = hold_engine(&handle, release_rx);
    let next = handle.push_read(LineCodec::new());
    peer.write_all(b"go\n").await.unwrap();
    let h = handle.clone();
    let start = tokio::task::spawn_blocking(move || {
        entered
            .recv_timeout(WAIT)
            .expect("the completion holds the engine");
        let start = std::time::Instant::now();
        std::thread::sleep(Duration::from_millis(300));
        h.timeout_reset(anyframe::Timeout::Read);
        std::thread::sleep(Duration::from_millis(300));
        let _ = release_tx.send(());
        start
    })
    .await
    .unwrap();
    tokio::time::timeout(WAIT, held).await.unwrap().unwrap();
    let e = tokio::time::timeout(WAIT, next).await.unwrap().unwrap_err();
    assert!(e.is_timeout(), "{e}");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1250),
        "the read timed out {took:?} after the input, despite the mark"
    );
}
