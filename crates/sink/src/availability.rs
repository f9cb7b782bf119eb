//! MongoDB's availability as the sink sees it: a batch is written until MongoDB acknowledges
//! it, backing off meanwhile, and every success or failure says whether the sink is ready.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tickstream_streams::Health;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::batch::Batch;
use crate::metrics::SinkMetrics;
use crate::writer::{MongoWriter, SinkError, WriteReport};

pub(crate) type WriteTask = tokio::task::JoinHandle<Result<(Batch, WriteReport), SinkError>>;

/// What a write needs to retry while MongoDB is down.
pub(crate) struct Retry {
    pub(crate) metrics: Arc<SinkMetrics>,
    pub(crate) health: Arc<Health>,
    pub(crate) stop_rx: watch::Receiver<bool>,
    pub(crate) shutdown_grace: Duration,
    pub(crate) backoff: Backoff,
}

/// Writes `batch` until MongoDB acknowledges it, backing off (with jitter) meanwhile and
/// reporting MongoDB down and the sink not ready. Gives up only when stopping and the
/// shutdown grace has passed: the batch is then uncommitted and re-read on restart.
pub(crate) async fn write_acknowledged(
    writer: MongoWriter,
    batch: Batch,
    mut retry: Retry,
) -> Result<(Batch, WriteReport), SinkError> {
    let started = Instant::now();
    let mut stop_deadline: Option<Instant> = None;
    loop {
        match writer.write_batch(&batch.documents).await {
            Ok(report) => {
                mongodb_up(&retry.metrics, &retry.health);
                retry
                    .metrics
                    .batch_duration
                    .observe(started.elapsed().as_secs_f64());
                return Ok((batch, report));
            }
            Err(error) => {
                mongodb_down(&retry.metrics, &retry.health, &error);
                // Backing off is the sink working as intended: /healthz stays ok.
                retry.health.heartbeat();
                if *retry.stop_rx.borrow() {
                    let deadline =
                        *stop_deadline.get_or_insert(Instant::now() + retry.shutdown_grace);
                    if Instant::now() >= deadline {
                        return Err(SinkError::Config(format!(
                            "stopping: MongoDB stayed unavailable for the shutdown grace of \
                             {:?}; the in-flight batch of {} records is not committed and \
                             will be re-read on restart ({error})",
                            retry.shutdown_grace, batch.records
                        )));
                    }
                }
                tokio::time::sleep(retry.backoff.next_delay()).await;
            }
        }
    }
}

pub(crate) fn mongodb_down(metrics: &SinkMetrics, health: &Health, error: &SinkError) {
    if metrics.mongodb_up.get() != 0 || health.is_ready() {
        warn!(%error, "MongoDB unavailable: backing off; nothing is committed meanwhile");
    }
    metrics.mongodb_up.set(0);
    health.set_ready(false);
}

pub(crate) fn mongodb_up(metrics: &SinkMetrics, health: &Health) {
    if metrics.mongodb_up.get() == 0 {
        info!("MongoDB acknowledges writes");
    }
    metrics.mongodb_up.set(1);
    health.set_ready(true);
}

/// Sleeps `delay`; true when a stop was requested meanwhile.
pub(crate) async fn wait_or_stop(delay: Duration, stop_rx: &watch::Receiver<bool>) -> bool {
    let mut stop_rx = stop_rx.clone();
    if *stop_rx.borrow() {
        return true;
    }
    tokio::select! {
        _ = stop_rx.changed() => true,
        _ = tokio::time::sleep(delay) => *stop_rx.borrow(),
    }
}
