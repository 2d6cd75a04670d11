//! A real `redis-server` for the cluster tests, on a free loopback port, without
//! persistence, stopped on drop; it can be stopped and started again on the same port
//! to play a lost Redis.

use super::have;
use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long redis-server may take to answer after a start.
const WAIT: Duration = Duration::from_secs(10);

/// A `redis-server` of this test, killed on drop.
pub struct Redis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Redis {
    /// A fresh Redis on a free loopback port, or None (skip) without redis-server.
    pub fn start() -> Option<Redis> {
        if !have("redis-server", "the cluster tests") {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut redis = Redis {
            child: None,
            port,
            dir: tempfile::tempdir().expect("temp dir"),
        };
        redis.up();
        Some(redis)
    }

    /// Starts (again) on the same port.
    pub fn up(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while self.cli(&["PING"]) != "PONG" {
            assert!(Instant::now() < deadline, "redis-server did not answer");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it (SIGKILL: whatever it held is gone, as after a crash).
    pub fn down(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// One `redis-cli` command's output, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    }

    /// The members of a set, sorted.
    pub fn members(&self, key: &str) -> BTreeSet<String> {
        self.cli(&["SMEMBERS", key])
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.down();
    }
}
