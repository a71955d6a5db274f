//! A memcached client (the text protocol) built from anyframe's read types,
//! as AnyEvent::Memcached reads replies:
//!
//! * every reply starts with a **line** ([`LineCodec`]): `STORED`,
//!   `DELETED`, `NOT_FOUND`, a number (`incr`), `ERROR`,
//!   `CLIENT_ERROR <why>`, `SERVER_ERROR <why>`, `END`, or
//!   `VALUE <key> <flags> <bytes> [<cas>]`;
//! * after a `VALUE` line, **exactly `bytes` bytes and `\r\n`**: one
//!   [`ChunkCodec`](anyframe::codecs::ChunkCodec) read, split off the read
//!   buffer without a copy (a value shorter than 64 KiB is then copied
//!   out, so that a multi-get of small values does not keep a read buffer
//!   per value alive); its completion queues the next line at the
//!   front of the queue, until `END`. Each `VALUE` must be for a key the
//!   request asked for, in the order asked, each at most once (as
//!   memcached answers); any other is a fatal protocol error, so a reply
//!   holds at most one value per key asked for.
//!
//! [`Memcached`] is the [`Protocol`]; [`Client`] is the pipelined tower
//! `Service<Command, Response = Response>`.

use std::net::SocketAddr;

use anyframe::codecs::LineCodec;
use anyframe::{Error, ErrorKind, Handle, Requests, Result, Ticket};
use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::codec::Decoder;

use crate::pipeline::{CrlfChunk, Pipelined, Protocol, Slot, Step, own_small, protocol_error};
use crate::redis::put_decimal;

/// The longest key memcached accepts.
pub const MAX_KEY_LEN: usize = 250;
/// The largest value accepted in a reply, where a longer `VALUE` line is
/// refused before any of its bytes is buffered, and in a request, where a
/// longer value is refused before anything is written (a non-fatal
/// `EINVAL`).
pub const MAX_VALUE_LEN: usize = 1024 * 1024 * 1024;

/// A request.
#[derive(Debug, Clone)]
pub enum Command {
    /// `set`: store unconditionally.
    Set(Store),
    /// `cas`: store if the item's CAS unique is still `cas`.
    Cas(Store, u64),
    /// `get k1 k2 ...`: values, without CAS uniques.
    Get(Vec<Bytes>),
    /// `gets k1 k2 ...`: values with their CAS uniques.
    Gets(Vec<Bytes>),
    /// `delete k`.
    Delete(Bytes),
    /// `incr k delta`.
    Incr(Bytes, u64),
}

/// The item a storage command writes.
#[derive(Debug, Clone)]
pub struct Store {
    /// The key (1–250 bytes, no spaces or control characters).
    pub key: Bytes,
    /// Opaque flags stored with the value.
    pub flags: u32,
    /// Expiry: 0 for never, seconds, or a Unix time.
    pub exptime: u32,
    /// The value.
    pub data: Bytes,
}

impl Command {
    /// `set key 0 0 len` with `data`.
    pub fn set(key: impl Into<Bytes>, data: impl Into<Bytes>) -> Command {
        Command::Set(Store {
            key: key.into(),
            flags: 0,
            exptime: 0,
            data: data.into(),
        })
    }

    /// `get key`.
    pub fn get(key: impl Into<Bytes>) -> Command {
        Command::Get(vec![key.into()])
    }
}

/// One value of a `get`/`gets` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The key.
    pub key: Bytes,
    /// The flags stored with it.
    pub flags: u32,
    /// The CAS unique (`gets` only).
    pub cas: Option<u64>,
    /// The value.
    pub data: Bytes,
}

/// A reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// `STORED`.
    Stored,
    /// `NOT_STORED`.
    NotStored,
    /// `EXISTS` (a `cas` that lost).
    Exists,
    /// `NOT_FOUND`.
    NotFound,
    /// `DELETED`.
    Deleted,
    /// The values found, in the order the keys were asked for (missing
    /// keys are absent).
    Values(Vec<Item>),
    /// The new value after `incr`.
    Number(u64),
    /// `ERROR`: the server did not know the command.
    Error,
    /// `CLIENT_ERROR <why>`: the request was malformed.
    ClientError(Bytes),
    /// `SERVER_ERROR <why>`: the server could not do it (out of memory,
    /// object too large, ...).
    ServerError(Bytes),
}

/// What one reply line says.
#[derive(Debug)]
enum ReplyLine {
    Final(Response),
    Value {
        key: Bytes,
        flags: u32,
        len: usize,
        cas: Option<u64>,
    },
    End,
}

/// The line read, parsed; a line that is no memcached reply is a fatal
/// `EBADMSG`.
#[derive(Debug, Clone)]
struct Line {
    line: LineCodec,
}

impl Decoder for Line {
    type Item = ReplyLine;
    type Error = Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<ReplyLine>> {
        match self.line.decode(buf)? {
            Some(line) => parse_line(line.into_line()).map(Some),
            None => Ok(None),
        }
    }
}

fn read_line() -> Line {
    Line {
        line: LineCodec::new(),
    }
}

fn parse_line(line: Bytes) -> Result<ReplyLine> {
    let word_end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    let rest = || line.slice((word_end + 1).min(line.len())..);
    Ok(match &line[..word_end] {
        b"VALUE" => return parse_value(&line),
        b"END" => ReplyLine::End,
        b"STORED" => ReplyLine::Final(Response::Stored),
        b"NOT_STORED" => ReplyLine::Final(Response::NotStored),
        b"EXISTS" => ReplyLine::Final(Response::Exists),
        b"NOT_FOUND" => ReplyLine::Final(Response::NotFound),
        b"DELETED" => ReplyLine::Final(Response::Deleted),
        b"ERROR" => ReplyLine::Final(Response::Error),
        b"CLIENT_ERROR" => ReplyLine::Final(Response::ClientError(own_small(rest()))),
        b"SERVER_ERROR" => ReplyLine::Final(Response::ServerError(own_small(rest()))),
        digits => ReplyLine::Final(Response::Number(
            parse_u64(digits).ok_or_else(|| protocol_error("unknown memcached reply line"))?,
        )),
    })
}

fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    s.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit()
            .then_some(())
            .and_then(|()| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
    })
}

fn parse_value(line: &Bytes) -> Result<ReplyLine> {
    let bad = || protocol_error("malformed VALUE line");
    let mut fields = line.split(|&b| b == b' ');
    fields.next(); // VALUE
    let key = fields.next().ok_or_else(bad)?;
    let key = line.slice_ref(key);
    let flags = fields.next().and_then(parse_u64).ok_or_else(bad)?;
    let len = fields.next().and_then(parse_u64).ok_or_else(bad)?;
    let cas = match fields.next() {
        Some(c) => Some(parse_u64(c).ok_or_else(bad)?),
        None => None,
    };
    if fields.next().is_some() {
        return Err(bad());
    }
    let len = usize::try_from(len)
        .ok()
        .filter(|&n| n <= MAX_VALUE_LEN)
        .ok_or_else(|| {
            Error::custom(
                ErrorKind::NoSpace,
                true,
                "memcached value longer than MAX_VALUE_LEN",
            )
        })?;
    Ok(ReplyLine::Value {
        key,
        flags: u32::try_from(flags).map_err(|_| bad())?,
        len,
        cas,
    })
}

/// The keys a request asked for: one (the common `get`) without an
/// allocation.
#[derive(Debug)]
enum Asked {
    One(Bytes),
    Many(Vec<Bytes>),
}

impl Asked {
    fn as_slice(&self) -> &[Bytes] {
        match self {
            Asked::One(key) => std::slice::from_ref(key),
            Asked::Many(keys) => keys,
        }
    }
}

/// Which command a reply answers: each takes its own answer lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answers {
    /// `get`, `gets`: `VALUE`s, then `END`.
    Values,
    /// `set`, `cas`.
    Store,
    /// `delete`.
    Delete,
    /// `incr`.
    Incr,
}

impl Answers {
    fn of(cmd: &Command) -> Answers {
        match cmd {
            Command::Get(_) | Command::Gets(_) => Answers::Values,
            Command::Set(_) | Command::Cas(..) => Answers::Store,
            Command::Delete(_) => Answers::Delete,
            Command::Incr(..) => Answers::Incr,
        }
    }

    /// Whether `r` may answer this command. Any command may get `ERROR`,
    /// `CLIENT_ERROR` or `SERVER_ERROR`; any other answer of another
    /// command means the two sides are out of step.
    fn take(self, r: &Response) -> bool {
        use Response as R;
        matches!(r, R::Error | R::ClientError(_) | R::ServerError(_))
            || match self {
                Answers::Values => false,
                Answers::Store => matches!(r, R::Stored | R::NotStored | R::Exists | R::NotFound),
                Answers::Delete => matches!(r, R::Deleted | R::NotFound),
                Answers::Incr => matches!(r, R::Number(_) | R::NotFound),
            }
    }
}

fn out_of_step() -> Error {
    protocol_error("memcached answer of another command: the two sides are out of step")
}

/// One reply being read: the values so far.
#[derive(Debug)]
struct ReplyRead {
    answers: Answers,
    items: Vec<Item>,
    /// The keys a `get` or `gets` asked for (none for other commands);
    /// the server answers each at most once, in this order.
    keys: Asked,
    /// Where in `keys` the next value's key is looked for.
    next_key: usize,
    _slot: Slot,
}

impl ReplyRead {
    fn on_line(mut self, line: ReplyLine, q: &mut Requests<'_>) -> Result<Step<Response>> {
        match line {
            ReplyLine::Final(r) if !self.answers.take(&r) => Err(out_of_step()),
            ReplyLine::Final(r) if self.items.is_empty() => Ok(Step::Done(r)),
            ReplyLine::Final(_) => Err(protocol_error("memcached reply line inside a value list")),
            ReplyLine::End if self.answers != Answers::Values => Err(out_of_step()),
            ReplyLine::End => Ok(Step::Done(Response::Values(self.items))),
            ReplyLine::Value {
                key,
                flags,
                len,
                cas,
            } => {
                // A value for a key not asked for, or out of order, is not
                // this request's reply: the two sides are out of step.
                let asked = self.keys.as_slice();
                let Some(at) = asked[self.next_key..].iter().position(|k| *k == key) else {
                    return Err(protocol_error(
                        "memcached VALUE for a key not asked for, or out of order",
                    ));
                };
                self.next_key += at + 1;
                // The request's own key: the line's (a piece of the read
                // buffer) is not kept.
                let key = asked[self.next_key - 1].clone();
                Ok(Step::More(q.unshift_read_with(
                    CrlfChunk::new(len),
                    move |data, q| {
                        // Each value may have come in a read of its own.
                        self.items.push(Item {
                            key,
                            flags,
                            cas,
                            data: own_small(data),
                        });
                        Ok(Step::More(q.unshift_read_with(read_line(), move |l, q| {
                            self.on_line(l, q)
                        })))
                    },
                )))
            }
        }
    }
}

fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_LEN || key.iter().any(|&b| b <= b' ' || b == 0x7f) {
        return Err(Error::custom(
            ErrorKind::InvalidInput,
            false,
            "memcached keys are 1-250 bytes without spaces or control characters",
        ));
    }
    Ok(())
}

fn put_store(dst: &mut BytesMut, verb: &[u8], s: &Store, cas: Option<u64>) -> Result<()> {
    check_key(&s.key)?;
    if s.data.len() > MAX_VALUE_LEN {
        // Over the connection's write cap, sized for this limit: queued,
        // it would close the connection under every request in flight.
        return Err(Error::custom(
            ErrorKind::InvalidInput,
            false,
            "memcached value longer than MAX_VALUE_LEN",
        ));
    }
    dst.reserve(s.key.len() + s.data.len() + 64);
    dst.put_slice(verb);
    dst.put_u8(b' ');
    dst.put_slice(&s.key);
    for n in [
        u64::from(s.flags),
        u64::from(s.exptime),
        s.data.len() as u64,
    ]
    .into_iter()
    .chain(cas)
    {
        dst.put_u8(b' ');
        put_decimal(dst, n);
    }
    dst.put_slice(b"\r\n");
    dst.put_slice(&s.data);
    dst.put_slice(b"\r\n");
    Ok(())
}

/// The memcached text [`Protocol`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Memcached;

impl Protocol for Memcached {
    type Request = Command;
    type Reply = Response;

    fn encode(&self, req: &Command, dst: &mut BytesMut) -> Result<()> {
        match req {
            Command::Set(s) => put_store(dst, b"set", s, None),
            Command::Cas(s, cas) => put_store(dst, b"cas", s, Some(*cas)),
            Command::Get(keys) | Command::Gets(keys) => {
                if keys.is_empty() {
                    return Err(Error::custom(
                        ErrorKind::InvalidInput,
                        false,
                        "get without keys",
                    ));
                }
                dst.put_slice(if matches!(req, Command::Get(_)) {
                    b"get"
                } else {
                    b"gets"
                });
                for k in keys {
                    check_key(k)?;
                    dst.put_u8(b' ');
                    dst.put_slice(k);
                }
                dst.put_slice(b"\r\n");
                Ok(())
            }
            Command::Delete(k) => {
                check_key(k)?;
                dst.put_slice(b"delete ");
                dst.put_slice(k);
                dst.put_slice(b"\r\n");
                Ok(())
            }
            Command::Incr(k, delta) => {
                check_key(k)?;
                dst.put_slice(b"incr ");
                dst.put_slice(k);
                dst.put_u8(b' ');
                put_decimal(dst, *delta);
                dst.put_slice(b"\r\n");
                Ok(())
            }
        }
    }

    fn read_reply(&self, req: &Command, handle: &Handle, slot: Slot) -> Ticket<Step<Response>> {
        let keys = match req {
            Command::Get(keys) | Command::Gets(keys) => match keys.as_slice() {
                [one] => Asked::One(one.clone()),
                many => Asked::Many(many.to_vec()),
            },
            _ => Asked::Many(Vec::new()),
        };
        let state = ReplyRead {
            answers: Answers::of(req),
            items: Vec::new(),
            keys,
            next_key: 0,
            _slot: slot,
        };
        handle.push_response_with(read_line(), move |l, q| state.on_line(l, q))
    }
}

/// The pipelined memcached client: a `tower::Service<Command, Response =
/// Response>`.
pub type Client = Pipelined<Memcached>;

/// Connects to a memcached server and spawns the connection's driver.
///
/// # Errors
///
/// The connect error.
///
/// # Examples
///
/// ```
/// use anyframe_protocols::memcached::{self, Command, Response};
/// use anyframe_protocols::servers::{Kind, Server};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> anyframe::Result<()> {
/// let Some(server) = Server::start(Kind::Memcached) else { return Ok(()) };
/// let client = memcached::connect(server.addr(), 128).await?;
/// assert_eq!(client.send(Command::set("k", "v")).await?, Response::Stored);
/// let Response::Values(items) = client.send(Command::get("k")).await? else { panic!() };
/// assert_eq!(items[0].data, "v");
/// # Ok(()) }
/// ```
pub async fn connect(addr: SocketAddr, max_in_flight: usize) -> Result<Client> {
    let handle = crate::connect_tcp(addr, MAX_VALUE_LEN).await?;
    Ok(Pipelined::new(handle, Memcached, max_in_flight))
}
