//! The ingest loop: source → transport (Kafka, or the in-process transport of `tickstream run`)
//! until the source ends or shutdown is asked for, then a bounded flush. One place, for both
//! transports, so the failure paths are as visible as the happy path.

use std::time::Duration;

use tickstream_streams::{Health, Shutdown};
use tracing::{info, warn};

use crate::kafka::SinkError;
use crate::metrics::{IngestMetrics, now_ms};
use crate::source::{Source, SourceError};
use crate::transport::{TickTransport, TransportWatch};

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
    /// Shutdown was requested (SIGTERM/SIGINT, or another stage of `tickstream run`).
    Shutdown,
    /// The source has no more ticks (the end of a replay file).
    SourceExhausted,
}

/// How often the loop reports alive and checks the broker (readiness, giving up).
const CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// Moves ticks from `source` to `sink` until `shutdown` completes or the source ends, then
/// flushes for at most `flush_timeout` (the shutdown order: stop the source, drain; ingest has
/// nothing to commit). Keeps `health` alive on every turn and ready while the transport takes
/// the ticks and the source delivers (`source_up`); a broker unreachable for the topology's
/// `processing.give_up_after` ends the run with [`SinkError::GaveUp`].
pub async fn run<T: TickTransport>(
    source: &mut Source,
    sink: &mut T,
    metrics: &IngestMetrics,
    health: &Health,
    shutdown: &Shutdown,
    flush_timeout: Duration,
) -> Result<Stopped, IngestError> {
    let kind = source.kind();
    let shutdown = shutdown.requested();
    tokio::pin!(shutdown);
    let mut check = tokio::time::interval(CHECK_INTERVAL);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    health.set_ready(false);
    let mut watch = sink.watch();
    let turn = |watch: &mut T::Watch| -> Result<(), IngestError> {
        health.heartbeat();
        match watch.check() {
            Ok(broker_ready) => {
                // Ready = the broker takes ticks and the source delivers them.
                health.set_ready(broker_ready && metrics.source_up.get() == 1);
                Ok(())
            }
            Err(e) => {
                health.set_ready(false);
                Err(e.into())
            }
        }
    };
    let stopped = 'ingest: loop {
        // The same fetch survives checks: only shutdown cancels it.
        let fetch = source.next_batch();
        tokio::pin!(fetch);
        let batch = loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break 'ingest Stopped::Shutdown,
                _ = check.tick() => turn(&mut watch)?,
                batch = &mut fetch => break batch,
            }
        };
        match batch {
            Ok(Some(ticks)) => {
                metrics.record_fetched(&ticks, now_ms());
                // Sending only waits when librdkafka's buffer is full (a long outage at a
                // high rate): the checks go on meanwhile, so giving up still happens.
                let send = sink.send_batch(&ticks);
                tokio::pin!(send);
                loop {
                    tokio::select! {
                        biased;
                        sent = &mut send => match sent {
                            Ok(()) => break,
                            Err(e) => {
                                health.set_ready(false);
                                return Err(e.into());
                            }
                        },
                        () = &mut shutdown => break 'ingest Stopped::Shutdown,
                        _ = check.tick() => turn(&mut watch)?,
                    }
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
