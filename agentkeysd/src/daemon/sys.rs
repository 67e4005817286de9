//! The daemon's own syscalls that have no safe wrapper. The only `unsafe` in `daemon/`.
#![allow(unsafe_code)]

use std::io;

/// Turns a libc-style return value into `io::Result`, so `-1` never leaks past a call.
fn cvt(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Closes every file descriptor from 3 up: whatever the parent leaked to us.
pub fn close_fds_from_3() -> io::Result<()> {
    // SAFETY: close_range(2) takes plain integers and touches only this process's fd table.
    // It runs during start-up, before the daemon opens any fd of its own, so it closes
    // nothing that Rust code still owns (only descriptors inherited across exec).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            0 as libc::c_uint,
        )
    };
    cvt(ret).map(drop)
}

/// Removes every `LD_*` variable from the environment; returns the names removed.
///
/// Must be called while the process has exactly one thread: `remove_var` is not thread-safe.
/// The caller checks that ([`thread_count`]) and this function checks again.
pub fn remove_ld_vars() -> io::Result<Vec<String>> {
    if thread_count()? != 1 {
        return Err(io::Error::other(
            "refusing to edit the environment: more than one thread is running",
        ));
    }
    let names: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| k.starts_with("LD_"))
        .collect();
    for name in &names {
        // SAFETY: `remove_var` is unsound only when another thread reads or writes the
        // environment at the same time. We checked just above that this process has a single
        // thread (`Threads:` in /proc/self/status), and nothing here spawns one.
        unsafe { std::env::remove_var(name) };
    }
    Ok(names)
}

/// Number of threads of this process (`Threads:` in /proc/self/status).
pub fn thread_count() -> io::Result<usize> {
    status_field("Threads:")
}

/// Pid of the process tracing us, 0 when none (`TracerPid:` in /proc/self/status).
pub fn tracer_pid() -> io::Result<usize> {
    status_field("TracerPid:")
}

fn status_field(field: &str) -> io::Result<usize> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::other(format!("no {field} in /proc/self/status")))
}
