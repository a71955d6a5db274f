//! Client and server settings: [`TlsMode`], [`TlsClient`], [`TlsServer`].

use std::fmt;

use native_tls::{Certificate, Identity, Protocol, TlsAcceptor, TlsConnector};

use super::TlsError;

/// Which side of the handshake this end takes, with its settings.
///
/// Cheap to clone (the contexts inside are reference-counted), so build one
/// per configuration and reuse it for every connection.
///
/// # Examples
///
/// ```
/// use anyframe::tls::{TlsClient, TlsMode};
///
/// let mode = TlsMode::from(TlsClient::new("mail.example.org")?);
/// assert!(mode.is_connect());
/// # Ok::<(), anyframe::tls::TlsError>(())
/// ```
#[derive(Clone, Debug)]
pub enum TlsMode {
    /// Act as the client (AE's `"connect"`): verify the server.
    Connect(TlsClient),
    /// Act as the server (AE's `"accept"`).
    Accept(TlsServer),
}

impl TlsMode {
    /// True for [`TlsMode::Connect`].
    pub fn is_connect(&self) -> bool {
        matches!(self, TlsMode::Connect(_))
    }
}

impl From<TlsClient> for TlsMode {
    fn from(c: TlsClient) -> TlsMode {
        TlsMode::Connect(c)
    }
}

impl From<TlsServer> for TlsMode {
    fn from(s: TlsServer) -> TlsMode {
        TlsMode::Accept(s)
    }
}

/// Client-side settings: a verifying `native_tls::TlsConnector` and the
/// server's name.
///
/// The name (AE's `peername`) is sent as SNI and checked against the
/// server's certificate. **Both the certificate chain and the host name are
/// verified by default**, against the system's root certificates plus any
/// added with [`TlsClientBuilder::add_root_certificate`]. (AnyEvent's
/// default context verifies nothing; this is a deliberate difference.)
/// An IP address as the name is checked against the certificate's IP
/// addresses and sends no SNI.
///
/// # Examples
///
/// ```
/// use anyframe::tls::TlsClient;
///
/// // System roots, SNI and host-name check on.
/// let client = TlsClient::new("example.org")?;
/// assert_eq!(client.domain(), "example.org");
///
/// // A private CA and TLS 1.2 or later.
/// # let ca_pem = rcgen::generate_simple_self_signed(vec!["ca.test".into()])
/// #     .unwrap().cert.pem();
/// let ca = anyframe::tls::native_tls::Certificate::from_pem(ca_pem.as_bytes())?;
/// let client = TlsClient::builder("db.internal")
///     .add_root_certificate(ca)
///     .min_protocol_version(Some(anyframe::tls::native_tls::Protocol::Tlsv12))
///     .build()?;
/// # let _ = client;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct TlsClient {
    connector: TlsConnector,
    domain: String,
}

impl TlsClient {
    /// The default client for `domain`: system roots, SNI on, certificate
    /// and host name verified, TLS 1.2 or later (native-tls's floor).
    ///
    /// # Errors
    ///
    /// [`TlsErrorKind::Config`](super::TlsErrorKind::Config) if the TLS
    /// library cannot build a context (for example, it cannot load the
    /// system's roots).
    pub fn new(domain: impl Into<String>) -> Result<TlsClient, TlsError> {
        TlsClient::builder(domain).build()
    }

    /// A builder for `domain`, starting from the same safe defaults as
    /// [`TlsClient::new`].
    pub fn builder(domain: impl Into<String>) -> TlsClientBuilder {
        TlsClientBuilder {
            domain: domain.into(),
            roots: Vec::new(),
            disable_built_in_roots: false,
            identity: None,
            min_protocol: Some(Protocol::Tlsv12),
            max_protocol: None,
            sni: true,
            accept_invalid_certs: false,
            accept_invalid_hostnames: false,
        }
    }

    /// Wraps a connector configured by the caller; whatever it verifies is
    /// what this client verifies. `domain` is the name to send and check.
    pub fn from_connector(connector: TlsConnector, domain: impl Into<String>) -> TlsClient {
        TlsClient {
            connector,
            domain: domain.into(),
        }
    }

    /// The server name used for SNI and the host-name check.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The connector.
    pub fn connector(&self) -> &TlsConnector {
        &self.connector
    }
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient")
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

/// Settings for a [`TlsClient`]; from [`TlsClient::builder`].
///
/// Setters take and return `&mut Self`; [`build`](TlsClientBuilder::build)
/// can be called more than once.
pub struct TlsClientBuilder {
    domain: String,
    roots: Vec<Certificate>,
    disable_built_in_roots: bool,
    identity: Option<Identity>,
    min_protocol: Option<Protocol>,
    max_protocol: Option<Protocol>,
    sni: bool,
    accept_invalid_certs: bool,
    accept_invalid_hostnames: bool,
}

impl TlsClientBuilder {
    /// Trusts `cert` as a root, in addition to the system's roots.
    pub fn add_root_certificate(&mut self, cert: Certificate) -> &mut TlsClientBuilder {
        self.roots.push(cert);
        self
    }

    /// Trusts only the roots added with
    /// [`add_root_certificate`](TlsClientBuilder::add_root_certificate),
    /// not the system's (default: false).
    pub fn disable_built_in_roots(&mut self, disable: bool) -> &mut TlsClientBuilder {
        self.disable_built_in_roots = disable;
        self
    }

    /// Presents `identity` (certificate chain and key) when the server asks
    /// for a client certificate.
    pub fn identity(&mut self, identity: Identity) -> &mut TlsClientBuilder {
        self.identity = Some(identity);
        self
    }

    /// The oldest protocol version to accept (default: TLS 1.2; `None`
    /// leaves it to the TLS library).
    pub fn min_protocol_version(&mut self, version: Option<Protocol>) -> &mut TlsClientBuilder {
        self.min_protocol = version;
        self
    }

    /// The newest protocol version to offer (default: the library's
    /// newest).
    pub fn max_protocol_version(&mut self, version: Option<Protocol>) -> &mut TlsClientBuilder {
        self.max_protocol = version;
        self
    }

    /// Sends the server name as SNI (default: true). The host name is
    /// still checked when this is off.
    pub fn sni(&mut self, on: bool) -> &mut TlsClientBuilder {
        self.sni = on;
        self
    }

    /// **Dangerous**: accepts any server certificate, expired, self-signed
    /// or issued by anyone, which makes the connection open to a
    /// man-in-the-middle. For tests and debugging only (default: false).
    pub fn danger_accept_invalid_certs(&mut self, accept: bool) -> &mut TlsClientBuilder {
        self.accept_invalid_certs = accept;
        self
    }

    /// **Dangerous**: accepts a valid certificate issued for another host
    /// name, so any holder of a certificate from a trusted CA can pose as
    /// the server (default: false).
    pub fn danger_accept_invalid_hostnames(&mut self, accept: bool) -> &mut TlsClientBuilder {
        self.accept_invalid_hostnames = accept;
        self
    }

    /// Builds the client.
    ///
    /// # Errors
    ///
    /// [`TlsErrorKind::Config`](super::TlsErrorKind::Config) when the TLS
    /// library refuses the settings.
    pub fn build(&self) -> Result<TlsClient, TlsError> {
        let mut b = TlsConnector::builder();
        for root in &self.roots {
            b.add_root_certificate(root.clone());
        }
        if let Some(id) = &self.identity {
            b.identity(id.clone());
        }
        b.disable_built_in_roots(self.disable_built_in_roots)
            .min_protocol_version(self.min_protocol)
            .max_protocol_version(self.max_protocol)
            .use_sni(self.sni)
            .danger_accept_invalid_certs(self.accept_invalid_certs)
            .danger_accept_invalid_hostnames(self.accept_invalid_hostnames);
        let connector = b.build().map_err(TlsError::config)?;
        Ok(TlsClient::from_connector(connector, self.domain.clone()))
    }
}

impl fmt::Debug for TlsClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClientBuilder")
            .field("domain", &self.domain)
            .field("extra_roots", &self.roots.len())
            .field("disable_built_in_roots", &self.disable_built_in_roots)
            .field("identity", &self.identity.is_some())
            .field("min_protocol", &self.min_protocol)
            .field("max_protocol", &self.max_protocol)
            .field("sni", &self.sni)
            .field("danger_accept_invalid_certs", &self.accept_invalid_certs)
            .field(
                "danger_accept_invalid_hostnames",
                &self.accept_invalid_hostnames,
            )
            .finish()
    }
}

/// Server-side settings: a `native_tls::TlsAcceptor`.
///
/// # Examples
///
/// ```
/// use anyframe::tls::{TlsServer, native_tls::Identity};
///
/// # let key = rcgen::KeyPair::generate().unwrap();
/// # let cert = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap()
/// #     .self_signed(&key).unwrap();
/// # let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
/// // PEM certificate chain and PKCS#8 PEM key.
/// let identity = Identity::from_pkcs8(cert_pem.as_bytes(), key_pem.as_bytes())?;
/// let server = TlsServer::new(identity)?;
/// # let _ = server;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct TlsServer {
    acceptor: TlsAcceptor,
}

impl TlsServer {
    /// A server presenting `identity`, with the TLS library's defaults
    /// (TLS 1.2 or later).
    ///
    /// # Errors
    ///
    /// [`TlsErrorKind::Config`](super::TlsErrorKind::Config) when the TLS
    /// library refuses the identity.
    pub fn new(identity: Identity) -> Result<TlsServer, TlsError> {
        TlsAcceptor::new(identity)
            .map(TlsServer::from_acceptor)
            .map_err(TlsError::config)
    }

    /// Wraps an acceptor configured by the caller (protocol versions, ALPN).
    pub fn from_acceptor(acceptor: TlsAcceptor) -> TlsServer {
        TlsServer { acceptor }
    }

    /// The acceptor.
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

impl From<TlsAcceptor> for TlsServer {
    fn from(acceptor: TlsAcceptor) -> TlsServer {
        TlsServer::from_acceptor(acceptor)
    }
}

impl fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServer").finish_non_exhaustive()
    }
}
