//! `tls_detect`: does the peer open with a TLS ClientHello?
//!
//! A server that accepts TLS and plaintext clients on one port looks at the
//! first bytes a client sends, without consuming them, and then either starts
//! a TLS handshake over those very bytes or goes on in plaintext. This is
//! AnyEvent::Handle's `tls_detect` read type (reference RT-tlsdetect-1…5);
//! `tls_autostart` in the `anyframe` crate is built on it.
//!
//! Two shapes of client greeting are recognised:
//!
//! ```text
//! TLS record (SSL 3.0 and later)         SSLv2-compatible hello
//! byte 0  0x16 (handshake)               byte 0  0x80..=0xFF (length, high bit set)
//! byte 1  major: 3 or 4                  byte 1  any (length, low byte)
//! byte 2  minor: any  (strict: <= 4)     byte 2  0x01 (CLIENT-HELLO)
//! byte 3  length high byte <= 0x40       byte 3  major: 3 or 4
//! ---- the AE rule decides here ----     byte 4  minor: any  (strict: <= 4)
//! byte 4  length low byte: any           byte 5  any
//! byte 5  handshake type (strict: 1)     ---- both rules decide here ----
//! ---- the strict rule decides here ----
//! ```
//!
//! A verdict is given as soon as the buffered bytes either complete a pattern
//! or contradict every pattern still possible: `GET ` is [`NotTls`] after one
//! byte, `16 02` after two. The two patterns cannot both apply (byte 0
//! differs), so the decision never needs more than six bytes.
//!
//! [`NotTls`]: TlsDetect::NotTls

use bytes::BytesMut;
use tokio_util::codec::Decoder;

use crate::Error;

/// TLS record content type "handshake" (RFC 8446, 5.1).
const CONTENT_TYPE_HANDSHAKE: u8 = 0x16;
/// The record-layer major version of SSL 3.0 up to TLS 1.3 is 3; AE also
/// accepts 4, for a future version.
const MAJOR_VERSIONS: [u8; 2] = [3, 4];
/// A plaintext record is at most 2^14 bytes (RFC 8446, 5.1), so the length's
/// high byte is at most 0x40. AE's rule uses exactly this bound.
const MAX_RECORD_LEN_HIGH: u8 = 0x40;
/// Handshake message type ClientHello, at byte 5 of the first record.
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// SSL 2.0 message type CLIENT-HELLO, at byte 2 of a two-byte-header
/// message (RFC 5246, appendix E.2).
const SSL2_CLIENT_HELLO: u8 = 1;
/// The strict rule's highest minor version: TLS 1.3 is 3.4 on the wire only
/// inside `supported_versions`, and the record layer says 3.1..3.3; 4 leaves
/// room for one more version, as AE's major 4 does.
const STRICT_MAX_MINOR: u8 = 4;

/// The verdict of [`TlsDetectCodec`].
///
/// # Examples
///
/// ```
/// use anyframe_codecs::TlsDetect;
///
/// let v = TlsDetect::Tls { major: 3, minor: 1 };
/// assert!(v.is_tls());
/// assert_eq!(v.version(), Some((3, 1)));
/// assert_eq!(TlsDetect::NotTls.version(), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsDetect {
    /// The input starts like a TLS (or SSLv2-compatible) client hello.
    ///
    /// `major`/`minor` are the record-layer version of a TLS record (for
    /// TLS 1.3 clients this is usually 3.1) or the client version of an
    /// SSLv2-compatible hello. They say nothing certain about the version
    /// the handshake will agree on.
    Tls {
        /// Major version byte (3 or 4).
        major: u8,
        /// Minor version byte (unchecked by the default rule).
        minor: u8,
    },
    /// The input contradicts every TLS greeting the codec looks for.
    NotTls,
}

impl TlsDetect {
    /// True for [`TlsDetect::Tls`].
    pub fn is_tls(&self) -> bool {
        matches!(self, TlsDetect::Tls { .. })
    }

    /// The `(major, minor)` version bytes of a TLS verdict.
    pub fn version(&self) -> Option<(u8, u8)> {
        match *self {
            TlsDetect::Tls { major, minor } => Some((major, minor)),
            TlsDetect::NotTls => None,
        }
    }
}

/// Which checks a TLS record header must pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// AnyEvent::Handle's rule (RT-tlsdetect-2/3): four bytes of record
    /// header, minor version and handshake type unchecked.
    Ae,
    /// Also requires a ClientHello at byte 5 and a minor version <= 4.
    Strict,
}

/// Detects a TLS client greeting at the start of the input **without
/// consuming anything**.
///
/// By default it applies AnyEvent::Handle's exact rule (RT-tlsdetect-2/3/4):
///
/// * a TLS record header is recognised from 4 bytes: `0x16`, major 3 or 4,
///   any minor, a length high byte of at most `0x40`. The handshake type is
///   not looked at, so a ServerHello also counts as TLS;
/// * an SSLv2-compatible ClientHello is recognised from 6 bytes (it can be
///   switched off with [`sslv2`](TlsDetectCodec::sslv2), after which any
///   byte 0 other than `0x16` is [`NotTls`] at once);
/// * [`NotTls`] comes on the first byte that contradicts both patterns, and
///   a prefix of either pattern (including no bytes at all) waits.
///
/// [`TlsDetectCodec::strict`] adds two checks to the TLS record rule: the
/// minor version is at most 4 and byte 5 is handshake type 1 (ClientHello),
/// so a record is decided from 6 bytes; an SSLv2-compatible hello must also
/// have a minor version of at most 4. The crate's tests check both rules
/// against captured ClientHellos of OpenSSL, curl, Node.js and Python and
/// against look-alikes (`tests/data/tls`).
///
/// # One-shot: it repeats its verdict
///
/// `decode` returns the verdict and **leaves the buffer exactly as it was**,
/// so the next decoder sees the same bytes (for `tls_autostart`, the TLS
/// engine gets the whole ClientHello). The flip side: as a stream decoder in
/// a `Framed` it would yield the same verdict forever. Use it as a one-shot
/// read request (`anyframe`'s request queue takes one verdict and moves on),
/// or call `decode` by hand; do not put it in a plain `Framed`.
///
/// # End of input
///
/// `decode_eof` on input that has not decided yet (`""`, `16 03 01`,
/// `80 2e 01 03 01`, ...) fails with [`ErrorKind::BrokenPipe`] (EPIPE), as
/// in AE; the bytes stay in the buffer. On input that has decided it returns
/// the verdict like `decode`.
///
/// # Cost
///
/// O(1): it reads at most the first six bytes of the buffer, and keeps no
/// state between calls (there is nothing to resume: re-reading six bytes is
/// cheaper than remembering them).
///
/// # Examples
///
/// ```
/// use anyframe_codecs::{TlsDetect, TlsDetectCodec};
/// use bytes::BytesMut;
/// use tokio_util::codec::Decoder;
///
/// let mut codec = TlsDetectCodec::new();
///
/// // Three bytes of a record header: not decided yet.
/// let mut buf = BytesMut::from(&[0x16, 0x03, 0x01][..]);
/// assert_eq!(codec.decode(&mut buf).unwrap(), None);
///
/// // The fourth byte decides, and nothing is consumed.
/// buf.extend_from_slice(&[0x00, 0xc8, 0x01]);
/// assert_eq!(
///     codec.decode(&mut buf).unwrap(),
///     Some(TlsDetect::Tls { major: 3, minor: 1 })
/// );
/// assert_eq!(buf.len(), 6);
///
/// // Plaintext is refused on its first byte.
/// let mut buf = BytesMut::from(&b"G"[..]);
/// assert_eq!(codec.decode(&mut buf).unwrap(), Some(TlsDetect::NotTls));
/// ```
///
/// The strict rule, and the end of input while undecided:
///
/// ```
/// use anyframe_codecs::{ErrorKind, TlsDetect, TlsDetectCodec};
/// use bytes::BytesMut;
/// use tokio_util::codec::Decoder;
///
/// // A ServerHello record header: TLS for AE's rule, not for the strict one.
/// let server_hello = [0x16, 0x03, 0x03, 0x00, 0x41, 0x02];
/// let mut buf = BytesMut::from(&server_hello[..]);
/// assert!(TlsDetectCodec::new().decode(&mut buf).unwrap().unwrap().is_tls());
/// assert_eq!(
///     TlsDetectCodec::strict().decode(&mut buf).unwrap(),
///     Some(TlsDetect::NotTls)
/// );
///
/// let mut buf = BytesMut::from(&[0x16, 0x03][..]);
/// let err = TlsDetectCodec::new().decode_eof(&mut buf).unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::BrokenPipe);
/// assert_eq!(buf.len(), 2);
/// ```
///
/// [`NotTls`]: TlsDetect::NotTls
/// [`ErrorKind::BrokenPipe`]: crate::ErrorKind::BrokenPipe
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsDetectCodec {
    rule: Rule,
    sslv2: bool,
}

impl TlsDetectCodec {
    /// AnyEvent::Handle's rule, with SSLv2-compatible hellos recognised.
    pub fn new() -> TlsDetectCodec {
        TlsDetectCodec {
            rule: Rule::Ae,
            sslv2: true,
        }
    }

    /// The strict rule: a TLS record must also carry a ClientHello (byte 5
    /// is 1) and every greeting a minor version of at most 4.
    pub fn strict() -> TlsDetectCodec {
        TlsDetectCodec {
            rule: Rule::Strict,
            sslv2: true,
        }
    }

    /// Whether SSLv2-compatible ClientHellos count as TLS (default: yes).
    ///
    /// No current TLS library sends one; switching them off makes every
    /// byte 0 other than `0x16` a [`TlsDetect::NotTls`] on the spot, so a
    /// plaintext protocol may then start with any byte of `0x80` or more.
    ///
    /// ```
    /// use anyframe_codecs::{TlsDetect, TlsDetectCodec};
    /// use bytes::BytesMut;
    /// use tokio_util::codec::Decoder;
    ///
    /// let mut buf = BytesMut::from(&[0x80][..]);
    /// assert_eq!(TlsDetectCodec::new().decode(&mut buf).unwrap(), None);
    /// let mut codec = TlsDetectCodec::new().sslv2(false);
    /// assert_eq!(codec.decode(&mut buf).unwrap(), Some(TlsDetect::NotTls));
    /// ```
    pub fn sslv2(mut self, on: bool) -> TlsDetectCodec {
        self.sslv2 = on;
        self
    }

    /// True for the codec made by [`TlsDetectCodec::strict`].
    pub fn is_strict(&self) -> bool {
        self.rule == Rule::Strict
    }

    /// True when SSLv2-compatible hellos are recognised.
    pub fn detects_sslv2(&self) -> bool {
        self.sslv2
    }

    /// The verdict on `buf`, or `None` while it is a proper prefix of a
    /// pattern. Each byte is checked as soon as it is present, in order, so
    /// the first contradicting byte decides.
    fn verdict(&self, buf: &[u8]) -> Option<TlsDetect> {
        match *buf.first()? {
            CONTENT_TYPE_HANDSHAKE => self.tls_record(buf),
            0x80..=0xff if self.sslv2 => self.sslv2_hello(buf),
            _ => Some(TlsDetect::NotTls),
        }
    }

    /// Byte 0 is `0x16`: check the rest of a TLS record header.
    fn tls_record(&self, buf: &[u8]) -> Option<TlsDetect> {
        let major = *buf.get(1)?;
        if !MAJOR_VERSIONS.contains(&major) {
            return Some(TlsDetect::NotTls);
        }
        let minor = *buf.get(2)?;
        if !self.minor_ok(minor) {
            return Some(TlsDetect::NotTls);
        }
        if *buf.get(3)? > MAX_RECORD_LEN_HIGH {
            return Some(TlsDetect::NotTls);
        }
        if self.rule == Rule::Strict {
            // Byte 4 (length low byte) can be anything; byte 5 is the
            // handshake message type.
            if *buf.get(5)? != HANDSHAKE_CLIENT_HELLO {
                return Some(TlsDetect::NotTls);
            }
        }
        Some(TlsDetect::Tls { major, minor })
    }

    /// Byte 0 has its high bit set: check an SSLv2-compatible ClientHello.
    fn sslv2_hello(&self, buf: &[u8]) -> Option<TlsDetect> {
        // Byte 1 is the low byte of the message length: anything.
        if *buf.get(2)? != SSL2_CLIENT_HELLO {
            return Some(TlsDetect::NotTls);
        }
        let major = *buf.get(3)?;
        if !MAJOR_VERSIONS.contains(&major) {
            return Some(TlsDetect::NotTls);
        }
        let minor = *buf.get(4)?;
        if !self.minor_ok(minor) {
            return Some(TlsDetect::NotTls);
        }
        // AE waits for a sixth byte (cipher_spec_length, unchecked) before
        // it answers; so do we, to give the same verdict on the same input.
        buf.get(5)?;
        Some(TlsDetect::Tls { major, minor })
    }

    fn minor_ok(&self, minor: u8) -> bool {
        self.rule == Rule::Ae || minor <= STRICT_MAX_MINOR
    }
}

impl Default for TlsDetectCodec {
    fn default() -> TlsDetectCodec {
        TlsDetectCodec::new()
    }
}

impl Decoder for TlsDetectCodec {
    type Item = TlsDetect;
    type Error = Error;

    /// Returns the verdict once the buffer decides it, consuming nothing.
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<TlsDetect>, Error> {
        Ok(self.verdict(buf))
    }

    /// Like `decode`, but undecided input is an EPIPE error (bytes kept).
    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<TlsDetect>, Error> {
        match self.verdict(buf) {
            Some(v) => Ok(Some(v)),
            None => Err(Error::incomplete_at_eof("tls_detect", buf.len()).with_bytes(buf)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ae(bytes: &[u8]) -> Option<TlsDetect> {
        TlsDetectCodec::new().verdict(bytes)
    }

    fn strict(bytes: &[u8]) -> Option<TlsDetect> {
        TlsDetectCodec::strict().verdict(bytes)
    }

    #[test]
    fn record_header_needs_four_bytes_under_ae() {
        let hello = [0x16, 0x03, 0x01, 0x00, 0xc8, 0x01];
        for n in 0..4 {
            assert_eq!(ae(&hello[..n]), None, "{n} bytes");
        }
        assert_eq!(ae(&hello[..4]), Some(TlsDetect::Tls { major: 3, minor: 1 }));
        for n in 0..6 {
            assert_eq!(strict(&hello[..n]), None, "{n} bytes");
        }
        assert_eq!(strict(&hello), Some(TlsDetect::Tls { major: 3, minor: 1 }));
    }

    #[test]
    fn record_length_bound_is_inclusive() {
        assert!(ae(&[0x16, 0x03, 0x03, 0x40]).unwrap().is_tls());
        assert_eq!(ae(&[0x16, 0x03, 0x03, 0x41]), Some(TlsDetect::NotTls));
    }

    #[test]
    fn strict_minor_decides_on_byte_two() {
        assert_eq!(strict(&[0x16, 0x03, 0x05]), Some(TlsDetect::NotTls));
        assert_eq!(strict(&[0x16, 0x03, 0x04]), None);
        assert_eq!(
            strict(&[0x80, 0x2e, 0x01, 0x03, 0x05]),
            Some(TlsDetect::NotTls)
        );
    }

    #[test]
    fn sslv2_off_refuses_high_bytes_at_once() {
        let c = TlsDetectCodec::new().sslv2(false);
        assert!(!c.detects_sslv2());
        assert_eq!(c.verdict(&[0x80]), Some(TlsDetect::NotTls));
        assert_eq!(c.verdict(&[0x16]), None);
    }
}
