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
//! of at most one character (4 bytes) on each side. So `P(t)` is the same in
//! a buffer of `n` bytes and in the same buffer grown to `n' > n` whenever
//! `t + L + 4 <= n`. A search over `n` bytes that found no match starting
//! before `f` (no match at all: `f = n`) therefore lets the search over `n'`
//! start at `min(f, n - L - 4)` and report what a full rescan reports.
//! Earlier bytes still serve as look-behind context ([`Regex::find_at`]), so
//! anchors and word boundaries keep their meaning.
//!
//! When the regex has no longest match (`a+`, `[;,]+`), the search starts
//! at the beginning each time, and the caller's limit bounds the window.

use regex::bytes::Regex;

/// The widest look-around the regex crate has: a Unicode word boundary
/// decodes one character, up to 4 bytes, on each side.
const LOOK_MARGIN: usize = 4;

/// A regex and the length of its longest possible match, if it has one.
#[derive(Debug, Clone)]
pub(crate) struct Search {
    re: Regex,
    /// `None`: matches of any length (or no match at all).
    max_len: Option<usize>,
}

impl Search {
    pub(crate) fn new(re: Regex) -> Search {
        let max_len = max_match_len(re.as_str());
        Search { re, max_len }
    }

    pub(crate) fn regex(&self) -> &Regex {
        &self.re
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
            Some(max) => found.min(old_len.saturating_sub(max.saturating_add(LOOK_MARGIN))),
            None => 0,
        }
    }

    /// What to keep of a haystack of `len` bytes in which no match starts,
    /// when only its tail may stay: `(keep, context)`, the last `keep`
    /// bytes, of which the first `context` serve only as look-behind
    /// context (a later search starts after them). The rest can hold the
    /// start of a match that ends in bytes still to come; without a
    /// longest match, up to `window` bytes of it are kept.
    pub(crate) fn open_tail(&self, len: usize, window: usize) -> (usize, usize) {
        let reach = match self.max_len {
            Some(_) => self.open_reach(),
            None => window,
        }
        .min(len);
        let context = LOOK_MARGIN.min(len - reach);
        (reach + context, context)
    }

    /// How many bytes at the end of a haystack may be the start of a match
    /// that has not ended yet: one less than the longest match (0 when the
    /// length is unbounded, for which the caller's window is the bound).
    pub(crate) fn open_reach(&self) -> usize {
        self.max_len.map_or(0, |max| max.saturating_sub(1))
    }

    /// The leftmost match starting at or after `from`, empty or not.
    pub(crate) fn first(&self, hay: &[u8], from: usize) -> Option<(usize, usize)> {
        self.re.find_at(hay, from).map(|m| (m.start(), m.end()))
    }

    /// The leftmost non-empty match starting at or after `from`, found as
    /// `find_iter` would: an empty match is passed over and the search goes
    /// on one byte later.
    pub(crate) fn first_non_empty(&self, hay: &[u8], mut from: usize) -> Option<(usize, usize)> {
        while from <= hay.len() {
            let m = self.re.find_at(hay, from)?;
            if !m.is_empty() {
                return Some((m.start(), m.end()));
            }
            from = m.end() + 1;
        }
        None
    }
}

/// The length in bytes of the longest text `pattern` can match, if bounded.
///
/// A `Regex` does not tell how it was built, so the pattern is read with the
/// settings that give the longest matches: Unicode on (a class or `.` may
/// match a 4-byte character where byte mode matches one byte) and case
/// folding on (`k` may match the 3-byte Kelvin sign). Flags written in the
/// pattern, such as `(?-u)`, still apply. A pattern built with settings
/// that make it read differently here (free spacing, octal escapes) and
/// fails to parse is treated as unbounded: slower, never wrong.
fn max_match_len(pattern: &str) -> Option<usize> {
    regex_syntax::ParserBuilder::new()
        .utf8(false)
        .unicode(true)
        .case_insensitive(true)
        .build()
        .parse(pattern)
        .ok()?
        .properties()
        .maximum_len()
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
    fn resume_point_keeps_the_longest_match_and_its_context() {
        let s = search(r"\r\n");
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
    }
}
