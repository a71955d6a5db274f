//! A held regex end of line whose match a look-ahead may undo (a Unicode
//! `\b` or `\B` after it) waits for the whole character after the match:
//! a read that ends inside that character (after the first byte of `é`)
//! does not decide, whole input or split (RT-line-5).

mod support;

use anyframe_codecs::{LineCodec, OverflowPolicy};
use regex::bytes::Regex;
use support::run_continuing;

fn held(re: &str, max: usize, discard: bool) -> LineCodec {
    LineCodec::builder()
        .eol_regex(Regex::new(re).unwrap())
        .hold_open_match(true)
        .max_length(max)
        .overflow(if discard {
            OverflowPolicy::Discard
        } else {
            OverflowPolicy::Fatal
        })
        .build()
        .unwrap()
}

/// The same events fed whole and split at `at`.
fn split_like_whole(re: &str, max: usize, discard: bool, input: &[u8], at: usize) {
    let whole = run_continuing(held(re, max, discard), &[input]);
    let (a, b) = input.split_at(at);
    let split = run_continuing(held(re, max, discard), &[a, b]);
    assert_eq!(
        split, whole,
        "{re:?}, max {max}, split at {at} of {input:?}"
    );
}

#[test]
fn a_word_boundary_eol_waits_for_the_whole_character_after_it() {
    // `END` before `é` is no match (é is a word character).
    let input = " ENDé END;".as_bytes();
    split_like_whole(r"\bEND\b", 100, false, input, " END".len() + 1);
}

#[test]
fn a_negated_word_boundary_eol_waits_for_the_whole_character_after_it() {
    split_like_whole(r";\B", 100, false, "a;éb;;".as_bytes(), 3);
}

#[test]
fn the_limit_verdict_waits_for_the_whole_character_after_the_eol() {
    split_like_whole(
        r"\bEND\b",
        3,
        false,
        "xx ENDé".as_bytes(),
        "xx END".len() + 1,
    );
}

#[test]
fn a_dropped_line_waits_for_the_whole_character_after_its_eol() {
    let input = "xxxx ENDé yy END z\n".as_bytes();
    split_like_whole(r"\bEND\b", 2, true, input, "xxxx END".len() + 1);
}
