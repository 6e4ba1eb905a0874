//! The HTTP endpoints next to the controller: `/metrics` (Prometheus text), `/healthz` (no pass
//! stuck past its deadline) and `/readyz` (the Lease decided and, when leading, caches synced);
//! see [`crate::health`].

use std::{future::Future, net::SocketAddr, sync::Arc};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use tokio::net::TcpListener;

use crate::{health::Health, metrics::Metrics};

/// What the endpoints report from.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// The metrics to serve.
    pub metrics: Arc<Metrics>,
    /// Readiness and liveness.
    pub health: Arc<Health>,
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn metrics(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    match endpoints.metrics.encode() {
        Ok(text) => (StatusCode::OK, [("content-type", OPENMETRICS)], text),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, [("content-type", "text/plain")], String::new()),
    }
}

async fn readyz(State(endpoints): State<Endpoints>) -> StatusCode {
    if endpoints.health.ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }
}

async fn healthz(State(endpoints): State<Endpoints>) -> (StatusCode, String) {
    match endpoints.health.live() {
        Ok(()) => (StatusCode::OK, "ok".into()),
        Err(age) => (StatusCode::SERVICE_UNAVAILABLE, format!("a reconcile pass is stuck for {age:?}")),
    }
}

/// Binds `address` (failing at once if it is taken) and returns the bound address and the
/// server future, which runs until `shutdown` completes.
pub async fn bind(
    address: SocketAddr,
    endpoints: Endpoints,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, impl Future<Output = std::io::Result<()>>)> {
    let listener = TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(endpoints);
    Ok((bound, async move { axum::serve(listener, router).with_graceful_shutdown(shutdown).await }))
}
