//! The admin HTTP listener: `GET /` (the status page), `/status` (what it
//! shows, as JSON), `/metrics` (Prometheus), `/healthz` (the process
//! serves), `/readyz` (listening, not draining, every backend up),
//! `/topology` (backends, weights, current endpoints, health, as JSON) and
//! `POST /reload` (re-read the config file, like SIGHUP). With `[admin]
//! token` set, every endpoint but `/healthz` and `/readyz` asks for it;
//! without one, `POST /reload` is served on a loopback listener only.

mod status;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::backend::Backend;
use crate::report::BackendReport;
use crate::shared::Shared;

#[derive(Clone)]
struct AdminState {
    shared: Arc<Shared>,
    /// Renders the Prometheus text; `None` when no recorder is installed.
    prometheus: Option<PrometheusHandle>,
    /// Whether the listener is on a loopback address (reachable from this
    /// machine only).
    loopback: bool,
}

/// Serves the admin endpoints on `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    prometheus: Option<PrometheusHandle>,
) {
    let loopback = listener
        .local_addr()
        .is_ok_and(|address| address.ip().is_loopback());
    if let Ok(address) = listener.local_addr() {
        info!(%address, "admin listening");
        let token = shared.topology().config.admin.token.is_some();
        if !loopback && !token {
            warn!(%address, "admin listener off loopback without [admin] token: POST /reload is refused, and /status, /metrics and /topology are open to the network");
        }
    }
    let state = AdminState {
        shared,
        prometheus,
        loopback,
    };
    let app = Router::new()
        .route("/", get(page))
        .route("/status", get(status_json))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/topology", get(topology))
        .route("/reload", post(reload))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state);
    if let Err(error) = axum::serve(listener, app).await {
        warn!(%error, "admin listener failed");
    }
}

/// Lets a request through when [`admits`] says so.
async fn guard(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let bearer = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let query = request
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("token=")));
    let token = state.shared.topology().config.admin.token.clone();
    let asked = Asked {
        path: request.uri().path(),
        post: request.method() == Method::POST,
        token: bearer.or(query),
    };
    match admits(&asked, token.as_deref(), state.loopback) {
        Ok(()) => next.run(request).await,
        Err((status, why)) => (status, [("www-authenticate", "Bearer")], why).into_response(),
    }
}

/// What an admin request is, as far as [`admits`] cares.
struct Asked<'a> {
    path: &'a str,
    post: bool,
    /// The token it carries (bearer header or `?token=`).
    token: Option<&'a str>,
}

/// Whether a request is served: `/healthz` and `/readyz` always; the rest
/// with the token when one is set; without one, a POST (`/reload`) only on
/// a loopback listener.
fn admits(
    asked: &Asked<'_>,
    token: Option<&str>,
    loopback: bool,
) -> Result<(), (StatusCode, &'static str)> {
    if asked.path == "/healthz" || asked.path == "/readyz" {
        return Ok(());
    }
    match token {
        Some(token) => {
            let given = asked.token.unwrap_or_default();
            if crate::auth_guard::same_secret(given.as_bytes(), token.as_bytes()) {
                Ok(())
            } else {
                Err((
                    StatusCode::UNAUTHORIZED,
                    "this endpoint needs [admin] token: Authorization: Bearer <token>\n",
                ))
            }
        }
        None if asked.post && !loopback => Err((
            StatusCode::FORBIDDEN,
            "POST /reload off loopback needs [admin] token\n",
        )),
        None => Ok(()),
    }
}

async fn page() -> Response {
    (
        [
            ("content-type", "text/html; charset=utf-8"),
            ("cache-control", "no-store"),
        ],
        status::PAGE,
    )
        .into_response()
}

async fn status_json(State(state): State<AdminState>) -> Json<serde_json::Value> {
    Json(status::status(&state.shared))
}

async fn metrics(State(state): State<AdminState>) -> Response {
    match &state.prometheus {
        Some(handle) => {
            let mut text = handle.render() + &state.shared.metrics.render();
            state.shared.stats.render(&mut text);
            state.shared.render_workers(&mut text);
            let topology = state.shared.topology();
            crate::metrics::histogram_header(crate::metrics::BACKEND_DURATION, &mut text);
            for backend in &topology.backends {
                backend.metrics().render(&mut text);
            }
            let in_force = in_force(&topology);
            crate::metrics::render_backends(in_force.iter().map(Backend::row), &mut text);
            ([("content-type", "text/plain; version=0.0.4")], text).into_response()
        }
        None => (StatusCode::NOT_FOUND, "no metrics recorder\n").into_response(),
    }
}

/// The backends in force, whose state gauges and counters a scrape shows (see
/// [`crate::metrics::render_backends`]): the topology's, each cluster's
/// nodes, and, while a migration is on, the servers of the layouts keys are
/// moved from.
fn in_force(topology: &crate::shared::Topology) -> Vec<Backend> {
    let mut backends = topology.backends.clone();
    for backend in &topology.backends {
        if let Some(cluster) = backend.cluster() {
            backends.extend(cluster.nodes());
        }
    }
    if let Some(migration) = topology.migration.as_ref().filter(|m| m.is_active()) {
        for layout in &migration.layouts {
            backends.extend(layout.servers.iter().cloned());
        }
    }
    backends
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AdminState>) -> Response {
    match state.shared.ready() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()).into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

async fn topology(State(state): State<AdminState>) -> Json<serde_json::Value> {
    let topology = state.shared.topology();
    let backends: Vec<serde_json::Value> = BackendReport::all(&topology)
        .into_iter()
        .map(|r| {
            serde_json::json!({
                "id": r.id,
                "weight": r.weight,
                "endpoint": r.endpoint,
                "resolved": r.resolved,
                "address_changes": r.address_changes,
                "sentinel": r.sentinel.as_ref().map(|s| s.master.clone()),
                "cluster": r.cluster,
                "up": r.up,
                "connections": r.connections,
                "sentinels_known": r.sentinel.as_ref().map_or(0, |s| s.known),
                "min_replicas_ack": r.min_replicas_ack,
            })
        })
        .collect();
    Json(serde_json::json!({
        "generation": state.shared.generation.load(std::sync::atomic::Ordering::Relaxed),
        "draining": state.shared.is_draining(),
        "on_backend_down": format!("{:?}", topology.config.pool.on_backend_down).to_lowercase(),
        "backends": backends,
        "migration": topology.migration.as_ref().map(|m| m.report()),
    }))
}

async fn reload(State(state): State<AdminState>) -> Response {
    match state.shared.reload() {
        Ok(summary) => (StatusCode::OK, format!("reloaded: {summary}\n")).into_response(),
        Err(error) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("reload refused: {error:#}\n"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked<'a>(path: &'a str, post: bool, token: Option<&'a str>) -> Asked<'a> {
        Asked { path, post, token }
    }

    #[test]
    fn the_token_guards_all_but_the_probes() {
        let secret = Some("s3cret");
        for path in ["/healthz", "/readyz"] {
            assert!(admits(&asked(path, false, None), secret, false).is_ok());
        }
        for (path, post) in [
            ("/", false),
            ("/status", false),
            ("/metrics", false),
            ("/reload", true),
        ] {
            let refused = admits(&asked(path, post, None), secret, true).unwrap_err();
            assert_eq!(refused.0, StatusCode::UNAUTHORIZED, "{path}");
            assert!(admits(&asked(path, post, Some("wrong")), secret, true).is_err());
            assert!(admits(&asked(path, post, Some("s3cret")), secret, false).is_ok());
        }
    }

    #[test]
    fn without_a_token_reload_is_for_loopback_only() {
        assert!(admits(&asked("/reload", true, None), None, true).is_ok());
        let refused = admits(&asked("/reload", true, None), None, false).unwrap_err();
        assert_eq!(refused.0, StatusCode::FORBIDDEN);
        assert!(admits(&asked("/status", false, None), None, false).is_ok());
    }
}
