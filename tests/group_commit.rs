//! Group commit keeps SPEC 7's promise: a write is durable before its answer leaves.
//! Many connections write at once, the host and its worker are killed with SIGKILL in
//! the middle of the burst, and every write that was acknowledged must be there after
//! a restart.
//!
//! The writes go to the store's write-ahead log (`<data>/store/NAME/wal`); the log
//! tests here damage it between a SIGKILL and the restart: a torn tail is ignored, a
//! damaged record followed by acknowledged ones keeps the store closed with a clear
//! error while the host serves on.

#[path = "support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::serve;

const KV: &str = r#"
app.post('/put', (request, response) => {
  context.storage.setItem('k' + request.query.k, request.body);
  response.end('stored ' + request.query.k);
});
app.get('/get', (request, response) => {
  var v = context.storage.getItem('k' + request.query.k);
  response.end(v === null ? '<missing>' : v);
});
"#;

/// Connections writing at once.
const WRITERS: usize = 48;

#[tokio::test]
async fn every_acknowledged_write_survives_sigkill_during_a_burst() {
    let (_mims, mut host) = serve(&[("kv/index.js", KV)]).await;
    let acknowledged = Arc::new(Mutex::new(Vec::<(u64, String)>::new()));
    let stop_at = Instant::now() + Duration::from_secs(20);
    let mut writers = Vec::new();
    for w in 0..WRITERS as u64 {
        let client = reqwest::Client::new();
        let base = host.url("/kv/put");
        let acknowledged = acknowledged.clone();
        writers.push(tokio::spawn(async move {
            for n in 0.. {
                if Instant::now() > stop_at {
                    break;
                }
                let key = w * 1_000_000 + n;
                let value = format!("value-{key}-{}", "x".repeat((key % 97) as usize));
                let sent = client
                    .post(format!("{base}?k={key}"))
                    .body(value.clone())
                    .send()
                    .await;
                let Ok(reply) = sent else { break };
                let ok = reply.status() == 200;
                let Ok(text) = reply.text().await else { break };
                if ok && text == format!("stored {key}") {
                    acknowledged.lock().unwrap().push((key, value));
                }
            }
        }));
    }
    // Let the burst run until a good number of writes were acknowledged, then cut.
    let started = Instant::now();
    while acknowledged.lock().unwrap().len() < 300 && started.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    host.kill9();
    for w in writers {
        let _ = w.await;
    }
    let acked = acknowledged.lock().unwrap().clone();
    assert!(
        acked.len() >= 100,
        "only {} writes were acknowledged before the kill",
        acked.len()
    );
    host.restart().await;
    let mut missing = Vec::new();
    for (key, value) in &acked {
        let reply = host.get(&format!("/kv/get?k={key}")).await;
        if reply.status != 200 || &reply.body != value {
            missing.push((*key, reply.body.clone()));
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes were lost: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    eprintln!(
        "{} acknowledged writes from {WRITERS} connections, all there after SIGKILL",
        acked.len()
    );
}

/// The log of container `kv` under the host's data folder.
fn wal(host: &support::Host) -> std::path::PathBuf {
    host.data_dir().join("store").join("kv").join("wal")
}

async fn put(host: &support::Host, key: &str, value: &str) {
    host.post(&format!("/kv/put?k={key}"), value.to_string())
        .await
        .assert_ok(&format!("stored {key}"));
}

#[tokio::test]
async fn a_torn_log_tail_is_ignored_after_sigkill() {
    let (_mims, mut host) = serve(&[("kv/index.js", KV)]).await;
    put(&host, "1", "one").await;
    put(&host, "2", "two").await;
    host.kill9();
    // A write cut short by the kill: half a batch, then garbage.
    let mut tail = b"MWL1\x40\x00\x00\x00\x01\x02\x03\x04half a batch".to_vec();
    tail.extend_from_slice(&[0u8; 700]);
    tail.extend_from_slice(b"\xff\xfe garbage");
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(wal(&host))
            .expect("the store has a log");
        f.write_all(&tail).expect("append a torn tail");
    }
    host.restart().await;
    host.get("/kv/get?k=1").await.assert_ok("one");
    host.get("/kv/get?k=2").await.assert_ok("two");
    put(&host, "3", "three").await;
    host.restart().await;
    host.get("/kv/get?k=3").await.assert_ok("three");
    assert!(!host.stderr_contains("panicked"), "{}", host.stderr());
}

#[tokio::test]
async fn a_damaged_log_record_before_acknowledged_ones_is_a_clear_error() {
    let (_mims, mut host) = serve(&[("kv/index.js", KV)]).await;
    // Each write is acknowledged before the next is sent: one batch each.
    put(&host, "1", "one").await;
    put(&host, "2", "two").await;
    host.kill9();
    let path = wal(&host);
    let mut bytes = std::fs::read(&path).expect("the store has a log");
    assert!(bytes.len() > 40, "the log holds {} bytes", bytes.len());
    bytes[14] ^= 0x40; // inside the first batch's records
    std::fs::write(&path, &bytes).expect("damage the log");
    host.restart().await;
    let reply = host.get("/kv/get?k=2").await;
    assert_eq!(reply.status, 500, "{}", reply.body);
    assert!(
        reply.body.contains("damaged at byte 0") && reply.body.contains("wal"),
        "no clear error: {}",
        reply.body
    );
    // The file is kept for an operator, and the host serves on.
    assert_eq!(std::fs::read(&path).expect("the log is kept"), bytes);
    assert_eq!(host.get("/healthz").await.status, 200);
}
