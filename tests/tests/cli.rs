//! The CLI's contract: exit codes, problem → cause → fix, broken pipes, help.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use agentkeys_tests::{Bus, Daemon, bin, run};

#[test]
fn an_unreachable_daemon_exits_6_with_a_fix() {
    let bus = Bus::start(); // a bus with no agentkeysd on it
    let mut cmd = std::process::Command::new(bin("agentkeysctl"));
    cmd.arg("status").env("AGENTKEYS_BUS", &bus.address);
    let out = run(cmd, None);
    assert_eq!(out.code, 6, "{}", out.stderr);
    assert!(out.stderr.contains("fix:"), "{}", out.stderr);
    let mut cmd = std::process::Command::new(bin("agentkeysctl"));
    cmd.args(["--bus", "unix:path=/nonexistent/bus.sock", "list"]);
    assert_eq!(run(cmd, None).code, 6);
}

#[test]
fn errors_follow_problem_cause_fix_and_exit_codes_are_stable() {
    let d = Daemon::start();
    let err = d.ctl(&["read", "nothing-here"]).fails_with(4);
    assert!(err.starts_with("error: "), "{err}");
    assert!(
        err.contains("\n  cause: ") && err.contains("\n  fix:"),
        "{err}"
    );
    d.ctl(&["read", "Bad Name"]).fails_with(2);
    d.ctl(&["no-such-command"]).fails_with(2);
}

#[tokio::test]
async fn a_broken_pipe_is_a_clean_exit() {
    let d = Daemon::start();
    // Enough rows that `list` writes more than a pipe buffer (64 KiB) holds.
    let conn = d.connect().await;
    let creds = agentkeysd::api::proxies::CredentialsProxy::new(&conn)
        .await
        .unwrap();
    for i in 0..1200 {
        let fd = agentkeysd::vault::sealed_memfd_from_bytes(b"value-value-value").unwrap();
        let name = format!("a-rather-long-credential-name-to-fill-the-pipe-{i:04}");
        creds
            .store(
                &name,
                std::os::fd::AsFd::as_fd(&fd).into(),
                Default::default(),
            )
            .await
            .unwrap();
    }
    let mut cmd = std::process::Command::new("bash");
    cmd.arg("-c")
        .arg(format!(
            "'{}' list | head -n 1 >/dev/null; echo \"${{PIPESTATUS[0]}}\"",
            bin("agentkeysctl").display()
        ))
        .env("AGENTKEYS_BUS", &d.bus.address);
    let out = run(cmd, None);
    assert_eq!(out.stdout().trim(), "0", "{}", out.stderr);
    assert!(
        !out.stderr.contains("panicked") && !out.stderr.contains("Broken pipe"),
        "{}",
        out.stderr
    );
}

/// Started with stdout closed, the CLI writes what is meant for it to /dev/null, as Rust's
/// start-up arranges, not into whatever it opened first (its event loop, the bus's socket,
/// which would then carry `read`'s secret).
#[test]
fn a_closed_stdout_is_dev_null_not_the_next_file_opened() {
    let d = Daemon::start();
    d.ctl_in(&["store", "closed-out"], Some(b"value-of-closed-out"))
        .ok();
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", r#"exec "$0" read closed-out >&-"#])
        .arg(bin("agentkeysctl"))
        .env("AGENTKEYS_BUS", &d.bus.address);
    let out = run(cmd, None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stderr.contains("cannot write"), "{}", out.stderr);
    // The daemon is unharmed and the value unchanged.
    assert_eq!(d.ctl(&["read", "closed-out"]).ok(), "value-of-closed-out");
}

#[test]
fn whoami_reports_what_the_daemon_sees() {
    let d = Daemon::start();
    let me = d.ctl(&["--json", "whoami"]).json();
    assert_eq!(me["uid"], 0);
    assert_eq!(me["user"], "root");
}

#[test]
fn completions_and_man_pages_are_generated() {
    let mut cmd = std::process::Command::new(bin("agentkeysctl"));
    cmd.args(["completions", "bash"]);
    let out = run(cmd, None);
    assert!(out.ok().contains("agentkeysctl"));
    let mut cmd = std::process::Command::new(bin("agentkeysctl"));
    cmd.arg("man");
    assert!(run(cmd, None).ok().contains(".TH"));
}
