//! AnyEvent's three activity timers (TO-1…TO-5) on tokio time.
//!
//! One `Sleep` is armed for the earliest deadline of the enabled timers.
//! Activity only moves a stamp (no timer reset per read); the sleep is
//! re-armed lazily when it fires early, so a busy connection pays one
//! `Instant::now()` per read or write and nothing else.

use std::fmt;
use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

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

/// The three timers: a period each (zero = off) and an activity stamp each.
pub(crate) struct Timers {
    period: [Duration; 3],
    stamp: [Instant; 3],
    sleep: Option<Pin<Box<Sleep>>>,
    /// Who polled the timers last and is waiting on them: told when a timer
    /// is set, so it re-arms for the new deadline.
    waiter: Option<std::task::Waker>,
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
    }

    /// Sets a period; it counts from the last activity (TO-4), which is
    /// recorded whether or not a timer is on.
    pub(crate) fn set(&mut self, which: Timeout, period: Duration) {
        self.period[which.index()] = period;
    }

    /// Keeps the waker of a poll about to wait on the timers.
    fn remember(&mut self, cx: &Context<'_>) {
        if !self
            .waiter
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            self.waiter = Some(cx.waker().clone());
        }
    }

    /// Wakes whoever last waited on the timers (a timer was set: its
    /// deadline may now be earlier than the one armed, or the first).
    pub(crate) fn wake_waiter(&mut self) {
        if let Some(w) = self.waiter.take() {
            w.wake();
        }
    }

    /// `*_timeout_reset`: marks activity for `which` now.
    pub(crate) fn reset(&mut self, which: Timeout) {
        self.stamp[which.index()] = Instant::now();
    }

    /// A read of more than 0 bytes happened. Recorded even while every
    /// timer is off, so a timer set later counts from the last activity.
    pub(crate) fn on_read(&mut self) {
        let now = Instant::now();
        self.stamp[Timeout::Idle.index()] = now;
        self.stamp[Timeout::Read.index()] = now;
    }

    /// A write happened (recorded as reads are).
    pub(crate) fn on_write(&mut self) {
        let now = Instant::now();
        self.stamp[Timeout::Idle.index()] = now;
        self.stamp[Timeout::Write.index()] = now;
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

    /// Polls the sleep for the earliest deadline. `Ready(t)` when a timer
    /// expired; `Pending` with the waker registered otherwise (or when no
    /// timer is enabled).
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<Timeout> {
        if !self.started {
            return Poll::Pending;
        }
        loop {
            if let Some(t) = self.expired() {
                return Poll::Ready(t);
            }
            let Some(deadline) = self.deadline() else {
                self.sleep = None;
                self.remember(cx);
                return Poll::Pending;
            };
            match &mut self.sleep {
                Some(s) if s.deadline() == deadline => {}
                Some(s) => s.as_mut().reset(deadline),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            let Some(sleep) = self.sleep.as_mut() else {
                return Poll::Pending;
            };
            if sleep.as_mut().poll(cx).is_pending() {
                self.remember(cx);
                return Poll::Pending;
            }
            // The sleep fired: loop to see which timer (activity may have
            // pushed every deadline back, then we re-arm).
        }
    }
}
