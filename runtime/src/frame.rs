//! Encoding server WebSocket frames (RFC 6455): each frame is encoded once into
//! `Bytes` so the same bytes go to every recipient. It sits below both the hub (which
//! queues frames) and `ws/` (which writes them and decodes the client's), so the hub
//! does not depend on the socket side.

use bytes::{Bytes, BytesMut};

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

// Opcodes (RFC 6455 5.2), shared with the decoder.

/// Continuation of a fragmented message.
pub(crate) const OP_CONTINUATION: u8 = 0x0;
/// A text frame.
pub(crate) const OP_TEXT: u8 = 0x1;
/// A binary frame.
pub(crate) const OP_BINARY: u8 = 0x2;
/// A close frame.
pub(crate) const OP_CLOSE: u8 = 0x8;
/// A ping.
pub(crate) const OP_PING: u8 = 0x9;
/// A pong.
pub(crate) const OP_PONG: u8 = 0xA;

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

/// A binary frame, ready to be written to any number of sessions.
pub fn binary_frame(bytes: &[u8]) -> Bytes {
    encode(OP_BINARY, bytes)
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

    #[test]
    fn encodes_lengths() {
        assert_eq!(&text_frame("hi")[..], &[0x81, 2, b'h', b'i']);
        let long = "x".repeat(300);
        assert_eq!(&text_frame(&long)[..4], &[0x81, 126, 1, 44]);
        assert_eq!(&close_frame(1008, "")[..], &[0x88, 2, 0x03, 0xF0]);
    }
}
