//! What the length-aware decoders reserve in a buffer that is already
//! large and full: nothing (a reservation there would double it, as
//! `BytesMut` grows as `Vec` does), so a peer trickling a long frame does
//! not leave the buffer twice the size of what it holds.

use anyframe_codecs::{ChunkCodec, LineCodec, NetstringCodec, PackFormat, PackstringCodec};
use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

const KIB: usize = 1024;

/// A buffer holding exactly `head` and then filler up to `len` bytes, with
/// no spare capacity.
fn full(head: &[u8], len: usize) -> BytesMut {
    let mut buf = BytesMut::with_capacity(len);
    buf.extend_from_slice(head);
    buf.resize(len, b'x');
    assert_eq!(buf.capacity(), len);
    buf
}

fn assert_not_doubled<D: Decoder>(what: &str, mut codec: D, head: &[u8])
where
    D::Error: std::fmt::Debug,
{
    const HELD: usize = 1024 * KIB;
    let mut buf = full(head, HELD);
    assert!(codec.decode(&mut buf).unwrap().is_none());
    assert!(
        buf.capacity() <= HELD + 64 * KIB,
        "{what}: a full buffer of {HELD} B grew to {} B",
        buf.capacity()
    );
}

#[test]
fn packstring_does_not_double_a_full_buffer_mid_frame() {
    let codec = PackstringCodec::with_max_length(PackFormat::U32Be, 1 << 30);
    assert_not_doubled("packstring", codec, &(1u32 << 30).to_be_bytes());
}

#[test]
fn netstring_does_not_double_a_full_buffer_mid_frame() {
    let codec = NetstringCodec::with_max_length(1 << 30);
    assert_not_doubled("netstring", codec, format!("{}:", 1 << 30).as_bytes());
}

#[test]
fn chunk_does_not_double_a_full_buffer_mid_frame() {
    assert_not_doubled("chunk", ChunkCodec::new(1 << 30), b"");
}

/// Decodes a buffer holding the first `held` bytes of a frame (`head`,
/// then filler) and checks that the buffer then has room for `room` bytes
/// in all and not much more: the rest of the frame is reserved (at most 64
/// KiB ahead), not the whole frame again on top of what is held.
fn assert_room_for_the_rest<D: Decoder>(
    what: &str,
    mut codec: D,
    head: &[u8],
    held: usize,
    room: usize,
) where
    D::Error: std::fmt::Debug,
{
    let mut buf = BytesMut::from(head);
    buf.resize(held, b'x');
    assert!(codec.decode(&mut buf).unwrap().is_none());
    assert!(
        (room..room + KIB).contains(&buf.capacity()),
        "{what}: room for {room} bytes with {held} held: {}",
        buf.capacity()
    );
}

/// A small buffer still gets room for the rest of the frame (up to 64
/// KiB), so a reader that grows by the room it is given reads it in one go.
#[test]
fn a_small_buffer_still_gets_room_for_the_frame() {
    let codec = PackstringCodec::new(PackFormat::U32Be);
    let prefix = 40_000u32.to_be_bytes();
    assert_room_for_the_rest("packstring", codec, &prefix, 1_004, 40_004);
    assert_room_for_the_rest("chunk", ChunkCodec::new(40_000), b"", 1_000, 40_000);
    let codec = NetstringCodec::new();
    assert_room_for_the_rest("netstring", codec, b"40000:", 1_006, 40_007);
}

/// The room reserved ahead of data is capped at 64 KiB, however long the
/// frame: a larger frame's buffer grows as its bytes arrive.
#[test]
fn a_chunk_decoder_reserves_at_most_64_kib_ahead() {
    assert_room_for_the_rest("1 GiB chunk", ChunkCodec::new(1 << 30), b"", 0, 64 * KIB);
}

/// Only a buffer smaller than 64 KiB is grown by a decoder: one of exactly
/// 64 KiB with room to spare is left for its reader to grow.
#[test]
fn a_buffer_of_64_kib_is_left_to_its_reader() {
    let mut codec = ChunkCodec::new(1 << 20);
    let mut buf = BytesMut::with_capacity(64 * KIB);
    buf.extend_from_slice(&[b'x'; KIB]);
    assert_eq!(buf.capacity(), 64 * KIB);
    assert!(codec.decode(&mut buf).unwrap().is_none());
    assert_eq!(buf.capacity(), 64 * KIB);
}

/// An encoder reserves what it writes: one 100 KiB payload into an empty
/// buffer leaves it at most a little over the frame, whatever the format.
#[test]
fn encoders_reserve_what_they_write() {
    fn frame_room<E: Encoder<Vec<u8>>>(mut codec: E) -> (usize, usize)
    where
        E::Error: std::fmt::Debug,
    {
        let mut out = BytesMut::new();
        codec.encode(vec![b'x'; 100 * KIB], &mut out).unwrap();
        (out.len(), out.capacity())
    }
    for (what, (len, capacity)) in [
        (
            "packstring",
            frame_room(PackstringCodec::new(PackFormat::U32Be)),
        ),
        (
            "packstring w",
            frame_room(PackstringCodec::new(PackFormat::Ber)),
        ),
        ("netstring", frame_room(NetstringCodec::new())),
        ("chunk", frame_room(ChunkCodec::new(100 * KIB))),
        ("line", frame_room(LineCodec::new())),
    ] {
        assert!(len >= 100 * KIB, "{what}: {len}");
        assert!(
            capacity <= len + len / 8,
            "{what}: {len} bytes written into {capacity} bytes of room"
        );
    }
}
