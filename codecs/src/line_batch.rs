//! Lines in batches: every complete line buffered, split off as one frame.
//!
//! [`LineCodec`] hands out one [`Line`] per line: one split of the read
//! buffer, so one reference count taken and later dropped, per line. For
//! short lines that is about half of the decoding cost. [`LineBatchCodec`]
//! frames the same lines the same way (it *is* a `LineCodec` underneath) but
//! splits all the complete lines it finds off the buffer at once, as a
//! [`LineBatch`]: one `Bytes` and the offsets where each line and its end of
//! line end. Lines are borrowed from the batch as [`LineRef`]s, or taken as
//! owned [`Line`]s sharing its memory when a caller wants to keep one.

use std::fmt;
use std::iter::FusedIterator;

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::Error;
use crate::line::eol::{Eol, Scan, scan_default};
use crate::line::{Line, LineCodec};

/// The default cap on lines per [`LineBatch`]: 1024.
///
/// Large enough that the per-batch work (one split, one offset vector) is
/// spread thin, small enough that a batch of empty lines keeps its offsets
/// within 16 KiB.
pub const DEFAULT_BATCH_LINES: usize = 1024;

/// A decoder and encoder for lines, decoding every complete line buffered
/// (up to a cap) as one [`LineBatch`].
///
/// The framing is [`LineCodec`]'s, whichever way it is configured (end of
/// line, `max_length`, overflow policy): the lines of the batches, in order,
/// are exactly the lines `LineCodec` would decode from the same input split
/// the same way, and its errors come at the same places. A line that
/// overflows after other complete lines ends the batch; the next call
/// reports it. The lines of a batch therefore never hide an error.
///
/// A batch takes *every* complete line buffered: use it where the input is
/// lines for as long as it is read with this codec (a log, a line protocol's
/// bulk data). Where a line is followed by a frame of another kind (a
/// length, a binary chunk), read that line with [`LineCodec`], which takes
/// one line and nothing after it.
///
/// What a batch holds depends on how the input arrived (it is "what was
/// buffered"); the line sequence does not, except with a regex end of line
/// (see [`LineCodecBuilder::eol_regex`](crate::LineCodecBuilder::eol_regex)).
///
/// # Errors and state
///
/// As [`LineCodec`]: over-long lines (`ENOSPC`, fatal or discarded per the
/// policy), input ending inside a line (`EPIPE` from `decode_eof`, the
/// partial line left in the buffer), and the encoder's `EINVAL`.
///
/// # Examples
///
/// ```
/// use anyframe_codecs::{Line, LineBatchCodec};
/// use bytes::BytesMut;
/// use tokio_util::codec::Decoder;
///
/// let mut codec = LineBatchCodec::new();
/// let mut buf = BytesMut::from(&b"one\r\ntwo\nthr"[..]);
/// let batch = codec.decode(&mut buf)?.unwrap();
/// assert_eq!(batch.len(), 2);
/// let lines: Vec<&[u8]> = batch.iter().map(|l| l.line()).collect();
/// assert_eq!(lines, [&b"one"[..], b"two"]);
/// assert_eq!(batch.get(0).unwrap().eol(), b"\r\n");
/// // Owned lines share the batch's memory.
/// let first: Line = batch.to_line(0).unwrap();
/// assert_eq!(first, Line::new("one", "\r\n"));
/// // The partial line waits for its end of line.
/// assert!(codec.decode(&mut buf)?.is_none());
/// assert_eq!(&buf[..], b"thr");
/// # Ok::<(), anyframe_codecs::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct LineBatchCodec {
    lines: LineCodec,
    max_lines: usize,
    /// The last batch's length: the next offset vector's capacity.
    last_len: usize,
}

impl LineBatchCodec {
    /// Batches of `\r?\n` lines as [`LineCodec::new`] frames them, at most
    /// [`DEFAULT_BATCH_LINES`] per batch. For any other end of line, limit
    /// or overflow policy, build the [`LineCodec`] and convert it
    /// (`LineBatchCodec::from(codec)`).
    pub fn new() -> LineBatchCodec {
        LineBatchCodec::from(LineCodec::new())
    }

    /// Caps the lines per batch (at least one).
    ///
    /// # Panics
    ///
    /// If `max_lines` is 0.
    #[must_use]
    pub fn with_max_lines(mut self, max_lines: usize) -> LineBatchCodec {
        assert!(max_lines > 0, "a batch holds at least one line");
        self.max_lines = max_lines;
        self
    }

    /// The cap on lines per batch.
    pub fn max_lines(&self) -> usize {
        self.max_lines
    }

    /// The line codec that frames the lines.
    pub fn line_codec(&self) -> &LineCodec {
        &self.lines
    }

    /// The line codec, with its state (a scan position, or the discarding of
    /// an over-long line), to go on decoding line by line.
    pub fn into_line_codec(self) -> LineCodec {
        self.lines
    }

    fn decode_with(&mut self, buf: &mut BytesMut, eof: bool) -> Result<Option<LineBatch>, Error> {
        let mut bounds = Vec::new();
        // As many lines as last time: usually one allocation per batch.
        let expect = self.last_len.max(16).min(self.max_lines);
        let len = self.scan_lines(buf, eof, expect, &mut bounds)?;
        if bounds.is_empty() {
            return Ok(None);
        }
        self.last_len = bounds.len();
        Ok(Some(LineBatch {
            data: buf.split_to(len).freeze(),
            bounds,
        }))
    }

    /// Finds up to `max_lines` complete lines at the front of `buf` without
    /// consuming them, appends each one's `(line_end, frame_end)` offsets to
    /// `bounds` and returns how many bytes they cover (0: none yet). Room for
    /// `expect` lines is reserved once a first line is found, so a call that
    /// finds none allocates nothing.
    ///
    /// The lines and errors come in the order `LineCodec::decode` would
    /// give them: the first line goes through the line codec itself (every
    /// state, the discarding of an over-long line, its errors); the rest
    /// through its end-of-line scanner. A line that would overflow later in
    /// the buffer ends the batch instead, so the next call finds it at the
    /// front and reports it after the lines before it.
    #[inline(always)]
    fn scan_lines(
        &mut self,
        buf: &mut BytesMut,
        eof: bool,
        expect: usize,
        bounds: &mut Vec<(usize, usize)>,
    ) -> Result<usize, Error> {
        let Some((line_len, eol_len)) = self.lines.next_line(buf, eof)? else {
            return Ok(0);
        };
        let mut off = line_len + eol_len;
        bounds.reserve(expect);
        bounds.push((line_len, off));
        if self.lines.is_single_use() {
            return Ok(off);
        }
        // The line codec now reads from the start of the next line.
        let max = self.lines.max_length();
        let eol = self.lines.eol_scanner();
        for _ in 1..self.max_lines {
            let rest = &buf[off..];
            let scan = match eol {
                Eol::Default => scan_default(rest, 0, max),
                eol => eol.scan(rest, 0, max, eof),
            };
            match scan {
                Scan::Found { line_len, eol_len } => {
                    bounds.push((off + line_len, off + line_len + eol_len));
                    off += line_len + eol_len;
                }
                // The partial line after the batch is left unscanned as far
                // as the codec knows: returned with a frame, the codec holds
                // nothing of the bytes left, so another reader may take them
                // (its next call scans this line again, once: linear).
                Scan::NeedMore { .. } => break,
                // Reported at the front by the next call, after these lines
                // (a rescan of at most `max_length` and an EOL, once, on the
                // way to an error).
                Scan::Overflow { .. } => break,
            }
        }
        Ok(off)
    }
}

impl Default for LineBatchCodec {
    fn default() -> LineBatchCodec {
        LineBatchCodec::new()
    }
}

/// Batches of the lines `codec` frames, at most [`DEFAULT_BATCH_LINES`]
/// each; `codec`'s state carries over.
impl From<LineCodec> for LineBatchCodec {
    fn from(codec: LineCodec) -> LineBatchCodec {
        LineBatchCodec {
            lines: codec,
            max_lines: DEFAULT_BATCH_LINES,
            last_len: 0,
        }
    }
}

impl Decoder for LineBatchCodec {
    type Item = LineBatch;
    type Error = Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<LineBatch>, Error> {
        self.decode_with(buf, false)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<LineBatch>, Error> {
        match self.decode_with(buf, true)? {
            Some(batch) => Ok(Some(batch)),
            None if buf.is_empty() => Ok(None),
            None => Err(Error::incomplete_at_eof("line", buf.len())),
        }
    }
}

/// Writes one line and the terminator, as [`LineCodec`]'s encoder.
///
/// # Errors
///
/// As [`LineCodec`]'s encoder: `EINVAL`, with nothing written, for a line
/// its decoder would not read back unchanged.
impl<T: AsRef<[u8]>> Encoder<T> for LineBatchCodec {
    type Error = Error;

    fn encode(&mut self, item: T, dst: &mut BytesMut) -> Result<(), Error> {
        self.lines.encode(item, dst)
    }
}

/// Complete lines split off the read buffer at once: one `Bytes` holding
/// each line followed by its end of line, as read, and where each ends.
///
/// Borrow lines with [`get`](LineBatch::get) and [`iter`](LineBatch::iter)
/// (no reference counting at all), take one as an owned [`Line`] with
/// [`to_line`](LineBatch::to_line), or all of them by iterating the batch by
/// value. [`as_bytes`](LineBatch::as_bytes) is the input the batch consumed,
/// byte for byte.
///
/// # Examples
///
/// ```
/// use anyframe_codecs::{Line, LineBatchCodec};
/// use bytes::BytesMut;
/// use tokio_util::codec::Decoder;
///
/// let mut buf = BytesMut::from(&b"a\nbb\r\n\n"[..]);
/// let batch = LineBatchCodec::new().decode(&mut buf)?.unwrap();
/// assert_eq!(batch.as_bytes(), b"a\nbb\r\n\n");
/// for (line, want) in batch.iter().zip([&b"a"[..], b"bb", b""]) {
///     assert_eq!(line.line(), want);
/// }
/// let owned: Vec<Line> = batch.into_iter().collect();
/// assert_eq!(owned[1], Line::new("bb", "\r\n"));
/// # Ok::<(), anyframe_codecs::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct LineBatch {
    /// The lines with their ends of line, back to back.
    data: Bytes,
    /// Per line: where its end of line starts, where it ends (offsets into
    /// `data`, increasing; the last one is `data.len()`).
    bounds: Vec<(usize, usize)>,
}

impl LineBatch {
    /// How many lines.
    pub fn len(&self) -> usize {
        self.bounds.len()
    }

    /// True for a batch of no lines (the codec never yields one).
    pub fn is_empty(&self) -> bool {
        self.bounds.is_empty()
    }

    /// Line `i`, borrowed.
    pub fn get(&self, i: usize) -> Option<LineRef<'_>> {
        let &(line_end, end) = self.bounds.get(i)?;
        let start = self.start(i);
        Some(LineRef {
            frame: &self.data[start..end],
            line_len: line_end - start,
        })
    }

    /// Line `i` as an owned [`Line`] sharing the batch's memory (one
    /// reference count).
    pub fn to_line(&self, i: usize) -> Option<Line> {
        let &(line_end, end) = self.bounds.get(i)?;
        let start = self.start(i);
        Some(Line::from_frame(
            self.data.slice(start..end),
            line_end - start,
        ))
    }

    /// The lines, borrowed, in order.
    pub fn iter(&self) -> Lines<'_> {
        Lines {
            data: &self.data,
            bounds: self.bounds.iter(),
            start: 0,
        }
    }

    /// Every line followed by its end of line, as read: exactly the bytes the
    /// batch consumed.
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }

    /// The bytes of [`as_bytes`](LineBatch::as_bytes), owned.
    pub fn into_bytes(self) -> Bytes {
        self.data
    }

    /// Where line `i` starts: where the one before it ends.
    fn start(&self, i: usize) -> usize {
        if i == 0 { 0 } else { self.bounds[i - 1].1 }
    }
}

impl fmt::Debug for LineBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for &'a LineBatch {
    type Item = LineRef<'a>;
    type IntoIter = Lines<'a>;

    fn into_iter(self) -> Lines<'a> {
        self.iter()
    }
}

/// Owned lines, each sharing the batch's memory.
impl IntoIterator for LineBatch {
    type Item = Line;
    type IntoIter = IntoLines;

    fn into_iter(self) -> IntoLines {
        IntoLines {
            bounds: self.bounds.into_iter(),
            data: self.data,
            start: 0,
        }
    }
}

/// One line of a [`LineBatch`], borrowed: the line and the end of line that
/// ended it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct LineRef<'a> {
    frame: &'a [u8],
    line_len: usize,
}

impl<'a> LineRef<'a> {
    /// The line, without its end of line.
    pub fn line(&self) -> &'a [u8] {
        &self.frame[..self.line_len]
    }

    /// The end of line that ended it.
    pub fn eol(&self) -> &'a [u8] {
        &self.frame[self.line_len..]
    }

    /// The line followed by its end of line, as read.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.frame
    }
}

impl fmt::Debug for LineRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Byte strings with escapes, as `Line` shows them.
        f.debug_struct("LineRef")
            .field("line", &Bytes::copy_from_slice(self.line()))
            .field("eol", &Bytes::copy_from_slice(self.eol()))
            .finish()
    }
}

/// The borrowed lines of a [`LineBatch`]; see [`LineBatch::iter`].
#[derive(Debug, Clone)]
pub struct Lines<'a> {
    data: &'a [u8],
    bounds: std::slice::Iter<'a, (usize, usize)>,
    /// Where the next line from the front starts.
    start: usize,
}

impl<'a> Iterator for Lines<'a> {
    type Item = LineRef<'a>;

    fn next(&mut self) -> Option<LineRef<'a>> {
        let &(line_end, end) = self.bounds.next()?;
        let line = LineRef {
            frame: &self.data[self.start..end],
            line_len: line_end - self.start,
        };
        self.start = end;
        Some(line)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.bounds.size_hint()
    }
}

impl DoubleEndedIterator for Lines<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        let &(line_end, end) = self.bounds.next_back()?;
        // Where the line before it ends, or the front's start.
        let start = self.bounds.as_slice().last().map_or(self.start, |b| b.1);
        Some(LineRef {
            frame: &self.data[start..end],
            line_len: line_end - start,
        })
    }
}

impl ExactSizeIterator for Lines<'_> {}
impl FusedIterator for Lines<'_> {}

/// The owned lines of a [`LineBatch`], each sharing its memory.
#[derive(Debug)]
pub struct IntoLines {
    data: Bytes,
    bounds: std::vec::IntoIter<(usize, usize)>,
    /// Where the next line starts.
    start: usize,
}

impl Iterator for IntoLines {
    type Item = Line;

    fn next(&mut self) -> Option<Line> {
        let (line_end, end) = self.bounds.next()?;
        let frame = self.data.slice(self.start..end);
        let line_len = line_end - self.start;
        self.start = end;
        Some(Line::from_frame(frame, line_len))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.bounds.size_hint()
    }
}

impl ExactSizeIterator for IntoLines {}
impl FusedIterator for IntoLines {}
