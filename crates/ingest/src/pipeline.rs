//! The ingest loop: source → Kafka until the source ends or shutdown is asked for, then a
//! bounded flush. One place, so the failure paths are as visible as the happy path.

use std::future::Future;
use std::time::Duration;

use tickstream_streams::Health;
use tracing::{info, warn};

use crate::kafka::{KafkaTickSink, SinkError};
use crate::metrics::{IngestMetrics, now_ms};
use crate::source::{Source, SourceError};

/// Why ingest stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("the {kind} source failed: {source}")]
    Source {
        kind: &'static str,
        #[source]
        source: SourceError,
    },
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The shutdown future completed (SIGTERM/SIGINT).
    Shutdown,
    /// The source has no more ticks (the end of a replay file).
    SourceExhausted,
}

/// While waiting on a slow source (an open circuit, a 418 ban), the loop still reports alive.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// Moves ticks from `source` to `sink` until `shutdown` completes or the source ends, then
/// flushes for at most `flush_timeout`. Marks `health` ready (the sink must be connected
/// already: [`KafkaTickSink::check_connected`]) and alive on every turn.
pub async fn run(
    source: &mut Source,
    sink: &mut KafkaTickSink,
    metrics: &IngestMetrics,
    health: &Health,
    shutdown: impl Future<Output = ()>,
    flush_timeout: Duration,
) -> Result<Stopped, IngestError> {
    let kind = source.kind();
    tokio::pin!(shutdown);
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    health.set_ready(true);
    let stopped = 'ingest: loop {
        // The same fetch survives heartbeats: only shutdown cancels it.
        let fetch = source.next_batch();
        tokio::pin!(fetch);
        let batch = loop {
            health.heartbeat();
            tokio::select! {
                biased;
                () = &mut shutdown => break 'ingest Stopped::Shutdown,
                _ = heartbeat.tick() => {}
                batch = &mut fetch => break batch,
            }
        };
        match batch {
            Ok(Some(ticks)) => {
                metrics.record_fetched(&ticks, now_ms());
                if let Err(e) = sink.send_batch(&ticks).await {
                    health.set_ready(false);
                    return Err(e.into());
                }
            }
            Ok(None) => break Stopped::SourceExhausted,
            Err(source) => {
                health.set_ready(false);
                return Err(IngestError::Source { kind, source });
            }
        }
    };
    info!(?stopped, "ingest stopping: flushing the producer");
    health.set_ready(false);
    let flushed = sink.flush(flush_timeout).await;
    if let Err(e) = &flushed {
        warn!(error = %e, "flush incomplete");
    }
    flushed?;
    info!(
        delivered = sink.delivered(),
        "ingest stopped; every tick acknowledged"
    );
    Ok(stopped)
}
