//! Owner isolation with a second real uid (run through setpriv): an owner sees and
//! touches only their own credentials and agents; root acts for another owner only when
//! it says so explicitly (`UID:NAME`, `--owner`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use agentkeys_tests::{Daemon, TEST_USER, test_user};

#[test]
fn owners_see_only_their_own_credentials_and_root_acts_for_others_only_explicitly() {
    let Some(uid) = test_user() else { return };
    let d = Daemon::start();
    d.ctl_in(&["store", "github"], Some(b"ghp_root_owned_value_0000"))
        .ok();

    // The other user has no 'github' of its own, and cannot see root's.
    d.ctl_as(TEST_USER, &["read", "github"], None).fails_with(4);
    let listed = d.ctl_as(TEST_USER, &["--json", "list"], None).json();
    assert_eq!(listed.as_array().unwrap().len(), 0);
    // Naming root's credential explicitly is denied, and the denial is audited.
    let err = d
        .ctl_as(TEST_USER, &["read", "0:github"], None)
        .fails_with(3);
    assert!(err.contains("only root"), "{err}");
    assert!(!err.contains("ghp_"), "{err}");
    let rm = d.ctl_as(TEST_USER, &["rm", "0:github"], None);
    assert_eq!(rm.code, 3, "{}", rm.stderr);
    assert_eq!(d.ctl(&["read", "github"]).ok(), "ghp_root_owned_value_0000");

    // The other user's own credential of the same name is separate.
    d.ctl_as(
        TEST_USER,
        &["store", "github"],
        Some(b"ghp_user_owned_value_1111"),
    )
    .ok();
    assert_eq!(
        d.ctl_as(TEST_USER, &["read", "github"], None).ok(),
        "ghp_user_owned_value_1111"
    );
    assert_eq!(d.ctl(&["read", "github"]).ok(), "ghp_root_owned_value_0000");

    // Root reaches the user's only when it says so.
    assert_eq!(
        d.ctl(&["read", &format!("{uid}:github")]).ok(),
        "ghp_user_owned_value_1111"
    );
    assert_eq!(
        d.ctl(&["--owner", TEST_USER, "read", "github"]).ok(),
        "ghp_user_owned_value_1111"
    );
    let theirs = d.ctl(&["--owner", TEST_USER, "--json", "list"]).json();
    assert_eq!(theirs.as_array().unwrap().len(), 1);
    assert_eq!(theirs[0]["owner"], uid);

    // The denial is in the audit trail, attributed to the user's uid.
    let rows = d.ctl(&["--json", "audit", "list", "--all"]).json();
    let denied: Vec<_> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["outcome"] == "denied" && r["actor_uid"] == uid)
        .collect();
    assert!(denied.len() >= 2, "denials not audited: {rows}");
    // Verifying the whole chain is root's: it covers every owner's rows.
    let err = d
        .ctl_as(TEST_USER, &["audit", "verify"], None)
        .fails_with(3);
    assert!(err.contains("sudo agentkeysctl audit verify"), "{err}");
    d.ctl(&["audit", "verify"]).ok();
    // And the user's own audit view shows only rows about itself.
    let mine = d
        .ctl_as(TEST_USER, &["--json", "audit", "list"], None)
        .json();
    for r in mine.as_array().unwrap() {
        assert!(r["actor_uid"] == uid || r["owner"] == uid, "{r}");
    }
}

#[test]
fn owners_see_only_their_own_agents() {
    let Some(uid) = test_user() else { return };
    let d = Daemon::start();
    let root_agent = d
        .ctl(&["agent", "create", "root-bot"])
        .ok()
        .trim()
        .to_owned();
    d.ctl_as(TEST_USER, &["agent", "create", "user-bot"], None)
        .ok();
    let mine = d
        .ctl_as(TEST_USER, &["--json", "agent", "list"], None)
        .json();
    let names: Vec<&str> = mine
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["user-bot"]);
    // Another owner's agent id is simply not found: no oracle for ids.
    d.ctl_as(TEST_USER, &["agent", "show", &root_agent], None)
        .fails_with(4);
    d.ctl_as(TEST_USER, &["agent", "revoke", &root_agent], None)
        .fails_with(4);
    let shown = d.ctl(&["--json", "agent", "show", &root_agent]).json();
    assert_eq!(shown["state"], "active");
    let theirs = d
        .ctl(&["--owner", TEST_USER, "--json", "agent", "list"])
        .json();
    assert_eq!(theirs[0]["owner"], uid);
}
