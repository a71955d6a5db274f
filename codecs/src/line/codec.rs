//! [`LineCodec`]: lines as [`Line`]s split off the read buffer, and the
//! line encoder.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::eol::{Discard, Eol, Scan, scan_default};
use super::{CODEC, DEFAULT_LINE_MAX_LENGTH, DEFAULT_WRITE_TERMINATOR, Line, LineCodecBuilder};
use crate::error::Error;

/// What a decoder does with a line longer than its `max_length`.
///
/// # Examples
///
/// ```
/// use anyframe_codecs::{LineCodec, OverflowPolicy};
/// use bytes::BytesMut;
/// use tokio_util::codec::Decoder;
///
/// let mut codec = LineCodec::builder()
///     .max_length(4)
///     .overflow(OverflowPolicy::Discard)
///     .build()?;
/// let mut buf = BytesMut::from(&b"much too long\nok\n"[..]);
/// let err = codec.decode(&mut buf).unwrap_err();
/// assert!(err.is_limit() && !err.is_fatal());
/// assert_eq!(codec.decode(&mut buf)?.unwrap().line(), b"ok");
/// # Ok::<(), anyframe_codecs::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OverflowPolicy {
    /// Report `ENOSPC` as a **fatal** error and consume nothing. The default:
    /// a peer that overruns the limit is out of step with the protocol.
    #[default]
    Fatal,
    /// Drop the over-long line up to and including its EOL, then report
    /// `ENOSPC` **once**, as a non-fatal error, and go on with the next
    /// line. The error comes when the line is gone, so the next decoder,
    /// even a fresh one per request, starts on a line boundary. While the
    /// line is dropped its bytes are consumed without a frame: a request
    /// cancelled then does not get them back.
    Discard,
}

/// Decoder state: reading a line (with how far it was scanned), or dropping
/// an over-long one up to its end of line; for a single-use decoder, reading
/// its one line, or done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    Reading {
        scanned: usize,
    },
    /// Dropping an over-long line; the first `from` bytes in the buffer
    /// are kept only as look-behind context for a regex end of line.
    Discarding {
        from: usize,
    },
    /// A single-use decoder reading its line: as `Reading`, kept apart so
    /// the inlined fast path of stream decoders never sees it.
    Once {
        scanned: usize,
    },
    /// A single-use decoder that has produced its line.
    Spent,
}

/// What the encoder appends after each line.
#[derive(Debug, Clone)]
pub(super) enum Terminator {
    /// `\n`, the default: nothing to allocate or free.
    Lf,
    /// A configured terminator, or a literal end of line written back.
    Custom(Bytes),
    /// None: a regex end of line that does not accept `\n`, with no
    /// terminator configured (the encoder refuses to write).
    Absent,
}

impl Terminator {
    pub(super) fn get(&self) -> Option<&[u8]> {
        match self {
            Terminator::Lf => Some(DEFAULT_WRITE_TERMINATOR),
            Terminator::Custom(t) => Some(t),
            Terminator::Absent => None,
        }
    }
}

/// A decoder and encoder for lines, with frames of [`Bytes`] (no copy).
///
/// The default end of line is `\r?\n`; the builder sets a literal or regex
/// EOL, the length limit and what happens past it. Decoding is linear in the
/// input for the default and literal EOLs: the codec remembers how far it
/// scanned and the line and EOL are split off the buffer without copying.
///
/// # Errors and state
///
/// * A line longer than `max_length` (EOL excluded): `ENOSPC`
///   ([`Error::is_limit`]). With [`OverflowPolicy::Fatal`] (the default)
///   the error is fatal and nothing is consumed. With
///   [`OverflowPolicy::Discard`] the line is dropped through its EOL and
///   then reported once, non-fatal.
/// * Input ending inside a line (`decode_eof`): `EPIPE`, fatal; the partial
///   line stays in the buffer and [`Error::seen`] gives its length. While
///   discarding, the end of input ends the discarded line (and its
///   `ENOSPC` is reported).
///
/// * Writing a line that a decoder of the same configuration would not read
///   back exactly: `EINVAL`, nothing written. That is a line holding an end
///   of line, one that runs into its terminator (a `\r` before `\n`), or,
///   with a regex EOL, one that runs on from the terminator written before
///   it (an empty line under `\n+`).
///
/// The codec keeps a scan position into the buffer between calls, so feed it
/// one buffer and let only it consume from the front.
///
/// # Examples
///
/// ```
/// use anyframe_codecs::{Line, LineCodec};
/// use bytes::BytesMut;
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = LineCodec::new();
/// let mut buf = BytesMut::from(&b"a\rb\r\r\n\rd\n"[..]);
/// let line = codec.decode(&mut buf)?.unwrap();
/// assert_eq!((line.line(), line.eol()), (&b"a\rb\r"[..], &b"\r\n"[..]));
/// assert_eq!(codec.decode(&mut buf)?, Some(Line::new("\rd", "\n")));
///
/// let mut out = BytesMut::new();
/// codec.encode("hello", &mut out)?;
/// assert_eq!(out, "hello\n");
/// # Ok::<(), anyframe_codecs::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct LineCodec {
    pub(super) eol: Eol,
    pub(super) max_length: usize,
    pub(super) overflow: OverflowPolicy,
    /// What the encoder appends; `None` for a regex EOL that does not
    /// accept `\n` and was given no terminator.
    pub(super) terminator: Terminator,
    /// The encoder's limit on one line; `None`: no limit.
    pub(super) write_max_length: Option<usize>,
    pub(super) state: State,
    /// Built by `build_once`: one line, then `EINVAL`.
    pub(super) once: bool,
    /// While discarding: how long the over-long line was when it overflowed
    /// and its first bytes, for the error reported once it is dropped.
    /// Boxed: it is rare, and a codec travels by value in every request.
    pub(super) discarded: Option<Box<(u64, [u8; crate::SNIPPET_LEN], usize)>>,
}

impl LineCodec {
    /// A codec for `\r?\n` lines of at most [`DEFAULT_LINE_MAX_LENGTH`]
    /// bytes, fatal on overflow, writing `\n`.
    pub fn new() -> LineCodec {
        LineCodec {
            eol: Eol::Default,
            max_length: DEFAULT_LINE_MAX_LENGTH,
            overflow: OverflowPolicy::Fatal,
            terminator: Terminator::Lf,
            write_max_length: None,
            state: State::Reading { scanned: 0 },
            discarded: None,
            once: false,
        }
    }

    /// A codec whose end of line is the literal `eol` (written as well).
    ///
    /// # Errors
    ///
    /// `EINVAL` if `eol` is empty: it would end an empty line at once,
    /// forever.
    pub fn with_eol(eol: impl AsRef<[u8]>) -> Result<LineCodec, Error> {
        LineCodec::builder().eol(eol).build()
    }

    /// A builder for every option.
    pub fn builder() -> LineCodecBuilder {
        LineCodecBuilder::new()
    }

    /// The longest line accepted, EOL excluded.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// What happens to a line over [`max_length`](Self::max_length).
    pub fn overflow_policy(&self) -> OverflowPolicy {
        self.overflow
    }

    /// What the encoder appends to each line, if anything is configured.
    pub fn write_terminator(&self) -> Option<&[u8]> {
        self.terminator.get()
    }

    /// The longest line the encoder writes, terminator excluded; `None`
    /// (the default) for no limit.
    pub fn write_max_length(&self) -> Option<usize> {
        self.write_max_length
    }

    /// True while an over-long line is being dropped
    /// ([`OverflowPolicy::Discard`]).
    pub fn is_discarding(&self) -> bool {
        matches!(self.state, State::Discarding { .. })
    }

    /// Finds the first complete line at the front of `buf` and returns
    /// `(line_len, eol_len)` without consuming it; drops discarded bytes.
    ///
    /// The common case (default EOL, a whole line buffered) is inlined into
    /// `decode`; everything else goes through `next_line_slow`. Forced
    /// inlining (here and on the rest of the hot path) lets the caller keep
    /// the frame in registers: returned through memory, the 64-byte `Line`
    /// made decoding about twice as slow in the line-40B benchmark.
    #[inline(always)]
    pub(crate) fn next_line(
        &mut self,
        buf: &mut BytesMut,
        eof: bool,
    ) -> Result<Option<(usize, usize)>, Error> {
        if let (State::Reading { scanned }, Eol::Default) = (self.state, &self.eol) {
            match scan_default(buf, scanned, self.max_length) {
                Scan::Found { line_len, eol_len } => {
                    // Usually already 0: a store less per line.
                    if scanned != 0 {
                        self.state = State::Reading { scanned: 0 };
                    }
                    return Ok(Some((line_len, eol_len)));
                }
                Scan::NeedMore { scanned } => {
                    self.state = State::Reading { scanned };
                    return Ok(None);
                }
                Scan::Overflow { .. } => {}
            }
        }
        self.next_line_slow(buf, eof)
    }

    /// `next_line` for every state and EOL kind.
    #[inline(never)]
    fn next_line_slow(
        &mut self,
        buf: &mut BytesMut,
        eof: bool,
    ) -> Result<Option<(usize, usize)>, Error> {
        // A long line arriving in small pieces: most calls bring bytes
        // that cannot end it, told from a table without a regex search.
        // (Here rather than in `next_line`: in that inlined path the check
        // costs the default end of line about 5% in `line-40B`.)
        #[cfg(feature = "regex")]
        if let (State::Reading { scanned }, Eol::Regex(re)) = (self.state, &self.eol)
            && !eof
            && let Some(scanned) = re.quick_need_more(buf, scanned, self.max_length)
        {
            self.state = State::Reading { scanned };
            return Ok(None);
        }
        loop {
            match self.state {
                State::Discarding { from } => {
                    if let Discard::NeedMore { from } =
                        self.eol.discard(buf, self.max_length, eof, from)
                        && !eof
                    {
                        self.state = State::Discarding { from };
                        return Ok(None);
                    }
                    // The whole line is gone: report it now, so that the
                    // next decoder, even a fresh one, starts on a line.
                    self.state = self.reading(0);
                    let (seen, snippet, n) = *self.discarded.take().unwrap_or_default();
                    return Err(Error::too_large(CODEC, self.max_length, seen)
                        .with_bytes(&snippet[..n])
                        .fatal(false));
                }
                State::Reading { scanned } | State::Once { scanned } => {
                    return match self.eol.scan(buf, scanned, self.max_length, eof) {
                        Scan::Found { line_len, eol_len } => {
                            self.state = if self.once {
                                State::Spent
                            } else {
                                State::Reading { scanned: 0 }
                            };
                            Ok(Some((line_len, eol_len)))
                        }
                        Scan::NeedMore { scanned } => {
                            self.state = self.reading(scanned);
                            Ok(None)
                        }
                        Scan::Overflow { seen } if self.overflow == OverflowPolicy::Discard => {
                            self.start_discarding(buf, seen);
                            continue;
                        }
                        Scan::Overflow { seen } => Err(self.overflowed(buf, seen)),
                    };
                }
                State::Spent => {
                    return Err(Error::invalid_input(
                        CODEC,
                        "single-use decoder has already produced its line",
                    ));
                }
            }
        }
    }

    /// The reading state, for a stream or a single-use decoder.
    fn reading(&self, scanned: usize) -> State {
        if self.once {
            State::Once { scanned }
        } else {
            State::Reading { scanned }
        }
    }

    /// The fatal `ENOSPC` of `OverflowPolicy::Fatal`: nothing is consumed.
    fn overflowed(&self, buf: &[u8], seen: usize) -> Error {
        Error::too_large(CODEC, self.max_length, seen as u64).with_bytes(buf)
    }

    /// Starts dropping an over-long line (`OverflowPolicy::Discard`); the
    /// error is reported once the line is gone.
    fn start_discarding(&mut self, buf: &[u8], seen: usize) {
        let mut snippet = [0u8; crate::SNIPPET_LEN];
        let n = buf.len().min(snippet.len());
        snippet[..n].copy_from_slice(&buf[..n]);
        self.discarded = Some(Box::new((seen as u64, snippet, n)));
        self.state = State::Discarding { from: 0 };
    }

    /// True for a decoder built by
    /// [`build_once`](LineCodecBuilder::build_once): one line, then `EINVAL`.
    pub fn is_single_use(&self) -> bool {
        self.once
    }

    /// The end of line, for decoders that frame the same lines in their own
    /// way ([`LineBatchCodec`](crate::LineBatchCodec)).
    #[inline(always)]
    pub(crate) fn eol_scanner(&self) -> &Eol {
        &self.eol
    }

    /// Splits the line found by `next_line` off the buffer.
    #[inline(always)]
    fn take(buf: &mut BytesMut, line_len: usize, eol_len: usize) -> Line {
        // One split for line and EOL: the frame's only reference count.
        Line {
            frame: buf.split_to(line_len + eol_len).freeze(),
            line_len,
        }
    }

    #[inline(always)]
    fn decode_with(&mut self, buf: &mut BytesMut, eof: bool) -> Result<Option<Line>, Error> {
        match self.next_line(buf, eof)? {
            Some((line_len, eol_len)) => Ok(Some(Self::take(buf, line_len, eol_len))),
            None => Ok(None),
        }
    }

    /// Appends `line` and the terminator, after checking that a decoder
    /// with this configuration would read exactly `line` back, after a line
    /// or at the start.
    pub(super) fn encode_line(&self, line: &[u8], dst: &mut BytesMut) -> Result<(), Error> {
        let Some(term) = self.terminator.get() else {
            return Err(Error::invalid_input(
                CODEC,
                "no write terminator for this end-of-line regex",
            ));
        };
        if let Some(max) = self.write_max_length
            && line.len() > max
        {
            return Err(
                Error::invalid_input(CODEC, "line longer than write_max_length")
                    .over_limit(max)
                    .with_seen(line.len() as u64),
            );
        }
        // A regex EOL match counts against the decoder's limit: a terminator
        // longer than that would not be read back as an end of line.
        #[cfg(feature = "regex")]
        if matches!(self.eol, Eol::Regex(_)) && term.len() > self.max_length {
            return Err(Error::invalid_input(
                CODEC,
                "terminator longer than max_length allows an end of line",
            )
            .over_limit(self.max_length)
            .with_seen(term.len() as u64));
        }
        if matches!(self.eol, Eol::Default) && default_reads_back(line, term) {
            dst.reserve(line.len() + term.len());
            dst.extend_from_slice(line);
            dst.extend_from_slice(term);
            return Ok(());
        }
        // A regex EOL may also run on from the terminator written before
        // this line (`\n+` and an empty line, say): then the reader would
        // take the two terminators as one and lose the line. Such an EOL is
        // checked on the line between two terminators, written in place;
        // the leading one is removed afterwards.
        #[cfg(feature = "regex")]
        let lead = if matches!(self.eol, Eol::Regex(_)) {
            term.len()
        } else {
            0
        };
        #[cfg(not(feature = "regex"))]
        let lead = 0;
        let start = dst.len();
        dst.reserve(lead + line.len() + term.len());
        dst.extend_from_slice(&term[..lead]);
        dst.extend_from_slice(line);
        dst.extend_from_slice(term);
        let written = &dst[start..];
        let alone = Scan::Found {
            line_len: 0,
            eol_len: term.len(),
        };
        let refusal = if lead > 0 && self.eol.scan(written, 0, usize::MAX, true) != alone {
            Some("line would run into the end of line before it")
        } else {
            // What we write must frame as what we would read, whatever the
            // length: the line's length is the reader's limit to enforce.
            let expect = Scan::Found {
                line_len: line.len(),
                eol_len: term.len(),
            };
            (self.eol.scan(&written[lead..], 0, usize::MAX, true) != expect)
                .then_some("line contains or runs into an end of line")
        };
        if let Some(why) = refusal {
            dst.truncate(start);
            return Err(Error::invalid_input(CODEC, why).with_bytes(line));
        }
        if lead > 0 {
            dst.copy_within(start + lead.., start);
            dst.truncate(dst.len() - lead);
        }
        Ok(())
    }
}

impl Default for LineCodec {
    fn default() -> LineCodec {
        LineCodec::new()
    }
}

impl Decoder for LineCodec {
    type Item = Line;
    type Error = Error;

    #[inline(always)]
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Line>, Error> {
        self.decode_with(buf, false)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Line>, Error> {
        match self.decode_with(buf, true)? {
            Some(line) => Ok(Some(line)),
            None if buf.is_empty() => Ok(None),
            None => Err(Error::incomplete_at_eof(CODEC, buf.len())),
        }
    }
}

/// Writes `line` followed by the configured terminator.
///
/// # Errors
///
/// `EINVAL`, with nothing written, when no terminator is configured (regex
/// EOL that does not accept `\n`), when `line` is longer than
/// [`write_max_length`](LineCodecBuilder::write_max_length) (no limit by
/// default; the decoder's `max_length` does not apply), when a regex EOL's
/// terminator is longer than `max_length` (the decoder counts the EOL match
/// against it), or when the decoder would not read `line` back unchanged:
/// it contains the end of line, or its tail joins the terminator (a trailing
/// CR before the default `\n`).
impl<T: AsRef<[u8]>> Encoder<T> for LineCodec {
    type Error = Error;

    fn encode(&mut self, item: T, dst: &mut BytesMut) -> Result<(), Error> {
        self.encode_line(item.as_ref(), dst)
    }
}

/// Whether `line` then `term` reads back as `line` under the default end of
/// line (`\r?\n`), without scanning what was written: no `\n` inside the
/// line, and no `\r` at its end right before a bare `\n` (the reader would
/// take it as part of the end of line). Anything else takes the general
/// check, which also says what is wrong.
fn default_reads_back(line: &[u8], term: &[u8]) -> bool {
    let tail_ok = match term {
        b"\r\n" => true,
        b"\n" => line.last() != Some(&b'\r'),
        _ => false,
    };
    tail_ok && memchr::memchr(b'\n', line).is_none()
}
