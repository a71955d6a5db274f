//! An in-memory transport whose peer is driven step by step from the test.
//!
//! [`MockIo`] is the engine's side (`AsyncRead + AsyncWrite`); [`Peer`] is a
//! cloneable remote control for the other end:
//!
//! * reads deliver exactly the chunks [`Peer::send`] queued, one chunk per
//!   read call (split only if the reader's buffer is smaller); with nothing
//!   queued a read is `Pending` until the next `send`, [`Peer::close`] (end
//!   of input) or [`Peer::fail`] (an I/O error, after the queued chunks);
//! * writes are accepted only up to the budget [`Peer::accept`] grants (a
//!   peer that reads slowly, or never): with no budget left a write is
//!   `Pending` until the next `accept`.
//!
//! [`Peer::pulled`] counts the bytes the engine has taken, so a test can see
//! exactly when the engine reads.
#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

#[derive(Debug, Default)]
struct State {
    /// Chunks sent and not yet read.
    incoming: VecDeque<Vec<u8>>,
    /// How the input ends once `incoming` is empty.
    end: Option<End>,
    /// Bytes the engine has read.
    pulled: usize,
    read_calls: usize,
    read_waker: Option<Waker>,
    /// Bytes the peer will still take.
    budget: usize,
    written: Vec<u8>,
    write_waker: Option<Waker>,
    shut_down: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Eof,
    Error(io::ErrorKind),
}

/// The engine's end of the connection.
#[derive(Debug)]
pub struct MockIo {
    state: Arc<Mutex<State>>,
}

/// The test's end: what the peer sends, and how fast it reads.
#[derive(Debug, Clone)]
pub struct Peer {
    state: Arc<Mutex<State>>,
}

/// A connected pair with nothing sent and no write budget.
pub fn pair() -> (MockIo, Peer) {
    let state = Arc::new(Mutex::new(State::default()));
    (
        MockIo {
            state: state.clone(),
        },
        Peer { state },
    )
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic elsewhere (a deliberately panicking callback) must not make
    // the peer unusable.
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Peer {
    /// Queues one chunk for the engine to read; ignored after `close`/`fail`.
    pub fn send(&self, bytes: &[u8]) {
        let mut s = lock(&self.state);
        if s.end.is_some() || bytes.is_empty() {
            return;
        }
        s.incoming.push_back(bytes.to_vec());
        if let Some(w) = s.read_waker.take() {
            w.wake();
        }
    }

    /// End of input after the chunks already sent.
    pub fn close(&self) {
        self.end(End::Eof);
    }

    /// A read error (`ConnectionReset`) after the chunks already sent.
    pub fn fail(&self) {
        self.end(End::Error(io::ErrorKind::ConnectionReset));
    }

    fn end(&self, end: End) {
        let mut s = lock(&self.state);
        if s.end.is_none() {
            s.end = Some(end);
        }
        if let Some(w) = s.read_waker.take() {
            w.wake();
        }
    }

    /// Lets the engine write `n` more bytes.
    pub fn accept(&self, n: usize) {
        let mut s = lock(&self.state);
        s.budget += n;
        if let Some(w) = s.write_waker.take() {
            w.wake();
        }
    }

    /// Bytes the engine has read so far.
    pub fn pulled(&self) -> usize {
        lock(&self.state).pulled
    }

    /// Bytes sent and not read yet.
    pub fn unread(&self) -> Vec<u8> {
        lock(&self.state)
            .incoming
            .iter()
            .flatten()
            .copied()
            .collect()
    }

    /// Everything the engine has written.
    pub fn written(&self) -> Vec<u8> {
        lock(&self.state).written.clone()
    }

    /// Whether the engine shut its write side down.
    pub fn is_shut_down(&self) -> bool {
        lock(&self.state).shut_down
    }
}

impl AsyncRead for MockIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut s = lock(&self.state);
        s.read_calls += 1;
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if let Some(mut chunk) = s.incoming.pop_front() {
            let n = chunk.len().min(buf.remaining());
            buf.put_slice(&chunk[..n]);
            s.pulled += n;
            if n < chunk.len() {
                s.incoming.push_front(chunk.split_off(n));
            }
            return Poll::Ready(Ok(()));
        }
        match s.end {
            Some(End::Eof) => Poll::Ready(Ok(())),
            Some(End::Error(kind)) => Poll::Ready(Err(kind.into())),
            None => {
                s.read_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for MockIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut s = lock(&self.state);
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if s.budget == 0 {
            s.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = buf.len().min(s.budget);
        s.budget -= n;
        s.written.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        lock(&self.state).shut_down = true;
        Poll::Ready(Ok(()))
    }
}
