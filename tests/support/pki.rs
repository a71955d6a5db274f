//! Certificates made at test time with rcgen: a CA, a `localhost` server, a
//! wrong-host server, an expired server, a server from an unknown CA and a
//! client certificate. PEM files are written too, for `openssl` peers.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use anyframe::tls::native_tls::{Certificate, Identity};
use anyframe::tls::{TlsClient, TlsMode, TlsServer};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// One certificate with its key, as PEM.
pub struct Pem {
    pub cert: String,
    pub key: String,
}

impl Pem {
    pub fn identity(&self) -> Identity {
        Identity::from_pkcs8(self.cert.as_bytes(), self.key.as_bytes()).expect("identity")
    }
}

pub struct Pki {
    pub ca_pem: String,
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
    }
}

pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let ca = make_ca("anyframe test CA");
        let other = make_ca("someone else's CA");
        let ca_pem = ca.0.self_signed(&ca.1).expect("self-sign CA").pem();
        let pki = Pki {
            server: leaf(&ca, "localhost", false, false),
            wrong_host: leaf(&ca, "other.example", false, false),
            expired: leaf(&ca, "localhost", true, false),
            unknown_ca: leaf(&other, "localhost", false, false),
            client: leaf(&ca, "anyframe client", false, true),
            dir: std::env::temp_dir().join(format!("anyframe-pki-{}", std::process::id())),
            ca_pem,
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

/// A client for `localhost` that trusts only the test CA.
pub fn client() -> TlsMode {
    client_for("localhost")
}

pub fn client_for(domain: &str) -> TlsMode {
    let mut b = TlsClient::builder(domain);
    b.add_root_certificate(Certificate::from_pem(pki().ca_pem.as_bytes()).expect("CA"))
        .disable_built_in_roots(true);
    b.build().expect("client").into()
}

pub fn server() -> TlsServer {
    server_with(&pki().server)
}

pub fn server_with(pem: &Pem) -> TlsServer {
    TlsServer::new(pem.identity()).expect("server")
}
