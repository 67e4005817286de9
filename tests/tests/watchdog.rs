//! The systemd watchdog: the real daemon, a test datagram socket as `NOTIFY_SOCKET`, and
//! `WATCHDOG_USEC`/`WATCHDOG_PID` set as systemd sets them for `WatchdogSec=`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agentkeys_tests::{Daemon, DaemonOpts, EVENT_TIMEOUT, wait_timeout};

const PING: &str = "WATCHDOG=1";

fn opts(env: &[(&str, &str)]) -> DaemonOpts {
    DaemonOpts {
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

fn pings(messages: &[String]) -> usize {
    messages
        .iter()
        .filter(|m| m.lines().any(|l| l == PING))
        .count()
}

/// Waits up to `window` for messages; returns how many were watchdog pings.
fn pings_within(d: &mut Daemon, window: Duration) -> usize {
    let t0 = Instant::now();
    let mut n = 0;
    while let Some(left) = window.checked_sub(t0.elapsed()) {
        match d.next_notification(left.max(Duration::from_millis(1))) {
            Some(m) if m.lines().any(|l| l == PING) => n += 1,
            Some(_) => {}
            None => break,
        }
    }
    n
}

#[test]
fn the_daemon_pings_the_watchdog_repeatedly_while_it_serves_and_stops_before_stopping() {
    // 200 ms: systemd expects a ping within that; the daemon pings every 100 ms.
    let mut d = Daemon::start_with(opts(&[("WATCHDOG_USEC", "200000")]));
    let t0 = Instant::now();
    for i in 0..5 {
        let msg = d
            .next_notification(EVENT_TIMEOUT)
            .unwrap_or_else(|| panic!("no watchdog ping #{i} within {EVENT_TIMEOUT:?}"));
        assert_eq!(msg.trim_end(), PING, "ping #{i}");
    }
    eprintln!(
        "5 pings in {:?} (WATCHDOG_USEC=200000: one every ~100 ms expected)",
        t0.elapsed()
    );
    // Still serving while it pings.
    d.ctl(&["status"]).ok();
    assert!(d.stop().success());
    let stopping = d
        .notified
        .iter()
        .position(|m| m.lines().any(|l| l == "STOPPING=1"))
        .expect("STOPPING=1 was sent");
    assert_eq!(
        pings(&d.notified[stopping..]),
        0,
        "a ping after STOPPING=1: {:?}",
        d.notified
    );
}

#[test]
fn without_watchdog_usec_the_daemon_never_pings() {
    let mut d = Daemon::start();
    d.ctl(&["status"]).ok();
    assert_eq!(pings_within(&mut d, Duration::from_secs(1)), 0);
    assert!(d.stop().success());
    assert_eq!(pings(&d.notified), 0, "{:?}", d.notified);
}

#[test]
fn a_watchdog_meant_for_another_process_is_not_pinged() {
    // What a child inherits from a parent that systemd watches: WATCHDOG_PID is not ours.
    // 100 ms asked, so a daemon that (wrongly) honoured it would ping ~20 times in 1 s.
    let mut d = Daemon::start_with(opts(&[("WATCHDOG_USEC", "100000"), ("WATCHDOG_PID", "1")]));
    assert_eq!(pings_within(&mut d, Duration::from_secs(1)), 0);
    assert!(d.stop().success());
    assert_eq!(pings(&d.notified), 0, "{:?}", d.notified);
}

#[test]
fn a_watchdog_pid_naming_the_daemon_itself_is_honoured() {
    // As systemd starts it: WATCHDOG_PID is the service's main pid, known only once the
    // process exists, so a shell sets it to its own pid and execs the daemon.
    let mut d = Daemon::start();
    assert!(d.stop().success());
    let notify_path = d.dir.path().join("notify-own-pid.sock");
    let sock = UnixDatagram::bind(&notify_path).unwrap();
    sock.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
    let inner = d.command();
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$0\" \"$@\"")
        .arg(inner.get_program())
        .args(inner.get_args())
        .env_clear()
        .envs(
            inner
                .get_envs()
                .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))),
        )
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "200000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(d.dir.path().join("own-pid.log")).unwrap());
    let mut child = cmd.spawn().unwrap();
    let mut buf = [0u8; 4096];
    let mut seen = Vec::new();
    while pings(&seen) < 3 {
        let n = sock.recv(&mut buf).unwrap_or_else(|e| {
            let log = std::fs::read_to_string(d.dir.path().join("own-pid.log"));
            panic!("no notification within {EVENT_TIMEOUT:?} ({e}): {seen:?}\n{log:?}")
        });
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(seen[0].lines().any(|l| l == "READY=1"), "{seen:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = wait_timeout(&mut child, EVENT_TIMEOUT).expect("daemon did not stop");
    assert!(status.success(), "{status:?}");
}
