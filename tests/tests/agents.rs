//! Agent identities: create, list, show, link, resolve, revoke, teardown.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use futures_util::StreamExt;

use agentkeys_tests::Daemon;
use agentkeysd::api::proxies::AgentsProxy;

#[test]
fn agents_are_created_linked_resolved_and_shown() {
    let d = Daemon::start();
    let id = d
        .ctl(&["agent", "create", "ci-bot", "--scope", "anthropic,github"])
        .ok()
        .trim()
        .to_owned();
    assert!(id.starts_with("agt_") && id.len() == 30, "{id}");
    d.ctl(&["agent", "link", "ci-bot", "--alias", "builder"])
        .ok();
    d.ctl(&["agent", "link", &id, "--email", "ci@example.org"])
        .ok();
    for ident in ["ci-bot", "builder", "ci@example.org", id.as_str()] {
        let shown = d.ctl(&["--json", "agent", "show", ident]).json();
        assert_eq!(shown["id"], id.as_str(), "{ident}");
    }
    let shown = d.ctl(&["--json", "agent", "show", "ci-bot"]).json();
    assert_eq!(shown["scope"], serde_json::json!(["anthropic", "github"]));
    assert_eq!(shown["aliases"], serde_json::json!(["builder"]));
    assert_eq!(shown["emails"], serde_json::json!(["ci@example.org"]));
    assert_eq!(shown["state"], "active");
    // Names are unique per owner; aliases too.
    d.ctl(&["agent", "create", "ci-bot"]).fails_with(2);
    d.ctl(&["agent", "create", "other"]).ok();
    d.ctl(&["agent", "link", "other", "--alias", "builder"])
        .fails_with(2);
    d.ctl(&["agent", "show", "nobody"]).fails_with(4);
    let human = d.ctl(&["agent", "list"]).ok();
    assert!(
        human.contains("ci-bot") && human.contains("other"),
        "{human}"
    );
}

#[tokio::test]
async fn revoking_an_agent_is_recorded_signalled_and_final() {
    let d = Daemon::start();
    let id = d.ctl(&["agent", "create", "doomed"]).ok().trim().to_owned();
    let conn = d.connect().await;
    let agents = AgentsProxy::new(&conn).await.unwrap();
    let mut revoked = agents.receive_agent_revoked().await.unwrap();
    d.ctl(&["agent", "revoke", "doomed"]).ok();
    let sig = tokio::time::timeout(agentkeys_tests::EVENT_TIMEOUT, revoked.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sig.args().unwrap().agent_id, id);
    let shown = d.ctl(&["--json", "agent", "show", "doomed"]).json();
    assert_eq!(shown["state"], "revoked");
    assert_eq!(shown["revoked_by"], 0);
    assert!(shown["revoked_at"].as_i64().unwrap() > 0);
    // A revoked agent cannot gain links.
    d.ctl(&["agent", "link", "doomed", "--alias", "zombie"])
        .fails_with(3);
    let rows = d.ctl(&["--json", "audit", "list"]).json();
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .any(|r| r["action"] == "agent.revoke" && r["subject"].as_str().unwrap().contains(&id))
    );
}

#[test]
fn teardown_revokes_and_removes_links_but_keeps_the_record() {
    let d = Daemon::start();
    d.ctl(&["agent", "create", "temp"]).ok();
    d.ctl(&["agent", "link", "temp", "--alias", "tmp-alias"])
        .ok();
    d.ctl(&["agent", "teardown", "temp"]).ok();
    let shown = d.ctl(&["--json", "agent", "show", "temp"]).json();
    assert_eq!(shown["state"], "revoked");
    assert_eq!(shown["aliases"], serde_json::json!([]));
    d.ctl(&["agent", "show", "tmp-alias"]).fails_with(4);
}
