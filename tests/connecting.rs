//! Ending a connection while it is still connecting (OPT-2): the last
//! handle dropped, `destroy`, `detach`, and a retry hook that panics.
//! Loopback only; every await is bounded. The stalled listener relies on
//! Linux dropping SYNs to a full accept queue.

#[path = "support/net.rs"]
mod net;

use std::net::SocketAddr;
use std::time::Duration;

use anyframe::codecs::LineCodec;
use anyframe::{ErrorKind, QueuedFramed, RetryHook};
use net::stalled_listener;

async fn within<F: std::future::Future>(what: &str, secs: u64, f: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(secs), f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: still pending after {secs} s"),
    }
}

/// A port nobody listens on.
fn refused_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

// ----- the connecting phase ignores destroy, detach and the last handle ------

/// LC-3/drive: dropping the last handle fails what is queued with `Closed`
/// ("Nobody can queue reads any more; fail what is queued"). While the
/// connect is in progress nothing does.
#[tokio::test]
async fn dropping_every_handle_while_connecting_fails_the_queued_read() {
    let st = stalled_listener();
    let mut b = QueuedFramed::builder();
    b.linger(Duration::ZERO);
    let (h, d) = b.spawn_connect(st.addr);
    let t = h.push_read(LineCodec::new());
    drop(h);
    let e = within("queued read after the last handle went", 3, t)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed);
    within("driver", 3, d).await.ok();
}

/// LC-1: `destroy()` ends the connection; the `Driver` resolves "when the
/// connection ends (fatal error, destroy, every handle dropped)".
#[tokio::test]
async fn destroy_while_connecting_ends_the_driver() {
    let st = stalled_listener();
    let (h, d) = QueuedFramed::builder().spawn_connect(st.addr);
    let t = h.push_read(LineCodec::new());
    h.destroy();
    let e = within("ticket", 3, t).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed);
    // Whatever it returns, it must return: the connection was destroyed.
    let _ = within("driver after destroy while connecting", 3, d).await;
}

/// Dropping every handle while connecting, with nothing queued, ends the
/// driver.
#[tokio::test]
async fn dropping_every_handle_while_connecting_ends_the_driver() {
    let st = stalled_listener();
    let (h, d) = QueuedFramed::builder().spawn_connect(st.addr);
    drop(h);
    let _ = within("driver after every handle dropped while connecting", 3, d).await;
}

/// `detach()`: "pending requests fail with Closed".
#[tokio::test]
async fn detach_while_connecting_fails_pending_requests() {
    let st = stalled_listener();
    let (h, _d) = QueuedFramed::builder().spawn_connect(st.addr);
    let t = h.push_read(LineCodec::new());
    h.detach();
    let e = within("ticket after detach while connecting", 3, t)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed);
}

/// LC-1: after `destroy()` the connection is over; a connect still in
/// progress must not go on to open a connection to the peer.
#[tokio::test]
async fn destroy_while_connecting_opens_no_connection_later() {
    let st = stalled_listener();
    let mut b = QueuedFramed::builder();
    b.linger(Duration::ZERO);
    let (h, _d) = b.spawn_connect(st.addr);
    // Let the first SYN go out (and be dropped).
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.destroy();
    assert!(h.is_closed());
    // Free the accept queue: the connect's SYN retransmit (about 1 s
    // later) now gets through if the attempt was not abandoned.
    let std_listener: std::net::TcpListener = st.listener.into();
    std_listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
    let (filler, _) = within("accept the filler", 3, listener.accept())
        .await
        .unwrap();
    drop(filler);
    drop(st.filler);
    let late = tokio::time::timeout(Duration::from_secs(4), listener.accept()).await;
    assert!(
        late.is_err(),
        "a connection destroyed while connecting was opened anyway: {:?}",
        late.map(|r| r.map(|(_, a)| a))
    );
}

/// ERR-5: `Panicked` (`ECANCELED`) is the kind for "a user callback
/// (completion, decoder, encoder, hook) panicked inside the engine". A
/// retry hook that panics on a spawned connect leaves the queued requests
/// with `Closed` instead.
#[tokio::test]
async fn a_panicking_retry_hook_fails_queued_requests_with_panicked() {
    let mut b = QueuedFramed::builder();
    b.retry_hook(RetryHook::new(|_, _| panic!("retry hook panics")));
    let (h, d) = b.spawn_connect(refused_addr());
    let t = h.push_read(LineCodec::new());
    let e = within("queued read", 5, t).await.unwrap_err();
    let driver = within("driver", 5, tokio::spawn(d)).await;
    assert!(
        driver.unwrap_err().is_panic(),
        "the Driver resumes the panic"
    );
    assert_eq!(e.kind(), ErrorKind::Panicked, "{e}");
}

/// LC-3 while connecting: output queued before the last handle went is
/// still written once the connect succeeds (fire and forget), within the
/// linger period.
#[tokio::test]
async fn output_queued_while_connecting_lingers_out_after_the_last_handle_goes() {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (h, driver) = QueuedFramed::builder().spawn_connect(addr);
    h.push_write(LineCodec::new(), "hello").unwrap();
    drop(h);
    let (mut peer, _) = within("accept", 5, listener.accept()).await.unwrap();
    let mut got = Vec::new();
    within("read", 5, peer.read_to_end(&mut got)).await.unwrap();
    assert_eq!(got, b"hello\n");
    let _ = within("driver", 5, driver).await;
}

/// LC-3 bounds the whole wait: output queued while connecting, the last
/// handle dropped (or `destroy`), and a connect that stays in progress (a
/// full accept queue, no connect timeout): the driver ends once the linger
/// period is over, not when the system gives the connect up minutes later.
#[tokio::test]
async fn the_linger_period_bounds_the_wait_for_a_stalled_connect() {
    for destroy in [false, true] {
        let stalled = stalled_listener();
        let mut b = QueuedFramed::builder();
        b.linger(Duration::from_millis(300));
        let (h, driver) = b.spawn_connect(stalled.addr);
        h.push_write(LineCodec::new(), "hello").unwrap();
        if destroy {
            h.destroy();
        } else {
            drop(h);
        }
        let started = std::time::Instant::now();
        let ended = within("the driver", 5, driver).await;
        assert!(ended.is_err(), "nothing connected: {ended:?}");
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "the output was not given its linger period"
        );
        drop(stalled);
    }
}

// ----- the connect timeout -------------------------------------------------

/// `connect_timeout(0)` turns the timeout off, as zero does for every other
/// timeout: a connect still in progress is not failed on its first poll
/// (a zero-length deadline would make the outcome hang on the latency).
#[tokio::test]
async fn a_zero_connect_timeout_is_off_not_an_instant_deadline() {
    let stalled = stalled_listener();
    let r = tokio::time::timeout(
        Duration::from_millis(500),
        QueuedFramed::builder()
            .connect_timeout(Duration::ZERO)
            .connect(stalled.addr),
    )
    .await;
    assert!(
        r.is_err(),
        "the connect ended at once: {:?}",
        r.map(|r| r.map(|_| ()))
    );
}

/// Counts the warnings logged on this thread.
struct CountWarnings(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl tracing::Subscriber for CountWarnings {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() == tracing::Level::WARN {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Socket options (`no_delay`, `keepalive`) are applied where the builder
/// makes the socket's handle (`build_tcp`, `connect`); `build` takes any
/// transport and cannot apply them, so it says so (a warning) instead of
/// dropping them in silence. A builder without them warns about nothing.
#[test]
fn socket_options_the_transport_cannot_take_are_not_dropped_silently() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let warnings = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = || warnings.load(std::sync::atomic::Ordering::Relaxed);
    let sub = CountWarnings(warnings.clone());
    tracing::subscriber::with_default(sub, || {
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let mut b = QueuedFramed::builder();
            b.no_delay(true);

            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let conn = b.build_tcp(stream).unwrap();
            assert_eq!(counted(), 0, "build_tcp applies them");
            assert!(conn.get_ref().nodelay().unwrap());

            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let conn = b.build(stream);
            assert!(!conn.get_ref().nodelay().unwrap(), "build cannot apply it");
            assert_eq!(counted(), 1, "build says the option was not applied");

            let (io, _peer) = tokio::io::duplex(64);
            let _ = QueuedFramed::builder().build(io);
            assert_eq!(counted(), 1, "no socket option, no warning");
        });
    });
}
