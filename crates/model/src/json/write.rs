//! [`ObjectWriter`]: one JSON object into a byte buffer, compact or `json.dumps`-style.

use std::fmt::{self, Write as _};

/// Appends one JSON object to a buffer.
///
/// * Compact (`{"a":1,"b":2}`): floats with the shortest digits that round-trip
///   (serde_json's formatter: `67234.5`, `1e+16`, `0.00001`).
/// * Python (`{"a": 1, "b": 2}`): byte for byte what Python's `json.dumps` writes, floats as
///   its `repr` (`67234.5`, `1e+16`, `1e-05`).
///
/// Either way non-finite floats become `NaN`/`Infinity`/`-Infinity`, as `json.dumps` writes
/// them and as the decoders recognise them.
pub(crate) struct ObjectWriter<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
    python: bool,
}

impl<'a> ObjectWriter<'a> {
    pub(crate) fn new(out: &'a mut Vec<u8>, python: bool) -> Self {
        out.push(b'{');
        Self {
            out,
            first: true,
            python,
        }
    }

    fn key(&mut self, key: &str) {
        if !self.first {
            self.out
                .extend_from_slice(if self.python { b", " } else { b"," });
        }
        self.first = false;
        push_str(self.out, key);
        self.out
            .extend_from_slice(if self.python { b": " } else { b":" });
    }

    pub(crate) fn str(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        push_str(self.out, value);
        self
    }

    pub(crate) fn f64(&mut self, key: &str, value: f64) -> &mut Self {
        self.key(key);
        if !value.is_finite() {
            push_non_finite(self.out, value);
        } else if self.python {
            push_f64_python(self.out, value);
        } else {
            // Writing into a Vec cannot fail, nor can serializing a finite f64.
            let _ = serde_json::to_writer(&mut *self.out, &value);
        }
        self
    }

    /// A float, or `null` for `None`.
    pub(crate) fn opt_f64(&mut self, key: &str, value: Option<f64>) -> &mut Self {
        match value {
            Some(v) => self.f64(key, v),
            None => {
                self.key(key);
                self.out.extend_from_slice(b"null");
                self
            }
        }
    }

    /// A window's bounds, when known: `start`/`end` or `first_ts`/`last_ts`.
    pub(crate) fn bounds(&mut self, bounds: Option<crate::derived::WindowBounds>) -> &mut Self {
        use crate::derived::WindowBounds;
        match bounds {
            None => self,
            Some(WindowBounds::Time { start, end }) => self.int("start", start).int("end", end),
            Some(WindowBounds::Count { first_ts, last_ts }) => {
                self.int("first_ts", first_ts).int("last_ts", last_ts)
            }
        }
    }

    pub(crate) fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.key(key);
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
        self
    }

    pub(crate) fn int(&mut self, key: &str, value: impl fmt::Display) -> &mut Self {
        self.key(key);
        push_fmt(self.out, format_args!("{value}"));
        self
    }

    pub(crate) fn end(&mut self) {
        self.out.push(b'}');
    }
}

struct VecWriter<'a>(&'a mut Vec<u8>);

impl fmt::Write for VecWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

fn push_fmt(out: &mut Vec<u8>, args: fmt::Arguments<'_>) {
    // Writing numbers into a Vec cannot fail: VecWriter never errors, nor do the
    // Display/Debug impls of integers and floats.
    let _ = VecWriter(out).write_fmt(args);
}

fn push_non_finite(out: &mut Vec<u8>, v: f64) {
    out.extend_from_slice(if v.is_nan() {
        b"NaN"
    } else if v > 0.0 {
        b"Infinity"
    } else {
        b"-Infinity"
    });
}

/// A finite float as Python's `repr` writes it.
fn push_f64_python(out: &mut Vec<u8>, v: f64) {
    // Rust's Debug gives the shortest round-trip digits, switching to an exponent exactly
    // where Python's repr does (below 1e-4, from 1e16); only the exponent is spelled
    // differently (`1e16`, `1e-5` versus `1e+16`, `1e-05`).
    let start = out.len();
    push_fmt(out, format_args!("{v:?}"));
    let Some(e) = out[start..].iter().position(|b| *b == b'e') else {
        return;
    };
    let e = start + e;
    let mut exp = [0u8; 8];
    let tail = &out[e + 1..];
    let (negative, digits) = match tail.split_first() {
        Some((b'-', digits)) => (true, digits),
        _ => (false, tail),
    };
    let n = digits.len().min(exp.len());
    exp[..n].copy_from_slice(&digits[..n]);
    out.truncate(e + 1);
    out.push(if negative { b'-' } else { b'+' });
    if n < 2 {
        out.push(b'0');
    }
    out.extend_from_slice(&exp[..n]);
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[from..i]);
        if escape.is_empty() {
            push_fmt(out, format_args!("\\u{b:04x}"));
        } else {
            out.extend_from_slice(escape);
        }
        from = i + 1;
    }
    out.extend_from_slice(&bytes[from..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(v: f64, python: bool) -> String {
        let mut out = Vec::new();
        ObjectWriter::new(&mut out, python).f64("", v).end();
        let text = String::from_utf8(out).unwrap_or_default();
        let sep = if python { "{\"\": " } else { "{\"\":" };
        text.strip_prefix(sep)
            .and_then(|t| t.strip_suffix('}'))
            .unwrap_or_default()
            .to_owned()
    }

    #[test]
    fn floats_are_written_as_python_repr_writes_them() {
        // Expected values from Python 3: json.dumps([...]).
        let cases = [
            (67234.5, "67234.5"),
            (67234.0, "67234.0"),
            (1e16, "1e+16"),
            (1e-5, "1e-05"),
            (2.5e-7, "2.5e-07"),
            (1e-4, "0.0001"),
            (9999999999999998.0, "9999999999999998.0"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e100, "1e+100"),
            (5e-324, "5e-324"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            (-0.0, "-0.0"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
        ];
        for (v, want) in cases {
            assert_eq!(f(v, true), want);
            let compact = f(v, false);
            if v.is_finite() {
                assert_eq!(want.parse::<f64>().map(f64::to_bits), Ok(v.to_bits()));
                assert_eq!(
                    compact.parse::<f64>().map(f64::to_bits),
                    Ok(v.to_bits()),
                    "{compact}"
                );
            } else {
                assert_eq!(compact, want);
            }
        }
    }

    #[test]
    fn strings_are_escaped() {
        let mut out = Vec::new();
        ObjectWriter::new(&mut out, false)
            .str("k", "a\"b\\c\nd\u{1}é")
            .end();
        let text = String::from_utf8(out).unwrap_or_default();
        assert_eq!(text, r#"{"k":"a\"b\\c\nd\u0001é"}"#);
        let back: Result<serde_json::Value, _> = serde_json::from_str(&text);
        assert_eq!(
            back.ok().and_then(|v| v["k"].as_str().map(str::to_owned)),
            Some("a\"b\\c\nd\u{1}é".to_owned())
        );
    }
}
