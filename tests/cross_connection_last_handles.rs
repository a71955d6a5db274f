//! Two connections whose completions each own the last handle of
//! the other (a proxy pair, each side closing the other by letting its
//! handle go: LC-3 "When the last Handle of a spawned connection is
//! dropped ... the driver keeps writing that output ... then closes").
//! RQ-7: a callback using another connection's handle never deadlocks,
//! and only a state query may panic; dropping a handle asks for no state.

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyframe::codecs::LineCodec;
use anyframe::{ErrorKind, Handle, QueuedFramed};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "support/watched.rs"]
mod watched;

/// How the two reads resolved, and whether each peer saw its end.
type Outcome = Option<([Result<(), ErrorKind>; 2], bool, bool)>;

#[test]
fn completions_dropping_each_others_last_handle_do_not_panic() {
    let got = watched::on_two_workers(Duration::from_secs(9), || async move {
        let (a_io, mut a_peer) = tokio::io::duplex(1 << 16);
        let (b_io, mut b_peer) = tokio::io::duplex(1 << 16);
        let (a, _da) = QueuedFramed::new(a_io).spawn();
        let (b, _db) = QueuedFramed::new(b_io).spawn();
        let arrived = Arc::new(AtomicUsize::new(0));
        // Each side's only handle to the other, in a slot its
        // completion empties.
        let slot_b: Arc<Mutex<Option<Handle>>> = Arc::new(Mutex::new(None));
        let slot_a: Arc<Mutex<Option<Handle>>> = Arc::new(Mutex::new(None));
        let read_then = |other: Arc<Mutex<Option<Handle>>>, arrived: Arc<AtomicUsize>| {
            move |_, _: &mut anyframe::Requests<'_>| {
                watched::meet(&arrived, 2);
                let last = other.lock().unwrap().take();
                drop(last);
                Ok(())
            }
        };
        let ta = a.push_read_with(LineCodec::new(), read_then(slot_b.clone(), arrived.clone()));
        let tb = b.push_read_with(LineCodec::new(), read_then(slot_a.clone(), arrived.clone()));
        *slot_b.lock().unwrap() = Some(b);
        *slot_a.lock().unwrap() = Some(a);
        a_peer.write_all(b"go\n").await.unwrap();
        b_peer.write_all(b"go\n").await.unwrap();
        let outcome = [ta.await, tb.await].map(|r| r.map_err(|e| e.kind()));
        // Both connections end: each peer reads to EOF.
        let mut sink = Vec::new();
        let ea = tokio::time::timeout(Duration::from_secs(3), a_peer.read_to_end(&mut sink))
            .await
            .is_ok();
        let eb = tokio::time::timeout(Duration::from_secs(3), b_peer.read_to_end(&mut sink))
            .await
            .is_ok();
        (outcome, ea, eb)
    });
    // Both completions returned, and both peers saw their end.
    let expected: Outcome = Some(([Ok(()), Ok(())], true, true));
    assert_eq!(got, expected);
}
