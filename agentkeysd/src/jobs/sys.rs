//! The run manager's only `unsafe`: pidfds for the sandbox's init, so a forwarded signal
//! can never reach a recycled pid (`nix` 0.31 has no wrapper for these).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `pidfd_open(pid, 0)`: a descriptor that refers to this process and no other.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags by value and reads no memory; it returns a
    // new descriptor or -1/errno.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0 as libc::c_uint) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(ret).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `pidfd_send_signal(pidfd, signal, NULL, 0)`.
pub fn pidfd_send_signal(pidfd: &OwnedFd, signal: i32) -> io::Result<()> {
    // SAFETY: a NULL siginfo is allowed (the kernel fills in a SI_USER one); the fd is a
    // live pidfd borrowed for the call; flags must be 0.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0 as libc::c_uint,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits (at most `timeout_ms`) for the process behind `pidfd` to exit; `Ok(true)` once it
/// has. (Safe code: `poll` through nix.)
pub fn wait_exit(pidfd: &OwnedFd, timeout_ms: u16) -> io::Result<bool> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    let n = poll(&mut fds, PollTimeout::from(timeout_ms)).map_err(io::Error::from)?;
    Ok(n > 0)
}
