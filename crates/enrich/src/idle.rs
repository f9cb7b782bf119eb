//! When quiet symbols' candles close: a deadline per symbol with open candles, checked by a
//! wall-clock punctuation (see `[[candles]] close_idle_after`).
//!
//! The deadlines are derived from the store, never stored themselves: each accepted tick
//! refreshes its symbol's; after the task starts, and after a rolled-back batch, one sweep over
//! the store's keys finds the symbols whose open candles no tick will touch again.
//!
//! The idle clock restarts when the task does (`resumed_ms`): an enrich that restarts, or takes
//! a partition over, after a while waits a whole `close_idle_after` before it closes anything,
//! so the backlog it reads first still lands in its candles. So it does when a broker outage
//! ends (the runtime holds wall-clock punctuations back during one).

use std::collections::HashMap;
use std::time::Duration;

use tickstream_model::Symbol;
use tickstream_streams::{KeyValueStore, StoreError};
use tickstream_window::{Config, SymbolWindows};

use crate::STORE_NAME;
use crate::state::SymbolState;

pub(crate) struct IdleCandles {
    /// Wall clock (epoch ms) at which each symbol with open candles has one to close.
    deadlines: HashMap<Symbol, i64>,
    /// When this task started: no idle clock starts earlier.
    resumed_ms: i64,
    /// Whether the store was swept since the task started or last rolled back.
    swept: bool,
    check_every: Duration,
}

impl IdleCandles {
    /// `None` without candle intervals.
    pub(crate) fn of(config: &Config) -> Option<Self> {
        let shortest = config
            .candles()
            .iter()
            .map(|c| c.close_idle_after_ms())
            .min()?;
        let tenth = u64::try_from(shortest / 10).unwrap_or(0);
        Some(Self {
            deadlines: HashMap::new(),
            resumed_ms: tickstream_model::clock::now_ms(),
            swept: false,
            check_every: Duration::from_millis(tenth.clamp(10, 1_000)),
        })
    }

    pub(crate) fn check_every(&self) -> Duration {
        self.check_every
    }

    pub(crate) fn resumed_ms(&self) -> i64 {
        self.resumed_ms
    }

    /// Records when `symbol`'s open candles close if it stays quiet (or that none is open).
    pub(crate) fn track(&mut self, symbol: Symbol, windows: &SymbolWindows) {
        match windows.idle_deadline_ms(self.resumed_ms) {
            Some(deadline) => {
                self.deadlines.insert(symbol, deadline);
            }
            None => {
                self.deadlines.remove(&symbol);
            }
        }
    }

    /// The symbols whose deadline has come by `now_ms`, in symbol order (so a redone batch
    /// emits in the same order).
    pub(crate) fn due(&self, now_ms: i64) -> Vec<Symbol> {
        let mut due: Vec<Symbol> = self
            .deadlines
            .iter()
            .filter(|(_, deadline)| **deadline <= now_ms)
            .map(|(symbol, _)| *symbol)
            .collect();
        due.sort_unstable();
        due
    }

    /// The input flows again at `now_ms` after an outage: no idle clock starts earlier, and
    /// the deadlines are found again.
    pub(crate) fn resume_at(&mut self, now_ms: i64) {
        self.resumed_ms = self.resumed_ms.max(now_ms);
        self.forget();
    }

    /// The batch was undone: the store's candles may differ from what the deadlines say.
    pub(crate) fn forget(&mut self) {
        self.deadlines.clear();
        self.swept = false;
    }

    /// Finds, once, every stored symbol with open candles: restores those not restored yet.
    pub(crate) fn sweep_once(
        &mut self,
        store: &mut KeyValueStore<SymbolState>,
        config: &std::sync::Arc<Config>,
    ) -> Result<(), StoreError> {
        if self.swept {
            return Ok(());
        }
        for key in store.keys()? {
            let Some(symbol) = std::str::from_utf8(&key)
                .ok()
                .and_then(|k| Symbol::new(k).ok())
            else {
                continue;
            };
            if self.deadlines.contains_key(&symbol) {
                continue;
            }
            let windows = match store.get(&key)? {
                Some(SymbolState::Live(windows)) => windows,
                Some(SymbolState::Committed { .. }) => match store.get_mut(&key)? {
                    Some(state) => &*state.live(config, STORE_NAME, &key)?,
                    None => continue,
                },
                None => continue,
            };
            let deadline = windows.idle_deadline_ms(self.resumed_ms);
            if let Some(deadline) = deadline {
                self.deadlines.insert(symbol, deadline);
            }
        }
        self.swept = true;
        Ok(())
    }
}
