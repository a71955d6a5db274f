//! Physical limits measured in the same run (`limit-memchr`), TLS bulk
//! transfer (`tls-bulk-loopback`), and the picture: JSON throughput against
//! fragment size, ours against the retried parse (`json-fragments`, written
//! as an SVG for BENCHMARKS.md).

use std::sync::Arc;

use anyframe::QueuedFramed;
use anyframe::codecs::{ChunkCodec, JsonCodec, LineCodec};
use anyframe::tls::native_tls;
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::Decoder;

use crate::harness::Harness;

#[path = "../../examples/support/certs.rs"]
mod certs;

pub fn run(h: &Harness) {
    if h.wants("limit-memchr") {
        memchr_limit(h);
    }
    if h.wants("tls-bulk-loopback") {
        tls_bulk(h);
    }
    #[cfg(feature = "rustls")]
    if h.wants("tls-bulk-loopback-rustls") {
        tls_bulk_rustls(h);
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

fn tls_bulk(h: &Harness) {
    let pki = certs::DemoPki::new();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Items are MB (10^6 bytes) so the rates read as MB/s.
    let items = (TLS_BYTES / 1_000_000) as u64;
    let ours = h.time(items, || tls_once(&rt, &pki, true));
    let anchor = h.time(items, || tls_once(&rt, &pki, false));
    h.report_with("tls-bulk-loopback", ours, anchor, "unit=MB/s");
}

// ----- tls-bulk-loopback-rustls ----------------------------------------------

/// rustls configurations for `localhost`, from a fresh rcgen certificate.
#[cfg(feature = "rustls")]
struct RustlsPki {
    client: Arc<anyframe::tls::rustls::ClientConfig>,
    server: Arc<anyframe::tls::rustls::ServerConfig>,
}

#[cfg(feature = "rustls")]
impl RustlsPki {
    fn new() -> RustlsPki {
        use anyframe::tls::rustls::{self, pki_types};
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .expect("params")
            .self_signed(&key)
            .expect("self-signed");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).expect("root");
        let client = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let key = pki_types::PrivateKeyDer::from(pki_types::PrivatePkcs8KeyDer::from(
            key.serialize_der(),
        ));
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .expect("server config");
        RustlsPki {
            client: Arc::new(client),
            server: Arc::new(server),
        }
    }
}

/// One transfer of TLS_BYTES from a tokio-rustls server; the client side is
/// ours (rustls backend) or the bare `tokio_rustls` stream.
#[cfg(feature = "rustls")]
fn tls_once_rustls(rt: &tokio::runtime::Runtime, pki: &RustlsPki, ours: bool) {
    let acceptor = tokio_rustls::TlsAcceptor::from(pki.server.clone());
    let config = pki.client.clone();
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

#[cfg(feature = "rustls")]
fn tls_bulk_rustls(h: &Harness) {
    let pki = RustlsPki::new();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let items = (TLS_BYTES / 1_000_000) as u64;
    let ours = h.time(items, || tls_once_rustls(&rt, &pki, true));
    let anchor = h.time(items, || tls_once_rustls(&rt, &pki, false));
    h.report_with("tls-bulk-loopback-rustls", ours, anchor, "unit=MB/s");
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
