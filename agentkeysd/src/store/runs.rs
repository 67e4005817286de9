//! Sandboxed runs as the store sees them: the uid each agent runs as on the host, the
//! session a run reads through, and the `run.start` / `run.end` audit rows.
//!
//! A runner uid belongs to one *holder* for good: an agent (its id), or `owner:<uid>` for
//! an owner's runs that name no agent. It is taken from the configured range
//! (`runner.uid_range`), skipping any uid the system's user database knows, so no login
//! user ever shares it. Keeping it per agent (not per run) makes "which uid is which agent"
//! a fact an administrator can look up; the runs themselves are kept apart by their own
//! pid, mount and IPC namespaces.
//!
//! A run of an agent reads through a *run session*: a session like the ones pairing issues,
//! bound to a key the daemon made for this run (its private half is never kept) and to the
//! agent's runner uid, for the hard session TTL. It ends when the run ends, so nothing can
//! read through it afterwards, and revoking the agent ends it like every other session.

use std::ops::RangeInclusive;

use rusqlite::{OptionalExtension, Transaction, params};

use super::agents::{AgentState, require, revoked_error};
use super::audit::{Actor, Outcome, Record};
use super::error::StoreError;
use super::sessions::{AgentSession, new_session};
use super::{Durability, Store, now_s};

/// What a run is, for its `run.start` audit row (no secret: argv is world-readable anyway,
/// but only the program's name is recorded).
#[derive(Debug, Clone)]
pub struct RunStart<'a> {
    pub run_id: &'a str,
    /// The program (argv\[0\]).
    pub program: &'a str,
    /// `none` or `host`.
    pub net: &'a str,
    /// Workspace on the host, if any.
    pub workspace: Option<&'a str>,
    /// The uids runs may use; a holder without one gets the lowest free uid here.
    pub uid_range: RangeInclusive<u32>,
    /// The session key (public half) and TTL, for runs of an agent.
    pub pubkey: [u8; 32],
    pub ttl_s: i64,
    /// fsync at the commit. `false` only when the caller makes the transaction durable
    /// itself ([`super::WalSync`]) before the run's command may start.
    pub fsync: bool,
}

/// Who a run is.
#[derive(Debug, Clone)]
pub struct RunIdentity {
    /// The host uid (and gid) the run's processes have.
    pub uid: u32,
    /// The run session and its agent, for runs of an agent.
    pub session: Option<AgentSession>,
}

impl Store {
    /// Starts a run of `owner` (as `agent`, if given): the agent must be active; allocates
    /// (or reuses) the runner uid, opens the run session, and audits `run.start`, in one
    /// transaction (durable at the commit unless `run.fsync` is unset). `known_uid(uid)` says
    /// whether the system's user database has `uid` (such uids are never allocated).
    pub fn start_run(
        &mut self,
        actor: &Actor,
        owner: u32,
        agent: Option<&str>,
        run: &RunStart<'_>,
        known_uid: &dyn Fn(u32) -> bool,
    ) -> Result<RunIdentity, StoreError> {
        let durability = if run.fsync {
            Durability::Full
        } else {
            Durability::Normal
        };
        self.commit(durability, |tx, _| {
            let record = match agent {
                Some(ident) => {
                    let a = require(tx, owner, ident)?;
                    if a.state == AgentState::Revoked {
                        return Err(revoked_error(&a));
                    }
                    Some(a)
                }
                None => None,
            };
            let holder = match &record {
                Some(a) => a.id.clone(),
                None => format!("owner:{owner}"),
            };
            let uid = runner_uid(tx, &holder, &run.uid_range, known_uid)?;
            let session = match record {
                Some(agent) => {
                    tx.prepare_cached(
                        "INSERT OR IGNORE INTO owners (uid, created_at) VALUES (?1, ?2)",
                    )?
                    .execute(params![owner, now_s()])?;
                    let session = new_session(tx, &agent.id, &run.pubkey, uid, run.ttl_s)?;
                    Some(AgentSession { session, agent })
                }
                None => None,
            };
            let audit = Record {
                actor: *actor,
                owner_uid: Some(owner),
                action: "run.start",
                subject: run.run_id.to_owned(),
                outcome: Outcome::Ok,
                detail: format!(
                    "agent={} program={} net={} workspace={} runner_uid={uid}",
                    session.as_ref().map_or("-", |s| s.agent.id.as_str()),
                    run.program,
                    run.net,
                    run.workspace.unwrap_or("-"),
                ),
            };
            Ok((RunIdentity { uid, session }, audit))
        })
    }

    /// Ends a run: its session (if any) ends (`run ended`), and `run.end` records how.
    ///
    /// Ending a session is a state change and is fsynced like every other. A run without
    /// a session changes nothing but the audit trail, so its `run.end` row commits like a
    /// denial's (`synchronous=NORMAL`, see the module docs of `store`): atomic and kept
    /// when the daemon is killed; only power loss can drop it, with the newest rows after
    /// it. That keeps an fsync off the path between a command's exit and its client
    /// learning of it.
    pub fn end_run(
        &mut self,
        actor: &Actor,
        owner: u32,
        run_id: &str,
        session: Option<&str>,
        how: &str,
    ) -> Result<(), StoreError> {
        let durability = match session {
            Some(_) => Durability::Full,
            None => Durability::Normal,
        };
        self.commit(durability, |tx, _| {
            if let Some(id) = session {
                tx.prepare_cached(
                    "UPDATE sessions SET ended_at = ?1, ended_why = 'run ended'
                     WHERE id = ?2 AND ended_at IS NULL",
                )?
                .execute(params![now_s(), id])?;
            }
            let audit = Record {
                actor: *actor,
                owner_uid: Some(owner),
                action: "run.end",
                subject: run_id.to_owned(),
                outcome: Outcome::Ok,
                detail: how.to_owned(),
            };
            Ok(((), audit))
        })
    }
}

/// The holder's runner uid, allocating the lowest free one in `range` on first use.
fn runner_uid(
    tx: &Transaction<'_>,
    holder: &str,
    range: &RangeInclusive<u32>,
    known_uid: &dyn Fn(u32) -> bool,
) -> Result<u32, StoreError> {
    let existing: Option<u32> = tx
        .prepare_cached("SELECT uid FROM runner_uids WHERE holder = ?1")?
        .query_row([holder], |r| r.get(0))
        .optional()?;
    if let Some(uid) = existing {
        // The range may have moved since: a uid outside it, or one the user database now
        // knows, is not used again.
        if range.contains(&uid) && !known_uid(uid) {
            return Ok(uid);
        }
        tx.prepare_cached("DELETE FROM runner_uids WHERE holder = ?1")?
            .execute([holder])?;
    }
    let taken: Vec<u32> = tx
        .prepare_cached("SELECT uid FROM runner_uids WHERE uid BETWEEN ?1 AND ?2 ORDER BY uid")?
        .query_map(params![range.start(), range.end()], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut next = *range.start();
    let mut taken = taken.into_iter().peekable();
    loop {
        while taken.next_if(|t| *t < next).is_some() {}
        let in_table = taken.peek() == Some(&next);
        if !in_table && !known_uid(next) {
            break;
        }
        if next == *range.end() {
            return Err(StoreError::Exhausted {
                what: "runner uids (runner.uid_range)",
            });
        }
        next += 1;
    }
    tx.prepare_cached("INSERT INTO runner_uids (holder, uid, created_at) VALUES (?1, ?2, ?3)")?
        .execute(params![holder, next, now_s()])?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{ALICE, BOB, Fixture, actor};
    use super::*;

    fn start<'a>(run_id: &'a str, range: RangeInclusive<u32>) -> RunStart<'a> {
        RunStart {
            run_id,
            program: "true",
            net: "none",
            workspace: None,
            uid_range: range,
            pubkey: [7; 32],
            ttl_s: 60,
            fsync: true,
        }
    }

    #[test]
    fn each_holder_keeps_its_own_uid_and_known_uids_are_skipped() {
        let mut f = Fixture::new();
        let a = actor(ALICE);
        f.store
            .create_agent(&a, ALICE, "bot", &Default::default())
            .unwrap();
        let known = |uid: u32| uid == 5000;
        let r = start("run_a", 5000..=5002);
        let first = f
            .store
            .start_run(&a, ALICE, Some("bot"), &r, &known)
            .unwrap();
        assert_eq!(first.uid, 5001, "5000 is a known user");
        let s = first.session.as_ref().unwrap();
        assert_eq!(s.session.uid, 5001);
        assert_eq!(s.agent.name, "bot");
        let again = f
            .store
            .start_run(&a, ALICE, Some("bot"), &r, &known)
            .unwrap();
        assert_eq!(again.uid, 5001, "an agent keeps its uid");
        let anon = f.store.start_run(&a, ALICE, None, &r, &known).unwrap();
        assert_eq!(anon.uid, 5002);
        assert!(anon.session.is_none());
        let b = actor(BOB);
        let err = f.store.start_run(&b, BOB, None, &r, &known).unwrap_err();
        assert!(matches!(err, StoreError::Exhausted { .. }), "{err:?}");
    }

    #[test]
    fn a_revoked_agent_cannot_start_and_a_run_end_ends_its_session() {
        let mut f = Fixture::new();
        let a = actor(ALICE);
        f.store
            .create_agent(&a, ALICE, "bot", &Default::default())
            .unwrap();
        let r = start("run_b", 6000..=6010);
        let run = f
            .store
            .start_run(&a, ALICE, Some("bot"), &r, &|_| false)
            .unwrap();
        let sid = run.session.unwrap().session.id;
        f.store
            .end_run(&a, ALICE, "run_b", Some(&sid), "exited 0")
            .unwrap();
        let s = f.store.session(&sid).unwrap();
        assert_eq!(s.session.ended_why.as_deref(), Some("run ended"));
        f.store.revoke_agent(&a, ALICE, "bot").unwrap();
        let err = f
            .store
            .start_run(&a, ALICE, Some("bot"), &r, &|_| false)
            .unwrap_err();
        assert!(matches!(err, StoreError::Revoked { .. }), "{err:?}");
        let rows = f.store.audit_list(Some(ALICE), 0, 100).unwrap();
        let actions: Vec<&str> = rows.iter().map(|r| r.action.as_str()).collect();
        assert!(
            actions.contains(&"run.start") && actions.contains(&"run.end"),
            "{actions:?}"
        );
    }
}
