//! What goes into [`super::Supervisor::invoke`] and what comes out: the one door
//! every kind of invocation (HTTP request, upgrade, session event, hot swap) goes
//! through, and the typed reasons it can fail.

use bytes::Bytes;
use mimhost_bindings::{HttpRequest, MimSpec, WsEvent};
use tokio::sync::mpsc;

/// One invocation of a container's code.
#[derive(Debug)]
pub enum Call {
    /// An HTTP request, or an upgrade under a base path (`web_socket: true`).
    Http(HttpRequest),
    /// A session event for `webSocketEvent` (or a Dirigible handler); queued in order.
    Event(WsEvent),
    /// A hot swap to new code or env; a failed load keeps the old code.
    Load(MimSpec),
}

/// What an invocation answered.
#[derive(Debug)]
pub enum Reply {
    /// A complete HTTP answer.
    Full {
        /// Status code.
        status: u16,
        /// Headers.
        headers: Vec<(String, String)>,
        /// Body.
        body: Bytes,
    },
    /// A streamed HTTP answer: the head now, the body as it comes.
    Stream {
        /// Status code.
        status: u16,
        /// Headers.
        headers: Vec<(String, String)>,
        /// The body's chunks (the deadline still applies to them).
        body: ReplyStream,
    },
    /// The upgrade is accepted as a WebSocket session.
    Accept {
        /// JSON text of the session data.
        data: String,
        /// Subprotocols the mim offers.
        protocols: Vec<String>,
    },
    /// The event is queued for the worker (events are one-way).
    Queued,
    /// The new code loaded and serves.
    Loaded,
}

/// One piece of an HTTP answer on its way from the worker to the caller.
#[derive(Debug)]
pub(crate) enum Part {
    /// A streamed answer begins.
    Start {
        status: u16,
        headers: Vec<(String, String)>,
    },
    /// A chunk of a streamed answer.
    Chunk(Bytes),
    /// The streamed answer is complete.
    End,
    /// A complete answer.
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Bytes,
    },
    /// The upgrade is accepted.
    Accept {
        data: String,
        protocols: Vec<String>,
    },
    /// The invocation failed (deadline, worker gone, stopped).
    Failed(InvokeError),
}

/// The rest of a streamed answer.
#[derive(Debug)]
pub struct ReplyStream {
    pub(crate) parts: mpsc::UnboundedReceiver<Part>,
}

impl ReplyStream {
    /// The next chunk; `None` at the end, an error when the worker failed or the
    /// deadline passed mid-stream.
    pub async fn next(&mut self) -> Option<Result<Bytes, InvokeError>> {
        match self.parts.recv().await? {
            Part::Chunk(bytes) => Some(Ok(bytes)),
            Part::Failed(e) => Some(Err(e)),
            Part::End => None,
            Part::Start { .. } | Part::Full { .. } | Part::Accept { .. } => {
                Some(Err(InvokeError::OutOfOrder))
            }
        }
    }
}

/// Why an invocation failed. Callers pick a status by variant, never by text.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum InvokeError {
    /// No worker became ready before the deadline (it is restarting).
    #[error("the container's worker is not ready (restarting)")]
    NotReady,
    /// The queue to the worker is full (`--max-queue` calls or `--max-queue-bytes`).
    #[error("the container {container} is busy: {queued} calls are waiting for it; retry shortly")]
    Busy {
        /// The container.
        container: String,
        /// Calls queued or running.
        queued: usize,
    },
    /// The container was stopped.
    #[error("the container is stopped")]
    Stopped,
    /// The handler ran past the handler timeout.
    #[error("{container} did not answer within the handler timeout")]
    TimedOut {
        /// The container.
        container: String,
    },
    /// The worker exited before answering.
    #[error("the worker of {container} stopped before answering: {reason}")]
    WorkerGone {
        /// The container.
        container: String,
        /// Why it stopped.
        reason: String,
    },
    /// No worker process could be started.
    #[error("cannot start a worker process: {reason}")]
    Spawn {
        /// Why.
        reason: String,
    },
    /// The code did not load.
    #[error("{message}")]
    LoadFailed {
        /// The file the error is in, relative to the mim, when the message names one.
        file: Option<String>,
        /// Its line.
        line: Option<u32>,
        /// Its column.
        column: Option<u32>,
        /// The whole message, naming file, line and column where known.
        message: String,
    },
    /// The worker answered with a part that does not fit (a chunk before a head).
    #[error("the worker answered out of order")]
    OutOfOrder,
}

impl InvokeError {
    /// A load failure from the worker's message, with the first `file:line:column`
    /// it names picked out.
    pub fn load_failed(message: String) -> Self {
        let (file, line, column) = match find_location(&message) {
            Some((f, l, c)) => (Some(f), Some(l), Some(c)),
            None => (None, None, None),
        };
        InvokeError::LoadFailed {
            file,
            line,
            column,
            message,
        }
    }

    /// The HTTP status this failure answers with.
    pub fn status(&self) -> u16 {
        match self {
            InvokeError::NotReady | InvokeError::Busy { .. } | InvokeError::Stopped => 503,
            InvokeError::TimedOut { .. } => 504,
            InvokeError::LoadFailed { .. } => 400,
            InvokeError::WorkerGone { .. }
            | InvokeError::Spawn { .. }
            | InvokeError::OutOfOrder => 500,
        }
    }
}

/// The first `file:line:column` in `text` (file: the non-blank run before it).
fn find_location(text: &str) -> Option<(String, u32, u32)> {
    for word in text.split(|c: char| c.is_whitespace() || "()[]\"'".contains(c)) {
        let mut parts = word.rsplitn(3, ':');
        let (Some(column), Some(line), Some(file)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let column = column.trim_end_matches(|c: char| !c.is_ascii_digit());
        if let (Ok(l), Ok(c)) = (line.parse(), column.parse()) {
            if !file.is_empty() {
                return Some((file.to_string(), l, c));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::InvokeError;

    #[test]
    fn load_errors_name_their_place() {
        let e = InvokeError::load_failed("SyntaxError: unexpected token at index.js:3:7".into());
        let InvokeError::LoadFailed {
            file, line, column, ..
        } = &e
        else {
            panic!("{e:?}");
        };
        assert_eq!(file.as_deref(), Some("index.js"));
        assert_eq!((*line, *column), (Some(3), Some(7)));
        assert_eq!(
            e.to_string(),
            "SyntaxError: unexpected token at index.js:3:7"
        );
        let e = InvokeError::load_failed("no place here: 12".into());
        assert!(matches!(e, InvokeError::LoadFailed { file: None, .. }));
    }

    #[test]
    fn statuses_follow_variants() {
        let busy = InvokeError::Busy {
            container: "a".into(),
            queued: 3,
        };
        assert_eq!(busy.status(), 503);
        let late = InvokeError::TimedOut {
            container: "a".into(),
        };
        assert_eq!(late.status(), 504);
        assert_eq!(InvokeError::load_failed("x".into()).status(), 400);
    }
}
