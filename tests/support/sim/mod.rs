//! A deterministic simulated network for the `sim` integration test.
//!
//! A connection is two directions; each direction is a queue of segments.
//! A write is cut into segments of 1 byte to 64 KiB, each stamped with the
//! instant it may be read (latency plus jitter, never before the segment in
//! front of it, so the byte stream stays in order). A read returns at most
//! one segment's bytes once its instant has come and the direction is not
//! held. Holds (one direction stalled until an instant), partitions (both
//! directions held), resets (every later call fails with
//! `ConnectionReset`, bytes in flight are lost) and half-closes (one
//! direction ends: the reader sees end of input after the bytes already in
//! flight, the writer gets `BrokenPipe`) are applied by a chaos task.
//! Dropping an end closes it as a socket closes: the peer reads end of
//! input, the bytes in flight toward the dropped end are lost and the
//! peer's later writes fail with `ConnectionReset`.
//!
//! Every choice comes from one [`Rng`] seeded per run, and the test runs on
//! a current-thread tokio runtime with paused time, so a run is a pure
//! function of its seed.
#![allow(dead_code, unreachable_pub)]

pub mod tls;

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// SplitMix64: small, fast, and the same sequence on every platform.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose sequence is a function of `seed` only.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5851_f42d_4c95_7f2d)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        // Lemire's multiply-shift; the tiny bias is irrelevant here.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    /// A size from 1 to `max`, spread over orders of magnitude (small sizes
    /// as likely as large ones), so that 1-byte and 64 KiB segments both
    /// occur often.
    pub fn size(&mut self, max: usize) -> usize {
        let bits = 64 - (max as u64).leading_zeros() as u64;
        let top = 1u64 << self.range(0, bits);
        (self.range(1, top) as usize).min(max)
    }

    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.range(lo, hi))
    }
}

/// A deliberate defect of the network, to show that the checks of the
/// simulation catch what they claim to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutation {
    /// One byte of one write is dropped, silently.
    LoseByte,
    /// Two segments are delivered in the wrong order, once.
    Reorder,
}

thread_local! {
    static MUTATION: std::cell::Cell<Option<Mutation>> = const { std::cell::Cell::new(None) };
}

/// Makes the connections created on this thread defective (`None`: sound).
pub fn set_mutation(m: Option<Mutation>) {
    MUTATION.with(|c| c.set(m));
}

/// The largest segment the network makes.
pub const MAX_SEGMENT: usize = 64 * 1024;

/// How a connection behaves; drawn from the run's generator.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Fixed one-way delay.
    pub latency: Duration,
    /// Extra random delay per segment, up to this.
    pub jitter: Duration,
    /// Bytes a direction holds in flight before writes wait (4 KiB to
    /// 256 KiB).
    pub window: usize,
    /// The largest segment cut from a write.
    pub max_segment: usize,
    /// One write in this many returns `Pending` once (and wakes at once).
    pub spurious_pending: u64,
}

impl NetConfig {
    pub fn random(rng: &mut Rng) -> NetConfig {
        NetConfig {
            latency: Duration::from_micros(rng.range(0, 20_000)),
            jitter: Duration::from_micros(rng.range(0, 5_000)),
            window: rng.range(4 * 1024, 256 * 1024) as usize,
            max_segment: rng.size(MAX_SEGMENT),
            spurious_pending: rng.range(2, 20),
        }
    }
}

#[derive(Debug, Default)]
struct Dir {
    segs: VecDeque<(Instant, Bytes)>,
    in_flight: usize,
    /// No more bytes: the reader sees end of input once `segs` is empty.
    fin: bool,
    /// The direction delivers nothing before this instant.
    held_until: Option<Instant>,
    last_deliver: Option<Instant>,
    rx_waker: Option<Waker>,
    tx_waker: Option<Waker>,
    written: u64,
    delivered: u64,
    /// Bytes that were in flight when the connection was reset or the
    /// reading end was dropped.
    lost: u64,
    /// The reading end was dropped: writes fail, as on a closed socket.
    reader_gone: bool,
    /// Every byte written, when the link is tapped.
    wire: Option<Vec<u8>>,
}

impl Dir {
    fn wake(&mut self) {
        if let Some(w) = self.rx_waker.take() {
            w.wake();
        }
        if let Some(w) = self.tx_waker.take() {
            w.wake();
        }
    }
}

#[derive(Debug)]
struct Net {
    rng: Rng,
    cfg: NetConfig,
    /// `dirs[s]` carries what side `s` writes.
    dirs: [Dir; 2],
    reset: bool,
    /// A defect still to apply.
    mutation: Option<Mutation>,
    /// A running hash of every delivery, to check that replays are exact.
    trace: u64,
}

impl Net {
    fn mix(&mut self, v: u64) {
        self.trace = (self.trace ^ v).wrapping_mul(0x100_0000_01b3);
    }
}

/// The shared state of one simulated connection, for the chaos task and the
/// final checks.
#[derive(Debug, Clone)]
pub struct Link {
    net: Arc<Mutex<Net>>,
}

/// One end of a simulated connection.
#[derive(Debug)]
pub struct SimStream {
    net: Arc<Mutex<Net>>,
    side: usize,
    sleep: Pin<Box<Sleep>>,
}

/// A connected pair: side 0 (the client) and side 1 (the server).
pub fn pair(rng: &mut Rng) -> (SimStream, SimStream, Link) {
    let net = Arc::new(Mutex::new(Net {
        rng: Rng::new(rng.next_u64()),
        cfg: NetConfig::random(rng),
        dirs: [Dir::default(), Dir::default()],
        reset: false,
        mutation: MUTATION.with(std::cell::Cell::get),
        trace: 0xcbf2_9ce4_8422_2325,
    }));
    let end = |side| SimStream {
        net: net.clone(),
        side,
        sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
    };
    let (a, b) = (end(0), end(1));
    (a, b, Link { net })
}

fn lock(net: &Mutex<Net>) -> MutexGuard<'_, Net> {
    net.lock().unwrap_or_else(|e| e.into_inner())
}

fn reset_error() -> io::Error {
    io::Error::from(io::ErrorKind::ConnectionReset)
}

impl Link {
    /// Stops the direction written by `side` until `now + period`.
    pub fn hold(&self, side: usize, period: Duration) {
        let mut net = lock(&self.net);
        let until = Instant::now() + period;
        let d = &mut net.dirs[side];
        d.held_until = Some(d.held_until.map_or(until, |u| u.max(until)));
        d.wake();
    }

    /// Holds both directions.
    pub fn partition(&self, period: Duration) {
        self.hold(0, period);
        self.hold(1, period);
    }

    /// Resets the connection: bytes in flight are lost, every later read or
    /// write on either end fails.
    pub fn reset(&self) {
        let mut net = lock(&self.net);
        net.reset = true;
        for d in &mut net.dirs {
            let n = d.in_flight as u64;
            d.lost += n;
            d.segs.clear();
            d.in_flight = 0;
            d.wake();
        }
        net.mix(0xdead);
    }

    /// Ends the direction written by `side`, as if that end had shut down
    /// its write side.
    pub fn half_close(&self, side: usize) {
        let mut net = lock(&self.net);
        net.dirs[side].fin = true;
        net.dirs[side].wake();
        net.mix(0xf1 + side as u64);
    }

    /// Whether the connection's deliberate defect has been applied.
    pub fn mutated(&self) -> bool {
        let net = lock(&self.net);
        MUTATION.with(std::cell::Cell::get).is_some() && net.mutation.is_none()
    }

    pub fn is_reset(&self) -> bool {
        lock(&self.net).reset
    }

    /// The bytes written by `side` still in flight, in order.
    pub fn in_flight(&self, side: usize) -> Vec<u8> {
        let net = lock(&self.net);
        let mut v = Vec::new();
        for (_, s) in &net.dirs[side].segs {
            v.extend_from_slice(s);
        }
        v
    }

    /// (written, delivered, lost) byte counts of the direction written by
    /// `side`.
    pub fn counts(&self, side: usize) -> (u64, u64, u64) {
        let net = lock(&self.net);
        let d = &net.dirs[side];
        (d.written, d.delivered, d.lost)
    }

    /// The hash of everything that happened on the link.
    pub fn trace(&self) -> u64 {
        lock(&self.net).trace
    }

    /// Records every byte written from now on, in both directions.
    pub fn tap(&self) {
        let mut net = lock(&self.net);
        for d in &mut net.dirs {
            d.wire.get_or_insert_with(Vec::new);
        }
    }

    /// The bytes written by `side` since [`Link::tap`] (as written, before
    /// any loss).
    pub fn wire(&self, side: usize) -> Vec<u8> {
        lock(&self.net).dirs[side].wire.clone().unwrap_or_default()
    }

    pub fn config(&self) -> NetConfig {
        lock(&self.net).cfg.clone()
    }
}

impl AsyncRead for SimStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            let mut net = lock(&this.net);
            if net.reset {
                return Poll::Ready(Err(reset_error()));
            }
            let now = Instant::now();
            let side = this.side;
            let d = &mut net.dirs[1 - side];
            let Some((at, _)) = d.segs.front() else {
                if d.fin {
                    return Poll::Ready(Ok(()));
                }
                d.rx_waker = Some(cx.waker().clone());
                return Poll::Pending;
            };
            let ready_at = d.held_until.map_or(*at, |h| h.max(*at));
            if ready_at <= now {
                let (_, seg) = d.segs.front_mut().expect("front");
                let n = seg.len().min(buf.remaining());
                buf.put_slice(&seg[..n]);
                let _ = seg.split_to(n);
                if seg.is_empty() {
                    d.segs.pop_front();
                }
                d.in_flight -= n;
                d.delivered += n as u64;
                if let Some(w) = d.tx_waker.take() {
                    w.wake();
                }
                net.mix(((side as u64) << 32) | n as u64);
                return Poll::Ready(Ok(()));
            }
            d.rx_waker = Some(cx.waker().clone());
            drop(net);
            this.sleep.as_mut().reset(ready_at);
            if this.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

/// Whether `b` then `a` differs from `a` then `b`.
fn swap_changes(a: &[u8], b: &[u8]) -> bool {
    let ab = a.iter().chain(b);
    let ba = b.iter().chain(a);
    ab.ne(ba)
}

impl AsyncWrite for SimStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let side = self.side;
        let mut net = lock(&self.net);
        if net.reset {
            return Poll::Ready(Err(reset_error()));
        }
        if net.dirs[side].fin {
            return Poll::Ready(Err(io::Error::from(io::ErrorKind::BrokenPipe)));
        }
        if net.dirs[side].reader_gone {
            return Poll::Ready(Err(reset_error()));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let spurious = net.cfg.spurious_pending;
        if net.rng.below(spurious) == 0 {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let room = net.cfg.window.saturating_sub(net.dirs[side].in_flight);
        if room == 0 {
            net.dirs[side].tx_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        // A partial write, sometimes.
        let take = if net.rng.chance(1, 3) {
            net.rng.size(buf.len())
        } else {
            buf.len()
        };
        let n = take.min(room);
        if let Some(w) = &mut net.dirs[side].wire {
            w.extend_from_slice(&buf[..n]);
        }
        let now = Instant::now();
        let mut off = 0;
        while off < n {
            // Half the segments follow the connection's own limit (tiny on
            // some connections), half range up to 64 KiB.
            let max_seg = if net.rng.chance(1, 2) {
                net.cfg.max_segment
            } else {
                MAX_SEGMENT
            };
            let len = net.rng.size(max_seg).min(n - off);
            let jitter = net.cfg.jitter.as_micros() as u64;
            let delay = net.cfg.latency + Duration::from_micros(net.rng.range(0, jitter));
            let d = &mut net.dirs[side];
            let at = d.last_deliver.map_or(now + delay, |l| l.max(now + delay));
            d.last_deliver = Some(at);
            d.segs
                .push_back((at, Bytes::copy_from_slice(&buf[off..off + len])));
            off += len;
        }
        let mut delivered = n;
        if let Some(m) = net.mutation
            && net.rng.chance(1, 4)
        {
            let d = &mut net.dirs[side];
            let k = d.segs.len();
            match m {
                Mutation::LoseByte => {
                    let (_, last) = d.segs.back_mut().expect("a segment");
                    let _ = last.split_to(1);
                    delivered -= 1;
                    net.mutation = None;
                }
                // Only a swap that changes the byte stream: two runs of one
                // repeated byte (a ClientHello's zero padding) swap into
                // the same bytes.
                Mutation::Reorder if k >= 2 && swap_changes(&d.segs[k - 2].1, &d.segs[k - 1].1) => {
                    let a = d.segs[k - 1].1.clone();
                    d.segs[k - 1].1 = std::mem::replace(&mut d.segs[k - 2].1, a);
                    net.mutation = None;
                }
                Mutation::Reorder => {}
            }
        }
        let d = &mut net.dirs[side];
        d.segs.retain(|(_, s)| !s.is_empty());
        d.in_flight += delivered;
        d.written += n as u64;
        if let Some(w) = d.rx_waker.take() {
            w.wake();
        }
        net.mix(((side as u64) << 40) | n as u64);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if lock(&self.net).reset {
            return Poll::Ready(Err(reset_error()));
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let side = self.side;
        let mut net = lock(&self.net);
        if net.reset {
            return Poll::Ready(Err(reset_error()));
        }
        net.dirs[side].fin = true;
        net.dirs[side].wake();
        Poll::Ready(Ok(()))
    }
}

impl Drop for SimStream {
    /// Dropping an end closes it like closing a socket: its direction ends
    /// (the peer reads end of input after what is in flight), and what was
    /// in flight toward it is lost and the peer's later writes fail.
    fn drop(&mut self) {
        let side = self.side;
        let mut net = lock(&self.net);
        net.dirs[side].fin = true;
        net.dirs[side].wake();
        let d = &mut net.dirs[1 - side];
        d.reader_gone = true;
        d.lost += d.in_flight as u64;
        d.in_flight = 0;
        d.segs.clear();
        d.wake();
    }
}

/// What the chaos task may do in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Faults {
    pub holds: bool,
    pub reset: bool,
    pub half_close: bool,
}

impl Faults {
    pub fn random(rng: &mut Rng) -> Faults {
        Faults {
            holds: rng.chance(2, 3),
            reset: rng.chance(1, 5),
            half_close: rng.chance(1, 8),
        }
    }

    /// No fault that may lose or cut the byte stream.
    pub fn lossless(self) -> bool {
        !self.reset && !self.half_close
    }
}

/// Runs the faults of one run on `link` until aborted.
pub async fn chaos(link: Link, mut rng: Rng, faults: Faults) {
    let reset_at = rng.millis(0, 400);
    let half_close_at = rng.millis(0, 400);
    let half_close_side = rng.below(2) as usize;
    let start = Instant::now();
    let (mut reset_done, mut half_done) = (!faults.reset, !faults.half_close);
    loop {
        let step = rng.millis(1, 60);
        tokio::time::sleep(step).await;
        let t = start.elapsed();
        if !reset_done && t >= reset_at {
            link.reset();
            reset_done = true;
        }
        if !half_done && t >= half_close_at {
            link.half_close(half_close_side);
            half_done = true;
        }
        if faults.holds && rng.chance(1, 4) {
            let period = rng.millis(1, 300);
            match rng.below(3) {
                0 => link.partition(period),
                s => link.hold(s as usize - 1, period),
            }
        }
    }
}
