//! A minimal WebSocket client: the upgrade handshake, a parser for (unmasked) server
//! frames that answers pings, and masked client text frames. It holds no read buffer
//! while idle (reads go through one scratch buffer per thread), so tens of thousands
//! of clients stay cheap.

use crate::net::{connect, Target};
use std::cell::RefCell;
use std::io;
use std::net::Ipv4Addr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const OP_CONT: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Largest message the client accepts (a bigger one is a protocol error here).
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; 64 * 1024]);
}

/// A complete message from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Msg<'a> {
    /// A text message.
    Text(&'a [u8]),
    /// A binary message.
    Binary(&'a [u8]),
    /// The server closed (code when given).
    Close(Option<u16>),
}

/// What one non-blocking read found.
enum Step {
    Read { full: bool },
    Eof,
    WouldBlock,
}

/// One open client connection.
pub struct WsClient {
    stream: TcpStream,
    /// Bytes of an incomplete frame carried between reads (empty when idle).
    buf: Vec<u8>,
    /// Opcode and payload of a fragmented message in progress.
    frag: Option<(u8, Vec<u8>)>,
    /// Control replies (pongs, close echo) to write after a read.
    out: Vec<u8>,
    mask: u32,
    closed: bool,
}

/// The parsed header of one frame.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    /// FIN bit.
    pub fin: bool,
    /// Opcode.
    pub opcode: u8,
    /// Header length (payload starts here).
    pub header: usize,
    /// Payload length.
    pub len: usize,
}

/// Parses the header of the frame at the start of `data`: None when incomplete.
pub fn parse_head(data: &[u8]) -> io::Result<Option<Head>> {
    if data.len() < 2 {
        return Ok(None);
    }
    let fin = data[0] & 0x80 != 0;
    let opcode = data[0] & 0x0F;
    let masked = data[1] & 0x80 != 0;
    let (len, mut header) = match data[1] & 0x7F {
        126 => {
            if data.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([data[2], data[3]]) as usize, 4)
        }
        127 => {
            if data.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&data[2..10]);
            (u64::from_be_bytes(b) as usize, 10)
        }
        n => (n as usize, 2),
    };
    if masked {
        header += 4; // servers must not mask; tolerate it by skipping the key (payload stays masked)
    }
    if len > MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    Ok(Some(Head {
        fin,
        opcode,
        header,
        len,
    }))
}

/// Encodes a masked client frame.
pub fn client_frame(opcode: u8, payload: &[u8], mask: [u8; 4], out: &mut Vec<u8>) {
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= u16::MAX as usize => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
}

/// Handles every complete frame in `data`; returns how many bytes were used and
/// whether a close frame was seen.
fn process(
    data: &[u8],
    frag: &mut Option<(u8, Vec<u8>)>,
    out: &mut Vec<u8>,
    mask: &mut u32,
    on_message: &mut impl FnMut(Msg<'_>),
) -> io::Result<(usize, bool)> {
    let mut at = 0;
    while let Some(head) = parse_head(&data[at..])? {
        let end = at + head.header + head.len;
        if end > data.len() {
            break;
        }
        let payload = &data[at + head.header..end];
        at = end;
        match head.opcode {
            OP_TEXT | OP_BINARY if head.fin && frag.is_none() => {
                if head.opcode == OP_TEXT {
                    on_message(Msg::Text(payload));
                } else {
                    on_message(Msg::Binary(payload));
                }
            }
            OP_TEXT | OP_BINARY => *frag = Some((head.opcode, payload.to_vec())),
            OP_CONT => {
                if let Some((_, body)) = frag.as_mut() {
                    body.extend_from_slice(payload);
                }
                if head.fin {
                    if let Some((op, body)) = frag.take() {
                        if op == OP_TEXT {
                            on_message(Msg::Text(&body));
                        } else {
                            on_message(Msg::Binary(&body));
                        }
                    }
                }
            }
            OP_PING => client_frame(OP_PONG, payload, next_mask(mask), out),
            OP_PONG => {}
            OP_CLOSE => {
                let code =
                    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                let echo = code.unwrap_or(1000).to_be_bytes();
                client_frame(OP_CLOSE, &echo, next_mask(mask), out);
                on_message(Msg::Close(code));
                return Ok((at, true));
            }
            _ => return Err(io::Error::new(io::ErrorKind::InvalidData, "bad opcode")),
        }
    }
    Ok((at, false))
}

fn next_mask(state: &mut u32) -> [u8; 4] {
    // xorshift32: masks only need to vary, not to be secret, in a benchmark.
    *state ^= *state << 13;
    *state ^= *state >> 17;
    *state ^= *state << 5;
    state.to_ne_bytes()
}

impl WsClient {
    /// Connects from `src`, upgrades `target` (offering `protocol`), all within `timeout`.
    pub async fn connect(
        src: Option<Ipv4Addr>,
        target: &Target,
        protocol: Option<&str>,
        timeout: Duration,
    ) -> io::Result<Self> {
        tokio::time::timeout(timeout, Self::connect_inner(src, target, protocol))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "upgrade timed out"))?
    }

    async fn connect_inner(
        src: Option<Ipv4Addr>,
        target: &Target,
        protocol: Option<&str>,
    ) -> io::Result<Self> {
        let mut stream = connect(src, target.addr).await?;
        let mut request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
            target.path, target.host
        );
        if let Some(p) = protocol {
            request.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut head = Vec::with_capacity(512);
        let mut chunk = [0u8; 1024];
        let end = loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "closed during upgrade",
                ));
            }
            head.extend_from_slice(&chunk[..n]);
            if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if head.len() > 16 * 1024 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "huge upgrade answer",
                ));
            }
        };
        if !head.starts_with(b"HTTP/1.1 101") {
            let line = String::from_utf8_lossy(&head[..head.len().min(80)]).to_string();
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("upgrade refused: {}", line.lines().next().unwrap_or("")),
            ));
        }
        let seed = (target.addr.port() as u32) ^ (crate::now_ns() as u32) | 1;
        Ok(Self {
            stream,
            buf: head[end..].to_vec(),
            frag: None,
            out: Vec::new(),
            mask: seed,
            closed: false,
        })
    }

    /// Sends one text message.
    pub async fn send_text(&mut self, text: &[u8]) -> io::Result<()> {
        let mut frame = Vec::with_capacity(text.len() + 14);
        let mask = next_mask(&mut self.mask);
        client_frame(OP_TEXT, text, mask, &mut frame);
        self.stream.write_all(&frame).await
    }

    /// Handles what was received with the handshake (call once before `pump`).
    pub async fn drain_buffered(
        &mut self,
        mut on_message: impl FnMut(Msg<'_>),
    ) -> io::Result<bool> {
        if self.buf.is_empty() {
            return Ok(!self.closed);
        }
        let data = std::mem::take(&mut self.buf);
        let (used, closed) = process(
            &data,
            &mut self.frag,
            &mut self.out,
            &mut self.mask,
            &mut on_message,
        )?;
        self.buf = data[used..].to_vec();
        self.closed |= closed;
        self.flush_out().await?;
        Ok(!self.closed)
    }

    /// Waits for data and handles every complete frame: messages go to `on_message`,
    /// pings are answered. Returns false once the connection is closed.
    pub async fn pump(&mut self, mut on_message: impl FnMut(Msg<'_>)) -> io::Result<bool> {
        if self.closed {
            return Ok(false);
        }
        loop {
            self.stream.readable().await?;
            let mut read_any = false;
            loop {
                let step = SCRATCH
                    .with(|scratch| self.read_step(&mut scratch.borrow_mut(), &mut on_message))?;
                match step {
                    Step::Read { full } => {
                        read_any = true;
                        if !full || self.closed {
                            break;
                        }
                    }
                    Step::Eof => {
                        self.closed = true;
                        break;
                    }
                    Step::WouldBlock => break,
                }
            }
            self.flush_out().await?;
            if self.closed {
                return Ok(false);
            }
            if read_any {
                return Ok(true);
            }
        }
    }

    /// One non-blocking read into `scratch`, and the frames it completes.
    fn read_step(
        &mut self,
        scratch: &mut [u8],
        on_message: &mut impl FnMut(Msg<'_>),
    ) -> io::Result<Step> {
        let n = match self.stream.try_read(scratch) {
            Ok(0) => return Ok(Step::Eof),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Step::WouldBlock),
            Err(e) => return Err(e),
        };
        let full = n == scratch.len();
        if self.buf.is_empty() {
            let data = &scratch[..n];
            let (used, closed) = process(
                data,
                &mut self.frag,
                &mut self.out,
                &mut self.mask,
                on_message,
            )?;
            self.buf.extend_from_slice(&data[used..]);
            self.closed |= closed;
        } else {
            self.buf.extend_from_slice(&scratch[..n]);
            let data = std::mem::take(&mut self.buf);
            let (used, closed) = process(
                &data,
                &mut self.frag,
                &mut self.out,
                &mut self.mask,
                on_message,
            )?;
            self.buf = data[used..].to_vec();
            self.closed |= closed;
        }
        Ok(Step::Read { full })
    }

    async fn flush_out(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            let out = std::mem::take(&mut self.out);
            self.stream.write_all(&out).await?;
        }
        Ok(())
    }

    /// Sends a close frame (1000) and shuts the write side.
    pub async fn close(&mut self) {
        let mut frame = Vec::new();
        client_frame(
            OP_CLOSE,
            &1000u16.to_be_bytes(),
            next_mask(&mut self.mask),
            &mut frame,
        );
        let _ = self.stream.write_all(&frame).await;
        let _ = self.stream.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
        match payload.len() {
            n if n < 126 => f.push(n as u8),
            n if n <= 65535 => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn parses_short_medium_and_long_heads() {
        for len in [0usize, 125, 126, 65535, 65536] {
            let f = server_frame(OP_TEXT, true, &vec![b'a'; len]);
            let head = parse_head(&f).unwrap().unwrap();
            assert_eq!(head.len, len);
            assert_eq!(head.header + head.len, f.len());
        }
        assert_eq!(parse_head(&[0x81]).unwrap(), None);
        assert_eq!(parse_head(&[0x81, 126, 0]).unwrap(), None);
    }

    #[test]
    fn processes_messages_pings_fragments_and_close() {
        let mut data = server_frame(OP_TEXT, true, b"one");
        data.extend(server_frame(OP_PING, true, b"p"));
        data.extend(server_frame(OP_TEXT, false, b"tw"));
        data.extend(server_frame(OP_CONT, true, b"o"));
        data.extend(server_frame(OP_CLOSE, true, &1001u16.to_be_bytes()));
        data.extend(server_frame(OP_TEXT, true, b"after"));
        let mut got = Vec::new();
        let mut out = Vec::new();
        let mut frag = None;
        let mut mask = 7;
        let (used, closed) = process(&data, &mut frag, &mut out, &mut mask, &mut |m| {
            got.push(format!("{m:?}"))
        })
        .unwrap();
        assert!(closed);
        assert!(used < data.len());
        assert_eq!(
            got,
            vec![
                "Text([111, 110, 101])",
                "Text([116, 119, 111])",
                "Close(Some(1001))"
            ]
        );
        // a masked pong then a masked close echo
        assert_eq!(out[0], 0x80 | OP_PONG);
        assert_eq!(out[1], 0x80 | 1);
    }

    #[test]
    fn incomplete_frames_wait_for_more() {
        let f = server_frame(OP_TEXT, true, b"hello");
        let mut frag = None;
        let mut out = Vec::new();
        let mut mask = 1;
        let mut n = 0;
        let (used, _) = process(&f[..4], &mut frag, &mut out, &mut mask, &mut |_| n += 1).unwrap();
        assert_eq!((used, n), (0, 0));
    }

    #[test]
    fn client_frames_are_masked() {
        let mut out = Vec::new();
        client_frame(OP_TEXT, b"abc", [1, 2, 3, 4], &mut out);
        assert_eq!(
            out,
            vec![0x81, 0x83, 1, 2, 3, 4, b'a' ^ 1, b'b' ^ 2, b'c' ^ 3]
        );
    }
}
