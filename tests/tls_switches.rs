//! TLS switches at their edges: switches queued from completions (a read
//! unshifted after one, output behind a failing one), the read timeout's
//! TO-6 close with a switch at the head, linger with a handshake pending,
//! `tls_autostart` with slow, short or cut-off clients, and detach while a
//! switch is pending.
#![cfg(any(feature = "tls", feature = "rustls"))]

mod support;

#[path = "support/pki.rs"]
mod pki;

use std::time::Duration;

use anyframe::QueuedFramed;
use anyframe::codecs::LineCodec;
use anyframe::tls::TlsBackend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::within;

// ----- TO-6 with a TLS switch at the head -------------------------------------

/// A spawned connection with a 100 ms read timeout whose peer never sends
/// anything (and the peer's end, to keep it open).
fn silent_peer_with_rtimeout() -> (anyframe::Handle, tokio::io::DuplexStream) {
    let (ours, silent_peer) = tokio::io::duplex(1 << 16);
    let (h, _driver) = QueuedFramed::builder()
        .rtimeout(Duration::from_millis(100))
        .build(ours)
        .spawn();
    (h, silent_peer)
}

/// After 50 read-timeout periods, whether TO-6 closed `h` (fatal
/// `ETIMEDOUT`); the failure text if not.
async fn to6_closed(h: &anyframe::Handle, what: String) -> Result<(), String> {
    tokio::time::sleep(Duration::from_secs(5)).await;
    match h.error() {
        Some(e) if e.is_timeout() && e.is_fatal() => Ok(()),
        other => Err(format!("{what}: closed={} error={other:?}", h.is_closed())),
    }
}

/// TO-6: "On a spawned connection, when an idle or read timeout expires
/// with no hook, nobody waiting at all, and a read still queued whose
/// caller was already told a timeout or gave up [...] The connection then
/// closes with a fatal ETIMEDOUT". Here the read still owed (a `call`
/// whose caller gave up) waits behind a STARTTLS whose peer never answers
/// the ClientHello, and whose caller gave up too: the connection closes
/// as it does with no switch in front.
#[tokio::test(start_paused = true)]
async fn to6_an_owed_call_behind_a_stalled_starttls_closes_the_connection() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let (h, _peer) = silent_peer_with_rtimeout();
        drop(h.starttls(pki::client_on(b)));
        drop(h.call(LineCodec::new(), "q", LineCodec::new()));
        if let Err(e) = to6_closed(&h, format!("{b:?}: a call owed behind a STARTTLS")).await {
            failed.push(e);
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// Control: the same without the switch closes (TO-6 as documented).
#[tokio::test(start_paused = true)]
async fn to6_control_an_owed_call_alone_closes_the_connection() {
    let (h, _peer) = silent_peer_with_rtimeout();
    drop(h.call(LineCodec::new(), "q", LineCodec::new()));
    to6_closed(&h, "a call owed".into()).await.unwrap();
}

/// The same, with both callers told the timeout instead of giving up: the
/// switch's waiter hears the first expiry, the call the second; after that
/// nobody waits and the call is still owed.
#[tokio::test(start_paused = true)]
async fn to6_told_callers_behind_a_stalled_starttls_close_the_connection() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let (h, _peer) = silent_peer_with_rtimeout();
        let tls = h.starttls(pki::client_on(b));
        let call = h.call(LineCodec::new(), "q", LineCodec::new());
        let e = within("switch", tls).await.unwrap_err();
        assert!(e.is_timeout() && !e.is_fatal(), "{b:?}: {e:?}");
        let e = within("call", call).await.unwrap_err();
        assert!(e.is_timeout() && !e.is_fatal(), "{b:?}: {e:?}");
        if let Err(e) = to6_closed(&h, format!("{b:?}: told callers")).await {
            failed.push(e);
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

// ----- a read unshifted after a completion's starttls -------------------------

/// TLS-2: "Called from a completion or hook (Requests::starttls), it goes
/// to the front and runs next. [...] When the switch reaches the head, the
/// bytes in the read buffer are handed to the TLS engine [...] and are
/// never delivered as plaintext." `Requests::starttls`'s docs: "No request
/// runs until the handshake is done." A completion that reads `STARTTLS`,
/// starts TLS and then unshifts the read of the next command: that read
/// runs after the switch, so a command injected behind STARTTLS in the
/// same write (CVE-2011-0411's shape) goes to the TLS engine, which fails
/// on it, and never to the read as if it came over TLS.
#[tokio::test]
async fn a_read_unshifted_after_a_completions_starttls_never_gets_plaintext() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let (io, mut peer) = tokio::io::duplex(1 << 16);
        peer.write_all(b"STARTTLS\nRCPT TO:<injected@example.org>\n")
            .await
            .unwrap();
        let mut conn = QueuedFramed::new(io);
        let tls = pki::localhost_on(b);
        let upgrade = conn.push_read_with(LineCodec::new(), move |cmd, q| {
            q.push_write(LineCodec::new(), "220 ready")?;
            let handshake = q.starttls(tls);
            let next = q.unshift_read(LineCodec::new());
            Ok((cmd.into_line(), handshake, next))
        });
        let (cmd, _handshake, next) = within("upgrade", conn.wait(upgrade)).await.unwrap();
        assert_eq!(cmd, "STARTTLS");
        let got = within("next", conn.wait(next)).await;
        if let Ok(l) = got {
            failed.push(format!(
                "{b:?}: the command injected behind STARTTLS was delivered as plaintext: {:?}",
                String::from_utf8_lossy(l.line())
            ));
        }
        drop(peer);
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

// ----- LC-3 linger with a switch pending ----------------------------------------

/// A TLS server on `s` (inline) that reads one line, or the error.
fn line_server(
    b: TlsBackend,
    s: tokio::io::DuplexStream,
) -> tokio::task::JoinHandle<anyframe::Result<String>> {
    tokio::spawn(async move {
        let mut conn = QueuedFramed::builder().tls(pki::localhost_on(b)).build(s);
        let l = conn.read(LineCodec::new()).await?;
        Ok(String::from_utf8_lossy(l.line()).into_owned())
    })
}

/// LC-3: "When the last Handle of a spawned connection is dropped [...]
/// with output still queued, the driver keeps writing that output for up
/// to linger". OPT-18: `Builder::tls` starts TLS "before any queued read or
/// write". A spawned TLS client that queues one line and drops its handle
/// (fire and forget) while the handshake is still running: the driver
/// finishes the handshake, and the line arrives over TLS.
#[tokio::test]
async fn lc3_output_queued_behind_builder_tls_lingers_after_the_last_handle_goes() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let (c, s) = tokio::io::duplex(1 << 16);
        let server = line_server(b, s);
        let (h, driver) = QueuedFramed::builder()
            .tls(pki::client_on(b))
            .build(c)
            .spawn();
        h.push_write(LineCodec::new(), "bye").unwrap();
        drop(h);
        let got = within("server", server).await.unwrap();
        let _ = within("driver", driver).await;
        if got.as_ref().ok().map(String::as_str) != Some("bye") {
            failed.push(format!(
                "{b:?}: the line queued before the last handle went was lost; server: {got:?}"
            ));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// Control: the same once the handshake is done delivers the line.
#[tokio::test]
async fn lc3_control_output_lingers_once_tls_is_up() {
    for &b in pki::BACKENDS {
        let (c, s) = tokio::io::duplex(1 << 16);
        let server = line_server(b, s);
        let (h, driver) = QueuedFramed::builder()
            .tls(pki::client_on(b))
            .build(c)
            .spawn();
        within("handshake", h.flush()).await.unwrap();
        h.push_write(LineCodec::new(), "bye").unwrap();
        drop(h);
        let got = within("server", server).await.unwrap();
        let _ = within("driver", driver).await;
        assert_eq!(got.unwrap(), "bye", "{b:?}");
    }
}

// ----- tls_autostart ---------------------------------------------------------------

/// RT-tlsauto + TO-1 ("over TLS, the bytes of a handshake [...] count"): a
/// TLS client whose bytes arrive one at a time every 60 ms never leaves the
/// server 100 ms without a read, so neither the detection nor the
/// handshake is told a read timeout; inline and spawned.
#[tokio::test(start_paused = true)]
async fn autostart_with_a_one_byte_at_a_time_client_under_rtimeout() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        for spawned in [false, true] {
            let (c, s) = support::slow_link(
                (1, Duration::from_millis(60)),
                (1 << 16, Duration::ZERO),
                1 << 16,
            );
            let client = tokio::spawn(async move {
                let mut conn = QueuedFramed::builder().tls(pki::client_on(b)).build(c);
                conn.write(LineCodec::new(), "hello").await?;
                conn.read(LineCodec::new()).await
            });
            let server = async move {
                if spawned {
                    let (h, _d) = QueuedFramed::builder()
                        .rtimeout(Duration::from_millis(100))
                        .build(s)
                        .spawn();
                    let v = h.push_tls_autostart(pki::localhost_on(b));
                    let line = h.push_read(LineCodec::new());
                    let v = v.await?;
                    let line = line.await?;
                    h.push_write(LineCodec::new(), line.line())?;
                    h.flush().await?;
                    Ok::<_, anyframe::Error>(v.is_tls())
                } else {
                    let mut conn = QueuedFramed::builder()
                        .rtimeout(Duration::from_millis(100))
                        .build(s);
                    let v = conn.tls_autostart(pki::localhost_on(b)).await?;
                    let line = conn.read(LineCodec::new()).await?;
                    conn.write(LineCodec::new(), line.line()).await?;
                    Ok(v.is_tls())
                }
            };
            let r = tokio::time::timeout(Duration::from_secs(600), server).await;
            match r {
                Ok(Ok(true)) => {
                    let echo = within("client", client).await.unwrap();
                    if echo.as_ref().map(|l| l.line().to_vec()).ok() != Some(b"hello".to_vec()) {
                        failed.push(format!("{b:?} spawned={spawned}: client got {echo:?}"));
                    }
                }
                other => failed.push(format!("{b:?} spawned={spawned}: server {other:?}")),
            }
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
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
    within("hello head", peer.read_exact(&mut head))
        .await
        .unwrap();
    let len = u16::from_be_bytes([head[3], head[4]]) as usize;
    let mut body = vec![0u8; len];
    within("hello body", peer.read_exact(&mut body))
        .await
        .unwrap();
    client.abort();
    [&head[..], &body[..]].concat()
}

/// RT-tlsdetect-4 / TLS-4: the input ends after `k` bytes of a real
/// ClientHello, for every `k`. Whatever the verdict, the autostart ends
/// (never hangs) with a fatal error, inline and on a Handle, and the
/// spawned driver ends.
#[tokio::test]
async fn autostart_eof_at_every_byte_of_the_client_hello_ends_with_a_fatal_error() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let hello = client_hello(b).await;
        for k in 0..hello.len() {
            for spawned in [false, true] {
                let (io, mut peer) = tokio::io::duplex(1 << 16);
                peer.write_all(&hello[..k]).await.unwrap();
                peer.shutdown().await.unwrap();
                let r = if spawned {
                    let (h, driver) = QueuedFramed::new(io).spawn();
                    let v = h.push_tls_autostart(pki::localhost_on(b));
                    let r = tokio::time::timeout(Duration::from_secs(5), v).await;
                    let closed = h.is_closed();
                    drop(h);
                    if tokio::time::timeout(Duration::from_secs(5), driver)
                        .await
                        .is_err()
                    {
                        failed.push(format!("{b:?} k={k}: driver did not end"));
                    }
                    r.map(|r| (r, closed))
                } else {
                    let mut conn = QueuedFramed::new(io);
                    let r = tokio::time::timeout(
                        Duration::from_secs(5),
                        conn.tls_autostart(pki::localhost_on(b)),
                    )
                    .await;
                    let closed = conn.is_closed();
                    r.map(|r| (r, closed))
                };
                match r {
                    Err(_) => failed.push(format!("{b:?} k={k} spawned={spawned}: hung")),
                    Ok((Ok(v), _)) => {
                        failed.push(format!("{b:?} k={k} spawned={spawned}: Ok({v:?})"))
                    }
                    Ok((Err(e), closed)) if !e.is_fatal() || !closed => failed.push(format!(
                        "{b:?} k={k} spawned={spawned}: non-fatal {e:?} closed={closed}"
                    )),
                    Ok(_) => {}
                }
            }
        }
    }
    assert!(failed.is_empty(), "{} failures: {failed:#?}", failed.len());
}

// ----- a failing switch from a completion: nothing after it in plaintext -------

/// TLS-1/TLS-4: a completion reads `STARTTLS`, queues `220`, starts TLS and
/// queues `SECRET` behind it; the peer then sends garbage, or half a
/// ClientHello and its FIN. The switch fails (fatal), and `SECRET` never
/// reaches the wire in plaintext, on a Handle (with linger) and inline.
#[tokio::test]
async fn output_from_a_completion_behind_a_failing_starttls_never_leaves_in_plaintext() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let hello = client_hello(b).await;
        let garbage: &[&[u8]] = &[
            b"\x16\x03\x01\x00\x05hello",
            b"not tls at all\r\n",
            &hello[..hello.len() / 2],
        ];
        for (i, tail) in garbage.iter().enumerate() {
            for spawned in [false, true] {
                let (io, mut peer) = tokio::io::duplex(1 << 16);
                let (tap, writes) = support::Tap::new(io);
                let tls = pki::localhost_on(b);
                let body = move |cmd: anyframe::codecs::Line, q: &mut anyframe::Requests<'_>| {
                    q.push_write(LineCodec::new(), "220 ready")?;
                    let hs = q.starttls(tls);
                    q.push_write(LineCodec::new(), "SECRET")?;
                    Ok((cmd.into_line(), hs))
                };
                peer.write_all(b"STARTTLS\n").await.unwrap();
                peer.write_all(tail).await.unwrap();
                if i == 2 {
                    peer.shutdown().await.unwrap();
                }
                let outcome = if spawned {
                    let (h, driver) = QueuedFramed::new(tap).spawn();
                    let t = h.push_read_with(LineCodec::new(), body);
                    let (_, hs) = within("cmd", t).await.unwrap();
                    let r = tokio::time::timeout(Duration::from_secs(5), hs).await;
                    drop(h);
                    let _ = tokio::time::timeout(Duration::from_secs(5), driver).await;
                    r
                } else {
                    let mut conn = QueuedFramed::new(tap);
                    let t = conn.push_read_with(LineCodec::new(), body);
                    let (_, hs) = within("cmd", conn.wait(t)).await.unwrap();
                    let r = tokio::time::timeout(Duration::from_secs(5), conn.wait(hs)).await;
                    let _ = conn.flush().await;
                    drop(conn);
                    r
                };
                let wire = support::written(&writes);
                let leaked = wire.windows(6).any(|w| w == b"SECRET");
                match outcome {
                    Ok(Err(e)) if e.is_fatal() && !leaked => {}
                    other => failed.push(format!(
                        "{b:?} case {i} spawned={spawned}: {other:?}, leaked={leaked}"
                    )),
                }
                drop(peer);
            }
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

// ----- detach / into_parts with a switch pending -------------------------------

/// "Nothing is lost": detaching while a STARTTLS handshake waits for a
/// silent peer gives back the output queued behind it, and every ticket
/// resolves.
#[tokio::test]
async fn detach_while_a_starttls_is_pending_loses_nothing() {
    for &b in pki::BACKENDS {
        let (ours, _silent) = tokio::io::duplex(1 << 16);
        let (h, driver) = QueuedFramed::new(ours).spawn();
        h.push_write(LineCodec::new(), "before").unwrap();
        let tls = h.starttls(pki::client_on(b));
        h.push_write(LineCodec::new(), "after").unwrap();
        let read = h.push_read(LineCodec::new());
        tokio::time::sleep(Duration::from_millis(50)).await;
        h.detach();
        let parts = within("driver", driver).await.unwrap();
        assert!(parts.write_buf.is_empty(), "{b:?}");
        assert_eq!(&parts.after_switch[..], b"after\n", "{b:?}");
        assert!(within("switch", tls).await.is_err());
        assert!(within("read", read).await.is_err());
    }
}

/// RT-tlsdetect-4: a prefix of both patterns waits. A plaintext client that
/// sends fewer bytes than the detector needs and then waits: with a read
/// timeout the autostart gets a non-fatal ETIMEDOUT (TO-3), the bytes stay
/// buffered, and once the rest arrives a retry decides.
#[tokio::test(start_paused = true)]
async fn autostart_short_prefix_then_silence_times_out_non_fatally_and_retries() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        for spawned in [false, true] {
            let (io, mut peer) = tokio::io::duplex(1 << 16);
            peer.write_all(b"\x16\x03").await.unwrap();
            let r: Result<(), String> = async {
                if spawned {
                    let (h, _d) = QueuedFramed::builder()
                        .rtimeout(Duration::from_millis(100))
                        .build(io)
                        .spawn();
                    let e = within("first", h.push_tls_autostart(pki::localhost_on(b)))
                        .await
                        .unwrap_err();
                    if !e.is_timeout() || e.is_fatal() {
                        return Err(format!("first: {e:?}"));
                    }
                    tokio::time::sleep(Duration::from_millis(1000)).await;
                    if h.is_closed() {
                        return Err(format!("closed: {:?}", h.error()));
                    }
                    let n = h.with_read_buffer(|b| b.len());
                    if n != 2 {
                        return Err(format!("buffer {n}"));
                    }
                    peer.write_all(b"\x01\x00\x05hello").await.unwrap();
                    let v = h.push_tls_autostart(pki::localhost_on(b));
                    // The rest is not a ClientHello: the handshake fails.
                    let r = within("second", v).await;
                    if !matches!(&r, Err(e) if e.is_fatal()) {
                        return Err(format!("second: {r:?}"));
                    }
                } else {
                    let mut conn = QueuedFramed::builder()
                        .rtimeout(Duration::from_millis(100))
                        .build(io);
                    let e = within("first", conn.tls_autostart(pki::localhost_on(b)))
                        .await
                        .unwrap_err();
                    if !e.is_timeout() || e.is_fatal() {
                        return Err(format!("first: {e:?}"));
                    }
                    if conn.read_buffer().len() != 2 {
                        return Err(format!("buffer {}", conn.read_buffer().len()));
                    }
                    peer.write_all(b"\x01\x00\x05hello").await.unwrap();
                    let r = within("second", conn.tls_autostart(pki::localhost_on(b))).await;
                    if !matches!(&r, Err(e) if e.is_fatal()) {
                        return Err(format!("second: {r:?}"));
                    }
                }
                Ok(())
            }
            .await;
            if let Err(e) = r {
                failed.push(format!("{b:?} spawned={spawned}: {e}"));
            }
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// `Builder::build_from_parts` with `Builder::tls`: the restored output was
/// queued on the plaintext connection, so it goes out first, in plaintext
/// (TLS-2), and the restored input is the start of the handshake (OPT-18).
/// Held behind the handshake, a greeting the client waits for before its
/// ClientHello would never come.
#[tokio::test]
async fn parts_rebuilt_with_tls_write_their_output_first_in_plaintext() {
    for &b in pki::BACKENDS {
        let (c, s) = tokio::io::duplex(1 << 16);
        let client = tokio::spawn(async move {
            let mut conn = QueuedFramed::new(c);
            let ready = conn.read(LineCodec::new()).await?;
            assert_eq!(ready.line(), b"220 ready");
            conn.starttls(pki::client_on(b)).await?;
            conn.push_bytes(&b"hi\n"[..]).unwrap();
            conn.flush().await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<_, anyframe::Error>(())
        });
        let mut parts = anyframe::Parts::new(s, ());
        parts.write_buf.extend_from_slice(b"220 ready\n");
        let mut conn = QueuedFramed::builder()
            .tls(pki::localhost_on(b))
            .build_from_parts(parts);
        let line = within("line over TLS", conn.read(LineCodec::new())).await;
        assert_eq!(line.unwrap().line(), b"hi", "{b:?}");
        within("client", client).await.unwrap().unwrap();
    }
}
