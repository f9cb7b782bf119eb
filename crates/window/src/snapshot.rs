//! Versioned binary snapshots of a symbol's state. The format is documented in the crate
//! docs ("Snapshot format"); keep them in step with `snapshot_into` and `restore`.
//!
//! Min/max helpers are not stored: they are a function of the window contents and are rebuilt
//! on restore. The sums are stored bit for bit, so a restored state produces the same bits as
//! the original would have (recomputing them would round differently).

use std::sync::Arc;

use crate::candle::CandleSeries;
use crate::count::{CountWindow, UNKNOWN_TS};
use crate::moments::Moments;
use crate::spec::{Config, WindowKind};
use crate::symbol::{Last, SymbolWindows, Window};
use crate::tick::Rejection;
use crate::time::{Entry, TimeWindow};
use crate::volume::{Sum, Volume, qty_of, stored_qty};

const MAGIC: [u8; 2] = *b"TW";
/// The version this build writes: 2, count windows with their ticks' event times.
pub const SNAPSHOT_VERSION: u8 = 2;
/// The versions this build reads (1: count windows without event times).
pub const SUPPORTED_SNAPSHOT_VERSIONS: &[u8] = &[1, 2];

/// Why a snapshot could not be restored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The bytes end before the snapshot does.
    #[error("snapshot truncated: {needed} more byte(s) needed at offset {offset}")]
    Truncated {
        /// Where reading stopped.
        offset: usize,
        /// How many bytes were missing there.
        needed: usize,
    },
    /// Not a window snapshot at all.
    #[error("not a window snapshot: expected magic bytes \"TW\", found {found:02x?}")]
    BadMagic {
        /// The first two bytes.
        found: [u8; 2],
    },
    /// Written by a newer (or unknown) format version.
    #[error("unknown snapshot version {found}; this build reads version(s) {supported:?}")]
    UnknownVersion {
        /// The version byte found.
        found: u8,
        /// The versions this build reads.
        supported: &'static [u8],
    },
    /// Built under another window configuration.
    #[error(
        "snapshot was built under another window configuration (fingerprint {snapshot:#018x}, \
         this instance runs {current:#018x}): windows, min counts, jump threshold or lateness \
         changed; rebuild the state from the input topic"
    )]
    ConfigMismatch {
        /// Fingerprint stored in the snapshot.
        snapshot: u64,
        /// Fingerprint of the configuration restored under.
        current: u64,
    },
    /// A field holds a value the format does not allow.
    #[error("corrupt snapshot: {field} at offset {offset}: {reason}")]
    Corrupt {
        /// Which field.
        field: &'static str,
        /// Where it starts.
        offset: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Bytes follow the end of the snapshot.
    #[error("snapshot has {extra} unexpected trailing byte(s)")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
}

impl SymbolWindows {
    /// The state as compact, versioned bytes (format: see the crate docs).
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.snapshot_into(&mut out);
        out
    }

    /// Like [`Self::snapshot`], into a reusable buffer: `out` is cleared first.
    pub fn snapshot_into(&self, out: &mut Vec<u8>) {
        out.clear();
        put_header(out, MAGIC, SNAPSHOT_VERSION, self.config().fingerprint());
        let Some(last) = self.last else {
            out.push(0);
            return;
        };
        out.push(1);
        out.extend_from_slice(&last.newest_ts.to_le_bytes());
        out.extend_from_slice(&last.price.to_le_bytes());
        for w in self.windows.iter() {
            match w {
                Window::Count(w) => {
                    put_moments(out, &w.moments);
                    put_varint(out, w.len() as u64);
                    out.reserve(w.len() * 10);
                    put_count_ticks(out, last.newest_ts, w.ticks().map(|(t, p, _)| (t, p)));
                    let qtys = w.ticks().map(|(_, _, q)| q);
                    put_volume(out, w.keeps_quantities(), &w.volume, qtys);
                }
                Window::Time(w) => {
                    put_moments(out, &w.moments);
                    put_varint(out, w.len() as u64);
                    put_time_entries(out, last.newest_ts, w.entries());
                    put_volume(out, w.keeps_quantities(), &w.volume, w.qtys());
                }
            }
        }
        put_candles(out, self.candle_series());
    }

    /// Restores a state from [`Self::snapshot`] bytes under `config`, which must be the
    /// configuration the snapshot was taken under (same [`Config::fingerprint`]). Feeding
    /// the restored state the following ticks gives bit-identical results to never having
    /// stopped.
    pub fn restore(config: Arc<Config>, bytes: &[u8]) -> Result<Self, SnapshotError> {
        let mut r = Reader { bytes, pos: 0 };
        let version = r.header(MAGIC, SUPPORTED_SNAPSHOT_VERSIONS, config.fingerprint())?;
        let at = r.pos;
        let state = match r.u8()? {
            0 => None,
            1 => Some(()),
            _ => return Err(r.corrupt("seen flag", at, "must be 0 or 1")),
        };
        let Some(()) = state else {
            r.finish()?;
            return Ok(Self::new(config));
        };
        let newest_ts = r.u64()? as i64;
        let at = r.pos;
        let price = r.f64()?;
        if Rejection::check_price(price).is_some() {
            return Err(r.corrupt("last_price", at, "not a valid price"));
        }
        let last = Last { newest_ts, price };
        let mut windows = Vec::with_capacity(config.windows().len());
        for spec in config.windows() {
            let moments = r.moments()?;
            let at = r.pos;
            let len = r.varint()?;
            let window = match spec.kind() {
                WindowKind::Count { size } => {
                    if len > u64::from(size) {
                        return Err(r.corrupt(
                            "count window length",
                            at,
                            "exceeds the window size",
                        ));
                    }
                    r.need(len as usize * 8)?;
                    let ticks = (0..len)
                        .map(|_| r.count_tick(version, newest_ts))
                        .collect::<Result<Vec<_>, _>>()?;
                    let volume = r.volume(version, ticks.len(), ticks.len())?;
                    let mut window = CountWindow::new(size);
                    restore_count_ticks(&mut window, ticks, volume);
                    window.moments = moments;
                    Window::Count(window)
                }
                WindowKind::Time { span_ms } => {
                    let mut entries = Vec::new();
                    let window = (newest_ts, span_ms);
                    r.time_entries(len, window, &mut entries, "outside the window")?;
                    let held = entries.len();
                    let (qtys, volume) = match r.volume(version, held, held)? {
                        Some((qtys, volume)) => (Some(qtys), volume),
                        None => (None, Volume::default()),
                    };
                    Window::Time(Box::new(TimeWindow::restore(
                        span_ms, entries, qtys, moments, volume,
                    )))
                }
            };
            windows.push(window);
        }
        let candles = r.candles(&config)?;
        r.finish()?;
        Ok(Self::from_parts(
            config,
            windows.into_boxed_slice(),
            candles,
            Some(last),
        ))
    }
}

/// The start of a snapshot or a change record: magic bytes, format version, configuration
/// fingerprint.
pub(crate) fn put_header(out: &mut Vec<u8>, magic: [u8; 2], version: u8, fingerprint: u64) {
    out.extend_from_slice(&magic);
    out.push(version);
    out.extend_from_slice(&fingerprint.to_le_bytes());
}

/// Time-window entries, oldest first, as both formats code them: per entry a varint distance
/// — the first back from `newest_ts`, the others forward from the entry before — and the price.
pub(crate) fn put_time_entries(
    out: &mut Vec<u8>,
    newest_ts: i64,
    entries: impl Iterator<Item = Entry>,
) {
    let mut prev = newest_ts;
    for (i, e) in entries.enumerate() {
        let delta = if i == 0 {
            prev.abs_diff(e.ts)
        } else {
            e.ts.abs_diff(prev)
        };
        put_varint(out, delta);
        out.extend_from_slice(&e.price.to_le_bytes());
        prev = e.ts;
    }
}

/// Each candle series as a length-prefixed [`CandleSeries::snapshot_into`]: nothing at all
/// without candles, so states of configurations without them keep their format.
pub(crate) fn put_candles(out: &mut Vec<u8>, candles: &[CandleSeries]) {
    let mut series = Vec::new();
    for c in candles {
        series.clear();
        c.snapshot_into(&mut series);
        put_varint(out, series.len() as u64);
        out.extend_from_slice(&series);
    }
}

/// A window's volume (version 2), after its ticks: `0`, it keeps no quantities; or `1`, the
/// volume (ticks with a quantity as a varint, Σ qty and Σ price·qty as 2 × f64 each, removals
/// since the last recompute as a varint) and the quantity of every tick just written, oldest
/// first (f64, NaN for none).
pub(crate) fn put_volume(
    out: &mut Vec<u8>,
    keeps: bool,
    volume: &Volume,
    qtys: impl Iterator<Item = Option<f64>>,
) {
    if !keeps {
        out.push(0);
        return;
    }
    out.push(1);
    put_varint(out, volume.with_qty);
    for v in [
        volume.qty.sum,
        volume.qty.compensation,
        volume.notional.sum,
        volume.notional.compensation,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    put_varint(out, volume.removals);
    for q in qtys {
        out.extend_from_slice(&stored_qty(q).to_le_bytes());
    }
}

/// A count window restored from its ticks and, if it kept them, their quantities and volume.
pub(crate) fn restore_count_ticks(
    window: &mut CountWindow,
    ticks: Vec<(i64, f64)>,
    volume: Option<(Vec<f64>, Volume)>,
) {
    match volume {
        None => ticks
            .into_iter()
            .for_each(|(ts, p)| window.restore_tick(ts, p, None)),
        Some((qtys, volume)) => {
            window.keep_quantities();
            for ((ts, p), q) in ticks.into_iter().zip(qtys) {
                window.restore_tick(ts, p, qty_of(q));
            }
            window.volume = volume;
        }
    }
}

/// Count-window ticks (version 2): per tick `varint(newest_ts - ts + 1)` (0: event time not
/// known, a tick restored from version 1) and the price.
pub(crate) fn put_count_ticks(
    out: &mut Vec<u8>,
    newest_ts: i64,
    ticks: impl Iterator<Item = (i64, f64)>,
) {
    for (ts, price) in ticks {
        let behind = i128::from(newest_ts) - i128::from(ts) + 1;
        let code = match ts {
            UNKNOWN_TS => 0,
            _ => u64::try_from(behind).unwrap_or(0),
        };
        put_varint(out, code);
        out.extend_from_slice(&price.to_le_bytes());
    }
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn put_moments(out: &mut Vec<u8>, m: &Moments) {
    for v in [m.kh, m.kl, m.s1, m.c1, m.s2, m.c2, m.peak2] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    put_varint(out, m.removed);
}

pub(crate) struct Reader<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) pos: usize,
}

impl Reader<'_> {
    pub(crate) fn corrupt(
        &self,
        field: &'static str,
        offset: usize,
        reason: &'static str,
    ) -> SnapshotError {
        SnapshotError::Corrupt {
            field,
            offset,
            reason,
        }
    }

    /// Fails unless `n` more bytes are available.
    pub(crate) fn need(&self, n: usize) -> Result<(), SnapshotError> {
        let left = self.bytes.len() - self.pos;
        if n > left {
            Err(SnapshotError::Truncated {
                offset: self.pos,
                needed: n - left,
            })
        } else {
            Ok(())
        }
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        self.need(N)?;
        let mut a = [0; N];
        a.copy_from_slice(&self.bytes[self.pos..self.pos + N]);
        self.pos += N;
        Ok(a)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.take::<1>()?[0])
    }

    pub(crate) fn u64(&mut self) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(self.take()?))
    }

    pub(crate) fn i64(&mut self) -> Result<i64, SnapshotError> {
        Ok(i64::from_le_bytes(self.take()?))
    }

    pub(crate) fn f64(&mut self) -> Result<f64, SnapshotError> {
        Ok(f64::from_le_bytes(self.take()?))
    }

    pub(crate) fn price(&mut self) -> Result<f64, SnapshotError> {
        let at = self.pos;
        let p = self.f64()?;
        if Rejection::check_price(p).is_some() {
            return Err(self.corrupt("price", at, "not a valid price"));
        }
        Ok(p)
    }

    pub(crate) fn varint(&mut self) -> Result<u64, SnapshotError> {
        let at = self.pos;
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                break;
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.corrupt("varint", at, "longer than 64 bits"))
    }

    pub(crate) fn moments(&mut self) -> Result<Moments, SnapshotError> {
        let at = self.pos;
        let m = Moments {
            kh: self.f64()?,
            kl: self.f64()?,
            s1: self.f64()?,
            c1: self.f64()?,
            s2: self.f64()?,
            c2: self.f64()?,
            peak2: self.f64()?,
            removed: 0,
            rebuilds: 0,
        };
        if !m.is_finite() {
            return Err(self.corrupt("window moments", at, "not finite"));
        }
        Ok(Moments {
            removed: self.varint()?,
            ..m
        })
    }

    /// Checks what [`put_header`] wrote: these magic bytes, a version among `supported`, and
    /// the configuration's fingerprint.
    pub(crate) fn header(
        &mut self,
        magic: [u8; 2],
        supported: &'static [u8],
        fingerprint: u64,
    ) -> Result<u8, SnapshotError> {
        let found = [self.u8()?, self.u8()?];
        if found != magic {
            return Err(SnapshotError::BadMagic { found });
        }
        let version = self.u8()?;
        if !supported.contains(&version) {
            return Err(SnapshotError::UnknownVersion {
                found: version,
                supported,
            });
        }
        let stored = self.u64()?;
        if stored != fingerprint {
            return Err(SnapshotError::ConfigMismatch {
                snapshot: stored,
                current: fingerprint,
            });
        }
        Ok(version)
    }

    /// Reads `count` entries written by [`put_time_entries`] onto `entries`. Each must lie in
    /// the window `(newest_ts - span_ms, newest_ts]` of `window = (newest_ts, span_ms)` and be
    /// no older than the entry before it; `reason` names what is wrong otherwise.
    pub(crate) fn time_entries(
        &mut self,
        count: u64,
        (newest_ts, span_ms): (i64, i64),
        entries: &mut Vec<Entry>,
        reason: &'static str,
    ) -> Result<(), SnapshotError> {
        // Each entry takes at least 9 bytes: bound the allocation by the input.
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        self.need(count.saturating_mul(9))?;
        let start = i128::from(newest_ts) - i128::from(span_ms);
        entries.reserve(count);
        let mut prev = newest_ts;
        for i in 0..count {
            let at = self.pos;
            let delta = self.varint()?;
            let ts = if i == 0 {
                newest_ts.checked_sub_unsigned(delta)
            } else {
                prev.checked_add_unsigned(delta)
            };
            let in_order = |ts: i64| entries.last().is_none_or(|e| e.ts <= ts);
            let ts = match ts {
                Some(ts) if i128::from(ts) > start && ts <= newest_ts && in_order(ts) => ts,
                _ => return Err(self.corrupt("time window event time", at, reason)),
            };
            entries.push(Entry {
                ts,
                price: self.price()?,
            });
            prev = ts;
        }
        Ok(())
    }

    /// What [`put_volume`] wrote after `n` ticks (nothing in version 1): the quantities and the
    /// volume, if the window kept them; the window then holds `held` ticks.
    pub(crate) fn volume(
        &mut self,
        version: u8,
        n: usize,
        held: usize,
    ) -> Result<Option<(Vec<f64>, Volume)>, SnapshotError> {
        if version < 2 {
            return Ok(None);
        }
        let at = self.pos;
        match self.u8()? {
            0 => return Ok(None),
            1 => {}
            _ => return Err(self.corrupt("volume flag", at, "must be 0 or 1")),
        }
        let with_qty = self.varint()?;
        let at = self.pos;
        let [qs, qc, ns, nc] = [self.f64()?, self.f64()?, self.f64()?, self.f64()?];
        if ![qs, qc, ns, nc].iter().all(|v| v.is_finite()) || with_qty > held as u64 {
            return Err(self.corrupt("volume", at, "not finite, or more ticks than held"));
        }
        let removals = self.varint()?;
        self.need(n.saturating_mul(8))?;
        let mut qtys = Vec::with_capacity(n);
        for _ in 0..n {
            let at = self.pos;
            let q = self.f64()?;
            if !(q.is_nan() || (q.is_finite() && q >= 0.0)) {
                return Err(self.corrupt("quantity", at, "not a finite number >= 0"));
            }
            qtys.push(q);
        }
        let volume = Volume {
            with_qty,
            qty: Sum {
                sum: qs,
                compensation: qc,
            },
            notional: Sum {
                sum: ns,
                compensation: nc,
            },
            removals,
        };
        Ok(Some((qtys, volume)))
    }

    /// One count-window tick: its event time (version 2; [`UNKNOWN_TS`] in version 1 or
    /// when the writer did not know it) and price.
    pub(crate) fn count_tick(
        &mut self,
        version: u8,
        newest_ts: i64,
    ) -> Result<(i64, f64), SnapshotError> {
        let ts = if version >= 2 {
            let at = self.pos;
            match self.varint()? {
                0 => UNKNOWN_TS,
                code => i64::try_from(i128::from(newest_ts) - i128::from(code) + 1)
                    .map_err(|_| self.corrupt("count window event time", at, "out of range"))?,
            }
        } else {
            UNKNOWN_TS
        };
        Ok((ts, self.price()?))
    }

    /// The candle series [`put_candles`] wrote, one per interval of `config`.
    pub(crate) fn candles(
        &mut self,
        config: &Config,
    ) -> Result<Box<[CandleSeries]>, SnapshotError> {
        let mut candles = Vec::with_capacity(config.candles().len());
        for spec in config.candles() {
            let at = self.pos;
            let len = usize::try_from(self.varint()?)
                .map_err(|_| self.corrupt("candle series", at, "too long"))?;
            self.need(len)?;
            let bytes = &self.bytes[self.pos..self.pos + len];
            // Its errors name offsets within the series' bytes.
            let series = CandleSeries::restore(spec.clone(), bytes)?;
            self.pos += len;
            candles.push(series);
        }
        Ok(candles.into_boxed_slice())
    }

    pub(crate) fn finish(&self) -> Result<(), SnapshotError> {
        match self.bytes.len() - self.pos {
            0 => Ok(()),
            extra => Err(SnapshotError::TrailingBytes { extra }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        for v in [
            0,
            1,
            127,
            128,
            300,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            let mut r = Reader {
                bytes: &out,
                pos: 0,
            };
            assert_eq!(r.varint(), Ok(v));
            assert!(r.finish().is_ok());
        }
        let overlong = [0xff; 10];
        let mut r = Reader {
            bytes: &overlong,
            pos: 0,
        };
        assert!(matches!(
            r.varint(),
            Err(SnapshotError::Corrupt {
                field: "varint",
                ..
            })
        ));
        let mut r = Reader {
            bytes: &[0x80, 0x80],
            pos: 0,
        };
        assert!(matches!(
            r.varint(),
            Err(SnapshotError::Truncated {
                offset: 2,
                needed: 1
            })
        ));
    }
}
