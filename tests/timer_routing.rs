//! The timers (docs/semantics.md §6, TO-1 … TO-6) with LC-* (close,
//! linger), WQ-* and RQ-* where they meet them, on both front ends: who
//! hears an expiry when several come together, a setter that finds one,
//! periods at the extremes, hooks on every expiry. Every wait is bounded.

#[path = "support/mock_io.rs"]
mod mock_io;
#[path = "support/timing.rs"]
mod timing;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use anyframe::codecs::LineCodec;
use anyframe::{ErrorKind, OrEof, QueuedFramed, Timeout};
use timing::{bounded, within};
use tokio::time::Instant;

const MS: fn(u64) -> Duration = Duration::from_millis;

async fn long_bounded<F: Future<Output = ()>>(body: F) {
    tokio::time::timeout(Duration::from_secs(60), body)
        .await
        .expect("test hung");
}

/// Asserts that `r` is the timeout of timer `want`.
#[track_caller]
fn told<T: std::fmt::Debug>(r: &anyframe::Result<T>, want: Timeout) {
    assert_eq!(
        r.as_ref().err().and_then(|e| e.timeout()),
        Some(want),
        "{}",
        which(r)
    );
}

fn which<T: std::fmt::Debug>(r: &anyframe::Result<T>) -> String {
    match r {
        Ok(v) => format!("Ok({v:?})"),
        Err(e) => format!(
            "Err(kind={:?}, timeout={:?}, fatal={})",
            e.kind(),
            e.timeout(),
            e.is_fatal()
        ),
    }
}

/// Counts the polls of a future (to see a spin, or a poll that never
/// returns to the executor).
struct Counted<F> {
    inner: Pin<Box<F>>,
    polls: Arc<AtomicUsize>,
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        self.inner.as_mut().poll(cx)
    }
}

/// Runs `body` on its own current-thread runtime in a thread, failing if it
/// does not finish within `limit` of real time (a poll that never returns
/// cannot be bounded by a tokio timer on the same runtime).
fn on_watchdog<F>(limit: Duration, paused: bool, body: F) -> Result<(), String>
where
    F: FnOnce() -> Pin<Box<dyn Future<Output = ()>>> + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut rt = tokio::runtime::Builder::new_current_thread();
        rt.enable_all();
        if paused {
            rt.start_paused(true);
        }
        let rt = rt.build().unwrap();
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.block_on(body())));
        let _ = tx.send(out.map_err(|p| {
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        }));
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(panic)) => Err(format!("panicked: {panic}")),
        Err(_) => Err(format!("did not finish within {limit:?} of real time")),
    }
}

// ---------------------------------------------------------------------------
// Spawned driver: co-expiring idle and write timers, a write-side waiter.
// ---------------------------------------------------------------------------

/// TO-3: "A write-side waiter told of several timeouts that expired
/// together gets the write timeout if one of them is, else the first."
/// Handle::flush against a peer that reads nothing, `timeout` = `wtimeout`.
#[tokio::test(start_paused = true)]
async fn handle_flush_gets_write_timeout_when_idle_expires_with_it() {
    bounded(async {
        let (io, _peer) = mock_io::pair();
        let (h, _driver) = QueuedFramed::builder()
            .timeout(MS(100))
            .wtimeout(MS(100))
            .build(io)
            .spawn();
        h.push_bytes(&b"stuck"[..]).unwrap();
        let r = within(MS(150), h.flush()).await.expect("told by 100 ms");
        told(&r, Timeout::Write);
    })
    .await;
}

/// The same with `ready_to_write` above the high watermark.
#[tokio::test(start_paused = true)]
async fn handle_ready_to_write_gets_write_timeout_when_idle_expires_with_it() {
    bounded(async {
        let (io, _peer) = mock_io::pair();
        let (h, _driver) = QueuedFramed::builder()
            .timeout(MS(100))
            .wtimeout(MS(100))
            .watermarks(4, 0)
            .build(io)
            .spawn();
        h.push_bytes(&b"stuck stuck"[..]).unwrap();
        let r = within(MS(150), h.ready_to_write())
            .await
            .expect("told by 100 ms");
        told(&r, Timeout::Write);
    })
    .await;
}

/// Control on the inline front end (held in the existing suite too).
#[tokio::test(start_paused = true)]
async fn control_inline_flush_gets_write_timeout_when_idle_expires_with_it() {
    bounded(async {
        let (io, _peer) = mock_io::pair();
        let mut conn = QueuedFramed::builder()
            .timeout(MS(100))
            .wtimeout(MS(100))
            .build(io);
        conn.push_bytes(&b"stuck"[..]).unwrap();
        let r = within(MS(150), conn.flush()).await.expect("told by 100 ms");
        told(&r, Timeout::Write);
    })
    .await;
}

// ---------------------------------------------------------------------------
// TO-6 through the setter (TO-4).
// ---------------------------------------------------------------------------

/// A response read whose caller gave up stays queued (owed); a flush waits
/// on a peer that reads nothing. The read timer expiring by itself closes
/// the connection with a fatal ETIMEDOUT the flush hears (TO-6).
#[tokio::test(start_paused = true)]
async fn control_to6_natural_expiry_with_owed_response_and_flush_is_fatal() {
    bounded(async {
        let (io, _peer) = mock_io::pair();
        let (h, _driver) = QueuedFramed::builder().rtimeout(MS(100)).build(io).spawn();
        let t = h.push_response_with(LineCodec::new(), |l, _| Ok(l));
        drop(t);
        h.push_bytes(&b"stuck"[..]).unwrap();
        let r = within(MS(150), h.flush()).await.expect("told by 100 ms");
        let e = r.expect_err("the peer took nothing");
        assert_eq!(e.timeout(), Some(Timeout::Read));
        assert!(e.is_fatal(), "TO-6: fatal, {e:?}");
        assert!(h.is_closed());
    })
    .await;
}

/// The same situation, but the read timer is set (TO-4) after its period
/// has already passed since the last read: "Setting a timer checks the
/// deadline ... at once"; the expiry found there is the same expiry, so
/// TO-6 applies: the flush hears the fatal error, the connection closes.
#[tokio::test(start_paused = true)]
async fn to6_setter_found_expiry_with_owed_response_and_flush_is_fatal() {
    bounded(async {
        let (io, _peer) = mock_io::pair();
        let (h, _driver) = QueuedFramed::builder().build(io).spawn();
        let t = h.push_response_with(LineCodec::new(), |l, _| Ok(l));
        drop(t);
        h.push_bytes(&b"stuck"[..]).unwrap();
        let flush = tokio::spawn({
            let h = h.clone();
            async move { h.flush().await }
        });
        tokio::time::sleep(MS(500)).await;
        assert!(!flush.is_finished());
        h.set_rtimeout(MS(100));
        let r = within(MS(10), flush)
            .await
            .expect("TO-4: told at once")
            .unwrap();
        let e = r.expect_err("the peer took nothing");
        assert_eq!(e.timeout(), Some(Timeout::Read));
        assert!(
            e.is_fatal() && h.is_closed(),
            "TO-6: a read timeout with a response owed and nobody to hear it \
             is fatal; the setter gave the flush {e:?}, closed={}",
            h.is_closed()
        );
    })
    .await;
}

// ---------------------------------------------------------------------------
// 1 ns periods with a hook: the engine loops inside one poll.
// ---------------------------------------------------------------------------

/// Inline: rtimeout 1 ns, a hook, a read waiting on a silent peer, on real
/// time. Every expiry runs the hook (TO-3 allows that), but a poll must
/// come back to the executor: the hook here stops it after 100 000 runs
/// (destroy); before that, the read future should have returned Pending.
#[test]
fn inline_one_ns_rtimeout_with_a_hook_returns_between_hook_runs() {
    let out = on_watchdog(Duration::from_secs(30), false, || {
        Box::pin(async {
            let (io, _peer) = mock_io::pair();
            let mut conn = QueuedFramed::builder()
                .rtimeout(Duration::from_nanos(1))
                .build(io);
            let runs = Arc::new(AtomicUsize::new(0));
            conn.on_timeout({
                let runs = runs.clone();
                move |_, q| {
                    if runs.fetch_add(1, Ordering::SeqCst) + 1 >= 100_000 {
                        q.destroy();
                    }
                }
            });
            let polls = Arc::new(AtomicUsize::new(0));
            let read = Counted {
                inner: Box::pin(conn.read(LineCodec::new())),
                polls: polls.clone(),
            };
            let r = tokio::time::timeout(MS(200), read).await;
            let runs = runs.load(Ordering::SeqCst);
            let polls = polls.load(Ordering::SeqCst);
            assert!(
                !(runs >= 100_000 && polls <= 1),
                "the hook ran {runs} times inside {polls} poll(s) of the read \
                 (it never returned to the executor); result {:?}",
                r.map(|r| which(&r))
            );
        })
    });
    out.unwrap();
}

/// Spawned: the same on the driver; the test task should get to run while
/// the driver hears its 1 ns timer (the driver spends its task budget per
/// round, ARCHITECTURE/`poll_drive`). The hook destroys the connection
/// after 100 000 runs; the test task, yielding once, should find it open.
#[test]
fn handle_one_ns_rtimeout_with_a_hook_lets_other_tasks_run() {
    let out = on_watchdog(Duration::from_secs(30), false, || {
        Box::pin(async {
            let (io, _peer) = mock_io::pair();
            let (h, _driver) = QueuedFramed::builder()
                .rtimeout(Duration::from_nanos(1))
                .build(io)
                .spawn();
            let runs = Arc::new(AtomicUsize::new(0));
            h.on_timeout({
                let runs = runs.clone();
                move |_, q| {
                    if runs.fetch_add(1, Ordering::SeqCst) + 1 >= 100_000 {
                        q.destroy();
                    }
                }
            });
            let _t = h.push_read(LineCodec::new());
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
            let runs = runs.load(Ordering::SeqCst);
            assert!(
                !h.is_closed(),
                "the driver ran the hook {runs} times before the test task \
                 ran again (no yield inside poll_fill's hook loop)"
            );
        })
    });
    out.unwrap();
}

/// Control: 1 ns idle timer, hook, no read queued: the driver goes
/// through `poll_drive`'s loop, which spends its budget: no starvation.
#[test]
fn control_handle_one_ns_idle_with_a_hook_and_no_read_yields() {
    let out = on_watchdog(Duration::from_secs(30), false, || {
        Box::pin(async {
            let (io, _peer) = mock_io::pair();
            let (h, _driver) = QueuedFramed::builder()
                .timeout(Duration::from_nanos(1))
                .build(io)
                .spawn();
            let runs = Arc::new(AtomicUsize::new(0));
            h.on_timeout({
                let runs = runs.clone();
                move |_, q| {
                    if runs.fetch_add(1, Ordering::SeqCst) + 1 >= 100_000 {
                        q.destroy();
                    }
                }
            });
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
            assert!(!h.is_closed(), "starved");
            h.destroy();
        })
    });
    out.unwrap();
}

// ---------------------------------------------------------------------------
// A period whose deadline is just short of what an Instant can hold.
// ---------------------------------------------------------------------------

/// The largest period `p` for which `now + p` is representable.
fn longest_period(now: Instant) -> Duration {
    let mut lo: u128 = 0;
    let mut hi: u128 = u64::MAX as u128 * 1_000_000_000;
    let d = |n: u128| Duration::new((n / 1_000_000_000) as u64, (n % 1_000_000_000) as u32);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if now.checked_add(d(mid)).is_some() {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    d(lo)
}

/// `Duration::MAX` never expires (the deadline does not fit an Instant).
/// A period whose deadline still fits, by less than a millisecond, should
/// behave the same: never expire, and never panic.
#[test]
fn a_period_that_just_fits_an_instant_does_not_panic() {
    let out = on_watchdog(Duration::from_secs(30), true, || {
        Box::pin(async {
            let (io, peer) = mock_io::pair();
            let now = Instant::now();
            let p = longest_period(now);
            let mut conn = QueuedFramed::builder().rtimeout(p).build(io);
            let r = tokio::time::timeout(MS(100), conn.read(LineCodec::new())).await;
            assert!(r.is_err(), "nothing expires: {:?}", r.map(|r| which(&r)));
            peer.send(b"hi\n");
            let r = tokio::time::timeout(MS(100), conn.read(LineCodec::new())).await;
            assert!(matches!(r, Ok(Ok(_))), "{:?}", r.map(|r| which(&r)));
        })
    });
    out.unwrap();
}

/// Control: `Duration::MAX` everywhere.
#[tokio::test(start_paused = true)]
async fn control_duration_max_never_expires() {
    bounded(async {
        let (io, peer) = mock_io::pair();
        let mut conn = QueuedFramed::builder()
            .timeout(Duration::MAX)
            .rtimeout(Duration::MAX)
            .wtimeout(Duration::MAX)
            .build(io);
        let r = within(Duration::from_secs(5), conn.read(LineCodec::new())).await;
        assert!(r.is_err(), "nothing expires");
        peer.send(b"x\n");
        let r = within(MS(1), conn.read(LineCodec::new())).await.unwrap();
        assert!(r.is_ok(), "{}", which(&r));
    })
    .await;
}

// ---------------------------------------------------------------------------
// After-close writes: no hooks, bounded by linger, not by the timers.
// ---------------------------------------------------------------------------

/// Inline: an input-side fatal error (end of input inside a request,
/// EPIPE) with output queued and a peer that reads nothing. The flush
/// after it writes for up to `linger` (LC-3, LC-5), runs no hook (LC-1:
/// none after the close), and returns the stored error, not a timeout.
#[tokio::test(start_paused = true)]
async fn inline_after_close_flush_runs_no_hook_and_lasts_linger() {
    bounded(async {
        let (io, peer) = mock_io::pair();
        let mut conn = QueuedFramed::builder()
            .timeout(MS(100))
            .rtimeout(MS(100))
            .wtimeout(MS(100))
            .linger(MS(1000))
            .build(io);
        let runs = Arc::new(AtomicUsize::new(0));
        conn.on_timeout({
            let runs = runs.clone();
            move |_, _| {
                runs.fetch_add(1, Ordering::SeqCst);
            }
        });
        conn.push_bytes(&b"answer\n"[..]).unwrap();
        peer.send(b"partial");
        peer.close();
        let r = within(MS(10), conn.read(LineCodec::new())).await.unwrap();
        assert_eq!(
            r.as_ref().err().map(|e| e.kind()),
            Some(ErrorKind::BrokenPipe),
            "{}",
            which(&r)
        );
        assert!(conn.is_closed());
        let before = runs.load(Ordering::SeqCst);
        let t0 = Instant::now();
        let r = within(MS(2000), conn.flush())
            .await
            .expect("bounded by linger");
        let took = t0.elapsed();
        assert_eq!(
            r.as_ref().err().map(|e| e.kind()),
            Some(ErrorKind::BrokenPipe),
            "{}",
            which(&r)
        );
        assert!(took >= MS(1000) && took < MS(1100), "took {took:?}");
        assert_eq!(
            runs.load(Ordering::SeqCst),
            before,
            "a hook ran after the close"
        );
    })
    .await;
}

/// Inline: the after-close flush with a peer that takes a byte now and
/// then; the linger period counts "from when the peer first stops taking
/// it" (LC-3). Then a second flush after the first returned: it must not
/// wait a new linger period.
#[tokio::test(start_paused = true)]
async fn inline_after_close_second_flush_does_not_linger_again() {
    bounded(async {
        let (io, peer) = mock_io::pair();
        let mut conn = QueuedFramed::builder()
            .linger(MS(1000))
            .wtimeout(MS(50))
            .build(io);
        conn.push_bytes(&b"answer\n"[..]).unwrap();
        peer.send(b"partial");
        peer.close();
        let _ = within(MS(10), conn.read(LineCodec::new())).await.unwrap();
        let r = within(MS(2000), conn.flush()).await.expect("bounded");
        assert!(r.is_err());
        let t0 = Instant::now();
        let r = within(MS(2000), conn.shutdown_write())
            .await
            .expect("bounded");
        assert!(r.is_err());
        assert!(t0.elapsed() < MS(10), "lingered again: {:?}", t0.elapsed());
    })
    .await;
}

/// Spawned: input-side fatal error with output queued to a peer that reads
/// nothing; the driver lingers (LC-3/LC-5). No hook runs during it.
#[tokio::test(start_paused = true)]
async fn handle_linger_after_input_error_runs_no_hook() {
    bounded(async {
        let (io, peer) = mock_io::pair();
        let (h, driver) = QueuedFramed::builder()
            .timeout(MS(100))
            .rtimeout(MS(100))
            .wtimeout(MS(100))
            .linger(MS(1000))
            .build(io)
            .spawn();
        let runs = Arc::new(AtomicUsize::new(0));
        h.on_timeout({
            let runs = runs.clone();
            move |_, _| {
                runs.fetch_add(1, Ordering::SeqCst);
            }
        });
        h.push_bytes(&b"answer\n"[..]).unwrap();
        peer.send(b"partial");
        peer.close();
        let r = within(MS(10), h.read(LineCodec::new())).await.unwrap();
        assert_eq!(
            r.as_ref().err().map(|e| e.kind()),
            Some(ErrorKind::BrokenPipe),
            "{}",
            which(&r)
        );
        let before = runs.load(Ordering::SeqCst);
        let t0 = Instant::now();
        let parts = within(MS(2000), driver).await.expect("bounded by linger");
        assert!(t0.elapsed() >= MS(1000) - MS(1), "{:?}", t0.elapsed());
        assert!(parts.is_ok());
        assert_eq!(
            runs.load(Ordering::SeqCst),
            before,
            "a hook ran after the close"
        );
        drop(h);
    })
    .await;
}

// ---------------------------------------------------------------------------
// Handle::flush marks versus a write timeout.
// ---------------------------------------------------------------------------

/// Flush A covers 5 bytes, flush B 5 more. The peer takes exactly A's
/// bytes then nothing: A resolves Ok at its own mark; B hears the write
/// timeout a period after that write (WQ-2: the write was activity). A
/// later flush C, once the peer takes the rest, resolves Ok.
#[tokio::test(start_paused = true)]
async fn handle_flush_marks_and_write_timeout() {
    bounded(async {
        let (io, peer) = mock_io::pair();
        let (h, _driver) = QueuedFramed::builder().wtimeout(MS(100)).build(io).spawn();
        h.push_bytes(&b"AAAAA"[..]).unwrap();
        let a = tokio::spawn({
            let h = h.clone();
            async move { (h.flush().await, Instant::now()) }
        });
        tokio::task::yield_now().await;
        h.push_bytes(&b"BBBBB"[..]).unwrap();
        let b = tokio::spawn({
            let h = h.clone();
            async move { (h.flush().await, Instant::now()) }
        });
        let t0 = Instant::now();
        tokio::time::sleep(MS(60)).await;
        peer.accept(5);
        let (ra, at_a) = within(MS(10), a).await.expect("A at its mark").unwrap();
        assert!(ra.is_ok(), "A: {}", which(&ra));
        assert!(at_a - t0 < MS(61), "A late: {:?}", at_a - t0);
        let (rb, at_b) = within(MS(200), b).await.expect("B told").unwrap();
        assert_eq!(
            rb.as_ref().err().and_then(|e| e.timeout()),
            Some(Timeout::Write),
            "B: {}",
            which(&rb)
        );
        assert!(!rb.as_ref().unwrap_err().is_fatal());
        assert_eq!(at_b - t0, MS(160), "a period after the write");
        let c = tokio::spawn({
            let h = h.clone();
            async move { h.flush().await }
        });
        tokio::time::sleep(MS(10)).await;
        peer.accept(5);
        let rc = within(MS(10), c).await.expect("C done").unwrap();
        assert!(rc.is_ok(), "C: {}", which(&rc));
        assert_eq!(peer.written(), b"AAAAABBBBB");
    })
    .await;
}

// ---------------------------------------------------------------------------
// Periods changed at runtime while a waiter waits (TO-4).
// ---------------------------------------------------------------------------

/// A read waits with rtimeout 10 s; at 1 s the period is cut to 3 s: the
/// read hears it at 3 s (counted from the last read, TO-4), not at 10 s;
/// raised back to 10 s at 2 s, it hears nothing before 10 s.
#[tokio::test(start_paused = true)]
async fn handle_period_changed_while_a_read_waits() {
    long_bounded(async {
        let (io, _peer) = mock_io::pair();
        let (h, _driver) = QueuedFramed::builder()
            .rtimeout(Duration::from_secs(10))
            .build(io)
            .spawn();
        let t0 = Instant::now();
        let r = tokio::spawn({
            let h = h.clone();
            async move { (h.read(LineCodec::new()).await, Instant::now()) }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        h.set_rtimeout(Duration::from_secs(3));
        let (res, at) = within(Duration::from_secs(5), r)
            .await
            .expect("told in the first part")
            .unwrap();
        told(&res, Timeout::Read);
        assert_eq!(at - t0, Duration::from_secs(3));

        // The expiry moved the stamp to 3 s. Short, then long again.
        let r = tokio::spawn({
            let h = h.clone();
            async move { (h.read(LineCodec::new()).await, Instant::now()) }
        });
        tokio::time::sleep(Duration::from_secs(1)).await; // 4 s
        h.set_rtimeout(Duration::from_secs(2)); // deadline 5 s
        tokio::time::sleep(MS(500)).await; // 4.5 s
        h.set_rtimeout(Duration::from_secs(10)); // deadline 13 s
        let (res, at) = within(Duration::from_secs(12), r)
            .await
            .expect("told in the second part")
            .unwrap();
        told(&res, Timeout::Read);
        assert_eq!(at - t0, Duration::from_secs(13));
    })
    .await;
}

// ---------------------------------------------------------------------------
// Hooks that write on every expiry.
// ---------------------------------------------------------------------------

/// rtimeout with a keepalive hook pushing a write at each expiry, a read
/// waiting: writes do not move the read timer (TO-1), so the hook runs
/// once per period, exactly, for 10 periods; every ping goes out.
#[tokio::test(start_paused = true)]
async fn inline_keepalive_hook_runs_once_per_read_period() {
    bounded(async {
        let (io, peer) = mock_io::pair();
        peer.accept(1 << 20);
        let mut conn = QueuedFramed::builder().rtimeout(MS(100)).build(io);
        let at = Arc::new(Mutex::new(Vec::new()));
        let t0 = Instant::now();
        conn.on_timeout({
            let at = at.clone();
            move |w, q| {
                at.lock().unwrap().push((w, t0.elapsed()));
                q.push_bytes(&b"ping\n"[..]).unwrap();
            }
        });
        let r = within(MS(1050), conn.read(LineCodec::new())).await;
        assert!(r.is_err());
        let at = at.lock().unwrap().clone();
        let want: Vec<_> = (1..=10).map(|i| (Timeout::Read, MS(100 * i))).collect();
        assert_eq!(at, want);
        assert_eq!(peer.written().len(), 50);
    })
    .await;
}

/// Idle timer with the same hook: each ping written is activity, so the
/// hook runs once per period too (the write moves the idle stamp).
#[tokio::test(start_paused = true)]
async fn handle_keepalive_hook_on_idle_runs_once_per_period() {
    bounded(async {
        let (io, peer) = mock_io::pair();
        peer.accept(1 << 20);
        let (h, _driver) = QueuedFramed::builder().timeout(MS(100)).build(io).spawn();
        let at = Arc::new(Mutex::new(Vec::new()));
        let t0 = Instant::now();
        h.on_timeout({
            let at = at.clone();
            move |w, q| {
                at.lock().unwrap().push((w, t0.elapsed()));
                q.push_bytes(&b"ping\n"[..]).unwrap();
            }
        });
        let _t = h.push_read(LineCodec::new());
        tokio::time::sleep(MS(1050)).await;
        let at = at.lock().unwrap().clone();
        let want: Vec<_> = (1..=10).map(|i| (Timeout::Idle, MS(100 * i))).collect();
        assert_eq!(at, want);
        assert_eq!(peer.written().len(), 50);
    })
    .await;
}

// ---------------------------------------------------------------------------
// OrEof at end of input and a read timeout.
// ---------------------------------------------------------------------------

/// End of input does not count as a read (TO-1): a read timer keeps
/// firing after it. An `OrEof` read at end of input is answered at once
/// (None), before and after an expiry; it never hears the timeout, and the
/// connection stays open and usable for writes.
#[tokio::test(start_paused = true)]
async fn or_eof_at_end_of_input_and_the_read_timer() {
    bounded(async {
        let (io, peer) = mock_io::pair();
        peer.accept(1 << 20);
        let mut conn = QueuedFramed::builder().rtimeout(MS(100)).build(io);
        peer.send(b"one\n");
        let r = within(MS(1), conn.read(OrEof::new(LineCodec::new())))
            .await
            .unwrap();
        assert!(matches!(r, Ok(Some(_))), "{}", which(&r));
        tokio::time::sleep(MS(50)).await;
        peer.close();
        let r = within(MS(1), conn.read(OrEof::new(LineCodec::new())))
            .await
            .unwrap();
        assert!(matches!(r, Ok(None)), "{}", which(&r));
        tokio::time::sleep(MS(250)).await;
        let r = within(MS(1), conn.read(OrEof::new(LineCodec::new())))
            .await
            .unwrap();
        assert!(matches!(r, Ok(None)), "after expiries: {}", which(&r));
        conn.push_bytes(&b"bye\n"[..]).unwrap();
        let r = within(MS(1), conn.flush()).await.unwrap();
        assert!(r.is_ok(), "{}", which(&r));
        assert!(!conn.is_closed());
    })
    .await;
}

/// Spawned: an OrEof read queued while the read timer is about to expire
/// and end of input comes in the same turn as the expiry: the read gets
/// its clean end (None), not ETIMEDOUT (the end of input was there).
#[tokio::test(start_paused = true)]
async fn handle_or_eof_end_of_input_at_the_expiry() {
    bounded(async {
        let (io, peer) = mock_io::pair();
        let (h, _driver) = QueuedFramed::builder().rtimeout(MS(100)).build(io).spawn();
        let r = tokio::spawn({
            let h = h.clone();
            async move { h.read(OrEof::new(LineCodec::new())).await }
        });
        tokio::time::sleep(MS(99)).await;
        tokio::task::yield_now().await;
        tokio::time::advance(MS(1)).await;
        peer.close();
        let res = within(MS(50), r).await.expect("answered").unwrap();
        // Either order is allowed by the rules if both happen "at once";
        // but a None must come eventually and the connection stays open.
        if let Err(e) = &res {
            assert!(!e.is_fatal(), "{}", which(&res));
            let r2 = within(MS(1), h.read(OrEof::new(LineCodec::new())))
                .await
                .unwrap();
            assert!(matches!(r2, Ok(None)), "{}", which(&r2));
        }
        assert!(!h.is_closed());
    })
    .await;
}

// ---------------------------------------------------------------------------
// A batch told a timeout after it began a frame.
// ---------------------------------------------------------------------------

/// A line decoder that consumes a partial line as it arrives (keeps it
/// itself): a frame begun consumes input (§4, "A frame begun is finished").
#[derive(Default)]
struct Hoarder(Vec<u8>);

impl tokio_util::codec::Decoder for Hoarder {
    type Item = Vec<u8>;
    type Error = anyframe::Error;
    fn decode(&mut self, src: &mut bytes::BytesMut) -> Result<Option<Vec<u8>>, anyframe::Error> {
        match src.iter().position(|&b| b == b'\n') {
            Some(i) => {
                let line = src.split_to(i + 1);
                self.0.extend_from_slice(&line[..i]);
                Ok(Some(std::mem::take(&mut self.0)))
            }
            None => {
                let all = src.split();
                self.0.extend_from_slice(&all);
                Ok(None)
            }
        }
    }
}

/// Handle::read_many, told the read timeout after its decoder consumed
/// part of a line: it finishes that frame for nobody and stops; the
/// frames behind it are the next request's (§4 Batches).
#[tokio::test(start_paused = true)]
async fn handle_read_many_told_a_timeout_mid_frame_leaves_the_next_frames() {
    bounded(async {
        let (io, peer) = mock_io::pair();
        let (h, _driver) = QueuedFramed::builder().rtimeout(MS(100)).build(io).spawn();
        let first = tokio::spawn({
            let h = h.clone();
            async move { h.read_many(Hoarder::default(), 10).await.map(|(_, f)| f) }
        });
        tokio::time::sleep(MS(10)).await;
        peer.send(b"abc");
        let r = within(MS(200), first).await.expect("told").unwrap();
        told(&r, Timeout::Read);
        peer.send(b"def\nghi\njkl\n");
        let next = within(MS(50), h.read_many(Hoarder::default(), 10))
            .await
            .expect("next batch");
        let frames = next.map(|(_, f)| f);
        assert_eq!(
            frames.as_ref().map_err(|e| format!("{e:?}")),
            Ok(&vec![b"ghi".to_vec(), b"jkl".to_vec()]),
        );
        assert!(!h.is_closed());
    })
    .await;
}

/// The same, with a plain read queued next instead of a batch.
#[tokio::test(start_paused = true)]
async fn handle_read_many_told_a_timeout_mid_frame_then_a_plain_read() {
    bounded(async {
        let (io, peer) = mock_io::pair();
        let (h, _driver) = QueuedFramed::builder().rtimeout(MS(100)).build(io).spawn();
        let first = tokio::spawn({
            let h = h.clone();
            async move { h.read_many(Hoarder::default(), 10).await.map(|(_, f)| f) }
        });
        tokio::time::sleep(MS(10)).await;
        peer.send(b"abc");
        let r = within(MS(200), first).await.expect("told").unwrap();
        assert!(r.is_err());
        peer.send(b"def\nghi\njkl\n");
        let next = within(MS(50), h.read(LineCodec::new()))
            .await
            .expect("next read");
        assert_eq!(
            next.map(|l| l.line().to_vec())
                .map_err(|e| format!("{e:?}")),
            Ok(b"ghi".to_vec())
        );
    })
    .await;
}

/// TO-3 for `ready_to_write`: idle and read expire together with no read
/// queued; the write-side waiter gets "the first" (idle).
#[tokio::test(start_paused = true)]
async fn handle_ready_to_write_gets_the_first_of_idle_and_read() {
    bounded(async {
        let (io, _peer) = mock_io::pair();
        let (h, _driver) = QueuedFramed::builder()
            .timeout(MS(100))
            .rtimeout(MS(100))
            .watermarks(4, 0)
            .build(io)
            .spawn();
        h.push_bytes(&b"stuck stuck"[..]).unwrap();
        let r = within(MS(150), h.ready_to_write()).await.expect("told");
        told(&r, Timeout::Idle);
        let f = within(MS(150), h.flush()).await.expect("told");
        told(&f, Timeout::Idle);
    })
    .await;
}

/// `Handle::closed()` awaited before a TO-6 close resolves with it.
#[tokio::test(start_paused = true)]
async fn handle_closed_resolves_on_a_to6_close() {
    bounded(async {
        let (io, _peer) = mock_io::pair();
        let (h, _driver) = QueuedFramed::builder().rtimeout(MS(100)).build(io).spawn();
        let closed = h.closed();
        let t = h.push_response_with(LineCodec::new(), |l, _| Ok(l));
        let r = within(MS(150), t).await.expect("told");
        assert!(r.is_err());
        let e = within(MS(150), closed).await.expect("closed by TO-6");
        assert!(e.is_fatal() && e.timeout() == Some(Timeout::Read), "{e:?}");
    })
    .await;
}

// ---------------------------------------------------------------------------
// Split halves in two tasks: activity of the other direction.
// ---------------------------------------------------------------------------

/// The `Sink` half writes to a peer that reads everything, every 50 ms;
/// the `Stream` half waits for input that never comes. Writes do not move
/// the read timer (TO-1): the `Stream` hears a read timeout every 100 ms,
/// exactly; the idle timer (250 ms) never fires, as writes keep moving it;
/// the `Sink` hears nothing.
#[tokio::test(start_paused = true)]
async fn split_writes_do_not_restart_the_read_timer_and_keep_idle_quiet() {
    use futures::{SinkExt, StreamExt};
    bounded(async {
        let (io, peer) = mock_io::pair();
        peer.accept(1 << 20);
        let conn = QueuedFramed::builder()
            .rtimeout(MS(100))
            .timeout(MS(250))
            .build_with_codec(io, bytes_codec());
        let (mut sink, mut stream) = conn.split::<bytes::Bytes>();
        let t0 = Instant::now();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while t0.elapsed() < MS(1000) {
                match within(MS(1000), stream.next()).await {
                    Ok(Some(Err(e))) => got.push((e.timeout(), t0.elapsed())),
                    other => return Err(format!("{other:?}")),
                }
            }
            Ok(got)
        });
        let writer = tokio::spawn(async move {
            for _ in 0..20 {
                tokio::time::sleep(MS(50)).await;
                if let Err(e) = sink.send(bytes::Bytes::from_static(b"x")).await {
                    return Err(format!("{e:?} at {:?}", t0.elapsed()));
                }
            }
            Ok(())
        });
        let r = reader.await.unwrap();
        let w = writer.await.unwrap();
        assert_eq!(w, Ok(()));
        let want: Vec<_> = (1..=10)
            .map(|i| (Some(Timeout::Read), MS(100 * i)))
            .collect();
        assert_eq!(r, Ok(want));
    })
    .await;
}

/// The mirror: the peer sends a line every 50 ms and reads nothing; the
/// `Sink` half waits in a flush. Reads do not move the write timer: the
/// flush hears a write timeout every 100 ms; the `Stream` gets every line
/// and no timeout.
#[tokio::test(start_paused = true)]
async fn split_reads_do_not_restart_the_write_timer() {
    use futures::{SinkExt, StreamExt};
    bounded(async {
        let (io, peer) = mock_io::pair();
        let conn = QueuedFramed::builder()
            .wtimeout(MS(100))
            .build_with_codec(io, bytes_codec());
        let (mut sink, mut stream) = conn.split::<bytes::Bytes>();
        let t0 = Instant::now();
        let feeder = tokio::spawn({
            let peer = peer.clone();
            async move {
                for _ in 0..20 {
                    tokio::time::sleep(MS(50)).await;
                    peer.send(b"l\n");
                }
            }
        });
        let reader = tokio::spawn(async move {
            let mut lines = 0;
            while lines < 20 {
                match within(MS(200), stream.next()).await {
                    Ok(Some(Ok(_))) => lines += 1,
                    other => return Err(format!("{other:?} at {:?}", t0.elapsed())),
                }
            }
            Ok(lines)
        });
        let writer = tokio::spawn(async move {
            sink.feed(bytes::Bytes::from_static(b"stuck"))
                .await
                .unwrap();
            let mut at = Vec::new();
            while t0.elapsed() < MS(1000) {
                match within(MS(1000), sink.flush()).await {
                    Ok(Err(e)) if e.timeout() == Some(Timeout::Write) => at.push(t0.elapsed()),
                    other => return Err(format!("{other:?} at {:?}", t0.elapsed())),
                }
            }
            Ok(at)
        });
        feeder.await.unwrap();
        let r = reader.await.unwrap();
        let w = writer.await.unwrap();
        assert_eq!(r, Ok(20));
        let want: Vec<_> = (1..=10).map(|i| MS(100 * i)).collect();
        assert_eq!(w, Ok(want));
    })
    .await;
}

/// A newline-framed codec for the split tests (LineCodec frames with a
/// type of its own; bytes in, bytes out here).
fn bytes_codec() -> tokio_util::codec::BytesCodec {
    tokio_util::codec::BytesCodec::new()
}

// ---------------------------------------------------------------------------
// The setter runs the hook: where does its panic go?
// ---------------------------------------------------------------------------

/// §4 "User code is untrusted": a hook that panics makes the connection
/// fail, "and the panic reaches whoever awaits the driver". Here the hook
/// runs because a setter found the timer expired (TO-4); the panic is
/// thrown out of `Handle::set_rtimeout` in the caller's task instead, and
/// the driver ends normally.
#[tokio::test(start_paused = true)]
async fn handle_setter_leaves_a_panicking_hook_to_the_driver() {
    bounded(async {
        let (io, _peer) = mock_io::pair();
        let (h, driver) = QueuedFramed::builder().build(io).spawn();
        h.on_timeout(|_, _| panic!("deliberate hook panic"));
        tokio::time::sleep(MS(500)).await;
        let setter = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            h.set_rtimeout(MS(100));
        }));
        let driven = tokio::spawn(driver);
        let d = within(MS(100), driven).await.expect("driver ended");
        let driver_panicked = matches!(&d, Err(e) if e.is_panic());
        assert!(h.is_closed(), "the panic closed the connection");
        assert!(
            setter.is_ok() && driver_panicked,
            "setter panicked: {}, driver panicked: {driver_panicked}",
            setter.is_err()
        );
    })
    .await;
}

/// Control: the same hook heard by the driver itself.
#[tokio::test(start_paused = true)]
async fn control_driver_heard_panicking_hook_reaches_the_driver() {
    bounded(async {
        let (io, _peer) = mock_io::pair();
        let (h, driver) = QueuedFramed::builder().rtimeout(MS(100)).build(io).spawn();
        h.on_timeout(|_, _| panic!("deliberate hook panic"));
        let driven = tokio::spawn(driver);
        let d = within(MS(200), driven).await.expect("driver ended");
        assert!(matches!(&d, Err(e) if e.is_panic()));
        assert!(h.is_closed());
    })
    .await;
}

/// Spawned: a read and a flush waiting, idle and write expire together:
/// the read gets the idle timeout (head read first), the flush the write
/// timeout (TO-3).
#[tokio::test(start_paused = true)]
async fn handle_idle_and_write_together_with_a_read_and_a_flush() {
    bounded(async {
        let (io, _peer) = mock_io::pair();
        let (h, _driver) = QueuedFramed::builder()
            .timeout(MS(100))
            .wtimeout(MS(100))
            .build(io)
            .spawn();
        h.push_bytes(&b"stuck"[..]).unwrap();
        let read = h.push_read(LineCodec::new());
        let flush = tokio::spawn({
            let h = h.clone();
            async move { h.flush().await }
        });
        let r = within(MS(150), read).await.expect("read told");
        let f = within(MS(150), flush).await.expect("flush told").unwrap();
        told(&r, Timeout::Idle);
        told(&f, Timeout::Write);
    })
    .await;
}
