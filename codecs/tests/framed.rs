//! Every byte-framing codec inside a plain tokio-util `Framed`, over a
//! small `tokio::io::duplex` pipe so frames arrive in pieces.

use anyframe_codecs::{
    ChunkCodec, ErrorKind, Line, LineCodec, NetstringCodec, PackFormat, PackstringCodec, RawCodec,
    RegexCodec, Utf8Line, Utf8LineCodec,
};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use regex::bytes::Regex;
use std::fmt::Debug;
use tokio::io::{AsyncWriteExt, duplex};
use tokio_util::codec::{Decoder, Encoder, Framed, FramedRead, FramedWrite};

/// A pipe buffer smaller than most frames, so reads split them.
const PIPE: usize = 7;

/// Sends `items` through one end with `codec`, reads the other end with a
/// clone of it until the stream ends, and returns what arrived.
async fn round_trip<C, I>(codec: C, items: Vec<I>) -> Vec<C::Item>
where
    C: Decoder<Error = anyframe_codecs::Error> + Encoder<I, Error = anyframe_codecs::Error> + Clone,
    C::Item: Debug,
{
    let (a, b) = duplex(PIPE);
    let mut tx = Framed::new(a, codec.clone());
    let mut rx = Framed::new(b, codec);
    let send = async move {
        for item in items {
            tx.send(item).await.expect("send");
        }
        tx.close().await.expect("close");
    };
    let recv = async move {
        let mut got = Vec::new();
        while let Some(frame) = rx.next().await {
            got.push(frame.expect("frame"));
        }
        got
    };
    tokio::join!(send, recv).1
}

#[tokio::test]
async fn line_codec_in_framed() {
    let got = round_trip(LineCodec::new(), vec!["hello", "", "a\rb", "world"]).await;
    assert_eq!(
        got,
        vec![
            Line::new("hello", "\n"),
            Line::new("", "\n"),
            Line::new("a\rb", "\n"),
            Line::new("world", "\n"),
        ]
    );
}

#[tokio::test]
async fn literal_and_regex_line_codecs_in_framed() {
    let codec = LineCodec::with_eol("<END>").unwrap();
    let got = round_trip(codec, vec!["one", "two<EN"]).await;
    assert_eq!(
        got,
        vec![Line::new("one", "<END>"), Line::new("two<EN", "<END>")]
    );

    let codec = LineCodec::builder()
        .eol_regex(Regex::new(r"\r\n|\n|\r").unwrap())
        .hold_open_match(true)
        .write_terminator("\r\n")
        .build()
        .unwrap();
    let got = round_trip(codec, vec!["x", "yz"]).await;
    assert_eq!(got, vec![Line::new("x", "\r\n"), Line::new("yz", "\r\n")]);
}

#[tokio::test]
async fn utf8_line_codec_in_framed() {
    let got = round_trip(Utf8LineCodec::new(), vec!["grüße", "😀😀😀"]).await;
    assert_eq!(
        got,
        vec![Utf8Line::new("grüße", "\n"), Utf8Line::new("😀😀😀", "\n")]
    );
}

#[tokio::test]
async fn chunk_codec_in_framed() {
    let codec = ChunkCodec::for_stream(10).unwrap();
    let got = round_trip(codec, vec!["0123456789", "abcdefghij"]).await;
    assert_eq!(got, vec!["0123456789", "abcdefghij"]);
}

#[tokio::test]
async fn packstring_codec_in_framed() {
    for fmt in PackFormat::ALL {
        let big = Bytes::from(vec![b'z'; 200]);
        let items = vec![Bytes::from_static(b"one"), Bytes::new(), big.clone()];
        let got = round_trip(PackstringCodec::new(fmt), items).await;
        assert_eq!(
            got,
            vec![Bytes::from_static(b"one"), Bytes::new(), big],
            "{fmt}"
        );
    }
}

#[tokio::test]
async fn netstring_codec_in_framed() {
    let got = round_trip(NetstringCodec::new(), vec!["hello", "", "0:xx,,"]).await;
    assert_eq!(got, vec!["hello", "", "0:xx,,"]);
}

#[tokio::test]
async fn raw_codec_in_framed() {
    let got = round_trip(RawCodec::new(), vec!["abc", "defghijklmnop"]).await;
    let joined: Vec<u8> = got.iter().flat_map(|b| b.iter().copied()).collect();
    assert_eq!(joined, b"abcdefghijklmnop");
}

#[tokio::test]
async fn regex_codec_reads_what_raw_codec_writes() {
    let (a, b) = duplex(PIPE);
    let mut tx = FramedWrite::new(a, RawCodec::new());
    let codec = RegexCodec::new(Regex::new(r"\r\n\r\n").unwrap()).unwrap();
    let mut rx = FramedRead::new(b, codec);
    let send = async move {
        tx.send("GET / HTTP/1.0\r\nHost: x\r\n\r\n").await.unwrap();
        tx.send("HEAD / HTTP/1.0\r\n\r\n").await.unwrap();
        // The encoder takes any `AsRef<[u8]>`: name the item type to close.
        SinkExt::<&str>::close(&mut tx).await.unwrap();
    };
    let recv = async move {
        let mut got = Vec::new();
        while let Some(frame) = rx.next().await {
            got.push(frame.unwrap());
        }
        got
    };
    let got = tokio::join!(send, recv).1;
    assert_eq!(
        got,
        vec![
            "GET / HTTP/1.0\r\nHost: x\r\n\r\n",
            "HEAD / HTTP/1.0\r\n\r\n"
        ]
    );
}

#[tokio::test]
async fn partial_frame_at_eof_surfaces_as_broken_pipe() {
    // Written before anything reads: the pipe must hold all of it.
    let (mut a, b) = duplex(64);
    let mut rx = FramedRead::new(b, LineCodec::new());
    a.write_all(b"complete\npartial").await.unwrap();
    drop(a);
    assert_eq!(
        rx.next().await.unwrap().unwrap(),
        Line::new("complete", "\n")
    );
    let err = rx.next().await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrokenPipe);
    assert_eq!(err.seen(), Some(7));
    assert!(rx.next().await.is_none());
}

#[tokio::test]
async fn errors_reach_the_stream_with_their_kind() {
    let (mut a, b) = duplex(64);
    let mut rx = FramedRead::new(b, NetstringCodec::with_max_length(5));
    a.write_all(b"2:ok,99:").await.unwrap();
    drop(a);
    assert_eq!(rx.next().await.unwrap().unwrap(), "ok");
    let err = rx.next().await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoSpace);
    // As io::Error, the typed error is still inside.
    let io: std::io::Error = err.into();
    assert_eq!(io.kind(), std::io::ErrorKind::InvalidData);
}
