//! CBOR data items: AnyEvent::Handle's `cbor` read and write types.
//!
//! [`CborCodec<T>`] decodes one CBOR data item (RFC 8949) per frame into any
//! `serde::de::DeserializeOwned` type (by default [`serde_cbor::Value`]) and
//! encodes any `Serialize` value. [`RawCborCodec`] frames the same way but
//! hands out the item's bytes, zero-copy.
//!
//! The user-facing documentation is on the types.

use std::any::{Any, TypeId};
use std::fmt;
use std::marker::PhantomData;

use bytes::{Buf, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::codec::{Decoder, Encoder};

use crate::error::Error;
use crate::scan::Scan;
use crate::scan::cbor::{CborLimits, CborScanner};

mod value;

/// The codec name in errors.
const CODEC: &str = "cbor";

/// Default largest data item, in bytes: 16 MiB.
///
/// The same bound as JSON texts: far above a protocol message, small enough
/// that a declared length cannot make a connection wait for (and buffer)
/// gigabytes. The value decoded from an item can be much larger than the
/// item: up to about 256 times for a [`serde_cbor::Value`] (see "Memory" on
/// [`CborCodec`]), so a server that decodes untrusted input into `Value`
/// should set a lower limit.
pub const DEFAULT_CBOR_MAX_SIZE: usize = 16 * 1024 * 1024;

/// Default deepest nesting of arrays, maps and tags: 128.
///
/// serde_cbor refuses 128 levels by itself and so bounds its recursion; the
/// scanner's limit makes a deep partial item fail at once instead of being
/// buffered first.
pub const DEFAULT_CBOR_MAX_DEPTH: usize = 128;

/// Decodes CBOR data items into `T` and encodes `T` as CBOR.
///
/// `T` defaults to [`serde_cbor::Value`]. The decoder needs
/// `T: DeserializeOwned + 'static`; the encoder takes `T` or `&T` for `T: Serialize`
/// and writes plain CBOR: no self-describe tag, no packed encoding, the
/// shortest head and float forms serde_cbor picks.
///
/// # How an item is found
///
/// A resumable scanner reads item heads, keeps a stack of how many items each
/// open array, map or tag still expects, and skips string bodies without
/// looking at them. It resumes where it stopped when more bytes arrive, so
/// total work is linear however the input is split. When the item is
/// complete it is split off and decoded once. (Into [`serde_cbor::Value`],
/// an item that arrived whole is read at once, without the scan, by a
/// reader that builds the `Value` serde_cbor would build, checks what the
/// scanner checks and reserves nothing on a declared length.)
///
/// * Any data item may be at the top level; every one is delivered
///   (`0`, `false` and `null` included).
/// * Well-formedness (RFC 8949 Appendix C) is checked as the bytes arrive:
///   reserved additional information, a misplaced break, a wrong chunk in an
///   indefinite-length string and the like fail at the offending byte.
/// * A declared length is checked against [`DEFAULT_CBOR_MAX_SIZE`] (or the
///   configured size) as soon as the head is read: an item that could not
///   fit fails before any byte of its body is awaited. Nothing is reserved
///   on the strength of a declared length.
/// * Nesting of arrays, maps and tags is limited to
///   [`DEFAULT_CBOR_MAX_DEPTH`] (configurable), counted, never recursed.
///   An empty array or map is a level too, whatever its length encoding.
///
/// # Memory
///
/// The size limit bounds the encoded item, not what `T` makes of it.
/// Measured with a counting allocator (the repository's
/// `codecs/tests/decoded_size.rs`), a [`serde_cbor::Value`] holds per byte
/// of item: about 15 bytes for typical maps of short strings and numbers,
/// 32 for arrays of small integers, empty strings or empty arrays (a
/// one-byte item becomes a 32-byte `Value`), and up to about 256 for arrays
/// of one-entry maps (`a1 00 00`: three bytes that become a map node of
/// over 700 bytes). So at the default 16 MiB limit one item can become
/// about 230 MiB of typical `Value`, and up to about 4 GiB of hostile
/// `Value`.
///
/// For a server that decodes untrusted input into `Value`, pass a
/// `max_size` to [`CborCodec::with_limits`] of the memory one message may
/// take divided by 256: 256 KiB keeps every `Value` under 64 MiB. Typed
/// structs are bounded by their shape and usually far smaller;
/// [`RawCborCodec`] holds exactly the item.
///
/// # After an error
///
/// Decoding errors are non-fatal `EBADMSG` ([`ErrorKind::BadMessage`]), or
/// `EPIPE` ([`ErrorKind::BrokenPipe`]) from `decode_eof` for an item cut off
/// by the end of input (left in the buffer).
///
/// * **Not well-formed, or over a limit**: nothing is consumed and the
///   scanner starts over, so decoding again reports the same error; the
///   offset is that of the offending head from the start of the buffer.
///   CBOR has no resynchronisation point: close the stream, or skip bytes
///   yourself. (AnyEvent::Handle leaves the bytes too, and reports the error
///   again on every read, RT-cbor-3.)
/// * **Well-formed, but rejected by `T`** (a type mismatch, invalid UTF-8
///   in a text string, a simple value serde_cbor does not support): the item
///   is consumed and the stream stays in step.
///
/// # Interoperability with CBOR::XS
///
/// CBOR::XS writes ASCII Perl strings, hash keys included, as *byte*
/// strings. serde structs accept byte-string field names, and a `String`
/// (or a `HashMap<String, _>` key) accepts a byte string that is valid UTF-8,
/// so such items decode into typed Rust values as they are; into
/// [`serde_cbor::Value`] they come as `Value::Bytes`.
///
/// A Perl string that is not flagged as UTF-8 but holds characters from
/// U+0080 to U+00FF (Latin-1, as `"caf\xe9"`) is written the same way: a
/// byte string of its Latin-1 bytes, which is *not* UTF-8. As a hash key it
/// fails to decode into a `String` key (a non-fatal `EBADMSG`, the item
/// consumed), matches no struct field (a field named `café` stays missing)
/// and comes as `Value::Bytes` into [`serde_cbor::Value`]. Decode such keys
/// as bytes (`Value`, or a byte-buffer key type such as the serde_bytes
/// crate's `ByteBuf`) and convert them from Latin-1 yourself, or have the
/// Perl side call `utf8::upgrade` on them (CBOR::XS then writes text
/// strings).
///
/// # Tags, undefined, and what cannot be written exactly
///
/// Tags are kept both ways: a tagged item decodes into
/// [`serde_cbor::Value`] as `Value::Tag(tag, item)` and `Value::Tag` is
/// written with its tag; [`serde_cbor::tags::Tagged<T>`] does the same for a
/// typed value (its `tag` is `None` for an untagged item). A tagged item
/// decoded into a type that cannot hold the tag (a `u64`, a struct field
/// without `Tagged`) is refused, a non-fatal `EBADMSG` with the item
/// consumed. One exception is serde's: an untagged or internally tagged
/// enum, or a `#[serde(flatten)]` field, first buffers the item in serde's
/// own generic form, which takes a tag for a newtype wrapper and drops it
/// (a `Tagged` inside one sees no tag either). Where tags matter, decode
/// them outside such types: into `Value`, or a `Tagged` that is not inside
/// one.
///
/// A value that would not be written exactly is refused (`EINVAL`, nothing
/// written): an integer outside -2^64 ..= 2^64-1, say, or a NaN with a sign
/// or payload (serde_cbor writes every NaN as the one plain NaN). serde has no
/// way to express `undefined` (simple value 23): write
/// [`RawCborCodec::UNDEFINED`] through [`RawCborCodec`]. Reading it gives
/// `Value::Null` (serde_cbor's value type has no undefined; into an
/// `Option`, serde_cbor takes only null as `None` and refuses undefined),
/// and simple values other than false, true, null and undefined are
/// refused.
///
/// The limits are for reading: an item over `max_size`, or nested 128
/// deep (which serde_cbor refuses to read), is written, and the same
/// codec's decoder then refuses it. As with JSON, `Some(None)` is written as
/// null and read back as `None`, and a 128-bit integer outside the 64-bit
/// range inside an untagged or internally tagged enum is written but not
/// read back.
///
/// # The backend
///
/// serde_cbor is the CBOR library behind these codecs. It is unmaintained
/// (RUSTSEC-2021-0127, ignored on purpose in `deny.toml`) but complete and
/// fast, and it is kept for compatibility: its `Value` is the type users
/// name. It sits behind one small internal seam, so a maintained crate can
/// take its place.
///
/// # Errors
///
/// Decoding: `EBADMSG` for an item that is not well-formed, over a limit
/// ([`Error::is_limit`]), or rejected by `T` (a tag it cannot hold
/// included); `EPIPE` from `decode_eof` when the input ends inside an item.
/// Encoding: `EINVAL` when the value cannot be written exactly; nothing is
/// written then.
///
/// # Examples
///
/// ```
/// use anyframe_codecs::CborCodec;
/// use bytes::BytesMut;
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = CborCodec::<Vec<u32>>::new();
/// let mut wire = BytesMut::new();
/// codec.encode(vec![1, 2, 3], &mut wire)?;
/// assert_eq!(&wire[..], [0x83, 0x01, 0x02, 0x03]);
///
/// let mut buf = wire.split_to(2);
/// assert_eq!(codec.decode(&mut buf)?, None); // waits, remembers the head
/// buf.unsplit(wire);
/// assert_eq!(codec.decode(&mut buf)?, Some(vec![1, 2, 3]));
/// # Ok::<(), anyframe_codecs::Error>(())
/// ```
///
/// ```
/// use anyframe_codecs::{CborCodec, ErrorKind};
/// use bytes::BytesMut;
/// use tokio_util::codec::Decoder;
///
/// let mut codec: CborCodec = CborCodec::with_limits(1024, 8);
/// // A byte string declaring 2^32 bytes fails at its head.
/// let mut buf = BytesMut::from(&[0x5b, 0, 0, 0, 1, 0, 0, 0, 0][..]);
/// let err = codec.decode(&mut buf).unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::BadMessage);
/// assert!(err.is_limit());
/// assert_eq!(buf.len(), 9); // nothing consumed
/// ```
///
/// [`ErrorKind::BadMessage`]: crate::ErrorKind::BadMessage
/// [`ErrorKind::BrokenPipe`]: crate::ErrorKind::BrokenPipe
pub struct CborCodec<T = serde_cbor::Value> {
    scanner: CborScanner,
    _item: PhantomData<fn() -> T>,
}

impl<T> CborCodec<T> {
    /// A codec with [`DEFAULT_CBOR_MAX_SIZE`] and [`DEFAULT_CBOR_MAX_DEPTH`].
    pub fn new() -> CborCodec<T> {
        CborCodec::with_limits(DEFAULT_CBOR_MAX_SIZE, DEFAULT_CBOR_MAX_DEPTH)
    }

    /// A codec with the given largest item (bytes) and deepest nesting.
    ///
    /// serde_cbor has its own fixed nesting limit of 127 levels, so a deeper
    /// `max_depth` only helps [`RawCborCodec`].
    pub fn with_limits(max_size: usize, max_depth: usize) -> CborCodec<T> {
        CborCodec {
            scanner: CborScanner::new(CborLimits {
                max_size,
                max_depth,
            }),
            _item: PhantomData,
        }
    }

    /// The size limit for one item, in bytes.
    pub fn max_size(&self) -> usize {
        self.scanner.limits().max_size
    }

    /// The nesting limit.
    pub fn max_depth(&self) -> usize {
        self.scanner.limits().max_depth
    }
}

impl<T> Default for CborCodec<T> {
    fn default() -> Self {
        CborCodec::new()
    }
}

impl<T> Clone for CborCodec<T> {
    fn clone(&self) -> Self {
        CborCodec {
            scanner: self.scanner.clone(),
            _item: PhantomData,
        }
    }
}

impl<T> fmt::Debug for CborCodec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CborCodec")
            .field("item", &std::any::type_name::<T>())
            .field("scanner", &self.scanner)
            .finish()
    }
}

/// The most bytes the fast path reads: an item that does not end within
/// them goes the scanner's way. A `Value` can take 256 times the bytes it
/// is read from, and an item may turn out wrong only near its end (then
/// on every retry, since nothing is consumed): this bounds what is built
/// and thrown away to about 4 MiB, while every message of a typical size
/// still arrives whole within it. (A larger item that arrived whole pays
/// for reading its first 16 KiB twice: bounded, and small beside the scan
/// and the decode that follow.)
const FAST_WINDOW: usize = 16 * 1024;

impl<T: DeserializeOwned + 'static> CborCodec<T> {
    /// The fast path, for an item that starts at the front of `buf` and is
    /// decoded into a [`serde_cbor::Value`]: the bytes the direct reader
    /// ([`value::read_item`]) may read straight away (`decode` consumes the
    /// item if that worked), or `None` when only the scanner may take it.
    ///
    /// Only `Value` goes this way, and the reader reserves nothing ahead:
    /// serde's visitors for a `Vec`, a map and the like reserve room from
    /// the length a sequence announces (up to 1 MiB a level, every level of
    /// a nested item at once), and the scanner is what checks an announced
    /// length against the bytes there are.
    ///
    /// Most small items arrive whole, and then one read is all the work,
    /// without a scan first. When the item is incomplete, or anything the
    /// reader leaves alone (a tag, an indefinite length, invalid UTF-8, an
    /// item that is not well-formed), the scanner takes over from the same
    /// byte, so each item costs at most one wasted partial read and the
    /// total stays linear.
    ///
    /// It must accept exactly what the scanner path would, or fragmentation
    /// invariance breaks. An item the reader takes is well-formed (it takes
    /// no reserved head, break or indefinite length); CBOR is prefix-free,
    /// so the item ends where the reader stopped; the reader sees at most
    /// `max_size` bytes (and at most [`FAST_WINDOW`]), so an item over the
    /// size limit never decodes here, and a declared length the window
    /// cannot hold sends the item to the scanner before anything is read;
    /// it nests at most [`value::MAX_DEPTH`] levels, within the scanner's
    /// limit unless that is lower, when the fast path is off; and it gives
    /// the value serde_cbor would.
    #[inline]
    fn fast_window<'b>(&self, buf: &'b [u8]) -> Option<&'b [u8]> {
        if TypeId::of::<T>() != TypeId::of::<serde_cbor::Value>() {
            return None;
        }
        let limits = self.scanner.limits();
        if buf.is_empty() || !self.scanner.is_at_start() || limits.max_depth < value::MAX_DEPTH {
            return None;
        }
        Some(&buf[..buf.len().min(limits.max_size).min(FAST_WINDOW)])
    }
}

impl<T: DeserializeOwned + 'static> Decoder for CborCodec<T> {
    type Item = T;
    type Error = Error;

    /// Decodes the next item, if a whole one is buffered.
    ///
    /// # Errors
    ///
    /// See [`CborCodec`].
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<T>, Error> {
        // The item goes from the backend's `Result` straight into the one
        // returned: with a tuple or an `Option` in between, the compiler
        // copied a `Value` piecewise through each layout (tag apart, payload
        // at odd offsets), and the loads that then straddled two stores cost
        // about 5% of the whole decode.
        if let Some(window) = self.fast_window(buf) {
            let mut n = 0;
            if let Some(item) = value::read_item(window, &mut n) {
                // `T` is `Value` (`fast_window` checked), so this is a move.
                let mut slot = Some(item);
                if let Some(item) = (&mut slot as &mut dyn Any)
                    .downcast_mut::<Option<T>>()
                    .and_then(Option::take)
                {
                    buf.advance(n);
                    return Ok(Some(item));
                }
            }
        }
        match frame(&mut self.scanner, buf)? {
            Some(n) => {
                let result = backend::decode(&buf[..n]).map_err(|e| {
                    Error::bad_message(CODEC, "CBOR item rejected by the deserializer")
                        .with_source(e)
                        .with_bytes(&buf[..n])
                });
                buf.advance(n);
                result.map(Some)
            }
            None => Ok(None),
        }
    }

    /// As [`decode`](Self::decode); an empty buffer is a clean end.
    ///
    /// # Errors
    ///
    /// As `decode`, and `EPIPE` when the input ends inside an item, which is
    /// left in `buf`.
    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<T>, Error> {
        match self.decode(buf)? {
            Some(item) => Ok(Some(item)),
            None => at_eof(buf).map(|()| None),
        }
    }
}

impl<T: Serialize> Encoder<T> for CborCodec<T> {
    type Error = Error;

    /// Writes `item` as one CBOR data item.
    ///
    /// # Errors
    ///
    /// `EINVAL` if the value would not be written exactly (see
    /// [`CborCodec`]); `dst` is unchanged.
    fn encode(&mut self, item: T, dst: &mut BytesMut) -> Result<(), Error> {
        write_item(&item, dst)
    }
}

impl<T: Serialize> Encoder<&T> for CborCodec<T> {
    type Error = Error;

    /// As the by-value encoder, without taking the value.
    ///
    /// # Errors
    ///
    /// As the by-value encoder.
    fn encode(&mut self, item: &T, dst: &mut BytesMut) -> Result<(), Error> {
        write_item(item, dst)
    }
}

/// Frames CBOR data items without decoding them: each frame is the [`Bytes`]
/// of one complete, well-formed item, split off the read buffer without
/// copying.
///
/// Well-formedness and the limits are checked exactly as [`CborCodec`] does;
/// validity beyond that (UTF-8 in text strings, tag semantics, duplicate map
/// keys) is the caller's business. The encoder writes a `Bytes` as it is.
///
/// # Errors
///
/// As [`CborCodec`], without the errors from decoding into a type.
///
/// # Examples
///
/// ```
/// use anyframe_codecs::RawCborCodec;
/// use bytes::BytesMut;
/// use tokio_util::codec::Decoder;
///
/// let mut codec = RawCborCodec::new();
/// // [_ 1, "a"] then false, back to back.
/// let mut buf = BytesMut::from(&[0x9f, 0x01, 0x61, b'a', 0xff, 0xf4][..]);
/// assert_eq!(codec.decode(&mut buf)?.as_deref(), Some(&[0x9f, 0x01, 0x61, b'a', 0xff][..]));
/// assert_eq!(codec.decode(&mut buf)?.as_deref(), Some(&[0xf4][..]));
/// assert_eq!(codec.decode_eof(&mut buf)?, None);
/// # Ok::<(), anyframe_codecs::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct RawCborCodec {
    scanner: CborScanner,
}

impl RawCborCodec {
    /// The item `undefined` (simple value 23, the byte `f7`), which serde
    /// has no way to express: write it with this codec.
    ///
    /// # Examples
    ///
    /// ```
    /// use anyframe_codecs::RawCborCodec;
    /// use bytes::BytesMut;
    /// use tokio_util::codec::Encoder;
    ///
    /// let mut wire = BytesMut::new();
    /// RawCborCodec::new().encode(RawCborCodec::UNDEFINED, &mut wire)?;
    /// assert_eq!(&wire[..], [0xf7]);
    /// # Ok::<(), anyframe_codecs::Error>(())
    /// ```
    pub const UNDEFINED: Bytes = Bytes::from_static(&[0xf7]);

    /// A codec with [`DEFAULT_CBOR_MAX_SIZE`] and [`DEFAULT_CBOR_MAX_DEPTH`].
    pub fn new() -> RawCborCodec {
        RawCborCodec::with_limits(DEFAULT_CBOR_MAX_SIZE, DEFAULT_CBOR_MAX_DEPTH)
    }

    /// A codec with the given largest item (bytes) and deepest nesting.
    ///
    /// The scan keeps 16 bytes per open level of nesting, so a partial item
    /// costs up to `16 × max_depth` bytes beside the buffer: a `max_depth`
    /// raised to millions lets a peer make the scan hold many times what it
    /// sent (16 times, for an item of nothing but nested array heads).
    pub fn with_limits(max_size: usize, max_depth: usize) -> RawCborCodec {
        RawCborCodec {
            scanner: CborScanner::new(CborLimits {
                max_size,
                max_depth,
            }),
        }
    }

    /// The size limit for one item, in bytes.
    pub fn max_size(&self) -> usize {
        self.scanner.limits().max_size
    }

    /// The nesting limit.
    pub fn max_depth(&self) -> usize {
        self.scanner.limits().max_depth
    }
}

impl Default for RawCborCodec {
    fn default() -> Self {
        RawCborCodec::new()
    }
}

impl Decoder for RawCborCodec {
    type Item = Bytes;
    type Error = Error;

    /// Splits off the next item, if a whole one is buffered.
    ///
    /// # Errors
    ///
    /// See [`RawCborCodec`].
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        Ok(frame(&mut self.scanner, buf)?.map(|n| buf.split_to(n).freeze()))
    }

    /// As [`decode`](Self::decode); an empty buffer is a clean end.
    ///
    /// # Errors
    ///
    /// As `decode`, and `EPIPE` when the input ends inside an item.
    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        match self.decode(buf)? {
            Some(item) => Ok(Some(item)),
            None => at_eof(buf).map(|()| None),
        }
    }
}

impl Encoder<Bytes> for RawCborCodec {
    type Error = Error;

    /// Copies the item into `dst`.
    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), Error> {
        dst.extend_from_slice(&item);
        Ok(())
    }
}

/// Finds the end of the item at the front of `buf`: `Some(n)` for `buf[..n]`.
fn frame(scanner: &mut CborScanner, buf: &BytesMut) -> Result<Option<usize>, Error> {
    if buf.is_empty() {
        return Ok(None);
    }
    match scanner.scan(buf) {
        Scan::Incomplete => Ok(None),
        Scan::Complete(n) => Ok(Some(n)),
        Scan::Invalid(e) => Err(e.into_error(CODEC, buf)),
    }
}

/// End of input with no complete item: clean if nothing is left.
fn at_eof(buf: &BytesMut) -> Result<(), Error> {
    if buf.is_empty() {
        Ok(())
    } else {
        Err(Error::incomplete_at_eof(CODEC, buf.len()).with_bytes(buf))
    }
}

fn write_item<S: Serialize + ?Sized>(value: &S, dst: &mut BytesMut) -> Result<(), Error> {
    let start = dst.len();
    backend::encode(value, dst).map_err(|e| {
        dst.truncate(start);
        Error::invalid_input(CODEC, "value cannot be written as CBOR").with_source(e)
    })
}

/// The one seam between this codec and its CBOR library.
///
/// serde_cbor is unmaintained (RUSTSEC-2021-0127; the advisory is ignored,
/// with this reason, in `deny.toml`). It stays because its `Value` is the
/// type users name; a maintained crate (cbor4ii, say) can take its place by
/// providing these two functions. The scanner already guarantees that
/// `decode` sees exactly one well-formed item.
mod backend {
    use bytes::BytesMut;

    use crate::floats::{Floats, PlainNan};
    use crate::grow::GrowWriter;
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    pub(super) type Error = serde_cbor::Error;

    /// Decodes exactly one item that fills `item`.
    pub(super) fn decode<T: DeserializeOwned>(item: &[u8]) -> Result<T, Error> {
        serde_cbor::from_slice(item)
    }

    /// Appends one item to `dst`: plain serde_cbor defaults, no
    /// self-describe tag, no packed format.
    pub(super) fn encode<S: Serialize + ?Sized>(
        value: &S,
        dst: &mut BytesMut,
    ) -> Result<(), Error> {
        let mut ser = serde_cbor::Serializer::new(serde_cbor::ser::IoWrite::new(GrowWriter(dst)));
        value.serialize(Floats::<_, PlainNan>::new(&mut ser))
    }
}
