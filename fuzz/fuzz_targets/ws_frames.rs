//! The WebSocket frame decoder: bytes a client sends, split into reads at the
//! places the input chooses, must give messages or a close code, never a panic,
//! and never a message over the limit.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mimhost_runtime::ws::codec::{Decoder, Incoming};

/// Small, so the limit checks are reached by short inputs.
const MAX_MESSAGE: usize = 4096;

fuzz_target!(|data: &[u8]| {
    // The first byte picks how the stream is cut into reads (1..=256 bytes each).
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let step = usize::from(cut) + 1;
    let mut decoder = Decoder::new(MAX_MESSAGE);
    let mut buf = BytesMut::new();
    for read in stream.chunks(step) {
        buf.extend_from_slice(read);
        loop {
            match decoder.next(&mut buf) {
                Ok(Some(Incoming::Text(text))) => assert!(text.len() <= MAX_MESSAGE),
                Ok(Some(Incoming::Binary(bytes))) => assert!(bytes.len() <= MAX_MESSAGE),
                Ok(Some(Incoming::Ping(payload))) => assert!(payload.len() <= 125),
                Ok(Some(_)) => {}
                Ok(None) => break,
                // A violation ends the connection: nothing after it is read.
                Err(violation) => {
                    assert!((1000..5000).contains(&violation.0));
                    return;
                }
            }
        }
    }
});
