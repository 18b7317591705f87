//! Listeners, accepting and draining.
//!
//! `run` accepts on TCP and/or a unix socket. At most `limits.max_clients`
//! clients are served, counted over every listener; one more is told so and
//! closed, as Redis does. Each client is handed, in turn, to a worker thread
//! (see [`crate::workers`]), where [`crate::client::serve`] serves it until
//! it leaves; the state they share is [`crate::shared`].

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::net::Stream;
use crate::shared::Shared;
use crate::shutdown::Shutdown;
use crate::workers::Workers;

/// The bound listening sockets.
pub struct Listeners {
    pub tcp: Option<TcpListener>,
    pub unix: Option<(UnixListener, PathBuf)>,
    /// `[listen] tls`: TCP, with TLS negotiated per client.
    pub tls: Option<TcpListener>,
}

impl Listeners {
    /// Binds what `[listen]` asks for.
    pub async fn bind(config: &Config) -> anyhow::Result<Listeners> {
        let tcp = match &config.listen.address {
            Some(address) => Some(
                TcpListener::bind(address)
                    .await
                    .map_err(|e| anyhow::anyhow!("listen.address {address}: {e}"))?,
            ),
            None => None,
        };
        let unix = match &config.listen.unix_socket {
            Some(path) => {
                // A socket file left by a previous run would make bind fail.
                if path.exists() {
                    std::fs::remove_file(path)?;
                }
                let listener = UnixListener::bind(path)
                    .map_err(|e| anyhow::anyhow!("listen.unix_socket {}: {e}", path.display()))?;
                let mode = config.unix_socket_mode()?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
                Some((listener, path.clone()))
            }
            None => None,
        };
        let tls = match &config.listen.tls {
            Some(tls) => Some(
                TcpListener::bind(&tls.address)
                    .await
                    .map_err(|e| anyhow::anyhow!("listen.tls.address {}: {e}", tls.address))?,
            ),
            None => None,
        };
        Ok(Listeners { tcp, unix, tls })
    }

    pub fn tls_port(&self) -> u16 {
        self.tls
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map_or(0, |a| a.port())
    }

    pub fn tcp_port(&self) -> u16 {
        self.tcp
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map_or(0, |a| a.port())
    }
}

/// Serves clients until `shutdown` fires, then drains: stops accepting,
/// closes each client once everything it sent is answered, and returns when
/// all are gone or the grace period is over.
pub async fn run(listeners: Listeners, shared: Arc<Shared>, mut shutdown: Shutdown) {
    // Every client task is tracked, whichever listener accepted it, so the
    // drain can wait for all of them.
    let clients = TaskTracker::new();
    let tcp = listeners.tcp.map(|listener| {
        let local = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        info!(address = %local, "listening on tcp");
        tokio::spawn(accept_loop(
            Listener::Tcp(listener),
            local,
            shared.clone(),
            clients.clone(),
        ))
    });
    let unix = listeners.unix.map(|(listener, path)| {
        info!(path = %path.display(), "listening on unix socket");
        let task = tokio::spawn(accept_loop(
            Listener::Unix(listener),
            path.display().to_string(),
            shared.clone(),
            clients.clone(),
        ));
        (task, path)
    });
    let tls = listeners.tls.map(|listener| {
        let local = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        info!(address = %local, "listening on tcp with TLS");
        tokio::spawn(accept_loop(
            Listener::Tls(listener),
            local,
            shared.clone(),
            clients.clone(),
        ))
    });
    shutdown.recv().await;
    let grace = Duration::from_millis(shared.topology().config.shutdown.grace_period_ms);
    info!(grace_ms = grace.as_millis() as u64, "draining");
    // /readyz fails from now on, and every client handler starts draining.
    shared.drain.send_replace(true);
    for task in [tcp, tls].into_iter().flatten() {
        task.abort();
    }
    if let Some((task, path)) = unix {
        task.abort();
        let _ = std::fs::remove_file(path);
    }
    clients.close();
    match tokio::time::timeout(grace, clients.wait()).await {
        Ok(()) => info!("all clients finished"),
        Err(_) => warn!(
            clients = shared.stats.connected_clients.load(Ordering::Relaxed),
            "grace period over; closing the remaining clients"
        ),
    }
}

/// A bound listener of any kind.
enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
    /// TCP whose clients speak TLS.
    Tls(TcpListener),
}

impl Listener {
    /// Accepts one client: its socket and its peer address for logs and CLIENT LIST.
    async fn accept(&self, local: &str) -> std::io::Result<(Stream, String)> {
        match self {
            Listener::Tcp(listener) | Listener::Tls(listener) => {
                let (socket, peer) = listener.accept().await?;
                let _ = socket.set_nodelay(true);
                Ok((Stream::Tcp(socket), peer.to_string()))
            }
            Listener::Unix(listener) => {
                let (socket, _) = listener.accept().await?;
                Ok((Stream::Unix(socket), format!("{local}:0")))
            }
        }
    }
}

/// Accepts clients. One beyond `[limits] max_clients` (every listener
/// counted together, the limit in force read at each accept) gets Redis's
/// error and is closed, as Redis does, instead of waiting unanswered.
/// Clients are handed to the workers in turn (see [`crate::workers`]); a
/// client is served on its worker from then on.
async fn accept_loop(listener: Listener, local: String, shared: Arc<Shared>, clients: TaskTracker) {
    let workers = Workers::current();
    let tls = matches!(listener, Listener::Tls(_));
    let mut next = 0;
    loop {
        match listener.accept(&local).await {
            Ok((stream, peer)) => {
                let topology = shared.topology();
                let max_clients = crate::fd_limit::max_clients(topology.config.limits.max_clients);
                let count = &shared.stats.connected_clients;
                if count.fetch_add(1, Ordering::AcqRel) >= max_clients {
                    count.fetch_sub(1, Ordering::AcqRel);
                    shared.metrics.rejected_clients.increment(1);
                    // Told on a task of its own, bounded in time, so a client
                    // that never reads cannot hold up the accept loop.
                    tokio::spawn(async move {
                        let mut reply = bytes::BytesMut::from(MAX_CLIENTS_REACHED);
                        let _ =
                            tokio::time::timeout(REFUSE_WRITE, stream.write_all(&mut reply)).await;
                    });
                    continue;
                }
                let keepalive = Duration::from_secs(topology.config.listen.tcp_keepalive_s);
                if let Err(error) = stream.keep_alive(keepalive) {
                    debug!(%error, "keepalive not set");
                }
                let worker = next;
                next = (next + 1) % workers.len();
                let client = Client {
                    shared: shared.clone(),
                    peer,
                    local: local.clone(),
                    tls,
                };
                if workers.len() == 1 || workers.is_on(worker) {
                    clients.spawn(client.serve(stream));
                    continue;
                }
                match stream.detach() {
                    Ok(socket) => {
                        workers.spawn_on(
                            worker,
                            clients.track_future(async move {
                                match socket.attach() {
                                    Ok(stream) => client.serve(stream).await,
                                    Err(error) => client.lost(error),
                                }
                            }),
                        );
                    }
                    Err(error) => client.lost(error),
                }
            }
            Err(e) => accept_error(e).await,
        }
    }
}

/// An accepted client on its way to its worker.
struct Client {
    shared: Arc<Shared>,
    peer: String,
    local: String,
    /// It speaks TLS: negotiated first, on its worker.
    tls: bool,
}

impl Client {
    async fn serve(self, stream: Stream) {
        let stream = match self.tls {
            true => negotiate(&self.shared, stream, &self.peer).await,
            false => Some(stream),
        };
        match stream {
            Some(stream) => serve(self.shared, stream, self.peer, self.local).await,
            // The handshake failed (logged).
            None => self.free_slot(),
        }
    }

    /// The socket could not be handed over (logged); its slot is freed.
    fn lost(self, error: std::io::Error) {
        warn!(peer = %self.peer, %error, "could not hand a client to its worker");
        self.free_slot();
    }

    /// Gives back the slot in `connected_clients` the accept loop took.
    fn free_slot(&self) {
        self.shared
            .stats
            .connected_clients
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// The longest a client may take over its TLS handshake.
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);

/// Negotiates TLS with a client of the TLS listener, with the certificates
/// in force (a reload re-reads them); `None` when it fails (logged).
async fn negotiate(shared: &Shared, stream: Stream, peer: &str) -> Option<Stream> {
    let Stream::Tcp(tcp) = stream else {
        return None;
    };
    let acceptor = shared.tls_acceptor()?;
    match tokio::time::timeout(TLS_HANDSHAKE, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => {
            let (tcp, session) = tls.into_inner();
            let stream = crate::tls_stream::TlsStream::new(tcp, session);
            Some(Stream::Tls(Box::new(stream)))
        }
        Ok(Err(error)) => {
            debug!(%peer, %error, "TLS handshake failed");
            None
        }
        Err(_) => {
            debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

/// What a client beyond the limit reads before the proxy closes it.
const MAX_CLIENTS_REACHED: &[u8] = b"-ERR max number of clients reached\r\n";
/// The longest the proxy tries to tell a refused client.
const REFUSE_WRITE: Duration = Duration::from_secs(1);

/// Out of file descriptors and the like: wait a little rather than spin.
async fn accept_error(e: std::io::Error) {
    warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Serves one client; its slot in `connected_clients` was taken by the accept loop.
async fn serve(shared: Arc<Shared>, stream: Stream, peer: String, local: String) {
    shared
        .stats
        .connections_received
        .fetch_add(1, Ordering::Relaxed);
    let on_worker = shared.worker_clients.get(crate::workers::index());
    if let Some(count) = on_worker {
        count.fetch_add(1, Ordering::Relaxed);
    }
    crate::client::serve(shared.clone(), stream, peer, local).await;
    if let Some(count) = on_worker {
        count.fetch_sub(1, Ordering::Relaxed);
    }
    shared
        .stats
        .connected_clients
        .fetch_sub(1, Ordering::Relaxed);
}
