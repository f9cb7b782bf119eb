//! Where ingest gets prices (`[source]`, chosen by `kind`). Only parsed and validated here;
//! the behaviour lives in ingest.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::symbol::Symbol;

/// The ingest source, `[source]` with `kind = "..."`. Default: `synthetic` with its
/// defaults (no network needed).
#[derive(Debug, Clone, PartialEq)]
pub enum SourceConfig {
    /// `kind = "binance-rest"`: polls Binance's REST ticker price endpoint for all symbols
    /// every `interval`.
    BinanceRest(BinanceRestSource),
    /// `kind = "binance-ws"`: Binance WebSocket market streams.
    BinanceWs(BinanceWsSource),
    /// `kind = "replay"`: a recorded file of raw ticks.
    Replay(ReplaySource),
    /// `kind = "synthetic"`: a seeded random walk with occasional jumps.
    Synthetic(SyntheticSource),
}

impl SourceConfig {
    /// The `kind` as written in the file.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BinanceRest(_) => "binance-rest",
            Self::BinanceWs(_) => "binance-ws",
            Self::Replay(_) => "replay",
            Self::Synthetic(_) => "synthetic",
        }
    }
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self::Synthetic(SyntheticSource::default())
    }
}

/// `kind = "binance-rest"`.
///
/// ```toml
/// [source]
/// kind = "binance-rest"
/// base_url = "https://api.binance.com"
/// interval = "3s"
/// request_timeout = "5s"
/// allow_plain_transport = false   # true only for a local http:// test server
/// [source.breaker]
/// failures = 5        # consecutive failures that open the circuit
/// open_for = "60s"    # how long it stays open before a trial request
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct BinanceRestSource {
    /// `http(s)://host[:port]`. Default `https://api.binance.com`.
    pub base_url: String,
    /// Time between polls. Default 3 s (the reference).
    pub interval: Duration,
    /// Per-request timeout. Default 5 s.
    pub request_timeout: Duration,
    /// Circuit breaker.
    pub breaker: BreakerConfig,
    /// `allow_plain_transport = true`: `base_url` may be plain `http://` (no TLS). Default
    /// false: anything on the path could rewrite prices, so only a local test server should
    /// be reached without TLS.
    pub allow_plain_transport: bool,
}

impl BinanceRestSource {
    /// Binance's public REST API.
    pub const DEFAULT_BASE_URL: &'static str = "https://api.binance.com";
}

impl Default for BinanceRestSource {
    fn default() -> Self {
        Self {
            base_url: Self::DEFAULT_BASE_URL.to_owned(),
            interval: Duration::from_secs(3),
            request_timeout: Duration::from_secs(5),
            breaker: BreakerConfig::default(),
            allow_plain_transport: false,
        }
    }
}

/// Circuit breaker around the Binance API (`[source.breaker]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the circuit. Default 5.
    pub failures: u32,
    /// How long the circuit stays open. Default 60 s.
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures: 5,
            open_for: Duration::from_secs(60),
        }
    }
}

/// `kind = "binance-ws"`.
///
/// ```toml
/// [source]
/// kind = "binance-ws"
/// base_url = "wss://stream.binance.com:9443"
/// streams = ["trade", "bookTicker"]
/// allow_plain_transport = false   # true only for a local ws:// test server
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct BinanceWsSource {
    /// `ws(s)://host[:port]`. Default `wss://stream.binance.com:9443`.
    pub base_url: String,
    /// Streams per symbol (`<symbol>@trade`, `<symbol>@bookTicker`). Default `["trade"]`.
    pub streams: Vec<WsStream>,
    /// `allow_plain_transport = true`: `base_url` may be plain `ws://` (no TLS). Default false,
    /// as for [`BinanceRestSource::allow_plain_transport`].
    pub allow_plain_transport: bool,
}

impl Default for BinanceWsSource {
    fn default() -> Self {
        Self {
            base_url: "wss://stream.binance.com:9443".to_owned(),
            streams: vec![WsStream::Trade],
            allow_plain_transport: false,
        }
    }
}

/// A Binance WebSocket stream type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum WsStream {
    /// `trade`: every trade's price.
    #[serde(rename = "trade")]
    Trade,
    /// `bookTicker`: best bid/ask updates.
    #[serde(rename = "bookTicker")]
    BookTicker,
}

impl WsStream {
    /// The stream name Binance uses after `<symbol>@`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Trade => "trade",
            Self::BookTicker => "bookTicker",
        }
    }
}

/// `kind = "replay"`.
///
/// ```toml
/// [source]
/// kind = "replay"
/// path = "data/ticks.jsonl"   # relative to the working directory
/// speed = 10.0                # 10x the recorded pace; or "max"
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ReplaySource {
    /// The recording (format defined by ingest). Required; relative paths are relative to
    /// the process's working directory.
    pub path: PathBuf,
    /// Pace. Default 1.0 (as recorded).
    pub speed: ReplaySpeed,
}

/// How fast a replay runs: a number (`1.0` = as recorded, `10` = ten times faster), or
/// `"max"` (as fast as possible).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReplaySpeed {
    /// A factor of the recorded pace, finite and > 0.
    Factor(f64),
    /// As fast as possible.
    Max,
}

impl Default for ReplaySpeed {
    fn default() -> Self {
        Self::Factor(1.0)
    }
}

impl<'de> Deserialize<'de> for ReplaySpeed {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ReplaySpeed;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a speed factor such as 1.0 or 10, or \"max\"")
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<ReplaySpeed, E> {
                Ok(ReplaySpeed::Factor(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ReplaySpeed, E> {
                Ok(ReplaySpeed::Factor(v as f64))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ReplaySpeed, E> {
                Ok(ReplaySpeed::Factor(v as f64))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ReplaySpeed, E> {
                if v == "max" {
                    Ok(ReplaySpeed::Max)
                } else {
                    Err(E::invalid_value(serde::de::Unexpected::Str(v), &self))
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `kind = "synthetic"`: a seeded, reproducible random walk per symbol.
///
/// ```toml
/// [source]
/// kind = "synthetic"
/// seed = 42
/// ticks_per_second = 10.0       # across all symbols
/// volatility = 0.001            # per-tick relative standard deviation (0.1 %)
/// jump_probability = 0.001      # chance per tick of a jump
/// jump_size_pct = 3.0           # size of a jump, percent (sign random)
/// [source.initial_prices]       # optional; others start at 100.0
/// BTCUSDT = 67000.0
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticSource {
    /// RNG seed: the same seed gives the same ticks. Default 42.
    pub seed: u64,
    /// Ticks per second across all symbols, finite and > 0. Default 10.
    pub ticks_per_second: f64,
    /// Starting prices (finite, > 0) for some or all symbols; the others start at
    /// [`SyntheticSource::DEFAULT_INITIAL_PRICE`].
    pub initial_prices: BTreeMap<Symbol, f64>,
    /// Per-tick relative standard deviation of the walk, in [0, 1]. Default 0.001.
    pub volatility: f64,
    /// Probability per tick of a jump, in [0, 1]. Default 0.001.
    pub jump_probability: f64,
    /// Size of a jump in percent, in (0, 100). Default 3.0 (above the default 2 % threshold,
    /// so jumps are detected).
    pub jump_size_pct: f64,
}

impl SyntheticSource {
    /// Starting price of a symbol without an entry in `initial_prices`.
    pub const DEFAULT_INITIAL_PRICE: f64 = 100.0;

    /// The starting price of `symbol`.
    pub fn initial_price(&self, symbol: &str) -> f64 {
        self.initial_prices
            .get(symbol)
            .copied()
            .unwrap_or(Self::DEFAULT_INITIAL_PRICE)
    }
}

impl Default for SyntheticSource {
    fn default() -> Self {
        Self {
            seed: 42,
            ticks_per_second: 10.0,
            initial_prices: BTreeMap::new(),
            volatility: 0.001,
            jump_probability: 0.001,
            jump_size_pct: 3.0,
        }
    }
}
