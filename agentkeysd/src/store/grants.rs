//! Grants (agent × credential: `auto`, `confirm`, `once`, optional expiry), the check every
//! agent read goes through, and per agent × credential usage counters.
//!
//! An agent may read a credential when, in this order: its session exists, its agent is
//! active, the session has not ended and is within its hard TTL, the credential's name is
//! in the agent's scope, and a grant of it exists and has not expired. `confirm` grants
//! additionally need the owner's approval of this one read (the daemon asks; the store
//! says so with [`AgentRead::NeedsConfirmation`]); `once` grants are deleted by the read
//! they serve, in the transaction that records it. Every refusal is an audit row.

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::agents::{AgentRecord, AgentState, revoked_error};
use super::audit::{Actor, Outcome, Record};
use super::credentials::CredentialMeta;
use super::error::StoreError;
use super::sessions::{AgentSession, SessionRecord};
use super::{Durability, Store, now_s};
use crate::vault::SecretBuf;

pub use crate::api::names::GrantMode;

/// A grant as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    pub agent_id: String,
    pub credential: String,
    pub mode: GrantMode,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    /// Session-bound: deleted at the owner's last logout (see [`Store::login_lock`]).
    pub until_logout: bool,
}

/// One agent × credential usage line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub agent_id: String,
    pub agent_name: String,
    pub credential: String,
    pub reads: u64,
    pub denials: u64,
    pub last_use: Option<i64>,
}

/// What an agent's read came to.
#[derive(Debug)]
pub enum AgentRead {
    /// The secret, served.
    Served(CredentialMeta, SecretBuf),
    /// The grant is `confirm`: ask the owner, then read again with `confirmed`.
    NeedsConfirmation {
        agent_id: String,
        agent_name: String,
        owner: u32,
    },
}

/// An agent a read is made for (see [`Store::read_as`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Via<'a> {
    pub agent_id: &'a str,
    pub agent_name: &'a str,
    /// The read uses (and deletes) a `once` grant.
    pub once: bool,
}

/// A usage counter to move with an audit row.
#[derive(Debug, Clone)]
pub(crate) struct UsageBump {
    agent_id: String,
    credential: String,
    served: bool,
}

impl UsageBump {
    pub(crate) fn read(agent_id: &str, credential: &str) -> UsageBump {
        UsageBump {
            agent_id: agent_id.to_owned(),
            credential: credential.to_owned(),
            served: true,
        }
    }

    pub(crate) fn denial(agent_id: &str, credential: &str) -> UsageBump {
        UsageBump {
            served: false,
            ..UsageBump::read(agent_id, credential)
        }
    }
}

/// Applies one usage bump (inside the transaction of its audit row).
pub(crate) fn bump_usage(tx: &Connection, usage: &UsageBump, now: i64) -> Result<(), StoreError> {
    let (reads, denials) = if usage.served { (1, 0) } else { (0, 1) };
    tx.prepare_cached(
        "INSERT INTO usage (agent_id, credential, reads, denials, last_use)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (agent_id, credential) DO UPDATE SET
             reads = reads + excluded.reads,
             denials = denials + excluded.denials,
             last_use = excluded.last_use",
    )?
    .execute(params![
        usage.agent_id,
        usage.credential,
        reads,
        denials,
        now
    ])?;
    Ok(())
}

fn find_grant(
    conn: &Connection,
    owner: u32,
    agent_id: &str,
    credential: &str,
) -> Result<Option<GrantRecord>, StoreError> {
    let row = conn
        .prepare_cached(
            "SELECT g.mode, g.expires_at, g.created_at, g.until_logout FROM grants g
             JOIN credentials c ON c.id = g.credential_id
             WHERE g.agent_id = ?1 AND c.owner_uid = ?2 AND c.name = ?3",
        )?
        .query_row(params![agent_id, owner, credential], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, bool>(3)?,
            ))
        })
        .optional()?;
    Ok(
        row.map(|(mode, expires_at, created_at, until_logout)| GrantRecord {
            agent_id: agent_id.to_owned(),
            credential: credential.to_owned(),
            // The schema's CHECK admits only the three spellings.
            mode: GrantMode::parse(&mode).unwrap_or(GrantMode::Confirm),
            expires_at,
            created_at,
            until_logout,
        }),
    )
}

fn add_to_scope(
    tx: &Transaction<'_>,
    agent: &AgentRecord,
    credential: &str,
) -> Result<(), StoreError> {
    if agent.scope.iter().any(|s| s == credential) {
        return Ok(());
    }
    let mut scope = agent.scope.clone();
    scope.push(credential.to_owned());
    let text = super::agents::encode_scope(&scope)?;
    tx.prepare_cached("UPDATE agents SET scope = ?1 WHERE id = ?2")?
        .execute(params![text, agent.id])?;
    Ok(())
}

/// What a grant allows: its mode, an optional expiry (Unix seconds), and whether it ends
/// at the owner's last logout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantTerms {
    pub mode: GrantMode,
    pub expires_at: Option<i64>,
    pub until_logout: bool,
}

impl Store {
    /// Grants `agent` (id or name of `owner`) the credential `credential` with `mode`,
    /// replacing an existing grant, and adds the name to the agent's scope.
    pub fn grant(
        &mut self,
        actor: &Actor,
        owner: u32,
        agent: &str,
        credential: &str,
        mode: GrantMode,
        expires_at: Option<i64>,
    ) -> Result<GrantRecord, StoreError> {
        let terms = GrantTerms {
            mode,
            expires_at,
            until_logout: false,
        };
        self.grant_with(actor, owner, agent, credential, terms)
    }

    /// [`Store::grant`], optionally session-bound: an `until_logout` grant is deleted when
    /// the owner's last session closes ([`Store::login_lock`]), like the login key.
    pub fn grant_with(
        &mut self,
        actor: &Actor,
        owner: u32,
        agent: &str,
        credential: &str,
        terms: GrantTerms,
    ) -> Result<GrantRecord, StoreError> {
        let GrantTerms {
            mode,
            expires_at,
            until_logout,
        } = terms;
        self.commit(Durability::Full, |tx, _| {
            let agent = super::agents::require(tx, owner, agent)?;
            if agent.state == AgentState::Revoked {
                return Err(revoked_error(&agent));
            }
            let cred_id: i64 = tx
                .prepare_cached("SELECT id FROM credentials WHERE owner_uid = ?1 AND name = ?2")?
                .query_row(params![owner, credential], |r| r.get(0))
                .optional()?
                .ok_or_else(|| StoreError::NotFound {
                    what: "credential",
                    name: credential.to_owned(),
                })?;
            tx.prepare_cached(
                "INSERT INTO grants (agent_id, credential_id, mode, expires_at, created_at,
                                     until_logout)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (agent_id, credential_id) DO UPDATE SET
                     mode = excluded.mode, expires_at = excluded.expires_at,
                     created_at = excluded.created_at, until_logout = excluded.until_logout",
            )?
            .execute(params![
                agent.id,
                cred_id,
                mode.as_str(),
                expires_at,
                now_s(),
                until_logout
            ])?;
            add_to_scope(tx, &agent, credential)?;
            let grant = find_grant(tx, owner, &agent.id, credential)?.ok_or_else(|| {
                StoreError::NotFound {
                    what: "grant",
                    name: credential.to_owned(),
                }
            })?;
            let audit = Record {
                actor: *actor,
                owner_uid: Some(owner),
                action: "grant.add",
                subject: format!("{}/{credential}", agent.id),
                outcome: Outcome::Ok,
                detail: format!(
                    "mode={}{}{}",
                    mode.as_str(),
                    expires_at
                        .map(|t| format!(" expires={t}"))
                        .unwrap_or_default(),
                    if until_logout { " until_logout" } else { "" }
                ),
            };
            Ok((grant, audit))
        })
    }

    /// Removes `agent`'s grant of `credential`. `NotFound` if there is none.
    pub fn ungrant(
        &mut self,
        actor: &Actor,
        owner: u32,
        agent: &str,
        credential: &str,
    ) -> Result<(), StoreError> {
        self.commit(Durability::Full, |tx, _| {
            let agent = super::agents::require(tx, owner, agent)?;
            let gone = tx
                .prepare_cached(
                    "DELETE FROM grants WHERE agent_id = ?1 AND credential_id IN
                     (SELECT id FROM credentials WHERE owner_uid = ?2 AND name = ?3)",
                )?
                .execute(params![agent.id, owner, credential])?;
            if gone == 0 {
                return Err(StoreError::NotFound {
                    what: "grant",
                    name: format!("{}/{credential}", agent.name),
                });
            }
            let audit = Record {
                actor: *actor,
                owner_uid: Some(owner),
                action: "grant.remove",
                subject: format!("{}/{credential}", agent.id),
                outcome: Outcome::Ok,
                detail: String::new(),
            };
            Ok(((), audit))
        })
    }

    /// The grants of agent `agent` (id or name of `owner`), by credential name.
    pub fn grants_of(&self, owner: u32, agent: &str) -> Result<Vec<GrantRecord>, StoreError> {
        let agent = super::agents::require(&self.conn, owner, agent)?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT c.name, g.mode, g.expires_at, g.created_at, g.until_logout FROM grants g
             JOIN credentials c ON c.id = g.credential_id
             WHERE g.agent_id = ?1 ORDER BY c.name",
        )?;
        let rows = stmt.query_map([&agent.id], |r| {
            Ok(GrantRecord {
                agent_id: agent.id.clone(),
                credential: r.get(0)?,
                mode: GrantMode::parse(&r.get::<_, String>(1)?).unwrap_or(GrantMode::Confirm),
                expires_at: r.get(2)?,
                created_at: r.get(3)?,
                until_logout: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The usage lines of `owner`'s agents (or of the one agent `agent`, id or name).
    /// Writes queued reads first, so every read served so far is counted.
    pub fn usage(&mut self, owner: u32, agent: Option<&str>) -> Result<Vec<UsageRow>, StoreError> {
        self.flush_audit()?;
        let only = match agent {
            Some(a) => Some(super::agents::require(&self.conn, owner, a)?.id),
            None => None,
        };
        let mut stmt = self.conn.prepare_cached(
            "SELECT u.agent_id, a.name, u.credential, u.reads, u.denials, u.last_use
             FROM usage u JOIN agents a ON a.id = u.agent_id
             WHERE a.owner_uid = ?1 AND (?2 IS NULL OR a.id = ?2)
             ORDER BY a.name, u.credential",
        )?;
        let rows = stmt.query_map(params![owner, only], |r| {
            Ok(UsageRow {
                agent_id: r.get(0)?,
                agent_name: r.get(1)?,
                credential: r.get(2)?,
                reads: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                denials: u64::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
                last_use: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// An agent's read of `credential` through session `session` (already proven by the
    /// caller). See the module documentation for the checks and their order; each refusal
    /// is audited and counted before it returns. `confirmed`: the owner approved this read
    /// (a `confirm` grant's release).
    pub fn agent_read(
        &mut self,
        actor: &Actor,
        session: &str,
        credential: &str,
        confirmed: bool,
    ) -> Result<AgentRead, StoreError> {
        let AgentSession { session, agent } = self.session(session)?;
        let owner = agent.owner_uid;
        let via = Via {
            agent_id: &agent.id,
            agent_name: &agent.name,
            once: false,
        };
        let refusal = self.access_problem(&agent, &session, credential, confirmed)?;
        let grant = match refusal {
            Access::Refused(err, why) => {
                self.deny_read(actor, owner, credential, Some(&via), Outcome::Denied, why)?;
                return Err(err);
            }
            Access::NeedsConfirmation => {
                return Ok(AgentRead::NeedsConfirmation {
                    agent_id: agent.id.clone(),
                    agent_name: agent.name.clone(),
                    owner,
                });
            }
            Access::Granted(grant) => grant,
        };
        let via = Via {
            once: grant.mode == GrantMode::Once,
            ..via
        };
        let (meta, secret) = self.read_as(actor, owner, credential, Some(&via))?;
        Ok(AgentRead::Served(meta, secret))
    }

    fn access_problem(
        &self,
        agent: &AgentRecord,
        session: &SessionRecord,
        credential: &str,
        confirmed: bool,
    ) -> Result<Access, StoreError> {
        let now = now_s();
        if agent.state == AgentState::Revoked {
            return Ok(Access::Refused(revoked_error(agent), "agent revoked"));
        }
        if let Some(why) = &session.ended_why {
            let err = StoreError::SessionEnded {
                agent: agent.name.clone(),
                why: why.clone(),
            };
            return Ok(Access::Refused(err, "session ended"));
        }
        if session.expires_at <= now {
            let err = StoreError::SessionExpired {
                agent: agent.name.clone(),
                at: session.expires_at,
            };
            return Ok(Access::Refused(err, "session expired"));
        }
        let not_granted = |why: &'static str| StoreError::NotGranted {
            agent: agent.name.clone(),
            credential: credential.to_owned(),
            why,
        };
        if !agent.scope.iter().any(|s| s == credential) {
            return Ok(Access::Refused(
                not_granted("it is not in the agent's scope"),
                "not in scope",
            ));
        }
        let Some(grant) = find_grant(&self.conn, agent.owner_uid, &agent.id, credential)? else {
            return Ok(Access::Refused(
                not_granted("the owner has not granted it"),
                "no grant",
            ));
        };
        if let Some(at) = grant.expires_at.filter(|t| *t <= now) {
            let err = StoreError::GrantExpired {
                agent: agent.name.clone(),
                credential: credential.to_owned(),
                at,
            };
            return Ok(Access::Refused(err, "grant expired"));
        }
        if grant.mode == GrantMode::Confirm && !confirmed {
            return Ok(Access::NeedsConfirmation);
        }
        Ok(Access::Granted(grant))
    }

    /// Records the owner's answer to a `confirm` grant's release request that came to
    /// nothing (denied or expired), and counts it as a denial.
    pub fn agent_read_refused(
        &mut self,
        actor: &Actor,
        session: &str,
        credential: &str,
        why: &'static str,
    ) -> Result<(), StoreError> {
        let AgentSession { agent, .. } = self.session(session)?;
        let via = Via {
            agent_id: &agent.id,
            agent_name: &agent.name,
            once: false,
        };
        self.deny_read(
            actor,
            agent.owner_uid,
            credential,
            Some(&via),
            Outcome::Denied,
            why,
        )
    }
}

enum Access {
    Refused(StoreError, &'static str),
    NeedsConfirmation,
    Granted(GrantRecord),
}

#[cfg(test)]
#[path = "grants_tests.rs"]
mod tests;
