//! The framed messages between the host and a worker process, both directions.
//!
//! A frame is a little-endian `u32` length followed by a postcard-encoded message.
//! Writers batch many frames into one `write`; readers parse every complete frame
//! out of what one `read` returned.

use mimhost_bindings::{
    ClientAnswer, ClientCall, ClientEvent, ClientOp, HttpRequest, MimSpec, OutboundHttpEvent,
    OutboundHttpRequest, WsAnswer, WsEvent, WsOp, WsQuery,
};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Largest frame either side accepts; a bigger length prefix means a broken peer.
pub const MAX_FRAME: usize = 256 * 1024 * 1024;

/// Env var setting [`spin_time`] in microseconds (the worker inherits it).
pub const SPIN_ENV: &str = "MIMHOST_SPIN_US";

/// How long either side keeps checking for the other's next message before it lets
/// its thread sleep: the worker after a turn of one call, the host while a lone call
/// runs. Waking a sleeping thread costs a hand-off of 25–150 µs (more on an idle
/// virtual machine); a message that comes within this time usually costs none. 150 µs
/// unless [`SPIN_ENV`] says otherwise (at most [`MAX_SPIN`]); 0 never spins.
pub fn spin_time() -> std::time::Duration {
    static SPIN: std::sync::OnceLock<std::time::Duration> = std::sync::OnceLock::new();
    *SPIN.get_or_init(|| spin_from(std::env::var(SPIN_ENV).ok().as_deref()))
}

/// The longest spin [`SPIN_ENV`] may ask for: past a few hundred microseconds a
/// sleeping thread's wake-up is the cheaper wait.
pub const MAX_SPIN: std::time::Duration = std::time::Duration::from_millis(10);

/// [`spin_time`] for the env var's value (`None`: unset).
fn spin_from(value: Option<&str>) -> std::time::Duration {
    const DEFAULT: std::time::Duration = std::time::Duration::from_micros(150);
    let Some(value) = value else {
        return DEFAULT;
    };
    match value.trim().parse::<u64>() {
        Ok(micros) => std::time::Duration::from_micros(micros).min(MAX_SPIN),
        Err(_) => {
            eprintln!("mimhost: {SPIN_ENV}={value:?} is not a number of microseconds; using 150");
            DEFAULT
        }
    }
}

/// Host -> worker.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToWorker {
    /// Load (or hot swap to) this code; answered by [`FromWorker::Loaded`].
    Load {
        /// The container and its code.
        spec: MimSpec,
        /// Folder of the container's store.
        store_dir: PathBuf,
    },
    /// One HTTP request; answered by `Http*` frames with the same id.
    Http {
        /// Request id, unique per worker.
        id: u64,
        /// The request.
        request: HttpRequest,
    },
    /// A session event for `webSocketEvent`; acknowledged by [`FromWorker::Done`].
    Ws {
        /// Sequence number, increasing per worker.
        seq: u64,
        /// The event.
        event: WsEvent,
    },
    /// The answer to the worker's pending [`FromWorker::WsQuery`].
    WsAnswer(WsAnswer),
    /// Are you responsive? Answered by [`FromWorker::Pong`] between two invocations.
    Ping {
        /// Echoed back.
        id: u64,
    },
    /// Flush the store and exit.
    Shutdown,
    /// What came back for the worker's outbound HTTP request `id`.
    OutboundHttp {
        /// The id the worker gave the request.
        id: u64,
        /// The answer, a chunk of it, or the failure.
        event: OutboundHttpEvent,
    },
    /// An event of an outbound `sdk/net` client for its handler module;
    /// acknowledged by [`FromWorker::Done`] like a session event (same sequence).
    WsClient {
        /// Sequence number, increasing per worker (shared with [`ToWorker::Ws`]).
        seq: u64,
        /// The event.
        event: ClientEvent,
    },
    /// The answer to the worker's pending [`FromWorker::WsClientCall`].
    WsClientAnswer(ClientAnswer),
}

/// Worker -> host.
#[derive(Debug, Serialize, Deserialize)]
pub enum FromWorker {
    /// Result of a [`ToWorker::Load`]: `None` when the code loaded.
    Loaded {
        /// The load error, naming file, line and column.
        error: Option<String>,
        /// Whether the loaded code exports `webSocketEvent`.
        ws_handler: bool,
    },
    /// A streamed response begins.
    HttpStart {
        /// Request id.
        id: u64,
        /// Status code.
        status: u16,
        /// Headers.
        headers: Vec<(String, String)>,
    },
    /// A chunk of a streamed response.
    HttpChunk {
        /// Request id.
        id: u64,
        /// The chunk's bytes.
        #[serde(with = "serde_bytes")]
        chunk: Vec<u8>,
    },
    /// A streamed response ends.
    HttpEnd {
        /// Request id.
        id: u64,
    },
    /// A whole response.
    HttpFull {
        /// Request id.
        id: u64,
        /// Status code.
        status: u16,
        /// Headers.
        headers: Vec<(String, String)>,
        /// Body bytes.
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
    /// Text frames for every session of the container's dispatch channel.
    Dispatch {
        /// The encoded frames, in order.
        frames: Vec<String>,
    },
    /// The upgrade request `id` is accepted as a WebSocket session.
    WsAccept {
        /// Request id.
        id: u64,
        /// JSON text of the session data.
        data: String,
        /// Subprotocols the mim offers.
        protocols: Vec<String>,
    },
    /// A WebSocket operation of the mim.
    Ws(WsOp),
    /// A question the worker blocks on until [`ToWorker::WsAnswer`] arrives.
    WsQuery(WsQuery),
    /// Every session event up to `seq` has been handled (its synchronous part).
    Done {
        /// Highest handled sequence number.
        seq: u64,
    },
    /// Answer to [`ToWorker::Ping`].
    Pong {
        /// The ping's id.
        id: u64,
    },
    /// A log line of the mim.
    Log {
        /// 0 debug, 1 info, 2 warn, 3 error, [`LOG_UNCAUGHT`] an uncaught error.
        level: u8,
        /// The line.
        message: String,
    },
    /// Make an outbound HTTP request; what comes back is [`ToWorker::OutboundHttp`].
    OutboundHttpRequest {
        /// Id, unique in this worker process.
        id: u64,
        /// The request.
        request: OutboundHttpRequest,
    },
    /// Remove a file of the container's file area (`context.storage.deleteFile`).
    OutboundHttpDeleteFile {
        /// Path inside the file area, already checked by the worker.
        path: String,
    },
    /// An `sdk/net` call the worker blocks on until [`ToWorker::WsClientAnswer`] arrives.
    WsClientCall(ClientCall),
    /// A one-way operation on an outbound client (send, close).
    WsClientOp(ClientOp),
}

/// [`FromWorker::Log`] level of an error the mim's code did not catch (logged as an
/// error, tagged `uncaught` in the container's log).
pub const LOG_UNCAUGHT: u8 = 4;

/// A frame that could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix is over [`MAX_FRAME`].
    #[error("frame of {0} bytes is over the limit")]
    TooLarge(usize),
    /// The payload is not a valid message.
    #[error("undecodable frame: {0}")]
    Decode(#[from] postcard::Error),
}

/// Appends `message` as one frame to `out`.
pub fn encode_into<T: Serialize>(message: &T, out: &mut Vec<u8>) {
    // Serialising our own message types into memory cannot fail.
    let payload = postcard::to_allocvec(message).unwrap_or_default();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&payload);
}

/// Takes every complete frame off the front of `buffer` and decodes it.
pub fn decode_frames<T: for<'de> Deserialize<'de>>(
    buffer: &mut Vec<u8>,
) -> Result<Vec<T>, FrameError> {
    let mut messages = Vec::new();
    let mut at = 0;
    while buffer.len() - at >= 4 {
        let len = u32::from_le_bytes([buffer[at], buffer[at + 1], buffer[at + 2], buffer[at + 3]])
            as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        if buffer.len() - at - 4 < len {
            break;
        }
        messages.push(postcard::from_bytes(&buffer[at + 4..at + 4 + len])?);
        at += 4 + len;
    }
    buffer.drain(..at);
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_spin_is_150_us_unless_set_and_never_over_the_cap() {
        assert_eq!(spin_from(None), Duration::from_micros(150));
        assert_eq!(spin_from(Some("0")), Duration::ZERO);
        assert_eq!(spin_from(Some(" 40 ")), Duration::from_micros(40));
        assert_eq!(spin_from(Some("10000000")), MAX_SPIN);
        assert_eq!(spin_from(Some("fast")), Duration::from_micros(150));
    }

    #[test]
    fn frames_round_trip_in_one_buffer_and_split() {
        let mut out = Vec::new();
        encode_into(&FromWorker::HttpEnd { id: 7 }, &mut out);
        encode_into(
            &FromWorker::Log {
                level: 1,
                message: "hi".into(),
            },
            &mut out,
        );
        let mut partial = out[..out.len() - 1].to_vec();
        let first: Vec<FromWorker> = decode_frames(&mut partial).unwrap();
        assert!(matches!(first.as_slice(), [FromWorker::HttpEnd { id: 7 }]));
        partial.push(*out.last().unwrap());
        let second: Vec<FromWorker> = decode_frames(&mut partial).unwrap();
        assert!(matches!(
            second.as_slice(),
            [FromWorker::Log { level: 1, .. }]
        ));
        assert!(partial.is_empty());
    }

    #[test]
    fn oversized_length_is_refused() {
        let mut buf = u32::MAX.to_le_bytes().to_vec();
        assert!(matches!(
            decode_frames::<ToWorker>(&mut buf),
            Err(FrameError::TooLarge(_))
        ));
    }
}
