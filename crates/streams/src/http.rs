//! `/metrics` (Prometheus text format), `/healthz` (the processing loop is turning) and
//! `/readyz` (partitions assigned and state restored) on one address.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::{Health, StreamsMetrics};

/// What the endpoints report on. `render` produces the metrics text: the runtime's own metrics
/// plus whatever the processor registered.
#[derive(Clone)]
pub struct Endpoints {
    pub health: Arc<Health>,
    pub render: Arc<dyn Fn() -> String + Send + Sync>,
}

impl Endpoints {
    pub fn for_runtime(metrics: Arc<StreamsMetrics>, health: Arc<Health>) -> Self {
        Self {
            health,
            render: Arc::new(move || metrics.render()),
        }
    }
}

async fn metrics(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        (endpoints.render)(),
    )
}

async fn healthz(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    if endpoints.health.is_alive() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "processing loop stalled\n")
    }
}

async fn readyz(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    if endpoints.health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: waiting for partitions or restoring state\n",
        )
    }
}

/// Binds `address` (failing at once with the address in the error if it is taken) and returns
/// the bound address and the server future, which runs until `shutdown` completes.
pub async fn bind(
    address: SocketAddr,
    endpoints: Endpoints,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, impl Future<Output = std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(address).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {address} for /metrics: {e}"),
        )
    })?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(endpoints);
    Ok((bound, async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    }))
}
