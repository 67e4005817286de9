//! Which cgroup hierarchies this host mounts and which controllers each one has, so the
//! runner (and `agentkeysctl doctor`) know where `memory`, `pids` and `cpu` limits can be
//! set: cgroup v2 first, v1 where a host still binds a controller there (hybrid hosts).
//!
//! Read from `/proc/self/mountinfo` (mounts as this process sees them), `/proc/cgroups`
//! (the v1 controllers the kernel knows) and the v2 mount's `cgroup.controllers`. The
//! parsers are pure and tested with sample texts.

use std::io;
use std::path::PathBuf;

/// The controllers the runner sets limits with (DESIGN §6, step 1).
pub const RUNNER_CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub mount_point: PathBuf,
    /// Controllers this hierarchy has (v1: bound to it; v2: listed in `cgroup.controllers`).
    pub controllers: Vec<String>,
    pub read_only: bool,
}

/// Every cgroup hierarchy this process sees.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupLayout {
    /// The cgroup2 mount (the first, if several).
    pub v2: Option<Hierarchy>,
    /// cgroup v1 mounts that carry at least one controller (named-only ones like
    /// `name=systemd` are left out).
    pub v1: Vec<Hierarchy>,
}

/// Where a controller can be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement<'a> {
    V2(&'a Hierarchy),
    V1(&'a Hierarchy),
    Missing,
}

impl CgroupLayout {
    /// Where `controller` can be used: v2 when the unified hierarchy has it, else the v1
    /// hierarchy it is bound to. A read-only mount counts as missing.
    pub fn placement(&self, controller: &str) -> Placement<'_> {
        let has = |h: &&Hierarchy| !h.read_only && h.controllers.iter().any(|c| c == controller);
        if let Some(h) = self.v2.as_ref().filter(has) {
            return Placement::V2(h);
        }
        match self.v1.iter().find(has) {
            Some(h) => Placement::V1(h),
            None => Placement::Missing,
        }
    }
}

/// Reads the layout of this process's mounts.
pub fn read_layout() -> io::Result<CgroupLayout> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let known = std::fs::read_to_string("/proc/cgroups")
        .map(|t| parse_proc_cgroups(&t))
        .unwrap_or_default();
    let mut layout = parse_mountinfo(&mountinfo, &known);
    if let Some(v2) = layout.v2.as_mut() {
        // An unreadable list (or a v2 mount of a foreign namespace) means no controllers.
        v2.controllers = std::fs::read_to_string(v2.mount_point.join("cgroup.controllers"))
            .map(|t| parse_controllers(&t))
            .unwrap_or_default();
    }
    Ok(layout)
}

/// The subsystem names of `/proc/cgroups` (first column; `#` starts the header).
pub fn parse_proc_cgroups(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// `cgroup.controllers`: controller names separated by spaces.
pub fn parse_controllers(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

/// The cgroup mounts of a `mountinfo` text. `known` is the kernel's list of v1
/// subsystems; when empty, every super option that is not a known mount flag counts.
/// v2 controllers are left empty here (they come from `cgroup.controllers`).
pub fn parse_mountinfo(text: &str, known: &[String]) -> CgroupLayout {
    let mut layout = CgroupLayout::default();
    for line in text.lines() {
        let Some(m) = parse_line(line) else { continue };
        let read_only = m.mount_options.split(',').any(|o| o == "ro");
        match m.fstype {
            "cgroup2" if layout.v2.is_none() => {
                layout.v2 = Some(Hierarchy {
                    mount_point: m.mount_point,
                    controllers: Vec::new(),
                    read_only,
                });
            }
            "cgroup" => {
                let controllers: Vec<String> = m
                    .super_options
                    .split(',')
                    .filter(|o| is_controller(o, known))
                    .map(str::to_owned)
                    .collect();
                if !controllers.is_empty() {
                    layout.v1.push(Hierarchy {
                        mount_point: m.mount_point,
                        controllers,
                        read_only,
                    });
                }
            }
            _ => {}
        }
    }
    layout
}

/// Is this v1 super option a controller name (not `rw`, `name=…`, `clone_children`…)?
fn is_controller(option: &str, known: &[String]) -> bool {
    if known.is_empty() {
        const FLAGS: [&str; 7] = [
            "rw",
            "ro",
            "clone_children",
            "noprefix",
            "xattr",
            "cpuset_v2_mode",
            "none",
        ];
        !option.is_empty() && !option.contains('=') && !FLAGS.contains(&option)
    } else {
        known.iter().any(|k| k == option)
    }
}

/// The fields of one `mountinfo` line this module needs.
struct MountLine<'a> {
    mount_point: PathBuf,
    mount_options: &'a str,
    fstype: &'a str,
    super_options: &'a str,
}

/// `36 25 0:32 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory`:
/// fields 5 and 6, then after the `-` separator the type, source and super options.
fn parse_line(line: &str) -> Option<MountLine<'_>> {
    let (before, after) = line.split_once(" - ")?;
    let mut pre = before.split(' ');
    let mount_point = pre.nth(4)?;
    let mount_options = pre.next()?;
    let mut post = after.split(' ');
    let fstype = post.next()?;
    let _source = post.next()?;
    let super_options = post.next().unwrap_or("");
    Some(MountLine {
        mount_point: unescape(mount_point),
        mount_options,
        fstype,
        super_options,
    })
}

/// Mount points escape space, tab, newline and backslash as `\ooo` octal.
fn unescape(s: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let octal = b.get(i + 1..i + 4).and_then(|d| {
            let d = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(d, 8).ok()
        });
        match (c, octal) {
            (b'\\', Some(v)) => {
                out.push(v);
                i += 4;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// This CI machine: v1 binds memory, pids, cpu…; the unified mount has only hugetlb.
    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    /// A pure v2 host (Debian 12, Fedora) with systemd's optional fields.
    const PURE_V2: &str = "\
26 1 0:23 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    /// A container whose cgroup mounts are read-only, with a combined cpu,cpuacct mount.
    const CONTAINER_V1: &str = "\
700 690 0:60 / /sys/fs/cgroup/cpu,cpuacct ro,nosuid - cgroup cgroup rw,cpu,cpuacct
701 690 0:61 /docker/abc /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory,clone_children
702 690 0:62 / /sys/fs/cgroup/my\\040dir rw - cgroup cgroup rw,pids
";

    fn known() -> Vec<String> {
        parse_proc_cgroups(
            "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t3\t1\t1\ncpu\t1\t1\t1\n\
             cpuacct\t2\t1\t1\nmemory\t4\t88\t1\npids\t8\t1\t1\nhugetlb\t0\t1\t1\n",
        )
    }

    #[test]
    fn proc_cgroups_lists_subsystems() {
        assert_eq!(
            known(),
            ["cpuset", "cpu", "cpuacct", "memory", "pids", "hugetlb"]
        );
    }

    #[test]
    fn a_hybrid_host_uses_v1_for_the_runner_controllers() {
        let mut l = parse_mountinfo(HYBRID, &known());
        let v2 = l.v2.as_mut().unwrap();
        assert_eq!(v2.mount_point, Path::new("/sys/fs/cgroup/unified"));
        v2.controllers = parse_controllers("hugetlb\n");
        // name=systemd carries no controller and is left out.
        assert_eq!(l.v1.len(), 4);
        for c in RUNNER_CONTROLLERS {
            match l.placement(c) {
                Placement::V1(h) => assert_eq!(h.mount_point, Path::new("/sys/fs/cgroup").join(c)),
                other => panic!("{c}: {other:?}"),
            }
        }
        assert!(matches!(l.placement("hugetlb"), Placement::V2(_)));
        assert_eq!(l.placement("io"), Placement::Missing);
    }

    #[test]
    fn a_pure_v2_host_uses_v2() {
        let mut l = parse_mountinfo(PURE_V2, &[]);
        assert!(l.v1.is_empty());
        let v2 = l.v2.as_mut().unwrap();
        assert_eq!(v2.mount_point, Path::new("/sys/fs/cgroup"));
        v2.controllers = parse_controllers("cpuset cpu io memory hugetlb pids rdma misc\n");
        for c in RUNNER_CONTROLLERS {
            assert!(matches!(l.placement(c), Placement::V2(_)), "{c}");
        }
    }

    #[test]
    fn read_only_mounts_do_not_count_and_escapes_are_undone() {
        let l = parse_mountinfo(CONTAINER_V1, &[]);
        assert_eq!(l.v2, None);
        assert_eq!(l.v1.len(), 3);
        assert_eq!(
            l.v1.first().map(|h| h.controllers.clone()),
            Some(vec!["cpu".to_owned(), "cpuacct".to_owned()])
        );
        assert_eq!(l.placement("cpu"), Placement::Missing);
        assert!(matches!(l.placement("memory"), Placement::V1(_)));
        match l.placement("pids") {
            Placement::V1(h) => assert_eq!(h.mount_point, Path::new("/sys/fs/cgroup/my dir")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_lines_are_ignored() {
        let l = parse_mountinfo("\nnot a mount line\n1 2 3 - cgroup\n", &[]);
        assert_eq!(l, CgroupLayout::default());
    }

    #[test]
    fn this_machine_has_a_layout() {
        // Only that reading works; what it holds is the kernel tier's business.
        assert!(read_layout().is_ok());
    }
}
