//! [`Symbol`]: a validated trading-pair name such as `BTCUSDT`, stored inline (no allocation).

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

/// A trading-pair symbol as Binance spells it: 1 to [`Symbol::MAX_LEN`] characters, upper-case
/// ASCII letters and digits only (`BTCUSDT`, `1000SATSUSDT`).
///
/// **Case is not normalised**: `btcusdt` is refused with a message suggesting `BTCUSDT`. The
/// symbol is the Kafka key, part of every state-store key and of MongoDB document ids; one
/// canonical spelling keeps one coin in one window and one partition, and a producer sending
/// another spelling learns about it from the dead-letter topic instead of silently splitting
/// its state.
///
/// `Copy`, 33 bytes, compares, hashes and orders like its `&str` (so a
/// `HashMap<Symbol, _>` can be queried with a `&str`). Serialises as a JSON/TOML string.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Symbol {
    len: u8,
    bytes: [u8; Self::MAX_LEN],
}

/// Why a string is not a [`Symbol`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SymbolError {
    /// The empty string.
    #[error("the symbol is empty: write a trading pair such as \"BTCUSDT\"")]
    Empty,
    /// Longer than [`Symbol::MAX_LEN`] bytes.
    #[error(
        "the symbol is {len} bytes long, the limit is {max}: write a trading pair such as \"BTCUSDT\"",
        max = Symbol::MAX_LEN
    )]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// Contains lower-case letters (and otherwise only letters and digits).
    #[error(
        "symbol {symbol:?} has lower-case letters: write {upper:?} (symbols are upper-case, as Binance spells them)"
    )]
    LowerCase {
        /// The symbol as given.
        symbol: String,
        /// Its upper-case spelling, the fix.
        upper: String,
    },
    /// Contains a character other than `A-Z`, `a-z`, `0-9`.
    #[error(
        "symbol {symbol:?} has {ch:?} at byte {index}: only upper-case ASCII letters and digits are allowed (\"BTCUSDT\")"
    )]
    InvalidChar {
        /// The symbol as given (cut to 64 bytes).
        symbol: String,
        /// The first offending character.
        ch: char,
        /// Its byte offset.
        index: usize,
    },
}

impl Symbol {
    /// Longest accepted symbol, in bytes (Binance's longest are about 15).
    pub const MAX_LEN: usize = 32;

    /// Validates `s`; see the type's documentation for the rules.
    #[inline]
    pub fn new(s: &str) -> Result<Self, SymbolError> {
        let src = s.as_bytes();
        if src.is_empty() {
            return Err(SymbolError::Empty);
        }
        if src.len() > Self::MAX_LEN {
            return Err(SymbolError::TooLong { len: src.len() });
        }
        let mut bytes = [0u8; Self::MAX_LEN];
        for (i, &b) in src.iter().enumerate() {
            if !(b.is_ascii_uppercase() || b.is_ascii_digit()) {
                return Err(Self::explain(s, i));
            }
            bytes[i] = b;
        }
        Ok(Self {
            len: src.len() as u8,
            bytes,
        })
    }

    /// A symbol from a string literal, usable in `const` items:
    /// `const BTC: Symbol = Symbol::from_static("BTCUSDT");`.
    ///
    /// # Panics
    /// If `s` is not a valid symbol (at compile time, in a `const` context). For input, use
    /// [`Symbol::new`].
    pub const fn from_static(s: &'static str) -> Self {
        let src = s.as_bytes();
        assert!(
            !src.is_empty() && src.len() <= Self::MAX_LEN,
            "a symbol has 1 to 32 bytes"
        );
        let mut bytes = [0u8; Self::MAX_LEN];
        let mut i = 0;
        while i < src.len() {
            let b = src[i];
            assert!(
                b.is_ascii_uppercase() || b.is_ascii_digit(),
                "a symbol has only upper-case ASCII letters and digits"
            );
            bytes[i] = b;
            i += 1;
        }
        Self {
            len: src.len() as u8,
            bytes,
        }
    }

    #[cold]
    fn explain(s: &str, index: usize) -> SymbolError {
        if s.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return SymbolError::LowerCase {
                symbol: s.to_owned(),
                upper: s.to_ascii_uppercase(),
            };
        }
        let ch = s[index..].chars().next().unwrap_or('\u{fffd}');
        SymbolError::InvalidChar {
            symbol: crate::invalid::truncate(s, 64),
            ch,
            index,
        }
    }

    /// The symbol as a string slice.
    #[inline]
    pub fn as_str(&self) -> &str {
        // Only ASCII bytes are ever stored, so this never fails.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl fmt::Debug for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Symbol {
    type Err = SymbolError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<&str> for Symbol {
    type Error = SymbolError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl AsRef<str> for Symbol {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Symbol {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl Hash for Symbol {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialOrd for Symbol {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Symbol {
    fn cmp(&self, other: &Self) -> Ordering {
        // Zero padding sorts before every allowed byte, so comparing the padded arrays
        // orders exactly like comparing the strings.
        self.bytes.cmp(&other.bytes)
    }
}

impl PartialEq<str> for Symbol {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Symbol {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl serde::Serialize for Symbol {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Symbol {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Symbol;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a symbol string such as \"BTCUSDT\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Symbol, E> {
                Symbol::new(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn accepts_binance_symbols() {
        for s in ["BTCUSDT", "1000SATSUSDT", "A", "ETH2"] {
            let sym = Symbol::new(s);
            assert_eq!(sym.as_ref().map(Symbol::as_str), Ok(s));
        }
        let max = "A".repeat(Symbol::MAX_LEN);
        assert!(Symbol::new(&max).is_ok());
    }

    #[test]
    fn refuses_with_a_fix() {
        assert_eq!(Symbol::new(""), Err(SymbolError::Empty));
        let long = "A".repeat(Symbol::MAX_LEN + 1);
        assert_eq!(Symbol::new(&long), Err(SymbolError::TooLong { len: 33 }));
        let lower = Symbol::new("btcUSDT").map_err(|e| e.to_string());
        assert!(
            matches!(&lower, Err(m) if m.contains("\"BTCUSDT\"")),
            "{lower:?}"
        );
        assert!(matches!(
            Symbol::new("BTC-USDT"),
            Err(SymbolError::InvalidChar {
                ch: '-',
                index: 3,
                ..
            })
        ));
        assert!(matches!(
            Symbol::new("BTCé"),
            Err(SymbolError::InvalidChar {
                ch: 'é',
                index: 3,
                ..
            })
        ));
    }

    #[test]
    fn behaves_like_its_str() -> Result<(), SymbolError> {
        let btc = Symbol::new("BTCUSDT")?;
        let eth = Symbol::new("ETHUSDT")?;
        let short = Symbol::new("B")?;
        assert!(btc < eth && short < btc, "orders like str, not by length");
        let mut map = HashMap::new();
        map.insert(btc, 1);
        assert_eq!(map.get("BTCUSDT"), Some(&1));
        assert_eq!(btc, "BTCUSDT");
        assert_eq!(format!("{btc} {btc:?}"), "BTCUSDT \"BTCUSDT\"");
        const SOL: Symbol = Symbol::from_static("SOLUSDT");
        assert_eq!(SOL, Symbol::new("SOLUSDT")?);
        Ok(())
    }
}
