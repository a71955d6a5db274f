//! Plain bytes: AnyEvent's plain `push_write(data)` and a pass-through
//! reader.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::Error;

/// A pass-through codec: bytes in, bytes out, no framing.
///
/// The decoder yields everything buffered as one [`Bytes`] (split off
/// without copying) whenever the buffer is not empty, so frame boundaries
/// follow the reads: only the concatenation of the frames is independent of
/// how the input was split. The encoder appends the bytes as they are
/// (WT-plain-1). Neither side ever fails.
///
/// # Examples
///
/// ```
/// use anyframe_codecs::RawCodec;
/// use bytes::BytesMut;
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = RawCodec::new();
/// let mut buf = BytesMut::new();
/// codec.encode("GET / HTTP/1.0\r\n", &mut buf)?;
/// codec.encode(&b"\r\n"[..], &mut buf)?;
/// assert_eq!(codec.decode(&mut buf)?.unwrap(), "GET / HTTP/1.0\r\n\r\n");
/// assert_eq!(codec.decode(&mut buf)?, None);
/// # Ok::<(), anyframe_codecs::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawCodec(());

impl RawCodec {
    /// A pass-through codec.
    pub fn new() -> RawCodec {
        RawCodec(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        if buf.is_empty() {
            Ok(None)
        } else {
            Ok(Some(buf.split().freeze()))
        }
    }
}

/// Appends the bytes as they are.
///
/// # Errors
///
/// Never.
impl<T: AsRef<[u8]>> Encoder<T> for RawCodec {
    type Error = Error;

    fn encode(&mut self, item: T, dst: &mut BytesMut) -> Result<(), Error> {
        dst.extend_from_slice(item.as_ref());
        Ok(())
    }
}
