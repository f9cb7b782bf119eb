//! The synthetic source: per symbol, a geometric Brownian motion with occasional jumps, seeded
//! so the same topology gives the same prices (tests, demos, benchmarks).
//!
//! Each tick goes to the next symbol in turn. A step multiplies the price by
//! `exp(σ·Z − σ²/2)` (Z standard normal; the `−σ²/2` keeps the expected price constant), and
//! with probability `jump_probability` then by `1 ± jump_size_pct / 100` (sign fair). Draw order
//! is fixed (normal, jump, sign), so prices depend only on the seed. `ts` is the wall clock when
//! a batch is made; `source` is `synthetic`.

use tickstream_model::topology::SyntheticSource;
use tickstream_model::{RawTick, Symbol};
use tokio::time::{Duration, Instant, sleep_until};

use crate::metrics::now_ms;
use crate::rng::SplitMix64;

/// The price walk, without any clock: `next_tick` is the whole model.
#[derive(Debug, Clone)]
pub struct PriceWalk {
    rng: SplitMix64,
    symbols: Vec<Symbol>,
    prices: Vec<f64>,
    next_symbol: usize,
    volatility: f64,
    jump_probability: f64,
    jump_fraction: f64,
}

impl PriceWalk {
    pub fn new(symbols: &[Symbol], config: &SyntheticSource) -> Self {
        Self {
            rng: SplitMix64::new(config.seed),
            prices: symbols
                .iter()
                .map(|s| config.initial_price(s.as_str()))
                .collect(),
            symbols: symbols.to_vec(),
            next_symbol: 0,
            volatility: config.volatility,
            jump_probability: config.jump_probability,
            jump_fraction: config.jump_size_pct / 100.0,
        }
    }

    /// The next symbol's next price.
    pub fn next_tick(&mut self) -> (Symbol, f64) {
        let i = self.next_symbol;
        self.next_symbol = (i + 1) % self.symbols.len();
        let sigma = self.volatility;
        let z = self.rng.next_normal();
        let mut price = self.prices[i] * (sigma * z - 0.5 * sigma * sigma).exp();
        if self.rng.next_f64() < self.jump_probability {
            let sign = if self.rng.next_f64() < 0.5 { -1.0 } else { 1.0 };
            price *= 1.0 + sign * self.jump_fraction;
        }
        // A price never reaches 0: a record with price <= 0 would be refused downstream.
        price = price.max(f64::MIN_POSITIVE);
        self.prices[i] = price;
        (self.symbols[i], price)
    }
}

/// Ticks from a [`PriceWalk`] at `ticks_per_second` (across all symbols).
pub struct SyntheticWalk {
    walk: PriceWalk,
    ticks_per_second: f64,
    max_batch: usize,
    started: Option<Instant>,
    emitted: u64,
}

impl SyntheticWalk {
    /// Ticks per batch at most: big enough to amortise per-batch work at benchmark rates, small
    /// enough that a batch is a few milliseconds of producing.
    pub const MAX_BATCH: usize = 10_000;

    pub fn new(symbols: &[Symbol], config: &SyntheticSource) -> Self {
        Self {
            walk: PriceWalk::new(symbols, config),
            ticks_per_second: config.ticks_per_second,
            max_batch: Self::MAX_BATCH,
            started: None,
            emitted: 0,
        }
    }

    /// The ticks due now (waiting for the first one if none is), at most
    /// [`Self::MAX_BATCH`].
    pub async fn next_batch(&mut self) -> Vec<RawTick> {
        let started = *self.started.get_or_insert_with(Instant::now);
        let mut due = self.due_by(started.elapsed());
        if due == 0 {
            let next_at =
                Duration::from_secs_f64((self.emitted + 1) as f64 / self.ticks_per_second);
            sleep_until(started + next_at).await;
            due = self.due_by(started.elapsed()).max(1);
        }
        self.generate(due.min(self.max_batch as u64) as usize, now_ms())
    }

    fn due_by(&self, elapsed: Duration) -> u64 {
        let total = (elapsed.as_secs_f64() * self.ticks_per_second).floor() as u64;
        total.saturating_sub(self.emitted)
    }

    /// The next `count` ticks stamped `ts`, regardless of pace.
    pub fn generate(&mut self, count: usize, ts: i64) -> Vec<RawTick> {
        self.emitted += count as u64;
        (0..count)
            .map(|_| {
                let (symbol, price) = self.walk.next_tick();
                RawTick::new(symbol, price)
                    .with_ts(ts)
                    .with_source("synthetic")
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn symbols() -> Vec<Symbol> {
        ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
            .iter()
            .map(|s| Symbol::new(s).expect("valid"))
            .collect()
    }

    fn config() -> SyntheticSource {
        let mut config = SyntheticSource {
            seed: 7,
            ..SyntheticSource::default()
        };
        config
            .initial_prices
            .insert(Symbol::new("BTCUSDT").expect("valid"), 67_000.0);
        config
    }

    #[test]
    fn same_seed_same_prices_other_seed_other_prices() {
        let mut a = PriceWalk::new(&symbols(), &config());
        let mut b = PriceWalk::new(&symbols(), &config());
        let mut c = PriceWalk::new(
            &symbols(),
            &SyntheticSource {
                seed: 8,
                ..config()
            },
        );
        let first: Vec<_> = (0..1000).map(|_| a.next_tick()).collect();
        let second: Vec<_> = (0..1000).map(|_| b.next_tick()).collect();
        let other: Vec<_> = (0..1000).map(|_| c.next_tick()).collect();
        assert_eq!(first, second);
        assert_ne!(first, other);
    }

    #[test]
    fn symbols_take_turns_and_start_near_their_initial_price() {
        let mut walk = PriceWalk::new(&symbols(), &config());
        let ticks: Vec<_> = (0..6).map(|_| walk.next_tick()).collect();
        let names: Vec<&str> = ticks.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "BTCUSDT", "ETHUSDT", "SOLUSDT", "BTCUSDT", "ETHUSDT", "SOLUSDT"
            ]
        );
        // 0.1 % volatility: the first step stays within 1 % (10 sigma) of the start.
        assert!((ticks[0].1 / 67_000.0 - 1.0).abs() < 0.01, "{}", ticks[0].1);
        assert!((ticks[1].1 / 100.0 - 1.0).abs() < 0.01, "{}", ticks[1].1);
    }

    #[test]
    fn returns_have_the_configured_volatility_and_jump_rate() {
        let config = SyntheticSource {
            volatility: 0.002,
            jump_probability: 0.01,
            jump_size_pct: 5.0,
            ..config()
        };
        let one = [Symbol::new("BTCUSDT").expect("valid")];
        let mut walk = PriceWalk::new(&one, &config);
        let mut previous = config.initial_price("BTCUSDT");
        let (mut jumps, mut small) = (0u32, Vec::new());
        let n = 100_000;
        for _ in 0..n {
            let (_, price) = walk.next_tick();
            let r = (price / previous).ln();
            if r.abs() > 0.03 {
                jumps += 1;
            } else {
                small.push(r);
            }
            previous = price;
        }
        let jump_rate = f64::from(jumps) / f64::from(n);
        assert!((jump_rate - 0.01).abs() < 0.002, "jump rate {jump_rate}");
        let mean = small.iter().sum::<f64>() / small.len() as f64;
        let sd =
            (small.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / small.len() as f64).sqrt();
        assert!((sd - 0.002).abs() < 0.0001, "per-tick volatility {sd}");
    }

    #[tokio::test(start_paused = true)]
    async fn batches_follow_the_configured_rate() {
        let config = SyntheticSource {
            ticks_per_second: 100.0,
            ..config()
        };
        let mut source = SyntheticWalk::new(&symbols(), &config);
        let start = Instant::now();
        let mut total = 0;
        while total < 250 {
            total += source.next_batch().await.len();
        }
        // 250 ticks at 100/s: 2.5 s of (paused, exact) time.
        assert_eq!(total, 250);
        let elapsed = start.elapsed().as_secs_f64();
        assert!((elapsed - 2.5).abs() < 0.001, "took {elapsed} s");
    }

    #[test]
    fn generated_ticks_are_valid_records() {
        let mut source = SyntheticWalk::new(&symbols(), &config());
        for tick in source.generate(300, 123) {
            assert!(tick.price.is_finite() && tick.price > 0.0);
            assert_eq!(tick.ts, Some(123));
            assert_eq!(tick.source.as_deref(), Some("synthetic"));
        }
    }
}
