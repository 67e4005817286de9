//! Daemon side of the runs' cgroups: the parent groups resolved once at start
//! ([`RunCgroups::prepare`]), a [`CgroupPlan`] per run, killing every process of a run and
//! removing its groups. v2 first (membership and `cgroup.kill` even where it carries no
//! controller, as on hybrid hosts), v1 for the controllers a host still binds there.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use super::cgroups::{CgroupLayout, Hierarchy, Placement, RUNNER_CONTROLLERS};
use super::spec::{CgroupDir, CgroupPlan};

/// Name of the parent group under the daemon's own group.
const PARENT: &str = "agentkeys";

/// The parent groups runs are created under.
#[derive(Debug, Clone)]
pub struct RunCgroups {
    /// v2 parent and the controllers it delegates to runs.
    v2: Option<(PathBuf, Vec<String>)>,
    /// v1 parents, each with its controllers (plus `freezer` where bound, for kill).
    v1: Vec<(PathBuf, Vec<String>)>,
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
        let mut v1 = Vec::new();
        for h in &layout.v1 {
            let mut controllers: Vec<String> = RUNNER_CONTROLLERS
                .iter()
                .filter(|c| matches!(layout.placement(c), Placement::V1(p) if p == h))
                .map(|c| (*c).to_owned())
                .collect();
            if h.controllers.iter().any(|c| c == "freezer") && !h.read_only {
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
        Ok(RunCgroups { v2, v1 })
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
}
