//! `tickstream enrich`: raw ticks → moving averages, volatility and jumps, exactly-once.

use std::sync::Arc;

use anyhow::Context;
use tickstream_enrich::{Enrich, EnrichMetrics};
use tickstream_streams::{KafkaStreams, Shutdown, StreamsMetrics, run_until_shutdown};
use tracing::info;

use crate::common::{ProcessorArgs, init_logging, kafka_settings_from_env};

/// Options of `tickstream enrich`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub processor: ProcessorArgs,
    /// Local window state (sled) lives here (default: the topology's processing.state_dir).
    #[arg(long, env = "TICKSTREAM_STATE_DIR")]
    pub state_dir: Option<std::path::PathBuf>,
    /// Stable identity of this instance across restarts (default: generated once and kept in
    /// the state dir).
    #[arg(long, env = "TICKSTREAM_INSTANCE_ID")]
    pub instance_id: Option<String>,
}

pub async fn main(args: Args, shutdown: Shutdown) -> anyhow::Result<()> {
    init_logging();
    let topology = args.processor.topology.load()?;
    let enrich = Enrich::new(&topology)
        .with_context(|| format!("in {}", args.processor.topology.path.display()))?;
    let mut config = enrich.streams_config(&args.processor.kafka.brokers);
    if let Some(dir) = args.state_dir {
        config.state_dir = dir;
    }
    config.instance_id = args.instance_id;
    config.kafka_settings = kafka_settings_from_env();

    let metrics = Arc::new(StreamsMetrics::new(&config.application_id));
    let enrich = enrich.with_metrics(Arc::new(EnrichMetrics::register(metrics.registry())));
    let metrics_addr = args.processor.metrics_addr(&topology);
    info!(
        topology = %args.processor.topology.path.display(),
        inputs = ?config.source_topics,
        windows = ?topology.windows.iter().map(|w| w.label()).collect::<Vec<_>>(),
        "enrich starting"
    );
    let streams = KafkaStreams::new(config, Box::new(move |_task| enrich.processor()))
        .context("configuring enrich")?
        .with_metrics(metrics);
    run_until_shutdown(streams, Some(metrics_addr), shutdown)
        .await
        .context("enrich stopped with an error")
}
