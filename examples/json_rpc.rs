//! NDJSON request/response through the tower integration: a `serve` loop
//! answering JSON requests, and a pipelined `Client` behind tower's
//! `timeout` and `buffer` middleware.
//!
//! ```sh
//! cargo run --example json_rpc
//! cargo run --example json_rpc -- --listen 127.0.0.1:7001
//! # then: echo '{"id":1,"method":"add","params":[2,3]}' | nc 127.0.0.1 7001
//! ```

#[path = "support/mod.rs"]
mod support;

use std::convert::Infallible;
use std::time::Duration;

use anyframe::QueuedFramed;
use anyframe::codecs::JsonCodec;
use anyframe::service::{Client, serve};
use serde::{Deserialize, Serialize};
use tower::{Service, ServiceBuilder, ServiceExt};

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    id: u64,
    method: String,
    params: Vec<f64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Response {
    id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

async fn handle(req: Request) -> Result<Response, Infallible> {
    let result = match req.method.as_str() {
        "add" => Some(req.params.iter().sum()),
        "mul" => Some(req.params.iter().product()),
        _ => None,
    };
    let error = result
        .is_none()
        .then(|| format!("unknown method {:?}", req.method));
    Ok(Response {
        id: req.id,
        result,
        error,
    })
}

/// One connection: requests are any JSON text, responses go one per line
/// (NDJSON).
async fn serve_one(sock: tokio::net::TcpStream) {
    let svc = tower::service_fn(handle);
    let _ = serve(
        sock,
        JsonCodec::<Request>::new(),
        JsonCodec::<Response>::ndjson(),
        svc,
    )
    .await;
}

async fn client(addr: std::net::SocketAddr) -> anyframe::Result<()> {
    let (handle, _driver) = QueuedFramed::builder()
        .no_delay(true)
        .connect(addr)
        .await?
        .spawn();
    let client = Client::new(handle, JsonCodec::<Request>::ndjson(), |_: &Request| {
        JsonCodec::<Response>::new()
    });
    let client = ServiceBuilder::new()
        .buffer(32)
        .timeout(Duration::from_secs(5))
        .service(client);
    let mut calls = Vec::new();
    for (id, (method, params)) in [
        ("add", vec![2.0, 3.0]),
        ("mul", vec![4.0, 2.5]),
        ("pow", vec![1.0]),
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = client.clone();
        let req = Request {
            id: id as u64,
            method: method.into(),
            params,
        };
        calls.push(tokio::spawn(
            async move { c.ready().await?.call(req).await },
        ));
    }
    for call in calls {
        match call.await.expect("task") {
            Ok(resp) => println!("{}", serde_json::to_string(&resp).expect("json")),
            Err(e) => {
                eprintln!("call failed: {e}");
                std::process::exit(1);
            }
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyframe::Result<()> {
    support::run(|l| support::accept_loop(l, serve_one), client).await
}
