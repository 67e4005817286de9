//! Agents: identities owned by an owner, with a scope, optional alias/e-mail links, and a
//! lifecycle active → revoked. A torn-down agent keeps its (revoked) row so the audit trail
//! keeps naming it; its grants and links are deleted.
//!
//! Every lookup is scoped by owner: another owner's agent id answers `NotFound`, exactly like
//! an id that does not exist, so ids are no oracle.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::audit::{Actor, Outcome, Record};
use super::error::StoreError;
use super::ids::{check_name, is_agent_id, new_agent_id, normalize_email};
use super::{Durability, Store, now_s};

/// Options of [`Store::create_agent`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentOptions {
    /// Credential names the agent may ask for.
    pub scope: Vec<String>,
    /// The agent may read but never change anything.
    pub read_only: bool,
}

/// Whether an agent may still act.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentState {
    Active,
    Revoked,
}

impl AgentState {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Active => "active",
            AgentState::Revoked => "revoked",
        }
    }
}

/// The kinds of name an agent can be linked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    Alias,
    Email,
}

impl LinkKind {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkKind::Alias => "alias",
            LinkKind::Email => "email",
        }
    }
}

/// An agent as stored, with its links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    pub id: String,
    pub owner_uid: u32,
    pub name: String,
    pub state: AgentState,
    pub scope: Vec<String>,
    pub read_only: bool,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    pub revoked_by: Option<u32>,
    /// The Ed25519 key of the agent's current sessions (none for an agent never paired).
    pub pubkey: Option<[u8; 32]>,
    pub aliases: Vec<String>,
    pub emails: Vec<String>,
}

/// The agent columns, in `agent_from_row` order (a macro so queries are `concat!`ed literals).
macro_rules! agent_columns {
    () => {
        "id, owner_uid, name, state, scope, read_only, created_at, revoked_at, revoked_by, pubkey"
    };
}

fn agent_from_row(r: &Row<'_>) -> rusqlite::Result<AgentRecord> {
    agent_from_row_at(r, 0)
}

/// An agent read from the agent columns (`agent_columns!` order) starting at column `at`,
/// so a join can put other columns first.
pub(crate) fn agent_from_row_at(r: &Row<'_>, at: usize) -> rusqlite::Result<AgentRecord> {
    let state: String = r.get(at + 3)?;
    let scope: String = r.get(at + 4)?;
    Ok(AgentRecord {
        id: r.get(at)?,
        owner_uid: r.get(at + 1)?,
        name: r.get(at + 2)?,
        // The schema's CHECK admits only the two spellings.
        state: if state == "active" {
            AgentState::Active
        } else {
            AgentState::Revoked
        },
        scope: decode_scope(&scope),
        read_only: r.get(at + 5)?,
        created_at: r.get(at + 6)?,
        revoked_at: r.get(at + 7)?,
        revoked_by: r.get(at + 8)?,
        // The schema's CHECK admits only 32-byte keys; any other length is an error here.
        pubkey: r.get(at + 9)?,
        aliases: Vec::new(),
        emails: Vec::new(),
    })
}

/// Scope entries are names (no commas), stored comma-separated, de-duplicated, in order.
pub(crate) fn encode_scope(scope: &[String]) -> Result<String, StoreError> {
    let mut seen: Vec<&str> = Vec::with_capacity(scope.len());
    for entry in scope {
        check_name("scope entry", entry)?;
        if !seen.contains(&entry.as_str()) {
            seen.push(entry);
        }
    }
    Ok(seen.join(","))
}

fn decode_scope(stored: &str) -> Vec<String> {
    stored
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn not_found(ident: &str) -> StoreError {
    StoreError::NotFound {
        what: "agent",
        name: ident.to_owned(),
    }
}

fn push_link(record: &mut AgentRecord, kind: &str, value: String) {
    match kind {
        "alias" => record.aliases.push(value),
        _ => record.emails.push(value),
    }
}

fn load_links(conn: &Connection, record: &mut AgentRecord) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT kind, value FROM agent_links WHERE agent_id = ?1 ORDER BY kind, value",
    )?;
    let mut rows = stmt.query([&record.id])?;
    while let Some(row) = rows.next()? {
        let kind: String = row.get(0)?;
        push_link(record, &kind, row.get(1)?);
    }
    Ok(())
}

/// The agent `ident` (its id or its name) of `owner`, with links.
fn find(conn: &Connection, owner: u32, ident: &str) -> Result<Option<AgentRecord>, StoreError> {
    let sql = if is_agent_id(ident) {
        concat!(
            "SELECT ",
            agent_columns!(),
            " FROM agents WHERE owner_uid = ?1 AND id = ?2"
        )
    } else {
        concat!(
            "SELECT ",
            agent_columns!(),
            " FROM agents WHERE owner_uid = ?1 AND name = ?2"
        )
    };
    let found = conn
        .prepare_cached(sql)?
        .query_row(params![owner, ident], agent_from_row)
        .optional()?;
    match found {
        Some(mut record) => {
            load_links(conn, &mut record)?;
            Ok(Some(record))
        }
        None => Ok(None),
    }
}

pub(crate) fn require(
    conn: &Connection,
    owner: u32,
    ident: &str,
) -> Result<AgentRecord, StoreError> {
    find(conn, owner, ident)?.ok_or_else(|| not_found(ident))
}

/// The error for acting as or on a revoked agent: names when and by whom.
pub(crate) fn revoked_error(agent: &AgentRecord) -> StoreError {
    StoreError::Revoked {
        agent: agent.name.clone(),
        at: agent.revoked_at,
        by: agent.revoked_by,
    }
}

/// A name must resolve to one agent: not another agent's name, not its alias.
pub(crate) fn check_name_free(conn: &Connection, owner: u32, name: &str) -> Result<(), StoreError> {
    if name_holder(conn, owner, name)?.is_some()
        || link_holder(conn, owner, LinkKind::Alias, name)?.is_some()
    {
        return Err(StoreError::AlreadyExists {
            what: "agent",
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// The agent holding link (`owner`, `kind`, `value`), if any.
fn link_holder(
    conn: &Connection,
    owner: u32,
    kind: LinkKind,
    value: &str,
) -> Result<Option<String>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT agent_id FROM agent_links WHERE owner_uid = ?1 AND kind = ?2 AND value = ?3",
        )?
        .query_row(params![owner, kind.as_str(), value], |r| r.get(0))
        .optional()?)
}

/// The agent of `owner` named `name`, if any.
fn name_holder(conn: &Connection, owner: u32, name: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT id FROM agents WHERE owner_uid = ?1 AND name = ?2")?
        .query_row(params![owner, name], |r| r.get(0))
        .optional()?)
}

/// Revoke `agent` in place if it is active; returns whether this call revoked it.
fn revoke_in(conn: &Connection, actor: &Actor, agent: &AgentRecord) -> Result<bool, StoreError> {
    if agent.state == AgentState::Revoked {
        return Ok(false);
    }
    let changed = conn
        .prepare_cached(
            "UPDATE agents SET state = 'revoked', revoked_at = ?1, revoked_by = ?2
             WHERE id = ?3 AND state = 'active'",
        )?
        .execute(params![now_s(), actor.uid, agent.id])?;
    super::sessions::end_sessions(conn, &agent.id, "agent revoked")?;
    Ok(changed == 1)
}

impl Store {
    /// Create agent `name` for `owner`.
    pub fn create_agent(
        &mut self,
        actor: &Actor,
        owner: u32,
        name: &str,
        opts: &AgentOptions,
    ) -> Result<AgentRecord, StoreError> {
        check_name("agent name", name)?;
        let scope = encode_scope(&opts.scope)?;
        let id = new_agent_id()?;
        let now = now_s();
        self.commit(Durability::Full, |tx, _| {
            check_name_free(tx, owner, name)?;
            tx.prepare_cached("INSERT OR IGNORE INTO owners (uid, created_at) VALUES (?1, ?2)")?
                .execute(params![owner, now])?;
            tx.prepare_cached(
                "INSERT INTO agents (id, owner_uid, name, state, scope, read_only, created_at)
                 VALUES (?1, ?2, ?3, 'active', ?4, ?5, ?6)",
            )?
            .execute(params![id, owner, name, scope, opts.read_only, now])?;
            let record = require(tx, owner, &id)?;
            let audit = Record {
                actor: *actor,
                owner_uid: Some(owner),
                action: "agent.create",
                subject: id.clone(),
                outcome: Outcome::Ok,
                detail: format!("name={name} scope={scope} read_only={}", opts.read_only),
            };
            Ok((record, audit))
        })
    }

    /// The agents of `owner`, oldest first.
    pub fn list_agents(&self, owner: u32) -> Result<Vec<AgentRecord>, StoreError> {
        let mut links: HashMap<String, Vec<(String, String)>> = HashMap::new();
        {
            let mut stmt = self.conn.prepare_cached(
                "SELECT agent_id, kind, value FROM agent_links WHERE owner_uid = ?1
                 ORDER BY kind, value",
            )?;
            let mut rows = stmt.query([owner])?;
            while let Some(row) = rows.next()? {
                links
                    .entry(row.get(0)?)
                    .or_default()
                    .push((row.get(1)?, row.get(2)?));
            }
        }
        let mut stmt = self.conn.prepare_cached(concat!(
            "SELECT ",
            agent_columns!(),
            " FROM agents WHERE owner_uid = ?1 ORDER BY created_at, name"
        ))?;
        let mut out = stmt
            .query_map([owner], agent_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        for record in &mut out {
            for (kind, value) in links.remove(&record.id).unwrap_or_default() {
                push_link(record, &kind, value);
            }
        }
        Ok(out)
    }

    /// The agent `ident` (id or name) of `owner`; another owner's agent is `NotFound`.
    pub fn get_agent(&self, owner: u32, ident: &str) -> Result<AgentRecord, StoreError> {
        require(&self.conn, owner, ident)
    }

    /// Link an alias or e-mail to an agent. Linking the same pair again is a no-op; a value
    /// held by another agent of `owner` is `AlreadyExists`; a revoked agent is `Revoked`.
    pub fn link_agent(
        &mut self,
        actor: &Actor,
        owner: u32,
        ident: &str,
        kind: LinkKind,
        value: &str,
    ) -> Result<AgentRecord, StoreError> {
        let value = match kind {
            LinkKind::Alias => {
                check_name("alias", value)?;
                value.to_owned()
            }
            LinkKind::Email => normalize_email(value)?,
        };
        self.commit(Durability::Full, |tx, _| {
            let agent = require(tx, owner, ident)?;
            if agent.state == AgentState::Revoked {
                return Err(revoked_error(&agent));
            }
            let taken = |what| StoreError::AlreadyExists {
                what,
                name: value.clone(),
            };
            let unchanged = match link_holder(tx, owner, kind, &value)? {
                Some(holder) if holder == agent.id => true,
                Some(_) => return Err(taken(kind.as_str())),
                None => false,
            };
            if kind == LinkKind::Alias
                && name_holder(tx, owner, &value)?.is_some_and(|holder| holder != agent.id)
            {
                return Err(taken("agent"));
            }
            if !unchanged {
                tx.prepare_cached(
                    "INSERT INTO agent_links (agent_id, owner_uid, kind, value)
                     VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![agent.id, owner, kind.as_str(), value])?;
            }
            let record = require(tx, owner, &agent.id)?;
            let audit = Record {
                actor: *actor,
                owner_uid: Some(owner),
                action: "agent.link",
                subject: agent.id,
                outcome: Outcome::Ok,
                detail: format!(
                    "{}={value}{}",
                    kind.as_str(),
                    if unchanged { " (already linked)" } else { "" }
                ),
            };
            Ok((record, audit))
        })
    }

    /// The id of the agent of `owner` known as `identity`: its id, name, alias or e-mail.
    pub fn resolve_agent(&self, owner: u32, identity: &str) -> Result<String, StoreError> {
        if let Some(agent) = find(&self.conn, owner, identity)? {
            return Ok(agent.id);
        }
        let link = if identity.contains('@') {
            match normalize_email(identity) {
                Ok(email) => link_holder(&self.conn, owner, LinkKind::Email, &email)?,
                Err(_) => None,
            }
        } else {
            link_holder(&self.conn, owner, LinkKind::Alias, identity)?
        };
        link.ok_or_else(|| not_found(identity))
    }

    /// Revoke an agent. Revoking a revoked agent changes nothing but is audited.
    pub fn revoke_agent(
        &mut self,
        actor: &Actor,
        owner: u32,
        ident: &str,
    ) -> Result<AgentRecord, StoreError> {
        self.commit(Durability::Full, |tx, _| {
            let agent = require(tx, owner, ident)?;
            let revoked_now = revoke_in(tx, actor, &agent)?;
            let record = require(tx, owner, &agent.id)?;
            let audit = Record {
                actor: *actor,
                owner_uid: Some(owner),
                action: "agent.revoke",
                subject: agent.id,
                outcome: Outcome::Ok,
                detail: if revoked_now {
                    "revoked".to_owned()
                } else {
                    "already revoked".to_owned()
                },
            };
            Ok((record, audit))
        })
    }

    /// Revoke an agent and delete its grants and links; the revoked row stays for the audit
    /// trail (and keeps its name taken).
    pub fn teardown_agent(
        &mut self,
        actor: &Actor,
        owner: u32,
        ident: &str,
    ) -> Result<AgentRecord, StoreError> {
        self.commit(Durability::Full, |tx, _| {
            let agent = require(tx, owner, ident)?;
            let revoked_now = revoke_in(tx, actor, &agent)?;
            let grants = tx
                .prepare_cached("DELETE FROM grants WHERE agent_id = ?1")?
                .execute([&agent.id])?;
            let links = tx
                .prepare_cached("DELETE FROM agent_links WHERE agent_id = ?1")?
                .execute([&agent.id])?;
            let record = require(tx, owner, &agent.id)?;
            let audit = Record {
                actor: *actor,
                owner_uid: Some(owner),
                action: "agent.teardown",
                subject: agent.id,
                outcome: Outcome::Ok,
                detail: format!(
                    "{} grants_removed={grants} links_removed={links}",
                    if revoked_now {
                        "revoked"
                    } else {
                        "already revoked"
                    }
                ),
            };
            Ok((record, audit))
        })
    }
}

#[cfg(test)]
#[path = "agents_tests.rs"]
mod tests;
