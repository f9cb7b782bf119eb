//! Versioned binary snapshots of a symbol's state. The format is documented in the crate
//! docs ("Snapshot format"); keep them in step with `snapshot_into` and `restore`.
//!
//! Min/max helpers are not stored: they are a function of the window contents and are rebuilt
//! on restore. The sums are stored bit for bit, so a restored state produces the same bits as
//! the original would have (recomputing them would round differently).

use std::sync::Arc;

use crate::count::CountWindow;
use crate::moments::Moments;
use crate::spec::{Config, WindowKind};
use crate::symbol::{Last, SymbolWindows, Window};
use crate::tick::Rejection;
use crate::time::{Entry, TimeWindow};

const MAGIC: [u8; 2] = *b"TW";
/// The version this build writes.
pub const SNAPSHOT_VERSION: u8 = 1;
/// The versions this build reads.
pub const SUPPORTED_SNAPSHOT_VERSIONS: &[u8] = &[1];

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
        out.extend_from_slice(&MAGIC);
        out.push(SNAPSHOT_VERSION);
        out.extend_from_slice(&self.config().fingerprint().to_le_bytes());
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
                    out.reserve(w.len() * 8);
                    for p in w.prices() {
                        out.extend_from_slice(&p.to_le_bytes());
                    }
                }
                Window::Time(w) => {
                    put_moments(out, &w.moments);
                    put_varint(out, w.len() as u64);
                    let mut prev = last.newest_ts;
                    let mut first = true;
                    for e in w.entries() {
                        let delta = if first {
                            prev.abs_diff(e.ts)
                        } else {
                            e.ts.abs_diff(prev)
                        };
                        first = false;
                        put_varint(out, delta);
                        out.extend_from_slice(&e.price.to_le_bytes());
                        prev = e.ts;
                    }
                }
            }
        }
    }

    /// Restores a state from [`Self::snapshot`] bytes under `config`, which must be the
    /// configuration the snapshot was taken under (same [`Config::fingerprint`]). Feeding
    /// the restored state the following ticks gives bit-identical results to never having
    /// stopped.
    pub fn restore(config: Arc<Config>, bytes: &[u8]) -> Result<Self, SnapshotError> {
        let mut r = Reader { bytes, pos: 0 };
        let magic = [r.u8()?, r.u8()?];
        if magic != MAGIC {
            return Err(SnapshotError::BadMagic { found: magic });
        }
        let version = r.u8()?;
        if !SUPPORTED_SNAPSHOT_VERSIONS.contains(&version) {
            return Err(SnapshotError::UnknownVersion {
                found: version,
                supported: SUPPORTED_SNAPSHOT_VERSIONS,
            });
        }
        let fingerprint = r.u64()?;
        if fingerprint != config.fingerprint() {
            return Err(SnapshotError::ConfigMismatch {
                snapshot: fingerprint,
                current: config.fingerprint(),
            });
        }
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
                    let mut window = CountWindow::new(size);
                    for _ in 0..len {
                        window.restore_price(r.price()?);
                    }
                    window.moments = moments;
                    Window::Count(window)
                }
                WindowKind::Time { span_ms } => {
                    // Each entry takes at least 9 bytes: bound the allocation by the input.
                    let len = usize::try_from(len).unwrap_or(usize::MAX);
                    r.need(len.saturating_mul(9))?;
                    let start = i128::from(newest_ts) - i128::from(span_ms);
                    let mut entries = Vec::with_capacity(len);
                    let mut prev = newest_ts;
                    for i in 0..len {
                        let at = r.pos;
                        let delta = r.varint()?;
                        let ts = if i == 0 {
                            newest_ts.checked_sub_unsigned(delta)
                        } else {
                            prev.checked_add_unsigned(delta)
                        };
                        let ts = match ts {
                            Some(ts) if i128::from(ts) > start && ts <= newest_ts => ts,
                            _ => {
                                return Err(r.corrupt(
                                    "time window event time",
                                    at,
                                    "outside the window",
                                ));
                            }
                        };
                        entries.push(Entry {
                            ts,
                            price: r.price()?,
                        });
                        prev = ts;
                    }
                    Window::Time(Box::new(TimeWindow::restore(span_ms, entries, moments)))
                }
            };
            windows.push(window);
        }
        r.finish()?;
        Ok(Self::from_parts(
            config,
            windows.into_boxed_slice(),
            Some(last),
        ))
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
