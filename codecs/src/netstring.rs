//! Netstrings: AnyEvent's `netstring` read and write types.
//!
//! A netstring is `<len>:<payload>,` with `len` in decimal ASCII. This codec
//! is strict: `0:` or `[1-9][0-9]*:`, nothing else (RT-netstring-1), and,
//! unlike AE, the number of digits is bounded by the limit.

use std::io::Write as _;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::chunk::reserve_capped;
use crate::error::Error;

const CODEC: &str = "netstring";

/// The default limit on one payload: 16 MiB.
///
/// AE has none: a header of a hundred nines is accepted and then waits
/// forever (RT-netstring-1). 16 MiB holds any message a netstring protocol
/// carries in practice (SCGI requests, QMTP messages) and bounds what one
/// connection can make us buffer.
pub const DEFAULT_NETSTRING_MAX_LENGTH: usize = 16 * 1024 * 1024;

/// Decoder state: reading the header (`pos` bytes of it checked, `value`
/// so far), or waiting for the body of a frame whose header (left in the
/// buffer until the frame is whole) is `header_len` bytes long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Header { pos: usize, value: u64 },
    Body { header_len: usize, len: usize },
}

const START: State = State::Header { pos: 0, value: 0 };

/// A decoder and encoder for netstrings.
///
/// The payload is a [`Bytes`] split off the buffer without copying. The
/// header is checked byte by byte as it arrives, so a bad or over-long
/// header is reported at the first byte that proves it, however the input
/// was split.
///
/// # Errors and state
///
/// * A header that cannot become valid (a non-digit, a leading zero, an
///   empty length, no `:`): `EBADMSG`, **non-fatal**, and **nothing is
///   consumed**, as in AE (RT-netstring-2): the bytes stay in the buffer and
///   the same error comes back on the next call. [`Error::offset`] is the
///   offending byte's position.
/// * A length over `max_length`, or more digits than `max_length` has:
///   `ENOSPC`, fatal, nothing consumed, as soon as the digits prove it.
/// * A payload not followed by `,`: `EBADMSG`, **non-fatal**; the header,
///   payload and odd byte **are consumed** (AE: RT-netstring-3), so
///   decoding goes on after them.
/// * End of input inside a netstring (`decode_eof`): `EPIPE`, fatal; the
///   partial netstring, header included, is still in the buffer.
///
/// # Examples
///
/// ```
/// use anyframe_codecs::NetstringCodec;
/// use bytes::BytesMut;
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = NetstringCodec::new();
/// let mut buf = BytesMut::new();
/// codec.encode("hello", &mut buf)?;
/// assert_eq!(buf, "5:hello,");
/// assert_eq!(codec.decode(&mut buf)?.unwrap(), "hello");
///
/// // AE's example: a bad trailing byte drops that netstring only.
/// let mut buf = BytesMut::from("3:abcX3:def,");
/// assert!(codec.decode(&mut buf).is_err());
/// assert_eq!(codec.decode(&mut buf)?.unwrap(), "def");
/// # Ok::<(), anyframe_codecs::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct NetstringCodec {
    max_length: usize,
    state: State,
}

impl NetstringCodec {
    /// A codec for payloads up to [`DEFAULT_NETSTRING_MAX_LENGTH`].
    pub fn new() -> NetstringCodec {
        NetstringCodec::with_max_length(DEFAULT_NETSTRING_MAX_LENGTH)
    }

    /// A codec for payloads up to `max_length` bytes; headers with more
    /// digits than `max_length` has are refused.
    pub fn with_max_length(max_length: usize) -> NetstringCodec {
        NetstringCodec {
            max_length,
            state: START,
        }
    }

    /// The largest payload accepted, and written.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    fn decode_header(
        &mut self,
        buf: &mut BytesMut,
        mut pos: usize,
        mut value: u64,
    ) -> Result<Option<Bytes>, Error> {
        while let Some(&b) = buf.get(pos) {
            match b {
                b':' if pos > 0 => {
                    // `value <= max_length` was checked digit by digit.
                    let len = usize::try_from(value).unwrap_or(usize::MAX);
                    let header_len = pos + 1;
                    self.state = State::Body { header_len, len };
                    return self.decode_body(buf, header_len, len);
                }
                // No leading zeros, and the value stays within the limit
                // at every digit: a header can have no more digits than
                // `max_length` has, and the error reports the value it
                // reached, past the limit.
                b'0'..=b'9' if pos == 0 || value > 0 => {
                    value = match value
                        .checked_mul(10)
                        .and_then(|v| v.checked_add(u64::from(b - b'0')))
                    {
                        Some(v) if v <= self.max_length as u64 => v,
                        v => return Err(self.too_large(buf, pos, v.unwrap_or(u64::MAX))),
                    };
                    pos += 1;
                }
                _ => {
                    self.state = START;
                    let reason = match b {
                        b'0'..=b'9' => "leading zero in netstring length",
                        b':' => "empty netstring length",
                        _ => "netstring header is not `<digits>:`",
                    };
                    return Err(Error::bad_message(CODEC, reason)
                        .at(pos)
                        .with_bytes(&buf[..=pos]));
                }
            }
        }
        self.state = State::Header { pos, value };
        Ok(None)
    }

    fn too_large(&mut self, buf: &[u8], pos: usize, value: u64) -> Error {
        self.state = START;
        Error::too_large(CODEC, self.max_length, value)
            .at(pos)
            .with_bytes(&buf[..=pos])
    }

    fn decode_body(
        &mut self,
        buf: &mut BytesMut,
        header_len: usize,
        len: usize,
    ) -> Result<Option<Bytes>, Error> {
        let total = header_len.saturating_add(len).saturating_add(1);
        if buf.len() < total {
            reserve_capped(buf, total - buf.len());
            return Ok(None);
        }
        self.state = START;
        let trailer = buf[total - 1];
        if trailer != b',' {
            buf.advance(total);
            return Err(
                Error::bad_message(CODEC, "netstring payload not followed by `,`")
                    .at(total - 1)
                    .with_bytes(&[trailer]),
            );
        }
        buf.advance(header_len);
        let payload = buf.split_to(len).freeze();
        buf.advance(1);
        Ok(Some(payload))
    }
}

/// The number of decimal digits in `n`.
fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

impl Default for NetstringCodec {
    fn default() -> NetstringCodec {
        NetstringCodec::new()
    }
}

impl Decoder for NetstringCodec {
    type Item = Bytes;
    type Error = Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        match self.state {
            State::Header { pos, value } => self.decode_header(buf, pos, value),
            State::Body { header_len, len } => self.decode_body(buf, header_len, len),
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

/// Writes `<len>:<payload>,`, reserving the whole frame first. Any payload
/// bytes are fine, `:` and `,` included (WT-netstring-1).
///
/// # Errors
///
/// `EINVAL`, with nothing written, when the payload is over `max_length`
/// (the peer's decoder, configured alike, would refuse it).
impl<T: AsRef<[u8]>> Encoder<T> for NetstringCodec {
    type Error = Error;

    fn encode(&mut self, item: T, dst: &mut BytesMut) -> Result<(), Error> {
        let data = item.as_ref();
        if data.len() > self.max_length {
            return Err(
                Error::invalid_input(CODEC, "payload longer than max_length")
                    .over_limit(self.max_length)
                    .with_seen(data.len() as u64),
            );
        }
        dst.reserve(digits(data.len() as u64) + data.len() + 2);
        // Writing into a BytesMut cannot fail.
        let _ = write!((&mut *dst).writer(), "{}:", data.len());
        dst.extend_from_slice(data);
        dst.put_u8(b',');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digit_counts() {
        assert_eq!(digits(0), 1);
        assert_eq!(digits(9), 1);
        assert_eq!(digits(10), 2);
        assert_eq!(digits(16 * 1024 * 1024), 8);
        assert_eq!(digits(u64::MAX), 20);
    }
}
