//! TLS for the simulated runs: a certificate authority and a `localhost`
//! server certificate made with rcgen, and per-run client and server
//! configurations on the TLS backends compiled in.
//!
//! The keys are Ed25519 and the serial numbers fixed, so every certificate,
//! and every signature made in a handshake, has the same length in every
//! process. TLS still draws fresh randomness (key shares, nonces), so the
//! bytes of a handshake differ from run to run, but not their lengths; the
//! simulated network's decisions depend only on lengths and time, so a run
//! stays a function of its seed. Configurations are built afresh for each
//! run (rustls) or cache no session (native-tls): a session cached by one
//! run would let the next resume it, with a shorter handshake.
//!
//! Without a TLS feature no run uses TLS.
#![allow(dead_code, unreachable_pub)]

use super::Rng;

#[cfg(any(feature = "tls", feature = "rustls"))]
pub use enabled::*;

#[cfg(any(feature = "tls", feature = "rustls"))]
mod enabled {
    use std::sync::OnceLock;

    use anyframe::tls::{TlsBackend, TlsMode, TlsServer};
    use anyframe::{Builder, Handle, Requests, Ticket};
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose, SerialNumber,
    };

    use super::Rng;

    /// The certificate authority and the server's certificate and key.
    pub struct Pki {
        pub ca_pem: String,
        pub ca_der: Vec<u8>,
        pub cert_pem: String,
        pub cert_der: Vec<u8>,
        pub key_pem: String,
        pub key_der: Vec<u8>,
    }

    fn key() -> KeyPair {
        KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("Ed25519 key")
    }

    pub fn pki() -> &'static Pki {
        static PKI: OnceLock<Pki> = OnceLock::new();
        PKI.get_or_init(|| {
            let ca_key = key();
            let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
            ca.distinguished_name
                .push(DnType::CommonName, "anyframe simulation CA");
            ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            ca.serial_number = Some(SerialNumber::from(1u64));
            ca.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let ca_cert = ca.self_signed(&ca_key).expect("self-sign CA");

            let leaf_key = key();
            let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).expect("leaf");
            leaf.distinguished_name
                .push(DnType::CommonName, "localhost");
            leaf.serial_number = Some(SerialNumber::from(2u64));
            leaf.use_authority_key_identifier_extension = true;
            leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            let issuer = Issuer::from_params(&ca, &ca_key);
            let cert = leaf.signed_by(&leaf_key, &issuer).expect("sign leaf");
            Pki {
                ca_pem: ca_cert.pem(),
                ca_der: ca_cert.der().to_vec(),
                cert_pem: cert.pem(),
                cert_der: cert.der().to_vec(),
                key_pem: pem("PRIVATE KEY", &pkcs8_v1(&leaf_key.serialize_der())),
                key_der: leaf_key.serialize_der(),
            }
        })
    }

    /// The PKCS #8 v1 form of an Ed25519 key that *ring* made in the v2 form
    /// (RFC 5958, with the public key), which OpenSSL does not read: the
    /// same 32-byte private key, without the public key.
    fn pkcs8_v1(v2: &[u8]) -> Vec<u8> {
        const HEAD: [u8; 16] = [
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        assert_eq!(v2[2..5], [0x02, 0x01, 0x01], "a PKCS #8 v2 key");
        assert_eq!(v2[5..16], HEAD[5..], "an Ed25519 key");
        let mut v1 = HEAD.to_vec();
        v1.extend_from_slice(&v2[16..48]);
        v1
    }

    /// `der` as a PEM block labelled `label`.
    fn pem(label: &str, der: &[u8]) -> String {
        const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut text = String::new();
        for chunk in der.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let v = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
            for i in 0..4 {
                text.push(if i <= chunk.len() {
                    B64[(v >> (18 - 6 * i) & 63) as usize] as char
                } else {
                    '='
                });
            }
        }
        let mut out = format!("-----BEGIN {label}-----\n");
        for line in text.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).expect("base64"));
            out.push('\n');
        }
        out.push_str(&format!("-----END {label}-----\n"));
        out
    }

    /// Every TLS backend compiled in.
    pub const BACKENDS: &[TlsBackend] = &[
        #[cfg(feature = "tls")]
        TlsBackend::NativeTls,
        #[cfg(feature = "rustls")]
        TlsBackend::Rustls,
    ];

    /// A fresh client of backend `b` for `localhost`, trusting only the
    /// simulation's CA.
    pub fn client(b: TlsBackend) -> TlsMode {
        let pki = pki();
        match b {
            #[cfg(feature = "rustls")]
            TlsBackend::Rustls => {
                use anyframe::tls::{TlsClient, rustls};
                let mut roots = rustls::RootCertStore::empty();
                roots.add(pki.ca_der.clone().into()).expect("CA");
                let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
                config.resumption = rustls::client::Resumption::disabled();
                TlsClient::rustls(std::sync::Arc::new(config), "localhost")
                    .expect("client")
                    .into()
            }
            // OpenSSL's contexts are slow to build; one is shared by every
            // run: a native-tls client caches no session, so none is resumed.
            #[cfg(feature = "tls")]
            _ => {
                static NATIVE: OnceLock<TlsMode> = OnceLock::new();
                NATIVE
                    .get_or_init(|| {
                        use anyframe::tls::TlsClient;
                        use anyframe::tls::native_tls::Certificate;
                        let mut b = TlsClient::builder("localhost");
                        b.add_root_certificate(
                            Certificate::from_pem(pki.ca_pem.as_bytes()).expect("CA"),
                        )
                        .disable_built_in_roots(true);
                        b.build().expect("client").into()
                    })
                    .clone()
            }
            #[cfg(not(feature = "tls"))]
            _ => unreachable!("no other backend compiled in"),
        }
    }

    /// A fresh server of backend `b` presenting the `localhost` certificate.
    pub fn server(b: TlsBackend) -> TlsServer {
        let pki = pki();
        match b {
            #[cfg(feature = "rustls")]
            TlsBackend::Rustls => {
                use anyframe::tls::rustls;
                use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
                let key = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(pki.key_der.clone()));
                let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(vec![pki.cert_der.clone().into()], key)
                .expect("server config");
                TlsServer::rustls(std::sync::Arc::new(config))
            }
            #[cfg(feature = "tls")]
            _ => {
                static NATIVE: OnceLock<TlsServer> = OnceLock::new();
                NATIVE
                    .get_or_init(|| {
                        use anyframe::tls::native_tls::Identity;
                        let id =
                            Identity::from_pkcs8(pki.cert_pem.as_bytes(), pki.key_pem.as_bytes())
                                .expect("identity");
                        TlsServer::new(id).expect("server")
                    })
                    .clone()
            }
            #[cfg(not(feature = "tls"))]
            _ => unreachable!("no other backend compiled in"),
        }
    }

    /// The TLS configurations of one run: each end's backend drawn
    /// independently, so the backends also meet each other.
    #[derive(Clone)]
    pub struct Modes {
        pub client: TlsMode,
        pub server: TlsServer,
        pub backends: (TlsBackend, TlsBackend),
    }

    impl std::fmt::Debug for Modes {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(
                f,
                "client {:?}, server {:?}",
                self.backends.0, self.backends.1
            )
        }
    }

    pub fn modes(rng: &mut Rng) -> Modes {
        let c = BACKENDS[rng.below(BACKENDS.len() as u64) as usize];
        let s = BACKENDS[rng.below(BACKENDS.len() as u64) as usize];
        Modes {
            client: client(c),
            server: server(s),
            backends: (c, s),
        }
    }

    /// TLS from the first byte, as the client.
    pub fn connect(b: &mut Builder, m: &Modes) {
        b.tls(m.client.clone());
    }

    /// TLS from the first byte, as the server.
    pub fn accept(b: &mut Builder, m: &Modes) {
        b.tls(m.server.clone());
    }

    /// The client's STARTTLS (`start`) or stoptls, after what is queued.
    pub fn client_switch(h: &Handle, m: &Modes, start: bool) -> Ticket<()> {
        if start {
            h.starttls(m.client.clone())
        } else {
            h.stoptls()
        }
    }

    /// The server's STARTTLS or stoptls, from inside the completion of the
    /// read that asked for it (so that no read runs between).
    pub fn server_switch(q: &mut Requests<'_>, m: &Modes, start: bool) -> Ticket<()> {
        if start {
            q.starttls(m.server.clone())
        } else {
            q.stoptls()
        }
    }

    pub fn is_tls(h: &Handle) -> bool {
        h.is_tls()
    }
}

/// Without a TLS backend no run uses TLS, and no `Modes` is made.
#[cfg(not(any(feature = "tls", feature = "rustls")))]
#[derive(Debug, Clone)]
pub struct Modes(());

#[cfg(not(any(feature = "tls", feature = "rustls")))]
pub fn modes(_rng: &mut Rng) -> Modes {
    unreachable!("no TLS backend compiled in")
}

#[cfg(not(any(feature = "tls", feature = "rustls")))]
pub fn connect(_b: &mut anyframe::Builder, _m: &Modes) {
    unreachable!("no TLS backend compiled in")
}

#[cfg(not(any(feature = "tls", feature = "rustls")))]
pub fn accept(_b: &mut anyframe::Builder, _m: &Modes) {
    unreachable!("no TLS backend compiled in")
}

#[cfg(not(any(feature = "tls", feature = "rustls")))]
pub fn client_switch(_h: &anyframe::Handle, _m: &Modes, _start: bool) -> anyframe::Ticket<()> {
    unreachable!("no TLS backend compiled in")
}

#[cfg(not(any(feature = "tls", feature = "rustls")))]
pub fn server_switch(
    _q: &mut anyframe::Requests<'_>,
    _m: &Modes,
    _start: bool,
) -> anyframe::Ticket<()> {
    unreachable!("no TLS backend compiled in")
}

/// Whether TLS is compiled in.
pub const ENABLED: bool = cfg!(any(feature = "tls", feature = "rustls"));
