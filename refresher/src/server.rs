//! `/metrics`, `/healthz` and `/readyz`.

use crate::metrics::Metrics;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio_util::sync::CancellationToken;

/// Health as the probes see it.
#[derive(Default)]
pub struct Health {
    ready: AtomicBool,
}

impl Health {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

async fn metrics(
    State(s): State<AppState>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(s): State<AppState>) -> (StatusCode, &'static str) {
    if s.health.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the Kubernetes API has not answered yet",
        )
    }
}

/// Serves the given routes on `addr` until `stop` is cancelled. Metrics and health may share an address.
pub async fn serve(
    addr: SocketAddr,
    with_metrics: bool,
    with_health: bool,
    metrics_: Arc<Metrics>,
    health: Arc<Health>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut app = Router::new();
    if with_metrics {
        app = app.route("/metrics", get(metrics));
    }
    if with_health {
        app = app
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz));
    }
    let app = app.with_state(AppState {
        metrics: metrics_,
        health,
    });
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    tracing::info!(%addr, metrics = with_metrics, health = with_health, "serving");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await?;
    Ok(())
}
