//! `agentkeysctl run` through the real daemon, the real runner and the real kernel: exit
//! status, stdio and terminal pass through; granted keys (and only they) are injected;
//! the agent reads over MCP from inside; revocation, a withdrawn grant, cancel and the
//! timeout kill every process of the run; bad requests change nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;
use std::os::unix::fs::MetadataExt;

use agentkeys_tests::runs::{
    agent_with, finish, next_end, next_running, pids_of_uid, sandbox_available, spawn_run, store,
};
use agentkeys_tests::{Daemon, DaemonOpts};
use agentkeysd::api::proxies::JobsProxy;

fn daemon() -> Daemon {
    Daemon::start_with(DaemonOpts {
        config: format!(
            "[approvals]\nauthenticate = \"none\"\n{}",
            agentkeys_tests::runs::own_uid_range()
        ),
        ..Default::default()
    })
}

#[test]
fn a_run_passes_stdout_stderr_and_the_exit_code_through() {
    if !sandbox_available() {
        return;
    }
    let d = daemon();
    let out = d.ctl(&["run", "--", "sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(out.code, 7, "{}", out.stderr);
    assert_eq!(out.stdout(), "out\n");
    assert!(out.stderr.contains("err"), "{}", out.stderr);
    let ok = d.ctl(&["run", "--", "/bin/true"]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    // A signal is reported as a shell does: 128 + N.
    let killed = d.ctl(&["run", "--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(killed.code, 128 + libc::SIGTERM, "{}", killed.stderr);
    let missing = d.ctl(&["run", "--", "/no/such/program"]);
    assert_eq!(missing.code, 127, "{}", missing.stderr);
    // The runs took their /etc from one snapshot in the daemon's cache, root's alone.
    let cache = d.runtime_dir().join("etc-cache");
    let meta = std::fs::metadata(&cache).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o700
    );
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1);
}

#[test]
fn granted_keys_are_injected_by_variable_and_file_and_nothing_else() {
    if !sandbox_available() {
        return;
    }
    let d = daemon();
    store(&d, "anthropic", "sk-ant-injected-0001");
    store(&d, "github", "ghp_injected_0002");
    store(&d, "openai", "sk-openai-confirm-0003");
    store(&d, "stripe", "sk-stripe-not-granted");
    agent_with(&d, "bot", &["anthropic", "github"]);
    d.ctl(&["agent", "create", "other"]).ok();
    d.ctl(&["grant", "bot", "openai", "--mode", "confirm"]).ok();
    let script = "echo A=$ANTHROPIC_API_KEY; echo G=${GITHUB_TOKEN-unset}; \
                  echo O=${OPENAI_API_KEY-unset}; echo S=${STRIPE_API_KEY-unset}; \
                  cat /run/agentkeys/secrets/github; echo; \
                  stat -c '%a %u' /run/agentkeys/secrets/github; ls /run/agentkeys/secrets; \
                  echo M=$AGENTKEYS_MCP_SOCKET; id -u";
    let out = d.ctl(&[
        "--agent", "bot", "run", "--file", "github", "--", "sh", "-c", script,
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = out.stdout();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "A=sk-ant-injected-0001",
            "G=unset",
            "O=unset",
            "S=unset",
            "ghp_injected_0002",
            "400 1000",
            "github",
            "M=/run/agentkeys/mcp.sock",
            "1000"
        ],
        "{}",
        out.stderr
    );
    // --env names the variable; an ungranted or confirm-mode credential is refused.
    let named = d.ctl(&[
        "--agent",
        "bot",
        "run",
        "--env",
        "CLAUDE_KEY=anthropic",
        "--",
        "sh",
        "-c",
        "echo $CLAUDE_KEY ${ANTHROPIC_API_KEY-unset}",
    ]);
    assert_eq!(
        named.stdout(),
        "sk-ant-injected-0001 unset\n",
        "{}",
        named.stderr
    );
    let e = d
        .ctl(&["--agent", "bot", "run", "--env", "K=stripe", "--", "true"])
        .fails_with(2);
    assert!(e.contains("not granted"), "{e}");
    let e = d
        .ctl(&["--agent", "bot", "run", "--file", "openai", "--", "true"])
        .fails_with(2);
    assert!(e.contains("confirm"), "{e}");
    let e = d
        .ctl(&["run", "--env", "K=anthropic", "--", "true"])
        .fails_with(2);
    assert!(e.contains("--agent"), "{e}");
    // An agent without grants gets nothing; every injected read is audited.
    let none = d.ctl(&[
        "--agent",
        "other",
        "run",
        "--",
        "sh",
        "-c",
        "env | grep -c _API_KEY || true",
    ]);
    assert_eq!(none.stdout().trim(), "0");
    let audit = d.ctl(&["--json", "audit", "list"]).stdout();
    assert!(
        audit.contains("run.start") && audit.contains("run.end"),
        "{audit}"
    );
}

#[test]
fn the_agent_reads_a_credential_over_mcp_from_inside_its_sandbox() {
    if !sandbox_available() {
        return;
    }
    let d = daemon();
    store(&d, "github", "ghp_over_mcp_0004");
    agent_with(&d, "bot", &["github"]);
    let requests = [
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"sh","version":"1"}}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_credential","arguments":{"service":"github"}}}"#,
    ]
    .join("\n");
    let script = format!("printf '%s\\n' '{requests}' | agentkeysctl mcp");
    let out = d.ctl(&["--agent", "bot", "run", "--", "sh", "-c", &script]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = out.stdout();
    assert!(text.contains("ghp_over_mcp_0004"), "{text}");
    assert!(text.contains("\"id\":2"), "{text}");
}

#[tokio::test]
async fn revoking_the_agent_kills_every_process_of_its_run() {
    if !sandbox_available() {
        return;
    }
    let d = daemon();
    store(&d, "github", "ghp_revoked_0005");
    agent_with(&d, "bot", &["github"]);
    let conn = d.connect().await;
    let jobs = JobsProxy::new(&conn).await.unwrap();
    let mut changes = jobs.receive_job_state_changed().await.unwrap();
    let child = spawn_run(
        &d,
        &[
            "--agent",
            "bot",
            "run",
            "--",
            "sh",
            "-c",
            "sleep 1000 & sleep 1000 & wait",
        ],
    );
    let job = next_running(&mut changes).await;
    let info = jobs.get(&job).await.unwrap();
    let uid = agentkeysd::api::dict::get_u32(&info, "runner_uid")
        .unwrap()
        .unwrap();
    assert!(
        uid >= 0x7000_0000,
        "runner uid {uid} is outside the default range"
    );
    assert!(
        !pids_of_uid(uid).is_empty(),
        "the run's processes run as its agent's uid"
    );
    d.ctl(&["agent", "revoke", "bot"]).ok();
    // Revoke returns once the processes are gone.
    assert_eq!(pids_of_uid(uid), Vec::<i32>::new());
    let out = finish(child);
    assert_eq!(out.code, 137, "{}", out.stderr);
    assert!(out.stderr.contains("agent revoked"), "{}", out.stderr);
    let info = jobs.get(&job).await.unwrap();
    assert_eq!(
        agentkeysd::api::dict::get_str(&info, "state")
            .unwrap()
            .as_deref(),
        Some("killed")
    );
    // A revoked agent cannot start again.
    d.ctl(&["--agent", "bot", "run", "--", "true"])
        .fails_with(3);
}

#[tokio::test]
async fn withdrawing_a_grant_cancel_and_timeout_end_runs() {
    if !sandbox_available() {
        return;
    }
    let d = daemon();
    store(&d, "github", "ghp_ungrant_0006");
    agent_with(&d, "bot", &["github"]);
    let conn = d.connect().await;
    let jobs = JobsProxy::new(&conn).await.unwrap();
    let mut changes = jobs.receive_job_state_changed().await.unwrap();

    let child = spawn_run(&d, &["--agent", "bot", "run", "--", "sleep", "1000"]);
    next_running(&mut changes).await;
    d.ctl(&["ungrant", "bot", "github"]).ok();
    let out = finish(child);
    assert_eq!(out.code, 137);
    assert!(out.stderr.contains("grant"), "{}", out.stderr);

    let child = spawn_run(&d, &["run", "--", "sleep", "1000"]);
    let job = next_running(&mut changes).await;
    jobs.cancel(&job).await.unwrap();
    let out = finish(child);
    assert_eq!(out.code, 137);
    assert!(out.stderr.contains("cancelled"), "{}", out.stderr);

    let out = d.ctl(&["run", "--timeout", "1s", "--", "sleep", "1000"]);
    assert_eq!(out.code, 137);
    assert!(out.stderr.contains("timed out"), "{}", out.stderr);
}

#[test]
fn sigint_without_a_terminal_reaches_the_command() {
    if !sandbox_available() {
        return;
    }
    let d = daemon();
    // The command says when its trap is set: `running` only means it was started, and a
    // SIGINT that reaches `sh` before `trap` ran would end it with 130 instead.
    let mut child = spawn_run(
        &d,
        &[
            "run",
            "--",
            "sh",
            "-c",
            "trap 'echo got INT; exit 3' INT; echo trapped; sleep 1000 & wait",
        ],
    );
    let mut line = [0u8; 8];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut line)
        .expect("the command never said its trap was set");
    assert_eq!(&line, b"trapped\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = finish(child);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert_eq!(out.stdout(), "got INT\n");
}

#[test]
fn an_interactive_run_gets_a_terminal_of_its_own() {
    if !sandbox_available() {
        return;
    }
    let d = daemon();
    // `script` gives agentkeysctl a terminal; the command must see one too, and its exit
    // status must come back through both.
    let inner = format!(
        "AGENTKEYS_BUS={} {} run -- sh -c 'test -t 0 && test -t 1 && echo TERMINAL-OK; exit 5'",
        d.bus.address,
        agentkeys_tests::bin("agentkeysctl").display()
    );
    let out = agentkeys_tests::run(
        {
            let mut c = std::process::Command::new("script");
            c.args(["-qec", &inner, "/dev/null"]);
            c
        },
        None,
    );
    assert_eq!(out.code, 5, "{} {}", out.stdout(), out.stderr);
    assert!(out.stdout().contains("TERMINAL-OK"), "{}", out.stdout());
}

#[test]
fn bad_run_requests_are_refused_and_change_nothing() {
    if !sandbox_available() {
        return;
    }
    let d = daemon();
    d.ctl(&["--agent", "nobody", "run", "--", "true"])
        .fails_with(4);
    let e = d.ctl(&["run", "--net", "wifi", "--", "true"]).fails_with(2);
    assert!(e.contains("wifi"), "{e}");
    d.ctl(&["run", "--memory", "2X", "--", "true"])
        .fails_with(2);
    d.ctl(&["run"]).fails_with(2);
    // A workspace must be the caller's own.
    if let Some(uid) = agentkeys_tests::test_user() {
        let ws = tempfile::tempdir().unwrap();
        let e = d
            .ctl_as(
                agentkeys_tests::TEST_USER,
                &[
                    "run",
                    "--workspace",
                    ws.path().to_str().unwrap(),
                    "--",
                    "true",
                ],
                None,
            )
            .fails_with(3);
        assert!(e.contains("belongs to uid 0"), "{e} (uid {uid})");
    }
    let audit = d.ctl(&["--json", "audit", "list"]).stdout();
    assert!(!audit.contains("run.start"), "{audit}");
}

#[tokio::test]
async fn jobs_over_dbus_refuse_malformed_calls_and_other_owners() {
    if !sandbox_available() {
        return;
    }
    let d = daemon();
    let conn = d.connect().await;
    let jobs = JobsProxy::new(&conn).await.unwrap();
    let empty = std::collections::HashMap::new();
    let e = jobs.run(empty).await.unwrap_err();
    assert_eq!(e.kind(), agentkeysd::api::ErrorKind::InvalidArgument, "{e}");
    let mut spec = std::collections::HashMap::new();
    spec.insert(
        "argv",
        zbus::zvariant::Variant::from(vec!["true".to_owned()]),
    );
    let e = jobs.run(spec).await.unwrap_err();
    assert!(e.message().contains("file descriptor"), "{e}");
    let mut spec = std::collections::HashMap::new();
    spec.insert("argv", zbus::zvariant::Variant::from(7u32));
    assert_eq!(
        jobs.run(spec).await.unwrap_err().kind(),
        agentkeysd::api::ErrorKind::InvalidArgument
    );
    assert_eq!(
        jobs.get("run_nope").await.unwrap_err().kind(),
        agentkeysd::api::ErrorKind::NotFound
    );
    let mut changes = jobs.receive_job_state_changed().await.unwrap();
    let child = spawn_run(&d, &["run", "--", "sleep", "1000"]);
    let job = next_running(&mut changes).await;
    let e = jobs.signal(&job, libc::SIGKILL).await.unwrap_err();
    assert_eq!(e.kind(), agentkeysd::api::ErrorKind::InvalidArgument);
    if agentkeys_tests::test_user().is_some() {
        let e = d.ctl_as(agentkeys_tests::TEST_USER, &["run", "--", "true"], None);
        assert_eq!(e.code, 0, "another owner runs too: {}", e.stderr);
    }
    // The daemon kept serving through all of it.
    jobs.cancel(&job).await.unwrap();
    assert_eq!(finish(child).code, 137);
    let ws = tempfile::tempdir().unwrap();
    let out = d.ctl(&[
        "run",
        "--workspace",
        ws.path().to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "echo made > /workspace/f",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let meta = std::fs::metadata(ws.path().join("f")).unwrap();
    assert_eq!(
        meta.uid(),
        0,
        "a file the agent made belongs to the owner on the host"
    );
}

#[test]
fn an_owner_who_is_not_root_has_its_ids_inside_and_owns_what_the_agent_writes() {
    if !sandbox_available() {
        return;
    }
    let Some(uid) = agentkeys_tests::test_user() else {
        return;
    };
    let gid = nix::unistd::User::from_uid(uid.into())
        .unwrap()
        .unwrap()
        .gid
        .as_raw();
    let d = daemon();
    let ws = tempfile::tempdir().unwrap();
    nix::unistd::chown(
        ws.path(),
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .unwrap();
    let out = d.ctl_as(
        agentkeys_tests::TEST_USER,
        &[
            "run",
            "--workspace",
            ws.path().to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "id -u; id -g; echo made > /workspace/f; stat -c %u:%g /workspace/f",
        ],
        None,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    // Inside, the owner's ids (outside, the agent's own: see the escape tests), and the
    // workspace shows the owner's files as the agent's.
    assert_eq!(out.stdout(), format!("{uid}\n{gid}\n{uid}:{gid}\n"));
    let meta = std::fs::metadata(ws.path().join("f")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (uid, gid));
}

/// `Run`'s `status` pipe: one JSON line once the run has ended and its end is recorded
/// (`Get` says the same by then), then EOF; a killed run's line says so. What is not the
/// write end of a pipe is refused, and a client that filled its pipe gets no line but
/// changes nothing: the daemon keeps serving, and `Get` still has the end.
#[tokio::test]
async fn the_status_pipe_tells_the_end_once_recorded_and_a_full_one_changes_nothing() {
    use std::collections::HashMap;
    use std::os::fd::OwnedFd;
    use zbus::zvariant::Variant;
    if !sandbox_available() {
        return;
    }
    let d = daemon();
    let conn = d.connect().await;
    let jobs = JobsProxy::new(&conn).await.unwrap();
    let null = || -> OwnedFd { std::fs::File::open("/dev/null").unwrap().into() };
    let stdio = [null(), null(), null()];
    // `Run`'s options: `argv`, stdio on /dev/null, and `status`.
    fn spec<'a>(
        argv: &[&str],
        stdio: &'a [OwnedFd; 3],
        status: &'a OwnedFd,
    ) -> HashMap<&'static str, Variant<'a>> {
        let mut spec = HashMap::new();
        let argv: Vec<String> = argv.iter().map(|a| (*a).to_owned()).collect();
        spec.insert("argv", Variant::from(argv));
        let fds = stdio.iter().chain([status]);
        for (key, fd) in ["stdin", "stdout", "stderr", "status"].into_iter().zip(fds) {
            spec.insert(key, Variant::from(zbus::Fd::from(fd)));
        }
        spec
    }
    // Everything until EOF (bounded: a pipe never closed is a failure, not a hang).
    let read_all = |rd: OwnedFd| async move {
        let read = tokio::task::spawn_blocking(move || {
            let mut s = String::new();
            std::fs::File::from(rd).read_to_string(&mut s).unwrap();
            s
        });
        tokio::time::timeout(agentkeys_tests::EVENT_TIMEOUT, read)
            .await
            .expect("the status pipe was not closed in time")
            .unwrap()
    };
    // Exactly one line, then EOF.
    let line = |s: &str| -> serde_json::Value {
        let line = s
            .strip_suffix('\n')
            .unwrap_or_else(|| panic!("not one line: {s:?}"));
        assert!(!line.contains('\n'), "more than one line: {s:?}");
        serde_json::from_str(line).unwrap()
    };

    // An exit: the line, then EOF; the end is in `Get` already.
    let (rd, wr) = nix::unistd::pipe().unwrap();
    let job = jobs
        .run(spec(&["sh", "-c", "exit 3"], &stdio, &wr))
        .await
        .unwrap();
    drop(wr);
    let got = read_all(rd).await;
    assert_eq!(
        line(&got),
        serde_json::json!({"state": "exited", "exit_code": 3})
    );
    let info = jobs.get(&job).await.unwrap();
    assert_eq!(
        agentkeysd::api::dict::get_str(&info, "state")
            .unwrap()
            .as_deref(),
        Some("exited")
    );

    // A kill: said so, with the status a shell would give.
    let (rd, wr) = nix::unistd::pipe().unwrap();
    let job = jobs
        .run(spec(&["sleep", "1000"], &stdio, &wr))
        .await
        .unwrap();
    drop(wr);
    jobs.cancel(&job).await.unwrap();
    let got = read_all(rd).await;
    assert_eq!(
        line(&got),
        serde_json::json!({"state": "killed", "exit_code": 137})
    );

    // Not the write end of a pipe: refused, nothing started.
    let (rd, wr) = nix::unistd::pipe().unwrap();
    let file: OwnedFd = tempfile::tempfile().unwrap().into();
    for bad in [&rd, &file] {
        let e = jobs.run(spec(&["true"], &stdio, bad)).await.unwrap_err();
        assert_eq!(e.kind(), agentkeysd::api::ErrorKind::InvalidArgument, "{e}");
        assert!(e.message().contains("status"), "{e}");
    }
    assert!(
        jobs.list().await.unwrap().len() == 2,
        "the refused runs left no record"
    );
    drop(wr);

    // A full pipe: the line is dropped, not waited for.
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK).unwrap();
    while nix::unistd::write(&wr, &[b'x'; 4096]).is_ok() {}
    let mut changes = jobs.receive_job_state_changed().await.unwrap();
    let job = jobs.run(spec(&["true"], &stdio, &wr)).await.unwrap();
    drop(wr);
    // The end is signalled after the status pipe was tried.
    assert_eq!(next_end(&mut changes, &job).await, "exited");
    let mut rd = std::fs::File::from(rd);
    let mut left = Vec::new();
    let _ = rd.read_to_end(&mut left);
    assert!(
        left.iter().all(|&b| b == b'x'),
        "nothing was added to a full pipe"
    );
    let out = d.ctl(&["run", "--", "sh", "-c", "exit 4"]);
    assert_eq!(out.code, 4, "the daemon kept serving: {}", out.stderr);
}

/// More runs at once than the daemon keeps warm runners (`jobs::warm::SPARES`, 2): the
/// ones that find none start cold. Every run still runs, passes its output and exit code
/// through, and its end is told exactly once.
#[tokio::test]
async fn more_runs_at_once_than_warm_runners_all_run_and_each_end_is_told_once() {
    if !sandbox_available() {
        return;
    }
    const RUNS: usize = 5;
    let d = daemon();
    let conn = d.connect().await;
    let jobs = JobsProxy::new(&conn).await.unwrap();
    let mut changes = jobs.receive_job_state_changed().await.unwrap();
    // Each run waits for a line on its stdin, so all of them are running at once.
    let mut children: Vec<std::process::Child> = (0..RUNS)
        .map(|i| {
            let script = format!("read line; echo \"$line {i}\"; exit {}", 10 + i);
            let mut cmd = d.ctl_command(None, &["run", "--", "sh", "-c", &script]);
            cmd.stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            cmd.spawn().unwrap()
        })
        .collect();
    let mut seen: std::collections::HashMap<String, Vec<String>> = Default::default();
    while seen.len() < RUNS {
        let job = next_running(&mut changes).await;
        seen.entry(job).or_default().push("running".into());
    }
    for child in &mut children {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"go\n").unwrap();
    }
    for (i, child) in children.into_iter().enumerate() {
        let out = finish(child);
        assert_eq!(out.code, 10 + i as i32, "{}", out.stderr);
        assert_eq!(out.stdout(), format!("go {i}\n"));
    }
    // A last run, started after every other ended: its end closes what is counted. (A
    // second end of an earlier run would come from that run's own task right after its
    // first, before its client even exited.)
    let out = d.ctl(&["run", "--", "/bin/true"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let first: Vec<String> = seen.keys().cloned().collect();
    loop {
        use futures_util::StreamExt;
        let sig = tokio::time::timeout(agentkeys_tests::EVENT_TIMEOUT, changes.next())
            .await
            .expect("no JobStateChanged in time")
            .expect("signal stream ended");
        let a = sig.args().unwrap();
        seen.entry(a.job.to_string())
            .or_default()
            .push(a.state.to_string());
        if !first.iter().any(|j| j == a.job) && a.state != "running" {
            break;
        }
    }
    assert_eq!(seen.len(), RUNS + 1);
    for (job, states) in &seen {
        assert_eq!(
            states,
            &["running".to_owned(), "exited".to_owned()],
            "run {job} was told as {states:?}"
        );
    }
}

/// Groups of this test under its own, one per hierarchy the daemon uses, each `0555` like a
/// hierarchy's root directory; removed (with whatever the daemon left in them) on drop.
struct UnwritableGroups(Vec<std::path::PathBuf>);

impl UnwritableGroups {
    fn make(tag: &str) -> UnwritableGroups {
        use agentkeysd::sandbox::{cgroups, run_cgroups};
        use std::os::unix::fs::PermissionsExt;
        let layout = cgroups::read_layout().unwrap();
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let mut at: Vec<_> = layout
            .v2
            .iter()
            .filter(|h| !h.read_only)
            .map(|h| (h, None))
            .collect();
        // The v1 hierarchies of the controllers runs use, as RunCgroups::prepare picks them
        // (joining others, cpuset's, would need their settings first).
        let used = |h: &&cgroups::Hierarchy| {
            !h.read_only
                && h.controllers
                    .iter()
                    .any(|c| c == "freezer" || cgroups::RUNNER_CONTROLLERS.contains(&c.as_str()))
        };
        at.extend(layout.v1.iter().filter(used).map(|h| (h, Some(h))));
        // Each is owned (and removed on drop) from the moment it exists.
        let mut groups = UnwritableGroups(Vec::new());
        for (h, v1) in at {
            let base = run_cgroups::own_group(&own, v1).unwrap_or_default();
            let dir = h
                .mount_point
                .join(base.trim_start_matches('/'))
                .join(format!("{tag}-{}", std::process::id()));
            std::fs::create_dir(&dir).unwrap();
            groups.0.push(dir.clone());
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        }
        groups
    }
}

impl Drop for UnwritableGroups {
    fn drop(&mut self) {
        for dir in &self.0 {
            // Deepest first: the runs' groups, the daemon's parent, this one.
            let mut all: Vec<_> = walk_dirs(dir);
            all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
            for d in all {
                // A group whose last process was just reaped can refuse for a moment (its
                // release is asynchronous); once seen left behind by a pass of the suite.
                for _ in 0..200 {
                    match std::fs::remove_dir(&d) {
                        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                            std::thread::sleep(std::time::Duration::from_millis(5))
                        }
                        _ => break,
                    }
                }
            }
        }
    }
}

/// Groups of this test's own ([`UnwritableGroups`]), or `None` (the reason said) where runs
/// or such groups are unavailable.
fn test_groups(tag: &str) -> Option<UnwritableGroups> {
    if !sandbox_available() {
        return None;
    }
    let groups = UnwritableGroups::make(tag);
    if groups.0.is_empty() {
        agentkeys_tests::skip("no writable cgroup hierarchy to start the daemon in");
        return None;
    }
    Some(groups)
}

/// A daemon started in `groups`, as if systemd had started it there.
fn daemon_in(groups: &UnwritableGroups) -> Daemon {
    Daemon::start_with(DaemonOpts {
        config: format!(
            "[approvals]\nauthenticate = \"none\"\n{}",
            agentkeys_tests::runs::own_uid_range()
        ),
        cgroups: groups.0.clone(),
        ..Default::default()
    })
}

fn walk_dirs(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk_dirs(&e.path()));
        }
    }
    out
}

/// Started outside systemd in the root group of a hierarchy (a root shell, the quickstart
/// on a fresh machine), the daemon puts its runs' parent group in a directory that only
/// CAP_DAC_OVERRIDE can write, and it drops that capability: it must make the group first.
#[test]
fn runs_work_for_a_daemon_started_in_groups_it_cannot_write_to() {
    let Some(groups) = test_groups("agentkeys-test-ro") else {
        return;
    };
    let d = daemon_in(&groups);
    let ok = d.ctl(&["run", "--", "/bin/true"]);
    assert_eq!(ok.code, 0, "{}\n{}", ok.stderr, d.log());
    for p in run_parents(&groups) {
        assert!(p.is_dir(), "no parent group {}", p.display());
    }
    drop(d);
}

/// Every group under the daemons' parents in `groups`: runs', and those kept for later
/// runs (`spare-…`).
fn groups_under(groups: &UnwritableGroups) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for g in &groups.0 {
        for e in std::fs::read_dir(g.join("agentkeys"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.path().is_dir() {
                out.push(e.path());
            }
        }
    }
    out
}

/// The daemons' parents in `groups`' v1 hierarchies of the runs' controllers: where ended
/// runs' groups are kept.
fn v1_parents(groups: &UnwritableGroups) -> Vec<std::path::PathBuf> {
    let limits = ["memory.limit_in_bytes", "pids.max", "cpu.cfs_quota_us"];
    (groups.0.iter())
        .filter(|g| !g.join("cgroup.controllers").exists())
        .filter(|g| limits.iter().any(|f| g.join(f).exists()))
        .map(|g| g.join("agentkeys"))
        .collect()
}

/// The daemons' parents of runs' groups in `groups`: v2's and [`v1_parents`] (not a v1
/// freezer's: a daemon uses one only where v2 has no `cgroup.kill`).
fn run_parents(groups: &UnwritableGroups) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = (groups.0.iter())
        .filter(|g| g.join("cgroup.controllers").exists())
        .map(|g| g.join("agentkeys"))
        .collect();
    out.extend(v1_parents(groups));
    out
}

/// A daemon stopped the moment a run has ended (when it starts the next warm runner)
/// leaves no group behind: the runs', the warm runners', those still being made, and the
/// ended runs' v1 groups it kept for later runs.
#[test]
fn a_stopped_daemon_leaves_no_run_cgroups_behind() {
    let Some(groups) = test_groups("agentkeys-test-stop") else {
        return;
    };
    for round in 0..5 {
        let d = daemon_in(&groups);
        if round == 0 {
            run_groups_outlive_their_run(&d, &groups);
        }
        let ok = d.ctl(&["run", "--", "/bin/true"]);
        assert_eq!(ok.code, 0, "{}\n{}", ok.stderr, d.log());
        let log = d.log();
        // SIGTERM, as systemd stops it (the drop waits for the exit).
        drop(d);
        let left = groups_under(&groups);
        assert!(left.is_empty(), "left behind: {left:?}\n{log}");
    }
}

/// `agentkeysctl run` of a command that waits on its stdin ([`end_waiting_run`] ends it).
fn waiting_run(d: &Daemon) -> std::process::Child {
    d.ctl_command(None, &["run", "--", "/bin/sh", "-c", "read x; exit 3"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Closes a [`waiting_run`]'s stdin; its command exits 3, and so does the client.
fn end_waiting_run(d: &Daemon, mut run: std::process::Child) {
    drop(run.stdin.take());
    assert_eq!(run.wait().unwrap().code(), Some(3), "{}", d.log());
}

/// A run's v1 groups outlive it (`RunCgroups::recycle`): once it has ended, each is under
/// its parent again with another name, a spare's or, taken already, a warm runner's.
fn run_groups_outlive_their_run(d: &Daemon, groups: &UnwritableGroups) {
    let run = waiting_run(d);
    // The run's name, from its command's memory group.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let name = loop {
        let found = (std::fs::read_dir("/proc").unwrap().flatten()).find_map(|e| {
            let dir = e.path();
            let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
            let cgroup = std::fs::read_to_string(dir.join("cgroup")).ok()?;
            let line = cgroup
                .lines()
                .find(|l| l.split(':').nth(1) == Some("memory"))?;
            let (parent, name) = line.rsplit_once('/')?;
            (comm.trim() == "sh" && parent.ends_with("/agentkeys") && name.starts_with("run_"))
                .then(|| name.to_owned())
        });
        match found {
            Some(n) => break n,
            None if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            None => panic!("the run never appeared in its cgroups\n{}", d.log()),
        }
    };
    let inodes: Vec<(std::path::PathBuf, u64)> = (v1_parents(groups).into_iter())
        .map(|p| {
            let ino = std::fs::metadata(p.join(&name)).unwrap().ino();
            (p, ino)
        })
        .collect();
    end_waiting_run(d, run);
    let elsewhere = |(parent, ino): &(std::path::PathBuf, u64)| {
        (std::fs::read_dir(parent).into_iter().flatten().flatten())
            .any(|e| e.file_name() != *name && e.metadata().is_ok_and(|m| m.ino() == *ino))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !inodes.iter().all(elsewhere) {
        assert!(
            std::time::Instant::now() < deadline,
            "the run's groups were not kept: {:?}\n{}",
            groups_under(groups),
            d.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Groups a killed daemon left (empty, no runner holding them) are removed by the next
/// daemon that starts under the same parents, and so are the groups a daemon that is gone
/// kept for later runs; a group a runner holds, one with a process in it, a directory
/// that is no run's and the kept groups of a daemon that lives are left alone.
#[test]
fn a_starting_daemon_removes_run_cgroups_left_behind_and_nothing_else() {
    let Some(groups) = test_groups("agentkeys-test-sweep") else {
        return;
    };
    let [left, held, busy] = ['a', 'b', 'c'].map(|c| format!("run_{}", c.to_string().repeat(26)));
    let other = "run_not-a-run-id";
    let dirs = |name: &str| -> Vec<std::path::PathBuf> {
        run_parents(&groups).iter().map(|p| p.join(name)).collect()
    };
    for name in [&left, &held, &busy, other] {
        for d in dirs(name) {
            std::fs::create_dir_all(&d).unwrap();
        }
    }
    // A runner's lock (shared, as `steps::cgroup::join` takes it) on each of `held`'s.
    let locks: Vec<std::fs::File> = dirs(&held)
        .iter()
        .map(|d| {
            let f = std::fs::File::open(d).unwrap();
            f.lock_shared().unwrap();
            f
        })
        .collect();
    // A process in one of `busy`'s (killed before `groups` are removed, also on failure).
    struct Sleeper(std::process::Child);
    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let sleeper = Sleeper(
        std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .unwrap(),
    );
    let busy_dir = dirs(&busy).pop().unwrap();
    std::fs::write(busy_dir.join("cgroup.procs"), sleeper.0.id().to_string()).unwrap();
    // Groups daemons kept for later runs: of one that is gone (a pid above the kernel's
    // pid_max is never a process's) and of one that lives (the sleeper's pid, here).
    let spares = |pid: String| -> Vec<std::path::PathBuf> {
        (v1_parents(&groups).iter())
            .map(|p| p.join(format!("spare-{}-0", pid.trim())))
            .collect()
    };
    let gone = spares(std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap());
    let lives = spares(sleeper.0.id().to_string());
    for d in gone.iter().chain(&lives) {
        std::fs::create_dir_all(d).unwrap();
    }

    let d = daemon_in(&groups);
    let log = d.log();
    for dir in dirs(&left).iter().chain(&gone) {
        assert!(!dir.exists(), "{} was not removed\n{log}", dir.display());
    }
    for dir in [dirs(&held), dirs(&busy), dirs(other), lives].concat() {
        assert!(dir.is_dir(), "{} was removed\n{log}", dir.display());
    }
    assert!(
        log.contains("removed the cgroups of runs that ended without a daemon"),
        "{log}"
    );
    if !gone.is_empty() {
        assert!(
            log.contains("removed the cgroups a stopped daemon kept"),
            "{log}"
        );
    }
    // Runs still work beside what was left alone, and a runner holds its run's group (what
    // makes a starting daemon's sweep pass over it): the first populated one found is a
    // warm runner's or that of the run, which waits on its stdin.
    let run = waiting_run(&d);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let live = loop {
        let populated = groups_under(&groups).into_iter().find(|p| {
            p != &busy_dir
                && std::fs::read_to_string(p.join("cgroup.procs")).is_ok_and(|t| !t.is_empty())
        });
        match populated {
            Some(p) => break p,
            None if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            None => panic!("the run never appeared in its cgroups\n{}", d.log()),
        }
    };
    let name = live.file_name().unwrap().to_owned();
    let locked = groups.0.iter().any(|g| {
        let dir = g.join("agentkeys").join(&name);
        std::fs::File::open(dir).is_ok_and(|f| f.try_lock().is_err())
    });
    assert!(
        locked,
        "no group of the live run {name:?} is locked by its runner"
    );
    end_waiting_run(&d, run);
    drop(d);
    drop((sleeper, locks));
}
