//! Bodies cross the process boundary as bytes (issue 8): a binary upload reaches the
//! mim intact in `request.bodyBytes`, `response.end(Uint8Array | ArrayBuffer)` sends
//! bytes, and a body that is not UTF-8 still gives a string `request.body`.

#[path = "support/mod.rs"]
mod support;

use reqwest::Method;
use support::serve;

/// Route style: echoes the upload's bytes back as a PNG, or as an ArrayBuffer.
const ROUTES: &str = r#"
app.post('/echo', (request, response) => {
  response.setHeader('content-type', 'image/png');
  response.end(request.bodyBytes);
});
app.post('/buffer', (request, response) => {
  var b = request.bodyBytes;
  response.end(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
});
app.post('/streamed', (request, response) => {
  response.setHeader('content-type', 'image/png');
  var b = request.bodyBytes, half = b.length >> 1;
  response.write(b.subarray(0, half));
  response.end(b.subarray(half));
});
app.post('/text', (request, response) => {
  response.end(JSON.stringify({
    type: typeof request.body, chars: request.body.length, bytes: request.bodyBytes.length,
    first: request.body.charCodeAt(0),
  }));
});
app.post('/assign', (request, response) => {
  request.body = JSON.parse(request.body);
  response.end(JSON.stringify({ n: request.body.n, keys: Object.keys(JSON.parse(JSON.stringify(request))) }));
});
"#;

/// Controller style: `request.bodyBytes` is there too, and `body` can be bytes.
const CONTROLLER: &str = r#"
exports.post = (req) => ({ status: 200, contentType: 'image/png', body: req.bodyBytes });
"#;

/// A small valid PNG (1x1 RGBA) built here: signature, IHDR, IDAT, IEND with CRCs.
/// Full of bytes that are not UTF-8 (0x89 first).
fn png() -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut typed = kind.to_vec();
        typed.extend_from_slice(data);
        out.extend_from_slice(&typed);
        out.extend_from_slice(&crc32(&typed).to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &[0, 0, 0, 1, 0, 0, 0, 1, 8, 6, 0, 0, 0]);
    // zlib stream of one stored block: filter byte 0 + 4 bytes of pixel.
    let raw = [0u8, 0xff, 0x80, 0x00, 0xfe];
    let mut idat = vec![
        0x78,
        0x01,
        0x01,
        raw.len() as u8,
        0,
        !(raw.len() as u8),
        0xff,
    ];
    idat.extend_from_slice(&raw);
    let (mut a, mut b) = (1u32, 0u32);
    for &x in &raw {
        a = (a + x as u32) % 65521;
        b = (b + a) % 65521;
    }
    idat.extend_from_slice(&((b << 16) | a).to_be_bytes());
    chunk(&mut out, b"IDAT", &idat);
    chunk(&mut out, b"IEND", &[]);
    // Every byte value, so nothing survives a lossy text conversion by luck.
    out.extend((0..=255u8).rev());
    out
}

async fn upload(host: &support::Host, path: &str, bytes: &[u8]) -> (u16, String, Vec<u8>) {
    let response = host
        .request(Method::POST, path)
        .header("content-type", "image/png")
        .body(bytes.to_vec())
        .send()
        .await
        .expect("upload");
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, kind, response.bytes().await.expect("body").to_vec())
}

#[tokio::test]
async fn a_png_upload_comes_back_byte_identical() {
    let (_mims, host) = serve(&[("bin/index.js", ROUTES), ("ctl/index.js", CONTROLLER)]).await;
    let image = png();
    assert!(std::str::from_utf8(&image).is_err());
    for path in ["/bin/echo", "/bin/streamed", "/ctl/"] {
        let (status, kind, body) = upload(&host, path, &image).await;
        assert_eq!((status, kind.as_str()), (200, "image/png"), "{path}");
        assert_eq!(body, image, "{path}: the bytes changed on the way");
    }
    let (status, kind, body) = upload(&host, "/bin/buffer", &image).await;
    assert_eq!((status, kind.as_str()), (200, "application/octet-stream"));
    assert_eq!(body, image, "an ArrayBuffer is sent as its bytes");
}

#[tokio::test]
async fn a_body_that_is_not_utf8_is_still_a_string() {
    let (_mims, host) = serve(&[("bin/index.js", ROUTES)]).await;
    let (status, _, body) = upload(&host, "/bin/text", &[0xff, 0xfe, b'a', 0xc3]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let seen: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(seen["type"], "string");
    assert_eq!(seen["bytes"], 4);
    assert_eq!(seen["first"], 0xfffd, "invalid UTF-8 reads as U+FFFD");
    // The host lives on.
    let (status, _, _) = upload(&host, "/bin/text", b"fine").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn request_properties_can_be_reassigned_and_serialised() {
    let (_mims, host) = serve(&[("bin/index.js", ROUTES)]).await;
    let reply = host.post("/bin/assign", r#"{"n": 7}"#).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let seen = reply.json();
    assert_eq!(seen["n"], 7);
    let keys: Vec<&str> = seen["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k.as_str())
        .collect();
    for key in [
        "method",
        "url",
        "path",
        "params",
        "query",
        "headers",
        "body",
        "authorization",
    ] {
        assert!(keys.contains(&key), "{key} missing from {keys:?}");
    }
}
