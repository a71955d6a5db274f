//! The one poll engine behind [`QueuedFramed`](crate::QueuedFramed) and
//! [`Handle`](crate::Handle).
//!
//! `Core` holds everything except the transport: the read buffer, the queue
//! of read requests and TLS switches, the write queue, the connection's
//! state, limits, timers and hooks. The transport is passed into each
//! `poll_*` call, so the same core runs inline (`QueuedFramed`, `&mut self`)
//! or behind a mutex in a spawned driver task (`Handle`). Its fields are
//! private: the front ends call methods.
//!
//! # States and transitions
//!
//! The connection is in one [`Life`] state and, while open, has an input
//! side ([`Input`]) and an output side ([`Output`]). The head of the read
//! queue is a read request or a TLS switch. Every transition happens in the
//! method named in the last column, and every failure goes through
//! [`Core::fail`].
//!
//! | state | event | action | next | where |
//! |---|---|---|---|---|
//! | Open | read request queued | queue it, wake the driver | Open | `enqueue` |
//! | Open | head is a read, bytes buffered | decode; a frame completes it (its completion may unshift) | Open | `dispatch` |
//! | Open | head is a read and needs input | read at most the room left under `rbuf_max` | Open | `poll_fill` |
//! | Open | head needs input, no room left | `ENOSPC` (fatal) | Closed | `poll_fill` |
//! | Open | no read waits | nothing is read; output is written; timers run | Open | `poll_drive` |
//! | Open, Input::Open | read returns 0 | heads decode at end of input (`EPIPE` if they cannot complete) | Input::Eof | `poll_fill` |
//! | Input::Eof (the peer's close_notify), TLS on | our stoptls done | plaintext may follow | Input::Open | `poll_switch` |
//! | Open | head is a switch, output before its marker written | start or stop TLS on the transport | Open | `poll_switch` |
//! | Open | switch done | pop it; reads and writes go on | Open | `poll_switch` |
//! | Open | timer expired, hook set | run the hook | Open | `poll_timers` |
//! | Open | timer expired, no hook | non-fatal `ETIMEDOUT` to the first waiter | Open | `fail` |
//! | Open | idle or read timer expired, no hook, no read waits, a read still owed (spawned) | fatal `ETIMEDOUT` (write-side waiters hear it) | Closed | `fail_timer` → `close` |
//! | Open | non-fatal error (`EBADMSG`, `ETIMEDOUT`, …) | to the head read, else the switch's waiter, else the write waiters | Open | `fail` |
//! | Open | fatal error, `destroy`, panic in a user callback on the driver | fail every entry and waiter with it | Closed | `fail` → `close`; `guard` |
//! | Open | panic in a user callback on the inline front end (unwinding) | tell every waiter `Panicked`; drop the entries at the next call | Closed | `run` → `poison`, `settle_panic` |
//! | Open, Output::Open | `push_shutdown` | flush, then half-close | Output::ShutdownRequested | `push_shutdown` |
//! | Open, Output::Open | `push_shutdown`, handles' output in the inbox | seal the inbox; no half-close yet | Output::ShutdownAfterInbox | `push_shutdown` |
//! | Output::ShutdownAfterInbox | the inbox taken in | its output queued before the half-close | Output::ShutdownRequested | `accept_posted` |
//! | Output::ShutdownRequested | queue written and flushed | half-close | Output::Shut | `poll_write_out` |
//! | Open | push past half of `wbuf_max` (spawned) | seal the inbox, count its output against the cap | Open | `push_encoded`, `push_bytes` |
//! | Open | STARTTLS while a stoptls is queued | fatal `EINVAL` (its output was meant for TLS) | Closed | `request_starttls` → `close` |
//! | Closed | any call | fails fast with the stored error | Closed | `check_open` |
//! | Closed by an input-side error, inline | `flush`, `shutdown_write`, `Sink` close | write the output queued before it, within `linger`, then the stored error | Closed | `poll_after_close` |
//!
//! A request whose ticket must still consume its response when it fails
//! (`OnDrop::Consume`: `call`, `push_response_with`, and every read their
//! completions unshift, the rest of the response) is *told* the non-fatal
//! error and stays queued, so its late response is read and dropped instead
//! of being handed to the next caller. So is a request whose decoder has
//! consumed part of its frame (a line being discarded): it also stays when
//! its ticket is dropped, reads on to the end of its frame, and a non-fatal
//! error it then finds goes to the next plain read (`carried`).

use std::any::Any;
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::sync::oneshot;
use tokio_util::codec::{Decoder, Encoder};

use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::queued::handle::{INBOX_KEEP, Shared};
use crate::queued::request::{
    Batch, BatchOf, BatchStep, DecodeRequest, InsideAFrame, OnDrop, Rejected, Request, Requests,
    Ticket, batch_step, decode_step, read_request,
};
use crate::queued::timer::{Side, Timeout, Timers};

/// Polls the transport: `$poll` runs with `c` bound to the caller's
/// context, or, once the two sides of the connection may wait in two
/// tasks, to one whose waker wakes both ([`Timers::io_waker`]).
macro_rules! poll_io {
    ($core:ident, $cx:ident, |$c:ident| $poll:expr) => {
        match $core.timers.io_waker($cx, $core.side) {
            Some(fan) => {
                let $c = &mut Context::from_waker(&fan);
                $poll
            }
            None => {
                let $c = &mut *$cx;
                $poll
            }
        }
    };
}
/// [`poll_io!`] for the write side: while the call is pending, what the
/// transport moved meanwhile (a TLS library writing records it sealed
/// earlier, or part of one, without taking more plaintext) counts for the
/// timers as writes do ([TO-1](crate::semantics#TO-1)).
macro_rules! poll_out {
    ($core:ident, $io:ident, $cx:ident, |$c:ident| $poll:expr) => {{
        let before = $io.activity();
        let polled = poll_io!($core, $cx, |$c| $poll);
        if polled.is_pending() {
            $core.note_transport($io, before);
        }
        polled
    }};
}
use crate::queued::transport::{self, Transport};
use crate::queued::watermark::Watermarks;
use crate::queued::write::WriteQueue;

/// Whether the connection is usable.
#[derive(Debug)]
enum Life {
    Open,
    /// Closed for good; every call fails with this error.
    Closed(Error),
}

/// The input side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Input {
    Open,
    /// The transport reported end of input.
    Eof,
}

/// The output side's shutdown progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Output {
    /// Writing is open.
    Open,
    /// `push_shutdown` was called: flush what is queued, then half-close.
    ShutdownRequested,
    /// `push_shutdown` was called while spawned handles' writes, accepted
    /// before it, waited in their inbox: they are taken in first
    /// ([`accept_posted`](Core::accept_posted)), then as `ShutdownRequested`.
    ShutdownAfterInbox,
    /// The write side is closed.
    Shut,
}

/// One entry of the read queue.
enum Entry {
    /// A read request with its decoder and completion.
    Read(Box<dyn Request>),
    /// A TLS switch: the reads after it wait until the transport switched.
    #[cfg(any(feature = "tls", feature = "rustls"))]
    Switch(Switch),
}

/// A STARTTLS or stoptls waiting in the read queue. The output queued
/// before it was requested is `WriteQueue`'s marker: it is written (in
/// plaintext for a start, over TLS for a stop) before the switch runs, and
/// the output queued after it waits for the switch.
#[cfg(any(feature = "tls", feature = "rustls"))]
struct Switch {
    kind: SwitchKind,
    /// `None` once the waiter was told (a timeout) or gave up.
    done: Option<oneshot::Sender<Result<()>>>,
}

#[cfg(any(feature = "tls", feature = "rustls"))]
enum SwitchKind {
    /// Hand the read buffer to TLS and handshake.
    Start(Option<crate::tls::TlsMode>),
    /// The handshake is running.
    Handshaking,
    /// Send close_notify and go back to plaintext.
    Stop,
}

/// A user hook run inside the engine when a timer expires.
pub(crate) type TimeoutHook = Box<dyn FnMut(Timeout, &mut Requests<'_>) + Send>;
/// A user hook run inside the engine on the drain edge.
pub(crate) type DrainHook = Box<dyn FnMut(&mut Requests<'_>) + Send>;

/// With autocork on, output is written anyway once this much is queued, so
/// a long burst of input cannot grow the write queue without bound before
/// the task would wait. 64 KiB fills a loopback socket buffer's worth.
const CORK_BOUNDARY: usize = 64 * 1024;

/// Completions one [`Core::dispatch`] runs before it returns to its caller:
/// the driver spends a unit of its task's budget per round and the inline
/// front end yields to its executor, so a stream of small frames that
/// keeps queueing the next read still lets the other tasks on the thread
/// run.
const DISPATCH_ROUND: usize = 32;

/// Writes one inline call makes before it yields to its executor (see
/// [`Core::poll_write_some`]).
const WRITE_ROUND: usize = 32;

/// Cancelled requests are swept out of the queue once it reaches twice
/// its length after the last sweep, and never below this.
const SWEEP_MIN: u32 = 64;

/// The close of a spawned connection, for the futures that wait for it:
/// the error is set once, then every waiter is woken. (A `Notify`, not a
/// list of wakers: any number of waiters, each removed when dropped.)
#[derive(Default)]
pub(crate) struct CloseSignal {
    error: OnceLock<Error>,
    notify: Arc<tokio::sync::Notify>,
}

impl CloseSignal {
    fn close(&self, err: &Error) {
        let _ = self.error.set(err.clone());
        self.notify.notify_waiters();
    }

    /// The error that closed the connection, once it has.
    pub(crate) fn error(&self) -> Option<&Error> {
        self.error.get()
    }

    pub(crate) fn notified(&self) -> tokio::sync::futures::OwnedNotified {
        Arc::clone(&self.notify).notified_owned()
    }
}

/// Where a handle's flush is done: this many bytes written and this many
/// TLS switches run (one still pending when it was taken is part of what
/// it waits for). Both only grow, so the waiters stay in order.
#[derive(Clone, Copy, Debug)]
struct FlushMark {
    sent: u64,
    switches: u64,
}

impl FlushMark {
    fn reached(self, now: FlushMark) -> bool {
        self.sent <= now.sent && self.switches <= now.switches
    }
}

/// A read buffer up to this size is kept while waiting, whatever it holds
/// (see [`Core::shrink_read_buffer`]), and once a frame has emptied it
/// (see [`Core::note_step`]).
const READ_KEEP: usize = 256 * 1024;

/// Why [`Core::poll_fill`] stopped without input.
pub(crate) enum FillStop {
    /// A timer expired and no hook took it: the non-fatal `ETIMEDOUT`, with
    /// the timer that fired (a write timeout goes to writers first).
    Expired(Timeout, Error),
    /// The connection is closed, with this error.
    Closed(Error),
}

impl From<Error> for FillStop {
    fn from(e: Error) -> FillStop {
        FillStop::Closed(e)
    }
}

impl From<FillStop> for Error {
    /// For a caller that is itself the reader: the timeout's error is its
    /// own.
    fn from(stop: FillStop) -> Error {
        match stop {
            FillStop::Expired(_, e) | FillStop::Closed(e) => e,
        }
    }
}

/// Since when a write-side waiter (`ready_to_write`, `drained`, their poll
/// forms) waits, so that it returns the errors that come after that.
#[derive(Debug, Clone, Copy)]
pub(crate) enum WaitingSince {
    /// A future that started when the error count was this.
    Epoch(u32),
    /// A poll form, which keeps no state between polls: the errors that
    /// came while it was parked.
    Parked,
}

/// The engine state, minus the transport.
/// The high watermark in force: the configured one, but at most half of
/// `wbuf_max`, so a producer that waits for readiness (a `Sink`, `serve`,
/// `ready_to_write`) is held back while an item of up to half the cap still
/// fits, instead of crossing the cap, which is fatal ([OPT-9](crate::semantics#OPT-9)).
fn effective_high(high: usize, wbuf_max: Option<usize>) -> usize {
    wbuf_max.map_or(high, |max| high.min(max / 2))
}

/// A point in the read buffer's history ([`Core::input_mark`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InputMark {
    epoch: u32,
    len: usize,
}

/// What the `Stream` keeps between calls about its decoder, for
/// [`Core::poll_decode_observed`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DecoderWatch {
    /// The decoder has begun a frame: `Core::taken` then.
    begun: Option<u32>,
    /// Set with a frame or the decoder's own error: whether the call that
    /// gave it consumed bytes.
    pub(crate) took: Option<bool>,
    /// Set when the decoder was refused as stale.
    pub(crate) stale: bool,
}

pub(crate) struct Core {
    life: Life,
    input: Input,
    output: Output,
    rbuf: BytesMut,
    /// Counts the times input entered `rbuf` (a read, bytes put back): with
    /// its length, tells whether the buffer changed (`input_mark`).
    input_epoch: u32,
    /// Counts the times bytes left the front of `rbuf` (a decoder took
    /// them, TLS took them as its handshake, the caller had the buffer):
    /// the `Stream`'s decoder, which may keep state about a frame it has
    /// begun, is stale once this moved (`poll_decode_observed`).
    taken: u32,
    /// A decoder took bytes of a frame it has not finished (since the last
    /// frame or decoder error): an end of input now is inside that frame,
    /// with the buffer empty or not.
    partial: bool,
    /// `partial` came from a batch that ended having taken the next
    /// frame's start: the next batch queued is taken to carry that frame
    /// in its decoder.
    batch_carries_frame: bool,
    queue: VecDeque<Entry>,
    wq: WriteQueue,
    cfg: Config,
    /// The current adaptive read size: doubles after a full read, up to
    /// `cfg.max_read_size`, never shrinks.
    read_size: usize,
    /// Wakes the driver task when a user handle queues work.
    driver: Option<Waker>,
    /// The driver has been woken since its last turn began: it will run,
    /// so a second wake-up (one per push of a batch) is skipped.
    driver_woken: bool,
    /// Resolved when the write queue is empty and flushed.
    /// Handles' flushes: each resolves once what was queued before it
    /// (bytes, and a TLS switch) is done and the transport flushed,
    /// whatever was queued after it. In mark order.
    flush_waiters: Vec<(FlushMark, oneshot::Sender<Result<()>>)>,
    /// Bytes written to the transport so far (the flushes' marks).
    sent: u64,
    /// TLS switches run so far, done or failed (the flushes' marks).
    switches_run: u64,
    /// Counts non-fatal errors handed to the write side's waiters
    /// (`drained`, `ready_to_write`), with the last one, so a waiter that
    /// registered before it can see it.
    write_errors: u32,
    last_write_error: Option<Error>,
    /// Whether the transport needs a `poll_flush` after writes.
    unflushed: bool,
    timers: Timers,
    /// The side of the inline poll in progress: the write side in an
    /// inline flush, else the read side. It says which waker the timers
    /// and the transport wake ([`Timers::io_waker`]).
    side: Side,
    marks: Watermarks,
    on_timeout: Option<TimeoutHook>,
    on_drain: Option<DrainHook>,
    /// TLS is established (and not stopped).
    tls_active: bool,
    /// An error that came after a batch of frames: the next read gets it
    /// if it is a batch, and it is dropped otherwise.
    deferred: Option<Error>,
    /// The non-fatal error of a read that nobody waited for any more when
    /// it ended (its decoder had consumed part of its frame, so it ran on):
    /// the next plain read gets it, as a decoder kept across the
    /// cancellation would have returned it from its next call.
    carried: Option<Error>,
    /// The queued output is never written again (no linger): `wbuf_max`
    /// was crossed, a write failed after the close, or an inline
    /// connection was destroyed. It stays for `into_parts`.
    output_dropped: bool,
    /// The peer's certificate (DER), kept when the handshake completes so a
    /// spawned connection's handles can read it.
    #[cfg(any(feature = "tls", feature = "rustls"))]
    peer_cert: Option<Box<[u8]>>,
    /// The queue length at which cancelled requests are swept out next
    /// (a `u32`, saturating: the room it saves keeps an idle connection
    /// within its allocation size).
    sweep_at: u32,
    /// A user callback panicked inside an inline call: the connection is
    /// already `Closed`; telling the waiters (which drops user code) waits
    /// for the next call into the core, outside the unwinding.
    poisoned: bool,
    /// Spawned: the handles, whose inbox holds writes queued while the
    /// engine was busy (see [`seal_inbox`](Self::seal_inbox)).
    handles: Option<Weak<Shared>>,
    /// Spawned: told the error when the connection closes
    /// ([`Handle::closed`](crate::Handle::closed)).
    close_signal: Option<Arc<CloseSignal>>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("life", &self.life)
            .field("input", &self.input)
            .field("output", &self.output)
            .field("buffered", &self.rbuf.len())
            .field("queued_reads", &self.queue.len())
            .field("queued_write_bytes", &self.wq.len())
            .finish_non_exhaustive()
    }
}

/// The text of a panic payload.
pub(crate) fn panic_text(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(a non-string panic payload)"
    }
}

/// Marks the core closed when dropped, which only happens while unwinding
/// (on the normal path it is forgotten).
struct ClosedOnUnwind<'a>(&'a mut Core);

impl Drop for ClosedOnUnwind<'_> {
    fn drop(&mut self) {
        self.0.poison();
    }
}

/// What [`Core::push_encoded`] and its kin do with an item that does not
/// fit under `wbuf_max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OverCap {
    /// Refuse it: non-fatal if it is longer than the whole cap, else the
    /// fatal `ENOSPC` of OPT-9.
    Refuse,
    /// Hand it back encoded, unqueued, for the caller to queue once there
    /// is room.
    HandBack,
}

/// Rolls back an encoder's partial output and marks the core closed, when
/// dropped while unwinding out of the encoder (forgotten otherwise).
struct EncodeUnwind<'a> {
    core: &'a mut Core,
    before: usize,
}

impl Drop for EncodeUnwind<'_> {
    fn drop(&mut self) {
        // The connection closes either way (the panic).
        let _ = self.core.wq.rollback(self.before);
        self.core.poison();
    }
}

impl Core {
    pub(crate) fn new(mut cfg: Config) -> Core {
        cfg.clamp();
        Core {
            life: Life::Open,
            input: Input::Open,
            output: Output::Open,
            rbuf: BytesMut::new(),
            input_epoch: 0,
            taken: 0,
            partial: false,
            batch_carries_frame: false,
            queue: VecDeque::new(),
            wq: WriteQueue::default(),
            read_size: cfg.read_size,
            driver: None,
            driver_woken: false,
            flush_waiters: Vec::new(),
            sent: 0,
            switches_run: 0,
            write_errors: 0,
            last_write_error: None,
            unflushed: false,
            timers: Timers::new(cfg.timeout, cfg.rtimeout, cfg.wtimeout),
            side: Side::Read,
            marks: Watermarks::new(effective_high(cfg.high_water, cfg.wbuf_max), cfg.low_water),
            on_timeout: None,
            on_drain: None,
            tls_active: false,
            deferred: None,
            carried: None,
            output_dropped: false,
            #[cfg(any(feature = "tls", feature = "rustls"))]
            peer_cert: None,
            sweep_at: SWEEP_MIN,
            poisoned: false,
            handles: None,
            close_signal: None,
            cfg,
        }
    }

    // ----- state, for the front ends ------------------------------------------

    pub(crate) fn error(&self) -> Option<&Error> {
        match &self.life {
            Life::Closed(e) => Some(e),
            Life::Open => None,
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        matches!(self.life, Life::Closed(_))
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        match &self.life {
            Life::Closed(e) => Err(e.clone()),
            Life::Open => Ok(()),
        }
    }

    pub(crate) fn is_eof(&self) -> bool {
        self.input == Input::Eof
    }

    pub(crate) fn read_buffer(&self) -> &[u8] {
        &self.rbuf
    }

    pub(crate) fn read_buffer_mut(&mut self) -> &mut BytesMut {
        // The caller may take anything.
        self.taken = self.taken.wrapping_add(1);
        &mut self.rbuf
    }

    /// Drops the first `n` unread bytes (all if fewer are buffered).
    pub(crate) fn consume(&mut self, n: usize) {
        let before = self.rbuf.len();
        self.rbuf.advance(n.min(before));
        self.note_taken(before);
    }

    /// Notes that a decoder may have taken bytes: the buffer held `before`.
    fn note_taken(&mut self, before: usize) {
        if self.rbuf.len() < before {
            self.taken = self.taken.wrapping_add(1);
        }
    }

    /// Whether a decoder has taken part of a frame it has not finished
    /// (see `partial`).
    pub(crate) fn inside_a_frame(&self) -> bool {
        self.partial
    }

    /// A batch ended having taken part of the next frame, which its
    /// decoder keeps for the next batch (see `partial`).
    pub(crate) fn note_frame_begun(&mut self) {
        self.partial = true;
        self.batch_carries_frame = true;
    }

    /// Notes a decode step that began with `before` bytes buffered and
    /// ended a frame (a frame or an error) or not (see `partial`). Only a
    /// step that took bytes ends the begun frame: one that took none (a
    /// zero-length chunk of another read, an error on bytes left in
    /// place) leaves it begun.
    ///
    /// A step that emptied a read buffer grown past [`READ_KEEP`] lets the
    /// buffer go: its frames hold what they need of it, and a connection
    /// that queues no further read (so never waits in a read, where an
    /// empty buffer is let go as well) keeps nothing of a large frame once
    /// the application drops it.
    fn note_step(&mut self, before: usize, ended: bool) {
        let took = self.rbuf.len() < before;
        if took {
            self.taken = self.taken.wrapping_add(1);
            self.partial = !ended;
            self.batch_carries_frame = false;
            if self.rbuf.is_empty() && self.rbuf.capacity() > READ_KEEP {
                self.rbuf = BytesMut::new();
            }
        }
    }

    /// The output a linger may still write: after the close only what was
    /// queued before a pending switch (the switch failed with the rest).
    pub(crate) fn lingering_output(&self) -> usize {
        match self.life {
            Life::Open => self.wq.len(),
            Life::Closed(_) => self.wq.writable(),
        }
    }

    pub(crate) fn write_buffered(&self) -> usize {
        self.wq.len()
    }

    pub(crate) fn queued_reads(&self) -> usize {
        self.queue.len()
    }

    pub(crate) fn is_tls(&self) -> bool {
        self.tls_active
    }

    #[cfg(any(feature = "tls", feature = "rustls"))]
    pub(crate) fn peer_certificate(&self) -> Option<&[u8]> {
        self.peer_cert.as_deref()
    }

    pub(crate) fn output(&self) -> Output {
        self.output
    }

    pub(crate) fn linger(&self) -> std::time::Duration {
        self.cfg.linger
    }

    /// Whether the queued output may still be written after the connection
    /// closed (linger): after `destroy`, the last handle going away, or an
    /// error of the input side (end of input inside a request, a bad
    /// message, `rbuf_max`), where the peer may still be reading. Not after
    /// an error toward the peer (a transport or TLS error, `wbuf_max`) or a
    /// panic: that output is dropped at once.
    pub(crate) fn may_linger(&self) -> bool {
        use crate::ErrorKind as K;
        match &self.life {
            Life::Open => true,
            Life::Closed(_) if self.output_dropped => false,
            Life::Closed(e) => match e.kind() {
                K::Closed | K::BadMessage | K::NoSpace => true,
                K::BrokenPipe => e.is_eof(),
                _ => false,
            },
        }
    }

    /// Where the read buffer stands: changes when input enters it or bytes
    /// leave its front.
    pub(crate) fn input_mark(&self) -> InputMark {
        InputMark {
            epoch: self.input_epoch,
            len: self.rbuf.len(),
        }
    }

    /// Puts back the buffers of a handle taken apart earlier.
    pub(crate) fn restore(
        &mut self,
        read_buf: BytesMut,
        write_buf: BytesMut,
        after_switch: BytesMut,
    ) {
        self.rbuf = read_buf;
        self.input_epoch = self.input_epoch.wrapping_add(1);
        self.wq.restore(write_buf);
        if !after_switch.is_empty() {
            if self.wq.has_marker() {
                // Behind the builder's own switch: encrypted, never in
                // plaintext.
                self.wq.push_bytes(after_switch.freeze());
            } else {
                tracing::warn!(
                    bytes = after_switch.len(),
                    "output that waited for a TLS switch is not restored on a connection without one"
                );
            }
        }
        // Output handed back is output queued: above the high mark it
        // holds producers back, and its drain is an edge (OPT-5).
        self.marks.pushed(self.wq.len());
    }

    // ----- the one failure path -------------------------------------------------

    /// Every error ends here. A fatal one closes the connection; a non-fatal
    /// one goes to the first waiter it concerns: the head read (or the head
    /// switch's waiter), else the write side's waiters. `which` names the
    /// timer for a timeout (a write timeout goes to the write side first).
    pub(crate) fn fail(&mut self, err: Error, which: Option<Timeout>) -> bool {
        if err.is_fatal() {
            self.close(err);
            return true;
        }
        let writes_first = which == Some(Timeout::Write);
        if writes_first && self.fail_write_waiters(&err) {
            return true;
        }
        if self.fail_first_reader(&err) {
            return true;
        }
        if !writes_first && self.tell_write_side(&err, which) {
            return true;
        }
        tracing::debug!(error = %err, "non-fatal error with nobody waiting");
        false
    }

    /// The write side's waiters hear `err`; told of an idle timeout that
    /// expired together with the write timeout, they get the write
    /// timeout, which stands for both ([TO-3](crate::semantics#TO-3)).
    fn tell_write_side(&mut self, err: &Error, which: Option<Timeout>) -> bool {
        if which == Some(Timeout::Idle) && self.timers.write_due_with_idle() {
            let write = Error::timer_expired(Timeout::Write);
            if self.fail_write_waiters(&write) {
                self.timers.write_taken_with_idle();
                return true;
            }
            return false;
        }
        self.fail_write_waiters(err)
    }

    /// Tells the first queued entry that still has a waiter. A request that
    /// must consume its response, or whose decoder has consumed part of its
    /// frame, stays queued (it reads to the end of its frame, for nobody);
    /// any other request is removed, having consumed nothing.
    fn fail_first_reader(&mut self, err: &Error) -> bool {
        // Cancelled requests go first: nobody waits for them.
        self.sweep_cancelled();
        for i in 0..self.queue.len() {
            let remove = match &mut self.queue[i] {
                Entry::Read(req) if req.keeps_reading() => {
                    if req.tell(err.clone()) {
                        return true;
                    }
                    false
                }
                Entry::Read(_) => true,
                #[cfg(any(feature = "tls", feature = "rustls"))]
                Entry::Switch(sw) => {
                    if let Some(done) = sw.done.take()
                        && done.send(Err(err.clone())).is_ok()
                    {
                        return true;
                    }
                    false
                }
            };
            if remove {
                if let Some(Entry::Read(req)) = self.queue.remove(i) {
                    req.fail(err.clone());
                }
                return true;
            }
        }
        false
    }

    /// A timer expired with no hook, on the spawned driver. As
    /// [`fail`](Self::fail); but when an idle or read timeout finds no
    /// read to tell and a read the peer still owes is queued (a pipelined
    /// response, or a frame already begun, whose caller was told an
    /// earlier timeout or gave up), the peer is stuck inside an answer
    /// nobody reads: the connection closes with a fatal `ETIMEDOUT`, as a
    /// timeout with no handler does in AnyEvent. Waiters on the write side
    /// hear that fatal error; a non-fatal one would tell them of a read
    /// they cannot mend ([TO-6](crate::semantics#TO-6)). A write timeout goes by [`fail`](Self::fail)
    /// alone.
    fn fail_timer(&mut self, err: Error, which: Option<Timeout>) {
        if which == Some(Timeout::Write) {
            self.fail(err, which);
            return;
        }
        if self.fail_first_reader(&err) {
            return;
        }
        // Told no reader: every read still queued is owed (an abandoned
        // plain read was swept), whether it is first or waits behind a
        // switch.
        if !self.queue.iter().any(|e| matches!(e, Entry::Read(_))) {
            if !self.tell_write_side(&err, which) {
                tracing::debug!(error = %err, "non-fatal error with nobody waiting");
            }
            return;
        }
        tracing::debug!(timeout = ?which, "timeout with no reader waiting and a read still owed");
        // Fatal now, and still naming the timer (`Error::timeout`).
        self.close(Error::fatal_because(
            err,
            "timed out with no reader waiting and a response still owed",
        ));
    }

    fn fail_write_waiters(&mut self, err: &Error) -> bool {
        // Woken to see the error (the backpressure itself stays); they look
        // once this turn lets go of the engine, after it is recorded below.
        let parked = self.marks.owe_waiters(err);
        // A flush given up (its future dropped) hears nothing.
        self.flush_waiters.retain(|(_, w)| !w.is_closed());
        if self.flush_waiters.is_empty() && !parked {
            return false;
        }
        for (_, w) in self.flush_waiters.drain(..) {
            let _ = w.send(Err(err.clone()));
        }
        self.write_errors = self.write_errors.wrapping_add(1);
        self.last_write_error = Some(err.clone());
        true
    }

    /// Where a write-side waiter starts waiting, for it to notice an error
    /// that comes later.
    pub(crate) fn write_error_epoch(&self) -> WaitingSince {
        WaitingSince::Epoch(self.write_errors)
    }

    /// The write-side error a waiter must return: one that came after it
    /// started waiting.
    fn poll_write_error(&mut self, cx: &Context<'_>, since: WaitingSince) -> Result<()> {
        let owed = match since {
            // Its own, if it was parked when told; else the last one.
            WaitingSince::Epoch(epoch) if self.write_errors != epoch => self
                .marks
                .forget(cx)
                .or_else(|| self.last_write_error.clone()),
            WaitingSince::Epoch(_) => None,
            WaitingSince::Parked => self.marks.take_owed(cx),
        };
        owed.map_or(Ok(()), Err)
    }

    /// `destroy()` ([LC-1](crate::semantics#LC-1)). An inline connection's queued output goes with
    /// it (no later flush writes it); a spawned driver lingers on it ([LC-3](crate::semantics#LC-3)).
    pub(crate) fn destroy(&mut self) {
        if self.handles.is_none() {
            self.output_dropped = true;
        }
        self.close(Error::closed());
    }

    /// The connection is closed with `err`, once: the `Closed` futures and
    /// the handles' flushes hear it (both hold no user code).
    fn mark_closed(&mut self, err: &Error) {
        self.life = Life::Closed(err.clone());
        if let Some(signal) = &self.close_signal {
            signal.close(err);
        }
        for (_, w) in self.flush_waiters.drain(..) {
            let _ = w.send(Err(err.clone()));
        }
    }

    /// Closes the connection: every queued request, switch and waiter fails
    /// with `err`; the buffers stay for `into_parts`. Idempotent.
    pub(crate) fn close(&mut self, err: Error) {
        if self.is_closed() {
            return;
        }
        tracing::debug!(error = %err, buffered = self.rbuf.len(), unwritten = self.wq.len(), "connection closed");
        // A switch's marker stays: output queued after a STARTTLS that never
        // ran must not leave in plaintext (linger stops at the marker).
        self.mark_closed(&err);
        // Dropping an entry runs user code (a completion's captures): one
        // that panics must not keep the others from being told.
        let mut panicked = None;
        for entry in std::mem::take(&mut self.queue) {
            let told = catch_unwind(AssertUnwindSafe(|| match entry {
                Entry::Read(req) => req.fail(err.clone()),
                #[cfg(any(feature = "tls", feature = "rustls"))]
                Entry::Switch(sw) => {
                    if let Some(done) = sw.done {
                        let _ = done.send(Err(err.clone()));
                    }
                }
            }));
            if let Err(payload) = told {
                panicked.get_or_insert(payload);
            }
        }
        self.marks.wake_all();
        self.wake_driver();
        // The halves of a split `QueuedFramed` waiting on the timers (or on
        // the transport, having polled the timers too) learn of it.
        self.timers.wake_waiter();
        if let Some(payload) = panicked {
            resume_unwind(payload);
        }
    }

    /// Runs `f`, closing the connection if it panics (a user callback ran
    /// inside it), and returns the panic for the caller to resume once no
    /// lock is held. For the driver: one call per turn.
    #[inline]
    pub(crate) fn guard<R>(
        &mut self,
        f: impl FnOnce(&mut Core) -> R,
    ) -> std::result::Result<R, Box<dyn Any + Send>> {
        self.settle_panic();
        match catch_unwind(AssertUnwindSafe(|| f(self))) {
            Ok(r) => Ok(r),
            Err(payload) => {
                self.close(Error::panicked(panic_text(&*payload)));
                Err(payload)
            }
        }
    }

    /// [`guard`](Self::guard) for a caller that holds no lock and lets the
    /// panic go on: the inline front end, once per frame. No
    /// `catch_unwind` here (it would cost a fifth of a small frame's
    /// decode): a guard marks the connection closed if `f` unwinds, and the
    /// waiters are told at the next call.
    #[inline]
    pub(crate) fn run<R>(&mut self, f: impl FnOnce(&mut Core) -> R) -> R {
        self.settle_panic();
        let armed = ClosedOnUnwind(self);
        let r = f(&mut *armed.0);
        std::mem::forget(armed);
        r
    }

    /// A user callback panicked (we are unwinding): close at once and tell
    /// every waiter, without running user code (only channels and wakers);
    /// the entries, which hold user code, are dropped by
    /// [`settle_panic`](Self::settle_panic) at the next call. The driver is
    /// woken to do so.
    fn poison(&mut self) {
        if self.is_closed() {
            return;
        }
        let err = Error::panicked("the panic went on to the caller");
        self.mark_closed(&err);
        self.poisoned = true;
        for entry in &mut self.queue {
            match entry {
                Entry::Read(req) => {
                    let _ = req.tell(err.clone());
                }
                #[cfg(any(feature = "tls", feature = "rustls"))]
                Entry::Switch(sw) => {
                    if let Some(done) = sw.done.take() {
                        let _ = done.send(Err(err.clone()));
                    }
                }
            }
        }
        self.marks.wake_all();
        self.wake_driver();
        // The other half of a split `QueuedFramed` may wait on the timers.
        self.timers.wake_waiter();
    }

    /// After [`poison`](Self::poison): resolves every entry and waiter with
    /// the panic's error.
    #[inline]
    fn settle_panic(&mut self) {
        if !self.poisoned {
            return;
        }
        self.poisoned = false;
        if let Life::Closed(e) = std::mem::replace(&mut self.life, Life::Open) {
            self.close(e);
        }
    }

    // ----- the driver's waker ---------------------------------------------------

    pub(crate) fn register_driver(&mut self, waker: &Waker) {
        self.driver_woken = false;
        match &self.driver {
            Some(w) if w.will_wake(waker) => {}
            _ => self.driver = Some(waker.clone()),
        }
    }

    pub(crate) fn wake_driver(&mut self) {
        if self.driver_woken {
            return;
        }
        if let Some(w) = &self.driver {
            self.driver_woken = true;
            w.wake_by_ref();
        }
    }

    // ----- the read queue ---------------------------------------------------------

    /// Queues a decoder with a completion function, at the back or (unshift)
    /// at the front (see [`enqueue_boxed`](Self::enqueue_boxed)).
    pub(crate) fn enqueue<D, F, R>(
        &mut self,
        decoder: D,
        then: F,
        on_drop: OnDrop,
        front: bool,
    ) -> Ticket<R>
    where
        D: Decoder + Send + 'static,
        D::Item: Send + 'static,
        D::Error: Into<Error>,
        F: FnOnce(D::Item, &mut Requests<'_>) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let (req, ticket) = read_request(decoder, then, on_drop);
        self.enqueue_boxed(req, front);
        ticket
    }

    /// Queues a `read_many` batch: it also gets the error that came after
    /// the previous batch's frames.
    pub(crate) fn enqueue_batch<D, F, R>(&mut self, batch: Batch<D>, then: F) -> Ticket<R>
    where
        D: Decoder + Send + 'static,
        D::Item: Send + 'static,
        D::Error: Into<Error>,
        F: FnOnce(BatchOf<D>, &mut Requests<'_>) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let (mut req, ticket) = DecodeRequest::new(batch, then, OnDrop::Cancel);
        if std::mem::take(&mut self.batch_carries_frame) {
            // Its decoder is the one the last batch handed back holding the
            // start of a frame (as `Handle::read_many` says to pass it on).
            req = req.continuing_a_frame();
        }
        self.enqueue_boxed(req.into_batch(Batch::first_only), false);
        ticket
    }

    /// Queues a read request at the back or (unshift) at the front; a
    /// closed connection fails it at once, with the error that closed it.
    pub(crate) fn enqueue_boxed(&mut self, req: Box<dyn Request>, front: bool) {
        if let Life::Closed(e) = &self.life {
            return req.fail(e.clone());
        }
        let entry = Entry::Read(req);
        if front {
            self.push_front(entry);
        } else {
            self.queue.push_back(entry);
        }
        self.sweep_if_due();
        self.wake_driver();
    }

    /// Requests cancelled behind a waiting head would otherwise stay until
    /// they reach it: sweep them out when the queue has doubled since the
    /// last sweep, amortised O(1).
    fn sweep_if_due(&mut self) {
        if self.queue.len() >= self.sweep_at as usize {
            self.sweep_cancelled();
            let next = u32::try_from(self.queue.len().saturating_mul(2)).unwrap_or(u32::MAX);
            self.sweep_at = next.max(SWEEP_MIN);
        }
    }

    /// Takes what spawned handles queued while the engine was busy: output
    /// (already within `wbuf_max`, see [`write_room`](Self::write_room)),
    /// then reads, each in the order they were queued. Output goes in even
    /// if the connection closed meanwhile: those writes were accepted
    /// before the close, so they linger or come back in the parts like any
    /// other. Reads fail with the error that closed it.
    pub(crate) fn accept_posted(
        &mut self,
        out: &mut BytesMut,
        reads: &mut Vec<Box<dyn Request>>,
        unchecked: bool,
    ) {
        if unchecked && !out.is_empty() && !self.is_closed() && self.over_wbuf_max(out.len()) {
            // Posted over the room the inbox was given (a callback of
            // another connection does not wait for the exact check): the
            // cap holds as on the locked path.
            out.clear();
            let e = self.output_full();
            for req in reads.drain(..) {
                req.fail(e.clone());
            }
            return;
        }
        if out.len() > INBOX_KEEP {
            // A burst (a buffer the inbox would not keep) goes in by
            // reference, not copied next to itself.
            self.wq.push_bytes(out.split().freeze());
            self.marks.pushed(self.wq.len());
        } else if !out.is_empty() {
            // Copied, not traded: swapping buffers with an empty tail was
            // measured slower (each side then regrows the other's buffer).
            let before = self.wq.begin_encode();
            self.wq.tail_mut().extend_from_slice(out);
            self.wq.commit(before);
            out.clear();
            self.marks.pushed(self.wq.len());
        }
        for req in reads.drain(..) {
            match &self.life {
                Life::Closed(e) => req.fail(e.clone()),
                Life::Open => self.queue.push_back(Entry::Read(req)),
            }
        }
        if self.output == Output::ShutdownAfterInbox {
            // What was accepted before the shutdown is in: now it may go.
            self.output = Output::ShutdownRequested;
            self.wake_driver();
        }
        self.sweep_if_due();
    }

    /// Spawned, before a change that could refuse writes the handles have
    /// already queued into their inbox (checked against the state the
    /// engine published when its lock was last released): a shutdown, or
    /// a push under `wbuf_max` past the half of it that is the engine's
    /// own, which may use up the room they were told of. The inbox takes
    /// no more writes until the lock is released and the state published
    /// again (until then a handle queues through the lock, and hears the
    /// change); what it holds stays there, to come in after what the
    /// engine does meanwhile, as always. Returns how many bytes of output
    /// it holds: they count against `wbuf_max` now, and a shutdown waits
    /// for them.
    pub(crate) fn seal_inbox(&self) -> usize {
        self.handles
            .as_ref()
            .and_then(Weak::upgrade)
            .map_or(0, |handles| handles.seal_writes())
    }

    /// The output waiting in the handles' inbox, sealed, when queueing
    /// `adding` more bytes may use room promised to it (see
    /// [`write_room`](Self::write_room)); else 0.
    #[inline]
    fn inbox_output(&self, adding: usize) -> usize {
        if self.needs_seal(adding) {
            self.seal_inbox()
        } else {
            0
        }
    }

    /// The handles of a spawned connection (see [`seal_inbox`](Self::seal_inbox)).
    pub(crate) fn set_handles(&mut self, handles: Weak<Shared>) {
        self.handles = Some(handles);
    }

    /// Whether a write may be queued now (what `push_encoded` checks).
    /// The output is shut (`push_shutdown` asked for): no write can be
    /// queued again.
    pub(crate) fn output_shut(&self) -> bool {
        self.output != Output::Open
    }

    pub(crate) fn accepts_writes(&self) -> bool {
        !self.is_closed() && self.output == Output::Open
    }

    /// Bytes that spawned handles may queue into their inbox under
    /// `wbuf_max` (`usize::MAX` without a cap), published whenever the
    /// inbox is emptied into the engine or the engine's lock released:
    /// the room left, but at most half the cap. The engine's own pushes
    /// take the other half without a look at the inbox; past it they seal
    /// the inbox and count what it holds ([`needs_seal`](Self::needs_seal)).
    /// Either way, what is queued and what the inbox holds stay within the
    /// cap together.
    pub(crate) fn write_room(&self) -> usize {
        self.cfg.wbuf_max.map_or(usize::MAX, |max| {
            max.saturating_sub(self.wq.len()).min(max / 2)
        })
    }

    /// Whether queueing `adding` more bytes may use room promised to the
    /// handles' inbox (see [`write_room`](Self::write_room)), so that the
    /// inbox must be sealed and counted first.
    #[inline]
    fn needs_seal(&self, adding: usize) -> bool {
        self.handles.is_some()
            && self
                .cfg
                .wbuf_max
                .is_some_and(|max| self.wq.len() + adding > max / 2)
    }

    /// Puts `entry` first, except before a read that has already looked at
    /// input without finishing its frame: its decoder may keep a scan
    /// position into those bytes, so the entry goes right after it. A read
    /// also goes after the TLS switches at the front: a switch requested
    /// before it runs before it ([TLS-2](crate::semantics#TLS-2)), and no read is served while one
    /// is pending ([TLS-3](crate::semantics#TLS-3)), so the bytes behind a STARTTLS go to the TLS
    /// engine, never to a read as plaintext.
    fn push_front(&mut self, entry: Entry) {
        let at = usize::from(matches!(
            self.queue.front(),
            Some(Entry::Read(r)) if r.has_started()
        ));
        #[cfg(any(feature = "tls", feature = "rustls"))]
        let at = match entry {
            Entry::Read(_) => {
                at + self
                    .queue
                    .iter()
                    .skip(at)
                    .take_while(|e| matches!(e, Entry::Switch(_)))
                    .count()
            }
            Entry::Switch(_) => at,
        };
        self.queue.insert(at, entry);
    }

    /// Drops every read request whose ticket was dropped (it consumed
    /// nothing, so nothing is lost).
    fn sweep_cancelled(&mut self) {
        self.queue
            .retain(|e| !matches!(e, Entry::Read(r) if r.is_abandoned()));
    }

    /// Whether output waits behind a TLS switch at the head of the queue:
    /// it goes out only once the switch is done, so a linger that should
    /// write it must let the switch finish first.
    pub(crate) fn switch_holds_output(&self) -> bool {
        self.head_is_switch() && self.wq.len() > self.wq.writable()
    }

    /// Whether the head of the queue is a TLS switch.
    fn head_is_switch(&self) -> bool {
        !self.queue.is_empty() && !self.head_is_read()
    }

    /// Whether the head of the queue is a read request (which wants input
    /// once `dispatch` left it pending).
    fn head_is_read(&self) -> bool {
        matches!(self.queue.front(), Some(Entry::Read(_)))
    }

    /// Runs queued requests on the buffered bytes until the head needs more
    /// input, the head is a TLS switch, or the queue is empty. Requests
    /// unshifted by a completion run next, on the same bytes, before any
    /// new read.
    ///
    /// Returns true when it stopped after [`DISPATCH_ROUND`] completions
    /// with more to run: the caller runs it again before it reads (the
    /// driver spends a unit of its task's budget in between; the inline
    /// front end yields to its executor).
    pub(crate) fn dispatch(&mut self) -> bool {
        let eof = self.is_eof();
        let mut completed = 0;
        while let Life::Open = self.life {
            if completed == DISPATCH_ROUND {
                return true;
            }
            let Some(Entry::Read(head)) = self.queue.front_mut() else {
                break;
            };
            if head.is_abandoned() {
                // Cancelled before completing: it consumed nothing.
                self.queue.pop_front();
                continue;
            }
            // (Checked before it is taken: no store per request on the
            // per-frame path.)
            if self.carried.is_some()
                && let Some(e) = self.carried.take()
            {
                // The error of the frame a cancelled read was consuming:
                // the next plain read's. A pipelined response is owed to
                // its own request, never handed someone else's error.
                if head.on_drop() == OnDrop::Cancel {
                    if let Some(Entry::Read(req)) = self.queue.pop_front() {
                        req.fail(e);
                    }
                    continue;
                }
                tracing::debug!(error = %e, "an abandoned read's error dropped before a pipelined response");
            }
            if self.deferred.is_some()
                && let Some(e) = self.deferred.take()
            {
                // The error that came after the previous batch's frames
                // belongs to the batch that goes on with its decoder, the
                // next one. Any other read comes after the batches: the
                // error was not its business, and no later batch's either.
                if head.is_batch() {
                    if let Some(Entry::Read(req)) = self.queue.pop_front() {
                        req.fail(e);
                    }
                    continue;
                }
                tracing::debug!(error = %e, "a batch's error dropped: the next read is not a batch");
            }
            let before = self.rbuf.len();
            let inside = eof.then(|| InsideAFrame::mark(self.partial));
            let step = head.poll_decode(&mut self.rbuf, eof);
            drop(inside);
            self.note_step(before, step.is_ready());
            match step {
                Poll::Pending => break,
                Poll::Ready(outcome) => {
                    let Some(Entry::Read(req)) = self.queue.pop_front() else {
                        break;
                    };
                    match outcome {
                        Ok(()) => {
                            tracing::trace!(buffered = self.rbuf.len(), "read request complete");
                            let on_drop = req.on_drop();
                            req.complete(&mut Requests::continuing(self, on_drop));
                            completed += 1;
                        }
                        Err(Rejected { error: e, consumed }) => {
                            // A pipelined response whose decoder left the
                            // bytes it rejected leaves the stream out of
                            // step: every later answer would go to the
                            // wrong caller. One it consumed fails its own
                            // call only.
                            let e =
                                if !e.is_fatal() && !consumed && req.on_drop() == OnDrop::Consume {
                                    Error::out_of_step(e)
                                } else {
                                    e
                                };
                            tracing::debug!(error = %e, "read request failed");
                            if !e.is_fatal()
                                && req.on_drop() == OnDrop::Cancel
                                && req.has_consumed()
                                && req.is_unheard()
                            {
                                // Its caller gave up (or timed out) after
                                // its decoder had consumed part of this
                                // frame: the next plain read gets the error.
                                self.carried = Some(e);
                                continue;
                            }
                            req.fail(e.clone());
                            if e.is_fatal() {
                                self.close(e);
                            }
                        }
                    }
                }
            }
        }
        false
    }

    /// Hands `err` to the next batch read (`read_many`) (see `dispatch`).
    pub(crate) fn defer_error(&mut self, err: Error) {
        self.deferred = Some(err);
    }

    // ----- reading ------------------------------------------------------------------

    /// Room for the next read: the adaptive read size, bounded by what is
    /// left under `rbuf_max`.
    fn read_room(&self) -> usize {
        match self.cfg.rbuf_max {
            Some(max) => self.read_size.min(max.saturating_sub(self.rbuf.len())),
            None => self.read_size,
        }
    }

    /// The most one read may add: the spare capacity, bounded by what is
    /// left under `rbuf_max`.
    fn read_limit(&self) -> usize {
        let spare = self.rbuf.capacity() - self.rbuf.len();
        match self.cfg.rbuf_max {
            Some(max) => spare.min(max.saturating_sub(self.rbuf.len())),
            None => spare,
        }
    }

    /// Makes room for `want` more bytes without doubling the buffer: the
    /// capacity grows by what this read needs, or by an eighth of what is
    /// held, whichever is more (amortised growth, peak about 1.125 × held +
    /// one read).
    fn reserve_for_read(&mut self, want: usize) {
        if self.rbuf.try_reclaim(want) {
            return;
        }
        let extra = want.max(self.rbuf.len() / 8);
        let mut v = Vec::from(std::mem::take(&mut self.rbuf));
        v.reserve_exact(extra);
        self.rbuf = BytesMut::from(Bytes::from(v));
    }

    /// A burst's read buffer behind a few bytes left over (the start of
    /// the next frame): while waiting, only what is held and one read are
    /// kept, so one large frame does not pin its memory for the life of
    /// the connection. The bytes keep their places (decoders' scan
    /// positions stay valid).
    fn shrink_read_buffer(&mut self) {
        let keep = self.rbuf.len() + self.read_size;
        if self.rbuf.capacity() > READ_KEEP.max(2 * keep) {
            let mut fresh = BytesMut::with_capacity(keep);
            fresh.extend_from_slice(&self.rbuf);
            self.rbuf = fresh;
        }
    }

    /// Tells the timers of the traffic the transport made out of the
    /// engine's sight since `before` (a TLS handshake, a close_notify, part
    /// of a record): bytes read or written count as reads and writes do
    /// ([TO-1](crate::semantics#TO-1)).
    fn note_transport<IO: Transport>(&mut self, io: &IO, before: transport::Activity) {
        let now = io.activity();
        self.timers
            .on_transport_activity(now.reads != before.reads, now.writes != before.writes);
    }

    /// Reads once from the transport into the read buffer, for a reader that
    /// needs more input. When no input is ready, pending output is written
    /// first (the connection never waits for input with output queued) and
    /// the timers run: an expired timer with no hook stops the fill with
    /// [`FillStop::Expired`], for the caller to route.
    pub(crate) fn poll_fill<IO>(
        &mut self,
        io: &mut IO,
        cx: &mut Context<'_>,
    ) -> Poll<std::result::Result<(), FillStop>>
    where
        IO: Transport,
    {
        let mut hook_ran = false;
        loop {
            self.check_open()?;
            if self.is_eof() {
                return Poll::Ready(Ok(()));
            }
            let want = self.read_room();
            if want == 0 {
                // The reader has seen `rbuf_max` bytes and still wants more.
                let e = Error::no_space("a read request needs more input than rbuf_max allows");
                self.close(e.clone());
                return Poll::Ready(Err(FillStop::Closed(e)));
            }
            self.reserve_for_read(want);
            // Read into all the room already allocated (fewer system calls
            // on a buffer that has grown), never past `rbuf_max`.
            let limit = self.read_limit().max(want);
            let before = io.activity();
            let filled = poll_io!(self, cx, |c| {
                let mut limited = (&mut self.rbuf).limit(limit);
                transport::poll_read_buf(io, c, &mut limited)
            });
            match filled {
                Poll::Ready(Ok(0)) => {
                    tracing::debug!(
                        buffered = self.rbuf.len(),
                        queued = self.queue.len(),
                        "end of input"
                    );
                    self.input = Input::Eof;
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Ok(n)) => {
                    self.input_epoch = self.input_epoch.wrapping_add(1);
                    self.timers.on_read();
                    if n >= want
                        && want == self.read_size
                        && self.read_size < self.cfg.max_read_size
                    {
                        self.read_size = (self.read_size * 2).min(self.cfg.max_read_size);
                    }
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Err(e)) => {
                    self.close(e.clone());
                    return Poll::Ready(Err(FillStop::Closed(e)));
                }
                Poll::Pending => {
                    // Part of a TLS record came (or the TLS library wrote):
                    // traffic for the timers, if no plaintext yet.
                    self.note_transport(io, before);
                    // An idle connection keeps no read buffer: give an empty
                    // one back while waiting (the next read allocates it
                    // again). A spawned server waiting for its next request
                    // then costs under 2 KiB beside its socket.
                    if self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
                        self.rbuf = BytesMut::new();
                    } else {
                        self.shrink_read_buffer();
                    }
                }
            }
            if let Poll::Ready(Err(e)) = self.poll_write_out(io, cx) {
                return Poll::Ready(Err(FillStop::Closed(e)));
            }
            if self.side == Side::Write {
                // A flush running the queued reads: it waits on the timers
                // itself, as the write side, once the queue waits (TO-3).
                return Poll::Pending;
            }
            match self.poll_timers(cx, Side::Read) {
                Poll::Ready(Some((which, e))) => {
                    return Poll::Ready(Err(FillStop::Expired(which, e)));
                }
                // A hook handled it (and may have changed things): go again,
                // once; a timer due again at once (a period shorter than the
                // hook takes) runs its hook at the next poll, so a call
                // never spins on it and other tasks run in between.
                Poll::Ready(None) if !hook_ran => hook_ran = true,
                Poll::Ready(None) => {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Checks the timers. `Ready(Some)`: one expired and there is no hook,
    /// so the caller routes the non-fatal `ETIMEDOUT`. `Ready(None)`: the
    /// hook ran. `Pending`: nothing expired (the waker is registered for
    /// the next deadline).
    pub(crate) fn poll_timers(
        &mut self,
        cx: &mut Context<'_>,
        side: Side,
    ) -> Poll<Option<(Timeout, Error)>> {
        // A hook runs on whichever side hears the timer; queued requests
        // are told whichever side drives them (TO-3: the head read first).
        let (side, all, reads) = if self.on_driver_task() {
            (Side::Driver, true, false)
        } else {
            let reads = side == Side::Write && !self.queue.is_empty();
            (side, self.on_timeout.is_some(), reads)
        };
        let polled = self.timers.poll_expired(cx, side, all, reads);
        let Poll::Ready(which) = polled else {
            return Poll::Pending;
        };
        tracing::debug!(timeout = %which, "timer expired");
        Poll::Ready(self.timer_expired(which))
    }

    /// Runs the hook for `which`, or returns the error to route.
    fn timer_expired(&mut self, which: Timeout) -> Option<(Timeout, Error)> {
        if let Some(mut hook) = self.on_timeout.take() {
            hook(which, &mut Requests::new(self));
            if self.on_timeout.is_none() {
                self.on_timeout = Some(hook);
            }
            return None;
        }
        Some((which, Error::timer_expired(which)))
    }

    /// A setter checks the deadlines at once, without waiting for the next
    /// poll.
    pub(crate) fn set_timer(&mut self, which: Timeout, period: std::time::Duration) {
        self.timers.set(which, period);
        // Whoever waits on the timers re-arms them for the new deadline
        // (an inline caller has no driver to wake).
        self.timers.wake_waiter();
        if self.is_closed() {
            return;
        }
        if self.handles.is_some() {
            // Spawned: the driver, woken at once, finds an expiry in its
            // next turn and handles it as any other (the hook runs there,
            // a panic reaches whoever awaits the driver, TO-6 applies).
            self.wake_driver();
            return;
        }
        if let Some(t) = self.timers.expired()
            && let Some((t, e)) = self.timer_expired(t)
            && !self.fail(e, Some(t))
        {
            // Nobody queued was told: a poll waiting on the timers (woken
            // above), or the next one, hears it.
            self.timers.owe(t);
        }
        self.wake_driver();
    }

    pub(crate) fn timeout_reset(&mut self, which: Timeout) {
        self.timers.reset(which);
    }

    /// What tells [`Closed`](crate::queued::handle::Closed) futures of the
    /// close (made once, by the first).
    pub(crate) fn close_signal(&mut self) -> Arc<CloseSignal> {
        let err = self.error().cloned();
        let signal = self.close_signal.get_or_insert_with(Default::default);
        if let Some(e) = err {
            signal.close(&e);
        }
        signal.clone()
    }

    #[cfg(feature = "tower")]
    pub(crate) fn take_wrote(&mut self) -> Option<std::time::Duration> {
        self.timers.take_wrote()
    }

    #[cfg(feature = "tower")]
    pub(crate) fn since_read(&self) -> std::time::Duration {
        self.timers.since_read()
    }

    /// Whether the core runs on the spawned driver's own tokio task (the
    /// driver registers itself on its first turn, and only it writes).
    fn on_driver_task(&self) -> bool {
        self.driver.is_some()
    }

    pub(crate) fn pause_timers(&mut self) {
        self.timers.pause();
    }

    pub(crate) fn start_timers(&mut self) {
        self.timers.start();
    }

    pub(crate) fn set_on_timeout(&mut self, hook: TimeoutHook) {
        self.on_timeout = Some(hook);
    }

    pub(crate) fn set_on_drain(&mut self, hook: DrainHook) {
        self.on_drain = Some(hook);
    }

    pub(crate) fn set_autocork(&mut self, on: bool) {
        self.cfg.autocork = on;
    }

    pub(crate) fn set_rbuf_max(&mut self, max: Option<usize>) {
        self.cfg.rbuf_max = max;
    }

    pub(crate) fn wbuf_max(&self) -> Option<usize> {
        self.cfg.wbuf_max
    }

    pub(crate) fn set_wbuf_max(&mut self, max: Option<usize>) {
        self.cfg.wbuf_max = max;
        self.set_watermarks(self.cfg.high_water, self.cfg.low_water);
    }

    /// Drives the queue until it is empty (`Ready`) or waits for input.
    pub(crate) fn poll_queue<IO>(&mut self, io: &mut IO, cx: &mut Context<'_>) -> Poll<Result<()>>
    where
        IO: Transport,
    {
        // A timer handled in front of a switch (a hook ran, or a queued
        // read was told): once per poll, as in `poll_fill`.
        let mut timer_handled = false;
        loop {
            if self.dispatch() {
                // A round of completions, and more to run: completions
                // that always queue another would never end this call, so
                // it yields to the executor (inline, there is no task
                // budget to rely on, see `poll_write_some`).
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.check_open()?;
            if self.queue.is_empty() {
                return Poll::Ready(Ok(()));
            }
            if !self.head_is_read() {
                // A TLS switch; its outcome went to its waiter (and a fatal
                // one closed the connection, seen at the top). A silent peer
                // cannot hold it past its timeout.
                if self.poll_switch(io, cx).is_pending() {
                    if self.side == Side::Write {
                        // A flush running the queue waits on the timers
                        // itself, as the write side (TO-3).
                        return Poll::Pending;
                    }
                    if timer_handled {
                        // Due again at once (a period shorter than its
                        // hook takes): the next poll runs it, so the call
                        // never spins and other tasks run in between.
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    if let Some((t, e)) = ready!(self.poll_timers(cx, Side::Read))
                        && !self.fail(e.clone(), Some(t))
                    {
                        // Nobody queued waits for it: the caller (an inline
                        // read behind the switch) does.
                        return Poll::Ready(Err(e));
                    }
                    timer_handled = true;
                }
                continue;
            }
            match self.poll_fill(io, cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(FillStop::Expired(which, e))) => {
                    if !self.fail(e.clone(), Some(which)) {
                        // Every queued read's caller has its answer or gave
                        // up: the caller driving the queue (an inline read
                        // behind it) is the one waiting.
                        return Poll::Ready(Err(e));
                    }
                }
                Poll::Ready(Err(FillStop::Closed(e))) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    // A head whose ticket is dropped (in any task) wakes
                    // the caller, so what is behind it runs on the bytes
                    // already here, as in the driver.
                    if let Some(Entry::Read(head)) = self.queue.front_mut()
                        && head.poll_abandoned(cx)
                    {
                        continue;
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Decodes one frame with `decoder` directly on the buffer (after the
    /// queue has emptied), reading as needed. `at_eof_clean`: whether end of
    /// input with no frame is `Ok(None)` (a stream's end) instead of `EPIPE`.
    pub(crate) fn poll_decode_direct<IO, D>(
        &mut self,
        io: &mut IO,
        cx: &mut Context<'_>,
        decoder: &mut D,
        at_eof_clean: bool,
    ) -> Poll<Result<Option<D::Item>>>
    where
        IO: Transport,
        D: Decoder,
        D::Error: Into<Error>,
    {
        self.poll_decode_observed(io, cx, decoder, at_eof_clean, &mut DecoderWatch::default())
    }

    /// [`poll_decode_direct`](Self::poll_decode_direct) for the `Stream`'s
    /// decoder, kept across calls with what `watch` remembers of it: it is
    /// refused as stale (`EINVAL`, non-fatal, `watch.stale`) when bytes left
    /// the front of the buffer while it held part of a frame, since its
    /// state (a scan position, a nesting depth) describes bytes that are
    /// gone. `watch.took` tells, with a frame or the decoder's own error,
    /// whether the call that gave it consumed bytes: a decoder that failed
    /// without would fail the same way on the same bytes, and a frame that
    /// took nothing ends a batch.
    pub(crate) fn poll_decode_observed<IO, D>(
        &mut self,
        io: &mut IO,
        cx: &mut Context<'_>,
        decoder: &mut D,
        at_eof_clean: bool,
        watch: &mut DecoderWatch,
    ) -> Poll<Result<Option<D::Item>>>
    where
        IO: Transport,
        D: Decoder,
        D::Error: Into<Error>,
    {
        let mut uncorked = false;
        loop {
            // Queued requests go first (RQ-1), also those a hook queued
            // while this call wrote (a drain hook) or waited (a timeout
            // hook): the queue is looked at before every decode step.
            if !self.queue.is_empty() {
                ready!(self.poll_queue(io, cx))?;
            }
            if self.carried.is_some()
                && let Some(e) = self.carried.take()
            {
                // The error of the frame a cancelled read was consuming.
                return Poll::Ready(Err(e));
            }
            if watch.begun.is_some_and(|mark| mark != self.taken) {
                watch.begun = None;
                watch.stale = true;
                return Poll::Ready(Err(Error::invalid_input(
                    "another read took bytes of the frame the decoder had begun: its state no longer matches the buffer",
                )));
            }
            if !uncorked {
                uncorked = true;
                self.write_uncorked(io, cx)?;
                continue;
            }
            self.check_open()?;
            let before = self.rbuf.len();
            // What `decode_eof` takes is its own end-of-input handling
            // (trailing whitespace, say); what earlier steps took without a
            // frame is part of one.
            let inside = self.partial;
            let at_eof = self.input == Input::Eof;
            let marked = at_eof.then(|| InsideAFrame::mark(inside));
            let step = decode_step(decoder, &mut self.rbuf, at_eof);
            drop(marked);
            self.note_step(before, !matches!(step, Ok(None)));
            match step {
                Ok(Some(frame)) => {
                    watch.begun = None;
                    watch.took = Some(self.rbuf.len() != before);
                    return Poll::Ready(Ok(Some(frame)));
                }
                Ok(None) => {}
                // Clean only where the decoder had no frame, nothing is
                // left, and no decoder took part of a frame (the header of
                // a length-prefixed one) since the last frame: the engine's
                // own end-of-input error between frames. An error the
                // decoder returns itself (a truncation it noticed) is the
                // decoder's to tell, as with Framed.
                Err(e)
                    if at_eof_clean
                        && !inside
                        && e.is_eof_in_request()
                        && self.is_clean_eof(&e) =>
                {
                    watch.begun = None;
                    return Poll::Ready(Ok(None));
                }
                Err(e) => {
                    watch.begun = None;
                    watch.took = Some(self.rbuf.len() != before);
                    if e.is_fatal() {
                        self.close(e.clone());
                    }
                    return Poll::Ready(Err(e));
                }
            }
            // The decoder has looked at bytes (or taken some) without a
            // frame: it may keep state about them until its frame is done.
            if watch.begun.is_some() || !self.rbuf.is_empty() || self.rbuf.len() < before {
                watch.begun = Some(self.taken);
            }
            ready!(self.poll_fill(io, cx)).map_err(Error::from)?;
        }
    }

    /// Autocork off: output goes out whenever the inline handle runs, before
    /// it returns a frame that was already buffered.
    pub(crate) fn write_uncorked<IO>(&mut self, io: &mut IO, cx: &mut Context<'_>) -> Result<()>
    where
        IO: Transport,
    {
        if !self.cfg.autocork
            && !self.wq.is_empty()
            && let Poll::Ready(Err(e)) = self.poll_write_out(io, cx)
        {
            return Err(e);
        }
        Ok(())
    }

    /// Whether `e`, from a decode step, only says the input ended between
    /// frames (EOF, nothing buffered): a clean end, not an error.
    fn is_clean_eof(&self, e: &Error) -> bool {
        self.is_eof() && e.is_eof() && self.rbuf.is_empty()
    }

    /// Waits for one frame as [`poll_decode_direct`](Self::poll_decode_direct)
    /// (clean end of input = `Ok(0)`), then appends it and up to
    /// `limit - 1` more frames decodable from the bytes already buffered,
    /// without reading again. Frames appended before an error stay in `out`.
    pub(crate) fn poll_decode_many<IO, D>(
        &mut self,
        io: &mut IO,
        cx: &mut Context<'_>,
        decoder: &mut D,
        out: &mut Vec<D::Item>,
        limit: usize,
    ) -> Poll<Result<usize>>
    where
        IO: Transport,
        D: Decoder,
        D::Error: Into<Error>,
    {
        if limit == 0 {
            return Poll::Ready(Ok(0));
        }
        let mut watch = DecoderWatch::default();
        match ready!(self.poll_decode_observed(io, cx, decoder, true, &mut watch))? {
            Some(frame) => out.push(frame),
            None => return Poll::Ready(Ok(0)),
        }
        if watch.took == Some(false) {
            // A frame that consumed nothing ends the batch.
            return Poll::Ready(Ok(1));
        }
        Poll::Ready(self.decode_buffered(decoder, out, limit))
    }

    /// After one frame was taken: up to `limit - 1` more frames from the
    /// bytes already buffered. Returns how many frames `out` got in all.
    pub(crate) fn decode_buffered<D>(
        &mut self,
        decoder: &mut D,
        out: &mut Vec<D::Item>,
        limit: usize,
    ) -> Result<usize>
    where
        D: Decoder,
        D::Error: Into<Error>,
    {
        let mut n = 1;
        let eof = self.is_eof();
        // Where a batch stops is `batch_step`'s rule, shared with the
        // spawned front end's batches; a read queued meanwhile (by a hook)
        // ends it too, and goes first.
        while n < limit && self.queue.is_empty() {
            let before = self.rbuf.len();
            let step = batch_step(decoder, &mut self.rbuf, eof);
            self.note_step(before, !matches!(step, BatchStep::End));
            match step {
                BatchStep::Frame(frame) => {
                    out.push(frame);
                    n += 1;
                }
                BatchStep::Last(frame) => {
                    out.push(frame);
                    n += 1;
                    break;
                }
                BatchStep::End => break,
                BatchStep::Error(e) => {
                    if e.is_fatal() {
                        self.close(e.clone());
                    }
                    return Err(e);
                }
            }
        }
        Ok(n)
    }

    // ----- writing --------------------------------------------------------------------

    /// Encodes `item` onto the write queue. On an encoder error nothing is
    /// queued and the error is not fatal (WQ-1). An item longer than the
    /// whole of `wbuf_max` is refused the same way; one that crosses it
    /// with the output already queued is not queued and the connection
    /// closes with `ENOSPC`, what was queued before staying reachable
    /// ([OPT-9](crate::semantics#OPT-9)). An encoder that panics leaves
    /// nothing half-written and closes the connection; the panic goes on
    /// to the caller.
    pub(crate) fn push_encoded<E, I>(&mut self, encoder: E, item: I) -> Result<()>
    where
        E: Encoder<I>,
        E::Error: Into<Error>,
    {
        self.encode_queued(encoder, item, OverCap::Refuse).map(drop)
    }

    /// [`push_encoded`](Self::push_encoded) for a caller that waits for
    /// room rather than close the connection: an item that does not fit
    /// under `wbuf_max` behind the output queued (or not at all) comes
    /// back encoded, unqueued (`Ok(Some(bytes))`). One that fits is
    /// encoded straight into the queue, with no copy.
    pub(crate) fn push_encoded_or_hand_back<E, I>(
        &mut self,
        encoder: E,
        item: I,
    ) -> Result<Option<Bytes>>
    where
        E: Encoder<I>,
        E::Error: Into<Error>,
    {
        self.encode_queued(encoder, item, OverCap::HandBack)
    }

    fn encode_queued<E, I>(
        &mut self,
        mut encoder: E,
        item: I,
        over: OverCap,
    ) -> Result<Option<Bytes>>
    where
        E: Encoder<I>,
        E::Error: Into<Error>,
    {
        self.settle_panic();
        self.check_writable()?;
        let before = self.wq.begin_encode();
        let armed = EncodeUnwind { core: self, before };
        let encoded = encoder.encode(item, armed.core.wq.tail_mut());
        std::mem::forget(armed);
        if let Err(e) = encoded {
            if !self.wq.rollback(before) {
                return Err(self.encoder_lost_output());
            }
            return Err(e.into().refused_by_encoder());
        }
        // An encoder that removed bytes queued before its item (one that
        // clears `dst`) has lost output that was accepted: the stream can
        // no longer be what was queued, so the connection closes. (One
        // that rewrites them cannot be told from one that appends: an
        // encoder must only append, as tokio-util's `Framed` assumes.)
        let Some(added) = self.wq.tail_len().checked_sub(before) else {
            self.wq.forget_removed(before);
            return Err(self.encoder_lost_output());
        };
        let refusal = match self.fits_wbuf_max(added) {
            Err(e) => Some(e),
            Ok(()) if self.over_wbuf_max(added + self.inbox_output(added)) => None,
            Ok(()) => {
                self.wq.commit(before);
                self.pushed();
                return Ok(None);
            }
        };
        if over == OverCap::HandBack {
            return Ok(Some(self.wq.take_back(before)));
        }
        let _ = self.wq.rollback(before);
        Err(refusal.unwrap_or_else(|| self.output_full()))
    }

    /// Queues raw bytes (zero-copy for large ones), under the same rules
    /// as [`push_encoded`](Self::push_encoded).
    pub(crate) fn push_bytes(&mut self, bytes: Bytes) -> Result<()> {
        self.check_writable()?;
        self.fits_wbuf_max(bytes.len())?;
        if self.over_wbuf_max(bytes.len() + self.inbox_output(bytes.len())) {
            return Err(self.output_full());
        }
        self.wq.push_bytes(bytes);
        self.pushed();
        Ok(())
    }

    /// An encoder removed output queued before its item: fatal (what is
    /// queued is no longer what was accepted), and the output is dropped.
    pub(crate) fn encoder_lost_output(&mut self) -> Error {
        let e = Error::custom(
            ErrorKind::InvalidInput,
            true,
            "the encoder removed output queued before its item",
        );
        self.output_dropped = true;
        self.close(e.clone());
        e
    }

    /// `wbuf_max` crossed: fatal, and the queued output is not lingered on.
    fn output_full(&mut self) -> Error {
        let e = Error::no_space("queued output exceeds wbuf_max");
        self.output_dropped = true;
        self.close(e.clone());
        e
    }

    fn pushed(&mut self) {
        self.marks.pushed(self.wq.len());
        self.wake_driver();
    }

    pub(crate) fn check_writable(&self) -> Result<()> {
        self.check_open()?;
        if self.output != Output::Open {
            return Err(Error::invalid_input("write after push_shutdown"));
        }
        Ok(())
    }

    /// An item of `len` bytes can be queued at all: it is no longer than
    /// `wbuf_max`. One that is could never be queued, whatever the peer
    /// reads, so it is refused (non-fatal, nothing queued) rather than
    /// closing the connection under everything else in flight.
    fn fits_wbuf_max(&self, len: usize) -> Result<()> {
        match self.cfg.wbuf_max {
            Some(max) if len > max => Err(Error::longer_than_wbuf_max()),
            _ => Ok(()),
        }
    }

    /// Every byte queued counts, including output waiting for a TLS switch.
    fn over_wbuf_max(&self, adding: usize) -> bool {
        self.cfg
            .wbuf_max
            .is_some_and(|max| self.wq.len() + adding > max)
    }

    /// Flush what is queued, then half-close the write side.
    pub(crate) fn push_shutdown(&mut self) -> Result<()> {
        self.check_open()?;
        if self.output == Output::Open {
            self.output = if self.seal_inbox() > 0 {
                Output::ShutdownAfterInbox
            } else {
                Output::ShutdownRequested
            };
            // Producers waiting for room hear that none will come.
            self.marks.wake_all_waiters();
            self.wake_driver();
        }
        Ok(())
    }

    /// Writes until the queue is empty and flushed (and the write side shut
    /// down, if requested), or the transport pushes back. Output queued
    /// after a pending TLS switch waits for it: this then drives the switch.
    pub(crate) fn poll_write_out<IO>(
        &mut self,
        io: &mut IO,
        cx: &mut Context<'_>,
    ) -> Poll<Result<()>>
    where
        IO: Transport,
    {
        loop {
            self.check_open()?;
            if self.poll_write_some(io, cx)?.is_pending() {
                self.settle_flushes(io, cx)?;
                return Poll::Pending;
            }
            if self.head_is_switch() {
                // A switch at the head runs before any later write.
                let _ = ready!(self.poll_switch(io, cx));
                continue;
            }
            if self.wq.is_empty() {
                break;
            }
            // Stopped at the marker of a switch queued behind reads: those
            // reads must complete first.
            self.settle_flushes(io, cx)?;
            return Poll::Pending;
        }
        if self.unflushed {
            if let Err(e) = ready!(poll_out!(self, io, cx, |c| io.poll_send_flush(c))) {
                return Poll::Ready(Err(self.io_failed(e)));
            }
            self.unflushed = false;
        }
        if self.output == Output::ShutdownAfterInbox {
            // Handles' writes accepted before the shutdown wait in their
            // inbox; they woke the driver, whose next turn takes them in.
            return Poll::Pending;
        }
        if self.output == Output::ShutdownRequested {
            if self.wq.has_marker() {
                // A TLS switch is still queued (behind reads): the write
                // side closes after it, as output queued after it waits.
                self.settle_flushes(io, cx)?;
                return Poll::Pending;
            }
            if let Err(e) = ready!(poll_out!(self, io, cx, |c| io.poll_send_shutdown(c))) {
                return Poll::Ready(Err(self.io_failed(e)));
            }
            tracing::debug!("write side shut down");
            self.output = Output::Shut;
        }
        for (_, w) in self.flush_waiters.drain(..) {
            let _ = w.send(Ok(()));
        }
        Poll::Ready(Ok(()))
    }

    /// The transport pushes back, or output waits behind a switch's marker,
    /// with flushes whose own bytes have all left: the transport is flushed
    /// and they resolve, however much was queued after them.
    fn settle_flushes<IO>(&mut self, io: &mut IO, cx: &mut Context<'_>) -> Result<()>
    where
        IO: Transport,
    {
        let now = FlushMark {
            sent: self.sent,
            switches: self.switches_run,
        };
        let done = self
            .flush_waiters
            .partition_point(|(mark, _)| mark.reached(now));
        if done == 0 {
            return Ok(());
        }
        if self.unflushed {
            match poll_out!(self, io, cx, |c| io.poll_send_flush(c)) {
                Poll::Pending => return Ok(()),
                Poll::Ready(Err(e)) => return Err(self.io_failed(e)),
                Poll::Ready(Ok(())) => self.unflushed = false,
            }
        }
        for (_, w) in self.flush_waiters.drain(..done) {
            let _ = w.send(Ok(()));
        }
        Ok(())
    }

    /// Writes until the queue is empty or reaches a switch's marker.
    fn poll_write_some<IO>(&mut self, io: &mut IO, cx: &mut Context<'_>) -> Poll<Result<()>>
    where
        IO: Transport,
    {
        let mut writes = 0;
        while self.wq.writable() > 0 {
            self.check_open()?;
            // Over a transport that takes everything at once, with a drain
            // hook that always refills the queue, this would never end:
            // the other tasks on the thread must still run. On the
            // driver's task a unit of its budget goes per write. Inline,
            // the caller's task may be polled by another executor, where
            // tokio's budget never refills: it yields after a round of
            // writes instead.
            let coop = match self.on_driver_task() {
                true => Some(ready!(tokio::task::coop::poll_proceed(cx))),
                false if writes == WRITE_ROUND => {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                false => None,
            };
            writes += 1;
            match ready!(poll_out!(self, io, cx, |c| self.wq.poll_write(io, c))) {
                Ok(0) => {
                    let e = Error::transport(std::io::ErrorKind::WriteZero.into());
                    return Poll::Ready(Err(self.io_failed(e)));
                }
                Ok(n) => {
                    if let Some(coop) = coop {
                        coop.made_progress();
                    }
                    self.sent += n as u64;
                    self.unflushed = true;
                    self.timers.on_write();
                    if self.marks.written(self.wq.len()) {
                        self.run_drain_hook();
                    }
                }
                Err(e) => return Poll::Ready(Err(self.io_failed(e))),
            }
        }
        // The drain hook may have closed the connection (`destroy`, a push
        // over `wbuf_max`), emptying the queue: that is this write's end,
        // not a flush done.
        self.check_open()?;
        Poll::Ready(Ok(()))
    }

    /// A transport error: fatal.
    fn io_failed(&mut self, e: Error) -> Error {
        self.close(e.clone());
        e
    }

    /// Changes the write watermarks at runtime and re-checks the queue
    /// against them (a producer may be released, a drain edge may fire).
    pub(crate) fn set_watermarks(&mut self, high: usize, low: usize) {
        self.cfg.high_water = high;
        self.cfg.low_water = low.min(high);
        self.marks
            .set(effective_high(high, self.cfg.wbuf_max), self.cfg.low_water);
        let len = self.wq.len();
        self.marks.pushed(len);
        if self.marks.written(len) {
            self.run_drain_hook();
        }
    }

    /// The drain edge: run the user's hook, never re-entrantly.
    fn run_drain_hook(&mut self) {
        if self.is_closed() {
            return;
        }
        if let Some(mut hook) = self.on_drain.take() {
            hook(&mut Requests::new(self));
            if self.on_drain.is_none() {
                self.on_drain = Some(hook);
            }
        }
    }

    /// Whether a producer should wait (above the high watermark).
    pub(crate) fn write_blocked(&self) -> bool {
        self.marks.is_blocked()
    }

    /// `Ready` below the high watermark (or back at the low one); an error
    /// handed to the write side since `epoch` (a write timeout) ends the wait.
    pub(crate) fn poll_write_ready(
        &mut self,
        cx: &mut Context<'_>,
        since: WaitingSince,
        token: Option<u64>,
    ) -> Poll<Result<()>> {
        // After `push_shutdown` no write can be queued again: not ready,
        // ever (as `push_write` then says, non-fatal).
        self.check_writable()?;
        self.poll_write_error(cx, since)?;
        ready!(self.marks.poll_ready(cx, token));
        Poll::Ready(self.check_writable())
    }

    /// Whether the write queue is at or below the low watermark.
    pub(crate) fn is_drained(&self) -> bool {
        self.marks.is_drained(self.wq.len())
    }

    /// `Ready` at or below the low watermark; as `poll_write_ready` for errors.
    pub(crate) fn poll_drained(
        &mut self,
        cx: &mut Context<'_>,
        since: WaitingSince,
        token: Option<u64>,
    ) -> Poll<Result<()>> {
        self.check_open()?;
        self.poll_write_error(cx, since)?;
        let len = self.wq.len();
        ready!(self.marks.poll_drained(len, cx, token));
        Poll::Ready(Ok(()))
    }

    /// A flush for handles: resolved once what is queued now is written and
    /// the transport flushed (and the half-close done, if one is queued and
    /// the queue drains).
    pub(crate) fn flush_ticket(&mut self) -> oneshot::Receiver<Result<()>> {
        let (tx, rx) = oneshot::channel();
        match &self.life {
            Life::Closed(e) => {
                let _ = tx.send(Err(e.clone()));
            }
            Life::Open => {
                // Flushes given up stay until the output drains; before the
                // list grows, drop them, and keep room for as many again as
                // are left, so that the next sweep is that many pushes away
                // (amortised O(1) a push) and a `select!` loop around
                // `flush` against a stalled peer keeps the list at twice
                // the live ones.
                if self.flush_waiters.len() == self.flush_waiters.capacity() {
                    self.flush_waiters.retain(|(_, w)| !w.is_closed());
                    self.flush_waiters.reserve(self.flush_waiters.len());
                }
                let mark = FlushMark {
                    sent: self.sent + self.wq.len() as u64,
                    switches: self.switches_run + u64::from(self.wq.has_marker()),
                };
                self.flush_waiters.push((mark, tx));
                self.wake_driver();
            }
        }
        rx
    }

    /// Writes out everything for an inline flush; a write timeout while the
    /// transport pushes back is a non-fatal `ETIMEDOUT` for the caller.
    pub(crate) fn poll_flush_inline<IO>(
        &mut self,
        io: &mut IO,
        cx: &mut Context<'_>,
    ) -> Poll<Result<()>>
    where
        IO: Transport,
    {
        self.side = Side::Write;
        let flushed = self.poll_flush_once(io, cx);
        self.side = Side::Read;
        if flushed.is_ready() {
            self.timers.unpark(Side::Write);
        }
        flushed
    }

    /// The inline front end's `flush`, `shutdown_write` and `Sink::poll_close`
    /// (`shut`) on a closed connection: the output queued before an error
    /// of the input side is written ([LC-5](crate::semantics#LC-5)), within `linger` of the first
    /// wait (`deadline`, armed only if the transport pushes back), then the
    /// error that closed the connection is returned. `None` while open.
    pub(crate) fn poll_after_close<IO>(
        &mut self,
        io: &mut IO,
        cx: &mut Context<'_>,
        deadline: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
        shut: bool,
    ) -> Option<Poll<Error>>
    where
        IO: Transport,
    {
        let Life::Closed(err) = &self.life else {
            return None;
        };
        let err = err.clone();
        if self.may_linger() && !self.cfg.linger.is_zero() {
            let linger = self.cfg.linger;
            // A half-close queued before the error goes out too.
            let shut = shut || self.output == Output::ShutdownRequested;
            let written = self.poll_linger_with(io, cx, shut);
            if written.is_pending() {
                let deadline = deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(linger)));
                if deadline.as_mut().poll(cx).is_pending() {
                    return Some(Poll::Pending);
                }
                tracing::debug!(
                    ?linger,
                    unwritten = self.wq.len(),
                    "linger expired with output unsent"
                );
            }
        }
        Some(Poll::Ready(err))
    }

    /// The producer's wait named `token` in
    /// [`poll_write_ready`](Self::poll_write_ready) or
    /// [`poll_drained`](Self::poll_drained) was given up.
    pub(crate) fn unpark_producer(&mut self, token: u64) {
        self.marks.unpark(token);
    }

    /// A write-side wait that [`poll_flush_inline`](Self::poll_flush_inline)
    /// left pending ends early (the queue came down to the low watermark).
    /// (Output written by the read side does not end it: the flush waits
    /// on.)
    pub(crate) fn stop_waiting_to_write(&mut self) {
        self.timers.unpark(Side::Write);
    }

    fn poll_flush_once<IO>(&mut self, io: &mut IO, cx: &mut Context<'_>) -> Poll<Result<()>>
    where
        IO: Transport,
    {
        // As in `poll_fill`: one timer handled per poll, then a self-wake.
        let mut timer_handled = false;
        loop {
            if self.poll_write_out(io, cx)?.is_ready() {
                return Poll::Ready(Ok(()));
            }
            if self.wq.has_marker() && !self.queue.is_empty() {
                // Output (or the shutdown) waits for a TLS switch queued
                // behind reads: nobody else runs the queue while the
                // caller awaits this, so the flush does.
                if self.poll_queue(io, cx)?.is_ready() {
                    continue;
                }
            }
            if timer_handled {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            timer_handled = true;
            match ready!(self.poll_timers(cx, Side::Write)) {
                // A read timeout is a read's: told to the first queued read
                // with a waiter, else left for a read side that waits (a
                // `Stream` half behind a read whose caller gave up), else
                // dropped, unless the flush's own output waits on those
                // reads. The flush gets a write timeout, or an idle
                // timeout no queued read took.
                Some((which, e)) => {
                    let taken = which != Timeout::Write && self.fail_first_reader(&e);
                    if !taken && which != Timeout::Read {
                        return Poll::Ready(Err(e));
                    }
                    if !taken
                        && !self.timers.leave_for_read(which)
                        && self.wq.has_marker()
                        && !self.queue.is_empty()
                    {
                        // TO-6: its output waits behind reads that nobody
                        // else drives, so the flush is the caller waiting.
                        return Poll::Ready(Err(e));
                    }
                }
                None => continue,
            }
        }
    }

    // ----- TLS on a live connection -----------------------------------------------------

    /// Why TLS auto-detection cannot run now, if so: with TLS on, or a
    /// switch queued ahead of it (say the handshake of an earlier detection
    /// that timed out), the detection would judge decrypted data, and call
    /// a TLS client plaintext.
    #[cfg(any(feature = "tls", feature = "rustls"))]
    pub(crate) fn autostart_refused(&self) -> Option<Error> {
        if self.is_tls() {
            return Some(Error::invalid_input("TLS is already on: nothing to detect"));
        }
        self.switch_in_progress()
    }

    /// The refusal of a switch asked for after `push_shutdown`, if so: a
    /// STARTTLS or stoptls writes (a handshake, a close_notify) after the
    /// half-close promised to come after the output already queued ([WQ-7](crate::semantics#WQ-7)).
    /// Harmless: nothing can be queued behind it.
    #[cfg(any(feature = "tls", feature = "rustls"))]
    fn switch_after_shutdown(&self) -> Option<Error> {
        (self.output != Output::Open)
            .then(|| Error::invalid_input("a TLS switch after push_shutdown"))
    }

    /// The refusal while a TLS switch is queued (one at a time), if so.
    #[cfg(any(feature = "tls", feature = "rustls"))]
    fn switch_in_progress(&self) -> Option<Error> {
        self.queue
            .iter()
            .any(|e| matches!(e, Entry::Switch(_)))
            .then(|| Error::invalid_input("a TLS switch is already in progress"))
    }

    /// Queues a TLS switch. `front`: it runs before every queued read (a
    /// completion switching now); otherwise after them. The output queued so
    /// far goes out before it (in plaintext for a start, over TLS for a
    /// stop); output queued later waits for it.
    #[cfg(any(feature = "tls", feature = "rustls"))]
    fn push_switch(&mut self, kind: SwitchKind, front: bool) -> Ticket<()> {
        let (done, ticket) = Ticket::channel();
        if let Life::Closed(e) = &self.life {
            let _ = done.send(Err(e.clone()));
            return ticket;
        }
        if let Some(e) = self
            .switch_after_shutdown()
            .or_else(|| self.switch_in_progress())
        {
            let _ = done.send(Err(e));
            return ticket;
        }
        tracing::debug!(
            before = self.wq.len(),
            buffered = self.rbuf.len(),
            "TLS switch queued"
        );
        self.wq.set_marker();
        let entry = Entry::Switch(Switch {
            kind,
            done: Some(done),
        });
        if front {
            self.push_front(entry);
        } else {
            self.queue.push_back(entry);
        }
        self.wake_driver();
        ticket
    }

    /// Queues STARTTLS (see [`push_switch`](Self::push_switch)).
    #[cfg(any(feature = "tls", feature = "rustls"))]
    pub(crate) fn request_starttls(
        &mut self,
        mode: crate::tls::TlsMode,
        front: bool,
    ) -> Ticket<()> {
        // One switch is queued at a time. A refusal changes nothing only
        // while the output queued behind this STARTTLS would go over TLS
        // anyway; behind a queued stoptls it would leave in plaintext, so
        // the connection closes instead (TLS-1). A completion's STARTTLS
        // goes to the front, but its output still waits behind that
        // stoptls's marker: the same holds.
        if !self.is_closed()
            && let Some(e) = self.switch_after_shutdown()
        {
            return Ticket::ready(Err(e));
        }
        let queued = self.queue.iter().find_map(|e| match e {
            Entry::Switch(sw) => Some(matches!(sw.kind, SwitchKind::Stop)),
            Entry::Read(_) => None,
        });
        match queued {
            Some(true) => {
                let e = Error::fatal_because(
                    Error::invalid_input("a stoptls is still queued"),
                    "STARTTLS refused behind a queued stoptls: closed so that nothing meant for TLS leaves in plaintext",
                );
                self.close(e.clone());
                Ticket::ready(Err(e))
            }
            None if self.tls_active => {
                Ticket::ready(Err(Error::invalid_input("TLS is already active")))
            }
            // Behind a queued STARTTLS: refused as in progress, harmlessly.
            _ => self.push_switch(SwitchKind::Start(Some(mode)), front),
        }
    }

    /// Queues stoptls (see [`push_switch`](Self::push_switch)).
    #[cfg(any(feature = "tls", feature = "rustls"))]
    pub(crate) fn request_stoptls(&mut self, front: bool) -> Ticket<()> {
        self.push_switch(SwitchKind::Stop, front)
    }

    /// Drives the switch at the head of the queue: writes the output queued
    /// before it, then starts or stops TLS. `Ready(Ok)` once it is done (and
    /// popped). A failed handshake is fatal `EPROTO`: the connection never
    /// goes on unencrypted.
    #[cfg(any(feature = "tls", feature = "rustls"))]
    fn poll_switch<IO: Transport>(
        &mut self,
        io: &mut IO,
        cx: &mut Context<'_>,
    ) -> Poll<Result<()>> {
        // The output queued before the switch leaves first.
        ready!(self.poll_write_some(io, cx))?;
        if self.unflushed {
            if let Err(e) = ready!(poll_out!(self, io, cx, |c| io.poll_send_flush(c))) {
                return Poll::Ready(Err(self.io_failed(e)));
            }
            self.unflushed = false;
        }
        // Flushes of that output are done, whatever the switch does.
        self.settle_flushes(io, cx)?;
        loop {
            let Some(Entry::Switch(sw)) = self.queue.front_mut() else {
                return Poll::Ready(Ok(()));
            };
            let step = match &mut sw.kind {
                SwitchKind::Start(mode) => {
                    // Everything already read is the peer's handshake.
                    let replay = self.rbuf.split().freeze();
                    let mode = mode.take().expect("a STARTTLS starts once");
                    match io.start_tls(mode, replay.clone()) {
                        Ok(()) => {
                            // The bytes are the handshake's now.
                            if !replay.is_empty() {
                                self.taken = self.taken.wrapping_add(1);
                            }
                            sw.kind = SwitchKind::Handshaking;
                            continue;
                        }
                        Err(e) => {
                            // Refused, nothing changed: the bytes are still
                            // the next read's.
                            self.rbuf.extend_from_slice(&replay);
                            self.input_epoch = self.input_epoch.wrapping_add(1);
                            Err(e)
                        }
                    }
                }
                SwitchKind::Handshaking => {
                    let before = io.activity();
                    let polled = poll_io!(self, cx, |c| io.poll_handshake(c));
                    self.note_transport(io, before);
                    match ready!(polled) {
                        Ok(()) => {
                            tracing::debug!("TLS established");
                            self.tls_active = true;
                            self.peer_cert = io.peer_certificate().map(Vec::into_boxed_slice);
                            // TLS may still owe the peer records (a TLS 1.3
                            // server's session tickets): they leave with the
                            // next write, or with the flush before the
                            // connection waits for input.
                            self.unflushed = true;
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
                SwitchKind::Stop => {
                    let before = io.activity();
                    let polled = poll_io!(self, cx, |c| io.poll_stop_tls(c));
                    self.note_transport(io, before);
                    match ready!(polled) {
                        Ok(()) => {
                            tracing::debug!("close_notify sent; plaintext again");
                            // An end of input seen over TLS was the peer's
                            // close_notify (a TCP end without one is an
                            // error): the end of TLS input, not of the
                            // connection's. Plaintext may follow (TLS-5).
                            // A stop with no TLS on changes nothing.
                            if self.tls_active {
                                self.input = Input::Open;
                            }
                            self.tls_active = false;
                            self.peer_cert = None;
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            let Some(Entry::Switch(sw)) = self.queue.pop_front() else {
                unreachable!("the head was a switch");
            };
            self.switches_run += 1;
            // A switch that failed without changing anything (refused at
            // the start) is its own caller's error (ERR-3), unless it was a
            // STARTTLS on a connection not in TLS: whatever was queued
            // behind it, now or by a handle about to hand it over, was meant
            // for TLS and must not leave in plaintext (TLS-4), so the
            // connection closes before any of it does.
            let refused_start = matches!(sw.kind, SwitchKind::Start(_));
            let step = match step {
                Err(e) if !e.is_fatal() && refused_start && !self.tls_active => {
                    Err(Error::fatal_because(
                        e,
                        "STARTTLS refused on a connection not in TLS: closed so that nothing meant for TLS leaves in plaintext",
                    ))
                }
                step => step,
            };
            // After a fatal failure the marker stays: what was queued
            // behind the switch is neither lingered on nor handed back as
            // plaintext (`Parts::after_switch`).
            if !step.as_ref().is_err_and(Error::is_fatal) {
                self.wq.clear_marker();
            }
            if let Some(done) = sw.done {
                let _ = done.send(step.clone());
            }
            if let Err(e) = &step
                && e.is_fatal()
            {
                self.close(e.clone());
            }
            self.wake_driver();
            return Poll::Ready(step);
        }
    }

    #[cfg(not(any(feature = "tls", feature = "rustls")))]
    fn poll_switch<IO: Transport>(
        &mut self,
        _io: &mut IO,
        _cx: &mut Context<'_>,
    ) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    // ----- the background driver --------------------------------------------------------

    /// One turn of the spawned driver: dispatch, TLS switches, write, read
    /// while a read request waits, timers. Returns `Ready` only once the
    /// connection is closed.
    ///
    /// Autocork off: output is written at the top of every turn, as soon as
    /// the driver runs after a push. On: it is held until the driver would
    /// wait, or until [`CORK_BOUNDARY`] bytes are queued.
    pub(crate) fn poll_drive<IO>(&mut self, io: &mut IO, cx: &mut Context<'_>) -> Poll<()>
    where
        IO: Transport,
    {
        self.register_driver(cx.waker());
        loop {
            // A unit of the task's budget per round: over a transport
            // that always has input (and takes every write), with requests
            // that queue the next one, the driver still yields its thread.
            ready!(tokio::task::coop::poll_proceed(cx)).made_progress();
            let more = self.dispatch();
            if self.is_closed() {
                return Poll::Ready(());
            }
            if more {
                continue;
            }
            if self.head_is_switch() {
                // A TLS switch: nothing else moves until it is done.
                if self.poll_switch(io, cx).is_pending() {
                    ready!(self.wait_for_timers(cx));
                }
                continue;
            }
            if !self.cfg.autocork || self.wq.len() >= CORK_BOUNDARY {
                let _ = self.poll_write_out(io, cx);
                if self.is_closed() {
                    return Poll::Ready(());
                }
            }
            if !self.head_is_read() {
                // Nothing is read while no request waits. About to wait:
                // write what is queued, then the timers.
                let _ = self.poll_write_out(io, cx);
                if self.is_closed() {
                    return Poll::Ready(());
                }
                ready!(self.wait_for_timers(cx));
                continue;
            }
            match self.poll_fill(io, cx) {
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(FillStop::Expired(which, e))) => {
                    self.fail_timer(e, Some(which));
                }
                Poll::Ready(Err(FillStop::Closed(_))) => return Poll::Ready(()),
                Poll::Pending => {
                    // A head whose ticket is dropped wakes the driver, so
                    // the next request runs on the bytes already here.
                    if let Some(Entry::Read(head)) = self.queue.front_mut()
                        && head.poll_abandoned(cx)
                    {
                        continue;
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// The driver is about to wait: run expired timers. `Ready` when one
    /// fired (the turn goes on), `Pending` otherwise.
    fn wait_for_timers(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some((t, e)) = ready!(self.poll_timers(cx, Side::Driver)) {
            self.fail_timer(e, Some(t));
        }
        Poll::Ready(())
    }

    /// After the connection ended cleanly, keep writing what is queued (the
    /// caller bounds this by `linger`). Stops at the first transport error.
    pub(crate) fn poll_linger<IO>(&mut self, io: &mut IO, cx: &mut Context<'_>) -> Poll<()>
    where
        IO: Transport,
    {
        self.poll_linger_with(io, cx, true)
    }

    /// [`poll_linger`](Self::poll_linger), half-closing after it if `shut`.
    fn poll_linger_with<IO>(&mut self, io: &mut IO, cx: &mut Context<'_>, shut: bool) -> Poll<()>
    where
        IO: Transport,
    {
        // Only up to a TLS switch's marker: what was queued for after the
        // switch never goes out in plaintext.
        while self.wq.writable() > 0 {
            match ready!(self.wq.poll_write(io, cx)) {
                Ok(n) if n > 0 => {}
                _ => {
                    // Toward the peer: nothing more is tried.
                    self.output_dropped = true;
                    return Poll::Ready(());
                }
            }
        }
        if ready!(io.poll_send_flush(cx)).is_err() {
            self.output_dropped = true;
        } else if shut && self.output != Output::Shut {
            let _ = ready!(io.poll_send_shutdown(cx));
            self.output = Output::Shut;
        }
        Poll::Ready(())
    }

    /// Everything not yet consumed or written, for `into_parts`: the read
    /// buffer, the output, and the output queued behind a TLS switch that
    /// did not run. Queued requests fail with `Closed`.
    pub(crate) fn take_buffers(&mut self) -> (BytesMut, BytesMut, BytesMut) {
        self.close(Error::closed());
        let (out, after_switch) = self.wq.take_split();
        (std::mem::take(&mut self.rbuf), out, after_switch)
    }
}
