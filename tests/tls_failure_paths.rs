//! The TLS switch failure paths (docs/semantics.md §7, with LC-*, TO-*,
//! RQ-*, WQ-*), on both backends and both front ends. Every wait is
//! bounded.
#![cfg(any(feature = "tls", feature = "rustls"))]

mod support;

#[path = "support/net.rs"]
mod net;
#[path = "support/pki.rs"]
mod pki;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyframe::codecs::{ChunkCodec, LineCodec};
use anyframe::tls::TlsBackend;
use anyframe::{ErrorKind, QueuedFramed};
use futures::FutureExt;
use net::stalled_listener;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn bounded<F: std::future::Future>(secs: u64, f: F) -> Option<F::Output> {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .ok()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A TLS server of backend `b` on `s` (inline) that, once TLS is up,
/// writes `send` and then keeps the connection open for a while.
fn tls_server_sending(
    b: TlsBackend,
    s: tokio::io::DuplexStream,
    send: &'static [u8],
) -> tokio::task::JoinHandle<anyframe::Result<()>> {
    tokio::spawn(async move {
        let mut conn = QueuedFramed::builder().tls(pki::localhost_on(b)).build(s);
        conn.push_bytes(send)?;
        conn.flush().await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        Ok(())
    })
}

/// A real ClientHello of backend `b`.
async fn client_hello(b: TlsBackend) -> Vec<u8> {
    let (c, mut peer) = tokio::io::duplex(1 << 16);
    let client = tokio::spawn(async move {
        let mut conn = QueuedFramed::builder().tls(pki::client_on(b)).build(c);
        let _ = conn.flush().await;
        conn
    });
    let mut head = [0u8; 5];
    peer.read_exact(&mut head).await.unwrap();
    let len = u16::from_be_bytes([head[3], head[4]]) as usize;
    let mut body = vec![0u8; len];
    peer.read_exact(&mut body).await.unwrap();
    client.abort();
    [&head[..], &body[..]].concat()
}

// ----- into_parts with a switch pending ---------------------------------------

/// "Nothing is lost" with TLS-2/TLS-4 ("output queued after it waits for
/// the switch", never plaintext): `into_parts` with a STARTTLS still
/// pending returns the output queued behind the switch apart
/// (`Parts::after_switch`), not in `write_buf` with the plaintext queued
/// before it; rebuilt with `Builder::tls` + `build_from_parts`, it goes
/// out behind the new handshake, never in clear.
#[tokio::test]
async fn into_parts_with_a_pending_starttls_keeps_tls_output_apart() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let (io, mut peer) = tokio::io::duplex(1 << 16);
        let (tap, writes) = support::Tap::new(io);
        let mut conn = QueuedFramed::new(tap);
        conn.push_bytes(&b"EHLO\n"[..]).unwrap();
        let _switch = conn.push_starttls(pki::client_on(b));
        conn.push_bytes(&b"AUTH PLAIN SECRET\n"[..]).unwrap();
        let parts = conn.into_parts();
        let returned = parts.write_buf.clone();
        assert_eq!(&returned[..], b"EHLO\n", "{b:?}");
        assert_eq!(&parts.after_switch[..], b"AUTH PLAIN SECRET\n", "{b:?}");
        // Rebuild as the docs describe, TLS from the start.
        let mut again = QueuedFramed::builder()
            .tls(pki::client_on(b))
            .build_from_parts(parts);
        let _ = bounded(2, again.flush()).await;
        let wire = support::written(&writes);
        let mut got = vec![0u8; 4096];
        let _ = bounded(1, peer.read(&mut got)).await;
        if contains(&returned, b"SECRET") || contains(&wire, b"SECRET") {
            failed.push(format!(
                "{b:?}: write_buf={:?}; leaked on the wire: {}",
                String::from_utf8_lossy(&returned),
                contains(&wire, b"SECRET")
            ));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// The same parts put back on a connection with no TLS switch
/// (`from_parts`): the plaintext goes out, the output meant for TLS does
/// not.
#[tokio::test]
async fn from_parts_without_tls_never_writes_the_output_meant_for_it() {
    let b = pki::BACKENDS[0];
    let (io, _peer) = tokio::io::duplex(1 << 16);
    let (tap, writes) = support::Tap::new(io);
    let mut conn = QueuedFramed::new(tap);
    conn.push_bytes(&b"EHLO\n"[..]).unwrap();
    let _switch = conn.push_starttls(pki::client_on(b));
    conn.push_bytes(&b"AUTH PLAIN SECRET\n"[..]).unwrap();
    let mut again = QueuedFramed::from_parts(conn.into_parts());
    bounded(2, again.flush()).await.unwrap().unwrap();
    assert_eq!(support::written(&writes), b"EHLO\n");
    assert_eq!(again.write_buffered(), 0);
}

// ----- destroy / last handle with a switch pending --------------------------------

/// LC-1/LC-3: `destroy` while a handshake waits on a silent peer: every
/// ticket fails `Closed`, the driver ends promptly (the switch fails with
/// the rest, its output is not written), nothing behind the switch leaves.
#[tokio::test]
async fn destroy_during_a_stalled_handshake_ends_promptly_and_leaks_nothing() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let (io, _silent) = tokio::io::duplex(1 << 16);
        let (tap, writes) = support::Tap::new(io);
        let (h, driver) = QueuedFramed::new(tap).spawn();
        h.push_bytes(&b"before\n"[..]).unwrap();
        let tls = h.starttls(pki::client_on(b));
        h.push_bytes(&b"SECRET\n"[..]).unwrap();
        let read = h.push_read(LineCodec::new());
        tokio::time::sleep(Duration::from_millis(100)).await;
        h.destroy();
        let r1 = bounded(2, tls).await;
        let r2 = bounded(2, read).await;
        let d = bounded(2, driver).await;
        let wire = support::written(&writes);
        let ok = matches!(&r1, Some(Err(e)) if e.kind() == ErrorKind::Closed)
            && matches!(&r2, Some(Err(e)) if e.kind() == ErrorKind::Closed)
            && d.is_some()
            && !contains(&wire, b"SECRET")
            && contains(&wire, b"before");
        if !ok {
            failed.push(format!(
                "{b:?}: switch={r1:?} read={r2:?} driver_ended={} secret_leaked={}",
                d.is_some(),
                contains(&wire, b"SECRET")
            ));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// LC-3: the last handle goes with a handshake pending on a silent peer and
/// a short linger: the driver ends within the linger period, and the output
/// behind the switch never leaves in plaintext.
#[tokio::test]
async fn last_handle_dropped_during_a_stalled_handshake_ends_within_linger() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let (io, _silent) = tokio::io::duplex(1 << 16);
        let (tap, writes) = support::Tap::new(io);
        let (h, driver) = QueuedFramed::builder()
            .linger(Duration::from_millis(300))
            .build(tap)
            .spawn();
        let tls = h.starttls(pki::client_on(b));
        h.push_bytes(&b"SECRET\n"[..]).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(h);
        let d = bounded(3, driver).await;
        let r = bounded(1, tls).await;
        let wire = support::written(&writes);
        if d.is_none() || contains(&wire, b"SECRET") || !matches!(r, Some(Err(_))) {
            failed.push(format!(
                "{b:?}: driver_ended={} switch={r:?} leaked={}",
                d.is_some(),
                contains(&wire, b"SECRET")
            ));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

// ----- panics around a switch ------------------------------------------------------------

/// "User code is untrusted" + TLS-4: a completion queues `220`, starts TLS,
/// queues `SECRET` and then panics. The connection fails (`Panicked`), the
/// switch's ticket resolves, and `SECRET` never leaves in plaintext.
#[tokio::test]
async fn a_completion_that_panics_after_its_starttls_leaks_nothing() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        for spawned in [false, true] {
            let (io, mut peer) = tokio::io::duplex(1 << 16);
            let (tap, writes) = support::Tap::new(io);
            peer.write_all(b"STARTTLS\n").await.unwrap();
            let tls = pki::localhost_on(b);
            let hs_slot = Arc::new(std::sync::Mutex::new(None));
            let slot = hs_slot.clone();
            let body = move |_cmd: anyframe::codecs::Line, q: &mut anyframe::Requests<'_>| {
                q.push_write(LineCodec::new(), "220 ready")?;
                *slot.lock().unwrap() = Some(q.starttls(tls));
                q.push_write(LineCodec::new(), "SECRET")?;
                if true {
                    panic!("completion blew up after starttls");
                }
                Ok(())
            };
            let outcome = if spawned {
                let (h, driver) = QueuedFramed::new(tap).spawn();
                let t = h.push_read_with(LineCodec::new(), body);
                let r = bounded(3, t).await;
                let d = bounded(3, std::panic::AssertUnwindSafe(driver).catch_unwind()).await;
                let later = h.push_bytes(&b"x"[..]);
                format!(
                    "ticket={r:?} driver_done={} driver_panicked={:?} later_push={later:?}",
                    d.is_some(),
                    d.as_ref().map(|r| r.is_err())
                )
            } else {
                let mut conn = QueuedFramed::new(tap);
                let t = conn.push_read_with(LineCodec::new(), body);
                let r = std::panic::AssertUnwindSafe(conn.wait(t))
                    .catch_unwind()
                    .await;
                let f = bounded(2, conn.flush()).await;
                format!("panicked={} flush={f:?}", r.is_err())
            };
            let hs = hs_slot.lock().unwrap().take();
            let hs = match hs {
                Some(t) => format!("{:?}", bounded(2, t).await),
                None => "no ticket".into(),
            };
            let wire = support::written(&writes);
            if contains(&wire, b"SECRET") || !hs.contains("Err") {
                failed.push(format!(
                    "{b:?} spawned={spawned}: {outcome} handshake={hs} leaked={}",
                    contains(&wire, b"SECRET")
                ));
            }
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

// ----- timeouts during the handshake ---------------------------------------------------

/// TO-3: with an `on_timeout` hook set, "the hook runs instead". A hook that
/// does nothing during a slow handshake: the switch goes on, and once the
/// peer answers (late) the read queued behind it gets the line over TLS.
#[tokio::test]
async fn a_noop_timeout_hook_during_a_slow_handshake_lets_it_finish() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        for spawned in [false, true] {
            let (c, s) = tokio::io::duplex(1 << 16);
            // The server starts 600 ms late.
            let server = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(600)).await;
                let mut conn = QueuedFramed::builder().tls(pki::localhost_on(b)).build(s);
                conn.push_bytes(&b"over tls\n"[..])?;
                conn.flush().await?;
                tokio::time::sleep(Duration::from_secs(2)).await;
                Ok::<_, anyframe::Error>(())
            });
            let fired = Arc::new(AtomicUsize::new(0));
            let f2 = fired.clone();
            let r = if spawned {
                let (h, _d) = QueuedFramed::builder()
                    .rtimeout(Duration::from_millis(100))
                    .build(c)
                    .spawn();
                h.on_timeout(move |_, _| {
                    f2.fetch_add(1, Ordering::SeqCst);
                });
                let tls = h.starttls(pki::client_on(b));
                let line = h.push_read(LineCodec::new());
                let a = bounded(5, tls).await;
                let l = bounded(5, line).await;
                format!("{a:?} {:?}", l.map(|r| r.map(|l| l.line().to_vec())))
            } else {
                let mut conn = QueuedFramed::builder()
                    .rtimeout(Duration::from_millis(100))
                    .build(c);
                conn.on_timeout(move |_, _| {
                    f2.fetch_add(1, Ordering::SeqCst);
                });
                let a = bounded(5, conn.starttls(pki::client_on(b))).await;
                let l = bounded(5, conn.read(LineCodec::new())).await;
                format!("{a:?} {:?}", l.map(|r| r.map(|l| l.line().to_vec())))
            };
            let want = format!("Some(Ok(())) Some(Ok({:?}))", b"over tls".to_vec());
            if r != want || fired.load(Ordering::SeqCst) == 0 {
                failed.push(format!(
                    "{b:?} spawned={spawned}: {r} hook fired {}",
                    fired.load(Ordering::SeqCst)
                ));
            }
            server.abort();
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// TO-3/LC-1: an idle-timeout hook that destroys the connection during a
/// stalled handshake: the switch's ticket fails, nothing behind it leaks,
/// the driver ends.
#[tokio::test]
async fn a_timeout_hook_that_destroys_during_a_handshake() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        for spawned in [false, true] {
            let (io, _silent) = tokio::io::duplex(1 << 16);
            let (tap, writes) = support::Tap::new(io);
            let r = if spawned {
                let (h, driver) = QueuedFramed::builder()
                    .timeout(Duration::from_millis(100))
                    .build(tap)
                    .spawn();
                h.on_timeout(|_, q| q.destroy());
                let tls = h.starttls(pki::client_on(b));
                h.push_bytes(&b"SECRET\n"[..]).unwrap();
                let a = bounded(3, tls).await;
                let d = bounded(3, driver).await;
                format!("{a:?} driver_done={}", d.is_some())
            } else {
                let mut conn = QueuedFramed::builder()
                    .timeout(Duration::from_millis(100))
                    .build(tap);
                conn.on_timeout(|_, q| q.destroy());
                let tls = conn.push_starttls(pki::client_on(b));
                conn.push_bytes(&b"SECRET\n"[..]).unwrap();
                let a = bounded(3, conn.wait(tls)).await;
                let f = bounded(2, conn.flush()).await;
                format!("{a:?} flush={f:?} driver_done=true")
            };
            let wire = support::written(&writes);
            if !r.starts_with("Some(Err(")
                || !r.ends_with("driver_done=true")
                || contains(&wire, b"SECRET")
            {
                failed.push(format!(
                    "{b:?} spawned={spawned}: {r} leaked={}",
                    contains(&wire, b"SECRET")
                ));
            }
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// TO-3 ("a write timeout tries the write side first", then "a TLS switch's
/// waiter"): our side is the TLS server, the peer sent a real ClientHello
/// and never reads; our flight fills the pipe. The switch's waiter hears a
/// non-fatal ETIMEDOUT, on both front ends.
#[tokio::test]
async fn a_write_timeout_while_the_handshake_cannot_write() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let hello = client_hello(b).await;
        for spawned in [false, true] {
            let (io, mut peer) = tokio::io::duplex(64);
            let h2 = hello.clone();
            let feeder = tokio::spawn(async move {
                peer.write_all(&h2).await.unwrap();
                tokio::time::sleep(Duration::from_secs(10)).await;
                drop(peer);
            });
            let r = if spawned {
                let (h, _d) = QueuedFramed::builder()
                    .wtimeout(Duration::from_millis(200))
                    .build(io)
                    .spawn();
                bounded(5, h.starttls(pki::localhost_on(b))).await
            } else {
                let mut conn = QueuedFramed::builder()
                    .wtimeout(Duration::from_millis(200))
                    .build(io);
                bounded(5, conn.starttls(pki::localhost_on(b))).await
            };
            match &r {
                Some(Err(e)) if e.is_timeout() && !e.is_fatal() => {}
                other => failed.push(format!("{b:?} spawned={spawned}: {other:?}")),
            }
            feeder.abort();
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

// ----- the peer misbehaves mid-handshake ----------------------------------------------

/// TLS-4: a client STARTTLS answered with plaintext garbage (the peer
/// refused, keeps the connection open): fatal EPROTO at once, no hang, and
/// the output behind the switch never leaves.
#[tokio::test]
async fn garbage_instead_of_a_server_hello_is_fatal_eproto() {
    let garbage: &[&[u8]] = &[
        b"454 TLS not available due to temporary reason\r\n",
        b"HTTP/1.1 400 Bad Request\r\n\r\n",
        b"\x16\x03\x03\x00\x04\x02\x00\x00\x00",
        b"\x15\x03\x03\x00\x02\x02\x28",
        b"\x17\x03\x03\x00\x05hello",
    ];
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        for (i, g) in garbage.iter().enumerate() {
            for spawned in [false, true] {
                let (io, mut peer) = tokio::io::duplex(1 << 16);
                let (tap, writes) = support::Tap::new(io);
                let g = g.to_vec();
                let p = tokio::spawn(async move {
                    let mut buf = [0u8; 5];
                    let _ = peer.read_exact(&mut buf).await;
                    let _ = peer.write_all(&g).await;
                    let mut sink = vec![0u8; 1 << 16];
                    loop {
                        match peer.read(&mut sink).await {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                });
                let r = if spawned {
                    let (h, _d) = QueuedFramed::new(tap).spawn();
                    let t = h.starttls(pki::client_on(b));
                    h.push_bytes(&b"SECRET\n"[..]).unwrap();
                    bounded(5, t).await
                } else {
                    let mut conn = QueuedFramed::new(tap);
                    let t = conn.push_starttls(pki::client_on(b));
                    conn.push_bytes(&b"SECRET\n"[..]).unwrap();
                    let r = bounded(5, conn.wait(t)).await;
                    let _ = bounded(1, conn.flush()).await;
                    r
                };
                let leaked = contains(&support::written(&writes), b"SECRET");
                match &r {
                    Some(Err(e)) if e.is_fatal() && e.kind() == ErrorKind::Protocol && !leaked => {}
                    other => failed.push(format!(
                        "{b:?} garbage#{i} spawned={spawned}: {other:?} leaked={leaked}"
                    )),
                }
                p.abort();
            }
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// TLS-4 / ERR-5 ("Protocol: a TLS handshake or protocol failure"): the
/// server's flight cut off at every 97th byte and then its FIN. The client's
/// STARTTLS fails fatally (no hang), with the same kind on both backends
/// and both front ends.
#[tokio::test]
async fn server_flight_cut_off_mid_handshake() {
    let mut kinds = Vec::new();
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        // Capture a real server flight for backend b.
        let (c, mut s_raw) = tokio::io::duplex(1 << 16);
        let (s_side, mut srv_peer) = tokio::io::duplex(1 << 16);
        let client = tokio::spawn(async move {
            let mut conn = QueuedFramed::builder().tls(pki::client_on(b)).build(c);
            let _ = conn.flush().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        });
        let server = tokio::spawn(async move {
            let mut conn = QueuedFramed::builder()
                .tls(pki::localhost_on(b))
                .build(s_side);
            let _ = bounded(2, conn.flush()).await;
        });
        let mut hello = vec![0u8; 4096];
        let n = s_raw.read(&mut hello).await.unwrap();
        srv_peer.write_all(&hello[..n]).await.unwrap();
        let mut flight = vec![0u8; 1 << 16];
        let m = bounded(2, srv_peer.read(&mut flight))
            .await
            .unwrap()
            .unwrap();
        flight.truncate(m);
        client.abort();
        server.abort();
        let mut k = 1;
        while k < flight.len() {
            for spawned in [false, true] {
                let (io, mut peer) = tokio::io::duplex(1 << 16);
                let part = flight[..k].to_vec();
                let p = tokio::spawn(async move {
                    let mut buf = [0u8; 5];
                    let _ = peer.read_exact(&mut buf).await;
                    let _ = peer.write_all(&part).await;
                    let _ = peer.shutdown().await;
                    let mut sink = vec![0u8; 1 << 16];
                    while let Ok(n) = peer.read(&mut sink).await {
                        if n == 0 {
                            break;
                        }
                    }
                });
                let r = if spawned {
                    let (h, _d) = QueuedFramed::new(io).spawn();
                    bounded(5, h.starttls(pki::client_on(b))).await
                } else {
                    let mut conn = QueuedFramed::new(io);
                    bounded(5, conn.starttls(pki::client_on(b))).await
                };
                match &r {
                    Some(Err(e)) if e.is_fatal() => kinds.push((b, spawned, k, e.kind())),
                    other => failed.push(format!("{b:?} k={k} spawned={spawned}: {other:?}")),
                }
                p.abort();
            }
            k += 97;
        }
    }
    let odd: Vec<_> = kinds
        .iter()
        .filter(|(_, _, _, kind)| *kind != ErrorKind::Protocol)
        .collect();
    assert!(
        failed.is_empty() && odd.is_empty(),
        "{failed:#?}\nnot EPROTO: {odd:?}"
    );
}

/// TLS-4: the peer resets the TCP connection mid-handshake. The switch
/// fails fatally (no hang), both backends, both front ends.
#[tokio::test]
async fn peer_reset_mid_handshake_is_fatal() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        for spawned in [false, true] {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let peer = tokio::spawn(async move {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 5];
                let _ = s.read_exact(&mut buf).await;
                #[allow(deprecated)]
                s.set_linger(Some(Duration::ZERO)).unwrap();
                drop(s);
            });
            let sock = tokio::net::TcpStream::connect(addr).await.unwrap();
            let r = if spawned {
                let (h, _d) = QueuedFramed::new(sock).spawn();
                bounded(5, h.starttls(pki::client_on(b))).await
            } else {
                let mut conn = QueuedFramed::new(sock);
                bounded(5, conn.starttls(pki::client_on(b))).await
            };
            match &r {
                Some(Err(e)) if e.is_fatal() => {}
                other => failed.push(format!("{b:?} spawned={spawned}: {other:?}")),
            }
            let _ = peer.await;
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

// ----- limits across the switch --------------------------------------------------------

/// OPT-8: `rbuf_max` over TLS: a line longer than the limit after the
/// switch is ENOSPC, fatal (not a hang: the TLS library holds the rest).
#[tokio::test]
async fn rbuf_max_crossed_by_post_switch_data() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        for spawned in [false, true] {
            let (c, s) = tokio::io::duplex(1 << 16);
            let server = tls_server_sending(b, s, b"0123456789012345678901234567890123456789\n");
            let r = if spawned {
                let (h, _d) = QueuedFramed::builder().rbuf_max(Some(16)).build(c).spawn();
                let _switch = h.starttls(pki::client_on(b));
                bounded(5, h.read(LineCodec::new())).await
            } else {
                let mut conn = QueuedFramed::builder().rbuf_max(Some(16)).build(c);
                let _switch = conn.push_starttls(pki::client_on(b));
                bounded(5, conn.read(LineCodec::new())).await
            };
            match &r {
                Some(Err(e)) if e.is_fatal() && e.kind() == ErrorKind::NoSpace => {}
                other => failed.push(format!("{b:?} spawned={spawned}: {other:?}")),
            }
            server.abort();
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// RT-tlsauto under a tight `rbuf_max` (8 bytes: more than the detector's
/// 6): the ClientHello does not fit the read buffer, but the detector only
/// needs its first bytes and the handshake takes the rest from the
/// transport. Lines of up to 7 bytes then go through.
#[tokio::test]
async fn autostart_under_a_tight_rbuf_max() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        for spawned in [false, true] {
            let (c, s) = tokio::io::duplex(1 << 16);
            let client = tokio::spawn(async move {
                let mut conn = QueuedFramed::builder().tls(pki::client_on(b)).build(c);
                conn.write(LineCodec::new(), "hi").await?;
                conn.read(LineCodec::new()).await
            });
            let r: anyframe::Result<Vec<u8>> = async {
                if spawned {
                    let (h, _d) = QueuedFramed::builder().rbuf_max(Some(8)).build(s).spawn();
                    let v = h.push_tls_autostart(pki::localhost_on(b));
                    let l = h.push_read(LineCodec::new());
                    v.await?;
                    let l = l.await?;
                    h.push_write(LineCodec::new(), l.line())?;
                    h.flush().await?;
                    Ok(l.line().to_vec())
                } else {
                    let mut conn = QueuedFramed::builder().rbuf_max(Some(8)).build(s);
                    conn.tls_autostart(pki::localhost_on(b)).await?;
                    let l = conn.read(LineCodec::new()).await?;
                    conn.write(LineCodec::new(), l.line()).await?;
                    Ok(l.line().to_vec())
                }
            }
            .await;
            let echo = bounded(5, client).await;
            if r.as_deref().ok() != Some(&b"hi"[..]) {
                failed.push(format!(
                    "{b:?} spawned={spawned}: server {r:?} client {echo:?}"
                ));
            }
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// What a push of `len` bytes behind a pending STARTTLS (which a silent
/// peer never answers) and 9 bytes queued before it did, under a
/// `wbuf_max` of 64, spawned or inline.
struct BehindASwitch {
    push: anyframe::Result<()>,
    /// How the switch's ticket resolved within `wait` seconds (`None`:
    /// still pending), as text.
    switch: Option<String>,
    closed: bool,
    /// Bytes queued behind the switch left in plaintext.
    leaked: bool,
}

async fn push_behind_a_pending_switch(
    b: TlsBackend,
    spawned: bool,
    len: usize,
    wait: u64,
) -> BehindASwitch {
    let (io, _silent) = tokio::io::duplex(1 << 16);
    let (tap, writes) = support::Tap::new(io);
    let builder = QueuedFramed::builder().wbuf_max(Some(64)).clone();
    let (push, switch, closed) = if spawned {
        let (h, _driver) = builder.build(tap).spawn();
        let t = h.starttls(pki::client_on(b));
        h.push_bytes(&b"SECRET-1\n"[..]).unwrap();
        let push = h.push_bytes(vec![b'S'; len]);
        let switch = bounded(wait, t).await.map(|r| format!("{r:?}"));
        (push, switch, h.is_closed())
    } else {
        let mut conn = builder.build(tap);
        let t = conn.push_starttls(pki::client_on(b));
        conn.push_bytes(&b"SECRET-1\n"[..]).unwrap();
        let push = conn.push_bytes(vec![b'S'; len]);
        let switch = bounded(wait, conn.wait(t)).await.map(|r| format!("{r:?}"));
        let _ = bounded(1, conn.flush()).await;
        (push, switch, conn.is_closed())
    };
    let leaked = contains(&support::written(&writes), b"SECRET");
    BehindASwitch {
        push,
        switch,
        closed,
        leaked,
    }
}

/// OPT-9/WQ-6: a push behind a pending switch that crosses `wbuf_max` is
/// ENOSPC, fatal; nothing behind the switch leaves in plaintext, and the
/// switch's ticket resolves.
#[tokio::test]
async fn wbuf_max_crossed_behind_a_pending_switch() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        for spawned in [false, true] {
            let r = push_behind_a_pending_switch(b, spawned, 60, 2).await;
            let enospc =
                matches!(&r.push, Err(e) if e.kind() == ErrorKind::NoSpace && e.is_fatal());
            let failed_switch = r.switch.as_deref().is_some_and(|s| s.starts_with("Err"));
            if !enospc || !failed_switch || !r.closed || r.leaked {
                failed.push(format!(
                    "{b:?} spawned={spawned}: push={:?} switch={:?} closed={} leaked={}",
                    r.push, r.switch, r.closed, r.leaked
                ));
            }
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// OPT-9: an item longer than the whole of `wbuf_max`, pushed behind a
/// pending switch, is refused (non-fatal `EINVAL`, nothing queued): the
/// connection and its switch go on, and nothing behind the switch leaves
/// in plaintext.
#[tokio::test]
async fn an_item_longer_than_wbuf_max_behind_a_pending_switch_is_refused() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        for spawned in [false, true] {
            let r = push_behind_a_pending_switch(b, spawned, 100, 1).await;
            let refused =
                matches!(&r.push, Err(e) if e.kind() == ErrorKind::InvalidInput && !e.is_fatal());
            if !refused || r.switch.is_some() || r.closed || r.leaked {
                failed.push(format!(
                    "{b:?} spawned={spawned}: push={:?} switch={:?} closed={} leaked={}",
                    r.push, r.switch, r.closed, r.leaked
                ));
            }
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

// ----- cancellation behind a switch ------------------------------------------------------

/// Cancellation: "A request dropped [...] before it produced a frame has
/// consumed nothing." A read queued behind a STARTTLS whose ticket is
/// dropped before the handshake ends: the next read gets the first line.
#[tokio::test]
async fn a_dropped_read_behind_a_switch_consumes_nothing() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        for spawned in [false, true] {
            let (c, s) = tokio::io::duplex(1 << 16);
            let server = tls_server_sending(b, s, b"one\ntwo\n");
            let r = if spawned {
                let (h, _d) = QueuedFramed::new(c).spawn();
                let t = h.starttls(pki::client_on(b));
                drop(h.push_read(LineCodec::new()));
                drop(h.push_read(ChunkCodec::new(2)));
                let _ = bounded(5, t).await;
                bounded(5, h.read(LineCodec::new())).await
            } else {
                let mut conn = QueuedFramed::new(c);
                let t = conn.push_starttls(pki::client_on(b));
                drop(conn.push_read(LineCodec::new()));
                drop(conn.push_read(ChunkCodec::new(2)));
                let _ = bounded(5, conn.wait(t)).await;
                bounded(5, conn.read(LineCodec::new())).await
            };
            let got = r.map(|r| r.map(|l| String::from_utf8_lossy(l.line()).into_owned()));
            if !matches!(&got, Some(Ok(l)) if l == "one") {
                failed.push(format!("{b:?} spawned={spawned}: {got:?}"));
            }
            server.abort();
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

// ----- stop, plaintext, start again -------------------------------------------------------

/// TLS-1/TLS-5/TLS-6: TLS, stoptls (we stop first, the peer answers),
/// plaintext both ways, STARTTLS again with the roles swapped; the peer's
/// certificate is there over TLS, gone after the stop, back after the
/// restart. The peer answers our close_notify and starts its handshake in
/// one go, so its close_notify and ClientHello may arrive together.
#[tokio::test]
async fn stop_plaintext_then_starttls_again_roles_swapped() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        for spawned in [false, true] {
            let (c, s) = tokio::io::duplex(1 << 16);
            // The peer: TLS client, then after its stop a TLS client again
            // (we become the server the second time too: the peer starts
            // its second handshake the moment it answers our stop).
            let peer = tokio::spawn(async move {
                let mut p = QueuedFramed::builder().tls(pki::client_on(b)).build(c);
                let l = p.read(LineCodec::new()).await?; // "over tls 1"
                assert_eq!(l.line(), b"over tls 1");
                // Our close_notify arrives: a clean end of TLS input.
                let end = p.read(anyframe::OrEof::new(LineCodec::new())).await?;
                assert!(end.is_none(), "{end:?}");
                p.stoptls().await?;
                p.push_write(LineCodec::new(), "plain from peer")?;
                let _t = p.push_starttls(pki::client_on(b));
                p.flush().await?;
                p.write(LineCodec::new(), "over tls 2").await?;
                let l = p.read(LineCodec::new()).await?;
                Ok::<_, anyframe::Error>(l.line().to_vec())
            });
            let r: Result<(), String> = async {
                if spawned {
                    let (h, _d) = QueuedFramed::builder()
                        .tls(pki::localhost_on(b))
                        .build(s)
                        .spawn();
                    h.push_write(LineCodec::new(), "over tls 1")
                        .map_err(|e| e.to_string())?;
                    h.flush().await.map_err(|e| e.to_string())?;
                    let cert1 = h.is_tls();
                    h.stoptls().await.map_err(|e| e.to_string())?;
                    if h.is_tls() || h.peer_certificate().is_some() {
                        return Err("still TLS after stop".into());
                    }
                    let l = h.read(LineCodec::new()).await.map_err(|e| e.to_string())?;
                    if l.line() != b"plain from peer" {
                        return Err(format!("plain: {:?}", l));
                    }
                    h.starttls(pki::localhost_on(b))
                        .await
                        .map_err(|e| e.to_string())?;
                    let l = h.read(LineCodec::new()).await.map_err(|e| e.to_string())?;
                    if l.line() != b"over tls 2" || !h.is_tls() || !cert1 {
                        return Err(format!("tls2: {:?} is_tls={}", l, h.is_tls()));
                    }
                    h.push_write(LineCodec::new(), "bye")
                        .map_err(|e| e.to_string())?;
                    h.flush().await.map_err(|e| e.to_string())?;
                } else {
                    let mut conn = QueuedFramed::builder().tls(pki::localhost_on(b)).build(s);
                    conn.write(LineCodec::new(), "over tls 1")
                        .await
                        .map_err(|e| e.to_string())?;
                    conn.stoptls().await.map_err(|e| e.to_string())?;
                    if conn.is_tls() || conn.peer_certificate().is_some() {
                        return Err("still TLS after stop".into());
                    }
                    let l = conn
                        .read(LineCodec::new())
                        .await
                        .map_err(|e| e.to_string())?;
                    if l.line() != b"plain from peer" {
                        return Err(format!("plain: {:?}", l));
                    }
                    conn.starttls(pki::localhost_on(b))
                        .await
                        .map_err(|e| e.to_string())?;
                    let l = conn
                        .read(LineCodec::new())
                        .await
                        .map_err(|e| e.to_string())?;
                    if l.line() != b"over tls 2" || !conn.is_tls() {
                        return Err(format!("tls2: {:?}", l));
                    }
                    conn.write(LineCodec::new(), "bye")
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok(())
            }
            .await;
            let p = bounded(5, peer).await;
            let p_ok = matches!(&p, Some(Ok(Ok(v))) if v == b"bye");
            if r.is_err() || !p_ok {
                failed.push(format!("{b:?} spawned={spawned}: ours={r:?} peer={p:?}"));
            }
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

// ----- more panics around a switch ---------------------------------------------------------

/// "User code is untrusted": an `on_drain` hook that panics when the
/// plaintext queued before a STARTTLS drains (it runs right before the
/// switch). The connection fails with `Panicked`, the switch's ticket
/// resolves, and nothing queued behind the switch leaves in plaintext.
#[tokio::test]
async fn a_drain_hook_that_panics_right_before_the_switch() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        for spawned in [false, true] {
            let (io, _silent) = tokio::io::duplex(1 << 16);
            let (tap, writes) = support::Tap::new(io);
            let outcome = if spawned {
                let (h, driver) = QueuedFramed::builder()
                    .watermarks(32, 16)
                    .build(tap)
                    .spawn();
                h.on_drain(|_| panic!("drain hook blew up"));
                h.push_bytes(vec![b'p'; 64]).unwrap();
                let t = h.starttls(pki::client_on(b));
                h.push_bytes(&b"SECRET\n"[..]).unwrap();
                let r = bounded(3, t).await;
                let d = bounded(3, std::panic::AssertUnwindSafe(driver).catch_unwind()).await;
                format!("switch={r:?} driver_panicked={:?}", d.map(|r| r.is_err()))
            } else {
                let mut conn = QueuedFramed::builder().watermarks(32, 16).build(tap);
                conn.on_drain(|_| panic!("drain hook blew up"));
                conn.push_bytes(vec![b'p'; 64]).unwrap();
                let t = conn.push_starttls(pki::client_on(b));
                conn.push_bytes(&b"SECRET\n"[..]).unwrap();
                let r = bounded(3, std::panic::AssertUnwindSafe(conn.wait(t)).catch_unwind()).await;
                let again =
                    bounded(2, std::panic::AssertUnwindSafe(conn.flush()).catch_unwind()).await;
                format!(
                    "wait={:?} flush={again:?} closed={} error={:?}",
                    r.map(|r| r.map_err(|_| "panicked")),
                    conn.is_closed(),
                    conn.error()
                )
            };
            let leaked = contains(&support::written(&writes), b"SECRET");
            if leaked || outcome.contains("switch=None") || outcome.contains("flush=None") {
                failed.push(format!(
                    "{b:?} spawned={spawned}: {outcome} leaked={leaked}"
                ));
            }
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// "User code is untrusted": an `on_timeout` hook that panics during a
/// stalled handshake. Every waiter resolves (`Panicked`), nothing queued
/// behind the switch leaks, the spawned driver ends (with the panic).
#[tokio::test]
async fn a_timeout_hook_that_panics_during_a_handshake() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        for spawned in [false, true] {
            let (io, _silent) = tokio::io::duplex(1 << 16);
            let (tap, writes) = support::Tap::new(io);
            let outcome = if spawned {
                let (h, driver) = QueuedFramed::builder()
                    .rtimeout(Duration::from_millis(100))
                    .build(tap)
                    .spawn();
                h.on_timeout(|_, _| panic!("timeout hook blew up"));
                let t = h.starttls(pki::client_on(b));
                h.push_bytes(&b"SECRET\n"[..]).unwrap();
                let rd = h.push_read(LineCodec::new());
                let r = bounded(3, t).await;
                let r2 = bounded(3, rd).await;
                let d = bounded(3, std::panic::AssertUnwindSafe(driver).catch_unwind()).await;
                let ok = matches!(&r, Some(Err(e)) if e.is_panic())
                    && matches!(&r2, Some(Err(e)) if e.is_panic())
                    && matches!(&d, Some(Err(_)));
                (
                    ok,
                    format!(
                        "switch={r:?} read={r2:?} driver={:?}",
                        d.map(|r| r.is_err())
                    ),
                )
            } else {
                let mut conn = QueuedFramed::builder()
                    .rtimeout(Duration::from_millis(100))
                    .build(tap);
                conn.on_timeout(|_, _| panic!("timeout hook blew up"));
                let t = conn.push_starttls(pki::client_on(b));
                conn.push_bytes(&b"SECRET\n"[..]).unwrap();
                let r = bounded(3, std::panic::AssertUnwindSafe(conn.wait(t)).catch_unwind()).await;
                let again = bounded(2, conn.flush()).await;
                let ok =
                    matches!(&r, Some(Err(_))) && matches!(&again, Some(Err(e)) if e.is_panic());
                (
                    ok,
                    format!("wait={:?} flush={again:?}", r.map(|r| r.is_err())),
                )
            };
            let leaked = contains(&support::written(&writes), b"SECRET");
            if leaked || !outcome.0 {
                failed.push(format!(
                    "{b:?} spawned={spawned}: {} leaked={leaked}",
                    outcome.1
                ));
            }
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

// ----- the driver's parts after a failed STARTTLS -------------------------------------------

/// "Nothing is lost" (into_parts and "the driver's result [...] after a
/// fatal error too") with TLS-4 ("we never [...] send later writes
/// unencrypted"): after a STARTTLS that failed (the peer answered with
/// garbage), the driver's `Parts` hand back the output queued behind the
/// switch apart, never as ordinary unwritten plaintext.
#[tokio::test]
async fn driver_parts_after_a_failed_starttls_keep_tls_output_apart() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let (io, mut peer) = tokio::io::duplex(1 << 16);
        let p = tokio::spawn(async move {
            let mut buf = [0u8; 5];
            let _ = peer.read_exact(&mut buf).await;
            let _ = peer.write_all(b"454 TLS not available\r\n").await;
            tokio::time::sleep(Duration::from_secs(3)).await;
        });
        let (h, driver) = QueuedFramed::new(io).spawn();
        let t = h.starttls(pki::client_on(b));
        h.push_bytes(&b"AUTH PLAIN SECRET\n"[..]).unwrap();
        let r = bounded(3, t).await;
        drop(h);
        let parts = bounded(3, driver).await;
        match parts {
            Some(Ok(parts)) if contains(&parts.write_buf, b"SECRET") => failed.push(format!(
                "{b:?}: switch={r:?}; parts.write_buf={:?}",
                String::from_utf8_lossy(&parts.write_buf)
            )),
            _ => {}
        }
        p.abort();
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

// ----- stop in both directions at once -------------------------------------------------------

/// TLS-6: both ends stoptls at the same moment (close_notify alerts cross),
/// then plaintext both ways, on both front ends.
#[tokio::test]
async fn crossing_stoptls_then_plaintext() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        for spawned in [false, true] {
            let (c, s) = tokio::io::duplex(1 << 16);
            let peer = tokio::spawn(async move {
                let mut p = QueuedFramed::builder().tls(pki::client_on(b)).build(c);
                p.flush().await?;
                p.stoptls().await?;
                p.write(LineCodec::new(), "plain from client").await?;
                let l = p.read(LineCodec::new()).await?;
                Ok::<_, anyframe::Error>(l.line().to_vec())
            });
            let r = async {
                if spawned {
                    let (h, _d) = QueuedFramed::builder()
                        .tls(pki::localhost_on(b))
                        .build(s)
                        .spawn();
                    h.flush().await?;
                    h.stoptls().await?;
                    h.push_write(LineCodec::new(), "plain from server")?;
                    let l = h.read(LineCodec::new()).await?;
                    h.flush().await?;
                    Ok(l.line().to_vec())
                } else {
                    let mut conn = QueuedFramed::builder().tls(pki::localhost_on(b)).build(s);
                    conn.flush().await?;
                    conn.stoptls().await?;
                    conn.write(LineCodec::new(), "plain from server").await?;
                    let l = conn.read(LineCodec::new()).await?;
                    Ok::<_, anyframe::Error>(l.line().to_vec())
                }
            };
            let r = bounded(5, r).await;
            let p = bounded(5, peer).await;
            let ok = matches!(&r, Some(Ok(v)) if v == b"plain from client")
                && matches!(&p, Some(Ok(Ok(v))) if v == b"plain from server");
            if !ok {
                failed.push(format!("{b:?} spawned={spawned}: ours={r:?} peer={p:?}"));
            }
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// Cancellation of the switch's own future (inline): a `starttls()` given
/// up by a `timeout` mid-handshake leaves the switch queued; the next read
/// finishes the handshake and reads over TLS.
#[tokio::test]
async fn a_given_up_inline_starttls_goes_on_with_the_next_read() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let (c, s) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut conn = QueuedFramed::builder().tls(pki::localhost_on(b)).build(s);
            conn.write(LineCodec::new(), "over tls").await?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            Ok::<_, anyframe::Error>(())
        });
        let mut conn = QueuedFramed::new(c);
        let first =
            tokio::time::timeout(Duration::from_millis(50), conn.starttls(pki::client_on(b))).await;
        let l = bounded(5, conn.read(LineCodec::new())).await;
        let got = l.map(|r| r.map(|l| l.line().to_vec()));
        if first.is_ok() || !matches!(&got, Some(Ok(v)) if v == b"over tls") || !conn.is_tls() {
            failed.push(format!(
                "{b:?}: first={first:?} read={got:?} is_tls={}",
                conn.is_tls()
            ));
        }
        server.abort();
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// TLS-5/TLS-8: the peer ends with close_notify and a TCP FIN
/// (push_shutdown). Our read sees a clean end; our stoptls afterwards
/// reopens the input, which then ends cleanly again (no EPROTO, no hang);
/// the peer certificate is gone.
#[tokio::test]
async fn peer_shutdown_then_our_stoptls_then_a_clean_end() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        for spawned in [false, true] {
            let (c, s) = tokio::io::duplex(1 << 16);
            let peer = tokio::spawn(async move {
                let mut p = QueuedFramed::builder().tls(pki::localhost_on(b)).build(s);
                p.push_write(LineCodec::new(), "last")?;
                p.shutdown_write().await?;
                // Keep reading so our close_notify is taken.
                let _ = p.read(anyframe::OrEof::new(LineCodec::new())).await;
                tokio::time::sleep(Duration::from_secs(2)).await;
                Ok::<_, anyframe::Error>(())
            });
            let r = async {
                if spawned {
                    let (h, _d) = QueuedFramed::builder()
                        .tls(pki::client_on(b))
                        .build(c)
                        .spawn();
                    let l = h.read(LineCodec::new()).await?;
                    let end = h.read(anyframe::OrEof::new(LineCodec::new())).await?;
                    let cert = h.peer_certificate().is_some();
                    h.stoptls().await?;
                    let end2 = h.read(anyframe::OrEof::new(LineCodec::new())).await?;
                    Ok(format!(
                        "{:?} {:?} {} {:?} {}",
                        l.line(),
                        end.is_none(),
                        cert,
                        end2.is_none(),
                        h.peer_certificate().is_some()
                    ))
                } else {
                    let mut conn = QueuedFramed::builder().tls(pki::client_on(b)).build(c);
                    let l = conn.read(LineCodec::new()).await?;
                    let end = conn.read(anyframe::OrEof::new(LineCodec::new())).await?;
                    let cert = conn.peer_certificate().is_some();
                    conn.stoptls().await?;
                    let end2 = conn.read(anyframe::OrEof::new(LineCodec::new())).await?;
                    Ok::<_, anyframe::Error>(format!(
                        "{:?} {:?} {} {:?} {}",
                        l.line(),
                        end.is_none(),
                        cert,
                        end2.is_none(),
                        conn.peer_certificate().is_some()
                    ))
                }
            };
            let r = bounded(5, r).await;
            let want = format!("{:?} true true true false", b"last");
            if !matches!(&r, Some(Ok(s)) if *s == want) {
                failed.push(format!("{b:?} spawned={spawned}: {r:?}"));
            }
            peer.abort();
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

// ----- Builder::tls while connecting ------------------------------------------------------------

/// OPT-2 ("Ended while still connecting (destroy, ...), the connection
/// ends at once: the connect is dropped, no connection opens later [...];
/// only output queued with a linger period set (LC-3) waits for the
/// connect and is written then") with LC-3 ("Output that waits behind a
/// TLS switch [...] after destroy it is not [written] (the switch fails
/// with the rest)"). `Builder::tls` + `spawn_connect`, a line queued (it
/// waits behind the TLS switch), then `destroy` while the connect is in
/// progress: the output can never be written, so the driver ends at once
/// and no connection opens after the destroy.
#[tokio::test]
async fn destroy_while_connecting_with_builder_tls_opens_no_connection_later() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let st = stalled_listener();
        let (h, d) = QueuedFramed::builder()
            .tls(pki::client_on(b))
            .spawn_connect(st.addr);
        h.push_write(LineCodec::new(), "SECRET").unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        h.destroy();
        let t0 = tokio::time::Instant::now();
        let mut d = d;
        let driver_ended_at_once = bounded(1, &mut d).await.is_some();
        let waited = t0.elapsed();
        // Free the accept queue: a connect still in progress gets through
        // with its next SYN retransmit (about 1 s later).
        let std_listener: std::net::TcpListener = st.listener.into();
        std_listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
        let (filler, _) = bounded(3, listener.accept()).await.unwrap().unwrap();
        drop(filler);
        drop(st.filler);
        let late = tokio::time::timeout(Duration::from_secs(4), listener.accept()).await;
        let mut got = Vec::new();
        if let Ok(Ok((mut s, _))) = late {
            let _ = bounded(2, s.read_to_end(&mut got)).await;
            failed.push(format!(
                "{b:?}: a connection destroyed while connecting was opened anyway \
                 (driver ended within 1 s of the destroy: {driver_ended_at_once}, \
                 waited {waited:?}; the connection carried {} bytes)",
                got.len()
            ));
        } else if !driver_ended_at_once {
            failed.push(format!(
                "{b:?}: the driver did not end at once after destroy"
            ));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

// ----- a KeyUpdate between our close_notify and the peer's -------------------------------------

/// TLS-6 / `poll_stop_tls` ("Reads stay TLS until the peer's close_notify
/// [...]; application data that arrives before it is still delivered"):
/// after our stoptls, a tokio-rustls peer asks for a key update
/// (KeyUpdate with update_requested), sends a line over TLS, then its
/// close_notify and plaintext. We read the TLS line, then the plaintext;
/// no panic (rustls must not be made to send after our close_notify) and
/// no EPROTO. (rustls backend only: the native-tls server speaks TLS 1.2.)
#[cfg(feature = "rustls")]
#[tokio::test]
async fn a_key_update_after_our_close_notify() {
    use tokio_rustls::rustls;
    let mut failed = Vec::new();
    // KeyUpdate is TLS 1.3 only; the native-tls server here speaks 1.2.
    for &b in pki::BACKENDS.iter().filter(|b| **b == TlsBackend::Rustls) {
        for spawned in [false, true] {
            let (c, s) = tokio::io::duplex(1 << 16);
            let peer = tokio::spawn(async move {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(pki::pki().ca_der.clone().into()).unwrap();
                let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
                let conn = tokio_rustls::TlsConnector::from(Arc::new(cfg));
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let mut tls = conn.connect(name, c).await?;
                let mut hi = [0u8; 3];
                tls.read_exact(&mut hi).await?;
                // Our close_notify: a clean end of TLS input.
                let mut rest = Vec::new();
                tls.read_to_end(&mut rest).await?;
                tls.get_mut()
                    .1
                    .refresh_traffic_keys()
                    .map_err(std::io::Error::other)?;
                tls.write_all(b"late\n").await?;
                tls.flush().await?;
                tls.get_mut().1.send_close_notify();
                tls.flush().await?;
                let (io, _) = tls.get_mut();
                io.write_all(b"plain\n").await?;
                tokio::time::sleep(Duration::from_secs(3)).await;
                Ok::<_, std::io::Error>(())
            });
            let r = async {
                if spawned {
                    let (h, _d) = QueuedFramed::builder()
                        .tls(pki::localhost_on(b))
                        .build(s)
                        .spawn();
                    h.push_bytes(&b"hi\n"[..])?;
                    h.flush().await?;
                    h.stoptls().await?;
                    let a = h.read(LineCodec::new()).await?;
                    let p = h.read(LineCodec::new()).await?;
                    Ok::<_, anyframe::Error>((a.line().to_vec(), p.line().to_vec()))
                } else {
                    let mut conn = QueuedFramed::builder().tls(pki::localhost_on(b)).build(s);
                    conn.push_bytes(&b"hi\n"[..])?;
                    conn.flush().await?;
                    conn.stoptls().await?;
                    let a = conn.read(LineCodec::new()).await?;
                    let p = conn.read(LineCodec::new()).await?;
                    Ok((a.line().to_vec(), p.line().to_vec()))
                }
            };
            let r = bounded(5, std::panic::AssertUnwindSafe(r).catch_unwind()).await;
            let ok = matches!(&r, Some(Ok(Ok((a, p)))) if a == b"late" && p == b"plain");
            if !ok {
                let shown = match &r {
                    None => "hung".to_string(),
                    Some(Err(p)) => format!(
                        "panicked: {:?}",
                        p.downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    ),
                    Some(Ok(x)) => format!("{x:?}"),
                };
                failed.push(format!(
                    "{b:?} spawned={spawned}: {shown}; peer={:?}",
                    bounded(1, peer).await
                ));
            } else {
                peer.abort();
            }
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}
