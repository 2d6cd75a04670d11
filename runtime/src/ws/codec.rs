//! The WebSocket wire format (RFC 6455), server side: decoding masked client frames
//! with fragmentation and limits. Encoding lives in [`crate::frame`], below both the
//! hub and this module.

use bytes::{Buf, Bytes, BytesMut};

pub use crate::frame::close;
use crate::frame::{OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT};

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
    /// A close frame with its code, if any (valid per RFC 6455 7.4; the reason was UTF-8).
    Close(Option<u16>),
}

/// Why the connection must close: the code to send.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Violation(pub u16);

/// The frame whose payload is being read.
#[derive(Debug)]
struct Frame {
    fin: bool,
    opcode: u8,
    len: u64,
    mask: [u8; 4],
    /// Payload bytes read so far.
    got: u64,
}

/// A data message being reassembled.
#[derive(Debug)]
struct Message {
    opcode: u8,
    data: Vec<u8>,
    /// How much of `data` is known to be valid UTF-8 (text messages).
    checked: usize,
}

/// Reassembles client messages from bytes read off the socket. Payload bytes are
/// consumed as they arrive, so text is UTF-8-checked as soon as the bad bytes are in
/// (not when the message completes) and no frame needs its whole length buffered twice.
#[derive(Debug)]
pub struct Decoder {
    max_message: usize,
    frame: Option<Frame>,
    message: Option<Message>,
    control: Vec<u8>,
}

impl Decoder {
    /// A decoder refusing messages over `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Self {
            max_message,
            frame: None,
            message: None,
            control: Vec::new(),
        }
    }

    /// Takes the next complete message or control frame off `buf`, if there is one.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Incoming>, Violation> {
        loop {
            if self.frame.is_none() {
                match self.head(buf)? {
                    Some(frame) => self.frame = Some(frame),
                    None => return Ok(None),
                }
            }
            self.read_payload(buf)?;
            let Some(frame) = self.frame.take_if(|f| f.got == f.len) else {
                return Ok(None);
            };
            if let Some(incoming) = self.finish(frame)? {
                return Ok(Some(incoming));
            }
        }
    }

    /// Whether no frame or message is partly read: the decoder holds nothing, so an
    /// idle session can drop it and make a new one when bytes come.
    pub fn is_idle(&self) -> bool {
        self.frame.is_none() && self.message.is_none() && self.control.is_empty()
    }

    /// Parses one frame header off `buf` and checks it against the message state.
    fn head(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Violation> {
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
        match opcode {
            OP_CLOSE | OP_PING | OP_PONG if len > 125 || !fin => {
                return Err(Violation(close::PROTOCOL))
            }
            OP_CLOSE | OP_PING | OP_PONG => {}
            OP_TEXT | OP_BINARY if self.message.is_some() => {
                return Err(Violation(close::PROTOCOL))
            }
            OP_CONTINUATION if self.message.is_none() => return Err(Violation(close::PROTOCOL)),
            OP_TEXT | OP_BINARY | OP_CONTINUATION => {
                let pending = self.message.as_ref().map_or(0, |m| m.data.len() as u64);
                if len.saturating_add(pending) > self.max_message as u64 {
                    return Err(Violation(close::TOO_BIG));
                }
            }
            _ => return Err(Violation(close::PROTOCOL)),
        }
        if buf.len() < header + 4 {
            return Ok(None);
        }
        let mask = [
            buf[header],
            buf[header + 1],
            buf[header + 2],
            buf[header + 3],
        ];
        buf.advance(header + 4);
        if opcode == OP_TEXT || opcode == OP_BINARY {
            self.message = Some(Message {
                opcode,
                data: Vec::new(),
                checked: 0,
            });
        }
        Ok(Some(Frame {
            fin,
            opcode,
            len,
            mask,
            got: 0,
        }))
    }

    /// Moves what `buf` holds of the current frame's payload into the message (or
    /// control) buffer, unmasked; text is checked as it comes.
    fn read_payload(&mut self, buf: &mut BytesMut) -> Result<(), Violation> {
        let Some(frame) = self.frame.as_mut() else {
            return Ok(());
        };
        let n = (frame.len - frame.got).min(buf.len() as u64) as usize;
        if n == 0 {
            return Ok(());
        }
        let into = match self.message.as_mut() {
            Some(m) if frame.opcode & 0x8 == 0 => &mut m.data,
            _ => &mut self.control,
        };
        let start = into.len();
        into.extend_from_slice(&buf[..n]);
        buf.advance(n);
        unmask(&mut into[start..], frame.mask, frame.got);
        frame.got += n as u64;
        if frame.opcode & 0x8 != 0 {
            return Ok(());
        }
        match self.message.as_mut() {
            Some(m) if m.opcode == OP_TEXT => check_utf8(m, false),
            _ => Ok(()),
        }
    }

    /// A frame's payload is complete: hand out what it finished, if anything.
    fn finish(&mut self, frame: Frame) -> Result<Option<Incoming>, Violation> {
        let control = std::mem::take(&mut self.control);
        match frame.opcode {
            OP_PING => Ok(Some(Incoming::Ping(Bytes::from(control)))),
            OP_PONG => Ok(Some(Incoming::Pong)),
            OP_CLOSE => close_code(&control).map(|code| Some(Incoming::Close(code))),
            _ if !frame.fin => Ok(None),
            _ => {
                let Some(mut m) = self.message.take() else {
                    return Err(Violation(close::PROTOCOL));
                };
                if m.opcode == OP_BINARY {
                    return Ok(Some(Incoming::Binary(m.data)));
                }
                check_utf8(&mut m, true)?;
                String::from_utf8(m.data)
                    .map(|text| Some(Incoming::Text(text)))
                    .map_err(|_| Violation(close::INVALID_DATA))
            }
        }
    }
}

/// XORs `data` with the mask, `offset` bytes into the payload, eight bytes at a time.
fn unmask(data: &mut [u8], mask: [u8; 4], offset: u64) {
    let shift = (offset & 3) as usize;
    let m = [
        mask[shift],
        mask[(shift + 1) & 3],
        mask[(shift + 2) & 3],
        mask[(shift + 3) & 3],
    ];
    let word = u64::from_ne_bytes([m[0], m[1], m[2], m[3], m[0], m[1], m[2], m[3]]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ word).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= m[i & 3];
    }
}

/// Checks the unchecked part of a text message; a sequence cut at the end is fine
/// until the message is `complete`.
fn check_utf8(m: &mut Message, complete: bool) -> Result<(), Violation> {
    match std::str::from_utf8(&m.data[m.checked..]) {
        Ok(_) => {
            m.checked = m.data.len();
            Ok(())
        }
        Err(e) if e.error_len().is_none() && !complete => {
            m.checked += e.valid_up_to();
            Ok(())
        }
        Err(_) => Err(Violation(close::INVALID_DATA)),
    }
}

/// Whether a peer may send this close code (RFC 6455 7.4.1, 7.4.2 and the IANA
/// registry: 1012-1014 are registered; 3000-4999 are for libraries and applications).
pub fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

fn close_code(payload: &[u8]) -> Result<Option<u16>, Violation> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(Violation(close::PROTOCOL)),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !valid_close_code(code) {
                return Err(Violation(close::PROTOCOL));
            }
            std::str::from_utf8(&payload[2..]).map_err(|_| Violation(close::INVALID_DATA))?;
            Ok(Some(code))
        }
    }
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

    /// Found by the `ws_frames` fuzz target (fuzz/regressions/ws_frames/len64-overflow):
    /// a 64-bit length near `u64::MAX` plus the fragments already held wrapped around,
    /// passed the size check and panicked slicing the buffer.
    #[test]
    fn a_huge_64_bit_length_is_refused_not_wrapped() {
        let mut d = Decoder::new(1024);
        let mut first = BytesMut::from(&masked(0x01, b"abc")[..]);
        assert_eq!(d.next(&mut first), Ok(None));
        let mut wire = vec![0x80u8, 0x80 | 127];
        wire.extend_from_slice(&u64::MAX.to_be_bytes());
        wire.extend_from_slice(&[1, 2, 3, 4, 0x69, 0x67, 0x6f]);
        let mut buf = BytesMut::from(&wire[..]);
        assert!(d.next(&mut buf).is_err());
        let regression = include_bytes!("../../../fuzz/regressions/ws_frames/len64-overflow");
        let (&cut, stream) = regression.split_first().expect("the input is not empty");
        let mut d = Decoder::new(4096);
        let mut buf = BytesMut::new();
        'reads: for read in stream.chunks(usize::from(cut) + 1) {
            buf.extend_from_slice(read);
            loop {
                match d.next(&mut buf) {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => break 'reads,
                }
            }
        }
    }

    #[test]
    fn close_codes_and_reasons_are_checked() {
        for code in [
            1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999,
        ] {
            let mut buf = BytesMut::from(&masked(0x88, &code.to_be_bytes())[..]);
            assert_eq!(
                Decoder::new(10).next(&mut buf),
                Ok(Some(Incoming::Close(Some(code)))),
                "{code}"
            );
        }
        for code in [
            0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            let mut buf = BytesMut::from(&masked(0x88, &code.to_be_bytes())[..]);
            assert_eq!(
                Decoder::new(10).next(&mut buf),
                Err(Violation(close::PROTOCOL)),
                "{code}"
            );
        }
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(&[
            0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80,
        ]);
        let mut buf = BytesMut::from(&masked(0x88, &payload)[..]);
        assert_eq!(
            Decoder::new(10).next(&mut buf),
            Err(Violation(close::INVALID_DATA))
        );
        let mut buf = BytesMut::from(&masked(0x88, &[0x03])[..]);
        assert_eq!(
            Decoder::new(10).next(&mut buf),
            Err(Violation(close::PROTOCOL))
        );
    }

    #[test]
    fn bad_utf8_fails_as_soon_as_it_arrives() {
        // A fragment with a bad sequence: refused before the message could complete.
        let mut d = Decoder::new(1024);
        let mut buf = BytesMut::from(&masked(0x01, "κόσμε".as_bytes())[..]);
        assert_eq!(d.next(&mut buf), Ok(None));
        buf.extend_from_slice(&masked(
            0x00,
            &[0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xed, 0xa0, 0x80],
        ));
        assert_eq!(d.next(&mut buf), Err(Violation(close::INVALID_DATA)));
        // Within one frame that has only partly arrived.
        let mut d = Decoder::new(1024);
        let mut wire = masked(
            0x81,
            &[b'a', b'b', 0xf4, 0x90, 0x80, 0x80, b'c', b'd', b'e', b'f'],
        );
        wire.truncate(2 + 4 + 6);
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(d.next(&mut buf), Err(Violation(close::INVALID_DATA)));
        // A sequence cut between fragments is fine; cut at the end of the message is not.
        let mut d = Decoder::new(1024);
        let mut buf = BytesMut::from(&masked(0x01, &[0xce])[..]);
        buf.extend_from_slice(&masked(0x80, &[0xba]));
        assert_eq!(d.next(&mut buf), Ok(Some(Incoming::Text("κ".into()))));
        let mut buf = BytesMut::from(&masked(0x81, &[b'a', 0xce])[..]);
        assert_eq!(
            Decoder::new(1024).next(&mut buf),
            Err(Violation(close::INVALID_DATA))
        );
    }

    #[test]
    fn unmasks_at_any_offset_and_interleaves_control_frames() {
        let text: String = (0..1000)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let wire = masked(0x81, text.as_bytes());
        for step in [1usize, 3, 7, 8, 13, 64] {
            let mut d = Decoder::new(4096);
            let mut buf = BytesMut::new();
            let mut out = None;
            for chunk in wire.chunks(step) {
                buf.extend_from_slice(chunk);
                if let Some(m) = d.next(&mut buf).unwrap() {
                    out = Some(m);
                }
            }
            assert_eq!(out, Some(Incoming::Text(text.clone())), "step {step}");
        }
        let mut d = Decoder::new(1024);
        let mut buf = BytesMut::from(&masked(0x02, &[1, 2])[..]);
        buf.extend_from_slice(&masked(0x89, b"hi"));
        buf.extend_from_slice(&masked(0x80, &[3]));
        assert_eq!(
            d.next(&mut buf),
            Ok(Some(Incoming::Ping(Bytes::from_static(b"hi"))))
        );
        assert_eq!(d.next(&mut buf), Ok(Some(Incoming::Binary(vec![1, 2, 3]))));
    }
}
