//! The latest analytics per symbol as Prometheus gauges, beside the runtime's metrics.
//!
//! One series per symbol (and window): the topology's symbols bound the cardinality.

use prometheus::{Gauge, GaugeVec, IntCounter, IntCounterVec, Opts};
use tickstream_streams::MetricsRegistry;

pub struct EnrichMetrics {
    moving_average: GaugeVec,
    volatility: GaugeVec,
    last_price: GaugeVec,
    jumps: IntCounterVec,
    candles: IntCounterVec,
}

impl EnrichMetrics {
    /// Registers enrich's metrics in `registry` (the instance's runtime registry).
    pub fn register(registry: &MetricsRegistry) -> Self {
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            registry.register(GaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
        };
        Self {
            moving_average: gauge_vec(
                "enrich_moving_average",
                "Latest moving average per symbol and window.",
                &["symbol", "window"],
            ),
            volatility: gauge_vec(
                "enrich_volatility",
                "Latest volatility (population standard deviation) per symbol and window.",
                &["symbol", "window"],
            ),
            last_price: gauge_vec(
                "enrich_last_price",
                "Price of the latest accepted tick per symbol.",
                &["symbol"],
            ),
            jumps: registry.register(
                IntCounterVec::new(
                    Opts::new("enrich_jumps_total", "Jump events emitted per symbol."),
                    &["symbol"],
                )
                .expect("valid metric"),
            ),
            candles: registry.register(
                IntCounterVec::new(
                    Opts::new(
                        "enrich_candles_total",
                        "Candles emitted, per interval and what closed them: event time \
                         passing end + grace, the symbol going quiet (idle), or the end of a \
                         bounded input (end_of_input).",
                    ),
                    &["interval", "closed_by"],
                )
                .expect("valid metric"),
            ),
        }
    }

    /// One candle emitted.
    pub(crate) fn candle_closed(&self, interval: &str, closed_by: crate::processor::ClosedBy) {
        self.candles
            .with_label_values(&[interval, closed_by.label()])
            .inc();
    }

    /// The series of one symbol, resolved once so a tick costs a few atomic stores.
    pub(crate) fn for_symbol(&self, symbol: &str, windows: &[&str]) -> SymbolGauges {
        SymbolGauges {
            moving_average: windows
                .iter()
                .map(|w| self.moving_average.with_label_values(&[symbol, w]))
                .collect(),
            volatility: windows
                .iter()
                .map(|w| self.volatility.with_label_values(&[symbol, w]))
                .collect(),
            last_price: self.last_price.with_label_values(&[symbol]),
            jumps: self.jumps.with_label_values(&[symbol]),
        }
    }
}

/// One symbol's series, in window order.
pub(crate) struct SymbolGauges {
    pub(crate) moving_average: Box<[Gauge]>,
    pub(crate) volatility: Box<[Gauge]>,
    pub(crate) last_price: Gauge,
    pub(crate) jumps: IntCounter,
}
