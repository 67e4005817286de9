//! Tests of [`super`] (audit.rs): real SQLite in a temp dir, real vault.

use super::*;
use crate::store::testutil::{ALICE, BOB, Fixture, actor};
use crate::store::{AgentOptions, LinkKind};

/// A store with audit rows of every kind (19 of them).
fn busy() -> Fixture {
    let mut fx = Fixture::new();
    for i in 0..5 {
        fx.put(ALICE, &format!("cred{i}"), "sk-0123456789abcdef");
        fx.read(ALICE, &format!("cred{i}")).unwrap();
    }
    fx.put(BOB, "github", "ghp_0123456789abcdef");
    let _ = fx.read(BOB, "missing");
    let al = actor(ALICE);
    fx.store
        .create_agent(&al, ALICE, "ci-bot", &AgentOptions::default())
        .unwrap();
    fx.store
        .link_agent(&al, ALICE, "ci-bot", LinkKind::Alias, "builder")
        .unwrap();
    fx.store.revoke_agent(&al, ALICE, "ci-bot").unwrap();
    fx.store.teardown_agent(&al, ALICE, "ci-bot").unwrap();
    fx.store.delete_credential(&al, ALICE, "cred0").unwrap();
    fx.store
        .audit_denial(AuditEntry {
            actor: &actor(BOB),
            owner_uid: Some(ALICE),
            action: "credential.read",
            subject: "cred1",
            outcome: Outcome::Denied,
            detail: "not the owner",
        })
        .unwrap();
    fx
}

fn problem(fx: &mut Fixture) -> ChainProblem {
    let report = fx.store.audit_verify().unwrap();
    report.first_problem.expect("a problem")
}

fn rows(fx: &Fixture) -> i64 {
    fx.raw()
        .query_row("SELECT max(seq) FROM audit", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn chain_verifies_after_many_operations() {
    let mut fx = busy();
    let report = fx.store.audit_verify().unwrap();
    assert_eq!(report.first_problem, None, "{report:?}");
    assert_eq!(report.rows, u64::try_from(rows(&fx)).unwrap());
    assert!(report.rows >= 19, "{report:?}");
    // ... and after a reopen, which continues the same chain.
    let mut fx = fx.reopen().unwrap();
    fx.put(ALICE, "after", "sk-0123456789abcdef");
    assert_eq!(fx.store.audit_verify().unwrap().first_problem, None);
}

#[test]
fn edited_row_is_reported_as_edited_at_its_seq() {
    let mut fx = busy();
    fx.raw()
        .execute(
            "UPDATE audit SET detail = 'nothing to see' WHERE seq = 5",
            [],
        )
        .unwrap();
    let p = problem(&mut fx);
    assert_eq!((p.seq, p.kind), (5, ProblemKind::Edited), "{p:?}");
}

#[test]
fn deleted_middle_row_is_reported_missing_at_the_next_seq() {
    let mut fx = busy();
    fx.raw()
        .execute("DELETE FROM audit WHERE seq = 7", [])
        .unwrap();
    let p = problem(&mut fx);
    assert_eq!((p.seq, p.kind), (8, ProblemKind::Missing), "{p:?}");
}

#[test]
fn deleted_last_row_is_a_head_mismatch() {
    let mut fx = busy();
    let last = rows(&fx);
    fx.raw()
        .execute("DELETE FROM audit WHERE seq = ?1", [last])
        .unwrap();
    let p = problem(&mut fx);
    assert_eq!(
        (p.seq, p.kind),
        (last - 1, ProblemKind::HeadMismatch),
        "{p:?}"
    );
}

#[test]
fn forged_row_appended_with_a_valid_hash_chain_is_a_head_mismatch() {
    let mut fx = busy();
    let raw = fx.raw();
    let (seq, prev): (i64, Vec<u8>) = raw
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let prev: [u8; 32] = prev.try_into().unwrap();
    let fields = Fields {
        seq: seq + 1,
        ts_ms: 1,
        actor_uid: 0,
        actor_pid: None,
        owner_uid: Some(i64::from(ALICE)),
        action: b"credential.read",
        subject: b"cred1",
        outcome: b"ok",
        detail: b"forged",
    };
    let hash = row_hash(&prev, &fields);
    raw.execute(
        "INSERT INTO audit VALUES (?1, 1, 0, NULL, ?2, 'credential.read', 'cred1', 'ok', \
         'forged', ?3, ?4)",
        params![seq + 1, ALICE, &prev[..], &hash[..]],
    )
    .unwrap();
    let p = problem(&mut fx);
    assert_eq!(
        (p.seq, p.kind),
        (seq + 1, ProblemKind::HeadMismatch),
        "{p:?}"
    );
}

#[test]
fn reordered_rows_are_reported_at_the_first_of_them() {
    let mut fx = busy();
    fx.raw()
        .execute_batch(
            "CREATE TEMP TABLE t AS SELECT * FROM audit WHERE seq IN (9, 10);
             UPDATE audit SET
               ts_ms = (SELECT ts_ms FROM t WHERE t.seq = 19 - audit.seq),
               actor_uid = (SELECT actor_uid FROM t WHERE t.seq = 19 - audit.seq),
               actor_pid = (SELECT actor_pid FROM t WHERE t.seq = 19 - audit.seq),
               owner_uid = (SELECT owner_uid FROM t WHERE t.seq = 19 - audit.seq),
               action = (SELECT action FROM t WHERE t.seq = 19 - audit.seq),
               subject = (SELECT subject FROM t WHERE t.seq = 19 - audit.seq),
               outcome = (SELECT outcome FROM t WHERE t.seq = 19 - audit.seq),
               detail = (SELECT detail FROM t WHERE t.seq = 19 - audit.seq),
               prev_hash = (SELECT prev_hash FROM t WHERE t.seq = 19 - audit.seq),
               hash = (SELECT hash FROM t WHERE t.seq = 19 - audit.seq)
             WHERE seq IN (9, 10);",
        )
        .unwrap();
    let p = problem(&mut fx);
    assert_eq!(p.seq, 9, "{p:?}");
    assert!(
        matches!(p.kind, ProblemKind::Edited | ProblemKind::Missing),
        "{p:?}"
    );
}

#[test]
fn missing_head_is_reported() {
    let mut fx = busy();
    fx.raw()
        .execute("DELETE FROM meta WHERE key = 'audit_head'", [])
        .unwrap();
    assert_eq!(problem(&mut fx).kind, ProblemKind::HeadMissing);
}

#[test]
fn forged_head_is_a_head_mismatch() {
    let mut fx = busy();
    fx.raw()
        .execute(
            "UPDATE meta SET value = zeroblob(72) WHERE key = 'audit_head'",
            [],
        )
        .unwrap();
    assert_eq!(problem(&mut fx).kind, ProblemKind::HeadMismatch);
}

#[test]
fn tail_removed_while_closed_is_recorded_not_sealed_over() {
    let fx = busy();
    let last = rows(&fx);
    fx.raw()
        .execute("DELETE FROM audit WHERE seq = ?1", [last])
        .unwrap();
    let mut fx = fx.reopen().unwrap();
    fx.put(ALICE, "later", "sk-0123456789abcdef");
    let p = problem(&mut fx);
    assert_eq!((p.seq, p.kind), (last, ProblemKind::HeadMismatch), "{p:?}");
    let row = fx.store.audit_list(None, last - 1, 1).unwrap().remove(0);
    assert_eq!(row.action, ACTION_CHAIN_BREAK);
    assert!(
        row.detail.contains(&format!("seq {last}")),
        "{}",
        row.detail
    );
}

#[test]
fn audit_list_filters_by_owner_or_actor_and_pages() {
    let mut fx = busy();
    let bob_rows = fx.store.audit_list(Some(BOB), 0, 100).unwrap();
    assert!(!bob_rows.is_empty());
    assert!(
        bob_rows
            .iter()
            .all(|r| r.owner_uid == Some(BOB) || r.actor_uid == BOB)
    );
    // Bob's denial against Alice's credential is listed for both.
    assert!(bob_rows.iter().any(|r| r.detail == "not the owner"));
    let all = fx.store.audit_list(None, 0, 10_000).unwrap();
    assert_eq!(all[0].action, "store.init");
    let page = fx.store.audit_list(None, all[2].seq, 3).unwrap();
    assert_eq!(page, all[3..6].to_vec());
}

#[test]
fn row_hash_covers_every_field() {
    let base = Fields {
        seq: 1,
        ts_ms: 2,
        actor_uid: 3,
        actor_pid: None,
        owner_uid: Some(0),
        action: b"a",
        subject: b"b",
        outcome: b"ok",
        detail: b"d",
    };
    let h = row_hash(&[0; 32], &base);
    let variants = [
        Fields { seq: 2, ..base },
        Fields { ts_ms: 3, ..base },
        Fields {
            actor_uid: 4,
            ..base
        },
        Fields {
            actor_pid: Some(0),
            ..base
        },
        Fields {
            owner_uid: None,
            ..base
        },
        Fields {
            action: b"ab",
            subject: b"",
            ..base
        },
        Fields {
            outcome: b"denied",
            ..base
        },
        Fields {
            detail: b"e",
            ..base
        },
    ];
    for v in &variants {
        assert_ne!(row_hash(&[0; 32], v), h, "{v:?}");
    }
    assert_ne!(row_hash(&[1; 32], &base), h);
}
