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
    pair_over(b, 1 << 16).await
}

/// [`pair`] over a pipe that holds `pipe` bytes each way.
async fn pair_over(
    b: TlsBackend,
    pipe: usize,
) -> (QueuedFramed<DuplexStream>, QueuedFramed<DuplexStream>) {
    let (c, s) = tokio::io::duplex(pipe);
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

/// A small encoder that panics, for output queued behind a switch.
struct Panicking;

impl tokio_util::codec::Encoder<&'static str> for Panicking {
    type Error = std::io::Error;
    fn encode(&mut self, _: &'static str, _: &mut bytes::BytesMut) -> std::io::Result<()> {
        panic!("encoder panics on purpose");
    }
}

/// WQ-7: "`push_shutdown()` writes everything queued, then half-closes
/// the write side [...] A push after it is refused (WQ-3)". A STARTTLS
/// or stoptls asked for after it would write (a ClientHello, a
/// close_notify) after the half-close it promised: it is refused with a
/// non-fatal `EINVAL`, and the peer reads what was queued, then the end.
/// On a spawned handle and inline, both backends.
#[tokio::test]
async fn a_switch_after_push_shutdown_is_refused_and_the_shutdown_goes_ahead() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        for spawned in [true, false] {
            let (ours, mut peer) = tokio::io::duplex(1 << 16);
            let what = format!("{b:?} spawned={spawned}");
            let (start, stop, keep) = if spawned {
                let (h, driver) = QueuedFramed::new(ours).spawn();
                h.push_bytes(&b"bye\n"[..]).unwrap();
                h.push_shutdown().unwrap();
                let start = h.starttls(pki::client_on(b));
                let stop = h.stoptls();
                (start, stop, Some((h, driver)))
            } else {
                let mut conn = QueuedFramed::new(ours);
                conn.push_bytes(&b"bye\n"[..]).unwrap();
                conn.push_shutdown().unwrap();
                let start = conn.push_starttls(pki::client_on(b));
                let stop = conn.push_stoptls();
                let _ = bounded(500, conn.flush()).await;
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    drop(conn);
                });
                (start, stop, None)
            };
            for (name, t) in [("starttls", start), ("stoptls", stop)] {
                match bounded(1000, t).await {
                    Some(Err(e))
                        if !e.is_fatal() && e.kind() == anyframe::ErrorKind::InvalidInput => {}
                    other => failed.push(format!("{what}: {name} after push_shutdown: {other:?}")),
                }
            }
            let mut got = Vec::new();
            let ended = bounded(1000, peer.read_to_end(&mut got)).await;
            if ended.is_none() || got != b"bye\n" {
                failed.push(format!(
                    "{what}: the peer got {:02x?}, end of input: {}",
                    &got[..got.len().min(16)],
                    ended.is_some()
                ));
            }
            drop(keep);
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// A panicking encoder while a STARTTLS is pending on a spawned handle:
/// the panic reaches the caller or closes the connection; the switch's
/// ticket resolves, and nothing queued behind the switch leaves in
/// plaintext.
#[tokio::test]
async fn a_panicking_encoder_behind_a_pending_starttls() {
    for &b in pki::BACKENDS {
        let (ours, mut peer) = tokio::io::duplex(1 << 16);
        let (h, driver) = QueuedFramed::new(ours).spawn();
        h.push_bytes(&b"before\n"[..]).unwrap();
        let tls = h.starttls(pki::client_on(b));
        h.push_bytes(&b"SECRET\n"[..]).unwrap();
        let h2 = h.clone();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            h2.push_write(Panicking, "x")
        }));
        eprintln!(
            "{b:?}: push_write with a panicking encoder: {:?}",
            r.as_ref().map(|_| ())
        );
        let t = bounded(2000, tls).await;
        eprintln!(
            "{b:?}: switch: {t:?}; closed={} err={:?}",
            h.is_closed(),
            h.error()
        );
        drop((h, h2));
        let d = bounded(3000, driver).await;
        assert!(d.is_some(), "{b:?}: the driver ends");
        let mut got = Vec::new();
        let _ = bounded(300, peer.read_to_end(&mut got)).await;
        assert!(
            !got.windows(6).any(|w| w == b"SECRET"),
            "{b:?}: leaked {:?}",
            String::from_utf8_lossy(&got)
        );
    }
}

/// TLS-1: two STARTTLS back to back on a handle: the second is refused
/// harmlessly, the first runs, and output queued after both goes over TLS.
#[tokio::test]
async fn starttls_twice_on_a_handle_refuses_the_second_harmlessly() {
    for &b in pki::BACKENDS {
        let (c, s) = tokio::io::duplex(1 << 16);
        let (h, _driver) = QueuedFramed::new(c).spawn();
        let first = h.starttls(pki::client_on(b));
        let second = h.starttls(pki::client_on(b));
        h.push_bytes(&b"SECRET\n"[..]).unwrap();
        let (tap, writes) = support::Tap::new(s);
        let _ = writes;
        let mut server = QueuedFramed::new(tap);
        let srv = tokio::spawn(async move {
            server.starttls(pki::localhost_on(b)).await?;
            server.read(anyframe::codecs::LineCodec::new()).await
        });
        let e = bounded(2000, second).await.expect("second").unwrap_err();
        assert!(!e.is_fatal(), "{b:?}: {e:?}");
        bounded(3000, first).await.expect("first").unwrap();
        let line = bounded(3000, srv).await.expect("server").unwrap().unwrap();
        assert_eq!(line.line(), b"SECRET", "{b:?}");
    }
}

/// TLS-5: "A `stoptls()` with no TLS on changes nothing", with data in
/// flight both ways on a handle.
#[tokio::test]
async fn stoptls_without_tls_with_data_in_flight_changes_nothing() {
    let (ours, mut peer) = tokio::io::duplex(1 << 16);
    let (h, _driver) = QueuedFramed::new(ours).spawn();
    peer.write_all(b"one\ntwo\n").await.unwrap();
    let r1 = h.push_read(anyframe::codecs::LineCodec::new());
    h.push_bytes(&b"a\n"[..]).unwrap();
    let stop = h.stoptls();
    h.push_bytes(&b"b\n"[..]).unwrap();
    let r2 = h.push_read(anyframe::codecs::LineCodec::new());
    bounded(2000, stop).await.expect("stop").unwrap();
    assert_eq!(bounded(2000, r1).await.unwrap().unwrap().line(), b"one");
    assert_eq!(bounded(2000, r2).await.unwrap().unwrap().line(), b"two");
    let mut got = [0u8; 4];
    bounded(2000, peer.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got, b"a\nb\n");
    assert!(!h.is_closed());
}

/// TLS-2/TLS-3 through the `Stream`: the peer's ClientHello arrives in the
/// same write as the plaintext line before it; the server takes that line
/// from its `Stream`, queues STARTTLS without awaiting it, and polls the
/// `Stream` again: the handshake runs first and the next frame is the
/// client's line over TLS, never the ClientHello's bytes as plaintext.
#[tokio::test]
async fn the_stream_behind_a_queued_starttls_yields_decrypted_frames_only() {
    use futures::StreamExt;
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let (c, s) = tokio::io::duplex(1 << 16);
        let client = tokio::spawn(async move {
            let mut conn = QueuedFramed::new(c);
            conn.push_bytes(&b"STARTTLS\n"[..]).unwrap();
            let t = conn.push_starttls(pki::client_on(b));
            conn.push_bytes(&b"over tls\n"[..]).unwrap();
            conn.wait(t).await?;
            conn.flush().await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<(), anyframe::Error>(())
        });
        let mut server = QueuedFramed::with_codec(s, anyframe::codecs::LineCodec::new());
        let first = bounded(2000, server.next()).await;
        let first = first.flatten().map(|r| r.map(|l| l.line().to_vec()));
        let _t = server.push_starttls(pki::localhost_on(b));
        let second = bounded(2000, server.next()).await;
        let second = second.flatten().map(|r| r.map(|l| l.line().to_vec()));
        let ok = matches!(&first, Some(Ok(l)) if l == b"STARTTLS")
            && matches!(&second, Some(Ok(l)) if l == b"over tls")
            && server.is_tls();
        if !ok {
            failed.push(format!("{b:?}: first {first:?}, second {second:?}"));
        }
        client.abort();
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

// ----- into_parts after stoptls, with much of the peer's stream unread -----

/// A handshaken pair of backend `b` over a roomy pipe whose server sent
/// `data` in 10,000-byte writes, then both ran `stoptls`: the client has
/// read none of it.
async fn stopped_after_sending(
    b: TlsBackend,
    data: &[u8],
) -> (QueuedFramed<DuplexStream>, QueuedFramed<DuplexStream>) {
    let (mut client, mut server) = pair_over(b, 4 << 20).await;
    for piece in data.chunks(10_000) {
        server.push_bytes(piece.to_vec()).unwrap();
    }
    let ok = bounded(5000, async {
        let (x, y) = tokio::join!(client.stoptls(), server.stoptls());
        x.unwrap();
        y.unwrap();
    })
    .await;
    assert!(ok.is_some(), "{b:?}: stoptls");
    (client, server)
}

/// Many records of the peer's data (over many of `into_parts`' reads),
/// its close_notify and plaintext behind it, all arrived: the data
/// comes back decrypted, whole and in order, then the plaintext.
#[tokio::test]
async fn many_records_before_the_peers_close_notify_come_back_whole_and_in_order() {
    let data: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let (client, server) = stopped_after_sending(b, &data).await;
        let mut sraw = server.into_parts().io;
        sraw.write_all(b"plain\n").await.unwrap();
        let parts = client.into_parts();
        let mut got = parts.read_buf.to_vec();
        let mut craw = parts.io;
        let _ = bounded(500, async {
            while !got.ends_with(b"plain\n") {
                let mut buf = [0u8; 4096];
                let n = craw.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
        })
        .await;
        let mut want = data.clone();
        want.extend_from_slice(b"plain\n");
        if got != want {
            let at = got.iter().zip(&want).position(|(x, y)| x != y);
            failed.push(format!(
                "{b:?}: {} bytes for {}, first difference at {at:?}",
                got.len(),
                want.len()
            ));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// More of the peer's data than `into_parts` reads before giving up
/// on its close_notify: what it read comes back decrypted, and the
/// rest of the peer's TLS stream follows from a record boundary (in
/// `read_buf`, or else in the transport).
#[tokio::test]
async fn past_the_settle_cap_the_rest_of_the_tls_stream_starts_at_a_record() {
    let data: Vec<u8> = (0..600_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let (client, _server) = stopped_after_sending(b, &data).await;
        let parts = client.into_parts();
        let mut got = parts.read_buf.to_vec();
        let mut craw = parts.io;
        let mut head = [0u8; 3];
        if let Some(Ok(_)) = bounded(500, craw.read_exact(&mut head)).await {
            got.extend_from_slice(&head);
        }
        let clear = got.iter().zip(&data).take_while(|(x, y)| x == y).count();
        let rest = &got[clear..];
        if !rest.is_empty() && !rest.starts_with(&[0x17, 0x03, 0x03]) {
            failed.push(format!(
                "{b:?}: {clear} bytes decrypted, then {:02x?}",
                &rest[..rest.len().min(8)]
            ));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}
