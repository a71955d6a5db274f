//! CBOR request/response: typed serde values over one connection, with the
//! sequential API on the server and pipelined tickets on the client.
//!
//! ```sh
//! cargo run --example cbor_rpc
//! cargo run --example cbor_rpc -- --listen 127.0.0.1:7002
//! ```

#[path = "support/mod.rs"]
mod support;

use anyframe::QueuedFramed;
use anyframe::codecs::CborCodec;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
enum Call {
    Upper(String),
    Sum(Vec<i64>),
}

#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    Text(String),
    Number(i64),
}

/// One connection: read calls until a clean end of input, answer each.
async fn serve_one(sock: tokio::net::TcpStream) {
    let mut conn = QueuedFramed::new(sock);
    while let Ok(Some(call)) = conn
        .read(anyframe::OrEof::new(CborCodec::<Call>::new()))
        .await
    {
        let reply = match call {
            Call::Upper(s) => Reply::Text(s.to_uppercase()),
            Call::Sum(v) => Reply::Number(v.iter().sum()),
        };
        if conn.push_write(CborCodec::<Reply>::new(), &reply).is_err() {
            break;
        }
    }
    let _ = conn.shutdown_write().await;
}

async fn client(addr: std::net::SocketAddr) -> anyframe::Result<()> {
    let (h, _driver) = QueuedFramed::builder().connect(addr).await?.spawn();
    let calls = [
        Call::Upper("cbor over anyframe".into()),
        Call::Sum(vec![1, 2, 3, 4]),
    ];
    // Pipelined: all requests out, then all answers in order.
    let mut tickets = Vec::new();
    for c in &calls {
        h.push_write(CborCodec::<Call>::new(), c)?;
        tickets.push(h.push_read(CborCodec::<Reply>::new()));
    }
    for (c, t) in calls.iter().zip(tickets) {
        println!("{c:?} -> {:?}", t.await?);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyframe::Result<()> {
    support::run(|l| support::accept_loop(l, serve_one), client).await
}
