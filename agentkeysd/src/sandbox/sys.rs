//! The sandbox's only `unsafe`: raw calls that have no safe wrapper in `nix` or `libc`'s
//! safe surface: the kernel-feature probes ([`super::probe`]), the new mount API
//! (`open_tree`, `mount_setattr`, `move_mount`), `fork`/`clone` in the single-threaded
//! runner, `close_range`, the loopback and terminal ioctls, signal dispositions, and the
//! daemon's fd plumbing for spawning the runner.
//!
//! Every function returns `io::Result` through [`cvt`], so `-1` never leaks past the call.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
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

/// A child in a new, empty user namespace, used only as a holder for an idmapping: the
/// caller writes its maps through `/proc/<pid>/…`, opens `ns/user`, then kills and reaps it
/// ([`UsernsHolder`]'s drop). It shares the caller's memory (`CLONE_VM`, no page tables
/// copied: this sits on every run's start) and runs on a small stack of its own, where it
/// only ever `pause`s.
pub(super) fn spawn_userns_holder() -> io::Result<UsernsHolder> {
    extern "C" fn hold(_: *mut libc::c_void) -> libc::c_int {
        loop {
            // SAFETY: pause(2) takes no arguments; the parent SIGKILLs this child. It
            // returns only after a caught signal (none is sent to it but SIGKILL).
            unsafe { libc::pause() };
        }
    }
    let mut stack = vec![0u8; HOLDER_STACK].into_boxed_slice();
    // Stacks grow down on every architecture the runner builds for; keep 16-byte alignment.
    let top = (stack.as_mut_ptr() as usize + HOLDER_STACK) & !15;
    let flags = libc::CLONE_VM | libc::CLONE_NEWUSER | libc::SIGCHLD;
    // SAFETY: `hold` never returns and only calls pause(2), so running it on `stack` inside
    // our address space touches nothing of ours but that stack; the stack is owned by the
    // returned holder and freed only after the child has been killed and reaped (drop).
    let pid = cvt(libc::c_long::from(unsafe {
        libc::clone(hold, top as *mut libc::c_void, flags, std::ptr::null_mut())
    }))?;
    Ok(UsernsHolder {
        pid: pid as libc::pid_t,
        _stack: stack,
    })
}

/// A syscall that leaves `errno` alone. A `CLONE_VM` child shares the parent's memory and
/// thread pointer, so libc's wrappers would write their `errno` into the parent's, which
/// may be reading its own at that moment. Returns the kernel's value (`-errno` on error).
///
/// # Safety
/// As for the syscall `nr` with these arguments.
#[cfg(target_arch = "x86_64")]
unsafe fn raw_syscall(nr: libc::c_long, args: [usize; 4]) -> isize {
    let ret: isize;
    // SAFETY: the x86-64 syscall convention: number in rax, arguments in rdi, rsi, rdx,
    // r10; the kernel clobbers rcx and r11 and returns in rax. What the call does is the
    // caller's contract.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") args[0],
            in("rsi") args[1],
            in("rdx") args[2],
            in("r10") args[3],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

#[cfg(target_arch = "aarch64")]
unsafe fn raw_syscall(nr: libc::c_long, args: [usize; 4]) -> isize {
    let ret: isize;
    // SAFETY: the arm64 syscall convention: number in x8, arguments in x0-x3, result in
    // x0. What the call does is the caller's contract.
    unsafe {
        std::arch::asm!(
            "svc 0",
            in("x8") nr,
            inlateout("x0") args[0] as isize => ret,
            in("x1") args[1],
            in("x2") args[2],
            in("x3") args[3],
            options(nostack),
        );
    }
    ret
}

/// What the agent-namespace holder is told (read-only while it runs).
#[derive(Debug)]
struct AgentNsArgs {
    /// Make a network namespace and bring its `lo` up (`--net none`).
    new_net: bool,
    /// Where it writes its result: 0, or the negative errno of the call that failed.
    ready: RawFd,
}

/// The holder's whole life, on its own stack in the init's memory: in its new user
/// namespace (made by the clone, with every capability there) it makes the agent's
/// network namespace and brings `lo` up, says how that went, and waits to be killed.
/// Raw syscalls only (see [`raw_syscall`]); it touches nothing but its stack and `arg`.
extern "C" fn hold_agent_ns(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `AgentNsArgs` of spawn_agent_ns_holder, owned by the holder
    // handle, which outlives this child (its drop kills and reaps it first).
    let args = unsafe { &*(arg as *const AgentNsArgs) };
    let mut result: i32 = 0;
    if args.new_net {
        result = loopback_in_new_netns();
    }
    // SAFETY: write(2) of 4 bytes from a live local to a pipe fd this child owns a copy of.
    unsafe {
        raw_syscall(
            libc::SYS_write,
            [args.ready as usize, (&raw const result) as usize, 4, 0],
        )
    };
    loop {
        // SAFETY: pause(2) takes no arguments; the init SIGKILLs this child.
        unsafe { raw_syscall(libc::SYS_pause, [0; 4]) };
    }
}

/// unshare(CLONE_NEWNET), then `lo` up through SIOCGIFFLAGS/SIOCSIFFLAGS; 0 or -errno.
fn loopback_in_new_netns() -> i32 {
    // SAFETY: unshare takes a flag word and changes only this task's namespaces.
    let r = unsafe { raw_syscall(libc::SYS_unshare, [libc::CLONE_NEWNET as usize, 0, 0, 0]) };
    if r < 0 {
        return r as i32;
    }
    let (domain, kind) = (
        libc::AF_INET as usize,
        (libc::SOCK_DGRAM | libc::SOCK_CLOEXEC) as usize,
    );
    // SAFETY: socket takes three integers and returns a new fd of this task's table.
    let sock = unsafe { raw_syscall(libc::SYS_socket, [domain, kind, 0, 0]) };
    if sock < 0 {
        return sock as i32;
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    let (get, set) = (libc::SIOCGIFFLAGS as usize, libc::SIOCSIFFLAGS as usize);
    // SAFETY: SIOCGIFFLAGS reads the name and writes the flags of a live, properly sized
    // ifreq on this stack.
    let mut r = unsafe {
        raw_syscall(
            libc::SYS_ioctl,
            [sock as usize, get, (&raw mut req) as usize, 0],
        )
    };
    if r >= 0 {
        // SAFETY: after SIOCGIFFLAGS the union holds ifru_flags.
        let flags = unsafe { req.ifr_ifru.ifru_flags };
        req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
        // SAFETY: SIOCSIFFLAGS reads the live ifreq holding the name and the new flags.
        r = unsafe {
            raw_syscall(
                libc::SYS_ioctl,
                [sock as usize, set, (&raw const req) as usize, 0],
            )
        };
    }
    // SAFETY: closes the socket this function opened.
    unsafe { raw_syscall(libc::SYS_close, [sock as usize, 0, 0, 0]) };
    if r < 0 { r as i32 } else { 0 }
}

/// The agent's user namespace, made early by a holder child so that its network
/// namespace is built on the other CPU while the init builds the file system. The init
/// writes the holder's maps right away (through the host's `/proc`, still there), and
/// later joins both namespaces with `setns` on the holder's pidfd ([`Self::join`]).
#[derive(Debug)]
pub(super) struct AgentNsHolder {
    /// Killed and reaped first when this is dropped (field order), before `_args`.
    _holder: UsernsHolder,
    pidfd: OwnedFd,
    ready: OwnedFd,
    new_net: bool,
    _args: Box<AgentNsArgs>,
}

/// Clones the holder (`CLONE_VM | CLONE_NEWUSER | CLONE_PIDFD`: no page tables copied, a
/// user namespace owned by root of the initial one). `new_net`: it also makes a network
/// namespace in it with `lo` up.
pub(super) fn spawn_agent_ns_holder(new_net: bool) -> io::Result<AgentNsHolder> {
    let (ready_rd, ready_wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let args = Box::new(AgentNsArgs {
        new_net,
        ready: ready_wr.as_raw_fd(),
    });
    let mut stack = vec![0u8; HOLDER_STACK].into_boxed_slice();
    let top = (stack.as_mut_ptr() as usize + HOLDER_STACK) & !15;
    let flags = libc::CLONE_VM | libc::CLONE_NEWUSER | libc::CLONE_PIDFD | libc::SIGCHLD;
    let arg = (&raw const *args) as *mut libc::c_void;
    let mut pidfd: libc::c_int = -1;
    // SAFETY: `hold_agent_ns` makes raw syscalls only, on `stack`, reading `args`; both are
    // owned by the returned holder, whose drop kills and reaps the child before freeing
    // them. Without CLONE_FILES the child has its own copy of the fd table (ready_wr).
    // CLONE_PIDFD stores the new pidfd through the `parent_tid` pointer, a live local.
    let pid = cvt(libc::c_long::from(unsafe {
        libc::clone(
            hold_agent_ns,
            top as *mut libc::c_void,
            flags,
            arg,
            &raw mut pidfd,
        )
    }))?;
    let holder = UsernsHolder {
        pid: pid as libc::pid_t,
        _stack: stack,
    };
    drop(ready_wr);
    // SAFETY: the kernel stored a new pidfd, owned by nobody else, before clone returned.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok(AgentNsHolder {
        _holder: holder,
        pidfd,
        ready: ready_rd,
        new_net,
        _args: args,
    })
}

impl AgentNsHolder {
    /// The holder's pid as the host's `/proc` names it (the init's own pid namespace
    /// numbers it differently): the `Pid:` of its pidfd's fdinfo, which the kernel gives
    /// in the pid namespace of the proc instance read.
    pub fn host_pid(&self) -> io::Result<u32> {
        let info =
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", self.pidfd.as_raw_fd()))?;
        info.lines()
            .find_map(|l| l.strip_prefix("Pid:"))
            .and_then(|v| v.trim().parse().ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| io::Error::other("the holder's pidfd shows no pid"))
    }

    /// The fds that must stay open until [`Self::join`].
    pub fn fds(&self) -> [RawFd; 2] {
        [self.pidfd.as_raw_fd(), self.ready.as_raw_fd()]
    }

    /// Waits for the holder's result, then `setns` into its user namespace (and network
    /// namespace, if it made one) in one call; the holder is killed and reaped after.
    pub fn join(self) -> io::Result<()> {
        let mut result = [0u8; 4];
        let n = nix::unistd::read(&self.ready, &mut result)?;
        if n != 4 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the namespace holder ended without a word",
            ));
        }
        let code = i32::from_ne_bytes(result);
        if code < 0 {
            return Err(io::Error::from_raw_os_error(-code));
        }
        let mut flags = nix::sched::CloneFlags::CLONE_NEWUSER;
        if self.new_net {
            flags |= nix::sched::CloneFlags::CLONE_NEWNET;
        }
        nix::sched::setns(&self.pidfd, flags)?;
        Ok(())
    }
}

/// Enough for `pause` and a signal frame.
const HOLDER_STACK: usize = 16 * 1024;

/// The holder child of [`spawn_userns_holder`]; dropping it kills and reaps the child
/// before its stack is freed.
#[derive(Debug)]
pub(super) struct UsernsHolder {
    pub pid: libc::pid_t,
    _stack: Box<[u8]>,
}

impl Drop for UsernsHolder {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        // Must not return before the child is gone: it runs on `_stack`.
        while let Err(nix::errno::Errno::EINTR) = nix::sys::wait::waitpid(pid, None) {}
    }
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

/// Whether `fd` is a socket (the runner's warm start) rather than a pipe or a file.
pub(crate) fn is_socket(fd: BorrowedFd<'_>) -> bool {
    nix::sys::stat::fstat(fd).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFSOCK)
}

/// Sends one warm-start frame (see `spec`): kind, length, body, with `fds` attached.
pub(crate) fn send_frame(
    sock: BorrowedFd<'_>,
    kind: u8,
    body: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let len = u32::try_from(body.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    let mut head = [0u8; 5];
    head[0] = kind;
    head[1..].copy_from_slice(&len.to_le_bytes());
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let cmsgs: Vec<ControlMessage<'_>> = if raw.is_empty() {
        Vec::new()
    } else {
        vec![ControlMessage::ScmRights(&raw)]
    };
    let iov = [std::io::IoSlice::new(&head)];
    let sent = sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsgs, MsgFlags::MSG_NOSIGNAL, None)?;
    if sent != head.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short frame header",
        ));
    }
    let mut f = std::mem::ManuallyDrop::new(
        // SAFETY: a File view of the borrowed socket, never dropped (ManuallyDrop), so the
        // fd stays owned by the caller.
        unsafe { std::fs::File::from_raw_fd(sock.as_raw_fd()) },
    );
    std::io::Write::write_all(&mut *f, body)
}

/// One received frame: its kind, body and attached fds. `Ok(None)` at EOF before a frame.
pub(crate) type Frame = (u8, Vec<u8>, Vec<OwnedFd>);

/// Receives one warm-start frame of at most `max_body` bytes and
/// `super::spec::MAX_FRAME_FDS` fds (close-on-exec).
pub(crate) fn recv_frame(sock: BorrowedFd<'_>, max_body: usize) -> io::Result<Option<Frame>> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut head = [0u8; 5];
    let mut cmsg = nix::cmsg_space!([RawFd; super::spec::MAX_FRAME_FDS]);
    let (n, fds, truncated) = {
        let mut iov = [std::io::IoSliceMut::new(&mut head)];
        let msg = recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_WAITALL,
        )?;
        let mut fds = Vec::new();
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                for fd in raw {
                    // SAFETY: the kernel installed these fds in our table for this message;
                    // nothing else owns them.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        (msg.bytes, fds, msg.flags.contains(MsgFlags::MSG_CTRUNC))
    };
    if n == 0 {
        return Ok(None);
    }
    if n != head.len() || truncated {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a malformed frame (short header or too many fds)",
        ));
    }
    let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > max_body {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes (at most {max_body})"),
        ));
    }
    let mut body = vec![0u8; len];
    let mut f = std::mem::ManuallyDrop::new(
        // SAFETY: a File view of the borrowed socket, never dropped (ManuallyDrop), so the
        // fd stays owned by the caller.
        unsafe { std::fs::File::from_raw_fd(sock.as_raw_fd()) },
    );
    std::io::Read::read_exact(&mut *f, &mut body)?;
    Ok(Some((head[0], body, fds)))
}

/// A close-on-exec duplicate of `fd` numbered `floor` or higher.
pub(crate) fn dup_above(fd: BorrowedFd<'_>, floor: RawFd) -> io::Result<OwnedFd> {
    let raw = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(floor))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// `dup2(fd, target)` then closes `fd` (unless it already is `target`): puts a received fd
/// at the number the runner's contract gives it (stdio, secrets).
pub(crate) fn install_fd(fd: OwnedFd, target: RawFd) -> io::Result<()> {
    if fd.as_raw_fd() == target {
        std::mem::forget(fd);
        return Ok(());
    }
    // SAFETY: dup2 takes two integers; `fd` is open (owned here) and `target` is a number
    // the runner's contract reserves for this fd, so whatever it held is replaced on purpose.
    cvt(libc::c_long::from(unsafe {
        libc::dup2(fd.as_raw_fd(), target)
    }))?;
    Ok(())
}

/// What the command's child needs, all prepared before it exists: it shares the init's
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
    pub fn describe(&self, spec: &super::spec::Spec, name: &[u8]) -> String {
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
    let argv: Vec<*const libc::c_char> = cmd
        .argv
        .iter()
        .map(|a| a.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let envp: Vec<*const libc::c_char> = cmd
        .env
        .iter()
        .map(|a| a.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let child = CommandChild {
        cmd,
        argv: &argv,
        envp: &envp,
    };
    let mut stack = vec![0u8; COMMAND_STACK].into_boxed_slice();
    let top = (stack.as_mut_ptr() as usize + COMMAND_STACK) & !15;
    let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD;
    // SAFETY: with CLONE_VFORK this thread sleeps until the child execs or exits, so the
    // child is the only one running in this memory; `run_command` reads `child` (alive on
    // this frame throughout) and makes only async-signal-safe calls without allocating,
    // on `stack`, which outlives it. Without CLONE_FILES/CLONE_SIGHAND the child's fd
    // table and signal dispositions are its own copies.
    let pid = cvt(libc::c_long::from(unsafe {
        libc::clone(
            run_command,
            top as *mut libc::c_void,
            flags,
            (&raw const child) as *mut libc::c_void,
        )
    }))?;
    drop(stack);
    Ok(pid as libc::pid_t)
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
/// Rust's runtime ignores SIGPIPE in the runner: the agent must start with defaults.
pub(crate) fn reset_signal_dispositions() {
    for sig in 1..libc::SIGRTMIN() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: SIG_DFL installs no handler code; signal(2) with a valid number changes
        // only this process's disposition. Invalid numbers just return SIG_ERR.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
}

/// In the forked child: `dup2(raw[i], 3 + i)`; dup2 clears close-on-exec on the target.
/// Then marks every higher fd close-on-exec: the daemon may hold another run's fds
/// (received over D-Bus) without that flag, and none of them may reach this runner —
/// a runner started ahead of its run lives long, and would keep that run's pipes open.
fn dup_to_targets(raw: &[RawFd]) -> io::Result<()> {
    for (i, fd) in raw.iter().enumerate() {
        // SAFETY: dup2 takes two integers; `fd` is open (see spawn_with_fds) and the target
        // number is below every source, so no source is overwritten before it is used.
        cvt(libc::c_long::from(unsafe {
            libc::dup2(*fd, 3 + i as RawFd)
        }))?;
    }
    let first = 3 + raw.len() as libc::c_uint;
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on fds of this (child)
    // process; it is async-signal-safe and allocates nothing.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    })
    .map(drop)
}

/// Spawns `cmd` with `fds[i]` at fd `3 + i` in the child (the runner's spec pipe, report
/// pipe and secret memfds). Each source is first duplicated above every target number,
/// so a source can never be overwritten by an earlier `dup2`.
pub(crate) fn spawn_with_fds(
    cmd: &mut std::process::Command,
    fds: &[BorrowedFd<'_>],
) -> io::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    let floor = 3 + fds.len() as RawFd;
    let high: Vec<OwnedFd> = fds
        .iter()
        .map(|fd| dup_above(*fd, floor))
        .collect::<Result<_, _>>()?;
    let raw: Vec<RawFd> = high.iter().map(AsRawFd::as_raw_fd).collect();
    // SAFETY: the closure runs between fork and exec in the child of a possibly
    // multi-threaded daemon, so it only calls `dup_to_targets`, which makes dup2(2) calls
    // (async-signal-safe) on fds kept open by `high` until spawn returns; no allocation.
    unsafe { cmd.pre_exec(move || dup_to_targets(&raw)) };
    let child = cmd.spawn();
    drop(high);
    child
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
