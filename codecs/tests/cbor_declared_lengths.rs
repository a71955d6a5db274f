//! A declared length is checked before anything is allocated on its
//! strength (RT-cbor-1), whatever type the item is decoded into: serde's
//! visitors for `Vec` and maps reserve room from the length a sequence
//! announces, so no bytes may reach them before the scanner has checked
//! those lengths against the bytes that are there.
//!
//! The counting allocator counts only on the thread that asks for a
//! measurement, so the tests of this binary may run in parallel.

use anyframe_codecs::CborCodec;
use bytes::BytesMut;
use tokio_util::codec::Decoder;

mod alloc_probe {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static TRACK: Cell<bool> = const { Cell::new(false) };
        static LIVE: Cell<isize> = const { Cell::new(0) };
        static PEAK: Cell<isize> = const { Cell::new(0) };
    }

    fn note(delta: isize) {
        let _ = TRACK.try_with(|t| {
            if t.get() {
                let _ = LIVE.try_with(|l| {
                    let v = l.get() + delta;
                    l.set(v);
                    let _ = PEAK.try_with(|p| {
                        if v > p.get() {
                            p.set(v)
                        }
                    });
                });
            }
        });
    }

    pub struct Counting;

    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            note(layout.size() as isize);
            // SAFETY: forwarded unchanged to the system allocator.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            note(-(layout.size() as isize));
            // SAFETY: forwarded unchanged to the system allocator.
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            note(new_size as isize - layout.size() as isize);
            // SAFETY: forwarded unchanged to the system allocator.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    /// Runs `f`; returns its result and the peak of bytes allocated on this
    /// thread during it (above what was live when it started).
    pub fn peak<R>(f: impl FnOnce() -> R) -> (R, usize) {
        LIVE.with(|l| l.set(0));
        PEAK.with(|p| p.set(0));
        TRACK.with(|t| t.set(true));
        let r = f();
        TRACK.with(|t| t.set(false));
        (r, PEAK.with(|p| p.get()).max(0) as usize)
    }
}

#[global_allocator]
static ALLOC: alloc_probe::Counting = alloc_probe::Counting;

/// A recursive typed target: each level is a `Vec`.
#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
struct Node(Vec<Node>);

/// 100 nested array heads each declaring 2^32 - 1 items: 500 bytes that
/// cannot be an item under a 1 KiB limit. Refused at the first head, with
/// nothing consumed and nothing allocated on the heads' word.
#[test]
fn nested_lying_heads_are_refused_before_anything_is_allocated() {
    let mut wire = Vec::new();
    for _ in 0..100 {
        wire.extend_from_slice(&[0x9a, 0xff, 0xff, 0xff, 0xff]);
    }
    for (max_size, max_depth) in [(1024, 128), (1024, 126), (16 << 20, 128)] {
        let mut buf = BytesMut::from(&wire[..]);
        let mut codec = CborCodec::<Node>::with_limits(max_size, max_depth);
        let (r, peak) = alloc_probe::peak(|| codec.decode(&mut buf).map_err(|e| e.is_limit()));
        assert!(r.unwrap_err(), "refused as over the size limit");
        assert_eq!(buf.len(), wire.len(), "nothing consumed");
        assert!(
            peak < 64 * 1024,
            "limits ({max_size}, {max_depth}): {peak} bytes allocated for {} bytes of heads",
            wire.len()
        );
    }
}

/// An array that announces 65,536 `u64`s, of which only the head has
/// come: incomplete, and nothing is reserved for the items (serde's `Vec`
/// visitor would take 512 KiB on the announcement's word).
#[test]
fn an_announced_length_reserves_nothing_before_the_items_arrive() {
    let head = [0x9a, 0x00, 0x01, 0x00, 0x00];
    let mut buf = BytesMut::from(&head[..]);
    let mut codec = CborCodec::<Vec<u64>>::new();
    let (r, peak) = alloc_probe::peak(|| codec.decode(&mut buf).map(|v| v.map(|v| v.len())));
    assert_eq!(r.unwrap(), None, "incomplete");
    assert_eq!(buf.len(), head.len());
    assert!(peak < 64 * 1024, "{peak} bytes allocated for a 5-byte head");
}

/// Into `serde_cbor::Value` an item that arrived whole is read without a
/// scan first: the same lying heads still allocate next to nothing on their
/// word (a few elements a level at most) and are refused the same way.
#[test]
fn lying_heads_into_value_allocate_nothing_on_their_word() {
    let mut wire = Vec::new();
    for _ in 0..100 {
        wire.extend_from_slice(&[0x9a, 0xff, 0xff, 0xff, 0xff]);
    }
    let mut buf = BytesMut::from(&wire[..]);
    let mut codec = CborCodec::<serde_cbor::Value>::with_limits(1024, 128);
    let (r, peak) = alloc_probe::peak(|| codec.decode(&mut buf).map_err(|e| e.is_limit()));
    assert!(r.unwrap_err());
    assert_eq!(buf.len(), wire.len());
    assert!(peak < 64 * 1024, "{peak} bytes allocated");
}

/// An array head announcing 2^32 - 1 elements, over a 1 MiB limit, then
/// 60 KB of one-entry maps: the scanner refuses it at its head. Into
/// `Value` the item is not read first (a `Value` can take 256 times its
/// bytes, and a refused item is refused again on every retry).
#[test]
fn an_item_refused_at_its_head_is_not_read_into_a_value_first() {
    let mut wire = vec![0x9a, 0xff, 0xff, 0xff, 0xff];
    for _ in 0..20_000 {
        wire.extend_from_slice(&[0xa1, 0x00, 0x00]);
    }
    let mut codec = CborCodec::<serde_cbor::Value>::with_limits(1 << 20, 128);
    let mut buf = BytesMut::from(&wire[..]);
    for _ in 0..3 {
        let (r, peak) = alloc_probe::peak(|| codec.decode(&mut buf).map_err(|e| e.is_limit()));
        assert!(r.unwrap_err(), "refused for its declared length");
        assert_eq!(buf.len(), wire.len(), "nothing consumed");
        assert!(peak < 64 * 1024, "{peak} bytes allocated to refuse it");
    }
}

/// A well-formed head whose item goes wrong near its end (a reserved byte
/// after 100,000 one-entry maps, 300 KB): what is read into `Value` before
/// the error is found is bounded by a small window, not by the item (a
/// `Value` can take 256 times its bytes: 77 MB here), on every retry.
#[test]
fn an_item_with_an_error_near_its_end_costs_a_bounded_partial_read() {
    let n: u32 = 100_000;
    let mut wire = vec![0x9a];
    wire.extend_from_slice(&(n + 1).to_be_bytes());
    for _ in 0..n {
        wire.extend_from_slice(&[0xa1, 0x00, 0x00]);
    }
    wire.push(0x1c);
    let mut codec = CborCodec::<serde_cbor::Value>::new();
    let mut buf = BytesMut::from(&wire[..]);
    for _ in 0..3 {
        let (r, peak) = alloc_probe::peak(|| codec.decode(&mut buf).map(|v| v.is_some()));
        assert!(r.is_err(), "reserved additional information");
        assert_eq!(buf.len(), wire.len());
        assert!(
            peak < 8 << 20,
            "{peak} bytes allocated for a {} byte item",
            wire.len()
        );
    }
}
