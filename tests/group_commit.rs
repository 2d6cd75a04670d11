//! Group commit keeps SPEC 7's promise: a write is durable before its answer leaves.
//! Many connections write at once, the host and its worker are killed with SIGKILL in
//! the middle of the burst, and every write that was acknowledged must be there after
//! a restart.

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
