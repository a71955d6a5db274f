//! How the rustls backend puts TLS records into writes: what it owes the
//! peer leaves in as few writes as the order of events allows, so that no
//! small segment of its own waits behind Nagle's algorithm for the peer's
//! delayed ACK (docs/semantics.md, OPT-13). Each test records the server's
//! write calls on an in-memory pipe.
#![cfg(feature = "rustls")]

mod support;

#[path = "support/pki.rs"]
mod pki;

use std::sync::Arc;
use std::time::Duration;

use anyframe::QueuedFramed;
use anyframe::codecs::LineCodec;
use anyframe::tls::TlsBackend;
use anyframe::tls::rustls;
use support::{Tap, Writes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMIT: Duration = Duration::from_secs(10);

async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config() -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki::pki().ca_der.clone().into()).unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn record_types(mut wire: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while wire.len() >= 5 {
        types.push(wire[0]);
        let len = 5 + usize::from(u16::from_be_bytes([wire[3], wire[4]]));
        wire = &wire[len.min(wire.len())..];
    }
    types
}

/// An in-memory pipe: the server's end records its writes.
fn recorded_pipe() -> (
    Tap<tokio::io::DuplexStream>,
    tokio::io::DuplexStream,
    Writes,
) {
    let (a, b) = tokio::io::duplex(1 << 16);
    let (io, writes) = Tap::new(a);
    (io, b, writes)
}

/// A builder for a rustls server.
fn server() -> anyframe::Builder {
    let mut builder = QueuedFramed::builder();
    builder.tls(pki::server_on(TlsBackend::Rustls, &pki::pki().server));
    builder
}

/// A rustls client over `io`.
fn client(io: tokio::io::DuplexStream) -> QueuedFramed<tokio::io::DuplexStream> {
    QueuedFramed::builder()
        .tls(pki::client_on(TlsBackend::Rustls))
        .build(io)
}

/// The client's side of a greeting exchange: reads `hello`, answers `bye`.
async fn read_greeting_answer_bye(client: &mut QueuedFramed<tokio::io::DuplexStream>) {
    within("client", async {
        let got = client.read(LineCodec::new()).await.unwrap();
        assert_eq!(got.line(), b"hello");
        client.write(LineCodec::new(), "bye").await.unwrap();
    })
    .await;
}

/// Asserts the server wrote `n` times, showing the record types if not.
fn assert_writes(writes: &Writes, n: usize, what: &str) {
    let w = writes.lock().unwrap();
    let shapes: Vec<_> = w.iter().map(|w| record_types(w)).collect();
    assert_eq!(w.len(), n, "{what}: {shapes:?}");
}

/// A server that queues its greeting before the handshake has run and then
/// reads (`push_write` + `read`): its TLS 1.3 session tickets and the
/// greeting leave in one write, after the handshake flight.
#[tokio::test]
async fn inline_greeting_queued_before_handshake_then_read() {
    let (io, b, writes) = recorded_pipe();
    let server = tokio::spawn(async move {
        let mut conn = server().build(io);
        conn.push_write(LineCodec::new(), "hello").unwrap();
        let got = conn.read(LineCodec::new()).await.unwrap();
        assert_eq!(got.line(), b"bye");
    });
    read_greeting_answer_bye(&mut client(b)).await;
    within("server", server).await.unwrap();
    assert_writes(&writes, 2, "flight, then tickets and greeting in one write");
}

/// The same through a spawned handle with autocork on.
#[tokio::test]
async fn spawned_autocork_greeting_then_read() {
    let (io, b, writes) = recorded_pipe();
    let (h, _driver) = server().autocork(true).build(io).spawn();
    h.push_write(LineCodec::new(), "hello").unwrap();
    let req = h.push_read(LineCodec::new());
    read_greeting_answer_bye(&mut client(b)).await;
    assert_eq!(within("server", req).await.unwrap().line(), b"bye");
    assert_writes(&writes, 2, "flight, then tickets and greeting in one write");
}

/// A raw rustls client over `b`: ClientHello, then the server's flight,
/// then its Finished followed in the same write by `tail`.
async fn raw_client_finishing_with(
    b: &mut tokio::io::DuplexStream,
    tail: &[u8],
) -> rustls::ClientConnection {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = rustls::ClientConnection::new(client_config(), name).unwrap();
    let mut out = Vec::new();
    while tls.wants_write() {
        tls.write_tls(&mut out).unwrap();
    }
    b.write_all(&out).await.unwrap();
    let mut buf = vec![0u8; 1 << 16];
    while tls.is_handshaking() {
        let n = within("flight", b.read(&mut buf)).await.unwrap();
        assert!(n > 0);
        let mut r = &buf[..n];
        while !r.is_empty() {
            tls.read_tls(&mut r).unwrap();
        }
        tls.process_new_packets().unwrap();
    }
    let mut out = Vec::new();
    while tls.wants_write() {
        tls.write_tls(&mut out).unwrap();
    }
    out.extend_from_slice(tail);
    b.write_all(&out).await.unwrap();
    tls
}

/// What the client makes of everything the server sent until EOF.
async fn client_reads_to_end(
    b: &mut tokio::io::DuplexStream,
    tls: &mut rustls::ClientConnection,
) -> (Vec<u8>, Result<(), rustls::Error>) {
    let mut wire = Vec::new();
    within("read", b.read_to_end(&mut wire)).await.unwrap();
    let types = record_types(&wire);
    let mut r = &wire[..];
    while !r.is_empty() {
        tls.read_tls(&mut r).unwrap();
        if let Err(e) = tls.process_new_packets() {
            return (types, Err(e));
        }
    }
    (types, Ok(()))
}

/// The client's Finished followed by a header rustls refuses: the server's
/// handshake ends (the error waits for the data before it) and rustls
/// queues a decode_error alert behind the tickets. Whether the server's
/// first operation is a write or a read, the alert reaches the client and
/// the server's call fails.
#[tokio::test]
async fn garbage_after_the_clients_finished() {
    for server_writes in [true, false] {
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(async move {
            let mut conn = server().build(a);
            let e = if server_writes {
                conn.write(LineCodec::new(), "hello").await.unwrap_err()
            } else {
                conn.read(LineCodec::new()).await.unwrap_err()
            };
            assert_eq!(e.kind(), anyframe::ErrorKind::Protocol, "{e}");
        });
        let mut tls = raw_client_finishing_with(&mut b, b"GARBAGE\r\n").await;
        within("server", server).await.unwrap();
        let (types, r) = client_reads_to_end(&mut b, &mut tls).await;
        assert!(
            matches!(r, Err(rustls::Error::AlertReceived(_))),
            "server_writes={server_writes}: the decode_error alert reaches the client; got records {types:?}, then {r:?}"
        );
    }
}

/// A server that only flushes after its handshake sends its tickets then.
#[tokio::test]
async fn engine_flush_after_handshake_sends_the_tickets() {
    let (io, b, writes) = recorded_pipe();
    let mut server = server().build(io);
    let mut client = client(b);
    let (x, y) = within("handshake", async {
        tokio::join!(client.flush(), server.flush())
    })
    .await;
    x.unwrap();
    y.unwrap();
    within("flush", server.flush()).await.unwrap();
    assert_writes(&writes, 2, "the flight, then the tickets on the flush");
}

/// A server that waits for the client's request (the client speaks first)
/// sends its tickets before it waits: their segment carries the ACK of the
/// client's Finished, which Nagle's algorithm on the client's side may be
/// waiting for before it sends a small request.
#[tokio::test]
async fn a_server_waiting_for_input_sends_its_tickets_first() {
    let (io, b, writes) = recorded_pipe();
    let server = tokio::spawn(async move {
        let mut conn = server().build(io);
        conn.read(LineCodec::new()).await.unwrap()
    });
    let mut client = client(b);
    within("handshake", client.flush()).await.unwrap();
    within("tickets", async {
        while writes.lock().unwrap().len() < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_writes(&writes, 2, "the flight, then the tickets");
    client.write(LineCodec::new(), "request").await.unwrap();
    assert_eq!(within("server", server).await.unwrap().line(), b"request");
}
