//! The rustls backend: rustls's sans-IO [`Connection`] driven over the
//! async IO, with nothing in between but our own input buffer.
//!
//! rustls reads ciphertext from whatever it is given and keeps it, so a
//! session that ends with the peer's close_notify would swallow the
//! plaintext sent right after it (stoptls). Ciphertext is therefore read
//! into our buffer, [`Conn::inbuf`], and handed to rustls **never past the
//! end of the current record** (the 5-byte header says how long a record
//! is): once a record carries the close_notify, the bytes behind it are
//! still ours and become the plaintext prefix. Within a record, whatever
//! has arrived is handed over at once, header first, so rustls judges a
//! header as soon as it is whole: one that cannot start a record (an
//! unknown content type, a version that is not TLS, a length past the
//! limit) fails then, not after a body the peer may never send. Bytes read
//! before `start_tls` (the replay) start the buffer. The one exception to
//! "never past the end": a record handed whole goes with the next record's
//! header, which stays in our buffer as well until its record is handed
//! (see [`Conn::feed`]); rustls drops what follows a close_notify, so those
//! bytes are still ours.
//!
//! Once our close_notify is out, rustls must not be shown a header it
//! would refuse: it would go to send a fatal alert after the close_notify,
//! which its debug assertions forbid (a panic in debug builds; rustls
//! issue 959). A peer that stopped TLS without answering and went on in
//! plaintext does exactly that, so we judge those headers ourselves; a
//! body rustls refuses then is caught the same way (see [`Conn::process`]).
//!
//! The buffer holds at most one record plus one read's worth
//! ([`READ_CHUNK`]), so memory per connection is bounded.

use std::io::{self, BufRead, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use ::rustls::pki_types::ServerName;
use ::rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::TlsError;
use super::transport::Step;

/// A TLS record header: type (1), version (2), length (2).
const HEADER_LEN: usize = 5;

/// The longest record body a peer may send: 2^14 bytes of plaintext plus
/// 2048 of expansion (RFC 5246, 6.2.3; TLS 1.3 allows less).
const MAX_BODY_LEN: usize = (1 << 14) + 2048;

/// Spare room offered to each read from the IO: two full records, so bulk
/// transfers take one read per two records.
const READ_CHUNK: usize = 2 * (HEADER_LEN + MAX_BODY_LEN);

/// What a record rustls refused after our close_notify is (see
/// [`Conn::process`]).
fn after_close_notify() -> ::rustls::Error {
    ::rustls::Error::General("the peer sent a record that failed after our close_notify".into())
}

/// A rustls connection for one side, before any I/O. Boxed: it is about a
/// kilobyte, and the transport moves its state around by value.
pub(super) fn client(
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
) -> Result<Box<Connection>, TlsError> {
    ClientConnection::new(config, name)
        .map(|c| Box::new(Connection::from(c)))
        .map_err(TlsError::config)
}

/// See [`client`].
pub(super) fn server(config: Arc<ServerConfig>) -> Result<Box<Connection>, TlsError> {
    ServerConnection::new(config)
        .map(|c| Box::new(Connection::from(c)))
        .map_err(TlsError::config)
}

/// The body length a record header (at least 5 bytes) announces.
fn body_len(header: &[u8]) -> usize {
    usize::from(u16::from_be_bytes([header[3], header[4]]))
}

/// What to hand to rustls from the front of `buf`, when `owed` bytes of
/// the current record are still to come (0: `buf` starts a record):
/// `(n, left)`, hand over `n` bytes of the `left` that remain of the
/// record. Everything there is, up to the record's end; `None` while there
/// is nothing, or less than a header (which says where the record ends).
fn next_feed(buf: &[u8], owed: usize) -> Option<(usize, usize)> {
    let left = if owed > 0 {
        owed
    } else {
        let header = buf.get(..HEADER_LEN)?;
        HEADER_LEN + body_len(header)
    };
    let n = left.min(buf.len());
    (n > 0).then_some((n, left))
}

/// Why rustls would refuse `header` (a record header, 5 bytes) as it reads
/// it: an unknown content type, a version that is not 3.x, an empty
/// record that may not be empty, a length past the limit. Only used after
/// our close_notify (see the module docs); before it rustls judges headers
/// itself. Stricter than rustls in one way: the SSL 2 and DTLS version
/// numbers, which it lets through to fail later, are refused here.
fn refused_header(header: &[u8]) -> Option<::rustls::InvalidMessage> {
    use ::rustls::InvalidMessage;
    let body = body_len(header);
    // change_cipher_spec, alert, handshake, application_data, heartbeat.
    if !(20..=24).contains(&header[0]) {
        Some(InvalidMessage::InvalidContentType)
    } else if header[1] != 3 {
        Some(InvalidMessage::UnknownProtocolVersion)
    } else if body == 0 && header[0] != 23 {
        Some(InvalidMessage::InvalidEmptyPayload)
    } else if body >= MAX_BODY_LEN {
        Some(InvalidMessage::MessageTooLarge)
    } else {
        None
    }
}

/// The IO as the `io::Write` that [`Connection::write_tls`] wants, for the
/// length of one poll: `Pending` becomes `WouldBlock`.
struct SyncWriter<'a, 'b, IO> {
    io: &'a mut IO,
    cx: &'a mut Context<'b>,
}

impl<IO: AsyncWrite + Unpin> SyncWriter<'_, '_, IO> {
    fn settle<T>(p: Poll<io::Result<T>>) -> io::Result<T> {
        match p {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl<IO: AsyncWrite + Unpin> Write for SyncWriter<'_, '_, IO> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Self::settle(Pin::new(&mut *self.io).poll_write(self.cx, buf))
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        Self::settle(Pin::new(&mut *self.io).poll_write_vectored(self.cx, bufs))
    }

    fn flush(&mut self) -> io::Result<()> {
        Self::settle(Pin::new(&mut *self.io).poll_flush(self.cx))
    }
}

/// A rustls handshake in progress.
pub(super) struct Handshake<IO>(Conn<IO>);

impl<IO: AsyncRead + AsyncWrite + Unpin> Handshake<IO> {
    pub(super) fn new(tls: Box<Connection>, io: IO, replay: Bytes) -> Handshake<IO> {
        Handshake(Conn::new(tls, io, BytesMut::from(replay)))
    }

    pub(super) fn poll(mut self, cx: &mut Context<'_>) -> Step<Handshake<IO>, Conn<IO>, IO> {
        match self.0.poll_handshake(cx) {
            Poll::Pending => Step::Pending(self),
            Poll::Ready(Ok(())) => Step::Done(self.0),
            Poll::Ready(Err(e)) => Step::Failed(e, Some(self.0.into_parts())),
        }
    }

    pub(super) fn io_ref(&self) -> &IO {
        &self.0.io
    }

    pub(super) fn io_mut(&mut self) -> &mut IO {
        &mut self.0.io
    }

    pub(super) fn into_parts(self) -> (IO, Bytes) {
        self.0.into_parts()
    }
}

/// A rustls session over `IO`.
pub(super) struct Conn<IO> {
    tls: Box<Connection>,
    io: IO,
    /// Ciphertext read from the IO (or replayed) and not yet handed to
    /// rustls; see the module docs.
    inbuf: BytesMut,
    /// Bytes of the record rustls has the start of that it has not been
    /// given yet, counted from `inbuf[lent..]`; 0 at a record boundary.
    owed: usize,
    /// Bytes at the front of `inbuf` that rustls already has: the start of
    /// the next record, handed early (see [`Conn::feed`]).
    lent: usize,
    /// The length of the record `owed` belongs to, header included.
    record_len: usize,
    /// An error rustls found in a header handed early, behind a record
    /// whose plaintext is still to be read: it comes after that.
    deferred: Option<::rustls::Error>,
    /// The IO returned end-of-file.
    peer_eof: bool,
    close_notify_sent: bool,
    /// A TLS 1.3 server's session tickets wait in rustls for the first
    /// write or flush (see [`Conn::poll_handshake`]); a read leaves them.
    tickets_owed: bool,
    /// rustls panicked in [`Conn::process`] and its state is not to be
    /// trusted (it swaps its state out while it works): every later call
    /// gets [`after_close_notify`] and rustls is not called again. (A flag,
    /// not the error: the session is held by value in every idle
    /// connection.)
    failed: bool,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Conn<IO> {
    /// A session over `io` whose first ciphertext is `inbuf`.
    fn new(tls: Box<Connection>, io: IO, inbuf: BytesMut) -> Conn<IO> {
        Conn {
            tls,
            io,
            inbuf,
            owed: 0,
            lent: 0,
            record_len: 0,
            deferred: None,
            peer_eof: false,
            close_notify_sent: false,
            tickets_owed: false,
            failed: false,
        }
    }

    /// The error rustls's panic left (see [`Conn::failed`]), if any.
    fn check_failed(&self) -> Result<(), TlsError> {
        if self.failed {
            return Err(TlsError::protocol(after_close_notify()));
        }
        Ok(())
    }

    /// Hands rustls what is buffered of the current record (see
    /// [`next_feed`]) and lets it process that. `Ok(false)`: more input is
    /// needed.
    ///
    /// A record handed whole goes with the next record's header when that
    /// is buffered (and our close_notify is not out): rustls then never
    /// runs empty between records, which spares it a shrink and four
    /// regrowths of its buffer per record. The header stays in `inbuf`
    /// too ([`Conn::lent`]) until the record it starts is handed, so if
    /// the record before it was the peer's close_notify (after which
    /// rustls drops what it holds), those bytes are still ours.
    fn feed(&mut self) -> Result<bool, ::rustls::Error> {
        if self.failed {
            return Err(after_close_notify());
        }
        if let Some(e) = self.deferred.take() {
            return Err(e);
        }
        let lent = self.lent;
        let Some((n, left)) = next_feed(&self.inbuf[lent..], self.owed) else {
            return Ok(false);
        };
        if self.owed == 0 {
            if self.close_notify_sent
                && let Some(why) = refused_header(&self.inbuf[..HEADER_LEN])
            {
                return Err(why.into());
            }
            self.record_len = left;
        }
        let mut record = &self.inbuf[lent..lent + n];
        while !record.is_empty() {
            match self.tls.read_tls(&mut record) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(::rustls::Error::General(e.to_string())),
            }
        }
        let fed = n - record.len();
        // Nothing taken (rustls takes nothing after the peer's close_notify,
        // and has dropped what it held): what is lent is still ours.
        if fed > 0 {
            let done = lent + fed;
            self.owed = left - fed;
            self.lent = 0;
            if self.owed == 0 && !self.close_notify_sent && self.record_len <= MAX_BODY_LEN {
                self.lend_header(done);
            }
            self.inbuf.advance(done);
        }
        self.process()?;
        Ok(fed > 0)
    }

    /// rustls's `process_new_packets`. Once our close_notify is out, a
    /// record whose body rustls refuses (one that does not decrypt, say)
    /// makes rustls go to send a fatal alert after the close_notify, which
    /// its debug assertions forbid (rustls issue 959): a header can be
    /// judged before rustls sees it ([`refused_header`]), a body cannot.
    /// That panic is the peer's doing, not a bug of ours or the user's: it
    /// becomes the protocol error a release build of rustls returns, and
    /// rustls, left mid-call, is not called again ([`Conn::failed`]).
    fn process(&mut self) -> Result<(), ::rustls::Error> {
        if !self.close_notify_sent {
            return self.tls.process_new_packets().map(drop);
        }
        let tls = &mut self.tls;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            tls.process_new_packets().map(drop)
        })) {
            Ok(result) => result,
            Err(_) => {
                tracing::debug!("rustls refused a record after our close_notify");
                self.failed = true;
                Err(after_close_notify())
            }
        }
    }

    /// [`feed`](Conn::feed) for as long as the handshake runs and records
    /// are buffered: rustls takes the peer's whole flight before anything is
    /// written, so its answer (a TLS 1.3 client's ChangeCipherSpec and
    /// Finished) leaves in one write. Written record by record, the second
    /// part would be a small segment of its own, which Nagle's algorithm
    /// holds until the peer acknowledges the first; a peer that delays its
    /// ACKs (it has nothing to send until our Finished) would hold every
    /// handshake over such a socket for its delayed-ACK timeout, about
    /// 40 ms on Linux.
    fn feed_flight(&mut self) -> Result<bool, ::rustls::Error> {
        let mut fed = false;
        while self.tls.is_handshaking() && self.feed()? {
            fed = true;
        }
        Ok(fed)
    }

    /// Hands rustls the header at `inbuf[at..]` ahead of its record, if it
    /// is all there and announces a body (see [`Conn::feed`]). rustls has
    /// room: it holds one record of at most [`MAX_BODY_LEN`] bytes.
    fn lend_header(&mut self, at: usize) {
        let Some(header) = self.inbuf.get(at..at + HEADER_LEN) else {
            return;
        };
        let body = body_len(header);
        if body == 0 {
            return;
        }
        let mut rest = header;
        // rustls refusing (a full buffer) only means nothing goes along.
        if let Ok(k @ 1..) = self.tls.read_tls(&mut rest) {
            self.lent = k;
            self.record_len = HEADER_LEN + body;
            self.owed = self.record_len - k;
        }
    }

    /// Reads from the IO into `inbuf`. `Ok(false)` at end-of-file.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        if self.peer_eof {
            return Poll::Ready(Ok(false));
        }
        self.inbuf.reserve(READ_CHUNK);
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.io),
            cx,
            &mut self.inbuf
        ))?;
        if n == 0 {
            self.peer_eof = true;
        }
        Poll::Ready(Ok(n > 0))
    }

    /// Writes some of what rustls has sealed to the IO.
    fn poll_write_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut w = SyncWriter {
            io: &mut self.io,
            cx,
        };
        match self.tls.write_tls(&mut w) {
            Ok(0) => Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Ok(_) => Poll::Ready(Ok(())),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    /// Writes everything rustls has sealed, then flushes the IO.
    fn poll_flush_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tickets_owed = false;
        while self.tls.wants_write() {
            ready!(self.poll_write_tls(cx))?;
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// Sends the alert rustls queued when it refused the peer, if the IO
    /// takes it at once; the error that caused it is what matters.
    fn send_alert(&mut self, cx: &mut Context<'_>) {
        while self.tls.wants_write() {
            if !matches!(self.poll_write_tls(cx), Poll::Ready(Ok(()))) {
                break;
            }
        }
    }

    /// True once a TLS 1.3 server's handshake is over: anything left to
    /// send follows the handshake.
    fn only_tickets_left(&self) -> bool {
        matches!(*self.tls, Connection::Server(_))
            && !self.tls.is_handshaking()
            && self.tls.protocol_version() == Some(::rustls::ProtocolVersion::TLSv1_3)
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TlsError>> {
        loop {
            // A TLS 1.3 server is done once it has the client's Finished;
            // what it still has to send are session tickets. They are not
            // written here (a client that only writes would never take
            // them), nor by the reads that follow: sent alone they are a
            // small segment, and a server that speaks first would put its
            // first data in a second one, which Nagle's algorithm holds
            // until the client's delayed ACK. They leave with the first
            // write (in the same system call as its data) or flush; the
            // engine flushes before it waits for input, so a client that
            // speaks first gets them, and the ACK of its Finished, at once.
            while self.tls.wants_write() && !self.only_tickets_left() {
                match self.poll_write_tls(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(TlsError::handshake_io(e))),
                    Poll::Pending => return Poll::Pending,
                }
            }
            if !self.tls.is_handshaking() {
                ready!(Pin::new(&mut self.io).poll_flush(cx)).map_err(TlsError::handshake_io)?;
                self.tickets_owed = self.tls.wants_write();
                return Poll::Ready(Ok(()));
            }
            match self.feed_flight() {
                Ok(true) => continue,
                Ok(false) => {}
                // The handshake is over; the header handed behind its last
                // record is refused when the data is read.
                Err(e) if !self.tls.is_handshaking() => {
                    self.deferred = Some(e);
                    continue;
                }
                Err(e) => {
                    self.send_alert(cx);
                    return Poll::Ready(Err(TlsError::handshake_failed(e, self.peer_eof)));
                }
            }
            if !ready!(self.poll_fill(cx)).map_err(TlsError::handshake_io)? {
                return Poll::Ready(Err(TlsError::handshake_eof()));
            }
        }
    }

    /// Reads application data; leaves `buf` unchanged on a clean TLS EOF.
    /// `buf` has room.
    pub(super) fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<Result<(), TlsError>> {
        self.check_failed()?;
        // Records rustls still owes the peer (the end of the handshake, a
        // key update) go first, as far as the IO takes them now; the IO
        // then wakes us when it can take more. A write that fails is the
        // write side's to report (its next write meets it again): what
        // the peer sent before it went away is read first.
        while self.tls.wants_write() && !self.tickets_owed {
            match self.poll_write_tls(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => {
                    tracing::trace!(error = %e, "TLS records not written; reading on");
                    break;
                }
                Poll::Pending => break,
            }
        }
        loop {
            let mut reader = self.tls.reader();
            match reader.fill_buf() {
                Ok(chunk) => {
                    // Empty only after the peer's close_notify.
                    let n = chunk.len().min(buf.remaining());
                    buf.put_slice(&chunk[..n]);
                    reader.consume(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // We never tell rustls about EOF, so this is not expected;
                // it means the same thing.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Poll::Ready(Err(TlsError::truncated()));
                }
                Err(e) => return Poll::Ready(Err(TlsError::protocol(e))),
            }
            match self.feed() {
                Ok(true) => continue,
                Ok(false) => {}
                // The header after a record is handed with it: what that
                // record decrypted to goes first.
                Err(e) if self.tls.reader().fill_buf().is_ok_and(|c| !c.is_empty()) => {
                    self.deferred = Some(e);
                    continue;
                }
                Err(e) => {
                    self.send_alert(cx);
                    return Poll::Ready(Err(TlsError::protocol(e)));
                }
            }
            if !ready!(self.poll_fill(cx)).map_err(TlsError::io)? {
                return Poll::Ready(Err(TlsError::truncated()));
            }
        }
    }

    /// Seals application data; `buf` is not empty. Records already sealed
    /// go out first, and while rustls's send buffer is at its limit this
    /// waits for the IO.
    pub(super) fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<Result<usize, TlsError>> {
        // Sealed first, so that records already waiting (a TLS 1.3 server's
        // session tickets, see `poll_handshake`) leave in the same write as
        // this data rather than in a small segment of their own.
        self.check_failed()?;
        self.tickets_owed = false;
        let mut n = match self.tls.writer().write(buf) {
            Ok(n) => n,
            // rustls has failed (a record it refused): the alert it queued
            // goes out, behind what was waiting, before the error is told.
            Err(e) => {
                self.send_alert(cx);
                return Poll::Ready(Err(TlsError::protocol(e)));
            }
        };
        loop {
            while self.tls.wants_write() {
                match self.poll_write_tls(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(TlsError::io(e))),
                    // The IO has our waker. Whatever was sealed goes out
                    // with the next write or flush.
                    Poll::Pending if n > 0 => return Poll::Ready(Ok(n)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            if n > 0 {
                return Poll::Ready(Ok(n));
            }
            // rustls's send buffer was full and is now written out.
            n = self.tls.writer().write(buf).map_err(TlsError::protocol)?;
            if n == 0 {
                return Poll::Ready(Err(TlsError::io(io::ErrorKind::WriteZero.into())));
            }
        }
    }

    /// Writes out everything sealed and flushes the IO.
    pub(super) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TlsError>> {
        self.check_failed()?;
        self.poll_flush_tls(cx).map_err(TlsError::io)
    }

    /// Sends our close_notify (once) and flushes it out.
    pub(super) fn poll_close_notify(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TlsError>> {
        self.check_failed()?;
        if !self.close_notify_sent {
            self.tls.send_close_notify();
            self.close_notify_sent = true;
        }
        self.poll_flush(cx)
    }

    /// The peer's end-entity certificate as DER, if it sent one.
    pub(super) fn peer_certificate(&self) -> Option<Vec<u8>> {
        self.tls
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|cert| cert.to_vec())
    }

    pub(super) fn io_ref(&self) -> &IO {
        &self.io
    }

    pub(super) fn io_mut(&mut self) -> &mut IO {
        &mut self.io
    }

    /// The IO and the ciphertext rustls was never handed (after the peer's
    /// close_notify: the plaintext that follows it).
    pub(super) fn into_parts(self) -> (IO, Bytes) {
        // The ciphertext buffer was sized for records; what is left of it
        // (plaintext behind the peer's close_notify, if any) is kept
        // without the rest of its allocation.
        let rest = if self.inbuf.len() * 2 < self.inbuf.capacity() {
            Bytes::copy_from_slice(&self.inbuf)
        } else {
            self.inbuf.freeze()
        };
        (self.io, rest)
    }
}

#[cfg(test)]
mod tests {
    use crate::test_io::Recorder;
    use std::io::{Read, Write};

    use ::rustls::pki_types::ServerName;
    use ::rustls::{ClientConnection, Connection, InvalidMessage, ServerConnection};
    use bytes::BytesMut;

    use super::{Conn, HEADER_LEN, body_len, next_feed, refused_header};

    /// A client connection that has done its handshake with `server` in
    /// memory; whatever the server sends after it is still with the server.
    fn handshaken() -> (Connection, Connection) {
        let (client_config, server_config) = crate::tls::tests::rustls_cfg::localhost_pair();
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = Connection::from(ClientConnection::new(client_config, name).unwrap());
        let mut server = Connection::from(ServerConnection::new(server_config).unwrap());
        while client.is_handshaking() || server.is_handshaking() || server.wants_write() {
            pass(&mut client, &mut server);
            pass(&mut server, &mut client);
        }
        (client, server)
    }

    /// Hands everything `from` has sealed to `to`.
    fn pass(from: &mut Connection, to: &mut Connection) {
        let wire = sealed(from);
        let mut wire = &wire[..];
        while !wire.is_empty() {
            to.read_tls(&mut wire).unwrap();
        }
        to.process_new_packets().unwrap();
    }

    /// What `server` has sealed, as bytes on the wire.
    fn sealed(server: &mut Connection) -> Vec<u8> {
        let mut wire = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut wire).unwrap();
        }
        wire
    }

    fn conn(client: Connection, inbuf: &[u8]) -> Conn<tokio::io::DuplexStream> {
        Conn::new(
            Box::new(client),
            tokio::io::duplex(16).0,
            BytesMut::from(inbuf),
        )
    }

    fn record_len(wire: &[u8]) -> usize {
        HEADER_LEN + body_len(wire)
    }

    #[test]
    fn a_whole_record_goes_with_the_next_header_which_stays_ours() {
        let (client, mut server) = handshaken();
        server.writer().write_all(b"first").unwrap();
        server.writer().write_all(b"second").unwrap();
        let wire = sealed(&mut server);
        let first = record_len(&wire);
        let mut conn = conn(client, &wire);

        assert!(conn.feed().unwrap());
        assert_eq!(
            conn.lent, HEADER_LEN,
            "the second record's header went along"
        );
        assert_eq!(
            conn.inbuf.len(),
            wire.len() - first,
            "and is still in our buffer"
        );
        assert_eq!(conn.owed, wire.len() - first - HEADER_LEN);
        let mut got = [0u8; 16];
        let n = conn.tls.reader().read(&mut got).unwrap();
        assert_eq!(&got[..n], b"first");

        assert!(conn.feed().unwrap());
        assert_eq!((conn.lent, conn.owed), (0, 0));
        assert!(conn.inbuf.is_empty());
        let n = conn.tls.reader().read(&mut got).unwrap();
        assert_eq!(&got[..n], b"second");
    }

    /// After our close_notify rustls must not see a header it would refuse
    /// (it would answer with an alert after the close_notify): nothing goes
    /// along with a record any more, and we refuse the plaintext ourselves.
    #[test]
    fn after_our_close_notify_no_header_goes_along() {
        let (mut client, mut server) = handshaken();
        client.send_close_notify();
        server.writer().write_all(b"late data").unwrap();
        let mut wire = sealed(&mut server);
        wire.extend_from_slice(b"plain from a peer that left TLS");
        let mut conn = conn(client, &wire);
        conn.close_notify_sent = true;
        assert!(conn.feed().unwrap());
        assert_eq!(conn.lent, 0);
        let mut got = [0u8; 16];
        let n = conn.tls.reader().read(&mut got).unwrap();
        assert_eq!(&got[..n], b"late data");
        let e = conn.feed().unwrap_err();
        assert_eq!(
            e,
            ::rustls::Error::InvalidMessage(InvalidMessage::InvalidContentType)
        );
    }

    /// After our close_notify, a record that does not decrypt: rustls goes
    /// to send an alert after the close_notify (a panic in its debug
    /// builds). That is a protocol error, and every later call gets the
    /// same error without calling rustls again (its state was left
    /// mid-call).
    #[test]
    fn a_record_that_fails_after_our_close_notify_fails_every_later_call() {
        let (mut client, _server) = handshaken();
        client.send_close_notify();
        // Application data whose body is not what the keys sealed.
        let mut wire = vec![0x17, 0x03, 0x03, 0x00, 0x28];
        wire.extend_from_slice(&[0x5a; 0x28]);
        let mut conn = conn(client, &wire);
        conn.close_notify_sent = true;
        let first = conn.feed().unwrap_err();
        assert_eq!(conn.feed().unwrap_err(), first, "the same error again");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut buf = [0u8; 8];
            let mut buf = tokio::io::ReadBuf::new(&mut buf);
            let e = std::future::poll_fn(|cx| conn.poll_read(cx, &mut buf))
                .await
                .unwrap_err();
            assert_eq!(e.kind(), crate::tls::TlsErrorKind::Protocol, "{e}");
            let e = std::future::poll_fn(|cx| conn.poll_write(cx, b"x"))
                .await
                .unwrap_err();
            assert_eq!(e.kind(), crate::tls::TlsErrorKind::Protocol, "{e}");
        });
    }

    #[test]
    fn plaintext_whose_start_went_along_with_a_close_notify_is_still_ours() {
        let (client, mut server) = handshaken();
        server.writer().write_all(b"data").unwrap();
        server.send_close_notify();
        let mut wire = sealed(&mut server);
        wire.extend_from_slice(b"plain after stoptls");
        let mut conn = conn(client, &wire);
        while conn.feed().unwrap() {}
        let mut got = Vec::new();
        conn.tls.reader().read_to_end(&mut got).unwrap();
        assert_eq!(got, b"data", "then the clean end of TLS");
        let (_, rest) = conn.into_parts();
        assert_eq!(&rest[..], b"plain after stoptls");
    }

    /// What `Conn::poll_read` does with what has arrived: plaintext out
    /// first, then a feed when rustls has none. Appends the plaintext to
    /// `got`; true once the peer's close_notify has been read.
    fn drain(conn: &mut Conn<tokio::io::DuplexStream>, got: &mut Vec<u8>) -> bool {
        use std::io::BufRead;
        loop {
            let mut reader = conn.tls.reader();
            match reader.fill_buf() {
                Ok([]) => return true,
                Ok(chunk) => {
                    let n = chunk.len();
                    got.extend_from_slice(chunk);
                    reader.consume(n);
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
            if !conn.feed().unwrap() {
                return false;
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        /// Records of any size, then the peer's close_notify and plaintext
        /// (a stoptls), arriving in pieces of any size: the data comes out
        /// whole and in order, and the plaintext is left to us byte for
        /// byte, whatever went along with the records before it.
        #[test]
        fn any_split_gives_the_data_then_leaves_the_plaintext_after_close_notify(
            sizes in proptest::collection::vec(0usize..20_000, 0..5),
            cuts in proptest::collection::vec(1usize..20_000, 1..12),
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
        ) {
            let (client, mut server) = handshaken();
            // Up to 100,000 bytes are sealed before any is taken: more than
            // rustls's default send buffer (64 KiB) holds.
            server.set_buffer_limit(None);
            let mut expect = Vec::new();
            for (i, &n) in sizes.iter().enumerate() {
                let chunk = vec![b'a' + i as u8; n];
                server.writer().write_all(&chunk).unwrap();
                expect.extend_from_slice(&chunk);
            }
            server.send_close_notify();
            let mut wire = sealed(&mut server);
            wire.extend_from_slice(&tail);

            let mut conn = conn(client, &[]);
            let (mut got, mut closed, mut at) = (Vec::new(), false, 0);
            for &cut in cuts.iter().cycle() {
                if at == wire.len() {
                    break;
                }
                let end = (at + cut).min(wire.len());
                conn.inbuf.extend_from_slice(&wire[at..end]);
                at = end;
                if !closed {
                    closed = drain(&mut conn, &mut got);
                }
            }
            proptest::prop_assert!(closed, "the close_notify was read");
            proptest::prop_assert_eq!(got, expect);
            let (_, rest) = conn.into_parts();
            proptest::prop_assert_eq!(&rest[..], &tail[..]);
        }
    }

    #[test]
    fn next_feed_never_goes_past_the_end_of_a_record() {
        let record = [22, 3, 3, 0, 4, 1, 2, 3, 4, 23];
        assert_eq!(next_feed(&record[..4], 0), None, "no header yet");
        assert_eq!(next_feed(&record[..9], 0), Some((9, 9)));
        assert_eq!(next_feed(&record, 0), Some((9, 9)), "one record at a time");
        // The rest of a record whose start rustls has.
        assert_eq!(next_feed(&record[7..], 2), Some((2, 2)));
        assert_eq!(next_feed(&[], 2), None);
    }

    #[test]
    fn refused_header_knows_what_rustls_refuses() {
        assert_eq!(
            refused_header(&[23, 3, 3, 0, 0]),
            None,
            "empty application data"
        );
        assert_eq!(refused_header(&[21, 3, 3, 0, 2]), None, "an alert");
        assert_eq!(
            refused_header(b"plain"),
            Some(InvalidMessage::InvalidContentType)
        );
        assert_eq!(
            refused_header(&[22, 0x99, 0x99, 0, 4]),
            Some(InvalidMessage::UnknownProtocolVersion)
        );
        assert_eq!(
            refused_header(&[21, 3, 3, 0, 0]),
            Some(InvalidMessage::InvalidEmptyPayload)
        );
        assert_eq!(
            refused_header(&[23, 3, 3, 0x48, 0x00]),
            Some(InvalidMessage::MessageTooLarge)
        );
    }

    #[test]
    fn next_feed_hands_over_a_header_before_its_body() {
        // Plaintext where a record should be: rustls must see its header
        // now, not after the 8,239 bytes it seems to announce.
        assert_eq!(
            next_feed(b"GET / HTTP/1.1\r\n", 0),
            Some((16, HEADER_LEN + 0x202f))
        );
        // A version that is not TLS, declaring a body that never comes.
        assert_eq!(
            next_feed(&[22, 0x99, 0x99, 0x10, 0x00], 0),
            Some((HEADER_LEN, HEADER_LEN + 4096))
        );
    }

    /// The record types in `wire`, one per record.
    fn record_types(mut wire: &[u8]) -> Vec<u8> {
        let mut types = Vec::new();
        while !wire.is_empty() {
            types.push(wire[0]);
            wire = &wire[record_len(wire)..];
        }
        types
    }

    /// A client's answer to the server's whole flight (TLS 1.3: its
    /// ChangeCipherSpec and Finished) leaves in one write. Two writes put the
    /// Finished in a small segment of its own, which Nagle's algorithm holds
    /// until the server's delayed ACK: tens of milliseconds per handshake.
    #[test]
    fn a_client_answers_the_servers_flight_in_one_write() {
        use super::super::transport::Step;
        let (client_config, server_config) = crate::tls::tests::rustls_cfg::localhost_pair();
        let name = ServerName::try_from("localhost").unwrap();
        let client = Box::new(Connection::from(
            ClientConnection::new(client_config, name).unwrap(),
        ));
        let mut server = Connection::from(ServerConnection::new(server_config).unwrap());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());

        let Step::Pending(mut hs) =
            super::Handshake::new(client, Recorder::default(), bytes::Bytes::new()).poll(&mut cx)
        else {
            panic!("the handshake cannot be over before the server answers");
        };
        let hello = hs.io_mut().writes.concat();
        let mut wire = &hello[..];
        while !wire.is_empty() {
            server.read_tls(&mut wire).unwrap();
        }
        server.process_new_packets().unwrap();
        let flight = sealed(&mut server);
        assert!(
            record_types(&flight).len() > 1,
            "the flight is several records"
        );
        hs.io_mut().writes.clear();
        hs.io_mut().input = flight;

        let Step::Done(conn) = hs.poll(&mut cx) else {
            panic!("the server's flight completes the client's handshake");
        };
        let writes = &conn.io.writes;
        assert_eq!(writes.len(), 1, "one write, not {writes:?}");
        // change_cipher_spec (20), then the Finished sealed as application data (23).
        assert_eq!(record_types(&writes[0]), [20, 23]);
    }

    /// A TLS 1.3 server's session tickets wait for its first data and
    /// leave in the same write. Written at the end of the handshake, they
    /// were a segment of their own, and a server that speaks first then
    /// waited for the client's delayed ACK before its first data left
    /// (Nagle's algorithm): tens of milliseconds per connection.
    #[test]
    fn a_server_sends_its_tickets_with_its_first_data() {
        use super::super::transport::Step;
        let (client_config, server_config) = crate::tls::tests::rustls_cfg::localhost_pair();
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = Connection::from(ClientConnection::new(client_config, name).unwrap());
        let server = Box::new(Connection::from(
            ServerConnection::new(server_config).unwrap(),
        ));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());

        let hello = Recorder {
            input: sealed(&mut client),
            ..Recorder::default()
        };
        let Step::Pending(mut hs) =
            super::Handshake::new(server, hello, bytes::Bytes::new()).poll(&mut cx)
        else {
            panic!("the server waits for the client's Finished");
        };
        let flight = hs.io_mut().writes.concat();
        hs.io_mut().writes.clear();
        let mut wire = &flight[..];
        while !wire.is_empty() {
            client.read_tls(&mut wire).unwrap();
        }
        client.process_new_packets().unwrap();
        hs.io_mut().input = sealed(&mut client);

        let Step::Done(mut conn) = hs.poll(&mut cx) else {
            panic!("the client's Finished completes the server's handshake");
        };
        assert!(conn.io.writes.is_empty(), "nothing written at the end");
        assert!(conn.tls.wants_write(), "the tickets are waiting");

        let std::task::Poll::Ready(Ok(2)) = conn.poll_write(&mut cx, b"hi") else {
            panic!("the IO takes the write at once");
        };
        let writes = &conn.io.writes;
        assert_eq!(writes.len(), 1, "one write, not {}", writes.len());
        let records = record_types(&writes[0]);
        assert!(records.len() >= 2, "tickets and data: {records:?}");

        let mut wire = &writes[0][..];
        while !wire.is_empty() {
            client.read_tls(&mut wire).unwrap();
        }
        client.process_new_packets().unwrap();
        let mut got = [0u8; 2];
        client.reader().read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi");
    }

    /// Writes while the IO takes nothing are sealed until rustls's send
    /// buffer is full, then wait. Once the IO takes bytes again, the next
    /// write sends everything sealed before it, then seals its own data.
    #[test]
    fn a_write_into_a_full_send_buffer_waits_for_the_io_then_seals() {
        let (client, mut server) = handshaken();
        let io = Recorder {
            blocked: true,
            ..Recorder::default()
        };
        let mut conn = Conn::new(Box::new(client), io, BytesMut::new());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let data = vec![7u8; 16 * 1024];
        let mut sealed_bytes = 0;
        loop {
            match conn.poll_write(&mut cx, &data) {
                std::task::Poll::Ready(Ok(n)) => {
                    assert!(n > 0, "a write that is told done took bytes");
                    sealed_bytes += n;
                }
                std::task::Poll::Pending => break,
                std::task::Poll::Ready(Err(e)) => panic!("{e}"),
            }
            assert!(sealed_bytes < 1 << 20, "rustls's send buffer is bounded");
        }
        assert!(sealed_bytes > 0 && conn.io.writes.is_empty());

        conn.io.blocked = false;
        let std::task::Poll::Ready(Ok(n)) = conn.poll_write(&mut cx, &data) else {
            panic!("the IO takes everything now");
        };
        assert!(n > 0, "the write sealed its data once the buffer emptied");
        let std::task::Poll::Ready(Ok(())) = conn.poll_flush(&mut cx) else {
            panic!("the IO takes everything now");
        };
        let wire = conn.io.writes.concat();
        let mut wire = &wire[..];
        let mut got = Vec::new();
        while !wire.is_empty() {
            server.read_tls(&mut wire).unwrap();
            server.process_new_packets().unwrap();
            let _ = server.reader().read_to_end(&mut got);
        }
        assert_eq!(got.len(), sealed_bytes + n);
        assert!(got.iter().all(|&b| b == 7));
    }
}
