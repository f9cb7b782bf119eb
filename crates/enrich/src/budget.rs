//! `max_symbols`: with `pin_symbols = false`, whoever can produce to the raw topic names the
//! symbols, and every new name costs windows, a state-store key and metric series for good.
//! So an instance keeps windows for at most `max_symbols` symbols: the configured ones always,
//! and unconfigured ones while the [`SymbolBudget`] lasts; a tick of one more new symbol goes
//! to the dead-letter topic as `symbol_limit`.
//!
//! The budget is per instance (its tasks share it) and counts what its processors hold: a
//! symbol whose windows a task restored from the store counts too (it was admitted before,
//! perhaps by another instance, and is always kept); a task that is closed (revoked) gives
//! its symbols back. A symbol admitted in a transaction that then aborts stays counted until
//! its task closes: the count errs on the safe side.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tickstream_model::{InvalidRecord, Symbol, Topology};

/// The unconfigured symbols one instance may keep windows for, shared by its processors.
#[derive(Debug)]
pub(crate) struct SymbolBudget {
    configured: HashSet<Symbol>,
    /// `max_symbols`, for the message.
    max_symbols: usize,
    /// `max_symbols` minus the configured symbols.
    limit: usize,
    taken: AtomicUsize,
}

impl SymbolBudget {
    /// The budget of `topology`, or `None` when its symbols are pinned (decoding already
    /// refuses every other one).
    pub(crate) fn of(topology: &Topology) -> Option<Arc<Self>> {
        (!topology.pin_symbols).then(|| {
            Arc::new(Self {
                configured: topology.symbols.iter().copied().collect(),
                max_symbols: topology.max_symbols,
                limit: topology.max_symbols.saturating_sub(topology.symbols.len()),
                taken: AtomicUsize::new(0),
            })
        })
    }
}

/// One processor's share: the symbols it holds windows for, and how many it took from the
/// budget (given back when the processor is dropped).
#[derive(Debug)]
pub(crate) struct HeldSymbols {
    budget: Arc<SymbolBudget>,
    held: HashSet<Symbol>,
    charged: usize,
}

impl HeldSymbols {
    pub(crate) fn new(budget: Arc<SymbolBudget>) -> Self {
        Self {
            budget,
            held: HashSet::new(),
            charged: 0,
        }
    }

    /// Whether this processor keeps windows for `symbol` already.
    pub(crate) fn holds(&self, symbol: Symbol) -> bool {
        self.held.contains(&symbol)
    }

    /// Whether `symbol`'s windows may be kept: always if held already or configured; a symbol
    /// with windows in the store (`stored`) is taken even beyond the budget; a new one only
    /// within it.
    pub(crate) fn admit(&mut self, symbol: Symbol, stored: bool) -> Result<(), InvalidRecord> {
        if self.held.contains(&symbol) {
            return Ok(());
        }
        let budget = &self.budget;
        if !budget.configured.contains(&symbol) {
            let taken = if stored {
                budget.taken.fetch_add(1, Ordering::AcqRel);
                true
            } else {
                budget
                    .taken
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        (n < budget.limit).then_some(n + 1)
                    })
                    .is_ok()
            };
            if !taken {
                return Err(InvalidRecord::SymbolLimit {
                    symbol,
                    limit: budget.max_symbols,
                });
            }
            self.charged += 1;
        }
        self.held.insert(symbol);
        Ok(())
    }
}

impl Drop for HeldSymbols {
    fn drop(&mut self) {
        self.budget.taken.fetch_sub(self.charged, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn symbol(name: &str) -> Symbol {
        name.parse().expect("a valid symbol")
    }

    #[test]
    fn configured_symbols_are_free_and_new_ones_share_the_rest() {
        let topology = Topology::from_str(
            "symbols = [\"AUSDT\", \"BUSDT\"]\npin_symbols = false\nmax_symbols = 4",
        )
        .expect("valid");
        let budget = SymbolBudget::of(&topology).expect("unpinned");
        let mut first = HeldSymbols::new(Arc::clone(&budget));
        let mut second = HeldSymbols::new(Arc::clone(&budget));
        for configured in ["AUSDT", "BUSDT"] {
            assert_eq!(first.admit(symbol(configured), false), Ok(()));
            assert_eq!(second.admit(symbol(configured), false), Ok(()));
        }
        assert_eq!(first.admit(symbol("CUSDT"), false), Ok(()));
        assert_eq!(first.admit(symbol("CUSDT"), false), Ok(()), "held: free");
        assert_eq!(second.admit(symbol("DUSDT"), false), Ok(()));
        let refused = second.admit(symbol("EUSDT"), false).expect_err("over");
        assert_eq!(refused.code(), "symbol_limit");
        assert!(refused.to_string().contains("4 symbols"), "{refused}");
        // A closed task gives its symbols back.
        drop(first);
        assert_eq!(second.admit(symbol("EUSDT"), false), Ok(()));
        assert!(second.admit(symbol("GUSDT"), false).is_err());
        // Windows restored from the store are kept even beyond the budget, and count.
        assert_eq!(second.admit(symbol("FUSDT"), true), Ok(()));
        assert_eq!(budget.taken.load(Ordering::Acquire), 3);
        drop(second);
        assert_eq!(budget.taken.load(Ordering::Acquire), 0);
    }

    #[test]
    fn pinned_topologies_have_no_budget() {
        let topology = Topology::from_str("symbols = [\"AUSDT\"]").expect("valid");
        assert!(SymbolBudget::of(&topology).is_none());
    }
}
