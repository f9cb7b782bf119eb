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

/// A change-logging value for the tests: numbers appended; the changes are the new ones.
#[derive(Debug, Clone, PartialEq)]
struct Appended {
    numbers: Vec<u8>,
    committed: usize,
}

impl StateCodec for Appended {
    const LOGS_CHANGES: bool = true;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.numbers);
    }
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        Ok(Self {
            numbers: bytes.to_vec(),
            committed: bytes.len(),
        })
    }
    fn encode_changes(&self, out: &mut Vec<u8>) -> Logged {
        out.extend_from_slice(&self.numbers[self.committed..]);
        Logged::Changes
    }
    fn apply_changes(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.numbers.extend_from_slice(bytes);
        Ok(())
    }
    fn mark_committed(&mut self) {
        self.committed = self.numbers.len();
    }
}

fn append(store: &mut KeyValueStore<Appended>, key: &[u8], n: u8) {
    match store.get_mut(key).expect("get") {
        Some(value) => value.numbers.push(n),
        None => store
            .put(
                key,
                Appended {
                    numbers: vec![n],
                    committed: 0,
                },
            )
            .expect("put"),
    }
}

fn commit(store: &mut KeyValueStore<Appended>, offset: i64) -> Vec<Change> {
    let changes = store.dirty_changes();
    store.commit(&changes, Some(offset)).expect("commit");
    changes
}

fn open_logged(dir: &Path) -> KeyValueStore<Appended> {
    let state = StateDir::open(dir, "app").expect("open state dir");
    KeyValueStore::persistent(state.task_tree("logged", 0).expect("tree"))
}

#[test]
fn a_change_logging_store_writes_changes_then_a_whole_value_and_reads_both_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut written = Vec::new();
    {
        let mut store = open_logged(dir.path());
        for n in 0..40u8 {
            // Several numbers per commit: changes of 2 + 4 bytes against a growing value.
            append(&mut store, b"k", n);
            append(&mut store, b"k", n);
            written.push(commit(&mut store, i64::from(n)));
        }
    }
    let kinds: Vec<&str> = written
        .iter()
        .map(|changes| match &changes[..] {
            [(key, Some(_))] if &key[..] == b"k" => "whole",
            [(key, Some(_))] if key.starts_with(b"k\0") => "change",
            other => panic!("one record per commit, found {other:?}"),
        })
        .collect();
    assert_eq!(kinds[0], "whole", "a new key is written whole");
    assert_eq!(kinds[1], "change");
    let wholes = kinds.iter().filter(|k| **k == "whole").count();
    assert!(
        (3..=20).contains(&wholes),
        "changes until they outweigh the whole value or reach {MAX_CHANGES}: {kinds:?}"
    );
    let expected: Vec<u8> = (0..40u8).flat_map(|n| [n, n]).collect();
    let mut reopened = open_logged(dir.path());
    assert_eq!(
        reopened.get(b"k").expect("get").map(|v| &v.numbers),
        Some(&expected),
        "the last whole value with its generation's changes, stale ones ignored"
    );
    // Bounded: one whole value and at most MAX_CHANGES change slots.
    let Backend::Sled(tree) = &reopened.backend else {
        panic!("persistent store")
    };
    let keys = tree.scan_prefix(b"k").expect("scan").len();
    assert!(keys <= 1 + usize::from(MAX_CHANGES), "{keys}");
}

#[test]
fn deleting_a_change_logged_key_removes_its_changes_too_and_a_new_value_starts_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = open_logged(dir.path());
    append(&mut store, b"k", 1);
    commit(&mut store, 1);
    append(&mut store, b"k", 2);
    commit(&mut store, 2);
    store.delete(b"k").expect("delete");
    let tombstones = commit(&mut store, 3);
    assert_eq!(tombstones.len(), 1 + usize::from(MAX_CHANGES));
    assert!(tombstones.iter().all(|(_, value)| value.is_none()));
    append(&mut store, b"k", 9);
    commit(&mut store, 4);
    drop(store);
    let mut reopened = open_logged(dir.path());
    assert_eq!(
        reopened.get(b"k").expect("get").map(|v| v.numbers.clone()),
        Some(vec![9])
    );
}

#[test]
fn a_rolled_back_change_is_not_read_back() {
    let mut store = KeyValueStore::<Appended>::in_memory("logged");
    append(&mut store, b"k", 1);
    commit(&mut store, 1);
    append(&mut store, b"k", 2);
    let _staged = store.dirty_changes();
    store.rollback();
    append(&mut store, b"k", 3);
    commit(&mut store, 2);
    let (mut restored, _) = store.restored_after_commit().expect("restore");
    assert_eq!(
        restored.get(b"k").expect("get").map(|v| v.numbers.clone()),
        Some(vec![1, 3])
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

#[test]
fn a_whole_value_written_before_change_logs_is_read_and_then_logged_onto() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let state = StateDir::open(dir.path(), "app").expect("open state dir");
        let tree = state.task_tree("logged", 0).expect("tree");
        // As an earlier version wrote it: the codec's bytes alone.
        let legacy: Vec<u8> = (1..=20).collect();
        tree.apply([(&b"k"[..], Some(&legacy[..]))], Some(1))
            .expect("apply");
    }
    let mut store = open_logged(dir.path());
    let mut expected: Vec<u8> = (1..=20).collect();
    assert_eq!(
        store.get(b"k").expect("get").map(|v| v.numbers.clone()),
        Some(expected.clone())
    );
    append(&mut store, b"k", 21);
    expected.push(21);
    let written = commit(&mut store, 2);
    assert!(written[0].0.starts_with(b"k\0"), "a change record");
    drop(store);
    assert_eq!(
        open_logged(dir.path())
            .get(b"k")
            .expect("get")
            .map(|v| v.numbers.clone()),
        Some(expected)
    );
}

#[test]
fn a_state_dir_reopens_right_after_its_drop_and_a_held_one_is_refused_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    // sled lets go of its lock a moment after the drop, once its I/O threads are done with
    // what the round wrote (a race a loaded machine loses): every reopen still succeeds.
    for round in 0..20u8 {
        let state = StateDir::open(dir.path(), "app").unwrap_or_else(|e| panic!("{round}: {e}"));
        let tree = state.task_tree("t", 0).expect("tree");
        let value = vec![round; 4096];
        tree.apply([(&b"k"[..], Some(&value[..]))], Some(i64::from(round)))
            .expect("apply");
        state.flush().expect("flush");
    }
    let held = StateDir::open(dir.path(), "app").expect("open");
    let refused = StateDir::open(dir.path(), "app")
        .err()
        .expect("a second open is refused");
    assert!(matches!(refused, StoreError::Locked { .. }), "{refused}");
    assert!(
        refused.to_string().contains("own state.dir"),
        "says how to fix it: {refused}"
    );
    drop(held);
}

#[test]
fn keys_are_the_committed_ones_and_this_batchs_without_change_records_or_deletes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = open_logged(dir.path());
    for key in [&b"a"[..], b"b", b"c"] {
        for n in 0..3 {
            append(&mut store, key, n);
            commit(&mut store, i64::from(n));
        }
    }
    store.delete(b"b").expect("delete");
    append(&mut store, b"d", 1);
    let keys = |store: &KeyValueStore<Appended>| -> Vec<Vec<u8>> {
        store
            .keys()
            .expect("keys")
            .into_iter()
            .map(|k| k.to_vec())
            .collect()
    };
    assert_eq!(keys(&store), [b"a".to_vec(), b"c".to_vec(), b"d".to_vec()]);
    store.rollback();
    let reopened = {
        drop(store);
        open_logged(dir.path())
    };
    assert_eq!(
        keys(&reopened),
        [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()],
        "from sled alone, each key once whatever its change records"
    );
}
