//! Sessions: what an approved `Pair`, `Recover` or `KeyRotate` hands the child. A session
//! binds an agent to one Ed25519 public key and the uid that opened the request, for a hard
//! TTL; it ends early when the agent is revoked, recovered or re-keyed. A session id is not
//! a secret: using it takes a signature by its key (the daemon checks that).
//!
//! Scope changes live here too: an approved scope is also what gets `auto` grants.

use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};

use super::agents::{AgentRecord, AgentState, require};
use super::audit::{Actor, Outcome, Record};
use super::error::StoreError;
use super::ids::{check_name, new_agent_id, new_session_id};
use super::{Durability, Store, now_s};

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: String,
    pub agent_id: String,
    pub pubkey: [u8; 32],
    /// The uid that opened the request; only it may use the session.
    pub uid: u32,
    pub created_at: i64,
    pub expires_at: i64,
    pub ended_at: Option<i64>,
    pub ended_why: Option<String>,
}

/// A session and its agent, as one lookup returns them. The agent's aliases and e-mail
/// links are not loaded (nobody acting through a session needs them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSession {
    pub session: SessionRecord,
    pub agent: AgentRecord,
}

/// The session columns, in `session_from_row` order.
const SESSION_COLUMNS: &str =
    "s.id, s.agent_id, s.pubkey, s.uid, s.created_at, s.expires_at, s.ended_at, s.ended_why";

fn session_from_row(r: &Row<'_>) -> rusqlite::Result<SessionRecord> {
    Ok(SessionRecord {
        id: r.get(0)?,
        agent_id: r.get(1)?,
        // The schema's CHECK admits only 32-byte keys; any other length is an error here.
        pubkey: r.get(2)?,
        uid: r.get(3)?,
        created_at: r.get(4)?,
        expires_at: r.get(5)?,
        ended_at: r.get(6)?,
        ended_why: r.get(7)?,
    })
}

/// The session `id` and its agent, in one query (every agent read starts here). The
/// agent's columns follow the session's, in `agent_columns!` order.
fn find_session(conn: &Connection, id: &str) -> Result<Option<AgentSession>, StoreError> {
    let sql = format!(
        "SELECT {SESSION_COLUMNS}, a.id, a.owner_uid, a.name, a.state, a.scope, a.read_only,
                a.created_at, a.revoked_at, a.revoked_by, a.pubkey
         FROM sessions s JOIN agents a ON a.id = s.agent_id WHERE s.id = ?1"
    );
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([id], |r| {
            Ok(AgentSession {
                session: session_from_row(r)?,
                agent: super::agents::agent_from_row_at(r, 8)?,
            })
        })
        .optional()?)
}

/// Ends every open session of `agent_id`; returns how many.
pub(crate) fn end_sessions(
    conn: &Connection,
    agent_id: &str,
    why: &str,
) -> Result<usize, StoreError> {
    Ok(conn
        .prepare_cached(
            "UPDATE sessions SET ended_at = ?1, ended_why = ?2
             WHERE agent_id = ?3 AND ended_at IS NULL",
        )?
        .execute(params![now_s(), why, agent_id])?)
}

pub(crate) fn new_session(
    tx: &Transaction<'_>,
    agent_id: &str,
    pubkey: &[u8; 32],
    uid: u32,
    ttl_s: i64,
) -> Result<SessionRecord, StoreError> {
    let id = new_session_id()?;
    let now = now_s();
    let expires_at = now.saturating_add(ttl_s);
    tx.prepare_cached(
        "INSERT INTO sessions (id, agent_id, pubkey, uid, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        id,
        agent_id,
        pubkey.as_slice(),
        uid,
        now,
        expires_at
    ])?;
    Ok(SessionRecord {
        id,
        agent_id: agent_id.to_owned(),
        pubkey: *pubkey,
        uid,
        created_at: now,
        expires_at,
        ended_at: None,
        ended_why: None,
    })
}

/// Grants `auto` for every name in `scope` that is a credential of `owner` and has no grant
/// yet; deletes grants of credentials outside `scope`. Returns (added, removed).
fn align_grants(
    tx: &Transaction<'_>,
    owner: u32,
    agent_id: &str,
    scope: &[String],
) -> Result<(usize, usize), StoreError> {
    let now = now_s();
    let mut added = 0;
    for name in scope {
        added += tx
            .prepare_cached(
                "INSERT OR IGNORE INTO grants (agent_id, credential_id, mode, created_at)
                 SELECT ?1, id, 'auto', ?2 FROM credentials WHERE owner_uid = ?3 AND name = ?4",
            )?
            .execute(params![agent_id, now, owner, name])?;
    }
    let mut removed = 0;
    let granted: Vec<(i64, String)> = tx
        .prepare_cached(
            "SELECT g.credential_id, c.name FROM grants g JOIN credentials c
             ON c.id = g.credential_id WHERE g.agent_id = ?1",
        )?
        .query_map([agent_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (id, name) in granted {
        if !scope.contains(&name) {
            removed += tx
                .prepare_cached("DELETE FROM grants WHERE agent_id = ?1 AND credential_id = ?2")?
                .execute(params![agent_id, id])?;
        }
    }
    Ok((added, removed))
}

fn set_pubkey(tx: &Transaction<'_>, agent_id: &str, pubkey: &[u8; 32]) -> Result<(), StoreError> {
    tx.prepare_cached("UPDATE agents SET pubkey = ?1 WHERE id = ?2")?
        .execute(params![pubkey.as_slice(), agent_id])?;
    Ok(())
}

/// Where a new session comes from, for the audit row.
#[derive(Debug, Clone, Copy)]
pub struct Issue<'a> {
    /// The public key the session is bound to.
    pub pubkey: &'a [u8; 32],
    /// The uid that opened the request.
    pub uid: u32,
    /// Hard TTL of the session, seconds.
    pub ttl_s: i64,
    /// The approved auth request's id (hex), recorded in the audit row.
    pub request: &'a str,
}

impl Store {
    /// An approved `Pair`: a new agent `name` of `owner` with `scope` (and `auto` grants of
    /// the scope's existing credentials), bound to the child's key, with a first session.
    pub fn pair_agent(
        &mut self,
        actor: &Actor,
        owner: u32,
        name: &str,
        scope: &[String],
        issue: &Issue<'_>,
    ) -> Result<AgentSession, StoreError> {
        check_name("agent name", name)?;
        let scope_text = super::agents::encode_scope(scope)?;
        let id = new_agent_id()?;
        let now = now_s();
        self.commit(Durability::Full, |tx, _| {
            super::agents::check_name_free(tx, owner, name)?;
            tx.prepare_cached("INSERT OR IGNORE INTO owners (uid, created_at) VALUES (?1, ?2)")?
                .execute(params![owner, now])?;
            tx.prepare_cached(
                "INSERT INTO agents (id, owner_uid, name, state, scope, read_only, created_at, pubkey)
                 VALUES (?1, ?2, ?3, 'active', ?4, 0, ?5, ?6)",
            )?
            .execute(params![id, owner, name, scope_text, now, issue.pubkey.as_slice()])?;
            let (granted, _) = align_grants(tx, owner, &id, scope)?;
            let session = new_session(tx, &id, issue.pubkey, issue.uid, issue.ttl_s)?;
            let agent = require(tx, owner, &id)?;
            let audit = Record {
                actor: *actor,
                owner_uid: Some(owner),
                action: "agent.pair",
                subject: id.clone(),
                outcome: Outcome::Ok,
                detail: format!(
                    "name={name} scope={scope_text} auto_grants={granted} child_uid={} request={}",
                    issue.uid, issue.request
                ),
            };
            Ok((AgentSession { session, agent }, audit))
        })
    }

    /// An approved `Recover` (`reactivate`) or `KeyRotate`: binds the agent to a new key,
    /// ends its sessions (the old key's), and issues a session for the new key. Recovery
    /// also makes a revoked agent active again; its grants and credentials stay.
    pub fn rebind_agent(
        &mut self,
        actor: &Actor,
        owner: u32,
        agent_id: &str,
        reactivate: bool,
        issue: &Issue<'_>,
    ) -> Result<AgentSession, StoreError> {
        let action = if reactivate {
            "agent.recover"
        } else {
            "agent.rotate_key"
        };
        self.commit(Durability::Full, |tx, _| {
            let agent = require(tx, owner, agent_id)?;
            if agent.state == AgentState::Revoked && !reactivate {
                return Err(super::agents::revoked_error(&agent));
            }
            let ended = end_sessions(
                tx,
                &agent.id,
                if reactivate {
                    "recovered with a new key"
                } else {
                    "key rotated"
                },
            )?;
            set_pubkey(tx, &agent.id, issue.pubkey)?;
            if reactivate {
                tx.prepare_cached(
                    "UPDATE agents SET state = 'active', revoked_at = NULL, revoked_by = NULL
                     WHERE id = ?1",
                )?
                .execute([&agent.id])?;
            }
            let session = new_session(tx, &agent.id, issue.pubkey, issue.uid, issue.ttl_s)?;
            let record = require(tx, owner, &agent.id)?;
            let audit = Record {
                actor: *actor,
                owner_uid: Some(owner),
                action,
                subject: agent.id.clone(),
                outcome: Outcome::Ok,
                detail: format!(
                    "sessions_ended={ended} was={} child_uid={} request={}",
                    agent.state.as_str(),
                    issue.uid,
                    issue.request
                ),
            };
            Ok((
                AgentSession {
                    session,
                    agent: record,
                },
                audit,
            ))
        })
    }

    /// An approved `ScopeChange`: the agent's scope becomes `scope`; credentials that left
    /// it lose their grants, existing credentials that joined it get `auto` grants.
    pub fn change_scope(
        &mut self,
        actor: &Actor,
        owner: u32,
        agent_id: &str,
        scope: &[String],
        request: &str,
    ) -> Result<AgentRecord, StoreError> {
        let scope_text = super::agents::encode_scope(scope)?;
        self.commit(Durability::Full, |tx, _| {
            let agent = require(tx, owner, agent_id)?;
            if agent.state == AgentState::Revoked {
                return Err(super::agents::revoked_error(&agent));
            }
            tx.prepare_cached("UPDATE agents SET scope = ?1 WHERE id = ?2")?
                .execute(params![scope_text, agent.id])?;
            let (added, removed) = align_grants(tx, owner, &agent.id, scope)?;
            let record = require(tx, owner, &agent.id)?;
            let audit = Record {
                actor: *actor,
                owner_uid: Some(owner),
                action: "agent.scope",
                subject: agent.id.clone(),
                outcome: Outcome::Ok,
                detail: format!(
                    "scope={scope_text} grants_added={added} grants_removed={removed} request={request}"
                ),
            };
            Ok((record, audit))
        })
    }

    /// The session `id` and its agent. `NotFound` if there is no such session.
    pub fn session(&self, id: &str) -> Result<AgentSession, StoreError> {
        let not_found = || StoreError::NotFound {
            what: "session",
            name: id.to_owned(),
        };
        find_session(&self.conn, id)?.ok_or_else(not_found)
    }
}

#[cfg(test)]
#[path = "sessions_tests.rs"]
mod tests;
