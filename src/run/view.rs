//! The live view of `tickstream run`: per symbol the latest price and each window's moving
//! average and volatility, then the latest candle per symbol and interval (with
//! `[[candles]]`), then the most recent jumps. Pure: it is fed events and renders
//! text; the caller decides where it goes (a redrawn screen, or plain lines for a log).

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;

use tickstream_model::{Candle, Jump, MovingAverage, RawTick, Symbol, Volatility};

/// How many jumps the view keeps.
const RECENT_JUMPS: usize = 8;

#[derive(Debug, Default, Clone)]
struct Row {
    price: Option<f64>,
    ticks: u64,
    /// Per window label: (moving average, volatility).
    windows: BTreeMap<String, (Option<f64>, Option<f64>)>,
}

/// What the view shows, updated as events arrive.
#[derive(Debug)]
pub struct LiveView {
    /// Says where the prices come from; shown on every screen.
    source: String,
    windows: Vec<String>,
    rows: BTreeMap<Symbol, Row>,
    jumps: VecDeque<Jump>,
    /// Jumps not yet reported by [`Self::lines`].
    unreported_jumps: Vec<Jump>,
    /// The latest closed candle per symbol and interval.
    candles: BTreeMap<(Symbol, String), Candle>,
    /// Candles not yet reported by [`Self::lines`].
    unreported_candles: Vec<Candle>,
    dead_letters: u64,
    events: u64,
}

impl LiveView {
    pub fn new(source: String, windows: Vec<String>, symbols: &[Symbol]) -> Self {
        Self {
            source,
            windows,
            rows: symbols.iter().map(|s| (*s, Row::default())).collect(),
            jumps: VecDeque::with_capacity(RECENT_JUMPS),
            unreported_jumps: Vec::new(),
            candles: BTreeMap::new(),
            unreported_candles: Vec::new(),
            dead_letters: 0,
            events: 0,
        }
    }

    pub fn on_tick(&mut self, tick: &RawTick) {
        let row = self.rows.entry(tick.symbol).or_default();
        row.price = Some(tick.price);
        row.ticks += 1;
    }

    pub fn on_moving_average(&mut self, event: &MovingAverage) {
        self.events += 1;
        let row = self.rows.entry(event.symbol).or_default();
        row.windows.entry(event.window.clone()).or_default().0 = Some(event.mean);
    }

    pub fn on_volatility(&mut self, event: &Volatility) {
        self.events += 1;
        let row = self.rows.entry(event.symbol).or_default();
        row.windows.entry(event.window.clone()).or_default().1 = Some(event.stddev);
    }

    pub fn on_jump(&mut self, event: Jump) {
        self.events += 1;
        if self.jumps.len() == RECENT_JUMPS {
            self.jumps.pop_back();
        }
        self.jumps.push_front(event.clone());
        self.unreported_jumps.push(event);
    }

    pub fn on_candle(&mut self, candle: Candle) {
        self.events += 1;
        let key = (candle.symbol, candle.interval.clone());
        let newer = self
            .candles
            .get(&key)
            .is_none_or(|shown| shown.start < candle.start);
        if newer {
            self.candles.insert(key, candle.clone());
        }
        self.unreported_candles.push(candle);
    }

    pub fn on_dead_letter(&mut self) {
        self.dead_letters += 1;
    }

    /// The whole screen: a header naming the source, a table, the recent jumps.
    pub fn screen(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "tickstream run — {}", self.source);
        let ticks: u64 = self.rows.values().map(|r| r.ticks).sum();
        let _ = writeln!(
            out,
            "{ticks} ticks, {} analytics events, {} dead letters   (Ctrl-C to stop)\n",
            self.events, self.dead_letters
        );
        let _ = write!(out, "{:<12} {:>14}", "SYMBOL", "PRICE");
        for window in &self.windows {
            let _ = write!(out, " {:>16} {:>12}", format!("MA {window}"), "VOLATILITY");
        }
        out.push('\n');
        for (symbol, row) in &self.rows {
            let _ = write!(out, "{:<12} {:>14}", symbol.as_str(), number(row.price));
            for window in &self.windows {
                let (ma, vol) = row.windows.get(window).copied().unwrap_or_default();
                let _ = write!(out, " {:>16} {:>12}", number(ma), number(vol));
            }
            out.push('\n');
        }
        if !self.candles.is_empty() {
            out.push_str("\nLATEST CANDLES\n");
            for candle in self.candles.values() {
                let _ = writeln!(out, "  {}", candle_line(candle));
            }
        }
        out.push_str("\nRECENT JUMPS\n");
        if self.jumps.is_empty() {
            out.push_str("  none yet\n");
        }
        for jump in &self.jumps {
            let _ = writeln!(out, "  {}", jump_line(jump));
        }
        out
    }

    /// One plain line per symbol, then the jumps since the last call, for logs.
    pub fn lines(&mut self) -> Vec<String> {
        let jumps = self
            .unreported_jumps
            .drain(..)
            .map(|jump| format!("JUMP {}", jump_line(&jump)));
        let candles = self
            .unreported_candles
            .drain(..)
            .map(|candle| format!("CANDLE {}", candle_line(&candle)));
        self.rows
            .iter()
            .filter(|(_, row)| row.price.is_some())
            .map(|(symbol, row)| {
                let mut line = format!("{} price={}", symbol.as_str(), number(row.price));
                for window in &self.windows {
                    let (ma, vol) = row.windows.get(window).copied().unwrap_or_default();
                    let _ = write!(
                        line,
                        " ma[{window}]={} vol[{window}]={}",
                        number(ma),
                        number(vol)
                    );
                }
                line
            })
            .chain(candles)
            .chain(jumps)
            .collect()
    }
}

/// A candle as one line:
/// `BTCUSDT 1m start 1723161240000 O 61000.5 H 61010.0 L 60990.3 C 61001.0 trades 42 volume 1.25000 vwap 61000.8`.
pub fn candle_line(c: &Candle) -> String {
    let mut line = format!(
        "{} {} start {} O {} H {} L {} C {} trades {}",
        c.symbol.as_str(),
        c.interval,
        c.start,
        number(Some(c.open)),
        number(Some(c.high)),
        number(Some(c.low)),
        number(Some(c.close)),
        c.trades
    );
    if let (Some(volume), Some(vwap)) = (c.volume, c.vwap) {
        let _ = write!(
            line,
            " volume {} vwap {}",
            number(Some(volume)),
            number(Some(vwap))
        );
    }
    line
}

/// A jump as one line: `SOLUSDT 150.2 → 154.91 (+3.14 %) at <ts>`.
pub fn jump_line(jump: &Jump) -> String {
    format!(
        "{} {} → {} ({:+.2} %) at ts {}",
        jump.symbol.as_str(),
        number(Some(jump.from)),
        number(Some(jump.to)),
        jump.change_pct,
        jump.ts
    )
}

/// Prices span 1e-8 to 1e6: six significant digits whatever the magnitude.
fn number(value: Option<f64>) -> String {
    match value {
        None => "—".to_owned(),
        Some(0.0) => "0".to_owned(),
        Some(v) => {
            let digits = (5 - v.abs().log10().floor() as i32).clamp(0, 10) as usize;
            format!("{v:.digits$}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn symbol(s: &str) -> Symbol {
        s.parse().expect("valid")
    }

    #[test]
    fn shows_the_source_latest_values_per_window_and_recent_jumps_first() {
        let btc = symbol("BTCUSDT");
        let mut view = LiveView::new(
            "synthetic prices (not live)".into(),
            vec!["count:20".into()],
            &[btc, symbol("ETHUSDT")],
        );
        view.on_tick(&RawTick::new(btc, 67_000.5));
        view.on_moving_average(&MovingAverage {
            symbol: btc,
            ts: 1,
            window: "count:20".into(),
            mean: 66_990.25,
            count: 20,
            min: 66_000.0,
            max: 67_100.0,
            vwap: None,
            bounds: None,
        });
        view.on_volatility(&Volatility {
            symbol: btc,
            ts: 1,
            window: "count:20".into(),
            stddev: 12.5,
            mean: 66_990.25,
            count: 20,
            bounds: None,
        });
        for (i, to) in [70_000.0, 71_500.0].into_iter().enumerate() {
            view.on_jump(Jump {
                symbol: btc,
                ts: i as i64,
                from: 67_000.5,
                to,
                change_pct: (to - 67_000.5) / 67_000.5 * 100.0,
                threshold_pct: 2.0,
            });
        }
        let screen = view.screen();
        assert!(
            screen.starts_with("tickstream run — synthetic prices (not live)"),
            "{screen}"
        );
        assert!(
            screen.contains("1 ticks, 4 analytics events, 0 dead letters"),
            "{screen}"
        );
        let btc_row = screen
            .lines()
            .find(|l| l.starts_with("BTCUSDT"))
            .expect("a BTC row");
        assert!(
            btc_row.contains("67000.5")
                && btc_row.contains("66990.2")
                && btc_row.contains("12.5000"),
            "{btc_row}"
        );
        let eth_row = screen
            .lines()
            .find(|l| l.starts_with("ETHUSDT"))
            .expect("an ETH row");
        assert_eq!(eth_row.matches('—').count(), 3, "no values yet: {eth_row}");
        let first_jump = screen
            .lines()
            .skip_while(|l| *l != "RECENT JUMPS")
            .nth(1)
            .expect("a jump");
        assert!(
            first_jump.contains("71500.0") && first_jump.contains("+6.72 %"),
            "newest first: {first_jump}"
        );
        let lines = view.lines();
        assert_eq!(
            lines[0],
            "BTCUSDT price=67000.5 ma[count:20]=66990.2 vol[count:20]=12.5000"
        );
        assert!(
            lines[1].starts_with("JUMP BTCUSDT 67000.5 → 70000.0"),
            "{lines:?}"
        );
        assert_eq!(lines.len(), 3, "one symbol with a price, two jumps");
        assert_eq!(view.lines().len(), 1, "jumps are reported once");
    }

    #[test]
    fn the_latest_candle_per_symbol_and_interval_is_shown_and_each_new_one_logged_once() {
        let btc = symbol("BTCUSDT");
        let mut view = LiveView::new("replay".into(), vec!["count:20".into()], &[btc]);
        let candle = |start: i64, close: f64| Candle {
            symbol: btc,
            interval: "1m".into(),
            start,
            end: start + 60_000,
            open: 100.0,
            high: 101.0,
            low: 99.5,
            close,
            trades: 7,
            volume: Some(1.5),
            vwap: Some(100.25),
            first_ts: start + 1,
            last_ts: start + 59_000,
        };
        view.on_candle(candle(120_000, 100.5));
        // A candle of an earlier minute arriving later does not replace the newer one.
        view.on_candle(candle(60_000, 99.75));
        let screen = view.screen();
        let shown: Vec<&str> = screen
            .lines()
            .skip_while(|l| *l != "LATEST CANDLES")
            .skip(1)
            .take_while(|l| !l.is_empty())
            .collect();
        assert_eq!(shown.len(), 1, "{screen}");
        assert!(
            shown[0].contains("BTCUSDT 1m start 120000")
                && shown[0].contains("C 100.500")
                && shown[0].contains("vwap 100.250"),
            "{}",
            shown[0]
        );
        let logged: Vec<String> = view
            .lines()
            .into_iter()
            .filter(|l| l.starts_with("CANDLE"))
            .collect();
        assert_eq!(logged.len(), 2, "each candle once: {logged:?}");
        assert!(view.lines().iter().all(|l| !l.starts_with("CANDLE")));
    }

    #[test]
    fn numbers_keep_six_significant_digits_at_any_magnitude() {
        assert_eq!(number(Some(67_000.5)), "67000.5");
        assert_eq!(number(Some(0.000_012_345_67)), "0.0000123457");
        assert_eq!(number(Some(150.0)), "150.000");
        assert_eq!(number(None), "—");
    }
}
