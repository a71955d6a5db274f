//! Sans-IO codecs for every read and write type of Perl's AnyEvent::Handle.
//!
//! Each codec is a [`tokio_util::codec::Decoder`] and, where the format has
//! one, an [`Encoder`], so it drops into a plain
//! `Framed`, `FramedRead` or `FramedWrite`. The `anyframe` crate builds on them
//! to switch decoders per read request on one connection.
//!
//! # Encoding
//!
//! ```
//! use anyframe_codecs::{LineCodec, NetstringCodec, PackFormat, PackstringCodec};
//! use bytes::BytesMut;
//! use tokio_util::codec::Encoder;
//!
//! let mut out = BytesMut::new();
//! LineCodec::new().encode("HELO example.org", &mut out)?;
//! PackstringCodec::new(PackFormat::U16Be).encode(b"blob", &mut out)?;
//! NetstringCodec::new().encode(b"hi", &mut out)?;
//! assert_eq!(&out[..], &b"HELO example.org\n\x00\x04blob2:hi,"[..]);
//! # Ok::<(), anyframe_codecs::Error>(())
//! ```
//!
//! # Decoding, however the bytes arrive
//!
//! ```
//! use anyframe_codecs::{LineCodec, NetstringCodec};
//! use bytes::BytesMut;
//! use tokio_util::codec::Decoder;
//!
//! let mut lines = LineCodec::new();
//! let mut buf = BytesMut::from(&b"first\r\nsec"[..]);
//! let line = lines.decode(&mut buf)?.unwrap();
//! assert_eq!((line.line(), line.eol()), (&b"first"[..], &b"\r\n"[..]));
//! assert!(lines.decode(&mut buf)?.is_none()); // "sec" waits for its end of line
//! buf.extend_from_slice(b"ond\n5:hello,");
//! assert_eq!(lines.decode(&mut buf)?.unwrap().line(), b"second");
//! // The same buffer goes on with another codec.
//! assert_eq!(&NetstringCodec::new().decode(&mut buf)?.unwrap()[..], b"hello");
//! # Ok::<(), anyframe_codecs::Error>(())
//! ```
//!
//! # The contract
//!
//! * **Fragmentation invariance**: the same frames, the same errors at the
//!   same frame index and the same end-of-input outcome however the input is
//!   split. The exceptions: the regex-decided codecs ([`RegexCodec`], a
//!   regex end of line), and the two whose frame is by design what is
//!   buffered: [`LineBatchCodec`] (its lines are split-invariant, where its
//!   batches end is not) and [`RawCodec`] (only the concatenation of its
//!   frames is).
//! * **Linear time**: a decoder remembers how far it has scanned and never
//!   looks at a byte twice (JSON and CBOR find a value's end with an
//!   incremental scanner, then parse once).
//! * **Bounded memory**: every codec has a limit, and a declared length is
//!   checked against it before anything is reserved.
//! * **Zero-copy**: frames are [`bytes::Bytes`] split off the read buffer.
//! * **Nothing lost**: incomplete input is `Ok(None)` and stays in the
//!   buffer; after an error the codec documents what it consumed.
//!
//! # References in these docs
//!
//! "AE" is Perl's AnyEvent::Handle, whose read and write types these codecs
//! reproduce. Labels such as `RT-netstring-2` (the second rule for the
//! `netstring` read type) and section marks such as `§2a` name rules of the
//! behaviour reference shared with the `anyframe` crate: the
//! [`semantics`](https://docs.rs/anyframe/latest/anyframe/semantics/index.html)
//! page of its documentation (`docs/semantics.md` in the repository), where
//! each label is an anchor. Each codec's docs say what the rule means for
//! it; the reference gives AnyEvent's behaviour and the reasons.
//!
//! | codec | frame | AE type |
//! |---|---|---|
//! | [`LineCodec`], [`Utf8LineCodec`] | [`Line`] / [`Utf8Line`]: the line and its end of line | `line` |
//! | [`LineBatchCodec`] | [`LineBatch`]: every complete line buffered (up to a cap), split off at once | `line`, many at a time |
//! | [`ChunkCodec`] | exactly `n` bytes | `chunk` |
//! | [`RegexCodec`] | skipped bytes and everything up to the end of the accept match; decode only, split-dependent, re-runs its regexes over a bounded window | `regex` |
//! | [`PackstringCodec`] | the payload behind a [`PackFormat`] length | `packstring` |
//! | [`NetstringCodec`] | the payload of `<len>:<payload>,` | `netstring` |
//! | [`JsonCodec`], [`RawJsonCodec`] | one serde value / the raw bytes of one JSON text | `json` |
//! | [`CborCodec`], [`RawCborCodec`] | one serde value / the raw bytes of one CBOR item | `cbor` |
//! | [`TlsDetectCodec`] | [`TlsDetect`]: TLS (with its version) or not; consumes nothing | `tls_detect` |
//! | [`RawCodec`] | everything buffered when it runs (at least one byte); writes bytes as they are | plain data |
//!
//! Errors are one type, [`Error`], with an errno-like [`ErrorKind`].
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `json` | on | [`JsonCodec`], [`RawJsonCodec`], [`JsonValue`] (serde, serde_json) |
//! | `cbor` | on | [`CborCodec`], [`RawCborCodec`], [`CborValue`] (serde, serde_cbor) |
//! | `regex` | on | [`RegexCodec`] and the regex end of line, [`LineCodecBuilder::eol_regex`] (regex, regex-syntax) |
//! | `float-roundtrip` | off | correctly rounded float parsing in [`JsonCodec`] (serde_json's `float_roundtrip`), as JSON::XS reads; slower on float-heavy input; turns on `json` |
//!
//! Without `json`, `cbor` and `regex` the line, chunk, packstring,
//! netstring, TLS-detection and raw codecs still build, with no serde or
//! regex in the dependency tree.
//!
//! serde_cbor is unmaintained (advisory RUSTSEC-2021-0127), and it is a
//! public dependency of the `cbor` feature: [`CborValue`] is
//! `serde_cbor::Value`, and `CborCodec<T>` defaults to it.
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![doc(test(attr(deny(warnings))))]
// One `unsafe` block in the crate: `str::from_utf8_unchecked` on bytes
// just checked to be ASCII, in `line/utf8.rs`.
#![deny(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

/// The README's code blocks, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod error;
pub use error::{Error, ErrorKind, SNIPPET_LEN};
mod encoder_ref;
pub use encoder_ref::EncoderRef;

/// tokio-util's codec traits, which every codec here implements.
pub use tokio_util::codec::{Decoder, Encoder};

/// The regex crate, for [`LineCodecBuilder::eol_regex`] and [`RegexCodec`].
#[cfg(feature = "regex")]
pub use regex;
/// The value type [`CborCodec`] decodes into when the shape of the data is
/// not known in advance: `serde_cbor::Value` itself, re-exported.
///
/// This makes serde_cbor a public dependency of the `cbor` feature. Note
/// that serde_cbor is unmaintained (advisory RUSTSEC-2021-0127); build
/// without the `cbor` feature to leave it out of the dependency tree.
#[cfg(feature = "cbor")]
pub use serde_cbor::Value as CborValue;
/// The value type [`JsonCodec`] decodes into when the shape of the data is
/// not known in advance (`serde_json::Value`).
#[cfg(feature = "json")]
pub use serde_json::Value as JsonValue;
#[cfg(any(feature = "json", feature = "cbor"))]
mod floats;
#[cfg(any(feature = "json", feature = "cbor"))]
mod grow;
#[cfg(feature = "json")]
mod json;
#[cfg(any(feature = "json", feature = "cbor"))]
mod scan;
#[cfg(feature = "json")]
pub use json::{
    DEFAULT_JSON_MAX_DEPTH, DEFAULT_JSON_MAX_SIZE, JsonCodec, JsonCodecBuilder, JsonSeparator,
    RawJsonCodec,
};
#[cfg(feature = "cbor")]
mod cbor;
#[cfg(feature = "cbor")]
pub use cbor::{CborCodec, DEFAULT_CBOR_MAX_DEPTH, DEFAULT_CBOR_MAX_SIZE, RawCborCodec};
mod line;
pub use line::{
    DEFAULT_LINE_MAX_LENGTH, Line, LineCodec, LineCodecBuilder, OverflowPolicy, Utf8Line,
    Utf8LineCodec,
};
mod line_batch;
pub use line_batch::{DEFAULT_BATCH_LINES, IntoLines, LineBatch, LineBatchCodec, LineRef, Lines};
mod chunk;
pub use chunk::ChunkCodec;
#[cfg(feature = "regex")]
mod regex_codec;
#[cfg(feature = "regex")]
pub use regex_codec::{
    DEFAULT_REGEX_MAX_LENGTH, DEFAULT_REGEX_UNBOUNDED_MAX_LENGTH, RegexCodec, RegexCodecBuilder,
};
mod packstring;
pub use packstring::{DEFAULT_PACKSTRING_MAX_LENGTH, PackFormat, PackstringCodec};
mod netstring;
pub use netstring::{DEFAULT_NETSTRING_MAX_LENGTH, NetstringCodec};
mod raw;
pub use raw::RawCodec;
mod tls_detect;
pub use tls_detect::{TlsDetect, TlsDetectCodec};
