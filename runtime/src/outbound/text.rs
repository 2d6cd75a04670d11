//! Bytes to text for streamed answers: a UTF-8 sequence split between two reads is
//! held back until its end arrives, so no chunk shows a replacement character that
//! the whole body would not.

/// Turns successive byte chunks into text.
#[derive(Debug, Default)]
pub struct Utf8Chunks {
    carry: Vec<u8>,
}

impl Utf8Chunks {
    /// The text of `bytes`, after whatever an earlier chunk left unfinished; an
    /// unfinished sequence at the end waits for the next call.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.carry.extend_from_slice(bytes);
        let keep = incomplete_tail(&self.carry);
        let whole = self.carry.len() - keep;
        let text = String::from_utf8_lossy(&self.carry[..whole]).into_owned();
        self.carry.drain(..whole);
        text
    }

    /// Whatever is left at the end of the body (an unfinished sequence is replaced).
    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.carry).into_owned();
        self.carry.clear();
        text
    }
}

/// How many bytes at the end of `bytes` start a UTF-8 sequence that is not complete.
fn incomplete_tail(bytes: &[u8]) -> usize {
    for back in 1..=bytes.len().min(3) {
        let b = bytes[bytes.len() - back];
        if b & 0b1100_0000 == 0b1000_0000 {
            continue; // a continuation byte: look further back for the lead
        }
        let needed = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => return 0,
        };
        return if needed > back { back } else { 0 };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::Utf8Chunks;

    #[test]
    fn a_split_sequence_is_kept_whole() {
        let text = "héllo €";
        let bytes = text.as_bytes();
        for split in 0..=bytes.len() {
            let mut d = Utf8Chunks::default();
            let mut out = d.push(&bytes[..split]);
            out.push_str(&d.push(&bytes[split..]));
            out.push_str(&d.finish());
            assert_eq!(out, text, "split at {split}");
        }
    }

    #[test]
    fn an_unfinished_end_is_replaced() {
        let mut d = Utf8Chunks::default();
        assert_eq!(d.push(&[b'a', 0xE2, 0x82]), "a");
        assert_eq!(d.finish(), "\u{fffd}");
    }
}
