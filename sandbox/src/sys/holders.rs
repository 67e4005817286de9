//! Short-lived helper children that share their parent's memory (`CLONE_VM`, so no page
//! tables are copied on the start's path): the idmapping's user-namespace holder (the
//! runner's) and the agent's namespace holder (also the runner's, made before it forks the
//! init, or ahead of the run by a warm runner), with the raw (errno-free) syscalls they are
//! limited to.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::{ChildStack, cvt};

/// A child in a new, empty user namespace, used only as a holder for an idmapping: the
/// caller writes its maps through `/proc/<pid>/…`, opens `ns/user`, then kills and reaps it
/// ([`UsernsHolder`]'s drop). It shares the caller's memory (`CLONE_VM`, no page tables
/// copied: this sits on every run's start) and runs on a small stack of its own, where it
/// only ever `pause`s.
pub(crate) fn spawn_userns_holder() -> io::Result<UsernsHolder> {
    extern "C" fn hold(parent: *mut libc::c_void) -> libc::c_int {
        die_with_parent(parent as usize as libc::pid_t);
        loop {
            // SAFETY: pause(2) takes no arguments; the parent SIGKILLs this child. It
            // returns only after a caught signal (none is sent to it but SIGKILL).
            unsafe { libc::pause() };
        }
    }
    let mut stack = ChildStack::new(HOLDER_STACK);
    let top = stack.top();
    let flags = libc::CLONE_VM | libc::CLONE_NEWUSER | libc::SIGCHLD;
    // Passed by value in the pointer argument: the child reads no memory of ours for it.
    let me = std::process::id() as usize as *mut libc::c_void;
    // SAFETY: `hold` never returns and only makes syscalls (prctl, getppid and exit raw,
    // then pause), so running it on `stack` inside our address space touches nothing of ours
    // but that stack; the stack is owned by the returned holder and freed only after the child
    // has been killed and reaped (drop).
    let pid = cvt(libc::c_long::from(unsafe {
        libc::clone(hold, top, flags, me)
    }))?;
    Ok(UsernsHolder {
        pid: pid as libc::pid_t,
        _stack: stack,
    })
}

/// First thing in a holder: SIGKILL when `parent` (the caller of clone) ends; and if it has
/// ended already (before this ran), exit now — a holder must never outlive its runner, or
/// it keeps the run's cgroups busy. `getppid` gives 0 when the parent is outside the
/// holder's pid namespace (a holder cloned after an `unshare(CLONE_NEWPID)`; the runner
/// clones both of its holders before its own): that check cannot be made then, and is not
/// needed, since such a holder is in the new pid namespace, which the end of its init
/// empties.
fn die_with_parent(parent: libc::pid_t) {
    let pdeathsig = [
        libc::PR_SET_PDEATHSIG as usize,
        libc::SIGKILL as usize,
        0,
        0,
    ];
    // SAFETY: prctl with integers; it sets this task's parent-death signal only.
    unsafe { raw_syscall(libc::SYS_prctl, pdeathsig) };
    // SAFETY: getppid takes nothing and returns an integer.
    let now = unsafe { raw_syscall(libc::SYS_getppid, [0; 4]) };
    if now != 0 && now != parent as isize {
        // SAFETY: exit(2) ends this task; it touches nothing of the parent's memory.
        unsafe { raw_syscall(libc::SYS_exit, [0; 4]) };
    }
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
    /// The runner's pid (see [`die_with_parent`]).
    parent: libc::pid_t,
}

/// The holder's whole life, on its own stack in the runner's memory: in its new user
/// namespace (made by the clone, with every capability there) it makes the agent's
/// network namespace and brings `lo` up, says how that went, and waits to be killed.
/// Raw syscalls only (see [`raw_syscall`]); it touches nothing but its stack and `arg`.
extern "C" fn hold_agent_ns(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `AgentNsArgs` of spawn_agent_ns_holder, owned by the holder
    // handle, which outlives this child (its drop kills and reaps it first).
    let args = unsafe { &*(arg as *const AgentNsArgs) };
    die_with_parent(args.parent);
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
        // SAFETY: pause(2) takes no arguments; the runner SIGKILLs this child.
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

/// The agent's user namespace, made early by a holder child of the runner so that its
/// network namespace is built on a CPU that is otherwise idle (before the fork, or ahead of
/// the run). The runner writes the holder's maps; the init, which inherits this handle's
/// fds with the fork, joins both namespaces with `setns` on the holder's pidfd
/// ([`Self::join`]) and leaves the holder to the runner ([`Self::disown`]).
#[derive(Debug)]
pub(crate) struct AgentNsHolder {
    /// Killed and reaped first when this is dropped (field order), before `_args`; `None`
    /// in the init's copy (not its child: the runner kills it).
    _holder: Option<UsernsHolder>,
    pidfd: OwnedFd,
    ready: OwnedFd,
    new_net: bool,
    _args: Box<AgentNsArgs>,
}

/// Clones the holder (`CLONE_VM | CLONE_NEWUSER | CLONE_PIDFD`: no page tables copied, a
/// user namespace owned by root of the initial one). `new_net`: it also makes a network
/// namespace in it with `lo` up.
pub(crate) fn spawn_agent_ns_holder(new_net: bool) -> io::Result<AgentNsHolder> {
    let (ready_rd, ready_wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let args = Box::new(AgentNsArgs {
        new_net,
        ready: ready_wr.as_raw_fd(),
        parent: std::process::id() as libc::pid_t,
    });
    let mut stack = ChildStack::new(HOLDER_STACK);
    let top = stack.top();
    let flags = libc::CLONE_VM | libc::CLONE_NEWUSER | libc::CLONE_PIDFD | libc::SIGCHLD;
    let arg = (&raw const *args) as *mut libc::c_void;
    let mut pidfd: libc::c_int = -1;
    // SAFETY: `hold_agent_ns` makes raw syscalls only, on `stack`, reading `args`; both are
    // owned by the returned holder, whose drop kills and reaps the child before freeing
    // them. Without CLONE_FILES the child has its own copy of the fd table (ready_wr).
    // CLONE_PIDFD stores the new pidfd through the `parent_tid` pointer, a live local.
    let pid = cvt(libc::c_long::from(unsafe {
        libc::clone(hold_agent_ns, top, flags, arg, &raw mut pidfd)
    }))?;
    let holder = UsernsHolder {
        pid: pid as libc::pid_t,
        _stack: stack,
    };
    drop(ready_wr);
    // SAFETY: the kernel stored a new pidfd, owned by nobody else, before clone returned.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok(AgentNsHolder {
        _holder: Some(holder),
        pidfd,
        ready: ready_rd,
        new_net,
        _args: args,
    })
}

impl AgentNsHolder {
    /// Ends the holder without waiting for it (it is reaped when this is dropped): once the
    /// init has joined its namespaces it has done its part, and its exit need not hold up
    /// whoever kills it.
    pub(crate) fn kill(&self) {
        if let Some(h) = &self._holder {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(h.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    /// The holder's pid as this `/proc` names it, for writing its maps: the `Pid:` of its
    /// pidfd's fdinfo, which the kernel gives in the pid namespace of the proc instance
    /// read (the one `clone` returned is in the runner's, which `/proc` need not be).
    pub fn host_pid(&self) -> io::Result<u32> {
        let info =
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", self.pidfd.as_raw_fd()))?;
        info.lines()
            .find_map(|l| l.strip_prefix("Pid:"))
            .and_then(|v| v.trim().parse().ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| io::Error::other("the holder's pidfd shows no pid"))
    }

    /// In the init, after the fork: the holder is the runner's child, running on the
    /// runner's memory; this copy must neither signal nor reap it (its pid means another
    /// process in the init's pid namespace), only use its fds.
    pub fn disown(&mut self) {
        std::mem::forget(self._holder.take());
    }

    /// Moves this handle's fds to numbers at or above `floor` (a warm runner places the
    /// spec's fds below it later, with dup2).
    pub fn raise_fds(&mut self, floor: RawFd) -> io::Result<()> {
        self.pidfd = super::dup_above(std::os::fd::AsFd::as_fd(&self.pidfd), floor)?;
        self.ready = super::dup_above(std::os::fd::AsFd::as_fd(&self.ready), floor)?;
        Ok(())
    }

    /// Whether the holder makes a network namespace (`--net none`).
    pub fn new_net(&self) -> bool {
        self.new_net
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
pub(crate) struct UsernsHolder {
    pub pid: libc::pid_t,
    _stack: ChildStack,
}

impl Drop for UsernsHolder {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        // Must not return before the child is gone: it runs on `_stack`.
        while let Err(nix::errno::Errno::EINTR) = nix::sys::wait::waitpid(pid, None) {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A holder cloned after an `unshare(CLONE_NEWPID)` gets 0 from `getppid`: it must
    /// still hold its namespace until it is dropped, not take that 0 for its parent's death
    /// and exit at once.
    /// Kernel tier: a pid namespace needs root.
    #[test]
    fn a_holder_in_a_new_pid_namespace_waits_to_be_killed() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: a new pid namespace needs root");
            assert!(
                std::env::var_os("AGENTKEYS_TEST_STRICT").is_none(),
                "a skip is a failure in strict mode"
            );
            return;
        }
        // In a child of the test: the unshare decides where every later child of the
        // process goes, which must not reach the harness or other tests.
        // SAFETY: the child makes syscalls and reads /proc only, then `_exit`s; it never
        // returns into the harness.
        let forked = unsafe { libc::fork() };
        assert!(forked >= 0, "fork: {}", io::Error::last_os_error());
        if forked == 0 {
            let code = holder_state_after_start().unwrap_or(3);
            // SAFETY: ends the forked child without running the harness's exit handlers.
            unsafe { libc::_exit(code) };
        }
        let child = nix::unistd::Pid::from_raw(forked);
        let status = nix::sys::wait::waitpid(child, None).expect("waitpid");
        assert_eq!(
            status,
            nix::sys::wait::WaitStatus::Exited(child, 0),
            "exit 1: the holder exited on its own; 2: it never paused; 3: no holder"
        );
    }

    /// In a new pid namespace, spawns a holder and waits until it has run its start: 0 if
    /// it then pauses, 1 if it exited, 2 if neither within 10 s.
    fn holder_state_after_start() -> Option<i32> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID).ok()?;
        let holder = spawn_userns_holder().ok()?;
        for _ in 0..10_000 {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", holder.pid)).ok()?;
            match stat.rsplit_once(") ")?.1.chars().next()? {
                'S' => return Some(0),
                'Z' => return Some(1),
                _ => std::thread::sleep(std::time::Duration::from_millis(1)),
            }
        }
        Some(2)
    }
}
