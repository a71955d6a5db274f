//! The write queue's exactness across the buffers it seals (encoders that
//! fail or panic, partial and vectored writes, `into_parts` and
//! `from_parts`), a TLS switch's marker across seals and an emptied queue,
//! and a line read across the read buffer's shrink while waiting.

#[path = "support/mock_io.rs"]
mod mock_io;

use std::time::Duration;

use anyframe::QueuedFramed;
use bytes::{BufMut, BytesMut};
use mock_io::{Peer, pair};

struct Item(u8, usize, bool);
impl tokio_util::codec::Encoder<u32> for Item {
    type Error = std::io::Error;
    fn encode(&mut self, _i: u32, dst: &mut BytesMut) -> std::io::Result<()> {
        for _ in 0..self.1 {
            dst.put_u8(self.0);
        }
        if self.2 {
            return Err(std::io::Error::other("half"));
        }
        Ok(())
    }
}

fn pump(peer: Peer, step: usize) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for _ in 0..100_000 {
            peer.accept(step);
            tokio::time::sleep(Duration::from_micros(50)).await;
        }
    })
}

#[tokio::test]
async fn seals_with_failing_encoders_keep_exact_bytes() {
    let (io, peer) = pair();
    let mut conn = QueuedFramed::new(io);
    let mut want = Vec::new();
    for i in 0..3000u32 {
        let b = (i % 251) as u8;
        if i % 37 == 0 {
            assert!(conn.push_write(Item(0xEE, 77, true), i).is_err());
        }
        conn.push_write(Item(b, 97, false), i).unwrap();
        want.extend(std::iter::repeat_n(b, 97));
        if i % 500 == 0 {
            let big = vec![b ^ 0x55; 3001];
            conn.push_bytes(big.clone()).unwrap();
            want.extend_from_slice(&big);
        }
    }
    assert_eq!(conn.write_buffered(), want.len());
    let p = pump(peer.clone(), 7777);
    tokio::time::timeout(Duration::from_secs(10), conn.flush())
        .await
        .unwrap()
        .unwrap();
    p.abort();
    assert_eq!(peer.written().len(), want.len());
    assert!(peer.written() == want, "bytes differ");
}

#[tokio::test]
async fn panicking_encoder_after_seals_leaves_exact_prefix() {
    let (io, _peer) = pair();
    let mut conn = QueuedFramed::new(io);
    let mut want = Vec::new();
    for i in 0..700u32 {
        conn.push_write(Item(i as u8, 99, false), i).unwrap();
        want.extend(std::iter::repeat_n(i as u8, 99));
    }
    struct Boom;
    impl tokio_util::codec::Encoder<u32> for Boom {
        type Error = std::io::Error;
        fn encode(&mut self, _i: u32, dst: &mut BytesMut) -> std::io::Result<()> {
            dst.extend_from_slice(&[0xAB; 5000]);
            panic!("boom");
        }
    }
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| conn.push_write(Boom, 0)));
    assert!(r.is_err());
    let parts = conn.into_parts();
    assert_eq!(parts.write_buf.len(), want.len());
    assert!(parts.write_buf[..] == want[..]);
}

#[tokio::test]
async fn into_parts_from_parts_after_partial_writes_of_sealed_pieces() {
    let (io, peer) = pair();
    let mut conn = QueuedFramed::new(io);
    let mut want = Vec::new();
    for i in 0..2000u32 {
        conn.push_write(Item(i as u8, 61, false), i).unwrap();
        want.extend(std::iter::repeat_n(i as u8, 61));
        if i % 300 == 7 {
            let big = vec![!(i as u8); 1500];
            conn.push_bytes(big.clone()).unwrap();
            want.extend_from_slice(&big);
        }
    }
    peer.accept(50_001);
    let _ = tokio::time::timeout(Duration::from_millis(100), conn.flush()).await;
    let written = peer.written();
    let parts = conn.into_parts();
    let mut got = written.clone();
    got.extend_from_slice(&parts.write_buf);
    assert_eq!(got.len(), want.len());
    assert!(got == want);
    let mut conn = QueuedFramed::from_parts(parts);
    let p = pump(peer.clone(), 4099);
    tokio::time::timeout(Duration::from_secs(10), conn.flush())
        .await
        .unwrap()
        .unwrap();
    p.abort();
    assert!(peer.written() == want);
}

#[cfg(feature = "tls")]
#[tokio::test]
async fn starttls_marker_across_seals_and_emptied_queue() {
    for (pre_items, budget_frac) in [(400usize, 1usize), (400, 2), (1000, 3), (200, 1)] {
        let (io, peer) = pair();
        let mut conn = QueuedFramed::new(io);
        let mut before = Vec::new();
        for i in 0..pre_items as u32 {
            conn.push_write(Item(i as u8 | 1, 101, false), i).unwrap();
            before.extend(std::iter::repeat_n(i as u8 | 1, 101));
        }
        let client = anyframe::tls::TlsClient::new("localhost").unwrap();
        let _sw = conn.push_starttls(client);
        let mut after = Vec::new();
        for i in 0..600u32 {
            conn.push_write(Item(0, 103, false), i).unwrap();
            after.extend(std::iter::repeat_n(0, 103));
        }
        let budget = before.len() / budget_frac;
        peer.accept(budget);
        let _ = tokio::time::timeout(Duration::from_millis(100), conn.flush()).await;
        let w = peer.written();
        assert!(
            w.len() <= before.len(),
            "{} written past {} before the switch",
            w.len(),
            before.len()
        );
        assert!(w[..] == before[..w.len()]);
        if budget_frac > 1 {
            let parts = conn.into_parts();
            let mut got = w.clone();
            got.extend_from_slice(&parts.write_buf);
            assert_eq!(got.len(), before.len());
            assert!(got == before);
            assert_eq!(parts.after_switch.len(), after.len());
        }
    }
}

#[tokio::test]
async fn line_across_read_buffer_shrink() {
    let (io, peer) = pair();
    let (handle, driver) = QueuedFramed::builder().rbuf_max(None).build(io).spawn();
    let drv = tokio::spawn(driver);
    // a big first line makes the buffer grow
    let mut first = vec![b'a'; 900 * 1024];
    first.push(b'\n');
    let mut second = Vec::new();
    for i in 0..300 * 1024 {
        second.push(b'b' + (i % 20) as u8);
    }
    let reader = {
        let h = handle.clone();
        tokio::spawn(async move {
            let a = h.read(anyframe::codecs::LineCodec::new()).await.unwrap();
            let b = h.read(anyframe::codecs::LineCodec::new()).await.unwrap();
            (a, b)
        })
    };
    for c in first.chunks(64 * 1024) {
        peer.send(c);
    }
    peer.send(&second[..2000]);
    tokio::time::sleep(Duration::from_millis(50)).await;
    for c in second[2000..].chunks(16 * 1024) {
        peer.send(c);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    peer.send(b"zz\n");
    let (a, b) = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .unwrap()
        .unwrap();
    let a: &[u8] = a.line();
    let b: &[u8] = b.line();
    assert_eq!(a.len(), first.len() - 1);
    let mut want = second.clone();
    want.extend_from_slice(b"zz");
    assert_eq!(b.len(), want.len());
    assert!(b == &want[..]);
    drop(handle);
    drv.abort();
}
