//! An EPP client, "Example 1" of AnyEvent::Handle's read queue
//! documentation (RFC 5734 framing: a 4-byte big-endian total length that
//! counts itself, then an XML document), against an in-process EPP-like
//! server.
//!
//! The length read unshifts the payload read from inside its completion, so
//! the payload read runs next on bytes already buffered (AnyEvent's
//! `unshift_read` in a callback).
//!
//! ```sh
//! cargo run --example epp_client
//! cargo run --example epp_client -- --connect 127.0.0.1:700   # a real EPP server (TLS not shown here)
//! ```

#[path = "support/mod.rs"]
mod support;

use anyframe::codecs::ChunkCodec;
use anyframe::{Handle, QueuedFramed};
use bytes::Bytes;

fn frame(xml: &str) -> Vec<u8> {
    let mut v = ((xml.len() + 4) as u32).to_be_bytes().to_vec();
    v.extend_from_slice(xml.as_bytes());
    v
}

/// Queues the read of one EPP frame.
fn read_frame(h: &Handle) -> anyframe::Ticket<anyframe::Ticket<Bytes>> {
    h.push_read_with(ChunkCodec::new(4), |hdr, q| {
        let total = u32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
        Ok(q.unshift_read(ChunkCodec::new(total.saturating_sub(4))))
    })
}

async fn server(listener: tokio::net::TcpListener) {
    let (sock, _) = listener.accept().await.expect("accept");
    let (h, _driver) = QueuedFramed::new(sock).spawn();
    h.push_bytes(frame(
        "<epp><greeting><svID>example</svID></greeting></epp>",
    ))
    .unwrap();
    let mut n = 0;
    while let Ok(cmd) = async { read_frame(&h).await?.await }.await {
        n += 1;
        let xml = String::from_utf8_lossy(&cmd);
        let reply = format!(
            "<epp><response><result code=\"1000\"/><n>{n}</n><echo>{}</echo></response></epp>",
            xml.len()
        );
        h.push_bytes(frame(&reply)).unwrap();
    }
}

async fn client(addr: std::net::SocketAddr) -> anyframe::Result<()> {
    let (h, _driver) = QueuedFramed::builder().connect(addr).await?.spawn();
    let greeting = read_frame(&h).await?.await?;
    println!("greeting: {}", String::from_utf8_lossy(&greeting));
    for cmd in [
        "<epp><command><login/></command></epp>",
        "<epp><command><check/></command></epp>",
    ] {
        h.push_bytes(frame(cmd))?;
        let reply = read_frame(&h).await?.await?;
        println!("{cmd} -> {}", String::from_utf8_lossy(&reply));
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyframe::Result<()> {
    support::run(server, client).await
}
