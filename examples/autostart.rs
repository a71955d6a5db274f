//! One port, TLS and plaintext clients: `tls_autostart` looks at the first
//! bytes a client sends. A TLS ClientHello starts TLS (the bytes it looked
//! at are handed to the handshake, nothing is lost); anything else stays
//! plaintext, with those bytes still unread for the first request. Then
//! both kinds get the same line echo, tagged `[tls]` or `[plain]`.
//!
//! The server's certificate (for `localhost`) and its CA are generated at
//! startup; the CA is written to a temporary file for real clients.
//!
//! ```sh
//! cargo run --example autostart                             # server + two clients
//! cargo run --example autostart -- --listen 127.0.0.1:7001
//! # then, with the CA path the server prints:
//! openssl s_client -connect 127.0.0.1:7001 -quiet -CAfile CA.pem \
//!     -verify_hostname localhost -verify_return_error
//! nc 127.0.0.1 7001
//! ```
//!
//! The client has to speak first (TLS clients always do). Plaintext must
//! not start with byte 0x16 or a byte of 0x80 or more (RT-tlsdetect-5): a
//! line starting with a non-ASCII character could look like a TLS hello.

#[cfg(feature = "tls")]
#[path = "support/mod.rs"]
mod support;

#[cfg(not(feature = "tls"))]
fn main() {
    eprintln!("this example needs the `tls` feature");
}

#[cfg(feature = "tls")]
#[tokio::main]
async fn main() -> anyframe::Result<()> {
    autostart::main().await
}

#[cfg(feature = "tls")]
mod autostart {
    use std::net::SocketAddr;
    use std::time::Duration;

    use anyframe::codecs::LineCodec;
    use anyframe::tls::{TlsClient, TlsServer};
    use anyframe::{Error, ErrorKind, OrEof, QueuedFramed};
    use tokio::net::TcpStream;

    use super::support;

    /// One connection: detect, maybe upgrade, then echo lines.
    async fn serve(sock: TcpStream, tls: TlsServer) -> anyframe::Result<()> {
        let peer = sock.peer_addr()?;
        let mut conn = QueuedFramed::builder()
            .timeout(Duration::from_secs(60))
            .rbuf_max(Some(64 * 1024))
            .build_tcp(sock)?;
        // Reads until the first bytes decide (consumes nothing), then runs
        // the handshake if they were a ClientHello. The handle's timeouts
        // reach reads, not a bare handshake: bound the whole step.
        let verdict = tokio::time::timeout(Duration::from_secs(30), conn.tls_autostart(tls))
            .await
            .map_err(|_| Error::custom(ErrorKind::TimedOut, true, "TLS handshake timed out"))??;
        let tag = if conn.is_tls() { "[tls]" } else { "[plain]" };
        match verdict.version() {
            Some((major, minor)) => {
                println!("server: {peer} sent a TLS hello (record version {major}.{minor})");
            }
            None => println!("server: {peer} speaks plaintext"),
        }
        let mut lines = OrEof::new(LineCodec::builder().max_length(8 * 1024).build()?);
        while let Some(line) = conn.read_with(&mut lines).await? {
            println!(
                "server: {peer} {tag} {:?}",
                String::from_utf8_lossy(line.line())
            );
            conn.push_write(
                LineCodec::new(),
                [tag.as_bytes(), b" ", line.line()].concat(),
            )?;
        }
        // The client closed (over TLS: its close_notify). Close our side.
        conn.shutdown_write().await
    }

    /// A client over TLS (`tls` given) or plaintext: two lines, two echoes.
    async fn client(addr: SocketAddr, tls: Option<TlsClient>) -> anyframe::Result<()> {
        let name = if tls.is_some() {
            "tls client"
        } else {
            "plain client"
        };
        let mut builder = QueuedFramed::builder();
        if let Some(tls) = tls {
            builder.tls(tls);
        }
        let mut conn = builder.connect(addr).await?;
        for text in ["hello", "same port, same server"] {
            conn.write(LineCodec::new(), text).await?;
            let echo = conn.read(LineCodec::new()).await?;
            println!(
                "{name}: sent {text:?}, got {:?}",
                String::from_utf8_lossy(echo.line())
            );
        }
        conn.shutdown_write().await?;
        // Wait for the server to close too (a clean end of input).
        let end = conn.read(OrEof::new(LineCodec::new())).await?;
        assert!(end.is_none());
        Ok(())
    }

    pub(crate) async fn main() -> anyframe::Result<()> {
        let mode = support::mode();
        if let support::Mode::Connect(addr) = mode {
            // Against someone else's server: plaintext only (a TLS client
            // would need that server's CA and name).
            return client(addr, None).await;
        }
        let pki = support::certs::DemoPki::new();
        if let support::Mode::Listen(addr) = mode {
            let path = pki.write_ca("anyframe-autostart-ca.pem")?;
            println!("CA certificate: {}", path.display());
            println!(
                "try: openssl s_client -connect {addr} -quiet -CAfile {} \
                 -verify_hostname localhost -verify_return_error",
                path.display()
            );
            println!(" or: nc {} {}", addr.ip(), addr.port());
        }
        let tls = pki.server();
        let server = move |listener| {
            support::accept_loop(listener, move |sock| {
                let tls: TlsServer = tls.clone();
                async move {
                    match serve(sock, tls).await {
                        Ok(()) => {}
                        // EPIPE: the input ended in the middle of something,
                        // such as a client leaving before it said anything.
                        Err(e) if e.is_eof() => println!("server: client left early"),
                        Err(e) => println!("server: session ended: {e}"),
                    }
                }
            })
        };
        // One TLS client and one plaintext client, at the same time.
        let clients = |addr| async move {
            let (a, b) = tokio::join!(client(addr, Some(pki.client())), client(addr, None));
            a.and(b)
        };
        support::run(server, clients).await
    }
}
