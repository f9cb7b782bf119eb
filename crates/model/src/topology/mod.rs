//! The topology file: what one tickstream deployment reads and writes — symbols, topics,
//! windows, jump threshold, the ingest source, MongoDB names and processing settings.
//!
//! Every processor reads the same TOML file ([`Topology::from_path`]). Unknown keys are
//! errors; every error names the key and says how to fix it. Durations are strings:
//! `"500ms"`, `"3s"`, `"5m"`, `"1h"`. Everything but `symbols` has a default.
//!
//! **No secrets here**: Kafka broker addresses and the MongoDB URI (with any credentials)
//! come from the environment (`TICKSTREAM_KAFKA_BROKERS`, `TICKSTREAM_MONGODB_URI`, or a
//! `.env` file), read by the binary; a topology can be committed and shared.
//!
//! ```toml
//! application_id = "tickstream"     # consumer group, transactional-id and internal-topic prefix
//! symbols = ["BTCUSDT", "ETHUSDT"]  # required, at least one
//! pin_symbols = true                # other symbols -> dead-letter topic (unknown_symbol)
//! # max_symbols = 10000             # with pin_symbols = false: windows for at most this many
//!                                   # symbols per enrich instance; more -> dead letters (symbol_limit)
//!
//! [topics]
//! raw = "prices.raw"                # one topic (key = symbol), or { BTCUSDT = "btc", ETHUSDT = "eth" }
//! raw_format = "full"               # or "reference": {"symbol": ..., "price": ...} only
//! moving_average = "analytics.moving_average"
//! volatility = "analytics.volatility"
//! jumps = "analytics.jumps"
//! candles = "analytics.candles"    # closed candles, with [[candles]]
//! dead_letter = "tickstream.dlq"    # default "<application_id>.dlq"
//! partitions = 3                    # of the topics tickstream creates; default: the raw topics'
//! repartition = "auto"              # or "always", "never": see RepartitionPolicy
//! compression = "none"              # or "gzip", "snappy", "lz4", "zstd", or per family:
//!                                   # { raw = "none", derived = "lz4" }: see Compression
//!
//! [[windows]]                       # default: one count window of 20; at most 16 windows,
//!                                   # 2,000,000 count-window ticks in all: see WindowConfig
//! kind = "count"
//! size = 20                         # last 20 ticks
//! min_count = 20                    # emit from this many ticks on (default: size)
//!
//! [[windows]]
//! kind = "time"
//! span = "5m"                       # ticks of the last 5 minutes of event time
//! min_count = 2                     # default 2
//! allowed_lateness = "5s"           # default 5s
//!
//! [jumps]
//! threshold_pct = 2.0               # percent, in (0, 100]
//!
//! [[candles]]                       # none by default; at most 8 intervals: see CandleConfig
//! interval = "1m"                   # 1s to 1d; candles [start, start + 1m) from the epoch
//! grace = "5s"                      # later ticks -> dead-letter topic (late)
//! close_idle_after = "65s"          # default interval + grace: a quiet symbol's candles close
//!
//! [source]                          # what ingest reads; default kind = "synthetic"
//! kind = "binance-rest"             # or "binance-ws", "replay", "synthetic": see SourceConfig
//! interval = "3s"
//!
//! [mongodb]
//! database = "tickstream"
//! batch_size = 1000
//! batch_interval = "100ms"
//!
//! [mongodb.collections]
//! prices = "prices"                 # or { BTCUSDT = "btc", ETHUSDT = "eth" }
//! moving_averages = "moving_averages"
//! volatility = "volatility"
//! jumps = "jumps"
//! candles = "candles"               # a time-series collection
//!
//! [processing]
//! guarantee = "exactly_once"        # or "at_least_once"
//! commit_interval = "100ms"
//! state_dir = "./data/state"
//! metrics_addr = "127.0.0.1:9464"
//! max_record_bytes = 1024
//! max_task_idle = "100ms"           # how long to wait for an input that lags (event-time order)
//! give_up_after = "10m"             # a broker/MongoDB outage longer than this exits non-zero
//! ```

mod candles;
mod error;
mod file;
mod routing;
mod source;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

pub use candles::CandleConfig;
pub use error::TopologyError;
pub use routing::Routing;
pub use source::{
    BinanceRestSource, BinanceWsSource, BreakerConfig, ReplaySource, ReplaySpeed, SourceConfig,
    SyntheticSource, WsStream,
};

use crate::derived::EventKind;
use crate::symbol::Symbol;
use crate::tick::{DecodeOptions, RecordFormat};

/// A validated topology. Build it with [`Topology::from_path`] / [`Topology::from_str`]
/// (parse + validate) or start from [`Topology::default`]; after changing fields, call
/// [`Topology::validate`] again.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    /// Kafka Streams' `application.id`: consumer group, transactional-id prefix, prefix of
    /// the changelog topics and of the default dead-letter topic. Default `tickstream`.
    pub application_id: String,
    /// The symbols ingest fetches and enrich/sink expect, in order. At least one.
    pub symbols: Vec<Symbol>,
    /// When true (default), records for other symbols go to the dead-letter topic as
    /// `unknown_symbol`.
    pub pin_symbols: bool,
    /// With `pin_symbols = false`: the most symbols an enrich instance keeps windows for, the
    /// configured ones included (they are always taken); a tick of one more new symbol goes to
    /// the dead-letter topic as `symbol_limit`. Default [`Topology::DEFAULT_MAX_SYMBOLS`],
    /// at most [`Topology::MAX_SYMBOLS`]. Whoever can produce to the raw topic names the
    /// symbols: without this, each new name would cost memory and metrics for good.
    pub max_symbols: usize,
    /// Kafka topics.
    pub topics: Topics,
    /// Windows, in output order. At least one; default one count window of 20.
    pub windows: Vec<WindowConfig>,
    /// Jump detection.
    pub jumps: JumpConfig,
    /// Candle intervals (`[[candles]]`), in output order; none by default.
    pub candles: Vec<CandleConfig>,
    /// Where ingest gets prices.
    pub source: SourceConfig,
    /// MongoDB database, collections and sink batching.
    pub mongodb: MongoConfig,
    /// Processing settings.
    pub processing: ProcessingConfig,
}

/// The Kafka topics (`[topics]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Topics {
    /// Raw ticks: one topic keyed by symbol (default `prices.raw`), or one per symbol.
    pub raw: Routing,
    /// How ingest writes raw ticks (consumers accept both). Default `full`.
    pub raw_format: RecordFormat,
    /// [`crate::MovingAverage`] events. Default `analytics.moving_average`.
    pub moving_average: String,
    /// [`crate::Volatility`] events. Default `analytics.volatility`.
    pub volatility: String,
    /// [`crate::Jump`] events. Default `analytics.jumps`.
    pub jumps: String,
    /// [`crate::Candle`] events, with `[[candles]]`. Default `analytics.candles`.
    pub candles: String,
    /// Refused records with their reason in headers (`tickstream_streams::dlq_headers`). Default
    /// `<application_id>.dlq`.
    pub dead_letter: String,
    /// Partition count of the topics tickstream creates (derived, dead-letter, repartition,
    /// changelog; raw topics too with `tickstream topics create`) and the number of tasks that
    /// own the symbols. Default: the raw topics' count when they exist (the largest), else 3.
    pub partitions: Option<u32>,
    /// When raw records go through the repartition topic (`<application_id>-repartition`).
    pub repartition: RepartitionPolicy,
    /// Compression of what each processor produces.
    pub compression: CompressionConfig,
}

/// `[topics] repartition`: how enrich makes sure one task owns each symbol, whatever the raw
/// records' keys and partitions (Kafka Streams repartitions before a stateful step the same way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RepartitionPolicy {
    /// A record keyed by its symbol, in the partition Kafka's default (murmur2) partitioner
    /// gives that key among [`Topics::partitions`], is processed where it is; every other
    /// record (no key, another key, another partition count) takes the repartition hop.
    /// Keyed input costs nothing; the reference producer's unkeyed records cost one hop.
    #[default]
    Auto,
    /// Every raw record takes the hop: one more write and read per record.
    Always,
    /// No hop: each raw partition is its own task (the raw topics must be co-partitioned and
    /// keyed by symbol). Unkeyed or otherwise keyed input then splits a symbol's windows.
    Never,
}

/// A Kafka compression codec (librdkafka's `compression.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// Readable by every client; the most bytes on the wire and disk.
    #[default]
    None,
    /// Readable by every client (plain `pip install kafka-python` included); the most CPU.
    Gzip,
    /// Needs a codec library in Python clients (`python-snappy`).
    Snappy,
    /// Fast and compact; Python clients need `lz4`.
    Lz4,
    /// The most compact at a moderate CPU cost; Python clients need `zstandard`.
    Zstd,
}

impl Compression {
    /// librdkafka's and the broker's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        }
    }
}

/// `[topics] compression`, per family of produced topics. A producer compresses all it writes
/// with one codec, so a family is what one processor writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompressionConfig {
    /// What ingest writes: the raw topics.
    pub raw: Compression,
    /// What enrich (and the sink's dead letters) write: the derived topics, the dead-letter
    /// topic, the repartition topic and the changelog.
    pub derived: Compression,
}

/// One window (`[[windows]]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowConfig {
    /// `kind = "count"`: the last `size` ticks of a symbol, in arrival order.
    Count {
        /// Number of ticks, 1 to [`WindowConfig::MAX_COUNT_SIZE`].
        size: u32,
        /// Emit from this many ticks on, 1 to `size`; default `size` (full window, as the
        /// reference's moving average of 20).
        min_count: u32,
    },
    /// `kind = "time"`: the ticks whose event time lies within the last `span` of the
    /// symbol's newest event time.
    Time {
        /// At least 1 ms.
        span: Duration,
        /// Emit from this many ticks on; default 2 (one tick has no dispersion).
        min_count: u32,
        /// How far behind the symbol's newest event time a tick may arrive and still be
        /// counted; default 5 s. Later ticks go to the dead-letter topic.
        allowed_lateness: Duration,
    },
}

impl WindowConfig {
    /// Default count window size: the reference's 20.
    pub const DEFAULT_COUNT_SIZE: u32 = 20;
    /// Largest count window: 1,000,000 ticks (24 MB per symbol once full; a ring grows with
    /// the ticks it holds, so a large size costs nothing until they came). Beyond a million
    /// ticks a time window says what is meant.
    pub const MAX_COUNT_SIZE: u32 = 1_000_000;
    /// The most windows per topology (each symbol keeps every one): 16, four times the
    /// reference's analytics; each window is two derived events per tick.
    pub const MAX_WINDOWS: usize = 16;
    /// The most ticks all count windows hold together, per symbol: 2,000,000 (two windows of
    /// the largest size), at most 48 MB per symbol once they are full.
    pub const MAX_COUNT_TICKS: u64 = 2_000_000;
    /// The longest time window: 7 days (168h). A time window holds every tick of its span
    /// (16 to 64 bytes each), so its memory is the symbol's tick rate times the span: a week
    /// at a tick a second is 10 to 40 MB per symbol.
    pub const MAX_SPAN: Duration = Duration::from_secs(7 * 24 * 3600);
    /// Default `min_count` of time windows.
    pub const DEFAULT_TIME_MIN_COUNT: u32 = 2;
    /// Default `allowed_lateness` of time windows: 5 s.
    pub const DEFAULT_ALLOWED_LATENESS: Duration = Duration::from_secs(5);

    /// The stable label derived events carry: `count:20`, `time:5m` (span in the largest
    /// whole unit of `h`, `m`, `s`, `ms`).
    pub fn label(&self) -> String {
        match self {
            Self::Count { size, .. } => format!("count:{size}"),
            Self::Time { span, .. } => format!("time:{}", crate::duration::format_duration(*span)),
        }
    }

    /// Statistics are emitted once the window holds this many ticks.
    pub fn min_count(&self) -> u32 {
        match self {
            Self::Count { min_count, .. } | Self::Time { min_count, .. } => *min_count,
        }
    }
}

/// Jump detection (`[jumps]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JumpConfig {
    /// A tick whose price moved by more than this percentage since the symbol's previous
    /// tick is a jump. In (0, 100]; default 2.0 (the reference's 2 %).
    pub threshold_pct: f64,
}

impl Default for JumpConfig {
    fn default() -> Self {
        Self { threshold_pct: 2.0 }
    }
}

/// MongoDB names and sink batching (`[mongodb]`). The URI is not here: it comes from
/// `TICKSTREAM_MONGODB_URI`.
#[derive(Debug, Clone, PartialEq)]
pub struct MongoConfig {
    /// Database. Default `tickstream`.
    pub database: String,
    /// Collections (`[mongodb.collections]`).
    pub collections: Collections,
    /// Sink writes at most this many documents per bulk write. Default 1000.
    pub batch_size: usize,
    /// While a write is in flight, the sink's next batch waits at most this long (it is
    /// written as soon as MongoDB is idle: a ceiling, not a floor). Default 100 ms.
    pub batch_interval: Duration,
}

/// MongoDB collections (`[mongodb.collections]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Collections {
    /// Raw ticks: one collection (default `prices`) or one per symbol (the reference:
    /// `{ BTCUSDT = "btc", ETHUSDT = "eth", SOLUSDT = "sol" }`).
    pub prices: Routing,
    /// Default `moving_averages`.
    pub moving_averages: String,
    /// Default `volatility`.
    pub volatility: String,
    /// Default `jumps`.
    pub jumps: String,
    /// [`crate::Candle`]s, with `[[candles]]`: a time-series collection. Default `candles`.
    pub candles: String,
}

/// Kafka Streams' `processing.guarantee`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessingGuarantee {
    /// Read-process-write in Kafka transactions; downstream reads `read_committed`.
    #[default]
    ExactlyOnce,
    /// Outputs flushed before offsets commit: nothing lost, duplicates possible after a crash.
    AtLeastOnce,
}

/// Processing settings (`[processing]`). Each process may override `metrics_addr` and
/// `state_dir` through its flags/environment.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessingConfig {
    /// Default `exactly_once`.
    pub guarantee: ProcessingGuarantee,
    /// How often offsets/transactions commit. Default 100 ms (Kafka Streams' EOS default).
    pub commit_interval: Duration,
    /// Local state (sled) lives under `<state_dir>/<application_id>`. Default `./data/state`.
    pub state_dir: PathBuf,
    /// Where `/metrics`, `/healthz` and `/readyz` listen (IP:port). Default `127.0.0.1:9464`.
    pub metrics_addr: SocketAddr,
    /// Records above this size are dead-lettered as `oversized`. Default 1024
    /// ([`DecodeOptions::DEFAULT_MAX_BYTES`]); 64 to 1 MiB.
    pub max_record_bytes: usize,
    /// Kafka Streams' `max.task.idle.ms`: records from several input partitions are taken in
    /// timestamp order; an input with nothing buffered that has not reached its end is waited
    /// for at most this long before the others go ahead. Default 100 ms; at most 1 min.
    pub max_task_idle: Duration,
    /// How long a processor keeps retrying through a broker (or, for the sink, MongoDB)
    /// outage, not ready meanwhile, before it exits non-zero naming the cause. Default 10 min;
    /// at least 10 s.
    pub give_up_after: Duration,
}

impl Default for Topology {
    /// The defaults of every key, with symbols BTCUSDT, ETHUSDT, SOLUSDT.
    fn default() -> Self {
        Self {
            application_id: Self::DEFAULT_APPLICATION_ID.to_owned(),
            symbols: vec![
                Symbol::from_static("BTCUSDT"),
                Symbol::from_static("ETHUSDT"),
                Symbol::from_static("SOLUSDT"),
            ],
            pin_symbols: true,
            max_symbols: Self::DEFAULT_MAX_SYMBOLS,
            topics: Topics::defaults(Self::DEFAULT_APPLICATION_ID),
            windows: vec![WindowConfig::default()],
            jumps: JumpConfig::default(),
            candles: Vec::new(),
            source: SourceConfig::default(),
            mongodb: MongoConfig::default(),
            processing: ProcessingConfig::default(),
        }
    }
}

impl Topics {
    /// The default topics for `application_id` (the dead-letter topic is named after it).
    pub fn defaults(application_id: &str) -> Self {
        Self {
            raw: Routing::Shared("prices.raw".to_owned()),
            raw_format: RecordFormat::Full,
            moving_average: "analytics.moving_average".to_owned(),
            volatility: "analytics.volatility".to_owned(),
            jumps: "analytics.jumps".to_owned(),
            candles: "analytics.candles".to_owned(),
            dead_letter: format!("{application_id}.dlq"),
            partitions: None,
            repartition: RepartitionPolicy::Auto,
            compression: CompressionConfig::default(),
        }
    }
}

impl Default for WindowConfig {
    /// A full count window of [`WindowConfig::DEFAULT_COUNT_SIZE`] ticks.
    fn default() -> Self {
        Self::Count {
            size: Self::DEFAULT_COUNT_SIZE,
            min_count: Self::DEFAULT_COUNT_SIZE,
        }
    }
}

impl Default for MongoConfig {
    fn default() -> Self {
        Self {
            database: "tickstream".to_owned(),
            collections: Collections {
                prices: Routing::Shared("prices".to_owned()),
                moving_averages: "moving_averages".to_owned(),
                volatility: "volatility".to_owned(),
                jumps: "jumps".to_owned(),
                candles: "candles".to_owned(),
            },
            batch_size: 1000,
            batch_interval: Duration::from_millis(100),
        }
    }
}

impl Default for ProcessingConfig {
    fn default() -> Self {
        Self {
            guarantee: ProcessingGuarantee::ExactlyOnce,
            commit_interval: Duration::from_millis(100),
            state_dir: PathBuf::from("./data/state"),
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 9464)),
            max_record_bytes: DecodeOptions::DEFAULT_MAX_BYTES,
            max_task_idle: Duration::from_millis(100),
            give_up_after: Duration::from_secs(600),
        }
    }
}

impl Topology {
    /// Default `application_id`.
    pub const DEFAULT_APPLICATION_ID: &str = "tickstream";
    /// Default `max_symbols`: far more pairs than an exchange lists against one quote
    /// currency, far fewer than a flood of made-up names.
    pub const DEFAULT_MAX_SYMBOLS: usize = 10_000;
    /// The cap on `max_symbols` and on the length of `symbols`: fifty times the pairs a large
    /// exchange lists; 100,000 symbols with one count:20 window take about 70 MB of windows.
    pub const MAX_SYMBOLS: usize = 100_000;

    /// Parses and validates a topology from TOML text.
    #[allow(clippy::should_implement_trait)] // also implemented; this one needs no import
    pub fn from_str(toml: &str) -> Result<Self, TopologyError> {
        file::parse(toml, "topology")
    }

    /// Reads, parses and validates a topology file. Errors name the file.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self, TopologyError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Io {
            path: path.to_owned(),
            source,
        })?;
        file::parse(&text, &path.display().to_string())
    }

    /// Checks every rule; the error names the key. [`Topology::from_str`] already did.
    pub fn validate(&self) -> Result<(), TopologyError> {
        validate::validate(self)
    }

    /// Whether `symbol` is one of [`Topology::symbols`].
    pub fn is_configured(&self, symbol: &str) -> bool {
        self.symbols.iter().any(|s| s == symbol)
    }

    /// The raw topic ingest writes `symbol` to; `None` for a symbol without one (not
    /// configured while symbols are pinned, or missing from a per-symbol mapping).
    pub fn raw_topic_for(&self, symbol: &str) -> Option<&str> {
        if self.pin_symbols && !self.is_configured(symbol) {
            return None;
        }
        self.topics.raw.for_symbol(symbol)
    }

    /// The repartition topic: raw records re-keyed by symbol (see [`RepartitionPolicy`]).
    pub fn repartition_topic(&self) -> String {
        format!("{}-repartition", self.application_id)
    }

    /// Every raw topic, distinct (what enrich and sink subscribe to).
    pub fn raw_topics(&self) -> Vec<&str> {
        self.topics.raw.names()
    }

    /// The topic of one kind of derived event.
    pub fn topic(&self, kind: EventKind) -> &str {
        match kind {
            EventKind::MovingAverage => &self.topics.moving_average,
            EventKind::Volatility => &self.topics.volatility,
            EventKind::Jump => &self.topics.jumps,
            EventKind::Candle => &self.topics.candles,
        }
    }

    /// The kinds of derived event this topology emits, in [`EventKind::ALL`] order: candles
    /// only with `[[candles]]`.
    pub fn event_kinds(&self) -> impl Iterator<Item = EventKind> + '_ {
        EventKind::ALL
            .into_iter()
            .filter(|kind| *kind != EventKind::Candle || !self.candles.is_empty())
    }

    /// The topics of [`Topology::event_kinds`], in that order.
    pub fn derived_topics(&self) -> Vec<&str> {
        self.event_kinds().map(|kind| self.topic(kind)).collect()
    }

    /// The MongoDB collection of one kind of derived event.
    pub fn collection(&self, kind: EventKind) -> &str {
        let c = &self.mongodb.collections;
        match kind {
            EventKind::MovingAverage => &c.moving_averages,
            EventKind::Volatility => &c.volatility,
            EventKind::Jump => &c.jumps,
            EventKind::Candle => &c.candles,
        }
    }

    /// The MongoDB collection raw ticks of `symbol` go to (see [`Topology::raw_topic_for`]).
    pub fn prices_collection_for(&self, symbol: &str) -> Option<&str> {
        if self.pin_symbols && !self.is_configured(symbol) {
            return None;
        }
        self.mongodb.collections.prices.for_symbol(symbol)
    }

    /// Options for [`crate::RawTick::decode`]: the record size limit, and the symbols when
    /// pinned.
    pub fn decode_options(&self) -> DecodeOptions {
        let options = DecodeOptions::new().with_max_bytes(self.processing.max_record_bytes);
        if self.pin_symbols {
            options.with_pinned_symbols(self.symbols.iter().copied())
        } else {
            options
        }
    }

    /// The largest `allowed_lateness` of the time windows, or
    /// [`WindowConfig::DEFAULT_ALLOWED_LATENESS`] without time windows: the one lateness
    /// for a window library that keeps a single bound per symbol.
    pub fn allowed_lateness(&self) -> Duration {
        self.windows
            .iter()
            .filter_map(|w| match w {
                WindowConfig::Time {
                    allowed_lateness, ..
                } => Some(*allowed_lateness),
                WindowConfig::Count { .. } => None,
            })
            .max()
            .unwrap_or(WindowConfig::DEFAULT_ALLOWED_LATENESS)
    }
}

impl FromStr for Topology {
    type Err = TopologyError;
    fn from_str(toml: &str) -> Result<Self, Self::Err> {
        Topology::from_str(toml)
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_errors;
