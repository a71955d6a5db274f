//! Shared by the examples: `--listen ADDR` / `--connect ADDR` handling.
//!
//! With neither flag an example runs its server and its client in one
//! process on 127.0.0.1. `--listen` runs only the server (for a real peer to
//! connect to), `--connect` only the client (against a real server).
#![allow(dead_code)]

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
