//! Certificates made at test time with rcgen: a CA, a `localhost` server, a
//! wrong-host server, an expired server, a server from an unknown CA and a
//! client certificate. PEM files are written too, for `openssl` peers.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

#[cfg(feature = "tls")]
use anyframe::tls::native_tls::{Certificate, Identity};
use anyframe::tls::{TlsBackend, TlsClient, TlsMode, TlsServer};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// One certificate with its key, as PEM.
pub struct Pem {
    pub cert: String,
    pub key: String,
    pub cert_der: Vec<u8>,
    pub key_der: Vec<u8>,
}

#[cfg(feature = "tls")]
impl Pem {
    pub fn identity(&self) -> Identity {
        Identity::from_pkcs8(self.cert.as_bytes(), self.key.as_bytes()).expect("identity")
    }
}

pub struct Pki {
    pub ca_pem: String,
    pub ca_der: Vec<u8>,
    pub server: Pem,
    pub wrong_host: Pem,
    pub expired: Pem,
    pub unknown_ca: Pem,
    pub client: Pem,
    /// A directory holding `ca.pem`, `server.pem`, `server.key`, … for
    /// command-line peers.
    pub dir: PathBuf,
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

fn leaf(ca: &(CertificateParams, KeyPair), name: &str, expired: bool, client: bool) -> Pem {
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
    Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
        cert_der: cert.der().to_vec(),
        key_der: key.serialize_der(),
    }
}

/// Where this test process writes the PEM files its external peers
/// (openssl, Perl) read: under Cargo's scratch directory for integration
/// tests (`target/tmp`, never the system's temporary directory), one
/// directory per process (the keys are made per process). Directories
/// left by processes that ended over an hour ago are removed first, so
/// they do not pile up.
fn pem_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let hour = std::time::Duration::from_secs(3600);
    if let Ok(entries) = std::fs::read_dir(&root) {
        for e in entries.flatten() {
            let stale = e.file_name().to_string_lossy().starts_with("pki-")
                && e.metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > hour);
            if stale {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    root.join(format!("pki-{}", std::process::id()))
}

pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let ca = make_ca("anyframe test CA");
        let other = make_ca("someone else's CA");
        let ca_cert = ca.0.self_signed(&ca.1).expect("self-sign CA");
        let (ca_pem, ca_der) = (ca_cert.pem(), ca_cert.der().to_vec());
        let pki = Pki {
            server: leaf(&ca, "localhost", false, false),
            wrong_host: leaf(&ca, "other.example", false, false),
            expired: leaf(&ca, "localhost", true, false),
            unknown_ca: leaf(&other, "localhost", false, false),
            client: leaf(&ca, "anyframe client", false, true),
            dir: pem_dir(),
            ca_pem,
            ca_der,
        };
        std::fs::create_dir_all(&pki.dir).expect("pki dir");
        let w = |name: &str, s: &str| std::fs::write(pki.dir.join(name), s).expect("write pem");
        w("ca.pem", &pki.ca_pem);
        w("server.pem", &pki.server.cert);
        w("server.key", &pki.server.key);
        w("client.pem", &pki.client.cert);
        w("client.key", &pki.client.key);
        pki
    })
}

/// A native-tls client for `localhost` that trusts only the test CA.
#[cfg(feature = "tls")]
pub fn client() -> TlsMode {
    client_for("localhost")
}

/// A native-tls client for `domain` that trusts only the test CA.
#[cfg(feature = "tls")]
pub fn client_for(domain: &str) -> TlsMode {
    let mut b = TlsClient::builder(domain);
    b.add_root_certificate(Certificate::from_pem(pki().ca_pem.as_bytes()).expect("CA"))
        .disable_built_in_roots(true);
    b.build().expect("client").into()
}

/// A native-tls server presenting the `localhost` certificate.
#[cfg(feature = "tls")]
pub fn server() -> TlsServer {
    server_with(&pki().server)
}

/// A native-tls server presenting `pem`.
#[cfg(feature = "tls")]
pub fn server_with(pem: &Pem) -> TlsServer {
    TlsServer::new(pem.identity()).expect("server")
}

/// Every TLS backend compiled in.
pub const BACKENDS: &[TlsBackend] = &[
    #[cfg(feature = "tls")]
    TlsBackend::NativeTls,
    #[cfg(feature = "rustls")]
    TlsBackend::Rustls,
];

/// Plaintext (`None`), then every TLS backend compiled in.
pub fn plain_and_backends() -> impl Iterator<Item = Option<TlsBackend>> {
    std::iter::once(None).chain(BACKENDS.iter().copied().map(Some))
}

/// A client and a server over a pipe of `pipe` bytes, in plaintext or
/// over TLS with backend `b` (the client trusting the test CA), once
/// both flushes (the handshakes) are done.
pub async fn connected_pair(
    b: Option<TlsBackend>,
    pipe: usize,
) -> (
    anyframe::QueuedFramed<tokio::io::DuplexStream>,
    anyframe::QueuedFramed<tokio::io::DuplexStream>,
) {
    let (c, s) = tokio::io::duplex(pipe);
    let mut cb = anyframe::QueuedFramed::builder();
    let mut sb = anyframe::QueuedFramed::builder();
    if let Some(b) = b {
        cb.tls(client_on(b));
        sb.tls(localhost_on(b));
    }
    let mut client = cb.build(c);
    let mut server = sb.build(s);
    let handshakes = async { tokio::join!(client.flush(), server.flush()) };
    let (x, y) = tokio::time::timeout(std::time::Duration::from_secs(5), handshakes)
        .await
        .expect("handshakes");
    x.expect("client handshake");
    y.expect("server handshake");
    (client, server)
}

/// A client of backend `b` for `localhost` that trusts only the test CA.
pub fn client_on(b: TlsBackend) -> TlsMode {
    match b {
        #[cfg(feature = "tls")]
        TlsBackend::NativeTls => client(),
        #[cfg(feature = "rustls")]
        TlsBackend::Rustls => {
            let mut roots = anyframe::tls::rustls::RootCertStore::empty();
            roots.add(pki().ca_der.clone().into()).expect("CA");
            TlsClient::rustls_with_roots(roots, "localhost")
                .expect("client")
                .into()
        }
        _ => unreachable!("no test settings for {b:?}"),
    }
}

/// A server of backend `b` presenting the `localhost` certificate (the
/// server side of [`client_on`]).
pub fn localhost_on(b: TlsBackend) -> TlsServer {
    server_on(b, &pki().server)
}

/// A server of backend `b` presenting `pem`.
pub fn server_on(b: TlsBackend, pem: &Pem) -> TlsServer {
    match b {
        #[cfg(feature = "rustls")]
        TlsBackend::Rustls => {
            use anyframe::tls::rustls;
            use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
            let key = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(pem.key_der.clone()));
            let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![pem.cert_der.clone().into()], key)
            .expect("server config");
            TlsServer::rustls(std::sync::Arc::new(config))
        }
        #[cfg(feature = "tls")]
        TlsBackend::NativeTls => server_with(pem),
        _ => unreachable!("no test settings for {b:?}"),
    }
}
