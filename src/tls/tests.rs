//! Tests of the TLS transport over `tokio::io::duplex` and 127.0.0.1 TCP,
//! with certificates made at test time.

use std::future::poll_fn;
use std::io;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use native_tls::{Certificate, Identity, Protocol, TlsAcceptor};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{TlsClient, TlsError, TlsErrorKind, TlsMode, TlsServer, TlsTransport};

/// Certificates for every scenario, made once per test binary.
struct Pki {
    ca: Certificate,
    /// `localhost`, issued by `ca`.
    server: Identity,
    /// `other.example`, issued by `ca`.
    wrong_host: Identity,
    /// `localhost`, issued by `ca`, valid only in 2000.
    expired: Identity,
    /// `localhost`, issued by a CA the client does not know.
    unknown_ca: Identity,
    /// A client certificate issued by `ca`.
    client: Identity,
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let ca = make_ca("anyframe test CA");
        let other_ca = make_ca("someone else's CA");
        let leaf = |ca: &(CertificateParams, KeyPair), name: &str, expired: bool, client: bool| {
            let key = KeyPair::generate().expect("leaf key");
            let mut p = CertificateParams::new(vec![name.to_owned()]).expect("leaf params");
            p.distinguished_name.push(DnType::CommonName, name);
            p.use_authority_key_identifier_extension = true;
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            p.extended_key_usages = vec![if client {
                ExtendedKeyUsagePurpose::ClientAuth
            } else {
                ExtendedKeyUsagePurpose::ServerAuth
            }];
            if expired {
                p.not_before = rcgen::date_time_ymd(2000, 1, 1);
                p.not_after = rcgen::date_time_ymd(2001, 1, 1);
            }
            let issuer = Issuer::from_params(&ca.0, &ca.1);
            let cert = p.signed_by(&key, &issuer).expect("sign leaf");
            Identity::from_pkcs8(cert.pem().as_bytes(), key.serialize_pem().as_bytes())
                .expect("identity")
        };
        let ca_cert = ca.0.self_signed(&ca.1).expect("self-sign CA");
        Pki {
            ca: Certificate::from_pem(ca_cert.pem().as_bytes()).expect("CA cert"),
            server: leaf(&ca, "localhost", false, false),
            wrong_host: leaf(&ca, "other.example", false, false),
            expired: leaf(&ca, "localhost", true, false),
            unknown_ca: leaf(&other_ca, "localhost", false, false),
            client: leaf(&ca, "anyframe client", false, true),
        }
    })
}

fn make_ca(name: &str) -> (CertificateParams, KeyPair) {
    let key = KeyPair::generate().expect("CA key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    (p, key)
}

/// A client for `localhost` that trusts only the test CA.
fn client_builder() -> super::TlsClientBuilder {
    let mut b = TlsClient::builder("localhost");
    b.add_root_certificate(pki().ca.clone())
        .disable_built_in_roots(true);
    b
}

fn client() -> TlsMode {
    client_builder().build().expect("client").into()
}

fn server_with(identity: &Identity) -> TlsMode {
    TlsServer::new(identity.clone()).expect("server").into()
}

fn server() -> TlsMode {
    server_with(&pki().server)
}

async fn handshake<IO: AsyncRead + AsyncWrite + Unpin>(
    t: &mut TlsTransport<IO>,
) -> Result<(), TlsError> {
    poll_fn(|cx| t.poll_handshake(cx)).await
}

async fn stop_tls<IO: AsyncRead + AsyncWrite + Unpin>(
    t: &mut TlsTransport<IO>,
) -> Result<(), TlsError> {
    poll_fn(|cx| t.poll_stop_tls(cx)).await
}

/// Starts TLS on both ends of `a`/`b` and runs both handshakes.
async fn tls_pair<IO>(a: IO, b: IO) -> (TlsTransport<IO>, TlsTransport<IO>)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let (mut c, mut s) = (TlsTransport::new(a), TlsTransport::new(b));
    c.start_tls(client(), Bytes::new()).unwrap();
    s.start_tls(server(), Bytes::new()).unwrap();
    let (rc, rs) = tokio::join!(handshake(&mut c), handshake(&mut s));
    rc.expect("client handshake");
    rs.expect("server handshake");
    (c, s)
}

async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (c, s) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (c.unwrap(), s.unwrap().0)
}

/// Reads until `n` bytes have come or the stream ends.
async fn read_n<R: AsyncRead + Unpin>(r: &mut R, n: usize) -> Vec<u8> {
    let mut out = vec![0; n];
    r.read_exact(&mut out).await.expect("read_exact");
    out
}

#[tokio::test]
async fn connect_accept_round_trip_over_duplex() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (mut c, mut s) = tls_pair(a, b).await;
    assert!(c.is_tls() && s.is_tls());
    assert!(c.peer_certificate().is_some(), "the server sent its cert");
    c.write_all(b"hello from the client").await.unwrap();
    assert_eq!(read_n(&mut s, 21).await, b"hello from the client");
    s.write_all(b"and back").await.unwrap();
    assert_eq!(read_n(&mut c, 8).await, b"and back");
}

#[tokio::test]
async fn connect_accept_round_trip_over_tcp() {
    let (a, b) = tcp_pair().await;
    let (mut c, mut s) = tls_pair(a, b).await;
    c.write_all(b"ping").await.unwrap();
    assert_eq!(read_n(&mut s, 4).await, b"ping");
    s.write_all(b"pong").await.unwrap();
    assert_eq!(read_n(&mut c, 4).await, b"pong");
    assert!(c.get_ref().unwrap().peer_addr().is_ok());
}

#[tokio::test]
async fn reads_and_writes_drive_the_handshake() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (mut c, mut s) = (TlsTransport::new(a), TlsTransport::new(b));
    c.start_tls(client(), Bytes::new()).unwrap();
    s.start_tls(server(), Bytes::new()).unwrap();
    let client = async {
        c.write_all(b"no explicit handshake").await.unwrap();
        c.flush().await.unwrap();
        c
    };
    let server = async {
        let got = read_n(&mut s, 21).await;
        (s, got)
    };
    let (_c, (_s, got)) = tokio::join!(client, server);
    assert_eq!(got, b"no explicit handshake");
}

/// A bulk transfer through a 61-byte pipe: every handshake message and
/// record is split, and both directions hit `Pending` many times.
#[tokio::test]
async fn tiny_pipe_bulk_transfer() {
    let (a, b) = tokio::io::duplex(61);
    let (mut c, mut s) = tls_pair(a, b).await;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let expected = data.clone();
    let writer = async move {
        c.write_all(&data).await.unwrap();
        c.flush().await.unwrap();
        c
    };
    let reader = async move {
        let got = read_n(&mut s, expected.len()).await;
        assert!(got == expected, "bulk data differs");
        s
    };
    tokio::join!(writer, reader);
}

/// STARTTLS: the server had already read the start of the ClientHello from
/// the socket when it decided to start TLS. Those bytes go in as `replay`;
/// the rest is still in the socket.
#[tokio::test]
async fn replay_feeds_buffered_client_hello_to_the_server() {
    let (a, mut b) = tcp_pair().await;
    let mut c = TlsTransport::new(a);
    c.start_tls(client(), Bytes::new()).unwrap();
    let client = async move {
        handshake(&mut c).await.expect("client handshake");
        c.write_all(b"secret after replay").await.unwrap();
        let echo = read_n(&mut c, 4).await;
        assert_eq!(echo, b"done");
        c
    };
    let server = async move {
        // Read 300 bytes of the hello by hand (at least 300 are on the way:
        // a TLS 1.3 ClientHello from OpenSSL is larger than that).
        let mut head = vec![0u8; 300];
        b.read_exact(&mut head).await.unwrap();
        assert_eq!(head[0], 0x16, "a TLS handshake record");
        let mut s = TlsTransport::new(b);
        s.start_tls(server(), Bytes::from(head)).unwrap();
        handshake(&mut s)
            .await
            .expect("server handshake with replay");
        let got = read_n(&mut s, 19).await;
        assert_eq!(
            got, b"secret after replay",
            "no replay byte leaks as plaintext"
        );
        s.write_all(b"done").await.unwrap();
        s
    };
    tokio::join!(client, server);
}

/// The SMTP shape: `STARTTLS\r\n` and the ClientHello arrive in one read;
/// the server answers the line, and the rest of its buffer is the replay.
#[tokio::test]
async fn starttls_line_and_client_hello_in_one_buffer() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (mut c, mut s) = (TlsTransport::new(a), TlsTransport::new(b));
    let client = async move {
        c.write_all(b"STARTTLS\r\n").await.unwrap();
        // Start TLS at once, without waiting for a reply (as a pipelining
        // client might): the hello follows the line in the same buffer.
        c.start_tls(client(), Bytes::new()).unwrap();
        handshake(&mut c).await.expect("client handshake");
        c.write_all(b"MAIL FROM:<a@b>\r\n").await.unwrap();
        c
    };
    let server = async move {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        // Wait until the line and at least the record header are in.
        while buf.len() < 10 + 5 {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "client closed early");
            buf.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(&buf[..10], b"STARTTLS\r\n");
        let replay = Bytes::from(buf).slice(10..);
        s.start_tls(server(), replay).unwrap();
        handshake(&mut s).await.expect("server handshake");
        let got = read_n(&mut s, 17).await;
        assert_eq!(got, b"MAIL FROM:<a@b>\r\n");
        s
    };
    tokio::join!(client, server);
}

/// Both sides stop TLS, then plaintext flows both ways over the same socket,
/// and TLS data sent before the close_notify still arrives.
#[tokio::test]
async fn stoptls_round_trip_then_plaintext() {
    let (a, b) = tcp_pair().await;
    let (mut c, mut s) = tls_pair(a, b).await;
    c.write_all(b"tls-1").await.unwrap();
    assert_eq!(read_n(&mut s, 5).await, b"tls-1");

    // The client stops first and writes plaintext right behind its
    // close_notify; its read side stays TLS.
    stop_tls(&mut c).await.expect("client stoptls");
    assert!(c.is_tls(), "read side waits for the server's close_notify");
    c.write_all(b"plain-from-client").await.unwrap();

    // The server still sends one TLS record before it answers.
    s.write_all(b"late tls data").await.unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(
        s.read(&mut buf).await.unwrap(),
        0,
        "close_notify is a clean EOF"
    );
    assert!(!s.was_truncated());
    stop_tls(&mut s).await.expect("server stoptls");
    assert!(!s.is_tls(), "both alerts seen: plaintext");
    assert_eq!(read_n(&mut s, 17).await, b"plain-from-client");
    s.write_all(b"plain-from-server").await.unwrap();

    // The client gets the late TLS data, then plaintext with no EOF between.
    assert_eq!(read_n(&mut c, 13).await, b"late tls data");
    assert_eq!(read_n(&mut c, 17).await, b"plain-from-server");
    assert!(!c.is_tls());

    // Plain again: TLS can start over on the same connection.
    let (ca, ra) = c.into_inner();
    let (sa, rb) = s.into_inner();
    assert!(ra.is_empty() && rb.is_empty());
    let (mut c, mut s) = tls_pair(ca, sa).await;
    c.write_all(b"again").await.unwrap();
    assert_eq!(read_n(&mut s, 5).await, b"again");
}

/// Both ends stop at the same time through a 61-byte pipe: each sends its
/// close_notify unprompted, and each reads the other's before plaintext.
#[tokio::test]
async fn simultaneous_stoptls_through_a_tiny_pipe() {
    let (a, b) = tokio::io::duplex(61);
    let (c, s) = tls_pair(a, b).await;
    async fn side<IO: AsyncRead + AsyncWrite + Unpin>(
        mut t: TlsTransport<IO>,
        me: &'static [u8],
        peer: &'static [u8],
    ) -> TlsTransport<IO> {
        stop_tls(&mut t).await.expect("stoptls");
        t.write_all(me).await.unwrap();
        assert_eq!(read_n(&mut t, peer.len()).await, peer);
        assert!(!t.is_tls());
        t
    }
    tokio::join!(
        side(c, b"plain from c", b"plain from s"),
        side(s, b"plain from s", b"plain from c"),
    );
}

#[test]
fn transport_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<TlsTransport<TcpStream>>();
    assert_send::<TlsMode>();
    assert_send::<TlsError>();
}

#[tokio::test]
async fn stop_tls_when_plain_is_a_no_op_and_start_twice_fails() {
    let (a, b) = tokio::io::duplex(1024);
    let mut t = TlsTransport::new(a);
    assert!(!t.is_tls());
    stop_tls(&mut t).await.unwrap();
    handshake(&mut t).await.unwrap();
    t.start_tls(client(), Bytes::new()).unwrap();
    let err = t.start_tls(client(), Bytes::new()).unwrap_err();
    assert_eq!(err.kind(), TlsErrorKind::AlreadyTls);
    assert!(!err.is_fatal());
    assert!(t.is_tls(), "the first start_tls still stands");
    drop(b);
}

#[tokio::test]
async fn peer_close_notify_is_a_clean_eof() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (mut c, mut s) = tls_pair(a, b).await;
    s.write_all(b"last words").await.unwrap();
    s.shutdown().await.expect("close_notify + shutdown");
    let mut got = Vec::new();
    c.read_to_end(&mut got).await.expect("clean EOF");
    assert_eq!(got, b"last words");
    assert!(!c.was_truncated());
    let mut buf = [0u8; 8];
    assert_eq!(c.read(&mut buf).await.unwrap(), 0, "EOF repeats");
    // The client answers; the server sees its close_notify as EOF too.
    c.shutdown().await.unwrap();
    assert_eq!(s.read(&mut buf).await.unwrap(), 0);
    assert!(s.write_all(b"x").await.is_err(), "no writes after shutdown");
}

#[tokio::test]
async fn tcp_eof_without_close_notify_is_truncation() {
    let (a, b) = tcp_pair().await;
    let (mut c, s) = tls_pair(a, b).await;
    // Drop the server's TLS session without close_notify; send a FIN.
    let (mut raw, _) = s.into_inner();
    raw.shutdown().await.unwrap();
    let mut buf = [0u8; 8];
    let err = c.read(&mut buf).await.expect_err("truncation");
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    let tls = TlsError::from_io_ref(&err).expect("a TlsError inside");
    assert!(tls.is_truncated(), "{tls}");
    assert!(c.was_truncated());
    let again = c.read(&mut buf).await.expect_err("truncation is sticky");
    assert_eq!(again.kind(), io::ErrorKind::UnexpectedEof);
}

#[tokio::test]
async fn truncation_in_the_middle_of_a_record() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (mut c, s) = tls_pair(a, b).await;
    let (mut raw, _) = s.into_inner();
    // Half an application-data record header, then EOF.
    raw.write_all(&[0x17, 0x03]).await.unwrap();
    drop(raw);
    let mut buf = [0u8; 8];
    let err = c.read(&mut buf).await.expect_err("truncation");
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    assert!(c.was_truncated());
}

/// Runs a handshake against `server_mode` and returns the client's error.
async fn failing_handshake(client_mode: TlsMode, server_mode: TlsMode) -> (TlsError, TlsError) {
    let (a, b) = tcp_pair().await;
    let (mut c, mut s) = (TlsTransport::new(a), TlsTransport::new(b));
    c.start_tls(client_mode, Bytes::new()).unwrap();
    s.start_tls(server_mode, Bytes::new()).unwrap();
    let (rc, rs) = tokio::join!(handshake(&mut c), handshake(&mut s));
    let ce = rc.expect_err("client must refuse");
    let se = rs.expect_err("server sees the client's alert");
    // Failed for good: no plaintext afterwards, but the IO comes back.
    assert!(!c.is_tls());
    let w = c
        .write_all(b"plaintext?")
        .await
        .expect_err("no plaintext after a failure");
    assert_eq!(w.kind(), io::ErrorKind::InvalidData);
    assert!(TlsError::from_io_ref(&w).unwrap().is_handshake());
    let mut buf = [0u8; 4];
    assert!(c.read(&mut buf).await.is_err());
    let (io, _) = c.into_inner();
    assert!(io.peer_addr().is_ok());
    (ce, se)
}

fn assert_verify_error(e: &TlsError, reason: &str) {
    assert!(e.is_handshake() && e.is_fatal(), "{e:?}");
    let msg = e.to_string();
    eprintln!("client error: {msg}");
    assert!(msg.starts_with("TLS handshake failed"), "{msg}");
    assert!(msg.contains("certificate verify failed"), "{msg}");
    assert!(
        msg.to_lowercase().contains(&reason.to_lowercase()),
        "expected {reason:?} in {msg}"
    );
}

#[tokio::test]
async fn wrong_host_fails_the_handshake() {
    let (ce, se) = failing_handshake(client(), server_with(&pki().wrong_host)).await;
    assert_verify_error(&ce, "hostname mismatch");
    assert!(se.is_handshake(), "{se}");
}

#[tokio::test]
async fn unknown_ca_fails_the_handshake() {
    let (ce, _) = failing_handshake(client(), server_with(&pki().unknown_ca)).await;
    assert_verify_error(&ce, "unable to get local issuer certificate");
}

#[tokio::test]
async fn expired_certificate_fails_the_handshake() {
    let (ce, _) = failing_handshake(client(), server_with(&pki().expired)).await;
    assert_verify_error(&ce, "certificate has expired");
}

#[tokio::test]
async fn sni_off_still_checks_the_host_name() {
    let mut b = client_builder();
    b.sni(false);
    let (ce, _) =
        failing_handshake(b.build().unwrap().into(), server_with(&pki().wrong_host)).await;
    assert_verify_error(&ce, "hostname mismatch");
}

#[tokio::test]
async fn no_common_protocol_version_fails_the_handshake() {
    let mut b = client_builder();
    b.min_protocol_version(Some(Protocol::Tlsv13));
    let acceptor = TlsAcceptor::builder(pki().server.clone())
        .max_protocol_version(Some(Protocol::Tlsv12))
        .build()
        .unwrap();
    let (ce, se) =
        failing_handshake(b.build().unwrap().into(), TlsServer::from(acceptor).into()).await;
    assert!(ce.is_handshake() && se.is_handshake(), "{ce} / {se}");
}

#[tokio::test]
async fn dangerous_opt_outs_are_honoured() {
    let mut b = client_builder();
    b.danger_accept_invalid_hostnames(true);
    let (x, y) = tcp_pair().await;
    let (mut c, mut s) = (TlsTransport::new(x), TlsTransport::new(y));
    c.start_tls(b.build().unwrap().into(), Bytes::new())
        .unwrap();
    s.start_tls(server_with(&pki().wrong_host), Bytes::new())
        .unwrap();
    let (rc, rs) = tokio::join!(handshake(&mut c), handshake(&mut s));
    rc.expect("hostname check off");
    rs.unwrap();

    let mut b = TlsClient::builder("localhost");
    b.disable_built_in_roots(true)
        .danger_accept_invalid_certs(true);
    let (x, y) = tcp_pair().await;
    let (mut c, mut s) = (TlsTransport::new(x), TlsTransport::new(y));
    c.start_tls(b.build().unwrap().into(), Bytes::new())
        .unwrap();
    s.start_tls(server_with(&pki().expired), Bytes::new())
        .unwrap();
    let (rc, rs) = tokio::join!(handshake(&mut c), handshake(&mut s));
    rc.expect("certificate checks off");
    rs.unwrap();
}

#[tokio::test]
async fn client_identity_handshakes() {
    let mut b = client_builder();
    b.identity(pki().client.clone());
    let (x, y) = tokio::io::duplex(64 * 1024);
    let (mut c, mut s) = (TlsTransport::new(x), TlsTransport::new(y));
    c.start_tls(b.build().unwrap().into(), Bytes::new())
        .unwrap();
    s.start_tls(server(), Bytes::new()).unwrap();
    let (rc, rs) = tokio::join!(handshake(&mut c), handshake(&mut s));
    rc.unwrap();
    rs.unwrap();
}

#[tokio::test]
async fn plaintext_peer_fails_the_server_handshake() {
    let (mut a, b) = tokio::io::duplex(1024);
    let mut s = TlsTransport::new(b);
    s.start_tls(server(), Bytes::from_static(b"EHLO example\r\n"))
        .unwrap();
    a.write_all(b"more plaintext\r\n").await.unwrap();
    let err = handshake(&mut s).await.expect_err("not TLS");
    assert!(err.is_handshake(), "{err}");
    let (_io, rest) = s.into_inner();
    assert!(rest.len() < 14, "the TLS library read the replay");
}

#[tokio::test]
async fn peer_vanishing_mid_handshake_is_a_handshake_error() {
    let (a, b) = tokio::io::duplex(1024);
    let mut s = TlsTransport::new(b);
    // Half a ClientHello record header, then EOF.
    s.start_tls(server(), Bytes::from_static(&[0x16, 0x03, 0x01]))
        .unwrap();
    drop(a);
    let err = handshake(&mut s).await.expect_err("EOF in handshake");
    assert!(err.is_handshake(), "{err:?}");
    assert!(err.to_string().contains("closed the connection"), "{err}");
}

#[tokio::test]
async fn into_inner_mid_session_returns_the_io() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (c, s) = tls_pair(a, b).await;
    let (mut ra, rest) = c.into_inner();
    assert!(rest.is_empty());
    let (mut rb, _) = s.into_inner();
    ra.write_all(b"raw").await.unwrap();
    assert_eq!(read_n(&mut rb, 3).await, b"raw");
}

#[tokio::test]
async fn into_inner_before_the_handshake_returns_the_replay() {
    let (a, _b) = tokio::io::duplex(1024);
    let mut t = TlsTransport::new(a);
    t.start_tls(server(), Bytes::from_static(b"\x16\x03\x01"))
        .unwrap();
    let (_io, rest) = t.into_inner();
    assert_eq!(&rest[..], b"\x16\x03\x01");
}

#[test]
fn io_error_conversion() {
    let e = TlsError::io(io::Error::new(io::ErrorKind::ConnectionReset, "reset"));
    assert_eq!(e.kind(), TlsErrorKind::Io);
    let back: io::Error = e.into();
    assert_eq!(back.kind(), io::ErrorKind::ConnectionReset);
    let t: io::Error = TlsError::truncated().into();
    assert_eq!(t.kind(), io::ErrorKind::UnexpectedEof);
    assert!(TlsError::from_io_ref(&t).unwrap().is_truncated());
}

/// Bulk transfer cost of this adapter against `tokio_native_tls::TlsStream`
/// over loopback TCP. Not a timed assertion; run with
/// `cargo test --release --lib --features tls tls::tests::bulk_cost -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test"]
async fn bulk_cost_vs_tokio_native_tls() {
    const TOTAL: usize = 256 << 20;
    const CHUNK: usize = 64 << 10;
    const ROUNDS: usize = 5;

    async fn pump<W, R>(mut w: W, mut r: R) -> Duration
    where
        W: AsyncWrite + Unpin + Send + 'static,
        R: AsyncRead + Unpin + Send + 'static,
    {
        let start = Instant::now();
        let writer = tokio::spawn(async move {
            let chunk = vec![0x5au8; CHUNK];
            for _ in 0..TOTAL / CHUNK {
                w.write_all(&chunk).await.unwrap();
            }
            w.flush().await.unwrap();
            w
        });
        let mut buf = vec![0u8; CHUNK];
        let mut got = 0;
        while got < TOTAL {
            r.read_exact(&mut buf).await.unwrap();
            got += CHUNK;
        }
        let _w = writer.await.unwrap();
        start.elapsed()
    }

    async fn ours<IO>(a: IO, b: IO) -> Duration
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (c, s) = tls_pair(a, b).await;
        pump(s, c).await
    }

    async fn theirs<IO>(a: IO, b: IO) -> Duration
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let connector = tokio_native_tls::TlsConnector::from(
            native_tls::TlsConnector::builder()
                .add_root_certificate(pki().ca.clone())
                .disable_built_in_roots(true)
                .build()
                .unwrap(),
        );
        let acceptor =
            tokio_native_tls::TlsAcceptor::from(TlsAcceptor::new(pki().server.clone()).unwrap());
        let (c, s) = tokio::join!(connector.connect("localhost", a), acceptor.accept(b));
        pump(s.unwrap(), c.unwrap()).await
    }

    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let mib = (TOTAL >> 20) as f64;
    for over in ["127.0.0.1 TCP", "tokio duplex (256 KiB)"] {
        let (mut o, mut t) = (Vec::new(), Vec::new());
        // Alternate which goes first, so drift in machine load hits both.
        for round in 0..2 * ROUNDS {
            let mine = (round % 2 == 0) == (round / 2 % 2 == 0);
            let d = if over.starts_with("127") {
                let (a, b) = tcp_pair().await;
                if mine {
                    ours(a, b).await
                } else {
                    theirs(a, b).await
                }
            } else {
                let (a, b) = tokio::io::duplex(256 << 10);
                if mine {
                    ours(a, b).await
                } else {
                    theirs(a, b).await
                }
            };
            if mine { o.push(d) } else { t.push(d) }
        }
        let (om, tm) = (median(&mut o), median(&mut t));
        println!(
            "{over}: {mib} MiB in {}-KiB chunks, median of {ROUNDS}: TlsTransport {:.0} MiB/s, \
             tokio_native_tls {:.0} MiB/s, ratio {:.3}",
            CHUNK >> 10,
            mib / om.as_secs_f64(),
            mib / tm.as_secs_f64(),
            tm.as_secs_f64() / om.as_secs_f64(),
        );
    }
}
