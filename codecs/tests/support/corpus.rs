//! Reading the test data under `tests/data` (and the optional external
//! corpora), and running a decoder over every affordable fragmentation.

use super::{Outcome, assert_split_invariant, run_chunks, run_sized};
use anyframe_codecs::Error;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use tokio_util::codec::Decoder;

/// Inputs up to this size get every two-way split (O(n²)); larger ones get
/// the whole input, one byte at a time and a few fixed chunkings.
pub const ALL_SPLITS_UP_TO: usize = 4096;

/// `tests/data/<rel>` of this crate.
pub fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

/// Lines of a tab-separated file, without its `#` comment lines.
pub fn tsv(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}

/// Decodes lowercase or uppercase hex, ignoring ASCII whitespace.
pub fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(digits.len().is_multiple_of(2), "odd hex length: {s}");
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).expect("ASCII"), 16).expect("hex"))
        .collect()
}

/// Runs the decoder over every fragmentation of `input` that is affordable,
/// asserting they agree, and returns the outcome.
pub fn every_split<D, F>(make: F, input: &[u8]) -> Outcome<D::Item>
where
    D: Decoder<Error = Error>,
    D::Item: PartialEq + Debug,
    F: Fn() -> D,
{
    if input.len() <= ALL_SPLITS_UP_TO {
        return assert_split_invariant(make, input);
    }
    let whole = run_chunks(make(), &[input]);
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(run_chunks(make(), &bytes), whole, "one byte at a time");
    for sizes in [&[4096usize][..], &[7, 1, 300], &[1000, 3]] {
        assert_eq!(run_sized(make(), input, sizes), whole, "chunks {sizes:?}");
    }
    whole
}

/// The external conformance corpora: `$ANYFRAME_CORPORA`, or else
/// `shared/corpora` beside the repository. `None` (with a note on stderr)
/// when the folder is missing, unless `ANYFRAME_REQUIRE_CORPORA=1`, which
/// makes a missing folder a test failure.
pub fn external_corpora() -> Option<PathBuf> {
    let dir = std::env::var_os("ANYFRAME_CORPORA").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpora"),
        PathBuf::from,
    );
    if dir.is_dir() {
        return Some(dir);
    }
    let required = std::env::var("ANYFRAME_REQUIRE_CORPORA").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "ANYFRAME_REQUIRE_CORPORA=1 but the external corpora are missing: {} \
         (set ANYFRAME_CORPORA to their folder)",
        dir.display()
    );
    eprintln!(
        "skipped: no external corpora at {} (set ANYFRAME_CORPORA)",
        dir.display()
    );
    None
}

/// `v` with every CBOR tag taken off (a tagged item becomes its content: a
/// bignum its magnitude bytes), for comparing with a value written without
/// tags (the JSON of a test vector, the value of its diagnostic notation).
#[cfg(feature = "cbor")]
pub fn untagged(v: &serde_cbor::Value) -> serde_cbor::Value {
    use serde_cbor::Value as C;
    match v {
        C::Tag(_, inner) => untagged(inner),
        C::Array(items) => C::Array(items.iter().map(untagged).collect()),
        C::Map(map) => C::Map(
            map.iter()
                .map(|(k, v)| (untagged(k), untagged(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}
