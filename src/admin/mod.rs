//! The admin HTTP listener: `GET /` (the status page), `/status` (what it
//! shows, as JSON), `/metrics` (Prometheus), `/healthz` (the process
//! serves), `/readyz` (listening, not draining, every backend up),
//! `/topology` (backends, weights, current endpoints, health, as JSON) and
//! `POST /reload` (re-read the config file, like SIGHUP).

mod status;

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::shared::Shared;

#[derive(Clone)]
struct AdminState {
    shared: Arc<Shared>,
    /// Renders the Prometheus text; `None` when no recorder is installed.
    prometheus: Option<PrometheusHandle>,
}

/// Serves the admin endpoints on `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    prometheus: Option<PrometheusHandle>,
) {
    if let Ok(address) = listener.local_addr() {
        info!(%address, "admin listening");
    }
    let app = Router::new()
        .route("/", get(page))
        .route("/status", get(status_json))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/topology", get(topology))
        .route("/reload", post(reload))
        .with_state(AdminState { shared, prometheus });
    if let Err(error) = axum::serve(listener, app).await {
        warn!(%error, "admin listener failed");
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
            crate::metrics::histogram_header(crate::metrics::BACKEND_DURATION, &mut text);
            for backend in &state.shared.topology().backends {
                backend.metrics().render(&backend.id, &mut text);
            }
            ([("content-type", "text/plain; version=0.0.4")], text).into_response()
        }
        None => (StatusCode::NOT_FOUND, "no metrics recorder\n").into_response(),
    }
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
    let backends: Vec<serde_json::Value> = topology
        .config
        .backends
        .iter()
        .zip(&topology.backends)
        .map(|(spec, backend)| {
            serde_json::json!({
                "id": spec.id,
                "weight": spec.weight,
                "endpoint": backend.endpoint.borrow().as_ref().map(|e| e.to_string()),
                "sentinel": spec.sentinel.as_ref().map(|s| s.master.clone()),
                "cluster": backend.cluster().map(|c| c.report()),
                "up": backend.is_up(),
                "connections": backend.connected(),
                "sentinels_known": backend.sentinels_known(),
                "min_replicas_ack": spec.min_replicas_ack,
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
