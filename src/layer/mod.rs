//! Layers the core consults at fixed points of its poll loop: timers
//! (TO-1…TO-5) and the write watermarks (OPT-5). See ARCHITECTURE.md.

pub(crate) mod timeout;
pub(crate) mod watermark;
