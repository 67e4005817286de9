//! The store's error type: one variant per step that can fail, carrying its context.
//!
//! No variant ever carries secret bytes: key and credential failures name the file, the
//! owner and the credential, never the content.

use std::io;
use std::path::PathBuf;

use crate::vault::VaultError;

/// Everything that can go wrong in the store, named after the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state directory could not be created or inspected.
    #[error("state directory {path}: {step} failed")]
    StateDir {
        path: PathBuf,
        step: &'static str,
        #[source]
        source: io::Error,
    },
    /// The state directory exists but is not private to us.
    #[error(
        "state directory {path} is not private ({reason}); it must be a directory owned by \
         uid {uid} with mode 0700 (fix: chown {uid} and chmod 0700 it)"
    )]
    StateDirInsecure {
        path: PathBuf,
        uid: u32,
        reason: String,
    },
    /// SQLite could not open (or set up) the database file.
    #[error("opening database {path} failed")]
    OpenDb {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// A connection setting could not be applied.
    #[error("database {path}: setting PRAGMA {pragma} failed")]
    ConfigureDb {
        path: PathBuf,
        pragma: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    /// SQLite refused write-ahead logging (for example on a file system without shared memory).
    #[error(
        "database {path}: journal_mode is {found}, not wal; put the state directory on a local \
         file system"
    )]
    WalUnavailable { path: PathBuf, found: String },
    /// The file is not SQLite, or is somebody else's SQLite database.
    #[error(
        "{path} is not an AgentKeys database (not SQLite, or another application's); \
         move it away or point --state-dir at another directory"
    )]
    NotOurDatabase { path: PathBuf },
    /// Another process holds the database (the daemon keeps it locked while it runs).
    #[error(
        "database {path} is in use by another process (another agentkeysd on this state \
         directory?); stop it first, or point --state-dir elsewhere"
    )]
    InUse { path: PathBuf },
    /// The database was written by a newer AgentKeys.
    #[error(
        "database schema version {found} is newer than this agentkeysd knows ({known}); \
         run the newer agentkeysd or restore a backup"
    )]
    SchemaTooNew { found: i64, known: i64 },
    /// A schema migration failed; the database stays at the previous version.
    #[error("migrating the database to schema version {version} failed")]
    Migrate {
        version: i64,
        #[source]
        source: rusqlite::Error,
    },
    /// The database holds sealed data but no master key file exists.
    #[error(
        "master key missing: {db} holds sealed secrets but no master key was found (looked for \
         {looked}); restore master.key from your backup, or the systemd credential \
         agentkeys.master — a new key could not open the existing secrets, so none is created"
    )]
    MasterKeyMissing { db: PathBuf, looked: String },
    /// The master key file exists but is unusable.
    #[error("master key {path} is unusable: {reason}")]
    MasterKeyInvalid { path: PathBuf, reason: String },
    /// Reading the master key file failed.
    #[error("reading master key {path} failed")]
    MasterKeyRead {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Creating a new master key file failed.
    #[error("creating master key {path} failed")]
    CreateMasterKey {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The master key does not open this database's key check.
    #[error(
        "wrong master key: {key} does not open the database {db}; restore the master.key (or \
         the systemd credential agentkeys.master) that belongs to this database"
    )]
    WrongMasterKey { key: PathBuf, db: PathBuf },
    /// The database contradicts itself in a way the store never writes.
    #[error("database {db} is inconsistent: {what}; restore it from a backup")]
    Corrupt { db: PathBuf, what: String },
    /// The OS random number generator failed.
    #[error("reading random bytes for {purpose} failed")]
    Random {
        purpose: &'static str,
        #[source]
        source: io::Error,
    },
    /// A cryptographic primitive refused its input (a bug: sizes are fixed).
    #[error("{step} failed")]
    Crypto { step: &'static str },
    /// An argument the caller should have validated is malformed.
    #[error("invalid {what}: {reason}")]
    InvalidArgument { what: &'static str, reason: String },
    /// No such credential or agent (for this owner).
    #[error("{what} '{name}' not found")]
    NotFound { what: &'static str, name: String },
    /// The name (or link) is taken.
    #[error("{what} '{name}' already exists")]
    AlreadyExists { what: &'static str, name: String },
    /// The credential's expiry has passed.
    #[error("credential '{name}' has expired")]
    Expired { name: String },
    /// The agent was revoked (when and by whom, if known).
    #[error("agent '{agent}' was revoked{}", revoked_when(*.at, *.by))]
    Revoked {
        agent: String,
        at: Option<i64>,
        by: Option<u32>,
    },
    /// The agent's session ended before its time (revoked, recovered, re-keyed).
    #[error("the session of agent '{agent}' has ended ({why})")]
    SessionEnded { agent: String, why: String },
    /// The agent's session is past its hard TTL.
    #[error("the session of agent '{agent}' expired at {}", utc(*.at))]
    SessionExpired { agent: String, at: i64 },
    /// The agent has no grant for the credential, or it is outside its scope.
    #[error("agent '{agent}' may not read '{credential}': {why}")]
    NotGranted {
        agent: String,
        credential: String,
        why: &'static str,
    },
    /// The agent's grant of the credential has expired.
    #[error("agent '{agent}''s grant of '{credential}' expired at {}", utc(*.at))]
    GrantExpired {
        agent: String,
        credential: String,
        at: i64,
    },
    /// A login-class credential while its owner's login key is not in memory.
    #[error(
        "credential '{name}' is login-protected and locked: its owner (uid {owner}) has no \
         session that unlocked it"
    )]
    Locked { name: String, owner: u32 },
    /// The sealed value failed authentication: edited, moved, swapped or rolled back.
    #[error(
        "credential '{name}' failed its integrity check (the stored row was altered, moved or \
         rolled back); store the secret again"
    )]
    Tampered { name: String },
    /// Every value of a configured range is in use.
    #[error("no free {what} left: widen the range in the configuration")]
    Exhausted { what: &'static str },
    /// Any other SQLite failure.
    #[error("database operation failed")]
    Sqlite(#[from] rusqlite::Error),
    /// Secret memory could not be allocated.
    #[error("allocating secret memory failed")]
    Vault(#[from] VaultError),
}

/// The coarse class of a [`StoreError`], for mapping to the public D-Bus error set in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    AlreadyExists,
    Expired,
    Revoked,
    Tampered,
    /// A login-class credential whose owner's login key is not loaded.
    Locked,
    InvalidArgument,
    /// The store cannot start: missing or wrong key, foreign or newer database, unsafe files.
    Unavailable,
    Internal,
}

impl StoreError {
    /// Which public class this error belongs to.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::NotFound { .. } => ErrorKind::NotFound,
            StoreError::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            StoreError::Expired { .. } => ErrorKind::Expired,
            StoreError::Revoked { .. }
            | StoreError::SessionEnded { .. }
            | StoreError::NotGranted { .. } => ErrorKind::Revoked,
            StoreError::SessionExpired { .. } | StoreError::GrantExpired { .. } => {
                ErrorKind::Expired
            }
            StoreError::Tampered { .. } => ErrorKind::Tampered,
            StoreError::Locked { .. } => ErrorKind::Locked,
            StoreError::InvalidArgument { .. } => ErrorKind::InvalidArgument,
            StoreError::StateDirInsecure { .. }
            | StoreError::WalUnavailable { .. }
            | StoreError::NotOurDatabase { .. }
            | StoreError::InUse { .. }
            | StoreError::SchemaTooNew { .. }
            | StoreError::MasterKeyMissing { .. }
            | StoreError::MasterKeyInvalid { .. }
            | StoreError::WrongMasterKey { .. }
            | StoreError::Corrupt { .. }
            | StoreError::Exhausted { .. } => ErrorKind::Unavailable,
            StoreError::StateDir { .. }
            | StoreError::OpenDb { .. }
            | StoreError::ConfigureDb { .. }
            | StoreError::Migrate { .. }
            | StoreError::MasterKeyRead { .. }
            | StoreError::CreateMasterKey { .. }
            | StoreError::Random { .. }
            | StoreError::Crypto { .. }
            | StoreError::Sqlite(_)
            | StoreError::Vault(_) => ErrorKind::Internal,
        }
    }
}

fn revoked_when(at: Option<i64>, by: Option<u32>) -> String {
    let mut out = String::new();
    if let Some(at) = at {
        out.push_str(&format!(" at {}", utc(at)));
    }
    if let Some(by) = by {
        out.push_str(&format!(" by uid {by}"));
    }
    out
}

/// `2026-11-21 10:42:07 UTC` for Unix seconds `t` (proleptic Gregorian, UTC).
pub fn utc(t: i64) -> String {
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Fill `buf` from the OS CSPRNG.
pub(crate) fn random_fill(buf: &mut [u8], purpose: &'static str) -> Result<(), StoreError> {
    getrandom::fill(buf).map_err(|e| StoreError::Random {
        purpose,
        source: match e.raw_os_error() {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::other(e.to_string()),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_795_257_727), "2026-11-21 10:42:07 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn revocation_names_when_and_by_whom() {
        let e = StoreError::Revoked {
            agent: "ci-bot".into(),
            at: Some(1_795_257_727),
            by: Some(1000),
        };
        assert_eq!(
            e.to_string(),
            "agent 'ci-bot' was revoked at 2026-11-21 10:42:07 UTC by uid 1000"
        );
    }
}
