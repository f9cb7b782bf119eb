//! The JSON plumbing shared by every record: a field-at-a-time object reader (no
//! `serde_json::Value`, no allocation on the happy path), typed field parsers whose errors
//! name the field, and a small writer for compact or Python-`json.dumps`-style output.
//!
//! A field's value is handed around as its raw JSON text (`&str`, always valid JSON), so
//! numbers are parsed by Rust's exactly-rounding float parser and errors can quote the text.

mod write;

pub(crate) use write::ObjectWriter;

use std::borrow::Cow;
use std::fmt;

use serde::Deserializer as _;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::invalid::{InvalidRecord, JsonType, truncate};

/// The raw JSON text of the fields named in `names` (in that order) of the JSON object in
/// `bytes`; other fields are skipped. Errors: `not_json` (or `non_finite_price` /
/// `invalid_value` for a bare `NaN`/`Infinity` token in a named field), `not_object`,
/// `duplicate_field`.
pub(crate) fn read_object<'a, const N: usize>(
    bytes: &'a [u8],
    names: &[&'static str; N],
) -> Result<[Option<&'a str>; N], InvalidRecord> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = de
        .deserialize_map(ObjectVisitor { names })
        .and_then(|parsed| de.end().map(|()| parsed));
    match parsed {
        Ok(Parsed {
            duplicate: Some(i), ..
        }) => Err(InvalidRecord::DuplicateField { field: names[i] }),
        Ok(Parsed { values, .. }) => Ok(values.map(|v| v.map(RawValue::get))),
        Err(e) => Err(parse_error(bytes, &e, names)),
    }
}

struct Parsed<'a, const N: usize> {
    values: [Option<&'a RawValue>; N],
    duplicate: Option<usize>,
}

struct ObjectVisitor<'n, const N: usize> {
    names: &'n [&'static str; N],
}

impl<'de, const N: usize> Visitor<'de> for ObjectVisitor<'_, N> {
    type Value = Parsed<'de, N>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut values = [None; N];
        let mut duplicate = None;
        while let Some(key) = map.next_key_seed(KeySeed { names: self.names })? {
            match key {
                Some(i) => {
                    let value: &'de RawValue = map.next_value()?;
                    if values[i].is_some() {
                        duplicate.get_or_insert(i);
                    } else {
                        values[i] = Some(value);
                    }
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Parsed { values, duplicate })
    }
}

/// Deserializes an object key into its index in `names` (`None`: not a field we read).
struct KeySeed<'n, const N: usize> {
    names: &'n [&'static str; N],
}

impl<'de, const N: usize> DeserializeSeed<'de> for KeySeed<'_, N> {
    type Value = Option<usize>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<const N: usize> Visitor<'_> for KeySeed<'_, N> {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.names.iter().position(|n| *n == v))
    }
}

/// Fields holding prices: a non-finite value there is `non_finite_price`.
const PRICE_FIELDS: [&str; 3] = ["price", "from", "to"];

/// The error for a non-finite value in `field`.
pub(crate) fn non_finite(field: &'static str, raw: &str) -> InvalidRecord {
    if PRICE_FIELDS.contains(&field) {
        InvalidRecord::NonFinitePrice {
            field,
            raw: truncate(raw, 64),
        }
    } else {
        InvalidRecord::InvalidValue {
            field,
            expected: "a finite number",
            found: truncate(raw, 64),
        }
    }
}

#[cold]
fn parse_error<const N: usize>(
    bytes: &[u8],
    e: &serde_json::Error,
    names: &[&'static str; N],
) -> InvalidRecord {
    if e.classify() == serde_json::error::Category::Data {
        // Our visitor only fails on a value that is not an object.
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace()).copied();
        let found = JsonType::of_first_byte(first.unwrap_or(b'n'));
        return InvalidRecord::NotObject { found };
    }
    if let Some((key, token)) = non_finite_token(bytes, e.line(), e.column()) {
        if let Some(field) = names.iter().find(|n| **n == key) {
            return non_finite(field, token);
        }
        return InvalidRecord::NotJson {
            detail: format!(
                "{e}: field `{}` is {token}, which JSON does not allow",
                truncate(key, 64)
            ),
        };
    }
    InvalidRecord::NotJson {
        detail: e.to_string(),
    }
}

/// When a syntax error at (1-based) `line`/`column` sits on a `NaN`, `Infinity` or
/// `-Infinity` token that is an object member's value: that member's key and the token.
fn non_finite_token(bytes: &[u8], line: usize, column: usize) -> Option<(&str, &'static str)> {
    let line_start = if line <= 1 {
        0
    } else {
        bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .nth(line - 2)
            .map(|(i, _)| i + 1)?
    };
    let at = line_start + column.checked_sub(1)?;
    let rest = bytes.get(at..)?;
    let (token, start) = if rest.starts_with(b"NaN") {
        ("NaN", at)
    } else if rest.starts_with(b"Infinity") {
        match at.checked_sub(1).map(|i| bytes[i]) {
            Some(b'-') => ("-Infinity", at - 1),
            _ => ("Infinity", at),
        }
    } else {
        return None;
    };
    // Walk back: whitespace, ':', whitespace, the key's closing quote, the key.
    let before = bytes[..start].trim_ascii_end().strip_suffix(b":")?;
    let before = before.trim_ascii_end().strip_suffix(b"\"")?;
    let open = before.iter().rposition(|b| *b == b'"')?;
    let key = std::str::from_utf8(&before[open + 1..]).ok()?;
    Some((key, token))
}

/// A required field, or `missing_field`.
pub(crate) fn required<'a>(
    value: Option<&'a str>,
    field: &'static str,
    expected: &'static str,
) -> Result<&'a str, InvalidRecord> {
    value.ok_or(InvalidRecord::MissingField { field, expected })
}

/// An optional field: absent and `null` both mean "not given".
pub(crate) fn optional(value: Option<&str>) -> Option<&str> {
    value.filter(|v| *v != "null")
}

fn expect_type(
    raw: &str,
    field: &'static str,
    ty: JsonType,
    expected: &'static str,
) -> Result<(), InvalidRecord> {
    let found = JsonType::of(raw);
    if found == ty {
        Ok(())
    } else {
        Err(InvalidRecord::MistypedField {
            field,
            expected,
            found,
        })
    }
}

/// Any JSON number as the nearest `f64` (exactly rounded; may be infinite for huge numbers).
pub(crate) fn number(raw: &str, field: &'static str) -> Result<f64, InvalidRecord> {
    expect_type(raw, field, JsonType::Number, "a JSON number")?;
    // Rust's float parser rounds exactly (serde_json's default one does not always).
    raw.parse::<f64>().map_err(|_| non_finite(field, raw))
}

/// A finite JSON number.
pub(crate) fn finite(raw: &str, field: &'static str) -> Result<f64, InvalidRecord> {
    let v = number(raw, field)?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(non_finite(field, raw))
    }
}

/// A JSON integer in `0..=i64::MAX`.
pub(crate) fn non_negative_i64(
    raw: &str,
    field: &'static str,
    expected: &'static str,
) -> Result<i64, InvalidRecord> {
    expect_type(raw, field, JsonType::Number, expected)?;
    match raw.parse::<i64>() {
        Ok(v) if v >= 0 => Ok(v),
        _ => Err(InvalidRecord::InvalidValue {
            field,
            expected,
            found: truncate(raw, 64),
        }),
    }
}

/// A JSON integer in `1..=u64::MAX`.
pub(crate) fn positive_u64(raw: &str, field: &'static str) -> Result<u64, InvalidRecord> {
    const EXPECTED: &str = "an integer of at least 1";
    expect_type(raw, field, JsonType::Number, EXPECTED)?;
    match raw.parse::<u64>() {
        Ok(v) if v >= 1 => Ok(v),
        _ => Err(InvalidRecord::InvalidValue {
            field,
            expected: EXPECTED,
            found: truncate(raw, 64),
        }),
    }
}

/// `true` or `false`.
pub(crate) fn boolean(raw: &str, field: &'static str) -> Result<bool, InvalidRecord> {
    match raw {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(InvalidRecord::MistypedField {
            field,
            expected: "true or false",
            found: JsonType::of(raw),
        }),
    }
}

/// A JSON string, borrowed from the record unless it contains escapes.
pub(crate) fn string<'a>(raw: &'a str, field: &'static str) -> Result<Cow<'a, str>, InvalidRecord> {
    expect_type(raw, field, JsonType::String, "a JSON string")?;
    let inner = raw
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(raw);
    if !inner.contains('\\') {
        return Ok(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(raw)
        .map(Cow::Owned)
        .map_err(|e| InvalidRecord::NotJson {
            detail: format!("field `{field}`: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_key_of_a_bare_non_finite_token() {
        let find = |s: &str| {
            let e = serde_json::from_str::<IgnoredAny>(s).err()?;
            non_finite_token(s.as_bytes(), e.line(), e.column()).map(|(k, t)| (k.to_owned(), t))
        };
        assert_eq!(find(r#"{"price": NaN}"#), Some(("price".into(), "NaN")));
        assert_eq!(
            find("{\"a\": \"é\",\n \"price\" :\n -Infinity}"),
            Some(("price".into(), "-Infinity"))
        );
        assert_eq!(find(r#"{"x":Infinity}"#), Some(("x".into(), "Infinity")));
        assert_eq!(find("[NaN]"), None);
        assert_eq!(find("NaN"), None);
        assert_eq!(find(r#"{"price": Nope}"#), None);
    }
}
