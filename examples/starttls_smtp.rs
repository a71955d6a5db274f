//! An SMTP-like server that upgrades to TLS with STARTTLS on the live
//! connection: `220` greeting, `EHLO` advertises `STARTTLS`, `STARTTLS`
//! answers `220` and runs the handshake on the same socket, and from then
//! on every command travels encrypted (`MAIL`/`RCPT` are refused before
//! that, `QUIT` answers `221`). No mail is delivered anywhere.
//!
//! The server's certificate (for `localhost`) and the CA that signed it are
//! generated at startup; the CA is written to a temporary file so real
//! clients can verify the server.
//!
//! ```sh
//! cargo run --example starttls_smtp                         # server + client, with a transcript
//! cargo run --example starttls_smtp -- --listen 127.0.0.1:2525
//! # then, with the CA path the server prints:
//! openssl s_client -starttls smtp -connect 127.0.0.1:2525 -crlf -quiet \
//!     -CAfile CA.pem -verify_hostname localhost -verify_return_error
//! # type: EHLO me, MAIL FROM:<me@example.org>, QUIT
//! ```
//!
//! (`s_client` without `-CAfile` connects too: it reports the failed
//! verification but does not stop unless told to with
//! `-verify_return_error`. Our own client always verifies.)

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
    smtp::main().await
}

#[cfg(feature = "tls")]
mod smtp {
    use std::net::SocketAddr;
    use std::time::Duration;

    use anyframe::codecs::LineCodec;
    use anyframe::tls::{TlsClient, TlsServer};
    use anyframe::{Error, ErrorKind, OrEof, QueuedFramed};
    use tokio::net::TcpStream;

    use super::support;

    /// SMTP lines: read `\r?\n` (at most 1000 bytes, RFC 5321), write `\r\n`.
    fn smtp_lines() -> LineCodec {
        LineCodec::builder()
            .max_length(1000)
            .write_terminator("\r\n")
            .build()
            .expect("a valid line codec")
    }

    /// One SMTP-like session (tests/tls.rs has a copy for the `openssl
    /// s_client -starttls smtp` test: keep the two in step).
    pub(crate) async fn serve(sock: TcpStream, tls: TlsServer) -> anyframe::Result<()> {
        let peer = sock.peer_addr()?;
        let mut conn = QueuedFramed::builder()
            .timeout(Duration::from_secs(300))
            .rbuf_max(Some(64 * 1024))
            .build_tcp(sock)?;
        let mut lines = OrEof::new(smtp_lines());
        conn.push_write(smtp_lines(), "220 localhost ESMTP anyframe")?;
        while let Some(line) = conn.read_with(&mut lines).await? {
            let cmd = String::from_utf8_lossy(line.line()).into_owned();
            let verb = cmd
                .split(' ')
                .next()
                .unwrap_or_default()
                .to_ascii_uppercase();
            let tls_on = conn.is_tls();
            println!(
                "server: {peer} {} C: {cmd}",
                if tls_on { "[tls]  " } else { "[plain]" }
            );
            let replies: &[&str] = match verb.as_str() {
                "EHLO" if tls_on => &["250-localhost", "250 8BITMIME"],
                "EHLO" => &["250-localhost", "250-8BITMIME", "250 STARTTLS"],
                "STARTTLS" if tls_on => &["503 5.5.1 TLS already active"],
                "STARTTLS" => {
                    // The 220 goes out in plaintext ahead of the handshake;
                    // anything the client sent behind STARTTLS is taken as
                    // its TLS handshake, never as a command.
                    conn.push_write(smtp_lines(), "220 2.0.0 Ready to start TLS")?;
                    // The handle's timeouts reach reads, not a bare handshake: bound
                    // it, or a client that goes quiet after STARTTLS holds this task.
                    tokio::time::timeout(Duration::from_secs(30), conn.starttls(tls.clone()))
                        .await
                        .map_err(|_| {
                            Error::custom(ErrorKind::TimedOut, true, "TLS handshake timed out")
                        })??;
                    println!("server: {peer} TLS established");
                    continue;
                }
                "MAIL" | "RCPT" if !tls_on => &["530 5.7.0 Must issue a STARTTLS command first"],
                "MAIL" | "RCPT" => &["250 2.1.0 OK"],
                "NOOP" => &["250 2.0.0 OK"],
                "QUIT" => {
                    conn.push_write(smtp_lines(), "221 2.0.0 Bye")?;
                    // Over TLS this sends close_notify before the FIN.
                    conn.shutdown_write().await?;
                    break;
                }
                _ => &["502 5.5.2 Command not recognized"],
            };
            for r in replies {
                conn.push_write(smtp_lines(), r)?;
            }
        }
        Ok(())
    }

    /// Reads one (possibly multi-line) reply and prints it.
    async fn reply(conn: &mut QueuedFramed<TcpStream>) -> anyframe::Result<String> {
        loop {
            let line = conn.read(smtp_lines()).await?;
            let text = String::from_utf8_lossy(line.line()).into_owned();
            println!("client: S: {text}");
            if text.as_bytes().get(3) != Some(&b'-') {
                return Ok(text);
            }
        }
    }

    async fn command(conn: &mut QueuedFramed<TcpStream>, cmd: &str) -> anyframe::Result<String> {
        println!("client: C: {cmd}");
        conn.write(smtp_lines(), cmd).await?;
        reply(conn).await
    }

    /// The whole dance; `tls` verifies the server.
    async fn client(addr: SocketAddr, tls: TlsClient) -> anyframe::Result<()> {
        let mut conn = QueuedFramed::builder().connect(addr).await?;
        reply(&mut conn).await?;
        let ehlo = command(&mut conn, "EHLO client.example").await?;
        assert!(ehlo.contains("STARTTLS"), "the server offers STARTTLS");
        command(&mut conn, "MAIL FROM:<me@client.example>").await?;
        let go = command(&mut conn, "STARTTLS").await?;
        assert!(go.starts_with("220"), "{go}");
        conn.starttls(tls).await?;
        println!("client: TLS established (certificate and host name verified)");
        command(&mut conn, "EHLO client.example").await?;
        command(&mut conn, "MAIL FROM:<me@client.example>").await?;
        command(&mut conn, "QUIT").await?;
        Ok(())
    }

    pub(crate) async fn main() -> anyframe::Result<()> {
        let mode = support::mode();
        if let support::Mode::Connect(_) = mode {
            eprintln!("--connect is not supported here: run the in-process demo or --listen");
            std::process::exit(2);
        }
        let pki = support::certs::DemoPki::new();
        if let support::Mode::Listen(addr) = mode {
            let path = pki.write_ca("anyframe-starttls-smtp-ca.pem")?;
            println!("CA certificate: {}", path.display());
            println!(
                "try: openssl s_client -starttls smtp -connect {addr} -crlf -quiet \
                 -CAfile {} -verify_hostname localhost -verify_return_error",
                path.display()
            );
        }
        let tls = pki.server();
        let server = move |listener| {
            support::accept_loop(listener, move |sock| {
                let tls: TlsServer = tls.clone();
                async move {
                    if let Err(e) = serve(sock, tls).await {
                        println!("server: session ended: {e}");
                    }
                }
            })
        };
        support::run(server, |addr| client(addr, pki.client())).await
    }
}
