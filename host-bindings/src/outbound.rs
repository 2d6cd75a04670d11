//! Outbound HTTP as plain data: what a mim asks for (`context.http.request`,
//! `fetch`) and what comes back. The host makes the request; the isolate only sees
//! these values, so no socket is ever opened in a worker.

use serde::{Deserialize, Serialize};

/// How the answer is delivered (`mode` of `context.http.request`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutboundHttpMode {
    /// Redirects followed (at most 10), one answer.
    #[default]
    Default,
    /// Chunked and `text/event-stream` answers come chunk by chunk as they arrive.
    Stream,
    /// Redirects not followed: a 3xx is an answer like any other.
    Proxy,
}

/// One outbound request of a mim, as the prelude hands it to the host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct OutboundHttpRequest {
    /// Absolute `http://` or `https://` URL.
    pub url: String,
    /// `GET`, `POST`, ... (upper case).
    pub method: String,
    /// Header pairs as the mim gave them (checked for CR/LF by the host).
    pub headers: Vec<(String, String)>,
    /// The body text, if any.
    pub body: Option<String>,
    /// Delivery mode.
    pub mode: OutboundHttpMode,
    /// Write the body to this file of the container's file area instead.
    pub output_file: Option<String>,
    /// Milliseconds allowed to connect (default 10000).
    pub connect_timeout_ms: Option<u64>,
    /// Milliseconds allowed between bytes from the upstream (default 60000).
    pub socket_timeout_ms: Option<u64>,
    /// Whether a status of 400 and above is an error (`context.http.request`) or an
    /// answer like any other (`fetch`).
    pub error_status: bool,
}

/// The status line and headers of an answer (header names lower case, repeated
/// headers joined with `, `).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboundHttpHead {
    /// Status code.
    pub status: u16,
    /// Reason phrase (`OK`), for `fetch`'s `statusText`.
    pub status_text: String,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// The URL that answered (after redirects).
    pub url: String,
}

/// What the host reports back about one outbound request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OutboundHttpEvent {
    /// The whole answer.
    Response {
        /// Status and headers.
        head: OutboundHttpHead,
        /// The body as text (invalid UTF-8 replaced).
        data: String,
    },
    /// The body went to `outputFile`.
    File {
        /// Status and headers.
        head: OutboundHttpHead,
        /// The file, relative to the container's file area.
        path: String,
        /// Bytes written.
        size: u64,
    },
    /// One chunk of a streamed answer (`mode: 'stream'`); the first carries the head.
    Chunk {
        /// Status and headers, on the first chunk only.
        head: Option<OutboundHttpHead>,
        /// The chunk as text (a UTF-8 sequence split between reads is kept whole).
        data: String,
    },
    /// The streamed answer is complete.
    End,
    /// No answer, or an answer of 400 and above where that is an error.
    Failed {
        /// What went wrong.
        message: String,
        /// Status, body and headers of an error answer.
        answer: Option<(OutboundHttpHead, String)>,
    },
}

/// Why a path cannot name a file of the container's file area.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{path}' is not a file path inside the container's file area: {reason}")]
pub struct FileAreaError {
    /// The path as given.
    pub path: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Checks a path a mim gives for `outputFile` or `deleteFile` and returns it as a
/// relative path that cannot leave the file area: no root, no `..`, no empty or
/// `.` segments, no NUL.
pub fn file_area_path(path: &str) -> Result<std::path::PathBuf, FileAreaError> {
    let refuse = |reason| {
        Err(FileAreaError {
            path: path.to_string(),
            reason,
        })
    };
    if path.is_empty() {
        return refuse("it is empty");
    }
    if path.contains('\0') {
        return refuse("it contains a NUL byte");
    }
    if path.starts_with('/') || path.starts_with('\\') {
        return refuse("it is absolute");
    }
    let mut out = std::path::PathBuf::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => return refuse("it has an empty or '.' segment"),
            ".." => return refuse("it has a '..' segment"),
            s => out.push(s),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_area_paths_stay_inside() {
        assert_eq!(
            file_area_path("dir/name.txt").unwrap(),
            std::path::PathBuf::from("dir/name.txt")
        );
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a\0b",
            "a/",
        ] {
            assert!(file_area_path(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
