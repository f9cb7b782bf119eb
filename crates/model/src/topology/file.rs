//! The file as written: every key optional, unknown keys refused. Parsed by `toml` (type and
//! spelling errors come with the offending line), then resolved into a [`Topology`] with
//! defaults filled in (errors name the key), then validated.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::candles::CandleFile;
use super::error::hint_for;
use super::source::{
    BinanceRestSource, BinanceWsSource, BreakerConfig, ReplaySource, ReplaySpeed, SourceConfig,
    SyntheticSource, WsStream,
};
use super::{
    Collections, Compression, CompressionConfig, JumpConfig, MongoConfig, ProcessingConfig,
    ProcessingGuarantee, RepartitionPolicy, Routing, Topics, Topology, TopologyError, WindowConfig,
};
use crate::duration::deserialize_opt as duration;
use crate::symbol::Symbol;
use crate::tick::RecordFormat;

/// Parses, resolves and validates `text`; errors are reported against `origin`.
pub(super) fn parse(text: &str, origin: &str) -> Result<Topology, TopologyError> {
    let file: TopologyFile = toml::from_str(text).map_err(|e| TopologyError::Parse {
        origin: origin.to_owned(),
        hint: hint_for(&e),
        source: Box::new(e),
    })?;
    file.resolve()
        .and_then(|topology| topology.validate().map(|()| topology))
        .map_err(|e| e.with_origin(origin))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopologyFile {
    application_id: Option<String>,
    symbols: Option<Vec<Symbol>>,
    pin_symbols: Option<bool>,
    max_symbols: Option<usize>,
    #[serde(default)]
    topics: TopicsFile,
    windows: Option<Vec<WindowFile>>,
    #[serde(default)]
    jumps: JumpsFile,
    candles: Option<Vec<CandleFile>>,
    source: Option<SourceFile>,
    #[serde(default)]
    mongodb: MongoFile,
    #[serde(default)]
    processing: ProcessingFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicsFile {
    raw: Option<Routing>,
    raw_format: Option<RecordFormat>,
    moving_average: Option<String>,
    volatility: Option<String>,
    jumps: Option<String>,
    candles: Option<String>,
    dead_letter: Option<String>,
    partitions: Option<u32>,
    repartition: Option<RepartitionPolicy>,
    compression: Option<CompressionFile>,
}

/// One codec for every family, or one per family.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum CompressionFile {
    All(Compression),
    PerFamily(CompressionFamilies),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompressionFamilies {
    raw: Option<Compression>,
    derived: Option<Compression>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum WindowKind {
    Count,
    Time,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowFile {
    kind: Option<WindowKind>,
    size: Option<u32>,
    #[serde(default, deserialize_with = "duration")]
    span: Option<Duration>,
    min_count: Option<u32>,
    #[serde(default, deserialize_with = "duration")]
    allowed_lateness: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JumpsFile {
    threshold_pct: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum SourceKind {
    BinanceRest,
    BinanceWs,
    Replay,
    Synthetic,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceFile {
    kind: Option<SourceKind>,
    base_url: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    interval: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    request_timeout: Option<Duration>,
    breaker: Option<BreakerFile>,
    allow_plain_transport: Option<bool>,
    streams: Option<Vec<WsStream>>,
    path: Option<PathBuf>,
    speed: Option<ReplaySpeed>,
    seed: Option<u64>,
    ticks_per_second: Option<f64>,
    initial_prices: Option<BTreeMap<Symbol, f64>>,
    volatility: Option<f64>,
    jump_probability: Option<f64>,
    jump_size_pct: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BreakerFile {
    failures: Option<u32>,
    #[serde(default, deserialize_with = "duration")]
    open_for: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MongoFile {
    database: Option<String>,
    #[serde(default)]
    collections: CollectionsFile,
    batch_size: Option<usize>,
    #[serde(default, deserialize_with = "duration")]
    batch_interval: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CollectionsFile {
    prices: Option<Routing>,
    moving_averages: Option<String>,
    volatility: Option<String>,
    jumps: Option<String>,
    candles: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProcessingFile {
    guarantee: Option<ProcessingGuarantee>,
    #[serde(default, deserialize_with = "duration")]
    commit_interval: Option<Duration>,
    state_dir: Option<PathBuf>,
    metrics_addr: Option<String>,
    max_record_bytes: Option<usize>,
    #[serde(default, deserialize_with = "duration")]
    max_task_idle: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    give_up_after: Option<Duration>,
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> TopologyError {
    TopologyError::invalid(key, problem)
}

impl TopologyFile {
    /// Fills in defaults; refuses what cannot be represented (a missing required key, a key
    /// of another window or source kind, an unparsable address).
    fn resolve(self) -> Result<Topology, TopologyError> {
        let symbols = self.symbols.ok_or_else(|| {
            invalid(
                "symbols",
                "is missing: list the trading pairs, e.g. symbols = [\"BTCUSDT\", \"ETHUSDT\"]",
            )
        })?;
        let pin_symbols = self.pin_symbols.unwrap_or(true);
        if pin_symbols && self.max_symbols.is_some() {
            return Err(invalid(
                "max_symbols",
                "applies with pin_symbols = false only (pinned symbols are just those listed): \
                 remove it, or set pin_symbols = false",
            ));
        }
        let application_id = self
            .application_id
            .unwrap_or_else(|| Topology::DEFAULT_APPLICATION_ID.to_owned());
        let t = self.topics;
        let d = Topics::defaults(&application_id);
        let topics = Topics {
            raw: t.raw.unwrap_or(d.raw),
            raw_format: t.raw_format.unwrap_or(d.raw_format),
            moving_average: t.moving_average.unwrap_or(d.moving_average),
            volatility: t.volatility.unwrap_or(d.volatility),
            jumps: t.jumps.unwrap_or(d.jumps),
            candles: t.candles.unwrap_or(d.candles),
            dead_letter: t.dead_letter.unwrap_or(d.dead_letter),
            partitions: t.partitions,
            repartition: t.repartition.unwrap_or(d.repartition),
            compression: match t.compression {
                None => d.compression,
                Some(CompressionFile::All(codec)) => CompressionConfig {
                    raw: codec,
                    derived: codec,
                },
                Some(CompressionFile::PerFamily(f)) => CompressionConfig {
                    raw: f.raw.unwrap_or(d.compression.raw),
                    derived: f.derived.unwrap_or(d.compression.derived),
                },
            },
        };
        let windows = match self.windows {
            None => vec![WindowConfig::default()],
            Some(list) => list
                .into_iter()
                .enumerate()
                .map(|(i, w)| w.resolve(i))
                .collect::<Result<_, _>>()?,
        };
        let jumps = JumpConfig {
            threshold_pct: self
                .jumps
                .threshold_pct
                .unwrap_or(JumpConfig::default().threshold_pct),
        };
        let candles = self
            .candles
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, c)| c.resolve(i))
            .collect::<Result<_, _>>()?;
        let source = match self.source {
            None => SourceConfig::default(),
            Some(source) => source.resolve()?,
        };
        let m = self.mongodb;
        let dm = MongoConfig::default();
        let c = m.collections;
        let mongodb = MongoConfig {
            database: m.database.unwrap_or(dm.database),
            collections: Collections {
                prices: c.prices.unwrap_or(dm.collections.prices),
                moving_averages: c.moving_averages.unwrap_or(dm.collections.moving_averages),
                volatility: c.volatility.unwrap_or(dm.collections.volatility),
                jumps: c.jumps.unwrap_or(dm.collections.jumps),
                candles: c.candles.unwrap_or(dm.collections.candles),
            },
            batch_size: m.batch_size.unwrap_or(dm.batch_size),
            batch_interval: m.batch_interval.unwrap_or(dm.batch_interval),
        };
        let p = self.processing;
        let dp = ProcessingConfig::default();
        let metrics_addr = match p.metrics_addr {
            None => dp.metrics_addr,
            Some(addr) => addr.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    "processing.metrics_addr",
                    format!(
                        "{addr:?} is not an IP address and port: write e.g. \"127.0.0.1:9464\" \
                         (this host only) or \"0.0.0.0:9464\" (all interfaces)"
                    ),
                )
            })?,
        };
        let processing = ProcessingConfig {
            guarantee: p.guarantee.unwrap_or(dp.guarantee),
            commit_interval: p.commit_interval.unwrap_or(dp.commit_interval),
            state_dir: p.state_dir.unwrap_or(dp.state_dir),
            metrics_addr,
            max_record_bytes: p.max_record_bytes.unwrap_or(dp.max_record_bytes),
            max_task_idle: p.max_task_idle.unwrap_or(dp.max_task_idle),
            give_up_after: p.give_up_after.unwrap_or(dp.give_up_after),
        };
        Ok(Topology {
            application_id,
            symbols,
            pin_symbols,
            max_symbols: self.max_symbols.unwrap_or(Topology::DEFAULT_MAX_SYMBOLS),
            topics,
            windows,
            jumps,
            candles,
            source,
            mongodb,
            processing,
        })
    }
}

impl WindowFile {
    fn resolve(self, i: usize) -> Result<WindowConfig, TopologyError> {
        let key = |field: &str| format!("windows[{i}].{field}");
        let only = |field: &str, kind: &str, instead: &str| {
            invalid(
                key(field),
                format!("applies to kind = \"{kind}\" windows only: {instead}"),
            )
        };
        match self.kind {
            None => Err(invalid(
                key("kind"),
                "is missing: write kind = \"count\" (the last N ticks) or kind = \"time\" \
                 (the ticks of the last span of event time)",
            )),
            Some(WindowKind::Count) => {
                if self.span.is_some() {
                    return Err(only("span", "time", "a count window has size = N"));
                }
                if self.allowed_lateness.is_some() {
                    return Err(only("allowed_lateness", "time", "remove it"));
                }
                let size = self.size.ok_or_else(|| {
                    invalid(key("size"), "is missing: how many ticks, e.g. size = 20")
                })?;
                Ok(WindowConfig::Count {
                    size,
                    min_count: self.min_count.unwrap_or(size),
                })
            }
            Some(WindowKind::Time) => {
                if self.size.is_some() {
                    return Err(only("size", "count", "a time window has span = \"5m\""));
                }
                let span = self.span.ok_or_else(|| {
                    invalid(
                        key("span"),
                        "is missing: how much event time, e.g. span = \"5m\"",
                    )
                })?;
                Ok(WindowConfig::Time {
                    span,
                    min_count: self
                        .min_count
                        .unwrap_or(WindowConfig::DEFAULT_TIME_MIN_COUNT),
                    allowed_lateness: self
                        .allowed_lateness
                        .unwrap_or(WindowConfig::DEFAULT_ALLOWED_LATENESS),
                })
            }
        }
    }
}

impl SourceFile {
    fn resolve(self) -> Result<SourceConfig, TopologyError> {
        let kind = self.kind.ok_or_else(|| {
            invalid(
                "source.kind",
                "is missing: write kind = \"binance-rest\", \"binance-ws\", \"replay\" or \"synthetic\"",
            )
        })?;
        use SourceKind::{BinanceRest as Rest, BinanceWs as Ws, Replay, Synthetic};
        let owners: [(&str, bool, &[SourceKind]); 14] = [
            ("base_url", self.base_url.is_some(), &[Rest, Ws]),
            (
                "allow_plain_transport",
                self.allow_plain_transport.is_some(),
                &[Rest, Ws],
            ),
            ("interval", self.interval.is_some(), &[Rest]),
            ("request_timeout", self.request_timeout.is_some(), &[Rest]),
            ("breaker", self.breaker.is_some(), &[Rest]),
            ("streams", self.streams.is_some(), &[Ws]),
            ("path", self.path.is_some(), &[Replay]),
            ("speed", self.speed.is_some(), &[Replay]),
            ("seed", self.seed.is_some(), &[Synthetic]),
            (
                "ticks_per_second",
                self.ticks_per_second.is_some(),
                &[Synthetic],
            ),
            (
                "initial_prices",
                self.initial_prices.is_some(),
                &[Synthetic],
            ),
            ("volatility", self.volatility.is_some(), &[Synthetic]),
            (
                "jump_probability",
                self.jump_probability.is_some(),
                &[Synthetic],
            ),
            ("jump_size_pct", self.jump_size_pct.is_some(), &[Synthetic]),
        ];
        for (field, set, kinds) in owners {
            if set && !kinds.contains(&kind) {
                let names: Vec<String> =
                    kinds.iter().map(|k| format!("\"{}\"", k.name())).collect();
                return Err(invalid(
                    format!("source.{field}"),
                    format!(
                        "does not apply to kind = \"{}\" (it is a setting of kind = {}): \
                         remove it, or change kind",
                        kind.name(),
                        names.join(" or ")
                    ),
                ));
            }
        }
        Ok(match kind {
            Rest => {
                let d = BinanceRestSource::default();
                let breaker = match self.breaker {
                    None => d.breaker,
                    Some(b) => BreakerConfig {
                        failures: b.failures.unwrap_or(d.breaker.failures),
                        open_for: b.open_for.unwrap_or(d.breaker.open_for),
                    },
                };
                SourceConfig::BinanceRest(BinanceRestSource {
                    base_url: self.base_url.unwrap_or(d.base_url),
                    interval: self.interval.unwrap_or(d.interval),
                    request_timeout: self.request_timeout.unwrap_or(d.request_timeout),
                    breaker,
                    allow_plain_transport: self
                        .allow_plain_transport
                        .unwrap_or(d.allow_plain_transport),
                })
            }
            Ws => {
                let d = BinanceWsSource::default();
                SourceConfig::BinanceWs(BinanceWsSource {
                    base_url: self.base_url.unwrap_or(d.base_url),
                    streams: self.streams.unwrap_or(d.streams),
                    allow_plain_transport: self
                        .allow_plain_transport
                        .unwrap_or(d.allow_plain_transport),
                })
            }
            Replay => SourceConfig::Replay(ReplaySource {
                path: self.path.ok_or_else(|| {
                    invalid(
                        "source.path",
                        "is missing: the recording to replay, e.g. path = \"data/ticks.jsonl\"",
                    )
                })?,
                speed: self.speed.unwrap_or_default(),
            }),
            Synthetic => {
                let d = SyntheticSource::default();
                SourceConfig::Synthetic(SyntheticSource {
                    seed: self.seed.unwrap_or(d.seed),
                    ticks_per_second: self.ticks_per_second.unwrap_or(d.ticks_per_second),
                    initial_prices: self.initial_prices.unwrap_or(d.initial_prices),
                    volatility: self.volatility.unwrap_or(d.volatility),
                    jump_probability: self.jump_probability.unwrap_or(d.jump_probability),
                    jump_size_pct: self.jump_size_pct.unwrap_or(d.jump_size_pct),
                })
            }
        })
    }
}

impl SourceKind {
    fn name(self) -> &'static str {
        match self {
            Self::BinanceRest => "binance-rest",
            Self::BinanceWs => "binance-ws",
            Self::Replay => "replay",
            Self::Synthetic => "synthetic",
        }
    }
}
