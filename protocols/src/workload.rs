//! Seeded request workloads shared by the tests and benchmarks.

use bytes::Bytes;

/// The largest value the pipelined workloads use: 1 MiB.
pub const MAX_VALUE: usize = 1024 * 1024;

/// A small seeded generator (xorshift64*): the same seed gives the same
/// workload on every run and machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; 0 is remapped).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A size between `lo` and `hi` bytes, uniform on a log scale (so
    /// every power of two between them is as likely).
    pub fn log_uniform(&mut self, lo: usize, hi: usize) -> usize {
        let (lo, hi) = ((lo.max(1)) as f64, hi as f64);
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        (lo * (hi / lo).powf(u)) as usize
    }

    /// A value size from 0 B to 1 MiB, skewed small so 10,000 of them move
    /// tens of megabytes, not gigabytes, and still reach the large end:
    /// 0.1% exactly [`MAX_VALUE`], 0.9% log-uniform in 4 KiB–1 MiB, 1%
    /// empty, the rest log-uniform in 1 B–4 KiB (mean ≈ 3 KiB).
    pub fn value_size(&mut self) -> usize {
        match self.below(1000) {
            0 => MAX_VALUE,
            1..=9 => self.log_uniform(4096, MAX_VALUE),
            10..=19 => 0,
            _ => self.log_uniform(1, 4096),
        }
    }
}

/// A value of `len` bytes whose content depends on `i` (so a reply for the
/// wrong request is caught), printable and free of `\r\n`.
pub fn value(i: usize, len: usize) -> Bytes {
    let start = (i.wrapping_mul(7919)) % 26;
    (0..len)
        .map(|j| b'a' + ((start + j) % 26) as u8)
        .collect::<Vec<u8>>()
        .into()
}
