//! Directories and files that hold state or results, private to the owner whatever the umask:
//! window state, instance ids and results may be market data someone pays for, and a
//! world-writable state file would let anyone change what the processors compute.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Directories holding state or results: the owner only.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Files holding state or results: the owner only.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Creates `path` and its missing parents, each 0700 whatever the umask. Directories that
/// exist are left as they are (a given `--data-dir /srv` is not ours to change).
pub fn create_private_dir_all(path: &Path) -> std::io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_private_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new()
        .mode(PRIVATE_DIR_MODE)
        .create(path)
    {
        // The umask may have taken bits the mode asked for; this sets exactly 0700.
        Ok(()) => restrict_dir(path),
        Err(e) if e.kind() == ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Makes a directory of ours 0700, whatever it was.
pub fn restrict_dir(path: &Path) -> std::io::Result<()> {
    std::fs::set_permissions(path, Permissions::from_mode(PRIVATE_DIR_MODE))
}

/// Opens `path` for appending, created 0600 whatever the umask; a file of ours that exists is
/// made 0600 too.
pub fn append_private_file(path: &Path) -> std::io::Result<File> {
    private_file(path, OpenOptions::new().create(true).append(true))
}

/// Writes `contents` to `path` (created or truncated), 0600 whatever the umask.
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    private_file(
        path,
        OpenOptions::new().create(true).write(true).truncate(true),
    )?
    .write_all(contents)
}

fn private_file(path: &Path, options: &mut OpenOptions) -> std::io::Result<File> {
    let file = options.mode(PRIVATE_FILE_MODE).open(path)?;
    file.set_permissions(Permissions::from_mode(PRIVATE_FILE_MODE))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    }

    // The test process's umask (022 by default) would give 0755 and 0644: the explicit modes
    // are what makes these 0700 and 0600, as they do under umask 000 (see the process test).
    #[test]
    fn created_dirs_are_0700_files_0600_and_existing_files_of_ours_are_tightened() {
        let root = tempfile::tempdir().expect("tempdir");
        let nested = root.path().join("a/b/c");
        create_private_dir_all(&nested).expect("create");
        for dir in ["a", "a/b", "a/b/c"] {
            assert_eq!(mode(&root.path().join(dir)), 0o700, "{dir}");
        }
        let file = nested.join("results.jsonl");
        std::fs::write(&file, b"old").expect("write");
        std::fs::set_permissions(&file, Permissions::from_mode(0o666)).expect("chmod");
        append_private_file(&file).expect("append");
        assert_eq!(mode(&file), 0o600);
        let id = nested.join("instance.id");
        write_private_file(&id, b"abc").expect("write");
        assert_eq!(mode(&id), 0o600);
        assert_eq!(std::fs::read(&id).expect("read"), b"abc");
        // An existing directory is not changed.
        std::fs::set_permissions(root.path(), Permissions::from_mode(0o755)).expect("chmod");
        create_private_dir_all(root.path()).expect("exists");
        assert_eq!(mode(root.path()), 0o755);
    }
}
