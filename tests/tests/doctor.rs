//! `agentkeysctl doctor` against the real kernel, a real daemon on a private bus, and
//! `--root` trees of installed files built here.
//!
//! The kernel checks are kernel-tier (DESIGN §8): where one is not ok, the test calls
//! `skip`, which fails under `AGENTKEYS_TEST_STRICT=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use agentkeys_tests::{Bus, Daemon, Out, bin, run, skip, test_user};
use serde_json::Value;

const KERNEL_CHECKS: [&str; 5] = [
    "memfd_secret",
    "landlock",
    "user_namespaces",
    "cgroups",
    "seccomp",
];

const ALL_CHECKS: [&str; 11] = [
    "memfd_secret",
    "landlock",
    "user_namespaces",
    "cgroups",
    "seccomp",
    "daemon",
    "dbus_policy",
    "pam_module",
    "pam_stack",
    "selinux",
    "state_dir",
];

const POLICY: &str = r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy user="root">
    <allow own="dev.agentkeys.Daemon1"/>
  </policy>
  <policy context="default">
    <allow send_destination="dev.agentkeys.Daemon1"/>
  </policy>
</busconfig>
"#;

/// Writes `text` at `root` + `path` with `mode`, creating parents.
fn put(root: &Path, path: &str, text: &str, mode: u32) {
    let p = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A tree holding everything a Debian install of agentkeysd puts in place, as root.
fn installed_tree() -> tempfile::TempDir {
    let t = tempfile::Builder::new()
        .prefix("agentkeys-doctor-root")
        .tempdir()
        .unwrap();
    let r = t.path();
    // Other users (the unprivileged run) must be able to walk it.
    std::fs::set_permissions(r, std::fs::Permissions::from_mode(0o755)).unwrap();
    put(
        r,
        "/usr/share/dbus-1/system.d/dev.agentkeys.Daemon1.conf",
        POLICY,
        0o644,
    );
    put(
        r,
        "/usr/share/dbus-1/system-services/dev.agentkeys.Daemon1.service",
        "[D-BUS Service]\nName=dev.agentkeys.Daemon1\nExec=/bin/false\nUser=root\nSystemdService=agentkeysd.service\n",
        0o644,
    );
    put(
        r,
        "/usr/lib/x86_64-linux-gnu/security/pam_agentkeys.so",
        "\x7fELF (content is not checked)",
        0o644,
    );
    put(
        r,
        "/etc/pam.d/agentkeys",
        "@include common-auth\n@include common-account\n",
        0o644,
    );
    put(
        r,
        "/etc/pam.d/common-auth",
        "auth\t[success=1 default=ignore]\tpam_unix.so nullok\nauth\trequisite\tpam_deny.so\nauth\trequired\tpam_permit.so\nauth\toptional\tpam_agentkeys.so\n",
        0o644,
    );
    put(
        r,
        "/etc/pam.d/common-session",
        "session\trequired\tpam_unix.so\nsession\toptional\tpam_agentkeys.so\n",
        0o644,
    );
    put(
        r,
        "/etc/pam.d/common-password",
        "password\t[success=1 default=ignore]\tpam_unix.so obscure yescrypt\npassword\toptional\tpam_agentkeys.so\n",
        0o644,
    );
    let state = r.join("var/lib/agentkeys");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    put(
        r,
        "/var/lib/agentkeys/master.key",
        "0123456789abcdef0123456789abcdef",
        0o600,
    );
    t
}

/// `agentkeysctl doctor ARGS` on `bus`.
fn doctor(bus: &str, args: &[&str]) -> Out {
    let mut cmd = Command::new(bin("agentkeysctl"));
    cmd.arg("doctor").args(args).env("AGENTKEYS_BUS", bus);
    run(cmd, None)
}

/// The finding of `check` in a `--json` answer.
fn finding<'a>(json: &'a Value, check: &str) -> &'a Value {
    json.as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == check)
        .unwrap_or_else(|| panic!("no {check} in {json:#}"))
}

/// Asserts the JSON shape: every check once, in order, with only the documented keys, and
/// a fix exactly on warnings and failures.
fn assert_shape(json: &Value) {
    let arr = json.as_array().expect("an array");
    let names: Vec<&str> = arr.iter().map(|f| f["check"].as_str().unwrap()).collect();
    assert_eq!(names, ALL_CHECKS);
    for f in arr {
        let obj = f.as_object().unwrap();
        for k in obj.keys() {
            assert!(
                ["check", "status", "detail", "fix"].contains(&k.as_str()),
                "{f}"
            );
        }
        let status = f["status"].as_str().unwrap();
        assert!(["ok", "warn", "fail", "skip"].contains(&status), "{f}");
        assert!(!f["detail"].as_str().unwrap().is_empty(), "{f}");
        match status {
            "warn" | "fail" => assert!(
                f["fix"].as_str().is_some_and(|x| !x.is_empty()),
                "a {status} without a fix: {f}"
            ),
            _ => assert!(f.get("fix").is_none(), "{f}"),
        }
    }
}

fn assert_kernel_ok(json: &Value) {
    for check in KERNEL_CHECKS {
        let f = finding(json, check);
        if f["status"] != "ok" {
            skip(&format!("kernel feature {check} not usable here: {f}"));
        }
    }
}

fn require_root() -> bool {
    if nix::unistd::Uid::effective().is_root() {
        return true;
    }
    skip("the --root trees must be root-owned, as installed files are: run as root");
    false
}

#[tokio::test]
async fn on_a_ready_host_every_check_passes_and_the_daemon_says_its_version() {
    if !require_root() {
        return;
    }
    let d = Daemon::start();
    let conn = d.connect().await;
    let version = agentkeysd::api::proxies::DaemonProxy::new(&conn)
        .await
        .unwrap()
        .version()
        .await
        .unwrap();
    let features = agentkeysd::api::proxies::DaemonProxy::new(&conn)
        .await
        .unwrap()
        .features()
        .await
        .unwrap();
    let tree = installed_tree();
    let root = tree.path().to_str().unwrap();

    let out = doctor(&d.bus.address, &["--json", "--root", root]);
    let json = out.json();
    assert_shape(&json);
    assert_kernel_ok(&json);
    // The daemon sees the same Landlock ABI and seccomp as the shell doctor runs in.
    let abi = agentkeysd::api::dict::get_u32(&features, "landlock_abi")
        .unwrap()
        .unwrap();
    let landlock = finding(&json, "landlock")["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        landlock.starts_with(&format!("ABI {abi}:")),
        "{abi} vs {landlock}"
    );
    assert_eq!(
        agentkeysd::api::dict::get_bool(&features, "seccomp_filter").unwrap(),
        Some(true)
    );
    let daemon = finding(&json, "daemon");
    assert_eq!(daemon["status"], "ok", "{daemon}");
    let detail = daemon["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("agentkeysd {version} answers")),
        "{detail}"
    );
    assert!(detail.contains("same version as agentkeysctl"), "{detail}");
    for check in ["dbus_policy", "pam_module", "pam_stack", "state_dir"] {
        assert_eq!(finding(&json, check)["status"], "ok", "{json:#}");
    }
    assert!(
        finding(&json, "state_dir")["detail"]
            .as_str()
            .unwrap()
            .contains("master.key mode 0600")
    );
    assert_eq!(out.code, 0, "{}", out.stderr);

    // The same, for people: one aligned line per check and a summary.
    let text = doctor(&d.bus.address, &["--root", root]).ok();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), ALL_CHECKS.len() + 1, "{text}");
    for (line, check) in lines.iter().zip(ALL_CHECKS) {
        assert!(line.starts_with("ok    "), "{line}");
        assert_eq!(line.get(6..6 + check.len()), Some(check), "{line}");
        // Findings start in one column, after the longest check name and two spaces.
        let col = 6 + "user_namespaces".len() + 2;
        assert!(
            line[..col].ends_with("  ") && !line[col..].starts_with(' '),
            "{line}"
        );
    }
    assert!(
        text.ends_with("11 checks: 11 ok, 0 warn, 0 failed, 0 skipped\n"),
        "{text}"
    );
}

#[test]
fn with_no_daemon_the_daemon_check_fails_with_a_fix_and_exit_1() {
    let bus = Bus::start(); // a bus with no agentkeysd on it
    let tree = installed_tree();
    let out = doctor(
        &bus.address,
        &["--json", "--root", tree.path().to_str().unwrap()],
    );
    let json = out.json();
    assert_shape(&json);
    let daemon = finding(&json, "daemon");
    assert_eq!(daemon["status"], "fail", "{daemon}");
    assert!(
        daemon["detail"]
            .as_str()
            .unwrap()
            .contains("agentkeysd is not running on the bus at unix:"),
        "{daemon}"
    );
    assert!(
        daemon["fix"]
            .as_str()
            .unwrap()
            .contains("systemctl start agentkeysd"),
        "{daemon}"
    );
    let err = out.fails_with(1);
    assert!(err.contains("checks failed: daemon"), "{err}");

    // The human form names the failure and prints its fix right under it.
    let text = doctor(&bus.address, &["--root", tree.path().to_str().unwrap()]);
    let stdout = text.stdout();
    let at = stdout.find("FAIL  daemon").expect(&stdout);
    let next = stdout[at..].lines().nth(1).unwrap();
    assert!(next.trim_start().starts_with("fix: "), "{stdout}");
    text.fails_with(1);
}

#[test]
fn an_empty_root_fails_the_installed_file_checks_with_fixes() {
    let bus = Bus::start();
    let empty = tempfile::tempdir().unwrap();
    let out = doctor(
        &bus.address,
        &["--json", "--root", empty.path().to_str().unwrap()],
    );
    let json = out.json();
    assert_shape(&json);
    for (check, fix) in [
        ("dbus_policy", "dev.agentkeys.Daemon1.conf"),
        ("pam_module", "pam_agentkeys.so"),
        ("pam_stack", "/etc/pam.d/agentkeys"),
    ] {
        let f = finding(&json, check);
        assert_eq!(f["status"], "fail", "{f}");
        assert!(f["fix"].as_str().unwrap().contains(fix), "{f}");
    }
    // Not created yet is not broken: the first start creates it.
    assert_eq!(finding(&json, "state_dir")["status"], "warn");
    out.fails_with(1);

    // Installed files that are there but wrong fail too.
    if !require_root() {
        return;
    }
    let tree = installed_tree();
    let r = tree.path();
    put(
        r,
        "/usr/share/dbus-1/system.d/dev.agentkeys.Daemon1.conf",
        "<busconfig/>",
        0o644,
    );
    put(
        r,
        "/usr/lib/x86_64-linux-gnu/security/pam_agentkeys.so",
        "x",
        0o666,
    );
    put(
        r,
        "/etc/pam.d/agentkeys",
        "account required pam_unix.so\n",
        0o644,
    );
    let json = doctor(&bus.address, &["--json", "--root", r.to_str().unwrap()]).json();
    let f = finding(&json, "dbus_policy");
    assert_eq!(f["status"], "fail", "{f}");
    assert!(
        f["detail"]
            .as_str()
            .unwrap()
            .contains("does not let root own"),
        "{f}"
    );
    let f = finding(&json, "pam_module");
    assert_eq!(f["status"], "fail", "{f}");
    assert!(f["fix"].as_str().unwrap().contains("chmod 0644"), "{f}");
    let f = finding(&json, "pam_stack");
    assert_eq!(f["status"], "fail", "{f}");
    assert!(
        f["detail"].as_str().unwrap().contains("no auth stack"),
        "{f}"
    );
}

#[test]
fn a_login_stack_without_the_module_warns_but_does_not_fail() {
    if !require_root() {
        return;
    }
    let bus = Bus::start();
    let tree = installed_tree();
    let r = tree.path();
    put(
        r,
        "/etc/pam.d/common-session",
        "session required pam_unix.so\n",
        0o644,
    );
    put(
        r,
        "/usr/share/pam-configs/agentkeys",
        "Name: AgentKeys\n",
        0o644,
    );
    let json = doctor(&bus.address, &["--json", "--root", r.to_str().unwrap()]).json();
    let f = finding(&json, "pam_stack");
    assert_eq!(f["status"], "warn", "{f}");
    assert!(f["detail"].as_str().unwrap().contains("for session"), "{f}");
    assert_eq!(f["fix"], "sudo pam-auth-update --enable agentkeys");
}

#[test]
fn a_state_dir_with_a_wrong_mode_fails_with_a_chmod_fix() {
    if !require_root() {
        return;
    }
    let bus = Bus::start();
    let tree = installed_tree();
    let state = tree.path().join("var/lib/agentkeys");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = doctor(
        &bus.address,
        &["--json", "--root", tree.path().to_str().unwrap()],
    );
    let f = finding(&out.json(), "state_dir").clone();
    assert_eq!(f["status"], "fail", "{f}");
    assert!(f["detail"].as_str().unwrap().contains("mode 0755"), "{f}");
    assert_eq!(f["fix"], format!("sudo chmod 0700 {}", state.display()));
    out.fails_with(1);

    // A right directory with an exposed master key.
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let key = state.join("master.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let json = doctor(
        &bus.address,
        &["--json", "--root", tree.path().to_str().unwrap()],
    )
    .json();
    let f = finding(&json, "state_dir");
    assert_eq!(f["status"], "fail", "{f}");
    assert_eq!(f["fix"], format!("sudo chmod 0600 {}", key.display()));

    // Owned by someone else.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    nix::unistd::chown(&state, Some(nix::unistd::Uid::from_raw(4242)), None).unwrap();
    let json = doctor(
        &bus.address,
        &["--json", "--root", tree.path().to_str().unwrap()],
    )
    .json();
    let f = finding(&json, "state_dir");
    assert_eq!(f["status"], "fail", "{f}");
    assert!(
        f["fix"]
            .as_str()
            .unwrap()
            .starts_with("sudo chown -R root:root"),
        "{f}"
    );
}

#[test]
fn another_user_is_told_it_cannot_look_inside_the_state_dir_not_failed() {
    let Some(_) = test_user() else { return };
    if !require_root() {
        return;
    }
    let d = Daemon::start();
    let tree = installed_tree();
    let root = tree.path().to_str().unwrap();
    let out = d.ctl_as(
        agentkeys_tests::TEST_USER,
        &["doctor", "--json", "--root", root],
        None,
    );
    let json = out.json();
    assert_shape(&json);
    let f = finding(&json, "state_dir");
    assert_eq!(f["status"], "ok", "{f}");
    assert!(
        f["detail"]
            .as_str()
            .unwrap()
            .contains("cannot look inside (as intended)"),
        "{f}"
    );
    // Unprivileged, the kernel still offers what the sandbox needs on this machine.
    assert_kernel_ok(&json);
    assert_eq!(finding(&json, "daemon")["status"], "ok");
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn help_teaches_and_man_pages_and_completions_know_doctor() {
    let mut cmd = Command::new(bin("agentkeysctl"));
    cmd.args(["doctor", "--help"]);
    let help = run(cmd, None).ok();
    for needle in [
        "--root <DIR>",
        "0 when no check failed (warnings do not fail), 1 when any failed",
        "user_namespaces",
        "fix:",
        "--json",
    ] {
        assert!(
            help.contains(needle),
            "doctor --help lacks {needle:?}:\n{help}"
        );
    }
    let mut cmd = Command::new(bin("agentkeysctl"));
    cmd.args(["completions", "bash"]);
    assert!(run(cmd, None).ok().contains("doctor"));
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin("agentkeysctl"));
    cmd.args(["man", "--out-dir"]).arg(dir.path());
    run(cmd, None).ok();
    let page = std::fs::read_to_string(dir.path().join("agentkeysctl-doctor.1")).unwrap();
    assert!(page.contains("\\-\\-root"), "{page}");
    let mut cmd = Command::new(bin("agentkeysctl"));
    cmd.args(["doctor", "--root", "/nonexistent/agentkeys"]);
    run(cmd, None).fails_with(2);
}
