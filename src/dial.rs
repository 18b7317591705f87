//! Talking to a Redis server outside the pipelined path: opening a socket,
//! a few commands in one write (with AUTH first when a password is set), the
//! handshake of a backend connection, the reconnect jitter, and the
//! [`PoolSettings`] every connection, probe and Sentinel monitor reads.
//! Used by `backend` (connections and probes) and `sentinel` (sentinels and
//! candidate masters); neither reaches into the other for it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rand::Rng;
use tokio::net::{TcpStream, UnixStream};
use tokio_util::codec::Decoder;
use tracing::debug;

use crate::config::{self, Endpoint, Target};
use crate::net::Stream;
use crate::protocol::{encode_command, BackendReplyDecoder, Reply};

/// Why talking to a server failed.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The socket could not be opened (`{address}: {error}`).
    #[error("{address}: {error}")]
    Connect {
        address: String,
        error: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The server sent something that is not RESP.
    #[error("{0}")]
    Protocol(String),
    #[error("connection closed")]
    Closed,
    /// TLS could not be set up or negotiated (`{address}: {reason}`).
    #[error("TLS to {address}: {reason}")]
    Tls { address: String, reason: String },
    #[error("AUTH failed: {0}")]
    Auth(String),
    /// The backend lacks the databases clients may select.
    #[error("SELECT {db} failed ({error}): the backend needs at least listen.databases = {databases} databases")]
    Select {
        db: u32,
        error: String,
        databases: u32,
    },
}

/// What the connection tasks need to know, shared by all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    pub connections: usize,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub max_pending: usize,
    /// Databases clients may select; checked against each backend at connect.
    pub databases: u32,
    pub health_failures: u32,
    pub health_successes: u32,
    pub sentinel_timeout: Duration,
    pub sentinel_recheck: Duration,
    /// Largest reply accepted from a backend (`[limits] max_reply_bytes`).
    pub max_reply_bytes: usize,
    pub probe_interval: Duration,
    /// Connections held for single clients at once, at most.
    pub max_held: usize,
    /// `[pool] spare_idle_s`, when set.
    pub spare_idle: Option<Duration>,
    /// `[pool] max_connection_age_s`, when set.
    pub max_connection_age: Option<Duration>,
    /// `[pool] dns_refresh_s`, when set.
    pub dns_refresh: Option<Duration>,
    /// `[pool] hosts_file`.
    pub hosts_file: Option<PathBuf>,
    /// `[pool] tcp_keepalive_s` (zero: off).
    pub tcp_keepalive: Duration,
}

impl PoolSettings {
    pub fn from_config(config: &config::Config) -> PoolSettings {
        let pool = &config.pool;
        PoolSettings {
            connections: pool.connections,
            max_held: pool.max_held_connections,
            spare_idle: (pool.spare_idle_s > 0).then(|| Duration::from_secs(pool.spare_idle_s)),
            connect_timeout: pool.connect_timeout(),
            request_timeout: pool.request_timeout(),
            backoff_min: Duration::from_millis(pool.backoff_min_ms),
            backoff_max: Duration::from_millis(pool.backoff_max_ms),
            max_pending: pool.max_pending,
            databases: config.listen.databases,
            health_failures: pool.health_failures,
            health_successes: pool.health_successes,
            sentinel_timeout: Duration::from_millis(pool.sentinel_timeout_ms),
            sentinel_recheck: Duration::from_millis(pool.sentinel_recheck_ms),
            max_reply_bytes: config.limits.max_reply_bytes,
            probe_interval: Duration::from_millis(pool.probe_interval_ms),
            max_connection_age: (pool.max_connection_age_s > 0)
                .then(|| Duration::from_secs(pool.max_connection_age_s)),
            dns_refresh: (pool.dns_refresh_s > 0).then(|| Duration::from_secs(pool.dns_refresh_s)),
            hosts_file: pool.hosts_file.clone(),
            tcp_keepalive: Duration::from_secs(pool.tcp_keepalive_s),
        }
    }
}

/// Opens a socket to an endpoint.
pub async fn open(endpoint: &Endpoint) -> Result<Stream, DialError> {
    Ok(open_via(endpoint, None, None).await?.0)
}

/// Opens a socket to an endpoint, with TLS when `tls` says so (a TCP
/// endpoint only): the handshake is done here, and the session is carried
/// by the socket itself (see [`crate::tls_stream`]).
pub async fn open_to(
    endpoint: &Endpoint,
    tls: Option<&crate::config::TlsClient>,
) -> Result<Stream, DialError> {
    Ok(open_via(endpoint, tls, None).await?.0)
}

/// [`open_to`], resolving a host name through `hosts_file` first (see
/// [`crate::resolve`]); also returns the address reached (a TCP endpoint).
pub async fn open_via(
    endpoint: &Endpoint,
    tls: Option<&crate::config::TlsClient>,
    hosts_file: Option<&Path>,
) -> Result<(Stream, Option<SocketAddr>), DialError> {
    open_at(endpoint, None, tls, hosts_file).await
}

/// [`open_via`], to `peer` when given rather than where the endpoint's
/// name leads now: the address a connection to `endpoint` reached once,
/// to reach that server again (TLS still checks the endpoint's name).
pub async fn open_at(
    endpoint: &Endpoint,
    peer: Option<SocketAddr>,
    tls: Option<&crate::config::TlsClient>,
    hosts_file: Option<&Path>,
) -> Result<(Stream, Option<SocketAddr>), DialError> {
    let address = match endpoint {
        Endpoint::Tcp(address) => address,
        Endpoint::Unix(path) => {
            let unix = UnixStream::connect(path)
                .await
                .map_err(|error| DialError::Connect {
                    address: path.display().to_string(),
                    error,
                })?;
            return Ok((Stream::Unix(unix), None));
        }
    };
    let (tcp, peer) = match peer {
        Some(peer) => (connect_to(address, peer).await?, peer),
        None => connect_tcp(address, hosts_file).await?,
    };
    let Some(settings) = tls else {
        return Ok((Stream::Tcp(tcp), Some(peer)));
    };
    let tls_error = |reason: String| DialError::Tls {
        address: address.clone(),
        reason,
    };
    let connector = crate::tls::connector(settings).map_err(|e| tls_error(e.to_string()))?;
    // The name the endpoint gives, whatever address it led to.
    let name = crate::tls::server_name(settings, address).map_err(|e| tls_error(e.to_string()))?;
    let stream = connector
        .connect(name, tcp)
        .await
        .map_err(|e| tls_error(e.to_string()))?;
    let (tcp, session) = stream.into_inner();
    let stream = crate::tls_stream::TlsStream::new(tcp, session);
    Ok((Stream::Tls(Box::new(stream)), Some(peer)))
}

/// Connects to `peer`, an address `address` led to.
async fn connect_to(address: &str, peer: SocketAddr) -> Result<TcpStream, DialError> {
    let tcp = TcpStream::connect(peer)
        .await
        .map_err(|error| DialError::Connect {
            address: format!("{address} ({peer})"),
            error,
        })?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// Connects to the first of the addresses `address` resolves to that
/// accepts, tried in their order; the socket and the address it reached.
async fn connect_tcp(
    address: &str,
    hosts_file: Option<&Path>,
) -> Result<(TcpStream, SocketAddr), DialError> {
    let failed = |error| DialError::Connect {
        address: address.to_string(),
        error,
    };
    let candidates = crate::resolve::addresses(address, hosts_file)
        .await
        .map_err(failed)?;
    let mut last = None;
    for candidate in candidates {
        match TcpStream::connect(candidate).await {
            Ok(tcp) => {
                tcp.set_nodelay(true)?;
                return Ok((tcp, candidate));
            }
            Err(error) => {
                debug!(%candidate, %error, "address refused; trying the next");
                last = Some(error);
            }
        }
    }
    Err(failed(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the name resolves to no address",
        )
    })))
}

/// Sends commands in one write and reads one reply per command.
pub async fn call(
    stream: &Stream,
    rbuf: &mut BytesMut,
    commands: &[Vec<Bytes>],
) -> Result<Vec<Reply>, DialError> {
    let mut wbuf = BytesMut::new();
    for args in commands {
        encode_command(args, &mut wbuf);
    }
    stream.write_all(&mut wbuf).await?;
    let mut replies = Vec::with_capacity(commands.len());
    while replies.len() < commands.len() {
        match BackendReplyDecoder::default()
            .decode(rbuf)
            .map_err(|e| DialError::Protocol(e.to_string()))?
        {
            Some(frame) => replies.push(Reply::from_resp2(frame)),
            None => {
                if stream.read_some(rbuf).await? == 0 {
                    return Err(DialError::Closed);
                }
            }
        }
    }
    Ok(replies)
}

/// Like [`call`], preceded by `AUTH [user] password` in the same write when a
/// password is set. A refused AUTH is an error; otherwise the replies are
/// those of `commands`, one each.
pub async fn call_with_auth(
    stream: &Stream,
    rbuf: &mut BytesMut,
    username: Option<&str>,
    password: Option<&str>,
    commands: Vec<Vec<Bytes>>,
) -> Result<Vec<Reply>, DialError> {
    let Some(password) = password else {
        return call(stream, rbuf, &commands).await;
    };
    let mut auth = vec![Bytes::from_static(b"AUTH")];
    if let Some(user) = username {
        auth.push(Bytes::from(user.to_string()));
    }
    auth.push(Bytes::from(password.to_string()));
    let all: Vec<Vec<Bytes>> = std::iter::once(auth).chain(commands).collect();
    let mut replies = call(stream, rbuf, &all).await?.into_iter();
    if let Some(Reply::Error(e)) = replies.next() {
        return Err(DialError::Auth(String::from_utf8_lossy(&e).into_owned()));
    }
    Ok(replies.collect())
}

/// Connects and prepares a connection: AUTH when configured, then a SELECT of
/// the highest database clients may use, which proves the backend has them
/// all.
pub async fn handshake(
    endpoint: &Endpoint,
    target: &Target,
    settings: &PoolSettings,
) -> Result<Handshaken, DialError> {
    let databases = settings.databases;
    let (stream, peer) = open_via(
        endpoint,
        target.tls.as_ref(),
        settings.hosts_file.as_deref(),
    )
    .await?;
    stream.keep_alive(settings.tcp_keepalive)?;
    let db = databases.saturating_sub(1);
    let select = vec![Bytes::from_static(b"SELECT"), Bytes::from(db.to_string())];
    let mut rbuf = BytesMut::new();
    let password = target.password_for_connect().await?;
    let replies = call_with_auth(
        &stream,
        &mut rbuf,
        target.username.as_deref(),
        password.as_deref(),
        vec![select],
    )
    .await?;
    if let Some(Reply::Error(e)) = replies.first() {
        return Err(DialError::Select {
            db,
            error: String::from_utf8_lossy(e).into_owned(),
            databases,
        });
    }
    debug!(db, "handshake done");
    Ok(Handshaken { stream, db, peer })
}

/// A connection [`handshake`] prepared.
pub struct Handshaken {
    pub stream: Stream,
    /// The database it has selected.
    pub db: u32,
    /// The address it reached (a TCP endpoint's).
    pub peer: Option<SocketAddr>,
}

/// One command on a connection of its own, after AUTH but without the
/// handshake's SELECT: a server busy with a script answers only a few
/// commands (SCRIPT KILL, FUNCTION KILL), and SELECT is not one of them.
/// To `peer` when given (see [`open_at`]), else where the endpoint leads
/// now, its name resolved through `hosts_file` first.
pub async fn ask_once(
    at: (&Endpoint, Option<SocketAddr>),
    target: &Target,
    hosts_file: Option<&Path>,
    args: Vec<Bytes>,
) -> Result<Reply, DialError> {
    let (_, _, mut replies) = open_and_call(at, target, hosts_file, vec![args]).await?;
    replies.pop().ok_or(DialError::Closed)
}

/// Connects to `endpoint` (at `peer`, the address it led to once, when
/// given) and sends `commands` after AUTH, as [`ask_once`]: the
/// connection, its read buffer and the commands' replies, one each.
pub async fn open_and_call(
    (endpoint, peer): (&Endpoint, Option<SocketAddr>),
    target: &Target,
    hosts_file: Option<&Path>,
    commands: Vec<Vec<Bytes>>,
) -> Result<(Stream, BytesMut, Vec<Reply>), DialError> {
    let (stream, _) = open_at(endpoint, peer, target.tls.as_ref(), hosts_file).await?;
    let mut rbuf = BytesMut::new();
    let password = target.password_for_connect().await?;
    let replies = call_with_auth(
        &stream,
        &mut rbuf,
        target.username.as_deref(),
        password.as_deref(),
        commands,
    )
    .await?;
    Ok((stream, rbuf, replies))
}

/// The server's client id of a connection made by [`handshake`] (`CLIENT
/// ID`); 0 when the server refuses to tell (an ACL user without it), which
/// only leaves CLIENT UNBLOCK unable to name the connection.
pub async fn client_id(stream: &Stream) -> Result<u64, DialError> {
    let mut rbuf = BytesMut::new();
    let asked = [vec![
        Bytes::from_static(b"CLIENT"),
        Bytes::from_static(b"ID"),
    ]];
    let replies = call(stream, &mut rbuf, &asked).await?;
    if !rbuf.is_empty() {
        return Err(DialError::Protocol("more than CLIENT ID's reply".into()));
    }
    Ok(match replies.first() {
        Some(Reply::Int(id)) => u64::try_from(*id).unwrap_or(0),
        _ => 0,
    })
}

/// What a connection checks before use after its server refused a
/// command (`-READONLY`, `-LOADING`): the server's role (`ROLE`), or
/// "loading" for a master still loading its data (it answers `PING` with
/// `-LOADING`, where `ROLE` answers at once).
pub async fn serving_role(stream: &Stream) -> Result<String, DialError> {
    let mut rbuf = BytesMut::new();
    let commands = [
        vec![Bytes::from_static(b"ROLE")],
        vec![Bytes::from_static(b"PING")],
    ];
    let replies = call(stream, &mut rbuf, &commands).await?;
    let role = role_in(replies.first()).map_err(DialError::Protocol)?;
    Ok(match replies.get(1) {
        Some(reply) if loading(reply) => "loading".into(),
        _ => role,
    })
}

/// A server's answer that it is still loading its data (`-LOADING`).
pub fn loading(reply: &Reply) -> bool {
    matches!(reply, Reply::Error(e) if e.starts_with(b"LOADING"))
}

/// The role a `ROLE` reply names ("master", "slave", "sentinel"), or why
/// there is none: the server's error, or a reply of another shape.
pub fn role_in(reply: Option<&Reply>) -> Result<String, String> {
    match reply {
        Some(Reply::Array(items)) => match items.first() {
            Some(Reply::Bulk(role)) => Ok(String::from_utf8_lossy(role).into_owned()),
            _ => Err("unexpected ROLE reply".into()),
        },
        Some(Reply::Error(e)) => Err(String::from_utf8_lossy(e).into_owned()),
        _ => Err("unexpected ROLE reply".into()),
    }
}

/// How many replicas a master's `ROLE` reply lists that can acknowledge a
/// write now: online (Redis leaves out the ones still syncing) and with an
/// offset acknowledged (one that has just taken a full resync is listed
/// online before its first `REPLCONF ACK`, at offset 0, and counts for no
/// `WAIT` until it has loaded what it was sent); 0 for anything else.
pub fn replicas_in(reply: &Reply) -> usize {
    let acked = |replica: &Reply| match replica {
        Reply::Array(fields) => match fields.get(2) {
            Some(Reply::Bulk(offset)) => std::str::from_utf8(offset)
                .ok()
                .and_then(|o| o.parse::<u64>().ok())
                .is_some_and(|o| o > 0),
            Some(Reply::Int(offset)) => *offset > 0,
            _ => false,
        },
        _ => false,
    };
    match reply {
        Reply::Array(items) if matches!(items.first(), Some(Reply::Bulk(r)) if &r[..] == b"master") => {
            match items.get(2) {
                Some(Reply::Array(replicas)) => replicas.iter().filter(|r| acked(r)).count(),
                _ => 0,
            }
        }
        _ => 0,
    }
}

/// Switches a connection made by [`handshake`] to RESP3 (`HELLO 3`), for
/// the replies of RESP3 clients: `true` once it speaks RESP3, `false` when
/// the server refused (one before Redis 6 speaks RESP2 only, and its
/// replies are then converted for those clients).
pub async fn hello3(stream: &Stream) -> Result<bool, DialError> {
    let mut wbuf = BytesMut::new();
    encode_command(
        &[Bytes::from_static(b"HELLO"), Bytes::from_static(b"3")],
        &mut wbuf,
    );
    stream.write_all(&mut wbuf).await?;
    let mut rbuf = BytesMut::new();
    loop {
        let framed =
            crate::protocol::reply_extent(&rbuf, crate::protocol::backend_reply::MAX_CONTROL_REPLY)
                .map_err(|e| DialError::Protocol(e.to_string()))?;
        if let Some(len) = framed {
            if len != rbuf.len() {
                return Err(DialError::Protocol("more than HELLO's reply".into()));
            }
            return Ok(rbuf.first() == Some(&b'%'));
        }
        if stream.read_some(&mut rbuf).await? == 0 {
            return Err(DialError::Closed);
        }
    }
}

/// Asks a server its version (INFO server) on a connection of its own:
/// `Ok(None)` when it answered without one, an error when it did not answer.
pub async fn version(endpoint: &Endpoint, target: &Target) -> Result<Option<Version>, DialError> {
    let stream = open_to(endpoint, target.tls.as_ref()).await?;
    let info = vec![Bytes::from_static(b"INFO"), Bytes::from_static(b"server")];
    let mut rbuf = BytesMut::new();
    let password = target.password_for_connect().await?;
    let replies = call_with_auth(
        &stream,
        &mut rbuf,
        target.username.as_deref(),
        password.as_deref(),
        vec![info],
    )
    .await?;
    Ok(match replies.first() {
        Some(Reply::Bulk(text)) => Version::from_info(text),
        _ => None,
    })
}

/// A Redis server's version (`redis_version` in INFO).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u16, pub u16, pub u16);

impl Version {
    /// The `redis_version:` line of INFO's text.
    pub fn from_info(text: &[u8]) -> Option<Version> {
        let text = std::str::from_utf8(text).ok()?;
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))?;
        let mut parts = line.trim().split('.').map(|p| p.parse::<u16>().ok());
        Some(Version(parts.next()??, parts.next()??, parts.next()??))
    }

    /// Packed for an atomic (0: unknown).
    pub fn packed(self) -> u64 {
        (self.0 as u64) << 32 | (self.1 as u64) << 16 | self.2 as u64
    }

    pub fn unpacked(packed: u64) -> Option<Version> {
        (packed != 0).then_some(Version(
            (packed >> 32) as u16,
            (packed >> 16) as u16,
            packed as u16,
        ))
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// A delay between half and all of `base`, so that many proxies do not
/// reconnect in step.
pub fn jitter(base: Duration) -> Duration {
    let half = base / 2;
    half + half.mul_f64(rand::rng().random::<f64>())
}

/// The pause of a reconnect loop: from `min`, doubling after each failure
/// up to `max`, back to `min` after a success; jittered (between half and
/// all of it, so a restarted server is not met by every connection at
/// once) unless made `exact`. Every reconnect loop uses one.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    jittered: bool,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            next: min,
            jittered: true,
        }
    }

    /// The same pause every time.
    pub fn fixed(every: Duration) -> Backoff {
        Backoff::new(every, every).exact()
    }

    /// Without jitter.
    pub fn exact(self) -> Backoff {
        Backoff {
            jittered: false,
            ..self
        }
    }

    /// The pause before the next attempt (what `pause` is based on).
    pub fn current(&self) -> Duration {
        self.next
    }

    /// The pause to take now; the next one doubles.
    pub fn pause(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        if self.jittered {
            jitter(base)
        } else {
            base
        }
    }

    /// After a success: the next pause is the shortest.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_are_counted_from_a_masters_role_only() {
        let bulk = |s: &'static str| Reply::Bulk(Bytes::from_static(s.as_bytes()));
        let replica = || Reply::Array(vec![bulk("127.0.0.1"), bulk("7001"), bulk("42")]);
        let master = |replicas: Vec<Reply>| {
            Reply::Array(vec![bulk("master"), Reply::Int(42), Reply::Array(replicas)])
        };
        assert_eq!(replicas_in(&master(vec![])), 0);
        assert_eq!(replicas_in(&master(vec![replica(), replica()])), 2);
        // Online, but no acknowledgement yet: loading a full resync.
        let loading = Reply::Array(vec![bulk("127.0.0.1"), bulk("7002"), bulk("0")]);
        assert_eq!(replicas_in(&master(vec![replica(), loading])), 1);
        let slave = Reply::Array(vec![bulk("slave"), bulk("127.0.0.1"), Reply::Int(7000)]);
        assert_eq!(replicas_in(&slave), 0);
        assert_eq!(replicas_in(&Reply::Error(Bytes::from_static(b"ERR"))), 0);
    }

    #[test]
    fn versions_are_read_from_info_and_ordered() {
        let info = b"# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:0\r\n";
        let v = Version::from_info(info).unwrap();
        assert_eq!(v, Version(7, 0, 15));
        assert_eq!(v.to_string(), "7.0.15");
        assert_eq!(Version::unpacked(v.packed()), Some(v));
        assert!(Version(6, 2, 14) < Version(7, 0, 0));
        assert_eq!(Version::from_info(b"nothing"), None);
        assert_eq!(Version::unpacked(0), None);
    }

    #[test]
    fn backoff_doubles_to_its_maximum_and_resets() {
        let ms = Duration::from_millis;
        let mut exact = Backoff::new(ms(50), ms(300)).exact();
        let pauses: Vec<Duration> = (0..5).map(|_| exact.pause()).collect();
        assert_eq!(pauses, [ms(50), ms(100), ms(200), ms(300), ms(300)]);
        exact.reset();
        assert_eq!(exact.pause(), ms(50));
        let mut jittered = Backoff::new(ms(100), ms(100));
        for _ in 0..100 {
            let d = jittered.pause();
            assert!(d >= ms(50) && d <= ms(100), "{d:?}");
        }
        let mut fixed = Backoff::fixed(ms(500));
        assert_eq!((fixed.pause(), fixed.pause()), (ms(500), ms(500)));
    }

    #[test]
    fn jitter_stays_within_bounds() {
        for _ in 0..1000 {
            let d = jitter(Duration::from_millis(100));
            assert!(d >= Duration::from_millis(50) && d <= Duration::from_millis(100));
        }
    }
}
