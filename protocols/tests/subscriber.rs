//! The Redis `Subscriber` on its failure paths: the end after a fatal
//! error, and timeouts while values wait unread.

mod support;

use anyframe::{ErrorKind, QueuedFramed};
use anyframe_protocols::redis::{Subscriber, Value};
use support::{LIMIT, MS};
use tokio::io::AsyncWriteExt;

/// `next` promises `None` after the connection failed and its (fatal)
/// error was returned. The peer closes the connection: the fatal error
/// comes, then the stream must end.
#[tokio::test(start_paused = true)]
async fn subscriber_next_ends_after_the_fatal_error() {
    let (io, peer) = tokio::io::duplex(1 << 16);
    let (handle, _driver) = QueuedFramed::builder().rtimeout(MS(300)).build(io).spawn();
    let mut sub = Subscriber::new(handle.clone());
    drop(handle);
    drop(peer);
    let first = tokio::time::timeout(LIMIT, sub.next())
        .await
        .expect("the fatal error never came");
    let e = first.expect("an item").unwrap_err();
    assert!(e.is_fatal(), "{e}");
    let after = tokio::time::timeout(LIMIT, sub.next()).await;
    assert!(
        matches!(after, Ok(None)),
        "after the fatal error, next() gave {after:?} (Err(Elapsed): it never ends)"
    );
}

/// The same without any timer set: the hook is installed all the same.
#[tokio::test(start_paused = true)]
async fn subscriber_next_ends_after_the_fatal_error_without_timers() {
    let (io, mut peer) = tokio::io::duplex(1 << 16);
    let (handle, _driver) = QueuedFramed::new(io).spawn();
    let mut sub = Subscriber::new(handle);
    peer.write_all(b"*1\r\n:1\r\n").await.unwrap();
    let v = tokio::time::timeout(LIMIT, sub.next()).await.unwrap();
    assert_eq!(v.unwrap().unwrap(), Value::Array(vec![Value::Integer(1)]));
    drop(peer);
    let e = tokio::time::timeout(LIMIT, sub.next())
        .await
        .unwrap()
        .expect("an item")
        .unwrap_err();
    assert!(e.is_fatal(), "{e}");
    let after = tokio::time::timeout(LIMIT, sub.next()).await;
    assert!(
        matches!(after, Ok(None)),
        "after the fatal error, next() gave {after:?} (Err(Elapsed): it never ends)"
    );
}

/// 64 values unread, timeouts keep coming; the
/// messages are neither lost nor reordered once the caller reads.
#[tokio::test(start_paused = true)]
async fn a_full_channel_keeps_every_message_in_order() {
    let (io, mut peer) = tokio::io::duplex(1 << 20);
    let (handle, _driver) = QueuedFramed::builder().rtimeout(MS(100)).build(io).spawn();
    let mut sub = Subscriber::new(handle.clone());
    for i in 0..100 {
        peer.write_all(format!("*1\r\n:{i}\r\n").as_bytes())
            .await
            .unwrap();
    }
    tokio::time::sleep(MS(5000)).await;
    let mut ints = Vec::new();
    let mut timeouts = 0;
    while ints.len() < 100 {
        match tokio::time::timeout(LIMIT, sub.next())
            .await
            .unwrap()
            .unwrap()
        {
            Ok(Value::Array(v)) => {
                let Value::Integer(i) = v[0] else { panic!() };
                ints.push(i)
            }
            Ok(v) => panic!("{v:?}"),
            Err(e) => {
                assert_eq!((e.kind(), e.is_fatal()), (ErrorKind::TimedOut, false));
                timeouts += 1;
            }
        }
    }
    assert_eq!(ints, (0..100).collect::<Vec<_>>());
    assert!(!handle.is_closed());
    eprintln!("timeouts seen: {timeouts}");
}
