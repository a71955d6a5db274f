//! Length-prefixed strings: AnyEvent's `packstring` read and write types.
//!
//! A frame is a length in one of Perl's `pack` integer formats followed by
//! that many payload bytes. AE passes the format to `unpack` unchecked
//! (RT-packstring-1); here it is a validated [`PackFormat`].

use std::fmt;
use std::str::FromStr;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::chunk::reserve_capped;
use crate::error::Error;

const CODEC: &str = "packstring";

/// The default limit on one payload: 16 MiB.
///
/// A prefix lets the peer declare up to 4 GiB (`N`) or 2⁶⁴ bytes (`w`).
/// 16 MiB holds every message the format is commonly used for (DNS over TCP,
/// serialised records) and bounds what one connection can
/// make us buffer.
pub const DEFAULT_PACKSTRING_MAX_LENGTH: usize = 16 * 1024 * 1024;

/// The longest BER-compressed `u64`: ⌈64 / 7⌉ groups of 7 bits.
const MAX_BER_LEN: usize = 10;

/// The length prefix of a packstring, as a Perl `pack` letter.
///
/// # Examples
///
/// ```
/// use anyframe_codecs::PackFormat;
///
/// let fmt: PackFormat = "N".parse()?;
/// assert_eq!(fmt, PackFormat::U32Be);
/// assert_eq!(fmt.max_value(), u64::from(u32::MAX));
/// assert_eq!(PackFormat::try_from("Q<")?, PackFormat::U64Le);
/// assert!("q".parse::<PackFormat>().is_err());
/// # Ok::<(), anyframe_codecs::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PackFormat {
    /// `C`: unsigned 8 bits.
    U8,
    /// `n`: unsigned 16 bits, big-endian (DNS over TCP).
    U16Be,
    /// `v`: unsigned 16 bits, little-endian.
    U16Le,
    /// `N`: unsigned 32 bits, big-endian.
    U32Be,
    /// `V`: unsigned 32 bits, little-endian.
    U32Le,
    /// `w`: BER-compressed integer: big-endian base 128, 7 bits per byte,
    /// high bit set on every byte but the last. Limited to `u64` here.
    Ber,
    /// `Q>`: unsigned 64 bits, big-endian.
    U64Be,
    /// `Q<`: unsigned 64 bits, little-endian.
    U64Le,
}

impl PackFormat {
    /// Every format, in declaration order.
    pub const ALL: [PackFormat; 8] = [
        PackFormat::U8,
        PackFormat::U16Be,
        PackFormat::U16Le,
        PackFormat::U32Be,
        PackFormat::U32Le,
        PackFormat::Ber,
        PackFormat::U64Be,
        PackFormat::U64Le,
    ];

    /// The Perl `pack` template (`"C"`, `"n"`, …, `"Q<"`).
    pub fn letter(self) -> &'static str {
        match self {
            PackFormat::U8 => "C",
            PackFormat::U16Be => "n",
            PackFormat::U16Le => "v",
            PackFormat::U32Be => "N",
            PackFormat::U32Le => "V",
            PackFormat::Ber => "w",
            PackFormat::U64Be => "Q>",
            PackFormat::U64Le => "Q<",
        }
    }

    /// The largest length the prefix can carry.
    pub fn max_value(self) -> u64 {
        match self {
            PackFormat::U8 => u8::MAX.into(),
            PackFormat::U16Be | PackFormat::U16Le => u16::MAX.into(),
            PackFormat::U32Be | PackFormat::U32Le => u32::MAX.into(),
            PackFormat::Ber | PackFormat::U64Be | PackFormat::U64Le => u64::MAX,
        }
    }

    /// How many bytes the prefix for `len` takes (1 to 10 for `w`).
    pub fn prefix_len(self, len: u64) -> usize {
        match self {
            PackFormat::U8 => 1,
            PackFormat::U16Be | PackFormat::U16Le => 2,
            PackFormat::U32Be | PackFormat::U32Le => 4,
            PackFormat::U64Be | PackFormat::U64Le => 8,
            PackFormat::Ber => {
                let bits = (u64::BITS - len.leading_zeros()).max(1) as usize;
                bits.div_ceil(7)
            }
        }
    }

    /// Reads a prefix from the front of `buf`: `Ok(None)` while incomplete,
    /// else `(prefix length, value)`.
    fn read(self, buf: &[u8]) -> Result<Option<(usize, u64)>, Error> {
        fn arr<const N: usize>(buf: &[u8]) -> Option<[u8; N]> {
            buf.get(..N).and_then(|b| b.try_into().ok())
        }
        let read = match self {
            PackFormat::U8 => buf.first().map(|&b| (1, u64::from(b))),
            PackFormat::U16Be => arr(buf).map(|b| (2, u16::from_be_bytes(b).into())),
            PackFormat::U16Le => arr(buf).map(|b| (2, u16::from_le_bytes(b).into())),
            PackFormat::U32Be => arr(buf).map(|b| (4, u32::from_be_bytes(b).into())),
            PackFormat::U32Le => arr(buf).map(|b| (4, u32::from_le_bytes(b).into())),
            PackFormat::U64Be => arr(buf).map(|b| (8, u64::from_be_bytes(b))),
            PackFormat::U64Le => arr(buf).map(|b| (8, u64::from_le_bytes(b))),
            PackFormat::Ber => return read_ber(buf),
        };
        Ok(read)
    }

    /// Appends the prefix for `len` (which must fit, see `max_value`).
    fn write(self, len: u64, dst: &mut BytesMut) {
        // Narrowing casts are exact: the encoder checked `max_value` first.
        match self {
            PackFormat::U8 => dst.put_u8(len as u8),
            PackFormat::U16Be => dst.put_u16(len as u16),
            PackFormat::U16Le => dst.put_u16_le(len as u16),
            PackFormat::U32Be => dst.put_u32(len as u32),
            PackFormat::U32Le => dst.put_u32_le(len as u32),
            PackFormat::U64Be => dst.put_u64(len),
            PackFormat::U64Le => dst.put_u64_le(len),
            PackFormat::Ber => {
                let mut groups = [0u8; MAX_BER_LEN];
                let mut at = MAX_BER_LEN;
                let mut rest = len;
                loop {
                    at -= 1;
                    groups[at] = (rest & 0x7f) as u8;
                    rest >>= 7;
                    if rest == 0 {
                        break;
                    }
                }
                for b in &mut groups[at..MAX_BER_LEN - 1] {
                    *b |= 0x80;
                }
                dst.extend_from_slice(&groups[at..]);
            }
        }
    }
}

/// A BER-compressed integer: `Ok(None)` while every byte so far has the
/// "more" bit; an error for a leading zero group (over-long) or a value
/// that must pass `u64`, as soon as that is certain (at most
/// `MAX_BER_LEN` bytes are looked at).
fn read_ber(buf: &[u8]) -> Result<Option<(usize, u64)>, Error> {
    let mut value: u64 = 0;
    for (i, &b) in buf.iter().enumerate() {
        if i == 0 && b == 0x80 {
            return Err(Error::bad_message(CODEC, "over-long BER length")
                .with_bytes(&buf[..1])
                .fatal(true));
        }
        value = value << 7 | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            return Ok(Some((i + 1, value)));
        }
        // Another group follows: shifting this value by 7 more bits would
        // lose some.
        if value > u64::MAX >> 7 {
            return Err(Error::bad_message(CODEC, "BER length overflows u64")
                .with_bytes(&buf[..=i])
                .fatal(true));
        }
    }
    Ok(None)
}

impl fmt::Display for PackFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.letter())
    }
}

/// Parses a Perl `pack` letter: `C n v N V w Q> Q<`.
///
/// # Errors
///
/// `EINVAL` for anything else, including Perl formats without a fixed size
/// and byte order (`Q`, `L`, `j`, …) and the signed ones (`c`, `s`, …),
/// which AE accepts and then misreads.
impl FromStr for PackFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<PackFormat, Error> {
        PackFormat::ALL
            .into_iter()
            .find(|f| f.letter() == s)
            .ok_or_else(|| {
                Error::invalid_input(CODEC, "unsupported pack format").with_bytes(s.as_bytes())
            })
    }
}

/// As [`FromStr`].
impl TryFrom<&str> for PackFormat {
    type Error = Error;

    fn try_from(s: &str) -> Result<PackFormat, Error> {
        s.parse()
    }
}

/// Decoder state: before the prefix is complete, or waiting for the rest of
/// a frame whose prefix (left in the buffer until the frame is whole) has
/// been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Body { prefix_len: usize, len: usize },
}

/// A decoder and encoder for length-prefixed payloads.
///
/// The payload is a [`Bytes`] split off the buffer without copying. The
/// declared length is checked against `max_length` as soon as the prefix is
/// complete, before any payload is awaited, and the decoder reserves room
/// for the rest, at most 64 KiB, in a buffer smaller than that (a larger
/// one grows as its reader grows it). The prefix stays in the buffer
/// until the whole frame is there, so nothing is lost if the codec is
/// dropped mid-frame.
///
/// # Errors and state
///
/// * Declared length over `max_length`: `ENOSPC`, fatal, nothing consumed
///   ([`Error::seen`] is the declared length).
/// * `w` prefix that is over-long (starts with `0x80`) or overflows `u64`:
///   `EBADMSG`, fatal (there is no frame boundary left to resume at),
///   nothing consumed.
/// * End of input inside a frame (`decode_eof`): `EPIPE`, fatal; the
///   partial frame, prefix included, is still in the buffer.
///
/// # Examples
///
/// ```
/// use anyframe_codecs::{PackFormat, PackstringCodec};
/// use bytes::BytesMut;
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = PackstringCodec::new(PackFormat::U16Be);
/// let mut buf = BytesMut::new();
/// codec.encode("hello", &mut buf)?;
/// assert_eq!(buf, &b"\x00\x05hello"[..]);
/// assert_eq!(codec.decode(&mut buf)?.unwrap(), "hello");
///
/// // AE would silently wrap the 16-bit length; we refuse.
/// assert!(codec.encode(vec![0u8; 70_000], &mut buf).is_err());
/// # Ok::<(), anyframe_codecs::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct PackstringCodec {
    format: PackFormat,
    max_length: usize,
    state: State,
}

impl PackstringCodec {
    /// A codec for `format` with payloads up to
    /// [`DEFAULT_PACKSTRING_MAX_LENGTH`].
    pub fn new(format: PackFormat) -> PackstringCodec {
        PackstringCodec::with_max_length(format, DEFAULT_PACKSTRING_MAX_LENGTH)
    }

    /// A codec for `format` with payloads up to `max_length` bytes.
    pub fn with_max_length(format: PackFormat, max_length: usize) -> PackstringCodec {
        PackstringCodec {
            format,
            max_length,
            state: State::Head,
        }
    }

    /// The length prefix format.
    pub fn format(&self) -> PackFormat {
        self.format
    }

    /// The largest payload accepted, and written.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    fn decode_head(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        let Some((prefix_len, declared)) = self.format.read(buf)? else {
            return Ok(None);
        };
        let len = usize::try_from(declared)
            .ok()
            .filter(|&len| len <= self.max_length)
            .ok_or_else(|| {
                Error::too_large(CODEC, self.max_length, declared).with_bytes(&buf[..prefix_len])
            })?;
        self.state = State::Body { prefix_len, len };
        self.decode_body(buf, prefix_len, len)
    }

    fn decode_body(
        &mut self,
        buf: &mut BytesMut,
        prefix_len: usize,
        len: usize,
    ) -> Result<Option<Bytes>, Error> {
        let total = prefix_len.saturating_add(len);
        if buf.len() < total {
            reserve_capped(buf, total - buf.len());
            return Ok(None);
        }
        buf.advance(prefix_len);
        self.state = State::Head;
        Ok(Some(buf.split_to(len).freeze()))
    }
}

impl Decoder for PackstringCodec {
    type Item = Bytes;
    type Error = Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        match self.state {
            State::Head => self.decode_head(buf),
            State::Body { prefix_len, len } => self.decode_body(buf, prefix_len, len),
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        match self.decode(buf)? {
            Some(frame) => Ok(Some(frame)),
            None if buf.is_empty() => Ok(None),
            None => Err(Error::incomplete_at_eof(CODEC, buf.len())),
        }
    }
}

/// Writes the length prefix and the payload, reserving the whole frame
/// first.
///
/// # Errors
///
/// `EINVAL`, with nothing written, when the payload's length does not fit
/// the prefix (over 255 bytes for `C`, 65535 for `n`/`v`, `u32::MAX` for
/// `N`/`V`; AE silently wraps, WT-packstring-1) or is over `max_length`.
impl<T: AsRef<[u8]>> Encoder<T> for PackstringCodec {
    type Error = Error;

    fn encode(&mut self, item: T, dst: &mut BytesMut) -> Result<(), Error> {
        let data = item.as_ref();
        let len = data.len() as u64;
        let field_max = self.format.max_value();
        if len > field_max {
            return Err(
                Error::invalid_input(CODEC, "payload does not fit the length prefix")
                    .with_limit(usize::try_from(field_max).unwrap_or(usize::MAX))
                    .with_seen(len),
            );
        }
        if data.len() > self.max_length {
            return Err(
                Error::invalid_input(CODEC, "payload longer than max_length")
                    .over_limit(self.max_length)
                    .with_seen(len),
            );
        }
        dst.reserve(self.format.prefix_len(len) + data.len());
        self.format.write(len, dst);
        dst.extend_from_slice(data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ber_prefix_lengths_match_the_encoding() {
        for v in [0, 1, 127, 128, 16383, 16384, u64::from(u32::MAX), u64::MAX] {
            let mut b = BytesMut::new();
            PackFormat::Ber.write(v, &mut b);
            assert_eq!(b.len(), PackFormat::Ber.prefix_len(v), "{v}");
            assert_eq!(read_ber(&b).unwrap(), Some((b.len(), v)), "{v}");
        }
    }

    #[test]
    fn ber_looks_at_no_more_than_max_ber_len_bytes() {
        let e = read_ber(&[0xff; 64]).unwrap_err();
        assert_eq!(e.bytes().len(), 9);
        let mut worst = [0xff; 64];
        worst[0] = 0x81;
        assert_eq!(read_ber(&worst).unwrap_err().bytes().len(), MAX_BER_LEN);
        // 0x81 then nine 0xff then a final group: exactly u64::MAX.
        let mut max = [0xffu8; 10];
        max[0] = 0x81;
        max[9] = 0x7f;
        assert_eq!(read_ber(&max).unwrap(), Some((10, u64::MAX)));
    }
}
