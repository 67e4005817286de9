//! Step 5: the agent's identity, in two halves.
//!
//! [`prepare`], in the runner before it forks the init: a holder child makes the agent's
//! user namespace (and for `--net none` its network namespace, with `lo` brought up by that
//! namespace's capabilities) on a CPU that is otherwise idle then; the runner writes the
//! one-line maps "inside agent 1". A warm runner makes the holder ahead of its run
//! ([`AgentNs::spawn`], for `--net none`), so a run only maps it. When the agent has its
//! owner's ids inside ([`Ids::inside_are_owners`]), those maps are the workspace's
//! idmapping too, and the runner keeps the namespace open for it ([`Mapped::owner_idmap`]).
//!
//! [`become_agent`], in the init after the file system and the fds: as root, the
//! supplementary groups; then `setns` into the holder's namespaces and, inside, gid and uid
//! `inside_*` (the owner's, or 1000) — outside, the agent's own host ids (no login user has
//! them). The user namespace owns none of the mount/pid/ipc/uts/cgroup namespaces (root
//! made those), so the capabilities it grants reach nothing but itself and its network
//! namespace, and step 6 drops them.

use std::os::fd::{OwnedFd, RawFd};

use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};

use crate::plan::StepError;
use crate::spec::{Ids, Net, Spec};
use crate::sys::{self, AgentNsHolder};

/// The agent's namespaces, made and mapped, waiting to be joined.
#[derive(Debug)]
pub struct AgentNs(AgentNsHolder);

impl AgentNs {
    /// A holder for a run with network `net`, not yet mapped.
    pub fn spawn(net: Net) -> Result<AgentNs, StepError> {
        sys::spawn_agent_ns_holder(net == Net::None)
            .map(AgentNs)
            .map_err(|e| StepError::new("create the agent's user namespace", e))
    }

    /// The fds step 4 must leave open.
    pub fn fds(&self) -> [RawFd; 2] {
        self.0.fds()
    }

    /// See [`AgentNsHolder::raise_fds`].
    pub fn raise_fds(&mut self, floor: RawFd) -> Result<(), StepError> {
        self.0
            .raise_fds(floor)
            .map_err(|e| StepError::new("move the agent namespace holder's fds", e))
    }

    /// See [`AgentNsHolder::kill`].
    pub fn kill(&self) {
        self.0.kill();
    }

    /// In the init after the fork (see [`AgentNsHolder::disown`]).
    pub fn disown(&mut self) {
        self.0.disown();
    }
}

/// The agent's namespaces, mapped.
#[derive(Debug)]
pub struct Mapped {
    pub ns: AgentNs,
    /// Its user namespace, open, when the run has a workspace and the namespace maps the
    /// owner's ids to the agent's ([`Ids::inside_are_owners`]): the workspace is idmapped
    /// with it.
    pub owner_idmap: Option<OwnedFd>,
}

/// The run's holder, mapped: `ready` if a warm runner made one for this network mode,
/// otherwise a new one.
pub fn prepare(spec: &Spec, ready: Option<AgentNs>) -> Result<Mapped, StepError> {
    let (ids, net) = (&spec.ids, spec.net);
    let ns = match ready {
        Some(ns) if ns.0.new_net() == (net == Net::None) => ns,
        _ => AgentNs::spawn(net)?,
    };
    let pid =
        ns.0.host_pid()
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
    let owner_idmap = if spec.workspace.is_some() && ids.inside_are_owners() {
        let path = format!("{dir}/ns/user");
        let userns = std::fs::File::open(&path)
            .map_err(|e| StepError::new(format!("open {path} (the workspace's idmapping)"), e))?;
        Some(userns.into())
    } else {
        None
    };
    Ok(Mapped { ns, owner_idmap })
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
