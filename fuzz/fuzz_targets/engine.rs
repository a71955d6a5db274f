//! QueuedFramed over a scripted mock transport, driven by a fuzzer-chosen
//! plan: a sequence of typed frames (line, chunk, netstring, packstring,
//! JSON, CBOR, raw bytes taken by a closure) that the peer sends, encoded
//! with our encoders and delivered in fuzzer-chosen fragments with `Pending`
//! in between, cut off by end of input or a transport error at a chosen
//! point; and on our side a sequence of reads (direct `read`, queued
//! `push_read_with` in batches, a completion that unshifts the next read)
//! and interleaved writes, inline or through a spawned driver and `Handle`.
//!
//! Checked: every frame sent in full is read back, equal, in order; the
//! first frame the cut reaches fails (EPIPE at end of input, the I/O error
//! otherwise) and so does everything after it; no byte is lost or
//! reordered: consumed + `read_buf` == delivered, and written + unwritten ==
//! everything pushed.
//!
//! An input whose first byte has the top bit set is instead a case for the
//! engine's reference model (`tests/support/engine_model.rs`, shared with
//! `tests/model.rs`): queued reads pushed and unshifted, completions that
//! unshift a follow-up, cancellations, waits, chunked input, end of input,
//! I/O errors, read-timeout expiries on a paused clock, writes to a slow
//! peer and (when panics unwind) panicking callbacks, on either front end,
//! compared with the model after every step.
#![no_main]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use anyframe::codecs::{
    CborCodec, ChunkCodec, JsonCodec, LineCodec, NetstringCodec, PackFormat, PackstringCodec,
};
use anyframe::{ErrorKind, FnDecoder, Handle, QueuedFramed, Requests, Ticket};
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::codec::{Decoder, Encoder};

/// Reads bytes off the fuzz input; zeros once it runs out.
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

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a.to_vec()
    }
}

/// One frame the peer sends and how we read it.
#[derive(Debug, Clone)]
enum Kind {
    Line,
    Chunk(usize),
    Netstring,
    Packstring(PackFormat),
    Json,
    Cbor,
    Raw(usize),
    /// A netstring with a bad trailing byte: a non-fatal EBADMSG that
    /// consumes the whole netstring, after which reading goes on.
    BadNetstring,
}

/// What a read gives back, in one comparable type.
#[derive(Debug, Clone, PartialEq)]
enum Got {
    Bytes(Vec<u8>),
    Json(serde_json::Value),
    Cbor(String),
    /// The read fails with a non-fatal EBADMSG.
    Bad,
}

#[derive(Debug, Clone)]
struct Frame {
    kind: Kind,
    expect: Got,
    wire: Vec<u8>,
    /// Trailing bytes of `wire` that this read leaves (the `\n` written
    /// after a top-level JSON number, which the next JSON read skips).
    sep: usize,
}

fn make_frame(c: &mut Cursor<'_>) -> Option<Frame> {
    let tag = c.u8();
    let len = usize::from(c.u8() % 40);
    let payload = c.bytes(len);
    let mut wire = BytesMut::new();
    let (kind, expect) = match tag % 8 {
        0 => {
            LineCodec::new().encode(&payload, &mut wire).ok()?;
            (Kind::Line, Got::Bytes(payload))
        }
        1 => {
            if payload.is_empty() {
                return None;
            }
            wire.extend_from_slice(&payload);
            (Kind::Chunk(payload.len()), Got::Bytes(payload))
        }
        2 => {
            NetstringCodec::new().encode(&payload, &mut wire).ok()?;
            (Kind::Netstring, Got::Bytes(payload))
        }
        3 => {
            let fmt = PackFormat::ALL[usize::from(tag >> 3) % PackFormat::ALL.len()];
            PackstringCodec::new(fmt).encode(&payload, &mut wire).ok()?;
            (Kind::Packstring(fmt), Got::Bytes(payload))
        }
        4 => {
            // A top-level number (written with its `\n`), a string, or an
            // object holding both.
            let n = payload
                .iter()
                .fold(0u64, |a, &b| a.wrapping_mul(31) ^ u64::from(b));
            let s = String::from_utf8_lossy(&payload).into_owned();
            let v = match tag >> 3 & 3 {
                0 => serde_json::json!(n),
                1 => serde_json::json!(s),
                2 => serde_json::json!(-(n as i64 >> 1)),
                _ => serde_json::json!({ "s": s, "n": n, "a": [true, null, 0.5] }),
            };
            JsonCodec::<serde_json::Value>::new()
                .encode(&v, &mut wire)
                .ok()?;
            (Kind::Json, Got::Json(v))
        }
        5 => {
            let v = match tag >> 3 & 3 {
                0 => serde_cbor::Value::Bytes(payload),
                1 => serde_cbor::Value::Integer(i128::from(len as u64) * -7),
                2 => serde_cbor::Value::Text(String::from_utf8_lossy(&payload).into_owned()),
                _ => serde_cbor::Value::Array(vec![
                    serde_cbor::Value::Bytes(payload),
                    serde_cbor::Value::Null,
                ]),
            };
            CborCodec::<serde_cbor::Value>::new()
                .encode(&v, &mut wire)
                .ok()?;
            (Kind::Cbor, Got::Cbor(format!("{v:?}")))
        }
        6 => {
            if payload.is_empty() {
                return None;
            }
            wire.extend_from_slice(&payload);
            (Kind::Raw(payload.len()), Got::Bytes(payload))
        }
        _ => {
            wire.extend_from_slice(format!("{}:", payload.len()).as_bytes());
            wire.extend_from_slice(&payload);
            wire.extend_from_slice(b"X");
            (Kind::BadNetstring, Got::Bad)
        }
    };
    let sep = usize::from(matches!(expect, Got::Json(serde_json::Value::Number(_))));
    Some(Frame {
        kind,
        expect,
        wire: wire.to_vec(),
        sep,
    })
}

/// Where requests go: the inline handle, a spawned `Handle`, or the queue
/// seen from inside a completion.
trait Queue {
    fn enqueue<D, F>(&mut self, decoder: D, then: F, front: bool) -> Ticket<Got>
    where
        D: Decoder + Send + 'static,
        D::Item: Send + 'static,
        D::Error: Into<anyframe::Error>,
        F: FnOnce(D::Item, &mut Requests<'_>) -> anyframe::Result<Got> + Send + 'static;
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Queue for QueuedFramed<IO> {
    fn enqueue<D, F>(&mut self, decoder: D, then: F, front: bool) -> Ticket<Got>
    where
        D: Decoder + Send + 'static,
        D::Item: Send + 'static,
        D::Error: Into<anyframe::Error>,
        F: FnOnce(D::Item, &mut Requests<'_>) -> anyframe::Result<Got> + Send + 'static,
    {
        if front {
            self.unshift_read_with(decoder, then)
        } else {
            self.push_read_with(decoder, then)
        }
    }
}

impl Queue for Handle {
    fn enqueue<D, F>(&mut self, decoder: D, then: F, front: bool) -> Ticket<Got>
    where
        D: Decoder + Send + 'static,
        D::Item: Send + 'static,
        D::Error: Into<anyframe::Error>,
        F: FnOnce(D::Item, &mut Requests<'_>) -> anyframe::Result<Got> + Send + 'static,
    {
        if front {
            self.unshift_read_with(decoder, then)
        } else {
            self.push_read_with(decoder, then)
        }
    }
}

impl Queue for Requests<'_> {
    fn enqueue<D, F>(&mut self, decoder: D, then: F, front: bool) -> Ticket<Got>
    where
        D: Decoder + Send + 'static,
        D::Item: Send + 'static,
        D::Error: Into<anyframe::Error>,
        F: FnOnce(D::Item, &mut Requests<'_>) -> anyframe::Result<Got> + Send + 'static,
    {
        if front {
            self.unshift_read_with(decoder, then)
        } else {
            self.push_read_with(decoder, then)
        }
    }
}

type Slot = Arc<Mutex<Option<Ticket<Got>>>>;

/// Queues the read for `frame`; if `follow` is given, the completion
/// unshifts the read of that frame and leaves its ticket in the slot.
fn enqueue(
    q: &mut impl Queue,
    frame: &Frame,
    front: bool,
    follow: Option<(Frame, Slot)>,
) -> Ticket<Got> {
    fn then<T>(
        follow: Option<(Frame, Slot)>,
        map: impl FnOnce(T) -> Got + Send + 'static,
    ) -> impl FnOnce(T, &mut Requests<'_>) -> anyframe::Result<Got> + Send + 'static {
        move |item, reqs| {
            if let Some((next, slot)) = follow {
                let t = enqueue(reqs, &next, true, None);
                *slot.lock().unwrap() = Some(t);
            }
            Ok(map(item))
        }
    }
    match &frame.kind {
        Kind::Line => q.enqueue(
            LineCodec::new(),
            then(follow, |l: anyframe::codecs::Line| {
                Got::Bytes(l.line().to_vec())
            }),
            front,
        ),
        Kind::Chunk(n) => q.enqueue(
            ChunkCodec::new(*n),
            then(follow, |b: Bytes| Got::Bytes(b.to_vec())),
            front,
        ),
        Kind::Netstring | Kind::BadNetstring => q.enqueue(
            NetstringCodec::new(),
            then(follow, |b: Bytes| Got::Bytes(b.to_vec())),
            front,
        ),
        Kind::Packstring(fmt) => q.enqueue(
            PackstringCodec::new(*fmt),
            then(follow, |b: Bytes| Got::Bytes(b.to_vec())),
            front,
        ),
        Kind::Json => q.enqueue(
            JsonCodec::<serde_json::Value>::new(),
            then(follow, Got::Json),
            front,
        ),
        Kind::Cbor => q.enqueue(
            CborCodec::<serde_cbor::Value>::new(),
            then(follow, |v: serde_cbor::Value| Got::Cbor(format!("{v:?}"))),
            front,
        ),
        Kind::Raw(n) => {
            let n = *n;
            q.enqueue(
                FnDecoder::new(move |buf: &mut BytesMut| {
                    Ok((buf.len() >= n).then(|| buf.split_to(n).freeze()))
                }),
                then(follow, |b: Bytes| Got::Bytes(b.to_vec())),
                front,
            )
        }
    }
}

// ----- the mock transport ---------------------------------------------------

#[derive(Debug, Clone)]
enum Step {
    Data(Vec<u8>),
    Pending,
    Eof,
    Error,
}

#[derive(Debug, Default)]
struct Seen {
    delivered: usize,
    written: Vec<u8>,
}

struct Mock {
    script: VecDeque<Step>,
    seen: Arc<Mutex<Seen>>,
    max_write: usize,
    write_pending: bool,
    flip: bool,
}

impl AsyncRead for Mock {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.script.pop_front() {
            // Every script ends in Eof or Error, which repeat.
            None => unreachable!("script ran out"),
            Some(Step::Pending) => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Some(Step::Eof) => {
                self.script.push_front(Step::Eof);
                Poll::Ready(Ok(()))
            }
            Some(Step::Error) => {
                self.script.push_front(Step::Error);
                Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()))
            }
            Some(Step::Data(mut d)) => {
                let n = d.len().min(buf.remaining());
                buf.put_slice(&d[..n]);
                self.seen.lock().unwrap().delivered += n;
                if n < d.len() {
                    let rest = d.split_off(n);
                    self.script.push_front(Step::Data(rest));
                }
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl AsyncWrite for Mock {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.write_pending {
            self.flip = !self.flip;
            if self.flip {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
        let n = buf.len().min(self.max_write);
        self.seen
            .lock()
            .unwrap()
            .written
            .extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

// ----- the plan ---------------------------------------------------------------

/// One step on our side.
#[derive(Debug)]
enum Op {
    /// Read these frames: one `read`, or a batch of queued reads (with the
    /// first one unshifting the second from its completion if `chain`).
    Read {
        frames: std::ops::Range<usize>,
        direct: bool,
        chain: bool,
        /// A run of lines through `read_many` (limit: what is left of it).
        many: bool,
    },
    /// Queue these bytes for writing.
    Write(Vec<u8>),
}

thread_local! {
    static RT: RefCell<tokio::runtime::Runtime> = RefCell::new(
        tokio::runtime::Builder::new_current_thread().build().unwrap()
    );
}

fuzz_target!(|raw: &[u8]| {
    if let Some((&first, rest)) = raw.split_first()
        && first & 0x80 != 0
    {
        use anyframe_fuzz::engine_model::{Case, run};
        let case = Case::from_bytes(rest, cfg!(panic = "unwind"));
        if let Err(e) = run(&case) {
            panic!("the engine differs from its model: {e}\n{case:#?}");
        }
        return;
    }
    let mut c = Cursor(raw);
    let flags = c.u8();
    let spawned = flags & 1 != 0;
    let count = usize::from(c.u8() % 12) + 1;
    let mut frames = Vec::new();
    for _ in 0..count {
        if let Some(f) = make_frame(&mut c) {
            // The `\n` after a top-level number stays in the buffer (only a
            // JSON read skips it, RT-json-6), so only JSON may follow one.
            if frames.last().is_some_and(|p: &Frame| p.sep > 0) && !matches!(f.kind, Kind::Json) {
                continue;
            }
            frames.push(f);
        }
    }
    let mut wire = Vec::new();
    let mut ends = Vec::new();
    for f in &frames {
        wire.extend_from_slice(&f.wire);
        ends.push(wire.len());
    }
    // Where the peer stops: after everything, or at a chosen byte.
    let cut = if flags & 2 != 0 && !wire.is_empty() {
        (usize::from(c.u8()) << 8 | usize::from(c.u8())) % (wire.len() + 1)
    } else {
        wire.len()
    };
    let error_at_cut = flags & 4 != 0;
    // Fragments: sizes 1..=64, cycled, a Pending after some.
    let mut script = VecDeque::new();
    let nsizes = usize::from(c.u8() % 8) + 1;
    let sizes: Vec<u8> = (0..nsizes).map(|_| c.u8()).collect();
    let mut at = 0;
    let mut i = 0;
    while at < cut {
        let s = sizes[i % sizes.len()];
        let n = (usize::from(s & 63) + 1).min(cut - at);
        script.push_back(Step::Data(wire[at..at + n].to_vec()));
        if s & 64 != 0 {
            script.push_back(Step::Pending);
        }
        at += n;
        i += 1;
    }
    script.push_back(if error_at_cut { Step::Error } else { Step::Eof });

    // Our side: reads in batches, writes in between.
    let mut ops = Vec::new();
    let mut next = 0;
    while next < frames.len() {
        let b = c.u8();
        if b & 0x80 != 0 {
            let len = usize::from(b & 0x3f);
            ops.push(Op::Write(c.bytes(len)));
            continue;
        }
        let batch = (usize::from(b & 3) + 1).min(frames.len() - next);
        ops.push(Op::Read {
            frames: next..next + batch,
            direct: batch == 1 && b & 4 != 0,
            // A failing request never runs its completion: no chain then.
            chain: batch >= 2 && b & 8 != 0 && !matches!(frames[next].kind, Kind::BadNetstring),
            many: b & 16 != 0
                && frames[next..next + batch]
                    .iter()
                    .all(|f| matches!(f.kind, Kind::Line)),
        });
        next += batch;
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mock = Mock {
        script,
        seen: seen.clone(),
        // Bit 7 selects the model cases above.
        max_write: usize::from(flags >> 4 & 7) + 1,
        write_pending: flags & 8 != 0,
        flip: false,
    };

    if std::env::var_os("ENGINE_DEBUG").is_some() {
        eprintln!(
            "frames {frames:#?}\ncut {cut} error {error_at_cut} spawned {spawned}\nscript {:?}\nops {ops:?}",
            mock.script
        );
    }
    let results = RT.with(|rt| rt.borrow().block_on(drive(mock, &frames, ops, spawned)));
    let (got, pushed, read_buf, unwritten) = results;
    if std::env::var_os("ENGINE_DEBUG").is_some() {
        eprintln!("got {got:?}\nread_buf {read_buf:?}");
    }

    // Reads: full frames come back equal; from the cut on, failures.
    let mut consumed = 0;
    let mut failed = false;
    // Whether the first read that failed was a JSON read: those consume the
    // whitespace before a text even when the text never completes.
    let mut json_failed = false;
    for (i, (f, r)) in frames.iter().zip(&got).enumerate() {
        let start = ends[i] - f.wire.len();
        match r {
            Some(Ok(v)) => {
                assert!(!failed, "frame {i} read after a failure: {got:?}");
                if ends[i] <= cut {
                    assert_eq!(*v, f.expect, "frame {i}");
                    consumed = ends[i] - f.sep;
                } else {
                    // Only a top-level JSON number may end at end of input
                    // (as whatever digits arrived: the peer closed there).
                    let number = matches!(f.expect, Got::Json(serde_json::Value::Number(_)));
                    assert!(
                        number && !error_at_cut && start < cut,
                        "frame {i} {f:?} completed past the cut {cut}: {v:?}"
                    );
                    consumed = cut;
                }
            }
            Some(Err(kind)) => {
                assert!(
                    ends[i] > cut || failed,
                    "frame {i} failed before the cut: {kind:?}"
                );
                if !failed {
                    let want = if error_at_cut {
                        ErrorKind::Io
                    } else {
                        ErrorKind::BrokenPipe
                    };
                    assert_eq!(*kind, want, "frame {i}");
                    json_failed = matches!(f.kind, Kind::Json);
                }
                failed = true;
            }
            None => assert!(failed, "frame {i} never read"),
        }
    }
    // Nothing lost or reordered on the way in...
    let delivered = seen.lock().unwrap().delivered;
    assert!(delivered <= cut);
    let rest = &wire[consumed..delivered];
    let ws = rest
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .count();
    assert!(
        read_buf == rest || (json_failed && read_buf == rest[ws..]),
        "consumed {consumed} delivered {delivered}: {read_buf:?} vs {rest:?}"
    );
    // ... or out.
    let mut out = seen.lock().unwrap().written.clone();
    out.extend_from_slice(&unwritten);
    assert_eq!(out, pushed);
});

/// A read's result as the checks see it: a non-fatal EBADMSG is `Bad`.
fn outcome(r: anyframe::Result<Got>) -> Result<Got, ErrorKind> {
    match r {
        Err(e) if e.kind() == ErrorKind::BadMessage && !e.is_fatal() => Ok(Got::Bad),
        r => r.map_err(|e| e.kind()),
    }
}

type Results = (
    Vec<Option<Result<Got, ErrorKind>>>,
    Vec<u8>,
    Vec<u8>,
    Vec<u8>,
);

async fn drive(mock: Mock, frames: &[Frame], ops: Vec<Op>, spawned: bool) -> Results {
    let mut got: Vec<Option<Result<Got, ErrorKind>>> = vec![None; frames.len()];
    let mut pushed = Vec::new();
    let conn = QueuedFramed::builder()
        .linger(std::time::Duration::ZERO)
        .build(mock);
    if spawned {
        let (mut handle, driver) = conn.spawn();
        for op in ops {
            match op {
                Op::Write(bytes) => {
                    if handle.push_bytes(bytes.clone()).is_ok() {
                        pushed.extend_from_slice(&bytes);
                    }
                }
                Op::Read {
                    frames: range,
                    chain,
                    ..
                } => {
                    let waiting = queue_batch(&mut handle, frames, range.clone(), chain);
                    for (i, w) in range.zip(waiting) {
                        if let Some(t) = take(w) {
                            got[i] = Some(outcome(t.await));
                        }
                    }
                }
            }
        }
        handle.detach();
        let parts = driver.await.expect("driver gives the parts back");
        (
            got,
            pushed,
            parts.read_buf.to_vec(),
            parts.write_buf.to_vec(),
        )
    } else {
        let mut conn = conn;
        for op in ops {
            match op {
                Op::Write(bytes) => {
                    if conn.push_bytes(bytes.clone()).is_ok() {
                        pushed.extend_from_slice(&bytes);
                    }
                }
                Op::Read {
                    frames: range,
                    many: true,
                    ..
                } => {
                    let mut codec = LineCodec::new();
                    let mut i = range.start;
                    while i < range.end {
                        let mut lines = Vec::new();
                        let r = conn.read_many(&mut codec, &mut lines, range.end - i).await;
                        for l in lines {
                            got[i] = Some(Ok(Got::Bytes(l.line().to_vec())));
                            i += 1;
                        }
                        match r {
                            // A clean end of input: where one read would
                            // have failed with EPIPE.
                            Ok(0) => {
                                got[i] = Some(Err(ErrorKind::BrokenPipe));
                                i += 1;
                            }
                            Ok(_) => {}
                            Err(e) => {
                                got[i] = Some(outcome(Err(e)));
                                i += 1;
                            }
                        }
                    }
                }
                Op::Read {
                    frames: range,
                    direct: true,
                    ..
                } => {
                    let i = range.start;
                    got[i] = Some(outcome(read_direct(&mut conn, &frames[i]).await));
                }
                Op::Read {
                    frames: range,
                    chain,
                    ..
                } => {
                    let waiting = queue_batch(&mut conn, frames, range.clone(), chain);
                    for (i, w) in range.zip(waiting) {
                        if let Some(t) = take(w) {
                            got[i] = Some(outcome(conn.wait(t).await));
                        }
                    }
                }
            }
        }
        let _ = conn.flush().await;
        let parts = conn.into_parts();
        (
            got,
            pushed,
            parts.read_buf.to_vec(),
            parts.write_buf.to_vec(),
        )
    }
}

/// A queued read: its ticket, or (for a read that a completion unshifts)
/// the slot where the completion leaves it.
enum Waiting {
    Ticket(Ticket<Got>),
    Slot(Slot),
}

/// Queues reads for `range`; with `chain`, the first one's completion
/// unshifts the second. Returns them in frame order.
fn queue_batch(
    q: &mut impl Queue,
    frames: &[Frame],
    range: std::ops::Range<usize>,
    chain: bool,
) -> Vec<Waiting> {
    let mut out = Vec::new();
    for i in range.clone() {
        if chain && i == range.start + 1 {
            continue;
        }
        if chain && i == range.start {
            let slot: Slot = Arc::new(Mutex::new(None));
            let t = enqueue(
                q,
                &frames[i],
                false,
                Some((frames[i + 1].clone(), slot.clone())),
            );
            out.push(Waiting::Ticket(t));
            out.push(Waiting::Slot(slot));
        } else {
            out.push(Waiting::Ticket(enqueue(q, &frames[i], false, None)));
        }
    }
    out
}

/// The ticket to wait for, or `None` if the completion that would have
/// queued it never ran (its own request failed).
fn take(w: Waiting) -> Option<Ticket<Got>> {
    match w {
        Waiting::Ticket(t) => Some(t),
        Waiting::Slot(s) => s.lock().unwrap().take(),
    }
}

async fn read_direct<IO: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut QueuedFramed<IO>,
    frame: &Frame,
) -> anyframe::Result<Got> {
    Ok(match &frame.kind {
        Kind::Line => Got::Bytes(conn.read(LineCodec::new()).await?.line().to_vec()),
        Kind::Chunk(n) => Got::Bytes(conn.read(ChunkCodec::new(*n)).await?.to_vec()),
        Kind::Netstring | Kind::BadNetstring => {
            Got::Bytes(conn.read(NetstringCodec::new()).await?.to_vec())
        }
        Kind::Packstring(f) => Got::Bytes(conn.read(PackstringCodec::new(*f)).await?.to_vec()),
        Kind::Json => Got::Json(conn.read(JsonCodec::<serde_json::Value>::new()).await?),
        Kind::Cbor => Got::Cbor(format!(
            "{:?}",
            conn.read(CborCodec::<serde_cbor::Value>::new()).await?
        )),
        Kind::Raw(n) => {
            let n = *n;
            Got::Bytes(
                conn.read_fn(move |buf| Ok((buf.len() >= n).then(|| buf.split_to(n).freeze())))
                    .await?
                    .to_vec(),
            )
        }
    })
}
