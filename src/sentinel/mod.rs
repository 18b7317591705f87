//! Following a Sentinel group's master.
//!
//! One monitor task per Sentinel backend asks every reachable sentinel for the
//! master (`SENTINEL GET-MASTER-ADDR-BY-NAME`, and the config epoch and
//! flags from `SENTINEL MASTER`), orders the answers (the highest config
//! epoch first, then those a majority of responders agree on), holds
//! requests while a sentinel says it is failing the master over and has
//! not promoted a replica yet, and confirms each candidate with `ROLE` before publishing it
//! on a `watch` channel the backend's connections follow. It re-checks on a
//! timer, at once on a `+switch-master` event from any sentinel (one
//! subscriber task per sentinel), and when a connection asks (after a
//! `-READONLY` or `-LOADING` reply, or a failed connection). Unreachable
//! sentinels are skipped and retried with backoff; the list grows from
//! `SENTINEL SENTINELS <name>`, to a bound (16, the `known` module).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout, Instant};
use tokio_util::codec::Decoder;
use tracing::{debug, info, warn, Instrument};

use crate::config::{Endpoint, Sentinel, Target};
use crate::dial::{call_with_auth, open_to, Backoff, PoolSettings};
use crate::metrics::BackendMetrics;
use crate::protocol::{BackendReplyDecoder, Reply};

mod answers;
mod attempts;
mod events;
mod hold;
mod known;
pub use answers::{rank_candidates, read_answers, SentinelView, Stage};
use attempts::Attempts;
use events::FAILOVER_CHANNELS;
pub use events::{failover_event, FailoverEvent};
use hold::{Hold, Next, Seen, REPLICA_WAIT_MAX};
use known::{learn, take, Known, Learn};

/// Longest pause before retrying an unreachable sentinel.
const SENTINEL_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Re-check interval while no master is known.
const SEARCH_INTERVAL: Duration = Duration::from_millis(100);

/// Starts the monitor for one backend. Returns the master channel (None until
/// a master is confirmed) and the handle connections use to ask for a re-check.
pub fn start(
    backend: Arc<str>,
    sentinel: Sentinel,
    target: &Target,
    min_replicas_ack: u32,
    settings: Arc<PoolSettings>,
    metrics: Arc<BackendMetrics>,
) -> (
    watch::Receiver<Option<Endpoint>>,
    Arc<Notify>,
    watch::Receiver<bool>,
) {
    let (tx, rx) = watch::channel(None);
    let recheck = Arc::new(Notify::new());
    let (failover, failover_rx) = Attempts::new();
    let known = sentinel
        .addresses
        .iter()
        .map(|address| Known::new(address.clone(), &settings))
        .collect();
    let monitor = Monitor {
        sentinel,
        master_target: target.clone(),
        min_replicas_ack,
        settings,
        master: tx,
        recheck: recheck.clone(),
        failover: Arc::new(failover),
        known,
        metrics,
    };
    let span =
        tracing::info_span!("sentinel", backend = %backend, master = %monitor.sentinel.master);
    tokio::spawn(monitor.run().instrument(span));
    (rx, recheck, failover_rx)
}

struct Monitor {
    sentinel: Sentinel,
    /// How to reach a master for the ROLE check: its credentials (the
    /// password read at each check when it comes from a file) and TLS.
    master_target: Target,
    /// Writes wait for this many replicas: a failover's hold ends once the
    /// new master has them attached (within [`REPLICA_WAIT_MAX`]).
    min_replicas_ack: u32,
    settings: Arc<PoolSettings>,
    /// Publishes the confirmed master; the monitor ends when every receiver is gone.
    master: watch::Sender<Option<Endpoint>>,
    /// Woken by `+switch-master` subscribers and by connections.
    recheck: Arc<Notify>,
    /// True from the moment the sentinels start failing the master over
    /// until the new master is confirmed and published (or the failover is
    /// aborted): the backend's connections take no new requests meanwhile,
    /// so no write reaches a master that is being demoted and lost when it
    /// resyncs. Set by the subscribers, cleared by the monitor (or by a
    /// subscriber on an abort, when no other sentinel's attempt is on:
    /// see [`Attempts`]).
    failover: Arc<Attempts>,
    known: Vec<Known>,
    metrics: Arc<BackendMetrics>,
}

/// One sentinel's answer.
struct Answer {
    index: usize,
    result: Result<SentinelView, String>,
}

impl Monitor {
    async fn run(mut self) {
        // Subscribers hold only a weak handle: they stop once their
        // sentinel is forgotten or the monitor is gone.
        for known in &self.known {
            self.subscribe(known.address.clone(), Arc::downgrade(&known.alive));
        }
        let mut failover = self.failover.subscribe();
        // The failover requests are held for; `None` when none is on.
        let mut hold: Option<Hold> = None;
        loop {
            let (found, seen) = self.discover().await;
            if seen.failing && hold.is_none() {
                // A failover under way that no event told of (the proxy, or
                // its subscribers, started after `+try-failover`): hold as if
                // one had, before the master found is published. The master
                // failed over is the one found, or, when it answers nobody
                // (frozen, killed), the one published last.
                info!("a sentinel is failing the master over: holding requests");
                let from = found.clone().or_else(|| self.master.borrow().clone());
                hold = Some(self.start_hold(from, true));
                self.failover.hold();
            } else if hold
                .as_ref()
                .is_some_and(|h| h.aborted(found.as_ref(), seen))
            {
                // No sentinel leads a failover any more and the master is
                // the same: it was aborted (a switch releases it below).
                info!("the failover is over without a switch: releasing held requests");
                self.end_hold(&mut hold);
            }
            match &found {
                Some(endpoint) => {
                    let current = self.master.borrow().clone();
                    if current.as_ref() != Some(endpoint) {
                        match &current {
                            Some(old) => {
                                self.metrics.switched(old.to_string(), endpoint.to_string());
                                info!(from = %old, to = %endpoint, "master switched")
                            }
                            None => info!(master = %endpoint, "master found"),
                        }
                        self.master.send_replace(Some(endpoint.clone()));
                    }
                }
                None => warn!("no sentinel named a reachable master"),
            }
            self.release_when_done(&mut hold, seen).await;
            let wait = if found.is_some() && hold.is_none() {
                self.settings.sentinel_recheck
            } else {
                SEARCH_INTERVAL.min(self.settings.sentinel_recheck)
            };
            tokio::select! {
                _ = sleep(wait) => {}
                _ = self.recheck.notified() => debug!("re-check requested"),
                changed = failover.changed() => {
                    if changed.is_ok() {
                        let on = *failover.borrow_and_update();
                        if on && hold.is_none() {
                            let from = self.master.borrow().clone();
                            hold = Some(self.start_hold(from, false));
                        } else if !on {
                            // A subscriber saw the abort and said so.
                            hold = None;
                            self.metrics.holding.store(false, Ordering::Relaxed);
                        }
                    }
                }
                _ = self.master.closed() => return,
            }
        }
    }

    /// Ends the hold once the new master is published (connections have
    /// switched, or will before they take a request), no sentinel still
    /// leads a failover that has not promoted a replica, and the new master
    /// has the replicas writes wait for; or after [`hold::HOLD_MAX`] if the
    /// sentinels never finish (see [`Hold::next`]).
    async fn release_when_done(&self, hold: &mut Option<Hold>, seen: Seen) {
        let Some(current) = hold.as_mut() else {
            return;
        };
        let published = self.master.borrow().clone();
        match current.next(published.as_ref(), seen, Instant::now()) {
            Next::Keep => {}
            Next::AwaitReplicas(since) => {
                if self.replicas_attached(published.as_ref(), since).await {
                    info!("failover done: held requests go to the new master");
                    self.end_hold(hold);
                }
            }
            Next::GiveUp => {
                warn!("failover did not finish in time: releasing held requests to the current master");
                self.end_hold(hold);
            }
        }
    }

    /// A hold beginning now, of the failover away from `from`.
    fn start_hold(&self, from: Option<Endpoint>, flagged: bool) -> Hold {
        self.metrics.failover_holds.increment(1);
        self.metrics.holding.store(true, Ordering::Relaxed);
        Hold::new(from, flagged, Instant::now())
    }

    /// Ends the hold: the backend's connections take requests again.
    fn end_hold(&self, hold: &mut Option<Hold>) {
        *hold = None;
        self.metrics.holding.store(false, Ordering::Relaxed);
        self.failover.end();
    }

    /// Asks the sentinels: the confirmed master, if any, and how far those
    /// leading a failover of it have taken it.
    async fn discover(&mut self) -> (Option<Endpoint>, Seen) {
        let now = Instant::now();
        let mut asks = JoinSet::new();
        for (index, known) in self.known.iter().enumerate() {
            if known.retry_at > now {
                continue;
            }
            let address = known.address.clone();
            let sentinel = self.sentinel.clone();
            let limit = self.settings.sentinel_timeout;
            asks.spawn(async move {
                let result = match timeout(limit, ask_sentinel(&address, &sentinel)).await {
                    Ok(result) => result,
                    Err(_) => Err(format!("no answer within {} ms", limit.as_millis())),
                };
                Answer { index, result }
            });
        }
        // Per address: (votes, highest epoch).
        let mut tally: HashMap<Endpoint, (usize, u64)> = HashMap::new();
        let mut responders = 0;
        let mut seen = Seen::default();
        let mut learned = Vec::new();
        while let Some(joined) = asks.join_next().await {
            let Ok(Answer { index, result }) = joined else {
                continue;
            };
            let Some(known) = self.known.get_mut(index) else {
                continue;
            };
            match result {
                Ok(view) => {
                    known.backoff.reset();
                    known.failed = false;
                    responders += 1;
                    seen.add(view.stage);
                    let entry = tally.entry(view.master).or_insert((0, 0));
                    entry.0 += 1;
                    entry.1 = entry.1.max(view.epoch);
                    learned.extend(view.others);
                }
                Err(error) => {
                    known.failed = true;
                    known.retry_at = Instant::now() + known.backoff.pause();
                    debug!(sentinel = %known.address, %error, "sentinel unreachable");
                }
            }
        }
        self.learn(learned);
        for (endpoint, votes, epoch) in rank_candidates(tally, responders) {
            match timeout(self.settings.sentinel_timeout, self.role(&endpoint)).await {
                Ok(Ok(role)) if role == "master" => return (Some(endpoint), seen),
                Ok(Ok(role)) => {
                    warn!(%endpoint, votes, epoch, %role, "sentinels name a node that is not a master")
                }
                Ok(Err(error)) => debug!(%endpoint, %error, "candidate master unreachable"),
                Err(_) => debug!(%endpoint, "candidate master did not answer ROLE"),
            }
        }
        (None, seen)
    }

    /// Takes in the sentinels the others named (see [`known`]).
    fn learn(&mut self, named: Vec<String>) {
        let mut changed = false;
        let mut replaced = false;
        for address in named {
            let decision = learn(&self.known, &address, replaced);
            replaced |= matches!(decision, Learn::Replace(_));
            let (gone, at) = take(&mut self.known, address, decision, &self.settings);
            if let Some(gone) = gone {
                info!(sentinel = %gone.address, "forgot a learned sentinel that does not answer, for room");
            }
            if let Some(known) = at.and_then(|at| self.known.get(at)) {
                info!(sentinel = %known.address, "learned a sentinel");
                self.subscribe(known.address.clone(), Arc::downgrade(&known.alive));
                changed = true;
            }
        }
        self.count_sentinels(changed);
    }

    /// The sentinels known, in the metrics, when the list `changed` or none
    /// were counted yet.
    fn count_sentinels(&self, changed: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        if changed || self.metrics.sentinels.load(Relaxed) == 0 {
            self.metrics.sentinels.store(self.known.len(), Relaxed);
            if let Ok(mut list) = self.metrics.sentinel_list.lock() {
                *list = self.known.iter().map(|k| k.address.clone()).collect();
            }
        }
    }

    /// Whether the new master `master` (published at `since`) has the
    /// replicas writes wait for attached, so that ending the hold does not
    /// answer the held writes `-NOREPLICAS` while the sentinels are still
    /// reconfiguring the other replicas. Past [`REPLICA_WAIT_MAX`], or with
    /// no replicas asked for, yes: then `-NOREPLICAS` says what is so.
    async fn replicas_attached(&self, master: Option<&Endpoint>, since: Instant) -> bool {
        let Some(master) = master.filter(|_| self.min_replicas_ack > 0) else {
            return true;
        };
        if since.elapsed() >= REPLICA_WAIT_MAX {
            warn!(%master, "the new master has no replica attached yet: releasing held requests");
            return true;
        }
        let ask = timeout(self.settings.sentinel_timeout, self.role_reply(master));
        match ask.await {
            Ok(Ok(reply)) => {
                let online = crate::dial::replicas_in(&reply);
                debug!(%master, online, "replicas attached to the new master");
                online >= self.min_replicas_ack as usize
            }
            _ => false,
        }
    }

    /// The node's `ROLE`: "master", "slave" or "sentinel".
    async fn role(&self, endpoint: &Endpoint) -> Result<String, String> {
        let reply = self.role_reply(endpoint).await?;
        crate::dial::role_in(Some(&reply))
    }

    /// The node's `ROLE` reply.
    async fn role_reply(&self, endpoint: &Endpoint) -> Result<Reply, String> {
        let stream = open_to(endpoint, self.master_target.tls.as_ref())
            .await
            .map_err(|e| e.to_string())?;
        let user = &self.master_target.username;
        let password = self
            .master_target
            .password_now()
            .map_err(|e| e.to_string())?;
        let mut rbuf = BytesMut::new();
        let role = vec![Bytes::from_static(b"ROLE")];
        let replies = call_with_auth(
            &stream,
            &mut rbuf,
            user.as_deref(),
            password.as_deref(),
            vec![role],
        )
        .await
        .map_err(|e| e.to_string())?;
        replies
            .into_iter()
            .next()
            .ok_or_else(|| "no ROLE reply".to_string())
    }

    /// Starts a task that wakes the monitor on this sentinel's `+switch-master`.
    fn subscribe(&self, address: String, alive: Weak<()>) {
        let recheck = self.recheck.clone();
        let failover = self.failover.clone();
        let sentinel = self.sentinel.clone();
        let settings = self.settings.clone();
        let span = tracing::debug_span!("subscriber", sentinel = %address);
        tokio::spawn(
            async move {
                let mut backoff = Backoff::new(settings.backoff_min, SENTINEL_BACKOFF_MAX);
                while alive.strong_count() > 0 {
                    match listen(&address, &sentinel, &recheck, &failover, &alive, &settings).await
                    {
                        Ok(()) => return,
                        Err(error) => debug!(%error, "subscription lost"),
                    }
                    sleep(backoff.pause()).await;
                }
            }
            .instrument(span),
        );
    }
}

fn sentinel_endpoint(address: &str) -> Endpoint {
    Endpoint::Tcp(address.to_string())
}

/// Asks one sentinel for the master's address and config epoch, and for the
/// other sentinels it knows.
async fn ask_sentinel(address: &str, sentinel: &Sentinel) -> Result<SentinelView, String> {
    let stream = open_to(&sentinel_endpoint(address), sentinel.tls.as_ref())
        .await
        .map_err(|e| e.to_string())?;
    let name = Bytes::from(sentinel.master.clone());
    let ask = |sub: &'static [u8]| {
        vec![
            Bytes::from_static(b"SENTINEL"),
            Bytes::from_static(sub),
            name.clone(),
        ]
    };
    // The address from GET-MASTER-ADDR-BY-NAME (it names the promoted replica
    // as soon as a failover has promoted it); the config epoch from MASTER.
    let commands = vec![
        ask(b"GET-MASTER-ADDR-BY-NAME"),
        ask(b"MASTER"),
        ask(b"SENTINELS"),
    ];
    let mut rbuf = BytesMut::new();
    let (user, password) = (sentinel.username.as_deref(), sentinel.password.as_deref());
    let mut replies = call_with_auth(&stream, &mut rbuf, user, password, commands)
        .await
        .map_err(|e| e.to_string())?;
    let others = replies.pop().unwrap_or(Reply::Null);
    let master = replies.pop().unwrap_or(Reply::Null);
    let address = replies.pop().unwrap_or(Reply::Null);
    read_answers(&sentinel.master, &address, &master, &others)
}

/// Subscribes to `+switch-master` on one sentinel and wakes the monitor on
/// each event for our master. Returns `Ok` once the monitor is gone.
async fn listen(
    address: &str,
    sentinel: &Sentinel,
    recheck: &Notify,
    failover: &Attempts,
    alive: &Weak<()>,
    settings: &PoolSettings,
) -> Result<(), String> {
    let limit = settings.sentinel_timeout;
    let endpoint = sentinel_endpoint(address);
    let stream = timeout(limit, open_to(&endpoint, sentinel.tls.as_ref()))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    // Waits for events only: keepalive notices a sentinel that vanished.
    stream
        .keep_alive(settings.tcp_keepalive)
        .map_err(|e| e.to_string())?;
    let subscribe: Vec<Bytes> = std::iter::once(&b"SUBSCRIBE"[..])
        .chain(FAILOVER_CHANNELS.iter().map(|c| c.as_bytes()))
        .map(Bytes::copy_from_slice)
        .collect();
    let (user, password) = (sentinel.username.as_deref(), sentinel.password.as_deref());
    let mut rbuf = BytesMut::new();
    let replies = timeout(
        limit,
        call_with_auth(&stream, &mut rbuf, user, password, vec![subscribe]),
    )
    .await
    .map_err(|_| "subscribe timed out".to_string())?
    .map_err(|e| e.to_string())?;
    if let Some(Reply::Error(e)) = replies.first() {
        return Err(String::from_utf8_lossy(e).into_owned());
    }
    debug!("subscribed to the failover events");
    loop {
        while let Some(frame) = BackendReplyDecoder::default()
            .decode(&mut rbuf)
            .map_err(|e| e.to_string())?
        {
            let message = Reply::from_resp2(frame);
            match failover_event(&message, &sentinel.master) {
                // `started` and `aborted` say whether the flag moved: log changes only.
                Some(FailoverEvent::Started) if failover.started(address) => {
                    info!(event = ?message, "failover started: holding requests");
                }
                Some(FailoverEvent::Aborted) if failover.aborted(address) => {
                    info!(event = ?message, "failover aborted: requests go to the old master");
                }
                Some(FailoverEvent::Started | FailoverEvent::Aborted) => {}
                Some(FailoverEvent::Progress) => recheck.notify_one(),
                Some(FailoverEvent::Switched) => {
                    info!(event = ?message, "+switch-master");
                    recheck.notify_one();
                }
                None => {}
            }
        }
        // Wake now and then to notice that the monitor is gone.
        match timeout(Duration::from_secs(1), stream.read_some(&mut rbuf)).await {
            Ok(Ok(0)) => return Err("closed by the sentinel".into()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => {
                if alive.strong_count() == 0 {
                    return Ok(());
                }
            }
        }
    }
}
