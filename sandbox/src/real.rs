//! [`Syscalls`] for real: each call runs its step's function in `steps/`. Keeps what the
//! steps hand each other: the status pipe between the runner and the init, and the secret
//! variables between reading them (step 4) and the exec (step 9).

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use super::policy::bpf::Program;

use super::plan::{Ended, Side, StepError, Syscalls};
use super::policy::Policies;
use super::spec::{Net, OWN_FD_FLOOR, Spec};
use super::steps::{self, rlimits::SecretVar};
use super::sys::{self, Forked};

/// The real privileged calls.
#[derive(Debug, Default)]
pub struct RealSyscalls {
    /// Runner side: the read end of the init's status pipe (after `fork_init`).
    pub status_rd: Option<OwnedFd>,
    /// Init side: the write end.
    pub status_wr: Option<OwnedFd>,
    /// Runner side: where it tells the init that the cgroups' limits are written.
    cgroups_wr: Option<OwnedFd>,
    /// Init side: where it learns that.
    cgroups_rd: Option<OwnedFd>,
    /// The new root's read-only sources and the idmapped workspace, cloned by the runner
    /// before the fork; the init's copy attaches them, the runner's is closed at the fork.
    sources: Option<steps::mounts::Sources>,
    /// True in the init after `fork_init`.
    pub in_init: bool,
    secret_env: Vec<SecretVar>,
    /// The agent's namespaces: made by the runner before the plan (for `--net none`; for
    /// `--net host` by `prepare_identity`), joined by the init (`identity`); the runner
    /// keeps its own to kill the holder once the command runs.
    pub agent_ns: Option<steps::identity::AgentNs>,
    /// Runner side: the run's groups, joined by the runner's start before the plan (cold:
    /// right after the spec; warm: before the spec came), so `join_cgroups` has nothing left
    /// to do; it joins them itself only when none were given.
    pub cgroups: Option<steps::cgroup::Joined>,
    /// Runner side, warm start: the spec socket, on which the daemon says the run's start
    /// is on record ([`crate::spec::FRAME_GO`]).
    pub go: Option<OwnedFd>,
    /// Runner side: the holder of the namespace made for the workspace's idmapping, kept
    /// until the limits are written: dropping it reaps the holder, which waits for that
    /// process to be scheduled and exit, and the init needs the limits sooner.
    idmap_holder: Option<steps::mounts::IdmapHolder>,
    /// Runner side: the agent's user namespace, open, when it is the workspace's idmapping
    /// too (`identity::Mapped::owner_idmap`); closed once the workspace is idmapped.
    owner_idmap: Option<OwnedFd>,
}

impl RealSyscalls {
    /// Init side: the pipe on which the runner tells about the cgroups (kept until `exec`).
    fn cgroups_pipe(&self) -> Result<std::os::fd::BorrowedFd<'_>, StepError> {
        self.cgroups_rd.as_ref().map(AsFd::as_fd).ok_or_else(|| {
            StepError::refused(
                "no pipe from the runner about the cgroups",
                std::io::ErrorKind::BrokenPipe,
            )
        })
    }

    /// Runner side, when a step of its own failed: the init must not go on alone.
    fn end_init(&mut self, init_pid: i32) {
        self.idmap_holder = None;
        let pid = nix::unistd::Pid::from_raw(init_pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
        self.status_rd = None;
    }
}

impl Syscalls for RealSyscalls {
    fn join_cgroups(&mut self, spec: &Spec) -> Result<(), StepError> {
        if self.cgroups.is_none() {
            self.cgroups = Some(steps::cgroup::join(&spec.cgroup, OWN_FD_FLOOR)?);
        }
        Ok(())
    }

    fn await_go(&mut self, init_pid: i32) -> Result<(), StepError> {
        let Some(sock) = self.go.take() else {
            // Cold start: the daemon recorded the start before it started the runner.
            return Ok(());
        };
        let go = match sys::recv_frame(sock.as_fd(), 0) {
            Ok(Some((crate::spec::FRAME_GO, ..))) => Ok(()),
            Ok(_) => Err(StepError::refused(
                "the daemon did not record the run's start (it closed the spec socket)",
                std::io::ErrorKind::BrokenPipe,
            )),
            Err(e) => Err(StepError::new(
                "wait for the daemon's record of the run's start",
                e,
            )),
        };
        if go.is_err() {
            self.end_init(init_pid);
        }
        go
    }

    fn limit_cgroups(&mut self, spec: &Spec, init_pid: i32) -> Result<(), StepError> {
        let done = steps::cgroup::write_limits(&spec.cgroup, &spec.limits).and_then(|()| {
            match self.cgroups_wr.take() {
                // EPIPE: the init has gone already; its own status says why (supervise).
                Some(fd) => match nix::unistd::write(&fd, steps::cgroup::LIMITED) {
                    Ok(_) | Err(nix::errno::Errno::EPIPE) => Ok(()),
                    Err(e) => Err(StepError::new("tell the init the limits are written", e)),
                },
                None => Ok(()),
            }
        });
        if done.is_err() {
            // The init must not start the command without the limits: it goes, now.
            self.cgroups_wr = None;
            self.end_init(init_pid);
        }
        self.idmap_holder = None;
        done
    }

    fn clone_sources(&mut self, spec: &Spec, policies: &Policies) -> Result<(), StepError> {
        let (sources, small) = steps::mounts::clone_sources(spec, &policies.fs)?;
        let mut sources = steps::etc_cache::put_first(spec, &small, sources);
        let owner_idmap = self.owner_idmap.take();
        if let Some(ws) = steps::mounts::workspace(spec, owner_idmap.as_ref().map(AsFd::as_fd))? {
            sources.workspace = Some(ws.tree);
            self.idmap_holder = ws.holder;
        }
        self.sources = Some(sources);
        Ok(())
    }

    fn enter_cgroups(&mut self) -> Result<(), StepError> {
        steps::cgroup::enter()
    }

    fn unshare_pid(&mut self) -> Result<(), StepError> {
        steps::namespaces::unshare_pid()
    }

    fn unshare_namespaces(&mut self, net: Net) -> Result<(), StepError> {
        steps::namespaces::unshare(net)
    }

    fn fork_init(&mut self) -> Result<Side, StepError> {
        let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| StepError::new("pipe for the init's status", e))?;
        let (cg_rd, cg_wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| StepError::new("pipe for the cgroups' limits", e))?;
        let v2 = self.cgroups.as_ref().and_then(steps::cgroup::Joined::v2_fd);
        let (forked, late) = match v2.map(sys::fork_into_cgroup) {
            None => (sys::fork_single_threaded(), false),
            Some(Err(e)) if e.raw_os_error() == Some(libc::ENOSYS) => {
                (sys::fork_single_threaded(), true)
            }
            Some(other) => (other, false),
        };
        match forked.map_err(|e| StepError::new("fork the init", e))? {
            Forked::Parent(pid) => {
                // The init has its own copies of the sources.
                self.sources = None;
                drop((wr, cg_rd));
                self.status_rd = Some(rd);
                self.cgroups_wr = Some(cg_wr);
                Ok(Side::Runner { init_pid: pid })
            }
            Forked::Child => {
                drop((rd, cg_wr));
                // The idmapping's holder is the runner's child, as is the agent's holder.
                if let Some(h) = self.idmap_holder.take() {
                    h.disown();
                }
                self.status_wr = Some(wr);
                self.cgroups_rd = Some(cg_rd);
                self.in_init = true;
                // The holder is the runner's: this copy only joins its namespaces (and must
                // not signal it when dropped, even on the error path below).
                if let Some(ns) = &mut self.agent_ns {
                    ns.disown();
                }
                // The init must not outlive the runner that reports on it.
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(|e| StepError::new("PR_SET_PDEATHSIG", e))?;
                if let Some(mut joined) = self.cgroups.take() {
                    joined.disown();
                    if late {
                        joined.join_v2_late()?;
                    }
                }
                Ok(Side::Init)
            }
        }
    }

    fn set_hostname(&mut self, name: &str) -> Result<(), StepError> {
        steps::namespaces::set_hostname(name)
    }

    fn prepare_identity(&mut self, spec: &Spec) -> Result<(), StepError> {
        let ready = self.agent_ns.take();
        let mapped = steps::identity::prepare(spec, ready)?;
        self.agent_ns = Some(mapped.ns);
        self.owner_idmap = mapped.owner_idmap;
        Ok(())
    }

    fn build_filesystem(&mut self, spec: &Spec, policies: &Policies) -> Result<(), StepError> {
        let sources = self.sources.take().ok_or_else(|| {
            StepError::refused(
                "the new root's sources were not cloned",
                std::io::ErrorKind::NotFound,
            )
        })?;
        steps::filesystem::build(spec, &policies.fs, sources)
    }

    fn rlimits_and_fds(&mut self, spec: &Spec) -> Result<(), StepError> {
        steps::rlimits::set_rlimits()?;
        self.secret_env = steps::rlimits::secret_env(spec)?;
        let mut keep: Vec<RawFd> = self
            .status_wr
            .iter()
            .chain(&self.cgroups_rd)
            .map(AsRawFd::as_raw_fd)
            .collect();
        keep.extend(self.agent_ns.iter().flat_map(|ns| ns.fds()));
        steps::rlimits::close_except(&keep)
    }

    fn identity(&mut self, spec: &Spec) -> Result<(), StepError> {
        let ns = self.agent_ns.take().ok_or_else(|| {
            StepError::refused(
                "the agent's namespaces were not prepared",
                std::io::ErrorKind::NotFound,
            )
        })?;
        steps::identity::become_agent(ns, &spec.ids)
    }

    fn drop_capabilities(&mut self) -> Result<(), StepError> {
        steps::caps::drop_all()
    }

    fn landlock(&mut self, spec: &Spec, policies: &Policies) -> Result<(), StepError> {
        steps::landlock::restrict(spec, &policies.landlock)
    }

    fn seccomp(&mut self, program: &Program) -> Result<(), StepError> {
        steps::seccomp::install(program)
    }

    fn exec(&mut self, spec: &Spec) -> Result<Ended, StepError> {
        steps::cgroup::await_limits(self.cgroups_pipe()?)?;
        self.cgroups_rd = None;
        let env = std::mem::take(&mut self.secret_env);
        let status = self.status_wr.as_ref();
        steps::init::run(spec, &env, || {
            if let Some(fd) = status {
                super::runner::send_status(fd, &super::runner::Status::Started);
            }
        })
    }
}
