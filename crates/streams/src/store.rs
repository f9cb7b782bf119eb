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
//! The cache keeps every key the task has touched (clean entries are never evicted): right for
//! tickstream's per-symbol state, whose key space is the symbol list. A bounded cache would be
//! needed for unbounded key spaces.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::private_fs::{create_private_dir_all, restrict_dir};

/// How a store value becomes bytes (for sled and the changelog) and back.
pub trait StateCodec: Sized + Send {
    fn encode(&self, out: &mut Vec<u8>);
    /// Decodes what `encode` wrote; the error says why the bytes are not a value.
    fn decode(bytes: &[u8]) -> Result<Self, String>;
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
        "state store {store}: the value of key {key:?} does not decode ({reason}); it was written \
         by an incompatible version or is corrupt: delete the state dir to restore from the changelog"
    )]
    Corrupt {
        store: String,
        key: String,
        reason: String,
    },
}

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
        let db = sled::Config::new()
            .path(sled_path)
            // sled's default cache is 1 GiB; state here is small and hot keys live in our cache.
            .cache_capacity(64 * 1024 * 1024)
            .mode(sled::Mode::HighThroughput)
            .flush_every_ms(Some(500))
            .open()
            .map_err(error)?;
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

/// Where committed values live.
enum Backend {
    Sled(TaskTree),
    /// Committed values, encoded exactly as sled would hold them: the in-process and test
    /// stores keep the same commit/rollback semantics as the persistent one.
    Memory(HashMap<Box<[u8]>, Vec<u8>>),
}

/// One encoded change for the changelog and sled: `(key, Some(value))`, or `(key, None)` for a
/// delete (a changelog tombstone).
pub(crate) type Change = (Box<[u8]>, Option<Vec<u8>>);

struct Slot<S> {
    /// `None`: absent (never written, or deleted in this batch).
    value: Option<S>,
    dirty: bool,
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
        Self::with_backend(name.to_owned(), Backend::Memory(HashMap::new()))
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
            let decoded = match backend {
                Backend::Sled(tree) => tree.get(key)?.map(|bytes| S::decode(&bytes)),
                Backend::Memory(map) => map.get(key).map(|bytes| S::decode(bytes)),
            };
            let value = match decoded {
                Some(result) => Some(result.map_err(|reason| StoreError::Corrupt {
                    store: name.to_owned(),
                    key: String::from_utf8_lossy(key).into_owned(),
                    reason,
                })?),
                None => None,
            };
            return Ok(cache.entry(key.into()).or_insert(Slot {
                value,
                dirty: false,
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
    pub fn put(&mut self, key: &[u8], value: S) -> Result<(), StoreError> {
        self.write(key, Some(value))
    }

    pub fn delete(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.write(key, None)
    }

    fn write(&mut self, key: &[u8], value: Option<S>) -> Result<(), StoreError> {
        let slot = Self::slot(&mut self.cache, &self.backend, &self.name, key)?;
        slot.value = value;
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
    /// delete (a changelog tombstone). Nothing is marked clean until [`Self::commit`].
    pub(crate) fn dirty_changes(&self) -> Vec<Change> {
        self.dirty
            .iter()
            .map(|key| {
                let value = self
                    .cache
                    .get(key)
                    .and_then(|slot| slot.value.as_ref())
                    .map(|v| {
                        let mut bytes = Vec::new();
                        v.encode(&mut bytes);
                        bytes
                    });
                (key.clone(), value)
            })
            .collect()
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
    /// What a task restored from the changelog right after this store's next commit starts
    /// from — a new in-memory store holding the committed state plus this store's uncommitted
    /// changes, through their encoding as the changelog carries them — and how many keys that
    /// commit writes to the changelog. This store is left as it is.
    pub fn restored_after_commit(&self) -> Result<(Self, usize), StoreError> {
        let mut committed: HashMap<Box<[u8]>, Vec<u8>> = match &self.backend {
            Backend::Memory(map) => map.clone(),
            Backend::Sled(tree) => {
                let mut map = HashMap::new();
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
mod tests {
    use super::*;

    fn open_store(dir: &Path) -> KeyValueStore<u64> {
        let state = StateDir::open(dir, "app").expect("open state dir");
        KeyValueStore::persistent(state.task_tree("counts", 0).expect("tree"))
    }

    #[test]
    fn committed_changes_survive_a_reopen_and_rolled_back_ones_do_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut store = open_store(dir.path());
            store.put(b"a", 1).expect("put");
            store.put(b"b", 2).expect("put");
            let changes = store.dirty_changes();
            assert_eq!(changes.len(), 2);
            store.commit(&changes, Some(7)).expect("commit");
            assert_eq!(store.dirty_len(), 0);

            *store.get_mut(b"a").expect("get").expect("present") += 10;
            store.delete(b"b").expect("delete");
            assert_eq!(store.get(b"a").expect("get"), Some(&11));
            store.rollback();
            assert_eq!(
                store.get(b"a").expect("get"),
                Some(&1),
                "rollback restores the committed value"
            );
            assert_eq!(store.get(b"b").expect("get"), Some(&2));
        }
        let mut reopened = open_store(dir.path());
        assert_eq!(reopened.get(b"a").expect("get"), Some(&1));
        let Backend::Sled(tree) = &reopened.backend else {
            panic!("persistent store")
        };
        assert_eq!(tree.checkpoint().expect("checkpoint"), Some(7));
    }

    #[test]
    fn deletes_become_tombstones_and_remove_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut store = open_store(dir.path());
            store.put(b"k", 5).expect("put");
            let changes = store.dirty_changes();
            store.commit(&changes, Some(1)).expect("commit");
            store.delete(b"k").expect("delete");
            let changes = store.dirty_changes();
            assert_eq!(changes, vec![(Box::from(&b"k"[..]), None)]);
            store.commit(&changes, Some(2)).expect("commit");
        }
        let mut reopened = open_store(dir.path());
        assert_eq!(reopened.get(b"k").expect("get"), None);
    }

    #[test]
    fn a_value_that_does_not_decode_is_reported_as_corruption_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(dir.path(), "app").expect("open");
        let tree = state.task_tree("counts", 3).expect("tree");
        tree.apply([(&b"x"[..], Some(&b"short"[..]))], None)
            .expect("apply");
        let mut store = KeyValueStore::<u64>::persistent(tree);
        let error = store.get(b"x").expect_err("5 bytes are not a u64");
        assert!(
            error.to_string().contains("delete the state dir"),
            "{error}"
        );
    }

    #[test]
    fn a_store_restored_after_a_commit_holds_the_committed_and_the_uncommitted_values() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = open_store(dir.path());
        store.put(b"kept", 1).expect("put");
        store.put(b"gone", 2).expect("put");
        let changes = store.dirty_changes();
        store.commit(&changes, Some(1)).expect("commit");
        store.put(b"new", 3).expect("put");
        store.delete(b"gone").expect("delete");

        let (mut restored, written) = store.restored_after_commit().expect("restore");
        assert_eq!(
            written, 2,
            "the next commit writes `new` and a tombstone for `gone`"
        );
        assert_eq!(restored.get(b"kept").expect("get"), Some(&1));
        assert_eq!(restored.get(b"new").expect("get"), Some(&3));
        assert_eq!(restored.get(b"gone").expect("get"), None);
        assert_eq!(store.dirty_len(), 2, "the original store is untouched");
    }
}
