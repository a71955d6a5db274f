//! Using one configured encoder by reference.

use bytes::BytesMut;
use tokio_util::codec::Encoder;

/// An [`Encoder`] that borrows another one, so a configured codec can serve
/// every write without being cloned or rebuilt.
///
/// APIs that take an encoder by value (`FramedWrite::new`, a write queue's
/// `push_write`) accept `EncoderRef::new(&mut codec)`; the codec, and any
/// state it keeps, stays with the caller. (`tokio_util`'s `Encoder` is not
/// implemented for `&mut E`, and a crate other than tokio-util cannot add
/// that implementation.)
///
/// # Examples
///
/// ```
/// use anyframe_codecs::{EncoderRef, LineCodec};
/// use bytes::BytesMut;
/// use tokio_util::codec::Encoder;
///
/// fn write_one<E: Encoder<&'static str>>(mut e: E, item: &'static str, out: &mut BytesMut)
///     -> Result<(), E::Error>
/// {
///     e.encode(item, out)
/// }
///
/// let mut crlf = LineCodec::builder().eol("\r\n").build()?;
/// let mut out = BytesMut::new();
/// write_one(EncoderRef::new(&mut crlf), "HELO", &mut out)?;
/// write_one(EncoderRef::new(&mut crlf), "QUIT", &mut out)?;
/// assert_eq!(out, "HELO\r\nQUIT\r\n");
/// # Ok::<(), anyframe_codecs::Error>(())
/// ```
#[derive(Debug)]
pub struct EncoderRef<'a, E> {
    encoder: &'a mut E,
}

impl<'a, E> EncoderRef<'a, E> {
    /// Borrows `encoder` for as long as the adapter lives.
    pub fn new(encoder: &'a mut E) -> EncoderRef<'a, E> {
        EncoderRef { encoder }
    }

    /// The borrowed encoder.
    pub fn get_mut(&mut self) -> &mut E {
        self.encoder
    }
}

impl<'a, E> From<&'a mut E> for EncoderRef<'a, E> {
    fn from(encoder: &'a mut E) -> EncoderRef<'a, E> {
        EncoderRef::new(encoder)
    }
}

/// Encodes with the borrowed encoder.
///
/// # Errors
///
/// Whatever the borrowed encoder returns, unchanged.
impl<T, E: Encoder<T>> Encoder<T> for EncoderRef<'_, E> {
    type Error = E::Error;

    #[inline]
    fn encode(&mut self, item: T, dst: &mut BytesMut) -> Result<(), E::Error> {
        self.encoder.encode(item, dst)
    }
}
