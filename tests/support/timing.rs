//! Helpers for the timer tests: a wait that gives up at a deadline, a
//! bound on a whole test, and a decoder that begins a frame and never
//! ends it.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use bytes::BytesMut;
use tokio_util::codec::Decoder;

/// `Err(())` if `fut` is not ready by `limit`; the deadline is checked
/// first, so the timer's own wake-up cannot complete `fut`.
pub async fn within<F: Future>(limit: Duration, fut: F) -> Result<F::Output, ()> {
    tokio::select! {
        biased;
        _ = tokio::time::sleep(limit) => Err(()),
        out = fut => Ok(out),
    }
}

/// Runs a test's body; a hang fails the test instead of stalling the run.
pub async fn bounded<F: Future<Output = ()>>(body: F) {
    tokio::time::timeout(Duration::from_secs(10), body)
        .await
        .expect("test hung");
}

/// A decoder that takes every byte and never completes: a read whose
/// frame has begun, which reads on for nobody once its caller gives up.
pub struct Eater;

impl Decoder for Eater {
    type Item = ();
    type Error = anyframe::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<()>, anyframe::Error> {
        let _ = src.split();
        Ok(None)
    }
}
