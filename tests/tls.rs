//! TLS on a live QueuedFramed: STARTTLS, stoptls, autostart,
//! verification, against our own peer and the `openssl` command-line tool.
//!
//! Everything runs on 127.0.0.1 (or an in-memory pipe where TCP does not
//! matter), and every wait is bounded by [`within`] so a broken handshake
//! fails the test instead of hanging it.
#![cfg(any(feature = "tls", feature = "rustls"))]

mod support;

#[path = "support/net.rs"]
mod net;
#[path = "support/pki.rs"]
mod pki;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use anyframe::codecs::{ChunkCodec, LineCodec, TlsDetectCodec};
use anyframe::tls::{TlsBackend, TlsServer};
use anyframe::{Error, ErrorKind, OrEof, QueuedFramed, Timeout};
use net::tcp_pair;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStdin, ChildStdout};

/// The bound on every wait in this file.
const LIMIT: Duration = Duration::from_secs(20);

async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(LIMIT, f).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {LIMIT:?}: {what}"),
    }
}

async fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

/// A TLS client and a TLS server (`Builder::tls`) over loopback TCP, with
/// backend `b` on both ends and the handshake done.
async fn tls_pair_on(b: TlsBackend) -> (QueuedFramed<TcpStream>, QueuedFramed<TcpStream>) {
    mixed_pair(b, b).await
}

/// As [`tls_pair_on`], with backend `cb` on the client and `sb` on the
/// server.
async fn mixed_pair(
    cb: TlsBackend,
    sb: TlsBackend,
) -> (QueuedFramed<TcpStream>, QueuedFramed<TcpStream>) {
    let (c, s) = tcp_pair().await;
    let mut client = QueuedFramed::builder()
        .tls(pki::client_on(cb))
        .build_tcp(c)
        .unwrap();
    let mut server = QueuedFramed::builder()
        .tls(pki::localhost_on(sb))
        .build_tcp(s)
        .unwrap();
    // A flush drives the handshake (it runs before any write).
    let (a, b) = within("handshake", async {
        tokio::join!(client.flush(), server.flush())
    })
    .await;
    a.unwrap();
    b.unwrap();
    assert!(client.is_tls() && server.is_tls());
    (client, server)
}

// ----- TLS from the start ----------------------------------------------------

/// `Builder::tls` on both ends: the inline client (`connect`) and a spawned
/// client (`spawn_connect`, with its requests queued before the connection
/// and the handshake exist) talk to servers built with `build_tcp`.
#[tokio::test]
async fn tls_from_the_start_with_builder_tls_connect_and_accept() {
    for &b in pki::BACKENDS {
        tls_from_the_start_with_builder_tls_connect_and_accept_on(b).await;
    }
}

async fn tls_from_the_start_with_builder_tls_connect_and_accept_on(b: TlsBackend) {
    let (l, addr) = listener().await;
    let server = tokio::spawn(async move {
        let mut sessions = Vec::new();
        for _ in 0..2 {
            let (sock, _) = l.accept().await.unwrap();
            sessions.push(tokio::spawn(async move {
                let mut conn = QueuedFramed::builder()
                    .tls(pki::localhost_on(b))
                    .build_tcp(sock)
                    .unwrap();
                let got = conn.read(LineCodec::new()).await.unwrap();
                assert!(conn.is_tls());
                conn.write(LineCodec::new(), [&b"tls echo: "[..], got.line()].concat())
                    .await
                    .unwrap();
                // The client's close_notify is a clean end of input.
                assert!(
                    conn.read(OrEof::new(LineCodec::new()))
                        .await
                        .unwrap()
                        .is_none()
                );
            }));
        }
        for s in sessions {
            s.await.unwrap();
        }
    });

    within("inline client", async {
        let mut conn = QueuedFramed::builder()
            .tls(pki::client_on(b))
            .connect(addr)
            .await
            .unwrap();
        conn.write(LineCodec::new(), "inline").await.unwrap();
        assert!(conn.is_tls());
        assert_eq!(
            conn.read(LineCodec::new()).await.unwrap().line(),
            b"tls echo: inline"
        );
        conn.shutdown_write().await.unwrap();
    })
    .await;

    within("spawned client", async {
        let (h, driver) = QueuedFramed::builder()
            .tls(pki::client_on(b))
            .spawn_connect(addr);
        // Queued before the socket or the TLS session exist.
        h.push_write(LineCodec::new(), "spawned").unwrap();
        let reply = h.push_read(LineCodec::new());
        assert_eq!(reply.await.unwrap().line(), b"tls echo: spawned");
        assert!(h.is_tls());
        h.push_shutdown().unwrap();
        h.flush().await.unwrap();
        drop(h);
        driver.await.unwrap();
    })
    .await;
    within("server", server).await.unwrap();
}

// ----- STARTTLS --------------------------------------------------------------

/// The existing sequential SMTP shape over an in-memory pipe.
#[tokio::test]
async fn starttls_after_a_plaintext_exchange_then_lines_over_tls() {
    for &b in pki::BACKENDS {
        starttls_after_a_plaintext_exchange_then_lines_over_tls_on(b).await;
    }
}

async fn starttls_after_a_plaintext_exchange_then_lines_over_tls_on(b: TlsBackend) {
    let (a, s) = tokio::io::duplex(16 * 1024);
    let server = tokio::spawn(async move {
        let mut conn = QueuedFramed::new(s);
        assert_eq!(
            conn.read(LineCodec::new()).await.unwrap().line(),
            b"STARTTLS"
        );
        conn.push_write(LineCodec::new(), "220 ready").unwrap();
        conn.starttls(pki::localhost_on(b)).await.unwrap();
        assert!(conn.is_tls());
        let secret = conn.read(LineCodec::new()).await.unwrap();
        conn.write(LineCodec::new(), [&b"got "[..], secret.line()].concat())
            .await
            .unwrap();
    });
    within("client", async {
        let mut conn = QueuedFramed::new(a);
        conn.write(LineCodec::new(), "STARTTLS").await.unwrap();
        assert_eq!(
            conn.read(LineCodec::new()).await.unwrap().line(),
            b"220 ready"
        );
        conn.starttls(pki::client_on(b)).await.unwrap();
        conn.write(LineCodec::new(), "secret").await.unwrap();
        assert_eq!(
            conn.read(LineCodec::new()).await.unwrap().line(),
            b"got secret"
        );
    })
    .await;
    within("server", server).await.unwrap();
}

/// A client transport that pipelines STARTTLS: its first write (the
/// ClientHello) goes out as `command` + ClientHello in ONE write call, and
/// the first line it receives (the server's plaintext answer) is taken off
/// the input, into `answer`, before the TLS library sees the stream.
struct Pipelined<IO> {
    io: IO,
    command: Option<Vec<u8>>,
    /// Bytes of the combined first write that `io` has not accepted yet.
    unsent: Vec<u8>,
    answer: Arc<Mutex<Vec<u8>>>,
    answer_done: bool,
    /// Input read past the answer's line end, served next.
    carry: Vec<u8>,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Pipelined<IO> {
    fn new(io: IO, command: &[u8], answer: Arc<Mutex<Vec<u8>>>) -> Pipelined<IO> {
        Pipelined {
            io,
            command: Some(command.to_vec()),
            unsent: Vec::new(),
            answer,
            answer_done: false,
            carry: Vec::new(),
        }
    }

    fn poll_unsent(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.unsent.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.unsent))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.unsent.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for Pipelined<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while !this.answer_done {
            let mut tmp = [0u8; 1024];
            let mut rb = ReadBuf::new(&mut tmp);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                return Poll::Ready(Ok(()));
            }
            let mut answer = this.answer.lock().unwrap();
            answer.extend_from_slice(rb.filled());
            if let Some(i) = answer.iter().position(|&b| b == b'\n') {
                this.carry = answer.split_off(i + 1);
                this.answer_done = true;
            }
        }
        if !this.carry.is_empty() {
            let n = this.carry.len().min(buf.remaining());
            buf.put_slice(&this.carry[..n]);
            this.carry.drain(..n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Pipelined<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_unsent(cx))?;
        if let Some(mut first) = this.command.take() {
            first.extend_from_slice(buf);
            this.unsent = first;
            // One write call for both; whatever the socket does not take
            // now goes out with the next write or flush.
            if let Poll::Ready(Err(e)) = this.poll_unsent(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_unsent(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_unsent(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// `STARTTLS\r\n` and the ClientHello arrive in one TCP segment, so the
/// server's first read holds both. The ClientHello must reach the TLS
/// engine through the replay prefix (the handshake succeeds) and must
/// never be delivered to a request as data.
#[tokio::test]
async fn starttls_with_the_client_hello_in_the_same_write_uses_the_buffered_hello() {
    for &b in pki::BACKENDS {
        starttls_with_buffered_hello(b, b).await;
    }
}

/// Client of backend `cb`, server of backend `sb`.
async fn starttls_with_buffered_hello(cb: TlsBackend, sb: TlsBackend) {
    let (c, s) = tcp_pair().await;
    let server = tokio::spawn(async move {
        let mut conn = QueuedFramed::new(s);
        let cmd = conn.read(LineCodec::new()).await.unwrap();
        assert_eq!(cmd.line(), b"STARTTLS");
        // The ClientHello came in the same read, behind the command.
        let buffered = conn.read_buffer().to_vec();
        assert!(
            buffered.len() > 40 && buffered[0] == 0x16 && buffered[1] == 0x03,
            "expected a TLS record behind the command, got {:02x?}",
            &buffered[..buffered.len().min(8)]
        );
        conn.push_write(LineCodec::new(), "220 ready").unwrap();
        conn.starttls(pki::localhost_on(sb)).await.unwrap();
        assert!(conn.is_tls());
        assert!(conn.read_buffer().is_empty(), "the hello was handed on");
        // The only line after the command is the one sent over TLS.
        let secret = conn.read(LineCodec::new()).await.unwrap();
        assert_eq!(secret.line(), b"secret over tls");
        conn.write(LineCodec::new(), "ok").await.unwrap();
        buffered.len()
    });
    let answer = Arc::new(Mutex::new(Vec::new()));
    within("client", async {
        let mut conn = QueuedFramed::new(Pipelined::new(c, b"STARTTLS\r\n", answer.clone()));
        conn.starttls(pki::client_on(cb)).await.unwrap();
        conn.write(LineCodec::new(), "secret over tls")
            .await
            .unwrap();
        assert_eq!(conn.read(LineCodec::new()).await.unwrap().line(), b"ok");
    })
    .await;
    let hello_len = within("server", server).await.unwrap();
    assert_eq!(&answer.lock().unwrap()[..], b"220 ready\n");
    eprintln!("the server's first read held STARTTLS and a {hello_len}-byte ClientHello");
}

/// The classic STARTTLS injection (CVE-2011-0411): plaintext sent behind
/// `STARTTLS` in the same packet is taken as the start of the TLS stream,
/// so the handshake fails (EPROTO, fatal) and the injected command is never
/// read as a command.
#[tokio::test]
async fn plaintext_injected_behind_starttls_is_never_delivered() {
    for &b in pki::BACKENDS {
        plaintext_injected_behind_starttls_is_never_delivered_on(b).await;
    }
}

async fn plaintext_injected_behind_starttls_is_never_delivered_on(b: TlsBackend) {
    let (mut c, s) = tcp_pair().await;
    c.write_all(b"STARTTLS\r\nRCPT TO:<injected@example.org>\r\n")
        .await
        .unwrap();
    let mut conn = QueuedFramed::new(s);
    within("server", async {
        assert_eq!(
            conn.read(LineCodec::new()).await.unwrap().line(),
            b"STARTTLS"
        );
        conn.push_write(LineCodec::new(), "220 ready").unwrap();
        let e = conn.starttls(pki::localhost_on(b)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");
        assert!(e.is_fatal() && conn.is_closed(), "{e}");
        assert!(e.tls_error().is_some_and(|t| t.is_handshake()), "{e:?}");
        let again = conn.read(LineCodec::new()).await.unwrap_err();
        assert_eq!(again.kind(), ErrorKind::Protocol);
    })
    .await;
    // The 220 still went out in plaintext, before the handshake began.
    let mut got = [0u8; 10];
    within("client", c.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, b"220 ready\n");
}

/// The client used by the SMTP-shape tests: greeting, STARTTLS, 220,
/// handshake, one command over TLS.
async fn smtp_shape_client(sock: TcpStream, b: TlsBackend) {
    let mut conn = QueuedFramed::new(sock);
    assert_eq!(
        conn.read(LineCodec::new()).await.unwrap().line(),
        b"220 smtp.test ESMTP"
    );
    conn.write(LineCodec::new(), "STARTTLS").await.unwrap();
    assert_eq!(
        conn.read(LineCodec::new()).await.unwrap().line(),
        b"220 ready"
    );
    conn.starttls(pki::client_on(b)).await.unwrap();
    conn.write(LineCodec::new(), "EHLO over tls").await.unwrap();
    assert_eq!(
        conn.read(LineCodec::new()).await.unwrap().line(),
        b"250 hello over tls"
    );
}

/// The SMTP shape inside the engine, on a spawned `Handle`: a completion
/// reads `STARTTLS`, queues `220 ready` and starts TLS. A request queued
/// behind it before any byte arrived reads decrypted data.
#[tokio::test]
async fn smtp_shape_starttls_from_inside_a_completion_on_a_handle() {
    for &b in pki::BACKENDS {
        smtp_shape_starttls_from_inside_a_completion_on_a_handle_on(b).await;
    }
}

async fn smtp_shape_starttls_from_inside_a_completion_on_a_handle_on(b: TlsBackend) {
    let (c, s) = tcp_pair().await;
    let server = tokio::spawn(async move {
        let (h, driver) = QueuedFramed::new(s).spawn();
        h.push_write(LineCodec::new(), "220 smtp.test ESMTP")
            .unwrap();
        let tls = pki::localhost_on(b);
        let upgrade = h.push_read_with(LineCodec::new(), move |cmd, q| {
            q.push_write(LineCodec::new(), "220 ready")?;
            Ok((cmd.into_line(), q.starttls(tls)))
        });
        let ehlo = h.push_read(LineCodec::new());
        let (cmd, handshake) = upgrade.await.unwrap();
        assert_eq!(cmd, "STARTTLS");
        handshake.await.unwrap();
        assert!(h.is_tls());
        assert_eq!(ehlo.await.unwrap().line(), b"EHLO over tls");
        h.push_write(LineCodec::new(), "250 hello over tls")
            .unwrap();
        h.flush().await.unwrap();
        drop(h);
        driver.await.unwrap();
    });
    within("client", smtp_shape_client(c, b)).await;
    within("server", server).await.unwrap();
}

/// The same shape on an inline `QueuedFramed`, waiting for the handshake's
/// ticket with `wait` while nothing else is queued.
#[tokio::test]
async fn smtp_shape_starttls_from_inside_a_completion_inline() {
    for &b in pki::BACKENDS {
        smtp_shape_starttls_from_inside_a_completion_inline_on(b).await;
    }
}

async fn smtp_shape_starttls_from_inside_a_completion_inline_on(b: TlsBackend) {
    let (c, s) = tcp_pair().await;
    let server = tokio::spawn(async move {
        let mut conn = QueuedFramed::new(s);
        conn.push_write(LineCodec::new(), "220 smtp.test ESMTP")
            .unwrap();
        let tls = pki::localhost_on(b);
        let upgrade = conn.push_read_with(LineCodec::new(), move |cmd, q| {
            q.push_write(LineCodec::new(), "220 ready")?;
            Ok((cmd.into_line(), q.starttls(tls)))
        });
        let (cmd, handshake) = conn.wait(upgrade).await.unwrap();
        assert_eq!(cmd, "STARTTLS");
        conn.wait(handshake).await.unwrap();
        assert!(conn.is_tls());
        assert_eq!(
            conn.read(LineCodec::new()).await.unwrap().line(),
            b"EHLO over tls"
        );
        conn.write(LineCodec::new(), "250 hello over tls")
            .await
            .unwrap();
    });
    within("client", smtp_shape_client(c, b)).await;
    within("server", server).await.unwrap();
}

/// TLS-2: output queued before `starttls` (held back here by autocork)
/// goes out in plaintext, ahead of the ClientHello; output queued after
/// it goes out encrypted.
#[tokio::test]
async fn queued_plaintext_is_flushed_before_the_client_hello() {
    for &b in pki::BACKENDS {
        queued_plaintext_is_flushed_before_the_client_hello_on(b).await;
    }
}

async fn queued_plaintext_is_flushed_before_the_client_hello_on(b: TlsBackend) {
    let (c, s) = tcp_pair().await;
    let server = tokio::spawn(async move {
        let mut conn = QueuedFramed::new(s);
        assert_eq!(
            conn.read(LineCodec::new()).await.unwrap().line(),
            b"PLAINTEXT-BEFORE"
        );
        // The next bytes on the wire are a TLS handshake record.
        let verdict = conn.read(TlsDetectCodec::new()).await.unwrap();
        assert!(verdict.is_tls(), "{verdict:?}");
        conn.starttls(pki::localhost_on(b)).await.unwrap();
        assert_eq!(
            conn.read(LineCodec::new()).await.unwrap().line(),
            b"ENCRYPTED-AFTER"
        );
    });
    within("client", async {
        let (h, driver) = QueuedFramed::builder()
            .autocork(true)
            .build_tcp(c)
            .unwrap()
            .spawn();
        h.push_write(LineCodec::new(), "PLAINTEXT-BEFORE").unwrap();
        let handshake = h.starttls(pki::client_on(b));
        h.push_write(LineCodec::new(), "ENCRYPTED-AFTER").unwrap();
        handshake.await.unwrap();
        h.flush().await.unwrap();
        drop(h);
        driver.await.unwrap();
    })
    .await;
    within("server", server).await.unwrap();
}

/// Inline: a STARTTLS queued behind a read, then `shutdown_write`. The
/// write side closes after the handshake (a shutdown before the ClientHello
/// would end the upgrade), and the flush that waits for it drives the read
/// and the switch before it instead of waiting for a caller that is busy
/// awaiting the flush.
#[tokio::test]
async fn inline_shutdown_after_a_queued_starttls_closes_after_the_handshake() {
    for &b in pki::BACKENDS {
        inline_shutdown_after_a_queued_starttls_closes_after_the_handshake_on(b).await;
    }
}

async fn inline_shutdown_after_a_queued_starttls_closes_after_the_handshake_on(b: TlsBackend) {
    let (c, s) = tcp_pair().await;
    let server = tokio::spawn(async move {
        let mut conn = QueuedFramed::new(s);
        assert_eq!(
            conn.read(LineCodec::new()).await.unwrap().line(),
            b"STARTTLS"
        );
        conn.write(LineCodec::new(), "GO").await.unwrap();
        conn.starttls(pki::localhost_on(b)).await.unwrap();
        // Then a clean end: close_notify and EOF, nothing else.
        let end = conn.read(LineCodec::new()).await.unwrap_err();
        assert!(end.is_eof() && end.tls_error().is_none(), "{end:?}");
    });
    within("client", async {
        let mut conn = QueuedFramed::new(c);
        conn.push_write(LineCodec::new(), "STARTTLS").unwrap();
        let go = conn.push_read(LineCodec::new());
        let upgraded = conn.push_starttls(pki::client_on(b));
        conn.shutdown_write().await.unwrap();
        assert_eq!(conn.wait(go).await.unwrap().line(), b"GO");
        conn.wait(upgraded).await.unwrap();
    })
    .await;
    within("server", server).await.unwrap();
}

#[tokio::test]
async fn starttls_while_tls_is_active_is_einval_and_harmless() {
    for &b in pki::BACKENDS {
        starttls_while_tls_is_active_is_einval_and_harmless_on(b).await;
    }
}

async fn starttls_while_tls_is_active_is_einval_and_harmless_on(b: TlsBackend) {
    let (mut client, mut server) = tls_pair_on(b).await;
    within("both", async {
        let e = client.starttls(pki::client_on(b)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        assert!(!e.is_fatal() && !client.is_closed() && client.is_tls());
        client.write(LineCodec::new(), "still fine").await.unwrap();
        assert_eq!(
            server.read(LineCodec::new()).await.unwrap().line(),
            b"still fine"
        );
    })
    .await;
}

// ----- tls_autostart ---------------------------------------------------------

/// Serves `n` connections on one listener: detect TLS, upgrade if the
/// client starts with a handshake, then answer one line saying which it was.
/// `spawned`: with `Handle::push_tls_autostart`, else with the inline
/// `QueuedFramed::tls_autostart`.
async fn autostart_server(l: TcpListener, n: usize, spawned: bool, b: TlsBackend) {
    let mut sessions = Vec::new();
    for _ in 0..n {
        let (sock, _) = l.accept().await.unwrap();
        sessions.push(tokio::spawn(async move {
            if spawned {
                let (h, driver) = QueuedFramed::new(sock).spawn();
                let verdict = h.push_tls_autostart(pki::localhost_on(b));
                let hello = h.push_read(LineCodec::new());
                let tls = verdict.await.unwrap().is_tls();
                let hello = hello.await.unwrap();
                assert_eq!(tls, h.is_tls());
                let kind = if tls { "tls" } else { "plain" };
                h.push_write(
                    LineCodec::new(),
                    [kind.as_bytes(), b" ", hello.line()].concat(),
                )
                .unwrap();
                h.flush().await.unwrap();
                drop(h);
                driver.await.unwrap();
            } else {
                let mut conn = QueuedFramed::new(sock);
                let tls = conn
                    .tls_autostart(pki::localhost_on(b))
                    .await
                    .unwrap()
                    .is_tls();
                assert_eq!(tls, conn.is_tls());
                let hello = conn.read(LineCodec::new()).await.unwrap();
                let kind = if tls { "tls" } else { "plain" };
                conn.write(
                    LineCodec::new(),
                    [kind.as_bytes(), b" ", hello.line()].concat(),
                )
                .await
                .unwrap();
            }
        }));
    }
    for s in sessions {
        s.await.unwrap();
    }
}

async fn autostart_clients(addr: SocketAddr, b: TlsBackend) {
    let tls_client = async {
        let mut conn = QueuedFramed::builder()
            .tls(pki::client_on(b))
            .connect(addr)
            .await
            .unwrap();
        conn.write(LineCodec::new(), "hello").await.unwrap();
        assert_eq!(
            conn.read(LineCodec::new()).await.unwrap().line(),
            b"tls hello"
        );
    };
    let plain_client = async {
        let mut conn = QueuedFramed::builder().connect(addr).await.unwrap();
        conn.write(LineCodec::new(), "hello").await.unwrap();
        assert_eq!(
            conn.read(LineCodec::new()).await.unwrap().line(),
            b"plain hello"
        );
    };
    tokio::join!(tls_client, plain_client);
}

#[tokio::test]
async fn autostart_serves_tls_and_plaintext_clients_on_one_listener_with_a_handle() {
    for &b in pki::BACKENDS {
        let (l, addr) = listener().await;
        let server = tokio::spawn(autostart_server(l, 2, true, b));
        within("clients", autostart_clients(addr, b)).await;
        within("server", server).await.unwrap();
    }
}

#[tokio::test]
async fn autostart_serves_tls_and_plaintext_clients_on_one_listener_inline() {
    for &b in pki::BACKENDS {
        let (l, addr) = listener().await;
        let server = tokio::spawn(autostart_server(l, 2, false, b));
        within("clients", autostart_clients(addr, b)).await;
        within("server", server).await.unwrap();
    }
}

// ----- stoptls and the end of a TLS stream -----------------------------------

/// Both ends stop TLS; plaintext goes on over the same socket and nothing
/// sent before, between or after the close_notify alerts is lost. At the
/// end both hand the bare socket back and talk over it directly.
#[tokio::test]
async fn stoptls_round_trip_then_plaintext_on_the_same_socket() {
    for &b in pki::BACKENDS {
        stoptls_round_trip_then_plaintext_on_the_same_socket_between(b, b).await;
    }
}

/// Client of backend `cb`, server of backend `sb`.
async fn stoptls_round_trip_then_plaintext_on_the_same_socket_between(
    cb: TlsBackend,
    sb: TlsBackend,
) {
    let (mut client, mut server) = mixed_pair(cb, sb).await;
    let server = tokio::spawn(async move {
        let conn = &mut server;
        assert_eq!(
            conn.read(LineCodec::new()).await.unwrap().line(),
            b"client: over tls, then stop"
        );
        conn.push_write(LineCodec::new(), "server: over tls, then stop")
            .unwrap();
        conn.stoptls().await.unwrap();
        assert!(!conn.is_tls());
        conn.write(LineCodec::new(), "server: plaintext")
            .await
            .unwrap();
        assert_eq!(
            conn.read(LineCodec::new()).await.unwrap().line(),
            b"client: plaintext"
        );
        // Both directions are plaintext: take the socket back.
        let parts = server.into_parts();
        let mut raw = parts.io;
        let mut got = parts.read_buf.to_vec();
        while !got.ends_with(b"\n") {
            let mut buf = [0u8; 64];
            let n = raw.read(&mut buf).await.unwrap();
            assert!(n > 0, "EOF after {got:?}");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"client: raw\n");
        raw.write_all(b"server: raw\n").await.unwrap();
    });
    within("client", async {
        client
            .push_write(LineCodec::new(), "client: over tls, then stop")
            .unwrap();
        client.stoptls().await.unwrap();
        assert!(!client.is_tls());
        // Sent after our close_notify, before the server's has arrived.
        client
            .write(LineCodec::new(), "client: plaintext")
            .await
            .unwrap();
        // Still TLS until the server's close_notify, then plaintext.
        assert_eq!(
            client.read(LineCodec::new()).await.unwrap().line(),
            b"server: over tls, then stop"
        );
        assert_eq!(
            client.read(LineCodec::new()).await.unwrap().line(),
            b"server: plaintext"
        );
        let parts = client.into_parts();
        assert!(parts.read_buf.is_empty() && parts.write_buf.is_empty());
        let mut raw = parts.io;
        raw.write_all(b"client: raw\n").await.unwrap();
        let mut got = [0u8; 12];
        raw.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"server: raw\n");
    })
    .await;
    within("server", server).await.unwrap();
}

/// We stop TLS; the peer drops its TLS state without answering (no
/// close_notify, as AnyEvent::Handle's `on_stoptls` does) and goes on in
/// plaintext. Our read side still waits for the peer's close_notify, so the
/// plaintext is a broken record: EPROTO, fatal, never delivered as data.
#[tokio::test]
async fn plaintext_after_our_close_notify_without_the_peers_is_eproto() {
    for &b in pki::BACKENDS {
        plaintext_after_our_close_notify_without_the_peers_is_eproto_on(b).await;
    }
}

async fn plaintext_after_our_close_notify_without_the_peers_is_eproto_on(b: TlsBackend) {
    let (mut client, server) = tls_pair_on(b).await;
    within("both", async {
        client.stoptls().await.unwrap();
        let mut raw = server.into_parts().io;
        raw.write_all(b"plain from the peer\n").await.unwrap();
        let e = client.read(LineCodec::new()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol, "{b:?}: {e}");
        assert!(e.is_fatal() && client.is_closed(), "{e}");
        assert!(e.tls_error().is_some(), "{e:?}");
    })
    .await;
}

/// Data decrypted ahead of a broken record is delivered first: the line
/// the peer sent over TLS, then EPROTO for the plaintext it wrote behind
/// it, though both arrive in one read.
#[tokio::test]
async fn data_ahead_of_a_broken_record_is_delivered_before_eproto() {
    for &b in pki::BACKENDS {
        data_ahead_of_a_broken_record_is_delivered_before_eproto_on(b).await;
    }
}

async fn data_ahead_of_a_broken_record_is_delivered_before_eproto_on(b: TlsBackend) {
    let (mut client, mut server) = tls_pair_on(b).await;
    within("both", async {
        server.write(LineCodec::new(), "over tls").await.unwrap();
        let mut raw = server.into_parts().io;
        raw.write_all(b"plain behind the record\n").await.unwrap();
        let line = client
            .read(LineCodec::new())
            .await
            .unwrap_or_else(|e| panic!("{b:?}: {e}"));
        assert_eq!(line.line(), b"over tls", "{b:?}");
        let e = client.read(LineCodec::new()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol, "{b:?}: {e}");
        assert!(e.is_fatal() && client.is_closed(), "{e}");
    })
    .await;
}

/// A client whose last handshake flight carries plaintext behind it, in
/// one write: the server's handshake completes and its first read is a
/// protocol error, not a failed handshake.
#[cfg(feature = "rustls")]
#[tokio::test]
async fn plaintext_behind_the_clients_finished_fails_the_first_read() {
    for &b in pki::BACKENDS {
        plaintext_behind_the_clients_finished_fails_the_first_read_on(b).await;
    }
}

#[cfg(feature = "rustls")]
async fn plaintext_behind_the_clients_finished_fails_the_first_read_on(b: TlsBackend) {
    use anyframe::tls::rustls;
    let (c, s) = tcp_pair().await;
    let mut server = QueuedFramed::builder()
        .tls(pki::localhost_on(b))
        .build_tcp(s)
        .unwrap();
    let client = async move {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki::pki().ca_der.clone().into()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut sock = c;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let mut out = Vec::new();
            while tls.wants_write() {
                tls.write_tls(&mut out).unwrap();
            }
            if !tls.is_handshaking() {
                out.extend_from_slice(b"plain behind the finished\n");
                sock.write_all(&out).await.unwrap();
                return sock;
            }
            sock.write_all(&out).await.unwrap();
            let n = sock.read(&mut buf).await.unwrap();
            assert!(n > 0, "the server hung up mid-handshake");
            let mut got = &buf[..n];
            while !got.is_empty() {
                tls.read_tls(&mut got).unwrap();
            }
            tls.process_new_packets().unwrap();
        }
    };
    within("both", async {
        let (e, _sock) = tokio::join!(server.read(LineCodec::new()), client);
        let e = e.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol, "{b:?}: {e}");
        assert!(e.is_fatal(), "{b:?}: {e}");
        let tls = e.tls_error().expect("a TLS error");
        assert!(!tls.is_handshake(), "{b:?}: {e:?}");
    })
    .await;
}

/// The peer's close_notify (sent by `shutdown_write` over TLS) is a clean
/// end of input: `OrEof` gives `None`, a later read is plain `EPIPE` with
/// no TLS error behind it.
#[tokio::test]
async fn peer_close_notify_is_a_clean_eof() {
    for &b in pki::BACKENDS {
        peer_close_notify_is_a_clean_eof_between(b, b).await;
    }
}

/// Client of backend `cb`, server of backend `sb`.
async fn peer_close_notify_is_a_clean_eof_between(cb: TlsBackend, sb: TlsBackend) {
    let (mut client, mut server) = mixed_pair(cb, sb).await;
    within("both", async {
        server.push_write(LineCodec::new(), "last words").unwrap();
        server.shutdown_write().await.unwrap();
        assert_eq!(
            client.read(LineCodec::new()).await.unwrap().line(),
            b"last words"
        );
        assert!(
            client
                .read(OrEof::new(LineCodec::new()))
                .await
                .unwrap()
                .is_none()
        );
        assert!(client.is_eof() && !client.is_closed());
        let e = client.read(LineCodec::new()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BrokenPipe, "{e}");
        assert!(e.tls_error().is_none(), "{e:?}");
    })
    .await;
}

/// A TCP end of input without close_notify is truncation: EPROTO, fatal,
/// `tls_error().is_truncated()`, even where a clean end would be fine.
#[tokio::test]
async fn tcp_eof_without_close_notify_is_eproto_truncated() {
    for &b in pki::BACKENDS {
        tcp_eof_without_close_notify_is_eproto_truncated_between(b, b).await;
    }
}

/// Client of backend `cb`, server of backend `sb`.
async fn tcp_eof_without_close_notify_is_eproto_truncated_between(cb: TlsBackend, sb: TlsBackend) {
    let (mut client, mut server) = mixed_pair(cb, sb).await;
    within("both", async {
        server
            .write(LineCodec::new(), "complete line")
            .await
            .unwrap();
        // Drop the TLS session without close_notify, then send a FIN.
        let mut raw = server.into_parts().io;
        raw.shutdown().await.unwrap();
        assert_eq!(
            client.read(LineCodec::new()).await.unwrap().line(),
            b"complete line"
        );
        let e = client.read(OrEof::new(LineCodec::new())).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");
        assert!(e.is_fatal() && client.is_closed());
        assert!(e.tls_error().unwrap().is_truncated(), "{e:?}");
        assert!(e.to_string().contains("close_notify"), "{e}");
    })
    .await;
}

/// The client sends `hello` and `world` in one TLS record; the server reads
/// the first line, so the second is left in its read buffer.
async fn hello_read_world_buffered(
    client: &mut QueuedFramed<TcpStream>,
    server: &mut QueuedFramed<TcpStream>,
    b: TlsBackend,
) {
    client.push_write(LineCodec::new(), "hello").unwrap();
    client.push_write(LineCodec::new(), "world").unwrap();
    within("write", client.flush()).await.unwrap();
    let first = within("first", server.read(LineCodec::new())).await;
    assert_eq!(first.unwrap().line(), b"hello", "{b:?}");
    assert_eq!(server.read_buffer(), b"world\n", "{b:?}");
}

/// A STARTTLS refused while TLS is up (EINVAL) changes nothing: it fails
/// its own ticket only, and the read queued behind it gets the bytes that
/// were already buffered.
#[tokio::test]
async fn a_starttls_refused_while_tls_is_up_fails_only_its_own_ticket() {
    for &b in pki::BACKENDS {
        let (mut client, mut server) = tls_pair_on(b).await;
        hello_read_world_buffered(&mut client, &mut server, b).await;
        let start = server.push_starttls(pki::localhost_on(b));
        let read = server.push_read(LineCodec::new());
        let e = within("start", server.wait(start)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{b:?}: {e}");
        assert!(!e.is_fatal(), "{b:?}: {e}");
        let line = within("read", server.wait(read)).await;
        assert_eq!(line.unwrap().line(), b"world", "{b:?}");
        assert!(server.is_tls());
    }
}

/// A STARTTLS refused on a connection that is not in TLS (here TLS is
/// still winding down after our stoptls: the peer's close_notify has not
/// been read) closes the connection: what was queued behind it was meant
/// for TLS (TLS-1, TLS-4).
#[tokio::test]
async fn a_starttls_refused_while_tls_winds_down_closes_the_connection() {
    for &b in pki::BACKENDS {
        let (mut client, mut server) = tls_pair_on(b).await;
        within("stop", server.stoptls()).await.unwrap();
        // The client has not stopped: its lines go over TLS.
        hello_read_world_buffered(&mut client, &mut server, b).await;
        let start = server.push_starttls(pki::localhost_on(b));
        let read = server.push_read(LineCodec::new());
        let e = within("start", server.wait(start)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{b:?}: {e}");
        assert!(e.is_fatal(), "{b:?}: {e}");
        let source = std::error::Error::source(&e).map(ToString::to_string);
        assert!(
            source.is_some_and(|s| s.contains("still stopping")),
            "{b:?}: {e}"
        );
        assert!(server.wait(read).await.unwrap_err().is_fatal());
        assert!(server.is_closed());
        // What was read before stays where it was, for `into_parts`.
        assert_eq!(server.read_buffer(), b"world\n", "{b:?}");
    }
}

/// A TLS pair of backend `b` with the handshake done and every write of the
/// server recorded, for the two tests below.
async fn tapped_server_pair(
    b: TlsBackend,
) -> (
    QueuedFramed<TcpStream>,
    QueuedFramed<support::Tap<TcpStream>>,
    support::Writes,
) {
    let (c, s) = tcp_pair().await;
    let mut client = QueuedFramed::builder()
        .tls(pki::client_on(b))
        .build_tcp(c)
        .unwrap();
    let (tap, writes) = support::Tap::new(s);
    let mut server = QueuedFramed::builder().tls(pki::localhost_on(b)).build(tap);
    let (a, z) = within("handshake", async {
        tokio::join!(client.flush(), server.flush())
    })
    .await;
    a.unwrap();
    z.unwrap();
    (client, server, writes)
}

/// Whether `secret` appears in what was written.
fn sent_in_plaintext(writes: &support::Writes) -> bool {
    support::written(writes).windows(6).any(|w| w == b"secret")
}

/// Output queued behind a STARTTLS that is refused would otherwise leave
/// in plaintext: the connection closes (fatal) instead, and none of it is
/// written (TLS-4).
#[tokio::test]
async fn output_behind_a_refused_starttls_never_leaves_in_plaintext() {
    for &b in pki::BACKENDS {
        let (_client, mut server, writes) = tapped_server_pair(b).await;
        within("stop", server.stoptls()).await.unwrap();
        let start = server.push_starttls(pki::localhost_on(b));
        server.push_write(LineCodec::new(), "secret").unwrap();
        let e = within("start", server.wait(start)).await.unwrap_err();
        assert!(e.is_fatal(), "{b:?}: {e}");
        assert!(server.is_closed(), "{b:?}");
        let _ = within("flush", server.flush()).await;
        drop(server);
        assert!(!sent_in_plaintext(&writes), "{b:?}");
    }
}

/// The same on a spawned connection, whose driver lingers over queued
/// output once its handles are gone.
#[tokio::test]
async fn output_behind_a_refused_starttls_is_not_lingered_in_plaintext() {
    for &b in pki::BACKENDS {
        let (_client, server, writes) = tapped_server_pair(b).await;
        let (handle, driver) = server.spawn();
        within("stop", handle.stoptls()).await.unwrap();
        let start = handle.starttls(pki::localhost_on(b));
        handle.push_write(LineCodec::new(), "secret").unwrap();
        let e = within("start", start).await.unwrap_err();
        assert!(e.is_fatal(), "{b:?}: {e}");
        drop(handle);
        let _ = within("driver", driver).await;
        assert!(!sent_in_plaintext(&writes), "{b:?}");
    }
}

/// Output pushed behind a STARTTLS from another thread while the driver is
/// busy goes to the handle's inbox, not yet in the write queue when the
/// STARTTLS is refused: it must not leave in plaintext either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_posted_behind_a_refused_starttls_never_leaves_in_plaintext() {
    for &b in pki::BACKENDS {
        let (mut client, server, writes) = tapped_server_pair(b).await;
        let (handle, driver) = server.spawn();
        within("stop", handle.stoptls()).await.unwrap();
        let (entered_tx, entered_rx) = std::sync::mpsc::channel::<()>();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        // A read whose completion holds the engine a moment (it runs inside
        // the driver's turn).
        let read = handle.push_read_with(LineCodec::new(), move |line, _q| {
            let _ = entered_tx.send(());
            let _ = release_rx.recv_timeout(Duration::from_secs(5));
            Ok(line)
        });
        let start = handle.starttls(pki::localhost_on(b));
        let h2 = handle.clone();
        let pusher = std::thread::spawn(move || {
            entered_rx.recv_timeout(Duration::from_secs(10)).unwrap();
            // The engine is busy: this goes into the inbox, behind the
            // STARTTLS queued above.
            h2.push_write(LineCodec::new(), "secret").unwrap();
            let _ = release_tx.send(());
        });
        // The client is still in TLS: its line goes over the old session.
        within("go", client.write(LineCodec::new(), "go"))
            .await
            .unwrap();
        let line = within("read", read).await.unwrap();
        assert_eq!(line.line(), b"go");
        let st = within("start", start).await;
        pusher.join().unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = handle.flush().await;
        drop(handle);
        let _ = within("driver", driver).await;
        assert!(
            !sent_in_plaintext(&writes),
            "{b:?}: 'secret', pushed after starttls(), went out in plaintext (start: {st:?})"
        );
    }
}

/// A STARTTLS queued while a stoptls is still queued would be judged by
/// the TLS that is on now, not the plaintext it will follow: refused as a
/// harmless EINVAL, it let the output queued behind it leave in plaintext
/// once the stoptls ran. One switch is queued at a time, and what follows
/// a refused STARTTLS was meant for TLS, so the refusal closes the
/// connection (TLS-1).
#[tokio::test]
async fn output_behind_a_starttls_queued_behind_a_stoptls_never_leaves_in_plaintext() {
    for &b in pki::BACKENDS {
        let (_client, server, writes) = tapped_server_pair(b).await;
        starttls_behind_a_queued_stoptls(server, pki::localhost_on(b), &writes, b).await;
    }
}

/// The same behind a stoptls queued on a plaintext connection (a switch
/// that changes nothing, but is still queued).
#[tokio::test]
async fn output_behind_a_starttls_queued_behind_a_plaintext_stoptls_never_leaves_in_plaintext() {
    for &b in pki::BACKENDS {
        let (c, _peer) = tokio::io::duplex(1 << 16);
        let (tap, writes) = support::Tap::new(c);
        let conn = QueuedFramed::new(tap);
        starttls_behind_a_queued_stoptls(conn, pki::client_on(b), &writes, b).await;
    }
}

/// Queues a stoptls, a STARTTLS (`mode`) and then `secret` on `conn`,
/// whose writes `writes` records: the STARTTLS is refused, fatally, and
/// `secret` is never written.
async fn starttls_behind_a_queued_stoptls<IO>(
    mut conn: QueuedFramed<IO>,
    mode: impl Into<anyframe::tls::TlsMode>,
    writes: &support::Writes,
    b: TlsBackend,
) where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let stop = conn.push_stoptls();
    let start = conn.push_starttls(mode);
    let _ = conn.push_write(LineCodec::new(), "secret");
    let e = within("start", conn.wait(start)).await.unwrap_err();
    assert!(e.is_fatal(), "{b:?}: {e}");
    assert!(conn.is_closed(), "{b:?}");
    let _ = within("stop", conn.wait(stop)).await;
    let _ = within("flush", conn.flush()).await;
    drop(conn);
    assert!(!sent_in_plaintext(writes), "{b:?}");
}

/// A completion's STARTTLS goes to the front of the queue, but its output
/// still waits behind the marker of a stoptls queued earlier: refused
/// while that stoptls was queued, it let the completion's output follow
/// the stoptls in plaintext.
#[tokio::test]
async fn output_behind_a_completions_starttls_ahead_of_a_stoptls_never_leaves_in_plaintext() {
    for &b in pki::BACKENDS {
        let (mut client, mut server, writes) = tapped_server_pair(b).await;
        let (tx, rx) = std::sync::mpsc::channel();
        let read = server.push_read_with(LineCodec::new(), move |line, q| {
            let _ = tx.send(q.starttls(pki::localhost_on(b)));
            let _ = q.push_write(LineCodec::new(), "secret");
            Ok(line)
        });
        let stop = server.push_stoptls();
        within("ask", client.write(LineCodec::new(), "go"))
            .await
            .unwrap();
        let _ = within("read", server.wait(read)).await;
        let start = rx.recv().expect("the completion ran");
        let e = within("start", start).await.unwrap_err();
        assert!(e.is_fatal(), "{b:?}: {e}");
        let _ = within("stop", server.wait(stop)).await;
        let _ = within("flush", server.flush()).await;
        drop(server);
        assert!(!sent_in_plaintext(&writes), "{b:?}");
    }
}

// ----- mixed pairs: a rustls client with a native-tls server, and the reverse --

/// The two pairs of different backends.
#[cfg(all(feature = "tls", feature = "rustls"))]
const MIXED: [(TlsBackend, TlsBackend); 2] = [
    (TlsBackend::Rustls, TlsBackend::NativeTls),
    (TlsBackend::NativeTls, TlsBackend::Rustls),
];

/// TLS from the start between different libraries: the handshake
/// (verification included), lines both ways, the server's certificate.
#[cfg(all(feature = "tls", feature = "rustls"))]
#[tokio::test]
async fn mixed_backends_handshake_and_talk_both_ways() {
    for (cb, sb) in MIXED {
        let (mut client, mut server) = mixed_pair(cb, sb).await;
        within("both", async {
            client
                .write(LineCodec::new(), "from the client")
                .await
                .unwrap();
            assert_eq!(
                server.read(LineCodec::new()).await.unwrap().line(),
                b"from the client"
            );
            server
                .write(LineCodec::new(), "from the server")
                .await
                .unwrap();
            assert_eq!(
                client.read(LineCodec::new()).await.unwrap().line(),
                b"from the server"
            );
        })
        .await;
        let cert = client.peer_certificate().expect("the server's certificate");
        assert_eq!(cert, &pki::pki().server.cert_der[..], "{cb:?} -> {sb:?}");
    }
}

/// STARTTLS with the ClientHello in the same segment as the command,
/// between different libraries.
#[cfg(all(feature = "tls", feature = "rustls"))]
#[tokio::test]
async fn mixed_backends_starttls_with_the_client_hello_in_the_same_write() {
    for (cb, sb) in MIXED {
        starttls_with_buffered_hello(cb, sb).await;
    }
}

/// stoptls agreed by both ends, then plaintext and the bare socket, between
/// different libraries.
#[cfg(all(feature = "tls", feature = "rustls"))]
#[tokio::test]
async fn mixed_backends_stoptls_round_trip_then_plaintext() {
    for (cb, sb) in MIXED {
        stoptls_round_trip_then_plaintext_on_the_same_socket_between(cb, sb).await;
    }
}

/// One library's close_notify is a clean end of input to the other, and a
/// bare TCP end of input is truncation.
#[cfg(all(feature = "tls", feature = "rustls"))]
#[tokio::test]
async fn mixed_backends_tell_close_notify_from_truncation() {
    for (cb, sb) in MIXED {
        peer_close_notify_is_a_clean_eof_between(cb, sb).await;
        tcp_eof_without_close_notify_is_eproto_truncated_between(cb, sb).await;
    }
}

// ----- verification ----------------------------------------------------------

/// Runs a handshake of a verifying client against a server presenting
/// `server_cert` and returns the client's error, after checking it is a
/// fatal EPROTO that leaves nothing usable behind.
async fn refused(b: TlsBackend, server_cert: &pki::Pem) -> Error {
    let (c, s) = tcp_pair().await;
    let tls = pki::server_on(b, server_cert);
    let server = tokio::spawn(async move {
        let mut conn = QueuedFramed::new(s);
        conn.starttls(tls).await.unwrap_err()
    });
    let mut conn = QueuedFramed::new(c);
    let e = within("client handshake", conn.starttls(pki::client_on(b)))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");
    assert!(e.is_fatal() && conn.is_closed(), "{e}");
    assert!(e.tls_error().is_some_and(|t| t.is_handshake()), "{e:?}");
    // Never continues unencrypted.
    let w = conn
        .write(LineCodec::new(), "plaintext?")
        .await
        .unwrap_err();
    assert_eq!(w.kind(), ErrorKind::Protocol);
    // The server sees the client's alert as a failed handshake too.
    let se = within("server handshake", server).await.unwrap();
    assert_eq!(se.kind(), ErrorKind::Protocol, "{se}");
    eprintln!("client: {e}\nserver: {se}");
    e
}

/// The refusal carries the TLS library's own words: OpenSSL's through
/// native-tls, or rustls's.
fn assert_reason(b: TlsBackend, e: &Error, native_tls: &str, rustls: &str) {
    let msg = e.to_string().to_lowercase();
    let (prefix, reason) = match b {
        #[cfg(feature = "rustls")]
        TlsBackend::Rustls => ("invalid peer certificate", rustls),
        _ => ("certificate verify failed", native_tls),
    };
    let _ = rustls;
    assert!(msg.contains(prefix), "{e}");
    assert!(
        msg.contains(&reason.to_lowercase()),
        "expected {reason:?} in {e}"
    );
}

#[tokio::test]
async fn a_wrong_host_certificate_is_fatal_eproto() {
    for &b in pki::BACKENDS {
        let e = refused(b, &pki::pki().wrong_host).await;
        assert_reason(b, &e, "hostname mismatch", "not valid for name");
    }
}

#[tokio::test]
async fn an_unknown_ca_is_fatal_eproto() {
    for &b in pki::BACKENDS {
        let e = refused(b, &pki::pki().unknown_ca).await;
        assert_reason(
            b,
            &e,
            "unable to get local issuer certificate",
            "UnknownIssuer",
        );
    }
}

#[tokio::test]
async fn an_expired_certificate_is_fatal_eproto() {
    for &b in pki::BACKENDS {
        let e = refused(b, &pki::pki().expired).await;
        assert_reason(b, &e, "certificate has expired", "certificate expired");
    }
}

// ----- timeouts, EOF and watermarks over TLS ---------------------------------

/// A read timeout over TLS is the same non-fatal ETIMEDOUT as in plaintext;
/// the connection goes on.
#[tokio::test]
async fn read_timeout_over_tls_is_non_fatal() {
    for &b in pki::BACKENDS {
        read_timeout_over_tls_is_non_fatal_on(b).await;
    }
}

async fn read_timeout_over_tls_is_non_fatal_on(b: TlsBackend) {
    let (mut client, mut server) = tls_pair_on(b).await;
    let server = tokio::spawn(async move {
        assert_eq!(server.read(LineCodec::new()).await.unwrap().line(), b"ping");
        server.write(LineCodec::new(), "pong").await.unwrap();
    });
    within("client", async {
        client.set_rtimeout(Duration::from_millis(150));
        // The period runs from the last read (the handshake's, which a busy
        // machine may have finished a while ago): start it now.
        client.timeout_reset(Timeout::Read);
        let started = Instant::now();
        let e = client.read(LineCodec::new()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert!(!e.is_fatal() && !client.is_closed() && client.is_tls());
        client.write(LineCodec::new(), "ping").await.unwrap();
        assert_eq!(client.read(LineCodec::new()).await.unwrap().line(), b"pong");
    })
    .await;
    within("server", server).await.unwrap();
}

/// RQ-6 over TLS: a clean TLS end of input while a request waits is fatal
/// EPIPE (not a TLS error), and the partial frame stays in the read buffer
/// that the driver hands back.
#[tokio::test]
async fn eof_with_a_queued_request_over_tls_is_epipe() {
    for &b in pki::BACKENDS {
        eof_with_a_queued_request_over_tls_is_epipe_on(b).await;
    }
}

async fn eof_with_a_queued_request_over_tls_is_epipe_on(b: TlsBackend) {
    let (c, s) = tcp_pair().await;
    let server = tokio::spawn(async move {
        let mut conn = QueuedFramed::builder()
            .tls(pki::localhost_on(b))
            .build_tcp(s)
            .unwrap();
        conn.push_bytes(&b"0123456789"[..]).unwrap();
        conn.shutdown_write().await.unwrap();
        let _ = conn.read(OrEof::new(LineCodec::new())).await;
    });
    within("client", async {
        let (h, driver) = QueuedFramed::builder()
            .tls(pki::client_on(b))
            .build_tcp(c)
            .unwrap()
            .spawn();
        let e = h.push_read(ChunkCodec::new(100)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BrokenPipe, "{e}");
        assert!(
            e.is_fatal() && e.is_eof() && e.tls_error().is_none(),
            "{e:?}"
        );
        let later = h.push_read(LineCodec::new()).await.unwrap_err();
        assert_eq!(later.kind(), ErrorKind::BrokenPipe);
        drop(h);
        let parts = driver.await.unwrap();
        assert_eq!(&parts.read_buf[..], b"0123456789");
    })
    .await;
    within("server", server).await.unwrap();
}

/// Watermarks over TLS: with the peer not reading, a producer waits above
/// the high watermark; once the peer reads, the drain edge fires once and
/// every byte arrives.
#[tokio::test]
async fn watermarks_hold_a_producer_back_over_tls() {
    for &b in pki::BACKENDS {
        watermarks_hold_a_producer_back_over_tls_on(b).await;
    }
}

async fn watermarks_hold_a_producer_back_over_tls_on(b: TlsBackend) {
    const BULK: usize = 1024 * 1024;
    let payload: Vec<u8> = (0..BULK).map(|i| (i % 251) as u8).collect();
    let (a, s) = tokio::io::duplex(8 * 1024);
    let (go, go_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let mut conn = QueuedFramed::builder().tls(pki::localhost_on(b)).build(s);
        assert_eq!(conn.read(LineCodec::new()).await.unwrap().line(), b"start");
        go_rx.await.unwrap();
        conn.read(ChunkCodec::new(BULK)).await.unwrap()
    });
    let drains = Arc::new(AtomicUsize::new(0));
    within("client", async {
        let (h, driver) = QueuedFramed::builder()
            .tls(pki::client_on(b))
            .watermarks(64 * 1024, 16 * 1024)
            .build(a)
            .spawn();
        let seen = drains.clone();
        h.on_drain(move |_| {
            seen.fetch_add(1, Ordering::SeqCst);
        });
        h.push_write(LineCodec::new(), "start").unwrap();
        h.push_bytes(payload.clone()).unwrap();
        let blocked = tokio::time::timeout(Duration::from_millis(300), h.ready_to_write()).await;
        assert!(blocked.is_err(), "a producer must wait above the high mark");
        assert_eq!(drains.load(Ordering::SeqCst), 0);
        go.send(()).unwrap();
        h.drained().await.unwrap();
        h.ready_to_write().await.unwrap();
        h.flush().await.unwrap();
        assert_eq!(drains.load(Ordering::SeqCst), 1);
        drop(h);
        driver.await.unwrap();
    })
    .await;
    let got = within("server", server).await.unwrap();
    assert!(got[..] == payload[..], "the bulk data arrived intact");
}

// ----- a real peer: the openssl command-line tool ----------------------------

fn have_openssl() -> bool {
    support::have_peer("openssl", &["version"], "the openssl command-line tool")
}

/// An `openssl` child process driven through its stdin and stdout; killed
/// when dropped. Its stderr is collected for failure messages.
struct OpenSsl {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: tokio::io::Lines<tokio::io::BufReader<ChildStdout>>,
    stderr: Arc<Mutex<String>>,
    stderr_done: tokio::task::JoinHandle<()>,
    seen: Vec<String>,
}

impl OpenSsl {
    fn spawn(args: &[&str]) -> OpenSsl {
        let mut child = tokio::process::Command::new("openssl")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn openssl");
        let stdin = child.stdin.take();
        let stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = stderr.clone();
        let stderr_done = tokio::spawn(async move {
            while let Ok(Some(l)) = err.next_line().await {
                let mut s = sink.lock().unwrap();
                s.push_str(&l);
                s.push('\n');
            }
        });
        OpenSsl {
            child,
            stdin,
            stdout,
            stderr,
            stderr_done,
            seen: Vec::new(),
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Reads stdout lines until one contains `pat`, and returns it.
    async fn line_containing(&mut self, pat: &str) -> String {
        let found = tokio::time::timeout(LIMIT, async {
            loop {
                match self.stdout.next_line().await {
                    Ok(Some(l)) => {
                        self.seen.push(l.clone());
                        if l.contains(pat) {
                            return Some(l);
                        }
                    }
                    _ => return None,
                }
            }
        })
        .await;
        match found {
            Ok(Some(l)) => l,
            _ => panic!(
                "openssl never printed {pat:?}\nstdout: {:#?}\nstderr: {}",
                self.seen,
                self.stderr()
            ),
        }
    }

    async fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(line.as_bytes()).await.unwrap();
        stdin.write_all(b"\n").await.unwrap();
        stdin.flush().await.unwrap();
    }

    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for the process to end; returns its status and all of its
    /// stderr.
    async fn exit(mut self) -> (ExitStatus, String) {
        let status = match tokio::time::timeout(LIMIT, self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!(
                "openssl did not exit\nstdout: {:#?}\nstderr: {}",
                self.seen,
                self.stderr()
            ),
        };
        // The pipe is closed now: the reader ends once it has drained it.
        let _ = tokio::time::timeout(LIMIT, &mut self.stderr_done).await;
        (status, self.stderr())
    }
}

fn pem_path(name: &str) -> String {
    pki::pki().dir.join(name).to_str().unwrap().to_owned()
}

/// Our verifying client against `openssl s_server` with the test PKI's
/// `localhost` certificate: lines both ways, then our close_notify and
/// s_server's answer to it (a clean end of input for us).
#[tokio::test]
async fn our_client_talks_to_openssl_s_server() {
    if !have_openssl() {
        return;
    }
    for &b in pki::BACKENDS {
        our_client_talks_to_openssl_s_server_on(b).await;
    }
}

async fn our_client_talks_to_openssl_s_server_on(b: TlsBackend) {
    let (cert, key) = (pem_path("server.pem"), pem_path("server.key"));
    // Port 0: s_server picks a free port and prints it (no bind race).
    let mut srv = OpenSsl::spawn(&[
        "s_server",
        "-accept",
        "127.0.0.1:0",
        "-naccept",
        "1",
        "-cert",
        &cert,
        "-key",
        &key,
    ]);
    let accept = srv.line_containing("ACCEPT").await;
    let addr: SocketAddr = accept.trim_start_matches("ACCEPT").trim().parse().unwrap();

    let mut conn = within(
        "connect",
        QueuedFramed::builder().tls(pki::client_on(b)).connect(addr),
    )
    .await
    .unwrap();
    within("write", conn.write(LineCodec::new(), "hello from anyframe"))
        .await
        .unwrap();
    assert!(conn.is_tls());
    srv.line_containing("hello from anyframe").await;
    srv.send("hello from openssl").await;
    assert_eq!(
        within("read", conn.read(LineCodec::new()))
            .await
            .unwrap()
            .line(),
        b"hello from openssl"
    );
    // Our close_notify; s_server answers with its own and closes.
    within("shutdown", conn.shutdown_write()).await.unwrap();
    let end = within("eof", conn.read(OrEof::new(LineCodec::new()))).await;
    assert!(end.unwrap().is_none(), "a clean TLS end of input");
    srv.close_stdin();
    let (status, stderr) = srv.exit().await;
    assert!(status.success(), "s_server failed: {status}\n{stderr}");
}

/// `openssl s_client`, verifying against the test CA and the host name
/// `localhost` (and refusing to go on if verification fails), talks to our
/// TLS server; our close_notify ends its session cleanly.
#[tokio::test]
async fn openssl_s_client_verifies_and_talks_to_our_server() {
    if !have_openssl() {
        return;
    }
    for &b in pki::BACKENDS {
        openssl_s_client_verifies_and_talks_to_our_server_on(b).await;
    }
}

async fn openssl_s_client_verifies_and_talks_to_our_server_on(b: TlsBackend) {
    let (l, addr) = listener().await;
    let server = tokio::spawn(async move {
        let (sock, _) = l.accept().await.unwrap();
        let mut conn = QueuedFramed::builder()
            .tls(pki::localhost_on(b))
            .build_tcp(sock)
            .unwrap();
        let hello = conn.read(LineCodec::new()).await.unwrap();
        conn.write(
            LineCodec::new(),
            [&b"anyframe got: "[..], hello.line()].concat(),
        )
        .await
        .unwrap();
        conn.shutdown_write().await.unwrap();
        // s_client answers our close_notify with its own.
        conn.read(OrEof::new(LineCodec::new())).await
    });
    let ca = pem_path("ca.pem");
    let addr = addr.to_string();
    let mut cli = OpenSsl::spawn(&[
        "s_client",
        "-connect",
        &addr,
        "-servername",
        "localhost",
        "-CAfile",
        &ca,
        "-verify_hostname",
        "localhost",
        "-verify_return_error",
        "-quiet",
        "-nocommands",
    ]);
    cli.send("hello from openssl").await;
    cli.line_containing("anyframe got: hello from openssl")
        .await;
    let end = within("server", server).await.unwrap();
    assert!(
        end.as_ref().is_ok_and(Option::is_none),
        "s_client's close_notify should be a clean end: {end:?}"
    );
    let (status, stderr) = cli.exit().await;
    eprintln!("s_client stderr:\n{stderr}");
    assert!(status.success(), "s_client failed: {status}\n{stderr}");
    assert!(
        stderr.contains("verify return:1") && !stderr.contains("verify error"),
        "{stderr}"
    );
}

/// SMTP lines: read `\r?\n` (at most 1000 bytes, RFC 5321), write `\r\n`.
fn smtp_lines() -> LineCodec {
    LineCodec::builder()
        .max_length(1000)
        .write_terminator("\r\n")
        .build()
        .expect("a valid line codec")
}

/// One SMTP-like session, as in `examples/starttls_smtp.rs` (keep the two
/// in step): `220` greeting, EHLO advertising STARTTLS, `220` and the
/// upgrade on STARTTLS, mail commands only over TLS, `221` on QUIT.
/// Returns each command received and whether it came over TLS.
async fn smtp_session(sock: TcpStream, tls: TlsServer) -> anyframe::Result<Vec<(bool, String)>> {
    let mut conn = QueuedFramed::builder()
        .timeout(Duration::from_secs(300))
        .rbuf_max(Some(64 * 1024))
        .build_tcp(sock)?;
    let mut lines = OrEof::new(smtp_lines());
    let mut seen = Vec::new();
    conn.push_write(smtp_lines(), "220 localhost ESMTP anyframe")?;
    while let Some(line) = conn.read_with(&mut lines).await? {
        let cmd = String::from_utf8_lossy(line.line()).into_owned();
        let verb = cmd
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let tls_on = conn.is_tls();
        seen.push((tls_on, cmd.clone()));
        let replies: &[&str] = match verb.as_str() {
            "EHLO" if tls_on => &["250-localhost", "250 8BITMIME"],
            "EHLO" => &["250-localhost", "250-8BITMIME", "250 STARTTLS"],
            "STARTTLS" if tls_on => &["503 5.5.1 TLS already active"],
            "STARTTLS" => {
                conn.push_write(smtp_lines(), "220 2.0.0 Ready to start TLS")?;
                // The handle's timeouts reach reads, not a bare handshake: bound
                // it, or a client that goes quiet after STARTTLS holds this task.
                tokio::time::timeout(Duration::from_secs(30), conn.starttls(tls.clone()))
                    .await
                    .map_err(|_| {
                        Error::custom(ErrorKind::TimedOut, true, "TLS handshake timed out")
                    })??;
                continue;
            }
            "MAIL" | "RCPT" if !tls_on => &["530 5.7.0 Must issue a STARTTLS command first"],
            "MAIL" | "RCPT" => &["250 2.1.0 OK"],
            "NOOP" => &["250 2.0.0 OK"],
            "QUIT" => {
                conn.push_write(smtp_lines(), "221 2.0.0 Bye")?;
                conn.shutdown_write().await?;
                break;
            }
            _ => &["502 5.5.2 Command not recognized"],
        };
        for r in replies {
            conn.push_write(smtp_lines(), r)?;
        }
    }
    Ok(seen)
}

/// `openssl s_client -starttls smtp` against our SMTP-like server: it reads
/// the greeting, sends EHLO, finds STARTTLS, upgrades and verifies; then
/// commands go over TLS.
#[tokio::test]
async fn openssl_s_client_starttls_smtp_against_our_server() {
    if !have_openssl() {
        return;
    }
    for &b in pki::BACKENDS {
        openssl_s_client_starttls_smtp_against_our_server_on(b).await;
    }
}

async fn openssl_s_client_starttls_smtp_against_our_server_on(b: TlsBackend) {
    let (l, addr) = listener().await;
    let server = tokio::spawn(async move {
        let (sock, _) = l.accept().await.unwrap();
        smtp_session(sock, pki::localhost_on(b)).await
    });
    let ca = pem_path("ca.pem");
    let addr = addr.to_string();
    let mut cli = OpenSsl::spawn(&[
        "s_client",
        "-starttls",
        "smtp",
        "-name",
        "client.test",
        "-connect",
        &addr,
        "-CAfile",
        &ca,
        "-verify_hostname",
        "localhost",
        "-verify_return_error",
        "-quiet",
        "-nocommands",
        "-crlf",
    ]);
    cli.send("EHLO client.test").await;
    cli.line_containing("250 8BITMIME").await;
    cli.send("MAIL FROM:<me@client.test>").await;
    cli.line_containing("250 2.1.0 OK").await;
    cli.send("QUIT").await;
    cli.line_containing("221 2.0.0 Bye").await;
    let seen = within("server", server).await.unwrap().unwrap();
    let (status, stderr) = cli.exit().await;
    assert!(status.success(), "s_client failed: {status}\n{stderr}");
    assert!(!stderr.contains("Didn't find STARTTLS"), "{stderr}");
    assert!(
        stderr.contains("verify return:1") && !stderr.contains("verify error"),
        "{stderr}"
    );
    let expected = [
        (false, "EHLO client.test"),
        (false, "STARTTLS"),
        (true, "EHLO client.test"),
        (true, "MAIL FROM:<me@client.test>"),
        (true, "QUIT"),
    ];
    let seen: Vec<(bool, &str)> = seen.iter().map(|(t, s)| (*t, s.as_str())).collect();
    assert_eq!(seen, expected);
}

/// A client that connects and never sends its ClientHello: the server's
/// idle timeout still fires for a read waiting behind the stalled
/// handshake (non-fatal ETIMEDOUT, as for any read), inline and spawned.
#[tokio::test]
async fn a_timeout_fires_while_the_handshake_is_stalled() {
    for &b in pki::BACKENDS {
        a_timeout_fires_while_the_handshake_is_stalled_on(b).await;
    }
}

async fn a_timeout_fires_while_the_handshake_is_stalled_on(b: TlsBackend) {
    let (_silent, s) = tcp_pair().await;
    let mut conn = QueuedFramed::builder()
        .tls(pki::localhost_on(b))
        .timeout(Duration::from_millis(150))
        .build_tcp(s)
        .unwrap();
    let e = within("inline read", conn.read(LineCodec::new()))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    assert!(!e.is_fatal() && !conn.is_closed());

    let (_silent, s) = tcp_pair().await;
    let (h, _driver) = QueuedFramed::builder()
        .tls(pki::localhost_on(b))
        .timeout(Duration::from_millis(150))
        .build_tcp(s)
        .unwrap()
        .spawn();
    let e = within("spawned read", h.push_read(LineCodec::new()))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    assert!(!e.is_fatal() && !h.is_closed());
}

/// stoptls on spawned handles, from inside a completion on the server (the
/// shape of a STOPTLS command): output queued before the call goes out over
/// TLS, output queued after it goes out in plaintext after close_notify,
/// on both ends, and the driver hands back the bare socket.
#[tokio::test]
async fn stoptls_on_handles_from_a_completion_then_plaintext() {
    for &b in pki::BACKENDS {
        stoptls_on_handles_from_a_completion_then_plaintext_on(b).await;
    }
}

async fn stoptls_on_handles_from_a_completion_then_plaintext_on(b: TlsBackend) {
    let (c, s) = tcp_pair().await;
    let (tap, writes) = support::Tap::new(c);
    let client = QueuedFramed::builder().tls(pki::client_on(b)).build(tap);
    let server = QueuedFramed::builder()
        .tls(pki::localhost_on(b))
        .build_tcp(s)
        .unwrap();
    let (hc, client_driver) = client.spawn();
    let (hs, server_driver) = server.spawn();

    let stop = hs.push_read_with(LineCodec::new(), |cmd, q| {
        q.push_write(LineCodec::new(), "server: over tls")?;
        let stopped = q.stoptls();
        q.push_write(LineCodec::new(), "server: plaintext")?;
        Ok((cmd.into_line(), stopped))
    });
    let client_plain = hs.push_read(LineCodec::new());

    within("both", async {
        // A flush resolves once the handshake is done; a stoptls asked for
        // before that would be refused (one TLS switch at a time).
        hc.flush().await.unwrap();
        hc.push_write(LineCodec::new(), "STOPTLS").unwrap();
        let stopped = hc.stoptls();
        hc.push_write(LineCodec::new(), "client: plaintext")
            .unwrap();
        let first = hc.push_read(LineCodec::new());
        let second = hc.push_read(LineCodec::new());
        stopped.await.unwrap();
        assert_eq!(first.await.unwrap().line(), b"server: over tls");
        assert_eq!(second.await.unwrap().line(), b"server: plaintext");
        let (cmd, server_stopped) = stop.await.unwrap();
        assert_eq!(cmd, "STOPTLS");
        server_stopped.await.unwrap();
        assert_eq!(client_plain.await.unwrap().line(), b"client: plaintext");
        assert!(!hc.is_tls() && !hs.is_tls());
    })
    .await;
    // The client wrote its last line in the clear, after its close_notify.
    let wire = support::written(&writes);
    assert!(
        wire.ends_with(b"client: plaintext\n"),
        "the line pushed after stoptls must go out in plaintext; the wire ends {:02x?}",
        &wire[wire.len().saturating_sub(24)..]
    );
    let needle = b"STOPTLS";
    assert!(
        !wire.windows(needle.len()).any(|w| w == needle),
        "the line pushed before stoptls must be encrypted"
    );
    hc.detach();
    hs.detach();
    let mut craw = within("client driver", client_driver)
        .await
        .unwrap()
        .io
        .into_inner();
    let sparts = within("server driver", server_driver).await.unwrap();
    let mut sraw = sparts.io;
    craw.write_all(b"raw\n").await.unwrap();
    let mut got = [0u8; 4];
    within("raw", sraw.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, b"raw\n");
}

/// A bare `starttls` against a peer that never answers does not hang when a
/// timeout is set: the switch's waiter gets a non-fatal ETIMEDOUT (inline
/// and through a Handle), and the handle stays usable.
#[tokio::test]
async fn a_stalled_starttls_reports_the_timeout_to_its_waiter() {
    for &b in pki::BACKENDS {
        a_stalled_starttls_reports_the_timeout_to_its_waiter_on(b).await;
    }
}

async fn a_stalled_starttls_reports_the_timeout_to_its_waiter_on(b: TlsBackend) {
    let (_silent, s) = tcp_pair().await;
    let mut conn = QueuedFramed::builder()
        .timeout(Duration::from_millis(100))
        .build_tcp(s)
        .unwrap();
    let e = within("inline starttls", conn.starttls(pki::client_on(b)))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    assert!(!e.is_fatal() && !conn.is_closed());

    let (_silent, s) = tcp_pair().await;
    let (h, _driver) = QueuedFramed::builder()
        .timeout(Duration::from_millis(100))
        .build_tcp(s)
        .unwrap()
        .spawn();
    let e = within("spawned starttls", h.starttls(pki::client_on(b)))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    assert!(!h.is_closed());
}

/// If the plaintext queued before STARTTLS cannot be written (the
/// connection broke), it is not lost: the handle dies and `into_parts`
/// returns it as unwritten output.
#[tokio::test]
async fn plaintext_queued_before_a_failed_starttls_stays_reachable() {
    for &b in pki::BACKENDS {
        plaintext_queued_before_a_failed_starttls_stays_reachable_on(b).await;
    }
}

async fn plaintext_queued_before_a_failed_starttls_stays_reachable_on(b: TlsBackend) {
    let broken = support::FixedWrites::new(|_| Err(std::io::ErrorKind::BrokenPipe.into()));
    let mut conn = QueuedFramed::new(broken);
    conn.push_write(LineCodec::new(), "EHLO before tls")
        .unwrap();
    let e = conn.starttls(pki::client_on(b)).await.unwrap_err();
    assert!(e.is_fatal() && conn.is_closed(), "{e}");
    let parts = conn.into_parts();
    assert_eq!(&parts.write_buf[..], b"EHLO before tls\n");
}

/// The peer's certificate is reachable on both front ends once TLS is up,
/// and gone after stoptls; a server that asked for no client certificate
/// has none.
#[tokio::test]
async fn the_peer_certificate_is_available_once_tls_is_up() {
    for &b in pki::BACKENDS {
        let (client, server) = tls_pair_on(b).await;
        let cert = client
            .peer_certificate()
            .expect("the server's certificate")
            .to_vec();
        assert!(cert.len() > 100 && cert[0] == 0x30, "DER: a SEQUENCE");
        assert!(server.peer_certificate().is_none(), "no client certificate");
        let (handle, _driver) = client.spawn();
        assert_eq!(
            handle.peer_certificate().as_deref(),
            Some(cert.as_slice()).map(|c| c.to_vec()).as_deref()
        );
        let (sh, _sd) = server.spawn();
        let stop_server = tokio::spawn(async move {
            sh.stoptls().await.unwrap();
            sh
        });
        within("stoptls", handle.stoptls()).await.unwrap();
        assert!(handle.peer_certificate().is_none(), "plaintext again");
        drop(within("server", stop_server).await.unwrap());
    }
}

/// A `Handle`'s autostart resolves with the handshake's outcome, as the
/// inline `tls_autostart` returns it: a ClientHello that is not one fails
/// the ticket, not only the requests after it.
#[tokio::test]
async fn handle_autostart_ticket_fails_when_the_handshake_fails() {
    const FAKE_HELLO: &[u8] = b"\x16\x03\x01\x00\x08notahello";
    for &b in pki::BACKENDS {
        let (io, mut peer) = tokio::io::duplex(4096);
        let (handle, _driver) = QueuedFramed::new(io).spawn();
        let verdict = handle.push_tls_autostart(pki::localhost_on(b));
        peer.write_all(FAKE_HELLO).await.unwrap();
        let err = within("autostart", verdict).await.unwrap_err();
        assert!(err.is_fatal(), "{b:?}: {err}");
        assert!(!handle.is_tls());

        let (io, mut peer) = tokio::io::duplex(4096);
        let mut conn = QueuedFramed::new(io);
        peer.write_all(FAKE_HELLO).await.unwrap();
        let inline = within("inline", conn.tls_autostart(pki::localhost_on(b)))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), inline.kind(), "{b:?}");
    }
}

// ----- Split halves --------------------------------------------------------------

/// A connection split into `Sink` and `Stream` halves in two tasks, with a
/// STARTTLS queued behind a read and output queued behind the STARTTLS:
/// the `Sink` half's flush runs the read and the switch for the output it
/// waits to write, reading the socket from its task. The `Stream` half,
/// which waited for input from its own task, still hears the line the peer
/// sends once TLS is up.
#[tokio::test]
async fn split_stream_hears_input_after_the_sink_half_ran_a_starttls() {
    for &b in pki::BACKENDS {
        split_stream_hears_input_after_the_sink_half_ran_a_starttls_on(b).await;
    }
}

/// A line client with a read queued, a STARTTLS (backend `b`) behind it,
/// and the line `after` queued behind that.
fn read_then_starttls_then_write(
    c: TcpStream,
    b: TlsBackend,
) -> (
    QueuedFramed<TcpStream, LineCodec>,
    anyframe::Ticket<anyframe::codecs::Line>,
    anyframe::Ticket<()>,
) {
    let mut client = QueuedFramed::with_codec(c, LineCodec::new());
    let (go, upgraded) = support::read_then_starttls(&mut client, pki::client_on(b));
    (client, go, upgraded)
}

async fn split_stream_hears_input_after_the_sink_half_ran_a_starttls_on(b: TlsBackend) {
    use futures::{SinkExt, StreamExt};
    let (c, s) = tcp_pair().await;
    let (client, go, upgraded) = read_then_starttls_then_write(c, b);
    let (mut sink, mut stream) = StreamExt::split::<&'static str>(client);
    let reader = tokio::spawn(async move {
        let line = stream.next().await;
        (line.map(|l| l.map(|l| l.line().to_vec())), stream)
    });
    // The reader runs the queued read and waits for input.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let flusher = tokio::spawn(async move {
        SinkExt::<&'static str>::flush(&mut sink)
            .await
            .map(|()| sink)
    });
    let server = async {
        let mut server = QueuedFramed::new(s);
        // Both halves wait before the peer says anything.
        tokio::time::sleep(Duration::from_millis(50)).await;
        server.write(LineCodec::new(), "GO").await.unwrap();
        server.starttls(pki::localhost_on(b)).await.unwrap();
        let after = server.read(LineCodec::new()).await.unwrap();
        assert_eq!(after.line(), b"after");
        server.write(LineCodec::new(), "hello").await.unwrap();
        server
    };
    let _server = within("server", server).await;
    assert_eq!(within("go", go).await.unwrap().line(), b"GO", "{b:?}");
    within("upgraded", upgraded).await.unwrap();
    let _sink = within("flush", flusher).await.unwrap().unwrap();
    let (line, _stream) = within("the stream half hears the line", reader)
        .await
        .unwrap();
    assert_eq!(line.map(|l| l.unwrap()), Some(b"hello".to_vec()), "{b:?}");
}

/// The same queue, with a peer that says nothing: the transport's
/// wake-ups, which reach both halves, do not become a loop.
#[tokio::test]
async fn split_halves_waiting_on_a_starttls_behind_a_read_are_not_busy_polled() {
    use futures::{SinkExt, StreamExt};
    let b = pki::BACKENDS[0];
    let (c, _s) = tcp_pair().await;
    let (client, _go, _upgraded) = read_then_starttls_then_write(c, b);
    let (mut sink, mut stream) = StreamExt::split::<&'static str>(client);
    let polls = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let p = polls.clone();
    let reader = tokio::spawn(async move {
        std::future::poll_fn(|cx| {
            p[0].fetch_add(1, Ordering::SeqCst);
            stream.poll_next_unpin(cx)
        })
        .await
        .is_some()
    });
    let p = polls.clone();
    let flusher = tokio::spawn(async move {
        std::future::poll_fn(|cx| {
            p[1].fetch_add(1, Ordering::SeqCst);
            SinkExt::<&'static str>::poll_flush_unpin(&mut sink, cx)
        })
        .await
        .is_ok()
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (r, f) = (
        polls[0].load(Ordering::SeqCst),
        polls[1].load(Ordering::SeqCst),
    );
    assert!(!reader.is_finished() && !flusher.is_finished());
    assert!(
        r <= 10 && f <= 10,
        "{r} polls of the Stream half, {f} of the Sink half"
    );
    reader.abort();
    flusher.abort();
}

// ----- traffic the TLS library makes counts for the timers; stoptls after the peer's ----

/// A longer bound than [`within`], for the slow links below (paused time).
async fn within_long<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(60), f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: still pending after 60 s"),
    }
}

/// TO-1: `rtimeout` fires after "no read of at least one byte". A
/// STARTTLS whose handshake keeps receiving bytes (the server's flight
/// arrives 64 bytes every 250 ms over a slow link) never goes a whole
/// second without a read: the bytes the TLS library reads count.
#[tokio::test(start_paused = true)]
async fn a_handshake_that_keeps_reading_is_not_told_a_read_timeout() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        for rtimeout in [Duration::ZERO, Duration::from_secs(1)] {
            if let Err(e) = slow_handshake_under(b, rtimeout).await {
                failed.push(e);
            }
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

async fn slow_handshake_under(b: TlsBackend, rtimeout: Duration) -> Result<(), String> {
    {
        let (c, s) = support::slow_link(
            (1 << 16, Duration::ZERO),
            (64, Duration::from_millis(250)),
            1 << 16,
        );
        let server = tokio::spawn(async move {
            let mut server = QueuedFramed::new(s);
            let _ = server.starttls(pki::localhost_on(b)).await;
            server
        });
        let mut client = QueuedFramed::builder().rtimeout(rtimeout).build(c);
        let started = tokio::time::Instant::now();
        let r = within_long("client starttls", client.starttls(pki::client_on(b))).await;
        let took = started.elapsed();
        if r.is_err() {
            return Err(format!(
                "{b:?}: a handshake still receiving bytes every 250 ms was told {:?} after {took:?} \
             (rtimeout {rtimeout:?})",
                r.err()
            ));
        }
        assert!(
            took > Duration::from_secs(1),
            "{b:?}: the link was slow ({took:?})"
        );
        drop(server);
    }
    Ok(())
}

/// TLS-5 / TLS-6: the peer stops TLS first and goes on in plaintext. Our
/// `Stream` sees its close_notify as the clean end of TLS input; we answer
/// with `stoptls()`, which leaves both directions in plaintext, and the
/// peer's plaintext that follows is read (the end of TLS input is not the
/// end of the connection's input).
#[tokio::test]
async fn plaintext_after_the_peers_stoptls_is_read_once_we_answer_it() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        if let Err(e) = peer_stops_first(b, false).await {
            failed.push(e);
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// The peer writes a line over TLS, stops TLS, and writes a line in
/// plaintext; our `Stream` reads the first line and the end of TLS input,
/// we answer with `stoptls()`, and the plaintext line is read with a read
/// request or (`through_stream`) with the `Stream`.
async fn peer_stops_first(b: TlsBackend, through_stream: bool) -> Result<(), String> {
    use futures::StreamExt;
    let (c, s) = tokio::io::duplex(1 << 16);
    let mut client = QueuedFramed::builder().tls(pki::client_on(b)).build(c);
    let mut server = QueuedFramed::builder()
        .tls(pki::localhost_on(b))
        .build_with_codec(s, LineCodec::new());
    let (x, y) = within_long("handshake", async {
        tokio::join!(client.flush(), server.flush())
    })
    .await;
    x.unwrap();
    y.unwrap();
    within_long("peer", async {
        client.push_write(LineCodec::new(), "over tls").unwrap();
        client.stoptls().await.unwrap();
        client.write(LineCodec::new(), "plain").await.unwrap();
    })
    .await;
    let first = within_long("first line", server.next()).await;
    assert_eq!(first.unwrap().unwrap().line(), b"over tls");
    // The peer's close_notify: the end of TLS input.
    let end = within_long("tls end", server.next()).await;
    assert!(end.is_none(), "{b:?}: {end:?}");
    within_long("answer", server.stoptls()).await.unwrap();
    assert!(!server.is_tls());
    assert!(!server.is_eof(), "{b:?}: TLS-5 reopened the input");
    let plain = match through_stream {
        true => within_long("plaintext", server.next()).await,
        false => Some(within_long("plaintext", server.read(LineCodec::new())).await),
    };
    match plain {
        Some(Ok(l)) if l.line() == b"plain" => Ok(()),
        other => Err(format!(
            "{b:?} (stream: {through_stream}): the plaintext after both close_notify \
             alerts gave {other:?} (is_eof {})",
            server.is_eof()
        )),
    }
}

/// TLS-5 reopens the input only "if the peer stopped TLS first". A
/// `stoptls()` on a connection that never used TLS is a no-op that
/// succeeds, yet it reopens an input that ended with the TCP stream:
/// `is_eof()` says false after the peer's FIN.
#[tokio::test]
async fn a_no_op_stoptls_after_a_plaintext_eof_does_not_reopen_the_input() {
    let (io, mut peer) = tokio::io::duplex(1024);
    let mut conn = QueuedFramed::new(io);
    peer.write_all(b"last\n").await.unwrap();
    peer.shutdown().await.unwrap();
    let got = within_long("line", conn.read(OrEof::new(LineCodec::new())))
        .await
        .unwrap();
    assert_eq!(got.unwrap().line(), b"last");
    assert!(
        within_long("end", conn.read(OrEof::new(LineCodec::new())))
            .await
            .unwrap()
            .is_none()
    );
    assert!(conn.is_eof());
    assert!(!conn.is_tls());
    within_long("stoptls", conn.stoptls()).await.unwrap();
    assert!(
        conn.is_eof(),
        "the TCP input ended and TLS was never on, but is_eof() turned false after stoptls"
    );
}

/// TLS-5: after the peer's close_notify and our stoptls, "what the peer
/// sends next is read as plaintext", through the `Stream` too (it ended at
/// the close_notify, and goes on once the input is open again).
#[tokio::test]
async fn the_stream_reads_the_plaintext_after_both_stoptls() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        if let Err(e) = peer_stops_first(b, true).await {
            failed.push(e);
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// TO-1 for writes: the idle timer counts writes too. A STARTTLS whose
/// ClientHello leaves 64 bytes every 300 ms (the link takes no more; the
/// server answers only once it has all of it) reads nothing for longer
/// than the idle timeout, but keeps writing, so the 600 ms idle timeout
/// never fires.
#[tokio::test(start_paused = true)]
async fn a_handshake_that_keeps_writing_is_not_told_an_idle_timeout() {
    for &b in pki::BACKENDS {
        let (client, server) = support::slow_link(
            (64, Duration::from_millis(300)),
            (1 << 16, Duration::ZERO),
            64,
        );
        let server = tokio::spawn(async move {
            let mut server = QueuedFramed::new(server);
            let _ = server.starttls(pki::localhost_on(b)).await;
            server
        });
        let mut client = QueuedFramed::builder()
            .timeout(Duration::from_millis(600))
            .build(client);
        let started = tokio::time::Instant::now();
        let r = within_long("client starttls", client.starttls(pki::client_on(b))).await;
        let took = started.elapsed();
        assert!(r.is_ok(), "{b:?}: told {:?} after {took:?}", r.err());
        assert!(
            took > Duration::from_millis(900),
            "{b:?}: the link was slow ({took:?})"
        );
        drop(server);
    }
}

/// TO-1 over an established session: one TLS record of 15 KB arrives 512
/// bytes every 250 ms (about 7.5 s, no plaintext until it is whole) under a
/// 1 s `rtimeout`. The ciphertext is read all along, so the line arrives.
#[tokio::test(start_paused = true)]
async fn a_tls_record_that_keeps_arriving_is_not_told_a_read_timeout() {
    for &b in pki::BACKENDS {
        let (c, s) = support::slow_link(
            (1 << 16, Duration::ZERO),
            (512, Duration::from_millis(250)),
            1 << 16,
        );
        let server = tokio::spawn(async move {
            let mut server = QueuedFramed::builder().tls(pki::localhost_on(b)).build(s);
            server.flush().await.unwrap();
            let line = "x".repeat(15_000);
            server.write(LineCodec::new(), &line).await.unwrap();
            server
        });
        let mut client = QueuedFramed::builder().tls(pki::client_on(b)).build(c);
        within_long("handshake", client.flush()).await.unwrap();
        client.set_rtimeout(Duration::from_secs(1));
        let started = tokio::time::Instant::now();
        let got = within_long("line", client.read(LineCodec::new())).await;
        let took = started.elapsed();
        let line = got.unwrap_or_else(|e| panic!("{b:?}: after {took:?}: {e}"));
        assert_eq!(line.line().len(), 15_000, "{b:?}");
        assert!(
            took > Duration::from_secs(2),
            "{b:?}: the link was slow ({took:?})"
        );
        drop(server);
    }
}
