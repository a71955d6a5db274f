//! LineCodec, Utf8LineCodec and LineBatchCodec: AE's verified examples,
//! fragmentation invariance, limits and overflow policies, errors, and the
//! encoders.

mod support;

use anyframe_codecs::{
    DEFAULT_BATCH_LINES, ErrorKind, Line, LineBatch, LineBatchCodec, LineCodec, LineCodecBuilder,
    OverflowPolicy, Utf8Line, Utf8LineCodec,
};
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use regex::bytes::Regex;
use support::{
    Eof, Event, assert_continuing_invariant, assert_sized_matches_whole, assert_split_invariant,
    run_chunks, run_continuing,
};
use tokio_util::codec::{Decoder, Encoder};

fn line(l: &str, e: &str) -> Line {
    Line::new(l.as_bytes().to_vec(), e.as_bytes())
}

fn build(f: impl FnOnce(&mut LineCodecBuilder) -> &mut LineCodecBuilder) -> LineCodec {
    f(&mut LineCodec::builder())
        .build()
        .expect("valid configuration")
}

fn chunked(input: &[u8], sizes: &[usize]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = input;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].max(1).min(rest.len());
        out.push(rest[..n].to_vec());
        rest = &rest[n..];
        i += 1;
    }
    out
}

// ---------------------------------------------------------------------------
// Default EOL

#[test]
fn default_eol_keeps_lone_cr_in_the_line_as_ae_does() {
    let out = assert_split_invariant(LineCodec::new, b"a\rb\r\r\n\rd\n");
    assert_eq!(out.frames, vec![line("a\rb\r", "\r\n"), line("\rd", "\n")]);
    assert_eq!(out.error, None);
    assert_eq!(out.eof, Some(Eof::Clean { leftover: vec![] }));
}

#[test]
fn default_eol_gives_empty_lines_and_both_terminators() {
    let out = assert_split_invariant(LineCodec::new, b"\n\r\nx\r\n\r\r\n");
    assert_eq!(
        out.frames,
        vec![
            line("", "\n"),
            line("", "\r\n"),
            line("x", "\r\n"),
            line("\r", "\r\n")
        ]
    );
}

#[test]
fn unterminated_line_at_eof_is_broken_pipe_and_stays_buffered() {
    let out = assert_split_invariant(LineCodec::new, b"one\ntwo\r");
    assert_eq!(out.frames, vec![line("one", "\n")]);
    assert_eq!(
        out.eof,
        Some(Eof::Error {
            kind: ErrorKind::BrokenPipe,
            leftover: 4
        })
    );

    let mut codec = LineCodec::new();
    let mut buf = BytesMut::from("partial");
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    let err = codec.decode_eof(&mut buf).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrokenPipe);
    assert!(err.is_fatal() && err.is_incomplete());
    assert_eq!(err.seen(), Some(7));
    assert_eq!(buf, "partial");
}

#[test]
fn clean_eof_after_complete_lines() {
    let mut codec = LineCodec::new();
    let mut buf = BytesMut::from("x\n");
    assert_eq!(codec.decode_eof(&mut buf).unwrap(), Some(line("x", "\n")));
    assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
}

#[test]
fn frames_share_the_read_buffer() {
    let mut codec = LineCodec::new();
    let mut buf = BytesMut::from("hello\nworld\n");
    let base = buf.as_ptr() as usize;
    let first = codec.decode(&mut buf).unwrap().unwrap();
    assert_eq!(first.line().as_ptr() as usize, base);
    // Line and EOL are one frame: the EOL follows the line in the buffer.
    assert_eq!(first.eol().as_ptr() as usize, base + 5);
    let second = codec.decode(&mut buf).unwrap().unwrap();
    assert_eq!(second.as_bytes().as_ptr() as usize, base + 6);
    let (l, e) = second.into_parts();
    assert_eq!(
        (l.as_ptr() as usize, &l[..], &e[..]),
        (base + 6, &b"world"[..], &b"\n"[..])
    );
    assert_eq!(first.into_line().as_ptr() as usize, base);
}

#[test]
fn line_accessors_agree() {
    let l = Line::new("a\rb", "\r\n");
    assert_eq!(
        (l.line(), l.eol(), l.as_bytes()),
        (&b"a\rb"[..], &b"\r\n"[..], &b"a\rb\r\n"[..])
    );
    assert_eq!(l.line_bytes(), "a\rb");
    assert_eq!(format!("{l:?}"), r#"Line { line: b"a\rb", eol: b"\r\n" }"#);
    assert_eq!(l, Line::from_frame(Bytes::from_static(b"a\rb\r\n"), 3));
    // Same bytes, another split: not the same line.
    assert_ne!(l, Line::from_frame(Bytes::from_static(b"a\rb\r\n"), 4));
    assert_eq!(l.clone().into_frame(), "a\rb\r\n");
    assert_eq!(Line::new("x", "").eol(), b"");
    assert_eq!(Line::default().as_bytes(), b"");
}

#[test]
#[should_panic(expected = "past the end")]
fn line_from_frame_checks_the_split() {
    let _ = Line::from_frame(Bytes::from_static(b"ab\n"), 4);
}

// ---------------------------------------------------------------------------
// Limits

#[test]
fn limit_counts_the_line_without_its_eol() {
    let make = || build(|b| b.max_length(3));
    let out = assert_split_invariant(make, b"abc\r\nabc\nab\r\n");
    assert_eq!(
        out.frames,
        vec![line("abc", "\r\n"), line("abc", "\n"), line("ab", "\r\n")]
    );
    assert_eq!(out.error, None);
}

#[test]
fn cr_at_the_limit_does_not_change_the_verdict_when_lf_comes_later() {
    let make = || build(|b| b.max_length(3));
    // "abc\r" alone fits only if a LF follows; "abc\rx" does not.
    let out = assert_split_invariant(make, b"abc\rx\n");
    assert_eq!(out.frames, vec![]);
    assert_eq!(out.error, Some((0, ErrorKind::NoSpace, true)));
    let out = assert_split_invariant(make, b"abc\r\n");
    assert_eq!(out.frames, vec![line("abc", "\r\n")]);
    // At EOF the lone trailing CR is an unfinished line, not an overflow.
    let out = assert_split_invariant(make, b"abc\r");
    assert_eq!(
        out.eof,
        Some(Eof::Error {
            kind: ErrorKind::BrokenPipe,
            leftover: 4
        })
    );
}

#[test]
fn fatal_overflow_consumes_nothing_and_says_how_much_was_seen() {
    let mut codec = build(|b| b.max_length(4));
    let mut buf = BytesMut::from("ok\nmuch too long\n");
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(line("ok", "\n")));
    let err = codec.decode(&mut buf).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoSpace);
    assert!(err.is_fatal() && err.is_limit());
    assert_eq!(err.limit(), Some(4));
    assert_eq!(err.codec(), "line");
    assert_eq!(err.bytes(), b"much too long\n");
    assert_eq!(buf, "much too long\n");
}

#[test]
fn overflow_is_detected_without_waiting_for_the_eol() {
    let mut codec = build(|b| b.max_length(4));
    let mut buf = BytesMut::from("abcdef");
    assert!(codec.decode(&mut buf).is_err());
}

#[test]
fn discard_reports_once_then_resumes_after_the_eol() {
    let make = || build(|b| b.max_length(4).overflow(OverflowPolicy::Discard));
    let events = assert_continuing_invariant(make, b"ok\nmuch too long\r\nnext\n");
    assert_eq!(
        events,
        vec![
            Event::Frame(line("ok", "\n")),
            Event::Error(ErrorKind::NoSpace, false),
            Event::Frame(line("next", "\n")),
            Event::End(Ok(vec![])),
        ]
    );
}

#[test]
fn discard_state_is_visible_and_the_error_comes_at_the_eol() {
    let mut codec = build(|b| b.max_length(2).overflow(OverflowPolicy::Discard));
    let mut buf = BytesMut::from("abcdef");
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert!(codec.is_discarding());
    assert!(buf.is_empty(), "discarded bytes are dropped as they come");
    buf.extend_from_slice(b"gh\nxy\n");
    let err = codec.decode(&mut buf).unwrap_err();
    assert!(!err.is_fatal() && err.is_limit());
    assert!(
        err.seen().is_some_and(|n| n > 2),
        "the line was over the limit"
    );
    assert!(!codec.is_discarding());
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(line("xy", "\n")));
}

/// The error comes once the over-long line is gone, so a fresh decoder (a
/// new one per read request) starts on the next line, not in the middle of
/// the dropped one.
#[test]
fn discard_lets_a_fresh_decoder_per_line_make_progress() {
    let make = || build(|b| b.max_length(4).overflow(OverflowPolicy::Discard));
    let mut buf = BytesMut::from("much too");
    assert_eq!(make().decode(&mut buf).unwrap(), None);
    let mut second = make();
    buf.extend_from_slice(b" long\nok\n");
    // The first decoder was dropped mid-line: the bytes it dropped are
    // gone, and a fresh one sees the rest of the line as over-long too, or
    // as a line. With one decoder kept across calls, the error comes first.
    let mut kept = make();
    let mut whole = BytesMut::from("much too long\nok\n");
    assert!(kept.decode(&mut whole).unwrap_err().is_limit());
    assert_eq!(kept.decode(&mut whole).unwrap(), Some(line("ok", "\n")));
    // A fresh decoder per call also gets there.
    let mut events = Vec::new();
    for _ in 0..4 {
        match second.decode(&mut buf) {
            Ok(Some(l)) => {
                events.push(l);
                break;
            }
            Ok(None) => break,
            Err(e) => {
                assert!(e.is_limit() && !e.is_fatal());
                second = make();
            }
        }
    }
    assert_eq!(events.last(), Some(&line("ok", "\n")));
}

#[test]
fn discard_at_eof_ends_the_discarded_line_quietly() {
    let make = || build(|b| b.max_length(2).overflow(OverflowPolicy::Discard));
    let events = assert_continuing_invariant(make, b"a\nno end in sight");
    assert_eq!(
        events,
        vec![
            Event::Frame(line("a", "\n")),
            // Reported at the end of input, which ended the dropped line.
            Event::End(Err((ErrorKind::NoSpace, 0))),
        ]
    );
}

#[test]
fn discard_finds_a_literal_eol_split_across_reads() {
    let make = || {
        build(|b| {
            b.eol("<END>")
                .max_length(3)
                .overflow(OverflowPolicy::Discard)
        })
    };
    let events = assert_continuing_invariant(make, b"abcdefg<EN<END>ok<END>");
    assert_eq!(
        events,
        vec![
            Event::Error(ErrorKind::NoSpace, false),
            Event::Frame(line("ok", "<END>")),
            Event::End(Ok(vec![])),
        ]
    );
}

/// A regex EOL whose matches have a bounded length keeps, while
/// discarding, the bytes an EOL may have begun with, as a literal EOL does:
/// a CR at the end of one read and its LF in the next still end the line.
#[test]
fn discard_finds_a_bounded_regex_eol_split_across_reads() {
    let crlf = Regex::new(r"\r\n").unwrap();
    for hold in [false, true] {
        let make = || {
            build(|b| {
                b.eol_regex(crlf.clone())
                    .hold_open_match(hold)
                    .max_length(4)
                    .overflow(OverflowPolicy::Discard)
            })
        };
        let events = assert_continuing_invariant(make, b"xxxxxxx\r\nnext\r\n");
        assert_eq!(
            events,
            vec![
                Event::Error(ErrorKind::NoSpace, false),
                Event::Frame(line("next", "\r\n")),
                Event::End(Ok(vec![])),
            ],
            "hold_open_match({hold})"
        );
    }
}

#[test]
fn several_overlong_lines_are_each_reported_once() {
    let make = || build(|b| b.max_length(1).overflow(OverflowPolicy::Discard));
    let events = assert_continuing_invariant(make, b"aaa\nb\ncc\r\n\n");
    assert_eq!(
        events,
        vec![
            Event::Error(ErrorKind::NoSpace, false),
            Event::Frame(line("b", "\n")),
            Event::Error(ErrorKind::NoSpace, false),
            Event::Frame(line("", "\n")),
            Event::End(Ok(vec![])),
        ]
    );
}

// ---------------------------------------------------------------------------
// Literal EOL

#[test]
fn literal_eol_takes_the_first_occurrence_as_ae_does() {
    let make = || LineCodec::with_eol("\r\n").unwrap();
    let out = assert_split_invariant(make, b"x\ny\r\nz\r\n");
    assert_eq!(out.frames, vec![line("x\ny", "\r\n"), line("z", "\r\n")]);
}

#[test]
fn literal_eol_has_no_regex_meaning() {
    let make = || LineCodec::with_eol(".*").unwrap();
    let out = assert_split_invariant(make, b"a.b.*c");
    assert_eq!(out.frames, vec![line("a.b", ".*")]);
    assert_eq!(
        out.eof,
        Some(Eof::Error {
            kind: ErrorKind::BrokenPipe,
            leftover: 1
        })
    );
}

#[test]
fn multi_byte_eol_split_across_reads_is_found() {
    let make = || LineCodec::with_eol("<END>").unwrap();
    let out = assert_split_invariant(make, b"first<END>sec<EN<ENDond<END><END>");
    assert_eq!(
        out.frames,
        vec![
            line("first", "<END>"),
            line("sec<EN<ENDond", "<END>"),
            line("", "<END>")
        ]
    );
}

#[test]
fn overlapping_literal_eol_ends_at_the_first_occurrence() {
    let make = || LineCodec::with_eol("aab").unwrap();
    let out = assert_split_invariant(make, b"xaaabyaab");
    assert_eq!(out.frames, vec![line("xa", "aab"), line("y", "aab")]);
}

#[test]
fn literal_eol_limit_is_split_invariant() {
    let make = || build(|b| b.eol("--").max_length(3));
    let out = assert_split_invariant(make, b"abc--abc-x--");
    assert_eq!(out.frames, vec![line("abc", "--")]);
    assert_eq!(out.error, Some((1, ErrorKind::NoSpace, true)));
}

/// A line that cannot end within the limit is over it as soon as that is
/// certain, whatever the end of line: with `max_length(6)` and a 2-byte
/// literal EOL, seven bytes whose last cannot begin the EOL are over the
/// limit (the verdict the default and regex EOLs give), not an unfinished
/// line that end of input would make a fatal `EPIPE`, and a discarding
/// reader drops them.
#[test]
fn literal_eol_overflow_is_decided_once_certain() {
    // The error of `decode` (else of `decode_eof`), and the bytes left.
    fn verdict(mut c: LineCodec, input: &[u8]) -> (ErrorKind, bool, usize) {
        let mut buf = BytesMut::from(input);
        let e = match c.decode(&mut buf) {
            Err(e) => e,
            Ok(Some(l)) => panic!("unexpected line {l:?}"),
            Ok(None) => c.decode_eof(&mut buf).expect_err("an error at eof"),
        };
        (e.kind(), e.is_fatal(), buf.len())
    }
    for policy in [OverflowPolicy::Fatal, OverflowPolicy::Discard] {
        let default = verdict(build(|b| b.max_length(6).overflow(policy)), b"xxxxxxx");
        assert_eq!(default.0, ErrorKind::NoSpace);
        let literal = |input: &[u8]| {
            verdict(
                build(|b| b.eol("\r\n").max_length(6).overflow(policy)),
                input,
            )
        };
        assert_eq!(literal(b"xxxxxxx"), default, "{policy:?}");
        // The seventh byte may begin the EOL: an unfinished line.
        assert_eq!(literal(b"xxxxxx\r").0, ErrorKind::BrokenPipe, "{policy:?}");
    }
    // Three-byte EOL: past the limit, the bytes left must be a start of it.
    let eol3 = |input: &[u8]| verdict(build(|b| b.eol("abc").max_length(2)), input);
    assert_eq!(eol3(b"xxa").0, ErrorKind::BrokenPipe);
    assert_eq!(eol3(b"xxab").0, ErrorKind::BrokenPipe);
    assert_eq!(eol3(b"xxb").0, ErrorKind::NoSpace);
    assert_eq!(eol3(b"xxaa").0, ErrorKind::NoSpace);
    assert_split_invariant(|| build(|b| b.eol("abc").max_length(2)), b"xxaab");
}

// ---------------------------------------------------------------------------
// Regex EOL

fn regex_codec(re: &str, hold: bool) -> LineCodec {
    build(|b| b.eol_regex(Regex::new(re).unwrap()).hold_open_match(hold))
}

#[test]
fn regex_eol_gives_the_shortest_prefix_and_the_matched_text() {
    let out = run_chunks(regex_codec("[;,]+", false), &[b"one;;two,"]);
    assert_eq!(out.frames, vec![line("one", ";;"), line("two", ",")]);
    assert_eq!(out.eof, Some(Eof::Clean { leftover: vec![] }));
}

#[test]
fn regex_eol_is_split_dependent_like_ae() {
    // Documented: a match cut by the read boundary ends early.
    let out = run_chunks(regex_codec("[;,]+", false), &[b"one;", b";two,"]);
    assert_eq!(
        out.frames,
        vec![line("one", ";"), line("", ";"), line("two", ",")]
    );
    let out = run_chunks(regex_codec(r"\r\n|\n|\r", false), &[b"a\r", b"\nb\n"]);
    assert_eq!(
        out.frames,
        vec![line("a", "\r"), line("", "\n"), line("b", "\n")]
    );
}

#[test]
fn hold_open_match_waits_for_the_byte_after_a_match() {
    let out = assert_split_invariant(|| regex_codec("[;,]+", true), b"one;;two,");
    assert_eq!(out.frames, vec![line("one", ";;"), line("two", ",")]);
    let out = assert_split_invariant(|| regex_codec(r"\r\n|\n|\r", true), b"a\r\nb\rc\n\r");
    assert_eq!(
        out.frames,
        vec![
            line("a", "\r\n"),
            line("b", "\r"),
            line("c", "\n"),
            line("", "\r")
        ]
    );
}

#[test]
fn regex_eol_limit_counts_the_prefix() {
    let mut codec = build(|b| b.eol_regex(Regex::new("[;,]+").unwrap()).max_length(3));
    let mut buf = BytesMut::from("abc;abcd;");
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(line("abc", ";")));
    let err = codec.decode(&mut buf).unwrap_err();
    assert!(err.is_limit() && err.is_fatal());
    let mut buf = BytesMut::from("abcd");
    let mut codec = build(|b| b.eol_regex(Regex::new("[;,]+").unwrap()).max_length(3));
    assert!(codec.decode(&mut buf).is_err());
}

#[test]
fn regex_eol_longer_than_the_limit_is_an_overflow() {
    let make = || {
        build(|b| {
            b.eol_regex(Regex::new(";+").unwrap())
                .hold_open_match(true)
                .max_length(2)
                .overflow(OverflowPolicy::Discard)
        })
    };
    let mut codec = make();
    let mut buf = BytesMut::from("a;;");
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    buf.extend_from_slice(b";");
    // The held-open run of EOL bytes may go on: still dropping.
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert!(codec.is_discarding());
    buf.extend_from_slice(b"b");
    assert!(codec.decode(&mut buf).unwrap_err().is_limit());
    // The whole run of EOL bytes is dropped with the line, however long.
    let events = assert_continuing_invariant(make, b"a;;;;;;;b;");
    assert_eq!(
        events,
        vec![
            Event::Error(ErrorKind::NoSpace, false),
            Event::Frame(line("b", ";")),
            Event::End(Ok(vec![])),
        ]
    );
}

/// A held run of EOL bytes longer than the limit, while discarding, must
/// keep what the regex needs to see the run go on: cut to its last bytes,
/// `;\n*` lost its `;`, and the discard ran on through the next line.
#[test]
fn discarding_a_held_eol_run_longer_than_the_limit_keeps_the_next_line() {
    let make = || {
        build(|b| {
            b.eol_regex(Regex::new(";\n*").unwrap())
                .hold_open_match(true)
                .max_length(2)
                .overflow(OverflowPolicy::Discard)
        })
    };
    let events = assert_continuing_invariant(make, b"aaaa;\n\n\nbb;");
    assert_eq!(
        events,
        vec![
            Event::Error(ErrorKind::NoSpace, false),
            Event::Frame(line("bb", ";")),
            Event::End(Ok(vec![])),
        ]
    );
}

/// Discarding, a held match at the end of the buffer (`b` of `abc|b`)
/// keeps the bytes that may begin a longer match still to end (`abc` at
/// the `a` before it), as the reading path does.
#[test]
fn discarding_keeps_the_start_of_a_longer_eol_before_a_held_one() {
    let make = || {
        build(|b| {
            b.eol_regex(Regex::new("abc|b").unwrap())
                .hold_open_match(true)
                .max_length(3)
                .overflow(OverflowPolicy::Discard)
        })
    };
    let events = assert_continuing_invariant(make, b"xxxxxxxxabcZZb");
    assert_eq!(
        events,
        vec![
            Event::Error(ErrorKind::NoSpace, false),
            Event::Frame(line("ZZ", "b")),
            Event::End(Ok(vec![])),
        ]
    );
}

/// `make()`'s events for `input`, the same whole, split anywhere in two or
/// fed byte by byte, and the same again line by line from a batch codec.
fn assert_regex_eol_events(make: impl Fn() -> LineCodec, input: &[u8], expected: &[Event<Line>]) {
    let events = assert_continuing_invariant(&make, input);
    assert_eq!(events, expected, "whole input");
    for at in 0..=input.len() {
        let (a, b) = input.split_at(at);
        assert_batches_match_lines(&make, &[a, b], 2);
    }
}

/// A regex EOL with look-ahead (`;\b`) is decided by the byte after the
/// match: dropping a line, the `;` at the end of one read is kept until
/// the next shows whether it ends the line, so the next line is not lost.
#[test]
fn discarding_keeps_an_eol_decided_by_the_next_byte() {
    let eol = Regex::new(r";\b").unwrap();
    for hold in [false, true] {
        let make = || {
            build(|b| {
                b.eol_regex(eol.clone())
                    .hold_open_match(hold)
                    .max_length(3)
                    .overflow(OverflowPolicy::Discard)
            })
        };
        assert_regex_eol_events(
            make,
            b"aaaaaa;ok;x",
            &[
                Event::Error(ErrorKind::NoSpace, false),
                Event::Frame(line("ok", ";")),
                Event::End(Err((ErrorKind::BrokenPipe, 1))),
            ],
        );
    }
}

/// A line of `max_length` bytes followed by an EOL that the next byte
/// decides (`;\b`) is not over the limit before that byte arrives.
#[test]
fn a_full_line_before_a_look_ahead_eol_waits_for_the_next_byte() {
    let eol = Regex::new(r";\b").unwrap();
    for hold in [false, true] {
        let make = || build(|b| b.eol_regex(eol.clone()).hold_open_match(hold).max_length(3));
        assert_regex_eol_events(
            make,
            b"abc;x",
            &[
                Event::Frame(line("abc", ";")),
                Event::End(Err((ErrorKind::BrokenPipe, 1))),
            ],
        );
        // A word boundary before a character of several bytes (`é`)
        // waits for all of them.
        let events = assert_continuing_invariant(make, "abc;é;".as_bytes());
        assert_eq!(events[0], Event::Frame(line("abc", ";")));
    }
}

/// Dropping a line, a held EOL match longer than the limit that is whole
/// (`\n    \n` of `\n[ \t]*\n`) still ends the line: the next line is not
/// taken for the rest of it.
#[test]
fn discarding_ends_at_a_held_eol_longer_than_the_limit() {
    let eol = Regex::new(r"\n[ \t]*\n").unwrap();
    for hold in [false, true] {
        let make = || {
            build(|b| {
                b.eol_regex(eol.clone())
                    .hold_open_match(hold)
                    .max_length(3)
                    .overflow(OverflowPolicy::Discard)
            })
        };
        let input = b"abcdef\n    \nok\n\n";
        let expected = [
            Event::Error(ErrorKind::NoSpace, false),
            Event::Frame(line("ok", "\n\n")),
            Event::End(Ok(vec![])),
        ];
        assert_eq!(
            run_continuing(make(), &[&input[..]]),
            expected,
            "hold {hold}"
        );
        // Split inside it, an EOL longer than the limit is past what a
        // dropped line keeps; split anywhere after it, it ends the line.
        for at in 12..=input.len() {
            let (a, b) = input.split_at(at);
            assert_eq!(
                run_continuing(make(), &[a, b]),
                expected,
                "hold {hold}, split at {at}"
            );
            assert_batches_match_lines(make, &[a, b], 2);
        }
    }
}

/// Dropping a line, a held match of an unbounded EOL (`;` of `x;+y|;`)
/// keeps the bytes before it that may begin a longer match still to end
/// (`x;y`), as for an EOL with a longest match.
#[test]
fn discarding_keeps_the_start_of_a_longer_unbounded_eol_before_a_held_one() {
    let make = || {
        build(|b| {
            b.eol_regex(Regex::new("x;+y|;").unwrap())
                .hold_open_match(true)
                .max_length(3)
                .overflow(OverflowPolicy::Discard)
        })
    };
    assert_regex_eol_events(
        make,
        b"aaaaax;ybb;c",
        &[
            Event::Error(ErrorKind::NoSpace, false),
            Event::Frame(line("bb", ";")),
            Event::End(Err((ErrorKind::BrokenPipe, 1))),
        ],
    );
}

/// A match past the limit at the end of a read is no verdict yet when an
/// EOL with a longest match may still begin by the limit (`abc` of
/// `abc|b` before a held `b`) or the match may not stand (`END` of
/// `\bEND\b` before `N`): the next read decides, as for the whole input.
#[test]
fn a_held_match_past_the_limit_waits_for_an_eol_that_may_still_end_the_line() {
    let abc = Regex::new("abc|b").unwrap();
    let end = Regex::new(r"\bEND\b").unwrap();
    for discard in [false, true] {
        let make = || {
            build(|b| {
                b.eol_regex(abc.clone())
                    .hold_open_match(true)
                    .max_length(4)
                    .overflow(policy(discard))
            })
        };
        assert_regex_eol_events(
            make,
            b"accxabcb",
            &[
                Event::Frame(line("accx", "abc")),
                Event::Frame(line("", "b")),
                Event::End(Ok(vec![])),
            ],
        );
        let make = || {
            build(|b| {
                b.eol_regex(end.clone())
                    .hold_open_match(true)
                    .max_length(1)
                    .overflow(policy(discard))
            })
        };
        assert_regex_eol_events(
            make,
            b"ENDN Na",
            &[Event::End(Err((ErrorKind::BrokenPipe, 7)))],
        );
    }
}

proptest! {
    /// A look-ahead EOL gives the same lines, errors and end however the
    /// input is split, dropping lines or not, held or not.
    #[test]
    fn look_ahead_eol_is_split_invariant(
        input in proptest::collection::vec(
            prop::sample::select(vec![&b"a"[..], b";", b" ", "é".as_bytes()]),
            0..40,
        ),
        sizes in proptest::collection::vec(1usize..8, 1..8),
        max in 1usize..8,
        discard in any::<bool>(),
        hold in any::<bool>(),
    ) {
        let input = input.concat();
        let make = || build(|b| b.eol_regex(Regex::new(r";\b").unwrap())
            .hold_open_match(hold).max_length(max).overflow(policy(discard)));
        let chunks = chunked(&input, &sizes);
        let refs: Vec<&[u8]> = chunks.iter().map(|c| &c[..]).collect();
        prop_assert_eq!(run_continuing(make(), &refs), run_continuing(make(), &[&input[..]]));
        assert_batches_match_lines(make, &refs, 3);
    }
}

/// With Unicode off, `\xd7` is the byte 0xD7, not the character U+00D7
/// (bytes C3 97): the bytes that can end a line, taken from the pattern,
/// must hold it, or a short read with the EOL in it is passed over.
#[test]
fn a_regex_eol_built_with_unicode_off_matches_its_high_bytes() {
    for (pattern, eol) in [
        (r"\xd7", b'\xd7'),
        (r"[\xd7\xf7]", b'\xf7'),
        (r"\xf7+", b'\xf7'),
    ] {
        let re = regex::bytes::RegexBuilder::new(pattern)
            .unicode(false)
            .build()
            .unwrap();
        let make = || build(|b| b.eol_regex(re.clone()));
        let input = [&b"ab"[..], &[eol], b"cd", &[eol]].concat();
        let out = assert_split_invariant(make, &input);
        let lines: Vec<_> = out.frames.iter().map(|l| l.line().to_vec()).collect();
        assert_eq!(lines, [b"ab", b"cd"], "{pattern}");
        assert_eq!(out.eof, Some(Eof::Clean { leftover: vec![] }), "{pattern}");
        // The encoder's check that its terminator is a whole EOL agrees.
        let built = LineCodec::builder()
            .eol_regex(re.clone())
            .write_terminator([eol])
            .build();
        assert!(built.is_ok(), "{pattern}: {:?}", built.err());
    }
}

#[test]
fn hold_open_match_takes_the_held_match_at_eof() {
    let out = assert_split_invariant(|| regex_codec("[;,]+", true), b"x;,");
    assert_eq!(out.frames, vec![line("x", ";,")]);
    assert_eq!(out.eof, Some(Eof::Clean { leftover: vec![] }));
}

fn hold_open_alphabet() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![
            Just(b'a'),
            Just(b'b'),
            Just(b';'),
            Just(b','),
            Just(b'\r'),
            Just(b'\n')
        ],
        0..64,
    )
}

proptest! {
    #[test]
    fn hold_open_semicolons_are_split_invariant(
        input in hold_open_alphabet(),
        sizes in proptest::collection::vec(1usize..8, 1..8),
        max in 1usize..12,
        discard in any::<bool>(),
    ) {
        let policy = policy(discard);
        let make = || build(|b| b.eol_regex(Regex::new("[;,]+").unwrap())
            .hold_open_match(true).max_length(max).overflow(policy));
        assert_sized_matches_whole(make, &input, &sizes);
        let chunks = chunked(&input, &sizes);
        let refs: Vec<&[u8]> = chunks.iter().map(|c| &c[..]).collect();
        prop_assert_eq!(run_continuing(make(), &refs), run_continuing(make(), &[&input[..]]));
    }

    #[test]
    fn hold_open_any_newline_is_split_invariant(
        input in hold_open_alphabet(),
        sizes in proptest::collection::vec(1usize..8, 1..8),
        max in 1usize..12,
        discard in any::<bool>(),
    ) {
        let policy = policy(discard);
        let make = || build(|b| b.eol_regex(Regex::new(r"\r\n|\n|\r").unwrap())
            .hold_open_match(true).max_length(max).overflow(policy));
        assert_sized_matches_whole(make, &input, &sizes);
        let chunks = chunked(&input, &sizes);
        let refs: Vec<&[u8]> = chunks.iter().map(|c| &c[..]).collect();
        prop_assert_eq!(run_continuing(make(), &refs), run_continuing(make(), &[&input[..]]));
    }
}

// ---------------------------------------------------------------------------
// Fragmentation properties against a model of the default EOL

/// What the default-EOL decoder must produce for a whole input.
fn model_default(input: &[u8], max: usize, policy: OverflowPolicy) -> Vec<Event<Line>> {
    let mut out = Vec::new();
    let mut rest = input;
    while let Some(lf) = rest.iter().position(|&b| b == b'\n') {
        let cr = lf > 0 && rest[lf - 1] == b'\r';
        let line_len = if cr { lf - 1 } else { lf };
        if line_len > max {
            out.push(Event::Error(
                ErrorKind::NoSpace,
                policy == OverflowPolicy::Fatal,
            ));
            if policy == OverflowPolicy::Fatal {
                return out;
            }
        } else {
            let eol: &[u8] = if cr { b"\r\n" } else { b"\n" };
            out.push(Event::Frame(Line::new(rest[..line_len].to_vec(), eol)));
        }
        rest = &rest[lf + 1..];
    }
    // An unterminated tail overflows if no LF could still end it in time.
    let n = rest.len();
    let over = n > max && (n - max >= 2 || rest[max] != b'\r');
    if over {
        if policy == OverflowPolicy::Fatal {
            out.push(Event::Error(ErrorKind::NoSpace, true));
            return out;
        }
        // Discarded up to the end of input, and reported there.
        out.push(Event::End(Err((ErrorKind::NoSpace, 0))));
    } else if n == 0 {
        out.push(Event::End(Ok(vec![])));
    } else {
        out.push(Event::End(Err((ErrorKind::BrokenPipe, n))));
    }
    out
}

fn crlf_text() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![4 => Just(b'x'), 1 => Just(b'\r'), 1 => Just(b'\n')],
        0..80,
    )
}

proptest! {
    #[test]
    fn default_eol_matches_the_model_under_any_chunking(
        input in crlf_text(),
        sizes in proptest::collection::vec(1usize..10, 1..6),
        max in 0usize..10,
        discard in any::<bool>(),
    ) {
        let policy = policy(discard);
        let make = || build(|b| b.max_length(max).overflow(policy));
        assert_sized_matches_whole(make, &input, &sizes);
        let chunks = chunked(&input, &sizes);
        let refs: Vec<&[u8]> = chunks.iter().map(|c| &c[..]).collect();
        prop_assert_eq!(run_continuing(make(), &refs), model_default(&input, max, policy));
    }

    #[test]
    fn literal_eol_is_split_invariant(
        input in proptest::collection::vec(
            prop_oneof![Just(b'a'), Just(b'b'), Just(b'x')], 0..80),
        sizes in proptest::collection::vec(1usize..10, 1..6),
        max in 0usize..10,
        discard in any::<bool>(),
    ) {
        let policy = policy(discard);
        let make = || build(|b| b.eol("aab").max_length(max).overflow(policy));
        assert_sized_matches_whole(make, &input, &sizes);
        let chunks = chunked(&input, &sizes);
        let refs: Vec<&[u8]> = chunks.iter().map(|c| &c[..]).collect();
        prop_assert_eq!(run_continuing(make(), &refs), run_continuing(make(), &[&input[..]]));
    }

    #[test]
    fn utf8_lines_are_split_invariant(
        text in "(?s)[a\u{e9}\u{1F600}\r\n]{0,40}",
        bad in proptest::option::of(0usize..40),
        sizes in proptest::collection::vec(1usize..6, 1..6),
    ) {
        let mut input = text.into_bytes();
        if let Some(at) = bad {
            let at = at.min(input.len());
            input.insert(at, 0xff);
        }
        let chunks = chunked(&input, &sizes);
        let refs: Vec<&[u8]> = chunks.iter().map(|c| &c[..]).collect();
        prop_assert_eq!(
            run_continuing(Utf8LineCodec::new(), &refs),
            run_continuing(Utf8LineCodec::new(), &[&input[..]])
        );
    }
}

// ---------------------------------------------------------------------------
// Construction

#[test]
fn empty_literal_eol_is_refused() {
    let err = LineCodec::with_eol("").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

/// Refused too: a regex that matches empty only between certain bytes
/// (`\b`), which the empty haystack does not show. Skipping its empty
/// matches would hide a non-empty one at the same place: `\b|;` on `ab;`
/// finds the empty match at 2 and would never see the `;` there.
#[test]
fn regex_eol_matching_empty_is_refused() {
    for re in [
        "x*",
        "",
        "a|",
        "$",
        "(?m)^",
        r"\b",
        r"\b|;",
        r";|\b",
        r"(?-u:\b)",
        r"\bx*",
    ] {
        let err = LineCodec::builder()
            .eol_regex(Regex::new(re).unwrap())
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{re}");
    }
}

// ---------------------------------------------------------------------------
// One-shot decoders (`build_once`): AE's single `line` read request

#[test]
fn once_line_with_empty_eol_completes_at_once_with_empty_line_and_eol() {
    let mut codec = LineCodec::builder().eol("").build_once().unwrap();
    let mut buf = BytesMut::new();
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(line("", "")));
    // With bytes buffered: still ("", ""), nothing consumed.
    let mut codec = LineCodec::builder().eol("").build_once().unwrap();
    let mut buf = BytesMut::from("abc\n");
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(line("", "")));
    assert_eq!(buf, "abc\n");
}

#[test]
fn once_line_with_empty_matching_regex_takes_the_leftmost_match_as_perl() {
    // AE: `s/^(.*?)(x*)//` on "xxab" gives ("", "xx").
    let mut codec = LineCodec::builder()
        .eol_regex(Regex::new("x*").unwrap())
        .build_once()
        .unwrap();
    let mut buf = BytesMut::from("xxab");
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(line("", "xx")));
    assert_eq!(buf, "ab");
    // On an empty buffer: at once, ("", "").
    for re in ["x*", "", "a|", "$", "(?m)^"] {
        let mut codec = LineCodec::builder()
            .eol_regex(Regex::new(re).unwrap())
            .build_once()
            .unwrap();
        let mut buf = BytesMut::new();
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(line("", "")), "{re}");
    }
    // `\b|;` on "ab;": the word boundary at 0, empty, as Perl's
    // `^(.*?)(\b|;)`.
    let mut codec = LineCodec::builder()
        .eol_regex(Regex::new(r"\b|;").unwrap())
        .build_once()
        .unwrap();
    let mut buf = BytesMut::from("ab;");
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(line("", "")));
    assert_eq!(buf, "ab;");
    // `$` on "ab": the whole buffer is the line (the end of the buffer
    // matches), as Perl's `^(.*?)($)`.
    let mut codec = LineCodec::builder()
        .eol_regex(Regex::new("$").unwrap())
        .build_once()
        .unwrap();
    let mut buf = BytesMut::from("ab");
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(line("ab", "")));
}

#[test]
fn once_decoder_refuses_a_second_frame_and_consumes_nothing() {
    let builders: [fn() -> LineCodec; 2] = [
        || LineCodec::builder().build_once().unwrap(),
        || LineCodec::builder().eol("").build_once().unwrap(),
    ];
    for make in builders {
        let mut codec = make();
        let mut buf = BytesMut::from("a\nb\n");
        assert!(codec.decode(&mut buf).unwrap().is_some());
        let left = buf.clone();
        let err = codec.decode(&mut buf).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        // Nothing happened: the stream is still in step for another decoder.
        assert!(!err.is_fatal());
        assert_eq!(buf, left);
        assert_eq!(
            codec.decode_eof(&mut buf).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        assert_eq!(buf, left);
    }
}

#[test]
fn once_decoder_frames_a_normal_line_as_the_stream_decoder_does() {
    let mut once = LineCodec::builder().eol("\r\n").build_once().unwrap();
    let mut buf = BytesMut::from("ab\r");
    assert_eq!(once.decode(&mut buf).unwrap(), None);
    buf.extend_from_slice(b"\ncd");
    assert_eq!(once.decode(&mut buf).unwrap(), Some(line("ab", "\r\n")));
    assert_eq!(buf, "cd");
    let mut utf8 = LineCodec::builder().eol("").build_utf8_once().unwrap();
    assert_eq!(
        utf8.decode(&mut BytesMut::from("x")).unwrap(),
        Some(Utf8Line::new("", ""))
    );
}

#[test]
fn default_eol_undoes_an_earlier_end_of_line_choice_only() {
    let mut codec = build(|b| b.max_length(3).eol(";").default_eol());
    let mut buf = BytesMut::from("a;b\r\nc\nlong\n");
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(line("a;b", "\r\n")));
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(line("c", "\n")));
    // The rest of the configuration stands.
    let err = codec.decode(&mut buf).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoSpace);
}

#[test]
fn write_terminator_must_be_an_eol_of_the_codec() {
    assert!(LineCodec::builder().write_terminator("\r").build().is_err());
    assert!(LineCodec::builder().write_terminator("").build().is_err());
    assert!(
        LineCodec::builder()
            .write_terminator("\r\n")
            .build()
            .is_ok()
    );
    assert!(
        LineCodec::builder()
            .eol("--")
            .write_terminator("-")
            .build()
            .is_err()
    );
}

#[test]
fn utf8_codec_refuses_non_utf8_literal_eol() {
    let err = LineCodec::builder().eol(b"\xff").build_utf8().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

// ---------------------------------------------------------------------------
// Encoder

#[test]
fn encoder_appends_lf_by_default_and_the_literal_as_given() {
    let mut out = BytesMut::new();
    LineCodec::new().encode("abc", &mut out).unwrap();
    build(|b| b.write_terminator("\r\n"))
        .encode(b"def".to_vec(), &mut out)
        .unwrap();
    LineCodec::with_eol("<END>")
        .unwrap()
        .encode(bytes::Bytes::from_static(b"ghi"), &mut out)
        .unwrap();
    assert_eq!(out, "abc\ndef\r\nghi<END>");
}

#[test]
fn encoder_refuses_lines_that_would_not_read_back() {
    let mut codec = LineCodec::new();
    let mut out = BytesMut::from("kept");
    for bad in [&b"a\nb"[..], b"trailing\r"] {
        let err = codec.encode(bad, &mut out).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(!err.is_fatal());
    }
    let mut lit = LineCodec::with_eol("aba").unwrap();
    assert!(lit.encode("xab", &mut out).is_err(), "xab + aba reads as x");
    assert!(lit.encode("has aba", &mut out).is_err());
    assert_eq!(out, "kept", "nothing written on error");
}

/// With a regex EOL, a line must also read back after the terminator of
/// the line before it: under `\n+` an empty line's terminator would join
/// the previous one, and under `\n\r?` a line starting with CR would give
/// its CR to the previous terminator.
#[test]
fn encoder_refuses_lines_that_would_run_into_the_previous_eol() {
    let mut runs = build(|b| b.eol_regex(Regex::new(r"\n+").unwrap()));
    let mut out = BytesMut::new();
    runs.encode("a", &mut out).unwrap();
    let err = runs.encode("", &mut out).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    runs.encode("b", &mut out).unwrap();
    assert_eq!(out, "a\nb\n");
    let mut cr = build(|b| b.eol_regex(Regex::new(r"\n\r?").unwrap()));
    assert!(cr.encode("\rxx", &mut out).is_err());
    cr.encode("x\r", &mut out).unwrap();
    let mut buf = BytesMut::from("a\nx\r\n");
    assert_eq!(cr.decode(&mut buf).unwrap(), Some(line("a", "\n")));
    assert_eq!(cr.decode(&mut buf).unwrap(), Some(line("x\r", "\n")));
}

#[test]
fn encoder_refuses_lines_over_its_write_limit() {
    let mut codec = build(|b| b.write_max_length(Some(3)));
    let mut out = BytesMut::new();
    assert!(codec.encode("abc", &mut out).is_ok());
    let err = codec.encode("abcd", &mut out).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(out, "abc\n");
    assert_eq!(codec.write_max_length(), Some(3));
}

#[test]
fn encoder_is_not_bound_by_the_decoders_limit() {
    // Writing is not reading: the peer has its own limit.
    let mut codec = build(|b| b.max_length(3));
    assert_eq!(codec.write_max_length(), None);
    let mut out = BytesMut::new();
    codec.encode("longer than three", &mut out).unwrap();
    assert_eq!(out, "longer than three\n");
    let big = vec![b'x'; anyframe_codecs::DEFAULT_LINE_MAX_LENGTH + 1];
    LineCodec::new().encode(&big, &mut out).unwrap();
    // Still refused: bytes the decoder would not read back as this line.
    assert!(codec.encode("a\nb", &mut out).is_err());
}

#[test]
fn regex_encoder_needs_a_terminator_the_regex_accepts() {
    let mut out = BytesMut::new();
    // `\n` is accepted by this regex, so it is the default terminator.
    regex_codec(r"\r\n|\n", false)
        .encode("a", &mut out)
        .unwrap();
    // `[;,]+` does not accept `\n`: no default.
    let err = regex_codec("[;,]+", false)
        .encode("a", &mut out)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    // Said as such: the fix is a `write_terminator`, not a different line.
    assert!(err.to_string().contains("no write terminator"), "{err}");
    let mut codec = build(|b| {
        b.eol_regex(Regex::new("[;,]+").unwrap())
            .write_terminator(";")
    });
    codec.encode("b", &mut out).unwrap();
    assert!(codec.encode("c,d", &mut out).is_err());
    assert_eq!(out, "a\nb;");
}

/// Found by the `line` fuzz target: with a regex EOL the decoder counts the
/// EOL match against `max_length`, so a terminator longer than the limit
/// was written and then refused by the same codec's decoder.
#[test]
fn regex_encoder_refuses_a_terminator_its_decoder_would_refuse() {
    let make = || {
        build(|b| {
            b.eol_regex(Regex::new(r"\r\n|\n|\r").unwrap())
                .hold_open_match(true)
                .max_length(0)
        })
    };
    let mut out = BytesMut::new();
    let err = make().encode("", &mut out).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(out.is_empty());
    // What the decoder says about the bytes the encoder used to write.
    let mut buf = BytesMut::from(&b"\n"[..]);
    assert!(make().decode(&mut buf).unwrap_err().is_limit());
    // With room for the terminator both sides agree again.
    let mut codec = build(|b| {
        b.eol_regex(Regex::new(r"\r\n|\n|\r").unwrap())
            .max_length(1)
    });
    codec.encode("", &mut out).unwrap();
    assert_eq!(codec.decode_eof(&mut out).unwrap(), Some(line("", "\n")));
}

proptest! {
    #[test]
    fn default_round_trip(lines in proptest::collection::vec("[^\n]{0,20}", 0..10)) {
        let mut codec = LineCodec::new();
        let mut buf = BytesMut::new();
        let mut expect = Vec::new();
        for l in &lines {
            match codec.encode(l.as_str(), &mut buf) {
                Ok(()) => expect.push(l.clone()),
                Err(e) => {
                    prop_assert!(l.ends_with('\r'));
                    prop_assert_eq!(e.kind(), ErrorKind::InvalidInput);
                }
            }
        }
        let mut got = Vec::new();
        while let Some(frame) = codec.decode_eof(&mut buf).unwrap() {
            prop_assert_eq!(frame.eol(), b"\n");
            got.push(String::from_utf8(frame.into_line().to_vec()).unwrap());
        }
        prop_assert_eq!(got, expect);
    }

    #[test]
    fn literal_round_trip(
        lines in proptest::collection::vec(
            proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), Just(b'c')], 0..12),
            0..10),
    ) {
        let mut codec = LineCodec::with_eol("ab").unwrap();
        let mut buf = BytesMut::new();
        let mut expect = Vec::new();
        for l in &lines {
            if codec.encode(l, &mut buf).is_ok() {
                expect.push(l.clone());
            }
        }
        let mut got = Vec::new();
        while let Some(frame) = codec.decode_eof(&mut buf).unwrap() {
            got.push(frame.into_line().to_vec());
        }
        prop_assert_eq!(got, expect);
    }

    /// Every line decodes to what `str::from_utf8` makes of its bytes,
    /// around the edge of ASCII (0x7f, 0x80) and with broken sequences.
    #[test]
    fn utf8_lines_agree_with_std_from_utf8(
        input in proptest::collection::vec(
            proptest::sample::select(vec![b'a', b'\n', b'\r', 0x7f, 0x80, 0xc3, 0xa9, 0xff]),
            0..60,
        ),
    ) {
        let mut bytes = LineCodec::new();
        let mut utf8 = Utf8LineCodec::new();
        let (mut a, mut b) = (BytesMut::from(&input[..]), BytesMut::from(&input[..]));
        while let Some(frame) = bytes.decode(&mut a).unwrap() {
            let expect = std::str::from_utf8(frame.as_bytes())
                .map(|s| s[..frame.line().len()].to_owned());
            match (utf8.decode(&mut b), expect) {
                (Ok(Some(got)), Ok(want)) => prop_assert_eq!(got.line(), want.as_str()),
                (Err(e), Err(_)) => prop_assert_eq!(e.kind(), ErrorKind::BadMessage),
                (got, want) => prop_assert!(false, "{:?} where std says {:?}", got, want),
            }
            prop_assert_eq!(a.len(), b.len());
        }
    }

    #[test]
    fn utf8_round_trip(lines in proptest::collection::vec("[^\n\r]{0,20}", 0..10)) {
        let mut codec = Utf8LineCodec::new();
        let mut buf = BytesMut::new();
        for l in &lines {
            codec.encode(l, &mut buf).unwrap();
        }
        let mut got = Vec::new();
        while let Some(frame) = codec.decode_eof(&mut buf).unwrap() {
            got.push(frame.into_line());
        }
        prop_assert_eq!(got, lines);
    }
}

// ---------------------------------------------------------------------------
// UTF-8 variant

#[test]
fn utf8_lines_carry_their_eol() {
    let out = assert_split_invariant(Utf8LineCodec::new, "né\r\n😀\n".as_bytes());
    assert_eq!(
        out.frames,
        vec![Utf8Line::new("né", "\r\n"), Utf8Line::new("😀", "\n")]
    );
}

/// The accessors report the configuration the codec was built with, and
/// the discarding state follows an over-long line until its end of line.
#[test]
fn utf8_codec_reports_its_configuration_and_discarding_state() {
    let default = Utf8LineCodec::new();
    assert_eq!(
        default.max_length(),
        anyframe_codecs::DEFAULT_LINE_MAX_LENGTH
    );
    assert_eq!(default.overflow_policy(), OverflowPolicy::Fatal);
    let mut codec = Utf8LineCodec::builder()
        .max_length(3)
        .overflow(OverflowPolicy::Discard)
        .build_utf8()
        .expect("valid configuration");
    assert_eq!(codec.max_length(), 3);
    assert_eq!(codec.overflow_policy(), OverflowPolicy::Discard);
    let mut buf = BytesMut::from("abcdef");
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert!(codec.is_discarding());
    buf.extend_from_slice(b"g\nok\n");
    assert!(codec.decode(&mut buf).unwrap_err().is_limit());
    assert!(!codec.is_discarding());
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap().line(), "ok");
}

#[test]
fn bad_utf8_is_a_non_fatal_error_and_the_line_is_consumed() {
    let mut codec = Utf8LineCodec::new();
    let mut buf = BytesMut::from(&b"ab\xc3(\nok\n"[..]);
    let err = codec.decode(&mut buf).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadMessage);
    assert!(err.is_utf8() && !err.is_fatal());
    assert_eq!(err.offset(), Some(2));
    assert_eq!(buf, "ok\n");
    assert_eq!(
        codec.decode(&mut buf).unwrap(),
        Some(Utf8Line::new("ok", "\n"))
    );
}

#[test]
fn bad_utf8_line_error_is_split_invariant() {
    let make = Utf8LineCodec::new;
    let events = assert_continuing_invariant(make, b"a\n\xe2\x82\n\xe2\x82\xac\n");
    assert_eq!(
        events,
        vec![
            Event::Frame(Utf8Line::new("a", "\n")),
            Event::Error(ErrorKind::BadMessage, false),
            Event::Frame(Utf8Line::new("€", "\n")),
            Event::End(Ok(vec![])),
        ]
    );
}

#[test]
fn utf8_regex_eol_splitting_a_character_is_an_error() {
    // A regex EOL matching the continuation byte of "é" (c3 a9).
    let mut codec = LineCodec::builder()
        .eol_regex(Regex::new(r"(?-u:\xa9)").unwrap())
        .write_terminator("\u{a9}".as_bytes())
        .build_utf8();
    // "\u{a9}" is c2 a9; as a terminator it is matched from its second
    // byte, so it is no whole EOL.
    assert!(codec.is_err());
    codec = LineCodec::builder()
        .eol_regex(Regex::new(r"(?-u:\xa9)").unwrap())
        .build_utf8();
    let mut codec = codec.unwrap();
    let mut buf = BytesMut::from(&b"caf\xc3\xa9rest"[..]);
    let err = codec.decode(&mut buf).unwrap_err();
    assert!(err.is_utf8() && !err.is_fatal());
    assert_eq!(buf, "rest");
}

/// What `Utf8LineCodec` must give: `LineCodec`'s events with each frame
/// checked alone.
fn utf8_model(events: Vec<Event<Line>>) -> Vec<Event<Utf8Line>> {
    events
        .into_iter()
        .map(|e| match e {
            Event::Frame(l) => {
                match (std::str::from_utf8(l.line()), std::str::from_utf8(l.eol())) {
                    (Ok(line), Ok(eol)) => Event::Frame(Utf8Line::new(line, eol)),
                    _ => Event::Error(ErrorKind::BadMessage, false),
                }
            }
            Event::Error(kind, fatal) => Event::Error(kind, fatal),
            Event::End(end) => Event::End(end),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Many lines, some not UTF-8, some over the limit: the frames and
    /// errors of `LineCodec` with each frame checked alone.
    #[test]
    fn utf8_lines_are_line_codec_frames_checked_alone(
        lines in proptest::collection::vec(
            ("[a\u{e9}\u{20ac}\u{1F600} ]{0,60}", proptest::option::of(0usize..70), any::<bool>()),
            0..300,
        ),
        discard in any::<bool>(),
        sizes in proptest::collection::vec(1usize..2000, 1..4),
    ) {
        let mut input = Vec::new();
        for (text, bad, crlf) in &lines {
            let mut l = text.clone().into_bytes();
            if let Some(at) = bad {
                l.insert((*at).min(l.len()), 0xe2);
            }
            input.extend_from_slice(&l);
            input.extend_from_slice(if *crlf { b"\r\n" } else { b"\n" });
        }
        let policy = if discard { OverflowPolicy::Discard } else { OverflowPolicy::Fatal };
        let chunks = chunked(&input, &sizes);
        let refs: Vec<&[u8]> = chunks.iter().map(|c| &c[..]).collect();
        let make = || LineCodec::builder().max_length(200).overflow(policy).clone();
        let want = utf8_model(run_continuing(make().build().unwrap(), &refs));
        prop_assert_eq!(run_continuing(make().build_utf8().unwrap(), &refs), want.clone());
        prop_assert_eq!(run_continuing(make().build_utf8().unwrap(), &[&input[..]]), want);
    }
}

#[test]
fn utf8_codec_shares_the_limits() {
    let mut codec = Utf8LineCodec::builder()
        .max_length(2)
        .overflow(OverflowPolicy::Discard)
        .build_utf8()
        .unwrap();
    let mut buf = BytesMut::from("abc\nde\n");
    assert!(codec.decode(&mut buf).unwrap_err().is_limit());
    assert!(
        !codec.is_discarding(),
        "the line and its EOL are already gone"
    );
    assert_eq!(
        codec.decode(&mut buf).unwrap(),
        Some(Utf8Line::new("de", "\n"))
    );
}

// ---------------------------------------------------------------------------
// LineBatchCodec: LineCodec's lines and errors, many lines per frame

/// A batch run as the line-by-line events it stands for, checking each
/// batch against the cap on the way.
fn flatten(events: Vec<Event<LineBatch>>, max_lines: usize) -> Vec<Event<Line>> {
    let mut out = Vec::new();
    for event in events {
        match event {
            Event::Frame(batch) => {
                assert!(!batch.is_empty() && batch.len() <= max_lines, "{batch:?}");
                out.extend(batch.into_iter().map(Event::Frame));
            }
            Event::Error(kind, fatal) => out.push(Event::Error(kind, fatal)),
            Event::End(end) => out.push(Event::End(end)),
        }
    }
    out
}

/// The batch codec over `make()`'s configuration, fed `chunks`, must give
/// the lines and errors `make()` gives line by line, in the same order.
/// Returns those events.
fn assert_batches_match_lines<C: AsRef<[u8]>>(
    make: impl Fn() -> LineCodec,
    chunks: &[C],
    max_lines: usize,
) -> Vec<Event<Line>> {
    let refs: Vec<&[u8]> = chunks.iter().map(AsRef::as_ref).collect();
    let lines = run_continuing(make(), &refs);
    let batched = LineBatchCodec::from(make()).with_max_lines(max_lines);
    assert_eq!(
        flatten(run_continuing(batched, &refs), max_lines),
        lines,
        "chunks {refs:?}, max_lines {max_lines}"
    );
    lines
}

/// The overflow policy a proptest's `discard` flag stands for.
fn policy(discard: bool) -> OverflowPolicy {
    if discard {
        OverflowPolicy::Discard
    } else {
        OverflowPolicy::Fatal
    }
}

#[test]
fn batch_takes_every_complete_line_and_leaves_the_partial_one() {
    let mut codec = LineBatchCodec::new();
    let mut buf = BytesMut::from(&b"a\r\nbb\n\nccc"[..]);
    let batch = codec.decode(&mut buf).unwrap().unwrap();
    assert_eq!(batch.len(), 3);
    assert_eq!(batch.as_bytes(), b"a\r\nbb\n\n");
    let parts: Vec<(&[u8], &[u8])> = batch.iter().map(|l| (l.line(), l.eol())).collect();
    assert_eq!(
        parts,
        [(&b"a"[..], &b"\r\n"[..]), (b"bb", b"\n"), (b"", b"\n")]
    );
    assert_eq!(&buf[..], b"ccc");
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    buf.extend_from_slice(b"c\n");
    let batch = codec.decode(&mut buf).unwrap().unwrap();
    assert_eq!(batch.to_line(0).unwrap(), Line::new("cccc", "\n"));
    assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
}

/// A batch holds nothing of the partial line after it: the codec's state
/// describes no bytes left in the buffer, so a read of another kind may
/// take them and the same codec goes on in step (docs/semantics.md §4,
/// *Decoders you keep*).
#[test]
fn batch_codec_holds_nothing_of_the_line_after_its_batch() {
    let mut codec = LineBatchCodec::new();
    let mut buf = BytesMut::from(&b"one\nabc"[..]);
    let batch = codec.decode(&mut buf).unwrap().unwrap();
    assert_eq!(batch.len(), 1);
    // Another reader takes 4 bytes: `abc` and the `d` that came next.
    buf.extend_from_slice(b"d\nxy\nzz\n");
    let _ = buf.split_to(4);
    let batch = codec.decode(&mut buf).unwrap().unwrap();
    let lines: Vec<&[u8]> = batch.iter().map(|l| l.line()).collect();
    assert_eq!(lines, [&b""[..], b"xy", b"zz"]);
}

#[test]
fn batch_accessors_agree() {
    let mut buf = BytesMut::from(&b"one\ntwo\r\nthree\n"[..]);
    let batch = LineBatchCodec::new().decode(&mut buf).unwrap().unwrap();
    let owned: Vec<Line> = (0..batch.len())
        .map(|i| batch.to_line(i).unwrap())
        .collect();
    assert_eq!(
        owned,
        [line("one", "\n"), line("two", "\r\n"), line("three", "\n")]
    );
    assert!(batch.get(3).is_none() && batch.to_line(3).is_none());
    // Borrowed, reversed, by value: the same lines.
    let back: Vec<&[u8]> = batch.iter().rev().map(|l| l.as_bytes()).collect();
    assert_eq!(back, [&b"three\n"[..], b"two\r\n", b"one\n"]);
    assert_eq!(batch.iter().len(), 3);
    // From both ends at once: they meet in the middle.
    let mut both = batch.iter();
    assert_eq!(both.next().unwrap().line(), b"one");
    assert_eq!(both.next_back().unwrap().line(), b"three");
    assert_eq!(both.len(), 1);
    assert_eq!(both.next_back().unwrap().as_bytes(), b"two\r\n");
    assert!(both.next().is_none() && both.next_back().is_none());
    let by_ref: Vec<Line> = (&batch)
        .into_iter()
        .map(|l| Line::new(l.line().to_vec(), l.eol()))
        .collect();
    assert_eq!(by_ref, owned);
    assert_eq!(batch.clone().into_iter().collect::<Vec<_>>(), owned);
    assert_eq!(batch.clone().into_bytes(), "one\ntwo\r\nthree\n");
    assert_eq!(
        format!("{:?}", batch.get(1).unwrap()),
        r#"LineRef { line: b"two", eol: b"\r\n" }"#
    );
}

#[test]
fn batch_lines_share_the_read_buffer() {
    let mut buf = BytesMut::with_capacity(64);
    buf.extend_from_slice(b"first\nsecond\n");
    let base = buf.as_ptr() as usize;
    let batch = LineBatchCodec::new().decode(&mut buf).unwrap().unwrap();
    assert_eq!(batch.as_bytes().as_ptr() as usize, base);
    let second = batch.to_line(1).unwrap();
    assert_eq!(second.as_bytes().as_ptr() as usize, base + 6);
    let owned: Vec<Line> = batch.into_iter().collect();
    assert_eq!(owned[1].line().as_ptr() as usize, base + 6);
}

#[test]
fn batch_respects_its_cap() {
    let mut codec = LineBatchCodec::new().with_max_lines(2);
    assert_eq!(codec.max_lines(), 2);
    assert_eq!(LineBatchCodec::new().max_lines(), DEFAULT_BATCH_LINES);
    let mut buf = BytesMut::from(&b"1\n2\n3\n4\n5\n"[..]);
    let sizes: Vec<usize> = std::iter::from_fn(|| codec.decode(&mut buf).unwrap())
        .map(|b| b.len())
        .collect();
    assert_eq!(sizes, [2, 2, 1]);
}

#[test]
#[should_panic(expected = "at least one line")]
fn batch_cap_of_zero_is_refused() {
    let _ = LineBatchCodec::new().with_max_lines(0);
}

#[test]
fn overflow_after_lines_comes_after_them() {
    let make = || build(|b| b.max_length(3));
    let mut codec = LineBatchCodec::from(make());
    let mut buf = BytesMut::from(&b"ab\ncd\ntoo long\nx\n"[..]);
    let batch = codec.decode(&mut buf).unwrap().unwrap();
    assert_eq!(batch.as_bytes(), b"ab\ncd\n");
    let err = codec.decode(&mut buf).unwrap_err();
    assert!(err.is_limit() && err.is_fatal());
    // Fatal: nothing of the long line was consumed.
    assert_eq!(&buf[..], b"too long\nx\n");
}

#[test]
fn discarded_overflow_goes_on_with_the_next_lines() {
    let make = || build(|b| b.max_length(3).overflow(OverflowPolicy::Discard));
    let input = b"ab\ntoo long\ncd\nef\n";
    // The batches depend on the split, their lines do not.
    for at in 0..=input.len() {
        let (a, b) = input.split_at(at);
        assert_batches_match_lines(make, &[a, b], DEFAULT_BATCH_LINES);
    }
    let events = run_continuing(LineBatchCodec::from(make()), &[input]);
    assert_eq!(
        flatten(events, DEFAULT_BATCH_LINES),
        vec![
            Event::Frame(line("ab", "\n")),
            Event::Error(ErrorKind::NoSpace, false),
            Event::Frame(line("cd", "\n")),
            Event::Frame(line("ef", "\n")),
            Event::End(Ok(vec![])),
        ]
    );
}

#[test]
fn input_ending_inside_a_line_fails_after_the_complete_ones() {
    let mut codec = LineBatchCodec::new();
    let mut buf = BytesMut::from(&b"done\npart"[..]);
    let batch = codec.decode_eof(&mut buf).unwrap().unwrap();
    assert_eq!(batch.as_bytes(), b"done\n");
    let err = codec.decode_eof(&mut buf).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrokenPipe);
    assert_eq!((err.seen(), &buf[..]), (Some(4), &b"part"[..]));
}

#[test]
fn batch_codec_hands_back_its_line_codec_mid_line() {
    let mut codec = LineBatchCodec::from(build(|b| b.eol(";").max_length(64)));
    let mut buf = BytesMut::from(&b"a;hal"[..]);
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap().len(), 1);
    assert!(codec.decode(&mut buf).unwrap().is_none());
    assert_eq!(codec.line_codec().max_length(), 64);
    let mut lines = codec.into_line_codec();
    assert_eq!(lines.max_length(), 64);
    buf.extend_from_slice(b"f;");
    assert_eq!(lines.decode(&mut buf).unwrap(), Some(line("half", ";")));
}

#[test]
fn a_default_batch_is_empty_and_a_batch_counts_and_shows_its_lines() {
    let empty = LineBatch::default();
    assert!(empty.is_empty());
    assert_eq!((empty.len(), empty.get(0).is_none()), (0, true));
    let mut buf = BytesMut::from("a\nb\r\n");
    let batch = LineBatchCodec::new().decode(&mut buf).unwrap().unwrap();
    assert!(!batch.is_empty());
    // Both iterators know their length.
    assert_eq!(
        (batch.iter().len(), batch.clone().into_iter().len()),
        (2, 2)
    );
    // Shown as its lines, each as `Line` shows one.
    assert_eq!(
        format!("{batch:?}"),
        r#"[LineRef { line: b"a", eol: b"\n" }, LineRef { line: b"b", eol: b"\r\n" }]"#
    );
    assert_eq!(format!("{empty:?}"), "[]");
}

#[test]
fn batch_encoder_writes_one_line() {
    let mut out = BytesMut::new();
    LineBatchCodec::new().encode("hi", &mut out).unwrap();
    assert_eq!(out, "hi\n");
    assert!(LineBatchCodec::new().encode("a\nb", &mut out).is_err());
    assert_eq!(out, "hi\n");
}

proptest! {
    #[test]
    fn batches_are_the_default_eol_lines(
        input in crlf_text(),
        sizes in proptest::collection::vec(1usize..20, 1..6),
        max in 0usize..10,
        discard in any::<bool>(),
        max_lines in 1usize..5,
    ) {
        let policy = policy(discard);
        let lines = assert_batches_match_lines(
            || build(|b| b.max_length(max).overflow(policy)),
            &chunked(&input, &sizes),
            max_lines,
        );
        // And, through the model, whatever the chunking.
        prop_assert_eq!(lines, model_default(&input, max, policy));
    }

    #[test]
    fn batches_are_the_literal_eol_lines(
        input in proptest::collection::vec(
            prop_oneof![Just(b'a'), Just(b'b'), Just(b'x')], 0..80),
        sizes in proptest::collection::vec(1usize..20, 1..6),
        max in 0usize..10,
        discard in any::<bool>(),
        max_lines in 1usize..5,
    ) {
        assert_batches_match_lines(
            || build(|b| b.eol("aab").max_length(max).overflow(policy(discard))),
            &chunked(&input, &sizes),
            max_lines,
        );
    }

    #[test]
    fn batches_are_the_regex_eol_lines(
        input in hold_open_alphabet(),
        sizes in proptest::collection::vec(1usize..20, 1..6),
        max in 1usize..12,
        discard in any::<bool>(),
        hold in any::<bool>(),
        max_lines in 1usize..5,
    ) {
        // Split-dependent, but the same chunks give the same lines.
        assert_batches_match_lines(
            || build(|b| b.eol_regex(Regex::new(r"[;,]+|\r?\n").unwrap())
                .hold_open_match(hold).max_length(max).overflow(policy(discard))),
            &chunked(&input, &sizes),
            max_lines,
        );
    }
}

// ---------------------------------------------------------------------------
// The regex end of line resumes its search: same lines as a full rescan

/// The regex end of line as it was before its search resumed: the regex
/// over the whole buffered line on every call with new bytes.
struct RescanEol {
    re: Regex,
    hold_open: bool,
    max: usize,
    scanned: usize,
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Line(Vec<u8>, Vec<u8>),
    NeedMore,
    Error(ErrorKind),
}

impl RescanEol {
    fn step(&mut self, buf: &mut BytesMut, eof: bool) -> Step {
        let len = buf.len();
        if !eof && self.scanned == len {
            return Step::NeedMore;
        }
        let found = self
            .re
            .find_iter(buf)
            .find(|m| !m.is_empty())
            .map(|m| (m.start(), m.end()));
        match found {
            // Past the limit, but an EOL that begins before this one, by
            // the limit, may still end (or a look-ahead undo this one):
            // wait.
            Some((s, e)) if s > self.max || e - s > self.max => {
                let pending = len.saturating_sub(self.open_reach());
                let undone = self.reach().1 > 0;
                if !eof && pending <= self.max && (pending < s || (undone && pending <= s)) {
                    self.scanned = len;
                    Step::NeedMore
                } else {
                    Step::Error(ErrorKind::NoSpace)
                }
            }
            // Held: the match ends where the input does, or before a
            // character still arriving that a look-ahead reads (the lead
            // byte of `é` after `é\b`).
            Some((_, e)) if self.hold_open && !eof && (e == len || self.cut_after(buf, e)) => {
                self.scanned = len;
                Step::NeedMore
            }
            Some((s, e)) => {
                self.scanned = 0;
                let frame = buf.split_to(e);
                Step::Line(frame[..s].to_vec(), frame[s..].to_vec())
            }
            // A line of `max` bytes may be followed by the start of its
            // EOL: one byte less than the longest EOL the regex matches,
            // and the character after it that a look-ahead (`\b`) reads.
            // At end of input the same bytes are an unfinished line.
            None if len > self.max + self.open_reach() => Step::Error(ErrorKind::NoSpace),
            None => {
                self.scanned = len;
                Step::NeedMore
            }
        }
    }

    /// The bytes after a match ending at `end` begin a character cut
    /// short, which a look-ahead of more than one byte reads.
    fn cut_after(&self, buf: &[u8], end: usize) -> bool {
        let look_ahead = self.reach().1;
        look_ahead > 1
            && buf.len() - end < look_ahead
            && matches!(
                std::str::from_utf8(&buf[end..]),
                Err(e) if e.valid_up_to() == 0 && e.error_len().is_none()
            )
    }

    fn open_reach(&self) -> usize {
        let (max_len, look_ahead) = self.reach();
        max_len.map_or(0, |max| (max + look_ahead).saturating_sub(1))
    }

    /// The longest match of the pattern, and how many bytes after a match
    /// a closing look-ahead reads.
    fn reach(&self) -> (Option<usize>, usize) {
        let hir = regex_syntax::ParserBuilder::new()
            .utf8(false)
            .build()
            .parse(self.re.as_str())
            .expect("the pattern parses");
        use regex_syntax::hir::Look;
        // Bytes a `\b` that may close a match reads after it: a byte in
        // ASCII, a character (up to 4 bytes) in Unicode. `^`, `$` and the
        // like never need a byte still to come to match.
        fn at_end(hir: &regex_syntax::hir::Hir) -> Vec<Look> {
            use regex_syntax::hir::HirKind;
            match hir.kind() {
                HirKind::Look(look) => vec![*look],
                HirKind::Repetition(rep) => at_end(&rep.sub),
                HirKind::Capture(cap) => at_end(&cap.sub),
                HirKind::Alternation(subs) => subs.iter().flat_map(at_end).collect(),
                HirKind::Concat(subs) => {
                    let mut looks = Vec::new();
                    for sub in subs.iter().rev() {
                        looks.extend(at_end(sub));
                        if sub.properties().minimum_len() != Some(0) {
                            break;
                        }
                    }
                    looks
                }
                _ => Vec::new(),
            }
        }
        let look_ahead = at_end(&hir)
            .into_iter()
            .map(|look| match look {
                Look::Start
                | Look::End
                | Look::StartLF
                | Look::EndLF
                | Look::StartCRLF
                | Look::EndCRLF
                | Look::WordStartHalfAscii
                | Look::WordStartHalfUnicode => 0,
                Look::WordAscii
                | Look::WordAsciiNegate
                | Look::WordStartAscii
                | Look::WordEndAscii
                | Look::WordEndHalfAscii => 1,
                _ => 4,
            })
            .max()
            .unwrap_or(0);
        (hir.properties().maximum_len(), look_ahead)
    }
}

/// Feeds `chunks`, decoding after each until more is needed, then at end
/// of input; the first error ends the run.
fn eol_steps(chunks: &[&[u8]], mut step: impl FnMut(&mut BytesMut, bool) -> Step) -> Vec<Step> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let ends = chunks.iter().map(|c| (*c, false)).chain([(&b""[..], true)]);
    for (chunk, eof) in ends {
        buf.extend_from_slice(chunk);
        loop {
            let s = step(&mut buf, eof);
            out.push(s.clone());
            match s {
                Step::Line(..) => {}
                Step::Error(_) => return out,
                Step::NeedMore => break,
            }
        }
    }
    out
}

fn eol_pattern() -> impl Strategy<Value = String> {
    support::regex_grammar(vec![
        ";", ",", r"\n", r"\r", "[;,]", ".", r"\b", "$", "(?m:^)", "é", r"\w", "a",
    ])
}

proptest! {
    // Many generated patterns can match empty text and are refused: those
    // cases are rejected, not counted.
    #![proptest_config(ProptestConfig {
        max_global_rejects: 1 << 20,
        ..ProptestConfig::with_cases(1000)
    })]

    #[test]
    fn regex_eol_resumed_gives_the_lines_of_a_full_rescan(
        pattern in eol_pattern(),
        input in proptest::collection::vec(
            prop::sample::select(vec![&b"a"[..], b";", b",", b"\n", b"\r", "é".as_bytes(), b" "]),
            0..40,
        ),
        sizes in proptest::collection::vec(1usize..6, 1..12),
        hold_open in any::<bool>(),
        max in prop::sample::select(vec![3usize, 1 << 20]),
    ) {
        let re = Regex::new(&pattern).unwrap();
        // Refused when it can match empty text.
        let codec = LineCodec::builder()
            .eol_regex(re.clone())
            .hold_open_match(hold_open)
            .max_length(max)
            .build();
        prop_assume!(codec.is_ok());
        let mut codec = codec.unwrap();
        let input = input.concat();
        let chunks = chunked(&input, &sizes);
        let chunks: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        let ours = eol_steps(&chunks, |buf, eof| {
            let r = if eof { codec.decode_eof(buf) } else { codec.decode(buf) };
            match r {
                Ok(Some(l)) => Step::Line(l.line().to_vec(), l.eol().to_vec()),
                Ok(None) => Step::NeedMore,
                Err(e) if e.kind() == ErrorKind::BrokenPipe => Step::NeedMore,
                Err(e) => Step::Error(e.kind()),
            }
        });
        let mut model = RescanEol { re, hold_open, max, scanned: 0 };
        let theirs = eol_steps(&chunks, |buf, eof| model.step(buf, eof));
        prop_assert_eq!(ours, theirs);
    }
}

proptest! {
    /// The encoder writes a line exactly when a decoder with the same end of
    /// line reads that line back from what was written, and writes nothing
    /// otherwise: for the default end of line with either terminator, and
    /// for a literal one, over lines made of the bytes that matter.
    #[test]
    fn encoded_lines_read_back_or_are_refused(
        line in proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'\r'), Just(b'\n')], 0..8),
        which in 0..3usize,
    ) {
        let mut codec = match which {
            0 => LineCodec::new(),
            1 => build(|b| b.write_terminator("\r\n")),
            _ => build(|b| b.eol("\r\n")),
        };
        let term: &[u8] = if which == 0 { b"\n" } else { b"\r\n" };
        let mut out = BytesMut::from(&b"x"[..]);
        out.extend_from_slice(term);
        let before = out.len();
        let encoded = codec.encode(&line[..], &mut out);
        let mut reader = codec.clone();
        let mut back = out.clone();
        let _ = reader.decode(&mut back).unwrap();
        let read_back = reader.decode(&mut back).ok().flatten();
        let expected_ok = read_back.as_ref().is_some_and(|l| l.line() == &line[..]) && back.is_empty();
        match encoded {
            Ok(()) => prop_assert!(expected_ok, "wrote {:?}, reads back as {:?}", out, read_back),
            Err(_) => {
                prop_assert_eq!(out.len(), before, "nothing written on error");
                let mut probe = BytesMut::from(&line[..]);
                probe.extend_from_slice(term);
                let mut r = codec.clone();
                let l = r.decode(&mut probe).ok().flatten();
                prop_assert!(
                    !(l.is_some_and(|l| l.line() == &line[..]) && probe.is_empty()),
                    "refused {:?} although it reads back", line
                );
            }
        }
    }
}
