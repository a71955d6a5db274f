//! Lines: AnyEvent's `line` read type and its write type.
//!
//! A line is everything before the first end of line (EOL); the frame carries
//! the line *and* the EOL that ended it, as the Perl callback gets both. Three
//! kinds of EOL exist:
//!
//! * **default**: `\r?\n`. The LF ends the line; a CR directly before it
//!   belongs to the EOL, a CR anywhere else stays in the line (RT-line-1).
//! * **literal bytes** (`LineCodecBuilder::eol`): the first occurrence,
//!   found across reads however the EOL itself was split (RT-line-2).
//! * **regex** (`LineCodecBuilder::eol_regex`): the shortest prefix followed
//!   by a match, as AE's `^(.*?)(EOL)` (RT-line-3). This one depends on how
//!   the input was split; see [`LineCodecBuilder::eol_regex`].
//!
//! [`LineCodec`] hands out [`Line`]s of [`Bytes`] split off the read buffer;
//! [`Utf8LineCodec`] hands out [`Utf8Line`]s holding one `String`.
//!
//! Layout: `eol` finds where a line ends (one scanner per kind of EOL, with
//! its own tests); `frame` holds the two frame types; `codec` the byte
//! decoder and the encoder; `utf8` the text decoder; `builder` the options
//! and their checks. [`LineBatchCodec`](crate::LineBatchCodec) frames the
//! same lines with the same scanners.

mod builder;
mod codec;
pub(crate) mod eol;
mod frame;
mod utf8;

pub use builder::LineCodecBuilder;
pub use codec::{LineCodec, OverflowPolicy};
pub use frame::{Line, Utf8Line};
pub use utf8::Utf8LineCodec;

const CODEC: &str = "line";

/// The default limit on the length of one line (EOL excluded): 1 MiB.
///
/// Text protocols keep lines far shorter (SMTP allows 1000 bytes, HTTP header
/// lines a few KiB) and JSON-lines records seldom pass a few hundred KiB, so
/// 1 MiB lets all of them through, while a peer that never sends an end of
/// line can make one connection buffer at most about 1 MiB.
pub const DEFAULT_LINE_MAX_LENGTH: usize = 1024 * 1024;

/// What the write side appends when no terminator is configured and the EOL
/// is the default `\r?\n`: a bare LF, like AE users' `"\n"`.
const DEFAULT_WRITE_TERMINATOR: &[u8] = b"\n";
