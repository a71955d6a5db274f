//! A fault-injecting TCP proxy between two loopback endpoints.
//!
//! Every accepted connection is forwarded to `upstream`. Each direction of
//! each connection re-segments what it forwards (pieces of 1 byte to
//! 64 KiB, small ones more often), sleeps between pieces, now and then
//! stalls for a longer while, and, for a chosen share of connections,
//! resets both sockets (RST, through `SO_LINGER` 0) after a random number
//! of bytes. All choices come from one seed (a connection's plan from the
//! seed, its index and the direction), so a failing run names its seed and
//! the same faults are planned when it runs again; the kernel's timing may
//! still differ.
#![allow(dead_code, unreachable_pub)]

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A small deterministic generator (SplitMix64): enough for fault plans.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    /// A size in `1..=max`, log-uniform: 1-byte pieces as likely as
    /// 32 KiB ones.
    pub fn size(&mut self, max: usize) -> usize {
        let bits = 64 - (max as u64).leading_zeros() as u64;
        let top = self.range(0, bits.saturating_sub(1));
        (self.range(1u64 << top, (2u64 << top) - 1) as usize).min(max)
    }
}

/// The seed of a test run: `ANYFRAME_FAULT_SEED` when set (to replay a
/// failure), otherwise from the clock. Printed either way.
pub fn seed(test: &str) -> u64 {
    let seed = match std::env::var("ANYFRAME_FAULT_SEED") {
        Ok(s) => s.parse().expect("ANYFRAME_FAULT_SEED is a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    };
    println!("{test}: seed {seed} (replay with ANYFRAME_FAULT_SEED={seed})");
    seed
}

/// What the proxy does to the bytes it forwards.
#[derive(Debug, Clone)]
pub struct Faults {
    pub seed: u64,
    /// The largest piece forwarded in one write (1..=65536).
    pub max_segment: usize,
    /// The chance of a sleep before a piece, and the longest such sleep.
    pub delay_chance: f64,
    pub max_delay: Duration,
    /// The chance, per piece, that this direction stalls, and for how long.
    pub stall_chance: f64,
    pub stall: Duration,
    /// The share of connections that are reset after a random number of
    /// bytes (at most `reset_within`) in one direction.
    pub reset_share: f64,
    pub reset_within: u64,
}

impl Faults {
    /// Re-segmentation and small delays only: nothing is lost.
    pub fn gentle(seed: u64) -> Faults {
        Faults {
            seed,
            max_segment: 64 * 1024,
            delay_chance: 0.05,
            max_delay: Duration::from_millis(3),
            stall_chance: 0.002,
            stall: Duration::from_millis(150),
            reset_share: 0.0,
            reset_within: 0,
        }
    }

    /// As [`gentle`](Self::gentle), and `share` of connections reset.
    pub fn with_resets(seed: u64, share: f64, within: u64) -> Faults {
        Faults {
            reset_share: share,
            reset_within: within,
            ..Faults::gentle(seed)
        }
    }
}

/// What the proxy did.
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub connections: AtomicU64,
    /// Planned resets carried out.
    pub resets: AtomicU64,
    pub stalls: AtomicU64,
    pub bytes: AtomicU64,
    pub segments: AtomicU64,
}

/// A running proxy; stops accepting (and cuts what it forwards) when
/// dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    pub stats: Arc<ProxyStats>,
    task: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Listens on an ephemeral loopback port, forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr, faults: Faults) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(ProxyStats::default());
        let st = stats.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            let mut index = 0u64;
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((down, _)) = accepted else { continue };
                        index += 1;
                        st.connections.fetch_add(1, Ordering::Relaxed);
                        conns.spawn(connection(down, upstream, faults.clone(), index, st.clone()));
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Proxy { addr, stats, task }
    }
}

/// Why a direction stopped.
enum Stop {
    /// End of input, passed on as a half-close.
    Eof,
    /// The planned reset point.
    Reset,
    Failed(io::Error),
}

async fn connection(
    down: TcpStream,
    upstream: SocketAddr,
    faults: Faults,
    index: u64,
    stats: Arc<ProxyStats>,
) {
    let Ok(up) = TcpStream::connect(upstream).await else {
        reset(&down);
        return;
    };
    let _ = down.set_nodelay(true);
    let _ = up.set_nodelay(true);
    let mut plan = Rng::new(faults.seed ^ index.wrapping_mul(0x2545_f491_4f6c_dd1d));
    // Which direction resets, and after how many of its bytes.
    let reset_at = if plan.chance(faults.reset_share) {
        let dir = plan.range(0, 1);
        Some((dir, plan.range(0, faults.reset_within)))
    } else {
        None
    };
    let at = |dir| reset_at.filter(|(d, _)| *d == dir).map(|(_, n)| n);
    let (mut dr, mut dw) = down.into_split();
    let (mut ur, mut uw) = up.into_split();
    let cut = {
        let a = pump(
            &mut dr,
            &mut uw,
            Rng::new(plan.next_u64()),
            &faults,
            at(0),
            &stats,
        );
        let b = pump(
            &mut ur,
            &mut dw,
            Rng::new(plan.next_u64()),
            &faults,
            at(1),
            &stats,
        );
        tokio::pin!(a, b);
        let (mut a_done, mut b_done) = (false, false);
        loop {
            tokio::select! {
                s = &mut a, if !a_done => match s {
                    Stop::Eof => a_done = true,
                    _ => break true,
                },
                s = &mut b, if !b_done => match s {
                    Stop::Eof => b_done = true,
                    _ => break true,
                },
                else => break false,
            }
        }
    };
    // A planned reset, or a failure on one side (passed on as a reset).
    if cut {
        reset(dr.as_ref());
        reset(ur.as_ref());
    }
}

/// `SO_LINGER` 0: the close that follows sends RST, not FIN.
fn reset(s: &TcpStream) {
    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
}

async fn pump(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    mut rng: Rng,
    faults: &Faults,
    reset_at: Option<u64>,
    stats: &ProxyStats,
) -> Stop {
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0u64;
    loop {
        if reset_at == Some(sent) {
            stats.resets.fetch_add(1, Ordering::Relaxed);
            return Stop::Reset;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) => {
                let _ = to.shutdown().await;
                return Stop::Eof;
            }
            Ok(n) => n,
            Err(e) => return Stop::Failed(e),
        };
        let mut off = 0;
        while off < n {
            let mut len = rng.size(faults.max_segment).min(n - off);
            if let Some(at) = reset_at {
                if sent == at {
                    stats.resets.fetch_add(1, Ordering::Relaxed);
                    return Stop::Reset;
                }
                len = len.min((at - sent) as usize);
            }
            if rng.chance(faults.stall_chance) {
                stats.stalls.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(faults.stall).await;
            } else if rng.chance(faults.delay_chance) {
                let us = rng.range(0, faults.max_delay.as_micros() as u64);
                tokio::time::sleep(Duration::from_micros(us)).await;
            }
            if let Err(e) = to.write_all(&buf[off..off + len]).await {
                return Stop::Failed(e);
            }
            off += len;
            sent += len as u64;
            stats.bytes.fetch_add(len as u64, Ordering::Relaxed);
            stats.segments.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// VmRSS of this process in KiB, from `/proc/self/status` (None elsewhere).
pub fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
