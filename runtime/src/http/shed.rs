//! At the open-file limit `accept` fails with EMFILE and leaves the connection in the
//! kernel's backlog, where its client waits for nothing. A spare descriptor, kept open
//! for this, is let go long enough to take that connection, tell it 503 and close it,
//! so clients at the limit are refused cleanly instead of hanging; the ones already
//! connected keep being served, and new ones are again once descriptors free up.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use tokio::net::TcpListener;

/// What a refused client reads.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 82\r\nconnection: close\r\nretry-after: 1\r\n\r\n{\"error\":{\"status\":503,\"message\":\"the host is at its open-file limit; try again\"}}";

/// The descriptor kept in reserve for refusing connections.
pub struct Spare(Option<File>);

impl Spare {
    /// Reserves one descriptor (on `/dev/null`).
    pub fn new() -> Self {
        Self(File::open("/dev/null").ok())
    }

    /// After `accept` failed with `error`: when that is the descriptor limit, refuses
    /// one waiting connection with 503. True when one was refused (try again at once).
    pub fn refuse_one(&mut self, listener: &TcpListener, error: &std::io::Error) -> bool {
        if !matches!(
            error.raw_os_error(),
            Some(libc::EMFILE) | Some(libc::ENFILE)
        ) {
            return false;
        }
        if self.0.take().is_none() {
            self.0 = File::open("/dev/null").ok();
            return false;
        }
        // SAFETY: accept4 on the listener's valid descriptor with no address out-params;
        // a non-negative result is a new descriptor we own.
        let fd = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            )
        };
        let refused = fd >= 0;
        if refused {
            // SAFETY: `fd` was just returned by accept4 and nothing else owns it.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            let mut socket = std::net::TcpStream::from(owned);
            // Read what the client sent already, so closing does not turn into a reset
            // that could swallow the answer; best effort both ways.
            let _ = socket.read(&mut [0u8; 2048]);
            let _ = socket.write(REFUSAL);
            let _ = socket.shutdown(std::net::Shutdown::Write);
        }
        self.0 = File::open("/dev/null").ok();
        refused
    }
}

impl Default for Spare {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::REFUSAL;

    #[test]
    fn refusal_length_matches_its_body() {
        let text = std::str::from_utf8(REFUSAL).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
    }
}
