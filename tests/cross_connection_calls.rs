//! Completions of two spawned connections that call each other's handles
//! at the same moment (a proxy forwarding both ways, a pair closing each
//! other): each engine is held by its driver while its completion runs,
//! so a call that waited for the other engine would wait for ever (RQ-7).
//! Calls that queue writes, `push_shutdown` and `destroy` never wait for
//! another engine; a query that would wait for an engine that waits for
//! the caller panics instead of hanging.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyframe::codecs::LineCodec;
use anyframe::{ErrorKind, Handle, QueuedFramed};
use tokio::io::AsyncWriteExt;

#[path = "support/watched.rs"]
mod watched;

/// Two spawned connections with `wbuf_max`, each with its peer's end.
fn two_connections(
    wbuf_max: Option<usize>,
) -> (
    (Handle, tokio::io::DuplexStream),
    (Handle, tokio::io::DuplexStream),
) {
    let spawn = || {
        let (io, peer) = tokio::io::duplex(1 << 16);
        let (handle, _) = QueuedFramed::builder().wbuf_max(wbuf_max).build(io).spawn();
        (handle, peer)
    };
    (spawn(), spawn())
}

/// Runs `act(other)` in a read completion of each of two connections (with
/// `wbuf_max` when given), the two completions running at the same time on
/// two threads. Returns how both reads resolved (a completion that
/// panicked resolves its read with the panic), or `None` if they did not
/// within a few seconds.
fn both_at_once_with<R: Send + 'static>(
    wbuf_max: Option<usize>,
    act: fn(&Handle) -> R,
) -> Option<[Result<R, ErrorKind>; 2]> {
    watched::on_two_workers(Duration::from_secs(10), move || async move {
        let ((a, mut a_peer), (b, mut b_peer)) = two_connections(wbuf_max);
        let arrived = Arc::new(AtomicUsize::new(0));
        let read_then = |other: Handle, arrived: Arc<AtomicUsize>| {
            move |_, _: &mut anyframe::Requests<'_>| {
                watched::meet(&arrived, 2);
                Ok(act(&other))
            }
        };
        let ta = a.push_read_with(LineCodec::new(), read_then(b.clone(), arrived.clone()));
        let tb = b.push_read_with(LineCodec::new(), read_then(a.clone(), arrived.clone()));
        a_peer.write_all(b"go\n").await.unwrap();
        b_peer.write_all(b"go\n").await.unwrap();
        [ta.await, tb.await].map(|r| r.map_err(|e| e.kind()))
    })
}

/// [`both_at_once_with`] with the default `wbuf_max`.
fn both_at_once(act: fn(&Handle)) -> Option<[Result<(), ErrorKind>; 2]> {
    both_at_once_with(Some(anyframe::DEFAULT_WBUF_MAX), act)
}

#[test]
fn completions_writing_large_buffers_to_each_other_do_not_deadlock() {
    let outcome = both_at_once(|other| {
        other.push_bytes(vec![b'x'; 64 * 1024]).unwrap();
    });
    assert_eq!(outcome, Some([Ok(()), Ok(())]));
}

#[test]
fn completions_writing_through_encoders_to_each_other_do_not_deadlock() {
    let outcome = both_at_once(|other| {
        other.push_write(LineCodec::new(), "hello").unwrap();
        drop(other.call(LineCodec::new(), "ping", LineCodec::new()));
    });
    assert_eq!(outcome, Some([Ok(()), Ok(())]));
}

#[test]
fn completions_destroying_each_other_do_not_deadlock() {
    let outcome = both_at_once(|other| other.destroy());
    // Each read completed before the other connection's destroy came.
    assert_eq!(outcome, Some([Ok(()), Ok(())]));
}

#[test]
fn completions_shutting_each_others_output_do_not_deadlock() {
    let outcome = both_at_once(|other| {
        other.push_bytes(&b"last words"[..]).unwrap();
        other.push_shutdown().unwrap();
    });
    assert_eq!(outcome, Some([Ok(()), Ok(())]));
}

#[test]
fn completions_querying_each_other_panic_instead_of_hanging() {
    let outcome = both_at_once(|other| {
        let _ = other.write_buffered();
    })
    .expect("no hang");
    // The second to ask sees the cycle and panics; the first then gets its
    // answer.
    assert!(
        outcome.contains(&Err(ErrorKind::Panicked)) && outcome.contains(&Ok(())),
        "{outcome:?}"
    );
}

/// `push_shutdown` asked while the other engine is busy comes after the
/// writes queued before it, and refuses writes queued after it, as when
/// it is applied at once.
#[test]
fn a_shutdown_asked_from_another_connections_callback_keeps_its_place() {
    let checked = watched::on_two_workers(Duration::from_secs(10), || async {
        use tokio::io::AsyncReadExt;
        let (a_io, mut a_peer) = tokio::io::duplex(1 << 16);
        let (b_io, mut b_peer) = tokio::io::duplex(1 << 16);
        let (a, _) = QueuedFramed::new(a_io).spawn();
        let (b, _) = QueuedFramed::new(b_io).spawn();
        // B's engine stays busy in a completion while A's completion
        // writes to B and shuts B's output.
        let busy = Arc::new(AtomicUsize::new(0));
        let b_busy = busy.clone();
        let tb = b.push_read_with(LineCodec::new(), move |_, _| {
            b_busy.store(1, Ordering::SeqCst);
            let start = Instant::now();
            while b_busy.load(Ordering::SeqCst) == 1 && start.elapsed() < Duration::from_secs(2) {
                std::hint::spin_loop();
            }
            Ok(())
        });
        let (a_busy, to_b) = (busy.clone(), b.clone());
        let ta = a.push_read_with(LineCodec::new(), move |_, _| {
            while a_busy.load(Ordering::SeqCst) == 0 {
                std::hint::spin_loop();
            }
            to_b.push_bytes(&b"before\n"[..]).unwrap();
            to_b.push_shutdown().unwrap();
            // B's completion may end now; the write below waits for it.
            a_busy.store(2, Ordering::SeqCst);
            let refused = to_b.push_bytes(&b"after\n"[..]);
            Ok(refused.map_err(|e| e.kind()))
        });
        b_peer.write_all(b"go\n").await.unwrap();
        a_peer.write_all(b"go\n").await.unwrap();
        let refused = tokio::time::timeout(Duration::from_secs(5), ta)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(refused, Err(ErrorKind::InvalidInput));
        tokio::time::timeout(Duration::from_secs(5), tb)
            .await
            .unwrap()
            .unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), b_peer.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, b"before\n");
    });
    assert!(checked.is_some(), "no hang");
}

// ----- refusals: what another connection refuses comes at once ------------

/// A write after a requested `push_shutdown` is refused with EINVAL
/// ("writes queued after it are refused as usual") and, being a queueing
/// call, must not wait for the other engine.
#[test]
fn write_after_requested_shutdown_from_both_callbacks_is_refused_not_panicked() {
    let outcome = both_at_once_with(None, |other| {
        other.push_shutdown().unwrap();
        other.push_bytes(&b"after\n"[..]).map_err(|e| e.kind())
    });
    assert_eq!(
        outcome,
        Some([
            Ok(Err(ErrorKind::InvalidInput)),
            Ok(Err(ErrorKind::InvalidInput))
        ])
    );
}

/// `destroy` twice from a callback: the second is a `destroy` too, asked
/// for without waiting (RQ-7); it must not wait for the other engine.
#[test]
fn destroy_twice_from_both_callbacks_does_not_panic() {
    let outcome = both_at_once_with(None, |other| {
        other.destroy();
        other.destroy();
    });
    assert_eq!(outcome, Some([Ok(()), Ok(())]));
}

/// `push_shutdown` after a requested `destroy`: asked without waiting,
/// it returns Ok or the close error, but never panics.
#[test]
fn shutdown_after_requested_destroy_from_both_callbacks_does_not_panic() {
    let outcome = both_at_once_with(None, |other| {
        other.destroy();
        let _ = other.push_shutdown();
    });
    assert_eq!(outcome, Some([Ok(()), Ok(())]));
}

/// A write after a requested `destroy` is refused with the close error.
#[test]
fn write_after_requested_destroy_from_both_callbacks_is_refused_not_panicked() {
    let outcome = both_at_once_with(None, |other| {
        other.destroy();
        other
            .push_write(LineCodec::new(), "after")
            .map_err(|e| e.kind())
    });
    assert_eq!(
        outcome,
        Some([Ok(Err(ErrorKind::Closed)), Ok(Err(ErrorKind::Closed))])
    );
}

/// A read queued after a requested `destroy` fails with the close error
/// (its ticket), and queueing it does not wait for the other engine.
#[test]
fn read_after_requested_destroy_from_both_callbacks_does_not_panic() {
    let outcome = both_at_once_with(None, |other| {
        other.destroy();
        drop(other.push_read(LineCodec::new()));
    });
    assert_eq!(outcome, Some([Ok(()), Ok(())]));
}

/// "push_bytes of any size" never waits: a buffer larger than half of
/// `wbuf_max` but within it.
#[test]
fn large_buffer_within_wbuf_max_from_both_callbacks_does_not_panic() {
    let outcome = both_at_once_with(Some(256 * 1024), |other| {
        other
            .push_bytes(vec![b'x'; 200 * 1024])
            .map_err(|e| e.kind())
    });
    assert_eq!(outcome, Some([Ok(Ok(())), Ok(Ok(()))]));
}

/// Same through an encoder (push_write): the encoded item is over the
/// inbox's room, under the cap.
#[test]
fn large_encoded_write_within_wbuf_max_from_both_callbacks_does_not_panic() {
    let outcome = both_at_once_with(Some(256 * 1024), |other| {
        let line = "y".repeat(200 * 1024);
        other
            .push_write(LineCodec::new(), line)
            .map_err(|e| e.kind())
    });
    assert_eq!(outcome, Some([Ok(Ok(())), Ok(Ok(()))]));
}

/// A call (write + response read) with a large request.
#[test]
fn large_call_within_wbuf_max_from_both_callbacks_does_not_panic() {
    let outcome = both_at_once_with(Some(256 * 1024), |other| {
        let line = "z".repeat(200 * 1024);
        drop(other.call(LineCodec::new(), line, LineCodec::new()));
    });
    assert_eq!(outcome, Some([Ok(()), Ok(())]));
}

/// An encoder that, half-way, asks connection `other` for its state.
struct AskingEncoder {
    other: Handle,
    encoding: Arc<AtomicUsize>,
}

impl tokio_util::codec::Encoder<&'static str> for AskingEncoder {
    type Error = anyframe::Error;

    fn encode(&mut self, item: &'static str, dst: &mut bytes::BytesMut) -> anyframe::Result<()> {
        self.encoding.store(1, Ordering::SeqCst);
        // Time for `other`'s completion to reach this connection.
        std::thread::sleep(Duration::from_millis(100));
        let _ = self.other.is_eof();
        dst.extend_from_slice(item.as_bytes());
        Ok(())
    }
}

/// A write to connection A while A's engine is busy runs its encoder
/// while B's completion writes to A; the encoder asks B for its state. B's
/// completion must not wait for A's encoder, which waits for B's engine:
/// all three finish.
#[test]
fn an_encoder_asking_another_connection_while_its_callback_writes_here_does_not_deadlock() {
    let outcome = watched::on_two_workers(Duration::from_secs(10), || async {
        let (a_io, mut a_peer) = tokio::io::duplex(1 << 16);
        let (b_io, mut b_peer) = tokio::io::duplex(1 << 16);
        let (a, _) = QueuedFramed::new(a_io).spawn();
        let (b, _) = QueuedFramed::new(b_io).spawn();
        let a_busy = Arc::new(AtomicUsize::new(0));
        let encoding = Arc::new(AtomicUsize::new(0));
        let released = Arc::new(AtomicUsize::new(0));
        // A's completion holds A's engine until the write below is done,
        // so the write takes the way for a busy engine.
        let (busy, done) = (a_busy.clone(), released.clone());
        let ta = a.push_read_with(
            LineCodec::new(),
            move |_, _: &mut anyframe::Requests<'_>| {
                busy.store(1, Ordering::SeqCst);
                let start = Instant::now();
                while done.load(Ordering::SeqCst) == 0 && start.elapsed() < Duration::from_secs(3) {
                    std::thread::yield_now();
                }
                Ok(())
            },
        );
        // B's completion writes to A once A's encoder runs.
        let (a2, enc) = (a.clone(), encoding.clone());
        let tb = b.push_read_with(
            LineCodec::new(),
            move |_, _: &mut anyframe::Requests<'_>| {
                let start = Instant::now();
                while enc.load(Ordering::SeqCst) == 0 && start.elapsed() < Duration::from_secs(3) {
                    std::thread::yield_now();
                }
                a2.push_write(LineCodec::new(), "from b")
            },
        );
        a_peer.write_all(b"go\n").await.unwrap();
        while a_busy.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        b_peer.write_all(b"go\n").await.unwrap();
        let (a3, b3) = (a.clone(), b.clone());
        let writer = std::thread::spawn(move || {
            let encoder = AskingEncoder {
                other: b3,
                encoding,
            };
            let r = a3.push_write(encoder, "from the writer");
            released.store(1, Ordering::SeqCst);
            r.map_err(|e| e.kind())
        });
        let (ra, rb) = (ta.await, tb.await);
        let rw = tokio::task::spawn_blocking(move || writer.join().unwrap())
            .await
            .unwrap();
        [ra, rb]
            .map(|r| r.map_err(|e| e.kind()))
            .to_vec()
            .into_iter()
            .chain([rw])
            .collect::<Vec<_>>()
    });
    assert_eq!(outcome, Some(vec![Ok(()), Ok(()), Ok(())]));
}

/// An encoder that panics.
struct PanickingEncoder;

impl tokio_util::codec::Encoder<&'static str> for PanickingEncoder {
    type Error = anyframe::Error;

    fn encode(&mut self, _: &'static str, _: &mut bytes::BytesMut) -> anyframe::Result<()> {
        panic!("encoder boom");
    }
}

/// Each completion writes to the other connection through an encoder that
/// panics, both engines busy. The panic closes the connection it wrote to
/// without waiting for that engine (which waits for the caller's): both
/// writes go on panicking with the encoder's own message, not a wait
/// cycle's, and both connections close as a panic closes them.
#[test]
fn encoders_panicking_in_writes_to_each_other_close_both_with_the_panic() {
    let outcome = both_at_once_with(None, |other| {
        let payload = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            other.push_write(PanickingEncoder, "x")
        }))
        .expect_err("the encoder's panic goes on to the caller");
        let text = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        (text, other.clone())
    })
    .expect("no hang");
    for got in outcome {
        let (text, conn) = got.expect("the completion ran to its end");
        assert_eq!(text, "encoder boom");
        // (When the other engine was free by then, the write took it and
        // closed it there, with a text that does not repeat the panic's.)
        let e = conn.error().expect("closed by the panic");
        assert_eq!(e.kind(), ErrorKind::Panicked, "{e}");
    }
}

/// B's engine is held by a completion of B (which first runs `own` on
/// B's queue) while a completion of A, on the other worker, runs `act(B)`
/// and reports whether the encoder's panic came out. Returns B.
fn busy_b_while_a_acts(
    wbuf_max: Option<usize>,
    own: fn(&mut anyframe::Requests<'_>),
    act: fn(&Handle) -> bool,
) -> Option<(bool, Handle)> {
    watched::on_two_workers(Duration::from_secs(15), move || async move {
        let ((a, mut a_peer), (b, mut b_peer)) = two_connections(wbuf_max);
        let stage = Arc::new(AtomicUsize::new(0));
        let s = stage.clone();
        let tb = b.push_read_with(anyframe::codecs::LineCodec::new(), move |_, q| {
            own(q);
            s.store(1, Ordering::SeqCst);
            let t = std::time::Instant::now();
            while s.load(Ordering::SeqCst) < 2 && t.elapsed() < Duration::from_secs(3) {
                std::hint::spin_loop();
            }
            Ok(())
        });
        let s = stage.clone();
        let other = b.clone();
        let ta = a.push_read_with(anyframe::codecs::LineCodec::new(), move |_, _| {
            let t = std::time::Instant::now();
            while s.load(Ordering::SeqCst) < 1 && t.elapsed() < Duration::from_secs(3) {
                std::hint::spin_loop();
            }
            let panicked = act(&other);
            s.store(2, Ordering::SeqCst);
            Ok(panicked)
        });
        b_peer.write_all(b"go\n").await.unwrap();
        a_peer.write_all(b"go\n").await.unwrap();
        let _ = tb.await;
        let panicked = ta.await.expect("A's completion ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
        (panicked, b)
    })
}

fn write_panicking(b: &Handle) -> bool {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = b.push_write(PanickingEncoder, "x");
    }))
    .is_err()
}

/// An encoder that panics in a write to B made from A's callback while B's
/// engine is busy and its inbox refuses posts (a `push_shutdown` asked
/// without waiting, or its inbox sealed by B's own pushes past half of
/// `wbuf_max`): the write encodes apart from the engine, and its panic
/// must close B there too, as on the other paths.
#[test]
fn an_encoder_panic_past_a_refusing_inbox_closes_the_connection() {
    fn shut_then_write(b: &Handle) -> bool {
        let _ = b.push_shutdown();
        write_panicking(b)
    }
    fn fill_own(q: &mut anyframe::Requests<'_>) {
        q.push_bytes(vec![b'y'; 700]).unwrap();
    }
    fn nothing(_: &mut anyframe::Requests<'_>) {}
    type Own = fn(&mut anyframe::Requests<'_>);
    type Act = fn(&Handle) -> bool;
    let cases: [(Option<usize>, Own, Act); 2] = [
        (None, nothing, shut_then_write),
        (Some(1024), fill_own, write_panicking),
    ];
    for (wbuf_max, own, act) in cases {
        let (panicked, b) = busy_b_while_a_acts(wbuf_max, own, act).expect("no hang");
        assert!(panicked, "the encoder's panic goes on to the caller");
        let e = b.error().expect("B closed by the encoder's panic");
        assert_eq!(e.kind(), ErrorKind::Panicked, "{e}");
    }
}

/// `destroy` from A's callback after a `push_shutdown` of B asked the same
/// way, B's engine busy: the destroy is applied (the shutdown asked for
/// first does not count as B being closed; it was dropped).
#[test]
fn destroy_after_a_requested_shutdown_from_a_callback_is_applied() {
    fn shut_then_destroy(b: &Handle) -> bool {
        let _ = b.push_shutdown();
        b.destroy();
        false
    }
    fn nothing(_: &mut anyframe::Requests<'_>) {}
    let (_, b) = busy_b_while_a_acts(None, nothing, shut_then_destroy).expect("no hang");
    let e = b.error().expect("B destroyed");
    assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
}
