//! `[[backends]]`: one Redis server each (an address, a socket, a URL,
//! Sentinel or a Redis Cluster), its credentials and TLS, resolved into a
//! [`Target`].

use std::path::PathBuf;

use serde::Deserialize;

use super::{invalid, ConfigError};

/// TLS towards a backend: `tls = { ca, server_name, cert, key }`, or a
/// `rediss://` URL (then every field is optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsClient {
    /// The CA that signed the server's certificate; the system's roots
    /// when absent.
    pub ca: Option<PathBuf>,
    /// The name the certificate must carry; the address's host when absent.
    pub server_name: Option<String>,
    /// A client certificate and key, for servers that ask for one.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// `[[backends]]`: one Redis server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSpec {
    /// Stable name; routing hashes this, never the address.
    pub id: String,
    /// `host:port`.
    pub address: Option<String>,
    pub unix_socket: Option<PathBuf>,
    /// `redis://[[user]:password@]host:port` or `unix:///path`.
    pub url: Option<String>,
    /// A Sentinel-managed master instead of a fixed address.
    pub sentinel: Option<Sentinel>,
    /// A Redis Cluster instead of one server: the slot map picks the node.
    pub cluster: Option<ClusterSpec>,
    /// Credentials for the backend (the master, for a Sentinel group).
    pub username: Option<String>,
    pub password: Option<String>,
    /// The password's file (its first line), read again at every connect:
    /// a token a sidecar rotates needs no reload.
    pub password_file: Option<PathBuf>,
    /// The environment variable holding the password, read at every
    /// connect (a secret injected into the process, not the file).
    pub password_env: Option<String>,
    /// ElastiCache or MemoryDB IAM authentication: the password is a
    /// signed token, renewed before it expires (see [`crate::aws_iam`]).
    pub aws_iam: Option<crate::aws_iam::AwsIam>,
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// Follow every write with `WAIT n`; fewer acknowledgements is an error.
    #[serde(default)]
    pub min_replicas_ack: u32,
    /// Connect with TLS (a `rediss://` URL does too).
    #[serde(default)]
    pub tls: Option<TlsClient>,
}

fn default_weight() -> f64 {
    1.0
}

/// `sentinel = { master = "...", addresses = [...] }` on a backend.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sentinel {
    /// The master name the sentinels monitor.
    pub master: String,
    /// Sentinels to ask first (`host:port`); more are learned from them.
    pub addresses: Vec<String>,
    /// Credentials for the sentinels themselves.
    pub username: Option<String>,
    pub password: Option<String>,
    /// TLS towards the sentinels (the backend's own `tls` is the master's).
    #[serde(default)]
    pub tls: Option<TlsClient>,
}

/// `cluster = { seeds = [...], username, password, tls }` on a backend: a
/// Redis Cluster, its slot map learned from any of the seeds (or the nodes
/// learned since).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// Nodes to ask for the slot map first (`host:port`).
    pub seeds: Vec<String>,
    /// Credentials for every node.
    pub username: Option<String>,
    pub password: Option<String>,
    /// TLS towards every node.
    #[serde(default)]
    pub tls: Option<TlsClient>,
}

/// Where a backend listens, resolved from `address`, `unix_socket` or `url`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Tcp(String),
    Unix(PathBuf),
}

/// Where a backend's address comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Fixed(Endpoint),
    Sentinel(Sentinel),
    /// A Redis Cluster's seed nodes.
    Cluster(Vec<String>),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(addr) => f.write_str(addr),
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A backend's resolved endpoint and credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub source: Source,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Where the password is read at each connect, instead of `password`.
    pub password_file: Option<PathBuf>,
    /// The environment variable read at each connect, instead of `password`.
    pub password_env: Option<String>,
    /// An IAM token made at each connect (renewed before it expires),
    /// instead of `password`.
    pub aws_iam: Option<crate::aws_iam::AwsIam>,
    /// TLS towards the server (the master, for a Sentinel group).
    pub tls: Option<TlsClient>,
}

impl Target {
    /// The password to send now: `password_file`'s first line or
    /// `password_env`'s value, read at this call, or the configured one (a
    /// url's when none is set).
    pub fn password_now(&self) -> std::io::Result<Option<String>> {
        if let Some(path) = &self.password_file {
            let text = std::fs::read_to_string(path)?;
            return Ok(Some(text.lines().next().unwrap_or("").to_string()));
        }
        if let Some(var) = &self.password_env {
            return std::env::var(var).map(Some).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::NotFound, format!("${var} is not set"))
            });
        }
        Ok(self.password.clone())
    }

    /// The password a new connection logs in with: [`Target::password_now`],
    /// or the current IAM token.
    pub async fn password_for_connect(&self) -> std::io::Result<Option<String>> {
        match &self.aws_iam {
            Some(iam) => crate::aws_iam::token_now(iam)
                .await
                .map(Some)
                .map_err(std::io::Error::other),
            None => self.password_now(),
        }
    }
}

impl BackendSpec {
    /// Resolves the endpoint and credentials; a url's credentials are used
    /// unless `username`/`password` are set explicitly.
    pub fn target(&self, field: &str) -> Result<Target, ConfigError> {
        self.check_exclusive(field)?;
        let mut target = Target {
            source: Source::Fixed(Endpoint::Tcp(String::new())),
            username: self.username.clone(),
            password: self.password.clone(),
            password_file: self.password_file.clone(),
            password_env: self.password_env.clone(),
            aws_iam: self.aws_iam.clone(),
            tls: self.tls.clone(),
        };
        if let Some(iam) = &self.aws_iam {
            target.username = Some(iam.user.clone());
        }
        if target.password_file.is_some() || target.password_env.is_some() {
            // Readable now, or the config is refused: not at the first connect.
            let which = match target.password_file {
                Some(_) => "password_file",
                None => "password_env",
            };
            target
                .password_now()
                .map_err(|e| invalid(format!("{field}.{which}"), e.to_string()))?;
        }
        self.set_source(field, &mut target)?;
        Ok(target)
    }

    /// One place to reach the server, and at most one source of its
    /// password (with `aws_iam`, its user).
    fn check_exclusive(&self, field: &str) -> Result<(), ConfigError> {
        let set = [
            self.address.is_some(),
            self.unix_socket.is_some(),
            self.url.is_some(),
            self.sentinel.is_some(),
            self.cluster.is_some(),
        ];
        if set.iter().filter(|&&s| s).count() != 1 {
            return Err(invalid(
                field,
                "exactly one of address, unix_socket, url, sentinel or cluster must be set",
            ));
        }
        let sources = [
            self.password.is_some(),
            self.password_file.is_some(),
            self.password_env.is_some(),
            self.aws_iam.is_some(),
        ];
        if sources.iter().filter(|&&set| set).count() > 1 {
            return Err(invalid(
                field,
                "set at most one of password, password_file, password_env, aws_iam",
            ));
        }
        if self.aws_iam.is_some() && !cfg!(feature = "aws-iam") {
            return Err(invalid(
                format!("{field}.aws_iam"),
                crate::aws_iam::IamError::NotBuilt.to_string(),
            ));
        }
        if let (Some(iam), Some(user)) = (&self.aws_iam, &self.username) {
            if *user != iam.user {
                return Err(invalid(
                    format!("{field}.username"),
                    "with aws_iam the user is aws_iam.user: leave username out",
                ));
            }
        }
        Ok(())
    }

    /// Where the server is, checked: a fixed address or socket, a URL (its
    /// user, password and TLS where the entry has none), Sentinel, or a
    /// Redis Cluster's seeds (the same).
    fn set_source(&self, field: &str, target: &mut Target) -> Result<(), ConfigError> {
        if let Some(address) = &self.address {
            check_host_port(address).map_err(|m| invalid(format!("{field}.address"), m))?;
            target.source = Source::Fixed(Endpoint::Tcp(address.clone()));
        } else if let Some(path) = &self.unix_socket {
            target.source = Source::Fixed(Endpoint::Unix(path.clone()));
        } else if let Some(url) = &self.url {
            let parsed = parse_url(url).map_err(|m| invalid(format!("{field}.url"), m))?;
            target.source = parsed.source;
            target.username = target.username.take().or(parsed.username);
            target.password = target.password.take().or(parsed.password);
            target.tls = target.tls.take().or(parsed.tls);
        } else if let Some(sentinel) = &self.sentinel {
            if sentinel.master.is_empty() {
                return Err(invalid(
                    format!("{field}.sentinel.master"),
                    "must not be empty",
                ));
            }
            check_addresses(
                &format!("{field}.sentinel.addresses"),
                &sentinel.addresses,
                "needs at least one sentinel",
            )?;
            target.source = Source::Sentinel(sentinel.clone());
        } else if let Some(cluster) = &self.cluster {
            check_addresses(
                &format!("{field}.cluster.seeds"),
                &cluster.seeds,
                "needs at least one node",
            )?;
            target.source = Source::Cluster(cluster.seeds.clone());
            target.username = target.username.take().or_else(|| cluster.username.clone());
            target.password = target.password.take().or_else(|| cluster.password.clone());
            target.tls = target.tls.take().or_else(|| cluster.tls.clone());
        }
        Ok(())
    }
}

/// A list of `host:port` that must not be empty (`empty` says what it
/// needs); an entry's error names its index.
fn check_addresses(field: &str, addresses: &[String], empty: &str) -> Result<(), ConfigError> {
    if addresses.is_empty() {
        return Err(invalid(field, empty));
    }
    for (i, address) in addresses.iter().enumerate() {
        check_host_port(address).map_err(|m| invalid(format!("{field}[{i}]"), m))?;
    }
    Ok(())
}

pub(super) fn check_host_port(address: &str) -> Result<(), String> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("'{address}' is not host:port"))?;
    if host.is_empty() {
        return Err(format!("'{address}' has no host"));
    }
    port.parse::<u16>()
        .map_err(|_| format!("'{address}' has no valid port"))?;
    Ok(())
}

/// Parses `redis://[[user]:password@]host[:port][/0]` and `unix:///path`.
pub fn parse_url(url: &str) -> Result<Target, String> {
    if let Some(path) = url.strip_prefix("unix://") {
        let path = path.split('?').next().unwrap_or_default();
        if path.is_empty() {
            return Err(format!("'{url}' has no socket path"));
        }
        return Ok(Target {
            source: Source::Fixed(Endpoint::Unix(PathBuf::from(path))),
            username: None,
            password: None,
            password_file: None,
            password_env: None,
            aws_iam: None,
            tls: None,
        });
    }
    let (rest, tls) = match (url.strip_prefix("redis://"), url.strip_prefix("rediss://")) {
        (Some(rest), _) => (rest, None),
        (_, Some(rest)) => (rest, Some(TlsClient::default())),
        _ => {
            return Err(format!(
                "'{url}' must start with redis://, rediss:// or unix://"
            ))
        }
    };
    let (authority, path) = match rest.split_once('/') {
        Some((a, p)) => (a, p),
        None => (rest, ""),
    };
    if !path.is_empty() && path != "0" {
        return Err(format!(
            "'{url}': a database in the url is not supported; clients choose it with SELECT"
        ));
    }
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(info) => match info.split_once(':') {
            Some((user, pass)) => (
                (!user.is_empty()).then(|| user.to_string()),
                Some(pass.to_string()),
            ),
            None => (None, Some(info.to_string())),
        },
    };
    let hostport = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:6379")
    };
    check_host_port(&hostport)?;
    Ok(Target {
        source: Source::Fixed(Endpoint::Tcp(hostport)),
        username,
        password,
        password_file: None,
        password_env: None,
        aws_iam: None,
        tls,
    })
}
