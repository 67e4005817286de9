//! Daemon side of the runs' cgroups: the parent groups resolved once at start
//! ([`RunCgroups::prepare`]), a [`CgroupPlan`] per run, killing every process of a run and
//! removing its groups. v2 first (membership and `cgroup.kill` even where it carries no
//! controller, as on hybrid hosts), v1 for the controllers a host still binds there.
//!
//! An ended run's v1 groups are kept for a later run rather than removed
//! ([`RunCgroups::recycle`], [`RunCgroups::adopt`]): making a v1 group and removing it cost
//! a run's start about a tenth of its time on this machine's hybrid hierarchy (the memory
//! group most), and v1 groups, unlike v2 ones, can be renamed. A kept group's limits are
//! reset before it is renamed to a spare name (`spare-<daemon pid>-<n>`); a run that starts
//! cold renames one to its own name before the runner starts, so at any moment a group is
//! one run's only, as a new one would be. Its cumulative counters (`memory.oom_control`'s
//! `oom_kill`, `cpu.stat`, `pids.events`) count every run it served, and what is still
//! charged to it (at most [`KEPT_CHARGE_MAX`]) counts against the next run's memory limit;
//! its peaks and fail counts are reset. The v2 group, which cannot be renamed and carries
//! `cgroup.kill` and the runner's lock, is made and removed per run.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::cgroups::{CgroupLayout, Hierarchy, Placement, RUNNER_CONTROLLERS};
use super::spec::{CgroupDir, CgroupPlan};

/// Name of the parent group under the daemon's own group.
const PARENT: &str = "agentkeys";

/// Start of the names of kept v1 groups (see the module's doc); never a run id's.
const SPARE_PREFIX: &str = "spare-";

/// Ended runs' v1 groups kept at most: more than the runs that start cold in a burst rarely
/// need, few enough that their kernel memory does not matter.
pub const SPARES_KEPT: usize = 4;

/// The most a kept memory group may still have charged (the page cache of the files the run
/// used, the runner's own pages among them, and some kernel memory: about 3 MiB after a
/// short run here). It stays charged to the group, where the next run's limit counts it,
/// and is reclaimed only under that limit's pressure: `memory.force_empty` would evict
/// those pages at every run's end, the runner's included, and the next run would read them
/// again (measured: twice as slow). Half the smallest limit a run may have (16 MiB), so that
/// setting the next run's limit never has to reclaim; a group with more is removed (its
/// charges go to the parent, as for any removed group).
pub const KEPT_CHARGE_MAX: u64 = 8 << 20;

/// The parent groups runs are created under.
#[derive(Debug, Clone)]
pub struct RunCgroups {
    /// v2 parent and the controllers it delegates to runs.
    v2: Option<(PathBuf, Vec<String>)>,
    /// v1 parents, each with its controllers (plus `freezer` where bound and v2 has no
    /// `cgroup.kill`, for kill).
    v1: Vec<(PathBuf, Vec<String>)>,
    /// Ended runs' v1 groups kept for later runs, shared by every clone.
    spares: Arc<Mutex<Spares>>,
}

/// The kept groups: each a name with a directory under every v1 parent.
#[derive(Debug, Default)]
struct Spares {
    names: Vec<String>,
    /// Names given so far (the next name's number).
    made: u64,
    /// The daemon is stopping: nothing is kept any more.
    closed: bool,
}

impl Spares {
    /// Whether another spare may be kept: not stopping, fewer than [`SPARES_KEPT`].
    fn has_room(&self) -> bool {
        !self.closed && self.names.len() < SPARES_KEPT
    }
}

impl RunCgroups {
    /// Creates the parent groups under this process's own groups (`/proc/self/cgroup`).
    pub fn prepare(layout: &CgroupLayout) -> io::Result<RunCgroups> {
        let own = std::fs::read_to_string("/proc/self/cgroup")?;
        let mut v2 = None;
        if let Some(h) = layout.v2.as_ref().filter(|h| !h.read_only) {
            let own_path = own_group(&own, None).unwrap_or_default();
            let base = join(&h.mount_point, &own_path);
            let wanted: Vec<String> = RUNNER_CONTROLLERS
                .iter()
                .filter(|c| matches!(layout.placement(c), Placement::V2(_)))
                .map(|c| (*c).to_owned())
                .collect();
            if !wanted.is_empty() {
                enable_controllers(&base, &wanted)?;
            }
            let parent = base.join(PARENT);
            mkdir(&parent)?;
            if !wanted.is_empty() {
                write(&parent.join("cgroup.subtree_control"), &plus(&wanted))?;
            }
            v2 = Some((parent, wanted));
        }
        // Where v2 kills a run's processes (`cgroup.kill`, Linux 5.14), a v1 freezer group
        // would only be made and removed.
        let v2_kills =
            (v2.as_ref()).is_some_and(|(p, _): &(PathBuf, _)| p.join("cgroup.kill").exists());
        let mut v1 = Vec::new();
        for h in &layout.v1 {
            let mut controllers: Vec<String> = RUNNER_CONTROLLERS
                .iter()
                .filter(|c| matches!(layout.placement(c), Placement::V1(p) if p == h))
                .map(|c| (*c).to_owned())
                .collect();
            if h.controllers.iter().any(|c| c == "freezer") && !h.read_only && !v2_kills {
                controllers.push("freezer".to_owned());
            }
            if controllers.is_empty() {
                continue;
            }
            let parent = join(
                &h.mount_point,
                &own_group(&own, Some(h)).unwrap_or_default(),
            )
            .join(PARENT);
            mkdir(&parent)?;
            v1.push((parent, controllers));
        }
        Ok(RunCgroups {
            v2,
            v1,
            spares: Arc::default(),
        })
    }

    /// The groups of one run (not created: the runner creates them).
    pub fn plan(&self, run_id: &str) -> CgroupPlan {
        CgroupPlan {
            v2: self.v2.as_ref().map(|(p, c)| CgroupDir {
                path: p.join(run_id),
                controllers: c.clone(),
            }),
            v1: self
                .v1
                .iter()
                .map(|(p, c)| CgroupDir {
                    path: p.join(run_id),
                    controllers: c.clone(),
                })
                .collect(),
        }
    }

    /// The groups of a run that starts cold: [`plan`](Self::plan), with a kept spare's v1
    /// groups renamed to the run's names where there is one (the runner finds them made:
    /// `steps::cgroup::join` takes an existing group). A rename that fails (another daemon
    /// sharing the parents removed the spare as a dead daemon's) leaves that group to the
    /// runner to make. Before the runner starts; the newest spare first.
    pub fn adopt(&self, run_id: &str) -> CgroupPlan {
        let plan = self.plan(run_id);
        let Some(spare) = lock(&self.spares).names.pop() else {
            return plan;
        };
        for ((parent, _), dir) in self.v1.iter().zip(&plan.v1) {
            let from = parent.join(&spare);
            if std::fs::rename(&from, &dir.path).is_err() {
                let _ = std::fs::remove_dir(&from);
            }
        }
        plan
    }

    /// Once none of a run's processes is left (the runner reaped, the init's pid namespace
    /// emptied): keeps its v1 groups as a spare for a later run (see the module's doc) and
    /// removes its v2 group; removes them all instead when the plan is not one of these
    /// parents', a group still has a member or more than [`KEPT_CHARGE_MAX`] charged, one
    /// cannot be reset or renamed, [`SPARES_KEPT`] are kept already, or the daemon is
    /// stopping ([`close`](Self::close)).
    pub fn recycle(&self, plan: &CgroupPlan) -> io::Result<()> {
        let ours = (plan.held_dir())
            .and_then(|d| d.file_name()?.to_str())
            .is_some_and(|name| !plan.v1.is_empty() && self.plan(name) == *plan);
        // Checked again under the lock by `keep`; here so that groups that would not be kept
        // (at the daemon's stop, every run's) are not reset first.
        let room = lock(&self.spares).has_room();
        if ours && room && plan.v1.iter().all(|d| reset_v1(d).is_ok()) && self.keep(&plan.v1) {
            return self.remove(&CgroupPlan {
                v2: plan.v2.clone(),
                v1: Vec::new(),
            });
        }
        self.remove(plan)
    }

    /// Renames `dirs` (one per v1 parent, in order) to a new spare's name; on failure the
    /// ones renamed are removed (an empty group), and `false`.
    fn keep(&self, dirs: &[CgroupDir]) -> bool {
        let mut spares = lock(&self.spares);
        if !spares.has_room() {
            return false;
        }
        let name = format!("{SPARE_PREFIX}{}-{}", std::process::id(), spares.made);
        spares.made += 1;
        for (i, (dir, (parent, _))) in dirs.iter().zip(&self.v1).enumerate() {
            if std::fs::rename(&dir.path, parent.join(&name)).is_err() {
                for (parent, _) in &self.v1[..i] {
                    let _ = std::fs::remove_dir(parent.join(&name));
                }
                return false;
            }
        }
        spares.names.push(name);
        true
    }

    /// At the daemon's stop: the spares are removed, and the groups of runs that end from
    /// now on are removed, not kept. An error names the first group left.
    pub fn close(&self) -> io::Result<()> {
        let names = {
            let mut spares = lock(&self.spares);
            spares.closed = true;
            std::mem::take(&mut spares.names)
        };
        self.remove_spares(names)
    }

    /// Removes the spares a daemon that is gone left under the parents: named with a pid
    /// no process has (seen from here), or this daemon's own (a daemon before it had it).
    /// Returns how many were found; an error names the first group left.
    pub fn sweep_spares(&self) -> io::Result<usize> {
        let own = std::process::id();
        let mut names = BTreeSet::new();
        for (parent, _) in &self.v1 {
            for e in std::fs::read_dir(parent).into_iter().flatten().flatten() {
                let name = e.file_name();
                let Some(pid) = name.to_str().and_then(spare_pid) else {
                    continue;
                };
                if pid == own || !Path::new("/proc").join(pid.to_string()).exists() {
                    names.insert(name.to_string_lossy().into_owned());
                }
            }
        }
        let n = names.len();
        self.remove_spares(names).map(|()| n)
    }

    /// Removes every group of the spares `names`, also after a failure (the first returned).
    fn remove_spares(&self, names: impl IntoIterator<Item = String>) -> io::Result<()> {
        let mut first = Ok(());
        for name in names {
            for (parent, _) in &self.v1 {
                let dir = parent.join(&name);
                if let Err(e) = std::fs::remove_dir(&dir)
                    && e.kind() != io::ErrorKind::NotFound
                    && first.is_ok()
                {
                    first = Err(io::Error::new(
                        e.kind(),
                        format!("rmdir {}: {e}", dir.display()),
                    ));
                }
            }
        }
        first
    }

    /// Kills every process of the run and returns when none is left: v2 `cgroup.kill` when
    /// present; otherwise v1 freeze, SIGKILL every member, thaw, until empty.
    pub fn kill(&self, plan: &CgroupPlan) -> io::Result<()> {
        if let Some(dir) = &plan.v2 {
            let kill = dir.path.join("cgroup.kill");
            if kill.exists() {
                // Nothing left (the usual end of a run): no kill. Writing cgroup.kill waits
                // for an RCU grace period (~10 ms here) even on an empty group, and nothing
                // can enter an empty run group again (only the init was ever born in it).
                if populated_v2(&dir.path)? == Some(false) {
                    return Ok(());
                }
                write(&kill, "1")?;
                return wait_empty_v2(&dir.path);
            }
        }
        let freezer = plan
            .v1
            .iter()
            .find(|d| d.controllers.iter().any(|c| c == "freezer"));
        let Some(any) = freezer.or(plan.v1.first()).or(plan.v2.as_ref()) else {
            return Ok(());
        };
        if members(&any.path)?.is_empty() {
            return Ok(());
        }
        loop {
            if let Some(f) = freezer {
                let _ = write(&f.path.join("freezer.state"), "FROZEN");
            }
            let pids = members(&any.path)?;
            for pid in &pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            if let Some(f) = freezer {
                let _ = write(&f.path.join("freezer.state"), "THAWED");
            }
            if pids.is_empty() {
                return Ok(());
            }
            std::thread::yield_now();
        }
    }

    /// Removes the groups of runs that ended without their daemon removing them (it was
    /// killed): children of the parents whose name `is_run` accepts, with no process in any
    /// hierarchy and not held by a runner (its lock on [`CgroupPlan::held_dir`]). Another
    /// daemon may share these parents (tests, a quickstart beside the host's daemon): its
    /// runners, warm ones waiting for their run too, hold their groups; one caught between
    /// making its groups and locking them makes them again (`steps::cgroup::join`).
    /// (No age test: a cgroup v2 directory's times are those of its inode's last
    /// instantiation, not of its making.) Returns how many runs' groups were removed.
    pub fn sweep(&self, is_run: impl Fn(&str) -> bool) -> usize {
        let names = self.run_names(is_run);
        let stale = |dir: &Path| !dir.exists() || !populated(dir).unwrap_or(true);
        let mut swept = 0;
        for name in names {
            let plan = self.plan(&name);
            // Locked while this checks and removes: a runner cannot take it meanwhile.
            let Some(_unheld) = plan.held_dir().and_then(lock_unheld) else {
                continue;
            };
            let mut dirs = plan.v2.iter().chain(&plan.v1).map(|d| d.path.as_path());
            if dirs.all(stale) && self.remove(&plan).is_ok() {
                swept += 1;
            }
        }
        swept
    }

    /// How many runs' groups a runner holds now (runs going on, of this daemon or another
    /// sharing these parents, or of one that died while they went on).
    pub fn held_runs(&self, is_run: impl Fn(&str) -> bool) -> usize {
        (self.run_names(is_run).iter())
            .filter(|name| {
                let plan = self.plan(name);
                plan.held_dir()
                    .is_some_and(|d| d.exists() && lock_unheld(d).is_none())
            })
            .count()
    }

    /// The names of the runs that have a group under one of the parents.
    fn run_names(&self, is_run: impl Fn(&str) -> bool) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        for (parent, _) in self.v2.iter().chain(&self.v1) {
            let Ok(entries) = std::fs::read_dir(parent) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name();
                let Some(name) = name.to_str() else { continue };
                if is_run(name) && e.file_type().is_ok_and(|t| t.is_dir()) {
                    names.insert(name.to_owned());
                }
            }
        }
        names
    }

    /// Removes the run's groups (after its processes are gone).
    pub fn remove(&self, plan: &CgroupPlan) -> io::Result<()> {
        let dirs = plan.v2.iter().chain(plan.v1.iter());
        for d in dirs {
            match std::fs::remove_dir(&d.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("rmdir {}: {e}", d.path.display()),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Readies an ended run's v1 group for another run: no member (else an error); at most
/// [`KEPT_CHARGE_MAX`] still charged to it; peaks and fail counts zeroed, the limits back to
/// the kernel's defaults (memsw before memory: it may not be below the memory limit; the
/// runner writes the next run's before any of its code runs, but its own set-up runs under
/// them); a frozen one is not kept.
fn reset_v1(dir: &CgroupDir) -> io::Result<()> {
    if !members(&dir.path)?.is_empty() {
        return Err(io::Error::from_raw_os_error(libc::EBUSY));
    }
    let optional = |file: &str, value: &str| match write(&dir.path.join(file), value) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    };
    for c in &dir.controllers {
        match c.as_str() {
            "memory" => {
                let usage = ["memory.memsw.usage_in_bytes", "memory.usage_in_bytes"]
                    .iter()
                    .find_map(|f| std::fs::read_to_string(dir.path.join(f)).ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                if usage.is_none_or(|u| u > KEPT_CHARGE_MAX) {
                    return Err(io::Error::from_raw_os_error(libc::EBUSY));
                }
                optional("memory.memsw.limit_in_bytes", "-1")?;
                write(&dir.path.join("memory.limit_in_bytes"), "-1")?;
                for file in [
                    "memory.max_usage_in_bytes",
                    "memory.failcnt",
                    "memory.memsw.max_usage_in_bytes",
                    "memory.memsw.failcnt",
                ] {
                    optional(file, "0")?;
                }
            }
            "pids" => write(&dir.path.join("pids.max"), "max")?,
            "cpu" => write(&dir.path.join("cpu.cfs_quota_us"), "-1")?,
            "freezer" => {
                let state = std::fs::read_to_string(dir.path.join("freezer.state"))?;
                if state.trim() != "THAWED" {
                    return Err(io::Error::from_raw_os_error(libc::EBUSY));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The pid in a spare's name.
fn spare_pid(name: &str) -> Option<u32> {
    let (pid, n) = name.strip_prefix(SPARE_PREFIX)?.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether the group (with its descendants) holds a process; `None` when it is gone.
fn populated_v2(dir: &Path) -> io::Result<Option<bool>> {
    match std::fs::read_to_string(dir.join("cgroup.events")) {
        Ok(t) => Ok(Some(!t.lines().any(|l| l == "populated 0"))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Waits until `cgroup.events` says `populated 0`, woken by the kernel's notification on
/// that file (POLLPRI), with a periodic re-check.
fn wait_empty_v2(dir: &Path) -> io::Result<()> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::io::{Read, Seek};
    let mut f = match std::fs::File::open(dir.join("cgroup.events")) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut text = String::new();
    loop {
        text.clear();
        f.rewind()?;
        f.read_to_string(&mut text)?;
        if text.lines().any(|l| l == "populated 0") {
            return Ok(());
        }
        let mut fds = [PollFd::new(
            std::os::fd::AsFd::as_fd(&f),
            PollFlags::POLLPRI,
        )];
        match poll(&mut fds, PollTimeout::from(10u8)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// `dir` locked exclusively, when no runner holds it (a runner's shared lock, see
/// `steps::cgroup::join`) and it is there.
fn lock_unheld(dir: &Path) -> Option<std::fs::File> {
    let f = std::fs::File::open(dir).ok()?;
    f.try_lock().ok()?;
    Some(f)
}

/// Whether a group (v2: with its descendants; v1: itself) holds a process.
fn populated(dir: &Path) -> io::Result<bool> {
    match populated_v2(dir)? {
        Some(p) => Ok(p),
        // v1 has no cgroup.events.
        None => Ok(!members(dir)?.is_empty()),
    }
}

fn members(dir: &Path) -> io::Result<Vec<i32>> {
    match std::fs::read_to_string(dir.join("cgroup.procs")) {
        Ok(t) => Ok(t.lines().filter_map(|l| l.trim().parse().ok()).collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Enables `wanted` for the children of `base`; if the no-internal-process rule refuses
/// (EBUSY: `base` has processes), moves this process into `base/daemon` first.
fn enable_controllers(base: &Path, wanted: &[String]) -> io::Result<()> {
    let control = base.join("cgroup.subtree_control");
    match write(&control, &plus(wanted)) {
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            let leaf = base.join("daemon");
            mkdir(&leaf)?;
            write(&leaf.join("cgroup.procs"), &std::process::id().to_string())?;
            write(&control, &plus(wanted))
        }
        other => other,
    }
}

fn plus(controllers: &[String]) -> String {
    controllers
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// This process's group path in `h` (v1: the line naming one of its controllers; v2: `0::`).
pub fn own_group(proc_self_cgroup: &str, h: Option<&Hierarchy>) -> Option<String> {
    proc_self_cgroup.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (id, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        let hit = match h {
            None => id == "0" && ctrls.is_empty(),
            Some(h) => ctrls
                .split(',')
                .any(|c| h.controllers.iter().any(|x| x == c)),
        };
        hit.then(|| path.to_owned())
    })
}

fn join(mount: &Path, group: &str) -> PathBuf {
    mount.join(group.trim_start_matches('/'))
}

fn mkdir(p: &Path) -> io::Result<()> {
    match std::fs::create_dir(p) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(io::Error::new(
            e.kind(),
            format!("mkdir {}: {e}", p.display()),
        )),
        _ => Ok(()),
    }
}

fn write(p: &Path, v: &str) -> io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).open(p)?;
    f.write_all(v.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_groups_are_found_per_hierarchy() {
        let text =
            "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/abc\n1:cpu,cpuacct:/x\n0::/\n";
        let mem = Hierarchy {
            mount_point: "/sys/fs/cgroup/memory".into(),
            controllers: vec!["memory".into()],
            read_only: false,
        };
        assert_eq!(
            own_group(text, Some(&mem)).as_deref(),
            Some("/process_api/abc")
        );
        let cpu = Hierarchy {
            mount_point: "/c".into(),
            controllers: vec!["cpu".into()],
            read_only: false,
        };
        assert_eq!(own_group(text, Some(&cpu)).as_deref(), Some("/x"));
        assert_eq!(own_group(text, None).as_deref(), Some("/"));
        assert_eq!(
            join(Path::new("/m"), "/process_api/abc"),
            Path::new("/m/process_api/abc")
        );
    }

    #[test]
    fn only_spare_names_give_a_pid() {
        assert_eq!(spare_pid("spare-1234-0"), Some(1234));
        assert_eq!(spare_pid("spare-1234-17"), Some(1234));
        for name in [
            "run_aaaaaaaaaaaaaaaaaaaaaaaaaa",
            "spare-1234",
            "spare--0",
            "spare-x-0",
            "spare-1234-",
            "spare-1234-0x",
            "spare-99999999999-0",
            "daemon",
        ] {
            assert_eq!(spare_pid(name), None, "{name}");
        }
    }
}
