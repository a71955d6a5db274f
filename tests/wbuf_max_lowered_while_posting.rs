//! An ordinary thread's write that fits the room the inbox was
//! given, racing a `set_wbuf_max` that lowers the cap. In any order the
//! two could take, either the write is refused at the call (ENOSPC there)
//! or it is accepted and stays accepted (OPT-9: checked on every push;
//! RQ-7: only a callback of another connection is told late). Never: the
//! write returns Ok and the connection later closes with ENOSPC although
//! nothing else was pushed.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyframe::{ErrorKind, QueuedFramed};
use tokio::io::AsyncReadExt;

#[test]
fn an_accepted_ordinary_write_is_never_refused_later_by_a_lowered_cap() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let start = Instant::now();
    let mut trials = 0u64;
    let mut found = None;
    'outer: while start.elapsed() < Duration::from_secs(2) {
        let (io, mut peer) = tokio::io::duplex(1 << 20);
        let handle = {
            let _g = rt.enter();
            let (h, _d) = QueuedFramed::builder()
                .wbuf_max(Some(2000))
                .build(io)
                .spawn();
            h
        };
        rt.spawn(async move {
            let mut buf = vec![0u8; 1 << 16];
            while peer.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        });
        for _ in 0..2000 {
            trials += 1;
            rt.block_on(handle.flush()).unwrap();
            handle.set_wbuf_max(Some(2000));
            let barrier = Arc::new(Barrier::new(2));
            let (ha, hb) = (handle.clone(), handle.clone());
            let (ba, bb) = (barrier.clone(), barrier.clone());
            let spin = (trials % 64) as usize * 7;
            let a = std::thread::spawn(move || {
                ba.wait();
                ha.set_wbuf_max(Some(800));
            });
            let b = std::thread::spawn(move || {
                bb.wait();
                for _ in 0..spin {
                    std::hint::spin_loop();
                }
                hb.push_bytes(vec![b'x'; 900])
            });
            a.join().unwrap();
            let pushed = b.join().unwrap();
            // Let the engine take in whatever the inbox holds.
            let _ = rt.block_on(async {
                tokio::time::timeout(Duration::from_millis(500), handle.flush()).await
            });
            let err = handle.error();
            match (&pushed, &err) {
                (Ok(()), Some(e)) if e.kind() == ErrorKind::NoSpace => {
                    found = Some(format!(
                        "trial {trials}: push_bytes returned Ok(()), then the connection closed with {e:?}"
                    ));
                    break 'outer;
                }
                (Ok(()), None) => {}
                (Err(_), _) => continue 'outer, // refused at the call: legitimate, new connection
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert!(
        found.is_none(),
        "{} (after {trials} trials)",
        found.unwrap()
    );
    eprintln!("{trials} trials, no late refusal");
}
