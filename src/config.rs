//! Handle options and their builder.

use std::time::Duration;

pub use crate::queued::watermark::{DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER};

/// First read size. hyper starts its adaptive reads at 8 KiB too: one page
/// pair, enough for a typical request, small for an idle connection.
pub const DEFAULT_READ_SIZE: usize = 8 * 1024;

/// Largest read size the adaptive sizing grows to ([OPT-10](crate::semantics#OPT-10); AnyEvent's
/// default too). Large reads amortise syscalls on bulk transfers.
pub const DEFAULT_MAX_READ_SIZE: usize = 128 * 1024;

/// Default cap on unconsumed input (`rbuf_max`). AnyEvent has none; we want
/// every buffer bounded by default. 64 MiB holds any frame the codecs accept
/// by default (16 MiB) several times over; lower it for exposed servers.
pub const DEFAULT_RBUF_MAX: usize = 64 * 1024 * 1024;

/// Default cap on queued output (`wbuf_max`), for the same reason.
pub const DEFAULT_WBUF_MAX: usize = 64 * 1024 * 1024;

/// Default `linger` ([LC-3](crate::semantics#LC-3)): how long a connection closed cleanly with
/// output still queued keeps writing it in the background. AnyEvent waits
/// an hour; a tokio program expects a dropped connection to be gone soon, and
/// a peer that stops reading would otherwise hold the task and its buffers
/// for that hour. Thirty seconds delivers the last answers to any peer that
/// is still reading. After an error toward the peer (transport, TLS,
/// `wbuf_max`) or a panicking callback there is no linger at all.
pub const DEFAULT_LINGER: Duration = Duration::from_secs(30);

/// The largest read size a handle uses, whatever it is configured to: one
/// read never reserves more than this (16 MiB).
pub const MAX_READ_SIZE_LIMIT: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) read_size: usize,
    pub(crate) max_read_size: usize,
    pub(crate) rbuf_max: Option<usize>,
    pub(crate) wbuf_max: Option<usize>,
    pub(crate) linger: Duration,
    pub(crate) timeout: Duration,
    pub(crate) rtimeout: Duration,
    pub(crate) wtimeout: Duration,
    pub(crate) high_water: usize,
    pub(crate) low_water: usize,
    pub(crate) autocork: bool,
    /// `None`: leave the OS setting.
    pub(crate) no_delay: Option<bool>,
    /// `None`: leave the OS setting.
    pub(crate) keepalive: Option<bool>,
    pub(crate) oobinline: bool,
    pub(crate) connect_timeout: Option<Duration>,
}

impl Config {
    /// Brings absurd settings into range instead of failing later: read
    /// sizes are at most [`MAX_READ_SIZE_LIMIT`] (a `read_size(usize::MAX)`
    /// would otherwise try to allocate it).
    pub(crate) fn clamp(&mut self) {
        self.read_size = self.read_size.clamp(1, MAX_READ_SIZE_LIMIT);
        self.max_read_size = self
            .max_read_size
            .clamp(self.read_size, MAX_READ_SIZE_LIMIT);
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            read_size: DEFAULT_READ_SIZE,
            max_read_size: DEFAULT_MAX_READ_SIZE,
            rbuf_max: Some(DEFAULT_RBUF_MAX),
            wbuf_max: Some(DEFAULT_WBUF_MAX),
            linger: DEFAULT_LINGER,
            timeout: Duration::ZERO,
            rtimeout: Duration::ZERO,
            wtimeout: Duration::ZERO,
            high_water: DEFAULT_HIGH_WATER,
            low_water: DEFAULT_LOW_WATER,
            autocork: false,
            no_delay: None,
            keepalive: None,
            oobinline: true,
            connect_timeout: None,
        }
    }
}

/// Options for a [`QueuedFramed`](crate::QueuedFramed).
///
/// Setters take and return `&mut Self`, as tokio-util's
/// `length_delimited::Builder` does.
///
/// # Examples
///
/// ```
/// use anyframe::QueuedFramed;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let (io, _peer) = tokio::io::duplex(64);
/// let framed = QueuedFramed::builder()
///     .read_size(4096)
///     .rbuf_max(Some(1 << 20))
///     .wbuf_max(Some(1 << 20))
///     .build(io);
/// assert!(framed.read_buffer().is_empty());
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Builder {
    pub(crate) cfg: Config,
    autocork_chosen: bool,
    pub(crate) retry: Option<crate::connect::RetryHook>,
    #[cfg(any(feature = "tls", feature = "rustls"))]
    pub(crate) tls: Option<crate::tls::TlsMode>,
}

impl Builder {
    /// A builder with the defaults.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// The first read size (default [`DEFAULT_READ_SIZE`]). A read that fills
    /// it doubles it, up to [`max_read_size`](Self::max_read_size). A start
    /// larger than the maximum raises the maximum ([OPT-10](crate::semantics#OPT-10)).
    pub fn read_size(&mut self, n: usize) -> &mut Self {
        self.cfg.read_size = n.max(1);
        if self.cfg.read_size > self.cfg.max_read_size {
            self.cfg.max_read_size = self.cfg.read_size;
        }
        self
    }

    /// The largest adaptive read size (default [`DEFAULT_MAX_READ_SIZE`]):
    /// the room each read makes at least. A read fills whatever spare
    /// room the buffer already has ([OPT-10](crate::semantics#OPT-10)), so one
    /// read may be larger.
    pub fn max_read_size(&mut self, n: usize) -> &mut Self {
        self.cfg.max_read_size = n.max(self.cfg.read_size);
        self
    }

    /// Cap on unconsumed input (default [`DEFAULT_RBUF_MAX`]; `None` =
    /// unbounded, which a hostile peer can exploit). A read takes at most
    /// the room left under it, so frames nobody has asked for yet never
    /// push a peer over it; when the request at the head of the queue has
    /// seen this many bytes and still needs more, the handle fails with
    /// fatal `ENOSPC` ([OPT-8](crate::semantics#OPT-8)).
    pub fn rbuf_max(&mut self, max: Option<usize>) -> &mut Self {
        self.cfg.rbuf_max = max;
        self
    }

    /// Cap on queued output, checked on every push; a push that would take
    /// the queue over it fails and the handle dies with fatal `ENOSPC`
    /// (default [`DEFAULT_WBUF_MAX`]). An item longer than the whole cap is
    /// refused instead, with a non-fatal `EINVAL` and nothing queued
    /// ([OPT-9](crate::semantics#OPT-9)).
    /// The high watermark is held at most at half the cap (see
    /// [`watermarks`](Self::watermarks)).
    pub fn wbuf_max(&mut self, max: Option<usize>) -> &mut Self {
        self.cfg.wbuf_max = max;
        self
    }

    /// How long a spawned connection closed cleanly (all its handles
    /// dropped, or `destroy`) keeps writing its queued output in the
    /// background ([LC-3](crate::semantics#LC-3); default [`DEFAULT_LINGER`]; zero discards it at
    /// once). A connection closed by an error toward the peer does not
    /// linger. It also bounds an inline connection's `flush` after an error
    /// of its input side ([LC-5](crate::semantics#LC-5)).
    ///
    /// Like the timeouts, the period is a tokio timer: a runtime built
    /// without its time driver (`enable_time`, which `enable_all` and
    /// `#[tokio::main]` include) panics when the peer makes a lingering
    /// write wait, as `tokio::time::sleep` does.
    pub fn linger(&mut self, linger: Duration) -> &mut Self {
        self.cfg.linger = linger;
        self
    }

    /// Idle timeout (`timeout`, [TO-1](crate::semantics#TO-1)): no read and no write for this long
    /// gives a non-fatal `ETIMEDOUT` (or runs the `on_timeout` hook), again
    /// every period while idle. Zero (the default) turns it off.
    pub fn timeout(&mut self, period: Duration) -> &mut Self {
        self.cfg.timeout = period;
        self
    }

    /// Read timeout (`rtimeout`): no read of more than 0 bytes for this long.
    pub fn rtimeout(&mut self, period: Duration) -> &mut Self {
        self.cfg.rtimeout = period;
        self
    }

    /// Write timeout (`wtimeout`): no write for this long (fires even with
    /// nothing to write, as in AnyEvent).
    pub fn wtimeout(&mut self, period: Duration) -> &mut Self {
        self.cfg.wtimeout = period;
        self
    }

    /// Write watermarks ([OPT-5](crate::semantics#OPT-5), [OPT-11](crate::semantics#OPT-11)): above `high` queued bytes, producers
    /// (`Sink::poll_ready`, `ready_to_write`) wait until the queue falls to
    /// `low`, which is also when the drain notification fires. Defaults
    /// [`DEFAULT_HIGH_WATER`] and [`DEFAULT_LOW_WATER`]. With a
    /// [`wbuf_max`](Self::wbuf_max), `high` is at most half of it, so a
    /// producer that waits for readiness is held back before an item of up
    /// to that size could cross the cap. A `low` above `high` is taken as
    /// `high`.
    pub fn watermarks(&mut self, high: usize, low: usize) -> &mut Self {
        self.cfg.high_water = high;
        self.cfg.low_water = low.min(high);
        self
    }

    /// Autocork ([OPT-12](crate::semantics#OPT-12); default off). Off: queued output is written as soon
    /// as the handle runs. On: held until the handle would otherwise wait
    /// (or 64 KiB are queued), then written in one (vectored) write: fewer
    /// syscalls and packets for many small writes, a little more latency.
    pub fn autocork(&mut self, on: bool) -> &mut Self {
        self.cfg.autocork = on;
        self.autocork_chosen = true;
        self
    }

    /// Whether [`autocork`](Self::autocork) was called: a front end with a
    /// different default (the server loop) keeps its own otherwise.
    #[cfg(feature = "tower")]
    pub(crate) fn autocork_chosen(&self) -> bool {
        self.autocork_chosen
    }

    /// `TCP_NODELAY` ([OPT-13](crate::semantics#OPT-13)) for TCP transports built with
    /// [`build_tcp`](Self::build_tcp) or [`connect`](Self::connect); not
    /// applied by the other `build` methods (nor by the server loop), which
    /// take any transport and log a warning when it is set. Unset by default: the socket keeps the OS's
    /// setting (off for a new socket); set, it is switched on or off.
    pub fn no_delay(&mut self, on: bool) -> &mut Self {
        self.cfg.no_delay = Some(on);
        self
    }

    /// `SO_KEEPALIVE` ([OPT-14](crate::semantics#OPT-14)), as [`no_delay`](Self::no_delay).
    pub fn keepalive(&mut self, on: bool) -> &mut Self {
        self.cfg.keepalive = Some(on);
        self
    }

    /// `SO_OOBINLINE` ([OPT-15](crate::semantics#OPT-15)): urgent data arrives in line. On by default,
    /// as in AnyEvent. Like [`no_delay`](Self::no_delay), applied only to
    /// TCP transports built with [`build_tcp`](Self::build_tcp) or
    /// [`connect`](Self::connect) (and `spawn_connect`); the other `build`
    /// methods leave the socket as it is, and log no warning for this one.
    pub fn oobinline(&mut self, on: bool) -> &mut Self {
        self.cfg.oobinline = on;
        self
    }

    /// Per-address connect timeout for [`connect`](Self::connect). Zero
    /// (the default) turns it off, as for every other timeout: the OS's
    /// own timeout applies. An attempt that times out fails like any other
    /// (the next address is tried, if the retry hook agrees). When every
    /// address failed, `connect` returns
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) with the last attempt's
    /// `io::Error` as [`io_error`](crate::Error::io_error), of kind
    /// `TimedOut` if that attempt timed out: never the `TimedOut` kind of
    /// the connection's own timers.
    pub fn connect_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.cfg.connect_timeout = (!timeout.is_zero()).then_some(timeout);
        self
    }

    /// Starts TLS as soon as the handle runs (AE's `tls => "connect"` /
    /// `"accept"`, [OPT-18](crate::semantics#OPT-18)): for a connect, before any queued read or write.
    #[cfg(any(feature = "tls", feature = "rustls"))]
    pub fn tls(&mut self, mode: impl Into<crate::tls::TlsMode>) -> &mut Self {
        self.tls = Some(mode.into());
        self
    }

    /// The engine state for a new handle, with TLS requested if configured.
    pub(crate) fn new_core(&self) -> crate::queued::core::Core {
        #[allow(unused_mut)]
        let mut core = crate::queued::core::Core::new(self.cfg.clone());
        #[cfg(any(feature = "tls", feature = "rustls"))]
        if let Some(mode) = &self.tls {
            // A failed handshake destroys the handle; every request sees it.
            drop(core.request_starttls(mode.clone(), true));
        }
        core
    }

    /// Builds a handle over `io` with no default codec.
    ///
    /// `io` is any transport, so the socket options
    /// ([`no_delay`](Self::no_delay), [`keepalive`](Self::keepalive),
    /// [`oobinline`](Self::oobinline)) are not applied here (a warning is
    /// logged if `no_delay` or `keepalive` was set): use
    /// [`build_tcp`](Self::build_tcp), or set them on the socket first.
    pub fn build<IO>(&self, io: IO) -> crate::QueuedFramed<IO>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        self.warn_socket_options_unapplied();
        crate::QueuedFramed::from_core(io, (), self.new_core())
    }

    /// Builds a handle over `io` whose `Stream`/`Sink` use `codec`
    /// (socket options as for [`build`](Self::build)).
    pub fn build_with_codec<IO, C>(&self, io: IO, codec: C) -> crate::QueuedFramed<IO, C>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        self.warn_socket_options_unapplied();
        crate::QueuedFramed::from_core(io, codec, self.new_core())
    }

    /// Socket options set on a builder whose transport they cannot reach
    /// are said, not dropped in silence.
    fn warn_socket_options_unapplied(&self) {
        if self.cfg.no_delay.is_some() || self.cfg.keepalive.is_some() {
            tracing::warn!(
                no_delay = ?self.cfg.no_delay,
                keepalive = ?self.cfg.keepalive,
                "socket options not applied: this transport is not built by \
                 Builder::build_tcp or Builder::connect (set them on the socket)"
            );
        }
    }

    /// Rebuilds a handle from [`Parts`](crate::Parts) with these options,
    /// as [`QueuedFramed::from_parts`](crate::QueuedFramed::from_parts) does
    /// with the defaults: unread bytes are read first, unwritten bytes are
    /// written first. ([`Parts`](crate::Parts) carries no options: a handle
    /// taken apart and put back with `from_parts` has the default caps and
    /// timeouts.) With [`tls`](Self::tls), the unwritten bytes go out
    /// before the handshake, in plaintext (they were queued before it,
    /// [TLS-2](crate::semantics#TLS-2)), [`after_switch`](crate::Parts::after_switch) after it, and
    /// the unread bytes are the start of the peer's handshake ([OPT-18](crate::semantics#OPT-18)).
    pub fn build_from_parts<IO, C>(&self, parts: crate::Parts<IO, C>) -> crate::QueuedFramed<IO, C>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        self.warn_socket_options_unapplied();
        crate::QueuedFramed::from_parts_with(parts, self.new_core())
    }
}
