//! Whether a backend is serving (`Health`), its health probe, and the
//! server version it reports.

use crate::config::{Endpoint, Target};
use crate::dial::{call, handshake, DialError};
use crate::dial::{Backoff, PoolSettings};
use crate::metrics::BackendMetrics;
use crate::net::Stream;
use crate::protocol::Reply;
use bytes::{Bytes, BytesMut};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

/// Whether a backend is serving, decided on streaks of results rather than
/// on one: `failures` consecutive failures mark it down, `successes`
/// consecutive successes mark it up again.
#[derive(Debug)]
pub struct Health {
    pub(super) id: Arc<str>,
    pub(super) up: AtomicBool,
    /// Connections currently established.
    pub(super) connected: AtomicUsize,
    pub(super) metrics: Arc<BackendMetrics>,
    /// Positive: consecutive successes; negative: consecutive failures.
    pub(super) streak: AtomicI64,
    pub(super) failures: i64,
    pub(super) successes: i64,
    /// When the last success came, in ms after `since`: a backend with none
    /// for a probe interval is idle, and probed.
    pub(super) since: Instant,
    pub(super) last_success_ms: AtomicU64,
    /// The server's version at the last connect, packed (0: not known yet).
    pub(super) version: AtomicU64,
}

impl Health {
    pub(super) fn new(
        id: Arc<str>,
        settings: &PoolSettings,
        metrics: Arc<BackendMetrics>,
    ) -> Health {
        Health {
            id,
            up: AtomicBool::new(true),
            connected: AtomicUsize::new(0),
            metrics,
            streak: AtomicI64::new(0),
            failures: settings.health_failures as i64,
            successes: settings.health_successes as i64,
            since: Instant::now(),
            last_success_ms: AtomicU64::new(0),
            version: AtomicU64::new(0),
        }
    }

    /// How long since the last success (a reply, a connect or a probe).
    pub(super) fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_success_ms.load(Ordering::Relaxed));
        self.since.elapsed().saturating_sub(last)
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub(super) fn success(&self) {
        self.success_at(Instant::now());
    }

    /// A success seen at `at` (a reply read then: the caller has the time).
    /// Every worker's connections report here on every read: in the steady
    /// state (up, the streak past the threshold, the millisecond already
    /// noted) nothing is written, so the lines stay shared between cores.
    pub(super) fn success_at(&self, at: Instant) {
        let since_start = at.saturating_duration_since(self.since).as_millis() as u64;
        if self.last_success_ms.load(Ordering::Relaxed) != since_start {
            self.last_success_ms.store(since_start, Ordering::Relaxed);
        }
        if self.is_up() && self.streak.load(Ordering::Relaxed) >= self.successes.max(1) {
            return;
        }
        let streak = self.record(|s| if s < 0 { 1 } else { s.saturating_add(1) });
        if streak >= self.successes && !self.up.swap(true, Ordering::Relaxed) {
            info!(backend = %self.id, "backend is up");
        }
    }

    pub(super) fn failure(&self) {
        let streak = self.record(|s| if s > 0 { -1 } else { s.saturating_sub(1) });
        self.metrics.errors.increment(1);
        if -streak >= self.failures && self.up.swap(false, Ordering::Relaxed) {
            warn!(backend = %self.id, "backend is down");
        }
    }

    pub(super) fn record(&self, step: impl Fn(i64) -> i64) -> i64 {
        let previous = self
            .streak
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| Some(step(s)))
            .unwrap_or_else(|s| s);
        step(previous)
    }
}

/// Asks the server its version on a connection of its own until it
/// answers (every few seconds while it cannot be reached; a server that
/// answers without a version is left unknown):
/// INFO and HELLO report the lowest of the backends'. Apart from the
/// client path, so a server without INFO affects nothing else.
async fn learn_version(
    health: Arc<Health>,
    mut endpoint: watch::Receiver<Option<Endpoint>>,
    target: Target,
    connect_timeout: Duration,
    stop: CancellationToken,
) {
    let mut again = Backoff::fixed(Duration::from_secs(5));
    loop {
        let current = endpoint.borrow_and_update().clone();
        if let Some(current) = current {
            let asked = timeout(connect_timeout, crate::dial::version(&current, &target)).await;
            if let Ok(Ok(answer)) = asked {
                if let Some(version) = answer {
                    health.version.store(version.packed(), Ordering::Relaxed);
                }
                return;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(again.pause()) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// The health probe of one backend: while it is down, or idle (no success
/// for a probe interval), PING it after the usual handshake every
/// `probe_interval`, over a connection of its own kept between probes. Its
/// results count like any other: `health_successes` of them bring a
/// returning backend up with no client traffic, `health_failures` mark a
/// dead idle one down.
pub(super) struct Probe {
    pub(super) health: Arc<Health>,
    pub(super) endpoint: watch::Receiver<Option<Endpoint>>,
    pub(super) target: Target,
    pub(super) settings: Arc<PoolSettings>,
}

impl Probe {
    /// Starts the probe and the version learner of backend `id`; both stop
    /// when the token returned is cancelled.
    pub(super) fn start(self, id: &str) -> CancellationToken {
        let stop = CancellationToken::new();
        tokio::spawn(learn_version(
            self.health.clone(),
            self.endpoint.clone(),
            self.target.clone(),
            self.settings.connect_timeout,
            stop.clone(),
        ));
        tokio::spawn(
            self.run(stop.clone())
                .instrument(tracing::info_span!("probe", backend = %id)),
        );
        stop
    }

    async fn run(self, stop: CancellationToken) {
        let interval = self.settings.probe_interval;
        let mut conn: Option<(Endpoint, Stream)> = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            if self.health.is_up() && self.health.idle_for() < interval {
                continue;
            }
            let current = self.endpoint.borrow().clone();
            let Some(endpoint) = current else {
                // No master known yet: nothing to probe; the monitor searches.
                continue;
            };
            if conn.as_ref().is_some_and(|(at, _)| *at != endpoint) {
                conn = None;
            }
            let attempt = timeout(self.settings.connect_timeout, async {
                if conn.is_none() {
                    let done = handshake(&endpoint, &self.target, &self.settings).await?;
                    conn = Some((endpoint.clone(), done.stream));
                }
                let Some((_, stream)) = &conn else {
                    return Err(DialError::Closed);
                };
                let mut rbuf = BytesMut::new();
                match call(stream, &mut rbuf, &[vec![Bytes::from_static(b"PING")]]).await?[..] {
                    [Reply::Status(ref pong)] if &pong[..] == b"PONG" => Ok(true),
                    [ref reply] if crate::dial::loading(reply) => Ok(false),
                    ref other => Err(DialError::Protocol(format!("PING answered {other:?}"))),
                }
            })
            .await;
            match attempt {
                Ok(Ok(true)) => {
                    self.health.metrics.probes_ok.increment(1);
                    self.health.success();
                }
                Ok(Ok(false)) => {
                    // Loading its data: there, and soon serving. The
                    // connections hold what they are sent meanwhile (for a
                    // request timeout) and count it a failure after that.
                    debug!("probe: the backend is loading its data");
                }
                Ok(Err(error)) => {
                    debug!(%error, "probe failed");
                    self.probe_failed(&mut conn);
                }
                Err(_) => {
                    debug!("probe timed out");
                    self.probe_failed(&mut conn);
                }
            }
        }
    }

    pub(super) fn probe_failed(&self, conn: &mut Option<(Endpoint, Stream)>) {
        *conn = None;
        self.health.metrics.probes_failed.increment(1);
        self.health.failure();
    }
}
