//! Hot reload of the `mims/` folder (SPEC 2): edits swap the code without a
//! restart, a broken edit keeps the old version and logs file:line:column, and
//! new mims start serving.

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use support::{poll_until, serve, Host};

/// How long a change may take to show.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// A route-style mim answering `GET /version` with `version`.
fn versioned(version: &str) -> String {
    format!("app.get('/version', (request, response) => response.end('{version}'));\n")
}

/// Polls `GET path` until it answers 200 with `body`.
async fn wait_for_body(host: &Host, path: &str, body: &str) {
    let seen = poll_until(RELOAD_TIMEOUT, || async {
        let reply = host.get(path).await;
        (reply.status == 200 && reply.body == body).then_some(())
    })
    .await;
    if seen.is_none() {
        let last = host.get(path).await;
        panic!("GET {path} never answered {body:?}; last answer {last:?}");
    }
}

/// Whether `line` holds `file:LINE:COL` with this `line_no` and any column.
fn has_position(line: &str, file: &str, line_no: u32) -> bool {
    let prefix = format!("{file}:{line_no}:");
    line.match_indices(&prefix).any(|(at, _)| {
        line[at + prefix.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn editing_a_mim_swaps_its_code_without_restart() {
    let index = |tag: &str| {
        format!(
            "const lib = require('./lib');\n\
             app.get('/version', (request, response) => response.end('{tag}:' + lib));\n"
        )
    };
    let (mims, host) = serve(&[
        ("live/index.js", &index("one")),
        ("live/lib.js", "module.exports = 'a';"),
    ])
    .await;
    host.get("/live/version").await.assert_ok("one:a");

    mims.write("live/index.js", &index("two"));
    wait_for_body(&host, "/live/version", "two:a").await;
    mims.write("live/lib.js", "module.exports = 'b';");
    wait_for_body(&host, "/live/version", "two:b").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_edit_keeps_the_old_version_and_logs_the_position() {
    let (mims, host) = serve(&[("live/index.js", &versioned("v1"))]).await;
    host.get("/live/version").await.assert_ok("v1");

    // The syntax error is on line 3.
    mims.write(
        "live/index.js",
        "app.get('/version', (request, response) => {\n  response.end('broken');\n  response.end('v2' +);\n});\n",
    );
    host.wait_for_log_line(
        "a log line with index.js:3:COLUMN",
        RELOAD_TIMEOUT,
        |line| has_position(line, "index.js", 3),
    )
    .await;
    host.get("/live/version").await.assert_ok("v1");

    mims.write("live/index.js", &versioned("v3"));
    wait_for_body(&host, "/live/version", "v3").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn new_mims_start_serving() {
    let (mims, host) = serve(&[("first/index.js", &versioned("first"))]).await;
    host.get("/first/version").await.assert_ok("first");
    host.get("/fresh/version").await.assert_error(404);
    host.get("/solo/version").await.assert_error(404);

    mims.write("fresh/index.js", &versioned("fresh"));
    wait_for_body(&host, "/fresh/version", "fresh").await;
    mims.write("solo.js", &versioned("solo"));
    wait_for_body(&host, "/solo/version", "solo").await;
    host.get("/first/version").await.assert_ok("first");
}

#[test]
fn has_position_needs_line_and_column() {
    assert!(has_position(
        "error at /x/mims/live/index.js:3:21: unexpected",
        "index.js",
        3
    ));
    assert!(!has_position("index.js:3: unexpected", "index.js", 3));
    assert!(!has_position("index.js:13:2", "index.js", 3));
}
