//! The files of `systemd/`, checked by the tools that will read them on a user's machine:
//! `systemd-analyze verify` and `security` (the unit), `systemd-sysusers` and
//! `systemd-tmpfiles` (into a temporary root), and `dbus-daemon` (the bus policy, which
//! every test bus includes, and the activation file). PID 1 is not systemd here, so the
//! unit is checked, not run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use agentkeys_tests::{Bus, Daemon, EVENT_TIMEOUT, TEST_USER, bin, run, skip, wait_timeout};
use agentkeysd::api::names::BUS_NAME;

/// The highest `systemd-analyze security` exposure this unit may score, in tenths (the
/// unit's header explains every point above 3.0).
const MAX_EXPOSURE_TENTHS: u32 = 42;

/// Where the host keeps its units (merged /usr: /lib/systemd/system is the same).
const HOST_UNITS: &str = "/usr/lib/systemd/system";
/// The unit's path inside a temporary root, as packaging installs it.
const UNIT_IN_ROOT: &str = "/usr/lib/systemd/system/agentkeysd.service";

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../systemd")
        .join(name)
}

fn unit_text() -> String {
    std::fs::read_to_string(shipped("agentkeysd.service")).unwrap()
}

/// True when `tool` runs; otherwise skips with the package that provides it.
fn have(tool: &str, package: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        skip(&format!("{tool} not found (Debian package {package})"));
    }
    found
}

/// A temporary root laid out as Debian's merged /usr, holding the host's units (the
/// targets and sockets ours names), the real `agentkeysd` at /usr/sbin/agentkeysd, and
/// `unit` as agentkeysd.service.
fn unit_root(unit: &str) -> tempfile::TempDir {
    let root = tempfile::Builder::new()
        .prefix("agentkeys-unit-root")
        .tempdir()
        .unwrap();
    let r = root.path();
    for d in [
        "usr/lib/systemd",
        "usr/sbin",
        "usr/bin",
        "etc/systemd/system",
    ] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    for (link, target) in [("lib", "usr/lib"), ("bin", "usr/bin"), ("sbin", "usr/sbin")] {
        std::os::unix::fs::symlink(target, r.join(link)).unwrap();
    }
    let st = Command::new("cp")
        .args(["-a", HOST_UNITS])
        .arg(r.join("usr/lib/systemd/"))
        .status()
        .unwrap();
    assert!(st.success(), "cp -a {HOST_UNITS}");
    let daemon = r.join("usr/sbin/agentkeysd");
    std::fs::copy(bin("agentkeysd"), &daemon).unwrap();
    std::fs::set_permissions(&daemon, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(r.join(UNIT_IN_ROOT.trim_start_matches('/')), unit).unwrap();
    root
}

/// A MANPATH holding agentkeysd(8) and agentkeysctl(1) as `agentkeysctl man --out-dir`
/// renders them (the pages the unit's Documentation= names; packaging installs the same),
/// or None when `man` is missing.
fn man_path(dir: &Path) -> Option<PathBuf> {
    let have_man = Command::new("man")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !have_man {
        skip("man not found (Debian package man-db): Documentation= is not checked");
        return None;
    }
    let pages = dir.join("pages");
    let out = run(
        {
            let mut c = Command::new(bin("agentkeysctl"));
            c.arg("man").arg("--out-dir").arg(&pages);
            c
        },
        None,
    );
    assert_eq!(out.code, 0, "agentkeysctl man: {}", out.stderr);
    for (page, section) in [("agentkeysctl.1", "man1"), ("agentkeysd.8", "man8")] {
        let to = dir.join("man").join(section);
        std::fs::create_dir_all(&to).unwrap();
        std::fs::rename(pages.join(page), to.join(page)).unwrap();
    }
    Some(dir.join("man"))
}

fn verify(root: &Path, manpath: Option<&Path>) -> agentkeys_tests::Out {
    let mut cmd = Command::new("systemd-analyze");
    cmd.arg("verify").arg(format!("--root={}", root.display()));
    match manpath {
        Some(p) => {
            cmd.env("MANPATH", p);
        }
        None => {
            cmd.arg("--man=no");
        }
    }
    cmd.arg(UNIT_IN_ROOT);
    run(cmd, None)
}

#[test]
fn systemd_analyze_verify_has_nothing_to_say_about_the_unit() {
    if !have("systemd-analyze", "systemd") {
        return;
    }
    let root = unit_root(&unit_text());
    let manpath = man_path(root.path());
    let out = verify(root.path(), manpath.as_deref());
    // verify exits 0 on unknown keys and bad values and only warns: any word is a failure.
    assert_eq!(
        (out.code, out.stderr.as_str(), out.stdout().as_str()),
        (0, "", ""),
        "systemd-analyze verify"
    );
}

#[test]
fn systemd_analyze_verify_as_run_here_would_catch_a_mistake() {
    if !have("systemd-analyze", "systemd") {
        return;
    }
    // The same check on the unit with an unknown key, and on a root without the binary.
    let bad = unit_text().replace("[Service]\n", "[Service]\nProtectEverything=yes\n");
    let root = unit_root(&bad);
    let out = verify(root.path(), None);
    assert!(
        out.stderr.contains("Unknown key 'ProtectEverything'"),
        "{out:?}"
    );
    let root = unit_root(&unit_text());
    std::fs::remove_file(root.path().join("usr/sbin/agentkeysd")).unwrap();
    let out = verify(root.path(), None);
    assert!(
        out.stderr
            .contains("/usr/sbin/agentkeysd is not executable"),
        "{out:?}"
    );
}

#[test]
fn the_units_exposure_score_stays_at_its_documented_level() {
    if !have("systemd-analyze", "systemd") {
        return;
    }
    let root = unit_root(&unit_text());
    let mut cmd = Command::new("systemd-analyze");
    cmd.args(["security", "--offline=yes", "--no-pager"])
        .arg(format!("--root={}", root.path().display()))
        .arg(format!("--threshold={MAX_EXPOSURE_TENTHS}"))
        .arg("agentkeysd.service");
    let out = run(cmd, None);
    let stdout = out.stdout();
    let score = stdout
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for agentkeysd.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no score in:\n{stdout}\n{}", out.stderr));
    eprintln!("systemd-analyze security --offline=yes agentkeysd.service: {score}");
    assert_eq!(
        out.code, 0,
        "above --threshold={MAX_EXPOSURE_TENTHS}:\n{stdout}"
    );
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    assert!(
        (score * 10.0).round() as u32 <= MAX_EXPOSURE_TENTHS,
        "{score}"
    );
}

#[test]
fn the_units_capability_bounding_set_is_exactly_what_the_daemon_keeps() {
    let unit = unit_text();
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("CapabilityBoundingSet= in the unit");
    let mut in_unit: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
    let mut kept: Vec<String> = agentkeysd::daemon::harden::KEEP
        .iter()
        .map(|(c, _)| c.to_string())
        .collect();
    in_unit.sort();
    kept.sort();
    assert_eq!(in_unit, kept);
}

#[test]
fn the_unit_asks_for_a_watchdog_and_the_optional_master_key_credential() {
    let unit = unit_text();
    let has = |l: &str| unit.lines().any(|x| x == l);
    assert!(has("Type=notify"));
    assert!(has("NotifyAccess=main"));
    assert!(unit.lines().any(|l| l.starts_with("WatchdogSec=")));
    assert!(has("ExecStart=/usr/sbin/agentkeysd"));
    // A bare name is a search that may find nothing; a path would make a missing file
    // fail the start (see the unit's comment).
    assert!(has("LoadCredentialEncrypted=agentkeys.master"));
    assert!(has("StateDirectory=agentkeys") && has("StateDirectoryMode=0700"));
    assert!(has("RuntimeDirectory=agentkeys"));
}

#[test]
fn sysusers_creates_a_locked_system_account_that_holds_the_agents_uid_range() {
    if !have("systemd-sysusers", "systemd") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let conf = root.path().join("usr/lib/sysusers.d/agentkeys.conf");
    std::fs::create_dir_all(conf.parent().unwrap()).unwrap();
    std::fs::copy(shipped("agentkeys.sysusers.conf"), &conf).unwrap();
    std::fs::create_dir(root.path().join("etc")).unwrap();
    let mut cmd = Command::new("systemd-sysusers");
    cmd.arg(format!("--root={}", root.path().display()));
    let out = run(cmd, None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    let entry = passwd
        .lines()
        .find(|l| l.starts_with("agentkeys:"))
        .unwrap_or_else(|| panic!("{passwd}"));
    let f: Vec<&str> = entry.split(':').collect();
    let uid: u32 = f[2].parse().unwrap();
    assert!(uid > 0 && uid < 1000, "a system uid: {entry}");
    assert_eq!(f[5], "/", "{entry}");
    assert_eq!(f[6], "/usr/sbin/nologin", "{entry}");
    let shadow = std::fs::read_to_string(root.path().join("etc/shadow")).unwrap();
    let sh = shadow
        .lines()
        .find(|l| l.starts_with("agentkeys:"))
        .unwrap();
    assert!(
        sh.split(':').nth(1).unwrap().starts_with('!'),
        "locked: {sh}"
    );
    let group = std::fs::read_to_string(root.path().join("etc/group")).unwrap();
    assert!(
        group.lines().any(|l| l.starts_with("agentkeys:")),
        "{group}"
    );
}

#[test]
fn tmpfiles_makes_the_state_directory_root_only_and_puts_its_mode_back() {
    if !have("systemd-tmpfiles", "systemd") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let conf = root.path().join("usr/lib/tmpfiles.d/agentkeys.conf");
    std::fs::create_dir_all(conf.parent().unwrap()).unwrap();
    std::fs::copy(shipped("agentkeys.tmpfiles.conf"), &conf).unwrap();
    let state = root.path().join("var/lib/agentkeys");
    let tmpfiles = || {
        let mut cmd = Command::new("systemd-tmpfiles");
        cmd.arg("--create")
            .arg(format!("--root={}", root.path().display()));
        let out = run(cmd, None);
        assert_eq!(out.code, 0, "{}", out.stderr);
    };
    tmpfiles();
    let meta = std::fs::metadata(&state).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.mode() & 0o7777, 0o700);
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
    // A restore from backup left it open to everyone: the next boot closes it again,
    // without touching what is inside.
    std::fs::write(state.join("agentkeys.db"), b"kept").unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    tmpfiles();
    assert_eq!(std::fs::metadata(&state).unwrap().mode() & 0o7777, 0o700);
    assert_eq!(std::fs::read(state.join("agentkeys.db")).unwrap(), b"kept");
}

/// `dbus-send` on `bus` as `user` (None: root).
fn dbus_send(bus: &Bus, user: Option<&str>, args: &[&str]) -> agentkeys_tests::Out {
    let mut cmd = match user {
        None => Command::new("dbus-send"),
        Some(u) => {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid",
                u,
                "--regid",
                u,
                "--clear-groups",
                "--",
                "dbus-send",
            ]);
            c
        }
    };
    cmd.arg(format!("--bus={}", bus.address))
        .arg("--print-reply")
        .args(args);
    run(cmd, None)
}

fn request_name(bus: &Bus, user: Option<&str>) -> agentkeys_tests::Out {
    dbus_send(
        bus,
        user,
        &[
            "--dest=org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.RequestName",
            &format!("string:{BUS_NAME}"),
            // DBUS_NAME_FLAG_DO_NOT_QUEUE
            "uint32:4",
        ],
    )
}

#[tokio::test]
async fn under_the_shipped_policy_root_owns_the_name_and_any_user_may_call_it() {
    let Some(test_uid) = agentkeys_tests::test_user() else {
        return;
    };
    // The harness's bus includes systemd/dev.agentkeys.Daemon1.conf as shipped.
    let mut d = Daemon::start();
    let conn = d.connect().await;
    let dbus = zbus::fdo::DBusProxy::new(&conn).await.unwrap();
    let owner_uid = dbus
        .get_connection_unix_user(BUS_NAME.try_into().unwrap())
        .await
        .unwrap();
    assert_eq!(owner_uid, 0);

    // Another user calls a method (WhoAmI) and is told who it is.
    let who = d.ctl_as(TEST_USER, &["--json", "whoami"], None);
    let v = who.json();
    assert_eq!(who.code, 0, "{}", who.stderr);
    assert_eq!(v["uid"], test_uid, "{v}");

    // With the name free, that user may not take it, and root may.
    d.kill9();
    let out = request_name(&d.bus, Some(TEST_USER));
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("AccessDenied"), "{}", out.stderr);
    let out = request_name(&d.bus, None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout().contains("uint32 1"),
        "primary owner: {}",
        out.stdout()
    );
}

#[test]
fn under_the_shipped_policy_any_user_hears_the_daemons_signals() {
    let Some(_) = agentkeys_tests::test_user() else {
        return;
    };
    let d = Daemon::start();
    // The user's own tools: a watcher (a desktop notifier would do the same) and a pair.
    let home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let as_user = |args: &[&str]| {
        let mut c = d.ctl_command(Some(TEST_USER), args);
        c.env("HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    };
    let mut watch = as_user(&["--json", "pending", "--watch"]).spawn().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(watch.stdout.take().unwrap()));
    // Subscribed once the listing (empty) is out: wait for its stderr notice.
    let mut err = std::io::BufRead::lines(std::io::BufReader::new(watch.stderr.take().unwrap()));
    loop {
        let line = err.next().expect("the watcher ended").unwrap();
        if line.contains("waiting for requests") {
            break;
        }
    }
    let mut pair = as_user(&["pair", "--name", "heard", "--scope", "github"])
        .spawn()
        .unwrap();
    // RequestOpened, a signal from the daemon's name, reached the user's connection.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let opened = loop {
        let line = rx
            .recv_timeout(EVENT_TIMEOUT)
            .expect("no RequestOpened line from the user's watcher");
        if line.contains("\"opened\"") {
            break line;
        }
    };
    assert!(opened.contains("heard"), "{opened}");
    for child in [&mut pair, &mut watch] {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        wait_timeout(child, EVENT_TIMEOUT).expect("did not stop on SIGTERM");
    }
}

#[tokio::test]
async fn dbus_daemon_reads_the_activation_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        shipped("dev.agentkeys.Daemon1.service"),
        dir.path().join("dev.agentkeys.Daemon1.service"),
    )
    .unwrap();
    let bus = Bus::start_with_config(&format!(
        "  <servicedir>{}</servicedir>\n",
        dir.path().display()
    ));
    let conn = bus.connect().await;
    let dbus = zbus::fdo::DBusProxy::new(&conn).await.unwrap();
    let names = dbus.list_activatable_names().await.unwrap();
    assert!(names.iter().any(|n| n.as_str() == BUS_NAME), "{names:?}");
    let text = std::fs::read_to_string(shipped("dev.agentkeys.Daemon1.service")).unwrap();
    assert!(
        text.lines()
            .any(|l| l == "SystemdService=agentkeysd.service")
    );
    assert!(text.lines().any(|l| l == "User=root"));
}
