//! `cargo bench --bench compare`: every benchmark scenario, each side by
//! side with its anchor in the same run.
//!
//! Prints one line per scenario:
//! `scenario=<name> ours=<items/s> anchor=<items/s> ratio=<ours/anchor>`.
//! A positional argument (or `BENCH_FILTER`) keeps only the scenarios whose
//! name contains it; `BENCH_REPS` sets the repetitions (default 5, median).

mod codecs_bytes;
mod codecs_json;
mod engine;
mod harness;
mod limits;

fn main() {
    let h = harness::Harness::from_env();
    h.header();
    // Each area registers its scenarios here.
    codecs_bytes::run(&h);
    codecs_json::run(&h);
    engine::run(&h);
    limits::run(&h);
    h.footer();
}
