//! Step 2: the new namespaces, created as root of the initial user namespace so they are
//! owned by it — the agent, later in a user namespace of its own, holds no capability over
//! them and can never remount, renetwork or reconfigure.

use nix::sched::CloneFlags;

use crate::sandbox::plan::StepError;
use crate::sandbox::spec::Net;
use crate::sandbox::sys;

/// The namespaces of a run: mount, pid, ipc, uts, cgroup, and net unless `--net host`.
pub fn flags(net: Net) -> CloneFlags {
    let mut f = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWCGROUP;
    if net == Net::None {
        f |= CloneFlags::CLONE_NEWNET;
    }
    f
}

pub fn unshare(net: Net) -> Result<(), StepError> {
    nix::sched::unshare(flags(net))
        .map_err(|e| StepError::new(format!("unshare({:?})", flags(net)), e))
}

pub fn set_hostname(name: &str) -> Result<(), StepError> {
    nix::unistd::sethostname(name).map_err(|e| StepError::new("sethostname", e))
}

/// A new network namespace has only `lo`, and down.
pub fn loopback_up() -> Result<(), StepError> {
    sys::loopback_up().map_err(|e| StepError::new("bring up the loopback interface", e))
}
