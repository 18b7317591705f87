//! When a shared backend connection is replaced without a fault: it
//! reached `[pool] max_connection_age_s`, or its host name no longer leads
//! to the address it reached (`[pool] dns_refresh_s`). The connection's
//! session waits on [`Renewal::next`] beside its socket and jobs, and acts
//! on what it says.

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{Instant, Sleep};
use tracing::{debug, info};

/// How a session looks its host name up again (`[pool] dns_refresh_s`).
pub(super) struct Refresh {
    pub(super) every: Duration,
    pub(super) address: String,
    pub(super) hosts_file: Option<std::path::PathBuf>,
}

impl Refresh {
    /// For a connection that reached `peer` through `endpoint`: when the
    /// endpoint is a host name and `[pool] dns_refresh_s` is set.
    pub(super) fn of(
        settings: &crate::dial::PoolSettings,
        endpoint: Option<&crate::config::Endpoint>,
        peer: Option<SocketAddr>,
    ) -> Option<Refresh> {
        let every = settings.dns_refresh?;
        peer?;
        match endpoint? {
            crate::config::Endpoint::Tcp(address) if crate::resolve::is_name(address) => {
                Some(Refresh {
                    every,
                    address: address.clone(),
                    hosts_file: settings.hosts_file.clone(),
                })
            }
            _ => None,
        }
    }
}

/// Returns once the host name a connection reached `peer` through no
/// longer leads there (looked up every `refresh.every`); never without a
/// refresh. For the connections apart from the pool (a subscriber's link,
/// a tracking link), which have no renewal of their own.
pub(super) async fn name_moved(refresh: Option<Refresh>, peer: Option<SocketAddr>) {
    let mut renewal: Renewal<()> = Renewal::new(None, refresh, peer);
    if !renewal.armed() {
        return std::future::pending().await;
    }
    // Without an age, only a move ends the wait.
    while !matches!(renewal.next().await, Renew::Moved) {}
}

/// The timers and background work of one session's renewal; `R` is the
/// replacement connection it prepares.
pub(super) struct Renewal<R> {
    /// `None`: the connection does not age (a held one keeps its client's
    /// state).
    max_age: Option<Duration>,
    aged: Pin<Box<Sleep>>,
    /// The replacement being made, to the same endpoint.
    preparing: Option<JoinHandle<Result<R, String>>>,
    refresh: Option<Refresh>,
    refresh_due: Pin<Box<Sleep>>,
    lookup: Option<JoinHandle<std::io::Result<Vec<SocketAddr>>>>,
    /// The address the session reached.
    peer: Option<SocketAddr>,
}

/// What the session does next about its renewal.
pub(super) enum Renew<R> {
    /// Old enough: make the replacement ([`Renewal::prepare`]) while this
    /// connection serves on.
    Aged,
    /// The replacement is made (`None`: it could not be; the next attempt
    /// connects): take nothing more, let the replies come in, go on over it.
    Prepared(Option<R>),
    /// The name leads elsewhere now: replace the connection as an aged one.
    Moved,
}

impl<R> Renewal<R> {
    pub(super) fn new(
        max_age: Option<Duration>,
        refresh: Option<Refresh>,
        peer: Option<SocketAddr>,
    ) -> Renewal<R> {
        let first_refresh = refresh.as_ref().map_or(Duration::ZERO, |r| r.every);
        Renewal {
            max_age,
            aged: Box::pin(tokio::time::sleep(max_age.unwrap_or(Duration::ZERO))),
            preparing: None,
            refresh,
            refresh_due: Box::pin(tokio::time::sleep(first_refresh)),
            lookup: None,
            peer,
        }
    }

    /// Whether there is anything to wait for.
    pub(super) fn armed(&self) -> bool {
        self.max_age.is_some() || self.refresh.is_some()
    }

    /// The replacement of an aged connection, being made.
    pub(super) fn prepare(&mut self, making: JoinHandle<Result<R, String>>) {
        self.preparing = Some(making);
    }

    /// Waits for the next thing the session must act on. Cancel-safe: the
    /// state changes only once a wait is over.
    pub(super) async fn next(&mut self) -> Renew<R> {
        let Renewal {
            max_age,
            aged,
            preparing,
            refresh,
            refresh_due,
            lookup,
            peer,
        } = self;
        loop {
            tokio::select! {
                _ = aged.as_mut(), if max_age.is_some() && preparing.is_none() => return Renew::Aged,
                made = async { preparing.as_mut().expect("guarded").await }, if preparing.is_some() => {
                    *preparing = None;
                    return Renew::Prepared(match made {
                        Ok(Ok(ready)) => Some(ready),
                        Ok(Err(reason)) => {
                            debug!(%reason, "no replacement for the aged connection yet");
                            None
                        }
                        Err(_) => None,
                    });
                }
                _ = refresh_due.as_mut(), if refresh.is_some() && lookup.is_none() => {
                    if let Some(refresh) = refresh.as_ref() {
                        refresh_due.as_mut().reset(Instant::now() + refresh.every);
                        let (address, hosts) = (refresh.address.clone(), refresh.hosts_file.clone());
                        *lookup = Some(tokio::spawn(async move {
                            crate::resolve::addresses(&address, hosts.as_deref()).await
                        }));
                    }
                }
                found = async { lookup.as_mut().expect("guarded").await }, if lookup.is_some() => {
                    *lookup = None;
                    if let (Ok(Ok(found)), Some(peer)) = (found, *peer) {
                        if !found.is_empty() && !found.contains(&peer) {
                            info!(%peer, now = ?found, "the backend's name leads elsewhere now: reconnecting");
                            return Renew::Moved;
                        }
                    }
                }
                else => std::future::pending::<()>().await,
            }
        }
    }
}
