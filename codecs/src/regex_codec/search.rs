//! Regex searches that resume where the last fruitless one left off.
//!
//! A decoder runs its regex again each time bytes arrive. Rescanning the
//! whole buffer makes a record that arrives in `k` pieces cost
//! `O(k × length)`; this module makes it `O(length)` for every regex whose
//! matches have a bounded length.
//!
//! # Why resuming is exact
//!
//! Write `P(t)` for the match a leftmost-first search reports when the
//! leftmost match starts at `t`. Every candidate match at `t` ends by
//! `t + L`, where `L` is the longest text the regex can match, and whether a
//! candidate matches depends only on its bytes and on look-around context
//! of `C` bytes on each side: at most one character (`C = 4`), none for a
//! pattern without assertions (`C = 0`). So `P(t)` is the same in a buffer
//! of `n` bytes and in the same buffer grown to `n' > n` whenever
//! `t + L + C <= n`. A search over `n` bytes that found no match starting
//! before `f` (no match at all: `f = n`) therefore lets the search over `n'`
//! start at `min(f, n - L - C)` and report what a full rescan reports.
//! Earlier bytes still serve as look-behind context ([`Regex::find_at`]), so
//! anchors and word boundaries keep their meaning.
//!
//! When the regex has no longest match (`a+`, `[;,]+`), the search starts
//! at the beginning each time, and the caller's limit bounds the window.
//!
//! # Skipping the regex
//!
//! A non-empty match holds its first byte, so when none of the bytes from
//! the search's start on can occur in any match of the pattern, there is no
//! non-empty match to find and the regex need not run. Each pattern keeps
//! the set of bytes its matches can hold ([`ByteSet`]); for an end of line
//! such as `\r\n|\n|\r` that is two bytes, and a long line fed a byte at a
//! time costs a table lookup per byte instead of a regex search. Longer
//! haystacks go straight to the regex, whose prefilters are faster there.

use regex::bytes::Regex;
use regex_syntax::hir::{Class, Hir, HirKind, Look};

/// The widest look-around the regex crate has: a Unicode word boundary
/// decodes one character, up to 4 bytes, on each side.
const LOOK_MARGIN: usize = 4;

/// What an earlier search of a regex found, for the next one to resume
/// ([`Search::first_after`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Prior {
    /// How far this window's start is past the earlier one's.
    pub(crate) moved: usize,
    /// The earlier window's length.
    pub(crate) len: usize,
    /// No match started before this point of the earlier window (its
    /// length when there was none).
    pub(crate) found: usize,
}

/// A regex and the length of its longest possible match, if it has one.
#[derive(Debug, Clone)]
pub(crate) struct Search {
    re: Regex,
    /// `None`: matches of any length (or no match at all).
    max_len: Option<usize>,
    /// How many bytes after a match its look-ahead may read (`\b`: the
    /// next character), 0 without such an assertion: a match that ends at
    /// the end of a haystack may still be made by bytes still to come.
    look_ahead: usize,
    /// The bytes a match can hold; `None` when that is (nearly) any byte,
    /// or unknown, and the regex must always run.
    bytes: Option<ByteSet>,
    /// How many bytes on each side of a match its assertions may read:
    /// [`LOOK_MARGIN`], or 0 for a pattern without look-around, whose
    /// matches depend on their own bytes only.
    context: usize,
    /// Whether some text has an empty match: the regex matches the empty
    /// haystack, or a plain reading of the pattern has a shortest match of
    /// 0 (`\b`, `x*`, `\b|;`), or a free-spaced one does and the regex
    /// confirms it.
    may_match_empty: bool,
}

impl Search {
    pub(crate) fn new(re: Regex) -> Search {
        let (readings, plain) = generous_readings(re.as_str());
        // The longest match of any reading; none when any is unbounded.
        let max_len = readings
            .iter()
            .map(|h| h.properties().maximum_len())
            .try_fold(None, |max: Option<usize>, len| Some(max.max(Some(len?))))
            .flatten();
        let look_ahead = readings.iter().map(look_ahead_at_end).max().unwrap_or(0);
        // No reading at all: the pattern is not understood, so assume the
        // widest context.
        let looks = readings.is_empty()
            || readings
                .iter()
                .any(|h| !h.properties().look_set().is_empty());
        let bytes = ByteSet::of_matches(&readings);
        // The plain readings find an empty match that needs context
        // (`\b`); the regex itself one that a builder option made (`; *`
        // free-spaced is `;*`). A free-spaced reading that matches empty is
        // checked against the regex, not taken as it is: a pattern that is
        // not free-spaced would lose its literal spaces and line ends to it
        // (`\r\n|\n|\r` written with real CR and LF reads as `||`).
        let empty = |h: &Hir| h.properties().minimum_len() == Some(0);
        let may_match_empty = re.is_match(b"")
            || readings[..plain].iter().any(empty)
            || (readings[plain..].iter().any(empty) && empty_in_some_context(&re));
        Search {
            re,
            max_len,
            look_ahead,
            context: if looks { LOOK_MARGIN } else { 0 },
            bytes,
            may_match_empty,
        }
    }

    /// Whether the regex has an empty match in some text (not only in the
    /// empty haystack: `\b` matches empty between `a` and `;`).
    pub(crate) fn may_match_empty(&self) -> bool {
        self.may_match_empty
    }

    /// The longest match the pattern allows, or `None` when unbounded.
    pub(crate) fn max_len(&self) -> Option<usize> {
        self.max_len
    }

    /// Where a search must start in a haystack that grew from `old_len`
    /// bytes, when the search over those `old_len` bytes found no match
    /// starting before `found` (`old_len` when it found none).
    pub(crate) fn resume_at(&self, old_len: usize, found: usize) -> usize {
        match self.max_len {
            Some(max) => found.min(old_len.saturating_sub(max.saturating_add(self.context))),
            None => 0,
        }
    }

    /// The leftmost match in `window`, empty or not, knowing what an
    /// earlier search found (`prior`): the same result as
    /// [`first`](Self::first) from 0, resuming where that is exact.
    ///
    /// The earlier window may have started before this one (skip moved its
    /// start): a match starting at least [`LOOK_MARGIN`] bytes into this
    /// window sees the same bytes and the same context as it did there, so
    /// the resume point carries over; the first bytes see a new start (an
    /// anchor, a word boundary) and are searched again, in a prefix long
    /// enough for any match starting there and its look-ahead. So a record
    /// that skip moves through in small steps is still searched once.
    pub(crate) fn first_after(
        &self,
        window: &[u8],
        prior: Option<Prior>,
    ) -> Option<(usize, usize)> {
        let Some(prior) = prior else {
            return self.first(window, 0);
        };
        let resume = self.resume_at(prior.len, prior.found);
        let Some(from) = resume.checked_sub(prior.moved) else {
            return self.first(window, 0);
        };
        if prior.moved == 0 {
            return self.first(window, from);
        }
        // Only a regex with a longest match resumes (`resume_at` is 0
        // otherwise, and `from` with it).
        let Some(max) = self.max_len.filter(|_| from > LOOK_MARGIN) else {
            return self.first(window, 0);
        };
        let head = window
            .len()
            .min(LOOK_MARGIN + max.saturating_add(LOOK_MARGIN));
        if let Some((start, end)) = self.first(&window[..head], 0)
            && start < LOOK_MARGIN
        {
            return Some((start, end));
        }
        self.first(window, from)
    }

    /// What to keep of a haystack of `len` bytes in which no match starts,
    /// when only its tail may stay: `(keep, context)`, the last `keep`
    /// bytes, of which the first `context` serve only as look-behind
    /// context (a later search starts after them). The rest can hold the
    /// start of a match that ends in bytes still to come; without a
    /// longest match, up to `window` bytes of it are kept (a match that
    /// began before them is not found).
    pub(crate) fn open_tail(&self, len: usize, window: usize) -> (usize, usize) {
        let reach = match self.max_len {
            Some(_) => self.open_reach(),
            None => window,
        }
        .min(len);
        let context = LOOK_MARGIN.min(len - reach);
        (reach + context, context)
    }

    /// How many of the bytes before `at` a later search needs as
    /// look-behind context for a match starting at `at`.
    pub(crate) fn context_before(&self, at: usize) -> usize {
        at.min(LOOK_MARGIN)
    }

    /// How many bytes at the end of a haystack may be the start of a match
    /// that has not ended yet: one less than the longest match, and for a
    /// regex that looks past its match (`;\b`), the bytes of the character
    /// that decides (one for an ASCII word boundary, up to four for a
    /// Unicode one). 0 when the length is unbounded, for which the caller's
    /// window is the bound.
    pub(crate) fn open_reach(&self) -> usize {
        self.max_len.map_or(0, |max| {
            max.saturating_add(self.look_ahead).saturating_sub(1)
        })
    }

    /// Whether a match may be undone by bytes after it (`;\b` before `;`
    /// and before `a`).
    pub(crate) fn looks_past_match(&self) -> bool {
        self.look_ahead > 0
    }

    /// Whether the bytes after a match that ends at `end` are the start of
    /// a character still arriving that the match's look-ahead reads (a
    /// Unicode `\b` before the first byte of `é`): the match is not
    /// decided yet.
    pub(crate) fn undecided_after(&self, hay: &[u8], end: usize) -> bool {
        self.look_ahead > 1
            && end < hay.len()
            && hay.len() - end < self.look_ahead
            && matches!(
                std::str::from_utf8(&hay[end..]),
                Err(e) if e.valid_up_to() == 0 && e.error_len().is_none()
            )
    }

    /// The leftmost match starting at or after `from`, empty or not.
    pub(crate) fn first(&self, hay: &[u8], from: usize) -> Option<(usize, usize)> {
        self.re.find_at(hay, from).map(|m| (m.start(), m.end()))
    }

    /// The leftmost non-empty match starting at or after `from`, found as
    /// `find_iter` would: an empty match is passed over and the search goes
    /// on one byte later.
    pub(crate) fn first_non_empty(&self, hay: &[u8], from: usize) -> Option<(usize, usize)> {
        if self.rules_out_non_empty(hay, from) {
            return None;
        }
        Self::regex_non_empty(&self.re, hay, from)
    }

    /// Whether `hay[from..]` holds no non-empty match, known without
    /// running the regex: it is short and none of its bytes can occur in a
    /// match. `false` only means that the regex must decide.
    #[inline(always)]
    pub(crate) fn rules_out_non_empty(&self, hay: &[u8], from: usize) -> bool {
        match (&self.bytes, hay.get(from..)) {
            (Some(bytes), Some(rest)) => rest.len() <= ByteSet::SHORT && !bytes.any_in(rest),
            _ => false,
        }
    }

    /// [`first_non_empty`](Self::first_non_empty) by the regex alone.
    fn regex_non_empty(re: &Regex, hay: &[u8], mut from: usize) -> Option<(usize, usize)> {
        while from <= hay.len() {
            let m = re.find_at(hay, from)?;
            if !m.is_empty() {
                return Some((m.start(), m.end()));
            }
            from = m.end() + 1;
        }
        None
    }
}

/// How many bytes after the end of a match of `hir` an assertion that may
/// close it reads (`;\b`, `;\b(?:x)?`; not `\bx`, whose `\b` reads the `x`).
fn look_ahead_at_end(hir: &Hir) -> usize {
    match hir.kind() {
        HirKind::Empty | HirKind::Literal(_) | HirKind::Class(_) => 0,
        HirKind::Look(look) => bytes_looked_ahead(*look),
        HirKind::Repetition(rep) => look_ahead_at_end(&rep.sub),
        HirKind::Capture(cap) => look_ahead_at_end(&cap.sub),
        HirKind::Alternation(subs) => subs.iter().map(look_ahead_at_end).max().unwrap_or(0),
        HirKind::Concat(subs) => {
            // From the last part back, through the parts that may match
            // empty text.
            let mut most = 0;
            for sub in subs.iter().rev() {
                most = most.max(look_ahead_at_end(sub));
                if sub.properties().minimum_len() != Some(0) {
                    break;
                }
            }
            most
        }
    }
}

/// How many bytes after its position the assertion `look` reads to decide
/// in a way that more bytes can turn from no to yes. An assertion on the
/// bytes before it, or one that holds at the end of the haystack (`$`), needs
/// none; an ASCII word boundary reads one byte, a Unicode one a character.
fn bytes_looked_ahead(look: Look) -> usize {
    match look {
        Look::Start
        | Look::StartLF
        | Look::StartCRLF
        | Look::End
        | Look::EndLF
        | Look::EndCRLF
        | Look::WordStartHalfAscii
        | Look::WordStartHalfUnicode => 0,
        Look::WordAscii
        | Look::WordAsciiNegate
        | Look::WordStartAscii
        | Look::WordEndAscii
        | Look::WordEndHalfAscii => 1,
        _ => LOOK_MARGIN,
    }
}

/// `pattern` read every way that matters for its longest match, the bytes
/// its matches hold and whether it can match empty text: every reading
/// that parses, of eight.
///
/// A `Regex` does not tell which builder options made it, and no one
/// reading is a superset of the others: case folding takes characters out
/// of a class with a set difference (`[a\x{212A}--k]` folds the Kelvin
/// sign into `k` and drops it) as surely as it adds `K` to `k`; free
/// spacing joins a repetition to the group before it (`(?:xy) {10}`) or
/// turns `#` into a comment; Unicode mode reads `\xd7` as a 2-byte
/// character where byte mode reads one byte. So the pattern is read with
/// case folding off and on, Unicode on and off, free spacing off and on,
/// and the answers are combined on the large side: the longest of the
/// longest matches, every byte any reading holds. (Whether it can match
/// empty text is asked of the plain readings only, see `Search::new`.)
/// One of the eight is how the regex was built, unless
/// an option outside them changed it: `.` is read matching every byte
/// (what `s` and `line_terminator` change only narrows it), and octal
/// escapes are read as octal (without that option such a pattern does not
/// build at all). With no reading, the pattern is treated as unbounded and
/// able to hold any byte: slower, never wrong.
///
/// Returns the readings, those without free spacing (plain) first, and
/// how many are plain.
fn generous_readings(pattern: &str) -> (Vec<Hir>, usize) {
    let mut readings = Vec::with_capacity(8);
    let mut plain = 0;
    // Free spacing changes nothing in a pattern without whitespace or `#`.
    let spacing = pattern.chars().any(|c| c.is_whitespace() || c == '#');
    for ignore_whitespace in [false, true].into_iter().filter(|&x| !x || spacing) {
        for case_insensitive in [false, true] {
            for unicode in [true, false] {
                let reading = regex_syntax::ParserBuilder::new()
                    .utf8(false)
                    .unicode(unicode)
                    .case_insensitive(case_insensitive)
                    .ignore_whitespace(ignore_whitespace)
                    .dot_matches_new_line(true)
                    .octal(true)
                    .build()
                    .parse(pattern);
                readings.extend(reading.ok());
            }
        }
        if !ignore_whitespace {
            plain = readings.len();
        }
    }
    (readings, plain)
}

/// Whether `re` reports an empty match in some short text. An empty match
/// depends on at most one character on each side of it (a look-around), so
/// every text of up to three characters from a few of each kind (letter,
/// digit, non-ASCII letter, non-ASCII symbol, punctuation, space, line
/// ends, a byte that is not UTF-8), and the empty text, cover every
/// context an assertion can ask about.
fn empty_in_some_context(re: &Regex) -> bool {
    const KINDS: [&[u8]; 9] = [
        b"a",
        b"0",
        "\u{e9}".as_bytes(),
        "\u{2014}".as_bytes(),
        b";",
        b" ",
        b"\n",
        b"\r",
        b"\xff",
    ];
    let edge = || KINDS.iter().copied().chain([&b""[..]]);
    let texts = edge().flat_map(|x| {
        KINDS
            .iter()
            .flat_map(move |&y| edge().map(move |z| [x, y, z].concat()))
    });
    std::iter::once(Vec::new())
        .chain(texts)
        .any(|t| (0..=t.len()).any(|i| re.find_at(&t, i).is_some_and(|m| m.is_empty())))
}

/// A set of bytes, one bit each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ByteSet([u64; 4]);

impl ByteSet {
    /// Sets above this size are not worth a pass over the haystack before
    /// the regex: the pass would seldom rule a search out. A set with every
    /// non-ASCII byte (case folding gives `k` the Kelvin sign) and a few
    /// ASCII ones still rules out most text.
    const USEFUL: u32 = 160;

    /// The longest haystack checked byte by byte before a search. The
    /// regex's own prefilters (a vectorised `memchr` for `\r\n|\n|\r`) beat
    /// a byte loop on anything longer; on a few new bytes, the regex's fixed
    /// cost per search is what the check saves.
    const SHORT: usize = 64;

    /// The bytes that can occur in a match of any of `readings` (none:
    /// unknown), when that set is small enough to be worth checking.
    ///
    /// A class that holds all ASCII bytes but one or two counts as every
    /// byte: it is a `.` without `s`, and a builder option
    /// (`line_terminator`) can move the byte it leaves out.
    fn of_matches(readings: &[Hir]) -> Option<ByteSet> {
        if readings.is_empty() {
            return None;
        }
        let mut set = ByteSet([0; 4]);
        readings.iter().for_each(|hir| set.add_hir(hir));
        let size: u32 = set.0.iter().map(|w| w.count_ones()).sum();
        (size <= Self::USEFUL).then_some(set)
    }

    fn add_hir(&mut self, hir: &Hir) {
        match hir.kind() {
            HirKind::Empty | HirKind::Look(_) => {}
            HirKind::Literal(lit) => lit.0.iter().for_each(|&b| self.add_range(b, b)),
            HirKind::Class(class) => self.add_class(class),
            HirKind::Repetition(rep) => self.add_hir(&rep.sub),
            HirKind::Capture(cap) => self.add_hir(&cap.sub),
            HirKind::Concat(subs) | HirKind::Alternation(subs) => {
                subs.iter().for_each(|sub| self.add_hir(sub));
            }
        }
    }

    fn add_class(&mut self, class: &Class) {
        let mut part = ByteSet([0; 4]);
        match class {
            Class::Bytes(bytes) => {
                for r in bytes.ranges() {
                    part.add_range(r.start(), r.end());
                }
            }
            Class::Unicode(chars) => {
                for r in chars.ranges() {
                    // ASCII as itself; any other character as every byte
                    // that can begin or continue its UTF-8 encoding.
                    let (start, end) = (u32::from(r.start()), u32::from(r.end()));
                    if start < 0x80 {
                        part.add_range(start as u8, end.min(0x7f) as u8);
                    }
                    if end >= 0x80 {
                        part.add_range(0x80, 0xff);
                    }
                }
            }
        }
        let ascii = (part.0[0].count_ones()) + (part.0[1].count_ones());
        if ascii >= 126 {
            part = ByteSet([u64::MAX; 4]);
        }
        for (word, add) in self.0.iter_mut().zip(part.0) {
            *word |= add;
        }
    }

    fn add_range(&mut self, start: u8, end: u8) {
        for b in start..=end {
            self.0[usize::from(b >> 6)] |= 1 << (b & 63);
        }
    }

    #[inline(always)]
    fn contains(&self, b: u8) -> bool {
        self.0[usize::from(b >> 6)] >> (b & 63) & 1 != 0
    }

    /// Whether any byte of `hay` is in the set.
    #[inline]
    fn any_in(&self, hay: &[u8]) -> bool {
        hay.iter().any(|&b| self.contains(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search(p: &str) -> Search {
        Search::new(Regex::new(p).unwrap())
    }

    #[test]
    fn longest_match_reads_the_pattern_generously() {
        assert_eq!(search(r"\r\n|\n|\r").max_len(), Some(2));
        assert_eq!(search(r"(?-u)[\x00-\xff]{3}").max_len(), Some(3));
        // `.` can be a 4-byte character, `k` the 3-byte Kelvin sign.
        assert_eq!(search(r".").max_len(), Some(4));
        assert_eq!(search(r"k").max_len(), Some(3));
        assert_eq!(search(r"[;,]+").max_len(), None);
        assert_eq!(search(r"\bEND\b").max_len(), Some(3));
    }

    #[test]
    fn open_reach_counts_the_bytes_a_look_ahead_reads() {
        assert_eq!(search(r"\r\n|\n|\r").open_reach(), 1);
        assert_eq!(search(r";").open_reach(), 0);
        assert_eq!(search(r";$").open_reach(), 0);
        assert_eq!(search(r"(?m:^);").open_reach(), 0);
        assert_eq!(search(r"(?-u:;\b)").open_reach(), 1);
        assert_eq!(search(r";\b").open_reach(), 4);
        assert_eq!(search(r";\B").open_reach(), 4);
        assert_eq!(search(r";+\b").open_reach(), 0);
        assert_eq!(search(r";\b(?:x)?").open_reach(), 5);
        assert_eq!(search(r"\bx").open_reach(), 0);
        assert_eq!(search(r"(?:;\b|,)").open_reach(), 4);
    }

    #[test]
    fn resume_point_keeps_the_longest_match_and_its_context() {
        // No look-around: a match depends on its own bytes only.
        let s = search(r"\r\n");
        assert_eq!(s.resume_at(100, 100), 98);
        assert_eq!(s.resume_at(100, 50), 50);
        assert_eq!(s.resume_at(3, 3), 1);
        // A word boundary reads a character on either side.
        let s = search(r"\r\n\b");
        assert_eq!(s.resume_at(100, 100), 94);
        assert_eq!(s.resume_at(100, 50), 50);
        assert_eq!(s.resume_at(3, 3), 0);
        assert_eq!(search("a+").resume_at(100, 100), 0);
    }

    #[test]
    fn non_empty_search_passes_over_empty_matches() {
        let s = search(r"\b");
        assert_eq!(s.first_non_empty(b"ab cd", 0), None);
        let s = search(r"\b;|;");
        assert_eq!(s.first_non_empty(b"ab;", 0), Some((2, 3)));
        assert_eq!(s.first_non_empty(b"ab", 2), None);
    }

    #[test]
    fn byte_set_holds_what_matches_can_hold() {
        let set = |p: &str| search(p).bytes;
        let crlf = set(r"\r\n|\n|\r").expect("two bytes");
        assert!(crlf.contains(b'\r') && crlf.contains(b'\n') && !crlf.contains(b'x'));
        assert!(set(r"(?-u:\xff);").unwrap().contains(0xff));
        // Case folding: `k` may be the Kelvin sign, so any high byte.
        let k = set("k").unwrap();
        assert!(k.contains(b'K') && k.contains(0xe2) && k.contains(0x84));
        // Many ASCII bytes, far from all.
        assert!(set("[0-9A-J]+;").is_some());
        // Nearly every byte: not worth a check.
        assert_eq!(set("."), None);
        assert_eq!(set("(?-s:.)"), None);
        assert_eq!(set(r"[^\n]x"), None);
        assert_eq!(set(r"\w"), None);
        // Octal escapes are read as octal (without the option such a
        // pattern does not build): `\141` is `a`.
        let octal = regex::bytes::RegexBuilder::new(&format!("{}141;", '\\'))
            .octal(true)
            .build();
        let octal = Search::new(octal.unwrap()).bytes.expect("a few bytes");
        assert!(octal.contains(b'a') && octal.contains(b';') && !octal.contains(b'x'));
    }

    #[test]
    fn builder_options_do_not_fool_the_byte_check() {
        use regex::bytes::RegexBuilder;
        let cases = [
            // `.` moved off `\n` by the line terminator: matches `\n`.
            (
                RegexBuilder::new("(?-s:.)").line_terminator(b'x').build(),
                &b"ab\n"[..],
            ),
            (
                RegexBuilder::new("a.").dot_matches_new_line(true).build(),
                b"a\n",
            ),
            (RegexBuilder::new("(?-u:.)").unicode(false).build(), b"\xff"),
            (RegexBuilder::new("K").case_insensitive(true).build(), b"k"),
            (
                RegexBuilder::new("a b").ignore_whitespace(true).build(),
                b"ab",
            ),
        ];
        for (re, hay) in cases {
            let re = re.unwrap();
            let s = Search::new(re.clone());
            assert_eq!(
                s.first_non_empty(hay, 0),
                Search::regex_non_empty(&re, hay, 0),
                "{re:?} on {hay:?}"
            );
            assert!(s.first_non_empty(hay, 0).is_some(), "{re:?} on {hay:?}");
        }
    }

    use proptest::prelude::*;

    /// Patterns from a small grammar: bytes of the haystack alphabet,
    /// classes, look-around, and bounded and unbounded repetition.
    fn pattern() -> impl Strategy<Value = String> {
        let atom = prop::sample::select(vec![
            "a",
            "b",
            ";",
            r"\n",
            r"\r",
            "[ab]",
            "[^a]",
            ".",
            r"\b",
            r"\B",
            "^",
            "$",
            "(?m:^)",
            "(?m:$)",
            "é",
            r"(?-u:\xff)",
            r"\w",
            "(?i:k)",
        ])
        .prop_map(str::to_owned);
        atom.prop_recursive(3, 12, 3, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a}{b}")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("(?:{a}|{b})")),
                inner.clone().prop_map(|a| format!("(?:{a})?")),
                inner.clone().prop_map(|a| format!("(?:{a}){{1,3}}")),
                inner.clone().prop_map(|a| format!("(?:{a})+")),
                inner.prop_map(|a| format!("(?:{a})*?")),
            ]
        })
    }

    fn haystack() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop::sample::select(vec![
            &b"a"[..],
            b"b",
            b";",
            b"\n",
            b"\r",
            "é".as_bytes(),
            b"\xff",
            b" ",
            b"K",
            "\u{212a}".as_bytes(),
        ]);
        prop::collection::vec(byte, 0..40).prop_map(|parts| parts.concat())
    }

    /// Feeds `hay` in the pieces `cuts` makes, searching after each piece
    /// from the resume point, and checks every answer against a search of
    /// the whole prefix from its start.
    fn check_resumed(
        search: &Search,
        hay: &[u8],
        cuts: &[usize],
        find: impl Fn(&Search, &[u8], usize) -> Option<(usize, usize)>,
    ) -> Result<(), TestCaseError> {
        let mut ends: Vec<usize> = cuts.iter().map(|c| c % (hay.len() + 1)).collect();
        ends.push(hay.len());
        ends.sort_unstable();
        let mut last: Option<(usize, usize)> = None; // (old_len, found)
        for n in ends {
            let prefix = &hay[..n];
            let from = last.map_or(0, |(old, found)| search.resume_at(old, found));
            let resumed = find(search, prefix, from);
            let full = find(search, prefix, 0);
            prop_assert_eq!(resumed, full, "prefix {:?} from {}", prefix, from);
            last = Some((n, full.map_or(n, |(start, _)| start)));
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn resumed_search_finds_what_a_full_rescan_finds(
            pattern in pattern(),
            hay in haystack(),
            cuts in prop::collection::vec(any::<usize>(), 0..8),
        ) {
            let search = Search::new(Regex::new(&pattern).unwrap());
            check_resumed(&search, &hay, &cuts, Search::first_non_empty)?;
            check_resumed(&search, &hay, &cuts, Search::first)?;
        }

        #[test]
        fn skipping_the_regex_finds_what_the_regex_finds(
            pattern in pattern(),
            hay in haystack(),
            from in any::<usize>(),
        ) {
            let re = Regex::new(&pattern).unwrap();
            let from = from % (hay.len() + 1);
            prop_assert_eq!(
                Search::new(re.clone()).first_non_empty(&hay, from),
                Search::regex_non_empty(&re, &hay, from)
            );
        }
    }
}
