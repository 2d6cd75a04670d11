//! Binary WebSocket messages both ways (SPEC 5.5): `event.bytes` next to the base64
//! `event.message`; `ArrayBuffer`/`Uint8Array` from replies and every sending
//! function of `/lib/xp/websocket` go out as binary frames; `--max-message`; and the
//! RFC 6455 rules Autobahn checks that are easiest to see here: close codes, close
//! reasons, and valid frames answered before a protocol error closes the session.

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use support::{mim_json, Host, Mims};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(15);

/// Echoes what it gets, in the way the text asks for.
const MIM: &str = r#"
var ws = require('/lib/xp/websocket');
exports.get = function (req) { return req.webSocket ? { webSocket: {} } : { body: 'bin' }; };
exports.webSocketEvent = function (event) {
  if (event.type === 'open') { ws.addToGroup('all', event.session.id); return; }
  if (event.type !== 'message') return;
  if (event.binary) {
    var b = event.bytes;
    if (!(b instanceof Uint8Array)) return { body: 'no bytes' };
    if (b.length === 0) return { body: new Uint8Array(0) };
    if (b[0] === 1) return { body: b };
    if (b[0] === 2) return { body: b.buffer };
    if (b[0] === 3) { ws.send(event.session.id, b.subarray(1)); return; }
    if (b[0] === 4) { ws.sendToGroup('all', b); return; }
    if (b[0] === 5) { ws.sendToAll(b.buffer); return; }
    return { body: 'base64 ' + event.message + ' length ' + b.length };
  }
  return { body: 'text ' + event.message };
};
"#;

async fn start(extra: &[&str]) -> (Mims, Host) {
    let mims = Mims::new()
        .with("bin/index.js", MIM)
        .with("bin/mim.json", &mim_json(&[]));
    let host = Host::start_with(&mims.path(), extra).await;
    (mims, host)
}

async fn connect(host: &Host) -> Ws {
    let url = format!("ws://{}/bin", host.addr());
    tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("upgrade in time")
        .expect("upgrade")
        .0
}

async fn next(ws: &mut Ws) -> Message {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(m))) => return m,
            other => panic!("no message in time: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_messages_come_back_as_binary_frames() {
    let (_mims, host) = start(&[]).await;
    let mut ws = connect(&host).await;
    for first in [1u8, 2] {
        let data = vec![first, 0, 255, 128, 7];
        ws.send(Message::binary(data.clone())).await.expect("send");
        assert_eq!(next(&mut ws).await, Message::binary(data), "kind {first}");
    }
    ws.send(Message::binary(vec![3u8, 9, 8]))
        .await
        .expect("send");
    assert_eq!(next(&mut ws).await, Message::binary(vec![9u8, 8]));
    ws.send(Message::binary(vec![4u8, 4])).await.expect("send");
    assert_eq!(next(&mut ws).await, Message::binary(vec![4u8, 4]));
    ws.send(Message::binary(vec![5u8, 5])).await.expect("send");
    assert_eq!(next(&mut ws).await, Message::binary(vec![5u8, 5]));
    ws.send(Message::binary(Vec::new())).await.expect("send");
    assert_eq!(next(&mut ws).await, Message::binary(Vec::new()));
    // event.message stays base64 of the same bytes.
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .expect("send");
    assert_eq!(
        next(&mut ws).await,
        Message::text("base64 AAEC/w== length 4")
    );
    ws.send(Message::text("hi")).await.expect("send");
    assert_eq!(next(&mut ws).await, Message::text("text hi"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_message_sets_the_limit() {
    let (_mims, host) = start(&["--max-message", "2KiB"]).await;
    let mut ws = connect(&host).await;
    ws.send(Message::text("x".repeat(2048)))
        .await
        .expect("send");
    assert_eq!(
        next(&mut ws).await,
        Message::text(format!("text {}", "x".repeat(2048)))
    );
    let _ = ws.send(Message::text("x".repeat(2049))).await;
    match next(&mut ws).await {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1009),
        other => panic!("expected close 1009, got {other:?}"),
    }
    assert!(host.stderr().is_empty() || !host.stderr_contains("panicked"));
}

/// A raw, masked client frame.
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [7u8, 1, 9, 3];
    let mut out = vec![first, 0x80 | payload.len() as u8];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    out
}

/// A raw upgraded connection to the mim.
async fn raw(host: &Host) -> TcpStream {
    let mut s = TcpStream::connect(host.addr()).await.expect("connect");
    let req = format!(
        "GET /bin HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        host.addr()
    );
    s.write_all(req.as_bytes()).await.expect("upgrade request");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.expect("upgrade answer");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// Everything the server sends until it closes the connection.
async fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("server closes in time")
        .expect("read");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_codes_and_reasons_are_checked() {
    let (_mims, host) = start(&[]).await;
    for (code, answer) in [(1000u16, 1000u16), (3000, 3000), (4999, 4999), (1012, 1012)] {
        let mut ws = connect(&host).await;
        ws.send(Message::Close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: "".into(),
        })))
        .await
        .expect("close");
        match next(&mut ws).await {
            Message::Close(Some(f)) => assert_eq!(u16::from(f.code), answer),
            other => panic!("{code}: {other:?}"),
        }
    }
    for code in [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000,
    ] {
        let mut s = raw(&host).await;
        s.write_all(&frame(0x88, &code.to_be_bytes()))
            .await
            .expect("close frame");
        let got = read_to_end(&mut s).await;
        assert_eq!(&got[..4], &[0x88, 2, 0x03, 0xEA], "code {code}: {got:?}");
    }
    let mut s = raw(&host).await;
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(&[0xce, 0xba, 0xed, 0xa0, 0x80]);
    s.write_all(&frame(0x88, &payload))
        .await
        .expect("close frame");
    let got = read_to_end(&mut s).await;
    assert_eq!(&got[..4], &[0x88, 2, 0x03, 0xEF], "bad reason: {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_before_a_protocol_error_are_answered_first() {
    let (_mims, host) = start(&[]).await;
    let mut s = raw(&host).await;
    let mut wire = frame(0x81, b"one");
    wire.extend(frame(0x81, b"two"));
    wire.extend(frame(0xC1, b"reserved bit")); // RSV1 without an extension
    s.write_all(&wire).await.expect("frames");
    let got = read_to_end(&mut s).await;
    let mut expect = vec![0x81, 8];
    expect.extend_from_slice(b"text one");
    expect.extend_from_slice(&[0x81, 8]);
    expect.extend_from_slice(b"text two");
    expect.extend_from_slice(&[0x88, 2, 0x03, 0xEA]);
    assert_eq!(got, expect, "{}", String::from_utf8_lossy(&got));
}
