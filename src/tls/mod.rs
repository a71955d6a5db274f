//! TLS with native-tls or rustls: STARTTLS and stoptls on a live connection.
//!
//! This module holds the settings a connection needs to start TLS —
//! [`TlsMode`] with [`TlsClient`] or [`TlsServer`] — and the error type
//! [`TlsError`]. The connection handle (`QueuedFramed`) switches TLS on and
//! off through a transport of its own that, unlike
//! `tokio_native_tls::TlsStream` or `tokio_rustls`'s streams, can give its
//! IO back after TLS ends.
//!
//! Two TLS libraries ([`TlsBackend`]) sit behind the same API, one per
//! feature: `tls` for [native-tls](native_tls) (the platform's library:
//! OpenSSL on Linux) and `rustls` for [`rustls`] with the *ring*
//! cryptography provider. Each connection uses the library its
//! [`TlsClient`] or [`TlsServer`] was built for, so with both features on
//! one program can use both. The contract below, and every error, is the
//! same for both.
//!
//! The contract ([§7](crate::semantics#7-tls), rules [TLS-1](crate::semantics#TLS-1)…[TLS-11](crate::semantics#TLS-11)):
//!
//! * **Verified by default.** A [`TlsClient`] checks the server's
//!   certificate chain and host name; turning either off is spelled
//!   `danger_*`.
//! * **No plaintext after a failed handshake.** A handshake failure is
//!   fatal ([`TlsErrorKind::Handshake`], EPROTO); the connection never
//!   carries on unencrypted.
//! * **STARTTLS loses nothing.** Bytes read before the handshake began
//!   (a ClientHello sent in the same packet as `STARTTLS\r\n`) go to the
//!   TLS library as ciphertext; they are never delivered as plaintext.
//! * **Clean EOF and truncation are told apart.** The peer's close_notify
//!   is a clean end of the TLS stream; a TCP EOF without it is
//!   [`TlsErrorKind::Truncated`].
//!
//! # Examples
//!
//! ```
//! # #[cfg(feature = "tls")] {
//! use anyframe::tls::{TlsClient, TlsMode, TlsServer, native_tls::Identity};
//!
//! // Client: verify `mail.example.org`'s certificate against system roots.
//! let client: TlsMode = TlsClient::new("mail.example.org")?.into();
//!
//! // Server: present a certificate chain and key (PEM, PKCS#8).
//! # let key = rcgen::KeyPair::generate().unwrap();
//! # let cert = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap()
//! #     .self_signed(&key).unwrap();
//! # let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
//! let identity = Identity::from_pkcs8(cert_pem.as_bytes(), key_pem.as_bytes())?;
//! let server: TlsMode = TlsServer::new(identity)?.into();
//! # let _ = (client, server);
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The same with rustls (Mozilla's roots, compiled in):
//!
//! ```
//! # #[cfg(feature = "rustls")] {
//! use anyframe::tls::{TlsClient, TlsMode};
//!
//! let client: TlsMode = TlsClient::rustls_webpki_roots("mail.example.org")?.into();
//! # let _ = client;
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;
mod error;
#[cfg(feature = "tls")]
mod native;
#[cfg_attr(
    not(test),
    allow(dead_code, reason = "the QueuedFramed engine uses it")
)]
mod transport;
#[cfg(feature = "rustls")]
#[path = "rustls.rs"]
mod with_rustls;

#[cfg(feature = "tls")]
pub use config::TlsClientBuilder;
pub use config::{TlsBackend, TlsClient, TlsMode, TlsServer};
pub use error::{TlsError, TlsErrorKind};
/// The native-tls library, for [`Identity`](native_tls::Identity),
/// [`Certificate`](native_tls::Certificate),
/// [`Protocol`](native_tls::Protocol) and hand-built connectors.
#[cfg(feature = "tls")]
pub use native_tls;
/// The rustls library, for [`ClientConfig`](rustls::ClientConfig),
/// [`ServerConfig`](rustls::ServerConfig),
/// [`RootCertStore`](rustls::RootCertStore) and the certificate types in
/// [`pki_types`](rustls::pki_types).
#[cfg(feature = "rustls")]
pub use rustls;
#[cfg_attr(
    not(test),
    allow(unused_imports, reason = "the QueuedFramed engine uses it")
)]
pub(crate) use transport::TlsTransport;

#[cfg(test)]
mod tests;
