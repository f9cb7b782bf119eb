//! The per-symbol state: all configured windows, the jump reference price and the newest
//! event time.

use std::iter::FusedIterator;
use std::sync::Arc;

use crate::count::CountWindow;
use crate::jump::Jump;
use crate::moments::Stats;
use crate::spec::{Config, WindowKind, WindowSpec};
use crate::tick::{Rejection, Tick};
use crate::time::TimeWindow;

#[derive(Debug, Clone)]
pub(crate) enum Window {
    Count(CountWindow),
    /// Boxed: a time window is larger, and count windows should not pay for its size.
    Time(Box<TimeWindow>),
}

impl Window {
    pub(crate) fn new(spec: &WindowSpec) -> Self {
        match spec.kind() {
            WindowKind::Count { size } => Self::Count(CountWindow::new(size)),
            WindowKind::Time { span_ms } => Self::Time(Box::new(TimeWindow::new(span_ms))),
        }
    }

    #[inline(always)]
    fn push(&mut self, ts: i64, price: f64, newest_ts: i64) {
        match self {
            Self::Count(w) => w.push(price),
            Self::Time(w) => w.push(ts, price, newest_ts),
        }
    }

    #[inline(always)]
    fn len(&self) -> usize {
        match self {
            Self::Count(w) => w.len(),
            Self::Time(w) => w.len(),
        }
    }

    #[inline(always)]
    fn stats(&self) -> Option<Stats> {
        match self {
            Self::Count(w) => w.stats(),
            Self::Time(w) => w.stats(),
        }
    }

    fn rebuilds(&self) -> u64 {
        match self {
            Self::Count(w) => w.moments.rebuilds,
            Self::Time(w) => w.moments.rebuilds,
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Self::Count(w) => w.heap_bytes(),
            Self::Time(w) => size_of::<TimeWindow>() + w.heap_bytes(),
        }
    }
}

/// The newest event time and the last price, once a tick was accepted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Last {
    /// Largest accepted event time.
    pub(crate) newest_ts: i64,
    /// Price of the last accepted tick in arrival order (the jump reference).
    pub(crate) price: f64,
}

/// All window state of one symbol. Feed it the symbol's ticks with [`SymbolWindows::update`];
/// persist it with [`SymbolWindows::snapshot`] and [`SymbolWindows::restore`].
///
/// # Semantics
///
/// * A tick is **rejected** (and changes nothing) if its price is not finite, not positive,
///   or outside [`crate::MIN_PRICE`]`..=`[`crate::MAX_PRICE`], or if its event time is older
///   than the symbol's newest accepted event time by more than the allowed lateness.
/// * An accepted tick enters every **count window** (arrival order, late or not), becomes
///   the jump reference for the next tick, and enters every **time window** whose range
///   `(newest_ts - span, newest_ts]` contains its event time, at its event-time place. A late
///   tick at or before a window's start is left out of that window only.
/// * Statistics of a window are reported once it holds its `min_count` ticks.
/// * A time window only moves when its symbol receives a tick: event time is per symbol.
#[derive(Debug, Clone)]
pub struct SymbolWindows {
    config: Arc<Config>,
    pub(crate) windows: Box<[Window]>,
    pub(crate) last: Option<Last>,
}

impl SymbolWindows {
    /// Empty state for one symbol under `config`.
    pub fn new(config: Arc<Config>) -> Self {
        let windows = config.windows().iter().map(Window::new).collect();
        Self {
            config,
            windows,
            last: None,
        }
    }

    pub(crate) fn from_parts(
        config: Arc<Config>,
        windows: Box<[Window]>,
        last: Option<Last>,
    ) -> Self {
        Self {
            config,
            windows,
            last,
        }
    }

    /// Folds in one tick: O(1) amortised per window for in-order ticks, no allocation once
    /// the windows have reached their working size. Returns the jump (if any) and access to
    /// every window's statistics, or why the tick was rejected.
    #[inline]
    pub fn update(&mut self, tick: Tick) -> Result<Update<'_>, Rejection> {
        if let Some(rejection) = Rejection::check_price(tick.price) {
            return Err(rejection);
        }
        let (newest_ts, jump) = match self.last {
            None => (tick.ts, None),
            Some(last) => {
                let lateness = self.config.allowed_lateness_ms();
                if tick.ts < last.newest_ts.saturating_sub(lateness) {
                    return Err(Rejection::LateTick {
                        ts: tick.ts,
                        newest_ts: last.newest_ts,
                        allowed_lateness_ms: lateness,
                    });
                }
                (
                    last.newest_ts.max(tick.ts),
                    Jump::detect(last.price, tick.price, self.config.jump()),
                )
            }
        };
        self.last = Some(Last {
            newest_ts,
            price: tick.price,
        });
        for w in self.windows.iter_mut() {
            w.push(tick.ts, tick.price, newest_ts);
        }
        Ok(Update { state: self, jump })
    }

    /// The current readings of every window, in configuration order (as after the last
    /// accepted tick).
    pub fn readings(&self) -> Readings<'_> {
        Readings {
            specs: self.config.windows().iter(),
            windows: self.windows.iter(),
        }
    }

    /// The configuration this state runs under.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// Largest accepted event time, if any tick was accepted.
    pub fn newest_ts(&self) -> Option<i64> {
        self.last.map(|l| l.newest_ts)
    }

    /// Price of the last accepted tick (arrival order), if any.
    pub fn last_price(&self) -> Option<f64> {
        self.last.map(|l| l.price)
    }

    /// Bytes this state occupies: the struct itself plus every heap buffer it owns, by
    /// capacity. Allocator bookkeeping and the shared `Config` are not included.
    pub fn memory_bytes(&self) -> usize {
        size_of::<Self>()
            + size_of_val(&*self.windows)
            + self.windows.iter().map(Window::heap_bytes).sum::<usize>()
    }

    /// How many O(n) re-centring passes the windows have made since creation or restore
    /// (diagnostic for the amortised-cost claim; not part of the snapshot).
    pub fn rebuilds(&self) -> u64 {
        self.windows.iter().map(Window::rebuilds).sum()
    }
}

/// The outcome of an accepted tick. Statistics are computed when asked for (O(1) each).
#[derive(Debug, Clone, Copy)]
pub struct Update<'a> {
    state: &'a SymbolWindows,
    jump: Option<Jump>,
}

impl<'a> Update<'a> {
    /// The jump between the previous accepted tick and this one, if beyond the threshold.
    pub fn jump(&self) -> Option<Jump> {
        self.jump
    }

    /// Every window's reading, in configuration order.
    pub fn readings(&self) -> Readings<'a> {
        self.state.readings()
    }

    /// The reading of window `index` (configuration order).
    pub fn reading(&self, index: usize) -> Option<WindowReading<'a>> {
        let spec = self.state.config.windows().get(index)?;
        let window = self.state.windows.get(index)?;
        Some(WindowReading::new(spec, window))
    }
}

/// One window's state after a tick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowReading<'a> {
    /// The window's configuration (its [`WindowSpec::label`] names it downstream).
    pub spec: &'a WindowSpec,
    /// Ticks currently in the window.
    pub count: usize,
    /// Statistics, once the window holds at least `spec.min_count()` ticks.
    pub stats: Option<Stats>,
}

impl<'a> WindowReading<'a> {
    #[inline(always)]
    fn new(spec: &'a WindowSpec, window: &Window) -> Self {
        let count = window.len();
        let stats = if count >= spec.min_count() as usize {
            window.stats()
        } else {
            None
        };
        Self { spec, count, stats }
    }

    /// The window's stable label (`"count:20"`, `"time:5m"`).
    pub fn label(&self) -> &'a str {
        self.spec.label()
    }
}

/// Iterator over the readings of a symbol's windows.
#[derive(Debug, Clone)]
pub struct Readings<'a> {
    specs: std::slice::Iter<'a, WindowSpec>,
    windows: std::slice::Iter<'a, Window>,
}

impl<'a> Iterator for Readings<'a> {
    type Item = WindowReading<'a>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        Some(WindowReading::new(self.specs.next()?, self.windows.next()?))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.windows.size_hint()
    }
}

impl ExactSizeIterator for Readings<'_> {}
impl FusedIterator for Readings<'_> {}
