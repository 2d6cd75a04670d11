//! docs/guide.md cannot rot: every code block in it is extracted and exercised, in
//! order, against one real host. The word after a block's language says how:
//!
//! - `sh host`: the `mimhost serve` line; the host is started with its flags.
//! - `js mim=NAME/FILE`, `json mim=NAME/FILE`: saved as `mims/NAME/FILE` (with
//!   `127.0.0.1:8083` pointing at the test host); once the
//!   mim has an `index.js` the test waits for the host to (re)load it.
//! - `js file=PATH`: saved as `PATH` in the shell's working folder.
//! - `sh run`: run with bash there (`mimhost` on PATH, the token in
//!   `.mimhost/mcm-token`, `127.0.0.1:8083` pointing at the test host); must exit 0.
//! - `js node`: run as an ES module with Node (`--experimental-websocket`); must exit 0.
//! - `text output`: every line must appear in what the block before printed.
//! - `js check`: type-checked with `types/` (tsc), as are all the mims.
//!
//! A block with no such word fails the test. Needs `node` (and `(cd types && npm ci)`
//! for the tsc part); without them it fails when `CI=true` and is skipped otherwise.

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::{Host, Mims, TOKEN};

const WAIT: Duration = Duration::from_secs(30);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// One fenced block: its info string and its text.
#[derive(Debug)]
struct Block {
    info: String,
    text: String,
    line: usize,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in markdown.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some(Block {
                    info: info.trim().to_string(),
                    text: String::new(),
                    line: i + 1,
                })
            }
            (Some(_), Some("")) => out.extend(open.take()),
            (Some(block), _) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "an unclosed code block in the guide");
    out
}

/// What to do with a block: (language, word, argument).
fn kind(info: &str) -> (&str, &str, &str) {
    let mut words = info.split_whitespace();
    let lang = words.next().unwrap_or("");
    let word = words.next().unwrap_or("");
    let (word, arg) = word.split_once('=').unwrap_or((word, ""));
    (lang, word, arg)
}

fn node_ok() -> Result<(), String> {
    let ok = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Ok(())
    } else {
        Err("no `node` on PATH".into())
    }
}

fn tsc() -> Result<PathBuf, String> {
    let tsc = repo().join("types/node_modules/typescript/bin/tsc");
    if tsc.exists() {
        Ok(tsc)
    } else {
        Err("typescript is not installed (cd types && npm ci)".into())
    }
}

fn skip_or_fail(reason: String) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true and the guide test cannot run: {reason}");
    }
    eprintln!("skipping the guide test: {reason}");
}

/// The host's address in place of the guide's `127.0.0.1:8083` / `localhost:8083`.
fn localise(text: &str, host: &Host) -> String {
    text.replace("127.0.0.1:8083", host.addr())
        .replace("localhost:8083", host.addr())
}

/// Runs a command with a deadline; returns (success, stdout, stderr).
async fn run(mut cmd: tokio::process::Command, what: &str) -> (bool, String, String) {
    cmd.kill_on_drop(true).stdin(std::process::Stdio::null());
    let out = tokio::time::timeout(WAIT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {WAIT:?}"))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The newest line number of `name`'s log (0 when it has none).
async fn last_seq(host: &Host, name: &str) -> u64 {
    let reply = support::send(
        host.request(
            reqwest::Method::GET,
            &format!("/mcm/v1/containers/{name}/logs"),
        )
        .bearer_auth(TOKEN),
    )
    .await;
    if reply.status != 200 {
        return 0;
    }
    reply.json()["data"]
        .as_array()
        .and_then(|l| l.last())
        .and_then(|l| l["seq"].as_u64())
        .unwrap_or(0)
}

/// Waits until `name` logs that it started or was hot swapped after line `after`.
async fn wait_loaded(host: &Host, name: &str, after: u64) {
    let loaded = support::poll_until(WAIT, || async {
        let reply = support::send(
            host.request(
                reqwest::Method::GET,
                &format!("/mcm/v1/containers/{name}/logs"),
            )
            .bearer_auth(TOKEN),
        )
        .await;
        let lines = if reply.status == 200 {
            reply.json()["data"].as_array().cloned().unwrap_or_default()
        } else {
            Vec::new()
        };
        lines
            .iter()
            .any(|l| {
                l["seq"].as_u64() > Some(after)
                    && l["source"] == "host"
                    && (l["message"] == "started"
                        || l["message"] == "hot swapped: the new code is serving")
            })
            .then_some(())
    })
    .await;
    assert!(
        loaded.is_some(),
        "mim {name} did not load; host stderr:\n{}",
        host.stderr()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_block_of_the_guide_runs() {
    if let Err(reason) = node_ok() {
        return skip_or_fail(reason);
    }
    let guide = std::fs::read_to_string(repo().join("docs/guide.md")).expect("read docs/guide.md");
    let all = blocks(&guide);
    assert!(all.len() > 20, "the guide has {} blocks", all.len());

    let mims = Mims::new();
    let work = tempfile::TempDir::new().expect("working folder");
    std::fs::create_dir_all(work.path().join(".mimhost")).expect(".mimhost");
    std::fs::write(work.path().join(".mimhost/mcm-token"), TOKEN).expect("token file");
    let checks = work.path().join("checks");
    std::fs::create_dir_all(&checks).expect("checks/");
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_mimhost"))
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let mut host: Option<Host> = None;
    let mut last_output: Option<(usize, String)> = None;
    let mut ran = 0;
    for (n, block) in all.iter().enumerate() {
        let at = format!("docs/guide.md:{} ({})", block.line, block.info);
        let (lang, word, arg) = kind(&block.info);
        match (lang, word) {
            ("sh", "host") => {
                assert!(host.is_none(), "{at}: a second host block");
                let line = block.text.trim();
                let flags = line
                    .strip_prefix("mimhost serve")
                    .unwrap_or_else(|| panic!("{at}: not a `mimhost serve` line"));
                let mut extra = Vec::new();
                let mut words = flags.split_whitespace();
                while let Some(w) = words.next() {
                    if w == "--mims" {
                        words.next(); // the test's own mims folder stands for it
                    } else {
                        extra.push(w.to_string());
                    }
                }
                let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
                host = Some(Host::start_with(&mims.path(), &extra).await);
            }
            (_, "mim") => {
                let host = host.as_ref().unwrap_or_else(|| panic!("{at}: no host yet"));
                let (name, _) = arg
                    .split_once('/')
                    .unwrap_or_else(|| panic!("{at}: mim=NAME/FILE"));
                let before = last_seq(host, name).await;
                mims.write(arg, &localise(&block.text, host));
                if mims.path().join(name).join("index.js").exists() {
                    wait_loaded(host, name, before).await;
                }
            }
            ("js", "file") => {
                let target = work.path().join(arg);
                std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
                std::fs::write(&target, &block.text).expect("write file");
            }
            ("sh", "run") => {
                let host = host.as_ref().unwrap_or_else(|| panic!("{at}: no host yet"));
                let mut cmd = tokio::process::Command::new("bash");
                cmd.args(["-euo", "pipefail", "-c", &localise(&block.text, host)])
                    .current_dir(work.path())
                    .env("PATH", &path)
                    .env("MIMHOST_SERVER", host.url(""))
                    .env_remove("MIMHOST_TOKEN")
                    .env_remove("MIMHOST_DATA");
                let (ok, stdout, stderr) = run(cmd, &at).await;
                assert!(
                    ok,
                    "{at} failed:\n{stdout}\n{stderr}\nhost stderr:\n{}",
                    host.stderr()
                );
                last_output = Some((n, stdout));
            }
            ("js", "node") => {
                let host = host.as_ref().unwrap_or_else(|| panic!("{at}: no host yet"));
                let file = work.path().join(format!("client-{n}.mjs"));
                std::fs::write(&file, localise(&block.text, host)).expect("write client");
                let mut cmd = tokio::process::Command::new("node");
                cmd.arg("--experimental-websocket")
                    .arg("--no-warnings")
                    .arg(&file)
                    .current_dir(work.path());
                let (ok, stdout, stderr) = run(cmd, &at).await;
                assert!(
                    ok,
                    "{at} failed:\n{stdout}\n{stderr}\nhost stderr:\n{}",
                    host.stderr()
                );
                last_output = Some((n, stdout));
            }
            ("text", "output") => {
                let (from, printed) = last_output
                    .as_ref()
                    .filter(|(from, _)| *from + 1 == n)
                    .unwrap_or_else(|| {
                        panic!("{at}: an output block must follow a run or node block")
                    });
                let printed = host.as_ref().map_or(printed.clone(), |h| {
                    printed.replace(h.addr(), "127.0.0.1:8083")
                });
                for want in block.text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                    assert!(
                        printed.contains(want),
                        "{at}: {want:?} is not in what block {from} printed:\n{printed}"
                    );
                }
            }
            ("js", "check") => {
                std::fs::write(checks.join(format!("check-{n}.js")), &block.text).expect("write");
            }
            _ => panic!("{at}: the block says neither how to run it nor that it is output"),
        }
        ran += 1;
    }
    assert_eq!(ran, all.len());

    // The mims and the check blocks type-check against types/.
    let tsc = match tsc() {
        Ok(tsc) => tsc,
        Err(reason) => return skip_or_fail(reason),
    };
    let types = repo().join("types");
    let config = serde_json::json!({
        "compilerOptions": {
            "checkJs": true, "allowJs": true, "noEmit": true, "target": "es2022", "lib": ["es2022"],
            "module": "commonjs", "moduleResolution": "node10", "types": [], "baseUrl": ".",
            "paths": { "/lib/xp/websocket": [types.join("lib/xp/websocket.d.ts")] }
        },
        "include": [
            mims.path().join("**/*.js"),
            checks.join("*.js"),
            types.join("mimhost.d.ts"),
        ]
    });
    let project = work.path().join("jsconfig.json");
    std::fs::write(&project, config.to_string()).expect("write jsconfig");
    let out = Command::new("node")
        .arg(tsc)
        .args(["-p", &project.display().to_string(), "--pretty", "false"])
        .output()
        .expect("run tsc");
    assert!(
        out.status.success(),
        "the guide's code does not type-check:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn blocks_are_found_with_their_words() {
    let found = blocks("a\n```sh run\necho hi\n```\n\n```text output\nhi\n```\n");
    assert_eq!(found.len(), 2);
    assert_eq!(kind(&found[0].info), ("sh", "run", ""));
    assert_eq!(found[1].text, "hi\n");
    assert_eq!(kind("js mim=a/index.js"), ("js", "mim", "a/index.js"));
}
