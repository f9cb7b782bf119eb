//! The change log of a symbol's state: what changed since the last commit, as bytes a restore
//! applies on top of the last snapshot — so a commit writes a few ticks and the sums instead
//! of every window's contents. The format is documented in the crate docs ("Change format").
//!
//! What a change record can say: the newest event time and last price, every window's sums
//! (bit for bit, as in a snapshot), the newest prices of each count window, and for each time
//! window how many of its oldest entries left and which entries arrived at its newest end.
//! A late tick that went in among entries an earlier commit had already written cannot be
//! said that way: [`SymbolWindows::changes_into`] then answers `false`, and the caller writes
//! a whole snapshot instead.

use crate::count::CountWindow;
use crate::snapshot::{
    Reader, SnapshotError, put_candles, put_count_ticks, put_header, put_moments, put_time_entries,
    put_varint, put_volume,
};
use crate::spec::WindowKind;
use crate::symbol::{Last, SymbolWindows, Window};
use crate::tick::Rejection;
use crate::time::{Entry, TimeWindow};
use crate::volume::{Volume, qty_of, stored_qty};

const MAGIC: [u8; 2] = *b"TD";
/// The change format this build writes: 2, count-window ticks with their event times.
pub const CHANGES_VERSION: u8 = 2;
/// The change formats this build reads (1: count-window prices without event times).
const SUPPORTED_CHANGES_VERSIONS: &[u8] = &[1, 2];

impl SymbolWindows {
    /// Appends what changed since the last [`Self::mark_committed`] (or restore) to `out`
    /// and returns `true`; or leaves `out` as it was and returns `false` when only a whole
    /// [`Self::snapshot`] can express it (a late tick placed among already-committed entries
    /// of a time window, or no tick accepted at all).
    pub fn changes_into(&self, out: &mut Vec<u8>) -> bool {
        let start = out.len();
        let Some(last) = self.last else {
            return false;
        };
        put_header(out, MAGIC, CHANGES_VERSION, self.config().fingerprint());
        out.extend_from_slice(&last.newest_ts.to_le_bytes());
        out.extend_from_slice(&last.price.to_le_bytes());
        for w in self.windows.iter() {
            match w {
                Window::Count(w) => {
                    put_moments(out, &w.moments);
                    let new = (w.pushed as usize).min(w.len());
                    put_varint(out, new as u64);
                    let fresh = w.ticks().skip(w.len() - new);
                    put_count_ticks(out, last.newest_ts, fresh.clone().map(|(t, p, _)| (t, p)));
                    let qtys = fresh.map(|(_, _, q)| q);
                    put_volume(out, w.keeps_quantities(), &w.volume, qtys);
                }
                Window::Time(w) => {
                    if w.reordered {
                        out.truncate(start);
                        return false;
                    }
                    put_moments(out, &w.moments);
                    put_varint(out, w.evicted);
                    let new = w.appended.min(w.len());
                    put_varint(out, new as u64);
                    put_time_entries(out, last.newest_ts, w.entries().skip(w.len() - new));
                    let qtys = w.qtys().skip(w.len() - new);
                    put_volume(out, w.keeps_quantities(), &w.volume, qtys);
                }
            }
        }
        // A few open candles per interval: whole, as in a snapshot.
        put_candles(out, self.candle_series());
        true
    }

    /// The state is committed as it is now: the next [`Self::changes_into`] starts from here.
    pub fn mark_committed(&mut self) {
        for w in self.windows.iter_mut() {
            match w {
                Window::Count(w) => w.pushed = 0,
                Window::Time(w) => {
                    w.appended = 0;
                    w.evicted = 0;
                    w.reordered = false;
                }
            }
        }
    }

    /// Applies a change record written by [`Self::changes_into`] of the state this one was
    /// restored from. The result continues bit-identically, as a snapshot taken at that
    /// commit would. Changes that do not fit this state (another configuration, more
    /// evictions than entries, entries out of order or outside the window) are refused and
    /// leave the state as it was.
    pub fn apply_changes(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        let mut r = Reader { bytes, pos: 0 };
        let version = r.header(
            MAGIC,
            SUPPORTED_CHANGES_VERSIONS,
            self.config().fingerprint(),
        )?;
        let newest_ts = r.u64()? as i64;
        if self.last.is_some_and(|l| newest_ts < l.newest_ts) {
            return Err(r.corrupt("newest_ts", r.pos - 8, "older than the state's"));
        }
        let at = r.pos;
        let price = r.f64()?;
        if Rejection::check_price(price).is_some() {
            return Err(r.corrupt("last_price", at, "not a valid price"));
        }
        let mut windows = Vec::with_capacity(self.windows.len());
        for (spec, old) in self.config().windows().iter().zip(self.windows.iter()) {
            let moments = r.moments()?;
            let window = match (spec.kind(), old) {
                (WindowKind::Count { .. }, Window::Count(old)) => {
                    Window::Count(count_changes(&mut r, version, newest_ts, old, moments)?)
                }
                (WindowKind::Time { .. }, Window::Time(old)) => Window::Time(Box::new(
                    time_changes(&mut r, version, old, newest_ts, moments)?,
                )),
                _ => unreachable!("windows are built from the same configuration"),
            };
            windows.push(window);
        }
        let candles = r.candles(self.config())?;
        r.finish()?;
        self.windows = windows.into_boxed_slice();
        self.set_candle_series(candles);
        self.last = Some(Last { newest_ts, price });
        Ok(())
    }
}

/// `old` with the change record's newest prices pushed in (evicting the oldest) and `moments`.
fn count_changes(
    r: &mut Reader<'_>,
    version: u8,
    newest_ts: i64,
    old: &CountWindow,
    moments: crate::moments::Moments,
) -> Result<CountWindow, SnapshotError> {
    let at = r.pos;
    let new = r.varint()?;
    if new > u64::from(old.size()) {
        return Err(r.corrupt("count window changes", at, "exceeds the window size"));
    }
    r.need(new as usize * 8)?;
    let fresh = (0..new)
        .map(|_| r.count_tick(version, newest_ts))
        .collect::<Result<Vec<_>, _>>()?;
    let held = (old.len() + fresh.len()).min(old.size() as usize);
    let volume = r.volume(version, fresh.len(), held)?;
    let mut window = CountWindow::new(old.size());
    // The newest `size` of the old ticks followed by the new ones.
    let keep = old.len().min(old.size() as usize - new as usize);
    let kept: Vec<(i64, f64, Option<f64>)> = old.ticks().skip(old.len() - keep).collect();
    let (fresh_qtys, volume) = match volume {
        None => (None, Volume::default()),
        Some((qtys, volume)) => (Some(qtys), volume),
    };
    let keeps = fresh_qtys.is_some();
    if keeps {
        window.keep_quantities();
    }
    for (ts, p, q) in kept {
        window.restore_tick(ts, p, q.filter(|_| keeps));
    }
    let mut fresh_qtys = fresh_qtys.into_iter().flatten().map(qty_of);
    for (ts, p) in fresh {
        window.restore_tick(ts, p, fresh_qtys.next().flatten());
    }
    window.volume = volume;
    window.moments = moments;
    Ok(window)
}

/// `old` without the change record's evicted entries, with its new ones, and `moments`.
fn time_changes(
    r: &mut Reader<'_>,
    version: u8,
    old: &TimeWindow,
    newest_ts: i64,
    moments: crate::moments::Moments,
) -> Result<TimeWindow, SnapshotError> {
    let at = r.pos;
    let evicted = r.varint()?;
    if evicted > old.len() as u64 {
        return Err(r.corrupt("time window evictions", at, "more than the window holds"));
    }
    let at = r.pos;
    let new = r.varint()?;
    let start = i128::from(newest_ts) - i128::from(old.span_ms());
    let mut entries: Vec<Entry> = old.entries().skip(evicted as usize).collect();
    if entries.first().is_some_and(|e| i128::from(e.ts) <= start) {
        return Err(r.corrupt(
            "time window evictions",
            at,
            "entries left outside the window",
        ));
    }
    let window = (newest_ts, old.span_ms());
    let kept = entries.len();
    r.time_entries(
        new,
        window,
        &mut entries,
        "outside the window or out of order",
    )?;
    let (qtys, volume) = match r.volume(version, entries.len() - kept, entries.len())? {
        None => (None, Volume::default()),
        Some((fresh, volume)) => {
            // The kept entries' quantities (none, if the window kept none before), then the
            // new entries'.
            let mut qtys: Vec<f64> = old.qtys().skip(evicted as usize).map(stored_qty).collect();
            qtys.resize(kept, f64::NAN);
            qtys.extend(fresh);
            (Some(qtys), volume)
        }
    };
    Ok(TimeWindow::restore(
        old.span_ms(),
        entries,
        qtys,
        moments,
        volume,
    ))
}

#[cfg(test)]
mod tests;
