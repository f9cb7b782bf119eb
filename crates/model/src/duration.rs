//! Durations as topology files write them: a whole number and a unit, `500ms`, `3s`, `5m`,
//! `1h`, `1d`.

use std::time::Duration;

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {input:?}: write a whole number followed by ms, s, m, h or d, \
     such as \"500ms\", \"3s\", \"5m\", \"1h\" or \"1d\""
)]
pub struct DurationError {
    /// The text as given.
    pub input: String,
}

const UNITS: [(&str, u64); 4] = [("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000)];
const DAY: (&str, u64) = ("d", 86_400_000);

/// Parses `<digits><unit>` with unit `ms`, `s`, `m`, `h` or `d` (no spaces, no fractions, no
/// sign; `0s` is a valid zero). Whole milliseconds up to `u64::MAX` ms.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let error = || DurationError {
        input: crate::invalid::truncate(s, 64),
    };
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(error)?;
    let (digits, unit) = s.split_at(split);
    if digits.is_empty() {
        return Err(error());
    }
    let scale = UNITS
        .iter()
        .chain([&DAY])
        .find(|(name, _)| *name == unit)
        .map(|(_, scale)| *scale)
        .ok_or_else(error)?;
    let value: u64 = digits.parse().map_err(|_| error())?;
    let ms = value.checked_mul(scale).ok_or_else(error)?;
    Ok(Duration::from_millis(ms))
}

/// Formats `d` in the largest whole unit of `h`, `m`, `s`, `ms` (`5m`, `90s`, `1500ms`):
/// the inverse of [`parse_duration`], and the spelling of time-window labels (`time:5m`).
/// Sub-millisecond parts are dropped.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (name, scale) in UNITS.iter().rev() {
        let scale = u128::from(*scale);
        if ms != 0 && ms.is_multiple_of(scale) {
            return format!("{}{name}", ms / scale);
        }
    }
    format!("{ms}ms")
}

/// A candle interval's label: [`format_duration`], but whole days in `d` (`1d`, as exchanges
/// name it, where a window span says `24h`).
pub fn format_interval(d: Duration) -> String {
    let ms = d.as_millis();
    let day = u128::from(DAY.1);
    if ms != 0 && ms.is_multiple_of(day) {
        format!("{}d", ms / day)
    } else {
        format_duration(d)
    }
}

/// Deserializes a duration string (for `#[serde(deserialize_with)]`).
pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = Duration;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a duration string such as \"500ms\", \"3s\", \"5m\", \"1h\" or \"1d\"")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
            parse_duration(v).map_err(E::custom)
        }
    }
    d.deserialize_str(Visitor)
}

/// [`deserialize`] for an optional field.
pub(crate) fn deserialize_opt<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        let ok =
            |s: &str, ms: u64| assert_eq!(parse_duration(s), Ok(Duration::from_millis(ms)), "{s}");
        ok("500ms", 500);
        ok("3s", 3_000);
        ok("5m", 300_000);
        ok("1h", 3_600_000);
        ok("0s", 0);
        for bad in [
            "",
            "3",
            "s",
            "3 s",
            "3sec",
            "1.5s",
            "-1s",
            "3S",
            "99999999999999999999h",
            " 3s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        let msg = parse_duration("3 sec").map_err(|e| e.to_string());
        assert!(matches!(&msg, Err(m) if m.contains("\"3 sec\"") && m.contains("\"500ms\"")));

        let f = |ms| format_duration(Duration::from_millis(ms));
        assert_eq!(
            [
                f(300_000),
                f(90_000),
                f(1_500),
                f(7_200_000),
                f(0),
                f(60_000)
            ],
            ["5m", "90s", "1500ms", "2h", "0ms", "1m"]
        );
    }
}
