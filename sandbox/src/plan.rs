//! The runner's plan (DESIGN §6), top to bottom: one call per step, in the order that makes
//! each later step safe, and one error variant per step. The privileged work sits behind
//! [`Syscalls`]: [`super::real::RealSyscalls`] does it for real (kernel tier), the recording
//! fake in this file's tests pins the order without root.

use std::io;

use super::policy::bpf::Program;

use super::policy::Policies;
use super::spec::{Net, Spec};

/// The plan's steps, in order; `name()` is what a `Report::Failed` carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Cgroup,
    Namespaces,
    Filesystem,
    RlimitsAndFds,
    Identity,
    Capabilities,
    Landlock,
    Seccomp,
    /// The daemon's record of the run's start (warm start: [`Syscalls::await_go`]).
    Record,
    Exec,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::Cgroup => "cgroup",
            Step::Namespaces => "namespaces",
            Step::Filesystem => "filesystem",
            Step::RlimitsAndFds => "rlimits_and_fds",
            Step::Identity => "identity",
            Step::Capabilities => "capabilities",
            Step::Landlock => "landlock",
            Step::Seccomp => "seccomp",
            Step::Record => "record",
            Step::Exec => "exec",
        }
    }
}

/// What went wrong inside a step: which operation (with its path or value) and the OS error.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct StepError {
    pub what: String,
    #[source]
    pub source: io::Error,
}

impl StepError {
    pub fn new(what: impl Into<String>, source: impl Into<io::Error>) -> Self {
        Self {
            what: what.into(),
            source: source.into(),
        }
    }

    /// A failed check that has no OS error of its own.
    pub fn refused(what: impl Into<String>, kind: io::ErrorKind) -> Self {
        Self::new(what, io::Error::from(kind))
    }
}

/// A step of the plan failed; the variant names the step.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("could not place the run in its cgroups")]
    Cgroup(#[source] StepError),
    #[error("could not create the sandbox's namespaces")]
    Namespaces(#[source] StepError),
    #[error("could not build the sandbox's file system")]
    Filesystem(#[source] StepError),
    #[error("could not set resource limits or close inherited files")]
    RlimitsAndFds(#[source] StepError),
    #[error("could not switch to the agent's identity")]
    Identity(#[source] StepError),
    #[error("could not drop capabilities")]
    Capabilities(#[source] StepError),
    #[error("could not enforce the landlock policy")]
    Landlock(#[source] StepError),
    #[error("could not install the seccomp filter")]
    Seccomp(#[source] StepError),
    #[error("the run's start was not recorded")]
    Record(#[source] StepError),
    #[error("could not run the command")]
    Exec(#[source] StepError),
}

impl PlanError {
    pub fn step(&self) -> Step {
        match self {
            PlanError::Cgroup(_) => Step::Cgroup,
            PlanError::Namespaces(_) => Step::Namespaces,
            PlanError::Filesystem(_) => Step::Filesystem,
            PlanError::RlimitsAndFds(_) => Step::RlimitsAndFds,
            PlanError::Identity(_) => Step::Identity,
            PlanError::Capabilities(_) => Step::Capabilities,
            PlanError::Landlock(_) => Step::Landlock,
            PlanError::Seccomp(_) => Step::Seccomp,
            PlanError::Record(_) => Step::Record,
            PlanError::Exec(_) => Step::Exec,
        }
    }

    /// The whole chain on one line (for `Report::Failed`; never holds secret bytes).
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(self);
        while let Some(e) = cur {
            out.push_str(": ");
            out.push_str(&e.to_string());
            cur = e.source();
        }
        out
    }
}

/// Which process continues after the namespaces step's fork.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The runner (host pid namespace): it reports and waits for the sandbox's init.
    Runner { init_pid: i32 },
    /// The sandbox's init (pid 1 of the new pid namespace): it continues the plan.
    Init,
}

/// How the command ended, as the sandbox's init saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Signaled(i32),
}

/// How the plan ended in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    Runner { init_pid: i32 },
    Init(Ended),
}

/// The privileged operations of the plan, one per call, in terms of the spec. Errors say
/// what failed; the plan wraps them in its step's variant.
pub trait Syscalls {
    /// Runner side, before the fork: creates the run's cgroups and joins them so that the
    /// init is born in them (v1: the runner moves itself; v2: `fork_init` clones the init
    /// into the group). Nothing to do when the runner's start joined them already (the
    /// shipped runner does, cold or warm: `runner.rs`).
    fn join_cgroups(&mut self, spec: &Spec) -> Result<(), StepError>;
    /// Runner side, after the fork: in a warm start, waits for the daemon's word that the
    /// run's start is on record (a cold start is recorded before the runner exists). On
    /// failure the init is killed.
    fn await_go(&mut self, init_pid: i32) -> Result<(), StepError>;
    /// Runner side, after the fork: writes the limits and says so (the init waits for that
    /// in `exec`, before the command starts). On failure the init is killed.
    fn limit_cgroups(&mut self, spec: &Spec, init_pid: i32) -> Result<(), StepError>;
    /// Runner side, before the fork: clones the new root's read-only sources (and finds or
    /// makes its `/etc` snapshot) and the workspace, idmapped (with the agent's own user
    /// namespace when the agent has its owner's ids inside, else with one made for it);
    /// the init inherits them and attaches them in `build_filesystem`.
    fn clone_sources(&mut self, spec: &Spec, policies: &Policies) -> Result<(), StepError>;
    /// Init side: a cgroup namespace (rooted at the run's groups, which it was born in).
    fn enter_cgroups(&mut self) -> Result<(), StepError>;
    /// Runner side, before the fork: `unshare` of the pid namespace.
    fn unshare_pid(&mut self) -> Result<(), StepError>;
    /// Init side: `unshare` of the mount, ipc and uts namespaces.
    fn unshare_namespaces(&mut self, net: Net) -> Result<(), StepError>;
    /// Forks the sandbox's init (the first process of the new pid namespace) in the run's
    /// cgroups.
    fn fork_init(&mut self) -> Result<Side, StepError>;
    fn set_hostname(&mut self, name: &str) -> Result<(), StepError>;
    /// Runner side, before the fork: the agent's user namespace (and for `--net none` its
    /// network namespace with `lo` up) made by a holder child while the plan goes on (for
    /// `--net none` ahead of the plan, by the runner's start); maps written. The init
    /// inherits it.
    fn prepare_identity(&mut self, spec: &Spec) -> Result<(), StepError>;
    /// The new root (attaching the sources and the workspace `clone_sources` made),
    /// secret files, `pivot_root`.
    fn build_filesystem(&mut self, spec: &Spec, policies: &Policies) -> Result<(), StepError>;
    /// rlimits; reads the secret variables from their memfds; closes every other fd.
    fn rlimits_and_fds(&mut self, spec: &Spec) -> Result<(), StepError>;
    /// setgroups, then into the prepared namespaces, then gid/uid `inside_*` there.
    fn identity(&mut self, spec: &Spec) -> Result<(), StepError>;
    /// Drops every capability set; `PR_SET_NO_NEW_PRIVS`.
    fn drop_capabilities(&mut self) -> Result<(), StepError>;
    fn landlock(&mut self, spec: &Spec, policies: &Policies) -> Result<(), StepError>;
    fn seccomp(&mut self, program: &Program) -> Result<(), StepError>;
    /// Waits for the runner's word that the cgroup limits are written, then forks and execs
    /// the command; stays as its init until it ends.
    fn exec(&mut self, spec: &Spec) -> Result<Ended, StepError>;
}

/// Runs the plan. Returns in the runner once the init is forked, and in the init when the
/// command has ended; an error returns in whichever process was running the failed step.
pub fn run<S: Syscalls>(
    sys: &mut S,
    spec: &Spec,
    policies: &Policies,
    seccomp: &Program,
) -> Result<Finished, PlanError> {
    // 1. Before anything else, so the init is born in the run's cgroups and every process
    //    of the agent is counted and killable from its first instruction.
    sys.join_cgroups(spec).map_err(PlanError::Cgroup)?;
    // 5a. Early, so that the agent's network namespace is made on the other CPU, idle while
    //     the runner forks and the init starts.
    sys.prepare_identity(spec).map_err(PlanError::Identity)?;
    // 3a. Before the fork, so the init finds the new root's sources and the workspace
    //     ready as it builds it: after the fork the runner would make them while the init
    //     and the namespace holder have the two CPUs, and the init would wait for them.
    sys.clone_sources(spec, policies)
        .map_err(PlanError::Filesystem)?;
    // 2. As root of the initial user namespace, so these namespaces belong to it and the
    //    agent can never reconfigure them; the fork makes the init pid 1 of the new pid ns,
    //    and the init makes the others for itself (the runner stays in the host's).
    sys.unshare_pid().map_err(PlanError::Namespaces)?;
    if let Side::Runner { init_pid } = sys.fork_init().map_err(PlanError::Namespaces)? {
        // 9a. The daemon records the run's start while the sandbox is built; no command
        //     starts before that record is durable.
        sys.await_go(init_pid).map_err(PlanError::Record)?;
        // 1b. Then it writes the limits while the init builds the file system; the init
        //     waits for them in 9, before the command starts.
        sys.limit_cgroups(spec, init_pid)
            .map_err(PlanError::Cgroup)?;
        return Ok(Finished::Runner { init_pid });
    }
    sys.unshare_namespaces(spec.net)
        .map_err(PlanError::Namespaces)?;
    sys.set_hostname(&spec.hostname)
        .map_err(PlanError::Namespaces)?;
    // 3. Still root: mounts need it, and secret files are chowned to the agent.
    sys.build_filesystem(spec, policies)
        .map_err(PlanError::Filesystem)?;
    // 1c. The cgroup namespace, rooted at the run's groups.
    sys.enter_cgroups().map_err(PlanError::Cgroup)?;
    // 4. Before the identity change, so nothing inherited survives into the agent.
    sys.rlimits_and_fds(spec)
        .map_err(PlanError::RlimitsAndFds)?;
    // 5. Leaves root for good; the user namespace gives the agent its inside ids. Its
    //    network namespace comes from that user namespace, whose capabilities (gone in
    //    step 6, and no new user namespace after step 8) brought loopback up: the daemon
    //    needs no CAP_NET_ADMIN for it.
    sys.identity(spec).map_err(PlanError::Identity)?;
    // 6. The capabilities the new user namespace granted go too; no_new_privs for 7 and 8.
    sys.drop_capabilities().map_err(PlanError::Capabilities)?;
    // 7. Needs no_new_privs; paths are resolved in the new root.
    sys.landlock(spec, policies).map_err(PlanError::Landlock)?;
    // 8. Last, so the steps above may still use what it forbids (mount, unshare, …).
    sys.seccomp(seccomp).map_err(PlanError::Seccomp)?;
    // 9. The init forks the command and reaps until it ends.
    let ended = sys.exec(spec).map_err(PlanError::Exec)?;
    Ok(Finished::Init(ended))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::tests::sample_spec;

    /// Records each call; fails the call named `fail_at`; forks as `side`.
    struct Recorder {
        calls: Vec<String>,
        fail_at: Option<&'static str>,
        side: Side,
    }

    impl Recorder {
        fn new(side: Side, fail_at: Option<&'static str>) -> Self {
            Self {
                calls: Vec::new(),
                fail_at,
                side,
            }
        }

        fn call(&mut self, name: String) -> Result<(), StepError> {
            let failing = self.fail_at.is_some_and(|f| name.starts_with(f));
            self.calls.push(name);
            if failing {
                return Err(StepError::refused(
                    "injected",
                    io::ErrorKind::PermissionDenied,
                ));
            }
            Ok(())
        }
    }

    impl Syscalls for Recorder {
        fn join_cgroups(&mut self, _: &Spec) -> Result<(), StepError> {
            self.call("join_cgroups".into())
        }
        fn await_go(&mut self, init_pid: i32) -> Result<(), StepError> {
            self.call(format!("await_go({init_pid})"))
        }
        fn limit_cgroups(&mut self, _: &Spec, init_pid: i32) -> Result<(), StepError> {
            self.call(format!("limit_cgroups({init_pid})"))
        }
        fn clone_sources(&mut self, _: &Spec, _: &Policies) -> Result<(), StepError> {
            self.call("clone_sources".into())
        }
        fn enter_cgroups(&mut self) -> Result<(), StepError> {
            self.call("enter_cgroups".into())
        }
        fn unshare_pid(&mut self) -> Result<(), StepError> {
            self.call("unshare_pid".into())
        }
        fn unshare_namespaces(&mut self, net: Net) -> Result<(), StepError> {
            self.call(format!("unshare({})", net.as_str()))
        }
        fn fork_init(&mut self) -> Result<Side, StepError> {
            self.call("fork_init".into())?;
            Ok(self.side)
        }
        fn set_hostname(&mut self, name: &str) -> Result<(), StepError> {
            self.call(format!("set_hostname({name})"))
        }
        fn prepare_identity(&mut self, spec: &Spec) -> Result<(), StepError> {
            self.call(format!("prepare_identity({})", spec.net.as_str()))
        }
        fn build_filesystem(&mut self, _: &Spec, _: &Policies) -> Result<(), StepError> {
            self.call("build_filesystem".into())
        }
        fn rlimits_and_fds(&mut self, _: &Spec) -> Result<(), StepError> {
            self.call("rlimits_and_fds".into())
        }
        fn identity(&mut self, _: &Spec) -> Result<(), StepError> {
            self.call("identity".into())
        }
        fn drop_capabilities(&mut self) -> Result<(), StepError> {
            self.call("drop_capabilities".into())
        }
        fn landlock(&mut self, _: &Spec, _: &Policies) -> Result<(), StepError> {
            self.call("landlock".into())
        }
        fn seccomp(&mut self, _: &Program) -> Result<(), StepError> {
            self.call("seccomp".into())
        }
        fn exec(&mut self, _: &Spec) -> Result<Ended, StepError> {
            self.call("exec".into())?;
            Ok(Ended::Exited(0))
        }
    }

    fn run_with(
        net: Net,
        side: Side,
        fail_at: Option<&'static str>,
    ) -> (Recorder, Result<Finished, PlanError>) {
        let mut spec = sample_spec();
        spec.net = net;
        let policies = Policies::shipped().unwrap();
        let mut r = Recorder::new(side, fail_at);
        let out = run(&mut r, &spec, &policies, &Vec::new());
        (r, out)
    }

    const AFTER_HOSTNAME: [&str; 9] = [
        "build_filesystem",
        "enter_cgroups",
        "rlimits_and_fds",
        "identity",
        "drop_capabilities",
        "landlock",
        "seccomp",
        "exec",
        "",
    ];

    #[test]
    fn net_none_runs_every_step_in_order() {
        let (r, out) = run_with(Net::None, Side::Init, None);
        let mut want = vec![
            "join_cgroups",
            "prepare_identity(none)",
            "clone_sources",
            "unshare_pid",
            "fork_init",
            "unshare(none)",
            "set_hostname(agent)",
        ];
        want.extend(AFTER_HOSTNAME.iter().filter(|s| !s.is_empty()));
        assert_eq!(r.calls, want);
        assert_eq!(out.unwrap(), Finished::Init(Ended::Exited(0)));
    }

    #[test]
    fn net_host_keeps_the_order_and_says_so_to_the_identity_step() {
        let (r, _) = run_with(Net::Host, Side::Init, None);
        let mut want = vec![
            "join_cgroups",
            "prepare_identity(host)",
            "clone_sources",
            "unshare_pid",
            "fork_init",
            "unshare(host)",
            "set_hostname(agent)",
        ];
        want.extend(AFTER_HOSTNAME.iter().filter(|s| !s.is_empty()));
        assert_eq!(r.calls, want);
    }

    #[test]
    fn the_runner_side_stops_after_the_fork() {
        let (r, out) = run_with(Net::None, Side::Runner { init_pid: 42 }, None);
        assert_eq!(
            r.calls,
            [
                "join_cgroups",
                "prepare_identity(none)",
                "clone_sources",
                "unshare_pid",
                "fork_init",
                "await_go(42)",
                "limit_cgroups(42)"
            ]
        );
        assert_eq!(out.unwrap(), Finished::Runner { init_pid: 42 });
        // A runner that cannot place the run says so as the cgroup step, before any fork.
        let (r, out) = run_with(
            Net::None,
            Side::Runner { init_pid: 42 },
            Some("join_cgroups"),
        );
        assert_eq!(out.unwrap_err().step(), Step::Cgroup);
        assert_eq!(r.calls, ["join_cgroups"]);
        // After the fork, each failure says so as its own step and goes no further: one
        // without the daemon's record of the start (the command does not run), one that
        // cannot write the limits.
        for (fail_at, step) in [("await_go", Step::Record), ("limit_cgroups", Step::Cgroup)] {
            let (r, out) = run_with(Net::None, Side::Runner { init_pid: 42 }, Some(fail_at));
            assert_eq!(out.unwrap_err().step(), step, "{fail_at}");
            assert_eq!(r.calls.last(), Some(&format!("{fail_at}(42)")));
        }
    }

    #[test]
    fn a_failing_step_stops_the_plan_with_its_own_variant() {
        let cases: [(&str, Step); 13] = [
            ("clone_sources", Step::Filesystem),
            ("enter_cgroups", Step::Cgroup),
            ("unshare_pid", Step::Namespaces),
            ("unshare(", Step::Namespaces),
            ("fork_init", Step::Namespaces),
            ("set_hostname", Step::Namespaces),
            ("prepare_identity", Step::Identity),
            ("build_filesystem", Step::Filesystem),
            ("rlimits_and_fds", Step::RlimitsAndFds),
            ("identity", Step::Identity),
            ("drop_capabilities", Step::Capabilities),
            ("landlock", Step::Landlock),
            ("seccomp", Step::Seccomp),
        ];
        for (at, step) in cases {
            let (r, out) = run_with(Net::None, Side::Init, Some(at));
            let err = out.unwrap_err();
            assert_eq!(err.step(), step, "failing at {at}");
            assert!(r.calls.last().unwrap().starts_with(at), "{:?}", r.calls);
            assert!(err.chain().contains("injected"), "{}", err.chain());
        }
        let (r, out) = run_with(Net::None, Side::Init, Some("exec"));
        assert_eq!(out.unwrap_err().step(), Step::Exec);
        assert_eq!(r.calls.last().map(String::as_str), Some("exec"));
    }
}
