//! Escape attempts from inside `agentkeysctl run` (kernel tier). Each test makes one
//! attempt the threat model (DESIGN §7) says must fail, through the real daemon, runner and
//! kernel, and asserts that it failed the expected way: the Python snippet prints `denied`
//! only for the expected failure and `ESCAPED …` otherwise (a broken snippet prints a
//! traceback, which fails the test too). The README's threat-model section lists them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::UnixListener;

use agentkeys_tests::runs::{
    agent_with, finish, next_running, sandbox_available, spawn_run, store,
};
use agentkeys_tests::{Daemon, DaemonOpts, Out};
use agentkeysd::api::proxies::JobsProxy;

/// What every snippet starts with: raw syscalls through ctypes.
const PRELUDE: &str = r#"
import ctypes, errno, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def sc(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
    return r, ctypes.get_errno()
def expect(ok, what):
    print('denied' if ok else 'ESCAPED ' + what)
def expect_errno(nr, want, *args):
    r, e = sc(nr, *args)
    expect(r == -1 and e == want, f'r={r} errno={e}')
def expect_raise(exc, fn):
    try:
        fn()
    except exc:
        print('denied')
        return
    print('ESCAPED: no error')
"#;

fn python() -> Option<&'static str> {
    if std::path::Path::new("/usr/bin/python3").exists() {
        Some("/usr/bin/python3")
    } else {
        agentkeys_tests::skip("/usr/bin/python3 is not installed (scripts/test installs it)");
        None
    }
}

fn daemon_with(config: &str) -> Daemon {
    Daemon::start_with(DaemonOpts {
        config: format!(
            "[approvals]\nauthenticate = \"none\"\n{}{config}",
            agentkeys_tests::runs::own_uid_range()
        ),
        ..Default::default()
    })
}

/// Runs `snippet` (after the prelude) as agent `bot` in a sandbox with `extra` run flags.
fn attempt_with(d: &Daemon, extra: &[&str], snippet: &str, args: &[&str]) -> Out {
    let py = python().unwrap_or("/usr/bin/python3");
    let code = format!("{PRELUDE}\n{snippet}");
    let mut argv = vec!["--agent", "bot", "run"];
    argv.extend_from_slice(extra);
    argv.extend(["--", py, "-c", code.as_str()]);
    argv.extend_from_slice(args);
    d.ctl(&argv)
}

/// Asserts the attempt printed exactly `denied`.
fn assert_denied(out: &Out) {
    assert_eq!(out.stdout().trim(), "denied", "stderr: {}", out.stderr);
}

/// A daemon with agent `bot` (granted `github`), or `None` when the sandbox cannot run.
fn setup() -> Option<Daemon> {
    if !sandbox_available() || python().is_none() {
        return None;
    }
    let d = daemon_with("");
    store(&d, "github", "ghp_escape_test_0001");
    agent_with(&d, "bot", &["github"]);
    Some(d)
}

fn syscall_denied(nr: i64, args: &str) {
    let Some(d) = setup() else { return };
    let out = attempt_with(
        &d,
        &[],
        &format!("expect_errno({nr}, errno.EPERM{args})"),
        &[],
    );
    assert_denied(&out);
}

// ---- other processes ------------------------------------------------------------------

#[test]
fn ptrace_of_a_host_process_is_denied() {
    let Some(d) = setup() else { return };
    let pid = d.pid().to_string();
    // PTRACE_ATTACH = 16
    let out = attempt_with(
        &d,
        &[],
        "expect_errno(101, errno.EPERM, 16, int(sys.argv[1]), 0, 0)",
        &[&pid],
    );
    assert_denied(&out);
}

#[test]
fn process_vm_readv_of_a_host_process_is_denied() {
    let Some(d) = setup() else { return };
    let pid = d.pid().to_string();
    let out = attempt_with(
        &d,
        &[],
        "expect_errno(310, errno.EPERM, int(sys.argv[1]), 0, 0, 0, 0, 0)",
        &[&pid],
    );
    assert_denied(&out);
}

#[test]
fn the_daemon_and_host_pids_are_invisible() {
    let Some(d) = setup() else { return };
    let pid = d.pid().to_string();
    let snippet = "pids = [int(p) for p in os.listdir('/proc') if p.isdigit()]\n\
                   expect(not os.path.exists('/proc/' + sys.argv[1] + '/mem') and max(pids) < 100, str(pids))";
    assert_denied(&attempt_with(&d, &[], snippet, &[&pid]));
}

#[test]
fn signalling_the_daemon_or_any_host_pid_fails() {
    let Some(d) = setup() else { return };
    let pid = d.pid().to_string();
    let snippet = "expect_raise(ProcessLookupError, lambda: os.kill(int(sys.argv[1]), 15))";
    assert_denied(&attempt_with(&d, &[], snippet, &[&pid]));
    d.ctl(&["status"]).ok();
}

#[test]
fn the_host_proc_1_environ_cannot_be_read() {
    let Some(d) = setup() else { return };
    // /proc/1 inside is the sandbox's own init (the runner), never the host's: the host's
    // pid 1 is not in this pid namespace. And the init's environment is closed to the
    // agent too (the init is not dumpable since its uid changed).
    let snippet = "cmd = open('/proc/1/cmdline', 'rb').read()\n\
                   try:\n    open('/proc/1/environ', 'rb').read(); readable = True\n\
                   except PermissionError:\n    readable = False\n\
                   expect(b'agentkeys-runner' in cmd and not readable, repr((cmd[:60], readable)))";
    assert_denied(&attempt_with(&d, &[], snippet, &[]));
}

#[test]
fn the_daemons_memory_cannot_be_read() {
    let Some(d) = setup() else { return };
    let pid = d.pid().to_string();
    let snippet = "expect_raise(FileNotFoundError, lambda: open('/proc/' + sys.argv[1] + '/mem', 'rb').read(16))";
    assert_denied(&attempt_with(&d, &[], snippet, &[&pid]));
}

// ---- file system -------------------------------------------------------------------------

#[test]
fn writing_etc_is_denied() {
    let Some(d) = setup() else { return };
    let snippet = "expect_raise(OSError, lambda: open('/etc/passwd', 'a').write('x'))";
    assert_denied(&attempt_with(&d, &[], snippet, &[]));
}

#[test]
fn writing_usr_is_denied() {
    let Some(d) = setup() else { return };
    let snippet = "expect_raise(OSError, lambda: open('/usr/bin/agentkeys-escape', 'w'))";
    assert_denied(&attempt_with(&d, &[], snippet, &[]));
}

#[test]
fn the_owners_home_is_invisible_and_unwritable() {
    let Some(d) = setup() else { return };
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let snippet = "expect(not os.path.exists(sys.argv[1] + '/.profile') and not os.path.exists(sys.argv[1] + '/.bashrc'), 'home visible')\n\
                   expect_raise(OSError, lambda: open(sys.argv[1] + '/escape', 'w'))";
    let out = attempt_with(&d, &[], snippet, &[&home]);
    assert_eq!(out.stdout(), "denied\ndenied\n", "{}", out.stderr);
}

#[test]
fn another_agents_workspace_is_out_of_reach() {
    let Some(d) = setup() else { return };
    let mine = tempfile::tempdir().unwrap();
    let theirs = tempfile::tempdir().unwrap();
    std::fs::write(theirs.path().join("secret.txt"), "theirs").unwrap();
    let ws = mine.path().to_str().unwrap();
    let snippet = "expect_raise(OSError, lambda: open(sys.argv[1] + '/secret.txt').read())\n\
                   expect_raise(OSError, lambda: open(sys.argv[1] + '/planted', 'w'))";
    let out = attempt_with(
        &d,
        &["--workspace", ws],
        snippet,
        &[theirs.path().to_str().unwrap()],
    );
    assert_eq!(out.stdout(), "denied\ndenied\n", "{}", out.stderr);
    assert!(!theirs.path().join("planted").exists());
}

#[test]
fn a_setuid_binary_gives_no_privilege() {
    let Some(_) = setup() else { return };
    // A setuid-root copy of id(1), visible read-only inside through runner.ro_paths.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let id = dir.path().join("id");
    std::fs::copy("/usr/bin/id", &id).unwrap();
    std::fs::set_permissions(&id, std::os::unix::fs::PermissionsExt::from_mode(0o4755)).unwrap();
    let d = daemon_with(&format!("ro_paths = [\"{}\"]\n", dir.path().display()));
    agent_with(&d, "bot", &[]);
    let out = d.ctl(&["--agent", "bot", "run", "--", id.to_str().unwrap(), "-u"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout().trim(),
        "1000",
        "setuid must not raise the euid"
    );
}

// ---- other agents' secrets and sockets, the host's buses ---------------------------------

#[tokio::test]
async fn another_agents_secrets_and_mcp_socket_are_out_of_reach() {
    let Some(d) = setup() else { return };
    agent_with(&d, "other", &["github"]);
    let conn = d.connect().await;
    let jobs = JobsProxy::new(&conn).await.unwrap();
    let mut changes = jobs.receive_job_state_changed().await.unwrap();
    let child = spawn_run(
        &d,
        &[
            "--agent", "other", "run", "--file", "github", "--", "sleep", "1000",
        ],
    );
    let job = next_running(&mut changes).await;
    let host_socket = d.runtime_dir().join("runs").join(&job).join("mcp.sock");
    assert!(
        host_socket.exists(),
        "the other run's socket is at {}",
        host_socket.display()
    );
    let snippet = "print(sorted(os.listdir('/run/agentkeys')))\n\
                   expect_raise(OSError, lambda: socket.socket(socket.AF_UNIX).connect(sys.argv[1]))\n\
                   expect(not os.path.exists('/run/agentkeys/secrets'), 'a secrets directory in a run without secret files')";
    let out = attempt_with(&d, &[], snippet, &[host_socket.to_str().unwrap()]);
    assert_eq!(
        out.stdout(),
        "['bin', 'mcp.sock']\ndenied\ndenied\n",
        "{}",
        out.stderr
    );
    // From the host, a process with this agent's uid cannot use the other agent's socket.
    let info = jobs.get(&job).await.unwrap();
    let other_uid = agentkeysd::api::dict::get_u32(&info, "runner_uid")
        .unwrap()
        .unwrap();
    let meta = std::fs::metadata(&host_socket).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.uid(), meta.mode() & 0o777), (other_uid, 0o600));
    jobs.cancel(&job).await.unwrap();
    assert_eq!(finish(child).code, 137);
}

#[test]
fn the_host_dbus_system_socket_is_unreachable() {
    let Some(d) = setup() else { return };
    let bus = d
        .bus
        .address
        .trim_start_matches("unix:path=")
        .split(',')
        .next()
        .unwrap()
        .to_owned();
    let snippet = "for p in ['/run/dbus/system_bus_socket', '/var/run/dbus/system_bus_socket', sys.argv[1]]:\n\
                   \x20   expect_raise(OSError, lambda: socket.socket(socket.AF_UNIX).connect(p))";
    let out = attempt_with(&d, &[], snippet, &[&bus]);
    assert_eq!(out.stdout(), "denied\ndenied\ndenied\n", "{}", out.stderr);
}

#[test]
fn a_host_abstract_unix_socket_is_unreachable() {
    let Some(d) = setup() else { return };
    let name = format!("agentkeys-escape-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let listener = UnixListener::bind_addr(&addr).unwrap();
    let snippet =
        "expect_raise(OSError, lambda: socket.socket(socket.AF_UNIX).connect('\\0' + sys.argv[1]))";
    let out = attempt_with(&d, &[], snippet, &[&name]);
    assert_denied(&out);
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err(), "nothing connected");
}

#[test]
fn tcp_to_a_host_port_fails_under_net_none() {
    let Some(d) = setup() else { return };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let snippet = "expect_raise(OSError, lambda: socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5))\n\
                   expect_raise(OSError, lambda: socket.create_connection(('10.0.0.1', 80), timeout=5))";
    let out = attempt_with(&d, &[], snippet, &[&port]);
    assert_eq!(out.stdout(), "denied\ndenied\n", "{}", out.stderr);
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err(), "nothing connected");
}

// ---- namespaces, mounts and kernel interfaces (seccomp) ---------------------------------

#[test]
fn mount_is_denied() {
    syscall_denied(165, ", b'none', b'/tmp', b'tmpfs', 0, 0");
}

#[test]
fn umount2_is_denied() {
    syscall_denied(166, ", b'/usr', 2");
}

#[test]
fn pivot_root_is_denied() {
    syscall_denied(155, ", b'/tmp', b'/tmp'");
}

#[test]
fn unshare_of_a_user_namespace_is_denied() {
    // CLONE_NEWUSER = 0x10000000
    syscall_denied(272, ", 0x10000000");
}

#[test]
fn setns_is_denied() {
    let Some(d) = setup() else { return };
    let out = attempt_with(
        &d,
        &[],
        "fd = os.open('/proc/self/ns/uts', os.O_RDONLY)\nexpect_errno(308, errno.EPERM, fd, 0)",
        &[],
    );
    assert_denied(&out);
}

#[test]
fn keyctl_is_denied() {
    // KEYCTL_GET_KEYRING_ID = 0 of the session keyring (-3)
    syscall_denied(250, ", 0, -3, 0");
}

#[test]
fn add_key_is_denied() {
    syscall_denied(248, ", b'user', b'escape', b'x', 1, -3");
}

#[test]
fn bpf_is_denied() {
    syscall_denied(321, ", 0, 0, 0");
}

#[test]
fn perf_event_open_is_denied() {
    syscall_denied(298, ", 0, 0, -1, -1, 0");
}

#[test]
fn userfaultfd_is_denied() {
    syscall_denied(323, ", 0");
}

#[test]
fn io_uring_setup_is_denied() {
    syscall_denied(425, ", 8, 0");
}

#[test]
fn open_by_handle_at_is_denied() {
    syscall_denied(304, ", -100, 0, 0");
}

// ---- resources -------------------------------------------------------------------------

#[test]
fn a_fork_bomb_stops_at_pids_max() {
    let Some(d) = setup() else { return };
    let snippet = "n = 0\n\
                   try:\n\
                   \x20   while n < 10000:\n\
                   \x20       if os.fork() == 0:\n\
                   \x20           import time; time.sleep(60); os._exit(0)\n\
                   \x20       n += 1\n\
                   except BlockingIOError:\n\
                   \x20   expect(n < 64, str(n))\n\
                   else:\n\
                   \x20   print('ESCAPED ' + str(n))\n\
                   sys.stdout.flush()\n\
                   os.killpg(0, 9)";
    let out = attempt_with(&d, &["--pids", "64"], snippet, &[]);
    assert!(
        out.stdout().starts_with("denied"),
        "{} {}",
        out.stdout(),
        out.stderr
    );
    d.ctl(&["status"]).ok();
}

#[test]
fn a_memory_hog_is_oom_killed_while_the_daemon_keeps_serving() {
    let Some(d) = setup() else { return };
    let snippet = "blocks = []\nwhile True:\n    blocks.append(bytearray(16 << 20))";
    let out = attempt_with(&d, &["--memory", "64M"], snippet, &[]);
    assert_eq!(
        out.code,
        128 + libc::SIGKILL,
        "{} {}",
        out.stdout(),
        out.stderr
    );
    d.ctl(&["status"]).ok();
    assert_eq!(d.ctl(&["read", "github"]).ok(), "ghp_escape_test_0001");
}

#[test]
fn the_agents_environment_is_unreadable_to_the_owners_host_processes() {
    let Some(d) = setup() else { return };
    let Some(_) = agentkeys_tests::test_user() else {
        return;
    };
    let user = agentkeys_tests::TEST_USER;
    d.ctl_as(user, &["store", "github"], Some(b"ghp_owned_by_test_user"))
        .ok();
    d.ctl_as(
        user,
        &["agent", "create", "mine", "--scope", "github"],
        None,
    )
    .ok();
    d.ctl_as(user, &["grant", "mine", "github"], None).ok();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let conn = d.connect().await;
        let jobs = JobsProxy::new(&conn).await.unwrap();
        let mut changes = jobs.receive_job_state_changed().await.unwrap();
        let mut cmd = d.ctl_command(
            Some(user),
            &["--agent", "mine", "run", "--", "sleep", "1000"],
        );
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let child = cmd.spawn().unwrap();
        let job = next_running(&mut changes).await;
        let info = jobs.get(&job).await.unwrap();
        let uid = agentkeysd::api::dict::get_u32(&info, "runner_uid")
            .unwrap()
            .unwrap();
        let pids = agentkeys_tests::runs::pids_of_uid(uid);
        assert!(!pids.is_empty());
        for pid in pids {
            // As the owner: neither its environment nor a ptrace attach.
            let read = agentkeys_tests::run(
                {
                    let mut c = std::process::Command::new("setpriv");
                    c.args([
                        "--reuid",
                        user,
                        "--regid",
                        user,
                        "--init-groups",
                        "--",
                        "cat",
                    ])
                    .arg(format!("/proc/{pid}/environ"));
                    c
                },
                None,
            );
            assert_ne!(read.code, 0, "the owner read the agent's environment");
            assert!(!read.stdout().contains("ghp_owned_by_test_user"));
        }
        jobs.cancel(&job).await.unwrap();
        assert_eq!(finish(child).code, 137);
    });
}
