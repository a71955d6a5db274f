//! Test support for the `anyframe` integration tests: a scripted mock
//! transport that counts reads and writes and can return `Pending` at exact
//! points, plus peer-availability helpers.
#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The bound on a wait through [`within`].
pub const LIMIT: Duration = Duration::from_secs(20);

/// Awaits `f`, failing the test with `what` after [`LIMIT`] instead of
/// hanging it.
pub async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(LIMIT, f).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {LIMIT:?}: {what}"),
    }
}

/// Everything `io` yields until its end (or an error).
pub async fn read_all(mut io: impl tokio::io::AsyncRead + Unpin) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let _ = io.read_to_end(&mut got).await;
    got
}

/// One scripted read result.
#[derive(Debug, Clone)]
pub enum Step {
    /// Deliver these bytes (possibly over several reads if the caller's
    /// buffer is smaller).
    Data(Vec<u8>),
    /// Return `Pending` once (and wake at once, like a spurious wake-up).
    Pending,
    /// Return end of input.
    Eof,
    /// Fail with this kind.
    Error(io::ErrorKind),
}

/// What the mock saw.
#[derive(Debug, Default)]
pub struct Stats {
    pub read_calls: usize,
    /// The buffer space offered at each read that returned data.
    pub read_sizes: Vec<usize>,
    pub write_calls: usize,
    pub written: Vec<u8>,
    pub shutdown: bool,
}

/// A transport driven by a script. When the script runs out, reads stay
/// `Pending` forever (without waking), so a test can observe that nothing
/// more was read. Writes are accepted whole (or up to `max_write`).
pub struct MockIo {
    script: VecDeque<Step>,
    pub stats: Arc<Mutex<Stats>>,
    max_write: usize,
    /// Return `Pending` from every other write call.
    pub write_pending_every_other: bool,
    flip: bool,
}

impl MockIo {
    pub fn new(script: impl IntoIterator<Item = Step>) -> (MockIo, Arc<Mutex<Stats>>) {
        let stats = Arc::new(Mutex::new(Stats::default()));
        let io = MockIo {
            script: script.into_iter().collect(),
            stats: stats.clone(),
            max_write: usize::MAX,
            write_pending_every_other: false,
            flip: false,
        };
        (io, stats)
    }

    pub fn max_write(mut self, n: usize) -> MockIo {
        self.max_write = n;
        self
    }
}

pub fn data(b: &[u8]) -> Step {
    Step::Data(b.to_vec())
}

impl AsyncRead for MockIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.stats.lock().unwrap().read_calls += 1;
        match self.script.pop_front() {
            None => Poll::Pending,
            Some(Step::Pending) => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Some(Step::Eof) => {
                self.script.push_front(Step::Eof);
                Poll::Ready(Ok(()))
            }
            Some(Step::Error(k)) => Poll::Ready(Err(io::Error::from(k))),
            Some(Step::Data(mut d)) => {
                self.stats.lock().unwrap().read_sizes.push(buf.remaining());
                let n = d.len().min(buf.remaining());
                buf.put_slice(&d[..n]);
                if n < d.len() {
                    let rest = d.split_off(n);
                    self.script.push_front(Step::Data(rest));
                }
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl AsyncWrite for MockIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.write_pending_every_other {
            self.flip = !self.flip;
            if self.flip {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
        let n = buf.len().min(self.max_write);
        let mut s = self.stats.lock().unwrap();
        s.write_calls += 1;
        s.written.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stats.lock().unwrap().shutdown = true;
        Poll::Ready(Ok(()))
    }
}

/// Whether tests that need an external peer must fail instead of skipping.
pub fn peers_required() -> bool {
    std::env::var("ANYFRAME_REQUIRE_PEERS").is_ok_and(|v| v == "1")
}

/// Returns true if `program` runs (`program args…` exits 0). Otherwise
/// prints why the test is skipped, or panics when peers are required.
pub fn have_peer(program: &str, args: &[&str], what: &str) -> bool {
    let ok = std::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            !peers_required(),
            "ANYFRAME_REQUIRE_PEERS=1 but {what} is not available ({program})"
        );
        eprintln!(
            "SKIPPED: {what} is not available ({program} {}); install it to run this test",
            args.join(" ")
        );
    }
    ok
}

/// Each write call that went through a [`Tap`], in order.
pub type Writes = Arc<Mutex<Vec<Vec<u8>>>>;

/// An IO that records each write call's bytes apart (a vectored write as
/// one), so a test can see how output was split into system calls.
pub struct Tap<IO> {
    io: IO,
    writes: Writes,
}

impl<IO> Tap<IO> {
    /// The IO underneath.
    pub fn into_inner(self) -> IO {
        self.io
    }

    /// `io`, tapped; the writes are recorded in what is returned with it.
    pub fn new(io: IO) -> (Tap<IO>, Writes) {
        let writes = Writes::default();
        (
            Tap {
                io,
                writes: writes.clone(),
            },
            writes,
        )
    }
}

/// Every byte written, in order.
pub fn written(writes: &Writes) -> Vec<u8> {
    writes.lock().unwrap().concat()
}

impl<IO: AsyncRead + Unpin> AsyncRead for Tap<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Tap<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.writes.lock().unwrap().push(buf[..n].to_vec());
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        self.poll_write(cx, &all)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// An IO whose reads never complete and whose every write gets the
/// closure's result at once (it may keep what it was given), without
/// taking part in tokio's task budget (as a user's own transport may not).
pub struct FixedWrites<F>(F);

impl<F: FnMut(&[u8]) -> io::Result<usize> + Unpin> FixedWrites<F> {
    /// Each write gets `answer(buf)`.
    pub fn new(answer: F) -> FixedWrites<F> {
        FixedWrites(answer)
    }
}

impl<F: Unpin> AsyncRead for FixedWrites<F> {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Pending
    }
}

impl<F: FnMut(&[u8]) -> io::Result<usize> + Unpin> AsyncWrite for FixedWrites<F> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready((self.0)(buf))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// An IO whose reads always return a full buffer of `x\n` lines at once and
/// whose writes take everything at once, without taking part in tokio's
/// task budget (as a user's own transport may not).
pub struct EndlessLines;

impl AsyncRead for EndlessLines {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while buf.remaining() >= 2 {
            buf.put_slice(b"x\n");
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for EndlessLines {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The shape of the switch tests: queues on `conn` a line read, a STARTTLS
/// (`mode`), then `after\n` behind it; returns the read's and the switch's
/// tickets.
#[cfg(any(feature = "tls", feature = "rustls"))]
pub fn read_then_starttls<IO>(
    conn: &mut anyframe::QueuedFramed<IO, anyframe::codecs::LineCodec>,
    mode: impl Into<anyframe::tls::TlsMode>,
) -> (
    anyframe::Ticket<anyframe::codecs::Line>,
    anyframe::Ticket<()>,
)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let read = conn.push_read(anyframe::codecs::LineCodec::new());
    let switch = conn.push_starttls(mode);
    conn.push_bytes(&b"after\n"[..]).unwrap();
    (read, switch)
}

/// Copies `from` to `to`, `chunk` bytes at a time with `gap` after each
/// (none when zero), then shuts `to` down: a slow link that keeps making
/// progress.
pub async fn trickle(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    chunk: usize,
    gap: std::time::Duration,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; chunk];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        if !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
    }
    let _ = to.shutdown().await;
}

/// A client and a server joined by a proxy that passes the client's bytes
/// `up.0` at a time every `up.1` and the server's `down.0` at a time every
/// `down.1`: `(client, server)`. The client's pipe holds `client_buffer`
/// bytes; a small one makes the client's writes wait for the link.
pub fn slow_link(
    up: (usize, std::time::Duration),
    down: (usize, std::time::Duration),
    client_buffer: usize,
) -> (tokio::io::DuplexStream, tokio::io::DuplexStream) {
    let (client, proxy_c) = tokio::io::duplex(client_buffer);
    let (server, proxy_s) = tokio::io::duplex(1 << 16);
    let (cr, cw) = tokio::io::split(proxy_c);
    let (sr, sw) = tokio::io::split(proxy_s);
    tokio::spawn(trickle(cr, sw, up.0, up.1));
    tokio::spawn(trickle(sr, cw, down.0, down.1));
    (client, server)
}
