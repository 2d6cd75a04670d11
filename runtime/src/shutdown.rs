//! The host's one stop signal, passed down to every long-lived task (the accept
//! loop, each connection, the `mims/` watcher), which awaits it instead of polling
//! a flag.

use tokio::sync::{mpsc, watch};

/// Fires the signal; dropping it fires it too.
pub struct Trigger {
    tx: watch::Sender<bool>,
}

/// A task's view of the signal.
#[derive(Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// A new signal: the trigger for whoever decides, the receiver to pass down.
pub fn signal() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger { tx }, Shutdown { rx })
}

impl Trigger {
    /// Tells every holder of a [`Shutdown`] to stop.
    pub fn fire(&self) {
        self.tx.send_replace(true);
    }
}

impl Shutdown {
    /// Whether the signal has fired.
    pub fn is_fired(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once the signal fires (at once if it already has).
    pub async fn fired(&mut self) {
        // An error means the trigger is gone, which is a stop as well.
        let _ = self.rx.wait_for(|fired| *fired).await;
    }
}

/// Counts tasks that must finish before the host stops: each holds a [`Guard`],
/// and [`Drain::finished`] resolves when every guard is dropped.
pub struct Drain {
    tx: Option<mpsc::Sender<()>>,
    rx: mpsc::Receiver<()>,
}

/// Held by one task that [`Drain::finished`] waits for.
#[derive(Clone)]
pub struct Guard {
    _tx: mpsc::Sender<()>,
}

impl Default for Drain {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(1);
        Self { tx: Some(tx), rx }
    }
}

impl Drain {
    /// A guard for one more task.
    pub fn guard(&self) -> Option<Guard> {
        self.tx.as_ref().map(|tx| Guard { _tx: tx.clone() })
    }

    /// Resolves when every guard handed out is dropped.
    pub async fn finished(mut self) {
        self.tx = None;
        let _ = self.rx.recv().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_signal_reaches_every_holder_and_the_drain_waits_for_guards() {
        let (trigger, shutdown) = signal();
        let mut a = shutdown.clone();
        let waiter = tokio::spawn(async move { a.fired().await });
        assert!(!shutdown.is_fired());
        trigger.fire();
        waiter.await.expect("woken");
        assert!(shutdown.is_fired());

        let drain = Drain::default();
        let guard = drain.guard().expect("open");
        let held = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            drop(guard);
        });
        drain.finished().await;
        held.await.expect("task");
    }
}
