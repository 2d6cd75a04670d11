//! The HTTP request path up to the worker: raw bytes from a client go through
//! hyper's HTTP/1 parser and mimhost's request reading (body limit, headers,
//! query and percent-decoding) into the plain request a worker would get.
#![no_main]

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use libfuzzer_sys::fuzz_target;
use mimhost_runtime::http::read_request;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A body limit small enough for short inputs to cross it.
const MAX_BODY: usize = 1024;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

async fn serve(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let peer: SocketAddr = ([127, 0, 0, 1], 40000).into();
    let rest = req.uri().path().to_string();
    let status = match read_request(req, MAX_BODY, rest, peer, 8083).await {
        Ok(request) => {
            assert!(request.body.len() <= MAX_BODY, "the body is kept as sent, within the limit");
            assert!(request.headers.keys().all(|k| k == &k.to_lowercase()));
            200
        }
        Err(refusal) => refusal.status().as_u16(),
    };
    assert!(matches!(status, 200 | 400 | 413));
    Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
}

fuzz_target!(|data: &[u8]| {
    runtime().block_on(async {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let connection = tokio::spawn(
            http1::Builder::new()
                .max_buf_size(16 * 1024)
                .serve_connection(TokioIo::new(server), service_fn(serve)),
        );
        let exchange = async {
            client.write_all(data).await?;
            client.shutdown().await?;
            let mut answer = Vec::new();
            client.read_to_end(&mut answer).await?;
            Ok::<_, std::io::Error>(answer)
        };
        // A request the parser is still waiting on when input ends is dropped.
        let _ = tokio::time::timeout(Duration::from_secs(2), exchange).await;
        connection.abort();
    });
});
