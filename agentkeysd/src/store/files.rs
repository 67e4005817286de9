//! File-system checks for the state directory and the files in it.
//!
//! The state directory holds the database and (usually) the master key, so before anything is
//! read from it, it must be ours and closed to everyone else. The checks are pure functions of
//! `(uid, mode, kind)` so they are unit-tested without chown.

use std::fs::{self, DirBuilder, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

use super::error::StoreError;

/// Our effective uid: files we trust must be owned by it.
pub(crate) fn our_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Why a directory is not private, or `None` when it is.
pub(crate) fn dir_problem(is_dir: bool, owner: u32, mode: u32, us: u32) -> Option<String> {
    if !is_dir {
        return Some("not a directory".to_owned());
    }
    if owner != us {
        return Some(format!("owned by uid {owner}"));
    }
    if mode & 0o077 != 0 {
        return Some(format!(
            "mode {:04o} lets group or others in",
            mode & 0o7777
        ));
    }
    None
}

/// Why a key file is not private, or `None` when it is. Stricter than 0600 (0400) is fine.
pub(crate) fn key_file_problem(is_file: bool, owner: u32, mode: u32, us: u32) -> Option<String> {
    if !is_file {
        return Some("not a regular file".to_owned());
    }
    if owner != us {
        return Some(format!("owned by uid {owner}, not {us}"));
    }
    if mode & 0o077 != 0 {
        return Some(format!(
            "mode {:04o} lets group or others read it (fix: chmod 0600)",
            mode & 0o7777
        ));
    }
    None
}

/// Create `dir` with mode 0700 if it is missing; refuse it if it is not ours and private.
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<(), StoreError> {
    let step_err = |step: &'static str| {
        move |source| StoreError::StateDir {
            path: dir.to_owned(),
            step,
            source,
        }
    };
    match DirBuilder::new().recursive(false).mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Parents are created with ordinary permissions; only the leaf is private.
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(step_err("mkdir -p"))?;
        }
        Err(e) => return Err(step_err("mkdir")(e)),
    }
    // symlink_metadata: a symlink in place of the state directory is refused, not followed.
    let md = fs::symlink_metadata(dir).map_err(step_err("stat"))?;
    let us = our_uid();
    if let Some(reason) = dir_problem(md.is_dir(), md.uid(), md.mode(), us) {
        return Err(StoreError::StateDirInsecure {
            path: dir.to_owned(),
            uid: us,
            reason,
        });
    }
    Ok(())
}

/// Restrict a file we created (the database) to its owner.
pub(crate) fn make_private(path: &Path) -> io::Result<()> {
    let md = fs::metadata(path)?;
    if md.mode() & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// Make a rename or link in `dir` durable.
pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_directory_is_accepted() {
        assert_eq!(dir_problem(true, 0, 0o40700, 0), None);
    }

    #[test]
    fn group_readable_directory_is_refused() {
        assert!(dir_problem(true, 0, 0o40750, 0).is_some());
        assert!(dir_problem(true, 0, 0o40701, 0).is_some());
    }

    #[test]
    fn directory_owned_by_someone_else_is_refused() {
        assert!(dir_problem(true, 1000, 0o40700, 0).is_some());
    }

    #[test]
    fn key_file_must_be_regular_private_and_ours() {
        assert_eq!(key_file_problem(true, 0, 0o100600, 0), None);
        assert_eq!(key_file_problem(true, 0, 0o100400, 0), None);
        assert!(key_file_problem(true, 0, 0o100640, 0).is_some());
        assert!(key_file_problem(true, 1000, 0o100600, 0).is_some());
        assert!(key_file_problem(false, 0, 0o100600, 0).is_some());
    }

    #[test]
    fn existing_world_readable_state_dir_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let err = ensure_private_dir(&dir).unwrap_err();
        assert!(
            matches!(err, StoreError::StateDirInsecure { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn missing_state_dir_is_created_0700() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b/state");
        ensure_private_dir(&dir).unwrap();
        let mode = fs::metadata(&dir).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}
