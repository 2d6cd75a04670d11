//! Waiting for a lone call's answer with the runtime thread awake.
//!
//! A call that finds its worker idle is usually answered within tens of
//! microseconds; a runtime thread that goes to sleep meanwhile pays a wake-up
//! (25–150 µs here) to take the answer. Re-polling between yields keeps the thread
//! checking its sockets (tokio polls the I/O driver without blocking while a
//! yielded task waits) for a short while, then the call waits as usual.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

/// Awaits `future`, re-polling it between yields to the runtime for up to `spin`
/// before waiting for its wake-up like any other.
pub(super) async fn awake<F: Future>(spin: Duration, future: F) -> F::Output {
    let mut future = pin!(future);
    if spin.is_zero() {
        return future.await;
    }
    let until = Instant::now() + spin;
    loop {
        if let Poll::Ready(output) = poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await {
            return output;
        }
        if Instant::now() >= until {
            return future.await;
        }
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_answer_within_the_spin_is_taken() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            let _ = tx.send(7);
        });
        assert_eq!(awake(Duration::from_millis(50), rx).await, Ok(7));
    }

    #[tokio::test]
    async fn a_late_answer_is_still_awaited() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let _ = tx.send(8);
        });
        assert_eq!(awake(Duration::from_micros(10), rx).await, Ok(8));
    }
}
