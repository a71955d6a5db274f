//! Line codec: default `\r?\n`, literal EOLs, and the hold-open regex EOLs
//! that docs/semantics.md §2a says are split-invariant. Checks no panic, fragmentation
//! invariance (frames, errors, end of input), bounded buffering, and that
//! whatever the encoder writes decodes back to the same line. For byte
//! lines, `LineBatchCodec` over the same configuration and chunking must
//! give the same lines and errors, in batches within its cap.
//!
//! config: bits 0-2 EOL, bits 3-5 max length, bit 6 discard on overflow,
//! bit 7 UTF-8 lines.
#![no_main]

use std::sync::OnceLock;

use anyframe_codecs::{LineBatchCodec, LineCodec, LineCodecBuilder, OverflowPolicy, Utf8Line};
use anyframe_fuzz::{Checks, Event, Input, Outcome, assert_invariant, assert_round_trip, run};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use regex::bytes::Regex;
use tokio_util::codec::Encoder;

const MAX_LENGTHS: [usize; 8] = [
    0,
    1,
    2,
    3,
    5,
    8,
    64,
    anyframe_codecs::DEFAULT_LINE_MAX_LENGTH,
];

fn regexes() -> &'static [Regex; 2] {
    static RE: OnceLock<[Regex; 2]> = OnceLock::new();
    RE.get_or_init(|| {
        [
            Regex::new("[;,]+").unwrap(),
            Regex::new("\r\n|\n|\r").unwrap(),
        ]
    })
}

/// The builder for `config`, and the longest EOL it can match (for the
/// buffering bound; `None` for regexes, which hold a run of EOL bytes).
fn builder(config: u8) -> (LineCodecBuilder, Option<usize>) {
    let mut b = LineCodec::builder();
    let eol_len = match config & 7 {
        0 => Some(2),
        1 => {
            b.eol("\r\n");
            Some(2)
        }
        2 => {
            b.eol("\n");
            Some(1)
        }
        3 => {
            b.eol("ab");
            Some(2)
        }
        4 => {
            // Self-overlapping: a naive resume point misses "XYXYZ" in "XYXYXYZ".
            b.eol("XYXYZ");
            Some(5)
        }
        5 => {
            b.eol("\0");
            Some(1)
        }
        6 => {
            b.eol_regex(regexes()[0].clone()).hold_open_match(true);
            None
        }
        _ => {
            b.eol_regex(regexes()[1].clone()).hold_open_match(true);
            None
        }
    };
    b.max_length(MAX_LENGTHS[usize::from((config >> 3) & 7)]);
    if config & 0x40 != 0 {
        b.overflow(OverflowPolicy::Discard);
    }
    (b, eol_len)
}

fuzz_target!(|raw: &[u8]| {
    let Some(input) = Input::parse(raw) else {
        return;
    };
    let (b, eol_len) = builder(input.config);
    let max = MAX_LENGTHS[usize::from((input.config >> 3) & 7)];
    let checks = Checks {
        bound: eol_len.map(|e| max + e),
        progress: true,
    };
    if input.config & 0x80 == 0 {
        assert_invariant(|| b.build().unwrap(), &input, checks);
        // Batches: the same lines and errors as line by line, same chunks.
        let cap = 1 + input.data.len() % 4;
        let lines = run(b.build().unwrap(), &input.chunks(), checks);
        let batched = LineBatchCodec::from(b.build().unwrap()).with_max_lines(cap);
        let batches = run(batched, &input.chunks(), checks);
        let flat = Outcome {
            events: batches
                .events
                .into_iter()
                .flat_map(|e| match e {
                    Event::Frame(batch) => {
                        assert!(!batch.is_empty() && batch.len() <= cap, "{batch:?}");
                        batch.into_iter().map(Event::Frame).collect()
                    }
                    Event::Error(sig) => vec![Event::Error(sig)],
                })
                .collect(),
            end: batches.end,
        };
        assert!(
            flat.same_as(&lines),
            "batches differ from lines:\n{flat:?}\n{lines:?}"
        );
        // Round trip: the data as one line, if the encoder takes it.
        let mut codec = b.build().unwrap();
        let mut wire = BytesMut::new();
        let term = codec
            .write_terminator()
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        // Whatever the encoder accepts must decode back (a regex EOL
        // longer than max_length used not to: codecs/tests/line.rs), when
        // the line is within the decoder's limit (the encoder has its own,
        // none by default).
        if !term.is_empty()
            && input.data.len() <= codec.max_length()
            && codec.encode(input.data, &mut wire).is_ok()
        {
            assert_round_trip(
                b.build().unwrap(),
                &wire,
                &anyframe_codecs::Line::new(input.data.to_vec(), term),
            );
        }
    } else {
        assert_invariant(|| b.build_utf8().unwrap(), &input, checks);
        if let Ok(text) = std::str::from_utf8(input.data) {
            let mut codec = b.build_utf8().unwrap();
            let mut wire = BytesMut::new();
            let line = b.build().unwrap();
            let term = std::str::from_utf8(line.write_terminator().unwrap_or_default()).unwrap();
            if !term.is_empty()
                && text.len() <= line.max_length()
                && codec.encode(text, &mut wire).is_ok()
            {
                assert_round_trip(b.build_utf8().unwrap(), &wire, &Utf8Line::new(text, term));
            }
        }
    }
});
