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
    }
}
