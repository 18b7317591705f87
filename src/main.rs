//! The `session-proxy` binary: parse the command line, load the config, start.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use session_proxy::config::Config;
use session_proxy::metrics::LATENCY_BUCKETS;
use session_proxy::router::Router;
use session_proxy::server::{self, Listeners};
use session_proxy::shared::Shared;
use session_proxy::shutdown;

/// EX_USAGE from sysexits.h: the config or the command line is wrong.
const EX_USAGE: u8 = 64;

#[derive(Parser)]
#[command(
    name = "session-proxy",
    version,
    about = "A Redis-protocol proxy for web session stores",
    after_help = "Exit codes: 0 stopped after a drain (SIGTERM/SIGINT) or a command succeeded; \
64 bad config or command line; 1 failed to start (a port in use, say), a second signal \
while draining, or `healthcheck` found the proxy unhealthy."
)]
struct Cli {
    /// The TOML config file to run with.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long)]
    log_json: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config file and exit; a bad field is named.
    CheckConfig { file: PathBuf },
    /// Ask the running proxy's admin listener (from the config) for /healthz;
    /// exit 0 if healthy, 1 if not. For container health checks.
    Healthcheck { file: PathBuf },
    /// Print the backend that owns each key.
    Route {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(required = true)]
        keys: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { file }) => match Config::load(&file) {
            Ok(config) => {
                println!(
                    "{}: ok ({} backends)",
                    file.display(),
                    config.backends.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => usage_error(e),
        },
        Some(Command::Healthcheck { file }) => {
            let config = match Config::load(&file) {
                Ok(config) => config,
                Err(e) => return usage_error(e),
            };
            match healthcheck(&config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(why) => {
                    eprintln!("session-proxy: unhealthy: {why}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Route { config, keys }) => {
            let config = match Config::load(&config) {
                Ok(config) => config,
                Err(e) => return usage_error(e),
            };
            let router = match Router::of(&config) {
                Ok(router) => router,
                Err(e) => return usage_error(e),
            };
            for key in keys {
                let backend = &config.backends[router.owner(key.as_bytes())];
                println!("{key}\t{}", backend.id);
            }
            ExitCode::SUCCESS
        }
        None => {
            let Some(path) = cli.config else {
                eprintln!("session-proxy: --config FILE is required (see --help)");
                return ExitCode::from(EX_USAGE);
            };
            let config = match Config::load(&path) {
                Ok(config) => config,
                Err(e) => return usage_error(e),
            };
            init_logging(cli.log_json);
            match run(config, path) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "session-proxy failed");
                    eprintln!("session-proxy: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn usage_error(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("session-proxy: bad config: {e}");
    ExitCode::from(EX_USAGE)
}

/// GET /healthz on the admin listener the config names (an unspecified
/// host, 0.0.0.0 or [::], is asked on loopback).
fn healthcheck(config: &Config) -> Result<(), String> {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
    use std::time::Duration;
    let address = config
        .admin
        .bind_address()
        .ok_or("the config has no [admin] address")?;
    let address = address.as_str();
    let mut target: SocketAddr = address
        .to_socket_addrs()
        .map_err(|e| format!("{address}: {e}"))?
        .next()
        .ok_or_else(|| format!("{address}: no address"))?;
    if target.ip().is_unspecified() {
        target.set_ip(if target.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let limit = Duration::from_secs(2);
    let mut stream =
        TcpStream::connect_timeout(&target, limit).map_err(|e| format!("{target}: {e}"))?;
    stream
        .set_read_timeout(Some(limit))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    let _ = stream.take(256).read_to_string(&mut answer);
    match answer.split_whitespace().nth(1) {
        Some("200") => Ok(()),
        _ => Err(format!(
            "{target} answered {:?}",
            answer.lines().next().unwrap_or("")
        )),
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal, never in a file or journal.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn run(config: Config, path: PathBuf) -> anyhow::Result<()> {
    // One worker thread per core (one on small machines), each serving its
    // clients from accept to close with connections of its own to every
    // backend: a request never crosses threads (see `workers`).
    let threads = config.runtime.threads();
    // As Redis does: room for max_clients, or fewer clients.
    session_proxy::fd_limit::adjust(&config, threads);
    session_proxy::workers::run(threads, || async move {
        // The recorder goes in before any metric handle is created.
        let prometheus = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)?
            .install_recorder()?;
        session_proxy::metrics::describe();
        // The signals are taken before the ports open: one sent as soon as
        // the proxy answers reloads (SIGHUP) or drains it (SIGTERM,
        // SIGINT), rather than meeting the default action (the process
        // ends) or an inherited SIG_IGN (nohup).
        let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
        let mut signals = shutdown::Signals::take();
        let listeners = Listeners::bind(&config).await?;
        let admin = match config.admin.bind_address() {
            Some(address) => Some(
                tokio::net::TcpListener::bind(&address)
                    .await
                    .map_err(|e| anyhow::anyhow!("admin.address {address}: {e}"))?,
            ),
            None => None,
        };
        let shared = Arc::new(Shared::new(config, listeners.tcp_port())?.with_config_path(path));
        // A reload that moves keys, interrupted by this restart, goes on.
        match shared.resume_reload() {
            Ok(Some(done)) => tracing::info!(%done, "reload state found beside the config"),
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "the reload state beside the config could not be used")
            }
        }
        // Histograms keep raw samples until drained: drain them on a timer,
        // or memory would grow with every request between scrapes.
        let upkeep = prometheus.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                every.tick().await;
                upkeep.run_upkeep();
            }
        });
        if let Some(listener) = admin {
            tokio::spawn(session_proxy::admin::serve(
                listener,
                shared.clone(),
                Some(prometheus),
            ));
        }
        tokio::spawn(reload_on_sighup(shared.clone(), hangup));
        let (trigger, shutdown) = shutdown::channel();
        tokio::spawn(async move {
            signals.next().await;
            trigger.fire();
            // A second signal while draining: stop at once.
            signals.next().await;
            tracing::warn!("second signal: exiting without draining");
            std::process::exit(1);
        });
        server::run(listeners, shared, shutdown).await;
        tracing::info!("stopped");
        Ok(())
    })?
}

/// Re-reads the config file on every SIGHUP (`hangup`: its stream, taken
/// at start).
async fn reload_on_sighup(
    shared: Arc<Shared>,
    hangup: std::io::Result<tokio::signal::unix::Signal>,
) {
    let Ok(mut hangup) = hangup else {
        tracing::warn!("no SIGHUP handler; reload through POST /reload");
        return;
    };
    while hangup.recv().await.is_some() {
        // The outcome is logged and counted by `reload` itself.
        let _ = shared.reload();
    }
}
