//! An HTTP/1.1 client built from anyframe's read types: AnyEvent::Handle's
//! documentation example 1 (an HTTP GET), done properly.
//!
//! * the **status line** and each **header line**: one [`LineCodec`] read
//!   each, until the empty line; a `1xx` informational response is read
//!   the same way and skipped (its status is kept in
//!   [`Response::informational`]);
//! * a `Content-Length` body: **one** [`ChunkCodec`] read of that length,
//!   split off the read buffer without a copy (copied out when shorter
//!   than 64 KiB);
//! * a `Transfer-Encoding: chunked` body: a hex **size line** (chunk
//!   extensions after `;` ignored), then the chunk and its `\r\n` as one
//!   [`CrlfChunk`] read, and so on until size
//!   `0`, then **trailer lines** until the empty line;
//! * no length and not chunked: everything until the server closes.
//!
//! A response that ends the connection (`Connection: close`, an HTTP/1.0
//! response without `keep-alive` or with a `Transfer-Encoding`, a `101
//! Switching Protocols`, whose protocol this client does not speak, a body
//! that runs until the server closes)
//! closes it once read: nothing after it is taken for a response, and requests
//! pipelined behind it fail with `Closed`.
//!
//! Each step's completion queues the next at the front of the queue, so
//! pipelined requests on a keep-alive connection each read exactly their
//! own response. [`Http`] is the [`Protocol`]; [`Client`] is the
//! pipelined tower `Service<Request, Response = Response>`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use anyframe::codecs::{ChunkCodec, LineCodec};
use anyframe::{Error, ErrorKind, Handle, Requests, Result, Ticket};
use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::codec::Decoder;

use crate::pipeline::{
    CrlfChunk, OWN_BELOW, Pipelined, Protocol, Slot, Step, own_small, protocol_error,
};
use crate::redis::put_decimal;

/// The longest status, header or chunk-size line accepted.
pub const MAX_LINE: usize = 16 * 1024;
/// The most header (or trailer) lines accepted per response.
pub const MAX_HEADERS: usize = 128;
/// The largest body accepted by default ([`Http::max_body`] sets another);
/// a longer `Content-Length` or chunk is refused before any of it is
/// buffered. A request body longer than this is refused before anything
/// is written (a non-fatal `EINVAL`).
pub const MAX_BODY: usize = 1024 * 1024 * 1024;
/// The most `1xx` responses skipped before the final one.
const MAX_INFORMATIONAL: usize = 16;

/// A request.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `HEAD`, `POST`, ...
    pub method: Bytes,
    /// The request target, e.g. `/index.html`.
    pub target: Bytes,
    /// Extra header fields. A `Host` here replaces the client's (two are
    /// refused); `Content-Length` and `Transfer-Encoding` are the client's
    /// own: a request that names one is refused (`EINVAL`). A request with
    /// `Connection: close` is the connection's last: its response is read,
    /// then the connection closes, and a request after it is refused
    /// (`Closed`).
    pub headers: Vec<(Bytes, Bytes)>,
    /// The body; sent with its `Content-Length` (also `0` for `POST`, `PUT`
    /// and `PATCH`).
    pub body: Bytes,
}

impl Request {
    /// `GET target`.
    pub fn get(target: impl Into<Bytes>) -> Request {
        Request::new("GET", target)
    }

    /// A request with no headers and no body.
    pub fn new(method: impl Into<Bytes>, target: impl Into<Bytes>) -> Request {
        Request {
            method: method.into(),
            target: target.into(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// Adds a header field.
    #[must_use]
    pub fn header(mut self, name: impl Into<Bytes>, value: impl Into<Bytes>) -> Request {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    #[must_use]
    pub fn body(mut self, body: impl Into<Bytes>) -> Request {
        self.body = body.into();
        self
    }
}

/// A response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The reason phrase.
    pub reason: Bytes,
    /// The header fields in wire order (names as sent).
    pub headers: Vec<(Bytes, Bytes)>,
    /// The body: one piece for a `Content-Length` body, taken from the read
    /// buffer without a copy (copied out when shorter than 64 KiB, so a
    /// small body does not keep a read buffer alive). A chunked body's chunks of 64 KiB or more are
    /// kept the same way, one piece each; the smaller chunks between them
    /// are copied into one piece, so the body holds its own bytes rather
    /// than the buffers (and chunk extensions) they came in: at most about
    /// three times its size.
    pub body: Vec<Bytes>,
    /// Trailer fields of a chunked body.
    pub trailers: Vec<(Bytes, Bytes)>,
    /// Status codes of the `1xx` responses that came first.
    pub informational: Vec<u16>,
}

impl Response {
    /// The first header field named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        find(&self.headers, name)
    }

    /// The first trailer field named `name` (case-insensitive).
    pub fn trailer(&self, name: &str) -> Option<&[u8]> {
        find(&self.trailers, name)
    }

    /// The whole body in one piece (copies only a chunked body of several
    /// chunks).
    pub fn body_bytes(&self) -> Bytes {
        match self.body.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => many.concat().into(),
        }
    }

    /// The body's length.
    pub fn body_len(&self) -> usize {
        self.body.iter().map(Bytes::len).sum()
    }
}

fn find<'a>(fields: &'a [(Bytes, Bytes)], name: &str) -> Option<&'a [u8]> {
    fields
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, v)| &v[..])
}

fn line_codec() -> LineCodec {
    LineCodec::builder()
        .max_length(MAX_LINE)
        .build()
        .expect("a valid line codec")
}

/// A line read whose frame is the line without its end (`\r\n`, or a bare
/// `\n` as RFC 9112 lets a recipient accept).
#[derive(Debug)]
struct HttpLine(LineCodec);

impl HttpLine {
    fn new() -> HttpLine {
        HttpLine(line_codec())
    }
}

impl Decoder for HttpLine {
    type Item = Bytes;
    type Error = Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>> {
        Ok(self.0.decode(buf)?.map(|l| l.into_line()))
    }
}

/// Everything until the server closes (a body with no length), up to the
/// body limit.
#[derive(Debug)]
struct UntilClose(usize);

impl Decoder for UntilClose {
    type Item = Bytes;
    type Error = Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>> {
        if buf.len() > self.0 {
            return Err(too_long());
        }
        Ok(None)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>> {
        Ok(Some(buf.split().freeze()))
    }
}

/// One response being read.
#[derive(Debug)]
struct ResponseRead {
    /// The largest body accepted.
    max_body: usize,
    head: bool,
    /// The response says `HTTP/1.0`.
    http10: bool,
    /// The request said `Connection: close`.
    request_closes: bool,
    /// The body ran until the server closed.
    read_to_close: bool,
    resp: Response,
    /// Chunks smaller than [`OWN_BELOW`] since the last piece of the body,
    /// copied here so that a body of many small chunks holds its own
    /// bytes, not every read buffer they came in (chunk extensions and
    /// all).
    gathered: BytesMut,
    _slot: Slot,
}

type Next = Result<Step<Response>>;

fn too_long() -> Error {
    Error::custom(
        ErrorKind::NoSpace,
        true,
        "HTTP body longer than the client's limit (MAX_BODY, or Http::max_body)",
    )
}

impl ResponseRead {
    fn status_line(self, q: &mut Requests<'_>) -> Ticket<Step<Response>> {
        q.unshift_read_with(HttpLine::new(), move |l, q| self.on_status(l, q))
    }

    fn on_status(mut self, line: Bytes, q: &mut Requests<'_>) -> Next {
        // HTTP/1.1 200 OK
        let bad = || protocol_error("malformed HTTP status line");
        if line.len() < 12 || !line.starts_with(b"HTTP/1.") || line[8] != b' ' {
            return Err(bad());
        }
        let code = &line[9..12];
        if !code.iter().all(u8::is_ascii_digit) || line.get(12).is_some_and(|&b| b != b' ') {
            return Err(bad());
        }
        self.resp.status = code.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
        self.http10 = line[7] == b'0';
        self.resp.reason = own_small(line.slice(line.len().min(13)..));
        self.resp.headers.clear();
        Ok(Step::More(self.header_line(q, false)))
    }

    fn header_line(self, q: &mut Requests<'_>, trailer: bool) -> Ticket<Step<Response>> {
        q.unshift_read_with(HttpLine::new(), move |l, q| self.on_field(l, q, trailer))
    }

    fn on_field(mut self, line: Bytes, q: &mut Requests<'_>, trailer: bool) -> Next {
        if line.is_empty() {
            return if trailer {
                self.done(q)
            } else {
                self.on_head_done(q)
            };
        }
        if line[0] == b' ' || line[0] == b'\t' {
            return Err(protocol_error("obsolete HTTP header line folding"));
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| protocol_error("HTTP header line without a colon"))?;
        // Each line may have come in a read of its own: the fields hold
        // their own bytes, not the read buffers.
        let name = own_small(line.slice(..colon));
        if name.is_empty() || name.iter().any(|&b| b <= b' ') {
            return Err(protocol_error("bad HTTP header name"));
        }
        let value = line.slice(colon + 1..);
        let value = own_small(value.slice_ref(value.trim_ascii()));
        // RFC 9110 §5.5: a recipient rejects these or replaces them.
        if value.iter().any(|&b| b == b'\r' || b == 0) {
            return Err(protocol_error("CR or NUL in an HTTP field value"));
        }
        let fields = if trailer {
            &mut self.resp.trailers
        } else {
            &mut self.resp.headers
        };
        if fields.len() >= MAX_HEADERS {
            return Err(Error::custom(
                ErrorKind::NoSpace,
                true,
                "over MAX_HEADERS header lines",
            ));
        }
        fields.push((name, value));
        Ok(Step::More(self.header_line(q, trailer)))
    }

    fn on_head_done(mut self, q: &mut Requests<'_>) -> Next {
        let status = self.resp.status;
        if (100..200).contains(&status) && status != 101 {
            if self.resp.informational.len() >= MAX_INFORMATIONAL {
                return Err(protocol_error("too many 1xx responses"));
            }
            self.resp.informational.push(status);
            return Ok(Step::More(self.status_line(q)));
        }
        if self.head || status == 101 || status == 204 || status == 304 {
            return self.done(q);
        }
        if let Some(last) = self.final_coding() {
            if !last.eq_ignore_ascii_case(b"chunked") {
                return self.until_close(q);
            }
            return Ok(Step::More(self.chunk_size(q)));
        }
        match self.content_length()? {
            Some(0) => self.done(q),
            Some(n) => Ok(Step::More(q.unshift_read_with(
                ChunkCodec::new(n),
                move |body, q| {
                    self.resp.body.push(own_small(body));
                    self.done(q)
                },
            ))),
            None => self.until_close(q),
        }
    }

    /// The response is complete. If it ends the connection (RFC 9112
    /// §9.3, §9.6, §6.1), nothing after it is read as a response: the
    /// connection closes, and the requests pipelined behind it fail.
    fn done(mut self, q: &mut Requests<'_>) -> Next {
        self.end_gathered();
        if self.ends_connection() {
            tracing::debug!(
                status = self.resp.status,
                "HTTP response ends the connection"
            );
            q.destroy();
        }
        Ok(Step::Done(self.resp))
    }

    /// The small chunks gathered so far become one piece of the body.
    fn end_gathered(&mut self) {
        if !self.gathered.is_empty() {
            let piece = self.gathered.split().freeze();
            self.resp.body.push(piece);
        }
    }

    /// `Connection: close`; an HTTP/1.0 response without `keep-alive`, or
    /// with a `Transfer-Encoding` (its framing is not to be trusted); a
    /// `101` (another protocol follows its empty line); a body that ran
    /// until the server closed (nothing can follow it).
    fn ends_connection(&self) -> bool {
        let has = |option: &[u8]| has_option(&self.resp.headers, option);
        let transfer_coded = self.resp.header("transfer-encoding").is_some();
        self.read_to_close
            || self.request_closes
            || has(b"close")
            || self.resp.status == 101
            || (self.http10 && (transfer_coded || !has(b"keep-alive")))
    }

    /// The last transfer coding, if there is a `Transfer-Encoding`: its
    /// field lines are one list (RFC 9110 §5.3), and the body is chunked
    /// only if chunked is the final coding (RFC 9112 §6.3).
    fn final_coding(&self) -> Option<&[u8]> {
        let mut last = None;
        for (name, value) in &self.resp.headers {
            if !name.eq_ignore_ascii_case(b"transfer-encoding") {
                continue;
            }
            // Empty list elements do not count (RFC 9110 §5.6.1).
            let coding = value
                .rsplit(|&b| b == b',')
                .map(<[u8]>::trim_ascii)
                .find(|c| !c.is_empty());
            last = coding.or(last).or(Some(&[][..]));
        }
        last
    }

    /// The `Content-Length`, if any; several must agree (RFC 9112 §6.3).
    fn content_length(&self) -> Result<Option<usize>> {
        let mut found = None;
        for (name, value) in &self.resp.headers {
            if !name.eq_ignore_ascii_case(b"content-length") {
                continue;
            }
            for part in value.split(|&b| b == b',') {
                let part = part.trim_ascii();
                if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                    return Err(protocol_error("bad Content-Length"));
                }
                let n: u64 = part.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0'));
                let n = usize::try_from(n)
                    .ok()
                    .filter(|&n| n <= self.max_body)
                    .ok_or_else(too_long)?;
                if found.is_some_and(|f| f != n) {
                    return Err(protocol_error("conflicting Content-Length values"));
                }
                found = Some(n);
            }
        }
        Ok(found)
    }

    fn until_close(mut self, q: &mut Requests<'_>) -> Next {
        Ok(Step::More(q.unshift_read_with(
            UntilClose(self.max_body),
            move |body, q| {
                self.resp.body.push(own_small(body));
                self.read_to_close = true;
                self.done(q)
            },
        )))
    }

    fn chunk_size(self, q: &mut Requests<'_>) -> Ticket<Step<Response>> {
        q.unshift_read_with(HttpLine::new(), move |l, q| self.on_chunk_size(l, q))
    }

    fn on_chunk_size(mut self, line: Bytes, q: &mut Requests<'_>) -> Next {
        // 1a;name=value  (chunk extensions are allowed, and ignored)
        let size = line
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        if size.is_empty() || !size.iter().all(u8::is_ascii_hexdigit) {
            return Err(protocol_error("bad chunk size line"));
        }
        // Leading zeros are allowed in any number (RFC 9112 §7.1); what is
        // left must fit in 60 bits.
        let size = match size.iter().position(|&d| d != b'0') {
            Some(first) => &size[first..],
            None => &b"0"[..],
        };
        if size.len() > 15 {
            return Err(too_long());
        }
        let n = usize::from_str_radix(std::str::from_utf8(size).expect("hex digits"), 16)
            .map_err(|_| protocol_error("bad chunk size line"))?;
        if n == 0 {
            return Ok(Step::More(self.header_line(q, true)));
        }
        let so_far = self.resp.body_len() + self.gathered.len();
        if so_far.saturating_add(n) > self.max_body {
            return Err(too_long());
        }
        Ok(Step::More(q.unshift_read_with(
            CrlfChunk::new(n),
            move |chunk, q| {
                if chunk.len() < OWN_BELOW {
                    self.gathered.extend_from_slice(&chunk);
                } else {
                    self.end_gathered();
                    self.resp.body.push(chunk);
                }
                Ok(Step::More(self.chunk_size(q)))
            },
        )))
    }
}

/// Whether the `Connection` fields among `fields` name `option`.
fn has_option(fields: &[(Bytes, Bytes)], option: &[u8]) -> bool {
    fields
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case(b"connection"))
        .flat_map(|(_, value)| value.split(|&b| b == b','))
        .any(|o| o.trim_ascii().eq_ignore_ascii_case(option))
}

/// The HTTP/1.1 [`Protocol`] for one host, on one connection: a clone
/// starts afresh, for another connection.
#[derive(Debug)]
pub struct Http {
    host: Bytes,
    max_body: usize,
    /// A request said `Connection: close`: none may follow it (RFC 9112
    /// §9.6).
    closing: AtomicBool,
}

impl Clone for Http {
    fn clone(&self) -> Http {
        Http {
            host: self.host.clone(),
            max_body: self.max_body,
            closing: AtomicBool::new(false),
        }
    }
}

impl Http {
    /// Requests to `host` (the `Host` header's value, e.g. `127.0.0.1:8080`),
    /// bodies up to [`MAX_BODY`].
    pub fn new(host: impl Into<Bytes>) -> Http {
        Http {
            host: host.into(),
            max_body: MAX_BODY,
            closing: AtomicBool::new(false),
        }
    }

    /// The largest response body accepted (at most [`MAX_BODY`]): a
    /// longer `Content-Length` or chunk is a fatal `ENOSPC` before any of
    /// it is buffered; a body until close, once it has passed the limit
    /// (by at most one read). The read buffer's own cap (`rbuf_max` of
    /// the connection) should be at least this.
    ///
    /// # Examples
    ///
    /// ```
    /// use anyframe_protocols::http::Http;
    ///
    /// use anyframe::QueuedFramed;
    /// use anyframe_protocols::pipeline::Pipelined;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let (io, _server) = tokio::io::duplex(1024);
    /// let (handle, _driver) = QueuedFramed::new(io).spawn();
    /// // Responses over 1 MiB fail with ENOSPC.
    /// let client = Pipelined::new(handle, Http::new("127.0.0.1:8080").max_body(1 << 20), 16);
    /// # drop(client);
    /// # }
    /// ```
    #[must_use]
    pub fn max_body(mut self, limit: usize) -> Http {
        self.max_body = limit.min(MAX_BODY);
        self
    }
}

fn check_token(s: &[u8], what: &'static str) -> Result<()> {
    if s.is_empty() || s.iter().any(|&b| b <= b' ' || b == 0x7f) {
        return Err(Error::custom(ErrorKind::InvalidInput, false, what));
    }
    Ok(())
}

impl Protocol for Http {
    type Request = Request;
    type Reply = Response;

    fn encode(&self, req: &Request, dst: &mut BytesMut) -> Result<()> {
        let refuse = |what| Err(Error::custom(ErrorKind::InvalidInput, false, what));
        check_token(&req.method, "bad HTTP method")?;
        check_token(&req.target, "bad HTTP request target")?;
        if let Some(e) = self.refuses_requests() {
            return Err(e);
        }
        // A tunnel is not offered: its 2xx answer would end HTTP here.
        if &req.method[..] == b"CONNECT" {
            return refuse("CONNECT: this client does not offer tunnels");
        }
        // Over the write cap `connect` sizes for it, queued, it would
        // close the connection under every request in flight.
        if req.body.len() > MAX_BODY {
            return refuse("HTTP request body longer than MAX_BODY");
        }
        let mut host = &self.host[..];
        let mut hosts = 0;
        for (name, value) in &req.headers {
            check_token(name, "bad HTTP header name")?;
            // Field values are visible characters, spaces and tabs (RFC 9110
            // §5.5): CR, LF, NUL and the other controls are refused.
            if name.contains(&b':') || value.iter().any(|&b| (b < b' ' && b != b'\t') || b == 0x7f)
            {
                return refuse("bad HTTP header");
            }
            // The client frames every request: a second framing field would
            // let a server read the body as another request (RFC 9112
            // §6.2, §6.3).
            if name.eq_ignore_ascii_case(b"content-length")
                || name.eq_ignore_ascii_case(b"transfer-encoding")
            {
                return refuse("Content-Length and Transfer-Encoding are the client's own");
            }
            // A request's own Host replaces the client's; two are refused
            // (RFC 9112 §3.2).
            if name.eq_ignore_ascii_case(b"host") {
                hosts += 1;
                host = value;
            }
        }
        if hosts > 1 {
            return refuse("more than one Host field");
        }
        dst.reserve(req.target.len() + req.body.len() + 64);
        dst.put_slice(&req.method);
        dst.put_u8(b' ');
        dst.put_slice(&req.target);
        dst.put_slice(b" HTTP/1.1\r\nHost: ");
        dst.put_slice(host);
        dst.put_slice(b"\r\n");
        for (name, value) in &req.headers {
            if name.eq_ignore_ascii_case(b"host") {
                continue;
            }
            dst.put_slice(name);
            dst.put_slice(b": ");
            dst.put_slice(value);
            dst.put_slice(b"\r\n");
        }
        // RFC 9110 §8.6: a body's length, and `0` for the methods that
        // define a meaning for one (a server may refuse them without).
        let body_method = [&b"POST"[..], b"PUT", b"PATCH"].contains(&&req.method[..]);
        if !req.body.is_empty() || body_method {
            dst.put_slice(b"Content-Length: ");
            put_decimal(dst, req.body.len() as u64);
            dst.put_slice(b"\r\n");
        }
        dst.put_slice(b"\r\n");
        dst.put_slice(&req.body);
        if has_option(&req.headers, b"close") {
            self.closing.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// After a request that said `Connection: close`: a non-fatal `Closed`
    /// (the connection is still open for that request's response; it
    /// closes after it).
    fn refuses_requests(&self) -> Option<Error> {
        self.closing.load(Ordering::Acquire).then(|| {
            Error::custom(
                ErrorKind::Closed,
                false,
                "an earlier request said Connection: close",
            )
        })
    }

    fn read_reply(&self, req: &Request, handle: &Handle, slot: Slot) -> Ticket<Step<Response>> {
        let state = ResponseRead {
            max_body: self.max_body,
            // Methods are case-sensitive (RFC 9110 §9.1): `head` is not
            // `HEAD`, and its response has the body its headers announce.
            head: &req.method[..] == b"HEAD",
            http10: false,
            request_closes: has_option(&req.headers, b"close"),
            read_to_close: false,
            gathered: BytesMut::new(),
            resp: Response {
                status: 0,
                reason: Bytes::new(),
                headers: Vec::new(),
                body: Vec::new(),
                trailers: Vec::new(),
                informational: Vec::new(),
            },
            _slot: slot,
        };
        handle.push_response_with(HttpLine::new(), move |l, q| state.on_status(l, q))
    }
}

/// The pipelined HTTP/1.1 client: a `tower::Service<Request, Response =
/// Response>` on one keep-alive connection.
pub type Client = Pipelined<Http>;

/// Connects to an HTTP server and spawns the connection's driver.
///
/// # Errors
///
/// The connect error.
///
/// # Examples
///
/// ```
/// use anyframe_protocols::http::{self, Request};
/// use anyframe_protocols::servers::{Kind, Server};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> anyframe::Result<()> {
/// let Some(server) = Server::start(Kind::Nginx) else { return Ok(()) };
/// std::fs::write(server.docroot().join("index.html"), "<p>hi</p>").unwrap();
/// let client = http::connect(server.addr(), 32).await?;
/// // Two GETs pipelined on one keep-alive connection.
/// let (a, b) = (client.send(Request::get("/index.html")), client.send(Request::get("/nope")));
/// assert_eq!(a.await?.body_bytes(), "<p>hi</p>");
/// assert_eq!(b.await?.status, 404);
/// # Ok(()) }
/// ```
pub async fn connect(addr: SocketAddr, max_in_flight: usize) -> Result<Client> {
    let handle = crate::connect_tcp(addr, MAX_BODY).await?;
    Ok(Pipelined::new(
        handle,
        Http::new(addr.to_string()),
        max_in_flight,
    ))
}
