//! Step 1: create the run's cgroups, place the sandbox's init in them, write their limits.
//!
//! The init is born in them, so nothing moves it later: a move of another process (a pid
//! written to `cgroup.procs`, v1 or v2) takes the kernel's threadgroup lock for writing,
//! which waits for an RCU grace period — 1 to 16 ms here, on every run after a pause. So the
//! runner, before it forks the init, moves only itself into the v1 groups (`0` to `tasks`
//! moves the calling thread alone, which the kernel does without that lock; the runner is
//! single-threaded), and forks the init straight into the v2 group with `clone3`'s
//! `CLONE_INTO_CGROUP` ([`Joined::v2_fd`]); the init inherits the v1 groups. The limits are
//! written after the fork, while the init builds the file system; the init waits for them
//! ([`await_limits`]) only before it starts the command, so no code of the agent's runs
//! without them. v2 where the hierarchy carries a controller, v1 where the host binds it
//! there.

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, IntoRawFd, RawFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

use crate::plan::StepError;
use crate::spec::{CgroupDir, CgroupPlan, Limits};

/// cpu.cfs_period_us / cpu.max period: 100 ms, the kernel's default.
const CPU_PERIOD_US: u64 = 100_000;

/// What the runner tells the init: the run's limits are written.
pub const LIMITED: &[u8] = b"2";

/// The run's groups, made and (v1) joined by the runner: what its fork of the init needs.
#[derive(Debug)]
pub struct Joined {
    /// The run's first group ([`CgroupPlan::held_dir`]), open and locked (`flock`, shared)
    /// for as long as the runner lives, so that a starting daemon's sweep of leftover groups
    /// (`RunCgroups::sweep`) passes over it. Its number is above every fd a warm start
    /// places. When it is the v2 group, the init is cloned into the group through it.
    held: Option<std::fs::File>,
    /// The v2 group the init is to be born in.
    v2: Option<PathBuf>,
}

impl Joined {
    /// The v2 group, open for `CLONE_INTO_CGROUP`.
    pub fn v2_fd(&self) -> Option<BorrowedFd<'_>> {
        self.v2.as_ref()?;
        self.held.as_ref().map(AsFd::as_fd)
    }

    /// Where `clone3` is missing (or filtered with ENOSYS): the init, forked the usual way,
    /// moves itself into the v2 group (the slow, locked way).
    pub fn join_v2_late(&self) -> Result<(), StepError> {
        match &self.v2 {
            Some(path) => write(&path.join("cgroup.procs"), "0"),
            None => Ok(()),
        }
    }

    /// In the init after the fork: its copy of the held group's fd is let go without a
    /// `close` of ours (the init closes every fd it does not pass on, and the number may
    /// be another file's by the time this would be dropped); the lock stays the runner's.
    pub fn disown(&mut self) {
        if let Some(f) = self.held.take() {
            let _ = f.into_raw_fd();
        }
    }
}

/// Creates every directory of `plan` (an existing one is reused: the daemon names runs
/// uniquely, and hands a run an ended run's v1 groups renamed to its names,
/// `RunCgroups::adopt`), locks the first one (see `Joined`) and moves the calling process into
/// the v1 ones. `fd_floor`: the lowest number the held fd may take.
pub fn join(plan: &CgroupPlan, fd_floor: RawFd) -> Result<Joined, StepError> {
    let mut rounds = 0;
    let held = loop {
        for dir in plan.v2.iter().chain(&plan.v1) {
            make_dir(&dir.path)?;
        }
        let held = plan.held_dir().map(|d| hold(d, fd_floor)).transpose()?;
        // A starting daemon's sweep may have taken the groups for leftovers between their
        // making and the lock (it removes a run's groups under that lock): made again.
        rounds += 1;
        match &held {
            Some(f) if rounds < 3 && removed(f) => continue,
            _ => break held,
        }
    };
    for dir in &plan.v1 {
        // "0": this thread, without the threadgroup lock (see the module's doc).
        write(&dir.path.join("tasks"), "0")?;
    }
    Ok(Joined {
        held,
        v2: plan.v2.as_ref().map(|d| d.path.clone()),
    })
}

/// Whether the group open at `dir` was removed since (its files are gone with it).
fn removed(dir: &std::fs::File) -> bool {
    nix::sys::stat::fstatat(dir, "cgroup.procs", nix::fcntl::AtFlags::empty())
        == Err(nix::errno::Errno::ENOENT)
}

/// `dir` opened at `fd_floor` or above and locked shared.
fn hold(dir: &Path, fd_floor: RawFd) -> Result<std::fs::File, StepError> {
    let fail = |e: std::io::Error| StepError::new(format!("lock {}", dir.display()), e);
    let fd = nix::fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| fail(e.into()))?;
    let file = std::fs::File::from(crate::sys::dup_above(fd.as_fd(), fd_floor).map_err(fail)?);
    drop(fd);
    file.lock_shared().map_err(fail)?;
    Ok(file)
}

/// Writes the limits of each directory's controllers.
pub fn write_limits(plan: &CgroupPlan, limits: &Limits) -> Result<(), StepError> {
    if let Some(dir) = &plan.v2 {
        for (file, value) in v2_limits(dir, limits) {
            write(&dir.path.join(file), &value)?;
        }
    }
    for dir in &plan.v1 {
        for (file, value) in v1_limits(dir, limits) {
            let path = dir.path.join(file);
            // memsw exists only with swap accounting; everything else must be there.
            if file == "memory.memsw.limit_in_bytes" && !path.exists() {
                continue;
            }
            // A new group has the kernel's period already, and setting it costs more than
            // reading it (the scheduler revisits its bandwidth on every CPU).
            if file == "cpu.cfs_period_us"
                && std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == value)
            {
                continue;
            }
            write(&path, &value)?;
        }
    }
    Ok(())
}

/// The init's side: a cgroup namespace, rooted at the run's own groups (the init was born
/// in them).
pub fn enter() -> Result<(), StepError> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
        .map_err(|e| StepError::new("unshare(CLONE_NEWCGROUP)", e))
}

/// The init's side, before it starts the command: waits until the runner says the limits
/// are written ([`LIMITED`]).
pub fn await_limits(pipe: BorrowedFd<'_>) -> Result<(), StepError> {
    let mut byte = [0u8; 1];
    let n = loop {
        match nix::unistd::read(pipe, &mut byte) {
            Err(nix::errno::Errno::EINTR) => {}
            other => break other,
        }
    }
    .map_err(|e| StepError::new("wait for the runner's word on the run's cgroups", e))?;
    if byte[..n] != *LIMITED {
        return Err(StepError::refused(
            "the runner could not write the run's cgroup limits",
            std::io::ErrorKind::BrokenPipe,
        ));
    }
    Ok(())
}

/// The v2 files and values for the controllers this directory limits.
pub fn v2_limits(dir: &CgroupDir, l: &Limits) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for c in &dir.controllers {
        match c.as_str() {
            "memory" => {
                out.push(("memory.max", l.memory_bytes.to_string()));
                // No swap: a memory hog is killed, not slowed to a crawl.
                out.push(("memory.swap.max", "0".to_owned()));
            }
            "pids" => out.push(("pids.max", l.pids.to_string())),
            "cpu" => out.push(("cpu.max", format!("{} {CPU_PERIOD_US}", cpu_quota(l)))),
            _ => {}
        }
    }
    out
}

/// The v1 files and values (memsw after memory: it may not be below the memory limit).
pub fn v1_limits(dir: &CgroupDir, l: &Limits) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for c in &dir.controllers {
        match c.as_str() {
            "memory" => {
                out.push(("memory.limit_in_bytes", l.memory_bytes.to_string()));
                out.push(("memory.memsw.limit_in_bytes", l.memory_bytes.to_string()));
            }
            "pids" => out.push(("pids.max", l.pids.to_string())),
            "cpu" => {
                out.push(("cpu.cfs_period_us", CPU_PERIOD_US.to_string()));
                out.push(("cpu.cfs_quota_us", cpu_quota(l).to_string()));
            }
            _ => {}
        }
    }
    out
}

/// Microseconds of CPU per period: 1000 millis = one whole CPU.
fn cpu_quota(l: &Limits) -> u64 {
    (l.cpu_millis.saturating_mul(CPU_PERIOD_US) / 1000).max(1000)
}

fn make_dir(path: &Path) -> Result<(), StepError> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StepError::new(format!("mkdir {}", path.display()), e)),
    }
}

/// One `write` of the whole value: cgroup files take a value per write call.
fn write(path: &Path, value: &str) -> Result<(), StepError> {
    let fail = |e| StepError::new(format!("write {value:?} to {}", path.display()), e);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(fail)?;
    f.write_all(value.as_bytes()).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_map_to_files() {
        let l = Limits {
            memory_bytes: 1 << 30,
            pids: 64,
            cpu_millis: 500,
        };
        let dir = CgroupDir {
            path: "/x".into(),
            controllers: vec!["memory".into(), "pids".into(), "cpu".into()],
        };
        let v1 = v1_limits(&dir, &l);
        assert!(v1.contains(&("memory.limit_in_bytes", "1073741824".into())));
        assert!(v1.contains(&("cpu.cfs_quota_us", "50000".into())));
        assert!(v1.contains(&("pids.max", "64".into())));
        let v2 = v2_limits(&dir, &l);
        assert!(v2.contains(&("cpu.max", "50000 100000".into())));
        assert!(v2.contains(&("memory.max", "1073741824".into())));
    }
}
