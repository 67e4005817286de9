//! Step 2: the new namespaces, created as root of the initial user namespace so they are
//! owned by it — the agent, later in a user namespace of its own, holds no capability over
//! them and can never remount or reconfigure them. (The network namespace is the agent's
//! own: see [`loopback_up`]; its capabilities are dropped right after it is made.)

use nix::sched::CloneFlags;

use crate::sandbox::plan::StepError;
use crate::sandbox::spec::Net;
use crate::sandbox::sys;

/// The namespaces root makes for a run: mount, pid, ipc, uts, cgroup. The network
/// namespace of `--net none` is made later, inside the agent's user namespace
/// ([`loopback_up`]), so that the daemon needs no CAP_NET_ADMIN; `--net host` has none.
pub fn flags(_net: Net) -> CloneFlags {
    CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWCGROUP
}

pub fn unshare(net: Net) -> Result<(), StepError> {
    nix::sched::unshare(flags(net))
        .map_err(|e| StepError::new(format!("unshare({:?})", flags(net)), e))
}

pub fn set_hostname(name: &str) -> Result<(), StepError> {
    nix::unistd::sethostname(name).map_err(|e| StepError::new("sethostname", e))
}

/// `--net none`: a new network namespace, created from the agent's user namespace (whose
/// capabilities bring its `lo` up; they are dropped right after), with loopback only.
pub fn loopback_up() -> Result<(), StepError> {
    nix::sched::unshare(CloneFlags::CLONE_NEWNET)
        .map_err(|e| StepError::new("unshare(CLONE_NEWNET)", e))?;
    sys::loopback_up().map_err(|e| StepError::new("bring up the loopback interface", e))
}
