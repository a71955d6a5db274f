//! TLS on a live QueuedFramed (issue 6): STARTTLS, stoptls, autostart,
//! verification, against our own peer and the `openssl` command-line tool.
#![cfg(feature = "tls")]

mod support;

#[path = "support/pki.rs"]
mod pki;

use anyframe::codecs::LineCodec;
use anyframe::{ErrorKind, QueuedFramed};

/// The SMTP shape on both sides, sequential API: plaintext exchange,
/// STARTTLS, then lines over TLS.
#[tokio::test]
async fn starttls_after_a_plaintext_exchange_then_lines_over_tls() {
    let (a, b) = tokio::io::duplex(16 * 1024);
    let server = tokio::spawn(async move {
        let mut conn = QueuedFramed::new(b);
        assert_eq!(
            conn.read(LineCodec::new()).await.unwrap().line(),
            "STARTTLS"
        );
        conn.push_write(LineCodec::new(), "220 ready").unwrap();
        conn.starttls(pki::server()).await.unwrap();
        assert!(conn.is_tls());
        let secret = conn.read(LineCodec::new()).await.unwrap();
        conn.write(LineCodec::new(), [&b"got "[..], secret.line()].concat())
            .await
            .unwrap();
    });
    let mut conn = QueuedFramed::new(a);
    conn.write(LineCodec::new(), "STARTTLS").await.unwrap();
    assert_eq!(
        conn.read(LineCodec::new()).await.unwrap().line(),
        "220 ready"
    );
    conn.starttls(pki::client()).await.unwrap();
    conn.write(LineCodec::new(), "secret").await.unwrap();
    assert_eq!(
        conn.read(LineCodec::new()).await.unwrap().line(),
        "got secret"
    );
    server.await.unwrap();
}

#[tokio::test]
async fn a_wrong_host_certificate_is_fatal_eproto() {
    let (a, b) = tokio::io::duplex(16 * 1024);
    tokio::spawn(async move {
        let mut conn = QueuedFramed::new(b);
        let _ = conn
            .starttls(pki::server_with(&pki::pki().wrong_host))
            .await;
    });
    let mut conn = QueuedFramed::new(a);
    let e = conn.starttls(pki::client()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Protocol);
    assert!(e.is_fatal() && conn.is_destroyed());
    assert!(
        e.to_string().to_lowercase().contains("hostname mismatch"),
        "{e}"
    );
    // Never continues unencrypted.
    assert!(conn.write(LineCodec::new(), "plaintext?").await.is_err());
}
