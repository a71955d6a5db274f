//! A reference model of the read-request engine, and a runner that plays
//! one sequence of operations against the real engine and the model and
//! compares them after every step.
//!
//! The model is deliberately naive: the input is one `Vec<u8>`, the read
//! position one index, the queue a `VecDeque` of request descriptions, and
//! each decoder a few lines over a byte slice. What it pins down, for both
//! front ends (the inline `QueuedFramed` driven by `wait`, and a spawned
//! `Handle` whose tickets resolve on their own):
//!
//! * requests complete strictly in queue order; a completion's unshifted
//!   follow-up runs next;
//! * a cancelled (dropped) request consumed nothing (the modelled decoders
//!   consume only with a frame; one that consumes part of a frame first runs
//!   on to its end when cancelled, which tests/adversary.rs pins);
//! * a non-fatal error (`EBADMSG`, `ETIMEDOUT`) fails only the head request;
//! * a fatal error (end of input inside a request = `EPIPE`, an I/O error, a
//!   decoder's fatal error) fails every pending ticket with that error, and
//!   later requests fail at once;
//! * a panic in a user callback (decoder, completion, `on_timeout` hook)
//!   resolves every ticket with a fatal error whose text says "panicked",
//!   and leaves the handle destroyed;
//! * the engine reads only while a request waits for more input: the bytes
//!   it has taken from the transport are exactly those the model needed, and
//!   its read buffer is exactly the model's unconsumed input;
//! * output leaves in push order, goes out as far as the peer reads
//!   (spawned), and what is not written is handed back at the end.
//!
//! How each front end is driven, as the model sees it: a spawned driver
//! runs after every step until it has nothing left to do (a fixed number of
//! scheduler rounds; a ticket still unresolved after them counts as a
//! hang); the inline handle runs only inside `wait`, which drives every
//! request it can, not just the one waited for. The peer's chunks are
//! smaller than any read size, so the engine takes one whole chunk per
//! read, and only while the head request needs more input.
//!
//! Time is tokio's paused clock, moved only by [`Op::Advance`]; the read
//! timeout (`rtimeout`) is the timer modelled. Not modelled: STARTTLS,
//! `rbuf_max`/`wbuf_max`, the idle and write timeouts, watermarks.
#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, Once};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use anyframe::codecs::{ChunkCodec, Line, LineCodec, RawJsonCodec};
use anyframe::{Error, ErrorKind, FnDecoder, Handle, QueuedFramed, Requests, Ticket, Timeout};
use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

use super::mock_io::{self, MockIo, Peer};

/// The text every deliberate panic carries (and the panic hook hides).
pub const PANIC_MARK: &str = "model: deliberate panic";

// ----- operations ----------------------------------------------------------

/// What a request decodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Req {
    /// `LineCodec`: up to `\n` (the input has no `\r`).
    Line,
    /// `ChunkCodec`: exactly this many bytes (at least 1).
    Chunk(usize),
    /// `RawJsonCodec`: one JSON text (the input has no whitespace then).
    Json,
    /// An `FnDecoder` closure taking exactly this many bytes (at least 1).
    Take(usize),
    /// An `FnDecoder` that fails with a non-fatal `EBADMSG`, consuming nothing.
    Bad,
    /// An `FnDecoder` that fails with a fatal `EBADMSG`.
    Fatal,
    /// An `FnDecoder` that panics when called.
    Panic,
}

/// What happens when the request's frame is decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Then {
    /// `push_read` / `unshift_read`: the ticket gets the frame.
    Value,
    /// `push_read_with` with a completion that only maps the frame.
    Map,
    /// A completion that unshifts this follow-up request.
    Unshift(Req),
    /// A completion that panics.
    Panic,
}

/// One step of a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Queue a read at the back (or, `front`, at the front).
    Push { req: Req, then: Then, front: bool },
    /// Drop the ticket at this index (modulo the live tickets).
    Cancel(usize),
    /// Inline: `wait` on the ticket at this index (dropping it if it cannot
    /// resolve now). Spawned: one more settling round.
    Wait(usize),
    /// The peer sends this chunk.
    Send(Vec<u8>),
    /// The peer closes (end of input after what it sent).
    Eof,
    /// The connection fails (an I/O error after what was sent).
    IoError,
    /// Paused time moves on this many milliseconds.
    Advance(u64),
    /// `push_bytes` these bytes.
    Write(Vec<u8>),
    /// `push_write` of this line (no `\n` in it) with `LineCodec`.
    WriteLine(Vec<u8>),
    /// `flush()`, polled until it would wait for the peer.
    Flush,
    /// `destroy()`: every pending request fails with `Closed`.
    Destroy,
    /// Inline: `into_parts` then `from_parts` (default options, no hook);
    /// pending requests fail with `Closed`, no byte is lost. Spawned: none.
    Rebuild,
    /// The peer reads this many more bytes.
    PeerReads(usize),
}

/// What an `on_timeout` hook does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// No hook: an expiry fails the waiting read with `ETIMEDOUT`.
    None,
    /// A hook that does nothing.
    Noop,
    /// A hook that queues the line `t` for writing through `Requests`.
    Write,
    /// A hook that panics.
    Panic,
}

/// One generated case.
#[derive(Debug, Clone)]
pub struct Case {
    /// Through a spawned `Handle` rather than the inline `QueuedFramed`.
    pub spawned: bool,
    /// `rtimeout` in milliseconds (0 = off) and the hook.
    pub rtimeout_ms: u64,
    pub hook: Hook,
    pub ops: Vec<Op>,
}

// ----- the model -------------------------------------------------------------

/// An error as the model sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MErr {
    pub kind: ErrorKind,
    pub fatal: bool,
    /// A user callback panicked (the kind is then the engine's choice).
    pub panicked: bool,
}

impl MErr {
    fn new(kind: ErrorKind, fatal: bool) -> MErr {
        MErr {
            kind,
            fatal,
            panicked: false,
        }
    }

    fn panicked() -> MErr {
        MErr {
            kind: ErrorKind::Closed,
            fatal: true,
            panicked: true,
        }
    }

    fn matches(&self, e: &Error) -> bool {
        if self.panicked {
            e.is_fatal() && e.to_string().contains("panicked")
        } else {
            e.kind() == self.kind && e.is_fatal() == self.fatal
        }
    }
}

type Outcome = Result<Vec<u8>, MErr>;

#[derive(Debug, Clone)]
struct MReq {
    id: usize,
    req: Req,
    then: Then,
    /// The id reserved for the follow-up of `Then::Unshift`.
    follow: Option<usize>,
    /// It has looked at input without finishing its frame: an unshift
    /// goes right after it, not before (its decoder may hold a scan
    /// position into those bytes).
    started: bool,
}

/// What one decode step of the head request gives.
enum Step {
    Frame(usize, Vec<u8>),
    More,
    Fail(MErr),
    Panic,
}

/// The reference model.
#[derive(Debug, Default)]
pub struct Model {
    /// Every byte the peer sent, in order.
    input: Vec<u8>,
    /// Sizes of the chunks sent and not yet read by the engine.
    chunks: VecDeque<usize>,
    /// Bytes the engine has read (`input[..pulled]`).
    pub pulled: usize,
    /// Bytes consumed by requests.
    pub pos: usize,
    /// How the input ends, once the chunks are read.
    end: Option<ErrorKind>,
    queue: VecDeque<MReq>,
    /// Per ticket id: its outcome, once resolved.
    results: Vec<Option<Outcome>>,
    /// Per ticket id: whether the request exists (a follow-up exists once
    /// its parent's completion ran).
    created: Vec<bool>,
    pub dead: Option<MErr>,
    spawned: bool,
    rtimeout: Duration,
    hook: Option<Hook>,
    now: Duration,
    stamp: Duration,
    /// Output pushed, and how much the peer has agreed to read.
    pub pushed: Vec<u8>,
    pub budget: usize,
    /// The connection has a linger period (it starts with none; a rebuild
    /// from parts has the default).
    pub lingers: bool,
}

fn json_value(b: &[u8], i: usize) -> Result<usize, bool> {
    // Err(true): incomplete; Err(false): invalid.
    let at = |j: usize| b.get(j).copied().ok_or(true);
    match at(i)? {
        b'{' => {
            let mut j = i + 1;
            if at(j)? == b'}' {
                return Ok(j + 1);
            }
            loop {
                if at(j)? != b'"' {
                    return Err(false);
                }
                j = json_value(b, j)?;
                if at(j)? != b':' {
                    return Err(false);
                }
                j = json_value(b, j + 1)?;
                match at(j)? {
                    b',' => j += 1,
                    b'}' => return Ok(j + 1),
                    _ => return Err(false),
                }
            }
        }
        b'[' => {
            let mut j = i + 1;
            if at(j)? == b']' {
                return Ok(j + 1);
            }
            loop {
                j = json_value(b, j)?;
                match at(j)? {
                    b',' => j += 1,
                    b']' => return Ok(j + 1),
                    _ => return Err(false),
                }
            }
        }
        b'"' => {
            let mut j = i + 1;
            loop {
                match at(j)? {
                    b'"' => return Ok(j + 1),
                    c if c < 0x20 || c == b'\\' || c >= 0x80 => return Err(false),
                    _ => j += 1,
                }
            }
        }
        c => {
            let lit: &[u8] = match c {
                b't' => b"true",
                b'f' => b"false",
                b'n' => b"null",
                _ => return Err(false),
            };
            for (k, want) in lit.iter().enumerate() {
                if at(i + k)? != *want {
                    return Err(false);
                }
            }
            Ok(i + lit.len())
        }
    }
}

/// One decode step of `req` on `buf` (end of input is the caller's).
fn decode(req: &Req, buf: &[u8]) -> Step {
    match req {
        Req::Line => match buf.iter().position(|&b| b == b'\n') {
            Some(i) => Step::Frame(i + 1, buf[..i].to_vec()),
            None => Step::More,
        },
        Req::Chunk(n) | Req::Take(n) => {
            if buf.len() >= *n {
                Step::Frame(*n, buf[..*n].to_vec())
            } else {
                Step::More
            }
        }
        Req::Json => match json_value(buf, 0) {
            Ok(n) => Step::Frame(n, buf[..n].to_vec()),
            Err(true) => Step::More,
            Err(false) => Step::Fail(MErr::new(ErrorKind::BadMessage, false)),
        },
        Req::Bad => Step::Fail(MErr::new(ErrorKind::BadMessage, false)),
        Req::Fatal => Step::Fail(MErr::new(ErrorKind::BadMessage, true)),
        Req::Panic => Step::Panic,
    }
}

impl Model {
    fn new(case: &Case) -> Model {
        Model {
            spawned: case.spawned,
            rtimeout: Duration::from_millis(case.rtimeout_ms),
            hook: (case.rtimeout_ms > 0).then_some(case.hook),
            ..Model::default()
        }
    }

    fn alloc(&mut self, created: bool) -> usize {
        self.results.push(None);
        self.created.push(created);
        self.results.len() - 1
    }

    /// Queues a request; returns its id and the id reserved for its
    /// follow-up. On a destroyed handle the ticket fails at once.
    fn push(&mut self, req: &Req, then: &Then, front: bool) -> (usize, Option<usize>) {
        let id = self.alloc(true);
        let follow = matches!(then, Then::Unshift(_)).then(|| self.alloc(false));
        if let Some(e) = &self.dead {
            self.results[id] = Some(Err(e.clone()));
            return (id, follow);
        }
        let r = MReq {
            id,
            req: req.clone(),
            then: then.clone(),
            follow,
            started: false,
        };
        if front {
            if self.queue.front().is_some_and(|h| h.started) {
                self.queue.insert(1, r);
            } else {
                self.queue.push_front(r);
            }
        } else {
            self.queue.push_back(r);
        }
        (id, follow)
    }

    fn cancel(&mut self, id: usize) {
        self.queue.retain(|r| r.id != id);
    }

    fn die(&mut self, e: MErr) {
        if self.dead.is_some() {
            return;
        }
        for r in self.queue.drain(..) {
            self.results[r.id] = Some(Err(e.clone()));
        }
        self.dead = Some(e);
    }

    /// Runs the queue as far as the input allows, reading chunk by chunk
    /// only while the head request needs more. Returns when the head waits
    /// for input that has not been sent (or the queue is empty).
    fn dispatch(&mut self) {
        while self.dead.is_none() {
            let Some(head) = self.queue.front() else {
                return;
            };
            let seen = self.pulled > self.pos;
            match decode(&head.req, &self.input[self.pos..self.pulled]) {
                Step::More => {
                    if seen && let Some(h) = self.queue.front_mut() {
                        h.started = true;
                    }
                    if let Some(n) = self.chunks.pop_front() {
                        self.pulled += n;
                        self.stamp = self.now;
                        continue;
                    }
                    match self.end {
                        Some(ErrorKind::BrokenPipe) => {
                            self.die(MErr::new(ErrorKind::BrokenPipe, true))
                        }
                        Some(kind) => self.die(MErr::new(kind, true)),
                        None => return,
                    }
                }
                Step::Frame(n, frame) => {
                    let r = self.queue.pop_front().expect("head");
                    self.pos += n;
                    match r.then {
                        Then::Panic => {
                            self.results[r.id] = Some(Err(MErr::panicked()));
                            self.die(MErr::panicked());
                        }
                        Then::Unshift(next) => {
                            self.results[r.id] = Some(Ok(frame));
                            let id = r.follow.expect("reserved");
                            self.created[id] = true;
                            self.queue.push_front(MReq {
                                id,
                                req: next,
                                then: Then::Value,
                                follow: None,
                                started: false,
                            });
                        }
                        Then::Value | Then::Map => self.results[r.id] = Some(Ok(frame)),
                    }
                }
                Step::Fail(e) => {
                    let r = self.queue.pop_front().expect("head");
                    self.results[r.id] = Some(Err(e.clone()));
                    if e.fatal {
                        self.die(e);
                    }
                }
                Step::Panic => {
                    let r = self.queue.pop_front().expect("head");
                    self.results[r.id] = Some(Err(MErr::panicked()));
                    self.die(MErr::panicked());
                }
            }
        }
    }

    /// The read timeout, if it has expired: the hook runs, or the waiting
    /// read (if any) fails with a non-fatal `ETIMEDOUT`. Fires once; the
    /// next expiry is a full period later.
    fn fire_timer(&mut self) -> bool {
        let Some(hook) = self.hook else { return false };
        if self.dead.is_some() || self.now < self.stamp + self.rtimeout {
            return false;
        }
        self.stamp = self.now;
        match hook {
            Hook::None => {
                if let Some(r) = self.queue.pop_front() {
                    self.results[r.id] = Some(Err(MErr::new(ErrorKind::TimedOut, false)));
                }
            }
            Hook::Noop => {}
            Hook::Write => self.pushed.extend_from_slice(b"t\n"),
            Hook::Panic => self.die(MErr::panicked()),
        }
        true
    }

    /// What a spawned driver does after every step: everything it can.
    fn settle_spawned(&mut self) {
        loop {
            self.dispatch();
            if !self.fire_timer() {
                break;
            }
        }
    }

    /// What `wait` does on the inline front end: drive the queue; when the
    /// head waits for input, check the timer.
    fn settle_inline(&mut self) {
        loop {
            self.dispatch();
            if self.queue.is_empty() || !self.fire_timer() {
                break;
            }
        }
    }

    /// An inline flush on the closed connection still writes: it died of
    /// an error of its input side (end of input, a fatal bad message) and
    /// has a linger period (LC-3, LC-5).
    fn flush_writes_after_death(&self) -> bool {
        !self.spawned
            && self.lingers
            && self.dead.as_ref().is_some_and(|d| {
                !d.panicked && matches!(d.kind, ErrorKind::BrokenPipe | ErrorKind::BadMessage)
            })
    }

    fn written_now(&self) -> usize {
        self.pushed.len().min(self.budget)
    }
}

// ----- requests on the engine -----------------------------------------------

/// A ticket of any of the frame types used here.
pub enum AnyTicket {
    Line(Ticket<Line>),
    Bytes(Ticket<Bytes>),
    Out(Ticket<Vec<u8>>),
}

impl AnyTicket {
    fn poll_any(&mut self, cx: &mut Context<'_>) -> Poll<anyframe::Result<Vec<u8>>> {
        match self {
            AnyTicket::Line(t) => Pin::new(t).poll(cx).map(|r| r.map(|l| l.line().to_vec())),
            AnyTicket::Bytes(t) => Pin::new(t).poll(cx).map(|r| r.map(|b| b.to_vec())),
            AnyTicket::Out(t) => Pin::new(t).poll(cx),
        }
    }

    fn try_now(&mut self) -> Option<anyframe::Result<Vec<u8>>> {
        match self.poll_any(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(r) => Some(r),
            Poll::Pending => None,
        }
    }
}

type Slot = Arc<Mutex<Option<AnyTicket>>>;

/// Where requests are queued: the inline handle, a `Handle`, or the queue
/// seen from a completion.
pub trait Queue {
    fn read<D>(&mut self, decoder: D, front: bool) -> Ticket<D::Item>
    where
        D: Decoder + Send + 'static,
        D::Item: Send + 'static,
        D::Error: Into<Error>;

    fn read_with<D, F, R>(&mut self, decoder: D, then: F, front: bool) -> Ticket<R>
    where
        D: Decoder + Send + 'static,
        D::Item: Send + 'static,
        D::Error: Into<Error>,
        F: FnOnce(D::Item, &mut Requests<'_>) -> anyframe::Result<R> + Send + 'static,
        R: Send + 'static;
}

macro_rules! impl_queue {
    ($($t:ty),*) => {$(
        impl Queue for $t {
            fn read<D>(&mut self, decoder: D, front: bool) -> Ticket<D::Item>
            where
                D: Decoder + Send + 'static,
                D::Item: Send + 'static,
                D::Error: Into<Error>,
            {
                if front { self.unshift_read(decoder) } else { self.push_read(decoder) }
            }

            fn read_with<D, F, R>(&mut self, decoder: D, then: F, front: bool) -> Ticket<R>
            where
                D: Decoder + Send + 'static,
                D::Item: Send + 'static,
                D::Error: Into<Error>,
                F: FnOnce(D::Item, &mut Requests<'_>) -> anyframe::Result<R> + Send + 'static,
                R: Send + 'static,
            {
                if front {
                    self.unshift_read_with(decoder, then)
                } else {
                    self.push_read_with(decoder, then)
                }
            }
        }
    )*};
}
impl_queue!(QueuedFramed<MockIo>, Handle, Requests<'_>);

type BoxFn = Box<dyn FnMut(&mut BytesMut) -> anyframe::Result<Option<Bytes>> + Send>;

fn fn_decoder(req: &Req) -> FnDecoder<BoxFn> {
    let f: BoxFn = match *req {
        Req::Take(n) => Box::new(move |buf| Ok((buf.len() >= n).then(|| buf.split_to(n).freeze()))),
        Req::Bad => Box::new(|_| Err(Error::custom(ErrorKind::BadMessage, false, "model: bad"))),
        Req::Fatal => Box::new(|_| Err(Error::custom(ErrorKind::BadMessage, true, "model: fatal"))),
        _ => Box::new(|_| panic!("{PANIC_MARK} in a decoder")),
    };
    FnDecoder::new(f)
}

/// The completion for `then` (all but `Then::Value`).
fn completion<T: 'static>(
    then: Then,
    slot: Option<Slot>,
    map: fn(T) -> Vec<u8>,
) -> impl FnOnce(T, &mut Requests<'_>) -> anyframe::Result<Vec<u8>> + Send + 'static {
    move |item, q| {
        match then {
            Then::Unshift(next) => {
                let t = enqueue(q, &next, &Then::Value, true, None);
                *slot.expect("a slot").lock().unwrap() = Some(t);
            }
            Then::Panic => panic!("{PANIC_MARK} in a completion"),
            Then::Value | Then::Map => {}
        }
        Ok(map(item))
    }
}

fn enqueue<Q: Queue>(
    q: &mut Q,
    req: &Req,
    then: &Then,
    front: bool,
    slot: Option<Slot>,
) -> AnyTicket {
    if *then == Then::Value {
        return match req {
            Req::Line => AnyTicket::Line(q.read(LineCodec::new(), front)),
            Req::Chunk(n) => AnyTicket::Bytes(q.read(ChunkCodec::new(*n), front)),
            Req::Json => AnyTicket::Bytes(q.read(RawJsonCodec::new(), front)),
            _ => AnyTicket::Bytes(q.read(fn_decoder(req), front)),
        };
    }
    let then = then.clone();
    AnyTicket::Out(match req {
        Req::Line => q.read_with(
            LineCodec::new(),
            completion(then, slot, |l: Line| l.line().to_vec()),
            front,
        ),
        Req::Chunk(n) => q.read_with(
            ChunkCodec::new(*n),
            completion(then, slot, |b: Bytes| b.to_vec()),
            front,
        ),
        Req::Json => q.read_with(
            RawJsonCodec::new(),
            completion(then, slot, |b: Bytes| b.to_vec()),
            front,
        ),
        _ => q.read_with(
            fn_decoder(req),
            completion(then, slot, |b: Bytes| b.to_vec()),
            front,
        ),
    })
}

// ----- the runner --------------------------------------------------------------

/// Hides the deliberate panics (thousands per run) from the test output;
/// every other panic still goes to the previous hook.
pub fn quiet_deliberate_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            if !msg.contains(PANIC_MARK) {
                prev(info);
            }
        }));
    });
}

enum Front {
    Inline(Box<QueuedFramed<MockIo>>),
    Spawned(Handle, Option<anyframe::Driver<MockIo>>),
}

struct Runner {
    model: Model,
    peer: Peer,
    front: Front,
    /// Tickets not yet resolved, by model id.
    live: Vec<(usize, AnyTicket)>,
    /// Follow-up tickets a completion will leave, by model id.
    slots: Vec<(usize, Slot)>,
}

/// How often the spawned driver gets to run after each step. A handful of
/// rounds covers every chain of wake-ups here; a driver that has not
/// finished by then counts as hanging.
const SETTLE_ROUNDS: usize = 12;

async fn settle_rounds() {
    for _ in 0..SETTLE_ROUNDS {
        tokio::task::yield_now().await;
    }
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

impl Runner {
    fn is_closed(&self) -> bool {
        match &self.front {
            Front::Inline(c) => c.is_closed(),
            Front::Spawned(h, _) => h.is_closed(),
        }
    }

    fn read_buffer(&self) -> Vec<u8> {
        match &self.front {
            Front::Inline(c) => c.read_buffer().to_vec(),
            Front::Spawned(h, _) => h.with_read_buffer(<[u8]>::to_vec),
        }
    }

    fn push(&mut self, req: &Req, then: &Then, front: bool) {
        let (id, follow) = self.model.push(req, then, front);
        let slot = follow.map(|f| {
            let s: Slot = Arc::new(Mutex::new(None));
            self.slots.push((f, s.clone()));
            s
        });
        let t = match &mut self.front {
            Front::Inline(c) => enqueue(&mut **c, req, then, front, slot),
            Front::Spawned(h, _) => enqueue(h, req, then, front, slot),
        };
        self.live.push((id, t));
    }

    /// Compares every observable piece of state with the model.
    fn check(&mut self) -> Result<(), String> {
        let m = &self.model;
        // Follow-ups appear exactly when their parent's completion ran.
        let mut i = 0;
        while i < self.slots.len() {
            let (id, slot) = &self.slots[i];
            let got = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            match (m.created[*id], got) {
                (true, Some(t)) => {
                    self.live.push((*id, t));
                    self.slots.swap_remove(i);
                }
                (true, None) => {
                    return Err(format!("follow-up {id}: the completion did not queue it"));
                }
                (false, Some(_)) => {
                    return Err(format!(
                        "follow-up {id} queued, the model has no completion"
                    ));
                }
                (false, None) => i += 1,
            }
        }
        // Every ticket resolved exactly when and as the model says.
        let mut i = 0;
        while i < self.live.len() {
            let id = self.live[i].0;
            let got = self.live[i].1.try_now();
            match (&m.results[id], got) {
                (None, None) => i += 1,
                (Some(want), Some(got)) => {
                    let same = match (want, &got) {
                        (Ok(a), Ok(b)) => a == b,
                        (Err(a), Err(b)) => a.matches(b),
                        _ => false,
                    };
                    ensure!(same, "ticket {id}: engine {got:?}, model {want:?}");
                    self.live.swap_remove(i);
                }
                (Some(want), None) => {
                    return Err(format!("ticket {id} unresolved (hangs), model {want:?}"));
                }
                (None, Some(got)) => {
                    return Err(format!(
                        "ticket {id} resolved to {got:?}, model: still waiting"
                    ));
                }
            }
        }
        ensure!(
            self.is_closed() == m.dead.is_some(),
            "is_closed() {} but the model's fatal error is {:?}",
            self.is_closed(),
            m.dead
        );
        ensure!(
            self.peer.pulled() == m.pulled,
            "engine read {} bytes, the model needed {} (read while no request waits?)",
            self.peer.pulled(),
            m.pulled
        );
        // A spawned driver that has ended hands the read buffer to the
        // `Driver` future (checked at the end).
        let rbuf = self.read_buffer();
        ensure!(
            (m.spawned && m.dead.is_some()) || rbuf == m.input[m.pos..m.pulled],
            "read buffer {:?}, model {:?}",
            String::from_utf8_lossy(&rbuf),
            String::from_utf8_lossy(&m.input[m.pos..m.pulled])
        );
        let written = self.peer.written();
        ensure!(
            m.pushed.starts_with(&written),
            "written {written:?} is not a prefix of pushed {:?}",
            m.pushed
        );
        if m.spawned && m.dead.is_none() {
            ensure!(
                written.len() == m.written_now(),
                "written {} bytes, the peer would take {}",
                written.len(),
                m.written_now()
            );
        }
        Ok(())
    }

    async fn apply(&mut self, op: &Op) -> Result<(), String> {
        match op {
            Op::Push { req, then, front } => self.push(req, then, *front),
            Op::Cancel(i) => {
                if !self.live.is_empty() {
                    let (id, t) = self.live.swap_remove(i % self.live.len());
                    drop(t);
                    self.model.cancel(id);
                }
            }
            Op::Wait(i) => {
                if let Front::Inline(conn) = &mut self.front
                    && !self.live.is_empty()
                {
                    let (id, t) = self.live.swap_remove(i % self.live.len());
                    let got = wait_bounded(conn, t);
                    self.model.settle_inline();
                    match got {
                        Waited::Done(got) => {
                            let same = match (&self.model.results[id], &got) {
                                (Some(Ok(a)), Ok(b)) => a == b,
                                (Some(Err(a)), Err(b)) => a.matches(b),
                                _ => false,
                            };
                            ensure!(
                                same,
                                "wait on ticket {id}: engine {got:?}, model {:?}",
                                self.model.results[id]
                            );
                        }
                        Waited::Pending => {
                            // The ticket was dropped with the future.
                            ensure!(
                                self.model.results[id].is_none(),
                                "wait on ticket {id} did not resolve; model {:?}",
                                self.model.results[id]
                            );
                            self.model.cancel(id);
                        }
                        Waited::Panicked => {
                            ensure!(
                                self.model.dead.as_ref().is_some_and(|e| e.panicked),
                                "wait panicked; the model has no panic"
                            );
                        }
                    }
                }
            }
            Op::Send(bytes) => {
                if self.model.end.is_none() && !bytes.is_empty() {
                    self.model.input.extend_from_slice(bytes);
                    self.model.chunks.push_back(bytes.len());
                }
                self.peer.send(bytes);
            }
            Op::Eof => {
                self.model.end.get_or_insert(ErrorKind::BrokenPipe);
                self.peer.close();
            }
            Op::IoError => {
                self.model.end.get_or_insert(ErrorKind::Io);
                self.peer.fail();
            }
            Op::Advance(ms) => {
                self.model.now += Duration::from_millis(*ms);
                tokio::time::advance(Duration::from_millis(*ms)).await;
            }
            Op::Write(_) | Op::WriteLine(_) => {
                let (r, queued) = match (op, &mut self.front) {
                    (Op::Write(b), Front::Inline(c)) => (c.push_bytes(b.clone()), b.clone()),
                    (Op::Write(b), Front::Spawned(h, _)) => (h.push_bytes(b.clone()), b.clone()),
                    (_, front) => {
                        let Op::WriteLine(b) = op else { unreachable!() };
                        let r = match front {
                            Front::Inline(c) => c.push_write(LineCodec::new(), &b[..]),
                            Front::Spawned(h, _) => h.push_write(LineCodec::new(), &b[..]),
                        };
                        (r, [&b[..], b"\n"].concat())
                    }
                };
                match (&self.model.dead, r) {
                    (None, Ok(())) => self.model.pushed.extend_from_slice(&queued),
                    (Some(want), Err(e)) => {
                        ensure!(
                            want.matches(&e),
                            "push on a dead handle: {e}, model {want:?}"
                        )
                    }
                    (want, r) => {
                        return Err(format!("push_bytes: {r:?}, model's fatal error {want:?}"));
                    }
                }
            }
            Op::PeerReads(n) => {
                self.model.budget += n;
                self.peer.accept(*n);
            }
            Op::Destroy => {
                match &mut self.front {
                    Front::Inline(c) => c.destroy(),
                    Front::Spawned(h, _) => h.destroy(),
                }
                self.model.die(MErr::new(ErrorKind::Closed, true));
                // An inline connection's output goes with it, even after
                // an earlier error.
                self.model.lingers = false;
            }
            Op::Rebuild => {
                if let Front::Inline(_) = self.front {
                    let placeholder = Front::Inline(Box::new(QueuedFramed::new(mock_io::pair().0)));
                    let Front::Inline(conn) = std::mem::replace(&mut self.front, placeholder)
                    else {
                        unreachable!()
                    };
                    let parts = conn.into_parts();
                    let m = &mut self.model;
                    ensure!(
                        parts.read_buf[..] == m.input[m.pos..m.pulled],
                        "into_parts: unread bytes {:?}, model {:?}",
                        String::from_utf8_lossy(&parts.read_buf),
                        String::from_utf8_lossy(&m.input[m.pos..m.pulled])
                    );
                    let mut out = self.peer.written();
                    out.extend_from_slice(&parts.write_buf);
                    ensure!(
                        out == m.pushed || (m.dead.is_some() && m.pushed.starts_with(&out)),
                        "into_parts: written + unwritten {out:?}, pushed {:?}",
                        m.pushed
                    );
                    m.pushed = out;
                    m.die(MErr::new(ErrorKind::Closed, true));
                    m.dead = None;
                    m.hook = None;
                    m.lingers = true;
                    self.front = Front::Inline(Box::new(QueuedFramed::from_parts(parts)));
                }
            }
            Op::Flush => {
                let mut hook_panicked = false;
                let got = match &mut self.front {
                    Front::Inline(c) => {
                        // A flush the peer holds up runs the timers: a hook
                        // that panics closes the connection and the panic
                        // comes out of the flush.
                        match catch_unwind(AssertUnwindSafe(|| poll_a_few(pin!(c.flush()), 3))) {
                            Ok(got) => got,
                            Err(_) => {
                                hook_panicked = true;
                                None
                            }
                        }
                    }
                    Front::Spawned(h, _) => {
                        let mut fut = pin!(h.flush());
                        // Register the waiter, let the driver write, look again.
                        let first = poll_a_few(fut.as_mut(), 1);
                        settle_rounds().await;
                        first.or_else(|| poll_a_few(fut.as_mut(), 1))
                    }
                };
                // An inline flush the peer holds up runs the timers (a read
                // timeout goes to the waiting read, or the hook runs).
                if matches!(self.front, Front::Inline(_))
                    && self.model.dead.is_none()
                    && self.model.pushed.len() > self.model.budget
                {
                    self.model.fire_timer();
                }
                let m = &self.model;
                let died_of_panic = m.dead.as_ref().is_some_and(|d| d.panicked);
                ensure!(
                    hook_panicked
                        == (died_of_panic
                            && matches!(self.front, Front::Inline(_))
                            && got.is_none()),
                    "flush: a hook's panic {} out of the flush, model {:?}",
                    if hook_panicked {
                        "came"
                    } else {
                        "did not come"
                    },
                    m.dead
                );
                if hook_panicked {
                    return Ok(());
                }
                let writes = m.dead.is_none() || m.flush_writes_after_death();
                match (&m.dead, got) {
                    (_, None) if writes => ensure!(
                        m.pushed.len() > m.budget,
                        "flush waits with everything written"
                    ),
                    (Some(want), Some(Err(e))) if writes => {
                        ensure!(want.matches(&e), "flush: {e}, model {want:?}");
                        ensure!(
                            m.pushed.len() <= m.budget,
                            "flush after the input-side error {want:?} done with {} of {} bytes written",
                            m.budget,
                            m.pushed.len()
                        );
                    }
                    (None, Some(Ok(()))) => ensure!(
                        m.pushed.len() <= m.budget,
                        "flush done with {} of {} bytes written",
                        m.budget,
                        m.pushed.len()
                    ),
                    (Some(want), Some(Err(e))) => {
                        ensure!(want.matches(&e), "flush: {e}, model {want:?}")
                    }
                    (want, got) => {
                        return Err(format!("flush: {got:?}, model's fatal error {want:?}"));
                    }
                }
                if matches!(self.front, Front::Inline(_)) && writes {
                    let written = self.peer.written().len();
                    ensure!(
                        written == m.written_now(),
                        "after flush: {written} bytes written, the peer takes {}",
                        m.written_now()
                    );
                }
            }
        }
        if let Front::Spawned(..) = self.front {
            settle_rounds().await;
            self.model.settle_spawned();
        }
        Ok(())
    }

    /// The end: take the connection apart and account for every byte.
    async fn finish(self) -> Result<(), String> {
        let Runner {
            model: mut m,
            peer,
            front,
            mut live,
            ..
        } = self;
        let closed = m.dead.clone().unwrap_or(MErr::new(ErrorKind::Closed, true));
        let parts = match front {
            Front::Inline(conn) => Some(conn.into_parts()),
            Front::Spawned(h, driver) => {
                h.detach();
                drop(h);
                let mut driver = driver.expect("driver");
                let mut out = None;
                for _ in 0..SETTLE_ROUNDS {
                    let poll = catch_unwind(AssertUnwindSafe(|| {
                        Pin::new(&mut driver).poll(&mut Context::from_waker(Waker::noop()))
                    }));
                    match poll {
                        Ok(Poll::Pending) => tokio::task::yield_now().await,
                        Ok(Poll::Ready(r)) => {
                            out = Some(r);
                            break;
                        }
                        Err(_) => {
                            out = Some(Err(Error::custom(
                                ErrorKind::Closed,
                                true,
                                "driver panicked",
                            )));
                            break;
                        }
                    }
                }
                match out {
                    None => return Err("the driver did not finish after detach".into()),
                    Some(Ok(parts)) => Some(parts),
                    Some(Err(e)) => {
                        // Only a panic may take the parts with it.
                        ensure!(
                            m.dead.as_ref().is_some_and(|d| d.panicked),
                            "driver ended with {e}, model's fatal error {:?}",
                            m.dead
                        );
                        None
                    }
                }
            }
        };
        for r in m.results.iter_mut().filter(|r| r.is_none()) {
            *r = Some(Err(closed.clone()));
        }
        // Tickets resolve: with the fatal error, or Closed.
        for (id, mut t) in live.drain(..) {
            let got = t.try_now();
            ensure!(
                got.as_ref().is_some_and(|g| match g {
                    Err(e) => closed.matches(e) || e.kind() == ErrorKind::Closed,
                    Ok(_) => false,
                }),
                "ticket {id} at the end: {got:?}, model {closed:?}"
            );
        }
        if let Some(parts) = parts {
            ensure!(
                parts.read_buf[..] == m.input[m.pos..m.pulled],
                "unread bytes handed back {:?}, model {:?}",
                String::from_utf8_lossy(&parts.read_buf),
                String::from_utf8_lossy(&m.input[m.pos..m.pulled])
            );
            let mut out = peer.written();
            out.extend_from_slice(&parts.write_buf);
            if m.dead.is_none() {
                ensure!(
                    out == m.pushed,
                    "written + unwritten {out:?}, pushed {:?}",
                    m.pushed
                );
            } else {
                ensure!(
                    m.pushed.starts_with(&out),
                    "written + unwritten {out:?}, pushed {:?}",
                    m.pushed
                );
            }
        }
        Ok(())
    }
}

/// Polls `fut` up to `n` times (no waker: the mock never wakes spuriously,
/// so one poll does what there is to do); `None` if it is still pending.
fn poll_a_few<F: Future>(mut fut: Pin<&mut F>, n: usize) -> Option<F::Output> {
    (0..n).find_map(
        |_| match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(r) => Some(r),
            Poll::Pending => None,
        },
    )
}

enum Waited {
    Done(anyframe::Result<Vec<u8>>),
    Pending,
    Panicked,
}

/// Polls `conn.wait(ticket)` a few times (the mock never wakes spuriously,
/// so one poll does all there is to do); a panic inside is caught.
fn wait_bounded(conn: &mut QueuedFramed<MockIo>, t: AnyTicket) -> Waited {
    let fut = async move {
        match t {
            AnyTicket::Line(t) => conn.wait(t).await.map(|l| l.line().to_vec()),
            AnyTicket::Bytes(t) => conn.wait(t).await.map(|b| b.to_vec()),
            AnyTicket::Out(t) => conn.wait(t).await,
        }
    };
    let mut fut = pin!(fut);
    for _ in 0..3 {
        let poll = catch_unwind(AssertUnwindSafe(|| {
            fut.as_mut().poll(&mut Context::from_waker(Waker::noop()))
        }));
        match poll {
            Ok(Poll::Ready(r)) => return Waited::Done(r),
            Ok(Poll::Pending) => {}
            Err(_) => return Waited::Panicked,
        }
    }
    Waited::Pending
}

/// Runs one case in a fresh paused-clock runtime. `Err` says what differed
/// from the model first, and at which step.
pub fn run(case: &Case) -> Result<(), String> {
    quiet_deliberate_panics();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(run_in(case))
}

async fn run_in(case: &Case) -> Result<(), String> {
    let (io, peer) = mock_io::pair();
    let mut builder = QueuedFramed::builder();
    builder.linger(Duration::ZERO);
    if case.rtimeout_ms > 0 {
        builder.rtimeout(Duration::from_millis(case.rtimeout_ms));
    }
    let mut conn = builder.build(io);
    match (case.rtimeout_ms > 0, case.hook) {
        (true, Hook::Noop) => conn.on_timeout(|_: Timeout, _: &mut Requests<'_>| {}),
        (true, Hook::Write) => conn.on_timeout(|_: Timeout, q: &mut Requests<'_>| {
            q.push_write(LineCodec::new(), "t")
                .expect("a live handle takes a line");
        }),
        (true, Hook::Panic) => {
            conn.on_timeout(|_: Timeout, _: &mut Requests<'_>| panic!("{PANIC_MARK} in a hook"))
        }
        _ => {}
    }
    let front = if case.spawned {
        let (h, d) = conn.spawn();
        Front::Spawned(h, Some(d))
    } else {
        Front::Inline(Box::new(conn))
    };
    let mut r = Runner {
        model: Model::new(case),
        peer,
        front,
        live: Vec::new(),
        slots: Vec::new(),
    };
    if case.spawned {
        settle_rounds().await;
    }
    for (i, op) in case.ops.iter().enumerate() {
        r.apply(op)
            .await
            .and_then(|()| r.check())
            .map_err(|e| format!("step {i} ({op:?}): {e}"))?;
    }
    r.finish().await.map_err(|e| format!("at the end: {e}"))
}

// ----- cases from raw bytes (the fuzz target) ------------------------------------

/// Reads bytes off a fuzz input; zeros once it runs out.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
}

/// The JSON texts the peer sends (whole or cut): no numbers and no
/// whitespace, so the model's JSON grammar stays a few lines.
pub const JSON_TEXTS: [&str; 8] = [
    "[]",
    "{}",
    "[true]",
    "[\"ab\",null]",
    "{\"a\":[false]}",
    "\"xy\"",
    "null",
    "[[],{}]",
];

impl Case {
    /// Decodes a case from fuzz bytes. `panics`: whether the operations may
    /// panic on purpose (not when panics abort the process).
    pub fn from_bytes(raw: &[u8], panics: bool) -> Case {
        let mut c = Cursor(raw);
        let flags = c.u8();
        let json = flags & 2 != 0;
        let req = |c: &mut Cursor<'_>| -> Req {
            let b = c.u8();
            match b % 8 {
                0 if !json => Req::Line,
                0 | 1 => Req::Chunk(usize::from(b >> 4) % 6 + 1),
                2 if json => Req::Json,
                2 | 3 => Req::Take(usize::from(b >> 4) % 6 + 1),
                4 => Req::Bad,
                5 => Req::Fatal,
                6 if panics => Req::Panic,
                _ if json => Req::Json,
                _ => Req::Line,
            }
        };
        let mut ops = Vec::new();
        while !c.0.is_empty() && ops.len() < 64 {
            let b = c.u8();
            ops.push(match b % 10 {
                0 | 1 => {
                    let r = req(&mut c);
                    let t = c.u8();
                    let then = match t % 5 {
                        0 | 1 => Then::Value,
                        2 => Then::Map,
                        3 => Then::Unshift(req(&mut c)),
                        _ if panics => Then::Panic,
                        _ => Then::Map,
                    };
                    Op::Push {
                        req: r,
                        then,
                        front: t & 0x80 != 0,
                    }
                }
                2 => Op::Cancel(usize::from(b >> 4)),
                3 => Op::Wait(usize::from(b >> 4)),
                4 | 5 => {
                    let k = c.u8();
                    if json && k & 1 == 0 {
                        let text = JSON_TEXTS[usize::from(k >> 1) % JSON_TEXTS.len()].as_bytes();
                        let cut = usize::from(c.u8()) % (text.len() + 1);
                        Op::Send(if k & 2 == 0 {
                            text[..cut].to_vec()
                        } else {
                            text[cut..].to_vec()
                        })
                    } else {
                        let n = usize::from(k >> 4) + 1;
                        Op::Send(
                            (0..n)
                                .map(|_| match c.u8() % 6 {
                                    0 if !json => b'\n',
                                    x => b'a' + x,
                                })
                                .collect(),
                        )
                    }
                }
                6 => match b >> 4 {
                    0 => Op::Eof,
                    1 => Op::IoError,
                    _ => Op::Advance(u64::from(c.u8())),
                },
                7 => Op::Advance(u64::from(b >> 4) * 20),
                8 => match b >> 4 {
                    0 => Op::Flush,
                    1 => Op::Destroy,
                    3 => Op::Rebuild,
                    n if n & 1 == 0 => Op::WriteLine(vec![b'w'; usize::from(n)]),
                    n => Op::Write((0..n).collect()),
                },
                _ => Op::PeerReads(usize::from(b >> 4)),
            });
        }
        Case {
            spawned: flags & 1 != 0,
            rtimeout_ms: if flags & 4 != 0 { 100 } else { 0 },
            hook: match flags >> 3 & 3 {
                0 | 1 => Hook::None,
                2 => Hook::Noop,
                _ if panics => Hook::Panic,
                _ => Hook::Write,
            },
            ops,
        }
    }
}
