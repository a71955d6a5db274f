//! Shared harness for the anyframe fuzz targets.
//!
//! Every decoder target reads its input as
//!
//! ```text
//! [config: u8] [k: u8] [k chunk sizes: u8 each] [data ...]
//! ```
//!
//! `config` picks the codec's options (each target says how), the chunk
//! sizes (each `size + 1` bytes, cycled) say how `data` is split into reads,
//! and `data` is what the peer sent. A seed file from the codec tests' data
//! (`codecs/tests/data`) is used as `data` behind a small header that
//! `run.sh` prepends.
//!
//! [`run`] feeds one split of the data to a fresh decoder and records what
//! came out; the targets compare the whole input, one byte at a time and
//! the fuzzer's chunking, which must all agree (docs/semantics.md §2a).

use std::fmt::Debug;

/// The scripted transport of the engine's model-based test
/// (`tests/support/mock_io.rs`), shared so the `engine` target plays the
/// same operations against the same model.
#[path = "../../tests/support/mock_io.rs"]
pub mod mock_io;

/// The reference model of the engine and the runner that compares the two
/// step by step (`tests/support/engine_model.rs`; `tests/model.rs` drives
/// it with proptest, the `engine` target with fuzz bytes through
/// [`engine_model::Case::from_bytes`]).
#[path = "../../tests/support/engine_model.rs"]
pub mod engine_model;

use anyframe_codecs::{Error, ErrorKind};
use bytes::BytesMut;
use tokio_util::codec::Decoder;

/// A parsed fuzz input.
#[derive(Debug)]
pub struct Input<'a> {
    /// Target-specific option bits.
    pub config: u8,
    /// Chunk sizes, each at least 1, cycled over the data.
    pub sizes: Vec<usize>,
    /// The bytes the peer sent.
    pub data: &'a [u8],
}

impl<'a> Input<'a> {
    /// Splits the raw fuzz input into its parts.
    pub fn parse(raw: &'a [u8]) -> Option<Input<'a>> {
        let (&config, rest) = raw.split_first()?;
        let (&k, rest) = rest.split_first()?;
        let k = usize::from(k % 16);
        if rest.len() < k {
            return None;
        }
        let (sizes, data) = rest.split_at(k);
        Some(Input {
            config,
            sizes: sizes.iter().map(|&s| usize::from(s) + 1).collect(),
            data,
        })
    }

    /// The data cut into the fuzzer's chunk sizes (one piece if none given).
    pub fn chunks(&self) -> Vec<&'a [u8]> {
        split_sized(self.data, &self.sizes)
    }
}

/// Cuts `data` into pieces of the given sizes, cycled.
pub fn split_sized<'a>(data: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    if sizes.is_empty() {
        return vec![data];
    }
    let mut out = Vec::new();
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].max(1).min(rest.len());
        let (a, b) = rest.split_at(n);
        out.push(a);
        rest = b;
        i += 1;
    }
    out
}

/// One error as the comparison sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorSig {
    pub kind: ErrorKind,
    pub fatal: bool,
    pub limit: bool,
    pub utf8: bool,
    pub offset: Option<u64>,
}

impl ErrorSig {
    pub fn of(e: &Error) -> ErrorSig {
        ErrorSig {
            kind: e.kind(),
            fatal: e.is_fatal(),
            limit: e.is_limit(),
            utf8: e.is_utf8(),
            offset: e.offset(),
        }
    }
}

/// What came out, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<T> {
    Frame(T),
    Error(ErrorSig),
}

/// How the input ended.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    /// A fatal error stopped decoding before the end of input.
    Fatal,
    /// A non-fatal error repeated on the same buffer: the codec consumed
    /// nothing and will not move on by itself (the caller must skip bytes).
    Stuck,
    /// `decode_eof` returned `Ok(None)` with these bytes left.
    Clean(Vec<u8>),
    /// `decode_eof` failed; this many bytes were left.
    EofError(ErrorSig, usize),
}

/// The full record of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome<T> {
    pub events: Vec<Event<T>>,
    pub end: End,
}

impl<T> Outcome<T> {
    /// The frames only.
    pub fn frames(&self) -> impl Iterator<Item = &T> {
        self.events.iter().filter_map(|e| match e {
            Event::Frame(f) => Some(f),
            Event::Error(_) => None,
        })
    }

    /// Maps the frames (to compare typed frames that are not `PartialEq`).
    pub fn map<U>(self, mut f: impl FnMut(T) -> U) -> Outcome<U> {
        Outcome {
            events: self
                .events
                .into_iter()
                .map(|e| match e {
                    Event::Frame(t) => Event::Frame(f(t)),
                    Event::Error(s) => Event::Error(s),
                })
                .collect(),
            end: self.end,
        }
    }
}

/// Checks made while running, besides recording.
#[derive(Debug, Clone, Copy)]
pub struct Checks {
    /// After `Ok(None)` the buffer may hold at most this many bytes: the
    /// codec's limit plus its header/terminator slack. `None`: unchecked.
    pub bound: Option<usize>,
    /// Every frame must consume at least one byte (a stream decoder that
    /// yields without consuming loops forever in `Framed`).
    pub progress: bool,
}

/// Caps on one run, so a pathological codec cannot hang the fuzzer.
const MAX_EVENTS: usize = 200_000;

/// Feeds `chunks` to `decoder` one after another, decoding after each until
/// it wants more; goes on after non-fatal errors (stopping if the same error
/// repeats on an unchanged buffer); then `decode_eof` until done.
pub fn run<D>(mut decoder: D, chunks: &[&[u8]], checks: Checks) -> Outcome<D::Item>
where
    D: Decoder<Error = Error>,
{
    let mut buf = BytesMut::new();
    let mut events: Vec<Event<D::Item>> = Vec::new();
    // The buffer length after the previous call, if it failed without
    // consuming anything.
    let mut last_err: Option<(usize, ErrorSig)> = None;
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            assert!(events.len() < MAX_EVENTS, "too many events");
            let before = buf.len();
            match decoder.decode(&mut buf) {
                Ok(Some(f)) => {
                    if checks.progress {
                        assert!(buf.len() < before, "frame without consuming a byte");
                    }
                    events.push(Event::Frame(f));
                    last_err = None;
                }
                Ok(None) => {
                    last_err = None;
                    if let Some(bound) = checks.bound {
                        assert!(
                            buf.len() <= bound,
                            "{} bytes buffered waiting, bound {bound}",
                            buf.len()
                        );
                    }
                    break;
                }
                Err(e) => {
                    let sig = ErrorSig::of(&e);
                    let fatal = sig.fatal;
                    let consumed = buf.len() != before;
                    // Stuck: the same error twice in a row on an unchanged
                    // buffer.
                    let stuck = !consumed
                        && last_err
                            .as_ref()
                            .is_some_and(|(len, prev)| *len == buf.len() && *prev == sig);
                    if stuck {
                        return Outcome::new(events, End::Stuck);
                    }
                    // Only an error that consumed nothing can repeat as is.
                    last_err = (!consumed).then(|| (buf.len(), sig.clone()));
                    events.push(Event::Error(sig));
                    if fatal {
                        return Outcome::new(events, End::Fatal);
                    }
                }
            }
        }
    }
    loop {
        assert!(
            events.len() < MAX_EVENTS,
            "decode_eof keeps returning frames"
        );
        let before = buf.len();
        match decoder.decode_eof(&mut buf) {
            Ok(Some(f)) => {
                if checks.progress {
                    assert!(buf.len() < before, "eof frame without consuming a byte");
                }
                events.push(Event::Frame(f));
            }
            Ok(None) => {
                return Outcome::new(events, End::Clean(buf.to_vec()));
            }
            Err(e) => {
                // A non-fatal error that consumed something (a well-formed
                // text the type rejects, say) is one more event; anything
                // else ends the input.
                let sig = ErrorSig::of(&e);
                if sig.fatal || buf.len() == before {
                    return Outcome::new(events, End::EofError(sig, buf.len()));
                }
                events.push(Event::Error(sig));
            }
        }
    }
}

impl<T> Outcome<T> {
    fn new(events: Vec<Event<T>>, end: End) -> Outcome<T> {
        Outcome { events, end }
    }
}

impl<T> Outcome<T> {
    /// The events with a run of one malformed-input error (one that has an
    /// offset) repeated back to back counted once; errors without an offset
    /// (a well-formed frame the target type rejects) are each kept, as
    /// each stands for a frame.
    pub fn squeezed(&self) -> Vec<&Event<T>> {
        let mut out: Vec<&Event<T>> = Vec::new();
        for e in &self.events {
            let repeat = matches!(
                (out.last(), e),
                (Some(Event::Error(x)), Event::Error(y)) if x == y && x.offset.is_some()
            );
            if !repeat {
                out.push(e);
            }
        }
        out
    }
}

impl<T: PartialEq> Outcome<T> {
    /// Whether two outcomes agree, counting a run of one error repeated
    /// back to back (no frame between) once: how often a codec reports an
    /// error that it will report again depends on when the caller retries,
    /// not on the input (e.g. whether the whitespace before a bad JSON
    /// byte went with the call that reported it or with an earlier one).
    pub fn same_as(&self, other: &Outcome<T>) -> bool {
        fn squeeze<T: PartialEq>(events: &[Event<T>]) -> Vec<&Event<T>> {
            let mut out: Vec<&Event<T>> = Vec::new();
            for e in events {
                let repeat = matches!(
                    (out.last(), e),
                    (Some(Event::Error(x)), Event::Error(y)) if x == y
                );
                if !repeat {
                    out.push(e);
                }
            }
            out
        }
        self.end == other.end && squeeze(&self.events) == squeeze(&other.events)
    }
}

/// Runs the whole input, one byte at a time (for inputs up to 4 KiB) and
/// the fuzzer's chunking through fresh decoders, asserts that all three
/// agree, and returns the whole-input outcome.
pub fn assert_invariant<D, F>(make: F, input: &Input<'_>, checks: Checks) -> Outcome<D::Item>
where
    D: Decoder<Error = Error>,
    D::Item: PartialEq + Debug,
    F: Fn() -> D,
{
    let whole = run(make(), &[input.data], checks);
    let sized = run(make(), &input.chunks(), checks);
    assert!(
        sized.same_as(&whole),
        "chunking {:?} differs from the whole input:\n{sized:?}\n{whole:?}",
        input.sizes
    );
    if input.data.len() <= 4096 {
        let bytes: Vec<&[u8]> = input.data.chunks(1).collect();
        let one = run(make(), &bytes, checks);
        assert!(
            one.same_as(&whole),
            "one byte at a time differs from the whole input:\n{one:?}\n{whole:?}"
        );
    }
    whole
}

/// Decodes everything in `wire` (one read, then end of input) and expects
/// exactly `expect` as the only frame, with nothing left over.
pub fn assert_round_trip<D>(decoder: D, wire: &[u8], expect: &D::Item)
where
    D: Decoder<Error = Error>,
    D::Item: PartialEq + Debug,
{
    let out = run(
        decoder,
        &[wire],
        Checks {
            bound: None,
            progress: true,
        },
    );
    let frames: Vec<&D::Item> = out.frames().collect();
    assert!(
        out.events.len() == 1 && frames == [expect] && out.end == End::Clean(Vec::new()),
        "round trip of {wire:?}: expected {expect:?}, got {out:?}"
    );
}
