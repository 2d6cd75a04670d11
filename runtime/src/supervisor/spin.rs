//! Waiting for a lone call's answer with the runtime thread awake.
//!
//! A call that finds its worker idle is usually answered within tens of
//! microseconds; a runtime thread that goes to sleep meanwhile pays a wake-up
//! (25–150 µs here) to take the answer. Re-polling between yields keeps the thread
//! awake for a short while, then the call waits as usual. While a yielded task
//! waits, tokio polls the I/O driver without blocking when this thread can take it;
//! when another runtime thread is already asleep in the driver, that thread is the
//! one woken for the answer, so the spin saves the wake-up only usually, not always.

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

    /// Ready on its third poll, without ever asking to be woken.
    struct ThirdPoll(u8);

    impl Future for ThirdPoll {
        type Output = u8;
        fn poll(mut self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> Poll<u8> {
            self.0 += 1;
            match self.0 {
                3 => Poll::Ready(3),
                _ => Poll::Pending,
            }
        }
    }

    #[tokio::test]
    async fn it_polls_again_without_being_woken() {
        let polls = tokio::time::timeout(
            Duration::from_secs(5),
            awake(Duration::from_secs(1), ThirdPoll(0)),
        )
        .await;
        assert_eq!(polls, Ok(3));
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
