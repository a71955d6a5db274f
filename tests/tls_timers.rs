//! The connection's timers while a TLS switch runs (STARTTLS, stoptls,
//! auto-detection, `Builder::tls`), on both backends and both front ends.
//! Every wait is bounded.
#![cfg(any(feature = "tls", feature = "rustls"))]

mod support;

#[path = "support/pki.rs"]
mod pki;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyframe::codecs::{Line, LineCodec, TlsDetect};
use anyframe::tls::{TlsBackend, TlsMode, TlsServer};
use anyframe::{Builder, Driver, Handle, QueuedFramed, Requests, Ticket, Timeout};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

const MS: fn(u64) -> Duration = Duration::from_millis;

async fn bounded<F: std::future::Future>(limit: Duration, f: F) -> Option<F::Output> {
    tokio::time::timeout(limit, f).await.ok()
}

/// Copies `from` to `to` while the gate is open (checked before each
/// chunk of at most `chunk` bytes).
async fn gated_copy(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut gate: watch::Receiver<bool>,
    chunk: usize,
) {
    let mut buf = vec![0u8; chunk];
    loop {
        while !*gate.borrow() {
            if gate.changed().await.is_err() {
                return;
            }
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// `(a, b, up, down)`: `a` and `b` joined by a proxy with a gate each way
/// (a→b: `up`, b→a: `down`), both open at first. Small pipes, so a closed
/// gate soon pushes back on the writer.
fn gated_link(
    pipe: usize,
) -> (
    tokio::io::DuplexStream,
    tokio::io::DuplexStream,
    watch::Sender<bool>,
    watch::Sender<bool>,
) {
    let (a, pa) = tokio::io::duplex(pipe);
    let (b, pb) = tokio::io::duplex(pipe);
    let (ar, aw) = tokio::io::split(pa);
    let (br, bw) = tokio::io::split(pb);
    let (up, up_rx) = watch::channel(true);
    let (down, down_rx) = watch::channel(true);
    tokio::spawn(gated_copy(ar, bw, up_rx, pipe));
    tokio::spawn(gated_copy(br, aw, down_rx, pipe));
    (a, b, up, down)
}

/// A TLS server of backend `b` on `s` (inline) that, once TLS is up, echoes
/// one line, then keeps the connection open for a while.
fn tls_echo_server(
    b: TlsBackend,
    s: tokio::io::DuplexStream,
    delay: Duration,
) -> tokio::task::JoinHandle<anyframe::Result<()>> {
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let mut conn = QueuedFramed::builder().tls(pki::localhost_on(b)).build(s);
        let line = conn.read(LineCodec::new()).await?;
        conn.write(LineCodec::new(), line.line()).await?;
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok(())
    })
}

/// One connection on either front end, so a test runs the same steps on
/// both: the inline `QueuedFramed`, driven by the awaiting task, or a
/// spawned `Handle` whose driver runs on its own.
enum Front<IO> {
    Inline(Box<QueuedFramed<IO>>),
    Spawned(Handle, Driver<IO>),
}

impl<IO> Front<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn build(builder: &Builder, io: IO, spawned: bool) -> Self {
        let conn = builder.build(io);
        if spawned {
            let (h, d) = conn.spawn();
            Front::Spawned(h, d)
        } else {
            Front::Inline(Box::new(conn))
        }
    }

    async fn starttls(&mut self, mode: TlsMode) -> anyframe::Result<()> {
        match self {
            Front::Inline(c) => c.starttls(mode).await,
            Front::Spawned(h, _) => h.starttls(mode).await,
        }
    }

    fn push_starttls(&mut self, mode: TlsMode) -> Ticket<()> {
        match self {
            Front::Inline(c) => c.push_starttls(mode),
            Front::Spawned(h, _) => h.starttls(mode),
        }
    }

    fn push_read_line(&mut self) -> Ticket<Line> {
        match self {
            Front::Inline(c) => c.push_read(LineCodec::new()),
            Front::Spawned(h, _) => h.push_read(LineCodec::new()),
        }
    }

    /// A queued request's answer (the inline front end is driven until
    /// it comes).
    async fn wait<T>(&mut self, ticket: Ticket<T>) -> anyframe::Result<T> {
        match self {
            Front::Inline(c) => c.wait(ticket).await,
            Front::Spawned(..) => ticket.await,
        }
    }

    async fn stoptls(&mut self) -> anyframe::Result<()> {
        match self {
            Front::Inline(c) => c.stoptls().await,
            Front::Spawned(h, _) => h.stoptls().await,
        }
    }

    async fn tls_autostart(&mut self, server: TlsServer) -> anyframe::Result<TlsDetect> {
        match self {
            Front::Inline(c) => c.tls_autostart(server).await,
            Front::Spawned(h, _) => h.push_tls_autostart(server).await,
        }
    }

    async fn read_line(&mut self) -> anyframe::Result<Line> {
        match self {
            Front::Inline(c) => c.read(LineCodec::new()).await,
            Front::Spawned(h, _) => h.push_read(LineCodec::new()).await,
        }
    }

    fn push_line(&mut self, line: &str) -> Result<(), String> {
        match self {
            Front::Inline(c) => c.push_write(LineCodec::new(), line),
            Front::Spawned(h, _) => h.push_write(LineCodec::new(), line),
        }
        .map_err(|e| e.to_string())
    }

    async fn flush(&mut self) -> anyframe::Result<()> {
        match self {
            Front::Inline(c) => c.flush().await,
            Front::Spawned(h, _) => h.flush().await,
        }
    }

    fn on_timeout(&mut self, hook: impl FnMut(Timeout, &mut Requests<'_>) + Send + 'static) {
        match self {
            Front::Inline(c) => c.on_timeout(hook),
            Front::Spawned(h, _) => h.on_timeout(hook),
        }
    }

    /// Lets the connection end once its output is out: the inline front
    /// end flushes; a spawned one drops its handle and awaits the driver.
    async fn finish(self) -> anyframe::Result<()> {
        match self {
            Front::Inline(mut c) => c.flush().await,
            Front::Spawned(h, d) => {
                drop(h);
                d.await.map(drop)
            }
        }
    }

    fn is_tls(&self) -> bool {
        match self {
            Front::Inline(c) => c.is_tls(),
            Front::Spawned(h, _) => h.is_tls(),
        }
    }
}

/// Reads lines until one that is not a non-fatal timeout (at most ten
/// tries, each bounded): a retry after a period expired while the peer
/// was still away.
async fn read_past_timeouts<IO>(conn: &mut Front<IO>) -> Result<Line, String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    for _ in 0..10 {
        match bounded(MS(5000), conn.read_line()).await {
            Some(Ok(l)) => return Ok(l),
            Some(Err(e)) if e.is_timeout() && !e.is_fatal() => continue,
            other => return Err(format!("read: {other:?}")),
        }
    }
    Err("no line after ten periods".into())
}

/// `tls_autostart` until its answer is not a non-fatal timeout (at most
/// ten tries, each bounded).
async fn autostart_past_timeouts<IO>(
    conn: &mut Front<IO>,
    b: TlsBackend,
) -> Result<anyframe::Result<TlsDetect>, String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut verdict = None;
    for _ in 0..10 {
        let v = bounded(MS(5000), conn.tls_autostart(pki::localhost_on(b)))
            .await
            .ok_or("autostart hung")?;
        let again = matches!(&v, Err(e) if e.is_timeout() && !e.is_fatal());
        verdict = Some(v);
        if !again {
            break;
        }
    }
    verdict.ok_or_else(|| "no try".into())
}

// ----- a peer that answers the ClientHello late ----------------------------------

/// TO-3: a STARTTLS whose peer answers late gets a non-fatal ETIMEDOUT;
/// a retry (a read queued behind the still-pending switch) resumes the
/// same handshake, and the data then goes over TLS, on both front ends.
#[tokio::test(start_paused = true)]
async fn a_starttls_timed_out_non_fatally_resumes_when_the_peer_answers() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        for spawned in [false, true] {
            for which in [Timeout::Idle, Timeout::Read] {
                let (c, s) = tokio::io::duplex(1 << 16);
                let server = tls_echo_server(b, s, MS(1000));
                let mut builder = QueuedFramed::builder();
                match which {
                    Timeout::Idle => builder.timeout(MS(300)),
                    _ => builder.rtimeout(MS(300)),
                };
                let r: Result<(), String> = async {
                    let mut conn = Front::build(&builder, c, spawned);
                    let e = bounded(MS(5000), conn.starttls(pki::client_on(b)))
                        .await
                        .ok_or("first starttls hung")?;
                    match &e {
                        Err(e) if e.is_timeout() && !e.is_fatal() => {}
                        other => return Err(format!("first: {other:?}")),
                    }
                    conn.push_line("ping")?;
                    // The next read may hear the next expiry while the
                    // server still sleeps: it retries until it answers.
                    let l = read_past_timeouts(&mut conn).await?;
                    match (l.line(), conn.is_tls()) {
                        (b"ping", true) => Ok(()),
                        (_, tls) => Err(format!("read {:?}, tls {tls}", l.line())),
                    }
                }
                .await;
                if let Err(e) = r {
                    failed.push(format!("{b:?} spawned={spawned} {which:?}: {e}"));
                }
                server.abort();
            }
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// Paused time jumping past many periods at once, every timer set to the
/// same period: the switch's waiter hears one non-fatal ETIMEDOUT, the
/// connection stays open, and the handshake finishes once the peer comes.
#[tokio::test(start_paused = true)]
async fn several_periods_at_once_during_a_handshake_tell_the_switch_once_and_keep_it() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        for spawned in [false, true] {
            let (c, s) = tokio::io::duplex(1 << 16);
            let builder = || {
                let mut bl = QueuedFramed::builder();
                bl.timeout(MS(100)).rtimeout(MS(100)).wtimeout(MS(100));
                bl
            };
            let r: Result<(), String> = async {
                if spawned {
                    let (h, _d) = builder().build(c).spawn();
                    let tls = h.starttls(pki::client_on(b));
                    // Let the driver start (timers, ClientHello out).
                    for _ in 0..10 {
                        tokio::task::yield_now().await;
                    }
                    tokio::time::advance(MS(1050)).await;
                    let r = bounded(MS(10), tls).await;
                    match &r {
                        Some(Err(e)) if e.is_timeout() && !e.is_fatal() => {}
                        other => return Err(format!("switch: {other:?}")),
                    }
                    if h.is_closed() {
                        return Err(format!("closed: {:?}", h.error()));
                    }
                    let server = tls_echo_server(b, s, MS(0));
                    h.push_write(LineCodec::new(), "ping")
                        .map_err(|e| e.to_string())?;
                    let mut last = None;
                    for _ in 0..5 {
                        match bounded(MS(5000), h.push_read(LineCodec::new())).await {
                            Some(Ok(l)) => {
                                last = Some(format!("{:?}", l.line()));
                                break;
                            }
                            other => last = Some(format!("{other:?}")),
                        }
                    }
                    server.abort();
                    if last.as_deref() != Some("[112, 105, 110, 103]") {
                        return Err(format!("after: {last:?}"));
                    }
                } else {
                    let mut conn = builder().build(c);
                    let tls = conn.push_starttls(pki::client_on(b));
                    // Drive it once (ClientHello out), then jump.
                    let _ = bounded(MS(10), conn.wait(tls)).await;
                    tokio::time::advance(MS(1050)).await;
                    let tls2 = conn.push_read(LineCodec::new());
                    let r = bounded(MS(50), conn.wait(tls2)).await;
                    match &r {
                        Some(Err(e)) if e.is_timeout() && !e.is_fatal() => {}
                        other => return Err(format!("read behind: {other:?}")),
                    }
                    let server = tls_echo_server(b, s, MS(0));
                    conn.push_write(LineCodec::new(), "ping")
                        .map_err(|e| e.to_string())?;
                    let mut last = None;
                    for _ in 0..5 {
                        match bounded(MS(5000), conn.read(LineCodec::new())).await {
                            Some(Ok(l)) => {
                                last = Some(format!("{:?}", l.line()));
                                break;
                            }
                            other => last = Some(format!("{other:?}")),
                        }
                    }
                    server.abort();
                    if last.as_deref() != Some("[112, 105, 110, 103]") {
                        return Err(format!("after: {last:?}"));
                    }
                }
                Ok(())
            }
            .await;
            if let Err(e) = r {
                failed.push(format!("{b:?} spawned={spawned}: {e}"));
            }
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

// ----- hooks during a handshake ------------------------------------------------------

/// TO-3: a hook that calls `timeout_reset` at each expiry during a stalled
/// handshake runs about once per period (no busy loop), and the handshake
/// finishes once the peer answers.
#[tokio::test(start_paused = true)]
async fn a_timeout_reset_hook_during_a_stalled_handshake_fires_once_per_period() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        for spawned in [false, true] {
            let (c, s) = tokio::io::duplex(1 << 16);
            let server = tls_echo_server(b, s, MS(1000));
            let fired = Arc::new(AtomicUsize::new(0));
            let f2 = fired.clone();
            let hook = move |t: Timeout, q: &mut anyframe::Requests<'_>| {
                f2.fetch_add(1, Ordering::SeqCst);
                q.timeout_reset(t);
            };
            // The write and the read wait behind the switch.
            let mut conn = Front::build(QueuedFramed::builder().rtimeout(MS(100)), c, spawned);
            conn.on_timeout(hook);
            let tls = conn.push_starttls(pki::client_on(b));
            conn.push_line("ping").unwrap();
            let line = conn.push_read_line();
            let a = bounded(MS(5000), conn.wait(tls)).await;
            let l = bounded(MS(5000), conn.wait(line)).await;
            let r = format!("{a:?} {:?}", l.map(|r| r.map(|l| l.line().to_vec())));
            let n = fired.load(Ordering::SeqCst);
            let want = format!("Some(Ok(())) Some(Ok({:?}))", b"ping".to_vec());
            if r != want || !(5..=15).contains(&n) {
                failed.push(format!("{b:?} spawned={spawned}: {r} hook fired {n}"));
            }
            server.abort();
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// TLS-8 + TO-3: a hook that calls `push_shutdown` during a handshake (the
/// peer answers late). The handshake finishes, the output queued behind
/// the switch goes over TLS, then close_notify and the half-close: the
/// peer reads the line and a clean end.
#[tokio::test(start_paused = true)]
async fn a_push_shutdown_hook_during_a_handshake_closes_after_the_tls_output() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        for spawned in [false, true] {
            let (c, s) = tokio::io::duplex(1 << 16);
            let (tap, writes) = support::Tap::new(c);
            let server = tokio::spawn(async move {
                tokio::time::sleep(MS(350)).await;
                let mut conn = QueuedFramed::builder().tls(pki::localhost_on(b)).build(s);
                let l = conn.read(LineCodec::new()).await?;
                let end = conn
                    .read(anyframe::codecs::LineCodec::new())
                    .await
                    .map(|l| l.line().to_vec());
                Ok::<_, anyframe::Error>((l.line().to_vec(), format!("{end:?}")))
            });
            let once = Arc::new(AtomicBool::new(false));
            let o2 = once.clone();
            let hook = move |_t: Timeout, q: &mut anyframe::Requests<'_>| {
                if !o2.swap(true, Ordering::SeqCst) {
                    let _ = q.push_shutdown();
                }
            };
            let mut conn = Front::build(QueuedFramed::builder().rtimeout(MS(100)), tap, spawned);
            conn.on_timeout(hook);
            let tls = conn.push_starttls(pki::client_on(b));
            conn.push_line("SECRET").unwrap();
            let a = bounded(MS(5000), conn.wait(tls)).await;
            let end = bounded(MS(5000), conn.finish()).await;
            let ours = format!("{a:?} end={end:?}");
            let got = bounded(MS(5000), server).await;
            let wire = support::written(&writes);
            let leaked = wire.windows(6).any(|w| w == b"SECRET");
            let ok = matches!(&got, Some(Ok(Ok((l, end)))) if l == b"SECRET" && end.contains("Err"))
                && !leaked
                && ours.starts_with("Some(Ok(()))");
            if !ok {
                failed.push(format!(
                    "{b:?} spawned={spawned}: ours={ours} server={got:?} leaked={leaked}"
                ));
            }
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

// ----- a peer that stops reading mid-handshake -----------------------------------

/// TO-3: our TLS client's peer stops taking bytes mid-handshake (a gated
/// link, both ways closed after the ClientHello went through). Under
/// wtimeout and rtimeout the switch hears a non-fatal timeout; once the
/// link opens the same handshake finishes and data flows.
#[tokio::test(start_paused = true)]
async fn a_handshake_stalled_mid_way_times_out_then_resumes() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        for spawned in [false, true] {
            let (c, s, up, down) = gated_link(64);
            // Server answers, but its flight is held back.
            down.send(false).unwrap();
            let server = tls_echo_server(b, s, MS(0));
            let mut builder = QueuedFramed::builder();
            builder.rtimeout(MS(200)).wtimeout(MS(200));
            let r: Result<(), String> = async {
                let reopen = async {
                    tokio::time::sleep(MS(1000)).await;
                    down.send(true).unwrap();
                    up.send(true).unwrap();
                };
                let mut conn = Front::build(&builder, c, spawned);
                let first = bounded(MS(900), conn.starttls(pki::client_on(b)))
                    .await
                    .ok_or("switch not told within 900 ms")?;
                if !matches!(&first, Err(e) if e.is_timeout() && !e.is_fatal()) {
                    return Err(format!("first: {first:?}"));
                }
                reopen.await;
                conn.push_line("ping")?;
                match read_past_timeouts(&mut conn).await?.line() {
                    b"ping" => Ok(()),
                    other => Err(format!("read {other:?}")),
                }
            }
            .await;
            if let Err(e) = r {
                failed.push(format!("{b:?} spawned={spawned}: {e}"));
            }
            server.abort();
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

// ----- tls_autostart ---------------------------------------------------------------

/// TO-3 + RT-tlsauto: an autostart whose handshake times out (the client
/// sent its ClientHello, then its link stalled) is a non-fatal ETIMEDOUT.
/// Retried, it must not take the now-decrypted application data for the
/// verdict: either it reports TLS (the same handshake resumed) or it
/// refuses; it never says "not TLS" on a TLS connection.
#[tokio::test(start_paused = true)]
async fn an_autostart_retried_after_a_handshake_timeout_never_reports_plaintext() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        for spawned in [false, true] {
            // Client side: ClientHello goes up, then the server's flight is
            // held back from the client until 1 s.
            let (c, s, _up, down) = gated_link(1 << 16);
            down.send(false).unwrap();
            let client = tokio::spawn(async move {
                let mut conn = QueuedFramed::builder().tls(pki::client_on(b)).build(c);
                conn.write(LineCodec::new(), "hello").await?;
                conn.read(LineCodec::new()).await
            });
            let r: Result<String, String> = async {
                let mut conn = Front::build(QueuedFramed::builder().rtimeout(MS(200)), s, spawned);
                let first = bounded(MS(900), conn.tls_autostart(pki::localhost_on(b)))
                    .await
                    .ok_or("first hung")?;
                if !matches!(&first, Err(e) if e.is_timeout() && !e.is_fatal()) {
                    return Err(format!("first: {first:?}"));
                }
                tokio::time::sleep(MS(1000)).await;
                down.send(true).unwrap();
                let second = autostart_past_timeouts(&mut conn, b).await?;
                Ok(format!("second={second:?} is_tls={}", conn.is_tls()))
            }
            .await;
            match r {
                // The same handshake's verdict, or a refusal while it runs.
                Ok(s) if s.contains("second=Ok(Tls") || s.contains("kind: InvalidInput") => {}
                Ok(s) => failed.push(format!("{b:?} spawned={spawned}: {s}")),
                Err(e) => failed.push(format!("{b:?} spawned={spawned}: {e}")),
            }
            client.abort();
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

// ----- stoptls under wtimeout --------------------------------------------------------

/// TO-3 + TLS-6: a stoptls whose peer does not read (our output and the
/// close_notify cannot leave) hears a non-fatal ETIMEDOUT under wtimeout;
/// once the peer reads again the same stop finishes (a flush drives it):
/// every line arrives over TLS, then the close_notify, then plaintext.
#[tokio::test(start_paused = true)]
async fn a_stoptls_whose_peer_does_not_read_times_out_then_finishes() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        for spawned in [false, true] {
            let (c, s, up, _down) = gated_link(256);
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(async move {
                let mut conn = QueuedFramed::builder().tls(pki::localhost_on(b)).build(s);
                conn.flush().await?;
                let _ = ready_tx.send(());
                let mut n = 0;
                while n < 200 {
                    conn.read(LineCodec::new()).await?;
                    n += 1;
                }
                conn.stoptls().await?;
                let plain = conn.read(LineCodec::new()).await?;
                Ok::<_, anyframe::Error>((n, plain.line().to_vec()))
            });
            let lines = 200;
            let r: Result<String, String> = async {
                let mut builder = QueuedFramed::builder();
                builder.wtimeout(MS(200)).tls(pki::client_on(b));
                let mut conn = Front::build(&builder, c, spawned);
                conn.flush().await.map_err(|e| format!("hs: {e:?}"))?;
                let _ = bounded(MS(5000), ready_rx).await;
                up.send(false).unwrap();
                for i in 0..lines {
                    conn.push_line(&format!("line {i:04} padding padding"))?;
                }
                let stop = bounded(MS(900), conn.stoptls())
                    .await
                    .ok_or("stoptls hung")?;
                if !matches!(&stop, Err(e) if e.is_timeout() && !e.is_fatal()) {
                    return Err(format!("stop: {stop:?}"));
                }
                up.send(true).unwrap();
                conn.push_line("plain")?;
                // The flush drives the stop on (inline), and may hear a
                // period expire before the peer has read everything.
                let mut f = None;
                for _ in 0..10 {
                    f = bounded(MS(5000), conn.flush()).await;
                    if !matches!(&f, Some(Err(e)) if e.is_timeout()) {
                        break;
                    }
                }
                let got = bounded(MS(5000), server).await;
                Ok(format!("flush={f:?} tls={} server={got:?}", conn.is_tls()))
            }
            .await;
            let want = format!("server=Some(Ok(Ok((200, {:?}))))", b"plain".to_vec());
            match r {
                Ok(ours) if ours.starts_with("flush=Some(Ok(()))") && ours.ends_with(&want) => {}
                other => failed.push(format!("{b:?} spawned={spawned}: ours={other:?}")),
            }
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

// ----- linger with a switch pending and timers running -------------------------------

/// LC-3 with timers: the last handle goes while a STARTTLS waits on a slow
/// peer and a read timer keeps expiring (nobody to tell). The output
/// queued behind the switch is written over TLS once the switch is done,
/// within the linger period.
#[tokio::test(start_paused = true)]
async fn output_behind_a_switch_lingers_through_timer_expiries() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        for which in [Timeout::Idle, Timeout::Read, Timeout::Write] {
            let (c, s) = tokio::io::duplex(1 << 16);
            let server = tokio::spawn(async move {
                tokio::time::sleep(MS(700)).await;
                let mut conn = QueuedFramed::builder().tls(pki::localhost_on(b)).build(s);
                let l = conn.read(LineCodec::new()).await?;
                Ok::<_, anyframe::Error>(l.line().to_vec())
            });
            let mut builder = QueuedFramed::builder();
            builder.linger(MS(3000));
            match which {
                Timeout::Idle => builder.timeout(MS(100)),
                Timeout::Read => builder.rtimeout(MS(100)),
                _ => builder.wtimeout(MS(100)),
            };
            let (h, d) = builder.build(c).spawn();
            let tls = h.starttls(pki::client_on(b));
            h.push_write(LineCodec::new(), "after").unwrap();
            let _ = bounded(MS(50), async {
                let _ = tls.await;
            })
            .await;
            drop(h);
            let d = bounded(MS(5000), d).await;
            let got = bounded(MS(5000), server).await;
            if !matches!(&got, Some(Ok(Ok(l))) if l == b"after") || d.is_none() {
                failed.push(format!(
                    "{b:?} {which:?}: server={got:?} driver_done={}",
                    d.is_some()
                ));
            }
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// RT-tlsauto + TO-3: a client that sends one byte and then nothing, under
/// an idle timeout: the autostart hears a non-fatal ETIMEDOUT, the byte
/// stays buffered, and a retry once the rest comes completes TLS.
#[tokio::test(start_paused = true)]
async fn autostart_one_byte_then_idle_times_out_and_a_retry_completes_tls() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        for spawned in [false, true] {
            // A real client behind a link that lets 1 byte through, then
            // holds the rest until 1 s.
            let (c, s, up, _down) = gated_link(1 << 16);
            up.send(false).unwrap();
            let (c_raw, mut c_peer) = tokio::io::duplex(1 << 16);
            let client = tokio::spawn(async move {
                let mut conn = QueuedFramed::builder().tls(pki::client_on(b)).build(c_raw);
                conn.write(LineCodec::new(), "hello").await?;
                conn.read(LineCodec::new()).await
            });
            // Forward the client's bytes by hand: 1 byte now, the rest at 1 s.
            let mut cw = c;
            let fwd = tokio::spawn(async move {
                let mut first = [0u8; 1];
                c_peer.read_exact(&mut first).await.unwrap();
                up.send(true).unwrap();
                cw.write_all(&first).await.unwrap();
                tokio::time::sleep(MS(1000)).await;
                let (mut pr, mut pw) = tokio::io::split(c_peer);
                let (mut cr, mut cw2) = tokio::io::split(cw);
                tokio::join!(
                    async {
                        let _ = tokio::io::copy(&mut pr, &mut cw2).await;
                    },
                    async {
                        let _ = tokio::io::copy(&mut cr, &mut pw).await;
                    },
                );
            });
            let r: Result<String, String> = async {
                let mut conn = Front::build(QueuedFramed::builder().timeout(MS(200)), s, spawned);
                let first = bounded(MS(900), conn.tls_autostart(pki::localhost_on(b)))
                    .await
                    .ok_or("first hung")?;
                if !matches!(&first, Err(e) if e.is_timeout() && !e.is_fatal()) {
                    return Err(format!("first: {first:?}"));
                }
                let second = autostart_past_timeouts(&mut conn, b).await?;
                let line = bounded(MS(5000), conn.read_line()).await;
                conn.push_line("back")?;
                let _ = bounded(MS(5000), conn.flush()).await;
                Ok(format!("second={second:?} line={line:?}"))
            }
            .await;
            match r {
                Ok(s) if s.contains("second=Ok(Tls") && s.contains("hello") => {}
                other => failed.push(format!("{b:?} spawned={spawned}: {other:?}")),
            }
            client.abort();
            fwd.abort();
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

// ----- a hook slower than its period ----------------------------------------------------

/// What the inline front end does on a current-thread runtime, in its own
/// thread, when an `on_timeout` hook takes longer than the period (2 ms
/// against 1 ms) while `what` waits on a stalled TLS switch: how many
/// times another task on the same thread ran (a 5 ms ticker) while the
/// hook ran 150 times; the hook then destroys the connection. `None` if
/// the thread did not finish within 20 s.
fn ticks_while_a_slow_hook_runs(b: TlsBackend, what: &'static str) -> Option<usize> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let ticks = rt.block_on(async move {
            let (c, _silent) = tokio::io::duplex(1 << 16);
            let ticks = Arc::new(AtomicUsize::new(0));
            let t2 = ticks.clone();
            let ticker = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(MS(5)).await;
                    t2.fetch_add(1, Ordering::SeqCst);
                }
            });
            // Let the ticker start.
            tokio::task::yield_now().await;
            let calls = Arc::new(AtomicUsize::new(0));
            let c2 = calls.clone();
            let hook = move |_t: Timeout, q: &mut anyframe::Requests<'_>| {
                std::thread::sleep(MS(2));
                if c2.fetch_add(1, Ordering::SeqCst) + 1 >= 150 {
                    q.destroy();
                }
            };
            let mut conn = if what == "flush-plain" {
                // A peer that takes 16 bytes and no more.
                let (c, silent) = tokio::io::duplex(16);
                std::mem::forget(silent);
                QueuedFramed::builder().wtimeout(MS(1)).build(c)
            } else {
                QueuedFramed::builder().rtimeout(MS(1)).build(c)
            };
            conn.on_timeout(hook);
            match what {
                "flush-plain" => {
                    // No TLS: a flush the peer never takes.
                    conn.push_bytes(vec![b'x'; 64 * 1024]).unwrap();
                    let _ = conn.flush().await;
                }
                "starttls" => {
                    let _ = conn.starttls(pki::client_on(b)).await;
                }
                "flush" => {
                    let _tls = conn.push_starttls(pki::client_on(b));
                    conn.push_bytes(&b"after\n"[..]).unwrap();
                    // The flush's output waits behind the switch.
                    let _ = conn.flush().await;
                }
                "read" => {
                    // Control: a plain read, no switch.
                    let _ = conn.read(LineCodec::new()).await;
                }
                _ => unreachable!(),
            }
            let n = ticks.load(Ordering::SeqCst);
            ticker.abort();
            n
        });
        let _ = tx.send(ticks);
    });
    rx.recv_timeout(Duration::from_secs(20)).ok()
}

/// "A call never spins on it and other tasks run in between" (the rule
/// `poll_fill` keeps for a hook slower than its period): the same must
/// hold while the call waits on a TLS switch (inline `starttls`, and a
/// flush whose output waits behind a switch). Control: a plain read.
#[test]
fn a_slow_timeout_hook_during_a_handshake_lets_other_tasks_run() {
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        for what in ["read", "starttls", "flush"] {
            match ticks_while_a_slow_hook_runs(b, what) {
                // 150 hook runs of 2 ms: 300 ms, about 60 ticks.
                Some(n) if n >= 10 => {}
                other => failed.push(format!("{b:?} {what}: ticker ran {other:?} times")),
            }
        }
    }
    // The same for a flush with no switch at all.
    match ticks_while_a_slow_hook_runs(pki::BACKENDS[0], "flush-plain") {
        Some(n) if n >= 10 => {}
        other => failed.push(format!("plain flush: ticker ran {other:?} times")),
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

// ----- split halves waiting on a handshake ----------------------------------------------

/// TO-3 (split halves) with `Builder::tls` and a peer that never answers
/// the ClientHello: the `Stream` half hears the read timeout, the `Sink`
/// half (its flush waits behind the switch) the write timeout, each
/// non-fatal and within two periods; the connection stays open.
#[tokio::test(start_paused = true)]
async fn split_halves_behind_a_stalled_builder_tls_hear_their_own_timeouts() {
    use futures::{SinkExt, StreamExt};
    let mut failed = Vec::new();
    for &b in pki::BACKENDS {
        let (c, _silent) = tokio::io::duplex(1 << 16);
        let conn = QueuedFramed::builder()
            .rtimeout(MS(100))
            .wtimeout(MS(150))
            .tls(pki::client_on(b))
            .build_with_codec(c, LineCodec::new());
        let (mut sink, mut stream) = conn.split();
        let t0 = tokio::time::Instant::now();
        let reader = tokio::spawn(async move {
            let r = bounded(MS(1000), stream.next()).await;
            (format!("{r:?}"), t0.elapsed())
        });
        let writer = tokio::spawn(async move {
            let r = bounded(MS(1000), sink.send("x".to_string())).await;
            (format!("{r:?}"), t0.elapsed())
        });
        let (r, rt) = reader.await.unwrap();
        let (w, wt) = writer.await.unwrap();
        let r_ok = r.contains("read timeout") && r.contains("fatal: false") && rt <= MS(200);
        let w_ok = w.contains("write timeout") && w.contains("fatal: false") && wt <= MS(300);
        if !r_ok || !w_ok {
            failed.push(format!("{b:?}: stream={r} at {rt:?}; sink={w} at {wt:?}"));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// TO-1: over TLS, the bytes of a record not yet whole count as writes.
/// A peer that reads slowly but steadily (1 KiB every 300 ms) while 256
/// KiB are flushed under a 1 s write (or idle) timeout keeps the flush
/// going on both backends and both front ends, as in plaintext: the TLS
/// library writes records it sealed earlier (or part of one) and answers
/// `Pending`, and that traffic counted for nothing.
#[tokio::test(start_paused = true)]
async fn a_slow_but_steady_reader_keeps_a_tls_flush_alive() {
    let mut failed = Vec::new();
    for b in pki::plain_and_backends() {
        for spawned in [false, true] {
            for idle in [false, true] {
                let (mut client, server) = pki::connected_pair(b, 64 * 1024).await;
                // From now on the server end only takes bytes, slowly.
                let mut raw = server.into_parts().io;
                let reader = tokio::spawn(async move {
                    let mut buf = vec![0u8; 1024];
                    loop {
                        tokio::time::sleep(MS(300)).await;
                        match raw.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                });
                if idle {
                    client.set_timeout(Duration::from_secs(1));
                } else {
                    client.set_wtimeout(Duration::from_secs(1));
                }
                let data = vec![b'x'; 256 * 1024];
                let r = if spawned {
                    let (h, d) = client.spawn();
                    tokio::spawn(d);
                    h.push_bytes(data).unwrap();
                    let r = bounded(MS(600_000), h.flush()).await;
                    h.destroy();
                    r
                } else {
                    client.push_bytes(data).unwrap();
                    bounded(MS(600_000), client.flush()).await
                };
                reader.abort();
                if !matches!(r, Some(Ok(()))) {
                    failed.push(format!(
                        "{b:?} spawned={spawned} {}: {:?}",
                        if idle { "timeout" } else { "wtimeout" },
                        r.map(|r| r.map_err(|e| e.to_string()))
                    ));
                }
            }
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}

/// LC-6 over TLS: a client that keeps taking a little of a large answer in
/// every period keeps its connection to the server loop (`wtimeout` 1 s,
/// a 200 KiB answer, 1 KiB taken every 300 ms): the TLS library's partial
/// writes count as the transport taking bytes.
#[cfg(feature = "tower")]
#[tokio::test(start_paused = true)]
async fn the_server_loop_keeps_a_slow_but_steady_tls_reader() {
    use anyframe::codecs::{ChunkCodec, Utf8Line, Utf8LineCodec};
    const ANSWER: usize = 200 * 1024;
    let mut failed = Vec::new();
    for b in pki::plain_and_backends() {
        let (sio, relay_s) = tokio::io::duplex(16 * 1024);
        let (relay_c, cio) = tokio::io::duplex(16 * 1024);
        // Client to server freely; server to client 1 KiB every 300 ms.
        let (mut cr, mut cw) = tokio::io::split(relay_c);
        let (mut sr, mut sw) = tokio::io::split(relay_s);
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut cr, &mut sw).await;
            let _ = sw.shutdown().await;
        });
        tokio::spawn(async move {
            let mut buf = vec![0u8; 1024];
            loop {
                tokio::time::sleep(MS(300)).await;
                match sr.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) if cw.write_all(&buf[..n]).await.is_err() => break,
                    Ok(_) => {}
                }
            }
            let _ = cw.shutdown().await;
        });
        let big = tower::service_fn(|line: Utf8Line| async move {
            Ok::<_, std::convert::Infallible>(format!("{}:{}", line.line(), "y".repeat(ANSWER)))
        });
        let mut sb = QueuedFramed::builder();
        sb.wtimeout(Duration::from_secs(1));
        let mut cb = QueuedFramed::builder();
        if let Some(b) = b {
            sb.tls(pki::localhost_on(b));
            cb.tls(pki::client_on(b));
        }
        let server = tokio::spawn(
            anyframe::service::serve(sio, Utf8LineCodec::new(), LineCodec::new(), big)
                .connection(sb)
                .into_future(),
        );
        let mut client = cb.build(cio);
        client.push_bytes(&b"hello\n"[..]).unwrap();
        let answer = bounded(MS(600_000), client.read(ChunkCodec::new(ANSWER + 7))).await;
        let _ = bounded(MS(600_000), client.shutdown_write()).await;
        let served = bounded(MS(600_000), server).await.map(|j| j.unwrap());
        let whole = matches!(&answer, Some(Ok(c)) if c.len() == ANSWER + 7);
        if !whole || matches!(&served, Some(Err(e)) if e.is_fatal()) {
            failed.push(format!(
                "{b:?}: answer {:?}, serve {:?}",
                answer.map(|r| r.map(|c| c.len()).map_err(|e| e.to_string())),
                served.map(|r| r.map_err(|e| e.to_string()))
            ));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
}
