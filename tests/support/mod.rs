//! Test harness shared by the black-box tests: a real `mimhost serve` on an
//! ephemeral port, a temp `mims/` folder to write mims into, and small HTTP and
//! polling helpers.
//!
//! Include it from a test file with `#[path = "support/mod.rs"] mod support;`.
#![allow(dead_code)]

pub mod proc;
pub mod redis;

use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder};
use serde_json::Value;
use tempfile::TempDir;

/// The MCM token every test host is started with.
pub const TOKEN: &str = "test-token";

/// How long a host may take to print its `listening on` line.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How often [`poll_until`] probes.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Flags every test host gets unless the test passes the same flag itself.
const DEFAULT_FLAGS: [(&str, &str); 4] = [
    ("--listen", "127.0.0.1:0"),
    ("--token", TOKEN),
    ("--handler-timeout", "2s"),
    ("--mim-memory", "128MiB"),
];

/// A temporary `mims/` folder. Files are written atomically (staged next to
/// the folder, then renamed into place) so a watching host never sees half a
/// file.
pub struct Mims {
    root: TempDir,
}

impl Default for Mims {
    fn default() -> Self {
        Self::new()
    }
}

impl Mims {
    /// An empty `mims/` folder in a fresh temp dir.
    pub fn new() -> Self {
        let root = TempDir::new().expect("create temp dir for mims");
        std::fs::create_dir(root.path().join("mims")).expect("create mims/");
        std::fs::create_dir(root.path().join("staging")).expect("create staging/");
        Self { root }
    }

    /// The `mims/` folder to pass to `--mims`.
    pub fn path(&self) -> PathBuf {
        self.root.path().join("mims")
    }

    /// A `mims/` folder holding `files`, each `(path under mims/, contents)`.
    pub fn from_files(files: &[(&str, &str)]) -> Self {
        files.iter().fold(Self::new(), |mims, (rel, contents)| {
            mims.with(rel, contents)
        })
    }

    /// Builder form of [`Mims::write`].
    pub fn with(self, rel: &str, contents: &str) -> Self {
        self.write(rel, contents);
        self
    }

    /// Writes `contents` to `mims/<rel>` (e.g. `"users/index.js"` or
    /// `"solo.js"`), creating parent folders and replacing any old file.
    pub fn write(&self, rel: &str, contents: &str) {
        let target = self.path().join(rel);
        std::fs::create_dir_all(target.parent().expect("a file path"))
            .unwrap_or_else(|e| panic!("create folder for {rel}: {e}"));
        let staged = self
            .root
            .path()
            .join("staging")
            .join(rel.replace('/', "__"));
        std::fs::write(&staged, contents).unwrap_or_else(|e| panic!("stage {rel}: {e}"));
        std::fs::rename(&staged, &target).unwrap_or_else(|e| panic!("move {rel} in place: {e}"));
    }
}

/// `mim.json` text giving a mim the env `vars`.
pub fn mim_json(vars: &[(&str, &str)]) -> String {
    let env: serde_json::Map<String, Value> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), Value::from(*v)))
        .collect();
    serde_json::json!({ "env": env }).to_string()
}

/// Starts a host with the default flags on a new `mims/` folder holding
/// `files` (see [`Mims::from_files`]).
pub async fn serve(files: &[(&str, &str)]) -> (Mims, Host) {
    let mims = Mims::from_files(files);
    let host = Host::start(&mims.path()).await;
    (mims, host)
}

/// A running `mimhost serve`, killed (with its whole process group and every
/// descendant) on drop. It owns its `--data` dir, so [`Host::restart`] comes
/// back on the same data.
pub struct Host {
    process: HostProcess,
    args: Vec<String>,
    client: reqwest::Client,
    _data: TempDir,
    /// Extra environment variables of the host process (kept for restarts).
    env: Vec<(String, String)>,
}

impl Host {
    /// Starts a host serving `mims` with the default test flags.
    pub async fn start(mims: &Path) -> Host {
        Self::start_with(mims, &[]).await
    }

    /// Starts a host serving `mims` with extra flags, e.g.
    /// `&["--max-body", "1024"]` or `&["--no-watch"]`; a flag given here
    /// replaces the default value of the same flag.
    pub async fn start_with(mims: &Path, extra: &[&str]) -> Host {
        Self::start_with_env(mims, extra, &[]).await
    }

    /// Like [`Host::start_with`], with extra environment variables for the host
    /// process (e.g. `SSL_CERT_FILE`).
    pub async fn start_with_env(mims: &Path, extra: &[&str], env: &[(&str, &str)]) -> Host {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let data = TempDir::new().expect("create temp dir for --data");
        let mut args: Vec<String> =
            vec!["serve".into(), "--mims".into(), mims.display().to_string()];
        // A test may bring its own `--data` (a small tmpfs, say).
        if !extra.contains(&"--data") {
            args.extend(["--data".into(), data.path().display().to_string()]);
        }
        for (flag, value) in DEFAULT_FLAGS {
            if !extra.contains(&flag) {
                args.extend([flag.to_string(), value.to_string()]);
            }
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("build HTTP client");
        Host {
            process: HostProcess::spawn(&args, &env).await,
            args,
            client,
            _data: data,
            env,
        }
    }

    /// `http://127.0.0.1:PORT<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.process.base)
    }

    /// `127.0.0.1:PORT`, for raw sockets.
    pub fn addr(&self) -> &str {
        self.process.base.trim_start_matches("http://")
    }

    /// The port the host listens on.
    pub fn port(&self) -> u16 {
        let port = self.addr().rsplit(':').next().expect("host:port");
        port.parse().expect("numeric port")
    }

    /// The host's `--data` folder.
    pub fn data_dir(&self) -> &Path {
        self._data.path()
    }

    /// The host process id.
    pub fn pid(&self) -> i32 {
        self.process.child.id() as i32
    }

    /// A request to `path` on this host, to be completed and passed to [`send`].
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Reply {
        send(self.request(Method::GET, path)).await
    }

    /// `POST path` with a text body.
    pub async fn post(&self, path: &str, body: impl Into<String>) -> Reply {
        send(self.request(Method::POST, path).body(body.into())).await
    }

    /// Everything the current host process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.process.stderr.lock().expect("stderr buffer").clone()
    }

    /// Whether the current host process has written `text` to stderr.
    pub fn stderr_contains(&self, text: &str) -> bool {
        self.stderr().contains(text)
    }

    /// Waits until a stderr line contains `text` and returns that line.
    pub async fn wait_for_log(&self, text: &str, timeout: Duration) -> String {
        self.wait_for_log_line(
            &format!("a log line containing {text:?}"),
            timeout,
            |line| line.contains(text),
        )
        .await
    }

    /// Waits until a stderr line satisfies `matches` and returns that line;
    /// panics with `what` and the whole stderr on timeout.
    pub async fn wait_for_log_line(
        &self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> String {
        let found = poll_until(timeout, || {
            let line = self
                .stderr()
                .lines()
                .find(|l| matches(l))
                .map(str::to_owned);
            async move { line }
        })
        .await;
        found.unwrap_or_else(|| panic!("no {what} within {timeout:?}; stderr:\n{}", self.stderr()))
    }

    /// `kill -9` the host's process group and every descendant, as a power
    /// cut would; the data dir stays.
    pub fn kill9(&mut self) {
        self.process.kill();
    }

    /// Kills the host if it still runs and starts it again with the same flags
    /// and `--data` (on a new port; stderr starts empty).
    pub async fn restart(&mut self) {
        self.kill9();
        self.process = HostProcess::spawn(&self.args, &self.env).await;
    }
}

/// One `mimhost` process with its output readers.
struct HostProcess {
    child: Child,
    base: String,
    stderr: Arc<Mutex<String>>,
    killed: bool,
}

impl HostProcess {
    /// Spawns `mimhost <args>` in its own process group and waits for its
    /// `listening on http://...` line on stdout.
    async fn spawn(args: &[String], env: &[(String, String)]) -> HostProcess {
        use std::os::unix::process::CommandExt;

        let mut command = Command::new(env!("CARGO_BIN_EXE_mimhost"));
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .env_remove("RUST_LOG");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("MIMHOST_") {
                command.env_remove(key);
            }
        }
        command.envs(env.iter().map(|(k, v)| (k, v)));
        let mut child = command.spawn().expect("spawn mimhost");
        let stderr = Arc::new(Mutex::new(String::new()));
        collect_lines(child.stderr.take().expect("piped stderr"), stderr.clone());
        let ready = announce_ready(child.stdout.take().expect("piped stdout"));
        let mut process = HostProcess {
            child,
            base: String::new(),
            stderr,
            killed: false,
        };
        // Workers may inherit stdout, so its end is no sign of exit: watch both.
        let outcome = poll_until(READY_TIMEOUT, || {
            let outcome = match ready.get() {
                Some(base) => Some(Ok(base.clone())),
                None => process.child.try_wait().ok().flatten().map(Err),
            };
            async move { outcome }
        })
        .await;
        match outcome {
            Some(Ok(base)) => process.base = base,
            Some(Err(status)) => panic!(
                "mimhost exited ({status}) before listening; stderr:\n{}",
                process.stderr.lock().expect("stderr buffer")
            ),
            None => panic!(
                "mimhost printed no `listening on` line within {READY_TIMEOUT:?}; stderr:\n{}",
                process.stderr.lock().expect("stderr buffer")
            ),
        }
        process
    }

    /// SIGKILLs the process group and any descendant that left it; idempotent.
    fn kill(&mut self) {
        if self.killed {
            return;
        }
        self.killed = true;
        let pid = self.child.id() as i32;
        let stragglers = proc::descendants(pid);
        // SAFETY: plain kill(2) calls on pids we started; errors (already gone) are fine.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
            for p in stragglers {
                libc::kill(p, libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Drains `stdout` on a thread; the returned cell gets the base URL from the
/// first `listening on <url>` line.
fn announce_ready(stdout: impl Read + Send + 'static) -> Arc<OnceLock<String>> {
    let ready = Arc::new(OnceLock::new());
    let cell = ready.clone();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.trim().strip_prefix("listening on ") {
                let _ = cell.set(url.trim_end_matches('/').to_string());
            }
        }
    });
    ready
}

/// Appends every line of `stream` to `buffer` on a thread, echoing it to the
/// test's stderr (shown by `cargo test` only when the test fails).
fn collect_lines(stream: impl Read + Send + 'static, buffer: Arc<Mutex<String>>) {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut raw = Vec::new();
        while reader.read_until(b'\n', &mut raw).unwrap_or(0) > 0 {
            let line = String::from_utf8_lossy(&raw);
            eprint!("[mimhost] {line}");
            buffer.lock().expect("stderr buffer").push_str(&line);
            raw.clear();
        }
    });
}

/// A finished HTTP exchange, body read as text.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    /// The body parsed as JSON; panics with the body if it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {self:?}"))
    }

    /// The value of header `name`, or "" when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Asserts a 200 whose body is exactly `body`.
    #[track_caller]
    pub fn assert_ok(&self, body: &str) {
        assert_eq!((self.status, self.body.as_str()), (200, body), "{self:?}");
    }

    /// Asserts `status` with the body `{"error":{"status":status,"message":"…"}}`
    /// and returns the message.
    #[track_caller]
    pub fn assert_error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{self:?}");
        let json = self.json();
        assert_eq!(json["error"]["status"], status, "{self:?}");
        json["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("error.message is not a string: {self:?}"))
            .to_string()
    }
}

/// Sends `request` and reads the whole answer; panics on transport errors.
pub async fn send(request: RequestBuilder) -> Reply {
    let response = request.send().await.expect("HTTP request to mimhost");
    Reply {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.text().await.expect("read response body"),
    }
}

/// Calls `probe` every 50 ms until it returns `Some`, for at most `timeout`;
/// returns `None` on timeout.
pub async fn poll_until<T, F, Fut>(timeout: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// `value` as a string whether JSON gave it as a string or a number (for
/// fields such as ports that a host may render either way).
pub fn loose_string(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Whether `program` is on PATH; missing under `CI=true` fails the test.
pub fn have(program: &str, why: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{program} is needed for {why} (.ci/run installs it)"
        );
        eprintln!("skipped: {program} is not installed (needed for {why})");
    }
    found
}
