//! Process hardening, run first thing at start-up while the process is single-threaded.
//!
//! Order matters: fds are closed before anything opens one of ours; the environment is
//! cleaned while there is one thread; capabilities are dropped last because reading
//! `/proc/self/status` and closing fds need nothing special, and dropping the bounding set
//! needs CAP_SETPCAP, which is itself dropped only at the very end of [`drop_capabilities`].

use std::collections::HashSet;

use caps::{CapSet, Capability};

use super::sys;

/// Capabilities the daemon keeps, and why. Everything else is dropped from every set,
/// including the bounding set, so neither the daemon nor anything it execs can regain it.
pub const KEEP: &[(Capability, &str)] = &[
    (
        Capability::CAP_IPC_LOCK,
        "lock secret memory (memfd_secret and the mlock fallback) beyond RLIMIT_MEMLOCK",
    ),
    (
        Capability::CAP_SETUID,
        "the runner switches to each agent's own uid and writes its uid_map",
    ),
    (
        Capability::CAP_SETGID,
        "the runner switches to each agent's own gid and writes its gid_map",
    ),
    (
        Capability::CAP_SETPCAP,
        "the runner clears the agent's bounding and ambient capability sets",
    ),
    (
        Capability::CAP_SYS_ADMIN,
        "the runner creates namespaces, idmapped mounts and cgroups for agents",
    ),
    (
        Capability::CAP_KILL,
        "revoking an agent kills its processes, which run as another uid",
    ),
    (
        Capability::CAP_CHOWN,
        "an agent's secrets directory and MCP socket are owned by the agent's uid",
    ),
    (
        Capability::CAP_FOWNER,
        "setting modes on files owned by agents' uids",
    ),
    (
        Capability::CAP_DAC_READ_SEARCH,
        "the runner resolves an owner's workspace inside a 0700 home directory",
    ),
    (
        Capability::CAP_AUDIT_WRITE,
        "PAM writes the kernel audit record (USER_AUTH) of each approval's re-authentication",
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum HardenError {
    #[error("could not close inherited file descriptors: {0}")]
    CloseFds(#[source] std::io::Error),
    #[error("could not clear LD_* from the environment: {0}")]
    Environment(#[source] std::io::Error),
    #[error("could not make the process non-dumpable: {0}")]
    Dumpable(#[source] nix::Error),
    #[error("could not set RLIMIT_CORE to 0: {0}")]
    CoreLimit(#[source] nix::Error),
    #[error(
        "refusing to start: process {pid} is tracing agentkeysd and could read every secret\n  fix: stop the tracer, or set daemon.allow_tracer = true in the configuration (development only)"
    )]
    Traced { pid: usize },
    #[error("could not read the tracer state: {0}")]
    TracerState(#[source] std::io::Error),
    #[error("could not drop capabilities ({step}): {source}")]
    Capabilities {
        step: &'static str,
        source: caps::errors::CapsError,
    },
}

/// What hardening did, for the start-up log.
#[derive(Debug, Default)]
pub struct Hardened {
    pub removed_env: Vec<String>,
    pub kept_caps: Vec<String>,
    pub traced_by: Option<usize>,
}

/// Hardens the process. Call before any thread is spawned.
pub fn harden(allow_tracer: bool) -> Result<Hardened, HardenError> {
    // Nothing of ours is open yet, so everything above 2 was leaked to us by our parent.
    sys::close_fds_from_3().map_err(HardenError::CloseFds)?;
    // A non-dumpable process: no core file, and /proc/PID/mem etc. are root-only.
    nix::sys::prctl::set_dumpable(false).map_err(HardenError::Dumpable)?;
    // Belt and braces for the core dump: a limit of 0 that we cannot raise again.
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0)
        .map_err(HardenError::CoreLimit)?;
    // LD_PRELOAD & co. would matter for anything we exec (the runner).
    let removed_env = sys::remove_ld_vars().map_err(HardenError::Environment)?;
    // A tracer attached before we became non-dumpable can still read us.
    let tracer = sys::tracer_pid().map_err(HardenError::TracerState)?;
    if tracer != 0 && !allow_tracer {
        return Err(HardenError::Traced { pid: tracer });
    }
    let kept_caps = drop_capabilities()?;
    Ok(Hardened {
        removed_env,
        kept_caps,
        traced_by: (tracer != 0).then_some(tracer),
    })
}

/// Drops every capability not in [`KEEP`] from the bounding, inheritable, permitted and
/// effective sets and clears the ambient set. Returns the names kept.
fn drop_capabilities() -> Result<Vec<String>, HardenError> {
    let err = |step| move |source| HardenError::Capabilities { step, source };
    let keep: HashSet<Capability> = KEEP.iter().map(|(c, _)| *c).collect();
    let permitted = caps::read(None, CapSet::Permitted).map_err(err("read permitted"))?;
    caps::clear(None, CapSet::Ambient).map_err(err("clear ambient"))?;
    // The bounding set can only shrink, and only with CAP_SETPCAP in effect.
    if permitted.contains(&Capability::CAP_SETPCAP) {
        for cap in caps::all() {
            if !keep.contains(&cap)
                && caps::has_cap(None, CapSet::Bounding, cap).map_err(err("read bounding"))?
            {
                caps::drop(None, CapSet::Bounding, cap).map_err(err("drop bounding"))?;
            }
        }
    }
    let kept: HashSet<Capability> = permitted.intersection(&keep).copied().collect();
    caps::set(None, CapSet::Inheritable, &HashSet::new()).map_err(err("clear inheritable"))?;
    caps::set(None, CapSet::Effective, &kept).map_err(err("set effective"))?;
    caps::set(None, CapSet::Permitted, &kept).map_err(err("set permitted"))?;
    let mut names: Vec<String> = kept.iter().map(|c| c.to_string()).collect();
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kept_capability_says_why() {
        for (cap, why) in KEEP {
            assert!(why.len() > 20, "{cap} needs a reason");
        }
        let caps: HashSet<_> = KEEP.iter().map(|(c, _)| c).collect();
        assert_eq!(caps.len(), KEEP.len(), "duplicates in KEEP");
        assert!(!caps.contains(&Capability::CAP_SYS_PTRACE));
        assert!(!caps.contains(&Capability::CAP_SYS_MODULE));
        assert!(!caps.contains(&Capability::CAP_NET_ADMIN));
    }
}
