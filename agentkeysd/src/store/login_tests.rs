use super::*;
use crate::store::testutil::{ALICE, BOB, Fixture, actor, opts};
use crate::store::{CredentialClass, ErrorKind, GrantMode, GrantTerms, PutOptions};

/// The cheapest parameters the store accepts: these tests are about logic, not cost.
fn cheap() -> WrapSpec {
    let mut spec = WrapSpec::fresh().unwrap();
    spec.params = KdfParams {
        m_cost_kib: 8 * 1024,
        t_cost: 1,
        p_cost: 1,
    };
    spec
}

fn pw(fx: &Fixture, text: &str) -> SecretBuf {
    fx.secret(text.as_bytes())
}

/// Logs `owner` in with `password` the way the daemon does: spec, stretch, unlock.
fn unlock(fx: &mut Fixture, owner: u32, password: &str, first: &WrapSpec) -> Unlock {
    let spec = if fx.store.login_row(owner).unwrap().is_some() {
        fx.store.login_spec(&actor(owner), owner).unwrap()
    } else {
        first.clone()
    };
    let stretched = stretch(&fx.vault, &spec, &pw(fx, password)).unwrap();
    fx.store
        .login_unlock(&actor(owner), owner, &spec, &stretched)
        .unwrap()
}

fn put_login(fx: &mut Fixture, owner: u32, name: &str, value: &str) -> Result<(), StoreError> {
    let s = fx.secret(value.as_bytes());
    let o = PutOptions {
        class: Some(CredentialClass::Login),
        ..opts(false)
    };
    fx.store
        .put_credential(&actor(owner), owner, name, &s, &o)
        .map(drop)
}

#[test]
fn first_login_creates_a_key_and_later_logins_unlock_it() {
    let mut fx = Fixture::new();
    let spec = cheap();
    assert!(!fx.store.login_unlocked(ALICE));
    assert_eq!(unlock(&mut fx, ALICE, "pw-alice", &spec), Unlock::Created);
    assert!(fx.store.login_unlocked(ALICE));
    fx.store.login_lock(&actor(0), ALICE).unwrap();
    assert!(!fx.store.login_unlocked(ALICE));
    assert_eq!(unlock(&mut fx, ALICE, "pw-alice", &spec), Unlock::Unlocked);
    // The stored parameters are the ones the key was made with.
    assert_eq!(fx.store.login_spec(&actor(ALICE), ALICE).unwrap(), spec);
}

#[test]
fn wrong_password_unlocks_nothing_and_is_audited() {
    let mut fx = Fixture::new();
    let spec = cheap();
    unlock(&mut fx, ALICE, "right", &spec);
    put_login(&mut fx, ALICE, "github", "ghp_login_class_value").unwrap();
    fx.store.login_lock(&actor(0), ALICE).unwrap();
    assert_eq!(
        unlock(&mut fx, ALICE, "wrong", &spec),
        Unlock::WrongPassword
    );
    assert!(!fx.store.login_unlocked(ALICE));
    let err = fx.read(ALICE, "github").unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    let rows = fx.store.audit_list(Some(ALICE), 0, 100).unwrap();
    assert!(
        rows.iter()
            .any(|r| r.action == "login.unlock" && r.outcome == "denied"),
        "{rows:?}"
    );
}

#[test]
fn login_class_reads_only_while_unlocked() {
    let mut fx = Fixture::new();
    // Storing one before any login: locked (there is no login key to seal under).
    let err = put_login(&mut fx, ALICE, "github", "ghp_value_0123456789").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Locked);
    assert!(err.to_string().contains("locked"), "{err}");
    unlock(&mut fx, ALICE, "pw", &cheap());
    put_login(&mut fx, ALICE, "github", "ghp_value_0123456789").unwrap();
    assert_eq!(fx.read(ALICE, "github").unwrap(), b"ghp_value_0123456789");
    let meta = fx.store.list_credentials(ALICE).unwrap();
    assert_eq!(meta[0].class, "login");
    fx.store.login_lock(&actor(0), ALICE).unwrap();
    let err = fx.read(ALICE, "github").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Locked);
    // Host-class credentials are unaffected.
    fx.put(ALICE, "anthropic", "sk-ant-0123456789");
    assert_eq!(fx.read(ALICE, "anthropic").unwrap(), b"sk-ant-0123456789");
    // Another owner's session does not unlock alice's.
    unlock(&mut fx, BOB, "pw-bob", &cheap());
    assert!(fx.read(ALICE, "github").is_err());
}

#[test]
fn replacing_keeps_the_class_unless_told() {
    let mut fx = Fixture::new();
    unlock(&mut fx, ALICE, "pw", &cheap());
    put_login(&mut fx, ALICE, "github", "ghp_value_0123456789").unwrap();
    fx.store.login_lock(&actor(0), ALICE).unwrap();
    // A plain replace of a login-class credential needs the login key too.
    let s = fx.secret(b"ghp_other_0123456789");
    let err = fx
        .store
        .put_credential(&actor(ALICE), ALICE, "github", &s, &opts(true))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Locked);
}

#[test]
fn flipping_the_class_column_does_not_open_the_value() {
    let mut fx = Fixture::new();
    unlock(&mut fx, ALICE, "pw", &cheap());
    put_login(&mut fx, ALICE, "github", "ghp_value_0123456789").unwrap();
    fx.raw()
        .execute(
            "UPDATE credentials SET class = 'host' WHERE name = 'github'",
            [],
        )
        .unwrap();
    let err = fx.read(ALICE, "github").unwrap_err();
    assert!(matches!(err, StoreError::Tampered { .. }), "{err:?}");
}

#[test]
fn login_key_survives_a_restart_and_the_password_is_needed_again() {
    let mut fx = Fixture::new();
    let spec = cheap();
    unlock(&mut fx, ALICE, "pw", &spec);
    put_login(&mut fx, ALICE, "github", "ghp_value_0123456789").unwrap();
    let mut fx = fx.reopen().unwrap();
    assert!(
        !fx.store.login_unlocked(ALICE),
        "nothing is unlocked at start"
    );
    assert_eq!(
        fx.read(ALICE, "github").unwrap_err().kind(),
        ErrorKind::Locked
    );
    assert_eq!(unlock(&mut fx, ALICE, "pw", &spec), Unlock::Unlocked);
    assert_eq!(fx.read(ALICE, "github").unwrap(), b"ghp_value_0123456789");
}

#[test]
fn password_change_rewraps_old_stops_new_works() {
    let mut fx = Fixture::new();
    unlock(&mut fx, ALICE, "old-pw", &cheap());
    put_login(&mut fx, ALICE, "github", "ghp_value_0123456789").unwrap();
    fx.store.login_lock(&actor(0), ALICE).unwrap();
    // Locked: the old password is what opens the key.
    let old_spec = fx.store.login_spec(&actor(ALICE), ALICE).unwrap();
    let wrong = stretch(&fx.vault, &old_spec, &pw(&fx, "not-it")).unwrap();
    let new_spec = cheap();
    let new = stretch(&fx.vault, &new_spec, &pw(&fx, "new-pw")).unwrap();
    let r = fx
        .store
        .login_rewrap(&actor(0), ALICE, Some((&old_spec, &wrong)), &new_spec, &new)
        .unwrap();
    assert_eq!(r, Rewrap::WrongPassword);
    assert_eq!(
        fx.store.login_spec(&actor(ALICE), ALICE).unwrap(),
        old_spec,
        "unchanged"
    );
    let old = stretch(&fx.vault, &old_spec, &pw(&fx, "old-pw")).unwrap();
    let r = fx
        .store
        .login_rewrap(&actor(0), ALICE, Some((&old_spec, &old)), &new_spec, &new)
        .unwrap();
    assert_eq!(r, Rewrap::Rewrapped);
    assert!(!fx.store.login_unlocked(ALICE), "a change does not unlock");
    assert_eq!(
        unlock(&mut fx, ALICE, "old-pw", &cheap()),
        Unlock::WrongPassword
    );
    assert_eq!(unlock(&mut fx, ALICE, "new-pw", &cheap()), Unlock::Unlocked);
    assert_eq!(fx.read(ALICE, "github").unwrap(), b"ghp_value_0123456789");
}

#[test]
fn password_change_while_unlocked_needs_no_old_password() {
    let mut fx = Fixture::new();
    unlock(&mut fx, ALICE, "old-pw", &cheap());
    let new_spec = cheap();
    let new = stretch(&fx.vault, &new_spec, &pw(&fx, "new-pw")).unwrap();
    let r = fx
        .store
        .login_rewrap(&actor(0), ALICE, None, &new_spec, &new)
        .unwrap();
    assert_eq!(r, Rewrap::Rewrapped);
    fx.store.login_lock(&actor(0), ALICE).unwrap();
    assert_eq!(unlock(&mut fx, ALICE, "new-pw", &cheap()), Unlock::Unlocked);
}

#[test]
fn last_logout_ends_session_bound_grants_only() {
    let mut fx = Fixture::new();
    fx.put(ALICE, "anthropic", "sk-ant-0123456789");
    fx.put(ALICE, "openai", "sk-openai-0123456789");
    fx.pair(ALICE, "ci-bot", &["anthropic", "openai"]);
    fx.store
        .grant_with(
            &actor(ALICE),
            ALICE,
            "ci-bot",
            "anthropic",
            GrantTerms {
                mode: GrantMode::Auto,
                expires_at: None,
                until_logout: true,
            },
        )
        .unwrap();
    fx.store
        .grant(
            &actor(ALICE),
            ALICE,
            "ci-bot",
            "openai",
            GrantMode::Auto,
            None,
        )
        .unwrap();
    let before = fx.store.grants_of(ALICE, "ci-bot").unwrap();
    assert_eq!(before.len(), 2);
    assert!(
        before
            .iter()
            .any(|g| g.credential == "anthropic" && g.until_logout)
    );
    let locked = fx.store.login_lock(&actor(0), ALICE).unwrap();
    assert_eq!(locked.grants_ended, 1);
    let after = fx.store.grants_of(ALICE, "ci-bot").unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].credential, "openai");
}

#[test]
fn out_of_range_parameters_are_refused_before_any_work() {
    let fx = Fixture::new();
    let mut spec = cheap();
    spec.params.m_cost_kib = 4 * 1024 * 1024;
    let err = stretch(&fx.vault, &spec, &pw(&fx, "x")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

/// A row whose parameters were raised to what the schema still allows (1 GiB × 16 × 16:
/// minutes of Argon2id) is refused when its spec is read — before any stretching — and the
/// refusal is audited; the daemon's parameters themselves are accepted.
#[test]
fn a_tampered_row_with_huge_parameters_is_refused_before_stretching() {
    let mut fx = Fixture::new();
    assert!(LOGIN_KDF.check().is_ok());
    unlock(&mut fx, ALICE, "pw", &cheap());
    for (m, t, p) in [
        (1024 * 1024, 16, 16),
        (256 * 1024 + 1, 1, 1),
        (8192, 5, 1),
        (8192, 1, 5),
    ] {
        fx.raw()
            .execute(
                "UPDATE login_keys SET m_cost_kib = ?1, t_cost = ?2, p_cost = ?3",
                [m, t, p],
            )
            .unwrap();
        let err = fx.store.login_spec(&actor(0), ALICE).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        assert!(
            err.to_string().contains("outside the accepted ranges"),
            "{err}"
        );
    }
    let rows = fx.store.audit_list(Some(ALICE), 0, 100).unwrap();
    let denied = rows
        .iter()
        .filter(|r| r.action == "login.unlock" && r.outcome == "denied")
        .count();
    assert_eq!(denied, 4, "{rows:?}");
}

#[test]
fn stretch_is_argon2id_of_the_password_and_salt() {
    // RFC 9106-style check against an independent computation of the same parameters.
    let fx = Fixture::new();
    let spec = WrapSpec {
        params: KdfParams {
            m_cost_kib: 8 * 1024,
            t_cost: 1,
            p_cost: 1,
        },
        salt: [7u8; SALT_LEN],
    };
    let got = stretch(&fx.vault, &spec, &pw(&fx, "password")).unwrap();
    let mut want = [0u8; 32];
    argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon2::Params::new(8 * 1024, 1, 1, Some(32)).unwrap(),
    )
    .hash_password_into(b"password", &[7u8; SALT_LEN], &mut want)
    .unwrap();
    assert_eq!(got.expose_secret(), want);
    let other = stretch(&fx.vault, &spec, &pw(&fx, "passwore")).unwrap();
    assert_ne!(other.expose_secret(), want);
}

/// A v2 database (made from a fresh one by undoing V3) keeps its credentials and grants
/// through the migration; its grants are not session-bound.
#[test]
fn v2_database_migrates_to_v3_keeping_credentials_and_grants() {
    let mut fx = Fixture::new();
    fx.put(ALICE, "anthropic", "sk-ant-0123456789abcdef");
    fx.pair(ALICE, "ci-bot", &["anthropic"]);
    fx.store
        .grant(
            &actor(ALICE),
            ALICE,
            "ci-bot",
            "anthropic",
            GrantMode::Auto,
            None,
        )
        .unwrap();
    fx.raw()
        .execute_batch(
            "DROP TABLE runner_uids;
             DROP TABLE login_keys;
             ALTER TABLE grants DROP COLUMN until_logout;
             PRAGMA user_version = 2;",
        )
        .unwrap();
    let mut fx = fx.reopen().unwrap();
    assert_eq!(
        fx.store.stats().unwrap().schema_version,
        crate::store::SCHEMA_VERSION
    );
    assert_eq!(
        fx.read(ALICE, "anthropic").unwrap(),
        b"sk-ant-0123456789abcdef"
    );
    let grants = fx.store.grants_of(ALICE, "ci-bot").unwrap();
    assert_eq!(grants.len(), 1);
    assert!(!grants[0].until_logout);
    assert_eq!(unlock(&mut fx, ALICE, "pw", &cheap()), Unlock::Created);
    assert_eq!(
        fx.store.login_lock(&actor(0), ALICE).unwrap().grants_ended,
        0
    );
}

/// A key is loaded only once its unlock's audit row is committed, and the last logout
/// drops it even when its own commit fails: with the database refusing writes, the right
/// password loads nothing, and a lock still unloads.
#[test]
fn no_key_in_memory_without_its_audit_row_and_a_failed_lock_still_unloads() {
    let mut fx = Fixture::new();
    let spec = cheap();
    unlock(&mut fx, ALICE, "pw", &spec);
    fx.store.login_lock(&actor(0), ALICE).unwrap();
    let stretched = stretch(&fx.vault, &spec, &pw(&fx, "pw")).unwrap();
    fx.raw().execute_batch("PRAGMA query_only = ON").unwrap();
    assert!(
        fx.store
            .login_unlock(&actor(ALICE), ALICE, &spec, &stretched)
            .is_err()
    );
    assert!(
        !fx.store.login_unlocked(ALICE),
        "loaded without its audit row"
    );
    fx.raw().execute_batch("PRAGMA query_only = OFF").unwrap();
    let outcome = fx
        .store
        .login_unlock(&actor(ALICE), ALICE, &spec, &stretched)
        .unwrap();
    assert_eq!(outcome, Unlock::Unlocked);
    fx.raw().execute_batch("PRAGMA query_only = ON").unwrap();
    assert!(fx.store.login_lock(&actor(0), ALICE).is_err());
    assert!(
        !fx.store.login_unlocked(ALICE),
        "a failed lock kept the key"
    );
}

/// Two first logins raced: both read "no key yet" and stretched under their own fresh
/// salts; the first created the key. The second's stretch is stale, but the owner is
/// unlocked, and that is what it answers (not WrongPassword).
#[test]
fn a_stale_stretch_of_an_unlocked_owner_answers_unlocked() {
    let mut fx = Fixture::new();
    let (first, second) = (cheap(), cheap());
    assert_ne!(first, second);
    assert_eq!(unlock(&mut fx, ALICE, "pw", &first), Unlock::Created);
    let stale = stretch(&fx.vault, &second, &pw(&fx, "pw")).unwrap();
    let outcome = fx
        .store
        .login_unlock(&actor(ALICE), ALICE, &second, &stale)
        .unwrap();
    assert_eq!(outcome, Unlock::Unlocked);
    // Locked, the same stale stretch opens nothing.
    fx.store.login_lock(&actor(0), ALICE).unwrap();
    let outcome = fx
        .store
        .login_unlock(&actor(ALICE), ALICE, &second, &stale)
        .unwrap();
    assert_eq!(outcome, Unlock::WrongPassword);
    assert!(!fx.store.login_unlocked(ALICE));
}
