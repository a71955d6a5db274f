//! `cargo bench --bench allocs`: heap allocations per frame for the byte
//! codec scenarios of the `compare` bench, on the same inputs.
//!
//! A counting global allocator would change the timings of `compare`, so
//! the count runs here. Prints one line per scenario:
//! `scenario=<name> frames=<n> allocs=<n> allocs_per_frame=<allocs/frames> target=<t>`.
//! Each scenario fills its read buffer before counting starts and then
//! decodes every frame in it: the figure is the amortised cost per frame,
//! the growth of the frames' shared storage included. Target: at most 0.01,
//! except for `line-40B-string`, whose frames are `String`s (one each).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyframe_codecs::{
    ChunkCodec, LineBatchCodec, LineCodec, PackFormat, PackstringCodec, Utf8LineCodec,
};
use bytes::BytesMut;
use tokio_util::codec::Decoder;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// The system allocator, counting `alloc`, `alloc_zeroed` and `realloc`
/// calls while `COUNTING` is set.
struct Counting;

fn count() {
    if COUNTING.load(Ordering::Relaxed) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to `System`; counting allocates
// nothing and touches only two atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller upholds `alloc`'s contract; passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Frames per scenario (10 MB of 40-byte lines; as much for the others).
const LINES: usize = 250_000;
const LINE_LEN: usize = 40;
const FRAMES: usize = 100_000;
const PAYLOAD_LEN: usize = 100;

/// Decodes all of `input` with `decode` (which returns its frame count)
/// and prints the allocations it made per frame.
fn scenario(name: &str, target: &str, input: &[u8], decode: impl FnOnce(&mut BytesMut) -> u64) {
    let mut buf = BytesMut::from(input);
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let frames = black_box(decode(&mut buf));
    COUNTING.store(false, Ordering::SeqCst);
    let allocs = ALLOCATIONS.load(Ordering::SeqCst);
    assert!(buf.is_empty(), "{name}: every frame decoded");
    println!(
        "scenario={name} frames={frames} allocs={allocs} allocs_per_frame={:.4} target={target}",
        allocs as f64 / frames.max(1) as f64
    );
}

fn drain<D: Decoder>(mut codec: D, buf: &mut BytesMut) -> u64
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

fn main() {
    let mut lines = Vec::with_capacity(LINES * LINE_LEN);
    for i in 0..LINES {
        lines.extend_from_slice(format!("{i:>width$}\n", width = LINE_LEN - 1).as_bytes());
    }
    scenario("line-40B", "0.01", &lines, |buf| {
        drain(LineCodec::new(), buf)
    });
    scenario("line-40B-batch", "0.01", &lines, |buf| {
        let mut codec = LineBatchCodec::new();
        let mut n = 0;
        while let Some(batch) = codec.decode(buf).expect("valid input") {
            n += batch.len() as u64;
        }
        n
    });
    scenario("line-40B-string", "1 (String frames)", &lines, |buf| {
        drain(Utf8LineCodec::new(), buf)
    });

    let mut packed = Vec::with_capacity(FRAMES * (4 + PAYLOAD_LEN));
    for i in 0..FRAMES {
        packed.extend_from_slice(&(PAYLOAD_LEN as u32).to_be_bytes());
        packed.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, PAYLOAD_LEN));
    }
    scenario("packstring-N-100B", "0.01", &packed, |buf| {
        drain(PackstringCodec::new(PackFormat::U32Be), buf)
    });

    let chunks: Vec<u8> = (0..FRAMES * PAYLOAD_LEN).map(|i| i as u8).collect();
    scenario("chunk-100B", "0.01", &chunks, |buf| {
        drain(ChunkCodec::new(PAYLOAD_LEN), buf)
    });
}
