//! Client and server settings: [`TlsMode`], [`TlsClient`], [`TlsServer`].

use std::fmt;
#[cfg(feature = "rustls")]
use std::sync::Arc;

#[cfg(feature = "tls")]
use native_tls::{Certificate, Identity, Protocol, TlsAcceptor, TlsConnector};

use super::TlsError;

/// The TLS library behind a [`TlsClient`] or [`TlsServer`].
///
/// Each connection uses the library its settings were built for; with both
/// the `tls` and `rustls` features on, one program can use both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TlsBackend {
    /// native-tls: OpenSSL on Linux, Security.framework on macOS, SChannel
    /// on Windows (the `tls` feature).
    #[cfg(feature = "tls")]
    NativeTls,
    /// rustls with the *ring* cryptography provider (the `rustls` feature).
    #[cfg(feature = "rustls")]
    Rustls,
}

/// Which side of the handshake this end takes, with its settings.
///
/// Cheap to clone (the contexts inside are reference-counted), so build one
/// per configuration and reuse it for every connection.
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "tls")] {
/// use anyframe::tls::{TlsClient, TlsMode};
///
/// let mode = TlsMode::from(TlsClient::new("mail.example.org")?);
/// assert!(mode.is_connect());
/// # }
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

    /// The TLS library this side's settings were built for.
    pub fn backend(&self) -> TlsBackend {
        match self {
            TlsMode::Connect(c) => c.backend(),
            TlsMode::Accept(s) => s.backend(),
        }
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

/// Client-side settings: the server's name and a verifying TLS context,
/// from native-tls ([`TlsClient::new`], [`TlsClient::builder`],
/// [`TlsClient::from_connector`]) or rustls ([`TlsClient::rustls`],
/// [`TlsClient::rustls_with_roots`], [`TlsClient::rustls_webpki_roots`]).
///
/// The name (AE's `peername`) is sent as SNI and checked against the
/// server's certificate. **Both the certificate chain and the host name are
/// verified by default**: native-tls against the system's root certificates
/// plus any added with [`TlsClientBuilder::add_root_certificate`], rustls
/// against the root store it is given. (AnyEvent's default context verifies
/// nothing; this is a deliberate difference.) An IP address as the name is
/// checked against the certificate's IP addresses and sends no SNI.
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "tls")] {
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
/// # }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct TlsClient {
    backend: ClientBackend,
    domain: String,
}

/// The library-specific half of a [`TlsClient`].
#[derive(Clone)]
pub(super) enum ClientBackend {
    #[cfg(feature = "tls")]
    Native(TlsConnector),
    #[cfg(feature = "rustls")]
    Rustls {
        config: Arc<rustls::ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
    },
}

#[cfg(feature = "tls")]
impl TlsClient {
    /// The default native-tls client for `domain`: system roots, SNI on,
    /// certificate and host name verified, TLS 1.2 or later (native-tls's
    /// floor).
    ///
    /// # Errors
    ///
    /// [`TlsErrorKind::Config`](super::TlsErrorKind::Config) if `domain` is
    /// empty or holds a NUL byte (it names no host), or if the TLS library
    /// cannot build a context (for example, it cannot load the system's
    /// roots).
    pub fn new(domain: impl Into<String>) -> Result<TlsClient, TlsError> {
        TlsClient::builder(domain).build()
    }

    /// A native-tls builder for `domain`, starting from the same safe
    /// defaults as [`TlsClient::new`].
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

    /// Wraps a native-tls connector configured by the caller; whatever it
    /// verifies is what this client verifies. `domain` is the name to send
    /// and check; an empty one is refused when the handshake would start
    /// (a `Config` error), as OpenSSL would check no host name.
    pub fn from_connector(connector: TlsConnector, domain: impl Into<String>) -> TlsClient {
        TlsClient {
            backend: ClientBackend::Native(connector),
            domain: domain.into(),
        }
    }

    /// The native-tls connector; `None` for a rustls client.
    pub fn connector(&self) -> Option<&TlsConnector> {
        match &self.backend {
            ClientBackend::Native(c) => Some(c),
            #[cfg(feature = "rustls")]
            ClientBackend::Rustls { .. } => None,
        }
    }
}

#[cfg(feature = "rustls")]
impl TlsClient {
    /// A rustls client for `domain` with the caller's configuration: its
    /// root store or certificate verifier, client certificate, ALPN
    /// protocols, session cache and protocol versions are used as they are.
    ///
    /// `domain` is sent as SNI (if `config.enable_sni`) and checked against
    /// the server's certificate by the configuration's verifier; an IP
    /// address is checked against the certificate's IP addresses.
    ///
    /// # Errors
    ///
    /// [`TlsErrorKind::Config`](super::TlsErrorKind::Config) if `domain` is
    /// neither a valid DNS name nor an IP address.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use anyframe::tls::{TlsClient, rustls};
    ///
    /// let mut roots = rustls::RootCertStore::empty();
    /// roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    /// let provider = Arc::new(rustls::crypto::ring::default_provider());
    /// let mut config = rustls::ClientConfig::builder_with_provider(provider)
    ///     .with_safe_default_protocol_versions()?
    ///     .with_root_certificates(roots)
    ///     .with_no_client_auth();
    /// config.alpn_protocols = vec![b"smtp".to_vec()];
    /// let client = TlsClient::rustls(Arc::new(config), "mail.example.org")?;
    /// assert_eq!(client.domain(), "mail.example.org");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn rustls(
        config: Arc<rustls::ClientConfig>,
        domain: impl Into<String>,
    ) -> Result<TlsClient, TlsError> {
        let domain = domain.into();
        let name = rustls::pki_types::ServerName::try_from(domain.as_str())
            .map_err(TlsError::config)?
            .to_owned();
        Ok(TlsClient {
            backend: ClientBackend::Rustls { config, name },
            domain,
        })
    }

    /// A rustls client for `domain` that trusts exactly `roots`: *ring*
    /// cryptography, TLS 1.2 and 1.3, no client certificate.
    ///
    /// # Errors
    ///
    /// [`TlsErrorKind::Config`](super::TlsErrorKind::Config) if `domain` is
    /// neither a valid DNS name nor an IP address.
    ///
    /// # Examples
    ///
    /// ```
    /// use anyframe::tls::{TlsClient, rustls};
    ///
    /// # let ca = rcgen::generate_simple_self_signed(vec!["ca.test".into()]).unwrap().cert;
    /// let mut roots = rustls::RootCertStore::empty();
    /// roots.add(ca.der().clone())?;
    /// let client = TlsClient::rustls_with_roots(roots, "db.internal")?;
    /// # let _ = client;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn rustls_with_roots(
        roots: rustls::RootCertStore,
        domain: impl Into<String>,
    ) -> Result<TlsClient, TlsError> {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(TlsError::config)?
        .with_root_certificates(roots)
        .with_no_client_auth();
        TlsClient::rustls(Arc::new(config), domain)
    }

    /// A rustls client for `domain` that trusts the Mozilla root
    /// certificates compiled in from the `webpki-roots` crate (the same on
    /// every machine; the system's store is not read). Otherwise as
    /// [`TlsClient::rustls_with_roots`].
    ///
    /// # Errors
    ///
    /// [`TlsErrorKind::Config`](super::TlsErrorKind::Config) if `domain` is
    /// neither a valid DNS name nor an IP address.
    ///
    /// # Examples
    ///
    /// ```
    /// use anyframe::tls::{TlsBackend, TlsClient};
    ///
    /// let client = TlsClient::rustls_webpki_roots("example.org")?;
    /// assert_eq!(client.backend(), TlsBackend::Rustls);
    /// # Ok::<(), anyframe::tls::TlsError>(())
    /// ```
    pub fn rustls_webpki_roots(domain: impl Into<String>) -> Result<TlsClient, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        TlsClient::rustls_with_roots(roots, domain)
    }

    /// The rustls configuration; `None` for a native-tls client.
    pub fn rustls_config(&self) -> Option<&Arc<rustls::ClientConfig>> {
        match &self.backend {
            ClientBackend::Rustls { config, .. } => Some(config),
            #[cfg(feature = "tls")]
            ClientBackend::Native(_) => None,
        }
    }
}

impl TlsClient {
    /// The server name used for SNI and the host-name check.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The TLS library this client uses.
    pub fn backend(&self) -> TlsBackend {
        match &self.backend {
            #[cfg(feature = "tls")]
            ClientBackend::Native(_) => TlsBackend::NativeTls,
            #[cfg(feature = "rustls")]
            ClientBackend::Rustls { .. } => TlsBackend::Rustls,
        }
    }

    pub(super) fn backend_parts(&self) -> &ClientBackend {
        &self.backend
    }
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient")
            .field("backend", &self.backend())
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "tls")]
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

/// A domain that names no host: empty ([`TlsError::empty_domain`]), or
/// with a NUL byte, which OpenSSL's host name call cannot take (it
/// panics).
#[cfg(feature = "tls")]
pub(super) fn refuse_unnamed_host(domain: &str) -> Result<(), TlsError> {
    if domain.is_empty() {
        return Err(TlsError::empty_domain());
    }
    if domain.contains('\0') {
        return Err(TlsError::nul_in_domain());
    }
    Ok(())
}

#[cfg(feature = "tls")]
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
    /// library refuses the settings, or the domain is empty (OpenSSL would
    /// take an empty name as "check no host name").
    pub fn build(&self) -> Result<TlsClient, TlsError> {
        refuse_unnamed_host(&self.domain)?;
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

#[cfg(feature = "tls")]
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

/// Server-side settings: a native-tls acceptor ([`TlsServer::new`],
/// [`TlsServer::from_acceptor`]) or a rustls configuration
/// ([`TlsServer::rustls`]).
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "tls")] {
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
/// # }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct TlsServer {
    backend: ServerBackend,
}

/// The library-specific half of a [`TlsServer`].
#[derive(Clone)]
pub(super) enum ServerBackend {
    #[cfg(feature = "tls")]
    Native(TlsAcceptor),
    #[cfg(feature = "rustls")]
    Rustls(Arc<rustls::ServerConfig>),
}

#[cfg(feature = "tls")]
impl TlsServer {
    /// A native-tls server presenting `identity`, with the library's
    /// defaults (TLS 1.2 or later).
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

    /// Wraps a native-tls acceptor configured by the caller (protocol
    /// versions, ALPN).
    pub fn from_acceptor(acceptor: TlsAcceptor) -> TlsServer {
        TlsServer {
            backend: ServerBackend::Native(acceptor),
        }
    }

    /// The native-tls acceptor; `None` for a rustls server.
    pub fn acceptor(&self) -> Option<&TlsAcceptor> {
        match &self.backend {
            ServerBackend::Native(a) => Some(a),
            #[cfg(feature = "rustls")]
            ServerBackend::Rustls(_) => None,
        }
    }
}

#[cfg(feature = "tls")]
impl From<TlsAcceptor> for TlsServer {
    fn from(acceptor: TlsAcceptor) -> TlsServer {
        TlsServer::from_acceptor(acceptor)
    }
}

#[cfg(feature = "rustls")]
impl TlsServer {
    /// A rustls server with the caller's configuration: its certificate
    /// resolver, client verifier, ALPN protocols, session storage and
    /// protocol versions are used as they are.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use anyframe::tls::{TlsServer, rustls};
    /// use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    ///
    /// # let key = rcgen::KeyPair::generate().unwrap();
    /// # let cert = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap()
    /// #     .self_signed(&key).unwrap();
    /// # let (cert_der, key_der) = (cert.der().to_vec(), key.serialize_der());
    /// let chain = vec![CertificateDer::from(cert_der)];
    /// let key = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(key_der));
    /// let config = rustls::ServerConfig::builder_with_provider(Arc::new(
    ///     rustls::crypto::ring::default_provider(),
    /// ))
    /// .with_safe_default_protocol_versions()?
    /// .with_no_client_auth()
    /// .with_single_cert(chain, key)?;
    /// let server = TlsServer::rustls(Arc::new(config));
    /// # let _ = server;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn rustls(config: Arc<rustls::ServerConfig>) -> TlsServer {
        TlsServer {
            backend: ServerBackend::Rustls(config),
        }
    }

    /// The rustls configuration; `None` for a native-tls server.
    pub fn rustls_config(&self) -> Option<&Arc<rustls::ServerConfig>> {
        match &self.backend {
            ServerBackend::Rustls(config) => Some(config),
            #[cfg(feature = "tls")]
            ServerBackend::Native(_) => None,
        }
    }
}

#[cfg(feature = "rustls")]
impl From<Arc<rustls::ServerConfig>> for TlsServer {
    fn from(config: Arc<rustls::ServerConfig>) -> TlsServer {
        TlsServer::rustls(config)
    }
}

impl TlsServer {
    /// The TLS library this server uses.
    pub fn backend(&self) -> TlsBackend {
        match &self.backend {
            #[cfg(feature = "tls")]
            ServerBackend::Native(_) => TlsBackend::NativeTls,
            #[cfg(feature = "rustls")]
            ServerBackend::Rustls(_) => TlsBackend::Rustls,
        }
    }

    pub(super) fn backend_parts(&self) -> &ServerBackend {
        &self.backend
    }
}

impl fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServer")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}
