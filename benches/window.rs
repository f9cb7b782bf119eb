//! Window analytics benchmarks (issue 3): one tick's update plus reading every window's
//! statistics, for N = 20, N = 10,000 and a 5-minute time window at 100 ticks/s; snapshot and
//! restore; a commit's change record after one tick (issue 16); one tick into a candle
//! interval (issue 14); and (printed before the runs) the
//! memory of one symbol's state, its snapshot and its change record.
//!
//! Run: `cargo bench --bench window`. Results and machine: BENCHMARKS.md.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion};
use tickstream_window::{CandleSeries, CandleSpec, Config, SymbolWindows, Tick, WindowSpec};

/// Length of the (cyclic) price sequence fed to the windows; a power of two.
const PRICES: usize = 1 << 16;

/// A deterministic random walk around 30,000 with ~0.1 % steps (xorshift64*).
fn random_walk() -> Vec<f64> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut price = 30_000.0;
    (0..PRICES)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let unit =
                (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64;
            price *= 1.0 + (unit - 0.5) * 0.002;
            price
        })
        .collect()
}

/// A symbol's state with jump detection at the default 2 %, and the ticks to feed it:
/// `step_ms` apart, prices from `random_walk`.
struct Feed {
    state: SymbolWindows,
    prices: Vec<f64>,
    next: usize,
    ts: i64,
    step_ms: i64,
    /// Whether the ticks carry a traded quantity (the windows then keep a VWAP).
    with_qty: bool,
}

impl Feed {
    /// A state with `specs`, fed `warm` ticks so that every window is at its working size.
    fn new(specs: impl IntoIterator<Item = WindowSpec>, warm: usize, step_ms: i64) -> Self {
        Self::with_config(Config::new(specs).expect("valid config"), warm, step_ms)
    }

    fn with_config(config: Config, warm: usize, step_ms: i64) -> Self {
        let config = Arc::new(config);
        let mut feed = Self {
            state: SymbolWindows::new(config),
            prices: random_walk(),
            next: 0,
            ts: 0,
            step_ms,
            with_qty: false,
        };
        for _ in 0..warm {
            feed.tick();
        }
        feed
    }

    /// One update plus every window's statistics; returns something derived from all of it.
    #[inline]
    fn tick(&mut self) -> f64 {
        self.ts += self.step_ms;
        let price = self.prices[self.next & (PRICES - 1)];
        self.next += 1;
        let qty = self.with_qty.then_some((self.next & 7) as f64 * 0.125);
        let update = self
            .state
            .update(Tick::new(self.ts, price).with_qty(qty))
            .expect("valid tick");
        let mut acc = update.jump().map_or(0.0, |j| j.change_pct);
        for reading in update.readings() {
            if let Some(s) = reading.stats {
                acc += s.mean + s.std_dev + s.min + s.max + s.count as f64;
            }
            acc += reading.vwap.unwrap_or(0.0);
        }
        acc
    }

    /// The same feed with a quantity on every tick, warmed up again.
    fn with_quantities(mut self, warm: usize) -> Self {
        self.with_qty = true;
        for _ in 0..warm {
            self.tick();
        }
        self
    }
}

fn count(size: u32) -> WindowSpec {
    WindowSpec::count(size).expect("valid window")
}

fn five_minutes() -> WindowSpec {
    WindowSpec::time_ms(5 * 60 * 1_000).expect("valid window")
}

/// The three windows of the acceptance criteria, each alone and at its working size, and
/// a plausible enrich configuration with three windows at once.
fn feeds() -> [(&'static str, Feed); 7] {
    [
        ("count_20", Feed::new([count(20)], 1_000, 10)),
        ("count_10000", Feed::new([count(10_000)], 20_000, 10)),
        // 100 ticks/s = 10 ms apart; 5 min holds 30,000 ticks.
        ("time_5m_100hz", Feed::new([five_minutes()], 60_000, 10)),
        (
            "count_20+time_1m+time_5m_100hz",
            Feed::new(
                [
                    count(20),
                    WindowSpec::time_ms(60_000).expect("valid window"),
                    five_minutes(),
                ],
                60_000,
                10,
            ),
        ),
        // Ticks with a traded quantity (Binance trades): the windows keep a VWAP (issue 14).
        (
            "count_20_with_qty",
            Feed::new([count(20)], 1_000, 10).with_quantities(1_000),
        ),
        (
            "time_5m_100hz_with_qty",
            Feed::new([five_minutes()], 60_000, 10).with_quantities(60_000),
        ),
        // The default topology's count window with candles of 1 minute and 1 hour (issue 14):
        // what building candles adds to a tick through the symbol's state.
        (
            "count_20+candles_1m_1h",
            Feed::with_config(
                Config::new([count(20)])
                    .expect("valid config")
                    .with_candles([
                        CandleSpec::new(60_000, 5_000).expect("valid"),
                        CandleSpec::new(3_600_000, 5_000).expect("valid"),
                    ])
                    .expect("distinct intervals"),
                1_000,
                10,
            ),
        ),
    ]
}

fn update_and_stats(c: &mut Criterion) {
    let mut group = c.benchmark_group("update_stats");
    for (name, mut feed) in feeds() {
        group.bench_function(name, |b| b.iter(|| black_box(feed.tick())));
    }
    group.finish();
}

fn snapshot_and_restore(c: &mut Criterion) {
    let mut group = c.benchmark_group("snapshot");
    for (name, feed) in feeds() {
        let mut buf = Vec::new();
        group.bench_function(name, |b| {
            b.iter(|| {
                feed.state.snapshot_into(&mut buf);
                black_box(buf.len())
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("restore");
    for (name, feed) in feeds() {
        let bytes = feed.state.snapshot();
        let config = Arc::clone(feed.state.config());
        group.bench_function(name, |b| {
            b.iter_batched(
                || Arc::clone(&config),
                |config| SymbolWindows::restore(config, black_box(&bytes)).expect("valid snapshot"),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// What a commit writes for a symbol that received one tick since the last one: its change
/// record (`changes_into`), against the whole snapshot a commit wrote before issue 16.
fn changes(c: &mut Criterion) {
    let mut group = c.benchmark_group("changes_one_tick");
    for (name, mut feed) in feeds() {
        feed.state.mark_committed();
        feed.tick();
        let mut buf = Vec::new();
        group.bench_function(name, |b| {
            b.iter(|| {
                buf.clear();
                black_box(feed.state.changes_into(&mut buf));
                black_box(buf.len())
            })
        });
    }
    group.finish();
}

/// One tick into one candle interval (1m, 5 s grace) at 100 ticks/s with quantities: the
/// candles closing every 6,000 ticks are in the amortised figure (issue 14).
fn candle(c: &mut Criterion) {
    let prices = random_walk();
    let spec = CandleSpec::new(60_000, 5_000).expect("a valid spec");
    let mut series = CandleSeries::new(spec);
    let mut closed = Vec::new();
    let (mut i, mut ts) = (0usize, 1_700_000_000_000_i64);
    c.bench_function("candle_one_tick/1m", |b| {
        b.iter(|| {
            i = (i + 1) & (PRICES - 1);
            ts += 10;
            let result = series.update(ts, prices[i], Some(0.5), ts, &mut closed);
            closed.clear();
            black_box(result)
        })
    });
}

/// Memory of one symbol's state and what a commit writes for it, printed with the results
/// (not a timing).
fn report_memory() {
    for (name, mut feed) in feeds() {
        feed.state.mark_committed();
        feed.tick();
        let mut changes = Vec::new();
        feed.state.changes_into(&mut changes);
        println!(
            "memory/{name}: {} bytes per symbol in memory, {} bytes snapshotted, {} bytes of \
             changes after one tick",
            feed.state.memory_bytes(),
            feed.state.snapshot().len(),
            changes.len()
        );
    }
}

fn main() {
    report_memory();
    let mut c = Criterion::default().configure_from_args();
    update_and_stats(&mut c);
    snapshot_and_restore(&mut c);
    changes(&mut c);
    candle(&mut c);
    c.final_summary();
}
