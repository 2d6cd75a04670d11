//! Runaway code never takes the host down (SPEC 10): endless loops and
//! unbounded allocation are stopped within the handler timeout, the worker is
//! restarted, other mims keep their latency and no core stays burned; source
//! and data nested too deep are refused or fail alone.

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::Method;
use support::{poll_until, proc, send, serve, Host, Mims, Reply};
use tokio::task::JoinHandle;

/// These tests burn a core on purpose: run them one at a time so one test's
/// runaway does not slow another test's latency probes.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A mim with one well-behaved route and one route per kind of runaway.
const SPIN: &str = r#"
app.get('/ok', (request, response) => response.end('spin-ok'));
app.get('/loop', () => { while (true) {} });
app.get('/foreach', () => { [1, 2].forEach(() => { while (true) {} }); });
app.get('/alloc', () => { var a = []; while (true) a.push(new Array(1e6).fill(1)); });
"#;

/// A well-behaved mim whose latency must not suffer.
const CALM: &str = "app.get('/ping', (request, response) => response.end('pong'));";

/// The slowest answer `calm` may give while `spin` runs away.
const MAX_LATENCY: Duration = Duration::from_millis(500);

/// The longest a runaway request may take with `--handler-timeout 2s`.
const MAX_RUNAWAY: Duration = Duration::from_secs(8);

/// CPU use (in cores) above which a process counts as burning a core.
const BUSY: f64 = 0.5;

/// Nesting depth for the deep-nesting tests.
const DEPTH: usize = 100_000;

/// Starts a host with `spin` and `calm`, both warmed up.
async fn spin_and_calm() -> (Mims, Host) {
    let (mims, host) = serve(&[("spin/index.js", SPIN), ("calm/index.js", CALM)]).await;
    host.get("/spin/ok").await.assert_ok("spin-ok");
    host.get("/calm/ping").await.assert_ok("pong");
    (mims, host)
}

/// Requests `spin<path>` and checks the whole contract: an answer in
/// `allowed` within the timeout, `calm` fast meanwhile, `spin` serving again
/// afterwards, and as many workers as before with none burning CPU.
async fn assert_runaway_contained(path: &str, allowed: &[u16]) {
    let _serial = SERIAL.lock().await;
    let (_mims, host) = spin_and_calm().await;
    let workers = proc::worker_pids(host.pid());
    assert!(
        workers.len() >= 2,
        "expected one `mimhost worker` process per container, found {workers:?}"
    );

    let started = Instant::now();
    let runaway = tokio::spawn(send(host.request(Method::GET, &format!("/spin{path}"))));
    let mut seen = workers.clone();
    let probes = probe_while_pending(&host, &runaway, &mut seen).await;
    let reply = runaway.await.expect("runaway request task");
    let took = started.elapsed();
    assert!(
        allowed.contains(&reply.status),
        "{path}: wanted one of {allowed:?}, got {reply:?}"
    );
    assert!(took < MAX_RUNAWAY, "{path}: answered after {took:?}");
    // A runaway that lasts (a loop until the timeout) must have been probed.
    assert!(
        probes >= 3 || took < Duration::from_secs(1),
        "only {probes} probes in the {took:?} {path} ran away"
    );

    host.get("/spin/ok").await.assert_ok("spin-ok");
    host.get("/calm/ping").await.assert_ok("pong");
    assert_no_core_burned(&host, workers.len(), seen).await;
}

/// Pings `calm` until `runaway` finishes, asserting each answer is right and
/// fast; adds every worker pid seen meanwhile to `seen`. Returns the number
/// of pings.
async fn probe_while_pending(
    host: &Host,
    runaway: &JoinHandle<Reply>,
    seen: &mut BTreeSet<i32>,
) -> usize {
    let mut probes = 0;
    while !runaway.is_finished() {
        let started = Instant::now();
        host.get("/calm/ping").await.assert_ok("pong");
        let latency = started.elapsed();
        assert!(
            latency < MAX_LATENCY,
            "calm took {latency:?} while spin ran away"
        );
        seen.extend(proc::worker_pids(host.pid()));
        probes += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    probes
}

/// Waits (up to 10 s) until the host has `expected` workers again and
/// neither it, its workers, nor any worker in `seen` (e.g. an abandoned
/// runaway) uses more than [`BUSY`] of a core.
async fn assert_no_core_burned(host: &Host, expected: usize, seen: BTreeSet<i32>) {
    let measure = || {
        let current = proc::worker_pids(host.pid());
        let mut watched: BTreeSet<i32> = seen.union(&current).copied().collect();
        watched.insert(host.pid());
        async move {
            let loads = proc::cpu_load(&watched, Duration::from_millis(300)).await;
            (current, loads)
        }
    };
    let settled = poll_until(Duration::from_secs(10), || async {
        let (current, loads) = measure().await;
        (current.len() == expected && loads.values().all(|l| *l < BUSY)).then_some(())
    })
    .await;
    if settled.is_none() {
        let (current, loads) = measure().await;
        panic!(
            "after the runaway: {} workers {current:?} (expected {expected}), CPU by pid {loads:?}",
            current.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn endless_loop_gets_504_and_the_worker_is_restarted() {
    assert_runaway_contained("/loop", &[504]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn endless_loop_inside_for_each_gets_504() {
    assert_runaway_contained("/foreach", &[504]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn allocation_past_mim_memory_is_stopped() {
    assert_runaway_contained("/alloc", &[500, 504]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deeply_nested_source_is_refused_at_load() {
    let source = format!(
        "app.get('/', (request, response) => response.end('loaded'));\nvar deep = {}{};\n",
        "[".repeat(DEPTH),
        "]".repeat(DEPTH)
    );
    let (_mims, host) = serve(&[("deepsrc/index.js", &source), ("calm/index.js", CALM)]).await;

    host.get("/calm/ping").await.assert_ok("pong");
    let reply = host.get("/deepsrc/").await;
    assert!(reply.status >= 400, "deepsrc must not load: {reply:?}");
    host.wait_for_log_line(
        "a log line naming deepsrc and saying it is nested too deep",
        Duration::from_secs(10),
        |line| line.contains("deepsrc") && line.to_lowercase().contains("nested"),
    )
    .await;
    host.get("/calm/ping").await.assert_ok("pong");
}

#[tokio::test(flavor = "multi_thread")]
async fn deeply_nested_data_fails_alone() {
    let deep = format!(
        "function deep() {{ var a = []; for (var i = 0; i < {DEPTH}; i++) a = [a]; return a; }}\n"
    );
    let routes = format!(
        "{deep}app.get('/stringify', (request, response) => response.end(String(JSON.stringify(deep()).length)));\n\
         app.get('/ok', (request, response) => response.end('run-ok'));\n"
    );
    let controller = format!(
        "{deep}exports.get = (req) => (req.path.endsWith('/deep') ? {{ body: deep() }} : {{ body: 'ctl-ok' }});\n"
    );
    let (_mims, host) = serve(&[
        ("deeprun/index.js", &routes),
        ("deepctl/index.js", &controller),
        ("calm/index.js", CALM),
    ])
    .await;

    let reply = host.get("/deeprun/stringify").await;
    match reply.status {
        200 => assert_eq!(reply.body, (2 * DEPTH + 2).to_string()),
        500 => {}
        _ => panic!("JSON.stringify of deep data: {reply:?}"),
    }
    host.get("/deeprun/ok").await.assert_ok("run-ok");
    host.get("/calm/ping").await.assert_ok("pong");

    let reply = host.get("/deepctl/deep").await;
    match reply.status {
        200 => assert!(reply.body.starts_with("[[[") && reply.body.ends_with("]]]")),
        500 => {}
        _ => panic!("deep controller body: {reply:?}"),
    }
    host.get("/deepctl/ok").await.assert_ok("ctl-ok");
    host.get("/calm/ping").await.assert_ok("pong");
}
