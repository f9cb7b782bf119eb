//! A symbol's windows as a state-store value.
//!
//! Restoring windows needs the window configuration, which the store's codec does not have:
//! so decoding only keeps the committed bytes ([`SymbolState::Committed`]), and the processor
//! restores them — with its configuration — the first time the symbol is touched
//! ([`SymbolState::live`]). From then on the store's cache holds the live windows, and the
//! runtime snapshots them at each commit.

use std::sync::Arc;

use tickstream_streams::{StateCodec, StoreError};
use tickstream_window::{Config, SymbolWindows};

/// A store value: a symbol's windows, live or still as committed bytes.
#[derive(Debug, Clone)]
pub enum SymbolState {
    /// As read from the store: a window snapshot not restored yet.
    Committed(Vec<u8>),
    /// Restored (or new) and being updated.
    Live(SymbolWindows),
}

impl SymbolState {
    /// The live windows, restoring them under `config` first if needed. A snapshot that does
    /// not restore — written under other windows, or by a newer version — stops the task: its
    /// committed state and this configuration do not go together.
    pub fn live(
        &mut self,
        config: &Arc<Config>,
        store: &str,
        key: &[u8],
    ) -> Result<&mut SymbolWindows, StoreError> {
        if let Self::Committed(bytes) = self {
            let windows = SymbolWindows::restore(Arc::clone(config), bytes).map_err(|error| {
                StoreError::Corrupt {
                    store: store.to_owned(),
                    key: String::from_utf8_lossy(key).into_owned(),
                    reason: format!(
                        "{error}. To start over under the new configuration, stop every \
                         instance, delete the state dir and the changelog topic, and reset the \
                         input offsets (or use a new application_id)"
                    ),
                }
            })?;
            *self = Self::Live(windows);
        }
        match self {
            Self::Live(windows) => Ok(windows),
            Self::Committed(_) => unreachable!("restored just above"),
        }
    }
}

impl StateCodec for SymbolState {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Committed(bytes) => out.extend_from_slice(bytes),
            Self::Live(windows) => windows.snapshot_into(out),
        }
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        Ok(Self::Committed(bytes.to_vec()))
    }
}
