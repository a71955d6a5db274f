//! Certificates for the TLS examples (and the TLS bench), made on the spot
//! with rcgen: a CA and a `localhost` server certificate it signed. Clients
//! built from it trust only that CA and still check the host name.
#![allow(dead_code)]

use std::path::PathBuf;

use anyframe::tls::native_tls::{Certificate, Identity};
use anyframe::tls::{TlsClient, TlsServer};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A throwaway CA and a `localhost` identity, in the forms native-tls
/// (PEM) and rustls (DER) take.
pub struct DemoPki {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// The CA certificate, DER.
    pub ca_der: Vec<u8>,
    /// The server's certificate, PEM and DER.
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    /// The server's private key (PKCS #8), PEM and DER.
    pub key_pem: String,
    pub key_der: Vec<u8>,
    /// The server's certificate chain and key, for native-tls.
    pub identity: Identity,
}

impl DemoPki {
    /// Makes a new CA and a `localhost` certificate signed by it.
    pub fn new() -> DemoPki {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.distinguished_name
            .push(DnType::CommonName, "anyframe example CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).expect("self-signed CA");

        let key = KeyPair::generate().expect("server key");
        let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf.use_authority_key_identifier_extension = true;
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = leaf
            .signed_by(&key, &Issuer::from_params(&ca, &ca_key))
            .expect("server certificate");
        let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
        let identity =
            Identity::from_pkcs8(cert_pem.as_bytes(), key_pem.as_bytes()).expect("server identity");
        DemoPki {
            ca_pem: ca_cert.pem(),
            ca_der: ca_cert.der().to_vec(),
            cert_pem,
            cert_der: cert.der().to_vec(),
            key_pem,
            key_der: key.serialize_der(),
            identity,
        }
    }

    /// The CA, for a client's trust store.
    pub fn ca(&self) -> Certificate {
        Certificate::from_pem(self.ca_pem.as_bytes()).expect("CA PEM")
    }

    /// A client for `localhost` that trusts only this CA.
    pub fn client(&self) -> TlsClient {
        let mut b = TlsClient::builder("localhost");
        b.add_root_certificate(self.ca())
            .disable_built_in_roots(true);
        b.build().expect("TLS client")
    }

    /// The server side.
    pub fn server(&self) -> TlsServer {
        TlsServer::new(self.identity.clone()).expect("TLS server")
    }

    /// Writes the CA to a temporary file for command-line clients and
    /// returns its path.
    pub fn write_ca(&self, name: &str) -> std::io::Result<PathBuf> {
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, &self.ca_pem)?;
        Ok(path)
    }
}
