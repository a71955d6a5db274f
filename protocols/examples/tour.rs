//! A short tour of the three clients: starts `redis-server`, `memcached`
//! and `nginx` on free loopback ports (each skipped if not installed), or
//! talks to servers you name, and runs a few requests on each.
//!
//! ```sh
//! cargo run -p anyframe-protocols --example tour
//! cargo run -p anyframe-protocols --example tour -- --redis 127.0.0.1:6379
//! ```
//!
//! Flags: `--redis ADDR`, `--memcached ADDR`, `--http ADDR`.

use std::net::SocketAddr;

use anyframe_protocols::http::{self, Request};
use anyframe_protocols::memcached::{self, Command};
use anyframe_protocols::redis::{self, Cmd};
use anyframe_protocols::servers::{Kind, Server};
use tower::{Service, ServiceExt};

/// The address given with `flag`, or a server of `kind` started here.
fn target(flag: &str, kind: Kind, keep: &mut Vec<Server>) -> Option<SocketAddr> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == flag) {
        return Some(
            args.get(i + 1)?
                .parse()
                .expect("an address like 127.0.0.1:6379"),
        );
    }
    let server = Server::start(kind)?;
    println!("started {} on {}", server.version(), server.addr());
    if kind == Kind::Nginx {
        std::fs::write(server.docroot().join("hello.txt"), "hello from nginx\n").unwrap();
    }
    let addr = server.addr();
    keep.push(server);
    Some(addr)
}

#[tokio::main]
async fn main() -> anyframe::Result<()> {
    let mut servers = Vec::new();
    if let Some(addr) = target("--redis", Kind::Redis, &mut servers) {
        let mut c = redis::connect(addr, 64).await?;
        let set = c
            .ready()
            .await?
            .call(Cmd::new("SET").arg("greeting").arg("hi"));
        let get = c.ready().await?.call(Cmd::new("GET").arg("greeting"));
        let range = c
            .ready()
            .await?
            .call(Cmd::new("LRANGE").arg("nothing").arg("0").arg("-1"));
        // Three requests in flight on one connection; replies in order.
        println!("redis: SET -> {:?}", set.await?);
        println!("redis: GET -> {:?}", get.await?);
        println!("redis: LRANGE -> {:?}", range.await?);
        println!(
            "redis: HELLO 3 -> {:?}",
            c.send(Cmd::new("HELLO").arg("3")).await?
        );
    }
    if let Some(addr) = target("--memcached", Kind::Memcached, &mut servers) {
        let c = memcached::connect(addr, 64).await?;
        println!(
            "memcached: set -> {:?}",
            c.send(Command::set("k", "v")).await?
        );
        println!("memcached: get -> {:?}", c.send(Command::get("k")).await?);
    }
    if let Some(addr) = target("--http", Kind::Nginx, &mut servers) {
        let c = http::connect(addr, 8).await?;
        let replies: Vec<_> = (0..3).map(|_| c.send(Request::get("/hello.txt"))).collect();
        for r in replies {
            let r = r.await?;
            println!(
                "http: {} {} {:?}",
                r.status,
                String::from_utf8_lossy(&r.reason),
                String::from_utf8_lossy(&r.body_bytes())
            );
        }
    }
    Ok(())
}
