//! Opening the SQLite file: prove it is ours (or empty) before changing anything in it, then
//! set the connection up (WAL, synchronous=FULL, foreign keys, busy timeout).

use std::path::Path;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode};

use super::error::StoreError;
use super::files::make_private;

/// `PRAGMA application_id` of an AgentKeys database: 'AKEY'.
pub const APPLICATION_ID: i32 = 0x414B_4559;
/// How long opening waits for another process's lock before failing: long enough for a
/// daemon that is being restarted to let go, short enough to fail a second daemon soon.
const BUSY_TIMEOUT: Duration = Duration::from_secs(3);

/// What the file says about itself before we touch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity {
    pub application_id: i32,
    pub user_version: i64,
    pub objects: i64,
}

/// Whether a file with this identity may be used (fresh, or already ours).
pub(crate) fn is_ours_or_fresh(id: Identity) -> bool {
    match id.application_id {
        APPLICATION_ID => true,
        0 => id.objects == 0 && id.user_version == 0,
        _ => false,
    }
}

/// Open (creating if missing) the database at `path`, check it is ours, and configure it.
pub(crate) fn open(path: &Path) -> Result<Connection, StoreError> {
    let open_err = |source| StoreError::OpenDb {
        path: path.to_owned(),
        source,
    };
    let conn = Connection::open(path).map_err(open_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    // The daemon is the database's only user: hold its lock for as long as the connection
    // lives. No lock/unlock syscalls per transaction, the WAL index lives in heap memory
    // (no -shm file), and a second daemon on the same state directory cannot interleave
    // its writes with ours and fork the audit chain. Set before the first read, which is
    // when SQLite decides where the WAL index lives. (Writes nothing.)
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
        .map_err(open_err)?;
    // Identity first: a foreign file must not be switched to WAL or otherwise written.
    let identity = read_identity(&conn).map_err(|e| match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::NotADatabase => {
            StoreError::NotOurDatabase {
                path: path.to_owned(),
            }
        }
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) =>
        {
            StoreError::InUse {
                path: path.to_owned(),
            }
        }
        other => open_err(other),
    })?;
    if !is_ours_or_fresh(identity) {
        return Err(StoreError::NotOurDatabase {
            path: path.to_owned(),
        });
    }
    // Before WAL is switched on: SQLite gives the -wal and -shm files the database's mode.
    make_private(path).map_err(|source| StoreError::StateDir {
        path: path.to_owned(),
        step: "chmod 0600 of the database",
        source,
    })?;
    configure(&conn, path)?;
    Ok(conn)
}

fn read_identity(conn: &Connection) -> rusqlite::Result<Identity> {
    Ok(Identity {
        application_id: conn.pragma_query_value(None, "application_id", |r| r.get(0))?,
        user_version: conn.pragma_query_value(None, "user_version", |r| r.get(0))?,
        objects: conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?,
    })
}

fn configure(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let pragma_err = |pragma: &'static str| {
        move |source| StoreError::ConfigureDb {
            path: path.to_owned(),
            pragma,
            source,
        }
    };
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(pragma_err("journal_mode"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::WalUnavailable {
            path: path.to_owned(),
            found: mode,
        });
    }
    set_synchronous_full(conn).map_err(pragma_err("synchronous"))?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(pragma_err("foreign_keys"))?;
    // A tampered file cannot make its schema (views, triggers) call risky SQL functions.
    conn.pragma_update(None, "trusted_schema", false)
        .map_err(pragma_err("trusted_schema"))?;
    // Cached statements stay compiled. Without the query planner stability guarantee,
    // SQLite (the bundled 3.54) marks the `column = ?` terms of a join "re-plan when
    // rebound", and rusqlite clears a statement's bindings when it returns to the cache, so
    // every cached query was parsed and planned again on every use (a third of an MCP
    // read's CPU time). Our plans do not depend on the values bound (no STAT4, no `LIKE ?`).
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map_err(pragma_err("enable_qpsg"))?;
    Ok(())
}

/// Every state change commits with an fsync of the WAL.
pub(crate) fn set_synchronous_full(conn: &Connection) -> rusqlite::Result<()> {
    conn.prepare_cached("PRAGMA synchronous = FULL")?
        .execute([])?;
    Ok(())
}

/// Read audit rows may be lost on power loss, never torn (WAL), and cost no fsync.
pub(crate) fn set_synchronous_normal(conn: &Connection) -> rusqlite::Result<()> {
    conn.prepare_cached("PRAGMA synchronous = NORMAL")?
        .execute([])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use rusqlite::{OptionalExtension, params};

    use super::*;

    fn id(application_id: i32, user_version: i64, objects: i64) -> Identity {
        Identity {
            application_id,
            user_version,
            objects,
        }
    }

    #[test]
    fn fresh_and_own_databases_are_accepted() {
        assert!(is_ours_or_fresh(id(0, 0, 0)));
        assert!(is_ours_or_fresh(id(APPLICATION_ID, 1, 7)));
    }

    #[test]
    fn foreign_databases_are_refused() {
        assert!(
            !is_ours_or_fresh(id(0, 0, 1)),
            "tables but no application_id"
        );
        assert!(
            !is_ours_or_fresh(id(0, 3, 0)),
            "a user_version but no application_id"
        );
        assert!(
            !is_ours_or_fresh(id(0x1234, 0, 0)),
            "another application's id"
        );
    }

    #[test]
    fn opened_database_is_wal_full_with_foreign_keys() {
        let tmp = tempfile::tempdir().unwrap();
        let conn = open(&tmp.path().join("x.db")).unwrap();
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        let sync: i64 = conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        let fk: i64 = conn
            .pragma_query_value(None, "foreign_keys", |r| r.get(0))
            .unwrap();
        assert_eq!((mode.as_str(), sync, fk), ("wal", 2, 1));
    }

    #[test]
    fn cached_statements_are_not_compiled_again_when_rebound() {
        let tmp = tempfile::tempdir().unwrap();
        let conn = open(&tmp.path().join("x.db")).unwrap();
        conn.execute_batch(
            "CREATE TABLE c (id INTEGER PRIMARY KEY, owner INTEGER NOT NULL, name TEXT NOT NULL,
                             UNIQUE (owner, name));
             CREATE TABLE g (agent TEXT NOT NULL, cid INTEGER NOT NULL, PRIMARY KEY (agent, cid));
             INSERT INTO c (owner, name) VALUES (1000, 'a'), (1001, 'a'), (1000, 'b');
             INSERT INTO g (agent, cid) VALUES ('x', 1), ('x', 3), ('y', 2);",
        )
        .unwrap();
        // A join with `column = ?` terms (the shape of an agent's read): SQLite would re-plan
        // it on every new binding, which rusqlite's statement cache makes every use.
        let sql = "SELECT g.cid FROM g JOIN c ON c.id = g.cid
                   WHERE g.agent = ?1 AND c.owner = ?2 AND c.name = ?3";
        let uses = [
            ("x", 1000, "a"),
            ("y", 1001, "a"),
            ("x", 1000, "b"),
            ("x", 0, "a"),
        ];
        for (agent, owner, name) in uses {
            let mut stmt = conn.prepare_cached(sql).unwrap();
            let _: Option<i64> = stmt
                .query_row(params![agent, owner, name], |r| r.get(0))
                .optional()
                .unwrap();
            assert_eq!(
                stmt.get_status(rusqlite::StatementStatus::RePrepare),
                0,
                "re-prepared for ({agent}, {owner}, {name})"
            );
        }
    }
}
