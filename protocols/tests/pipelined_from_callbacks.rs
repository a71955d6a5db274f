//! A pipelined client used from another connection's callback (a proxy
//! forwarding requests to its backend): sending queues work at the back,
//! which never waits for the client connection's engine (RQ-7). Every wait
//! is bounded.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use anyframe::QueuedFramed;
use anyframe::codecs::LineCodec;
use anyframe_protocols::pipeline::Pipelined;
use anyframe_protocols::redis::{Cmd, Resp};
use tokio::io::AsyncWriteExt;

#[path = "../../tests/support/watched.rs"]
mod watched;
use watched::meet;

/// A's read completion sends a request through a pipelined client on B
/// (its first: no reply owed) while B's own callback asks A for its state
/// (which RQ-7 allows to wait for A's engine). The send must queue without
/// waiting for B's engine, as every other call that queues work does:
/// both callbacks complete.
#[test]
fn a_first_send_from_another_connections_callback_does_not_wait_for_the_client_engine() {
    let out = watched::on_two_workers(Duration::from_secs(20), || async {
        let (a_io, mut a_peer) = tokio::io::duplex(1 << 16);
        let (b_io, mut b_peer) = tokio::io::duplex(1 << 16);
        let (a, _a_driver) = QueuedFramed::builder().build(a_io).spawn();
        let (b, _b_driver) = QueuedFramed::builder()
            .rtimeout(Duration::from_secs(30))
            .build(b_io)
            .spawn();
        let client = Pipelined::new(b.clone(), Resp::new(), 8);
        let arrived = Arc::new(AtomicUsize::new(0));
        let arrived_a = arrived.clone();
        let a_read = a.push_read_with(LineCodec::new(), move |_, _| {
            meet(&arrived_a, 2);
            drop(client.send(Cmd::new("PING")));
            Ok(())
        });
        let a2 = a.clone();
        let b_read = b.push_read_with(LineCodec::new(), move |_, _| {
            meet(&arrived, 2);
            let _ = a2.write_buffered();
            Ok(())
        });
        a_peer.write_all(b"go\n").await.unwrap();
        b_peer.write_all(b"go\n").await.unwrap();
        let a_out = tokio::time::timeout(Duration::from_secs(5), a_read).await;
        let b_out = tokio::time::timeout(Duration::from_secs(5), b_read).await;
        let kind = |r: Result<anyframe::Result<_>, _>| match r {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("{:?}: {e}", e.kind())),
            Err(_) => Err("timed out".to_owned()),
        };
        (kind(a_out), kind(b_out))
    })
    .expect("both callbacks finish (a deadlock leaves the runtime stuck)");
    assert_eq!(out, (Ok(()), Ok(())), "(A's completion, B's completion)");
}
