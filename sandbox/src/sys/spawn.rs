//! Starting the runner from the daemon with `posix_spawn`, and the child it gives.
//!
//! Why not `std::process::Command`: to place fds at fixed numbers (the runner's contract)
//! it needs a `pre_exec` closure, and with one it forks. A fork of the daemon copies its
//! page tables (0.3 ms), and every page the daemon then writes is copied on its first write
//! — about 1 ms of the daemon's CPU per runner started, on a 2-CPU machine during the next
//! run. glibc's `posix_spawn` shares the address space until the exec (`CLONE_VFORK`), and
//! its file actions place the fds.

use std::ffi::CString;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;

use super::{cvt, dup_above};

/// A process started by [`spawn_with_fds`]; its pid stays valid until it is reaped here.
#[derive(Debug)]
pub(crate) struct Spawned {
    pid: libc::pid_t,
    status: Option<ExitStatus>,
}

impl Spawned {
    /// SIGKILL, unless it was reaped already (then its pid may be another process's).
    pub(crate) fn kill(&mut self) -> io::Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        // SAFETY: kill takes integers; the pid is this unreaped child's, so it cannot have
        // been reused.
        cvt(libc::c_long::from(unsafe {
            libc::kill(self.pid, libc::SIGKILL)
        }))
        .map(drop)
    }

    /// Waits for it to end and reaps it (once; later calls return the same status).
    pub(crate) fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            match self.reap(0) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Some(s)) => return Ok(s),
                Ok(None) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Its status if it has ended (reaping it), `None` while it runs.
    pub(crate) fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.reap(libc::WNOHANG)
    }

    fn reap(&mut self, flags: libc::c_int) -> io::Result<Option<ExitStatus>> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        let mut raw: libc::c_int = 0;
        // SAFETY: waitpid writes the status into `raw`, a valid c_int; the pid is this
        // child's.
        let pid = cvt(libc::c_long::from(unsafe {
            libc::waitpid(self.pid, &mut raw, flags)
        }))?;
        if pid == 0 {
            return Ok(None);
        }
        let status = ExitStatus::from_raw(raw);
        self.status = Some(status);
        Ok(Some(status))
    }
}

/// Starts `program` (no arguments, an empty environment) with `stdio[i]` at fd `i` (or
/// `/dev/null`) and `fds[i]` at fd `3 + i`; every other fd is closed in the child, whether
/// or not it is close-on-exec (the daemon may hold another run's fds received over D-Bus,
/// and none may reach this runner, which can live long). SIGPIPE is back to its default
/// and no signal is blocked, as after a fresh login.
pub(crate) fn spawn_with_fds(
    program: &Path,
    stdio: [Option<BorrowedFd<'_>>; 3],
    fds: &[BorrowedFd<'_>],
) -> io::Result<Spawned> {
    let path = CString::new(program.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the runner's path"))?;
    let floor = 3 + i32::try_from(fds.len()).unwrap_or(i32::MAX - 3);
    let null = if stdio.iter().any(Option::is_none) {
        Some(
            std::fs::File::options()
                .read(true)
                .write(true)
                .open("/dev/null")?,
        )
    } else {
        None
    };
    // Each source first goes above every target number, so no dup2 in the child can
    // overwrite a source that a later one still needs.
    let mut sources: Vec<OwnedFd> = Vec::with_capacity(3 + fds.len());
    for fd in stdio.iter().take(3) {
        let fd = match (fd, &null) {
            (Some(fd), _) => *fd,
            (None, Some(n)) => std::os::fd::AsFd::as_fd(n),
            (None, None) => return Err(io::Error::other("no /dev/null for the runner")),
        };
        sources.push(dup_above(fd, floor)?);
    }
    for fd in fds {
        sources.push(dup_above(*fd, floor)?);
    }
    let argv = [path.as_ptr(), std::ptr::null()];
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let mut actions = FileActions::new()?;
    for (target, fd) in sources.iter().enumerate() {
        let target = i32::try_from(target).unwrap_or(i32::MAX);
        // SAFETY: `actions` is initialized; the call copies the two integers.
        check(unsafe {
            libc::posix_spawn_file_actions_adddup2(actions.as_mut_ptr(), fd.as_raw_fd(), target)
        })?;
    }
    // SAFETY: as above; glibc ≥ 2.34 (closes every fd from `floor` up in the child).
    check(unsafe { libc::posix_spawn_file_actions_addclosefrom_np(actions.as_mut_ptr(), floor) })?;
    let attrs = Attrs::new()?;
    let mut pid: libc::pid_t = 0;
    // SAFETY: every pointer is valid for the call: `path` and the NUL-terminated argv/envp
    // arrays live until it returns, `actions` and `attrs` are initialized, `pid` is a valid
    // out-pointer. The sources the file actions name stay open (`sources`) until then.
    check(unsafe {
        libc::posix_spawn(
            &mut pid,
            path.as_ptr(),
            actions.as_mut_ptr(),
            attrs.as_ptr(),
            argv.as_ptr().cast(),
            envp.as_ptr().cast(),
        )
    })?;
    drop(sources);
    Ok(Spawned { pid, status: None })
}

/// posix_spawn's functions return the error number instead of setting errno.
fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// `posix_spawn_file_actions_t`, destroyed on drop.
struct FileActions(MaybeUninit<libc::posix_spawn_file_actions_t>);

impl FileActions {
    fn new() -> io::Result<Self> {
        let mut a = MaybeUninit::uninit();
        // SAFETY: init writes a valid object into the uninitialized storage.
        check(unsafe { libc::posix_spawn_file_actions_init(a.as_mut_ptr()) })?;
        Ok(Self(a))
    }

    fn as_mut_ptr(&mut self) -> *mut libc::posix_spawn_file_actions_t {
        self.0.as_mut_ptr()
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: initialized in `new`, destroyed once.
        unsafe { libc::posix_spawn_file_actions_destroy(self.0.as_mut_ptr()) };
    }
}

/// `posix_spawnattr_t`: an empty signal mask, SIGPIPE at its default; destroyed on drop.
struct Attrs(MaybeUninit<libc::posix_spawnattr_t>);

impl Attrs {
    fn new() -> io::Result<Self> {
        let mut a = MaybeUninit::uninit();
        // SAFETY: init writes a valid object into the uninitialized storage.
        check(unsafe { libc::posix_spawnattr_init(a.as_mut_ptr()) })?;
        let mut attrs = Self(a);
        let p = attrs.0.as_mut_ptr();
        let none = nix::sys::signal::SigSet::empty();
        let mut pipe = nix::sys::signal::SigSet::empty();
        pipe.add(nix::sys::signal::Signal::SIGPIPE);
        let flags = (libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short;
        // SAFETY: `p` is initialized; the setters copy the sets and flags.
        check(unsafe { libc::posix_spawnattr_setsigmask(p, none.as_ref()) })?;
        // SAFETY: as above.
        check(unsafe { libc::posix_spawnattr_setsigdefault(p, pipe.as_ref()) })?;
        // SAFETY: as above.
        check(unsafe { libc::posix_spawnattr_setflags(p, flags) })?;
        Ok(attrs)
    }

    fn as_ptr(&self) -> *const libc::posix_spawnattr_t {
        self.0.as_ptr()
    }
}

impl Drop for Attrs {
    fn drop(&mut self) {
        // SAFETY: initialized in `new`, destroyed once.
        unsafe { libc::posix_spawnattr_destroy(self.0.as_mut_ptr()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsFd;

    #[test]
    fn fds_arrive_at_their_numbers_and_nothing_else_does() {
        // A stray fd without close-on-exec must not reach the child.
        let (stray, _keep) = nix::unistd::pipe().unwrap();
        let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let (a, _a) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let (b, _b) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        // The shell lists its open fds (as the directory sees them) on its stdout.
        let script = std::env::temp_dir().join(format!("spawn-test-{}", std::process::id()));
        std::fs::write(&script, "#!/bin/sh\nexec ls /proc/self/fd\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let mut child = spawn_with_fds(
            &script,
            [None, Some(wr.as_fd()), None],
            &[a.as_fd(), b.as_fd()],
        )
        .unwrap();
        drop(wr);
        let mut out = String::new();
        std::fs::File::from(rd).read_to_string(&mut out).unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(child.try_wait().unwrap().map(|s| s.success()), Some(true));
        child.kill().unwrap(); // reaped: nothing to kill, and no error
        std::fs::remove_file(&script).unwrap();
        let mut fds: Vec<i32> = out.split_whitespace().map(|f| f.parse().unwrap()).collect();
        fds.sort_unstable();
        // 0–4, plus the one `ls` opens for /proc/self/fd itself (the next free number).
        assert_eq!(
            fds,
            [0, 1, 2, 3, 4, 5],
            "stray fd {} leaked?",
            stray.as_raw_fd()
        );
    }

    #[test]
    fn a_program_that_cannot_run_is_an_error_here() {
        let e =
            spawn_with_fds(Path::new("/nonexistent/runner"), [None, None, None], &[]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
