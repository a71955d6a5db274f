//! A callback of connection A writing to B while B's engine is busy with
//! B's own callback: refused at once when B's output is shut (RQ-7), and
//! posted without waiting when B's inbox is only sealed for a moment
//! (B's own writes crossed half its `wbuf_max`).

use std::time::{Duration, Instant};

use anyframe::codecs::LineCodec;
use anyframe::{ErrorKind, QueuedFramed};
use tokio::io::AsyncWriteExt;

#[path = "support/watched.rs"]
mod watched;

#[test]
fn a_callback_writing_to_a_shut_busy_connection_is_refused_at_once() {
    let got = watched::on_two_workers(Duration::from_secs(8), || async {
        let (a_io, mut a_peer) = tokio::io::duplex(1 << 16);
        let (b_io, mut b_peer) = tokio::io::duplex(1 << 16);
        let (a, _da) = QueuedFramed::new(a_io).spawn();
        let (b, _db) = QueuedFramed::new(b_io).spawn();
        // B's output is shut (applied: nothing holds B's engine now).
        b.push_shutdown().unwrap();
        // B's own completion holds B's engine for a while.
        let (entered_tx, entered_rx) = std::sync::mpsc::channel();
        let _tb = b.push_read_with(
            LineCodec::new(),
            move |_, _: &mut anyframe::Requests<'_>| {
                entered_tx.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(1500));
                Ok(())
            },
        );
        b_peer.write_all(b"x\n").await.unwrap();
        tokio::task::spawn_blocking(move || entered_rx.recv().unwrap())
            .await
            .unwrap();
        // A's completion writes to B.
        let b2 = b.clone();
        let ta = a.push_read_with(
            LineCodec::new(),
            move |_, _: &mut anyframe::Requests<'_>| {
                let t = Instant::now();
                let r = b2.push_bytes(&b"z"[..]).map_err(|e| e.kind());
                Ok((r, t.elapsed()))
            },
        );
        a_peer.write_all(b"y\n").await.unwrap();
        ta.await.unwrap()
    });
    let (r, took) = got.expect("finished");
    assert_eq!(r, Err(ErrorKind::InvalidInput));
    assert!(
        took < Duration::from_millis(500),
        "the refused write waited {took:?} for the other engine"
    );
}

/// The same wait seen from the other side: B's callback asks A for its
/// state while A's callback writes to the shut B. A's write should have
/// been refused at once (RQ-7), so B's query only waits for A's callback
/// to end; instead A's callback waits for B's engine and B's query
/// panics ("the two would wait for each other for ever").
#[test]
fn a_state_query_does_not_panic_because_a_refused_write_waited() {
    let got = watched::on_two_workers(Duration::from_secs(8), || async {
        let (a_io, mut a_peer) = tokio::io::duplex(1 << 16);
        let (b_io, mut b_peer) = tokio::io::duplex(1 << 16);
        let (a, _da) = QueuedFramed::new(a_io).spawn();
        let (b, _db) = QueuedFramed::new(b_io).spawn();
        b.push_shutdown().unwrap();
        let (entered_tx, entered_rx) = std::sync::mpsc::channel::<()>();
        let (a_in_tx, a_in_rx) = std::sync::mpsc::channel::<()>();
        let a2 = a.clone();
        let tb = b.push_read_with(
            LineCodec::new(),
            move |_, _: &mut anyframe::Requests<'_>| {
                entered_tx.send(()).unwrap();
                a_in_rx.recv_timeout(Duration::from_secs(3)).unwrap();
                // A's callback is now in its write to B.
                std::thread::sleep(Duration::from_millis(200));
                let q =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| a2.write_buffered()));
                Ok(q.is_ok())
            },
        );
        b_peer.write_all(b"x\n").await.unwrap();
        tokio::task::spawn_blocking(move || entered_rx.recv().unwrap())
            .await
            .unwrap();
        let b2 = b.clone();
        let ta = a.push_read_with(
            LineCodec::new(),
            move |_, _: &mut anyframe::Requests<'_>| {
                a_in_tx.send(()).unwrap();
                Ok(b2.push_bytes(&b"z"[..]).map_err(|e| e.kind()))
            },
        );
        a_peer.write_all(b"y\n").await.unwrap();
        let wrote = ta.await.unwrap();
        let queried = tb.await.unwrap();
        (wrote, queried)
    });
    let (wrote, queried_without_panic) = got.expect("finished");
    assert_eq!(wrote, Err(ErrorKind::InvalidInput));
    assert!(
        queried_without_panic,
        "B's state query on A panicked: A's refused write to B was waiting for B's engine"
    );
}

/// RQ-7: "calls that queue work at the back (writes, reads, calls) never
/// wait for the other engine". B's own callback pushed past half its
/// wbuf_max, which seals B's inbox until B's engine is released; a
/// callback of A writing a few bytes to B then waits for B's engine.
#[test]
fn a_callback_writing_to_a_busy_connection_with_a_sealed_inbox_does_not_wait() {
    let got = watched::on_two_workers(Duration::from_secs(8), || async {
        let (a_io, mut a_peer) = tokio::io::duplex(1 << 16);
        let (b_io, mut b_peer) = tokio::io::duplex(1 << 16);
        let (a, _da) = QueuedFramed::new(a_io).spawn();
        let (b, _db) = QueuedFramed::builder()
            .wbuf_max(Some(1000))
            .build(b_io)
            .spawn();
        let (entered_tx, entered_rx) = std::sync::mpsc::channel();
        let _tb = b.push_read_with(
            LineCodec::new(),
            move |_, req: &mut anyframe::Requests<'_>| {
                // Past half of wbuf_max: the inbox is sealed until release.
                req.push_bytes(vec![b'b'; 600]).unwrap();
                entered_tx.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(1500));
                Ok(())
            },
        );
        b_peer.write_all(b"x\n").await.unwrap();
        tokio::task::spawn_blocking(move || entered_rx.recv().unwrap())
            .await
            .unwrap();
        let b2 = b.clone();
        let ta = a.push_read_with(
            LineCodec::new(),
            move |_, _: &mut anyframe::Requests<'_>| {
                let t = Instant::now();
                let r = b2.push_bytes(&b"z"[..]).map_err(|e| e.kind());
                Ok((r, t.elapsed()))
            },
        );
        a_peer.write_all(b"y\n").await.unwrap();
        ta.await.unwrap()
    });
    let (r, took) = got.expect("finished");
    assert_eq!(r, Ok(()));
    assert!(
        took < Duration::from_millis(500),
        "the write waited {took:?} for the other engine"
    );
}

/// Two callbacks that each pushed past half their own connection's
/// wbuf_max (sealing its inbox) and then write a few bytes to each other:
/// writes never wait for the other engine (RQ-7), so both go in. Instead
/// the first waits for the other engine and the second's write panics.
#[test]
fn two_callbacks_with_sealed_inboxes_writing_to_each_other_neither_panics() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let got = watched::on_two_workers(Duration::from_secs(8), || async {
        let (a_io, mut a_peer) = tokio::io::duplex(1 << 16);
        let (b_io, mut b_peer) = tokio::io::duplex(1 << 16);
        let cfg = QueuedFramed::builder().wbuf_max(Some(1000)).clone();
        let (a, _da) = cfg.build(a_io).spawn();
        let (b, _db) = cfg.build(b_io).spawn();
        let arrived = Arc::new(AtomicUsize::new(0));
        let cb = |other: anyframe::Handle, arrived: Arc<AtomicUsize>| {
            move |_, req: &mut anyframe::Requests<'_>| {
                req.push_bytes(vec![b'b'; 600]).unwrap();
                arrived.fetch_add(1, Ordering::SeqCst);
                let t = Instant::now();
                while arrived.load(Ordering::SeqCst) < 2 && t.elapsed() < Duration::from_secs(2) {
                    std::hint::spin_loop();
                }
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    other.push_bytes(&b"z"[..]).map_err(|e| e.kind())
                }));
                Ok(r.map_err(|_| "panicked"))
            }
        };
        let ta = a.push_read_with(LineCodec::new(), cb(b.clone(), arrived.clone()));
        let tb = b.push_read_with(LineCodec::new(), cb(a.clone(), arrived.clone()));
        a_peer.write_all(b"x\n").await.unwrap();
        b_peer.write_all(b"x\n").await.unwrap();
        let ra = ta.await.map_err(|e| e.kind());
        let rb = tb.await.map_err(|e| e.kind());
        (ra, rb)
    });
    let (ra, rb) = got.expect("finished (no deadlock)");
    assert_eq!((ra, rb), (Ok(Ok(Ok(()))), Ok(Ok(Ok(())))));
}
