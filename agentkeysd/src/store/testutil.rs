//! Helpers for the store's tests: a real store in a temp dir, on a real vault.

use std::path::{Path, PathBuf};

use rusqlite::Connection;
use tempfile::TempDir;

use super::{Actor, DB_FILE, PutOptions, PutOutcome, Store};
use crate::vault::{SecretBuf, SecretMemoryPolicy, Vault};

pub(crate) const ALICE: u32 = 1000;
pub(crate) const BOB: u32 = 1001;

pub(crate) fn actor(uid: u32) -> Actor {
    Actor {
        uid,
        pid: Some(4242),
    }
}

pub(crate) fn vault() -> Vault {
    Vault::new(SecretMemoryPolicy::Prefer).unwrap()
}

/// A store in a fresh temp dir (the state dir itself is created by `Store::open`).
#[derive(Debug)]
pub(crate) struct Fixture {
    pub tmp: TempDir,
    pub vault: Vault,
    pub store: Store,
}

impl Fixture {
    pub(crate) fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let vault = vault();
        let store = Store::open(&tmp.path().join("state"), None, &vault).unwrap();
        Fixture { tmp, vault, store }
    }

    pub(crate) fn state_dir(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    /// The store's own connection, for tampering: the store holds the database locked
    /// (`locking_mode=EXCLUSIVE`), so a second connection cannot get in while it is open.
    pub(crate) fn raw(&self) -> &Connection {
        self.store.conn_for_tests()
    }

    pub(crate) fn reopen(self) -> Result<Fixture, super::StoreError> {
        let Fixture { tmp, vault, store } = self;
        drop(store);
        let store = Store::open(&tmp.path().join("state"), None, &vault)?;
        Ok(Fixture { tmp, vault, store })
    }

    pub(crate) fn secret(&self, bytes: &[u8]) -> SecretBuf {
        secret(&self.vault, bytes)
    }

    pub(crate) fn put(&mut self, owner: u32, name: &str, value: &str) -> PutOutcome {
        let s = self.secret(value.as_bytes());
        self.store
            .put_credential(&actor(owner), owner, name, &s, &opts(false))
            .unwrap()
    }

    pub(crate) fn read(&mut self, owner: u32, name: &str) -> Result<Vec<u8>, super::StoreError> {
        let (_, s) = self.store.read_credential(&actor(owner), owner, name)?;
        Ok(s.expose_secret().to_vec())
    }
}

pub(crate) fn raw(state_dir: &Path) -> Connection {
    let conn = Connection::open(state_dir.join(DB_FILE)).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    conn
}

pub(crate) fn secret(vault: &Vault, bytes: &[u8]) -> SecretBuf {
    let mut s = vault.alloc(bytes.len()).unwrap();
    s.expose_secret_mut().copy_from_slice(bytes);
    s
}

pub(crate) fn opts(replace: bool) -> PutOptions {
    PutOptions {
        env_var: "ANTHROPIC_API_KEY".to_owned(),
        expires_at: None,
        replace,
        class: None,
    }
}

/// The public keys children pair with (any 32 bytes: the store does not verify signatures).
pub(crate) const KEY_A: [u8; 32] = [0xa1; 32];
pub(crate) const KEY_B: [u8; 32] = [0xb2; 32];
/// The uid of the paired child process (not an owner).
pub(crate) const CHILD_UID: u32 = 2000;
/// The session TTL of [`Fixture::pair`].
pub(crate) const TTL_S: i64 = 3600;

/// An approved request's session parameters: child [`CHILD_UID`], `pubkey`, `ttl_s`.
pub(crate) fn issue(pubkey: &[u8; 32], ttl_s: i64) -> super::sessions::Issue<'_> {
    super::sessions::Issue {
        pubkey,
        uid: CHILD_UID,
        ttl_s,
        request: "0123abcd",
    }
}

pub(crate) fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

impl Fixture {
    /// An approved `Pair` of agent `name` of `owner` with `scope`, key [`KEY_A`], TTL
    /// [`TTL_S`].
    pub(crate) fn pair(&mut self, owner: u32, name: &str, scope: &[&str]) -> super::AgentSession {
        self.pair_with(owner, name, scope, TTL_S)
    }

    /// [`Fixture::pair`] with a session TTL of `ttl_s`.
    pub(crate) fn pair_with(
        &mut self,
        owner: u32,
        name: &str,
        scope: &[&str],
        ttl_s: i64,
    ) -> super::AgentSession {
        self.store
            .pair_agent(
                &actor(owner),
                owner,
                name,
                &names(scope),
                &issue(&KEY_A, ttl_s),
            )
            .unwrap()
    }

    /// The newest audit row (of the first `AUDIT_LIST_MAX`: tests write fewer).
    pub(crate) fn last_audit(&mut self) -> super::AuditRow {
        self.store
            .audit_list(None, 0, u32::MAX)
            .unwrap()
            .pop()
            .unwrap()
    }

    /// Rows in `table` (a name from the schema).
    pub(crate) fn count(&self, table: &str) -> i64 {
        self.raw()
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }
}
