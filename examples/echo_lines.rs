//! A line echo server with sensible limits: `rbuf_max`, `wbuf_max`, an idle
//! timeout and a line length limit, so a slow or hostile client cannot make
//! it buffer without bound or hold a connection forever.
//!
//! ```sh
//! cargo run --example echo_lines                          # server + client
//! cargo run --example echo_lines -- --listen 127.0.0.1:7000
//! # then e.g.: printf 'hello\r\nworld\n' | nc 127.0.0.1 7000
//! ```

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use anyframe::codecs::LineCodec;
use anyframe::{ErrorKind, OrEof, QueuedFramed};

async fn serve_one(sock: tokio::net::TcpStream) {
    let peer = sock.peer_addr().ok();
    let mut conn = QueuedFramed::builder()
        .rbuf_max(Some(64 * 1024)) // unconsumed input
        .wbuf_max(Some(256 * 1024)) // a client that does not read
        .timeout(Duration::from_secs(30)) // idle: no read, no write
        .no_delay(true)
        .build_tcp(sock)
        .expect("socket options");
    // `OrEof`: the client closing between lines is a clean end (`None`),
    // which leaves the write side open for the answers still queued; a
    // plain read would take it as a fatal `EPIPE` and close both sides.
    let mut lines = OrEof::new(
        LineCodec::builder()
            .max_length(8 * 1024)
            .build()
            .expect("codec"),
    );
    loop {
        match conn.read_with(&mut lines).await {
            Ok(Some(line)) => {
                if conn.push_write(LineCodec::new(), line.line()).is_err() {
                    break; // wbuf_max: the client stopped reading
                }
            }
            Ok(None) => break, // clean close
            Err(e) if e.kind() == ErrorKind::TimedOut => {
                println!("{peer:?}: idle, closing");
                break;
            }
            Err(e) => {
                println!("{peer:?}: {e}");
                break;
            }
        }
    }
    if let Err(e) = conn.shutdown_write().await {
        println!("{peer:?}: {e}");
    }
}

async fn client(addr: std::net::SocketAddr) -> anyframe::Result<()> {
    let mut conn = QueuedFramed::builder().connect(addr).await?;
    for word in ["hello", "line-by-line", "world"] {
        conn.write(LineCodec::new(), word).await?;
        let echo = conn.read(LineCodec::new()).await?;
        println!(
            "sent {word:?}, got back {:?}",
            String::from_utf8_lossy(echo.line())
        );
    }
    conn.shutdown_write().await
}

#[tokio::main]
async fn main() -> anyframe::Result<()> {
    support::run(|l| support::accept_loop(l, serve_one), client).await
}
