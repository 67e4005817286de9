//! Step 5: the agent's identity. As root: supplementary groups, gid, uid → the agent's own
//! host ids (no login user has them). Then, unprivileged, a user namespace of its own with
//! the one-line maps "inside agent 1": inside it is `inside_uid` (1000), outside it stays
//! the agent uid, and the namespace owns none of the mount/pid/net namespaces (root made
//! those in step 2), so the capabilities it grants reach nothing but itself.

use nix::sched::CloneFlags;
use nix::sys::prctl;
use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};

use crate::sandbox::plan::StepError;
use crate::sandbox::spec::Ids;

pub fn become_agent(ids: &Ids) -> Result<(), StepError> {
    let gid = Gid::from_raw(ids.agent_gid);
    let uid = Uid::from_raw(ids.agent_uid);
    setgroups(&[gid]).map_err(|e| StepError::new("setgroups", e))?;
    setresgid(gid, gid, gid).map_err(|e| StepError::new(format!("setresgid({gid})"), e))?;
    setresuid(uid, uid, uid).map_err(|e| StepError::new(format!("setresuid({uid})"), e))?;
    // The uid change made the process non-dumpable, which makes its /proc files root's and
    // its own uid_map unwritable; the maps need it dumpable for a moment.
    prctl::set_dumpable(true).map_err(|e| StepError::new("PR_SET_DUMPABLE", e))?;
    nix::sched::unshare(CloneFlags::CLONE_NEWUSER)
        .map_err(|e| StepError::new("unshare(CLONE_NEWUSER)", e))?;
    write("/proc/self/setgroups", "deny")?;
    write(
        "/proc/self/uid_map",
        &format!("{} {} 1\n", ids.inside_uid, ids.agent_uid),
    )?;
    write(
        "/proc/self/gid_map",
        &format!("{} {} 1\n", ids.inside_gid, ids.agent_gid),
    )?;
    Ok(())
}

fn write(path: &str, value: &str) -> Result<(), StepError> {
    std::fs::write(path, value).map_err(|e| StepError::new(format!("write {value:?} to {path}"), e))
}
