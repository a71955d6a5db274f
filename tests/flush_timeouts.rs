//! Which waiter hears a timeout while a flush drives the queued reads
//! (docs/semantics.md, TO-3, TO-4, TO-6), on the inline front end and one
//! task: queued reads alive, given up or begun, a STARTTLS behind them,
//! hooks, a peer that trickles or says nothing.
#![cfg(any(feature = "tls", feature = "rustls"))]

#[path = "support/pki.rs"]
mod pki;
mod support;
#[path = "support/timing.rs"]
mod timing;

use std::sync::{Arc, Mutex};
use std::time::Duration;
use timing::{Eater, bounded, within};

use anyframe::codecs::LineCodec;
use anyframe::{QueuedFramed, Timeout};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

const MS: fn(u64) -> Duration = Duration::from_millis;

fn kind<T: std::fmt::Debug>(r: &anyframe::Result<T>) -> Result<String, Option<Timeout>> {
    match r {
        Ok(v) => Ok(format!("{v:?}")),
        Err(e) => Err(e.timeout()),
    }
}

// ---------------------------------------------------------------------------
// Idea 1: plain flush with a queued read.
// ---------------------------------------------------------------------------

/// rtimeout only, a queued read with a live ticket, a flush stuck on a
/// peer that never reads. The flush must never return the read timeout;
/// the queued read must be told it once, at 100 ms.
#[tokio::test(start_paused = true)]
async fn flush_tells_queued_read_the_read_timeout_once() {
    bounded(async {
        let (io, _peer) = tokio::io::duplex(64);
        let mut conn = QueuedFramed::builder()
            .rtimeout(MS(100))
            .build_with_codec(io, LineCodec::new());
        let t = conn.push_read(LineCodec::new());
        conn.push_bytes(vec![b'x'; 1000]).unwrap();
        let f = within(MS(350), conn.flush()).await;
        assert!(f.is_err(), "the flush returned: {:?}", f.map(|r| kind(&r)));
        let r = within(MS(1), conn.wait(t))
            .await
            .expect("ticket told by now");
        assert_eq!(kind(&r), Err(Some(Timeout::Read)));
        assert_eq!(conn.queued_reads(), 0);
    })
    .await;
}

/// Idle timer only: TO-3 sends it to the head read first; the flush
/// gets the next one (nothing left queued), a period later.
#[tokio::test(start_paused = true)]
async fn flush_idle_goes_to_head_read_first_then_to_flush() {
    bounded(async {
        let (io, _peer) = tokio::io::duplex(64);
        let mut conn = QueuedFramed::builder()
            .timeout(MS(100))
            .build_with_codec(io, LineCodec::new());
        let t = conn.push_read(LineCodec::new());
        conn.push_bytes(vec![b'x'; 1000]).unwrap();
        let t0 = Instant::now();
        let f = within(MS(1000), conn.flush()).await.expect("flush hung");
        let at = t0.elapsed();
        assert_eq!(kind(&f), Err(Some(Timeout::Idle)));
        let r = within(MS(1), conn.wait(t)).await.expect("ticket told");
        assert_eq!(kind(&r), Err(Some(Timeout::Idle)), "head read first");
        assert_eq!(at, MS(200), "the flush hears the second idle timeout");
    })
    .await;
}

/// Read and write timers of one period with a queued read: the read
/// hears Read, the flush hears Write, both at 100 ms.
#[tokio::test(start_paused = true)]
async fn flush_read_and_write_expire_together_split_between_read_and_flush() {
    bounded(async {
        let (io, _peer) = tokio::io::duplex(64);
        let mut conn = QueuedFramed::builder()
            .rtimeout(MS(100))
            .wtimeout(MS(100))
            .build_with_codec(io, LineCodec::new());
        let t = conn.push_read(LineCodec::new());
        conn.push_bytes(vec![b'x'; 1000]).unwrap();
        let t0 = Instant::now();
        let f = within(MS(1000), conn.flush()).await.expect("flush hung");
        assert_eq!(t0.elapsed(), MS(100));
        assert_eq!(kind(&f), Err(Some(Timeout::Write)));
        let r = within(MS(1), conn.wait(t)).await.expect("ticket told");
        assert_eq!(kind(&r), Err(Some(Timeout::Read)));
    })
    .await;
}

/// All three timers, one period, queued read: idle goes to the read
/// (head read first), the flush hears write (TO-3: write if one is).
#[tokio::test(start_paused = true)]
async fn flush_all_three_expire_together() {
    bounded(async {
        let (io, _peer) = tokio::io::duplex(64);
        let mut conn = QueuedFramed::builder()
            .timeout(MS(100))
            .rtimeout(MS(100))
            .wtimeout(MS(100))
            .build_with_codec(io, LineCodec::new());
        let t = conn.push_read(LineCodec::new());
        conn.push_bytes(vec![b'x'; 1000]).unwrap();
        let t0 = Instant::now();
        let f = within(MS(1000), conn.flush()).await.expect("flush hung");
        assert_eq!(t0.elapsed(), MS(100));
        assert_eq!(kind(&f), Err(Some(Timeout::Write)));
        let r = within(MS(1), conn.wait(t)).await.expect("ticket told");
        assert!(r.as_ref().is_err_and(|e| e.is_timeout()), "{:?}", kind(&r));
    })
    .await;
}

/// A queued read whose ticket was dropped (not begun): the flush drops
/// the read timeout and never returns it; a later read hears its own.
#[tokio::test(start_paused = true)]
async fn flush_with_dropped_ticket_never_returns_read_timeout() {
    bounded(async {
        let (io, _peer) = tokio::io::duplex(64);
        let mut conn = QueuedFramed::builder()
            .rtimeout(MS(100))
            .build_with_codec(io, LineCodec::new());
        drop(conn.push_read(LineCodec::new()));
        conn.push_bytes(vec![b'x'; 1000]).unwrap();
        let f = within(MS(350), conn.flush()).await;
        assert!(f.is_err(), "the flush returned: {:?}", f.map(|r| kind(&r)));
    })
    .await;
}

/// ready_to_write / drained with a queued read: same routing.
#[tokio::test(start_paused = true)]
async fn drained_tells_queued_read_and_never_returns_read_timeout() {
    bounded(async {
        let (io, _peer) = tokio::io::duplex(64);
        let mut conn = QueuedFramed::builder()
            .rtimeout(MS(100))
            .build_with_codec(io, LineCodec::new());
        conn.set_watermarks(100, 10);
        let t = conn.push_read(LineCodec::new());
        conn.push_bytes(vec![b'x'; 1000]).unwrap();
        let f = within(MS(250), conn.drained()).await;
        assert!(f.is_err(), "drained returned: {:?}", f.map(|r| kind(&r)));
        let f = within(MS(250), conn.ready_to_write()).await;
        assert!(
            f.is_err(),
            "ready_to_write returned: {:?}",
            f.map(|r| kind(&r))
        );
        let r = within(MS(1), conn.wait(t)).await.expect("ticket told");
        assert_eq!(kind(&r), Err(Some(Timeout::Read)));
    })
    .await;
}

// ---------------------------------------------------------------------------
// Idea 3 / TO-6 on the inline front end.
// ---------------------------------------------------------------------------

/// A read whose frame has begun, ticket given up; then a flush with only
/// rtimeout and a peer that neither reads nor writes. Who hears it? A
/// read queued after the flush is given up must hear it (TO-6: the caller
/// driving the queue).
#[tokio::test(start_paused = true)]
async fn begun_frame_given_up_then_flush_then_read_hears_timeout() {
    bounded(async {
        let (io, mut peer) = tokio::io::duplex(64);
        let mut conn = QueuedFramed::builder()
            .rtimeout(MS(300))
            .build_with_codec(io, LineCodec::new());
        let eaten = conn.push_read(Eater);
        peer.write_all(b"partial").await.unwrap();
        assert!(within(MS(50), conn.wait(eaten)).await.is_err());
        assert_eq!(conn.queued_reads(), 1);
        conn.push_bytes(vec![b'x'; 1000]).unwrap();
        let f = within(MS(700), conn.flush()).await;
        assert!(f.is_err(), "the flush returned: {:?}", f.map(|r| kind(&r)));
        // Now read behind the begun frame: the caller driving the queue.
        let t0 = Instant::now();
        let r = within(MS(1000), conn.read(LineCodec::new())).await;
        let r = r.expect("the read never heard a timeout");
        assert_eq!(kind(&r), Err(Some(Timeout::Read)), "at {:?}", t0.elapsed());
        assert!(t0.elapsed() <= MS(600), "late: {:?}", t0.elapsed());
    })
    .await;
}

// ---------------------------------------------------------------------------
// TLS switch behind a queued read, driven only by a flush.
// ---------------------------------------------------------------------------

/// push_read, push_starttls, output after; the peer answers the read's
/// line then is silent (takes the hello, never answers). Only a flush
/// drives: the switch's waiter must hear the read timeout (TO-3 "or a
/// TLS switch's waiter"), about 200 ms after the line.
#[tokio::test(start_paused = true)]
async fn flush_driving_starttls_silent_peer_switch_waiter_hears_timeout() {
    for &b in pki::BACKENDS {
        bounded(async {
            let (io, mut peer) = tokio::io::duplex(1 << 16);
            let mut conn = QueuedFramed::builder()
                .rtimeout(MS(200))
                .build_with_codec(io, LineCodec::new());
            let (t1, ts) = support::read_then_starttls(&mut conn, pki::client_on(b));
            peer.write_all(b"go\n").await.unwrap();
            let t0 = Instant::now();
            let f = within(MS(1000), conn.flush()).await;
            // Whatever the flush does, the tickets:
            let r1 = within(MS(1), conn.wait(t1)).await;
            assert!(
                matches!(r1, Ok(Ok(_))),
                "{b:?}: read: {:?}",
                r1.map(|r| kind(&r))
            );
            let rs = within(MS(1), conn.wait(ts)).await;
            assert!(
                matches!(&rs, Ok(Err(e)) if e.timeout() == Some(Timeout::Read)),
                "{b:?}: switch waiter: {:?}; flush: {:?} at {:?}",
                rs.map(|r| kind(&r)),
                f.map(|r| kind(&r)),
                t0.elapsed()
            );
            drop(peer);
        })
        .await;
    }
}

/// Same, with wtimeout too (later than two read periods): the switch's
/// waiter hears the first read timeout; the next one nobody else hears,
/// and the flush, whose output waits behind the switch, is the caller
/// waiting (TO-6): it gets it, before its write timeout.
#[tokio::test(start_paused = true)]
async fn flush_driving_starttls_silent_peer_hears_the_read_timeout_nobody_else_does() {
    for &b in pki::BACKENDS {
        bounded(async {
            let (io, mut peer) = tokio::io::duplex(1 << 16);
            let mut conn = QueuedFramed::builder()
                .rtimeout(MS(200))
                .wtimeout(MS(500))
                .build_with_codec(io, LineCodec::new());
            let (t1, ts) = support::read_then_starttls(&mut conn, pki::client_on(b));
            peer.write_all(b"go\n").await.unwrap();
            let t0 = Instant::now();
            let f = within(MS(2000), conn.flush()).await.expect("flush hung");
            let at = t0.elapsed();
            assert_eq!(kind(&f), Err(Some(Timeout::Read)), "{b:?} at {at:?}");
            assert!(at <= MS(450), "{b:?}: {at:?}");
            let r1 = within(MS(1), conn.wait(t1)).await;
            assert!(matches!(r1, Ok(Ok(_))), "{b:?}");
            let rs = within(MS(1), conn.wait(ts)).await;
            assert!(
                matches!(&rs, Ok(Err(e)) if e.is_timeout()),
                "{b:?}: switch waiter: {:?}",
                rs.map(|r| kind(&r))
            );
            drop(peer);
        })
        .await;
    }
}

/// push_read with ticket alive, push_starttls, peer silent from the
/// start. The flush drives; the read is told the first read timeout, the
/// switch's waiter the next, and the flush (TO-6) the one after.
#[tokio::test(start_paused = true)]
async fn flush_read_in_front_of_starttls_times_out() {
    for &b in pki::BACKENDS {
        bounded(async {
            let (io, mut peer) = tokio::io::duplex(1 << 16);
            let mut conn = QueuedFramed::builder()
                .rtimeout(MS(200))
                .build_with_codec(io, LineCodec::new());
            let (t1, ts) = support::read_then_starttls(&mut conn, pki::client_on(b));
            let f = within(MS(1000), conn.flush()).await;
            assert!(
                matches!(&f, Ok(Err(e)) if e.timeout() == Some(Timeout::Read)),
                "{b:?}: the flush did not hear the third read timeout"
            );
            let r1 = within(MS(1), conn.wait(t1)).await;
            assert!(
                matches!(&r1, Ok(Err(e)) if e.timeout() == Some(Timeout::Read)),
                "{b:?}: read {:?}",
                r1.map(|r| kind(&r))
            );
            let rs = within(MS(1), conn.wait(ts)).await;
            let mut got = vec![0u8; 4096];
            let n = within(MS(1), peer.read(&mut got)).await;
            eprintln!(
                "{b:?}: switch {:?}; peer got {:?} bytes",
                rs.map(|r| kind(&r)),
                n
            );
        })
        .await;
    }
}

// ---------------------------------------------------------------------------
// Idea 2: on_timeout hooks with a flush running queued reads / STARTTLS.
// ---------------------------------------------------------------------------

/// Hook counts: a flush driving a STARTTLS toward a silent peer (after
/// the read in front got its line) runs the hook once per read expiry.
#[tokio::test(start_paused = true)]
async fn hook_runs_once_per_expiry_while_flush_drives_starttls() {
    for &b in pki::BACKENDS {
        bounded(async {
            let (io, mut peer) = tokio::io::duplex(1 << 16);
            let mut conn = QueuedFramed::builder()
                .rtimeout(MS(100))
                .build_with_codec(io, LineCodec::new());
            let heard = Arc::new(Mutex::new(Vec::new()));
            let h = heard.clone();
            let t0 = Instant::now();
            conn.on_timeout(move |t, _| h.lock().unwrap().push((t, t0.elapsed())));
            let (_t1, _ts) = support::read_then_starttls(&mut conn, pki::client_on(b));
            peer.write_all(b"go\n").await.unwrap();
            assert!(within(MS(550), conn.flush()).await.is_err(), "stuck");
            let heard = heard.lock().unwrap().clone();
            let want: Vec<_> = (1..=5).map(|i| (Timeout::Read, MS(100 * i))).collect();
            assert_eq!(heard, want, "{b:?}");
            drop(peer);
        })
        .await;
    }
}

/// A hook that destroys the connection on the first expiry while a
/// flush drives the reads in front of a STARTTLS: the flush ends at once
/// with the close error, the tickets too.
#[tokio::test(start_paused = true)]
async fn hook_destroy_ends_flush_driving_starttls() {
    for &b in pki::BACKENDS {
        bounded(async {
            let (io, _peer) = tokio::io::duplex(1 << 16);
            let mut conn = QueuedFramed::builder()
                .rtimeout(MS(100))
                .build_with_codec(io, LineCodec::new());
            conn.on_timeout(move |_, reqs| reqs.destroy());
            let (t1, ts) = support::read_then_starttls(&mut conn, pki::client_on(b));
            let t0 = Instant::now();
            let f = within(MS(1000), conn.flush()).await.expect("flush hung");
            assert!(f.is_err(), "{b:?}");
            assert_eq!(t0.elapsed(), MS(100), "{b:?}");
            assert!(conn.is_closed());
            let r1 = within(MS(1), conn.wait(t1)).await.expect("t1");
            assert!(r1.is_err());
            let rs = within(MS(1), conn.wait(ts)).await.expect("ts");
            assert!(rs.is_err());
        })
        .await;
    }
}

/// A hook that queues a read (pushes behind the switch) and writes on
/// every expiry; the flush stays quiet and the hook runs once per period.
#[tokio::test(start_paused = true)]
async fn hook_pushing_reads_and_writes_while_flush_runs_reads() {
    bounded(async {
        let (io, _peer) = tokio::io::duplex(64);
        let mut conn = QueuedFramed::builder()
            .rtimeout(MS(100))
            .build_with_codec(io, LineCodec::new());
        let heard = Arc::new(Mutex::new(Vec::new()));
        let h = heard.clone();
        let t0 = Instant::now();
        conn.on_timeout(move |t, reqs| {
            h.lock().unwrap().push((t, t0.elapsed()));
            drop(reqs.push_read(LineCodec::new()));
            let _ = reqs.push_write(LineCodec::new(), "ping");
        });
        let _t = conn.push_read(LineCodec::new());
        conn.push_bytes(vec![b'x'; 1000]).unwrap();
        assert!(within(MS(550), conn.flush()).await.is_err(), "stuck");
        let heard = heard.lock().unwrap().clone();
        let want: Vec<_> = (1..=5).map(|i| (Timeout::Read, MS(100 * i))).collect();
        assert_eq!(heard, want);
    })
    .await;
}

// ---------------------------------------------------------------------------
// TO-4 with a flush running reads.
// ---------------------------------------------------------------------------

/// Set rtimeout past its deadline while a flush waits with a read queued
/// (the flush given up, then polled again): the queued read hears it at
/// once.
#[tokio::test(start_paused = true)]
async fn set_rtimeout_past_deadline_reaches_queued_read() {
    bounded(async {
        let (io, _peer) = tokio::io::duplex(64);
        let mut conn = QueuedFramed::builder().build_with_codec(io, LineCodec::new());
        let t = conn.push_read(LineCodec::new());
        conn.push_bytes(vec![b'x'; 1000]).unwrap();
        assert!(within(MS(300), conn.flush()).await.is_err());
        conn.set_rtimeout(MS(100));
        let r = within(MS(1), conn.wait(t)).await.expect("told at once");
        assert_eq!(kind(&r), Err(Some(Timeout::Read)));
    })
    .await;
}

// ---------------------------------------------------------------------------
// Multi-thread: flush alone with a queued read, real time.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multithread_flush_tells_queued_reads_in_order() {
    bounded(async {
        let (io, _peer) = tokio::io::duplex(64);
        let mut conn = QueuedFramed::builder()
            .rtimeout(MS(100))
            .build_with_codec(io, LineCodec::new());
        let t1 = conn.push_read(LineCodec::new());
        let t2 = conn.push_read(LineCodec::new());
        let t3 = conn.push_read(LineCodec::new());
        conn.push_bytes(vec![b'x'; 1000]).unwrap();
        let t0 = std::time::Instant::now();
        let f = within(MS(380), conn.flush()).await;
        assert!(f.is_err());
        let el = t0.elapsed();
        for (i, t) in [t1, t2, t3].into_iter().enumerate() {
            let r = within(MS(1), conn.wait(t)).await;
            assert!(
                matches!(&r, Ok(Err(e)) if e.timeout() == Some(Timeout::Read)),
                "read {i}: {:?} after {el:?}",
                r.map(|r| kind(&r))
            );
        }
    })
    .await;
}

// ---------------------------------------------------------------------------
// A stale read-side mark (a wait given up) while a flush reads for the
// queued reads in front of a STARTTLS.
// ---------------------------------------------------------------------------

/// `give_up`: the caller first waited on an earlier read (`wait`) and gave the
/// wait up (a `timeout`/`select!`), leaving the read side marked waiting.
/// Then only a flush drives (output queued behind the STARTTLS). The peer
/// trickles a byte every 150 ms without ever ending the line; rtimeout is
/// 100 ms, so every gap is a read timeout (TO-1) that the head read must
/// hear (TO-3), at worst one period late (TO-3: "never not at all").
async fn trickle_case(
    give_up: bool,
    trickle: bool,
) -> (Result<Result<String, Option<Timeout>>, ()>, Duration) {
    let b = pki::BACKENDS[0];
    let (io, mut peer) = tokio::io::duplex(1 << 16);
    let mut conn = QueuedFramed::builder()
        .rtimeout(MS(100))
        .build_with_codec(io, LineCodec::new());
    if give_up {
        let ghost = conn.push_read(LineCodec::new());
        assert!(within(MS(20), conn.wait(ghost)).await.is_err());
    }
    let (t1, ts) = support::read_then_starttls(&mut conn, pki::client_on(b));
    let trickler = tokio::spawn(async move {
        for _ in 0..20 {
            tokio::time::sleep(MS(150)).await;
            if !trickle {
                continue;
            }
            if peer.write_all(b"a").await.is_err() {
                break;
            }
        }
        peer
    });
    let t0 = Instant::now();
    let mut t1 = Box::pin(t1);
    let mut heard_at = None;
    let f = within(MS(1000), async {
        let mut fl = Box::pin(conn.flush());
        loop {
            tokio::select! {
                r = &mut t1, if heard_at.is_none() => { heard_at = Some((t0.elapsed(), kind(&r))); }
                f = &mut fl => break f,
            }
        }
    })
    .await;
    let el = t0.elapsed();
    eprintln!("give_up {give_up}: t1 heard {heard_at:?}");
    eprintln!(
        "give_up {give_up}: flush {:?} after {el:?}",
        f.map(|r| kind(&r))
    );
    let el = heard_at.as_ref().map_or(el, |h| h.0);
    let r = match heard_at {
        Some((_, k)) => Ok(k),
        None => Err(()),
    };
    trickler.abort();
    drop(ts);
    (r, el)
}

#[tokio::test(start_paused = true)]
async fn control_trickling_peer_head_read_hears_read_timeout_via_flush() {
    bounded(async {
        let (r, el) = trickle_case(false, true).await;
        assert_eq!(r, Ok(Err(Some(Timeout::Read))), "after {el:?}");
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn trickling_peer_head_read_hears_read_timeout_after_a_given_up_wait() {
    bounded(async {
        let (r, el) = trickle_case(true, true).await;
        assert_eq!(
            r,
            Ok(Err(Some(Timeout::Read))),
            "6 gaps of 150 ms with rtimeout 100 ms, none heard in {el:?}"
        );
    })
    .await;
}

/// Control: the same given-up wait, a silent peer (no trickle): the head
/// read hears the read timeout one period late (TO-3), at 200 ms.
#[tokio::test(start_paused = true)]
async fn control_silent_peer_head_read_hears_read_timeout_one_period_late() {
    bounded(async {
        let (r, el) = trickle_case(true, false).await;
        assert_eq!(r, Ok(Err(Some(Timeout::Read))), "after {el:?}");
        assert!(el <= MS(200), "{el:?}");
    })
    .await;
}

/// TO-6 with a flush: a read whose frame has begun (its caller gave up),
/// a STARTTLS behind it whose ticket is dropped, output behind that, and a
/// silent peer. Only the flush drives the queue, and its output cannot go
/// out before the read ends: it is the caller waiting, and hears the read
/// timeout (one period late, as after any wait given up) instead of
/// waiting for ever.
#[tokio::test(start_paused = true)]
async fn a_flush_behind_a_switch_behind_a_begun_frame_hears_the_read_timeout() {
    bounded(async {
        let b = pki::BACKENDS[0];
        let (io, mut peer) = tokio::io::duplex(1 << 16);
        let mut conn = QueuedFramed::builder()
            .rtimeout(MS(100))
            .build_with_codec(io, LineCodec::new());
        let begun = conn.push_read(Eater);
        peer.write_all(b"partial").await.unwrap();
        assert!(within(MS(20), conn.wait(begun)).await.is_err());
        assert_eq!(conn.queued_reads(), 1, "it reads on for nobody");
        drop(conn.push_starttls(pki::client_on(b)));
        conn.push_bytes(&b"after\n"[..]).unwrap();
        let t0 = Instant::now();
        let f = within(MS(1000), conn.flush()).await;
        let f = f.expect("the flush waited for ever");
        assert_eq!(kind(&f), Err(Some(Timeout::Read)));
        assert!(t0.elapsed() <= MS(200), "late: {:?}", t0.elapsed());
        assert!(!conn.is_closed());
    })
    .await;
}
