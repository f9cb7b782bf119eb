//! `tickstream sink`: raw and derived topics → MongoDB, idempotently.

use std::sync::Arc;

use anyhow::Context;
use tickstream_sink::{KafkaSink, MongoWriter, SinkConfig, SinkMetrics};
use tickstream_streams::{Endpoints, Health, Shutdown, bind_http};
use tracing::{error, info};

use crate::common::{MongoArgs, ProcessorArgs, init_logging, kafka_settings_from_env};

/// Options of `tickstream sink`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub processor: ProcessorArgs,
    #[command(flatten)]
    pub mongodb: MongoArgs,
    /// Documents per bulk write, at most (default: the topology's mongodb.batch_size).
    #[arg(long, env = "TICKSTREAM_SINK_BATCH_SIZE")]
    pub batch_size: Option<usize>,
    /// While a write is in flight, the next batch waits at most this long, e.g. "100ms" (it is
    /// written as soon as MongoDB is idle; default: the topology's mongodb.batch_interval).
    #[arg(long, env = "TICKSTREAM_SINK_BATCH_INTERVAL", value_parser = parse_duration)]
    pub batch_interval: Option<std::time::Duration>,
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    tickstream_model::duration::parse_duration(text).map_err(|e| e.to_string())
}

pub async fn main(args: Args, shutdown: Shutdown) -> anyhow::Result<()> {
    init_logging();
    let topology = args.processor.topology.load()?;
    let mut config = SinkConfig::from_topology(&topology, &args.processor.kafka.brokers);
    config.kafka_settings = kafka_settings_from_env();
    if let Some(size) = args.batch_size {
        anyhow::ensure!(size > 0, "--batch-size must be at least 1");
        config.batch_size = size;
    }
    if let Some(interval) = args.batch_interval {
        config.batch_interval = interval;
    }
    let metrics_addr = args.processor.metrics_addr(&topology);
    let origin = args.processor.topology.path.display().to_string();
    {
        let writer = MongoWriter::connect(args.mongodb.mongodb_uri.expose(), &topology).await?;
        let metrics = Arc::new(SinkMetrics::new(&topology.application_id));
        let health = Arc::new(Health::default());
        let scrape = Arc::clone(&metrics);
        let endpoints = Endpoints {
            health: Arc::clone(&health),
            render: Arc::new(move || scrape.registry().render()),
        };
        let (bound, serve) = bind_http(metrics_addr, endpoints, shutdown.requested_owned()).await?;
        let server = tokio::spawn(serve);
        info!(
            topology = %origin,
            topics = ?config.topics,
            mongodb = %args.mongodb.mongodb_uri.redacted(),
            database = %topology.mongodb.database,
            batch_size = config.batch_size,
            batch_interval = ?config.batch_interval,
            %bound,
            "sink starting; serving /metrics, /healthz, /readyz"
        );
        let outcome = KafkaSink::new(config, &topology, writer, metrics, health)
            .run(shutdown.clone())
            .await;
        if let Err(e) = &outcome {
            // One ERROR line naming the cause (e.g. "Kafka at … unreachable for 600 s"),
            // in the log format the operator chose, before the process exits non-zero.
            error!("sink stopped: {e}");
        }
        // The endpoints stop with the sink, however it ended.
        shutdown.request();
        let _ = server.await;
        outcome.context("sink stopped with an error")
    }
}
