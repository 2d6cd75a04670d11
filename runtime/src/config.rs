//! Host settings, with defaults that give a working single node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything `mimhost serve` can be told.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on (loopback:8083 by default).
    pub listen: SocketAddr,
    /// Folder of drop-in mims.
    pub mims: PathBuf,
    /// Folder for the token, images, containers and stores.
    pub data: PathBuf,
    /// MCM API token; made and kept in `<data>/mcm-token` when absent.
    pub token: Option<String>,
    /// Redis URL of the cluster, if any.
    pub cluster: Option<String>,
    /// This node's id (random when absent).
    pub node_id: Option<String>,
    /// How long one invocation may run.
    pub handler_timeout: Duration,
    /// Resident memory a container's worker may use.
    pub mim_memory: u64,
    /// Whether to reload `mims/` on change.
    pub watch: bool,
    /// Largest HTTP request body for a container, in bytes.
    pub max_body: usize,
    /// How often idle WebSocket sessions are pinged; silent for two: reaped.
    pub ping_interval: Duration,
    /// Largest image upload to the MCM API, in bytes.
    pub max_image: usize,
    /// Largest WebSocket message a client may send, in bytes (bigger: close 1009).
    pub max_message: usize,
    /// Most calls (requests and session events) queued for one container's worker;
    /// past it a request gets 503 with `Retry-After` and a session is closed 1008.
    pub max_queue: usize,
    /// Most bytes (bodies, headers, messages) queued for one container's worker.
    pub max_queue_bytes: usize,
    /// How long a WebSocket session that just wrote queued frames lets the next ones
    /// gather before its next write (fewer writes in a burst; zero turns it off).
    pub ws_coalesce: Duration,
    /// How many frames per write a WebSocket session's window aims at: frames coming
    /// faster shorten the window (at most `ws_coalesce`); zero keeps it fixed.
    pub ws_coalesce_frames: u32,
    /// How much longer than `ws_coalesce` a window may grow per recipient of the
    /// latest broadcast (a large broadcast gathers longer when the host is short of
    /// CPU); at most 1 s.
    pub ws_coalesce_per_session: Duration,
}

/// The default of [`Config::ws_coalesce`]: see docs/benchmarks.md, "CPU per delivered
/// frame", for what it buys and costs.
pub const DEFAULT_WS_COALESCE: Duration = Duration::from_millis(20);

/// The default of [`Config::ws_coalesce_frames`] (docs/benchmarks.md, "Sessions at
/// scale, round 3").
pub const DEFAULT_WS_COALESCE_FRAMES: u32 = 8;

/// The default of [`Config::ws_coalesce_per_session`]: none, so a window never
/// grows past `--ws-coalesce`. Measured on a quiet machine, 100 µs (1,000 recipients
/// may wait up to 100 ms) cut CPU per delivery from ~4 to ~1.6 µs but made a burst's
/// p99 2.5–3× longer (docs/benchmarks.md, "Sessions at scale, round 3": the default).
pub const DEFAULT_WS_COALESCE_PER_SESSION: Duration = Duration::ZERO;

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8083)),
            mims: PathBuf::from("mims"),
            data: PathBuf::from(".mimhost"),
            token: None,
            cluster: None,
            node_id: None,
            handler_timeout: Duration::from_secs(30),
            mim_memory: 256 * 1024 * 1024,
            watch: true,
            max_body: 10 * 1024 * 1024,
            ping_interval: Duration::from_secs(30),
            max_image: 64 * 1024 * 1024,
            max_message: 1024 * 1024,
            max_queue: crate::supervisor::QueueLimits::default().calls,
            max_queue_bytes: crate::supervisor::QueueLimits::default().bytes,
            ws_coalesce: DEFAULT_WS_COALESCE,
            ws_coalesce_frames: DEFAULT_WS_COALESCE_FRAMES,
            ws_coalesce_per_session: DEFAULT_WS_COALESCE_PER_SESSION,
        }
    }
}

/// Parses a duration like `30s`, `500ms`, `2m` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (try 30s or 500ms)"))?;
    let secs = match unit.trim() {
        "us" | "µs" => n / 1e6,
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit '{other}' in '{text}' (use us, ms, s, m or h)"
            ))
        }
    };
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a size like `256MiB`, `64MB`, `1GiB`, `512k` or a bare number of bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size (try 256MiB)"))?;
    let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "unknown size unit '{other}' in '{text}' (use KiB, MiB or GiB)"
            ))
        }
    };
    Ok((n * factor) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_parse() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("100us").unwrap(), Duration::from_micros(100));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("3 parsecs").is_err());
        assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert!(parse_size("lots").is_err());
    }
}
