//! The shared handle: the connection lives in a spawned driver task (the
//! AnyEvent model, where the handle lives in the event loop) and any number
//! of cloneable [`Handle`]s queue reads and writes to it.

use std::cell::Cell;
use std::fmt;
use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::futures::OwnedNotified;
use tokio::task::JoinHandle;
use tokio_util::codec::{Decoder, Encoder};

use crate::error::{Error, Result};
use crate::queued::Parts;
use crate::queued::core::panic_text;
use crate::queued::core::{CloseSignal, Core, WaitingSince};
use crate::queued::request::{OnDrop, Request, Requests, Ticket, read_request};
use crate::queued::timer::{Timeout, deadline_after};
use crate::queued::transport::TransportIo;
use crate::queued::write::CHAIN_THRESHOLD;

pub(crate) struct Shared {
    core: Mutex<Core>,
    /// Reads and writes queued while the engine was busy.
    inbox: Mutex<Inbox>,
    /// The inbox may hold something: lets a lock of the engine skip the
    /// inbox's lock when it is empty (set and cleared under that lock).
    posted: AtomicBool,
    /// What handles may know of the engine without its lock.
    published: Published,
    /// The driver task, for handles that queue without the lock.
    driver: AtomicWaker,
    /// Live user handles; the driver winds down when it reaches zero.
    users: AtomicUsize,
    /// `detach` was called: hand the parts back.
    detach: AtomicBool,
    /// The thread holding the engine (0: none), see [`Inside`].
    engine_owner: Arc<AtomicUsize>,
    /// The error that closed the connection, once it is closed: what a
    /// callback of another connection is told without waiting for the
    /// engine.
    closed_with: std::sync::OnceLock<Error>,
    /// `destroy` or `push_shutdown` asked from inside another connection's
    /// engine while this one was busy ([`REQUEST_DESTROY`],
    /// [`REQUEST_SHUTDOWN`]): whoever takes the engine next applies it,
    /// after the work posted before it.
    requested: AtomicU8,
    /// The error a [`REQUEST_DESTROY`] closes the connection with, when it
    /// is not a plain `destroy` (an encoder that panicked).
    requested_error: Mutex<Option<Error>>,
    /// Writes handles queued since the driver's last turn began (see
    /// [`Handle::poll_yield_to_driver`]).
    unturned: AtomicUsize,
    /// Tests: `try_lock` finds the engine busy, so work goes to the inbox.
    #[cfg(test)]
    busy: AtomicBool,
}

/// Reads and writes that handles queued while another thread held the
/// engine (the driver in its turn, as a rule). A handle never waits for a
/// turn to end just to queue work: it appends here under a lock that is
/// only ever held to append or to take everything, and whoever takes the
/// engine's lock next moves all of it into the engine first, so work
/// queued either way keeps its order.
#[derive(Default)]
struct Inbox {
    /// Encoded output, in push order.
    out: BytesMut,
    /// Read requests, in push order (always at the back of the queue).
    reads: Vec<Box<dyn Request>>,
    /// A callback of another connection posted output without the room
    /// check ([`Shared::post_checked`]): the engine checks it against
    /// `wbuf_max` when it takes it in.
    unchecked: bool,
    /// Timers marked active while the engine was busy
    /// ([`Handle::timeout_reset`]), one bit each ([`reset_bit`]).
    resets: u8,
}

/// A timer's bit in [`Inbox::resets`].
fn reset_bit(which: Timeout) -> u8 {
    match which {
        Timeout::Idle => 1,
        Timeout::Read => 2,
        Timeout::Write => 4,
    }
}

/// What the inbox keeps of its buffers' capacity once emptied (bytes of
/// output; an eighth as many read slots). A burst beyond it is freed.
pub(crate) const INBOX_KEEP: usize = 16 * 1024;

impl Inbox {
    fn is_empty(&self) -> bool {
        self.out.is_empty() && self.reads.is_empty() && self.resets == 0
    }

    /// Once emptied: frees buffers a burst grew past [`INBOX_KEEP`], so an
    /// idle connection holds no more than that.
    fn release_burst(&mut self) {
        if self.out.capacity() > INBOX_KEEP {
            self.out = BytesMut::new();
        }
        if self.reads.capacity() > INBOX_KEEP / 8 {
            self.reads = Vec::new();
        }
    }
}

/// The engine's state as of the last release of its lock: what a handle
/// checks before queueing into the [`Inbox`]. Work queued on these facts
/// is ordered before anything the engine did since (it moves in ahead of
/// the next locked operation), so the answers are exactly those the locked
/// path would have given at that release.
struct Published {
    /// Reads are accepted: the connection is open.
    reads: AtomicBool,
    /// Writes are accepted: open, and no shutdown requested.
    writes: AtomicBool,
    /// Bytes that fit under `wbuf_max` (`usize::MAX` without a cap).
    room: AtomicUsize,
    /// `wbuf_max` itself (`usize::MAX` without a cap): no write longer
    /// than this can ever be queued.
    cap: AtomicUsize,
    /// The output is shut (`push_shutdown`): writes are refused for good,
    /// where `writes` may also be closed for a moment (a seal).
    shut: AtomicBool,
}

impl Published {
    fn new() -> Published {
        Published {
            reads: AtomicBool::new(false),
            writes: AtomicBool::new(false),
            room: AtomicUsize::new(0),
            cap: AtomicUsize::new(usize::MAX),
            shut: AtomicBool::new(false),
        }
    }

    /// Stores only what changed: these are read far more often than they
    /// change, and a store would pull the line away from other threads.
    ///
    /// The room goes first: a handle that sees `writes` opened again (after
    /// a seal) then reads the room stored before it, never the larger room
    /// from before the seal.
    ///
    /// `requested` ([`Shared::requested`]) is a `destroy` or
    /// `push_shutdown` not yet applied: the state is published as if it
    /// were.
    fn publish(&self, core: &Core, requested: u8) {
        let room = core.write_room();
        if self.room.load(Ordering::Relaxed) != room {
            self.room.store(room, Ordering::Release);
        }
        let cap = core.wbuf_max().unwrap_or(usize::MAX);
        if self.cap.load(Ordering::Relaxed) != cap {
            self.cap.store(cap, Ordering::Release);
        }
        let writes = core.accepts_writes() && requested == 0;
        if self.writes.load(Ordering::Relaxed) != writes {
            self.writes.store(writes, Ordering::Release);
        }
        let shut = core.output_shut();
        if self.shut.load(Ordering::Relaxed) != shut {
            self.shut.store(shut, Ordering::Release);
        }
        let reads = !core.is_closed() && requested & REQUEST_DESTROY == 0;
        if self.reads.load(Ordering::Relaxed) != reads {
            self.reads.store(reads, Ordering::Release);
        }
    }
}

thread_local! {
    /// The buffer a handle encodes into while its engine is busy
    /// ([`Shared::encode_unlocked`]), kept for the next such write.
    static SCRATCH: Cell<BytesMut> = Cell::new(BytesMut::new());
    /// Its address identifies the current thread (for [`Inside`]).
    static THREAD: u8 = const { 0 };
    /// How many engines this thread holds while it runs user code: a
    /// completion, a hook or an encoder may call the handle of another
    /// connection, and must not then wait for that engine blindly.
    static HELD: Cell<usize> = const { Cell::new(0) };
}

/// The largest scratch buffer kept for the next write (a larger one was
/// for a rare large item: its memory goes back).
const SCRATCH_KEEP: usize = 64 * 1024;

/// Keeps `buf`, emptied, as this thread's scratch buffer, unless it grew
/// past [`SCRATCH_KEEP`].
fn keep_scratch(mut buf: BytesMut) {
    if buf.capacity() <= SCRATCH_KEEP {
        buf.clear();
        SCRATCH.with(|s| s.set(buf));
    }
}

/// [`Shared::requested`]: destroy the connection.
const REQUEST_DESTROY: u8 = 1;
/// [`Shared::requested`]: shut the output after what is queued.
const REQUEST_SHUTDOWN: u8 = 2;

/// Threads waiting for an engine while they hold another: each thread's
/// token and the owner cell of the engine it waits for. A thread about to
/// wait follows the chain (the engine's holder, what that holder waits
/// for, ...) and refuses to wait if it leads back to itself.
static WAITING: Mutex<Vec<(usize, Arc<AtomicUsize>)>> = Mutex::new(Vec::new());

/// Whether waiting for the engine whose owner cell is `owner` would wait,
/// through the chain of holders waiting for other engines, for this thread.
fn waits_for_itself(waiting: &[(usize, Arc<AtomicUsize>)], me: usize, owner: &AtomicUsize) -> bool {
    let mut holder = owner.load(Ordering::Relaxed);
    // Each step moves to another thread: a chain longer than the list
    // has a cycle that does not pass through this thread.
    for _ in 0..=waiting.len() {
        if holder == 0 {
            return false;
        }
        if holder == me {
            return true;
        }
        match waiting.iter().find(|(thread, _)| *thread == holder) {
            Some((_, next)) => holder = next.load(Ordering::Relaxed),
            None => return false,
        }
    }
    false
}

/// Whether this thread holds an engine (it runs a completion, a hook or
/// an encoder of some connection).
fn holds_an_engine() -> bool {
    HELD.with(Cell::get) > 0
}

/// This thread, as a nonzero token unique among live threads.
fn this_thread() -> usize {
    THREAD.with(|t| t as *const u8 as usize)
}

/// While alive, this thread counts as inside the engine of a connection
/// (it holds the engine): user code it runs (a completion, a hook, an
/// encoder) must not lock the engine again.
struct Inside<'a>(&'a AtomicUsize);

impl Inside<'_> {
    fn enter(owner: &AtomicUsize) -> Inside<'_> {
        owner.store(this_thread(), Ordering::Relaxed);
        HELD.with(|held| held.set(held.get() + 1));
        Inside(owner)
    }
}

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        self.0.store(0, Ordering::Relaxed);
        HELD.with(|held| held.set(held.get() - 1));
    }
}

/// The engine, locked; while it is held, the thread is "inside the engine"
/// of this connection. Releasing it publishes the engine's state.
struct Locked<'a> {
    // Dropped before the guard: the mark goes before the lock does, so it
    // never erases the next holder's.
    _inside: Inside<'a>,
    guard: MutexGuard<'a, Core>,
    shared: &'a Shared,
}

impl Locked<'_> {
    /// Moves what the inbox holds into the engine. True if there was
    /// something.
    fn take_posted(&mut self) -> bool {
        // Work posted by this thread was flagged before it got here; work
        // another thread is posting right now wakes the driver for it.
        if !self.shared.posted.load(Ordering::Acquire) {
            return false;
        }
        let mut inbox = self
            .shared
            .inbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.shared.posted.store(false, Ordering::Release);
        if inbox.is_empty() {
            return false;
        }
        let Inbox {
            out,
            reads,
            unchecked,
            resets,
        } = &mut *inbox;
        for which in [Timeout::Idle, Timeout::Read, Timeout::Write] {
            if *resets & reset_bit(which) != 0 {
                self.guard.timeout_reset(which);
            }
        }
        *resets = 0;
        self.guard
            .accept_posted(out, reads, std::mem::take(unchecked));
        inbox.release_burst();
        // The inbox is empty again: it may take only the room now left,
        // not again the room it was told of at the last release.
        let requested = self.shared.requested.load(Ordering::Acquire);
        self.shared.published.publish(&self.guard, requested);
        true
    }
}

impl Locked<'_> {
    /// Applies a `destroy` or `push_shutdown` asked without the lock
    /// ([`Shared::request_without_waiting`]), after the work posted
    /// before it.
    fn take_requested(&mut self) {
        if self.shared.requested.load(Ordering::Acquire) == 0 {
            return;
        }
        let requested = self.shared.requested.load(Ordering::Acquire);
        if requested & REQUEST_DESTROY != 0 {
            let error = self
                .shared
                .requested_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            match error {
                Some(e) => self.guard.close(e),
                None => self.guard.destroy(),
            }
        } else if requested & REQUEST_SHUTDOWN != 0 {
            // An error here is the connection's own, reported to whoever
            // uses it next.
            let _ = self.guard.push_shutdown();
        }
        // The request is cleared only once its effect is published, both
        // under the inbox's lock, where handles check them before they
        // post: no post slips in between.
        self.publish_close_error();
        let inbox = self
            .shared
            .inbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.shared.published.publish(&self.guard, 0);
        self.shared
            .requested
            .fetch_and(!requested, Ordering::AcqRel);
        drop(inbox);
        self.wake_driver();
    }
}

impl Locked<'_> {
    /// The error that closed the connection, for callbacks of other
    /// connections: set before the closed state is published, so a
    /// handle that sees the connection closed finds it.
    fn publish_close_error(&self) {
        if let Some(e) = self.guard.error()
            && self.shared.closed_with.get().is_none()
        {
            let _ = self.shared.closed_with.set(e.clone());
        }
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        self.take_requested();
        self.publish_close_error();
        let requested = self.shared.requested.load(Ordering::Acquire);
        self.shared.published.publish(&self.guard, requested);
    }
}

impl std::ops::Deref for Locked<'_> {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.guard
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Core {
        &mut self.guard
    }
}

/// Encoded output the inbox did not take, and the read posted with it.
type Unposted = (BytesMut, Option<Box<dyn Request>>);

impl Shared {
    /// For [`Core::seal_inbox`], which holds the engine: closes the inbox
    /// to writes until the engine's lock is released (which publishes the
    /// state again), and returns how many bytes of output it holds. Handles
    /// check that state under the inbox's lock, so each write they queue
    /// is either counted here or takes the locked path.
    pub(crate) fn seal_writes(&self) -> usize {
        let inbox = self.inbox.lock().unwrap_or_else(PoisonError::into_inner);
        self.published.writes.store(false, Ordering::Release);
        inbox.out.len()
    }

    /// Before the engine closes for good and gives its buffers up: takes
    /// in what the inbox holds and closes it, so a handle that queues
    /// meanwhile takes the locked path and hears `Closed`, and what was
    /// accepted comes back in the parts.
    fn close_inbox(&self, core: &mut Core) {
        let mut inbox = self.inbox.lock().unwrap_or_else(PoisonError::into_inner);
        self.posted.store(false, Ordering::Release);
        let Inbox {
            out,
            reads,
            unchecked,
            resets,
        } = &mut *inbox;
        // Timer marks are moot on a closing engine.
        *resets = 0;
        core.accept_posted(out, reads, std::mem::take(unchecked));
        self.published.reads.store(false, Ordering::Release);
        self.published.writes.store(false, Ordering::Release);
    }

    /// Whether this thread runs another connection's callback while this
    /// engine is held: a call that needs the engine should then not wait.
    fn busy_for_a_callback(&self) -> bool {
        holds_an_engine()
            && !self.reentered()
            && matches!(self.core.try_lock(), Err(TryLockError::WouldBlock))
    }

    /// Whether this thread is running this connection's engine now. Only
    /// a thread itself stores its token, and clears it before letting go,
    /// so a relaxed load that sees it is right.
    fn reentered(&self) -> bool {
        let me = this_thread();
        self.engine_owner.load(Ordering::Relaxed) == me
    }

    /// Locking again from inside the engine would deadlock: the engine of
    /// this connection is running the caller (a completion or a hook).
    fn refuse_reentry(&self) {
        if self.reentered() {
            panic!(
                "anyframe: a Handle was used from inside a completion or hook of its own \
                 connection; use the `Requests` argument the callback was given instead"
            );
        }
    }

    /// The engine behind `guard`, with what the inbox held moved in; the
    /// driver is woken for it unless it is the driver taking its turn.
    fn locked<'a>(&'a self, guard: MutexGuard<'a, Core>, for_turn: bool) -> Locked<'a> {
        let mut locked = Locked {
            guard,
            shared: self,
            _inside: Inside::enter(&self.engine_owner),
        };
        if locked.take_posted() && !for_turn {
            locked.wake_driver();
        }
        locked.take_requested();
        locked
    }

    /// The engine, with what the inbox held moved in (the driver is woken
    /// for it).
    fn lock(&self) -> Locked<'_> {
        self.refuse_reentry();
        // A panic while the lock was held already closed the core (every
        // user callback runs under `Core::guard`), so the state is
        // consistent: ignore the poisoning.
        let guard = if holds_an_engine() {
            self.lock_holding_another()
        } else {
            self.core.lock().unwrap_or_else(PoisonError::into_inner)
        };
        self.locked(guard, false)
    }

    /// The engine's lock for a thread that holds another connection's
    /// engine (it runs a completion, hook or encoder there). Waiting is
    /// safe unless the holder of this engine waits, directly or through
    /// others, for the engine this thread holds: then both would wait for
    /// ever, and this call panics instead ([RQ-7](crate::semantics#RQ-7)).
    fn lock_holding_another(&self) -> MutexGuard<'_, Core> {
        match self.core.try_lock() {
            Ok(guard) => return guard,
            Err(TryLockError::Poisoned(p)) => return p.into_inner(),
            Err(TryLockError::WouldBlock) => {}
        }
        let me = this_thread();
        {
            let mut waiting = WAITING.lock().unwrap_or_else(PoisonError::into_inner);
            if waits_for_itself(&waiting, me, &self.engine_owner) {
                drop(waiting);
                panic!(
                    "anyframe: a callback of one connection (a completion, hook or encoder) \
                     asked for the state of another connection whose own callback waits for \
                     the first: the two would wait for each other for ever. Queue work \
                     (writes, reads, push_shutdown, destroy) from callbacks; ask for state \
                     outside them"
                );
            }
            waiting.push((me, Arc::clone(&self.engine_owner)));
        }
        let guard = self.core.lock().unwrap_or_else(PoisonError::into_inner);
        let mut waiting = WAITING.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(at) = waiting.iter().position(|(thread, _)| *thread == me) {
            waiting.swap_remove(at);
        }
        guard
    }

    /// For a thread that holds another connection's engine, when this
    /// engine is busy and its inbox refused: the error the engine would
    /// give, if it is known without the engine (the connection closed, a
    /// destroy or, for a write, a shutdown asked for); `None`: the call
    /// must take the engine.
    fn refusal_without_waiting(&self, write: bool) -> Option<Error> {
        if !holds_an_engine() {
            return None;
        }
        let requested = self.requested.load(Ordering::Acquire);
        if requested & REQUEST_DESTROY != 0 {
            return Some(Error::closed());
        }
        if let Some(e) = self.closed_with.get() {
            return Some(e.clone());
        }
        if write
            && (requested & REQUEST_SHUTDOWN != 0 || self.published.shut.load(Ordering::Acquire))
        {
            return Some(Error::invalid_input("write after push_shutdown"));
        }
        None
    }

    /// Asks for `request` ([`REQUEST_DESTROY`], [`REQUEST_SHUTDOWN`])
    /// without waiting for the engine, for a thread that holds another
    /// connection's engine while this one is busy. False if the engine
    /// was free after all (the caller then takes it) or the connection
    /// is closed (the caller takes it for the error).
    fn request_without_waiting(&self, request: u8) -> Option<Result<()>> {
        if !holds_an_engine() {
            return None;
        }
        // A destroy is refused only by a closed connection (a shutdown
        // asked for before it does not stop it); a shutdown, by a shut one.
        if let Some(e) = self.refusal_without_waiting(request != REQUEST_DESTROY) {
            // Closed, destroyed, or (for a shutdown) shut already: a
            // destroy has nothing more to do; a shutdown says why not.
            return Some(if request == REQUEST_DESTROY {
                Ok(())
            } else {
                Err(e)
            });
        }
        {
            // Under the inbox's lock, as handles check the published state
            // before they post: writes posted from now on go to the locked
            // path, which applies the request first.
            let _inbox = self.inbox.lock().unwrap_or_else(PoisonError::into_inner);
            self.requested.fetch_or(request, Ordering::AcqRel);
            self.published.writes.store(false, Ordering::Release);
            if request == REQUEST_DESTROY {
                self.published.reads.store(false, Ordering::Release);
            }
        }
        match self.core.try_lock() {
            // Free after all: apply it now (taking the lock applies it).
            Ok(guard) => drop(self.locked(guard, false)),
            Err(TryLockError::Poisoned(p)) => drop(self.locked(p.into_inner(), false)),
            // The holder applies it when it lets go, or the driver does
            // in its turn.
            Err(TryLockError::WouldBlock) => self.driver.wake(),
        }
        Some(Ok(()))
    }

    /// [`lock`](Self::lock) for the driver's own turn, which goes on to
    /// run what the inbox held (no wake-up needed).
    fn lock_for_turn(&self) -> Locked<'_> {
        let guard = self.core.lock().unwrap_or_else(PoisonError::into_inner);
        self.locked(guard, true)
    }

    /// [`lock`](Self::lock), unless another thread holds the engine.
    fn try_lock(&self) -> Option<Locked<'_>> {
        self.refuse_reentry();
        #[cfg(test)]
        if self.busy.load(Ordering::Acquire) {
            return None;
        }
        let guard = match self.core.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        Some(self.locked(guard, false))
    }

    /// The inbox, if the published state accepts reads (and, with
    /// `write`, writes); `None`: take the locked path.
    fn inbox(&self, write: bool) -> Option<MutexGuard<'_, Inbox>> {
        let inbox = self.inbox.lock().unwrap_or_else(PoisonError::into_inner);
        // A requested destroy or shutdown is set under this lock: a post
        // that comes after it sees it, whatever a release published since.
        self.accepts_posts(write).then_some(inbox)
    }

    /// Releases the inbox after queueing into it, waking the driver if it
    /// was empty (the driver takes everything at once: one wake a batch).
    fn posted(&self, inbox: MutexGuard<'_, Inbox>, was_empty: bool) {
        self.posted.store(true, Ordering::Release);
        drop(inbox);
        if was_empty {
            self.driver.wake();
        }
    }

    /// Encodes `item` for the inbox into a buffer of this thread's, with
    /// no lock held: the encoder is user code, and one that asks another
    /// connection for its state, or writes to it, must not hold this
    /// connection's inbox meanwhile (that connection's callbacks may be
    /// waiting to post here, [RQ-7](crate::semantics#RQ-7)). An encoder that panics closes the
    /// connection and the panic goes on to the caller, as on the locked
    /// path.
    fn encode_unlocked<E, I>(&self, encoder: &mut E, item: I) -> Result<BytesMut>
    where
        E: Encoder<I>,
        E::Error: Into<Error>,
    {
        let mut buf = SCRATCH.with(Cell::take);
        match catch_unwind(AssertUnwindSafe(|| encoder.encode(item, &mut buf))) {
            Ok(Ok(())) => Ok(buf),
            Ok(Err(e)) => {
                keep_scratch(buf);
                Err(e.into().refused_by_encoder())
            }
            Err(payload) => {
                self.close_with(Error::panicked(panic_text(&*payload)));
                resume_unwind(payload);
            }
        }
    }

    /// Closes the connection with `e`; from a callback of another
    /// connection while this engine is busy, without waiting for it (its
    /// holder may be waiting for the caller's engine), as `destroy` does.
    fn close_with(&self, e: Error) {
        if self.busy_for_a_callback() {
            *self
                .requested_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(e.clone());
            if self.request_without_waiting(REQUEST_DESTROY).is_some() {
                return;
            }
            self.requested_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
        }
        self.lock().close(e);
    }

    /// Whether the inbox takes posts now (reads; with `write`, writes too):
    /// the state published by the engine's last holder, and no destroy or
    /// shutdown asked for since. Checked again under the inbox's lock.
    fn accepts_posts(&self, write: bool) -> bool {
        let published = &self.published;
        let requested = self.requested.load(Ordering::Acquire);
        published.reads.load(Ordering::Acquire)
            && requested & REQUEST_DESTROY == 0
            && (!write || (published.writes.load(Ordering::Acquire) && requested == 0))
    }

    /// Appends encoded output (and the read of a call with it) to the
    /// inbox, within the room published under `wbuf_max`; output the inbox
    /// does not take now goes to [`post_checked`](Self::post_checked).
    fn post_encoded(&self, buf: BytesMut, read: Option<Box<dyn Request>>) -> Result<()> {
        match self.post_within_room(buf, read) {
            Ok(()) => Ok(()),
            // Closed, shut or sealed meanwhile, or maybe over the cap: the
            // engine decides against what is queued now.
            Err((buf, read)) => self.post_checked(buf.freeze(), read),
        }
    }

    /// Appends encoded output (and the read of a call with it) to the
    /// inbox if it accepts writes and the output fits the room published
    /// under `wbuf_max`; else hands both back.
    fn post_within_room(
        &self,
        buf: BytesMut,
        read: Option<Box<dyn Request>>,
    ) -> std::result::Result<(), Unposted> {
        match self.inbox(true) {
            Some(mut inbox)
                if inbox.out.len() + buf.len() <= self.published.room.load(Ordering::Acquire) =>
            {
                let was_empty = inbox.is_empty();
                inbox.out.extend_from_slice(&buf);
                inbox.reads.extend(read);
                self.posted(inbox, was_empty);
                keep_scratch(buf);
                Ok(())
            }
            _ => Err((buf, read)),
        }
    }

    /// [`Handle::push_write`] while the engine is busy, and the write of a
    /// [`Handle::call_with`] with its `read` (they go in together, so no
    /// other caller comes between them; the write's error is the read's).
    fn post_write<E, I>(
        &self,
        mut encoder: E,
        item: I,
        read: Option<Box<dyn Request>>,
    ) -> Result<()>
    where
        E: Encoder<I>,
        E::Error: Into<Error>,
    {
        if !self.accepts_posts(true) && !holds_an_engine() {
            // Refused by the inbox: the engine says why (or takes it, the
            // state having changed), before the encoder runs.
            let mut core = self.lock();
            let pushed = core.push_encoded(encoder, item);
            return then_read(&mut core, pushed, read);
        }
        // Inside another connection's callback this engine is not waited
        // for, even when the inbox refuses: the output is encoded apart and
        // posted past it (`post_encoded` falls back to `post_checked`).
        match self.encode_unlocked(&mut encoder, item) {
            Ok(buf) => self.post_encoded(buf, read),
            Err(e) => refused(read, e),
        }
    }

    /// Output that may not fit under `wbuf_max` (over the room published
    /// for the inbox), and the read of a call that goes with it: checked
    /// by the engine. A thread that holds another connection's engine does
    /// not wait for this one (its holder may wait for that connection):
    /// it posts them all the same, and the engine checks them against the
    /// cap when it takes them in.
    fn post_checked(&self, bytes: Bytes, read: Option<Box<dyn Request>>) -> Result<()> {
        if bytes.len() > self.published.cap.load(Ordering::Acquire) {
            // Refused at the call, as the engine refuses it: posted, it
            // could only close the connection when taken in.
            return refused(read, Error::longer_than_wbuf_max());
        }
        if holds_an_engine() {
            if let Some(e) = self.refusal_without_waiting(true) {
                return refused(read, e);
            }
            // Open, not shut: whatever else closed the inbox to writes is
            // a seal for a moment, and these bytes are checked when taken
            // in, as over-room ones are.
            let mut inbox = self.inbox.lock().unwrap_or_else(PoisonError::into_inner);
            if self.requested.load(Ordering::Acquire) == 0
                && self.published.reads.load(Ordering::Acquire)
            {
                let was_empty = inbox.is_empty();
                inbox.out.extend_from_slice(&bytes);
                inbox.reads.extend(read);
                inbox.unchecked = true;
                self.posted(inbox, was_empty);
                return Ok(());
            }
            drop(inbox);
            if let Some(e) = self.refusal_without_waiting(true) {
                return refused(read, e);
            }
        }
        let mut core = self.lock();
        let pushed = core.push_bytes(bytes);
        then_read(&mut core, pushed, read)
    }

    /// [`Handle::push_bytes`] while the engine is busy. Small buffers are
    /// copied in, as the engine itself would; a large one goes by
    /// reference on the locked path, so it is never copied.
    fn post_bytes(&self, bytes: Bytes) -> Result<()> {
        // Inside another connection's callback, waiting for this engine
        // could wait for ever (its holder may wait for that connection):
        // a large buffer is copied in like a small one.
        if bytes.len() >= CHAIN_THRESHOLD && !holds_an_engine() {
            return self.lock().push_bytes(bytes);
        }
        let Some(mut inbox) = self.inbox(true) else {
            return self.post_checked(bytes, None);
        };
        if inbox.out.len() + bytes.len() > self.published.room.load(Ordering::Acquire) {
            drop(inbox);
            return self.post_checked(bytes, None);
        }
        let was_empty = inbox.is_empty();
        inbox.out.extend_from_slice(&bytes);
        self.posted(inbox, was_empty);
        Ok(())
    }

    /// [`Handle::timeout_reset`] while the engine is busy.
    fn post_timeout_reset(&self, which: Timeout) {
        let Some(mut inbox) = self.inbox(false) else {
            if self.refusal_without_waiting(false).is_some() {
                // Closed: its timers no longer run.
                return;
            }
            return self.lock().timeout_reset(which);
        };
        let was_empty = inbox.is_empty();
        inbox.resets |= reset_bit(which);
        self.posted(inbox, was_empty);
    }

    /// Queues a read at the back while the engine is busy.
    fn post_read(&self, read: Box<dyn Request>) {
        let Some(mut inbox) = self.inbox(false) else {
            if let Some(e) = self.refusal_without_waiting(false) {
                return read.fail(e);
            }
            return self.lock().enqueue_boxed(read, false);
        };
        let was_empty = inbox.is_empty();
        inbox.reads.push(read);
        self.posted(inbox, was_empty);
    }
}

/// A write refused with `e`: the read of its call (if any) fails with it
/// too.
fn refused(read: Option<Box<dyn Request>>, e: Error) -> Result<()> {
    if let Some(read) = read {
        read.fail(e.clone());
    }
    Err(e)
}

/// After a write on the locked path: the read of its call (if any) is
/// queued behind it, or fails with the write's error.
fn then_read(core: &mut Core, pushed: Result<()>, read: Option<Box<dyn Request>>) -> Result<()> {
    match pushed {
        Ok(()) => {
            if let Some(read) = read {
                core.enqueue_boxed(read, false);
            }
            Ok(())
        }
        Err(e) => refused(read, e),
    }
}

/// A producer's wait in the engine's watermarks ([`Handle::ready_to_write`],
/// [`Handle::drained`]), under a name of its own: the wait is taken out
/// when given up, so a task that gave up is not kept alive until the queue
/// drains, and the task's other waits stay.
struct Parked<'a> {
    shared: &'a Shared,
    token: u64,
    parked: bool,
}

/// Names for [`Parked`] waits.
static PARKED_WAITS: AtomicU64 = AtomicU64::new(0);

impl<'a> Parked<'a> {
    fn new(shared: &'a Shared) -> Parked<'a> {
        Parked {
            shared,
            token: PARKED_WAITS.fetch_add(1, Ordering::Relaxed),
            parked: false,
        }
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        wait: impl FnOnce(&mut Core, &mut Context<'_>, Option<u64>) -> Poll<Result<()>>,
    ) -> Poll<Result<()>> {
        let poll = wait(&mut self.shared.lock(), cx, Some(self.token));
        // Once parked, the entry may outlive a `Ready` (it goes when woken).
        self.parked |= poll.is_pending();
        poll
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        // Never waits: from a callback, or with the engine busy, the entry
        // stays until the queue drains, as a wait that is not given up.
        if self.parked
            && !self.shared.reentered()
            && let Some(mut core) = self.shared.try_lock()
        {
            core.unpark_producer(self.token);
        }
    }
}

/// A cloneable, `Send` handle to a connection driven by a spawned task.
///
/// Made by [`QueuedFramed::spawn`](crate::QueuedFramed::spawn). The plain
/// methods (`push_read`, `push_write`, `call`, `starttls`, …) queue work and
/// return at once, and the [`Ticket`]s they return resolve as the driver
/// runs; the `async` ones ([`read`](Self::read),
/// [`read_many`](Self::read_many), [`flush`](Self::flush),
/// [`drained`](Self::drained), [`ready_to_write`](Self::ready_to_write))
/// queue their work and then wait for it. Dropping the last handle closes
/// the connection after the queued output is written (linger,
/// [LC-3](crate::semantics#LC-3)).
///
/// # Panics
///
/// Calling a method of a `Handle` from inside a completion or hook that its
/// own connection is running (a `push_read_with` completion, an
/// `on_timeout` or `on_drain` hook) panics: the engine is busy running that
/// callback, and waiting for it would deadlock. Use the
/// [`Requests`](crate::Requests) the callback was given instead. A
/// handle of *another* connection may be used there
/// ([RQ-7](crate::semantics#RQ-7)).
///
/// # Examples
///
/// ```
/// use anyframe::QueuedFramed;
/// use anyframe::codecs::{ChunkCodec, LineCodec};
/// use tokio::io::AsyncWriteExt;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> anyframe::Result<()> {
/// let (io, mut peer) = tokio::io::duplex(1024);
/// let (handle, _driver) = QueuedFramed::new(io).spawn();
///
/// // Queue two different reads before any byte has arrived.
/// let line = handle.push_read(LineCodec::new());
/// let chunk = handle.push_read(ChunkCodec::new(3));
/// peer.write_all(b"hi\nxyz").await?;
/// assert_eq!(line.await?.line(), b"hi");
/// assert_eq!(&chunk.await?[..], b"xyz");
/// # Ok(()) }
/// ```
pub struct Handle {
    shared: Arc<Shared>,
}

/// The driver task of a spawned connection. Await it to get the [`Parts`]
/// back when the connection ends (fatal error, [`Handle::destroy`], every
/// handle dropped) or is detached ([`Handle::detach`]).
///
/// # Errors
///
/// Once the transport is up, the output is always `Ok(parts)`, after a
/// fatal connection error too: that error went to every pending ticket
/// and waiter and stays readable with [`Handle::error`], and the parts
/// hold the transport and the unread and unwritten bytes. The output is
/// `Err` only when there are no parts to give back:
///
/// * connecting failed ([`Builder::spawn_connect`](crate::Builder::spawn_connect)
///   found no address that answered): the connect error, which the queued
///   requests got too;
/// * the connection ended while it was still being set up (destroyed,
///   detached, or its last handle dropped with no output to linger on):
///   the connection's error, or [`ErrorKind::Closed`](crate::ErrorKind::Closed);
/// * the task was cancelled (its runtime shut down, or it was aborted):
///   [`ErrorKind::Closed`](crate::ErrorKind::Closed).
///
/// # Panics
///
/// A panic in a user callback that the driver ran (a completion, hook,
/// decoder, encoder or connect retry hook) goes on to whoever awaits the
/// `Driver`, as with a `JoinHandle`, after every ticket was told
/// [`ErrorKind::Panicked`](crate::ErrorKind::Panicked).
pub struct Driver<IO> {
    join: JoinHandle<Result<Parts<IO>>>,
}

pub(crate) fn spawn<IO>(core: Core, io: TransportIo<IO>) -> (Handle, Driver<IO>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    spawn_connecting(core, async move { Ok(io) })
}

/// Spawns the driver around a transport that is still being set up (a
/// connect in progress, [OPT-2](crate::semantics#OPT-2)): reads and writes queued meanwhile run once
/// it is up; the timers start then ([TO-2](crate::semantics#TO-2)). If setup fails, every queued
/// request fails with its error.
pub(crate) fn spawn_connecting<IO, F>(mut core: Core, setup: F) -> (Handle, Driver<IO>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Future<Output = Result<TransportIo<IO>>> + Send + 'static,
{
    core.pause_timers();
    let shared = Arc::new_cyclic(|handles| {
        core.set_handles(handles.clone());
        Shared {
            core: Mutex::new(core),
            inbox: Mutex::new(Inbox::default()),
            posted: AtomicBool::new(false),
            published: Published::new(),
            driver: AtomicWaker::new(),
            users: AtomicUsize::new(1),
            detach: AtomicBool::new(false),
            engine_owner: Arc::new(AtomicUsize::new(0)),
            requested: AtomicU8::new(0),
            requested_error: Mutex::new(None),
            closed_with: std::sync::OnceLock::new(),
            unturned: AtomicUsize::new(0),
            #[cfg(test)]
            busy: AtomicBool::new(false),
        }
    });
    let task_shared = shared.clone();
    // Dropped unfinished, even before its first poll (its runtime shut
    // down, its task aborted), the driver still closes the engine, so no
    // ticket is left waiting for it.
    let closes = CloseOnDrop(shared.clone());
    let join = tokio::spawn(async move {
        let _closes = closes;
        // The connection may end before it is up: detached, destroyed, or
        // its last handle gone. Then the connect is dropped (no connection
        // opens later), unless output is queued that a linger would still
        // write (LC-3): that output waits for the connect.
        // Once it has ended, the linger period runs from then, connect
        // included (LC-3): a connect that stays in progress does not hold
        // the task and its output for longer.
        let mut lingering: Option<Pin<Box<tokio::time::Sleep>>> = None;
        let set_up = {
            let mut setup = std::pin::pin!(setup);
            poll_fn(|cx| {
                task_shared.driver.register(cx.waker());
                // The connect runs user code (a retry hook): a panic there
                // fails the queued requests as `Panicked`, then goes on to
                // whoever awaits the driver.
                match catch_unwind(AssertUnwindSafe(|| setup.as_mut().poll(cx))) {
                    Ok(Poll::Ready(r)) => return Poll::Ready(Some(r)),
                    Ok(Poll::Pending) => {}
                    Err(payload) => {
                        let text = crate::queued::core::panic_text(&*payload);
                        task_shared.lock().close(Error::panicked(text));
                        resume_unwind(payload);
                    }
                }
                let mut core = task_shared.lock();
                // `destroy` wakes the engine's own driver waker.
                core.register_driver(cx.waker());
                let ended = core.is_closed() || task_shared.users.load(Ordering::Acquire) == 0;
                let lingers =
                    core.lingering_output() > 0 && !core.linger().is_zero() && core.may_linger();
                if task_shared.detach.load(Ordering::Acquire) || (ended && !lingers) {
                    return Poll::Ready(None);
                }
                if ended {
                    let linger = core.linger();
                    let period =
                        lingering.get_or_insert_with(|| Box::pin(tokio::time::sleep(linger)));
                    if period.as_mut().poll(cx).is_ready() {
                        tracing::debug!(?linger, "linger expired while connecting");
                        return Poll::Ready(None);
                    }
                }
                Poll::Pending
            })
            .await
        };
        match set_up {
            Some(Ok(io)) => {
                task_shared.lock().start_timers();
                Ok(drive(task_shared, io, lingering).await)
            }
            Some(Err(e)) => {
                task_shared.lock().close(e.clone());
                Err(e)
            }
            None => {
                tracing::debug!("connection ended while connecting");
                let mut core = task_shared.lock();
                let e = core.error().cloned().unwrap_or_else(Error::closed);
                core.close(e.clone());
                Err(e)
            }
        }
    });
    (Handle { shared }, Driver { join })
}

/// Drives the connection to its end. `finishing`: the linger period, if it
/// began while the connection was still being set up.
async fn drive<IO>(
    shared: Arc<Shared>,
    mut io: TransportIo<IO>,
    mut finishing: Option<Pin<Box<tokio::time::Sleep>>>,
) -> Parts<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    tracing::debug!("driver started");
    let mut panicked = None;
    // `finishing`, once the last handle is gone: how long a pending TLS
    // switch with output behind it may still take (the linger period,
    // LC-3); the linger below goes on from it.
    poll_fn(|cx| {
        shared.driver.register(cx.waker());
        let mut core = shared.lock_for_turn();
        shared.unturned.store(0, Ordering::Relaxed);
        if shared.detach.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        if shared.users.load(Ordering::Acquire) == 0 && core.linger().is_zero() {
            // Closed cleanly with no linger: what is queued is dropped, as
            // after `destroy`, not written first (LC-3).
            core.close(Error::closed());
            return Poll::Ready(());
        }
        match core.guard(|core| core.poll_drive(&mut io, cx)) {
            Ok(Poll::Ready(())) => return Poll::Ready(()),
            Ok(Poll::Pending) => {}
            Err(payload) => {
                // A user callback panicked: the core is closed (everyone
                // waiting has the error); the panic goes to the `Driver`.
                panicked = Some(payload);
                return Poll::Ready(());
            }
        }
        if shared.users.load(Ordering::Acquire) == 0 {
            // Output queued behind a pending TLS switch leaves once the
            // switch is done: the driver goes on driving it, for up to the
            // linger period, before the connection closes and lingers.
            if core.switch_holds_output() && core.may_linger() && !core.linger().is_zero() {
                let linger = core.linger();
                let deadline =
                    finishing.get_or_insert_with(|| Box::pin(tokio::time::sleep(linger)));
                if deadline.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                tracing::debug!(?linger, "linger expired with a TLS switch pending");
            }
            // Nobody can queue reads any more; fail what is queued.
            core.close(Error::closed());
            return Poll::Ready(());
        }
        Poll::Pending
    })
    .await;
    if let Some(payload) = panicked {
        // Work posted to the inbox during the turn meets the closed engine
        // (and its error) when taken in; later posts see it closed.
        drop(shared.lock());
        resume_unwind(payload);
    }

    // Linger: a connection closed by `destroy`, by its last handle going
    // away or by an input-side error keeps writing what was queued for up
    // to `linger` (LC-3). Not after an error toward the peer (its output is
    // dropped at once), and not when the user detaches to take the bytes
    // back.
    let detached = shared.detach.load(Ordering::Acquire);
    let (linger, clean) = {
        let core = shared.lock();
        (core.linger(), core.may_linger())
    };
    if !detached && clean && !linger.is_zero() {
        let write_out = poll_fn(|cx| shared.lock().poll_linger(&mut io, cx));
        // One period in all: one that began while a TLS switch was being
        // finished goes on from there. A period too long for an `Instant`
        // never runs out.
        let deadline = match &finishing {
            Some(started) => Some(started.deadline()),
            None => deadline_after(tokio::time::Instant::now(), linger),
        };
        let flushed = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, write_out).await.is_ok(),
            None => {
                write_out.await;
                true
            }
        };
        if !flushed {
            tracing::debug!(?linger, "linger expired with output unsent");
        }
    }
    let (mut read_buf, write_buf, after_switch) = {
        let mut core = shared.lock();
        shared.close_inbox(&mut core);
        core.take_buffers()
    };
    let (io, unread) = crate::queued::transport::unwrap(io);
    read_buf.extend_from_slice(&unread);
    tracing::debug!(
        detached,
        unread = read_buf.len(),
        unwritten = write_buf.len(),
        "driver finished"
    );
    Parts {
        io,
        codec: (),
        read_buf,
        write_buf,
        after_switch,
    }
}

/// Closes the engine when dropped: whatever ends the driver, no ticket is
/// left waiting for it. A no-op after a normal end (already closed).
struct CloseOnDrop(Arc<Shared>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.lock().close(Error::closed());
    }
}

impl Handle {
    fn lock(&self) -> Locked<'_> {
        self.shared.lock()
    }

    /// Queues a read at the back: into the engine if it is free, else into
    /// the inbox.
    fn queue_read<D, F, R>(&self, decoder: D, then: F, on_drop: OnDrop) -> Ticket<R>
    where
        D: Decoder + Send + 'static,
        D::Item: Send + 'static,
        D::Error: Into<Error>,
        F: FnOnce(D::Item, &mut Requests<'_>) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let (read, ticket) = read_request(decoder, then, on_drop);
        match self.shared.try_lock() {
            Some(mut core) => core.enqueue_boxed(read, false),
            None => self.shared.post_read(read),
        }
        ticket
    }

    // ----- queued reads ---------------------------------------------------------

    /// Queues a read with `decoder` at the back of the queue. The [`Ticket`]
    /// resolves once every request before it has completed. Dropping the
    /// ticket cancels the read: it consumes nothing, unless its decoder has
    /// already begun its frame (see [`Ticket`]).
    pub fn push_read<D>(&self, decoder: D) -> Ticket<D::Item>
    where
        D: Decoder + Send + 'static,
        D::Item: Send + 'static,
        D::Error: Into<Error>,
    {
        self.queue_read(decoder, |f, _| Ok(f), OnDrop::Cancel)
    }

    /// Queues a read at the front: it runs before every request already
    /// queued, except a read that has already looked at part of its frame
    /// (its decoder may keep a scan position into those bytes): then it
    /// runs right after that one.
    pub fn unshift_read<D>(&self, decoder: D) -> Ticket<D::Item>
    where
        D: Decoder + Send + 'static,
        D::Item: Send + 'static,
        D::Error: Into<Error>,
    {
        self.lock()
            .enqueue(decoder, |f, _| Ok(f), OnDrop::Cancel, true)
    }

    /// Queues a read whose completion `then` runs inside the engine as soon
    /// as the frame is decoded, before the next request sees the buffer (see
    /// [`QueuedFramed::push_read_with`](crate::QueuedFramed::push_read_with)).
    /// Inside it, use the [`Requests`] argument: using this `Handle` there
    /// panics (it would deadlock).
    pub fn push_read_with<D, F, R>(&self, decoder: D, then: F) -> Ticket<R>
    where
        D: Decoder + Send + 'static,
        D::Item: Send + 'static,
        D::Error: Into<Error>,
        F: FnOnce(D::Item, &mut Requests<'_>) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.queue_read(decoder, then, OnDrop::Cancel)
    }

    /// Queues the read of a response at the back of the queue, as
    /// [`push_read_with`](Self::push_read_with) does, for a request written
    /// separately: the response is read (and dropped) even if the ticket is
    /// dropped or told a timeout, and so are the reads its completion
    /// unshifts (the rest of the response), so the next caller always gets
    /// its own answer. [`call_with`](Self::call_with) queues the write and
    /// this read under one lock; use this when the write is queued apart
    /// (several writes, or a client that keeps its own order lock).
    ///
    /// # Examples
    ///
    /// A response of a length line and that many bytes, whose first
    /// caller gave up before it came: its bytes are still read and dropped.
    ///
    /// ```
    /// use anyframe::QueuedFramed;
    /// use anyframe::codecs::{ChunkCodec, LineCodec};
    /// use tokio::io::AsyncWriteExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> anyframe::Result<()> {
    /// let (io, mut peer) = tokio::io::duplex(1024);
    /// let (handle, _driver) = QueuedFramed::new(io).spawn();
    /// let response = |h: &anyframe::Handle| {
    ///     h.push_response_with(LineCodec::new(), |len, q| {
    ///         let n = std::str::from_utf8(len.line()).unwrap().parse().unwrap();
    ///         Ok(q.unshift_read(ChunkCodec::new(n)))
    ///     })
    /// };
    /// drop(response(&handle));
    /// let second = response(&handle);
    /// peer.write_all(b"5\nfirst3\ntwo").await?;
    /// assert_eq!(&second.await?.await?[..], b"two");
    /// # Ok(()) }
    /// ```
    pub fn push_response_with<D, F, R>(&self, decoder: D, then: F) -> Ticket<R>
    where
        D: Decoder + Send + 'static,
        D::Item: Send + 'static,
        D::Error: Into<Error>,
        F: FnOnce(D::Item, &mut Requests<'_>) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.queue_read(decoder, then, OnDrop::Consume)
    }

    /// [`push_read_with`](Self::push_read_with) at the front of the queue.
    pub fn unshift_read_with<D, F, R>(&self, decoder: D, then: F) -> Ticket<R>
    where
        D: Decoder + Send + 'static,
        D::Item: Send + 'static,
        D::Error: Into<Error>,
        F: FnOnce(D::Item, &mut Requests<'_>) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.lock().enqueue(decoder, then, OnDrop::Cancel, true)
    }

    /// Reads one frame with `decoder` after every queued request.
    ///
    /// Dropped before its frame was decoded, the read consumes nothing
    /// (unless its decoder had already consumed part of the frame, as a
    /// line over its limit being discarded: see [`Ticket`]). Once the
    /// driver has decoded the frame, the frame is this future's: drop it
    /// then (a `select!` branch that lost) and the frame is gone with it. To
    /// race reads against something else without losing one, queue the read
    /// once with [`push_read`](Self::push_read) and poll the same
    /// [`Ticket`] (`&mut ticket`) in each round.
    ///
    /// # Errors
    ///
    /// See [`Ticket`].
    pub async fn read<D>(&self, decoder: D) -> Result<D::Item>
    where
        D: Decoder + Send + 'static,
        D::Item: Send + 'static,
        D::Error: Into<Error>,
    {
        self.push_read(decoder).await
    }

    /// Reads every frame `decoder` can take from the buffered input, up to
    /// `limit`, after every queued request: waits for one frame, then takes
    /// the frames already buffered without reading again (see
    /// [`QueuedFramed::read_many`](crate::QueuedFramed::read_many)). The
    /// decoder comes back with the frames, so its state carries over to the
    /// next call. That state describes the buffer as the batch left it (a
    /// batch that ended on part of a frame has looked at it): if a read of
    /// another kind comes between two batches, give the next batch a fresh
    /// decoder. A batch whose decoder *took* the start of the next frame
    /// (the header of a length-prefixed frame, the head of an over-long
    /// line it drops) leaves the input inside that frame, which only that
    /// decoder can finish: the next read must be a batch with it (given
    /// up, that batch still finishes the frame), or it starts mid-frame ([§4](crate::semantics#4-the-read-queue), *Decoders you keep*; a plain
    /// `JsonCodec` batch of newline-ended texts has always looked at the
    /// last newline, which `JsonCodec::ndjson()` frames with its text). `Ok` with no
    /// frames: the input ended cleanly (or `limit` is 0: nothing is taken).
    ///
    /// # Errors
    ///
    /// As [`read`](Self::read). Frames decoded before an error are never
    /// lost: they come first. A fatal error has then closed the connection,
    /// so every later call returns it; a non-fatal one is the error of the
    /// next `read_many`, if that is the next read queued.
    pub async fn read_many<D>(&self, decoder: D, limit: usize) -> Result<(D, Vec<D::Item>)>
    where
        D: Decoder + Send + 'static,
        D::Item: Send + 'static,
        D::Error: Into<Error>,
    {
        if limit == 0 {
            // As the inline `read_many`: nothing asked, nothing taken.
            return Ok((decoder, Vec::new()));
        }
        self.push_read_many(decoder, limit).await
    }

    /// [`read_many`](Self::read_many) as a queued request.
    pub(crate) fn push_read_many<D>(&self, decoder: D, limit: usize) -> Ticket<(D, Vec<D::Item>)>
    where
        D: Decoder + Send + 'static,
        D::Item: Send + 'static,
        D::Error: Into<Error>,
    {
        self.queue_batch(decoder, limit, true)
    }

    /// [`push_read_many`](Self::push_read_many) for the server loop, which
    /// answers the frames before it ends: a fatal error after them is the
    /// next batch's, as a non-fatal one is, and does not close the
    /// connection under the answers ([LC-5](crate::semantics#LC-5), [LC-6](crate::semantics#LC-6)). Nothing else reads.
    #[cfg(feature = "tower")]
    pub(crate) fn push_read_many_deferring<D>(
        &self,
        decoder: D,
        limit: usize,
    ) -> Ticket<(D, Vec<D::Item>)>
    where
        D: Decoder + Send + 'static,
        D::Item: Send + 'static,
        D::Error: Into<Error>,
    {
        self.queue_batch(decoder, limit, false)
    }

    fn queue_batch<D>(
        &self,
        decoder: D,
        limit: usize,
        close_on_fatal: bool,
    ) -> Ticket<(D, Vec<D::Item>)>
    where
        D: Decoder + Send + 'static,
        D::Item: Send + 'static,
        D::Error: Into<Error>,
    {
        let batch = crate::queued::request::Batch::new(decoder, limit);
        self.lock()
            .enqueue_batch(batch, move |(decoder, frames, error, begun), q| {
                // A clean end after the batch before took the header of a
                // frame: the input ended inside that frame (RQ-6).
                if frames.is_empty() && error.is_none() && q.core.inside_a_frame() {
                    let e = Error::eof_in_request();
                    q.core.close(e.clone());
                    return Err(e);
                }
                if begun {
                    q.core.note_frame_begun();
                }
                // Frames came before the error: they go now, and the error
                // is the next call's, as the batch's own (non-fatal) or as
                // the one that closed the connection (fatal, ERR-2).
                match error {
                    Some(e) if e.is_fatal() && close_on_fatal => q.core.close(e),
                    Some(e) => q.defer_error(e),
                    None => {}
                }
                Ok((decoder, frames))
            })
    }

    /// Writes a request and queues the read of its response, under one lock,
    /// so concurrent callers cannot come between the two: the building block
    /// of a pipelined client. The response is read (and dropped) even if
    /// the ticket is dropped or times out, so the next caller always gets
    /// its own answer.
    ///
    /// # Examples
    ///
    /// ```
    /// use anyframe::QueuedFramed;
    /// use anyframe::codecs::LineCodec;
    /// use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> anyframe::Result<()> {
    /// let (io, peer) = tokio::io::duplex(1024);
    /// tokio::spawn(async move {
    ///     // An echo server.
    ///     let (rd, mut wr) = tokio::io::split(peer);
    ///     let mut lines = BufReader::new(rd).lines();
    ///     while let Ok(Some(l)) = lines.next_line().await {
    ///         wr.write_all(format!("{l}\n").as_bytes()).await.unwrap();
    ///     }
    /// });
    /// let (handle, _driver) = QueuedFramed::new(io).spawn();
    /// let first = handle.call(LineCodec::new(), "one", LineCodec::new());
    /// drop(handle.call(LineCodec::new(), "dropped", LineCodec::new()));
    /// let third = handle.call(LineCodec::new(), "three", LineCodec::new());
    /// assert_eq!(first.await?.line(), b"one");
    /// assert_eq!(third.await?.line(), b"three");
    /// # Ok(()) }
    /// ```
    pub fn call<E, I, D>(&self, encoder: E, item: I, decoder: D) -> Ticket<D::Item>
    where
        E: Encoder<I>,
        E::Error: Into<Error>,
        D: Decoder + Send + 'static,
        D::Item: Send + 'static,
        D::Error: Into<Error>,
    {
        self.call_with(encoder, item, decoder, |frame, _| Ok(frame))
    }

    /// [`call`](Self::call) with a completion that runs inside the engine
    /// on the response (see [`push_read_with`](Self::push_read_with)).
    pub fn call_with<E, I, D, F, R>(&self, encoder: E, item: I, decoder: D, then: F) -> Ticket<R>
    where
        E: Encoder<I>,
        E::Error: Into<Error>,
        D: Decoder + Send + 'static,
        D::Item: Send + 'static,
        D::Error: Into<Error>,
        F: FnOnce(D::Item, &mut Requests<'_>) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let (read, ticket) = read_request(decoder, then, OnDrop::Consume);
        // The write's error, if any, is the read's.
        let _ = match self.shared.try_lock() {
            Some(mut core) => {
                let pushed = core.push_encoded(encoder, item);
                then_read(&mut core, pushed, Some(read))
            }
            None => self.shared.post_write(encoder, item, Some(read)),
        };
        self.queued_write();
        ticket
    }

    // ----- writes -----------------------------------------------------------------

    /// Encodes `item` onto the write queue; the driver writes it.
    ///
    /// # Errors
    ///
    /// As [`QueuedFramed::push_write`](crate::QueuedFramed::push_write). An
    /// encoder that panics closes the connection and the panic goes on here.
    pub fn push_write<E, I>(&self, encoder: E, item: I) -> Result<()>
    where
        E: Encoder<I>,
        E::Error: Into<Error>,
    {
        let queued = match self.shared.try_lock() {
            Some(mut core) => core.push_encoded(encoder, item),
            None => self.shared.post_write(encoder, item, None),
        };
        if queued.is_ok() {
            self.queued_write();
        }
        queued
    }

    /// [`push_write`](Self::push_write) for a caller that waits for room
    /// under `wbuf_max` rather than close the connection (the server
    /// loop): an item that fits is queued (`Ok(None)`), encoded straight
    /// into the queue, or into the inbox while the engine is busy, as any
    /// write is; one that does not fit behind the output queued, or at
    /// all, comes back encoded and unqueued, for the caller to queue with
    /// [`push_bytes`](Self::push_bytes) once there is room.
    pub(crate) fn push_write_or_hand_back<E, I>(
        &self,
        mut encoder: E,
        item: I,
    ) -> Result<Option<Bytes>>
    where
        E: Encoder<I>,
        E::Error: Into<Error>,
    {
        let pushed = match self.shared.try_lock() {
            Some(mut core) => core.push_encoded_or_hand_back(encoder, item),
            None => {
                let buf = self.shared.encode_unlocked(&mut encoder, item)?;
                Ok(self
                    .shared
                    .post_within_room(buf, None)
                    .err()
                    .map(|(buf, _)| buf.freeze()))
            }
        };
        if matches!(pushed, Ok(None)) {
            self.queued_write();
        }
        pushed
    }

    /// Queues raw bytes.
    ///
    /// # Errors
    ///
    /// As [`QueuedFramed::push_write`](crate::QueuedFramed::push_write).
    pub fn push_bytes(&self, bytes: impl Into<Bytes>) -> Result<()> {
        let bytes = bytes.into();
        let queued = match self.shared.try_lock() {
            Some(mut core) => core.push_bytes(bytes),
            None => self.shared.post_bytes(bytes),
        };
        if queued.is_ok() {
            self.queued_write();
        }
        queued
    }

    /// Counts a queued write for
    /// [`poll_yield_to_driver`](Self::poll_yield_to_driver).
    fn queued_write(&self) {
        self.shared.unturned.fetch_add(1, Ordering::Relaxed);
    }

    /// A yield point for a caller that queues writes without waiting in
    /// between (a pipelined client's `poll_ready`): `Pending`, with the
    /// task woken at once, when `batch` or more writes were queued through
    /// handles of this connection since the driver's last turn began;
    /// else `Ready`.
    ///
    /// The driver writes in its own turns. On a runtime with one thread,
    /// a caller that never has to wait queues a whole window of requests
    /// before the driver runs, and the peer then sits idle while the
    /// caller handles the whole window of replies: the two take turns. A
    /// caller that yields every half window lets the driver write the
    /// first half while it goes on with the second, so the peer works on
    /// one half while the caller handles the other. Each yield resets the
    /// count, so a caller whose driver is busy (on another thread) yields
    /// once per `batch` writes, never in a loop. [`Client`] and the
    /// protocol clients do this with half their in-flight bound.
    ///
    /// [`Client`]: crate::service::Client
    ///
    /// # Examples
    ///
    /// ```
    /// use anyframe::QueuedFramed;
    /// use anyframe::codecs::LineCodec;
    /// use std::future::poll_fn;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> anyframe::Result<()> {
    /// let (io, _peer) = tokio::io::duplex(1 << 16);
    /// let (handle, _driver) = QueuedFramed::new(io).spawn();
    /// handle.push_write(LineCodec::new(), "a")?;
    /// handle.push_write(LineCodec::new(), "b")?;
    /// // Two writes queued and the driver has not run yet: yield once.
    /// let mut polls = 0;
    /// poll_fn(|cx| {
    ///     polls += 1;
    ///     handle.poll_yield_to_driver(cx, 2)
    /// })
    /// .await;
    /// assert_eq!(polls, 2);
    /// # Ok(()) }
    /// ```
    pub fn poll_yield_to_driver(&self, cx: &mut Context<'_>, batch: usize) -> Poll<()> {
        let unturned = &self.shared.unturned;
        if unturned.load(Ordering::Relaxed) < batch.max(1) {
            return Poll::Ready(());
        }
        unturned.store(0, Ordering::Relaxed);
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Resolves once everything queued so far is written and flushed: the
    /// output, and a TLS switch queued before the call (so a flush right
    /// after `starttls` resolves once the handshake is done). Output queued
    /// after the call does not hold it back.
    ///
    /// # Errors
    ///
    /// The error that closed the connection; `ETIMEDOUT` (non-fatal) when a
    /// write or idle timeout expires while the peer takes nothing.
    pub async fn flush(&self) -> Result<()> {
        let rx = self.lock().flush_ticket();
        rx.await.unwrap_or_else(|_| Err(Error::closed()))
    }

    /// Half-closes the write side after the queued output ([WQ-7](crate::semantics#WQ-7)).
    ///
    /// # Errors
    ///
    /// The error that closed the connection.
    pub fn push_shutdown(&self) -> Result<()> {
        if self.shared.busy_for_a_callback()
            && let Some(done) = self.shared.request_without_waiting(REQUEST_SHUTDOWN)
        {
            return done;
        }
        self.lock().push_shutdown()
    }

    /// The poll form of [`ready_to_write`](Self::ready_to_write), for a
    /// `poll_ready` (a tower `Service`, a `Sink`): `Ready` below the high
    /// watermark, or once the queue went back to the low one.
    ///
    /// # Errors
    ///
    /// The error that closed the connection; a non-fatal `EINVAL` once
    /// the output is shut ([`push_shutdown`](Self::push_shutdown)): no
    /// write can be queued again; or a non-fatal `ETIMEDOUT` when a write
    /// timeout expires while it waits ([TO-3](crate::semantics#TO-3)). A poll form
    /// keeps no state of its own, so the waiter is known by its waker: one
    /// that comes back with another waker, or a second poller sharing the
    /// first one's, hears of the next expiry instead. A waiter that has
    /// not come back 100 ms after being woken is taken for gone and
    /// forgotten at the next expiry.
    pub fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.lock().poll_write_ready(cx, WaitingSince::Parked, None)
    }

    /// Resolves when the write queue is below the high watermark (or, once
    /// it went above, back down to the low one): the producer side of
    /// backpressure.
    ///
    /// # Errors
    ///
    /// The error that closed the connection, a non-fatal `EINVAL` once the
    /// output is shut, or a non-fatal `ETIMEDOUT` when a write timeout
    /// expires meanwhile.
    pub async fn ready_to_write(&self) -> Result<()> {
        let epoch = self.lock().write_error_epoch();
        let mut parked = Parked::new(&self.shared);
        poll_fn(|cx| {
            parked.poll(cx, |core, cx, token| {
                core.poll_write_ready(cx, epoch, token)
            })
        })
        .await
    }

    /// Resolves when the write queue is at or below the low watermark.
    ///
    /// # Errors
    ///
    /// As [`ready_to_write`](Self::ready_to_write).
    pub async fn drained(&self) -> Result<()> {
        let epoch = self.lock().write_error_epoch();
        let mut parked = Parked::new(&self.shared);
        poll_fn(|cx| parked.poll(cx, |core, cx, token| core.poll_drained(cx, epoch, token))).await
    }

    /// Bytes queued for writing and not yet accepted by the transport.
    pub fn write_buffered(&self) -> usize {
        self.lock().write_buffered()
    }

    /// Read requests (and TLS switches) waiting in the queue, those queued
    /// by other handles included.
    pub fn queued_reads(&self) -> usize {
        self.lock().queued_reads()
    }

    // ----- state --------------------------------------------------------------------

    /// Closes the connection with `err`, as a fatal error found by the
    /// engine does: queued output is dropped, not lingered.
    #[cfg(feature = "tower")]
    pub(crate) fn close_with(&self, err: Error) {
        self.lock().close(err);
    }

    /// Closes the connection ([LC-1](crate::semantics#LC-1)): pending requests fail with
    /// [`ErrorKind::Closed`](crate::ErrorKind::Closed); queued output is
    /// still written for up to `linger`.
    pub fn destroy(&self) {
        if self.shared.busy_for_a_callback()
            && self
                .shared
                .request_without_waiting(REQUEST_DESTROY)
                .is_some()
        {
            return;
        }
        self.lock().destroy();
    }

    /// Whether the connection is closed.
    pub fn is_closed(&self) -> bool {
        self.lock().is_closed()
    }

    /// The error that closed the connection, if any.
    pub fn error(&self) -> Option<Error> {
        self.lock().error().cloned()
    }

    /// Resolves, with the error that closed it, when the connection closes.
    ///
    /// The future is `Unpin`, `Send` and `'static` and does not keep the
    /// connection open, so a `poll_ready` that waits for something else (an
    /// in-flight slot) can keep one across polls and not miss the end. Any
    /// number may wait; each is woken once, at the close.
    ///
    /// # Examples
    ///
    /// ```
    /// use anyframe::QueuedFramed;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let (io, _peer) = tokio::io::duplex(64);
    /// let (handle, _driver) = QueuedFramed::new(io).spawn();
    /// let closed = tokio::spawn(handle.closed());
    /// handle.destroy();
    /// assert!(closed.await.unwrap().is_fatal());
    /// # }
    /// ```
    pub fn closed(&self) -> Closed {
        Closed {
            shared: Arc::clone(&self.shared),
            waiting: None,
        }
    }

    /// Whether end of input has been seen.
    pub fn is_eof(&self) -> bool {
        self.lock().is_eof()
    }

    /// Stops the driver and hands the [`Parts`] (transport, unread and
    /// unwritten bytes) to the [`Driver`] future; pending requests fail with
    /// [`ErrorKind::Closed`](crate::ErrorKind::Closed).
    pub fn detach(&self) {
        self.shared.detach.store(true, Ordering::Release);
        self.lock().wake_driver();
    }

    /// Calls `f` with the unread input (AE's `rbuf`).
    pub fn with_read_buffer<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        f(self.lock().read_buffer())
    }

    // ----- TLS ------------------------------------------------------------------------

    /// Upgrades the connection to TLS (STARTTLS) after the reads already
    /// queued, as [`QueuedFramed::starttls`](crate::QueuedFramed::starttls)
    /// does: those reads run first, on plaintext, then the handshake starts.
    /// Reads and writes queued after this call run over TLS. The ticket
    /// resolves when the handshake is done.
    ///
    /// # Errors
    ///
    /// As [`QueuedFramed::starttls`](crate::QueuedFramed::starttls).
    #[cfg(any(feature = "tls", feature = "rustls"))]
    pub fn starttls(&self, mode: impl Into<crate::tls::TlsMode>) -> Ticket<()> {
        self.lock().request_starttls(mode.into(), false)
    }

    /// Ends TLS after the reads already queued and the output queued so
    /// far, as [`QueuedFramed::stoptls`](crate::QueuedFramed::stoptls)
    /// does. Without TLS on, the ticket resolves with `Ok(())` and nothing
    /// changes.
    ///
    /// # Errors
    ///
    /// `EINVAL`, non-fatal, if a TLS switch is already queued or after
    /// [`push_shutdown`](Self::push_shutdown); a TLS or transport error
    /// (fatal).
    #[cfg(any(feature = "tls", feature = "rustls"))]
    pub fn stoptls(&self) -> Ticket<()> {
        self.lock().request_stoptls(false)
    }

    /// Queues `tls_autostart` ([RT-tlsauto](crate::semantics#RT-tlsauto)):
    /// detect whether the peer starts with TLS and, if it does, accept TLS
    /// before any later request runs. The detection is
    /// [`TlsDetectCodec::new`](crate::codecs::TlsDetectCodec::new), AnyEvent's
    /// rule: the first bytes look like the header of any TLS handshake
    /// record ([RT-tlsdetect-2](crate::semantics#RT-tlsdetect-2)), or like an
    /// SSLv2-compatible hello
    /// ([RT-tlsdetect-3](crate::semantics#RT-tlsdetect-3)); it does not check
    /// that the record is a ClientHello (that is
    /// [`TlsDetectCodec::strict`](crate::codecs::TlsDetectCodec::strict),
    /// which autostart does not use). The
    /// returned future resolves with the verdict once the handshake, if
    /// any, is done, as [`QueuedFramed::tls_autostart`](crate::QueuedFramed::tls_autostart) returns it; dropping
    /// it before the verdict cancels the detection.
    ///
    /// # Errors
    ///
    /// As [`QueuedFramed::tls_autostart`](crate::QueuedFramed::tls_autostart): a failed handshake also closes
    /// the connection, so the requests queued behind it fail too.
    #[cfg(any(feature = "tls", feature = "rustls"))]
    pub fn push_tls_autostart(&self, server: crate::tls::TlsServer) -> AutostartTicket {
        let verdict =
            self.push_read_with(crate::codecs::TlsDetectCodec::new(), move |verdict, q| {
                // Judged where the detection runs: a switch queued ahead
                // of it (an earlier detection's) has run by then.
                if let Some(e) = q.core.autostart_refused() {
                    return Err(e);
                }
                let handshake = verdict.is_tls().then(|| q.starttls(server));
                Ok((verdict, handshake))
            });
        AutostartTicket {
            verdict,
            handshake: None,
        }
    }

    /// Whether TLS is established on this connection.
    pub fn is_tls(&self) -> bool {
        self.lock().is_tls()
    }

    /// The peer's certificate, DER-encoded, once TLS is established; see
    /// [`QueuedFramed::peer_certificate`](crate::QueuedFramed::peer_certificate).
    #[cfg(any(feature = "tls", feature = "rustls"))]
    pub fn peer_certificate(&self) -> Option<Vec<u8>> {
        self.lock().peer_certificate().map(<[u8]>::to_vec)
    }

    // ----- runtime settings ---------------------------------------------------------

    /// Sets the idle timeout (`timeout`; zero = off), checked at once.
    pub fn set_timeout(&self, period: Duration) {
        self.run(|core| core.set_timer(Timeout::Idle, period));
    }

    /// Sets the read timeout (`rtimeout`; zero = off), checked at once.
    pub fn set_rtimeout(&self, period: Duration) {
        self.run(|core| core.set_timer(Timeout::Read, period));
    }

    /// Sets the write timeout (`wtimeout`; zero = off), checked at once.
    pub fn set_wtimeout(&self, period: Duration) {
        self.run(|core| core.set_timer(Timeout::Write, period));
    }

    /// Marks activity now for `which` timer (AE's `*timeout_reset`).
    ///
    /// It never waits for a busy engine ([RQ-7](crate::semantics#RQ-7)): the mark is then posted,
    /// as a write would be, and made when the engine is next taken, a
    /// moment later, before the work posted after it.
    pub fn timeout_reset(&self, which: Timeout) {
        match self.shared.try_lock() {
            Some(mut core) => core.timeout_reset(which),
            None => self.shared.post_timeout_reset(which),
        }
    }

    /// Runs `hook` inside the engine whenever a timer expires, instead of
    /// failing the waiting read with `ETIMEDOUT` (AE's `on_timeout`). The
    /// hook can queue reads and writes, or close the connection, through
    /// [`Requests`].
    pub fn on_timeout<F>(&self, hook: F)
    where
        F: FnMut(Timeout, &mut Requests<'_>) + Send + 'static,
    {
        self.lock().set_on_timeout(Box::new(hook));
    }

    /// Runs `hook` inside the engine on each drain edge (AE's `on_drain`).
    pub fn on_drain<F>(&self, hook: F)
    where
        F: FnMut(&mut Requests<'_>) + Send + 'static,
    {
        self.lock().set_on_drain(Box::new(hook));
    }

    /// Turns autocork on or off from the next write on ([OPT-12](crate::semantics#OPT-12)).
    pub fn set_autocork(&self, on: bool) {
        self.lock().set_autocork(on);
    }

    /// Changes the write watermarks; the queue is checked against them at
    /// once.
    pub fn set_watermarks(&self, high: usize, low: usize) {
        self.run(|core| core.set_watermarks(high, low));
    }

    /// Changes the cap on unconsumed input (`None` = unbounded).
    pub fn set_rbuf_max(&self, max: Option<usize>) {
        self.lock().set_rbuf_max(max);
    }

    /// The cap on queued output (`None` = unbounded).
    pub fn wbuf_max(&self) -> Option<usize> {
        self.lock().wbuf_max()
    }

    /// Changes the cap on queued output (`None` = unbounded). Output
    /// already queued over a lowered cap is kept and written; the next
    /// push while the queue is still over it fails with the fatal `ENOSPC`
    /// (an item longer than the new cap on its own is refused, not fatal).
    pub fn set_wbuf_max(&self, max: Option<usize>) {
        self.run(|core| core.set_wbuf_max(max));
    }

    /// Runs `f` on the core; a user hook panicking inside closes the
    /// connection and the panic goes on here, after the lock is released.
    fn run<R>(&self, f: impl FnOnce(&mut Core) -> R) -> R {
        let outcome = self.lock().guard(f);
        match outcome {
            Ok(r) => r,
            Err(payload) => resume_unwind(payload),
        }
    }
}

impl Clone for Handle {
    fn clone(&self) -> Handle {
        self.shared.users.fetch_add(1, Ordering::AcqRel);
        Handle {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // A handle dropped inside its own engine (captured by a completion)
        // must not lock again; the driver checks `users` after every turn.
        // Nor does it wait for the engine: the driver registers its waker
        // at the start of every turn, so this wakes it whatever it does.
        if self.shared.users.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.driver.wake();
        }
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.shared.reentered() {
            return f.debug_tuple("Handle").field(&"<running>").finish();
        }
        f.debug_tuple("Handle").field(&*self.lock()).finish()
    }
}

impl<IO> Future for Driver<IO> {
    type Output = Result<Parts<IO>>;

    /// A panic in a user callback that the driver ran goes on here, like
    /// a `JoinHandle`'s (after every ticket got an error saying so).
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.join).poll(cx).map(|r| match r {
            Ok(parts) => parts,
            Err(e) if e.is_panic() => resume_unwind(e.into_panic()),
            Err(_) => Err(Error::closed()),
        })
    }
}

impl<IO> fmt::Debug for Driver<IO> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver").finish_non_exhaustive()
    }
}

/// The outcome of [`Handle::push_tls_autostart`]: the detection's verdict,
/// once the TLS handshake it started (if any) is done.
#[cfg(any(feature = "tls", feature = "rustls"))]
#[must_use = "dropping it before the verdict cancels the detection"]
pub struct AutostartTicket {
    verdict: Ticket<(crate::codecs::TlsDetect, Option<Ticket<()>>)>,
    /// The verdict was TLS: the handshake's ticket.
    handshake: Option<(crate::codecs::TlsDetect, Ticket<()>)>,
}

#[cfg(any(feature = "tls", feature = "rustls"))]
impl Future for AutostartTicket {
    type Output = Result<crate::codecs::TlsDetect>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            if let Some((verdict, handshake)) = &mut self.handshake {
                std::task::ready!(Pin::new(handshake).poll(cx))?;
                return Poll::Ready(Ok(*verdict));
            }
            match std::task::ready!(Pin::new(&mut self.verdict).poll(cx))? {
                (verdict, None) => return Poll::Ready(Ok(verdict)),
                (verdict, Some(handshake)) => self.handshake = Some((verdict, handshake)),
            }
        }
    }
}

#[cfg(any(feature = "tls", feature = "rustls"))]
impl fmt::Debug for AutostartTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AutostartTicket")
            .field("handshaking", &self.handshake.is_some())
            .finish_non_exhaustive()
    }
}

/// The future of [`Handle::closed`]: the error that closed the connection,
/// once it has closed.
#[must_use = "futures do nothing unless polled"]
pub struct Closed {
    /// Not a user handle: it does not keep the connection open.
    shared: Arc<Shared>,
    /// From the first poll (so the future can be made anywhere, inside a
    /// completion too, and polled elsewhere).
    waiting: Option<(Arc<CloseSignal>, Pin<Box<OwnedNotified>>)>,
}

impl Future for Closed {
    type Output = Error;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Error> {
        let this = &mut *self;
        let (signal, notified) = this.waiting.get_or_insert_with(|| {
            let signal = this.shared.lock().close_signal();
            let notified = Box::pin(signal.notified());
            (signal, notified)
        });
        loop {
            // Registered before looking, so a close in between wakes it.
            notified.as_mut().enable();
            if let Some(e) = signal.error() {
                return Poll::Ready(e.clone());
            }
            ready!(notified.as_mut().poll(cx));
            *notified = Box::pin(signal.notified());
        }
    }
}

impl fmt::Debug for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Closed")
            .field("error", &self.waiting.as_ref().and_then(|(s, _)| s.error()))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    //! The inbox: work queued while the engine is busy must behave exactly
    //! as work queued through the lock. `busy` makes every queueing call
    //! take the inbox path, deterministically.

    use super::*;
    use crate::ErrorKind;
    use crate::QueuedFramed;
    use crate::codecs::LineCodec;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream};

    fn spawned(builder: &crate::Builder) -> (Handle, DuplexStream) {
        let (ours, peer) = tokio::io::duplex(1 << 16);
        let (handle, driver) = builder.build(ours).spawn();
        drop(driver);
        // Any locked call publishes the engine's state for the inbox.
        assert!(!handle.is_closed());
        (handle, peer)
    }

    fn posted(handle: &Handle) -> (usize, usize) {
        let inbox = handle.shared.inbox.lock().unwrap();
        (inbox.out.len(), inbox.reads.len())
    }

    fn busy(handle: &Handle, on: bool) {
        handle.shared.busy.store(on, Ordering::Release);
    }

    async fn within<F: Future>(f: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(10), f)
            .await
            .expect("resolves")
    }

    #[tokio::test]
    async fn an_item_that_does_not_fit_comes_back_encoded_and_the_queue_is_as_it_was() {
        use tokio::io::AsyncReadExt;
        let (handle, mut peer) = spawned(QueuedFramed::builder().wbuf_max(Some(12)));
        let hand = |item: &str| {
            handle
                .push_write_or_hand_back(LineCodec::new(), item)
                .unwrap()
        };
        assert_eq!(hand("1234"), None);
        // Fits alone, not behind the 5 bytes queued; then longer than the
        // cap: both come back encoded, and the connection goes on.
        assert_eq!(hand("abcdefg").as_deref(), Some(&b"abcdefg\n"[..]));
        assert_eq!(
            hand("0123456789ab").as_deref(),
            Some(&b"0123456789ab\n"[..])
        );
        assert_eq!(handle.write_buffered(), 5);
        assert!(!handle.is_closed());
        // While the engine is busy: into the inbox within the room
        // published for it (half the cap), else back.
        busy(&handle, true);
        assert_eq!(hand("z"), None);
        assert_eq!(posted(&handle), (2, 0));
        assert_eq!(hand("abcde").as_deref(), Some(&b"abcde\n"[..]));
        assert_eq!(posted(&handle), (2, 0));
        busy(&handle, false);
        // Nothing of what came back was left in the queue.
        handle.push_write(LineCodec::new(), "xy").unwrap();
        let mut got = [0u8; 10];
        within(peer.read_exact(&mut got)).await.unwrap();
        assert_eq!(&got, b"1234\nz\nxy\n");
    }

    #[tokio::test]
    async fn work_queued_while_the_engine_is_busy_keeps_its_order() {
        let (handle, peer) = spawned(&QueuedFramed::builder());
        handle.push_write(LineCodec::new(), "one").unwrap();
        busy(&handle, true);
        handle.push_write(LineCodec::new(), "two").unwrap();
        let first = handle.push_read(LineCodec::new());
        let second = handle.call(LineCodec::new(), "three", LineCodec::new());
        assert_eq!(posted(&handle), (10, 2), "the inbox took them");
        busy(&handle, false);
        handle.push_write(LineCodec::new(), "four").unwrap();
        let third = handle.push_read(LineCodec::new());
        within(handle.flush()).await.unwrap();

        let (rd, mut wr) = tokio::io::split(peer);
        let mut lines = BufReader::new(rd).lines();
        for want in ["one", "two", "three", "four"] {
            assert_eq!(lines.next_line().await.unwrap().unwrap(), want);
        }
        wr.write_all(b"a\nb\nc\n").await.unwrap();
        assert_eq!(within(first).await.unwrap().line(), b"a");
        assert_eq!(within(second).await.unwrap().line(), b"b");
        assert_eq!(within(third).await.unwrap().line(), b"c");
    }

    #[tokio::test]
    async fn work_posted_while_busy_goes_out_without_another_call() {
        let (handle, peer) = spawned(&QueuedFramed::builder());
        // Let the driver run once and wait: only the post can wake it now.
        tokio::task::yield_now().await;
        busy(&handle, true);
        handle.push_write(LineCodec::new(), "posted").unwrap();
        let (rd, _wr) = tokio::io::split(peer);
        let mut lines = BufReader::new(rd).lines();
        let line = within(lines.next_line()).await.unwrap().unwrap();
        assert_eq!(line, "posted");
        busy(&handle, false);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn work_posted_during_the_drivers_turn_goes_out_without_another_call() {
        // The completion runs in the driver's turn and waits there for
        // another thread, which finds the engine busy and posts a write and
        // a read. Nothing else wakes the driver afterwards (the peer sends
        // only once the write arrives, and a read not yet taken in is not
        // waited for): the posts themselves must get the driver to them.
        let (handle, peer) = spawned(&QueuedFramed::builder());
        let (rd, mut wr) = tokio::io::split(peer);
        let poster = handle.clone();
        let first = handle.push_read_with(LineCodec::new(), move |line, _| {
            let posted = std::thread::spawn(move || {
                poster.push_write(LineCodec::new(), "posted").unwrap();
                let read = poster.push_read(LineCodec::new());
                let inbox = poster.shared.inbox.lock().unwrap();
                assert_eq!(
                    (inbox.out.len(), inbox.reads.len()),
                    (7, 1),
                    "posted, the engine being busy"
                );
                read
            });
            Ok((line, posted.join().unwrap()))
        });
        wr.write_all(b"go\n").await.unwrap();
        let (line, second) = within(first).await.unwrap();
        assert_eq!(line.line(), b"go");
        let mut lines = BufReader::new(rd).lines();
        let got = within(lines.next_line()).await.unwrap().unwrap();
        assert_eq!(got, "posted");
        wr.write_all(b"answer\n").await.unwrap();
        assert_eq!(within(second).await.unwrap().line(), b"answer");
    }

    #[tokio::test]
    async fn small_raw_bytes_go_through_the_inbox_and_large_ones_by_reference() {
        let (handle, peer) = spawned(&QueuedFramed::builder());
        busy(&handle, true);
        handle.push_bytes(&b"small\n"[..]).unwrap();
        assert_eq!(posted(&handle), (6, 0));
        let large = Bytes::from(vec![b'x'; CHAIN_THRESHOLD]);
        handle.push_bytes(large.clone()).unwrap();
        assert_eq!(
            posted(&handle),
            (0, 0),
            "the locked path took both, in order"
        );
        busy(&handle, false);
        within(handle.flush()).await.unwrap();
        let mut got = vec![0u8; 6 + CHAIN_THRESHOLD];
        let (mut rd, _wr) = tokio::io::split(peer);
        within(rd.read_exact(&mut got)).await.unwrap();
        assert_eq!(&got[..6], b"small\n");
        assert_eq!(&got[6..], &large[..]);
    }

    #[tokio::test]
    async fn a_burst_through_the_inbox_leaves_no_large_buffer_behind() {
        // Bounded memory: once the engine has taken a burst in, the inbox
        // does not keep the burst's capacity for the rest of the
        // connection's life.
        let (handle, _peer) = spawned(&QueuedFramed::builder());
        busy(&handle, true);
        let line = "x".repeat(1000);
        for _ in 0..1_000 {
            handle.push_write(LineCodec::new(), line.as_str()).unwrap();
        }
        let _reads: Vec<_> = (0..1_000)
            .map(|_| handle.push_read(LineCodec::new()))
            .collect();
        busy(&handle, false);
        assert!(handle.write_buffered() > 0, "the engine took the burst in");
        let inbox = handle.shared.inbox.lock().unwrap();
        assert!(
            inbox.out.capacity() <= INBOX_KEEP,
            "{} bytes kept",
            inbox.out.capacity()
        );
        assert!(inbox.reads.capacity() <= INBOX_KEEP / 8);
    }

    #[tokio::test]
    async fn the_inbox_is_held_to_wbuf_max_exactly() {
        let (handle, _peer) = spawned(QueuedFramed::builder().wbuf_max(Some(12)));
        // Nothing is written while the peer does not read past the duplex
        // buffer, so the cap counts everything queued.
        busy(&handle, true);
        handle.push_write(LineCodec::new(), "12345").unwrap(); // 6 bytes
        assert_eq!(posted(&handle), (6, 0));
        // The inbox takes at most half the cap; the rest goes through the
        // engine's lock, which counts what the inbox held first.
        handle.push_write(LineCodec::new(), "12345").unwrap(); // 12: at the cap
        assert_eq!(handle.write_buffered(), 12);
        let e = handle.push_write(LineCodec::new(), "x").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NoSpace);
        assert!(e.is_fatal());
        busy(&handle, false);
        assert!(handle.is_closed());
    }

    #[tokio::test]
    async fn raw_bytes_in_the_inbox_are_held_to_wbuf_max_exactly() {
        let (handle, _peer) = spawned(QueuedFramed::builder().wbuf_max(Some(8)));
        busy(&handle, true);
        handle.push_bytes(&b"12345678"[..]).unwrap();
        let e = handle.push_bytes(&b"9"[..]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NoSpace);
        busy(&handle, false);
        assert!(handle.is_closed());
    }

    #[tokio::test]
    async fn a_call_over_wbuf_max_in_the_inbox_fails_its_ticket_and_queues_no_read() {
        let (handle, _peer) = spawned(QueuedFramed::builder().wbuf_max(Some(8)));
        busy(&handle, true);
        // Longer than the cap on its own: refused, the connection goes on.
        let t = handle.call(LineCodec::new(), "much too long", LineCodec::new());
        let e = within(t).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(!e.is_fatal());
        // Within the cap alone, but not behind what is queued: `ENOSPC`.
        handle.push_write(LineCodec::new(), "1234").unwrap();
        let t = handle.call(LineCodec::new(), "5678", LineCodec::new());
        assert_eq!(within(t).await.unwrap_err().kind(), ErrorKind::NoSpace);
        busy(&handle, false);
        assert_eq!(handle.lock().queued_reads(), 0);
    }

    #[tokio::test]
    async fn a_closed_connection_refuses_work_queued_while_busy() {
        let (handle, _peer) = spawned(&QueuedFramed::builder());
        handle.destroy();
        busy(&handle, true);
        let e = handle.push_write(LineCodec::new(), "late").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Closed);
        let t = handle.push_read(LineCodec::new());
        assert_eq!(within(t).await.unwrap_err().kind(), ErrorKind::Closed);
        let c = handle.call(LineCodec::new(), "late", LineCodec::new());
        assert_eq!(within(c).await.unwrap_err().kind(), ErrorKind::Closed);
    }

    #[tokio::test]
    async fn a_write_after_push_shutdown_is_refused_while_busy() {
        let (handle, _peer) = spawned(&QueuedFramed::builder());
        handle.push_shutdown().unwrap();
        busy(&handle, true);
        let e = handle.push_write(LineCodec::new(), "late").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        // Reads are still fine after a half-close.
        let t = handle.push_read(LineCodec::new());
        busy(&handle, false);
        assert_eq!(handle.lock().queued_reads(), 1);
        drop(t);
    }

    #[tokio::test]
    async fn an_encoder_error_in_the_inbox_queues_nothing() {
        struct Refuse;
        impl Encoder<&str> for Refuse {
            type Error = Error;
            fn encode(&mut self, _: &str, dst: &mut BytesMut) -> Result<()> {
                dst.extend_from_slice(b"half");
                Err(Error::invalid_input("refused"))
            }
        }
        let (handle, _peer) = spawned(&QueuedFramed::builder());
        busy(&handle, true);
        handle.push_write(LineCodec::new(), "kept").unwrap();
        let e = handle.push_write(Refuse, "x").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        let c = handle.call(Refuse, "x", LineCodec::new());
        assert_eq!(within(c).await.unwrap_err().kind(), ErrorKind::InvalidInput);
        busy(&handle, false);
        assert!(!handle.is_closed());
        assert_eq!(handle.lock().queued_reads(), 0);
        let buffered = handle.write_buffered();
        assert!(buffered == 0 || buffered == 5, "only `kept\\n`: {buffered}");
    }

    #[tokio::test]
    async fn an_encoder_panic_in_the_inbox_closes_the_connection_and_reaches_the_caller() {
        struct Explode;
        impl Encoder<&str> for Explode {
            type Error = Error;
            fn encode(&mut self, _: &str, dst: &mut BytesMut) -> Result<()> {
                dst.extend_from_slice(b"half");
                panic!("encoder exploded")
            }
        }
        let (handle, mut peer) = spawned(&QueuedFramed::builder());
        let waiting = handle.push_read(LineCodec::new());
        busy(&handle, true);
        let r = catch_unwind(AssertUnwindSafe(|| handle.push_write(Explode, "x")));
        assert!(r.is_err(), "the panic reaches the caller");
        busy(&handle, false);
        let e = within(waiting).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Panicked);
        assert!(handle.is_closed());
        let mut got = Vec::new();
        within(peer.read_to_end(&mut got)).await.unwrap();
        assert!(
            !got.windows(4).any(|w| w == b"half"),
            "nothing half-encoded"
        );
    }

    #[tokio::test]
    async fn a_handle_used_inside_an_encoder_for_the_inbox_queues_its_write_first() {
        // The encoder of a write made while the engine is busy holds no
        // lock: a write it makes through the same handle is queued, ahead
        // of the item being encoded.
        struct Reenter(Handle);
        impl Encoder<&str> for Reenter {
            type Error = Error;
            fn encode(&mut self, item: &str, dst: &mut BytesMut) -> Result<()> {
                self.0.push_write(LineCodec::new(), "inner")?;
                dst.extend_from_slice(item.as_bytes());
                Ok(())
            }
        }
        let (handle, mut peer) = spawned(&QueuedFramed::builder());
        busy(&handle, true);
        let inner = Reenter(handle.clone());
        handle.push_write(inner, "outer\n").unwrap();
        busy(&handle, false);
        within(handle.flush()).await.unwrap();
        let mut got = [0u8; 12];
        within(peer.read_exact(&mut got)).await.unwrap();
        assert_eq!(&got, b"inner\nouter\n");
    }

    #[tokio::test]
    async fn a_cancelled_read_from_the_inbox_consumes_nothing() {
        let (handle, mut peer) = spawned(&QueuedFramed::builder());
        busy(&handle, true);
        drop(handle.push_read(LineCodec::new()));
        let kept = handle.push_read(LineCodec::new());
        busy(&handle, false);
        peer.write_all(b"first\n").await.unwrap();
        assert_eq!(within(kept).await.unwrap().line(), b"first");
    }
}
