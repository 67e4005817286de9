//! Tests of [`super`] (grants.rs): agents' reads through their sessions, every refusal
//! (audited and counted), grant modes, and usage, on real SQLite in a temp dir with a real
//! vault.

use super::*;
use crate::store::testutil::{ALICE, BOB, CHILD_UID, Fixture, KEY_B, TTL_S, actor, issue};
use crate::store::{AuditRow, ErrorKind};

const ANTHROPIC: &str = "sk-ant-0123456789abcdef";
const GITHUB: &str = "ghp_0123456789abcdef";

/// The agent's read of `credential` through `session`: the secret bytes, or the error.
fn read(fx: &mut Fixture, session: &str, credential: &str) -> Result<Vec<u8>, StoreError> {
    match fx
        .store
        .agent_read(&actor(CHILD_UID), session, credential, false)?
    {
        AgentRead::Served(meta, secret) => {
            assert_eq!(meta.name, credential);
            Ok(secret.expose_secret().to_vec())
        }
        AgentRead::NeedsConfirmation { .. } => panic!("{credential}: unexpected confirm"),
    }
}

fn usage_of(fx: &mut Fixture, owner: u32, agent: &str) -> Vec<(String, u64, u64)> {
    fx.store
        .usage(owner, Some(agent))
        .unwrap()
        .into_iter()
        .map(|u| (u.credential, u.reads, u.denials))
        .collect()
}

fn line(credential: &str, reads: u64, denials: u64) -> (String, u64, u64) {
    (credential.to_owned(), reads, denials)
}

fn grant(fx: &mut Fixture, agent: &str, credential: &str, mode: GrantMode, expires: Option<i64>) {
    fx.store
        .grant(&actor(ALICE), ALICE, agent, credential, mode, expires)
        .unwrap();
}

/// Asserts that the newest audit row is the denial of `agent_id`'s read of `credential`
/// for `why`, and that it was counted.
fn assert_denial_recorded(fx: &mut Fixture, agent_id: &str, credential: &str, why: &str) {
    let row: AuditRow = fx.last_audit();
    assert_eq!(
        (
            row.action.as_str(),
            row.subject.as_str(),
            row.outcome.as_str()
        ),
        ("credential.read", credential, "denied")
    );
    assert_eq!(row.owner_uid, Some(ALICE));
    assert_eq!(row.actor_uid, CHILD_UID);
    assert_eq!(row.detail, format!("agent={agent_id} {why}"));
    let counted = usage_of(fx, ALICE, agent_id)
        .into_iter()
        .find(|(c, ..)| c == credential);
    assert_eq!(counted, Some(line(credential, 0, 1)));
}

#[test]
fn auto_grant_serves_the_secret_and_counts_the_read() {
    let mut fx = Fixture::new();
    fx.put(ALICE, "anthropic", ANTHROPIC);
    let paired = fx.pair(ALICE, "ci-bot", &["anthropic"]);
    let got = read(&mut fx, &paired.session.id, "anthropic").unwrap();
    assert_eq!(got, ANTHROPIC.as_bytes());
    // The read's row and counter are queued and written together; `usage` writes the
    // queue first, so the read just served is counted.
    assert_eq!(fx.store.pending_audit(), 1);
    let usage = fx.store.usage(ALICE, Some("ci-bot")).unwrap();
    assert_eq!(fx.store.pending_audit(), 0);
    assert_eq!(usage.len(), 1);
    let u = &usage[0];
    assert_eq!(
        (
            u.agent_id.as_str(),
            u.agent_name.as_str(),
            u.credential.as_str()
        ),
        (paired.agent.id.as_str(), "ci-bot", "anthropic")
    );
    assert_eq!((u.reads, u.denials), (1, 0));
    assert!(u.last_use.is_some_and(|t| t >= paired.session.created_at));
    let row = fx.last_audit();
    assert_eq!(
        (
            row.action.as_str(),
            row.subject.as_str(),
            row.outcome.as_str()
        ),
        ("credential.read", "anthropic", "ok")
    );
    assert_eq!(row.actor_uid, CHILD_UID);
    assert!(
        row.detail
            .starts_with(&format!("agent={} id=", paired.agent.id)),
        "{}",
        row.detail
    );
    // Reads keep counting.
    read(&mut fx, &paired.session.id, "anthropic").unwrap();
    fx.store.flush_audit().unwrap();
    assert_eq!(
        usage_of(&mut fx, ALICE, "ci-bot"),
        [line("anthropic", 2, 0)]
    );
}

#[test]
fn credential_outside_the_scope_is_not_granted_and_the_denial_is_audited_and_counted() {
    let mut fx = Fixture::new();
    fx.put(ALICE, "anthropic", ANTHROPIC);
    fx.put(ALICE, "github", GITHUB);
    let paired = fx.pair(ALICE, "ci-bot", &["anthropic"]);
    let err = read(&mut fx, &paired.session.id, "github").unwrap_err();
    assert!(
        matches!(&err, StoreError::NotGranted { agent, credential, why: "it is not in the agent's scope" }
            if agent == "ci-bot" && credential == "github"),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::Revoked);
    assert_denial_recorded(&mut fx, &paired.agent.id, "github", "not in scope");
    // A name that is no credential at all is refused the same way (no existence oracle).
    let err = read(&mut fx, &paired.session.id, "nonexistent").unwrap_err();
    assert!(matches!(err, StoreError::NotGranted { .. }), "{err:?}");
}

#[test]
fn scope_entry_without_a_grant_is_not_granted() {
    let mut fx = Fixture::new();
    // Stored after pairing: in scope, but pairing had nothing to grant.
    let paired = fx.pair(ALICE, "ci-bot", &["anthropic"]);
    fx.put(ALICE, "anthropic", ANTHROPIC);
    let err = read(&mut fx, &paired.session.id, "anthropic").unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::NotGranted {
                why: "the owner has not granted it",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::Revoked);
    assert_denial_recorded(&mut fx, &paired.agent.id, "anthropic", "no grant");
}

#[test]
fn expired_grant_is_grant_expired() {
    let mut fx = Fixture::new();
    fx.put(ALICE, "anthropic", ANTHROPIC);
    let paired = fx.pair(ALICE, "ci-bot", &["anthropic"]);
    let at = now_s() - 1;
    grant(&mut fx, "ci-bot", "anthropic", GrantMode::Auto, Some(at));
    let err = read(&mut fx, &paired.session.id, "anthropic").unwrap_err();
    assert!(
        matches!(&err, StoreError::GrantExpired { agent, credential, at: t }
            if agent == "ci-bot" && credential == "anthropic" && *t == at),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::Expired);
    assert_denial_recorded(&mut fx, &paired.agent.id, "anthropic", "grant expired");
    // A grant that has not expired yet serves.
    grant(
        &mut fx,
        "ci-bot",
        "anthropic",
        GrantMode::Auto,
        Some(now_s() + 3600),
    );
    assert_eq!(
        read(&mut fx, &paired.session.id, "anthropic").unwrap(),
        ANTHROPIC.as_bytes()
    );
}

#[test]
fn expired_session_is_session_expired() {
    for ttl_s in [0, -1] {
        let mut fx = Fixture::new();
        fx.put(ALICE, "anthropic", ANTHROPIC);
        let paired = fx.pair_with(ALICE, "ci-bot", &["anthropic"], ttl_s);
        let err = read(&mut fx, &paired.session.id, "anthropic").unwrap_err();
        assert!(
            matches!(&err, StoreError::SessionExpired { agent, at }
                if agent == "ci-bot" && *at == paired.session.expires_at),
            "ttl {ttl_s}: {err:?}"
        );
        assert_eq!(err.kind(), ErrorKind::Expired);
        assert_denial_recorded(&mut fx, &paired.agent.id, "anthropic", "session expired");
    }
}

#[test]
fn revoked_agent_is_refused_naming_when_and_by_whom() {
    let mut fx = Fixture::new();
    fx.put(ALICE, "anthropic", ANTHROPIC);
    let paired = fx.pair(ALICE, "ci-bot", &["anthropic"]);
    let revoked = fx
        .store
        .revoke_agent(&actor(ALICE), ALICE, "ci-bot")
        .unwrap();
    let err = read(&mut fx, &paired.session.id, "anthropic").unwrap_err();
    assert!(
        matches!(&err, StoreError::Revoked { agent, at, by: Some(ALICE) }
            if agent == "ci-bot" && *at == revoked.revoked_at && at.is_some()),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::Revoked);
    let text = err.to_string();
    assert!(
        text.contains("'ci-bot' was revoked at ") && text.ends_with(&format!(" by uid {ALICE}")),
        "{text}"
    );
    assert_denial_recorded(&mut fx, &paired.agent.id, "anthropic", "agent revoked");
}

#[test]
fn ended_session_is_session_ended_and_the_new_one_reads() {
    let mut fx = Fixture::new();
    fx.put(ALICE, "anthropic", ANTHROPIC);
    let paired = fx.pair(ALICE, "ci-bot", &["anthropic"]);
    let rotated = fx
        .store
        .rebind_agent(&actor(ALICE), ALICE, "ci-bot", false, &issue(&KEY_B, TTL_S))
        .unwrap();
    let err = read(&mut fx, &paired.session.id, "anthropic").unwrap_err();
    assert!(
        matches!(&err, StoreError::SessionEnded { agent, why }
            if agent == "ci-bot" && why == "key rotated"),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::Revoked);
    assert_denial_recorded(&mut fx, &paired.agent.id, "anthropic", "session ended");
    assert_eq!(
        read(&mut fx, &rotated.session.id, "anthropic").unwrap(),
        ANTHROPIC.as_bytes()
    );
}

#[test]
fn unknown_session_is_not_found_and_counts_nothing() {
    let mut fx = Fixture::new();
    fx.put(ALICE, "anthropic", ANTHROPIC);
    fx.pair(ALICE, "ci-bot", &["anthropic"]);
    let unknown = crate::store::ids::new_session_id().unwrap();
    let err = read(&mut fx, &unknown, "anthropic").unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::NotFound {
                what: "session",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(usage_of(&mut fx, ALICE, "ci-bot").is_empty());
}

#[test]
fn expired_credential_is_refused_through_a_grant_and_counted() {
    let mut fx = Fixture::new();
    let s = fx.secret(ANTHROPIC.as_bytes());
    let opts = crate::store::PutOptions {
        expires_at: Some(now_s() - 1),
        ..crate::store::testutil::opts(false)
    };
    fx.store
        .put_credential(&actor(ALICE), ALICE, "anthropic", &s, &opts)
        .unwrap();
    let paired = fx.pair(ALICE, "ci-bot", &["anthropic"]);
    let err = read(&mut fx, &paired.session.id, "anthropic").unwrap_err();
    assert!(matches!(err, StoreError::Expired { .. }), "{err:?}");
    assert_denial_recorded(&mut fx, &paired.agent.id, "anthropic", "expired");
}

#[test]
fn confirm_grant_needs_the_owners_approval_for_each_read() {
    let mut fx = Fixture::new();
    fx.put(ALICE, "anthropic", ANTHROPIC);
    let paired = fx.pair(ALICE, "ci-bot", &["anthropic"]);
    grant(&mut fx, "ci-bot", "anthropic", GrantMode::Confirm, None);
    let audit_rows = fx.count("audit");
    let sid = paired.session.id.as_str();
    for _ in 0..2 {
        let asked = fx
            .store
            .agent_read(&actor(CHILD_UID), sid, "anthropic", false)
            .unwrap();
        match asked {
            AgentRead::NeedsConfirmation {
                agent_id,
                agent_name,
                owner,
            } => {
                assert_eq!(
                    (agent_id.as_str(), agent_name.as_str(), owner),
                    (paired.agent.id.as_str(), "ci-bot", ALICE)
                );
            }
            other => panic!("served without approval: {other:?}"),
        }
    }
    // Asking is no read: nothing recorded, nothing counted.
    assert_eq!(
        (fx.count("audit"), fx.store.pending_audit()),
        (audit_rows, 0)
    );
    let approved = fx
        .store
        .agent_read(&actor(CHILD_UID), sid, "anthropic", true)
        .unwrap();
    let AgentRead::Served(_, secret) = approved else {
        panic!("approved read not served: {approved:?}");
    };
    assert_eq!(secret.expose_secret(), ANTHROPIC.as_bytes());
    fx.store.flush_audit().unwrap();
    assert_eq!(
        usage_of(&mut fx, ALICE, "ci-bot"),
        [line("anthropic", 1, 0)]
    );
    // An approval that came to nothing is a counted denial.
    fx.store
        .agent_read_refused(&actor(CHILD_UID), sid, "anthropic", "owner denied")
        .unwrap();
    let row = fx.last_audit();
    assert_eq!(
        (row.action.as_str(), row.outcome.as_str()),
        ("credential.read", "denied")
    );
    assert_eq!(
        row.detail,
        format!("agent={} owner denied", paired.agent.id)
    );
    assert_eq!(
        usage_of(&mut fx, ALICE, "ci-bot"),
        [line("anthropic", 1, 1)]
    );
}

/// The grant is deleted in the transaction that records the read; two concurrent reads
/// cannot be driven here (the store is `&mut`), so the race guard in `read_as` (a delete
/// that finds no row refuses) is only reached through the daemon.
#[test]
fn once_grant_serves_exactly_one_read() {
    let mut fx = Fixture::new();
    fx.put(ALICE, "anthropic", ANTHROPIC);
    let paired = fx.pair(ALICE, "ci-bot", &["anthropic"]);
    grant(&mut fx, "ci-bot", "anthropic", GrantMode::Once, None);
    assert_eq!(
        read(&mut fx, &paired.session.id, "anthropic").unwrap(),
        ANTHROPIC.as_bytes()
    );
    // Committed before the secret was handed out, not queued.
    assert_eq!(fx.store.pending_audit(), 0);
    assert!(fx.store.grants_of(ALICE, "ci-bot").unwrap().is_empty());
    let row = fx.last_audit();
    assert_eq!(
        (row.action.as_str(), row.outcome.as_str()),
        ("credential.read", "ok")
    );
    assert!(row.detail.ends_with(" grant=once used"), "{}", row.detail);
    assert_eq!(
        usage_of(&mut fx, ALICE, "ci-bot"),
        [line("anthropic", 1, 0)]
    );

    let err = read(&mut fx, &paired.session.id, "anthropic").unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::NotGranted {
                why: "the owner has not granted it",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        usage_of(&mut fx, ALICE, "ci-bot"),
        [line("anthropic", 1, 1)]
    );
    // The credential itself is untouched.
    assert_eq!(fx.read(ALICE, "anthropic").unwrap(), ANTHROPIC.as_bytes());
}

#[test]
fn granting_a_missing_credential_is_not_found() {
    let mut fx = Fixture::new();
    fx.put(BOB, "anthropic", ANTHROPIC);
    fx.pair(ALICE, "ci-bot", &[]);
    let audit_rows = fx.count("audit");
    // Neither a name nobody has, nor another owner's credential.
    for name in ["nope", "anthropic"] {
        let err = fx
            .store
            .grant(&actor(ALICE), ALICE, "ci-bot", name, GrantMode::Auto, None)
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::NotFound { what: "credential", name: n } if n == name),
            "{err:?}"
        );
    }
    assert_eq!(fx.count("grants"), 0);
    assert_eq!(fx.count("audit"), audit_rows);
    assert!(
        fx.store
            .get_agent(ALICE, "ci-bot")
            .unwrap()
            .scope
            .is_empty()
    );
}

#[test]
fn grant_adds_the_credential_to_the_scope_and_replaces_the_mode() {
    let mut fx = Fixture::new();
    fx.put(ALICE, "github", GITHUB);
    let paired = fx.pair(ALICE, "ci-bot", &["anthropic"]);
    let g = fx
        .store
        .grant(
            &actor(ALICE),
            ALICE,
            "ci-bot",
            "github",
            GrantMode::Auto,
            None,
        )
        .unwrap();
    assert_eq!(
        (
            g.agent_id.as_str(),
            g.credential.as_str(),
            g.mode,
            g.expires_at
        ),
        (paired.agent.id.as_str(), "github", GrantMode::Auto, None)
    );
    assert_eq!(
        fx.store.get_agent(ALICE, "ci-bot").unwrap().scope,
        ["anthropic", "github"]
    );
    assert_eq!(
        read(&mut fx, &paired.session.id, "github").unwrap(),
        GITHUB.as_bytes()
    );

    let until = now_s() + 600;
    grant(
        &mut fx,
        &paired.agent.id,
        "github",
        GrantMode::Confirm,
        Some(until),
    );
    let grants = fx.store.grants_of(ALICE, "ci-bot").unwrap();
    assert_eq!(grants.len(), 1);
    assert_eq!(
        (grants[0].mode, grants[0].expires_at),
        (GrantMode::Confirm, Some(until))
    );
    assert_eq!(
        fx.store.get_agent(ALICE, "ci-bot").unwrap().scope,
        ["anthropic", "github"],
        "no duplicate scope entry"
    );
    let row = fx.last_audit();
    assert_eq!(
        (row.action.as_str(), row.subject.as_str()),
        ("grant.add", format!("{}/github", paired.agent.id).as_str())
    );
    assert_eq!(row.detail, format!("mode=confirm expires={until}"));
    let asked = fx
        .store
        .agent_read(&actor(CHILD_UID), &paired.session.id, "github", false)
        .unwrap();
    assert!(
        matches!(asked, AgentRead::NeedsConfirmation { .. }),
        "{asked:?}"
    );
}

#[test]
fn grant_to_a_revoked_agent_is_revoked() {
    let mut fx = Fixture::new();
    fx.put(ALICE, "github", GITHUB);
    fx.pair(ALICE, "ci-bot", &[]);
    fx.store
        .revoke_agent(&actor(ALICE), ALICE, "ci-bot")
        .unwrap();
    let err = fx
        .store
        .grant(
            &actor(ALICE),
            ALICE,
            "ci-bot",
            "github",
            GrantMode::Auto,
            None,
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::Revoked { .. }), "{err:?}");
    assert_eq!(fx.count("grants"), 0);
}

#[test]
fn ungrant_removes_the_grant_and_again_is_not_found() {
    let mut fx = Fixture::new();
    fx.put(ALICE, "anthropic", ANTHROPIC);
    fx.put(ALICE, "github", GITHUB);
    let paired = fx.pair(ALICE, "ci-bot", &["anthropic", "github"]);
    let listed: Vec<String> = fx
        .store
        .grants_of(ALICE, &paired.agent.id)
        .unwrap()
        .into_iter()
        .map(|g| g.credential)
        .collect();
    assert_eq!(listed, ["anthropic", "github"]);

    fx.store
        .ungrant(&actor(ALICE), ALICE, "ci-bot", "anthropic")
        .unwrap();
    let row = fx.last_audit();
    assert_eq!(
        (row.action.as_str(), row.subject.as_str()),
        (
            "grant.remove",
            format!("{}/anthropic", paired.agent.id).as_str()
        )
    );
    let left: Vec<String> = fx
        .store
        .grants_of(ALICE, "ci-bot")
        .unwrap()
        .into_iter()
        .map(|g| g.credential)
        .collect();
    assert_eq!(left, ["github"]);
    let err = read(&mut fx, &paired.session.id, "anthropic").unwrap_err();
    assert!(matches!(err, StoreError::NotGranted { .. }), "{err:?}");

    let err = fx
        .store
        .ungrant(&actor(ALICE), ALICE, "ci-bot", "anthropic")
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { what: "grant", name } if name == "ci-bot/anthropic"),
        "{err:?}"
    );
}

#[test]
fn usage_lists_one_agent_or_all_of_an_owners_and_hides_other_owners() {
    let mut fx = Fixture::new();
    fx.put(ALICE, "anthropic", ANTHROPIC);
    fx.put(BOB, "anthropic", ANTHROPIC);
    let a = fx.pair(ALICE, "reviewer", &["anthropic"]);
    let b = fx.pair(ALICE, "ci-bot", &["anthropic"]);
    let bobs = fx.pair(BOB, "bobs-bot", &["anthropic"]);
    for sid in [
        &a.session.id,
        &b.session.id,
        &b.session.id,
        &bobs.session.id,
    ] {
        read(&mut fx, sid, "anthropic").unwrap();
    }
    read(&mut fx, &a.session.id, "github").unwrap_err();
    fx.store.flush_audit().unwrap();

    let all: Vec<(String, String, u64, u64)> = fx
        .store
        .usage(ALICE, None)
        .unwrap()
        .into_iter()
        .map(|u| (u.agent_name, u.credential, u.reads, u.denials))
        .collect();
    let row = |agent: &str, cred: &str, r, d| (agent.to_owned(), cred.to_owned(), r, d);
    assert_eq!(
        all,
        [
            row("ci-bot", "anthropic", 2, 0),
            row("reviewer", "anthropic", 1, 0),
            row("reviewer", "github", 0, 1),
        ]
    );
    assert_eq!(
        usage_of(&mut fx, ALICE, &b.agent.id),
        [line("anthropic", 2, 0)]
    );
    assert_eq!(
        usage_of(&mut fx, BOB, "bobs-bot"),
        [line("anthropic", 1, 0)]
    );
    for ident in [bobs.agent.id.as_str(), "bobs-bot"] {
        let err = fx.store.usage(ALICE, Some(ident)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{ident}");
    }
}

#[test]
fn agents_read_only_their_own_credentials() {
    let mut fx = Fixture::new();
    fx.put(ALICE, "anthropic", ANTHROPIC);
    fx.put(ALICE, "github", GITHUB);
    let a = fx.pair(ALICE, "agent-a", &["anthropic"]);
    let b = fx.pair(ALICE, "agent-b", &["github"]);
    assert_eq!(
        read(&mut fx, &a.session.id, "anthropic").unwrap(),
        ANTHROPIC.as_bytes()
    );
    assert_eq!(
        read(&mut fx, &b.session.id, "github").unwrap(),
        GITHUB.as_bytes()
    );
    let err = read(&mut fx, &a.session.id, "github").unwrap_err();
    assert!(matches!(err, StoreError::NotGranted { .. }), "{err:?}");
    assert_denial_recorded(&mut fx, &a.agent.id, "github", "not in scope");
    let err = read(&mut fx, &b.session.id, "anthropic").unwrap_err();
    assert!(matches!(err, StoreError::NotGranted { .. }), "{err:?}");
    assert_denial_recorded(&mut fx, &b.agent.id, "anthropic", "not in scope");
    // Revoking one agent leaves the other reading.
    fx.store
        .revoke_agent(&actor(ALICE), ALICE, "agent-a")
        .unwrap();
    read(&mut fx, &a.session.id, "anthropic").unwrap_err();
    assert_eq!(
        read(&mut fx, &b.session.id, "github").unwrap(),
        GITHUB.as_bytes()
    );
}

#[test]
fn another_owners_agent_cannot_read_a_credential_of_the_same_name() {
    let mut fx = Fixture::new();
    fx.put(ALICE, "anthropic", ANTHROPIC);
    let bobs = fx.pair(BOB, "bobs-bot", &["anthropic"]);
    assert!(fx.store.grants_of(BOB, "bobs-bot").unwrap().is_empty());
    let err = read(&mut fx, &bobs.session.id, "anthropic").unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::NotGranted {
                why: "the owner has not granted it",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn deleting_a_credential_deletes_its_grants() {
    let mut fx = Fixture::new();
    fx.put(ALICE, "anthropic", ANTHROPIC);
    fx.put(ALICE, "github", GITHUB);
    let a = fx.pair(ALICE, "agent-a", &["anthropic", "github"]);
    fx.pair(ALICE, "agent-b", &["anthropic"]);
    assert_eq!(fx.count("grants"), 3);
    fx.store
        .delete_credential(&actor(ALICE), ALICE, "anthropic")
        .unwrap();
    assert_eq!(fx.count("grants"), 1);
    assert!(fx.store.grants_of(ALICE, "agent-b").unwrap().is_empty());
    let row = fx.last_audit();
    assert_eq!(row.action, "credential.delete");
    assert!(row.detail.ends_with(" grants=2"), "{}", row.detail);
    // A new credential of the same name is not reached through the old grant.
    fx.put(ALICE, "anthropic", "sk-ant-a-new-key-of-the-same-name");
    let err = read(&mut fx, &a.session.id, "anthropic").unwrap_err();
    assert!(matches!(err, StoreError::NotGranted { .. }), "{err:?}");
    assert_eq!(
        read(&mut fx, &a.session.id, "github").unwrap(),
        GITHUB.as_bytes()
    );
}

#[test]
fn once_grant_of_a_single_use_credential_serves_it_and_consumes_both() {
    let mut fx = Fixture::new();
    fx.put(ALICE, "anthropic", ANTHROPIC);
    // No API marks a credential single-use yet; the column is what the read obeys.
    fx.raw()
        .execute_batch("UPDATE credentials SET single_use = 1")
        .unwrap();
    let paired = fx.pair(ALICE, "ci-bot", &["anthropic"]);
    grant(&mut fx, "ci-bot", "anthropic", GrantMode::Once, None);
    assert_eq!(
        read(&mut fx, &paired.session.id, "anthropic").unwrap(),
        ANTHROPIC.as_bytes()
    );
    assert_eq!((fx.count("credentials"), fx.count("grants")), (0, 0));
    let row = fx.last_audit();
    assert_eq!(
        (row.action.as_str(), row.outcome.as_str()),
        ("credential.read", "ok")
    );
    assert!(
        row.detail.ends_with(" consumed grant=once used"),
        "{}",
        row.detail
    );
    assert_eq!(
        usage_of(&mut fx, ALICE, "ci-bot"),
        [line("anthropic", 1, 0)]
    );
}
