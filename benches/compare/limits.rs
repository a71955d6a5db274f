//! Physical limits measured in the same run (`limit-memchr`), TLS bulk
//! transfer (`tls-bulk-loopback`, and for rustls the same on one thread,
//! `tls-bulk-rustls-one-thread`), STARTTLS handshakes per second
//! (`tls-handshake-loopback`), and the picture: JSON throughput against
//! fragment size, ours against the retried parse (`json-fragments`, written
//! as an SVG for BENCHMARKS.md).

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyframe::codecs::{ChunkCodec, JsonCodec, LineCodec};
use anyframe::tls::{TlsClient, TlsServer, native_tls};
use anyframe::{OrEof, QueuedFramed};
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

use crate::harness::{Harness, median_ratio};

#[path = "../../examples/support/certs.rs"]
mod certs;

pub fn run(h: &Harness) {
    if h.wants("limit-memchr") {
        memchr_limit(h);
    }
    // Each TLS scenario measures every backend compiled in, interleaved,
    // whichever backend's row the filter names.
    if h.wants("tls-bulk-loopback") || h.wants("tls-bulk-loopback-rustls") {
        tls_bulk(h);
    }
    if h.wants("tls-handshake-loopback") || h.wants("tls-handshake-loopback-rustls") {
        tls_handshakes(h);
    }
    if h.wants("json-fragments") {
        json_fragments(h);
    }
}

// ----- limit-memchr ------------------------------------------------------------

fn memchr_limit(h: &Harness) {
    const LINES: usize = 5_000_000;
    let mut v = Vec::with_capacity(LINES * 40);
    for i in 0..LINES {
        v.extend_from_slice(format!("{i:0>39}\n").as_bytes());
    }
    let scan = h.time(LINES as u64, || memchr::memchr_iter(b'\n', &v).count());
    // Our LineCodec over the same buffer, for "our share of the limit".
    let ours = h.time(LINES as u64, || {
        let mut buf = BytesMut::from(&v[..]);
        let mut c = LineCodec::new();
        let mut n = 0usize;
        while let Ok(Some(l)) = c.decode(&mut buf) {
            std::hint::black_box(l);
            n += 1;
        }
        n
    });
    h.note(
        "limit-memchr",
        &format!(
            "items_per_s={:.0} mb_per_s={:.0} line_codec_share={:.2}",
            scan.rate(),
            scan.rate() * 40.0 / 1e6,
            ours.rate() / scan.rate()
        ),
    );
}

// ----- tls-bulk-loopback -------------------------------------------------------

const TLS_BYTES: usize = 256 * 1024 * 1024;
const TLS_CHUNK: usize = 64 * 1024;

/// One TLS transfer of TLS_BYTES from a tokio-native-tls server; the client
/// side is ours or the bare TlsStream.
fn tls_once(rt: &tokio::runtime::Runtime, pki: &certs::DemoPki, ours: bool) {
    let acceptor = tokio_native_tls::TlsAcceptor::from(
        native_tls::TlsAcceptor::new(pki.identity.clone()).expect("acceptor"),
    );
    let ca = pki.ca();
    let client = pki.client();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(s).await.unwrap();
            let block = vec![0x5a; TLS_CHUNK];
            for _ in 0..TLS_BYTES / TLS_CHUNK {
                tls.write_all(&block).await.unwrap();
            }
            tls.shutdown().await.unwrap();
        });
        let sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        if ours {
            let mut conn = QueuedFramed::builder().tls(client).build(sock);
            let mut chunk = ChunkCodec::new(TLS_CHUNK);
            for _ in 0..TLS_BYTES / TLS_CHUNK {
                std::hint::black_box(conn.read_with(&mut chunk).await.unwrap());
            }
        } else {
            let mut b = native_tls::TlsConnector::builder();
            b.add_root_certificate(ca).disable_built_in_roots(true);
            let connector = tokio_native_tls::TlsConnector::from(b.build().unwrap());
            let mut tls = connector.connect("localhost", sock).await.unwrap();
            let mut buf = vec![0u8; TLS_CHUNK];
            for _ in 0..TLS_BYTES / TLS_CHUNK {
                tls.read_exact(&mut buf).await.unwrap();
                std::hint::black_box(&buf);
            }
        }
        server.await.unwrap();
    });
}

/// `tls-bulk-loopback` for each backend compiled in, ours against the same
/// library's bare stream. All sides run interleaved, round by round; each
/// ratio is the median of the per-round ratios.
fn tls_bulk(h: &Harness) {
    let pki = certs::DemoPki::new();
    #[cfg(feature = "rustls")]
    let rustls_pki = rustls_configs(&pki);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The rustls pair again with everything on one thread: what each side
    // costs per byte, without the wake-ups between threads that decide the
    // two-thread rate (a reader that keeps up with the server sleeps and is
    // woken more often).
    #[cfg(feature = "rustls")]
    let rt1 = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    #[cfg_attr(not(feature = "rustls"), allow(unused_mut))]
    let mut sides: Vec<Box<dyn Fn()>> = vec![
        Box::new(|| tls_once(&rt, &pki, true)),
        Box::new(|| tls_once(&rt, &pki, false)),
    ];
    #[cfg(feature = "rustls")]
    {
        sides.push(Box::new(|| tls_once_rustls(&rt, &rustls_pki, true)));
        sides.push(Box::new(|| tls_once_rustls(&rt, &rustls_pki, false)));
        // Sides 4 and 5: see `rt1`.
        sides.push(Box::new(|| tls_once_rustls(&rt1, &rustls_pki, true)));
        sides.push(Box::new(|| tls_once_rustls(&rt1, &rustls_pki, false)));
    }
    let t = time_rounds(h, sides.len(), |i| sides[i]());
    // Items are MB (10^6 bytes) so the rates read as MB/s.
    let mb = (TLS_BYTES / 1_000_000) as u64;
    report_backends(h, "tls-bulk", "MB/s", mb, &t[..t.len().min(4)]);
    if t.len() == 6 {
        h.report_rounds(
            "tls-bulk-rustls-one-thread",
            &t[4],
            &t[5],
            mb,
            "unit=MB/s backend=rustls runtime=current_thread (context: cost per byte)",
        );
    }
}

/// Runs side `i` of `n` through `run(i)` once per round, all sides in turn,
/// `h.reps()` rounds; the times per side.
fn time_rounds(h: &Harness, n: usize, mut run: impl FnMut(usize)) -> Vec<Vec<Duration>> {
    let mut t = vec![Vec::with_capacity(h.reps()); n];
    for _ in 0..h.reps() {
        for (i, times) in t.iter_mut().enumerate() {
            let start = Instant::now();
            run(i);
            times.push(start.elapsed());
        }
    }
    t
}

/// Reports `{base}-loopback` (native-tls: sides 0 and 1, ours then the bare
/// stream), `{base}-loopback-rustls` (sides 2 and 3, when built) and the
/// rustls-against-native-tls rate ratios.
fn report_backends(h: &Harness, base: &str, unit: &str, items: u64, t: &[Vec<Duration>]) {
    h.report_rounds(
        &format!("{base}-loopback"),
        &t[0],
        &t[1],
        items,
        &format!("unit={unit} backend=native-tls"),
    );
    if t.len() == 4 {
        h.report_rounds(
            &format!("{base}-loopback-rustls"),
            &t[2],
            &t[3],
            items,
            &format!("unit={unit} backend=rustls"),
        );
        h.note(
            &format!("{base}-rustls-vs-native-tls"),
            &format!(
                "ours={:.2} bare={:.2} (rustls rate / native-tls rate, median of per-round ratios)",
                median_ratio(&t[2], &t[0]),
                median_ratio(&t[3], &t[1]),
            ),
        );
    }
}

// ----- tls-bulk-loopback-rustls ----------------------------------------------

/// One transfer of TLS_BYTES from a tokio-rustls server; the client side is
/// ours (rustls backend) or the bare `tokio_rustls` stream.
#[cfg(feature = "rustls")]
fn tls_once_rustls(rt: &tokio::runtime::Runtime, configs: &RustlsConfigs, ours: bool) {
    let (config, server) = configs.clone();
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(s).await.unwrap();
            let block = vec![0x5a; TLS_CHUNK];
            for _ in 0..TLS_BYTES / TLS_CHUNK {
                tls.write_all(&block).await.unwrap();
            }
            tls.shutdown().await.unwrap();
        });
        let sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        if ours {
            let client = anyframe::tls::TlsClient::rustls(config, "localhost").unwrap();
            let mut conn = QueuedFramed::builder().tls(client).build(sock);
            let mut chunk = ChunkCodec::new(TLS_CHUNK);
            for _ in 0..TLS_BYTES / TLS_CHUNK {
                std::hint::black_box(conn.read_with(&mut chunk).await.unwrap());
            }
        } else {
            let connector = tokio_rustls::TlsConnector::from(config);
            let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let mut tls = connector.connect(name, sock).await.unwrap();
            let mut buf = vec![0u8; TLS_CHUNK];
            for _ in 0..TLS_BYTES / TLS_CHUNK {
                tls.read_exact(&mut buf).await.unwrap();
                std::hint::black_box(&buf);
            }
        }
        server.await.unwrap();
    });
}

// ----- tls-handshake-loopback ------------------------------------------------

/// Connections per timed repetition, one after another.
const HANDSHAKES: usize = 200;

/// The plaintext line each client sends, and the server's go-ahead.
const STARTTLS: &[u8] = b"STARTTLS\n";
const GO_AHEAD: &[u8] = b"220 go\n";
/// The one line sent over TLS.
const SECRET: &[u8] = b"one line over tls\n";

/// Reads up to and including the first `\n` (the peer sends nothing after
/// it until answered, so nothing is read past it).
async fn read_line_raw<S: AsyncRead + Unpin>(s: &mut S) -> Vec<u8> {
    let mut line = Vec::new();
    let mut buf = [0u8; 64];
    while !line.ends_with(b"\n") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "end of input inside a line");
        line.extend_from_slice(&buf[..n]);
    }
    line
}

/// The bare server's part after its handshake: the line, then the
/// client's close_notify.
async fn bare_tls_server_end<S: AsyncRead + Unpin>(mut tls: S) {
    assert_eq!(read_line_raw(&mut tls).await, SECRET);
    let mut rest = Vec::new();
    tls.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
}

/// The bare client's part after its handshake: the line, then close_notify.
async fn bare_tls_client_end<S: AsyncWrite + Unpin>(mut tls: S) {
    tls.write_all(SECRET).await.unwrap();
    tls.shutdown().await.unwrap();
}

/// A loopback listener and a connected client socket for it, Nagle off on
/// both ends (handshake flights are small writes).
async fn accept_pair(
    listener: &tokio::net::TcpListener,
    addr: std::net::SocketAddr,
) -> (TcpStream, TcpStream) {
    let (c, s) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let (c, s) = (c.unwrap(), s.unwrap().0);
    c.set_nodelay(true).unwrap();
    s.set_nodelay(true).unwrap();
    (c, s)
}

/// `HANDSHAKES` STARTTLS sessions through our `QueuedFramed` on both ends:
/// `STARTTLS` / `220 go` in plaintext, `starttls` on both, one line over
/// TLS, the client's close_notify read as the end of input.
async fn ours_handshakes(client: TlsClient, server: TlsServer) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    for _ in 0..HANDSHAKES {
        let (c, s) = accept_pair(&listener, addr).await;
        let server = server.clone();
        let srv = tokio::spawn(async move {
            let mut conn = QueuedFramed::new(s);
            let cmd = conn.read(LineCodec::new()).await.unwrap();
            assert_eq!(cmd.line(), &STARTTLS[..STARTTLS.len() - 1]);
            conn.push_write(LineCodec::new(), &GO_AHEAD[..GO_AHEAD.len() - 1])
                .unwrap();
            conn.starttls(server).await.unwrap();
            let line = conn.read(LineCodec::new()).await.unwrap();
            assert_eq!(line.line(), &SECRET[..SECRET.len() - 1]);
            let end = conn.read(OrEof::new(LineCodec::new())).await.unwrap();
            assert!(end.is_none());
        });
        let mut conn = QueuedFramed::new(c);
        conn.write(LineCodec::new(), &STARTTLS[..STARTTLS.len() - 1])
            .await
            .unwrap();
        let go = conn.read(LineCodec::new()).await.unwrap();
        assert_eq!(go.line(), &GO_AHEAD[..GO_AHEAD.len() - 1]);
        conn.starttls(client.clone()).await.unwrap();
        conn.write(LineCodec::new(), &SECRET[..SECRET.len() - 1])
            .await
            .unwrap();
        conn.shutdown_write().await.unwrap();
        srv.await.unwrap();
    }
}

/// The same sessions over a TLS library's bare async streams: the
/// plaintext lines on the `TcpStream`, then `connect` on the client's and
/// `accept` on the server's.
async fn bare_handshakes<C, CF, CS, A, AF, SS>(connect: C, accept: A)
where
    C: Fn(TcpStream) -> CF,
    CF: Future<Output = CS>,
    CS: AsyncWrite + Unpin,
    A: Fn(TcpStream) -> AF + Clone + Send + 'static,
    AF: Future<Output = SS> + Send,
    SS: AsyncRead + Unpin + Send,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    for _ in 0..HANDSHAKES {
        let (mut c, mut s) = accept_pair(&listener, addr).await;
        let accept = accept.clone();
        let srv = tokio::spawn(async move {
            assert_eq!(read_line_raw(&mut s).await, STARTTLS);
            s.write_all(GO_AHEAD).await.unwrap();
            bare_tls_server_end(accept(s).await).await;
        });
        c.write_all(STARTTLS).await.unwrap();
        assert_eq!(read_line_raw(&mut c).await, GO_AHEAD);
        bare_tls_client_end(connect(c).await).await;
        srv.await.unwrap();
    }
}

/// A rustls client configuration and the server's.
#[cfg(feature = "rustls")]
type RustlsConfigs = (
    Arc<anyframe::tls::rustls::ClientConfig>,
    Arc<anyframe::tls::rustls::ServerConfig>,
);

/// rustls client and server configurations for a [`certs::DemoPki`]: *ring*,
/// TLS 1.2 and 1.3 offered, and client session resumption off, so every
/// handshake is a full one as with native-tls (whose clients never resume).
#[cfg(feature = "rustls")]
fn rustls_configs(pki: &certs::DemoPki) -> RustlsConfigs {
    use anyframe::tls::rustls::{self, client::Resumption, pki_types};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone().into()).expect("root");
    let mut client = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.resumption = Resumption::disabled();
    let key =
        pki_types::PrivateKeyDer::from(pki_types::PrivatePkcs8KeyDer::from(pki.key_der.clone()));
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![pki.cert_der.clone().into()], key)
        .expect("server config");
    (Arc::new(client), Arc::new(server))
}

/// One side of `tls-handshake-loopback`: makes the future that runs its
/// `HANDSHAKES` sessions.
type HandshakeSide<'a> = Box<dyn Fn() -> Pin<Box<dyn Future<Output = ()>>> + 'a>;

/// `tls-handshake-loopback`: STARTTLS handshakes per second, ours against
/// the same library's bare async stream, for each backend compiled in. All
/// sides run interleaved, round by round; each ratio is the median of the
/// per-round ratios.
fn tls_handshakes(h: &Harness) {
    let pki = certs::DemoPki::new();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let identity =
        native_tls::Identity::from_pkcs8(pki.cert_pem.as_bytes(), pki.key_pem.as_bytes())
            .expect("identity");
    let ca = native_tls::Certificate::from_pem(pki.ca_pem.as_bytes()).expect("CA");
    let native_client = {
        let mut b = TlsClient::builder("localhost");
        b.add_root_certificate(ca.clone())
            .disable_built_in_roots(true);
        b.build().expect("client")
    };
    let native_server = TlsServer::new(identity.clone()).expect("server");
    let native_connector = {
        let mut b = native_tls::TlsConnector::builder();
        b.add_root_certificate(ca).disable_built_in_roots(true);
        tokio_native_tls::TlsConnector::from(b.build().expect("connector"))
    };
    let native_acceptor = tokio_native_tls::TlsAcceptor::from(
        native_tls::TlsAcceptor::new(identity).expect("acceptor"),
    );
    #[cfg_attr(not(feature = "rustls"), allow(unused_mut))]
    let mut sides: Vec<HandshakeSide<'_>> = vec![
        Box::new(|| {
            Box::pin(ours_handshakes(
                native_client.clone(),
                native_server.clone(),
            ))
        }),
        Box::new(|| {
            let connector = native_connector.clone();
            let acceptor = native_acceptor.clone();
            Box::pin(bare_handshakes(
                move |c| {
                    let connector = connector.clone();
                    async move { connector.connect("localhost", c).await.unwrap() }
                },
                move |s| {
                    let acceptor = acceptor.clone();
                    async move { acceptor.accept(s).await.unwrap() }
                },
            ))
        }),
    ];
    #[cfg(feature = "rustls")]
    {
        use tokio_rustls::rustls::pki_types::ServerName;
        let (client, server) = rustls_configs(&pki);
        let ours_client = TlsClient::rustls(client.clone(), "localhost").expect("client");
        let ours_server = TlsServer::rustls(server.clone());
        let connector = tokio_rustls::TlsConnector::from(client);
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        sides.push(Box::new(move || {
            Box::pin(ours_handshakes(ours_client.clone(), ours_server.clone()))
        }));
        sides.push(Box::new(move || {
            let connector = connector.clone();
            let acceptor = acceptor.clone();
            Box::pin(bare_handshakes(
                move |c| {
                    let connector = connector.clone();
                    let name = ServerName::try_from("localhost").unwrap();
                    async move { connector.connect(name, c).await.unwrap() }
                },
                move |s| {
                    let acceptor = acceptor.clone();
                    async move { acceptor.accept(s).await.unwrap() }
                },
            ))
        }));
    }
    let t = time_rounds(h, sides.len(), |i| rt.block_on(sides[i]()));
    report_backends(h, "tls-handshake", "handshakes/s", HANDSHAKES as u64, &t);
}

// ----- json-fragments: the picture ---------------------------------------------

/// The value for the picture: small enough that the retried parse finishes
/// at 64-byte fragments in seconds (its cost grows with size² / fragment).
const PLOT_VALUE: usize = 256 * 1024;

fn plot_value() -> Vec<u8> {
    let mut items = Vec::new();
    let mut len = 2;
    let mut i = 0u64;
    while len < PLOT_VALUE {
        let v = serde_json::json!({"id": i, "name": format!("user-{i:06}"), "tags": ["a", "b"], "score": i as f64 / 8.0});
        len += serde_json::to_vec(&v).unwrap().len() + 1;
        items.push(v);
        i += 1;
    }
    serde_json::to_vec(&serde_json::Value::Array(items)).unwrap()
}

/// Feeds `bytes` in `piece`-sized arrivals to a decoder, as a socket would.
fn feed_ours(bytes: &[u8], piece: usize) -> usize {
    let mut c = JsonCodec::<serde_json::Value>::builder()
        .max_size(64 << 20)
        .build();
    let mut buf = BytesMut::new();
    let mut n = 0;
    for p in bytes.chunks(piece) {
        buf.extend_from_slice(p);
        while let Ok(Some(v)) = c.decode(&mut buf) {
            std::hint::black_box(v);
            n += 1;
        }
    }
    n
}

/// The naive decoder: on every arrival, parse the whole buffer from the
/// start; keep the bytes and retry when the parse says "EOF".
fn feed_retry(bytes: &[u8], piece: usize) -> usize {
    let mut buf = Vec::new();
    let mut n = 0;
    for p in bytes.chunks(piece) {
        buf.extend_from_slice(p);
        let mut de = serde_json::Deserializer::from_slice(&buf).into_iter::<serde_json::Value>();
        match de.next() {
            Some(Ok(v)) => {
                std::hint::black_box(v);
                let used = de.byte_offset();
                buf.drain(..used);
                n += 1;
            }
            Some(Err(e)) if e.is_eof() => {}
            Some(Err(e)) => panic!("{e}"),
            None => {}
        }
    }
    n
}

fn json_fragments(h: &Harness) {
    let value = Arc::new(plot_value());
    let mb = value.len() as f64 / 1e6;
    let mut points = Vec::new();
    for shift in 6..=16 {
        let piece = 1usize << shift;
        let ours = h.time_n(3, 1, || assert_eq!(feed_ours(&value, piece), 1));
        // The retried parse at small fragments takes seconds: one run.
        let retry = h.time_n(1, 1, || assert_eq!(feed_retry(&value, piece), 1));
        let (o, r) = (
            mb / ours.median.as_secs_f64(),
            mb / retry.median.as_secs_f64(),
        );
        h.note(
            &format!("json-fragments-{piece}B"),
            &format!(
                "ours_mb_per_s={o:.1} retried_parse_mb_per_s={r:.1} ratio={:.1}",
                o / r
            ),
        );
        points.push((piece, o, r));
    }
    let svg = plot(&points, value.len());
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/json-fragments.svg");
    match std::fs::write(&path, svg) {
        Ok(()) => println!("# wrote docs/json-fragments.svg"),
        Err(e) => println!("# could not write the plot: {e}"),
    }
}

/// A log-log line chart, hand-written SVG (two series, labelled axes).
fn plot(points: &[(usize, f64, f64)], value_len: usize) -> String {
    let (w, hgt, left, right, top, bottom) = (720.0, 420.0, 80.0, 20.0, 40.0, 60.0);
    let xs: Vec<f64> = points.iter().map(|p| (p.0 as f64).log2()).collect();
    let ys: Vec<f64> = points
        .iter()
        .flat_map(|p| [p.1, p.2])
        .map(f64::log10)
        .collect();
    let (x0, x1) = (xs[0], xs[xs.len() - 1]);
    let y0 = ys.iter().cloned().fold(f64::INFINITY, f64::min).floor();
    let y1 = (ys.iter().cloned().fold(f64::NEG_INFINITY, f64::max) + 0.5).ceil(); // headroom for the legend
    let px = |x: f64| left + (x - x0) / (x1 - x0) * (w - left - right);
    let py = |y: f64| top + (y1 - y) / (y1 - y0) * (hgt - top - bottom);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{hgt}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">One {} KiB JSON value arriving in fragments: MB/s (log) vs fragment size (log)</text>\n",
        w / 2.0,
        value_len / 1024
    );
    for d in (y0 as i32)..=(y1 as i32) {
        let y = py(d as f64);
        s += &format!(
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            w - right,
            left - 6.0,
            y + 4.0,
            10f64.powi(d)
        );
    }
    for (x, p) in xs.iter().zip(points) {
        let label = if p.0 >= 1024 {
            format!("{}K", p.0 / 1024)
        } else {
            p.0.to_string()
        };
        s += &format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{label}</text>\n",
            px(*x),
            hgt - bottom + 18.0
        );
    }
    s += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">fragment size (bytes)</text>\n",
        (left + w - right) / 2.0,
        hgt - 12.0
    );
    for (idx, (color, name)) in [
        ("#1f77b4", "anyframe JsonCodec (incremental scanner)"),
        ("#d62728", "retried serde_json parse"),
    ]
    .iter()
    .enumerate()
    {
        let pts: Vec<String> = xs
            .iter()
            .zip(points)
            .map(|(x, p)| {
                format!(
                    "{:.1},{:.1}",
                    px(*x),
                    py((if idx == 0 { p.1 } else { p.2 }).log10())
                )
            })
            .collect();
        s += &format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2.5\" points=\"{}\"/>\n",
            pts.join(" ")
        );
        s += &format!(
            "<rect x=\"{}\" y=\"{}\" width=\"14\" height=\"4\" fill=\"{color}\"/><text x=\"{}\" y=\"{}\">{name}</text>\n",
            left + 16.0,
            top + 10.0 + idx as f64 * 18.0,
            left + 36.0,
            top + 15.0 + idx as f64 * 18.0
        );
    }
    s += "</svg>\n";
    s
}
