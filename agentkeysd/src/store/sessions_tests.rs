//! Tests of [`super`] (sessions.rs): pairing, recovery, key rotation and scope changes on
//! real SQLite in a temp dir, with a real vault.

use super::*;
use crate::store::testutil::{
    ALICE, BOB, CHILD_UID, Fixture, KEY_A, KEY_B, TTL_S, actor, issue, names,
};
use crate::store::{AgentRead, ErrorKind, GrantMode, LinkKind, is_session_id};

fn grant_names(fx: &Fixture, owner: u32, agent: &str) -> Vec<(String, GrantMode)> {
    fx.store
        .grants_of(owner, agent)
        .unwrap()
        .into_iter()
        .map(|g| (g.credential, g.mode))
        .collect()
}

fn auto(name: &str) -> (String, GrantMode) {
    (name.to_owned(), GrantMode::Auto)
}

fn rebind(fx: &mut Fixture, agent: &str, reactivate: bool, key: &[u8; 32]) -> AgentSession {
    fx.store
        .rebind_agent(&actor(ALICE), ALICE, agent, reactivate, &issue(key, TTL_S))
        .unwrap()
}

#[test]
fn pairing_creates_an_active_agent_with_its_key_auto_grants_and_a_bound_session() {
    let mut fx = Fixture::new();
    fx.put(ALICE, "anthropic", "sk-ant-0123456789abcdef");
    fx.put(ALICE, "github", "ghp_0123456789abcdef");
    fx.put(ALICE, "openai", "sk-0123456789abcdef");
    let AgentSession { session, agent } =
        fx.pair(ALICE, "ci-bot", &["anthropic", "github", "slack"]);

    assert_eq!(agent.owner_uid, ALICE);
    assert_eq!(agent.name, "ci-bot");
    assert_eq!(agent.state, AgentState::Active);
    assert_eq!(agent.scope, ["anthropic", "github", "slack"]);
    assert_eq!(agent.pubkey, Some(KEY_A));
    assert_eq!(fx.store.get_agent(ALICE, "ci-bot").unwrap(), agent);
    // Auto grants for the scope's existing credentials only: not `slack` (no such
    // credential), not `openai` (not in scope).
    assert_eq!(
        grant_names(&fx, ALICE, &agent.id),
        [auto("anthropic"), auto("github")]
    );
    assert!(
        fx.store
            .grants_of(ALICE, &agent.id)
            .unwrap()
            .iter()
            .all(|g| g.expires_at.is_none())
    );

    assert!(is_session_id(&session.id), "{}", session.id);
    assert_eq!(session.agent_id, agent.id);
    assert_eq!(session.pubkey, KEY_A);
    assert_eq!(session.uid, CHILD_UID);
    assert_eq!(session.expires_at, session.created_at + TTL_S);
    assert_eq!(
        (session.ended_at, session.ended_why.as_deref()),
        (None, None)
    );
    let found = fx.store.session(&session.id).unwrap();
    assert_eq!((found.session, found.agent), (session, agent.clone()));

    let row = fx.last_audit();
    assert_eq!(
        (
            row.action.as_str(),
            row.subject.as_str(),
            row.outcome.as_str()
        ),
        ("agent.pair", agent.id.as_str(), "ok")
    );
    assert_eq!(row.owner_uid, Some(ALICE));
    assert_eq!(
        row.detail,
        format!(
            "name=ci-bot scope=anthropic,github,slack auto_grants=2 child_uid={CHILD_UID} \
             request=0123abcd"
        )
    );
}

#[test]
fn pairing_a_taken_name_or_alias_is_already_exists_and_writes_nothing() {
    let mut fx = Fixture::new();
    fx.put(ALICE, "anthropic", "sk-ant-0123456789abcdef");
    fx.pair(ALICE, "ci-bot", &["anthropic"]);
    fx.store
        .link_agent(&actor(ALICE), ALICE, "ci-bot", LinkKind::Alias, "builder")
        .unwrap();
    let before = ["agents", "sessions", "grants", "audit"].map(|t| fx.count(t));
    for taken in ["ci-bot", "builder"] {
        let err = fx
            .store
            .pair_agent(
                &actor(ALICE),
                ALICE,
                taken,
                &names(&["anthropic"]),
                &issue(&KEY_B, TTL_S),
            )
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::AlreadyExists { what: "agent", name } if name == taken),
            "{err:?}"
        );
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    }
    assert_eq!(
        ["agents", "sessions", "grants", "audit"].map(|t| fx.count(t)),
        before
    );
    assert_eq!(fx.last_audit().action, "agent.link");
    // The name is only taken for its owner.
    let bobs = fx.pair(BOB, "ci-bot", &["anthropic"]);
    assert_eq!(bobs.agent.owner_uid, BOB);
    assert!(
        grant_names(&fx, BOB, "ci-bot").is_empty(),
        "Alice's credential is no grant for Bob's agent"
    );
}

#[test]
fn recovery_reactivates_a_revoked_agent_with_a_new_key_and_keeps_its_grants() {
    let mut fx = Fixture::new();
    fx.put(ALICE, "anthropic", "sk-ant-0123456789abcdef");
    let first = fx.pair(ALICE, "ci-bot", &["anthropic"]);
    let revoked = fx
        .store
        .revoke_agent(&actor(ALICE), ALICE, "ci-bot")
        .unwrap();
    assert_eq!(revoked.state, AgentState::Revoked);

    let AgentSession { session, agent } = rebind(&mut fx, &first.agent.id, true, &KEY_B);
    assert_eq!(agent.state, AgentState::Active);
    assert_eq!((agent.revoked_at, agent.revoked_by), (None, None));
    assert_eq!(agent.pubkey, Some(KEY_B));
    assert_eq!(agent.scope, ["anthropic"]);
    assert_eq!(grant_names(&fx, ALICE, "ci-bot"), [auto("anthropic")]);

    assert_ne!(session.id, first.session.id);
    assert_eq!((session.pubkey, session.uid), (KEY_B, CHILD_UID));
    assert_eq!(session.ended_why, None);
    // The old session ended when the agent was revoked and stays ended.
    let old = fx.store.session(&first.session.id).unwrap().session;
    assert!(old.ended_at.is_some());
    assert_eq!(old.ended_why.as_deref(), Some("agent revoked"));

    let row = fx.last_audit();
    assert_eq!(row.action, "agent.recover");
    assert!(
        row.detail.starts_with("sessions_ended=0 was=revoked "),
        "{}",
        row.detail
    );

    // The new session reads; the old one is refused as ended.
    let read = fx
        .store
        .agent_read(&actor(CHILD_UID), &session.id, "anthropic", false)
        .unwrap();
    assert!(matches!(read, AgentRead::Served(..)), "{read:?}");
    let err = fx
        .store
        .agent_read(&actor(CHILD_UID), &first.session.id, "anthropic", false)
        .unwrap_err();
    assert!(matches!(err, StoreError::SessionEnded { .. }), "{err:?}");
}

#[test]
fn recovery_of_an_active_agent_ends_its_open_sessions() {
    let mut fx = Fixture::new();
    let first = fx.pair(ALICE, "ci-bot", &[]);
    let second = rebind(&mut fx, "ci-bot", true, &KEY_B);
    let old = fx.store.session(&first.session.id).unwrap().session;
    assert!(old.ended_at.is_some());
    assert_eq!(old.ended_why.as_deref(), Some("recovered with a new key"));
    assert_eq!(second.session.ended_why, None);
    assert!(
        fx.last_audit()
            .detail
            .starts_with("sessions_ended=1 was=active ")
    );
}

#[test]
fn key_rotation_of_a_revoked_agent_is_revoked_and_changes_nothing() {
    let mut fx = Fixture::new();
    let first = fx.pair(ALICE, "ci-bot", &[]);
    fx.store
        .revoke_agent(&actor(ALICE), ALICE, "ci-bot")
        .unwrap();
    let before = ["sessions", "audit"].map(|t| fx.count(t));
    let err = fx
        .store
        .rebind_agent(&actor(ALICE), ALICE, "ci-bot", false, &issue(&KEY_B, TTL_S))
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Revoked { agent, at: Some(_), by: Some(ALICE) } if agent == "ci-bot"),
        "{err:?}"
    );
    assert_eq!(["sessions", "audit"].map(|t| fx.count(t)), before);
    let agent = fx.store.get_agent(ALICE, &first.agent.id).unwrap();
    assert_eq!(agent.state, AgentState::Revoked);
    assert_eq!(agent.pubkey, Some(KEY_A));
}

#[test]
fn key_rotation_ends_the_old_sessions_and_binds_the_new_key() {
    let mut fx = Fixture::new();
    fx.put(ALICE, "anthropic", "sk-ant-0123456789abcdef");
    let first = fx.pair(ALICE, "ci-bot", &["anthropic"]);
    let AgentSession { session, agent } = rebind(&mut fx, "ci-bot", false, &KEY_B);
    assert_eq!(agent.state, AgentState::Active);
    assert_eq!(agent.pubkey, Some(KEY_B));
    assert_eq!(session.pubkey, KEY_B);
    assert_eq!(session.ended_why, None);
    assert_eq!(grant_names(&fx, ALICE, "ci-bot"), [auto("anthropic")]);
    let old = fx.store.session(&first.session.id).unwrap().session;
    assert!(old.ended_at.is_some());
    assert_eq!(old.ended_why.as_deref(), Some("key rotated"));
    let row = fx.last_audit();
    assert_eq!(row.action, "agent.rotate_key");
    assert!(
        row.detail.starts_with("sessions_ended=1 was=active "),
        "{}",
        row.detail
    );
    let err = fx
        .store
        .agent_read(&actor(CHILD_UID), &first.session.id, "anthropic", false)
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::SessionEnded { why, .. } if why == "key rotated"),
        "{err:?}"
    );
}

#[test]
fn scope_change_drops_grants_outside_it_and_auto_grants_new_names() {
    let mut fx = Fixture::new();
    for name in ["anthropic", "github", "openai"] {
        fx.put(ALICE, name, "sk-0123456789abcdef");
    }
    let paired = fx.pair(ALICE, "ci-bot", &["anthropic", "github"]);
    fx.store
        .grant(
            &actor(ALICE),
            ALICE,
            "ci-bot",
            "anthropic",
            GrantMode::Confirm,
            None,
        )
        .unwrap();
    let agent = fx
        .store
        .change_scope(
            &actor(ALICE),
            ALICE,
            &paired.agent.id,
            &names(&["anthropic", "openai", "slack"]),
            "feedbeef",
        )
        .unwrap();
    assert_eq!(agent.scope, ["anthropic", "openai", "slack"]);
    assert_eq!(fx.store.get_agent(ALICE, "ci-bot").unwrap(), agent);
    // `anthropic` keeps its (confirm) grant, `github` lost its, `openai` got one, `slack`
    // is no credential.
    assert_eq!(
        grant_names(&fx, ALICE, "ci-bot"),
        [("anthropic".to_owned(), GrantMode::Confirm), auto("openai")]
    );
    let row = fx.last_audit();
    assert_eq!(
        (row.action.as_str(), row.subject.as_str()),
        ("agent.scope", paired.agent.id.as_str())
    );
    assert_eq!(
        row.detail,
        "scope=anthropic,openai,slack grants_added=1 grants_removed=1 request=feedbeef"
    );
    // The session outlives the scope change, and follows it.
    let err = fx
        .store
        .agent_read(&actor(CHILD_UID), &paired.session.id, "github", false)
        .unwrap_err();
    assert!(matches!(err, StoreError::NotGranted { .. }), "{err:?}");
}

#[test]
fn scope_change_of_a_revoked_agent_is_revoked() {
    let mut fx = Fixture::new();
    fx.pair(ALICE, "ci-bot", &["anthropic"]);
    fx.store
        .revoke_agent(&actor(ALICE), ALICE, "ci-bot")
        .unwrap();
    let err = fx
        .store
        .change_scope(&actor(ALICE), ALICE, "ci-bot", &names(&["github"]), "r")
        .unwrap_err();
    assert!(matches!(err, StoreError::Revoked { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Revoked);
    assert_eq!(
        fx.store.get_agent(ALICE, "ci-bot").unwrap().scope,
        ["anthropic"]
    );
}

#[test]
fn scope_change_of_another_owners_agent_is_not_found() {
    let mut fx = Fixture::new();
    let bobs = fx.pair(BOB, "ci-bot", &["anthropic"]);
    let err = fx
        .store
        .change_scope(&actor(ALICE), ALICE, &bobs.agent.id, &names(&["x"]), "r")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let err = fx
        .store
        .rebind_agent(
            &actor(ALICE),
            ALICE,
            &bobs.agent.id,
            true,
            &issue(&KEY_B, TTL_S),
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(fx.store.get_agent(BOB, &bobs.agent.id).unwrap(), bobs.agent);
}

#[test]
fn session_is_found_by_id_and_an_unknown_id_is_not_found() {
    let mut fx = Fixture::new();
    let paired = fx.pair(ALICE, "ci-bot", &[]);
    let found = fx.store.session(&paired.session.id).unwrap();
    assert_eq!(found, paired);
    let unknown = crate::store::ids::new_session_id().unwrap();
    for id in [unknown.as_str(), "", "not-a-session"] {
        let err = fx.store.session(id).unwrap_err();
        assert!(
            matches!(&err, StoreError::NotFound { what: "session", name } if name == id),
            "{err:?}"
        );
    }
}

#[test]
fn revoking_an_agent_ends_its_open_sessions() {
    let mut fx = Fixture::new();
    let first = fx.pair(ALICE, "ci-bot", &[]);
    let second = rebind(&mut fx, "ci-bot", false, &KEY_B);
    fx.store
        .revoke_agent(&actor(ALICE), ALICE, "ci-bot")
        .unwrap();
    let open = fx.store.session(&second.session.id).unwrap().session;
    assert!(open.ended_at.is_some());
    assert_eq!(open.ended_why.as_deref(), Some("agent revoked"));
    // A session that had already ended keeps its reason.
    let old = fx.store.session(&first.session.id).unwrap().session;
    assert_eq!(old.ended_why.as_deref(), Some("key rotated"));
}

#[test]
fn teardown_ends_sessions_too() {
    let mut fx = Fixture::new();
    let paired = fx.pair(ALICE, "ci-bot", &[]);
    fx.store
        .teardown_agent(&actor(ALICE), ALICE, "ci-bot")
        .unwrap();
    let s = fx.store.session(&paired.session.id).unwrap().session;
    assert_eq!(s.ended_why.as_deref(), Some("agent revoked"));
}

/// A v1 database is made from a fresh one by undoing V2 (schema.rs keeps its scripts
/// private, so this cannot start from the V1 script itself): data written before V2 must
/// survive the migration, and the V2 tables must work afterwards.
#[test]
fn v1_database_migrates_to_v2_keeping_its_agents_and_credentials() {
    let mut fx = Fixture::new();
    fx.put(ALICE, "anthropic", "sk-ant-0123456789abcdef");
    let old = fx
        .store
        .create_agent(
            &actor(ALICE),
            ALICE,
            "old-bot",
            &crate::store::AgentOptions {
                scope: names(&["anthropic"]),
                read_only: false,
            },
        )
        .unwrap();
    fx.raw()
        .execute_batch(
            "DROP TABLE runner_uids;
             DROP TABLE login_keys;
             ALTER TABLE grants DROP COLUMN until_logout;
             DROP TABLE usage;
             DROP TABLE sessions;
             ALTER TABLE agents DROP COLUMN pubkey;
             PRAGMA user_version = 1;",
        )
        .unwrap();
    let mut fx = fx.reopen().unwrap();
    assert_eq!(
        fx.store.stats().unwrap().schema_version,
        crate::store::SCHEMA_VERSION
    );
    let migrated = fx.store.get_agent(ALICE, "old-bot").unwrap();
    assert_eq!(migrated, old);
    assert_eq!(migrated.pubkey, None);
    assert_eq!(
        fx.read(ALICE, "anthropic").unwrap(),
        b"sk-ant-0123456789abcdef"
    );
    // The new tables work: an agent created before V2 can be recovered onto a key.
    let AgentSession { session, agent } = rebind(&mut fx, "old-bot", true, &KEY_A);
    assert_eq!(agent.pubkey, Some(KEY_A));
    fx.store
        .grant(
            &actor(ALICE),
            ALICE,
            "old-bot",
            "anthropic",
            GrantMode::Auto,
            None,
        )
        .unwrap();
    let read = fx
        .store
        .agent_read(&actor(CHILD_UID), &session.id, "anthropic", false)
        .unwrap();
    assert!(matches!(read, AgentRead::Served(..)), "{read:?}");
    fx.store.flush_audit().unwrap();
    assert_eq!(fx.store.usage(ALICE, Some("old-bot")).unwrap()[0].reads, 1);
    assert_eq!(fx.store.audit_verify().unwrap().first_problem, None);
}
