//! JSON texts: AnyEvent::Handle's `json` read and write types, fixed.
//!
//! [`JsonCodec<T>`] decodes one JSON text per frame into any
//! `serde::de::DeserializeOwned` type (by default [`serde_json::Value`]) and
//! encodes any `Serialize` value as compact JSON. [`RawJsonCodec`] frames
//! the same way but hands out the text's bytes, zero-copy, for callers that
//! parse themselves or forward texts unchanged.
//!
//! The user-facing documentation is on the types.

use std::fmt;
use std::marker::PhantomData;

use bytes::{Buf, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::codec::{Decoder, Encoder};

use crate::error::Error;
use crate::floats::{Finite, Floats};
use crate::grow::GrowWriter;
use crate::scan::Scan;
use crate::scan::json::{JsonLimits, JsonScanner, is_whitespace, leading_whitespace};

/// The codec name in errors.
const CODEC: &str = "json";

/// Default largest JSON text, in bytes: 16 MiB.
///
/// Far above any message a line protocol sends, small enough that a peer
/// cannot make one connection hold more than that in a partial text.
/// The value parsed from a text can be much larger than the text: up to
/// about 100 times for a [`serde_json::Value`] (see "Memory" on
/// [`JsonCodec`]), so a server that decodes untrusted input into `Value`
/// should set a lower limit. AnyEvent::Handle has no limit at all here
/// (RT-json-4).
pub const DEFAULT_JSON_MAX_SIZE: usize = 16 * 1024 * 1024;

/// Default deepest nesting of arrays and objects: 128.
///
/// serde_json refuses 128 levels by itself and so bounds its recursion; the
/// scanner's limit keeps a deep partial text from being buffered up to the
/// size limit first. JSON::XS uses 512, no common protocol needs 100.
pub const DEFAULT_JSON_MAX_DEPTH: usize = 128;

/// The whitespace written after a JSON text.
///
/// Only JSON whitespace is offered, so a reader (ours, JSON::XS, any NDJSON
/// reader) skips it between texts.
///
/// # Examples
///
/// ```
/// use anyframe_codecs::{JsonCodec, JsonSeparator};
/// use bytes::BytesMut;
/// use tokio_util::codec::Encoder;
///
/// let mut codec: JsonCodec<u32> = JsonCodec::builder().separator(JsonSeparator::CrLf).build();
/// let mut wire = BytesMut::new();
/// codec.encode(7, &mut wire)?;
/// assert_eq!(&wire[..], b"7\r\n");
/// # Ok::<(), anyframe_codecs::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum JsonSeparator {
    /// `\n`, as in NDJSON / JSON Lines; the default.
    #[default]
    Newline,
    /// `\r\n`.
    CrLf,
    /// A single space.
    Space,
    /// A tab.
    Tab,
}

impl JsonSeparator {
    /// The separator's bytes.
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            JsonSeparator::Newline => b"\n",
            JsonSeparator::CrLf => b"\r\n",
            JsonSeparator::Space => b" ",
            JsonSeparator::Tab => b"\t",
        }
    }
}

/// Options for [`JsonCodec`] and [`RawJsonCodec`].
///
/// Setters take and return `&mut Self`; [`build`](Self::build) and
/// [`build_raw`](Self::build_raw) may be called more than once.
///
/// # Examples
///
/// ```
/// use anyframe_codecs::JsonCodec;
/// use serde_json::Value;
///
/// let codec: JsonCodec<Value> = JsonCodec::builder()
///     .max_size(64 * 1024)
///     .max_depth(16)
///     .objects_only(true)
///     .separate_every_text(true)
///     .build();
/// assert_eq!(codec.max_size(), 64 * 1024);
/// assert!(codec.is_objects_only());
/// ```
pub struct JsonCodecBuilder<T = serde_json::Value> {
    limits: JsonLimits,
    write: WriteOptions,
    _item: PhantomData<fn() -> T>,
}

impl<T> Clone for JsonCodecBuilder<T> {
    fn clone(&self) -> Self {
        JsonCodecBuilder {
            limits: self.limits,
            write: self.write,
            _item: PhantomData,
        }
    }
}

impl<T> fmt::Debug for JsonCodecBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonCodecBuilder")
            .field("limits", &self.limits)
            .field("write", &self.write)
            .finish()
    }
}

/// How texts are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WriteOptions {
    separator: JsonSeparator,
    every_text: bool,
}

impl WriteOptions {
    /// Whether every text is written on a line of its own, so the reader
    /// takes a text and the end of its line as one frame (NDJSON).
    fn reads_lines(self) -> bool {
        self.every_text && matches!(self.separator, JsonSeparator::Newline | JsonSeparator::CrLf)
    }
}

impl<T> Default for JsonCodecBuilder<T> {
    fn default() -> Self {
        JsonCodecBuilder::new()
    }
}

impl<T> JsonCodecBuilder<T> {
    /// The defaults: [`DEFAULT_JSON_MAX_SIZE`], [`DEFAULT_JSON_MAX_DEPTH`],
    /// any value at the top level, `\n` after top-level numbers only.
    pub fn new() -> JsonCodecBuilder<T> {
        JsonCodecBuilder {
            limits: JsonLimits {
                max_size: DEFAULT_JSON_MAX_SIZE,
                max_depth: DEFAULT_JSON_MAX_DEPTH,
                objects_only: false,
            },
            write: WriteOptions {
                separator: JsonSeparator::Newline,
                every_text: false,
            },
            _item: PhantomData,
        }
    }

    /// Largest text to read, in bytes, counted from its first byte to its
    /// last (whitespace between texts does not count). A text that grows
    /// past it is a bad-message error with [`Error::is_limit`].
    pub fn max_size(&mut self, bytes: usize) -> &mut Self {
        self.limits.max_size = bytes;
        self
    }

    /// Most arrays/objects open at once. Deeper input is a bad-message error
    /// with [`Error::is_limit`] at the bracket that crosses the limit.
    ///
    /// serde_json has its own fixed limit of 127 levels, so for
    /// [`JsonCodec`] a value above that is rejected by the parser (a
    /// non-limit bad message, the text consumed) whatever is set here;
    /// a higher limit is useful with [`RawJsonCodec`].
    pub fn max_depth(&mut self, levels: usize) -> &mut Self {
        self.limits.max_depth = levels;
        self
    }

    /// Accept only arrays and objects at the top level (the JSON of RFC 4627
    /// and of AnyEvent::Handle's older docs). A scalar is a bad-message
    /// error at its first byte. Writing is not affected.
    pub fn objects_only(&mut self, yes: bool) -> &mut Self {
        self.limits.objects_only = yes;
        self
    }

    /// The whitespace written after a top-level number, and after every
    /// text with [`separate_every_text`](Self::separate_every_text).
    pub fn separator(&mut self, separator: JsonSeparator) -> &mut Self {
        self.write.separator = separator;
        self
    }

    /// Write the separator after every text, not only after numbers: one
    /// text per line with the default separator (NDJSON). With a newline
    /// separator (`Newline`, `CrLf`), reading then takes a text and the end
    /// of its line as one frame (see [`JsonCodec`]); with `Space` or `Tab`
    /// a text is complete at its last byte, as without this option, so a
    /// reader never waits for a newline its peer does not send.
    pub fn separate_every_text(&mut self, yes: bool) -> &mut Self {
        self.write.every_text = yes;
        self
    }

    /// A [`JsonCodec`] for `T` with these options.
    pub fn build(&self) -> JsonCodec<T> {
        JsonCodec {
            framer: Framer::new(self.limits, self.write.reads_lines()),
            write: self.write,
            _item: PhantomData,
        }
    }

    /// A [`RawJsonCodec`] with these options.
    pub fn build_raw(&self) -> RawJsonCodec {
        RawJsonCodec {
            framer: Framer::new(self.limits, self.write.reads_lines()),
            write: self.write,
        }
    }
}

/// Decodes JSON texts into `T` and encodes `T` as JSON.
///
/// `T` defaults to [`serde_json::Value`]. The decoder needs
/// `T: DeserializeOwned`; the encoder takes `T` or `&T` for `T: Serialize`.
///
/// # How a text is found
///
/// A resumable scanner walks the bytes once, however they are split across
/// reads, keeping its state (string, escape, number, nesting) in the codec.
/// When it finds the end of a text, the text is parsed once. Total work is
/// linear in the input, where re-running a parser from the start of the
/// buffer on every read (what AnyEvent::Handle and a retried
/// `serde_json::StreamDeserializer` do) is quadratic. A text that is already
/// whole in the buffer when its first byte is looked at (the common case for
/// small texts) goes to serde_json directly, and the scanner takes over only
/// if it turns out incomplete: one parse per text, at most one wasted partial
/// parse, and exactly the same results as scanning first.
///
/// * Nothing is consumed until a frame is complete: a read that is given up
///   before (a cancelled request) leaves the buffer exactly as it was.
/// * Whitespace before a text belongs to the text's frame: it is consumed
///   with the text, so a `\n` separator never becomes data. Whitespace
///   at the end of input is consumed by [`Decoder::decode_eof`], a clean end.
///   A run of whitespace longer than the size limit is a limit error, so
///   a peer cannot make the decoder hold more than that.
/// * In NDJSON mode ([`JsonCodec::ndjson`], or
///   [`JsonCodecBuilder::separate_every_text`] with a newline separator)
///   a frame is a text *and* the
///   end of its line: spaces, tabs and `\r` after the text, then `\n`
///   (so `\r\n` too). The decoder waits for that `\n`, so a line read after
///   a JSON read never sees the empty rest of the JSON text's line, whether
///   the `\n` came in the same read or later (AnyEvent writes them apart;
///   RT-json-6). Any other byte after the text ends the frame at the text,
///   and at end of input a text needs no newline. Otherwise the bytes after
///   a text are left alone: they may belong to the next frame.
/// * Every value is delivered, `0`, `false`, `null` and `""` included.
/// * A top-level number has no closing byte: it ends at the first byte that
///   cannot continue it, or at end of input ([`Decoder::decode_eof`]). So
///   `4` followed later by `2` is the number 42, never 4 and 2.
/// * The scanner is strict RFC 8259 with well-formed UTF-8 in strings, and
///   reports the first byte that cannot belong to a valid text at once.
/// * Limits: a text may be at most [`DEFAULT_JSON_MAX_SIZE`] bytes and
///   [`DEFAULT_JSON_MAX_DEPTH`] arrays/objects deep, both configurable. A
///   partial text stays in the read buffer (so a connection's buffer cap
///   sees it too). Waiting for the rest of a frame, the buffer holds at most
///   twice the size limit (a run of whitespace and a partial text), three
///   times in NDJSON mode (and the whitespace after a text, before its
///   newline).
///
/// # Memory
///
/// The size limit bounds the text, not what `T` makes of it. Measured with
/// a counting allocator (the repository's `codecs/tests/decoded_size.rs`),
/// a [`serde_json::Value`] holds per byte of text: about 9 bytes for
/// typical objects (short strings, numbers, small arrays), 16 for arrays of
/// numbers, empty strings or empty arrays, and up to about 100 for arrays
/// of small objects (`[{"":0},…]`: each object is a map node of over 600
/// bytes). So at the default 16 MiB limit one text can become 150 MiB of
/// typical `Value`, and up to about 1.6 GiB of hostile `Value`.
///
/// For a server that decodes untrusted input into `Value`, set
/// [`max_size`](JsonCodecBuilder::max_size) to the memory one message may
/// take divided by 100: 640 KiB keeps every `Value` under 64 MiB. Typed
/// structs are bounded by their shape and usually far smaller;
/// [`RawJsonCodec`] holds exactly the text.
///
/// Written, a large value grows the output buffer by an eighth of what it
/// holds at a time, not by doubling it: it takes about 1.125 times its text.
///
/// # Floats
///
/// By default serde_json's fast float parser is used, which can be one unit
/// in the last place off (`3.4028234663852886e+38` is not read as exactly
/// `f32::MAX` widened to `f64`). The crate feature `float-roundtrip`
/// (serde_json's `float_roundtrip`) reads every float correctly rounded, as
/// JSON::XS does, so every `f64` written is read back bit for bit; it costs
/// some speed on float-heavy input (see `BENCHMARKS.md` in the repository).
///
/// # After an error
///
/// Every decoding error is a non-fatal `EBADMSG` ([`ErrorKind::BadMessage`]),
/// except `EPIPE` ([`ErrorKind::BrokenPipe`]) for a text cut off by the end
/// of input.
///
/// * **Malformed input, or over a limit**: nothing is consumed and the
///   scanner starts over, so decoding the same buffer again reports the same
///   error. The offset ([`Error::offset`]) is that of the offending byte
///   from the start of the buffer (whitespace before the text included). The stream has no reliable resynchronisation point; the caller
///   decides: close, or skip bytes (say, up to the next newline for NDJSON)
///   and go on.
/// * **A well-formed text that `T` rejects** (a missing field, a number out
///   of range, a lone surrogate escape): the text is consumed and the stream
///   stays in step, so decoding may simply go on.
///
/// # Writing
///
/// Texts are compact (no whitespace, no newline inside). Nothing follows a
/// text by default, except that a top-level number is always followed by
/// the separator (`\n` unless configured), so it cannot run into the next
/// text. [`JsonCodecBuilder::separate_every_text`] writes the separator after
/// every text (NDJSON). NaN and infinities are refused, never written as
/// `null` (JSON::XS writes them as the non-JSON `nan` and `inf`).
///
/// The limits are for reading: a text over `max_size`, or nested 128 deep
/// (which serde_json refuses to read), is written, and the same codec's
/// decoder then refuses it (`EBADMSG`). serde's own round trip has gaps
/// too: `Some(None)` is written as `null` and read back as `None`. A
/// 128-bit integer outside the 64-bit range is refused: serde_json writes
/// its digits but reads them back as a float.
///
/// # Errors
///
/// Decoding: `EBADMSG` for malformed JSON, invalid UTF-8 ([`Error::is_utf8`]),
/// a text over a limit ([`Error::is_limit`]), or a text that `T` rejects;
/// `EPIPE` from `decode_eof` when the input ends inside a text. Encoding:
/// `EINVAL` when the value has no exact JSON form: a NaN or infinite float
/// anywhere in it (serde_json alone would write `null`), an integer beyond
/// 64 bits (read back as a float), or what serde_json
/// cannot write (a map with non-string keys, say); nothing is written then.
///
/// # Examples
///
/// ```
/// use anyframe_codecs::JsonCodec;
/// use bytes::BytesMut;
/// use serde_json::json;
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec: JsonCodec = JsonCodec::new();
/// let mut wire = BytesMut::new();
/// codec.encode(json!({"op": "add", "args": [1, 2]}), &mut wire)?;
/// codec.encode(json!(42), &mut wire)?;
/// assert_eq!(&wire[..], b"{\"args\":[1,2],\"op\":\"add\"}42\n");
///
/// assert_eq!(codec.decode(&mut wire)?, Some(json!({"op": "add", "args": [1, 2]})));
/// assert_eq!(codec.decode(&mut wire)?, Some(json!(42)));
/// assert_eq!(codec.decode(&mut wire)?, None);
/// assert_eq!(&wire[..], b"\n"); // kept for the next text's frame
/// assert_eq!(codec.decode_eof(&mut wire)?, None); // a clean end
/// assert!(wire.is_empty());
/// # Ok::<(), anyframe_codecs::Error>(())
/// ```
///
/// Decoding a struct from a stream split anywhere:
///
/// ```
/// use anyframe_codecs::JsonCodec;
/// use bytes::BytesMut;
/// use serde::Deserialize;
/// use tokio_util::codec::Decoder;
///
/// #[derive(Debug, PartialEq, Deserialize)]
/// struct Point {
///     x: i32,
///     y: i32,
/// }
///
/// let mut codec = JsonCodec::<Point>::new();
/// let mut buf = BytesMut::from(&b"{\"x\":1,\"y\""[..]);
/// assert_eq!(codec.decode(&mut buf)?, None); // waits, remembers where it was
/// buf.extend_from_slice(b":2}\n{\"x\":3,\"y\":4}");
/// assert_eq!(codec.decode(&mut buf)?, Some(Point { x: 1, y: 2 }));
/// assert_eq!(codec.decode(&mut buf)?, Some(Point { x: 3, y: 4 }));
/// # Ok::<(), anyframe_codecs::Error>(())
/// ```
///
/// A top-level number waits for a delimiter, or for the end of input:
///
/// ```
/// use anyframe_codecs::JsonCodec;
/// use bytes::BytesMut;
/// use tokio_util::codec::Decoder;
///
/// let mut codec = JsonCodec::<u64>::new();
/// let mut buf = BytesMut::from(&b"4"[..]);
/// assert_eq!(codec.decode(&mut buf)?, None);
/// buf.extend_from_slice(b"2");
/// assert_eq!(codec.decode(&mut buf)?, None);
/// assert_eq!(codec.decode_eof(&mut buf)?, Some(42));
/// # Ok::<(), anyframe_codecs::Error>(())
/// ```
///
/// [`ErrorKind::BadMessage`]: crate::ErrorKind::BadMessage
/// [`ErrorKind::BrokenPipe`]: crate::ErrorKind::BrokenPipe
pub struct JsonCodec<T = serde_json::Value> {
    framer: Framer,
    write: WriteOptions,
    _item: PhantomData<fn() -> T>,
}

impl<T> JsonCodec<T> {
    /// A codec with the default options (see [`JsonCodecBuilder::new`]).
    pub fn new() -> JsonCodec<T> {
        JsonCodecBuilder::new().build()
    }

    /// Options beyond the defaults.
    pub fn builder() -> JsonCodecBuilder<T> {
        JsonCodecBuilder::new()
    }

    /// A codec for NDJSON: writes `\n` after every text, and reads a text
    /// and the end of its line (`\n`, or `\r\n`) as one frame.
    pub fn ndjson() -> JsonCodec<T> {
        JsonCodecBuilder::new().separate_every_text(true).build()
    }

    /// The size limit for one text, in bytes.
    pub fn max_size(&self) -> usize {
        self.framer.scanner.limits().max_size
    }

    /// The nesting limit.
    pub fn max_depth(&self) -> usize {
        self.framer.scanner.limits().max_depth
    }

    /// Whether only arrays and objects are accepted at the top level.
    pub fn is_objects_only(&self) -> bool {
        self.framer.scanner.limits().objects_only
    }

    /// The separator written after numbers (or every text).
    pub fn separator(&self) -> JsonSeparator {
        self.write.separator
    }

    /// Whether the separator follows every text.
    pub fn is_separating_every_text(&self) -> bool {
        self.write.every_text
    }
}

impl<T> Default for JsonCodec<T> {
    fn default() -> Self {
        JsonCodec::new()
    }
}

impl<T> Clone for JsonCodec<T> {
    fn clone(&self) -> Self {
        JsonCodec {
            framer: self.framer.clone(),
            write: self.write,
            _item: PhantomData,
        }
    }
}

impl<T> fmt::Debug for JsonCodec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonCodec")
            .field("item", &std::any::type_name::<T>())
            .field("framer", &self.framer)
            .field("write", &self.write)
            .finish()
    }
}

impl<T: DeserializeOwned> Decoder for JsonCodec<T> {
    type Item = T;
    type Error = Error;

    /// Decodes the next text, if a whole one is buffered (in NDJSON mode:
    /// with the end of its line). Consumes nothing otherwise.
    ///
    /// # Errors
    ///
    /// See [`JsonCodec`]: malformed, over a limit, or rejected by `T`.
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<T>, Error> {
        if let Some(start) = self.framer.text_start(buf)?
            && let Some(window) = fast_window(
                self.framer.scanner.limits(),
                &buf[start..],
                self.framer.last_text,
            )
        {
            // The value goes from serde_json's `Option<Result<T>>` straight
            // into the one returned: through a tuple and an `Option` in
            // between, the compiler copied a `Value` piecewise through each
            // layout (tag apart, payload at odd offsets), and the loads that
            // then straddled two stores cost about 5% of the whole decode.
            let mut texts = serde_json::Deserializer::from_str(window).into_iter::<T>();
            if let Some(Ok(item)) = texts.next() {
                let n = texts.byte_offset();
                if verified(self.framer.scanner.limits(), window, n) {
                    return match self.framer.text_done(buf, start, start + n)? {
                        Some(found) => {
                            buf.advance(found.frame_end);
                            Ok(Some(item))
                        }
                        None => Ok(None),
                    };
                }
            }
        }
        match self.framer.find(buf) {
            Ok(Some(found)) => parse(buf, found).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(self.framer.failed(e)),
        }
    }

    /// As [`decode`](Self::decode); then a top-level number at the end is
    /// complete, an NDJSON text needs no newline, and trailing whitespace
    /// is consumed as a clean end (`Ok(None)`).
    ///
    /// # Errors
    ///
    /// As `decode`, and `EPIPE` when the input ends inside a text, which is
    /// left in `buf`.
    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<T>, Error> {
        match self.framer.find_eof(buf) {
            Ok(Some(found)) => parse(buf, found).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(self.framer.failed(e)),
        }
    }
}

impl<T: Serialize> Encoder<T> for JsonCodec<T> {
    type Error = Error;

    /// Writes `item` as compact JSON, then the separator if configured or
    /// if the text is a number.
    ///
    /// # Errors
    ///
    /// `EINVAL` for a NaN or infinite float, an integer beyond 64 bits or a
    /// CBOR tag anywhere in the value (JSON has no exact form for them), or
    /// if serde_json cannot write it; `dst` is unchanged.
    fn encode(&mut self, item: T, dst: &mut BytesMut) -> Result<(), Error> {
        write_text(self.write, &item, dst)
    }
}

impl<T: Serialize> Encoder<&T> for JsonCodec<T> {
    type Error = Error;

    /// As the by-value encoder, without taking the value.
    ///
    /// # Errors
    ///
    /// `EINVAL` for a NaN or infinite float, an integer beyond 64 bits or a
    /// CBOR tag anywhere in the value (JSON has no exact form for them), or
    /// if serde_json cannot write it; `dst` is unchanged.
    fn encode(&mut self, item: &T, dst: &mut BytesMut) -> Result<(), Error> {
        write_text(self.write, item, dst)
    }
}

/// Frames JSON texts without parsing them: each frame is the [`Bytes`] of
/// one complete text, split off the read buffer without copying.
///
/// The text is checked for well-formedness (RFC 8259 grammar, UTF-8 in
/// strings) and the limits, exactly as [`JsonCodec`] frames it, but not
/// interpreted: `\u` escapes are not decoded, numbers are not range-checked.
/// Use it to forward texts, or to parse them with another library. Leading
/// whitespace (and in NDJSON mode the end of the text's line) is consumed
/// with the text but is not part of the returned bytes.
///
/// The encoder writes a `Bytes` as it is (the caller vouches that it is one
/// JSON text), then the separator under the same rule as [`JsonCodec`].
///
/// # Errors
///
/// As [`JsonCodec`], without the errors from parsing into a type.
///
/// # Examples
///
/// ```
/// use anyframe_codecs::RawJsonCodec;
/// use bytes::BytesMut;
/// use tokio_util::codec::Decoder;
///
/// let mut codec = RawJsonCodec::new();
/// let mut buf = BytesMut::from(&b"  {\"a\": [1, 2]}\n\"x\"\n"[..]);
/// assert_eq!(codec.decode(&mut buf)?.as_deref(), Some(&b"{\"a\": [1, 2]}"[..]));
/// assert_eq!(codec.decode(&mut buf)?.as_deref(), Some(&b"\"x\""[..]));
/// assert_eq!(codec.decode_eof(&mut buf)?, None);
/// # Ok::<(), anyframe_codecs::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct RawJsonCodec {
    framer: Framer,
    write: WriteOptions,
}

impl RawJsonCodec {
    /// A codec with the default options (see [`JsonCodecBuilder::new`]).
    pub fn new() -> RawJsonCodec {
        JsonCodecBuilder::<serde_json::Value>::new().build_raw()
    }

    /// Options beyond the defaults; finish with
    /// [`build_raw`](JsonCodecBuilder::build_raw).
    pub fn builder() -> JsonCodecBuilder {
        JsonCodecBuilder::new()
    }

    /// The size limit for one text, in bytes.
    pub fn max_size(&self) -> usize {
        self.framer.scanner.limits().max_size
    }

    /// The nesting limit.
    pub fn max_depth(&self) -> usize {
        self.framer.scanner.limits().max_depth
    }

    /// Whether only arrays and objects are accepted at the top level.
    pub fn is_objects_only(&self) -> bool {
        self.framer.scanner.limits().objects_only
    }
}

impl Default for RawJsonCodec {
    fn default() -> Self {
        RawJsonCodec::new()
    }
}

impl Decoder for RawJsonCodec {
    type Item = Bytes;
    type Error = Error;

    /// Splits off the next text, if a whole one is buffered. O(1) besides
    /// scanning the new bytes.
    ///
    /// # Errors
    ///
    /// See [`RawJsonCodec`].
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        Ok(self.framer.find(buf)?.map(|found| take_text(buf, found)))
    }

    /// As [`decode`](Self::decode), completing a top-level number (or an
    /// NDJSON line) at the end; trailing whitespace is consumed as a clean
    /// end.
    ///
    /// # Errors
    ///
    /// As `decode`, and `EPIPE` when the input ends inside a text.
    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        Ok(self
            .framer
            .find_eof(buf)?
            .map(|found| take_text(buf, found)))
    }
}

impl Encoder<Bytes> for RawJsonCodec {
    type Error = Error;

    /// Copies the text into `dst`, then the separator if configured or if
    /// the text is a number.
    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), Error> {
        let sep = self.write.separator.as_bytes();
        dst.reserve(item.len() + sep.len());
        dst.extend_from_slice(&item);
        let first = item.iter().copied().find(|&b| !is_whitespace(b));
        if self.write.every_text || starts_number(first) {
            dst.extend_from_slice(sep);
        }
        Ok(())
    }
}

/// Splits off the text of a frame and drops the rest of the frame.
fn take_text(buf: &mut BytesMut, found: Found) -> Bytes {
    buf.advance(found.start);
    let text = buf.split_to(found.end - found.start).freeze();
    buf.advance(found.frame_end - found.end);
    text
}

/// Where the decoder is between calls. Nothing is consumed before a frame
/// is complete, so every stage describes bytes still in the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Before a text: the first `seen` bytes are whitespace.
    Lead { seen: usize },
    /// Inside the text that starts at `start`; the scanner holds the state.
    Text { start: usize },
    /// NDJSON only: the text `start..end` is complete and the `seen` bytes
    /// after it are spaces, tabs or carriage returns; its line's `\n` has
    /// not arrived yet.
    LineEnd {
        start: usize,
        end: usize,
        seen: usize,
    },
}

/// A complete frame at the front of the buffer: the text is
/// `buf[start..end]` (whitespace before it), and the frame, consumed with
/// it, is `buf[..frame_end]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Found {
    start: usize,
    end: usize,
    frame_end: usize,
}

/// Finds frames: whitespace before a text, the text (through the scanner),
/// and in NDJSON mode the end of the text's line. Resumes where it stopped,
/// so each byte is looked at once however the input is split.
#[derive(Debug, Clone)]
struct Framer {
    scanner: JsonScanner,
    stage: Stage,
    /// A frame ends with the `\n` that ends its text's line.
    ndjson: bool,
    /// The length of the last text, which sizes the fast path's window.
    last_text: usize,
}

impl Framer {
    fn new(limits: JsonLimits, ndjson: bool) -> Framer {
        Framer {
            scanner: JsonScanner::new(limits),
            stage: Stage::Lead { seen: 0 },
            ndjson,
            last_text: 0,
        }
    }

    /// The caller took bytes this decoder had seen (it should have used a
    /// fresh one) when the buffer, now `len` bytes, is shorter than they
    /// were: start over rather than index past them.
    fn resync(&mut self, len: usize) {
        let seen = match self.stage {
            Stage::Lead { seen } => seen,
            Stage::Text { start } => start,
            Stage::LineEnd { end, seen, .. } => end + seen,
        };
        if seen > len {
            self.stage = Stage::Lead { seen: 0 };
            self.scanner.reset();
        }
    }

    /// Before a text: skips the whitespace not seen yet. `Some(start)` when
    /// the text's first byte is at `start` and nothing of it has been
    /// scanned (the stage is then `Text`), `None` otherwise.
    #[inline]
    fn text_start(&mut self, buf: &[u8]) -> Result<Option<usize>, Error> {
        self.resync(buf.len());
        let Stage::Lead { seen } = self.stage else {
            return Ok(None);
        };
        let start = seen + leading_whitespace(&buf[seen..]);
        let limit = self.scanner.limits().max_size;
        if start > limit {
            self.stage = Stage::Lead { seen: 0 };
            return Err(whitespace_over_limit(buf, 0, limit));
        }
        if start == buf.len() {
            self.stage = Stage::Lead { seen: start };
            return Ok(None);
        }
        self.stage = Stage::Text { start };
        Ok(Some(start))
    }

    /// After an error the next text may start anywhere: its fast-path
    /// window goes back to the smallest, so a run of malformed texts after
    /// a large one does not each check a large window (quadratic).
    fn failed(&mut self, e: Error) -> Error {
        self.last_text = 0;
        e
    }

    /// The text that started at `start` ends at `end`: the frame, or in
    /// NDJSON mode the wait for the end of its line.
    #[inline]
    fn text_done(&mut self, buf: &[u8], start: usize, end: usize) -> Result<Option<Found>, Error> {
        self.last_text = end - start;
        if !self.ndjson {
            self.stage = Stage::Lead { seen: 0 };
            return Ok(Some(Found {
                start,
                end,
                frame_end: end,
            }));
        }
        self.stage = Stage::LineEnd {
            start,
            end,
            seen: 0,
        };
        self.line_end(buf)
    }

    /// NDJSON: looks for the `\n` after a complete text, over spaces, tabs
    /// and carriage returns. Any other byte first ends the frame at the
    /// text, leaving that byte and the whitespace before it.
    fn line_end(&mut self, buf: &[u8]) -> Result<Option<Found>, Error> {
        let Stage::LineEnd { start, end, seen } = self.stage else {
            return Ok(None);
        };
        let from = end + seen;
        let rest = &buf[from..];
        let run = rest
            .iter()
            .position(|&b| !matches!(b, b' ' | b'\t' | b'\r'))
            .unwrap_or(rest.len());
        // The limit holds whether or not the newline has arrived yet, so the
        // outcome does not depend on the split.
        let limit = self.scanner.limits().max_size;
        if seen + run > limit {
            self.stage = Stage::Lead { seen: 0 };
            return Err(whitespace_over_limit(buf, end, limit));
        }
        let frame_end = match rest.get(run) {
            Some(b'\n') => from + run + 1,
            Some(_) => end,
            None => {
                self.stage = Stage::LineEnd {
                    start,
                    end,
                    seen: seen + run,
                };
                return Ok(None);
            }
        };
        self.stage = Stage::Lead { seen: 0 };
        Ok(Some(Found {
            start,
            end,
            frame_end,
        }))
    }

    /// The next frame, if it is complete in `buf`.
    fn find(&mut self, buf: &[u8]) -> Result<Option<Found>, Error> {
        self.resync(buf.len());
        if matches!(self.stage, Stage::Lead { .. }) && self.text_start(buf)?.is_none() {
            return Ok(None);
        }
        match self.stage {
            Stage::Lead { .. } => Ok(None),
            Stage::Text { start } => match self.scanner.scan(&buf[start..]) {
                Scan::Incomplete => Ok(None),
                Scan::Complete(n) => self.text_done(buf, start, start + n),
                Scan::Invalid(e) => {
                    self.stage = Stage::Lead { seen: 0 };
                    Err(e.shifted(start).into_error(CODEC, buf))
                }
            },
            Stage::LineEnd { .. } => self.line_end(buf),
        }
    }

    /// [`find`](Self::find) at end of input: a top-level number ends here,
    /// an NDJSON text needs no newline, trailing whitespace is consumed;
    /// anything else unfinished is `EPIPE`, left in `buf`.
    fn find_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Found>, Error> {
        if let Some(found) = self.find(buf)? {
            return Ok(Some(found));
        }
        match self.stage {
            Stage::Lead { .. } => {
                buf.clear();
                self.stage = Stage::Lead { seen: 0 };
                Ok(None)
            }
            Stage::Text { start } => match self.scanner.end_at_eof() {
                Some(n) => {
                    self.scanner.reset();
                    self.stage = Stage::Lead { seen: 0 };
                    Ok(Some(Found {
                        start,
                        end: start + n,
                        frame_end: start + n,
                    }))
                }
                None => Err(Error::incomplete_at_eof(CODEC, buf.len()).with_bytes(&buf[start..])),
            },
            Stage::LineEnd { start, end, .. } => {
                self.stage = Stage::Lead { seen: 0 };
                Ok(Some(Found {
                    start,
                    end,
                    frame_end: buf.len(),
                }))
            }
        }
    }
}

/// A run of whitespace from `from` longer than the size limit: a limit
/// error at the first byte past it.
fn whitespace_over_limit(buf: &[u8], from: usize, limit: usize) -> Error {
    let at = from + limit;
    Error::limit_bad_message(
        CODEC,
        "whitespace run longer than the size limit",
        limit,
        (limit as u64).saturating_add(1),
    )
    .at(at)
    .with_bytes(&buf[at..])
}

/// The fast path, for a text that starts at the front of `buf`: the bytes
/// serde_json may parse straight away ([`JsonCodec`]'s `decode` then
/// consumes the text if that worked and [`verified`] accepts it), or `None`
/// when only the scanner may take the text.
///
/// Most small texts arrive whole, and then one parse is all the work. When
/// the text is not complete (or anything else is off) the scanner takes over
/// from the same byte, so each text costs at most one wasted partial parse
/// and the total stays linear.
///
/// The window is checked for UTF-8 once, and serde_json then reads it as a
/// `str`, so it does not check each string of the text again: that one
/// check costs a fraction of one `str::from_utf8` call per string. The
/// window is sized from the last text (`last`, bytes): twice that, so a
/// stream of similar texts checks about one text's worth of bytes ahead,
/// and a text that does not fit falls to the scanner like one not yet
/// complete. A window that ends inside a character, or at a byte that is
/// not UTF-8, ends before it: the text then either ends earlier or is not
/// taken here.
#[inline]
fn fast_window(limits: JsonLimits, buf: &[u8], last: usize) -> Option<&str> {
    let first = *buf.first()?;
    if limits.objects_only && first != b'[' && first != b'{' {
        return None;
    }
    // A text over the size limit never parses here: serde_json sees at most
    // one byte more (the delimiter that may end a number of exactly the
    // limit), so it cannot build a value from a text the scanner refuses.
    let len = buf
        .len()
        .min(limits.max_size.saturating_add(1))
        .min(last.saturating_mul(2).max(MIN_FAST_WINDOW));
    let window = &buf[..len];
    match std::str::from_utf8(window) {
        Ok(text) => Some(text),
        Err(e) => std::str::from_utf8(&window[..e.valid_up_to()]).ok(),
    }
}

/// The smallest fast-path window, in bytes: enough for the first text of a
/// stream of small ones, before there is a last text to go by.
const MIN_FAST_WINDOW: usize = 256;

/// Whether the text of `n` bytes that serde_json read from the front of
/// `window` is one the scanner accepts.
///
/// The fast path must accept exactly what the scanner path would, for the
/// same bytes however they were split, or fragmentation invariance breaks.
/// serde_json is as strict as the scanner in every respect but three,
/// checked here: a top-level number must be followed by a delimiter
/// (serde_json takes the end of its input as one, and the window may end
/// before the buffer does); nesting depth goes unchecked in values that
/// `T` ignores or takes as bytes; and so do control characters in a string
/// `T` takes as bytes. The size limit is ours. UTF-8 is settled: the
/// window is a `str`.
#[inline]
fn verified(limits: JsonLimits, window: &str, n: usize) -> bool {
    let text = &window.as_bytes()[..n];
    n <= limits.max_size
        && (n < window.len() || !starts_number(text.first().copied()))
        && strings_and_depth_within(text, limits.max_depth)
}

/// Whether a well-formed text (serde_json accepted it) holds no raw
/// control character in a string and nests at most `max_depth` deep.
/// Almost every text is settled without a walk: compact JSON holds no byte
/// below 0x20 at all (one pass without branches), and a text with no more
/// brackets than the limit cannot nest deeper. Others are walked once.
fn strings_and_depth_within(text: &[u8], max_depth: usize) -> bool {
    let plain = text.iter().fold(0x20u8, |low, &b| low.min(b)) >= 0x20;
    let shallow =
        text.len() <= max_depth || memchr::memchr2_iter(b'[', b'{', text).count() <= max_depth;
    if plain && shallow {
        return true;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in text {
        if in_string {
            if b < 0x20 {
                return false;
            }
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// Parses the text of a complete frame once and consumes the frame,
/// whether `T` accepts the text or not.
///
/// The scanner accepted the text, so it is UTF-8, and serde_json reads it
/// as a `str` (see [`fast_window`]); the check here is one pass over the
/// text, cheaper than serde_json's check of each string in it.
fn parse<T: DeserializeOwned>(buf: &mut BytesMut, found: Found) -> Result<T, Error> {
    let text = &buf[found.start..found.end];
    let result = match std::str::from_utf8(text) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(text),
    };
    let result = result.map_err(|e| {
        Error::bad_message(CODEC, "JSON text rejected by the deserializer")
            .with_source(e)
            .with_bytes(text)
    });
    buf.advance(found.frame_end);
    result
}

fn starts_number(first: Option<u8>) -> bool {
    matches!(first, Some(b'-' | b'0'..=b'9'))
}

/// Writes one compact text, then the separator if needed.
fn write_text<S: Serialize + ?Sized>(
    write: WriteOptions,
    value: &S,
    dst: &mut BytesMut,
) -> Result<(), Error> {
    let start = dst.len();
    let mut ser = serde_json::Serializer::new(GrowWriter(&mut *dst));
    if let Err(e) = value.serialize(Floats::<_, Finite>::new(&mut ser)) {
        dst.truncate(start);
        return Err(Error::invalid_input(CODEC, "value cannot be written as JSON").with_source(e));
    }
    if write.every_text || starts_number(dst.get(start).copied()) {
        dst.extend_from_slice(write.separator.as_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After an error the fast path's window is sized for a small text
    /// again: each of a run of malformed texts after a large one would
    /// otherwise check a window twice the large one's size (quadratic).
    #[test]
    fn an_error_resets_the_fast_path_window() {
        let mut codec = JsonCodec::<serde::de::IgnoredAny>::ndjson();
        let mut buf = BytesMut::from(format!("\"{}\"\n", "a".repeat(10_000)).as_bytes());
        assert!(codec.decode(&mut buf).unwrap().is_some());
        assert_eq!(codec.framer.last_text, 10_002);
        buf.extend_from_slice("é\n".as_bytes());
        assert!(codec.decode(&mut buf).is_err());
        assert_eq!(codec.framer.last_text, 0);
    }
}
