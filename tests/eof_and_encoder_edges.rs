//! End-of-input verdicts on every read path (Stream, read_many, a Handle's
//! batches, OrEof) for a decoder that reports a truncation itself;
//! tokio-util's codec errors under retry; encoders that clear `dst`; the
//! one-timer-per-poll rule of a flush; auto-detection after stoptls.
//! (Needs a TLS backend for the last part.)
#![cfg(any(feature = "tls", feature = "rustls"))]

#[path = "support/len1.rs"]
mod len1;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use anyframe::QueuedFramed;
use bytes::{BufMut, BytesMut};
use futures::StreamExt;
use len1::Len1;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;
use tokio_util::codec::{Decoder, Encoder};

async fn t<F: Future>(what: &str, f: F) -> F::Output {
    match timeout(Duration::from_secs(5), f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// Header `5` arrives, then (after the reader has gone Pending) EOF.
async fn header_then_eof(mut peer: tokio::io::DuplexStream) {
    peer.write_all(&[5u8]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    peer.shutdown().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// Control: the Stream reports the truncation (holds).
#[tokio::test]
async fn stream_truncation_across_polls_is_an_error() {
    let (ours, peer) = tokio::io::duplex(1 << 16);
    let mut conn = QueuedFramed::with_codec(ours, Len1::default());
    let (end, ()) = t("stream", async {
        tokio::join!(conn.next(), header_then_eof(peer))
    })
    .await;
    assert!(matches!(end, Some(Err(_))), "got {end:?}");
}

/// read_many: the same input must not be a clean end (Ok(0)).
#[tokio::test]
async fn read_many_truncation_across_polls_is_not_clean_eof() {
    let (ours, peer) = tokio::io::duplex(1 << 16);
    let mut conn = QueuedFramed::new(ours);
    let mut dec = Len1::default();
    let mut frames = Vec::new();
    let (r, ()) = t("read_many", async {
        tokio::join!(
            conn.read_many(&mut dec, &mut frames, 4),
            header_then_eof(peer)
        )
    })
    .await;
    assert!(
        r.is_err(),
        "decoder reported a truncated frame; read_many said {r:?} (Stream says Err)"
    );
}

/// Handle::read_many: the same input must not be an empty (clean) batch.
#[tokio::test]
async fn handle_read_many_truncation_across_polls_is_not_clean_eof() {
    let (ours, peer) = tokio::io::duplex(1 << 16);
    let (h, driver) = QueuedFramed::new(ours).spawn();
    tokio::spawn(driver);
    let (r, ()) = t("handle read_many", async {
        tokio::join!(h.read_many(Len1::default(), 4), header_then_eof(peer))
    })
    .await;
    let r = r.map(|(_, v)| v.len());
    assert!(
        r.is_err(),
        "decoder reported a truncated frame; Handle::read_many said {r:?} (Stream says Err)"
    );
}

/// Even in one poll (all input buffered): Handle::read_many's batch treats
/// the codec's own EOF error with an empty buffer as a clean end.
#[tokio::test]
async fn handle_read_many_truncation_buffered_is_not_clean_eof() {
    let (ours, mut peer) = tokio::io::duplex(1 << 16);
    peer.write_all(&[5u8]).await.unwrap();
    peer.shutdown().await.unwrap();
    let (h, driver) = QueuedFramed::new(ours).spawn();
    tokio::spawn(driver);
    let r = t("handle read_many", h.read_many(Len1::default(), 4))
        .await
        .map(|(_, v)| v.len());
    assert!(r.is_err(), "Handle::read_many said {r:?} (Stream says Err)");
}

/// A tokio LinesCodec over-long line is now non-fatal: a caller that goes
/// on reading (fresh codec per read, as `read` takes it by value) must make
/// progress, not get the same error forever on the same bytes.
#[tokio::test]
async fn lines_codec_long_line_read_makes_progress() {
    use tokio_util::codec::LinesCodec;
    let (ours, mut peer) = tokio::io::duplex(1 << 16);
    peer.write_all(b"waytoolongline\nok\n").await.unwrap();
    let mut conn = QueuedFramed::new(ours);
    let mut errors = 0;
    for _ in 0..5 {
        match t("read", conn.read(LinesCodec::new_with_max_length(4))).await {
            Ok(line) => {
                assert_eq!(line, "ok");
                return;
            }
            Err(e) if e.is_fatal() => return, // closed: no loop either
            Err(_) => errors += 1,
        }
    }
    panic!(
        "{errors} identical non-fatal errors, buffer still {:?}: a retry loop spins forever",
        String::from_utf8_lossy(conn.read_buffer())
    );
}

/// Same through a Handle.
#[tokio::test]
async fn handle_lines_codec_long_line_read_makes_progress() {
    use tokio_util::codec::LinesCodec;
    let (ours, mut peer) = tokio::io::duplex(1 << 16);
    peer.write_all(b"waytoolongline\nok\n").await.unwrap();
    let (h, driver) = QueuedFramed::new(ours).spawn();
    tokio::spawn(driver);
    let mut errors = 0;
    for _ in 0..5 {
        match t("read", h.read(LinesCodec::new_with_max_length(4))).await {
            Ok(line) => {
                assert_eq!(line, "ok");
                return;
            }
            Err(e) if e.is_fatal() => return,
            Err(_) => errors += 1,
        }
    }
    panic!("{errors} identical non-fatal errors: a retry loop spins forever");
}

/// Clears dst, then writes its item.
struct ClearEnc;
impl Encoder<&'static [u8]> for ClearEnc {
    type Error = io::Error;
    fn encode(&mut self, item: &'static [u8], dst: &mut BytesMut) -> io::Result<()> {
        dst.clear();
        dst.put_slice(item);
        Ok(())
    }
}

/// Clears dst, then fails.
struct ClearErr;
impl Encoder<&'static [u8]> for ClearErr {
    type Error = io::Error;
    fn encode(&mut self, _item: &'static [u8], dst: &mut BytesMut) -> io::Result<()> {
        dst.clear();
        Err(io::Error::new(io::ErrorKind::InvalidData, "nope"))
    }
}

/// An encoder that clears dst and then returns an error: rollback cannot
/// restore, the queue's count says 8 bytes that are gone. The next flush
/// must not hang/spin/panic, and no error is not an acceptable answer when
/// the accepted bytes never reach the peer.
#[tokio::test]
async fn encoder_clearing_dst_then_failing_keeps_queue_consistent() {
    let (ours, mut peer) = tokio::io::duplex(1 << 16);
    let mut conn = QueuedFramed::new(ours);
    conn.push_bytes(&b"abcdefgh"[..]).unwrap();
    let r = conn.push_write(ClearErr, &b"x"[..]);
    assert!(r.is_err());
    let buffered = conn.write_buffered();
    eprintln!("after ClearErr: write_buffered={buffered}");
    let fl = timeout(Duration::from_secs(2), conn.flush()).await;
    let closed = conn.is_closed();
    eprintln!("flush={fl:?} closed={closed}");
    drop(conn);
    let mut got = Vec::new();
    let _ = timeout(Duration::from_secs(2), peer.read_to_end(&mut got)).await;
    // The loss must be reported as what it is (the encoder removed queued
    // output: push_write fatal, as on the Ok path), not as a transport
    // failure (WriteZero) from writing 8 phantom bytes.
    let push_reported = matches!(&r, Err(e) if e.is_fatal());
    assert!(
        push_reported || got == b"abcdefgh",
        "push_write={r:?} write_buffered={buffered} flush={fl:?} closed={closed} peer got {:?}",
        String::from_utf8_lossy(&got)
    );
}

/// An encoder that removed output queued before its item closes the
/// connection; what it still counts as queued is what it still holds.
#[tokio::test]
async fn after_an_encoder_removed_queued_output_the_count_is_what_is_held() {
    let (ours, _peer) = tokio::io::duplex(4);
    let mut conn = QueuedFramed::new(ours);
    conn.push_bytes(&b"abcdefgh"[..]).unwrap();
    let r = conn.push_write(ClearEnc, &b"xy"[..]);
    assert!(matches!(&r, Err(e) if e.is_fatal()), "{r:?}");
    let counted = conn.write_buffered();
    let parts = conn.into_parts();
    assert_eq!(&parts.write_buf[..], b"xy");
    assert_eq!(counted, 2, "a count of bytes the queue no longer holds");
}

/// Counts polls of the inner future.
struct Counted<F> {
    f: Pin<Box<F>>,
    n: Arc<AtomicUsize>,
}
impl<F: Future> Future for Counted<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.n.fetch_add(1, Ordering::Relaxed);
        self.f.as_mut().poll(cx)
    }
}

/// A flush to a peer that takes nothing, with an on_timeout hook on a 5 ms
/// period: one poll per expiry (plus the self-wake), not a spin.
#[tokio::test]
async fn flush_with_hook_does_not_spin_across_polls() {
    let (ours, _peer) = tokio::io::duplex(4);
    let mut conn = QueuedFramed::new(ours);
    conn.set_timeout(Duration::from_millis(5));
    let hooks = Arc::new(AtomicUsize::new(0));
    let h2 = hooks.clone();
    conn.on_timeout(move |_, _| {
        h2.fetch_add(1, Ordering::Relaxed);
    });
    conn.push_bytes(vec![b'x'; 256]).unwrap();
    let n = Arc::new(AtomicUsize::new(0));
    let fut = Counted {
        f: Box::pin(conn.flush()),
        n: n.clone(),
    };
    let _ = timeout(Duration::from_millis(300), fut).await;
    let polls = n.load(Ordering::Relaxed);
    let hooks = hooks.load(Ordering::Relaxed);
    eprintln!("polls={polls} hooks={hooks}");
    assert!(
        polls < 400,
        "flush spun: {polls} polls, {hooks} hooks in 300 ms"
    );
}

/// A flush with only a read timeout set (no reads, no hook): the read
/// timeout is not the flush's; the flush must not spin polling it.
#[tokio::test]
async fn flush_with_read_timeout_only_does_not_spin() {
    let (ours, _peer) = tokio::io::duplex(4);
    let mut conn = QueuedFramed::new(ours);
    conn.set_rtimeout(Duration::from_millis(5));
    conn.push_bytes(vec![b'x'; 256]).unwrap();
    let n = Arc::new(AtomicUsize::new(0));
    let fut = Counted {
        f: Box::pin(conn.flush()),
        n: n.clone(),
    };
    let r = timeout(Duration::from_millis(300), fut).await;
    let polls = n.load(Ordering::Relaxed);
    eprintln!("polls={polls} r={r:?}");
    assert!(polls < 400, "flush spun: {polls} polls in 300 ms");
}

/// A flush with a write timeout and no hook: the timeout error comes
/// promptly (not delayed by the guard).
#[tokio::test]
async fn flush_write_timeout_error_is_prompt() {
    let (ours, _peer) = tokio::io::duplex(4);
    let mut conn = QueuedFramed::new(ours);
    conn.set_wtimeout(Duration::from_millis(20));
    conn.push_bytes(vec![b'x'; 256]).unwrap();
    let start = tokio::time::Instant::now();
    let r = t("flush", conn.flush()).await;
    let el = start.elapsed();
    assert!(r.is_err(), "{r:?}");
    assert!(el < Duration::from_millis(500), "took {el:?}");
}

// ----- TLS ---------------------------------------------------------------------------

#[path = "support/pki.rs"]
mod pki;

/// Client: starttls, one line over TLS, stoptls, one plaintext line.
fn tls_then_plain_client(
    b: anyframe::tls::TlsBackend,
    c: tokio::io::DuplexStream,
) -> tokio::task::JoinHandle<anyframe::Result<()>> {
    use anyframe::codecs::LineCodec;
    tokio::spawn(async move {
        let mut conn = QueuedFramed::new(c);
        conn.starttls(pki::client_on(b)).await?;
        conn.write(LineCodec::new(), "secret").await?;
        conn.stoptls().await?;
        conn.write(LineCodec::new(), "plain").await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        Ok(())
    })
}

/// After stoptls, TLS is off: a new autostart must detect again (plain
/// text now), inline.
#[tokio::test]
async fn autostart_after_stoptls_detects_again_inline() {
    use anyframe::codecs::LineCodec;
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let (c, s) = tokio::io::duplex(1 << 16);
        let client = tls_then_plain_client(b, c);
        let r: Result<(), String> = async {
            let mut conn = QueuedFramed::new(s);
            let v = t("auto1", conn.tls_autostart(pki::localhost_on(b))).await;
            if !matches!(&v, Ok(d) if d.is_tls()) {
                return Err(format!("first autostart {v:?}"));
            }
            let l = t("secret", conn.read(LineCodec::new()))
                .await
                .map_err(|e| e.to_string())?;
            if l.line() != b"secret" {
                return Err(format!("line {l:?}"));
            }
            t("stoptls", conn.stoptls())
                .await
                .map_err(|e| format!("stoptls {e:?}"))?;
            let v2 = t("auto2", conn.tls_autostart(pki::localhost_on(b))).await;
            if !matches!(&v2, Ok(d) if !d.is_tls()) {
                return Err(format!(
                    "second autostart after stoptls: {v2:?} is_tls={}",
                    conn.is_tls()
                ));
            }
            let l = t("plain", conn.read(LineCodec::new()))
                .await
                .map_err(|e| e.to_string())?;
            if l.line() != b"plain" {
                return Err(format!("plain line {l:?}"));
            }
            Ok(())
        }
        .await;
        if let Err(e) = r {
            failed.push(format!("{b:?}: {e}"));
        }
        client.abort();
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// Same through a spawned Handle.
#[tokio::test]
async fn autostart_after_stoptls_detects_again_handle() {
    use anyframe::codecs::LineCodec;
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let (c, s) = tokio::io::duplex(1 << 16);
        let client = tls_then_plain_client(b, c);
        let (h, d) = QueuedFramed::new(s).spawn();
        let driver = tokio::spawn(d);
        let r: Result<(), String> = async {
            let v = t("auto1", h.push_tls_autostart(pki::localhost_on(b))).await;
            if !matches!(&v, Ok(d) if d.is_tls()) {
                return Err(format!("first autostart {v:?}"));
            }
            let l = t("secret", h.read(LineCodec::new()))
                .await
                .map_err(|e| e.to_string())?;
            if l.line() != b"secret" {
                return Err(format!("line {l:?}"));
            }
            t("stoptls", h.stoptls())
                .await
                .map_err(|e| format!("stoptls {e:?}"))?;
            let v2 = t("auto2", h.push_tls_autostart(pki::localhost_on(b))).await;
            if !matches!(&v2, Ok(d) if !d.is_tls()) {
                return Err(format!(
                    "second autostart after stoptls: {v2:?} is_tls={}",
                    h.is_tls()
                ));
            }
            let l = t("plain", h.read(LineCodec::new()))
                .await
                .map_err(|e| e.to_string())?;
            if l.line() != b"plain" {
                return Err(format!("plain line {l:?}"));
            }
            Ok(())
        }
        .await;
        if let Err(e) = r {
            failed.push(format!("{b:?}: {e}"));
        }
        client.abort();
        driver.abort();
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// Output queued after a STARTTLS marker, by an encoder that clears dst
/// and writes an item at least as long as the plaintext before the
/// marker: the marker still counts 8 bytes, so the first 8 bytes of the
/// post-switch item go out in PLAINTEXT before the ClientHello.
#[tokio::test]
async fn encoder_clearing_dst_behind_starttls_marker_leaks_no_plaintext() {
    let b = pki::BACKENDS[0];
    let (c, mut peer) = tokio::io::duplex(1 << 16);
    let mut conn = QueuedFramed::new(c);
    conn.push_bytes(&b"abcdefgh"[..]).unwrap();
    let _ticket = conn.push_starttls(pki::client_on(b));
    let r = conn.push_write(ClearEnc, &b"0123456789"[..]);
    let mut got = vec![0u8; 9];
    let (_f, rd) = tokio::join!(
        timeout(Duration::from_millis(500), conn.flush()),
        timeout(Duration::from_millis(500), peer.read_exact(&mut got))
    );
    assert!(rd.is_ok(), "peer got nothing");
    assert!(
        !got.starts_with(b"01234567"),
        "push_write={r:?}; bytes meant for after the TLS switch sent in plaintext first: {:?}",
        String::from_utf8_lossy(&got)
    );
}

/// The spawned Handle's inbox path (engine busy: its lock held while a
/// decoder runs on the driver): an encoder that clears dst removes output
/// another write posted to the inbox before it. No error, bytes lost.
struct Blocking {
    locked: std::sync::mpsc::SyncSender<()>,
    done: std::sync::mpsc::Receiver<()>,
    fired: bool,
}
impl Decoder for Blocking {
    type Item = ();
    type Error = io::Error;
    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<()>> {
        if src.is_empty() {
            return Ok(None);
        }
        if !self.fired {
            self.fired = true;
            let _ = self.locked.send(());
            let _ = self.done.recv_timeout(Duration::from_secs(3));
        }
        src.clear();
        Ok(Some(()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handle_inbox_encoder_clearing_dst_is_detected() {
    let (ours, mut peer) = tokio::io::duplex(1 << 16);
    let (h, d) = QueuedFramed::new(ours).spawn();
    let driver = tokio::spawn(d);
    let (ltx, lrx) = std::sync::mpsc::sync_channel(1);
    let (dtx, drx) = std::sync::mpsc::sync_channel(1);
    let ticket = h.push_read(Blocking {
        locked: ltx,
        done: drx,
        fired: false,
    });
    let h2 = h.clone();
    let th = std::thread::spawn(move || {
        lrx.recv_timeout(Duration::from_secs(3))
            .expect("decoder ran");
        let a = h2.push_bytes(&b"abcdefgh"[..]);
        let b = h2.push_write(ClearEnc, &b"01"[..]);
        let _ = dtx.send(());
        format!("{a:?} {b:?}")
    });
    peer.write_all(b"go").await.unwrap();
    t("ticket", ticket).await.unwrap();
    let pushes = th.join().unwrap();
    let fl = t("flush", h.flush()).await;
    let mut got = vec![0u8; 64];
    let n = match timeout(Duration::from_millis(300), peer.read(&mut got)).await {
        Ok(Ok(n)) => n,
        _ => 0,
    };
    let got = String::from_utf8_lossy(&got[..n]).to_string();
    driver.abort();
    assert!(
        pushes.contains("Err") || fl.is_err() || got == "abcdefgh01",
        "pushes={pushes} flush={fl:?} peer got {got:?}"
    );
}

/// Yields everything buffered as one frame, only at end of input.
struct AtEof;
impl Decoder for AtEof {
    type Item = BytesMut;
    type Error = io::Error;
    fn decode(&mut self, _src: &mut BytesMut) -> io::Result<Option<BytesMut>> {
        Ok(None)
    }
    fn decode_eof(&mut self, src: &mut BytesMut) -> io::Result<Option<BytesMut>> {
        let n = src
            .iter()
            .position(|&b| b == b'\n')
            .map_or(src.len(), |i| i + 1);
        Ok(Some(src.split_to(n)))
    }
}

/// EOF already seen, `[5]` (a header) buffered: the Stream's first decode
/// step is decode_eof, which takes the header and reports the truncation
/// itself. Framed yields that error; the Stream must not end cleanly.
#[tokio::test]
async fn stream_truncation_when_eof_already_seen_is_an_error() {
    let (ours, mut peer) = tokio::io::duplex(1 << 16);
    peer.write_all(b"x\n\x05").await.unwrap();
    peer.shutdown().await.unwrap();
    let mut conn = QueuedFramed::with_codec(ours, Len1::default());
    let first = t("first", conn.read(AtEof)).await.unwrap();
    assert_eq!(&first[..], b"x\n");
    assert!(conn.is_eof());
    assert_eq!(conn.read_buffer(), b"\x05");
    let end = t("stream", conn.next()).await;
    assert!(
        matches!(end, Some(Err(_))),
        "Stream said {end:?}; Framed says Err(truncated frame)"
    );
}

/// OrEof over the truncating decoder: an error, not Ok(None) (holds).
#[tokio::test]
async fn or_eof_truncation_is_an_error() {
    let (ours, peer) = tokio::io::duplex(1 << 16);
    let mut conn = QueuedFramed::new(ours);
    let (r, ()) = t("oreof", async {
        tokio::join!(
            conn.read(anyframe::OrEof::new(Len1::default())),
            header_then_eof(peer)
        )
    })
    .await;
    assert!(r.is_err(), "{r:?}");
}
