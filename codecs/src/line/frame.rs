//! The frames of the line codecs: [`Line`] (bytes) and [`Utf8Line`] (text),
//! each the line and the end of line that ended it, in one buffer.

use std::fmt;

use bytes::{Bytes, BytesMut};

/// One decoded line and the end of line that ended it.
///
/// A `Line` is one [`Bytes`] holding the line followed by its end of line,
/// and where the end of line starts. For [`LineCodec`](crate::LineCodec) that `Bytes` is split
/// off the read buffer (no copy), and handing a line out costs one reference
/// count, not two.
///
/// # Examples
///
/// ```
/// use anyframe_codecs::Line;
///
/// let line = Line::new("hello", "\r\n");
/// assert_eq!(line.line(), b"hello");
/// assert_eq!(line.eol(), b"\r\n");
/// assert_eq!(line.as_bytes(), b"hello\r\n");
/// assert_eq!(line.into_line(), "hello");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Line {
    /// The line followed by its end of line.
    pub(super) frame: Bytes,
    /// Where the end of line starts in `frame`.
    pub(super) line_len: usize,
}

impl Line {
    /// A line from its two parts, copied into one buffer (O(1) when `eol`
    /// is empty).
    pub fn new(line: impl Into<Bytes>, eol: impl AsRef<[u8]>) -> Line {
        let line = line.into();
        let eol = eol.as_ref();
        let line_len = line.len();
        if eol.is_empty() {
            return Line {
                frame: line,
                line_len,
            };
        }
        let mut frame = BytesMut::with_capacity(line_len + eol.len());
        frame.extend_from_slice(&line);
        frame.extend_from_slice(eol);
        Line {
            frame: frame.freeze(),
            line_len,
        }
    }

    /// A line from a frame holding the line and then its end of line, which
    /// starts at `line_len`. O(1).
    ///
    /// # Panics
    ///
    /// If `line_len` is past the end of `frame`.
    pub fn from_frame(frame: Bytes, line_len: usize) -> Line {
        assert!(
            line_len <= frame.len(),
            "line_len {line_len} past the end of a {}-byte frame",
            frame.len()
        );
        Line { frame, line_len }
    }

    /// The line, without its end of line.
    pub fn line(&self) -> &[u8] {
        &self.frame[..self.line_len]
    }

    /// The end of line that ended it (`"\n"` or `"\r\n"` for the default;
    /// the literal; or the text the EOL regex matched).
    pub fn eol(&self) -> &[u8] {
        &self.frame[self.line_len..]
    }

    /// The line followed by its end of line, as read.
    pub fn as_bytes(&self) -> &[u8] {
        &self.frame
    }

    /// The line as `Bytes` sharing this line's memory (one reference count).
    pub fn line_bytes(&self) -> Bytes {
        self.frame.slice(..self.line_len)
    }

    /// The line, dropping the end of line. O(1), no reference count.
    pub fn into_line(mut self) -> Bytes {
        self.frame.truncate(self.line_len);
        self.frame
    }

    /// The line and its end of line, as read, in one `Bytes`.
    pub fn into_frame(self) -> Bytes {
        self.frame
    }

    /// `(line, eol)`, sharing this line's memory.
    pub fn into_parts(mut self) -> (Bytes, Bytes) {
        let eol = self.frame.split_off(self.line_len);
        (self.frame, eol)
    }
}

impl fmt::Debug for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `Bytes`'s Debug: a byte string with escapes.
        f.debug_struct("Line")
            .field("line", &self.frame.slice(..self.line_len))
            .field("eol", &self.frame.slice(self.line_len..))
            .finish()
    }
}

/// One decoded UTF-8 line and its end of line, in a single `String`.
///
/// # Examples
///
/// ```
/// use anyframe_codecs::Utf8Line;
///
/// let line = Utf8Line::new("grüße", "\n");
/// assert_eq!(line.line(), "grüße");
/// assert_eq!(line.eol(), "\n");
/// assert_eq!(line.into_line(), "grüße");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Utf8Line {
    /// The line followed by its end of line: one allocation for both.
    pub(super) text: String,
    /// Where the end of line starts in `text` (always a char boundary).
    pub(super) line_len: usize,
}

impl Utf8Line {
    /// A line from its two parts (one allocation when `line` has no spare
    /// capacity for `eol`).
    pub fn new(line: impl Into<String>, eol: &str) -> Utf8Line {
        let mut text = line.into();
        let line_len = text.len();
        text.push_str(eol);
        Utf8Line { text, line_len }
    }

    /// The line, without its end of line.
    pub fn line(&self) -> &str {
        self.text.get(..self.line_len).unwrap_or_default()
    }

    /// The end of line that ended it.
    pub fn eol(&self) -> &str {
        self.text.get(self.line_len..).unwrap_or_default()
    }

    /// The line as a `String`, dropping the end of line (no allocation).
    pub fn into_line(mut self) -> String {
        self.text.truncate(self.line_len);
        self.text
    }
}
