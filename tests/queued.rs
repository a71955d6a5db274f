//! QueuedFramed core behaviour: per-request decoders, queue order,
//! EOF and error semantics, nothing lost.

mod support;

use std::time::Duration;

use anyframe::codecs::{
    CborCodec, ChunkCodec, JsonCodec, LineBatchCodec, LineCodec, NetstringCodec, PackFormat,
    PackstringCodec,
};
use anyframe::{ErrorKind, QueuedFramed};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use support::{MockIo, Step, data};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn one_packet_satisfies_three_different_requests_without_another_read() {
    let mut packet = b"HELLO\r\n".to_vec();
    packet.extend_from_slice(&4u32.to_be_bytes());
    packet.extend_from_slice(b"abcd");
    packet.extend_from_slice(br#"{"k":[1,2]}"#);
    let (io, stats) = MockIo::new([data(&packet)]);
    let mut conn = QueuedFramed::new(io);

    let line = conn.read(LineCodec::new()).await.unwrap();
    assert_eq!(line.line(), b"HELLO");
    assert_eq!(line.eol(), b"\r\n");
    let payload = conn
        .read(PackstringCodec::new(PackFormat::U32Be))
        .await
        .unwrap();
    assert_eq!(&payload[..], b"abcd");
    let value: serde_json::Value = conn.read(JsonCodec::new()).await.unwrap();
    assert_eq!(value, json!({"k": [1, 2]}));
    assert_eq!(
        stats.lock().unwrap().read_calls,
        1,
        "all three came from the first read"
    );
}

#[tokio::test]
async fn queued_requests_of_different_types_resolve_in_order_when_bytes_arrive_later() {
    let (io, mut peer) = tokio::io::duplex(64);
    let (handle, _driver) = QueuedFramed::new(io).spawn();
    let t1 = handle.push_read(LineCodec::new());
    let t2 = handle.push_read(ChunkCodec::new(3));
    let t3 = handle.push_read(NetstringCodec::new());
    let t4 = handle.push_read(CborCodec::<serde_cbor::Value>::new());
    // Dribble the bytes one at a time.
    for b in b"one\nxyz5:hello,\x83\x01\x02\x03" {
        peer.write_all(&[*b]).await.unwrap();
        tokio::task::yield_now().await;
    }
    assert_eq!(t1.await.unwrap().line(), b"one");
    assert_eq!(&t2.await.unwrap()[..], b"xyz");
    assert_eq!(&t3.await.unwrap()[..], b"hello");
    let v = t4.await.unwrap();
    assert_eq!(
        v,
        serde_cbor::Value::Array(vec![1.into(), 2.into(), 3.into()].into_iter().collect())
    );
}

#[tokio::test]
async fn unshift_runs_before_queued_requests() {
    let (io, mut peer) = tokio::io::duplex(64);
    let mut conn = QueuedFramed::new(io);
    let back = conn.push_read(ChunkCodec::new(2));
    let front = conn.unshift_read(LineCodec::new());
    peer.write_all(b"first\nzz").await.unwrap();
    assert_eq!(conn.wait(front).await.unwrap().line(), b"first");
    assert_eq!(&conn.wait(back).await.unwrap()[..], b"zz");
}

/// AnyEvent::Handle's documentation, "Example 1" of the read queue: EPP
/// frames (RFC 5734), a 4-byte big-endian length that counts itself, then
/// the XML payload; repeatedly. The length read unshifts the
/// payload read from inside its completion (AE's `unshift_read` in a
/// callback).
#[tokio::test]
async fn epp_length_then_payload_repeatedly() {
    let (io, mut peer) = tokio::io::duplex(1024);
    let (handle, _driver) = QueuedFramed::new(io).spawn();
    let docs = ["<epp><hello/></epp>", "<epp><greeting/></epp>", "<epp/>"];
    let writer = tokio::spawn(async move {
        for d in docs {
            let total = (d.len() + 4) as u32;
            let mut frame = total.to_be_bytes().to_vec();
            frame.extend_from_slice(d.as_bytes());
            // Split each frame mid-header to exercise partial reads.
            peer.write_all(&frame[..2]).await.unwrap();
            peer.write_all(&frame[2..]).await.unwrap();
        }
        peer
    });
    for want in docs {
        let payload = handle
            .push_read_with(ChunkCodec::new(4), |hdr, q| {
                let total = u32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
                Ok(q.unshift_read(ChunkCodec::new(total.saturating_sub(4))))
            })
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(&payload[..], want.as_bytes());
    }
    drop(writer.await.unwrap());
}

/// AnyEvent::Handle's documentation, "Example 2" of the read queue: request
/// 1 answers `OK` plus one more line, or `ERROR`; request 2 answers 64
/// bytes. Both responses are queued up front
/// (pipelined); on the OK path the extra line is unshifted ahead of the
/// already queued 64-byte read.
#[tokio::test]
async fn pipelined_ok_path_unshifts_a_line_ahead_of_the_queued_chunk() {
    for ok in [true, false] {
        let (io, mut peer) = tokio::io::duplex(1024);
        let (handle, _driver) = QueuedFramed::new(io).spawn();
        handle.push_bytes(&b"request1\nrequest2\n"[..]).unwrap();
        let r1 = handle.push_read_with(LineCodec::new(), |status, q| {
            Ok(if status.line() == b"OK" {
                Some(q.unshift_read(LineCodec::new()))
            } else {
                None
            })
        });
        let r2 = handle.push_read(ChunkCodec::new(64));

        let mut got = vec![0u8; 18];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"request1\nrequest2\n");
        let body = [b'B'; 64];
        if ok {
            peer.write_all(b"OK\nextra detail\n").await.unwrap();
        } else {
            peer.write_all(b"ERROR\n").await.unwrap();
        }
        peer.write_all(&body).await.unwrap();

        match r1.await.unwrap() {
            Some(extra) => {
                assert!(ok);
                assert_eq!(extra.await.unwrap().line(), b"extra detail");
            }
            None => assert!(!ok),
        }
        assert_eq!(&r2.await.unwrap()[..], &body[..]);
    }
}

#[tokio::test]
async fn eof_with_a_request_waiting_is_fatal_epipe_and_keeps_the_partial_frame() {
    let (io, _stats) = MockIo::new([data(b"partial line"), Step::Eof]);
    let mut conn = QueuedFramed::new(io);
    let err = conn.read(LineCodec::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrokenPipe);
    assert!(err.is_fatal());
    assert!(conn.is_closed());
    assert_eq!(conn.read_buffer(), b"partial line");
    // The next call fails with the same error.
    let again = conn.read(ChunkCodec::new(1)).await.unwrap_err();
    assert_eq!(again.kind(), ErrorKind::BrokenPipe);
    let parts = conn.into_parts();
    assert_eq!(&parts.read_buf[..], b"partial line");
}

#[tokio::test]
async fn eof_with_nothing_queued_ends_the_stream_cleanly_with_leftovers_reachable() {
    let (io, _stats) = MockIo::new([data(b"a\nb\n"), Step::Eof]);
    let mut conn = QueuedFramed::with_codec(io, LineCodec::new());
    let mut lines = Vec::new();
    while let Some(line) = conn.next().await {
        lines.push(line.unwrap().into_line());
    }
    assert_eq!(lines, ["a", "b"]);
    assert!(conn.is_eof() && !conn.is_closed());
}

#[tokio::test]
async fn stream_ending_inside_a_frame_yields_epipe_once_then_ends() {
    let (io, _stats) = MockIo::new([data(b"a\nunterminated"), Step::Eof]);
    let mut conn = QueuedFramed::with_codec(io, LineCodec::new());
    assert_eq!(conn.next().await.unwrap().unwrap().line(), b"a");
    let err = conn.next().await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrokenPipe);
    assert!(conn.next().await.is_none());
    assert_eq!(conn.read_buffer(), b"unterminated");
}

/// A flush reaches the user's IO: over an IO that buffers its writes (a
/// `BufWriter`), the bytes are with the peer once `flush` returns.
#[tokio::test]
async fn flush_flushes_a_buffering_io() {
    use tokio::io::AsyncReadExt;
    let (ours, mut peer) = tokio::io::duplex(1024);
    let mut conn = QueuedFramed::new(tokio::io::BufWriter::new(ours));
    conn.push_write(LineCodec::new(), "hi").unwrap();
    conn.flush().await.unwrap();
    let mut got = [0u8; 3];
    tokio::time::timeout(std::time::Duration::from_secs(5), peer.read_exact(&mut got))
        .await
        .expect("the bytes stayed in the BufWriter")
        .unwrap();
    assert_eq!(&got, b"hi\n");
}

/// A stream that ended at a clean end of input stays ended: polled again,
/// and after the connection is destroyed, it still says `None` (it goes
/// on only when the input reopens, TLS-5).
#[tokio::test]
async fn a_stream_ended_cleanly_stays_ended_after_destroy() {
    let (io, _stats) = MockIo::new([data(b"a\n"), Step::Eof]);
    let mut conn = QueuedFramed::with_codec(io, LineCodec::new());
    assert_eq!(conn.next().await.unwrap().unwrap().line(), b"a");
    assert!(conn.next().await.is_none());
    assert!(conn.next().await.is_none());
    conn.destroy();
    assert!(
        conn.next().await.is_none(),
        "a Stream that ended yields nothing more"
    );
}

/// RT-json-6: a newline after the last JSON text must not turn a clean EOF
/// into EPIPE, nor become an empty line for the next reader.
#[tokio::test]
async fn whitespace_after_json_texts_does_not_turn_clean_eof_into_an_error() {
    let (io, _stats) = MockIo::new([data(b"{\"a\":1}\n[2]\n  \n"), Step::Eof]);
    let mut conn = QueuedFramed::with_codec(io, JsonCodec::<serde_json::Value>::new());
    let mut values = Vec::new();
    while let Some(v) = conn.next().await {
        values.push(v.unwrap());
    }
    assert_eq!(values, [json!({"a": 1}), json!([2])]);
    assert!(!conn.is_closed());
}

#[tokio::test]
async fn falsy_json_values_are_all_delivered() {
    let (io, _stats) = MockIo::new([data(b"0 false null \"\" [] 0.0\n"), Step::Eof]);
    let mut conn = QueuedFramed::new(io);
    let mut got = Vec::new();
    for _ in 0..6 {
        got.push(
            conn.read(JsonCodec::<serde_json::Value>::new())
                .await
                .unwrap(),
        );
    }
    assert_eq!(
        got,
        [
            json!(0),
            json!(false),
            json!(null),
            json!(""),
            json!([]),
            json!(0.0)
        ]
    );
}

#[tokio::test]
async fn a_bad_message_fails_only_its_request() {
    let (io, _stats) = MockIo::new([data(b"x3:abc,line\n")]);
    let mut conn = QueuedFramed::new(io);
    let err = conn.read(NetstringCodec::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadMessage);
    assert!(!err.is_fatal() && !conn.is_closed());
    // The caller decides how to recover: here, skip the odd byte.
    conn.consume(1);
    assert_eq!(&conn.read(NetstringCodec::new()).await.unwrap()[..], b"abc");
    assert_eq!(conn.read(LineCodec::new()).await.unwrap().line(), b"line");
}

/// The transport's own `ETIMEDOUT` (a TCP keepalive or retransmission
/// timeout: the peer vanished) is a transport failure, `Io` with the OS
/// error kept, not the `TimedOut` of one of this crate's timers.
#[tokio::test]
async fn a_transport_etimedout_is_an_io_error_not_a_timer_timeout() {
    let (io, _stats) = MockIo::new([Step::Error(std::io::ErrorKind::TimedOut)]);
    let mut conn = QueuedFramed::new(io);
    let e = conn.read(LineCodec::new()).await.unwrap_err();
    assert!(e.is_fatal());
    assert_eq!(
        (e.kind(), e.is_timeout(), e.timeout()),
        (ErrorKind::Io, false, None)
    );
    assert_eq!(
        e.io_error().map(std::io::Error::kind),
        Some(std::io::ErrorKind::TimedOut)
    );
}

#[tokio::test]
async fn a_fatal_error_fails_every_pending_ticket_with_the_same_kind() {
    let (io, _stats) = MockIo::new([
        data(b"ab"),
        Step::Error(std::io::ErrorKind::ConnectionReset),
    ]);
    let (handle, driver) = QueuedFramed::new(io).spawn();
    let t1 = handle.push_read(ChunkCodec::new(4));
    let t2 = handle.push_read(LineCodec::new());
    let t3 = handle.push_read(JsonCodec::<serde_json::Value>::new());
    for t in [
        t1.await.map(|_| ()),
        t2.await.map(|_| ()),
        t3.await.map(|_| ()),
    ] {
        let e = t.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Io);
        assert_eq!(
            e.io_error().unwrap().kind(),
            std::io::ErrorKind::ConnectionReset
        );
    }
    // The next call fails fast with the same error; nothing hangs.
    let e = handle.read(LineCodec::new()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
    assert!(handle.is_closed());
    let parts = driver.await.unwrap();
    assert_eq!(
        &parts.read_buf[..],
        b"ab",
        "bytes read before the error stay reachable"
    );
}

#[tokio::test]
async fn a_peer_that_half_closes_can_still_be_written_to() {
    let (io, mut peer) = tokio::io::duplex(64);
    let mut conn = QueuedFramed::new(io);
    peer.write_all(b"bye\n").await.unwrap();
    peer.shutdown().await.unwrap();
    assert_eq!(conn.read(LineCodec::new()).await.unwrap().line(), b"bye");
    assert_eq!(
        conn.read(LineCodec::new()).await.unwrap_err().kind(),
        ErrorKind::BrokenPipe
    );
    // EPIPE destroyed the handle (AE semantics); the transport is still ours.
    let mut parts = conn.into_parts();
    parts.io.write_all(b"still here\n").await.unwrap();
    let mut buf = vec![0; 11];
    peer.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf, b"still here\n");
}

#[tokio::test]
async fn clean_eof_between_requests_leaves_the_write_side_usable() {
    let (io, mut peer) = tokio::io::duplex(64);
    let mut conn = QueuedFramed::with_codec(io, LineCodec::new());
    peer.write_all(b"q\n").await.unwrap();
    peer.shutdown().await.unwrap();
    assert_eq!(conn.next().await.unwrap().unwrap().line(), b"q");
    assert!(conn.next().await.is_none());
    conn.send("answer").await.unwrap();
    let mut buf = vec![0; 7];
    peer.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf, b"answer\n");
}

#[tokio::test]
async fn zero_length_requests_complete_at_once_even_after_eof() {
    let (io, stats) = MockIo::new([Step::Eof]);
    let mut conn = QueuedFramed::new(io);
    assert!(conn.read(ChunkCodec::new(0)).await.unwrap().is_empty());
    assert_eq!(
        stats.lock().unwrap().read_calls,
        0,
        "chunk(0) needs no input"
    );
    // After EOF too.
    let _ = conn.read(ChunkCodec::new(1)).await.unwrap_err();
    let t = conn.push_read(ChunkCodec::new(0));
    assert!(conn.wait(t).await.is_err(), "a destroyed handle fails fast");
}

#[tokio::test]
async fn nothing_is_read_while_nothing_is_queued() {
    let (io, stats) = MockIo::new([data(b"unsolicited\n")]);
    let (handle, _driver) = QueuedFramed::new(io).spawn();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        stats.lock().unwrap().read_calls,
        0,
        "RQ-5: no read without a request"
    );
    assert_eq!(
        handle.read(LineCodec::new()).await.unwrap().line(),
        b"unsolicited"
    );
    assert_eq!(stats.lock().unwrap().read_calls, 1);
}

#[tokio::test]
async fn dropping_a_pending_read_future_loses_no_bytes() {
    let (io, mut peer) = tokio::io::duplex(64);
    let mut conn = QueuedFramed::new(io);
    peer.write_all(b"no newline yet").await.unwrap();
    let r = tokio::time::timeout(Duration::from_millis(20), conn.read(LineCodec::new())).await;
    assert!(r.is_err(), "the line is incomplete");
    assert_eq!(conn.read_buffer(), b"no newline yet");
    peer.write_all(b"\n").await.unwrap();
    assert_eq!(
        conn.read(LineCodec::new()).await.unwrap().line(),
        b"no newline yet"
    );
}

#[tokio::test]
async fn dropping_a_ticket_cancels_its_request_and_the_next_sees_the_bytes() {
    let (io, mut peer) = tokio::io::duplex(64);
    let (handle, _driver) = QueuedFramed::new(io).spawn();
    let dropped = handle.push_read(ChunkCodec::new(100));
    peer.write_all(b"abc\n").await.unwrap();
    tokio::task::yield_now().await;
    drop(dropped);
    assert_eq!(handle.read(LineCodec::new()).await.unwrap().line(), b"abc");
}

#[tokio::test]
async fn into_parts_and_from_parts_lose_nothing() {
    let (io, mut peer) = tokio::io::duplex(64);
    let mut conn = QueuedFramed::new(io);
    peer.write_all(b"one\ntwo\nthree").await.unwrap();
    assert_eq!(conn.read(LineCodec::new()).await.unwrap().line(), b"one");
    conn.push_write(LineCodec::new(), "unsent").unwrap();
    let parts = conn.into_parts();
    assert_eq!(&parts.read_buf[..], b"two\nthree");
    assert_eq!(&parts.write_buf[..], b"unsent\n");
    let mut conn = QueuedFramed::from_parts(parts);
    conn.flush().await.unwrap();
    let mut buf = vec![0; 7];
    peer.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf, b"unsent\n");
    assert_eq!(conn.read(LineCodec::new()).await.unwrap().line(), b"two");
}

#[tokio::test]
async fn read_size_starts_small_and_doubles_after_full_reads() {
    let big = vec![b'x'; 1 << 20];
    let (io, stats) = MockIo::new([data(&big), Step::Eof]);
    let mut conn = QueuedFramed::builder()
        .read_size(1000)
        .max_read_size(5000)
        .rbuf_max(None)
        .build(io);
    let err = conn
        .read(LineCodec::builder().max_length(2 << 20).build().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrokenPipe);
    let sizes = stats.lock().unwrap().read_sizes.clone();
    // The buffer offered grows; it is at least the read size each time and
    // stops growing at the maximum.
    assert!(sizes[0] >= 1000, "{sizes:?}");
    assert!(sizes.windows(2).take(3).all(|w| w[1] >= w[0]), "{sizes:?}");
}

#[tokio::test]
async fn closure_requests_see_the_whole_buffer_and_consume_a_prefix() {
    let (io, _stats) = MockIo::new([data(b"ab"), data(b"cdef")]);
    let mut conn = QueuedFramed::new(io);
    let got = conn
        .read_fn(|buf: &mut BytesMut| {
            Ok(if buf.len() >= 5 {
                Some(buf.split_to(5).freeze())
            } else {
                None
            })
        })
        .await
        .unwrap();
    assert_eq!(&got[..], b"abcde");
    assert_eq!(conn.read_buffer(), b"f");
}

#[tokio::test]
async fn writes_go_out_in_push_order_across_copied_and_chained_buffers() {
    let (io, stats) = MockIo::new([]);
    let mut conn = QueuedFramed::new(io.max_write(7));
    let big = Bytes::from(vec![b'B'; 5000]);
    conn.push_bytes(&b"a"[..]).unwrap();
    conn.push_bytes(big.clone()).unwrap();
    conn.push_write(LineCodec::new(), "c").unwrap();
    conn.push_write(NetstringCodec::new(), &b"dd"[..]).unwrap();
    conn.flush().await.unwrap();
    let mut want = b"a".to_vec();
    want.extend_from_slice(&big);
    want.extend_from_slice(b"c\n2:dd,");
    assert_eq!(stats.lock().unwrap().written, want);
}

#[tokio::test]
async fn shutdown_write_flushes_then_half_closes() {
    let (io, mut peer) = tokio::io::duplex(64);
    let mut conn = QueuedFramed::new(io);
    conn.push_write(LineCodec::new(), "last").unwrap();
    conn.shutdown_write().await.unwrap();
    let mut got = Vec::new();
    peer.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"last\n");
    assert_eq!(
        conn.push_write(LineCodec::new(), "x").unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    // Reading still works.
    peer.write_all(b"reply\n").await.unwrap();
    assert_eq!(conn.read(LineCodec::new()).await.unwrap().line(), b"reply");
}

#[tokio::test]
async fn destroy_fails_pending_and_later_calls_fast() {
    let (io, _peer) = tokio::io::duplex(64);
    let (handle, driver) = QueuedFramed::new(io).spawn();
    let t = handle.push_read(LineCodec::new());
    handle.destroy();
    assert_eq!(t.await.unwrap_err().kind(), ErrorKind::Closed);
    assert!(handle.is_closed());
    assert_eq!(
        handle.push_write(LineCodec::new(), "x").unwrap_err().kind(),
        ErrorKind::Closed
    );
    assert_eq!(
        handle.read(LineCodec::new()).await.unwrap_err().kind(),
        ErrorKind::Closed
    );
    driver.await.unwrap();
}

#[tokio::test]
async fn detach_hands_back_the_transport_and_unread_bytes() {
    let (io, mut peer) = tokio::io::duplex(64);
    let (handle, driver) = QueuedFramed::new(io).spawn();
    peer.write_all(b"first\nrest").await.unwrap();
    assert_eq!(
        handle.read(LineCodec::new()).await.unwrap().line(),
        b"first"
    );
    handle.push_bytes(&b"queued"[..]).unwrap();
    handle.flush().await.unwrap();
    handle.detach();
    let parts = driver.await.unwrap();
    assert_eq!(&parts.read_buf[..], b"rest");
    let mut buf = vec![0; 6];
    peer.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf, b"queued");
}

#[tokio::test]
async fn dropping_the_last_handle_closes_the_connection_after_writing() {
    let (io, mut peer) = tokio::io::duplex(64);
    let (handle, driver) = QueuedFramed::new(io).spawn();
    let h2 = handle.clone();
    h2.push_write(LineCodec::new(), "goodbye").unwrap();
    drop(handle);
    drop(h2);
    let mut got = Vec::new();
    peer.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"goodbye\n");
    driver.await.unwrap();
}

#[tokio::test]
async fn handles_are_send_and_work_from_several_tasks() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        let mut conn = QueuedFramed::new(sock);
        // Echo 100 lines.
        for _ in 0..100 {
            let l = conn.read(LineCodec::new()).await.unwrap();
            conn.push_write(LineCodec::new(), l.line()).unwrap();
        }
        conn.flush().await.unwrap();
    });
    let (handle, _driver) = QueuedFramed::builder().connect(addr).await.unwrap().spawn();
    let mut tasks = Vec::new();
    for t in 0..4 {
        let h = handle.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                // Push the write and its read under one order: a read queued
                // by one task and a write by another still pair up in FIFO
                // order on both sides, so check the count, not the pairing.
                h.push_write(LineCodec::new(), format!("{t}-{i}")).unwrap();
                let _ = h.read(LineCodec::new()).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    server.await.unwrap();
}

#[tokio::test]
async fn custom_tokio_util_codecs_work_as_requests() {
    let (io, _stats) = MockIo::new([data(b"\x00\x03abcline\n")]);
    let mut conn = QueuedFramed::new(io);
    let frame = conn
        .read(
            tokio_util::codec::LengthDelimitedCodec::builder()
                .length_field_length(2)
                .new_codec(),
        )
        .await
        .unwrap();
    assert_eq!(&frame[..], b"abc");
    let s = conn
        .read(tokio_util::codec::LinesCodec::new())
        .await
        .unwrap();
    assert_eq!(s, "line");
}

#[tokio::test]
async fn sink_and_stream_with_a_default_codec_over_tcp() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        let conn = QueuedFramed::with_codec(sock, LineCodec::new());
        let (mut sink, mut stream) = conn.split();
        while let Some(line) = stream.next().await {
            let line = line.unwrap();
            sink.send(line.into_line()).await.unwrap();
        }
    });
    let sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut conn = QueuedFramed::with_codec(sock, LineCodec::new());
    for i in 0..50 {
        conn.feed(format!("line {i}")).await.unwrap();
    }
    conn.flush().await.unwrap();
    for i in 0..50 {
        assert_eq!(
            conn.next().await.unwrap().unwrap().into_line(),
            format!("line {i}").as_bytes()
        );
    }
    SinkExt::<String>::close(&mut conn).await.unwrap();
    server.await.unwrap();
}

// ----- many callers on one spawned handle --------------------------------------

/// Callers on several threads queue calls while the driver runs its turns
/// on another: whether a call goes through the engine's lock or, while the
/// driver holds it, through the inbox, every caller gets its own answer
/// and the server sees each caller's requests in the order they were made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_each_get_their_own_answers() {
    const CALLERS: usize = 4;
    const CALLS: usize = 3_000;
    let (ours, theirs) = tokio::io::duplex(1 << 12);
    let server = tokio::spawn(async move {
        // Echo, checking that each caller's sequence numbers arrive in order.
        let mut conn = QueuedFramed::new(theirs);
        let mut codec = LineCodec::new();
        let mut next = [0usize; CALLERS];
        while let Ok(line) = conn.read_with(&mut codec).await {
            let text = std::str::from_utf8(line.line()).unwrap().to_owned();
            let (who, n) = text.split_once(' ').unwrap();
            let (who, n): (usize, usize) = (who.parse().unwrap(), n.parse().unwrap());
            assert_eq!(n, next[who], "caller {who}'s requests in order");
            next[who] += 1;
            conn.push_write(LineCodec::new(), text).unwrap();
        }
        let _ = conn.flush().await;
        next
    });
    let (handle, _driver) = QueuedFramed::builder().autocork(true).build(ours).spawn();
    let callers: Vec<_> = (0..CALLERS)
        .map(|who| {
            let handle = handle.clone();
            tokio::spawn(async move {
                let mut window = std::collections::VecDeque::new();
                for n in 0..CALLS {
                    let req = format!("{who} {n}");
                    let t = handle.call(LineCodec::new(), req.clone(), LineCodec::new());
                    window.push_back((req, t));
                    if window.len() == 16 {
                        let (req, t) = window.pop_front().unwrap();
                        assert_eq!(t.await.unwrap().line(), req.as_bytes());
                    }
                }
                for (req, t) in window {
                    assert_eq!(t.await.unwrap().line(), req.as_bytes());
                }
            })
        })
        .collect();
    for c in callers {
        tokio::time::timeout(Duration::from_secs(60), c)
            .await
            .expect("callers finish")
            .unwrap();
    }
    handle.push_shutdown().unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(60), server)
        .await
        .expect("server ends")
        .unwrap();
    assert_eq!(seen, [CALLS; CALLERS]);
}

/// Runs `inside` in a completion on a spawned connection over `io` and,
/// while that completion holds the engine, `outside` on another thread
/// (where a handle queues into the inbox, checked against the state the
/// engine published before the completion ran). Returns the handle, its
/// driver, the other end, and what `outside` returned.
async fn while_a_completion_holds_the_engine<T: Send + 'static>(
    builder: anyframe::Builder,
    pipe: usize,
    inside: impl FnOnce(&mut anyframe::Requests<'_>) + Send + 'static,
    outside: impl FnOnce(&anyframe::Handle) -> T + Send + 'static,
) -> (
    anyframe::Handle,
    anyframe::Driver<tokio::io::DuplexStream>,
    tokio::io::DuplexStream,
    T,
) {
    let (io, mut peer) = tokio::io::duplex(pipe);
    let (handle, driver) = builder.build(io).spawn();
    let (entered_tx, entered_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let read = handle.push_read_with(LineCodec::new(), move |line, q| {
        inside(q);
        let _ = entered_tx.send(());
        // Held until `outside` is done, or a moment if it waits for us.
        let _ = release_rx.recv_timeout(Duration::from_millis(300));
        Ok(line)
    });
    let h2 = handle.clone();
    let other = std::thread::spawn(move || {
        entered_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let out = outside(&h2);
        let _ = release_tx.send(());
        out
    });
    peer.write_all(b"go\n").await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the read completes")
        .unwrap();
    let out = other.join().unwrap();
    (handle, driver, peer, out)
}

/// A write queued from another thread while a completion holds the engine
/// is checked against the room under `wbuf_max` published before the
/// completion's push; every byte queued counts, whichever way it was
/// queued. Two ways to the cap (100 bytes):
/// * the completion's 60 bytes take more than its half of the cap, so the
///   inbox is sealed, and 45 bytes queued meanwhile, within the room the
///   inbox was promised, meet the cap through the lock;
/// * the completion's 40 bytes stay within its half (nothing is sealed),
///   and 70 bytes queued meanwhile, within the room left but beyond the
///   inbox's half, take the locked path and meet the cap there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wbuf_max_counts_a_completions_push_and_one_queued_meanwhile() {
    for (inside, outside) in [(60, 45), (40, 70)] {
        let mut builder = QueuedFramed::builder();
        builder.wbuf_max(Some(100));
        // A one-byte pipe the peer does not read: almost nothing is written.
        let (handle, _driver, _peer, pushed) = while_a_completion_holds_the_engine(
            builder,
            1,
            move |q| q.push_bytes(vec![b'a'; inside]).unwrap(),
            move |h| h.push_bytes(vec![b'b'; outside]),
        )
        .await;
        let e = pushed.expect_err("over wbuf_max");
        assert_eq!(e.kind(), ErrorKind::NoSpace, "{inside} + {outside}: {e}");
        let queued = handle.write_buffered();
        assert!(queued <= 100, "{inside} + {outside}: {queued}");
    }
}

/// A write queued from another thread while a completion calls
/// `push_shutdown` was accepted (`Ok`), then moved into the write queue
/// after the half-close: it never reached the peer, and writing it closed
/// the connection with a `BrokenPipe` nobody caused. Now it is either
/// written before the half-close or refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_queued_while_a_completion_shuts_down_is_sent_or_refused() {
    // A pipe that takes everything: the half-close can follow at once.
    let (handle, driver, mut peer, pushed) = while_a_completion_holds_the_engine(
        QueuedFramed::builder(),
        1 << 16,
        |q| {
            q.push_bytes(&b"bye\n"[..]).unwrap();
            q.push_shutdown().unwrap();
        },
        |h| h.push_bytes(&b"late\n"[..]),
    )
    .await;
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), peer.read_to_end(&mut got))
        .await
        .expect("the peer reads to the half-close")
        .unwrap();
    match pushed {
        Ok(()) => assert_eq!(got, b"bye\nlate\n"),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
            assert_eq!(got, b"bye\n");
        }
    }
    tokio::time::timeout(Duration::from_secs(10), handle.flush())
        .await
        .expect("flush resolves")
        .unwrap();
    assert!(handle.error().is_none(), "{:?}", handle.error());
    drop(handle);
    let _ = tokio::time::timeout(Duration::from_secs(10), driver).await;
}

// ----- the property: random request sequences over random fragmentation ----

mod property {
    use super::*;
    use proptest::prelude::*;

    /// One frame and how to read it back.
    #[derive(Debug, Clone)]
    enum Frame {
        Line(Vec<u8>),
        Chunk(Vec<u8>),
        Pack(PackFormat, Vec<u8>),
        Netstring(Vec<u8>),
        Json(serde_json::Value),
        Cbor(i64, String),
        Regex(Vec<u8>),
    }

    fn frame() -> impl Strategy<Value = Frame> {
        let bytes = prop::collection::vec(any::<u8>(), 0..40);
        let text = "[a-z ]{0,30}";
        prop_oneof![
            text.prop_map(|s| Frame::Line(s.into_bytes())),
            prop::collection::vec(any::<u8>(), 1..40).prop_map(Frame::Chunk),
            (
                prop::sample::select(PackFormat::ALL.to_vec()),
                bytes.clone()
            )
                .prop_map(|(f, b)| Frame::Pack(f, b)),
            bytes.clone().prop_map(Frame::Netstring),
            (any::<i32>(), text).prop_map(|(n, s)| Frame::Json(json!({"n": n, "s": s}))),
            (any::<i64>(), "[a-z]{0,20}").prop_map(|(n, s)| Frame::Cbor(n, s)),
            "[a-y]{0,30}".prop_map(|s| Frame::Regex(s.into_bytes())),
        ]
    }

    fn encode(frames: &[Frame]) -> Vec<u8> {
        use tokio_util::codec::Encoder;
        let mut out = BytesMut::new();
        for f in frames {
            match f {
                Frame::Line(b) => LineCodec::new().encode(&b[..], &mut out).unwrap(),
                Frame::Chunk(b) => out.put_slice(b),
                Frame::Pack(fmt, b) => PackstringCodec::new(*fmt).encode(&b[..], &mut out).unwrap(),
                Frame::Netstring(b) => NetstringCodec::new().encode(&b[..], &mut out).unwrap(),
                Frame::Json(v) => JsonCodec::<serde_json::Value>::new()
                    .encode(v, &mut out)
                    .unwrap(),
                Frame::Cbor(n, s) => CborCodec::<(i64, String)>::new()
                    .encode(&(*n, s.clone()), &mut out)
                    .unwrap(),
                Frame::Regex(b) => {
                    out.put_slice(b);
                    out.put_slice(b"z");
                }
            }
        }
        out.to_vec()
    }

    async fn read_back(conn: &mut QueuedFramed<MockIo>, f: &Frame) {
        match f {
            Frame::Line(b) => assert_eq!(conn.read(LineCodec::new()).await.unwrap().line(), &b[..]),
            Frame::Chunk(b) => assert_eq!(
                &conn.read(ChunkCodec::new(b.len())).await.unwrap()[..],
                &b[..]
            ),
            Frame::Pack(fmt, b) => {
                assert_eq!(
                    &conn.read(PackstringCodec::new(*fmt)).await.unwrap()[..],
                    &b[..]
                )
            }
            Frame::Netstring(b) => {
                assert_eq!(&conn.read(NetstringCodec::new()).await.unwrap()[..], &b[..])
            }
            Frame::Json(v) => assert_eq!(
                &conn
                    .read(JsonCodec::<serde_json::Value>::new())
                    .await
                    .unwrap(),
                v
            ),
            Frame::Cbor(n, s) => {
                assert_eq!(
                    conn.read(CborCodec::<(i64, String)>::new()).await.unwrap(),
                    (*n, s.clone())
                )
            }
            Frame::Regex(b) => {
                let codec =
                    anyframe::codecs::RegexCodec::new(regex::bytes::Regex::new("z").unwrap())
                        .unwrap();
                let got = conn.read(codec).await.unwrap();
                assert_eq!(&got[..got.len() - 1], &b[..]);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn random_requests_over_random_fragments_yield_the_encoded_frames(
            frames in prop::collection::vec(frame(), 1..12),
            sizes in prop::collection::vec(1usize..17, 1..8),
            batch_lines in any::<bool>(),
        ) {
            let wire = encode(&frames);
            let mut script = Vec::new();
            let mut rest = &wire[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = sizes[i % sizes.len()].min(rest.len());
                script.push(Step::Data(rest[..n].to_vec()));
                if i % 3 == 0 {
                    script.push(Step::Pending);
                }
                rest = &rest[n..];
                i += 1;
            }
            script.push(Step::Eof);
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let (io, _stats) = MockIo::new(script);
                let mut conn = QueuedFramed::new(io);
                let mut i = 0;
                while i < frames.len() {
                    // A run of lines, optionally through read_many with the
                    // run's length as the limit: the same lines, in order,
                    // and nothing of the next frame taken.
                    let run = frames[i..]
                        .iter()
                        .take_while(|f| matches!(f, Frame::Line(_)))
                        .count();
                    if batch_lines && run > 0 {
                        let (mut codec, mut got) = (LineCodec::new(), Vec::new());
                        while got.len() < run {
                            let want = run - got.len();
                            let n = conn
                                .read_many(&mut codec, &mut got, want)
                                .await
                                .unwrap();
                            assert!(n > 0, "lines still to come");
                        }
                        for (f, line) in frames[i..i + run].iter().zip(&got) {
                            let Frame::Line(b) = f else { unreachable!() };
                            assert_eq!(line.line(), &b[..]);
                        }
                        i += run;
                    } else {
                        read_back(&mut conn, &frames[i]).await;
                        i += 1;
                    }
                }
                assert!(conn.read_buffer().is_empty());
                // And nothing is left: the next read is a clean EPIPE.
                let e = conn.read(ChunkCodec::new(1)).await.unwrap_err();
                assert_eq!(e.kind(), ErrorKind::BrokenPipe);
            });
        }
    }

    #[test]
    fn regex_codec_is_split_only_where_documented() {
        // Sanity check for the property above: a one-byte terminator regex
        // is split-invariant, so it may join the random mix.
        let mut b = BytesMut::from(&b"abz"[..]);
        let mut c =
            anyframe::codecs::RegexCodec::new(regex::bytes::Regex::new("z").unwrap()).unwrap();
        let f = tokio_util::codec::Decoder::decode(&mut c, &mut b)
            .unwrap()
            .unwrap();
        assert_eq!(&f[..], b"abz");
        assert!(!b.has_remaining());
    }
}

/// The same request/response shape against `tokio_test`'s scripted IO,
/// which checks that every write is exactly the scripted one, in order, and
/// that the reads are consumed as scripted (it panics on any deviation).
#[tokio::test]
async fn scripted_exchange_with_tokio_test_builder() {
    let io = tokio_test::io::Builder::new()
        .read(b"HELO client\r\n\x00\x03")
        .wait(Duration::from_millis(5))
        .read(b"abc")
        .write(b"250 hello client\n3:abc,")
        .read(b"QUIT\n")
        .write(b"221 bye\n")
        .build();
    let mut conn = QueuedFramed::new(io);
    let helo = conn.read(LineCodec::new()).await.unwrap();
    let blob = conn
        .read(PackstringCodec::new(PackFormat::U16Be))
        .await
        .unwrap();
    conn.push_write(
        LineCodec::new(),
        [&b"250 hello "[..], &helo.line()[5..]].concat(),
    )
    .unwrap();
    conn.push_write(NetstringCodec::new(), &blob[..]).unwrap();
    // Both writes leave as one, before the next read waits.
    assert_eq!(conn.read(LineCodec::new()).await.unwrap().line(), b"QUIT");
    conn.write(LineCodec::new(), "221 bye").await.unwrap();
}

// ---------------------------------------------------------------------------
// read_many: the batch form of read_with

#[tokio::test]
async fn read_many_takes_what_one_read_brought_without_reading_again() {
    let (io, stats) = MockIo::new([
        data(b"a\nb\r\nc\npart"),
        Step::Pending,
        data(b"ial\n"),
        Step::Eof,
    ]);
    let mut conn = QueuedFramed::new(io);
    let (mut codec, mut lines) = (LineCodec::new(), Vec::new());
    // The limit holds: two of the three lines, the third stays buffered.
    assert_eq!(conn.read_many(&mut codec, &mut lines, 2).await.unwrap(), 2);
    assert_eq!(conn.read_buffer(), b"c\npart");
    assert_eq!(
        conn.read_many(&mut codec, &mut lines, 100).await.unwrap(),
        1
    );
    assert_eq!(
        stats.lock().unwrap().read_calls,
        1,
        "no read past the batch"
    );
    assert_eq!(conn.read_buffer(), b"part");
    // The limit holds, and the rest comes next time.
    assert_eq!(conn.read_many(&mut codec, &mut lines, 1).await.unwrap(), 1);
    assert_eq!(conn.read_many(&mut codec, &mut lines, 0).await.unwrap(), 0);
    assert_eq!(conn.read_many(&mut codec, &mut lines, 5).await.unwrap(), 0);
    let got: Vec<_> = lines.iter().map(|l| (l.line(), l.eol())).collect();
    assert_eq!(
        got,
        [
            (&b"a"[..], &b"\n"[..]),
            (b"b", b"\r\n"),
            (b"c", b"\n"),
            (b"partial", b"\n"),
        ]
    );
}

#[tokio::test]
async fn read_many_keeps_the_frames_before_an_error_and_the_bytes_after_it() {
    // A line over the limit after two good ones: the two are delivered in
    // `frames`, the error is returned, and (non-fatal, Discard) the handle
    // goes on with the next line.
    let (io, _) = MockIo::new([data(b"ok\nfine\nmuch too long\nnext\n"), Step::Eof]);
    let mut conn = QueuedFramed::new(io);
    let mut codec = LineCodec::builder()
        .max_length(4)
        .overflow(anyframe::codecs::OverflowPolicy::Discard)
        .build()
        .unwrap();
    let mut lines = Vec::new();
    let err = conn
        .read_many(&mut codec, &mut lines, 10)
        .await
        .unwrap_err();
    assert_eq!((err.kind(), err.is_fatal()), (ErrorKind::NoSpace, false));
    assert_eq!(
        lines.iter().map(|l| l.line()).collect::<Vec<_>>(),
        [&b"ok"[..], b"fine"]
    );
    lines.clear();
    assert_eq!(conn.read_many(&mut codec, &mut lines, 10).await.unwrap(), 1);
    assert_eq!(lines[0].line(), b"next");
    assert_eq!(conn.read_many(&mut codec, &mut lines, 10).await.unwrap(), 0);
}

#[tokio::test]
async fn read_many_at_eof_inside_a_frame_is_epipe_with_the_bytes_kept() {
    let (io, _) = MockIo::new([data(b"one\ntw"), Step::Eof]);
    let mut conn = QueuedFramed::new(io);
    let (mut codec, mut lines) = (LineCodec::new(), Vec::new());
    assert_eq!(conn.read_many(&mut codec, &mut lines, 10).await.unwrap(), 1);
    let err = conn
        .read_many(&mut codec, &mut lines, 10)
        .await
        .unwrap_err();
    assert_eq!((err.kind(), err.is_fatal()), (ErrorKind::BrokenPipe, true));
    assert_eq!(conn.read_buffer(), b"tw");
    assert_eq!(lines.len(), 1);
}

#[tokio::test]
async fn read_many_runs_after_the_queued_requests() {
    let (io, _) = MockIo::new([data(b"first\nsecond\nthird\n"), Step::Eof]);
    let mut conn = QueuedFramed::new(io);
    let queued = conn.push_read(LineCodec::new());
    let (mut codec, mut lines) = (LineCodec::new(), Vec::new());
    assert_eq!(conn.read_many(&mut codec, &mut lines, 10).await.unwrap(), 2);
    assert_eq!(conn.wait(queued).await.unwrap().line(), b"first");
    assert_eq!(lines[0].line(), b"second");
}

#[tokio::test]
async fn read_many_with_a_decoder_that_consumes_nothing_ends_the_batch() {
    let (io, _) = MockIo::new([data(b"abc"), Step::Eof]);
    let mut conn = QueuedFramed::new(io);
    let (mut chunk0, mut frames) = (ChunkCodec::new(0), Vec::new());
    let n = conn
        .read_many(&mut chunk0, &mut frames, usize::MAX)
        .await
        .unwrap();
    assert_eq!(
        (n, frames.len()),
        (1, 1),
        "the first frame consumed nothing"
    );
    assert!(frames[0].is_empty());
    // Nothing was consumed: the bytes are the next request's.
    assert_eq!(&conn.read(ChunkCodec::new(3)).await.unwrap()[..], b"abc");
}

/// The same on a `Handle`: a batch whose first frame consumed nothing is
/// that frame alone.
#[tokio::test]
async fn handle_read_many_with_a_decoder_that_consumes_nothing_is_one_frame() {
    let (io, _) = MockIo::new([data(b"abc"), Step::Eof]);
    let (h, _driver) = QueuedFramed::new(io).spawn();
    let (_, frames) = h.read_many(ChunkCodec::new(0), 10).await.unwrap();
    assert_eq!(frames.len(), 1);
    assert_eq!(&h.read(ChunkCodec::new(3)).await.unwrap()[..], b"abc");
}

#[tokio::test]
async fn line_batches_take_the_buffered_lines_and_leave_the_rest() {
    let (io, stats) = MockIo::new([
        data(b"a\nbb\r\nc"),
        Step::Pending,
        data(b"cc\n"),
        data(b"tail"),
        Step::Eof,
    ]);
    let mut conn = QueuedFramed::new(io);
    let mut codec = LineBatchCodec::new();
    let batch = conn.read_with(&mut codec).await.unwrap();
    assert_eq!(batch.as_bytes(), b"a\nbb\r\n");
    assert_eq!(stats.lock().unwrap().read_calls, 1);
    // The partial line waits for the next read, scanned once.
    assert_eq!(conn.read_buffer(), b"c");
    let batch = conn.read_with(&mut codec).await.unwrap();
    assert_eq!(batch.get(0).unwrap().line(), b"ccc");
    assert_eq!(batch.len(), 1);
    // Another decoder takes what no line ended, as with LineCodec.
    assert_eq!(&conn.read(ChunkCodec::new(4)).await.unwrap()[..], b"tail");
    let err = conn.read_with(&mut codec).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrokenPipe);
}
