//! Starting a worker process: the same binary, `mimhost worker`, with one end of a
//! socket pair on fd 3.

use crate::worker::{IPC_FD, MEMORY_ENV, REDIS_ENV};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;
use tokio::net::UnixStream;
use tokio::process::{Child, Command};

/// Spawns a worker; returns the child and the host's end of its socket. `redis` is
/// the cluster's Redis URL, where the worker then keeps its store.
pub fn worker_process(
    memory_bytes: u64,
    redis: Option<&str>,
) -> std::io::Result<(Child, UnixStream)> {
    let (host_end, worker_end) = std::os::unix::net::UnixStream::pair()?;
    let worker_fd: OwnedFd = worker_end.into();
    let raw = worker_fd.as_raw_fd();
    let mut command = Command::new(std::env::current_exe()?);
    command
        .arg("worker")
        .env(MEMORY_ENV, memory_bytes.to_string())
        .env("MALLOC_ARENA_MAX", "2")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    match redis {
        Some(url) => command.env(REDIS_ENV, url),
        None => command.env_remove(REDIS_ENV),
    };
    // SAFETY: only async-signal-safe calls (dup2, fcntl, prctl) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if raw == IPC_FD {
                let flags = libc::fcntl(IPC_FD, libc::F_GETFD);
                libc::fcntl(IPC_FD, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            } else if libc::dup2(raw, IPC_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let child = command.spawn()?;
    drop(worker_fd);
    host_end.set_nonblocking(true)?;
    Ok((child, UnixStream::from_std(host_end)?))
}
