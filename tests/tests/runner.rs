//! Kernel tier: the real `agentkeys-runner` under the full plan (cgroups, namespaces,
//! pivot_root, idmapped workspace, identity, caps, landlock, seccomp). No daemon: the
//! launcher is `agentkeys_tests::sandbox`. Each test probes first and skips with a reason.

use std::os::unix::fs::MetadataExt;

use agentkeys_tests::sandbox::{
    AGENT_UID, INSIDE_UID, OWNER_UID, Sandbox, run_in_runner, unavailable,
};
use agentkeysd::sandbox::launch::Outcome;

macro_rules! need_kernel {
    () => {
        if let Some(why) = unavailable() {
            agentkeys_tests::skip(&why);
            return;
        }
    };
}

/// The pids in a cgroup's `cgroup.procs` (an unreadable group fails the test).
#[allow(clippy::unwrap_used)]
fn procs(dir: &std::path::Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap()
        .lines()
        .map(|p| p.parse().unwrap())
        .collect()
}

/// A Python one-liner run in the sandbox.
fn py(code: &str) -> Vec<String> {
    vec!["/usr/bin/python3".into(), "-c".into(), code.into()]
}

fn run_py(sb: &mut Sandbox, code: &str) -> agentkeys_tests::sandbox::Output {
    let argv = py(code);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    sb.run(&argv)
}

#[test]
fn true_exits_zero_and_codes_and_signals_come_back() {
    need_kernel!();
    let out = run_in_runner(|_| {}, &["/bin/true"]);
    assert_eq!(out.outcome, Outcome::Exited(0), "{}", out.stderr);
    let out = run_in_runner(|_| {}, &["sh", "-c", "exit 7"]);
    assert_eq!(out.outcome, Outcome::Exited(7), "{}", out.stderr);
    let out = run_in_runner(|_| {}, &["sh", "-c", "kill -TERM $$"]);
    assert_eq!(
        out.outcome,
        Outcome::Signaled(libc::SIGTERM),
        "{}",
        out.stderr
    );
    let out = run_in_runner(|_| {}, &["/no/such/command"]);
    match out.outcome {
        Outcome::SetupFailed { step, error } => {
            assert_eq!(step, "exec");
            assert!(error.contains("/no/such/command"), "{error}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_agent_is_1000_inside_and_its_own_uid_outside_and_kill_ends_every_process() {
    need_kernel!();
    let mut sb = Sandbox::new();
    let mut running = sb.spawn(&["sh", "-c", "sleep 1000 & sleep 1000 & exec sleep 1000"]);
    let pid = running.started().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let uids: Vec<u32> = uid_line
        .split_whitespace()
        .skip(1)
        .map(|u| u.parse().unwrap())
        .collect();
    assert_eq!(uids, [AGENT_UID; 4], "{uid_line}");
    let plan = sb.plan().clone();
    let runner = parent_of(pid);
    sb.cgroups.kill(&plan).unwrap();
    // Every process of the agent is gone when the kill returns, the init first of all; what
    // may still be in the v1 groups is the runner (and its namespace holder, its other
    // child), which reports the end next. Nothing of them is in the v2 group.
    for (dir, v1) in plan
        .v2
        .iter()
        .map(|d| (d, false))
        .chain(plan.v1.iter().map(|d| (d, true)))
    {
        for p in procs(&dir.path) {
            let gone = !std::path::Path::new(&format!("/proc/{p}")).exists();
            let runners = v1 && p != pid && (p == runner || parent_of(p) == runner);
            assert!(
                runners || gone,
                "{} still has {p} (runner {runner}, init {pid})",
                dir.path.display()
            );
        }
    }
    let out = sb.finish(running);
    assert_eq!(out.outcome, Outcome::Signaled(libc::SIGKILL));
    // And once the runner has reported and is reaped, nothing at all.
    for dir in plan.v2.iter().chain(&plan.v1) {
        assert_eq!(procs(&dir.path), [] as [i32; 0], "{}", dir.path.display());
    }
    let out = run_in_runner(|_| {}, &["sh", "-c", "id -u; id -g"]);
    assert_eq!(
        out.stdout,
        format!("{INSIDE_UID}\n{INSIDE_UID}\n"),
        "{}",
        out.stderr
    );
}

/// A run going on holds its groups: a starting daemon counts it among the runs that may
/// still use its `/etc` snapshots (and keeps them); once its runner has ended, it is not.
#[test]
fn a_run_is_held_while_its_runner_lives() {
    need_kernel!();
    let mut sb = Sandbox::new();
    let run_id = sb.spec.run_id.clone();
    let this = |name: &str| name == run_id;
    assert_eq!(sb.cgroups.held_runs(this), 0, "before it started");
    let mut running = sb.spawn(&["sleep", "1000"]);
    running.started().unwrap();
    assert_eq!(sb.cgroups.held_runs(this), 1, "while it runs");
    let plan = sb.plan().clone();
    sb.cgroups.kill(&plan).unwrap();
    let out = sb.finish(running);
    assert_eq!(out.outcome, Outcome::Signaled(libc::SIGKILL));
    assert_eq!(sb.cgroups.held_runs(this), 0, "after its end");
}

/// The runner reports the command's end without waiting for the init's own exit, so the
/// init must end everything the command left behind before it tells: at the report, the
/// run's groups hold nothing but the (exiting) init, and nothing at all once it has gone.
#[test]
fn what_the_command_leaves_behind_is_gone_when_its_end_is_reported() {
    need_kernel!();
    let mut sb = Sandbox::new();
    let mut running = sb.spawn(&["sh", "-c", "sleep 1000 & sleep 1000 & exit 3"]);
    let init = running.started().unwrap();
    let out = sb.finish(running);
    assert_eq!(out.outcome, Outcome::Exited(3), "{}", out.stderr);
    let plan = sb.plan().clone();
    for dir in plan.v2.iter().chain(&plan.v1) {
        let left = procs(&dir.path);
        assert!(
            left.iter().all(|&p| p == init),
            "{}: {left:?} (init {init})",
            dir.path.display()
        );
    }
    wait_empty(&plan);
}

#[test]
fn the_run_is_in_its_cgroups_and_its_cgroup_namespace_starts_there() {
    need_kernel!();
    let mut sb = Sandbox::new();
    let mut running = sb.spawn(&["sleep", "1000"]);
    let init = running.started().unwrap();
    let plan = sb.plan().clone();
    let runner = parent_of(init);
    for dir in plan.v2.iter().chain(&plan.v1) {
        let pids = procs(&dir.path);
        let show = || {
            format!(
                "{}: {pids:?} (runner {runner}, init {init})",
                dir.path.display()
            )
        };
        assert!(pids.contains(&init), "{}", show());
        // The command: the init's child.
        assert!(pids.iter().any(|p| parent_of(*p) == init), "{}", show());
        if plan.v2.as_ref() == Some(dir) {
            // v2: the init (born there) and the command only.
            assert_eq!(pids.len(), 2, "{}", show());
        } else {
            // v1: also the runner (it moved itself in before the fork), and perhaps still
            // its agent-namespace holder, which it ends once the command runs.
            assert!(pids.contains(&runner), "{}", show());
            for p in &pids {
                // (A pid gone since the read is the holder the runner just ended.)
                let gone = !std::path::Path::new(&format!("/proc/{p}")).exists();
                let ok =
                    [runner, init].contains(p) || [runner, init].contains(&parent_of(*p)) || gone;
                assert!(ok, "{} has {p}, which is not the run's", show());
            }
        }
    }
    // The command started only once the limits were written (the runner writes them after
    // the move, and the init waits for its word before the exec).
    let limits = sb.spec.limits;
    for dir in plan.v2.iter().chain(&plan.v1) {
        let read = |f: &str| std::fs::read_to_string(dir.path.join(f)).unwrap();
        for c in &dir.controllers {
            match (c.as_str(), plan.v2.as_ref() == Some(dir)) {
                ("pids", _) => assert_eq!(read("pids.max").trim(), limits.pids.to_string()),
                ("memory", true) => {
                    assert_eq!(read("memory.max").trim(), limits.memory_bytes.to_string())
                }
                ("memory", false) => assert_eq!(
                    read("memory.limit_in_bytes").trim(),
                    limits.memory_bytes.to_string()
                ),
                _ => {}
            }
        }
    }
    sb.cgroups.kill(&plan).unwrap();
    let out = sb.finish(running);
    assert_eq!(out.outcome, Outcome::Signaled(libc::SIGKILL));
    // Seen from inside, every hierarchy's group is the namespace's root.
    let out = run_in_runner(|_| {}, &["cat", "/proc/self/cgroup"]);
    assert_eq!(out.outcome, Outcome::Exited(0), "{}", out.stderr);
    assert!(out.stdout.lines().count() >= 2, "{}", out.stdout);
    for line in out.stdout.lines() {
        assert!(line.ends_with(":/"), "{line} (all: {})", out.stdout);
    }
}

#[test]
fn a_warm_runner_never_starts_the_command_when_the_start_is_not_on_record() {
    need_kernel!();
    let mut sb = Sandbox::new();
    let warm = sb.prepare_warm();
    // The command would leave a file in the workspace.
    let mut running = sb
        .spawn_warm_held(warm, &["sh", "-c", "echo ran > /workspace/ran"])
        .unwrap();
    running.go(false);
    let out = sb.finish(running);
    match &out.outcome {
        Outcome::SetupFailed { step, error } => {
            assert_eq!(step, "record", "{error}");
            assert!(error.contains("did not record"), "{error}");
        }
        other => panic!("{other:?} (stderr: {})", out.stderr),
    }
    assert!(
        !sb.host_path("ran").exists(),
        "the command ran without the record"
    );
    // Nothing of the run is left in its groups.
    let plan = sb.plan().clone();
    for dir in plan.v2.iter().chain(&plan.v1) {
        assert_eq!(procs(&dir.path), [0i32; 0], "{}", dir.path.display());
    }
}

#[test]
fn a_warm_runner_waits_in_its_cgroups_then_runs_the_spec_it_is_given() {
    need_kernel!();
    let mut sb = Sandbox::new();
    sb.secret_env("ANTHROPIC_API_KEY", b"sk-warm-0123");
    let warm = sb.prepare_warm();
    // Before any spec, the runner and the holder of the agent's namespaces it made ahead
    // are in every v1 group of its plan, and the v2 group (where the init will be born)
    // exists, empty.
    let plan = sb.plan().clone();
    for dir in plan.v2.iter().chain(&plan.v1) {
        let pids = procs(&dir.path);
        let want = if plan.v2.as_ref() == Some(dir) { 0 } else { 2 };
        assert_eq!(pids.len(), want, "{}: {pids:?}", dir.path.display());
    }
    let running = sb
        .spawn_warm(
            warm,
            &[
                "sh",
                "-c",
                "echo \"$ANTHROPIC_API_KEY\"; cat /proc/self/cgroup; id -u",
            ],
        )
        .unwrap();
    let out = sb.finish(running);
    assert_eq!(out.outcome, Outcome::Exited(0), "{}", out.stderr);
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next(), Some("sk-warm-0123"), "{}", out.stdout);
    let rest: Vec<&str> = lines.collect();
    assert_eq!(rest.last().copied(), Some(INSIDE_UID.to_string().as_str()));
    for line in &rest[..rest.len() - 1] {
        assert!(line.ends_with(":/"), "{line} (all: {})", out.stdout);
    }
    // A warm runner takes only a spec that names its own cgroups.
    let other = Sandbox::new();
    let warm = other.prepare_warm();
    let err = sb.spawn_warm(warm, &["/bin/true"]).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
}

/// The daemon runs with systemd's `UMask=0077`; the runner must build the same sandbox
/// regardless: `/etc` and `/dev` traversable, the copied and bound `/etc` files readable,
/// `/dev/null` writable, and the command starting with umask 022.
#[test]
fn the_sandbox_is_the_same_under_the_daemons_umask_0077() {
    need_kernel!();
    // This test's own process, inherited by the runner; put back right after.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let out = run_in_runner(
        |_| {},
        &[
            "sh",
            "-c",
            "stat -c '%a %n' /etc /dev /etc/hosts /etc/ld.so.cache; \
             head -c 0 /etc/hosts && echo x >/dev/null && umask",
        ],
    );
    nix::sys::stat::umask(old);
    assert_eq!(out.outcome, Outcome::Exited(0), "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"755 /etc"), "{}", out.stdout);
    assert_eq!(lines.get(1), Some(&"755 /dev"), "{}", out.stdout);
    for line in &lines[2..4] {
        let mode = u32::from_str_radix(line.split(' ').next().unwrap(), 8).unwrap();
        assert_eq!(mode & 0o444, 0o444, "{line}");
    }
    assert_eq!(lines.last(), Some(&"0022"), "{}", out.stdout);
}

/// Every read-only bind of the shipped policy shows the host's content (a small file with the
/// same bytes, a directory with the same entries), whichever way it came: from a new `/etc`
/// snapshot, from the snapshot an earlier run made, or copied by the init (no cache, or a
/// cache that others may write, which is not used). The sandbox's own accounts are there
/// either way, and its `/etc` is read-only.
#[test]
fn the_policys_host_files_are_in_the_sandbox_as_on_the_host() {
    need_kernel!();
    let policy = agentkeysd::sandbox::policy::fs::FsPolicy::shipped().unwrap();
    let paths: Vec<&str> = policy
        .binds
        .iter()
        .map(|b| b.path.as_str())
        .filter(|p| std::path::Path::new(p).exists())
        .collect();
    let describe = "import os,sys,hashlib\n\
         for p in sys.argv[1:]:\n\
         \x20 if os.path.isdir(p): print(p, 'dir', ','.join(sorted(os.listdir(p))))\n\
         \x20 else: print(p, 'file', hashlib.sha256(open(p,'rb').read()).hexdigest())";
    let mut argv = vec!["/usr/bin/python3", "-c", describe];
    argv.extend(&paths);
    let host = std::process::Command::new("/usr/bin/python3")
        .args(&argv[1..])
        .output()
        .unwrap();
    assert!(host.status.success());
    let host = String::from_utf8(host.stdout).unwrap();
    // Both kinds are there: the test sees the small files and the mounts.
    assert!(host.contains(" file ") && host.contains(" dir "), "{host}");
    let accounts = "import os\n\
         print(open('/etc/passwd').read().split(':')[:3])\n\
         print(bool(os.statvfs('/etc').f_flag & os.ST_RDONLY))";
    let snapshots = |dir: &std::path::Path| std::fs::read_dir(dir).unwrap().count();
    let check = |sb: &mut Sandbox, how: &str| {
        let inside = sb.run(&argv);
        assert_eq!(
            inside.outcome,
            Outcome::Exited(0),
            "{how}: {}",
            inside.stderr
        );
        assert_eq!(inside.stdout, host, "{how}");
        let own = sb.run(&["/usr/bin/python3", "-c", accounts]);
        assert_eq!(
            own.stdout,
            format!("['agent', 'x', '{INSIDE_UID}']\nTrue\n"),
            "{how}: {}",
            own.stderr
        );
    };
    let mut first = Sandbox::new();
    let cache = first.etc_cache.path().to_owned();
    check(&mut first, "a new snapshot");
    assert_eq!(snapshots(&cache), 1);
    let mut second = Sandbox::new();
    second.spec.etc_cache = Some(cache.clone());
    check(&mut second, "the snapshot of an earlier run");
    assert_eq!(snapshots(&cache), 1, "made again");
    let mut copied = Sandbox::new();
    copied.spec.etc_cache = None;
    check(&mut copied, "copies");
    let mut open = Sandbox::new();
    let others = std::os::unix::fs::PermissionsExt::from_mode(0o777);
    std::fs::set_permissions(open.etc_cache.path(), others).unwrap();
    check(&mut open, "a cache others may write");
    assert_eq!(
        snapshots(open.etc_cache.path()),
        0,
        "used a cache others may write"
    );
}

#[test]
fn workspace_is_writable_and_new_files_belong_to_the_owner() {
    need_kernel!();
    // The agent is 1000 inside: the runner makes a namespace for the workspace's idmapping.
    check_workspace(Sandbox::new(), INSIDE_UID);
    // The agent has its owner's ids inside (the daemon's choice for an owner who is not
    // root): the agent's own user namespace is the idmapping.
    let mut sb = Sandbox::new();
    sb.spec.ids.inside_uid = OWNER_UID;
    sb.spec.ids.inside_gid = OWNER_UID;
    check_workspace(sb, OWNER_UID);
}

/// The agent writes its workspace as `inside` (its uid there, and what its files show);
/// on the host they belong to the owner (an unreadable file fails the test).
#[allow(clippy::unwrap_used)]
fn check_workspace(mut sb: Sandbox, inside: u32) {
    let out = sb.run(&[
        "sh",
        "-c",
        "echo hi > /workspace/f && mkdir /workspace/d && stat -c %u:%g /workspace/f && id -u",
    ]);
    assert_eq!(out.outcome, Outcome::Exited(0), "{}", out.stderr);
    assert_eq!(out.stdout, format!("{inside}:{inside}\n{inside}\n"));
    let meta = std::fs::metadata(sb.host_path("f")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (OWNER_UID, OWNER_UID));
    assert_eq!(std::fs::read_to_string(sb.host_path("f")).unwrap(), "hi\n");
    assert_eq!(
        std::fs::metadata(sb.host_path("d")).unwrap().uid(),
        OWNER_UID
    );
}

#[test]
fn secrets_arrive_as_variable_and_0400_file_with_exact_bytes() {
    need_kernel!();
    let mut sb = Sandbox::new();
    let key = b"sk-ant-\x01 spaced $value'\"\xc3\xa9";
    sb.secret_env("ANTHROPIC_API_KEY", key);
    sb.secret_file("github", b"ghp_exact\nbytes\x00zero");
    let out = run_py(
        &mut sb,
        "import os,sys,stat\n\
         v=os.environb[b'ANTHROPIC_API_KEY']\n\
         p='/run/agentkeys/secrets/github'\n\
         st=os.stat(p)\n\
         sys.stdout.buffer.write(v.hex().encode()+b' '+open(p,'rb').read().hex().encode()+\
         b' %o %d' % (stat.S_IMODE(st.st_mode), st.st_uid))",
    );
    assert_eq!(out.outcome, Outcome::Exited(0), "{}", out.stderr);
    let want = format!(
        "{} {} 400 {INSIDE_UID}",
        hex(key),
        hex(b"ghp_exact\nbytes\x00zero")
    );
    assert_eq!(out.stdout, want);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|c| format!("{c:02x}")).collect()
}

#[test]
fn host_etc_and_the_owners_home_are_out_of_reach() {
    need_kernel!();
    let mut sb = Sandbox::new();
    let out = run_py(
        &mut sb,
        "import os,errno\n\
         r=[]\n\
         for p in ['/etc/passwd','/etc/agentkeys-x','/usr/x','/x','/run/agentkeys/x']:\n\
         \x20 try:\n\
         \x20   open(p,'w'); r.append(p+':written')\n\
         \x20 except OSError as e: r.append(p+':'+errno.errorcode[e.errno])\n\
         for p in ['/root','/home','/etc/shadow']:\n\
         \x20 r.append(p+':'+str(os.path.exists(p)))\n\
         open('/tmp/ok','w'); open('/dev/shm/ok','w'); open('/dev/null','w').write('x')\n\
         print(' '.join(r))\n\
         print(' '.join(oct(os.stat(p).st_mode & 0o7777) for p in ['/tmp','/dev/shm']))",
    );
    assert_eq!(out.outcome, Outcome::Exited(0), "{}", out.stderr);
    let (results, modes) = out.stdout.trim_end().split_once('\n').unwrap();
    // Sticky and world-writable, as a tmpfs mounted with mode=1777.
    assert_eq!(modes, "0o1777 0o1777");
    for part in results.split_whitespace() {
        let (path, result) = part.split_once(':').unwrap();
        match path {
            "/root" | "/home" | "/etc/shadow" => assert_eq!(result, "False", "{part}"),
            // No secrets and no MCP socket in this run: /run/agentkeys does not even exist.
            "/run/agentkeys/x" => assert_eq!(result, "ENOENT", "{part}"),
            _ => assert!(result == "EROFS" || result == "EACCES", "{part}"),
        }
    }
    assert!(!std::path::Path::new("/etc/agentkeys-x").exists());
}

#[test]
fn landlock_denies_what_the_policy_does_not_grant() {
    need_kernel!();
    let mut sb = Sandbox::new();
    // `/` itself is not granted (only the listed trees): listing it is a landlock denial,
    // and EACCES (not EROFS) proves it is landlock and not the read-only mount.
    let out = run_py(
        &mut sb,
        "import os,errno\n\
         try:\n os.listdir('/'); print('listed')\n\
         except OSError as e: print(errno.errorcode[e.errno])\n\
         try:\n os.mkdir('/proc/self/x'); print('made')\n\
         except OSError as e: print(errno.errorcode[e.errno])",
    );
    assert_eq!(out.outcome, Outcome::Exited(0), "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"EACCES"), "{}", out.stdout);
    assert_ne!(lines.get(1), Some(&"made"));
}

#[test]
fn net_none_has_only_loopback() {
    need_kernel!();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut sb = Sandbox::new();
    let out = run_py(
        &mut sb,
        &format!(
            "import socket,errno\n\
             s=socket.socket()\n\
             try:\n s.connect(('127.0.0.1',{port})); print('host:connected')\n\
             except OSError as e: print('host:'+errno.errorcode[e.errno])\n\
             l=socket.socket(); l.bind(('127.0.0.1',0)); l.listen()\n\
             c=socket.create_connection(l.getsockname()); print('loopback:ok')\n\
             print(sorted(n for _,n in socket.if_nameindex()))"
        ),
    );
    assert_eq!(out.outcome, Outcome::Exited(0), "{}", out.stderr);
    assert!(out.stdout.contains("host:ECONNREFUSED"), "{}", out.stdout);
    assert!(out.stdout.contains("loopback:ok"), "{}", out.stdout);
    assert!(out.stdout.contains("['lo']"), "{}", out.stdout);
}

#[test]
fn net_host_shares_the_hosts_network_and_reaches_a_host_port() {
    need_kernel!();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let host_ns = std::fs::read_link("/proc/self/ns/net").unwrap();
    let code = format!(
        "import os,socket\n\
         print(os.readlink('/proc/self/ns/net'))\n\
         socket.create_connection(('127.0.0.1',{port})).close(); print('host:connected')"
    );
    let out = run_in_runner(
        |spec| spec.net = agentkeysd::sandbox::spec::Net::Host,
        &["/usr/bin/python3", "-c", &code],
    );
    assert_eq!(out.outcome, Outcome::Exited(0), "{}", out.stderr);
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next(), host_ns.to_str(), "{}", out.stdout);
    assert_eq!(lines.next(), Some("host:connected"), "{}", out.stdout);
    // The same run under --net none is in a network namespace of its own.
    let out = run_in_runner(|_| {}, &["readlink", "/proc/self/ns/net"]);
    assert_eq!(out.outcome, Outcome::Exited(0), "{}", out.stderr);
    assert_ne!(Some(out.stdout.trim()), host_ns.to_str());
    // A warm runner makes the agent's namespaces ahead for --net none; a --net host spec
    // still gets the host's network.
    let mut sb = Sandbox::new();
    sb.spec.net = agentkeysd::sandbox::spec::Net::Host;
    let warm = sb.prepare_warm();
    let running = sb
        .spawn_warm(warm, &["readlink", "/proc/self/ns/net"])
        .unwrap();
    let out = sb.finish(running);
    assert_eq!(out.outcome, Outcome::Exited(0), "{}", out.stderr);
    assert_eq!(Some(out.stdout.trim()), host_ns.to_str());
}

#[test]
fn a_fork_bomb_stops_at_pids_max() {
    need_kernel!();
    let mut sb = Sandbox::new();
    sb.spec.limits.pids = 16;
    let out = run_py(
        &mut sb,
        "import os,errno,time\n\
         kids=[]\n\
         try:\n\
         \x20 for i in range(1000):\n\
         \x20   pid=os.fork()\n\
         \x20   if pid==0:\n\
         \x20     time.sleep(100); os._exit(0)\n\
         \x20   kids.append(pid)\n\
         \x20 print('unbounded')\n\
         except OSError as e: print('stopped', len(kids), errno.errorcode[e.errno])\n\
         for k in kids: os.kill(k,9)",
    );
    assert_eq!(out.outcome, Outcome::Exited(0), "{}", out.stderr);
    let words: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"stopped"), "{}", out.stdout);
    assert_eq!(words.get(2), Some(&"EAGAIN"), "{}", out.stdout);
    let n: usize = words.get(1).unwrap().parse().unwrap();
    assert!(n < 16, "{n} children under pids.max 16");
}

#[test]
fn a_memory_hog_is_oom_killed_in_its_cgroup() {
    need_kernel!();
    let mut sb = Sandbox::new();
    sb.spec.limits.memory_bytes = 64 << 20;
    let out = run_py(&mut sb, "b=[]\nwhile True: b.append(bytearray(8<<20))");
    assert_eq!(
        out.outcome,
        Outcome::Signaled(libc::SIGKILL),
        "{}",
        out.stderr
    );
    // The v1 group recorded the OOM kill.
    if let Some(mem) = sb
        .plan()
        .v1
        .iter()
        .find(|d| d.controllers.iter().any(|c| c == "memory"))
    {
        let ctl = std::fs::read_to_string(mem.path.join("memory.oom_control")).unwrap();
        let kills: u64 = ctl
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .map_or(0, |v| v.trim().parse().unwrap());
        assert!(kills >= 1, "{ctl}");
    }
}

#[test]
fn seccomp_denies_the_dangerous_calls_with_eperm() {
    need_kernel!();
    if std::env::consts::ARCH != "x86_64" {
        agentkeys_tests::skip("the syscall numbers below are x86-64's");
        return;
    }
    let mut sb = Sandbox::new();
    let out = run_py(
        &mut sb,
        "import ctypes,errno\n\
         libc=ctypes.CDLL(None,use_errno=True)\n\
         calls={'ptrace':(101,16,1,0,0),'keyctl':(250,0,0,0,0),'add_key':(248,0,0,0,0),\
         'bpf':(321,0,0,0,0),'unshare_newuser':(272,0x10000000,0,0,0),\
         'mount':(165,0,0,0,0),'umount2':(166,0,0,0,0),'pivot_root':(155,0,0,0,0),\
         'setns':(308,0,0,0,0),'io_uring_setup':(425,1,0,0,0),'userfaultfd':(323,0,0,0,0),\
         'perf_event_open':(298,0,0,0,0),'open_by_handle_at':(304,0,0,0,0),\
         'process_vm_readv':(310,1,0,0,0),'clone_newuser':(56,0x10000000|17,0,0,0),\
         'clone3':(435,0,0,0,0),'ptrace_x32':(0x40000000+521,16,1,0,0)}\n\
         for name,(nr,*a) in calls.items():\n\
         \x20 r=libc.syscall(nr,*[ctypes.c_long(x) for x in a])\n\
         \x20 print(name, r, errno.errorcode.get(ctypes.get_errno(),'0'))",
    );
    assert_eq!(out.outcome, Outcome::Exited(0), "{}", out.stderr);
    let mut seen = 0;
    for line in out.stdout.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        let (name, ret, err) = (w[0], w[1], w[2]);
        let want = match name {
            "clone3" | "ptrace_x32" => "ENOSYS",
            _ => "EPERM",
        };
        assert_eq!((ret, err), ("-1", want), "{line}");
        seen += 1;
    }
    assert_eq!(seen, 17, "{}", out.stdout);
}

#[test]
fn the_agent_has_no_capability_in_any_set_and_no_new_privs() {
    need_kernel!();
    let mut sb = Sandbox::new();
    let out = sb.run(&["grep", "-E", "^(Cap|NoNewPrivs)", "/proc/self/status"]);
    assert_eq!(out.outcome, Outcome::Exited(0), "{}", out.stderr);
    let fields: Vec<(&str, &str)> = out
        .stdout
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k, v.trim()))
        .collect();
    let zero = "0000000000000000";
    assert_eq!(
        fields,
        [
            ("CapInh", zero),
            ("CapPrm", zero),
            ("CapEff", zero),
            ("CapBnd", zero),
            ("CapAmb", zero),
            ("NoNewPrivs", "1"),
        ],
        "{}",
        out.stdout
    );
}

#[test]
fn a_setuid_binary_gains_nothing() {
    need_kernel!();
    if !std::path::Path::new("/usr/bin/su").exists() {
        agentkeys_tests::skip("no setuid /usr/bin/su here");
        return;
    }
    let out = run_in_runner(
        |_| {},
        &["sh", "-c", "/usr/bin/su -c id root </dev/null; id -u"],
    );
    assert!(
        out.stdout.ends_with(&format!("{INSIDE_UID}\n")),
        "{} {}",
        out.stdout,
        out.stderr
    );
    assert!(!out.stdout.contains("uid=0"), "{}", out.stdout);
}

/// The parent pid of `pid` (0 if it is gone).
fn parent_of(pid: i32) -> i32 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PPid:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Waits (10 s at most) until the run's groups hold no process: the init's exit follows its
/// report of the end, as the daemon waits for it before it recycles the groups.
#[allow(clippy::unwrap_used)]
fn wait_empty(plan: &agentkeysd::sandbox::spec::CgroupPlan) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while plan
        .v2
        .iter()
        .chain(&plan.v1)
        .any(|d| !procs(&d.path).is_empty())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the run's groups are not empty 10 s after its end"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The kept groups (`RunCgroups::recycle`) of this test process under `parent`.
fn spares_in(parent: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mine = format!("spare-{}-", std::process::id());
    let mut out: Vec<_> = std::fs::read_dir(parent)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&mine))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

fn read_trimmed(dir: &std::path::Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{}/{file}: {e}", dir.display()))
        .trim()
        .to_owned()
}

/// An ended run's v1 groups are kept for a later run (`RunCgroups::recycle`): their limits
/// are the kernel's again, their peaks zeroed; the v2 group is removed. A run that adopts
/// them has them under its own name with its own limits, and a late kill of the run before
/// reaches nothing of it. A run that left more than `KEPT_CHARGE_MAX` charged (a big file's
/// page cache) has its groups removed.
#[test]
fn an_ended_runs_v1_groups_serve_the_next_run_alone() {
    need_kernel!();
    use agentkeysd::sandbox::run_cgroups::KEPT_CHARGE_MAX;
    use agentkeysd::sandbox::spec::Limits;
    let mut first = Sandbox::new();
    first.spec.limits = Limits {
        memory_bytes: 64 << 20,
        pids: 32,
        cpu_millis: 200,
    };
    // A peak of 8 MiB, freed at the exit.
    let out = run_py(&mut first, "b = b'x' * (8 << 20)");
    assert_eq!(out.outcome, Outcome::Exited(0), "{}", out.stderr);
    let old = first.plan().clone();
    wait_empty(&old);
    if old.v1.is_empty() {
        // Nothing to keep where no v1 hierarchy carries the runs' controllers: all removed.
        first.cgroups.recycle(&old).unwrap();
        assert!(old.v2.iter().all(|d| !d.path.exists()));
        return;
    }
    let by_controller = |plan: &agentkeysd::sandbox::spec::CgroupPlan, c: &str| {
        plan.v1
            .iter()
            .find(|d| d.controllers.iter().any(|x| x == c))
            .map(|d| d.path.clone())
    };
    if let Some(mem) = by_controller(&old, "memory") {
        let peak: u64 = read_trimmed(&mem, "memory.max_usage_in_bytes")
            .parse()
            .unwrap();
        assert!(peak >= 8 << 20, "{peak}");
    }
    let inodes: Vec<u64> = (old.v1.iter())
        .map(|d| std::fs::metadata(&d.path).unwrap().ino())
        .collect();

    first.cgroups.recycle(&old).unwrap();
    for d in old.v2.iter().chain(&old.v1) {
        assert!(!d.path.exists(), "{} is still there", d.path.display());
    }
    // One spare per v1 parent: the run's group itself, reset.
    let spares: Vec<std::path::PathBuf> = (old.v1.iter())
        .map(|d| {
            let found = spares_in(d.path.parent().unwrap());
            assert_eq!(found.len(), 1, "{found:?}");
            found[0].clone()
        })
        .collect();
    for (spare, ino) in spares.iter().zip(&inodes) {
        assert_eq!(std::fs::metadata(spare).unwrap().ino(), *ino);
        assert_eq!(spare.file_name(), spares[0].file_name());
    }
    let unlimited = |v: String| v.parse::<u64>().unwrap() > 1 << 50;
    for spare in &spares {
        if spare.join("memory.limit_in_bytes").exists() {
            assert!(unlimited(read_trimmed(spare, "memory.limit_in_bytes")));
            if spare.join("memory.memsw.limit_in_bytes").exists() {
                assert!(unlimited(read_trimmed(
                    spare,
                    "memory.memsw.limit_in_bytes"
                )));
            }
            let peak: u64 = read_trimmed(spare, "memory.max_usage_in_bytes")
                .parse()
                .unwrap();
            assert!(
                peak <= KEPT_CHARGE_MAX,
                "the run's peak is still there: {peak}"
            );
            assert_eq!(read_trimmed(spare, "memory.failcnt"), "0");
        }
        if spare.join("pids.max").exists() {
            assert_eq!(read_trimmed(spare, "pids.max"), "max");
        }
        if spare.join("cpu.cfs_quota_us").exists() {
            assert_eq!(read_trimmed(spare, "cpu.cfs_quota_us"), "-1");
        }
    }

    // The next run, cold, with a memory limit above the first's (refused, were the old
    // memsw limit still there).
    let mut second = Sandbox::new();
    second.spec.cgroup = first.cgroups.adopt(&second.spec.run_id);
    second.spec.limits = Limits {
        memory_bytes: 256 << 20,
        pids: 64,
        cpu_millis: 500,
    };
    let mut running = second.spawn(&["sleep", "1000"]);
    running.started().unwrap();
    let new = second.plan().clone();
    for (d, ino) in new.v1.iter().zip(&inodes) {
        assert_eq!(std::fs::metadata(&d.path).unwrap().ino(), *ino);
        assert!(!procs(&d.path).is_empty(), "{}", d.path.display());
    }
    for spare in &spares {
        assert!(!spare.exists(), "{} is still kept", spare.display());
    }
    if let Some(mem) = by_controller(&new, "memory") {
        assert_eq!(
            read_trimmed(&mem, "memory.limit_in_bytes"),
            (256u64 << 20).to_string()
        );
    }
    if let Some(pids) = by_controller(&new, "pids") {
        assert_eq!(read_trimmed(&pids, "pids.max"), "64");
    }
    // The first run killed late (a revocation racing its end) finds nothing of it.
    first.cgroups.kill(&old).unwrap();
    for d in &new.v1 {
        assert!(!procs(&d.path).is_empty(), "{}", d.path.display());
    }
    second.cgroups.kill(&new).unwrap();
    let out = second.finish(running);
    assert_eq!(out.outcome, Outcome::Signaled(libc::SIGKILL));

    // A killed run's groups are kept too, and serve the next run; which leaves 16 MiB of
    // page cache charged to the memory group: not kept.
    wait_empty(&new);
    second.cgroups.recycle(&new).unwrap();
    let mut third = Sandbox::new();
    third.spec.cgroup = second.cgroups.adopt(&third.spec.run_id);
    for (d, ino) in third.plan().v1.iter().zip(&inodes) {
        assert_eq!(std::fs::metadata(&d.path).unwrap().ino(), *ino);
    }
    let big = format!("head -c {} /dev/zero >/workspace/big", 2 * KEPT_CHARGE_MAX);
    let out = third.run(&["sh", "-c", &big]);
    assert_eq!(out.outcome, Outcome::Exited(0), "{}", out.stderr);
    let plan = third.plan().clone();
    wait_empty(&plan);
    third.cgroups.recycle(&plan).unwrap();
    for d in plan.v2.iter().chain(&plan.v1) {
        assert!(!d.path.exists(), "{} is still there", d.path.display());
    }
    if by_controller(&plan, "memory").is_some() {
        for d in &plan.v1 {
            let kept = spares_in(d.path.parent().unwrap());
            assert_eq!(kept, [] as [std::path::PathBuf; 0]);
        }
    }
}

/// At most `SPARES_KEPT` runs' groups are kept; a group with a process in it is neither
/// kept nor renamed; after `close` (the daemon stopping) the kept ones are gone and none is
/// kept. A starting daemon removes the spares of daemons that are gone (and a predecessor's
/// with its own pid), not those of one that lives.
#[test]
fn kept_groups_are_few_never_busy_and_gone_with_their_daemon() {
    need_kernel!();
    use agentkeysd::sandbox::run_cgroups::{RunCgroups, SPARES_KEPT};
    let cgroups =
        RunCgroups::prepare(&agentkeysd::sandbox::cgroups::read_layout().unwrap()).unwrap();
    let me = std::process::id();
    let make = |name: &str| {
        let plan = cgroups.plan(name);
        for d in plan.v2.iter().chain(&plan.v1) {
            std::fs::create_dir(&d.path).unwrap();
        }
        plan
    };
    let Some(parent) = cgroups
        .plan("x")
        .v1
        .first()
        .map(|d| d.path.parent().unwrap().to_owned())
    else {
        // Without v1 groups nothing is kept.
        let plan = make(&format!("run_k{me}x0"));
        cgroups.recycle(&plan).unwrap();
        assert!(plan.v2.iter().all(|d| !d.path.exists()));
        return;
    };
    struct Sleeper(std::process::Child);
    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut sleeper = Sleeper(
        std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .unwrap(),
    );

    for i in 0..=SPARES_KEPT {
        let plan = make(&format!("run_k{me}x{i}"));
        cgroups.recycle(&plan).unwrap();
        for d in plan.v2.iter().chain(&plan.v1) {
            assert!(!d.path.exists(), "{}", d.path.display());
        }
    }
    let kept = spares_in(&parent);
    assert_eq!(kept.len(), SPARES_KEPT, "{kept:?}");

    // A process in one of its v1 groups: nothing renamed, the removal refused.
    let busy = make(&format!("run_k{me}busy"));
    std::fs::write(
        busy.v1[0].path.join("cgroup.procs"),
        sleeper.0.id().to_string(),
    )
    .unwrap();
    assert!(cgroups.recycle(&busy).is_err());
    assert!(busy.v1.iter().all(|d| d.path.exists()));
    assert_eq!(spares_in(&parent), kept);
    let _ = sleeper.0.kill();
    let _ = sleeper.0.wait();
    // (Its v2 group, which held nothing, was removed.)
    wait_empty(&agentkeysd::sandbox::spec::CgroupPlan {
        v2: None,
        v1: busy.v1.clone(),
    });
    cgroups.remove(&busy).unwrap();

    // The daemon stops: the kept ones go, and the groups of a run ending now go too.
    cgroups.close().unwrap();
    for p in cgroups
        .plan("x")
        .v1
        .iter()
        .map(|d| d.path.parent().unwrap())
    {
        assert_eq!(
            spares_in(p),
            [] as [std::path::PathBuf; 0],
            "{}",
            p.display()
        );
    }
    let late = make(&format!("run_k{me}late"));
    cgroups.recycle(&late).unwrap();
    assert!(late.v2.iter().chain(&late.v1).all(|d| !d.path.exists()));
    assert_eq!(spares_in(&parent), [] as [std::path::PathBuf; 0]);

    // Left by daemons: one gone (a pid above the kernel's pid_max: never a process's), one
    // that lives (the sleeper, again), and one with this process's pid.
    let pid_max = read_trimmed(std::path::Path::new("/proc/sys/kernel"), "pid_max");
    let mut alive = Sleeper(
        std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .unwrap(),
    );
    let gone = make(&format!("spare-{pid_max}-0"));
    let lives = make(&format!("spare-{}-0", alive.0.id()));
    let own = make(&format!("spare-{me}-7"));
    assert!(cgroups.sweep_spares().unwrap() >= 2);
    for d in gone.v1.iter().chain(&own.v1) {
        assert!(!d.path.exists(), "{}", d.path.display());
    }
    assert!(lives.v1.iter().all(|d| d.path.exists()));
    let _ = alive.0.kill();
    let _ = alive.0.wait();
    for plan in [gone, lives, own] {
        cgroups.remove(&plan).unwrap();
    }
}
