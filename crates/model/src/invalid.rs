//! [`InvalidRecord`]: why a record was refused, with a stable machine code for the dead-letter
//! headers and a human message saying what is wrong, where, and how to fix it.

use std::fmt;

use crate::symbol::{Symbol, SymbolError};

/// The type of a JSON value, as named in error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonType {
    /// `{...}`
    Object,
    /// `[...]`
    Array,
    /// `"..."`
    String,
    /// `1`, `-2.5e3`
    Number,
    /// `true`, `false`
    Bool,
    /// `null`
    Null,
}

impl JsonType {
    /// The type of the JSON text `raw`, judged by its first byte (`raw` must be valid JSON).
    pub(crate) fn of(raw: &str) -> Self {
        Self::of_first_byte(raw.as_bytes().first().copied().unwrap_or(b'n'))
    }

    /// The type of a JSON value starting with `b`.
    pub(crate) fn of_first_byte(b: u8) -> Self {
        match b {
            b'{' => Self::Object,
            b'[' => Self::Array,
            b'"' => Self::String,
            b't' | b'f' => Self::Bool,
            b'n' => Self::Null,
            _ => Self::Number,
        }
    }
}

impl fmt::Display for JsonType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Object => "an object",
            Self::Array => "an array",
            Self::String => "a string",
            Self::Number => "a number",
            Self::Bool => "a boolean",
            Self::Null => "null",
        })
    }
}

/// Why a record (raw tick or derived event) was refused.
///
/// [`code`](Self::code) is a stable, short, machine-friendly name for the
/// `tickstream.error.code` dead-letter header (written by the runtime, `tickstream_streams::dlq_headers`) and for metric labels; `Display` is the human message
/// for `tickstream.error.message`: what is wrong, in which field, and how to fix it.
/// Untrusted text quoted in a message is cut to 64 bytes.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidRecord {
    /// The record is larger than the configured limit; it was not parsed.
    #[error(
        "record is {size} bytes, the limit is {limit}: records are normally well under 200 bytes; \
         if larger ones are legitimate, raise processing.max_record_bytes in the topology"
    )]
    Oversized {
        /// The record's size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// Not valid JSON (or not UTF-8).
    #[error(
        "not valid JSON ({detail}): send one JSON object per record, e.g. {{\"symbol\":\"BTCUSDT\",\"price\":67234.5}}"
    )]
    NotJson {
        /// The parser's description, with line and column.
        detail: String,
    },
    /// Valid JSON, but not an object.
    #[error("expected a JSON object, found {found}: send one JSON object per record")]
    NotObject {
        /// What the record is instead.
        found: JsonType,
    },
    /// A required field is absent.
    #[error("missing field `{field}` ({expected}): every record of this kind carries it")]
    MissingField {
        /// The field's name.
        field: &'static str,
        /// Its expected type, e.g. "a JSON number".
        expected: &'static str,
    },
    /// A field has the wrong JSON type.
    #[error("field `{field}` is {found}, expected {expected}")]
    MistypedField {
        /// The field's name.
        field: &'static str,
        /// Its expected type.
        expected: &'static str,
        /// What it is instead.
        found: JsonType,
    },
    /// A known field occurs twice in the object, so its value is ambiguous.
    #[error("field `{field}` occurs more than once: send it once")]
    DuplicateField {
        /// The field's name.
        field: &'static str,
    },
    /// A price is NaN or infinite: a `NaN`/`Infinity`/`-Infinity` token (which Python's
    /// `json.dumps` writes but JSON does not allow), or a number too large for an `f64`.
    #[error(
        "field `{field}` is {raw}, not a finite number: send a finite, positive price \
         (Python: json.dumps(..., allow_nan=False) catches this at the producer)"
    )]
    NonFinitePrice {
        /// The field's name (`price` for ticks; `from`/`to` for jumps).
        field: &'static str,
        /// The offending text as received (cut to 64 bytes).
        raw: String,
    },
    /// A price is zero or negative.
    #[error("field `{field}` is {price}, prices must be greater than 0")]
    NonPositivePrice {
        /// The field's name.
        field: &'static str,
        /// The price as received.
        price: f64,
    },
    /// `symbol` is the empty string.
    #[error("field `symbol` is empty: write a trading pair such as \"BTCUSDT\"")]
    EmptySymbol,
    /// `symbol` is not a valid symbol (see [`Symbol`]).
    #[error("field `symbol`: {0}")]
    InvalidSymbol(SymbolError),
    /// `symbol` is valid, but not one of the topology's symbols, and symbols are pinned.
    #[error(
        "symbol {symbol} is not one of the topology's symbols: add it to `symbols`, \
         or set pin_symbols = false to accept any symbol"
    )]
    UnknownSymbol {
        /// The symbol received.
        symbol: Symbol,
    },
    /// With `pin_symbols = false`: a symbol enrich has no windows for yet, when it already
    /// keeps windows for `max_symbols` symbols.
    #[error(
        "symbol {symbol} is new, and windows are kept for {limit} symbols already \
         (max_symbols): list it in `symbols`, or raise max_symbols in the topology"
    )]
    SymbolLimit {
        /// The symbol received.
        symbol: Symbol,
        /// The topology's `max_symbols`.
        limit: usize,
    },
    /// A field has the right type but a value out of its range (derived events, `ts`).
    #[error("field `{field}` is {found}, expected {expected}")]
    InvalidValue {
        /// The field's name.
        field: &'static str,
        /// What is allowed.
        expected: &'static str,
        /// The value received (cut to 64 bytes).
        found: String,
    },
    /// The tick has no `ts` and its Kafka message has no timestamp either.
    #[error(
        "no event time: the record has no `ts` field and its Kafka message no timestamp; \
         add \"ts\" (epoch milliseconds) or produce with message timestamps"
    )]
    MissingEventTime,
}

impl InvalidRecord {
    /// Stable short name: `oversized`, `not_json`, `not_object`, `missing_field`,
    /// `mistyped_field`, `duplicate_field`, `non_finite_price`, `non_positive_price`,
    /// `empty_symbol`, `invalid_symbol`, `unknown_symbol`, `symbol_limit`, `invalid_value`,
    /// `missing_event_time`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Oversized { .. } => "oversized",
            Self::NotJson { .. } => "not_json",
            Self::NotObject { .. } => "not_object",
            Self::MissingField { .. } => "missing_field",
            Self::MistypedField { .. } => "mistyped_field",
            Self::DuplicateField { .. } => "duplicate_field",
            Self::NonFinitePrice { .. } => "non_finite_price",
            Self::NonPositivePrice { .. } => "non_positive_price",
            Self::EmptySymbol => "empty_symbol",
            Self::InvalidSymbol(_) => "invalid_symbol",
            Self::UnknownSymbol { .. } => "unknown_symbol",
            Self::SymbolLimit { .. } => "symbol_limit",
            Self::InvalidValue { .. } => "invalid_value",
            Self::MissingEventTime => "missing_event_time",
        }
    }

    /// The field at fault, when one is.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::MissingField { field, .. }
            | Self::MistypedField { field, .. }
            | Self::DuplicateField { field }
            | Self::NonFinitePrice { field, .. }
            | Self::NonPositivePrice { field, .. }
            | Self::InvalidValue { field, .. } => Some(field),
            Self::EmptySymbol
            | Self::InvalidSymbol(_)
            | Self::UnknownSymbol { .. }
            | Self::SymbolLimit { .. } => Some("symbol"),
            Self::MissingEventTime => Some("ts"),
            Self::Oversized { .. } | Self::NotJson { .. } | Self::NotObject { .. } => None,
        }
    }
}

impl From<SymbolError> for InvalidRecord {
    fn from(e: SymbolError) -> Self {
        match e {
            SymbolError::Empty => Self::EmptySymbol,
            other => Self::InvalidSymbol(other),
        }
    }
}

/// `s` cut to at most `max` bytes on a character boundary, with `…` when cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_on_char_boundaries() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 3), "abc…");
        assert_eq!(truncate("aéé", 2), "a…");
    }

    #[test]
    fn codes_and_fields() {
        let e = InvalidRecord::MistypedField {
            field: "price",
            expected: "a JSON number",
            found: JsonType::String,
        };
        assert_eq!(e.code(), "mistyped_field");
        assert_eq!(e.field(), Some("price"));
        assert_eq!(
            e.to_string(),
            "field `price` is a string, expected a JSON number"
        );
        assert_eq!(
            InvalidRecord::from(SymbolError::Empty).code(),
            "empty_symbol"
        );
        assert_eq!(JsonType::of("[1]"), JsonType::Array);
        assert_eq!(JsonType::of("-1"), JsonType::Number);
    }
}
