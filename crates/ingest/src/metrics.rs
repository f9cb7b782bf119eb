//! ingest's Prometheus metrics. The names are stable: dashboards are built on them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts,
};
use tickstream_model::RawTick;
use tickstream_streams::MetricsRegistry;

use crate::politeness::BreakerState;

/// Why ingest waited before a request (`reason` label of `rate_limit_waits_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitReason {
    /// HTTP 429 with `Retry-After`.
    TooManyRequests,
    /// HTTP 418 (IP ban) with `Retry-After`.
    Banned,
    /// `X-MBX-USED-WEIGHT-1M` close to the limit.
    Weight,
}

impl WaitReason {
    pub fn label(self) -> &'static str {
        match self {
            Self::TooManyRequests => "429",
            Self::Banned => "418",
            Self::Weight => "weight",
        }
    }
}

/// ingest's metrics in their own [`MetricsRegistry`]. Cheap to clone: every clone updates the
/// same series.
#[derive(Clone)]
pub struct IngestMetrics {
    registry: Arc<MetricsRegistry>,
    /// `tickstream_ingest_ticks_fetched_total{symbol}`: ticks a source handed over.
    pub ticks_fetched: IntCounterVec,
    /// `tickstream_ingest_ticks_produced_total{symbol}`: ticks Kafka acknowledged.
    pub ticks_produced: IntCounterVec,
    /// `tickstream_ingest_request_duration_seconds`: Binance REST request latency.
    pub request_duration: Histogram,
    /// `tickstream_ingest_rate_limit_waits_total{reason}`.
    pub rate_limit_waits: IntCounterVec,
    /// `tickstream_ingest_breaker_state`: 0 closed, 1 open, 2 half-open.
    pub breaker_state: IntGauge,
    /// `tickstream_ingest_last_tick_age_seconds{symbol}`: updated on every scrape.
    pub last_tick_age: GaugeVec,
    /// `tickstream_ingest_last_price{symbol}`.
    pub last_price: GaugeVec,
    /// `tickstream_ingest_malformed_responses_total`: bodies, frames or lines that could not be read.
    pub malformed_responses: IntCounter,
    /// `tickstream_ingest_source_gaps_total`: WebSocket reconnects (data may be missing there).
    pub source_gaps: IntCounter,
    /// `tickstream_ingest_unknown_symbols_total`: prices for symbols the topology does not
    /// list, dropped. Unlabelled on purpose: the upstream chooses those names.
    pub unknown_symbols: IntCounter,
    /// `tickstream_ingest_oversized_responses_total`: REST bodies and WebSocket messages over
    /// the caps of [`crate::limits`], refused.
    pub oversized_responses: IntCounter,
    /// `tickstream_ingest_source_up`: 1 while the source delivers, 0 while the upstream fails
    /// (errors, bans, oversized answers, a stalled handshake); `/readyz` follows it.
    pub source_up: IntGauge,
    /// Epoch ms of the newest tick per symbol, for `last_tick_age` at scrape time.
    last_tick_ms: Arc<Mutex<HashMap<String, i64>>>,
}

impl IngestMetrics {
    /// The metrics, labelled with `application_id`, in a new registry.
    pub fn new(application_id: &str) -> Self {
        let registry = Arc::new(MetricsRegistry::new(application_id));
        let counter_vec = |name: &str, help: &str, label: &str| {
            registry.register(IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid"))
        };
        let gauge_vec = |name: &str, help: &str| {
            registry.register(GaugeVec::new(Opts::new(name, help), &["symbol"]).expect("valid"))
        };
        Self {
            ticks_fetched: counter_vec(
                "ingest_ticks_fetched_total",
                "Ticks received from the source, per symbol.",
                "symbol",
            ),
            ticks_produced: counter_vec(
                "ingest_ticks_produced_total",
                "Ticks acknowledged by Kafka (acks=all), per symbol.",
                "symbol",
            ),
            request_duration: registry.register(
                Histogram::with_opts(
                    HistogramOpts::new(
                        "ingest_request_duration_seconds",
                        "Binance REST request latency, successful or not.",
                    )
                    .buckets(
                        prometheus::exponential_buckets(0.005, 2.0, 12).expect("valid buckets"),
                    ),
                )
                .expect("valid"),
            ),
            rate_limit_waits: counter_vec(
                "ingest_rate_limit_waits_total",
                "Waits imposed by Binance's limits: 429, 418 (IP ban), or the used weight near the limit.",
                "reason",
            ),
            breaker_state: registry.register(
                IntGauge::new(
                    "ingest_breaker_state",
                    "Circuit breaker around Binance: 0 closed, 1 open, 2 half-open.",
                )
                .expect("valid"),
            ),
            last_tick_age: gauge_vec(
                "ingest_last_tick_age_seconds",
                "Seconds since the event time of the newest tick, per symbol (at scrape time).",
            ),
            last_price: gauge_vec("ingest_last_price", "The newest price, per symbol."),
            malformed_responses: registry.register(
                IntCounter::new(
                    "ingest_malformed_responses_total",
                    "Responses, frames or replay lines that could not be read (logged, skipped).",
                )
                .expect("valid"),
            ),
            source_gaps: registry.register(
                IntCounter::new(
                    "ingest_source_gaps_total",
                    "WebSocket disconnects: ticks between the drop and the reconnect were missed.",
                )
                .expect("valid"),
            ),
            unknown_symbols: registry.register(
                IntCounter::new(
                    "ingest_unknown_symbols_total",
                    "Prices for symbols the topology does not list: dropped before any metric or record.",
                )
                .expect("valid"),
            ),
            oversized_responses: registry.register(
                IntCounter::new(
                    "ingest_oversized_responses_total",
                    "REST bodies and WebSocket messages over ingest's size caps: refused, backed off from.",
                )
                .expect("valid"),
            ),
            source_up: registry.register(
                IntGauge::new(
                    "ingest_source_up",
                    "1 while the source delivers prices, 0 while the upstream fails; readiness follows it.",
                )
                .expect("valid"),
            ),
            last_tick_ms: Arc::new(Mutex::new(HashMap::new())),
            registry,
        }
    }

    pub fn registry(&self) -> &MetricsRegistry {
        &self.registry
    }

    /// The Prometheus text, with `last_tick_age_seconds` computed now.
    pub fn render(&self) -> String {
        self.update_tick_ages(now_ms());
        self.registry.render()
    }

    /// Sets `last_tick_age_seconds` relative to `now_ms` (epoch ms).
    pub fn update_tick_ages(&self, now_ms: i64) {
        let last = self
            .last_tick_ms
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (symbol, ts) in last.iter() {
            let age = (now_ms - ts).max(0) as f64 / 1000.0;
            self.last_tick_age.with_label_values(&[symbol]).set(age);
        }
    }

    /// Counts a batch a source handed over: fetched per symbol, the newest price and time.
    /// Ticks without `ts` count as received at `received_ms`.
    pub fn record_fetched(&self, ticks: &[RawTick], received_ms: i64) {
        // (symbol, count, last price, newest ts): few symbols, so a Vec beats a map.
        let mut per_symbol: Vec<(&str, u64, f64, i64)> = Vec::new();
        for tick in ticks {
            let ts = tick.ts.unwrap_or(received_ms);
            let symbol = tick.symbol.as_str();
            match per_symbol.iter_mut().find(|(s, ..)| *s == symbol) {
                Some(entry) => {
                    entry.1 += 1;
                    entry.2 = tick.price;
                    entry.3 = entry.3.max(ts);
                }
                None => per_symbol.push((symbol, 1, tick.price, ts)),
            }
        }
        let mut last = self
            .last_tick_ms
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (symbol, count, price, ts) in per_symbol {
            self.ticks_fetched
                .with_label_values(&[symbol])
                .inc_by(count);
            self.last_price.with_label_values(&[symbol]).set(price);
            let newest = last.entry(symbol.to_owned()).or_insert(ts);
            *newest = (*newest).max(ts);
        }
    }

    pub fn record_wait(&self, reason: WaitReason) {
        self.rate_limit_waits
            .with_label_values(&[reason.label()])
            .inc();
    }

    pub fn record_breaker(&self, state: BreakerState) {
        self.breaker_state.set(state.gauge_value());
    }

    pub fn record_request(&self, took: Duration) {
        self.request_duration.observe(took.as_secs_f64());
    }

    /// The produced counter of `symbol`, to keep on a hot path instead of a label lookup.
    pub fn produced_counter(&self, symbol: &str) -> IntCounter {
        self.ticks_produced.with_label_values(&[symbol])
    }

    /// The last price gauge of `symbol` (tests read it).
    pub fn last_price_of(&self, symbol: &str) -> Gauge {
        self.last_price.with_label_values(&[symbol])
    }
}

/// Wall-clock epoch milliseconds: the one clock, [`tickstream_model::clock::now_ms`].
pub use tickstream_model::clock::now_ms;

#[cfg(test)]
mod tests {
    use super::*;
    use tickstream_model::Symbol;

    fn tick(symbol: &str, price: f64, ts: i64) -> RawTick {
        RawTick::new(Symbol::new(symbol).expect("valid symbol"), price).with_ts(ts)
    }

    #[test]
    fn exports_exactly_the_documented_names() {
        let metrics = IngestMetrics::new("test");
        let mut names = metrics.registry().names();
        names.sort();
        assert_eq!(
            names,
            [
                "tickstream_ingest_breaker_state",
                "tickstream_ingest_last_price",
                "tickstream_ingest_last_tick_age_seconds",
                "tickstream_ingest_malformed_responses_total",
                "tickstream_ingest_oversized_responses_total",
                "tickstream_ingest_rate_limit_waits_total",
                "tickstream_ingest_request_duration_seconds",
                "tickstream_ingest_source_gaps_total",
                "tickstream_ingest_source_up",
                "tickstream_ingest_ticks_fetched_total",
                "tickstream_ingest_ticks_produced_total",
                "tickstream_ingest_unknown_symbols_total",
            ]
        );
    }

    #[test]
    fn fetched_batches_update_counts_prices_and_ages() {
        let metrics = IngestMetrics::new("test");
        metrics.record_fetched(
            &[
                tick("BTCUSDT", 100.0, 1_000),
                tick("ETHUSDT", 10.0, 2_000),
                tick("BTCUSDT", 101.0, 3_000),
            ],
            0,
        );
        assert_eq!(
            metrics.ticks_fetched.with_label_values(&["BTCUSDT"]).get(),
            2
        );
        assert_eq!(
            metrics.ticks_fetched.with_label_values(&["ETHUSDT"]).get(),
            1
        );
        assert_eq!(metrics.last_price_of("BTCUSDT").get(), 101.0);
        metrics.update_tick_ages(5_500);
        assert_eq!(
            metrics.last_tick_age.with_label_values(&["BTCUSDT"]).get(),
            2.5
        );
        assert_eq!(
            metrics.last_tick_age.with_label_values(&["ETHUSDT"]).get(),
            3.5
        );
        metrics.record_wait(WaitReason::Weight);
        metrics.record_breaker(BreakerState::HalfOpen);
        let text = metrics.render();
        assert_eq!(
            metrics
                .rate_limit_waits
                .with_label_values(&["weight"])
                .get(),
            1
        );
        assert!(text.contains("reason=\"weight\""), "{text}");
        assert!(
            text.contains("tickstream_ingest_breaker_state{application=\"test\"} 2"),
            "{text}"
        );
    }
}
