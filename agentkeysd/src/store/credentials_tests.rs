//! Tests of [`super`] (credentials.rs): real SQLite in a temp dir, real vault.

use std::fs;

use rusqlite::params;

use super::*;
use crate::store::testutil::{ALICE, BOB, Fixture, actor, opts};
use crate::store::{ErrorKind, Outcome};

const KEY: &str = "sk-ant-api03-0123456789abcdef";

fn last_audit(fx: &mut Fixture) -> crate::store::AuditRow {
    fx.store.audit_list(None, 0, 10_000).unwrap().pop().unwrap()
}

#[test]
fn stored_credential_reads_back_and_lists_without_its_secret() {
    let mut fx = Fixture::new();
    let created = fx.put(ALICE, "anthropic", KEY);
    let PutOutcome::Created(meta) = created else {
        panic!("expected Created, got {created:?}");
    };
    assert_eq!(
        (meta.version, meta.owner_uid, meta.last4.as_str()),
        (1, ALICE, "cdef")
    );
    assert_eq!((meta.class.as_str(), meta.single_use), ("host", false));
    fx.put(ALICE, "github", "ghp_0123456789abcdefXYZW");
    assert_eq!(fx.read(ALICE, "anthropic").unwrap(), KEY.as_bytes());
    let names: Vec<String> = fx
        .store
        .list_credentials(ALICE)
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["anthropic", "github"]);
    assert!(fx.store.list_credentials(BOB).unwrap().is_empty());
    let row = last_audit(&mut fx);
    assert_eq!(
        (row.action.as_str(), row.outcome.as_str()),
        ("credential.read", "ok")
    );
    assert_eq!(
        (row.actor_uid, row.actor_pid, row.owner_uid),
        (ALICE, Some(4242), Some(ALICE))
    );
}

#[test]
fn plaintext_never_reaches_the_database_files() {
    let mut fx = Fixture::new();
    fx.put(ALICE, "anthropic", KEY);
    fx.read(ALICE, "anthropic").unwrap();
    for entry in fs::read_dir(fx.state_dir()).unwrap() {
        let bytes = fs::read(entry.unwrap().path()).unwrap();
        assert!(!bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes()));
    }
}

#[test]
fn existing_name_without_replace_is_already_exists() {
    let mut fx = Fixture::new();
    fx.put(ALICE, "anthropic", KEY);
    let s = fx.secret(b"other-secret-value");
    let err = fx
        .store
        .put_credential(&actor(ALICE), ALICE, "anthropic", &s, &opts(false))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert_eq!(fx.read(ALICE, "anthropic").unwrap(), KEY.as_bytes());
    // The same name under another owner is a different credential.
    fx.put(BOB, "anthropic", "bobs-own-secret-value");
    assert_eq!(fx.read(BOB, "anthropic").unwrap(), b"bobs-own-secret-value");
}

#[test]
fn replace_bumps_version_and_serves_the_new_secret() {
    let mut fx = Fixture::new();
    let first = fx.put(ALICE, "anthropic", KEY).meta().clone();
    let s = fx.secret(b"sk-ant-api03-NEWNEWNEWNEW");
    let out = fx
        .store
        .put_credential(&actor(ALICE), ALICE, "anthropic", &s, &opts(true))
        .unwrap();
    let PutOutcome::Replaced(meta) = out else {
        panic!("expected Replaced, got {out:?}");
    };
    assert_eq!(
        (meta.id, meta.version, meta.last4.as_str()),
        (first.id, 2, "WNEW")
    );
    assert_eq!(meta.created_at, first.created_at);
    assert_eq!(
        fx.read(ALICE, "anthropic").unwrap(),
        b"sk-ant-api03-NEWNEWNEWNEW"
    );
    assert_eq!(last_audit(&mut fx).action, "credential.read");
    let actions: Vec<String> = fx
        .store
        .audit_list(Some(ALICE), 0, 100)
        .unwrap()
        .into_iter()
        .map(|r| r.action)
        .collect();
    assert_eq!(
        actions,
        ["credential.store", "credential.replace", "credential.read"]
    );
}

#[test]
fn expired_credential_is_refused_and_audited_as_denied() {
    let mut fx = Fixture::new();
    let s = fx.secret(KEY.as_bytes());
    let o = PutOptions {
        expires_at: Some(now_s() - 1),
        ..opts(false)
    };
    fx.store
        .put_credential(&actor(ALICE), ALICE, "anthropic", &s, &o)
        .unwrap();
    let err = fx.read(ALICE, "anthropic").unwrap_err();
    assert!(matches!(err, StoreError::Expired { .. }), "{err:?}");
    let row = last_audit(&mut fx);
    assert_eq!(
        (row.outcome.as_str(), row.detail.as_str()),
        ("denied", "expired")
    );
}

#[test]
fn unknown_credential_is_not_found_and_audited() {
    let mut fx = Fixture::new();
    let err = fx.read(ALICE, "nope").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(last_audit(&mut fx).outcome, Outcome::Denied.as_str());
}

#[test]
fn swapped_sealed_values_fail_as_tampered_for_both_rows() {
    let mut fx = Fixture::new();
    fx.put(ALICE, "anthropic", KEY);
    fx.put(ALICE, "openai", "sk-proj-abcdefghijklmnop");
    fx.raw()
        .execute_batch(
            "CREATE TEMP TABLE s AS SELECT name, nonce, sealed FROM credentials;
             UPDATE credentials SET
               nonce = (SELECT nonce FROM s WHERE s.name != credentials.name),
               sealed = (SELECT sealed FROM s WHERE s.name != credentials.name);",
        )
        .unwrap();
    for name in ["anthropic", "openai"] {
        let err = fx.read(ALICE, name).unwrap_err();
        assert!(
            matches!(err, StoreError::Tampered { .. }),
            "{name}: {err:?}"
        );
        assert_eq!(last_audit(&mut fx).outcome, "error");
    }
}

#[test]
fn rows_renamed_in_the_file_fail_as_tampered() {
    let mut fx = Fixture::new();
    fx.put(ALICE, "anthropic", KEY);
    fx.put(ALICE, "openai", "sk-proj-abcdefghijklmnop");
    fx.raw()
        .execute_batch(
            "UPDATE credentials SET name = 'tmp' WHERE name = 'anthropic';
             UPDATE credentials SET name = 'anthropic' WHERE name = 'openai';
             UPDATE credentials SET name = 'openai' WHERE name = 'tmp';",
        )
        .unwrap();
    for name in ["anthropic", "openai"] {
        let err = fx.read(ALICE, name).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Tampered, "{name}");
    }
}

#[test]
fn row_moved_to_another_owner_fails_as_tampered() {
    let mut fx = Fixture::new();
    fx.put(ALICE, "anthropic", KEY);
    fx.put(BOB, "bobs-own-key", "bob-has-an-owner-row");
    fx.raw()
        .execute(
            "UPDATE credentials SET owner_uid = ?1 WHERE name = 'anthropic'",
            [BOB],
        )
        .unwrap();
    let err = fx.read(BOB, "anthropic").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tampered);
}

#[test]
fn rolled_back_sealed_value_fails_as_tampered() {
    let mut fx = Fixture::new();
    fx.put(ALICE, "anthropic", "sk-old-secret-value-0000");
    let (old_nonce, old_sealed): (Vec<u8>, Vec<u8>) = fx
        .raw()
        .query_row(
            "SELECT nonce, sealed FROM credentials WHERE name = 'anthropic'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let s = fx.secret(b"sk-new-secret-value-1111");
    fx.store
        .put_credential(&actor(ALICE), ALICE, "anthropic", &s, &opts(true))
        .unwrap();
    fx.raw()
        .execute(
            "UPDATE credentials SET nonce = ?1, sealed = ?2 WHERE name = 'anthropic'",
            params![old_nonce, old_sealed],
        )
        .unwrap();
    let err = fx.read(ALICE, "anthropic").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tampered);
}

#[test]
fn delete_removes_the_credential_and_its_grants() {
    let mut fx = Fixture::new();
    let meta = fx.put(ALICE, "anthropic", KEY).meta().clone();
    let agent = fx
        .store
        .create_agent(&actor(ALICE), ALICE, "ci-bot", &Default::default())
        .unwrap();
    fx.raw().execute(
        "INSERT INTO grants (agent_id, credential_id, mode, created_at) VALUES (?1, ?2, 'auto', 0)",
        params![agent.id, meta.id],
    )
    .unwrap();
    let deleted = fx
        .store
        .delete_credential(&actor(ALICE), ALICE, "anthropic")
        .unwrap();
    assert_eq!(deleted.id, meta.id);
    assert_eq!(
        fx.read(ALICE, "anthropic").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let grants: i64 = fx
        .raw()
        .query_row("SELECT count(*) FROM grants", [], |r| r.get(0))
        .unwrap();
    assert_eq!(grants, 0);
    let err = fx
        .store
        .delete_credential(&actor(ALICE), ALICE, "anthropic")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let delete_row = fx
        .store
        .audit_list(Some(ALICE), 0, 100)
        .unwrap()
        .into_iter()
        .find(|r| r.action == "credential.delete")
        .unwrap();
    assert!(
        delete_row.detail.contains("grants=1"),
        "{}",
        delete_row.detail
    );
}

#[test]
fn deleted_name_stored_again_gets_a_new_id() {
    let mut fx = Fixture::new();
    let first = fx.put(ALICE, "anthropic", KEY).meta().id;
    fx.store
        .delete_credential(&actor(ALICE), ALICE, "anthropic")
        .unwrap();
    let second = fx.put(ALICE, "anthropic", KEY).meta().id;
    assert_ne!(first, second, "ids are never reused (AAD binds the id)");
}

#[test]
fn single_use_credential_is_consumed_by_its_first_read() {
    let mut fx = Fixture::new();
    fx.put(ALICE, "anthropic", KEY);
    fx.raw()
        .execute_batch("UPDATE credentials SET single_use = 1")
        .unwrap();
    assert_eq!(fx.read(ALICE, "anthropic").unwrap(), KEY.as_bytes());
    assert_eq!(
        fx.read(ALICE, "anthropic").unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn invalid_names_and_env_vars_are_refused() {
    let mut fx = Fixture::new();
    let s = fx.secret(KEY.as_bytes());
    let err = fx
        .store
        .put_credential(&actor(ALICE), ALICE, "Bad Name", &s, &opts(false))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let o = PutOptions {
        env_var: "not-an-env".into(),
        ..opts(false)
    };
    let err = fx
        .store
        .put_credential(&actor(ALICE), ALICE, "ok", &s, &o)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn last4_is_shown_only_for_long_printable_utf8() {
    assert_eq!(last4(b"sk-ant-0123456789"), "6789");
    assert_eq!(last4(b"short-12345"), "", "11 bytes");
    assert_eq!(last4("ключ-ключ-абвг".as_bytes()), "абвг");
    assert_eq!(last4(b"\xff\xfe0123456789ab"), "");
    assert_eq!(last4(b"sk-ant-0123456789\n"), "");
}

#[test]
fn aad_is_owner_id_version_big_endian_then_name() {
    assert_eq!(
        aad(0x0102_0304, 0x0506_0708_090a_0b0c, 0x0d0e_0f10, "ab"),
        [
            1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, b'a', b'b'
        ]
    );
}

#[test]
fn a_read_queues_its_row_and_audit_readers_see_it_at_once() {
    let mut fx = Fixture::new();
    fx.put(ALICE, "anthropic", KEY);
    fx.read(ALICE, "anthropic").unwrap();
    assert_eq!(fx.store.pending_audit(), 1);
    let row = last_audit(&mut fx);
    assert_eq!(
        (row.action.as_str(), row.outcome.as_str()),
        ("credential.read", "ok")
    );
    assert_eq!(fx.store.pending_audit(), 0);
}

#[test]
fn queued_read_rows_keep_their_place_before_a_later_commit() {
    let mut fx = Fixture::new();
    fx.put(ALICE, "anthropic", KEY);
    fx.read(ALICE, "anthropic").unwrap();
    fx.read(ALICE, "anthropic").unwrap();
    fx.put(ALICE, "openai", "sk-proj-abcdefghijklmnop");
    let actions: Vec<String> = fx
        .store
        .audit_list(Some(ALICE), 0, 100)
        .unwrap()
        .into_iter()
        .map(|r| r.action)
        .collect();
    assert_eq!(
        actions,
        [
            "credential.store",
            "credential.read",
            "credential.read",
            "credential.store"
        ]
    );
    assert_eq!(fx.store.audit_verify().unwrap().first_problem, None);
}

#[test]
fn queued_read_rows_are_written_when_the_store_closes() {
    let mut fx = Fixture::new();
    fx.put(ALICE, "anthropic", KEY);
    fx.read(ALICE, "anthropic").unwrap();
    let mut fx = fx.reopen().unwrap();
    let row = last_audit(&mut fx);
    assert_eq!(row.action, "credential.read");
    assert_eq!(fx.store.audit_verify().unwrap().first_problem, None);
}
