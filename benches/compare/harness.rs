//! A tiny benchmark harness: median of N repetitions, ratio against an anchor
//! measured in the same run, one parseable line per scenario.

use std::hint::black_box;
use std::time::{Duration, Instant};

/// Runs scenarios and prints their lines.
pub struct Harness {
    filter: Option<String>,
    reps: usize,
    started: Instant,
}

/// One measured side of a scenario.
#[derive(Clone, Copy, Debug)]
pub struct Measured {
    /// Median wall time of one repetition.
    pub median: Duration,
    /// Items processed per repetition.
    pub items: u64,
}

impl Measured {
    /// The median of `samples` (times of one repetition each).
    pub fn median_of(samples: &[Duration], items: u64) -> Measured {
        let mut sorted = samples.to_vec();
        sorted.sort();
        Measured {
            median: sorted[sorted.len() / 2],
            items,
        }
    }

    /// Items per second at the median.
    pub fn rate(&self) -> f64 {
        self.items as f64 / self.median.as_secs_f64()
    }
}

impl Harness {
    pub fn from_env() -> Harness {
        // `cargo bench` passes `--bench`; any other non-flag argument filters.
        let filter = std::env::args()
            .skip(1)
            .find(|a| !a.starts_with("--"))
            .or_else(|| std::env::var("BENCH_FILTER").ok())
            .filter(|f| !f.is_empty());
        let reps = std::env::var("BENCH_REPS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(5usize)
            .max(1);
        Harness {
            filter,
            reps,
            started: Instant::now(),
        }
    }

    pub fn header(&self) {
        println!(
            "# anyframe compare bench: {} reps (median), cores={}",
            self.reps,
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        );
    }

    pub fn footer(&self) {
        println!(
            "# total wall time {:.1} s",
            self.started.elapsed().as_secs_f64()
        );
    }

    /// Whether a scenario is selected by the filter.
    pub fn wants(&self, scenario: &str) -> bool {
        self.filter.as_deref().is_none_or(|f| scenario.contains(f))
    }

    /// The configured number of repetitions.
    pub fn reps(&self) -> usize {
        self.reps
    }

    /// Times `f` (which processes `items` items per call) `reps` times and
    /// returns the median. `f` returns a value that is black-boxed.
    pub fn time<T>(&self, items: u64, mut f: impl FnMut() -> T) -> Measured {
        self.time_n(self.reps, items, &mut f)
    }

    /// As [`time`](Self::time) with an explicit repetition count.
    pub fn time_n<T>(&self, reps: usize, items: u64, mut f: impl FnMut() -> T) -> Measured {
        let samples: Vec<Duration> = (0..reps.max(1))
            .map(|_| {
                let t = Instant::now();
                black_box(f());
                t.elapsed()
            })
            .collect();
        Measured::median_of(&samples, items)
    }

    /// Prints the scenario line, and returns the ratio ours/anchor.
    pub fn report(&self, scenario: &str, ours: Measured, anchor: Measured) -> f64 {
        self.report_with(scenario, ours, anchor, "")
    }

    /// As [`report`](Self::report) with extra `key=value` fields appended.
    pub fn report_with(
        &self,
        scenario: &str,
        ours: Measured,
        anchor: Measured,
        extra: &str,
    ) -> f64 {
        let ratio = ours.rate() / anchor.rate();
        let sep = if extra.is_empty() { "" } else { " " };
        println!(
            "scenario={scenario} ours={:.0} anchor={:.0} ratio={ratio:.2}{sep}{extra}",
            ours.rate(),
            anchor.rate(),
        );
        ratio
    }

    /// As [`report_with`](Self::report_with) with a ratio computed by the
    /// caller (the median of per-round ratios, for interleaved rounds).
    pub fn report_ratio(
        &self,
        scenario: &str,
        ours: Measured,
        anchor: Measured,
        ratio: f64,
        extra: &str,
    ) -> f64 {
        let sep = if extra.is_empty() { "" } else { " " };
        println!(
            "scenario={scenario} ours={:.0} anchor={:.0} ratio={ratio:.2}{sep}{extra}",
            ours.rate(),
            anchor.rate(),
        );
        ratio
    }

    /// Reports interleaved rounds: `ours[i]` and `anchor[i]` are the times
    /// of round `i`, each for `items` items. The rates are the medians of
    /// each side; the ratio is the median of the per-round ratios.
    pub fn report_rounds(
        &self,
        scenario: &str,
        ours: &[Duration],
        anchor: &[Duration],
        items: u64,
        extra: &str,
    ) -> f64 {
        self.report_ratio(
            scenario,
            Measured::median_of(ours, items),
            Measured::median_of(anchor, items),
            median_ratio(ours, anchor),
            extra,
        )
    }

    /// Prints a line for a figure that has no anchor (a physical limit, a
    /// scaling figure).
    pub fn note(&self, scenario: &str, fields: &str) {
        println!("scenario={scenario} {fields}");
    }
}

/// The median over rounds of the rate ratio `other / base`, each taken
/// within one round (`other[i]` and `base[i]` are times of round `i`).
pub fn median_ratio(other: &[Duration], base: &[Duration]) -> f64 {
    let mut r: Vec<f64> = other
        .iter()
        .zip(base)
        .map(|(o, b)| b.as_secs_f64() / o.as_secs_f64())
        .collect();
    r.sort_by(f64::total_cmp);
    r[r.len() / 2]
}
