//! A minimal keep-alive HTTP/1.1 client: one request at a time per connection,
//! bodies framed by `content-length` or `chunked`.

use crate::net::{connect, Target};
use std::io;
use std::net::Ipv4Addr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One keep-alive connection.
pub struct HttpConn {
    stream: TcpStream,
    host: String,
    buf: Vec<u8>,
    request: Vec<u8>,
    /// The server said `connection: close`: open a new connection before the next request.
    pub closing: bool,
}

/// Where a response's body ends.
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// Parses a response head: (status, head length, framing, connection close).
fn parse_head(data: &[u8]) -> io::Result<Option<(u16, usize, Framing, bool)>> {
    let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
        if data.len() > 64 * 1024 {
            return Err(bad("response head too large"));
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&data[..end]).map_err(|_| bad("non-UTF-8 head"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let mut framing = if status == 204 || status == 304 {
        Framing::Length(0)
    } else {
        Framing::UntilClose
    };
    let mut close = status_line.starts_with("HTTP/1.0");
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            framing = Framing::Length(value.parse().map_err(|_| bad("bad content-length"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && value.eq_ignore_ascii_case("chunked")
        {
            framing = Framing::Chunked;
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    Ok(Some((status, end + 4, framing, close)))
}

/// Length of a complete chunked body at the start of `data` (None when incomplete).
fn chunked_len(data: &[u8]) -> io::Result<Option<usize>> {
    let mut at = 0;
    loop {
        let Some(eol) = data[at..].windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size_text =
            std::str::from_utf8(&data[at..at + eol]).map_err(|_| bad("bad chunk size"))?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("bad chunk size"))?;
        at += eol + 2;
        if size == 0 {
            // trailers end with an empty line
            loop {
                let Some(eol) = data[at..].windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                at += eol + 2;
                if eol == 0 {
                    return Ok(Some(at));
                }
            }
        }
        if data.len() < at + size + 2 {
            return Ok(None);
        }
        at += size + 2;
    }
}

impl HttpConn {
    /// Connects to `target` from `src`.
    pub async fn connect(src: Option<Ipv4Addr>, target: &Target) -> io::Result<Self> {
        Ok(Self {
            stream: connect(src, target.addr).await?,
            host: target.host.clone(),
            buf: Vec::with_capacity(4096),
            request: Vec::with_capacity(512),
            closing: false,
        })
    }

    /// Sends one request and reads the whole answer: (status, body length).
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> io::Result<(u16, usize)> {
        self.request.clear();
        self.request.extend_from_slice(method.as_bytes());
        self.request.push(b' ');
        self.request.extend_from_slice(path.as_bytes());
        self.request.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        self.request.extend_from_slice(self.host.as_bytes());
        self.request.extend_from_slice(b"\r\n");
        if !body.is_empty() || method != "GET" {
            self.request.extend_from_slice(
                format!(
                    "Content-Length: {}\r\nContent-Type: text/plain\r\n",
                    body.len()
                )
                .as_bytes(),
            );
        }
        self.request.extend_from_slice(b"\r\n");
        self.request.extend_from_slice(body);
        self.stream.write_all(&self.request).await?;
        self.read_response().await
    }

    async fn fill(&mut self) -> io::Result<bool> {
        let len = self.buf.len();
        self.buf.resize(len + 16 * 1024, 0);
        let n = self.stream.read(&mut self.buf[len..]).await;
        let n = match n {
            Ok(n) => n,
            Err(e) => {
                self.buf.truncate(len);
                return Err(e);
            }
        };
        self.buf.truncate(len + n);
        Ok(n > 0)
    }

    async fn read_response(&mut self) -> io::Result<(u16, usize)> {
        let (status, head, framing, close) = loop {
            if let Some(h) = parse_head(&self.buf)? {
                break h;
            }
            if !self.fill().await? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed before answering",
                ));
            }
        };
        let total = match framing {
            Framing::Length(n) => {
                while self.buf.len() < head + n {
                    if !self.fill().await? {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short body"));
                    }
                }
                head + n
            }
            Framing::Chunked => loop {
                if let Some(n) = chunked_len(&self.buf[head..])? {
                    break head + n;
                }
                if !self.fill().await? {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "short chunked body",
                    ));
                }
            },
            Framing::UntilClose => {
                while self.fill().await? {}
                self.closing = true;
                self.buf.len()
            }
        };
        self.buf.drain(..total);
        self.closing |= close;
        Ok((status, total - head))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_heads() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        let (status, head, framing, close) = parse_head(r).unwrap().unwrap();
        assert_eq!((status, head, close), (200, r.len() - 5, false));
        assert!(matches!(framing, Framing::Length(5)));
        let r =
            b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
        let (status, _, framing, close) = parse_head(r).unwrap().unwrap();
        assert_eq!((status, close), (404, true));
        assert!(matches!(framing, Framing::Chunked));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n").unwrap().is_none());
    }

    #[test]
    fn measures_chunked_bodies() {
        let body = b"5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\n\r\nNEXT";
        assert_eq!(chunked_len(body).unwrap(), Some(body.len() - 4));
        assert_eq!(chunked_len(b"5\r\nhel").unwrap(), None);
        assert_eq!(chunked_len(b"0\r\n").unwrap(), None);
    }
}
