//! Sockets for the load generator: URL parsing, connecting from one of several
//! 127.0.0.x source addresses (so ephemeral ports never run out), and raising the
//! open-file limit to the hard limit.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::net::{TcpSocket, TcpStream};

/// Raises RLIMIT_NOFILE's soft limit to its hard limit; returns the new soft limit.
pub fn raise_nofile() -> u64 {
    // SAFETY: plain getrlimit/setrlimit on a stack value.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur
    }
}

/// A `ws://` or `http://` URL split for a raw client.
#[derive(Debug, Clone)]
pub struct Target {
    /// Where to connect.
    pub addr: SocketAddr,
    /// The `Host` header.
    pub host: String,
    /// Path and query.
    pub path: String,
}

impl Target {
    /// Parses `ws://host:port/path` or `http://host:port/path`.
    pub fn parse(url: &str) -> io::Result<Self> {
        let bad = || io::Error::new(io::ErrorKind::InvalidInput, format!("bad URL {url}"));
        let rest = url
            .strip_prefix("ws://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or_else(bad)?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let addr = host
            .to_socket_addrs()
            .map_err(|_| bad())?
            .find(|a| a.is_ipv4())
            .ok_or_else(bad)?;
        Ok(Self {
            addr,
            host: host.to_string(),
            path: path.to_string(),
        })
    }
}

/// Round-robin over source addresses 127.0.0.`first`.. (`count` of them).
pub struct Sources {
    ips: Vec<Ipv4Addr>,
    next: AtomicUsize,
}

impl Sources {
    /// `count` loopback sources starting at 127.0.0.`first`; none (kernel's choice)
    /// when `count` is 0.
    pub fn new(first: u8, count: usize) -> Self {
        let ips = (0..count)
            .map(|i| Ipv4Addr::new(127, 0, 0, first.saturating_add(i as u8)))
            .collect();
        Self {
            ips,
            next: AtomicUsize::new(0),
        }
    }

    /// The next source address, if any.
    pub fn pick(&self) -> Option<Ipv4Addr> {
        if self.ips.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        Some(self.ips[i % self.ips.len()])
    }
}

/// Connects to `dst` from `src` (any port), with TCP_NODELAY.
pub async fn connect(src: Option<Ipv4Addr>, dst: SocketAddr) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = src {
        let one: libc::c_int = 1;
        // SAFETY: setsockopt on a socket we own with a valid int option value.
        // IP_BIND_ADDRESS_NO_PORT lets the kernel pick the port at connect time, per
        // destination, instead of reserving it at bind.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &one as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        socket.bind(SocketAddr::new(ip.into(), 0))?;
    }
    let stream = socket.connect(dst).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Resident memory of `pid` in KiB (VmRSS), or None when it is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Process ids whose parent is `pid` (a mimhost host's workers).
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|s| {
                    let after = s.rsplit_once(')')?.1;
                    after.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// Open file descriptors of `pid`, when readable.
pub fn fd_count(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// CPU seconds (user + system) `pid` has used, from `/proc/PID/stat`.
pub fn cpu_seconds_of(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the command: state is field 3, utime 14 and stime 15 (1-based, man proc).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf reads a constant.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((utime + stime) as f64 / tick)
}

/// CPU seconds of a server: `pid` and its child processes (a mimhost host's workers).
pub fn server_cpu_seconds(pid: u32) -> f64 {
    std::iter::once(pid)
        .chain(children_of(pid))
        .filter_map(cpu_seconds_of)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let t = Target::parse("ws://127.0.0.1:8083/ws/notify").unwrap();
        assert_eq!(t.addr.port(), 8083);
        assert_eq!(t.path, "/ws/notify");
        assert_eq!(t.host, "127.0.0.1:8083");
        let t = Target::parse("http://127.0.0.1:9").unwrap();
        assert_eq!(t.path, "/");
        assert!(Target::parse("ftp://x").is_err());
    }

    #[test]
    fn sources_rotate() {
        let s = Sources::new(10, 3);
        let picks: Vec<_> = (0..4).map(|_| s.pick().unwrap().octets()[3]).collect();
        assert_eq!(picks, vec![10, 11, 12, 10]);
        assert!(Sources::new(10, 0).pick().is_none());
    }

    #[test]
    fn reads_own_rss() {
        assert!(rss_kib(std::process::id()).unwrap_or(0) > 0);
    }
}
