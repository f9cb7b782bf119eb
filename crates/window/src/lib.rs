//! Exact, O(1), restorable per-symbol sliding-window analytics for price ticks: the heart of
//! tickstream's `enrich` step, as a pure library (no I/O, no Kafka).
//!
//! For each symbol, a [`SymbolWindows`] keeps several windows at once — count windows (the
//! last N ticks, arrival order) and time windows (event time in the last D milliseconds) —
//! and after every tick reports, per window, the count, the mean (moving average), the
//! population standard deviation (volatility), min and max, the event times it covers
//! ([`Bounds`]) and, when ticks carry a traded quantity, its VWAP; plus a [`Jump`] when the
//! price moved by more than a threshold (default 2 %) since the symbol's previous tick.
//!
//! * **Exact**: results stay within ~1e-12 relative of a recomputation over the window, for
//!   any stream length, prices from 1e-8 to 1e6 and beyond, and tiny spreads at high levels;
//!   a flat window has variance exactly 0 and mean exactly its price (see
//!   [Exactness](#exactness)).
//! * **Fast**: O(1) amortised per tick and window, whatever N or D; no allocation per tick
//!   once the windows have reached their working size.
//! * **Event time**: ticks up to [`Config::allowed_lateness_ms`] behind the symbol's newest
//!   event time are folded in at their place; older ones, and invalid prices, are rejected
//!   with a [`Rejection`] for the dead-letter topic and change nothing.
//! * **Candles**: [`CandleSeries`] builds tumbling event-time OHLCV candles (with volume and
//!   VWAP when ticks carry a quantity) of one interval, each reported once when event time
//!   passes its end plus a grace period, or when its symbol has been quiet for a while by the
//!   wall clock (the rules are on [`CandleSeries`]); O(1) per tick, exact, restorable.
//! * **Restorable**: [`SymbolWindows::snapshot`] gives compact, versioned bytes that carry the
//!   configuration's fingerprint; [`SymbolWindows::restore`] continues bit-identically.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use tickstream_window::{Config, JumpSpec, SymbolWindows, Tick, WindowSpec};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Arc::new(
//!     Config::new([
//!         WindowSpec::count(3)?,           // last 3 ticks, reported once full
//!         WindowSpec::time_ms(60_000)?,    // last minute of event time, from 2 ticks on
//!     ])?
//!     .with_jump(JumpSpec::new(0.02)?)     // 2 %
//!     .with_allowed_lateness_ms(1_000)?,
//! );
//! let mut btc = SymbolWindows::new(Arc::clone(&config));
//!
//! btc.update(Tick::new(1_000, 100.0))?;
//! btc.update(Tick::new(2_000, 101.0))?;
//! let update = btc.update(Tick::new(3_000, 105.0))?;
//!
//! let jump = update.jump().expect("101 -> 105 is a 3.96 % jump");
//! assert!((jump.change_pct - 3.960396).abs() < 1e-6);
//! for reading in update.readings() {
//!     let stats = reading.stats.expect("both windows hold 3 ticks");
//!     println!("{}: mean {} volatility {}", reading.label(), stats.mean, stats.std_dev);
//!     assert_eq!(stats.mean, 102.0);
//!     assert_eq!((stats.min, stats.max), (100.0, 105.0));
//! }
//!
//! // Late beyond the allowed lateness, or a bad price: rejected with a reason, no effect.
//! let late = btc.update(Tick::new(1_500, 99.0)).unwrap_err();
//! assert_eq!(late.code(), "late_tick");
//! assert!(btc.update(Tick::new(3_000, f64::NAN)).is_err());
//!
//! // Persist and carry on elsewhere, bit for bit.
//! let bytes = btc.snapshot();
//! let mut restored = SymbolWindows::restore(Arc::clone(&config), &bytes)?;
//! let a = btc.update(Tick::new(4_000, 104.0))?.reading(0).and_then(|r| r.stats);
//! let b = restored.update(Tick::new(4_000, 104.0))?.reading(0).and_then(|r| r.stats);
//! assert_eq!(a, b);
//! # Ok(())
//! # }
//! ```

//!
//! # Semantics
//!
//! * **Rejections.** A tick is rejected, and changes nothing at all (no window, not the jump
//!   reference, not the newest event time), if its price is NaN or infinite, zero or
//!   negative, or outside [`MIN_PRICE`]`..=`[`MAX_PRICE`] (1e-100..=1e100), or if its event
//!   time `ts` is older than `newest_ts - allowed_lateness_ms`, where `newest_ts` is the
//!   largest event time accepted for the symbol. [`Rejection::code`] names the reason for a
//!   dead-letter header. The default lateness is 5 s; 0 accepts equal event times only.
//! * **Count windows** hold the last N accepted ticks in arrival order; a late tick counts
//!   like any other. They report from `min_count` ticks on (default: when full).
//! * **Time windows** hold the accepted ticks with `ts` in `(newest_ts - D, newest_ts]`,
//!   ordered by event time. A late tick (within lateness) is inserted at its place; if it is
//!   at or before the window's start it is left out of that window only. They report from
//!   `min_count` ticks on (default 2: one tick has no dispersion to speak of), also before D
//!   has elapsed since the symbol's first tick. Event time is per symbol: a window moves
//!   only when its symbol ticks.
//! * **Jumps** compare each accepted tick with the previous accepted one (arrival order,
//!   whatever the time between them): `(p_t - p_{t-1}) / p_{t-1}`, reported when its
//!   absolute value is strictly above the threshold, sign kept, in percent.
//!
//! # Cost
//!
//! Per tick and window: O(1) amortised for in-order ticks, whatever N or D. Count windows
//! have no data-dependent branches (min/max by van Herk / Gil-Werman blocks); time windows
//! use monotonic deques for min/max. A late tick costs O(k) for the k entries newer than it
//! in each time window. Memory: a count window owns 24 bytes of heap per tick it holds (price
//! and block extremes per slot), so 24·N once full; its ring grows by doubling while it fills,
//! so a large N costs nothing until that many ticks came. One symbol with a single N = 20
//! window takes 656 bytes in all.
//! A time window owns 16 bytes per tick plus its min/max deques.
//!
//! # Exactness
//!
//! Sums of `x` and `x²` drift when values are added and later subtracted, and their
//! difference cancels catastrophically when the spread is tiny next to the level (1e6 ± 1e-4).
//! Each window instead keeps compensated (TwoSum) sums of deviations `d = x - K` from a
//! double-word shift `K ≈` the window mean, so `var = Σd²/n - (Σd/n)²` barely cancels, and
//! removing a tick subtracts exactly the terms that adding it added. An O(n) rebuild from the
//! window contents re-centres `K` and clears the rounding residue: after every max(n, 1024)
//! removals (amortised O(1)), when `Σd²` has collapsed below 2^-30 of its peak since the last
//! rebuild (a volatile stretch left), or when the mean has moved more than 64 standard
//! deviations from `K`. The last two cost a rebuild only when the window's spread collapses
//! by orders of magnitude, at most a few times per window length even for adversarial
//! streams. Together they bound the relative error of the variance by ~(4 + 4·2^12)·2^-53
//! ≈ 2e-12 (std dev half that) and of the mean by a few ε, ~1e-12 at worst for a large window
//! with a far outlier. Flat windows (min == max) report variance exactly 0 and mean exactly
//! the price. The tests check all of this against a double-double two-pass recomputation,
//! over 10 million ticks in release (`drift_ten_million_ticks`): worst errors ~1e-12.
//!
//! # Snapshot format, version 2
//!
//! Little-endian; varints are LEB128 (at most 10 bytes). Version 1 (still read) differs only
//! in its count windows: prices without event times, and no volume sections.
//!
//! ```text
//! magic        2 bytes  "TW"
//! version      u8       2
//! fingerprint  u64      Config::fingerprint() of the configuration the state was built under
//! seen         u8       0: no tick accepted yet (the snapshot ends here), 1: state follows
//! newest_ts    i64      largest accepted event time
//! last_price   f64      last accepted price (jump reference)
//! per window, in configuration order:
//!   sums       7 × f64  shift (2 words), Σd and Σd² (2 words each), peak of Σd², as bits
//!   removed    varint   removals since the last rebuild
//!   len        varint   ticks in the window
//!   count window: len × (varint newest_ts - ts + 1, 0 if not known; f64 price), oldest first
//!   time window:  len × (varint ts-delta, f64 price), oldest first; the first delta is
//!                 newest_ts - ts, the others ts - previous ts (so all are >= 0)
//!   volume     u8       0: the window keeps no quantities; 1: it does, and then
//!     with_qty varint   ticks held that carry a quantity
//!     sums     4 × f64  Σ qty and Σ price·qty, each as sum and compensation, as bits
//!     removals varint   since the sums were last recomputed
//!     qtys     len × f64 each tick's quantity, oldest first (NaN: none)
//! per candle interval, in configuration order (nothing without candles):
//!   len        varint   bytes of the series that follow
//!   series     len bytes a CandleSeries snapshot: "TC", version 1, the interval's own
//!                       fingerprint, watermark, closed-before, last arrival, open candles
//! ```
//!
//! One symbol with a single N = 20 window (no quantities) takes 286-287 bytes. Min/max helpers are not
//! stored (they are a function of the contents); the sums are stored bit for bit, which is
//! what makes a restored state continue bit-identically. Decoding never panics, allocates at
//! most in proportion to the input, and names what is wrong ([`SnapshotError`]); a snapshot
//! taken under another configuration (windows, min counts, jump threshold or lateness) is
//! refused with [`SnapshotError::ConfigMismatch`].

//!
//! # Change format, version 2
//!
//! What changed since the last commit ([`SymbolWindows::changes_into`]), applied on top of the
//! last snapshot and the changes after it ([`SymbolWindows::apply_changes`]): a commit writes
//! the sums and the new ticks instead of every window's contents.
//!
//! ```text
//! magic        2 bytes  "TD"
//! version      u8       2 (1, still read: count-window prices without event times, no volume)
//! fingerprint  u64      as in a snapshot
//! newest_ts    i64      largest accepted event time
//! last_price   f64      last accepted price
//! per window, in configuration order:
//!   sums       7 × f64 + varint, as in a snapshot
//!   count window: new varint, then the window's `new` newest ticks, oldest first, coded as
//!                 in a snapshot
//!   time window:  evicted varint (oldest entries gone), new varint, then the `new` entries
//!                 that arrived at the newest end, coded as in a snapshot
//!   volume     as in a snapshot, with the quantities of the `new` ticks only
//! per candle interval: the series whole, as in a snapshot (a few open candles, ~120 bytes)
//! ```
//!
//! A late tick placed among entries already committed cannot be written as a change; a
//! whole snapshot is written then. One symbol with a 20-tick count window and a 5-minute time
//! window that received one tick since the last commit takes about 160 bytes of changes,
//! against about 300 bytes plus 9 per tick in the time window for a snapshot.

#![warn(missing_docs)]

mod candle;
mod changes;
mod count;
mod jump;
mod moments;
mod snapshot;
mod spec;
mod symbol;
mod tick;
mod time;
mod volume;

pub use candle::{Candle, CandleSeries, CandleSpec};
pub use changes::CHANGES_VERSION;
pub use jump::Jump;
pub use moments::Stats;
pub use snapshot::{SNAPSHOT_VERSION, SUPPORTED_SNAPSHOT_VERSIONS, SnapshotError};
pub use spec::{Config, ConfigError, JumpSpec, WindowKind, WindowSpec};
pub use symbol::{Bounds, ClosedCandles, Readings, SymbolWindows, Update, WindowReading};
pub use tick::{MAX_PRICE, MIN_PRICE, Rejection, Tick};
