//! Daemon side of the runner: spawn `agentkeys-runner` with the spec on a pipe (fd 3), the
//! report pipe (fd 4) and the secret memfds (fd 5…), learn `Started`, wait for the end.
//! Or start it ahead of its run ([`prepare`], a warm start; see `spec`) and hand it the
//! spec later ([`Warm::launch`]). Blocking calls: the daemon runs them on a blocking thread.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;

use super::spec::{CgroupPlan, FRAME_GO, FRAME_PREPARE, FRAME_SPEC, Report, Spec};
use super::sys;

/// How a run ended, as the daemon sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The command exited with this code.
    Exited(i32),
    /// The command (or the whole run, through the cgroup) was killed by this signal.
    Signaled(i32),
    /// The sandbox could not be built: the step and why.
    SetupFailed { step: String, error: String },
    /// The runner ended without saying how the command did.
    RunnerDied(String),
}

/// A started runner.
#[derive(Debug)]
pub struct Running {
    child: sys::Spawned,
    /// Warm start: the spec socket, for [`Running::go`].
    go: Option<OwnedFd>,
    reports: BufReader<std::fs::File>,
    started: Option<i32>,
    early_end: Option<Report>,
}

/// Spawns the runner. `stdio` become the agent's fds 0–2; `secrets[i]` is passed at
/// `SECRET_FD_BASE + i` (the spec's `SecretRef::fd` is that `i`).
pub fn spawn(
    runner: &Path,
    spec: &Spec,
    stdio: [OwnedFd; 3],
    secrets: Vec<OwnedFd>,
) -> std::io::Result<Running> {
    let json = checked_json(spec)?;
    let (spec_rd, spec_wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (rep_rd, rep_wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let [i, o, e] = stdio.each_ref().map(|fd| Some(fd.as_fd()));
    let mut fds = vec![spec_rd.as_fd(), rep_wr.as_fd()];
    fds.extend(secrets.iter().map(AsFd::as_fd));
    let child = sys::spawn_with_fds(runner, [i, o, e], &fds)?;
    drop(fds);
    drop(stdio);
    drop(spec_rd);
    drop(rep_wr);
    drop(secrets);
    let mut w = std::fs::File::from(spec_wr);
    // A runner that died early closes its end: the error shows in wait().
    let _ = w.write_all(&json);
    drop(w);
    Ok(Running {
        child,
        go: None,
        reports: BufReader::new(std::fs::File::from(rep_rd)),
        started: None,
        early_end: None,
    })
}

/// A runner started ahead of its run: started, and its run's cgroups made (it is in the v1
/// ones) and the agent's namespaces for `--net none`, waiting for the spec. Dropped unused,
/// its socket closes, so it ends, and it is reaped (its cgroups are the caller's to remove).
#[derive(Debug)]
pub struct Warm {
    child: Option<sys::Spawned>,
    /// Given to the [`Running`] it becomes.
    sock: Option<OwnedFd>,
    reports: Option<BufReader<std::fs::File>>,
    plan: CgroupPlan,
}

/// Starts a warm runner for a run that will use the cgroups of `plan`; returns once it is
/// in them.
pub fn prepare(runner: &Path, plan: &CgroupPlan) -> std::io::Result<Warm> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    let (mine, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    let (rep_rd, rep_wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let child = sys::spawn_with_fds(
        runner,
        [None, None, None],
        &[theirs.as_fd(), rep_wr.as_fd()],
    )?;
    drop((theirs, rep_wr));
    let mut warm = Warm {
        child: Some(child),
        sock: Some(mine),
        reports: Some(BufReader::new(std::fs::File::from(rep_rd))),
        plan: plan.clone(),
    };
    let json = serde_json::to_vec(plan).map_err(std::io::Error::other)?;
    let sock = warm
        .sock
        .as_ref()
        .ok_or_else(|| std::io::Error::other("no spec socket"))?;
    sys::send_frame(sock.as_fd(), FRAME_PREPARE, &json, &[])?;
    let reports = warm
        .reports
        .as_mut()
        .ok_or_else(|| std::io::Error::other("no report pipe"))?;
    match read_report(reports)? {
        Some(Report::Prepared) => Ok(warm),
        Some(Report::Failed { step, error }) => Err(std::io::Error::other(format!(
            "the warm runner failed at {step}: {error}"
        ))),
        _ => Err(std::io::Error::other(
            "the warm runner ended before its cgroups were ready",
        )),
    }
}

impl Warm {
    /// The cgroups this runner is in; the run's spec must name exactly these.
    pub fn plan(&self) -> &CgroupPlan {
        &self.plan
    }

    /// Whether the runner is still there to take a spec.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Hands the runner its run: the spec, the agent's stdio (fds 0–2 there) and the
    /// secrets (`secrets[i]` at `SECRET_FD_BASE + i`), as [`spawn`] does for a cold start.
    /// The runner builds the sandbox but starts the command only after [`Running::go`].
    pub fn launch(
        mut self,
        spec: &Spec,
        stdio: [OwnedFd; 3],
        secrets: Vec<OwnedFd>,
    ) -> std::io::Result<Running> {
        let json = checked_json(spec)?;
        if spec.cgroup != self.plan {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the spec's cgroups are not the warm runner's",
            ));
        }
        let fds: Vec<BorrowedFd<'_>> = stdio.iter().chain(&secrets).map(AsFd::as_fd).collect();
        let sock = self
            .sock
            .as_ref()
            .ok_or_else(|| std::io::Error::other("the warm runner was already used"))?;
        sys::send_frame(sock.as_fd(), FRAME_SPEC, &json, &fds)?;
        drop(fds);
        let (child, reports) = match (self.child.take(), self.reports.take()) {
            (Some(c), Some(r)) => (c, r),
            _ => return Err(std::io::Error::other("the warm runner was already used")),
        };
        Ok(Running {
            child,
            go: self.sock.take(),
            reports,
            started: None,
            early_end: None,
        })
    }
}

impl Drop for Warm {
    /// Closes the spec socket: the runner, which waits on it, ends its namespace holder,
    /// reaps it and exits, so nothing of it is left in its cgroups once it is reaped here.
    /// (A SIGKILL would leave the holder's end to the host's init, and the groups busy; it
    /// comes only if the runner has not gone within 2 s.)
    fn drop(&mut self) {
        drop(self.sock.take());
        if let Some(mut child) = self.child.take() {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The spec as the runner reads it, once it passed the checks the runner makes too.
fn checked_json(spec: &Spec) -> std::io::Result<Vec<u8>> {
    spec.validate()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    serde_json::to_vec(spec).map_err(std::io::Error::other)
}

/// The next report line the runner wrote (`None` at EOF); lines that do not parse are
/// skipped.
fn read_report(reports: &mut BufReader<std::fs::File>) -> std::io::Result<Option<Report>> {
    let mut line = String::new();
    loop {
        line.clear();
        if reports.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        if let Ok(r) = serde_json::from_str(line.trim_end()) {
            return Ok(Some(r));
        }
    }
}

impl Running {
    /// Warm start: the run's start is on record (`recorded`) and the command may start
    /// ([`FRAME_GO`]); otherwise the runner is told it must not (the socket closes, and it
    /// ends the sandbox and reports a failure). Nothing to do for a cold start. A runner
    /// that cannot be told has gone; [`Self::started`] says how it ended.
    pub fn go(&mut self, recorded: bool) {
        if let (Some(sock), true) = (self.go.take(), recorded) {
            let _ = sys::send_frame(sock.as_fd(), FRAME_GO, &[], &[]);
        }
    }

    /// Blocks until the sandbox is built and the command executed; returns the host pid
    /// of the sandbox's init. An error when the run ended before that (see [`Self::wait`]).
    pub fn started(&mut self) -> std::io::Result<i32> {
        if let Some(pid) = self.started {
            return Ok(pid);
        }
        if self.early_end.is_none() {
            match self.next_report()? {
                Some(Report::Started { pid }) => {
                    self.started = Some(pid);
                    return Ok(pid);
                }
                other => self.early_end = other,
            }
        }
        Err(std::io::Error::other(match &self.early_end {
            Some(Report::Failed { step, error }) => {
                format!("the sandbox failed at {step}: {error}")
            }
            _ => "the runner ended before the command started".to_owned(),
        }))
    }

    /// Reads the reports to the end and reaps the runner.
    pub fn wait(mut self) -> Outcome {
        let (outcome, _) = self.wait_reported();
        self.reap();
        outcome
    }

    /// Blocks until the run's end: its report, or the runner's exit without one. The bool
    /// says whether the end came as the runner's report. A reported end comes from the
    /// sandbox's init once nothing of the agent is left (only the init's own exit, and the
    /// runner's, may still be under way): it returns at once, and the runner is reaped
    /// later ([`Self::reap`]), off the path that tells the end. Otherwise the runner was
    /// killed or died (it is reaped here, for its status), and what is left of the run must
    /// still be ended.
    pub fn wait_reported(&mut self) -> (Outcome, bool) {
        let mut last = self.early_end.take();
        loop {
            match last {
                Some(Report::Exited { code }) => return (Outcome::Exited(code), true),
                Some(Report::Signaled { signal }) => return (Outcome::Signaled(signal), true),
                Some(Report::Failed { step, error }) => {
                    return (Outcome::SetupFailed { step, error }, true);
                }
                _ => {}
            }
            match self.next_report() {
                Ok(Some(r)) => last = Some(r),
                _ => break,
            }
        }
        let status = self.child.wait();
        let outcome = match status {
            // Killed with its sandbox (a kill on revoke reaches the runner where it is in
            // the run's v1 groups): the run was signaled.
            Ok(s) if s.signal().is_some() && self.started.is_some() => {
                Outcome::Signaled(s.signal().unwrap_or(libc::SIGKILL))
            }
            Ok(s) => Outcome::RunnerDied(format!("the runner ended ({s}) without a report")),
            Err(e) => Outcome::RunnerDied(format!("waiting for the runner: {e}")),
        };
        (outcome, false)
    }

    /// Reaps the runner (after [`Self::wait_reported`]; it exits right after its last
    /// report). Idempotent.
    pub fn reap(&mut self) {
        let _ = self.child.wait();
    }

    fn next_report(&mut self) -> std::io::Result<Option<Report>> {
        read_report(&mut self.reports)
    }
}
