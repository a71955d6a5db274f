//! `Pipelined` and the protocol clients against user code that fails in
//! the middle of a call, and scripted peers that misbehave.

mod support;

use std::panic::AssertUnwindSafe;

use anyframe::codecs::LineCodec;
use anyframe::{Handle, Result, Ticket};
use anyframe_protocols::pipeline::{Pipelined, Protocol, Slot, Step};
use bytes::{BufMut, Bytes, BytesMut};
use support::{LIMIT, pipe, take_commands};
use tokio::io::AsyncWriteExt;

/// One line out, one line back; `read_reply` panics for the request
/// `"boom"` (a bug in the protocol's own code).
struct Lines;

impl Protocol for Lines {
    type Request = &'static str;
    type Reply = Bytes;

    fn encode(&self, req: &&'static str, dst: &mut BytesMut) -> Result<()> {
        dst.put_slice(req.as_bytes());
        dst.put_slice(b"\n");
        Ok(())
    }

    fn read_reply(&self, req: &&'static str, handle: &Handle, slot: Slot) -> Ticket<Step<Bytes>> {
        assert_ne!(*req, "boom", "read_reply panics for boom");
        handle.push_response_with(LineCodec::new(), move |line, _| {
            drop(slot);
            Ok(Step::Done(line.into_line()))
        })
    }
}

/// A request whose reply read was never queued (its `read_reply`
/// panicked after the request was written) must not leave its answer for
/// the next request to take: that request gets its own answer, or an
/// error, never the other one's.
#[tokio::test]
async fn a_read_reply_that_panics_never_hands_its_answer_to_the_next_request() {
    let (handle, mut peer) = pipe();
    let c = Pipelined::new(handle, Lines, 16);
    let panicked = std::panic::catch_unwind(AssertUnwindSafe(|| c.send("boom")));
    assert!(panicked.is_err(), "read_reply panicked");
    let next = c.send("next");
    take_commands(&mut peer).await;
    // The peer answers both requests it may have got, in order.
    let _ = peer.write_all(b"answer to boom\nanswer to next\n").await;
    let got = tokio::time::timeout(LIMIT, next)
        .await
        .expect("the next request's reply never resolved");
    if let Ok(line) = got {
        assert_eq!(
            &line[..],
            b"answer to next",
            "the next request took another's answer"
        );
    }
}
