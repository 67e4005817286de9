//! Login keys: the `login` protection class (DESIGN §5).
//!
//! Each owner who has logged in through `pam_agentkeys` has one row in `login_keys`: a
//! random 32-byte *login key*, wrapped with AES-256-GCM under a key-encryption key (KEK)
//!
//! ```text
//! stretched = Argon2id(password, salt; m_cost_kib, t_cost, p_cost) → 32 bytes
//! KEK       = HMAC-SHA256(login wrap key, "AgentKeys-v1 login kek" ‖ stretched)
//! ```
//!
//! where the salt (16 random bytes, new at every wrap) and the Argon2id parameters are
//! stored with the row, and the *login wrap key* is derived from the host master key like
//! the other subkeys. Mixing in the master key means a stolen database alone does not even
//! allow an offline guess at the password: the GCM tag of the wrapped key can only be
//! checked by someone who also holds the master key. The wrap's AAD binds it to the owner
//! and the parameters.
//!
//! While the owner has a session, the login key sits in secret memory ([`Crypto::login`]).
//! A login-class credential's value is sealed under
//! `HMAC-SHA256(login key, "AgentKeys-v1 login-class value key" ‖ credential key)`: opening
//! it needs both the host's credential key and the owner's login key, so without a session
//! it answers `Locked` (and a stolen disk plus master key still needs the password).
//!
//! Argon2id is slow on purpose and must not run under the store's lock: callers
//! [`stretch`] the password first, outside the store, then hand the result in.

use std::collections::HashMap;

use hmac::{Hmac, Mac};
use rusqlite::{OptionalExtension, params};
use sha2::Sha256;
use zeroize::Zeroize;

use super::audit::{Actor, Outcome, Record};
use super::error::{StoreError, random_fill};
use super::seal::{self, KEY_LEN};
use super::{Durability, Store, now_s};
use crate::vault::{SecretBuf, Vault};

/// Argon2id cost parameters, stored with each wrapped login key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Passes over the memory.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

/// The parameters new wraps use: 64 MiB, 3 passes, 1 lane (RFC 9106 §4's second
/// recommendation, with one lane because the `argon2` crate computes lanes one after the
/// other here). Measured on the 2-core CI machine kind: see pam/README.md.
pub const LOGIN_KDF: KdfParams = KdfParams {
    m_cost_kib: 64 * 1024,
    t_cost: 3,
    p_cost: 1,
};

/// Bounds accepted from the database, checked before any stretching: no more than a few
/// times what the daemon writes ([`LOGIN_KDF`]), so a tampered row cannot make it allocate
/// gigabytes or spin for minutes before the wrap's AAD check would catch the change. (The
/// schema's CHECKs are looser — 1 GiB, 16 — and only a backstop.)
const M_COST_RANGE: std::ops::RangeInclusive<u32> = 8 * 1024..=256 * 1024;
const T_COST_RANGE: std::ops::RangeInclusive<u32> = 1..=4;
const P_COST_RANGE: std::ops::RangeInclusive<u32> = 1..=4;

pub const SALT_LEN: usize = 16;

const LABEL_KEK: &[u8] = b"AgentKeys-v1 login kek";
const LABEL_VALUE_KEY: &[u8] = b"AgentKeys-v1 login-class value key";
const LABEL_WRAP_AAD: &[u8] = b"AgentKeys-v1 login key";

impl KdfParams {
    fn check(&self) -> Result<(), StoreError> {
        if M_COST_RANGE.contains(&self.m_cost_kib)
            && T_COST_RANGE.contains(&self.t_cost)
            && P_COST_RANGE.contains(&self.p_cost)
        {
            Ok(())
        } else {
            Err(StoreError::InvalidArgument {
                what: "Argon2id parameters",
                reason: format!("{self:?} are outside the accepted ranges"),
            })
        }
    }
}

/// What a wrap is made with: parameters and salt (public), read before stretching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrapSpec {
    pub params: KdfParams,
    pub salt: [u8; SALT_LEN],
}

impl WrapSpec {
    /// Current parameters and a fresh random salt: for a new wrap.
    pub fn fresh() -> Result<WrapSpec, StoreError> {
        let mut salt = [0u8; SALT_LEN];
        random_fill(&mut salt, "a login key salt")?;
        Ok(WrapSpec {
            params: LOGIN_KDF,
            salt,
        })
    }
}

/// Argon2id of `password` under `spec`, into secret memory. Slow (see [`LOGIN_KDF`]):
/// call it outside the store's lock. Its working memory is heap, zeroized when it ends.
pub fn stretch(
    vault: &Vault,
    spec: &WrapSpec,
    password: &SecretBuf,
) -> Result<SecretBuf, StoreError> {
    spec.params.check()?;
    let params = argon2::Params::new(
        spec.params.m_cost_kib,
        spec.params.t_cost,
        spec.params.p_cost,
        Some(KEY_LEN),
    )
    .map_err(|_| StoreError::Crypto {
        step: "setting up Argon2id parameters",
    })?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = vault.alloc(KEY_LEN)?;
    crate::vault::scrubbed(|| {
        argon.hash_password_into(
            password.expose_secret(),
            &spec.salt,
            out.expose_secret_mut(),
        )
    })
    .map_err(|_| StoreError::Crypto {
        step: "Argon2id derivation",
    })?;
    Ok(out)
}

/// HMAC-SHA256(key, parts…) into secret memory.
fn hmac_secret(vault: &Vault, key: &SecretBuf, parts: &[&[u8]]) -> Result<SecretBuf, StoreError> {
    crate::vault::scrubbed(|| {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.expose_secret()).map_err(|_| {
            StoreError::Crypto {
                step: "HMAC key setup",
            }
        })?;
        for part in parts {
            mac.update(part);
        }
        let mut out = mac.finalize().into_bytes();
        let key = seal::secret_copy(vault, &out);
        out.as_mut_slice().zeroize();
        key
    })
}

fn wrap_aad(owner: u32, spec: &WrapSpec) -> Vec<u8> {
    let mut aad = Vec::with_capacity(LABEL_WRAP_AAD.len() + 16 + SALT_LEN);
    aad.extend_from_slice(LABEL_WRAP_AAD);
    aad.extend_from_slice(&owner.to_be_bytes());
    aad.extend_from_slice(&spec.params.m_cost_kib.to_be_bytes());
    aad.extend_from_slice(&spec.params.t_cost.to_be_bytes());
    aad.extend_from_slice(&spec.params.p_cost.to_be_bytes());
    aad.extend_from_slice(&spec.salt);
    aad
}

/// The key a login-class value of `owner` is sealed under (needs the login key loaded).
pub(crate) fn value_key(
    vault: &Vault,
    login_key: &SecretBuf,
    credential_key: &SecretBuf,
) -> Result<SecretBuf, StoreError> {
    hmac_secret(
        vault,
        login_key,
        &[LABEL_VALUE_KEY, credential_key.expose_secret()],
    )
}

/// What an unlock came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unlock {
    /// The password opened the owner's login key; it is loaded.
    Unlocked,
    /// The owner had no login key: one was made, wrapped under this password, and loaded.
    Created,
    /// The password did not open the login key (GCM tag failed); nothing is loaded.
    WrongPassword,
}

/// What a password change came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewrap {
    /// The login key is now wrapped under the new password (and only that).
    Rewrapped,
    /// The owner had no login key: one was made under the new password (not loaded).
    Created,
    /// Neither the key in memory nor the old password could open it: nothing changed.
    WrongPassword,
}

/// What locking did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Locked {
    /// Whether a login key was in memory.
    pub was_unlocked: bool,
    /// Session-bound (`until_logout`) grants deleted.
    pub grants_ended: usize,
}

/// A stored wrap.
#[derive(Debug)]
struct Row {
    spec: WrapSpec,
    nonce: Vec<u8>,
    wrapped: Vec<u8>,
}

/// The login keys in memory, by owner.
pub(crate) type LoginKeys = HashMap<u32, SecretBuf>;

impl Store {
    fn login_row(&self, owner: u32) -> Result<Option<Row>, StoreError> {
        let row = self
            .conn
            .prepare_cached(
                "SELECT m_cost_kib, t_cost, p_cost, salt, nonce, wrapped FROM login_keys
                 WHERE owner_uid = ?1",
            )?
            .query_row([owner], |r| {
                Ok((
                    KdfParams {
                        m_cost_kib: r.get(0)?,
                        t_cost: r.get(1)?,
                        p_cost: r.get(2)?,
                    },
                    r.get::<_, Vec<u8>>(3)?,
                    r.get::<_, Vec<u8>>(4)?,
                    r.get::<_, Vec<u8>>(5)?,
                ))
            })
            .optional()?;
        let Some((params, salt, nonce, wrapped)) = row else {
            return Ok(None);
        };
        let salt =
            <[u8; SALT_LEN]>::try_from(salt.as_slice()).map_err(|_| StoreError::Corrupt {
                db: self.db_path.clone(),
                what: format!("login key of uid {owner} has a salt of the wrong length"),
            })?;
        Ok(Some(Row {
            spec: WrapSpec { params, salt },
            nonce,
            wrapped,
        }))
    }

    /// How `owner`'s password must be stretched to open the stored login key: the stored
    /// parameters and salt, or (no key yet) [`WrapSpec::fresh`]. Stored parameters outside
    /// the accepted ranges (only a tampered row has them) are refused here, before anyone
    /// stretches with them, with a `Denied` audit row.
    pub fn login_spec(&mut self, actor: &Actor, owner: u32) -> Result<WrapSpec, StoreError> {
        let Some(row) = self.login_row(owner)? else {
            return WrapSpec::fresh();
        };
        if row.spec.params.check().is_err() {
            let p = row.spec.params;
            let detail = format!(
                "stored Argon2id parameters m={}KiB t={} p={} are outside the accepted ranges; \
                 the login key row was altered and is refused",
                p.m_cost_kib, p.t_cost, p.p_cost
            );
            self.record_unlock(actor, owner, Outcome::Denied, &detail)?;
            return Err(StoreError::Corrupt {
                db: self.db_path.clone(),
                what: format!(
                    "the login key of uid {owner}: {detail} (the daemon writes m={}KiB t={} \
                     p={})",
                    LOGIN_KDF.m_cost_kib, LOGIN_KDF.t_cost, LOGIN_KDF.p_cost
                ),
            });
        }
        Ok(row.spec)
    }

    /// Whether `owner`'s login key is in memory.
    pub fn login_unlocked(&self, owner: u32) -> bool {
        self.crypto.login.contains_key(&owner)
    }

    fn kek(&self, stretched: &SecretBuf) -> Result<SecretBuf, StoreError> {
        hmac_secret(
            &self.crypto.vault,
            &self.crypto.keys.login_wrap,
            &[LABEL_KEK, stretched.expose_secret()],
        )
    }

    /// Opens the login key with `stretched` (= [`stretch`] of the password under `spec`,
    /// which [`Store::login_spec`] gave) and loads it; creates one when `owner` has none.
    /// Every outcome is an audit row.
    pub fn login_unlock(
        &mut self,
        actor: &Actor,
        owner: u32,
        spec: &WrapSpec,
        stretched: &SecretBuf,
    ) -> Result<Unlock, StoreError> {
        let kek = self.kek(stretched)?;
        // The opened key, loaded only once its audit row is committed: no key in memory
        // whose unlock is not on record.
        let mut opened = None;
        let outcome = match self.login_row(owner)? {
            Some(row) if row.spec == *spec => {
                match seal::open(
                    &self.crypto.vault,
                    &kek,
                    &row.nonce,
                    &row.wrapped,
                    &wrap_aad(owner, spec),
                )? {
                    Ok(key) if key.len() == KEY_LEN => {
                        opened = Some(key);
                        Unlock::Unlocked
                    }
                    _ => Unlock::WrongPassword,
                }
            }
            // Made or re-wrapped between our read of the spec and now (a concurrent first
            // login, a password change): this stretch is stale. If that left the key
            // loaded, the owner is unlocked all the same; say so rather than "wrong".
            Some(_) if self.crypto.login.contains_key(&owner) => Unlock::Unlocked,
            Some(_) => Unlock::WrongPassword,
            None => {
                let key = self.new_login_key()?;
                self.write_wrap(actor, owner, spec, &kek, &key, "login.create")?;
                self.crypto.login.insert(owner, key);
                return Ok(Unlock::Created);
            }
        };
        let (outcome_row, detail) = match outcome {
            Unlock::Unlocked if opened.is_none() => (Outcome::Ok, "login key already unlocked"),
            Unlock::Unlocked => (Outcome::Ok, "login key unlocked"),
            _ => (Outcome::Denied, "password did not open the login key"),
        };
        self.record_unlock(actor, owner, outcome_row, detail)?;
        if let Some(key) = opened {
            self.crypto.login.insert(owner, key);
        }
        Ok(outcome)
    }

    /// The `login.unlock` audit row of an unlock attempt.
    fn record_unlock(
        &mut self,
        actor: &Actor,
        owner: u32,
        outcome: Outcome,
        detail: &str,
    ) -> Result<(), StoreError> {
        self.commit(Durability::Normal, |_, _| {
            Ok((
                (),
                Record {
                    actor: *actor,
                    owner_uid: Some(owner),
                    action: "login.unlock",
                    subject: String::new(),
                    outcome,
                    detail: detail.to_owned(),
                },
            ))
        })
    }

    fn new_login_key(&self) -> Result<SecretBuf, StoreError> {
        let mut key = self.crypto.vault.alloc(KEY_LEN)?;
        random_fill(key.expose_secret_mut(), "a login key")?;
        Ok(key)
    }

    /// Writes (insert or replace) `owner`'s wrap of `key` under `kek`, with its audit row.
    fn write_wrap(
        &mut self,
        actor: &Actor,
        owner: u32,
        spec: &WrapSpec,
        kek: &SecretBuf,
        key: &SecretBuf,
        action: &'static str,
    ) -> Result<(), StoreError> {
        let sealed = seal::seal(
            &self.crypto.vault,
            kek,
            key.expose_secret(),
            &wrap_aad(owner, spec),
        )?;
        let now = now_s();
        let p = spec.params;
        self.commit(Durability::Full, |tx, _| {
            tx.prepare_cached("INSERT OR IGNORE INTO owners (uid, created_at) VALUES (?1, ?2)")?
                .execute(params![owner, now])?;
            tx.prepare_cached(
                "INSERT INTO login_keys (owner_uid, kdf, m_cost_kib, t_cost, p_cost, salt, nonce,
                                         wrapped, created_at, updated_at)
                 VALUES (?1, 'argon2id-v19', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)
                 ON CONFLICT (owner_uid) DO UPDATE SET
                     m_cost_kib = excluded.m_cost_kib, t_cost = excluded.t_cost,
                     p_cost = excluded.p_cost, salt = excluded.salt, nonce = excluded.nonce,
                     wrapped = excluded.wrapped, updated_at = excluded.updated_at",
            )?
            .execute(params![
                owner,
                p.m_cost_kib,
                p.t_cost,
                p.p_cost,
                &spec.salt[..],
                &sealed.nonce[..],
                sealed.sealed,
                now
            ])?;
            let record = Record {
                actor: *actor,
                owner_uid: Some(owner),
                action,
                subject: String::new(),
                outcome: Outcome::Ok,
                detail: format!(
                    "argon2id m={}KiB t={} p={}",
                    p.m_cost_kib, p.t_cost, p.p_cost
                ),
            };
            Ok(((), record))
        })
    }

    /// Re-wraps `owner`'s login key under a new password (`new_spec`, `new_stretched`).
    /// The key comes from memory when the owner is unlocked, else from `old` (the stretch
    /// of the old password under [`Store::login_spec`]). Without any key yet, one is made.
    /// The lock state does not change.
    pub fn login_rewrap(
        &mut self,
        actor: &Actor,
        owner: u32,
        old: Option<(&WrapSpec, &SecretBuf)>,
        new_spec: &WrapSpec,
        new_stretched: &SecretBuf,
    ) -> Result<Rewrap, StoreError> {
        let new_kek = self.kek(new_stretched)?;
        let row = self.login_row(owner)?;
        let Some(row) = row else {
            let key = self.new_login_key()?;
            self.write_wrap(actor, owner, new_spec, &new_kek, &key, "login.create")?;
            return Ok(Rewrap::Created);
        };
        let key = match self.crypto.login.get(&owner) {
            Some(loaded) => Some(seal::secret_copy(
                &self.crypto.vault,
                loaded.expose_secret(),
            )?),
            None => match old {
                Some((spec, stretched)) if *spec == row.spec => {
                    let kek = self.kek(stretched)?;
                    seal::open(
                        &self.crypto.vault,
                        &kek,
                        &row.nonce,
                        &row.wrapped,
                        &wrap_aad(owner, spec),
                    )?
                    .ok()
                    .filter(|k| k.len() == KEY_LEN)
                }
                _ => None,
            },
        };
        let Some(key) = key else {
            self.commit(Durability::Normal, |_, _| {
                Ok((
                    (),
                    Record {
                        actor: *actor,
                        owner_uid: Some(owner),
                        action: "login.rewrap",
                        subject: String::new(),
                        outcome: Outcome::Denied,
                        detail: "old password did not open the login key; unchanged".to_owned(),
                    },
                ))
            })?;
            return Ok(Rewrap::WrongPassword);
        };
        self.write_wrap(actor, owner, new_spec, &new_kek, &key, "login.rewrap")?;
        Ok(Rewrap::Rewrapped)
    }

    /// Drops `owner`'s login key from memory (zeroized) and ends their session-bound
    /// grants, in one audited transaction. Called at the owner's last logout.
    /// The grants are deleted first; the key is dropped afterwards in every case, also
    /// when that commit failed (the owner has no session either way: fail closed).
    pub fn login_lock(&mut self, actor: &Actor, owner: u32) -> Result<Locked, StoreError> {
        let was_unlocked = self.crypto.login.contains_key(&owner);
        let committed = self.commit(Durability::Full, |tx, _| {
            let ended = tx
                .prepare_cached(
                    "DELETE FROM grants WHERE until_logout = 1 AND credential_id IN
                     (SELECT id FROM credentials WHERE owner_uid = ?1)",
                )?
                .execute([owner])?;
            let record = Record {
                actor: *actor,
                owner_uid: Some(owner),
                action: "login.lock",
                subject: String::new(),
                outcome: Outcome::Ok,
                detail: format!(
                    "last session closed; login key {}; session-bound grants ended={ended}",
                    if was_unlocked {
                        "dropped"
                    } else {
                        "was not loaded"
                    }
                ),
            };
            Ok((ended, record))
        });
        self.crypto.login.remove(&owner);
        Ok(Locked {
            was_unlocked,
            grants_ended: committed?,
        })
    }

    /// Deletes every session-bound grant, in one audited transaction. Called at daemon
    /// start-up: session counts do not survive a restart, so every owner starts locked and
    /// no grant may outlive the sessions it was bound to. Returns how many ended.
    pub fn end_all_session_bound_grants(&mut self) -> Result<usize, StoreError> {
        self.commit(Durability::Full, |tx, _| {
            let ended = tx
                .prepare_cached("DELETE FROM grants WHERE until_logout = 1")?
                .execute([])?;
            let record = Record {
                actor: Actor::this_process(),
                owner_uid: None,
                action: "login.restart",
                subject: String::new(),
                outcome: Outcome::Ok,
                detail: format!(
                    "daemon started; every owner locked; session-bound grants ended={ended}"
                ),
            };
            Ok((ended, record))
        })
    }
}

#[cfg(test)]
#[path = "login_tests.rs"]
mod tests;
