//! Where does the JSON text at the front of the buffer end?
//!
//! [`JsonScanner`] is a byte-at-a-time state machine for RFC 8259 texts. It is
//! strict (the grammar, escapes, well-formed UTF-8 inside strings), so that
//! anything serde_json would reject for syntax is reported at the first bad
//! byte, and anything it frames is one text serde_json can read in one go.
//!
//! The state between calls is the lexical state ([`Lex`]), the number of bytes
//! already looked at, the nesting depth and one bit per open container (array
//! or object). No recursion, no copying: a 1,000,000-deep `[[[[…` costs one
//! counter and is stopped by the depth limit.
//!
//! ```text
//!            value ──► Str ─(")─► value done
//!  Start ─┬─► `{` ──► FirstKey ─(")─► Str(key) ─► Colon ─(:)─► Value ─► …
//!         ├─► `[` ──► FirstItem ─► value ─► AfterValue ─(,)─► Value | Key
//!         ├─► t f n ─► Literal                        └─(] })─► value done
//!         └─► - 0-9 ─► Number ─(any other byte)─► value done, byte re-read
//!  value done at depth 0 ⇒ Complete(end)
//! ```
//!
//! A number at the top level has no closing byte: it ends at the first byte
//! that cannot continue it (that byte is not part of the text), or at end of
//! input through [`JsonScanner::end_at_eof`].

use super::{Invalid, Problem, Scan};

/// Printable ASCII other than `"` and `\`: the bytes a string body runs over
/// without a state change.
static STR_PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0x20;
    while i < 0x80 {
        t[i] = i != b'"' as usize && i != b'\\' as usize;
        i += 1;
    }
    t
};

/// JSON's four whitespace bytes.
#[inline]
pub(crate) fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t')
}

/// How many whitespace bytes start `buf`.
#[inline]
pub(crate) fn leading_whitespace(buf: &[u8]) -> usize {
    buf.iter()
        .position(|&b| !is_whitespace(b))
        .unwrap_or(buf.len())
}

/// The limits a scan enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JsonLimits {
    /// Largest text, in bytes, from its first byte to its last.
    pub(crate) max_size: usize,
    /// Most arrays/objects open at once.
    pub(crate) max_depth: usize,
    /// Refuse scalars at the top level.
    pub(crate) objects_only: bool,
}

/// Where inside a number the scan is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Num {
    /// After `-`.
    Minus,
    /// A leading `0` (no more integer digits may follow).
    Zero,
    /// In the integer digits.
    Int,
    /// After `.`.
    Dot,
    /// In the fraction digits.
    Frac,
    /// After `e` or `E`.
    Exp,
    /// After the exponent's sign.
    ExpSign,
    /// In the exponent digits.
    ExpDigits,
}

impl Num {
    /// Whether the number could end here.
    fn is_complete(self) -> bool {
        matches!(self, Num::Zero | Num::Int | Num::Frac | Num::ExpDigits)
    }
}

/// The lexical state: what the next byte may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    /// Before the first byte of a text (leading whitespace already skipped).
    Start,
    /// A value must come (after `:`, or after `,` in an array).
    Value,
    /// Just after `[`: a value or `]`.
    FirstItem,
    /// Just after `{`: a key or `}`.
    FirstKey,
    /// After `,` in an object: a key.
    Key,
    /// After a key: `:`.
    Colon,
    /// After a value inside a container: `,` or the closing bracket.
    AfterValue,
    /// Inside a string (a key if `key`).
    Str { key: bool },
    /// After a backslash in a string.
    Escape { key: bool },
    /// Inside `\uXXXX`, with `left` hex digits to go.
    Hex { key: bool, left: u8 },
    /// Inside a multi-byte UTF-8 sequence: `left` continuation bytes to go,
    /// the next one in `lo..=hi`; `have` bytes of the sequence seen.
    Utf8 {
        key: bool,
        left: u8,
        lo: u8,
        hi: u8,
        have: u8,
    },
    /// Inside `true`, `false` or `null`: the `left` bytes that must still
    /// come, first byte lowest, in `rest`.
    Literal { rest: u32, left: u8 },
    /// Inside a number.
    Number(Num),
}

/// A resumable scanner for one JSON text at a time.
///
/// Feed it the buffer starting at the text's first byte (after leading
/// whitespace, see [`leading_whitespace`]) as often as bytes arrive; it looks
/// only at the bytes it has not seen. After `Complete` or `Invalid` it is
/// back at the start, ready for the next text.
#[derive(Debug, Clone)]
pub(crate) struct JsonScanner {
    lex: Lex,
    /// Bytes of the current text already looked at.
    pos: usize,
    /// Open containers.
    depth: usize,
    /// Bit `d` is set when the container at depth `d` is an object.
    objects: Vec<u64>,
    limits: JsonLimits,
}

/// The outcome of one step: the next lexical state, or the end of the scan
/// (`Complete` or `Invalid`) as `Err`.
type Step = Result<Lex, Scan>;

/// What a value's last byte means for the scan.
enum Done {
    /// The value was the whole text, which ends before this offset.
    Text(usize),
    /// The value was inside a container.
    Inner,
}

impl JsonScanner {
    pub(crate) fn new(limits: JsonLimits) -> JsonScanner {
        JsonScanner {
            lex: Lex::Start,
            pos: 0,
            depth: 0,
            objects: Vec::new(),
            limits,
        }
    }

    pub(crate) fn limits(&self) -> JsonLimits {
        self.limits
    }

    /// Forgets the current text.
    pub(crate) fn reset(&mut self) {
        self.lex = Lex::Start;
        self.pos = 0;
        self.depth = 0;
    }

    /// At end of input: the length of a top-level number that the end of
    /// input completes, if that is what was being scanned.
    pub(crate) fn end_at_eof(&self) -> Option<usize> {
        match self.lex {
            Lex::Number(n) if self.depth == 0 && n.is_complete() => Some(self.pos),
            _ => None,
        }
    }

    /// Scans the bytes of `text` not seen before. `text` must start at the
    /// same byte on every call until the scan completes or fails.
    pub(crate) fn scan(&mut self, text: &[u8]) -> Scan {
        if self.pos > text.len() {
            // The caller took bytes this scan had seen: start over.
            self.reset();
        }
        let limit = self.limits.max_size;
        // One byte past the limit is looked at: it may be the delimiter that
        // ends a top-level number of exactly `limit` bytes.
        let end = text.len().min(limit.saturating_add(1));
        let result = match self.run(text, end) {
            Scan::Incomplete if self.pos > limit => Scan::Invalid(self.too_large(limit)),
            Scan::Complete(n) if n > limit => Scan::Invalid(self.too_large(limit)),
            other => other,
        };
        if result != Scan::Incomplete {
            self.reset();
        }
        result
    }

    fn too_large(&self, limit: usize) -> Invalid {
        Invalid {
            offset: limit,
            problem: Problem::TooLarge {
                limit,
                seen: (limit as u64).saturating_add(1),
            },
        }
    }

    /// The state machine proper, over `text[self.pos..end]`: one named step
    /// per lexical state, each taking the byte at `i` (and any run of bytes
    /// it can take at once) and giving the next state, or the end of the
    /// scan.
    fn run(&mut self, t: &[u8], end: usize) -> Scan {
        let mut i = self.pos;
        let mut lex = self.lex;
        while i < end {
            let b = t[i];
            // The hottest path, a run of plain bytes in a string, without a
            // trip through the dispatch.
            if matches!(lex, Lex::Str { .. }) && STR_PLAIN[b as usize] {
                i += 1;
                while i < end && STR_PLAIN[t[i] as usize] {
                    i += 1;
                }
                continue;
            }
            let step = match lex {
                Lex::Str { key } => self.string(t, &mut i, end, key),
                Lex::AfterValue => self.after_value_byte(t, &mut i, end),
                Lex::Number(n) => self.number(t, &mut i, end, n),
                Lex::Value | Lex::FirstItem | Lex::Start => self.value(b, &mut i, lex),
                Lex::FirstKey | Lex::Key => self.key(b, &mut i, lex),
                Lex::Colon => colon(b, &mut i),
                Lex::Literal { rest, left } => self.literal(t, &mut i, end, rest, left),
                Lex::Utf8 {
                    key,
                    left,
                    lo,
                    hi,
                    have,
                } => utf8_continuation(b, &mut i, key, left, lo, hi, have),
                Lex::Escape { key } => escape(b, &mut i, key),
                Lex::Hex { key, left } => hex_digit(b, &mut i, key, left),
            };
            match step {
                Ok(next) => lex = next,
                Err(done) => return done,
            }
        }
        self.pos = i;
        self.lex = lex;
        Scan::Incomplete
    }

    /// Inside a string, at a byte that is not plain (the run loop takes
    /// those): a closing quote ends the string (a key then wants `:`, taken
    /// directly when at hand), a backslash starts an escape.
    #[inline(always)]
    fn string(&mut self, t: &[u8], i: &mut usize, end: usize, key: bool) -> Step {
        let b = t[*i];
        *i += 1;
        match b {
            b'"' if key => {
                if *i < end && t[*i] == b':' {
                    *i += 1;
                    Ok(Lex::Value)
                } else {
                    Ok(Lex::Colon)
                }
            }
            b'"' => self.value_end(t, i, end),
            b'\\' => Ok(Lex::Escape { key }),
            0..=0x1f => Err(invalid(*i - 1, "control character in string")),
            _ => match utf8_lead(b) {
                Some((left, lo, hi)) => Ok(Lex::Utf8 {
                    key,
                    left,
                    lo,
                    hi,
                    have: 1,
                }),
                None => Err(invalid_utf8(*i - 1, *i - 1)),
            },
        }
    }

    /// After a value inside a container: `,` (then a key's quote, taken
    /// directly), a closing bracket, or whitespace.
    #[inline(always)]
    fn after_value_byte(&mut self, t: &[u8], i: &mut usize, end: usize) -> Step {
        let b = t[*i];
        *i += 1;
        match b {
            b',' if self.in_object() => {
                if *i < end && t[*i] == b'"' {
                    *i += 1;
                    Ok(Lex::Str { key: true })
                } else {
                    Ok(Lex::Key)
                }
            }
            b',' => Ok(Lex::Value),
            b']' | b'}' => self.closing(b, *i - 1),
            b' ' | b'\n' | b'\r' | b'\t' => Ok(Lex::AfterValue),
            _ => Err(invalid(*i - 1, "expected ',' or a closing bracket")),
        }
    }

    /// Inside a number: runs over digits; any byte that cannot continue a
    /// complete number ends it and is read again in the state after it.
    #[inline(always)]
    fn number(&mut self, t: &[u8], i: &mut usize, end: usize, n: Num) -> Step {
        let b = t[*i];
        let next = match (n, b) {
            (Num::Int | Num::Frac | Num::ExpDigits, b'0'..=b'9') => {
                *i += 1;
                while *i < end && t[*i].is_ascii_digit() {
                    *i += 1;
                }
                return Ok(Lex::Number(n));
            }
            (Num::Minus, b'0') => Num::Zero,
            (Num::Minus, b'1'..=b'9') => Num::Int,
            (Num::Minus, _) => return Err(invalid(*i, "expected a digit after '-'")),
            (Num::Zero, b'0'..=b'9') => return Err(invalid(*i, "leading zero in number")),
            (Num::Zero | Num::Int, b'.') => Num::Dot,
            (Num::Zero | Num::Int | Num::Frac, b'e' | b'E') => Num::Exp,
            (Num::Dot, b'0'..=b'9') => Num::Frac,
            (Num::Dot, _) => return Err(invalid(*i, "expected a digit after '.'")),
            (Num::Exp, b'+' | b'-') => Num::ExpSign,
            (Num::Exp | Num::ExpSign, b'0'..=b'9') => Num::ExpDigits,
            (Num::Exp | Num::ExpSign, _) => {
                return Err(invalid(*i, "expected a digit in the exponent"));
            }
            (Num::Zero | Num::Int | Num::Frac | Num::ExpDigits, _) => {
                return self.value_end(t, i, end);
            }
        };
        *i += 1;
        Ok(Lex::Number(next))
    }

    /// Where a value must (or, after `[`, may) start: skips whitespace
    /// inside a container, closes an empty array, or begins the value.
    #[inline(always)]
    fn value(&mut self, b: u8, i: &mut usize, lex: Lex) -> Step {
        if is_whitespace(b) && lex != Lex::Start {
            *i += 1;
            return Ok(lex);
        }
        if lex == Lex::Start && self.limits.objects_only && b != b'[' && b != b'{' {
            return Err(invalid(*i, "top-level value is not an array or object"));
        }
        *i += 1;
        if b == b']' && lex == Lex::FirstItem {
            return self.closing(b, *i - 1);
        }
        self.begin_value(b, *i - 1).map_err(Scan::Invalid)
    }

    /// Where an object key must (or, after `{`, may) start.
    #[inline(always)]
    fn key(&mut self, b: u8, i: &mut usize, lex: Lex) -> Step {
        *i += 1;
        match b {
            b'"' => Ok(Lex::Str { key: true }),
            b'}' if lex == Lex::FirstKey => self.closing(b, *i - 1),
            b' ' | b'\n' | b'\r' | b'\t' => Ok(lex),
            _ => Err(invalid(*i - 1, "expected a string key")),
        }
    }

    /// Inside `true`, `false` or `null`: the whole rest at once when it is
    /// at hand, else one byte.
    #[inline(always)]
    fn literal(&mut self, t: &[u8], i: &mut usize, end: usize, rest: u32, left: u8) -> Step {
        let n = usize::from(left);
        if *i + n > end {
            if t[*i] != rest as u8 {
                return Err(invalid(*i, "invalid literal"));
            }
            *i += 1;
            return Ok(Lex::Literal {
                rest: rest >> 8,
                left: left - 1,
            });
        }
        let want = rest.to_le_bytes();
        if let Some(k) = (0..n).find(|&k| t[*i + k] != want[k]) {
            return Err(invalid(*i + k, "invalid literal"));
        }
        *i += n;
        self.value_end(t, i, end)
    }

    /// A value has just ended before `*i`: the whole text if it was at the
    /// top level, else the state after a value inside its container.
    #[inline(always)]
    fn value_end(&mut self, t: &[u8], i: &mut usize, end: usize) -> Step {
        match self.value_done(*i) {
            Done::Text(n) => Err(Scan::Complete(n)),
            Done::Inner => self.after_value(t, i, end).map_err(Scan::Invalid),
        }
    }

    /// A closing bracket `b` at offset `at`: the whole text if it closes the
    /// top level, else the state after a value.
    #[inline(always)]
    fn closing(&mut self, b: u8, at: usize) -> Step {
        match self.close(b, at) {
            Ok(Done::Text(n)) => Err(Scan::Complete(n)),
            Ok(Done::Inner) => Ok(Lex::AfterValue),
            Err(e) => Err(Scan::Invalid(e)),
        }
    }

    /// The first byte `b` (at offset `at`) of a value: the state after it.
    #[inline]
    fn begin_value(&mut self, b: u8, at: usize) -> Result<Lex, Invalid> {
        Ok(match b {
            b'{' => {
                self.open(true, at)?;
                Lex::FirstKey
            }
            b'[' => {
                self.open(false, at)?;
                Lex::FirstItem
            }
            b'"' => Lex::Str { key: false },
            b'-' => Lex::Number(Num::Minus),
            b'0' => Lex::Number(Num::Zero),
            b'1'..=b'9' => Lex::Number(Num::Int),
            b't' => literal(b"rue"),
            b'f' => literal(b"alse"),
            b'n' => literal(b"ull"),
            b']' | b'}' if self.depth == 0 => {
                return Err(Invalid::syntax(at, "closing bracket without an open one"));
            }
            _ => return Err(Invalid::syntax(at, "expected a JSON value")),
        })
    }

    /// A value inside a container has just ended before `*i`: takes the
    /// common continuations (`,` then a key's quote, or `,` then the next
    /// array item's first byte) directly, saving trips through the dispatch.
    /// Anything else is left to the `AfterValue` state.
    #[inline(always)]
    fn after_value(&mut self, t: &[u8], i: &mut usize, end: usize) -> Result<Lex, Invalid> {
        if *i + 1 >= end || t[*i] != b',' {
            return Ok(Lex::AfterValue);
        }
        let next = t[*i + 1];
        if self.in_object() {
            if next == b'"' {
                *i += 2;
                return Ok(Lex::Str { key: true });
            }
            *i += 1;
            return Ok(Lex::Key);
        }
        *i += 1;
        if is_whitespace(next) {
            return Ok(Lex::Value);
        }
        *i += 1;
        self.begin_value(next, *i - 1)
    }

    /// A value ended just before offset `end`.
    #[inline]
    fn value_done(&self, end: usize) -> Done {
        if self.depth == 0 {
            Done::Text(end)
        } else {
            Done::Inner
        }
    }

    #[inline]
    fn in_object(&self) -> bool {
        let d = self.depth.wrapping_sub(1);
        self.objects
            .get(d / 64)
            .is_some_and(|w| w & (1 << (d % 64)) != 0)
    }

    /// Opens a container at offset `at`.
    #[inline]
    fn open(&mut self, object: bool, at: usize) -> Result<(), Invalid> {
        let limit = self.limits.max_depth;
        if self.depth >= limit {
            return Err(Invalid {
                offset: at,
                problem: Problem::TooDeep { limit },
            });
        }
        let (word, bit) = (self.depth / 64, self.depth % 64);
        if word == self.objects.len() {
            self.objects.push(0);
        }
        if let Some(w) = self.objects.get_mut(word) {
            if object {
                *w |= 1 << bit;
            } else {
                *w &= !(1 << bit);
            }
        }
        self.depth += 1;
        Ok(())
    }

    /// Closes the innermost container with `b` (`]` or `}`) at offset `at`.
    #[inline]
    fn close(&mut self, b: u8, at: usize) -> Result<Done, Invalid> {
        if self.depth == 0 {
            return Err(Invalid::syntax(at, "closing bracket without an open one"));
        }
        if (b == b'}') != self.in_object() {
            return Err(Invalid::syntax(at, "closing bracket does not match"));
        }
        self.depth -= 1;
        Ok(self.value_done(at + 1))
    }
}

/// After an object key: `:` (whitespace allowed before it).
#[inline(always)]
fn colon(b: u8, i: &mut usize) -> Step {
    *i += 1;
    match b {
        b':' => Ok(Lex::Value),
        b' ' | b'\n' | b'\r' | b'\t' => Ok(Lex::Colon),
        _ => Err(invalid(*i - 1, "expected ':' after an object key")),
    }
}

/// A continuation byte of a multi-byte UTF-8 sequence in a string, which
/// must lie in `lo..=hi`; `have` bytes of the sequence came before it.
#[inline(always)]
fn utf8_continuation(b: u8, i: &mut usize, key: bool, left: u8, lo: u8, hi: u8, have: u8) -> Step {
    if b < lo || b > hi {
        return Err(invalid_utf8(*i - usize::from(have), *i));
    }
    *i += 1;
    Ok(if left == 1 {
        Lex::Str { key }
    } else {
        Lex::Utf8 {
            key,
            left: left - 1,
            lo: 0x80,
            hi: 0xbf,
            have: have + 1,
        }
    })
}

/// The byte after a backslash in a string.
#[inline(always)]
fn escape(b: u8, i: &mut usize, key: bool) -> Step {
    let next = match b {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Lex::Str { key },
        b'u' => Lex::Hex { key, left: 4 },
        _ => return Err(invalid(*i, "invalid escape in string")),
    };
    *i += 1;
    Ok(next)
}

/// One of the four hex digits of a `\u` escape.
#[inline(always)]
fn hex_digit(b: u8, i: &mut usize, key: bool, left: u8) -> Step {
    if !b.is_ascii_hexdigit() {
        return Err(invalid(*i, "invalid \\u escape in string"));
    }
    *i += 1;
    Ok(if left == 1 {
        Lex::Str { key }
    } else {
        Lex::Hex {
            key,
            left: left - 1,
        }
    })
}

/// The state inside a literal with `rest` (at most 4 bytes) to come.
#[inline]
fn literal(rest: &[u8]) -> Lex {
    let mut packed = [0u8; 4];
    let n = rest.len().min(4);
    packed[..n].copy_from_slice(&rest[..n]);
    Lex::Literal {
        rest: u32::from_le_bytes(packed),
        left: n as u8,
    }
}

#[cold]
fn invalid(offset: usize, reason: &'static str) -> Scan {
    Scan::Invalid(Invalid::syntax(offset, reason))
}

#[cold]
fn invalid_utf8(start: usize, offset: usize) -> Scan {
    Scan::Invalid(Invalid {
        offset,
        problem: Problem::Utf8 { start },
    })
}

/// For a UTF-8 lead byte: how many continuation bytes follow and the range
/// of the first one (which excludes overlong forms, surrogates and code
/// points past U+10FFFF). `None` for a byte that cannot start a sequence.
fn utf8_lead(b: u8) -> Option<(u8, u8, u8)> {
    Some(match b {
        0xc2..=0xdf => (1, 0x80, 0xbf),
        0xe0 => (2, 0xa0, 0xbf),
        0xe1..=0xec | 0xee..=0xef => (2, 0x80, 0xbf),
        0xed => (2, 0x80, 0x9f),
        0xf0 => (3, 0x90, 0xbf),
        0xf1..=0xf3 => (3, 0x80, 0xbf),
        0xf4 => (3, 0x80, 0x8f),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: JsonLimits = JsonLimits {
        max_size: 1 << 20,
        max_depth: 128,
        objects_only: false,
    };

    fn whole(text: &[u8]) -> Scan {
        JsonScanner::new(LIMITS).scan(text)
    }

    fn bytewise(text: &[u8]) -> Scan {
        let mut s = JsonScanner::new(LIMITS);
        for n in 1..=text.len() {
            match s.scan(&text[..n]) {
                Scan::Incomplete => {}
                done => return done,
            }
        }
        Scan::Incomplete
    }

    #[track_caller]
    fn check(text: &[u8], want: Scan) {
        assert_eq!(
            whole(text),
            want,
            "whole {:?}",
            String::from_utf8_lossy(text)
        );
        assert_eq!(
            bytewise(text),
            want,
            "bytewise {:?}",
            String::from_utf8_lossy(text)
        );
    }

    fn bad(offset: usize, reason: &'static str) -> Scan {
        invalid(offset, reason)
    }

    #[test]
    fn complete_values() {
        check(b"{}", Scan::Complete(2));
        check(b"[]  ", Scan::Complete(2));
        check(
            br#"{"a":[1,2.5e-3,true,null,"x\"\u00e9"],"b":{}}x"#,
            Scan::Complete(45),
        );
        check(b"\"\xc3\xa9\xf0\x9f\x98\x80\"", Scan::Complete(8));
        check(b"false,", Scan::Complete(5));
        check(b"-0.5e+7 ", Scan::Complete(7));
        check(b"12x", Scan::Complete(2));
    }

    #[test]
    fn top_level_number_waits_for_a_delimiter() {
        let mut s = JsonScanner::new(LIMITS);
        assert_eq!(s.scan(b"4"), Scan::Incomplete);
        assert_eq!(s.end_at_eof(), Some(1));
        assert_eq!(s.scan(b"42"), Scan::Incomplete);
        assert_eq!(s.scan(b"42\n"), Scan::Complete(2));
        let mut s = JsonScanner::new(LIMITS);
        assert_eq!(s.scan(b"1e"), Scan::Incomplete);
        assert_eq!(s.end_at_eof(), None);
    }

    #[test]
    fn invalid_at_the_first_bad_byte() {
        check(b"}", bad(0, "closing bracket without an open one"));
        check(b"[1,]", bad(3, "expected a JSON value"));
        check(b"[1}", bad(2, "closing bracket does not match"));
        check(b"{\"a\" 1}", bad(5, "expected ':' after an object key"));
        check(b"[tru]", bad(4, "invalid literal"));
        check(b"[01]", bad(2, "leading zero in number"));
        check(b"[1.]", bad(3, "expected a digit after '.'"));
        check(b"\"a\tb\"", bad(2, "control character in string"));
        check(b"\"\\x\"", bad(2, "invalid escape in string"));
        check(b"\"\\u12g4\"", bad(5, "invalid \\u escape in string"));
        check(b"\"\xed\xa0\x80\"", invalid_utf8(1, 2));
        check(b"\"\xe2\x82(\"", invalid_utf8(1, 3));
        check(b"\"\xff\"", invalid_utf8(1, 1));
    }

    #[test]
    fn depth_limit_is_a_counter() {
        let limits = JsonLimits {
            max_depth: 3,
            ..LIMITS
        };
        assert_eq!(JsonScanner::new(limits).scan(b"[[[]]]"), Scan::Complete(6));
        let deep = JsonScanner::new(limits).scan(b"[[[[]]]]");
        assert_eq!(
            deep,
            Scan::Invalid(Invalid {
                offset: 3,
                problem: Problem::TooDeep { limit: 3 }
            })
        );
        let million = vec![b'['; 1_000_000];
        assert!(matches!(
            whole(&million),
            Scan::Invalid(Invalid { offset: 128, .. })
        ));
    }

    #[test]
    fn size_limit_counts_the_text_only() {
        let limits = JsonLimits {
            max_size: 3,
            ..LIMITS
        };
        assert_eq!(JsonScanner::new(limits).scan(b"123 "), Scan::Complete(3));
        assert_eq!(JsonScanner::new(limits).scan(b"[1]"), Scan::Complete(3));
        let over = Invalid {
            offset: 3,
            problem: Problem::TooLarge { limit: 3, seen: 4 },
        };
        assert_eq!(
            JsonScanner::new(limits).scan(b"1234"),
            Scan::Invalid(over.clone())
        );
        assert_eq!(
            JsonScanner::new(limits).scan(b"[12]"),
            Scan::Invalid(over.clone())
        );
        let mut s = JsonScanner::new(limits);
        assert_eq!(s.scan(b"[  "), Scan::Incomplete);
        assert_eq!(s.scan(b"[   "), Scan::Invalid(over));
    }

    #[test]
    fn objects_only_refuses_scalars() {
        let limits = JsonLimits {
            objects_only: true,
            ..LIMITS
        };
        let s = JsonScanner::new(limits).scan(b"1 ");
        assert_eq!(s, bad(0, "top-level value is not an array or object"));
        assert_eq!(JsonScanner::new(limits).scan(b"[1]"), Scan::Complete(3));
    }
}
