//! The source abstraction: whatever the topology's `[source]` names, a [`Source`] hands out
//! batches of [`RawTick`]s. It knows nothing of Kafka, so `tickstream run` can feed the same
//! sources into an in-process transport.

use std::path::PathBuf;
use std::time::Duration;

use tickstream_model::topology::SourceConfig;
use tickstream_model::{RawTick, Topology};

use crate::metrics::IngestMetrics;
use crate::politeness::{Backoff, WeightTracker};
use crate::replay::ReplayReader;
use crate::rest::RestPoller;
use crate::synthetic::SyntheticWalk;
use crate::ws::WsStreamer;

/// Why a source stopped. Transient trouble (429, 5xx, drops) never shows up here: sources
/// wait it out. These are the errors that need a person.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(
        "Binance at {base_url} does not know the symbol(s) {symbols:?} (HTTP 400, code -1121 \
         \"Invalid symbol.\"); fix `symbols` in the topology (Binance spells pairs like BTCUSDT)"
    )]
    UnknownSymbol {
        symbols: Vec<String>,
        base_url: String,
    },
    #[error(
        "Binance refused {url} with HTTP {status}: {body}; retrying would not help; check \
         [source] in the topology"
    )]
    Rejected {
        url: String,
        status: u16,
        body: String,
    },
    #[error(
        "cannot read the replay file {path}: {source}; check [source].path in the topology \
         (relative paths are relative to the working directory)"
    )]
    ReplayFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{url} is not a valid source URL: expected {expected}; check [source].base_url")]
    BadUrl { url: String, expected: &'static str },
    #[error(
        "{url} is plain (no TLS): use https:// or wss://, or, for a local test server only, set \
         allow_plain_transport = true in [source]"
    )]
    PlainTransport { url: String },
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
}

/// How the Binance sources treat Binance beyond what the topology configures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Politeness {
    /// Between retries after 5xx/timeouts/malformed answers, and between reconnects.
    pub backoff: Backoff,
    /// Binance's per-minute request weight limit.
    pub weight_limit: u32,
    /// Share of `weight_limit` ingest allows itself before waiting for the next minute.
    pub weight_headroom: f64,
}

impl Default for Politeness {
    fn default() -> Self {
        Self {
            backoff: Backoff::default(),
            weight_limit: WeightTracker::DEFAULT_LIMIT,
            weight_headroom: WeightTracker::DEFAULT_HEADROOM,
        }
    }
}

/// A source of raw ticks, as the topology's `[source]` chose it.
pub enum Source {
    BinanceRest(RestPoller),
    BinanceWs(WsStreamer),
    Replay(ReplayReader),
    Synthetic(SyntheticWalk),
}

impl Source {
    /// The source the topology configures, with default [`Politeness`]. A replay file is
    /// opened here (a missing file is a start-up error); network sources connect on the first
    /// [`Source::next_batch`].
    pub fn from_topology(
        topology: &Topology,
        metrics: &IngestMetrics,
    ) -> Result<Self, SourceError> {
        Self::from_topology_with(topology, metrics, &Politeness::default())
    }

    /// [`Source::from_topology`] with other politeness settings (tests use short backoffs).
    pub fn from_topology_with(
        topology: &Topology,
        metrics: &IngestMetrics,
        politeness: &Politeness,
    ) -> Result<Self, SourceError> {
        let symbols = &topology.symbols;
        // A network source is not ready until the upstream answered; the others are at once.
        let network = matches!(
            topology.source,
            SourceConfig::BinanceRest(_) | SourceConfig::BinanceWs(_)
        );
        metrics.source_up.set(i64::from(!network));
        Ok(match &topology.source {
            SourceConfig::BinanceRest(config) => {
                Self::BinanceRest(RestPoller::new(symbols, config, politeness, metrics)?)
            }
            SourceConfig::BinanceWs(config) => {
                Self::BinanceWs(WsStreamer::new(symbols, config, politeness, metrics)?)
            }
            SourceConfig::Replay(config) => Self::Replay(ReplayReader::open(
                config,
                topology.decode_options(),
                metrics,
            )?),
            SourceConfig::Synthetic(config) => Self::Synthetic(SyntheticWalk::new(symbols, config)),
        })
    }

    /// The `kind` as written in the topology.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BinanceRest(_) => "binance-rest",
            Self::BinanceWs(_) => "binance-ws",
            Self::Replay(_) => "replay",
            Self::Synthetic(_) => "synthetic",
        }
    }

    /// The next batch of ticks (never empty); `None` once the source is exhausted (the end of
    /// a replay file; live and synthetic sources never end). Waits as long as the source needs
    /// (the polling interval, a rate limit, a reconnect): callers race it against their
    /// shutdown signal; dropping the future loses no tick already returned.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<RawTick>>, SourceError> {
        match self {
            Self::BinanceRest(source) => source.next_batch().await.map(Some),
            Self::BinanceWs(source) => source.next_batch().await.map(Some),
            Self::Replay(source) => source.next_batch().await,
            Self::Synthetic(source) => Ok(Some(source.next_batch().await)),
        }
    }
}

/// Whether Binance's REST API at `base_url` answers `GET /api/v3/ping` with 200 within
/// `timeout` (`tickstream run` uses it to choose live or synthetic prices).
pub async fn binance_reachable(base_url: &str, timeout: Duration) -> bool {
    let Ok(client) = reqwest::Client::builder().timeout(timeout).build() else {
        return false;
    };
    let url = format!("{}/api/v3/ping", base_url.trim_end_matches('/'));
    matches!(client.get(url).send().await, Ok(r) if r.status().is_success())
}
