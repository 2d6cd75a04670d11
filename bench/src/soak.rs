//! The soak driver behind `bench/soak.sh`: mixed traffic against one host for a fixed
//! time, and the read-back of every write the host acknowledged.
//!
//! Traffic (all bounded by `deadline`, all on the addresses given):
//! - WebSocket sessions churning on the broadcast channel: `sessions` slots, each
//!   opening a session, holding it a few seconds while reading, closing, again;
//! - a broadcast posted every `broadcast_every`;
//! - keep-alive HTTP GETs, paced;
//! - storage writes with unique keys; each one answered 200 is appended to the
//!   writes log (`key\tvalue`) before the next is sent: the log is the acknowledged set;
//! - one slow client: a session that never reads (the host must bound what it queues);
//! - a runaway request (a handler that never returns) every `runaway_every`.

use crate::http::HttpConn;
use crate::net::{Sources, Target};
use crate::now_ns;
use crate::ws::{Msg, WsClient};
use serde_json::{json, Value};
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// What one soak run does.
#[derive(Debug, Clone)]
pub struct SoakPlan {
    /// `http://127.0.0.1:PORT` of the host.
    pub base: String,
    /// How long the traffic lasts.
    pub duration: Duration,
    /// Session slots churning on the broadcast channel.
    pub sessions: usize,
    /// Longest a session is held (each holds a pseudo-random 1..=this seconds).
    pub hold_max_s: u64,
    /// Time between broadcasts.
    pub broadcast_every: Duration,
    /// Time between runaway requests.
    pub runaway_every: Duration,
    /// Pause between two HTTP GETs (and two writes) of one connection.
    pub pace: Duration,
    /// Where acknowledged writes are appended.
    pub writes_log: String,
    /// Loopback source addresses to spread client sockets over.
    pub sources: usize,
}

/// Counters shared by the traffic tasks.
#[derive(Default)]
struct Tally {
    sessions_opened: AtomicU64,
    session_failures: AtomicU64,
    notifications: AtomicU64,
    broadcasts_ok: AtomicU64,
    broadcasts_failed: AtomicU64,
    gets_ok: AtomicU64,
    gets_failed: AtomicU64,
    writes_acked: AtomicU64,
    writes_refused: AtomicU64,
    runaway_statuses: Mutex<Vec<String>>,
    slow_reconnects: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Tally {
    fn error(&self, what: &str, e: impl std::fmt::Display) {
        self.first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(|| format!("{what}: {e}"));
    }
}

/// xorshift: cheap per-task pseudo-randomness for hold times.
fn next_rand(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn target(base: &str, path: &str) -> std::io::Result<Target> {
    Target::parse(&format!("{base}{path}"))
}

/// Runs the plan; returns the counters as JSON.
pub async fn run(plan: SoakPlan) -> std::io::Result<Value> {
    let deadline = Instant::now() + plan.duration;
    let tally = Arc::new(Tally::default());
    let ws_base = plan.base.replacen("http://", "ws://", 1);
    let channel = target(&ws_base, "/ws/notify")?;
    let sources = Arc::new(Sources::new(10, plan.sources));
    let gate = Arc::new(Semaphore::new(100));
    let mut tasks = Vec::new();

    // Churning sessions, started spread over the first ten seconds.
    for slot in 0..plan.sessions {
        let (channel, sources, gate, tally) = (
            channel.clone(),
            sources.clone(),
            gate.clone(),
            tally.clone(),
        );
        let stagger = Duration::from_millis((slot as u64 * 10_000) / plan.sessions.max(1) as u64);
        let hold_max = plan.hold_max_s.max(1);
        tasks.push(tokio::spawn(async move {
            let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (slot as u64 + 1);
            tokio::time::sleep(stagger).await;
            while Instant::now() < deadline {
                let permit = gate.acquire().await;
                let opened =
                    WsClient::connect(sources.pick(), &channel, None, Duration::from_secs(10))
                        .await;
                drop(permit);
                let mut client = match opened {
                    Ok(c) => c,
                    Err(e) => {
                        tally.session_failures.fetch_add(1, Ordering::Relaxed);
                        tally.error("session", e);
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                };
                tally.sessions_opened.fetch_add(1, Ordering::Relaxed);
                let hold = Duration::from_secs(1 + next_rand(&mut rng) % hold_max);
                let until = (Instant::now() + hold).min(deadline);
                let tally2 = tally.clone();
                let read = async move {
                    let mut on = |m: Msg<'_>| {
                        if matches!(m, Msg::Text(_)) {
                            tally2.notifications.fetch_add(1, Ordering::Relaxed);
                        }
                    };
                    if let Ok(true) = client.drain_buffered(&mut on).await {
                        while let Ok(true) = client.pump(&mut on).await {}
                    }
                };
                // Dropping the reader at `until` closes the socket: the churn.
                let _ = tokio::time::timeout_at(until, read).await;
            }
        }));
    }

    // Broadcasts.
    {
        let (t, tally, every) = (
            target(&plan.base, "/notify/notify")?,
            tally.clone(),
            plan.broadcast_every,
        );
        tasks.push(tokio::spawn(async move {
            paced_requests(t, "POST", every, deadline, |ok, _| {
                let c = if ok {
                    &tally.broadcasts_ok
                } else {
                    &tally.broadcasts_failed
                };
                c.fetch_add(1, Ordering::Relaxed);
            })
            .await;
        }));
    }

    // Plain HTTP.
    for _ in 0..2 {
        let (t, tally, pace) = (target(&plan.base, "/hello/")?, tally.clone(), plan.pace);
        tasks.push(tokio::spawn(async move {
            paced_requests(t, "GET", pace, deadline, |ok, _| {
                let c = if ok {
                    &tally.gets_ok
                } else {
                    &tally.gets_failed
                };
                c.fetch_add(1, Ordering::Relaxed);
            })
            .await;
        }));
    }

    // Storage writes: one writer per log line order, two connections.
    let log = Arc::new(Mutex::new(std::io::BufWriter::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&plan.writes_log)?,
    )));
    for w in 0..2u64 {
        let (base, tally, pace, log) = (plan.base.clone(), tally.clone(), plan.pace, log.clone());
        tasks.push(tokio::spawn(async move {
            writer(w, &base, pace, deadline, &tally, &log).await;
        }));
    }

    // The slow client: opens a session and never reads until the end.
    {
        let (channel, tally) = (channel.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            match WsClient::connect(None, &channel, None, Duration::from_secs(10)).await {
                Ok(client) => {
                    tally.slow_reconnects.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep_until(deadline).await;
                    drop(client);
                }
                Err(e) => tally.error("slow client", e),
            }
        }));
    }

    // The runaway handler.
    {
        let (t, tally, every) = (
            target(&plan.base, "/runaway/")?,
            tally.clone(),
            plan.runaway_every,
        );
        tasks.push(tokio::spawn(async move {
            let mut next = Instant::now() + Duration::from_secs(20);
            while next < deadline {
                tokio::time::sleep_until(next).await;
                next += every;
                let started = now_ns();
                let outcome = match HttpConn::connect(None, &t).await {
                    Ok(mut c) => match tokio::time::timeout(
                        Duration::from_secs(90),
                        c.request("GET", &t.path, b""),
                    )
                    .await
                    {
                        Ok(Ok((status, _))) => status.to_string(),
                        Ok(Err(e)) => format!("error: {e}"),
                        Err(_) => "no answer in 90 s".into(),
                    },
                    Err(e) => format!("connect error: {e}"),
                };
                let secs = (now_ns() - started) as f64 / 1e9;
                tally
                    .runaway_statuses
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(format!("{outcome} after {secs:.1} s"));
            }
        }));
    }

    for t in tasks {
        let _ = t.await;
    }
    log.lock().unwrap_or_else(|p| p.into_inner()).flush()?;
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let runaway = tally
        .runaway_statuses
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let first_error = tally
        .first_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Ok(json!({
        "scenario": "soak",
        "duration_s": plan.duration.as_secs_f64(),
        "session_slots": plan.sessions,
        "sessions_opened": n(&tally.sessions_opened),
        "session_failures": n(&tally.session_failures),
        "notifications_received": n(&tally.notifications),
        "broadcasts_ok": n(&tally.broadcasts_ok),
        "broadcasts_failed": n(&tally.broadcasts_failed),
        "gets_ok": n(&tally.gets_ok),
        "gets_failed": n(&tally.gets_failed),
        "writes_acknowledged": n(&tally.writes_acked),
        "writes_refused": n(&tally.writes_refused),
        "slow_client_connects": n(&tally.slow_reconnects),
        "runaway": runaway,
        "first_error": first_error,
    }))
}

/// Sends `method` to `t` every `pace` until `deadline` over one kept connection;
/// `count(ok, status)` after each (ok = a 2xx arrived).
async fn paced_requests(
    t: Target,
    method: &str,
    pace: Duration,
    deadline: Instant,
    count: impl Fn(bool, u16),
) {
    let mut conn: Option<HttpConn> = None;
    while Instant::now() < deadline {
        if conn.as_ref().is_none_or(|c| c.closing) {
            conn = HttpConn::connect(None, &t).await.ok();
        }
        let status = match conn.as_mut() {
            Some(c) => {
                match tokio::time::timeout(Duration::from_secs(10), c.request(method, &t.path, b""))
                    .await
                {
                    Ok(Ok((s, _))) => Some(s),
                    _ => None,
                }
            }
            None => None,
        };
        if status.is_none() {
            conn = None;
        }
        let s = status.unwrap_or(0);
        count((200..300).contains(&s), s);
        tokio::time::sleep(pace).await;
    }
}

/// Writes unique keys through the store mim; logs each one answered 200.
async fn writer(
    w: u64,
    base: &str,
    pace: Duration,
    deadline: Instant,
    tally: &Tally,
    log: &Mutex<std::io::BufWriter<std::fs::File>>,
) {
    let Ok(t) = target(base, "/soak-store/") else {
        return;
    };
    let mut conn: Option<HttpConn> = None;
    let mut n = 0u64;
    while Instant::now() < deadline {
        n += 1;
        let key = format!("w{w}-{n}");
        let value = format!("v{w}-{n}-{}", now_ns());
        if conn.as_ref().is_none_or(|c| c.closing) {
            conn = HttpConn::connect(None, &t).await.ok();
        }
        let path = format!("/soak-store/?k={key}");
        let answer = match conn.as_mut() {
            Some(c) => tokio::time::timeout(
                Duration::from_secs(10),
                c.request("POST", &path, value.as_bytes()),
            )
            .await
            .ok()
            .and_then(Result::ok),
            None => None,
        };
        match answer {
            Some((200, _)) => {
                tally.writes_acked.fetch_add(1, Ordering::Relaxed);
                let mut l = log.lock().unwrap_or_else(|p| p.into_inner());
                let _ = writeln!(l, "{key}\t{value}");
            }
            Some((status, _)) => {
                tally.writes_refused.fetch_add(1, Ordering::Relaxed);
                tally.error("write", format!("status {status}"));
            }
            None => {
                tally.writes_refused.fetch_add(1, Ordering::Relaxed);
                conn = None;
            }
        }
        tokio::time::sleep(pace).await;
    }
}

/// Reads back every acknowledged write in `writes_log` (the store mim answers 200
/// when the stored value equals the one given); returns the tally as JSON.
pub async fn verify(base: &str, writes_log: &str) -> std::io::Result<Value> {
    let t = target(base, "/soak-store/")?;
    let file = std::io::BufReader::new(std::fs::File::open(writes_log)?);
    let mut conn: Option<HttpConn> = None;
    let (mut acknowledged, mut verified) = (0u64, 0u64);
    let mut missing: Vec<String> = Vec::new();
    for line in file.lines() {
        let line = line?;
        let Some((key, value)) = line.split_once('\t') else {
            continue;
        };
        acknowledged += 1;
        let path = format!("/soak-store/?k={key}&v={value}");
        let mut status = None;
        for _ in 0..3 {
            if conn.as_ref().is_none_or(|c| c.closing) {
                conn = HttpConn::connect(None, &t).await.ok();
            }
            if let Some(c) = conn.as_mut() {
                match c.request("GET", &path, b"").await {
                    Ok((s, _)) => {
                        status = Some(s);
                        break;
                    }
                    Err(_) => conn = None,
                }
            }
        }
        match status {
            Some(200) => verified += 1,
            other => {
                if missing.len() < 20 {
                    missing.push(format!("{key} ({other:?})"));
                }
            }
        }
    }
    Ok(json!({
        "writes_acknowledged": acknowledged,
        "writes_verified": verified,
        "writes_missing": acknowledged - verified,
        "first_missing": missing,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_times_vary_and_never_stick_at_zero() {
        let mut s = 0x9E37_79B9_7F4A_7C15u64 ^ 1;
        let draws: Vec<u64> = (0..8).map(|_| next_rand(&mut s) % 20).collect();
        assert!(draws.iter().any(|&d| d != draws[0]));
        assert_ne!(s, 0);
    }

    #[test]
    fn bad_base_or_missing_log_is_an_error_not_a_panic() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        assert!(rt
            .block_on(verify("ftp://127.0.0.1:1", "/nonexistent"))
            .is_err());
        assert!(rt
            .block_on(verify("http://127.0.0.1:1", "/nonexistent/soak-writes"))
            .is_err());
    }
}
