//! Write watermarks ([OPT-5](crate::semantics#OPT-5), [OPT-11](crate::semantics#OPT-11)): backpressure above the high mark,
//! an edge-triggered drain notification when the queue falls to the low mark.

use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::Error;

/// Default high-water mark: a `Sink` or `ready_to_write` waits above it.
/// tokio-util's `FramedWrite` pushes back at 8 KiB; our write queue coalesces
/// into fewer, larger writes, so allow more before making producers wait.
pub const DEFAULT_HIGH_WATER: usize = 64 * 1024;

/// Default low-water mark: AnyEvent's 0, "everything is written".
pub const DEFAULT_LOW_WATER: usize = 0;

/// Tracks the write queue against the two marks.
#[derive(Debug)]
pub(crate) struct Watermarks {
    high: usize,
    low: usize,
    /// Set when the queue went over `high`, cleared when it falls to `low`.
    blocked: bool,
    /// Set when the queue went over `low`; the drain edge clears it.
    above_low: bool,
    waiters: Vec<Waiter>,
}

/// How long a waiter told of a write-side error may take to come back for
/// it before it is taken for gone. A live task polls within microseconds of
/// its wake-up; the grace only has to outlast a busy scheduler.
const COME_BACK: Duration = Duration::from_millis(100);

/// A producer parked in `poll_ready` or `poll_drained`.
#[derive(Debug)]
struct Waiter {
    waker: Waker,
    /// The wait's own name, for a wait that takes itself out when given up
    /// ([`unpark`](Watermarks::unpark)); `None`: known by its waker (one
    /// entry per task), taken out when woken.
    token: Option<u64>,
    /// The write-side error it was told of and has not looked for since,
    /// and when: its next poll returns it.
    told: Option<(Instant, Error)>,
}

impl Watermarks {
    pub(crate) fn new(high: usize, low: usize) -> Watermarks {
        Watermarks {
            high,
            low: low.min(high),
            blocked: false,
            above_low: false,
            waiters: Vec::new(),
        }
    }

    /// Records the queue length after a push.
    pub(crate) fn pushed(&mut self, len: usize) {
        if len > self.low {
            self.above_low = true;
        }
        if len > self.high {
            self.blocked = true;
        }
    }

    /// Records the queue length after a write; returns true on the drain edge
    /// (the queue fell to or below `low` after having been above it).
    pub(crate) fn written(&mut self, len: usize) -> bool {
        if len > self.low {
            return false;
        }
        self.blocked = false;
        self.wake_all_waiters();
        if self.above_low {
            self.above_low = false;
            return true;
        }
        false
    }

    /// Changes the marks (`low` is at most `high`).
    pub(crate) fn set(&mut self, high: usize, low: usize) {
        self.high = high;
        self.low = low.min(high);
    }

    /// Whether a producer should wait.
    pub(crate) fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// `Ready` when producers may push; otherwise registers the waker, as
    /// the wait named `token` if it has one.
    pub(crate) fn poll_ready(&mut self, cx: &mut Context<'_>, token: Option<u64>) -> Poll<()> {
        if !self.blocked {
            return Poll::Ready(());
        }
        self.park(cx, token);
        Poll::Pending
    }

    /// Whether a queue of length `len` is at or below the low mark.
    pub(crate) fn is_drained(&self, len: usize) -> bool {
        len <= self.low
    }

    /// `Ready` when the queue (of length `len`) is at or below the low mark.
    pub(crate) fn poll_drained(
        &mut self,
        len: usize,
        cx: &mut Context<'_>,
        token: Option<u64>,
    ) -> Poll<()> {
        if self.is_drained(len) {
            return Poll::Ready(());
        }
        self.park(cx, token);
        Poll::Pending
    }

    fn park(&mut self, cx: &mut Context<'_>, token: Option<u64>) {
        let parked = self.waiters.iter_mut().find(|w| match token {
            Some(_) => w.token == token,
            None => w.token.is_none() && w.waker.will_wake(cx.waker()),
        });
        match parked {
            Some(w) => {
                if !w.waker.will_wake(cx.waker()) {
                    // The same wait, polled by another task now.
                    w.waker = cx.waker().clone();
                }
            }
            None => self.waiters.push(Waiter {
                waker: cx.waker().clone(),
                token,
                told: None,
            }),
        }
    }

    /// A write-side error for every parked waiter: each is woken and owed
    /// `err` until it takes it ([`take_owed`](Self::take_owed)) or stops
    /// waiting ([`forget`](Self::forget)); the state is unchanged. Returns
    /// whether anybody was told.
    ///
    /// A waiter still owed an earlier error (another timer that expired in
    /// the same turn) keeps that one, unless this is a write timeout, the
    /// one a write-side waiter is there to hear. But one told more than
    /// [`COME_BACK`] ago has not looked since: its task is gone (a dropped
    /// future, a finished task). It is dropped here, so gone tasks neither
    /// pile up nor count as somebody hearing the error.
    pub(crate) fn owe_waiters(&mut self, err: &Error) -> bool {
        let now = Instant::now();
        self.waiters.retain(|w| {
            w.told
                .as_ref()
                .is_none_or(|(told, _)| now.duration_since(*told) < COME_BACK)
        });
        let write_timeout = err.timeout() == Some(crate::Timeout::Write);
        for w in &mut self.waiters {
            match &mut w.told {
                None => {
                    w.told = Some((now, err.clone()));
                    w.waker.wake_by_ref();
                }
                Some((_, owed)) if write_timeout => *owed = err.clone(),
                Some(_) => {}
            }
        }
        !self.waiters.is_empty()
    }

    /// The error owed to the waiter polling with `cx`, if any; it is then
    /// no longer parked.
    pub(crate) fn take_owed(&mut self, cx: &Context<'_>) -> Option<Error> {
        let at = self
            .waiters
            .iter()
            .position(|w| w.told.is_some() && w.waker.will_wake(cx.waker()))?;
        self.waiters.swap_remove(at).told.map(|(_, e)| e)
    }

    /// The waiter polling with `cx` stops waiting (it returns an error):
    /// the error it was told while parked, if any.
    pub(crate) fn forget(&mut self, cx: &Context<'_>) -> Option<Error> {
        let at = self
            .waiters
            .iter()
            .position(|w| w.waker.will_wake(cx.waker()))?;
        self.waiters.swap_remove(at).told.map(|(_, e)| e)
    }

    /// The wait named `token` stops waiting (its future was dropped): its
    /// entry, and the task its waker keeps alive, go. Other waits of the
    /// same task stay.
    pub(crate) fn unpark(&mut self, token: u64) {
        if let Some(at) = self.waiters.iter().position(|w| w.token == Some(token)) {
            self.waiters.swap_remove(at);
        }
    }

    /// Wakes everybody (the handle died).
    pub(crate) fn wake_all(&mut self) {
        self.blocked = false;
        self.wake_all_waiters();
    }

    /// Wakes the parked waiters to look again (the output was shut: they
    /// hear that no write can be queued); the state is unchanged.
    pub(crate) fn wake_all_waiters(&mut self) {
        for w in self.waiters.drain(..) {
            w.waker.wake();
        }
    }
}
