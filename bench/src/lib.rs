//! The pieces of mimhost's load generator: a minimal WebSocket client (handshake,
//! server-frame parser, masked client frames), a minimal keep-alive HTTP/1.1 client,
//! a lock-free latency histogram, and socket helpers (source-address spreading, fd
//! limit). Hand-rolled and small on purpose: on a 2-core box the generator shares the
//! CPU with the server it measures, so every microsecond it spends is one the server
//! does not get.

pub mod http;
pub mod net;
pub mod soak;
pub mod stats;
pub mod ws;

use std::sync::OnceLock;
use std::time::Instant;

static BASE: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the first call in this process: one clock for stamping sends
/// and receives, so end-to-end latency is a subtraction.
pub fn now_ns() -> u64 {
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Whether `needle` occurs in `haystack` (frames are short: a plain scan is enough).
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contains_finds_substrings() {
        assert!(contains(b"{\"type\":\"notification\"}", b"notification"));
        assert!(!contains(b"{\"op\":10}", b"notification"));
        assert!(contains(b"abc", b""));
    }

    #[test]
    fn clock_moves_forward() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a);
    }
}
