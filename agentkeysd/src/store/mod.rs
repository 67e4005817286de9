//! The persistent store: one SQLite database holding owners, credentials (sealed), agents,
//! their links and grants, and the audit hash chain.
//!
//! # Key hierarchy
//! The 32-byte host master key comes from the systemd credential `agentkeys.master`
//! (`LoadCredentialEncrypted=`, TPM2-sealed where present) or `state_dir/master.key` (0600,
//! created on the first start of a new database only). It lives in secret memory just long
//! enough to derive, with HMAC-SHA256(master, label), the *credential key* ("AgentKeys-v1
//! credential key": AES-256-GCM over every secret value and the `key_check`) and the *audit
//! key* ("AgentKeys-v1 audit key": HMAC over the audit chain's head). Both stay in secret
//! memory for the store's lifetime. Each secret is sealed with a random 96-bit nonce and AAD
//! = owner uid (u32 BE) ‖ credential id (i64 BE) ‖ version (u32 BE) ‖ name, so a row moved to
//! another owner or id, swapped with or renamed to another row, or rolled back to an older
//! version fails to open. (DESIGN §5 names the first three; the name closes the rename hole.)
//!
//! # Durability
//! WAL with `synchronous=FULL`: every state change (store, replace, delete, agent changes)
//! is fsynced before it is acknowledged. Two exceptions are fsynced elsewhere: a run's start
//! ([`Store::start_run`] with `fsync` unset) commits with `synchronous=NORMAL` while the
//! daemon fsyncs the WAL before the command may start, and a run's end without a session
//! ([`Store::end_run`]) changes nothing but the audit trail. The audit row of a denial commits with
//! `synchronous=NORMAL`: in WAL mode that is still atomic and survives a killed process, and
//! only power loss can drop the newest such rows — a whole suffix, never a hole, so the chain
//! stays consistent. The row of a successful *read* is queued ([`Store::queue_read`]) and
//! group-committed the same way moments later: a read costs neither an fsync nor a commit,
//! and a killed process can lose the rows of reads served in the last few milliseconds.
//!
//! # Invariants
//! - Plaintext secrets and key material exist only in
//!   [`SecretBuf`](crate::vault::SecretBuf)s (vault memory); they are
//!   encrypted and decrypted in place there, and never logged, formatted or put in an error.
//! - Every change commits together with its audit row, in one transaction. Every read is
//!   audited: failed and single-use reads before they return, successful ones through the
//!   queue, which any later commit and every audit read writes first (the chain stays in
//!   request order).
//! - A missing master key is never replaced while the database holds sealed data
//!   (`key_check` present): that would orphan every secret.
//! - A file that is not an AgentKeys database (application_id 'AKEY') is never written to.
//! - If the audit head and the chain's last row disagree at open, an `audit.chain_break` row
//!   records it before anything else is appended, so tampering cannot be sealed over.
//!
//! # Non-goals
//! - Authorization: callers (the daemon) decide who may act for which owner; the store
//!   scopes every query by the owner it is given.
//! - Hiding metadata: names, env vars, `last4`, timestamps and the audit log are plaintext.
//! - Defending against an attacker who holds the master key and can write the database.
//!
//! # Login class
//! Credentials of class `login` are sealed under a key that also needs the owner's login
//! key, which is in memory only while the owner has a session (`login.rs`); otherwise
//! reading or storing them answers [`StoreError::Locked`].

mod agent_view;
mod agents;
mod audit;
mod credentials;
mod db;
mod durable;
mod error;
mod files;
mod grants;
mod ids;
pub mod login;
mod master_key;
mod runs;
mod schema;
pub mod seal;
mod sessions;
#[cfg(test)]
mod testutil;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

pub use agent_view::AgentCredential;
pub use agents::{AgentOptions, AgentRecord, AgentState, LinkKind};
pub use audit::{
    AUDIT_LIST_MAX, Actor, AuditEntry, AuditRow, ChainProblem, Outcome, ProblemKind, VerifyReport,
};
pub use credentials::{CredentialClass, CredentialMeta, PutOptions, PutOutcome};
pub use db::APPLICATION_ID;
pub use durable::WalSync;
pub use error::{ErrorKind, StoreError, utc};
pub use grants::{AgentRead, GrantMode, GrantRecord, GrantTerms, UsageRow};
pub use ids::{
    AGENT_ID_PREFIX, RUN_ID_PREFIX, SESSION_ID_PREFIX, is_agent_id, is_run_id, is_session_id,
    new_run_id, valid_name,
};
pub use master_key::{CREDENTIAL_FILE, KeySource, STATE_KEY_FILE};
pub use runs::{RunIdentity, RunStart};
pub use schema::SCHEMA_VERSION;
pub use sessions::{AgentSession, Issue, SessionRecord};

use audit::{Record, Tail};
use master_key::Keys;

use crate::vault::Vault;

/// The database file in the state directory.
pub const DB_FILE: &str = "agentkeys.db";
/// meta key of the key check blob.
const KEY_CHECK: &str = "key_check";

/// Row counts, for `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    pub credentials: u64,
    pub agents: u64,
    pub audit_rows: u64,
    pub schema_version: i64,
}

/// How hard a commit must be on disk before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// fsync the WAL: state changes.
    Full,
    /// No fsync: read and denial audit rows (see the module docs).
    Normal,
}

/// The vault and the derived keys: what sealing and opening need, borrowed apart from the
/// connection while a transaction holds it.
#[derive(Debug)]
pub(crate) struct Crypto {
    pub vault: Vault,
    pub keys: Keys,
    /// Owners' login keys, loaded while they have a session (see `login.rs`).
    pub login: login::LoginKeys,
}

/// The store: one connection, the derived keys, and the audit chain's tail.
pub struct Store {
    conn: Connection,
    crypto: Crypto,
    db_path: PathBuf,
    key_source: KeySource,
    /// Last row of the audit chain, adopted after each successful commit.
    tail: Tail,
    /// Whether the connection is known to be at `synchronous=FULL`.
    sync_full: bool,
    /// Audit records of successful reads, stamped with their time, not yet in the chain.
    /// See [`Store::flush_audit`].
    pending: Vec<Queued>,
}

/// A queued read: its audit record, when it was served, and the usage counter it bumps.
#[derive(Debug)]
pub(crate) struct Queued {
    record: Record,
    ts_ms: i64,
    usage: Option<grants::UsageBump>,
}

/// Reads queued past this many are flushed inside the read itself (back-pressure).
const MAX_PENDING_AUDIT: usize = 4096;

/// A store closed with read records still queued writes them first (best effort: the
/// daemon flushes explicitly at shutdown, where an error can be reported).
impl Drop for Store {
    fn drop(&mut self) {
        if let Err(e) = self.flush_audit() {
            tracing::error!(error = %e, lost = self.pending.len(), "could not write queued audit rows");
        }
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("db_path", &self.db_path)
            .field("key_source", &self.key_source)
            .field("audit_seq", &self.tail.seq)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Open (or create) the store in `state_dir`, taking the master key from
    /// `credentials_dir/agentkeys.master` if present, else `state_dir/master.key`.
    pub fn open(
        state_dir: &Path,
        credentials_dir: Option<&Path>,
        vault: &Vault,
    ) -> Result<Store, StoreError> {
        // 1. The directory holds the key file: it must be ours and private before we read it.
        files::ensure_private_dir(state_dir)?;
        // A start interrupted while creating the key may have left a copy of it behind.
        master_key::remove_stale_temp_keys(state_dir);
        // 2. Prove the file is ours (or new) before writing to it; then WAL, FULL, FKs.
        let db_path = state_dir.join(DB_FILE);
        let mut conn = db::open(&db_path)?;
        // 3. Schema, one transaction per version.
        schema::migrate(&mut conn)?;
        // 4. Has this database ever sealed anything? Only a new one may get a new key.
        let key_check = meta_get(&conn, KEY_CHECK)?;
        let fresh = key_check.is_none();
        if fresh && count(&conn, "SELECT count(*) FROM credentials")? > 0 {
            return Err(StoreError::Corrupt {
                db: db_path,
                what: "credentials exist but the key check is missing".to_owned(),
            });
        }
        // 5. Master key → subkeys; the master key itself is dropped (zeroized) right here.
        let (master, key_source) =
            master_key::obtain(vault, state_dir, credentials_dir, fresh, &db_path)?;
        let keys = Keys::derive(vault, &master)?;
        drop(master);
        // 6. The key must be this database's: refuse before anything is sealed under it.
        if let Some(blob) = &key_check
            && !master_key::key_check_matches(vault, &keys, blob)?
        {
            return Err(StoreError::WrongMasterKey {
                key: key_source.path().to_owned(),
                db: db_path,
            });
        }
        // 7. Continue the audit chain where it really ends; record a tampered end first.
        let (tail, chain_problem) = audit::load_tail(&conn, &keys.audit)?;
        let mut store = Store {
            conn,
            crypto: Crypto {
                vault: vault.clone(),
                keys,
                login: login::LoginKeys::new(),
            },
            db_path,
            key_source,
            tail,
            sync_full: true,
            pending: Vec::new(),
        };
        if let Some(problem) = chain_problem {
            store.record_chain_break(&problem)?;
        }
        // 8. A new database: key check and first audit row, together.
        if fresh {
            store.initialize()?;
        }
        Ok(store)
    }

    #[cfg(test)]
    pub(crate) fn conn_for_tests(&self) -> &Connection {
        &self.conn
    }

    /// The Ed25519 seed that signs approval decisions (derived from the master key).
    pub fn host_key(&self) -> &crate::vault::SecretBuf {
        &self.crypto.keys.host
    }

    /// The database file.
    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    /// Where the master key came from.
    pub fn key_source(&self) -> &KeySource {
        &self.key_source
    }

    /// Row counts.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        Ok(StoreStats {
            credentials: count(&self.conn, "SELECT count(*) FROM credentials")?,
            agents: count(&self.conn, "SELECT count(*) FROM agents")?,
            audit_rows: count(&self.conn, "SELECT count(*) FROM audit")?,
            schema_version: self
                .conn
                .pragma_query_value(None, "user_version", |r| r.get(0))?,
        })
    }

    fn initialize(&mut self) -> Result<(), StoreError> {
        let blob = master_key::key_check_blob(&self.crypto.vault, &self.crypto.keys)?;
        let detail = format!(
            "schema v{SCHEMA_VERSION}, master key {}",
            self.key_source.path().display()
        );
        self.commit(Durability::Full, |tx, _| {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)",
                params![KEY_CHECK, blob],
            )?;
            let record = Record {
                actor: Actor::this_process(),
                owner_uid: None,
                action: "store.init",
                subject: String::new(),
                outcome: Outcome::Ok,
                detail,
            };
            Ok(((), record))
        })
    }

    fn record_chain_break(&mut self, problem: &str) -> Result<(), StoreError> {
        tracing::error!(
            db = %self.db_path.display(),
            problem,
            "audit chain end altered while the store was closed; recording it in the chain"
        );
        let detail = problem.to_owned();
        self.commit(Durability::Full, |_, _| {
            let record = Record {
                actor: Actor::this_process(),
                owner_uid: None,
                action: audit::ACTION_CHAIN_BREAK,
                subject: "audit".to_owned(),
                outcome: Outcome::Error,
                detail,
            };
            Ok(((), record))
        })
    }

    /// Run `work` and append the audit record it returns, in one IMMEDIATE transaction.
    /// Queued read records go in first, so the chain keeps the order requests were served.
    pub(crate) fn commit<T>(
        &mut self,
        durability: Durability,
        work: impl FnOnce(&Transaction<'_>, &Crypto) -> Result<(T, Record), StoreError>,
    ) -> Result<T, StoreError> {
        self.set_durability(durability)?;
        let result = (|| -> Result<(T, Tail), StoreError> {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let tail = append_pending(&tx, &self.tail, &self.pending)?;
            let (value, record) = work(&tx, &self.crypto)?;
            let tail = audit::append(&tx, &self.crypto.keys.audit, &tail, &record.entry())?;
            tx.commit()?;
            Ok((value, tail))
        })();
        self.after_commit(durability);
        let (value, tail) = result?;
        self.tail = tail;
        self.pending.clear();
        Ok(value)
    }

    /// Append one audit entry in its own transaction (after any queued read records).
    pub(crate) fn commit_entry(
        &mut self,
        durability: Durability,
        entry: &audit::AuditEntry<'_>,
    ) -> Result<(), StoreError> {
        self.set_durability(durability)?;
        let result = (|| -> Result<Tail, StoreError> {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let tail = append_pending(&tx, &self.tail, &self.pending)?;
            let tail = audit::append(&tx, &self.crypto.keys.audit, &tail, entry)?;
            tx.commit()?;
            Ok(tail)
        })();
        self.after_commit(durability);
        self.tail = result?;
        self.pending.clear();
        Ok(())
    }

    /// Queues the audit record of a successful read, stamped now. It joins the chain at
    /// the next [`Store::flush_audit`] (the daemon flushes right after replying: a group
    /// commit of every read served meanwhile) or the next commit, whichever comes first.
    ///
    /// Why not commit it before the reply, like every other row: an audit commit costs more
    /// than the rest of a read put together (WAL frames for the row and the keyed head), and
    /// a read is the one call made on every use of a key. The cost of queueing is a window
    /// of about a millisecond in which a `kill -9` loses the row of a read that was served.
    /// A flush that fails keeps the queue and is reported; the daemon then refuses reads
    /// until a flush succeeds (fail closed).
    ///
    /// An agent's read also bumps its usage counter (`usage`), in the transaction that
    /// writes its row.
    pub(crate) fn queue_read(
        &mut self,
        record: Record,
        usage: Option<grants::UsageBump>,
    ) -> Result<(), StoreError> {
        self.pending.push(Queued {
            record,
            ts_ms: now_ms(),
            usage,
        });
        if self.pending.len() >= MAX_PENDING_AUDIT
            && let Err(e) = self.flush_audit()
        {
            // This read fails and serves nothing: its "ok" row must not be written later.
            self.pending.pop();
            return Err(e);
        }
        Ok(())
    }

    /// How many read records wait for [`Store::flush_audit`].
    pub fn pending_audit(&self) -> usize {
        self.pending.len()
    }

    /// Appends the queued read records to the chain in one transaction
    /// (`synchronous=NORMAL`, like the rows themselves) and moves the keyed head once.
    /// Returns how many were written. On failure the queue is kept.
    pub fn flush_audit(&mut self) -> Result<usize, StoreError> {
        self.flush_audit_with(Durability::Normal)
    }

    fn flush_audit_with(&mut self, durability: Durability) -> Result<usize, StoreError> {
        // Nothing queued, but a FULL flush still writes (the unchanged head): rows another
        // commit took along without an fsync become durable with it.
        if self.pending.is_empty() && durability == Durability::Normal {
            return Ok(0);
        }
        self.set_durability(durability)?;
        let result = (|| -> Result<Tail, StoreError> {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let tail = append_pending(&tx, &self.tail, &self.pending)?;
            audit::write_head(&tx, &self.crypto.keys.audit, &tail)?;
            tx.commit()?;
            Ok(tail)
        })();
        self.after_commit(durability);
        self.tail = result?;
        let n = self.pending.len();
        self.pending.clear();
        Ok(n)
    }

    fn set_durability(&mut self, durability: Durability) -> Result<(), StoreError> {
        let configure_err = |source| StoreError::ConfigureDb {
            path: self.db_path.clone(),
            pragma: "synchronous",
            source,
        };
        match durability {
            Durability::Full if self.sync_full => Ok(()),
            Durability::Full => {
                db::set_synchronous_full(&self.conn).map_err(configure_err)?;
                self.sync_full = true;
                Ok(())
            }
            Durability::Normal => {
                self.sync_full = false;
                db::set_synchronous_normal(&self.conn).map_err(configure_err)
            }
        }
    }

    /// Back to FULL after a NORMAL commit. If that fails, `sync_full` stays false and the
    /// next FULL commit sets it (or fails) before it writes.
    fn after_commit(&mut self, durability: Durability) {
        if durability == Durability::Normal {
            match db::set_synchronous_full(&self.conn) {
                Ok(()) => self.sync_full = true,
                Err(e) => tracing::warn!(error = %e, "restoring synchronous=FULL failed"),
            }
        }
    }
}

/// Appends queued records after `tail` (the caller moves the head).
fn append_pending(
    tx: &Transaction<'_>,
    tail: &Tail,
    pending: &[Queued],
) -> Result<Tail, StoreError> {
    let mut tail = *tail;
    for q in pending {
        tail = audit::append_row(tx, &tail, &q.record.entry(), q.ts_ms)?;
        if let Some(usage) = &q.usage {
            grants::bump_usage(tx, usage, q.ts_ms / 1000)?;
        }
    }
    Ok(tail)
}

fn meta_get(conn: &Connection, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?)
}

fn count(conn: &Connection, sql: &'static str) -> Result<u64, StoreError> {
    let n: i64 = conn.prepare_cached(sql)?.query_row([], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Unix seconds (0 if the clock is before 1970).
pub(crate) fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Unix milliseconds (0 if the clock is before 1970).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::testutil::{ALICE, Fixture, actor, opts, raw, secret, vault};
    use super::*;

    #[test]
    fn new_store_creates_private_state_dir_database_and_master_key() {
        let fx = Fixture::new();
        let dir = fx.state_dir();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        let key = fs::metadata(dir.join(STATE_KEY_FILE)).unwrap();
        assert_eq!(key.mode() & 0o777, 0o600);
        assert_eq!(key.len(), 32);
        assert_eq!(fs::metadata(dir.join(DB_FILE)).unwrap().mode() & 0o077, 0);
        assert_eq!(fx.store.db_path(), dir.join(DB_FILE));
        assert_eq!(
            fx.store.key_source(),
            &KeySource::Created(dir.join(STATE_KEY_FILE))
        );
        let stats = fx.store.stats().unwrap();
        assert_eq!(stats.schema_version, SCHEMA_VERSION);
        assert_eq!(
            (stats.credentials, stats.agents, stats.audit_rows),
            (0, 0, 1)
        );
        let app: i32 = fx
            .raw()
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .unwrap();
        assert_eq!(app, APPLICATION_ID);
    }

    #[test]
    fn reopen_keeps_data_and_uses_the_existing_key() {
        let mut fx = Fixture::new();
        fx.put(ALICE, "anthropic", "sk-ant-0123456789");
        let mut fx = fx.reopen().unwrap();
        assert!(matches!(fx.store.key_source(), KeySource::StateFile(_)));
        assert_eq!(fx.read(ALICE, "anthropic").unwrap(), b"sk-ant-0123456789");
        assert_eq!(fx.store.audit_verify().unwrap().first_problem, None);
    }

    #[test]
    fn different_master_key_is_refused_as_wrong() {
        let mut fx = Fixture::new();
        fx.put(ALICE, "anthropic", "sk-ant-0123456789");
        let key_path = fx.state_dir().join(STATE_KEY_FILE);
        fs::write(&key_path, [0x5a; 32]).unwrap();
        let err = fx.reopen().unwrap_err();
        assert!(matches!(err, StoreError::WrongMasterKey { .. }), "{err:?}");
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(err.to_string().contains("restore"), "{err}");
    }

    #[test]
    fn deleted_master_key_with_data_is_missing_and_not_recreated() {
        let mut fx = Fixture::new();
        fx.put(ALICE, "anthropic", "sk-ant-0123456789");
        let key_path = fx.state_dir().join(STATE_KEY_FILE);
        fs::remove_file(&key_path).unwrap();
        let (tmp, v) = (fx.tmp, fx.vault);
        drop(fx.store);
        let err = Store::open(&tmp.path().join("state"), None, &v).unwrap_err();
        assert!(
            matches!(err, StoreError::MasterKeyMissing { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("master.key"), "{err}");
        assert!(!key_path.exists(), "a new key must not be created");
    }

    #[test]
    fn database_without_sealed_data_reuses_an_existing_master_key() {
        // A reinstalled database (key file kept) must not get a second key.
        let fx = Fixture::new();
        let key_path = fx.state_dir().join(STATE_KEY_FILE);
        let before = fs::read(&key_path).unwrap();
        fs::remove_file(fx.state_dir().join(DB_FILE)).unwrap();
        let _ = fs::remove_file(fx.state_dir().join("agentkeys.db-wal"));
        let _ = fs::remove_file(fx.state_dir().join("agentkeys.db-shm"));
        let fx = fx.reopen().unwrap();
        assert_eq!(
            fx.store.key_source(),
            &KeySource::StateFile(key_path.clone())
        );
        assert_eq!(fs::read(&key_path).unwrap(), before);
    }

    #[test]
    fn systemd_credential_key_in_hex_is_used_when_present() {
        let tmp = tempfile::tempdir().unwrap();
        let creds = tmp.path().join("creds");
        fs::create_dir(&creds).unwrap();
        let cred = creds.join(CREDENTIAL_FILE);
        fs::write(&cred, format!("{}\n", "ab".repeat(32))).unwrap();
        fs::set_permissions(&cred, fs::Permissions::from_mode(0o400)).unwrap();
        let dir = tmp.path().join("state");
        let v = vault();
        let mut store = Store::open(&dir, Some(&creds), &v).unwrap();
        assert_eq!(
            store.key_source(),
            &KeySource::SystemdCredential(cred.clone())
        );
        assert!(!dir.join(STATE_KEY_FILE).exists());
        let s = secret(&v, b"ghp_abcdefghijklmnop");
        store
            .put_credential(&actor(ALICE), ALICE, "github", &s, &opts(false))
            .unwrap();
        drop(store);
        // Without the credential there is no key: refused, not replaced.
        let err = Store::open(&dir, None, &v).unwrap_err();
        assert!(
            matches!(err, StoreError::MasterKeyMissing { .. }),
            "{err:?}"
        );
        let mut store = Store::open(&dir, Some(&creds), &v).unwrap();
        let (_, got) = store
            .read_credential(&actor(ALICE), ALICE, "github")
            .unwrap();
        assert_eq!(got.expose_secret(), b"ghp_abcdefghijklmnop");
    }

    #[test]
    fn non_sqlite_file_is_not_our_database() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(
            dir.join(DB_FILE),
            b"this is not a database, just some text...\n".repeat(50),
        )
        .unwrap();
        let err = Store::open(&dir, None, &vault()).unwrap_err();
        assert!(matches!(err, StoreError::NotOurDatabase { .. }), "{err:?}");
        assert!(
            err.to_string().contains("not an AgentKeys database"),
            "{err}"
        );
        assert!(!dir.join(STATE_KEY_FILE).exists());
    }

    #[test]
    fn foreign_sqlite_database_with_a_table_is_not_our_database() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        let conn = raw(&dir);
        conn.execute_batch("CREATE TABLE photos (id INTEGER PRIMARY KEY);")
            .unwrap();
        drop(conn);
        let err = Store::open(&dir, None, &vault()).unwrap_err();
        assert!(matches!(err, StoreError::NotOurDatabase { .. }), "{err:?}");
        // Untouched: still a rollback-journal database, no tables added.
        let conn = raw(&dir);
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "delete");
    }

    #[test]
    fn sqlite_database_of_another_application_is_not_ours() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        raw(&dir)
            .pragma_update(None, "application_id", 0x1234)
            .unwrap();
        let err = Store::open(&dir, None, &vault()).unwrap_err();
        assert!(matches!(err, StoreError::NotOurDatabase { .. }), "{err:?}");
    }

    #[test]
    fn newer_schema_version_is_refused_at_open() {
        let fx = Fixture::new();
        fx.raw()
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let err = fx.reopen().unwrap_err();
        assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{err:?}");
    }

    #[test]
    fn read_leaves_the_connection_at_synchronous_full() {
        let mut fx = Fixture::new();
        fx.put(ALICE, "anthropic", "sk-ant-0123456789");
        fx.read(ALICE, "anthropic").unwrap();
        let sync: i64 = fx
            .store
            .conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "FULL");
        assert!(fx.store.sync_full);
    }

    #[test]
    fn store_can_move_into_the_daemons_mutex() {
        fn assert_send<T: Send>() {}
        assert_send::<Store>();
    }

    #[test]
    fn error_kinds_map_to_public_classes() {
        let nf = StoreError::NotFound {
            what: "credential",
            name: "x".into(),
        };
        assert_eq!(nf.kind(), ErrorKind::NotFound);
        assert_eq!(
            StoreError::Expired { name: "x".into() }.kind(),
            ErrorKind::Expired
        );
        assert_eq!(
            StoreError::Tampered { name: "x".into() }.kind(),
            ErrorKind::Tampered
        );
        assert_eq!(
            StoreError::Revoked {
                agent: "x".into(),
                at: None,
                by: None
            }
            .kind(),
            ErrorKind::Revoked
        );
        assert_eq!(
            StoreError::Sqlite(rusqlite::Error::InvalidQuery).kind(),
            ErrorKind::Internal
        );
    }
}
