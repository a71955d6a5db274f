//! AnyEvent's three activity timers (TO-1…TO-5) on tokio time.
//!
//! One `Sleep` is armed for the earliest deadline of the enabled timers.
//! Activity only moves a stamp (no timer reset per read); the sleep is
//! re-armed lazily when it fires early, so a busy connection pays one
//! `Instant::now()` per read or write and nothing else.

use std::fmt;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::task::{ArcWake, AtomicWaker, waker_ref};

use tokio::time::{Instant, Sleep};

/// Which timer expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Timeout {
    /// `timeout`: no read and no write for the period.
    Idle,
    /// `rtimeout`: no read of more than 0 bytes for the period.
    Read,
    /// `wtimeout`: no write for the period (fires even with nothing to write).
    Write,
}

impl Timeout {
    /// In the order timers that expire together are handled.
    const ALL: [Timeout; 3] = [Timeout::Idle, Timeout::Read, Timeout::Write];

    fn index(self) -> usize {
        match self {
            Timeout::Idle => 0,
            Timeout::Read => 1,
            Timeout::Write => 2,
        }
    }

    fn bit(self) -> u8 {
        1 << self.index()
    }
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Timeout::Idle => "idle timeout",
            Timeout::Read => "read timeout",
            Timeout::Write => "write timeout",
        })
    }
}

/// Who polls the timers. A `QueuedFramed` split into its `Sink` and
/// `Stream` halves (two tasks) waits on them from both sides at once, and
/// each side hears its own timer; the spawned driver is one task and
/// hears every timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// A read: the `Stream`, a direct read, the inline queue.
    Read,
    /// A flush or a wait for the write queue to drain.
    Write,
    /// Takes every expiry and routes it itself: the spawned driver, or a
    /// poll that has a hook to run or queued requests to tell.
    Any,
}

impl Side {
    fn slot(self) -> usize {
        match self {
            Side::Read | Side::Any => 0,
            Side::Write => 1,
        }
    }

    fn other(self) -> Option<Side> {
        match self {
            Side::Read => Some(Side::Write),
            Side::Write => Some(Side::Read),
            Side::Any => None,
        }
    }
}

/// The wakers of both sides of a `QueuedFramed` waiting on the timers. The
/// sleep is polled with a waker that wakes them all, so the side that
/// polled it last does not keep the other from hearing its timer.
#[derive(Default)]
struct Waiters([AtomicWaker; 2]);

impl ArcWake for Waiters {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        for w in &arc_self.0 {
            w.wake();
        }
    }
}

/// The three timers: a period each (zero = off) and an activity stamp each.
pub(crate) struct Timers {
    period: [Duration; 3],
    stamp: [Instant; 3],
    sleep: Option<Pin<Box<Sleep>>>,
    /// Who waits on the timers, told when a timer is set (its deadline may
    /// then be earlier than the one armed): the driver, or a read.
    waiter: Option<Waker>,
    /// Both sides' wakers instead, once a flush waited or a read waited
    /// with a timer armed (see [`Waiters`]); the driver never needs them.
    fanned: Option<Arc<Waiters>>,
    /// Each side has a poll waiting on the timers (set when it waits,
    /// cleared when it returns).
    parked: [bool; 2],
    /// Expiries one side heard while the other side waits on them, by
    /// [`Timeout::bit`]: the other side takes them, unless activity on the
    /// timer came first (TO-3: the first waiter the timer concerns).
    owed: u8,
    /// The timers only run once the connection is up (TO-2).
    started: bool,
}

impl fmt::Debug for Timers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timers")
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}

impl Timers {
    pub(crate) fn new(idle: Duration, read: Duration, write: Duration) -> Timers {
        let now = Instant::now();
        Timers {
            period: [idle, read, write],
            stamp: [now; 3],
            sleep: None,
            waiter: None,
            fanned: None,
            parked: [false; 2],
            owed: 0,
            started: true,
        }
    }

    /// Stops the timers until [`start`](Self::start) (while connecting).
    pub(crate) fn pause(&mut self) {
        self.started = false;
    }

    /// Starts the timers with every stamp at "now" (TO-2).
    pub(crate) fn start(&mut self) {
        self.started = true;
        self.stamp = [Instant::now(); 3];
        self.owed = 0;
    }

    /// Sets a period; it counts from the last activity (TO-4), which is
    /// recorded whether or not a timer is on.
    pub(crate) fn set(&mut self, which: Timeout, period: Duration) {
        self.period[which.index()] = period;
    }

    /// Keeps the waker of a poll on `side` about to wait on the timers.
    /// A flush, or a read with a timer armed, moves every waker to the
    /// shared [`Waiters`], which the sleep wakes.
    fn remember(&mut self, cx: &Context<'_>, side: Side) {
        self.parked[side.slot()] = true;
        let fan_out = side == Side::Write || (side == Side::Read && self.sleep.is_some());
        if self.fanned.is_none() && fan_out {
            let waiters = Arc::new(Waiters::default());
            if let Some(w) = self.waiter.take() {
                waiters.0[Side::Read.slot()].register(&w);
            }
            self.fanned = Some(waiters);
        }
        match &self.fanned {
            Some(waiters) => waiters.0[side.slot()].register(cx.waker()),
            None if self
                .waiter
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker())) => {}
            None => self.waiter = Some(cx.waker().clone()),
        }
    }

    /// The poll on `side` stopped waiting (it returned): an expiry heard on
    /// the other side is no longer kept for it.
    pub(crate) fn unpark(&mut self, side: Side) {
        self.parked[side.slot()] = false;
    }

    /// Keeps an expiry of `which` that nobody took for the next poll that
    /// takes it, while nothing happens on its timer.
    pub(crate) fn owe(&mut self, which: Timeout) {
        self.owed |= which.bit();
    }

    /// Wakes whoever waits on the timers (a timer was set: its deadline may
    /// now be earlier than the one armed, or the first).
    pub(crate) fn wake_waiter(&mut self) {
        if let Some(w) = self.waiter.take() {
            w.wake();
        }
        if let Some(waiters) = &self.fanned {
            ArcWake::wake_by_ref(waiters);
        }
    }

    /// `*_timeout_reset`: marks activity for `which` now.
    pub(crate) fn reset(&mut self, which: Timeout) {
        self.stamp[which.index()] = Instant::now();
        self.owed &= !which.bit();
    }

    /// A read of more than 0 bytes happened. Recorded even while every
    /// timer is off, so a timer set later counts from the last activity.
    pub(crate) fn on_read(&mut self) {
        let now = Instant::now();
        self.stamp[Timeout::Idle.index()] = now;
        self.stamp[Timeout::Read.index()] = now;
        self.owed &= !(Timeout::Idle.bit() | Timeout::Read.bit());
    }

    /// A write happened (recorded as reads are).
    pub(crate) fn on_write(&mut self) {
        let now = Instant::now();
        self.stamp[Timeout::Idle.index()] = now;
        self.stamp[Timeout::Write.index()] = now;
        self.owed &= !(Timeout::Idle.bit() | Timeout::Write.bit());
    }

    fn deadline(&self) -> Option<Instant> {
        Timeout::ALL
            .iter()
            .filter(|t| !self.period[t.index()].is_zero())
            .filter_map(|t| self.stamp[t.index()].checked_add(self.period[t.index()]))
            .min()
    }

    /// The first timer that has expired by now, if any; its stamp moves to
    /// now, so it fires again one full period later (TO-3).
    pub(crate) fn expired(&mut self) -> Option<Timeout> {
        if !self.started {
            return None;
        }
        let now = Instant::now();
        for t in Timeout::ALL {
            let p = self.period[t.index()];
            // A period too long for an `Instant` never expires.
            let due = self.stamp[t.index()].checked_add(p);
            if !p.is_zero() && due.is_some_and(|due| due <= now) {
                self.stamp[t.index()] = now;
                return Some(t);
            }
        }
        None
    }

    /// Whether a poll on `side` takes an expiry of `which` (TO-3): the
    /// driver takes all (see [`Side::Any`]); a read takes a write timeout only while no flush
    /// waits for it, and a flush a read timeout only while no read waits.
    fn takes(&self, side: Side, which: Timeout) -> bool {
        let waits = |s: Side| self.parked[s.slot()];
        match (side, which) {
            (Side::Any, _) | (_, Timeout::Idle) => true,
            (Side::Read, Timeout::Read) | (Side::Write, Timeout::Write) => true,
            (Side::Read, Timeout::Write) => !waits(Side::Write),
            (Side::Write, Timeout::Read) => !waits(Side::Read),
        }
    }

    /// An expiry kept for `side` by the other side (activity on its timer
    /// since it fired dropped it).
    fn take_owed(&mut self, side: Side) -> Option<Timeout> {
        if self.owed == 0 {
            return None;
        }
        let t = Timeout::ALL
            .into_iter()
            .find(|&t| self.owed & t.bit() != 0 && self.takes(side, t))?;
        self.owed &= !t.bit();
        Some(t)
    }

    /// Polls the sleep for the earliest deadline, for a poll on `side`.
    /// `Ready(t)` when a timer that `side` takes expired; `Pending` with the
    /// waker registered otherwise (or when no timer is enabled). An expiry
    /// for the other side's waiting poll is kept for it, and it is woken.
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>, side: Side) -> Poll<Timeout> {
        if !self.started {
            return Poll::Pending;
        }
        loop {
            if let Some(t) = self.take_owed(side) {
                self.unpark(side);
                return Poll::Ready(t);
            }
            if let Some(t) = self.expired() {
                if self.takes(side, t) {
                    self.unpark(side);
                    return Poll::Ready(t);
                }
                self.owe(t);
                if let (Some(other), Some(waiters)) = (side.other(), &self.fanned) {
                    waiters.0[other.slot()].wake();
                }
                continue;
            }
            let Some(deadline) = self.deadline() else {
                self.sleep = None;
                self.remember(cx, side);
                return Poll::Pending;
            };
            match &mut self.sleep {
                Some(s) if s.deadline() == deadline => {}
                Some(s) => s.as_mut().reset(deadline),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.remember(cx, side);
            let Some(sleep) = self.sleep.as_mut() else {
                return Poll::Pending;
            };
            let pending = match &self.fanned {
                Some(waiters) => {
                    let fan = waker_ref(waiters);
                    sleep
                        .as_mut()
                        .poll(&mut Context::from_waker(&fan))
                        .is_pending()
                }
                None => sleep.as_mut().poll(cx).is_pending(),
            };
            if pending {
                return Poll::Pending;
            }
            // The sleep fired: loop to see which timer (activity may have
            // pushed every deadline back, then we re-arm).
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::task::noop_waker_ref;

    fn poll(timers: &mut Timers, side: Side) -> Poll<Timeout> {
        timers.poll_expired(&mut Context::from_waker(noop_waker_ref()), side)
    }

    /// Both halves wait; the first to poll after the expiry takes only what
    /// is its own and keeps the rest for the other.
    #[tokio::test(start_paused = true)]
    async fn each_side_takes_its_own_expiry_and_keeps_the_other_sides() {
        let period = Duration::from_secs(1);
        let mut timers = Timers::new(Duration::ZERO, period, period);
        assert!(poll(&mut timers, Side::Read).is_pending());
        assert!(poll(&mut timers, Side::Write).is_pending());
        tokio::time::advance(period).await;
        // Both expired together: the read side takes the read timeout and
        // keeps the write timeout for the waiting flush.
        assert_eq!(poll(&mut timers, Side::Read), Poll::Ready(Timeout::Read));
        assert!(poll(&mut timers, Side::Read).is_pending());
        assert_eq!(poll(&mut timers, Side::Write), Poll::Ready(Timeout::Write));
        assert!(poll(&mut timers, Side::Write).is_pending());
    }

    /// An expiry kept for the other side is dropped by activity on its
    /// timer before that side looks.
    #[tokio::test(start_paused = true)]
    async fn a_kept_expiry_is_dropped_by_activity_first() {
        let period = Duration::from_secs(1);
        let mut timers = Timers::new(Duration::ZERO, period, Duration::ZERO);
        assert!(poll(&mut timers, Side::Read).is_pending());
        assert!(poll(&mut timers, Side::Write).is_pending());
        tokio::time::advance(period).await;
        assert!(
            poll(&mut timers, Side::Write).is_pending(),
            "kept for the read"
        );
        timers.on_read();
        assert!(
            poll(&mut timers, Side::Read).is_pending(),
            "input came since"
        );
    }

    /// With nobody on the other side waiting, a side takes any expiry (a
    /// lone reader hears the write timeout), and once the other side
    /// returned it is no longer kept for it.
    #[tokio::test(start_paused = true)]
    async fn a_side_takes_the_others_expiry_when_the_other_does_not_wait() {
        let period = Duration::from_secs(1);
        let mut timers = Timers::new(Duration::ZERO, Duration::ZERO, period);
        assert!(poll(&mut timers, Side::Write).is_pending());
        timers.unpark(Side::Write); // the flush returned
        assert!(poll(&mut timers, Side::Read).is_pending());
        tokio::time::advance(period).await;
        assert_eq!(poll(&mut timers, Side::Read), Poll::Ready(Timeout::Write));
    }
}
