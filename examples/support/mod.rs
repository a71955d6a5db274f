//! Shared by the examples: `--listen ADDR` / `--connect ADDR` handling.
//!
//! With neither flag an example runs its server and its client in one
//! process on 127.0.0.1. `--listen` runs only the server (for a real peer to
//! connect to), `--connect` only the client (against a real server).
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;

/// What the command line asked for.
pub enum Mode {
    /// Server and client in this process.
    Both,
    /// Only the server, on this address.
    Listen(SocketAddr),
    /// Only the client, to this address.
    Connect(SocketAddr),
}

pub fn mode() -> Mode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = |i: usize| -> SocketAddr {
        let raw = args.get(i + 1).unwrap_or_else(|| usage());
        raw.parse().unwrap_or_else(|_| usage())
    };
    match args.first().map(String::as_str) {
        None => Mode::Both,
        Some("--listen") => Mode::Listen(addr(0)),
        Some("--connect") => Mode::Connect(addr(0)),
        Some(_) => usage(),
    }
}

fn usage() -> ! {
    eprintln!("usage: [--listen 127.0.0.1:PORT | --connect 127.0.0.1:PORT]");
    std::process::exit(2)
}

/// Binds the server side: the given address, or an ephemeral loopback port.
pub async fn bind(mode: &Mode) -> tokio::net::TcpListener {
    let addr = match mode {
        Mode::Listen(a) => *a,
        _ => "127.0.0.1:0".parse().unwrap(),
    };
    let l = tokio::net::TcpListener::bind(addr).await.expect("bind");
    if let Mode::Listen(_) = mode {
        println!("listening on {}", l.local_addr().unwrap());
    }
    l
}

/// Runs an example the way the command line asks: with no flag, `server`
/// on an ephemeral loopback port and `client` against it, then exits; with
/// `--listen`, only the server (until interrupted); with `--connect`, only
/// the client.
pub async fn run<S, SF, C, CF>(server: S, client: C) -> anyframe::Result<()>
where
    S: FnOnce(tokio::net::TcpListener) -> SF,
    SF: Future<Output = ()> + Send + 'static,
    C: FnOnce(SocketAddr) -> CF,
    CF: Future<Output = anyframe::Result<()>>,
{
    let mode = mode();
    if let Mode::Connect(addr) = mode {
        return client(addr).await;
    }
    let listener = bind(&mode).await;
    let addr = listener.local_addr()?;
    let srv = tokio::spawn(server(listener));
    if let Mode::Both = mode {
        client(addr).await?;
        srv.abort();
    } else {
        let _ = srv.await;
    }
    Ok(())
}

/// Accepts connections forever, serving each with `serve` in its own task.
pub async fn accept_loop<F, Fut>(listener: tokio::net::TcpListener, serve: F)
where
    F: Fn(tokio::net::TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    while let Ok((sock, _)) = listener.accept().await {
        tokio::spawn(serve(sock));
    }
}

#[cfg(feature = "tls")]
#[path = "certs.rs"]
pub mod certs;
