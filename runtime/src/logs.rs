//! The recent log lines of every container, kept in a bounded ring per container so
//! the MCM API (`GET /mcm/v1/containers/{id}/logs`), `mimhost logs` and the web
//! console can show what a mim wrote, what it threw and why its worker restarted,
//! without reading the host's stderr. Followers get new lines live until the
//! container is removed.

use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Lines kept per container; older ones are dropped first.
pub const RING_LINES: usize = 1000;

/// Longest message kept, in bytes; longer ones are cut (on a character boundary).
pub const MAX_MESSAGE: usize = 16 * 1024;

/// Lines a slow follower may fall behind before it skips ahead.
const FOLLOW_BACKLOG: usize = 256;

/// Severity of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// `console.debug`, `log.debug`.
    Debug,
    /// `console.log/info`, `log.info`, host notices.
    Info,
    /// `console.warn`, `log.warn`, worker restarts.
    Warn,
    /// `console.error`, `log.error`, uncaught errors.
    Error,
}

/// Who wrote a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The mim's `console.*` or `log.*`.
    Console,
    /// An error the mim's code did not catch (the message holds its stack).
    Uncaught,
    /// The host restarted the container's worker (see [`LogLine::cause`]).
    Restart,
    /// The host itself: started, hot swapped, removed.
    Host,
}

/// Why a worker restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cause {
    /// An invocation ran past the handler timeout and the worker did not answer.
    Timeout,
    /// The worker went over `--mim-memory`.
    Memory,
    /// The worker died for any other reason (engine abort, signal, bad frame).
    Crash,
}

/// One line of a container's log.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LogLine {
    /// Position in the container's log, from 1; followers resume after it.
    pub seq: u64,
    /// When it was written (RFC 3339, UTC, milliseconds).
    pub time: String,
    /// Severity.
    pub level: Level,
    /// Who wrote it.
    pub source: Source,
    /// The text.
    pub message: String,
    /// For [`Source::Restart`]: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
}

#[derive(Default)]
struct Book {
    ring: VecDeque<Arc<LogLine>>,
    next_seq: u64,
    live: Option<broadcast::Sender<Arc<LogLine>>>,
}

/// Every container's recent lines and live followers.
#[derive(Default)]
pub struct LogBook {
    books: Mutex<HashMap<String, Book>>,
}

/// A follower: the lines already there, then new ones until the container goes.
pub struct Follow {
    /// The recent lines at the moment of subscribing, oldest first.
    pub backlog: Vec<LogLine>,
    /// New lines; closed when the container is removed.
    pub live: broadcast::Receiver<Arc<LogLine>>,
}

impl LogBook {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Book>> {
        self.books.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a line to `container`'s log and hands it to its followers.
    pub fn push(
        &self,
        container: &str,
        level: Level,
        source: Source,
        message: &str,
        cause: Option<Cause>,
    ) {
        let mut books = self.lock();
        let book = books.entry(container.to_string()).or_default();
        book.next_seq += 1;
        let line = Arc::new(LogLine {
            seq: book.next_seq,
            time: crate::mcm::time::now_rfc3339_millis(),
            level,
            source,
            message: truncate(message).to_string(),
            cause,
        });
        if book.ring.len() == RING_LINES {
            book.ring.pop_front();
        }
        book.ring.push_back(line.clone());
        if let Some(tx) = &book.live {
            let _ = tx.send(line);
        }
    }

    /// The last `limit` lines of `container` (at most [`RING_LINES`]), oldest first.
    pub fn recent(&self, container: &str, limit: usize) -> Vec<LogLine> {
        let books = self.lock();
        let Some(book) = books.get(container) else {
            return Vec::new();
        };
        let skip = book.ring.len().saturating_sub(limit);
        book.ring.iter().skip(skip).map(|l| (**l).clone()).collect()
    }

    /// The last `limit` lines and every later one, with nothing lost in between.
    pub fn follow(&self, container: &str, limit: usize) -> Follow {
        let mut books = self.lock();
        let book = books.entry(container.to_string()).or_default();
        let live = book
            .live
            .get_or_insert_with(|| broadcast::channel(FOLLOW_BACKLOG).0)
            .subscribe();
        let skip = book.ring.len().saturating_sub(limit);
        let backlog = book.ring.iter().skip(skip).map(|l| (**l).clone()).collect();
        Follow { backlog, live }
    }

    /// The container is gone: its followers end (after the lines already sent) and
    /// its lines are dropped, so removed containers hold no memory.
    pub fn close(&self, container: &str) {
        self.lock().remove(container);
    }
}

/// `message` cut to at most [`MAX_MESSAGE`] bytes.
fn truncate(message: &str) -> &str {
    if message.len() <= MAX_MESSAGE {
        return message;
    }
    let mut end = MAX_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_lines() {
        let book = LogBook::new();
        for i in 0..RING_LINES + 5 {
            book.push("a", Level::Info, Source::Console, &i.to_string(), None);
        }
        let all = book.recent("a", usize::MAX);
        assert_eq!(all.len(), RING_LINES);
        assert_eq!(all[0].message, "5");
        assert_eq!(all.last().map(|l| l.seq), Some(RING_LINES as u64 + 5));
        assert_eq!(book.recent("a", 2).len(), 2);
        assert!(book.recent("nobody", 10).is_empty());
    }

    #[test]
    fn long_lines_are_cut_on_a_character_boundary() {
        let text = "é".repeat(MAX_MESSAGE);
        let cut = truncate(&text);
        assert!(cut.len() <= MAX_MESSAGE && cut.chars().all(|c| c == 'é'));
    }

    #[tokio::test]
    async fn followers_see_new_lines_and_end_when_closed() {
        let book = LogBook::new();
        book.push("a", Level::Info, Source::Host, "before", None);
        let mut follow = book.follow("a", 10);
        assert_eq!(follow.backlog.len(), 1);
        book.push("a", Level::Warn, Source::Restart, "r", Some(Cause::Memory));
        let line = follow.live.recv().await.expect("a line");
        assert_eq!(line.cause, Some(Cause::Memory));
        book.close("a");
        assert!(follow.live.recv().await.is_err());
        assert!(
            book.recent("a", 10).is_empty(),
            "a removed container's lines go"
        );
    }
}
