//! A completion that panics (user code is untrusted: "A completion
//! ... that panics makes the connection fail (fatal); every other request
//! and waiter resolves with that error", docs/semantics.md:628) while it
//! owns the last handle of another connection, whose own completion is
//! at that moment asking for the first connection's state. Unwinding drops
//! the captured handle; a `Drop` that waited for the other engine would
//! meet the cycle check during the unwinding and abort the process.
//!
//! The scenario runs in a child process (an abort would end this one).

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyframe::codecs::LineCodec;
use anyframe::{ErrorKind, QueuedFramed};
use tokio::io::AsyncWriteExt;

#[path = "support/watched.rs"]
mod watched;

const NAME: &str =
    "a_completion_panicking_with_the_last_handle_of_a_busy_connection_does_not_abort";

fn spin_until(flag: &AtomicUsize, v: usize) {
    let start = Instant::now();
    while flag.load(Ordering::SeqCst) < v && start.elapsed() < Duration::from_secs(3) {
        std::hint::spin_loop();
    }
}

fn child() {
    let got = watched::on_two_workers(Duration::from_secs(6), || async move {
        let (a_io, mut a_peer) = tokio::io::duplex(1 << 16);
        let (b_io, mut b_peer) = tokio::io::duplex(1 << 16);
        let (a, _da) = QueuedFramed::new(a_io).spawn();
        let (b, _db) = QueuedFramed::new(b_io).spawn();
        let step = Arc::new(AtomicUsize::new(0));
        let (s, a2) = (step.clone(), a.clone());
        // B's completion asks A's state (a query: it may wait for A).
        let tb = b.push_read_with(LineCodec::new(), move |_, _| {
            s.store(1, Ordering::SeqCst);
            Ok(a2.write_buffered())
        });
        let s = step.clone();
        let b_last = b; // the only handle to B, owned by A's completion
        let ta = a.push_read_with(LineCodec::new(), move |_, _| -> anyframe::Result<()> {
            let _keep = &b_last;
            spin_until(&s, 1);
            std::thread::sleep(Duration::from_millis(100));
            panic!("a bug in a user completion");
        });
        a_peer.write_all(b"go\n").await.unwrap();
        // A's completion is running (A's engine held) before B's starts.
        tokio::time::sleep(Duration::from_millis(50)).await;
        b_peer.write_all(b"go\n").await.unwrap();
        let ra = ta.await.map_err(|e| e.kind());
        let rb = tb.await.map(|_| ()).map_err(|e| e.kind());
        (ra, rb)
    })
    .expect("no hang");
    // A fails with Panicked; B's query then gets its answer (or the error).
    assert_eq!(got.0, Err(ErrorKind::Panicked));
    println!("CHILD OK {got:?}");
}

#[test]
fn a_completion_panicking_with_the_last_handle_of_a_busy_connection_does_not_abort() {
    if std::env::var_os("ANYFRAME_PROBE_CHILD").is_some() {
        child();
        return;
    }
    let mut proc = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", NAME, "--nocapture", "--test-threads", "1"])
        .env("ANYFRAME_PROBE_CHILD", "1")
        .env("RUST_BACKTRACE", "0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = proc.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(9) {
            let _ = proc.kill();
            break proc.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = proc.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: String = stderr
        .lines()
        .filter(|l| l.contains("panicked") || l.contains("abort") || l.contains("anyframe:"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        status.success() && stdout.contains("CHILD OK"),
        "child {status:?}\nstdout: {stdout}\nstderr (panics): {tail}"
    );
}
