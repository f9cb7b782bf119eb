//! Running an instance the way a deployed processor runs: on a blocking thread, with its HTTP
//! endpoints, until the process's [`Shutdown`] is requested; then it commits, closes and returns.
//! The deadline for that is not kept here but in `main`, for every processor alike (see
//! [`crate::shutdown`]).

use std::net::SocketAddr;

use tracing::info;

use crate::http::{Endpoints, bind};
use crate::kafka::{KafkaStreams, StreamsError};
use crate::processor::Processor;
use crate::shutdown::Shutdown;

/// Runs `streams` until `shutdown` is requested (or it fails), serving `/metrics`, `/healthz`,
/// `/readyz` on `http` (when given) meanwhile. Returns once the instance committed and closed
/// its tasks. An instance that stops for a reason of its own (an error, even a panic) requests
/// `shutdown` itself, so the endpoints and the rest of the process stop with it.
pub async fn run_until_shutdown<P: Processor + 'static>(
    streams: KafkaStreams<P>,
    http: Option<SocketAddr>,
    shutdown: Shutdown,
) -> Result<(), StreamsError> {
    let server = match http {
        Some(address) => {
            let endpoints = Endpoints::for_runtime(streams.metrics(), streams.health());
            let (bound, serve) = bind(address, endpoints, shutdown.requested_owned())
                .await
                .map_err(|e| StreamsError::Runtime(e.to_string()))?;
            info!(%bound, "serving /metrics, /healthz, /readyz");
            Some(tokio::spawn(serve))
        }
        None => None,
    };
    let token = shutdown.clone();
    let worker = tokio::task::spawn_blocking(move || streams.run(&token));
    let joined = worker.await;
    // Requested here, not in the thread: a panic there must stop the endpoints too.
    shutdown.request();
    if let Some(server) = server {
        let _ = server.await;
    }
    joined.map_err(|join_error| {
        StreamsError::Runtime(format!("the processing thread failed: {join_error}"))
    })?
}
