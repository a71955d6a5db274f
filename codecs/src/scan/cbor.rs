//! Where does the CBOR data item at the front of the buffer end?
//!
//! [`CborScanner`] reads item heads (RFC 8949 §3) and skips string bodies
//! without looking at them. Nesting is a stack of [`Frame`]s, each holding
//! how many items its container still expects, so nothing recurses and a
//! 1,000,000-deep `0x81 0x81 …` stops at the depth limit.
//!
//! ```text
//!  Initial ──(initial byte, AI < 24)──────────────► head done
//!     │  └──(AI 24..=27)──► Argument{need} ─(bytes)─► head done
//!     │  └──(AI 31)──► indefinite item pushed, or break pops one
//!  head done: string ⇒ Body{left} ─(left bytes skipped)─► item done
//!             array/map/tag ⇒ Frame pushed; scalar ⇒ item done
//!  item done: count down the innermost frame, pop finished frames;
//!             stack empty ⇒ Complete(end)
//! ```
//!
//! It checks well-formedness (RFC 8949 Appendix C), not validity: reserved
//! additional information 28–30, an indefinite length on a type that has
//! none, a break outside an indefinite item or between a map key and its
//! value, a wrong chunk inside an indefinite string and a two-byte simple
//! value below 32 are reported at the offending byte. UTF-8 inside text
//! strings is left to the deserializer.
//!
//! Declared lengths are checked against the size limit as soon as the head
//! is read: a string whose body would end past the limit, or a container
//! whose items (one byte each at least) would, fails before any of its body
//! is awaited. Nothing is reserved on a declared length.

use super::{Invalid, Problem, Scan};

/// The limits a scan enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CborLimits {
    /// Largest item in bytes.
    pub(crate) max_size: usize,
    /// Most arrays, maps and tags open at once.
    pub(crate) max_depth: usize,
}

/// One open container on the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    /// A definite-length array or map, or a tag: items still to come (a map
    /// counts keys and values).
    Items(u64),
    /// An indefinite-length array.
    IndefArray,
    /// An indefinite-length map; `key_pending` after a key without its value.
    IndefMap { key_pending: bool },
    /// An indefinite-length byte (2) or text (3) string: definite chunks of
    /// the same major type until a break.
    IndefString { major: u8 },
}

/// Where inside an item the scan is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The next byte is an item's initial byte.
    Initial,
    /// Reading the big-endian argument of the head whose initial byte
    /// `initial` sits at offset `at`; `left` bytes still to come.
    Argument {
        initial: u8,
        at: usize,
        left: u8,
        value: u64,
    },
    /// Skipping a string body; `left` bytes still to come.
    Body { left: u64 },
}

/// A resumable scanner for one CBOR data item at a time.
///
/// Feed it the buffer starting at the item's first byte as often as bytes
/// arrive; it looks only at bytes it has not seen, and string bodies not at
/// all. After `Complete` or `Invalid` it is back at the start.
#[derive(Debug, Clone)]
pub(crate) struct CborScanner {
    step: Step,
    /// Bytes of the current item already scanned or skipped.
    pos: usize,
    /// Open frames, innermost last.
    frames: Vec<Frame>,
    /// The fewest bytes the frames under the innermost one still need once
    /// the items they are in the middle of end ([`owes`]): a declared length
    /// is checked against the limit together with them.
    owed_below: u64,
    limits: CborLimits,
}

/// The fewest bytes `frame` still needs after the item it is in the middle
/// of: one per item still to come, a break for an indefinite-length one
/// (and a value before it, after a map key).
#[inline(always)]
fn owes(frame: &Frame) -> u64 {
    match *frame {
        Frame::Items(n) => n - 1,
        Frame::IndefArray | Frame::IndefString { .. } | Frame::IndefMap { key_pending: true } => 1,
        Frame::IndefMap { key_pending: false } => 2,
    }
}

/// What a finished head means for the scan.
enum Next {
    /// Go on in this step.
    Step(Step),
    /// The top-level item ends before this offset.
    Complete(usize),
}

impl CborScanner {
    pub(crate) fn new(limits: CborLimits) -> CborScanner {
        CborScanner {
            step: Step::Initial,
            pos: 0,
            frames: Vec::new(),
            owed_below: 0,
            limits,
        }
    }

    pub(crate) fn limits(&self) -> CborLimits {
        self.limits
    }

    /// True before the first byte of an item has been looked at.
    pub(crate) fn is_at_start(&self) -> bool {
        self.pos == 0
    }

    /// Forgets the current item.
    pub(crate) fn reset(&mut self) {
        self.step = Step::Initial;
        self.pos = 0;
        self.frames.clear();
        self.owed_below = 0;
    }

    /// The fewest bytes the open frames still need once the item being
    /// scanned (inside `top`) ends.
    #[inline(always)]
    fn owed(&self, top: &Option<Frame>) -> u64 {
        self.owed_below + top.as_ref().map_or(0, owes)
    }

    /// `top` becomes a frame under `frame`, the new innermost one.
    #[inline(always)]
    fn open(&mut self, top: &mut Option<Frame>, frame: Frame) {
        if let Some(under) = top.replace(frame) {
            self.owed_below += owes(&under);
            self.frames.push(under);
        }
    }

    /// The innermost frame closed: the one under it is innermost again.
    #[inline(always)]
    fn close(&mut self, top: &mut Option<Frame>) {
        *top = self.frames.pop();
        if let Some(frame) = top {
            self.owed_below -= owes(frame);
        }
    }

    /// Scans the bytes of `item` not seen before. `item` must start at the
    /// same byte on every call until the scan completes or fails.
    pub(crate) fn scan(&mut self, item: &[u8]) -> Scan {
        if self.pos > item.len() {
            // The caller took bytes this scan had seen: start over.
            self.reset();
        }
        // The innermost frame lives in a local while scanning: it is read
        // and counted down for almost every byte.
        let mut top = self.frames.pop();
        let result = self.run(item, &mut top);
        if result == Scan::Incomplete {
            self.frames.extend(top);
        } else {
            self.reset();
        }
        result
    }

    fn run(&mut self, t: &[u8], top: &mut Option<Frame>) -> Scan {
        let limit = self.limits.max_size;
        // Every check below keeps the scan inside the limit, so bytes past
        // it are never looked at.
        let end = t.len().min(limit);
        let mut i = self.pos;
        let mut step = self.step;
        loop {
            let next = match step {
                Step::Initial => {
                    if i >= end {
                        if i >= limit && !t.is_empty() {
                            // Another item is needed and it cannot fit.
                            return too_large(i, limit, i as u64 + 1);
                        }
                        break;
                    }
                    let initial = t[i];
                    // Fast lane: a whole leaf item (integer, float, simple
                    // value, short string) already at hand, outside an
                    // indefinite string: skip it in one step.
                    let leaf = usize::from(LEAF_LEN[usize::from(initial)]);
                    // (Not when the leaf and what the open frames still
                    // need cross the limit: the head's own check says so,
                    // however the bytes arrived.)
                    if leaf != 0
                        && leaf <= end - i
                        && !matches!(top, Some(Frame::IndefString { .. }))
                        && ((i + leaf) as u64).saturating_add(self.owed(top)) <= limit as u64
                    {
                        i += leaf;
                        match self.finish(top, i) {
                            Next::Complete(n) => return Scan::Complete(n),
                            Next::Step(s) => step = s,
                        }
                        continue;
                    }
                    let at = i;
                    i += 1;
                    let ai = initial & 0x1f;
                    if let Some(Frame::IndefString { major }) = *top
                        && initial != BREAK
                        && (initial >> 5 != major || ai == 31)
                    {
                        return invalid(at, "bad chunk in indefinite-length string");
                    }
                    match ai {
                        0..=23 => self.head(top, initial, at, u64::from(ai), i),
                        24..=27 => {
                            let need = 1usize << (ai - 24);
                            if i + need <= end {
                                // The whole argument is at hand.
                                let arg = t[i..i + need]
                                    .iter()
                                    .fold(0, |v, &b| (v << 8) | u64::from(b));
                                i += need;
                                self.head(top, initial, at, arg, i)
                            } else if i + need > limit {
                                return too_large(at, limit, (i + need) as u64);
                            } else {
                                Ok(Next::Step(Step::Argument {
                                    initial,
                                    at,
                                    left: need as u8,
                                    value: 0,
                                }))
                            }
                        }
                        28..=30 => return invalid(at, "reserved additional information"),
                        _ => self.indefinite(top, initial, at, i),
                    }
                }
                Step::Argument {
                    initial,
                    at,
                    left,
                    value,
                } => {
                    if i >= end {
                        break;
                    }
                    let take = usize::from(left).min(end - i);
                    let value = t[i..i + take]
                        .iter()
                        .fold(value, |v, &b| (v << 8) | u64::from(b));
                    i += take;
                    // `take <= left`, a u8.
                    let left = left - take as u8;
                    if left > 0 {
                        step = Step::Argument {
                            initial,
                            at,
                            left,
                            value,
                        };
                        break;
                    }
                    self.head(top, initial, at, value, i)
                }
                Step::Body { left } => {
                    let avail = (end - i) as u64;
                    if avail < left {
                        i = end;
                        step = Step::Body { left: left - avail };
                        break;
                    }
                    // `left <= avail`, so it fits in usize.
                    i += left as usize;
                    Ok(self.finish(top, i))
                }
            };
            match next {
                // A string body already at hand: skip it right away.
                Ok(Next::Step(Step::Body { left })) if left <= (end - i) as u64 => {
                    i += left as usize;
                    match self.finish(top, i) {
                        Next::Step(s) => step = s,
                        Next::Complete(n) => return Scan::Complete(n),
                    }
                }
                Ok(Next::Step(s)) => step = s,
                Ok(Next::Complete(n)) => return Scan::Complete(n),
                Err(e) => return Scan::Invalid(e),
            }
        }
        self.pos = i;
        self.step = step;
        Scan::Incomplete
    }

    /// A complete head: initial byte at `at`, argument `arg`, head ends at
    /// `end`. Pushes, skips or finishes as the major type says.
    #[inline(always)]
    fn head(
        &mut self,
        top: &mut Option<Frame>,
        initial: u8,
        at: usize,
        arg: u64,
        end: usize,
    ) -> Result<Next, Invalid> {
        let limit = self.limits.max_size;
        match initial >> 5 {
            // Unsigned and negative integers.
            0 | 1 => Ok(self.finish(top, end)),
            // Byte and text strings.
            2 | 3 => {
                if arg == 0 {
                    return Ok(self.finish(top, end));
                }
                let stop = (end as u64)
                    .saturating_add(arg)
                    .saturating_add(self.owed(top));
                if stop > limit as u64 {
                    return Err(too_large_at(at, limit, stop));
                }
                Ok(Next::Step(Step::Body { left: arg }))
            }
            // Arrays and maps: every item is one byte at least.
            major @ (4 | 5) => {
                let items = if major == 5 {
                    arg.saturating_mul(2)
                } else {
                    arg
                };
                if items == 0 {
                    // Empty, but a level of nesting all the same, as an
                    // empty indefinite-length one is.
                    self.check_depth(top, at)?;
                    return Ok(self.finish(top, end));
                }
                let stop = (end as u64)
                    .saturating_add(items)
                    .saturating_add(self.owed(top));
                if stop > limit as u64 {
                    return Err(too_large_at(at, limit, stop));
                }
                self.push(top, Frame::Items(items), at)
            }
            // A tag: exactly one item follows, one level deeper.
            6 => self.push(top, Frame::Items(1), at),
            // Simple values and floats.
            _ => {
                if initial & 0x1f == 24 && arg < 32 {
                    return Err(Invalid::syntax(at, "two-byte simple value below 32"));
                }
                Ok(self.finish(top, end))
            }
        }
    }

    /// An initial byte with additional information 31 at `at`.
    fn indefinite(
        &mut self,
        top: &mut Option<Frame>,
        initial: u8,
        at: usize,
        end: usize,
    ) -> Result<Next, Invalid> {
        match initial >> 5 {
            major @ (2 | 3) => {
                // Cannot nest (a chunk is definite), so not a level of depth.
                self.open(top, Frame::IndefString { major });
                Ok(Next::Step(Step::Initial))
            }
            4 => self.push(top, Frame::IndefArray, at),
            5 => self.push(top, Frame::IndefMap { key_pending: false }, at),
            7 => match *top {
                Some(Frame::IndefArray | Frame::IndefString { .. })
                | Some(Frame::IndefMap { key_pending: false }) => {
                    self.close(top);
                    Ok(self.finish(top, end))
                }
                Some(Frame::IndefMap { key_pending: true }) => {
                    Err(Invalid::syntax(at, "break after a map key without a value"))
                }
                Some(Frame::Items(_)) => {
                    Err(Invalid::syntax(at, "break inside a definite-length item"))
                }
                None => Err(Invalid::syntax(
                    at,
                    "break outside an indefinite-length item",
                )),
            },
            _ => Err(Invalid::syntax(
                at,
                "indefinite length not allowed for this major type",
            )),
        }
    }

    /// Opens a container (or tag) whose head starts at `at`.
    #[inline(always)]
    fn push(&mut self, top: &mut Option<Frame>, frame: Frame, at: usize) -> Result<Next, Invalid> {
        self.check_depth(top, at)?;
        self.open(top, frame);
        Ok(Next::Step(Step::Initial))
    }

    /// Whether one more level of nesting (a container or tag whose head
    /// starts at `at`) fits under the depth limit.
    #[inline(always)]
    fn check_depth(&self, top: &Option<Frame>, at: usize) -> Result<(), Invalid> {
        let limit = self.limits.max_depth;
        // An indefinite string never holds a container, so every frame here
        // is a level of nesting.
        let depth = self.frames.len() + usize::from(top.is_some());
        if depth >= limit {
            return Err(Invalid {
                offset: at,
                problem: Problem::TooDeep { limit },
            });
        }
        Ok(())
    }

    /// An item ended at `end`: counts it against the open frames, closing
    /// those it completes, up to the top-level item.
    #[inline(always)]
    fn finish(&mut self, top: &mut Option<Frame>, end: usize) -> Next {
        loop {
            match top {
                None => return Next::Complete(end),
                Some(Frame::Items(n)) => {
                    *n -= 1;
                    if *n > 0 {
                        return Next::Step(Step::Initial);
                    }
                    self.close(top);
                }
                Some(Frame::IndefMap { key_pending }) => {
                    *key_pending = !*key_pending;
                    return Next::Step(Step::Initial);
                }
                Some(Frame::IndefArray | Frame::IndefString { .. }) => {
                    return Next::Step(Step::Initial);
                }
            }
        }
    }
}

/// For each initial byte of a leaf item whose size the byte alone tells:
/// that size (head and body); 0 for everything else. Integers with any
/// argument size, strings shorter than 24 bytes, simple values below 24,
/// floats. (`0xf8` is left out: its argument must be checked.)
static LEAF_LEN: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let (major, ai) = (b >> 5, (b & 0x1f) as u8);
        t[b] = match (major, ai) {
            (0 | 1, 0..=23) => 1,
            (0 | 1, 24..=27) => 1 + (1 << (ai - 24)),
            (2 | 3, 0..=23) => 1 + ai,
            (7, 0..=23) => 1,
            (7, 25..=27) => 1 + (1 << (ai - 24)),
            _ => 0,
        };
        b += 1;
    }
    t
};

/// The break byte: major type 7, additional information 31.
const BREAK: u8 = 0xff;

fn invalid(offset: usize, reason: &'static str) -> Scan {
    Scan::Invalid(Invalid::syntax(offset, reason))
}

fn too_large_at(offset: usize, limit: usize, seen: u64) -> Invalid {
    Invalid {
        offset,
        problem: Problem::TooLarge { limit, seen },
    }
}

fn too_large(offset: usize, limit: usize, seen: u64) -> Scan {
    Scan::Invalid(too_large_at(offset, limit, seen))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: CborLimits = CborLimits {
        max_size: 1 << 20,
        max_depth: 128,
    };

    fn scan_split(bytes: &[u8], limits: CborLimits) -> Scan {
        let whole = CborScanner::new(limits).scan(bytes);
        let mut s = CborScanner::new(limits);
        let mut bytewise = Scan::Incomplete;
        for n in 1..=bytes.len() {
            bytewise = s.scan(&bytes[..n]);
            if bytewise != Scan::Incomplete {
                break;
            }
        }
        assert_eq!(whole, bytewise, "{bytes:02x?}");
        whole
    }

    fn scan(bytes: &[u8]) -> Scan {
        scan_split(bytes, LIMITS)
    }

    fn bad(offset: usize, reason: &'static str) -> Scan {
        Scan::Invalid(Invalid::syntax(offset, reason))
    }

    #[test]
    fn complete_items() {
        assert_eq!(scan(&[0x00, 0x01]), Scan::Complete(1));
        assert_eq!(scan(&[0x1b, 1, 2, 3, 4, 5, 6, 7, 8]), Scan::Complete(9));
        assert_eq!(scan(&[0x43, b'a', b'b', b'c', 0xff]), Scan::Complete(4));
        assert_eq!(scan(&[0x82, 0x01, 0x82, 0x02, 0x03]), Scan::Complete(5));
        assert_eq!(scan(&[0xa1, 0x61, b'a', 0xf6]), Scan::Complete(4));
        assert_eq!(scan(&[0x9f, 0x01, 0x9f, 0xff, 0xff]), Scan::Complete(5));
        assert_eq!(scan(&[0xbf, 0x01, 0x02, 0xff]), Scan::Complete(4));
        assert_eq!(scan(&[0x5f, 0x41, 0x00, 0x40, 0xff]), Scan::Complete(5));
        assert_eq!(scan(&[0xc1, 0xc2, 0x40]), Scan::Complete(3));
        assert_eq!(scan(&[0xf8, 0x20]), Scan::Complete(2));
        assert_eq!(scan(&[0xfb, 0, 0, 0, 0, 0, 0, 0, 0]), Scan::Complete(9));
    }

    #[test]
    fn malformed_at_the_offending_byte() {
        assert_eq!(scan(&[0x1c]), bad(0, "reserved additional information"));
        assert_eq!(
            scan(&[0x81, 0xff]),
            bad(1, "break inside a definite-length item")
        );
        assert_eq!(
            scan(&[0xff]),
            bad(0, "break outside an indefinite-length item")
        );
        assert_eq!(
            scan(&[0xbf, 0x01, 0xff]),
            bad(2, "break after a map key without a value")
        );
        assert_eq!(
            scan(&[0x5f, 0x61, 0x00]),
            bad(1, "bad chunk in indefinite-length string")
        );
        assert_eq!(
            scan(&[0x5f, 0x5f]),
            bad(1, "bad chunk in indefinite-length string")
        );
        assert_eq!(
            scan(&[0xf8, 0x1f]),
            bad(0, "two-byte simple value below 32")
        );
        let no_indef = "indefinite length not allowed for this major type";
        assert_eq!(scan(&[0x1f]), bad(0, no_indef));
        assert_eq!(scan(&[0xdf]), bad(0, no_indef));
    }

    #[test]
    fn truncated_is_incomplete() {
        for t in [
            &[0x18][..],
            &[0x81],
            &[0x9f, 0x01],
            &[0x5a, 0, 0, 0, 2, 0],
            &[0xd8],
        ] {
            assert_eq!(scan(t), Scan::Incomplete, "{t:02x?}");
        }
    }

    #[test]
    fn declared_lengths_fail_at_the_head() {
        let limits = CborLimits {
            max_size: 100,
            max_depth: 128,
        };
        let huge = [0x5b, 0x80, 0, 0, 0, 0, 0, 0, 0];
        let want = Scan::Invalid(Invalid {
            offset: 0,
            problem: Problem::TooLarge {
                limit: 100,
                seen: 9 + (1 << 63),
            },
        });
        assert_eq!(scan_split(&huge, limits), want);
        let array = [0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            scan_split(&array, limits),
            Scan::Invalid(Invalid { offset: 0, .. })
        ));
        // 100 bytes exactly: fine; 101: refused at the head.
        let mut ok = vec![0x58, 98];
        ok.resize(100, 0);
        assert_eq!(scan_split(&ok, limits), Scan::Complete(100));
        assert!(matches!(scan_split(&[0x58, 99], limits), Scan::Invalid(_)));
        // A head cut by the limit, and an item needing a byte past it.
        let limits = CborLimits {
            max_size: 2,
            max_depth: 128,
        };
        assert!(matches!(scan_split(&[0x19], limits), Scan::Invalid(_)));
        assert!(matches!(
            scan_split(&[0x9f, 0x01], limits),
            Scan::Invalid(_)
        ));
    }

    #[test]
    fn depth_is_a_stack_not_recursion() {
        let deep = vec![0x81; 1_000_000];
        let s = CborScanner::new(LIMITS).scan(&deep);
        assert_eq!(
            s,
            Scan::Invalid(Invalid {
                offset: 128,
                problem: Problem::TooDeep { limit: 128 }
            })
        );
        let tags = vec![0xc1; 1_000_000];
        assert!(matches!(
            CborScanner::new(LIMITS).scan(&tags),
            Scan::Invalid(_)
        ));
        let limits = CborLimits {
            max_size: 1 << 20,
            max_depth: 2,
        };
        assert_eq!(scan_split(&[0x81, 0x81, 0x00], limits), Scan::Complete(3));
        assert!(matches!(
            scan_split(&[0x81, 0x81, 0x81, 0x00], limits),
            Scan::Invalid(_)
        ));
    }
}
