//! [`Routing`]: one name for every symbol, or one per symbol (raw topics, price collections).

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::symbol::Symbol;

/// One name for every symbol, or a name per symbol: a TOML string (`"prices.raw"`) or a
/// table (`{ BTCUSDT = "btc", ETHUSDT = "eth" }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routing {
    /// The same name for every symbol.
    Shared(String),
    /// A name per symbol; every configured symbol has one.
    PerSymbol(BTreeMap<Symbol, String>),
}

impl Routing {
    /// The name for `symbol` (`Shared`: always; `PerSymbol`: if it has one).
    pub fn for_symbol(&self, symbol: &str) -> Option<&str> {
        match self {
            Self::Shared(name) => Some(name),
            Self::PerSymbol(map) => map.get(symbol).map(String::as_str),
        }
    }

    /// Every distinct name, in symbol order for `PerSymbol`.
    pub fn names(&self) -> Vec<&str> {
        match self {
            Self::Shared(name) => vec![name.as_str()],
            Self::PerSymbol(map) => {
                let mut names: Vec<&str> = Vec::with_capacity(map.len());
                for name in map.values() {
                    if !names.contains(&name.as_str()) {
                        names.push(name);
                    }
                }
                names
            }
        }
    }
}

impl<'de> Deserialize<'de> for Routing {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Routing;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a name for every symbol (\"prices.raw\") or a table of symbol = name \
                     ({ BTCUSDT = \"btc\", ETHUSDT = \"eth\" })",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Routing, E> {
                Ok(Routing::Shared(v.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Routing, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((symbol, name)) = map.next_entry::<Symbol, String>()? {
                    out.insert(symbol, name);
                }
                Ok(Routing::PerSymbol(out))
            }
        }
        d.deserialize_any(Visitor)
    }
}
