//! Fixed-size chunks: AnyEvent's `chunk` read type.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::Error;

const CODEC: &str = "chunk";

/// The most a decoder reserves ahead of data it has not received: 64 KiB.
///
/// A declared or configured size is only a promise; reserving all of it up
/// front would let a 4-byte length prefix (or a careless `chunk(1 << 40)`)
/// allocate gigabytes before a single payload byte arrives. 64 KiB covers
/// most frames in one step and otherwise the buffer grows as bytes arrive.
/// Shared by every length-aware decoder of this crate.
pub(crate) const RESERVE_CAP: usize = 64 * 1024;

/// Reserves room for up to `needed` more bytes, never more than
/// [`RESERVE_CAP`] at once, and only in a buffer smaller than that.
///
/// `BytesMut` grows as `Vec` does, to at least twice its capacity, so a
/// reservation in a large full buffer would double it: a peer trickling a
/// large frame would leave the buffer up to twice what it holds. A buffer
/// of [`RESERVE_CAP`] or more grows as its reader grows it (the engine by
/// an eighth of what it holds, `FramedRead` as `Vec` does).
pub(crate) fn reserve_capped(buf: &mut BytesMut, needed: usize) {
    if buf.capacity() < RESERVE_CAP {
        buf.reserve(needed.min(RESERVE_CAP));
    }
}

/// A decoder for chunks of exactly `n` bytes, each a [`Bytes`] split off the
/// buffer without copying.
///
/// While a chunk is incomplete, the decoder reserves room for the rest, at
/// most 64 KiB, in a buffer smaller than that; a larger buffer grows as its
/// reader grows it.
///
/// # `n = 0`
///
/// [`ChunkCodec::new`] accepts `0` because AE's `chunk => 0` is a useful
/// one-shot request: it completes at once with an empty chunk, even on an
/// empty buffer and at end of input (RT-chunk-2). As a *stream* decoder
/// (a plain `Framed`), such a codec would yield empty frames forever; use
/// [`ChunkCodec::for_stream`] there, which refuses `0`.
///
/// # Errors and state
///
/// The decoder never fails on its own. At end of input with a partial chunk,
/// `decode_eof` fails with `EPIPE` (fatal), the partial chunk left in the
/// buffer and its length in [`Error::seen`].
///
/// # Examples
///
/// ```
/// use anyframe_codecs::ChunkCodec;
/// use bytes::BytesMut;
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = ChunkCodec::for_stream(3)?;
/// let mut buf = BytesMut::from(&b"abcde"[..]);
/// assert_eq!(codec.decode(&mut buf)?.unwrap(), "abc");
/// assert_eq!(codec.decode(&mut buf)?, None);
/// assert!(codec.decode_eof(&mut buf).unwrap_err().is_incomplete());
/// assert_eq!(buf, "de");
///
/// let mut out = BytesMut::new();
/// codec.encode("xyz", &mut out)?;
/// assert!(codec.encode("too long", &mut out).is_err());
/// # Ok::<(), anyframe_codecs::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkCodec {
    len: usize,
}

impl ChunkCodec {
    /// A codec for chunks of `n` bytes; `n = 0` gives an empty chunk on
    /// every call (a one-shot request; see the type docs).
    pub fn new(n: usize) -> ChunkCodec {
        ChunkCodec { len: n }
    }

    /// A codec for chunks of `n` bytes, for use as a stream decoder.
    ///
    /// # Errors
    ///
    /// `EINVAL` when `n` is `0`: the decoder would yield empty chunks
    /// without consuming anything, forever.
    pub fn for_stream(n: usize) -> Result<ChunkCodec, Error> {
        if n == 0 {
            return Err(Error::invalid_input(
                CODEC,
                "a zero-length chunk would match at once, forever",
            ));
        }
        Ok(ChunkCodec::new(n))
    }

    /// The chunk size in bytes.
    pub fn size(&self) -> usize {
        self.len
    }
}

impl Decoder for ChunkCodec {
    type Item = Bytes;
    type Error = Error;

    // Inlined with the split: the frame then stays in registers instead of
    // going back through memory, and the caller's loop is the whole decoder.
    #[inline(always)]
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        if buf.len() >= self.len {
            return Ok(Some(buf.split_to(self.len).freeze()));
        }
        reserve_capped(buf, self.len - buf.len());
        Ok(None)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        match self.decode(buf)? {
            Some(chunk) => Ok(Some(chunk)),
            None if buf.is_empty() => Ok(None),
            None => Err(Error::incomplete_at_eof(CODEC, buf.len()).with_limit(self.len)),
        }
    }
}

/// Writes the bytes as they are, after checking that they make one chunk.
///
/// # Errors
///
/// `EINVAL`, with nothing written, when the item is not exactly `n` bytes
/// long: a peer reading `chunk(n)` would fall out of step.
impl<T: AsRef<[u8]>> Encoder<T> for ChunkCodec {
    type Error = Error;

    fn encode(&mut self, item: T, dst: &mut BytesMut) -> Result<(), Error> {
        let data = item.as_ref();
        if data.len() != self.len {
            return Err(Error::invalid_input(CODEC, "item is not one chunk long")
                .with_limit(self.len)
                .with_seen(data.len() as u64));
        }
        dst.extend_from_slice(data);
        Ok(())
    }
}
