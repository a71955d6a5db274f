//! `serve` under large answers: the loop takes answers from the service
//! only while the output is below the high watermark, so a pipelined
//! burst is answered, not refused at `wbuf_max`.

use std::time::Duration;

use anyframe::codecs::{LineCodec, Utf8Line, Utf8LineCodec};
use anyframe::service::serve;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMIT: Duration = Duration::from_secs(20);

/// `serve` with answers of 1 MiB each, and a client that pipelines 100
/// requests in one write and reads every answer as fast as it can: the
/// loop holds at most `max_in_flight` (128) requests in service, and it
/// should answer all 100, not close the connection.
#[tokio::test]
async fn serve_answers_a_pipelined_burst_of_large_answers_to_a_reading_client() {
    const ANSWER: usize = 1024 * 1024;
    let (server_io, mut client_io) = tokio::io::duplex(1 << 16);
    let big = Bytes::from(vec![b'a'; ANSWER - 1]);
    let svc = tower::service_fn(move |_: Utf8Line| {
        let big = big.clone();
        async move { Ok::<_, std::convert::Infallible>(big) }
    });
    let server = tokio::spawn(serve(server_io, Utf8LineCodec::new(), LineCodec::new(), svc).run());
    let requests = "x\n".repeat(100);
    client_io.write_all(requests.as_bytes()).await.unwrap();
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let read_all = async {
        loop {
            match client_io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
            if got >= 100 * ANSWER {
                break;
            }
        }
    };
    tokio::time::timeout(LIMIT, read_all)
        .await
        .expect("no hang");
    let outcome = if got < 100 * ANSWER {
        Some(
            tokio::time::timeout(LIMIT, server)
                .await
                .expect("loop ends")
                .unwrap(),
        )
    } else {
        None
    };
    assert_eq!(
        got / ANSWER,
        100,
        "only {got} bytes ({} answers) arrived; the loop ended with {outcome:?}",
        got / ANSWER
    );
}
