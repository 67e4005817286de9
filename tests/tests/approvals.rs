//! Auth requests end to end over the real bus: open, fetch, approve, deny, await for every
//! type; single use, expiry, ownership, no pair-code oracle, signed decisions the child
//! verifies; agent sessions, grants at read time, recovery and revocation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::time::Duration;

use agentkeys_tests::{Daemon, DaemonOpts, EVENT_TIMEOUT};
use agentkeysd::api::dict::{self, Dict};
use agentkeysd::api::proxies::{AgentsProxy, ApprovalsProxy, CredentialsProxy};
use agentkeysd::api::{ErrorKind, agent};
use agentkeysd::approvals::{
    DecisionFields, Details, HighValueRelease, KeyRotate, Nonce, Pair, Recover, RequestId,
    RequestType, ScopeChange, encode, public_key_of, verify,
};
use futures_util::StreamExt;
use zbus::Variant;

/// A daemon that approves without PAM (the PAM path has its own tests below).
fn daemon(extra: &str) -> Daemon {
    Daemon::start_with(DaemonOpts {
        config: format!("[approvals]\nauthenticate = \"none\"\n{extra}"),
        ..Default::default()
    })
}

/// The child's side of a request: its key and its canonical details.
struct Child {
    seed: [u8; 32],
    pubkey: [u8; 32],
}

impl Child {
    fn new() -> Child {
        let mut seed = [0u8; 32];
        getrandom_fill(&mut seed);
        Child {
            pubkey: public_key_of(&seed),
            seed,
        }
    }
}

fn getrandom_fill(buf: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(buf)
        .unwrap();
}

fn pair(name: &str, scope: &[&str]) -> Details {
    Details::Pair(Pair {
        requested_scope: scope.iter().map(|s| (*s).to_owned()).collect(),
        name: Some(name.to_owned()),
        owner: None,
    })
}

fn s(d: &Dict, k: &str) -> String {
    dict::get_str(d, k)
        .unwrap()
        .unwrap_or_else(|| panic!("no {k} in {d:?}"))
}

fn bytes(d: &Dict, k: &str) -> Vec<u8> {
    dict::get_bytes(d, k)
        .unwrap()
        .unwrap_or_else(|| panic!("no {k} in {d:?}"))
}

fn u(d: &Dict, k: &str) -> u64 {
    match d.get(k).map(|v| &**v) {
        Some(Variant::U64(n)) => *n,
        Some(Variant::U32(n)) => u64::from(*n),
        other => panic!("{k}: {other:?}"),
    }
}

struct Opened {
    id: String,
    code: String,
    reply: Dict,
    details: Vec<u8>,
    ty: RequestType,
}

async fn open(appr: &ApprovalsProxy<'_>, child: &Child, details: &Details) -> Opened {
    let cbor = encode(details);
    let ty = details.request_type();
    let reply = appr.open(ty.as_str(), &cbor, &child.pubkey).await.unwrap();
    Opened {
        id: s(&reply, "id"),
        code: s(&reply, "pair_code"),
        reply,
        details: cbor,
        ty,
    }
}

fn no_auth<'a>() -> HashMap<&'a str, Variant<'a>> {
    HashMap::new()
}

/// Checks an `approved` Await reply the way the child does.
fn verify_decision(o: &Opened, child: &Child, approved: &Dict, details: &[u8]) -> bool {
    let host: [u8; 32] = bytes(&o.reply, "host_key").try_into().unwrap();
    let sig: [u8; 64] = bytes(approved, "signature").try_into().unwrap();
    let nonce: [u8; 32] = bytes(approved, "nonce").try_into().unwrap();
    let nonce = Nonce::from_bytes(nonce);
    let fields = DecisionFields {
        id: o.id.parse::<RequestId>().unwrap(),
        request_type: o.ty,
        details_cbor: details,
        child_pubkey: &child.pubkey,
        approver_uid: u(approved, "approver") as u32,
        created_at: u(approved, "created"),
        nonce: &nonce,
    };
    verify(&host, &fields, &sig).is_ok()
}

/// Pairs a new agent (`name`, `scope`) and returns its child key, id and session.
async fn paired(conn: &zbus::Connection, name: &str, scope: &[&str]) -> (Child, String, String) {
    let appr = ApprovalsProxy::new(conn).await.unwrap();
    let child = Child::new();
    let o = open(&appr, &child, &pair(name, scope)).await;
    appr.approve(&o.id, no_auth()).await.unwrap();
    let done = appr.await_decision(&o.id, 10).await.unwrap();
    assert_eq!(s(&done, "state"), "approved");
    assert!(verify_decision(&o, &child, &done, &o.details));
    (child, s(&done, "agent_id"), s(&done, "session"))
}

/// A new bus connection authenticated as the agent.
async fn as_agent(d: &Daemon, child: &Child, session: &str) -> zbus::Connection {
    let conn = d.connect().await;
    agent::authenticate(&conn, session, &child.seed)
        .await
        .unwrap();
    conn
}

async fn store(conn: &zbus::Connection, name: &str, value: &str) {
    let fd = agentkeysd::vault::sealed_memfd_from_bytes(value.as_bytes()).unwrap();
    CredentialsProxy::new(conn)
        .await
        .unwrap()
        .store(name, zbus::Fd::from(&fd), HashMap::new())
        .await
        .unwrap();
}

async fn read(conn: &zbus::Connection, name: &str) -> Result<Vec<u8>, agentkeysd::api::Error> {
    let fd = CredentialsProxy::new(conn)
        .await
        .unwrap()
        .read(name)
        .await?;
    let fd: std::os::fd::OwnedFd = fd.into();
    Ok(
        agentkeysd::vault::read_memfd_to_vec(std::os::fd::AsFd::as_fd(&fd))
            .unwrap()
            .to_vec(),
    )
}

fn kind(r: Result<impl std::fmt::Debug, agentkeysd::api::Error>) -> ErrorKind {
    r.expect_err("expected an error").kind()
}

#[tokio::test]
async fn every_request_type_opens_is_fetched_approved_and_awaited() {
    let d = daemon("");
    let owner = d.connect().await;
    let appr = ApprovalsProxy::new(&owner).await.unwrap();
    store(&owner, "anthropic", "sk-ant-1").await;
    store(&owner, "github", "ghp-1").await;

    // Pair, from the owner's own terminal.
    let (child, agent_id, session) = paired(&owner, "ci-bot", &["anthropic"]).await;
    let bot = as_agent(&d, &child, &session).await;
    let bot_appr = ApprovalsProxy::new(&bot).await.unwrap();

    // The agent's own requests: scope change, a high-value release, a key rotation.
    let scope = Details::ScopeChange(ScopeChange {
        agent_id: agent_id.clone(),
        new_scope: vec!["anthropic".into(), "github".into()],
    });
    let release = Details::HighValueRelease(HighValueRelease {
        agent_id: agent_id.clone(),
        credential: "github".into(),
        reason: "release tag".into(),
    });
    let rotated = Child::new();
    let rotate = Details::KeyRotate(KeyRotate {
        agent_id: agent_id.clone(),
        new_pubkey: rotated.pubkey,
    });
    for (details, key) in [(&scope, &child), (&release, &child), (&rotate, &rotated)] {
        let o = open(&bot_appr, key, details).await;
        let shown = appr.fetch(&o.code).await.unwrap();
        assert_eq!(s(&shown, "type"), o.ty.as_str());
        assert_eq!(s(&shown, "agent_id"), agent_id);
        assert_eq!(s(&shown, "name"), "ci-bot");
        assert_eq!(s(&shown, "otp"), s(&o.reply, "otp"));
        appr.approve(&o.id, no_auth()).await.unwrap();
        let done = bot_appr.await_decision(&o.id, 10).await.unwrap();
        assert_eq!(s(&done, "state"), "approved", "{:?}", o.ty);
        assert!(verify_decision(&o, key, &done, &o.details), "{:?}", o.ty);
    }
    // Recover, from a fresh key, by the agent's name; the recovered agent reads github,
    // which only the approved scope change granted.
    let fresh = Child::new();
    let recover = Details::Recover(Recover {
        agent_identity: "ci-bot".into(),
        new_pubkey: fresh.pubkey,
        owner: None,
    });
    let o = open(&appr, &fresh, &recover).await;
    assert_eq!(s(&appr.fetch(&o.code).await.unwrap(), "agent_id"), agent_id);
    appr.approve(&o.id, no_auth()).await.unwrap();
    let done = appr.await_decision(&o.id, 10).await.unwrap();
    assert_eq!(s(&done, "state"), "approved");
    assert!(verify_decision(&o, &fresh, &done, &o.details));
    assert_eq!(s(&done, "agent_id"), agent_id);
    let recovered = as_agent(&d, &fresh, &s(&done, "session")).await;
    assert_eq!(read(&recovered, "github").await.unwrap(), b"ghp-1");
    assert_eq!(read(&recovered, "anthropic").await.unwrap(), b"sk-ant-1");
}

#[tokio::test]
async fn a_decision_is_single_use_and_await_reports_each_terminal_state() {
    let d = daemon("");
    let conn = d.connect().await;
    let appr = ApprovalsProxy::new(&conn).await.unwrap();

    // approved, then consumed; approving again is AlreadyConsumed.
    let c = Child::new();
    let o = open(&appr, &c, &pair("one", &[])).await;
    appr.approve(&o.id, no_auth()).await.unwrap();
    assert_eq!(
        kind(appr.approve(&o.id, no_auth()).await),
        ErrorKind::AlreadyConsumed
    );
    assert_eq!(kind(appr.deny(&o.id).await), ErrorKind::AlreadyConsumed);
    assert_eq!(
        s(&appr.await_decision(&o.id, 5).await.unwrap(), "state"),
        "approved"
    );
    assert_eq!(
        s(&appr.await_decision(&o.id, 5).await.unwrap(), "state"),
        "consumed"
    );

    // denied.
    let o = open(&appr, &c, &pair("two", &[])).await;
    appr.deny(&o.id).await.unwrap();
    assert_eq!(
        s(&appr.await_decision(&o.id, 5).await.unwrap(), "state"),
        "denied"
    );
    assert_eq!(
        kind(appr.approve(&o.id, no_auth()).await),
        ErrorKind::AlreadyConsumed
    );

    // still pending when the wait runs out.
    let o = open(&appr, &c, &pair("three", &[])).await;
    assert_eq!(
        s(&appr.await_decision(&o.id, 1).await.unwrap(), "state"),
        "pending"
    );

    // an unknown id.
    assert_eq!(
        kind(
            appr.await_decision("00000000000000000000000000000000", 1)
                .await
        ),
        ErrorKind::NotFound
    );
}

#[tokio::test]
async fn an_expired_request_cannot_be_approved_and_its_code_looks_unknown() {
    let d = daemon("short_ttl_s = 1\n");
    let conn = d.connect().await;
    let appr = ApprovalsProxy::new(&conn).await.unwrap();
    let c = Child::new();
    let o = open(&appr, &c, &pair("late", &[])).await;
    // Await returns at the request's expiry (an event, not a sleep).
    let done = appr.await_decision(&o.id, 30).await.unwrap();
    assert_eq!(s(&done, "state"), "expired");
    assert_eq!(
        kind(appr.approve(&o.id, no_auth()).await),
        ErrorKind::Expired
    );
    // The expired code and a code that never existed answer exactly alike.
    let expired = appr.fetch(&o.code).await.unwrap_err();
    let unknown = appr.fetch("ZZZZ-ZZZZ").await.unwrap_err();
    assert_eq!(expired.kind(), ErrorKind::NotFound);
    assert_eq!(unknown.kind(), ErrorKind::NotFound);
    assert_eq!(expired.message(), unknown.message());
}

#[tokio::test]
async fn only_the_owner_asked_can_decide_and_root_is_no_exception() {
    let Some(uid) = agentkeys_tests::test_user() else {
        return;
    };
    let d = daemon("");
    let conn = d.connect().await;
    let appr = ApprovalsProxy::new(&conn).await.unwrap();
    // A request that asks the test user (root opens it on that user's behalf).
    let c = Child::new();
    let details = Details::Pair(Pair {
        requested_scope: vec![],
        name: Some("theirs".into()),
        owner: Some(uid),
    });
    let o = open(&appr, &c, &details).await;
    // Root is not that owner: Denied, and root's Fetch does not find it either.
    assert_eq!(
        kind(appr.approve(&o.id, no_auth()).await),
        ErrorKind::Denied
    );
    assert_eq!(kind(appr.deny(&o.id).await), ErrorKind::Denied);
    assert_eq!(kind(appr.fetch(&o.code).await), ErrorKind::NotFound);
    // The owner sees it and approves it.
    let shown = d
        .ctl_as(agentkeys_tests::TEST_USER, &["--json", "pending"], None)
        .json();
    assert_eq!(shown[0]["pair_code"], o.code.as_str(), "{shown}");
    // And another uid's code is unknown to the test user's approve.
    let mine = open(&appr, &c, &pair("mine", &[])).await;
    d.ctl_as(
        agentkeys_tests::TEST_USER,
        &["approve", "--yes", &mine.code],
        None,
    )
    .fails_with(4);
    assert_eq!(
        s(&appr.await_decision(&mine.id, 1).await.unwrap(), "state"),
        "pending"
    );
}

#[tokio::test]
async fn the_child_rejects_a_decision_for_other_details() {
    let d = daemon("");
    let conn = d.connect().await;
    let appr = ApprovalsProxy::new(&conn).await.unwrap();
    let c = Child::new();
    let o = open(&appr, &c, &pair("honest", &["anthropic"])).await;
    appr.approve(&o.id, no_auth()).await.unwrap();
    let done = appr.await_decision(&o.id, 5).await.unwrap();
    assert!(verify_decision(&o, &c, &done, &o.details));
    // The child asked for anthropic; a decision over anything else does not verify.
    let other = encode(&pair("honest", &["anthropic", "github"]));
    assert!(!verify_decision(&o, &c, &done, &other));
    let renamed = encode(&pair("dishonest", &["anthropic"]));
    assert!(!verify_decision(&o, &c, &done, &renamed));
}

#[tokio::test]
async fn recovery_keeps_grants_and_credentials_and_retires_the_old_key() {
    let d = daemon("");
    let owner = d.connect().await;
    let appr = ApprovalsProxy::new(&owner).await.unwrap();
    store(&owner, "anthropic", "sk-keep").await;
    let (old, agent_id, old_session) = paired(&owner, "my-bot", &["anthropic"]).await;
    let old_conn = as_agent(&d, &old, &old_session).await;
    assert_eq!(read(&old_conn, "anthropic").await.unwrap(), b"sk-keep");
    AgentsProxy::new(&owner)
        .await
        .unwrap()
        .link("my-bot", "email", "bot@example.org")
        .await
        .unwrap();

    // Unknown identity: NotFound, with the fix in the text.
    let fresh = Child::new();
    let unknown = Details::Recover(Recover {
        agent_identity: "nobody".into(),
        new_pubkey: fresh.pubkey,
        owner: None,
    });
    let err = appr
        .open("Recover", &encode(&unknown), &fresh.pubkey)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.message().contains("agent link"), "{}", err.message());

    // Recover by e-mail.
    let recover = Details::Recover(Recover {
        agent_identity: "bot@example.org".into(),
        new_pubkey: fresh.pubkey,
        owner: None,
    });
    let o = open(&appr, &fresh, &recover).await;
    appr.approve(&o.id, no_auth()).await.unwrap();
    let done = appr.await_decision(&o.id, 5).await.unwrap();
    assert_eq!(s(&done, "agent_id"), agent_id);
    // The old key's session is over: its bound connection reads nothing, and it cannot
    // authenticate again.
    assert_eq!(kind(read(&old_conn, "anthropic").await), ErrorKind::Denied);
    let again = d.connect().await;
    assert_eq!(
        kind(agent::authenticate(&again, &old_session, &old.seed).await),
        ErrorKind::Denied
    );
    // The new key reads the same credential through the same grant.
    let new_conn = as_agent(&d, &fresh, &s(&done, "session")).await;
    assert_eq!(read(&new_conn, "anthropic").await.unwrap(), b"sk-keep");
}

#[tokio::test]
async fn a_session_proof_is_bound_to_its_key_and_connection() {
    let d = daemon("");
    let owner = d.connect().await;
    let (child, _, session) = paired(&owner, "proof", &[]).await;
    let conn = d.connect().await;
    // Someone else's key.
    let thief = Child::new();
    assert_eq!(
        kind(agent::authenticate(&conn, &session, &thief.seed).await),
        ErrorKind::Denied
    );
    // A proof made for another connection.
    let other = d.connect().await;
    let sig = agentkeysd::approvals::sign_session_proof(
        &child.seed,
        &session,
        other.unique_name().unwrap().as_str(),
    );
    let agents = AgentsProxy::new(&conn).await.unwrap();
    assert_eq!(
        kind(agents.authenticate(&session, &sig).await),
        ErrorKind::Denied
    );
    // The real thing works, and WhoAmI then names the agent, never the session.
    agent::authenticate(&conn, &session, &child.seed)
        .await
        .unwrap();
    let who = agentkeysd::api::proxies::DaemonProxy::new(&conn)
        .await
        .unwrap()
        .who_am_i()
        .await
        .unwrap();
    assert_eq!(s(&who, "agent_name"), "proof");
    assert!(!format!("{who:?}").contains(&session));
    // An agent connection may not act as the owner.
    let appr = ApprovalsProxy::new(&conn).await.unwrap();
    assert_eq!(kind(appr.pending().await), ErrorKind::Denied);
    let fd = agentkeysd::vault::sealed_memfd_from_bytes(b"x").unwrap();
    let creds = CredentialsProxy::new(&conn).await.unwrap();
    assert_eq!(
        kind(
            creds
                .store("sneaky", zbus::Fd::from(&fd), HashMap::new())
                .await
        ),
        ErrorKind::Denied
    );
}

#[tokio::test]
async fn agents_read_only_what_they_were_granted() {
    let d = daemon("");
    let owner = d.connect().await;
    store(&owner, "anthropic", "sk-a").await;
    store(&owner, "github", "ghp-b").await;
    let (ca, a_id, sa) = paired(&owner, "agent-a", &["anthropic"]).await;
    let (cb, _, sb) = paired(&owner, "agent-b", &["github"]).await;
    let a = as_agent(&d, &ca, &sa).await;
    let b = as_agent(&d, &cb, &sb).await;
    assert_eq!(read(&a, "anthropic").await.unwrap(), b"sk-a");
    assert_eq!(read(&b, "github").await.unwrap(), b"ghp-b");
    assert_eq!(kind(read(&a, "github").await), ErrorKind::Denied);
    assert_eq!(kind(read(&b, "anthropic").await), ErrorKind::Denied);

    // Scope change: approved, A now reads github; approved back, it does not.
    let appr = ApprovalsProxy::new(&owner).await.unwrap();
    let a_appr = ApprovalsProxy::new(&a).await.unwrap();
    for (scope, github_ok) in [
        (vec!["anthropic", "github"], true),
        (vec!["anthropic"], false),
    ] {
        let change = Details::ScopeChange(ScopeChange {
            agent_id: a_id.clone(),
            new_scope: scope.iter().map(|s| (*s).to_owned()).collect(),
        });
        let o = open(&a_appr, &ca, &change).await;
        appr.approve(&o.id, no_auth()).await.unwrap();
        assert_eq!(read(&a, "github").await.is_ok(), github_ok);
    }

    // Usage counts reads and denials per agent and credential.
    let usage = AgentsProxy::new(&owner)
        .await
        .unwrap()
        .usage("agent-a")
        .await
        .unwrap();
    let github = usage
        .iter()
        .find(|r| s(r, "credential") == "github")
        .unwrap();
    assert_eq!((u(github, "reads"), u(github, "denials")), (1, 2));
}

#[tokio::test]
async fn a_once_grant_serves_exactly_one_of_many_concurrent_reads() {
    let d = daemon("");
    let owner = d.connect().await;
    store(&owner, "deploy", "dk-1").await;
    let (c, _, session) = paired(&owner, "deployer", &[]).await;
    let mut opts = HashMap::new();
    opts.insert("mode", Variant::from("once"));
    CredentialsProxy::new(&owner)
        .await
        .unwrap()
        .grant("deployer", "deploy", opts)
        .await
        .unwrap();
    let mut conns = Vec::new();
    for _ in 0..8 {
        conns.push(as_agent(&d, &c, &session).await);
    }
    let reads = futures_util::future::join_all(conns.iter().map(|c| read(c, "deploy"))).await;
    let served = reads.iter().filter(|r| r.is_ok()).count();
    assert_eq!(served, 1, "{reads:?}");
    assert!(
        reads
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| e.kind() == ErrorKind::Denied)
    );
}

#[tokio::test]
async fn a_confirm_grant_waits_for_the_owner_each_time() {
    let d = daemon("");
    let owner = d.connect().await;
    store(&owner, "prod", "pk-1").await;
    let (c, _, session) = paired(&owner, "careful", &[]).await;
    let mut opts = HashMap::new();
    opts.insert("mode", Variant::from("confirm"));
    CredentialsProxy::new(&owner)
        .await
        .unwrap()
        .grant("careful", "prod", opts)
        .await
        .unwrap();
    let appr = ApprovalsProxy::new(&owner).await.unwrap();
    let bot = as_agent(&d, &c, &session).await;
    let mut opened = appr.receive_request_opened().await.unwrap();
    for approve in [true, false] {
        let reading = tokio::spawn({
            let bot = bot.clone();
            async move { read(&bot, "prod").await }
        });
        let sig = tokio::time::timeout(EVENT_TIMEOUT, opened.next())
            .await
            .unwrap_or_else(|_| panic!("no RequestOpened; daemon log:\n{}", d.log()))
            .unwrap();
        let notice = sig.args().unwrap().request;
        assert_eq!(s(&notice, "type"), "HighValueRelease");
        assert!(!notice.contains_key("otp") && !notice.contains_key("pair_code"));
        let pending = appr.pending().await.unwrap();
        let req = pending
            .iter()
            .find(|r| s(r, "id") == s(&notice, "id"))
            .unwrap()
            .clone();
        assert_eq!(s(&req, "credential"), "prod");
        assert_eq!(s(&req, "name"), "careful");
        if approve {
            appr.approve(&s(&req, "id"), no_auth()).await.unwrap();
            assert_eq!(reading.await.unwrap().unwrap(), b"pk-1");
        } else {
            appr.deny(&s(&req, "id")).await.unwrap();
            assert_eq!(kind(reading.await.unwrap()), ErrorKind::Denied);
        }
    }
}

#[tokio::test]
async fn revoking_denies_the_very_next_read_and_says_when_and_by_whom() {
    let d = daemon("");
    let owner = d.connect().await;
    store(&owner, "anthropic", "sk-r").await;
    let (c, id, session) = paired(&owner, "ci-bot", &["anthropic"]).await;
    let bot = as_agent(&d, &c, &session).await;
    assert_eq!(read(&bot, "anthropic").await.unwrap(), b"sk-r");
    let agents = AgentsProxy::new(&owner).await.unwrap();
    let mut revoked = agents.receive_agent_revoked().await.unwrap();
    agents.revoke("ci-bot").await.unwrap();
    let err = read(&bot, "anthropic").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Denied);
    assert!(
        err.message().contains("'ci-bot' was revoked at") && err.message().contains("by uid 0"),
        "{}",
        err.message()
    );
    let sig = tokio::time::timeout(EVENT_TIMEOUT, revoked.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sig.args().unwrap().agent_id, id);
    // Its session ended: it cannot authenticate again either.
    let again = d.connect().await;
    assert_eq!(
        kind(agent::authenticate(&again, &session, &c.seed).await),
        ErrorKind::Denied
    );
    // The audit trail tells the story.
    let rows = d.ctl(&["--json", "audit", "list"]).json();
    let actions: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    for want in [
        "approval.open",
        "approval.approve",
        "agent.pair",
        "agent.revoke",
    ] {
        assert!(actions.contains(&want), "{want} missing from {actions:?}");
    }
    d.ctl(&["audit", "verify"]).ok();
}

#[tokio::test]
async fn sessions_and_grants_expire() {
    // Two seconds, not one: expiry is kept in whole seconds, so a session made late in a
    // second could expire before the agent's first read with one.
    let d = daemon("session_ttl_s = 2\n");
    let owner = d.connect().await;
    store(&owner, "anthropic", "sk-e").await;
    let (c, _, session) = paired(&owner, "brief", &["anthropic"]).await;
    let bot = as_agent(&d, &c, &session).await;
    assert_eq!(read(&bot, "anthropic").await.unwrap(), b"sk-e");
    // Wait until the daemon itself says the session is over (a read is the event).
    let t0 = std::time::Instant::now();
    let err = loop {
        match read(&bot, "anthropic").await {
            Ok(_) if t0.elapsed() < EVENT_TIMEOUT => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => break other.unwrap_err(),
        }
    };
    assert_eq!(err.kind(), ErrorKind::Expired, "{}", err.message());
}

#[tokio::test]
async fn opening_and_guessing_codes_are_rate_limited() {
    let d = daemon("");
    let conn = d.connect().await;
    let appr = ApprovalsProxy::new(&conn).await.unwrap();
    let c = Child::new();
    let mut refused = None;
    for i in 0..40 {
        match appr
            .open("Pair", &encode(&pair(&format!("spam-{i}"), &[])), &c.pubkey)
            .await
        {
            Ok(_) => {}
            Err(e) => {
                refused = Some((i, e));
                break;
            }
        }
    }
    let (n, e) = refused.expect("opening was never limited");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{}", e.message());
    assert!(n >= 10, "limited after only {n}");
    let mut limited = None;
    for i in 0..40 {
        let e = appr.fetch("ZZZZ-ZZZZ").await.unwrap_err();
        if e.kind() != ErrorKind::NotFound {
            limited = Some((i, e));
            break;
        }
    }
    let (n, e) = limited.expect("guessing was never limited");
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(
        n >= 5 && e.message().contains("try again"),
        "{n}: {}",
        e.message()
    );
}

#[tokio::test]
async fn malformed_requests_are_refused_and_change_nothing() {
    let d = daemon("");
    let conn = d.connect().await;
    let appr = ApprovalsProxy::new(&conn).await.unwrap();
    let c = Child::new();
    let good = encode(&pair("fine", &[]));
    assert_eq!(
        kind(appr.open("Pear", &good, &c.pubkey).await),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        kind(appr.open("Recover", &good, &c.pubkey).await),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        kind(appr.open("Pair", &good, &[0u8; 31]).await),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        kind(appr.open("Pair", b"\xa0garbage", &c.pubkey).await),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        kind(appr.open("Pair", &vec![0u8; 70_000], &c.pubkey).await),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        kind(appr.approve("nothex", no_auth()).await),
        ErrorKind::InvalidArgument
    );
    let mut bad = HashMap::new();
    bad.insert("pasword", Variant::from("x"));
    let o = open(&appr, &c, &pair("fine", &[])).await;
    assert_eq!(
        kind(appr.approve(&o.id, bad).await),
        ErrorKind::InvalidArgument
    );
    assert!(appr.pending().await.unwrap().len() == 1);
    // The daemon keeps serving.
    appr.approve(&o.id, no_auth()).await.unwrap();
}

/// `auth` for `Approve`: the password in a sealed memfd.
fn password(pw: &str) -> (std::os::fd::OwnedFd, &'static str) {
    (
        agentkeysd::vault::sealed_memfd_from_bytes(pw.as_bytes()).unwrap(),
        "password",
    )
}

#[tokio::test]
async fn approving_needs_the_owners_password_through_pam_and_remembers_it_briefly() {
    // The cache is per login session: this test is the owner, so it leads one.
    if !agentkeys_tests::in_own_session(
        "approving_needs_the_owners_password_through_pam_and_remembers_it_briefly",
    ) {
        return;
    }
    let Some(pam) = agentkeys_tests::pam::PamWrapper::new_or_skip(&[("root", "correct horse")])
    else {
        return;
    };
    let d = Daemon::start_with(DaemonOpts {
        env: pam.env(),
        ..Default::default()
    });
    let conn = d.connect().await;
    let appr = ApprovalsProxy::new(&conn).await.unwrap();
    let c = Child::new();
    let o = open(&appr, &c, &pair("guarded", &[])).await;

    // No password: Locked. A wrong one: Denied. The request stays pending either way.
    assert_eq!(
        kind(appr.approve(&o.id, no_auth()).await),
        ErrorKind::Locked
    );
    let (fd, key) = password("battery staple");
    let mut auth = HashMap::new();
    auth.insert(key, Variant::from(zbus::Fd::from(&fd)));
    assert_eq!(kind(appr.approve(&o.id, auth).await), ErrorKind::Denied);
    assert_eq!(s(&appr.fetch(&o.code).await.unwrap(), "state"), "pending");

    // The password travels only as a sealed memfd: a plain pipe is refused.
    let (r, w) = nix::unistd::pipe().unwrap();
    nix::unistd::write(&w, b"correct horse").unwrap();
    drop(w);
    let mut auth = HashMap::new();
    auth.insert("password", Variant::from(zbus::Fd::from(&r)));
    assert_eq!(
        kind(appr.approve(&o.id, auth).await),
        ErrorKind::InvalidArgument
    );

    // The right one approves.
    let (fd, key) = password("correct horse");
    let mut auth = HashMap::new();
    auth.insert(key, Variant::from(zbus::Fd::from(&fd)));
    appr.approve(&o.id, auth).await.unwrap();
    assert_eq!(
        s(&appr.await_decision(&o.id, 5).await.unwrap(), "state"),
        "approved"
    );

    // Within the cache window, the same login session approves without asking again.
    let o = open(&appr, &c, &pair("guarded-too", &[])).await;
    appr.approve(&o.id, no_auth()).await.unwrap();

    // Neither password reached the log.
    let log = d.log();
    assert!(!log.contains("correct horse") && !log.contains("battery staple"));
    assert!(
        log.contains("approval") || log.contains("approved"),
        "{log}"
    );
}
