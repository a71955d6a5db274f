//! Write readiness once the output is shut (`push_shutdown`), on both front
//! ends and through the tower client; TLS client names that name no host,
//! and I/O errors between the close_notifies. Every wait is bounded.
#![cfg(all(feature = "tls", feature = "rustls"))]

mod support;

#[path = "support/net.rs"]
mod net;
#[path = "support/pki.rs"]
mod pki;

use std::sync::Arc;
use std::time::Duration;

use anyframe::codecs::LineCodec;
use anyframe::service::Client;
use anyframe::tls::TlsBackend;
use anyframe::tls::rustls;
use anyframe::{ErrorKind, QueuedFramed};
use net::tcp_pair;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tower::{Service, ServiceExt};

const SHORT: Duration = Duration::from_secs(2);

// ----- readiness after push_shutdown -------------------------------------------------

/// A producer parked in `ready_to_write` (the queue above the high
/// watermark, the peer not reading) when another handle calls
/// `push_shutdown`: no write can ever be queued again, so it hears the
/// non-fatal `EINVAL` then, not whenever (if ever) the peer reads.
#[tokio::test]
async fn ready_to_write_parked_before_push_shutdown_wakes_with_einval() {
    let (ours, _theirs) = tokio::io::duplex(1024);
    let (h, _driver) = QueuedFramed::builder()
        .watermarks(4096, 1024)
        .build(ours)
        .spawn();
    h.push_bytes(vec![b'x'; 64 * 1024]).unwrap();
    let waiter = {
        let h = h.clone();
        tokio::spawn(async move { h.ready_to_write().await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished(), "not parked: the test is void");
    h.push_shutdown().unwrap();
    let r = tokio::time::timeout(SHORT, waiter).await;
    match r {
        Ok(Ok(Err(e))) if e.kind() == ErrorKind::InvalidInput && !e.is_fatal() => {}
        other => panic!("parked ready_to_write after push_shutdown: {other:?}"),
    }
    // A fresh call says so at once (the documented behaviour).
    let fresh = tokio::time::timeout(SHORT, h.ready_to_write()).await;
    assert!(
        matches!(&fresh, Ok(Err(e)) if e.kind() == ErrorKind::InvalidInput),
        "{fresh:?}"
    );
}

/// The inline front end, queue above the high watermark and the peer not
/// reading: after `push_shutdown`, `ready_to_write` (and `Sink::poll_ready`,
/// the same function) returns the non-fatal `EINVAL` at once, as the
/// spawned handle's does, instead of waiting for the peer to take the
/// queue.
#[tokio::test]
async fn inline_ready_to_write_after_push_shutdown_fails_at_once_above_the_high_watermark() {
    let (ours, _theirs) = tokio::io::duplex(1024);
    let mut conn = QueuedFramed::builder().watermarks(4096, 1024).build(ours);
    conn.push_bytes(vec![b'x'; 64 * 1024]).unwrap();
    conn.push_shutdown().unwrap();
    let r = tokio::time::timeout(SHORT, conn.ready_to_write()).await;
    assert!(
        matches!(&r, Ok(Err(e)) if e.kind() == ErrorKind::InvalidInput && !e.is_fatal()),
        "inline ready_to_write after push_shutdown: {r:?}"
    );
}

/// The tower `Client` with every in-flight slot taken by a call the peer
/// has not answered yet: once the output is shut, `poll_ready` returns the
/// documented non-fatal `EINVAL` ("for good"), not `Pending` until a slot
/// frees.
#[tokio::test]
async fn client_poll_ready_with_every_slot_taken_fails_once_the_output_is_shut() {
    let (ours, _theirs) = tokio::io::duplex(4096);
    let (handle, _driver) = QueuedFramed::new(ours).spawn();
    let mut client =
        Client::builder()
            .max_in_flight(1)
            .build(handle.clone(), LineCodec::new(), |_: &&str| {
                LineCodec::new()
            });
    let _first = client.ready().await.unwrap().call("one");
    handle.push_shutdown().unwrap();
    let r = tokio::time::timeout(SHORT, client.ready()).await;
    assert!(
        matches!(&r, Ok(Err(e)) if e.kind() == ErrorKind::InvalidInput),
        "poll_ready with no free slot after push_shutdown: {:?}",
        r.map(|r| r.map(|_| ()))
    );
}

// ----- TLS ---------------------------------------------------------------------------

/// As `an_empty_domain_never_skips_host_name_verification`, with the
/// domain "\0": OpenSSL drops one trailing NUL from a host name, which
/// leaves the empty name, "check no host name". A native-tls client for
/// "\0" with SNI off must not accept a certificate for another host.
#[tokio::test]
async fn a_nul_domain_never_skips_host_name_verification() {
    let mut b = anyframe::tls::TlsClient::builder("\0");
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
    let x = tokio::time::timeout(Duration::from_secs(10), client.flush())
        .await
        .expect("client handshake hung");
    assert!(
        x.is_err(),
        "the native-tls client for \"\\0\" accepted a certificate for other.example (is_tls={})",
        client.is_tls()
    );
    drop(client);
    let _ = tokio::time::timeout(Duration::from_secs(10), srv).await;
}

async fn client_vs_raw_rustls_server(b: TlsBackend) -> (QueuedFramed<TcpStream>, TcpStream) {
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
    let (c, s) = tcp_pair().await;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let server = tokio::spawn(async move {
        let mut tls = acceptor.accept(s).await.unwrap();
        tls.flush().await.unwrap();
        tls.into_inner().0
    });
    let mut client = QueuedFramed::builder()
        .tls(pki::client_on(b))
        .build_tcp(c)
        .unwrap();
    tokio::time::timeout(SHORT * 5, client.flush())
        .await
        .unwrap()
        .unwrap();
    let raw = tokio::time::timeout(SHORT * 5, server)
        .await
        .unwrap()
        .unwrap();
    (client, raw)
}

/// ERR-5 in the phase between the close_notifies: our stoptls is done (our
/// close_notify out), and the peer resets instead of answering. The read
/// that waits for the peer's close_notify fails with `ErrorKind::Io` and
/// `io_error()` gives ECONNRESET, on both backends; likewise
/// `shutdown_write` after a reset.
#[tokio::test]
async fn a_reset_between_the_close_notifies_gives_the_os_error_through_io_error() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        for how in ["stoptls", "shutdown_write"] {
            let (mut client, raw) = client_vs_raw_rustls_server(b).await;
            let r = async {
                if how == "stoptls" {
                    client.stoptls().await?;
                } else {
                    client.shutdown_write().await?;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                socket2::SockRef::from(&raw)
                    .set_linger(Some(Duration::ZERO))
                    .unwrap();
                drop(raw);
                client
                    .read(LineCodec::new())
                    .await
                    .map(|l| l.line().to_vec())
            };
            match tokio::time::timeout(SHORT * 2, r).await {
                Ok(Err(e))
                    if e.kind() == ErrorKind::Io
                        && e.io_error()
                            .is_some_and(|io| io.raw_os_error() == Some(libc::ECONNRESET)) => {}
                Ok(Err(e)) => failed.push(format!(
                    "{b:?} {how}: kind {:?}, io_error() = {:?}; {e:?}",
                    e.kind(),
                    e.io_error()
                )),
                other => failed.push(format!("{b:?} {how}: {other:?}")),
            }
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}
