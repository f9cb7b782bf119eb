//! One task's enrich processor: raw tick in, analytics out.

use std::collections::HashMap;
use std::sync::Arc;

use tickstream_model::{
    Candle, DecodeOptions, DerivedEvent, EventKind, InvalidRecord, Jump, MovingAverage, Symbol,
    Volatility, WindowBounds,
};
use tickstream_streams::{
    ProcessError, Processor, ProcessorContext, PunctuationType, Record, Rejection, StoreError,
};
use tickstream_window::{Bounds, ClosedCandles, Stats, SymbolWindows, Tick};

use crate::budget::HeldSymbols;
use crate::idle::IdleCandles;
use crate::metrics::SymbolGauges;
use crate::state::SymbolState;
use crate::{Enrich, STORE_NAME};

/// Turns each raw tick into derived events; see the crate documentation.
pub struct EnrichProcessor {
    enrich: Enrich,
    decode: DecodeOptions,
    moving_average_topic: String,
    volatility_topic: String,
    jumps_topic: String,
    candles_topic: String,
    /// With `[[candles]]`: when each symbol's open candles close if it stays quiet.
    idle: Option<IdleCandles>,
    /// Candles closed by the current tick or punctuation, reused.
    candles: Vec<Candle>,
    /// Window labels, in configuration order.
    labels: Box<[String]>,
    /// This tick's statistics per window (`None`: not ready), reused across ticks.
    readings: Vec<Option<Reading>>,
    /// Encoding buffer, reused across events.
    buffer: Vec<u8>,
    gauges: HashMap<Symbol, SymbolGauges>,
    /// With `pin_symbols = false`: the symbols this task keeps windows for, against
    /// `max_symbols`.
    held: Option<HeldSymbols>,
    /// The last record [`Processor::state_key`] decoded, so `process` of the same record
    /// does not decode it again.
    decoded: Option<Decoded>,
    /// The topic of `decoded`'s record (a buffer reused across records: no allocation).
    decoded_topic: String,
}

/// A decoded tick and where it came from (with `decoded_topic`: a forwarded record comes back
/// from the repartition topic at another topic's partition and offset).
struct Decoded {
    partition: i32,
    offset: i64,
    symbol: Symbol,
    price: f64,
    qty: Option<f64>,
    ts: i64,
}

fn reject(invalid: InvalidRecord) -> Rejection {
    Rejection::new(invalid.code(), invalid.to_string())
}

impl EnrichProcessor {
    pub(crate) fn new(enrich: Enrich) -> Self {
        let topology = &enrich.topology;
        let labels: Box<[String]> = enrich
            .windows
            .windows()
            .iter()
            .map(|spec| spec.label().to_owned())
            .collect();
        Self {
            decode: topology.decode_options(),
            moving_average_topic: topology.topic(EventKind::MovingAverage).to_owned(),
            volatility_topic: topology.topic(EventKind::Volatility).to_owned(),
            jumps_topic: topology.topic(EventKind::Jump).to_owned(),
            candles_topic: topology.topic(EventKind::Candle).to_owned(),
            idle: IdleCandles::of(&enrich.windows),
            candles: Vec::new(),
            readings: Vec::with_capacity(labels.len()),
            labels,
            buffer: Vec::with_capacity(256),
            gauges: HashMap::new(),
            held: enrich.symbols.clone().map(HeldSymbols::new),
            decoded: None,
            decoded_topic: String::new(),
            enrich,
        }
    }

    fn emit<E: DerivedEvent>(
        buffer: &mut Vec<u8>,
        ctx: &mut ProcessorContext<'_, SymbolState>,
        topic: &str,
        event: &E,
    ) {
        buffer.clear();
        event.encode_into(buffer);
        ctx.send(topic, Some(event.symbol().as_str().as_bytes()), buffer);
    }

    /// Decodes a raw tick (full or reference format) and its event time. A record keyed by
    /// another symbol than its body names is refused (`key_mismatch`): one of the two is
    /// wrong, and trusting either could put the tick in the wrong window — or reorder the
    /// symbol's ticks, since records keyed by their symbol skip the repartition hop. Keys that
    /// are no symbol at all (none, a UUID, …) are fine: the body decides.
    fn decode(&self, record: &Record<'_>) -> Result<Decoded, Rejection> {
        let tick = self
            .decode
            .decode(record.value.unwrap_or_default())
            .map_err(reject)?;
        if let Some(key) = record
            .key
            .filter(|k| *k != tick.symbol.as_str().as_bytes())
            .and_then(|k| std::str::from_utf8(k).ok())
            // A number ("12345", a message id) is no symbol, even if it would parse as one.
            .filter(|k| k.bytes().any(|b| b.is_ascii_uppercase()))
            .and_then(|k| Symbol::new(k).ok())
            && key != tick.symbol
        {
            return Err(Rejection::new(
                "key_mismatch",
                format!(
                    "the record's key names {key} but its value names {}: fix the producer's key \
                     (or send no key)",
                    tick.symbol
                ),
            ));
        }
        let ts = tick.event_time(record.timestamp).map_err(reject)?;
        Ok(Decoded {
            partition: record.partition,
            offset: record.offset,
            symbol: tick.symbol,
            price: tick.price,
            qty: tick.qty,
            ts,
        })
    }

    fn update_gauges(&mut self, symbol: Symbol, price: f64, jumped: bool) {
        let Some(metrics) = &self.enrich.metrics else {
            return;
        };
        let labels = &self.labels;
        let gauges = self.gauges.entry(symbol).or_insert_with(|| {
            let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
            metrics.for_symbol(symbol.as_str(), &labels)
        });
        gauges.last_price.set(price);
        for (i, reading) in self.readings.iter().enumerate() {
            if let Some(Reading { stats, .. }) = reading {
                gauges.moving_average[i].set(stats.mean);
                gauges.volatility[i].set(stats.std_dev);
            }
        }
        if jumped {
            gauges.jumps.inc();
        }
    }
}

impl Processor for EnrichProcessor {
    type State = SymbolState;

    /// A tick's state lives under its symbol — the one in the value, whatever the record's
    /// key says: a record keyed by another symbol (or by anything else) is repartitioned by
    /// the symbol of its body. Records that cannot be decoded are refused here, at the source.
    fn state_key(&mut self, record: &Record<'_>, key: &mut Vec<u8>) -> Result<(), Rejection> {
        let decoded = self.decode(record)?;
        key.clear();
        key.extend_from_slice(decoded.symbol.as_str().as_bytes());
        self.decoded = Some(decoded);
        self.decoded_topic.clear();
        self.decoded_topic.push_str(record.topic);
        Ok(())
    }

    fn process(
        &mut self,
        record: &Record<'_>,
        ctx: &mut ProcessorContext<'_, SymbolState>,
    ) -> Result<(), ProcessError> {
        // The symbol comes from the value, not the key: the reference producer's records
        // carry it there, and a key that disagrees must not split a symbol's state.
        let decoded = match self.decoded.take() {
            Some(d)
                if d.partition == record.partition
                    && d.offset == record.offset
                    && self.decoded_topic == record.topic =>
            {
                d
            }
            _ => self.decode(record)?,
        };
        let (symbol, ts) = (decoded.symbol, decoded.ts);
        let tick = decoded;
        let key = symbol.as_str().as_bytes();

        let config = &self.enrich.windows;
        // Unpinned symbols: a new one only within max_symbols (one set lookup per tick).
        if let Some(held) = &mut self.held
            && !held.holds(symbol)
        {
            let stored = ctx.store().get(key)?.is_some();
            held.admit(symbol, stored).map_err(reject)?;
        }
        let state = match ctx.store().get_mut(key)? {
            Some(state) => state,
            None => {
                let fresh = SymbolState::Live(SymbolWindows::new(Arc::clone(config)));
                ctx.store().put(key, fresh)?;
                ctx.store()
                    .get_mut(key)?
                    .expect("the state was put just above")
            }
        };
        let windows = state.live(config, STORE_NAME, key)?;
        // Idle closes measure arrivals by the wall clock; without candles nothing reads it.
        let arrived_ms = match &self.idle {
            Some(_) => tickstream_model::clock::now_ms(),
            None => ts,
        };
        let update = windows
            .update_at(Tick::new(ts, tick.price).with_qty(tick.qty), arrived_ms)
            .map_err(|rejection| Rejection::new(rejection.code(), rejection.to_string()))?;
        self.readings.clear();
        self.readings.extend(update.readings().map(|reading| {
            reading.stats.map(|stats| Reading {
                stats,
                bounds: reading.bounds.map(window_bounds),
                vwap: reading.vwap,
            })
        }));
        let jump = update.jump();
        collect_candles(symbol, update.candles(), &mut self.candles);
        if let Some(idle) = &mut self.idle {
            idle.track(symbol, windows);
        }

        for (i, reading) in self.readings.iter().enumerate() {
            let Some(Reading {
                stats,
                bounds,
                vwap,
            }) = *reading
            else {
                continue;
            };
            let window = &self.labels[i];
            let moving_average = MovingAverage {
                symbol,
                ts,
                window: window.clone(),
                mean: stats.mean,
                count: stats.count as u64,
                min: stats.min,
                max: stats.max,
                vwap,
                bounds,
            };
            Self::emit(
                &mut self.buffer,
                ctx,
                &self.moving_average_topic,
                &moving_average,
            );
            let volatility = Volatility {
                symbol,
                ts,
                window: window.clone(),
                stddev: stats.std_dev,
                mean: stats.mean,
                count: stats.count as u64,
                bounds,
            };
            Self::emit(&mut self.buffer, ctx, &self.volatility_topic, &volatility);
        }
        if let Some(jump) = jump {
            let event = Jump {
                symbol,
                ts,
                from: jump.from,
                to: jump.to,
                change_pct: jump.change_pct,
                threshold_pct: jump.threshold_pct,
            };
            Self::emit(&mut self.buffer, ctx, &self.jumps_topic, &event);
        }
        self.emit_candles(ctx, ClosedBy::EventTime);
        self.update_gauges(symbol, tick.price, jump.is_some());
        Ok(())
    }

    /// With candles: often enough to close a quiet symbol's candles within a tenth of their
    /// idle delay (at most a second late).
    fn punctuation(&self) -> Option<(PunctuationType, std::time::Duration)> {
        let idle = self.idle.as_ref()?;
        Some((PunctuationType::WallClock, idle.check_every()))
    }

    /// Closes and emits the candles of the symbols that have been quiet for their
    /// `close_idle_after`.
    fn punctuate(
        &mut self,
        now_ms: i64,
        ctx: &mut ProcessorContext<'_, SymbolState>,
    ) -> Result<(), StoreError> {
        self.close_quiet(now_ms, ctx, ClosedBy::Idle)
    }

    /// A bounded input (a replay in process) ended: every open candle is final now.
    fn end_of_input(
        &mut self,
        ctx: &mut ProcessorContext<'_, SymbolState>,
    ) -> Result<(), StoreError> {
        self.close_quiet(i64::MAX, ctx, ClosedBy::EndOfInput)
    }

    /// Candles wait a whole `close_idle_after` from here: the outage held ticks back.
    fn input_resumed(&mut self, now_ms: i64) {
        if let Some(idle) = &mut self.idle {
            idle.resume_at(now_ms);
        }
    }

    fn rolled_back(&mut self) {
        if let Some(idle) = &mut self.idle {
            idle.forget();
        }
    }
}

/// One window's reading after a tick, copied out of the state (so the events can be
/// emitted while the store is borrowed).
#[derive(Debug, Clone, Copy)]
struct Reading {
    stats: Stats,
    bounds: Option<WindowBounds>,
    vwap: Option<f64>,
}

/// A window's bounds as events carry them. Event times are never negative, so neither is
/// the start of a time window's span (it is cut at the epoch).
pub(crate) fn window_bounds(bounds: Bounds) -> WindowBounds {
    match bounds {
        Bounds::Time { start, end } => WindowBounds::Time {
            start: start.max(0),
            end,
        },
        Bounds::Count { first_ts, last_ts } => WindowBounds::Count { first_ts, last_ts },
    }
}

/// `closed` as the events enrich emits, appended to `out`.
fn collect_candles(symbol: Symbol, closed: ClosedCandles<'_>, out: &mut Vec<Candle>) {
    out.extend(closed.map(|(spec, c)| Candle {
        symbol,
        interval: spec.label().to_owned(),
        start: c.start,
        end: c.end,
        open: c.open,
        high: c.high,
        low: c.low,
        close: c.close,
        trades: c.trades,
        volume: c.volume,
        vwap: c.vwap,
        first_ts: c.first_ts,
        last_ts: c.last_ts,
    }));
}

/// What closed a candle, for `tickstream_enrich_candles_total{closed_by}`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ClosedBy {
    /// The symbol's event time passed `end + grace`.
    EventTime,
    /// No tick of the symbol arrived for `close_idle_after`.
    Idle,
    /// The (bounded, in-process) input ended.
    EndOfInput,
}

impl ClosedBy {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::EventTime => "event_time",
            Self::Idle => "idle",
            Self::EndOfInput => "end_of_input",
        }
    }
}

impl EnrichProcessor {
    /// Emits (and drains) [`Self::candles`].
    fn emit_candles(&mut self, ctx: &mut ProcessorContext<'_, SymbolState>, closed_by: ClosedBy) {
        for candle in self.candles.drain(..) {
            Self::emit(&mut self.buffer, ctx, &self.candles_topic, &candle);
            if let Some(metrics) = &self.enrich.metrics {
                metrics.candle_closed(&candle.interval, closed_by);
            }
        }
    }

    /// Closes and emits the candles of the symbols whose idle deadline has come by `now_ms`
    /// (`i64::MAX`: every open candle).
    fn close_quiet(
        &mut self,
        now_ms: i64,
        ctx: &mut ProcessorContext<'_, SymbolState>,
        closed_by: ClosedBy,
    ) -> Result<(), StoreError> {
        let Some(idle) = &mut self.idle else {
            return Ok(());
        };
        let config = &self.enrich.windows;
        idle.sweep_once(ctx.store(), config)?;
        // At the end of the input nothing more comes: no idle clock to wait for.
        let since = match closed_by {
            ClosedBy::EndOfInput => i64::MIN,
            _ => idle.resumed_ms(),
        };
        for symbol in idle.due(now_ms) {
            let key = symbol.as_str().as_bytes();
            let Some(state) = ctx.store().get_mut(key)? else {
                continue;
            };
            let windows = state.live(config, STORE_NAME, key)?;
            collect_candles(symbol, windows.close_idle(now_ms, since), &mut self.candles);
            idle.track(symbol, windows);
        }
        self.emit_candles(ctx, closed_by);
        Ok(())
    }
}
