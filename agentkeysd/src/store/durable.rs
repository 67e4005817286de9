//! Read rows made durable in groups, with the fsync outside the store's lock.
//!
//! A D-Bus read queues its audit row and the daemon commits the queue moments later
//! (`synchronous=NORMAL`, see the module docs of [`super`]). An MCP read must not send the
//! secret before its row is on disk. Committing each such read with `synchronous=FULL`
//! would hold the store (one connection behind one mutex) for an fsync per read; instead
//! the daemon's batcher (`daemon::durable`):
//!
//! 1. does a batch of reads, each queueing its row, and commits the whole queue under the
//!    lock without an fsync ([`Store::flush_audit`]);
//! 2. with the lock released, fsyncs the WAL file ([`WalSync::sync`]), which makes every
//!    transaction committed before it durable, and only then answers the batch.
//!
//! Every read of a batch shares that one fsync, and other calls use the store while the
//! disk works. Why an fsync of our own descriptor is enough: in WAL mode a commit is
//! the frames written to the `-wal` file, and `synchronous=FULL` differs from NORMAL only
//! by an fsync of that file after them; fsync(2) flushes the file (its inode), whichever
//! descriptor asks. Frames that a checkpoint has moved into the database were fsynced by
//! the checkpoint itself. The WAL file keeps its inode while the connection is open (SQLite
//! truncates or rewinds it, never unlinks it, until the last connection closes; the store
//! holds the only one), and [`Store::wal_sync`] checks it is the file at the path.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use super::{Store, StoreError};

/// A handle on the store's WAL file, for an fsync outside the store's lock.
#[derive(Debug)]
pub struct WalSync {
    file: File,
    path: PathBuf,
}

impl WalSync {
    /// fsyncs the WAL: every transaction committed before this call is durable after it.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.file
            .sync_data()
            .map_err(|source| StoreError::StateDir {
                path: self.path.clone(),
                step: "fsync of the write-ahead log",
                source,
            })
    }
}

impl Store {
    /// A handle that fsyncs this store's WAL file, or `None` if it cannot be opened (then
    /// callers commit durable rows with [`Store::flush_audit_full`] instead).
    pub fn wal_sync(&self) -> Option<WalSync> {
        let mut os = self.db_path.clone().into_os_string();
        os.push("-wal");
        let path = PathBuf::from(os);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot open the WAL for group fsync; durable reads will fsync under the store lock");
                return None;
            }
        };
        // The same inode as the path names now (nobody swapped the file under us).
        let same = match (file.metadata(), std::fs::metadata(&path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        };
        same.then_some(WalSync { file, path })
    }

    /// Commits the queued read rows with `synchronous=FULL` (an fsync under the lock): the
    /// fallback when there is no [`WalSync`].
    pub fn flush_audit_full(&mut self) -> Result<usize, StoreError> {
        self.flush_audit_with(super::Durability::Full)
    }
}
