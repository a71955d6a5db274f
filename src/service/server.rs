//! The server loop: read requests, call the service with several in flight,
//! write the responses in request order.

use std::fmt;
use std::future::{Future, IntoFuture, poll_fn};
use std::pin::Pin;
use std::task::Poll;

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Decoder, Encoder};
use tower_service::Service;

use crate::config::Builder;
use crate::error::{Error, ErrorKind, Result};
use crate::queued::OrEof;

/// Default bound on requests being served at once per connection: enough to
/// keep a pipelining client's window full, bounded so that one connection
/// cannot queue unbounded work.
pub const DEFAULT_SERVE_IN_FLIGHT: usize = 128;

type ErrorMap<Resp, SErr> = Box<dyn FnMut(SErr) -> Option<Resp> + Send>;

/// A server loop over one connection, made by [`serve`]; configure it, then
/// `.await` it.
///
/// It reads requests with the request decoder, calls the service with up to
/// `max_in_flight` requests outstanding (respecting `poll_ready`), and writes
/// the responses with the response encoder **in request order**, coalescing
/// the writes (autocork). It ends cleanly at end of input between requests
/// or when the shutdown future resolves, after answering every request it
/// has read.
#[must_use = "a server loop does nothing unless awaited"]
pub struct ServeOptions<IO, D, E, S, Req>
where
    S: Service<Req>,
{
    io: IO,
    decoder: D,
    encoder: E,
    service: S,
    max_in_flight: usize,
    shutdown: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    on_error: Option<ErrorMap<S::Response, S::Error>>,
    builder: Builder,
}

/// Serves `service` on `io`: see [`ServeOptions`].
///
/// # Examples
///
/// ```
/// use anyframe::QueuedFramed;
/// use anyframe::codecs::{LineCodec, Utf8LineCodec};
/// use anyframe::service::serve;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> anyframe::Result<()> {
/// let (server_io, client_io) = tokio::io::duplex(1024);
/// let upper = tower::service_fn(|line: anyframe::codecs::Utf8Line| async move {
///     Ok::<_, std::convert::Infallible>(line.line().to_uppercase())
/// });
/// let server = tokio::spawn(serve(server_io, Utf8LineCodec::new(), LineCodec::new(), upper).into_future());
///
/// let mut client = QueuedFramed::new(client_io);
/// client.write(LineCodec::new(), "hello").await?;
/// assert_eq!(client.read(LineCodec::new()).await?.line(), b"HELLO");
/// client.shutdown_write().await?;
/// server.await.unwrap()?;
/// # Ok(()) }
/// ```
pub fn serve<IO, D, E, S, Req>(
    io: IO,
    decoder: D,
    encoder: E,
    service: S,
) -> ServeOptions<IO, D, E, S, Req>
where
    S: Service<Req>,
{
    let mut builder = Builder::new();
    builder.autocork(true);
    ServeOptions {
        io,
        decoder,
        encoder,
        service,
        max_in_flight: DEFAULT_SERVE_IN_FLIGHT,
        shutdown: None,
        on_error: None,
        builder,
    }
}

impl<IO, D, E, S, Req> ServeOptions<IO, D, E, S, Req>
where
    S: Service<Req>,
{
    /// Requests served at once (default [`DEFAULT_SERVE_IN_FLIGHT`]); 1 means
    /// strictly one at a time.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Stops reading new requests when `signal` resolves; requests already
    /// read are still answered.
    pub fn with_shutdown(mut self, signal: impl Future<Output = ()> + Send + 'static) -> Self {
        self.shutdown = Some(Box::pin(signal));
        self
    }

    /// Maps a service error to a response (`Some`) or closes the connection
    /// after the responses before it (`None`, also the default).
    pub fn map_errors(
        mut self,
        f: impl FnMut(S::Error) -> Option<S::Response> + Send + 'static,
    ) -> Self {
        self.on_error = Some(Box::new(f));
        self
    }

    /// Connection options (timeouts, caps, watermarks). Autocork is on by
    /// default for the server loop.
    pub fn connection(mut self, builder: Builder) -> Self {
        self.builder = builder;
        self
    }
}

/// What woke the loop.
enum Event<Req, Resp, SErr> {
    /// The next request, `None` at a clean end of input.
    Request(Result<Option<Req>>),
    /// A request was handed to the service.
    Called,
    /// The service failed `poll_ready`.
    NotReady(SErr),
    Response(std::result::Result<Resp, SErr>),
    Shutdown,
}

impl<IO, D, E, S, Req> ServeOptions<IO, D, E, S, Req>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    D: Decoder<Item = Req> + Clone + Send + 'static,
    D::Error: Into<Error>,
    Req: Send + 'static,
    E: Encoder<S::Response> + Clone,
    E::Error: Into<Error>,
    S: Service<Req>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Runs the loop until the peer closes between requests or the shutdown
    /// signal fires.
    ///
    /// # Errors
    ///
    /// A fatal connection error; a request the decoder rejects (after the
    /// responses before it are written); a service error that
    /// [`map_errors`](Self::map_errors) did not turn into a response.
    pub async fn run(self) -> Result<()> {
        let ServeOptions {
            io,
            decoder,
            encoder,
            mut service,
            max_in_flight,
            mut shutdown,
            mut on_error,
            builder,
        } = self;
        let (handle, driver) = builder.build(io).spawn();
        let mut in_flight = FuturesOrdered::new();
        let mut next = Some(handle.push_read(OrEof::new(decoder.clone())));
        // A request read but not yet accepted by `poll_ready`.
        let mut waiting: Option<Req> = None;
        let mut outcome: Result<()> = Ok(());
        loop {
            let reading = next.is_some() || waiting.is_some();
            if !reading && in_flight.is_empty() {
                break;
            }
            // Responses, readiness and requests are polled together, so a
            // service that is not ready (all its slots busy) still sees its
            // in-flight futures driven.
            let event = poll_fn(|cx| {
                if !in_flight.is_empty()
                    && let Poll::Ready(Some(r)) = in_flight.poll_next_unpin(cx)
                {
                    return Poll::Ready(Event::Response(r));
                }
                if let Some(req) = waiting.take() {
                    match service.poll_ready(cx) {
                        Poll::Ready(Ok(())) => {
                            in_flight.push_back(service.call(req));
                            return Poll::Ready(Event::Called);
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(Event::NotReady(e)),
                        Poll::Pending => waiting = Some(req),
                    }
                } else if let Some(t) = next.as_mut()
                    && in_flight.len() < max_in_flight
                    && let Poll::Ready(r) = Pin::new(t).poll(cx)
                {
                    return Poll::Ready(Event::Request(r));
                }
                if reading
                    && let Some(s) = shutdown.as_mut()
                    && s.as_mut().poll(cx).is_ready()
                {
                    return Poll::Ready(Event::Shutdown);
                }
                Poll::Pending
            })
            .await;
            match event {
                Event::Response(Ok(resp)) => handle.push_write(encoder.clone(), resp)?,
                Event::Response(Err(e)) => {
                    let (resp, why) = match on_error.as_mut() {
                        Some(map) => (
                            map(e),
                            Error::custom(ErrorKind::Io, true, "service error: closing"),
                        ),
                        None => (None, Error::custom(ErrorKind::Io, true, e)),
                    };
                    match resp {
                        Some(resp) => handle.push_write(encoder.clone(), resp)?,
                        None => {
                            // Close after the responses before this one.
                            next = None;
                            waiting = None;
                            in_flight.clear();
                            if outcome.is_ok() {
                                outcome = Err(why);
                            }
                        }
                    }
                }
                Event::Called => {}
                Event::NotReady(e) => {
                    next = None;
                    outcome = Err(Error::custom(ErrorKind::Io, true, e));
                }
                Event::Request(Ok(Some(req))) => {
                    waiting = Some(req);
                    // Pipelining: the next read is queued at once.
                    next = Some(handle.push_read(OrEof::new(decoder.clone())));
                }
                Event::Request(Ok(None)) => next = None,
                Event::Request(Err(e)) => {
                    tracing::debug!(error = %e, "server loop stops reading");
                    next = None;
                    outcome = Err(e);
                }
                Event::Shutdown => {
                    tracing::debug!("server loop shutting down");
                    next = None;
                    waiting = None;
                }
            }
        }
        drop(next);
        let flushed = handle.flush().await;
        if !handle.is_destroyed() {
            let _ = handle.push_shutdown();
            let _ = handle.flush().await;
        }
        handle.detach();
        drop(handle);
        let _ = driver.await;
        outcome.and(flushed)
    }
}

impl<IO, D, E, S, Req> IntoFuture for ServeOptions<IO, D, E, S, Req>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    D: Decoder<Item = Req> + Clone + Send + 'static,
    D::Error: Into<Error>,
    Req: Send + 'static,
    E: Encoder<S::Response> + Clone + Send + 'static,
    E::Error: Into<Error>,
    S: Service<Req> + Send + 'static,
    S::Future: Send,
    S::Response: Send,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    type Output = Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

impl<IO, D, E, S, Req> fmt::Debug for ServeOptions<IO, D, E, S, Req>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeOptions")
            .field("max_in_flight", &self.max_in_flight)
            .finish_non_exhaustive()
    }
}
