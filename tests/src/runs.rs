//! Helpers for tests of sandboxed runs through the real daemon and `agentkeysctl run`.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use futures_util::StreamExt;

use crate::{Daemon, EVENT_TIMEOUT};

/// Skips (printing why; a failure in strict mode) unless this kernel can run the sandbox.
pub fn sandbox_available() -> bool {
    use agentkeysd::sandbox::probe;
    if !matches!(
        probe::user_namespaces(),
        probe::UserNamespaces::Available { .. }
    ) {
        crate::skip("user namespaces are not available");
        return false;
    }
    if probe::landlock().abi().is_none() {
        crate::skip("landlock is not enabled");
        return false;
    }
    true
}

/// A `[runner]` uid range of this test process's own, so that runs of test daemons running
/// side by side never share a uid (one daemon per host never has that problem) and a test
/// that looks for its run's processes by uid finds only its own.
pub fn own_uid_range() -> String {
    let first = 0x7100_0000 + (std::process::id() % 4_000_000) * 64;
    format!("[runner]\nuid_range = [{first}, {}]\n", first + 63)
}

/// Stores `secret` as credential `name` of root.
pub fn store(d: &Daemon, name: &str, secret: &str) {
    d.ctl_in(&["store", name], Some(secret.as_bytes())).ok();
}

/// An agent `name` with `auto` grants of `creds` (and the credentials in its scope).
pub fn agent_with(d: &Daemon, name: &str, creds: &[&str]) {
    let scope = creds.join(",");
    let mut args = vec!["agent", "create", name];
    if !creds.is_empty() {
        args.extend(["--scope", scope.as_str()]);
    }
    d.ctl(&args).ok();
    for c in creds {
        d.ctl(&["grant", name, c]).ok();
    }
}

/// `agentkeysctl run ARGS` started in the background with piped stdio.
pub fn spawn_run(d: &Daemon, args: &[&str]) -> Child {
    let mut cmd: Command = d.ctl_command(None, args);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().unwrap()
}

/// The next `JobStateChanged`: (job, state).
async fn next_change(
    changes: &mut agentkeysd::api::proxies::JobStateChangedStream,
) -> (String, String) {
    let sig = tokio::time::timeout(EVENT_TIMEOUT, changes.next())
        .await
        .expect("no JobStateChanged in time")
        .expect("signal stream ended");
    let a = sig.args().unwrap();
    (a.job.to_string(), a.state.to_string())
}

/// Waits for the next run to report `running` (subscribe before starting it) and returns
/// its id.
pub async fn next_running(changes: &mut agentkeysd::api::proxies::JobStateChangedStream) -> String {
    loop {
        let (job, state) = next_change(changes).await;
        if state == "running" {
            return job;
        }
    }
}

/// Waits for run `job`'s end (its first state but `running`) and returns that state.
pub async fn next_end(
    changes: &mut agentkeysd::api::proxies::JobStateChangedStream,
    job: &str,
) -> String {
    loop {
        let (j, state) = next_change(changes).await;
        if j == job && state != "running" {
            return state;
        }
    }
}

/// Pids of live processes whose real uid is `uid` (a run's processes, seen from the host).
/// Zombies are left out: they run nothing and hold no memory or files; only their exit
/// status waits for whoever reaps them (outside the run, after its init died).
pub fn pids_of_uid(uid: u32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(status) =
            std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status"))
        else {
            continue;
        };
        let real = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|u| u.parse::<u32>().ok());
        let zombie = status
            .lines()
            .find_map(|l| l.strip_prefix("State:"))
            .is_some_and(|l| l.trim_start().starts_with('Z'));
        if real == Some(uid) && !zombie {
            out.push(pid);
        }
    }
    out
}

/// Waits (bounded) for `child` and returns its output.
pub fn finish(mut child: Child) -> crate::Out {
    let status = crate::wait_timeout(&mut child, EVENT_TIMEOUT).expect("run did not end in time");
    let mut stdout = Vec::new();
    let mut stderr = String::new();
    use std::io::Read;
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_end(&mut stdout);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    crate::Out {
        code: status.code().unwrap_or(-1),
        stdout,
        stderr,
    }
}
