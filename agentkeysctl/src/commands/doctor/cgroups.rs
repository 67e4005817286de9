//! `cgroups`: where the runner can set memory, pids and cpu limits — cgroup v2 first, v1
//! where a host still binds a controller there (hybrid hosts such as this CI machine).
//! All three missing fails; some missing warns (those limits would not apply).

use agentkeysd::sandbox::cgroups::{CgroupLayout, Placement, RUNNER_CONTROLLERS};
use agentkeysd::sandbox::probe;

use super::Finding;

const CHECK: &str = "cgroups";

pub fn check() -> Finding {
    match probe::cgroups() {
        Ok(layout) => judge(&layout),
        Err(e) => Finding::skip(CHECK, format!("cannot read /proc/self/mountinfo: {e}")),
    }
}

/// The finding for a layout (pure, so the wording is tested with sample layouts).
pub fn judge(layout: &CgroupLayout) -> Finding {
    let mut v2 = Vec::new();
    let mut v1 = Vec::new();
    let mut missing = Vec::new();
    for c in RUNNER_CONTROLLERS {
        match layout.placement(c) {
            Placement::V2(_) => v2.push(c),
            Placement::V1(_) => v1.push(c),
            Placement::Missing => missing.push(c),
        }
    }
    let mut parts = Vec::new();
    if !v2.is_empty() {
        parts.push(format!("{} on cgroup v2", v2.join(", ")));
    }
    if !v1.is_empty() {
        parts.push(format!("{} on cgroup v1", v1.join(", ")));
    }
    let unified = match &layout.v2 {
        Some(h) if v2.is_empty() => format!(
            " (v2 at {} has only: {})",
            h.mount_point.display(),
            if h.controllers.is_empty() {
                "none".to_owned()
            } else {
                h.controllers.join(" ")
            }
        ),
        Some(_) => String::new(),
        None => " (no cgroup v2 mount)".to_owned(),
    };
    let fix = "mount cgroup2 at /sys/fs/cgroup (systemd does by default) or the v1 \
               memory/pids/cpu hierarchies, and make them writable for root";
    match (missing.is_empty(), parts.is_empty()) {
        (true, _) => Finding::ok(CHECK, format!("{}{unified}", parts.join("; "))),
        (false, true) => Finding::fail(
            CHECK,
            format!("no writable hierarchy has {}{unified}", missing.join(", ")),
            fix,
        ),
        (false, false) => Finding::warn(
            CHECK,
            format!(
                "{}; missing: {} — those limits would not apply{unified}",
                parts.join("; "),
                missing.join(", ")
            ),
            fix,
        ),
    }
}

#[cfg(test)]
mod tests {
    use agentkeysd::sandbox::cgroups::{parse_controllers, parse_mountinfo};

    use super::*;
    use crate::commands::doctor::Status;

    #[test]
    fn a_hybrid_host_is_ok_on_v1_and_says_what_v2_has() {
        let mut l = parse_mountinfo(
            "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n\
             35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
             39 31 0:36 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n\
             41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
            &[],
        );
        if let Some(v2) = l.v2.as_mut() {
            v2.controllers = parse_controllers("hugetlb");
        }
        let f = judge(&l);
        assert_eq!(f.status, Status::Ok);
        assert_eq!(
            f.detail,
            "memory, pids, cpu on cgroup v1 (v2 at /sys/fs/cgroup/unified has only: hugetlb)"
        );
    }

    #[test]
    fn a_v2_host_missing_cpu_warns_and_nothing_fails() {
        let mut l = parse_mountinfo("35 24 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n", &[]);
        if let Some(v2) = l.v2.as_mut() {
            v2.controllers = parse_controllers("memory pids io");
        }
        let f = judge(&l);
        assert_eq!(f.status, Status::Warn);
        assert!(
            f.detail
                .starts_with("memory, pids on cgroup v2; missing: cpu"),
            "{}",
            f.detail
        );
        assert!(f.fix.is_some());
        let f = judge(&CgroupLayout::default());
        assert_eq!(f.status, Status::Fail);
        assert!(f.detail.contains("no cgroup v2 mount"), "{}", f.detail);
    }
}
