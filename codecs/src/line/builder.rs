//! [`LineCodecBuilder`]: every option of the line codecs, checked once.

use bytes::Bytes;
#[cfg(feature = "regex")]
use regex::bytes::Regex;

use super::codec::{State, Terminator};
use super::eol::{Eol, LiteralEol, Scan};
use super::{CODEC, DEFAULT_LINE_MAX_LENGTH, LineCodec, OverflowPolicy, Utf8LineCodec};
#[cfg(feature = "regex")]
use super::{DEFAULT_WRITE_TERMINATOR, eol::RegexEol};
use crate::error::Error;
#[cfg(feature = "regex")]
use crate::regex_codec::Search;

/// The configured end of line, before it is compiled.
#[derive(Debug, Clone)]
enum EolSpec {
    Default,
    Literal(Bytes),
    #[cfg(feature = "regex")]
    Regex(Search),
}

/// Configures a [`LineCodec`] or [`Utf8LineCodec`].
///
/// # Examples
///
/// ```
/// use anyframe_codecs::{Line, LineCodec, OverflowPolicy};
/// use bytes::BytesMut;
/// use tokio_util::codec::Decoder;
///
/// let mut codec = LineCodec::builder()
///     .eol("\r\n")
///     .max_length(1000)
///     .overflow(OverflowPolicy::Discard)
///     .build()?;
/// let mut buf = BytesMut::from(&b"x\ny\r\n"[..]);
/// assert_eq!(codec.decode(&mut buf)?, Some(Line::new("x\ny", "\r\n")));
/// # Ok::<(), anyframe_codecs::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct LineCodecBuilder {
    eol: EolSpec,
    #[cfg(feature = "regex")]
    hold_open: bool,
    max_length: usize,
    overflow: OverflowPolicy,
    terminator: Option<Bytes>,
    write_max_length: Option<usize>,
}

impl LineCodecBuilder {
    /// The defaults of [`LineCodec::new`].
    pub fn new() -> LineCodecBuilder {
        LineCodecBuilder {
            eol: EolSpec::Default,
            #[cfg(feature = "regex")]
            hold_open: false,
            max_length: DEFAULT_LINE_MAX_LENGTH,
            overflow: OverflowPolicy::Fatal,
            terminator: None,
            write_max_length: None,
        }
    }

    /// The default end of line, `\r?\n`.
    pub fn default_eol(&mut self) -> &mut Self {
        self.eol = EolSpec::Default;
        self
    }

    /// A literal end of line: the line ends at its first occurrence, also
    /// when the EOL arrives split across reads. Regex metacharacters have
    /// no meaning here. Must not be empty ([`build`](Self::build) refuses).
    pub fn eol(&mut self, eol: impl AsRef<[u8]>) -> &mut Self {
        self.eol = EolSpec::Literal(Bytes::copy_from_slice(eol.as_ref()));
        self
    }

    /// A regex end of line (`regex::bytes::Regex`): the line is the shortest
    /// prefix of the buffered bytes followed by a non-empty match, the EOL is
    /// the matched text, as AE's `^(.*?)(EOL)` (RT-line-3). A regex that
    /// can match empty text is refused by [`build`](Self::build): one that
    /// matches the empty string (`x*`), and one that matches empty only
    /// between certain bytes (`\b`, `\b|;`), whose empty match would hide
    /// a non-empty one at the same place (`\b|;` on `ab;` matches the empty
    /// text before `;`, never the `;`).
    ///
    /// **Split-dependent** ([§2a](https://docs.rs/anyframe/latest/anyframe/semantics/index.html#2a-which-decoders-are-split-invariant)): the regex only sees what has arrived.
    /// With `[;,]+`, `"a;"` then `";b"` gives the line `"a"` with EOL `";"`
    /// and then an empty line with EOL `";"`, while `"a;;b"` in one read
    /// gives `"a"` with `";;"`. [`hold_open_match`](Self::hold_open_match)
    /// fixes the common cases.
    ///
    /// **Cost**: each `decode` call that brings new bytes runs the regex
    /// again (AE does the same). When its matches have a bounded length `L`
    /// (`\r\n|\n|\r`: 2 bytes), the search resumes `L` (plus 4 bytes of
    /// look-around) before where the last one stopped and finds what a
    /// search of the whole line would: a line costs time linear in its
    /// length however it is split. A regex with unbounded matches
    /// (`[;,]+`, `\s+`) searches the whole buffered line each time, so a
    /// line arriving in `k` pieces costs `O(k × length)`; `max_length`
    /// bounds it. Prefer `[;,]{1,16}` to `[;,]+` where a bound will do.
    ///
    /// **Bytes**: with Unicode on (the default), `.` and negated classes
    /// match whole UTF-8 characters and never a byte that is not UTF-8;
    /// write `(?-u)` for Perl's byte semantics. The regex type is
    /// re-exported as [`crate::regex`].
    ///
    /// **Limit**: with a regex EOL, a line is over the limit when the line
    /// *or the matched EOL* is longer than `max_length` (regex matches have
    /// no length of their own), decided on what has arrived. When the
    /// regex's matches have a bounded length, a line of `max_length` bytes
    /// followed by what may still become its EOL waits for the bytes that
    /// decide: the rest of the longest match, and the character after it
    /// that a look-ahead such as `\b` reads (`;\b` on `abc;` with a limit
    /// of 3 waits for the next byte), however the input was split. A regex
    /// without a longest match (`[;,]+\b`, `\n[ \t]*\n`) has no such
    /// allowance: more than `max_length` bytes with no match in them are
    /// over the limit, so a line of `max_length` bytes whose EOL is not yet
    /// a match when a read ends can be refused, where the whole input would
    /// give the line.
    ///
    /// A line being dropped ([`OverflowPolicy::Discard`]) keeps between
    /// reads only the bytes that may begin its EOL, so that memory stays
    /// bounded: when the regex has a longest match, all those bytes (the
    /// EOL it ends at is found however the input was split); otherwise at
    /// most `max_length` of them. So with unbounded matches, an EOL longer
    /// than `max_length` split across reads can go unseen, and the dropped
    /// line then runs on to the next EOL (`\n[ \t]*\n` with a limit of 3 on
    /// `\n    ` then `\nok\n\n` drops `ok` too). A held match
    /// ([`hold_open_match`](Self::hold_open_match)) of such an EOL longer
    /// than `max_length` ends the dropped line where it stands, unless its
    /// first `max_length` bytes are a match of their own (a run of `[;,]+`),
    /// which are kept to see the run go on.
    #[cfg(feature = "regex")]
    pub fn eol_regex(&mut self, eol: Regex) -> &mut Self {
        self.eol = EolSpec::Regex(Search::new(eol));
        self
    }

    /// For a regex EOL: do not take a match that touches the end of the
    /// buffered bytes until more bytes (or the end of input) show whether it
    /// goes on. This makes EOLs such as `[;,]+` and `\r\n|\n|\r` (whose
    /// matches are decided by the next byte) split-invariant; it cannot do
    /// so for every regex. (An EOL match longer than `max_length` is an
    /// overflow, see [`eol_regex`](Self::eol_regex), so a flood of EOL bytes
    /// cannot grow the buffer without end.)
    ///
    /// Off by default (AE's behaviour). No effect on default and literal
    /// EOLs, which are split-invariant anyway.
    #[cfg(feature = "regex")]
    pub fn hold_open_match(&mut self, on: bool) -> &mut Self {
        self.hold_open = on;
        self
    }

    /// The longest line accepted, EOL excluded (and, for a regex EOL, the
    /// longest EOL match) (default
    /// [`DEFAULT_LINE_MAX_LENGTH`]). `usize::MAX` means no limit: a peer
    /// that never sends an EOL then grows the buffer without bound.
    pub fn max_length(&mut self, max: usize) -> &mut Self {
        self.max_length = max;
        self
    }

    /// What happens to a line over the limit (default
    /// [`OverflowPolicy::Fatal`]).
    pub fn overflow(&mut self, policy: OverflowPolicy) -> &mut Self {
        self.overflow = policy;
        self
    }

    /// The longest line the encoder writes, terminator excluded (default
    /// `None`: no limit). Independent of [`max_length`](Self::max_length),
    /// which limits what is read: the peer reading the lines has its own.
    pub fn write_max_length(&mut self, max: Option<usize>) -> &mut Self {
        self.write_max_length = max;
        self
    }

    /// What the encoder appends to each line. Defaults: `\n` for the default
    /// EOL, the literal for a literal EOL, `\n` for a regex EOL that accepts
    /// it (else the encoder refuses until one is set).
    pub fn write_terminator(&mut self, terminator: impl AsRef<[u8]>) -> &mut Self {
        self.terminator = Some(Bytes::copy_from_slice(terminator.as_ref()));
        self
    }

    /// Builds a [`LineCodec`].
    ///
    /// # Errors
    ///
    /// `EINVAL` when the EOL can match empty text (an empty literal, or a
    /// regex such as `x*` or `\b`): as a stream decoder it would yield empty lines
    /// forever ([`build_once`](Self::build_once) accepts it for one line). `EINVAL` when the write terminator is not read back as one
    /// whole end of line by this configuration.
    pub fn build(&self) -> Result<LineCodec, Error> {
        self.build_with(false)
    }

    /// Builds a single-use [`LineCodec`]: it decodes one line, as one
    /// AnyEvent `line` read request does, and then refuses to decode more.
    ///
    /// Unlike [`build`](Self::build) it accepts an end of line that matches
    /// the empty string, as AnyEvent does: an empty literal EOL gives the
    /// line `""` with the EOL `""` at once, consuming nothing; a regex EOL
    /// that can match empty ends the line at its leftmost match, empty or
    /// not, as Perl's `^(.*?)(EOL)` (with `x*`, `"xxab"` gives `""` and
    /// `"xx"`, and an empty buffer gives `""` and `""`). Both complete on the
    /// first `decode` call, even with nothing buffered. A stream decoder
    /// would return that empty line forever, so only the single-use one
    /// allows it.
    ///
    /// # Errors
    ///
    /// `EINVAL` when the write terminator is not read back as one whole end
    /// of line by this configuration (no terminator is configured by default
    /// for an EOL that matches empty input; the encoder then refuses). The
    /// decoder's second line is a non-fatal `EINVAL` with nothing consumed.
    ///
    /// # Examples
    ///
    /// ```
    /// use anyframe_codecs::{Line, LineCodec};
    /// use bytes::BytesMut;
    /// use tokio_util::codec::Decoder;
    ///
    /// let mut once = LineCodec::builder().eol("").build_once()?;
    /// let mut buf = BytesMut::from("anything");
    /// assert_eq!(once.decode(&mut buf)?, Some(Line::new("", "")));
    /// assert_eq!(buf, "anything");
    /// assert!(once.decode(&mut buf).is_err());
    /// # Ok::<(), anyframe_codecs::Error>(())
    /// ```
    pub fn build_once(&self) -> Result<LineCodec, Error> {
        self.build_with(true)
    }

    fn build_with(&self, once: bool) -> Result<LineCodec, Error> {
        let eol = match &self.eol {
            EolSpec::Default => Eol::Default,
            EolSpec::Literal(eol) if eol.is_empty() && once => Eol::Empty,
            EolSpec::Literal(eol) if eol.is_empty() => {
                return Err(Error::invalid_input(
                    CODEC,
                    "empty end of line would match at once, forever",
                ));
            }
            EolSpec::Literal(eol) => Eol::Literal(Box::new(LiteralEol::new(eol.clone()))),
            #[cfg(feature = "regex")]
            EolSpec::Regex(search) if !once && search.may_match_empty() => {
                return Err(Error::invalid_input(
                    CODEC,
                    "end-of-line regex can match empty text",
                ));
            }
            #[cfg(feature = "regex")]
            EolSpec::Regex(search) => Eol::Regex(Box::new(RegexEol {
                search: search.clone(),
                hold_open: self.hold_open,
                empty_ok: once && search.may_match_empty(),
            })),
        };
        let is_whole_eol = |t: &[u8]| {
            eol.scan(t, 0, usize::MAX, true)
                == Scan::Found {
                    line_len: 0,
                    eol_len: t.len(),
                }
        };
        let terminator = match (&self.terminator, &eol) {
            (Some(t), _) if !t.is_empty() && is_whole_eol(t) => Terminator::Custom(t.clone()),
            (Some(t), _) => {
                return Err(Error::invalid_input(
                    CODEC,
                    "write terminator is not an end of line for this codec",
                )
                .with_bytes(t));
            }
            (None, Eol::Default) => Terminator::Lf,
            (None, Eol::Empty) => Terminator::Absent,
            (None, Eol::Literal(lit)) => Terminator::Custom(lit.eol.clone()),
            #[cfg(feature = "regex")]
            (None, Eol::Regex(_)) if is_whole_eol(DEFAULT_WRITE_TERMINATOR) => Terminator::Lf,
            #[cfg(feature = "regex")]
            (None, Eol::Regex(_)) => Terminator::Absent,
        };
        Ok(LineCodec {
            eol,
            max_length: self.max_length,
            overflow: self.overflow,
            terminator,
            write_max_length: self.write_max_length,
            state: if once {
                State::Once { scanned: 0 }
            } else {
                State::Reading { scanned: 0 }
            },
            once,
            discarded: None,
        })
    }

    /// Builds a [`Utf8LineCodec`].
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build), and `EINVAL` when the literal EOL or the
    /// write terminator is not valid UTF-8.
    pub fn build_utf8(&self) -> Result<Utf8LineCodec, Error> {
        Utf8LineCodec::checked(self.build()?)
    }

    /// Builds a single-use [`Utf8LineCodec`], as
    /// [`build_once`](Self::build_once).
    ///
    /// # Errors
    ///
    /// As [`build_once`](Self::build_once) and [`build_utf8`](Self::build_utf8).
    pub fn build_utf8_once(&self) -> Result<Utf8LineCodec, Error> {
        Utf8LineCodec::checked(self.build_once()?)
    }
}

impl Default for LineCodecBuilder {
    fn default() -> LineCodecBuilder {
        LineCodecBuilder::new()
    }
}
