//! The client's only `unsafe`: the terminal-size ioctls `run` needs to give an interactive
//! agent a pty of the same size as the user's terminal (nix has no safe wrapper for them).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

pub use nix::pty::Winsize;

/// `TIOCGWINSZ`: the size of the terminal `fd`.
pub fn window_size(fd: BorrowedFd<'_>) -> io::Result<Winsize> {
    let mut ws = Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes exactly one `struct winsize` (which `Winsize` is, repr(C)
    // from libc) through the pointer, which points at a live local; fd is borrowed open.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &raw mut ws) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(ws)
}

/// `TIOCSWINSZ`: sets the size of the terminal `fd` (the kernel signals SIGWINCH to its
/// foreground process group).
pub fn set_window_size(fd: BorrowedFd<'_>, ws: &Winsize) -> io::Result<()> {
    // SAFETY: TIOCSWINSZ reads exactly one `struct winsize` through the pointer, which
    // points at a live value for the duration of the call; fd is borrowed open.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, std::ptr::from_ref(ws)) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
