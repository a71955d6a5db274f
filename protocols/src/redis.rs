//! A Redis client (RESP2, and RESP3 after `HELLO 3`) built from anyframe's
//! read types, the way AnyEvent::Redis reads replies:
//!
//! * every value starts with a **type line** (`+OK`, `$5`, `*3`, `%2`,
//!   ...): a [`LineCodec`] read, parsed into a header;
//! * a **bulk string** (`$`, and RESP3's `!` blob error and `=` verbatim
//!   string) is then one [`ChunkCodec`](anyframe::codecs::ChunkCodec) read of its length plus the `\r\n`,
//!   split off the read buffer without a copy (one shorter than 64 KiB is
//!   then copied out, so that a reply of many small strings does not keep
//!   a read buffer per string alive);
//! * an **aggregate** (`*` array, `%` map, `~` set, `>` push, `|`
//!   attribute) of `n` elements queues the type line of its first element
//!   at the front of the queue; each element's completion queues the next
//!   one, so nested replies need no recursion and no parser state outside
//!   the reads.
//!
//! [`Resp`] is the [`Protocol`]; [`Client`] is the pipelined tower
//! `Service<Cmd, Response = Value>`; [`Subscriber`] reads pub/sub messages
//! with a read that is always queued (AnyEvent's `on_read`).

use std::net::SocketAddr;

use anyframe::codecs::{Line, LineCodec};
use anyframe::{Error, ErrorKind, Handle, QueuedFramed, Requests, Result, Ticket};
use bytes::{BufMut, Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::Decoder;

use crate::pipeline::{
    CrlfChunk, Pipelined, Protocol, Reply, Slot, Step, own_small, protocol_error,
};

/// The longest bulk string accepted (Redis's own `proto-max-bulk-len`
/// default): a longer length is refused before any byte of it is buffered.
pub const MAX_BULK_LEN: usize = 512 * 1024 * 1024;
/// The largest reply a [`Resp`] client reads unless told otherwise
/// ([`Resp::max_reply_size`]): 1 GiB, counted as the bytes of the reply's
/// strings plus `size_of::<Value>()` for each value it holds.
pub const DEFAULT_MAX_REPLY_SIZE: usize = 1024 * 1024 * 1024;
/// The deepest nesting of aggregates accepted.
pub const MAX_DEPTH: usize = 64;
/// Elements preallocated for an aggregate, whatever length it announces.
const PREALLOCATE: usize = 1024;

/// A reply value, RESP2 and RESP3.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// RESP2's `$-1` / `*-1`, RESP3's `_`.
    Nil,
    /// `+OK`: a simple string.
    Simple(Bytes),
    /// `-ERR ...` (and RESP3's `!` blob error): the server refused the
    /// command. A reply like any other, not a connection error.
    Error(Bytes),
    /// `:42`.
    Integer(i64),
    /// `$5\r\nhello`: a bulk string.
    Bulk(Bytes),
    /// `*n`: an array.
    Array(Vec<Value>),
    /// RESP3 `%n`: a map, as key/value pairs in wire order.
    Map(Vec<(Value, Value)>),
    /// RESP3 `~n`: a set.
    Set(Vec<Value>),
    /// RESP3 `>n`: an out-of-band push message (pub/sub, tracking).
    Push(Vec<Value>),
    /// RESP3 `,1.5`.
    Double(f64),
    /// RESP3 `#t` / `#f`.
    Boolean(bool),
    /// RESP3 `(123...`: a big number, as its decimal digits.
    BigNumber(Bytes),
    /// RESP3 `=n\r\ntxt:...`: a string with a three-letter format.
    Verbatim {
        /// `txt`, `mkd`, ...
        format: Bytes,
        /// The text after `format:`.
        text: Bytes,
    },
}

impl Value {
    /// The bytes of a bulk, simple or verbatim string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bulk(b) | Value::Simple(b) | Value::Verbatim { text: b, .. } => Some(b),
            _ => None,
        }
    }

    /// The elements of an array, set or push message.
    pub fn as_slice(&self) -> Option<&[Value]> {
        match self {
            Value::Array(v) | Value::Set(v) | Value::Push(v) => Some(v),
            _ => None,
        }
    }
}

/// A command: its name and arguments, each sent as a bulk string.
///
/// ```
/// use anyframe_protocols::redis::Cmd;
/// let cmd = Cmd::new("SET").arg("k").arg(b"v\r\n");
/// assert_eq!(cmd.to_bytes(), &b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n"[..]);
/// ```
#[derive(Debug, Clone)]
pub struct Cmd {
    argc: usize,
    /// The longest argument's length.
    longest: usize,
    /// The arguments in wire form; the `*argc` header is written in front
    /// when the command is sent.
    body: BytesMut,
}

impl Cmd {
    /// A command named `name` with no arguments yet.
    pub fn new(name: impl AsRef<[u8]>) -> Cmd {
        Cmd {
            argc: 0,
            longest: 0,
            body: BytesMut::new(),
        }
        .arg(name)
    }

    /// Appends one argument.
    #[must_use]
    pub fn arg(mut self, arg: impl AsRef<[u8]>) -> Cmd {
        let arg = arg.as_ref();
        self.body.reserve(arg.len() + 16);
        self.body.put_u8(b'$');
        put_decimal(&mut self.body, arg.len() as u64);
        self.body.put_slice(b"\r\n");
        self.body.put_slice(arg);
        self.body.put_slice(b"\r\n");
        self.argc += 1;
        self.longest = self.longest.max(arg.len());
        self
    }

    /// The command's wire form.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.body.len() + 16);
        self.write_to(&mut out);
        out.freeze()
    }

    /// The arguments, the name first.
    fn args(&self) -> impl Iterator<Item = &[u8]> {
        let mut rest = &self.body[..];
        std::iter::from_fn(move || {
            // `$<len>\r\n<arg>\r\n`, as `arg` wrote it.
            let eol = rest.iter().position(|&b| b == b'\r')?;
            let len = parse_i64(&rest[1..eol]).and_then(|n| usize::try_from(n).ok())?;
            let arg = rest.get(eol + 2..eol + 2 + len)?;
            rest = rest.get(eol + 4 + len..)?;
            Some(arg)
        })
    }

    /// Why the request/reply client cannot send this command, if so: the
    /// pub/sub commands, `MONITOR`, `SYNC` and `PSYNC` turn the connection
    /// into a stream that answers no command, and `CLIENT REPLY` turns
    /// replies off; any of them would leave every later reply answering
    /// the wrong command.
    fn leaves_request_reply(&self) -> Option<&'static str> {
        let mut args = self.args();
        let name = args.next()?;
        const STREAMS: [&str; 7] = [
            "SUBSCRIBE",
            "PSUBSCRIBE",
            "SSUBSCRIBE",
            "UNSUBSCRIBE",
            "PUNSUBSCRIBE",
            "SUNSUBSCRIBE",
            "MONITOR",
        ];
        if STREAMS
            .iter()
            .any(|s| name.eq_ignore_ascii_case(s.as_bytes()))
        {
            return Some(
                "pub/sub commands and MONITOR go through redis::subscriber, not the request/reply client",
            );
        }
        // A replica's handshake: a snapshot without a type line, then the
        // replication stream.
        if [&b"SYNC"[..], b"PSYNC"]
            .iter()
            .any(|s| name.eq_ignore_ascii_case(s))
        {
            return Some("SYNC and PSYNC start a replication stream, not one reply");
        }
        if name.eq_ignore_ascii_case(b"CLIENT")
            && args
                .next()
                .is_some_and(|a| a.eq_ignore_ascii_case(b"REPLY"))
        {
            return Some("CLIENT REPLY would leave commands without their replies");
        }
        None
    }

    fn write_to(&self, dst: &mut BytesMut) {
        dst.reserve(self.body.len() + 16);
        dst.put_u8(b'*');
        put_decimal(dst, self.argc as u64);
        dst.put_slice(b"\r\n");
        dst.put_slice(&self.body);
    }
}

/// Writes `n` in decimal without going through `fmt`.
pub(crate) fn put_decimal(dst: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    dst.put_slice(&digits[i..]);
}

/// Parses a decimal integer (optionally signed) as Redis writes them: any
/// `i64`, `i64::MIN` included.
pub(crate) fn parse_i64(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    // The magnitude, in `u64`: `i64::MIN`'s does not fit an `i64`.
    let mut n: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if neg {
        0i64.checked_sub_unsigned(n)
    } else {
        i64::try_from(n).ok()
    }
}

/// What a type line announces.
#[derive(Debug)]
enum Header {
    Value(Value),
    Blob(BlobKind, usize),
    Aggregate(AggKind, usize),
}

#[derive(Debug, Clone, Copy)]
enum BlobKind {
    Bulk,
    Error,
    Verbatim,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AggKind {
    Array,
    Map,
    Set,
    Push,
    Attribute,
}

/// The type-line read: a `\r\n` line, parsed. A line that is not RESP is a
/// fatal `EBADMSG` (the stream is out of step).
#[derive(Debug, Clone, Default)]
struct TypeLine {
    line: LineCodec,
}

impl TypeLine {
    fn new() -> TypeLine {
        // `\r\n` as RESP says; the codec's default end of line (`\r?\n`)
        // finds it with one `memchr` and the parse below insists on the
        // `\r`.
        TypeLine {
            line: LineCodec::new(),
        }
    }
}

impl Decoder for TypeLine {
    type Item = Header;
    type Error = Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Header>> {
        match self.line.decode(buf)? {
            Some(line) => parse_header(line).map(Some),
            None => Ok(None),
        }
    }
}

fn parse_header(line: Line) -> Result<Header> {
    if line.eol() != b"\r\n" {
        return Err(protocol_error("RESP line not ended by \\r\\n"));
    }
    let raw = line.into_line();
    let Some(&kind) = raw.first() else {
        return Err(protocol_error("empty RESP type line"));
    };
    // Each line may have come in a read of its own: a value holds its own
    // bytes, not the read buffer.
    let rest = own_small(raw.slice(1..));
    let len = |rest: &[u8]| -> Result<Option<usize>> {
        match parse_i64(rest) {
            Some(-1) => Ok(None),
            Some(n) if n >= 0 => Ok(Some(n as usize)),
            _ => Err(protocol_error("bad RESP length")),
        }
    };
    let blob = |k: BlobKind| -> Result<Header> {
        match len(&rest)? {
            None => Ok(Header::Value(Value::Nil)),
            Some(n) if n > MAX_BULK_LEN => Err(Error::custom(
                ErrorKind::NoSpace,
                true,
                "RESP bulk string longer than MAX_BULK_LEN",
            )),
            Some(n) => Ok(Header::Blob(k, n)),
        }
    };
    let agg = |k: AggKind| -> Result<Header> {
        Ok(match len(&rest)? {
            // RESP2's null array (and, leniently, a null map or set). A
            // null attribute or push is no value: taken as a `Nil` reply
            // it would hand every later reply to the request after its own.
            None if matches!(k, AggKind::Attribute | AggKind::Push) => {
                return Err(protocol_error("RESP3 attribute or push of length -1"));
            }
            None => Header::Value(Value::Nil),
            Some(n) => Header::Aggregate(k, n),
        })
    };
    match kind {
        b'+' => Ok(Header::Value(Value::Simple(rest))),
        b'-' => Ok(Header::Value(Value::Error(rest))),
        b':' => parse_i64(&rest)
            .map(|n| Header::Value(Value::Integer(n)))
            .ok_or_else(|| protocol_error("bad RESP integer")),
        b'$' => blob(BlobKind::Bulk),
        b'!' => blob(BlobKind::Error),
        b'=' => blob(BlobKind::Verbatim),
        b'*' => agg(AggKind::Array),
        b'%' => agg(AggKind::Map),
        b'~' => agg(AggKind::Set),
        b'>' => agg(AggKind::Push),
        b'|' => agg(AggKind::Attribute),
        b'_' if rest.is_empty() => Ok(Header::Value(Value::Nil)),
        b'#' => match &rest[..] {
            b"t" => Ok(Header::Value(Value::Boolean(true))),
            b"f" => Ok(Header::Value(Value::Boolean(false))),
            _ => Err(protocol_error("bad RESP boolean")),
        },
        b',' => std::str::from_utf8(&rest)
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .map(|d| Header::Value(Value::Double(d)))
            .ok_or_else(|| protocol_error("bad RESP double")),
        b'(' => Ok(Header::Value(Value::BigNumber(rest))),
        _ => Err(protocol_error("unknown RESP type byte")),
    }
}

/// An aggregate being read: its elements so far.
#[derive(Debug)]
struct Partial {
    kind: AggKind,
    want: usize,
    items: Vec<Value>,
    /// The reply's size before this aggregate began: a skipped attribute
    /// gives back what it held.
    held_before: usize,
}

impl Partial {
    fn finish(self) -> Value {
        match self.kind {
            AggKind::Array => Value::Array(self.items),
            AggKind::Set => Value::Set(self.items),
            AggKind::Push => Value::Push(self.items),
            AggKind::Map | AggKind::Attribute => {
                let mut pairs = Vec::with_capacity(self.items.len() / 2);
                let mut it = self.items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k, v));
                }
                Value::Map(pairs)
            }
        }
    }
}

/// Where a top-level RESP3 push message (`>`) goes.
#[derive(Debug, Clone)]
enum Pushes {
    /// It is the value read: a subscriber's message.
    Value,
    /// Out of band, to this channel; the reply is read after it.
    Send(mpsc::UnboundedSender<Value>),
    /// Out of band, dropped (nobody asked for them); the reply is read
    /// after it.
    Drop,
}

/// The state of one reply being read; it moves from each read's completion
/// into the next read's.
#[derive(Debug)]
struct ReplyRead {
    stack: Vec<Partial>,
    /// Where top-level push messages go (RESP3).
    pushes: Pushes,
    /// The reply's size so far, as [`Resp::max_reply_size`] counts it.
    held: usize,
    /// [`Resp::max_reply_size`].
    max: usize,
    /// Released when the reply is complete.
    _slot: Slot,
}

impl ReplyRead {
    /// Reads the type line of the next value, at the front of the queue,
    /// as part of this reply (a response read: read whoever still listens).
    fn next(self, q: &mut Requests<'_>) -> Ticket<Step<Value>> {
        q.unshift_response_with(TypeLine::new(), move |h, q| self.on_header(h, q))
    }

    /// Counts `bytes` more against the reply's limit, before they are
    /// read.
    fn hold(&mut self, bytes: usize) -> Result<()> {
        self.held = self.held.saturating_add(bytes);
        if self.held > self.max {
            return Err(Error::custom(
                ErrorKind::NoSpace,
                true,
                "RESP reply larger than max_reply_size",
            ));
        }
        Ok(())
    }

    fn on_header(mut self, header: Header, q: &mut Requests<'_>) -> Result<Step<Value>> {
        let strings = match &header {
            Header::Value(Value::Simple(b) | Value::Error(b) | Value::BigNumber(b)) => b.len(),
            Header::Blob(_, len) => *len,
            _ => 0,
        };
        let held_before = self.held;
        self.hold(size_of::<Value>().saturating_add(strings))?;
        match header {
            Header::Value(v) => self.on_value(v, q),
            Header::Blob(kind, len) => Ok(Step::More(
                q.unshift_response_with(CrlfChunk::new(len), move |data, q| {
                    self.on_value(blob_value(kind, data)?, q)
                }),
            )),
            // An empty attribute annotates the value after it with
            // nothing: that value takes its place.
            Header::Aggregate(AggKind::Attribute, 0) => {
                self.held = held_before;
                Ok(Step::More(self.next(q)))
            }
            Header::Aggregate(kind, 0) => self.on_value(
                Partial {
                    kind,
                    want: 0,
                    items: Vec::new(),
                    held_before,
                }
                .finish(),
                q,
            ),
            Header::Aggregate(kind, n) => {
                if self.stack.len() >= MAX_DEPTH {
                    return Err(protocol_error("RESP nesting deeper than MAX_DEPTH"));
                }
                let want = match kind {
                    AggKind::Map | AggKind::Attribute => n.checked_mul(2),
                    _ => Some(n),
                }
                .ok_or_else(|| protocol_error("RESP aggregate too long"))?;
                self.stack.push(Partial {
                    kind,
                    want,
                    items: Vec::with_capacity(want.min(PREALLOCATE)),
                    held_before,
                });
                Ok(Step::More(self.next(q)))
            }
        }
    }

    /// A complete value: the reply, or one more element of the innermost
    /// aggregate.
    fn on_value(mut self, mut value: Value, q: &mut Requests<'_>) -> Result<Step<Value>> {
        loop {
            let Some(top) = self.stack.last_mut() else {
                // A push is out of band, never a command's reply (which
                // would shift every later reply by one): hand it over or
                // drop it, and read the actual reply.
                if matches!(value, Value::Push(_)) {
                    // The push leaves this reply, and its size with it.
                    self.held = 0;
                }
                match (&value, &self.pushes) {
                    (Value::Push(_), Pushes::Send(pushes)) => {
                        if pushes.send(value).is_err() {
                            tracing::debug!("push message dropped: nobody listens");
                        }
                    }
                    (Value::Push(_), Pushes::Drop) => {
                        tracing::debug!(push = ?value, "push message dropped: no push channel");
                    }
                    _ => return Ok(Step::Done(value)),
                }
                return Ok(Step::More(self.next(q)));
            };
            top.items.push(value);
            if top.items.len() < top.want {
                return Ok(Step::More(self.next(q)));
            }
            let done = self.stack.pop().expect("top exists");
            if done.kind == AggKind::Attribute {
                // Attributes describe the value that follows; it takes
                // the attribute's place, and the reply no longer holds it.
                self.held = done.held_before;
                tracing::debug!(attribute = ?done.items, "RESP3 attribute skipped");
                return Ok(Step::More(self.next(q)));
            }
            value = done.finish();
        }
    }
}

fn blob_value(kind: BlobKind, data: Bytes) -> Result<Value> {
    let data = own_small(data);
    Ok(match kind {
        BlobKind::Bulk => Value::Bulk(data),
        BlobKind::Error => Value::Error(data),
        BlobKind::Verbatim => {
            if data.len() < 4 || data[3] != b':' {
                return Err(protocol_error("RESP3 verbatim string without a format"));
            }
            Value::Verbatim {
                format: data.slice(..3),
                text: data.slice(4..),
            }
        }
    })
}

/// Queues, at the back of `handle`'s queue, the reads of one whole reply.
/// RESP3 push messages that come before it are dropped: they are no
/// command's reply. The reply is held to [`DEFAULT_MAX_REPLY_SIZE`];
/// follow the ticket with [`Reply`].
pub fn read_value(handle: &Handle) -> Ticket<Step<Value>> {
    read_value_routing(handle, Pushes::Drop, DEFAULT_MAX_REPLY_SIZE, Slot::none())
}

fn read_value_routing(
    handle: &Handle,
    pushes: Pushes,
    max: usize,
    slot: Slot,
) -> Ticket<Step<Value>> {
    let state = ReplyRead {
        stack: Vec::new(),
        pushes,
        held: 0,
        max,
        _slot: slot,
    };
    handle.push_response_with(TypeLine::new(), move |h, q| state.on_header(h, q))
}

/// Queues the reads of one pub/sub message. Its first read is a plain
/// one: dropped before the message begins (the subscriber gone), it is
/// removed, and nothing is lost. Once the type line is read, the rest of
/// the message is read whoever still listens.
fn read_message(handle: &Handle) -> Ticket<Step<Value>> {
    let state = ReplyRead {
        stack: Vec::new(),
        pushes: Pushes::Value,
        held: 0,
        max: DEFAULT_MAX_REPLY_SIZE,
        _slot: Slot::none(),
    };
    handle.push_read_with(TypeLine::new(), move |h, q| state.on_header(h, q))
}

/// The RESP [`Protocol`]: commands out, one value back per command.
///
/// A command that would break "one value back per command" is refused
/// before anything is written (a non-fatal `EINVAL`): the pub/sub commands
/// and `MONITOR` (use [`subscriber`]), `SYNC`, `PSYNC` and `CLIENT REPLY`;
/// so is one with an argument longer than [`MAX_BULK_LEN`], which Redis
/// refuses by closing the connection.
#[derive(Debug)]
pub struct Resp {
    pushes: Option<mpsc::UnboundedSender<Value>>,
    max_reply: usize,
}

impl Default for Resp {
    fn default() -> Resp {
        Resp {
            pushes: None,
            max_reply: DEFAULT_MAX_REPLY_SIZE,
        }
    }
}

impl Resp {
    /// RESP whose top-level push messages (RESP3, e.g. client-side caching
    /// invalidations) are dropped: a push is never taken for a reply.
    pub fn new() -> Resp {
        Resp::default()
    }

    /// RESP whose top-level push messages (RESP3, e.g. client-side caching
    /// invalidations) go to `pushes` instead of being taken for the reply.
    /// They are sent as they arrive, and the channel is unbounded (a
    /// reply's reads cannot wait for room in it): receive from it all the
    /// time, or the pushes pile up in it.
    pub fn with_pushes(pushes: mpsc::UnboundedSender<Value>) -> Resp {
        Resp {
            pushes: Some(pushes),
            ..Resp::default()
        }
    }

    /// The largest reply read ([`DEFAULT_MAX_REPLY_SIZE`] unless set),
    /// counted as the bytes of its strings plus `size_of::<Value>()` for
    /// each value it holds (an element, a map key or value, a string). A
    /// reply that grows past it, and a bulk string that would, fail with a
    /// fatal `ENOSPC`: the connection closes, as a server that streams an
    /// aggregate without end would otherwise hold the client's memory
    /// without bound.
    ///
    /// # Examples
    ///
    /// ```
    /// use anyframe_protocols::redis::Resp;
    ///
    /// // A client that expects no reply over 16 MiB.
    /// let resp = Resp::new().max_reply_size(16 << 20);
    /// # drop(resp);
    /// ```
    #[must_use]
    pub fn max_reply_size(mut self, max: usize) -> Resp {
        self.max_reply = max;
        self
    }
}

impl Protocol for Resp {
    type Request = Cmd;
    type Reply = Value;

    fn encode(&self, req: &Cmd, dst: &mut BytesMut) -> Result<()> {
        if let Some(why) = req.leaves_request_reply() {
            return Err(Error::custom(ErrorKind::InvalidInput, false, why));
        }
        if req.longest > MAX_BULK_LEN {
            // Redis would refuse it and close the connection.
            return Err(Error::custom(
                ErrorKind::InvalidInput,
                false,
                "a command argument longer than MAX_BULK_LEN",
            ));
        }
        req.write_to(dst);
        Ok(())
    }

    fn read_reply(&self, _req: &Cmd, handle: &Handle, slot: Slot) -> Ticket<Step<Value>> {
        let pushes = match &self.pushes {
            Some(tx) => Pushes::Send(tx.clone()),
            None => Pushes::Drop,
        };
        read_value_routing(handle, pushes, self.max_reply, slot)
    }
}

/// The pipelined Redis client: a `tower::Service<Cmd, Response = Value>`.
pub type Client = Pipelined<Resp>;

/// Connects to a Redis server and spawns the connection's driver.
///
/// # Errors
///
/// The connect error.
///
/// # Examples
///
/// ```
/// use anyframe_protocols::redis::{self, Cmd, Value};
/// use anyframe_protocols::servers::{Kind, Server};
/// use tower::{Service, ServiceExt};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> anyframe::Result<()> {
/// let Some(server) = Server::start(Kind::Redis) else { return Ok(()) };
/// let mut client = redis::connect(server.addr(), 128).await?;
/// client.ready().await?.call(Cmd::new("SET").arg("k").arg("v")).await?;
/// let v = client.send(Cmd::new("GET").arg("k")).await?;
/// assert_eq!(v, Value::Bulk("v".into()));
/// # Ok(()) }
/// ```
pub async fn connect(addr: SocketAddr, max_in_flight: usize) -> Result<Client> {
    let handle = crate::connect_tcp(addr, MAX_BULK_LEN).await?;
    Ok(Pipelined::new(handle, Resp::new(), max_in_flight))
}

/// Connects like [`connect`], with RESP3 push messages that arrive ahead
/// of a reply (client-side caching invalidations, say) sent to `pushes`
/// instead of being taken for the reply (see [`Resp::with_pushes`]: drain
/// the channel).
///
/// # Errors
///
/// The connect error.
pub async fn connect_with_pushes(
    addr: SocketAddr,
    max_in_flight: usize,
    pushes: mpsc::UnboundedSender<Value>,
) -> Result<Client> {
    let handle = crate::connect_tcp(addr, MAX_BULK_LEN).await?;
    Ok(Pipelined::new(
        handle,
        Resp::with_pushes(pushes),
        max_in_flight,
    ))
}

/// A pub/sub connection: `SUBSCRIBE` and friends are written, and every
/// value the server sends (confirmations and messages, RESP2 arrays or
/// RESP3 pushes) comes out of [`next`](Subscriber::next) in order.
///
/// A task keeps one reply read queued at all times, as AnyEvent's
/// `on_read` callback is always armed; the channel to the caller is
/// bounded, so a slow caller stops the reads and TCP pushes back.
///
/// Each time a timer set on the connection expires (an idle, read or
/// write timeout: the channel was quiet), `next` returns a non-fatal
/// `ETIMEDOUT`, and the subscription goes on; a message the server had
/// begun is still read whole and comes after it. For that the subscriber
/// sets the connection's `on_timeout` hook (a hook set before is
/// replaced), so no read is ever told a timeout: a message stalled for
/// several periods is not given up. A timeout that expires while 64
/// values wait unread is dropped. A fatal error is the last item.
#[derive(Debug)]
pub struct Subscriber {
    handle: Handle,
    messages: mpsc::Receiver<Result<Value>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    /// Takes over a connection (nothing else may read from it, and its
    /// `on_timeout` hook is the subscriber's).
    pub fn new(handle: Handle) -> Subscriber {
        let (tx, messages) = mpsc::channel(64);
        // Weak: the hook outlives the reader (a closed connection keeps
        // its hook), and the channel must end with the reader.
        let said = tx.downgrade();
        handle.on_timeout(move |which, _| {
            let Some(said) = said.upgrade() else { return };
            if said.try_send(Err(Error::timer_expired(which))).is_err() {
                tracing::debug!(timeout = ?which, "subscriber: timeout dropped, values wait unread");
            }
        });
        let reader_handle = handle.clone();
        let reader = tokio::spawn(async move {
            loop {
                let value = Reply::new(read_message(&reader_handle)).await;
                let fatal = value.as_ref().is_err_and(Error::is_fatal);
                if tx.send(value).await.is_err() || fatal {
                    break;
                }
            }
        });
        Subscriber {
            handle,
            messages,
            reader,
        }
    }

    /// Writes a command (`SUBSCRIBE ch`, `UNSUBSCRIBE`, `PING`); its
    /// confirmation arrives through [`next`](Subscriber::next).
    ///
    /// # Errors
    ///
    /// The connection's error if it is closed.
    pub fn command(&self, cmd: &Cmd) -> Result<()> {
        self.handle.push_bytes(cmd.to_bytes())
    }

    /// The next value from the server, or a non-fatal error (a timer of
    /// the connection expired); `None` after the connection failed and
    /// its (fatal) error was returned.
    pub async fn next(&mut self) -> Option<Result<Value>> {
        self.messages.recv().await
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Connects a [`Subscriber`].
///
/// # Errors
///
/// The connect error.
pub async fn subscriber(addr: SocketAddr) -> Result<Subscriber> {
    Ok(Subscriber::new(
        crate::connect_tcp(addr, MAX_BULK_LEN).await?,
    ))
}

/// Runs `cmd` on a connection driven inline, without the service (used to
/// check a server before a benchmark).
///
/// # Errors
///
/// Any connection error.
pub async fn once(addr: SocketAddr, cmd: &Cmd) -> Result<Value> {
    let stream = TcpStream::connect(addr).await.map_err(Error::from)?;
    let (handle, _driver) = QueuedFramed::new(stream).spawn();
    handle.push_bytes(cmd.to_bytes())?;
    Reply::new(read_value(&handle)).await
}
