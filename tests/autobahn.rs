//! RFC 6455 conformance: Autobahn|Testsuite's fuzzingclient (cases 1.x-10.x, about
//! 300) against an echo mim, with `--max-message` raised to the 16 MiB of the biggest
//! 9.x case. Any FAILED case fails the test; the summary table is printed.
//!
//! Needs the suite's Python 3 venv, built by `../shared/autobahn/setup.sh` (next to
//! the repository; `AUTOBAHN_DIR` overrides) into `AUTOBAHN_VENV` (default
//! `~/.cache/autobahn-py3/venv`). The test builds the venv when it is missing; if it
//! cannot, it fails under `CI=true` and skips with the reason otherwise.

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::{mim_json, Host, Mims};

/// An echo mim: text back as text, binary back as binary.
const ECHO: &str = r#"
exports.get = function (req) {
  if (!req.webSocket) return { body: 'autobahn echo' };
  return { webSocket: {} };
};
exports.webSocketEvent = function (event) {
  if (event.type !== 'message') return;
  return { body: event.binary ? event.bytes : event.message };
};
"#;

/// The biggest message the 9.x cases send (9.1.6, 9.2.6: 16 MiB).
const MAX_MESSAGE: &str = "16MiB";

/// The whole run's bound (it takes a minute or two on a quiet machine).
const RUN_TIMEOUT: Duration = Duration::from_secs(900);

/// `../shared/autobahn` next to the repository, or `AUTOBAHN_DIR`.
fn autobahn_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("AUTOBAHN_DIR") {
        return PathBuf::from(dir);
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the cli crate sits in the repository");
    repo.join("../shared/autobahn")
}

/// Where `setup.sh` puts (and `run.sh` finds) the venv.
fn venv_dir() -> PathBuf {
    match std::env::var_os("AUTOBAHN_VENV") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(".cache/autobahn-py3/venv")
        }
    }
}

/// Builds the venv when it is missing; the reason when the suite cannot run.
fn prepare(dir: &Path) -> Result<(), String> {
    if !dir.join("run.sh").is_file() || !dir.join("setup.sh").is_file() {
        return Err(format!("no Autobahn scripts in {}", dir.display()));
    }
    if venv_dir().join("bin/wstest").is_file() {
        return Ok(());
    }
    eprintln!(
        "building the Autobahn venv in {} ({}/setup.sh)",
        venv_dir().display(),
        dir.display()
    );
    let out = Command::new("bash")
        .arg(dir.join("setup.sh"))
        .output()
        .map_err(|e| format!("cannot run setup.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "setup.sh failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// Whether the test may run: fails under `CI=true` when the suite is unavailable,
/// otherwise skips with the reason.
fn can_run(dir: &Path) -> bool {
    match prepare(dir) {
        Ok(()) => true,
        Err(reason) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true and the Autobahn test cannot run: {reason}")
        }
        Err(reason) => {
            eprintln!("skipping the Autobahn test: {reason}");
            false
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobahn_cases_1_to_10_pass() {
    let dir = autobahn_dir();
    if !can_run(&dir) {
        return;
    }
    let mims = Mims::new()
        .with("echo/index.js", ECHO)
        .with("echo/mim.json", &mim_json(&[]));
    let host = Host::start_with(
        &mims.path(),
        &[
            "--max-message",
            MAX_MESSAGE,
            "--mim-memory",
            "1GiB",
            "--handler-timeout",
            "30s",
        ],
    )
    .await;
    host.get("/echo").await.assert_ok("autobahn echo");
    let reports = tempfile::TempDir::new().expect("report dir");
    let url = format!("ws://{}/echo", host.addr());
    let run = dir.join("run.sh");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .arg(run)
            .arg(url)
            .arg("1.*,2.*,3.*,4.*,5.*,6.*,7.*,8.*,9.*,10.*")
            .env("AGENT", "mimhost")
            .env("OUTDIR", reports.path())
            .env("RUN_TIMEOUT", RUN_TIMEOUT.as_secs().to_string())
            .env("SUMMARY_ARGS", "--details")
            .output()
            .map(|out| (out, reports))
    })
    .await
    .expect("join")
    .expect("run run.sh");
    let (out, _reports) = out;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "Autobahn found FAILED cases or could not run ({}):\n{stdout}\n{stderr}\nhost stderr:\n{}",
        out.status,
        host.stderr()
    );
    assert!(
        stdout.contains("OK"),
        "no summary table in the output:\n{stdout}"
    );
}
