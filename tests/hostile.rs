//! The hostile-input catalogue: what a broken or malicious peer
//! can send, and what it gets. Each case checks a clear typed error, that
//! nothing already received is lost (the offending bytes stay in the read
//! buffer unless the codec documents otherwise), that memory stays bounded
//! where the point is that it does (measured with a counting allocator),
//! and, where it matters, that a healthy connection served alongside is
//! unaffected.
//!
//! The tests in this file take one lock, so the allocator's peak belongs to
//! the test that reads it.
// Each test runs its own runtime on its own thread; the std mutex held
// across its awaits is what serialises them, on purpose.
#![allow(clippy::await_holding_lock)]

mod support;

#[cfg(any(feature = "tls", feature = "rustls"))]
#[path = "support/pki.rs"]
mod pki;

use std::future::Future;
use std::io;
use std::time::Duration;

use anyframe::codecs::{
    CborCodec, ChunkCodec, JsonCodec, LineCodec, NetstringCodec, PackFormat, PackstringCodec,
    RawCborCodec, RawJsonCodec, RegexCodec, TlsDetectCodec,
};
use anyframe::{ErrorKind, OrEof, QueuedFramed};
use bytes::Bytes;
use support::{MockIo, Step, data};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::{TcpListener, TcpStream};

// ----- the counting allocator -------------------------------------------------

#[path = "support/counting.rs"]
mod counting;

use counting::{peak, reset_peak, serial};

#[global_allocator]
static ALLOC: counting::Counting = counting::Counting;

/// Runs `f` and returns its output and the peak heap growth during it
/// (printed, for `--nocapture` runs).
async fn peak_during<F: Future>(what: &str, f: F) -> (F::Output, usize) {
    let base = reset_peak();
    let out = f.await;
    let peak = peak().saturating_sub(base);
    println!("hostile: {what}: peak heap growth {} KiB", peak / KIB);
    (out, peak)
}

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// The bound on every real-time wait in this file.
async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(30), f).await {
        Ok(out) => out,
        Err(_) => panic!("timed out: {what}"),
    }
}

// ----- helpers ----------------------------------------------------------------

/// A peer that writes `prefix`, then `fill` over and over (up to `total`
/// bytes in all) and stops quietly when we close. Returns how much it wrote.
fn flood(
    mut peer: impl AsyncWrite + Unpin + Send + 'static,
    prefix: Vec<u8>,
    fill: Vec<u8>,
    total: usize,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut sent = 0;
        if peer.write_all(&prefix).await.is_err() {
            return sent;
        }
        sent += prefix.len();
        // Whole copies of `fill` only, so a pattern is never cut.
        let copies = (64 * KIB / fill.len()).max(1);
        let block: Vec<u8> = fill
            .iter()
            .copied()
            .cycle()
            .take(copies * fill.len())
            .collect();
        while sent < total {
            let n = block.len().min(total - sent);
            if peer.write_all(&block[..n]).await.is_err() {
                break;
            }
            sent += n;
        }
        sent
    })
}

/// A healthy line-echo exchange on its own connection, run while a hostile
/// peer is being handled: it must be unaffected.
async fn healthy_neighbour() {
    let (ours, mut peer) = tokio::io::duplex(4 * KIB);
    let server = tokio::spawn(async move {
        let mut conn = QueuedFramed::new(ours);
        let mut n = 0;
        while let Some(line) = conn.read(OrEof::new(LineCodec::new())).await.unwrap() {
            conn.push_write(LineCodec::new(), line.line()).unwrap();
            n += 1;
        }
        conn.flush().await.unwrap();
        n
    });
    let mut echoed = Vec::new();
    for i in 0..100 {
        let msg = format!("ping {i}\n");
        peer.write_all(msg.as_bytes()).await.unwrap();
        let mut back = vec![0; msg.len()];
        peer.read_exact(&mut back).await.unwrap();
        echoed.push(back == msg.as_bytes());
    }
    peer.shutdown().await.unwrap();
    assert_eq!(server.await.unwrap(), 100);
    assert!(
        echoed.iter().all(|&ok| ok),
        "the neighbour's echoes were wrong"
    );
}

/// Runs a hostile case and the healthy neighbour side by side.
async fn beside_healthy<F: Future>(hostile: F) -> F::Output {
    let (out, ()) = tokio::join!(hostile, healthy_neighbour());
    out
}

fn duplex() -> (DuplexStream, DuplexStream) {
    tokio::io::duplex(64 * KIB)
}

// ----- oversized frames ---------------------------------------------------------

#[tokio::test]
async fn an_endless_line_is_enospc_at_the_limit_and_the_line_before_it_survives() {
    let _g = serial();
    let (ours, peer) = duplex();
    let (res, peak) = peak_during(
        "endless line",
        beside_healthy(async move {
            let writer = flood(peer, b"ok\n".to_vec(), b"A".to_vec(), 64 * MIB);
            let mut conn = QueuedFramed::new(ours);
            let first = conn.read(LineCodec::new()).await.unwrap();
            assert_eq!(first.line(), b"ok");
            let err = conn.read(LineCodec::new()).await.unwrap_err();
            let buffered = conn.read_buffer().len();
            assert!(conn.read_buffer().iter().all(|&b| b == b'A'));
            drop(conn);
            let sent = writer.await.unwrap();
            (err, buffered, sent)
        }),
    )
    .await;
    let (err, buffered, sent) = res;
    assert_eq!(err.kind(), ErrorKind::NoSpace);
    assert!(err.is_fatal());
    assert!(err.codec_error().unwrap().is_limit());
    // The over-long line is still there (nothing consumed), and the peer
    // could not make us take much more than the 1 MiB limit.
    assert!(
        buffered > anyframe::codecs::DEFAULT_LINE_MAX_LENGTH,
        "{buffered}"
    );
    assert!(buffered < 2 * MIB, "{buffered}");
    assert!(sent < 4 * MIB, "we kept reading: {sent}");
    assert!(peak < 4 * MIB, "peak {peak}");
}

#[tokio::test]
async fn a_huge_chunk_request_is_capped_by_rbuf_max_not_by_the_chunk_size() {
    let _g = serial();
    let (ours, peer) = duplex();
    let (res, peak) = peak_during(
        "1 TiB chunk, rbuf_max 1 MiB",
        beside_healthy(async move {
            let writer = flood(peer, Vec::new(), b"x".to_vec(), 64 * MIB);
            let mut conn = QueuedFramed::builder().rbuf_max(Some(MIB)).build(ours);
            // A chunk of 1 TiB: the codec reserves at most 64 KiB ahead.
            let err = conn.read(ChunkCodec::new(1 << 40)).await.unwrap_err();
            let buffered = conn.read_buffer().len();
            drop(conn);
            (err, buffered, writer.await.unwrap())
        }),
    )
    .await;
    let (err, buffered, sent) = res;
    assert_eq!(err.kind(), ErrorKind::NoSpace);
    assert!(err.is_fatal());
    assert!((MIB..2 * MIB).contains(&buffered), "{buffered}");
    assert!(sent < 4 * MIB, "{sent}");
    assert!(peak < 4 * MIB, "peak {peak}");
}

#[tokio::test]
async fn packstring_lengths_over_the_limit_fail_at_the_prefix_for_every_format() {
    let _g = serial();
    let cases: Vec<(PackFormat, Vec<u8>)> = vec![
        (PackFormat::U32Be, u32::MAX.to_be_bytes().to_vec()),
        (PackFormat::U32Le, u32::MAX.to_le_bytes().to_vec()),
        (PackFormat::U64Be, (1u64 << 63).to_be_bytes().to_vec()),
        (PackFormat::U64Le, u64::MAX.to_le_bytes().to_vec()),
        // BER for 2^63: nine continuation bytes then the last group.
        (
            PackFormat::Ber,
            vec![0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00],
        ),
    ];
    for (fmt, prefix) in cases {
        let (ours, peer) = duplex();
        let (res, peak) = peak_during(&format!("packstring {fmt:?} huge length"), async move {
            // The body never comes: the verdict must not wait for it.
            let _writer = flood(peer, prefix.clone(), b"z".to_vec(), 256 * KIB);
            let mut conn = QueuedFramed::new(ours);
            let err = conn.read(PackstringCodec::new(fmt)).await.unwrap_err();
            (err, conn.read_buffer()[..prefix.len()] == prefix[..])
        })
        .await;
        let (err, kept) = res;
        assert_eq!(err.kind(), ErrorKind::NoSpace, "{fmt:?}");
        assert!(err.codec_error().unwrap().is_limit(), "{fmt:?}");
        assert!(kept, "{fmt:?}: the prefix was consumed");
        assert!(peak < MIB, "{fmt:?}: peak {peak}");
    }
}

#[tokio::test]
async fn a_ber_prefix_of_endless_continuation_bytes_fails_within_ten_bytes() {
    let _g = serial();
    let (ours, peer) = duplex();
    let (res, peak) = peak_during(
        "endless BER prefix",
        beside_healthy(async move {
            let writer = flood(peer, Vec::new(), vec![0xff], 16 * MIB);
            let mut conn = QueuedFramed::builder()
                .read_size(16)
                .max_read_size(16)
                .build(ours);
            let err = conn
                .read(PackstringCodec::new(PackFormat::Ber))
                .await
                .unwrap_err();
            let buffered = conn.read_buffer().len();
            drop(conn);
            (err, buffered, writer.await.unwrap())
        }),
    )
    .await;
    let (err, buffered, sent) = res;
    assert!(
        matches!(err.kind(), ErrorKind::BadMessage | ErrorKind::NoSpace),
        "{err:?}"
    );
    let codec_err = err.codec_error().unwrap();
    assert_eq!(codec_err.codec(), "packstring");
    assert!(codec_err.bytes().len() <= 10, "{codec_err:?}");
    // Decided on the first read (16 bytes): nothing consumed, nothing more read.
    assert_eq!(buffered, 16);
    assert!(sent < 16 * MIB);
    assert!(peak < MIB, "peak {peak}");
}

#[tokio::test]
async fn netstring_lengths_over_the_limit_fail_at_the_digits() {
    let _g = serial();
    for header in [&b"16777217:"[..], b"99999999999999999999999999999999"] {
        let (ours, peer) = duplex();
        let (res, peak) = peak_during("netstring huge length", async move {
            let _writer = flood(peer, header.to_vec(), b"9".to_vec(), 256 * KIB);
            let mut conn = QueuedFramed::new(ours);
            let err = conn.read(NetstringCodec::new()).await.unwrap_err();
            let kept = conn.read_buffer().starts_with(&header[..8]);
            (err, kept)
        })
        .await;
        let (err, kept) = res;
        assert_eq!(err.kind(), ErrorKind::NoSpace, "{err:?}");
        assert!(err.is_fatal());
        assert!(kept, "the header was consumed");
        assert!(peak < MIB, "peak {peak}");
    }
}

#[tokio::test]
async fn an_endless_json_text_is_a_limit_error_at_max_size() {
    let _g = serial();
    let (ours, peer) = duplex();
    let (res, peak) = peak_during(
        "endless JSON text",
        beside_healthy(async move {
            let writer = flood(peer, b"[".to_vec(), b"\"aaaaaaa\",".to_vec(), 64 * MIB);
            let mut conn = QueuedFramed::new(ours);
            let codec: JsonCodec = JsonCodec::builder().max_size(MIB).build();
            let err = conn.read(codec).await.unwrap_err();
            let buffered = conn.read_buffer().len();
            let starts = conn.read_buffer().starts_with(b"[\"aaaaaaa\",");
            drop(conn);
            (err, buffered, starts, writer.await.unwrap())
        }),
    )
    .await;
    let (err, buffered, starts, sent) = res;
    assert_eq!(err.kind(), ErrorKind::BadMessage);
    assert!(err.codec_error().unwrap().is_limit(), "{err:?}");
    assert!(starts, "the partial text was consumed");
    assert!(buffered > MIB && buffered < 2 * MIB, "{buffered}");
    assert!(sent < 4 * MIB, "{sent}");
    assert!(peak < 5 * MIB, "peak {peak}");
}

#[tokio::test]
async fn an_endless_cbor_array_is_a_limit_error_at_max_size() {
    let _g = serial();
    let (ours, peer) = duplex();
    let (res, peak) = peak_during(
        "endless CBOR array",
        beside_healthy(async move {
            // An indefinite array of zeros that never ends.
            let writer = flood(peer, vec![0x9f], vec![0x00], 64 * MIB);
            let mut conn = QueuedFramed::new(ours);
            let err = conn
                .read(RawCborCodec::with_limits(MIB, 16))
                .await
                .unwrap_err();
            let buffered = conn.read_buffer().len();
            drop(conn);
            (err, buffered, writer.await.unwrap())
        }),
    )
    .await;
    let (err, buffered, sent) = res;
    assert_eq!(err.kind(), ErrorKind::BadMessage);
    assert!(err.codec_error().unwrap().is_limit(), "{err:?}");
    assert!((MIB..2 * MIB).contains(&buffered), "{buffered}");
    assert!(sent < 4 * MIB, "{sent}");
    assert!(peak < 5 * MIB, "peak {peak}");
}

#[tokio::test]
async fn cbor_heads_declaring_2_pow_63_bytes_or_items_fail_without_allocating() {
    let _g = serial();
    let big = (1u64 << 63).to_be_bytes();
    let heads: Vec<Vec<u8>> = vec![
        [&[0x5b][..], &big].concat(), // byte string
        [&[0x7b][..], &big].concat(), // text string
        [&[0x9b][..], &big].concat(), // array
        [&[0xbb][..], &big].concat(), // map
        // Inside an array, after a valid item.
        [&[0x82, 0x01, 0x5b][..], &big].concat(),
    ];
    for head in heads {
        let (res, peak) = peak_during(&format!("CBOR head {head:02x?}"), async {
            let (io, _) = MockIo::new([data(&head), Step::Pending, data(&[0u8; 4096]), Step::Eof]);
            let mut conn = QueuedFramed::new(io);
            let err = conn
                .read(CborCodec::<serde_cbor::Value>::with_limits(MIB, 16))
                .await
                .unwrap_err();
            (err, conn.read_buffer().starts_with(&head))
        })
        .await;
        let (err, kept) = res;
        assert_eq!(err.kind(), ErrorKind::BadMessage, "{head:x?}: {err:?}");
        assert!(err.codec_error().unwrap().is_limit(), "{head:x?}: {err:?}");
        assert!(!err.is_fatal());
        assert!(kept, "{head:x?}: bytes consumed");
        assert!(peak < 256 * KIB, "{head:x?}: peak {peak}");
    }
}

// ----- deep nesting -------------------------------------------------------------

/// `n` opening brackets then `n` closing ones.
fn nested(n: usize, open: u8, close: Option<u8>) -> Vec<u8> {
    let mut v = vec![open; n];
    if let Some(c) = close {
        v.extend(std::iter::repeat_n(c, n));
    }
    v
}

#[tokio::test]
async fn a_million_deep_json_text_is_a_depth_error_not_a_stack_overflow() {
    let _g = serial();
    // Default limits: the depth limit fails it at byte 129.
    let text = nested(1_000_000, b'[', Some(b']'));
    let ((), peak) = peak_during("10^6-deep JSON, default limits", async {
        let (io, _) = MockIo::new([data(&text), Step::Eof]);
        let mut conn = QueuedFramed::new(io);
        let err = conn
            .read(JsonCodec::<serde_json::Value>::new())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadMessage);
        assert!(err.codec_error().unwrap().is_limit(), "{err:?}");
        assert!(!err.is_fatal());
        // Decided on the first read; nothing consumed.
        assert!(text.starts_with(conn.read_buffer()), "consumed");
        assert!(conn.read_buffer().len() < 64 * KIB);
    })
    .await;
    assert!(peak < 8 * MIB, "peak {peak}");
    // No depth limit of ours: the scanner counts (never recurses) and
    // serde_json's own recursion limit refuses it.
    let ((), _) = peak_during("10^6-deep JSON, no depth limit", async {
        let (io, _) = MockIo::new([data(&text), Step::Eof]);
        let mut conn = QueuedFramed::new(io);
        let codec: JsonCodec = JsonCodec::builder()
            .max_depth(usize::MAX)
            .max_size(4 * MIB)
            .build();
        let err = conn.read(codec).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadMessage, "{err:?}");
        // A rejected well-formed text is consumed, and the stream goes on.
        assert!(conn.read_buffer().is_empty());
        let raw = conn.read(RawJsonCodec::new()).await.unwrap_err();
        assert_eq!(raw.kind(), ErrorKind::BrokenPipe);
    })
    .await;
}

#[tokio::test]
async fn a_million_deep_cbor_item_is_a_depth_error_not_a_stack_overflow() {
    let _g = serial();
    // 1,000,000 one-element arrays around a zero.
    let mut item = nested(1_000_000, 0x81, None);
    item.push(0x00);
    let ((), peak) = peak_during("10^6-deep CBOR, default limits", async {
        let (io, _) = MockIo::new([data(&item), Step::Eof]);
        let mut conn = QueuedFramed::new(io);
        let err = conn
            .read(CborCodec::<serde_cbor::Value>::new())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadMessage);
        assert!(err.codec_error().unwrap().is_limit(), "{err:?}");
        assert!(item.starts_with(conn.read_buffer()), "consumed");
        assert!(conn.read_buffer().len() < 64 * KIB);
    })
    .await;
    assert!(peak < 8 * MIB, "peak {peak}");
    // Indefinite arrays too, and without a depth limit of ours.
    let mut indef = nested(1_000_000, 0x9f, Some(0xff));
    indef.insert(1_000_000, 0x00);
    let ((), peak) = peak_during("10^6-deep indefinite CBOR, no depth limit", async {
        let (io, _) = MockIo::new([data(&indef), Step::Eof]);
        let mut conn = QueuedFramed::new(io);
        let err = conn
            .read(CborCodec::<serde_cbor::Value>::with_limits(
                4 * MIB,
                usize::MAX,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadMessage, "{err:?}");
    })
    .await;
    assert!(peak < 64 * MIB, "peak {peak}");
}

// ----- malformed content ----------------------------------------------------------

#[tokio::test]
async fn invalid_utf8_in_json_is_a_non_fatal_utf8_error_and_nothing_is_lost() {
    let _g = serial();
    let bad = b"{\"k\":\"\xff\xfe\"}";
    let mut wire = bad.to_vec();
    wire.extend_from_slice(b"\n{\"k\":\"ok\"}\n");
    let (io, _) = MockIo::new([data(&wire), Step::Eof]);
    let mut conn = QueuedFramed::new(io);
    let err = conn
        .read(JsonCodec::<serde_json::Value>::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadMessage);
    assert!(err.codec_error().unwrap().is_utf8(), "{err:?}");
    assert!(!err.is_fatal() && !conn.is_closed());
    // Nothing consumed: the caller decides, here skipping to the newline.
    assert_eq!(conn.read_buffer(), &wire[..]);
    conn.consume(bad.len());
    let next: serde_json::Value = conn.read(JsonCodec::new()).await.unwrap();
    assert_eq!(next, serde_json::json!({"k": "ok"}));
}

#[tokio::test]
async fn a_regex_reject_is_a_non_fatal_bad_message_with_the_bytes_kept() {
    let _g = serial();
    let wire = b"GET / HTTP/1.0\r\nX: \x00\r\n\r\n";
    let (io, _) = MockIo::new([data(wire), Step::Pending, Step::Eof]);
    let mut conn = QueuedFramed::new(io);
    let codec = || {
        RegexCodec::builder(regex::bytes::Regex::new(r"\r\n\r\n").unwrap())
            .reject(regex::bytes::Regex::new(r"\x00").unwrap())
            .max_length(8 * KIB)
            .build()
            .unwrap()
    };
    // Split so that the reject is seen before the end of the head.
    let (io2, _) = MockIo::new([
        data(&wire[..21]),
        Step::Pending,
        data(&wire[21..]),
        Step::Eof,
    ]);
    let mut split = QueuedFramed::new(io2);
    let err = split.read(codec()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadMessage);
    assert!(!err.is_fatal() && !split.is_closed());
    assert_eq!(err.codec_error().unwrap().offset(), Some(19));
    assert_eq!(split.read_buffer(), &wire[..21]);
    // In one piece, accept matches first (AE's order, RT-regex-2).
    let head = conn.read(codec()).await.unwrap();
    assert_eq!(&head[..], &wire[..]);
}

// ----- peers that misbehave in time -----------------------------------------------

#[tokio::test]
async fn a_peer_that_never_reads_hits_wbuf_max_as_enospc() {
    let _g = serial();
    let (ours, _peer) = tokio::io::duplex(16 * KIB); // the peer never reads
    let (res, peak) = peak_during(
        "peer never reads, wbuf_max 1 MiB",
        beside_healthy(async move {
            let (handle, _driver) = QueuedFramed::builder()
                .wbuf_max(Some(MIB))
                .build(ours)
                .spawn();
            let mut accepted = 0;
            let err = loop {
                // A fresh buffer each time, so the peak shows what is queued.
                let block = Bytes::from(vec![b'w'; 64 * KIB]);
                match handle.push_bytes(block) {
                    Ok(()) => accepted += 64 * KIB,
                    Err(e) => break e,
                }
                tokio::task::yield_now().await;
                assert!(accepted <= 4 * MIB, "no cap");
            };
            (err, accepted, handle.is_closed())
        }),
    )
    .await;
    let (err, accepted, destroyed) = res;
    assert_eq!(err.kind(), ErrorKind::NoSpace);
    assert!(err.is_fatal() && destroyed);
    assert!(
        (MIB - 64 * KIB..=MIB + 16 * KIB + 64 * KIB).contains(&accepted),
        "{accepted}"
    );
    assert!(peak < 4 * MIB, "peak {peak}");
}

#[tokio::test(start_paused = true)]
async fn a_stalled_peer_gets_a_non_fatal_timeout_and_the_partial_frame_is_kept() {
    let _g = serial();
    let (ours, mut peer) = tokio::io::duplex(KIB);
    peer.write_all(b"half a li").await.unwrap();
    let mut conn = QueuedFramed::builder()
        .rtimeout(Duration::from_secs(5))
        .build(ours);
    let start = tokio::time::Instant::now();
    let err = conn.read(LineCodec::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TimedOut);
    assert!(!err.is_fatal() && !conn.is_closed());
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert_eq!(conn.read_buffer(), b"half a li");
    // It repeats every period while the peer stays silent...
    let err = conn.read(LineCodec::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TimedOut);
    // ... and the line completes when the rest comes.
    peer.write_all(b"ne\n").await.unwrap();
    assert_eq!(
        conn.read(LineCodec::new()).await.unwrap().line(),
        b"half a line"
    );
}

#[tokio::test(start_paused = true)]
async fn a_slowloris_peer_is_cut_off_by_a_deadline_without_losing_its_bytes() {
    let _g = serial();
    // One byte every second keeps the read and idle timers happy (each
    // read resets them, as in AnyEvent); a deadline on the request is what
    // stops it. Dropping the read loses nothing.
    let (ours, mut peer) = tokio::io::duplex(KIB);
    let dribble = tokio::spawn(async move {
        for _ in 0..1000 {
            if peer.write_all(b"a").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let mut conn = QueuedFramed::builder()
        .timeout(Duration::from_secs(3))
        .rtimeout(Duration::from_secs(3))
        .build(ours);
    let deadline = Duration::from_secs(30);
    let res = tokio::time::timeout(deadline, conn.read(LineCodec::new())).await;
    assert!(
        res.is_err(),
        "the timers alone should not end a dribbling peer"
    );
    let got = conn.read_buffer().len();
    assert!((29..=31).contains(&got), "{got} bytes kept");
    assert!(conn.read_buffer().iter().all(|&b| b == b'a'));
    assert!(!conn.is_closed());
    conn.destroy();
    dribble.abort();
}

#[tokio::test]
async fn a_peer_that_resets_mid_frame_is_an_io_error_and_the_partial_frame_is_kept() {
    let _g = serial();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
    let peer = c.unwrap();
    let ours = s.unwrap().0;
    let res = beside_healthy(async move {
        let mut peer = peer;
        // A netstring header and half its payload, then RST.
        peer.write_all(b"10:hello").await.unwrap();
        peer.flush().await.unwrap();
        let mut conn = QueuedFramed::new(ours);
        // Let the bytes arrive before the reset (a cancelled read keeps them).
        while conn.read_buffer().len() < 8 {
            let _ =
                tokio::time::timeout(Duration::from_millis(20), conn.read(NetstringCodec::new()))
                    .await;
        }
        peer.set_zero_linger().unwrap();
        drop(peer);
        let err = within("reset", conn.read(NetstringCodec::new()))
            .await
            .unwrap_err();
        (err, conn.read_buffer().to_vec())
    })
    .await;
    let (err, kept) = res;
    assert_eq!(err.kind(), ErrorKind::Io, "{err:?}");
    assert!(err.is_fatal());
    assert_eq!(
        err.io_error().map(io::Error::kind),
        Some(io::ErrorKind::ConnectionReset)
    );
    assert_eq!(kept, b"10:hello");
}

#[tokio::test]
async fn writing_to_a_peer_that_has_gone_is_a_fatal_epipe_with_the_output_kept() {
    let _g = serial();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
    drop(c.unwrap()); // the peer closes without reading anything
    let mut conn = QueuedFramed::new(s.unwrap().0);
    let block = vec![b'o'; 64 * KIB];
    let res: anyframe::Result<()> = within("write", async {
        loop {
            conn.push_bytes(block.clone())?;
            conn.flush().await?;
        }
    })
    .await;
    let err = res.unwrap_err();
    // EPIPE for a write to a closed connection, or the reset as I/O.
    assert!(
        matches!(err.kind(), ErrorKind::BrokenPipe | ErrorKind::Io),
        "{err:?}"
    );
    assert!(err.is_fatal() && conn.is_closed());
    assert!(
        matches!(
            err.io_error().map(io::Error::kind),
            Some(io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset)
        ),
        "{err:?}"
    );
    // What was not written is still there.
    let parts = conn.into_parts();
    assert!(!parts.write_buf.is_empty());
    assert!(parts.write_buf.iter().all(|&b| b == b'o'));
}

#[tokio::test]
async fn a_regex_that_never_accepts_is_enospc_at_max_length() {
    let _g = serial();
    let (ours, peer) = duplex();
    let (res, peak) = peak_during(
        "regex without a match",
        beside_healthy(async move {
            let writer = flood(
                peer,
                Vec::new(),
                b"no blank line here\r\n".to_vec(),
                64 * MIB,
            );
            let mut conn = QueuedFramed::new(ours);
            let codec = RegexCodec::builder(regex::bytes::Regex::new(r"\r\n\r\n").unwrap())
                .max_length(64 * KIB)
                .build()
                .unwrap();
            let err = conn.read(codec).await.unwrap_err();
            let buffered = conn.read_buffer().len();
            drop(conn);
            (err, buffered, writer.await.unwrap())
        }),
    )
    .await;
    let (err, buffered, sent) = res;
    assert_eq!(err.kind(), ErrorKind::NoSpace, "{err:?}");
    assert!(err.is_fatal());
    assert!(buffered > 64 * KIB && buffered < MIB, "{buffered}");
    assert!(sent < 4 * MIB, "{sent}");
    assert!(peak < 2 * MIB, "peak {peak}");
}

// ----- TLS ------------------------------------------------------------------------

#[cfg(any(feature = "tls", feature = "rustls"))]
#[tokio::test]
async fn tls_garbage_after_starttls_is_a_fatal_eproto() {
    let _g = serial();
    for &b in pki::BACKENDS {
        tls_garbage_after_starttls_is_a_fatal_eproto_on(b).await;
    }
}

#[cfg(any(feature = "tls", feature = "rustls"))]
async fn tls_garbage_after_starttls_is_a_fatal_eproto_on(b: anyframe::tls::TlsBackend) {
    let (ours, mut peer) = duplex();
    let res = beside_healthy(async move {
        let mut conn = QueuedFramed::new(ours);
        peer.write_all(b"STARTTLS\r\n").await.unwrap();
        assert_eq!(
            conn.read(LineCodec::new()).await.unwrap().line(),
            b"STARTTLS"
        );
        let garbage = tokio::spawn(async move {
            // Garbage where a ClientHello should be, then silence.
            let noise: Vec<u8> = (0..4096u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect();
            let _ = peer.write_all(&noise).await;
            let mut sink = Vec::new();
            let _ = peer.read_to_end(&mut sink).await;
        });
        let err = within(
            "handshake",
            conn.starttls(pki::server_on(b, &pki::pki().server)),
        )
        .await
        .unwrap_err();
        let destroyed = conn.is_closed();
        // Nothing more is read or written in plaintext.
        let again = conn.read(LineCodec::new()).await.unwrap_err();
        drop(conn);
        garbage.await.unwrap();
        (err, destroyed, again)
    })
    .await;
    let (err, destroyed, again) = res;
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err:?}");
    assert!(err.is_fatal() && destroyed);
    assert_eq!(again.kind(), ErrorKind::Protocol);
}

#[cfg(any(feature = "tls", feature = "rustls"))]
#[tokio::test]
async fn a_tls_server_spoken_to_in_plaintext_fails_with_eproto() {
    let _g = serial();
    for &b in pki::BACKENDS {
        a_tls_server_spoken_to_in_plaintext_fails_with_eproto_on(b).await;
    }
}

#[cfg(any(feature = "tls", feature = "rustls"))]
async fn a_tls_server_spoken_to_in_plaintext_fails_with_eproto_on(b: anyframe::tls::TlsBackend) {
    let (ours, mut peer) = duplex();
    let res = beside_healthy(async move {
        let mut conn = QueuedFramed::builder()
            .tls(pki::server_on(b, &pki::pki().server))
            .build(ours);
        let plain = tokio::spawn(async move {
            let _ = peer.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
            let mut back = Vec::new();
            let _ = peer.read_to_end(&mut back).await;
            back
        });
        let err = within("read", conn.read(LineCodec::new()))
            .await
            .unwrap_err();
        drop(conn);
        let back = plain.await.unwrap();
        (err, back)
    })
    .await;
    let (err, back) = res;
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err:?}");
    assert!(err.is_fatal());
    // Whatever went back, it was not our plaintext.
    assert!(!back.windows(4).any(|w| w == b"HTTP"), "{back:?}");
}

#[cfg(any(feature = "tls", feature = "rustls"))]
#[tokio::test]
async fn a_tls_client_answered_in_plaintext_fails_with_eproto() {
    let _g = serial();
    for &b in pki::BACKENDS {
        a_tls_client_answered_in_plaintext_fails_with_eproto_on(b).await;
    }
}

#[cfg(any(feature = "tls", feature = "rustls"))]
async fn a_tls_client_answered_in_plaintext_fails_with_eproto_on(b: anyframe::tls::TlsBackend) {
    let (ours, mut peer) = duplex();
    let plain = tokio::spawn(async move {
        let mut hello = [0u8; 5];
        let _ = peer.read_exact(&mut hello).await;
        let _ = peer.write_all(b"220 smtp.example ESMTP ready\r\n").await;
        let mut sink = Vec::new();
        let _ = peer.read_to_end(&mut sink).await;
    });
    let mut conn = QueuedFramed::builder().tls(pki::client_on(b)).build(ours);
    let err = within("handshake", conn.read(LineCodec::new()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err:?}");
    assert!(err.is_fatal());
    drop(conn);
    plain.await.unwrap();
}

/// A record header whose version is not 3.x (here a handshake record
/// declaring 4,096 bytes, in version 0x9999) cannot start a TLS stream: both
/// ends refuse it when the header arrives, fatal EPROTO, without waiting
/// for a body the peer may never send. The peer keeps the connection open,
/// so only the header can end the handshake.
#[cfg(any(feature = "tls", feature = "rustls"))]
#[tokio::test]
async fn a_record_header_with_a_foreign_version_fails_the_handshake_at_once() {
    let _g = serial();
    for &b in pki::BACKENDS {
        a_record_header_with_a_foreign_version_fails_the_handshake_at_once_on(b).await;
    }
}

#[cfg(any(feature = "tls", feature = "rustls"))]
async fn a_record_header_with_a_foreign_version_fails_the_handshake_at_once_on(
    b: anyframe::tls::TlsBackend,
) {
    const HEADER: &[u8] = &[0x16, 0x99, 0x99, 0x10, 0x00];
    /// Far less than any wait for a body, far more than a handshake takes.
    const AT_ONCE: Duration = Duration::from_secs(5);
    for server in [true, false] {
        let (ours, mut peer) = duplex();
        let hostile = tokio::spawn(async move {
            if !server {
                // Our ClientHello's record header first.
                let mut hello = [0u8; 5];
                let _ = peer.read_exact(&mut hello).await;
            }
            let _ = peer.write_all(HEADER).await;
            let mut sink = Vec::new();
            let _ = peer.read_to_end(&mut sink).await;
        });
        let mut conn = QueuedFramed::new(ours);
        let mode: anyframe::tls::TlsMode = if server {
            pki::server_on(b, &pki::pki().server).into()
        } else {
            pki::client_on(b)
        };
        let err = match tokio::time::timeout(AT_ONCE, conn.starttls(mode)).await {
            Ok(res) => res.unwrap_err(),
            Err(_) => panic!("{b:?} server={server}: still waiting after {AT_ONCE:?}"),
        };
        assert_eq!(
            err.kind(),
            ErrorKind::Protocol,
            "{b:?} server={server}: {err:?}"
        );
        assert!(err.is_fatal() && conn.is_closed(), "{err:?}");
        assert!(err.tls_error().is_some_and(|t| t.is_handshake()), "{err:?}");
        drop(conn);
        hostile.await.unwrap();
    }
}

// ----- end of input in every state ---------------------------------------------------

/// Reads with `read` over `wire` then end of input: EPIPE, fatal, and the
/// partial frame is exactly what is left in the read buffer.
async fn eof_after<F, Fut, T>(what: &str, wire: &[u8], read: F)
where
    F: FnOnce(QueuedFramed<MockIo>) -> Fut,
    Fut: Future<Output = (anyframe::Result<T>, QueuedFramed<MockIo>)>,
    T: std::fmt::Debug,
{
    // Split in two so the decoder is mid-frame when the end comes.
    let cut = wire.len() / 2;
    let (io, _) = MockIo::new([
        data(&wire[..cut]),
        Step::Pending,
        data(&wire[cut..]),
        Step::Eof,
    ]);
    let (res, conn) = read(QueuedFramed::new(io)).await;
    let err = res.expect_err(what);
    assert_eq!(err.kind(), ErrorKind::BrokenPipe, "{what}: {err:?}");
    assert!(err.is_fatal(), "{what}");
    assert!(conn.is_closed(), "{what}");
    assert_eq!(conn.read_buffer(), wire, "{what}: bytes lost");
}

macro_rules! eof_case {
    ($what:expr, $wire:expr, $codec:expr) => {
        eof_after($what, $wire, |mut c| async move {
            let r = c.read($codec).await;
            (r, c)
        })
        .await
    };
}

#[tokio::test]
async fn eof_inside_a_frame_is_epipe_with_the_partial_frame_kept_for_every_codec() {
    let _g = serial();
    eof_case!("line", b"no end of line", LineCodec::new());
    eof_case!("line, half a CRLF", b"line\r", LineCodec::new());
    eof_case!(
        "literal eol, half of it",
        b"abc\r\n.",
        LineCodec::with_eol("\r\n.\r\n").unwrap()
    );
    eof_case!("chunk", b"12345", ChunkCodec::new(10));
    eof_case!("netstring header", b"123", NetstringCodec::new());
    eof_case!("netstring body", b"5:abc", NetstringCodec::new());
    eof_case!("netstring comma", b"3:abc", NetstringCodec::new());
    eof_case!(
        "packstring prefix",
        b"\x00\x00",
        PackstringCodec::new(PackFormat::U32Be)
    );
    eof_case!(
        "packstring BER prefix",
        b"\x81\x80",
        PackstringCodec::new(PackFormat::Ber)
    );
    eof_case!(
        "packstring body",
        b"\x00\x05abc",
        PackstringCodec::new(PackFormat::U16Be)
    );
    eof_case!(
        "json string",
        b"{\"k\": \"va",
        JsonCodec::<serde_json::Value>::new()
    );
    eof_case!(
        "json literal",
        b"[tru",
        JsonCodec::<serde_json::Value>::new()
    );
    eof_case!("json escape", b"[\"\\u00", RawJsonCodec::new());
    eof_case!(
        "cbor head",
        b"\x1a\x00\x00",
        CborCodec::<serde_cbor::Value>::new()
    );
    eof_case!("cbor body", b"\x45abc", RawCborCodec::new());
    eof_case!("cbor indefinite", b"\x9f\x01\x02", RawCborCodec::new());
    eof_case!(
        "regex",
        b"GET / HTTP/1.0\r\n",
        RegexCodec::new(regex::bytes::Regex::new(r"\r\n\r\n").unwrap()).unwrap()
    );
    eof_case!("tls_detect", b"\x16\x03", TlsDetectCodec::new());
}

#[tokio::test]
async fn eof_between_frames_is_a_clean_end_for_or_eof_and_epipe_for_a_plain_read() {
    let _g = serial();
    let (io, _) = MockIo::new([data(b"one\n"), Step::Eof]);
    let mut conn = QueuedFramed::new(io);
    assert_eq!(
        conn.read(OrEof::new(LineCodec::new()))
            .await
            .unwrap()
            .unwrap()
            .line(),
        b"one"
    );
    assert!(
        conn.read(OrEof::new(LineCodec::new()))
            .await
            .unwrap()
            .is_none()
    );
    assert!(!conn.is_closed());
    let err = conn.read(LineCodec::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrokenPipe);
    // Leading JSON whitespace before the end is not a text.
    let (io, _) = MockIo::new([data(b"{}\n \t\r\n"), Step::Eof]);
    let mut conn = QueuedFramed::new(io);
    let v: serde_json::Value = conn.read(JsonCodec::new()).await.unwrap();
    assert_eq!(v, serde_json::json!({}));
    let end: Option<serde_json::Value> = conn.read(OrEof::new(JsonCodec::new())).await.unwrap();
    assert!(end.is_none());
}

#[tokio::test]
async fn eof_with_queued_requests_fails_every_one_of_them_and_keeps_the_writes() {
    let _g = serial();
    let (io, stats) = MockIo::new([data(b"a\nb"), Step::Eof]);
    let mut conn = QueuedFramed::new(io);
    conn.push_bytes(&b"queued output"[..]).unwrap();
    let t1 = conn.push_read(LineCodec::new());
    let t2 = conn.push_read(LineCodec::new());
    let t3 = conn.push_read(ChunkCodec::new(4));
    assert_eq!(conn.wait(t1).await.unwrap().line(), b"a");
    let e2 = conn.wait(t2).await.unwrap_err();
    let e3 = conn.wait(t3).await.unwrap_err();
    assert_eq!(e2.kind(), ErrorKind::BrokenPipe);
    assert_eq!(e3.kind(), ErrorKind::BrokenPipe);
    assert_eq!(conn.read_buffer(), b"b");
    // Output queued before the end was written (or is still reachable).
    let parts = conn.into_parts();
    let mut out = stats.lock().unwrap().written.clone();
    out.extend_from_slice(&parts.write_buf);
    assert_eq!(out, b"queued output");
}

#[cfg(any(feature = "tls", feature = "rustls"))]
#[tokio::test]
async fn eof_during_a_tls_handshake_is_a_fatal_error() {
    let _g = serial();
    for &b in pki::BACKENDS {
        eof_during_a_tls_handshake_is_a_fatal_error_on(b).await;
    }
}

#[cfg(any(feature = "tls", feature = "rustls"))]
async fn eof_during_a_tls_handshake_is_a_fatal_error_on(b: anyframe::tls::TlsBackend) {
    let (ours, mut peer) = duplex();
    let closer = tokio::spawn(async move {
        let mut hello = [0u8; 5];
        let _ = peer.read_exact(&mut hello).await;
        drop(peer);
    });
    let mut conn = QueuedFramed::builder().tls(pki::client_on(b)).build(ours);
    let err = within("handshake", conn.read(LineCodec::new()))
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Protocol | ErrorKind::BrokenPipe),
        "{err:?}"
    );
    assert!(err.is_fatal());
    closer.await.unwrap();
}
