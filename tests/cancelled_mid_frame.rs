//! Reads given up after their decoder began a frame (tokio-util's
//! `LengthDelimitedCodec` takes a frame's header first): the frame is
//! finished for nobody (docs/semantics.md, "A frame begun is finished"),
//! on both front ends.

use std::time::Duration;

use anyframe::QueuedFramed;
use anyframe::codecs::LineCodec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::LengthDelimitedCodec;

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("resolves")
}

/// A length-prefixed frame: a 4-byte big-endian length, then the payload.
fn ld_frame(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

/// Whether the peer receives anything within 100 ms.
async fn peer_hears(peer: &mut tokio::io::DuplexStream) -> Option<Vec<u8>> {
    let mut buf = [0u8; 16];
    match tokio::time::timeout(Duration::from_millis(100), peer.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => Some(buf[..n].to_vec()),
        _ => None,
    }
}

/// `push_read_with` whose ticket is dropped after its decoder took the
/// header: the frame is dropped when it completes, and the completion (it
/// would write `ACK`) does not run.
#[tokio::test(start_paused = true)]
async fn a_cancelled_reads_completion_does_not_run_on_its_frame_spawned() {
    let (ours, mut peer) = tokio::io::duplex(1024);
    let (h, _driver) = QueuedFramed::new(ours).spawn();
    let bytes = ld_frame(b"hello");
    peer.write_all(&bytes[..6]).await.unwrap();
    let ticket = h.push_read_with(LengthDelimitedCodec::new(), |_frame, q| {
        q.push_bytes(&b"ACK"[..])?;
        Ok(())
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    drop(ticket);
    peer.write_all(&bytes[6..]).await.unwrap();
    peer.write_all(b"next\n").await.unwrap();
    let line = within(h.read(LineCodec::new())).await.unwrap();
    assert_eq!(line.line(), b"next");
    assert_eq!(peer_hears(&mut peer).await, None);
}

/// The same inline.
#[tokio::test(start_paused = true)]
async fn a_cancelled_reads_completion_does_not_run_on_its_frame_inline() {
    let (ours, mut peer) = tokio::io::duplex(1024);
    let mut conn = QueuedFramed::new(ours);
    let mut bytes = ld_frame(b"hello");
    bytes.extend_from_slice(b"next\n");
    peer.write_all(&bytes[..6]).await.unwrap();
    let ticket = conn.push_read_with(LengthDelimitedCodec::new(), |_frame, q| {
        q.push_bytes(&b"ACK"[..])?;
        Ok(())
    });
    let next = conn.push_read(LineCodec::new());
    // Driven until the header is taken; then the read is given up.
    let _ = tokio::time::timeout(Duration::from_millis(10), conn.wait(next)).await;
    drop(ticket);
    peer.write_all(&bytes[6..]).await.unwrap();
    let line = within(conn.read(LineCodec::new())).await.unwrap();
    assert_eq!(line.line(), b"next");
    within(conn.flush()).await.unwrap();
    assert_eq!(peer_hears(&mut peer).await, None);
}

/// `Handle::read_many` ended having taken the next frame's header, which
/// its decoder keeps: passed to the next batch (as documented), that batch
/// carries the begun frame even before it takes a byte. Given up (by its
/// caller, or told the read timer's `ETIMEDOUT`), it finishes the frame
/// for nobody; it was dropped with the decoder instead, and the next read
/// took the frame's payload for a header (`EBADMSG`, on every retry).
#[tokio::test(start_paused = true)]
async fn a_batch_carrying_a_begun_frame_finishes_it_when_given_up() {
    for timed_out in [false, true] {
        let (ours, mut peer) = tokio::io::duplex(1024);
        let mut b = QueuedFramed::builder();
        if timed_out {
            b.rtimeout(Duration::from_secs(1));
        }
        let (h, _driver) = b.build(ours).spawn();
        let mut bytes = ld_frame(b"one");
        let two = ld_frame(b"two!");
        bytes.extend_from_slice(&two[..4]);
        peer.write_all(&bytes).await.unwrap();
        let (dec, frames) = within(h.read_many(LengthDelimitedCodec::new(), 10))
            .await
            .unwrap();
        assert_eq!(frames.len(), 1);
        if timed_out {
            let e = within(h.read_many(dec, 10)).await.map(|_| ()).unwrap_err();
            assert!(e.is_timeout() && !e.is_fatal(), "{e}");
        } else {
            let second = tokio::time::timeout(Duration::from_millis(50), h.read_many(dec, 10));
            assert!(second.await.is_err(), "no frame yet");
        }
        let next = h.push_read(LengthDelimitedCodec::new());
        let mut rest = two[4..].to_vec();
        rest.extend(ld_frame(b"three"));
        peer.write_all(&rest).await.unwrap();
        let got = within(next).await.map(|f| f.to_vec());
        assert_eq!(
            got.map_err(|e| e.to_string()),
            Ok(b"three".to_vec()),
            "timed out: {timed_out}"
        );
    }
}
