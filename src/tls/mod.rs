//! TLS with native-tls: STARTTLS and stoptls on a live connection.
//!
//! This module holds the settings a connection needs to start TLS —
//! [`TlsMode`] with [`TlsClient`] or [`TlsServer`] — and the error type
//! [`TlsError`]. The connection handle (`QueuedFramed`) switches TLS on and
//! off through a transport of its own that, unlike
//! `tokio_native_tls::TlsStream`, can give its IO back after TLS ends.
//!
//! The contract (docs/semantics.md §7, reference TLS-1…TLS-11):
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
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;
mod error;
#[cfg_attr(
    not(test),
    allow(dead_code, reason = "the QueuedFramed engine uses it")
)]
mod transport;

pub use config::{TlsClient, TlsClientBuilder, TlsMode, TlsServer};
pub use error::{TlsError, TlsErrorKind};
/// The TLS library underneath, for [`Identity`](native_tls::Identity),
/// [`Certificate`](native_tls::Certificate),
/// [`Protocol`](native_tls::Protocol) and hand-built connectors.
pub use native_tls;
#[cfg_attr(
    not(test),
    allow(unused_imports, reason = "the QueuedFramed engine uses it")
)]
pub(crate) use transport::TlsTransport;

#[cfg(test)]
mod tests;
