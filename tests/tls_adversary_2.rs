//! TLS switches at the edges of shutdown, stoptls and `into_parts`, on
//! both backends and both front ends. Every wait is bounded.
#![cfg(any(feature = "tls", feature = "rustls"))]

mod support;

#[path = "support/pki.rs"]
mod pki;

use std::time::Duration;

use anyframe::QueuedFramed;
use anyframe::tls::TlsBackend;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

async fn bounded<F: std::future::Future>(ms: u64, f: F) -> Option<F::Output> {
    tokio::time::timeout(Duration::from_millis(ms), f)
        .await
        .ok()
}

/// A client and a server of backend `b` over a duplex pipe, handshaken.
async fn pair(b: TlsBackend) -> (QueuedFramed<DuplexStream>, QueuedFramed<DuplexStream>) {
    let (c, s) = tokio::io::duplex(1 << 16);
    let mut client = QueuedFramed::builder().tls(pki::client_on(b)).build(c);
    let mut server = QueuedFramed::builder().tls(pki::localhost_on(b)).build(s);
    let (x, y) = bounded(3000, async { tokio::join!(client.flush(), server.flush()) })
        .await
        .expect("handshake");
    x.unwrap();
    y.unwrap();
    (client, server)
}

/// TLS-7: "`into_parts` over TLS [...] gives the raw transport back; call
/// `stoptls` first for a clean plaintext stream". After both ends ran
/// `stoptls`, the stream handed back carries the peer's plaintext, not
/// the rest of its TLS session (its close_notify).
#[tokio::test]
async fn into_parts_after_both_stoptls_hands_back_a_clean_plaintext_stream() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let (mut client, mut server) = pair(b).await;
        let ok = bounded(3000, async {
            let (x, y) = tokio::join!(client.stoptls(), server.stoptls());
            x.unwrap();
            y.unwrap();
        })
        .await;
        assert!(ok.is_some(), "{b:?}: stoptls");
        assert!(!client.is_tls() && !server.is_tls());
        let sparts = server.into_parts();
        let mut sraw = sparts.io;
        sraw.write_all(b"plain\n").await.unwrap();
        let cparts = client.into_parts();
        let mut got = cparts.read_buf.to_vec();
        let mut craw = cparts.io;
        let _ = bounded(500, async {
            while !got.ends_with(b"\n") {
                let mut buf = [0u8; 256];
                let n = craw.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
        })
        .await;
        if got != b"plain\n" {
            failed.push(format!("{b:?}: the raw stream began {got:02x?}"));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// Reads `raw` after `got` until a line ends (or 500 ms pass).
async fn raw_line(mut got: Vec<u8>, raw: &mut DuplexStream) -> Vec<u8> {
    let _ = bounded(500, async {
        while !got.ends_with(b"plain\n") {
            let mut buf = [0u8; 256];
            let n = raw.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    got
}

/// The same on a spawned handle taken apart with `detach`, with data the
/// peer sent over TLS before its close_notify still unread: it comes back
/// decrypted in `read_buf`, ahead of the plaintext behind the close_notify.
#[tokio::test]
async fn detach_after_both_stoptls_keeps_the_peers_last_tls_data_and_no_ciphertext() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let (client, mut server) = pair(b).await;
        let (h, driver) = client.spawn();
        server.push_bytes(&b"last over tls\n"[..]).unwrap();
        let ok = bounded(3000, async {
            let (x, y) = tokio::join!(h.stoptls(), server.stoptls());
            x.unwrap();
            y.unwrap();
        })
        .await;
        assert!(ok.is_some(), "{b:?}: stoptls");
        let mut sraw = server.into_parts().io;
        sraw.write_all(b"plain\n").await.unwrap();
        // Let the plaintext arrive before the handle is taken apart.
        tokio::time::sleep(Duration::from_millis(20)).await;
        h.detach();
        let parts = bounded(3000, driver).await.expect("driver").unwrap();
        let mut craw = parts.io;
        let got = raw_line(parts.read_buf.to_vec(), &mut craw).await;
        if got != b"last over tls\nplain\n" {
            failed.push(format!("{b:?}: {:?}", String::from_utf8_lossy(&got)));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}
