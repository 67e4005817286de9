//! Credentials: named secrets of an owner, sealed with AES-256-GCM under the credential key.
//!
//! AAD = owner uid (u32 BE) ‖ credential id (i64 BE) ‖ version (u32 BE): a sealed value only
//! opens in the row it was written for, at the version it was written at. Ids come from
//! AUTOINCREMENT and are never reused; a replace bumps the version and draws a fresh nonce.

use rusqlite::{OptionalExtension, Row, params};

use super::audit::{Actor, Outcome, Record};
use super::error::StoreError;
use super::grants::{UsageBump, Via, bump_usage};
use super::ids::{check_name, valid_env_var};
use super::seal::{self, OpenFailure};
use super::{Durability, Store, now_s};
use crate::vault::SecretBuf;

/// A credential's protection class (DESIGN §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialClass {
    /// Sealed under the host's credential key: readable whenever the daemon runs.
    Host,
    /// Additionally needs the owner's login key: readable only while the owner has a
    /// session that `pam_agentkeys` unlocked (`Locked` otherwise).
    Login,
}

impl CredentialClass {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialClass::Host => "host",
            CredentialClass::Login => "login",
        }
    }

    pub fn parse(s: &str) -> Option<CredentialClass> {
        match s {
            "host" => Some(CredentialClass::Host),
            "login" => Some(CredentialClass::Login),
            _ => None,
        }
    }
}

/// Options of [`Store::put_credential`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOptions {
    /// Environment variable the secret is injected as (`ANTHROPIC_API_KEY`).
    pub env_var: String,
    /// Unix seconds after which reads fail with `Expired`.
    pub expires_at: Option<i64>,
    /// Overwrite an existing credential of that name (bumping its version).
    pub replace: bool,
    /// Protection class; `None` keeps a replaced credential's class (a new one is `host`),
    /// so replacing a value never silently lowers its protection.
    pub class: Option<CredentialClass>,
}

/// What [`Store::put_credential`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    Created(CredentialMeta),
    Replaced(CredentialMeta),
}

impl PutOutcome {
    /// The stored metadata either way.
    pub fn meta(&self) -> &CredentialMeta {
        match self {
            PutOutcome::Created(m) | PutOutcome::Replaced(m) => m,
        }
    }
}

/// A credential's metadata (everything but the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialMeta {
    pub id: i64,
    pub owner_uid: u32,
    pub name: String,
    pub env_var: String,
    pub last4: String,
    pub version: u32,
    pub created_at: i64,
    pub updated_at: i64,
    pub expires_at: Option<i64>,
    pub single_use: bool,
    pub class: String,
}

/// The metadata columns, in `meta_from_row` order (a macro so queries are `concat!`ed
/// literals, prepared once and cached).
macro_rules! meta_columns {
    () => {
        "id, owner_uid, name, env_var, last4, version, created_at, updated_at, expires_at, \
         single_use, class"
    };
}

fn meta_from_row(r: &Row<'_>) -> rusqlite::Result<CredentialMeta> {
    Ok(CredentialMeta {
        id: r.get(0)?,
        owner_uid: r.get(1)?,
        name: r.get(2)?,
        env_var: r.get(3)?,
        last4: r.get(4)?,
        version: r.get(5)?,
        created_at: r.get(6)?,
        updated_at: r.get(7)?,
        expires_at: r.get(8)?,
        single_use: r.get(9)?,
        class: r.get(10)?,
    })
}

/// The AAD binding a sealed value to its row, version and name: owner uid (u32 BE) ‖
/// credential id (i64 BE) ‖ version (u32 BE) ‖ name. DESIGN §5 names the first three; the
/// name is added so that renaming rows in the file (swapping `openai` and `anthropic`)
/// fails to open as well. The name is last, so it needs no length prefix.
pub(crate) fn aad(owner: u32, id: i64, version: u32, name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + name.len());
    out.extend_from_slice(&owner.to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out
}

/// The last four characters shown to users: only for UTF-8 secrets of at least 12 bytes (so
/// a short secret never loses a large fraction of itself), and never control characters.
pub(crate) fn last4(secret: &[u8]) -> String {
    if secret.len() < 12 {
        return String::new();
    }
    let Ok(text) = std::str::from_utf8(secret) else {
        return String::new();
    };
    let tail: Vec<char> = text.chars().rev().take(4).collect();
    if tail.iter().any(|c| c.is_control()) {
        return String::new();
    }
    tail.into_iter().rev().collect()
}

impl Store {
    /// The key `owner`'s login-class values are sealed under; `Locked` without a session.
    fn login_value_key(&self, owner: u32, name: &str) -> Result<SecretBuf, StoreError> {
        let Some(login_key) = self.crypto.login.get(&owner) else {
            return Err(StoreError::Locked {
                name: name.to_owned(),
                owner,
            });
        };
        super::login::value_key(&self.crypto.vault, login_key, &self.crypto.keys.credential)
    }
}

fn not_found(name: &str) -> StoreError {
    StoreError::NotFound {
        what: "credential",
        name: name.to_owned(),
    }
}

impl Store {
    /// Store (or with `opts.replace`, replace) the secret `name` of `owner`.
    pub fn put_credential(
        &mut self,
        actor: &Actor,
        owner: u32,
        name: &str,
        secret: &SecretBuf,
        opts: &PutOptions,
    ) -> Result<PutOutcome, StoreError> {
        check_name("credential name", name)?;
        if !valid_env_var(&opts.env_var) {
            return Err(StoreError::InvalidArgument {
                what: "environment variable name",
                reason: format!("{:?} must match [A-Z_][A-Z0-9_]{{0,127}}", opts.env_var),
            });
        }
        let now = now_s();
        let shown = last4(secret.expose_secret());
        let existing_class: Option<String> = self
            .conn
            .prepare_cached("SELECT class FROM credentials WHERE owner_uid = ?1 AND name = ?2")?
            .query_row(params![owner, name], |r| r.get(0))
            .optional()?;
        let class = opts
            .class
            .or_else(|| existing_class.as_deref().and_then(CredentialClass::parse))
            .unwrap_or(CredentialClass::Host);
        // A login-class value is sealed under a key that needs the owner's login key.
        let login_key = match class {
            CredentialClass::Host => None,
            CredentialClass::Login => Some(self.login_value_key(owner, name)?),
        };
        self.commit(Durability::Full, |tx, crypto| {
            tx.prepare_cached("INSERT OR IGNORE INTO owners (uid, created_at) VALUES (?1, ?2)")?
                .execute(params![owner, now])?;
            let existing: Option<(i64, u32)> = tx
                .prepare_cached(
                    "SELECT id, version FROM credentials WHERE owner_uid = ?1 AND name = ?2",
                )?
                .query_row(params![owner, name], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let (id, version, replaced) = match existing {
                Some(_) if !opts.replace => {
                    return Err(StoreError::AlreadyExists {
                        what: "credential",
                        name: name.to_owned(),
                    });
                }
                Some((id, old)) => {
                    let version = old.checked_add(1).ok_or(StoreError::InvalidArgument {
                        what: "credential version",
                        reason: "replaced too many times".to_owned(),
                    })?;
                    (id, version, true)
                }
                None => {
                    // The row first, sealed below: the id is part of the AAD.
                    tx.prepare_cached(
                        "INSERT INTO credentials (owner_uid, name, env_var, version, nonce, sealed,
                                                  created_at, updated_at)
                         VALUES (?1, ?2, ?3, 1, x'', x'', ?4, ?4)",
                    )?
                    .execute(params![owner, name, opts.env_var, now])?;
                    (tx.last_insert_rowid(), 1, false)
                }
            };
            let sealed = seal::seal(
                &crypto.vault,
                login_key.as_ref().unwrap_or(&crypto.keys.credential),
                secret.expose_secret(),
                &aad(owner, id, version, name),
            )?;
            tx.prepare_cached(
                "UPDATE credentials SET env_var = ?1, last4 = ?2, version = ?3, nonce = ?4,
                        sealed = ?5, updated_at = ?6, expires_at = ?7, class = ?9
                 WHERE id = ?8",
            )?
            .execute(params![
                opts.env_var,
                shown,
                version,
                &sealed.nonce[..],
                sealed.sealed,
                now,
                opts.expires_at,
                id,
                class.as_str()
            ])?;
            let meta = tx
                .prepare_cached(concat!(
                    "SELECT ",
                    meta_columns!(),
                    " FROM credentials WHERE id = ?1"
                ))?
                .query_row([id], meta_from_row)?;
            let record = Record {
                actor: *actor,
                owner_uid: Some(owner),
                action: if replaced {
                    "credential.replace"
                } else {
                    "credential.store"
                },
                subject: name.to_owned(),
                outcome: Outcome::Ok,
                detail: format!("id={id} version={version} class={}", class.as_str()),
            };
            let outcome = if replaced {
                PutOutcome::Replaced(meta)
            } else {
                PutOutcome::Created(meta)
            };
            Ok((outcome, record))
        })
    }

    /// Open the secret `name` of `owner` into secret memory. Every attempt is audited:
    /// failures and single-use reads commit their row before returning; a plain successful
    /// read queues its row (see [`Store::queue_read`]).
    pub fn read_credential(
        &mut self,
        actor: &Actor,
        owner: u32,
        name: &str,
    ) -> Result<(CredentialMeta, SecretBuf), StoreError> {
        self.read_as(actor, owner, name, None)
    }

    /// [`Store::read_credential`] on behalf of an agent (`via`), whose access the caller has
    /// checked: the audit rows name the agent, the agent's usage counters move with them,
    /// and a `once` grant is deleted in the same transaction as the read's row.
    pub(crate) fn read_as(
        &mut self,
        actor: &Actor,
        owner: u32,
        name: &str,
        via: Option<&Via<'_>>,
    ) -> Result<(CredentialMeta, SecretBuf), StoreError> {
        let row = self
            .conn
            .prepare_cached(concat!(
                "SELECT ",
                meta_columns!(),
                ", nonce, sealed FROM credentials WHERE owner_uid = ?1 AND name = ?2"
            ))?
            .query_row(params![owner, name], |r| {
                Ok((
                    meta_from_row(r)?,
                    r.get::<_, Vec<u8>>(11)?,
                    r.get::<_, Vec<u8>>(12)?,
                ))
            })
            .optional()?;
        let Some((meta, nonce, sealed)) = row else {
            self.deny_read(actor, owner, name, via, Outcome::Denied, "not found")?;
            return Err(not_found(name));
        };
        if meta.expires_at.is_some_and(|t| t <= now_s()) {
            self.deny_read(actor, owner, name, via, Outcome::Denied, "expired")?;
            return Err(StoreError::Expired {
                name: name.to_owned(),
            });
        }
        let login_key = if meta.class == CredentialClass::Login.as_str() {
            match self.login_value_key(owner, name) {
                Ok(key) => Some(key),
                Err(err @ StoreError::Locked { .. }) => {
                    self.deny_read(actor, owner, name, via, Outcome::Denied, "locked")?;
                    return Err(err);
                }
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        let opened = seal::open(
            &self.crypto.vault,
            login_key.as_ref().unwrap_or(&self.crypto.keys.credential),
            &nonce,
            &sealed,
            &aad(owner, meta.id, meta.version, &meta.name),
        )?;
        let secret = match opened {
            Ok(secret) => secret,
            Err(failure) => {
                tracing::error!(
                    owner,
                    name,
                    id = meta.id,
                    version = meta.version,
                    malformed = failure == OpenFailure::Malformed,
                    "credential failed its integrity check (row altered, moved or rolled back)"
                );
                let detail = format!("integrity check failed: id={}", meta.id);
                self.deny_read(actor, owner, name, via, Outcome::Error, &detail)?;
                return Err(StoreError::Tampered {
                    name: name.to_owned(),
                });
            }
        };
        let once = via.is_some_and(|v| v.once);
        let record = Record {
            actor: *actor,
            owner_uid: Some(owner),
            action: "credential.read",
            subject: name.to_owned(),
            outcome: Outcome::Ok,
            detail: format!(
                "{}id={} version={}{}{}",
                via.map(|v| format!("agent={} ", v.agent_id))
                    .unwrap_or_default(),
                meta.id,
                meta.version,
                if meta.single_use { " consumed" } else { "" },
                if once { " grant=once used" } else { "" }
            ),
        };
        let usage = via.map(|v| UsageBump::read(v.agent_id, name));
        // A single-use credential or a once grant is consumed by this read: a state change,
        // so it commits (FULL) before the secret is handed out.
        if meta.single_use || once {
            self.commit(Durability::Full, |tx, _| {
                if let Some(v) = via.filter(|v| v.once) {
                    let gone = tx
                        .prepare_cached(
                            "DELETE FROM grants WHERE agent_id = ?1 AND credential_id = ?2 AND mode = 'once'",
                        )?
                        .execute(params![v.agent_id, meta.id])?;
                    if gone != 1 {
                        // Another read used the grant first (the caller's check raced it).
                        return Err(StoreError::NotGranted {
                            agent: v.agent_name.to_owned(),
                            credential: name.to_owned(),
                            why: "its single-use grant was already used",
                        });
                    }
                }
                // After the grant: deleting the credential cascades to its grants.
                if meta.single_use {
                    tx.prepare_cached("DELETE FROM credentials WHERE id = ?1")?
                        .execute([meta.id])?;
                }
                if let Some(u) = &usage {
                    bump_usage(tx, u, now_s())?;
                }
                Ok(((), record))
            })?;
        } else {
            self.queue_read(record, usage)?;
        }
        Ok((meta, secret))
    }

    /// Commits the audit row of a refused read (and the agent's denial count). A failed
    /// integrity check (`Outcome::Error`) is fsynced; a denial need not be (see the module
    /// documentation on durability).
    pub(crate) fn deny_read(
        &mut self,
        actor: &Actor,
        owner: u32,
        name: &str,
        via: Option<&Via<'_>>,
        outcome: Outcome,
        why: &str,
    ) -> Result<(), StoreError> {
        let durability = match outcome {
            Outcome::Error => Durability::Full,
            Outcome::Ok | Outcome::Denied => Durability::Normal,
        };
        let record = Record {
            actor: *actor,
            owner_uid: Some(owner),
            action: "credential.read",
            subject: name.to_owned(),
            outcome,
            detail: match via {
                Some(v) => format!("agent={} {why}", v.agent_id),
                None => why.to_owned(),
            },
        };
        let usage = via.map(|v| UsageBump::denial(v.agent_id, name));
        self.commit(durability, |tx, _| {
            if let Some(u) = &usage {
                bump_usage(tx, u, now_s())?;
            }
            Ok(((), record))
        })
    }

    /// The credentials of `owner`, by name.
    pub fn list_credentials(&self, owner: u32) -> Result<Vec<CredentialMeta>, StoreError> {
        let mut stmt = self.conn.prepare_cached(concat!(
            "SELECT ",
            meta_columns!(),
            " FROM credentials WHERE owner_uid = ?1 ORDER BY name"
        ))?;
        let rows = stmt.query_map([owner], meta_from_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Delete the credential `name` of `owner`; its grants go with it.
    pub fn delete_credential(
        &mut self,
        actor: &Actor,
        owner: u32,
        name: &str,
    ) -> Result<CredentialMeta, StoreError> {
        self.commit(Durability::Full, |tx, _| {
            let meta = tx
                .prepare_cached(concat!(
                    "SELECT ",
                    meta_columns!(),
                    " FROM credentials WHERE owner_uid = ?1 AND name = ?2"
                ))?
                .query_row(params![owner, name], meta_from_row)
                .optional()?
                .ok_or_else(|| not_found(name))?;
            let grants: i64 = tx
                .prepare_cached("SELECT count(*) FROM grants WHERE credential_id = ?1")?
                .query_row([meta.id], |r| r.get(0))?;
            tx.prepare_cached("DELETE FROM credentials WHERE id = ?1")?
                .execute([meta.id])?;
            let record = Record {
                actor: *actor,
                owner_uid: Some(owner),
                action: "credential.delete",
                subject: name.to_owned(),
                outcome: Outcome::Ok,
                detail: format!("id={} version={} grants={grants}", meta.id, meta.version),
            };
            Ok((meta, record))
        })
    }
}

#[cfg(test)]
#[path = "credentials_tests.rs"]
mod tests;
