//! A symbol's windows as a state-store value.
//!
//! Restoring windows needs the window configuration, which the store's codec does not have:
//! so decoding only keeps the committed bytes ([`SymbolState::Committed`]: the last snapshot
//! and the change records after it), and the processor restores them — with its
//! configuration — the first time the symbol is touched ([`SymbolState::live`]). From then on
//! the store's cache holds the live windows.
//!
//! The store logs changes: a commit writes what changed in a symbol's windows since the
//! last one (its new ticks and the sums, `SymbolWindows::changes_into`), and a snapshot only
//! when changes would not be smaller (see the store's "Change logs"). With many symbols and
//! a 5-minute window that is a fraction of the bytes of a snapshot per commit.

use std::sync::Arc;

use tickstream_streams::{Logged, StateCodec, StoreError};
use tickstream_window::{Config, SymbolWindows};

/// A store value: a symbol's windows, live or still as committed bytes.
#[derive(Debug, Clone)]
pub enum SymbolState {
    /// As read from the store: a window snapshot and the change records after it (in commit
    /// order), not restored yet.
    Committed {
        snapshot: Vec<u8>,
        changes: Vec<Vec<u8>>,
    },
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
        if let Self::Committed { snapshot, changes } = self {
            let restore = || {
                let mut windows = SymbolWindows::restore(Arc::clone(config), snapshot)?;
                for change in changes.iter() {
                    windows.apply_changes(change)?;
                }
                Ok::<_, tickstream_window::SnapshotError>(windows)
            };
            let windows = restore().map_err(|error| StoreError::Corrupt {
                store: store.to_owned(),
                key: String::from_utf8_lossy(key).into_owned(),
                reason: format!(
                    "{error}. To start over under the new configuration, stop every \
                         instance, delete the state dir and the changelog topic, and reset the \
                         input offsets (or use a new application_id)"
                ),
            })?;
            *self = Self::Live(windows);
        }
        match self {
            Self::Live(windows) => Ok(windows),
            Self::Committed { .. } => unreachable!("restored just above"),
        }
    }
}

impl StateCodec for SymbolState {
    const LOGS_CHANGES: bool = true;

    /// A state never restored is encoded as its snapshot: only a state the processor has
    /// touched (restored) is ever written, so a `Committed` one has no changes then.
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Committed { snapshot, .. } => out.extend_from_slice(snapshot),
            Self::Live(windows) => {
                // `snapshot_into` clears its buffer: the store's prefix must stay.
                let mut snapshot = Vec::new();
                windows.snapshot_into(&mut snapshot);
                out.extend_from_slice(&snapshot);
            }
        }
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        Ok(Self::Committed {
            snapshot: bytes.to_vec(),
            changes: Vec::new(),
        })
    }

    fn encode_changes(&self, out: &mut Vec<u8>) -> Logged {
        let Self::Live(windows) = self else {
            return Logged::Unchanged;
        };
        if windows.changes_into(out) {
            Logged::Changes
        } else {
            Logged::Whole
        }
    }

    fn apply_changes(&mut self, bytes: &[u8]) -> Result<(), String> {
        match self {
            Self::Committed { changes, .. } => {
                changes.push(bytes.to_vec());
                Ok(())
            }
            Self::Live(windows) => windows.apply_changes(bytes).map_err(|e| e.to_string()),
        }
    }

    fn mark_committed(&mut self) {
        if let Self::Live(windows) = self {
            windows.mark_committed();
        }
    }
}
