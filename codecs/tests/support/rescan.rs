//! The regex codec's reference model and an input splitter, shared by
//! `regex.rs` and `regex_resume.rs`.

use anyframe_codecs::ErrorKind;
use bytes::BytesMut;
use regex::bytes::Regex;

/// The codec as it was before searches resumed: every regex over the
/// whole window on every call with new bytes (AE's order), and at end of
/// input once more. Resuming must not change a single frame, error or
/// error offset.
pub struct RescanModel {
    accept: Regex,
    reject: Option<Regex>,
    skip: Option<Regex>,
    max_length: usize,
    skipped: usize,
    scanned: Option<(usize, Option<usize>)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Frame(bytes::Bytes),
    NeedMore,
    Error(ErrorKind, Option<u64>),
}

impl RescanModel {
    pub fn new(accept: &Regex, reject: Option<&Regex>, skip: Option<&Regex>, max: usize) -> Self {
        RescanModel {
            accept: accept.clone(),
            reject: reject.cloned(),
            skip: skip.cloned(),
            max_length: max,
            skipped: 0,
            scanned: None,
        }
    }

    pub fn step(&mut self, buf: &mut BytesMut, eof: bool) -> Step {
        let len = buf.len();
        let rejected = |at: usize| Step::Error(ErrorKind::BadMessage, Some(at as u64));
        if !eof
            && let Some((last, at)) = self.scanned
            && last == len
        {
            return at.map_or(Step::NeedMore, rejected);
        }
        let end = len.min(self.max_length);
        let from = self.skipped.min(end);
        let window = &buf[from..end];
        if let Some(end) = self
            .accept
            .find_iter(window)
            .map(|m| from + m.end())
            .find(|&e| e > 0)
        {
            self.skipped = 0;
            self.scanned = None;
            return Step::Frame(buf.split_to(end).freeze());
        }
        if len > self.max_length {
            return Step::Error(ErrorKind::NoSpace, None);
        }
        if let Some(m) = self.reject.as_ref().and_then(|r| r.find(window)) {
            self.skipped = 0;
            self.scanned = None;
            return rejected(from + m.start());
        }
        if let Some(m) = self.skip.as_ref().and_then(|s| s.find(window)) {
            self.skipped = from + m.end();
        }
        self.scanned = Some((len, None));
        if eof && len > 0 {
            return Step::Error(ErrorKind::BrokenPipe, None);
        }
        Step::NeedMore
    }
}

/// `input` cut into pieces of `sizes` bytes, the sizes used in turn.
pub fn chunk<'a>(input: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut chunks = Vec::new();
    let mut rest = input;
    for &n in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (head, tail) = rest.split_at(n.min(rest.len()));
        chunks.push(head);
        rest = tail;
    }
    chunks
}
