//! AnyEvent's three activity timers ([TO-1](crate::semantics#TO-1)…[TO-5](crate::semantics#TO-5)) on tokio time.
//!
//! One `Sleep` is armed for the earliest deadline of the enabled timers.
//! Activity only moves a stamp (no timer reset per read); the sleep is
//! re-armed lazily when it fires early, so a busy connection pays one
//! `Instant::now()` per read or write and nothing else.
//!
//! A `QueuedFramed` split into `Sink` and `Stream` halves waits on the
//! timers from two tasks. Each poll says which side it is ([`Side`]); the
//! sleep then wakes both sides' wakers, and an expiry one side hears for
//! the other is left for it while it waits ([`Claim`],
//! [TO-3](crate::semantics#TO-3)).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::task::{ArcWake, AtomicWaker, WakerRef, waker_ref};

use tokio::time::{Instant, Sleep};

/// `period` after `from`, or `None` when that lies too far for an
/// `Instant` once tokio rounds it up to its timer's tick (tokio would
/// panic on it): such a deadline is never reached.
pub(crate) fn deadline_after(from: Instant, period: Duration) -> Option<Instant> {
    let due = from.checked_add(period)?;
    due.checked_add(Duration::from_secs(1))?;
    Some(due)
}

/// Runs `f` for up to `period`: `None` if the period ran out first. A
/// period too long for an `Instant` never runs out.
pub(crate) async fn within<F: Future>(period: Duration, f: F) -> Option<F::Output> {
    match deadline_after(Instant::now(), period) {
        Some(deadline) => tokio::time::timeout_at(deadline, f).await.ok(),
        None => Some(f.await),
    }
}

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

    pub(crate) fn bit(self) -> u8 {
        1 << self.index()
    }

    /// What errors and logs call it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Timeout::Idle => "idle timeout",
            Timeout::Read => "read timeout",
            Timeout::Write => "write timeout",
        }
    }
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
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
    /// The spawned driver.
    Driver,
}

impl Side {
    fn slot(self) -> usize {
        match self {
            Side::Read | Side::Driver => 0,
            Side::Write => 1,
        }
    }
}

/// What a poll does with an expiry ([TO-3](crate::semantics#TO-3): the first waiter it concerns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// Its own: it takes it.
    Own,
    /// The other side's: it takes it only while the other side is not
    /// waiting (a lone reader hears the write timeout).
    Fallback,
    /// The other side's: it drops it while the other side is not waiting
    /// (a flush leaves read timeouts to reads).
    Never,
}

impl Claim {
    /// `all`: the poll takes every expiry and routes it itself (the driver,
    /// a hook to run). `reads`: a flush with reads queued, which tells them
    /// of a read timeout as it expires (`owed`: not one left for the read
    /// side, which a flush takes only while no read waits).
    fn of(side: Side, which: Timeout, all: bool, reads: bool, owed: bool) -> Claim {
        match (side, which) {
            _ if all => Claim::Own,
            (Side::Driver, _) | (_, Timeout::Idle) => Claim::Own,
            (Side::Read, Timeout::Read) | (Side::Write, Timeout::Write) => Claim::Own,
            (Side::Read, Timeout::Write) => Claim::Fallback,
            (Side::Write, Timeout::Read) if reads && !owed => Claim::Own,
            (Side::Write, Timeout::Read) if reads => Claim::Fallback,
            (Side::Write, Timeout::Read) => Claim::Never,
        }
    }
}

/// The wakers of both sides of a `QueuedFramed` waiting on the timers and
/// the transport. The sleep (and, once the write side has waited, the
/// transport: [`Timers::io_waker`]) is polled with a waker that wakes them
/// all, so the side that polled it last does not keep the other from
/// hearing it.
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
    /// By side: a poll of that side waits on the timers (set when it
    /// waits; cleared when it takes an expiry, for the read side when input
    /// comes, for the write side when its flush returns). A poll given up
    /// (its future dropped) leaves it set: see `owed`.
    parked: [bool; 2],
    /// Expiries heard by one side for the other side's waiting poll, by
    /// [`Timeout::bit`]: left here for it, and it is woken. Activity on the
    /// timer, or setting it, drops one. One still here when its timer
    /// fires again was never taken in a whole period: the side it was left
    /// for was not waiting after all (its poll was given up).
    owed: u8,
    /// The timers only run once the connection is up ([TO-2](crate::semantics#TO-2)).
    started: bool,
    /// The write side has waited: the transport is polled with the shared
    /// waker from now on ([`io_waker`](Self::io_waker)).
    io_fanned: bool,
    /// The transport wrote since [`take_wrote`](Self::take_wrote) last
    /// looked (neither an expiry nor a reset sets it).
    wrote: bool,
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
            io_fanned: false,
            wrote: false,
        }
    }

    /// Stops the timers until [`start`](Self::start) (while connecting).
    pub(crate) fn pause(&mut self) {
        self.started = false;
    }

    /// Starts the timers with every stamp at "now" ([TO-2](crate::semantics#TO-2)).
    pub(crate) fn start(&mut self) {
        self.started = true;
        self.stamp = [Instant::now(); 3];
        self.owed = 0;
    }

    /// Sets a period; it counts from the last activity ([TO-4](crate::semantics#TO-4)), which is
    /// recorded whether or not a timer is on.
    pub(crate) fn set(&mut self, which: Timeout, period: Duration) {
        self.period[which.index()] = period;
        self.owed &= !which.bit();
    }

    /// Keeps the waker of a poll on `side` about to wait on the timers.
    /// A flush, or a read with a timer armed, moves every waker to the
    /// shared [`Waiters`], which the sleep wakes.
    fn remember(&mut self, cx: &Context<'_>, side: Side) {
        self.parked[side.slot()] = true;
        let writes = side.slot() == Side::Write.slot();
        let fan_out = writes || (side == Side::Read && self.sleep.is_some());
        if self.fanned.is_none() && fan_out {
            let waiters = Arc::new(Waiters::default());
            if let Some(w) = self.waiter.take() {
                waiters.0[Side::Read.slot()].register(&w);
            }
            self.fanned = Some(waiters);
        }
        if writes && !self.io_fanned {
            self.io_fanned = true;
            // The read side may have polled the transport with its own
            // waker, and this side since with its own: woken, it polls
            // again with the shared one.
            if let Some(waiters) = &self.fanned {
                waiters.0[Side::Read.slot()].wake();
            }
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

    /// The poll on `side` stopped waiting (it returned).
    pub(crate) fn unpark(&mut self, side: Side) {
        self.parked[side.slot()] = false;
    }

    /// The waker to poll the transport with for a poll on `side` (whose
    /// waker is registered first, so no wake-up falls between the two):
    /// `None`, the caller's own, until the write side has waited once.
    /// From then on the two sides may wait in two tasks (a split
    /// `QueuedFramed`), and the transport, which keeps one wake-up per
    /// direction for the last task that polled it, is polled with a waker
    /// that wakes both sides. Each side does the other's I/O now and then
    /// (a read writes queued output; a flush runs the reads queued in
    /// front of a TLS switch); with the caller's own waker, the other
    /// side's task would never hear of its input, or of room to write.
    /// A side that is gone is woken once at most: a wake takes its waker.
    pub(crate) fn io_waker(&self, cx: &Context<'_>, side: Side) -> Option<WakerRef<'_>> {
        if !self.io_fanned {
            return None;
        }
        let waiters = self.fanned.as_ref()?;
        waiters.0[side.slot()].register(cx.waker());
        Some(waker_ref(waiters))
    }

    /// A read timeout that a flush heard and no queued read took: left for
    /// the read side while it waits (it is woken); `false` when it does not
    /// wait. One still left at the next expiry was left for a wait given
    /// up: the read side is then taken for gone ([`poll_expired`]).
    ///
    /// [`poll_expired`]: Self::poll_expired
    pub(crate) fn leave_for_read(&mut self, which: Timeout) -> bool {
        if !self.parked[Side::Read.slot()] {
            return false;
        }
        self.owed |= which.bit();
        match &self.fanned {
            Some(waiters) => waiters.0[Side::Read.slot()].wake(),
            None => {
                if let Some(w) = &self.waiter {
                    w.wake_by_ref();
                }
            }
        }
        true
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

    /// How long ago the transport last wrote, if it wrote since the last
    /// call (whether or not a timer is on). The time is the write timer's
    /// stamp, which an expiry of that timer or its reset may have moved
    /// later since.
    #[cfg(feature = "tower")]
    pub(crate) fn take_wrote(&mut self) -> Option<Duration> {
        std::mem::take(&mut self.wrote)
            .then(|| Instant::now().saturating_duration_since(self.stamp[Timeout::Write.index()]))
    }

    /// How long ago the transport last read (or the read timer was reset
    /// or expired, which moves its stamp too).
    #[cfg(feature = "tower")]
    pub(crate) fn since_read(&self) -> Duration {
        Instant::now().saturating_duration_since(self.stamp[Timeout::Read.index()])
    }

    /// `*_timeout_reset`: marks activity for `which` now.
    pub(crate) fn reset(&mut self, which: Timeout) {
        self.stamp[which.index()] = Instant::now();
        self.owed &= !which.bit();
    }

    /// A read of more than 0 bytes happened. Recorded even while every
    /// timer is off, so a timer set later counts from the last activity.
    pub(crate) fn on_read(&mut self) {
        self.on_transport_activity(true, false);
        // The read side got what it waited for (it parks again if it needs
        // more; if the flush read for it, the transport woke it too:
        // `io_waker`).
        self.parked[Side::Read.slot()] = false;
    }

    /// Bytes moved: a read and/or a write of the engine's own, or traffic
    /// under it that did not pass through them (a TLS handshake's flights,
    /// a close_notify, ciphertext of a record not yet whole), which the
    /// timers count all the same ([TO-1](crate::semantics#TO-1)). Each moves the idle timer's stamp
    /// and its own, and voids an expiry of those not yet taken.
    #[inline]
    pub(crate) fn on_transport_activity(&mut self, read: bool, wrote: bool) {
        if !read && !wrote {
            return;
        }
        let now = Instant::now();
        let mut moved = Timeout::Idle.bit();
        self.stamp[Timeout::Idle.index()] = now;
        if read {
            self.stamp[Timeout::Read.index()] = now;
            moved |= Timeout::Read.bit();
        }
        if wrote {
            self.stamp[Timeout::Write.index()] = now;
            self.wrote = true;
            moved |= Timeout::Write.bit();
        }
        self.owed &= !moved;
    }

    /// A write happened (recorded as reads are).
    pub(crate) fn on_write(&mut self) {
        self.on_transport_activity(false, true);
    }

    fn deadline(&self) -> Option<Instant> {
        Timeout::ALL
            .iter()
            .filter_map(|&t| self.deadline_of(t))
            .min()
    }

    /// When `which` expires: `None` while it is off, or when its deadline
    /// lies too far for an `Instant` (see [`deadline_after`]).
    fn deadline_of(&self, which: Timeout) -> Option<Instant> {
        let p = self.period[which.index()];
        if p.is_zero() {
            return None;
        }
        deadline_after(self.stamp[which.index()], p)
    }

    /// Whether `which` is on and its deadline has passed.
    fn due(&self, which: Timeout, now: Instant) -> bool {
        self.deadline_of(which).is_some_and(|due| due <= now)
    }

    /// The write timer was due when the idle timer last fired (`expired`
    /// moved the idle stamp to that moment): the two expired together.
    pub(crate) fn write_due_with_idle(&self) -> bool {
        self.due(Timeout::Write, self.stamp[Timeout::Idle.index()])
    }

    /// The write expiry that came with an idle one was told ([TO-3](crate::semantics#TO-3)): it
    /// counts as fired then.
    pub(crate) fn write_taken_with_idle(&mut self) {
        self.stamp[Timeout::Write.index()] = self.stamp[Timeout::Idle.index()];
    }

    /// The first timer that has expired by now, if any; its stamp moves to
    /// now, so it fires again one full period later ([TO-3](crate::semantics#TO-3)).
    pub(crate) fn expired(&mut self) -> Option<Timeout> {
        if !self.started {
            return None;
        }
        // A period too long for an `Instant` never expires (`due`).
        let now = Instant::now();
        let t = Timeout::ALL.into_iter().find(|&t| self.due(t, now))?;
        self.stamp[t.index()] = now;
        Some(t)
    }

    /// The first owed expiry a poll on `side` takes: its own, or (as when
    /// it hears one) the other side's while the other side is not waiting.
    /// Taken late, it counts as firing now, so the next one is a whole
    /// period away.
    fn take_owed(&mut self, side: Side, all: bool, reads: bool) -> Option<Timeout> {
        let other_waits = side != Side::Driver && self.parked[1 - side.slot()];
        for t in Timeout::ALL {
            if self.owed & t.bit() == 0 {
                continue;
            }
            match Claim::of(side, t, all, reads, true) {
                Claim::Own => {}
                // Left for the other side, which still waits: its own.
                _ if other_waits => continue,
                Claim::Fallback => {}
                Claim::Never => {
                    self.owed &= !t.bit();
                    continue;
                }
            }
            self.owed &= !t.bit();
            self.stamp[t.index()] = Instant::now();
            return Some(t);
        }
        None
    }

    /// Polls the sleep for the earliest deadline, for a poll on `side`
    /// (`all`, `reads`: see [`Claim::of`]). `Ready(t)` when it takes an expiry;
    /// `Pending` with the waker registered otherwise (or when no timer is
    /// enabled).
    pub(crate) fn poll_expired(
        &mut self,
        cx: &mut Context<'_>,
        side: Side,
        all: bool,
        reads: bool,
    ) -> Poll<Timeout> {
        if !self.started {
            return Poll::Pending;
        }
        loop {
            if self.owed != 0
                && let Some(t) = self.take_owed(side, all, reads)
            {
                self.unpark(side);
                return Poll::Ready(t);
            }
            if let Some(mut t) = self.expired() {
                if side == Side::Write && !all && t == Timeout::Idle && self.write_due_with_idle() {
                    // TO-3: a flush told of timeouts that expired together
                    // gets the write timeout, which stands for both.
                    self.write_taken_with_idle();
                    t = Timeout::Write;
                }
                let bit = t.bit();
                let claim = Claim::of(side, t, all, reads, false);
                let other = 1 - side.slot();
                if self.owed & bit != 0 {
                    // Left for the other side a whole period ago (this side
                    // would have taken one of its own first) and never
                    // taken: its poll was given up.
                    self.parked[other] = false;
                }
                if claim != Claim::Own && self.parked[other] {
                    self.owed |= bit;
                    if let Some(waiters) = &self.fanned {
                        waiters.0[other].wake();
                    }
                    continue;
                }
                self.owed &= !bit;
                if claim == Claim::Never {
                    continue;
                }
                self.unpark(side);
                return Poll::Ready(t);
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
        timers.poll_expired(
            &mut Context::from_waker(noop_waker_ref()),
            side,
            false,
            false,
        )
    }

    /// A flush's poll, with or without reads queued in front of it.
    fn flush(timers: &mut Timers, reads: bool) -> Poll<Timeout> {
        timers.poll_expired(
            &mut Context::from_waker(noop_waker_ref()),
            Side::Write,
            false,
            reads,
        )
    }

    /// Timers with a read timeout of `period`, whose expiry a flush
    /// without reads queued has left for the waiting read.
    async fn read_expiry_left_for_the_read(period: Duration) -> Timers {
        let mut timers = Timers::new(Duration::ZERO, period, Duration::ZERO);
        assert!(poll(&mut timers, Side::Read).is_pending());
        assert!(flush(&mut timers, false).is_pending());
        tokio::time::advance(period).await;
        assert!(flush(&mut timers, false).is_pending(), "left for the read");
        timers
    }

    /// Both expire together while both sides wait: each takes its own, and
    /// leaves the other's for it (a poll taking its own does not drop the
    /// other's, however soon it polls again).
    #[tokio::test(start_paused = true)]
    async fn each_side_takes_its_own_expiry_and_leaves_the_other_sides() {
        let period = Duration::from_secs(1);
        let mut timers = Timers::new(Duration::ZERO, period, period);
        assert!(poll(&mut timers, Side::Read).is_pending());
        assert!(poll(&mut timers, Side::Write).is_pending());
        tokio::time::advance(period).await;
        assert_eq!(poll(&mut timers, Side::Write), Poll::Ready(Timeout::Write));
        assert!(
            poll(&mut timers, Side::Write).is_pending(),
            "left for the read"
        );
        assert!(poll(&mut timers, Side::Write).is_pending(), "still left");
        assert_eq!(poll(&mut timers, Side::Read), Poll::Ready(Timeout::Read));
        assert!(poll(&mut timers, Side::Read).is_pending(), "taken once");
    }

    /// A read that polls again and again does not take the write timeout
    /// left for a waiting flush.
    #[tokio::test(start_paused = true)]
    async fn a_read_polling_again_leaves_the_write_timeout_to_the_flush() {
        let period = Duration::from_secs(1);
        let mut timers = Timers::new(Duration::ZERO, Duration::ZERO, period);
        assert!(poll(&mut timers, Side::Write).is_pending());
        tokio::time::advance(period).await;
        for _ in 0..3 {
            assert!(poll(&mut timers, Side::Read).is_pending());
        }
        assert_eq!(poll(&mut timers, Side::Write), Poll::Ready(Timeout::Write));
    }

    /// A left expiry is dropped by activity on its timer, or by setting it,
    /// before the side it was left for looks.
    #[tokio::test(start_paused = true)]
    async fn a_left_expiry_is_dropped_by_activity_or_by_setting_the_timer() {
        let period = Duration::from_secs(1);
        let mut timers = read_expiry_left_for_the_read(period).await;
        timers.on_read();
        assert!(
            poll(&mut timers, Side::Read).is_pending(),
            "input came since"
        );
        tokio::time::advance(period).await;
        assert!(poll(&mut timers, Side::Write).is_pending(), "left");
        timers.set(Timeout::Read, Duration::ZERO);
        assert!(poll(&mut timers, Side::Read).is_pending(), "timer off");
    }

    /// A left expiry is dropped by a reset of its timer (`timeout_reset`),
    /// and a write timeout left for a flush by a write.
    #[tokio::test(start_paused = true)]
    async fn a_left_expiry_is_dropped_by_a_reset_or_by_a_write() {
        let period = Duration::from_secs(1);
        let mut timers = read_expiry_left_for_the_read(period).await;
        timers.reset(Timeout::Read);
        assert!(poll(&mut timers, Side::Read).is_pending(), "reset since");
        tokio::time::advance(period / 2).await;
        assert!(
            poll(&mut timers, Side::Read).is_pending(),
            "counts from the reset"
        );
        tokio::time::advance(period / 2).await;
        assert_eq!(poll(&mut timers, Side::Read), Poll::Ready(Timeout::Read));

        let mut timers = Timers::new(Duration::ZERO, Duration::ZERO, period);
        assert!(poll(&mut timers, Side::Write).is_pending());
        tokio::time::advance(period).await;
        assert!(poll(&mut timers, Side::Read).is_pending(), "left");
        timers.on_write();
        assert!(poll(&mut timers, Side::Write).is_pending(), "written since");
    }

    /// A read timeout that a flush without queued reads left for a waiting
    /// read is dropped by such a flush once the read no longer waits: no
    /// read hears it later.
    #[tokio::test(start_paused = true)]
    async fn a_read_timeout_left_by_a_flush_without_reads_is_dropped_once_no_read_waits() {
        let period = Duration::from_secs(1);
        let mut timers = read_expiry_left_for_the_read(period).await;
        timers.unpark(Side::Read);
        assert!(poll(&mut timers, Side::Write).is_pending(), "dropped");
        assert!(
            poll(&mut timers, Side::Read).is_pending(),
            "not heard later"
        );
    }

    /// A flush with reads queued hears a read timeout as it expires (to
    /// tell them); one it leaves for a waiting read is not taken back
    /// while that read waits, and is taken once it does not.
    #[tokio::test(start_paused = true)]
    async fn a_read_timeout_left_by_a_flush_stays_for_the_waiting_read() {
        let period = Duration::from_secs(1);
        let mut timers = Timers::new(Duration::ZERO, period, Duration::ZERO);
        assert!(poll(&mut timers, Side::Read).is_pending());
        assert!(flush(&mut timers, true).is_pending());
        tokio::time::advance(period).await;
        assert_eq!(
            flush(&mut timers, true),
            Poll::Ready(Timeout::Read),
            "heard, for the queued reads"
        );
        assert!(timers.leave_for_read(Timeout::Read)); // none of them took it
        assert!(flush(&mut timers, true).is_pending(), "left for the read");
        assert_eq!(poll(&mut timers, Side::Read), Poll::Ready(Timeout::Read));
        tokio::time::advance(period).await;
        assert_eq!(flush(&mut timers, true), Poll::Ready(Timeout::Read));
        timers.unpark(Side::Read);
        assert!(!timers.leave_for_read(Timeout::Read));
        assert!(
            flush(&mut timers, true).is_pending(),
            "no read waits: dropped"
        );
        assert!(poll(&mut timers, Side::Read).is_pending(), "dropped");
    }

    /// A read timeout that a flush without queued reads left for a waiting
    /// read is taken by a flush that has reads queued once that read no
    /// longer waits (the flush tells them), not dropped.
    #[tokio::test(start_paused = true)]
    async fn a_read_timeout_left_for_a_read_that_stopped_waiting_goes_to_a_flush_with_reads() {
        let period = Duration::from_secs(1);
        let mut timers = read_expiry_left_for_the_read(period).await;
        timers.unpark(Side::Read);
        assert_eq!(flush(&mut timers, true), Poll::Ready(Timeout::Read));
        assert!(poll(&mut timers, Side::Read).is_pending(), "taken once");
    }

    #[test]
    fn a_timeout_shows_as_the_error_it_raises_names_it() {
        for (which, name) in [
            (Timeout::Idle, "idle timeout"),
            (Timeout::Read, "read timeout"),
            (Timeout::Write, "write timeout"),
        ] {
            assert_eq!(which.to_string(), name);
            let e = crate::Error::timer_expired(which);
            assert!(e.to_string().contains(name), "{e}");
        }
    }

    /// A flush given up leaves the write side marked waiting: the write
    /// timeout it was left is not taken in a whole period, so at the next
    /// expiry the lone read takes it. With no flush waiting at all, the
    /// read takes it at once, and a flush drops a read timeout.
    #[tokio::test(start_paused = true)]
    async fn a_side_takes_the_others_expiry_once_the_other_is_not_waiting() {
        let period = Duration::from_secs(1);
        let mut timers = Timers::new(Duration::ZERO, Duration::ZERO, period);
        assert!(poll(&mut timers, Side::Write).is_pending()); // then given up
        tokio::time::advance(period).await;
        assert!(
            poll(&mut timers, Side::Read).is_pending(),
            "left for the flush"
        );
        tokio::time::advance(period).await;
        assert_eq!(poll(&mut timers, Side::Read), Poll::Ready(Timeout::Write));
        tokio::time::advance(period).await;
        assert_eq!(poll(&mut timers, Side::Read), Poll::Ready(Timeout::Write));

        let mut timers = Timers::new(Duration::ZERO, period, Duration::ZERO);
        tokio::time::advance(period).await;
        assert!(poll(&mut timers, Side::Write).is_pending(), "dropped");
        assert!(
            poll(&mut timers, Side::Read).is_pending(),
            "dropped for all"
        );
    }
}
