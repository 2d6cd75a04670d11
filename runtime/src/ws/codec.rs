//! The WebSocket wire format (RFC 6455), server side: decoding masked client frames
//! with fragmentation and limits, and encoding unmasked frames once so the same bytes
//! can go to every recipient.

use bytes::{Buf, Bytes, BytesMut};

/// Close codes this host sends.
pub mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The host or container is going away.
    pub const GOING_AWAY: u16 = 1001;
    /// The peer broke the protocol.
    pub const PROTOCOL: u16 = 1002;
    /// Text that is not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// Policy violation: the client fell too far behind.
    pub const POLICY: u16 = 1008;
    /// A message over the size limit.
    pub const TOO_BIG: u16 = 1009;
}

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// A complete message or control frame from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// A ping with its payload.
    Ping(Bytes),
    /// A pong.
    Pong,
    /// A close frame with its code, if any.
    Close(Option<u16>),
}

/// Why the connection must close: the code to send.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Violation(pub u16);

/// Reassembles client messages from bytes read off the socket.
#[derive(Debug)]
pub struct Decoder {
    max_message: usize,
    fragments: Option<(u8, Vec<u8>)>,
}

impl Decoder {
    /// A decoder refusing messages over `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Self {
            max_message,
            fragments: None,
        }
    }

    /// Takes the next complete message or control frame off `buf`, if there is one.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Incoming>, Violation> {
        loop {
            let Some((fin, opcode, payload)) = self.frame(buf)? else {
                return Ok(None);
            };
            match opcode {
                OP_PING => return Ok(Some(Incoming::Ping(payload.freeze()))),
                OP_PONG => return Ok(Some(Incoming::Pong)),
                OP_CLOSE => return Ok(Some(Incoming::Close(close_code(&payload)?))),
                OP_TEXT | OP_BINARY if self.fragments.is_some() => {
                    return Err(Violation(close::PROTOCOL))
                }
                OP_TEXT | OP_BINARY if fin => return message(opcode, payload.to_vec()).map(Some),
                OP_TEXT | OP_BINARY => self.fragments = Some((opcode, payload.to_vec())),
                OP_CONTINUATION => {
                    let Some((first, mut data)) = self.fragments.take() else {
                        return Err(Violation(close::PROTOCOL));
                    };
                    if data.len() + payload.len() > self.max_message {
                        return Err(Violation(close::TOO_BIG));
                    }
                    data.extend_from_slice(&payload);
                    if fin {
                        return message(first, data).map(Some);
                    }
                    self.fragments = Some((first, data));
                }
                _ => return Err(Violation(close::PROTOCOL)),
            }
        }
    }

    /// One raw frame (unmasked payload), or `None` when more bytes are needed.
    fn frame(&self, buf: &mut BytesMut) -> Result<Option<(bool, u8, BytesMut)>, Violation> {
        if buf.len() < 2 {
            return Ok(None);
        }
        let (b0, b1) = (buf[0], buf[1]);
        let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0F);
        if b0 & 0x70 != 0 || b1 & 0x80 == 0 {
            return Err(Violation(close::PROTOCOL)); // reserved bits, or an unmasked client frame
        }
        let (len, header) = match b1 & 0x7F {
            126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4),
            127 if buf.len() >= 10 => {
                let mut be = [0u8; 8];
                be.copy_from_slice(&buf[2..10]);
                (u64::from_be_bytes(be), 10)
            }
            126 | 127 => return Ok(None),
            n => (n as u64, 2),
        };
        let control = opcode & 0x8 != 0;
        if control && (len > 125 || !fin) {
            return Err(Violation(close::PROTOCOL));
        }
        let pending = self.fragments.as_ref().map_or(0, |(_, d)| d.len() as u64);
        if len + pending > self.max_message as u64 {
            return Err(Violation(close::TOO_BIG));
        }
        let total = header + 4 + len as usize;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        let mask = [
            buf[header],
            buf[header + 1],
            buf[header + 2],
            buf[header + 3],
        ];
        buf.advance(header + 4);
        let mut payload = buf.split_to(len as usize);
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i & 3];
        }
        Ok(Some((fin, opcode, payload)))
    }
}

fn message(opcode: u8, data: Vec<u8>) -> Result<Incoming, Violation> {
    if opcode == OP_TEXT {
        String::from_utf8(data)
            .map(Incoming::Text)
            .map_err(|_| Violation(close::INVALID_DATA))
    } else {
        Ok(Incoming::Binary(data))
    }
}

fn close_code(payload: &[u8]) -> Result<Option<u16>, Violation> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(Violation(close::PROTOCOL)),
        _ => Ok(Some(u16::from_be_bytes([payload[0], payload[1]]))),
    }
}

fn encode(opcode: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 10);
    out.extend_from_slice(&[0x80 | opcode]);
    match payload.len() {
        n if n < 126 => out.extend_from_slice(&[n as u8]),
        n if n <= u16::MAX as usize => {
            out.extend_from_slice(&[126]);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.extend_from_slice(&[127]);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out.freeze()
}

/// A text frame, ready to be written to any number of sessions.
pub fn text_frame(text: &str) -> Bytes {
    encode(OP_TEXT, text.as_bytes())
}

/// A ping frame.
pub fn ping_frame() -> Bytes {
    encode(OP_PING, b"")
}

/// A pong answering a ping with `payload`.
pub fn pong_frame(payload: &[u8]) -> Bytes {
    encode(OP_PONG, payload)
}

/// A close frame with `code` and a reason (cut to fit a control frame).
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut payload = code.to_be_bytes().to_vec();
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    encode(OP_CLOSE, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        out
    }

    #[test]
    fn decodes_text_split_across_reads_and_fragments() {
        let mut d = Decoder::new(1024);
        let mut wire = masked(0x01, b"hel");
        wire.extend(masked(0x80, b"lo"));
        let mut buf = BytesMut::from(&wire[..3]);
        assert_eq!(d.next(&mut buf), Ok(None));
        buf.extend_from_slice(&wire[3..]);
        assert_eq!(d.next(&mut buf), Ok(Some(Incoming::Text("hello".into()))));
        assert!(buf.is_empty());
    }

    #[test]
    fn refuses_oversize_unmasked_and_bad_utf8() {
        let mut d = Decoder::new(10);
        let mut buf = BytesMut::from(&masked(0x81, &[b'x'; 11])[..]);
        assert_eq!(d.next(&mut buf), Err(Violation(close::TOO_BIG)));
        let mut buf = BytesMut::from(&[0x81u8, 0x01, b'x'][..]);
        assert_eq!(
            Decoder::new(10).next(&mut buf),
            Err(Violation(close::PROTOCOL))
        );
        let mut buf = BytesMut::from(&masked(0x81, &[0xff, 0xfe])[..]);
        assert_eq!(
            Decoder::new(10).next(&mut buf),
            Err(Violation(close::INVALID_DATA))
        );
    }

    #[test]
    fn encodes_lengths() {
        assert_eq!(&text_frame("hi")[..], &[0x81, 2, b'h', b'i']);
        let long = "x".repeat(300);
        assert_eq!(&text_frame(&long)[..4], &[0x81, 126, 1, 44]);
        assert_eq!(&close_frame(1008, "")[..], &[0x88, 2, 0x03, 0xF0]);
    }
}
