//! The TLS layer and connecting on failure paths, both backends: how a
//! peer ends a session (truncation, alerts, records after close_notify),
//! hostile handshakes, resets, and socket options.
//! Every wait is bounded, so a hang fails instead of blocking.
#![cfg(all(feature = "tls", feature = "rustls"))]

mod support;

#[path = "support/net.rs"]
mod net;
#[path = "support/pki.rs"]
mod pki;

use std::sync::Arc;
use std::time::Duration;

use anyframe::codecs::{ChunkCodec, LineCodec, RawCodec};
use anyframe::tls::TlsBackend;
use anyframe::tls::rustls;
use anyframe::{ErrorKind, OrEof, QueuedFramed};
use net::{stalled_listener, tcp_pair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LIMIT: Duration = Duration::from_secs(10);

async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(LIMIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {LIMIT:?}: {what}"),
    }
}

fn rustls_server_config() -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let pem = &pki::pki().server;
    let key = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(pem.key_der.clone()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![pem.cert_der.clone().into()], key)
    .unwrap();
    Arc::new(config)
}

/// Our client (backend `b`, inline, `Builder::tls`) against a tokio-rustls
/// server; returns both once the handshake is done. The server side is
/// given back as the raw socket and its rustls connection.
async fn client_vs_raw_rustls_server(
    b: TlsBackend,
) -> (QueuedFramed<TcpStream>, TcpStream, rustls::ServerConnection) {
    let (c, s) = tcp_pair().await;
    let acceptor = tokio_rustls::TlsAcceptor::from(rustls_server_config());
    let server = tokio::spawn(async move {
        let mut tls = acceptor.accept(s).await.unwrap();
        // Push the session tickets out.
        tls.flush().await.unwrap();
        tls.into_inner()
    });
    let mut client = QueuedFramed::builder()
        .tls(pki::client_on(b))
        .build_tcp(c)
        .unwrap();
    within("client handshake", client.flush()).await.unwrap();
    let (raw, conn) = within("server handshake", server).await.unwrap();
    (client, raw, conn)
}

/// Seals `data` as application data on `conn` and writes it raw.
async fn send_sealed(raw: &mut TcpStream, conn: &mut rustls::ServerConnection, data: &[u8]) {
    use std::io::Write;
    conn.writer().write_all(data).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    raw.write_all(&out).await.unwrap();
}

/// Our `stoptls`, then from the peer: a record of data ("late"), under
/// new keys if `key_update` (a TLS 1.3 KeyUpdate first), its close_notify
/// and a plaintext line ("plain"). The two lines as read.
async fn late_data_then_plaintext(
    client: &mut QueuedFramed<TcpStream>,
    raw: &mut TcpStream,
    conn: &mut rustls::ServerConnection,
    key_update: bool,
) -> anyframe::Result<(Vec<u8>, Vec<u8>)> {
    client.stoptls().await?;
    if key_update {
        conn.refresh_traffic_keys().unwrap();
    }
    send_sealed(raw, conn, b"late\n").await;
    conn.send_close_notify();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out.extend_from_slice(b"plain\n");
    raw.write_all(&out).await.unwrap();
    let a = client.read(LineCodec::new()).await?;
    let p = client.read(LineCodec::new()).await?;
    Ok((a.line().to_vec(), p.line().to_vec()))
}

// ----- truncation ------------------------------------------------------------------

/// TLS-5: the peer's data, then a TCP FIN in the middle of a record (no
/// close_notify): the data is delivered, then truncation (EPROTO, fatal,
/// `is_truncated`), on both backends.
#[tokio::test]
async fn eof_in_the_middle_of_a_record_after_data_is_truncation() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let (mut client, mut raw, mut conn) = client_vs_raw_rustls_server(b).await;
        send_sealed(&mut raw, &mut conn, b"complete line\n").await;
        // Half a record: a header announcing 100 bytes, then 10 of them.
        raw.write_all(&[23, 3, 3, 0, 100, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
            .await
            .unwrap();
        raw.shutdown().await.unwrap();
        let line = within("line", client.read(LineCodec::new())).await;
        if line.as_ref().map(|l| l.line().to_vec()).ok() != Some(b"complete line".to_vec()) {
            failed.push(format!("{b:?}: line {line:?}"));
            continue;
        }
        let e = within("eof", client.read(OrEof::new(LineCodec::new()))).await;
        match e {
            Err(e)
                if e.kind() == ErrorKind::Protocol
                    && e.tls_error().is_some_and(|t| t.is_truncated()) => {}
            other => failed.push(format!("{b:?}: {other:?}")),
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

// ----- alerts ----------------------------------------------------------------------

/// A fatal alert from the peer after the handshake (here the peer's rustls
/// refusing a record we never sent: bad_record_mac) is a protocol error,
/// EPROTO and fatal, at once, not a truncation and not a hang, even though
/// the peer keeps the TCP connection open.
#[tokio::test]
async fn a_fatal_alert_after_the_handshake_is_eproto_at_once() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let (mut client, mut raw, mut conn) = client_vs_raw_rustls_server(b).await;
        // Make the peer's rustls send a fatal alert: feed it a broken record.
        let mut bogus: &[u8] = &[
            23, 3, 3, 0, 20, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9,
        ];
        conn.read_tls(&mut bogus).unwrap();
        assert!(conn.process_new_packets().is_err());
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).unwrap();
        }
        raw.write_all(&out).await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(5), client.read(LineCodec::new())).await;
        match r {
            Ok(Err(e))
                if e.kind() == ErrorKind::Protocol
                    && e.is_fatal()
                    && e.tls_error().is_some_and(|t| !t.is_truncated()) => {}
            Ok(other) => failed.push(format!("{b:?}: {other:?}")),
            Err(_) => failed.push(format!("{b:?}: hung")),
        }
        drop(raw);
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// A client that refuses our certificate sends an alert: our server's
/// handshake fails with EPROTO (a handshake error), not a hang.
#[tokio::test]
async fn a_client_refusing_our_certificate_fails_our_servers_handshake() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let (c, s) = tcp_pair().await;
        // A tokio-rustls client trusting nothing of ours.
        let roots = rustls::RootCertStore::empty();
        let mut roots = roots;
        let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        roots.add(other.cert.der().clone()).unwrap();
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        let client = tokio::spawn(async move {
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let r = connector.connect(name, c).await;
            // Keep the socket open a while: the server must not wait for EOF.
            tokio::time::sleep(Duration::from_secs(6)).await;
            r.map(|_| ())
        });
        let mut server = QueuedFramed::builder()
            .tls(pki::localhost_on(b))
            .build_tcp(s)
            .unwrap();
        let r = tokio::time::timeout(Duration::from_secs(5), server.flush()).await;
        match r {
            Ok(Err(e))
                if e.kind() == ErrorKind::Protocol
                    && e.tls_error().is_some_and(|t| t.is_handshake()) => {}
            Ok(other) => failed.push(format!("{b:?}: {other:?}")),
            Err(_) => failed.push(format!("{b:?}: hung")),
        }
        client.abort();
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

// ----- oversize records ------------------------------------------------------------

/// A record header announcing more than a record may hold (0x4801 bytes),
/// with no body behind it: EPROTO at once, not a wait for a body the peer
/// never sends.
#[tokio::test]
async fn an_oversized_record_header_is_eproto_without_waiting_for_its_body() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let (mut client, mut raw, _conn) = client_vs_raw_rustls_server(b).await;
        raw.write_all(&[23, 3, 3, 0x48, 0x01]).await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(5), client.read(LineCodec::new())).await;
        match r {
            Ok(Err(e)) if e.kind() == ErrorKind::Protocol && e.is_fatal() => {}
            Ok(other) => failed.push(format!("{b:?}: {other:?}")),
            Err(_) => failed.push(format!("{b:?}: hung")),
        }
        drop(raw);
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

// ----- handshake cut short ---------------------------------------------------------

/// The server takes the ClientHello and closes at once (k = 0 of a cut
/// flight): the client's handshake fails with EPROTO, on both backends and
/// both front ends.
#[tokio::test]
async fn eof_right_after_the_client_hello_is_a_handshake_eproto() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        for spawned in [false, true] {
            let (c, mut s) = tcp_pair().await;
            let p = tokio::spawn(async move {
                let mut buf = [0u8; 5];
                let _ = s.read_exact(&mut buf).await;
                let _ = s.shutdown().await;
                tokio::time::sleep(Duration::from_secs(6)).await;
            });
            let r = if spawned {
                let (h, _d) = QueuedFramed::new(c).spawn();
                tokio::time::timeout(Duration::from_secs(5), h.starttls(pki::client_on(b))).await
            } else {
                let mut conn = QueuedFramed::new(c);
                tokio::time::timeout(Duration::from_secs(5), conn.starttls(pki::client_on(b))).await
            };
            match r {
                Ok(Err(e))
                    if e.kind() == ErrorKind::Protocol
                        && e.tls_error().is_some_and(|t| t.is_handshake()) => {}
                other => failed.push(format!("{b:?} spawned={spawned}: {other:?}")),
            }
            p.abort();
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// A client that connects and closes without a byte: our server's
/// handshake fails with EPROTO on both backends.
#[tokio::test]
async fn a_client_closing_before_its_hello_fails_the_servers_handshake_with_eproto() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let (mut c, s) = tcp_pair().await;
        c.shutdown().await.unwrap();
        let mut server = QueuedFramed::builder()
            .tls(pki::localhost_on(b))
            .build_tcp(s)
            .unwrap();
        let r = tokio::time::timeout(Duration::from_secs(5), server.flush()).await;
        match r {
            Ok(Err(e)) if e.kind() == ErrorKind::Protocol => {}
            other => failed.push(format!("{b:?}: {other:?}")),
        }
        drop(c);
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

// ----- peer certificate ------------------------------------------------------------

/// The peer certificate is `None` while the handshake is stalled and after
/// it failed, on both front ends and backends.
#[tokio::test]
async fn the_peer_certificate_is_none_during_and_after_a_failed_handshake() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let (c, mut s) = tcp_pair().await;
        let (h, _d) = QueuedFramed::new(c).spawn();
        let t = h.starttls(pki::client_on(b));
        let mut hello = [0u8; 5];
        within("hello", s.read_exact(&mut hello)).await.unwrap();
        if h.peer_certificate().is_some() {
            failed.push(format!("{b:?}: a certificate during the handshake"));
        }
        s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            .await
            .unwrap();
        let r = within("failure", t).await;
        if r.is_ok() {
            failed.push(format!("{b:?}: handshake succeeded?"));
        }
        if h.peer_certificate().is_some() || h.is_tls() {
            failed.push(format!("{b:?}: cert or tls after failure"));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// After the peer's close_notify (a clean end of TLS input, TLS still on
/// until stoptls) the certificate is still reported.
#[tokio::test]
async fn the_peer_certificate_stays_after_the_peers_close_notify() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let (c, s) = tcp_pair().await;
        let mut client = QueuedFramed::builder()
            .tls(pki::client_on(b))
            .build_tcp(c)
            .unwrap();
        let mut server = QueuedFramed::builder()
            .tls(pki::localhost_on(b))
            .build_tcp(s)
            .unwrap();
        let (x, y) = within("hs", async { tokio::join!(client.flush(), server.flush()) }).await;
        x.unwrap();
        y.unwrap();
        within("shut", server.shutdown_write()).await.unwrap();
        let eof = within("eof", client.read(OrEof::new(LineCodec::new()))).await;
        if !matches!(eof, Ok(None)) {
            failed.push(format!("{b:?}: {eof:?}"));
        }
        if client.peer_certificate().is_none() {
            failed.push(format!(
                "{b:?}: certificate gone after the peer's close_notify"
            ));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

// ----- rbuf_max on plaintext ---------------------------------------------------------

/// OPT-8 over TLS: `rbuf_max` counts plaintext. A 60-byte line fits a
/// 64-byte limit although its record is longer; a 100-byte line is ENOSPC.
#[tokio::test]
async fn rbuf_max_counts_plaintext_over_tls() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let (c, s) = tcp_pair().await;
        let mut client = QueuedFramed::builder()
            .tls(pki::client_on(b))
            .rbuf_max(Some(64))
            .build_tcp(c)
            .unwrap();
        let mut server = QueuedFramed::builder()
            .tls(pki::localhost_on(b))
            .build_tcp(s)
            .unwrap();
        let (x, y) = within("hs", async { tokio::join!(client.flush(), server.flush()) }).await;
        x.unwrap();
        y.unwrap();
        let line = "x".repeat(59);
        server.push_write(LineCodec::new(), line.as_str()).unwrap();
        let long = "y".repeat(99);
        server.push_write(LineCodec::new(), long.as_str()).unwrap();
        within("w", server.flush()).await.unwrap();
        match within("r1", client.read(LineCodec::new())).await {
            Ok(l) if l.line() == line.as_bytes() => {}
            other => failed.push(format!("{b:?} first: {other:?}")),
        }
        match within("r2", client.read(LineCodec::new())).await {
            Err(e) if e.kind() == ErrorKind::NoSpace => {}
            other => failed.push(format!("{b:?} second: {other:?}")),
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

// ----- connecting ------------------------------------------------------------------

/// OPT-2: a connect timeout fails the connect with `Io` whose io_error is
/// `TimedOut`, on both `connect` and `spawn_connect` (its queued read and
/// its driver).
#[tokio::test]
async fn a_connect_timeout_fails_with_io_timed_out() {
    let stalled = stalled_listener();
    let e = within(
        "connect",
        QueuedFramed::builder()
            .connect_timeout(Duration::from_millis(300))
            .connect(stalled.addr),
    )
    .await
    .map(|_| ())
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");
    assert_eq!(
        e.io_error().unwrap().kind(),
        std::io::ErrorKind::TimedOut,
        "{e}"
    );

    let (h, d) = QueuedFramed::builder()
        .connect_timeout(Duration::from_millis(300))
        .tls(pki::client_on(TlsBackend::Rustls))
        .spawn_connect(stalled.addr);
    let r = within("read", h.read(LineCodec::new())).await.unwrap_err();
    assert_eq!(r.kind(), ErrorKind::Io, "{r}");
    let d = within("driver", d).await.map(|_| ()).unwrap_err();
    assert_eq!(d.kind(), ErrorKind::Io, "{d}");
}

/// OPT-13..15 on `spawn_connect`: the options reach the socket (read back
/// from the driver's parts).
#[tokio::test]
async fn spawn_connect_applies_the_socket_options() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accept = tokio::spawn(async move { l.accept().await.unwrap().0 });
    let (h, d) = QueuedFramed::builder()
        .no_delay(true)
        .keepalive(true)
        .oobinline(false)
        .spawn_connect(addr);
    h.push_bytes(&b"hi"[..]).unwrap();
    within("flush", h.flush()).await.unwrap();
    let _peer = within("accept", accept).await.unwrap();
    h.detach();
    let parts = within("driver", d).await.unwrap();
    let sock = socket2::SockRef::from(&parts.io);
    assert!(parts.io.nodelay().unwrap(), "nodelay");
    assert!(sock.keepalive().unwrap(), "keepalive");
    assert!(!sock.out_of_band_inline().unwrap(), "oobinline off");
}

/// Connecting to a closed loopback port on `spawn_connect` fails the queued
/// read with Io(ConnectionRefused), promptly.
#[tokio::test]
async fn spawn_connect_to_a_closed_port_is_refused() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (h, d) = QueuedFramed::builder()
        .tls(pki::client_on(TlsBackend::NativeTls))
        .spawn_connect(("127.0.0.1", port));
    let e = within("read", h.read(RawCodec::new())).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");
    assert_eq!(
        e.io_error().unwrap().kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{e}"
    );
    let _ = within("driver", d).await;
}

// ----- a broken record after our close_notify --------------------------------------

/// Our close_notify is out (stoptls, or shutdown_write), the peer's is not
/// yet read, and the peer then sends a record whose header is fine but
/// whose body does not decrypt (bad_record_mac). That is EPROTO, fatal, as
/// any broken record: never a panic inside the TLS library (rustls must not
/// be made to send a fatal alert after its close_notify; the module docs of
/// src/tls/rustls.rs guard the header case only).
#[tokio::test]
async fn a_record_that_does_not_decrypt_after_our_close_notify_is_eproto_not_a_panic() {
    use futures::FutureExt;
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        for how in ["stoptls", "shutdown_write"] {
            let (mut client, mut raw, _conn) = client_vs_raw_rustls_server(b).await;
            let r = async {
                if how == "stoptls" {
                    client.stoptls().await?;
                } else {
                    client.shutdown_write().await?;
                }
                // A well-formed header, a body of garbage.
                let mut rec = vec![23u8, 3, 3, 0, 40];
                rec.extend((0..40u8).map(|i| i.wrapping_mul(37)));
                raw.write_all(&rec).await.unwrap();
                client
                    .read(LineCodec::new())
                    .await
                    .map(|l| l.line().to_vec())
            };
            let r = tokio::time::timeout(
                Duration::from_secs(5),
                std::panic::AssertUnwindSafe(r).catch_unwind(),
            )
            .await;
            match r {
                Ok(Ok(Err(e))) if e.kind() == ErrorKind::Protocol && e.is_fatal() => {}
                Ok(Ok(other)) => failed.push(format!("{b:?} {how}: {other:?}")),
                Ok(Err(p)) => failed.push(format!(
                    "{b:?} {how}: panicked: {:?}",
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                )),
                Err(_) => failed.push(format!("{b:?} {how}: hung")),
            }
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// TLS-6 / `poll_stop_tls` ("application data that arrives before [the
/// peer's close_notify] is still delivered, and the bytes after it are
/// read as plaintext"), with a TLS 1.3 peer that updates its keys
/// (KeyUpdate) between our close_notify and its own: the line it sends
/// with the new keys, then the plaintext, are read on both backends.
#[tokio::test]
async fn data_after_a_peer_key_update_between_the_close_notifies_is_delivered() {
    use futures::FutureExt;
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let (mut client, mut raw, mut conn) = client_vs_raw_rustls_server(b).await;
        let v = conn.protocol_version();
        let r = late_data_then_plaintext(&mut client, &mut raw, &mut conn, true);
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            std::panic::AssertUnwindSafe(r).catch_unwind(),
        )
        .await;
        match r {
            Ok(Ok(Ok((a, p)))) if a == b"late" && p == b"plain" => {}
            Ok(Ok(other)) => failed.push(format!("{b:?} ({v:?}): {other:?}")),
            Ok(Err(_)) => failed.push(format!("{b:?} ({v:?}): panicked")),
            Err(_) => failed.push(format!("{b:?} ({v:?}): hung")),
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// The same without a key update: plain application data from the peer
/// after our close_notify, then its close_notify and plaintext.
#[tokio::test]
async fn data_between_the_close_notifies_is_delivered() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let (mut client, mut raw, mut conn) = client_vs_raw_rustls_server(b).await;
        let r = late_data_then_plaintext(&mut client, &mut raw, &mut conn, false);
        match tokio::time::timeout(Duration::from_secs(5), r).await {
            Ok(Ok((a, p))) if a == b"late" && p == b"plain" => {}
            other => failed.push(format!("{b:?}: {other:?}")),
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// As above, on a spawned `Handle`: the read fails with EPROTO (not
/// `Panicked`, not `Closed`) and the driver ends without a panic.
#[tokio::test]
async fn a_record_that_does_not_decrypt_after_our_stoptls_on_a_handle_is_eproto() {
    use futures::FutureExt;
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let (client, mut raw, _conn) = client_vs_raw_rustls_server(b).await;
        let (h, d) = client.spawn();
        within("stoptls", h.stoptls()).await.unwrap();
        let mut rec = vec![23u8, 3, 3, 0, 40];
        rec.extend((0..40u8).map(|i| i.wrapping_mul(37)));
        raw.write_all(&rec).await.unwrap();
        let r = within("read", h.read(LineCodec::new())).await;
        match &r {
            Err(e) if e.kind() == ErrorKind::Protocol => {}
            other => failed.push(format!("{b:?} read: {other:?}")),
        }
        let d = within("driver", std::panic::AssertUnwindSafe(d).catch_unwind()).await;
        if d.is_err() {
            failed.push(format!("{b:?}: the driver panicked"));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

// ----- output sealed but not yet written ------------------------------------------

/// WQ-1 over TLS on a spawned handle: output pushed (no `flush`, no read
/// queued) to a peer that starts reading late all arrives; nothing stays
/// sealed inside the TLS library.
#[tokio::test]
async fn pushed_output_reaches_a_late_reader_over_tls_without_a_flush() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        for size in [100_000usize, 1 << 20] {
            let (c, s) = tcp_pair().await;
            let mut client = QueuedFramed::builder()
                .tls(pki::client_on(b))
                .build_tcp(c)
                .unwrap();
            let mut server = QueuedFramed::builder()
                .tls(pki::localhost_on(b))
                .build_tcp(s)
                .unwrap();
            let (x, y) = within("hs", async { tokio::join!(client.flush(), server.flush()) }).await;
            x.unwrap();
            y.unwrap();
            let (h, _d) = client.spawn();
            let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            h.push_bytes(data.clone()).unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            let r =
                tokio::time::timeout(Duration::from_secs(5), server.read(ChunkCodec::new(size)))
                    .await;
            match r {
                Ok(Ok(got)) if got[..] == data[..] => {}
                Ok(Ok(_)) => failed.push(format!("{b:?} {size}: data differs")),
                Ok(Err(e)) => failed.push(format!("{b:?} {size}: {e}")),
                Err(_) => failed.push(format!(
                    "{b:?} {size}: hung, {} bytes read, {} still queued",
                    server.read_buffer().len(),
                    h.write_buffered()
                )),
            }
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

// ----- host name verification ------------------------------------------------------

/// TLS-10 ("verifies the certificate chain and the host name by default;
/// opting out is spelled `danger_*`"): a client for the empty domain name
/// never accepts a server whose certificate names another host. rustls
/// refuses the name when the client is built (`Config`); native-tls must
/// refuse it too, at build time or in the handshake.
#[tokio::test]
async fn an_empty_domain_never_skips_host_name_verification() {
    // rustls: refused up front.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki::pki().ca_der.clone().into()).unwrap();
    assert!(anyframe::tls::TlsClient::rustls_with_roots(roots, "").is_err());

    // native-tls: a client for "" against a server certified for
    // "other.example" by the trusted CA.
    let mut b = anyframe::tls::TlsClient::builder("");
    // No SNI (a documented option), verification left on.
    b.sni(false);
    b.add_root_certificate(
        anyframe::tls::native_tls::Certificate::from_pem(pki::pki().ca_pem.as_bytes()).unwrap(),
    )
    .disable_built_in_roots(true);
    let Ok(client_mode) = b.build() else {
        return; // refused at build time: fine
    };
    let (c, s) = tcp_pair().await;
    let mut client = QueuedFramed::builder()
        .tls(client_mode)
        .build_tcp(c)
        .unwrap();
    let mut server = QueuedFramed::builder()
        .tls(pki::server_on(
            TlsBackend::NativeTls,
            &pki::pki().wrong_host,
        ))
        .build_tcp(s)
        .unwrap();
    let srv = tokio::spawn(async move {
        let r = server.flush().await;
        (r, server)
    });
    let x = within("client handshake", client.flush()).await;
    assert!(
        x.is_err(),
        "the native-tls client for \"\" accepted a certificate for other.example (is_tls={})",
        client.is_tls()
    );
    drop(client);
    let _ = within("server", srv).await;
}

/// A domain with a NUL byte (a name taken from a user or from DNS can
/// hold any byte) names no host: both backends refuse it when the client
/// is built, as a `Config` error. (OpenSSL's host name call panicked on
/// it in the handshake, inside the engine.)
#[test]
fn a_domain_with_a_nul_byte_is_refused_when_the_client_is_built() {
    use anyframe::tls::{TlsClient, TlsErrorKind};
    let native = TlsClient::new("local\0host").map(|_| ());
    assert!(
        matches!(&native, Err(e) if e.kind() == TlsErrorKind::Config),
        "{native:?}"
    );
    let rustls = TlsClient::rustls_webpki_roots("local\0host").map(|_| ());
    assert!(
        matches!(&rustls, Err(e) if e.kind() == TlsErrorKind::Config),
        "{rustls:?}"
    );
}

/// The peer's last line and its close_notify are already in our receive
/// pipe when the peer goes away without reading the output we still owe
/// it. Inline, so the read drives the connection: the read gets the line
/// on every backend (rustls first wrote the records it still held, and
/// returned that write's `EPIPE` without looking at the input); the write
/// failure is the flush's.
#[tokio::test]
async fn data_that_arrived_before_a_write_failure_is_read_first_on_both_backends() {
    let mut failed = Vec::new();
    for b in pki::plain_and_backends() {
        let (mut client, mut server) = pki::connected_pair(b, 4 * 1024).await;
        // Our output fills the pipe: the peer never reads it.
        client.push_bytes(vec![b'q'; 64 * 1024]).unwrap();
        let stuck = tokio::time::timeout(Duration::from_millis(200), client.flush()).await;
        assert!(stuck.is_err(), "the pipe is full");
        server.push_bytes(&b"last words\n"[..]).unwrap();
        within("shutdown", server.shutdown_write()).await.unwrap();
        drop(server);
        let line = within("read", client.read(LineCodec::new())).await;
        match line {
            Ok(l) if l.line() == b"last words" => {}
            other => failed.push(format!("{b:?}: {:?}", other.map(|l| l.line().to_vec()))),
        }
        let flushed = within("flush", client.flush()).await;
        if flushed.is_ok() {
            failed.push(format!("{b:?}: the flush to a peer gone succeeded"));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

// ----- half-close over TLS ---------------------------------------------------------

/// TLS-8 half-close, as an HTTP/1.0-style client does: the client sends
/// its request and `shutdown_write` (close_notify + FIN); the server reads
/// the request and the clean end, then answers and shuts down in turn; the
/// client reads the answer and a clean end. Every backend pairing.
#[tokio::test]
async fn a_half_closed_client_still_gets_the_servers_answer() {
    let mut failed = Vec::new();
    for &cb in pki::BACKENDS {
        for &sb in pki::BACKENDS {
            let (c, s) = tcp_pair().await;
            let server = tokio::spawn(async move {
                let mut srv = QueuedFramed::builder()
                    .tls(pki::localhost_on(sb))
                    .build_tcp(s)
                    .unwrap();
                let req = srv.read(LineCodec::new()).await?;
                let end = srv.read(OrEof::new(LineCodec::new())).await?;
                assert!(end.is_none());
                srv.push_write(LineCodec::new(), "answer")?;
                srv.shutdown_write().await?;
                Ok::<_, anyframe::Error>(req.line().to_vec())
            });
            let r = async {
                let mut cl = QueuedFramed::builder()
                    .tls(pki::client_on(cb))
                    .build_tcp(c)
                    .unwrap();
                cl.push_write(LineCodec::new(), "request")?;
                cl.shutdown_write().await?;
                let a = cl.read(LineCodec::new()).await?;
                let end = cl.read(OrEof::new(LineCodec::new())).await?;
                Ok::<_, anyframe::Error>((a.line().to_vec(), end.is_none()))
            };
            let r = tokio::time::timeout(Duration::from_secs(5), r).await;
            let s = tokio::time::timeout(Duration::from_secs(5), server).await;
            let ok = matches!(&r, Ok(Ok((a, true))) if a == b"answer")
                && matches!(&s, Ok(Ok(Ok(q))) if q == b"request");
            if !ok {
                failed.push(format!("{cb:?}->{sb:?}: client {r:?} server {s:?}"));
            }
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

// ----- stoptls in the middle of a bulk transfer ------------------------------------

/// TLS-6: we stoptls while the peer is still sending a megabyte over TLS;
/// the peer then answers with its own stoptls and plaintext. Every byte
/// of the TLS data arrives, then the plaintext, every backend pairing.
#[tokio::test]
async fn stoptls_while_the_peer_still_sends_records_loses_nothing() {
    const N: usize = 1 << 20;
    let mut failed = Vec::new();
    for &cb in pki::BACKENDS {
        for &sb in pki::BACKENDS {
            let (c, s) = tcp_pair().await;
            let data: Vec<u8> = (0..N).map(|i| (i % 253) as u8).collect();
            let d2 = data.clone();
            let server = tokio::spawn(async move {
                let mut srv = QueuedFramed::builder()
                    .tls(pki::localhost_on(sb))
                    .build_tcp(s)
                    .unwrap();
                srv.flush().await?;
                for chunk in d2.chunks(10_000) {
                    srv.push_bytes(chunk.to_vec())?;
                }
                srv.stoptls().await?;
                srv.write(LineCodec::new(), "plain").await?;
                tokio::time::sleep(Duration::from_secs(3)).await;
                Ok::<_, anyframe::Error>(())
            });
            let r = async {
                let mut cl = QueuedFramed::builder()
                    .tls(pki::client_on(cb))
                    .build_tcp(c)
                    .unwrap();
                let head = cl.read(ChunkCodec::new(1000)).await?;
                cl.stoptls().await?;
                let rest = cl.read(ChunkCodec::new(N - 1000)).await?;
                let p = cl.read(LineCodec::new()).await?;
                let mut all = head.to_vec();
                all.extend_from_slice(&rest);
                Ok::<_, anyframe::Error>((all, p.line().to_vec()))
            };
            match tokio::time::timeout(Duration::from_secs(8), r).await {
                Ok(Ok((all, p))) if all == data && p == b"plain" => {}
                Ok(Ok((all, p))) => failed.push(format!(
                    "{cb:?}->{sb:?}: {} bytes (equal: {}), then {:?}",
                    all.len(),
                    all == data,
                    String::from_utf8_lossy(&p)
                )),
                other => failed.push(format!(
                    "{cb:?}->{sb:?}: {other:?}; server: {:?}",
                    tokio::time::timeout(Duration::from_secs(1), server).await
                )),
            }
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

// ----- autostart with a client that trickles its bytes ------------------------------

/// Copies `from` to `to` one byte per write, yielding between bytes.
async fn trickle(
    mut from: tokio::io::ReadHalf<tokio::io::DuplexStream>,
    mut to: tokio::io::WriteHalf<tokio::io::DuplexStream>,
) {
    let mut b = [0u8; 1];
    while let Ok(1) = from.read(&mut b).await {
        if to.write_all(&b).await.is_err() {
            break;
        }
        tokio::task::yield_now().await;
    }
    let _ = to.shutdown().await;
}

/// RT-tlsauto on an inline handle, no timers: a TLS client whose every
/// byte arrives alone (detection, ClientHello, Finished, data) is detected,
/// handshaken and read, on both backends.
#[tokio::test]
async fn inline_autostart_with_a_byte_at_a_time_client() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let (client_io, proxy_c) = tokio::io::duplex(1 << 16);
        let (server_io, proxy_s) = tokio::io::duplex(1 << 16);
        let (pc_r, pc_w) = tokio::io::split(proxy_c);
        let (ps_r, ps_w) = tokio::io::split(proxy_s);
        let up = tokio::spawn(trickle(pc_r, ps_w));
        let down = tokio::spawn(async move {
            let (mut r, mut w) = (ps_r, pc_w);
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
        let client = tokio::spawn(async move {
            let mut c = QueuedFramed::builder()
                .tls(pki::client_on(b))
                .build(client_io);
            c.write(LineCodec::new(), "hello over tls").await?;
            let l = c.read(LineCodec::new()).await?;
            Ok::<_, anyframe::Error>(l.line().to_vec())
        });
        let r = async {
            let mut s = QueuedFramed::new(server_io);
            let v = s.tls_autostart(pki::localhost_on(b)).await?;
            let l = s.read(LineCodec::new()).await?;
            s.write(LineCodec::new(), "answer").await?;
            Ok::<_, anyframe::Error>((v.is_tls(), l.line().to_vec()))
        };
        let r = tokio::time::timeout(Duration::from_secs(8), r).await;
        let c = tokio::time::timeout(Duration::from_secs(2), client).await;
        let ok = matches!(&r, Ok(Ok((true, l))) if l == b"hello over tls")
            && matches!(&c, Ok(Ok(Ok(a))) if a == b"answer");
        if !ok {
            failed.push(format!("{b:?}: server {r:?} client {c:?}"));
        }
        up.abort();
        down.abort();
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

// ----- stoptls right after the handshake -------------------------------------------

/// TLS-6 with nothing exchanged over TLS: the client stops TLS as soon as
/// the handshake is done (the server's TLS 1.3 session tickets may still be
/// on their way), the server answers with its own stoptls, and plaintext
/// flows both ways. Every backend pairing, inline.
#[tokio::test]
async fn stoptls_right_after_the_handshake_then_plaintext() {
    let mut failed = Vec::new();
    for &cb in pki::BACKENDS {
        for &sb in pki::BACKENDS {
            let (c, s) = tcp_pair().await;
            let server = tokio::spawn(async move {
                let mut srv = QueuedFramed::builder()
                    .tls(pki::localhost_on(sb))
                    .build_tcp(s)
                    .unwrap();
                srv.flush().await?;
                // The client's close_notify: a clean end of TLS input.
                let end = srv.read(OrEof::new(LineCodec::new())).await?;
                assert!(end.is_none());
                srv.stoptls().await?;
                srv.write(LineCodec::new(), "server plain").await?;
                let l = srv.read(LineCodec::new()).await?;
                Ok::<_, anyframe::Error>(l.line().to_vec())
            });
            let r = async {
                let mut cl = QueuedFramed::builder()
                    .tls(pki::client_on(cb))
                    .build_tcp(c)
                    .unwrap();
                cl.flush().await?;
                cl.stoptls().await?;
                cl.write(LineCodec::new(), "client plain").await?;
                let l = cl.read(LineCodec::new()).await?;
                Ok::<_, anyframe::Error>(l.line().to_vec())
            };
            let r = tokio::time::timeout(Duration::from_secs(5), r).await;
            let s = tokio::time::timeout(Duration::from_secs(5), server).await;
            let ok = matches!(&r, Ok(Ok(l)) if l == b"server plain")
                && matches!(&s, Ok(Ok(Ok(l))) if l == b"client plain");
            if !ok {
                failed.push(format!("{cb:?}->{sb:?}: client {r:?} server {s:?}"));
            }
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

// ----- a flood before the handshake ends --------------------------------------------

/// A real ClientHello of backend `b`.
async fn client_hello(b: TlsBackend) -> Vec<u8> {
    let (c, mut peer) = tokio::io::duplex(1 << 16);
    let client = tokio::spawn(async move {
        let mut conn = QueuedFramed::builder().tls(pki::client_on(b)).build(c);
        let _ = conn.flush().await;
        conn
    });
    let mut head = [0u8; 5];
    peer.read_exact(&mut head).await.unwrap();
    let len = u16::from_be_bytes([head[3], head[4]]) as usize;
    let mut body = vec![0u8; len];
    peer.read_exact(&mut body).await.unwrap();
    client.abort();
    [&head[..], &body[..]].concat()
}

/// A client that sends its ClientHello and then 20 MB of records of
/// `kind` before the handshake is over: our server fails the handshake
/// with EPROTO promptly, long before it has taken the 20 MB.
#[tokio::test]
async fn a_flood_of_records_before_the_handshake_ends_fails_it_promptly() {
    const FLOOD: usize = 20 << 20;
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        for (what, record) in [
            ("application_data", {
                let mut r = vec![23u8, 3, 3, 0x40, 0];
                r.extend(std::iter::repeat_n(0xAA, 0x4000));
                r
            }),
            ("handshake fragments", {
                let mut r = vec![22u8, 3, 3, 0x40, 0];
                r.extend(std::iter::repeat_n(0x0B, 0x4000));
                r
            }),
        ] {
            let hello = client_hello(b).await;
            let (c, s) = tcp_pair().await;
            let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let sent2 = sent.clone();
            let flooder = tokio::spawn(async move {
                let mut c = c;
                let (mut r, mut w) = c.split();
                let drain = async {
                    let mut sink = vec![0u8; 1 << 16];
                    while let Ok(n) = r.read(&mut sink).await {
                        if n == 0 {
                            break;
                        }
                    }
                };
                let flood = async {
                    w.write_all(&hello).await?;
                    let mut total = 0;
                    while total < FLOOD {
                        w.write_all(&record).await?;
                        total += record.len();
                        sent2.store(total, std::sync::atomic::Ordering::SeqCst);
                    }
                    Ok::<_, std::io::Error>(())
                };
                let _ = tokio::join!(drain, flood);
            });
            let mut server = QueuedFramed::builder()
                .tls(pki::localhost_on(b))
                .build_tcp(s)
                .unwrap();
            let r = tokio::time::timeout(Duration::from_secs(5), server.flush()).await;
            let n = sent.load(std::sync::atomic::Ordering::SeqCst);
            match r {
                Ok(Err(e)) if e.kind() == ErrorKind::Protocol && n < FLOOD => {}
                other => failed.push(format!("{b:?} {what}: {other:?} after {n} bytes sent")),
            }
            flooder.abort();
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

// ----- typed I/O errors during the handshake -----------------------------------------

/// ERR-5 ("Io: the OS's error is the source: `Error::io_error`"): the peer
/// resets the connection in the middle of the handshake. The error is
/// `ErrorKind::Io`, and `io_error()` gives the OS's error
/// (ConnectionReset, ECONNRESET), as it does for the same reset after the
/// handshake, on both backends.
#[tokio::test]
async fn a_reset_during_the_handshake_gives_the_os_error_through_io_error() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let (c, s) = tcp_pair().await;
        let p = tokio::spawn(async move {
            let mut s = s;
            let mut buf = [0u8; 5];
            let _ = s.read_exact(&mut buf).await;
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(s);
        });
        let mut conn = QueuedFramed::new(c);
        let e = within("handshake", conn.starttls(pki::client_on(b)))
            .await
            .unwrap_err();
        let _ = p.await;
        let io = e.io_error();
        let ok = e.kind() == ErrorKind::Io
            && io.is_some_and(|io| {
                io.kind() == std::io::ErrorKind::ConnectionReset
                    && io.raw_os_error() == Some(libc::ECONNRESET)
            });
        if !ok {
            failed.push(format!(
                "{b:?}: kind {:?}, io_error() = {:?}; error: {e:?}",
                e.kind(),
                io
            ));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// The control: the same reset after the handshake, on a read.
#[tokio::test]
async fn a_reset_after_the_handshake_gives_the_os_error_through_io_error() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let (mut client, raw, _conn) = client_vs_raw_rustls_server(b).await;
        socket2::SockRef::from(&raw)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(raw);
        let e = within("read", client.read(LineCodec::new()))
            .await
            .unwrap_err();
        let ok = e.kind() == ErrorKind::Io
            && e.io_error()
                .is_some_and(|io| io.raw_os_error() == Some(libc::ECONNRESET));
        if !ok {
            failed.push(format!("{b:?}: {e:?}"));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

// ----- the peer certificate on a resumed session -------------------------------------

/// One rustls client setting and one server setting reused for a second
/// connection (TLS 1.3 resumption with the tickets of the first): the
/// second connection reports the server's certificate as the first did.
#[tokio::test]
async fn the_peer_certificate_is_reported_on_a_resumed_session() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let client_mode = pki::client_on(b);
        let server_mode = pki::localhost_on(b);
        let mut certs = Vec::new();
        for round in 0..2 {
            let (c, s) = tcp_pair().await;
            let mut client = QueuedFramed::builder()
                .tls(client_mode.clone())
                .build_tcp(c)
                .unwrap();
            let mut server = QueuedFramed::builder()
                .tls(server_mode.clone())
                .build_tcp(s)
                .unwrap();
            let (x, y) = within("hs", async { tokio::join!(client.flush(), server.flush()) }).await;
            x.unwrap();
            y.unwrap();
            // Let the tickets arrive: one exchange both ways.
            server.push_write(LineCodec::new(), "hi").unwrap();
            within("w", server.flush()).await.unwrap();
            within("r", client.read(LineCodec::new())).await.unwrap();
            client.push_write(LineCodec::new(), "bye").unwrap();
            within("shut", client.shutdown_write()).await.unwrap();
            within("r2", server.read(LineCodec::new())).await.unwrap();
            within("shut2", server.shutdown_write()).await.unwrap();
            let _ = within("eof", client.read(OrEof::new(LineCodec::new()))).await;
            certs.push((round, client.peer_certificate().map(|c| c.to_vec())));
        }
        if certs[0].1.is_none() || certs[0].1 != certs[1].1 {
            failed.push(format!(
                "{b:?}: first {:?} bytes, second {:?} bytes",
                certs[0].1.as_ref().map(Vec::len),
                certs[1].1.as_ref().map(Vec::len)
            ));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

// ----- end of input after our own close_notify ---------------------------------------

/// TLS-5/TLS-8: after our `shutdown_write` (close_notify sent), the peer
/// closes TCP without answering with its close_notify. A read then sees
/// truncation (EPROTO, `is_truncated`), the same on both backends.
#[tokio::test]
async fn eof_without_close_notify_after_our_shutdown_is_truncation_on_both_backends() {
    let mut seen = Vec::new();
    for &b in pki::BACKENDS {
        let (mut client, mut raw, mut conn) = client_vs_raw_rustls_server(b).await;
        send_sealed(&mut raw, &mut conn, b"data\n").await;
        within("shut", client.shutdown_write()).await.unwrap();
        raw.shutdown().await.unwrap();
        let l = within("line", client.read(LineCodec::new())).await;
        let e = within("eof", client.read(OrEof::new(LineCodec::new()))).await;
        seen.push(format!(
            "{b:?}: line ok={} then {:?}",
            l.is_ok(),
            e.as_ref()
                .map(|_| ())
                .map_err(|e| (e.kind(), e.tls_error().map(|t| t.kind())))
        ));
    }
    let ok = seen
        .iter()
        .all(|s| s.contains("line ok=true") && s.contains("Truncated"));
    assert!(ok, "{seen:#?}");
}

/// A TLS 1.2 client of backend `b` for `localhost`, trusting the test CA.
fn tls12_client(b: TlsBackend) -> anyframe::tls::TlsMode {
    match b {
        TlsBackend::NativeTls => {
            let mut c = anyframe::tls::TlsClient::builder("localhost");
            c.add_root_certificate(
                anyframe::tls::native_tls::Certificate::from_pem(pki::pki().ca_pem.as_bytes())
                    .unwrap(),
            )
            .disable_built_in_roots(true)
            .max_protocol_version(Some(anyframe::tls::native_tls::Protocol::Tlsv12));
            c.build().unwrap().into()
        }
        _ => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(pki::pki().ca_der.clone().into()).unwrap();
            let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
            anyframe::tls::TlsClient::rustls(Arc::new(cfg), "localhost")
                .unwrap()
                .into()
        }
    }
}

/// TLS-6 over TLS 1.2: data the peer sends between our close_notify and
/// its own is delivered, then the plaintext after its close_notify.
#[tokio::test]
async fn tls12_data_between_the_close_notifies_is_delivered() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let (c, s) = tcp_pair().await;
        let acceptor = tokio_rustls::TlsAcceptor::from(rustls_server_config());
        let server = tokio::spawn(async move {
            let mut tls = acceptor.accept(s).await.unwrap();
            tls.flush().await.unwrap();
            tls.into_inner()
        });
        let mut client = QueuedFramed::builder()
            .tls(tls12_client(b))
            .build_tcp(c)
            .unwrap();
        within("client handshake", client.flush()).await.unwrap();
        let (mut raw, mut conn) = within("server handshake", server).await.unwrap();
        let v = conn.protocol_version();
        let r = late_data_then_plaintext(&mut client, &mut raw, &mut conn, false);
        match tokio::time::timeout(Duration::from_secs(5), r).await {
            Ok(Ok((a, p))) if a == b"late" && p == b"plain" => {}
            other => failed.push(format!("{b:?} ({v:?}): {other:?}")),
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// ERR-5 for stoptls: the peer has reset the connection when we send our
/// close_notify. The error is `ErrorKind::Io` and `io_error()` gives the
/// OS's error, on both backends.
#[tokio::test]
async fn a_reset_before_our_stoptls_gives_the_os_error_through_io_error() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let (mut client, raw, _conn) = client_vs_raw_rustls_server(b).await;
        socket2::SockRef::from(&raw)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(raw);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let e = within("stoptls", client.stoptls()).await.unwrap_err();
        let ok =
            matches!(e.kind(), ErrorKind::Io | ErrorKind::BrokenPipe) && e.io_error().is_some();
        if !ok {
            failed.push(format!(
                "{b:?}: kind {:?}, io_error() = {:?}; {e:?}",
                e.kind(),
                e.io_error()
            ));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}
