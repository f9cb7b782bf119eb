//! State stores: a typed write cache in front of a task's sled tree.
//!
//! Contract (what makes exactly-once state possible):
//! - The processor reads and writes *decoded* values through [`KeyValueStore`]; nothing is
//!   encoded on the per-record path. Writes stay in the cache, marked dirty.
//! - At commit the runtime encodes the dirty entries ([`KeyValueStore::dirty_changes`]), writes
//!   them to the changelog inside the transaction, and only once the transaction committed
//!   applies them to sled together with the changelog checkpoint, in one atomic batch
//!   ([`KeyValueStore::commit`]). So sled only ever holds committed state, and its checkpoint
//!   says exactly which changelog offset that state corresponds to.
//! - If the transaction aborts, [`KeyValueStore::rollback`] drops the dirty entries; the next
//!   read loads the committed value from sled again.
//!
//! # Change logs
//!
//! A codec with `LOGS_CHANGES` keeps, per key, a whole value under the key itself (prefixed
//! with `0xff` and its 4-byte generation; a value without that prefix was written before the
//! store logged changes and counts as generation 0) and up to [`MAX_CHANGES`] change records
//! under `key ++ [0, n]` (so its keys must not contain a NUL byte), each prefixed with the
//! generation of the whole value it applies to. A commit writes a change record while there
//! are fewer than `MAX_CHANGES` and their bytes stay within four times the whole value's;
//! otherwise it writes the whole value again under the next generation. A read applies the
//! whole value's own changes in order and ignores older generations' (which later commits
//! overwrite): sled and the compacted changelog hold at most `1 + MAX_CHANGES` records per
//! key, and restoring reads at most about five times the whole value.
//!
//! The cache keeps every key the task has touched (clean entries are never evicted): right for
//! tickstream's per-symbol state, whose key space is the symbol list. A bounded cache would be
//! needed for unbounded key spaces.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::private_fs::{create_private_dir_all, restrict_dir};

mod change_log;

use change_log::LogPosition;
#[cfg(test)]
use change_log::MAX_CHANGES;

/// How a store value becomes bytes (for sled and the changelog) and back.
///
/// A codec may also **log changes** (`LOGS_CHANGES`): then a commit writes what changed
/// since the last commit ([`Self::encode_changes`]) instead of the whole value, while that is
/// smaller, and a read applies the changes to the last whole value. See "Change logs" below.
pub trait StateCodec: Sized + Send {
    /// Whether values write their changes rather than themselves at each commit.
    const LOGS_CHANGES: bool = false;

    fn encode(&self, out: &mut Vec<u8>);
    /// Decodes what `encode` wrote; the error says why the bytes are not a value.
    fn decode(bytes: &[u8]) -> Result<Self, String>;

    /// With `LOGS_CHANGES`: what changed since the last [`Self::mark_committed`] (or decode).
    fn encode_changes(&self, _out: &mut Vec<u8>) -> Logged {
        Logged::Whole
    }

    /// With `LOGS_CHANGES`: applies what [`Self::encode_changes`] wrote, in commit order, to
    /// a value decoded from the whole value written before them.
    fn apply_changes(&mut self, _bytes: &[u8]) -> Result<(), String> {
        Err("this store does not log changes".into())
    }

    /// The value, as it is now, is committed (the next changes start from here).
    fn mark_committed(&mut self) {}
}

/// What [`StateCodec::encode_changes`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logged {
    /// The changes are in `out`.
    Changes,
    /// Only the whole value says what changed.
    Whole,
    /// Nothing changed since the last commit.
    Unchanged,
}

/// A plain counter, handy for counting processors and tests.
impl StateCodec for u64 {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_be_bytes());
    }
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let array: [u8; 8] = bytes
            .try_into()
            .map_err(|_| format!("a u64 counter needs 8 bytes, found {}", bytes.len()))?;
        Ok(u64::from_be_bytes(array))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store {store} at {}: {source}; check the disk and permissions of state.dir", path.display())]
    Sled {
        store: String,
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error(
        "state dir {} is in use by another process (another instance with the same \
         application_id and state.dir?): give each instance its own state.dir, or stop the other",
        path.display()
    )]
    Locked { path: PathBuf },
    #[error(
        "state store {store}: the value of key {key:?} does not decode ({reason}); it was written \
         by an incompatible version or is corrupt: delete the state dir to restore from the changelog"
    )]
    Corrupt {
        store: String,
        key: String,
        reason: String,
    },
}

/// `(key, value)` pairs read from a backend, in key order.
type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Data keys and the checkpoint share one sled tree (so one batch updates both atomically);
/// the first byte keeps them apart.
const DATA_PREFIX: u8 = b'd';
const CHECKPOINT_KEY: &[u8] = b"c";

/// One task's slice of the state directory: a sled tree named `<store>-<partition>`.
#[derive(Clone)]
pub(crate) struct TaskTree {
    tree: sled::Tree,
    name: String,
    path: PathBuf,
}

impl TaskTree {
    fn error(&self, source: sled::Error) -> StoreError {
        StoreError::Sled {
            store: self.name.clone(),
            path: self.path.clone(),
            source,
        }
    }

    fn data_key(key: &[u8]) -> Vec<u8> {
        let mut prefixed = Vec::with_capacity(key.len() + 1);
        prefixed.push(DATA_PREFIX);
        prefixed.extend_from_slice(key);
        prefixed
    }

    fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>, StoreError> {
        self.tree
            .get(Self::data_key(key))
            .map_err(|e| self.error(e))
    }

    /// Data entries whose key starts with `prefix` (keys without the data prefix byte).
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Entries, StoreError> {
        self.tree
            .scan_prefix(Self::data_key(prefix))
            .map(|entry| {
                let (key, value) = entry.map_err(|e| self.error(e))?;
                Ok((key[1..].to_vec(), value.to_vec()))
            })
            .collect()
    }

    /// Every data key (without the data prefix byte), in key order.
    fn keys(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.tree
            .scan_prefix([DATA_PREFIX])
            .keys()
            .map(|key| Ok(key.map_err(|e| self.error(e))?[1..].to_vec()))
            .collect()
    }

    /// The changelog offset this tree's contents correspond to (next offset to read).
    pub(crate) fn checkpoint(&self) -> Result<Option<i64>, StoreError> {
        let raw = self.tree.get(CHECKPOINT_KEY).map_err(|e| self.error(e))?;
        Ok(raw.and_then(|bytes| {
            <[u8; 8]>::try_from(bytes.as_ref())
                .ok()
                .map(i64::from_be_bytes)
        }))
    }

    /// Applies `changes` and moves the checkpoint to `checkpoint`, atomically.
    pub(crate) fn apply<'c>(
        &self,
        changes: impl IntoIterator<Item = (&'c [u8], Option<&'c [u8]>)>,
        checkpoint: Option<i64>,
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (key, value) in changes {
            match value {
                Some(bytes) => batch.insert(Self::data_key(key), bytes),
                None => batch.remove(Self::data_key(key)),
            }
        }
        if let Some(offset) = checkpoint {
            batch.insert(CHECKPOINT_KEY, &offset.to_be_bytes());
        }
        self.tree.apply_batch(batch).map_err(|e| self.error(e))
    }

    /// Forgets everything, checkpoint included (before a full restore).
    pub(crate) fn wipe(&self) -> Result<(), StoreError> {
        self.tree.clear().map_err(|e| self.error(e))
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }
}

/// The state directory of one application instance: one sled database holding a tree per
/// (store, task), plus the instance's stable id.
#[derive(Clone)]
pub struct StateDir {
    db: sled::Db,
    path: PathBuf,
}

impl StateDir {
    /// Opens (creating if needed) `<state_dir>/<application_id>`. Missing directories are
    /// created 0700, and this instance's own (`<application_id>` and sled's below it) are
    /// made 0700 even if they exist: sled creates its files by the umask, the directory keeps
    /// them private.
    pub fn open(state_dir: &Path, application_id: &str) -> Result<Self, StoreError> {
        let path = state_dir.join(application_id);
        let error = |source| StoreError::Sled {
            store: "(state dir)".into(),
            path: path.clone(),
            source,
        };
        let sled_path = path.join("sled");
        for dir in [&path, &sled_path] {
            create_private_dir_all(dir)
                .and_then(|()| restrict_dir(dir))
                .map_err(|e| error(sled::Error::Io(e)))?;
        }
        let config = sled::Config::new()
            .path(sled_path)
            // sled's default cache is 1 GiB; state here is small and hot keys live in our cache.
            .cache_capacity(64 * 1024 * 1024)
            .mode(sled::Mode::HighThroughput)
            .flush_every_ms(Some(500));
        let db = open_waiting_for_lock(&config).map_err(|source| match source {
            source if is_lock_held(&source) => StoreError::Locked { path: path.clone() },
            source => error(source),
        })?;
        Ok(Self { db, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn task_tree(&self, store: &str, partition: i32) -> Result<TaskTree, StoreError> {
        let name = format!("{store}-{partition}");
        let tree = self
            .db
            .open_tree(&name)
            .map_err(|source| StoreError::Sled {
                store: name.clone(),
                path: self.path.clone(),
                source,
            })?;
        Ok(TaskTree {
            tree,
            name,
            path: self.path.clone(),
        })
    }

    /// Bytes on disk (a metrics gauge; sled computes it by walking its files).
    pub(crate) fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    /// Makes everything applied so far durable (on clean shutdown).
    pub(crate) fn flush(&self) -> Result<(), StoreError> {
        self.db
            .flush()
            .map(|_| ())
            .map_err(|source| StoreError::Sled {
                store: "(state dir)".into(),
                path: self.path.clone(),
                source,
            })
    }
}

/// How long [`StateDir::open`] waits for sled's lock on the state dir. sled releases the lock
/// of a dropped database on its flusher thread, a moment after the drop (spacejam/sled#1289),
/// so an application reopened in the same process can find it still held for a few
/// milliseconds; a lock held for longer belongs to another process.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Opens `config`'s database, retrying while its lock is held, for at most [`LOCK_WAIT`].
fn open_waiting_for_lock(config: &sled::Config) -> sled::Result<sled::Db> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match config.open() {
            Err(error) if is_lock_held(&error) && Instant::now() < deadline => {
                // sled's lock gives no notice of its release: poll it.
                std::thread::sleep(Duration::from_millis(20));
            }
            result => return result,
        }
    }
}

/// sled reports a held lock as an `Other` I/O error with this text (sled 0.34 `config.rs`).
fn is_lock_held(error: &sled::Error) -> bool {
    matches!(error, sled::Error::Io(io) if io.to_string().starts_with("could not acquire lock"))
}

/// Where committed values live.
enum Backend {
    Sled(TaskTree),
    /// Committed values, encoded exactly as sled would hold them: the in-process and test
    /// stores keep the same commit/rollback semantics as the persistent one.
    Memory(BTreeMap<Box<[u8]>, Vec<u8>>),
}

impl Backend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(match self {
            Self::Sled(tree) => tree.get(key)?.map(|bytes| bytes.to_vec()),
            Self::Memory(map) => map.get(key).cloned(),
        })
    }

    /// Every stored key, in key order (change records' keys included).
    fn keys(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(match self {
            Self::Sled(tree) => tree.keys()?,
            Self::Memory(map) => map.keys().map(|k| k.to_vec()).collect(),
        })
    }

    /// Every `(key, value)` whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Entries, StoreError> {
        match self {
            Self::Sled(tree) => tree.scan_prefix(prefix),
            Self::Memory(map) => Ok(map
                .range::<[u8], _>((
                    std::ops::Bound::Included(prefix),
                    std::ops::Bound::Unbounded,
                ))
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.to_vec(), v.clone()))
                .collect()),
        }
    }
}

/// One encoded change for the changelog and sled: `(key, Some(value))`, or `(key, None)` for a
/// delete (a changelog tombstone).
pub(crate) type Change = (Box<[u8]>, Option<Vec<u8>>);

struct Slot<S> {
    /// `None`: absent (never written, or deleted in this batch).
    value: Option<S>,
    dirty: bool,
    /// Change-logging codecs: the committed log position, and the one the staged commit
    /// moves it to.
    log: LogPosition,
    staged: Option<LogPosition>,
    /// The value was replaced (`put`): the next commit writes it whole.
    replaced: bool,
}

/// A task's key-value store: decoded values cached in memory, committed state in sled.
pub struct KeyValueStore<S> {
    name: String,
    backend: Backend,
    cache: HashMap<Box<[u8]>, Slot<S>>,
    dirty: Vec<Box<[u8]>>,
}

impl<S: StateCodec> KeyValueStore<S> {
    /// A store whose committed state lives in memory only: for testing processors.
    pub fn in_memory(name: &str) -> Self {
        Self::with_backend(name.to_owned(), Backend::Memory(BTreeMap::new()))
    }

    pub(crate) fn persistent(tree: TaskTree) -> Self {
        Self::with_backend(tree.name().to_owned(), Backend::Sled(tree))
    }

    fn with_backend(name: String, backend: Backend) -> Self {
        Self {
            name,
            backend,
            cache: HashMap::new(),
            dirty: Vec::new(),
        }
    }

    /// The cache slot of `key`, loaded from sled on first touch. A function over the fields
    /// (not `&mut self`) so callers can update `dirty` while holding the slot.
    fn slot<'c>(
        cache: &'c mut HashMap<Box<[u8]>, Slot<S>>,
        backend: &Backend,
        name: &str,
        key: &[u8],
    ) -> Result<&'c mut Slot<S>, StoreError> {
        if !cache.contains_key(key) {
            let corrupt = |reason: String| StoreError::Corrupt {
                store: name.to_owned(),
                key: String::from_utf8_lossy(key).into_owned(),
                reason,
            };
            let (value, log) = if S::LOGS_CHANGES {
                change_log::load::<S>(backend, key).map_err(|e| e.into_store(corrupt))?
            } else {
                let value = backend.get(key)?.map(|bytes| S::decode(&bytes));
                (value.transpose().map_err(corrupt)?, LogPosition::default())
            };
            return Ok(cache.entry(key.into()).or_insert(Slot {
                value,
                dirty: false,
                log,
                staged: None,
                replaced: false,
            }));
        }
        Ok(cache
            .get_mut(key)
            .expect("present: checked by contains_key above"))
    }

    pub fn get(&mut self, key: &[u8]) -> Result<Option<&S>, StoreError> {
        Ok(Self::slot(&mut self.cache, &self.backend, &self.name, key)?
            .value
            .as_ref())
    }

    /// A mutable reference to the value, which will be written at the next commit.
    pub fn get_mut(&mut self, key: &[u8]) -> Result<Option<&mut S>, StoreError> {
        let slot = Self::slot(&mut self.cache, &self.backend, &self.name, key)?;
        if slot.value.is_some() && !slot.dirty {
            slot.dirty = true;
            self.dirty.push(key.into());
        }
        Ok(slot.value.as_mut())
    }

    /// Inserts or replaces the value of `key`.
    /// Every key that has a value, as this batch sees it (committed keys not deleted since,
    /// and keys put since), in key order. Reads every committed key: for a punctuation's
    /// occasional sweep, not per record.
    pub fn keys(&self) -> Result<Vec<Box<[u8]>>, StoreError> {
        let mut keys: std::collections::BTreeSet<Box<[u8]>> = self
            .backend
            .keys()?
            .into_iter()
            // A change-logging store's change records sit under `key\0seq`; its keys have no NUL.
            .filter(|k| !S::LOGS_CHANGES || !k.contains(&0))
            .map(Vec::into_boxed_slice)
            .collect();
        for (key, slot) in &self.cache {
            if slot.value.is_some() {
                keys.insert(key.clone());
            } else {
                keys.remove(key);
            }
        }
        Ok(keys.into_iter().collect())
    }

    pub fn put(&mut self, key: &[u8], value: S) -> Result<(), StoreError> {
        self.write(key, Some(value))
    }

    pub fn delete(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.write(key, None)
    }

    fn write(&mut self, key: &[u8], value: Option<S>) -> Result<(), StoreError> {
        let slot = Self::slot(&mut self.cache, &self.backend, &self.name, key)?;
        slot.value = value;
        slot.replaced = true;
        if !slot.dirty {
            slot.dirty = true;
            self.dirty.push(key.into());
        }
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many keys changed since the last commit.
    pub(crate) fn dirty_len(&self) -> usize {
        self.dirty.len()
    }

    /// The changes since the last commit, encoded: `(key, Some(value))` or `(key, None)` for a
    /// delete (a changelog tombstone); for a change-logging codec, change records or whole
    /// values with their generation (see "Change logs"). Nothing is marked clean until
    /// [`Self::commit`].
    pub(crate) fn dirty_changes(&mut self) -> Vec<Change> {
        let mut changes = Vec::with_capacity(self.dirty.len());
        for key in &self.dirty {
            let Some(slot) = self.cache.get_mut(key) else {
                continue;
            };
            if !S::LOGS_CHANGES {
                let value = slot.value.as_ref().map(|v| {
                    let mut bytes = Vec::new();
                    v.encode(&mut bytes);
                    bytes
                });
                changes.push((key.clone(), value));
                continue;
            }
            slot.staged = Some(match &slot.value {
                Some(value) => change_log::stage(key, value, slot.log, slot.replaced, &mut changes),
                None => change_log::stage_delete(key, slot.log, &mut changes),
            });
        }
        changes
    }

    /// The transaction holding `changes` committed: make them durable with the changelog
    /// position `checkpoint` and mark the cache clean.
    pub(crate) fn commit(
        &mut self,
        changes: &[Change],
        checkpoint: Option<i64>,
    ) -> Result<(), StoreError> {
        match &mut self.backend {
            Backend::Sled(tree) => tree.apply(
                changes.iter().map(|(k, v)| (&k[..], v.as_deref())),
                checkpoint,
            )?,
            Backend::Memory(map) => {
                for (key, value) in changes {
                    match value {
                        Some(bytes) => map.insert(key.clone(), bytes.clone()),
                        None => map.remove(key),
                    };
                }
            }
        }
        for key in self.dirty.drain(..) {
            if let Some(slot) = self.cache.get_mut(&key) {
                slot.dirty = false;
                slot.replaced = false;
                if let Some(log) = slot.staged.take() {
                    slot.log = log;
                }
                if let Some(value) = &mut slot.value {
                    value.mark_committed();
                }
            }
        }
        Ok(())
    }

    /// The transaction aborted: forget every uncommitted change. The next read of those keys
    /// loads the committed value from sled.
    pub(crate) fn rollback(&mut self) {
        for key in self.dirty.drain(..) {
            self.cache.remove(&key);
        }
    }
}

/// Test fixtures (feature `testing`): the runtime's commit and restore, for processor tests.
#[cfg(any(test, feature = "testing"))]
impl<S: StateCodec> KeyValueStore<S> {
    /// What an aborted transaction does to its task's store: every change since the last
    /// commit forgotten (the runtime then calls [`crate::Processor::rolled_back`]).
    pub fn abort(&mut self) {
        self.rollback();
    }

    /// What a task restored from the changelog right after this store's next commit starts
    /// from — a new in-memory store holding the committed state plus this store's uncommitted
    /// changes, through their encoding as the changelog carries them — and how many keys that
    /// commit writes to the changelog. This store's values and commit state are left as they
    /// are.
    pub fn restored_after_commit(&mut self) -> Result<(Self, usize), StoreError> {
        let mut committed: BTreeMap<Box<[u8]>, Vec<u8>> = match &self.backend {
            Backend::Memory(map) => map.clone(),
            Backend::Sled(tree) => {
                let mut map = BTreeMap::new();
                for entry in tree.tree.scan_prefix([DATA_PREFIX]) {
                    let (key, value) = entry.map_err(|e| tree.error(e))?;
                    map.insert(Box::from(&key[1..]), value.to_vec());
                }
                map
            }
        };
        let changes = self.dirty_changes();
        for (key, value) in &changes {
            match value {
                Some(bytes) => committed.insert(key.clone(), bytes.clone()),
                None => committed.remove(key),
            };
        }
        let restored = Self::with_backend(self.name.clone(), Backend::Memory(committed));
        Ok((restored, changes.len()))
    }
}

#[cfg(test)]
mod tests;
