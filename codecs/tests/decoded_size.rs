//! How much memory a decoded `serde_json::Value` / `serde_cbor::Value` takes
//! compared with its text, measured with a counting allocator. The figures
//! in the `JsonCodec` and `CborCodec` docs ("Memory") come from here, and
//! the bounds asserted are the ones those docs promise.
//!
//! One test function on purpose: the allocator's counter is global, and
//! tests in one binary run on parallel threads.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyframe_codecs::{CborCodec, JsonCodec};
use bytes::BytesMut;
use tokio_util::codec::Decoder;

/// The system allocator, counting the bytes live at any moment.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Size of each text measured: large enough for the per-text overhead to
/// vanish, small enough to keep the test's memory modest.
const TEXT: usize = 256 * 1024;

/// A JSON array of `item` repeated until the text is about `TEXT` bytes.
fn json_array(item: &str) -> Vec<u8> {
    let n = TEXT / (item.len() + 1);
    let mut out = Vec::with_capacity(TEXT + 2);
    out.push(b'[');
    for i in 0..n {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item.as_bytes());
    }
    out.extend_from_slice(b"]\n");
    out
}

/// A CBOR array (definite length) of `item` repeated to about `TEXT` bytes.
fn cbor_array(item: &[u8]) -> Vec<u8> {
    let n = TEXT / item.len();
    let mut out = vec![0x9a];
    out.extend_from_slice(&(n as u32).to_be_bytes());
    for _ in 0..n {
        out.extend_from_slice(item);
    }
    out
}

/// Bytes held by the value `decoder` makes of `wire`, per byte of `wire`.
fn ratio<D: Decoder<Error = anyframe_codecs::Error>>(mut decoder: D, wire: &[u8]) -> f64 {
    let mut buf = BytesMut::from(wire);
    let before = LIVE.load(Ordering::Relaxed);
    let value = decoder.decode(&mut buf).unwrap().expect("one value");
    let held = LIVE.load(Ordering::Relaxed) - before;
    drop(value);
    held as f64 / wire.len() as f64
}

#[test]
fn decoded_value_size_per_byte_of_text() {
    let json = [
        (
            "typical objects",
            r#"{"id":12345,"name":"user-012345","tags":["alpha","beta"],"score":12.5,"active":true,"note":null}"#,
        ),
        ("numbers", "0"),
        ("empty strings", r#""""#),
        ("empty arrays", "[]"),
        ("one-key objects", r#"{"":0}"#),
    ];
    let mut worst_json: f64 = 0.0;
    for (name, item) in json {
        let r = ratio(JsonCodec::<serde_json::Value>::new(), &json_array(item));
        println!("json {name}: {r:.1} bytes of Value per byte of text");
        worst_json = worst_json.max(r);
    }
    let cbor: [(&str, &[u8]); 5] = [
        (
            "typical objects",
            &serde_cbor::to_vec(&serde_json::json!({
                "id": 12345, "name": "user-012345", "tags": ["alpha", "beta"],
                "score": 12.5, "active": true, "note": null,
            }))
            .unwrap(),
        ),
        ("numbers", &[0x00]),
        ("empty byte strings", &[0x40]),
        ("empty arrays", &[0x80]),
        ("one-entry maps", &[0xa1, 0x00, 0x00]),
    ];
    let mut worst_cbor: f64 = 0.0;
    for (name, item) in cbor {
        let r = ratio(CborCodec::<serde_cbor::Value>::new(), &cbor_array(item));
        println!("cbor {name}: {r:.1} bytes of Value per byte of item");
        worst_cbor = worst_cbor.max(r);
    }
    // The bounds the docs give for sizing `max_size` (see "Memory").
    assert!(worst_json <= 110.0, "JSON worst case {worst_json:.1}x");
    assert!(worst_cbor <= 280.0, "CBOR worst case {worst_cbor:.1}x");
}
