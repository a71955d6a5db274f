//! The server guards: a server is up when `start` returns and gone once its
//! guard is dropped, also when the test holding it panics.

use std::net::TcpStream;
use std::time::Duration;

use anyframe_protocols::servers::{Kind, Server};

fn refused(addr: std::net::SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err()
}

#[test]
fn dropping_the_guard_stops_the_server() {
    for kind in [Kind::Redis, Kind::Memcached, Kind::Nginx] {
        let Some(server) = Server::start(kind) else {
            continue;
        };
        let addr = server.addr();
        assert!(addr.ip().is_loopback());
        assert!(!server.version().is_empty());
        assert!(!refused(addr), "{kind:?} listens once started");
        drop(server);
        assert!(refused(addr), "{kind:?} is gone once its guard is dropped");
    }
}

#[test]
fn a_panicking_test_still_stops_its_server() {
    let Some(server) = Server::start(Kind::Redis) else {
        return;
    };
    let addr = server.addr();
    let folder = server.dir().to_path_buf();
    let result = std::panic::catch_unwind(move || {
        let _server = server;
        panic!("a failing test");
    });
    assert!(result.is_err());
    assert!(refused(addr));
    assert!(!folder.exists(), "the throw-away folder is removed");
}
