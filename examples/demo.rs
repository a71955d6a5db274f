//! The README's demo: one connection, seven read types, then STARTTLS.
//!
//! A server and a client run in this process on 127.0.0.1. The client sends
//! a line, 8 raw bytes, a length-prefixed blob, a netstring, a JSON value
//! and a CBOR value, then upgrades the same connection to TLS (STARTTLS)
//! and sends a line over TLS. The server reads each with a *different
//! decoder*, from one read buffer: line, chunk, packstring, netstring,
//! json, cbor, and tls_detect, which looks at the client's first TLS bytes
//! without consuming them before the handshake takes them. The transcript
//! shows what crossed the wire.
//!
//! ```sh
//! cargo run --example demo
//! ```

use anyframe::QueuedFramed;
use anyframe::codecs::{
    CborCodec, ChunkCodec, JsonCodec, LineCodec, NetstringCodec, PackFormat, PackstringCodec,
    TlsDetect, TlsDetectCodec,
};
use anyframe::tls::{TlsClient, TlsServer};
use serde_json::json;

#[path = "support/certs.rs"]
mod certs;
use tokio::net::{TcpListener, TcpStream};

fn show(who: &str, what: &str) {
    println!("{who:>6} | {what}");
}

async fn server(listener: TcpListener, tls: TlsServer) -> anyframe::Result<()> {
    let (sock, _) = listener.accept().await?;
    let mut conn = QueuedFramed::new(sock);

    let hello = conn.read(LineCodec::new()).await?;
    show(
        "server",
        &format!("line      {:?}", String::from_utf8_lossy(hello.line())),
    );
    let raw = conn.read(ChunkCodec::new(8)).await?;
    show(
        "server",
        &format!("chunk(8)  {:?}", String::from_utf8_lossy(&raw)),
    );
    let blob = conn.read(PackstringCodec::new(PackFormat::U32Be)).await?;
    show("server", &format!("packstring N, {} bytes", blob.len()));
    let net = conn.read(NetstringCodec::new()).await?;
    show(
        "server",
        &format!("netstring {:?}", String::from_utf8_lossy(&net)),
    );
    let value: serde_json::Value = conn.read(JsonCodec::new()).await?;
    show("server", &format!("json      {value}"));
    let item: serde_cbor::Value = conn.read(CborCodec::new()).await?;
    show("server", &format!("cbor      {item:?}"));
    conn.push_write(
        JsonCodec::<serde_json::Value>::new(),
        json!({"received": 6, "next": "STARTTLS"}),
    )?;

    let cmd = conn.read(LineCodec::new()).await?;
    show(
        "server",
        &format!("line      {:?}", String::from_utf8_lossy(cmd.line())),
    );
    conn.push_write(LineCodec::new(), "220 go ahead")?;
    // The client's next bytes should be a TLS ClientHello: look, consume
    // nothing, and let the handshake read them.
    match conn.read(TlsDetectCodec::new()).await? {
        TlsDetect::Tls { major, minor } => {
            show(
                "server",
                &format!("tls_detect TLS, record-layer version {major}.{minor}"),
            );
        }
        TlsDetect::NotTls => {
            return Err(std::io::Error::other("the client did not start TLS").into());
        }
    }
    conn.starttls(tls).await?;
    show("server", "TLS established");
    let secret = conn.read(LineCodec::new()).await?;
    show(
        "server",
        &format!("line over TLS {:?}", String::from_utf8_lossy(secret.line())),
    );
    conn.write(LineCodec::new(), "bye").await?;
    conn.stoptls().await?;
    conn.shutdown_write().await
}

async fn client(addr: std::net::SocketAddr, tls: TlsClient) -> anyframe::Result<()> {
    let mut conn = QueuedFramed::new(TcpStream::connect(addr).await?);
    // Six frames of six types, queued back to back and sent in one flush.
    conn.push_write(LineCodec::new(), "HELLO anyframe")?;
    conn.push_bytes(&b"RAW8BYTE"[..])?;
    conn.push_write(PackstringCodec::new(PackFormat::U32Be), vec![0xAB; 1000])?;
    conn.push_write(NetstringCodec::new(), "payload of a netstring")?;
    conn.push_write(
        JsonCodec::<serde_json::Value>::new(),
        json!({"op": "add", "args": [1, 2, 3], "ok": true}),
    )?;
    let item = serde_cbor::Value::Array(vec![1.into(), "two".to_string().into()]);
    conn.push_write(CborCodec::<serde_cbor::Value>::new(), item)?;
    conn.flush().await?;
    show(
        "client",
        "sent line, chunk, packstring, netstring, json, cbor in one write",
    );
    let ack: serde_json::Value = conn.read(JsonCodec::new()).await?;
    show("client", &format!("json      {ack}"));

    conn.write(LineCodec::new(), "STARTTLS").await?;
    let go = conn.read(LineCodec::new()).await?;
    show(
        "client",
        &format!("line      {:?}", String::from_utf8_lossy(go.line())),
    );

    conn.starttls(tls).await?;
    show(
        "client",
        "TLS established (certificate and host name verified)",
    );
    conn.write(LineCodec::new(), "a secret line").await?;
    let bye = conn.read(LineCodec::new()).await?;
    show(
        "client",
        &format!("line over TLS {:?}", String::from_utf8_lossy(bye.line())),
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyframe::Result<()> {
    if std::env::args().len() > 1 {
        eprintln!("the demo takes no arguments: it runs both sides in this process");
        std::process::exit(2);
    }
    // A CA and a `localhost` certificate made on the spot, so the demo needs
    // no files and the client still verifies the server.
    let pki = certs::DemoPki::new();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    println!("anyframe demo on {addr}: one connection, decoders switched per read\n");
    let srv = tokio::spawn(server(listener, pki.server()));
    client(addr, pki.client()).await?;
    srv.await.expect("server task")?;
    println!("\ndone: 7 read types and STARTTLS on one connection, no byte lost or re-read");
    Ok(())
}
