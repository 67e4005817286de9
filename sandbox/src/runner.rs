//! `agentkeys-runner`'s main: read and check the spec (fd 3), join the run's cgroups and
//! start the holder of the agent's namespaces, load the policies, run the plan (a warm
//! runner loads its policies first, then prepares the rest as the daemon sends it). The
//! runner process stays in the host's pid namespace, reports `Started` once the command
//! was executed, relays how it ended and exits; the init (its child) runs the rest of the
//! plan and tells the runner over a private pipe how things went.
//!
//! Exit codes of the runner: the command's code; 128+N when it died of signal N; 125 when
//! the sandbox could not be built (the reason is on fd 4 and stderr).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::plan::{self, Ended, Finished, PlanError};
use super::policy::Policies;
use super::policy::bpf::Program;
use super::real::RealSyscalls;
use super::spec::{
    CgroupPlan, FRAME_PREPARE, FRAME_SPEC, MAX_SPEC_BYTES, Net, OWN_FD_FLOOR, REPORT_FD, Report,
    SECRET_FD_BASE, SPEC_FD, Spec,
};
use super::steps::cgroup::Joined;
use super::steps::identity::AgentNs;
use super::sys;

/// Exit code when the sandbox could not be built.
pub const SETUP_FAILED: i32 = 125;

/// The buffer a cold start reads its spec into first (a spec is about 1 KiB; a larger one
/// grows it).
const SPEC_READ_CAPACITY: usize = 16 * 1024;

/// What the init tells the runner, one line each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Started,
    Failed { step: String, error: String },
    Ended(Ended),
}

impl Status {
    fn encode(&self) -> String {
        match self {
            Status::Started => "started\n".to_owned(),
            Status::Failed { step, error } => {
                format!("failed {step} {}\n", error.replace('\n', " "))
            }
            Status::Ended(Ended::Exited(c)) => format!("exited {c}\n"),
            Status::Ended(Ended::Signaled(s)) => format!("signaled {s}\n"),
        }
    }

    fn decode(line: &str) -> Option<Status> {
        let (word, rest) = line
            .trim_end()
            .split_once(' ')
            .unwrap_or((line.trim_end(), ""));
        Some(match word {
            "started" => Status::Started,
            "failed" => {
                let (step, error) = rest.split_once(' ').unwrap_or((rest, ""));
                Status::Failed {
                    step: step.to_owned(),
                    error: error.to_owned(),
                }
            }
            "exited" => Status::Ended(Ended::Exited(rest.parse().ok()?)),
            "signaled" => Status::Ended(Ended::Signaled(rest.parse().ok()?)),
            _ => return None,
        })
    }
}

/// Writes one status line (a single write: lines are far below PIPE_BUF).
pub fn send_status(fd: &OwnedFd, status: &Status) {
    let _ = std::fs::File::from(
        fd.try_clone()
            .unwrap_or_else(|_| std::process::exit(SETUP_FAILED)),
    )
    .write_all(status.encode().as_bytes());
}

/// What the runner binary's `main` calls (it starts without Rust's own start-up, see
/// `bin/agentkeys-runner.rs`): the runner's whole life, with that start-up's parts it
/// needs done here. Returns the exit code.
pub fn runner_entry() -> i32 {
    // Its stdio must be open: otherwise the first fds it opens would land on 0–2 and be
    // handed to the agent as its stdio. (Rust's start-up would put /dev/null there.)
    let open = |fd| nix::fcntl::fcntl(sys::borrow_inherited_fd(fd), nix::fcntl::FcntlArg::F_GETFD);
    if (0..3).any(|fd| open(fd).is_err()) {
        return SETUP_FAILED;
    }
    sys::ignore_sigpipe();
    // A panic must not unwind into the C runtime: it ends the runner like a failed step.
    std::panic::catch_unwind(runner_main).unwrap_or(SETUP_FAILED)
}

/// The runner binary's whole life; returns its exit code.
fn runner_main() -> i32 {
    // The modes the sandbox is built with are the ones written in the steps, whatever the
    // daemon's own umask (systemd gives it 0077, which would make the new root's /etc and
    // /dev unreadable to the agent); the agent's command starts with the usual 022 too.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let report = sys::borrow_inherited_fd(REPORT_FD);
    let warm = sys::is_socket(sys::borrow_inherited_fd(SPEC_FD));
    let (spec, joined, go, agent_ns, (policies, program)) = if warm {
        // The policies first: a warm runner then has them ready before its spec comes.
        let loaded = match load_policies() {
            Ok(l) => l,
            Err((step, e)) => return fail(report, step, &e),
        };
        match warm_start(report) {
            Ok(Some(w)) => (w.spec, w.joined, Some(w.go), Some(w.agent_ns), loaded),
            // The daemon let this warm runner go unused (shutdown): nothing to report.
            Ok(None) => return 0,
            Err((step, e)) => return fail(report, step, &e),
        }
    } else {
        let spec = match read_spec() {
            Ok(s) => s,
            Err(e) => return fail(report, "spec", &e),
        };
        // Like a warm start, the cgroups and the agent's namespaces before the policies:
        // the holder makes the network namespace (the costliest part of a start) on the
        // other CPU while this one decodes the policies, instead of later, while the
        // runner and the init both build the sandbox.
        let prepared = join_cgroups(&spec.cgroup).and_then(|joined| {
            let ns = match spec.net {
                Net::None => Some(spawn_agent_ns()?),
                Net::Host => None,
            };
            Ok((joined, ns))
        });
        match prepared.and_then(|(joined, ns)| Ok((joined, ns, load_policies()?))) {
            Ok((joined, agent_ns, loaded)) => (spec, joined, None, agent_ns, loaded),
            Err((step, e)) => return fail(report, step, &e),
        }
    };
    let mut real = RealSyscalls::default();
    real.cgroups = Some(joined);
    real.go = go;
    real.agent_ns = agent_ns;
    match plan::run(&mut real, &spec, &policies, &program) {
        Ok(Finished::Runner { init_pid }) => {
            supervise(report, init_pid, real.status_rd, real.agent_ns.take())
        }
        Ok(Finished::Init(ended)) => {
            if let Some(fd) = &real.status_wr {
                send_status(fd, &Status::Ended(ended));
            }
            0
        }
        Err(e) if real.in_init => {
            if let Some(fd) = &real.status_wr {
                send_status(fd, &failed(&e));
            }
            SETUP_FAILED
        }
        Err(e) => fail(report, e.step().name(), &e.chain()),
    }
}

/// The shipped policies and the seccomp program compiled from them.
fn load_policies() -> Result<(Policies, Program), StartError> {
    let policies = Policies::shipped().map_err(|e| ("policy", e.to_string()))?;
    let program = policies
        .seccomp
        .program()
        .map_err(|e| ("seccomp", e.to_string()))?;
    Ok((policies, program))
}

/// The plan's step 1 ahead of it, in both starts: the run's cgroups created and joined,
/// so that everything after is charged to them. The plan then finds it done.
fn join_cgroups(plan: &CgroupPlan) -> Result<Joined, StartError> {
    super::steps::cgroup::join(plan, OWN_FD_FLOOR)
        .map_err(|e| ("cgroup", PlanError::Cgroup(e).chain()))
}

/// The first half of step 5 ahead of the plan, for `--net none`: the holder of the agent's
/// user and network namespaces (making a network namespace is the costliest part of a
/// start; the holder makes it on the other CPU).
fn spawn_agent_ns() -> Result<AgentNs, StartError> {
    AgentNs::spawn(Net::None).map_err(|e| ("identity", PlanError::Identity(e).chain()))
}

fn failed(e: &PlanError) -> Status {
    Status::Failed {
        step: e.step().name().to_owned(),
        error: e.chain(),
    }
}

/// The runner after the fork: relays the init's status lines as reports; reaps the init
/// when it ended without reporting the command's end.
fn supervise(
    report: BorrowedFd<'_>,
    init_pid: i32,
    status: Option<OwnedFd>,
    agent_ns: Option<AgentNs>,
) -> i32 {
    let mut ended = None;
    let mut setup_failed = false;
    if let Some(fd) = status {
        for line in BufReader::new(std::fs::File::from(fd)).lines() {
            let Ok(line) = line else { break };
            match Status::decode(&line) {
                Some(Status::Started) => {
                    send_report(report, &Report::Started { pid: init_pid });
                    // The init joined the agent's namespaces before the exec: the holder
                    // has done its part. It is reaped when this returns, after the end's
                    // report: waiting for its exit here would hold up reading the end.
                    if let Some(ns) = &agent_ns {
                        ns.kill();
                    }
                }
                Some(Status::Failed { step, error }) => {
                    eprintln!("agentkeys-runner: {step}: {error}");
                    send_report(report, &Report::Failed { step, error });
                    setup_failed = true;
                }
                Some(Status::Ended(e)) => {
                    ended = Some(e);
                    break;
                }
                None => {}
            }
        }
    }
    // The init reports the end only once nothing of the agent is left (`init::end_all`);
    // what remains is its own exit, which the daemon waits for through its pidfd, off the
    // path of the report. (Its PDEATHSIG, SIGKILL, finds it exiting already.)
    if let Some(e) = ended {
        return report_end(report, e);
    }
    let waited = loop {
        match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(init_pid), None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other,
        }
    };
    if setup_failed {
        return SETUP_FAILED;
    }
    // The init died without a word (killed through the cgroup, OOM): its own status.
    match waited {
        Ok(nix::sys::wait::WaitStatus::Signaled(_, sig, _)) => {
            report_end(report, Ended::Signaled(sig as i32))
        }
        Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => report_end(report, Ended::Exited(code)),
        _ => fail(
            report,
            "exec",
            "the sandbox's init vanished without a status",
        ),
    }
}

/// Reports the end; the runner's exit code is the command's (128+N for signal N).
fn report_end(report: BorrowedFd<'_>, ended: Ended) -> i32 {
    match ended {
        Ended::Exited(code) => {
            send_report(report, &Report::Exited { code });
            code
        }
        Ended::Signaled(signal) => {
            send_report(report, &Report::Signaled { signal });
            128 + signal
        }
    }
}

/// What a warm start prepared, with the spec it then got.
struct WarmStart {
    spec: Spec,
    joined: Joined,
    /// The spec socket, for FRAME_GO.
    go: OwnedFd,
    /// The agent's namespaces for `--net none`.
    agent_ns: AgentNs,
}

/// A failed start: the step to report and why.
type StartError = (&'static str, String);
/// A frame's JSON and the fds that came with it.
type FrameBody = (Vec<u8>, Vec<OwnedFd>);

/// Warm start (see `spec`): the cgroup plan first — create the groups, move into the v1
/// ones, make the agent's namespaces for `--net none`, report `Prepared` — then the spec with
/// the agent's stdio and secret memfds, which are moved to fds 0–2 and 5…; FRAME_GO comes
/// later (`Syscalls::await_go`). `None`: the daemon closed the socket before sending a spec.
fn warm_start(report: BorrowedFd<'_>) -> Result<Option<WarmStart>, StartError> {
    let sock = sys::take_inherited_fd(SPEC_FD)
        .map_err(|e| ("spec", format!("fd {SPEC_FD} (the spec socket): {e}")))?;
    let frame = |want: u8| -> Result<Option<FrameBody>, StartError> {
        match sys::recv_frame(sock.as_fd(), MAX_SPEC_BYTES) {
            Ok(None) => Ok(None),
            Ok(Some((kind, body, fds))) if kind == want => Ok(Some((body, fds))),
            Ok(Some((kind, ..))) => Err(("spec", format!("unexpected frame {kind:#x}"))),
            Err(e) => Err(("spec", format!("reading the spec socket: {e}"))),
        }
    };
    let Some((body, _)) = frame(FRAME_PREPARE)? else {
        return Ok(None);
    };
    let plan: CgroupPlan = serde_json::from_slice(&body)
        .map_err(|e| ("spec", format!("the cgroup plan is not valid: {e}")))?;
    // The agent's namespaces for `--net none` (the default), ahead of the run: making a
    // network namespace is the costliest part of a start. Its fds go above every number
    // the spec's fds will take.
    let joined = join_cgroups(&plan)?;
    let mut agent_ns = spawn_agent_ns()?;
    agent_ns
        .raise_fds(OWN_FD_FLOOR)
        .map_err(|e| ("identity", PlanError::Identity(e).chain()))?;
    send_report(report, &Report::Prepared);
    let Some((body, fds)) = frame(FRAME_SPEC)? else {
        return Ok(None);
    };
    let spec: Spec = serde_json::from_slice(&body)
        .map_err(|e| ("spec", format!("the spec is not valid: {e}")))?;
    spec.validate()
        .map_err(|e| ("spec", format!("the spec is not valid: {e}")))?;
    if spec.cgroup != plan {
        return Err((
            "spec",
            "the spec's cgroups are not the prepared ones".into(),
        ));
    }
    // Stdio, then the secrets, then whatever else the spec names by fd (the workspace).
    let secrets = spec.secret_env.len() + spec.secret_files.len();
    if fds.len() < 3 + secrets {
        return Err((
            "spec",
            format!(
                "{} fds came with the spec, at least {} expected",
                fds.len(),
                3 + secrets
            ),
        ));
    }
    install_fds(fds).map_err(|e| ("spec", format!("placing the spec's fds: {e}")))?;
    // The socket stays open for FRAME_GO (`Syscalls::await_go`).
    Ok(Some(WarmStart {
        spec,
        joined,
        go: sock,
        agent_ns,
    }))
}

/// Puts the received fds at 0, 1, 2, 5, 6, …: first each above every target, so that no
/// `dup2` can replace a received fd not yet placed.
fn install_fds(fds: Vec<OwnedFd>) -> std::io::Result<()> {
    let floor = SECRET_FD_BASE + fds.len() as i32;
    let raised: Vec<OwnedFd> = fds
        .iter()
        .map(|fd| sys::dup_above(fd.as_fd(), floor))
        .collect::<Result<_, _>>()?;
    drop(fds);
    for (i, fd) in raised.into_iter().enumerate() {
        let target = if i < 3 {
            i as i32
        } else {
            SECRET_FD_BASE + (i as i32 - 3)
        };
        sys::install_fd(fd, target)?;
    }
    Ok(())
}

fn read_spec() -> Result<Spec, String> {
    let fd = sys::take_inherited_fd(SPEC_FD)
        .map_err(|e| format!("fd {SPEC_FD} (the spec pipe): {e}"))?;
    // Room for a usual spec up front: one read and the one that sees the end, rather than
    // a read for each doubling of an empty buffer.
    let mut buf = Vec::with_capacity(SPEC_READ_CAPACITY);
    std::fs::File::from(fd)
        .take(MAX_SPEC_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("reading the spec from fd {SPEC_FD}: {e}"))?;
    if buf.len() > MAX_SPEC_BYTES {
        return Err(format!("the spec is larger than {MAX_SPEC_BYTES} bytes"));
    }
    let spec: Spec =
        serde_json::from_slice(&buf).map_err(|e| format!("the spec is not valid: {e}"))?;
    spec.validate()
        .map_err(|e| format!("the spec is not valid: {e}"))?;
    Ok(spec)
}

fn fail(report: BorrowedFd<'_>, step: &str, error: &str) -> i32 {
    eprintln!("agentkeys-runner: {step}: {error}");
    send_report(
        report,
        &Report::Failed {
            step: step.to_owned(),
            error: error.to_owned(),
        },
    );
    SETUP_FAILED
}

/// One JSON line on the report fd; a closed or missing report pipe is ignored (the exit
/// code still tells).
fn send_report(report: BorrowedFd<'_>, r: &Report) {
    if let Ok(mut line) = serde_json::to_vec(r) {
        line.push(b'\n');
        let _ = nix::unistd::write(report.as_fd(), &line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_round_trip() {
        for s in [
            Status::Started,
            Status::Failed {
                step: "landlock".into(),
                error: "no: really\nnot".into(),
            },
            Status::Ended(Ended::Exited(3)),
            Status::Ended(Ended::Signaled(9)),
        ] {
            let back = Status::decode(&s.encode()).unwrap();
            match (&s, &back) {
                (Status::Failed { step, .. }, Status::Failed { step: b, error }) => {
                    assert_eq!(step, b);
                    assert_eq!(error, "no: really not");
                }
                _ => assert_eq!(s, back),
            }
        }
        assert_eq!(Status::decode("garbage"), None);
    }
}
