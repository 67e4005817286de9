//! Versioned schema migrations: `PRAGMA user_version` counts the scripts applied; each script
//! runs in its own IMMEDIATE transaction together with the version bump, so a crash leaves the
//! database at the previous version, never half-migrated. Scripts are append-only: a released
//! script is never edited, a change is a new script.

use rusqlite::{Connection, TransactionBehavior};

use super::db::APPLICATION_ID;
use super::error::StoreError;

/// Schema v1. STRICT tables: a value of the wrong type is an error, not a silent conversion.
const V1: &str = r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL
) STRICT;

CREATE TABLE owners (
    uid        INTEGER PRIMARY KEY NOT NULL CHECK (uid BETWEEN 0 AND 4294967295),
    created_at INTEGER NOT NULL
) STRICT;

-- AUTOINCREMENT: ids are never reused, so a deleted credential's sealed value (AAD bound to
-- its id) can never be made to open as a later credential.
CREATE TABLE credentials (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_uid  INTEGER NOT NULL REFERENCES owners(uid),
    name       TEXT NOT NULL,
    env_var    TEXT NOT NULL,
    last4      TEXT NOT NULL DEFAULT '',
    version    INTEGER NOT NULL CHECK (version >= 1),
    nonce      BLOB NOT NULL,
    sealed     BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    expires_at INTEGER,
    single_use INTEGER NOT NULL DEFAULT 0 CHECK (single_use IN (0, 1)),
    class      TEXT NOT NULL DEFAULT 'host' CHECK (class IN ('host', 'login')),
    UNIQUE (owner_uid, name)
) STRICT;

CREATE TABLE agents (
    id         TEXT PRIMARY KEY NOT NULL,
    owner_uid  INTEGER NOT NULL REFERENCES owners(uid),
    name       TEXT NOT NULL,
    state      TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'revoked')),
    scope      TEXT NOT NULL DEFAULT '',
    read_only  INTEGER NOT NULL DEFAULT 0 CHECK (read_only IN (0, 1)),
    created_at INTEGER NOT NULL,
    revoked_at INTEGER,
    revoked_by INTEGER,
    UNIQUE (owner_uid, name)
) STRICT;

CREATE TABLE agent_links (
    agent_id  TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    owner_uid INTEGER NOT NULL,
    kind      TEXT NOT NULL CHECK (kind IN ('alias', 'email')),
    value     TEXT NOT NULL,
    UNIQUE (owner_uid, kind, value)
) STRICT;
CREATE INDEX agent_links_by_agent ON agent_links(agent_id);

CREATE TABLE grants (
    agent_id      TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    credential_id INTEGER NOT NULL REFERENCES credentials(id) ON DELETE CASCADE,
    mode          TEXT NOT NULL CHECK (mode IN ('auto', 'confirm', 'once')),
    expires_at    INTEGER,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (agent_id, credential_id)
) STRICT;
CREATE INDEX grants_by_credential ON grants(credential_id);

-- seq is assigned by the writer (last seq + 1), never by SQLite: a second writer's insert
-- collides instead of forking the chain.
CREATE TABLE audit (
    seq       INTEGER PRIMARY KEY NOT NULL,
    ts_ms     INTEGER NOT NULL,
    actor_uid INTEGER NOT NULL,
    actor_pid INTEGER,
    owner_uid INTEGER,
    action    TEXT NOT NULL,
    subject   TEXT NOT NULL,
    outcome   TEXT NOT NULL,
    detail    TEXT NOT NULL,
    prev_hash BLOB NOT NULL,
    hash      BLOB NOT NULL
) STRICT;
CREATE INDEX audit_by_owner ON audit(owner_uid, seq);
CREATE INDEX audit_by_actor ON audit(actor_uid, seq);
"#;

/// Schema v2 (issue 3): the agent's current public key, sessions issued at pairing, and
/// per agent × credential usage counters (updated in the transaction that writes the
/// matching audit row).
const V2: &str = r#"
ALTER TABLE agents ADD COLUMN pubkey BLOB CHECK (pubkey IS NULL OR length(pubkey) = 32);

CREATE TABLE sessions (
    id         TEXT PRIMARY KEY NOT NULL,
    agent_id   TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    pubkey     BLOB NOT NULL CHECK (length(pubkey) = 32),
    uid        INTEGER NOT NULL CHECK (uid BETWEEN 0 AND 4294967295),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    ended_at   INTEGER,
    ended_why  TEXT
) STRICT;
CREATE INDEX sessions_by_agent ON sessions(agent_id);

CREATE TABLE usage (
    agent_id   TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    credential TEXT NOT NULL,
    reads      INTEGER NOT NULL DEFAULT 0,
    denials    INTEGER NOT NULL DEFAULT 0,
    last_use   INTEGER,
    PRIMARY KEY (agent_id, credential)
) STRICT;
"#;

/// Schema v3 (issue 5): per-owner login keys (the `login` protection class) and grants that
/// end at the owner's last logout. The CHECKs bound what a row may make the daemon spend
/// on Argon2id (memory 8 MiB–1 GiB, 1–16 passes and lanes).
const V3: &str = r#"
CREATE TABLE login_keys (
    owner_uid  INTEGER PRIMARY KEY NOT NULL REFERENCES owners(uid),
    kdf        TEXT NOT NULL CHECK (kdf = 'argon2id-v19'),
    m_cost_kib INTEGER NOT NULL CHECK (m_cost_kib BETWEEN 8192 AND 1048576),
    t_cost     INTEGER NOT NULL CHECK (t_cost BETWEEN 1 AND 16),
    p_cost     INTEGER NOT NULL CHECK (p_cost BETWEEN 1 AND 16),
    salt       BLOB NOT NULL CHECK (length(salt) = 16),
    nonce      BLOB NOT NULL CHECK (length(nonce) = 12),
    wrapped    BLOB NOT NULL CHECK (length(wrapped) = 48),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

ALTER TABLE grants ADD COLUMN until_logout INTEGER NOT NULL DEFAULT 0
    CHECK (until_logout IN (0, 1));
"#;

/// Schema v4 (issue 4): the host uid each agent's sandboxed runs have (`holder` is an agent
/// id, or `owner:<uid>` for an owner's runs without an agent). A uid is never shared.
const V4: &str = r#"
CREATE TABLE runner_uids (
    holder     TEXT PRIMARY KEY NOT NULL,
    uid        INTEGER NOT NULL UNIQUE CHECK (uid BETWEEN 1 AND 4294967294),
    created_at INTEGER NOT NULL
) STRICT;
"#;

/// Every migration, in order; index + 1 is the version it produces.
const MIGRATIONS: &[&str] = &[V1, V2, V3, V4];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Bring the database up to [`SCHEMA_VERSION`].
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let found = user_version(conn)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            known: SCHEMA_VERSION,
        });
    }
    for (index, script) in MIGRATIONS.iter().enumerate() {
        let version = i64::try_from(index).unwrap_or(i64::MAX).saturating_add(1);
        if version <= found {
            continue;
        }
        apply(conn, version, script).map_err(|source| StoreError::Migrate { version, source })?;
        tracing::info!(version, "database schema migrated");
    }
    Ok(())
}

fn user_version(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.pragma_query_value(None, "user_version", |r| r.get(0))?)
}

fn apply(conn: &mut Connection, version: i64, script: &str) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Another process may have migrated between our read and our lock.
    let now: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if now >= version {
        return Ok(());
    }
    tx.execute_batch(script)?;
    tx.pragma_update(None, "application_id", APPLICATION_ID)?;
    tx.pragma_update(None, "user_version", version)?;
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_from_empty_reach_the_current_version() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION);
        let app: i32 = conn
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .unwrap();
        assert_eq!(app, APPLICATION_ID);
        for table in [
            "meta",
            "owners",
            "credentials",
            "agents",
            "agent_links",
            "grants",
            "audit",
            "sessions",
            "usage",
            "login_keys",
            "runner_uids",
        ] {
            let n: i64 = conn
                .query_row(
                    "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1",
                    [table],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(n, 1, "{table}");
        }
        // Running again is a no-op.
        migrate(&mut conn).unwrap();
    }

    #[test]
    fn newer_schema_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let err = migrate(&mut conn).unwrap_err();
        assert!(matches!(err, StoreError::SchemaTooNew { found, known }
            if found == SCHEMA_VERSION + 1 && known == SCHEMA_VERSION));
    }
}
