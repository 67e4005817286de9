//! Tests of [`super`] (agents.rs): real SQLite in a temp dir, real vault.

use super::*;
use crate::store::ErrorKind;
use crate::store::testutil::{ALICE, BOB, Fixture, actor};

fn create(fx: &mut Fixture, owner: u32, name: &str) -> AgentRecord {
    let opts = AgentOptions {
        scope: vec!["anthropic".into(), "github".into(), "anthropic".into()],
        read_only: true,
    };
    fx.store
        .create_agent(&actor(owner), owner, name, &opts)
        .unwrap()
}

#[test]
fn created_agent_is_listed_and_found_by_id_or_name() {
    let mut fx = Fixture::new();
    let a = create(&mut fx, ALICE, "ci-bot");
    assert!(a.id.starts_with("agt_") && a.id.len() == 30, "{}", a.id);
    assert_eq!(a.state, AgentState::Active);
    assert_eq!(a.scope, ["anthropic", "github"]);
    assert!(a.read_only);
    assert_eq!((a.revoked_at, a.revoked_by), (None, None));
    create(&mut fx, ALICE, "reviewer");
    let names: Vec<String> = fx
        .store
        .list_agents(ALICE)
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["ci-bot", "reviewer"]);
    assert_eq!(fx.store.get_agent(ALICE, &a.id).unwrap(), a);
    assert_eq!(fx.store.get_agent(ALICE, "ci-bot").unwrap(), a);
    let row = fx.store.audit_list(Some(ALICE), 0, 100).unwrap().remove(0);
    assert_eq!(
        (row.action.as_str(), row.subject.as_str()),
        ("agent.create", a.id.as_str())
    );
}

#[test]
fn agent_name_taken_for_the_owner_is_already_exists() {
    let mut fx = Fixture::new();
    create(&mut fx, ALICE, "ci-bot");
    let err = fx
        .store
        .create_agent(&actor(ALICE), ALICE, "ci-bot", &AgentOptions::default())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    create(&mut fx, BOB, "ci-bot");
}

#[test]
fn agent_resolves_by_id_name_alias_and_email() {
    let mut fx = Fixture::new();
    let a = create(&mut fx, ALICE, "ci-bot");
    let al = actor(ALICE);
    fx.store
        .link_agent(&al, ALICE, "ci-bot", LinkKind::Alias, "builder")
        .unwrap();
    let linked = fx
        .store
        .link_agent(&al, ALICE, &a.id, LinkKind::Email, "CI@Example.org")
        .unwrap();
    assert_eq!(linked.aliases, ["builder"]);
    assert_eq!(linked.emails, ["ci@example.org"]);
    for ident in [
        a.id.as_str(),
        "ci-bot",
        "builder",
        "ci@example.org",
        "Ci@EXAMPLE.org",
    ] {
        assert_eq!(
            fx.store.resolve_agent(ALICE, ident).unwrap(),
            a.id,
            "{ident}"
        );
    }
    assert_eq!(
        fx.store.resolve_agent(ALICE, "nobody").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(fx.store.list_agents(ALICE).unwrap()[0].aliases, ["builder"]);
}

#[test]
fn linking_the_same_value_again_is_a_no_op() {
    let mut fx = Fixture::new();
    create(&mut fx, ALICE, "ci-bot");
    let al = actor(ALICE);
    for _ in 0..2 {
        let r = fx
            .store
            .link_agent(&al, ALICE, "ci-bot", LinkKind::Alias, "builder")
            .unwrap();
        assert_eq!(r.aliases, ["builder"]);
    }
}

#[test]
fn link_held_by_another_agent_is_already_exists() {
    let mut fx = Fixture::new();
    create(&mut fx, ALICE, "ci-bot");
    create(&mut fx, ALICE, "reviewer");
    let al = actor(ALICE);
    fx.store
        .link_agent(&al, ALICE, "ci-bot", LinkKind::Email, "bot@example.org")
        .unwrap();
    let err = fx
        .store
        .link_agent(&al, ALICE, "reviewer", LinkKind::Email, "bot@example.org")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    // An alias may not shadow another agent's name, nor a name an existing alias.
    let err = fx
        .store
        .link_agent(&al, ALICE, "reviewer", LinkKind::Alias, "ci-bot")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    fx.store
        .link_agent(&al, ALICE, "reviewer", LinkKind::Alias, "rev")
        .unwrap();
    let err = fx
        .store
        .create_agent(&al, ALICE, "rev", &AgentOptions::default())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
}

#[test]
fn revoke_is_idempotent_but_audited_each_time() {
    let mut fx = Fixture::new();
    let a = create(&mut fx, ALICE, "ci-bot");
    let first = fx
        .store
        .revoke_agent(&actor(ALICE), ALICE, "ci-bot")
        .unwrap();
    assert_eq!(first.state, AgentState::Revoked);
    assert_eq!(first.revoked_by, Some(ALICE));
    assert!(first.revoked_at.is_some());
    let second = fx.store.revoke_agent(&actor(0), ALICE, &a.id).unwrap();
    assert_eq!(second, first, "no second state change");
    let details: Vec<String> = fx
        .store
        .audit_list(Some(ALICE), 0, 100)
        .unwrap()
        .into_iter()
        .filter(|r| r.action == "agent.revoke")
        .map(|r| r.detail)
        .collect();
    assert_eq!(details, ["revoked", "already revoked"]);
}

#[test]
fn revoked_agent_cannot_be_linked() {
    let mut fx = Fixture::new();
    create(&mut fx, ALICE, "ci-bot");
    fx.store
        .revoke_agent(&actor(ALICE), ALICE, "ci-bot")
        .unwrap();
    let err = fx
        .store
        .link_agent(&actor(ALICE), ALICE, "ci-bot", LinkKind::Alias, "x")
        .unwrap_err();
    assert!(matches!(err, StoreError::Revoked { .. }), "{err:?}");
}

#[test]
fn teardown_revokes_and_drops_grants_and_links_but_keeps_the_row() {
    let mut fx = Fixture::new();
    let a = create(&mut fx, ALICE, "ci-bot");
    fx.store
        .link_agent(&actor(ALICE), ALICE, "ci-bot", LinkKind::Alias, "builder")
        .unwrap();
    let cred = fx.put(ALICE, "anthropic", "sk-ant-0123456789abc").meta().id;
    fx.raw().execute(
        "INSERT INTO grants (agent_id, credential_id, mode, created_at) VALUES (?1, ?2, 'auto', 0)",
        params![a.id, cred],
    )
    .unwrap();
    let t = fx
        .store
        .teardown_agent(&actor(ALICE), ALICE, "ci-bot")
        .unwrap();
    assert_eq!(t.state, AgentState::Revoked);
    assert!(t.aliases.is_empty());
    let grants: i64 = fx
        .raw()
        .query_row("SELECT count(*) FROM grants", [], |r| r.get(0))
        .unwrap();
    assert_eq!(grants, 0);
    assert_eq!(
        fx.store.get_agent(ALICE, &a.id).unwrap().state,
        AgentState::Revoked
    );
    assert_eq!(
        fx.store.resolve_agent(ALICE, "builder").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let row = fx
        .store
        .audit_list(Some(ALICE), 0, 100)
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(row.action, "agent.teardown");
    assert!(
        row.detail.contains("grants_removed=1 links_removed=1"),
        "{}",
        row.detail
    );
}

#[test]
fn another_owners_agent_is_not_found_by_id_name_or_alias() {
    let mut fx = Fixture::new();
    let bobs = create(&mut fx, BOB, "bots-bot");
    fx.store
        .link_agent(&actor(BOB), BOB, "bots-bot", LinkKind::Alias, "bobby")
        .unwrap();
    for ident in [bobs.id.as_str(), "bots-bot", "bobby"] {
        assert_eq!(
            fx.store
                .get_agent(ALICE, ident)
                .map(|_| ())
                .unwrap_err()
                .kind(),
            ErrorKind::NotFound,
            "{ident}"
        );
        assert_eq!(
            fx.store.resolve_agent(ALICE, ident).unwrap_err().kind(),
            ErrorKind::NotFound
        );
    }
    let err = fx
        .store
        .revoke_agent(&actor(ALICE), ALICE, &bobs.id)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        fx.store.get_agent(BOB, &bobs.id).unwrap().state,
        AgentState::Active
    );
}

#[test]
fn scope_round_trips_without_duplicates() {
    let scope = vec!["a".to_owned(), "b".to_owned(), "a".to_owned()];
    let enc = encode_scope(&scope).unwrap();
    assert_eq!(enc, "a,b");
    assert_eq!(decode_scope(&enc), ["a", "b"]);
    assert!(decode_scope("").is_empty());
    assert!(encode_scope(&["a,b".to_owned()]).is_err());
}
