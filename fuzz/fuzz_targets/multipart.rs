//! The `multipart/form-data` parser of image uploads: a content type line and a
//! body, both the client's; parts must be slices of the body.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use mimhost_runtime::mcm::multipart::{boundary, parse};

fuzz_target!(|data: &[u8]| {
    // First line: the Content-Type header; the rest: the body.
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let content_type = String::from_utf8_lossy(&data[..split]);
    let body = Bytes::copy_from_slice(data.get(split + 1..).unwrap_or_default());
    let boundary = boundary(&content_type).unwrap_or_else(|| "b".to_string());
    if let Ok(parts) = parse(&body, &boundary) {
        let total: usize = parts.iter().map(|p| p.data.len()).sum();
        assert!(total <= body.len());
    }
});
