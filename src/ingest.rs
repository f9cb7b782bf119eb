//! `tickstream ingest`: market data (Binance REST/WebSocket, replay, synthetic) → the raw
//! topic(s), until SIGTERM/SIGINT (flush, exit 0) or the end of a replay file.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tickstream_ingest::{IngestMetrics, KafkaTickSink, Source, Stopped};
use tickstream_streams::{Endpoints, Health, Shutdown, bind_http};
use tracing::{error, info};

use crate::common::{ProcessorArgs, init_logging, kafka_settings_from_env};

/// How long shutdown waits for unacknowledged ticks.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(20);

/// Options of `tickstream ingest`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub processor: ProcessorArgs,
}

pub async fn main(args: Args, shutdown: Shutdown) -> anyhow::Result<()> {
    init_logging();
    let topology = args.processor.topology.load()?;
    let metrics = IngestMetrics::new(&topology.application_id);
    let metrics_addr = args.processor.metrics_addr(&topology);
    let origin = args.processor.topology.path.display().to_string();
    {
        let mut source = Source::from_topology(&topology, &metrics)
            .with_context(|| format!("setting up the source of {origin}"))?;
        let mut sink = KafkaTickSink::new(
            &topology,
            &args.processor.kafka.brokers,
            &kafka_settings_from_env(),
            &metrics,
        )?;
        // No start-up check of the broker: ingest waits for it like for any outage, not
        // ready meanwhile, for at most processing.give_up_after.

        let health = Arc::new(Health::default());
        let scrape = metrics.clone();
        let endpoints = Endpoints {
            health: Arc::clone(&health),
            render: Arc::new(move || scrape.render()),
        };
        let (bound, serve) = bind_http(metrics_addr, endpoints, shutdown.requested_owned()).await?;
        let server = tokio::spawn(serve);
        info!(
            topology = %origin,
            source = source.kind(),
            topics = ?topology.raw_topics(),
            format = ?topology.topics.raw_format,
            compression = topology.topics.compression.raw.as_str(),
            give_up_after = ?topology.processing.give_up_after,
            %bound,
            "ingest starting; serving /metrics, /healthz, /readyz"
        );

        let outcome = tickstream_ingest::run(
            &mut source,
            &mut sink,
            &metrics,
            &health,
            &shutdown,
            FLUSH_TIMEOUT,
        )
        .await;
        if let Err(e) = &outcome {
            // One ERROR line naming the cause (e.g. "Kafka at … unreachable for 600 s"),
            // in the log format the operator chose, before the process exits non-zero.
            error!("ingest stopped: {e}");
        }
        // The endpoints stop with ingest, however it ended (a replay file's end too).
        shutdown.request();
        let _ = server.await;
        match outcome.context("ingest stopped with an error")? {
            Stopped::Shutdown => info!("ingest stopped on a signal"),
            Stopped::SourceExhausted => info!("the replay file is done"),
        }
        Ok(())
    }
}
