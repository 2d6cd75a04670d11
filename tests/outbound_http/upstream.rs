//! A small HTTP/1.1 upstream for the outbound tests, plain or behind TLS: each path
//! answers one way (plain, echo, chunked, server-sent events, redirects, stalls,
//! errors, big bodies), and it records when it wrote what and how many requests it
//! saw, so a test can tell what reached it and when.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the upstream saw and did.
#[derive(Default)]
pub struct Record {
    /// Requests fully read.
    pub requests: AtomicUsize,
    /// Requests being answered right now, and the most at once.
    pub active: AtomicUsize,
    pub most_active: AtomicUsize,
    /// Server-sent events written, with the time each was written.
    pub events: Mutex<Vec<(String, Instant)>>,
}

/// A running upstream; it stops when dropped.
pub struct Upstream {
    pub addr: SocketAddr,
    pub record: Arc<Record>,
    scheme: &'static str,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// A plain HTTP upstream on a free loopback port.
    pub async fn start() -> Self {
        Self::start_inner(None).await
    }

    /// An HTTPS upstream answering with `acceptor`'s certificate.
    pub async fn start_tls(acceptor: tokio_rustls::TlsAcceptor) -> Self {
        Self::start_inner(Some(acceptor)).await
    }

    async fn start_inner(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream address");
        let record = Arc::new(Record::default());
        let rec = record.clone();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let rec = rec.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(stream).await {
                                serve(s, rec).await;
                            }
                        }
                        None => serve(stream, rec).await,
                    }
                });
            }
        });
        Upstream {
            addr,
            record,
            scheme,
            task,
        }
    }

    /// `http://127.0.0.1:PORT<path>` (or https://localhost:PORT for TLS).
    pub fn url(&self, path: &str) -> String {
        let host = if self.scheme == "https" {
            "localhost"
        } else {
            "127.0.0.1"
        };
        format!("{}://{host}:{}{path}", self.scheme, self.addr.port())
    }

    pub fn requests(&self) -> usize {
        self.record.requests.load(Ordering::SeqCst)
    }
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

async fn read_request<S: AsyncRead + Unpin>(s: &mut S) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 1 << 20 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Request {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn whole(status: &str, content_type: &str, extra: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n{body}",
        body.len()
    )
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, rec: Arc<Record>) {
    let Some(req) = read_request(&mut s).await else {
        return;
    };
    rec.requests.fetch_add(1, Ordering::SeqCst);
    let now = rec.active.fetch_add(1, Ordering::SeqCst) + 1;
    rec.most_active.fetch_max(now, Ordering::SeqCst);
    answer(&mut s, &req, &rec).await;
    rec.active.fetch_sub(1, Ordering::SeqCst);
    let _ = s.flush().await;
    let _ = s.shutdown().await;
}

async fn answer<S: AsyncWrite + Unpin>(s: &mut S, req: &Request, rec: &Record) {
    let path = req.path.split('?').next().unwrap_or("");
    let write = |text: String| text.into_bytes();
    let out = match path {
        "/plain" => write(whole("200 OK", "text/plain", "", "hello from upstream")),
        "/echo" => {
            let headers: serde_json::Map<String, serde_json::Value> = req
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::from(v.clone())))
                .collect();
            let body = serde_json::json!({
                "method": req.method, "path": req.path, "headers": headers, "body": req.body,
                "contentTypes": req.headers.iter().filter(|(k, _)| k == "content-type").count(),
            });
            write(whole("200 OK", "application/json", "", &body.to_string()))
        }
        "/json" => write(whole("200 OK", "application/json", "", r#"{"answer":42}"#)),
        "/chunked" => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
            if s.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            for part in ["one ", "two ", "three"] {
                let _ = s
                    .write_all(format!("{:x}\r\n{part}\r\n", part.len()).as_bytes())
                    .await;
                let _ = s.flush().await;
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            b"0\r\n\r\n".to_vec()
        }
        "/v1/chat/completions" => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
            if s.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            for part in ["Hel", "lo, ", "world"] {
                let event = format!(
                    "data: {}\n\n",
                    serde_json::json!({"choices": [{"delta": {"content": part}}]})
                );
                rec.events
                    .lock()
                    .unwrap()
                    .push((event.clone(), Instant::now()));
                let _ = s
                    .write_all(format!("{:x}\r\n{event}\r\n", event.len()).as_bytes())
                    .await;
                let _ = s.flush().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let done = "data: [DONE]\n\n";
            format!("{:x}\r\n{done}\r\n0\r\n\r\n", done.len()).into_bytes()
        }
        "/sse" => {
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n";
            if s.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            for i in 1..=3 {
                let event = format!("data: {{\"n\":{i}}}\n\n");
                rec.events
                    .lock()
                    .unwrap()
                    .push((event.clone(), Instant::now()));
                if s.write_all(event.as_bytes()).await.is_err() {
                    return;
                }
                let _ = s.flush().await;
                if i < 3 {
                    tokio::time::sleep(Duration::from_millis(400)).await;
                }
            }
            b"data: [DONE]\n\n".to_vec()
        }
        "/status/404" => write(whole(
            "404 Not Found",
            "text/plain",
            "x-why: testing\r\n",
            "not here",
        )),
        "/stall-head" => {
            tokio::time::sleep(Duration::from_secs(10)).await;
            return;
        }
        "/stall-body" => {
            let head =
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 100\r\n\r\npartial";
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.flush().await;
            tokio::time::sleep(Duration::from_secs(10)).await;
            return;
        }
        "/hold" => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            write(whole("200 OK", "text/plain", "", "held"))
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            write(whole("200 OK", "text/plain", "", "late"))
        }
        p if p.starts_with("/big/") => {
            let n: usize = p[5..].parse().unwrap_or(0);
            write(whole("200 OK", "text/plain", "", &"x".repeat(n)))
        }
        p if p.starts_with("/redirect/") => {
            let n: usize = p[10..].parse().unwrap_or(0);
            if n == 0 {
                write(whole(
                    "200 OK",
                    "text/plain",
                    "",
                    &format!("landed after {}", req.method),
                ))
            } else {
                let location = format!("location: /redirect/{}\r\n", n - 1);
                write(whole("302 Found", "text/plain", &location, "moved"))
            }
        }
        _ => write(whole(
            "404 Not Found",
            "text/plain",
            "",
            "no such upstream path",
        )),
    };
    let _ = s.write_all(&out).await;
}
