//! Loopback sockets for the tests that need real TCP.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// A connected loopback pair: (the connecting end, the accepted end).
pub async fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
    (c.unwrap(), s.unwrap().0)
}

/// A loopback listener whose accept queue is full and that drops further
/// SYNs, so a connect to it stays in progress for the OS's connect timeout
/// (about two minutes).
pub struct Stalled {
    pub listener: socket2::Socket,
    pub filler: std::net::TcpStream,
    pub addr: SocketAddr,
}

pub fn stalled_listener() -> Stalled {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    s.listen(0).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    let filler = std::net::TcpStream::connect(addr).unwrap();
    // Check that a further connect really stalls.
    let probe = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let r = probe.connect_timeout(&addr.into(), Duration::from_millis(300));
    assert!(r.is_err(), "the listener's accept queue is not full: {r:?}");
    Stalled {
        listener: s,
        filler,
        addr,
    }
}
