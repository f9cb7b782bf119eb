//! The framing of change-logging stores (see the store's "Change logs"): change keys,
//! generations, log positions.

use super::{Backend, Change, Logged, StateCodec, StoreError};

/// How many change records a key may have after its whole value; then the whole value is
/// written again. With [`CHANGE_BYTES_PER_WHOLE_BYTE`] it bounds what a key holds in sled and
/// in the compacted changelog: one whole value and this many changes.
pub(super) const MAX_CHANGES: u8 = 16;

/// The changes after a whole value may add up to this many times its size; then the whole
/// value is written again. A restore reads at most `1 +` this many times a whole value per
/// key; a commit writes, amortised, about `whole / MAX_CHANGES + change` bytes per key where it
/// wrote `whole` before (with a 440-byte window state and 164-byte changes: 191 bytes).
const CHANGE_BYTES_PER_WHOLE_BYTE: usize = 4;

/// Where a change-logging key stands: the generation of its last whole value (changes of
/// older generations are stale), how many changes followed it, and their size against its.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct LogPosition {
    generation: u32,
    changes: u8,
    change_bytes: usize,
    whole_bytes: usize,
}

/// The key of change record `seq` of `key`.
fn change_key(key: &[u8], seq: u8) -> Box<[u8]> {
    let mut bytes = change_prefix(key);
    bytes.push(seq);
    bytes.into_boxed_slice()
}

fn change_prefix(key: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(key.len() + 2);
    bytes.extend_from_slice(key);
    bytes.push(0);
    bytes
}

/// The first byte of a whole value written by a change-logging store; a whole value without it
/// was written before the store logged changes, and counts as generation 0.
const WHOLE_MARKER: u8 = 0xff;

/// A whole value's generation and payload.
fn split_whole(bytes: &[u8]) -> Result<(u32, &[u8]), LoadError> {
    match bytes.split_first() {
        Some((&WHOLE_MARKER, framed)) => split_generation(framed),
        _ => Ok((0, bytes)),
    }
}

/// A change record's generation and payload.
fn split_generation(bytes: &[u8]) -> Result<(u32, &[u8]), LoadError> {
    match bytes.split_first_chunk::<4>() {
        Some((generation, rest)) => Ok((u32::from_le_bytes(*generation), rest)),
        None => Err(LoadError::Corrupt(format!(
            "a change-logged record needs a 4-byte generation, found {} byte(s)",
            bytes.len()
        ))),
    }
}

/// Why a change-logged key did not load.
pub(super) enum LoadError {
    Store(StoreError),
    Corrupt(String),
}

impl From<StoreError> for LoadError {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

impl LoadError {
    pub(super) fn into_store(self, corrupt: impl FnOnce(String) -> StoreError) -> StoreError {
        match self {
            Self::Store(error) => error,
            Self::Corrupt(reason) => corrupt(reason),
        }
    }
}

/// A change-logging key: its whole value with the changes of its generation applied in
/// order (see "Change logs").
pub(super) fn load<S: StateCodec>(
    backend: &Backend,
    key: &[u8],
) -> Result<(Option<S>, LogPosition), LoadError> {
    if key.contains(&0) {
        return Err(LoadError::Corrupt(
            "keys of a change-logging store cannot contain a NUL byte".into(),
        ));
    }
    let Some(whole) = backend.get(key)? else {
        return Ok((None, LogPosition::default()));
    };
    let (generation, bytes) = split_whole(&whole)?;
    let mut value = S::decode(bytes).map_err(LoadError::Corrupt)?;
    let mut log = LogPosition {
        generation,
        whole_bytes: whole.len(),
        ..LogPosition::default()
    };
    let mut changes: Vec<(u8, Vec<u8>)> = Vec::new();
    for (change_key, bytes) in backend.scan_prefix(&change_prefix(key))? {
        let seq = match change_key[key.len() + 1..] {
            [seq] => seq,
            _ => continue,
        };
        if split_generation(&bytes)?.0 == generation {
            changes.push((seq, bytes));
        }
    }
    changes.sort_by_key(|(seq, _)| *seq);
    for (expected, (seq, bytes)) in changes.iter().enumerate() {
        if usize::from(*seq) != expected {
            return Err(LoadError::Corrupt(format!(
                "change {expected} of generation {generation} is missing (found {seq})"
            )));
        }
        value
            .apply_changes(&bytes[4..])
            .map_err(|reason| LoadError::Corrupt(format!("change {seq}: {reason}")))?;
        log.changes += 1;
        log.change_bytes += bytes.len();
    }
    value.mark_committed();
    Ok((Some(value), log))
}

/// Stages the commit of a change-logged `value`: a change record while changes stay few and
/// smaller than the whole value, else the whole value under the next generation. Returns the
/// log position the commit moves to.
pub(super) fn stage<S: StateCodec>(
    key: &[u8],
    value: &S,
    log: LogPosition,
    replaced: bool,
    changes: &mut Vec<Change>,
) -> LogPosition {
    let mut bytes = log.generation.to_le_bytes().to_vec();
    let logged = if replaced || log.whole_bytes == 0 {
        Logged::Whole
    } else {
        value.encode_changes(&mut bytes)
    };
    match logged {
        Logged::Unchanged => log,
        Logged::Changes
            if log.changes < MAX_CHANGES
                && log.change_bytes + bytes.len()
                    <= log.whole_bytes * CHANGE_BYTES_PER_WHOLE_BYTE =>
        {
            let change_bytes = log.change_bytes + bytes.len();
            changes.push((change_key(key, log.changes), Some(bytes)));
            LogPosition {
                changes: log.changes + 1,
                change_bytes,
                ..log
            }
        }
        Logged::Changes | Logged::Whole => {
            let generation = log.generation.wrapping_add(1);
            bytes.clear();
            bytes.push(WHOLE_MARKER);
            bytes.extend_from_slice(&generation.to_le_bytes());
            value.encode(&mut bytes);
            let whole_bytes = bytes.len();
            changes.push((key.into(), Some(bytes)));
            LogPosition {
                generation,
                changes: 0,
                change_bytes: 0,
                whole_bytes,
            }
        }
    }
}

/// Stages a delete: tombstones for the whole value and every change slot it may have.
pub(super) fn stage_delete(key: &[u8], log: LogPosition, changes: &mut Vec<Change>) -> LogPosition {
    changes.push((key.into(), None));
    for seq in 0..MAX_CHANGES {
        changes.push((change_key(key, seq), None));
    }
    LogPosition {
        generation: log.generation,
        ..LogPosition::default()
    }
}
