//! Ticks and the reasons a tick is refused.

use std::fmt;

/// One price observation of a symbol.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tick {
    /// Event time, epoch milliseconds.
    pub ts: i64,
    /// Price; must be finite and within [`MIN_PRICE`]`..=`[`MAX_PRICE`].
    pub price: f64,
    /// Traded quantity, when the source reports one (finite, >= 0): candles' volume and VWAP.
    pub qty: Option<f64>,
}

impl Tick {
    /// A tick at event time `ts` (epoch ms) with `price` and no quantity.
    pub fn new(ts: i64, price: f64) -> Self {
        Self {
            ts,
            price,
            qty: None,
        }
    }

    /// The same tick with a traded quantity (`None`: none reported).
    #[must_use]
    pub fn with_qty(self, qty: Option<f64>) -> Self {
        Self { qty, ..self }
    }
}

/// Smallest accepted price. Far below any quoted price (the spec asks for exactness down to
/// 1e-8); the bound keeps squared deviations well clear of the subnormal range.
pub const MIN_PRICE: f64 = 1e-100;
/// Largest accepted price. Far above any quoted price (the spec asks for exactness up to 1e6);
/// the bound keeps sums of squared deviations finite for any window length.
pub const MAX_PRICE: f64 = 1e100;

/// Why a tick was refused. A refused tick changes nothing: not the windows, not the jump
/// reference price, not the newest event time. [`Rejection::code`] gives a stable short
/// name for a dead-letter header; `Display` gives the human-readable reason.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Rejection {
    /// NaN or infinite price.
    NonFinitePrice {
        /// The price as received.
        price: f64,
    },
    /// Zero or negative price (including `-0.0`).
    NonPositivePrice {
        /// The price as received.
        price: f64,
    },
    /// A positive, finite price outside [`MIN_PRICE`]`..=`[`MAX_PRICE`].
    PriceOutOfRange {
        /// The price as received.
        price: f64,
    },
    /// Event time older than the symbol's newest event time by more than the allowed
    /// lateness (`ts < newest_ts - allowed_lateness_ms`).
    LateTick {
        /// The tick's event time.
        ts: i64,
        /// The newest event time accepted for the symbol.
        newest_ts: i64,
        /// The configured allowed lateness.
        allowed_lateness_ms: i64,
    },
    /// A quantity that is negative, NaN or infinite.
    InvalidQty {
        /// The quantity as received.
        qty: f64,
    },
    /// The candle `[start, end)` the tick belongs to has closed: event time passed
    /// `end + grace`, the tick is more than the grace behind the symbol's newest, or the candle
    /// was closed while the symbol was idle.
    CandleClosed {
        /// The tick's event time.
        ts: i64,
        /// The start of the candle it belongs to.
        start: i64,
        /// The end of that candle (exclusive).
        end: i64,
        /// The newest event time accepted for the symbol.
        watermark: i64,
        /// The configured grace.
        grace_ms: i64,
    },
}

impl Rejection {
    /// A stable, machine-friendly name: `non_finite_price`, `non_positive_price`,
    /// `price_out_of_range`, `late_tick`, `invalid_qty`, `late` (a candle that has closed).
    pub fn code(&self) -> &'static str {
        match self {
            Self::NonFinitePrice { .. } => "non_finite_price",
            Self::NonPositivePrice { .. } => "non_positive_price",
            Self::PriceOutOfRange { .. } => "price_out_of_range",
            Self::LateTick { .. } => "late_tick",
            Self::InvalidQty { .. } => "invalid_qty",
            Self::CandleClosed { .. } => "late",
        }
    }

    /// Checks a quantity; `None` if it may be folded in (none, or finite and >= 0).
    #[inline]
    pub(crate) fn check_qty(qty: Option<f64>) -> Option<Self> {
        match qty {
            Some(q) if !(q.is_finite() && q >= 0.0) => Some(Self::InvalidQty { qty: q }),
            _ => None,
        }
    }

    /// Checks a price; `None` if it may be folded in.
    #[inline]
    pub(crate) fn check_price(price: f64) -> Option<Self> {
        if (MIN_PRICE..=MAX_PRICE).contains(&price) {
            None
        } else if !price.is_finite() {
            Some(Self::NonFinitePrice { price })
        } else if price <= 0.0 {
            Some(Self::NonPositivePrice { price })
        } else {
            Some(Self::PriceOutOfRange { price })
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NonFinitePrice { price } => write!(f, "price {price} is not finite"),
            Self::NonPositivePrice { price } => write!(f, "price {price} is not positive"),
            Self::PriceOutOfRange { price } => {
                write!(
                    f,
                    "price {price:e} is outside the supported range {MIN_PRICE:e}..={MAX_PRICE:e}"
                )
            }
            Self::LateTick {
                ts,
                newest_ts,
                allowed_lateness_ms,
            } => write!(
                f,
                "tick at {ts} ms is {} ms older than the newest tick of its symbol ({newest_ts} ms); \
                 allowed lateness is {allowed_lateness_ms} ms",
                i128::from(newest_ts) - i128::from(ts)
            ),
            Self::InvalidQty { qty } => {
                write!(f, "quantity {qty} is not a finite number >= 0")
            }
            Self::CandleClosed {
                ts,
                start,
                end,
                watermark,
                grace_ms,
            } => write!(
                f,
                "tick at {ts} ms belongs to the candle [{start}, {end}) ms, already closed: the \
                 symbol's newest tick is at {watermark} ms and the grace is {grace_ms} ms"
            ),
        }
    }
}

impl std::error::Error for Rejection {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_are_classified() {
        assert_eq!(Rejection::check_price(1.0), None);
        assert_eq!(Rejection::check_price(1e-8), None);
        assert_eq!(Rejection::check_price(1e6), None);
        let code = |p: f64| Rejection::check_price(p).map(|r| r.code());
        assert_eq!(code(f64::NAN), Some("non_finite_price"));
        assert_eq!(code(f64::INFINITY), Some("non_finite_price"));
        assert_eq!(code(f64::NEG_INFINITY), Some("non_finite_price"));
        assert_eq!(code(0.0), Some("non_positive_price"));
        assert_eq!(code(-0.0), Some("non_positive_price"));
        assert_eq!(code(-3.0), Some("non_positive_price"));
        assert_eq!(code(1e-200), Some("price_out_of_range"));
        assert_eq!(code(f64::MAX), Some("price_out_of_range"));
    }

    #[test]
    fn reasons_read_well() {
        let late = Rejection::LateTick {
            ts: 1_000,
            newest_ts: 9_000,
            allowed_lateness_ms: 5_000,
        };
        assert_eq!(
            late.to_string(),
            "tick at 1000 ms is 8000 ms older than the newest tick of its symbol (9000 ms); \
             allowed lateness is 5000 ms"
        );
        assert_eq!(
            Rejection::NonPositivePrice { price: -1.5 }.to_string(),
            "price -1.5 is not positive"
        );
        assert_eq!(
            Rejection::NonFinitePrice { price: f64::NAN }.to_string(),
            "price NaN is not finite"
        );
    }
}
