//! Byte framing (anyframe-codecs) against tokio-util's own codecs.
//!
//! * `line-40B`: 5,000,000 lines of 40 bytes in one buffer, through our
//!   `LineCodec` (frames are `Bytes` split off the buffer) against
//!   `LinesCodec` (frames are `String`s). Target ratio >= 3.2.
//! * `line-40B-batch`: the same lines through `LineBatchCodec` (every
//!   complete line buffered split off at once; each line is then borrowed
//!   and looked at). No target of its own; context for `line-40B`.
//! * `line-40B-string`: the same through our `Utf8LineCodec` (one `String`
//!   per line, like `LinesCodec`). Target ratio >= 1.5.
//! * `packstring-N-100B`: 2,000,000 frames of 100 bytes behind a 32-bit
//!   big-endian length (`N`), our `PackstringCodec` against
//!   `LengthDelimitedCodec`. Target ratio >= 1.2.
//! * `chunk-100B`: 2,000,000 chunks of 100 bytes, our `ChunkCodec` against
//!   the same `split_to` written by hand. Context: the codec's overhead.
//! * `line-fragmented`: lines of 1, 4 and 16 MiB arriving in 1 KiB pieces,
//!   decoding after every piece. Prints the time per line; the 16 MiB / 1 MiB
//!   ratio must stay <= 20 (linear is 16; a decoder that rescans the
//!   buffered line on every read is ~256).
//! * `regex-eol-1byte`: one 1 MiB line with the regex end of line
//!   `\r\n|\n|\r`, fed one byte per `decode` call, against the same line
//!   fed whole (one call). Prints the cost ratio (1-byte / whole; a decoder
//!   that rescans the buffered line is ~10^5) and, for scale, the same ratio
//!   for the default `\r?\n` end of line, and for the loop alone that
//!   appends the line to the buffer a byte at a time without decoding: the
//!   floor under any decoder fed one byte at a time.
//!
//! Heap allocations per frame for the same scenarios are counted by the
//! `allocs` bench: a counting allocator here would change these timings.
//!
//! Items are lines or frames. Copying the input into a fresh buffer happens
//! before the clock starts, and the two sides alternate every few
//! milliseconds so both see the same machine load (see `time_pair`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyframe_codecs::{
    ChunkCodec, LineBatchCodec, LineCodec, PackFormat, PackstringCodec, Utf8LineCodec,
};
use bytes::BytesMut;
use regex::bytes::Regex;
use tokio_util::codec::{Decoder, LengthDelimitedCodec, LinesCodec};

use crate::harness::{Harness, Measured, median_ratio};

/// Lines in the `line-40B` scenarios (200 MB of input).
const LINE_COUNT: usize = 5_000_000;
/// Bytes per line, `\n` included.
const LINE_LEN: usize = 40;
/// Frames in `packstring-N-100B` (208 MB of input).
const FRAME_COUNT: usize = 2_000_000;
/// Payload bytes per packstring frame.
const PAYLOAD_LEN: usize = 100;
/// Slices per repetition in `time_pair` (10 MB each for the line input).
const SLICES: usize = 20;
/// Read size in `line-fragmented`.
const PIECE: usize = 1024;
/// Line sizes in `line-fragmented`, in MiB.
const FRAGMENTED_MIB: [usize; 3] = [1, 4, 16];
/// Bytes fed per repetition in `line-fragmented`, for every line size
/// (64 x 1 MiB, 16 x 4 MiB, 4 x 16 MiB): larger than the caches, so no size
/// gets to run from cache while another cannot.
const FRAGMENTED_TOTAL: usize = 64 * 1024 * 1024;

pub fn run(h: &Harness) {
    let lines = (h.wants("line-40B") || h.wants("line-40B-batch") || h.wants("line-40B-string"))
        .then(line_input);
    if let Some(input) = &lines {
        if h.wants("line-40B") {
            line_bytes(h, input);
        }
        if h.wants("line-40B-batch") {
            line_batch(h, input);
        }
        if h.wants("line-40B-string") {
            line_string(h, input);
        }
    }
    drop(lines);
    if h.wants("packstring-N-100B") {
        packstring(h);
    }
    if h.wants("chunk-100B") {
        chunk(h);
    }
    if h.wants("line-fragmented") {
        line_fragmented(h);
    }
    if h.wants("regex-eol-1byte") {
        regex_eol_1byte(h);
    }
}

/// `LINE_COUNT` lines of `LINE_LEN` bytes: a right-aligned number padded
/// with spaces, then `\n`.
fn line_input() -> Vec<u8> {
    let mut out = Vec::with_capacity(LINE_COUNT * LINE_LEN);
    for i in 0..LINE_COUNT {
        let line = format!("{i:>width$}\n", width = LINE_LEN - 1);
        out.extend_from_slice(line.as_bytes());
    }
    out
}

/// Times `ours` and `anchor` over the same input and returns their median
/// times per repetition. Each returns its item count.
///
/// The machine is shared, so a repetition is cut into `SLICES` slices of
/// whole records (`record` bytes each) and the two sides alternate slice by
/// slice: both see the same load at a granularity of a few milliseconds.
/// Each slice is copied into a fresh buffer before its clock starts.
fn time_pair(
    h: &Harness,
    input: &[u8],
    record: usize,
    mut ours: impl FnMut(&mut BytesMut) -> u64,
    mut anchor: impl FnMut(&mut BytesMut) -> u64,
) -> (Measured, Measured) {
    let slice_len = (input.len() / SLICES).div_ceil(record) * record;
    let once = |f: &mut dyn FnMut(&mut BytesMut) -> u64, slice: &[u8]| {
        let mut buf = BytesMut::from(slice);
        let t = Instant::now();
        let items = black_box(f(&mut buf));
        (t.elapsed(), items)
    };
    let mut ours_t = Vec::with_capacity(h.reps());
    let mut anchor_t = Vec::with_capacity(h.reps());
    let (mut ours_n, mut anchor_n) = (0, 0);
    for _ in 0..h.reps() {
        let (mut ot, mut at) = (Duration::ZERO, Duration::ZERO);
        (ours_n, anchor_n) = (0, 0);
        for slice in input.chunks(slice_len) {
            let (t, n) = once(&mut ours, slice);
            ot += t;
            ours_n += n;
            let (t, n) = once(&mut anchor, slice);
            at += t;
            anchor_n += n;
        }
        ours_t.push(ot);
        anchor_t.push(at);
    }
    (
        Measured::median_of(&ours_t, ours_n),
        Measured::median_of(&anchor_t, anchor_n),
    )
}

/// Decodes every frame in `buf` and counts them.
fn drain<D: Decoder>(codec: &mut D, buf: &mut BytesMut) -> u64
where
    D::Error: std::fmt::Debug,
{
    let mut n = 0;
    while let Some(frame) = codec.decode(buf).expect("valid input") {
        black_box(&frame);
        n += 1;
    }
    n
}

fn line_bytes(h: &Harness, input: &[u8]) {
    let (ours, anchor) = time_pair(
        h,
        input,
        LINE_LEN,
        |buf| drain(&mut LineCodec::new(), buf),
        |buf| drain(&mut LinesCodec::new(), buf),
    );
    assert_eq!(ours.items, LINE_COUNT as u64);
    assert_eq!(anchor.items, LINE_COUNT as u64);
    h.report_with("line-40B", ours, anchor, "target=3.2");
}

fn line_batch(h: &Harness, input: &[u8]) {
    let (ours, anchor) = time_pair(
        h,
        input,
        LINE_LEN,
        |buf| {
            let mut codec = LineBatchCodec::new();
            let mut n = 0;
            while let Some(batch) = codec.decode(buf).expect("valid input") {
                for line in &batch {
                    black_box(line.line());
                }
                n += batch.len() as u64;
            }
            n
        },
        |buf| drain(&mut LinesCodec::new(), buf),
    );
    assert_eq!(ours.items, LINE_COUNT as u64);
    assert_eq!(anchor.items, LINE_COUNT as u64);
    h.report_with("line-40B-batch", ours, anchor, "api=LineBatchCodec");
}

fn line_string(h: &Harness, input: &[u8]) {
    let (ours, anchor) = time_pair(
        h,
        input,
        LINE_LEN,
        |buf| drain(&mut Utf8LineCodec::new(), buf),
        |buf| drain(&mut LinesCodec::new(), buf),
    );
    assert_eq!(ours.items, LINE_COUNT as u64);
    assert_eq!(anchor.items, LINE_COUNT as u64);
    h.report_with("line-40B-string", ours, anchor, "target=1.5");
}

fn packstring(h: &Harness) {
    let mut input = Vec::with_capacity(FRAME_COUNT * (4 + PAYLOAD_LEN));
    for i in 0..FRAME_COUNT {
        input.extend_from_slice(&(PAYLOAD_LEN as u32).to_be_bytes());
        input.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, PAYLOAD_LEN));
    }
    let (ours, anchor) = time_pair(
        h,
        &input,
        4 + PAYLOAD_LEN,
        |buf| drain(&mut PackstringCodec::new(PackFormat::U32Be), buf),
        |buf| drain(&mut LengthDelimitedCodec::new(), buf),
    );
    assert_eq!(ours.items, FRAME_COUNT as u64);
    assert_eq!(anchor.items, FRAME_COUNT as u64);
    h.report_with("packstring-N-100B", ours, anchor, "target=1.2");
}

/// The least a chunk decoder can do: `split_to` and `freeze` of a length
/// known at run time, with tokio-util's own error type.
struct SplitTo(usize);

impl Decoder for SplitTo {
    type Item = bytes::Bytes;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> std::io::Result<Option<bytes::Bytes>> {
        Ok((buf.len() >= self.0).then(|| buf.split_to(self.0).freeze()))
    }
}

/// `chunk-100B`: `FRAME_COUNT` chunks of `PAYLOAD_LEN` bytes through
/// `ChunkCodec`, against the same splits written by hand as a decoder
/// (`SplitTo`): the codec's overhead over the least a chunk reader can do.
fn chunk(h: &Harness) {
    let input: Vec<u8> = (0..FRAME_COUNT * PAYLOAD_LEN).map(|i| i as u8).collect();
    let (ours, anchor) = time_pair(
        h,
        &input,
        PAYLOAD_LEN,
        |buf| drain(&mut ChunkCodec::new(PAYLOAD_LEN), buf),
        |buf| drain(&mut SplitTo(PAYLOAD_LEN), buf),
    );
    assert_eq!(ours.items, FRAME_COUNT as u64);
    assert_eq!(anchor.items, FRAME_COUNT as u64);
    h.report_with("chunk-100B", ours, anchor, "anchor=split_to");
}

/// Feeds lines of `mib` MiB (each followed by `\n`) in `PIECE`-byte reads,
/// decoding after each read, until `FRAGMENTED_TOTAL` bytes have gone
/// through, and returns the median time per line.
///
/// Every size moves the same bytes through the same pre-allocated, already
/// touched read buffer, so the figures compare the decoder's work per line
/// rather than the allocator's growth and the caches' size (one 16 MiB
/// buffer grown from scratch costs far more per byte than a 1 MiB one,
/// whatever decodes it).
fn fragmented_per_line(h: &Harness, mib: usize) -> Duration {
    let line_len = mib * 1024 * 1024;
    let lines = FRAGMENTED_TOTAL / line_len;
    let piece = [b'x'; PIECE];
    let mut samples = Vec::with_capacity(h.reps());
    for _ in 0..h.reps() {
        let mut buf = BytesMut::with_capacity(FRAGMENTED_TOTAL + lines);
        buf.resize(FRAGMENTED_TOTAL + lines, 0);
        buf.clear();
        let mut codec = LineCodec::builder()
            .max_length(usize::MAX)
            .build()
            .expect("valid configuration");
        let t = Instant::now();
        for _ in 0..lines {
            for _ in 0..line_len / PIECE {
                buf.extend_from_slice(&piece);
                assert!(codec.decode(&mut buf).expect("no limit").is_none());
            }
            buf.extend_from_slice(b"\n");
            let line = codec.decode(&mut buf).expect("no limit").expect("a line");
            assert_eq!(black_box(line).line().len(), line_len);
        }
        samples.push(t.elapsed() / lines as u32);
    }
    samples.sort();
    samples[samples.len() / 2]
}

fn line_fragmented(h: &Harness) {
    let times: Vec<Duration> = FRAGMENTED_MIB
        .iter()
        .map(|&mib| fragmented_per_line(h, mib))
        .collect();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let ratio = times[2].as_secs_f64() / times[0].as_secs_f64();
    h.note(
        "line-fragmented",
        &format!(
            "piece={PIECE}B 1MiB={:.2}ms 4MiB={:.2}ms 16MiB={:.2}ms ratio_16MiB_1MiB={ratio:.1} limit=20",
            ms(times[0]),
            ms(times[1]),
            ms(times[2]),
        ),
    );
}

/// Bytes in the `regex-eol-1byte` line, end of line excluded.
const REGEX_LINE: usize = 1024 * 1024;

/// Decodes one `REGEX_LINE`-byte line (then `\n`) from a buffer with room
/// for it, fed in `piece`-byte reads with a `decode` call after each, and
/// returns the time taken.
fn one_line_in_pieces(codec: &LineCodec, line: &[u8], piece: usize) -> Duration {
    let mut codec = codec.clone();
    let mut buf = BytesMut::with_capacity(line.len());
    let t = Instant::now();
    let mut frame = None;
    for part in line.chunks(piece) {
        buf.extend_from_slice(part);
        frame = codec.decode(&mut buf).expect("within the limit");
    }
    let elapsed = t.elapsed();
    let frame = frame.expect("a whole line");
    assert_eq!(black_box(frame).line().len(), REGEX_LINE);
    elapsed
}

/// The time `one_line_in_pieces` takes to append `line` a byte at a time
/// without any decoding: the floor under every decoder's one-byte cost.
/// The piece length is hidden from the compiler, as it is there, so that
/// each append is the same copy of a length known only at run time.
fn append_bytes_only(line: &[u8]) -> Duration {
    let mut buf = BytesMut::with_capacity(line.len());
    let piece = black_box(1);
    let t = Instant::now();
    for part in line.chunks(piece) {
        buf.extend_from_slice(part);
        black_box(&mut buf);
    }
    let elapsed = t.elapsed();
    assert_eq!(buf.len(), line.len());
    elapsed
}

fn regex_eol_1byte(h: &Harness) {
    let mut line = vec![b'x'; REGEX_LINE];
    line.push(b'\n');
    let regex = LineCodec::builder()
        .eol_regex(Regex::new(r"\r\n|\n|\r").expect("valid regex"))
        .build()
        .expect("valid configuration");
    let default = LineCodec::new();
    let (mut whole, mut bytes, mut default_whole, mut default_bytes, mut append) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Interleaved: the five runs of a round see the same machine load.
    for _ in 0..h.reps() {
        whole.push(one_line_in_pieces(&regex, &line, line.len()));
        bytes.push(one_line_in_pieces(&regex, &line, 1));
        default_whole.push(one_line_in_pieces(&default, &line, line.len()));
        default_bytes.push(one_line_in_pieces(&default, &line, 1));
        append.push(append_bytes_only(&line));
    }
    // `median_ratio(a, b)` is the median of b/a per round: here the cost of
    // one byte at a time over the cost of the whole line.
    let cost = median_ratio(&whole, &bytes);
    let default_cost = median_ratio(&default_whole, &default_bytes);
    let vs_default = median_ratio(&default_bytes, &bytes);
    let append_cost = median_ratio(&whole, &append);
    let ms = |d: &[Duration]| Measured::median_of(d, 1).median.as_secs_f64() * 1e3;
    h.note(
        "regex-eol-1byte",
        &format!(
            "whole={:.3}ms 1byte={:.2}ms cost_1byte_over_whole={cost:.1} target=20 \
             default_eol_cost_1byte_over_whole={default_cost:.1} regex_1byte_over_default_1byte={vs_default:.2} \
             append_only_over_whole={append_cost:.1}",
            ms(&whole),
            ms(&bytes),
        ),
    );
}
