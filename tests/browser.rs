//! A real browser against the host: headless Debian Chromium, driven by
//! playwright-core (`tests/browser/run.mjs`), opens the seed 003 chat page in two
//! tabs, runs the seed 000 browser snippet on the notify dispatch channel and seed
//! 002's on the relay mim's Dirigible endpoint; and (`tests/browser/console.mjs`)
//! walks the web console from sign-in to remove.
//!
//! Needs `node`, `/usr/bin/chromium` (or `CHROMIUM`) and
//! `(cd tests/browser && npm ci)`; without them the test fails when `CI=true` and is
//! skipped otherwise.

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use support::Mims;

/// The npm project holding the driver script.
fn project() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/browser")
}

/// What is missing to run a browser, if anything.
fn missing_prerequisite() -> Option<String> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return Some(format!(
            "no Chromium at {chromium} (apt-get install chromium)"
        ));
    }
    let node = std::process::Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        return Some("no `node` on PATH".into());
    }
    if !project()
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        return Some("playwright-core is not installed (cd tests/browser && npm ci)".into());
    }
    None
}

/// Whether the test may run: fails under `CI=true` when something is missing,
/// otherwise skips with the reason.
fn can_run() -> bool {
    match missing_prerequisite() {
        None => true,
        Some(reason) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true and the browser test cannot run: {reason}")
        }
        Some(reason) => {
            eprintln!("skipping the browser test: {reason}");
            false
        }
    }
}

/// The repository's `mims/<name>` copied into `mims`.
fn copy_repo_mim(mims: &Mims, name: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../mims")
        .join(name);
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let entry = entry.expect("dir entry");
        let text = std::fs::read_to_string(entry.path()).expect("read mim file");
        mims.write(
            &format!("{name}/{}", entry.file_name().to_string_lossy()),
            &text,
        );
    }
}

/// Runs `node tests/browser/<script> BASE_URL args…` and returns its JSON result;
/// panics with the driver's and the host's output when it fails.
async fn drive(host: &support::Host, script: &str, args: &[&str]) -> Value {
    let mut driver = tokio::process::Command::new("node");
    driver
        .arg(project().join(script))
        .arg(host.url(""))
        .args(args)
        .current_dir(project())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(180), driver.output())
        .await
        .expect("the browser driver finished within 180 s")
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let result: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON result; stdout:\n{stdout}\nstderr:\n{stderr}"));
    assert!(
        output.status.success() && result["ok"] == true,
        "browser driver {script} failed ({}): {}\nstderr:\n{stderr}\nhost stderr:\n{}",
        output.status,
        result["error"].as_str().unwrap_or(&stdout),
        host.stderr()
    );
    result
}

#[tokio::test(flavor = "multi_thread")]
async fn chromium_chats_in_two_tabs_and_receives_dispatched_events() {
    if !can_run() {
        return;
    }
    let mims = Mims::new();
    copy_repo_mim(&mims, "chat");
    copy_repo_mim(&mims, "notify");
    copy_repo_mim(&mims, "relay");
    let host = support::Host::start(&mims.path()).await;
    let result = drive(&host, "run.mjs", &[]).await;

    // Both tabs show the welcome line first, then both messages in order.
    for tab in ["a", "b"] {
        let lines: Vec<&str> = result["chat"][tab]
            .as_array()
            .expect("chat lines")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(
            lines[1..],
            ["hello from tab A", "and back from tab B"],
            "tab {tab}: {lines:?}"
        );
        assert!(!lines[0].is_empty(), "tab {tab} had no welcome line");
    }

    let notify = &result["notify"];
    assert_eq!(notify["answer"], r#"{"sent":true}"#);
    assert_eq!(
        notify["received"],
        serde_json::json!([{ "type": "notification", "message": "New data available" }])
    );
    let logged: Vec<&str> = notify["logged"]
        .as_array()
        .expect("console lines")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for line in [
        "Connected to WebSocket",
        "Event type: notification",
        "Message: New data available",
    ] {
        assert!(logged.contains(&line), "{line:?} not in {logged:?}");
    }
    // Seed 002: the page's message went through the relay's outbound client and back.
    assert_eq!(
        result["dirigible"]["received"],
        serde_json::json!(["hello from chromium"])
    );
}

/// The web console in Chromium: sign in (a wrong token is refused), see the example
/// mims, deploy a `.js` by drop, see its log line live, hot swap it by drop, remove
/// it, deploy a folder's tar by drop; the container page's screenshot is checked
/// (and kept as `docs/img/console.png` with `MIMHOST_UPDATE_SCREENSHOT=1`).
#[tokio::test(flavor = "multi_thread")]
async fn chromium_runs_the_web_console_from_sign_in_to_remove() {
    if !can_run() {
        return;
    }
    let mims = Mims::new();
    for name in ["hello", "notify", "chat", "trigger", "notes"] {
        copy_repo_mim(&mims, name);
    }
    let host = support::Host::start(&mims.path()).await;
    // The screenshot lands in a temporary folder, so a test run leaves the tree
    // clean; `MIMHOST_UPDATE_SCREENSHOT=1` writes it over the docs' picture.
    let shots = tempfile::TempDir::new().expect("temp dir");
    let screenshot = if std::env::var_os("MIMHOST_UPDATE_SCREENSHOT").is_some() {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/img/console.png")
    } else {
        shots.path().join("console.png")
    };
    std::fs::create_dir_all(screenshot.parent().expect("docs/img")).expect("create docs/img");
    let shot = screenshot.display().to_string();
    // A folder mim packed into an image, for the tar drop.
    let packed = tempfile::TempDir::new().expect("temp dir");
    let folder = packed.path().join("src");
    std::fs::create_dir_all(&folder).expect("mkdir");
    std::fs::write(
        folder.join("index.js"),
        "app.get('/', (q, r) => r.end(require('./lib.js').text));",
    )
    .expect("write index.js");
    std::fs::write(folder.join("lib.js"), "exports.text = 'from a tar';").expect("write lib.js");
    let image = packed.path().join("packed.tar");
    let pack = std::process::Command::new(env!("CARGO_BIN_EXE_mimhost"))
        .args([
            "pack",
            &folder.display().to_string(),
            "-o",
            &image.display().to_string(),
        ])
        .output()
        .expect("run mimhost pack");
    assert!(pack.status.success(), "{pack:?}");
    let image = image.display().to_string();
    let result = drive(&host, "console.mjs", &[support::TOKEN, &shot, &image]).await;

    assert!(
        result["hint"]
            .as_str()
            .is_some_and(|h| h.contains("<data>/mcm-token")),
        "{result}"
    );
    assert!(
        result["refused"]
            .as_str()
            .is_some_and(|r| r.contains("401")),
        "{result}"
    );
    let csp = result["csp"].as_str().unwrap_or_default();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    let listed: Vec<&str> = result["listed"]
        .as_array()
        .expect("listed")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for name in ["chat", "hello", "notes", "notify", "trigger"] {
        assert!(listed.contains(&name), "{name} not listed: {listed:?}");
    }
    assert!(
        result["deployed"]
            .as_str()
            .is_some_and(|d| d.starts_with("deployed greeter")),
        "{result}"
    );
    assert_eq!(result["first"]["body"], "v1");
    assert_eq!(result["swapped"]["body"], "v2");
    assert_eq!(result["gone"]["status"], 404);
    assert_eq!(result["fromTar"]["body"], "from a tar", "{result}");
    assert_eq!(result["cookies"], 0, "the console sets no cookie");
    assert!(result["apiCalls"].as_u64() > Some(5), "{result}");
    assert_eq!(
        result["withoutBearer"],
        serde_json::json!([]),
        "every API call carries the token"
    );
    assert_eq!(result["withCookie"], serde_json::json!([]));
    assert_eq!(result["cspViolations"], serde_json::json!([]));
    let png = std::fs::read(&screenshot).expect("the screenshot was saved");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
}
