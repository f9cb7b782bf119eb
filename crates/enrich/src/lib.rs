//! The enrich processor: the stateful stage between the raw prices and the analytics.
//!
//! For every raw tick (full or reference record format) it updates the symbol's windows —
//! kept in the runtime's state store, so they survive crashes and move with their partition —
//! and emits, once a window holds enough ticks, a moving-average event and a volatility event
//! per window, plus a jump event when the price moved beyond the threshold since the symbol's
//! previous tick. Events go to the topology's derived topics, keyed by symbol; ticks that
//! cannot be used go to the dead-letter topic with the reason.
//!
//! ```
//! use tickstream_enrich::Enrich;
//! use tickstream_model::Topology;
//! use tickstream_streams::{KeyValueStore, ProcessorContext, Processor, Record, TaskId};
//!
//! let topology = Topology::from_str(r#"
//!     symbols = ["BTCUSDT"]
//!     [[windows]]
//!     kind = "count"
//!     size = 2
//! "#)?;
//! let enrich = Enrich::new(&topology)?;
//! let mut processor = enrich.processor();
//! let mut store = KeyValueStore::in_memory("windows");
//! let mut emitted = Vec::new();
//! for (offset, price) in [100.0, 103.0].into_iter().enumerate() {
//!     let value = format!(r#"{{"symbol":"BTCUSDT","price":{price},"ts":{offset}}}"#);
//!     let record = Record {
//!         topic: "prices.raw", partition: 0, offset: offset as i64, timestamp: None,
//!         key: Some(b"BTCUSDT"), value: Some(value.as_bytes()),
//!     };
//!     processor.process(&record, &mut ProcessorContext::new(TaskId(0), &mut store, &mut emitted))?;
//! }
//! // The second tick fills the window (moving average + volatility) and is a 3 % jump.
//! let topics: Vec<&str> = emitted.iter().map(|(topic, _, _)| topic.as_str()).collect();
//! assert_eq!(topics, ["analytics.moving_average", "analytics.volatility", "analytics.jumps"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod budget;
mod idle;
mod metrics;
#[cfg(any(test, feature = "testing"))]
pub mod naive;
mod processor;
mod state;

use std::sync::Arc;

use tickstream_model::Topology;
use tickstream_model::topology::{RepartitionPolicy, WindowConfig};
use tickstream_streams::{ProcessingGuarantee, StreamsConfig};
use tickstream_window::{CandleSpec, Config, JumpSpec, WindowSpec};

use crate::budget::SymbolBudget;

pub use metrics::EnrichMetrics;
pub use processor::EnrichProcessor;
pub use state::SymbolState;

/// The state store holding each symbol's windows; its changelog is
/// `<application_id>-windows-changelog`.
pub const STORE_NAME: &str = "windows";

/// Why enrich cannot start with this topology.
#[derive(Debug, thiserror::Error)]
pub enum EnrichError {
    #[error("window {label:?} in the topology's [[windows]]: {source}")]
    Window {
        label: String,
        source: tickstream_window::ConfigError,
    },
    #[error("candle interval {label:?} in the topology's [[candles]]: {source}")]
    Candle {
        label: String,
        source: tickstream_window::ConfigError,
    },
    #[error("the topology's windows or [jumps]: {0}")]
    Config(#[from] tickstream_window::ConfigError),
}

/// Everything enrich derives from a topology once, shared by every task's processor.
#[derive(Clone)]
pub struct Enrich {
    pub(crate) windows: Arc<Config>,
    pub(crate) topology: Arc<Topology>,
    pub(crate) metrics: Option<Arc<EnrichMetrics>>,
    /// `max_symbols`, shared by this instance's tasks; `None` when symbols are pinned.
    pub(crate) symbols: Option<Arc<SymbolBudget>>,
}

impl Enrich {
    /// Validates the windows and the jump threshold of `topology`.
    pub fn new(topology: &Topology) -> Result<Self, EnrichError> {
        Ok(Self {
            windows: Arc::new(window_config(topology)?),
            topology: Arc::new(topology.clone()),
            metrics: None,
            symbols: SymbolBudget::of(topology),
        })
    }

    /// Also publish the latest analytics per symbol as gauges (the dashboards' prices, moving
    /// averages and volatility).
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<EnrichMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// A processor for one task.
    pub fn processor(&self) -> EnrichProcessor {
        EnrichProcessor::new(self.clone())
    }

    /// The runtime configuration of an enrich instance: the raw topics in, the derived topics
    /// out, the topology's dead-letter topic, guarantee, commit interval and state dir.
    pub fn streams_config(&self, bootstrap_servers: &str) -> StreamsConfig {
        let topology = &self.topology;
        let mut config = StreamsConfig::new(
            &topology.application_id,
            bootstrap_servers,
            &topology.raw_topics(),
        );
        config.store_name = STORE_NAME.to_owned();
        config.dead_letter_topic = topology.topics.dead_letter.clone();
        config.output_topics = topology
            .derived_topics()
            .into_iter()
            .map(str::to_owned)
            .collect();
        config.state_dir = topology.processing.state_dir.clone();
        config.commit_interval = topology.processing.commit_interval;
        config.repartition = match topology.topics.repartition {
            RepartitionPolicy::Auto => Some(tickstream_streams::RepartitionPolicy::Auto),
            RepartitionPolicy::Always => Some(tickstream_streams::RepartitionPolicy::Always),
            RepartitionPolicy::Never => None,
        };
        config.partitions = topology
            .topics
            .partitions
            .map(|n| i32::try_from(n).unwrap_or(i32::MAX));
        config.max_task_idle = topology.processing.max_task_idle;
        config.give_up_after = topology.processing.give_up_after;
        config.compression = topology.topics.compression.derived.as_str().to_owned();
        config.processing_guarantee = match topology.processing.guarantee {
            tickstream_model::topology::ProcessingGuarantee::ExactlyOnce => {
                ProcessingGuarantee::ExactlyOnce
            }
            tickstream_model::topology::ProcessingGuarantee::AtLeastOnce => {
                ProcessingGuarantee::AtLeastOnce
            }
        };
        config
    }

    /// The window-library configuration enrich runs.
    pub fn windows(&self) -> &Arc<Config> {
        &self.windows
    }
}

/// The window library's configuration for the topology's `[[windows]]`, `[jumps]` and
/// lateness, with the same labels the topology gives its windows.
pub fn window_config(topology: &Topology) -> Result<Config, EnrichError> {
    let specs = topology
        .windows
        .iter()
        .map(|window| {
            let spec = match *window {
                WindowConfig::Count { size, min_count } => {
                    WindowSpec::count_with_min(size, min_count)
                }
                WindowConfig::Time {
                    span, min_count, ..
                } => WindowSpec::time_with_min(
                    i64::try_from(span.as_millis()).unwrap_or(i64::MAX),
                    min_count,
                ),
            };
            spec.map_err(|source| EnrichError::Window {
                label: window.label(),
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let millis = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let candles = topology
        .candles
        .iter()
        .map(|c| {
            CandleSpec::new(millis(c.interval), millis(c.grace))
                .and_then(|spec| spec.with_close_idle_after_ms(millis(c.close_idle_after)))
                .map_err(|source| EnrichError::Candle {
                    label: c.label(),
                    source,
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Config::new(specs)?
        .with_jump(JumpSpec::new(topology.jumps.threshold_pct / 100.0)?)
        .with_allowed_lateness_ms(millis(topology.allowed_lateness()))?
        .with_candles(candles)?)
}

#[cfg(test)]
mod candle_tests;
#[cfg(test)]
mod tests;
