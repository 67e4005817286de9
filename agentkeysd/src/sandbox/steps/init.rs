//! Step 9: the sandbox's init. It forks the command (which becomes a session leader, takes
//! the terminal when there is one, and execs), then stays pid 1 of the pid namespace:
//! forwards the usual job-control and termination signals, reaps orphans, and ends with
//! the command's status. When it ends, the kernel kills whatever is left in the namespace.

use std::ffi::{CString, OsStr};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::sandbox::plan::{Ended, StepError};
use crate::sandbox::spec::Spec;
use crate::sandbox::steps::rlimits::SecretVar;
use crate::sandbox::sys::{self, Forked};

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
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| StepError::new("pipe for the exec check", e))?;
    let child =
        match sys::fork_single_threaded().map_err(|e| StepError::new("fork the command", e))? {
            Forked::Child => {
                drop(rd);
                command(spec, &argv, &env, path, &old, wr)
            }
            Forked::Parent(pid) => Pid::from_raw(pid),
        };
    drop(wr);
    drop(env);
    // EOF with nothing read: the exec happened. Bytes: the child's exec error.
    let mut msg = String::new();
    let _ = std::fs::File::from(rd).read_to_string(&mut msg);
    if !msg.is_empty() {
        let _ = waitpid(child, None);
        return Err(StepError::refused(msg, std::io::ErrorKind::NotFound));
    }
    exec_ok();
    reap(child, &mask)
}

/// The forked command: session, terminal, default signals, exec. Never returns.
fn command(
    spec: &Spec,
    argv: &[CString],
    env: &[CString],
    path: &str,
    old: &SigSet,
    wr: OwnedFd,
) -> ! {
    let fail = |what: String| -> ! {
        let _ = std::fs::File::from(wr.try_clone().unwrap_or_else(|_| std::process::exit(127)))
            .write_all(what.as_bytes());
        std::process::exit(127)
    };
    if let Err(e) = nix::unistd::setsid() {
        fail(format!("setsid: {e}"));
    }
    if spec.tty
        && let Err(e) = sys::set_controlling_tty(std::io::stdin().as_fd())
    {
        fail(format!("make fd 0 the controlling terminal: {e}"));
    }
    sys::reset_signal_dispositions();
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(old), None);
    if let Err(e) = nix::unistd::chdir(&spec.cwd) {
        fail(format!("chdir {}: {e}", spec.cwd.display()));
    }
    let Some(argv0) = argv.first() else {
        fail("empty argv".to_owned())
    };
    let name = argv0.as_bytes();
    let mut last = nix::errno::Errno::ENOENT;
    if name.contains(&b'/') {
        last = nix::unistd::execve(argv0, argv, env).unwrap_err_or(last);
    } else {
        for dir in path.split(':').filter(|d| !d.is_empty()) {
            let full = Path::new(dir).join(OsStr::from_bytes(name));
            let Ok(full) = CString::new(full.as_os_str().as_bytes()) else {
                continue;
            };
            let e = nix::unistd::execve(&full, argv, env).unwrap_err_or(last);
            // Like execvp: a permission error is remembered, a missing file is not.
            if e != nix::errno::Errno::ENOENT && e != nix::errno::Errno::ENOTDIR {
                last = e;
            }
        }
    }
    fail(format!(
        "execute {:?}: {}",
        String::from_utf8_lossy(name),
        last.desc()
    ))
}

trait ErrOr {
    fn unwrap_err_or(self, d: nix::errno::Errno) -> nix::errno::Errno;
}

impl ErrOr for nix::Result<std::convert::Infallible> {
    fn unwrap_err_or(self, d: nix::errno::Errno) -> nix::errno::Errno {
        match self {
            Err(e) => e,
            Ok(_) => d,
        }
    }
}

/// Waits for signals: forwards the listed ones, reaps on SIGCHLD, returns when the command
/// has ended (orphans it leaves are reaped meanwhile and killed when the init exits).
fn reap(child: Pid, mask: &SigSet) -> Result<Ended, StepError> {
    loop {
        // Reap first: the command may have ended before the signal was waited for.
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == child => {
                    return Ok(Ended::Exited(code));
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => {
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
