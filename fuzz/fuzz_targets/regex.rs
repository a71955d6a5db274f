//! Regex codec. Its frames depend on how the input was split (docs/semantics.md §2a,
//! RT-regex-1/2), so this target only checks, on the whole input and on the
//! fuzzer's chunking: no panic, no hang, every frame consumes bytes and is
//! at most `max_length` long, nothing waits with more than `max_length`
//! bytes buffered, and frames are the input in order up to the first error.
//!
//! config: bits 0-2 pick the accept/reject/skip set, bits 3-4 max length.
#![no_main]

use std::sync::OnceLock;

use anyframe_codecs::RegexCodec;
use anyframe_fuzz::{Checks, Event, Input, run};
use libfuzzer_sys::fuzz_target;
use regex::bytes::Regex;

struct Set {
    accept: Regex,
    reject: Option<Regex>,
    skip: Option<Regex>,
}

fn sets() -> &'static [Set] {
    static SETS: OnceLock<Vec<Set>> = OnceLock::new();
    SETS.get_or_init(|| {
        let re = |s: &str| Regex::new(s).unwrap();
        vec![
            Set {
                accept: re(r"\r\n\r\n"),
                reject: Some(re(r"\x00")),
                skip: None,
            },
            Set {
                accept: re("a|ab"),
                reject: None,
                skip: None,
            },
            Set {
                accept: re("END"),
                reject: None,
                skip: Some(re("^[^E]*")),
            },
            Set {
                accept: re("[;,]+"),
                reject: Some(re("X{3}")),
                skip: None,
            },
            Set {
                accept: re(r"\n"),
                reject: Some(re(r"[^\x20-\x7e\r\n]")),
                skip: Some(re(r"^\s+")),
            },
            Set {
                accept: re(r"^(?s).{4}"),
                reject: None,
                skip: None,
            },
            Set {
                accept: re(r"\d+\.\d+"),
                reject: Some(re(r"\.\.")),
                skip: Some(re(r"^\D+")),
            },
            Set {
                accept: re("(?-u:\\xff)+"),
                reject: Some(re("^x")),
                skip: Some(re("^.*")),
            },
        ]
    })
}

const MAX_LENGTHS: [usize; 4] = [1, 4, 64, anyframe_codecs::DEFAULT_REGEX_MAX_LENGTH];

fuzz_target!(|raw: &[u8]| {
    let Some(input) = Input::parse(raw) else {
        return;
    };
    let set = &sets()[usize::from(input.config & 7)];
    let max = MAX_LENGTHS[usize::from((input.config >> 3) & 3)];
    let make = || {
        let mut b = RegexCodec::builder(set.accept.clone());
        if let Some(r) = &set.reject {
            b.reject(r.clone());
        }
        if let Some(s) = &set.skip {
            b.skip(s.clone());
        }
        b.max_length(max).build()
    };
    let Ok(_) = make() else {
        return;
    };
    let checks = Checks {
        bound: Some(max),
        progress: true,
    };
    for chunks in [vec![input.data], input.chunks()] {
        let out = run(make().unwrap(), &chunks, checks);
        let mut joined = Vec::new();
        for e in &out.events {
            match e {
                Event::Frame(f) => {
                    assert!(f.len() <= max, "frame of {} bytes, max {max}", f.len());
                    joined.extend_from_slice(f);
                }
                Event::Error(_) => break,
            }
        }
        assert_eq!(joined, input.data[..joined.len()]);
    }
});
