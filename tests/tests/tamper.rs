//! Tampering with the database or the master key is detected, never silently accepted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use agentkeys_tests::Daemon;

fn db(d: &Daemon) -> rusqlite::Connection {
    rusqlite::Connection::open(d.db_path()).unwrap()
}

fn with_two_credentials() -> Daemon {
    let d = Daemon::start();
    d.ctl_in(&["store", "alpha"], Some(b"alpha-secret-0123456789"))
        .ok();
    d.ctl_in(&["store", "beta"], Some(b"beta-secret-9876543210"))
        .ok();
    d
}

#[test]
fn swapping_sealed_values_between_rows_fails_their_integrity_check() {
    let mut d = with_two_credentials();
    d.stop();
    let c = db(&d);
    c.execute_batch(
        "CREATE TEMP TABLE t AS SELECT name, nonce, sealed FROM credentials;
         UPDATE credentials SET nonce = (SELECT nonce FROM t WHERE t.name <> credentials.name),
                                sealed = (SELECT sealed FROM t WHERE t.name <> credentials.name);",
    )
    .unwrap();
    drop(c);
    d.spawn_ready().unwrap();
    for name in ["alpha", "beta"] {
        let err = d.ctl(&["read", name]).fails_with(1);
        assert!(err.contains("integrity"), "{err}");
        assert!(!err.contains("secret-"), "error leaks a value: {err}");
    }
    let rows = d.ctl(&["--json", "audit", "list"]).json();
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .any(|r| r["outcome"] == "error" || r["outcome"] == "denied"),
        "tamper not audited: {rows}"
    );
}

#[test]
fn moving_a_row_to_another_owner_fails_to_open() {
    let mut d = with_two_credentials();
    d.stop();
    db(&d)
        .execute_batch(
            "INSERT INTO owners (uid, created_at) VALUES (4242, 0);
             UPDATE credentials SET owner_uid = 4242 WHERE name = 'alpha';",
        )
        .unwrap();
    d.spawn_ready().unwrap();
    let err = d.ctl(&["read", "4242:alpha"]).fails_with(1);
    assert!(err.contains("integrity"), "{err}");
}

fn audit_broken_at(d: &Daemon) -> (String, i64) {
    let out = d.ctl(&["--json", "audit", "verify"]);
    assert_eq!(out.code, 1, "verify should fail: {}", out.stdout());
    let v = out.json();
    assert_eq!(v["ok"], false);
    (
        v["problem"].as_str().unwrap().to_owned(),
        v["seq"].as_i64().unwrap(),
    )
}

fn ten_audit_rows() -> Daemon {
    let d = Daemon::start();
    for i in 0..5 {
        d.ctl_in(&["store", &format!("c{i}")], Some(b"value-value-value"))
            .ok();
        d.ctl(&["read", &format!("c{i}")]).ok();
    }
    d.ctl(&["audit", "verify"]).ok();
    d
}

#[test]
fn an_edited_audit_row_is_reported_with_its_sequence_number() {
    let mut d = ten_audit_rows();
    d.stop();
    db(&d)
        .execute(
            "UPDATE audit SET detail = 'nothing to see' WHERE seq = 4",
            [],
        )
        .unwrap();
    d.spawn_ready().unwrap();
    assert_eq!(audit_broken_at(&d), ("edited".into(), 4));
}

#[test]
fn a_deleted_audit_row_is_reported() {
    let mut d = ten_audit_rows();
    d.stop();
    db(&d)
        .execute("DELETE FROM audit WHERE seq = 6", [])
        .unwrap();
    d.spawn_ready().unwrap();
    let (problem, seq) = audit_broken_at(&d);
    assert_eq!((problem.as_str(), seq), ("missing", 7));
}

#[test]
fn a_deleted_last_audit_row_is_reported() {
    let mut d = ten_audit_rows();
    d.stop();
    db(&d)
        .execute(
            "DELETE FROM audit WHERE seq = (SELECT MAX(seq) FROM audit)",
            [],
        )
        .unwrap();
    d.spawn_ready().unwrap();
    // The daemon appended nothing since: verify before anything else happens.
    let (problem, _) = audit_broken_at(&d);
    assert_eq!(problem, "headmismatch");
}

#[test]
fn an_inserted_audit_row_is_reported() {
    let mut d = ten_audit_rows();
    d.stop();
    // Forge a plausible row in the middle: shift later rows up and slot one in.
    let c = db(&d);
    c.execute_batch(
        "UPDATE audit SET seq = seq + 1000 WHERE seq >= 5;
         UPDATE audit SET seq = seq - 999 WHERE seq >= 1005;
         INSERT INTO audit (seq, ts_ms, actor_uid, actor_pid, owner_uid, action, subject, outcome, detail, prev_hash, hash)
           SELECT 5, ts_ms, actor_uid, actor_pid, owner_uid, 'credential.read', 'c0', 'ok', '', prev_hash, hash FROM audit WHERE seq = 4;",
    )
    .unwrap();
    drop(c);
    d.spawn_ready().unwrap();
    let (_, seq) = audit_broken_at(&d);
    assert_eq!(seq, 5);
}

#[test]
fn reordered_audit_rows_are_reported() {
    let mut d = ten_audit_rows();
    d.stop();
    let c = db(&d);
    c.execute_batch(
        "UPDATE audit SET seq = -3 WHERE seq = 3;
         UPDATE audit SET seq = 3 WHERE seq = 4;
         UPDATE audit SET seq = 4 WHERE seq = -3;",
    )
    .unwrap();
    drop(c);
    d.spawn_ready().unwrap();
    let (_, seq) = audit_broken_at(&d);
    assert_eq!(seq, 3);
}

#[test]
fn a_wrong_master_key_is_a_clear_start_up_error_not_an_empty_store() {
    let mut d = with_two_credentials();
    d.stop();
    std::fs::write(d.state_dir().join("master.key"), [7u8; 32]).unwrap();
    let err = d.spawn_ready().unwrap_err();
    assert!(err.contains("master key"), "{err}");
}

#[test]
fn a_missing_master_key_for_an_existing_database_is_a_start_up_error() {
    let mut d = with_two_credentials();
    d.stop();
    std::fs::remove_file(d.state_dir().join("master.key")).unwrap();
    let err = d.spawn_ready().unwrap_err();
    assert!(err.contains("master key"), "{err}");
    assert!(
        !d.state_dir().join("master.key").exists(),
        "a new key was made for old data"
    );
}

#[test]
fn a_database_that_is_not_ours_is_refused() {
    let mut d = Daemon::start();
    d.stop();
    for f in [
        "agentkeys.db",
        "agentkeys.db-wal",
        "agentkeys.db-shm",
        "master.key",
    ] {
        let _ = std::fs::remove_file(d.state_dir().join(f));
    }
    let other = rusqlite::Connection::open(d.db_path()).unwrap();
    other
        .execute_batch("CREATE TABLE photos (id INTEGER PRIMARY KEY, path TEXT);")
        .unwrap();
    drop(other);
    let err = d.spawn_ready().unwrap_err();
    assert!(
        err.contains("not an AgentKeys database") || err.contains("not ours"),
        "{err}"
    );

    std::fs::write(
        d.db_path(),
        b"this is not a database at all, just some text. ".repeat(100),
    )
    .unwrap();
    let err = d.spawn_ready().unwrap_err();
    assert!(
        err.contains("not an AgentKeys database") || err.contains("not ours"),
        "{err}"
    );
}

#[test]
fn the_master_key_comes_from_the_systemd_credential_when_present() {
    let mut d = Daemon::start();
    d.stop();
    for f in [
        "agentkeys.db",
        "agentkeys.db-wal",
        "agentkeys.db-shm",
        "master.key",
    ] {
        let _ = std::fs::remove_file(d.state_dir().join(f));
    }
    let creds = tempfile::tempdir().unwrap();
    std::fs::write(
        creds.path().join("agentkeys.master"),
        format!("{}\n", "ab".repeat(32)),
    )
    .unwrap();
    // As systemd hands credentials over: read-only for the owner alone.
    let key = creds.path().join("agentkeys.master");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o400)).unwrap();
    d.opts.env.push((
        "CREDENTIALS_DIRECTORY".into(),
        creds.path().display().to_string(),
    ));
    d.spawn_ready().unwrap();
    d.ctl_in(&["store", "x"], Some(b"value-with-systemd-key"))
        .ok();
    assert!(
        !d.state_dir().join("master.key").exists(),
        "fell back to a key file"
    );
    d.stop();
    // The same database with another credential does not open.
    std::fs::write(creds.path().join("agentkeys.master"), "cd".repeat(32)).unwrap();
    let err = d.spawn_ready().unwrap_err();
    assert!(err.contains("master key"), "{err}");
}
