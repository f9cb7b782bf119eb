//! Window and jump configuration: validated specs, stable labels and the configuration
//! fingerprint that snapshots carry.

use std::fmt;
use std::time::Duration;

use crate::candle::CandleSpec;

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A count window must hold at least one tick.
    #[error("count window size must be at least 1")]
    ZeroCountSize,
    /// A count window above [`WindowSpec::MAX_COUNT_SIZE`] ticks.
    #[error("count window size {size} exceeds the maximum {max}")]
    CountSizeTooLarge {
        /// The size asked for.
        size: u32,
        /// [`WindowSpec::MAX_COUNT_SIZE`].
        max: u32,
    },
    /// `min_count` must lie in `1..=size` for count windows and be at least 1 for time windows.
    #[error("min_count {min_count} is out of range 1..={max}")]
    MinCountOutOfRange {
        /// The minimum count asked for.
        min_count: u32,
        /// The largest allowed value (the window size for count windows).
        max: u32,
    },
    /// A time window must span at least one millisecond.
    #[error("time window span must be at least 1 ms, got {span_ms} ms")]
    NonPositiveSpan {
        /// The span asked for.
        span_ms: i64,
    },
    /// The jump threshold must be a finite number above 0 (0.02 means 2 %).
    #[error("jump threshold must be finite and > 0 (0.02 = 2 %), got {threshold}")]
    InvalidJumpThreshold {
        /// The threshold asked for.
        threshold: f64,
    },
    /// Allowed lateness cannot be negative.
    #[error("allowed lateness must be >= 0 ms, got {lateness_ms} ms")]
    NegativeLateness {
        /// The lateness asked for.
        lateness_ms: i64,
    },
    /// A configuration needs at least one window.
    #[error("a window configuration needs at least one window")]
    NoWindows,
    /// A candle interval must be whole seconds in 1 s..=1 d.
    #[error("candle interval must be whole seconds from 1s to 1d, got {interval_ms} ms")]
    CandleInterval {
        /// The interval asked for.
        interval_ms: i64,
    },
    /// A candle grace period must lie in 0..=1 d.
    #[error("candle grace must be from 0 to 1d, got {grace_ms} ms")]
    CandleGrace {
        /// The grace asked for.
        grace_ms: i64,
    },
    /// Closing idle candles needs a delay of at least 1 ms.
    #[error("close_idle_after must be at least 1 ms, got {ms} ms")]
    CandleIdleClose {
        /// The delay asked for.
        ms: i64,
    },
    /// Two windows with the same label would be indistinguishable downstream.
    #[error("window {label} is configured twice")]
    DuplicateWindow {
        /// The label that occurs twice.
        label: String,
    },
    /// Two candle series of the same interval would emit the same candles twice.
    #[error("candle interval {label} is configured twice")]
    DuplicateCandle {
        /// The interval label that occurs twice.
        label: String,
    },
}

/// The shape of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WindowKind {
    /// The last `size` accepted ticks of the symbol, in arrival order.
    Count {
        /// Number of ticks.
        size: u32,
    },
    /// The accepted ticks whose event time lies in `(newest_ts - span_ms, newest_ts]`, where
    /// `newest_ts` is the largest event time accepted for the symbol so far.
    Time {
        /// Span in milliseconds.
        span_ms: i64,
    },
}

/// One window: its kind, the tick count from which statistics are emitted, and a stable label
/// (`"count:20"`, `"time:5m"`) that downstream events carry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WindowSpec {
    kind: WindowKind,
    min_count: u32,
    label: Box<str>,
}

impl WindowSpec {
    /// Default size of a count window (the spec's N = 20).
    pub const DEFAULT_COUNT_SIZE: u32 = 20;
    /// Default minimum count of a time window: 2 ticks. One tick has a mean but a volatility
    /// of 0 by construction, which downstream would read as "calm"; two is the least that
    /// says anything about dispersion.
    pub const DEFAULT_TIME_MIN_COUNT: u32 = 2;
    /// Largest count window (2^24 ticks, 384 MiB once full): a guard against typos, and a
    /// bound the snapshot decoder relies on.
    pub const MAX_COUNT_SIZE: u32 = 1 << 24;

    /// A count window over the last `size` ticks, emitted once full (`min_count = size`).
    pub fn count(size: u32) -> Result<Self, ConfigError> {
        Self::count_with_min(size, size)
    }

    /// A count window over the last `size` ticks, emitted from `min_count` ticks on.
    pub fn count_with_min(size: u32, min_count: u32) -> Result<Self, ConfigError> {
        if size == 0 {
            return Err(ConfigError::ZeroCountSize);
        }
        if size > Self::MAX_COUNT_SIZE {
            return Err(ConfigError::CountSizeTooLarge {
                size,
                max: Self::MAX_COUNT_SIZE,
            });
        }
        if min_count == 0 || min_count > size {
            return Err(ConfigError::MinCountOutOfRange {
                min_count,
                max: size,
            });
        }
        let label = format!("count:{size}").into_boxed_str();
        Ok(Self {
            kind: WindowKind::Count { size },
            min_count,
            label,
        })
    }

    /// A time window spanning `span_ms` milliseconds of event time, emitted from
    /// [`Self::DEFAULT_TIME_MIN_COUNT`] ticks on.
    pub fn time_ms(span_ms: i64) -> Result<Self, ConfigError> {
        Self::time_with_min(span_ms, Self::DEFAULT_TIME_MIN_COUNT)
    }

    /// A time window spanning `span` (whole milliseconds; sub-millisecond parts are dropped).
    pub fn time(span: Duration) -> Result<Self, ConfigError> {
        Self::time_ms(i64::try_from(span.as_millis()).unwrap_or(i64::MAX))
    }

    /// A time window spanning `span_ms` milliseconds, emitted from `min_count` ticks on.
    pub fn time_with_min(span_ms: i64, min_count: u32) -> Result<Self, ConfigError> {
        if span_ms <= 0 {
            return Err(ConfigError::NonPositiveSpan { span_ms });
        }
        if min_count == 0 {
            return Err(ConfigError::MinCountOutOfRange {
                min_count,
                max: u32::MAX,
            });
        }
        let label = format!("time:{}", span_label(span_ms)).into_boxed_str();
        Ok(Self {
            kind: WindowKind::Time { span_ms },
            min_count,
            label,
        })
    }

    /// The window's kind and size.
    pub fn kind(&self) -> WindowKind {
        self.kind
    }

    /// Statistics are emitted once the window holds at least this many ticks.
    pub fn min_count(&self) -> u32 {
        self.min_count
    }

    /// Stable name: `count:<N>` or `time:<span>` with the span in the largest whole unit of
    /// `h`, `m`, `s`, `ms` (`time:5m`, `time:90s`, `time:1500ms`).
    pub fn label(&self) -> &str {
        &self.label
    }
}

impl fmt::Display for WindowSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}

pub(crate) fn span_label(ms: i64) -> String {
    const UNITS: [(i64, &str); 3] = [(3_600_000, "h"), (60_000, "m"), (1_000, "s")];
    for (unit, suffix) in UNITS {
        if ms % unit == 0 {
            return format!("{}{suffix}", ms / unit);
        }
    }
    format!("{ms}ms")
}

/// Jump detection: a relative change `(p_t - p_{t-1}) / p_{t-1}` between consecutive accepted
/// ticks of a symbol (arrival order) whose absolute value is strictly above `threshold`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JumpSpec {
    threshold: f64,
}

impl JumpSpec {
    /// The default threshold, 2 %.
    pub const DEFAULT_THRESHOLD: f64 = 0.02;

    /// A jump threshold as a fraction (`0.02` = 2 %); finite and above 0.
    pub fn new(threshold: f64) -> Result<Self, ConfigError> {
        if threshold.is_finite() && threshold > 0.0 {
            Ok(Self { threshold })
        } else {
            Err(ConfigError::InvalidJumpThreshold { threshold })
        }
    }

    /// The threshold as a fraction.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// The threshold in percent.
    pub fn threshold_pct(&self) -> f64 {
        self.threshold * 100.0
    }
}

impl Default for JumpSpec {
    fn default() -> Self {
        Self {
            threshold: Self::DEFAULT_THRESHOLD,
        }
    }
}

/// The full, validated analytics configuration shared by every symbol: the windows (in
/// output order), jump detection and the allowed lateness of event time.
///
/// Cheap to share: [`crate::SymbolWindows`] holds it behind an `Arc`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    windows: Box<[WindowSpec]>,
    candles: Box<[CandleSpec]>,
    jump: JumpSpec,
    allowed_lateness_ms: i64,
    fingerprint: u64,
}

impl Config {
    /// Default allowed lateness: 5 s. Ticks merged from several venues or partitions arrive a
    /// little out of order; 5 s absorbs that without holding on to old state, and anything
    /// later goes to the dead-letter topic with a reason.
    pub const DEFAULT_ALLOWED_LATENESS_MS: i64 = 5_000;

    /// A configuration with the given windows, the default jump threshold (2 %) and the
    /// default allowed lateness.
    pub fn new(windows: impl IntoIterator<Item = WindowSpec>) -> Result<Self, ConfigError> {
        let windows: Box<[WindowSpec]> = windows.into_iter().collect();
        if windows.is_empty() {
            return Err(ConfigError::NoWindows);
        }
        for (i, w) in windows.iter().enumerate() {
            if windows[..i].iter().any(|v| v.label == w.label) {
                return Err(ConfigError::DuplicateWindow {
                    label: w.label.to_string(),
                });
            }
        }
        let mut config = Self {
            windows,
            candles: Box::new([]),
            jump: JumpSpec::default(),
            allowed_lateness_ms: Self::DEFAULT_ALLOWED_LATENESS_MS,
            fingerprint: 0,
        };
        config.fingerprint = config.compute_fingerprint();
        Ok(config)
    }

    /// The same configuration with these candle intervals (in output order; none by default).
    pub fn with_candles(
        mut self,
        candles: impl IntoIterator<Item = CandleSpec>,
    ) -> Result<Self, ConfigError> {
        let candles: Box<[CandleSpec]> = candles.into_iter().collect();
        for (i, c) in candles.iter().enumerate() {
            if candles[..i]
                .iter()
                .any(|d| d.interval_ms() == c.interval_ms())
            {
                return Err(ConfigError::DuplicateCandle {
                    label: c.label().to_owned(),
                });
            }
        }
        self.candles = candles;
        self.fingerprint = self.compute_fingerprint();
        Ok(self)
    }

    /// The same configuration with another jump threshold.
    #[must_use]
    pub fn with_jump(mut self, jump: JumpSpec) -> Self {
        self.jump = jump;
        self.fingerprint = self.compute_fingerprint();
        self
    }

    /// The same configuration with another allowed lateness (milliseconds, >= 0).
    pub fn with_allowed_lateness_ms(mut self, lateness_ms: i64) -> Result<Self, ConfigError> {
        if lateness_ms < 0 {
            return Err(ConfigError::NegativeLateness { lateness_ms });
        }
        self.allowed_lateness_ms = lateness_ms;
        self.fingerprint = self.compute_fingerprint();
        Ok(self)
    }

    /// The windows, in the order readings are reported.
    pub fn windows(&self) -> &[WindowSpec] {
        &self.windows
    }

    /// The candle intervals, in the order their candles are reported.
    pub fn candles(&self) -> &[CandleSpec] {
        &self.candles
    }

    /// Jump detection settings.
    pub fn jump(&self) -> JumpSpec {
        self.jump
    }

    /// A tick whose event time is older than the newest seen for its symbol by at most this
    /// many milliseconds is accepted; older ones are rejected.
    pub fn allowed_lateness_ms(&self) -> i64 {
        self.allowed_lateness_ms
    }

    /// A 64-bit FNV-1a hash of everything that defines the configuration (windows in order,
    /// their minimum counts, jump threshold, lateness). Snapshots carry it; restoring a
    /// snapshot under a configuration with another fingerprint is refused. Stable across
    /// builds and platforms.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    fn compute_fingerprint(&self) -> u64 {
        let mut h = Fnv::new();
        h.write(b"tickstream-window/config/1");
        h.write(&(self.windows.len() as u64).to_le_bytes());
        for w in self.windows.iter() {
            match w.kind {
                WindowKind::Count { size } => {
                    h.write(&[1]);
                    h.write(&u64::from(size).to_le_bytes());
                }
                WindowKind::Time { span_ms } => {
                    h.write(&[2]);
                    h.write(&span_ms.to_le_bytes());
                }
            }
            h.write(&w.min_count.to_le_bytes());
        }
        h.write(&self.jump.threshold.to_bits().to_le_bytes());
        h.write(&self.allowed_lateness_ms.to_le_bytes());
        // Only when there are candles: states written before candles existed keep restoring.
        if !self.candles.is_empty() {
            h.write(b"candles");
            h.write(&(self.candles.len() as u64).to_le_bytes());
            for c in self.candles.iter() {
                h.write(&c.fingerprint().to_le_bytes());
            }
        }
        h.0
    }
}

impl Default for Config {
    /// One count window of 20 ticks, 2 % jumps, 5 s lateness.
    fn default() -> Self {
        let count = WindowSpec {
            kind: WindowKind::Count {
                size: WindowSpec::DEFAULT_COUNT_SIZE,
            },
            min_count: WindowSpec::DEFAULT_COUNT_SIZE,
            label: format!("count:{}", WindowSpec::DEFAULT_COUNT_SIZE).into_boxed_str(),
        };
        let mut config = Self {
            windows: Box::new([count]),
            candles: Box::new([]),
            jump: JumpSpec::default(),
            allowed_lateness_ms: Self::DEFAULT_ALLOWED_LATENESS_MS,
            fingerprint: 0,
        };
        config.fingerprint = config.compute_fingerprint();
        config
    }
}

pub(crate) struct Fnv(pub(crate) u64);

impl Fnv {
    pub(crate) fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_stable() {
        assert_eq!(
            WindowSpec::count(20).map(|w| w.label().to_owned()),
            Ok("count:20".into())
        );
        let t = |ms| WindowSpec::time_ms(ms).map(|w| w.to_string());
        assert_eq!(t(300_000), Ok("time:5m".into()));
        assert_eq!(t(60_000), Ok("time:1m".into()));
        assert_eq!(t(90_000), Ok("time:90s".into()));
        assert_eq!(t(7_200_000), Ok("time:2h".into()));
        assert_eq!(t(1_500), Ok("time:1500ms".into()));
        assert_eq!(
            WindowSpec::time(Duration::from_secs(300)).map(|w| w.kind()),
            Ok(WindowKind::Time { span_ms: 300_000 })
        );
    }

    #[test]
    fn nonsense_is_refused() {
        assert_eq!(WindowSpec::count(0), Err(ConfigError::ZeroCountSize));
        assert!(matches!(
            WindowSpec::count(u32::MAX),
            Err(ConfigError::CountSizeTooLarge { .. })
        ));
        assert!(matches!(
            WindowSpec::count_with_min(20, 21),
            Err(ConfigError::MinCountOutOfRange {
                min_count: 21,
                max: 20
            })
        ));
        assert!(WindowSpec::count_with_min(20, 0).is_err());
        assert_eq!(
            WindowSpec::time_ms(0),
            Err(ConfigError::NonPositiveSpan { span_ms: 0 })
        );
        assert!(WindowSpec::time_ms(-5).is_err());
        assert!(WindowSpec::time_with_min(1000, 0).is_err());
        for bad in [0.0, -0.02, f64::NAN, f64::INFINITY] {
            assert!(JumpSpec::new(bad).is_err(), "{bad}");
        }
        assert_eq!(Config::new([]), Err(ConfigError::NoWindows));
        let w = WindowSpec::count(20).expect("valid");
        let dup = Config::new([w.clone(), w]);
        assert!(
            matches!(dup, Err(ConfigError::DuplicateWindow { ref label }) if label == "count:20")
        );
        let lateness = Config::default().with_allowed_lateness_ms(-1);
        assert_eq!(
            lateness,
            Err(ConfigError::NegativeLateness { lateness_ms: -1 })
        );
    }

    #[test]
    fn fingerprint_tracks_every_setting() {
        let base = Config::default();
        assert_eq!(
            base,
            Config::new([WindowSpec::count(20).expect("valid")]).expect("valid")
        );
        let variants = [
            Config::new([WindowSpec::count(21).expect("valid")]).expect("valid"),
            Config::new([WindowSpec::count_with_min(20, 5).expect("valid")]).expect("valid"),
            Config::new([WindowSpec::time_ms(20).expect("valid")]).expect("valid"),
            base.clone().with_jump(JumpSpec::new(0.03).expect("valid")),
            base.clone().with_allowed_lateness_ms(0).expect("valid"),
            base.clone()
                .with_candles([CandleSpec::new(60_000, 5_000).expect("valid")])
                .expect("valid"),
            base.clone()
                .with_candles([CandleSpec::new(60_000, 4_000).expect("valid")])
                .expect("valid"),
        ];
        assert_eq!(
            base.clone().with_candles([]).expect("valid").fingerprint(),
            base.fingerprint(),
            "no candles: the fingerprint of states written before candles existed"
        );
        for v in &variants {
            assert_ne!(v.fingerprint(), base.fingerprint(), "{v:?}");
        }
        assert!(
            base.clone()
                .with_candles([
                    CandleSpec::new(60_000, 0).expect("valid"),
                    CandleSpec::new(60_000, 5_000).expect("valid"),
                ])
                .is_err(),
            "one interval twice"
        );
        // Pinned: snapshots in the wild carry this number; changing how it is computed
        // orphans every stored state.
        assert_eq!(base.fingerprint(), 0x8212_8260_26f3_decd);
    }
}
