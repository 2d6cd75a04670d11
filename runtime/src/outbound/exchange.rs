//! One outbound request from start to last event: check what the mim asked for,
//! send it, follow redirects where the mode says so, and deliver the answer whole,
//! streamed or into a file, within the timeouts and the body limit.

use super::text::Utf8Chunks;
use super::{OutboundHttp, DEFAULT_CONNECT_TIMEOUT, DEFAULT_SOCKET_TIMEOUT, MAX_REDIRECTS};
use mimhost_bindings::{
    OutboundHttpEvent, OutboundHttpHead, OutboundHttpMode, OutboundHttpRequest,
};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

type Sink<'a> = &'a (dyn Fn(OutboundHttpEvent) + Send + Sync);

/// What a request needs once checked.
struct Checked {
    url: Url,
    method: Method,
    headers: HeaderMap,
    body: Option<String>,
    socket_timeout: Duration,
    connect_timeout: Duration,
}

/// Runs `request`; an `Err` is a failure with no answer (reported by the caller).
pub(super) async fn run(
    http: &OutboundHttp,
    container: &str,
    request: OutboundHttpRequest,
    sink: Sink<'_>,
) -> Result<(), String> {
    let checked = check(&request, http.max_body)?;
    let output = match &request.output_file {
        Some(path) => Some(
            mimhost_bindings::file_area_path(path)
                .map(|rel| (path.clone(), http.files_of(container).join(rel)))
                .map_err(|e| format!("outputFile: {e}"))?,
        ),
        None => None,
    };
    let client = http
        .client(checked.connect_timeout)
        .map_err(|e| e.to_string())?;
    let socket_timeout = checked.socket_timeout;
    let follow = request.mode != OutboundHttpMode::Proxy;
    let response = send(&client, checked, follow).await?;
    let head = head_of(&response);
    let mut body = BodyReader {
        response,
        socket_timeout,
        limit: http.max_body,
        read: 0,
    };
    if request.error_status && head.status >= 400 {
        let content = body.whole().await?;
        let message = format!("HTTP {} {}", head.status, head.status_text)
            .trim_end()
            .to_string();
        sink(OutboundHttpEvent::Failed {
            message,
            answer: Some((head, content)),
        });
        return Ok(());
    }
    if let Some((path, file)) = output {
        let size = body.into_file(&file).await?;
        sink(OutboundHttpEvent::File { head, path, size });
        return Ok(());
    }
    if request.mode == OutboundHttpMode::Stream && is_streamed(&head) {
        return body.stream(head, sink).await;
    }
    let data = body.whole().await?;
    sink(OutboundHttpEvent::Response { head, data });
    Ok(())
}

/// Checks the URL, method, headers and body; nothing is sent when any is wrong.
fn check(request: &OutboundHttpRequest, max_body: usize) -> Result<Checked, String> {
    let url = parse_url(&request.url)?;
    let method_name = if request.method.is_empty() {
        "GET"
    } else {
        request.method.as_str()
    };
    let method = Method::from_bytes(method_name.as_bytes())
        .map_err(|_| format!("'{method_name}' is not an HTTP method"))?;
    let mut headers = HeaderMap::new();
    for (name, value) in &request.headers {
        if has_line_break(name) || has_line_break(value) {
            return Err(format!(
                "header '{}' has a CR or LF in its name or value; nothing was sent",
                name.escape_debug()
            ));
        }
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("'{}' is not a valid header name", name.escape_debug()))?;
        let v = HeaderValue::from_str(value)
            .map_err(|_| format!("the value of header '{name}' is not valid"))?;
        headers.append(n, v);
    }
    if let Some(body) = &request.body {
        if body.len() > max_body {
            return Err(format!(
                "the request body is over the {max_body}-byte limit (--max-body); nothing was sent"
            ));
        }
    }
    let ms = |v: Option<u64>, default: Duration| v.map(Duration::from_millis).unwrap_or(default);
    Ok(Checked {
        url,
        method,
        headers,
        body: request.body.clone(),
        socket_timeout: ms(request.socket_timeout_ms, DEFAULT_SOCKET_TIMEOUT),
        connect_timeout: ms(request.connect_timeout_ms, DEFAULT_CONNECT_TIMEOUT),
    })
}

fn has_line_break(text: &str) -> bool {
    text.contains(['\r', '\n'])
}

/// An absolute `http://` or `https://` URL.
fn parse_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("'{text}' is not a valid URL ({e})"))?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(format!(
            "'{text}' is not an http:// or https:// URL (scheme '{other}')"
        )),
    }
}

/// Sends the request, following at most [`MAX_REDIRECTS`] redirects when `follow`.
async fn send(
    client: &reqwest::Client,
    mut req: Checked,
    follow: bool,
) -> Result<reqwest::Response, String> {
    let mut redirects = 0;
    loop {
        let mut builder = client
            .request(req.method.clone(), req.url.clone())
            .headers(req.headers.clone());
        if let Some(body) = &req.body {
            builder = builder.body(body.clone());
        }
        let sent = tokio::time::timeout(req.socket_timeout, builder.send()).await;
        let response = match sent {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(describe(&e)),
            Err(_) => return Err(silence(req.socket_timeout, &req.url)),
        };
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok());
        let (true, Some(location), 301 | 302 | 303 | 307 | 308) = (follow, location, status) else {
            return Ok(response);
        };
        if redirects == MAX_REDIRECTS {
            return Err(format!(
                "more than {MAX_REDIRECTS} redirects (last to {location})"
            ));
        }
        redirects += 1;
        let next = req
            .url
            .join(location)
            .map_err(|e| format!("redirect to a bad location '{location}' ({e})"))?;
        let next = parse_url(next.as_str())?;
        if next.origin() != req.url.origin() {
            for name in ["authorization", "cookie", "proxy-authorization"] {
                req.headers.remove(name);
            }
        }
        let to_get = status == 303 || (matches!(status, 301 | 302) && req.method == Method::POST);
        if to_get {
            if req.method != Method::HEAD {
                req.method = Method::GET;
            }
            req.body = None;
            req.headers.remove(reqwest::header::CONTENT_TYPE);
            req.headers.remove(reqwest::header::CONTENT_LENGTH);
        }
        req.url = next;
    }
}

/// A reqwest error with its causes, e.g. "error sending request for url (…): client
/// error (Connect): tcp connect error: Connection refused (os error 111)".
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    if error.is_timeout() && error.is_connect() {
        text.push_str(" (connectionTimeout)");
    }
    text
}

fn silence(timeout: Duration, url: &Url) -> String {
    format!(
        "no answer from {url} for {} ms (socketTimeout)",
        timeout.as_millis()
    )
}

/// Status line and headers (lower-case names, repeats joined with `, `).
fn head_of(response: &reqwest::Response) -> OutboundHttpHead {
    let mut headers: Vec<(String, String)> = Vec::new();
    for (name, value) in response.headers() {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.iter_mut().find(|(n, _)| n == name.as_str()) {
            Some((_, v)) => {
                v.push_str(", ");
                v.push_str(&value);
            }
            None => headers.push((name.as_str().to_string(), value)),
        }
    }
    OutboundHttpHead {
        status: response.status().as_u16(),
        status_text: response
            .status()
            .canonical_reason()
            .unwrap_or("")
            .to_string(),
        headers,
        url: response.url().to_string(),
    }
}

/// Whether `mode: 'stream'` delivers this answer chunk by chunk.
fn is_streamed(head: &OutboundHttpHead) -> bool {
    let header = |name: &str| {
        head.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.to_ascii_lowercase())
            .unwrap_or_default()
    };
    header("transfer-encoding").contains("chunked")
        || header("content-type").starts_with("text/event-stream")
}

/// Reads an answer's body under the socket timeout and the body limit.
struct BodyReader {
    response: reqwest::Response,
    socket_timeout: Duration,
    limit: usize,
    read: usize,
}

impl BodyReader {
    /// The next chunk, `None` at the end.
    async fn next(&mut self) -> Result<Option<bytes::Bytes>, String> {
        let chunk = tokio::time::timeout(self.socket_timeout, self.response.chunk())
            .await
            .map_err(|_| silence(self.socket_timeout, self.response.url()))?
            .map_err(|e| describe(&e))?;
        if let Some(c) = &chunk {
            self.read += c.len();
            if self.read > self.limit {
                return Err(format!(
                    "the answer's body is over the {}-byte limit (--max-body)",
                    self.limit
                ));
            }
        }
        Ok(chunk)
    }

    /// The whole body as text.
    async fn whole(&mut self) -> Result<String, String> {
        let mut all = Vec::new();
        while let Some(chunk) = self.next().await? {
            all.extend_from_slice(&chunk);
        }
        Ok(String::from_utf8_lossy(&all).into_owned())
    }

    /// Each chunk as it arrives (the head on the first), then `End`.
    async fn stream(mut self, head: OutboundHttpHead, sink: Sink<'_>) -> Result<(), String> {
        let mut text = Utf8Chunks::default();
        let mut head = Some(head);
        while let Some(chunk) = self.next().await? {
            let data = text.push(&chunk);
            if !data.is_empty() {
                sink(OutboundHttpEvent::Chunk {
                    head: head.take(),
                    data,
                });
            }
        }
        let rest = text.finish();
        if head.is_some() || !rest.is_empty() {
            sink(OutboundHttpEvent::Chunk {
                head: head.take(),
                data: rest,
            });
        }
        sink(OutboundHttpEvent::End);
        Ok(())
    }

    /// Writes the body to `file` (through a temporary file beside it, renamed when
    /// complete, removed on failure); returns its size.
    async fn into_file(mut self, file: &std::path::Path) -> Result<u64, String> {
        let fail = |e: std::io::Error| format!("outputFile {}: {e}", file.display());
        let dir = file
            .parent()
            .ok_or_else(|| "outputFile has no folder".to_string())?;
        tokio::fs::create_dir_all(dir).await.map_err(fail)?;
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let partial = dir.join(format!(".{name}.part-{}", rand::random::<u32>()));
        let result = async {
            let mut out = tokio::fs::File::create(&partial).await.map_err(fail)?;
            let mut size = 0u64;
            while let Some(chunk) = self.next().await? {
                out.write_all(&chunk).await.map_err(fail)?;
                size += chunk.len() as u64;
            }
            out.flush().await.map_err(fail)?;
            tokio::fs::rename(&partial, file).await.map_err(fail)?;
            Ok(size)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&partial).await;
        }
        result
    }
}
