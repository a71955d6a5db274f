//! anyframe: AnyEvent::Handle's queued framing for tokio.
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![doc(test(attr(deny(warnings))))]

pub use anyframe_codecs as codecs;
