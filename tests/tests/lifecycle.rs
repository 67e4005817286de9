//! Start-up, the bus name, restart, shutdown, configuration, introspection.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use agentkeys_tests::{Daemon, DaemonOpts, bin, run};
use agentkeysd::api::names::BUS_NAME;
use zbus::fdo::{DBusProxy, RequestNameFlags, RequestNameReply};

#[test]
fn a_second_daemon_on_the_same_bus_refuses_to_start_with_a_clear_message() {
    let d = Daemon::start();
    let other = tempfile::tempdir().unwrap();
    let out = run(d.command_with_state(&other.path().join("state")), None);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("already owns dev.agentkeys.Daemon1"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!("pid {}", d.pid())),
        "{}",
        out.stderr
    );
    d.ctl(&["status"]).ok();
}

#[tokio::test]
async fn another_root_connection_cannot_steal_the_bus_name() {
    let d = Daemon::start();
    let conn = d.connect().await;
    let dbus = DBusProxy::new(&conn).await.unwrap();
    let owner_before = dbus
        .get_name_owner(BUS_NAME.try_into().unwrap())
        .await
        .unwrap();
    let reply = dbus
        .request_name(
            BUS_NAME.try_into().unwrap(),
            RequestNameFlags::REPLACE_EXISTING | RequestNameFlags::DO_NOT_QUEUE,
        )
        .await
        .unwrap();
    assert_eq!(reply, RequestNameReply::Exists);
    let owner_after = dbus
        .get_name_owner(BUS_NAME.try_into().unwrap())
        .await
        .unwrap();
    assert_eq!(owner_before, owner_after);
    assert_ne!(
        Some(owner_after.as_ref()),
        conn.unique_name().map(|n| n.as_ref())
    );
    d.ctl(&["status"]).ok();
}

#[test]
fn a_non_root_user_cannot_own_the_bus_name_by_policy() {
    let Some(_) = agentkeys_tests::test_user() else {
        return;
    };
    let mut d = Daemon::start();
    // The bus stays up: only the daemon goes, so the name is free.
    d.kill9();
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args([
        "--reuid",
        agentkeys_tests::TEST_USER,
        "--regid",
        agentkeys_tests::TEST_USER,
        "--clear-groups",
        "--",
    ])
    .arg("dbus-send")
    .arg(format!("--bus={}", d.bus.address))
    .args([
        "--print-reply",
        "--dest=org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus.RequestName",
    ])
    .arg(format!("string:{BUS_NAME}"))
    .arg("uint32:4");
    let out = run(cmd, None);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("AccessDenied"), "{}", out.stderr);
}

#[test]
fn sigterm_stops_cleanly_with_exit_0_and_restart_keeps_everything() {
    let mut d = Daemon::start();
    d.ctl_in(&["store", "anthropic"], Some(b"sk-ant-restart-0123456789"))
        .ok();
    let id = d.ctl(&["agent", "create", "ci-bot"]).ok().trim().to_owned();
    d.ctl(&["agent", "link", "ci-bot", "--alias", "builder"])
        .ok();
    let status = d.stop();
    assert!(status.success(), "{status:?}");
    assert!(d.log().contains("stopped"), "{}", d.log());
    // Every reference to the store and the vault was dropped before exit (no cycle kept them).
    assert!(d.log().contains("secret state released"), "{}", d.log());
    // systemd was told: ready with a status line, then stopping.
    let notified = d.notified.join("\n");
    assert!(
        notified.contains("READY=1") && notified.contains("STATUS=serving on the"),
        "{notified}"
    );
    assert!(notified.contains("STOPPING=1"), "{notified}");
    d.spawn_ready().unwrap();
    eprintln!(
        "restart to READY=1 on an existing state dir: {:?}",
        d.last_ready
    );
    assert_eq!(
        d.ctl(&["read", "anthropic"]).ok(),
        "sk-ant-restart-0123456789"
    );
    let shown = d.ctl(&["--json", "agent", "show", "builder"]).json();
    assert_eq!(shown["id"], id.as_str());
    d.ctl(&["audit", "verify"]).ok();
}

#[test]
fn the_daemon_reports_its_secret_memory_and_version() {
    let d = Daemon::start();
    let st = d.ctl(&["--json", "status"]).json();
    assert_eq!(st["secret_memory"], "memfd_secret");
    assert_eq!(st["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn check_config_validates_without_touching_state_or_bus() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[vault]\nsecret_memory = \"require\"\n").unwrap();
    let mut cmd = std::process::Command::new(bin("agentkeysd"));
    cmd.args(["--check-config", "--config"]).arg(&good);
    let out = run(cmd, None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout().contains("secret_memory = \"require\""));
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[vault]\nsecret_memroy = \"require\"\n").unwrap();
    let mut cmd = std::process::Command::new(bin("agentkeysd"));
    cmd.args(["--check-config", "--config"]).arg(&bad);
    let out = run(cmd, None);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("bad.toml") && out.stderr.contains("secret_memroy"),
        "{}",
        out.stderr
    );
}

#[test]
fn an_invalid_configuration_stops_start_up() {
    let bus = agentkeys_tests::Bus::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[daemon]\nshutdown_timeout_s = 0\n").unwrap();
    let mut cmd = std::process::Command::new(bin("agentkeysd"));
    cmd.arg("--bus")
        .arg(&bus.address)
        .arg("--state-dir")
        .arg(dir.path().join("s"));
    cmd.arg("--runtime-dir")
        .arg(dir.path().join("r"))
        .arg("--config")
        .arg(&cfg);
    let out = run(cmd, None);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("shutdown_timeout_s"), "{}", out.stderr);
    assert!(
        !dir.path().join("s").exists(),
        "state touched by a daemon that did not start"
    );
}

#[test]
fn the_daemon_refuses_to_run_under_a_tracer_unless_configured() {
    let bus = agentkeys_tests::Bus::start();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new("strace");
    if cmd.arg("-V").output().is_err() {
        agentkeys_tests::skip("strace is not installed");
        return;
    }
    let mut cmd = std::process::Command::new("strace");
    cmd.args(["-f", "-o", "/dev/null"]).arg(bin("agentkeysd"));
    cmd.arg("--bus")
        .arg(&bus.address)
        .arg("--state-dir")
        .arg(dir.path().join("s"));
    cmd.arg("--runtime-dir")
        .arg(dir.path().join("r"))
        .arg("--config")
        .arg(dir.path().join("empty.toml"));
    std::fs::write(dir.path().join("empty.toml"), "").unwrap();
    let out = run(cmd, None);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("tracing agentkeysd"), "{}", out.stderr);
}

#[test]
fn the_daemon_process_is_hardened() {
    let d = Daemon::start();
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .to_owned()
    };
    // Capabilities: only the documented set remains, in every set, bounding included.
    let keep: u64 = agentkeysd::daemon::harden::KEEP
        .iter()
        .map(|(c, _)| 1u64 << c.index())
        .sum();
    for set in ["CapPrm:", "CapEff:", "CapBnd:"] {
        let v = u64::from_str_radix(&field(set), 16).unwrap();
        assert_eq!(
            v & !keep,
            0,
            "{set} has more than the documented set: {v:x}"
        );
    }
    assert_eq!(u64::from_str_radix(&field("CapAmb:"), 16).unwrap(), 0);
    assert_eq!(u64::from_str_radix(&field("CapInh:"), 16).unwrap(), 0);
    // No core dumps.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", d.pid())).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert!(
        core.split_whitespace().filter(|w| *w == "0").count() >= 2,
        "{core}"
    );
    // Non-dumpable: /proc/PID/mem and friends belong to root.
    let meta = std::fs::metadata(format!("/proc/{}/mem", d.pid())).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 0);
}

#[test]
fn inherited_file_descriptors_and_ld_variables_are_dropped() {
    let mut d = Daemon::start_with(DaemonOpts {
        env: vec![
            ("LD_BIND_NOW".into(), "1".into()),
            ("AGENTKEYS_LOG".into(), "debug".into()),
        ],
        ..Default::default()
    });
    d.kill9();
    // Start with an extra inherited fd (a file we keep open in the child).
    let leak = tempfile::NamedTempFile::new().unwrap();
    let f = std::fs::File::open(leak.path()).unwrap();
    let raw = std::os::fd::AsRawFd::as_raw_fd(&f);
    // Clear CLOEXEC so the daemon inherits it.
    nix::fcntl::fcntl(
        &f,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .unwrap();
    d.spawn_ready().unwrap();
    // An fd the daemon closes meanwhile (it prepares its warm runners once it is ready) is
    // gone before it is read: not the inherited one, which nothing closes.
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", d.pid()))
        .unwrap()
        .filter_map(|e| match std::fs::read_link(e.unwrap().path()) {
            Ok(target) => Some(target.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => panic!("{e}"),
        })
        .collect();
    assert!(
        !fds.iter().any(|p| p == &leak.path().display().to_string()),
        "fd {raw} leaked: {fds:?}"
    );
    // /proc/PID/environ shows the original environment block, which unsetenv does not
    // rewrite; what matters is what the daemon hands on, and hardening reports that.
    let log = d.log();
    let line = log
        .lines()
        .find(|l| l.contains("hardened"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("LD_BIND_NOW"), "{line}");
}

#[test]
fn a_second_daemon_on_the_same_state_directory_is_refused() {
    let d = Daemon::start();
    // Its own bus, so that only the state directory is contended.
    let other_bus = agentkeys_tests::Bus::start();
    let out = run(d.command_for(&other_bus.address, &d.state_dir()), None);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("in use by another process"),
        "{}",
        out.stderr
    );
    d.ctl(&["audit", "verify"]).ok();
}

#[test]
fn sigterm_the_moment_the_daemon_is_ready_is_a_clean_stop() {
    let mut d = Daemon::start();
    for i in 0..10 {
        let status = d.stop();
        assert!(status.success(), "stop {i}: {status:?}\n{}", d.log());
        d.spawn_ready().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_read_served_before_sigterm_is_in_the_audit_trail_after_it() {
    use std::os::fd::AsFd;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use agentkeysd::api::proxies::CredentialsProxy;

    let mut d = Daemon::start();
    d.ctl_in(&["store", "anthropic"], Some(b"sk-ant-shutdown-0123456789"))
        .ok();
    let served = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let conn = d.connect().await;
        let served = served.clone();
        readers.push(tokio::spawn(async move {
            let creds = CredentialsProxy::new(&conn).await.unwrap();
            // Until the daemon stops answering.
            while let Ok(fd) = creds.read("anthropic").await {
                assert!(fd.as_fd().try_clone_to_owned().is_ok());
                served.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    let t0 = std::time::Instant::now();
    while served.load(Ordering::SeqCst) < 100 {
        assert!(t0.elapsed() < agentkeys_tests::EVENT_TIMEOUT);
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let status = tokio::task::spawn_blocking(move || {
        let s = d.stop();
        (s, d)
    })
    .await
    .unwrap();
    let (status, mut d) = status;
    assert!(status.success(), "{status:?}");
    for r in readers {
        r.await.unwrap();
    }
    let served = served.load(Ordering::SeqCst);
    d.spawn_ready().unwrap();
    let mut audited = 0;
    let mut after = 0;
    loop {
        let page = d
            .ctl(&[
                "--json",
                "audit",
                "list",
                "--after",
                &after.to_string(),
                "--limit",
                "1000",
            ])
            .json();
        let rows = page.as_array().unwrap();
        let Some(last) = rows.last() else { break };
        after = last["seq"].as_i64().unwrap();
        audited += rows
            .iter()
            .filter(|r| r["action"] == "credential.read" && r["outcome"] == "ok")
            .count();
    }
    // A reply lost in the shutdown may leave a read audited but not counted, never the reverse.
    assert!(
        audited >= served,
        "served {served} reads, audited {audited}"
    );
    d.ctl(&["audit", "verify"]).ok();
}
