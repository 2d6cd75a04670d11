//! A turn whose storage writes could not be made durable (the disk is full, say) must
//! not acknowledge them: its HTTP answers become 507 errors naming the cause before
//! they leave the worker. Everything else of the turn (logs, session traffic, the
//! acknowledgement of events) goes out as it was.

use crate::ipc::{decode_frames, encode_into, FromWorker};
use std::collections::HashSet;

/// The status of an answer whose writes were not stored.
const INSUFFICIENT_STORAGE: u16 = 507;

/// Rewrites the encoded frames of one turn whose writes could not be made durable
/// (`error` says why).
pub fn fail_answers(mut out: Vec<u8>, error: &str) -> Vec<u8> {
    let Ok(messages) = decode_frames::<FromWorker>(&mut out) else {
        return out; // our own encoding: cannot happen; leave the turn as it was
    };
    let message = format!("the writes of this request were not stored: {error}");
    let body = crate::http::body::error_value(INSUFFICIENT_STORAGE, &message)
        .to_string()
        .into_bytes();
    let mut failed = HashSet::new();
    let mut rewritten = Vec::with_capacity(out.capacity());
    for m in messages {
        let m = match m {
            FromWorker::HttpFull { id, .. } | FromWorker::HttpStart { id, .. } => {
                failed.insert(id);
                FromWorker::HttpFull {
                    id,
                    status: INSUFFICIENT_STORAGE,
                    headers: vec![("content-type".into(), "application/json".into())],
                    body: body.clone(),
                }
            }
            FromWorker::HttpChunk { id, .. } | FromWorker::HttpEnd { id }
                if failed.contains(&id) =>
            {
                continue
            }
            other => other,
        };
        encode_into(&m, &mut rewritten);
    }
    rewritten
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_become_507_and_the_rest_stays() {
        let mut out = Vec::new();
        for m in [
            FromWorker::HttpFull {
                id: 1,
                status: 200,
                headers: vec![],
                body: b"ok".to_vec(),
            },
            FromWorker::HttpStart {
                id: 2,
                status: 200,
                headers: vec![],
            },
            FromWorker::HttpChunk {
                id: 2,
                chunk: b"x".to_vec(),
            },
            FromWorker::HttpEnd { id: 2 },
            FromWorker::HttpChunk {
                id: 9,
                chunk: b"earlier stream".to_vec(),
            },
            FromWorker::Done { seq: 4 },
        ] {
            encode_into(&m, &mut out);
        }
        let mut rewritten = fail_answers(out, "No space left on device");
        let got: Vec<FromWorker> = decode_frames(&mut rewritten).unwrap();
        assert_eq!(got.len(), 4, "{got:?}");
        for (m, id) in got.iter().zip([1u64, 2]) {
            match m {
                FromWorker::HttpFull {
                    id: i,
                    status,
                    body,
                    ..
                } => {
                    assert_eq!((*i, *status), (id, 507));
                    let body = String::from_utf8_lossy(body);
                    assert!(body.contains("No space left"), "{body}");
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(got[2], FromWorker::HttpChunk { id: 9, .. }));
        assert!(matches!(got[3], FromWorker::Done { seq: 4 }));
    }
}
