//! The sandbox's only `unsafe`: raw calls that have no safe wrapper in `nix` or `libc`'s
//! safe surface: the kernel-feature probes ([`super::probe`]), the new mount API
//! (`open_tree`, `mount_setattr`, `move_mount`), `fork`/`clone` in the single-threaded
//! runner, `close_range`, and the daemon's fd plumbing for spawning the runner. Submodules:
//! the runner's memory-sharing helper children (`holders`), the warm start's socket frames
//! (`frames`), the command's vfork-style start (`command`) and the daemon's `posix_spawn`
//! of the runner (`spawn`).
//!
//! Every function returns `io::Result` through [`cvt`], so `-1` never leaks past the call.
#![allow(unsafe_code)]

mod command;
mod frames;
mod holders;
mod spawn;

pub(crate) use command::{Command, CommandFailure, spawn_command};
pub(crate) use frames::{dup_above, install_fd, is_socket, recv_frame, send_frame};
pub(crate) use holders::{AgentNsHolder, UsernsHolder, spawn_agent_ns_holder, spawn_userns_holder};
pub(crate) use spawn::{Spawned, spawn_with_fds};

use std::ffi::CStr;
use std::io;

/// A stack of its own for a `CLONE_VM` child (the helper holders, the command's vfork).
/// Whoever clones on it keeps it until the child has exec'd or been reaped.
#[derive(Debug)]
pub(crate) struct ChildStack(Box<[u8]>);

impl ChildStack {
    pub(crate) fn new(size: usize) -> ChildStack {
        ChildStack(vec![0u8; size].into_boxed_slice())
    }

    /// The top, 16-byte aligned, for `clone`'s stack argument: stacks grow down on every
    /// architecture the runner builds for.
    pub(crate) fn top(&mut self) -> *mut libc::c_void {
        let end = self.0.as_mut_ptr() as usize + self.0.len();
        (end & !15) as *mut libc::c_void
    }
}
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// `LANDLOCK_CREATE_RULESET_VERSION` (linux/landlock.h): ask for the ABI version instead of
/// creating a ruleset. Not in `libc` 0.2.
const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1 << 0;

/// Turns a libc-style return value into `io::Result`, so `-1` never leaks past a call.
fn cvt(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)`: the highest
/// Landlock ABI this kernel supports. `ENOSYS`: not built in; `EOPNOTSUPP`: built in but
/// not enabled at boot (missing from `lsm=`).
pub(super) fn landlock_abi_version() -> io::Result<u32> {
    // SAFETY: with the VERSION flag the kernel requires attr == NULL and size == 0 and
    // reads no memory; it returns the ABI version or -1/errno, which cvt handles.
    let ret = cvt(unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    })?;
    u32::try_from(ret).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

/// `seccomp(SECCOMP_GET_ACTION_AVAIL, 0, &action)`: does the kernel's seccomp *filter*
/// mode support `action`? `EINVAL` when filter mode is absent (no `CONFIG_SECCOMP_FILTER`)
/// or the action unknown; `EOPNOTSUPP` when the action is known but unsupported.
pub(super) fn seccomp_action_available(action: u32) -> io::Result<()> {
    let action: u32 = action;
    // SAFETY: SECCOMP_GET_ACTION_AVAIL reads exactly one u32 through the pointer, which
    // points at a live local for the duration of the call; flags must be 0. The call
    // changes no state.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_ACTION_AVAIL,
            0 as libc::c_uint,
            &raw const action,
        )
    })
    .map(drop)
}

/// `seccomp(SECCOMP_SET_MODE_FILTER, 0, &prog)` for the calling thread. The caller has set
/// `PR_SET_NO_NEW_PRIVS` (without it, and without CAP_SYS_ADMIN, the kernel says EACCES).
pub(super) fn seccomp_set_filter(program: &[super::policy::bpf::Insn]) -> io::Result<()> {
    let mut filter: Vec<libc::sock_filter> = program
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let len = u16::try_from(filter.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "BPF program too long"))?;
    let prog = libc::sock_fprog {
        len,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: `prog` points at `len` initialised instructions in `filter`, both alive for
    // the whole call; the kernel copies the program and keeps no pointer into our memory.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0 as libc::c_uint,
            &raw const prog,
        )
    })
    .map(drop)
}

/// Which step of the user-namespace probe failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UsernsStep {
    /// `unshare(CLONE_NEWUSER)`.
    Unshare,
    /// Writing `deny` to `/proc/self/setgroups`.
    Setgroups,
    /// Writing the one-line map to `/proc/self/uid_map`.
    UidMap,
}

impl UsernsStep {
    fn code(self) -> u8 {
        match self {
            UsernsStep::Unshare => 1,
            UsernsStep::Setgroups => 2,
            UsernsStep::UidMap => 3,
        }
    }

    fn from_code(code: u8) -> Option<UsernsStep> {
        match code {
            1 => Some(UsernsStep::Unshare),
            2 => Some(UsernsStep::Setgroups),
            3 => Some(UsernsStep::UidMap),
            _ => None,
        }
    }
}

/// Creates a user namespace for real, in a forked child that then exits: `unshare(
/// CLONE_NEWUSER)`, `deny` to `setgroups`, and a map of uid 0 inside to the caller's uid
/// outside — what an unprivileged sandbox needs first. The caller is never moved into
/// anything.
///
/// `Ok(Ok(()))`: it worked; `Ok(Err((step, errno)))`: the kernel refused at `step`;
/// `Err`: the probe itself could not run (fork, pipe, wait).
pub(super) fn probe_user_namespace() -> io::Result<Result<(), (UsernsStep, io::Error)>> {
    // Everything the child touches is prepared here: after fork in a process that may have
    // other threads, the child may only make raw syscalls (no allocation, no locks).
    let uid = nix::unistd::getuid().as_raw();
    let map = format!("0 {uid} 1\n");
    let (rd, wr) = nix::unistd::pipe()?;
    // SAFETY: fork(2) itself has no memory-safety preconditions. The child runs only
    // `userns_child`, which makes raw syscalls on data prepared above and ends with
    // _exit; it never returns into Rust code that could take a lock held by another
    // thread at the time of the fork.
    let pid = cvt(libc::c_long::from(unsafe { libc::fork() }))?;
    if pid == 0 {
        drop(rd);
        userns_child(&wr, map.as_bytes());
    }
    drop(wr);
    let pid = nix::unistd::Pid::from_raw(pid as libc::pid_t);
    let mut report = [0u8; 5];
    let got = read_full(&rd, &mut report);
    // Reap the child whatever it wrote, so no zombie is left behind.
    let status = loop {
        match nix::sys::wait::waitpid(pid, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other,
        }
    };
    status.map_err(io::Error::from)?;
    let got = got?;
    if got != report.len() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the user-namespace probe child exited without a report",
        ));
    }
    let [step, e0, e1, e2, e3] = report;
    if step == 0 {
        return Ok(Ok(()));
    }
    let step =
        UsernsStep::from_code(step).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidData))?;
    let errno = i32::from_ne_bytes([e0, e1, e2, e3]);
    Ok(Err((step, io::Error::from_raw_os_error(errno))))
}

/// The forked child of [`probe_user_namespace`]: raw syscalls only, then `_exit`. Writes
/// five bytes to `wr`: the failed step (0 = none) and the errno.
fn userns_child(wr: &OwnedFd, map: &[u8]) -> ! {
    let fail = |step: UsernsStep| -> ! {
        let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
        report_and_exit(wr, step.code(), errno)
    };
    // SAFETY: unshare(2) takes one integer; it affects only this (child) process.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER) } == -1 {
        fail(UsernsStep::Unshare);
    }
    if write_file(c"/proc/self/setgroups", b"deny").is_err() {
        fail(UsernsStep::Setgroups);
    }
    if write_file(c"/proc/self/uid_map", map).is_err() {
        fail(UsernsStep::UidMap);
    }
    report_and_exit(wr, 0, 0)
}

/// Writes the child's report and leaves without running any Rust exit code.
fn report_and_exit(wr: &OwnedFd, step: u8, errno: i32) -> ! {
    let e = errno.to_ne_bytes();
    let report = [step, e[0], e[1], e[2], e[3]];
    // SAFETY: write(2) reads `report.len()` bytes from a live local array; the fd is the
    // pipe's write end, owned by `wr` for the whole call.
    let _ = unsafe { libc::write(wr.as_raw_fd(), report.as_ptr().cast(), report.len()) };
    // SAFETY: _exit(2) ends the process at once; it is async-signal-safe and runs no
    // atexit handlers or destructors that could touch state copied from other threads.
    unsafe { libc::_exit(0) }
}

/// `open(path, O_WRONLY|O_CLOEXEC)`, one `write` of `bytes`, `close` — with raw calls,
/// for the forked child.
fn write_file(path: &std::ffi::CStr, bytes: &[u8]) -> io::Result<()> {
    // SAFETY: `path` is a NUL-terminated string that outlives the call; open(2) reads it
    // and returns a new fd or -1.
    let fd = cvt(libc::c_long::from(unsafe {
        libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC)
    }))? as libc::c_int;
    // SAFETY: write(2) reads `bytes.len()` bytes from a live slice into the fd opened above.
    let written =
        cvt(unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) } as libc::c_long);
    // SAFETY: `fd` was opened above, is owned by nothing else, and is closed exactly once.
    unsafe { libc::close(fd) };
    match written? {
        n if n as usize == bytes.len() => Ok(()),
        _ => Err(io::Error::from(io::ErrorKind::WriteZero)),
    }
}

/// Reads until `buf` is full or end of file; returns how many bytes came.
fn read_full(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while let Some(rest) = buf.get_mut(got..).filter(|r| !r.is_empty()) {
        match nix::unistd::read(fd, rest) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(got)
}

/// `open_tree(AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC [| AT_RECURSIVE])`: a
/// detached copy of the mount at `path`, to be changed with [`mount_setattr`] and attached
/// with [`move_mount`] — no path-based remount dance, and sources stay reachable after
/// their path is shadowed.
pub(super) fn open_tree_clone(path: &CStr, recursive: bool) -> io::Result<OwnedFd> {
    let mut flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: `path` is NUL-terminated and outlives the call; open_tree reads only it and
    // returns a new fd or -1.
    let fd =
        cvt(unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) })?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `mount_setattr(fd, "", AT_EMPTY_PATH [| AT_RECURSIVE], {set, clr, propagation, userns})`.
pub(super) fn mount_setattr(
    fd: BorrowedFd<'_>,
    set: u64,
    clr: u64,
    userns: Option<BorrowedFd<'_>>,
    recursive: bool,
) -> io::Result<()> {
    let attr = libc::mount_attr {
        attr_set: set,
        attr_clr: clr,
        propagation: 0,
        userns_fd: userns.map_or(0, |u| u.as_raw_fd() as u64),
    };
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: the kernel reads `size_of::<mount_attr>()` bytes from a live local and the
    // empty NUL-terminated path; `fd` is borrowed for the whole call.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &raw const attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    })
    .map(drop)
}

/// `move_mount(fd, "", AT_FDCWD, to, MOVE_MOUNT_F_EMPTY_PATH)`: attaches a detached tree.
pub(super) fn move_mount(fd: BorrowedFd<'_>, to: &CStr) -> io::Result<()> {
    // SAFETY: both paths are NUL-terminated and outlive the call; `fd` is borrowed for it.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    })
    .map(drop)
}

/// Which side of a fork this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forked {
    Parent(libc::pid_t),
    Child,
}

/// `fork()` in the runner, which is single-threaded (a fresh exec, no runtime threads), so
/// the child may run ordinary Rust code.
pub(crate) fn fork_single_threaded() -> io::Result<Forked> {
    // SAFETY: the runner never starts a thread (no tokio, no std::thread), so no lock can be
    // held by another thread at the time of the fork; the child continues with a full copy.
    let pid = cvt(libc::c_long::from(unsafe { libc::fork() }))?;
    Ok(if pid == 0 {
        Forked::Child
    } else {
        Forked::Parent(pid as libc::pid_t)
    })
}

/// `struct clone_args` of `clone3(2)` (the kernel's layout, version 2: with `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `CLONE_INTO_CGROUP` (Linux 5.7; not in the libc crate for glibc targets).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Like [`fork_single_threaded`], but the child is born in the cgroup v2 directory `cgroup`
/// (`clone3` with `CLONE_INTO_CGROUP`). Moving a process in later (a write to
/// `cgroup.procs`) takes the kernel's threadgroup lock for writing, which waits for an RCU
/// grace period: 1–16 ms here. ENOSYS where clone3 is missing or filtered.
pub(crate) fn fork_into_cgroup(cgroup: BorrowedFd<'_>) -> io::Result<Forked> {
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: `args` is a valid clone_args of the size passed, alive for the call. Without
    // CLONE_VM or a new stack this is a fork: the child gets a copy of the address space and
    // continues here with return value 0. The runner never starts a thread (see
    // fork_single_threaded), so no lock is held by another thread. Unlike glibc's fork, this
    // leaves glibc's cached thread id in the child's thread descriptor at the parent's value;
    // the child never uses it for anything that reaches another process: it is pid 1 of a new
    // pid namespace (where that id names nobody), it starts no thread, and the processes it
    // forks itself go through glibc's fork, which sets their own.
    let pid = cvt(unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    })?;
    Ok(if pid == 0 {
        Forked::Child
    } else {
        Forked::Parent(pid as libc::pid_t)
    })
}

/// `close_range(first, last, 0)`: closes every fd in the range.
pub(crate) fn close_range(first: RawFd, last: RawFd) -> io::Result<()> {
    // SAFETY: close_range takes integers only. The runner owns every fd it closes this way:
    // it holds no OwnedFd in the range that it uses afterwards.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            last as libc::c_uint,
            0u32,
        )
    })
    .map(drop)
}

/// SIGPIPE ignored, as Rust's start-up would do, for the binaries that start without it
/// (`agentkeys-runner`, `agentkeysctl`): a write to a closed pipe is an EPIPE its caller
/// handles, not the process's end.
pub fn ignore_sigpipe() {
    // SAFETY: SIG_IGN installs no handler code; signal(2) with a valid number changes only
    // this process's disposition.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// Borrows an fd the runner was started with (report pipe, secret memfds) for the whole
/// process lifetime. Whether it is open and what it is gets checked by its users.
pub(crate) fn borrow_inherited_fd(raw: RawFd) -> BorrowedFd<'static> {
    // SAFETY: the fd number is fixed by the runner's contract (spec.rs) and nothing in the
    // runner closes it except close_range in step 4, after which it is never used. If it
    // is not open, calls on it fail with EBADF, which every user handles.
    unsafe { BorrowedFd::borrow_raw(raw) }
}

/// Takes ownership of an fd the runner was started with, after checking it is open.
pub(crate) fn take_inherited_fd(raw: RawFd) -> io::Result<OwnedFd> {
    nix::fcntl::fcntl(borrow_inherited_fd(raw), nix::fcntl::FcntlArg::F_GETFD)?;
    // SAFETY: F_GETFD just showed the fd is open; the runner has no other owner of it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cvt_maps_minus_one_to_errno() {
        assert_eq!(cvt(3).unwrap(), 3);
        assert!(cvt(-1).is_err());
    }

    #[test]
    fn an_unknown_seccomp_action_is_refused() {
        // 0x0001_0000 lies between KILL_THREAD and TRAP: no SECCOMP_RET_* action.
        let err = seccomp_action_available(0x0001_0000).unwrap_err();
        assert!(
            matches!(
                err.raw_os_error(),
                Some(libc::EOPNOTSUPP) | Some(libc::EINVAL)
            ),
            "{err}"
        );
    }

    #[test]
    fn userns_steps_round_trip() {
        for s in [
            UsernsStep::Unshare,
            UsernsStep::Setgroups,
            UsernsStep::UidMap,
        ] {
            assert_eq!(UsernsStep::from_code(s.code()), Some(s));
        }
        assert_eq!(UsernsStep::from_code(0), None);
    }
}
