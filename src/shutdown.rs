//! Shutdown signalling: SIGTERM or SIGINT (or a test) tells every listener to stop.

use tokio::sync::watch;

/// Fires the shutdown; dropping it fires it too.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// Waits for the shutdown.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A trigger (kept by whoever decides to stop: the signal task or a test) and
/// the receiver the server waits on.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    pub fn fire(&self) {
        let _ = self.0.send(true);
    }
}

impl Shutdown {
    /// Resolves once shutdown is requested (or the trigger is gone).
    pub async fn recv(&mut self) {
        let _ = self.0.wait_for(|fired| *fired).await;
    }
}

/// SIGTERM and SIGINT, taken at start (before the ports open, so that one
/// sent as soon as the proxy answers drains it rather than ending it at
/// once by the default action, or being lost to an inherited SIG_IGN).
pub struct Signals(Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>);

impl Signals {
    /// Takes both signals; without handlers (none could be installed) the
    /// process still ends on the default action.
    pub fn take() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => Signals(Some((term, int))),
            _ => Signals(None),
        }
    }

    /// Resolves on the next SIGTERM or SIGINT (sent since they were taken).
    pub async fn next(&mut self) {
        let Some((term, int)) = &mut self.0 else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
}
