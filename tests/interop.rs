//! Wire interoperability with the real Perl AnyEvent::Handle
//! (docs/semantics.md §10 and §11).
//!
//! Each test runs `tests/peers/ae_peer.pl`, a remote-controlled
//! AnyEvent::Handle: the test tells it on stdin what to `push_read` /
//! `push_write` (AE's own read and write types), reads on stdout what its
//! callbacks got, and talks to it over loopback TCP through a
//! [`QueuedFramed`].
//!
//! * Both TCP roles: `perl_listens` (Perl server, anyframe client) and
//!   `perl_connects` (anyframe server, Perl client).
//! * Both data directions in every test: our encoders into AE's read types,
//!   AE's write types into our decoders (mostly as an echo: AE reads a frame
//!   and writes the value back with the same type).
//! * Senders split their output into random small writes (AE's side through
//!   the peer's `dribble` command), except where a frame is decided by a
//!   regex on what has arrived (docs/semantics.md §2a).
//!
//! Without perl and its modules the tests skip with a printed reason
//! (they fail instead with `ANYFRAME_REQUIRE_PEERS=1`).

mod support;

#[cfg(any(feature = "tls", feature = "rustls"))]
#[path = "support/pki.rs"]
mod pki;

use std::fmt::Write as _;
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyframe::codecs::{
    CborCodec, ChunkCodec, JsonCodec, LineCodec, NetstringCodec, PackFormat, PackstringCodec,
    RawCborCodec, RegexCodec,
};
#[cfg(any(feature = "tls", feature = "rustls"))]
use anyframe::tls::TlsBackend;
use anyframe::{ErrorKind, QueuedFramed};
use bytes::{Bytes, BytesMut};
use regex::bytes::Regex;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::Encoder;

/// The longest any single step may take before the test fails.
const STEP: Duration = Duration::from_secs(20);

/// Large payloads: at least 3 MB.
const LARGE: usize = 3 * 1024 * 1024 + 17;

fn have_perl() -> bool {
    support::have_peer(
        "perl",
        &[
            "-MAnyEvent::Handle",
            "-MJSON::XS",
            "-MCBOR::XS",
            "-MNet::SSLeay",
            "-e1",
        ],
        "perl with AnyEvent::Handle, JSON::XS, CBOR::XS, Net::SSLeay",
    )
}

/// `f`, or a panic naming `what` after [`STEP`].
async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(STEP, f).await {
        Ok(out) => out,
        Err(_) => panic!("timed out: {what}"),
    }
}

// ---- the Perl peer -----------------------------------------------------------

/// A running `ae_peer.pl`; killed when dropped.
struct Peer {
    child: Child,
    stdin: ChildStdin,
    events: mpsc::UnboundedReceiver<Value>,
    /// Everything the peer printed (events shortened, stderr), for failures.
    transcript: Arc<Mutex<String>>,
}

impl Peer {
    fn spawn(role: &str, port: u16, options: &Value) -> Peer {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/ae_peer.pl");
        let mut child = Command::new("perl")
            .arg(script)
            .arg(role)
            .arg(port.to_string())
            .arg(options.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run perl");
        let transcript = Arc::new(Mutex::new(String::new()));
        let (tx, events) = mpsc::unbounded_channel();
        let stdout = child.stdout.take().expect("stdout");
        let log = transcript.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let short: String = line.chars().take(300).collect();
                let _ = writeln!(log.lock().unwrap(), "event: {short}");
                let event = serde_json::from_str(&line)
                    .unwrap_or_else(|_| json!({"ev": "unparsable", "line": line}));
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        let stderr = child.stderr.take().expect("stderr");
        let log = transcript.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(log.lock().unwrap(), "stderr: {line}");
            }
        });
        let stdin = child.stdin.take().expect("stdin");
        Peer {
            child,
            stdin,
            events,
            transcript,
        }
    }

    fn transcript(&self) -> String {
        self.transcript.lock().unwrap().clone()
    }

    fn command(&mut self, command: Value) {
        writeln!(self.stdin, "{command}").expect("write a command to perl");
    }

    /// `push_read(ty => args..., cb)`; the callback reports `{"ev":"read"}`.
    fn read(&mut self, ty: &str, args: &[Value]) {
        self.command(cmd(&[json!("read"), json!(ty)], args));
    }

    /// As [`read`](Self::read), then the value is written back, same type.
    fn echo(&mut self, ty: &str, args: &[Value]) {
        self.command(cmd(&[json!("echo"), json!(ty)], args));
    }

    /// `push_write(ty => perl expressions...)`; `"raw"` is a plain write.
    fn write(&mut self, ty: &str, exprs: &[&str]) {
        self.command(cmd(&[json!("write"), json!(ty)], &strings(exprs)));
    }

    /// As [`write`](Self::write), in random pieces of 1..=`max` bytes,
    /// `delay` seconds apart.
    fn dribble(&mut self, max: usize, delay: f64, ty: &str, exprs: &[&str]) {
        let head = [json!("dribble"), json!(max), json!(delay), json!(ty)];
        self.command(cmd(&head, &strings(exprs)));
    }

    async fn event(&mut self) -> Value {
        match tokio::time::timeout(STEP, self.events.recv()).await {
            Ok(Some(event)) => event,
            Ok(None) => panic!("perl exited early:\n{}", self.transcript()),
            Err(_) => panic!("no event from perl in time:\n{}", self.transcript()),
        }
    }

    /// The next event, which must be `ev`.
    async fn expect(&mut self, ev: &str) -> Value {
        let event = self.event().await;
        assert_eq!(
            event["ev"],
            ev,
            "expected {ev}, got {event}\n{}",
            self.transcript()
        );
        event
    }

    /// Waits until every output command sent so far has run.
    #[cfg(any(feature = "tls", feature = "rustls"))]
    async fn sync(&mut self) {
        self.command(json!(["sync"]));
        self.expect("sync").await;
    }

    /// The next `evs.len()` events, which must be these kinds in any order
    /// (AE may run a read callback before `on_starttls`, TLS-3), by kind.
    #[cfg(any(feature = "tls", feature = "rustls"))]
    async fn expect_any_order(&mut self, evs: &[&str]) -> Vec<Value> {
        let mut got: Vec<Value> = Vec::new();
        for _ in evs {
            got.push(self.event().await);
        }
        evs.iter()
            .map(|ev| {
                let i = got.iter().position(|e| e["ev"] == *ev).unwrap_or_else(|| {
                    panic!("expected {evs:?}, got {got:?}\n{}", self.transcript())
                });
                got.remove(i)
            })
            .collect()
    }

    /// The next event must be a completed read: what the callback got,
    /// described (see `describe` in the script).
    async fn got(&mut self) -> Vec<Value> {
        let event = self.expect("read").await;
        event["v"].as_array().expect("read values").clone()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("perl peer transcript:\n{}", self.transcript());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cmd(head: &[Value], args: &[Value]) -> Value {
    Value::Array([head, args].concat())
}

fn strings(exprs: &[&str]) -> Vec<Value> {
    exprs.iter().map(|e| json!(e)).collect()
}

/// Which side listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Perl server, anyframe client.
    PerlListens,
    /// anyframe server, Perl client.
    PerlConnects,
}

type Conn = QueuedFramed<TcpStream>;

/// Starts a peer in `role` with extra AnyEvent::Handle `options` and
/// returns it with our end of the connection.
async fn connect(role: Role, options: Value) -> (Peer, Conn) {
    let (peer, tcp) = match role {
        Role::PerlListens => {
            let port = {
                let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe port");
                probe.local_addr().unwrap().port()
            };
            let mut peer = Peer::spawn("listen", port, &options);
            let listening = peer.expect("listening").await;
            assert_eq!(listening["port"], port);
            let tcp = within("connect to perl", TcpStream::connect(("127.0.0.1", port)))
                .await
                .expect("connect to perl");
            (peer, tcp)
        }
        Role::PerlConnects => {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("listen");
            let port = listener.local_addr().unwrap().port();
            let peer = Peer::spawn("connect", port, &options);
            let (tcp, _) = within("perl connects", listener.accept())
                .await
                .expect("accept");
            (peer, tcp)
        }
    };
    let mut peer = peer;
    peer.expect("connected").await;
    tcp.set_nodelay(true).unwrap();
    (peer, QueuedFramed::new(tcp))
}

/// Runs an `async fn(Role)` test in both roles, as two tests.
macro_rules! both_roles {
    ($($(#[$meta:meta])* $name:ident;)*) => {$(
        $(#[$meta])*
        mod $name {
            #[tokio::test]
            async fn perl_listens() {
                if super::have_perl() {
                    super::$name(super::Role::PerlListens).await;
                }
            }

            #[tokio::test]
            async fn perl_connects() {
                if super::have_perl() {
                    super::$name(super::Role::PerlConnects).await;
                }
            }
        }
    )*};
}

// ---- helpers -------------------------------------------------------------------

/// xorshift64*: reproducible random splits and payloads.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// 1..=max.
    fn upto(&mut self, max: usize) -> usize {
        1 + (self.next() % max as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Writes `bytes` in random pieces of 1..=`max` bytes, each flushed on its
/// own (with a short pause after tiny ones, so the reader sees them apart).
async fn dribble(conn: &mut Conn, bytes: &[u8], max: usize, rng: &mut Rng) {
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = rng.upto(max).min(rest.len());
        conn.push_bytes(Bytes::copy_from_slice(&rest[..n])).unwrap();
        within("write a piece", conn.flush()).await.unwrap();
        if max <= 16 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        rest = &rest[n..];
    }
}

/// `conn.write(encoder, item)`, bounded by [`STEP`].
async fn send<E, I>(conn: &mut Conn, encoder: E, item: I)
where
    E: Encoder<I>,
    E::Error: Into<anyframe::Error>,
{
    within("write", conn.write(encoder, item))
        .await
        .expect("write");
}

/// The largest piece [`dribble`] should cut `len` bytes into: a few bytes
/// for small messages, larger pieces for large ones (one pause per piece).
fn pieces_for(len: usize) -> usize {
    if len <= 2048 { 7 } else { 16 * 1024 }
}

/// Encodes `items` one after another with `codec`.
fn encode_all<E: Encoder<I>, I>(mut codec: E, items: impl IntoIterator<Item = I>) -> Vec<u8>
where
    E::Error: std::fmt::Debug,
{
    let mut out = BytesMut::new();
    for item in items {
        codec.encode(item, &mut out).expect("encode");
    }
    out.to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// A Perl expression for exactly these bytes.
fn perl_bytes(bytes: &[u8]) -> String {
    format!("pack('H*','{}')", hex(bytes))
}

/// `pack('N*', 0..)` in Perl: a large payload both sides can build.
fn counting(len: usize) -> (Vec<u8>, String) {
    let words = len.div_ceil(4) as u32;
    let mut bytes: Vec<u8> = (0..words).flat_map(u32::to_be_bytes).collect();
    bytes.truncate(len);
    let expr = format!("substr(pack('N*', 0..{}), 0, {len})", words - 1);
    (bytes, expr)
}

/// What the peer reports for a Perl byte string (see `describe`).
fn d_bytes(bytes: &[u8]) -> Value {
    if bytes.len() <= 4096 {
        json!({ "bytes": hex(bytes) })
    } else {
        json!({ "bytes_len": bytes.len(), "sum": sum32(bytes) })
    }
}

/// What the peer reports for a Perl character string.
fn d_text(text: &str) -> Value {
    if text.len() <= 4096 {
        json!({ "text": text })
    } else {
        json!({ "text_len": text.len(), "sum": sum32(text.as_bytes()) })
    }
}

fn d_int(i: impl std::fmt::Display) -> Value {
    json!({ "int": i.to_string() })
}

/// Perl's `unpack '%32C*'`.
fn sum32(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .fold(0u32, |s, &b| s.wrapping_add(u32::from(b)))
}

/// A described Perl value as the JSON value it stands for (strings of either
/// kind become strings, IVs and NVs numbers).
fn undescribe(d: &Value) -> Value {
    match d {
        Value::Array(items) => Value::Array(items.iter().map(undescribe).collect()),
        Value::Object(map) => {
            if map.len() == 1
                && let Some((kind, Value::String(s))) = map.iter().next()
            {
                match kind.as_str() {
                    "int" => return serde_json::from_str(s).expect("an integer"),
                    "float" => return json!(s.parse::<f64>().expect("a float")),
                    "text" => return Value::String(s.clone()),
                    "bytes" => return Value::String(String::from_utf8(unhex(s)).expect("utf-8")),
                    _ => {}
                }
            }
            Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), undescribe(v)))
                    .collect(),
            )
        }
        other => other.clone(),
    }
}

fn line(raw: &anyframe::codecs::Line) -> (Vec<u8>, Vec<u8>) {
    (raw.line().to_vec(), raw.eol().to_vec())
}

// ---- line ----------------------------------------------------------------------

both_roles! {
    /// Default EOL (`\r?\n`), RT-line-1, both ways, dribbled, plus a 3 MB line.
    line_default_eol;
    /// A literal multi-byte EOL holding a regex metacharacter, split across
    /// reads, RT-line-2.
    line_string_eol;
    /// Regex EOLs, RT-line-3 (each record written whole: split-dependent).
    line_regex_eol;
}

const LINES: &[(&[u8], &[u8])] = &[
    (b"hello", b"\n"),
    (b"crlf", b"\r\n"),
    (b"a\rb\r", b"\r\n"),
    (b"\rd", b"\n"),
    (b"", b"\n"),
    (b"", b"\r\n"),
    ("\u{263a} gr\u{fc}\u{df}e".as_bytes(), b"\r\n"),
    (b"tab\there \x00 nul", b"\n"),
];

async fn line_default_eol(role: Role) {
    let (mut peer, mut conn) = connect(role, json!({})).await;
    let mut rng = Rng::new(1);
    let big: Vec<u8> = rng
        .bytes(LARGE)
        .into_iter()
        .map(|b| b' ' + b % 90)
        .collect();

    // Ours → AE: each line written by our encoder with its EOL as terminator.
    for _ in LINES {
        peer.read("line", &[]);
    }
    peer.echo("line", &[]);
    let wire: Vec<u8> = LINES
        .iter()
        .flat_map(|(text, eol)| {
            let codec = LineCodec::builder().write_terminator(eol).build().unwrap();
            encode_all(codec, [text])
        })
        .collect();
    dribble(&mut conn, &wire, 5, &mut rng).await;
    for (text, eol) in LINES {
        assert_eq!(peer.got().await, [d_bytes(text), d_bytes(eol)]);
    }
    let big_codec = || LineCodec::builder().max_length(LARGE).build().unwrap();
    let big_wire = encode_all(big_codec(), [&big]);
    dribble(&mut conn, &big_wire, 64 * 1024, &mut rng).await;
    assert_eq!(peer.got().await, [d_bytes(&big), d_bytes(b"\n")]);
    // The echo, written by AE as one "$line$eol".
    let echoed = within("3 MB line", conn.read(big_codec())).await.unwrap();
    assert_eq!(line(&echoed), (big.clone(), b"\n".to_vec()));

    // AE → ours: the same lines as plain writes, in random small pieces.
    let raw: Vec<u8> = LINES.iter().flat_map(|(t, e)| [*t, *e].concat()).collect();
    peer.dribble(3, 0.001, "raw", &[&perl_bytes(&raw)]);
    for (text, eol) in LINES {
        let got = within("a line", conn.read(LineCodec::new())).await.unwrap();
        assert_eq!(line(&got), (text.to_vec(), eol.to_vec()));
    }
}

async fn line_string_eol(role: Role) {
    const EOL: &[u8] = b"\r\n.\r\n";
    let cases: &[&[u8]] = &[b"x\ny\r\n", b"a.b", b"p\r\nX\r\nq", b"", b"\r\n.\r"];
    let (mut peer, mut conn) = connect(role, json!({})).await;
    let mut rng = Rng::new(2);
    let eol = std::str::from_utf8(EOL).unwrap();

    for _ in cases {
        peer.read("line", &[json!(eol)]);
    }
    let wire = encode_all(LineCodec::with_eol(EOL).unwrap(), cases.iter().copied());
    dribble(&mut conn, &wire, 3, &mut rng).await;
    for text in cases {
        assert_eq!(peer.got().await, [d_bytes(text), d_bytes(EOL)]);
    }

    peer.dribble(2, 0.001, "raw", &[&perl_bytes(&wire)]);
    for text in cases {
        let got = within("a line", conn.read(LineCodec::with_eol(EOL).unwrap()))
            .await
            .unwrap();
        assert_eq!(line(&got), (text.to_vec(), EOL.to_vec()));
    }
}

async fn line_regex_eol(role: Role) {
    // (regex, bytes written at once, the (line, eol)s both sides must see)
    type Case = (
        &'static str,
        &'static [u8],
        &'static [(&'static [u8], &'static [u8])],
    );
    const CASES: &[Case] = &[
        (
            "[;,]+",
            b"one;;two,three;,four;",
            &[
                (b"one", b";;"),
                (b"two", b","),
                (b"three", b";,"),
                (b"four", b";"),
            ],
        ),
        (
            r"\r\n|\n|\r",
            b"a\r\nb\rc\n\n",
            &[(b"a", b"\r\n"), (b"b", b"\r"), (b"c", b"\n"), (b"", b"\n")],
        ),
        (
            r"END\d+",
            b"xxEND1yyEND22",
            &[(b"xx", b"END1"), (b"yy", b"END22")],
        ),
    ];
    let (mut peer, mut conn) = connect(role, json!({})).await;
    for (re, wire, lines) in CASES {
        let codec = || {
            LineCodec::builder()
                .eol_regex(Regex::new(re).unwrap())
                .build()
                .unwrap()
        };
        for _ in lines.iter() {
            peer.read("line", &[json!({ "re": re })]);
        }
        conn.push_bytes(*wire).unwrap();
        within("write", conn.flush()).await.unwrap();
        for (text, eol) in lines.iter() {
            assert_eq!(peer.got().await, [d_bytes(text), d_bytes(eol)], "{re}");
        }

        peer.write("raw", &[&perl_bytes(wire)]);
        for (text, eol) in lines.iter() {
            let got = within("a line", conn.read(codec())).await.unwrap();
            assert_eq!(line(&got), (text.to_vec(), eol.to_vec()), "{re}");
        }
    }
}

// ---- chunk, regex, netstring, packstring ----------------------------------------

both_roles! {
    /// chunk(N), RT-chunk, including N = 0 and 3 MB.
    chunk;
    /// regex with accept, reject and skip, RT-regex: both sides read the
    /// same byte stream with the same regexes and must cut the same records.
    regex_accept_reject_skip;
    /// netstring, RT-netstring and WT-netstring, including AE's recovery
    /// after a bad trailing byte.
    netstring;
    /// packstring with `C n v N V w`, RT-packstring and WT-packstring, up to
    /// 3 MB.
    packstring;
}

async fn chunk(role: Role) {
    let sizes = [1, 7, 0, 1000, 65_536, LARGE];
    let (mut peer, mut conn) = connect(role, json!({})).await;
    let mut rng = Rng::new(3);
    let payloads: Vec<Vec<u8>> = sizes.iter().map(|&n| rng.bytes(n)).collect();

    // Ours → AE → ours.
    for n in sizes {
        peer.echo("chunk", &[json!(n)]);
    }
    for p in &payloads {
        dribble(&mut conn, p, pieces_for(p.len()), &mut rng).await;
    }
    for (n, p) in sizes.iter().zip(&payloads) {
        assert_eq!(peer.got().await, [d_bytes(p)], "chunk {n}");
    }
    for (n, p) in sizes.iter().zip(&payloads) {
        let got = within("a chunk", conn.read(ChunkCodec::new(*n)))
            .await
            .unwrap();
        assert_eq!(&got[..], &p[..], "chunk {n}");
    }

    // AE's own small writes → ours.
    let (counted, expr) = counting(1000);
    peer.dribble(5, 0.0005, "raw", &[&expr]);
    let got = within("a chunk", conn.read(ChunkCodec::new(1000)))
        .await
        .unwrap();
    assert_eq!(&got[..], &counted[..]);
}

async fn regex_accept_reject_skip(role: Role) {
    // 1. AE's documented HTTP-head example: accept the blank line, skip
    //    everything that cannot end a head (a 100 KB head, dribbled).
    let mut head = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..2000 {
        head.extend_from_slice(format!("X-Pad-{i}: {}\r\n", "p".repeat(40)).as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    let (accept1, skip1) = (r"\r\n\r\n", r"^.*[^\r\n]");
    // 2. Reject is tried only when accept fails (RT-regex-2): a complete
    //    record with a NUL is accepted (written whole: split-dependent).
    let (accept2, reject2) = (r"\n", r"\x00");
    let record2: &[u8] = b"a\x00b\n";
    // 3. A number and a space, anything else rejected (AE's docs): "123 "
    //    passes, "12x" is a non-fatal EBADMSG with nothing consumed.
    let (accept3, reject3) = (r"^[0-9]+\s", r"[^0-9]");

    let (mut peer, mut conn) = connect(role, json!({})).await;
    let mut rng = Rng::new(4);
    peer.read("regex", &[json!(accept1), Value::Null, json!(skip1)]);
    peer.read("chunk", &[json!(4)]);
    peer.read("regex", &[json!(accept2), json!(reject2)]);
    peer.read("regex", &[json!(accept3), json!(reject3)]);
    peer.read("regex", &[json!(accept3), json!(reject3)]);
    dribble(&mut conn, &[&head[..], b"BODY"].concat(), 64, &mut rng).await;
    conn.push_bytes(record2).unwrap();
    within("write", conn.flush()).await.unwrap();
    dribble(&mut conn, b"123 12x", 2, &mut rng).await;
    assert_eq!(peer.got().await, [d_bytes(&head)]);
    assert_eq!(peer.got().await, [d_bytes(b"BODY")]);
    assert_eq!(peer.got().await, [d_bytes(record2)]);
    assert_eq!(peer.got().await, [d_bytes(b"123 ")]);
    let err = peer.expect("error").await;
    assert_eq!(
        (err["fatal"].clone(), err["errno"].clone()),
        (json!(0), json!(74)),
        "EBADMSG"
    );

    // The same stream from AE's plain writes, read by our codecs.
    let regex = |accept: &str, reject: Option<&str>, skip: Option<&str>| {
        let mut b = RegexCodec::builder(Regex::new(accept).unwrap());
        if let Some(r) = reject {
            b.reject(Regex::new(r).unwrap());
        }
        if let Some(s) = skip {
            b.skip(Regex::new(s).unwrap());
        }
        b.max_length(1 << 20).build().unwrap()
    };
    peer.dribble(
        64,
        0.0,
        "raw",
        &[&perl_bytes(&[&head[..], b"BODY"].concat())],
    );
    peer.write("raw", &[&perl_bytes(record2)]);
    peer.dribble(2, 0.001, "raw", &[&perl_bytes(b"123 12x")]);
    let got = within("head", conn.read(regex(accept1, None, Some(skip1)))).await;
    assert_eq!(&got.unwrap()[..], &head[..]);
    let got = within("body", conn.read(ChunkCodec::new(4))).await.unwrap();
    assert_eq!(&got[..], b"BODY");
    let got = within("record", conn.read(regex(accept2, Some(reject2), None))).await;
    assert_eq!(&got.unwrap()[..], record2);
    let got = within("number", conn.read(regex(accept3, Some(reject3), None))).await;
    assert_eq!(&got.unwrap()[..], b"123 ");
    let mut rejecting = regex(accept3, Some(reject3), None);
    let err = within("reject", conn.read_with(&mut rejecting))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadMessage);
    assert!(!err.is_fatal() && !conn.is_closed());
    assert_eq!(conn.read_buffer(), b"12x", "nothing consumed");
}

async fn netstring(role: Role) {
    let mut rng = Rng::new(5);
    let all_bytes: Vec<u8> = (0..=255).collect();
    let payloads: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"hello".to_vec(),
        b"0:xx,,".to_vec(),
        all_bytes,
        "\u{263a}".as_bytes().to_vec(),
        rng.bytes(LARGE),
    ];
    let (mut peer, mut conn) = connect(role, json!({})).await;

    for _ in &payloads {
        peer.echo("netstring", &[]);
    }
    let wire = encode_all(NetstringCodec::new(), payloads.iter());
    let (small, large) = wire.split_at(wire.len() - LARGE - 10);
    dribble(&mut conn, small, 5, &mut rng).await;
    dribble(&mut conn, large, 64 * 1024, &mut rng).await;
    for p in &payloads {
        assert_eq!(peer.got().await, [d_bytes(p)]);
    }
    for p in &payloads {
        let got = within("netstring", conn.read(NetstringCodec::new())).await;
        assert_eq!(&got.unwrap()[..], &p[..]);
    }

    // AE's writer in small pieces.
    peer.dribble(3, 0.0005, "netstring", &["'pieces, of: a netstring'"]);
    let got = within("netstring", conn.read(NetstringCodec::new())).await;
    assert_eq!(&got.unwrap()[..], b"pieces, of: a netstring");

    // A bad trailing byte (RT-netstring-3): AE and we both report a
    // non-fatal EBADMSG, drop that netstring and read on after the odd byte.
    peer.read("netstring", &[]);
    peer.read("netstring", &[]);
    conn.push_bytes(&b"3:abcX3:def,"[..]).unwrap();
    within("write", conn.flush()).await.unwrap();
    let err = peer.expect("error").await;
    assert_eq!(
        (err["fatal"].clone(), err["errno"].clone()),
        (json!(0), json!(74))
    );
    assert_eq!(peer.got().await, [d_bytes(b"def")]);
    peer.write("raw", &["'3:abcX3:def,'"]);
    let err = within("bad", conn.read(NetstringCodec::new()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadMessage);
    assert!(!err.is_fatal());
    let got = within("netstring", conn.read(NetstringCodec::new())).await;
    assert_eq!(&got.unwrap()[..], b"def");
}

async fn packstring(role: Role) {
    use PackFormat::*;
    let cases: &[(PackFormat, &[usize])] = &[
        (U8, &[0, 1, 255]),
        (U16Be, &[0, 256, 65_535]),
        (U16Le, &[0, 258, 65_535]),
        (U32Be, &[0, 65_536, LARGE]),
        (U32Le, &[0, 70_000]),
        (Ber, &[0, 127, 128, 16_383, 16_384, 2_097_152, LARGE]),
    ];
    let (mut peer, mut conn) = connect(role, json!({})).await;
    let mut rng = Rng::new(6);
    for (format, lens) in cases {
        let payloads: Vec<Vec<u8>> = lens.iter().map(|&n| rng.bytes(n)).collect();
        for _ in *lens {
            peer.echo("packstring", &[json!(format.letter())]);
        }
        for p in &payloads {
            let frame = encode_all(PackstringCodec::new(*format), [p]);
            dribble(&mut conn, &frame, pieces_for(frame.len()), &mut rng).await;
        }
        for p in &payloads {
            assert_eq!(peer.got().await, [d_bytes(p)], "{format}");
        }
        for p in &payloads {
            let got = within("packstring", conn.read(PackstringCodec::new(*format))).await;
            assert_eq!(&got.unwrap()[..], &p[..], "{format} {}", p.len());
        }
        // AE's writer in small pieces: 300 bytes (200 for "C").
        let (counted, expr) = counting(if *format == U8 { 200 } else { 300 });
        let fmt = format!("'{}'", format.letter());
        peer.dribble(7, 0.0, "packstring", &[&fmt, &expr]);
        let got = within("packstring", conn.read(PackstringCodec::new(*format))).await;
        assert_eq!(&got.unwrap()[..], &counted[..], "{format}");
    }
}

// ---- json ------------------------------------------------------------------------

both_roles! {
    /// json: objects, arrays, scalars, UTF-8, escapes, 64-bit integers and a
    /// 3 MB text, our writer into AE's reader and AE's writer (the echo, and
    /// values built in Perl) into ours. Only values Perl finds true at the
    /// top level: see `json_falsy_values_are_dropped_by_ae`.
    json;
}

/// Whether AE's reader copes with this top-level text split across reads:
/// JSON::XS's incremental parser fails on split top-level numbers and
/// literals (see `json_top_level_scalars_split_across_reads`).
fn ae_reads_split(v: &Value) -> bool {
    matches!(v, Value::Array(_) | Value::Object(_) | Value::String(_))
}

async fn json(role: Role) {
    let big_text = "\u{263a} grin \u{1f600} ".repeat(LARGE / 14 + 1);
    let values = vec![
        json!({"a": 1, "b": [true, null, "x"], "c": {"d": -2.5, "e": []}}),
        json!([]),
        json!({}),
        json!([0, false, null, "", "0", 0.25, {}]),
        json!("quotes \" backslash \\ newline \n tab \t control \u{1} slash /"),
        json!("\u{263a} \u{65e5}\u{672c}\u{8a9e} \u{1f600} gr\u{fc}\u{df}e"),
        json!(42),
        json!(-17),
        json!(1.5),
        json!(1e300),
        json!(true),
        json!("0.0"),
        json!([u64::MAX, i64::MIN + 1, 9_007_199_254_740_993u64]),
        json!({"k\u{263a}y": {"nested": [[[[[["deep"]]]]]]}}),
        json!((0..20_000).collect::<Vec<_>>()),
        json!({ "big": big_text }),
    ];
    let (mut peer, mut conn) = connect(role, json!({})).await;
    let mut rng = Rng::new(7);

    for _ in &values {
        peer.echo("json", &[]);
    }
    for v in &values {
        let text = encode_all(JsonCodec::<Value>::new(), [v]);
        if ae_reads_split(v) {
            dribble(&mut conn, &text, pieces_for(text.len()), &mut rng).await;
        } else {
            conn.push_bytes(text).unwrap();
            within("write", conn.flush()).await.unwrap();
        }
    }
    for v in &values[..values.len() - 1] {
        let got = peer.got().await;
        assert_eq!(undescribe(&got[0]), *v);
    }
    assert_eq!(peer.got().await, [json!({ "big": d_text(&big_text) })]);
    for v in &values {
        let got: Value = within("json", conn.read(JsonCodec::new())).await.unwrap();
        assert_eq!(got, *v);
    }

    // Values built in Perl, written by AE in small pieces, back to back.
    peer.dribble(
        3,
        0.0005,
        "json",
        &[r#"{a => 1, b => [JSON::XS::true, undef, "x"], c => {d => -2.5}}"#],
    );
    peer.dribble(3, 0.0005, "json", &[r#""\x{263a} \x{65e5}\x{672c}""#]);
    peer.dribble(3, 0.0005, "json", &["[1 .. 5, 1 << 53]"]);
    let expect = [
        json!({"a": 1, "b": [true, null, "x"], "c": {"d": -2.5}}),
        json!("\u{263a} \u{65e5}\u{672c}"),
        json!([1, 2, 3, 4, 5, 9_007_199_254_740_992u64]),
    ];
    for v in expect {
        let got: Value = within("json", conn.read(JsonCodec::new())).await.unwrap();
        assert_eq!(got, v);
    }
}

/// RT-json-3: AE's json reader tests the decoded value for truth, so a
/// complete top-level text Perl finds false (`0`, `0.0`, `""`, `"0"`,
/// `false`, `null`) is consumed and silently dropped, and the text after it
/// stays in JSON::XS's buffer until more bytes arrive. AE's writer has no
/// such problem, and our reader delivers every value (docs/semantics.md §2).
#[tokio::test]
async fn json_falsy_values_are_dropped_by_ae() {
    if !have_perl() {
        return;
    }
    let (mut peer, mut conn) = connect(Role::PerlListens, json!({})).await;
    let falsy = [
        json!(0),
        json!(0.0),
        json!(""),
        json!("0"),
        json!(false),
        json!(null),
    ];
    for _ in 0..3 {
        peer.read("json", &[]);
    }
    // One text per write, then a true one. (5e-324 too: JSON::XS reads the
    // smallest subnormal as 0.)
    for v in falsy.iter().chain([&json!(5e-324), &json!(["after"])]) {
        send(&mut conn, JsonCodec::<Value>::new(), v).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    send(&mut conn, JsonCodec::<Value>::new(), json!(["end"])).await;
    // Observed: the falsy texts vanish; "after" and "end" arrive.
    assert_eq!(undescribe(&peer.got().await[0]), json!(["after"]));
    assert_eq!(undescribe(&peer.got().await[0]), json!(["end"]));

    // AE writes them all (a whole-number float as an integer: `0.0` is
    // written `0`), and we read them all.
    for v in ["0", "0.0", "''", "'0'", "JSON::XS::false", "undef"] {
        peer.write("json", &[v]);
        peer.write("raw", &["qq{\\n}"]);
    }
    let written = [
        json!(0),
        json!(0),
        json!(""),
        json!("0"),
        json!(false),
        json!(null),
    ];
    for v in &written {
        let got: Value = within("json", conn.read(JsonCodec::new())).await.unwrap();
        assert_eq!(got, *v);
    }
}

/// RT-json-5 and docs/semantics.md §11: top-level numbers and literals on a stream.
/// AE's writer puts nothing between texts and JSON::XS's incremental reader
/// takes a number at the end of the bytes it has as complete, so `4`
/// followed later by `2` is two numbers to AE, while to us (and to any
/// reader of the wire) it is 42; and a literal split across reads is a
/// parse error for AE. Our writer always ends a top-level number with a
/// newline, and our reader waits for a delimiter.
#[tokio::test]
async fn json_top_level_scalars_split_across_reads() {
    if !have_perl() {
        return;
    }
    let (mut peer, mut conn) = connect(Role::PerlListens, json!({})).await;

    // AE writes 4 and 2 as two texts: the wire says "42".
    peer.write("json", &["4"]);
    peer.write("json", &["2"]);
    peer.write("json", &["[]"]);
    let got: Value = within("json", conn.read(JsonCodec::new())).await.unwrap();
    assert_eq!(got, json!(42));
    let got: Value = within("json", conn.read(JsonCodec::new())).await.unwrap();
    assert_eq!(got, json!([]));

    // AE reads "4", then (later) "2\n", as 4 and 2.
    peer.read("json", &[]);
    peer.read("json", &[]);
    send(&mut conn, anyframe::codecs::RawCodec::new(), &b"4"[..]).await;
    assert_eq!(peer.got().await, [d_int(4)]);
    send(&mut conn, anyframe::codecs::RawCodec::new(), &b"2\n"[..]).await;
    assert_eq!(peer.got().await, [d_int(2)]);

    // A literal split across reads: JSON::XS fails on the first half.
    peer.read("json", &[]);
    send(&mut conn, anyframe::codecs::RawCodec::new(), &b"tr"[..]).await;
    let err = peer.expect("error").await;
    assert_eq!(
        (err["fatal"].clone(), err["errno"].clone()),
        (json!(0), json!(74)),
        "EBADMSG"
    );
    // The rest, "ue", is one more EBADMSG; the [7] after it stays inside
    // JSON::XS until more bytes arrive ([8]), which brings [7] out.
    send(
        &mut conn,
        anyframe::codecs::RawCodec::new(),
        &b"ue\n[7]"[..],
    )
    .await;
    let err = peer.expect("error").await;
    assert_eq!(
        (err["fatal"].clone(), err["errno"].clone()),
        (json!(0), json!(74)),
        "EBADMSG"
    );
    send(&mut conn, anyframe::codecs::RawCodec::new(), &b"[8]"[..]).await;
    assert_eq!(undescribe(&peer.got().await[0]), json!([7]));
}

/// docs/semantics.md §11: numbers between serde_json and JSON::XS. Each text goes to AE,
/// which reads it (what Perl holds is checked) and writes it back; what we
/// read back is checked too. JSON::XS writes doubles with 15 significant
/// digits, whole-number doubles as integers, integers beyond 64 bits (and,
/// at its boundary, i64::MIN) as strings, and infinity as `inf` (not JSON).
#[tokio::test]
async fn json_numbers_between_json_xs_and_serde_json() {
    if !have_perl() {
        return;
    }
    let (mut peer, mut conn) = connect(Role::PerlListens, json!({})).await;
    // (what we send, what Perl holds, what comes back)
    let cases = [
        ("0.1", json!({"float": "0.10000000000000001"}), json!(0.1)),
        (
            "0.3333333333333333",
            json!({"float": "0.33333333333333331"}),
            json!(0.333_333_333_333_333),
        ),
        (
            "123456789.123456789",
            json!({"float": "123456789.12345679"}),
            json!(123_456_789.123_457),
        ),
        ("1.0", json!({"float": "1"}), json!(1)),
        (
            "9007199254740993",
            d_int(9_007_199_254_740_993u64),
            json!(9_007_199_254_740_993u64),
        ),
        (
            "-9223372036854775807",
            d_int(i64::MIN + 1),
            json!(i64::MIN + 1),
        ),
        (
            "-9223372036854775808",
            d_bytes(b"-9223372036854775808"),
            json!("-9223372036854775808"),
        ),
        (
            "18446744073709551616",
            d_bytes(b"18446744073709551616"),
            json!("18446744073709551616"),
        ),
    ];
    for (text, held, back) in cases {
        peer.echo("json", &[]);
        send(
            &mut conn,
            anyframe::codecs::RawCodec::new(),
            format!("{text}\n"),
        )
        .await;
        assert_eq!(peer.got().await, [held], "{text}");
        let got: Value = within("json", conn.read(JsonCodec::new())).await.unwrap();
        assert_eq!(got, back, "{text}");
    }

    // f64::MAX comes back as 1.79769313486232e+308, beyond f64: a
    // non-fatal EBADMSG for us (the text is consumed), and we read on.
    peer.echo("json", &[]);
    send(&mut conn, JsonCodec::<f64>::new(), f64::MAX).await;
    assert_eq!(
        peer.got().await,
        [json!({"float": "1.7976931348623157e+308"})]
    );
    let err = within("json", conn.read(JsonCodec::<Value>::new()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadMessage);
    assert!(!err.is_fatal());
    // 1e400 is infinity to JSON::XS, which writes it as `inf`: not JSON, a
    // non-fatal EBADMSG that consumes nothing, so we skip it by hand.
    peer.echo("json", &[]);
    send(&mut conn, anyframe::codecs::RawCodec::new(), "1e400\n").await;
    assert_eq!(peer.got().await, [json!({"float": "Inf"})]);
    let err = within("json", conn.read(JsonCodec::<Value>::new()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadMessage);
    // The newline left after the previous text stays too: a failed read
    // consumes nothing.
    assert_eq!(conn.read_buffer(), b"\ninf\n");
    conn.consume(5);
    // A Perl double that holds an integer, 2**53, is written with 15 digits.
    peer.write("json", &["[2**53]"]);
    let got: Value = within("json", conn.read(JsonCodec::new())).await.unwrap();
    assert_eq!(got, json!([9.007_199_254_740_99e15]));
}

// ---- cbor ------------------------------------------------------------------------

both_roles! {
    /// cbor, RT-cbor and WT-cbor: items of every major type (definite and
    /// indefinite lengths, tags, simple values, half/single/double floats)
    /// written by us and read by AE, written back by CBOR::XS and read by
    /// us, byte for byte; typed values both ways; a 3 MB item.
    cbor;
}

/// (item we send, what CBOR::XS decodes it to, how CBOR::XS writes that
/// back): the third column is what AE peers put on the wire (docs/semantics.md §11).
const CBOR_ITEMS: &[(&str, &str, &str)] = &[
    // 0: unsigned integers, every head size.
    ("00", r#"{"int":"0"}"#, "00"),
    ("17", r#"{"int":"23"}"#, "17"),
    ("1818", r#"{"int":"24"}"#, "1818"),
    ("18ff", r#"{"int":"255"}"#, "18ff"),
    ("190100", r#"{"int":"256"}"#, "190100"),
    ("1a00010000", r#"{"int":"65536"}"#, "1a00010000"),
    (
        "1b0000000100000000",
        r#"{"int":"4294967296"}"#,
        "1b0000000100000000",
    ),
    (
        "1bffffffffffffffff",
        r#"{"int":"18446744073709551615"}"#,
        "1bffffffffffffffff",
    ),
    // 1: negative integers down to i64::MIN (below it, see
    // `cbor_where_cbor_xs_and_we_disagree`).
    ("20", r#"{"int":"-1"}"#, "20"),
    ("37", r#"{"int":"-24"}"#, "37"),
    ("3818", r#"{"int":"-25"}"#, "3818"),
    (
        "3b7fffffffffffffff",
        r#"{"int":"-9223372036854775808"}"#,
        "3b7fffffffffffffff",
    ),
    // 2: byte strings; an indefinite one comes back definite.
    ("40", r#"{"bytes":""}"#, "40"),
    ("4300ff61", r#"{"bytes":"00ff61"}"#, "4300ff61"),
    ("5f4201024103ff", r#"{"bytes":"010203"}"#, "43010203"),
    // 3: text strings stay text (Perl keeps them flagged as characters).
    ("60", r#"{"text":""}"#, "60"),
    ("63e298ba", r#"{"text":"☺"}"#, "63e298ba"),
    ("7f61616162ff", r#"{"text":"ab"}"#, "626162"),
    // 4: arrays.
    ("80", "[]", "80"),
    (
        "830182020304",
        r#"[{"int":"1"},[{"int":"2"},{"int":"3"}],{"int":"4"}]"#,
        "830182020304",
    ),
    ("9f0102ff", r#"[{"int":"1"},{"int":"2"}]"#, "820102"),
    ("9fff", "[]", "80"),
    // 5: maps. Keys become Perl hash keys: they come back as byte strings,
    // an integer key as its decimal digits.
    ("a0", "{}", "a0"),
    ("a1616101", r#"{"a":{"int":"1"}}"#, "a1416101"),
    ("a10102", r#"{"1":{"int":"2"}}"#, "a1413102"),
    ("bf616101ff", r#"{"a":{"int":"1"}}"#, "a1416101"),
    // 6: tags. Unknown ones are kept; 1 (epoch time) becomes a Time::Piece
    // and goes back as it came; 55799 (self-described CBOR) is dropped.
    (
        "d930396178",
        r#"{"tag":"12345","value":{"text":"x"}}"#,
        "d930396178",
    ),
    (
        "d81843820102",
        r#"{"tag":"24","value":{"bytes":"820102"}}"#,
        "d81843820102",
    ),
    ("c11a514b67b0", r#"{"ref":"Time::Piece"}"#, "c11a514b67b0"),
    ("d9d9f701", r#"{"int":"1"}"#, "01"),
    // 7: simple values and floats. A whole-number float goes back as an
    // integer (-0.0 as 0); no float16 is written: infinities as float32,
    // NaN as float64.
    ("f4", "false", "f4"),
    ("f5", "true", "f5"),
    ("f6", "null", "f6"),
    ("f7", r#"{"ref":"Types::Serialiser::Error"}"#, "f7"),
    ("f93c00", r#"{"float":"1"}"#, "01"),
    ("fa47c35000", r#"{"float":"100000"}"#, "1a000186a0"),
    ("f98000", r#"{"float":"-0"}"#, "00"),
    ("f97c00", r#"{"float":"Inf"}"#, "fa7f800000"),
    ("f9fc00", r#"{"float":"-Inf"}"#, "faff800000"),
    ("f97e00", r#"{"float":"NaN"}"#, "fb7ff8000000000000"),
    ("fa3fc00000", r#"{"float":"1.5"}"#, "fa3fc00000"),
    (
        "fb3fb999999999999a",
        r#"{"float":"0.10000000000000001"}"#,
        "fb3fb999999999999a",
    ),
    (
        "fb7fefffffffffffff",
        r#"{"float":"1.7976931348623157e+308"}"#,
        "fb7fefffffffffffff",
    ),
];

#[derive(Debug, PartialEq, serde::Deserialize)]
struct Person {
    name: String,
    age: u32,
    tags: Vec<String>,
}

async fn cbor(role: Role) {
    use serde_cbor::Value as Cbor;
    let (mut peer, mut conn) = connect(role, json!({})).await;
    let mut rng = Rng::new(8);

    // Hand-made items, ours → AE → ours.
    for _ in CBOR_ITEMS {
        peer.echo("cbor", &[]);
    }
    let wire: Vec<u8> = CBOR_ITEMS
        .iter()
        .flat_map(|(item, ..)| unhex(item))
        .collect();
    dribble(&mut conn, &wire, 5, &mut rng).await;
    for (item, held, _) in CBOR_ITEMS {
        let held: Value = serde_json::from_str(held).unwrap();
        assert_eq!(peer.got().await, [held], "{item}");
    }
    for (item, _, back) in CBOR_ITEMS {
        let raw = within("cbor", conn.read(RawCborCodec::new()))
            .await
            .unwrap();
        assert_eq!(hex(&raw), *back, "{item}");
        // Our typed decoder takes all of it.
        let mut buf = BytesMut::from(&raw[..]);
        let decoded = tokio_util::codec::Decoder::decode(&mut CborCodec::<Cbor>::new(), &mut buf);
        assert!(matches!(decoded, Ok(Some(_))), "{item}: {decoded:?}");
    }

    // Our encoder's values, and a 3 MB item, through AE and back.
    let blob = rng.bytes(LARGE);
    let large = Cbor::Array(vec![
        Cbor::Bytes(blob.clone()),
        Cbor::Array(
            (0..100_000)
                .map(|i| Cbor::Integer(i * 7 - 300_000))
                .collect(),
        ),
    ]);
    let typed = serde_cbor::value::to_value(
        serde_json::from_value::<std::collections::BTreeMap<String, Value>>(
            json!({"name": "ann", "n": [1, -1, 1.5, null, true], "s": "\u{263a}"}),
        )
        .unwrap(),
    )
    .unwrap();
    peer.echo("cbor", &[]);
    peer.echo("cbor", &[]);
    let wire = encode_all(CborCodec::<Cbor>::new(), [&typed, &large]);
    dribble(&mut conn, &wire, 16 * 1024, &mut rng).await;
    assert_eq!(
        peer.got().await,
        [json!({
            "name": d_text("ann"),
            "n": [d_int(1), d_int(-1), {"float": "1.5"}, null, true],
            "s": d_text("\u{263a}"),
        })]
    );
    let got = peer.got().await;
    assert_eq!(got[0][0], d_bytes(&blob));
    assert_eq!(got[0][1].as_array().unwrap().len(), 100_000);
    assert_eq!(got[0][1][99_999], d_int(99_999 * 7 - 300_000));
    let back: Cbor = within("cbor", conn.read(CborCodec::new())).await.unwrap();
    // The same, but for the map keys: Perl hash keys, written as byte strings.
    let Cbor::Map(sent) = &typed else {
        panic!("a map")
    };
    let expect = sent
        .iter()
        .map(|(k, v)| match k {
            Cbor::Text(k) => (Cbor::Bytes(k.clone().into_bytes()), v.clone()),
            _ => unreachable!("text keys"),
        })
        .collect();
    assert_eq!(back, Cbor::Map(expect));
    let back: Cbor = within("3 MB cbor", conn.read(CborCodec::new()))
        .await
        .unwrap();
    assert_eq!(back, large);

    // Perl values written by AE in 1-byte pieces, into a serde struct: ASCII
    // strings and hash keys arrive as byte strings, which a `String` takes.
    peer.dribble(
        1,
        0.0002,
        "cbor",
        &[r#"{name => 'ann', age => 42, tags => ['a', "\x{263a}"]}"#],
    );
    let person: Person = within("cbor", conn.read(CborCodec::new())).await.unwrap();
    assert_eq!(
        person,
        Person {
            name: "ann".into(),
            age: 42,
            tags: vec!["a".into(), "\u{263a}".into()],
        }
    );
}

/// WT-cbor-1 and docs/semantics.md §11: what CBOR::XS (AE's default coder, no options)
/// writes for Perl values, byte for byte, and that we read it. ASCII (and
/// numeric-looking) Perl strings are byte strings, character strings are
/// text; whole-number doubles up to 2^32-1 are integers, above that float32
/// when exact; no float16; Perl references are tag 22098.
#[tokio::test]
async fn cbor_written_by_cbor_xs_from_perl_values() {
    if !have_perl() {
        return;
    }
    let (mut peer, mut conn) = connect(Role::PerlListens, json!({})).await;
    let cases: &[(&str, &str)] = &[
        ("'ascii'", "456173636969"),
        ("'1'", "4131"),
        (r#""\x{263a}""#, "63e298ba"),
        ("1", "01"),
        ("65504.0", "19ffe0"),
        ("4294967295.0", "1affffffff"),
        ("2**32", "fa4f800000"),
        ("2**40", "fa53800000"),
        ("1.5", "fa3fc00000"),
        ("0.1", "fb3fb999999999999a"),
        ("-0.0", "00"),
        ("undef", "f6"),
        ("JSON::XS::true", "f5"),
        ("[\\1]", "81d9565201"),
        ("CBOR::XS::tag(12345, 'x')", "d930394178"),
        ("{k => 'v'}", "a1416b4176"),
    ];
    for (perl, _) in cases {
        peer.write("cbor", &[perl]);
    }
    for (perl, wire) in cases {
        let raw = within("cbor", conn.read(RawCborCodec::new()))
            .await
            .unwrap();
        assert_eq!(hex(&raw), *wire, "{perl}");
        let mut buf = BytesMut::from(&raw[..]);
        let decoded = tokio_util::codec::Decoder::decode(
            &mut CborCodec::<serde_cbor::Value>::new(),
            &mut buf,
        );
        assert!(matches!(decoded, Ok(Some(_))), "{perl}: {decoded:?}");
    }
}

/// docs/semantics.md §11: where CBOR::XS and we part. CBOR::XS decodes negative integers
/// below -2^63 wrongly (they wrap); it takes a text string that is not
/// UTF-8 and a text chunk inside an indefinite byte string, which RFC 8949
/// forbids and we refuse; both refuse an unassigned simple value.
#[tokio::test]
async fn cbor_where_cbor_xs_and_we_disagree() {
    use serde_cbor::Value as Cbor;
    if !have_perl() {
        return;
    }
    let (mut peer, mut conn) = connect(Role::PerlListens, json!({})).await;
    let decode = |hex_item: &str| {
        let mut buf = BytesMut::from(&unhex(hex_item)[..]);
        let r = tokio_util::codec::Decoder::decode(&mut CborCodec::<Cbor>::new(), &mut buf);
        (r, buf.len())
    };

    // -2^63-1 and -2^64: CBOR::XS wraps them; we decode them right.
    for (item, held, back, ours) in [
        (
            "3b8000000000000000",
            "9223372036854775807",
            "1b7fffffffffffffff",
            -(1i128 << 63) - 1,
        ),
        ("3bffffffffffffffff", "0", "00", -(1i128 << 64)),
    ] {
        peer.echo("cbor", &[]);
        send(&mut conn, RawCborCodec::new(), Bytes::from(unhex(item))).await;
        assert_eq!(peer.got().await, [d_int(held)], "{item}");
        let raw = within("cbor", conn.read(RawCborCodec::new()))
            .await
            .unwrap();
        assert_eq!(hex(&raw), back, "{item}");
        assert!(matches!(decode(item).0, Ok(Some(Cbor::Integer(i))) if i == ours));
    }

    // Invalid UTF-8 in a text string: AE hands Perl a malformed character
    // string and writes the same bytes back; our framing passes the item,
    // our decoder refuses it (EBADMSG, non-fatal, item consumed).
    peer.echo("cbor", &[]);
    send(
        &mut conn,
        RawCborCodec::new(),
        Bytes::from(unhex("63fffefd")),
    )
    .await;
    assert_eq!(peer.got().await, [json!({"malformed_text": "fffefd"})]);
    let err = within("cbor", conn.read(CborCodec::<Cbor>::new()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadMessage);
    assert!(!err.is_fatal() && conn.read_buffer().is_empty());

    // A text chunk in an indefinite byte string: AE reads the bytes "a"; we
    // refuse at the chunk (EBADMSG, nothing consumed).
    peer.echo("cbor", &[]);
    send(
        &mut conn,
        RawCborCodec::new(),
        Bytes::from(unhex("5f6161ff")),
    )
    .await;
    assert_eq!(peer.got().await, [d_bytes(b"a")]);
    let raw = within("cbor", conn.read(RawCborCodec::new()))
        .await
        .unwrap();
    assert_eq!(hex(&raw), "4161");
    assert_eq!(
        decode("5f6161ff").0.unwrap_err().kind(),
        anyframe::codecs::ErrorKind::BadMessage
    );
    assert_eq!(decode("5f6161ff").1, 4, "nothing consumed");

    // Simple value 16 (unassigned): AE's EBADMSG; ours too.
    peer.read("cbor", &[]);
    send(&mut conn, RawCborCodec::new(), Bytes::from(unhex("f0"))).await;
    let err = peer.expect("error").await;
    assert_eq!(
        (err["fatal"].clone(), err["errno"].clone()),
        (json!(0), json!(74)),
        "EBADMSG"
    );
    assert!(decode("f0").0.is_err());
}

/// WT-packstring-1 and docs/semantics.md §11: a payload too long for its length field.
/// AE's `C` throws from `push_write` and writes nothing; `n` wraps silently
/// (65541 bytes go out with the prefix 0005, so the reader takes 5 bytes
/// and the rest is out of step). Our encoder refuses both.
#[tokio::test]
async fn packstring_payload_too_long_for_its_prefix() {
    if !have_perl() {
        return;
    }
    let (mut peer, mut conn) = connect(Role::PerlListens, json!({})).await;
    for (format, len) in [(PackFormat::U8, 300), (PackFormat::U16Be, 65_541)] {
        let err = conn
            .push_write(PackstringCodec::new(format), vec![b'x'; len])
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{format}");
        assert_eq!(conn.write_buffered(), 0);
    }

    peer.write("packstring", &["'C'", "'x' x 300"]);
    let died = peer.expect("died").await;
    assert_eq!(died["what"], "write packstring", "{died}");
    peer.write("packstring", &["'n'", "'y' x 65541"]);
    peer.write("raw", &["'after'"]);
    let got = within(
        "packstring",
        conn.read(PackstringCodec::new(PackFormat::U16Be)),
    )
    .await
    .unwrap();
    assert_eq!(&got[..], b"yyyyy");
    let rest = within("the rest", conn.read(ChunkCodec::new(65_536 + 5)))
        .await
        .unwrap();
    assert_eq!(&rest[..], [&[b'y'; 65_536][..], b"after"].concat());
}

// ---- TLS -------------------------------------------------------------------------

/// AnyEvent::Handle options for a Perl TLS server (`server`) or a client
/// that verifies our certificate against the test CA, plus `extra`.
#[cfg(any(feature = "tls", feature = "rustls"))]
fn perl_tls(server: bool, extra: Value) -> Value {
    let file = |name: &str| pki::pki().dir.join(name).to_str().unwrap().to_owned();
    let mut options = if server {
        json!({"tls_ctx": {"cert_file": file("server.pem"), "key_file": file("server.key")}})
    } else {
        json!({
            "tls_ctx": {"ca_file": file("ca.pem"), "verify": 1, "verify_peername": "https"},
            "peername": "localhost",
        })
    };
    options
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    options
}

/// Our TLS settings for `role` with backend `b`: client when Perl
/// listens, else server.
#[cfg(any(feature = "tls", feature = "rustls"))]
fn our_tls(role: Role, b: TlsBackend) -> anyframe::tls::TlsMode {
    match role {
        Role::PerlListens => pki::client_on(b),
        Role::PerlConnects => pki::server_on(b, &pki::pki().server).into(),
    }
}

/// Lines both ways, a 3 MB packstring through AE and back, and a JSON text
/// from Perl: over whatever the connection is now (TLS here).
#[cfg(any(feature = "tls", feature = "rustls"))]
async fn exchange(peer: &mut Peer, conn: &mut Conn, rng: &mut Rng) {
    peer.echo("line", &[]);
    send(conn, LineCodec::new(), "over tls \u{263a}").await;
    assert_eq!(
        peer.got().await,
        [d_bytes("over tls \u{263a}".as_bytes()), d_bytes(b"\n")]
    );
    let got = within("line", conn.read(LineCodec::new())).await.unwrap();
    assert_eq!(got.line(), "over tls \u{263a}".as_bytes());

    let blob = rng.bytes(LARGE);
    peer.echo("packstring", &[json!("N")]);
    let frame = encode_all(PackstringCodec::new(PackFormat::U32Be), [&blob]);
    dribble(conn, &frame, 16 * 1024, rng).await;
    assert_eq!(peer.got().await, [d_bytes(&blob)]);
    let got = within(
        "3 MB over tls",
        conn.read(PackstringCodec::new(PackFormat::U32Be)),
    )
    .await;
    assert!(got.unwrap() == blob, "the 3 MB payload came back intact");

    peer.dribble(3, 0.0, "json", &["{tls => JSON::XS::true}"]);
    let got: Value = within("json", conn.read(JsonCodec::new())).await.unwrap();
    assert_eq!(got, json!({"tls": true}));
}

/// TLS-1 with AE's `tls => "connect"` constructor option: a Perl client
/// that verifies our certificate, against our accept.
#[cfg(any(feature = "tls", feature = "rustls"))]
#[tokio::test]
async fn tls_perl_connect_against_our_accept() {
    if !have_perl() {
        return;
    }
    for &b in pki::BACKENDS {
        tls_perl_connect_against_our_accept_on(b).await;
    }
}

#[cfg(any(feature = "tls", feature = "rustls"))]
async fn tls_perl_connect_against_our_accept_on(b: TlsBackend) {
    let options = perl_tls(false, json!({"tls": "connect"}));
    let (mut peer, mut conn) = connect(Role::PerlConnects, options).await;
    within(
        "handshake",
        conn.starttls(pki::server_on(b, &pki::pki().server)),
    )
    .await
    .unwrap();
    assert!(conn.is_tls());
    assert_eq!(peer.expect("starttls").await["ok"], 1);
    exchange(&mut peer, &mut conn, &mut Rng::new(9)).await;
}

/// Our client (verifying AE's certificate and host name) against AE's
/// `tls => "accept"`.
#[cfg(any(feature = "tls", feature = "rustls"))]
#[tokio::test]
async fn tls_our_connect_against_perl_accept() {
    if !have_perl() {
        return;
    }
    for &b in pki::BACKENDS {
        tls_our_connect_against_perl_accept_on(b).await;
    }
}

#[cfg(any(feature = "tls", feature = "rustls"))]
async fn tls_our_connect_against_perl_accept_on(b: TlsBackend) {
    let options = perl_tls(true, json!({"tls": "accept"}));
    let (mut peer, mut conn) = connect(Role::PerlListens, options).await;
    within("handshake", conn.starttls(pki::client_on(b)))
        .await
        .unwrap();
    assert_eq!(peer.expect("starttls").await["ok"], 1);
    exchange(&mut peer, &mut conn, &mut Rng::new(10)).await;
}

both_roles! {
    /// STARTTLS mid-stream, SMTP-shaped: the client waits for the server's
    /// go-ahead before its ClientHello.
    #[cfg(any(feature = "tls", feature = "rustls"))]
    starttls_after_a_go_ahead;
    /// STARTTLS mid-stream, pipelined: the client's ClientHello follows its
    /// STARTTLS line at once, so the server has it in its read buffer when
    /// it switches (TLS-2: it must become ciphertext, not data).
    #[cfg(any(feature = "tls", feature = "rustls"))]
    starttls_pipelined;
}

#[cfg(any(feature = "tls", feature = "rustls"))]
async fn starttls_after_a_go_ahead(role: Role) {
    for &b in pki::BACKENDS {
        starttls_after_a_go_ahead_on(role, b).await;
    }
}

#[cfg(any(feature = "tls", feature = "rustls"))]
async fn starttls_after_a_go_ahead_on(role: Role, b: TlsBackend) {
    let server = role == Role::PerlListens;
    let (mut peer, mut conn) = connect(role, perl_tls(server, json!({}))).await;
    if server {
        // Perl serves, we are the client.
        peer.read("line", &[]);
        send(&mut conn, LineCodec::new(), "STARTTLS").await;
        assert_eq!(peer.got().await[0], d_bytes(b"STARTTLS"));
        peer.write("raw", &["qq{220 go\\r\\n}"]);
        peer.command(json!(["starttls", "accept"]));
        let go = within("go", conn.read(LineCodec::new())).await.unwrap();
        assert_eq!(go.line(), b"220 go");
        within("handshake", conn.starttls(our_tls(role, b)))
            .await
            .unwrap();
        assert_eq!(peer.expect("starttls").await["ok"], 1);
    } else {
        peer.write("raw", &["qq{STARTTLS\\r\\n}"]);
        peer.read("line", &[]);
        let line = within("line", conn.read(LineCodec::new())).await.unwrap();
        assert_eq!(line.line(), b"STARTTLS");
        send(&mut conn, LineCodec::new(), "220 go").await;
        let perl_side = async {
            assert_eq!(peer.got().await[0], d_bytes(b"220 go"));
            peer.command(json!(["starttls", "connect"]));
            assert_eq!(peer.expect("starttls").await["ok"], 1);
        };
        let (ours, ()) = tokio::join!(
            within("handshake", conn.starttls(our_tls(role, b))),
            perl_side
        );
        ours.unwrap();
    }
    exchange(&mut peer, &mut conn, &mut Rng::new(11)).await;
}

#[cfg(any(feature = "tls", feature = "rustls"))]
async fn starttls_pipelined(role: Role) {
    for &b in pki::BACKENDS {
        starttls_pipelined_on(role, b).await;
    }
}

#[cfg(any(feature = "tls", feature = "rustls"))]
async fn starttls_pipelined_on(role: Role, b: TlsBackend) {
    let server = role == Role::PerlListens;
    let options = perl_tls(server, json!({"autocork": 1}));
    let (mut peer, mut conn) = connect(role, options).await;
    if server {
        peer.read("line", &[]);
        conn.push_write(LineCodec::new(), "STARTTLS").unwrap();
        let perl_side = async {
            assert_eq!(peer.got().await[0], d_bytes(b"STARTTLS"));
            peer.command(json!(["starttls", "accept"]));
            assert_eq!(peer.expect("starttls").await["ok"], 1);
        };
        let (ours, ()) = tokio::join!(
            within("handshake", conn.starttls(our_tls(role, b))),
            perl_side
        );
        ours.unwrap();
    } else {
        // AE (with autocork) sends the line and its ClientHello in one
        // write: our read of the line buffers the start of the handshake.
        peer.command(json!(["starttls", "connect", "qq{STARTTLS\\r\\n}"]));
        let line = within("line", conn.read(LineCodec::new())).await.unwrap();
        assert_eq!(line.line(), b"STARTTLS");
        assert!(!conn.read_buffer().is_empty(), "the ClientHello came along");
        within("handshake", conn.starttls(our_tls(role, b)))
            .await
            .unwrap();
        assert_eq!(peer.expect("starttls").await["ok"], 1);
    }
    exchange(&mut peer, &mut conn, &mut Rng::new(12)).await;
}

/// RT-tlsauto on AE's side: one Perl server, `tls_detect` then
/// `tls_autostart`, takes our TLS client and our plaintext client.
#[cfg(any(feature = "tls", feature = "rustls"))]
#[tokio::test]
async fn tls_autostart_on_perl_server() {
    if !have_perl() {
        return;
    }
    for &b in pki::BACKENDS {
        tls_autostart_on_perl_server_on(b).await;
    }
}

#[cfg(any(feature = "tls", feature = "rustls"))]
async fn tls_autostart_on_perl_server_on(b: TlsBackend) {
    for tls in [true, false] {
        let (mut peer, mut conn) = connect(Role::PerlListens, perl_tls(true, json!({}))).await;
        peer.read("tls_detect", &[]);
        peer.command(json!(["read", "tls_autostart", "accept"]));
        peer.read("line", &[]);
        if tls {
            within("handshake", conn.starttls(pki::client_on(b)))
                .await
                .unwrap();
        }
        send(&mut conn, LineCodec::new(), "hello").await;
        let detected = peer.got().await;
        if tls {
            // A TLS record header: handshake, version 3.1 (OpenSSL's
            // ClientHello record), as AE reports it.
            assert_eq!(detected, [d_bytes(b"accept"), d_int(3), d_int(1)]);
            let [started, line] = &peer.expect_any_order(&["starttls", "read"]).await[..] else {
                unreachable!()
            };
            assert_eq!(started["ok"], 1);
            assert_eq!(line["v"][0], d_bytes(b"hello"));
        } else {
            assert_eq!(detected, [Value::Null]);
            assert_eq!(peer.got().await[0], d_bytes(b"hello"));
        }
    }
}

/// RT-tlsauto on our side: our server's `tls_autostart` takes AE's TLS
/// client (`tls => "connect"`) and AE's plaintext client.
#[cfg(any(feature = "tls", feature = "rustls"))]
#[tokio::test]
async fn tls_autostart_on_our_server() {
    if !have_perl() {
        return;
    }
    for &b in pki::BACKENDS {
        tls_autostart_on_our_server_on(b).await;
    }
}

#[cfg(any(feature = "tls", feature = "rustls"))]
async fn tls_autostart_on_our_server_on(b: TlsBackend) {
    for tls in [true, false] {
        let extra = if tls {
            json!({"tls": "connect"})
        } else {
            json!({})
        };
        let (mut peer, mut conn) = connect(Role::PerlConnects, perl_tls(false, extra)).await;
        peer.write("raw", &["qq{hello\\n}"]);
        let verdict = within(
            "detect",
            conn.tls_autostart(pki::server_on(b, &pki::pki().server)),
        )
        .await
        .unwrap();
        assert_eq!(verdict.is_tls(), tls);
        assert_eq!(conn.is_tls(), tls);
        if tls {
            assert_eq!(verdict.version(), Some((3, 1)));
            assert_eq!(peer.expect("starttls").await["ok"], 1);
        }
        let line = within("line", conn.read(LineCodec::new())).await.unwrap();
        assert_eq!(line.line(), b"hello");
    }
}

/// TLS-6 and docs/semantics.md §7: stoptls that both ends agree on, AE first. AE's
/// `stoptls` sends close_notify and stays in TLS until ours arrives; ours
/// answers, and reads TLS until AE's close_notify. Then both go on in
/// plaintext. (AE has to go first: see `stoptls_by_us_first`.)
#[cfg(any(feature = "tls", feature = "rustls"))]
#[tokio::test]
async fn stoptls_agreed_by_both_ends() {
    if !have_perl() {
        return;
    }
    for &b in pki::BACKENDS {
        stoptls_agreed_by_both_ends_on(b).await;
    }
}

#[cfg(any(feature = "tls", feature = "rustls"))]
async fn stoptls_agreed_by_both_ends_on(b: TlsBackend) {
    let options = perl_tls(true, json!({"tls": "accept"}));
    let (mut peer, mut conn) = connect(Role::PerlListens, options).await;
    within("handshake", conn.starttls(pki::client_on(b)))
        .await
        .unwrap();
    assert_eq!(peer.expect("starttls").await["ok"], 1);
    peer.read("line", &[]);
    send(&mut conn, LineCodec::new(), "STOPTLS").await;
    assert_eq!(peer.got().await[0], d_bytes(b"STOPTLS"));
    peer.command(json!(["stoptls"]));
    peer.sync().await;
    within("stoptls", conn.stoptls()).await.unwrap();
    assert!(!conn.is_tls());
    peer.expect("stoptls").await;

    peer.write("raw", &["qq{plain from perl\\n}"]);
    let got = within("line", conn.read(LineCodec::new())).await.unwrap();
    assert_eq!(got.line(), b"plain from perl");
    peer.read("line", &[]);
    send(&mut conn, LineCodec::new(), "plain from rust").await;
    assert_eq!(peer.got().await[0], d_bytes(b"plain from rust"));
}

/// TLS-6 and docs/semantics.md §7: we stop first. AE (with `on_stoptls`) takes our
/// close_notify, drops its TLS state without answering and goes on in
/// plaintext: our plaintext reaches it, but our read side keeps waiting for
/// AE's close_notify, so AE's plaintext is a broken TLS record to us: EPROTO,
/// fatal. Both ends must agree, with AE going first.
#[cfg(any(feature = "tls", feature = "rustls"))]
#[tokio::test]
async fn stoptls_by_us_first() {
    if !have_perl() {
        return;
    }
    for &b in pki::BACKENDS {
        stoptls_by_us_first_on(b).await;
    }
}

#[cfg(any(feature = "tls", feature = "rustls"))]
async fn stoptls_by_us_first_on(b: TlsBackend) {
    let options = perl_tls(true, json!({"tls": "accept"}));
    let (mut peer, mut conn) = connect(Role::PerlListens, options).await;
    within("handshake", conn.starttls(pki::client_on(b)))
        .await
        .unwrap();
    assert_eq!(peer.expect("starttls").await["ok"], 1);
    within("stoptls", conn.stoptls()).await.unwrap();
    peer.expect("stoptls").await;
    peer.read("line", &[]);
    send(&mut conn, LineCodec::new(), "plain from rust").await;
    assert_eq!(peer.got().await[0], d_bytes(b"plain from rust"));

    peer.write("raw", &["qq{plain from perl\\n}"]);
    let err = within("line", conn.read(LineCodec::new()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol);
    assert!(err.is_fatal() && conn.is_closed());
}

/// TLS-6: AE stops alone. Its close_notify is a clean end of the TLS
/// stream to us, so a line read then fails with EPIPE (fatal, RQ-6). AE
/// stays in TLS mode, and its next write fails there with EPROTO
/// ("protocol is shutdown").
#[cfg(any(feature = "tls", feature = "rustls"))]
#[tokio::test]
async fn stoptls_by_ae_alone() {
    if !have_perl() {
        return;
    }
    for &b in pki::BACKENDS {
        stoptls_by_ae_alone_on(b).await;
    }
}

#[cfg(any(feature = "tls", feature = "rustls"))]
async fn stoptls_by_ae_alone_on(b: TlsBackend) {
    let options = perl_tls(true, json!({"tls": "accept"}));
    let (mut peer, mut conn) = connect(Role::PerlListens, options).await;
    within("handshake", conn.starttls(pki::client_on(b)))
        .await
        .unwrap();
    assert_eq!(peer.expect("starttls").await["ok"], 1);
    peer.command(json!(["stoptls"]));
    let err = within("line", conn.read(LineCodec::new()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BrokenPipe);
    assert!(err.is_fatal() && conn.is_eof());
    peer.write("raw", &["qq{from perl\\n}"]);
    let err = peer.expect("error").await;
    assert_eq!(
        (err["fatal"].clone(), err["errno"].clone()),
        (json!(1), json!(71)),
        "EPROTO"
    );
    assert!(
        err["msg"]
            .as_str()
            .unwrap()
            .contains("protocol is shutdown"),
        "{err}"
    );
}

/// TLS-4 and docs/semantics.md §7: a handshake that fails verification. AE's client
/// (verifying against the test CA) refuses our certificate from another
/// CA, reports it through `on_starttls` with a false status, sends no
/// alert and leaves its handle open in plaintext: our handshake is left
/// waiting, and the plaintext AE writes next is a broken record to it:
/// EPROTO, fatal; we never go on unencrypted.
#[cfg(any(feature = "tls", feature = "rustls"))]
#[tokio::test]
async fn tls_handshake_refused_by_perl_verification() {
    if !have_perl() {
        return;
    }
    for &b in pki::BACKENDS {
        tls_handshake_refused_by_perl_verification_on(b).await;
    }
}

#[cfg(any(feature = "tls", feature = "rustls"))]
async fn tls_handshake_refused_by_perl_verification_on(b: TlsBackend) {
    let options = perl_tls(false, json!({"tls": "connect"}));
    let (mut peer, mut conn) = connect(Role::PerlConnects, options).await;
    let server = pki::server_on(b, &pki::pki().unknown_ca);
    let perl_side = async {
        let started = peer.expect("starttls").await;
        assert_eq!(started["ok"], 0);
        let msg = started["msg"].as_str().unwrap().to_owned();
        assert!(msg.contains("certificate verify failed"), "{msg}");
        peer.write("raw", &["qq{in the clear\\n}"]);
    };
    let (ours, ()) = tokio::join!(within("handshake", conn.starttls(server)), perl_side);
    let err = ours.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol);
    assert!(err.is_fatal() && conn.is_closed());
}
