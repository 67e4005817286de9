//! Starting the agent's command from the init: a `CLONE_VM | CLONE_VFORK` child that makes
//! only async-signal-safe calls on data prepared before it exists.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::RawFd;

use super::{ChildStack, cvt};

/// memory (`CLONE_VM | CLONE_VFORK`) and so must not allocate.
#[derive(Debug)]
pub(crate) struct Command<'a> {
    pub argv: &'a [std::ffi::CString],
    pub env: &'a [std::ffi::CString],
    /// Paths to try in turn (the name itself when it holds a `/`, else PATH's entries).
    pub candidates: &'a [std::ffi::CString],
    pub cwd: &'a std::ffi::CString,
    /// Make fd 0 the controlling terminal.
    pub tty: bool,
    /// The signal mask the command starts with.
    pub mask: &'a nix::sys::signal::SigSet,
    /// Close-on-exec pipe where a failure is written (see [`CommandFailure`]).
    pub report: RawFd,
}

/// Which call of the command's child failed, and its errno: five bytes on the pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CommandFailure {
    pub at: u8,
    pub errno: i32,
}

impl CommandFailure {
    const SETSID: u8 = 1;
    const TTY: u8 = 2;
    const CHDIR: u8 = 3;
    const EXEC: u8 = 4;

    pub fn decode(bytes: &[u8]) -> CommandFailure {
        let errno = bytes
            .get(1..5)
            .and_then(|b| b.try_into().ok())
            .map_or(libc::EIO, i32::from_ne_bytes);
        CommandFailure {
            at: bytes.first().copied().unwrap_or(0),
            errno,
        }
    }

    /// The sentence the exec step reports.
    pub fn describe(&self, spec: &crate::spec::Spec, name: &[u8]) -> String {
        let e = nix::errno::Errno::from_raw(self.errno);
        match self.at {
            Self::SETSID => format!("setsid: {e}"),
            Self::TTY => format!("make fd 0 the controlling terminal: {e}"),
            Self::CHDIR => format!("chdir {}: {e}", spec.cwd.display()),
            _ if name.is_empty() => "empty argv".to_owned(),
            _ => format!("execute {:?}: {}", String::from_utf8_lossy(name), e.desc()),
        }
    }
}

/// The command's process: `clone(CLONE_VM | CLONE_VFORK)` on a stack of its own, so the
/// init's page tables are not copied (a fork's cost on every run) and the init sleeps
/// until the child has exec'd or failed. The child: new session, the terminal, default
/// signal dispositions, the given mask, cwd, execve of each candidate.
pub(crate) fn spawn_command(cmd: &Command<'_>) -> io::Result<libc::pid_t> {
    let (argv, envp) = (nul_terminated(cmd.argv), nul_terminated(cmd.env));
    let child = CommandChild {
        cmd,
        argv: &argv,
        envp: &envp,
    };
    let mut stack = ChildStack::new(COMMAND_STACK);
    let top = stack.top();
    let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD;
    // SAFETY: with CLONE_VFORK this thread sleeps until the child execs or exits, so the
    // child is the only one running in this memory; `run_command` reads `child` (alive on
    // this frame throughout) and makes only async-signal-safe calls without allocating,
    // on `stack`, which outlives it. Without CLONE_FILES/CLONE_SIGHAND the child's fd
    // table and signal dispositions are its own copies.
    let pid = cvt(libc::c_long::from(unsafe {
        libc::clone(
            run_command,
            top,
            flags,
            (&raw const child) as *mut libc::c_void,
        )
    }))?;
    drop(stack);
    Ok(pid as libc::pid_t)
}

/// `execve`'s form of a list of strings: their pointers, then a null.
fn nul_terminated(items: &[std::ffi::CString]) -> Vec<*const libc::c_char> {
    items
        .iter()
        .map(|a| a.as_ptr())
        .chain([std::ptr::null()])
        .collect()
}

/// Enough for the child's few calls and a signal frame.
const COMMAND_STACK: usize = 64 * 1024;

struct CommandChild<'a> {
    cmd: &'a Command<'a>,
    argv: &'a [*const libc::c_char],
    envp: &'a [*const libc::c_char],
}

extern "C" fn run_command(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the CommandChild on spawn_command's frame, which sleeps (vfork)
    // until this child execs or exits.
    let c = unsafe { &*(arg as *const CommandChild<'_>) };
    let cmd = c.cmd;
    let fail = |at: u8, errno: i32| -> ! {
        let mut rec = [0u8; 5];
        rec[0] = at;
        rec[1..].copy_from_slice(&errno.to_ne_bytes());
        // SAFETY: write(2) of a live local to the report pipe.
        unsafe { libc::write(cmd.report, rec.as_ptr().cast(), rec.len()) };
        // SAFETY: _exit(2) runs no atexit handler over the init's (shared) memory.
        unsafe { libc::_exit(127) }
    };
    let errno = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    // SAFETY: setsid takes no arguments.
    if unsafe { libc::setsid() } < 0 {
        fail(CommandFailure::SETSID, errno());
    }
    // SAFETY: TIOCSCTTY on fd 0 with an integer argument (0: do not steal).
    if cmd.tty && unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0 as libc::c_int) } < 0 {
        fail(CommandFailure::TTY, errno());
    }
    reset_signal_dispositions();
    let mask: &libc::sigset_t = cmd.mask.as_ref();
    // SAFETY: sigprocmask reads a live sigset_t; the old mask is not wanted.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, mask, std::ptr::null_mut()) };
    // SAFETY: chdir reads a NUL-terminated path that lives on the init's sleeping frame.
    if unsafe { libc::chdir(cmd.cwd.as_ptr()) } < 0 {
        fail(CommandFailure::CHDIR, errno());
    }
    let mut last = libc::ENOENT;
    for path in cmd.candidates {
        // SAFETY: execve reads NUL-terminated strings and NULL-terminated pointer arrays,
        // all alive on the init's sleeping frame; it returns only on failure.
        unsafe { libc::execve(path.as_ptr(), c.argv.as_ptr(), c.envp.as_ptr()) };
        let e = errno();
        // Like execvp: a permission error is remembered, a missing file is not.
        if e != libc::ENOENT && e != libc::ENOTDIR {
            last = e;
        }
    }
    fail(CommandFailure::EXEC, last)
}

/// Resets every catchable signal to its default action. Ignored signals survive exec, and
/// the runner ignores SIGPIPE ([`super::ignore_sigpipe`]): the agent must start with
/// defaults.
fn reset_signal_dispositions() {
    for sig in 1..libc::SIGRTMIN() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: SIG_DFL installs no handler code; signal(2) with a valid number changes
        // only this process's disposition. Invalid numbers just return SIG_ERR.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
}
