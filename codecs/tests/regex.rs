//! RegexCodec: AE's accept / reject / skip order, the documented
//! split-dependence on fixed splits, the scan window, errors.

mod support;

#[path = "support/rescan.rs"]
mod rescan;

use anyframe_codecs::{ErrorKind, RegexCodec};
use bytes::BytesMut;
use proptest::prelude::*;
use regex::bytes::Regex;
use rescan::{RescanModel, Step, chunk};
use support::{Eof, assert_sized_matches_whole, assert_split_invariant, run_chunks};
use tokio_util::codec::Decoder;

fn re(s: &str) -> Regex {
    Regex::new(s).expect("valid regex")
}

fn accept(s: &str) -> RegexCodec {
    RegexCodec::new(re(s)).expect("valid accept")
}

#[test]
fn frame_is_everything_up_to_the_end_of_the_accept_match() {
    let out = assert_split_invariant(|| accept("\n"), b"one\ntwo\n\nrest");
    assert_eq!(out.frames, vec!["one\n", "two\n", "\n"]);
    assert_eq!(
        out.eof,
        Some(Eof::Error {
            kind: ErrorKind::BrokenPipe,
            leftover: 4
        })
    );
}

#[test]
fn accept_matches_anywhere_and_takes_the_leftmost_match() {
    let mut codec = accept("[0-9]+;");
    let mut buf = BytesMut::from("abc12;x34;");
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), "abc12;");
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), "x34;");
}

#[test]
fn accept_is_split_dependent_as_in_ae() {
    // Documented: what matches depends on what has arrived.
    let whole = run_chunks(accept("ab|a"), &[b"ab"]);
    assert_eq!(whole.frames, vec!["ab"]);
    let split = run_chunks(accept("ab|a"), &[b"a", b"b"]);
    assert_eq!(split.frames, vec!["a"]);
    assert_eq!(
        split.eof,
        Some(Eof::Error {
            kind: ErrorKind::BrokenPipe,
            leftover: 1
        })
    );
}

#[test]
fn accept_match_straddling_the_skip_boundary_is_missed_rt_regex_1() {
    let make = || {
        RegexCodec::builder(re("END"))
            .skip(re("^.*"))
            .build()
            .unwrap()
    };
    // In one piece, the first END is found.
    let out = run_chunks(make(), &[b"xxEND..END"]);
    assert_eq!(out.frames, vec!["xxEND", "..END"]);
    // "xxEN" is skipped whole, so the first END is never seen.
    let out = run_chunks(make(), &[b"xxEN", b"D..END"]);
    assert_eq!(out.frames, vec!["xxEND..END"]);
}

#[test]
fn reject_is_only_tried_when_accept_fails_rt_regex_2() {
    let make = || {
        RegexCodec::builder(re("\n"))
            .reject(re(r"\x00"))
            .build()
            .unwrap()
    };
    // A complete record containing NUL is accepted.
    let out = run_chunks(make(), &[b"a\0b\n"]);
    assert_eq!(out.frames, vec!["a\0b\n"]);
    // The NUL arriving before the terminator is rejected.
    let out = run_chunks(make(), &[b"a\0", b"b\n"]);
    assert_eq!(out.frames, Vec::<bytes::Bytes>::new());
    assert_eq!(out.error, Some((0, ErrorKind::BadMessage, false)));
}

/// RT-regex-3's recovery: the caller skips the bytes reject matched and
/// calls again. The codec keeps nothing from the rejected scan, so what
/// arrives next is judged afresh, as a new codec would.
#[test]
fn after_a_reject_the_caller_may_skip_bytes_and_go_on() {
    use bytes::Buf;
    let codec = || {
        RegexCodec::builder(re(";"))
            .reject(re("X"))
            .build()
            .unwrap()
    };
    // Skipped, then as many bytes arrive as were skipped.
    let mut c = codec();
    let mut buf = BytesMut::from("X");
    assert!(c.decode(&mut buf).is_err());
    buf.advance(1);
    buf.extend_from_slice(b"a");
    assert_eq!(c.decode(&mut buf).unwrap(), None);
    // Cleared, then more bytes than were skipped, holding a record.
    let mut c = codec();
    let mut buf = BytesMut::from("aaaaaaaaaaX");
    assert!(c.decode(&mut buf).is_err());
    buf.clear();
    buf.extend_from_slice(b";bbbbbbbbbbbb");
    assert_eq!(c.decode(&mut buf).unwrap().unwrap(), ";");
    // The same after ENOSPC (more than max_length without a record).
    let mut c = RegexCodec::builder(re(";")).max_length(4).build().unwrap();
    let mut buf = BytesMut::from("aaaaa");
    assert_eq!(c.decode(&mut buf).unwrap_err().kind(), ErrorKind::NoSpace);
    buf.advance(3);
    buf.extend_from_slice(b";");
    assert_eq!(c.decode(&mut buf).unwrap().unwrap(), "aa;");
}

#[test]
fn reject_consumes_nothing_and_repeats_until_accept_rt_regex_3() {
    let mut codec = RegexCodec::builder(re("\n"))
        .reject(re("!"))
        .build()
        .unwrap();
    let mut buf = BytesMut::from("ab!");
    let err = codec.decode(&mut buf).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadMessage);
    assert!(!err.is_fatal());
    assert_eq!(err.offset(), Some(2));
    assert_eq!(buf, "ab!");
    // No new bytes: the same answer.
    assert!(codec.decode(&mut buf).is_err());
    // New bytes: scanned again; still rejected.
    buf.extend_from_slice(b"c");
    assert!(codec.decode(&mut buf).is_err());
    // EOF: EPIPE, fatal, with everything still buffered... unless accept
    // matches, which it now does.
    buf.extend_from_slice(b"\n");
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), "ab!c\n");
    let mut buf = BytesMut::from("x!");
    let mut codec = RegexCodec::builder(re("\n"))
        .reject(re("!"))
        .build()
        .unwrap();
    assert!(codec.decode(&mut buf).is_err());
    let err = codec.decode_eof(&mut buf);
    assert_eq!(err.unwrap_err().kind(), ErrorKind::BadMessage);
}

#[test]
fn skipped_bytes_stay_in_the_buffer_and_in_the_frame() {
    let mut codec = RegexCodec::builder(re(";"))
        .skip(re("^x+"))
        .build()
        .unwrap();
    let mut buf = BytesMut::from("xxx");
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert_eq!(codec.skipped(), 3);
    assert_eq!(buf, "xxx", "skip does not consume");
    // A cancelled request (the codec dropped) loses nothing.
    drop(codec);
    assert_eq!(buf, "xxx");

    let mut codec = RegexCodec::builder(re(";"))
        .skip(re("^x+"))
        .build()
        .unwrap();
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    buf.extend_from_slice(b"a;b");
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), "xxxa;");
    assert_eq!(codec.skipped(), 0);
    assert_eq!(buf, "b");
}

/// A reject ends the scan: skip does not move the window past the bad
/// bytes (the caller may remove them itself), so they are rejected again
/// until a record ends, as AE raises the error again on each arrival.
#[test]
fn a_reject_leaves_no_skip_progress() {
    let mut codec = RegexCodec::builder(re(";"))
        .reject(re("!"))
        .skip(re("^[^;]*"))
        .build()
        .unwrap();
    let mut buf = BytesMut::from("ab!");
    assert!(codec.decode(&mut buf).is_err());
    assert_eq!(codec.skipped(), 0);
    buf.extend_from_slice(b"c");
    assert!(codec.decode(&mut buf).is_err());
    buf.extend_from_slice(b";");
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), "ab!c;");
}

#[test]
fn partial_record_at_eof_is_broken_pipe_with_skipped_bytes_kept() {
    let mut codec = RegexCodec::builder(re(";"))
        .skip(re("^x+"))
        .build()
        .unwrap();
    let mut buf = BytesMut::from("xxab");
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    let err = codec.decode_eof(&mut buf).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrokenPipe);
    assert!(err.is_fatal());
    assert_eq!(err.seen(), Some(4));
    assert_eq!(buf, "xxab");
}

#[test]
fn more_than_the_window_without_accept_is_fatal_no_space() {
    let make = || RegexCodec::builder(re(";")).max_length(8).build().unwrap();
    let mut codec = make();
    let mut buf = BytesMut::from("0123456789");
    let err = codec.decode(&mut buf).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoSpace);
    assert!(err.is_fatal() && err.is_limit());
    assert_eq!(buf.len(), 10, "nothing consumed");
    // A match inside the window is still taken.
    let out = assert_split_invariant(make, b"0123456;89abcdefgh;");
    assert_eq!(out.frames, vec!["0123456;"]);
    assert_eq!(out.error, Some((1, ErrorKind::NoSpace, true)));
}

/// Refused too: an accept regex that matches empty only between certain
/// bytes (`\b`), which the empty haystack does not show (RT-regex-4, as
/// for a line's end, RT-line-4).
#[test]
fn accept_matching_empty_is_refused() {
    for pattern in ["x*", "", "^", "a?", r"\b", r"a*\b", r";|\b"] {
        let err = RegexCodec::new(re(pattern)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{pattern}");
    }
}

/// At end of input the request runs once more on the window as skip left
/// it (as AE runs it once more on the buffer): `^END` after skip moved past
/// `xx` is a record, not an `EPIPE`.
#[test]
fn at_eof_accept_runs_on_the_window_skip_moved() {
    for accept in ["^END", r"\bEND"] {
        let mut codec = RegexCodec::builder(re(accept))
            .skip(re("^x+"))
            .build()
            .unwrap();
        let mut buf = BytesMut::from(&b"xxEND"[..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None, "{accept}");
        assert_eq!(codec.skipped(), 2);
        let frame = codec.decode_eof(&mut buf).unwrap();
        assert_eq!(frame.as_deref(), Some(&b"xxEND"[..]), "{accept}");
    }
}

#[test]
fn once_accept_matching_empty_completes_at_once() {
    // AE completes a `regex` read whose accept matches "" at once.
    let mut codec = RegexCodec::builder(re("x*")).build_once().unwrap();
    let mut buf = BytesMut::new();
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), "");
    let mut codec = RegexCodec::builder(re("x*")).build_once().unwrap();
    let mut buf = BytesMut::from("xxa");
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), "xx");
    assert_eq!(buf, "a");
    // A second frame is refused, nothing consumed.
    let err = codec.decode(&mut buf).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(!err.is_fatal());
    assert_eq!(buf, "a");
}

#[test]
fn once_codec_frames_a_normal_record_then_refuses() {
    let mut codec = RegexCodec::builder(re(";")).build_once().unwrap();
    let mut buf = BytesMut::from("ab");
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    buf.extend_from_slice(b";c;");
    assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), "ab;");
    assert_eq!(
        codec.decode(&mut buf).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(buf, "c;");
}

#[test]
fn unicode_classes_stop_at_bytes_that_are_not_utf8_and_u_off_reads_bytes() {
    // With Unicode on (the default), `[^\n]` matches a character, so a skip
    // stops at the first byte that is not UTF-8; `(?-u)` matches bytes, as
    // Perl's byte strings do.
    let mut buf = BytesMut::from(&b"ab\xffcd"[..]);
    let mut unicode = RegexCodec::builder(re(";"))
        .skip(re(r"^[^\n]*"))
        .build()
        .unwrap();
    assert_eq!(unicode.decode(&mut buf).unwrap(), None);
    assert_eq!(unicode.skipped(), 2);
    let mut bytes = RegexCodec::builder(re(";"))
        .skip(re(r"(?-u)^[^\n]*"))
        .build()
        .unwrap();
    assert_eq!(bytes.decode(&mut buf).unwrap(), None);
    assert_eq!(bytes.skipped(), 5);
}

#[test]
fn default_limit_is_the_line_limit_when_every_regex_is_bounded() {
    use anyframe_codecs::{
        DEFAULT_LINE_MAX_LENGTH, DEFAULT_REGEX_MAX_LENGTH, DEFAULT_REGEX_UNBOUNDED_MAX_LENGTH,
    };
    assert_eq!(DEFAULT_REGEX_MAX_LENGTH, DEFAULT_LINE_MAX_LENGTH);
    assert_eq!(accept(r"\r\n\r\n").max_length(), DEFAULT_REGEX_MAX_LENGTH);
    let bounded = RegexCodec::builder(re(";"))
        .reject(re(r"\x00"))
        .skip(re(r"^#.{0,80}\n"))
        .build()
        .unwrap();
    assert_eq!(bounded.max_length(), DEFAULT_REGEX_MAX_LENGTH);
    // One unbounded regex (here skip) keeps the smaller window, since it
    // is searched again over the whole window on every arrival.
    let unbounded = RegexCodec::builder(re(";"))
        .skip(re(r"^(?:#[^\n]*\n)+"))
        .build()
        .unwrap();
    assert_eq!(unbounded.max_length(), DEFAULT_REGEX_UNBOUNDED_MAX_LENGTH);
    assert_eq!(
        accept("a+;").max_length(),
        DEFAULT_REGEX_UNBOUNDED_MAX_LENGTH
    );
    // An explicit limit wins.
    let set = RegexCodec::builder(re("a+;"))
        .max_length(10)
        .build()
        .unwrap();
    assert_eq!(set.max_length(), 10);
}

#[test]
fn a_record_over_64_kib_fits_the_default_window_of_a_bounded_accept() {
    // AnyEvent peers send regex-framed records of over 100 KB.
    let mut codec = accept("\r\n\r\n");
    let mut buf = BytesMut::from(&vec![b'h'; 200 * 1024][..]);
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    buf.extend_from_slice(b"\r\n\r\n");
    assert_eq!(
        codec.decode(&mut buf).unwrap().unwrap().len(),
        200 * 1024 + 4
    );
}

#[test]
fn frames_are_split_off_without_copying() {
    let mut codec = accept(";");
    let mut buf = BytesMut::from("ab;cd;");
    let base = buf.as_ptr() as usize;
    let f = codec.decode(&mut buf).unwrap().unwrap();
    assert_eq!(f.as_ptr() as usize, base);
}

proptest! {
    /// A one-byte accept with a skip that cannot swallow it is one of the
    /// split-invariant configurations.
    #[test]
    fn single_byte_accept_with_safe_skip_is_split_invariant(
        input in proptest::collection::vec(
            prop_oneof![Just(b'a'), Just(b';'), Just(b'x')], 0..60),
        max in 1usize..20,
        with_skip in any::<bool>(),
        sizes in proptest::collection::vec(1usize..10, 1..8),
    ) {
        let make = || {
            let mut b = RegexCodec::builder(re(";"));
            b.max_length(max);
            if with_skip {
                b.skip(re("^[^;]+"));
            }
            b.build().unwrap()
        };
        assert_sized_matches_whole(make, &input, &sizes);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        input in proptest::collection::vec(any::<u8>(), 0..64),
        sizes in proptest::collection::vec(1usize..10, 1..8),
    ) {
        let mut codec = RegexCodec::builder(re(r"\r\n\r\n"))
            .reject(re(r"\x00"))
            .skip(re(r"^(?:[^\r]|\r[^\n])*"))
            .max_length(32)
            .build()
            .unwrap();
        let mut buf = BytesMut::new();
        let mut rest = &input[..];
        let mut i = 0;
        while !rest.is_empty() {
            let n = sizes[i % sizes.len()].min(rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            i += 1;
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(f)) => prop_assert!(f.ends_with(b"\r\n\r\n")),
                    Ok(None) => break,
                    Err(e) if e.is_fatal() => return Ok(()),
                    Err(_) => break,
                }
            }
        }
    }
}

/// Feeds `chunks` to `step`, decoding after each until it asks for more or
/// fails; a non-fatal error moves on to the next chunk, a fatal one (and
/// only that: `NoSpace`) ends the run.
fn steps(chunks: &[&[u8]], mut step: impl FnMut(&mut BytesMut) -> Step) -> Vec<Step> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            let s = step(&mut buf);
            out.push(s.clone());
            match s {
                Step::Frame(_) => {}
                Step::Error(ErrorKind::NoSpace, _) => return out,
                _ => break,
            }
        }
    }
    out
}

/// Patterns from a small grammar, bounded and unbounded, with look-around.
fn pattern() -> impl Strategy<Value = String> {
    support::regex_grammar(vec![
        "a", "b", ";", r"\n", "[ab]", "[^a]", ".", r"\b", "^", "$", "(?m:^)", "é", r"\w",
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
    fn resumed_searches_give_what_full_rescans_give(
        accept in pattern(),
        reject in proptest::option::of(pattern()),
        skip in proptest::option::of(pattern()),
        input in proptest::collection::vec(
            prop::sample::select(vec![&b"a"[..], b"b", b";", b"\n", "é".as_bytes(), b" "]),
            0..40,
        ),
        sizes in proptest::collection::vec(1usize..6, 1..12),
        max_length in prop::sample::select(vec![8usize, 1 << 20]),
    ) {
        let accept = re(&accept);
        // Refused when it can match empty text.
        prop_assume!(RegexCodec::new(accept.clone()).is_ok());
        let input = input.concat();
        let mut builder = RegexCodec::builder(accept.clone());
        builder.max_length(max_length);
        if let Some(r) = &reject {
            builder.reject(re(r));
        }
        if let Some(s) = &skip {
            builder.skip(re(s));
        }
        let mut codec = builder.build().unwrap();
        let mut model = RescanModel::new(
            &accept,
            reject.as_deref().map(re).as_ref(),
            skip.as_deref().map(re).as_ref(),
            max_length,
        );
        let chunks = chunk(&input, &sizes);
        let ours = steps(&chunks, |buf| match codec.decode(buf) {
            Ok(Some(frame)) => Step::Frame(frame),
            Ok(None) => Step::NeedMore,
            Err(e) if e.kind() == ErrorKind::NoSpace => Step::Error(e.kind(), None),
            Err(e) => Step::Error(e.kind(), e.offset()),
        });
        let theirs = steps(&chunks, |buf| model.step(buf, false));
        prop_assert_eq!(ours, theirs);
    }
}

/// A builder option a `Regex` does not reveal may make its pattern match
/// empty text where the text read alone does not (free spacing turns
/// `; *` into `;*`): still refused.
#[test]
fn accept_matching_empty_under_builder_options_is_refused() {
    let accept = regex::bytes::RegexBuilder::new("; *")
        .ignore_whitespace(true)
        .build()
        .unwrap();
    let err = RegexCodec::new(accept.clone()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let err = anyframe_codecs::LineCodec::builder()
        .eol_regex(accept)
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}
