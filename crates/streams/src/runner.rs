//! Running an instance the way a deployed processor runs: on a blocking thread, with its HTTP
//! endpoints, until SIGTERM or SIGINT asks it to commit, close and exit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing::{error, info};

use crate::http::{Endpoints, bind};
use crate::kafka::{KafkaStreams, StreamsError};
use crate::processor::Processor;

/// How long the instance may take to commit and close after a signal before we give up.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Runs `streams` until SIGTERM/SIGINT, serving `/metrics`, `/healthz`, `/readyz` on `http`
/// (when given). Returns once the instance committed and closed its tasks; an error if it
/// failed or did not finish within 30 s of the signal.
pub async fn run_until_signal<P: Processor + 'static>(
    streams: KafkaStreams<P>,
    http: Option<SocketAddr>,
) -> Result<(), StreamsError> {
    let shutdown = Arc::new(AtomicBool::new(false));
    let (stopped_tx, stopped_rx) = watch::channel(false);
    let server = match http {
        Some(address) => {
            let endpoints = Endpoints::for_runtime(streams.metrics(), streams.health());
            let mut stopped = stopped_rx.clone();
            let (bound, serve) = bind(address, endpoints, async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await
            .map_err(|e| StreamsError::Runtime(e.to_string()))?;
            info!(%bound, "serving /metrics, /healthz, /readyz");
            Some(tokio::spawn(serve))
        }
        None => None,
    };

    let flag = Arc::clone(&shutdown);
    let mut worker = tokio::task::spawn_blocking(move || streams.run(&flag));
    let mut terminate = signal(SignalKind::terminate())
        .map_err(|e| StreamsError::Runtime(format!("cannot install the SIGTERM handler: {e}")))?;
    let result = tokio::select! {
        joined = &mut worker => Ok(joined),
        _ = terminate.recv() => stop(&shutdown, &mut worker, "SIGTERM").await,
        _ = tokio::signal::ctrl_c() => stop(&shutdown, &mut worker, "SIGINT").await,
    };
    let _ = stopped_tx.send(true);
    if let Some(server) = server {
        let _ = server.await;
    }
    match result {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(join_error)) => Err(StreamsError::Runtime(format!(
            "the processing thread failed: {join_error}"
        ))),
        Err(message) => Err(StreamsError::Runtime(message)),
    }
}

/// Asks the processing thread to stop and waits for it, at most [`SHUTDOWN_GRACE`].
async fn stop<T>(
    shutdown: &AtomicBool,
    worker: &mut tokio::task::JoinHandle<T>,
    signal_name: &str,
) -> Result<Result<T, tokio::task::JoinError>, String> {
    info!(
        signal = signal_name,
        "stopping: finishing the batch, committing, closing tasks"
    );
    shutdown.store(true, Ordering::Relaxed);
    tokio::time::timeout(SHUTDOWN_GRACE, &mut *worker)
        .await
        .map_err(|_| {
            error!("did not stop within {SHUTDOWN_GRACE:?}");
            format!("did not commit and close within {SHUTDOWN_GRACE:?} of {signal_name}")
        })
}
