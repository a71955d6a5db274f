//! End-of-line scanners: where the first line of a buffer ends, for each
//! kind of end of line (EOL), resuming where the last call stopped.
//!
//! Every scanner answers from a bounded prefix of the buffer (the line limit
//! plus the longest EOL), so the default and literal EOLs decide the same
//! way however the input was split, and none looks at a byte twice.

use bytes::{Buf, Bytes, BytesMut};
use memchr::memmem;

#[cfg(feature = "regex")]
use crate::regex_codec::Search;

/// Where a line ends, as configured. Crate-private: the builder is the
/// public face.
///
/// The configured variants are boxed: a codec travels by value in every
/// queued request and is often built per message, so the common `\r?\n`
/// codec stays small and cheap to build, move and drop.
#[derive(Debug, Clone)]
pub(crate) enum Eol {
    /// `\r?\n`.
    Default,
    /// The empty end of line of a single-use decoder: matches at once.
    Empty,
    /// A literal byte string (never empty).
    Literal(Box<LiteralEol>),
    /// A regex (able to match empty text only in a single-use decoder).
    #[cfg(feature = "regex")]
    Regex(Box<RegexEol>),
}

/// A literal end of line and its searcher.
#[derive(Debug, Clone)]
pub(crate) struct LiteralEol {
    pub(crate) eol: Bytes,
    pub(crate) finder: memmem::Finder<'static>,
}

impl LiteralEol {
    /// The end of line `eol` (not empty).
    pub(crate) fn new(eol: Bytes) -> LiteralEol {
        LiteralEol {
            finder: memmem::Finder::new(eol.as_ref()).into_owned(),
            eol,
        }
    }
}

/// A regex end of line.
#[cfg(feature = "regex")]
#[derive(Debug, Clone)]
pub(crate) struct RegexEol {
    pub(crate) search: Search,
    pub(crate) hold_open: bool,
    /// An empty match may end the line (single-use decoders only).
    pub(crate) empty_ok: bool,
}

#[cfg(feature = "regex")]
impl RegexEol {
    /// What [`Eol::scan`] says of a buffer of which `scanned` bytes were
    /// searched before, when that is certainly "more input is needed"
    /// (before the end of input): `Some(scanned)` for the new verdict, with
    /// no regex search. That is when nothing has arrived since the last
    /// search, or when none of the few bytes the search would look at can
    /// occur in an end of line and the line is still within the limit. A
    /// long line fed a byte at a time then costs a few table lookups per
    /// byte. `None`: only `scan` can tell.
    #[inline(always)]
    pub(crate) fn quick_need_more(&self, buf: &[u8], scanned: usize, max: usize) -> Option<usize> {
        let len = buf.len();
        if self.empty_ok {
            return None;
        }
        if len == scanned {
            return Some(scanned);
        }
        let search = &self.search;
        (len <= max.saturating_add(search.open_reach())
            && search.rules_out_non_empty(buf, search.resume_at(scanned, scanned)))
        .then_some(len)
    }
}

/// The outcome of dropping part of an over-long line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Discard {
    /// The line's EOL was found and dropped with it.
    Ended,
    /// More input is needed; the next call starts its search after the
    /// first `from` bytes, kept only as look-behind context.
    NeedMore { from: usize },
}

/// The outcome of looking for the end of the first line in a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scan {
    /// The first line is `buf[..line_len]`, its EOL the next `eol_len` bytes.
    Found { line_len: usize, eol_len: usize },
    /// No verdict yet; `buf[..scanned]` need not be looked at again.
    NeedMore { scanned: usize },
    /// The first line is certainly longer than the limit; `seen` bytes of it
    /// were examined.
    Overflow { seen: usize },
}

impl Eol {
    /// Looks for the end of the first line of `buf`, resuming after
    /// `scanned` bytes examined by an earlier call on the same line.
    ///
    /// The verdict depends only on a bounded prefix of `buf` (the line limit
    /// plus the longest EOL), so the default and literal EOLs decide the same
    /// way however the input was split.
    // `eof` and `max` matter to the regex end of line only.
    #[cfg_attr(not(feature = "regex"), allow(unused_variables))]
    pub(crate) fn scan(&self, buf: &[u8], scanned: usize, max: usize, eof: bool) -> Scan {
        match self {
            Eol::Default => scan_default(buf, scanned, max),
            Eol::Empty => Scan::Found {
                line_len: 0,
                eol_len: 0,
            },
            Eol::Literal(lit) => scan_literal(&lit.finder, lit.eol.len(), buf, scanned, max),
            #[cfg(feature = "regex")]
            Eol::Regex(re) => scan_regex(
                &re.search,
                re.hold_open && !eof,
                re.empty_ok,
                buf,
                scanned,
                max,
                eof,
            ),
        }
    }

    /// Drops the front of an over-long line: [`Discard::Ended`] when its
    /// EOL was found and dropped too; otherwise more input is needed, and
    /// only the bytes that may start the EOL are kept (none at `eof`): for a
    /// regex without a longest match, at most `max` of them, which bounds
    /// memory and misses an EOL longer than `max` split across reads.
    ///
    /// `from`: how many bytes at the front were kept by the last call only
    /// as look-behind context for a regex end of line (0 the first time).
    // `eof`, `max` and `from` matter to the regex end of line only.
    #[cfg_attr(not(feature = "regex"), allow(unused_variables))]
    pub(crate) fn discard(
        &self,
        buf: &mut BytesMut,
        max: usize,
        eof: bool,
        from: usize,
    ) -> Discard {
        let more = Discard::NeedMore { from: 0 };
        match self {
            Eol::Default => match memchr::memchr(b'\n', buf) {
                Some(lf) => {
                    buf.advance(lf + 1);
                    Discard::Ended
                }
                None => {
                    // A CR at the end would belong to the EOL, but the EOL
                    // is dropped with the line anyway.
                    buf.clear();
                    more
                }
            },
            Eol::Literal(lit) => match lit.finder.find(buf) {
                Some(at) => {
                    buf.advance(at + lit.eol.len());
                    Discard::Ended
                }
                None => {
                    let keep = if eof { 0 } else { lit.eol.len() - 1 };
                    buf.advance(buf.len().saturating_sub(keep));
                    more
                }
            },
            // An empty end of line never overflows.
            Eol::Empty => Discard::Ended,
            #[cfg(feature = "regex")]
            Eol::Regex(re) => match re.search.first_non_empty(buf, from.min(buf.len())) {
                Some((start, end))
                    if re.hold_open
                        && !eof
                        && (end == buf.len() || re.search.undecided_after(buf, end)) =>
                {
                    // Keep the held match and the context before it, so the
                    // regex sees the same match go on, and the bytes before
                    // it that may begin a longer match still to end (`abc`
                    // of `abc|b` at `ab` + `b`), as the reading path keeps
                    // them: those within the longest match when the regex
                    // has one, else within `max` bytes (at least one).
                    let keep = |buf: &mut BytesMut, from: usize, to: usize| {
                        let context = re.search.context_before(from);
                        buf.truncate(to);
                        buf.advance(from - context);
                        Discard::NeedMore { from: context }
                    };
                    let window = match re.search.max_len() {
                        Some(_) => re.search.open_reach(),
                        None => max.max(1),
                    };
                    let from = start.min(end.saturating_sub(window));
                    if re.search.max_len().is_some() || end - start <= window {
                        // With the start of the character after it, if the
                        // match waits for that.
                        return keep(buf, from, buf.len());
                    }
                    // A match of an unbounded regex longer than `max`: its
                    // first bytes are kept when they are a match of their
                    // own, which decides as well for a run of a repeated
                    // EOL (`;\n*`, `[;,]+`), the rest of the run going
                    // with the line. Its last bytes alone would not do:
                    // `\n\n` is no longer a match of `;\n*`. Any other
                    // match (`\n    \n` of `\n[ \t]*\n`) ends the line
                    // where it stands: cut short it would be no match, and
                    // kept whole it could grow without bound.
                    match re.search.first_non_empty(&buf[..start + window], start) {
                        Some((at, to)) if at == start => keep(buf, start, to),
                        _ => {
                            buf.advance(end);
                            Discard::Ended
                        }
                    }
                }
                Some((_, end)) => {
                    buf.advance(end);
                    Discard::Ended
                }
                None if eof => {
                    buf.clear();
                    more
                }
                None => {
                    // An EOL may have begun in the last bytes: keep those
                    // (and the context before them), as the literal EOL
                    // keeps all but one byte of itself. Without a longest
                    // match, the last `max` bytes: an EOL that began
                    // before them is lost, the price of bounded memory.
                    let (keep, context) = re.search.open_tail(buf.len(), max);
                    buf.advance(buf.len() - keep);
                    Discard::NeedMore { from: context }
                }
            },
        }
    }
}

/// `\r?\n`: the LF must lie within `max + 2` bytes (a line of `max` bytes,
/// then CR LF).
#[inline(always)]
pub(crate) fn scan_default(buf: &[u8], scanned: usize, max: usize) -> Scan {
    let window = buf.len().min(max.saturating_add(2));
    let from = scanned.min(window);
    if let Some(i) = find_lf(&buf[from..window]) {
        let lf = from + i;
        let line_len = if lf > 0 && buf[lf - 1] == b'\r' {
            lf - 1
        } else {
            lf
        };
        return if line_len > max {
            Scan::Overflow { seen: lf + 1 }
        } else {
            Scan::Found {
                line_len,
                eol_len: lf + 1 - line_len,
            }
        };
    }
    // No LF yet. More than `max` bytes are too many, unless the byte at
    // `max` is a CR that the next byte (not here yet) may join to a CR LF.
    let len = buf.len();
    if len > max && (len - max >= 2 || buf[max] != b'\r') {
        Scan::Overflow { seen: window }
    } else {
        Scan::NeedMore { scanned: window }
    }
}

/// How many bytes `find_lf` examines inline before handing over to `memchr`.
///
/// Most lines are short; for them a word-at-a-time scan in the caller beats
/// `memchr`'s call and CPU-feature dispatch (which cost more than scanning
/// 40 bytes). Past 64 bytes, `memchr`'s vector loop wins.
const INLINE_SCAN: usize = 64;

/// The position of the first LF in `hay`.
#[inline(always)]
fn find_lf(hay: &[u8]) -> Option<usize> {
    let mut at = 0;
    // Two words per step: one well-predicted branch per 16 bytes.
    while at < INLINE_SCAN
        && let Some(pair) = hay[at..].first_chunk::<16>()
    {
        let lo = lf_flags(pair[..8].try_into().expect("8 of 16 bytes"));
        let hi = lf_flags(pair[8..].try_into().expect("8 of 16 bytes"));
        if lo | hi != 0 {
            let i = if lo != 0 {
                lo.trailing_zeros()
            } else {
                64 + hi.trailing_zeros()
            };
            return Some(at + (i / 8) as usize);
        }
        at += 16;
    }
    // A short tail (the last line in the buffer) in one more word.
    if at < INLINE_SCAN
        && let Some(word) = hay[at..].first_chunk::<8>()
    {
        let flags = lf_flags(*word);
        if flags != 0 {
            return Some(at + (flags.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let rest = &hay[at..];
    if rest.len() < 8 {
        // A few new bytes (a line arriving in small pieces): fewer than
        // `memchr`'s call costs.
        return rest.iter().position(|&b| b == b'\n').map(|i| at + i);
    }
    memchr::memchr(b'\n', rest).map(|i| at + i)
}

/// The high bit of each byte of the result is set where `word` (read
/// little-endian) has its first LF, and possibly in bytes after it, never
/// before: a byte of `x` is zero where the word has a LF, and only bytes
/// above a zero byte can be flagged falsely, so the lowest flag is exact.
#[inline(always)]
fn lf_flags(word: [u8; 8]) -> u64 {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const LFS: u64 = u64::from_ne_bytes([b'\n'; 8]);
    let x = u64::from_le_bytes(word) ^ LFS;
    x.wrapping_sub(ONES) & !x & HIGHS
}

/// A literal EOL of `eol_len` bytes must start at or before `max`. The
/// search resumes `eol_len - 1` bytes before the end of the last one, so an
/// EOL split across reads is found and nothing else is looked at twice.
fn scan_literal(
    finder: &memmem::Finder<'static>,
    eol_len: usize,
    buf: &[u8],
    scanned: usize,
    max: usize,
) -> Scan {
    let reach = max.saturating_add(eol_len);
    let window = buf.len().min(reach);
    let from = scanned.min(window).saturating_sub(eol_len - 1);
    match finder.find(&buf[from..window]) {
        Some(i) => Scan::Found {
            line_len: from + i,
            eol_len,
        },
        None if buf.len() >= reach || !eol_may_start(finder.needle(), buf, max) => {
            Scan::Overflow { seen: window }
        }
        None => Scan::NeedMore { scanned: window },
    }
}

/// Whether a line of at most `max` bytes may still end in `buf`, whose
/// whole occurrences of `eol` were looked for: past the limit, only an EOL
/// that begins by `max` and is cut off by the end of `buf` could end it.
/// (At most `eol.len() - 1` starts to try, and only once the buffer is
/// past the limit, so the scan stays linear.)
fn eol_may_start(eol: &[u8], buf: &[u8], max: usize) -> bool {
    if buf.len() <= max {
        return true;
    }
    let first = buf.len().saturating_sub(eol.len() - 1);
    (first..=max).any(|at| eol.starts_with(&buf[at..]))
}

/// The regex EOL, searched again on each call that brings new bytes (as AE
/// does), from where the last search stopped less the longest match the
/// regex allows; see `LineCodecBuilder::eol_regex` for the cost.
#[cfg(feature = "regex")]
fn scan_regex(
    search: &Search,
    hold_open: bool,
    empty_ok: bool,
    buf: &[u8],
    scanned: usize,
    max: usize,
    eof: bool,
) -> Scan {
    let len = buf.len();
    if !eof && scanned == len && !(empty_ok && len == 0) {
        // Nothing new since the last fruitless search: same answer. (An
        // empty buffer was never searched when an empty match may end the
        // line.)
        return Scan::NeedMore { scanned };
    }
    // The last search (over `scanned` bytes) found no end of line, or one
    // held open that ends at `scanned` and so starts after the resume point.
    // A line of `max` bytes may be followed by the start of its EOL. At
    // end of input the same bytes are judged the same way: within that
    // reach they are an unfinished line (`EPIPE`), as for the literal and
    // default EOLs (RT-line-5).
    let limit = max.saturating_add(search.open_reach());
    let from = search.resume_at(scanned, scanned);
    let found = if empty_ok {
        search.first(buf, from)
    } else {
        search.first_non_empty(buf, from)
    };
    match found {
        // A match past the limit ends no line this long. But a match that
        // begins before it, by the limit, may still end in bytes to come
        // (`abc` of `abc|b` before `b`), and a look-ahead may undo this
        // one (`END` of `\bEND\b` before `N`): then only more bytes, or
        // the end of input, decide.
        Some((start, end)) if start > max || end - start > max => {
            let pending = len.saturating_sub(search.open_reach());
            let undone = search.looks_past_match();
            if !eof && pending <= max && (pending < start || (undone && pending <= start)) {
                Scan::NeedMore { scanned: len }
            } else {
                Scan::Overflow { seen: len }
            }
        }
        // Held: the match ends where the input does, or before a character
        // still arriving that its look-ahead reads.
        Some((_, end)) if hold_open && (end == len || search.undecided_after(buf, end)) => {
            Scan::NeedMore { scanned: len }
        }
        Some((start, end)) => Scan::Found {
            line_len: start,
            eol_len: end - start,
        },
        None if len > limit => Scan::Overflow { seen: len },
        None => Scan::NeedMore { scanned: len },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(eol: &[u8]) -> Eol {
        Eol::Literal(Box::new(LiteralEol::new(Bytes::copy_from_slice(eol))))
    }

    #[test]
    fn default_scan_waits_for_lf_after_cr_at_the_limit() {
        // max 3: "abc\r" may still become "abc" + CRLF.
        assert_eq!(scan_default(b"abc\r", 0, 3), Scan::NeedMore { scanned: 4 });
        assert_eq!(
            scan_default(b"abc\r\n", 4, 3),
            Scan::Found {
                line_len: 3,
                eol_len: 2
            }
        );
        assert_eq!(scan_default(b"abc\rx", 4, 3), Scan::Overflow { seen: 5 });
        assert_eq!(scan_default(b"abcd", 0, 3), Scan::Overflow { seen: 4 });
        assert_eq!(scan_default(b"abcd\n", 0, 3), Scan::Overflow { seen: 5 });
    }

    #[test]
    fn find_lf_agrees_with_memchr() {
        let mut hay = vec![b'x'; 200];
        assert_eq!(find_lf(&hay), None);
        for at in [0, 1, 7, 8, 9, 63, 64, 65, 150, 199] {
            hay[at] = b'\n';
            assert_eq!(find_lf(&hay), Some(at), "{at}");
            // A later LF, and bytes that differ from LF in one bit, do not
            // move the answer.
            for b in hay.iter_mut().skip(at + 1) {
                *b = [0x0b, 0x8a, 0x00, b'\n'][*b as usize % 4];
            }
            assert_eq!(find_lf(&hay), Some(at));
            hay.fill(b'x');
        }
        for len in 0..20 {
            let mut short = vec![0x0bu8; len];
            assert_eq!(find_lf(&short), None);
            if len > 0 {
                short[len - 1] = b'\n';
                assert_eq!(find_lf(&short), Some(len - 1));
            }
        }
    }

    #[test]
    fn default_scan_handles_the_unbounded_limit() {
        assert_eq!(
            scan_default(b"ab\n", 0, usize::MAX),
            Scan::Found {
                line_len: 2,
                eol_len: 1
            }
        );
        assert_eq!(
            scan_default(b"ab", 1, usize::MAX),
            Scan::NeedMore { scanned: 2 }
        );
    }

    #[test]
    fn literal_scan_resumes_before_the_last_scan_end() {
        let eol = lit(b"<END>");
        let Eol::Literal(lit) = &eol else {
            unreachable!()
        };
        let finder = &lit.finder;
        let s = scan_literal(finder, 5, b"abc<EN", 0, 100);
        assert_eq!(s, Scan::NeedMore { scanned: 6 });
        assert_eq!(
            scan_literal(finder, 5, b"abc<END>", 6, 100),
            Scan::Found {
                line_len: 3,
                eol_len: 5
            }
        );
    }

    #[test]
    fn literal_discard_keeps_a_possible_eol_start() {
        let eol = lit(b"\r\n");
        let mut buf = BytesMut::from(&b"xxxx\r"[..]);
        assert_eq!(
            eol.discard(&mut buf, 10, false, 0),
            Discard::NeedMore { from: 0 }
        );
        assert_eq!(buf, "\r");
        buf.extend_from_slice(b"\nnext");
        assert_eq!(eol.discard(&mut buf, 10, false, 0), Discard::Ended);
        assert_eq!(buf, "next");
    }

    /// Ends of line with and without look-around, bounded and not, for
    /// the check that the quick verdict agrees with the search.
    #[cfg(feature = "regex")]
    const QUICK_PATTERNS: &[&str] = &[
        r"\r\n|\n|\r",
        r"\r\n",
        "ab|b",
        "abc|b",
        "a;b|;",
        "(?:ab|abcd)",
        "[;,]+",
        "x;+y|;",
        r";\b",
        r"\bEND\b",
        ";$",
        "(?m:^);",
        r"(?-u:;\b)",
    ];

    /// What the lines are made of: mostly bytes that no end of line holds.
    #[cfg(feature = "regex")]
    const QUICK_PIECES: &[&[u8]] = &[
        b"x",
        b"x",
        b"x",
        b"xxxxxxx",
        b"a",
        b"b",
        b";",
        b",",
        b"\r",
        b"\n",
        b"END",
        b" ",
        "\u{e9}".as_bytes(),
    ];

    #[cfg(feature = "regex")]
    proptest::proptest! {
        /// Wherever `quick_need_more` gives a verdict, it is the one the
        /// regex search gives, along every sequence of reads.
        #[test]
        fn quick_need_more_agrees_with_the_search(
            pattern in proptest::sample::select(QUICK_PATTERNS),
            hold_open in proptest::prelude::any::<bool>(),
            max in proptest::prelude::prop_oneof![1usize..12, proptest::strategy::Just(1 << 20)],
            input in proptest::collection::vec(
                proptest::sample::select(QUICK_PIECES),
                0..60,
            ),
            sizes in proptest::collection::vec(1usize..5, 1..8),
        ) {
            let re = RegexEol {
                search: Search::new(regex::bytes::Regex::new(pattern).unwrap()),
                hold_open,
                empty_ok: false,
            };
            let eol = Eol::Regex(Box::new(re.clone()));
            let input = input.concat();
            let mut buf = BytesMut::new();
            let mut scanned = 0;
            let mut rest = &input[..];
            for size in sizes.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (piece, after) = rest.split_at((*size).min(rest.len()));
                rest = after;
                buf.extend_from_slice(piece);
                loop {
                    let slow = eol.scan(&buf, scanned, max, false);
                    if let Some(quick) = re.quick_need_more(&buf, scanned, max) {
                        proptest::prop_assert_eq!(slow, Scan::NeedMore { scanned: quick });
                    }
                    match slow {
                        Scan::Found { line_len, eol_len } => {
                            let _ = buf.split_to(line_len + eol_len);
                            scanned = 0;
                        }
                        Scan::NeedMore { scanned: now } => {
                            scanned = now;
                            break;
                        }
                        Scan::Overflow { .. } => return Ok(()),
                    }
                }
            }
        }
    }

    /// The quick verdict does answer for a long line fed a byte at a time,
    /// and leaves an end of line to the search.
    #[cfg(feature = "regex")]
    #[test]
    fn quick_need_more_answers_for_bytes_outside_every_match() {
        let re = RegexEol {
            search: Search::new(regex::bytes::Regex::new(r"\r\n|\n|\r").unwrap()),
            hold_open: true,
            empty_ok: false,
        };
        let mut buf = b"xxxxxxxxxx".to_vec();
        assert_eq!(re.quick_need_more(&buf, 9, 100), Some(10));
        assert_eq!(re.quick_need_more(&buf, 10, 100), Some(10));
        // Past the limit (and what may still start an end of line there):
        // the search decides on the overflow.
        assert_eq!(re.quick_need_more(&buf, 9, 8), None);
        buf.push(b'\r');
        assert_eq!(re.quick_need_more(&buf, 10, 100), None);
        // A held `\r` two bytes back is still looked at.
        buf.push(b'x');
        assert_eq!(re.quick_need_more(&buf, 11, 100), None);
        // An empty match that may end the line is the search's to find.
        let empty = RegexEol {
            empty_ok: true,
            ..re.clone()
        };
        assert_eq!(empty.quick_need_more(b"xx", 1, 100), None);
    }

    #[cfg(feature = "regex")]
    #[test]
    fn regex_discard_keeps_a_possible_eol_start_and_its_context() {
        let eol = |p: &str| {
            Eol::Regex(Box::new(RegexEol {
                search: Search::new(regex::bytes::Regex::new(p).unwrap()),
                hold_open: false,
                empty_ok: false,
            }))
        };
        // `\r\n`: one byte of a possible match, four of context.
        let crlf = eol(r"\r\n");
        let mut buf = BytesMut::from(&b"xxxxxxxxx\r"[..]);
        let from = match crlf.discard(&mut buf, 4, false, 0) {
            Discard::NeedMore { from } => from,
            Discard::Ended => panic!("no EOL yet"),
        };
        assert_eq!((&buf[..], from), (&b"xxxx\r"[..], 4));
        buf.extend_from_slice(b"\nnext");
        assert_eq!(crlf.discard(&mut buf, 4, false, from), Discard::Ended);
        assert_eq!(buf, "next");
        // The context keeps look-behind right: an `x` that goes on a word
        // is no `\bx`, though it would be at the front of a buffer.
        let word = eol(r"\bx");
        let mut buf = BytesMut::from(&b"aaaaaaaaaa"[..]);
        let Discard::NeedMore { from } = word.discard(&mut buf, 4, false, 0) else {
            panic!("no EOL yet");
        };
        assert_eq!((&buf[..], from), (&b"aaaa"[..], 4));
        buf.extend_from_slice(b"x");
        let Discard::NeedMore { from } = word.discard(&mut buf, 4, false, from) else {
            panic!("an x inside a word is no EOL");
        };
        buf.extend_from_slice(b" x");
        assert_eq!(word.discard(&mut buf, 4, false, from), Discard::Ended);
        // At the end of input nothing is kept.
        let mut buf = BytesMut::from(&b"xxxxxxxx\r"[..]);
        assert!(matches!(
            crlf.discard(&mut buf, 4, true, 0),
            Discard::NeedMore { .. }
        ));
        assert!(buf.is_empty());
    }
}
