//! Test support shared by every codec test file: the fragmentation harness.
//!
//! Fragmentation invariance is the law of this crate: a decoder must yield
//! the same frames, fail at the same frame index with the same kind of error,
//! and end the same way at end of input, however its input is split.
//!
//! Use [`assert_split_invariant`] for the deterministic splits (whole, every
//! two-way split, one byte at a time) and [`run_sized`] with proptest-chosen
//! sizes for random chunkings; both compare [`Outcome`]s.
#![allow(dead_code, unreachable_pub)]

pub mod corpus;

use anyframe_codecs::{Error, ErrorKind};
use bytes::BytesMut;
use std::fmt::Debug;
use tokio_util::codec::Decoder;

/// How a run of a decoder over some input ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome<T> {
    /// Frames in the order they came out (before any error).
    pub frames: Vec<T>,
    /// The first error: at which frame index (= `frames.len()` then), its
    /// kind and fatality. The run stops there, as `Framed` does.
    pub error: Option<(usize, ErrorKind, bool)>,
    /// What `decode_eof` said after all input was fed (None if an error
    /// stopped the run before end of input).
    pub eof: Option<Eof>,
}

/// The end-of-input outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum Eof {
    /// `decode_eof` returned `Ok(None)`; these bytes were left in the buffer.
    Clean { leftover: Vec<u8> },
    /// `decode_eof` failed; this many bytes were left in the buffer.
    Error { kind: ErrorKind, leftover: usize },
}

/// Feeds `chunks` one after another to a fresh decoder, decoding after each
/// chunk until it asks for more, then calls `decode_eof` until it is done.
pub fn run_chunks<D>(mut decoder: D, chunks: &[&[u8]]) -> Outcome<D::Item>
where
    D: Decoder<Error = Error>,
{
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => {
                    let error = Some((frames.len(), e.kind(), e.is_fatal()));
                    return Outcome {
                        frames,
                        error,
                        eof: None,
                    };
                }
            }
        }
    }
    // Framed calls decode_eof until it returns None or an error.
    let mut guard = 0;
    loop {
        guard += 1;
        assert!(guard < 1_000_000, "decode_eof keeps returning frames");
        match decoder.decode_eof(&mut buf) {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => {
                return Outcome {
                    frames,
                    error: None,
                    eof: Some(Eof::Clean {
                        leftover: buf.to_vec(),
                    }),
                };
            }
            Err(e) => {
                let eof = Some(Eof::Error {
                    kind: e.kind(),
                    leftover: buf.len(),
                });
                return Outcome {
                    frames,
                    error: None,
                    eof,
                };
            }
        }
    }
}

/// Runs `input` split into pieces of the given sizes (cycled; a size of 0
/// counts as 1). Use with proptest-chosen `sizes` for random chunkings.
pub fn run_sized<D>(decoder: D, input: &[u8], sizes: &[usize]) -> Outcome<D::Item>
where
    D: Decoder<Error = Error>,
{
    run_chunks(decoder, &split_at_sizes(input, sizes))
}

/// `input` cut into pieces of the given sizes, cycled (0 counts as 1).
pub fn split_at_sizes<'a>(input: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut chunks = Vec::new();
    let mut rest = input;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes
            .get(i % sizes.len().max(1))
            .copied()
            .unwrap_or(1)
            .max(1);
        let (a, b) = rest.split_at(n.min(rest.len()));
        chunks.push(a);
        rest = b;
        i += 1;
    }
    chunks
}

/// Asserts that the whole input, every two-way split and one byte at a time
/// all give the same [`Outcome`], and returns it for further assertions.
///
/// Every two-way split is O(n²) work: keep inputs to a few KiB here and use
/// [`run_sized`] for large ones.
pub fn assert_split_invariant<D, F>(make: F, input: &[u8]) -> Outcome<D::Item>
where
    D: Decoder<Error = Error>,
    D::Item: PartialEq + Debug,
    F: Fn() -> D,
{
    let whole = run_chunks(make(), &[input]);
    for at in 0..=input.len() {
        let (a, b) = input.split_at(at);
        let split = run_chunks(make(), &[a, b]);
        assert_eq!(
            split, whole,
            "two-way split at {at} differs from the whole input"
        );
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    let one = run_chunks(make(), &bytes);
    assert_eq!(
        one, whole,
        "one byte at a time differs from the whole input"
    );
    whole
}

/// Asserts that the given chunk sizes give the same outcome as the whole
/// input (for proptest bodies).
pub fn assert_sized_matches_whole<D, F>(make: F, input: &[u8], sizes: &[usize])
where
    D: Decoder<Error = Error>,
    D::Item: PartialEq + Debug,
    F: Fn() -> D,
{
    let whole = run_chunks(make(), &[input]);
    let sized = run_sized(make(), input, sizes);
    assert_eq!(
        sized, whole,
        "chunking {sizes:?} differs from the whole input"
    );
}

/// One step of a run that goes on after non-fatal errors, as the fuzz
/// harness and the anyframe engine do. `End` is how `decode_eof` finished:
/// `Ok` with the bytes left, or the error's kind and the bytes left.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<T> {
    Frame(T),
    Error(ErrorKind, bool),
    End(Result<Vec<u8>, (ErrorKind, usize)>),
}

/// Feeds `chunks` one after another, decoding after each until the codec
/// wants more; records non-fatal errors and goes on (stopping if the same
/// error repeats on an unchanged buffer, or at a fatal one); then
/// `decode_eof` until done.
pub fn run_continuing<D>(mut d: D, chunks: &[&[u8]]) -> Vec<Event<D::Item>>
where
    D: Decoder<Error = Error>,
{
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    // The buffer length after the previous call, if that call failed
    // without consuming anything.
    let mut last_err: Option<(usize, ErrorKind)> = None;
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.len();
            match d.decode(&mut buf) {
                Ok(Some(f)) => {
                    out.push(Event::Frame(f));
                    last_err = None;
                }
                Ok(None) => {
                    last_err = None;
                    break;
                }
                Err(e) => {
                    // The same error again on an unchanged buffer: the
                    // codec will not move on by itself. Stop there.
                    if buf.len() == before && last_err == Some((before, e.kind())) {
                        return out;
                    }
                    // Only an error that consumed nothing can repeat as is.
                    last_err = (buf.len() == before).then_some((before, e.kind()));
                    out.push(Event::Error(e.kind(), e.is_fatal()));
                    if e.is_fatal() {
                        return out;
                    }
                }
            }
        }
    }
    loop {
        let before = buf.len();
        match d.decode_eof(&mut buf) {
            Ok(Some(f)) => out.push(Event::Frame(f)),
            Ok(None) => {
                out.push(Event::End(Ok(buf.to_vec())));
                return out;
            }
            Err(e) if e.is_fatal() || buf.len() == before => {
                out.push(Event::End(Err((e.kind(), buf.len()))));
                return out;
            }
            Err(e) => out.push(Event::Error(e.kind(), e.is_fatal())),
        }
    }
}

/// The whole input, every two-way split and one byte at a time agree.
pub fn assert_continuing_invariant<D, F>(make: F, input: &[u8]) -> Vec<Event<D::Item>>
where
    D: Decoder<Error = Error>,
    D::Item: PartialEq + std::fmt::Debug,
    F: Fn() -> D,
{
    let whole = run_continuing(make(), &[input]);
    for at in 0..=input.len() {
        let (a, b) = input.split_at(at);
        assert_eq!(run_continuing(make(), &[a, b]), whole, "split at {at}");
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(run_continuing(make(), &bytes), whole, "byte by byte");
    whole
}

/// Regex patterns built from `atoms` by a small grammar (concatenation,
/// alternation, `?`, `{1,3}`, `+`, nested three deep): bounded and
/// unbounded matches, with whatever look-around the atoms bring.
pub fn regex_grammar(
    atoms: Vec<&'static str>,
) -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    let atom = prop::sample::select(atoms).prop_map(str::to_owned);
    atom.prop_recursive(3, 10, 3, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a}{b}")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("(?:{a}|{b})")),
            inner.clone().prop_map(|a| format!("(?:{a})?")),
            inner.clone().prop_map(|a| format!("(?:{a}){{1,3}}")),
            inner.prop_map(|a| format!("(?:{a})+")),
        ]
    })
}
