//! `RegexCodec`'s resumed searches against a model that searches every
//! regex over the whole window on every call, and how a pattern is read
//! for its longest match, its bytes and whether it can match empty text:
//! whatever builder options made the `Regex` (they do not show in it), a
//! reading may only err on the large side. The property tests run 1,000
//! cases each; `ANYFRAME_REGEX_CASES` asks for more.

use anyframe_codecs::{ErrorKind, LineCodecBuilder, RegexCodec};
use bytes::BytesMut;
use proptest::prelude::*;
use regex::bytes::{Regex, RegexBuilder};
use tokio_util::codec::Decoder;

#[path = "support/rescan.rs"]
mod rescan;
use rescan::{RescanModel, Step, chunk};

fn cases() -> u32 {
    std::env::var("ANYFRAME_REGEX_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000)
}

/// `pattern` built with free spacing (`ignore_whitespace`).
fn spaced(pattern: &str) -> Regex {
    RegexBuilder::new(pattern)
        .ignore_whitespace(true)
        .build()
        .expect("valid regex")
}

fn re(s: &str) -> Regex {
    Regex::new(s).expect("valid regex")
}

/// Builder options a `Regex` does not reveal.
#[derive(Debug, Clone, Copy, Default)]
struct Opts {
    i: bool,
    no_u: bool,
    m: bool,
    s: bool,
    x: bool,
    crlf: bool,
    swap: bool,
}

fn build_re(p: &str, o: Opts) -> Option<Regex> {
    RegexBuilder::new(p)
        .case_insensitive(o.i)
        .unicode(!o.no_u)
        .multi_line(o.m)
        .dot_matches_new_line(o.s)
        .ignore_whitespace(o.x)
        .crlf(o.crlf)
        .swap_greed(o.swap)
        .build()
        .ok()
}

fn codec_step(codec: &mut RegexCodec, buf: &mut BytesMut, eof: bool) -> Step {
    let r = if eof {
        codec.decode_eof(buf)
    } else {
        codec.decode(buf)
    };
    match r {
        Ok(Some(frame)) => Step::Frame(frame),
        Ok(None) => Step::NeedMore,
        Err(e) if matches!(e.kind(), ErrorKind::NoSpace | ErrorKind::BrokenPipe) => {
            Step::Error(e.kind(), None)
        }
        Err(e) => Step::Error(e.kind(), e.offset()),
    }
}

/// Feeds `chunks`, decoding after each until more is needed; a fatal
/// error ends the run; at the end, one `decode_eof` (if `eof`).
fn steps(
    chunks: &[&[u8]],
    eof: bool,
    mut step: impl FnMut(&mut BytesMut, bool) -> Step,
) -> Vec<Step> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            let s = step(&mut buf, false);
            out.push(s.clone());
            match s {
                Step::Frame(_) => {}
                Step::Error(ErrorKind::NoSpace, _) => return out,
                _ => break,
            }
        }
    }
    if eof {
        loop {
            let s = step(&mut buf, true);
            out.push(s.clone());
            match s {
                Step::Frame(_) => {}
                _ => break,
            }
        }
    }
    out
}

/// The codec's and the model's steps, or `None` when the codec refuses
/// the accept regex.
fn compare(
    accept: &Regex,
    reject: Option<&Regex>,
    skip: Option<&Regex>,
    max_length: usize,
    chunks: &[&[u8]],
    eof: bool,
) -> Option<(Vec<Step>, Vec<Step>)> {
    let mut b = RegexCodec::builder(accept.clone());
    b.max_length(max_length);
    if let Some(r) = reject {
        b.reject(r.clone());
    }
    if let Some(s) = skip {
        b.skip(s.clone());
    }
    let mut codec = b.build().ok()?;
    let mut model = RescanModel::new(accept, reject, skip, max_length);
    let ours = steps(chunks, eof, |buf, e| codec_step(&mut codec, buf, e));
    let theirs = steps(chunks, eof, |buf, e| model.step(buf, e));
    Some((ours, theirs))
}

fn assert_same(
    accept: &Regex,
    reject: Option<&Regex>,
    skip: Option<&Regex>,
    max_length: usize,
    chunks: &[&[u8]],
) {
    let (ours, theirs) =
        compare(accept, reject, skip, max_length, chunks, true).expect("accept refused");
    assert_eq!(
        ours, theirs,
        "codec (left) vs full rescan (right): accept {accept:?} reject {reject:?} skip {skip:?} max {max_length} chunks {chunks:?}"
    );
}

// ---------------------------------------------------------------------
// Case folding can take characters out of a class with a set difference
// or a negation, so readings with folding off and on are both needed:
// `[a\x{212A}--k]` matches the Kelvin sign (3 bytes) without `(?i)`; with
// it the Kelvin sign folds into `k` and is taken out, leaving `[aA]`.
// ---------------------------------------------------------------------

#[test]
fn class_difference_kelvin_growth_only() {
    // Longest match: 1 + 4*3 + 1 = 14; read with folding only: 6.
    let accept = re(r"X[a\x{212A}--k]{4}Y");
    let k = "\u{212A}".repeat(4);
    let first = format!("X{k}");
    assert_same(&accept, None, None, 1 << 20, &[first.as_bytes(), b"Y"]);
}

#[test]
fn negated_class_kelvin_growth_only() {
    // The same through a negated class: [^…] leaving `;` and the Kelvin
    // sign; with case folding the Kelvin sign folds into the negated part.
    let accept = re(r"[^\x00-\x3A\x3C-\x{2129}\x{212B}-\x{10FFFF}]{3}");
    let k3 = "\u{212A}".repeat(3);
    let k3 = k3.as_bytes();
    assert!(accept.is_match(k3));
    assert_same(&accept, None, None, 1 << 20, &[&k3[..8], &k3[8..]]);
}

#[test]
fn class_difference_kelvin_minimal() {
    // Longest match 9 bytes (three Kelvin signs); read with folding only, 3.
    let accept = re(r"[a\x{212A}--k]{3}");
    let k3 = "\u{212A}".repeat(3);
    let k3 = k3.as_bytes();
    assert_same(&accept, None, None, 1 << 20, &[&k3[..8], &k3[8..]]);
}

#[test]
fn class_difference_kelvin_with_skip_moving_the_window() {
    // The moved-window path (`first_after` with `moved > 0`): skip `^_`
    // moves the start by one; the carried-over resume point is past the
    // match's start.
    let accept = re(r"[a\x{212A}--k]{3}");
    let skip = re("^_");
    let k3 = "\u{212A}".repeat(3);
    let k3 = k3.as_bytes();
    let mut first = b"_....".to_vec();
    first.extend_from_slice(&k3[..8]);
    let n = first.len();
    assert_same(
        &accept,
        None,
        Some(&skip),
        1 << 20,
        &[&first[..n - 1], &first[n - 1..], &k3[8..]],
    );
}

// ---------------------------------------------------------------------
// `ignore_whitespace(true)` (a builder option): whitespace
// between an atom and its repetition operator is dropped, so the operator
// repeats the atom; a reading without free spacing reads the
// operator as repeating a space, so the free-spaced reading is needed for
// the true longest match.
// ---------------------------------------------------------------------

#[test]
fn free_spacing_repetition_growth_only() {
    // x: (?:xy){10}, 20 bytes; read without x: "xy" + 10 spaces, 12 bytes.
    let accept = spaced("(?:xy) {10}");
    let head = "xy".repeat(9);
    assert_same(&accept, None, None, 1 << 20, &[head.as_bytes(), b"xy"]);
}

#[test]
fn free_spacing_with_skip_moving_the_window() {
    let accept = spaced("(?:xy) {10}");
    let skip = re("^_");
    let head = format!("_.....{}", "xy".repeat(9));
    assert_same(
        &accept,
        None,
        Some(&skip),
        1 << 20,
        &[head.as_bytes(), b"xy"],
    );
}

#[test]
fn free_spacing_match_longer_than_the_head_prefix() {
    // x: (?:xy){12}, 24 bytes; read without x: 14. With the shorter
    // length the prefix searched again after the window moved would be
    // 4 + 14 + 4 = 22 bytes and cut the match at the new start.
    let accept = spaced("(?:xy) {12}");
    let skip = re("^_+");
    let a = format!("______________{}", "xy".repeat(11));
    assert_same(
        &accept,
        None,
        Some(&skip),
        1 << 20,
        &[a.as_bytes(), b"x", b"y"],
    );
}

// ---------------------------------------------------------------------
// The same readings decide whether accept can match empty text (`build`
// refuses it, RT-regex-4).
// ---------------------------------------------------------------------

// The patterns below are built with free spacing or octal escapes on,
// which the lint does not see.
#[allow(clippy::invalid_regex)]
#[test]
fn build_refuses_accepts_that_match_empty_text() {
    let cases: Vec<(&str, Regex)> = vec![
        ("[K--k]?", re("[K--k]?")),
        ("(?:[K--k]|)", re("(?:[K--k]|)")),
        ("x: a {0,3}", spaced("a {0,3}")),
    ];
    // Empty only between certain bytes, in readings the plain ones do not
    // give: only the free-spaced reading parses (`\b #(`), octal escapes
    // are read as octal (`\141`), and a free-spaced pattern whose plain
    // reading parses too but never matches empty (`\b |;` is `\b|;`).
    let context_only: Vec<(&str, Regex)> = vec![
        ("x: \\b #(", spaced(r"\b #(")),
        ("x: \\b |;", spaced(r"\b |;")),
        (
            "octal: (?:\\b|\\141)",
            RegexBuilder::new(r"(?:\b|\141)")
                .octal(true)
                .build()
                .unwrap(),
        ),
    ];
    for (name, r) in &context_only {
        assert!(r.is_match(b"a;"), "{name}");
        let m = r.find_iter(b"a;").find(|m| m.is_empty());
        assert!(m.is_some(), "{name} matches empty in a;");
    }
    for (name, r) in &cases {
        assert!(r.is_match(b""), "{name} matches empty");
    }
    let cases: Vec<(&str, Regex)> = cases.into_iter().chain(context_only).collect();
    let mut bad = Vec::new();
    for (name, r) in cases {
        if RegexCodec::new(r.clone()).is_ok() {
            bad.push(name);
        }
        if LineCodecBuilder::new().eol_regex(r).build().is_ok() {
            bad.push(name);
        }
    }
    assert!(
        bad.is_empty(),
        "built although accept matches empty: {bad:?}"
    );
}

// ---------------------------------------------------------------------
// The line codec's end of line, same readings: the set of bytes a match
// can hold must hold every byte the regex matches, or the regex is not run.
// ---------------------------------------------------------------------

fn lines(eol: Regex, chunks: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut codec = LineCodecBuilder::new().eol_regex(eol).build().unwrap();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for c in chunks {
        buf.extend_from_slice(c);
        while let Ok(Some(l)) = codec.decode(&mut buf) {
            out.push(l.line().to_vec());
        }
    }
    out
}

#[test]
fn line_eol_byte_set_class_difference() {
    let eol = re(r"[;\x{212A}--k]");
    assert!(eol.is_match("\u{212A}".as_bytes()));
    let input = "ab\u{212A}cd";
    let got = lines(eol, &[input.as_bytes()]);
    assert_eq!(got, vec![b"ab".to_vec()]);
}

#[test]
fn line_eol_byte_set_free_spacing_class() {
    // x: [!-~], every printable byte; without x: '!', ' ', '~'.
    let eol = spaced("[! - ~]");
    assert!(eol.is_match(b"a"));
    let got = lines(eol, &[b"\x01\x02a\x03"]);
    assert_eq!(got, vec![b"\x01\x02".to_vec()]);
}

// ---------------------------------------------------------------------
// Heavy differential proptest: patterns without the constructs above
// (no set operations, no spaces), so that it probes `first_after` itself.
// ---------------------------------------------------------------------

/// One generated case of the property tests.
struct Case<'a> {
    accept: &'a str,
    o_accept: Opts,
    reject: Option<String>,
    skip: Option<String>,
    o_other: Opts,
    input: &'a [u8],
    sizes: &'a [usize],
    max_length: usize,
    eof: bool,
}

/// The codec and the model agree on `case`; a case whose regexes do not
/// build, or whose accept the codec refuses, does not count.
fn agree(case: Case<'_>) -> Result<(), TestCaseError> {
    let skipped = |why: &'static str| TestCaseError::reject(why);
    let accept = build_re(case.accept, case.o_accept).ok_or_else(|| skipped("accept"))?;
    let other = |p: Option<String>| -> Result<Option<Regex>, TestCaseError> {
        p.map(|p| build_re(&p, case.o_other).ok_or_else(|| skipped("reject or skip")))
            .transpose()
    };
    let (reject, skip) = (other(case.reject)?, other(case.skip)?);
    let chunks = chunk(case.input, case.sizes);
    let (ours, theirs) = compare(
        &accept,
        reject.as_ref(),
        skip.as_ref(),
        case.max_length,
        &chunks,
        case.eof,
    )
    .ok_or_else(|| skipped("accept refused"))?;
    prop_assert_eq!(
        ours,
        theirs,
        "accept {:?} {:?} reject {:?} skip {:?} opts {:?} max {} chunks {:?}",
        accept,
        case.o_accept,
        reject,
        skip,
        case.o_other,
        case.max_length,
        chunks
    );
    Ok(())
}

/// Atoms both grammars use: bytes, classes, every kind of look-around,
/// multi-byte characters, the Kelvin sign and folding.
const LOOK: &[&str] = &[
    "a",
    "b",
    ";",
    r"\n",
    "[ab]",
    "[^a]",
    ".",
    r"\b",
    r"\B",
    "^",
    "$",
    "(?m:^)",
    "(?m:$)",
    "(?Rm:^)",
    "(?Rm:$)",
    r"\A",
    r"\z",
    "é",
    "€",
    "😀",
    r"\w",
    r"\W",
    "(?i:k)",
    r"(?-u:\b)",
    r"\b{start}",
    r"\b{end}",
    "(?:ab|abcd)",
    r"(?-u:.)",
    r"(?-u:[\x80-\xbf])",
    r"\x{212A}",
];

fn atoms() -> Vec<&'static str> {
    let mut atoms = LOOK.to_vec();
    atoms.extend([
        r"\r",
        r"(?-u:\xff)",
        "(?:a|ab)",
        r"(?s:.)",
        ".{0,6}",
        "(?:abc)?",
        "[^;]{1,5}",
        r"(?:\r\n|\n|\r)",
    ]);
    atoms
}

fn grammar(atoms: Vec<&'static str>) -> impl Strategy<Value = String> {
    let atom = prop::sample::select(atoms).prop_map(str::to_owned);
    atom.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            4 => (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a}{b}")),
            2 => (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("(?:{a}|{b})")),
            1 => inner.clone().prop_map(|a| format!("(?:{a})?")),
            1 => inner.clone().prop_map(|a| format!("(?:{a})??")),
            1 => inner.clone().prop_map(|a| format!("(?:{a}){{1,3}}")),
            1 => inner.clone().prop_map(|a| format!("(?:{a}){{1,3}}?")),
            1 => inner.clone().prop_map(|a| format!("(?:{a}){{2,5}}")),
            1 => inner.clone().prop_map(|a| format!("(?:{a})+")),
            1 => inner.prop_map(|a| format!("(?:{a})*?")),
        ]
    })
}

fn skip_pattern() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "^.", "^(?-u:.)", "^(?s-u:.)", "^[^;]", "^[^;]{1,3}", "^(?:a|b)", "^.{0,3}", "",
            r"\b", r"^\w", r"^\W", r"^(?-u:[\x00-\xff])", r"^(?-u:[\x00-\xff]{2})", "a", "b|;",
            r"^[^\n]*", "^(?:ab)+", "(?m:^)a", r"\B", "^(?s:.{5})", "é", "[^a]", r"^\x{212A}",
            r"^(?-u:[\x80-\xff])",
        ]).prop_map(str::to_owned),
        2 => grammar(atoms()),
    ]
}

/// Pieces of input: ASCII, line ends, 2-, 3- and 4-byte characters, the
/// Kelvin sign, bytes that are not UTF-8, and `extra`.
fn pieces(extra: &[&'static str]) -> Vec<&'static [u8]> {
    let mut pieces: Vec<&'static [u8]> = vec![
        b"a", b"a", b"b", b"b", b";", b"\n", b"\r", b"\r\n", b"\xff", b" ", b"K", b"k", b"\x80",
        b"\xe2", b"ab", b"abcd",
    ];
    pieces.extend(["é", "€", "😀", "\u{212A}"].map(str::as_bytes));
    pieces.extend(extra.iter().map(|e| e.as_bytes()));
    pieces
}

fn input() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop::sample::select(pieces(&["c", "d"]));
    prop::collection::vec(piece, 0..80).prop_map(|p| p.concat())
}

fn opts() -> impl Strategy<Value = Opts> {
    (
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.15),
    )
        .prop_map(|(i, no_u, m, s, x, crlf, swap)| Opts {
            i,
            no_u,
            m,
            s,
            x,
            crlf,
            swap,
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        max_global_rejects: 1 << 22,
        failure_persistence: None,
        ..ProptestConfig::with_cases(
            cases())
    })]

    #[test]
    fn heavy_resumed_searches_give_what_full_rescans_give(
        accept in grammar(atoms()),
        reject in proptest::option::weighted(0.3, grammar(atoms())),
        skip in proptest::option::weighted(0.8, skip_pattern()),
        o_accept in opts(),
        o_other in opts(),
        input in input(),
        sizes in proptest::collection::vec(1usize..7, 1..12),
        max_length in prop::sample::select(vec![4usize, 8, 16, 24, 1 << 20]),
        eof in any::<bool>(),
    ) {
        agree(Case { accept: &accept, o_accept, reject, skip, o_other, input: &input, sizes: &sizes, max_length, eof })?;
    }
}

// ---------------------------------------------------------------------
// Targeted: an accept that needs a rare byte `Z` (so long fruitless
// windows), look-around next to it, and skip patterns that move the
// window's start by a character at a time, so that `first_after` often
// runs with `moved > 0` and a resume point well inside the window.
// ---------------------------------------------------------------------

fn look_atoms() -> Vec<&'static str> {
    let mut atoms = LOOK.to_vec();
    atoms.extend([
        r"\b{start-half}",
        r"\b{end-half}",
        "(?i:ſ)",
        "(?i:s)",
        "ß",
        "(?i:ß)",
    ]);
    atoms
}

fn rare_accept() -> impl Strategy<Value = String> {
    let g = || grammar(look_atoms());
    prop_oneof![
        (g(), g()).prop_map(|(a, b)| format!("{a}Z{b}")),
        g().prop_map(|a| format!("{a}Z")),
        g().prop_map(|a| format!("Z{a}")),
        (g(), g()).prop_map(|(a, b)| format!("(?:{a}Z|Z{b})")),
        (g(), g()).prop_map(|(a, b)| format!("(?:{a}|{b})Z(?:{b}|{a})")),
        g().prop_map(|a| format!("(?:{a}){{0,4}}Z")),
        g().prop_map(|a| format!("Z(?:{a}){{0,4}}?")),
    ]
}

fn rare_input() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop::sample::select(pieces(&["s", "ſ", "ß", "ẞ"]));
    (
        prop::collection::vec(piece, 0..120),
        prop::collection::vec(any::<prop::sample::Index>(), 0..3),
    )
        .prop_map(|(mut p, zs)| {
            for z in zs {
                let at = z.index(p.len() + 1);
                p.insert(at, b"Z");
            }
            p.concat()
        })
}

fn mover() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "^.",
        "^(?-u:.)",
        "^(?s-u:.)",
        "^[^Z]",
        "^[^Z]{1,3}",
        "^(?:a|b)",
        "^.{0,3}",
        "^.{2}",
        r"^\w",
        r"^\W",
        r"^(?-u:[\x00-\xff])",
        r"^(?-u:[^Z]{2})",
        "a",
        "b|;",
        "^(?:ab)+",
        "(?m:^).",
        r"\B",
        "^(?s:.{5})",
        "é",
        "[^a]",
        r"^\x{212A}",
        r"^(?-u:[\x80-\xff])",
        r"^(?-u:[^Z])",
        r"^[^Z]\b",
        r"^[^Z]\B",
        r"(?-u:[^Z])",
        r"\b",
        "",
    ])
    .prop_map(str::to_owned)
}

proptest! {
    #![proptest_config(ProptestConfig {
        max_global_rejects: 1 << 22,
        failure_persistence: None,
        ..ProptestConfig::with_cases(
            cases())
    })]

    #[test]
    fn targeted_moved_window_resumes_exactly(
        accept in rare_accept(),
        reject in proptest::option::weighted(0.15, rare_accept()),
        skip in proptest::option::weighted(0.9, prop_oneof![4 => mover(), 1 => grammar(look_atoms())]),
        o_accept in opts(),
        o_other in opts(),
        input in rare_input(),
        sizes in proptest::collection::vec(1usize..7, 1..12),
        max_length in prop::sample::select(vec![8usize, 16, 32, 64, 1 << 20]),
        eof in any::<bool>(),
    ) {
        agree(Case { accept: &accept, o_accept, reject, skip, o_other, input: &input, sizes: &sizes, max_length, eof })?;
    }
}

/// A pattern that is not free-spaced keeps its literal whitespace: line
/// ends written as real CR and LF characters are not read as the empty
/// alternatives a free-spaced reading would make of them.
#[test]
fn literal_line_ends_in_a_pattern_are_not_empty_matches() {
    let eol = re("\r\n|\n|\r");
    assert!(RegexCodec::new(eol.clone()).is_ok());
    assert_eq!(
        lines(eol, &[b"a\r\nb\n"]),
        vec![b"a".to_vec(), b"b".to_vec()]
    );
}
