//! Connecting by address ([OPT-2](crate::semantics#OPT-2)) and TCP socket options ([OPT-13](crate::semantics#OPT-13)…[OPT-15](crate::semantics#OPT-15)).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpStream, ToSocketAddrs};

use crate::config::{Builder, Config};
use crate::error::{Error, Result};
use crate::queued::{Driver, Handle, QueuedFramed, spawn_connecting};

/// Decides, after a failed connect attempt, whether to try the next address
/// (AE's `on_connect_error` / `retry`). Called with the address that failed
/// and why; return `false` to give up.
#[derive(Clone)]
pub struct RetryHook(Arc<RetryFn>);

type RetryFn = dyn Fn(SocketAddr, &io::Error) -> bool + Send + Sync;

impl RetryHook {
    /// Wraps `f`.
    pub fn new(f: impl Fn(SocketAddr, &io::Error) -> bool + Send + Sync + 'static) -> RetryHook {
        RetryHook(Arc::new(f))
    }
}

impl fmt::Debug for RetryHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RetryHook")
    }
}

/// Applies `no_delay`, `keepalive` and `oobinline` as configured; an
/// option left unset keeps the socket's setting.
pub(crate) fn apply_socket_options(stream: &TcpStream, cfg: &Config) -> io::Result<()> {
    if let Some(on) = cfg.no_delay {
        stream.set_nodelay(on)?;
    }
    let sock = socket2::SockRef::from(stream);
    if let Some(on) = cfg.keepalive {
        sock.set_keepalive(on)?;
    }
    sock.set_out_of_band_inline(cfg.oobinline)?;
    Ok(())
}

/// Resolves `addr` and tries each address in turn, each with the connect
/// timeout, asking `retry` after each failure.
async fn connect_any<A: ToSocketAddrs>(
    addr: A,
    cfg: Config,
    retry: Option<RetryHook>,
) -> Result<TcpStream> {
    let addrs = tokio::net::lookup_host(addr)
        .await
        .map_err(Error::connect)?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name resolved to no address");
    for sa in addrs {
        tracing::debug!(addr = %sa, "connecting");
        let attempt = TcpStream::connect(sa);
        let res = match cfg.connect_timeout {
            Some(t) => crate::queued::timer::within(t, attempt)
                .await
                .unwrap_or_else(|| {
                    Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
                }),
            None => attempt.await,
        };
        match res {
            Ok(stream) => {
                apply_socket_options(&stream, &cfg).map_err(Error::connect)?;
                tracing::debug!(addr = %sa, "connected");
                return Ok(stream);
            }
            Err(e) => {
                tracing::debug!(addr = %sa, error = %e, "connect attempt failed");
                let go_on = retry.as_ref().is_none_or(|r| (r.0)(sa, &e));
                last = e;
                if !go_on {
                    break;
                }
            }
        }
    }
    Err(Error::connect(last))
}

impl Builder {
    /// Builds a handle over a TCP stream, applying the socket options.
    ///
    /// # Errors
    ///
    /// Setting a socket option failed.
    pub fn build_tcp(&self, stream: TcpStream) -> io::Result<QueuedFramed<TcpStream>> {
        apply_socket_options(&stream, &self.cfg)?;
        Ok(crate::QueuedFramed::from_core(stream, (), self.new_core()))
    }

    /// Sets the hook asked after each failed connect attempt.
    pub fn retry_hook(&mut self, hook: RetryHook) -> &mut Self {
        self.retry = Some(hook);
        self
    }

    /// Resolves `addr`, connects to the first address that answers (each
    /// attempt bounded by [`connect_timeout`](Self::connect_timeout)), and
    /// builds a handle with the socket options applied.
    ///
    /// # Errors
    ///
    /// A connect error naming the last cause when every address failed.
    pub async fn connect<A: ToSocketAddrs>(&self, addr: A) -> Result<QueuedFramed<TcpStream>> {
        let stream = connect_any(addr, self.cfg.clone(), self.retry.clone()).await?;
        Ok(crate::QueuedFramed::from_core(stream, (), self.new_core()))
    }

    /// Like [`connect`](Self::connect), but returns a [`Handle`] at once:
    /// reads and writes queued before the connection is up run once it is
    /// ([OPT-2](crate::semantics#OPT-2)); the timers start then. If connecting fails, every queued
    /// request and the [`Driver`] fail with the connect error.
    ///
    /// Must be called inside a tokio runtime.
    pub fn spawn_connect<A>(&self, addr: A) -> (Handle, Driver<TcpStream>)
    where
        A: ToSocketAddrs + Send + 'static,
    {
        let cfg = self.cfg.clone();
        let retry = self.retry.clone();
        let setup = async move {
            connect_any(addr, cfg, retry)
                .await
                .map(crate::queued::transport::wrap)
        };
        spawn_connecting(self.new_core(), setup)
    }
}

/// A connect timeout long enough for any loopback test yet short next to
/// the OS's (about two minutes on Linux).
#[cfg(test)]
const TEST_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn socket_options_are_applied_and_read_back() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let framed = QueuedFramed::builder()
            .no_delay(true)
            .keepalive(true)
            .connect_timeout(TEST_CONNECT_TIMEOUT)
            .connect(addr)
            .await
            .unwrap();
        let sock = socket2::SockRef::from(framed.get_ref());
        assert!(framed.get_ref().nodelay().unwrap());
        assert!(sock.keepalive().unwrap());
        assert!(
            sock.out_of_band_inline().unwrap(),
            "oobinline is on by default"
        );
    }

    #[tokio::test]
    async fn socket_options_set_off_are_switched_off_and_unset_ones_kept() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        stream.set_nodelay(true).unwrap();
        socket2::SockRef::from(&stream).set_keepalive(true).unwrap();
        // Unset: the socket keeps what it has.
        apply_socket_options(&stream, &Builder::new().cfg).unwrap();
        assert!(stream.nodelay().unwrap());
        assert!(socket2::SockRef::from(&stream).keepalive().unwrap());
        // Set off: switched off.
        let mut off = Builder::new();
        off.no_delay(false).keepalive(false);
        apply_socket_options(&stream, &off.cfg).unwrap();
        assert!(!stream.nodelay().unwrap());
        assert!(!socket2::SockRef::from(&stream).keepalive().unwrap());
    }

    #[tokio::test]
    async fn every_address_refused_names_the_last_cause_and_asks_the_hook() {
        // Bind then drop to get a port nobody listens on.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let a = asked.clone();
        let err = QueuedFramed::builder()
            .retry_hook(RetryHook::new(move |_, _| {
                a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                true
            }))
            .connect(("127.0.0.1", port))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Io);
        assert_eq!(
            err.io_error().unwrap().kind(),
            io::ErrorKind::ConnectionRefused
        );
        assert!(err.to_string().contains("connect failed"), "{err}");
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
