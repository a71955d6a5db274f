//! Helpers for the server loop's tests: builders with one timer, services
//! with large answers, and clients that read slowly.
#![allow(dead_code)]

use std::convert::Infallible;
use std::time::Duration;

use anyframe::codecs::Utf8Line;
use anyframe::{QueuedFramed, Timeout};
use tokio::io::AsyncReadExt;

use crate::support::within;

/// Milliseconds.
pub const MS: fn(u64) -> Duration = Duration::from_millis;
/// One second: the period the tests' timers use.
pub const SEC: Duration = Duration::from_secs(1);

/// A builder with `which` timer set to `period`.
pub fn builder_with(which: Timeout, period: Duration) -> anyframe::Builder {
    let mut builder = QueuedFramed::builder();
    match which {
        Timeout::Read => builder.rtimeout(period),
        Timeout::Idle => builder.timeout(period),
        _ => builder.wtimeout(period),
    };
    builder
}

/// The answer [`big_answers`] gives `line`.
pub fn answer_of(line: &str, len: usize) -> String {
    format!("{line}:{}", "y".repeat(len))
}

/// A service that answers `line` with `line:` and `len` bytes of `y`.
pub fn big_answers(
    len: usize,
) -> impl tower::Service<
    Utf8Line,
    Response = String,
    Error = Infallible,
    Future = std::future::Ready<Result<String, Infallible>>,
> + Send
+ Clone {
    tower::service_fn(move |line: Utf8Line| std::future::ready(Ok(answer_of(line.line(), len))))
}

/// Reads `want` bytes from `rd`, at most `per_step` every `pause` (a
/// client that takes its answers slowly but steadily); stops early at end
/// of input. What it read.
pub async fn slow_read(
    rd: &mut (impl AsyncReadExt + Unpin),
    want: usize,
    per_step: usize,
    pause: Duration,
) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; per_step];
    while got.len() < want {
        tokio::time::sleep(pause).await;
        let step = per_step.min(want - got.len());
        let n = within("slow read", rd.read(&mut buf[..step]))
            .await
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    got
}

/// How a server task stands: its outcome if it has ended, else "still
/// running" (and it is stopped).
pub async fn state<T: std::fmt::Debug>(server: tokio::task::JoinHandle<T>) -> String {
    if server.is_finished() {
        format!("{:?}", server.await)
    } else {
        server.abort();
        "still running".to_owned()
    }
}

/// Runs the server loop on `io` in a task: `Utf8Line` requests to
/// `service`, its answers written as lines, with `builder`'s options.
pub fn spawn_line_server<S>(
    io: tokio::io::DuplexStream,
    builder: anyframe::Builder,
    service: S,
) -> tokio::task::JoinHandle<anyframe::Result<()>>
where
    S: tower::Service<Utf8Line> + Send + 'static,
    S::Future: Send,
    S::Response: AsRef<[u8]> + Send,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    use anyframe::codecs::{LineCodec, Utf8LineCodec};
    tokio::spawn(
        anyframe::service::serve(io, Utf8LineCodec::new(), LineCodec::new(), service)
            .connection(builder)
            .run(),
    )
}
