//! Private, resumable end-of-value scanners for the self-delimiting formats.
//!
//! A scanner answers one question about the bytes at the front of a read
//! buffer: does one complete JSON text (or CBOR data item) start here, and if
//! so, where does it end? It keeps its state between calls and resumes where
//! it stopped, so every byte is looked at once however the input is split;
//! the codecs then split the finished value off and hand it to serde exactly
//! once. Nothing here recurses: nesting is a counter (JSON) or a stack of
//! remaining counts (CBOR), checked against a depth limit.
//!
//! The scanners validate enough to tell *incomplete* from *invalid* as soon as
//! the offending byte arrives, so a broken peer is reported at once instead of
//! filling the buffer up to the size limit.

#[cfg(feature = "cbor")]
pub(crate) mod cbor;
#[cfg(feature = "json")]
pub(crate) mod json;

use crate::error::Error;

/// What a scanner knows about the value at the front of the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scan {
    /// Every byte so far is a valid prefix; more are needed.
    Incomplete,
    /// One complete value fills the first `n` bytes.
    Complete(usize),
    /// The bytes cannot start a valid value, whatever follows.
    Invalid(Invalid),
}

/// Why and where a scan failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invalid {
    /// Offset of the offending byte from the start of the value.
    pub(crate) offset: usize,
    /// What was wrong.
    pub(crate) problem: Problem,
}

/// The kinds of scan failure, each mapped to an [`Error`] by [`Invalid::into_error`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Problem {
    /// A byte that the grammar does not allow here.
    Syntax(&'static str),
    /// A malformed UTF-8 sequence that began at `start` (JSON strings).
    #[cfg_attr(not(feature = "json"), allow(dead_code))]
    Utf8 {
        /// Offset of the sequence's first byte.
        start: usize,
    },
    /// The value is, or is declared to be, larger than `limit` bytes;
    /// `seen` is how large it was known to be.
    TooLarge {
        /// The configured size limit.
        limit: usize,
        /// Bytes seen, or the end offset a declared length implies.
        seen: u64,
    },
    /// The value nests deeper than `limit`.
    TooDeep {
        /// The configured depth limit.
        limit: usize,
    },
}

impl Invalid {
    pub(crate) fn syntax(offset: usize, reason: &'static str) -> Invalid {
        Invalid {
            offset,
            problem: Problem::Syntax(reason),
        }
    }

    /// The same failure, for a value that starts `by` bytes into the
    /// buffer: offsets count from the start of the buffer instead.
    #[cfg_attr(not(feature = "json"), allow(dead_code))]
    pub(crate) fn shifted(mut self, by: usize) -> Invalid {
        self.offset += by;
        if let Problem::Utf8 { start } = &mut self.problem {
            *start += by;
        }
        self
    }

    /// Turns the scan failure into the crate's error. `value` is the buffer
    /// starting at the value, used for the offending bytes and, for UTF-8, to
    /// recover the exact [`std::str::Utf8Error`].
    pub(crate) fn into_error(self, codec: &'static str, value: &[u8]) -> Error {
        let offset = self.offset;
        let here = value.get(offset..).unwrap_or_default();
        match self.problem {
            Problem::Syntax(reason) => Error::bad_message(codec, reason),
            Problem::Utf8 { start } => {
                let end = offset.saturating_add(1).min(value.len());
                let seq = value.get(start..end).unwrap_or_default();
                match std::str::from_utf8(seq) {
                    Err(e) => Error::utf8(codec, offset, e),
                    // Cannot happen (the scanner saw a bad sequence), but an
                    // error without the std detail is still the right answer.
                    Ok(_) => Error::bad_message(codec, "invalid UTF-8"),
                }
            }
            Problem::TooLarge { limit, seen } => {
                Error::limit_bad_message(codec, "value larger than the size limit", limit, seen)
            }
            Problem::TooDeep { limit } => Error::limit_bad_message(
                codec,
                "value nested deeper than the depth limit",
                limit,
                (limit as u64).saturating_add(1),
            ),
        }
        .at(offset)
        .with_bytes(here)
    }
}
