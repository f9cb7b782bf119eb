//! The executable specification of enrich's outputs: every event recomputed from scratch
//! over the full price history, the slow and obvious way. Tests hold the processor (and the
//! whole pipeline on a real broker) to it.
//!
//! It assumes what it is given is valid and in event-time order per symbol (no late ticks):
//! rejection is tested separately.

use std::collections::HashMap;

use tickstream_model::topology::WindowConfig;
use tickstream_model::{
    Candle, DerivedEvent, EventKind, Jump, MovingAverage, Symbol, Topology, Volatility,
    WindowBounds,
};

/// One derived record: topic, key (the symbol) and the encoded event.
pub type DerivedRecord = (String, Symbol, Vec<u8>);

/// The events enrich must emit for `ticks` (`(symbol, price, event time)`), in order, once
/// every symbol has gone quiet (its last candles closed on idle).
pub fn recompute(topology: &Topology, ticks: &[(Symbol, f64, i64)]) -> Vec<DerivedRecord> {
    recompute_events(topology, ticks, true)
}

/// [`recompute`] without the candles only an idle close would emit (those still open after
/// the last tick): what enrich has emitted before its symbols have been quiet for
/// `close_idle_after`.
pub fn recompute_before_idle(
    topology: &Topology,
    ticks: &[(Symbol, f64, i64)],
) -> Vec<DerivedRecord> {
    recompute_events(topology, ticks, false)
}

fn recompute_events(
    topology: &Topology,
    ticks: &[(Symbol, f64, i64)],
    idle_closes: bool,
) -> Vec<DerivedRecord> {
    let mut history: HashMap<Symbol, Vec<(i64, f64)>> = HashMap::new();
    let mut out = Vec::new();
    let threshold = topology.jumps.threshold_pct / 100.0;
    for &(symbol, price, ts) in ticks {
        let seen = history.entry(symbol).or_default();
        let previous = seen.last().map(|(_, p)| *p);
        seen.push((ts, price));
        for window in &topology.windows {
            // What the window covers: a time window's span, a count window's oldest and newest.
            let bounds = match *window {
                WindowConfig::Count { size, .. } => {
                    let held = &seen[seen.len().saturating_sub(size as usize)..];
                    WindowBounds::Count {
                        first_ts: held[0].0,
                        last_ts: ts,
                    }
                }
                WindowConfig::Time { span, .. } => WindowBounds::Time {
                    start: (ts + 1 - span.as_millis() as i64).max(0),
                    end: ts + 1,
                },
            };
            let prices: Vec<f64> = match *window {
                WindowConfig::Count { size, .. } => seen
                    .iter()
                    .rev()
                    .take(size as usize)
                    .map(|(_, p)| *p)
                    .collect(),
                WindowConfig::Time { span, .. } => {
                    let span = span.as_millis() as i64;
                    seen.iter()
                        .filter(|(t, _)| *t > ts - span)
                        .map(|(_, p)| *p)
                        .collect()
                }
            };
            if prices.len() < window.min_count() as usize {
                continue;
            }
            let n = prices.len() as f64;
            let mean = prices.iter().sum::<f64>() / n;
            let variance = prices.iter().map(|p| (p - mean) * (p - mean)).sum::<f64>() / n;
            let moving_average = MovingAverage {
                symbol,
                ts,
                window: window.label(),
                mean,
                count: prices.len() as u64,
                min: prices.iter().copied().fold(f64::INFINITY, f64::min),
                max: prices.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                // The naive ticks carry no quantity.
                vwap: None,
                bounds: Some(bounds),
            };
            out.push(record(topology, &moving_average));
            let volatility = Volatility {
                symbol,
                ts,
                window: window.label(),
                stddev: variance.sqrt(),
                mean,
                count: prices.len() as u64,
                bounds: Some(bounds),
            };
            out.push(record(topology, &volatility));
        }
        if let Some(from) = previous {
            let change = (price - from) / from;
            if change.abs() > threshold {
                let jump = Jump {
                    symbol,
                    ts,
                    from,
                    to: price,
                    change_pct: change * 100.0,
                    threshold_pct: topology.jumps.threshold_pct,
                };
                out.push(record(topology, &jump));
            }
        }
    }
    out.extend(candles(topology, ticks, idle_closes));
    out
}

/// Every candle of `ticks`, per symbol in the order enrich emits them: as the symbol's event
/// time passes `end + grace` (intervals in configuration order, oldest first), then — the
/// symbol having gone quiet, with `idle_closes` — the rest.
fn candles(
    topology: &Topology,
    ticks: &[(Symbol, f64, i64)],
    idle_closes: bool,
) -> Vec<DerivedRecord> {
    let mut open: HashMap<(Symbol, usize), Vec<Candle>> = HashMap::new();
    let mut symbols: Vec<Symbol> = Vec::new();
    let mut out = Vec::new();
    for &(symbol, price, ts) in ticks {
        if !symbols.contains(&symbol) {
            symbols.push(symbol);
        }
        for (i, c) in topology.candles.iter().enumerate() {
            let interval = c.interval.as_millis() as i64;
            let start = ts.div_euclid(interval) * interval;
            let building = open.entry((symbol, i)).or_default();
            match building.last_mut() {
                Some(candle) if candle.start == start => {
                    candle.high = candle.high.max(price);
                    candle.low = candle.low.min(price);
                    candle.close = price;
                    candle.trades += 1;
                    candle.last_ts = ts;
                }
                _ => building.push(Candle {
                    symbol,
                    interval: c.label(),
                    start,
                    end: start + interval,
                    open: price,
                    high: price,
                    low: price,
                    close: price,
                    trades: 1,
                    volume: None,
                    vwap: None,
                    first_ts: ts,
                    last_ts: ts,
                }),
            }
            let grace = c.grace.as_millis() as i64;
            let closed = building.iter().take_while(|k| k.end + grace <= ts).count();
            for candle in building.drain(..closed) {
                out.push(record(topology, &candle));
            }
        }
    }
    if !idle_closes {
        return out;
    }
    for symbol in symbols {
        for i in 0..topology.candles.len() {
            for candle in open.remove(&(symbol, i)).unwrap_or_default() {
                out.push(record(topology, &candle));
            }
        }
    }
    out
}

fn record<E: DerivedEvent>(topology: &Topology, event: &E) -> DerivedRecord {
    (
        topology.topic(E::KIND).to_owned(),
        event.symbol(),
        event.encode(),
    )
}

/// Whether `actual` is `expected` event for event: same topic, key, symbol, time, window and
/// counts; statistics within 1e-9 relative; jumps exact. The error names the first difference.
pub fn compare(
    topology: &Topology,
    actual: &[DerivedRecord],
    expected: &[DerivedRecord],
) -> Result<(), String> {
    if actual.len() != expected.len() {
        return Err(format!(
            "{} events, the recomputation has {}",
            actual.len(),
            expected.len()
        ));
    }
    for (i, (got, want)) in actual.iter().zip(expected).enumerate() {
        let differs = |what: &str| {
            Err(format!(
                "event {i} differs in {what}:\n  got  {} {}\n  want {} {}",
                got.0,
                String::from_utf8_lossy(&got.2),
                want.0,
                String::from_utf8_lossy(&want.2)
            ))
        };
        if got.0 != want.0 || got.1 != want.1 {
            return differs("topic or key");
        }
        let equal = if got.0 == topology.topic(EventKind::MovingAverage) {
            match (
                MovingAverage::decode(&got.2),
                MovingAverage::decode(&want.2),
            ) {
                (Ok(g), Ok(w)) => {
                    (
                        g.symbol, g.ts, &g.window, g.count, g.min, g.max, g.bounds, g.vwap,
                    ) == (
                        w.symbol, w.ts, &w.window, w.count, w.min, w.max, w.bounds, w.vwap,
                    ) && close(g.mean, w.mean, w.mean)
                }
                _ => false,
            }
        } else if got.0 == topology.topic(EventKind::Volatility) {
            match (Volatility::decode(&got.2), Volatility::decode(&want.2)) {
                (Ok(g), Ok(w)) => {
                    (g.symbol, g.ts, &g.window, g.count, g.bounds)
                        == (w.symbol, w.ts, &w.window, w.count, w.bounds)
                        && close(g.stddev, w.stddev, w.mean)
                        && close(g.mean, w.mean, w.mean)
                }
                _ => false,
            }
        } else if got.0 == topology.topic(EventKind::Candle) {
            match (Candle::decode(&got.2), Candle::decode(&want.2)) {
                (Ok(g), Ok(w)) => {
                    (&g.interval, g.start, g.end, g.trades, g.first_ts, g.last_ts)
                        == (&w.interval, w.start, w.end, w.trades, w.first_ts, w.last_ts)
                        && (g.open, g.high, g.low, g.close) == (w.open, w.high, w.low, w.close)
                        && (g.volume, g.vwap) == (w.volume, w.vwap)
                }
                _ => false,
            }
        } else {
            got.2 == want.2
        };
        if !equal {
            return differs("content");
        }
    }
    Ok(())
}

/// Within 1e-9 relative. A deviation near 0 is compared at the price `scale` instead (1e-12
/// of it): the naive sum leaves rounding noise where the windows report a flat stretch's 0.
fn close(actual: f64, expected: f64, scale: f64) -> bool {
    (actual - expected).abs() <= 1e-9 * expected.abs().max(1e-12 * scale.abs())
}

/// `n` symbols named `C00000USDT`, `C00001USDT`, …
pub fn sample_symbols(n: usize) -> Vec<Symbol> {
    (0..n)
        .map(|i| {
            format!("C{i:05}USDT")
                .parse()
                .expect("C, five digits and USDT make a valid symbol")
        })
        .collect()
}

/// `n` ticks over `symbols` (`(symbol, price, event time)`): a seeded geometric random walk
/// per symbol (0.1 % steps, a 3 % jump one tick in a hundred), prices from 0.01 to 10,000,
/// event times 1–400 ms apart, in event-time order. Same seed, same ticks.
pub fn random_walk(symbols: &[Symbol], n: usize, seed: u64) -> Vec<(Symbol, f64, i64)> {
    // xorshift64: tiny, seedable, and plenty random for test data.
    let mut state = seed | 1;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut prices: Vec<f64> = (0..symbols.len())
        .map(|i| 10f64.powi(i as i32 % 7 - 2))
        .collect();
    let mut ts = 1_700_000_000_000i64;
    (0..n)
        .map(|_| {
            let i = (uniform() * symbols.len() as f64) as usize % symbols.len();
            let step = if uniform() < 0.01 { 0.03 } else { 0.001 };
            let sign = if uniform() < 0.5 { -1.0 } else { 1.0 };
            prices[i] *= 1.0 + sign * step * (0.5 + uniform());
            ts += 1 + (uniform() * 400.0) as i64;
            (symbols[i], prices[i], ts)
        })
        .collect()
}
