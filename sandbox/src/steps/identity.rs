//! Step 5: the agent's identity, in two halves.
//!
//! [`prepare`], right after the init's namespaces: a holder child makes the agent's user
//! namespace (and for `--net none` its network namespace, with `lo` brought up by that
//! namespace's capabilities), while the init goes on building the file system; the init
//! writes the one-line maps "inside agent 1" through the host's `/proc` at once.
//!
//! [`become_agent`], after the file system and the fds: as root, the supplementary groups;
//! then `setns` into the holder's namespaces and, inside, gid and uid `inside_*` (1000) —
//! outside, the agent's own host ids (no login user has them). The user namespace owns
//! none of the mount/pid/ipc/uts/cgroup namespaces (root made those), so the capabilities
//! it grants reach nothing but itself and its network namespace, and step 6 drops them.

use std::os::fd::RawFd;

use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};

use crate::plan::StepError;
use crate::spec::{Ids, Net};
use crate::sys::{self, AgentNsHolder};

/// The agent's namespaces, made and mapped, waiting to be joined.
#[derive(Debug)]
pub struct AgentNs(AgentNsHolder);

impl AgentNs {
    /// The fds step 4 must leave open.
    pub fn fds(&self) -> [RawFd; 2] {
        self.0.fds()
    }
}

pub fn prepare(ids: &Ids, net: Net) -> Result<AgentNs, StepError> {
    let holder = sys::spawn_agent_ns_holder(net == Net::None)
        .map_err(|e| StepError::new("create the agent's user namespace", e))?;
    let pid = holder
        .host_pid()
        .map_err(|e| StepError::new("find the agent namespace holder's pid", e))?;
    let dir = format!("/proc/{pid}");
    write(&format!("{dir}/setgroups"), "deny")?;
    write(
        &format!("{dir}/uid_map"),
        &format!("{} {} 1\n", ids.inside_uid, ids.agent_uid),
    )?;
    write(
        &format!("{dir}/gid_map"),
        &format!("{} {} 1\n", ids.inside_gid, ids.agent_gid),
    )?;
    Ok(AgentNs(holder))
}

pub fn become_agent(ns: AgentNs, ids: &Ids) -> Result<(), StepError> {
    let agent_gid = Gid::from_raw(ids.agent_gid);
    setgroups(&[agent_gid]).map_err(|e| StepError::new("setgroups", e))?;
    ns.0.join()
        .map_err(|e| StepError::new("enter the agent's user (and network) namespace", e))?;
    let (gid, uid) = (Gid::from_raw(ids.inside_gid), Uid::from_raw(ids.inside_uid));
    setresgid(gid, gid, gid).map_err(|e| StepError::new(format!("setresgid({gid})"), e))?;
    setresuid(uid, uid, uid).map_err(|e| StepError::new(format!("setresuid({uid})"), e))
}

fn write(path: &str, value: &str) -> Result<(), StepError> {
    std::fs::write(path, value).map_err(|e| StepError::new(format!("write {value:?} to {path}"), e))
}
