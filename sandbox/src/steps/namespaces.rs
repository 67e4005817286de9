//! Step 2: the new namespaces, created as root of the initial user namespace so they are
//! owned by it — the agent, later in a user namespace of its own, holds no capability over
//! them and can never remount or reconfigure them. (The network namespace is the agent's
//! own: see `identity`; its capabilities are dropped right after it is joined.)

use nix::sched::CloneFlags;

use crate::plan::StepError;
use crate::spec::Net;

/// The runner's part, before the fork: a new pid namespace, whose first process (pid 1)
/// the fork then makes the sandbox's init. The runner itself stays in all of the host's
/// namespaces, so the init's mounts and `pivot_root` never touch the runner's view.
pub fn unshare_pid() -> Result<(), StepError> {
    nix::sched::unshare(CloneFlags::CLONE_NEWPID)
        .map_err(|e| StepError::new("unshare(CLONE_NEWPID)", e))
}

/// The namespaces the init makes for itself, still root of the initial user namespace:
/// mount, ipc, uts. The cgroup namespace follows once the init is in the run's cgroups
/// (`cgroup::enter`), so that it is rooted there. The network namespace of `--net none`
/// is made inside the agent's user namespace (`identity::prepare`), so that the daemon
/// needs no CAP_NET_ADMIN; `--net host` has none.
pub fn flags(_net: Net) -> CloneFlags {
    CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS
}

pub fn unshare(net: Net) -> Result<(), StepError> {
    nix::sched::unshare(flags(net))
        .map_err(|e| StepError::new(format!("unshare({:?})", flags(net)), e))
}

pub fn set_hostname(name: &str) -> Result<(), StepError> {
    nix::unistd::sethostname(name).map_err(|e| StepError::new("sethostname", e))
}
