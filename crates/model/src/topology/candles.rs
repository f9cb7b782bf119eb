//! `[[candles]]`: tumbling event-time OHLCV candles, one entry per interval.

use std::time::Duration;

use serde::Deserialize;

use super::TopologyError;
use crate::duration::{deserialize_opt as duration, format_duration, format_interval};

/// One candle interval (`[[candles]]`).
///
/// ```toml
/// [[candles]]
/// interval = "1m"            # 1s to 1d, whole seconds; windows [start, start + 1m) from the epoch
/// grace = "5s"               # default 5s: ticks this far behind the symbol's newest still count
/// close_idle_after = "65s"   # default interval + grace: a quiet symbol's candles close then
/// ```
///
/// A candle is emitted once, when the symbol's event time reaches `end + grace`, onto
/// `topics.candles`. A tick further behind than the grace, or for a candle that has closed, is
/// late: it goes to the dead-letter topic as `late`, unchanged, and counts nowhere (not in the
/// windows either). A symbol that receives no tick for `close_idle_after` of wall clock has its
/// open candles closed and emitted then; a tick arriving afterwards for one of them is late.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CandleConfig {
    /// The candle length: whole seconds, 1 s to 1 day.
    pub interval: Duration,
    /// How far behind the symbol's newest event time a tick may arrive and still be counted.
    pub grace: Duration,
    /// Wall clock without a tick after which a symbol's open candles close.
    pub close_idle_after: Duration,
}

impl CandleConfig {
    /// The most intervals per topology.
    pub const MAX_INTERVALS: usize = 8;
    /// Default grace, as the windows' default allowed lateness.
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);
    /// The longest interval and the longest grace.
    pub const MAX_INTERVAL: Duration = Duration::from_secs(86_400);

    /// The label candles carry in their `interval` field: `1m`, `15s`, `4h`, `1d`.
    pub fn label(&self) -> String {
        format_interval(self.interval)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CandleFile {
    #[serde(default, deserialize_with = "duration")]
    interval: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    grace: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    close_idle_after: Option<Duration>,
}

impl CandleFile {
    pub(super) fn resolve(self, i: usize) -> Result<CandleConfig, TopologyError> {
        let interval = self.interval.ok_or_else(|| {
            TopologyError::invalid(
                format!("candles[{i}].interval"),
                "is missing: write the candle length, e.g. interval = \"1m\"",
            )
        })?;
        let grace = self.grace.unwrap_or(CandleConfig::DEFAULT_GRACE);
        Ok(CandleConfig {
            interval,
            grace,
            close_idle_after: self.close_idle_after.unwrap_or(interval + grace),
        })
    }
}

/// The rules of `[[candles]]`.
pub(super) fn validate(candles: &[CandleConfig]) -> Result<(), TopologyError> {
    let fail = |key: String, problem: String| Err(TopologyError::invalid(key, problem));
    if candles.len() > CandleConfig::MAX_INTERVALS {
        return fail(
            "candles".to_owned(),
            format!(
                "has {} intervals: at most {} (each symbol keeps every one open)",
                candles.len(),
                CandleConfig::MAX_INTERVALS
            ),
        );
    }
    for (i, c) in candles.iter().enumerate() {
        let key = |field: &str| format!("candles[{i}].{field}");
        let whole_seconds = c.interval.subsec_nanos() == 0;
        if !whole_seconds
            || c.interval < Duration::from_secs(1)
            || c.interval > CandleConfig::MAX_INTERVAL
        {
            return fail(
                key("interval"),
                format!(
                    "is {}: write whole seconds from 1s to 1d, e.g. \"1m\"",
                    format_interval(c.interval)
                ),
            );
        }
        if c.grace > CandleConfig::MAX_INTERVAL {
            return fail(
                key("grace"),
                format!(
                    "is {}: write at most 1d, e.g. \"5s\"",
                    format_duration(c.grace)
                ),
            );
        }
        if c.close_idle_after < Duration::from_millis(1) {
            return fail(
                key("close_idle_after"),
                "is 0: write a delay of wall clock, e.g. \"65s\" (default interval + grace)"
                    .to_owned(),
            );
        }
        if let Some(j) = candles[..i].iter().position(|d| d.interval == c.interval) {
            return fail(
                key("interval"),
                format!(
                    "{} is also candles[{j}]: give each interval one entry",
                    c.label()
                ),
            );
        }
    }
    Ok(())
}
