//! Store / read / list / rm through the real CLI and the real proxies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::os::fd::AsFd;

use agentkeys_tests::Daemon;
use agentkeysd::api::proxies::CredentialsProxy;
use agentkeysd::vault::{read_memfd_to_vec, sealed_memfd_from_bytes};
use zbus::Variant;

#[test]
fn stored_credential_reads_back_and_lists_metadata_only() {
    let d = Daemon::start();
    let out = d.ctl_in(&["store", "anthropic"], Some(b"sk-ant-0123456789abcd\n"));
    out.ok();
    assert_eq!(d.ctl(&["read", "anthropic"]).ok(), "sk-ant-0123456789abcd");
    let list = d.ctl(&["--json", "list"]).json();
    let items = list.as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["name"], "anthropic");
    assert_eq!(items[0]["env"], "ANTHROPIC_API_KEY");
    assert_eq!(items[0]["last4"], "abcd");
    assert_eq!(items[0]["version"], 1);
    assert!(!d.ctl(&["--json", "list"]).stdout().contains("0123456789"));
    let human = d.ctl(&["list"]).ok();
    assert!(
        human.contains("anthropic") && human.contains("ANTHROPIC_API_KEY"),
        "{human}"
    );
    d.ctl(&["rm", "anthropic"]).ok();
    d.ctl(&["read", "anthropic"]).fails_with(4);
    assert_eq!(
        d.ctl(&["--json", "list"]).json().as_array().unwrap().len(),
        0
    );
}

#[test]
fn storing_over_an_existing_name_needs_replace_and_bumps_the_version() {
    let d = Daemon::start();
    d.ctl_in(
        &["store", "github", "--env", "GH_TOKEN"],
        Some(b"ghp_first_value_123"),
    )
    .ok();
    let err = d
        .ctl_in(&["store", "github"], Some(b"ghp_second_value_45"))
        .fails_with(2);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(d.ctl(&["read", "github"]).ok(), "ghp_first_value_123");
    d.ctl_in(
        &["store", "github", "--replace"],
        Some(b"ghp_second_value_45"),
    )
    .ok();
    assert_eq!(d.ctl(&["read", "github"]).ok(), "ghp_second_value_45");
    let list = d.ctl(&["--json", "list"]).json();
    assert_eq!(list[0]["version"], 2);
}

#[test]
fn unknown_services_get_a_derived_env_var_and_known_ones_the_table_entry() {
    let d = Daemon::start();
    d.ctl_in(&["store", "github"], Some(b"ghp_aaaaaaaaaaaaaaaa"))
        .ok();
    d.ctl_in(&["store", "my-svc"], Some(b"x")).ok();
    let list = d.ctl(&["--json", "list"]).json();
    let env: HashMap<String, String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_owned(),
                i["env"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(env["github"], "GITHUB_TOKEN");
    assert_eq!(env["my-svc"], "MY_SVC_API_KEY");
    // A short secret shows no last four characters at all.
    let short = list
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "my-svc")
        .unwrap();
    assert_eq!(short["last4"], "");
}

#[tokio::test]
async fn binary_secrets_round_trip_byte_for_byte_over_the_bus() {
    let d = Daemon::start();
    let conn = d.connect().await;
    let creds = CredentialsProxy::new(&conn).await.unwrap();
    let value: Vec<u8> = (0..=255u8).cycle().take(64 * 1024).collect();
    let fd = sealed_memfd_from_bytes(&value).unwrap();
    creds
        .store("blob", fd.as_fd().into(), HashMap::new())
        .await
        .unwrap();
    let got = creds.read("blob").await.unwrap();
    assert_eq!(&read_memfd_to_vec(got.as_fd()).unwrap()[..], &value[..]);
    // What comes back is sealed: the receiver cannot change it under anyone's feet.
    let seals = nix::fcntl::fcntl(got.as_fd(), nix::fcntl::FcntlArg::F_GET_SEALS).unwrap();
    let want = libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    assert_eq!(seals & want, want);
}

#[tokio::test]
async fn an_expired_credential_answers_expired() {
    let d = Daemon::start();
    let conn = d.connect().await;
    let creds = CredentialsProxy::new(&conn).await.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let fd = sealed_memfd_from_bytes(b"short-lived-secret").unwrap();
    let mut opts = HashMap::new();
    opts.insert("expires", Variant::from(now + 1));
    creds.store("brief", fd.as_fd().into(), opts).await.unwrap();
    // Expiry is wall-clock time by definition: wait for the clock, not for the daemon.
    while std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        <= now + 1
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let err = d.ctl(&["read", "brief"]).fails_with(5);
    assert!(err.contains("expired"), "{err}");
}

#[test]
fn secrets_come_from_stdin_never_argv_and_empty_is_refused() {
    let d = Daemon::start();
    // There is no way to pass the secret as an argument.
    let out = d.ctl(&["store", "openai", "sk-should-not-be-accepted"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    d.ctl_in(&["store", "openai"], Some(b"")).fails_with(2);
    d.ctl_in(&["store", "openai"], Some(b"\n")).fails_with(2);
    d.ctl(&["read", "openai"]).fails_with(4);
}

#[test]
fn store_is_audited_and_the_chain_verifies() {
    let d = Daemon::start();
    d.ctl_in(&["store", "openai"], Some(b"sk-proj-aaaaaaaaaaaaaaaaaaaa"))
        .ok();
    d.ctl(&["read", "openai"]).ok();
    d.ctl(&["rm", "openai"]).ok();
    let rows = d.ctl(&["--json", "audit", "list"]).json();
    let actions: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        // The daemon's own start-up row (store.init, by uid 0) is visible to root too.
        .filter(|a| a.starts_with("credential."))
        .collect();
    assert_eq!(
        actions,
        ["credential.store", "credential.read", "credential.delete"]
    );
    let out = d.ctl(&["audit", "verify"]).ok();
    assert!(out.contains("ok"), "{out}");
}
