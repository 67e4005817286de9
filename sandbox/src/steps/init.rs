//! Step 9: the sandbox's init. It starts the command (which becomes a session leader, takes
//! the terminal when there is one, and execs; see `sys::spawn_command`), then stays pid 1
//! of the pid namespace:
//! forwards the usual job-control and termination signals, reaps orphans, and ends with
//! the command's status. When it ends, the kernel kills whatever is left in the namespace.

use std::ffi::{CString, OsStr};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::plan::{Ended, StepError};
use crate::spec::Spec;
use crate::steps::rlimits::SecretVar;
use crate::sys;

/// Signals the init passes on to the command.
const FORWARDED: [Signal; 7] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// The default PATH when the spec's environment has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Forks and execs the command; returns when it has ended. `exec_ok` learns that the exec
/// happened (the command's copy of a close-on-exec pipe closes).
pub fn run(
    spec: &Spec,
    secret_env: &[SecretVar],
    exec_ok: impl FnOnce(),
) -> Result<Ended, StepError> {
    let argv: Vec<CString> = spec
        .argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|e| StepError::new("argv holds a NUL byte", std::io::Error::other(e)))?;
    let mut env: Vec<CString> = Vec::with_capacity(spec.env.len() + secret_env.len());
    for (k, v) in &spec.env {
        env.push(
            CString::new(format!("{k}={v}"))
                .map_err(|e| StepError::new("env holds a NUL byte", std::io::Error::other(e)))?,
        );
    }
    for s in secret_env {
        // Validated names and sealed values: a NUL inside a secret value is refused here.
        env.push(CString::new(s.as_slice()).map_err(|_| {
            StepError::refused(
                "a secret variable's value holds a NUL byte",
                std::io::ErrorKind::InvalidData,
            )
        })?);
    }
    let path = spec
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map_or(DEFAULT_PATH, |(_, v)| v.as_str());
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    for s in FORWARDED {
        mask.add(s);
    }
    let mut old = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), Some(&mut old))
        .map_err(|e| StepError::new("block signals in the init", e))?;
    let cwd = CString::new(spec.cwd.as_os_str().as_bytes())
        .map_err(|e| StepError::new("cwd holds a NUL byte", std::io::Error::other(e)))?;
    let name = argv.first().map(|a| a.as_bytes()).unwrap_or_default();
    // Like execvp: a name with a slash is a path; otherwise each PATH directory in turn.
    let candidates: Vec<CString> = if name.contains(&b'/') {
        argv.first().cloned().into_iter().collect()
    } else {
        path.split(':')
            .filter(|d| !d.is_empty())
            .filter_map(|dir| {
                let full = Path::new(dir).join(OsStr::from_bytes(name));
                CString::new(full.into_os_string().into_vec()).ok()
            })
            .collect()
    };
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| StepError::new("pipe for the exec check", e))?;
    let cmd = sys::Command {
        argv: &argv,
        env: &env,
        candidates: &candidates,
        cwd: &cwd,
        tty: spec.tty,
        mask: &old,
        report: wr.as_raw_fd(),
    };
    let child = Pid::from_raw(
        sys::spawn_command(&cmd).map_err(|e| StepError::new("start the command", e))?,
    );
    drop(wr);
    drop(env);
    // EOF with nothing read: the exec happened. Bytes: where and why the child failed.
    let mut msg = Vec::new();
    let _ = std::fs::File::from(rd).read_to_end(&mut msg);
    if !msg.is_empty() {
        let _ = waitpid(child, None);
        let what = sys::CommandFailure::decode(&msg).describe(spec, name);
        return Err(StepError::refused(what, std::io::ErrorKind::NotFound));
    }
    exec_ok();
    reap(child, &mask)
}

/// Waits for signals: forwards the listed ones, reaps on SIGCHLD, returns when the command
/// has ended and nothing it left behind is alive (see [`end_all`]).
fn reap(child: Pid, mask: &SigSet) -> Result<Ended, StepError> {
    loop {
        // Reap first: the command may have ended before the signal was waited for.
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == child => {
                    end_all();
                    return Ok(Ended::Exited(code));
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => {
                    end_all();
                    return Ok(Ended::Signaled(sig as i32));
                }
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => break,
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(StepError::new("waitpid", e)),
            }
        }
        match mask.wait() {
            Ok(Signal::SIGCHLD) => {}
            Ok(sig) => {
                let _ = kill(child, sig);
            }
            Err(e) => return Err(StepError::new("sigwait", e)),
        }
    }
}

/// The command has ended: everything it left in the pid namespace (daemonized children) is
/// killed and reaped before the init reports the end, so a reported end means no process of
/// the agent is left. The runner then reports at once, without waiting for the init's own
/// exit (the kernel tearing down its namespaces), as bwrap's monitor does. The init runs as
/// the agent's user by now, which is every process here: `kill(-1)` reaches them all.
fn end_all() {
    // Every other process of the namespace descends from the init (an orphan is given to
    // it, or to a subreaper below it, before its parent is gone): with no child left there
    // is nothing to kill, and `kill(-1)`, which walks every process of the host, is spared.
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Err(nix::errno::Errno::ECHILD) => return,
            Ok(WaitStatus::StillAlive) => break,
            Err(nix::errno::Errno::EINTR) | Ok(_) => {}
            Err(_) => break,
        }
    }
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    // Until ECHILD: none left.
    while let Ok(_) | Err(nix::errno::Errno::EINTR) = waitpid(None, None) {}
}
