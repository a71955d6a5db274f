//! Tests of the TLS transport over `tokio::io::duplex` and 127.0.0.1 TCP,
//! with certificates made at test time.

use std::future::poll_fn;
use std::io;
use std::sync::OnceLock;

use bytes::Bytes;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{TlsBackend, TlsError, TlsErrorKind, TlsMode, TlsServer, TlsTransport};

/// Runs a test once per TLS backend compiled in, as `name::native_tls` and
/// `name::rustls`; the body sees the backend as its one argument.
macro_rules! each_backend {
    ($(#[$attr:meta])* async fn $name:ident($b:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            $(#[$attr])*
            async fn run($b: TlsBackend) $body

            #[cfg(feature = "tls")]
            #[tokio::test]
            async fn native_tls() {
                run(TlsBackend::NativeTls).await
            }

            #[cfg(feature = "rustls")]
            #[tokio::test]
            async fn rustls() {
                run(TlsBackend::Rustls).await
            }
        }
    };
}

/// Every backend compiled in.
const BACKENDS: &[TlsBackend] = &[
    #[cfg(feature = "tls")]
    TlsBackend::NativeTls,
    #[cfg(feature = "rustls")]
    TlsBackend::Rustls,
];

/// One certificate and its key, in the forms each backend reads.
#[allow(dead_code, reason = "each backend reads its own form: PEM or DER")]
struct Leaf {
    cert_pem: String,
    key_pem: String,
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
}

/// Certificates for every scenario, made once per test binary.
#[allow(dead_code, reason = "each backend reads its own form: PEM or DER")]
struct Pki {
    ca_pem: String,
    ca_der: Vec<u8>,
    /// `localhost`, issued by the CA.
    server: Leaf,
    /// `other.example`, issued by the CA.
    wrong_host: Leaf,
    /// `localhost`, issued by the CA, valid only in 2000.
    expired: Leaf,
    /// `localhost`, issued by a CA the client does not know.
    unknown_ca: Leaf,
    /// A client certificate issued by the CA.
    client: Leaf,
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
            Leaf {
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
                cert_der: cert.der().to_vec(),
                key_der: key.serialize_der(),
            }
        };
        let ca_cert = ca.0.self_signed(&ca.1).expect("self-sign CA");
        Pki {
            ca_pem: ca_cert.pem(),
            ca_der: ca_cert.der().to_vec(),
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

#[cfg(feature = "tls")]
mod native_cfg {
    use native_tls::{Certificate, Identity};

    use super::{Leaf, pki};
    use crate::tls::TlsClient;

    pub(super) fn identity(leaf: &Leaf) -> Identity {
        Identity::from_pkcs8(leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes()).expect("identity")
    }

    pub(super) fn ca() -> Certificate {
        Certificate::from_pem(pki().ca_pem.as_bytes()).expect("CA cert")
    }

    /// A client for `localhost` that trusts only the test CA.
    pub(super) fn client_builder() -> crate::tls::TlsClientBuilder {
        let mut b = TlsClient::builder("localhost");
        b.add_root_certificate(ca()).disable_built_in_roots(true);
        b
    }
}

#[cfg(feature = "rustls")]
pub(super) mod rustls_cfg {
    use std::sync::Arc;

    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};

    use super::{Leaf, pki};

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    pub(super) fn roots() -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(pki().ca_der.clone()))
            .expect("CA cert");
        roots
    }

    pub(super) fn chain_and_key(
        leaf: &Leaf,
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (
            vec![CertificateDer::from(leaf.cert_der.clone())],
            PrivateKeyDer::from(PrivatePkcs8KeyDer::from(leaf.key_der.clone())),
        )
    }

    pub(super) fn client_config(versions: &[&'static SupportedProtocolVersion]) -> ClientConfig {
        ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .expect("versions")
            .with_root_certificates(roots())
            .with_no_client_auth()
    }

    /// A client and a server for `localhost`, the default protocol versions.
    pub(in crate::tls) fn localhost_pair() -> (Arc<ClientConfig>, Arc<ServerConfig>) {
        (
            Arc::new(client_config(rustls::DEFAULT_VERSIONS)),
            server_config(&pki().server, rustls::DEFAULT_VERSIONS),
        )
    }

    pub(super) fn server_config(
        leaf: &Leaf,
        versions: &[&'static SupportedProtocolVersion],
    ) -> Arc<ServerConfig> {
        let (chain, key) = chain_and_key(leaf);
        Arc::new(
            ServerConfig::builder_with_provider(provider())
                .with_protocol_versions(versions)
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .expect("server config"),
        )
    }
}

/// A client of backend `b` for `localhost` that trusts only the test CA.
fn client(b: TlsBackend) -> TlsMode {
    match b {
        #[cfg(feature = "tls")]
        TlsBackend::NativeTls => native_cfg::client_builder().build().expect("client").into(),
        #[cfg(feature = "rustls")]
        TlsBackend::Rustls => super::TlsClient::rustls_with_roots(rustls_cfg::roots(), "localhost")
            .expect("client")
            .into(),
    }
}

fn server_with(b: TlsBackend, leaf: &Leaf) -> TlsMode {
    match b {
        #[cfg(feature = "tls")]
        TlsBackend::NativeTls => TlsServer::new(native_cfg::identity(leaf))
            .expect("server")
            .into(),
        #[cfg(feature = "rustls")]
        TlsBackend::Rustls => {
            TlsServer::rustls(rustls_cfg::server_config(leaf, rustls::DEFAULT_VERSIONS)).into()
        }
    }
}

fn server(b: TlsBackend) -> TlsMode {
    server_with(b, &pki().server)
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

/// Starts TLS on both ends of `a`/`b` with backend `b` on both and runs
/// both handshakes.
async fn tls_pair<IO>(backend: TlsBackend, a: IO, b: IO) -> (TlsTransport<IO>, TlsTransport<IO>)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    mixed_pair(client(backend), server(backend), a, b).await
}

/// Starts TLS on both ends with the given settings and runs both
/// handshakes.
async fn mixed_pair<IO>(
    client_mode: TlsMode,
    server_mode: TlsMode,
    a: IO,
    b: IO,
) -> (TlsTransport<IO>, TlsTransport<IO>)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let (mut c, mut s) = (TlsTransport::new(a), TlsTransport::new(b));
    c.start_tls(client_mode, Bytes::new()).unwrap();
    s.start_tls(server_mode, Bytes::new()).unwrap();
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

each_backend! {
    async fn connect_accept_round_trip_over_duplex(backend) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (mut c, mut s) = tls_pair(backend, a, b).await;
        assert!(c.is_tls() && s.is_tls());
        assert!(c.peer_certificate().is_some(), "the server sent its cert");
        c.write_all(b"hello from the client").await.unwrap();
        assert_eq!(read_n(&mut s, 21).await, b"hello from the client");
        s.write_all(b"and back").await.unwrap();
        assert_eq!(read_n(&mut c, 8).await, b"and back");
    }
}

each_backend! {
    async fn connect_accept_round_trip_over_tcp(backend) {
        let (a, b) = tcp_pair().await;
        let (mut c, mut s) = tls_pair(backend, a, b).await;
        c.write_all(b"ping").await.unwrap();
        assert_eq!(read_n(&mut s, 4).await, b"ping");
        s.write_all(b"pong").await.unwrap();
        assert_eq!(read_n(&mut c, 4).await, b"pong");
        assert!(c.get_ref().unwrap().peer_addr().is_ok());
    }
}

each_backend! {
    async fn reads_and_writes_drive_the_handshake(backend) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (mut c, mut s) = (TlsTransport::new(a), TlsTransport::new(b));
        c.start_tls(client(backend), Bytes::new()).unwrap();
        s.start_tls(server(backend), Bytes::new()).unwrap();
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
}

each_backend! {
    /// A bulk transfer through a 61-byte pipe: every handshake message and
    /// record is split, and both directions hit `Pending` many times.
    async fn tiny_pipe_bulk_transfer(backend) {
        let (a, b) = tokio::io::duplex(61);
        let (mut c, mut s) = tls_pair(backend, a, b).await;
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
}

each_backend! {
    /// STARTTLS: the server had already read the start of the ClientHello from
    /// the socket when it decided to start TLS. Those bytes go in as `replay`;
    /// the rest is still in the socket.
    async fn replay_feeds_buffered_client_hello_to_the_server(backend) {
        let (a, mut b) = tcp_pair().await;
        let mut c = TlsTransport::new(a);
        c.start_tls(client(backend), Bytes::new()).unwrap();
        let client = async move {
            handshake(&mut c).await.expect("client handshake");
            c.write_all(b"secret after replay").await.unwrap();
            let echo = read_n(&mut c, 4).await;
            assert_eq!(echo, b"done");
            c
        };
        let server = async move {
            // Read 100 bytes of the hello by hand (more are on the way: a
            // ClientHello from either library is larger than that).
            let mut head = vec![0u8; 100];
            b.read_exact(&mut head).await.unwrap();
            assert_eq!(head[0], 0x16, "a TLS handshake record");
            let mut s = TlsTransport::new(b);
            s.start_tls(server(backend), Bytes::from(head)).unwrap();
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
}

each_backend! {
    /// The SMTP shape: `STARTTLS\r\n` and the ClientHello arrive in one read;
    /// the server answers the line, and the rest of its buffer is the replay.
    async fn starttls_line_and_client_hello_in_one_buffer(backend) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (mut c, mut s) = (TlsTransport::new(a), TlsTransport::new(b));
        let client = async move {
            c.write_all(b"STARTTLS\r\n").await.unwrap();
            // Start TLS at once, without waiting for a reply (as a pipelining
            // client might): the hello follows the line in the same buffer.
            c.start_tls(client(backend), Bytes::new()).unwrap();
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
            s.start_tls(server(backend), replay).unwrap();
            handshake(&mut s).await.expect("server handshake");
            let got = read_n(&mut s, 17).await;
            assert_eq!(got, b"MAIL FROM:<a@b>\r\n");
            s
        };
        tokio::join!(client, server);
    }
}

each_backend! {
    /// Both sides stop TLS, then plaintext flows both ways over the same socket,
    /// and TLS data sent before the close_notify still arrives.
    async fn stoptls_round_trip_then_plaintext(backend) {
        let (a, b) = tcp_pair().await;
        let (mut c, mut s) = tls_pair(backend, a, b).await;
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
        let (mut c, mut s) = tls_pair(backend, ca, sa).await;
        c.write_all(b"again").await.unwrap();
        assert_eq!(read_n(&mut s, 5).await, b"again");
    }
}

each_backend! {
    /// Both ends stop at the same time through a 61-byte pipe: each sends its
    /// close_notify unprompted, and each reads the other's before plaintext.
    async fn simultaneous_stoptls_through_a_tiny_pipe(backend) {
        let (a, b) = tokio::io::duplex(61);
        let (c, s) = tls_pair(backend, a, b).await;
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
}

#[test]
fn transport_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<TlsTransport<TcpStream>>();
    assert_send::<TlsMode>();
    assert_send::<TlsError>();
}

each_backend! {
    async fn stop_tls_when_plain_is_a_no_op_and_start_twice_fails(backend) {
        let (a, b) = tokio::io::duplex(1024);
        let mut t = TlsTransport::new(a);
        assert!(!t.is_tls());
        stop_tls(&mut t).await.unwrap();
        handshake(&mut t).await.unwrap();
        t.start_tls(client(backend), Bytes::new()).unwrap();
        let err = t.start_tls(client(backend), Bytes::new()).unwrap_err();
        assert_eq!(err.kind(), TlsErrorKind::AlreadyTls);
        assert!(!err.is_fatal());
        assert!(t.is_tls(), "the first start_tls still stands");
        drop(b);
    }
}

each_backend! {
    async fn peer_close_notify_is_a_clean_eof(backend) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (mut c, mut s) = tls_pair(backend, a, b).await;
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
}

each_backend! {
    async fn tcp_eof_without_close_notify_is_truncation(backend) {
        let (a, b) = tcp_pair().await;
        let (mut c, s) = tls_pair(backend, a, b).await;
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
}

each_backend! {
    async fn truncation_in_the_middle_of_a_record(backend) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (mut c, s) = tls_pair(backend, a, b).await;
        let (mut raw, _) = s.into_inner();
        // Half an application-data record header, then EOF.
        raw.write_all(&[0x17, 0x03]).await.unwrap();
        drop(raw);
        let mut buf = [0u8; 8];
        let err = c.read(&mut buf).await.expect_err("truncation");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
        assert!(c.was_truncated());
    }
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

/// The client's verification failed for `reason`: each backend's reason
/// is given, since the message carries the TLS library's own words.
fn assert_verify_error(backend: TlsBackend, e: &TlsError, native_tls: &str, rustls: &str) {
    assert!(e.is_handshake() && e.is_fatal(), "{e:?}");
    let msg = e.to_string();
    eprintln!("client error: {msg}");
    assert!(msg.starts_with("TLS handshake failed"), "{msg}");
    let (prefix, reason) = match backend {
        #[cfg(feature = "tls")]
        TlsBackend::NativeTls => ("certificate verify failed", native_tls),
        #[cfg(feature = "rustls")]
        TlsBackend::Rustls => ("invalid peer certificate", rustls),
    };
    let _ = (native_tls, rustls);
    assert!(msg.contains(prefix), "{msg}");
    assert!(
        msg.to_lowercase().contains(&reason.to_lowercase()),
        "expected {reason:?} in {msg}"
    );
}

each_backend! {
    async fn wrong_host_fails_the_handshake(backend) {
        let (ce, se) = failing_handshake(client(backend), server_with(backend, &pki().wrong_host)).await;
        assert_verify_error(backend, &ce, "hostname mismatch", "not valid for name");
        assert!(se.is_handshake(), "{se}");
    }
}

each_backend! {
    async fn unknown_ca_fails_the_handshake(backend) {
        let (ce, _) = failing_handshake(client(backend), server_with(backend, &pki().unknown_ca)).await;
        assert_verify_error(
            backend,
            &ce,
            "unable to get local issuer certificate",
            "UnknownIssuer",
        );
    }
}

each_backend! {
    async fn expired_certificate_fails_the_handshake(backend) {
        let (ce, _) = failing_handshake(client(backend), server_with(backend, &pki().expired)).await;
        assert_verify_error(backend, &ce, "certificate has expired", "certificate expired");
    }
}

#[cfg(feature = "tls")]
#[tokio::test]
async fn sni_off_still_checks_the_host_name() {
    let mut b = native_cfg::client_builder();
    b.sni(false);
    let server = server_with(TlsBackend::NativeTls, &pki().wrong_host);
    let (ce, _) = failing_handshake(b.build().unwrap().into(), server).await;
    assert_verify_error(TlsBackend::NativeTls, &ce, "hostname mismatch", "");
}

#[cfg(feature = "rustls")]
#[tokio::test]
async fn rustls_sni_off_still_checks_the_host_name() {
    let mut config = rustls_cfg::client_config(rustls::DEFAULT_VERSIONS);
    config.enable_sni = false;
    let client = super::TlsClient::rustls(std::sync::Arc::new(config), "localhost").unwrap();
    let server = server_with(TlsBackend::Rustls, &pki().wrong_host);
    let (ce, _) = failing_handshake(client.into(), server).await;
    assert_verify_error(TlsBackend::Rustls, &ce, "", "not valid for name");
}

/// A TLS 1.3-only client and a TLS 1.2-only server: both fail, both with
/// handshake errors.
#[tokio::test]
async fn no_common_protocol_version_fails_the_handshake() {
    for &backend in BACKENDS {
        let (client, server): (TlsMode, TlsMode) = match backend {
            #[cfg(feature = "tls")]
            TlsBackend::NativeTls => {
                use native_tls::{Protocol, TlsAcceptor};
                let mut b = native_cfg::client_builder();
                b.min_protocol_version(Some(Protocol::Tlsv13));
                let acceptor = TlsAcceptor::builder(native_cfg::identity(&pki().server))
                    .max_protocol_version(Some(Protocol::Tlsv12))
                    .build()
                    .unwrap();
                (b.build().unwrap().into(), TlsServer::from(acceptor).into())
            }
            #[cfg(feature = "rustls")]
            TlsBackend::Rustls => {
                let client = rustls_cfg::client_config(&[&rustls::version::TLS13]);
                let server = rustls_cfg::server_config(&pki().server, &[&rustls::version::TLS12]);
                let client = super::TlsClient::rustls(std::sync::Arc::new(client), "localhost");
                (client.unwrap().into(), TlsServer::rustls(server).into())
            }
        };
        let (ce, se) = failing_handshake(client, server).await;
        assert!(
            ce.is_handshake() && se.is_handshake(),
            "{backend:?}: {ce} / {se}"
        );
    }
}

/// Every pairing of backends, client × server: a round trip, stoptls with
/// plaintext both ways, and the server's certificate seen by the client.
#[tokio::test]
async fn mixed_backend_pairs_interoperate() {
    for &cb in BACKENDS {
        for &sb in BACKENDS {
            let (a, b) = tcp_pair().await;
            let (mut c, mut s) = mixed_pair(client(cb), server(sb), a, b).await;
            assert_eq!((c.backend(), s.backend()), (Some(cb), Some(sb)));
            assert_eq!(
                c.peer_certificate().as_deref(),
                Some(&pki().server.cert_der[..]),
                "{cb:?} -> {sb:?}"
            );
            assert_eq!(s.peer_certificate(), None, "no client certificate");
            c.write_all(b"over tls").await.unwrap();
            assert_eq!(read_n(&mut s, 8).await, b"over tls");
            let (rc, rs) = tokio::join!(stop_tls(&mut c), stop_tls(&mut s));
            rc.unwrap();
            rs.unwrap();
            c.write_all(b"plain c").await.unwrap();
            s.write_all(b"plain s").await.unwrap();
            assert_eq!(read_n(&mut s, 7).await, b"plain c", "{cb:?} -> {sb:?}");
            assert_eq!(read_n(&mut c, 7).await, b"plain s", "{cb:?} -> {sb:?}");
            assert!(!c.is_tls() && !s.is_tls());
        }
    }
}

#[cfg(feature = "tls")]
#[tokio::test]
async fn dangerous_opt_outs_are_honoured() {
    use super::TlsClient;
    let server_with = |leaf| server_with(TlsBackend::NativeTls, leaf);
    let mut b = native_cfg::client_builder();
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

#[cfg(feature = "tls")]
#[tokio::test]
async fn client_identity_handshakes() {
    let mut b = native_cfg::client_builder();
    b.identity(native_cfg::identity(&pki().client));
    let (x, y) = tokio::io::duplex(64 * 1024);
    let (mut c, mut s) = (TlsTransport::new(x), TlsTransport::new(y));
    c.start_tls(b.build().unwrap().into(), Bytes::new())
        .unwrap();
    s.start_tls(server(TlsBackend::NativeTls), Bytes::new())
        .unwrap();
    let (rc, rs) = tokio::join!(handshake(&mut c), handshake(&mut s));
    rc.unwrap();
    rs.unwrap();
}

/// A rustls server that requires a client certificate gets it, and sees it
/// as the peer certificate; a client without one is refused.
#[cfg(feature = "rustls")]
#[tokio::test]
async fn rustls_client_certificate_is_required_and_seen() {
    use std::sync::Arc;

    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(rustls_cfg::roots()),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    let (chain, key) = rustls_cfg::chain_and_key(&pki().server);
    let server_config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap(),
    );
    let (chain, key) = rustls_cfg::chain_and_key(&pki().client);
    let client_config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls_cfg::roots())
    .with_client_auth_cert(chain, key)
    .unwrap();
    let client = super::TlsClient::rustls(Arc::new(client_config), "localhost").unwrap();
    let server = TlsServer::rustls(server_config);
    let (a, b) = tcp_pair().await;
    let (mut c, mut s) = mixed_pair(client.into(), server.clone().into(), a, b).await;
    assert_eq!(
        s.peer_certificate().as_deref(),
        Some(&pki().client.cert_der[..])
    );
    c.write_all(b"hi").await.unwrap();
    assert_eq!(read_n(&mut s, 2).await, b"hi");

    // Without a certificate: TLS 1.3 clients finish first and learn of the
    // refusal on their first read.
    let (a, b) = tcp_pair().await;
    let (mut c, mut s) = (TlsTransport::new(a), TlsTransport::new(b));
    c.start_tls(client_rustls(), Bytes::new()).unwrap();
    s.start_tls(server.into(), Bytes::new()).unwrap();
    let (_, rs) = tokio::join!(handshake(&mut c), handshake(&mut s));
    let se = rs.expect_err("no client certificate");
    assert!(se.is_handshake(), "{se}");
    let mut buf = [0u8; 4];
    assert!(c.read(&mut buf).await.is_err(), "the client is refused too");
}

#[cfg(feature = "rustls")]
fn client_rustls() -> TlsMode {
    client(TlsBackend::Rustls)
}

each_backend! {
    async fn plaintext_peer_fails_the_server_handshake(backend) {
        let (mut a, b) = tokio::io::duplex(1024);
        let mut s = TlsTransport::new(b);
        s.start_tls(server(backend), Bytes::from_static(b"EHLO example\r\n"))
            .unwrap();
        a.write_all(b"more plaintext\r\n").await.unwrap();
        let err = handshake(&mut s).await.expect_err("not TLS");
        assert!(err.is_handshake(), "{err}");
        let (_io, rest) = s.into_inner();
        assert!(
            !rest.starts_with(b"EHLO"),
            "the TLS library read the replay first"
        );
    }
}

each_backend! {
    async fn peer_vanishing_mid_handshake_is_a_handshake_error(backend) {
        let (a, b) = tokio::io::duplex(1024);
        let mut s = TlsTransport::new(b);
        // Half a ClientHello record header, then EOF.
        s.start_tls(server(backend), Bytes::from_static(&[0x16, 0x03, 0x01]))
            .unwrap();
        drop(a);
        let err = handshake(&mut s).await.expect_err("EOF in handshake");
        assert!(err.is_handshake(), "{err:?}");
        assert!(err.to_string().contains("closed the connection"), "{err}");
    }
}

each_backend! {
    async fn into_inner_mid_session_returns_the_io(backend) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (c, s) = tls_pair(backend, a, b).await;
        let (mut ra, rest) = c.into_inner();
        assert!(rest.is_empty());
        let (mut rb, _) = s.into_inner();
        ra.write_all(b"raw").await.unwrap();
        assert_eq!(read_n(&mut rb, 3).await, b"raw");
    }
}

each_backend! {
    async fn into_inner_before_the_handshake_returns_the_replay(backend) {
        let (a, _b) = tokio::io::duplex(1024);
        let mut t = TlsTransport::new(a);
        t.start_tls(server(backend), Bytes::from_static(b"\x16\x03\x01"))
            .unwrap();
        let (_io, rest) = t.into_inner();
        assert_eq!(&rest[..], b"\x16\x03\x01");
    }
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
/// (`benches/compare`'s `tls-bulk-loopback` measures both backends.)
#[cfg(feature = "tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test"]
async fn bulk_cost_vs_tokio_native_tls() {
    use std::time::{Duration, Instant};

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
        let (c, s) = tls_pair(TlsBackend::NativeTls, a, b).await;
        pump(s, c).await
    }

    async fn theirs<IO>(a: IO, b: IO) -> Duration
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        use native_tls::TlsAcceptor;
        let connector = tokio_native_tls::TlsConnector::from(
            native_tls::TlsConnector::builder()
                .add_root_certificate(native_cfg::ca())
                .disable_built_in_roots(true)
                .build()
                .unwrap(),
        );
        let acceptor = tokio_native_tls::TlsAcceptor::from(
            TlsAcceptor::new(native_cfg::identity(&pki().server)).unwrap(),
        );
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
